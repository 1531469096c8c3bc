//! Migration files (discover, name, write) and the runner that applies them with refinery.

pub mod files;
pub mod runner;
pub mod upgrade;
