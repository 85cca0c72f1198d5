//! Starting `loop dockerproxy`: its settings from the environment the runner wrote, and
//! dropping privileges before it serves.

use std::path::PathBuf;

use loop_wire::container::{env, paths};

use super::policy::ProxyPolicyError;

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
        let listen = var(env::DOCKERPROXY_LISTEN)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_else(|| {
                vec![
                    PathBuf::from(paths::DOCKER_PROXY_SOCKET),
                    PathBuf::from(paths::DOCKER_CONVENTIONAL_SOCKET),
                ]
            });
        ProxyConfig {
            policy_file: PathBuf::from(
                var(env::DOCKERPROXY_POLICY_FILE).unwrap_or_else(|| paths::PROXY_POLICY.to_owned()),
            ),
            upstream: PathBuf::from(
                var(env::DOCKERPROXY_UPSTREAM).unwrap_or_else(|| paths::DOCKER_UPSTREAM.to_owned()),
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
