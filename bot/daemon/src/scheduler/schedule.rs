//! Schedules of tasks: parsing what a person or an agent wrote (a cron expression, an interval
//! such as "every 2h", a one-shot time such as "in 10m" or an RFC 3339 time) and computing the
//! next run. Pure: `now` and the time zone are arguments, so every rule is a table test.
//!
//! Time zones: cron fields are wall-clock times in the task's zone. A wall-clock time that
//! happens twice (the autumn DST change) fires once, at its first occurrence; one that does
//! not exist (the spring change) fires when the gap ends, as classic cron does. Intervals are
//! elapsed time and ignore DST.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// What kind of schedule a task has (the `type` of the Go Loop's `schedule_task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Cron,
    Interval,
    Once,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Cron => "cron",
            ScheduleKind::Interval => "interval",
            ScheduleKind::Once => "once",
        }
    }

    pub fn parse(text: &str) -> Option<ScheduleKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cron" => Some(ScheduleKind::Cron),
            "interval" | "every" | "recurring" => Some(ScheduleKind::Interval),
            "once" | "one-shot" | "oneshot" | "at" => Some(ScheduleKind::Once),
            _ => None,
        }
    }
}

/// Why a schedule was refused. The text is shown to the agent or the person who wrote it, so
/// it says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule is empty")]
    Empty,
    #[error(
        "invalid cron expression {expr:?}: {reason} (use 5 fields `min hour day month weekday`, e.g. `0 9 * * 1-5`, or 6 with seconds first)"
    )]
    Cron { expr: String, reason: String },
    #[error("invalid interval {text:?}: use e.g. `every 2h`, `30m`, `1h30m` or `every 5 minutes`")]
    Interval { text: String },
    #[error(
        "invalid time {text:?}: use `in 10m`, an RFC 3339 time such as `2026-01-02T09:00:00+01:00`, or `2026-01-02 09:00` (in {zone})"
    )]
    Time { text: String, zone: String },
    #[error("{at} is in the past (now is {now}): a one-shot task must be in the future")]
    InThePast { at: String, now: String },
    #[error("the schedule {text:?} never fires")]
    NeverFires { text: String },
    #[error("runs would be {every_sec}s apart; the shortest allowed is {min_sec}s")]
    TooFrequent { every_sec: u64, min_sec: u64 },
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Bucharest)")]
    TimeZone(String),
    #[error("unknown schedule type {0:?}: use cron, interval or once")]
    Kind(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Wall-clock times in the task's zone; `expr` is what the user wrote (5, 6 or 7 fields).
    Cron {
        expr: String,
        schedule: Box<cron::Schedule>,
    },
    /// Every `every`, counted from the previous scheduled time.
    Interval { every: Duration },
    /// Once, at this instant.
    Once { at: DateTime<Utc> },
}

/// Parses a time zone name.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

impl Schedule {
    /// Parses `text`. `kind` is what the caller said it is (None: guess from the text).
    /// Relative and local one-shot times are resolved against `now` in `tz`, so what is stored
    /// ([`Schedule::canonical`]) means the same after a restart.
    pub fn parse(
        text: &str,
        kind: Option<ScheduleKind>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let kind = kind.unwrap_or_else(|| guess_kind(text));
        match kind {
            ScheduleKind::Cron => parse_cron(text),
            ScheduleKind::Interval => parse_interval_text(text)
                .map(|every| Schedule::Interval { every })
                .ok_or_else(|| ScheduleError::Interval {
                    text: text.to_owned(),
                }),
            ScheduleKind::Once => parse_once(text, now, tz).map(|at| Schedule::Once { at }),
        }
    }

    pub fn kind(&self) -> ScheduleKind {
        match self {
            Schedule::Cron { .. } => ScheduleKind::Cron,
            Schedule::Interval { .. } => ScheduleKind::Interval,
            Schedule::Once { .. } => ScheduleKind::Once,
        }
    }

    /// The text stored for this schedule: cron as written, intervals as `every 1h30m`,
    /// one-shot times as RFC 3339 in the task's zone.
    pub fn canonical(&self, tz: Tz) -> String {
        match self {
            Schedule::Cron { expr, .. } => expr.clone(),
            Schedule::Interval { every } => format!("every {}", format_duration(*every)),
            Schedule::Once { at } => at.with_timezone(&tz).to_rfc3339(),
        }
    }

    /// The first run strictly after `after`, or None when the schedule is exhausted.
    ///
    /// For an interval, `after` is the previous scheduled time (or the creation time), so
    /// runs do not drift by the scheduler's tick.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { schedule, .. } => next_cron(schedule, after, tz),
            Schedule::Interval { every } => {
                let every = chrono::Duration::from_std(*every).ok()?;
                after.checked_add_signed(every)
            }
            Schedule::Once { at } => (*at > after).then_some(*at),
        }
    }

    /// The first run strictly after `now`, skipping any runs between `from` and `now`
    /// (what is left after a missed or skipped run). Intervals stay on their grid.
    pub fn next_on_or_after_grid(
        &self,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval { every } => {
                let step = i64::try_from(every.as_millis()).ok()?.max(1);
                let behind = (now - from).num_milliseconds();
                let steps = if behind < 0 { 1 } else { behind / step + 1 };
                from.checked_add_signed(chrono::Duration::milliseconds(steps.checked_mul(step)?))
            }
            _ => self.next_after(now.max(from), tz),
        }
    }

    /// Refuses schedules that fire more often than `min` (a runaway agent must not be able to
    /// start a turn every second) or never fire at all.
    pub fn check_frequency(
        &self,
        now: DateTime<Utc>,
        tz: Tz,
        min: Duration,
    ) -> Result<(), ScheduleError> {
        let gap = match self {
            Schedule::Interval { every } => *every,
            Schedule::Cron { expr, .. } => {
                let first = self
                    .next_after(now, tz)
                    .ok_or_else(|| ScheduleError::NeverFires { text: expr.clone() })?;
                match self.next_after(first, tz) {
                    Some(second) => (second - first).to_std().unwrap_or_default(),
                    None => return Ok(()),
                }
            }
            Schedule::Once { at } => {
                if *at <= now {
                    return Err(ScheduleError::InThePast {
                        at: at.with_timezone(&tz).to_rfc3339(),
                        now: now.with_timezone(&tz).to_rfc3339(),
                    });
                }
                return Ok(());
            }
        };
        if gap < min {
            return Err(ScheduleError::TooFrequent {
                every_sec: gap.as_secs(),
                min_sec: min.as_secs(),
            });
        }
        Ok(())
    }
}

/// Guesses the kind from the text when the caller did not say.
fn guess_kind(text: &str) -> ScheduleKind {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("in ") || parse_absolute(text).is_some() {
        ScheduleKind::Once
    } else if lower.starts_with('@') {
        ScheduleKind::Cron
    } else if parse_interval_text(text).is_some() {
        ScheduleKind::Interval
    } else {
        ScheduleKind::Cron
    }
}

/// `every 2h`, `2h`, `1h30m`, `90s`, `every 5 minutes`, `every day`, Go's `1h0m0s`.
pub fn parse_interval_text(text: &str) -> Option<Duration> {
    let lower = text.trim().to_ascii_lowercase();
    let rest = lower.strip_prefix("every").map(str::trim).unwrap_or(&lower);
    // "every day", "every hour": one unit.
    if let Some(unit) = unit_seconds(rest) {
        return Some(Duration::from_secs(unit));
    }
    parse_duration(rest)
}

/// A sequence of `<number><unit>` pairs, spaces allowed: `1h30m`, `2 hours`, `45 sec`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = unit_seconds(&rest[..unit_len])?;
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = rest[unit_len..].trim_start_matches([' ', ',']);
        rest = rest.strip_prefix("and ").unwrap_or(rest).trim_start();
    }
    (total > 0).then(|| Duration::from_secs(total))
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    })
}

/// Formats a duration the way [`parse_duration`] reads it: `1h30m`, `45s`, `2d`.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

fn parse_once(text: &str, now: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    let lower = text.to_ascii_lowercase();
    let relative = lower.strip_prefix("in ").unwrap_or(&lower);
    if let Some(delay) = parse_duration(relative) {
        let delay = chrono::Duration::from_std(delay).map_err(|_| ScheduleError::Time {
            text: text.to_owned(),
            zone: tz.name().to_owned(),
        })?;
        return Ok(now + delay);
    }
    match parse_absolute(text) {
        Some(Absolute::Instant(at)) => Ok(at),
        Some(Absolute::Local(naive)) => Ok(resolve_local(naive, tz)),
        None => Err(ScheduleError::Time {
            text: text.to_owned(),
            zone: tz.name().to_owned(),
        }),
    }
}

enum Absolute {
    Instant(DateTime<Utc>),
    Local(NaiveDateTime),
}

fn parse_absolute(text: &str) -> Option<Absolute> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(Absolute::Instant(at.with_timezone(&Utc)));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Absolute::Local(naive));
        }
    }
    None
}

/// A wall-clock time in `tz` as an instant: the first occurrence of a repeated time, the end
/// of the gap for a time that does not exist.
fn resolve_local(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward a minute at a time to the first valid wall-clock time; DST gaps
            // are at most a few hours.
            let mut probe = naive;
            for _ in 0..(24 * 60) {
                probe += chrono::Duration::minutes(1);
                if let Some(at) = tz.from_local_datetime(&probe).earliest() {
                    let at = at.with_timezone(&Utc);
                    // Probes keep the seconds of `naive`; the gap ends on a whole minute.
                    let seconds = naive.and_utc().timestamp().rem_euclid(60);
                    return at - chrono::Duration::seconds(seconds);
                }
            }
            Utc.from_utc_datetime(&naive)
        }
    }
}

/// Cron expressions from people have 5 fields and count weekdays from 0 = Sunday; the cron
/// crate wants seconds first and counts 1 = Sunday. Weekday numbers are turned into names,
/// which mean the same to both.
fn parse_cron(text: &str) -> Result<Schedule, ScheduleError> {
    let error = |reason: String| ScheduleError::Cron {
        expr: text.to_owned(),
        reason,
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    let normalised = if text.starts_with('@') {
        text.to_owned()
    } else {
        match fields.len() {
            5 => {
                let weekday = weekday_names(fields[4]).map_err(error)?;
                format!(
                    "0 {} {} {} {} {weekday}",
                    fields[0], fields[1], fields[2], fields[3]
                )
            }
            6 | 7 => {
                let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
                fields[5] = weekday_names(&fields[5]).map_err(error)?;
                fields.join(" ")
            }
            n => return Err(error(format!("it has {n} fields"))),
        }
    };
    let schedule = cron::Schedule::from_str(&normalised).map_err(|err| error(err.to_string()))?;
    Ok(Schedule::Cron {
        expr: fields.join(" "),
        schedule: Box::new(schedule),
    })
}

const WEEKDAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

/// Rewrites numeric weekdays (0-7, both 0 and 7 meaning Sunday) as names, keeping `*`, `?`,
/// names and steps. A range ending on 7 (`5-7`) is split, since names do not wrap, and a
/// stepped single day (`1/2`) becomes a range to Saturday, which is what it means.
fn weekday_names(field: &str) -> Result<String, String> {
    let number = |text: &str| -> Result<Option<usize>, String> {
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
            return Ok(None);
        }
        match text.parse::<usize>() {
            Ok(n) if n < WEEKDAYS.len() => Ok(Some(n)),
            _ => Err(format!("weekday {text} is out of range 0-7")),
        }
    };
    let mut parts = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let rewritten = match range.split_once('-') {
            Some((start, end)) => match (number(start)?, number(end)?) {
                (Some(0), Some(7)) => "SUN-SAT".to_owned(),
                (Some(s), Some(7)) if s != 7 && step.is_none() => {
                    format!("{}-SAT,SUN", WEEKDAYS[s])
                }
                (Some(s), Some(e)) => format!("{}-{}", WEEKDAYS[s], WEEKDAYS[e]),
                _ => range.to_owned(),
            },
            None => match number(range)? {
                Some(n) if step.is_some() => format!("{}-SAT", WEEKDAYS[n]),
                Some(n) => WEEKDAYS[n].to_owned(),
                None => range.to_owned(),
            },
        };
        parts.push(match step {
            Some(step) => format!("{rewritten}/{step}"),
            None => rewritten,
        });
    }
    Ok(parts.join(","))
}

/// The next wall-clock match in `tz` strictly after `after`. The cron crate walks wall-clock
/// fields; it is given the zone's wall clock as if it were UTC (no gaps, no repeats), and each
/// candidate is then placed in the real zone.
fn next_cron(schedule: &cron::Schedule, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let wall = Utc.from_utc_datetime(&after.with_timezone(&tz).naive_local());
    // The wall clock repeats an hour in autumn: start an hour earlier so a time in the
    // repeated hour is not missed, and keep only candidates after `after`.
    let start = wall - chrono::Duration::hours(2);
    for candidate in schedule.after(&start).take(10_000) {
        let at = resolve_local(candidate.naive_utc(), tz);
        if at > after {
            // A repeated wall-clock time resolves to its first occurrence, which may be
            // before `after`; then it already fired and the loop moves on.
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests;
