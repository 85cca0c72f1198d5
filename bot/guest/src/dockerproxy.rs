//! `loop dockerproxy`, which the entrypoint starts as root inside the agent container: drop
//! every capability, bind the sockets, serve. Approvals go through the same [`HttpApprover`]
//! as `loop syscallwrap`, audit records through the same [`AuditShipper`].

use std::sync::Arc;

use loop_gate::dockerproxy::{self, ProxyConfig, ProxyPolicy, ProxyPolicyFile};
use loop_wire::container::env;
use loop_wire::error_chain;
use tokio_util::sync::CancellationToken;

use crate::approver::HttpApprover;
use crate::audit::{AUDIT_FLUSH_TIMEOUT, AuditShipper};

/// Sets `LOOP_DOCKERPROXY_LOG` (`warn` by default) for the proxy's stderr (the container's log).
fn init_logging() {
    crate::init_stderr_logging(env::DOCKERPROXY_LOG);
}

/// `loop dockerproxy`: returns the exit status. Called before any thread exists, because
/// capabilities are dropped per thread.
pub fn run() -> i32 {
    init_logging();
    match serve() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("loop dockerproxy: {err}");
            1
        }
    }
}

fn serve() -> Result<(), String> {
    let config = ProxyConfig::from_env();
    // Read while still privileged: the policy file is the daemon user's, mode 0640.
    let file = ProxyPolicyFile::load(&config.policy_file).map_err(|e| error_chain(&e))?;
    let policy = ProxyPolicy::compile(&file).map_err(|e| error_chain(&e))?;
    dockerproxy::drop_privileges().map_err(|e| e.to_string())?;
    // Bound in reverse: the first socket (the one `DOCKER_HOST` names, which the entrypoint
    // waits for) comes last, so once it exists every socket is up.
    let mut listeners = Vec::new();
    for path in config.listen.iter().rev() {
        listeners.push(loop_gate::dockerproxy::server::bind(path).map_err(|e| error_chain(&e))?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let audit = AuditShipper::from_env();
    let proxy = Arc::new(dockerproxy::server::Proxy::new(
        policy,
        config.upstream.clone(),
        config.channel_id.clone(),
        Arc::new(HttpApprover::from_env()),
        Some(Arc::new(audit.clone())),
        config.max_pending,
    ));
    tracing::info!(listen = ?config.listen, upstream = %config.upstream.display(), "docker proxy serving");
    let shutdown = CancellationToken::new();
    let served = runtime.block_on(async {
        let signal = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal as unix_signal};
            if let Ok(mut term) = unix_signal(SignalKind::terminate()) {
                term.recv().await;
                signal.cancel();
            }
        });
        dockerproxy::server::serve(proxy, listeners, shutdown).await
    });
    audit.flush(AUDIT_FLUSH_TIMEOUT);
    served.map_err(|e| format!("serving failed: {e}"))
}
