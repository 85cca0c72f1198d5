//! loop: Claude Code as a team member. This crate is the `loop` binary's library: config,
//! storage, the daemon, the host API and the CLI commands. See `ARCHITECTURE.md`.

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod egress;
pub mod gate;
pub mod logging;
pub mod memory;
pub mod orchestrator;
pub mod permissions;
pub mod project_files;
pub mod scheduler;
/// The store is its own crate (`loop-store`, the only one that links sea-orm).
pub use loop_store as store;

pub use loop_wire::error_chain;
