//! Git per thread: the branch and worktree each thread works on, and the base branch a channel
//! (or a thread) asked for with `/loop base`.
//!
//! A thread's row is written before its worktree is created, so a daemon killed in between
//! finds the row and creates the worktree again for the same branch: one branch per thread,
//! whatever crashes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ThreadBranches::Table)
                    .if_not_exists()
                    // The thread's channel key (`platform:channel:thread`, or a channel's).
                    .col(string(ThreadBranches::ChannelKey).primary_key())
                    // The main repository's top level on the host.
                    .col(string(ThreadBranches::RepoRoot))
                    // The thread's worktree on the host.
                    .col(string(ThreadBranches::Worktree))
                    .col(string(ThreadBranches::Branch))
                    // The branch it was cut from, and that branch's commit then.
                    .col(string(ThreadBranches::BaseRef))
                    .col(string(ThreadBranches::BaseCommit))
                    // `active` or `removed` (the worktree is gone; the branch stays).
                    .col(string(ThreadBranches::State))
                    .col(big_integer(ThreadBranches::CreatedAt))
                    .col(big_integer(ThreadBranches::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("thread_branches_repo_branch")
                    .table(ThreadBranches::Table)
                    .col(ThreadBranches::RepoRoot)
                    .col(ThreadBranches::Branch)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GitBases::Table)
                    .if_not_exists()
                    // A channel's key (its threads inherit) or a thread's own.
                    .col(string(GitBases::ChannelKey).primary_key())
                    .col(string(GitBases::BaseRef))
                    .col(string(GitBases::SetBy))
                    .col(big_integer(GitBases::SetAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(GitBases::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(ThreadBranches::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ThreadBranches {
    Table,
    ChannelKey,
    RepoRoot,
    Worktree,
    Branch,
    BaseRef,
    BaseCommit,
    State,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum GitBases {
    Table,
    ChannelKey,
    BaseRef,
    SetBy,
    SetAt,
}
