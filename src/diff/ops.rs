//! Schema operations: what `compare` emits and `render` turns into SQL.

use std::fmt;

use crate::schema::{Index, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateTable(Table),
    CreateIndex { table: String, index: Index },
}

impl fmt::Display for Op {
    /// One line in words, for migration headers and `--check` output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateTable(table) => write!(f, "create table {}", table.name),
            Op::CreateIndex { table, index } => write!(
                f,
                "create {}index {} on {} ({})",
                if index.unique { "unique " } else { "" },
                index.name,
                table,
                index.columns.join(", ")
            ),
        }
    }
}
