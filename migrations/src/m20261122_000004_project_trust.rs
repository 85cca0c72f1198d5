//! Which version of each project's `.loop/config.json` an owner trusted (its SHA-256 and its
//! text, to show a diff next time), and which untrusted version each channel was told about,
//! so a changed file is announced once, not on every turn.

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
                    .table(ProjectTrust::Table)
                    .if_not_exists()
                    // The canonical work directory.
                    .col(string(ProjectTrust::WorkDir).primary_key())
                    // SHA-256 of the file's bytes, lower-case hex.
                    .col(string(ProjectTrust::FileHash))
                    .col(text(ProjectTrust::Content))
                    // `slack:U123`, `cli:alice`, ...
                    .col(string(ProjectTrust::TrustedBy))
                    .col(big_integer(ProjectTrust::TrustedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProjectTrustNotices::Table)
                    .if_not_exists()
                    .col(string(ProjectTrustNotices::ChannelKey))
                    .col(string(ProjectTrustNotices::WorkDir))
                    // The untrusted version the channel was last told about.
                    .col(string(ProjectTrustNotices::FileHash))
                    .col(big_integer(ProjectTrustNotices::NotifiedAt))
                    .primary_key(
                        Index::create()
                            .col(ProjectTrustNotices::ChannelKey)
                            .col(ProjectTrustNotices::WorkDir),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ProjectTrustNotices::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(ProjectTrust::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ProjectTrust {
    Table,
    WorkDir,
    FileHash,
    Content,
    TrustedBy,
    TrustedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ProjectTrustNotices {
    Table,
    ChannelKey,
    WorkDir,
    FileHash,
    NotifiedAt,
}
