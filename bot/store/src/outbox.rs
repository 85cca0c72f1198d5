//! The outbox: every message loop posts on a platform (answers, notices, command replies) is a
//! row here first, and leaves through one deliverer (`loop_daemon::orchestrator::delivery`).
//!
//! A row is posted only under a claim: [`Store::claim_outbox`] takes it atomically (a
//! conditional UPDATE, so of two claimers exactly one wins) with a lease that expires, and the
//! claim's token fences every later write, so a deliverer whose lease ran out cannot record
//! anything over the one that took the row next. A long answer is several platform messages
//! ("parts"); `parts_sent` records each as it is posted, so a retry resumes at the first part
//! not yet posted instead of repeating the ones before it.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, Set,
    UpdateMany,
    sea_query::{Expr, ExprTrait},
};

use super::connection::{Store, StoreError};
use super::entity::outbox;
use super::records::{OutboxKind, OutboxMessage, OutboxStatus, now_ms};

/// The right to post one outbox row, until its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxClaim {
    pub id: i64,
    /// Random per claim: writes that name an older claim change nothing.
    pub token: String,
}

/// A new pending row. Its delivery key is random: it names the row's parts to platforms that
/// deduplicate posts (Discord keeps a `nonce` for a few minutes), so it must not repeat across
/// databases the way row ids can.
pub(super) fn new_row(
    channel_key: &str,
    run_id: Option<&str>,
    kind: OutboxKind,
    body: String,
) -> outbox::ActiveModel {
    let mut key = uuid::Uuid::new_v4().simple().to_string();
    key.truncate(DELIVERY_KEY_LEN);
    outbox::ActiveModel {
        channel_key: Set(channel_key.to_owned()),
        run_id: Set(run_id.map(str::to_owned)),
        kind: Set(kind.as_str().to_owned()),
        body: Set(body),
        status: Set(OutboxStatus::Pending.as_str().to_owned()),
        platform_message_id: Set(None),
        attempts: Set(0),
        created_at: Set(now_ms()),
        sent_at: Set(None),
        parts_sent: Set(0),
        claim_token: Set(None),
        claimed_until: Set(None),
        delivery_key: Set(key),
        ..Default::default()
    }
}

/// 16 hex digits (64 random bits): with a part number it stays within Discord's 25-character
/// `nonce`.
const DELIVERY_KEY_LEN: usize = 16;

impl Store {
    /// Queues a message that belongs to no run (command replies, notices).
    pub async fn enqueue_notice(&self, channel_key: &str, body: &str) -> Result<i64, StoreError> {
        let row = new_row(channel_key, None, OutboxKind::Notice, body.to_owned())
            .insert(self.db())
            .await?;
        Ok(row.id)
    }

    /// Every message waiting to be posted, claimed or not, oldest first.
    pub async fn pending_outbox(&self) -> Result<Vec<OutboxMessage>, StoreError> {
        self.outbox_where(Condition::all()).await
    }

    /// Messages waiting to be posted that nobody holds at `now` (never claimed, released, or
    /// their lease ran out), oldest first.
    pub async fn deliverable_outbox(&self, now: i64) -> Result<Vec<OutboxMessage>, StoreError> {
        self.outbox_where(unclaimed_at(now)).await
    }

    async fn outbox_where(&self, condition: Condition) -> Result<Vec<OutboxMessage>, StoreError> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .filter(condition)
            .order_by_asc(outbox::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(outbox_message)
            .collect())
    }

    /// One outbox message.
    pub async fn outbox_message(&self, id: i64) -> Result<OutboxMessage, StoreError> {
        outbox::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(outbox_message)
            .ok_or_else(|| StoreError::NotFound(format!("outbox message {id}")))
    }

    /// Takes message `id` for delivery until `now + lease_ms`. `None`: it is no longer pending,
    /// or another claim on it has not expired. One statement, so two claimers cannot both win.
    pub async fn claim_outbox(
        &self,
        id: i64,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<OutboxClaim>, StoreError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let updated = outbox::Entity::update_many()
            .col_expr(outbox::Column::ClaimToken, Some(token.clone()).into())
            .col_expr(outbox::Column::ClaimedUntil, Some(now + lease_ms).into())
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .filter(unclaimed_at(now))
            .exec(self.db())
            .await?;
        Ok((updated.rows_affected == 1).then_some(OutboxClaim { id, token }))
    }

    /// Records that the first `parts_sent` parts are posted (the first part's id is the
    /// message's id) and renews the lease to `now + lease_ms`. `false`: the claim is gone (its
    /// lease ran out and someone else took the message), so the caller must stop.
    pub async fn record_parts_sent(
        &self,
        claim: &OutboxClaim,
        parts_sent: i32,
        first_message_id: Option<&str>,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut update = outbox::Entity::update_many()
            .col_expr(outbox::Column::PartsSent, parts_sent.into())
            .col_expr(outbox::Column::ClaimedUntil, Some(now + lease_ms).into());
        if let Some(id) = first_message_id {
            update = update.col_expr(
                outbox::Column::PlatformMessageId,
                Some(id.to_owned()).into(),
            );
        }
        let updated = update
            .filter(outbox::Column::Id.eq(claim.id))
            .filter(outbox::Column::ClaimToken.eq(claim.token.as_str()))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .exec(self.db())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Every part is posted: the message is sent and its claim dropped. `false`: the claim
    /// was gone (nothing changed).
    pub async fn mark_sent(&self, claim: &OutboxClaim) -> Result<bool, StoreError> {
        let updated = without_claim(outbox::Entity::update_many())
            .col_expr(outbox::Column::Status, OutboxStatus::Sent.as_str().into())
            .col_expr(outbox::Column::SentAt, Some(now_ms()).into())
            .filter(outbox::Column::Id.eq(claim.id))
            .filter(outbox::Column::ClaimToken.eq(claim.token.as_str()))
            .exec(self.db())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Counts a failed delivery and releases the claim, so the message is tried again; after
    /// `max_attempts` it is given up on (status failed).
    pub async fn mark_send_failed(
        &self,
        claim: &OutboxClaim,
        max_attempts: i32,
    ) -> Result<(), StoreError> {
        let attempts = Expr::col(outbox::Column::Attempts).add(1);
        without_claim(outbox::Entity::update_many())
            .col_expr(
                outbox::Column::Status,
                Expr::case(
                    attempts.clone().gte(max_attempts),
                    OutboxStatus::Failed.as_str(),
                )
                .finally(OutboxStatus::Pending.as_str())
                .into(),
            )
            .col_expr(outbox::Column::Attempts, attempts)
            .filter(outbox::Column::Id.eq(claim.id))
            .filter(outbox::Column::ClaimToken.eq(claim.token.as_str()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Drops every claim (start-up: the deliverer that held them died with the last daemon).
    /// Their messages are posted again from the first part not recorded as sent.
    pub async fn release_outbox_claims(&self) -> Result<u64, StoreError> {
        Ok(without_claim(outbox::Entity::update_many())
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .filter(outbox::Column::ClaimToken.is_not_null())
            .exec(self.db())
            .await?
            .rows_affected)
    }
}

/// Not held at `now`: never claimed (or released), or the lease has run out.
fn unclaimed_at(now: i64) -> Condition {
    Condition::any()
        .add(outbox::Column::ClaimedUntil.is_null())
        .add(outbox::Column::ClaimedUntil.lt(now))
}

fn outbox_message(row: outbox::Model) -> OutboxMessage {
    OutboxMessage {
        id: row.id,
        channel_key: row.channel_key,
        run_id: row.run_id,
        kind: OutboxKind::parse(&row.kind).unwrap_or(OutboxKind::Notice),
        body: row.body,
        status: OutboxStatus::parse(&row.status).unwrap_or(OutboxStatus::Failed),
        attempts: row.attempts,
        parts_sent: row.parts_sent,
        delivery_key: row.delivery_key,
        platform_message_id: row.platform_message_id,
    }
}

/// The update that drops a row's claim (token and lease), whatever else it sets.
fn without_claim(update: UpdateMany<outbox::Entity>) -> UpdateMany<outbox::Entity> {
    update
        .col_expr(
            outbox::Column::ClaimToken,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            outbox::Column::ClaimedUntil,
            Expr::value(Option::<i64>::None),
        )
}
