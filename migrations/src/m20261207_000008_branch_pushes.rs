//! What left the host from a thread's branch: the last commit loop pushed and the pull
//! request it opened. A worktree whose branch holds commits beyond the pushed one is never
//! removed as idle, and a second `/loop pr` points at the first request instead of a new one.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [ThreadBranches::PushedCommit, ThreadBranches::PullRequestUrl] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ThreadBranches::Table)
                        .add_column(string_null(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [ThreadBranches::PullRequestUrl, ThreadBranches::PushedCommit] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ThreadBranches::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ThreadBranches {
    Table,
    PushedCommit,
    PullRequestUrl,
}
