//! `/loop fork N PROMPT`: a fork (the request, the base commit all its variants start from,
//! where its comparison goes) and its variants (one thread each). Written before any variant
//! runs, so a daemon restarted in between still opens the missing threads and posts the
//! comparison once every variant has finished.

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
                    .table(Forks::Table)
                    .if_not_exists()
                    .col(string(Forks::Id).primary_key())
                    // Where `/loop fork` was asked: the comparison is posted there.
                    .col(string(Forks::ChannelKey))
                    .col(text(Forks::Prompt))
                    .col(integer(Forks::Count))
                    .col(string(Forks::RequestedBy))
                    .col(string(Forks::RequestedByName))
                    // The repository and the commit every variant's branch is cut from.
                    .col(string(Forks::RepoRoot))
                    .col(string(Forks::BaseRef))
                    .col(string(Forks::BaseCommit))
                    // `opening`, `running`, `reported` or `abandoned`.
                    .col(string(Forks::State))
                    .col(big_integer(Forks::CreatedAt))
                    .col(big_integer_null(Forks::ReportedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ForkVariants::Table)
                    .if_not_exists()
                    .col(string(ForkVariants::ForkId))
                    // 1..=count.
                    .col(integer(ForkVariants::Variant))
                    // The variant's thread (its own channel key).
                    .col(string(ForkVariants::ThreadKey).unique_key())
                    .col(big_integer(ForkVariants::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ForkVariants::ForkId)
                            .col(ForkVariants::Variant),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ForkVariants::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Forks::Table).if_exists().to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Forks {
    Table,
    Id,
    ChannelKey,
    Prompt,
    Count,
    RequestedBy,
    RequestedByName,
    RepoRoot,
    BaseRef,
    BaseCommit,
    State,
    CreatedAt,
    ReportedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ForkVariants {
    Table,
    ForkId,
    Variant,
    ThreadKey,
    CreatedAt,
}
