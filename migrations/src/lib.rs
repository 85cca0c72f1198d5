//! loop's database schema as sea-orm migrations, applied by the daemon at start.
//!
//! Rules for adding a migration: never edit one that has shipped; add a new file
//! `mYYYYMMDD_NNNNNN_what.rs` and append it to [`Migrator::migrations`] (order is position in
//! that list). Every migration must run on SQLite and on PostgreSQL; the test below runs them
//! on both. Times are stored as BIGINT milliseconds since the Unix epoch so that comparisons
//! (`next_run_at <= now`) behave the same on both backends.

use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_channel_grants;
mod m20261122_000003_embedding_model;
mod m20261122_000004_project_trust;
mod m20261206_000005_run_status_message;
mod m20261207_000006_outbox_delivery;
mod m20261207_000007_thread_branches;
mod m20261207_000008_branch_pushes;
mod m20261208_000009_forks;

pub use sea_orm_migration::MigratorTrait;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_channel_grants::Migration),
            Box::new(m20261122_000003_embedding_model::Migration),
            Box::new(m20261122_000004_project_trust::Migration),
            Box::new(m20261206_000005_run_status_message::Migration),
            Box::new(m20261207_000006_outbox_delivery::Migration),
            Box::new(m20261207_000007_thread_branches::Migration),
            Box::new(m20261207_000008_branch_pushes::Migration),
            Box::new(m20261208_000009_forks::Migration),
        ]
    }
}
