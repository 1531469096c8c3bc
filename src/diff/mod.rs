//! Schema × Schema → [`Op`]s: what it takes to get a database from one schema to another.

pub mod compare;
pub mod ops;

pub use compare::compare;
pub use ops::Op;
