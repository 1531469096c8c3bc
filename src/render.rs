//! [`Op`]s → SQL text for SQLite. Pure and deterministic: LF line ends, a trailing newline,
//! the same bytes for the same operations. What to do in place and what to rebuild is decided
//! before this (`diff::rebuild::plan`); this module only writes it down.

use std::fmt::Write;

use crate::diff::Op;
use crate::diff::ops::{Guard, Rebuild};
use crate::schema::{Column, Index, Schema, Table};

/// The header line of a migration that rebuilds or drops a table or drops a column: `migrate`
/// backs the database up before applying it.
pub const BACKUP_MARKER: &str =
    "-- beamdb: rebuilds or drops tables or columns; `beamdb migrate` backs up first";

/// The SQL for the steps of `plan` (what `diff::plan` returns), each statement ending in `;\n`.
pub fn render(plan: &[Op]) -> String {
    let mut sql = String::new();
    for op in plan {
        sql.push_str(&render_op(op));
    }
    sql
}

/// A migration file: a header that lists the operations in words (`ops`, what `compare`
/// found), says which tables are rebuilt and what the migration destroys, then the SQL of
/// `plan`.
pub fn render_migration(title: &str, ops: &[Op], plan: &[Op], to: &Schema) -> String {
    let mut text = format!("-- {title}\n--\n");
    for op in ops {
        let _ = writeln!(text, "--   {op}");
    }
    let mut notes = Vec::new();
    for step in plan {
        if let Op::RebuildTable(r) = step {
            notes.push(format!(
                "SQLite cannot {} in place: table {} is rebuilt (new table, copy every row, drop the old one, rename, recreate its indexes)",
                r.reasons.join(", "),
                r.to.name
            ));
        }
    }
    for op in ops {
        if let Some(hazard) = op.hazard(to) {
            notes.push(format!("DESTRUCTIVE: {hazard}"));
        }
    }
    if !notes.is_empty() {
        text.push_str("--\n");
        for note in notes {
            let _ = writeln!(text, "-- {note}");
        }
    }
    if needs_backup(plan) {
        let _ = writeln!(text, "{BACKUP_MARKER}");
    }
    text.push('\n');
    text.push_str(&render(plan));
    text
}

/// Whether applying `plan` drops or rebuilds something (and so deserves a backup first).
pub fn needs_backup(plan: &[Op]) -> bool {
    plan.iter().any(|op| {
        matches!(
            op,
            Op::DropTable(_) | Op::DropColumn { .. } | Op::RebuildTable(_)
        )
    })
}

fn render_op(op: &Op) -> String {
    match op {
        Op::CreateTable(table) => create_table(table),
        Op::DropObject(object) => format!(
            "DROP {} IF EXISTS {};\n",
            object.kind.as_sql(),
            ident(&object.name)
        ),
        Op::CreateObject(object) => format!("{};\n", object.sql),
        Op::DropTable(table) => format!("DROP TABLE {};\n", ident(&table.name)),
        // SQLite refuses a rename onto a name that differs only in case ("there is already
        // another table"): it goes through a temporary name.
        Op::RenameTable { from, to } if from.eq_ignore_ascii_case(to) => {
            let temporary = ident(&format!("{to}__beamdb_case"));
            format!(
                "ALTER TABLE {} RENAME TO {temporary};\nALTER TABLE {temporary} RENAME TO {};\n",
                ident(from),
                ident(to)
            )
        }
        Op::RenameTable { from, to } => {
            format!("ALTER TABLE {} RENAME TO {};\n", ident(from), ident(to))
        }
        Op::AddColumn { table, column } => format!(
            "ALTER TABLE {} ADD COLUMN {};\n",
            ident(table),
            column_definition(column, false, false)
        ),
        Op::DropColumn { table, column } => format!(
            "ALTER TABLE {} DROP COLUMN {};\n",
            ident(table),
            ident(&column.name)
        ),
        Op::RenameColumn { table, from, to } => format!(
            "ALTER TABLE {} RENAME COLUMN {} TO {};\n",
            ident(table),
            ident(from),
            ident(to)
        ),
        // SQLite has no ALTER COLUMN; `diff::plan` folds this into a rebuild, and the round
        // trip make-migrations runs before writing would catch a plan that did not.
        Op::AlterColumn { .. } | Op::AlterTable { .. } | Op::AlterChecks { .. } => {
            format!("-- not rendered ({op}): needs a table rebuild\n")
        }
        Op::CreateIndex { table, index } => create_index(table, index),
        Op::DropIndex { index, .. } => format!("DROP INDEX {};\n", ident(&index.name)),
        Op::Guard(guard) => render_guard(guard),
        Op::RebuildTable(rebuild) => render_rebuild(rebuild),
    }
}

/// An SQL string literal.
pub fn string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The name the rebuilt table has until the old one is dropped.
pub fn rebuild_name(table: &str) -> String {
    format!("{table}__beamdb_new")
}

/// The 12-step rebuild (SQLite's "ALTER TABLE" page, section 7), with foreign keys off on the
/// connection (the runner's job). The order matters: the new table is created under a temporary
/// name and renamed onto the old name only after the old table is dropped. Renaming the *old*
/// table out of the way first would make SQLite rewrite every child table's REFERENCES to
/// follow it, leaving them pointing at the dropped copy.
fn render_rebuild(r: &Rebuild) -> String {
    let table = ident(&r.to.name);
    let new = ident(&rebuild_name(&r.to.name));
    let mut sql = create_table_named(&r.to, &rebuild_name(&r.to.name));
    let (into, select): (Vec<String>, Vec<String>) = if r.copy.is_empty() {
        // No column survives, but the rows do (as their defaults): one value per row is
        // needed, the rowid where both tables have one, else the first column's default.
        if r.from.options.without_rowid || r.to.options.without_rowid {
            let first = r.to.columns.first();
            let name = first.map_or(String::new(), |c| ident(&c.name));
            let value = first
                .and_then(|c| c.default.clone())
                .map_or("NULL".to_string(), |d| format!("({d})"));
            (vec![name], vec![value])
        } else {
            (vec!["rowid".into()], vec!["rowid".into()])
        }
    } else {
        r.copy
            .iter()
            .map(|c| {
                let source = match &c.null_default {
                    Some(default) => format!("COALESCE({}, ({default}))", ident(&c.column)),
                    None => ident(&c.column),
                };
                (ident(&c.column), source)
            })
            .unzip()
    };
    // AUTOINCREMENT's counter lives in sqlite_sequence, keyed by table name, and goes with
    // the dropped table: keep it, or the rebuilt table could hand out a number again.
    let keep_counter = r.from.options.autoincrement && r.to.options.autoincrement;
    let name = string(&r.to.name);
    if keep_counter {
        let _ = writeln!(
            sql,
            "CREATE TEMP TABLE \"beamdb_sequence\" AS SELECT seq FROM sqlite_sequence WHERE name = {name};"
        );
    }
    let _ = write!(
        sql,
        "INSERT INTO {new} ({}) SELECT {} FROM {table};\n\
         DROP TABLE {table};\n\
         ALTER TABLE {new} RENAME TO {table};\n",
        into.join(", "),
        select.join(", ")
    );
    if keep_counter {
        let _ = write!(
            sql,
            "DELETE FROM sqlite_sequence WHERE name = {name} AND EXISTS (SELECT 1 FROM temp.\"beamdb_sequence\");\n\
             INSERT INTO sqlite_sequence (name, seq) SELECT {name}, seq FROM temp.\"beamdb_sequence\";\n\
             DROP TABLE temp.\"beamdb_sequence\";\n"
        );
    }
    for index in r.to.indexes.values() {
        sql.push_str(&create_index(&r.to.name, index));
    }
    sql
}

/// A check that aborts the migration (inside its transaction, so nothing is changed) with a
/// message that names the table, the column, the number of rows and what to do. RAISE works only
/// in a trigger, so the message is inserted into a temporary table whose trigger raises it.
fn render_guard(guard: &Guard) -> String {
    let (table, count, message) = match guard {
        Guard::NoNulls { table, column } => (
            table,
            format!("WHERE {} IS NULL", ident(column)),
            [
                format!("table {table}, column {column}: "),
                format!(
                    " row(s) hold NULL, and this migration makes the column NOT NULL without a default. Fill them in (UPDATE {} SET {} = ... WHERE {} IS NULL) or declare a default for {table}.{column} in the models and write the migration again",
                    ident(table),
                    ident(column),
                    ident(column)
                ),
            ],
        ),
        Guard::EmptyTable { table, column } => (
            table,
            String::new(),
            [
                format!("table {table}: "),
                format!(
                    " row(s), and this migration adds NOT NULL column {column} without a default, so they would have no value. Declare a default for {table}.{column} (or make it nullable) in the models and write the migration again"
                ),
            ],
        ),
        Guard::CheckHolds { table, check } => (
            table,
            format!("WHERE NOT ({check})"),
            [
                format!("table {table}: "),
                format!(
                    " row(s) violate CHECK ({check}), which this migration adds. Find them (SELECT rowid, * FROM {t} WHERE NOT ({check})), fix or delete them, or change the check in the models and write the migration again",
                    t = ident(table)
                ),
            ],
        ),
        Guard::StrictType {
            table,
            column,
            sql_type,
        } => (
            table,
            format!("WHERE NOT ({})", strict_fits(&ident(column), *sql_type)),
            [
                format!("table {table}, column {column}: "),
                format!(
                    " row(s) hold a value that is not {sql_type}, and this migration makes the table STRICT. Find them (SELECT rowid, {c} FROM {t} WHERE typeof({c}) <> '{ty}'), fix or clear them, or leave {table} without `strict = true` in the models and write the migration again",
                    c = ident(column),
                    t = ident(table),
                    ty = sql_type.as_sql().to_ascii_lowercase()
                ),
            ],
        ),
    };
    let mut select = format!("SELECT count(*) AS n FROM {}", ident(table));
    if !count.is_empty() {
        select = format!("{select} {count}");
    }
    format!(
        "CREATE TEMP TABLE \"beamdb_guard\" (\"message\" TEXT);\n\
         CREATE TEMP TRIGGER \"beamdb_guard_abort\" BEFORE INSERT ON \"beamdb_guard\" BEGIN SELECT RAISE(ABORT, NEW.\"message\"); END;\n\
         INSERT INTO \"beamdb_guard\" SELECT {} || n || {} FROM ({select}) WHERE n > 0;\n\
         DROP TABLE \"beamdb_guard\";\n",
        string(&message[0]),
        string(&message[1]),
    )
}

/// Whether the value of `column` goes into a STRICT column of `sql_type`: SQLite first applies
/// the column's affinity (text '7' becomes 7) and refuses what then still has another type.
/// On the safe side: a value this calls unfit stops the migration with a count; one it lets
/// through that SQLite refuses fails the migration's copy, which rolls everything back.
fn strict_fits(column: &str, sql_type: crate::schema::SqlType) -> String {
    use crate::schema::SqlType;
    let integral_text = format!("CAST(CAST({column} AS INTEGER) AS TEXT) = {column}");
    match sql_type {
        SqlType::Integer => format!(
            "{column} IS NULL OR typeof({column}) = 'integer' OR (typeof({column}) = 'real' AND {column} = CAST({column} AS INTEGER)) OR (typeof({column}) = 'text' AND {integral_text})"
        ),
        SqlType::Real => format!(
            "{column} IS NULL OR typeof({column}) IN ('integer', 'real') OR (typeof({column}) = 'text' AND (CAST(CAST({column} AS REAL) AS TEXT) = {column} OR {integral_text}))"
        ),
        SqlType::Text => format!("{column} IS NULL OR typeof({column}) <> 'blob'"),
        SqlType::Blob => format!("{column} IS NULL OR typeof({column}) = 'blob'"),
        // Refused in STRICT models; never guarded.
        SqlType::Numeric => "1".to_string(),
    }
}

/// Identifiers are always quoted, so that a column called `order` or `index` works.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn create_table(table: &Table) -> String {
    create_table_named(table, &table.name)
}

/// `CREATE TABLE` for `table`'s columns under another name (the rebuild's new table).
pub fn create_table_named(table: &Table, name: &str) -> String {
    let single_pk = table.primary_key().len() == 1;
    let mut lines: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let alias = table.is_rowid_alias(&c.name);
            column_definition_with(c, single_pk, alias, alias && table.options.autoincrement)
        })
        .collect();
    if !single_pk && !table.primary_key().is_empty() {
        let pk: Vec<String> = table.primary_key().iter().map(|c| ident(&c.name)).collect();
        lines.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    }
    // In parentheses and verbatim: SQLite keeps the text, and introspection reads it back.
    lines.extend(table.checks.iter().map(|check| format!("CHECK ({check})")));
    let options = match table.options.as_sql() {
        s if s.is_empty() => s,
        s => format!(" {s}"),
    };
    format!(
        "CREATE TABLE {} (\n    {}\n){options};\n",
        ident(name),
        lines.join(",\n    ")
    )
}

/// A column of `CREATE TABLE` (`single_pk`: the key is this one column, declared inline) or
/// of `ADD COLUMN`.
pub fn column_definition(column: &Column, single_pk: bool, rowid_alias: bool) -> String {
    column_definition_with(column, single_pk, rowid_alias, false)
}

fn column_definition_with(
    column: &Column,
    single_pk: bool,
    rowid_alias: bool,
    autoincrement: bool,
) -> String {
    let mut def = format!("{} {}", ident(&column.name), column.sql_type);
    // `INTEGER PRIMARY KEY` is the rowid: NOT NULL would stop SQLite from assigning it.
    if !column.nullable && !rowid_alias {
        def.push_str(" NOT NULL");
    }
    if single_pk && column.primary_key > 0 {
        def.push_str(" PRIMARY KEY");
        if autoincrement {
            def.push_str(" AUTOINCREMENT");
        }
    }
    if let Some(collate) = &column.collate {
        let _ = write!(def, " COLLATE {collate}");
    }
    if let Some(generated) = &column.generated {
        let kind = if generated.stored {
            "STORED"
        } else {
            "VIRTUAL"
        };
        let _ = write!(def, " GENERATED ALWAYS AS ({}) {kind}", generated.expr);
    }
    if let Some(default) = &column.default {
        // In parentheses, any expression is allowed, and SQLite reports the text inside them
        // back verbatim, so introspection returns exactly what the model says.
        let _ = write!(def, " DEFAULT ({default})");
    }
    if let Some(reference) = &column.references {
        let _ = write!(
            def,
            " REFERENCES {} ({}) ON DELETE {}",
            ident(&reference.table),
            ident(&reference.column),
            reference.on_delete
        );
    }
    def
}

pub fn create_index(table: &str, index: &Index) -> String {
    let columns: Vec<String> = if index.expressions {
        index.columns.clone()
    } else {
        index.columns.iter().map(|c| ident(c)).collect()
    };
    let predicate = index
        .predicate
        .as_ref()
        .map(|p| format!(" WHERE {p}"))
        .unwrap_or_default();
    format!(
        "CREATE {}INDEX {} ON {} ({}){predicate};\n",
        if index.unique { "UNIQUE " } else { "" },
        ident(&index.name),
        ident(table),
        columns.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FkAction, Reference, SqlType};
    use std::collections::BTreeMap;

    fn column(name: &str, sql_type: SqlType) -> Column {
        Column {
            name: name.into(),
            sql_type,
            nullable: false,
            default: None,
            primary_key: 0,
            references: None,
            collate: None,
            generated: None,
        }
    }

    #[test]
    fn create_table_renders_keys_defaults_and_references() {
        let mut id = column("id", SqlType::Integer);
        id.primary_key = 1;
        let mut parent = column("parent", SqlType::Text);
        parent.nullable = true;
        parent.references = Some(Reference {
            table: "p".into(),
            column: "uid".into(),
            on_delete: FkAction::SetNull,
        });
        let mut n = column("n", SqlType::Integer);
        n.default = Some("0".into());
        let table = Table {
            name: "t".into(),
            columns: vec![id, parent, n],
            indexes: BTreeMap::new(),
            options: Default::default(),
            checks: Vec::new(),
        };
        assert_eq!(
            create_table(&table),
            "CREATE TABLE \"t\" (\n    \"id\" INTEGER PRIMARY KEY,\n    \
             \"parent\" TEXT REFERENCES \"p\" (\"uid\") ON DELETE SET NULL,\n    \
             \"n\" INTEGER NOT NULL DEFAULT (0)\n);\n"
        );
    }

    #[test]
    fn composite_primary_key_is_a_table_constraint() {
        let mut a = column("a", SqlType::Text);
        a.primary_key = 1;
        let mut b = column("b", SqlType::Integer);
        b.primary_key = 2;
        let table = Table {
            name: "t".into(),
            columns: vec![a, b],
            indexes: BTreeMap::new(),
            options: Default::default(),
            checks: Vec::new(),
        };
        assert_eq!(
            create_table(&table),
            "CREATE TABLE \"t\" (\n    \"a\" TEXT NOT NULL,\n    \"b\" INTEGER NOT NULL,\n    PRIMARY KEY (\"a\", \"b\")\n);\n"
        );
    }

    #[test]
    fn unique_index() {
        let index = Index {
            name: "t_ab".into(),
            columns: vec!["a".into(), "b".into()],
            unique: true,
            predicate: None,
            expressions: false,
        };
        assert_eq!(
            create_index("t", &index),
            "CREATE UNIQUE INDEX \"t_ab\" ON \"t\" (\"a\", \"b\");\n"
        );
    }

    #[test]
    fn identifiers_with_quotes_are_escaped() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}

#[cfg(test)]
mod op_tests {
    use super::*;
    use crate::diff::ops::CopyColumn;
    use crate::schema::SqlType;
    use std::collections::BTreeMap;

    fn col(name: &str, sql_type: SqlType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            sql_type,
            nullable,
            default: None,
            primary_key: 0,
            references: None,
            collate: None,
            generated: None,
        }
    }

    #[test]
    fn in_place_alterations() {
        let mut n = col("n", SqlType::Integer, false);
        n.default = Some("0".into());
        let ops = [
            Op::RenameTable {
                from: "a".into(),
                to: "b".into(),
            },
            Op::RenameColumn {
                table: "b".into(),
                from: "x".into(),
                to: "y".into(),
            },
            Op::AddColumn {
                table: "b".into(),
                column: n,
            },
            Op::DropColumn {
                table: "b".into(),
                column: col("z", SqlType::Text, true),
            },
            Op::DropIndex {
                table: "b".into(),
                index: Index {
                    name: "b_y".into(),
                    columns: vec!["y".into()],
                    unique: false,
                    predicate: None,
                    expressions: false,
                },
            },
        ];
        assert_eq!(
            render(&ops),
            "ALTER TABLE \"a\" RENAME TO \"b\";\n\
             ALTER TABLE \"b\" RENAME COLUMN \"x\" TO \"y\";\n\
             ALTER TABLE \"b\" ADD COLUMN \"n\" INTEGER NOT NULL DEFAULT (0);\n\
             ALTER TABLE \"b\" DROP COLUMN \"z\";\n\
             DROP INDEX \"b_y\";\n"
        );
    }

    #[test]
    fn rebuild_creates_copies_drops_then_renames_the_new_table() {
        let mut id = col("id", SqlType::Integer, false);
        id.primary_key = 1;
        let mut to_a = col("a", SqlType::Text, false);
        to_a.default = Some("'?'".into());
        let from = Table {
            name: "t".into(),
            columns: vec![id.clone(), col("a", SqlType::Text, true)],
            indexes: BTreeMap::new(),
            options: Default::default(),
            checks: Vec::new(),
        };
        let mut to = Table {
            name: "t".into(),
            columns: vec![id, to_a, col("b", SqlType::Real, true)],
            indexes: BTreeMap::new(),
            options: Default::default(),
            checks: Vec::new(),
        };
        to.indexes.insert(
            "t_b".into(),
            Index {
                name: "t_b".into(),
                columns: vec!["b".into()],
                unique: false,
                predicate: None,
                expressions: false,
            },
        );
        let op = Op::RebuildTable(Rebuild {
            from,
            to,
            copy: vec![
                CopyColumn {
                    column: "id".into(),
                    null_default: None,
                },
                CopyColumn {
                    column: "a".into(),
                    null_default: Some("'?'".into()),
                },
            ],
            reasons: vec!["change column a".into()],
        });
        assert_eq!(
            render(&[op]),
            "CREATE TABLE \"t__beamdb_new\" (\n    \"id\" INTEGER PRIMARY KEY,\n    \"a\" TEXT NOT NULL DEFAULT ('?'),\n    \"b\" REAL\n);\n\
             INSERT INTO \"t__beamdb_new\" (\"id\", \"a\") SELECT \"id\", COALESCE(\"a\", ('?')) FROM \"t\";\n\
             DROP TABLE \"t\";\n\
             ALTER TABLE \"t__beamdb_new\" RENAME TO \"t\";\n\
             CREATE INDEX \"t_b\" ON \"t\" (\"b\");\n"
        );
    }

    #[test]
    fn guard_aborts_with_table_column_count_and_advice() {
        let sql = render(&[Op::Guard(Guard::NoNulls {
            table: "runs".into(),
            column: "plan_name".into(),
        })]);
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE runs (plan_name TEXT); INSERT INTO runs VALUES ('a');")
            .unwrap();
        conn.execute_batch(&sql).unwrap();
        conn.execute_batch("INSERT INTO runs VALUES (NULL), (NULL);")
            .unwrap();
        let err = conn.execute_batch(&sql).unwrap_err().to_string();
        assert!(
            err.starts_with("table runs, column plan_name: 2 row(s) hold NULL"),
            "{err}"
        );
        assert!(err.contains("UPDATE \"runs\" SET \"plan_name\""), "{err}");
    }

    #[test]
    fn migration_header_says_what_is_rebuilt_destroyed_and_backed_up() {
        let ops = [Op::DropTable(Table {
            name: "old".into(),
            columns: vec![col("x", SqlType::Blob, true)],
            indexes: BTreeMap::new(),
            options: Default::default(),
            checks: Vec::new(),
        })];
        assert_eq!(
            render_migration("V2__x", &ops, &ops, &Schema::default()),
            format!(
                "-- V2__x\n--\n--   drop table old\n--\n-- DESTRUCTIVE: drops table old and every row in it\n{BACKUP_MARKER}\n\nDROP TABLE \"old\";\n"
            )
        );
    }
}
