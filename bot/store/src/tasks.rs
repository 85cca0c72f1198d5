//! Scheduled tasks: what an agent (or a person) asked loop to run later, in which channel, and
//! when it runs next. The scheduler advances a task with a conditional update on the run time
//! it read, so a task changed or cancelled meanwhile is never overwritten with stale times.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};
use serde::Serialize;

use super::connection::{Store, StoreError};
use super::entity::{inbox, scheduled_tasks};
use super::records::{InboxStatus, now_ms};

/// Prefix of the platform message id of a task's inbox message: `task:{id}:{scheduled_ms}`.
/// One id per scheduled time makes a re-fire after a crash a duplicate, not a second run.
pub const TASK_MESSAGE_PREFIX: &str = "task:";

/// The inbox message id of a task's run scheduled at `scheduled_at_ms`.
pub fn task_message_id(task_id: &str, scheduled_at_ms: i64) -> String {
    format!("{TASK_MESSAGE_PREFIX}{task_id}:{scheduled_at_ms}")
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    pub id: String,
    pub channel_key: String,
    pub name: Option<String>,
    /// `cron`, `interval` or `once`.
    pub kind: String,
    /// The canonical schedule text (see `scheduler::Schedule::canonical`).
    pub schedule: String,
    pub prompt: String,
    /// IANA zone the schedule's wall-clock times are in.
    pub timezone: String,
    pub enabled: bool,
    /// Unix ms; None once a one-shot task has run.
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A task to create; the caller has validated the schedule and computed the first run.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub channel_key: String,
    pub name: Option<String>,
    pub kind: String,
    pub schedule: String,
    pub prompt: String,
    pub timezone: String,
    pub next_run_at: i64,
    pub created_by: Option<String>,
}

/// A change to a task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TaskChange {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub enabled: Option<bool>,
    /// New kind, schedule text and first run, validated together by the caller.
    pub schedule: Option<(String, String)>,
    /// The next run; `Some(None)` clears it.
    pub next_run_at: Option<Option<i64>>,
}

/// How the scheduler moves a task on after looking at a due run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAdvance {
    /// The run time the scheduler read; the update only applies if it is still current.
    pub expected_next_run_at: i64,
    pub next_run_at: Option<i64>,
    /// Set when the run was enqueued.
    pub fired_at: Option<i64>,
    pub enabled: bool,
}

/// Task ids are short so that people can type them (`/loop cancel 3f2a9c1b`).
fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

impl Store {
    /// Stores a new task and returns it.
    pub async fn create_task(&self, task: NewTask) -> Result<TaskRecord, StoreError> {
        let now = now_ms();
        // Eight hex digits collide rarely; a collision is a primary-key error, retried with a
        // fresh id.
        let mut last_error = None;
        for _ in 0..3 {
            let row = scheduled_tasks::ActiveModel {
                id: Set(new_task_id()),
                channel_key: Set(task.channel_key.clone()),
                name: Set(task.name.clone()),
                kind: Set(task.kind.clone()),
                schedule: Set(task.schedule.clone()),
                prompt: Set(task.prompt.clone()),
                timezone: Set(task.timezone.clone()),
                enabled: Set(true),
                next_run_at: Set(Some(task.next_run_at)),
                last_run_at: Set(None),
                last_run_id: Set(None),
                running_run_id: Set(None),
                auto_delete_sec: Set(None),
                created_by: Set(task.created_by.clone()),
                created_at: Set(now),
                updated_at: Set(now),
            };
            match row.insert(self.db()).await {
                Ok(model) => return Ok(task_record(model)),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.map_or_else(
            || StoreError::NotFound("a free task id".to_owned()),
            StoreError::Db,
        ))
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<TaskRecord, StoreError> {
        scheduled_tasks::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
            .map(task_record)
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))
    }

    /// Tasks of one channel, or of every channel, oldest first.
    pub async fn tasks(&self, channel_key: Option<&str>) -> Result<Vec<TaskRecord>, StoreError> {
        let mut query = scheduled_tasks::Entity::find();
        if let Some(key) = channel_key {
            query = query.filter(scheduled_tasks::Column::ChannelKey.eq(key));
        }
        Ok(query
            .order_by_asc(scheduled_tasks::Column::CreatedAt)
            .order_by_asc(scheduled_tasks::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(task_record)
            .collect())
    }

    /// Deletes a task (a run already enqueued still happens).
    pub async fn delete_task(&self, id: &str) -> Result<(), StoreError> {
        let result = scheduled_tasks::Entity::delete_by_id(id.to_owned())
            .exec(self.db())
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("task {id}")));
        }
        Ok(())
    }

    /// Applies a change and returns the task as it is now.
    pub async fn update_task(
        &self,
        id: &str,
        change: TaskChange,
    ) -> Result<TaskRecord, StoreError> {
        let mut update = scheduled_tasks::Entity::update_many()
            .col_expr(scheduled_tasks::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(scheduled_tasks::Column::Id.eq(id));
        if let Some(name) = change.name {
            let name = (!name.trim().is_empty()).then_some(name);
            update = update.col_expr(scheduled_tasks::Column::Name, Expr::value(name));
        }
        if let Some(prompt) = change.prompt {
            update = update.col_expr(scheduled_tasks::Column::Prompt, Expr::value(prompt));
        }
        if let Some(enabled) = change.enabled {
            update = update.col_expr(scheduled_tasks::Column::Enabled, Expr::value(enabled));
        }
        if let Some((kind, schedule)) = change.schedule {
            update = update
                .col_expr(scheduled_tasks::Column::Kind, Expr::value(kind))
                .col_expr(scheduled_tasks::Column::Schedule, Expr::value(schedule));
        }
        if let Some(next) = change.next_run_at {
            update = update.col_expr(scheduled_tasks::Column::NextRunAt, Expr::value(next));
        }
        let result = update.exec(self.db()).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("task {id}")));
        }
        self.task(id).await
    }

    /// Enabled tasks whose next run is at or before `now_ms`, earliest first.
    pub async fn due_tasks(&self, now_ms: i64) -> Result<Vec<TaskRecord>, StoreError> {
        Ok(scheduled_tasks::Entity::find()
            .filter(scheduled_tasks::Column::Enabled.eq(true))
            .filter(scheduled_tasks::Column::NextRunAt.lte(now_ms))
            .order_by_asc(scheduled_tasks::Column::NextRunAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(task_record)
            .collect())
    }

    /// Moves a task on after a due run, unless someone changed its next run meanwhile.
    /// Returns whether the update applied.
    pub async fn advance_task(&self, id: &str, advance: TaskAdvance) -> Result<bool, StoreError> {
        let mut update = scheduled_tasks::Entity::update_many()
            .col_expr(
                scheduled_tasks::Column::NextRunAt,
                Expr::value(advance.next_run_at),
            )
            .col_expr(
                scheduled_tasks::Column::Enabled,
                Expr::value(advance.enabled),
            )
            .col_expr(scheduled_tasks::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(scheduled_tasks::Column::Id.eq(id))
            .filter(scheduled_tasks::Column::NextRunAt.eq(advance.expected_next_run_at));
        if let Some(fired) = advance.fired_at {
            update = update.col_expr(scheduled_tasks::Column::LastRunAt, Expr::value(Some(fired)));
        }
        Ok(update.exec(self.db()).await?.rows_affected > 0)
    }

    /// Whether a run of this task is still waiting or running: its inbox message is not done.
    /// The scheduler skips a due run then, so one task never overlaps itself.
    pub async fn task_run_in_flight(&self, task_id: &str) -> Result<bool, StoreError> {
        let prefix = format!("{TASK_MESSAGE_PREFIX}{task_id}:");
        let open = inbox::Entity::find()
            .filter(inbox::Column::PlatformMessageId.starts_with(&prefix))
            .filter(
                inbox::Column::Status
                    .is_in([InboxStatus::Pending.as_str(), InboxStatus::Claimed.as_str()]),
            )
            .one(self.db())
            .await?;
        Ok(open.is_some())
    }
}

fn task_record(row: scheduled_tasks::Model) -> TaskRecord {
    TaskRecord {
        id: row.id,
        channel_key: row.channel_key,
        name: row.name,
        kind: row.kind,
        schedule: row.schedule,
        prompt: row.prompt,
        timezone: row.timezone,
        enabled: row.enabled,
        next_run_at: row.next_run_at,
        last_run_at: row.last_run_at,
        created_by: row.created_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use loop_adapter::{Author, ChannelKey, Message, PlatformKind};

    use super::*;
    use crate::test_support::TestDb;

    fn new_task(channel: &str, next: i64) -> NewTask {
        NewTask {
            channel_key: channel.to_owned(),
            name: Some("nightly".to_owned()),
            kind: "cron".to_owned(),
            schedule: "0 3 * * *".to_owned(),
            prompt: "run the nightly checks".to_owned(),
            timezone: "Europe/Bucharest".to_owned(),
            next_run_at: next,
            created_by: Some("u1".to_owned()),
        }
    }

    #[tokio::test]
    async fn tasks_are_stored_listed_changed_and_cancelled_on_every_backend() {
        for db in TestDb::all().await {
            let store = db.store();
            let backend = db.backend();
            let a = store
                .create_task(new_task("local:a", 1_000))
                .await
                .expect("create");
            let b = store
                .create_task(new_task("local:b", 5_000))
                .await
                .expect("create");
            assert_eq!(a.id.len(), 8, "{backend}");
            assert!(a.enabled);
            assert_eq!(store.task(&a.id).await.expect("get"), a, "{backend}");
            assert_eq!(
                store.tasks(Some("local:a")).await.expect("list"),
                std::slice::from_ref(&a)
            );
            assert_eq!(store.tasks(None).await.expect("all").len(), 2);

            // Due: only what is enabled and at or before now.
            let due = store.due_tasks(1_000).await.expect("due");
            assert_eq!(due.iter().map(|t| &t.id).collect::<Vec<_>>(), [&a.id]);
            assert_eq!(store.due_tasks(10_000).await.expect("due").len(), 2);

            // Advancing applies only against the run time that was read.
            let stale = TaskAdvance {
                expected_next_run_at: 999,
                next_run_at: Some(2_000),
                fired_at: Some(1_000),
                enabled: true,
            };
            assert!(!store.advance_task(&a.id, stale).await.expect("stale"));
            let advance = TaskAdvance {
                expected_next_run_at: 1_000,
                next_run_at: Some(2_000),
                fired_at: Some(1_000),
                enabled: true,
            };
            assert!(store.advance_task(&a.id, advance).await.expect("advance"));
            let a = store.task(&a.id).await.expect("get");
            assert_eq!(
                (a.next_run_at, a.last_run_at),
                (Some(2_000), Some(1_000)),
                "{backend}"
            );

            // Disable, rename, reschedule.
            let changed = store
                .update_task(
                    &a.id,
                    TaskChange {
                        enabled: Some(false),
                        name: Some("renamed".into()),
                        schedule: Some(("interval".into(), "every 2h".into())),
                        next_run_at: Some(Some(9_000)),
                        ..Default::default()
                    },
                )
                .await
                .expect("update");
            assert!(!changed.enabled);
            assert_eq!(changed.name.as_deref(), Some("renamed"));
            assert_eq!(
                (changed.kind.as_str(), changed.schedule.as_str()),
                ("interval", "every 2h")
            );
            assert_eq!(changed.next_run_at, Some(9_000));
            assert!(
                store
                    .due_tasks(100_000)
                    .await
                    .expect("due")
                    .iter()
                    .all(|t| t.id != a.id),
                "{backend}: a disabled task is never due"
            );

            // Cancel.
            store.delete_task(&b.id).await.expect("delete");
            assert!(matches!(
                store.delete_task(&b.id).await,
                Err(StoreError::NotFound(_))
            ));
            assert!(matches!(
                store.task(&b.id).await,
                Err(StoreError::NotFound(_))
            ));
            assert!(matches!(
                store.update_task(&b.id, TaskChange::default()).await,
                Err(StoreError::NotFound(_))
            ));
        }
    }

    #[tokio::test]
    async fn a_task_run_is_in_flight_until_its_message_is_done() {
        for db in TestDb::all().await {
            let store = db.store();
            let task = store
                .create_task(new_task("local:a", 1_000))
                .await
                .expect("create");
            assert!(!store.task_run_in_flight(&task.id).await.expect("check"));
            let message = Message {
                message_id: task_message_id(&task.id, 1_000),
                channel: ChannelKey::channel(PlatformKind::Local, "a"),
                author: Author {
                    id: format!("task:{}", task.id),
                    name: "scheduled task".into(),
                    is_bot: false,
                    roles: Vec::new(),
                },
                text: task.prompt.clone(),
                triggers: true,
                work_dir: None,
            };
            let first = store.accept_message(&message).await.expect("accept");
            assert!(matches!(first, crate::Accepted::New(_)));
            // The same scheduled time again (a re-fire after a crash) is a duplicate.
            assert_eq!(
                store.accept_message(&message).await.expect("again"),
                crate::Accepted::Duplicate,
                "{}",
                db.backend()
            );
            assert!(store.task_run_in_flight(&task.id).await.expect("check"));
            let claimed = store
                .claim_pending("local:a", "run-1")
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 1);
            assert!(store.task_run_in_flight(&task.id).await.expect("check"));
            store
                .finish_run(
                    "run-1",
                    "local:a",
                    crate::RunStatus::Succeeded,
                    Default::default(),
                    None,
                )
                .await
                .expect("finish");
            assert!(!store.task_run_in_flight(&task.id).await.expect("check"));
            // Another task's prefix does not match.
            assert!(
                !store
                    .task_run_in_flight(&task.id[..4])
                    .await
                    .expect("check")
            );
        }
    }
}
