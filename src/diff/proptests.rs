// Test code only: diff/mod.rs declares this module under #[cfg(test)].
//! Property: for random schemas A and B and a database at A filled with rows that satisfy A,
//! the migration beamdb writes from A to B (destructive changes allowed, undeclared renames
//! declared as suggested), applied by the real runner, either
//! - succeeds, and then the live schema is B, every kept table has every row, every kept
//!   column (same type, not filled from a default) every value, and foreign keys check clean;
//! - or fails for a reason the data gives (NULLs for a NOT NULL column, duplicates for a new
//!   unique index, dangling references for a new foreign key, text in a new rowid), with the
//!   database exactly as it was.
//!
//! 64 cases by default (2 cores); more with PROPTEST_CASES=1000.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rusqlite::Connection;
use rusqlite::types::Value;

use crate::diff::{self, CompareError, Op};
use crate::migrations::files::MigrationFile;
use crate::migrations::runner;
use crate::schema::{
    Column, FkAction, Index, Reference, Renames, Schema, SqlType, Table, introspect,
};

/// Reads bytes as decisions; 0 (also when the bytes run out) is always the simplest choice,
/// so that shrinking leads to small schemas.
struct Genes<'a>(std::slice::Iter<'a, u8>);

impl Genes<'_> {
    fn pick(&mut self, n: usize) -> usize {
        self.0.next().map_or(0, |g| usize::from(*g) % n)
    }
}

const TABLES: usize = 3;
const COLUMNS: usize = 4;

fn constant(ty: SqlType) -> &'static str {
    match ty {
        SqlType::Integer => "7",
        SqlType::Real => "1.5",
        SqlType::Text => "'d'",
        SqlType::Blob => "X'0A'",
        SqlType::Numeric => "3",
    }
}

/// Names that need quoting are generated too: a space, a quote, a double quote.
fn table_name(t: usize) -> String {
    if t == 2 {
        "t 2".to_string()
    } else {
        format!("t{t}")
    }
}

fn column_name(c: usize) -> String {
    if c == 3 {
        "c'3 \"x\"".to_string()
    } else {
        format!("c{c}")
    }
}

/// A valid schema (by the rules `declared` checks) over tables t0..t2 and columns id, c0..c3.
fn schema(genes: &[u8]) -> Schema {
    let mut g = Genes(genes.iter());
    let mut schema = Schema::default();
    let mut pks: BTreeMap<String, SqlType> = BTreeMap::new();
    let mut fks: Vec<(String, usize, usize, FkAction)> = Vec::new();
    for t in 0..TABLES {
        let name = table_name(t);
        if t > 0 && g.pick(4) == 0 {
            continue;
        }
        let mut columns = Vec::new();
        match g.pick(3) {
            1 => columns.push((SqlType::Integer, "id".to_string())),
            2 => columns.push((SqlType::Text, "id".to_string())),
            _ => {}
        }
        let mut table = Table {
            name: name.clone(),
            columns: Vec::new(),
            indexes: BTreeMap::new(),
            options: Default::default(),
            checks: Vec::new(),
        };
        if let Some((ty, id)) = columns.pop() {
            pks.insert(name.clone(), ty);
            table.columns.push(Column {
                name: id,
                sql_type: ty,
                nullable: false,
                default: None,
                primary_key: 1,
                references: None,
                collate: None,
                generated: None,
            });
        }
        for c in 0..COLUMNS {
            let present = g.pick(3) != 0 || (c == 0 && table.columns.is_empty());
            let ty = SqlType::ALL[g.pick(5)];
            let nullable = g.pick(2) == 0;
            let default = match g.pick(5) {
                2 => Some(constant(ty).to_string()),
                3 => Some("NULL".to_string()),
                4 => Some("abs(-2)".to_string()),
                _ => None,
            };
            let fk = match g.pick(6) {
                3 => Some(FkAction::NoAction),
                4 => Some(FkAction::Cascade),
                5 => Some(FkAction::SetNull),
                _ => None,
            };
            let parent = g.pick(TABLES);
            if !present {
                continue;
            }
            if let Some(action) = fk {
                fks.push((name.clone(), table.columns.len(), parent, action));
            }
            table.columns.push(Column {
                name: column_name(c),
                sql_type: ty,
                nullable,
                default,
                primary_key: 0,
                references: None,
                collate: None,
                generated: None,
            });
        }
        for i in 0..g.pick(3) {
            let first = g.pick(COLUMNS);
            let second = g.pick(COLUMNS + 1);
            let unique = g.pick(2) == 1;
            // Partial indexes: SQLite stores the WHERE text as written, and so must the
            // round trip.
            let partial = g.pick(3) == 2;
            let mut cols: Vec<String> = [first, second]
                .iter()
                .map(|c| column_name(*c))
                .filter(|c| table.column(c).is_some())
                .collect();
            cols.dedup();
            if !cols.is_empty() {
                let predicate =
                    partial.then(|| format!("{} IS NOT NULL", crate::render::ident(&cols[0])));
                // Expression indexes: SQLite keeps their items as written, too.
                let expressions = g.pick(4) == 3;
                let cols = if expressions {
                    cols.iter()
                        .map(|c| format!("lower({})", crate::render::ident(c)))
                        .collect()
                } else {
                    cols
                };
                let index = Index {
                    name: format!("{name}_i{i}"),
                    columns: cols,
                    unique,
                    predicate,
                    expressions,
                };
                table.indexes.insert(index.name.clone(), index);
            }
        }
        schema.tables.insert(name, table);
    }
    // Foreign keys point at a parent's primary key, with its type; SET NULL needs a nullable
    // column.
    for (table, column, parent, action) in fks {
        let parent = table_name(parent);
        let Some(ty) = pks.get(&parent) else {
            continue;
        };
        let Some(t) = schema.tables.get_mut(&table) else {
            continue;
        };
        let c = &mut t.columns[column];
        c.sql_type = *ty;
        if action == FkAction::SetNull {
            c.nullable = true;
        }
        c.references = Some(Reference {
            table: parent,
            column: "id".into(),
            on_delete: action,
        });
    }
    // A view over one table: it must survive every rebuild and rename of that table.
    if let Some(table) = schema.tables.keys().next().cloned()
        && g.pick(3) == 1
    {
        let name = "v".to_string();
        let sql = format!(
            "CREATE VIEW {} AS SELECT count(*) AS n FROM {}",
            crate::render::ident(&name),
            crate::render::ident(&table)
        );
        schema.objects.insert(
            name.clone(),
            crate::schema::SchemaObject {
                kind: crate::schema::ObjectKind::View,
                name,
                sql,
            },
        );
    }
    // Table options. WITHOUT ROWID only on tables with a key and no foreign key of their
    // own (`populate` removes dangling children by rowid).
    for table in schema.tables.values_mut() {
        let strict = g.pick(4) == 1;
        let without_rowid = g.pick(4) == 1
            && !table.primary_key().is_empty()
            && table.columns.iter().all(|c| c.references.is_none());
        // A check the generated data may break (it is text in one column), and NOCASE on a
        // text column.
        let check = g.pick(4);
        let collate = g.pick(4);
        if let Some(c) = table
            .columns
            .iter()
            .find(|c| c.primary_key == 0 && c.references.is_none())
        {
            match check {
                1 => table.checks.push(format!(
                    "typeof({}) <> 'text'",
                    crate::render::ident(&c.name)
                )),
                2 => table.checks.push(format!(
                    "{} IS NOT NULL OR 1",
                    crate::render::ident(&c.name)
                )),
                _ => {}
            }
        }
        // A generated column over a plain one (SDSS Astra keys rows by one, unique).
        let generated = g.pick(4);
        if generated > 0
            && let Some(c) = table
                .columns
                .iter()
                .find(|c| c.primary_key == 0 && c.references.is_none())
        {
            let expr = format!("{} IS NULL", crate::render::ident(&c.name));
            table.columns.push(Column {
                name: "g".into(),
                sql_type: SqlType::Integer,
                nullable: true,
                default: None,
                primary_key: 0,
                references: None,
                collate: None,
                generated: Some(crate::schema::Generated {
                    expr,
                    stored: generated == 2,
                }),
            });
            if generated == 3 {
                let index = Index {
                    name: format!("{}_g", table.name),
                    columns: vec!["g".into()],
                    unique: false,
                    predicate: None,
                    expressions: false,
                };
                table.indexes.insert(index.name.clone(), index);
            }
        }
        if collate == 1
            && let Some(c) = table
                .columns
                .iter_mut()
                .find(|c| c.sql_type == SqlType::Text && c.references.is_none())
        {
            c.collate = Some("NOCASE".to_string());
        }
        if strict {
            for c in &mut table.columns {
                if c.sql_type == SqlType::Numeric {
                    c.sql_type = SqlType::Integer;
                }
            }
        }
        let autoincrement = g.pick(3) == 1;
        table.options = crate::schema::TableOptions {
            strict,
            without_rowid,
            autoincrement: false,
        };
        table.options.autoincrement = autoincrement && table.has_rowid_alias();
    }
    schema
}

fn value(ty: SqlType, column: usize, row: usize) -> Value {
    let n = (100 * column + row) as i64;
    match ty {
        SqlType::Integer | SqlType::Numeric => Value::Integer(n),
        SqlType::Real => Value::Real(n as f64 + 0.5),
        SqlType::Text => Value::Text(format!("v{n}")),
        SqlType::Blob => Value::Blob(vec![column as u8, row as u8]),
    }
}

fn key(ty: SqlType, row: usize) -> Value {
    match ty {
        SqlType::Integer => Value::Integer(row as i64 + 1),
        _ => Value::Text(format!("k{row}")),
    }
}

/// Fills the database (at `schema`) with rows that satisfy it: unique values per column,
/// NULLs in some nullable columns, references to existing parent rows.
fn populate(conn: &Connection, schema: &Schema, genes: &[u8]) {
    let mut g = Genes(genes.iter());
    let rows: BTreeMap<&str, usize> = schema
        .tables
        .keys()
        .map(|t| (t.as_str(), g.pick(5)))
        .collect();
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    for table in schema.tables.values() {
        for row in 0..rows[table.name.as_str()] {
            let mut values = Vec::new();
            for (i, c) in table.columns.iter().enumerate() {
                if c.generated.is_some() {
                    continue;
                }
                let null = c.nullable && g.pick(3) == 0;
                let v = if null {
                    Value::Null
                } else if c.primary_key > 0 {
                    key(c.sql_type, row)
                } else if let Some(r) = &c.references {
                    match rows[r.table.as_str()] {
                        0 => Value::Null,
                        n => key(c.sql_type, g.pick(n)),
                    }
                } else {
                    value(c.sql_type, i, row)
                };
                values.push(v);
            }
            let names: Vec<String> = table
                .columns
                .iter()
                .filter(|c| c.generated.is_none())
                .map(|c| crate::render::ident(&c.name))
                .collect();
            let marks = vec!["?"; names.len()].join(", ");
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO {} ({}) VALUES ({marks})",
                    crate::render::ident(&table.name),
                    names.join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .unwrap();
        }
    }
    // Rows whose reference could not be satisfied (NULL in a NOT NULL column was ignored,
    // a parent ignored as a duplicate) go, until the database is consistent.
    loop {
        let bad: Vec<(String, i64)> = conn
            .prepare("SELECT \"table\", rowid FROM pragma_foreign_key_check")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if bad.is_empty() {
            break;
        }
        for (table, rowid) in bad {
            conn.execute(
                &format!(
                    "DELETE FROM {} WHERE rowid = ?1",
                    crate::render::ident(&table)
                ),
                [rowid],
            )
            .unwrap();
        }
    }
    conn.pragma_update(None, "foreign_keys", true).unwrap();
}

/// compare, declaring each suggested rename (each name once) until none is left.
fn compare_declaring_renames(from: &Schema, to: &Schema) -> (Vec<Op>, Renames) {
    let mut renames = Renames::default();
    for _ in 0..8 {
        match diff::compare(from, to, &renames) {
            Ok(ops) => return (ops, renames),
            Err(CompareError::UndeclaredRenames(candidates)) => {
                for c in candidates {
                    match &c.table {
                        None => {
                            if !renames.tables.contains_key(&c.to)
                                && !renames.tables.values().any(|old| *old == c.from)
                            {
                                renames.tables.insert(c.to, c.from);
                            }
                        }
                        Some(t) => {
                            let taken = renames.columns.iter().any(|((tt, new), old)| {
                                tt == t && (*new == c.to || *old == c.from)
                            });
                            if !taken {
                                renames.columns.insert((t.clone(), c.to), c.from);
                            }
                        }
                    }
                }
            }
            Err(err) => panic!("{err}"),
        }
    }
    panic!("renames did not converge");
}

/// Every row of `table` (the `columns` of it), in no particular order.
fn fetch(conn: &Connection, table: &str, columns: &[String]) -> Vec<Vec<Value>> {
    if columns.is_empty() {
        let sql = format!("SELECT count(*) FROM {}", crate::render::ident(table));
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0)).unwrap();
        return vec![Vec::new(); usize::try_from(n).unwrap()];
    }
    let names: Vec<String> = columns.iter().map(|c| crate::render::ident(c)).collect();
    let select = names.join(", ");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {select} FROM {}",
            crate::render::ident(table)
        ))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Rows as comparable text, sorted; `keep` picks columns by position (all when `None`).
fn sorted(rows: &[Vec<Value>], keep: Option<&[usize]>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|row| match keep {
            None => format!("{row:?}"),
            Some(keep) => format!("{:?}", keep.iter().map(|i| &row[*i]).collect::<Vec<_>>()),
        })
        .collect();
    out.sort();
    out
}

fn column_names(table: &Table) -> Vec<String> {
    table.columns.iter().map(|c| c.name.clone()).collect()
}

fn migration(version: i32, from: &Schema, to: &Schema, ops: &[Op]) -> MigrationFile {
    let plan = diff::plan(from, to, ops);
    MigrationFile {
        version,
        name: format!("m{version}"),
        sql: crate::render::render_migration("m", ops, &plan, to),
    }
}

const DATA_FAILURES: [&str; 9] = [
    "violate CHECK",
    "CHECK constraint failed",
    "hold a value that is not",
    "cannot store",
    "hold NULL",
    "this migration adds NOT NULL column",
    "UNIQUE constraint failed",
    "foreign_key_check",
    "datatype mismatch",
];

fn check(a_genes: &[u8], b_genes: &[u8], data_genes: &[u8]) -> Result<(), TestCaseError> {
    let (a, b) = (schema(a_genes), schema(b_genes));
    let v1 = migration(
        1,
        &Schema::default(),
        &a,
        &diff::compare(&Schema::default(), &a, &Renames::default()).unwrap(),
    );
    let mut conn = crate::db::open_in_memory().unwrap();
    runner::apply(&mut conn, std::slice::from_ref(&v1)).unwrap();
    let live = introspect::introspect(&conn).unwrap();
    prop_assert!(
        diff::compare(&live, &a, &Renames::default())
            .unwrap()
            .is_empty()
    );
    populate(&conn, &a, data_genes);

    let (ops, renames) = compare_declaring_renames(&live, &b);
    let v2 = migration(2, &live, &b, &ops);
    let before: BTreeMap<&str, Vec<Vec<Value>>> = live
        .tables
        .values()
        .map(|t| (t.name.as_str(), fetch(&conn, &t.name, &column_names(t))))
        .collect();

    match runner::apply(&mut conn, &[v1, v2.clone()]) {
        Err(err) => {
            let message = err.to_string();
            prop_assert!(
                DATA_FAILURES.iter().any(|m| message.contains(m)),
                "unexpected failure: {message}\n{}",
                v2.sql
            );
            let after = introspect::introspect(&conn).unwrap();
            prop_assert_eq!(&after, &live, "schema changed by a failed migration");
            for t in live.tables.values() {
                let now = fetch(&conn, &t.name, &column_names(t));
                prop_assert_eq!(sorted(&now, None), sorted(&before[t.name.as_str()], None));
            }
        }
        Ok(_) => {
            let after = introspect::introspect(&conn).unwrap();
            let left = diff::compare(&after, &b, &Renames::default()).unwrap();
            prop_assert!(left.is_empty(), "left: {left:?}\n{}", v2.sql);
            let violations: i64 = conn
                .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .unwrap();
            prop_assert_eq!(violations, 0);
            for want in b.tables.values() {
                let old_name = renames.tables.get(&want.name).unwrap_or(&want.name);
                let Some(old) = live.table(old_name) else {
                    continue;
                };
                // Kept columns: same type, and not filled from a default.
                let mut keep = Vec::new();
                let mut new_cols = Vec::new();
                for c in &want.columns {
                    let old_col = renames
                        .columns
                        .get(&(want.name.clone(), c.name.clone()))
                        .unwrap_or(&c.name);
                    if let Some(at) = old.columns.iter().position(|o| o.name == *old_col)
                        && old.columns[at].sql_type == c.sql_type
                        && (c.nullable || !old.columns[at].nullable)
                        // Computed, not kept: its value follows its expression.
                        && c.generated.is_none()
                        && old.columns[at].generated.is_none()
                    {
                        keep.push(at);
                        new_cols.push(c.name.clone());
                    }
                }
                let now = fetch(&conn, &want.name, &new_cols);
                prop_assert_eq!(
                    sorted(&now, None),
                    sorted(&before[old_name.as_str()], Some(&keep)),
                    "table {} lost rows or values\n{}",
                    &want.name,
                    &v2.sql
                );
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn migrating_between_random_schemas_keeps_every_row_b_can_hold(
        a in prop::collection::vec(any::<u8>(), 0..140),
        b in prop::collection::vec(any::<u8>(), 0..140),
        data in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        check(&a, &b, &data)?;
    }
}
