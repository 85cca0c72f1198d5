//! Which model made each memory's vector: vectors of different models cannot be compared, so
//! search uses only the current model's and the rest are embedded again from their text.
//! Rows from before this column have NULL (unknown) and are embedded again too.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Memories::Table)
                    .add_column(string_null(Memories::EmbeddingModel))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Memories::Table)
                    .drop_column(Memories::EmbeddingModel)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Memories {
    Table,
    EmbeddingModel,
}
