//! Settings: file + environment → one validated [`Settings`], resolved once at start-up.
//!
//! Resolution, first match wins: `--settings PATH`, `$BEAMDB_SETTINGS`, `./settings.toml`,
//! built-in defaults. `$BEAMDB_DATA_ROOT` overrides `data_root` wherever it came from.
//! Relative paths in a settings file are relative to that file's folder, so a file means the
//! same thing whatever directory cron starts in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::pgurl::{self, PasswordSources, PgUrl};
use crate::tomlfile::{self, TomlError};

/// The settings every command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The file these came from, or `None` for built-in defaults.
    pub source: Option<PathBuf>,
    pub data_root: PathBuf,
    /// Where `data_root` came from, for the message when it is wrong.
    pub data_root_origin: Origin,
    pub schema: SchemaSettings,
    pub sqlite: SqliteSettings,
    pub ingest: IngestSettings,
    pub index: IndexSettings,
    /// `[frames]`: where the beamtimes' frame stores are.
    pub frames: FramesSettings,
}

/// `[index]`: where the master index is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSettings {
    /// `url = "postgresql://..."` (or `$BEAMDB_INDEX_URL`); `None`: index.db under data_root.
    pub url: Option<PgUrl>,
}

/// Where the index is, as [`Settings::index_location`] resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLocation {
    Sqlite(PathBuf),
    Postgres(PgUrl),
}

/// `[frames]`: the frame stores on the filesystem beside each `beamtime.db` (the default), or
/// on S3-compatible object storage (`url = "s3://bucket/prefix"`, the `s3` feature).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FramesSettings {
    /// `None`: the filesystem store `{data_root}/beamtimes/{id}/frames.zarr`.
    pub s3: Option<S3Settings>,
}

/// An S3-compatible frame store. Credentials are not settings: they come only from the
/// standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The server's URL (`http://127.0.0.1:9000`); `None`: AWS itself (or `$AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// `None`: `$AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Whether a plain-http endpoint is allowed (a test server, a server on the facility LAN).
    pub allow_http: bool,
    /// Where `[frames] url` was set: messages about the store name it.
    pub at: SetAt,
}

impl S3Settings {
    /// `s3://bucket/prefix`, as set (it holds no secret: credentials are never settings).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Built in, relative to the working directory (no settings file).
    #[default]
    Default,
    /// Built in, relative to this settings file, which does not set the key.
    DefaultBeside(PathBuf),
    /// Set at this line of this settings file.
    File { file: PathBuf, line: usize },
    /// `$BEAMDB_DATA_ROOT`.
    Env,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str(
                "the built-in default, in the working directory, as no settings file was found",
            ),
            Origin::DefaultBeside(file) => write!(
                f,
                "the built-in default, next to {}, which does not set it",
                file.display()
            ),
            Origin::File { file, line } => write!(f, "set at {}:{line}", file.display()),
            Origin::Env => f.write_str("set by $BEAMDB_DATA_ROOT"),
        }
    }
}

/// A schema folder setting: the folder and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAt {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaSettings {
    /// Folder with `beamtime.toml` and `index.toml`; `None` means the built-in models.
    pub models_dir: Option<PathBuf>,
    /// Folder with `beamtime/` and `index/` migrations; `None` means the built-in ones.
    pub migrations_dir: Option<PathBuf>,
    /// Where `models_dir` and `migrations_dir` were set, for the message when they are wrong.
    pub models_dir_at: Option<SetAt>,
    pub migrations_dir_at: Option<SetAt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSettings {
    pub busy_timeout_ms: u32,
    pub journal_mode: JournalMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    /// Readers never block the writer; needs a local filesystem (not NFS).
    Wal,
    /// Rollback journal: for filesystems where WAL's shared memory does not work.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSettings {
    /// Old root → new root, longest old root first so the most specific mapping wins.
    pub root_map: Vec<(String, PathBuf)>,
    /// Folders on this machine under which a resource's root may lie without a root map
    /// entry. Empty by default: ingest reads only mapped roots.
    pub allowed_roots: Vec<PathBuf>,
    pub compression: Compression,
}

/// How frames are compressed in the Zarr store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd {
        level: i32,
    },
    /// Blosc with bit-shuffle and zstd (the default): detector data rarely uses every bit
    /// of its integer type (12-bit values in uint16), and bit-shuffling turns the unused
    /// high bits into runs of zeros that compress to almost nothing.
    BitshuffleZstd {
        level: i32,
    },
    /// Blosc with bit-shuffle and LZ4, as Dectris detectors write: about as small as
    /// bitshuffle-zstd on noisy frames, faster to write, larger on smooth ones.
    BitshuffleLz4 {
        level: i32,
    },
}

pub const DEFAULT_DATA_ROOT: &str = "beamdb-data";
pub const DEFAULT_BUSY_TIMEOUT_MS: u32 = 5000;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            source: None,
            data_root: PathBuf::from(DEFAULT_DATA_ROOT),
            data_root_origin: Origin::Default,
            schema: SchemaSettings::default(),
            sqlite: SqliteSettings {
                busy_timeout_ms: DEFAULT_BUSY_TIMEOUT_MS,
                journal_mode: JournalMode::Wal,
            },
            ingest: IngestSettings {
                root_map: Vec::new(),
                allowed_roots: Vec::new(),
                compression: Compression::BitshuffleZstd {
                    level: DEFAULT_ZSTD_LEVEL,
                },
            },
            index: IndexSettings::default(),
            frames: FramesSettings::default(),
        }
    }
}

/// What the environment contributes, captured once so that resolution is a pure function.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub settings_file: Option<OsString>,
    pub data_root: Option<OsString>,
    /// `$BEAMDB_INDEX_URL`.
    pub index_url: Option<OsString>,
    /// `$PGPASSWORD` and the password file, for a PostgreSQL index.
    pub pg_passwords: PasswordSources,
    pub cwd: PathBuf,
}

impl Env {
    pub fn from_process() -> std::io::Result<Env> {
        Ok(Env {
            settings_file: std::env::var_os("BEAMDB_SETTINGS").filter(|v| !v.is_empty()),
            data_root: std::env::var_os("BEAMDB_DATA_ROOT").filter(|v| !v.is_empty()),
            index_url: std::env::var_os("BEAMDB_INDEX_URL").filter(|v| !v.is_empty()),
            pg_passwords: PasswordSources::from_process(),
            cwd: std::env::current_dir()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {path} ({origin}): cannot read it: {source}")]
    Unreadable {
        path: PathBuf,
        origin: &'static str,
        source: std::io::Error,
    },
    /// A FIFO or a device would block `beamdb` (a cron job hangs) or fill memory (`/dev/zero`).
    #[error(
        "settings file {path} ({origin}) is not a regular file; point it at a TOML file (see settings.example.toml)"
    )]
    NotAFile { path: PathBuf, origin: &'static str },
    #[error(
        "settings file {path} ({origin}) is larger than {MAX_SETTINGS_BYTES} bytes; a settings file is a few lines of TOML: is it the right file?"
    )]
    TooLarge { path: PathBuf, origin: &'static str },
    /// A control character in a path would forge lines in every message that names it.
    #[error(
        "$BEAMDB_DATA_ROOT {path:?} contains a control character (a newline?); set it to a plain path"
    )]
    EnvPath { path: PathBuf },
    #[error("$BEAMDB_INDEX_URL {url:?}: {why}")]
    IndexUrl { url: String, why: String },
    /// The file's own message names file, line and key; it is the whole error.
    #[error(transparent)]
    Invalid(#[from] TomlError),
    #[error(
        "data_root {path} {why} ({origin}); a typo, or a disk that is not mounted? Fix the setting; `beamdb initdb` creates a new data root"
    )]
    DataRoot {
        path: PathBuf,
        why: &'static str,
        origin: Origin,
    },
}

impl crate::exit::HasExitStatus for SettingsError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Usage
    }
}

impl Settings {
    /// Resolves the settings from an explicit `--settings` path and the environment.
    pub fn resolve(flag: Option<&Path>, env: &Env) -> Result<Settings, SettingsError> {
        let chosen = match (flag, &env.settings_file) {
            (Some(path), _) => Some((env.cwd.join(path), "from --settings")),
            (None, Some(path)) => Some((env.cwd.join(path), "from $BEAMDB_SETTINGS")),
            (None, None) => {
                let local = env.cwd.join("settings.toml");
                local.is_file().then_some((local, "./settings.toml"))
            }
        };
        let mut settings = match chosen {
            None => Settings::default(),
            Some((path, origin)) => {
                let text = read_settings_file(&path, origin)?;
                Settings::from_toml(&text, &path)?
            }
        };
        if let Some(root) = &env.data_root {
            if root.to_string_lossy().chars().any(char::is_control) {
                return Err(SettingsError::EnvPath {
                    path: PathBuf::from(root),
                });
            }
            settings.data_root = env.cwd.join(root);
            settings.data_root_origin = Origin::Env;
        } else if settings.source.is_none() {
            settings.data_root = env.cwd.join(&settings.data_root);
        }
        if let Some(text) = &env.index_url {
            let text = text.to_string_lossy();
            let url = parse_index_url(&text).map_err(|why| SettingsError::IndexUrl {
                url: pgurl::redact(&text),
                why,
            })?;
            settings.index.url = Some(url);
        }
        if let Some(url) = &mut settings.index.url {
            url.find_password(&env.pg_passwords);
        }
        Ok(settings)
    }

    /// Parses a settings file's text; `path` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, TomlError> {
        let file = path.display().to_string();
        let raw: RawSettings = tomlfile::parse(text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let bad = |span: std::ops::Range<usize>, msg: String| tomlfile::at(text, &file, span, msg);

        let mut settings = Settings {
            source: Some(path.to_path_buf()),
            ..Settings::default()
        };
        settings.data_root = base.join(&settings.data_root);
        settings.data_root_origin = Origin::DefaultBeside(path.to_path_buf());
        let set_at = |span: std::ops::Range<usize>| SetAt {
            file: path.to_path_buf(),
            line: tomlfile::line_of(text, span.start),
        };
        if let Some(root) = raw.data_root {
            settings.data_root = nonempty_path(&root, base).map_err(|m| bad(root.span(), m))?;
            let at = set_at(root.span());
            settings.data_root_origin = Origin::File {
                file: at.file,
                line: at.line,
            };
        }
        if let Some(schema) = raw.schema {
            if let Some(dir) = schema.models_dir {
                let dir_path = nonempty_path(&dir, base).map_err(|m| bad(dir.span(), m))?;
                settings.schema.models_dir = Some(dir_path);
                settings.schema.models_dir_at = Some(set_at(dir.span()));
            }
            if let Some(dir) = schema.migrations_dir {
                let dir_path = nonempty_path(&dir, base).map_err(|m| bad(dir.span(), m))?;
                settings.schema.migrations_dir = Some(dir_path);
                settings.schema.migrations_dir_at = Some(set_at(dir.span()));
            }
        }
        if let Some(sqlite) = raw.sqlite {
            if let Some(timeout) = sqlite.busy_timeout_ms {
                settings.sqlite.busy_timeout_ms = u32::try_from(*timeout.get_ref())
                    .ok()
                    .filter(|t| *t <= i32::MAX as u32)
                    .ok_or_else(|| {
                        bad(
                            timeout.span(),
                            format!(
                                "{} is not a valid timeout; give milliseconds from 0 to {}",
                                timeout.get_ref(),
                                i32::MAX
                            ),
                        )
                    })?;
            }
            if let Some(mode) = sqlite.journal_mode {
                settings.sqlite.journal_mode = match mode.get_ref().to_ascii_lowercase().as_str() {
                    "wal" => JournalMode::Wal,
                    "delete" => JournalMode::Delete,
                    other => {
                        return Err(bad(
                            mode.span(),
                            format!(
                                "unknown journal mode \"{other}\"; use \"wal\" (default) or \"delete\" (for NFS)"
                            ),
                        ));
                    }
                };
            }
        }
        if let Some(index) = raw.index
            && let Some(url) = index.url
        {
            let parsed = parse_index_url(url.get_ref()).map_err(|why| bad(url.span(), why))?;
            settings.index.url = Some(parsed);
        }
        if let Some(ingest) = raw.ingest {
            let level = match &ingest.compression_level {
                None => DEFAULT_ZSTD_LEVEL,
                Some(level) if (1..=22).contains(level.get_ref()) => *level.get_ref() as i32,
                Some(level) => {
                    return Err(bad(
                        level.span(),
                        format!(
                            "compression level {} is out of range; use 1 to 22",
                            level.get_ref()
                        ),
                    ));
                }
            };
            if let Some(codec) = ingest.compression {
                settings.ingest.compression = match codec.get_ref().as_str() {
                    "none" => Compression::None,
                    "zstd" => Compression::Zstd { level },
                    "bitshuffle-zstd" => Compression::BitshuffleZstd { level },
                    "bitshuffle-lz4" => Compression::BitshuffleLz4 { level },
                    other => {
                        return Err(bad(
                            codec.span(),
                            format!(
                                "unknown compression \"{other}\"; use \"bitshuffle-zstd\" (default), \"bitshuffle-lz4\", \"zstd\" or \"none\""
                            ),
                        ));
                    }
                };
            } else {
                settings.ingest.compression = Compression::BitshuffleZstd { level };
            }
            let mut root_map = Vec::new();
            for (old, new) in ingest.root_map {
                if !old.starts_with('/') {
                    return Err(bad(
                        new.span(),
                        format!(
                            "root_map key \"{old}\" must be an absolute path, as it appears in the documents"
                        ),
                    ));
                }
                let new_path = nonempty_path(&new, base).map_err(|m| bad(new.span(), m))?;
                root_map.push((old, new_path));
            }
            settings.ingest.root_map = sort_root_map(root_map);
            let mut allowed_roots = Vec::new();
            for root in ingest.allowed_roots {
                allowed_roots.push(nonempty_path(&root, base).map_err(|m| bad(root.span(), m))?);
            }
            settings.ingest.allowed_roots = allowed_roots;
        }
        if let Some(frames) = raw.frames {
            settings.frames = frames_settings(frames, &set_at, &bad)?;
        }
        Ok(settings)
    }
}

/// `[index] url`: a PostgreSQL URL in a build that can use one. The message never holds the
/// password.
fn parse_index_url(text: &str) -> Result<PgUrl, String> {
    if !pgurl::is_postgres(text) {
        return Err(format!(
            "beamdb keeps the index in index.db under data_root, or in PostgreSQL; a url must be postgresql://... ({}); leave url out for index.db",
            pgurl::URL_FORM
        ));
    }
    if !cfg!(feature = "postgres") {
        return Err(
            "this beamdb was built without the `postgres` feature, so it cannot use a PostgreSQL index; build it with `cargo build --release --features postgres`, or leave [index] url out to use index.db under data_root".into(),
        );
    }
    PgUrl::parse_alone(text).map_err(|why| format!("{why}; {}", pgurl::URL_FORM))
}

impl Settings {
    /// Where the index is: the PostgreSQL URL, else index.db under data_root.
    pub fn index_location(&self) -> IndexLocation {
        match &self.index.url {
            Some(url) => IndexLocation::Postgres(url.clone()),
            None => IndexLocation::Sqlite(crate::layout::Layout::new(&self.data_root).index_db()),
        }
    }

    /// `data_root`, for a command that reads what is there (everything but `initdb`, which
    /// creates it, and `ingest`, which creates a beamtime): refused, naming the path and
    /// where the setting came from, when it is not a beamdb data root. A typo or an unmounted
    /// disk must not turn into an empty index in the wrong place and exit 0.
    pub fn existing_data_root(&self) -> Result<&Path, SettingsError> {
        let root = &self.data_root;
        let why = if !root.exists() {
            Some("does not exist")
        } else if !root.is_dir() {
            Some("is not a folder")
        } else if !root.join("index.db").exists() && !root.join("beamtimes").is_dir() {
            Some("is not a beamdb data root (it has no index.db and no beamtimes/)")
        } else {
            None
        };
        match why {
            None => Ok(root),
            Some(why) => Err(SettingsError::DataRoot {
                path: root.clone(),
                why,
                origin: self.data_root_origin.clone(),
            }),
        }
    }

    /// Refuses a `[schema] models_dir` without both model files, and a `[schema]
    /// migrations_dir` that holds no migrations: with it, `initdb` made
    /// databases with no tables and `make-migrations --check` called every table new.
    /// `may_be_empty` is for `make-migrations` writing, which fills an empty folder with
    /// the initial migrations.
    pub fn check_schema_dirs(&self, may_be_empty: bool) -> Result<(), TomlError> {
        if let (Some(dir), Some(at)) = (&self.schema.models_dir, &self.schema.models_dir_at) {
            check_models_dir(dir).map_err(|message| TomlError {
                file: at.file.display().to_string(),
                line: Some(at.line),
                key: Some("schema.models_dir".into()),
                message,
            })?;
        }
        let (Some(dir), Some(at)) = (&self.schema.migrations_dir, &self.schema.migrations_dir_at)
        else {
            return Ok(());
        };
        if may_be_empty && (!dir.exists() || is_empty_dir(dir)) {
            return Ok(());
        }
        let problem = if !dir.is_dir() {
            Some(format!("{} is not a folder", dir.display()))
        } else {
            ["beamtime", "index"].iter().find_map(|kind| {
                let sub = dir.join(kind);
                let has_sql = std::fs::read_dir(&sub).ok().is_some_and(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .any(|e| e.path().extension().is_some_and(|x| x == "sql"))
                });
                (!has_sql)
                    .then(|| format!("{} holds no migrations (V1__initial.sql, …)", sub.display()))
            })
        };
        match problem {
            None => Ok(()),
            Some(problem) => Err(TomlError {
                file: at.file.display().to_string(),
                line: Some(at.line),
                key: Some("schema.migrations_dir".into()),
                message: format!(
                    "{problem}; point it at a folder with beamtime/ and index/ migrations (copied from the shipped migrations/, or written by `beamdb make-migrations`), or remove the key to use the built-in ones"
                ),
            }),
        }
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// A `[schema] models_dir` must be a folder with at least one model file: an empty or
/// missing one is a typo, and commands that do not read the models would go on with the
/// built-in ones. (A missing `index.toml` beside a `beamtime.toml` is reported, naming the
/// file, by the command that needs it.)
fn check_models_dir(dir: &Path) -> Result<(), String> {
    let fix = "point it at the folder with beamtime.toml and index.toml (copied from config/models/), or remove the key to use the built-in models";
    if !dir.is_dir() {
        return Err(format!("{} is not a folder; {fix}", dir.display()));
    }
    if !["beamtime.toml", "index.toml"]
        .iter()
        .any(|name| dir.join(name).is_file())
    {
        return Err(format!(
            "{} has neither beamtime.toml nor index.toml; {fix}",
            dir.display()
        ));
    }
    Ok(())
}

/// Longest old root first, so that `/a/b` wins over `/a` for `/a/b/c`.
pub fn sort_root_map(mut map: Vec<(String, PathBuf)>) -> Vec<(String, PathBuf)> {
    map.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then(a.cmp(b)));
    map.dedup_by(|(a, _), (b, _)| a == b);
    map
}

/// The largest settings file read: far above any real one, small enough to read at once.
pub const MAX_SETTINGS_BYTES: u64 = 1 << 20;

/// Reads a settings file that is a regular file of at most [`MAX_SETTINGS_BYTES`]; checked on
/// the open handle, so a FIFO never blocks and a device never streams into memory.
fn read_settings_file(path: &Path, origin: &'static str) -> Result<String, SettingsError> {
    use std::io::Read;
    let unreadable = |source| SettingsError::Unreadable {
        path: path.to_path_buf(),
        origin,
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer before the check.
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(std::io::Error::other("it is a directory")));
    }
    if !meta.is_file() {
        return Err(SettingsError::NotAFile {
            path: path.to_path_buf(),
            origin,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SETTINGS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SETTINGS_BYTES {
        return Err(SettingsError::TooLarge {
            path: path.to_path_buf(),
            origin,
        });
    }
    String::from_utf8(bytes).map_err(|_| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

fn nonempty_path(value: &Spanned<String>, base: &Path) -> Result<PathBuf, String> {
    if value.get_ref().trim().is_empty() {
        return Err("an empty path is not allowed".into());
    }
    if value.get_ref().chars().any(char::is_control) {
        return Err(format!(
            "{:?} contains a control character (a newline?); write a plain path",
            value.get_ref()
        ));
    }
    Ok(base.join(value.get_ref()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    data_root: Option<Spanned<String>>,
    schema: Option<RawSchema>,
    sqlite: Option<RawSqlite>,
    ingest: Option<RawIngest>,
    index: Option<RawIndex>,
    frames: Option<RawFrames>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrames {
    url: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    allow_http: Option<Spanned<bool>>,
}

/// `[frames]`, checked: an `s3://bucket/prefix` url (only in a build with the `s3` feature),
/// and the keys that go with it only beside it.
fn frames_settings(
    raw: RawFrames,
    set_at: &dyn Fn(std::ops::Range<usize>) -> SetAt,
    bad: &dyn Fn(std::ops::Range<usize>, String) -> TomlError,
) -> Result<FramesSettings, TomlError> {
    let Some(url) = raw.url else {
        let stray = [
            raw.endpoint.as_ref().map(|v| ("endpoint", v.span())),
            raw.region.as_ref().map(|v| ("region", v.span())),
            raw.allow_http.as_ref().map(|v| ("allow_http", v.span())),
        ];
        if let Some((key, span)) = stray.into_iter().flatten().next() {
            return Err(bad(
                span,
                format!(
                    "frames.{key} is only used with an S3 store; set `url = \"s3://bucket/prefix\"` beside it, or remove it (frames then stay beside each beamtime.db)"
                ),
            ));
        }
        return Ok(FramesSettings::default());
    };
    let text = url.get_ref();
    let Some(rest) = text.strip_prefix("s3://") else {
        return Err(bad(
            url.span(),
            format!(
                "{text:?} is not an S3 url; give `s3://bucket/prefix`, or leave frames.url unset to keep frames beside each beamtime.db"
            ),
        ));
    };
    if !cfg!(feature = "s3") {
        return Err(bad(
            url.span(),
            "this beamdb was built without the `s3` feature, so it cannot store frames on S3; build it with `cargo build --features s3`, or leave frames.url unset to keep frames beside each beamtime.db".into(),
        ));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    // S3's bucket naming rules, as far as they matter here: what would not survive as the
    // host part of a URL or as a key is refused before any request is made.
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(bad(
            url.span(),
            format!(
                "bucket {bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '-' and '.'); give `s3://bucket/prefix`"
            ),
        ));
    }
    let prefix_ok = prefix.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    if !prefix.is_empty() && !prefix_ok {
        return Err(bad(
            url.span(),
            format!(
                "prefix {prefix:?} must be folder names of letters, digits, '-', '_' and '.' joined by '/'"
            ),
        ));
    }
    let endpoint = match raw.endpoint {
        Some(e) if e.get_ref().starts_with("http://") || e.get_ref().starts_with("https://") => {
            Some(e.get_ref().trim_end_matches('/').to_string())
        }
        Some(e) => {
            return Err(bad(
                e.span(),
                format!(
                    "endpoint {:?} is not a URL; give the server's `https://host:port` (or `http://` with allow_http = true)",
                    e.get_ref()
                ),
            ));
        }
        None => None,
    };
    let allow_http = raw.allow_http.as_ref().is_some_and(|v| *v.get_ref());
    if let Some(e) = &endpoint
        && e.starts_with("http://")
        && !allow_http
    {
        return Err(bad(
            url.span(),
            format!(
                "endpoint {e} is plain http, which sends requests unencrypted; set frames.allow_http = true if that is meant (a test server, a trusted network), or use https"
            ),
        ));
    }
    Ok(FramesSettings {
        s3: Some(S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint,
            region: raw.region.map(|r| r.into_inner()),
            allow_http,
            at: set_at(url.span()),
        }),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    models_dir: Option<Spanned<String>>,
    migrations_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlite {
    busy_timeout_ms: Option<Spanned<i64>>,
    journal_mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    #[serde(default)]
    root_map: BTreeMap<String, Spanned<String>>,
    compression: Option<Spanned<String>>,
    compression_level: Option<Spanned<i64>>,
    #[serde(default)]
    allowed_roots: Vec<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cwd: &Path) -> Env {
        Env {
            settings_file: None,
            data_root: None,
            index_url: None,
            pg_passwords: PasswordSources::default(),
            cwd: cwd.to_path_buf(),
        }
    }

    #[test]
    fn no_file_means_defaults_under_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::resolve(None, &env(dir.path())).unwrap();
        assert_eq!(s.source, None);
        assert_eq!(s.data_root, dir.path().join(DEFAULT_DATA_ROOT));
        assert_eq!(s.sqlite.busy_timeout_ms, DEFAULT_BUSY_TIMEOUT_MS);
    }

    #[test]
    fn flag_beats_env_beats_local_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["flag", "env", "settings"] {
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!("data_root = \"{name}-root\"\n"),
            )
            .unwrap();
        }
        let mut e = env(dir.path());
        let local = Settings::resolve(None, &e).unwrap();
        assert_eq!(local.data_root, dir.path().join("settings-root"));
        e.settings_file = Some("env.toml".into());
        let from_env = Settings::resolve(None, &e).unwrap();
        assert_eq!(from_env.data_root, dir.path().join("env-root"));
        let from_flag = Settings::resolve(Some(Path::new("flag.toml")), &e).unwrap();
        assert_eq!(from_flag.data_root, dir.path().join("flag-root"));
        e.data_root = Some("override".into());
        let overridden = Settings::resolve(Some(Path::new("flag.toml")), &e).unwrap();
        assert_eq!(overridden.data_root, dir.path().join("override"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let s = Settings::from_toml(
            "data_root = \"data\"\n[schema]\nmodels_dir = \"models\"\n",
            Path::new("/etc/beamdb/settings.toml"),
        )
        .unwrap();
        assert_eq!(s.data_root, Path::new("/etc/beamdb/data"));
        assert_eq!(
            s.schema.models_dir.as_deref(),
            Some(Path::new("/etc/beamdb/models"))
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Settings::resolve(Some(Path::new("nope.toml")), &env(dir.path())).unwrap_err();
        assert!(
            err.to_string()
                .contains("nope.toml (from --settings): cannot read it"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_names_line_and_key() {
        let err = Settings::from_toml("[sqlite]\nbusy_timeout_ms = -3\n", Path::new("s.toml"))
            .unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.key.as_deref(), Some("sqlite.busy_timeout_ms"));
        let err = Settings::from_toml("[ingest]\ncompression = \"lz4\"\n", Path::new("s.toml"))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("s.toml:2: key `ingest.compression`: unknown compression"),
            "{err}"
        );
    }

    #[test]
    fn data_root_remembers_where_it_was_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), "\n\ndata_root = \"typo\"\n").unwrap();
        let mut e = env(dir.path());
        let s = Settings::resolve(Some(Path::new("s.toml")), &e).unwrap();
        assert_eq!(
            s.data_root_origin,
            Origin::File {
                file: dir.path().join("s.toml"),
                line: 3
            }
        );
        let err = s.existing_data_root().unwrap_err().to_string();
        assert!(err.contains("typo does not exist (set at "), "{err}");
        assert!(err.contains("s.toml:3)"), "{err}");
        e.data_root = Some("elsewhere".into());
        let s = Settings::resolve(Some(Path::new("s.toml")), &e).unwrap();
        assert_eq!(s.data_root_origin, Origin::Env);
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        let err = s.existing_data_root().unwrap_err().to_string();
        assert!(err.contains("is not a beamdb data root"), "{err}");
        std::fs::create_dir_all(dir.path().join("elsewhere/beamtimes")).unwrap();
        assert!(s.existing_data_root().is_ok());
    }

    #[test]
    fn schema_dirs_must_hold_something_except_for_make_migrations_to_fill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        let s = Settings::from_toml("[schema]\nmigrations_dir = \"m\"\n", &path).unwrap();
        let err = s.check_schema_dirs(false).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.key.as_deref(), Some("schema.migrations_dir"));
        assert!(
            s.check_schema_dirs(true).is_ok(),
            "make-migrations fills it"
        );
        std::fs::create_dir_all(dir.path().join("m/beamtime")).unwrap();
        std::fs::create_dir_all(dir.path().join("m/index")).unwrap();
        std::fs::write(dir.path().join("m/beamtime/V1__initial.sql"), "").unwrap();
        let err = s.check_schema_dirs(false).unwrap_err();
        assert!(err.message.contains("index holds no migrations"), "{err}");
        assert!(
            s.check_schema_dirs(true).is_err(),
            "not empty: it must be whole"
        );
        std::fs::write(dir.path().join("m/index/V1__initial.sql"), "").unwrap();
        assert!(s.check_schema_dirs(false).is_ok());
        let s = Settings::from_toml("[schema]\nmodels_dir = \"m\"\n", &path).unwrap();
        let err = s.check_schema_dirs(true).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("schema.models_dir"));
    }

    #[test]
    fn root_map_is_most_specific_first() {
        let s = Settings::from_toml(
            "[ingest.root_map]\n\"/a\" = \"/x\"\n\"/a/b\" = \"/y\"\n",
            Path::new("/s.toml"),
        )
        .unwrap();
        assert_eq!(s.ingest.root_map[0].0, "/a/b");
    }

    #[test]
    fn example_file_parses_and_equals_defaults() {
        let text = include_str!("../settings.example.toml");
        let path = Path::new("/cfg/settings.example.toml");
        let mut parsed = Settings::from_toml(text, path).unwrap();
        parsed.source = None;
        parsed.data_root_origin = Origin::Default;
        let defaults = Settings {
            data_root: Path::new("/cfg").join(DEFAULT_DATA_ROOT),
            ..Settings::default()
        };
        assert_eq!(parsed, defaults);
    }

    #[cfg(feature = "s3")]
    #[test]
    fn frames_url_gives_bucket_prefix_and_where_it_was_set() {
        let s = Settings::from_toml(
            "[frames]\nurl = \"s3://beam-frames/facility/bl1/\"\nendpoint = \"http://127.0.0.1:9000/\"\nallow_http = true\nregion = \"eu-west-1\"\n",
            Path::new("s.toml"),
        )
        .unwrap();
        let s3 = s.frames.s3.unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("beam-frames", "facility/bl1")
        );
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.url(), "s3://beam-frames/facility/bl1");
        assert_eq!(s3.at.line, 2);
        let bare =
            Settings::from_toml("[frames]\nurl = \"s3://bucket\"\n", Path::new("s.toml")).unwrap();
        assert_eq!(bare.frames.s3.unwrap().url(), "s3://bucket");
    }
}
