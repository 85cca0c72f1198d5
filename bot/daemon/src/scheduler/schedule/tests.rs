//! Table tests for schedule parsing and next-run computation, with time zones and DST.

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

fn tz(name: &str) -> Tz {
    parse_timezone(name).expect("test zone")
}

/// Parses `text` at `now` in `zone` and returns the first `count` runs after `now`, as
/// RFC 3339 UTC.
fn runs(
    text: &str,
    kind: Option<ScheduleKind>,
    now: &str,
    zone: &str,
    count: usize,
) -> Vec<String> {
    let zone = tz(zone);
    let now = utc(now);
    let schedule = Schedule::parse(text, kind, now, zone).expect("valid schedule");
    let mut out = Vec::new();
    let mut after = now;
    for _ in 0..count {
        match schedule.next_after(after, zone) {
            Some(next) => {
                out.push(next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                after = next;
            }
            None => break,
        }
    }
    out
}

#[test]
fn kinds_are_guessed_from_the_text() {
    let now = utc("2026-03-01T10:00:00Z");
    for (text, kind) in [
        ("0 9 * * *", ScheduleKind::Cron),
        ("*/5 * * * * *", ScheduleKind::Cron),
        ("@daily", ScheduleKind::Cron),
        ("every 2h", ScheduleKind::Interval),
        ("30m", ScheduleKind::Interval),
        ("1h30m", ScheduleKind::Interval),
        ("every 5 minutes", ScheduleKind::Interval),
        ("every day", ScheduleKind::Interval),
        ("in 10m", ScheduleKind::Once),
        ("2026-03-02T09:00:00+01:00", ScheduleKind::Once),
        ("2026-03-02 09:00", ScheduleKind::Once),
    ] {
        let schedule = Schedule::parse(text, None, now, chrono_tz::UTC)
            .unwrap_or_else(|err| panic!("{text:?}: {err}"));
        assert_eq!(schedule.kind(), kind, "{text:?}");
    }
}

#[test]
fn invalid_schedules_are_refused_with_a_reason() {
    let now = utc("2026-03-01T10:00:00Z");
    for (text, kind, needle) in [
        ("", None, "empty"),
        ("   ", None, "empty"),
        ("61 * * * *", None, "invalid cron expression"),
        ("* * *", None, "3 fields"),
        ("0 9 * * 8", None, "out of range"),
        ("banana", None, "invalid cron expression"),
        (
            "every banana",
            Some(ScheduleKind::Interval),
            "invalid interval",
        ),
        (
            "0 9 * * *",
            Some(ScheduleKind::Interval),
            "invalid interval",
        ),
        ("tomorrow-ish", Some(ScheduleKind::Once), "invalid time"),
        ("every 0s", Some(ScheduleKind::Interval), "invalid interval"),
    ] {
        let err = Schedule::parse(text, kind, now, chrono_tz::UTC)
            .expect_err(text)
            .to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn five_field_cron_counts_weekdays_from_sunday_zero() {
    // 2026-03-02 is a Monday.
    let check = |expr: &str, expected: &[&str]| {
        assert_eq!(
            runs(expr, None, "2026-03-01T12:00:00Z", "UTC", expected.len()),
            expected,
            "{expr}"
        );
    };
    check(
        "0 9 * * 1-5",
        &[
            "2026-03-02T09:00:00Z",
            "2026-03-03T09:00:00Z",
            "2026-03-04T09:00:00Z",
            "2026-03-05T09:00:00Z",
            "2026-03-06T09:00:00Z",
            "2026-03-09T09:00:00Z",
        ],
    );
    check(
        "30 8 * * 0",
        &["2026-03-08T08:30:00Z", "2026-03-15T08:30:00Z"],
    );
    check("30 8 * * 7", &["2026-03-08T08:30:00Z"]);
    check(
        "0 0 * * 5-7",
        &[
            "2026-03-06T00:00:00Z",
            "2026-03-07T00:00:00Z",
            "2026-03-08T00:00:00Z",
            "2026-03-13T00:00:00Z",
        ],
    );
    check(
        "0 12 * * 1,3",
        &["2026-03-02T12:00:00Z", "2026-03-04T12:00:00Z"],
    );
    check("0 12 * * MON", &["2026-03-02T12:00:00Z"]);
    check(
        "*/15 * * * *",
        &["2026-03-01T12:15:00Z", "2026-03-01T12:30:00Z"],
    );
    // Six fields: seconds first.
    check(
        "30 0 9 * * *",
        &["2026-03-02T09:00:30Z", "2026-03-03T09:00:30Z"],
    );
}

#[test]
fn cron_fires_on_the_wall_clock_of_the_zone() {
    // 09:00 in Bucharest is 07:00 UTC in winter (UTC+2) and 06:00 UTC in summer (UTC+3).
    assert_eq!(
        runs(
            "0 9 * * *",
            None,
            "2026-03-27T12:00:00Z",
            "Europe/Bucharest",
            4
        ),
        [
            "2026-03-28T07:00:00Z",
            "2026-03-29T06:00:00Z",
            "2026-03-30T06:00:00Z",
            "2026-03-31T06:00:00Z",
        ]
    );
}

#[test]
fn a_time_skipped_by_spring_forward_fires_when_the_gap_ends() {
    // New York, 2026-03-08: 02:00 jumps to 03:00 (EST -5 to EDT -4).
    assert_eq!(
        runs(
            "30 2 * * *",
            None,
            "2026-03-07T12:00:00Z",
            "America/New_York",
            3
        ),
        [
            "2026-03-08T07:00:00Z", // 02:30 does not exist: 03:00 EDT, when the gap ends
            "2026-03-09T06:30:00Z", // 02:30 EDT
            "2026-03-10T06:30:00Z",
        ]
    );
    // Every quarter hour: the gap's four runs collapse into one at 03:00.
    assert_eq!(
        runs(
            "*/15 * * * *",
            None,
            "2026-03-08T06:40:00Z",
            "America/New_York",
            3
        ),
        [
            "2026-03-08T06:45:00Z", // 01:45 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T07:15:00Z",
        ]
    );
}

#[test]
fn a_time_repeated_by_fall_back_fires_once() {
    // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    assert_eq!(
        runs(
            "30 1 * * *",
            None,
            "2026-10-31T12:00:00Z",
            "America/New_York",
            3
        ),
        [
            "2026-11-01T05:30:00Z", // 01:30 EDT, the first occurrence
            "2026-11-02T06:30:00Z", // 01:30 EST the next day
            "2026-11-03T06:30:00Z",
        ]
    );
    // Starting inside the repeated hour, after the first 01:30 passed: the next is tomorrow.
    assert_eq!(
        runs(
            "30 1 * * *",
            None,
            "2026-11-01T06:10:00Z",
            "America/New_York",
            1
        ),
        ["2026-11-02T06:30:00Z"]
    );
}

#[test]
fn intervals_are_elapsed_time() {
    assert_eq!(
        runs(
            "every 2h",
            None,
            "2026-11-01T04:00:00Z",
            "America/New_York",
            3
        ),
        [
            "2026-11-01T06:00:00Z",
            "2026-11-01T08:00:00Z",
            "2026-11-01T10:00:00Z",
        ]
    );
    for (text, secs) in [
        ("every 2h", 7200),
        ("30m", 1800),
        ("1h30m", 5400),
        ("1h0m0s", 3600),
        ("90s", 90),
        ("every 5 minutes", 300),
        ("every 2 hours and 15 minutes", 8100),
        ("every day", 86_400),
        ("every week", 604_800),
        ("EVERY 1D", 86_400),
    ] {
        assert_eq!(
            parse_interval_text(text),
            Some(Duration::from_secs(secs)),
            "{text}"
        );
    }
    for (secs, text) in [(5400, "1h30m"), (45, "45s"), (86_400 + 60, "1d1m")] {
        assert_eq!(format_duration(Duration::from_secs(secs)), text);
        assert_eq!(parse_duration(text), Some(Duration::from_secs(secs)));
    }
}

#[test]
fn missed_interval_runs_stay_on_the_grid() {
    let schedule = Schedule::parse(
        "every 1h",
        None,
        utc("2026-01-01T00:00:00Z"),
        chrono_tz::UTC,
    )
    .expect("interval");
    let from = utc("2026-01-01T01:00:00Z");
    let check = |now: &str, expected: &str| {
        assert_eq!(
            schedule.next_on_or_after_grid(from, utc(now), chrono_tz::UTC),
            Some(utc(expected)),
            "{now}"
        );
    };
    check("2026-01-01T00:30:00Z", "2026-01-01T02:00:00Z");
    check("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z");
    check("2026-01-01T05:20:00Z", "2026-01-01T06:00:00Z");
    check("2026-01-01T06:00:00Z", "2026-01-01T07:00:00Z");
}

#[test]
fn one_shot_times_resolve_in_the_zone_and_must_be_in_the_future() {
    let now = utc("2026-06-01T10:00:00Z");
    let zone = tz("Europe/Bucharest");
    let at = |text: &str| match Schedule::parse(text, None, now, zone).expect(text) {
        Schedule::Once { at } => at,
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(at("in 10m"), utc("2026-06-01T10:10:00Z"));
    assert_eq!(at("in 2 hours"), utc("2026-06-01T12:00:00Z"));
    assert_eq!(at("2026-06-02 09:00"), utc("2026-06-02T06:00:00Z"));
    assert_eq!(at("2026-06-02T09:00:00Z"), utc("2026-06-02T09:00:00Z"));
    assert_eq!(
        Schedule::parse("10m", Some(ScheduleKind::Once), now, zone)
            .expect("delay")
            .next_after(now, zone),
        Some(utc("2026-06-01T10:10:00Z"))
    );
    // Stored as an absolute time, so a restart does not move it.
    assert_eq!(
        Schedule::parse("in 10m", None, now, zone)
            .expect("once")
            .canonical(zone),
        "2026-06-01T13:10:00+03:00"
    );
    let past = Schedule::parse("2026-05-01 09:00", None, now, zone).expect("parses");
    let err = past
        .check_frequency(now, zone, Duration::from_secs(60))
        .expect_err("past");
    assert!(err.to_string().contains("in the past"), "{err}");
    // A one-shot has one run.
    let once = Schedule::parse("in 10m", None, now, zone).expect("once");
    let first = once.next_after(now, zone).expect("first");
    assert_eq!(once.next_after(first, zone), None);
}

#[test]
fn schedules_that_fire_too_often_or_never_are_refused() {
    let now = utc("2026-01-01T00:00:00Z");
    let min = Duration::from_secs(60);
    let check = |text: &str, ok: bool| {
        let schedule = Schedule::parse(text, None, now, chrono_tz::UTC).expect(text);
        assert_eq!(
            schedule.check_frequency(now, chrono_tz::UTC, min).is_ok(),
            ok,
            "{text}"
        );
    };
    check("every 30s", false);
    check("every 1m", true);
    check("* * * * * *", false);
    check("*/10 * * * * *", false);
    check("* * * * *", true);
    check("0 0 0 1 1 * 2020", false);
}

#[test]
fn canonical_text_round_trips() {
    let now = utc("2026-01-01T00:00:00Z");
    for (text, canonical) in [
        ("0 9 * * 1-5", "0 9 * * 1-5"),
        ("  0   9 * * *  ", "0 9 * * *"),
        ("2h", "every 2h"),
        ("every 90 minutes", "every 1h30m"),
    ] {
        let schedule = Schedule::parse(text, None, now, chrono_tz::UTC).expect(text);
        assert_eq!(schedule.canonical(chrono_tz::UTC), canonical);
        let again = Schedule::parse(canonical, Some(schedule.kind()), now, chrono_tz::UTC)
            .expect(canonical);
        assert_eq!(again.kind(), schedule.kind());
    }
}

#[test]
fn time_zone_names_are_checked() {
    assert!(parse_timezone("Europe/Bucharest").is_ok());
    assert!(parse_timezone("UTC").is_ok());
    assert!(parse_timezone("Mars/Olympus").is_err());
}
