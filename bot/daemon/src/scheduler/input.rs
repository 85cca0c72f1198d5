//! From a create or update request to what is stored. Everything is checked before anything
//! is written: a bad cron expression, a time in the past or an empty prompt is refused with a
//! message the agent (or person) can act on, and nothing is stored.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::schedule::{Schedule, ScheduleError, ScheduleKind, parse_timezone};
use loop_store::{NewTask, TaskChange, TaskRecord};

/// Longest prompt a task may carry (a chat message has the same limit).
pub const MAX_PROMPT_CHARS: usize = loop_store::MAX_MESSAGE_CHARS;
/// Longest task name.
pub const MAX_NAME_CHARS: usize = 100;

/// Why a request was refused. Shown as is to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskInputError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("the prompt is empty: say what the task should do when it runs")]
    EmptyPrompt,
    #[error("the prompt has {0} characters; at most {MAX_PROMPT_CHARS} are allowed")]
    PromptTooLong(usize),
    #[error("the name has {0} characters; at most {MAX_NAME_CHARS} are allowed")]
    NameTooLong(usize),
    #[error("nothing to change: give enabled, schedule, prompt or name")]
    NothingToChange,
    #[error("the one-shot time of this task has passed; give a new schedule to enable it again")]
    OnceExpired,
}

/// A request to create a task, as it arrives (already authenticated and scoped to a channel).
#[derive(Debug, Clone, Default)]
pub struct CreateTaskInput {
    pub schedule: String,
    /// `cron`, `interval` or `once`; guessed from the schedule when absent.
    pub kind: Option<String>,
    pub prompt: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub created_by: Option<String>,
}

/// A request to change a task; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UpdateTaskInput {
    pub enabled: Option<bool>,
    pub schedule: Option<String>,
    pub kind: Option<String>,
    pub prompt: Option<String>,
    pub name: Option<String>,
}

fn parse_kind(kind: Option<&str>) -> Result<Option<ScheduleKind>, TaskInputError> {
    match kind.map(str::trim).filter(|k| !k.is_empty()) {
        None => Ok(None),
        Some(text) => ScheduleKind::parse(text)
            .map(Some)
            .ok_or_else(|| ScheduleError::Kind(text.to_owned()).into()),
    }
}

fn check_prompt(prompt: &str) -> Result<String, TaskInputError> {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        return Err(TaskInputError::EmptyPrompt);
    }
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(TaskInputError::PromptTooLong(chars));
    }
    Ok(prompt.to_owned())
}

fn check_name(name: Option<&str>) -> Result<Option<String>, TaskInputError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(TaskInputError::NameTooLong(chars));
    }
    Ok(Some(name.to_owned()))
}

/// A parsed, checked schedule and its first run after `now`.
fn plan_schedule(
    text: &str,
    kind: Option<ScheduleKind>,
    now: DateTime<Utc>,
    tz: Tz,
    min_interval: Duration,
) -> Result<(Schedule, DateTime<Utc>), TaskInputError> {
    let schedule = Schedule::parse(text, kind, now, tz)?;
    schedule.check_frequency(now, tz, min_interval)?;
    let first = schedule
        .next_after(now, tz)
        .ok_or_else(|| ScheduleError::NeverFires {
            text: text.to_owned(),
        })?;
    Ok((schedule, first))
}

/// Checks a create request and returns the row to store.
pub fn plan_new_task(
    channel_key: &str,
    input: &CreateTaskInput,
    now: DateTime<Utc>,
    default_tz: Tz,
    min_interval: Duration,
) -> Result<NewTask, TaskInputError> {
    let prompt = check_prompt(&input.prompt)?;
    let name = check_name(input.name.as_deref())?;
    let tz = match input
        .timezone
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(name) => parse_timezone(name)?,
        None => default_tz,
    };
    let kind = parse_kind(input.kind.as_deref())?;
    let (schedule, first) = plan_schedule(&input.schedule, kind, now, tz, min_interval)?;
    Ok(NewTask {
        channel_key: channel_key.to_owned(),
        name,
        kind: schedule.kind().as_str().to_owned(),
        schedule: schedule.canonical(tz),
        prompt,
        timezone: tz.name().to_owned(),
        next_run_at: first.timestamp_millis(),
        created_by: input.created_by.clone(),
    })
}

/// Checks an update request against the task as stored and returns the change to apply.
/// Enabling a task whose next run has passed moves it to its next run after `now`.
pub fn plan_task_change(
    task: &TaskRecord,
    input: &UpdateTaskInput,
    now: DateTime<Utc>,
    min_interval: Duration,
) -> Result<TaskChange, TaskInputError> {
    if input.enabled.is_none()
        && input.schedule.is_none()
        && input.prompt.is_none()
        && input.name.is_none()
        && input.kind.is_none()
    {
        return Err(TaskInputError::NothingToChange);
    }
    let tz = parse_timezone(&task.timezone).unwrap_or(chrono_tz::UTC);
    let mut change = TaskChange {
        enabled: input.enabled,
        ..Default::default()
    };
    if let Some(prompt) = &input.prompt {
        change.prompt = Some(check_prompt(prompt)?);
    }
    if let Some(name) = &input.name {
        // An empty name clears it.
        change.name = Some(check_name(Some(name))?.unwrap_or_default());
    }
    let kind = parse_kind(input.kind.as_deref())?;
    if input.schedule.is_some() || kind.is_some() {
        let text = input.schedule.as_deref().unwrap_or(&task.schedule);
        let (schedule, first) = plan_schedule(text, kind, now, tz, min_interval)?;
        change.schedule = Some((schedule.kind().as_str().to_owned(), schedule.canonical(tz)));
        change.next_run_at = Some(Some(first.timestamp_millis()));
    } else if input.enabled == Some(true) {
        let due_passed = task
            .next_run_at
            .is_none_or(|next| next <= now.timestamp_millis());
        if due_passed {
            let schedule =
                Schedule::parse(&task.schedule, ScheduleKind::parse(&task.kind), now, tz)?;
            let from = task
                .next_run_at
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .unwrap_or(now);
            let next = schedule
                .next_on_or_after_grid(from, now, tz)
                .ok_or(TaskInputError::OnceExpired)?;
            change.next_run_at = Some(Some(next.timestamp_millis()));
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0)
            .single()
            .expect("time")
    }

    fn create(schedule: &str, prompt: &str) -> CreateTaskInput {
        CreateTaskInput {
            schedule: schedule.to_owned(),
            prompt: prompt.to_owned(),
            ..Default::default()
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn good_requests_become_rows() {
        let task = plan_new_task(
            "local:a",
            &CreateTaskInput {
                name: Some("  standup ".into()),
                ..create("0 9 * * 1-5", " post the standup ")
            },
            now(),
            parse_timezone("Europe/Bucharest").expect("tz"),
            MIN,
        )
        .expect("valid");
        assert_eq!(task.kind, "cron");
        assert_eq!(task.schedule, "0 9 * * 1-5");
        assert_eq!(task.prompt, "post the standup");
        assert_eq!(task.name.as_deref(), Some("standup"));
        assert_eq!(task.timezone, "Europe/Bucharest");
        // 2026-06-01 is a Monday; 09:00 in Bucharest (UTC+3) has passed at 10:00 UTC.
        assert_eq!(
            task.next_run_at,
            Utc.with_ymd_and_hms(2026, 6, 2, 6, 0, 0)
                .single()
                .expect("t")
                .timestamp_millis()
        );
        let task = plan_new_task(
            "local:a",
            &create("every 2h", "x"),
            now(),
            chrono_tz::UTC,
            MIN,
        )
        .expect("interval");
        assert_eq!(
            (task.kind.as_str(), task.schedule.as_str()),
            ("interval", "every 2h")
        );
        assert_eq!(task.next_run_at, now().timestamp_millis() + 2 * 3600 * 1000);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        for (input, needle) in [
            (create("0 9 * * *", "   "), "prompt is empty"),
            (create("61 9 * * *", "x"), "invalid cron"),
            (create("2026-05-01 09:00", "x"), "in the past"),
            (create("every 10s", "x"), "shortest allowed is 60s"),
            (create("", "x"), "schedule is empty"),
            (
                CreateTaskInput {
                    kind: Some("weekly".into()),
                    ..create("0 9 * * *", "x")
                },
                "unknown schedule type",
            ),
            (
                CreateTaskInput {
                    timezone: Some("Mars/Base".into()),
                    ..create("0 9 * * *", "x")
                },
                "unknown time zone",
            ),
            (
                CreateTaskInput {
                    name: Some("n".repeat(200)),
                    ..create("0 9 * * *", "x")
                },
                "name has 200 characters",
            ),
        ] {
            let err = plan_new_task("local:a", &input, now(), chrono_tz::UTC, MIN)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    fn stored(kind: &str, schedule: &str, next: Option<i64>, enabled: bool) -> TaskRecord {
        TaskRecord {
            id: "t1".into(),
            channel_key: "local:a".into(),
            name: None,
            kind: kind.into(),
            schedule: schedule.into(),
            prompt: "p".into(),
            timezone: "UTC".into(),
            enabled,
            next_run_at: next,
            last_run_at: None,
            created_by: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn updates_reschedule_and_re_enable() {
        let hour = 3600 * 1000;
        let t0 = now().timestamp_millis();
        // Disable keeps the next run.
        let change = plan_task_change(
            &stored("interval", "every 1h", Some(t0 + hour), true),
            &UpdateTaskInput {
                enabled: Some(false),
                ..Default::default()
            },
            now(),
            MIN,
        )
        .expect("disable");
        assert_eq!((change.enabled, change.next_run_at), (Some(false), None));
        // Enabling after the next run passed moves it onto the grid after now.
        let change = plan_task_change(
            &stored("interval", "every 1h", Some(t0 - hour / 2), false),
            &UpdateTaskInput {
                enabled: Some(true),
                ..Default::default()
            },
            now(),
            MIN,
        )
        .expect("enable");
        assert_eq!(change.next_run_at, Some(Some(t0 + hour / 2)));
        // A new schedule is checked and gets its own first run.
        let change = plan_task_change(
            &stored("interval", "every 1h", Some(t0 + hour), true),
            &UpdateTaskInput {
                schedule: Some("in 5m".into()),
                ..Default::default()
            },
            now(),
            MIN,
        )
        .expect("reschedule");
        assert_eq!(
            change.schedule.as_ref().map(|(k, _)| k.as_str()),
            Some("once")
        );
        assert_eq!(change.next_run_at, Some(Some(t0 + 5 * 60 * 1000)));
        // Refusals.
        for (task, input, needle) in [
            (
                stored("interval", "every 1h", Some(t0), true),
                UpdateTaskInput::default(),
                "nothing to change",
            ),
            (
                stored("interval", "every 1h", Some(t0), true),
                UpdateTaskInput {
                    schedule: Some("*/5 * * * * *".into()),
                    ..Default::default()
                },
                "shortest allowed",
            ),
            (
                stored("once", "2026-05-01T00:00:00+00:00", None, false),
                UpdateTaskInput {
                    enabled: Some(true),
                    ..Default::default()
                },
                "has passed",
            ),
            (
                stored("interval", "every 1h", Some(t0), true),
                UpdateTaskInput {
                    prompt: Some(" ".into()),
                    ..Default::default()
                },
                "prompt is empty",
            ),
        ] {
            let err = plan_task_change(&task, &input, now(), MIN)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
