//! Live SQLite → [`Schema`], through the `pragma_*` table-valued functions.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};

use super::{Column, FkAction, Index, Reference, Schema, SqlType, Table, TableOptions};

/// Tables that belong to the machinery, not to the models.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// Tables whose names start with this are beamdb's own derived data (the index's full-text
/// table and the shadow tables SQLite keeps for it), not part of the models.
pub const OWN_PREFIX: &str = "beamdb_";

/// Reads the schema of every user table of `conn`'s main database.
pub fn introspect(conn: &Connection) -> rusqlite::Result<Schema> {
    let mut names = conn.prepare(
        "SELECT name FROM sqlite_schema
         WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> ?1
           AND name NOT LIKE 'beamdb\\_%' ESCAPE '\\'
         ORDER BY name",
    )?;
    let names: Vec<String> = names
        .query_map([HISTORY_TABLE], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut schema = Schema::default();
    for name in names {
        let table = introspect_table(conn, &name)?;
        schema.tables.insert(name, table);
    }
    let mut objects = conn.prepare(
        "SELECT type, name, sql FROM sqlite_schema
         WHERE type IN ('view', 'trigger') AND name NOT LIKE 'beamdb\\_%' ESCAPE '\\'
         ORDER BY name",
    )?;
    let rows = objects.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, name, sql) = row?;
        let kind = if kind == "view" {
            super::ObjectKind::View
        } else {
            super::ObjectKind::Trigger
        };
        schema.objects.insert(
            name.clone(),
            super::SchemaObject {
                kind,
                name,
                sql: sql.unwrap_or_default(),
            },
        );
    }
    Ok(schema)
}

fn introspect_table(conn: &Connection, name: &str) -> rusqlite::Result<Table> {
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_xinfo(?1)
         WHERE hidden IN (0, 2, 3) ORDER BY cid",
    )?;
    let columns: Vec<Column> = stmt
        .query_map([name], |row| {
            let declared_type: String = row.get(1)?;
            Ok(Column {
                name: row.get(0)?,
                sql_type: affinity(&declared_type),
                nullable: row.get::<_, i64>(2)? == 0,
                default: row
                    .get::<_, Option<String>>(3)?
                    .map(|d| d.trim().to_string()),
                primary_key: row.get(4)?,
                references: None,
                collate: None,
                generated: None,
            })
        })?
        .collect::<Result<_, _>>()?;

    let (without_rowid, strict) = conn.query_row(
        "SELECT wr, strict FROM pragma_table_list(?1) WHERE schema = 'main'",
        [name],
        |row| Ok((row.get::<_, i64>(0)? != 0, row.get::<_, i64>(1)? != 0)),
    )?;
    let mut table = Table {
        name: name.to_string(),
        columns: Vec::new(),
        indexes: BTreeMap::new(),
        options: TableOptions {
            strict,
            without_rowid,
            autoincrement: false,
        },
        checks: Vec::new(),
    };
    table.columns = columns;
    // CHECKs and COLLATEs: only the CREATE TABLE text has them.
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    let text = super::sqltext::read_create_table(sql.as_deref().unwrap_or(""));
    table.checks = text.checks;
    table.options.autoincrement = text.autoincrement;
    for column in &mut table.columns {
        column.generated =
            text.generated
                .get(&column.name)
                .map(|(expr, stored)| crate::schema::Generated {
                    expr: expr.clone(),
                    stored: *stored,
                });
        column.collate = text
            .collations
            .get(&column.name)
            .filter(|c| c.as_str() != "BINARY")
            .cloned();
    }
    // A rowid alias can never be NULL, whatever its NOT NULL flag says.
    let alias = table.rowid_alias().map(|c| c.name.clone());
    for column in &mut table.columns {
        if alias.as_ref() == Some(&column.name) {
            column.nullable = false;
        }
    }
    attach_references(conn, &mut table)?;
    table.indexes = introspect_indexes(conn, name)?;
    Ok(table)
}

fn attach_references(conn: &Connection, table: &mut Table) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT \"from\", \"table\", \"to\", on_delete FROM pragma_foreign_key_list(?1)
         ORDER BY id, seq",
    )?;
    let rows: Vec<(String, String, Option<String>, String)> = stmt
        .query_map([&table.name], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for (from, parent, to, on_delete) in rows {
        // `REFERENCES parent` without a column means the parent's primary key.
        let to = match to {
            Some(to) => to,
            None => parent_primary_key(conn, &parent)?.unwrap_or_default(),
        };
        if let Some(column) = table.columns.iter_mut().find(|c| c.name == from) {
            column.references = Some(Reference {
                table: parent,
                column: to,
                on_delete: FkAction::parse(&on_delete).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

fn parent_primary_key(conn: &Connection, parent: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT name FROM pragma_table_info(?1) WHERE pk = 1",
        [parent],
        |row| row.get(0),
    )
    .optional()
}

fn introspect_indexes(conn: &Connection, table: &str) -> rusqlite::Result<BTreeMap<String, Index>> {
    let mut list = conn.prepare(
        "SELECT l.name, l.\"unique\", CASE WHEN l.partial THEN s.sql END
         FROM pragma_index_list(?1) l LEFT JOIN sqlite_schema s ON s.type = 'index' AND s.name = l.name
         WHERE l.origin <> 'pk' ORDER BY l.name",
    )?;
    let entries: Vec<(String, bool, Option<String>)> = list
        .query_map([table], |row| {
            Ok((row.get(0)?, row.get::<_, i64>(1)? != 0, row.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut info = conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
    let mut indexes = BTreeMap::new();
    for (name, unique, sql) in entries {
        let mut columns: Vec<String> = info
            .query_map([&name], |row| row.get::<_, Option<String>>(0))?
            .map(|c| c.map(|c| c.unwrap_or_else(|| "<expression>".to_string())))
            .collect::<Result<_, _>>()?;
        // An item that is not a bare column name (an expression, or a column with COLLATE or
        // DESC) makes it an expression index: its items, verbatim, from the CREATE INDEX text.
        // (Indexes behind UNIQUE or PRIMARY KEY constraints have no text: plain columns.)
        let items = sql_of(conn, &name)?
            .as_deref()
            .and_then(super::sqltext::index_items);
        let mut expressions = columns.iter().any(|c| c == "<expression>");
        if let Some(items) = items
            && (expressions || items.iter().any(|(_, column)| column.is_none()))
        {
            expressions = true;
            columns = items.into_iter().map(|(text, _)| text).collect();
        }
        indexes.insert(
            name.clone(),
            Index {
                name,
                columns,
                unique,
                predicate: sql.as_deref().and_then(index_predicate),
                expressions,
            },
        );
    }
    Ok(indexes)
}

fn sql_of(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = ?1",
            [name],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// The `WHERE` expression of a `CREATE INDEX` statement: the text after the parenthesised
/// column list, verbatim (SQLite stores the statement as it was written).
pub fn index_predicate(sql: &str) -> Option<String> {
    let open = sql.find('(')?;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in sql.char_indices().skip_while(|(i, _)| *i < open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '[') => quote = Some(']'),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    let rest = sql[i + 1..].trim_start();
                    let keyword = rest.get(..5)?;
                    return keyword
                        .eq_ignore_ascii_case("WHERE")
                        .then(|| rest[5..].trim().to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// SQLite's type-affinity rules (section 3.1 of "Datatypes In SQLite"): what a declared type
/// means for storage, which is all a comparison with the models should care about.
pub fn affinity(declared: &str) -> SqlType {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        SqlType::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        SqlType::Text
    } else if t.contains("BLOB") || t.trim().is_empty() {
        SqlType::Blob
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        SqlType::Real
    } else {
        SqlType::Numeric
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_columns_keys_defaults_indexes_and_references() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE UNIQUE INDEX p_name ON p (name);
             CREATE TABLE c (uid VARCHAR(36) NOT NULL PRIMARY KEY,
                             p_id INTEGER REFERENCES p (id) ON DELETE CASCADE,
                             n INTEGER NOT NULL DEFAULT (0));
             CREATE INDEX c_p ON c (p_id, n);",
        )
        .unwrap();
        let schema = introspect(&conn).unwrap();
        let p = schema.table("p").unwrap();
        assert!(
            !p.column("id").unwrap().nullable,
            "rowid alias is never NULL"
        );
        assert!(p.has_rowid_alias());
        assert!(p.indexes["p_name"].unique);
        let c = schema.table("c").unwrap();
        assert_eq!(c.column("uid").unwrap().sql_type, SqlType::Text);
        assert_eq!(c.column("n").unwrap().default.as_deref(), Some("0"));
        let fk = c.column("p_id").unwrap().references.clone().unwrap();
        assert_eq!((fk.table.as_str(), fk.column.as_str()), ("p", "id"));
        assert_eq!(fk.on_delete, FkAction::Cascade);
        assert_eq!(c.indexes["c_p"].columns, ["p_id", "n"]);
        assert!(!c.indexes["c_p"].unique);
    }

    #[test]
    fn affinity_follows_sqlite_rules() {
        assert_eq!(affinity("BIGINT"), SqlType::Integer);
        assert_eq!(affinity("varchar(20)"), SqlType::Text);
        assert_eq!(affinity(""), SqlType::Blob);
        assert_eq!(affinity("DOUBLE PRECISION"), SqlType::Real);
        assert_eq!(affinity("DECIMAL(10,5)"), SqlType::Numeric);
    }
}

#[cfg(test)]
mod predicate_tests {
    use super::index_predicate;

    #[test]
    fn index_predicate_is_the_text_after_the_column_list() {
        assert_eq!(
            index_predicate(
                "CREATE INDEX \"i\" ON \"t\" (\"a\", lower(\"b\")) WHERE a > ')' AND \"(\" IS NULL"
            ),
            Some("a > ')' AND \"(\" IS NULL".to_string())
        );
        assert_eq!(index_predicate("CREATE INDEX i ON t (a)"), None);
        assert_eq!(
            index_predicate("CREATE INDEX i ON t(a)where b"),
            Some("b".to_string())
        );
    }
}
