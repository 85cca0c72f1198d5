//! The durable inbox: every accepted message is stored before it is acknowledged, claimed by
//! one run at a time per channel, and completed in the same transaction as the run's answer.

use loop_adapter::Message;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
    sea_query::{Expr, ExprTrait},
};

use super::connection::{Store, StoreError};
use super::entity::inbox;
use super::records::{InboxMessage, InboxStatus, now_ms};

/// What storing a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newly stored, with its inbox id.
    New(i64),
    /// The platform delivered this message before; nothing changed.
    Duplicate,
}

/// Longest message text stored; longer text is cut with a note (a chat message this long is
/// almost certainly a paste, and the agent can be asked for the rest).
pub const MAX_MESSAGE_CHARS: usize = 100_000;

impl Store {
    /// Whether a message with this platform id is already stored (any platform): a scheduled
    /// run that was enqueued before a crash is not announced again.
    pub async fn inbox_contains(&self, platform_message_id: &str) -> Result<bool, StoreError> {
        let found = inbox::Entity::find()
            .filter(inbox::Column::PlatformMessageId.eq(platform_message_id))
            .select_only()
            .column(inbox::Column::Id)
            .into_tuple::<i64>()
            .one(self.db())
            .await?;
        Ok(found.is_some())
    }

    /// Stores a message once. The platform's message id is the idempotency key.
    pub async fn accept_message(&self, message: &Message) -> Result<Accepted, StoreError> {
        self.ensure_channel(&message.channel).await?;
        let now = now_ms();
        let mut text = message.text.clone();
        if text.chars().count() > MAX_MESSAGE_CHARS {
            text = text.chars().take(MAX_MESSAGE_CHARS).collect();
            text.push_str("\n[message truncated by loop]");
        }
        let status = if message.triggers {
            InboxStatus::Pending
        } else {
            InboxStatus::Context
        };
        let row = inbox::ActiveModel {
            platform: Set(message.channel.platform.as_str().to_owned()),
            platform_message_id: Set(message.message_id.clone()),
            channel_key: Set(message.channel.to_string()),
            author_id: Set(message.author.id.clone()),
            author_name: Set(message.author.name.clone()),
            text: Set(text),
            triggers: Set(message.triggers),
            status: Set(status.as_str().to_owned()),
            run_id: Set(None),
            attempts: Set(0),
            received_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        let inserted = inbox::Entity::insert(row)
            .on_conflict_do_nothing_on([inbox::Column::Platform, inbox::Column::PlatformMessageId])
            .exec(self.db())
            .await?;
        Ok(match inserted {
            sea_orm::TryInsertResult::Inserted(result) => Accepted::New(result.last_insert_id),
            _ => Accepted::Duplicate,
        })
    }

    /// Channels that have messages waiting to start a turn, oldest first.
    pub async fn channels_with_pending(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String, i64)> = inbox::Entity::find()
            .select_only()
            .column(inbox::Column::ChannelKey)
            .column_as(inbox::Column::Id.min(), "first_id")
            .filter(inbox::Column::Status.eq(InboxStatus::Pending.as_str()))
            .group_by(inbox::Column::ChannelKey)
            .into_tuple()
            .all(self.db())
            .await?;
        let mut rows = rows;
        rows.sort_by_key(|(_, first)| *first);
        Ok(rows.into_iter().map(|(key, _)| key).collect())
    }

    /// Claims every waiting message of a channel (triggers and context, in order) for `run_id`.
    /// Returns nothing when no triggering message is waiting.
    pub async fn claim_pending(
        &self,
        channel_key: &str,
        run_id: &str,
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let txn = self.db().begin().await?;
        let rows = inbox::Entity::find()
            .filter(inbox::Column::ChannelKey.eq(channel_key))
            .filter(
                inbox::Column::Status
                    .is_in([InboxStatus::Pending.as_str(), InboxStatus::Context.as_str()]),
            )
            .order_by_asc(inbox::Column::Id)
            .all(&txn)
            .await?;
        if !rows
            .iter()
            .any(|r| r.status == InboxStatus::Pending.as_str())
        {
            txn.rollback().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        // Only rows still unclaimed are taken: a concurrent claimer cannot take them twice.
        let updated = inbox::Entity::update_many()
            .col_expr(inbox::Column::Status, InboxStatus::Claimed.as_str().into())
            .col_expr(inbox::Column::RunId, run_id.into())
            .col_expr(inbox::Column::UpdatedAt, now_ms().into())
            .filter(inbox::Column::Id.is_in(ids.clone()))
            .filter(
                inbox::Column::Status
                    .is_in([InboxStatus::Pending.as_str(), InboxStatus::Context.as_str()]),
            )
            .exec(&txn)
            .await?;
        if updated.rows_affected != ids.len() as u64 {
            txn.rollback().await?;
            return Ok(Vec::new());
        }
        txn.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut message = inbox_message(row);
                message.status = InboxStatus::Claimed;
                message.run_id = Some(run_id.to_owned());
                message
            })
            .collect())
    }

    /// Marks a run's messages done (inside the caller's transaction).
    pub(crate) async fn complete_messages<C: ConnectionTrait>(
        conn: &C,
        run_id: &str,
        status: InboxStatus,
    ) -> Result<(), StoreError> {
        inbox::Entity::update_many()
            .col_expr(inbox::Column::Status, status.as_str().into())
            .col_expr(inbox::Column::UpdatedAt, now_ms().into())
            .filter(inbox::Column::RunId.eq(run_id))
            .filter(inbox::Column::Status.eq(InboxStatus::Claimed.as_str()))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Puts a run's messages back in the queue (the run was interrupted), counting the attempt.
    pub async fn release_messages(&self, run_id: &str) -> Result<(), StoreError> {
        let txn = self.db().begin().await?;
        Store::release_messages_in(&txn, run_id).await?;
        txn.commit().await?;
        Ok(())
    }

    /// [`Store::release_messages`] inside the caller's transaction.
    pub(crate) async fn release_messages_in<C: ConnectionTrait>(
        conn: &C,
        run_id: &str,
    ) -> Result<(), StoreError> {
        for (triggers, status) in [(true, InboxStatus::Pending), (false, InboxStatus::Context)] {
            inbox::Entity::update_many()
                .col_expr(inbox::Column::Status, status.as_str().into())
                .col_expr(inbox::Column::RunId, Expr::value(Option::<String>::None))
                .col_expr(
                    inbox::Column::Attempts,
                    Expr::col(inbox::Column::Attempts).add(1),
                )
                .col_expr(inbox::Column::UpdatedAt, now_ms().into())
                .filter(inbox::Column::RunId.eq(run_id))
                .filter(inbox::Column::Triggers.eq(triggers))
                .filter(inbox::Column::Status.eq(InboxStatus::Claimed.as_str()))
                .exec(conn)
                .await?;
        }
        Ok(())
    }

    /// Puts every claimed message back in the queue (start-up recovery).
    pub async fn release_orphan_claims(&self) -> Result<u64, StoreError> {
        let mut released = 0;
        for (triggers, status) in [(true, InboxStatus::Pending), (false, InboxStatus::Context)] {
            released += inbox::Entity::update_many()
                .col_expr(inbox::Column::Status, status.as_str().into())
                .col_expr(inbox::Column::RunId, Expr::value(Option::<String>::None))
                .col_expr(
                    inbox::Column::Attempts,
                    Expr::col(inbox::Column::Attempts).add(1),
                )
                .col_expr(inbox::Column::UpdatedAt, now_ms().into())
                .filter(inbox::Column::Triggers.eq(triggers))
                .filter(inbox::Column::Status.eq(InboxStatus::Claimed.as_str()))
                .exec(self.db())
                .await?
                .rows_affected;
        }
        Ok(released)
    }

    /// One message by id (tests and the API).
    pub async fn inbox_message(&self, id: i64) -> Result<InboxMessage, StoreError> {
        inbox::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(inbox_message)
            .ok_or_else(|| StoreError::NotFound(format!("inbox message {id}")))
    }

    /// Messages of a channel in arrival order (tests and status).
    pub async fn channel_messages(
        &self,
        channel_key: &str,
    ) -> Result<Vec<InboxMessage>, StoreError> {
        Ok(inbox::Entity::find()
            .filter(inbox::Column::ChannelKey.eq(channel_key))
            .order_by_asc(inbox::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(inbox_message)
            .collect())
    }
}

fn inbox_message(row: inbox::Model) -> InboxMessage {
    InboxMessage {
        id: row.id,
        platform_message_id: row.platform_message_id,
        channel_key: row.channel_key,
        author_id: row.author_id,
        author_name: row.author_name,
        text: row.text,
        triggers: row.triggers,
        status: InboxStatus::parse(&row.status).unwrap_or(InboxStatus::Failed),
        run_id: row.run_id,
        attempts: row.attempts,
    }
}
