//! Compare two schemas and emit the operations that turn `from` into `to`.
//!
//! Comparison only emits [`Op`]s; whether SQLite can do them in place is decided later, in
//! one place (`rebuild::plan`).

use std::collections::BTreeSet;

use crate::schema::{Renames, Schema, Table};

use super::Op;
use super::ops::apply_rename;

/// Why two schemas cannot be compared as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// A `--rename` that does not fit the schemas.
    #[error("{0}")]
    BadRename(String),
    /// A table or column disappears while one like it appears: that is probably a rename, and
    /// writing it as drop + add would lose its data.
    #[error("{}", undeclared_message(.0))]
    UndeclaredRenames(Vec<RenameCandidate>),
}

/// A rename that does not fit, or one that must be declared: the user's to fix.
impl crate::exit::HasExitStatus for CompareError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Usage
    }
}

/// A drop + add pair that looks like a rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameCandidate {
    /// The table (its new name); `None` for a table rename.
    pub table: Option<String>,
    pub from: String,
    pub to: String,
}

impl RenameCandidate {
    /// The flag that declares this rename.
    pub fn flag(&self) -> String {
        match &self.table {
            Some(t) => format!("--rename {t}.{}={t}.{}", self.from, self.to),
            None => format!("--rename {}={}", self.from, self.to),
        }
    }

    fn what(&self) -> String {
        match &self.table {
            Some(t) => format!(
                "column {t}.{} disappears and {t}.{} appears",
                self.from, self.to
            ),
            None => format!("table {} disappears and {} appears", self.from, self.to),
        }
    }
}

fn undeclared_message(candidates: &[RenameCandidate]) -> String {
    let mut text = String::from(
        "the models drop and add something alike, which would lose its data if it was renamed:",
    );
    for c in candidates {
        text.push_str(&format!(
            "\n  {}: if it was renamed, run again with `{}` (or add renamed_from = \"{}\" to it in the model file)",
            c.what(),
            c.flag(),
            c.from
        ));
    }
    text.push_str(
        "\n  if it really is a drop and an unrelated add, write two migrations: first remove the old one (make-migrations --allow-destructive), then add the new one",
    );
    text
}

impl CompareError {
    /// One line per difference, for drift reports.
    pub fn lines(&self) -> Vec<String> {
        match self {
            CompareError::BadRename(m) => vec![m.clone()],
            CompareError::UndeclaredRenames(cs) => cs.iter().map(RenameCandidate::what).collect(),
        }
    }
}

/// The renames of `flags` (all must apply to `from` → `to`; an error says which does not)
/// and of `declared` (`renamed_from` keys: those already carried out, whose old name `from`
/// no longer has, are skipped).
pub fn resolve_renames(
    from: &Schema,
    to: &Schema,
    flags: &Renames,
    declared: &Renames,
) -> Result<Renames, CompareError> {
    let mut renames = flags.clone();
    for (new, old) in &declared.tables {
        if from.table(old).is_some() && from.table(new).is_none() {
            renames.tables.entry(new.clone()).or_insert(old.clone());
        }
    }
    for ((table, new), old) in &declared.columns {
        let old_table = renames.tables.get(table).unwrap_or(table);
        if let Some(live) = from.table(old_table)
            && live.column(old).is_some()
            && live.column(new).is_none()
        {
            renames
                .columns
                .entry((table.clone(), new.clone()))
                .or_insert(old.clone());
        }
    }
    // Validate against the schemas; a bad flag is an error, never ignored.
    let _ = rename_ops(from, to, &renames)?;
    Ok(renames)
}

/// The rename ops of `renames`, checked, and `from` with them applied.
fn rename_ops(
    from: &Schema,
    to: &Schema,
    renames: &Renames,
) -> Result<(Vec<Op>, Schema), CompareError> {
    let mut ops = Vec::new();
    let mut cur = from.clone();
    for (new, old) in &renames.tables {
        refuse_if(
            &format!("cannot rename table {old} to {new}"),
            [
                (cur.table(old).is_none(), format!("there is no table {old}")),
                (
                    cur.table(new).is_some(),
                    format!("table {new} exists already"),
                ),
                (
                    to.table(new).is_none(),
                    format!("the models do not declare {new}"),
                ),
                (
                    to.table(old).is_some(),
                    format!("the models still declare {old}"),
                ),
            ],
        )?;
        let op = Op::RenameTable {
            from: old.clone(),
            to: new.clone(),
        };
        apply_rename(&mut cur, &op);
        ops.push(op);
    }
    for ((table, new), old) in &renames.columns {
        let what = format!("cannot rename column {table}.{old} to {new}");
        let (Some(live), Some(want)) = (cur.table(table), to.table(table)) else {
            return Err(CompareError::BadRename(format!(
                "{what}: table {table} is not in both the migrations and the models"
            )));
        };
        refuse_if(
            &what,
            [
                (
                    live.column(old).is_none(),
                    format!("{table} has no column {old}"),
                ),
                (
                    live.column(new).is_some(),
                    format!("{table}.{new} exists already"),
                ),
                (
                    want.column(new).is_none(),
                    format!("the models do not declare {table}.{new}"),
                ),
                (
                    want.column(old).is_some(),
                    format!("the models still declare {table}.{old}"),
                ),
            ],
        )?;
        let op = Op::RenameColumn {
            table: table.clone(),
            from: old.clone(),
            to: new.clone(),
        };
        apply_rename(&mut cur, &op);
        ops.push(op);
    }
    Ok((ops, cur))
}

/// The first failed check of a rename, as an error.
fn refuse_if<const N: usize>(what: &str, checks: [(bool, String); N]) -> Result<(), CompareError> {
    match checks.into_iter().find(|(failed, _)| *failed) {
        Some((_, why)) => Err(CompareError::BadRename(format!("{what}: {why}"))),
        None => Ok(()),
    }
}

/// The operations that get a database at `from` to `to`, in a deterministic order that SQLite
/// can execute: renames; index drops; table drops; new tables with their indexes; per existing
/// table (by name) column adds, drops and alterations; new indexes of existing tables.
///
/// A drop + add that looks like an undeclared rename is an error, never a silent data loss.
pub fn compare(from: &Schema, to: &Schema, renames: &Renames) -> Result<Vec<Op>, CompareError> {
    let (renamed, cur) = rename_ops(from, to, renames)?;
    refuse_undeclared_renames(&cur, to)?;
    // Views and triggers go first (before a rename or drop could trip over them) and come
    // last, when everything they name is in place.
    let mut ops: Vec<Op> = cur
        .objects
        .values()
        .filter(|o| to.objects.get(&o.name) != Some(*o))
        .map(|o| Op::DropObject(o.clone()))
        .collect();
    ops.extend(renamed);

    let kept: Vec<(&Table, &Table)> = to
        .tables
        .values()
        .filter_map(|want| cur.table(&want.name).map(|live| (live, want)))
        .collect();

    for (live, want) in &kept {
        for index in live.indexes.values() {
            if want.indexes.get(&index.name) != Some(index) {
                ops.push(Op::DropIndex {
                    table: live.name.clone(),
                    index: index.clone(),
                });
            }
        }
    }
    for table in cur.tables.values() {
        if to.table(&table.name).is_none() {
            ops.push(Op::DropTable(table.clone()));
        }
    }
    for table in to.tables.values() {
        if cur.table(&table.name).is_none() {
            let mut bare = table.clone();
            bare.indexes.clear();
            ops.push(Op::CreateTable(bare));
            for index in table.indexes.values() {
                ops.push(Op::CreateIndex {
                    table: table.name.clone(),
                    index: index.clone(),
                });
            }
        }
    }
    for (live, want) in &kept {
        let table = &want.name;
        if live.checks != want.checks {
            ops.push(Op::AlterChecks {
                table: table.clone(),
                from: live.checks.clone(),
                to: want.checks.clone(),
            });
        }
        if live.options != want.options {
            ops.push(Op::AlterTable {
                table: table.clone(),
                from: live.options,
                to: want.options,
            });
        }
        // Adds before drops: SQLite refuses to drop a table's last column.
        for column in &want.columns {
            if live.column(&column.name).is_none() {
                ops.push(Op::AddColumn {
                    table: table.clone(),
                    column: column.clone(),
                });
            }
        }
        for column in &live.columns {
            if want.column(&column.name).is_none() {
                ops.push(Op::DropColumn {
                    table: table.clone(),
                    column: column.clone(),
                });
            }
        }
        for column in &want.columns {
            if let Some(old) = live.column(&column.name)
                && old != column
            {
                ops.push(Op::AlterColumn {
                    table: table.clone(),
                    from: old.clone(),
                    to: column.clone(),
                });
            }
        }
    }
    for (live, want) in &kept {
        for index in want.indexes.values() {
            if live.indexes.get(&index.name) != Some(index) {
                ops.push(Op::CreateIndex {
                    table: want.name.clone(),
                    index: index.clone(),
                });
            }
        }
    }
    for object in to.objects.values() {
        if cur.objects.get(&object.name) != Some(object) {
            ops.push(Op::CreateObject(object.clone()));
        }
    }
    Ok(ops)
}

/// A column that disappears while one of the same type appears in its table, or a table that
/// disappears while one with mostly the same columns appears.
fn refuse_undeclared_renames(cur: &Schema, to: &Schema) -> Result<(), CompareError> {
    let mut candidates = Vec::new();
    let gone: Vec<&Table> = cur
        .tables
        .values()
        .filter(|t| to.table(&t.name).is_none())
        .collect();
    let new: Vec<&Table> = to
        .tables
        .values()
        .filter(|t| cur.table(&t.name).is_none())
        .collect();
    for old in &gone {
        for add in &new {
            let shared = old
                .columns
                .iter()
                .filter(|c| add.column(&c.name).map(|a| a.sql_type) == Some(c.sql_type))
                .count();
            if shared * 2 >= old.columns.len().max(1) && shared > 0 {
                candidates.push(RenameCandidate {
                    table: None,
                    from: old.name.clone(),
                    to: add.name.clone(),
                });
            }
        }
    }
    for want in to.tables.values() {
        let Some(live) = cur.table(&want.name) else {
            continue;
        };
        let added: BTreeSet<(&str, _)> = want
            .columns
            .iter()
            .filter(|c| live.column(&c.name).is_none())
            .map(|c| (c.name.as_str(), c.sql_type))
            .collect();
        for old in &live.columns {
            if want.column(&old.name).is_some() {
                continue;
            }
            for (name, sql_type) in &added {
                if *sql_type == old.sql_type {
                    candidates.push(RenameCandidate {
                        table: Some(want.name.clone()),
                        from: old.name.clone(),
                        to: (*name).to_string(),
                    });
                }
            }
        }
    }
    if candidates.is_empty() {
        Ok(())
    } else {
        Err(CompareError::UndeclaredRenames(candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::declared::parse;

    fn schema(toml: &str) -> Schema {
        parse(toml, "m.toml").unwrap()
    }

    const BASE: &str = "[tables.p]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true }, { name = \"name\", type = \"TEXT\" } ]\n\
                        indexes = [ { name = \"p_name\", columns = [\"name\"], unique = true } ]\n";

    fn words(ops: &[Op]) -> Vec<String> {
        ops.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unchanged_schema_gives_no_ops() {
        let s = schema(BASE);
        assert!(compare(&s, &s, &Renames::default()).unwrap().is_empty());
    }

    #[test]
    fn every_kind_of_change_is_one_op_in_a_fixed_order() {
        let from = schema(&format!(
            "{BASE}[tables.old]\ncolumns = [ {{ name = \"x\", type = \"BLOB\" }} ]\n\
             [tables.c]\ncolumns = [ {{ name = \"p\", type = \"INTEGER\", references = \"p.id\" }}, {{ name = \"gone\", type = \"REAL\", nullable = true }} ]\n"
        ));
        let to = schema(
            "[tables.p]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true }, { name = \"name\", type = \"TEXT\", nullable = true }, { name = \"n\", type = \"INTEGER\", default = \"0\" } ]\n\
             indexes = [ { name = \"p_name\", columns = [\"name\"], unique = false } ]\n\
             [tables.c]\ncolumns = [ { name = \"p\", type = \"INTEGER\", references = \"p.id\", on_delete = \"CASCADE\" } ]\n\
             [tables.fresh]\ncolumns = [ { name = \"k\", type = \"TEXT\", primary_key = true } ]\n",
        );
        let ops = compare(&from, &to, &Renames::default()).unwrap();
        assert_eq!(
            words(&ops),
            [
                "drop unique index p_name on p (name)",
                "drop table old",
                "create table fresh",
                "drop column c.gone",
                "alter column c.p: references p.id ON DELETE CASCADE (was references p.id ON DELETE NO ACTION)",
                "add column p.n INTEGER NOT NULL DEFAULT 0",
                "alter column p.name: nullable (was NOT NULL)",
                "create index p_name on p (name)",
            ]
        );
        assert_eq!(ops, compare(&from, &to, &Renames::default()).unwrap());
    }

    #[test]
    fn a_drop_and_add_of_the_same_type_is_refused_with_the_flag_to_use() {
        let from = schema(
            "[tables.t]\ncolumns = [ { name = \"op\", type = \"TEXT\", nullable = true } ]\n",
        );
        let to = schema(
            "[tables.t]\ncolumns = [ { name = \"operator\", type = \"TEXT\", nullable = true } ]\n",
        );
        let err = compare(&from, &to, &Renames::default()).unwrap_err();
        assert!(
            err.to_string().contains("--rename t.op=t.operator"),
            "{err}"
        );
        let mut renames = Renames::default();
        renames
            .columns
            .insert(("t".into(), "operator".into()), "op".into());
        let ops = compare(&from, &to, &renames).unwrap();
        assert_eq!(words(&ops), ["rename column t.op to operator"]);
    }

    #[test]
    fn a_table_rename_carries_foreign_keys_and_needs_no_other_op() {
        let from = schema(&format!(
            "{BASE}[tables.c]\ncolumns = [ {{ name = \"p\", type = \"INTEGER\", references = \"p.id\" }} ]\n"
        ));
        let to = schema(&format!(
            "{}[tables.c]\ncolumns = [ {{ name = \"p\", type = \"INTEGER\", references = \"parent.id\" }} ]\n",
            BASE.replace("[tables.p]", "[tables.parent]")
        ));
        let err = compare(&from, &to, &Renames::default()).unwrap_err();
        assert!(err.to_string().contains("--rename p=parent"), "{err}");
        let mut renames = Renames::default();
        renames.tables.insert("parent".into(), "p".into());
        let ops = compare(&from, &to, &renames).unwrap();
        assert_eq!(words(&ops), ["rename table p to parent"]);
    }

    #[test]
    fn a_rename_flag_that_does_not_fit_is_an_error() {
        let s = schema(BASE);
        let mut renames = Renames::default();
        renames
            .columns
            .insert(("p".into(), "title".into()), "nope".into());
        let err = resolve_renames(&s, &s, &renames, &Renames::default()).unwrap_err();
        assert!(err.to_string().contains("p has no column nope"), "{err}");
    }

    #[test]
    fn a_carried_out_renamed_from_is_ignored() {
        let s = schema(BASE);
        let mut declared = Renames::default();
        declared
            .columns
            .insert(("p".into(), "name".into()), "old_name".into());
        let renames = resolve_renames(&s, &s, &Renames::default(), &declared).unwrap();
        assert!(renames.is_empty());
    }
}
