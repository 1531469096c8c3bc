//! `beamdb runs`: find runs across beamtimes in the index.

use crate::exit::{Context, Result};
use crate::localtime::{self, Local, Span, Stamp, Zone};
use serde_json::{Map, Value as Json};
use time::{Date, PrimitiveDateTime, Time, Weekday};

use super::Ctx;
use crate::cli::RunsArgs;
use crate::db::Access;
use crate::escape::escape;
use crate::exit::{ExitStatus, fail};
use crate::index::{self, CONDITION_FORM, Condition, RunFilter, RunRow, Scalar};
use crate::layout::{Layout, SafeName};
use crate::lookup::Locator;
use crate::schema::declared;
use crate::settings::Settings;

pub fn run(ctx: &Ctx, args: &RunsArgs) -> Result<ExitStatus> {
    let now = Clock::now(&Local);
    let conditions = args
        .conditions
        .iter()
        .map(|text| {
            Condition::parse(text).map_err(|why| {
                fail(
                    ExitStatus::Usage,
                    format!("--where {text:?}: {why}; {CONDITION_FORM}"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(words) = &args.text
        && words.split_whitespace().next().is_none()
    {
        return Err(fail(
            ExitStatus::Usage,
            "--text needs at least one word, e.g. --text \"P3HT anneal\"",
        ));
    }
    let columns = table_columns(&args.columns)?;
    // A condition on the key a promoted column is filled from uses that column.
    let promoted = declared::promoted(ctx.settings.schema.models_dir.as_deref())?
        .into_iter()
        .map(|p| (p.source_text(), p.column))
        .collect();
    let filter = RunFilter {
        beamtimes: args.beamtimes.clone(),
        sample: args.sample.clone(),
        researcher: args.researcher.clone(),
        plan: args.plan.clone(),
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, &now, Bound::Since))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, &now, Bound::Until))
            .transpose()?,
        exit_status: args.exit_status.map(|s| s.as_str().to_string()),
        conditions,
        text: args.text.clone(),
        promoted,
        limit: args.limit,
    };
    if !index::exists(&ctx.settings) {
        return Err(fail(
            ExitStatus::Failure,
            format!(
                "{}: no index yet; run `beamdb reindex` first",
                Layout::new(&ctx.settings.data_root).index_db().display()
            ),
        ));
    }
    let index = index::open(&ctx.settings, Access::ReadOnly)?;
    let place = index.location();
    // `--where` on a RunStart key reads the key table, `--text` the full-text table: both
    // are made by reindex. A fresh index with no run has nothing to find, whatever the filter.
    let searches = filter.text.is_some() || !filter.conditions.is_empty();
    let nothing_indexed =
        searches && !index.has_text() && index.has_no_runs().context("cannot query the index")?;
    if searches && !index.has_text() && !nothing_indexed {
        return Err(fail(
            ExitStatus::Failure,
            format!(
                "{place}: the index has no search tables yet (--where, --text); run `beamdb reindex` first"
            ),
        ));
    }
    let rows = if nothing_indexed {
        Vec::new()
    } else {
        index
            .query_runs(&filter)
            .context("cannot query the index")?
    };

    let text = if args.json {
        let layout = Layout::new(&ctx.settings.data_root);
        to_json(&rows, index.extra_columns(), &layout, &ctx.settings)
    } else {
        if rows.is_empty() {
            ctx.note("no runs match");
        }
        to_table(&rows, &columns)
    };
    crate::out!("{text}");
    Ok(ExitStatus::Success)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    Since,
    Until,
}

/// The moment `runs` reads relative times against, and the zone it reads wall-clock times in.
struct Clock<'z> {
    /// Unix seconds, to the millisecond.
    unix: f64,
    zone: &'z dyn Zone,
}

impl<'z> Clock<'z> {
    fn now(zone: &'z dyn Zone) -> Clock<'z> {
        let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Clock {
            unix: millis as f64 / 1000.0,
            zone,
        }
    }
}

/// Parses a `--since`/`--until` time into Unix seconds. Accepted, in local time unless an
/// offset is given: `2026-11-20` (a whole day: `--until` includes it), `2026-11-20T14:00`,
/// `2026-11-20 14:00:30`, `2026-11-20T14:00:00+01:00`, `today`, `yesterday`, a weekday
/// (`monday`: its most recent start, today included), a span ago (`3d`, `12h`, `2 weeks`),
/// or Unix seconds (`1795346299.6`). Days, weeks, months and years ago count on the wall
/// clock (across a DST change "1 day ago" is 23 or 25 hours), hours and smaller exactly.
fn parse_time(text: &str, now: &Clock, bound: Bound) -> Result<f64> {
    let t = text.trim();
    let invalid = || {
        fail(
            ExitStatus::Usage,
            format!(
                "cannot read {t:?} as a time; use a date (2026-11-20), a date and time (2026-11-20T14:00, local time unless an offset such as +01:00 or Z is given), today, yesterday, a weekday, a span ago (3d, 12h) or Unix seconds"
            ),
        )
    };
    let now_whole = now.unix.floor() as i64;
    let wall_now = localtime::civil(now.zone, now_whole).ok_or_else(invalid)?;
    let local = |at: PrimitiveDateTime| localtime::unix(now.zone, at).ok_or_else(invalid);
    let day = |date: Date| -> Result<f64> {
        let date = if bound == Bound::Until {
            date.next_day().ok_or_else(invalid)?
        } else {
            date
        };
        Ok(local(PrimitiveDateTime::new(date, Time::MIDNIGHT))? as f64)
    };
    if let Ok(secs) = t.parse::<f64>()
        && secs.is_finite()
    {
        return Ok(secs);
    }
    let today = wall_now.date();
    match t.to_ascii_lowercase().as_str() {
        "today" => return day(today),
        "yesterday" => return day(today.previous_day().ok_or_else(invalid)?),
        "now" => return Ok(now.unix),
        _ => {}
    }
    if let Some(weekday) = parse_weekday(t) {
        let mut date = today;
        while date.weekday() != weekday {
            date = date.previous_day().ok_or_else(invalid)?;
        }
        return day(date);
    }
    if let Some(stamp) = Stamp::parse(t) {
        // A bare date means the whole day.
        if !stamp.has_time {
            return day(stamp.at.date());
        }
        let whole = match stamp.offset {
            Some(offset) => stamp.at.assume_utc().unix_timestamp() - offset,
            None => local(stamp.at)?,
        };
        return Ok(whole as f64 + stamp.fraction);
    }
    let span_text = t.strip_suffix("ago").unwrap_or(t).trim();
    if let Some(span) = Span::parse(span_text) {
        // "3 days" and "-3 days" both mean ago.
        let (months, days, seconds) = (span.months.abs(), span.days.abs(), span.seconds.abs());
        let mut then = now.unix;
        if months != 0 || days != 0 {
            let moved = localtime::add_calendar(wall_now, -months, -days).ok_or_else(invalid)?;
            then = local(moved)? as f64 + (now.unix - now_whole as f64);
        }
        return Ok(then - seconds);
    }
    Err(invalid())
}

fn parse_weekday(text: &str) -> Option<Weekday> {
    use Weekday::*;
    let lower = text.to_ascii_lowercase();
    [
        ("monday", Monday),
        ("tuesday", Tuesday),
        ("wednesday", Wednesday),
        ("thursday", Thursday),
        ("friday", Friday),
        ("saturday", Saturday),
        ("sunday", Sunday),
    ]
    .into_iter()
    .find(|(name, _)| lower.len() >= 3 && name.starts_with(&lower))
    .map(|(_, day)| day)
}

/// A start time for people: the local wall clock, to the second.
pub(super) fn local_time(seconds: Option<f64>) -> String {
    let Some(seconds) = seconds else {
        return String::new();
    };
    let whole = ((seconds * 1000.0) as i64).div_euclid(1000);
    match localtime::civil(&Local, whole) {
        Some(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
        None => format!("{seconds}"),
    }
}

pub(super) fn iso_time(seconds: Option<f64>) -> Json {
    seconds
        .and_then(localtime::rfc3339_utc)
        .map_or(Json::Null, Json::String)
}

/// The `--json` output: an array of objects whose keys are stable (scripts rely on them).
fn to_json(
    rows: &[RunRow],
    extra_columns: &[String],
    layout: &Layout,
    settings: &Settings,
) -> String {
    let mut locator = Locator::new(layout, &settings.frames, &settings.sqlite);
    let array: Vec<Json> = rows
        .iter()
        .map(|row| {
            let run = &row.run;
            let mut object = Map::new();
            object.insert("uid".into(), run.uid.clone().into());
            object.insert("beamtime".into(), row.beamtime.clone().into());
            object.insert("scan_id".into(), run.scan_id.into());
            object.insert("plan_name".into(), run.plan_name.clone().into());
            object.insert("sample_name".into(), run.sample_name.clone().into());
            object.insert("researcher".into(), run.researcher.clone().into());
            object.insert("time_start".into(), run.time_start.into());
            object.insert("time_start_iso".into(), iso_time(run.time_start));
            object.insert("time_stop".into(), run.time_stop.into());
            object.insert("exit_status".into(), run.exit_status.clone().into());
            object.insert("num_events".into(), run.num_events.into());
            let (database, frames) = locations(&mut locator, &row.beamtime, &run.uid);
            object.insert("database".into(), database);
            object.insert("frames".into(), frames);
            for column in extra_columns {
                let value = run.extra.get(column).map_or(Json::Null, sql_to_json);
                object.insert(column.clone(), value);
            }
            Json::Object(object)
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&array).unwrap_or_else(|_| "[]".to_string());
    text.push('\n');
    text
}

/// The run's database and its group in the frame store, as absolute paths ([`Locator`] is
/// the one place that knows them); null for ids no beamtime could have (a hand-edited index).
fn locations(locator: &mut Locator<'_>, beamtime: &str, uid: &str) -> (Json, Json) {
    match (
        SafeName::new("beamtime id", beamtime),
        SafeName::new("run uid", uid),
    ) {
        (Ok(beamtime), Ok(uid)) => {
            let at = locator.locate(&beamtime, &uid);
            (
                Json::String(at.database.to_string_lossy().into_owned()),
                at.run_group_text().map_or(Json::Null, Json::String),
            )
        }
        _ => (Json::Null, Json::Null),
    }
}

fn sql_to_json(value: &Scalar) -> Json {
    match value {
        Scalar::Null => Json::Null,
        Scalar::Int(i) => (*i).into(),
        Scalar::Real(f) => (*f).into(),
        Scalar::Text(s) => s.clone().into(),
        Scalar::Blob(b) => format!("<{} bytes>", b.len()).into(),
    }
}

/// A column of the table for people.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TableColumn {
    Start,
    Beamtime,
    Scan,
    Plan,
    Sample,
    Researcher,
    Status,
    Events,
    Uid,
    /// A promoted column of runs_index, or else a RunStart key (dotted).
    Other(String),
}

const DEFAULT_COLUMNS: [TableColumn; 9] = [
    TableColumn::Start,
    TableColumn::Beamtime,
    TableColumn::Scan,
    TableColumn::Plan,
    TableColumn::Sample,
    TableColumn::Researcher,
    TableColumn::Status,
    TableColumn::Events,
    TableColumn::Uid,
];

fn table_columns(names: &[String]) -> Result<Vec<TableColumn>> {
    if names.is_empty() {
        return Ok(DEFAULT_COLUMNS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            let name = name.trim();
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(fail(
                    ExitStatus::Usage,
                    format!(
                        "--columns: {name:?} is not a column; list names separated by commas, e.g. --columns start,uid,proposal,sample.composition"
                    ),
                ));
            }
            Ok(match name.to_ascii_lowercase().as_str() {
                "start" | "time_start" => TableColumn::Start,
                "beamtime" => TableColumn::Beamtime,
                "scan" | "scan_id" => TableColumn::Scan,
                "plan" | "plan_name" => TableColumn::Plan,
                "sample" | "sample_name" => TableColumn::Sample,
                "researcher" => TableColumn::Researcher,
                "status" | "exit_status" => TableColumn::Status,
                "events" | "num_events" => TableColumn::Events,
                "uid" => TableColumn::Uid,
                _ => TableColumn::Other(name.to_string()),
            })
        })
        .collect()
}

impl TableColumn {
    fn header(&self) -> String {
        match self {
            TableColumn::Start => "START".into(),
            TableColumn::Beamtime => "BEAMTIME".into(),
            TableColumn::Scan => "SCAN".into(),
            TableColumn::Plan => "PLAN".into(),
            TableColumn::Sample => "SAMPLE".into(),
            TableColumn::Researcher => "RESEARCHER".into(),
            TableColumn::Status => "STATUS".into(),
            TableColumn::Events => "EVENTS".into(),
            TableColumn::Uid => "UID".into(),
            TableColumn::Other(name) => printable(&name.to_uppercase()),
        }
    }

    fn cell(&self, row: &RunRow) -> String {
        let run = &row.run;
        let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let text = match self {
            TableColumn::Start => local_time(run.time_start),
            TableColumn::Beamtime => row.beamtime.clone(),
            TableColumn::Scan => run.scan_id.map_or("-".into(), |s| s.to_string()),
            TableColumn::Plan => opt(&run.plan_name),
            TableColumn::Sample => opt(&run.sample_name),
            TableColumn::Researcher => opt(&run.researcher),
            TableColumn::Status => run
                .exit_status
                .clone()
                .unwrap_or_else(|| "incomplete".into()),
            TableColumn::Events => run.num_events.map_or("-".into(), |n| n.to_string()),
            TableColumn::Uid => run.uid.clone(),
            TableColumn::Other(name) => match run.extra.get(name) {
                Some(value) => json_cell(&sql_to_json(value)),
                None => {
                    let doc: Option<Json> = run
                        .metadata
                        .as_deref()
                        .and_then(|m| serde_json::from_str(m).ok());
                    let found = doc
                        .as_ref()
                        .and_then(|d| name.split('.').try_fold(d, |d, key| d.get(key)));
                    found.map_or("-".into(), json_cell)
                }
            },
        };
        printable(&text)
    }
}

fn json_cell(value: &Json) -> String {
    match value {
        Json::Null => "-".into(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Document text as one line that cannot forge another: control characters are escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// A table for people: aligned columns, newest first, local times.
fn to_table(rows: &[RunRow], columns: &[TableColumn]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let header: Vec<String> = columns.iter().map(TableColumn::header).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| c.cell(row)).collect::<Vec<String>>())
        // Sample, plan and researcher names (and any RunStart value) come from the documents:
        // escaped before the widths are measured, so the columns stay aligned.
        .map(|cells| {
            cells
                .into_iter()
                .map(|cell| escape(&cell).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(padded.join("  ").trim_end());
        text.push('\n');
    };
    line(&header);
    for row in &cells {
        line(row);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::localtime::tests::Berlin;

    /// Berlin's wall clock at a Unix second, so that the tests do not depend on the machine.
    fn at(unix: f64) -> Clock<'static> {
        Clock {
            unix,
            zone: &Berlin,
        }
    }

    #[test]
    fn parses_dates_times_and_words() {
        // A Wednesday: 2026-11-25T15:30:00+01:00.
        let now = at(1_795_617_000.0);
        let day_start = 1795561200.0; // 2026-11-25T00:00:00+01:00
        assert_eq!(
            parse_time("2026-11-25", &now, Bound::Since).unwrap(),
            day_start
        );
        assert_eq!(
            parse_time("2026-11-25", &now, Bound::Until).unwrap(),
            day_start + 86400.0
        );
        assert_eq!(parse_time("today", &now, Bound::Since).unwrap(), day_start);
        assert_eq!(
            parse_time("yesterday", &now, Bound::Since).unwrap(),
            day_start - 86400.0
        );
        assert_eq!(
            parse_time("monday", &now, Bound::Since).unwrap(),
            day_start - 2.0 * 86400.0
        );
        assert_eq!(parse_time("Wed", &now, Bound::Since).unwrap(), day_start);
        assert_eq!(
            parse_time("2026-11-25T01:00", &now, Bound::Since).unwrap(),
            day_start + 3600.0
        );
        assert_eq!(
            parse_time("2026-11-25 01:00", &now, Bound::Since).unwrap(),
            day_start + 3600.0
        );
        assert_eq!(
            parse_time("2026-11-25T00:00:00Z", &now, Bound::Since).unwrap(),
            day_start + 3600.0
        );
        assert_eq!(
            parse_time("1795561200", &now, Bound::Since).unwrap(),
            day_start
        );
        let now_s = now.unix;
        assert_eq!(
            parse_time("2h", &now, Bound::Since).unwrap(),
            now_s - 7200.0
        );
        assert_eq!(
            parse_time("3 days ago", &now, Bound::Since).unwrap(),
            now_s - 3.0 * 86400.0
        );
        assert!(parse_time("last tuesday-ish", &now, Bound::Since).is_err());
        assert!(parse_time("mo", &now, Bound::Since).is_err());
    }

    #[test]
    fn whole_days_and_wall_clock_times_across_dst_changes() {
        // 2026-03-29 (clocks go forward at 02:00 CET) is 23 hours long in Berlin.
        let spring = at(1_774_778_400.0); // 2026-03-29T12:00:00+02:00
        let midnight_cet = 1_774_738_800.0; // 2026-03-29T00:00:00+01:00
        assert_eq!(
            parse_time("2026-03-29", &spring, Bound::Since).unwrap(),
            midnight_cet
        );
        assert_eq!(
            parse_time("2026-03-29", &spring, Bound::Until).unwrap(),
            midnight_cet + 23.0 * 3600.0
        );
        assert_eq!(
            parse_time("2026-03-29T02:30", &spring, Bound::Since).unwrap(),
            midnight_cet + 2.5 * 3600.0,
            "a time the clocks skip reads as 03:30 CEST"
        );
        assert_eq!(
            parse_time("1 day ago", &spring, Bound::Since).unwrap(),
            spring.unix - 23.0 * 3600.0,
            "a day ago is noon yesterday on the wall clock"
        );
        assert_eq!(
            parse_time("24h ago", &spring, Bound::Since).unwrap(),
            spring.unix - 24.0 * 3600.0
        );
        // 2026-10-25 (clocks go back at 03:00 CEST) is 25 hours long.
        let autumn = at(1_792_926_000.0); // 2026-10-25T12:00:00+01:00
        let midnight_cest = 1_792_879_200.0; // 2026-10-25T00:00:00+02:00
        assert_eq!(
            parse_time("today", &autumn, Bound::Since).unwrap(),
            midnight_cest
        );
        assert_eq!(
            parse_time("today", &autumn, Bound::Until).unwrap(),
            midnight_cest + 25.0 * 3600.0
        );
        assert_eq!(
            parse_time("2026-10-25 02:30", &autumn, Bound::Since).unwrap(),
            midnight_cest + 2.5 * 3600.0,
            "a time that happens twice is its first occurrence, in CEST"
        );
        assert_eq!(
            parse_time("1d", &autumn, Bound::Since).unwrap(),
            autumn.unix - 25.0 * 3600.0
        );
    }

    #[test]
    fn prints_utc_rfc3339_for_json() {
        assert_eq!(
            iso_time(Some(1_795_561_200.5)),
            Json::String("2026-11-24T23:00:00.5Z".into())
        );
        assert_eq!(iso_time(None), Json::Null);
    }
}
