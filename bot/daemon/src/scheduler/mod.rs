//! The task scheduler: agents (through `loop mcp`) and people schedule prompts to run later in
//! their channel, once, at intervals or on a cron schedule.
//!
//! - [`schedule`]: parsing schedules and computing next runs (pure, table-tested).
//! - [`input`]: turning a create or update request into what is stored, refusing bad input
//!   with a message and storing nothing.
//! - [`Scheduler`]: the daemon's loop. Every tick it reads the due tasks and turns each due run
//!   into an inbox message of the task's channel, with the platform message id
//!   `task:{id}:{scheduled_ms}` ([`loop_store::task_message_id`]): the run then goes through
//!   the same durable path as a chat message and its answer is posted like any other, and a
//!   re-fire after a crash (message stored, task not yet advanced) is a duplicate, not a
//!   second run.
//!
//! Rules: a run that is due while the previous run of the same task is still waiting or
//! running is skipped (no overlap). Runs missed while the daemon was down run once on start or
//! are skipped (`scheduler.missed_runs`). Time comes from a [`Clock`], so tests set it.

pub mod input;
pub mod schedule;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use loop_adapter::{Author, ChannelKey, Message};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MissedRuns};
use loop_store::{Store, StoreError, TaskAdvance, TaskRecord, task_message_id};
pub use schedule::{Schedule, ScheduleError, ScheduleKind, parse_timezone};

/// How often the scheduler looks for due tasks. Finer than the Go Loop's 30 s poll: a
/// one-indexed-query tick is cheap, and "every 2m" should not run up to 30 s late.
pub const TICK: Duration = Duration::from_secs(1);

/// A due run later than this was missed (the daemon was down), rather than merely late by a
/// tick: `scheduler.missed_runs` decides what happens to it.
pub const MISSED_GRACE: Duration = Duration::from_secs(60);

/// The source of "now". The daemon uses [`SystemClock`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Arc::new(Mutex::new(now)),
        }
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The scheduler's settings, resolved from the config at start.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub missed_runs: MissedRuns,
    pub min_interval: Duration,
    /// The zone of new tasks: `scheduler.timezone`, else the host's.
    pub default_timezone: Tz,
}

impl SchedulerSettings {
    /// From the config; `host_timezone` is what the host reports (see
    /// `loop_runner::spec::detect_timezone`). A zone loop cannot parse falls back to UTC with
    /// a warning rather than stopping the daemon.
    pub fn from_config(config: &Config, host_timezone: &str) -> SchedulerSettings {
        let name = config
            .scheduler
            .timezone
            .as_deref()
            .unwrap_or(host_timezone);
        let default_timezone = parse_timezone(name).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "scheduler: using UTC for new tasks");
            chrono_tz::UTC
        });
        SchedulerSettings {
            missed_runs: config.scheduler.missed_runs,
            min_interval: Duration::from_secs(config.scheduler.min_interval_sec),
            default_timezone,
        }
    }
}

/// Why a tick, or one due task in it, failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The intake takes no more runs: the daemon is stopping, so the tick ends here and the
    /// due tasks stay due for the next start.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The intake failed for a reason of its own; the task stays due and is tried next tick.
    /// The message is the reason's (it is logged with `%`), so it is not also a `source`.
    #[error("the intake failed: {0}")]
    Intake(Box<dyn std::error::Error + Send + Sync>),
}

/// What one tick did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Tasks whose run was enqueued.
    pub fired: Vec<String>,
    /// Tasks whose due run was skipped (overlap, or missed under `skip`).
    pub skipped: Vec<String>,
}

/// Where a due run goes: the orchestrator's intake in the daemon (store, then wake the
/// dispatcher), the bare inbox in the scheduler's own tests.
pub trait TaskIntake: Send + Sync + 'static {
    fn enqueue(&self, message: Message) -> BoxFuture<'_, Result<(), SchedulerError>>;

    /// Opens a thread titled `title` in `channel` for one run; `None` keeps the run in the
    /// channel (no threads on the platform, or the platform failed: the run must not be lost
    /// over its title).
    fn open_thread<'a>(
        &'a self,
        _channel: &'a ChannelKey,
        _title: &'a str,
    ) -> BoxFuture<'a, Option<ChannelKey>> {
        Box::pin(async { None })
    }
}

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    intake: Arc<dyn TaskIntake>,
    clock: Arc<dyn Clock>,
    settings: SchedulerSettings,
}

impl Scheduler {
    pub fn new(
        store: Store,
        intake: Arc<dyn TaskIntake>,
        clock: Arc<dyn Clock>,
        settings: SchedulerSettings,
    ) -> Scheduler {
        Scheduler {
            store,
            intake,
            clock,
            settings,
        }
    }

    pub fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Ticks until `token` is cancelled.
    pub async fn run(&self, token: CancellationToken) {
        tracing::info!(
            timezone = self.settings.default_timezone.name(),
            missed_runs = ?self.settings.missed_runs,
            "scheduler running"
        );
        loop {
            if let Err(err) = self.tick().await {
                tracing::error!(error = %err, "scheduler tick failed");
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Looks at every due task once.
    pub async fn tick(&self) -> Result<TickReport, SchedulerError> {
        let now = self.clock.now();
        let mut report = TickReport::default();
        for task in self.store.due_tasks(now.timestamp_millis()).await? {
            match self.handle_due(&task, now).await {
                Ok(Some(true)) => report.fired.push(task.id.clone()),
                Ok(Some(false)) => report.skipped.push(task.id.clone()),
                Ok(None) => {}
                Err(SchedulerError::ShuttingDown) => break,
                Err(err) => {
                    tracing::error!(task = %task.id, error = %err, "cannot run a due task")
                }
            }
        }
        Ok(report)
    }

    /// Fires (Some(true)), skips (Some(false)) or leaves (None: changed meanwhile) one due task.
    async fn handle_due(
        &self,
        task: &TaskRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, SchedulerError> {
        let store = &self.store;
        let Some(scheduled_ms) = task.next_run_at else {
            return Ok(None);
        };
        let tz = parse_timezone(&task.timezone).unwrap_or(chrono_tz::UTC);
        let kind = ScheduleKind::parse(&task.kind);
        let schedule = match Schedule::parse(&task.schedule, kind, now, tz) {
            Ok(schedule) => schedule,
            Err(err) => {
                // Only a row edited by hand gets here: stop it rather than fail every tick.
                tracing::error!(task = %task.id, error = %err, "disabling a task whose schedule no longer parses");
                store
                    .advance_task(
                        &task.id,
                        TaskAdvance {
                            expected_next_run_at: scheduled_ms,
                            next_run_at: None,
                            fired_at: None,
                            enabled: false,
                        },
                    )
                    .await?;
                return Ok(Some(false));
            }
        };
        let scheduled = Utc
            .timestamp_millis_opt(scheduled_ms)
            .single()
            .unwrap_or(now);
        let late = (now - scheduled).to_std().unwrap_or_default();
        let missed = late > MISSED_GRACE;
        let fire = if missed && self.settings.missed_runs == MissedRuns::Skip {
            tracing::info!(task = %task.id, scheduled = %scheduled, "skipping a run missed while loop was down");
            false
        } else if store.task_run_in_flight(&task.id).await? {
            tracing::info!(task = %task.id, scheduled = %scheduled, "skipping a run: the previous run of this task has not finished");
            false
        } else {
            true
        };
        if fire {
            self.enqueue(task, scheduled_ms).await?;
        }
        // Missed runs collapse into the one just handled: the next run is after now.
        let next = schedule.next_on_or_after_grid(scheduled, now, tz);
        let advanced = store
            .advance_task(
                &task.id,
                TaskAdvance {
                    expected_next_run_at: scheduled_ms,
                    next_run_at: next.map(|n| n.timestamp_millis()),
                    fired_at: fire.then(|| now.timestamp_millis()),
                    enabled: next.is_some(),
                },
            )
            .await?;
        if !advanced {
            return Ok(None);
        }
        tracing::info!(task = %task.id, channel = %task.channel_key, fired = fire, next = ?next, "task handled");
        Ok(Some(fire))
    }

    /// The task's run, as a message in its channel's inbox.
    async fn enqueue(&self, task: &TaskRecord, scheduled_ms: i64) -> Result<(), SchedulerError> {
        let Ok(channel) = task.channel_key.parse::<ChannelKey>() else {
            tracing::warn!(task = %task.id, channel = %task.channel_key, "task has a malformed channel key");
            return Ok(());
        };
        let message_id = task_message_id(&task.id, scheduled_ms);
        if self.store.inbox_contains(&message_id).await? {
            // Enqueued before a crash or a failed advance: the inbox would drop it, and a
            // thread opened for it now would stay empty.
            return Ok(());
        }
        // Each run answers in a thread of its own, titled with the task (the Go Loop habit);
        // a task created inside a thread stays there.
        let channel = if channel.thread_id.is_none() {
            let title = task_thread_title(task);
            self.intake
                .open_thread(&channel, &title)
                .await
                .unwrap_or(channel)
        } else {
            channel
        };
        let message = Message {
            message_id,
            channel,
            author: Author {
                id: format!("task:{}", task.id),
                name: format!("scheduled task {}", task.id),
                // A bot author would be ignored by intake; the task speaks for whoever made it.
                is_bot: false,
                roles: Vec::new(),
            },
            text: task_prompt(task),
            triggers: true,
            work_dir: None,
        };
        self.intake.enqueue(message).await
    }
}

/// The zone of a channel's new tasks: its project's `scheduler.timezone`, else the daemon's.
pub async fn channel_timezone(
    store: &Store,
    config: &Config,
    channel: &str,
    settings: &SchedulerSettings,
) -> Tz {
    let Ok(key) = channel.parse::<ChannelKey>() else {
        return settings.default_timezone;
    };
    let work_dir = match store.channel_work_dir(&key).await {
        Ok(Some(dir)) => dir,
        _ => return settings.default_timezone,
    };
    // The zone needs no trust: the trusted version does not matter here.
    let project = config.for_project(std::path::Path::new(&work_dir), None);
    match project {
        Ok(loaded) => loaded
            .config
            .scheduler
            .timezone
            .as_deref()
            .and_then(|zone| parse_timezone(zone).ok())
            .unwrap_or(settings.default_timezone),
        // A broken project file is reported when a turn runs; tasks still get a zone.
        Err(_) => settings.default_timezone,
    }
}

/// ` "name"` when the task has one.
fn quoted_name(task: &TaskRecord) -> String {
    task.name
        .as_deref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default()
}

/// The title of a run's thread: the task id, its name and its schedule.
pub fn task_thread_title(task: &TaskRecord) -> String {
    format!(
        "⏰ Task {}{} · {} {}",
        task.id,
        quoted_name(task),
        task.kind,
        task.schedule
    )
}

/// A run is a task's when one of its messages is a task's run (see [`task_message_id`]).
pub fn run_origin(messages: &[loop_store::InboxMessage]) -> loop_store::RunOrigin {
    let task = messages.iter().find_map(|m| {
        let rest = m
            .platform_message_id
            .strip_prefix(loop_store::TASK_MESSAGE_PREFIX)?;
        // `task:{id}:{scheduled_ms}`.
        Some(rest.rsplit_once(':').map_or(rest, |(id, _)| id).to_owned())
    });
    match task {
        Some(id) => loop_store::RunOrigin::Task(id),
        None => loop_store::RunOrigin::Chat,
    }
}

/// What the agent receives when a task runs: a header that says it is a scheduled run (so it
/// does not schedule itself again), then the prompt.
pub fn task_prompt(task: &TaskRecord) -> String {
    format!(
        "[scheduled task {}{}, {}]\n{}",
        task.id,
        quoted_name(task),
        task.schedule,
        task.prompt
    )
}

/// One line per task, for `/loop tasks` and `loop tasks`.
pub fn describe_task(task: &TaskRecord) -> String {
    let tz = parse_timezone(&task.timezone).unwrap_or(chrono_tz::UTC);
    let when = |ms: Option<i64>| {
        ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .map(|t| {
                t.with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
    };
    let name = quoted_name(task);
    let state = if task.enabled { "" } else { " (disabled)" };
    let next = when(task.next_run_at).unwrap_or_else(|| "never".to_owned());
    let mut prompt: String = task.prompt.chars().take(80).collect();
    if prompt.len() < task.prompt.len() {
        prompt.push('…');
    }
    format!(
        "`{}`{name} {} `{}`{state} · next: {next} · {}",
        task.id,
        task.kind,
        task.schedule,
        prompt.replace('\n', " ")
    )
}

#[cfg(test)]
mod tests;
