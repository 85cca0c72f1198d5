//! Who may use loop in a channel beyond `permissions.owners/members`: the grants owners give
//! with `/loop allow_user|allow_role|deny_user|deny_role`. One row per channel and subject.

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
                    .table(ChannelGrants::Table)
                    .if_not_exists()
                    // The parent channel's key: a grant covers the channel and its threads.
                    .col(string(ChannelGrants::ChannelKey))
                    // `user` or `role`.
                    .col(string(ChannelGrants::SubjectKind))
                    .col(string(ChannelGrants::SubjectId))
                    // `owner`, `member` or `denied`.
                    .col(string(ChannelGrants::Level))
                    .col(string(ChannelGrants::GrantedBy))
                    .col(big_integer(ChannelGrants::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ChannelGrants::ChannelKey)
                            .col(ChannelGrants::SubjectKind)
                            .col(ChannelGrants::SubjectId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ChannelGrants::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ChannelGrants {
    Table,
    ChannelKey,
    SubjectKind,
    SubjectId,
    Level,
    GrantedBy,
    CreatedAt,
}
