//! The command line as the user typed it (clap derive only; no I/O). The doc comments are the
//! reference documentation: they are what `--help` prints.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;
use crate::schema::DbKind;

/// Keeps a synchrotron beamline's experiment data in order.
///
/// Every beamtime gets its own SQLite database (samples, runs, streams, events, image_refs)
/// with a Zarr store beside it for detector frames; a master index database lists the runs
/// of all beamtimes. Settings come from --settings PATH, $BEAMDB_SETTINGS or
/// ./settings.toml (first found), otherwise built-in defaults; $BEAMDB_DATA_ROOT overrides
/// data_root, $BEAMDB_INDEX_URL the index's place ([index] url: a postgresql:// database
/// instead of index.db, in a build with the `postgres` feature; its password from
/// $PGPASSWORD or ~/.pgpass, never printed). See settings.example.toml and docs/.
#[derive(Debug, Parser)]
#[command(name = "beamdb", version, after_help = EXIT_CODES_HELP, max_term_width = 100)]
pub struct Cli {
    /// Settings file (TOML); overrides $BEAMDB_SETTINGS and ./settings.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub settings: Option<PathBuf>,

    /// Say more: -v info, -vv debug, -vvv trace ($RUST_LOG, when set, decides instead).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only results, warnings and errors: no progress bars, no chatter.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create data_root, index.db and the named beamtimes, at the head of their migrations.
    ///
    /// Idempotent: what exists is left as it is (and brought to head if it is behind).
    /// Each beamtime gets {data_root}/beamtimes/{ID}/beamtime.db and an empty Zarr v3 store
    /// frames.zarr beside it.
    #[command(after_help = EXIT_CODES_HELP)]
    Initdb(InitdbArgs),

    /// Diff the declared models against the migrations and write the migration between them.
    ///
    /// Replays {migrations_dir}/{beamtime,index}/V*.sql into an in-memory database, compares
    /// the result with the declared models ([schema] models_dir, or the built-in ones) and
    /// writes V<n>__<name>.sql for the difference: renames declared with --rename or
    /// renamed_from, table rebuilds where SQLite cannot alter in place (docs/models.md). With
    /// --check, writes nothing and exits 3 when a migration is missing: for CI of a facility's
    /// configuration repository. A column added to `runs` in the beamtime model is promoted
    /// metadata: the index model gets it on `runs_index` by itself, so the index migration is
    /// written too (and a --rename of it applies there as well).
    #[command(after_help = EXIT_CODES_HELP)]
    MakeMigrations(MakeMigrationsArgs),

    /// Apply pending migrations to index.db and every beamtime (or the named ones).
    ///
    /// Each database is migrated in one transaction with its history rows, with foreign
    /// keys checked before commit. A database that a migration rebuilds or drops tables or
    /// columns in is backed up first (VACUUM INTO, next to it). A database that cannot take a
    /// migration (NULLs in a column made NOT NULL) is left as it was, with a message. A
    /// database whose history is ahead of, or differs from, this binary's migrations is
    /// refused (exit 5); the others are still migrated.
    ///
    /// Each beamtime's frame store is then brought to the layout xarray reads
    /// (docs/reading.md): every run written by an earlier beamdb gets its time coordinate,
    /// columns, dimension names and consolidated metadata from its committed rows, the layout
    /// marker last, so an interrupted conversion is redone by the next migrate. --check exits
    /// 3 and --dry-run lists the runs while any is left.
    #[command(after_help = EXIT_CODES_HELP)]
    Migrate(MigrateArgs),

    /// Store Bluesky runs (suitcase-jsonl documents) and their frames in a beamtime.
    ///
    /// Reads files, folders of *.jsonl files (in name order), or - for a live document
    /// stream on stdin (each run is committed when its stop arrives). Frames (external files
    /// found through the root map, and inline arrays of 2 or more dimensions) go to the
    /// beamtime's Zarr store at runs/{run_uid}/{stream}/{field}; rows (samples, runs,
    /// streams, events, image_refs) to beamtime.db, in one transaction per run after its
    /// frames are on disk. A run lands whole or not at all. Each stream's group in the store
    /// also gets a time coordinate and a column per scalar data key, so that it opens as an
    /// xarray Dataset (docs/reading.md).
    ///
    /// A run already stored with the same documents is left alone; with different documents
    /// it is rejected unless --replace. A run with bad input is rejected with file:line and
    /// the reason; the other runs still land, and the exit status is 4. A run without a stop
    /// document is stored as incomplete (exit_status NULL) with a warning. The beamtime is
    /// created when it does not exist.
    #[command(after_help = EXIT_CODES_HELP)]
    Ingest(IngestArgs),
    /// Bring the master index (index.db) up to date with every beamtime under data_root.
    ///
    /// Safe while ingests write: each beamtime is read in one read-only snapshot, and its
    /// index rows are replaced in one transaction, so a reader of the index never sees half a
    /// beamtime. Beamtimes unchanged since the last reindex are skipped (cheap enough for cron
    /// every few minutes). Beamtimes whose database is gone are removed from the index. A
    /// corrupt or foreign database is reported by path and skipped (exit 4); the rest is
    /// indexed. One reindex at a time: a second exits 75 at once. Prints one summary line.
    #[command(after_help = EXIT_CODES_HELP)]
    Reindex(ReindexArgs),

    /// Find runs across beamtimes (reads only index.db; run `reindex` to refresh it).
    ///
    /// Newest first. Filters combine with AND; --sample, --researcher and --plan match
    /// exactly, or as a glob when they contain *, ? or [ (e.g. --sample 'P3HT*'). Times for
    /// --since/--until: 2026-11-20 (a whole day; --until includes it), 2026-11-20T14:00 or
    /// "2026-11-20 14:00" (local time unless an offset such as +01:00 or Z is given),
    /// today, yesterday, a weekday (monday = its most recent start), a span ago (3d, 12h,
    /// "2 weeks"), or Unix seconds. --where 'KEY OP VALUE' searches any RunStart key
    /// (sample.name=P3HT*, 'temperature >= 300'); --text "P3HT anneal" searches the words of
    /// the RunStart, best match first. Exit 2 on a --where that is not KEY OP VALUE.
    #[command(after_help = EXIT_CODES_HELP)]
    Runs(RunsArgs),

    /// One run: its start summary, streams, fields (dtype, shape, units, source), event and
    /// frame counts, and where its rows and frames are stored.
    ///
    /// UID is a run's uid, or the start of one (at least 8 characters) that no other run's
    /// uid starts with. Without --beamtime, the index (index.db) says which beamtime holds
    /// the run, for every beamtime unchanged since the last reindex; the database of every
    /// other beamtime is read (the output says which found the run). Reads only and takes no lock: it runs while
    /// ingests write, and shows the run as its last committed transaction left it.
    ///
    /// A run that is incomplete (no stop document), whose frames are missing or not as
    /// recorded, or whose `ingest --replace` was interrupted is shown with a line saying so
    /// (exit 0: `beamdb verify` is the check that fails). Exit 2 when the uid or the beamtime
    /// does not exist (naming the nearest one), when the prefix fits several runs (listing
    /// them), or when the uid is stored in several beamtimes and no --beamtime says which; a
    /// run that `verify --repair` quarantined is named with its quarantine file.
    #[command(after_help = EXIT_CODES_HELP)]
    Show(ShowArgs),

    /// Write runs' documents back out as suitcase-jsonl: every document that went in.
    ///
    /// One ["name", {document}] JSON array a line, as `ingest` reads them: start,
    /// descriptors, resources, datums, stream_resources, stream_datums and events in the order
    /// they came, then stop. Each document equals the one ingested as JSON; event_pages and
    /// datum_pages come out unpacked (one event, one datum a line, as event_model unpacks
    /// them), and a frame comes out as it went in: the datum_id of an external frame (the
    /// documents point at the original files, resolved again by the root map at the next
    /// ingest), the nested list of an inline one (read back from the Zarr store).
    ///
    /// A run re-ingested from its export gets the same content digest unless it had pages.
    ///
    /// Without UIDs, every run of the beamtime. Without -o, the documents go to stdout (runs
    /// one after the other); with -o DIR, each run to DIR/{uid}.jsonl (suitcase-jsonl's
    /// name), DIR created when missing. An existing file is never overwritten without
    /// --force: the export stops before writing anything and names it (exit 2). An unknown
    /// beamtime or run uid is exit 2 with the nearest match.
    ///
    /// What cannot be given back is said on stderr and the export exits 4, with every document
    /// that can be given back still written: frames missing from the store (the run's
    /// documents are still whole when its frames came from files), a run quarantined by
    /// `verify --repair` (its documents rebuilt from the file that keeps its rows), a run
    /// stored before beamdb kept every document (a beamtime database before migration V2: no resources, datums or stream
    /// documents, no events' `filled`; descriptors and events rebuilt from their rows).
    /// See docs/user-guide.md, "Export".
    #[command(after_help = EXIT_CODES_HELP)]
    Export(ExportArgs),

    /// Check that beamtimes keep beamdb's promises; with --repair, restore them.
    ///
    /// For every beamtime (or the named ones), read-only: SQLite's integrity_check and
    /// foreign_key_check; that the live schema is what the recorded migration history makes;
    /// that runs.num_events, the stop document's num_events and the stored events agree, per
    /// stream (a stream's events are its seq_nums, fly scans' stream_datum points included);
    /// that the store's group metadata (frames.zarr/zarr.json, runs/zarr.json, each stream
    /// group) opens in zarr-python; that every image_ref's frame is in frames.zarr (its chunk
    /// exists, the array's dtype and frame shape are the recorded ones, the index is in
    /// range); that every group
    /// under frames.zarr/runs/ belongs to a committed run; and that frames.staging/ holds no
    /// leftover of a killed ingest. index.db gets the integrity and foreign key checks. Each
    /// problem is printed with its place (database row, or Zarr path). Runs being ingested
    /// right now are left out and mentioned.
    ///
    /// --repair never deletes a committed run's data. It removes groups and staging folders
    /// that no committed run owns (what a killed ingest leaves; the next ingest of the run
    /// would remove them too) and finishes or undoes an interrupted --replace, keeping the
    /// copy of the frames that the committed rows prove whole (every frame present, of the
    /// recorded dtype and shape, decodable); when neither copy is, both are kept and the run
    /// is quarantined with both. It rewrites the store's own group metadata when zarr-python
    /// cannot open it (keeping the damaged file in quarantine/). A committed
    /// run whose frames are missing or wrong is quarantined: its rows are saved to
    /// {beamtime}/quarantine/{uid}-{time}.json and what is left of its frames moved to
    /// {uid}-{time}.zarr beside it, then its rows are deleted in one transaction; the
    /// message names the files, and re-ingesting the run's documents restores it. Damage
    /// inside SQLite, foreign key or count mismatches and schema drift are reported, not
    /// repaired (restore from a backup; re-ingest with --replace). After repairing, the
    /// beamtime is checked again.
    ///
    /// On an S3 frame store ([frames] url, docs/s3.md) the frame checks are: every version
    /// group runs/{uid}@{version} is the one a committed run's rows name, and each committed
    /// run's group carries its layout marker and digest and holds every frame's chunk object;
    /// --repair deletes the versions no committed run owns (a killed or failed ingest's) and
    /// never a committed one; --deep reads and decodes every frame there too.
    ///
    /// Exit status 0: no problems (or all repaired); 4: problems found (or left); 2: the S3
    /// store cannot be used as set up (no credentials, no such bucket).
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(VerifyArgs),

    /// Store runs live from the beamline's bluesky 0MQ proxy, as they end, until SIGTERM/SIGINT.
    ///
    /// Subscribes to the output of `bluesky-0MQ-proxy`; the RunEngine's Publisher must send
    /// JSON: in the beamline profile, Publisher("HOST:PORT", serializer=lambda doc:
    /// json.dumps(doc, cls=event_model.NumpyEncoder).encode()). Pickled messages are skipped
    /// with one error line. Runs of several RunEngines may interleave: each document is routed
    /// to its run and appended to the run's spool file, {beamtime}/listen.spool/{uid}.jsonl,
    /// so memory stays small whatever a run's length and open runs survive a restart. At its
    /// stop a run is ingested from the spool exactly as `beamdb ingest` would (frames, then rows
    /// in one transaction; a bad document rejects the run, the listener goes on). A run silent
    /// for --incomplete-after is stored as incomplete (exit_status NULL), and stored again,
    /// whole, when its stop comes (after 24 hours of silence it is stored a last time and its
    /// spool removed). A stop that counts more events than arrived (messages lost
    /// while the proxy was unreachable or dropped them) stores the run as incomplete, never as
    /// complete, and says so. A rejected run's spool is kept in listen.spool/rejected/.
    ///
    /// One line per run on stdout: landed, incomplete, unchanged or rejected, with events and
    /// frames; connection trouble and skipped messages (rate-limited) on stderr. The proxy
    /// unreachable or restarting: reconnects with backoff (0.2 s to 10 s). SIGTERM or SIGINT:
    /// open runs are stored as incomplete, exit 0 (a second signal exits at once, status 1; the
    /// spools keep every document); a restart goes on with their spools and never stores a run
    /// twice. Runs rejected while listening do not change the exit status. One listener per
    /// beamtime: a second one on the same beamtime exits 75 at once. See docs/listen.md.
    #[command(after_help = EXIT_CODES_HELP)]
    Listen(ListenArgs),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The proxy's output socket: tcp://HOST:PORT (bluesky-0MQ-proxy's --out-address).
    #[arg(long, value_name = "tcp://HOST:PORT")]
    pub zmq: String,

    /// Only documents of Publishers created with this prefix (prefix=b"P"); default: the
    /// Publisher's default, no prefix.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,

    /// Store every run in this beamtime (letters, digits, '-', '_', '.'); created when missing.
    #[arg(long, value_name = "ID", conflicts_with = "beamtime_key")]
    pub beamtime: Option<String>,

    /// Store each run in the beamtime its start document names under KEY (e.g. proposal_id);
    /// a run without it is rejected.
    #[arg(long, value_name = "KEY")]
    pub beamtime_key: Option<String>,

    /// Where files written under OLD are now: OLD=NEW (repeatable). Adds to, and for the
    /// same OLD overrides, [ingest.root_map] in the settings.
    #[arg(long = "root-map", value_name = "OLD=NEW")]
    pub root_map: Vec<String>,

    /// Store a run without a stop as incomplete after this long without any of its documents
    /// (e.g. 90s, 10m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub incomplete_after: String,
}

#[derive(Debug, Args)]
pub struct InitdbArgs {
    /// Beamtime to create (letters, digits, '-', '_', '.'); repeat for several.
    #[arg(long = "beamtime", value_name = "ID")]
    pub beamtimes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MakeMigrationsArgs {
    /// Which database's models to diff (default: both).
    #[arg(long, value_enum, value_name = "KIND")]
    pub target: Option<DbKind>,

    /// Name of the new migration (made file-name safe); default: derived from the changes.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Write nothing; exit 3 and list the differences when a migration is missing.
    ///
    /// Replays the migrations into an in-memory database: no database on disk is needed, and it
    /// is fast enough for every CI run. Exit 0 when the migrations match the models.
    #[arg(long)]
    pub check: bool,

    /// Declare a rename, so that the data moves with it instead of being dropped:
    /// TABLE.OLD=TABLE.NEW renames a column (e.g. runs.op=runs.operator), OLD=NEW a table.
    ///
    /// Repeat for several. Renames cannot be told from a drop and an add by comparing schemas;
    /// a drop and an add that look like a rename are refused until one is declared, here or
    /// with `renamed_from` in the model file (docs/models.md).
    #[arg(long = "rename", value_name = "OLD=NEW", value_parser = parse_rename)]
    pub renames: Vec<RenameArg>,

    /// Allow a migration that can lose data or fail on a populated database.
    ///
    /// That is: dropping a table or column, changing a column to a type that converts some
    /// values (e.g. TEXT to INTEGER), making a column NOT NULL without a default, or adding a
    /// NOT NULL column without a default. Without this flag such a change exits 2 and says
    /// what it would destroy; with it, the migration's header says so in a DESTRUCTIVE line.
    #[arg(long)]
    pub allow_destructive: bool,

    /// With --check: diff this live database against the models instead of the migrations.
    ///
    /// Finds drift: a hand-edited database, or one whose recorded version does not match its
    /// schema. Lists pending migrations and every difference, exit 3 when there is any; exit 5
    /// when its history is ahead of this beamdb. The kind comes from --target, or from the
    /// file name (beamtime.db or index.db).
    #[arg(long, value_name = "PATH", requires = "check")]
    pub database: Option<PathBuf>,
}

/// One `--rename` as typed: a column (`TABLE.OLD=TABLE.NEW`) or a table (`OLD=NEW`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameArg {
    Table {
        from: String,
        to: String,
    },
    Column {
        table: String,
        from: String,
        to: String,
    },
}

fn parse_rename(text: &str) -> Result<RenameArg, String> {
    let usage = || {
        format!(
            "`{text}` is not a rename; write TABLE.OLD=TABLE.NEW for a column or OLD=NEW for a table"
        )
    };
    let (old, new) = text.split_once('=').ok_or_else(usage)?;
    // The model's name rule (names may need quoting; a `.` or `=` would be ambiguous here).
    let plain = |s: &str| {
        !s.trim().is_empty() && s.trim() == s && !s.chars().any(|c| c == '.' || c.is_control())
    };
    match (old.split_once('.'), new.split_once('.')) {
        (None, None) if plain(old) && plain(new) => Ok(RenameArg::Table {
            from: old.to_string(),
            to: new.to_string(),
        }),
        (Some((t1, from)), Some((t2, to))) if plain(t1) && plain(from) && plain(to) => {
            if t1 != t2 {
                return Err(format!(
                    "`{text}`: a column rename keeps its table ({t1} vs {t2}); rename the table with a separate --rename {t1}={t2}"
                ));
            }
            Ok(RenameArg::Column {
                table: t1.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            })
        }
        _ => Err(usage()),
    }
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The beamtime to ingest into (letters, digits, '-', '_', '.'); created when missing.
    #[arg(long = "beamtime", value_name = "ID")]
    pub beamtime: String,

    /// Where files written under OLD are now: OLD=NEW (repeatable). Adds to, and for the
    /// same OLD overrides, [ingest.root_map] in the settings. Ingest reads files only under
    /// a mapped root or one listed in [ingest] allowed_roots: OLD=OLD reads a root where it is.
    #[arg(long = "root-map", value_name = "OLD=NEW")]
    pub root_map: Vec<String>,

    /// Replace a stored run whose documents differ, rows and frames together.
    #[arg(long)]
    pub replace: bool,

    /// suitcase-jsonl files, folders of them, pipes (`<(zcat runs.jsonl.gz)`), or - for stdin.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Migrate only this beamtime (repeatable); default: index.db and every beamtime.
    #[arg(long = "beamtime", value_name = "ID")]
    pub beamtimes: Vec<String>,

    /// Print the SQL each database would get and the runs whose store would be converted;
    /// change nothing.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,

    /// Change nothing; exit 3 when any database has pending migrations or any run's frame
    /// store lacks the xarray layout.
    #[arg(long)]
    pub check: bool,

    /// Skip the backup taken before a migration that drops or rebuilds a table.
    #[arg(long)]
    pub no_backup: bool,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// Re-read every beamtime, changed or not.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's uid, or its first 8 or more characters.
    #[arg(value_name = "UID")]
    pub uid: String,

    /// Look only in this beamtime (needed when the uid is stored in several).
    #[arg(long, value_name = "ID")]
    pub beamtime: Option<String>,

    /// One JSON object with stable keys, for scripts (docs/user-guide.md lists them).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify only this beamtime (repeatable); default: every beamtime and index.db.
    #[arg(long = "beamtime", value_name = "ID")]
    pub beamtimes: Vec<String>,

    /// Repair what can be repaired safely (see above), and say what was done.
    #[arg(long)]
    pub repair: bool,

    /// Also read and decode every frame (slow: reads every byte of the store).
    #[arg(long)]
    pub deep: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The beamtime the runs are in.
    #[arg(long, value_name = "ID")]
    pub beamtime: String,

    /// Run uids (RunStart uids) to export; default: every run of the beamtime, in the order
    /// they started.
    #[arg(value_name = "UID")]
    pub uids: Vec<String>,

    /// Write each run to DIR/{uid}.jsonl instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Overwrite files that exist in DIR.
    #[arg(long, requires = "output")]
    pub force: bool,

    /// Point the runs' external frames at beamdb's Zarr copy instead of the original files:
    /// their resource and datum documents are replaced by BEAMDB_ZARR ones (root: this
    /// beamtime's frames.zarr, resource_path: the frame array, datum_kwargs.index: the frame),
    /// with the same datum_ids, so the events are unchanged. An ingest of the export reads the
    /// frames from the store (give it --root-map STORE=WHERE-IT-IS-NOW when the store has
    /// moved) and needs none of the original files. A stream_resource becomes one of the
    /// store's array (mimetype application/x-beamdb-zarr) and its stream_datums' indices the
    /// frames' places in it; scalars a stream_resource delivered beside events are written in
    /// the events instead. What cannot be pointed at the store is said (exit 4).
    #[arg(long)]
    pub self_contained: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this beamtime (repeatable).
    #[arg(long = "beamtime", value_name = "ID")]
    pub beamtimes: Vec<String>,

    /// Only runs of this sample (exact, or a glob with *, ?, [).
    #[arg(long, value_name = "S")]
    pub sample: Option<String>,

    /// Only runs of this researcher (exact, or a glob).
    #[arg(long, value_name = "R")]
    pub researcher: Option<String>,

    /// Only runs of this plan, e.g. count, scan (exact, or a glob).
    #[arg(long, value_name = "P")]
    pub plan: Option<String>,

    /// Only runs that started at or after this time.
    #[arg(long, value_name = "T")]
    pub since: Option<String>,

    /// Only runs that started before this time (a bare date includes that day).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,

    /// Only runs that ended so ("incomplete": no stop document yet).
    #[arg(long, value_enum, value_name = "STATUS")]
    pub exit_status: Option<RunStatus>,

    /// Only runs whose RunStart key KEY compares so with VALUE (repeatable: all must hold).
    ///
    /// One argument, e.g. --where proposal=p-1, --where 'temperature >= 300',
    /// --where 'sample.name=P3HT*'. OP is one of = != < <= > >=. KEY is any RunStart key,
    /// dotted for a nested one (sample.name). A VALUE that reads as a number is compared as a
    /// number (a run whose value is text then does not match); quote it ('007') to compare
    /// text. * and ? in VALUE match any text and any one character (with = and !=;
    /// case-sensitive). A run without the key matches no condition on it, != included.
    /// Promoted metadata columns are used (and their index) when KEY is their source.
    #[arg(long = "where", value_name = "KEY OP VALUE")]
    pub conditions: Vec<String>,

    /// Only runs whose RunStart metadata holds all these words (full-text, ranked best first).
    ///
    /// Every text and number in the RunStart is searched (keys are not). Words match whole
    /// words, case-insensitively; end one with * to match its prefix (anne*). Combines with
    /// every other filter; the best matches come first instead of the newest.
    #[arg(long, value_name = "WORDS")]
    pub text: Option<String>,

    /// The columns of the table, in order, comma-separated (default: start, beamtime, scan,
    /// plan, sample, researcher, status, events, uid).
    ///
    /// Besides those: a promoted metadata column (proposal), or any RunStart key, dotted
    /// for a nested one (sample.composition). --json always has every built-in and promoted
    /// column.
    #[arg(long, value_name = "COL,...", value_delimiter = ',')]
    pub columns: Vec<String>,

    /// At most this many runs (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// A JSON array of objects with stable keys, for scripts: every built-in and promoted
    /// column, and each run's `database` and `frames` (its group in the frame store) as
    /// absolute paths (docs/user-guide.md lists the keys).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RunStatus {
    Success,
    Abort,
    Fail,
    Incomplete,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Abort => "abort",
            RunStatus::Fail => "fail",
            RunStatus::Incomplete => "incomplete",
        }
    }
}
