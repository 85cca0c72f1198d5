//! loop's contracts between processes, each written once:
//!
//! - [`api`]: the host API's request and response bodies, for the daemon's handlers, the
//!   `loop` CLI client and the in-container clients (`loop mcp`).
//! - [`routes`]: the host API's paths.
//! - [`container`]: what the runner puts into an agent container and the code running there
//!   reads back: environment variable names, in-container paths, container labels.
//! - [`setup`]: a project's setup commands as `loop setup` takes them, and what it reports.
//! - [`terminal`]: the dashboard terminal's WebSocket frames.
//!
//! The gate's own approval protocol (the request a syscall becomes) is `loop_gate::wire`; only
//! the decision, which the admin API carries too, is defined here.
//!
//! **Invariant:** this crate depends on serde alone. Every process of loop may link it, so a
//! name the runner writes and the container reads can never drift: both sides name the same
//! constant.

pub mod api;
pub mod container;
pub mod routes;
pub mod setup;
pub mod terminal;

/// An error and its sources as one line, without repeating a source the message already
/// quotes (`request error: http status: 404` is followed by `http status: 404`). For messages
/// that cross to a person or a log where `{:#}` is not available.
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
