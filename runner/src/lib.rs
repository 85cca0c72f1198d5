//! loop-runner: turns a run specification into a Docker container running `claude --print`,
//! streams its `stream-json` events back, and keeps a registry of loop's containers.
//!
//! **Invariant:** this crate knows nothing about Slack, Discord, sessions or the database.
//! It takes plain settings and ids and returns events and results.

pub mod agent;
pub mod build_context;
pub mod docker;
pub mod events;
pub mod naming;
pub mod project_image;
pub mod registry;
pub mod shell;
pub mod spec;
mod stdio;
pub mod usage;
pub mod warm;

pub use agent::{
    AgentRunner, DockerRunner, Recovery, RunError, SpareRequest, TurnOutcome, TurnRequest,
};
pub use events::{AgentEvent, TurnResult, Usage};
pub use registry::{ContainerEntry, ContainerRegistry, ContainerStatus, RegistryEvent};
pub use shell::{
    OpenShell, ShellError, ShellHandle, ShellHost, ShellInput, ShellOutput, ShellRequest,
    TerminalSize,
};
pub use spec::{AgentUser, Auth, ChannelTarget, ContainerKind, ContainerSettings};
pub use usage::ContainerUsage;
pub use warm::{WarmConfig, WarmInfo};
