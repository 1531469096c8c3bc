//! The schema as plain data: what both the declared models and a live database reduce to.
//!
//! Nothing here knows where a schema came from; `declared` builds one from TOML, `introspect`
//! from SQLite, and `diff` compares two of them.

use std::collections::BTreeMap;
use std::fmt;

/// A database's tables, by name (sorted, so every walk over a schema is deterministic).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    /// Views and triggers, by name: their `CREATE` statement as beamdb writes it (and SQLite
    /// keeps it), compared as text.
    pub objects: BTreeMap<String, SchemaObject>,
}

/// A view or a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaObject {
    pub kind: ObjectKind,
    pub name: String,
    /// The whole `CREATE VIEW` / `CREATE TRIGGER` statement, without the final `;`.
    pub sql: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    View,
    Trigger,
}

impl ObjectKind {
    pub fn as_sql(self) -> &'static str {
        match self {
            ObjectKind::View => "VIEW",
            ObjectKind::Trigger => "TRIGGER",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// In declaration order: the order `CREATE TABLE` lists them.
    pub columns: Vec<Column>,
    /// By name. Unique constraints are modelled as unique indexes, which SQLite can create and
    /// drop in place.
    pub indexes: BTreeMap<String, Index>,
    pub options: TableOptions,
    /// CHECK constraints, as SQL expressions verbatim: the columns' (in column order), then
    /// the table's. Rendered as table constraints; SQLite treats both alike.
    pub checks: Vec<String>,
}

/// What follows a `CREATE TABLE`'s closing parenthesis. Changing either needs a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// `STRICT`: every value must have its column's type (no affinity leeway).
    pub strict: bool,
    /// `WITHOUT ROWID`: the primary key is the storage key; there is no rowid (and no alias).
    pub without_rowid: bool,
    /// `AUTOINCREMENT` on the rowid alias: SQLite never reuses a number, not even the largest
    /// one after its row is deleted (it keeps the counter in `sqlite_sequence`).
    pub autoincrement: bool,
}

impl TableOptions {
    /// The SQL after the closing parenthesis (`STRICT, WITHOUT ROWID`), empty when none.
    pub fn as_sql(self) -> String {
        let mut words = Vec::new();
        if self.strict {
            words.push("STRICT");
        }
        if self.without_rowid {
            words.push("WITHOUT ROWID");
        }
        words.join(", ")
    }

    /// In words, for `--check` output and migration headers.
    pub fn describe(self) -> String {
        let mut words = Vec::new();
        if self.autoincrement {
            words.push("AUTOINCREMENT".to_string());
        }
        match self.as_sql() {
            s if s.is_empty() => {}
            s => words.push(s),
        }
        if words.is_empty() {
            "no options".to_string()
        } else {
            words.join(", ")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub sql_type: SqlType,
    pub nullable: bool,
    /// An SQL expression, verbatim.
    pub default: Option<String>,
    /// Position in the primary key (1-based), or 0 when not part of it.
    pub primary_key: u32,
    pub references: Option<Reference>,
    /// `COLLATE` (BINARY, NOCASE or RTRIM), upper case; `None` is SQLite's default, BINARY.
    pub collate: Option<String>,
    /// A generated column: its value is computed, never written.
    pub generated: Option<Generated>,
}

/// `GENERATED ALWAYS AS (expr) VIRTUAL|STORED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The SQL expression, verbatim.
    pub expr: String,
    /// STORED (computed on write, kept on disk) rather than VIRTUAL (computed on read).
    pub stored: bool,
}

/// Renames declared by the user (`--rename` or `renamed_from` in a model file): SQLite keeps a
/// renamed table's or column's data only when the migration renames it, and a rename cannot be
/// told apart from a drop and an add by looking at two schemas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renames {
    /// New table name → old table name.
    pub tables: BTreeMap<String, String>,
    /// (new table name, new column name) → old column name.
    pub columns: BTreeMap<(String, String), String>,
}

impl Renames {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.columns.is_empty()
    }
}

/// A single-column foreign key, declared on the referencing column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub table: String,
    pub column: String,
    pub on_delete: FkAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
    /// A partial index's `WHERE` expression, verbatim (SQLite keeps the text as written).
    pub predicate: Option<String>,
    /// `columns` are SQL expressions (`lower(name)`), verbatim, rather than column names.
    pub expressions: bool,
}

/// The column types a model may declare: SQLite's five type affinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SqlType {
    Integer,
    Real,
    Text,
    Blob,
    Numeric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FkAction {
    #[default]
    NoAction,
    Restrict,
    Cascade,
    SetNull,
    SetDefault,
}

impl SqlType {
    pub const ALL: [SqlType; 5] = [
        SqlType::Integer,
        SqlType::Real,
        SqlType::Text,
        SqlType::Blob,
        SqlType::Numeric,
    ];

    pub fn as_sql(self) -> &'static str {
        match self {
            SqlType::Integer => "INTEGER",
            SqlType::Real => "REAL",
            SqlType::Text => "TEXT",
            SqlType::Blob => "BLOB",
            SqlType::Numeric => "NUMERIC",
        }
    }

    /// Parses a declared type name, case-insensitively.
    pub fn parse(name: &str) -> Option<SqlType> {
        SqlType::ALL
            .into_iter()
            .find(|t| t.as_sql().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

impl FkAction {
    pub const ALL: [FkAction; 5] = [
        FkAction::NoAction,
        FkAction::Restrict,
        FkAction::Cascade,
        FkAction::SetNull,
        FkAction::SetDefault,
    ];

    pub fn as_sql(self) -> &'static str {
        match self {
            FkAction::NoAction => "NO ACTION",
            FkAction::Restrict => "RESTRICT",
            FkAction::Cascade => "CASCADE",
            FkAction::SetNull => "SET NULL",
            FkAction::SetDefault => "SET DEFAULT",
        }
    }

    pub fn parse(text: &str) -> Option<FkAction> {
        let normal = text.split_whitespace().collect::<Vec<_>>().join(" ");
        FkAction::ALL
            .into_iter()
            .find(|a| a.as_sql().eq_ignore_ascii_case(&normal))
    }
}

impl fmt::Display for FkAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

impl Column {
    /// The default, unless there is none or it is NULL: what a NOT NULL column can be filled
    /// with when a row has no value for it.
    pub fn non_null_default(&self) -> Option<&str> {
        self.default
            .as_deref()
            .filter(|d| !d.trim().eq_ignore_ascii_case("NULL"))
    }
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Primary-key columns in key order.
    pub fn primary_key(&self) -> Vec<&Column> {
        let mut pk: Vec<&Column> = self.columns.iter().filter(|c| c.primary_key > 0).collect();
        pk.sort_by_key(|c| c.primary_key);
        pk
    }

    /// Whether the primary key is SQLite's rowid alias (`x INTEGER PRIMARY KEY`), which can
    /// never hold NULL and is assigned automatically.
    pub fn has_rowid_alias(&self) -> bool {
        self.rowid_alias().is_some()
    }

    /// The column that is SQLite's rowid alias: the primary key when it is one column of type
    /// INTEGER. A key of several columns is no alias, INTEGER or not: each of its columns is
    /// NOT NULL and gets no value by itself. The one home of this rule (render, introspect,
    /// compare's hazards and the rebuild's guards ask here).
    pub fn rowid_alias(&self) -> Option<&Column> {
        if self.options.without_rowid {
            return None;
        }
        match self.primary_key().as_slice() {
            [c] if c.sql_type == SqlType::Integer => Some(c),
            _ => None,
        }
    }

    /// Whether `column` (by name) is this table's rowid alias.
    pub fn is_rowid_alias(&self, column: &str) -> bool {
        self.rowid_alias().is_some_and(|c| c.name == column)
    }
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }
}
