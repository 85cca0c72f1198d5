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
pub mod mcp;
pub mod memory;
pub mod orchestrator;
pub mod permissions;
pub mod project_files;
pub mod scheduler;
pub mod store;

/// An error and its sources as one line, without repeating a source the message already
/// quotes (`request error: http status: 404` is followed by `http status: 404`). For messages
/// printed to a person or a log where `{:#}` is not available.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = next.source();
    }
    line
}
