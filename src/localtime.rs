//! Civil (wall-clock) time in the local time zone, and spans of time, as `runs --since/--until`
//! read them and `runs` prints them. Dates and clock times come from `time` (in the tree for the
//! migrations anyway); the local zone's offsets from the C library (`localtime_r`: `TZ`, else
//! /etc/localtime, with the system's zone database), so that beamdb needs no second date-time
//! crate with a zone database of its own.
//!
//! Local wall-clock times that do not exist (the hour skipped when clocks go forward) or occur
//! twice (the hour repeated when they go back) resolve the way RFC 5545 and Temporal's
//! "compatible" rule do: a skipped time is read with the offset before the change (02:30 on a
//! spring-forward night in Berlin is 03:30 CEST), a repeated one as its first occurrence.

use time::{Date, Duration, Month, PrimitiveDateTime, Time, UtcOffset};

/// A time zone: the offset from UTC in force at a Unix second.
pub trait Zone {
    /// Seconds east of UTC at `unix`, or None when the zone cannot say (out of range).
    fn offset_at(&self, unix: i64) -> Option<i64>;
}

/// The process's local time zone, through the C library.
pub struct Local;

impl Zone for Local {
    fn offset_at(&self, unix: i64) -> Option<i64> {
        let t = libc::time_t::try_from(unix).ok()?;
        // Once: the zone cannot change under a running beamdb, and tzset may stat files.
        static TZSET: std::sync::Once = std::sync::Once::new();
        // SAFETY: tzset reads TZ and the zone files into libc's own state; localtime_r writes
        // only into `tm`, which lives on this stack frame. Neither keeps a pointer to ours.
        unsafe {
            TZSET.call_once(|| tzset());
            let mut tm: libc::tm = std::mem::zeroed();
            if libc::localtime_r(&t, &mut tm).is_null() {
                return None;
            }
            // c_long: i64 here, i32 on 32-bit targets.
            #[allow(clippy::useless_conversion)]
            Some(i64::from(tm.tm_gmtoff))
        }
    }
}

unsafe extern "C" {
    // POSIX; glibc's localtime_r, unlike localtime, need not re-read TZ without it.
    fn tzset();
}

/// A zone with one fixed offset (seconds east of UTC).
pub struct Fixed(pub i64);

impl Zone for Fixed {
    fn offset_at(&self, _unix: i64) -> Option<i64> {
        Some(self.0)
    }
}

/// The wall-clock time in `zone` at Unix second `unix`; None when out of range (year ±9999).
pub fn civil(zone: &dyn Zone, unix: i64) -> Option<PrimitiveDateTime> {
    let offset = zone.offset_at(unix)?;
    let utc = time::OffsetDateTime::from_unix_timestamp(unix.checked_add(offset)?).ok()?;
    Some(PrimitiveDateTime::new(utc.date(), utc.time()))
}

/// The Unix second at which the wall clock in `zone` shows `at` (whole seconds; the caller
/// adds any fraction), resolving skipped and repeated times as the module says.
pub fn unix(zone: &dyn Zone, at: PrimitiveDateTime) -> Option<i64> {
    let naive = at.assume_utc().unix_timestamp();
    // The offsets in force a day either side: real zones change at most once in two days.
    let before = zone.offset_at(naive.checked_sub(86_400)?)?;
    let after = zone.offset_at(naive.checked_add(86_400)?)?;
    let fits = |offset: i64| zone.offset_at(naive - offset) == Some(offset);
    match (fits(before), fits(after)) {
        (true, true) => Some((naive - before).min(naive - after)),
        (true, false) => Some(naive - before),
        (false, true) => Some(naive - after),
        // In the gap: read with the offset before the change, which lands after the gap.
        (false, false) => Some(naive - before),
    }
}

/// A span of time: calendar units (counted on the wall clock) and exact ones.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Span {
    pub months: i64,
    pub days: i64,
    /// Hours, minutes, seconds and smaller, in seconds.
    pub seconds: f64,
}

impl Span {
    /// Reads `3d`, `12h`, `2 weeks`, `1h30m`, `1 day, 2 hours`, `1.5h`, or ISO 8601 `P3DT12H`;
    /// units: y/yr/year(s), mo/month(s), w/wk/week(s), d/day(s), h/hr/hour(s), m/min/minute(s),
    /// s/sec/second(s), ms/millisecond(s), us/µs/microsecond(s), ns/nanosecond(s). Fractions
    /// only of hours and smaller (a fractional month has no length).
    pub fn parse(text: &str) -> Option<Span> {
        let t = text.trim();
        let (negative, t) = match t.as_bytes().first() {
            Some(b'-') => (true, t[1..].trim_start()),
            Some(b'+') => (false, t[1..].trim_start()),
            _ => (false, t),
        };
        let span = if t.starts_with(['P', 'p']) {
            parse_iso(&t[1..])?
        } else {
            parse_friendly(t)?
        };
        Some(if negative { span.negated() } else { span })
    }

    fn negated(self) -> Span {
        Span {
            months: -self.months,
            days: -self.days,
            seconds: -self.seconds,
        }
    }

    fn add(&mut self, unit: Unit, number: f64, whole: bool) -> Option<()> {
        let calendar = |n: f64, per: i64| -> Option<i64> {
            // Calendar units count whole wall-clock days or months.
            if !whole || n.abs() > 1e9 {
                return None;
            }
            (n as i64).checked_mul(per)
        };
        match unit {
            Unit::Years => self.months = self.months.checked_add(calendar(number, 12)?)?,
            Unit::Months => self.months = self.months.checked_add(calendar(number, 1)?)?,
            Unit::Weeks => self.days = self.days.checked_add(calendar(number, 7)?)?,
            Unit::Days => self.days = self.days.checked_add(calendar(number, 1)?)?,
            Unit::Seconds(per) => self.seconds += number * per,
        }
        Some(())
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Years,
    Months,
    Weeks,
    Days,
    /// Seconds per unit.
    Seconds(f64),
}

fn unit(name: &str) -> Option<Unit> {
    Some(match name.to_ascii_lowercase().as_str() {
        "y" | "yr" | "yrs" | "year" | "years" => Unit::Years,
        "mo" | "mos" | "month" | "months" => Unit::Months,
        "w" | "wk" | "wks" | "week" | "weeks" => Unit::Weeks,
        "d" | "day" | "days" => Unit::Days,
        "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Seconds(3600.0),
        "m" | "min" | "mins" | "minute" | "minutes" => Unit::Seconds(60.0),
        "s" | "sec" | "secs" | "second" | "seconds" => Unit::Seconds(1.0),
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => Unit::Seconds(1e-3),
        "us" | "µs" | "usec" | "usecs" | "microsecond" | "microseconds" => Unit::Seconds(1e-6),
        "ns" | "nsec" | "nsecs" | "nanosecond" | "nanoseconds" => Unit::Seconds(1e-9),
        _ => return None,
    })
}

/// `<number> <unit>` pairs, spaces optional between number and unit, separated by spaces
/// and/or commas.
fn parse_friendly(text: &str) -> Option<Span> {
    let mut span = Span::default();
    let mut rest = text.trim();
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let after = after.trim_start();
        let letters = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (name, after) = after.split_at(letters);
        span.add(unit(name)?, value, !number.contains('.'))?;
        any = true;
        rest = after.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        }
    }
    any.then_some(span)
}

/// ISO 8601 after the `P`: `[nY][nM][nW][nD][T[nH][nM][nS]]`.
fn parse_iso(text: &str) -> Option<Span> {
    let mut span = Span::default();
    let mut in_time = false;
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(['T', 't']) {
            if in_time {
                return None;
            }
            in_time = true;
            rest = r;
            continue;
        }
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let whole = !number.contains(['.', ',']);
        let value: f64 = number.replace(',', ".").parse().ok()?;
        let mut chars = after.chars();
        let designator = chars.next()?.to_ascii_uppercase();
        let unit = match (in_time, designator) {
            (false, 'Y') => Unit::Years,
            (false, 'M') => Unit::Months,
            (false, 'W') => Unit::Weeks,
            (false, 'D') => Unit::Days,
            (true, 'H') => Unit::Seconds(3600.0),
            (true, 'M') => Unit::Seconds(60.0),
            (true, 'S') => Unit::Seconds(1.0),
            _ => return None,
        };
        span.add(unit, value, whole)?;
        any = true;
        rest = chars.as_str();
    }
    any.then_some(span)
}

/// `at` moved by `months` and `days` on the calendar; a day past the end of the month
/// becomes its last day (January 31 plus one month is February 28 or 29).
pub fn add_calendar(at: PrimitiveDateTime, months: i64, days: i64) -> Option<PrimitiveDateTime> {
    let date = at.date();
    let total = i64::from(date.year()) * 12 + i64::from(u8::from(date.month()) - 1) + months;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(total.rem_euclid(12) + 1).ok()?).ok()?;
    let day = date.day().min(time::util::days_in_month(month, year));
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let date = date.checked_add(Duration::days(days))?;
    Some(PrimitiveDateTime::new(date, at.time()))
}

/// A date and optional clock time in ISO 8601's extended form, with an optional UTC offset:
/// `2026-11-20`, `2026-11-20T14`, `2026-11-20T14:00`, `2026-11-20 14:00:30.25`,
/// `2026-11-20T14:00:00+01:00` (also `+01`, `+0100`), `...Z`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub at: PrimitiveDateTime,
    /// Fraction of the second, in [0, 1).
    pub fraction: f64,
    /// Seconds east of UTC, when given.
    pub offset: Option<i64>,
    /// Whether a clock time was given (a bare date is a whole day).
    pub has_time: bool,
}

impl Stamp {
    pub fn parse(text: &str) -> Option<Stamp> {
        let b = text.as_bytes();
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year: i32 = digits(&text[..4])?.try_into().ok()?;
        let month = Month::try_from(u8::try_from(digits(&text[5..7])?).ok()?).ok()?;
        let day = u8::try_from(digits(&text[8..10])?).ok()?;
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let rest = &text[10..];
        if rest.is_empty() {
            return Some(Stamp {
                at: PrimitiveDateTime::new(date, Time::MIDNIGHT),
                fraction: 0.0,
                offset: None,
                has_time: false,
            });
        }
        let rest = rest.strip_prefix(['T', 't', ' '])?;
        let clock_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
        let (clock, zone) = rest.split_at(clock_end);
        let (hms, fraction) = match clock.split_once(['.', ',']) {
            Some((hms, frac)) if !frac.is_empty() && frac.bytes().all(|c| c.is_ascii_digit()) => {
                (hms, format!("0.{frac}").parse::<f64>().ok()?)
            }
            Some(_) => return None,
            None => (clock, 0.0),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        if parts.is_empty() || parts.len() > 3 || (fraction > 0.0 && parts.len() < 3) {
            return None;
        }
        let mut hms_values = [0u8; 3];
        for (slot, part) in hms_values.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return None;
            }
            *slot = u8::try_from(digits(part)?).ok()?;
        }
        let [h, m, s] = hms_values;
        let time = Time::from_hms(h, m, s).ok()?;
        Some(Stamp {
            at: PrimitiveDateTime::new(date, time),
            fraction,
            offset: parse_offset(zone)?,
            has_time: true,
        })
    }
}

/// `""` (none), `Z`, `±HH`, `±HH:MM`, `±HHMM`, `±HH:MM:SS`.
fn parse_offset(text: &str) -> Option<Option<i64>> {
    if text.is_empty() {
        return Some(None);
    }
    if text.eq_ignore_ascii_case("z") {
        return Some(Some(0));
    }
    let sign = match text.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = text[1..].replace(':', "");
    if !matches!(body.len(), 2 | 4 | 6) {
        return None;
    }
    let mut seconds = 0;
    for (i, per) in [(0, 3600), (2, 60), (4, 1)] {
        if body.len() > i {
            seconds += digits(&body[i..i + 2])? * per;
        }
    }
    let offset = UtcOffset::from_whole_seconds(i32::try_from(seconds).ok()?).ok()?;
    Some(Some(sign * i64::from(offset.whole_seconds())))
}

fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Unix seconds as RFC 3339 in UTC, fractional seconds only when there are any:
/// `2026-11-25T14:30:00Z`, `2026-11-25T14:30:00.5Z`.
pub fn rfc3339_utc(seconds: f64) -> Option<String> {
    let millis = (seconds * 1000.0) as i64;
    let whole = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let t = time::OffsetDateTime::from_unix_timestamp(whole).ok()?;
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if ms != 0 {
        text.push_str(format!(".{ms:03}").trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    /// Europe/Berlin's rule since 1996: CEST from the last Sunday of March 01:00 UTC to the
    /// last Sunday of October 01:00 UTC, else CET. Enough for unit tests without touching the
    /// process's TZ (tests/cli runs the binary with TZ=Europe/Berlin for the real thing).
    pub(crate) struct Berlin;

    fn last_sunday_0100_utc(year: i32, month: Month) -> i64 {
        let mut d =
            Date::from_calendar_date(year, month, time::util::days_in_month(month, year)).unwrap();
        while d.weekday() != time::Weekday::Sunday {
            d = d.previous_day().unwrap();
        }
        PrimitiveDateTime::new(d, Time::from_hms(1, 0, 0).unwrap())
            .assume_utc()
            .unix_timestamp()
    }

    impl Zone for Berlin {
        fn offset_at(&self, unix: i64) -> Option<i64> {
            let year = time::OffsetDateTime::from_unix_timestamp(unix).ok()?.year();
            let summer = unix >= last_sunday_0100_utc(year, Month::March)
                && unix < last_sunday_0100_utc(year, Month::October);
            Some(if summer { 7200 } else { 3600 })
        }
    }

    fn utc(at: PrimitiveDateTime) -> i64 {
        at.assume_utc().unix_timestamp()
    }

    #[test]
    fn wall_clock_times_resolve_across_both_dst_changes() {
        let z = Berlin;
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        assert_eq!(
            unix(&z, datetime!(2026-03-29 01:59:59)),
            Some(utc(datetime!(2026-03-29 00:59:59)))
        );
        assert_eq!(
            unix(&z, datetime!(2026-03-29 02:30)),
            Some(utc(datetime!(2026-03-29 01:30))),
            "a skipped time reads with the offset before the change: 03:30 CEST"
        );
        assert_eq!(
            unix(&z, datetime!(2026-03-29 03:00)),
            Some(utc(datetime!(2026-03-29 01:00)))
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens twice.
        assert_eq!(
            unix(&z, datetime!(2026-10-25 02:30)),
            Some(utc(datetime!(2026-10-25 00:30))),
            "a repeated time is its first occurrence (CEST)"
        );
        assert_eq!(
            unix(&z, datetime!(2026-10-25 03:00)),
            Some(utc(datetime!(2026-10-25 02:00)))
        );
        assert_eq!(
            civil(&z, utc(datetime!(2026-10-25 01:30))),
            Some(datetime!(2026-10-25 02:30)),
            "the second 02:30, in CET"
        );
        // Days across the changes are 23 and 25 hours long on the wall clock.
        let day = |d| unix(&z, d).unwrap();
        assert_eq!(
            day(datetime!(2026-03-30 0:00)) - day(datetime!(2026-03-29 0:00)),
            23 * 3600
        );
        assert_eq!(
            day(datetime!(2026-10-26 0:00)) - day(datetime!(2026-10-25 0:00)),
            25 * 3600
        );
    }

    #[test]
    fn spans_read_friendly_and_iso_forms() {
        let s = |t| Span::parse(t);
        let secs = |x: f64| {
            Some(Span {
                seconds: x,
                ..Span::default()
            })
        };
        let days = |d: i64| {
            Some(Span {
                days: d,
                ..Span::default()
            })
        };
        assert_eq!(s("3d"), days(3));
        assert_eq!(s("2 weeks"), days(14));
        assert_eq!(s("12h"), secs(43_200.0));
        assert_eq!(s("1h30m"), secs(5_400.0));
        assert_eq!(s("1.5h"), secs(5_400.0));
        assert_eq!(s("90 mins"), secs(5_400.0));
        assert_eq!(
            s("1 day, 2 hours"),
            Some(Span {
                days: 1,
                seconds: 7200.0,
                months: 0
            })
        );
        assert_eq!(
            s("1y 2mo"),
            Some(Span {
                months: 14,
                ..Span::default()
            })
        );
        assert_eq!(
            s("P1DT12H"),
            Some(Span {
                days: 1,
                seconds: 43_200.0,
                months: 0
            })
        );
        assert_eq!(s("PT30S"), secs(30.0));
        assert_eq!(s("-2h"), secs(-7200.0));
        for bad in [
            "",
            "h",
            "3",
            "3 fortnights",
            "1.5 days",
            "P",
            "PT",
            "P1H",
            "2h and 3m",
            ".5h",
        ] {
            assert_eq!(s(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stamps_read_extended_iso_forms() {
        let p = |t| Stamp::parse(t);
        assert_eq!(p("2026-11-20").map(|s| s.has_time), Some(false));
        assert_eq!(
            p("2026-11-20T14").map(|s| s.at),
            Some(datetime!(2026-11-20 14:00))
        );
        assert_eq!(
            p("2026-11-20t14:00").map(|s| s.at),
            Some(datetime!(2026-11-20 14:00))
        );
        assert_eq!(
            p("2026-11-20 14:00:30").map(|s| s.at),
            Some(datetime!(2026-11-20 14:00:30))
        );
        let f = p("2026-11-20T14:00:30.25Z").unwrap();
        assert_eq!((f.fraction, f.offset), (0.25, Some(0)));
        assert_eq!(p("2026-11-20T14:00+01:00").unwrap().offset, Some(3600));
        assert_eq!(p("2026-11-20T14:00-0230").unwrap().offset, Some(-9000));
        assert_eq!(p("2026-11-20T14:00+01").unwrap().offset, Some(3600));
        for bad in [
            "2026-11-31",
            "2026-13-01",
            "2026-11-20T25:00",
            "2026-11-20T14:0",
            "2026-11-20T14:00+1",
            "2026-11-20X14:00",
            "2026-11-20T14:00.5",
            "2026-11-20T14:00:00.",
            "20261120",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn calendar_arithmetic_clamps_to_the_end_of_the_month() {
        assert_eq!(
            add_calendar(datetime!(2026-03-31 12:00), -1, 0),
            Some(datetime!(2026-02-28 12:00))
        );
        assert_eq!(
            add_calendar(datetime!(2028-02-29 0:00), -12, 0),
            Some(datetime!(2027-02-28 0:00))
        );
        assert_eq!(
            add_calendar(datetime!(2026-01-01 0:00), 0, -1),
            Some(datetime!(2025-12-31 0:00))
        );
    }

    #[test]
    fn rfc3339_prints_utc_with_fraction_only_when_there_is_one() {
        assert_eq!(
            rfc3339_utc(1_795_561_200.0).as_deref(),
            Some("2026-11-24T23:00:00Z")
        );
        assert_eq!(
            rfc3339_utc(1_795_561_200.5).as_deref(),
            Some("2026-11-24T23:00:00.5Z")
        );
        assert_eq!(
            rfc3339_utc(1_795_561_200.25).as_deref(),
            Some("2026-11-24T23:00:00.25Z")
        );
        assert_eq!(rfc3339_utc(1e15), None);
    }
}
