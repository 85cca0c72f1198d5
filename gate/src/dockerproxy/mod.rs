//! `loop dockerproxy`: the agent container's Docker socket. It forwards to the host's daemon
//! only the calls its policy allows, and ties what the agent creates to the agent.
//!
//! - [`request`]: reading a request as the daemon does (path, query, JSON bodies).
//! - [`endpoint`]: which API endpoint a request is (the daemon's router, as a table).
//! - [`policy`]: the policy file (`/etc/loop/proxy-policy.json`) and the user rules.
//! - [`baseline`]: what no rule can allow, ownership, protected images, egress, rewrites.
//! - [`build`]: what a build context's Dockerfile may do (no `ADD <url>`, no `ONBUILD`).
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
//! **Invariant:** `policy`, `baseline`, `build`, `endpoint` and `request` do no IO (except
//! [`policy::ProxyPolicyFile::load`]) and no async; only `server` talks to sockets.

pub mod baseline;
pub mod build;
pub mod endpoint;
pub mod policy;
pub mod request;
pub mod server;

use std::path::PathBuf;

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

/// Errors of starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The policy file is missing or invalid.
    #[error(transparent)]
    Policy(#[from] ProxyPolicyError),
    /// Dropping privileges failed.
    #[error("cannot drop privileges ({what}): {source}")]
    Privileges {
        /// Which step.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A listening socket could not be set up.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What `loop dockerproxy` reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The policy file.
    pub policy_file: PathBuf,
    /// The host daemon's socket.
    pub upstream: PathBuf,
    /// The sockets to listen on.
    pub listen: Vec<PathBuf>,
    /// `LOOP_CHANNEL_ID`, for approvals and the audit log.
    pub channel_id: String,
    /// Approvals that may wait at once; more are denied.
    pub max_pending: usize,
}

impl ProxyConfig {
    /// From `LOOP_DOCKERPROXY_{POLICY_FILE,UPSTREAM,LISTEN}`, `LOOP_CHANNEL_ID` and
    /// `LOOP_GATE_MAX_PENDING`, with the defaults above.
    pub fn from_env() -> ProxyConfig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let listen = var(LISTEN_ENV)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_else(|| {
                vec![
                    PathBuf::from(DEFAULT_LISTEN),
                    PathBuf::from(CONVENTIONAL_LISTEN),
                ]
            });
        ProxyConfig {
            policy_file: PathBuf::from(
                var(POLICY_FILE_ENV).unwrap_or_else(|| DEFAULT_POLICY_PATH.to_owned()),
            ),
            upstream: PathBuf::from(
                var(UPSTREAM_ENV).unwrap_or_else(|| DEFAULT_UPSTREAM.to_owned()),
            ),
            listen,
            channel_id: var(loop_wire::container::env::CHANNEL_ID).unwrap_or_default(),
            max_pending: var(loop_wire::container::env::GATE_MAX_PENDING)
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(30),
        }
    }
}

/// Makes the proxy process as weak as it can be while staying uid 0 (the owner of the host
/// socket's directory): dies with its parent, not dumpable (the agent cannot read its memory or
/// environment, which holds the gate token), no new privileges, and no capabilities left
/// (effective, permitted, inheritable, ambient; the bounding set too when `CAP_SETPCAP` allows).
///
/// Capabilities are per thread: call it before any other thread exists (before the tokio
/// runtime starts); threads created afterwards inherit the empty sets.
pub fn drop_privileges() -> Result<(), ProxyError> {
    let prctl = |what: &'static str, option: libc::c_int, arg: libc::c_ulong| {
        // SAFETY: prctl with these options takes plain integer arguments and touches no memory
        // of ours.
        let rc = unsafe {
            libc::prctl(
                option,
                arg,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(ProxyError::Privileges {
                what,
                source: std::io::Error::last_os_error(),
            })
        }
    };
    prctl(
        "PR_SET_PDEATHSIG",
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
    )?;
    prctl("PR_SET_DUMPABLE", libc::PR_SET_DUMPABLE, 0)?;
    prctl("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    // The bounding set needs CAP_SETPCAP, which the container has only with the gate on;
    // without it, empty permitted/inheritable/ambient sets already keep an exec from gaining
    // anything (and the proxy never execs).
    if caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false)
    {
        for cap in caps::all() {
            let _ = caps::drop(None, caps::CapSet::Bounding, cap);
        }
    }
    let empty = caps::CapsHashSet::new();
    for (what, set) in [
        ("clear ambient", caps::CapSet::Ambient),
        ("clear inheritable", caps::CapSet::Inheritable),
        ("clear effective", caps::CapSet::Effective),
        ("clear permitted", caps::CapSet::Permitted),
    ] {
        caps::set(None, set, &empty).map_err(|err| ProxyError::Privileges {
            what,
            source: std::io::Error::other(err.to_string()),
        })?;
    }
    Ok(())
}
