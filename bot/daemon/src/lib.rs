//! The loop daemon (`loop serve`): config, the orchestrator, the host API, the gate hub, the
//! scheduler, semantic memory, egress control and permissions. See `ARCHITECTURE.md`.
//!
//! It keeps its state in `loop-store`, runs agents through `loop-runner`, speaks to people
//! through the adapters, and shares its wire shapes with the CLI and the container through
//! `loop-wire`. Nothing here runs inside an agent's container (`loop-guest` does).

pub mod api;
pub mod branches;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod doctor;
pub mod egress;
pub mod environment;
pub mod forge;
pub mod gate;
pub mod memory;
pub mod orchestrator;
pub mod permissions;
pub mod project_files;
pub mod scheduler;
pub mod spares;
pub mod terminal;
pub mod text;
