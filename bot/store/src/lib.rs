//! Durable state on sea-orm: SQLite by default (WAL), PostgreSQL when the URL says so.
//!
//! Only this crate touches sea-orm entities. Callers get domain types and
//! [`StoreError`], never driver errors. Migrations from `loop-migrations` run on [`Store::open`].

mod approvals;
mod branches;
mod connection;
mod conversations;
mod entity;
mod forks;
mod grants;
mod inbox;
mod memories;
mod outbox;
mod overview;
mod records;
mod runs;
mod tasks;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod trust;

pub use approvals::{
    ApprovalAnswer, ApprovalRecord, ApprovalScope, ApprovalStatus, AuditEntry, Decided,
    NewApproval, NewAuditEntry,
};
pub use branches::{BranchState, NewThreadBranch, ThreadBranch};
pub use connection::{Store, StoreError, redact_url};
pub use forks::{
    FORK_MESSAGE_PREFIX, ForkRecord, ForkState, ForkVariant, NewFork, VariantOutcome,
    fork_message_id,
};
pub use grants::ChannelGrant;
pub use inbox::{Accepted, MAX_MESSAGE_CHARS};
pub use memories::{MemoryRecord, MemoryScope, NewMemory, StoredVector};
pub use outbox::OutboxClaim;
pub use overview::{AuditFilter, ChannelSummary, ThreadMessage};
pub use records::*;
pub use runs::RunOrigin;
pub use tasks::{
    NewTask, TASK_MESSAGE_PREFIX, TaskAdvance, TaskChange, TaskRecord, task_message_id,
};
pub use trust::ProjectTrust;

#[cfg(test)]
mod story_tests;
