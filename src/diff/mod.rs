//! Schema × Schema → [`Op`]s: what it takes to get a database from one schema to another.
//!
//! `compare` emits the logical operations; `rebuild::plan` decides which of them SQLite can do
//! in place and folds the rest into table rebuilds; `render` turns the result into SQL.

pub mod compare;
pub mod ops;
pub mod rebuild;

pub use compare::{CompareError, compare, resolve_renames};
pub use ops::Op;
pub use rebuild::plan;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod traps;
