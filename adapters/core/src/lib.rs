//! loop-adapter: the common language between chat platforms and the orchestrator.
//!
//! Adapters (Slack, Discord, local) turn platform events into [`Inbound`] items and carry
//! [`Outbound`] replies back. **Invariant:** adapters never touch the database or Docker;
//! they translate, and the orchestrator decides.

pub mod command;
pub mod message;
pub mod split;

pub use command::{ChatCommand, GrantLevel, GrantSubject, MAX_FORKS, parse_command};
pub use message::{
    Adapter, AdapterError, ApprovalChoice, ApprovalPrompt, Author, ChannelKey, Inbound, Message,
    OutgoingPart, PlatformKind, PostedMessage, Receipt, TurnMark,
};
pub use split::{outgoing_parts, split_message};
