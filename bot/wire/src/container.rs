//! The agent container's contract: what the runner (`loop_runner::spec`) writes into a
//! container and what runs inside it (the image's entrypoint, `loop syscallwrap`,
//! `loop dockerproxy`, `loop mcp`) reads back. Both sides name these constants; the
//! entrypoint, a shell script, spells the few it reads (`LOOP_GATE_ENABLED`,
//! `LOOP_DOCKERPROXY_ENABLED`, `LOOP_GATE_TOKEN`) the same way.

/// Environment variable names.
pub mod env {
    /// The host API as containers reach it.
    pub const API_URL: &str = "API_URL";
    /// Bearer token of the container's host-API calls (the MCP tools); the agent can read it.
    pub const API_TOKEN: &str = "LOOP_API_TOKEN";
    /// The slug of the chat channel the container works for; sent with approvals and audit
    /// records, which the daemon checks against the token's channel.
    pub const CHANNEL_ID: &str = "LOOP_CHANNEL_ID";

    /// `1`: the entrypoint runs the agent under `loop syscallwrap`.
    pub const GATE_ENABLED: &str = "LOOP_GATE_ENABLED";
    /// The gate's policy file (default [`super::paths::GATE_POLICY`]).
    pub const GATE_POLICY_FILE: &str = "LOOP_GATE_POLICY_FILE";
    /// The approval bearer token; `syscallwrap` removes it from the agent's environment.
    pub const GATE_TOKEN: &str = "LOOP_GATE_TOKEN";
    /// The project directory: the gate's workspace and the agent's working directory, passed
    /// explicitly rather than read from the supervisor's cwd.
    pub const GATE_WORKSPACE: &str = "LOOP_GATE_WORKSPACE";
    /// Seconds the daemon waits for a person; the approver waits a little longer.
    pub const GATE_APPROVAL_TIMEOUT_SEC: &str = "LOOP_GATE_APPROVAL_TIMEOUT_SEC";
    /// Approvals that may wait at once (`gates.rate_limits.pending`).
    pub const GATE_MAX_PENDING: &str = "LOOP_GATE_MAX_PENDING";
    /// `1`: the supervisor ships every decision to the audit log, not only denials.
    pub const GATE_AUDIT_VERBOSE: &str = "LOOP_GATE_AUDIT_VERBOSE";
    /// `tracing` filter for the supervisor's stderr (`warn` when unset).
    pub const GATE_LOG: &str = "LOOP_GATE_LOG";
    /// Set to `child` in `syscallwrap`'s re-executed agent side.
    pub const SYSCALLWRAP_MODE: &str = "LOOP_SYSCALLWRAP_MODE";

    /// `1`: the entrypoint starts `loop dockerproxy`.
    pub const DOCKERPROXY_ENABLED: &str = "LOOP_DOCKERPROXY_ENABLED";
    /// The docker proxy's policy file (default [`super::paths::PROXY_POLICY`]).
    pub const DOCKERPROXY_POLICY_FILE: &str = "LOOP_DOCKERPROXY_POLICY_FILE";
    /// The host daemon's socket inside the container.
    pub const DOCKERPROXY_UPSTREAM: &str = "LOOP_DOCKERPROXY_UPSTREAM";
    /// The sockets the proxy listens on, comma-separated; the first is the one the entrypoint
    /// waits for and `DOCKER_HOST` names.
    pub const DOCKERPROXY_LISTEN: &str = "LOOP_DOCKERPROXY_LISTEN";
    /// `tracing` filter for the proxy's stderr (`warn` when unset).
    pub const DOCKERPROXY_LOG: &str = "LOOP_DOCKERPROXY_LOG";

    /// The project's setup steps as JSON ([`crate::setup::SetupStep`]s), for
    /// `loop setup -- CMD`, which runs them before it execs the agent.
    pub const SETUP: &str = "LOOP_SETUP";

    /// The agent user's name, as the entrypoint sets it.
    pub const AGENT_USER: &str = "AGENT_USER";
    /// The host user's name, which the entrypoint maps the agent to.
    pub const HOST_USER: &str = "HOST_USER";
}

/// Paths inside the container.
pub mod paths {
    /// The `loop` binary in the image.
    pub const LOOP_BIN: &str = "/usr/local/bin/loop";
    /// The per-container gate policy (read-only mount).
    pub const GATE_POLICY: &str = "/etc/loop/gate-policy.json";
    /// The per-container docker proxy policy (read-only mount).
    pub const PROXY_POLICY: &str = "/etc/loop/proxy-policy.json";
    /// The per-container MCP config (read-only mount, written in loop's run directory).
    pub const MCP_CONFIG: &str = "/etc/loop/mcp.json";
    /// Where `loop mcp` logs.
    pub const MCP_LOG: &str = "/tmp/loop-mcp.log";
    /// The directory holding the host's Docker socket: a root-only (`0700`) tmpfs.
    pub const DOCKER_UPSTREAM_DIR: &str = "/run/loop-docker-host";
    /// The host's Docker socket (only the proxy opens it).
    pub const DOCKER_UPSTREAM: &str = "/run/loop-docker-host/docker.sock";
    /// The docker proxy's socket; `DOCKER_HOST` names it.
    pub const DOCKER_PROXY_SOCKET: &str = "/run/loop/docker.sock";
    /// The conventional socket (`/var/run/docker.sock` through the image's `/var/run -> /run`),
    /// which the proxy also serves for tools that ignore `DOCKER_HOST`.
    pub const DOCKER_CONVENTIONAL_SOCKET: &str = "/run/docker.sock";
}

/// Container labels. loop's own are spelled as the Go Loop spells them, so tooling that looks
/// for `app=loop-agent` finds loop's containers too.
pub mod labels {
    /// On every container loop creates.
    pub const APP: &str = "app";
    /// Value of [`APP`].
    pub const APP_AGENT: &str = "loop-agent";
    /// Container type: `agent`, `shell` or `chrome`.
    pub const TYPE: &str = "loop-type";
    /// The channel a container serves.
    pub const CHANNEL: &str = "loop-channel";
    /// Which daemon instance created it, so a restarted daemon tells its own orphans from
    /// another daemon's live containers.
    pub const DAEMON: &str = "loop-daemon";

    /// Every label `loop dockerproxy` sets starts with this; the agent may not set such labels.
    pub const PROXY_PREFIX: &str = "loop.dockerproxy.";
    /// `loop.dockerproxy.owner=<agent container>` on what the proxy creates for an agent; only
    /// those may be used through it, and they are removed with the agent.
    pub const PROXY_OWNER: &str = "loop.dockerproxy.owner";
    /// `loop.dockerproxy.channel=<channel>` on volumes the proxy creates: they outlive the
    /// container and belong to the channel's later turns.
    pub const PROXY_CHANNEL: &str = "loop.dockerproxy.channel";
    /// `loop.dockerproxy.daemon=<daemon id>`, so a restarted daemon removes what a crashed one
    /// left behind.
    pub const PROXY_DAEMON: &str = "loop.dockerproxy.daemon";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_labels_share_the_prefix_the_agent_may_not_use() {
        for label in [
            labels::PROXY_OWNER,
            labels::PROXY_CHANNEL,
            labels::PROXY_DAEMON,
        ] {
            assert!(label.starts_with(labels::PROXY_PREFIX), "{label}");
        }
    }

    #[test]
    fn the_docker_upstream_is_inside_its_root_only_directory() {
        assert!(paths::DOCKER_UPSTREAM.starts_with(&format!("{}/", paths::DOCKER_UPSTREAM_DIR)));
    }
}
