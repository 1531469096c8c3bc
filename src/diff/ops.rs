//! Schema operations: what `compare` emits, `rebuild::plan` folds, and `render` turns into SQL.

use std::fmt;

use crate::schema::{Column, Index, Schema, SchemaObject, SqlType, Table, TableOptions};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new table, without its indexes (each is its own [`Op::CreateIndex`]).
    CreateTable(Table),
    /// The table as it was: what is lost.
    DropTable(Table),
    RenameTable {
        from: String,
        to: String,
    },
    AddColumn {
        table: String,
        column: Column,
    },
    DropColumn {
        table: String,
        column: Column,
    },
    RenameColumn {
        table: String,
        from: String,
        to: String,
    },
    /// The table's CHECK constraints changed: always a rebuild.
    AlterChecks {
        table: String,
        from: Vec<String>,
        to: Vec<String>,
    },
    /// `STRICT` or `WITHOUT ROWID` changed: always a rebuild.
    AlterTable {
        table: String,
        from: TableOptions,
        to: TableOptions,
    },
    /// Type, nullability, default, primary key or foreign key changed. SQLite cannot do any of
    /// these in place, so `rebuild::plan` always folds it into a [`Op::RebuildTable`].
    AlterColumn {
        table: String,
        from: Column,
        to: Column,
    },
    CreateIndex {
        table: String,
        index: Index,
    },
    DropIndex {
        table: String,
        index: Index,
    },
    /// A view or trigger that goes (or is about to be recreated).
    DropObject(SchemaObject),
    /// A view or trigger that comes (or comes back after a rebuild).
    CreateObject(SchemaObject),
    /// Stops the migration, before anything is committed, when the data cannot take the new
    /// schema. Emitted by `rebuild::plan`, never by `compare`.
    Guard(Guard),
    /// SQLite's 12-step table rebuild. Emitted by `rebuild::plan`, never by `compare`.
    RebuildTable(Rebuild),
}

/// A check on the live data that aborts the migration with a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// `table.column` becomes NOT NULL and has no default: no row may hold NULL in it.
    NoNulls { table: String, column: String },
    /// `table.column` is new, NOT NULL and has no default: the table must be empty.
    EmptyTable { table: String, column: String },
    /// `check` is new on `table`: no row may violate it.
    CheckHolds { table: String, check: String },
    /// `table` becomes STRICT (or `column` changes type in a STRICT table): every value of
    /// `column` must already be of a type it takes.
    StrictType {
        table: String,
        column: String,
        sql_type: SqlType,
    },
}

/// Everything the rebuild of one table needs: the table as it is (after renames), the table as
/// declared, and how each kept column is filled from the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    pub from: Table,
    pub to: Table,
    /// How each column of the new table that the old one has is filled, in the new table's
    /// order. New columns are absent: they get their default (or NULL).
    pub copy: Vec<CopyColumn>,
    /// Why SQLite cannot do it in place, in words.
    pub reasons: Vec<String>,
}

/// One column copied by a rebuild: `INSERT INTO new (to) SELECT from ...`, with NULLs replaced
/// by the declared default when the column becomes NOT NULL and has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyColumn {
    pub column: String,
    pub null_default: Option<String>,
}

impl Op {
    /// The table this op works on (its new name for renames).
    pub fn table(&self) -> &str {
        match self {
            Op::CreateTable(t) | Op::DropTable(t) => &t.name,
            Op::DropObject(o) | Op::CreateObject(o) => &o.name,
            Op::RenameTable { to, .. } => to,
            Op::AddColumn { table, .. }
            | Op::DropColumn { table, .. }
            | Op::RenameColumn { table, .. }
            | Op::AlterColumn { table, .. }
            | Op::AlterTable { table, .. }
            | Op::AlterChecks { table, .. }
            | Op::CreateIndex { table, .. }
            | Op::DropIndex { table, .. } => table,
            Op::Guard(
                Guard::NoNulls { table, .. }
                | Guard::EmptyTable { table, .. }
                | Guard::StrictType { table, .. }
                | Guard::CheckHolds { table, .. },
            ) => table,
            Op::RebuildTable(r) => &r.to.name,
        }
    }

    /// What this op can destroy or make fail on a populated database at the schema `to` (the
    /// declared one), in words; `None` when it keeps every value. Such ops need
    /// `--allow-destructive`.
    pub fn hazard(&self, to: &Schema) -> Option<String> {
        match self {
            Op::DropTable(t) => Some(format!("drops table {} and every row in it", t.name)),
            Op::DropColumn { table, column } => Some(format!(
                "drops column {table}.{} and every value in it",
                column.name
            )),
            Op::AddColumn { table, column }
                if column.generated.is_none()
                    && !column.nullable
                    && column.non_null_default().is_none()
                    // SQLite numbers the rows of a new rowid alias itself.
                    && !to.table(table).is_some_and(|t| t.is_rowid_alias(&column.name)) =>
            {
                Some(format!(
                    "adds NOT NULL column {table}.{} without a default: migrating fails on a database whose {table} has rows",
                    column.name
                ))
            }
            Op::AlterColumn { table, from, to } => {
                let mut what = Vec::new();
                if from.sql_type != to.sql_type && is_narrowing(from.sql_type, to.sql_type) {
                    what.push(format!(
                        "changes {table}.{} from {} to {}, which converts or rounds some values",
                        to.name, from.sql_type, to.sql_type
                    ));
                }
                if from.nullable && !to.nullable && to.non_null_default().is_none() {
                    what.push(format!(
                        "makes {table}.{} NOT NULL without a default: migrating fails on a database where it holds NULL",
                        to.name
                    ));
                }
                (!what.is_empty()).then(|| what.join("; "))
            }
            Op::AlterChecks { table, from, to } => {
                let added: Vec<&String> = to.iter().filter(|c| !from.contains(c)).collect();
                (!added.is_empty()).then(|| {
                    let list: Vec<String> = added.iter().map(|c| format!("CHECK ({c})")).collect();
                    format!(
                        "adds {} to table {table}: migrating fails on a database with rows that violate it",
                        list.join(", ")
                    )
                })
            }
            Op::AlterTable { table, from, to } if to.strict && !from.strict => Some(format!(
                "makes table {table} STRICT: migrating fails on a database holding a value of another type than its column's"
            )),
            _ => None,
        }
    }
}

/// Whether storing a value of a column of type `from` in one of type `to` may change it.
/// SQLite converts on insert by the new column's affinity: TEXT '007' becomes INTEGER 7, REAL
/// 0.1 becomes TEXT with 15 significant digits, a big INTEGER loses digits as REAL. Only these
/// keep every value as it is: anything → BLOB (no affinity), INTEGER → NUMERIC or TEXT,
/// REAL → NUMERIC (an integral REAL becomes an equal INTEGER).
pub fn is_narrowing(from: SqlType, to: SqlType) -> bool {
    use SqlType::*;
    !matches!(
        (from, to),
        (_, Blob) | (Integer, Numeric) | (Integer, Text) | (Real, Numeric)
    ) && from != to
}

/// Applies a rename op to `schema` the way SQLite does: a renamed table keeps its indexes, and
/// foreign keys pointing at it (or at a renamed column) follow. Other ops are ignored.
pub fn apply_rename(schema: &mut Schema, op: &Op) {
    match op {
        Op::RenameTable { from, to } => {
            if let Some(mut table) = schema.tables.remove(from) {
                table.name = to.clone();
                schema.tables.insert(to.clone(), table);
            }
            for table in schema.tables.values_mut() {
                for column in &mut table.columns {
                    if let Some(r) = &mut column.references
                        && r.table == *from
                    {
                        r.table = to.clone();
                    }
                }
            }
        }
        Op::RenameColumn {
            table: name,
            from,
            to,
        } => {
            if let Some(table) = schema.tables.get_mut(name) {
                // SQLite rewrites the name inside the table's expressions too.
                let rename = |expr: &mut String| {
                    *expr = crate::schema::sqltext::rename_in_expr(expr, from, to);
                };
                table.checks.iter_mut().for_each(rename);
                for column in &mut table.columns {
                    if column.name == *from {
                        column.name = to.clone();
                    }
                    if let Some(generated) = &mut column.generated {
                        rename(&mut generated.expr);
                    }
                }
                for index in table.indexes.values_mut() {
                    if let Some(predicate) = &mut index.predicate {
                        rename(predicate);
                    }
                    if index.expressions {
                        index.columns.iter_mut().for_each(rename);
                    }
                }
                for index in table.indexes.values_mut().filter(|i| !i.expressions) {
                    for column in &mut index.columns {
                        if column == from {
                            *column = to.clone();
                        }
                    }
                }
            }
            for table in schema.tables.values_mut() {
                for column in &mut table.columns {
                    if let Some(r) = &mut column.references
                        && r.table == *name
                        && r.column == *from
                    {
                        r.column = to.clone();
                    }
                }
            }
        }
        _ => {}
    }
}

fn describe_column(column: &Column) -> String {
    let mut words = format!("{}", column.sql_type);
    if column.primary_key > 0 {
        words.push_str(" PRIMARY KEY");
    } else if column.nullable {
        words.push_str(" NULL");
    } else {
        words.push_str(" NOT NULL");
    }
    if let Some(collate) = &column.collate {
        words.push_str(&format!(" COLLATE {collate}"));
    }
    if let Some(g) = &column.generated {
        let kind = if g.stored { "STORED" } else { "VIRTUAL" };
        words.push_str(&format!(" GENERATED AS ({}) {kind}", g.expr));
    }
    if let Some(default) = &column.default {
        words.push_str(&format!(" DEFAULT {default}"));
    }
    if let Some(r) = &column.references {
        words.push_str(&format!(
            " REFERENCES {}.{} ON DELETE {}",
            r.table, r.column, r.on_delete
        ));
    }
    words
}

/// The facets of a column that differ, in words: "nullable (was NOT NULL)".
fn column_changes(from: &Column, to: &Column) -> Vec<String> {
    let mut changes = Vec::new();
    if from.sql_type != to.sql_type {
        changes.push(format!("type {} (was {})", to.sql_type, from.sql_type));
    }
    if from.nullable != to.nullable {
        changes.push(if to.nullable {
            "nullable (was NOT NULL)".to_string()
        } else {
            "NOT NULL (was nullable)".to_string()
        });
    }
    if from.default != to.default {
        let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".to_string());
        changes.push(format!(
            "default {} (was {})",
            show(&to.default),
            show(&from.default)
        ));
    }
    if from.primary_key != to.primary_key {
        let show = |pk: u32| {
            if pk == 0 {
                "not in the primary key".to_string()
            } else {
                format!("primary key position {pk}")
            }
        };
        changes.push(format!(
            "{} (was {})",
            show(to.primary_key),
            show(from.primary_key)
        ));
    }
    if from.generated != to.generated {
        let show = |g: &Option<crate::schema::Generated>| match g {
            None => "not generated".to_string(),
            Some(g) => format!(
                "generated as ({}) {}",
                g.expr,
                if g.stored { "STORED" } else { "VIRTUAL" }
            ),
        };
        changes.push(format!(
            "{} (was {})",
            show(&to.generated),
            show(&from.generated)
        ));
    }
    if from.collate != to.collate {
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "BINARY".to_string());
        changes.push(format!(
            "collate {} (was {})",
            show(&to.collate),
            show(&from.collate)
        ));
    }
    if from.references != to.references {
        let show = |r: &Option<crate::schema::Reference>| match r {
            None => "no foreign key".to_string(),
            Some(r) => format!(
                "references {}.{} ON DELETE {}",
                r.table, r.column, r.on_delete
            ),
        };
        changes.push(format!(
            "{} (was {})",
            show(&to.references),
            show(&from.references)
        ));
    }
    changes
}

fn describe_index(index: &Index, table: &str) -> String {
    format!(
        "{}index {} on {} ({}){}",
        if index.unique { "unique " } else { "" },
        index.name,
        table,
        index.columns.join(", "),
        index
            .predicate
            .as_ref()
            .map(|p| format!(" where {p}"))
            .unwrap_or_default()
    )
}

impl fmt::Display for Op {
    /// One line in words, for migration headers and `--check` output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateTable(table) => write!(f, "create table {}", table.name),
            Op::DropObject(o) => write!(f, "drop {} {}", o.kind.as_sql().to_lowercase(), o.name),
            Op::CreateObject(o) => {
                write!(f, "create {} {}", o.kind.as_sql().to_lowercase(), o.name)
            }
            Op::DropTable(table) => write!(f, "drop table {}", table.name),
            Op::RenameTable { from, to } => write!(f, "rename table {from} to {to}"),
            Op::AddColumn { table, column } => write!(
                f,
                "add column {table}.{} {}",
                column.name,
                describe_column(column)
            ),
            Op::DropColumn { table, column } => {
                write!(f, "drop column {table}.{}", column.name)
            }
            Op::RenameColumn { table, from, to } => {
                write!(f, "rename column {table}.{from} to {to}")
            }
            Op::AlterColumn { table, from, to } => write!(
                f,
                "alter column {table}.{}: {}",
                to.name,
                column_changes(from, to).join(", ")
            ),
            Op::CreateIndex { table, index } => {
                write!(f, "create {}", describe_index(index, table))
            }
            Op::DropIndex { table, index } => write!(f, "drop {}", describe_index(index, table)),
            Op::AlterTable { table, from, to } => {
                let show = |o: &TableOptions| o.describe();
                write!(f, "alter table {table}: {} (was {})", show(to), show(from))
            }
            Op::AlterChecks { table, from, to } => {
                let show = |checks: &[String]| {
                    if checks.is_empty() {
                        "none".to_string()
                    } else {
                        checks
                            .iter()
                            .map(|c| format!("CHECK ({c})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                };
                write!(
                    f,
                    "alter table {table}: checks {} (was {})",
                    show(to),
                    show(from)
                )
            }
            Op::Guard(Guard::CheckHolds { table, check }) => {
                write!(f, "check that every row of {table} passes CHECK ({check})")
            }
            Op::Guard(Guard::StrictType {
                table,
                column,
                sql_type,
            }) => write!(f, "check that every {table}.{column} value is {sql_type}"),
            Op::Guard(Guard::NoNulls { table, column }) => {
                write!(f, "check that {table}.{column} holds no NULL")
            }
            Op::Guard(Guard::EmptyTable { table, column }) => {
                write!(f, "check that {table} is empty (new column {column})")
            }
            Op::RebuildTable(r) => write!(f, "rebuild table {}", r.to.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_key_column_is_a_hazard_unless_it_is_the_rowid_alias() {
        let schema = |text: &str| crate::schema::declared::parse(text, "m.toml").unwrap();
        let composite = schema(
            "[tables.t]\ncolumns = [ { name = \"a\", type = \"TEXT\", primary_key = true }, { name = \"c\", type = \"INTEGER\", primary_key = true } ]\n",
        );
        let alone = schema(
            "[tables.t]\ncolumns = [ { name = \"a\", type = \"TEXT\" }, { name = \"c\", type = \"INTEGER\", primary_key = true } ]\n",
        );
        let add = |to: &Schema| Op::AddColumn {
            table: "t".into(),
            column: to.table("t").unwrap().column("c").unwrap().clone(),
        };
        assert!(add(&composite).hazard(&composite).is_some());
        assert_eq!(add(&alone).hazard(&alone), None);
    }

    #[test]
    fn narrowing_follows_sqlite_affinity_conversions() {
        use SqlType::*;
        assert!(!is_narrowing(Text, Blob));
        assert!(!is_narrowing(Integer, Numeric));
        assert!(!is_narrowing(Integer, Text));
        assert!(!is_narrowing(Text, Text));
        assert!(is_narrowing(Text, Integer));
        assert!(is_narrowing(Real, Text));
        assert!(is_narrowing(Integer, Real));
        assert!(is_narrowing(Blob, Text));
    }
}
