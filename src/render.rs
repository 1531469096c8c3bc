//! [`Op`]s → SQL text for SQLite. Pure and deterministic: LF line ends, a trailing newline,
//! the same bytes for the same operations.

use std::fmt::Write;

use crate::diff::Op;
use crate::schema::{Column, Index, Table};

/// The SQL for `ops`, one statement per op, each ending in `;\n`.
pub fn render(ops: &[Op]) -> String {
    let mut sql = String::new();
    for op in ops {
        sql.push_str(&render_op(op));
    }
    sql
}

/// A migration file: a header that lists the operations in words, then the SQL.
pub fn render_migration(title: &str, ops: &[Op]) -> String {
    let mut text = format!("-- {title}\n--\n");
    for op in ops {
        let _ = writeln!(text, "--   {op}");
    }
    text.push('\n');
    text.push_str(&render(ops));
    text
}

fn render_op(op: &Op) -> String {
    match op {
        Op::CreateTable(table) => create_table(table),
        Op::CreateIndex { table, index } => create_index(table, index),
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
        .map(|c| column_definition(c, single_pk))
        .collect();
    if !single_pk && !table.primary_key().is_empty() {
        let pk: Vec<String> = table.primary_key().iter().map(|c| ident(&c.name)).collect();
        lines.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    }
    format!(
        "CREATE TABLE {} (\n    {}\n);\n",
        ident(name),
        lines.join(",\n    ")
    )
}

pub fn column_definition(column: &Column, single_pk: bool) -> String {
    let mut def = format!("{} {}", ident(&column.name), column.sql_type);
    let rowid_alias = single_pk && column.primary_key > 0 && column.sql_type.as_sql() == "INTEGER";
    // `INTEGER PRIMARY KEY` is the rowid: NOT NULL would stop SQLite from assigning it.
    if !column.nullable && !rowid_alias {
        def.push_str(" NOT NULL");
    }
    if single_pk && column.primary_key > 0 {
        def.push_str(" PRIMARY KEY");
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
    let columns: Vec<String> = index.columns.iter().map(|c| ident(c)).collect();
    format!(
        "CREATE {}INDEX {} ON {} ({});\n",
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
