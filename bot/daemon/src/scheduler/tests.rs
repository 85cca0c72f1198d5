//! The scheduler's tick against a real database and an injected clock: due runs become inbox
//! messages, a task never overlaps itself, missed runs follow `scheduler.missed_runs`.

use std::sync::Arc;

use super::input::{CreateTaskInput, plan_new_task};
use super::*;
use loop_store::test_support::TestDb;
use loop_store::{InboxStatus, RunStatus, Store};

/// The bare inbox as the intake: what the orchestrator's `accept` stores, without a dispatcher.
struct InboxIntake(Store);

impl TaskIntake for InboxIntake {
    fn enqueue(&self, message: Message) -> BoxFuture<'_, Result<(), SchedulerError>> {
        Box::pin(async move {
            self.0.accept_message(&message).await?;
            Ok(())
        })
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0)
        .single()
        .expect("time")
}

const HOUR: Duration = Duration::from_secs(3600);

fn scheduler(store: &Store, clock: &ManualClock, missed_runs: MissedRuns) -> Scheduler {
    Scheduler::new(
        store.clone(),
        Arc::new(InboxIntake(store.clone())),
        Arc::new(clock.clone()),
        SchedulerSettings {
            missed_runs,
            min_interval: Duration::from_secs(60),
            default_timezone: chrono_tz::UTC,
        },
    )
}

async fn create(store: &Store, schedule: &str, prompt: &str, now: DateTime<Utc>) -> TaskRecord {
    let input = CreateTaskInput {
        schedule: schedule.into(),
        prompt: prompt.into(),
        ..Default::default()
    };
    let new = plan_new_task(
        "local:sched",
        &input,
        now,
        chrono_tz::UTC,
        Duration::from_secs(60),
    )
    .expect("valid task");
    store.create_task(new).await.expect("create")
}

/// Finishes whatever run is waiting in the channel, as a turn would.
async fn finish_waiting_run(store: &Store, run_id: &str) {
    let claimed = store
        .claim_pending("local:sched", run_id)
        .await
        .expect("claim");
    assert!(!claimed.is_empty(), "a run was waiting");
    store
        .finish_run(
            run_id,
            "local:sched",
            RunStatus::Succeeded,
            Default::default(),
            None,
        )
        .await
        .expect("finish");
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

#[tokio::test]
async fn due_runs_become_inbox_messages_and_never_overlap() {
    for db in TestDb::all().await {
        let store = db.store();
        let clock = ManualClock::new(t0());
        let scheduler = scheduler(store, &clock, MissedRuns::Once);
        let task = create(store, "every 1h", "check the build", t0()).await;
        assert_eq!(task.next_run_at, Some(ms(t0()) + 3_600_000));

        // Not due yet.
        assert_eq!(scheduler.tick().await.expect("tick"), TickReport::default());

        // Due: one message in the channel's inbox, the task moved on by one interval.
        clock.advance(HOUR);
        let report = scheduler.tick().await.expect("tick");
        assert_eq!(
            report.fired,
            std::slice::from_ref(&task.id),
            "{}",
            db.backend()
        );
        let messages = store.channel_messages("local:sched").await.expect("inbox");
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].platform_message_id,
            format!("task:{}:{}", task.id, ms(t0()) + 3_600_000)
        );
        assert!(messages[0].triggers);
        assert_eq!(messages[0].status, InboxStatus::Pending);
        assert!(messages[0].text.contains("check the build"));
        assert!(
            messages[0]
                .text
                .contains(&format!("[scheduled task {}", task.id))
        );
        let after = store.task(&task.id).await.expect("task");
        assert_eq!(after.next_run_at, Some(ms(t0()) + 2 * 3_600_000));
        assert_eq!(after.last_run_at, Some(ms(clock.now())));

        // Due again while the first run is still waiting: skipped, not stacked.
        clock.advance(HOUR);
        let report = scheduler.tick().await.expect("tick");
        assert_eq!(report.skipped, std::slice::from_ref(&task.id));
        assert_eq!(
            store
                .channel_messages("local:sched")
                .await
                .expect("inbox")
                .len(),
            1
        );
        assert_eq!(
            store.task(&task.id).await.expect("task").next_run_at,
            Some(ms(t0()) + 3 * 3_600_000)
        );

        // Once the run finished, the next due run fires.
        finish_waiting_run(store, "run-1").await;
        clock.advance(HOUR);
        assert_eq!(
            scheduler.tick().await.expect("tick").fired,
            std::slice::from_ref(&task.id)
        );
        finish_waiting_run(store, "run-2").await;

        // A cancelled task never fires again.
        store.delete_task(&task.id).await.expect("cancel");
        clock.advance(HOUR * 3);
        assert_eq!(scheduler.tick().await.expect("tick"), TickReport::default());
    }
}

#[tokio::test]
async fn missed_runs_run_once_or_are_skipped_and_one_shots_end() {
    for db in TestDb::all().await {
        let store = db.store();
        let clock = ManualClock::new(t0());
        let once = create(store, "every 1h", "hourly report", t0()).await;
        let one_shot = create(store, "in 30m", "remind me", t0()).await;

        // The daemon was "down" for five hours: under `once`, each task runs a single time.
        clock.advance(HOUR * 5 + Duration::from_secs(600));
        let report = scheduler(store, &clock, MissedRuns::Once)
            .tick()
            .await
            .expect("tick");
        let mut fired = report.fired.clone();
        fired.sort();
        let mut expected = vec![once.id.clone(), one_shot.id.clone()];
        expected.sort();
        assert_eq!(fired, expected, "{}", db.backend());
        assert_eq!(
            store
                .channel_messages("local:sched")
                .await
                .expect("inbox")
                .len(),
            2
        );
        // The interval stays on its grid after now; the one-shot is spent.
        assert_eq!(
            store.task(&once.id).await.expect("task").next_run_at,
            Some(ms(t0()) + 6 * 3_600_000)
        );
        let spent = store.task(&one_shot.id).await.expect("task");
        assert_eq!((spent.enabled, spent.next_run_at), (false, None));
        finish_waiting_run(store, "run-1").await;

        // Under `skip`, a missed run is dropped and the task waits for its next time.
        clock.advance(HOUR * 3);
        let report = scheduler(store, &clock, MissedRuns::Skip)
            .tick()
            .await
            .expect("tick");
        assert_eq!(report.skipped, std::slice::from_ref(&once.id));
        assert_eq!(
            store
                .channel_messages("local:sched")
                .await
                .expect("inbox")
                .len(),
            2
        );
        assert_eq!(
            store.task(&once.id).await.expect("task").next_run_at,
            Some(ms(t0()) + 9 * 3_600_000)
        );
        // A run that is merely late by a tick still runs under `skip`.
        clock.set(
            Utc.timestamp_millis_opt(ms(t0()) + 9 * 3_600_000 + 1_500)
                .single()
                .expect("t"),
        );
        let report = scheduler(store, &clock, MissedRuns::Skip)
            .tick()
            .await
            .expect("tick");
        assert_eq!(report.fired, std::slice::from_ref(&once.id));
    }
}

#[test]
fn task_lines_say_what_when_and_where() {
    let task = TaskRecord {
        id: "ab12cd34".into(),
        channel_key: "local:a".into(),
        name: Some("standup".into()),
        kind: "cron".into(),
        schedule: "0 9 * * 1-5".into(),
        prompt: "post the standup\nwith details".into(),
        timezone: "Europe/Bucharest".into(),
        enabled: true,
        next_run_at: Some(ms(t0())),
        last_run_at: None,
        created_by: None,
        created_at: 0,
        updated_at: 0,
    };
    assert_eq!(
        describe_task(&task),
        "`ab12cd34` \"standup\" cron `0 9 * * 1-5` · next: 2026-06-01 13:00:00 EEST · post the standup with details"
    );
    assert_eq!(
        task_prompt(&task),
        "[scheduled task ab12cd34 \"standup\", 0 9 * * 1-5]\npost the standup\nwith details"
    );
}
