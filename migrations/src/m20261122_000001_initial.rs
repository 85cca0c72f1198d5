//! The initial schema: channels and threads → sessions, the inbox, runs, the outbox,
//! scheduled tasks, gate approvals and audit, and memory.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A channel or a thread: `platform:channel[:thread]`. Threads point at their parent.
        manager
            .create_table(
                Table::create()
                    .table(Channels::Table)
                    .if_not_exists()
                    .col(string(Channels::Key).primary_key())
                    .col(string(Channels::Platform))
                    .col(string(Channels::ChannelId))
                    .col(string_null(Channels::ThreadId))
                    .col(string_null(Channels::ParentKey))
                    .col(text_null(Channels::WorkDir))
                    .col(double_null(Channels::BudgetUsd))
                    .col(big_integer(Channels::CreatedAt))
                    .col(big_integer(Channels::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        // A Claude session bound to a channel; one `active` per channel at a time.
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(string(Sessions::Id).primary_key())
                    .col(string(Sessions::ChannelKey))
                    .col(string_null(Sessions::ClaudeSessionId))
                    .col(text(Sessions::WorkDir))
                    .col(string(Sessions::State))
                    .col(big_integer(Sessions::CreatedAt))
                    .col(big_integer(Sessions::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_sessions_channel_state",
            Sessions::Table,
            &[Sessions::ChannelKey, Sessions::State],
        )
        .await?;

        // Every accepted message, stored before it is acknowledged. The platform's message id
        // is the idempotency key: a redelivered event inserts nothing.
        manager
            .create_table(
                Table::create()
                    .table(Inbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Inbox::Id))
                    .col(string(Inbox::Platform))
                    .col(string(Inbox::PlatformMessageId))
                    .col(string(Inbox::ChannelKey))
                    .col(string(Inbox::AuthorId))
                    .col(string(Inbox::AuthorName))
                    .col(text(Inbox::Text))
                    .col(boolean(Inbox::Triggers))
                    .col(string(Inbox::Status))
                    .col(string_null(Inbox::RunId))
                    .col(integer(Inbox::Attempts).default(0))
                    .col(big_integer(Inbox::ReceivedAt))
                    .col(big_integer(Inbox::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_inbox_platform_message")
                    .table(Inbox::Table)
                    .col(Inbox::Platform)
                    .col(Inbox::PlatformMessageId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_inbox_channel_status",
            Inbox::Table,
            &[Inbox::ChannelKey, Inbox::Status],
        )
        .await?;

        // One agent turn: what was asked, what came back, what it cost.
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .if_not_exists()
                    .col(string(Runs::Id).primary_key())
                    .col(string(Runs::ChannelKey))
                    .col(string(Runs::SessionId))
                    .col(string(Runs::Status))
                    .col(string(Runs::Origin))
                    .col(string_null(Runs::TaskId))
                    .col(string_null(Runs::ContainerId))
                    .col(text(Runs::Prompt))
                    .col(text_null(Runs::Answer))
                    .col(text_null(Runs::Error))
                    .col(string_null(Runs::ClaudeSessionId))
                    .col(big_integer(Runs::InputTokens).default(0))
                    .col(big_integer(Runs::OutputTokens).default(0))
                    .col(big_integer(Runs::CacheReadTokens).default(0))
                    .col(big_integer(Runs::CacheCreationTokens).default(0))
                    .col(double(Runs::CostUsd).default(0.0))
                    .col(integer(Runs::NumTurns).default(0))
                    .col(big_integer(Runs::CreatedAt))
                    .col(big_integer_null(Runs::StartedAt))
                    .col(big_integer_null(Runs::FinishedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_runs_channel_created",
            Runs::Table,
            &[Runs::ChannelKey, Runs::CreatedAt],
        )
        .await?;
        index(manager, "idx_runs_status", Runs::Table, &[Runs::Status]).await?;

        // Messages to send, persisted before they are sent, so an answer survives a crash
        // between "the run finished" and "the platform accepted the post".
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(string(Outbox::ChannelKey))
                    .col(string_null(Outbox::RunId))
                    .col(string(Outbox::Kind))
                    .col(text(Outbox::Body))
                    .col(string(Outbox::Status))
                    .col(string_null(Outbox::PlatformMessageId))
                    .col(integer(Outbox::Attempts).default(0))
                    .col(big_integer(Outbox::CreatedAt))
                    .col(big_integer_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_outbox_status",
            Outbox::Table,
            &[Outbox::Status],
        )
        .await?;

        // Recurring and one-shot work the agents schedule for themselves.
        manager
            .create_table(
                Table::create()
                    .table(ScheduledTasks::Table)
                    .if_not_exists()
                    .col(string(ScheduledTasks::Id).primary_key())
                    .col(string(ScheduledTasks::ChannelKey))
                    .col(string_null(ScheduledTasks::Name))
                    .col(string(ScheduledTasks::Kind))
                    .col(string(ScheduledTasks::Schedule))
                    .col(text(ScheduledTasks::Prompt))
                    .col(string(ScheduledTasks::Timezone))
                    .col(boolean(ScheduledTasks::Enabled))
                    .col(big_integer_null(ScheduledTasks::NextRunAt))
                    .col(big_integer_null(ScheduledTasks::LastRunAt))
                    .col(string_null(ScheduledTasks::LastRunId))
                    .col(string_null(ScheduledTasks::RunningRunId))
                    .col(big_integer_null(ScheduledTasks::AutoDeleteSec))
                    .col(string_null(ScheduledTasks::CreatedBy))
                    .col(big_integer(ScheduledTasks::CreatedAt))
                    .col(big_integer(ScheduledTasks::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_tasks_due",
            ScheduledTasks::Table,
            &[ScheduledTasks::Enabled, ScheduledTasks::NextRunAt],
        )
        .await?;

        // A gate prompt waiting for (or answered by) a human.
        manager
            .create_table(
                Table::create()
                    .table(Approvals::Table)
                    .if_not_exists()
                    .col(string(Approvals::Id).primary_key())
                    .col(string(Approvals::ContainerId))
                    .col(string(Approvals::ChannelKey))
                    .col(string_null(Approvals::RunId))
                    .col(string(Approvals::Syscall))
                    .col(text(Approvals::Summary))
                    .col(text(Approvals::Detail))
                    .col(string(Approvals::CacheKey))
                    .col(string(Approvals::Status))
                    .col(string_null(Approvals::Scope))
                    .col(string_null(Approvals::DecidedBy))
                    .col(big_integer_null(Approvals::DecidedAt))
                    .col(big_integer(Approvals::ExpiresAt))
                    .col(string_null(Approvals::PlatformMessageId))
                    .col(big_integer(Approvals::CreatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_approvals_status",
            Approvals::Table,
            &[Approvals::Status],
        )
        .await?;
        index(
            manager,
            "idx_approvals_container",
            Approvals::Table,
            &[Approvals::ContainerId],
        )
        .await?;

        // Every gate decision, recorded on the host (never by the agent's container).
        manager
            .create_table(
                Table::create()
                    .table(GateAudit::Table)
                    .if_not_exists()
                    .col(big_pk_auto(GateAudit::Id))
                    .col(string(GateAudit::ContainerId))
                    .col(string(GateAudit::ChannelKey))
                    .col(string(GateAudit::Syscall))
                    .col(text(GateAudit::Detail))
                    .col(string(GateAudit::Verdict))
                    .col(string(GateAudit::Source))
                    .col(string_null(GateAudit::Rule))
                    .col(string_null(GateAudit::DecidedBy))
                    .col(string_null(GateAudit::ApprovalId))
                    .col(big_integer(GateAudit::CreatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_gate_audit_created",
            GateAudit::Table,
            &[GateAudit::CreatedAt],
        )
        .await?;

        // Semantic memory: text, where it came from, and its embedding (little-endian f32s).
        manager
            .create_table(
                Table::create()
                    .table(Memories::Table)
                    .if_not_exists()
                    .col(string(Memories::Id).primary_key())
                    .col(string(Memories::Scope))
                    .col(string(Memories::ScopeKey))
                    .col(string(Memories::Source))
                    .col(text_null(Memories::SourceRef))
                    .col(text(Memories::Content))
                    .col(string(Memories::ContentHash))
                    .col(blob_null(Memories::Embedding))
                    .col(big_integer(Memories::CreatedAt))
                    .col(big_integer(Memories::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_memories_scope",
            Memories::Table,
            &[Memories::Scope, Memories::ScopeKey],
        )
        .await?;
        index(
            manager,
            "idx_memories_hash",
            Memories::Table,
            &[Memories::ContentHash],
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Memories::Table.into_iden(),
            GateAudit::Table.into_iden(),
            Approvals::Table.into_iden(),
            ScheduledTasks::Table.into_iden(),
            Outbox::Table.into_iden(),
            Runs::Table.into_iden(),
            Inbox::Table.into_iden(),
            Sessions::Table.into_iden(),
            Channels::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn index<T: IntoIden + Copy + 'static, C: IntoIden + Copy + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    let mut statement = Index::create();
    statement.name(name).table(table).if_not_exists();
    for col in cols {
        statement.col(*col);
    }
    manager.create_index(statement.to_owned()).await
}

#[derive(DeriveIden, Clone, Copy)]
enum Channels {
    Table,
    Key,
    Platform,
    ChannelId,
    ThreadId,
    ParentKey,
    WorkDir,
    BudgetUsd,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Sessions {
    Table,
    Id,
    ChannelKey,
    ClaudeSessionId,
    WorkDir,
    State,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Inbox {
    Table,
    Id,
    Platform,
    PlatformMessageId,
    ChannelKey,
    AuthorId,
    AuthorName,
    Text,
    Triggers,
    Status,
    RunId,
    Attempts,
    ReceivedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Runs {
    Table,
    Id,
    ChannelKey,
    SessionId,
    Status,
    Origin,
    TaskId,
    ContainerId,
    Prompt,
    Answer,
    Error,
    ClaudeSessionId,
    InputTokens,
    OutputTokens,
    CacheReadTokens,
    CacheCreationTokens,
    CostUsd,
    NumTurns,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Outbox {
    Table,
    Id,
    ChannelKey,
    RunId,
    Kind,
    Body,
    Status,
    PlatformMessageId,
    Attempts,
    CreatedAt,
    SentAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ScheduledTasks {
    Table,
    Id,
    ChannelKey,
    Name,
    Kind,
    Schedule,
    Prompt,
    Timezone,
    Enabled,
    NextRunAt,
    LastRunAt,
    LastRunId,
    RunningRunId,
    AutoDeleteSec,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Approvals {
    Table,
    Id,
    ContainerId,
    ChannelKey,
    RunId,
    Syscall,
    Summary,
    Detail,
    CacheKey,
    Status,
    Scope,
    DecidedBy,
    DecidedAt,
    ExpiresAt,
    PlatformMessageId,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum GateAudit {
    Table,
    Id,
    ContainerId,
    ChannelKey,
    Syscall,
    Detail,
    Verdict,
    Source,
    Rule,
    DecidedBy,
    ApprovalId,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Memories {
    Table,
    Id,
    Scope,
    ScopeKey,
    Source,
    SourceRef,
    Content,
    ContentHash,
    Embedding,
    CreatedAt,
    UpdatedAt,
}
