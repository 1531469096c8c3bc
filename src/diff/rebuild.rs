//! What SQLite can do in place, and folding the rest into table rebuilds.
//!
//! SQLite's ALTER TABLE can rename a table or column, add a column and drop a column, each
//! with restrictions; everything else is the 12-step rebuild of SQLite's "ALTER TABLE" page
//! (new table, copy, drop old, rename new, recreate indexes). The decision is made here, in
//! [`rebuild_reason`], and nowhere else (alembic's `requires_recreate_in_batch`).

use std::collections::BTreeMap;

use crate::schema::{Schema, Table};

use super::Op;
use super::ops::{CopyColumn, Guard, Rebuild, apply_rename};

/// Why SQLite cannot carry out `op` in place on a database at `from` (with the migration's
/// renames already applied), or `None` when it can.
pub fn rebuild_reason(op: &Op, from: &Schema) -> Option<String> {
    match op {
        // ADD COLUMN: no PRIMARY KEY or UNIQUE; NOT NULL needs a non-NULL default; the default
        // must be a constant; a REFERENCES column needs a NULL default (with foreign keys on).
        Op::AddColumn { column, .. } => {
            let default_is_null = column.non_null_default().is_none();
            if let Some(generated) = &column.generated {
                // ADD COLUMN takes a VIRTUAL generated column, not a STORED one.
                return (generated.stored || !column.nullable)
                    .then(|| format!("add STORED or NOT NULL generated column {}", column.name));
            }
            if column.primary_key > 0 {
                Some(format!("add primary-key column {}", column.name))
            } else if !column.nullable && default_is_null {
                Some(format!(
                    "add NOT NULL column {} without a default",
                    column.name
                ))
            } else if column.references.is_some() && !default_is_null {
                Some(format!(
                    "add foreign-key column {} with a non-NULL default",
                    column.name
                ))
            } else if column.default.as_deref().is_some_and(|d| !is_constant(d)) {
                Some(format!(
                    "add column {} with a non-constant default",
                    column.name
                ))
            } else {
                None
            }
        }
        // DROP COLUMN: not a PRIMARY KEY, UNIQUE, indexed or foreign-key column, nor one that
        // another table's foreign key points at. Indexes the models drop are gone by then.
        Op::DropColumn { table, column }
            if column.generated.is_some()
                || from
                    .table(table)
                    .is_some_and(|t| t.columns.iter().any(|c| c.generated.is_some())) =>
        {
            // A generated column, or one that a generated column may compute from.
            Some(format!(
                "drop column {} of a table with generated columns",
                column.name
            ))
        }
        Op::DropColumn { table, column } => {
            let referenced = from.tables.values().any(|t| {
                t.columns.iter().any(|c| {
                    c.references
                        .as_ref()
                        .is_some_and(|r| r.table == *table && r.column == column.name)
                })
            });
            if column.primary_key > 0 {
                Some(format!("drop primary-key column {}", column.name))
            } else if column.references.is_some() {
                Some(format!("drop foreign-key column {}", column.name))
            } else if referenced {
                Some(format!(
                    "drop column {}, which a foreign key points at",
                    column.name
                ))
            } else {
                None
            }
        }
        // SQLite has no ALTER COLUMN.
        Op::AlterColumn { to, .. } => Some(format!("change column {}", to.name)),
        Op::AlterChecks { .. } => Some("change CHECK constraints".to_string()),
        // Table options are part of CREATE TABLE and nothing else.
        Op::AlterTable { to, .. } => Some(format!("set the table options to {}", to.describe())),
        _ => None,
    }
}

/// A literal SQLite accepts as an ADD COLUMN default: a number, a string, a blob, NULL,
/// TRUE or FALSE. Anything else (CURRENT_TIMESTAMP, `1 + 1`) is "non-constant".
fn is_constant(expr: &str) -> bool {
    let e = expr.trim();
    let unsigned = e.trim_start_matches(['+', '-']);
    let is_number = !unsigned.is_empty()
        && unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.parse::<f64>().is_ok();
    let is_string = e.len() >= 2
        && e.starts_with('\'')
        && e.ends_with('\'')
        && !e[1..e.len() - 1].replace("''", "").contains('\'');
    let is_blob = (e.starts_with("X'") || e.starts_with("x'"))
        && e.ends_with('\'')
        && e[2..e.len() - 1].chars().all(|c| c.is_ascii_hexdigit());
    is_number
        || is_string
        || is_blob
        || ["NULL", "TRUE", "FALSE"]
            .iter()
            .any(|k| e.eq_ignore_ascii_case(k))
}

/// Turns `compare`'s ops into the steps a migration runs: the column ops of every table
/// that SQLite cannot alter in place become one [`Op::RebuildTable`] (which also recreates
/// that table's indexes), and [`Op::Guard`]s that stop the migration before any data changes
/// come right after the renames.
pub fn plan(from: &Schema, to: &Schema, ops: &[Op]) -> Vec<Op> {
    let mut cur = from.clone();
    for op in ops {
        apply_rename(&mut cur, op);
    }
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for op in ops {
        if let Some(reason) = rebuild_reason(op, &cur) {
            reasons.entry(op.table()).or_default().push(reason);
        }
    }
    let rebuilds: BTreeMap<&str, Rebuild> = reasons
        .into_iter()
        .filter_map(|(name, reasons)| {
            let (live, want) = (cur.table(name)?, to.table(name)?);
            Some((name, rebuild(live, want, reasons)))
        })
        .collect();

    let renames = ops
        .iter()
        .take_while(|op| {
            matches!(
                op,
                Op::DropObject(_) | Op::RenameTable { .. } | Op::RenameColumn { .. }
            )
        })
        .count();
    // A rebuild drops the table with its triggers, and SQLite checks every view and trigger
    // when a table is renamed or dropped: all of them go first and come back at the end.
    let disruptive = !rebuilds.is_empty()
        || ops.iter().any(|op| {
            matches!(
                op,
                Op::RenameTable { .. }
                    | Op::RenameColumn { .. }
                    | Op::DropTable(_)
                    | Op::DropColumn { .. }
            )
        });
    let mut steps = Vec::new();
    if disruptive {
        for object in from.objects.values() {
            if !ops.contains(&Op::DropObject(object.clone())) {
                steps.push(Op::DropObject(object.clone()));
            }
        }
    }
    steps.extend(ops[..renames].iter().cloned());
    for r in rebuilds.values() {
        steps.extend(guards(&r.from, &r.to).into_iter().map(Op::Guard));
    }
    let mut done = std::collections::BTreeSet::new();
    for op in &ops[renames..] {
        let folded = matches!(
            op,
            Op::AddColumn { .. }
                | Op::DropColumn { .. }
                | Op::AlterColumn { .. }
                | Op::AlterTable { .. }
                | Op::AlterChecks { .. }
                | Op::CreateIndex { .. }
        );
        match rebuilds.get(op.table()) {
            Some(r) if folded => {
                if matches!(op, Op::CreateIndex { .. }) {
                    continue;
                }
                if done.insert(op.table()) {
                    steps.push(Op::RebuildTable(r.clone()));
                }
            }
            _ => steps.push(op.clone()),
        }
    }
    if disruptive {
        for object in to.objects.values() {
            if !ops.contains(&Op::CreateObject(object.clone())) {
                steps.push(Op::CreateObject(object.clone()));
            }
        }
    }
    steps
}

fn rebuild(from: &Table, to: &Table, reasons: Vec<String>) -> Rebuild {
    let copy = to
        .columns
        .iter()
        // A generated column is computed, never written: the copy leaves it out.
        .filter(|c| c.generated.is_none())
        .filter_map(|c| {
            let old = from.column(&c.name)?;
            let fill = old.nullable && !c.nullable && !to.is_rowid_alias(&c.name);
            Some(CopyColumn {
                column: c.name.clone(),
                null_default: c.non_null_default().filter(|_| fill).map(str::to_string),
            })
        })
        .collect();
    Rebuild {
        from: from.clone(),
        to: to.clone(),
        copy,
        reasons,
    }
}

/// The checks that must pass before `from` can be copied into `to`: a column that becomes NOT
/// NULL without a default must hold no NULL, and a new NOT NULL column without a default needs
/// an empty table.
fn guards(from: &Table, to: &Table) -> Vec<Guard> {
    let mut guards = Vec::new();
    for c in &to.columns {
        if c.nullable
            || c.non_null_default().is_some()
            || to.is_rowid_alias(&c.name)
            || c.generated.is_some()
        {
            continue;
        }
        let guard = match from.column(&c.name) {
            Some(old) if old.nullable => Guard::NoNulls {
                table: to.name.clone(),
                column: c.name.clone(),
            },
            Some(_) => continue,
            None => Guard::EmptyTable {
                table: to.name.clone(),
                column: c.name.clone(),
            },
        };
        guards.push(guard);
    }
    // A new CHECK must hold for the rows the rebuild copies (SQLite would refuse the copy).
    for check in &to.checks {
        // A check on a column the rebuild adds cannot be counted on the old table; the copy
        // itself enforces it (and rolls the migration back if a row fails).
        let on_new_column = crate::schema::sqltext::names(check).iter().any(|name| {
            to.columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(name) && from.column(&c.name).is_none())
        });
        if !from.checks.contains(check) && !on_new_column {
            guards.push(Guard::CheckHolds {
                table: to.name.clone(),
                check: check.clone(),
            });
        }
    }
    // STRICT refuses what the old table's affinity let through (text in an INTEGER column).
    if to.options.strict {
        for c in &to.columns {
            let Some(old) = from.column(&c.name) else {
                continue;
            };
            if !from.options.strict || old.sql_type != c.sql_type {
                guards.push(Guard::StrictType {
                    table: to.name.clone(),
                    column: c.name.clone(),
                    sql_type: c.sql_type,
                });
            }
        }
    }
    guards
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::compare;
    use crate::schema::Renames;
    use crate::schema::declared::parse;

    fn schema(toml: &str) -> Schema {
        parse(toml, "m.toml").unwrap()
    }

    fn steps(from: &str, to: &str) -> Vec<String> {
        let (from, to) = (schema(from), schema(to));
        let ops = compare(&from, &to, &Renames::default()).unwrap();
        plan(&from, &to, &ops)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const T: &str = "[tables.t]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true }, { name = \"a\", type = \"TEXT\", nullable = true } ]\n";

    #[test]
    fn nullable_column_with_constant_default_is_added_in_place() {
        let to = T.replace(
            " ]\n",
            ", { name = \"b\", type = \"INTEGER\", default = \"-1\" } ]\n",
        );
        assert_eq!(
            steps(T, &to),
            ["add column t.b INTEGER NOT NULL DEFAULT -1"]
        );
    }

    #[test]
    fn not_null_column_without_default_is_a_guarded_rebuild() {
        let to = T.replace(" ]\n", ", { name = \"b\", type = \"INTEGER\" } ]\n");
        assert_eq!(
            steps(T, &to),
            ["check that t is empty (new column b)", "rebuild table t"]
        );
    }

    #[test]
    fn non_constant_default_is_a_rebuild() {
        let to = T.replace(
            " ]\n",
            ", { name = \"b\", type = \"TEXT\", default = \"CURRENT_TIMESTAMP\" } ]\n",
        );
        assert_eq!(steps(T, &to), ["rebuild table t"]);
    }

    #[test]
    fn making_a_column_not_null_is_a_rebuild_with_a_null_guard() {
        let to = T.replace("nullable = true", "nullable = false");
        assert_eq!(
            steps(T, &to),
            ["check that t.a holds no NULL", "rebuild table t"]
        );
        let with_default = T.replace("nullable = true", "default = \"'none'\"");
        let (from, to) = (schema(T), schema(&with_default));
        let ops = compare(&from, &to, &Renames::default()).unwrap();
        let Op::RebuildTable(r) = &plan(&from, &to, &ops)[0] else {
            panic!("not a rebuild");
        };
        assert_eq!(r.copy[1].null_default.as_deref(), Some("'none'"));
    }

    #[test]
    fn plain_column_is_dropped_in_place_but_a_foreign_key_column_is_not() {
        let to =
            "[tables.t]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true } ]\n";
        assert_eq!(steps(T, to), ["drop column t.a"]);
        let with_fk = format!(
            "{to}[tables.c]\ncolumns = [ {{ name = \"x\", type = \"BLOB\" }}, {{ name = \"t\", type = \"INTEGER\", nullable = true, references = \"t.id\" }} ]\nindexes = [ {{ name = \"c_t\", columns = [\"t\"] }} ]\n"
        );
        let without =
            format!("{to}[tables.c]\ncolumns = [ {{ name = \"x\", type = \"BLOB\" }} ]\n");
        assert_eq!(
            steps(&with_fk, &without),
            ["drop index c_t on c (t)", "rebuild table c"]
        );
    }

    #[test]
    fn index_changes_of_a_rebuilt_table_are_part_of_the_rebuild() {
        let from = format!("{T}indexes = [ {{ name = \"t_a\", columns = [\"a\"] }} ]\n");
        let to = format!(
            "{}indexes = [ {{ name = \"t_a\", columns = [\"a\"], unique = true }}, {{ name = \"t_id_a\", columns = [\"id\", \"a\"] }} ]\n",
            T.replace("\"TEXT\"", "\"BLOB\"")
        );
        assert_eq!(
            steps(&from, &to),
            ["drop index t_a on t (a)", "rebuild table t"]
        );
    }

    #[test]
    fn constants() {
        for c in [
            "0", "-1", "+2.5", "1e3", "'x'", "'it''s'", "X'00ff'", "NULL", "true",
        ] {
            assert!(is_constant(c), "{c}");
        }
        for c in [
            "CURRENT_TIMESTAMP",
            "1 + 1",
            "'a' || 'b'",
            "(0)",
            "abs(-1)",
            "'a'b'",
        ] {
            assert!(!is_constant(c), "{c}");
        }
    }
}
