//! Gate approvals (a prompt waiting for, or answered by, a person) and the gate audit log.
//!
//! A decision is a conditional update from `pending`, so two answers to one prompt (two
//! people, or a person and the timeout) cannot both win: the second sees
//! [`Decided::Already`] with the first one's outcome.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use super::connection::{Store, StoreError};
use super::entity::{approvals, gate_audit};
use super::records::now_ms;

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person allowed it (once or for the session: see the scope).
    Allowed,
    /// A person denied it.
    Denied,
    /// Nobody answered in time, or the container went away first (a deny).
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Allowed => "allowed",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        Some(match text {
            "pending" => ApprovalStatus::Pending,
            "allowed" => ApprovalStatus::Allowed,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// How far an `allowed` answer reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalScope {
    Once,
    Session,
}

impl ApprovalScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalScope::Once => "once",
            ApprovalScope::Session => "session",
        }
    }

    fn parse(text: &str) -> Option<ApprovalScope> {
        match text {
            "once" => Some(ApprovalScope::Once),
            "session" => Some(ApprovalScope::Session),
            _ => None,
        }
    }
}

/// A stored approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub id: String,
    /// The run whose container asked (containers are identified by their run).
    pub container_id: String,
    pub channel_key: String,
    pub run_id: Option<String>,
    /// `execve`, `open`, `connect`.
    pub syscall: String,
    pub summary: String,
    /// The request as the container sent it (JSON).
    pub detail: String,
    /// The "allow for session" key.
    pub cache_key: String,
    pub status: ApprovalStatus,
    pub scope: Option<ApprovalScope>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub expires_at: i64,
    pub platform_message_id: Option<String>,
    pub created_at: i64,
}

/// A new approval to store as pending.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub id: String,
    pub container_id: String,
    pub channel_key: String,
    pub run_id: Option<String>,
    pub syscall: String,
    pub summary: String,
    pub detail: String,
    pub cache_key: String,
    pub expires_at: i64,
}

/// A decision to record on a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalAnswer {
    AllowOnce,
    AllowSession,
    Deny,
    Expire,
}

impl ApprovalAnswer {
    fn status_and_scope(self) -> (ApprovalStatus, Option<ApprovalScope>) {
        match self {
            ApprovalAnswer::AllowOnce => (ApprovalStatus::Allowed, Some(ApprovalScope::Once)),
            ApprovalAnswer::AllowSession => (ApprovalStatus::Allowed, Some(ApprovalScope::Session)),
            ApprovalAnswer::Deny => (ApprovalStatus::Denied, None),
            ApprovalAnswer::Expire => (ApprovalStatus::Expired, None),
        }
    }
}

/// What [`Store::decide_approval`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This answer was recorded.
    Now(ApprovalRecord),
    /// Another answer came first; here is the approval as it stands.
    Already(ApprovalRecord),
}

/// One gate decision in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub container_id: String,
    pub channel_key: String,
    pub syscall: String,
    /// What was attempted (the summary).
    pub detail: String,
    /// `allow` or `deny`.
    pub verdict: String,
    /// Who decided: `person`, `session` (an earlier "allow for session"), `timeout`,
    /// `container_gone`, `unavailable` (no one could be asked).
    pub source: String,
    pub rule: Option<String>,
    pub decided_by: Option<String>,
    pub approval_id: Option<String>,
    pub created_at: i64,
}

/// An audit entry to record.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub container_id: String,
    pub channel_key: String,
    pub syscall: String,
    pub detail: String,
    pub verdict: String,
    pub source: String,
    pub rule: Option<String>,
    pub decided_by: Option<String>,
    pub approval_id: Option<String>,
}

pub(super) fn approval_record(row: approvals::Model) -> ApprovalRecord {
    ApprovalRecord {
        // An unknown status can only come from a newer loop: treat it as decided (expired)
        // rather than as something still waiting for an answer.
        status: ApprovalStatus::parse(&row.status).unwrap_or(ApprovalStatus::Expired),
        scope: row.scope.as_deref().and_then(ApprovalScope::parse),
        id: row.id,
        container_id: row.container_id,
        channel_key: row.channel_key,
        run_id: row.run_id,
        syscall: row.syscall,
        summary: row.summary,
        detail: row.detail,
        cache_key: row.cache_key,
        decided_by: row.decided_by,
        decided_at: row.decided_at,
        expires_at: row.expires_at,
        platform_message_id: row.platform_message_id,
        created_at: row.created_at,
    }
}

pub(super) fn audit_entry(row: gate_audit::Model) -> AuditEntry {
    AuditEntry {
        id: row.id,
        container_id: row.container_id,
        channel_key: row.channel_key,
        syscall: row.syscall,
        detail: row.detail,
        verdict: row.verdict,
        source: row.source,
        rule: row.rule,
        decided_by: row.decided_by,
        approval_id: row.approval_id,
        created_at: row.created_at,
    }
}

impl Store {
    /// Stores a new pending approval.
    pub async fn create_approval(
        &self,
        approval: NewApproval,
    ) -> Result<ApprovalRecord, StoreError> {
        let row = approvals::ActiveModel {
            id: Set(approval.id),
            container_id: Set(approval.container_id),
            channel_key: Set(approval.channel_key),
            run_id: Set(approval.run_id),
            syscall: Set(approval.syscall),
            summary: Set(approval.summary),
            detail: Set(approval.detail),
            cache_key: Set(approval.cache_key),
            status: Set(ApprovalStatus::Pending.as_str().to_owned()),
            scope: Set(None),
            decided_by: Set(None),
            decided_at: Set(None),
            expires_at: Set(approval.expires_at),
            platform_message_id: Set(None),
            created_at: Set(now_ms()),
        }
        .insert(self.db())
        .await?;
        Ok(approval_record(row))
    }

    /// Remembers the chat message that asks about an approval (to edit it once decided).
    pub async fn set_approval_message(
        &self,
        id: &str,
        platform_message_id: &str,
    ) -> Result<(), StoreError> {
        approvals::Entity::update_many()
            .col_expr(
                approvals::Column::PlatformMessageId,
                Some(platform_message_id.to_owned()).into(),
            )
            .filter(approvals::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// One approval.
    pub async fn approval(&self, id: &str) -> Result<ApprovalRecord, StoreError> {
        approvals::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
            .map(approval_record)
            .ok_or_else(|| StoreError::NotFound(format!("approval {id}")))
    }

    /// Approvals still waiting for a person, oldest first. Prompts whose time is up are left
    /// out even if nobody marked them (a daemon that stopped mid-wait).
    pub async fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = approvals::Entity::find()
            .filter(approvals::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .filter(approvals::Column::ExpiresAt.gt(now_ms()))
            .order_by_asc(approvals::Column::CreatedAt)
            .order_by_asc(approvals::Column::Id)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(approval_record).collect())
    }

    /// Records an answer if the approval is still pending; see [`Decided`].
    pub async fn decide_approval(
        &self,
        id: &str,
        answer: ApprovalAnswer,
        decided_by: &str,
    ) -> Result<Decided, StoreError> {
        let (status, scope) = answer.status_and_scope();
        let updated = approvals::Entity::update_many()
            .col_expr(approvals::Column::Status, status.as_str().into())
            .col_expr(
                approvals::Column::Scope,
                scope.map(|s| s.as_str().to_owned()).into(),
            )
            .col_expr(
                approvals::Column::DecidedBy,
                Some(decided_by.to_owned()).into(),
            )
            .col_expr(approvals::Column::DecidedAt, Some(now_ms()).into())
            .filter(approvals::Column::Id.eq(id))
            .filter(approvals::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .exec(self.db())
            .await?
            .rows_affected;
        let record = self.approval(id).await?;
        Ok(if updated == 1 {
            Decided::Now(record)
        } else {
            Decided::Already(record)
        })
    }

    /// Marks every approval still pending as expired (a starting daemon: nobody waits for
    /// them any more). Returns how many.
    pub async fn expire_pending_approvals(&self) -> Result<u64, StoreError> {
        let updated = approvals::Entity::update_many()
            .col_expr(
                approvals::Column::Status,
                ApprovalStatus::Expired.as_str().into(),
            )
            .col_expr(
                approvals::Column::DecidedBy,
                Some("restart".to_owned()).into(),
            )
            .col_expr(approvals::Column::DecidedAt, Some(now_ms()).into())
            .filter(approvals::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .exec(self.db())
            .await?;
        Ok(updated.rows_affected)
    }

    /// Appends to the gate audit log.
    pub async fn record_gate_decision(&self, entry: NewAuditEntry) -> Result<i64, StoreError> {
        let row = gate_audit::ActiveModel {
            container_id: Set(entry.container_id),
            channel_key: Set(entry.channel_key),
            syscall: Set(entry.syscall),
            detail: Set(entry.detail),
            verdict: Set(entry.verdict),
            source: Set(entry.source),
            rule: Set(entry.rule),
            decided_by: Set(entry.decided_by),
            approval_id: Set(entry.approval_id),
            created_at: Set(now_ms()),
            ..Default::default()
        }
        .insert(self.db())
        .await?;
        Ok(row.id)
    }

    /// Appends several entries in one statement (a container's shipped batch).
    pub async fn record_gate_decisions(
        &self,
        entries: Vec<NewAuditEntry>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let rows = entries.into_iter().map(|entry| gate_audit::ActiveModel {
            container_id: Set(entry.container_id),
            channel_key: Set(entry.channel_key),
            syscall: Set(entry.syscall),
            detail: Set(entry.detail),
            verdict: Set(entry.verdict),
            source: Set(entry.source),
            rule: Set(entry.rule),
            decided_by: Set(entry.decided_by),
            approval_id: Set(entry.approval_id),
            created_at: Set(now),
            ..Default::default()
        });
        gate_audit::Entity::insert_many(rows)
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Deletes audit entries, and approvals no longer pending, created before `before_ms`
    /// (`gates.audit.retention_days`). Returns how many audit entries went.
    pub async fn purge_gate_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let audit = gate_audit::Entity::delete_many()
            .filter(gate_audit::Column::CreatedAt.lt(before_ms))
            .exec(self.db())
            .await?;
        approvals::Entity::delete_many()
            .filter(approvals::Column::CreatedAt.lt(before_ms))
            .filter(approvals::Column::Status.ne(ApprovalStatus::Pending.as_str()))
            .exec(self.db())
            .await?;
        Ok(audit.rows_affected)
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn gate_audit(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = gate_audit::Entity::find()
            .order_by_desc(gate_audit::Column::CreatedAt)
            .order_by_desc(gate_audit::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(audit_entry).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;

    fn new_approval(id: &str, expires_at: i64) -> NewApproval {
        NewApproval {
            id: id.to_owned(),
            container_id: "run-1".into(),
            channel_key: "local:c".into(),
            run_id: Some("run-1".into()),
            syscall: "execve".into(),
            summary: "exec /usr/bin/git push".into(),
            detail: "{}".into(),
            cache_key: "execve:/usr/bin/git:push".into(),
            expires_at,
        }
    }

    #[tokio::test]
    async fn approvals_are_decided_once_and_audited() {
        for db in TestDb::all().await {
            let store = db.store();
            let backend = db.backend();
            let later = now_ms() + 60_000;
            let created = store
                .create_approval(new_approval("a1", later))
                .await
                .expect("create");
            assert_eq!(created.status, ApprovalStatus::Pending, "{backend}");
            store
                .create_approval(new_approval("a2", later))
                .await
                .expect("create");
            // Already past its time: not listed as pending.
            store
                .create_approval(new_approval("old", now_ms() - 1))
                .await
                .expect("create");
            store.set_approval_message("a1", "m-7").await.expect("msg");
            let pending = store.pending_approvals().await.expect("pending");
            let ids: Vec<&str> = pending.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(ids, ["a1", "a2"], "{backend}");
            assert_eq!(pending[0].platform_message_id.as_deref(), Some("m-7"));

            // First answer wins; the second sees it.
            let first = store
                .decide_approval("a1", ApprovalAnswer::AllowSession, "alice")
                .await
                .expect("decide");
            let Decided::Now(record) = first else {
                panic!("{backend}: first answer must win: {first:?}")
            };
            assert_eq!(record.status, ApprovalStatus::Allowed);
            assert_eq!(record.scope, Some(ApprovalScope::Session));
            assert_eq!(record.decided_by.as_deref(), Some("alice"));
            assert!(record.decided_at.is_some());
            let second = store
                .decide_approval("a1", ApprovalAnswer::Deny, "bob")
                .await
                .expect("decide");
            assert!(
                matches!(&second, Decided::Already(r) if r.status == ApprovalStatus::Allowed && r.decided_by.as_deref() == Some("alice")),
                "{backend}: {second:?}"
            );
            assert!(matches!(
                store
                    .decide_approval("nope", ApprovalAnswer::Deny, "bob")
                    .await,
                Err(StoreError::NotFound(_))
            ));
            let expired = store
                .decide_approval("a2", ApprovalAnswer::Expire, "timeout")
                .await
                .expect("expire");
            assert!(
                matches!(&expired, Decided::Now(r) if r.status == ApprovalStatus::Expired && r.scope.is_none())
            );
            assert!(store.pending_approvals().await.expect("p").is_empty());
            // A restart expires what is left.
            assert_eq!(
                store.expire_pending_approvals().await.expect("expire"),
                1,
                "{backend}"
            );
            assert_eq!(
                store.approval("old").await.expect("old").status,
                ApprovalStatus::Expired
            );

            for (verdict, source) in [("allow", "person"), ("deny", "timeout")] {
                store
                    .record_gate_decision(NewAuditEntry {
                        container_id: "run-1".into(),
                        channel_key: "local:c".into(),
                        syscall: "execve".into(),
                        detail: "exec /usr/bin/git push".into(),
                        verdict: verdict.into(),
                        source: source.into(),
                        rule: Some("command_rules[0]".into()),
                        decided_by: Some("alice".into()),
                        approval_id: Some("a1".into()),
                    })
                    .await
                    .expect("audit");
            }
            let shipped = |detail: &str| NewAuditEntry {
                container_id: "local:c".into(),
                channel_key: "local:c".into(),
                syscall: "openat".into(),
                detail: detail.into(),
                verdict: "deny".into(),
                source: "policy".into(),
                rule: None,
                decided_by: None,
                approval_id: None,
            };
            store
                .record_gate_decisions(vec![shipped("read /a"), shipped("read /b")])
                .await
                .expect("batch");
            store
                .record_gate_decisions(vec![])
                .await
                .expect("empty batch");
            let all = store.gate_audit(10).await.expect("audit log");
            assert_eq!(all.len(), 4, "{backend}");
            assert!(all.iter().any(|e| e.detail == "read /b"));
            let log: Vec<AuditEntry> = all.into_iter().filter(|e| e.source != "policy").collect();
            assert_eq!(log.len(), 2, "{backend}");
            assert_eq!(log[0].source, "timeout", "{backend}: newest first");
            assert_eq!(log[1].verdict, "allow");
            assert_eq!(store.gate_audit(1).await.expect("limit").len(), 1);

            // Retention: everything created before the cutoff goes, pending prompts stay.
            store
                .create_approval(new_approval("waiting", now_ms() + 60_000))
                .await
                .expect("create");
            assert_eq!(
                store
                    .purge_gate_audit(now_ms() - 60_000)
                    .await
                    .expect("purge"),
                0,
                "{backend}: nothing is that old"
            );
            assert_eq!(
                store.purge_gate_audit(now_ms() + 1).await.expect("purge"),
                4,
                "{backend}"
            );
            assert!(store.gate_audit(10).await.expect("audit").is_empty());
            assert!(matches!(
                store.approval("a1").await,
                Err(StoreError::NotFound(_))
            ));
            assert_eq!(
                store.approval("waiting").await.expect("kept").status,
                ApprovalStatus::Pending
            );
        }
    }
}
