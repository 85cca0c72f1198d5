//! Exactly-once delivery of the outbox: a row is claimed by one deliverer with a lease before
//! anything is posted, progress is recorded per platform message (a long answer is several),
//! and every row has a key the platforms that can deduplicate posts (Discord's `nonce`) get.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            integer(Outbox::PartsSent).default(0).to_owned(),
            string_null(Outbox::ClaimToken).to_owned(),
            big_integer_null(Outbox::ClaimedUntil).to_owned(),
            string(Outbox::DeliveryKey).default("").to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // Rows queued before this migration get a key derived from their id.
        manager
            .get_connection()
            .execute_unprepared("UPDATE outbox SET delivery_key = 'o' || CAST(id AS TEXT)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Outbox::PartsSent,
            Outbox::ClaimToken,
            Outbox::ClaimedUntil,
            Outbox::DeliveryKey,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Outbox {
    Table,
    PartsSent,
    ClaimToken,
    ClaimedUntil,
    DeliveryKey,
}
