//! Runs. A run's end is recorded in one transaction with its messages marked
//! done and its answer queued, so a crash can never leave "answered but not recorded" or
//! "recorded but the answer lost".

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait, sea_query::Expr,
};

use super::connection::{Store, StoreError};
use super::entity::runs;
use super::outbox::new_row;
use super::records::{
    ChannelUsage, InboxStatus, OutboxKind, RunFinish, RunRecord, RunStatus, UnfinishedRun, now_ms,
};

/// Where a run came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOrigin {
    Chat,
    /// A scheduled task's run (its id).
    Task(String),
}

impl RunOrigin {
    fn as_str(&self) -> &'static str {
        match self {
            RunOrigin::Chat => "chat",
            RunOrigin::Task(_) => "task",
        }
    }

    fn task_id(&self) -> Option<String> {
        match self {
            RunOrigin::Chat => None,
            RunOrigin::Task(id) => Some(id.clone()),
        }
    }
}

impl Store {
    /// Records a run as started.
    pub async fn start_run(
        &self,
        run_id: &str,
        channel_key: &str,
        session_id: &str,
        origin: RunOrigin,
        prompt: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        runs::ActiveModel {
            id: Set(run_id.to_owned()),
            channel_key: Set(channel_key.to_owned()),
            session_id: Set(session_id.to_owned()),
            status: Set(RunStatus::Running.as_str().to_owned()),
            origin: Set(origin.as_str().to_owned()),
            task_id: Set(origin.task_id()),
            container_id: Set(None),
            prompt: Set(prompt.to_owned()),
            answer: Set(None),
            error: Set(None),
            claude_session_id: Set(None),
            input_tokens: Set(0),
            output_tokens: Set(0),
            cache_read_tokens: Set(0),
            cache_creation_tokens: Set(0),
            cost_usd: Set(0.0),
            num_turns: Set(0),
            created_at: Set(now),
            started_at: Set(Some(now)),
            finished_at: Set(None),
            status_message_id: Set(None),
        }
        .insert(self.db())
        .await?;
        Ok(())
    }

    /// Records how a run ended, marks its messages, and queues the reply — atomically.
    /// Returns the reply's outbox id.
    pub async fn finish_run(
        &self,
        run_id: &str,
        channel_key: &str,
        status: RunStatus,
        finish: RunFinish,
        reply: Option<(OutboxKind, String)>,
    ) -> Result<Option<i64>, StoreError> {
        let txn = self.db().begin().await?;
        let now = now_ms();
        runs::Entity::update_many()
            .col_expr(runs::Column::Status, status.as_str().into())
            .col_expr(runs::Column::Answer, finish.answer.clone().into())
            .col_expr(runs::Column::Error, finish.error.clone().into())
            .col_expr(
                runs::Column::ClaudeSessionId,
                finish.claude_session_id.clone().into(),
            )
            .col_expr(
                runs::Column::ContainerId,
                finish.container_id.clone().into(),
            )
            .col_expr(runs::Column::InputTokens, finish.input_tokens.into())
            .col_expr(runs::Column::OutputTokens, finish.output_tokens.into())
            .col_expr(
                runs::Column::CacheReadTokens,
                finish.cache_read_tokens.into(),
            )
            .col_expr(
                runs::Column::CacheCreationTokens,
                finish.cache_creation_tokens.into(),
            )
            .col_expr(runs::Column::CostUsd, finish.cost_usd.into())
            .col_expr(runs::Column::NumTurns, finish.num_turns.into())
            .col_expr(runs::Column::FinishedAt, Some(now).into())
            .filter(runs::Column::Id.eq(run_id))
            .exec(&txn)
            .await?;
        let message_status = if status == RunStatus::Succeeded {
            InboxStatus::Done
        } else {
            InboxStatus::Failed
        };
        Store::complete_messages(&txn, run_id, message_status).await?;
        let outbox_id = match reply {
            Some((kind, body)) => Some(
                new_row(channel_key, Some(run_id), kind, body)
                    .insert(&txn)
                    .await?
                    .id,
            ),
            None => None,
        };
        txn.commit().await?;
        Ok(outbox_id)
    }

    /// Records the platform id of a run's status message as soon as it is posted, so that a
    /// later start can still edit it if this daemon dies mid-run.
    pub async fn set_run_status_message(
        &self,
        run_id: &str,
        status_message_id: &str,
    ) -> Result<(), StoreError> {
        runs::Entity::update_many()
            .col_expr(
                runs::Column::StatusMessageId,
                Some(status_message_id.to_owned()).into(),
            )
            .filter(runs::Column::Id.eq(run_id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Runs still marked running (at start: the ones the previous daemon died in), with their
    /// status messages.
    pub async fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError> {
        Ok(runs::Entity::find()
            .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
            .order_by_asc(runs::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(|row| UnfinishedRun {
                id: row.id,
                channel_key: row.channel_key,
                status_message_id: row.status_message_id,
            })
            .collect())
    }

    /// Ends a run that something other than the agent cut short (the Docker engine died under
    /// it) and puts its messages back in the queue, counting the attempt; atomically, so the
    /// messages are either still the run's or waiting for the next one.
    pub async fn requeue_run(&self, run_id: &str, error: &str) -> Result<(), StoreError> {
        let txn = self.db().begin().await?;
        runs::Entity::update_many()
            .col_expr(runs::Column::Status, RunStatus::Interrupted.as_str().into())
            .col_expr(runs::Column::Error, Some(error.to_owned()).into())
            .col_expr(runs::Column::FinishedAt, Some(now_ms()).into())
            .filter(runs::Column::Id.eq(run_id))
            .exec(&txn)
            .await?;
        Store::release_messages_in(&txn, run_id).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Runs the daemon was in the middle of when it died: marked interrupted, and their
    /// messages put back in the queue so they are answered (once) after the restart.
    pub async fn recover_interrupted_runs(&self) -> Result<Vec<String>, StoreError> {
        let running: Vec<String> = runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
            .into_tuple()
            .all(self.db())
            .await?;
        for run_id in &running {
            runs::Entity::update_many()
                .col_expr(runs::Column::Status, RunStatus::Interrupted.as_str().into())
                .col_expr(runs::Column::FinishedAt, Some(now_ms()).into())
                .filter(runs::Column::Id.eq(run_id.as_str()))
                .exec(self.db())
                .await?;
            self.release_messages(run_id).await?;
        }
        // No turn is alive while recovering: any claim left (a crash between claiming and
        // recording the run) is an orphan too.
        self.release_orphan_claims().await?;
        Ok(running)
    }

    /// One run.
    pub async fn run(&self, run_id: &str) -> Result<RunRecord, StoreError> {
        runs::Entity::find_by_id(run_id.to_owned())
            .one(self.db())
            .await?
            .map(run_record)
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
    }

    /// A channel's runs, oldest first.
    pub async fn channel_runs(&self, channel_key: &str) -> Result<Vec<RunRecord>, StoreError> {
        Ok(runs::Entity::find()
            .filter(runs::Column::ChannelKey.eq(channel_key))
            .order_by_asc(runs::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(run_record)
            .collect())
    }

    /// Tokens and cost per channel.
    pub async fn usage(&self) -> Result<Vec<ChannelUsage>, StoreError> {
        /// channel, runs, input tokens, output tokens, cost.
        type UsageRow = (String, i64, Option<i64>, Option<i64>, Option<f64>);
        let rows: Vec<UsageRow> = runs::Entity::find()
            .select_only()
            .column(runs::Column::ChannelKey)
            .column_as(runs::Column::Id.count(), "runs")
            // PostgreSQL sums BIGINT into NUMERIC: cast back so both backends decode to i64.
            .column_as(
                Expr::cust("CAST(SUM(input_tokens) AS BIGINT)"),
                "input_tokens",
            )
            .column_as(
                Expr::cust("CAST(SUM(output_tokens) AS BIGINT)"),
                "output_tokens",
            )
            .column_as(runs::Column::CostUsd.sum(), "cost_usd")
            .group_by(runs::Column::ChannelKey)
            .order_by_asc(runs::Column::ChannelKey)
            .into_tuple()
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(channel_key, runs, input, output, cost)| ChannelUsage {
                channel_key,
                runs,
                input_tokens: input.unwrap_or(0),
                output_tokens: output.unwrap_or(0),
                cost_usd: cost.unwrap_or(0.0),
            })
            .collect())
    }

    /// What a channel has spent so far.
    pub async fn channel_cost(&self, channel_key: &str) -> Result<f64, StoreError> {
        let cost: Option<Option<f64>> = runs::Entity::find()
            .select_only()
            .column_as(runs::Column::CostUsd.sum(), "cost")
            .filter(runs::Column::ChannelKey.eq(channel_key))
            .into_tuple()
            .one(self.db())
            .await?;
        Ok(cost.flatten().unwrap_or(0.0))
    }
}

pub(super) fn run_record(row: runs::Model) -> RunRecord {
    RunRecord {
        id: row.id,
        channel_key: row.channel_key,
        status: RunStatus::parse(&row.status).unwrap_or(RunStatus::Failed),
        answer: row.answer,
        error: row.error,
        claude_session_id: row.claude_session_id,
        container_id: row.container_id,
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        cost_usd: row.cost_usd,
        task_id: row.task_id,
        created_at: row.created_at,
        finished_at: row.finished_at,
    }
}
