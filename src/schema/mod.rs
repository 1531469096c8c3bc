//! Schemas: the plain data model, and the two ways of getting one (declared TOML models and
//! introspection of a live SQLite database).

pub mod declared;
pub mod introspect;
pub mod model;
pub mod sqltext;

pub use model::{
    Column, FkAction, Generated, Index, ObjectKind, Reference, Renames, Schema, SchemaObject,
    SqlType, Table, TableOptions,
};

/// Which of beamdb's two kinds of database a schema, model file or migration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum DbKind {
    /// A beamtime's `beamtime.db`.
    Beamtime,
    /// The master `index.db`.
    Index,
}

impl DbKind {
    pub const ALL: [DbKind; 2] = [DbKind::Beamtime, DbKind::Index];

    /// The name used for model files (`{name}.toml`) and migration folders.
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Beamtime => "beamtime",
            DbKind::Index => "index",
        }
    }
}

impl std::fmt::Display for DbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
