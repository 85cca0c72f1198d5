//! `loop dockerproxy`: the agent container's Docker socket. It forwards to the host's daemon
//! only the calls its policy allows, and ties what the agent creates to the agent.
//!
//! - [`request`]: reading a request as the daemon does (path, query, JSON bodies).
//! - [`endpoint`]: which API endpoint a request is (the daemon's router, as a table).
//! - [`policy`]: the policy file (`/etc/loop/proxy-policy.json`) and the user rules.
//! - [`baseline`]: what no rule can allow, ownership, protected images, egress, rewrites.
//! - [`build`]: what a build context's Dockerfile may do (no `ADD <url>`, no `ONBUILD`).
//! - [`names`]: host paths and image references, normalised as the daemon does.
//! - [`refusal`]: a request that is not forwarded, and why.
//! - [`server`]: the HTTP/1.1 proxy on unix sockets (hyper), lookups, approvals, upgrades.
//!
//! # Sockets in the agent container
//!
//! The host's socket is bind-mounted at [`DEFAULT_UPSTREAM`], inside a directory the runner
//! mounts as a `0700` root tmpfs (and the entrypoint `chmod`s again), so only root reaches it.
//! The proxy runs as root with every capability dropped (being uid 0 is what lets it open that
//! socket) and listens on [`DEFAULT_LISTEN`] (`DOCKER_HOST` points there) and on
//! `/run/docker.sock`, which is `/var/run/docker.sock` through the image's `/var/run -> /run`,
//! both mode `0666` for the agent's uid.
//!
//! **Invariant:** `policy`, `baseline`, `build`, `endpoint`, `names`, `refusal` and `request` do no IO (except
//! [`policy::ProxyPolicyFile::load`]) and no async; only `server` talks to sockets.

pub mod baseline;
pub mod build;
pub mod endpoint;
pub mod names;
pub mod policy;
pub mod refusal;
pub mod request;
mod runtime;
pub mod server;

pub use baseline::{Call, ProxyPolicy, Refusal};
pub use policy::{ProxyPolicyError, ProxyPolicyFile};

/// `loop.dockerproxy.channel=<channel>` on volumes the proxy creates: they outlive the
/// container and belong to the channel's later turns.
pub use loop_wire::container::labels::PROXY_CHANNEL as CHANNEL_LABEL;
/// `loop.dockerproxy.daemon=<daemon id>`, so a restarted daemon removes what a crashed one
/// left behind.
pub use loop_wire::container::labels::PROXY_DAEMON as DAEMON_LABEL;
/// `loop.dockerproxy.owner=<agent container name>` on containers and networks the proxy
/// creates; only those may be used through it.
pub use loop_wire::container::labels::PROXY_OWNER as OWNER_LABEL;
/// Every label the proxy sets starts with this; the agent may not set such labels itself.
pub use loop_wire::container::labels::PROXY_PREFIX as LABEL_PREFIX;

/// `1`: the entrypoint starts the proxy.
pub use loop_wire::container::env::DOCKERPROXY_ENABLED as ENABLED_ENV;
/// The sockets the proxy listens on, comma-separated; the first is the one the entrypoint
/// waits for and `DOCKER_HOST` names.
pub use loop_wire::container::env::DOCKERPROXY_LISTEN as LISTEN_ENV;
/// `tracing` filter for the proxy's stderr (`warn` when unset).
pub use loop_wire::container::env::DOCKERPROXY_LOG as LOG_ENV;
/// The policy file inside the container.
pub use loop_wire::container::env::DOCKERPROXY_POLICY_FILE as POLICY_FILE_ENV;
/// The host daemon's socket inside the container.
pub use loop_wire::container::env::DOCKERPROXY_UPSTREAM as UPSTREAM_ENV;

/// The conventional path (`/var/run/docker.sock` through `/var/run -> /run`), for tools that
/// ignore `DOCKER_HOST`.
pub use loop_wire::container::paths::DOCKER_CONVENTIONAL_SOCKET as CONVENTIONAL_LISTEN;
/// The proxy's own socket.
pub use loop_wire::container::paths::DOCKER_PROXY_SOCKET as DEFAULT_LISTEN;
/// Where the runner mounts the host's socket.
pub use loop_wire::container::paths::DOCKER_UPSTREAM as DEFAULT_UPSTREAM;
/// The directory holding the host's socket (root, `0700`).
pub use loop_wire::container::paths::DOCKER_UPSTREAM_DIR as UPSTREAM_DIR;
/// Where the runner mounts the policy.
pub use loop_wire::container::paths::PROXY_POLICY as DEFAULT_POLICY_PATH;

pub use runtime::{ProxyConfig, ProxyError, drop_privileges};
