//! Reads for the dashboard: every channel and thread with its counts in a handful of grouped
//! queries (never one query per channel: the overview of 200 threads must stay fast), a
//! thread's conversation, and the gate's audit log with filters.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use serde::Serialize;

use super::approvals::{ApprovalRecord, ApprovalStatus, AuditEntry};
use super::connection::{Store, StoreError};
use super::entity::{approvals, channels, gate_audit, inbox, outbox, thread_branches};
use super::records::{InboxStatus, OutboxKind, RunStatus};

/// One channel or thread, for the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelSummary {
    pub key: String,
    pub platform: String,
    pub channel_id: String,
    pub thread_id: Option<String>,
    /// Its own work directory, else its parent channel's.
    pub work_dir: Option<String>,
    /// The thread's branch, when it has a worktree.
    pub branch: Option<String>,
    /// Messages waiting for a turn.
    pub queued: i64,
    pub runs: i64,
    pub cost_usd: f64,
    /// How the newest run ended (or `Running`).
    pub last_run: Option<RunStatus>,
    /// Unix ms of the newest message, run start or run end.
    pub last_activity: i64,
}

/// A message of a thread's conversation, with when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadMessage {
    pub id: i64,
    pub author_name: String,
    pub text: String,
    /// False: context only (a message the agent sees but that did not ask it anything).
    pub triggers: bool,
    pub status: InboxStatus,
    pub run_id: Option<String>,
    pub received_at: i64,
}

/// Which audit entries to show; `None` is "any".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// A channel key.
    pub channel: Option<String>,
    /// `allow` or `deny`.
    pub verdict: Option<String>,
    /// Unix ms, inclusive.
    pub since_ms: Option<i64>,
    /// Unix ms, exclusive.
    pub until_ms: Option<i64>,
    pub limit: u64,
}

/// Per-channel numbers from the runs table.
#[derive(Default)]
struct RunTotals {
    runs: i64,
    cost: f64,
    last: i64,
    status: Option<RunStatus>,
}

impl Store {
    /// The `limit` channels and threads with the most recent activity, newest first.
    pub async fn channel_summaries(&self, limit: usize) -> Result<Vec<ChannelSummary>, StoreError> {
        let backend = self.db().get_database_backend();
        let rows = channels::Entity::find().all(self.db()).await?;

        let mut runs: std::collections::HashMap<String, RunTotals> = Default::default();
        let totals = self
            .db()
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT channel_key, COUNT(*) AS runs, SUM(cost_usd) AS cost, \
                 MAX(created_at) AS last_created, MAX(finished_at) AS last_finished \
                 FROM runs GROUP BY channel_key",
            ))
            .await?;
        for row in totals {
            let key: String = row.try_get("", "channel_key")?;
            let created: Option<i64> = row.try_get("", "last_created")?;
            let finished: Option<i64> = row.try_get("", "last_finished")?;
            runs.insert(
                key,
                RunTotals {
                    runs: row.try_get("", "runs")?,
                    cost: row.try_get::<Option<f64>>("", "cost")?.unwrap_or(0.0),
                    last: created.unwrap_or(0).max(finished.unwrap_or(0)),
                    status: None,
                },
            );
        }
        // The newest run of each channel, by the (channel_key, created_at) index.
        let newest = self
            .db()
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT r.channel_key AS channel_key, r.status AS status FROM runs r \
                 JOIN (SELECT channel_key, MAX(created_at) AS m FROM runs GROUP BY channel_key) l \
                 ON r.channel_key = l.channel_key AND r.created_at = l.m",
            ))
            .await?;
        for row in newest {
            let key: String = row.try_get("", "channel_key")?;
            let status: String = row.try_get("", "status")?;
            if let Some(totals) = runs.get_mut(&key) {
                totals.status = RunStatus::parse(&status);
            }
        }

        let mut inbox_totals: std::collections::HashMap<String, (i64, i64)> = Default::default();
        let waiting = self
            .db()
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT channel_key, \
                 SUM(CASE WHEN status = 'pending' AND triggers THEN 1 ELSE 0 END) AS queued, \
                 MAX(received_at) AS last_received FROM inbox GROUP BY channel_key",
            ))
            .await?;
        for row in waiting {
            let key: String = row.try_get("", "channel_key")?;
            let queued: Option<i64> = row.try_get("", "queued")?;
            let last: Option<i64> = row.try_get("", "last_received")?;
            inbox_totals.insert(key, (queued.unwrap_or(0), last.unwrap_or(0)));
        }

        let branches: std::collections::HashMap<String, String> = thread_branches::Entity::find()
            .all(self.db())
            .await?
            .into_iter()
            .map(|b| (b.channel_key, b.branch))
            .collect();
        let dirs: std::collections::HashMap<String, String> = rows
            .iter()
            .filter_map(|r| Some((r.key.clone(), r.work_dir.clone()?)))
            .collect();

        let mut summaries: Vec<ChannelSummary> = rows
            .into_iter()
            .map(|row| {
                let totals = runs.remove(&row.key).unwrap_or_default();
                let (queued, received) = inbox_totals.get(&row.key).copied().unwrap_or((0, 0));
                let work_dir = row.work_dir.clone().or_else(|| {
                    row.parent_key
                        .as_ref()
                        .and_then(|parent| dirs.get(parent).cloned())
                });
                ChannelSummary {
                    branch: branches.get(&row.key).cloned(),
                    last_activity: row.created_at.max(totals.last).max(received),
                    key: row.key,
                    platform: row.platform,
                    channel_id: row.channel_id,
                    thread_id: row.thread_id,
                    work_dir,
                    queued,
                    runs: totals.runs,
                    cost_usd: totals.cost,
                    last_run: totals.status,
                }
            })
            .collect();
        summaries.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.key.cmp(&b.key))
        });
        summaries.truncate(limit);
        Ok(summaries)
    }

    /// How the newest run of each scheduled task ended, by task id.
    pub async fn task_last_results(
        &self,
    ) -> Result<std::collections::HashMap<String, RunStatus>, StoreError> {
        let rows = self
            .db()
            .query_all_raw(Statement::from_string(
                self.db().get_database_backend(),
                "SELECT r.task_id AS task_id, r.status AS status FROM runs r \
                 JOIN (SELECT task_id, MAX(created_at) AS m FROM runs \
                 WHERE task_id IS NOT NULL GROUP BY task_id) l \
                 ON r.task_id = l.task_id AND r.created_at = l.m",
            ))
            .await?;
        let mut results = std::collections::HashMap::new();
        for row in rows {
            let task: String = row.try_get("", "task_id")?;
            let status: String = row.try_get("", "status")?;
            if let Some(status) = RunStatus::parse(&status) {
                results.insert(task, status);
            }
        }
        Ok(results)
    }

    /// The newest `limit` messages of a channel, oldest first.
    pub async fn thread_messages(
        &self,
        channel_key: &str,
        limit: u64,
    ) -> Result<Vec<ThreadMessage>, StoreError> {
        let mut rows = inbox::Entity::find()
            .filter(inbox::Column::ChannelKey.eq(channel_key))
            .order_by_desc(inbox::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|row| ThreadMessage {
                id: row.id,
                author_name: row.author_name,
                text: row.text,
                triggers: row.triggers,
                status: InboxStatus::parse(&row.status).unwrap_or(InboxStatus::Failed),
                run_id: row.run_id,
                received_at: row.received_at,
            })
            .collect())
    }

    /// The newest `limit` notices loop queued for a channel (command replies, refusals: not
    /// the answers, which are the runs'), oldest first, with when they were queued.
    pub async fn thread_notices(
        &self,
        channel_key: &str,
        limit: u64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut rows = outbox::Entity::find()
            .filter(outbox::Column::ChannelKey.eq(channel_key))
            .filter(outbox::Column::Kind.eq(OutboxKind::Notice.as_str()))
            .order_by_desc(outbox::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        rows.reverse();
        Ok(rows.into_iter().map(|r| (r.created_at, r.body)).collect())
    }

    /// Approvals decided (or expired) since `since_ms`, newest first.
    pub async fn recent_approvals(
        &self,
        since_ms: i64,
        limit: u64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = approvals::Entity::find()
            .filter(approvals::Column::Status.ne(ApprovalStatus::Pending.as_str()))
            .filter(approvals::Column::DecidedAt.gte(since_ms))
            .order_by_desc(approvals::Column::DecidedAt)
            .limit(limit)
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .map(super::approvals::approval_record)
            .collect())
    }

    /// Audit entries matching `filter`, newest first.
    pub async fn gate_audit_filtered(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut query = gate_audit::Entity::find();
        if let Some(channel) = &filter.channel {
            query = query.filter(gate_audit::Column::ChannelKey.eq(channel.as_str()));
        }
        if let Some(verdict) = &filter.verdict {
            query = query.filter(gate_audit::Column::Verdict.eq(verdict.as_str()));
        }
        if let Some(since) = filter.since_ms {
            query = query.filter(gate_audit::Column::CreatedAt.gte(since));
        }
        if let Some(until) = filter.until_ms {
            query = query.filter(gate_audit::Column::CreatedAt.lt(until));
        }
        let rows = query
            .order_by_desc(gate_audit::Column::CreatedAt)
            .order_by_desc(gate_audit::Column::Id)
            .limit(filter.limit)
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .map(super::approvals::audit_entry)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use loop_adapter::{Author, ChannelKey, Message, PlatformKind};

    use super::*;
    use crate::test_support::TestDb;
    use crate::{NewAuditEntry, RunFinish, RunOrigin};

    fn message(channel: &ChannelKey, id: &str, triggers: bool) -> Message {
        Message {
            message_id: id.to_owned(),
            channel: channel.clone(),
            author: Author {
                id: "U1".into(),
                name: "alice".into(),
                is_bot: false,
                roles: vec![],
            },
            text: format!("text {id}"),
            triggers,
            work_dir: None,
        }
    }

    #[tokio::test]
    async fn channels_come_with_their_counts_newest_first() {
        for db in TestDb::all().await {
            let store = db.store();
            let backend = db.backend();
            let parent = ChannelKey::channel(PlatformKind::Slack, "C1");
            store
                .set_channel_work_dir(&parent, "/srv/project")
                .await
                .expect("dir");
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
            let quiet = ChannelKey::channel(PlatformKind::Local, "quiet");
            store.ensure_channel(&quiet).await.expect("channel");
            store
                .accept_message(&message(&thread, "m1", true))
                .await
                .expect("accept");
            let session = store
                .active_session(&thread, "/srv/project")
                .await
                .expect("session");
            let claimed = store
                .claim_pending(&thread.to_string(), "run-1")
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 1, "{backend}");
            store
                .start_run(
                    "run-1",
                    &thread.to_string(),
                    &session.id,
                    RunOrigin::Chat,
                    "p",
                )
                .await
                .expect("start");
            store
                .finish_run(
                    "run-1",
                    &thread.to_string(),
                    RunStatus::Failed,
                    RunFinish {
                        error: Some("boom".into()),
                        cost_usd: 0.25,
                        ..RunFinish::default()
                    },
                    None,
                )
                .await
                .expect("finish");
            // Two more arrive (one context only): one is queued.
            store
                .accept_message(&message(&thread, "m2", true))
                .await
                .expect("accept");
            store
                .accept_message(&message(&thread, "m3", false))
                .await
                .expect("accept");

            let all = store.channel_summaries(10).await.expect("summaries");
            let summary = all
                .iter()
                .find(|s| s.key == thread.to_string())
                .expect("thread");
            assert_eq!(
                summary.work_dir.as_deref(),
                Some("/srv/project"),
                "{backend}"
            );
            assert_eq!(
                (summary.queued, summary.runs, summary.last_run),
                (1, 1, Some(RunStatus::Failed)),
                "{backend}"
            );
            assert!((summary.cost_usd - 0.25).abs() < 1e-9, "{backend}");
            assert!(all.iter().any(|s| s.key == quiet.to_string()));
            assert_eq!(store.channel_summaries(1).await.expect("one").len(), 1);
            assert!(
                store.task_last_results().await.expect("tasks").is_empty(),
                "{backend}"
            );

            let messages = store
                .thread_messages(&thread.to_string(), 2)
                .await
                .expect("messages");
            let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
            assert_eq!(texts, ["text m2", "text m3"], "{backend}");
            store
                .enqueue_notice(&thread.to_string(), "🛑 Stopping run")
                .await
                .expect("notice");
            let notices = store
                .thread_notices(&thread.to_string(), 5)
                .await
                .expect("notices");
            assert_eq!(notices.len(), 1, "{backend}");
            assert_eq!(notices[0].1, "🛑 Stopping run");

            for (channel, verdict) in [("local:a", "allow"), ("local:b", "deny")] {
                store
                    .record_gate_decision(NewAuditEntry {
                        container_id: channel.into(),
                        channel_key: channel.into(),
                        syscall: "execve".into(),
                        detail: "exec /usr/bin/git push".into(),
                        verdict: verdict.into(),
                        source: "person".into(),
                        rule: None,
                        decided_by: Some("alice".into()),
                        approval_id: None,
                    })
                    .await
                    .expect("audit");
            }
            let filter = |channel: Option<&str>, verdict: Option<&str>| AuditFilter {
                channel: channel.map(str::to_owned),
                verdict: verdict.map(str::to_owned),
                limit: 10,
                ..AuditFilter::default()
            };
            let count = |f: AuditFilter| async move {
                store.gate_audit_filtered(&f).await.expect("audit").len()
            };
            assert_eq!(count(filter(None, None)).await, 2, "{backend}");
            assert_eq!(count(filter(Some("local:a"), None)).await, 1);
            assert_eq!(count(filter(None, Some("deny"))).await, 1);
            assert_eq!(count(filter(Some("local:a"), Some("deny"))).await, 0);
            let future = AuditFilter {
                since_ms: Some(crate::now_ms() + 60_000),
                limit: 10,
                ..AuditFilter::default()
            };
            assert_eq!(count(future).await, 0);
        }
    }
}
