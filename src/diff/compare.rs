//! Compare two schemas and emit the operations that turn `from` into `to`.

use crate::schema::Schema;

use super::Op;

/// The operations that get a database at `from` to `to`, in a deterministic order: tables by
/// name, then each table's indexes by name.
///
/// Differences this version cannot express yet are returned as `Err` with one line each, so
/// that nothing is silently ignored.
pub fn compare(from: &Schema, to: &Schema) -> Result<Vec<Op>, Vec<String>> {
    let mut ops = Vec::new();
    let mut unsupported = Vec::new();
    for (name, table) in &to.tables {
        match from.table(name) {
            None => {
                let mut bare = table.clone();
                bare.indexes.clear();
                ops.push(Op::CreateTable(bare));
                for index in table.indexes.values() {
                    ops.push(Op::CreateIndex {
                        table: name.clone(),
                        index: index.clone(),
                    });
                }
            }
            Some(live) => {
                let mut live_cmp = live.clone();
                let mut want_cmp = table.clone();
                live_cmp.indexes.clear();
                want_cmp.indexes.clear();
                if !same_columns(&live_cmp, &want_cmp) {
                    unsupported.push(format!("table {name}: columns differ"));
                }
                for index in table.indexes.values() {
                    match live.indexes.get(&index.name) {
                        None => ops.push(Op::CreateIndex {
                            table: name.clone(),
                            index: index.clone(),
                        }),
                        Some(existing) if existing != index => {
                            unsupported.push(format!("index {}: definition differs", index.name))
                        }
                        Some(_) => {}
                    }
                }
                for index in live.indexes.keys() {
                    if !table.indexes.contains_key(index) {
                        unsupported.push(format!("index {index}: no longer declared"));
                    }
                }
            }
        }
    }
    for name in from.tables.keys() {
        if !to.tables.contains_key(name) {
            unsupported.push(format!("table {name}: no longer declared"));
        }
    }
    if unsupported.is_empty() {
        Ok(ops)
    } else {
        Err(unsupported)
    }
}

/// Column sets compare by name, not position: `ADD COLUMN` can only append, so a model that
/// lists a new column in the middle must still compare equal once it has been added.
fn same_columns(a: &crate::schema::Table, b: &crate::schema::Table) -> bool {
    a.columns.len() == b.columns.len() && a.columns.iter().all(|c| b.column(&c.name) == Some(c))
}
