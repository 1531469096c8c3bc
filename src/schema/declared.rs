//! Declared models (TOML, edited by facility staff) → [`Schema`], validated.
//!
//! The built-in models are embedded in the binary; `[schema] models_dir` points at a
//! facility's own copy, which must keep every table and column the built-in one has (ingest
//! and reindex write them) and may add more (promoted metadata, facility columns).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::sqltext::{Fragment, check_fragment};
use super::{
    Column, DbKind, FkAction, Index, Reference, Renames, Schema, SqlType, Table, TableOptions,
};
use crate::tomlfile::{self, TomlError};

const BUILTIN_BEAMTIME: &str = include_str!("../../config/models/beamtime.toml");
const BUILTIN_INDEX: &str = include_str!("../../config/models/index.toml");

/// The model file text embedded in the binary for `kind`.
pub fn builtin_text(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Beamtime => BUILTIN_BEAMTIME,
        DbKind::Index => BUILTIN_INDEX,
    }
}

fn builtin_name(kind: DbKind) -> String {
    format!("config/models/{}.toml (built in)", kind.name())
}

/// The built-in declared schema of `kind`.
pub fn builtin(kind: DbKind) -> Result<Schema, TomlError> {
    parse(builtin_text(kind), &builtin_name(kind))
}

/// The declared schema of `kind`: from `models_dir/{kind}.toml` when a directory is set,
/// otherwise the built-in one.
pub fn load(kind: DbKind, models_dir: Option<&Path>) -> Result<Schema, TomlError> {
    load_with_renames(kind, models_dir).map(|(schema, _)| schema)
}

/// [`load`], plus the renames the model file declares with `renamed_from`.
///
/// The index schema is the index model plus the promoted metadata of the beamtime model:
/// a column declared once on `runs` is carried into `runs_index` (nullable, indexed), so the
/// index migration is generated from it.
pub fn load_with_renames(
    kind: DbKind,
    models_dir: Option<&Path>,
) -> Result<(Schema, Renames), TomlError> {
    let model = load_model(kind, models_dir)?;
    let mut schema = model.schema;
    let mut renames = model.renames;
    if kind == DbKind::Index {
        let promoted = promoted(models_dir)?;
        carry_promoted(&mut schema, &promoted);
        // A promoted column renamed with `renamed_from` keeps its index values too.
        let beamtime = load_model(DbKind::Beamtime, models_dir)?;
        for ((table, new), old) in &beamtime.renames.columns {
            if table == "runs" && promoted.iter().any(|p| &p.column == new) {
                renames
                    .columns
                    .entry(("runs_index".to_string(), new.clone()))
                    .or_insert_with(|| old.clone());
            }
        }
    }
    Ok((schema, renames))
}

/// A promoted metadata column: a column of the beamtime model's `runs` beyond the built-in
/// ones. Ingest fills it from the RunStart key `source`; reindex carries it into `runs_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub column: String,
    pub sql_type: SqlType,
    /// The RunStart key, split at dots (`sample.composition` → `["sample", "composition"]`).
    pub source: Vec<String>,
}

impl Promoted {
    /// The source as the model writes it (`sample.composition`).
    pub fn source_text(&self) -> String {
        self.source.join(".")
    }

    /// The value of the source key in a RunStart document, when it has one.
    pub fn lookup<'a>(&self, start: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.source
            .iter()
            .try_fold(start, |doc, key| doc.get(key))
            .filter(|v| !v.is_null())
    }
}

/// The promoted metadata columns of the beamtime model, in `runs` order.
pub fn promoted(models_dir: Option<&Path>) -> Result<Vec<Promoted>, TomlError> {
    let model = load_model(DbKind::Beamtime, models_dir)?;
    let core = builtin(DbKind::Beamtime)?;
    let core_runs = core.table("runs");
    let index_core = builtin(DbKind::Index)?;
    let reindexed: Vec<&str> = index_core
        .table("runs_index")
        .map(|t| t.columns.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let Some(runs) = model.schema.table("runs") else {
        return Ok(Vec::new());
    };
    let mut promoted = Vec::new();
    // A generated column is computed by SQLite: nothing to fill, nothing to carry.
    for column in runs.columns.iter().filter(|c| c.generated.is_none()) {
        let place = model.places.get(&("runs".to_string(), column.name.clone()));
        let at = |message: String| match place {
            Some((span, _)) => tomlfile::at(&model.text, &model.file, span.clone(), message),
            None => TomlError {
                file: model.file.clone(),
                line: None,
                key: None,
                message,
            },
        };
        let source = place.and_then(|(_, source)| source.clone());
        if core_runs.is_some_and(|t| t.column(&column.name).is_some()) {
            if source.is_some() {
                return Err(at(format!(
                    "table `runs`: column `{}` is filled by beamdb itself, so it takes no `source`; remove the key",
                    column.name
                )));
            }
            continue;
        }
        if reindexed
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&column.name))
        {
            return Err(at(format!(
                "table `runs`: promoted column `{}` would be carried into runs_index, which has a built-in column of that name; choose another name (and `source = \"{}\"` to keep reading the same RunStart key)",
                column.name, column.name
            )));
        }
        let source = source.unwrap_or_else(|| column.name.clone());
        promoted.push(Promoted {
            column: column.name.clone(),
            sql_type: column.sql_type,
            source: source.split('.').map(str::to_string).collect(),
        });
    }
    Ok(promoted)
}

/// Adds each promoted column to `runs_index` (nullable: older beamtimes lack it), with an
/// index so that `runs --where` on it does not scan, unless the index model declares it.
fn carry_promoted(schema: &mut Schema, promoted: &[Promoted]) {
    let taken: BTreeSet<String> = schema
        .tables
        .values()
        .flat_map(|t| t.indexes.keys().cloned())
        .collect();
    let Some(runs_index) = schema.tables.get_mut("runs_index") else {
        return;
    };
    for p in promoted {
        if runs_index.column(&p.column).is_some() {
            continue;
        }
        runs_index.columns.push(Column {
            name: p.column.clone(),
            sql_type: p.sql_type,
            nullable: true,
            default: None,
            primary_key: 0,
            references: None,
            collate: None,
            generated: None,
        });
        let covered = runs_index
            .indexes
            .values()
            .any(|i| i.columns.first() == Some(&p.column));
        let name = format!("runs_index_{}", p.column);
        if !covered && !taken.contains(&name) {
            runs_index.indexes.insert(
                name.clone(),
                Index {
                    name,
                    columns: vec![p.column.clone()],
                    unique: false,
                    predicate: None,
                    expressions: false,
                },
            );
        }
    }
}

/// One model file, parsed, with where each column was declared (for errors that name a line).
struct LoadedModel {
    schema: Schema,
    renames: Renames,
    /// (table, column) → (span of its declaration, its `source`).
    places: BTreeMap<(String, String), (std::ops::Range<usize>, Option<String>)>,
    text: String,
    file: String,
}

fn load_model(kind: DbKind, models_dir: Option<&Path>) -> Result<LoadedModel, TomlError> {
    let Some(dir) = models_dir else {
        let text = builtin_text(kind).to_string();
        let file = builtin_name(kind);
        let (schema, renames, places) = parse_full(&text, &file)?;
        return Ok(LoadedModel {
            schema,
            renames,
            places,
            text,
            file,
        });
    };
    let path = dir.join(format!("{}.toml", kind.name()));
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|err| TomlError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!(
            "cannot read the {kind} model file ({err}); check `[schema] models_dir` in the settings"
        ),
    })?;
    let (schema, renames, places) = parse_full(&text, &file)?;
    require_core_columns(&schema, &builtin(kind)?, &file)?;
    Ok(LoadedModel {
        schema,
        renames,
        places,
        text,
        file,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    #[serde(default)]
    tables: BTreeMap<String, Spanned<TableDecl>>,
    #[serde(default)]
    views: BTreeMap<String, Spanned<ViewDecl>>,
    #[serde(default)]
    triggers: BTreeMap<String, Spanned<TriggerDecl>>,
}

/// `[views.NAME] select = "SELECT ..."`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewDecl {
    select: String,
}

/// `[triggers.NAME] on = "table", when = "AFTER INSERT", body = "UPDATE ...;"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerDecl {
    on: String,
    when: String,
    body: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableDecl {
    /// The table's previous name: the next migration renames it instead of dropping it.
    renamed_from: Option<String>,
    columns: Vec<Spanned<ColumnDecl>>,
    #[serde(default)]
    indexes: Vec<Spanned<IndexDecl>>,
    /// `STRICT`: SQLite refuses a value of the wrong type instead of storing it anyway.
    #[serde(default)]
    strict: bool,
    /// `WITHOUT ROWID`: the primary key is the storage key.
    #[serde(default)]
    without_rowid: bool,
    /// Table CHECK constraints: SQL expressions over its columns.
    #[serde(default)]
    checks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnDecl {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    #[serde(default)]
    nullable: bool,
    default: Option<String>,
    #[serde(default)]
    primary_key: bool,
    references: Option<String>,
    on_delete: Option<String>,
    /// The column's previous name: the next migration renames it instead of dropping it.
    renamed_from: Option<String>,
    /// Promoted metadata on `runs`: the RunStart key that fills it (dotted for nested keys);
    /// the column's name when absent.
    source: Option<String>,
    /// `COLLATE`: BINARY, NOCASE or RTRIM.
    collate: Option<String>,
    /// A CHECK constraint on the column: an SQL expression.
    check: Option<String>,
    /// A generated column: the SQL expression that computes it.
    generated: Option<String>,
    /// With `generated`: STORED (kept on disk) instead of VIRTUAL (computed on read).
    #[serde(default)]
    stored: bool,
    /// On the rowid alias: numbers are never reused.
    #[serde(default)]
    autoincrement: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexDecl {
    name: String,
    #[serde(default)]
    columns: Vec<String>,
    /// An expression index: SQL expressions (`lower(name)`) instead of `columns`.
    #[serde(default)]
    expressions: Vec<String>,
    #[serde(default)]
    unique: bool,
    /// A partial index: only rows for which this SQL expression is true.
    #[serde(rename = "where")]
    predicate: Option<String>,
}

/// Parses and validates a model file's text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Schema, TomlError> {
    parse_with_renames(text, file).map(|(schema, _)| schema)
}

/// [`parse`], plus the declared `renamed_from` keys.
pub fn parse_with_renames(text: &str, file: &str) -> Result<(Schema, Renames), TomlError> {
    parse_full(text, file).map(|(schema, renames, _)| (schema, renames))
}

type Places = BTreeMap<(String, String), (std::ops::Range<usize>, Option<String>)>;

fn parse_full(text: &str, file: &str) -> Result<(Schema, Renames, Places), TomlError> {
    let mut places = Places::new();
    let decl: ModelFile = tomlfile::parse(text, file)?;
    let err = |span: std::ops::Range<usize>, table: &str, msg: String| {
        tomlfile::at(text, file, span, format!("table `{table}`: {msg}"))
    };

    let mut schema = Schema::default();
    let mut renames = Renames::default();
    // SQLite names are case-insensitive: `Users` and `users` are one table.
    let mut index_names: BTreeMap<String, String> = BTreeMap::new();
    let mut table_names: BTreeMap<String, (String, std::ops::Range<usize>)> = BTreeMap::new();
    for (table_name, table_decl) in &decl.tables {
        let span = table_decl.span();
        let table_decl = table_decl.get_ref();
        check_identifier(table_name).map_err(|m| err(span.clone(), table_name, m))?;
        if let Some((other, other_span)) = table_names.insert(
            table_name.to_lowercase(),
            (table_name.clone(), span.clone()),
        ) {
            // Named at the later of the two declarations: the one just added, most likely.
            let (name, at, first) = if other_span.start > span.start {
                (other.as_str(), other_span, table_name.as_str())
            } else {
                (table_name.as_str(), span, other.as_str())
            };
            return Err(err(
                at,
                name,
                format!(
                    "SQLite names are case-insensitive, and table `{first}` is declared too; rename one of them"
                ),
            ));
        }
        if table_decl.columns.is_empty() {
            return Err(err(span, table_name, "declares no columns".into()));
        }
        let mut table = Table {
            name: table_name.clone(),
            columns: Vec::new(),
            indexes: BTreeMap::new(),
            options: TableOptions {
                strict: table_decl.strict,
                without_rowid: table_decl.without_rowid,
                autoincrement: false,
            },
            checks: Vec::new(),
        };
        if let Some(old) = &table_decl.renamed_from {
            check_renamed_from(old, table_name, decl.tables.contains_key(old), "table")
                .map_err(|m| err(span.clone(), table_name, m))?;
            renames.tables.insert(table_name.clone(), old.clone());
        }
        let mut pk_position = 0;
        for column_decl in &table_decl.columns {
            let span = column_decl.span();
            let column = build_column(column_decl.get_ref(), &mut pk_position, &table)
                .map_err(|m| err(span.clone(), table_name, m))?;
            if let Some(source) = &column_decl.get_ref().source {
                check_source(source, table_name, &column.name)
                    .map_err(|m| err(span.clone(), table_name, m))?;
            }
            places.insert(
                (table_name.clone(), column.name.clone()),
                (span.clone(), column_decl.get_ref().source.clone()),
            );
            if let Some(old) = &column_decl.get_ref().renamed_from {
                let declared = table_decl.columns.iter().any(|c| &c.get_ref().name == old);
                check_renamed_from(old, &column.name, declared, "column")
                    .map_err(|m| err(span, table_name, m))?;
                renames
                    .columns
                    .insert((table_name.clone(), column.name.clone()), old.clone());
            }
            if table.options.strict && column.sql_type == SqlType::Numeric {
                return Err(err(
                    column_decl.span(),
                    table_name,
                    format!(
                        "column `{}` is NUMERIC, which a STRICT table does not take; use INTEGER, REAL, TEXT or BLOB",
                        column.name
                    ),
                ));
            }
            if let Some(check) = &column_decl.get_ref().check {
                let check = check_expression(check, &format!("column `{}`", column.name))
                    .map_err(|m| err(column_decl.span(), table_name, m))?;
                table.checks.push(check);
            }
            table.columns.push(column);
        }
        for check in &table_decl.checks {
            let check = check_expression(check, "the table")
                .map_err(|m| err(span.clone(), table_name, m))?;
            table.checks.push(check);
        }
        // SQLite's SQLITE_MAX_COLUMN (2000 in every build beamdb links): past it CREATE TABLE
        // fails, which make-migrations would meet only in its replay.
        if table.columns.len() > MAX_COLUMNS {
            return Err(err(
                span.clone(),
                table_name,
                format!(
                    "{} columns; SQLite allows at most {MAX_COLUMNS} in a table: split it into tables",
                    table.columns.len()
                ),
            ));
        }
        if let Some(column) = table_decl
            .columns
            .iter()
            .find(|c| c.get_ref().autoincrement)
        {
            if !table.is_rowid_alias(&column.get_ref().name) {
                return Err(err(
                    column.span(),
                    table_name,
                    format!(
                        "column `{}` has autoincrement, which only the rowid alias takes: the table's one primary-key column, of type INTEGER, in a table with a rowid",
                        column.get_ref().name
                    ),
                ));
            }
            table.options.autoincrement = true;
        }
        if table.options.without_rowid && table.primary_key().is_empty() {
            return Err(err(
                span.clone(),
                table_name,
                "is WITHOUT ROWID, which needs a primary key; mark its key column(s) primary_key = true".into(),
            ));
        }
        for index_decl in &table_decl.indexes {
            let span = index_decl.span();
            let index = build_index(index_decl.get_ref(), &table)
                .map_err(|m| err(span.clone(), table_name, m))?;
            if let Some(other) = index_names.insert(index.name.to_lowercase(), index.name.clone()) {
                let msg = if other == index.name {
                    format!(
                        "index name `{}` is used twice (index names are database-wide)",
                        index.name
                    )
                } else {
                    format!(
                        "index name `{}` is used twice (index names are database-wide and case-insensitive: `{other}`)",
                        index.name
                    )
                };
                return Err(err(span, table_name, msg));
            }
            table.indexes.insert(index.name.clone(), index);
        }
        schema.tables.insert(table_name.clone(), table);
    }
    check_references(&schema).map_err(|(table, column, msg)| {
        let span = decl.tables[&table]
            .get_ref()
            .columns
            .iter()
            .find(|c| c.get_ref().name == column)
            .map(|c| c.span())
            .unwrap_or_default();
        err(span, &table, msg)
    })?;
    declare_objects(&decl, &mut schema, text, file)?;
    Ok((schema, renames, places))
}

/// Views and triggers: their `CREATE` statement, as `render` writes it and SQLite keeps it.
fn declare_objects(
    decl: &ModelFile,
    schema: &mut Schema,
    text: &str,
    file: &str,
) -> Result<(), TomlError> {
    use super::{ObjectKind, SchemaObject};
    let ident = crate::render::ident;
    let mut declared: Vec<(String, std::ops::Range<usize>, ObjectKind, String)> = Vec::new();
    for (name, view) in &decl.views {
        let select = view.get_ref().select.trim().trim_end_matches(';').trim();
        if select.is_empty() {
            return Err(tomlfile::at(
                text,
                file,
                view.span(),
                format!("view `{name}`: `select` is empty; write the SELECT statement"),
            ));
        }
        fragment(
            select,
            Fragment::Clause,
            &format!("view `{name}`: `select`"),
        )
        .map_err(|m| tomlfile::at(text, file, view.span(), m))?;
        let sql = format!("CREATE VIEW {} AS {select}", ident(name));
        declared.push((name.clone(), view.span(), ObjectKind::View, sql));
    }
    for (name, trigger) in &decl.triggers {
        let t = trigger.get_ref();
        let when = t.when.split_whitespace().collect::<Vec<_>>().join(" ");
        let body = t.body.trim();
        let at =
            |m: String| tomlfile::at(text, file, trigger.span(), format!("trigger `{name}`: {m}"));
        if schema.table(&t.on).is_none() {
            return Err(at(format!("`on = \"{}\"` names no declared table", t.on)));
        }
        if when.is_empty() || body.is_empty() {
            return Err(at("`when` (e.g. \"AFTER INSERT\") and `body` (statements, each ending in ;) are needed".into()));
        }
        fragment(&when, Fragment::Clause, "`when`").map_err(at)?;
        fragment(body, Fragment::TriggerBody, "`body`").map_err(at)?;
        let sql = format!(
            "CREATE TRIGGER {} {when} ON {} BEGIN {body} END",
            ident(name),
            ident(&t.on)
        );
        declared.push((name.clone(), trigger.span(), ObjectKind::Trigger, sql));
    }
    for (name, span, kind, sql) in declared {
        check_identifier(&name).map_err(|m| tomlfile::at(text, file, span.clone(), m))?;
        let taken = schema
            .tables
            .keys()
            .chain(schema.objects.keys())
            .find(|other| other.eq_ignore_ascii_case(&name));
        if let Some(other) = taken {
            return Err(tomlfile::at(
                text,
                file,
                span,
                format!(
                    "`{name}`: the name `{other}` is already declared (tables, views and triggers share SQLite's names, case-insensitively)"
                ),
            ));
        }
        schema
            .objects
            .insert(name.clone(), SchemaObject { kind, name, sql });
    }
    Ok(())
}

/// `source = "a.b"` is a RunStart key path of non-empty parts, on a column of `runs`.
fn check_source(source: &str, table: &str, column: &str) -> Result<(), String> {
    if table != "runs" {
        return Err(format!(
            "column `{column}` has `source`, which only promoted metadata columns of `runs` take; remove the key"
        ));
    }
    if source
        .split('.')
        .any(|part| part.trim().is_empty() || part != part.trim())
    {
        return Err(format!(
            "column `{column}`: `source = \"{source}\"` is not a RunStart key; write the key (`proposal`), dotted for a nested one (`sample.composition`)"
        ));
    }
    Ok(())
}

/// `renamed_from = OLD` on `name`: OLD must be a plain name that is not declared beside it
/// (then both would exist, and there would be nothing to rename).
fn check_renamed_from(old: &str, name: &str, old_declared: bool, what: &str) -> Result<(), String> {
    check_identifier(old).map_err(|m| format!("{what} `{name}`: renamed_from {m}"))?;
    if old == name || old_declared {
        return Err(format!(
            "{what} `{name}` has renamed_from = \"{old}\", but `{old}` is declared too; remove one of them"
        ));
    }
    Ok(())
}

fn build_column(decl: &ColumnDecl, pk_position: &mut u32, table: &Table) -> Result<Column, String> {
    check_identifier(&decl.name).map_err(|m| format!("column {m}"))?;
    if let Some(other) = table
        .columns
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(&decl.name))
    {
        return Err(if other.name == decl.name {
            format!("column `{}` is declared twice", decl.name)
        } else {
            format!(
                "column `{}` is declared twice (SQLite names are case-insensitive: `{}`)",
                decl.name, other.name
            )
        });
    }
    let sql_type = SqlType::parse(&decl.sql_type).ok_or_else(|| {
        let known: Vec<_> = SqlType::ALL.iter().map(|t| t.as_sql()).collect();
        format!(
            "column `{}` has unknown type `{}`; use one of {}",
            decl.name,
            decl.sql_type,
            known.join(", ")
        )
    })?;
    let collate = match &decl.collate {
        None => None,
        Some(name) => {
            let upper = name.trim().to_ascii_uppercase();
            if !COLLATIONS.contains(&upper.as_str()) {
                return Err(format!(
                    "column `{}` has unknown collate `{name}`; use one of {}",
                    decl.name,
                    COLLATIONS.join(", ")
                ));
            }
            // BINARY is what SQLite uses anyway, and what introspection reports as none.
            (upper != "BINARY").then_some(upper)
        }
    };
    let generated = match &decl.generated {
        None if decl.stored => {
            return Err(format!(
                "column `{}` has `stored` but no `generated` expression",
                decl.name
            ));
        }
        None => None,
        Some(expr) => {
            let expr = check_expression(expr, &format!("column `{}`", decl.name))
                .map_err(|m| m.replace("`check`", "`generated`"))?;
            if decl.primary_key || decl.default.is_some() || decl.references.is_some() {
                return Err(format!(
                    "column `{}` is generated, so it takes no `primary_key`, `default` or `references`",
                    decl.name
                ));
            }
            Some(crate::schema::Generated {
                expr,
                stored: decl.stored,
            })
        }
    };
    if decl.primary_key && decl.nullable {
        return Err(format!(
            "column `{}` is a primary key and so cannot be nullable; remove `nullable = true`",
            decl.name
        ));
    }
    if let Some(default) = &decl.default
        && default.trim().is_empty()
    {
        return Err(format!(
            "column `{}` has an empty default; write an SQL expression such as \"0\" or \"'text'\", or remove the key",
            decl.name
        ));
    }
    if let Some(default) = &decl.default {
        fragment(
            default.trim(),
            Fragment::Expression,
            &format!("column `{}`: `default`", decl.name),
        )?;
    }
    let references = match (&decl.references, &decl.on_delete) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(format!(
                "column `{}` has `on_delete` but no `references`",
                decl.name
            ));
        }
        (Some(target), on_delete) => {
            let (ref_table, ref_column) = target.split_once('.').ok_or_else(|| {
                format!(
                    "column `{}`: `references = \"{target}\"` must be \"table.column\"",
                    decl.name
                )
            })?;
            let on_delete = match on_delete {
                None => FkAction::NoAction,
                Some(text) => FkAction::parse(text).ok_or_else(|| {
                    let known: Vec<_> = FkAction::ALL.iter().map(|a| a.as_sql()).collect();
                    format!(
                        "column `{}` has unknown on_delete `{text}`; use one of {}",
                        decl.name,
                        known.join(", ")
                    )
                })?,
            };
            if on_delete == FkAction::SetNull && !decl.nullable {
                return Err(format!(
                    "column `{}` has on_delete = \"SET NULL\" but is not nullable; add `nullable = true`",
                    decl.name
                ));
            }
            Some(Reference {
                table: ref_table.to_string(),
                column: ref_column.to_string(),
                on_delete,
            })
        }
    };
    let primary_key = if decl.primary_key {
        *pk_position += 1;
        *pk_position
    } else {
        0
    };
    Ok(Column {
        name: decl.name.clone(),
        sql_type,
        nullable: decl.nullable,
        default: decl.default.as_ref().map(|d| d.trim().to_string()),
        primary_key,
        references,
        collate,
        generated,
    })
}

/// The most columns SQLite (SQLITE_MAX_COLUMN, default 2000) lets a table have.
const MAX_COLUMNS: usize = 2000;

/// SQLite's built-in collations: any other name fails at CREATE TABLE.
const COLLATIONS: [&str; 3] = ["BINARY", "NOCASE", "RTRIM"];

/// A CHECK expression: not empty.
fn check_expression(expr: &str, what: &str) -> Result<String, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err(format!(
            "{what} has an empty `check`; write an SQL expression (\"value >= 0\") or remove the key"
        ));
    }
    fragment(expr, Fragment::Expression, &format!("{what}: `check`"))?;
    Ok(expr.to_string())
}

/// [`check_fragment`] with the key it came from in the message.
fn fragment(sql: &str, kind: Fragment, what: &str) -> Result<(), String> {
    check_fragment(sql, kind).map_err(|why| format!("{what} {sql:?}: {why}"))
}

fn build_index(decl: &IndexDecl, table: &Table) -> Result<Index, String> {
    check_identifier(&decl.name).map_err(|m| format!("index {m}"))?;
    if !decl.expressions.is_empty() {
        if !decl.columns.is_empty() {
            return Err(format!(
                "index `{}` has both `columns` and `expressions`; list plain columns among the expressions",
                decl.name
            ));
        }
        let items: Vec<String> = decl
            .expressions
            .iter()
            .map(|e| e.trim().to_string())
            .collect();
        if items.iter().any(String::is_empty) {
            return Err(format!("index `{}` has an empty expression", decl.name));
        }
        for item in &items {
            fragment(
                item,
                Fragment::Expression,
                &format!("index `{}`: expression", decl.name),
            )?;
        }
        // Only column names after all: the same index as `columns` would declare.
        let plain = items.iter().all(|e| table.column(e).is_some());
        return Ok(Index {
            name: decl.name.clone(),
            columns: items,
            unique: decl.unique,
            predicate: decl.predicate.as_ref().map(|p| p.trim().to_string()),
            expressions: !plain,
        });
    }
    if decl.columns.is_empty() {
        return Err(format!("index `{}` lists no columns", decl.name));
    }
    for column in &decl.columns {
        if table.column(column).is_none() {
            return Err(format!(
                "index `{}` names column `{column}`, which the table does not declare",
                decl.name
            ));
        }
    }
    if let Some(predicate) = &decl.predicate {
        if predicate.trim().is_empty() {
            return Err(format!(
                "index `{}` has an empty `where`; write an SQL expression (\"status IS NOT NULL\") or remove the key",
                decl.name
            ));
        }
        fragment(
            predicate.trim(),
            Fragment::Expression,
            &format!("index `{}`: `where`", decl.name),
        )?;
    }
    Ok(Index {
        name: decl.name.clone(),
        columns: decl.columns.clone(),
        unique: decl.unique,
        predicate: decl.predicate.as_ref().map(|p| p.trim().to_string()),
        expressions: false,
    })
}

/// Every foreign key must point at a declared column that is the primary key or carries a
/// one-column unique index: SQLite accepts anything else at CREATE time and then fails every
/// write with "foreign key mismatch".
fn check_references(schema: &Schema) -> Result<(), (String, String, String)> {
    for table in schema.tables.values() {
        for column in &table.columns {
            let Some(reference) = &column.references else {
                continue;
            };
            let fail = |msg: String| Err((table.name.clone(), column.name.clone(), msg));
            let Some(parent) = schema.table(&reference.table) else {
                return fail(format!(
                    "column `{}` references table `{}`, which is not declared",
                    column.name, reference.table
                ));
            };
            let Some(parent_column) = parent.column(&reference.column) else {
                return fail(format!(
                    "column `{}` references `{}.{}`, which is not declared",
                    column.name, reference.table, reference.column
                ));
            };
            let pk = parent.primary_key();
            let is_key = matches!(pk.as_slice(), [only] if only.name == parent_column.name)
                || parent
                    .indexes
                    .values()
                    // SQLite wants a full unique index: a partial one is no parent key.
                    .any(|i| {
                        i.unique
                            && i.predicate.is_none()
                            && !i.expressions
                            && i.columns == [parent_column.name.clone()]
                    });
            if !is_key {
                return fail(format!(
                    "column `{}` references `{}.{}`, which is neither the primary key nor unique",
                    column.name, reference.table, reference.column
                ));
            }
        }
    }
    Ok(())
}

/// Names become SQL identifiers, always quoted, so spaces and quotes are fine. A dot or `=`
/// would make `references = "table.column"` and `--rename T.OLD=T.NEW` ambiguous, and a
/// control character would break the one-line-per-change migration header.
fn check_identifier(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.trim() != name {
        return Err(format!(
            "name `{name}` is empty or starts or ends with a space"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '.' | '=') || c.is_control())
    {
        return Err(format!(
            "name {name:?} contains {c:?}; names may hold letters, digits, spaces and quotes, but not `.`, `=` or control characters"
        ));
    }
    if name.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(format!(
            "name `{name}` starts with `sqlite_`, which SQLite reserves"
        ));
    }
    if name
        .to_ascii_lowercase()
        .starts_with(super::introspect::OWN_PREFIX)
    {
        return Err(format!(
            "name `{name}` starts with `{}`, which beamdb reserves for its own tables",
            super::introspect::OWN_PREFIX
        ));
    }
    Ok(())
}

/// A facility's model must keep every built-in table and column: ingest and reindex write them.
fn require_core_columns(schema: &Schema, core: &Schema, file: &str) -> Result<(), TomlError> {
    let missing = |message: String| TomlError {
        file: file.to_string(),
        line: None,
        key: None,
        message,
    };
    for core_table in core.tables.values() {
        let Some(table) = schema.table(&core_table.name) else {
            return Err(missing(format!(
                "table `{}` is missing; beamdb needs it (keep every built-in table and column, add your own beside them)",
                core_table.name
            )));
        };
        for core_column in &core_table.columns {
            if table.column(&core_column.name).is_none() {
                return Err(missing(format!(
                    "table `{}`: column `{}` is missing; beamdb needs it (keep every built-in table and column, add your own beside them)",
                    core_table.name, core_column.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, "m.toml").unwrap_err().to_string()
    }

    #[test]
    fn builtin_models_are_valid() {
        for kind in DbKind::ALL {
            let schema = builtin(kind).unwrap();
            assert!(!schema.tables.is_empty());
        }
    }

    #[test]
    fn columns_are_not_null_unless_declared_nullable() {
        let schema = parse(
            "[tables.t]\ncolumns = [ { name = \"a\", type = \"TEXT\" }, { name = \"b\", type = \"text\", nullable = true } ]\n",
            "m.toml",
        )
        .unwrap();
        let t = schema.table("t").unwrap();
        assert!(!t.columns[0].nullable);
        assert!(t.columns[1].nullable);
        assert_eq!(t.columns[1].sql_type, SqlType::Text);
    }

    #[test]
    fn unknown_type_names_file_line_table_and_column() {
        let msg =
            parse_err("[tables.t]\ncolumns = [\n  { name = \"a\", type = \"VARCHAR\" },\n]\n");
        assert!(
            msg.starts_with("m.toml:3: table `t`: column `a` has unknown type `VARCHAR`"),
            "{msg}"
        );
    }

    #[test]
    fn reference_to_missing_table_is_an_error() {
        let msg = parse_err(
            "[tables.t]\ncolumns = [\n  { name = \"p\", type = \"INTEGER\", nullable = true, references = \"nope.id\" },\n]\n",
        );
        assert!(
            msg.contains("m.toml:3: table `t`: column `p` references table `nope`"),
            "{msg}"
        );
    }

    #[test]
    fn reference_to_non_key_column_is_an_error() {
        let msg = parse_err(
            "[tables.p]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true }, { name = \"x\", type = \"TEXT\" } ]\n\
             [tables.c]\ncolumns = [ { name = \"px\", type = \"TEXT\", references = \"p.x\" } ]\n",
        );
        assert!(msg.contains("neither the primary key nor unique"), "{msg}");
    }

    #[test]
    fn set_null_on_not_null_column_is_an_error() {
        let msg = parse_err(
            "[tables.p]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true } ]\n\
             [tables.c]\ncolumns = [ { name = \"p\", type = \"INTEGER\", references = \"p.id\", on_delete = \"SET NULL\" } ]\n",
        );
        assert!(msg.contains("not nullable"), "{msg}");
    }

    #[test]
    fn index_on_undeclared_column_is_an_error() {
        let msg = parse_err(
            "[tables.t]\ncolumns = [ { name = \"a\", type = \"TEXT\" } ]\nindexes = [ { name = \"t_b\", columns = [\"b\"] } ]\n",
        );
        assert!(msg.contains("index `t_b` names column `b`"), "{msg}");
    }

    #[test]
    fn unknown_key_in_model_is_an_error() {
        let msg = parse_err(
            "[tables.t]\ncolumns = [ { name = \"a\", type = \"TEXT\", nulable = true } ]\n",
        );
        assert!(msg.contains("m.toml:2") && msg.contains("nulable"), "{msg}");
    }

    #[test]
    fn facility_model_missing_a_core_column_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = builtin_text(DbKind::Beamtime).replace(
            "  { name = \"operator\", type = \"TEXT\", nullable = true },\n",
            "",
        );
        std::fs::write(dir.path().join("beamtime.toml"), text).unwrap();
        let msg = load(DbKind::Beamtime, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("table `runs`: column `operator` is missing"),
            "{msg}"
        );
    }

    #[test]
    fn facility_model_may_add_columns() {
        let dir = tempfile::tempdir().unwrap();
        let text = builtin_text(DbKind::Beamtime).replace(
            "  { name = \"plan_name\", type = \"TEXT\" },\n",
            "  { name = \"plan_name\", type = \"TEXT\" },\n  { name = \"proposal\", type = \"TEXT\", nullable = true },\n",
        );
        std::fs::write(dir.path().join("beamtime.toml"), text).unwrap();
        let schema = load(DbKind::Beamtime, Some(dir.path())).unwrap();
        assert!(schema.table("runs").unwrap().column("proposal").is_some());
    }
}
