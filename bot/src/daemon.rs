//! `loop serve`: startup order, the root cancellation token, and shutdown order.
//!
//! Startup: config → database (migrations) → host API → platforms. Shutdown (SIGTERM or
//! Ctrl-C): cancel the root token so intake stops, wait for every task the tracker owns, then
//! close the database.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid api_addr {addr:?}: {reason}")]
    ApiAddr { addr: String, reason: String },
    #[error("cannot bind the host API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves `api_addr` (`:8222`, `127.0.0.1:8222`, `0.0.0.0:8222`) to where loop binds.
/// A bare port binds loopback: the Go Loop's habit of listening on every interface is exactly
/// what loop must not repeat.
pub fn api_bind_addr(api_addr: &str) -> Result<SocketAddr, DaemonError> {
    let text = if let Some(port) = api_addr.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        api_addr.to_owned()
    };
    text.parse()
        .map_err(|err: std::net::AddrParseError| DaemonError::ApiAddr {
            addr: api_addr.to_owned(),
            reason: err.to_string(),
        })
}

/// Runs until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let store = Store::open(&config.database_url()).await?;
    tracing::info!(backend = store.backend_name(), "database ready");
    let tracker = TaskTracker::new();

    let addr = api_bind_addr(&config.api_addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })?;
    tracing::info!(%addr, "host API listening");
    let router = axum::Router::new().route("/api/health", axum::routing::get(|| async { "ok" }));
    let api_token = shutdown.child_token();
    tracker.spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(api_token.cancelled_owned())
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "host API stopped");
        }
    });

    shutdown.cancelled().await;
    tracing::info!("shutting down: intake stopped, waiting for tasks");
    tracker.close();
    tracker.wait().await;
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_loopback() {
        assert_eq!(
            api_bind_addr(":8222").expect("ok").to_string(),
            "127.0.0.1:8222"
        );
        assert_eq!(
            api_bind_addr("0.0.0.0:9000").expect("ok").to_string(),
            "0.0.0.0:9000"
        );
        assert!(api_bind_addr("nonsense").is_err());
    }
}
