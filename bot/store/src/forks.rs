//! Forks (`/loop fork N PROMPT`): one request tried by N agents, each in a thread of its own on
//! its own branch, all cut from one base commit; a comparison is posted where it was asked once
//! every variant has finished.
//!
//! Persist before acting: the fork is recorded before any thread is opened, each variant's
//! thread as soon as it is opened, and each variant's request enters the inbox with the id
//! [`fork_message_id`], so a restart in the middle opens only the missing threads and enqueues
//! nothing twice. [`Store::report_fork`] marks the fork reported and queues its comparison in
//! one transaction, conditionally: of two turns ending at once, exactly one reports it.

use loop_adapter::ChannelKey;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use super::connection::{Store, StoreError};
use super::entity::{fork_variants, forks, inbox, runs};
use super::outbox::new_row;
use super::records::{InboxStatus, OutboxKind, RunRecord, now_ms};
use super::runs::run_record;

/// Prefix of the inbox message id of a variant's request: `fork:{fork id}:{variant}`.
pub const FORK_MESSAGE_PREFIX: &str = "fork:";

/// The inbox message id of variant `variant` of fork `fork_id`: a second enqueue (a restart
/// while the fork was being opened) is a duplicate, not a second run.
pub fn fork_message_id(fork_id: &str, variant: u32) -> String {
    format!("{FORK_MESSAGE_PREFIX}{fork_id}:{variant}")
}

/// Where a fork is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkState {
    /// Recorded; its threads are being opened and its requests enqueued.
    Opening,
    /// Every variant's request is in the inbox; the comparison comes when all have finished.
    Running,
    /// The comparison is queued.
    Reported,
    /// It could not start (a thread could not be opened); nothing more comes of it.
    Abandoned,
}

impl ForkState {
    pub fn as_str(self) -> &'static str {
        match self {
            ForkState::Opening => "opening",
            ForkState::Running => "running",
            ForkState::Reported => "reported",
            ForkState::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> ForkState {
        match text {
            "opening" => ForkState::Opening,
            "running" => ForkState::Running,
            "reported" => ForkState::Reported,
            _ => ForkState::Abandoned,
        }
    }
}

/// A fork to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFork {
    pub id: String,
    /// Where `/loop fork` was asked: where the comparison goes.
    pub channel: ChannelKey,
    pub prompt: String,
    pub count: u32,
    /// Who asked (each variant's request is theirs).
    pub requested_by: String,
    pub requested_by_name: String,
    /// The repository and the commit every variant's branch starts from, and the branch or
    /// base that commit was the head of.
    pub repo_root: String,
    pub base_ref: String,
    pub base_commit: String,
}

/// A recorded fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRecord {
    pub id: String,
    pub channel_key: String,
    pub prompt: String,
    pub count: u32,
    pub requested_by: String,
    pub requested_by_name: String,
    pub repo_root: String,
    pub base_ref: String,
    pub base_commit: String,
    pub state: ForkState,
    pub created_at: i64,
    pub reported_at: Option<i64>,
}

impl From<forks::Model> for ForkRecord {
    fn from(row: forks::Model) -> Self {
        ForkRecord {
            id: row.id,
            channel_key: row.channel_key,
            prompt: row.prompt,
            count: u32::try_from(row.count).unwrap_or(0),
            requested_by: row.requested_by,
            requested_by_name: row.requested_by_name,
            repo_root: row.repo_root,
            base_ref: row.base_ref,
            base_commit: row.base_commit,
            state: ForkState::parse(&row.state),
            created_at: row.created_at,
            reported_at: row.reported_at,
        }
    }
}

/// One variant of a fork: its number (from 1) and its thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkVariant {
    pub fork_id: String,
    pub variant: u32,
    pub thread_key: String,
}

impl From<fork_variants::Model> for ForkVariant {
    fn from(row: fork_variants::Model) -> Self {
        ForkVariant {
            fork_id: row.fork_id,
            variant: u32::try_from(row.variant).unwrap_or(0),
            thread_key: row.thread_key,
        }
    }
}

/// How a variant's request went so far.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantOutcome {
    pub variant: ForkVariant,
    /// The request's inbox status; `None` before it is enqueued.
    pub message: Option<InboxStatus>,
    /// The last run that took the request.
    pub run: Option<RunRecord>,
}

impl VariantOutcome {
    /// Whether the variant's request was answered or failed for good (a request re-queued
    /// after a restart is not finished).
    pub fn is_finished(&self) -> bool {
        matches!(self.message, Some(InboxStatus::Done | InboxStatus::Failed))
    }
}

impl Store {
    /// Records a new fork, `Opening`.
    pub async fn create_fork(&self, new: NewFork) -> Result<ForkRecord, StoreError> {
        let row = forks::ActiveModel {
            id: Set(new.id),
            channel_key: Set(new.channel.to_string()),
            prompt: Set(new.prompt),
            count: Set(i32::try_from(new.count).unwrap_or(i32::MAX)),
            requested_by: Set(new.requested_by),
            requested_by_name: Set(new.requested_by_name),
            repo_root: Set(new.repo_root),
            base_ref: Set(new.base_ref),
            base_commit: Set(new.base_commit),
            state: Set(ForkState::Opening.as_str().to_owned()),
            created_at: Set(now_ms()),
            reported_at: Set(None),
        }
        .insert(self.db())
        .await?;
        Ok(row.into())
    }

    /// One fork.
    pub async fn fork(&self, id: &str) -> Result<ForkRecord, StoreError> {
        forks::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
            .map(ForkRecord::from)
            .ok_or_else(|| StoreError::NotFound(format!("fork {id}")))
    }

    /// Forks still opening or running, oldest first (what a start picks up again).
    pub async fn unfinished_forks(&self) -> Result<Vec<ForkRecord>, StoreError> {
        let rows = forks::Entity::find()
            .filter(
                forks::Column::State
                    .is_in([ForkState::Opening.as_str(), ForkState::Running.as_str()]),
            )
            .order_by_asc(forks::Column::CreatedAt)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(ForkRecord::from).collect())
    }

    /// Moves a fork from `from` to `to`; false when it was not in `from` (changed meanwhile).
    pub async fn set_fork_state(
        &self,
        id: &str,
        from: ForkState,
        to: ForkState,
    ) -> Result<bool, StoreError> {
        let updated = forks::Entity::update_many()
            .col_expr(forks::Column::State, to.as_str().into())
            .filter(forks::Column::Id.eq(id))
            .filter(forks::Column::State.eq(from.as_str()))
            .exec(self.db())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Records `thread` as variant `variant` of fork `fork_id`, unless that variant has a
    /// thread already: the first recorded wins and is returned.
    pub async fn add_fork_variant(
        &self,
        fork_id: &str,
        variant: u32,
        thread: &ChannelKey,
    ) -> Result<ForkVariant, StoreError> {
        let number = i32::try_from(variant).unwrap_or(i32::MAX);
        let row = fork_variants::ActiveModel {
            fork_id: Set(fork_id.to_owned()),
            variant: Set(number),
            thread_key: Set(thread.to_string()),
            created_at: Set(now_ms()),
        };
        fork_variants::Entity::insert(row)
            .on_conflict_do_nothing_on([
                fork_variants::Column::ForkId,
                fork_variants::Column::Variant,
            ])
            .exec(self.db())
            .await?;
        fork_variants::Entity::find_by_id((fork_id.to_owned(), number))
            .one(self.db())
            .await?
            .map(ForkVariant::from)
            .ok_or_else(|| StoreError::NotFound(format!("variant {variant} of fork {fork_id}")))
    }

    /// A fork's variants that have a thread, by number.
    pub async fn fork_variants(&self, fork_id: &str) -> Result<Vec<ForkVariant>, StoreError> {
        let rows = fork_variants::Entity::find()
            .filter(fork_variants::Column::ForkId.eq(fork_id))
            .order_by_asc(fork_variants::Column::Variant)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(ForkVariant::from).collect())
    }

    /// The fork variant `thread` is, if it is one.
    pub async fn fork_variant_of(
        &self,
        thread: &ChannelKey,
    ) -> Result<Option<ForkVariant>, StoreError> {
        Ok(fork_variants::Entity::find()
            .filter(fork_variants::Column::ThreadKey.eq(thread.to_string()))
            .one(self.db())
            .await?
            .map(ForkVariant::from))
    }

    /// Each variant of a fork with its request's status and the last run that took it.
    pub async fn fork_outcomes(&self, fork_id: &str) -> Result<Vec<VariantOutcome>, StoreError> {
        let mut outcomes = Vec::new();
        for variant in self.fork_variants(fork_id).await? {
            let message = inbox::Entity::find()
                .filter(inbox::Column::ChannelKey.eq(variant.thread_key.as_str()))
                .filter(
                    inbox::Column::PlatformMessageId.eq(fork_message_id(fork_id, variant.variant)),
                )
                .one(self.db())
                .await?;
            let run = match message.as_ref().and_then(|m| m.run_id.clone()) {
                Some(run_id) => runs::Entity::find_by_id(run_id)
                    .one(self.db())
                    .await?
                    .map(run_record),
                None => None,
            };
            outcomes.push(VariantOutcome {
                message: message.and_then(|m| InboxStatus::parse(&m.status)),
                run,
                variant,
            });
        }
        Ok(outcomes)
    }

    /// Marks a running fork reported and queues `comparison` in its channel, in one
    /// transaction. Returns the comparison's outbox id, or `None` when the fork was not
    /// running (another turn reported it first, or it never started): nothing is queued.
    pub async fn report_fork(&self, id: &str, comparison: &str) -> Result<Option<i64>, StoreError> {
        let txn = self.db().begin().await?;
        let Some(fork) = forks::Entity::find_by_id(id.to_owned()).one(&txn).await? else {
            txn.rollback().await?;
            return Err(StoreError::NotFound(format!("fork {id}")));
        };
        let updated = forks::Entity::update_many()
            .col_expr(forks::Column::State, ForkState::Reported.as_str().into())
            .col_expr(forks::Column::ReportedAt, Some(now_ms()).into())
            .filter(forks::Column::Id.eq(id))
            .filter(forks::Column::State.eq(ForkState::Running.as_str()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(None);
        }
        let row = new_row(
            &fork.channel_key,
            None,
            OutboxKind::Notice,
            comparison.to_owned(),
        )
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(Some(row.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{OutboxStatus, RunFinish, RunStatus};
    use crate::runs::RunOrigin;
    use crate::test_support::TestDb;
    use loop_adapter::{Author, Message, PlatformKind};

    fn new_fork(id: &str, count: u32) -> NewFork {
        NewFork {
            id: id.to_owned(),
            channel: ChannelKey::channel(PlatformKind::Slack, "C1"),
            prompt: "tighten the README".to_owned(),
            count,
            requested_by: "UALICE".to_owned(),
            requested_by_name: "alice".to_owned(),
            repo_root: "/srv/app".to_owned(),
            base_ref: "main".to_owned(),
            base_commit: "3f2c1d0e".repeat(5),
        }
    }

    fn request(fork: &str, variant: u32, thread: &ChannelKey) -> Message {
        Message {
            message_id: fork_message_id(fork, variant),
            channel: thread.clone(),
            author: Author {
                id: "UALICE".into(),
                name: "alice".into(),
                is_bot: false,
                roles: Vec::new(),
            },
            text: format!("tighten the README\n\n(variant {variant} of 2)"),
            triggers: true,
            work_dir: None,
        }
    }

    /// Runs a variant's request to its end, as a turn would.
    async fn run_variant(store: &Store, thread: &ChannelKey, status: RunStatus, answer: &str) {
        let key = thread.to_string();
        let run_id = format!("run-{key}");
        let claimed = store.claim_pending(&key, &run_id).await.expect("claim");
        assert_eq!(claimed.len(), 1, "{key}");
        store
            .start_run(&run_id, &key, "s", RunOrigin::Chat, "p")
            .await
            .expect("start");
        let finish = RunFinish {
            answer: Some(answer.to_owned()),
            ..Default::default()
        };
        store
            .finish_run(
                &run_id,
                &key,
                status,
                finish,
                Some((OutboxKind::Answer, answer.to_owned())),
            )
            .await
            .expect("finish");
    }

    #[tokio::test]
    async fn a_fork_is_reported_once_when_every_variant_has_finished() {
        for db in TestDb::all().await {
            let store = db.store();
            let backend = db.backend();
            let fork = store.create_fork(new_fork("f1", 2)).await.expect("create");
            assert_eq!(fork.state, ForkState::Opening);
            assert_eq!(fork.count, 2);
            let one = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
            let two = ChannelKey::thread(PlatformKind::Slack, "C1", "2.0");

            // A restart while opening: the variant recorded first keeps its thread.
            let first = store.add_fork_variant("f1", 1, &one).await.expect("one");
            let again = store
                .add_fork_variant(
                    "f1",
                    1,
                    &ChannelKey::thread(PlatformKind::Slack, "C1", "9.0"),
                )
                .await
                .expect("again");
            assert_eq!(again, first, "{backend}");
            assert_eq!(
                store.unfinished_forks().await.expect("unfinished")[0].id,
                "f1",
                "{backend}: an opening fork is picked up at start"
            );
            store.add_fork_variant("f1", 2, &two).await.expect("two");
            assert_eq!(
                store
                    .fork_variant_of(&two)
                    .await
                    .expect("of")
                    .map(|v| v.variant),
                Some(2)
            );
            assert_eq!(
                store
                    .fork_variant_of(&ChannelKey::thread(PlatformKind::Slack, "C1", "9.0"))
                    .await
                    .expect("of"),
                None
            );

            // Requests enqueued twice (a restart) are one each; none has finished yet.
            for (variant, thread) in [(1, &one), (2, &two), (1, &one)] {
                store
                    .accept_message(&request("f1", variant, thread))
                    .await
                    .expect("accept");
            }
            assert!(
                store
                    .set_fork_state("f1", ForkState::Opening, ForkState::Running)
                    .await
                    .expect("running")
            );
            let outcomes = store.fork_outcomes("f1").await.expect("outcomes");
            assert_eq!(outcomes.len(), 2, "{backend}");
            assert!(outcomes.iter().all(|o| !o.is_finished()), "{backend}");
            assert_eq!(outcomes[0].message, Some(InboxStatus::Pending));

            run_variant(store, &one, RunStatus::Succeeded, "Shortened it.").await;
            let outcomes = store.fork_outcomes("f1").await.expect("outcomes");
            assert!(outcomes[0].is_finished() && !outcomes[1].is_finished());
            assert_eq!(
                outcomes[0].run.as_ref().and_then(|r| r.answer.as_deref()),
                Some("Shortened it.")
            );

            run_variant(store, &two, RunStatus::Failed, "").await;
            let outcomes = store.fork_outcomes("f1").await.expect("outcomes");
            assert!(
                outcomes.iter().all(VariantOutcome::is_finished),
                "{backend}"
            );
            assert_eq!(
                outcomes[1].run.as_ref().map(|r| r.status),
                Some(RunStatus::Failed)
            );

            // Two turns ending together both try: one comparison.
            let reported = store
                .report_fork("f1", "🔀 compared")
                .await
                .expect("report");
            let twice = store
                .report_fork("f1", "🔀 compared")
                .await
                .expect("report");
            assert!(reported.is_some(), "{backend}");
            assert_eq!(twice, None, "{backend}");
            let queued: Vec<_> = store
                .pending_outbox()
                .await
                .expect("outbox")
                .into_iter()
                .filter(|m| m.body == "🔀 compared")
                .collect();
            assert_eq!(queued.len(), 1, "{backend}");
            assert_eq!(queued[0].channel_key, "slack:C1");
            assert_eq!(queued[0].status, OutboxStatus::Pending);
            let fork = store.fork("f1").await.expect("fork");
            assert_eq!(fork.state, ForkState::Reported);
            assert!(fork.reported_at.is_some());
            assert!(
                store
                    .unfinished_forks()
                    .await
                    .expect("unfinished")
                    .is_empty(),
                "{backend}"
            );

            // A fork that never started is never reported.
            store.create_fork(new_fork("f2", 3)).await.expect("f2");
            assert!(
                store
                    .set_fork_state("f2", ForkState::Opening, ForkState::Abandoned)
                    .await
                    .expect("abandon")
            );
            assert_eq!(store.report_fork("f2", "x").await.expect("report"), None);
            assert!(matches!(
                store.report_fork("nope", "x").await,
                Err(StoreError::NotFound(_))
            ));
        }
    }
}
