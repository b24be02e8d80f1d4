//! Cron expressions: parsed here so that an error can point at the bad field, searched by the
//! `cron` crate, and turned into instants in a time zone with documented daylight-saving
//! rules.
//!
//! The syntax is the standard crontab's: five fields (minute, hour, day of month, month, day
//! of week with Sunday = 0 or 7), or six with seconds first, or one of `@yearly`
//! (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly`. A field is a
//! comma-separated list of `*`, `N`, `N-M`, each optionally followed by `/STEP`; months and
//! days of the week may be given by their English names (`JAN`, `MON`). As in Vixie cron,
//! when both day fields are restricted (neither starts with `*` or `?`), a day matches if
//! either field matches.
//!
//! Fire times are wall-clock times in the schedule's zone. A time the clock skips (the hour
//! lost when daylight saving starts) fires once, at the first instant after the jump; a time
//! the clock shows twice (the hour repeated when it ends) fires once, the first time.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Idempotency keys with this prefix belong to schedules.
pub const FIRE_KEY_PREFIX: &str = "cron:";

/// What happens to fires missed while no scheduler ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// They are dropped; the schedule goes on from its next fire.
    Skip,
    /// The latest of them runs once, late.
    #[default]
    Latest,
}

impl FromStr for CatchUp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "skip" => Ok(Self::Skip),
            "latest" => Ok(Self::Latest),
            other => Err(format!("unknown catch-up `{other}` (skip or latest)")),
        }
    }
}

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    source: String,
    /// One schedule, or two whose union is meant (day of month OR day of week).
    schedules: Vec<cron::Schedule>,
}

/// Why an expression was refused: the 1-based column where the problem starts, the field
/// it is in, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}{}: {message}", .field.map(|field| format!(" ({field})")).unwrap_or_default())]
pub struct CronError {
    /// Where the problem starts, counting characters from 1.
    pub column: usize,
    /// The field, when the problem is in one.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

/// One field's name, range and value names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` on.
    names: &'static [&'static str],
    /// Whether `?` may stand for `*`.
    any: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    any: false,
};
const MINUTE: Field = Field {
    name: "minute",
    ..SECOND
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    any: false,
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    any: true,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    any: false,
};
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    any: true,
};

/// A field's values, or every value (`*`).
enum Values {
    All,
    Some(BTreeSet<u32>),
}

impl CronExpr {
    /// Parses `text`; the error names the column and the field.
    // Long because the shorthands, the field count and each field's parse share the column
    // bookkeeping that lets an error point at the character it is about.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let trimmed = text.trim();
        let offset = text.len() - text.trim_start().len();
        let expanded = match trimmed.strip_prefix('@') {
            Some(name) => Some(shorthand(name).ok_or_else(|| CronError {
                column: offset + 1,
                field: None,
                message: format!(
                    "unknown shorthand `{trimmed}` (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
                ),
            })?),
            None => None,
        };
        let body = expanded.unwrap_or(trimmed);
        // Columns point into `text`; a shorthand's errors (there are none) would point at it.
        let tokens: Vec<(usize, &str)> = split_fields(body)
            .into_iter()
            .map(|(at, token)| {
                (
                    if expanded.is_some() {
                        offset
                    } else {
                        offset + at
                    },
                    token,
                )
            })
            .collect();
        let fields: &[Field] = match tokens.len() {
            5 => &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
            6 => &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
            0 => {
                return Err(CronError {
                    column: 1,
                    field: None,
                    message: "the expression is empty".into(),
                });
            }
            found => {
                return Err(CronError {
                    column: offset + 1,
                    field: None,
                    message: format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), found {found}"
                    ),
                });
            }
        };
        let mut parsed = Vec::with_capacity(6);
        for (field, (at, token)) in fields.iter().zip(&tokens) {
            parsed.push(parse_field(field, token, *at)?);
        }
        if tokens.len() == 5 {
            parsed.insert(0, Values::Some(BTreeSet::from([0])));
        }
        let starred = |token: &str| token.starts_with('*') || token.starts_with('?');
        let (dom_token, dow_token) = (tokens[tokens.len() - 3].1, tokens[tokens.len() - 1].1);
        let rendered: Vec<String> = parsed
            .iter()
            .enumerate()
            .map(|(index, values)| render(values, index == 5))
            .collect();
        let with_days = |dom: &str, dow: &str| {
            let mut fields = rendered.clone();
            fields[3] = dom.to_owned();
            fields[5] = dow.to_owned();
            cron::Schedule::from_str(&fields.join(" "))
        };
        let schedules = match starred(dom_token) || starred(dow_token) {
            true => vec![with_days(&rendered[3], &rendered[5])],
            false => vec![with_days(&rendered[3], "*"), with_days("*", &rendered[5])],
        };
        let schedules = schedules
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CronError {
                column: offset + 1,
                field: None,
                message: err.to_string(),
            })?;
        let expr = Self {
            source: trimmed.to_owned(),
            schedules,
        };
        let since = DateTime::<Utc>::from_naive_utc_and_offset(NaiveDateTime::default(), Utc);
        if expr.naive_after(since.naive_utc()).next().is_none() {
            let (at, _) = tokens[tokens.len() - 3];
            return Err(CronError {
                column: at + 1,
                field: Some(DAY_OF_MONTH.name),
                message: format!("`{trimmed}` never fires: no such day in the months it names"),
            });
        }
        Ok(expr)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fire instants after `after` in zone `zone`, earliest first, each later than the one
    /// before.
    pub fn fires_after(
        &self,
        zone: Tz,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let start = after.with_timezone(&zone).naive_local();
        let mut last = after;
        self.naive_after(start).filter_map(move |naive| {
            let instant = instant_of(zone, naive)?;
            (instant > last).then(|| {
                last = instant;
                instant
            })
        })
    }

    /// The latest fire instant at or before `at`.
    pub fn latest_at_or_before(&self, zone: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // A wall-clock time up to a repeated hour later than `at`'s can still be earlier
        // than `at` (its first occurrence), so the search starts a little later.
        let start = at.with_timezone(&zone).naive_local() + TimeDelta::hours(3);
        let start = DateTime::<Utc>::from_naive_utc_and_offset(start, Utc);
        let mut candidates: Vec<_> = self
            .schedules
            .iter()
            .filter_map(|schedule| {
                schedule
                    .after(&start)
                    .rev()
                    .filter_map(|naive| instant_of(zone, naive.naive_utc()))
                    .find(|instant| *instant <= at)
            })
            .collect();
        candidates.sort();
        candidates.pop()
    }

    /// Wall-clock times after `start`, earliest first, from the union of the schedules.
    fn naive_after(&self, start: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        let start = DateTime::<Utc>::from_naive_utc_and_offset(start, Utc);
        let mut streams: Vec<_> = self
            .schedules
            .iter()
            .map(|schedule| schedule.after(&start).map(|at| at.naive_utc()).peekable())
            .collect();
        std::iter::from_fn(move || {
            let next = streams
                .iter_mut()
                .filter_map(|stream| stream.peek().copied())
                .min()?;
            for stream in &mut streams {
                if stream.peek() == Some(&next) {
                    stream.next();
                }
            }
            Some(next)
        })
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A time zone name that is not an IANA one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone `{0}`: use an IANA name like `Europe/Paris` or `UTC`")]
pub struct UnknownZone(pub String);

/// Parses an IANA time zone name (`Europe/Paris`, `UTC`).
pub fn parse_zone(name: &str) -> Result<Tz, UnknownZone> {
    name.parse::<Tz>().map_err(|_| UnknownZone(name.to_owned()))
}

/// The instant a wall-clock time in `zone` stands for: its first occurrence, or for a time
/// the clock skips, the first minute after the jump.
fn instant_of(zone: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    let first = |naive: NaiveDateTime| zone.from_local_datetime(&naive).earliest();
    if let Some(instant) = first(naive) {
        return Some(instant.with_timezone(&Utc));
    }
    let minute = naive.with_second(0)?.with_nanosecond(0)?;
    // Gaps are an hour or two; the longest on record skipped a whole day.
    (1..=24 * 60 + 1)
        .find_map(|minutes| first(minute + TimeDelta::minutes(minutes)))
        .map(|instant| instant.with_timezone(&Utc))
}

fn shorthand(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => return None,
    })
}

/// The whitespace-separated fields of `text`, each with its byte offset.
fn split_fields(text: &str) -> Vec<(usize, &str)> {
    let mut fields = Vec::new();
    let mut start = None;
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(at),
            (true, Some(from)) => {
                fields.push((from, &text[from..at]));
                start = None;
            }
            _ => {}
        }
    }
    fields
}

/// Parses one field that starts at byte `at` of the expression.
fn parse_field(field: &Field, token: &str, at: usize) -> Result<Values, CronError> {
    let error = |offset: usize, message: String| CronError {
        column: at + offset + 1,
        field: Some(field.name),
        message,
    };
    if token == "*" || (field.any && token == "?") {
        return Ok(Values::All);
    }
    let mut values = BTreeSet::new();
    let mut offset = 0;
    for item in token.split(',') {
        if item.is_empty() {
            return Err(error(offset, format!("empty list item in `{token}`")));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step_at = offset + range.len() + 1;
                let step = step
                    .parse::<u32>()
                    .ok()
                    .filter(|step| *step > 0)
                    .ok_or_else(|| {
                        error(
                            step_at,
                            format!("step `{step}` is not a positive whole number"),
                        )
                    })?;
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" || (field.any && range == "?") {
            (field.min, field.max)
        } else {
            match range.split_once('-') {
                Some((low, high)) => {
                    let low_value = value(field, low).map_err(|m| error(offset, m))?;
                    let high_value =
                        value(field, high).map_err(|m| error(offset + low.len() + 1, m))?;
                    if low_value > high_value {
                        return Err(error(offset, format!("range `{range}` runs backwards")));
                    }
                    (low_value, high_value)
                }
                // `N/STEP` means from N to the end of the field.
                None => {
                    let low = value(field, range).map_err(|m| error(offset, m))?;
                    (low, if step.is_some() { field.max } else { low })
                }
            }
        };
        values.extend((low..=high).step_by(step.unwrap_or(1) as usize));
        offset += item.len() + 1;
    }
    Ok(Values::Some(values))
}

/// One value of `field`, by number or name.
fn value(field: &Field, text: &str) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|name| *name == lower) {
        return Ok(field.min + index as u32);
    }
    let number = text.parse::<u32>().map_err(|_| match field.names {
        [] => format!("`{text}` is not a number"),
        names => format!(
            "`{text}` is neither a number nor a name ({})",
            names.join(", ")
        ),
    })?;
    if !(field.min..=field.max).contains(&number) {
        return Err(format!(
            "{number} is out of range {}-{}",
            field.min, field.max
        ));
    }
    Ok(number)
}

/// A field in the `cron` crate's syntax: days of the week count from Sunday = 1 there.
fn render(values: &Values, day_of_week: bool) -> String {
    match values {
        Values::All => "*".into(),
        Values::Some(values) => {
            let values: BTreeSet<u32> = match day_of_week {
                true => values.iter().map(|day| day % 7 + 1).collect(),
                false => values.clone(),
            };
            let list: Vec<String> = values.iter().map(u32::to_string).collect();
            list.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(expr: &str, zone: &str, after: &str, count: usize) -> Vec<String> {
        let expr = CronExpr::parse(expr).unwrap();
        let zone = parse_zone(zone).unwrap();
        expr.fires_after(zone, utc(after))
            .take(count)
            .map(|at| at.with_timezone(&zone).to_rfc3339())
            .collect()
    }

    #[test]
    fn five_fields_fire_on_the_minute_with_sunday_as_zero() {
        assert_eq!(
            next("30 9 * * 0", "UTC", "2026-11-22T00:00:00Z", 2),
            ["2026-11-22T09:30:00+00:00", "2026-11-29T09:30:00+00:00"]
        );
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-11-22T00:00:00Z", 1),
            ["2026-11-29T00:00:00+00:00"]
        );
        assert_eq!(
            next("*/20 * * * *", "UTC", "2026-11-22T10:05:00Z", 3),
            [
                "2026-11-22T10:20:00+00:00",
                "2026-11-22T10:40:00+00:00",
                "2026-11-22T11:00:00+00:00"
            ]
        );
    }

    #[test]
    fn six_fields_have_seconds_and_names_work() {
        assert_eq!(
            next("*/30 * * * * MON-FRI", "UTC", "2026-11-21T23:59:00Z", 2),
            ["2026-11-23T00:00:00+00:00", "2026-11-23T00:00:30+00:00"]
        );
        assert_eq!(
            next("0 0 12 1 jan,Jul *", "UTC", "2026-02-01T00:00:00Z", 1),
            ["2026-07-01T12:00:00+00:00"]
        );
    }

    #[test]
    fn shorthands() {
        assert_eq!(
            next("@weekly", "UTC", "2026-11-22T00:00:00Z", 1),
            ["2026-11-29T00:00:00+00:00"]
        );
        assert_eq!(
            next("@yearly", "UTC", "2026-11-22T00:00:00Z", 1),
            ["2027-01-01T00:00:00+00:00"]
        );
        assert_eq!(
            next("@hourly", "UTC", "2026-11-22T00:00:00Z", 1),
            ["2026-11-22T01:00:00+00:00"]
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday: Friday 2026-11-27 comes before 2026-12-13.
        assert_eq!(
            next("0 0 13 * 5", "UTC", "2026-11-14T00:00:00Z", 3),
            [
                "2026-11-20T00:00:00+00:00",
                "2026-11-27T00:00:00+00:00",
                "2026-12-04T00:00:00+00:00"
            ]
        );
        // A day field starting with `*` makes it both: every day and a Friday.
        assert_eq!(
            next("0 0 */1 * 5", "UTC", "2026-11-14T00:00:00Z", 1),
            ["2026-11-20T00:00:00+00:00"]
        );
    }

    #[test]
    fn zones_shift_the_wall_clock() {
        assert_eq!(
            next("0 9 * * *", "Europe/Paris", "2026-11-22T00:00:00Z", 1),
            ["2026-11-22T09:00:00+01:00"]
        );
    }

    #[test]
    fn the_skipped_hour_fires_once_after_the_jump() {
        // New York skips 02:00-03:00 on 2026-03-08.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:30:00-04:00",
                "2026-03-10T02:30:00-04:00"
            ]
        );
        // Every 15 minutes: 02:00, 02:15, 02:30, 02:45 become one fire at 03:00.
        assert_eq!(
            next(
                "*/15 * * * *",
                "America/New_York",
                "2026-03-08T06:40:00Z",
                3
            ),
            [
                "2026-03-08T01:45:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T03:15:00-04:00"
            ]
        );
    }

    #[test]
    fn the_repeated_hour_fires_once() {
        // New York repeats 01:00-02:00 on 2026-11-01.
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        // From inside the second 01:00-02:00, the 01:30 already fired.
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z", 1),
            ["2026-11-02T01:30:00-05:00"]
        );
    }

    #[test]
    fn latest_at_or_before_agrees_with_fires_after() {
        let zone = parse_zone("America/New_York").unwrap();
        let windows = [
            ("2026-02-25T00:00:00Z", "2026-03-15T00:00:00Z"),
            ("2026-10-25T00:00:00Z", "2026-11-10T00:00:00Z"),
        ];
        for (text, (from, to)) in ["30 1 * * *", "*/15 * * * *", "30 2 * * *", "0 0 13 * 5"]
            .into_iter()
            .flat_map(|text| windows.map(|window| (text, window)))
        {
            let expr = CronExpr::parse(text).unwrap();
            let fires: Vec<_> = expr
                .fires_after(zone, utc(from))
                .take_while(|at| *at < utc(to))
                .collect();
            for pair in fires.windows(2) {
                let between = pair[0] + (pair[1] - pair[0]) / 2;
                assert_eq!(
                    expr.latest_at_or_before(zone, between),
                    Some(pair[0]),
                    "{text}"
                );
                assert_eq!(
                    expr.latest_at_or_before(zone, pair[1]),
                    Some(pair[1]),
                    "{text}"
                );
            }
        }
    }

    fn refused(text: &str) -> CronError {
        CronExpr::parse(text).unwrap_err()
    }

    #[test]
    fn errors_point_at_the_field() {
        let err = refused("0 25 * * *");
        assert_eq!((err.column, err.field), (3, Some("hour")));
        assert_eq!(err.to_string(), "column 3 (hour): 25 is out of range 0-23");
        let err = refused("0 0 * * MON-FOO");
        assert_eq!((err.column, err.field), (13, Some("day of week")));
        assert!(err.message.contains("`FOO`"), "{err}");
        let err = refused("*/0 * * * *");
        assert_eq!((err.column, err.field), (3, Some("minute")));
        let err = refused("0 0 5-1 * *");
        assert_eq!((err.column, err.field), (5, Some("day of month")));
        assert!(err.message.contains("backwards"), "{err}");
        let err = refused("1,,2 * * * *");
        assert_eq!((err.column, err.field), (3, Some("minute")));
        let err = refused("* * * *");
        assert!(err.message.contains("found 4"), "{err}");
        let err = refused("@reboot");
        assert!(err.message.contains("@reboot"), "{err}");
        let err = refused("0 0 30 2 *");
        assert_eq!(err.field, Some("day of month"));
        assert!(err.message.contains("never fires"), "{err}");
        assert!(refused("  0 61 * * *").to_string().starts_with("column 5 "));
    }

    #[test]
    fn unknown_zones_are_named() {
        let err = parse_zone("Mars/Olympus").unwrap_err().to_string();
        assert!(err.contains("`Mars/Olympus`"), "{err}");
    }
}
