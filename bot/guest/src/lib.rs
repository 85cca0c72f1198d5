//! What runs inside the agent's container, besides the agent itself:
//!
//! - [`syscallwrap`]: `loop syscallwrap -- CMD`, the seccomp gate's supervisor around the agent;
//! - [`approver`]: asks the daemon when the gate or the docker proxy needs a person;
//! - [`audit`]: ships the supervisor's own decisions to the daemon's audit log;
//! - [`dockerproxy`]: `loop dockerproxy`, the agent's Docker socket;
//! - [`mcp`]: `loop mcp`, the built-in MCP server (tasks, messages, memory);
//! - [`setup`]: `loop setup -- CMD`, a project's setup commands once per container, then the
//!   agent.
//!
//! **Invariant:** code here runs where the agent (and whatever a project brought) can reach
//! it, so this crate cannot link the store, the orchestrator or a Docker client: its
//! dependencies are `loop-wire`, `loop-gate` and HTTP, and it talks to the daemon only through
//! the host API with the container's tokens.

pub mod approver;
pub mod audit;
pub mod dockerproxy;
pub mod mcp;
pub mod setup;
pub mod syscallwrap;

/// Logging for the container-side helpers (`syscallwrap`, `dockerproxy`): the env filter in
/// `env` (`warn` by default), to stderr, no colours. Creates no thread.
fn init_stderr_logging(env: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
