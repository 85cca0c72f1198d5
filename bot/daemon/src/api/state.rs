//! What every handler shares: the state ([`ApiState`]), the error a client sees
//! ([`ApiError`]) and reading a JSON body.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loop_adapter_local::LocalAdapter;
use loop_runner::ContainerRegistry;
use loop_store::{Store, StoreError};
use loop_wire::api::ErrorBody;

use crate::dashboard::session::Sessions;
use crate::gate::GateHub;
use crate::gate::tokens::ContainerTokens;
use crate::orchestrator::{Orchestrator, OrchestratorError};
use crate::terminal::TerminalHub;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Intake, run events and the running turns; handlers hand it typed requests.
    pub orchestrator: Orchestrator,
    /// Reads and records that need no orchestration (tasks, approvals, usage).
    pub store: Store,
    /// Container tokens and approval waiters.
    pub gate: GateHub,
    pub local: LocalAdapter,
    pub registry: Option<ContainerRegistry>,
    pub admin_token: Arc<String>,
    /// The dashboard's terminals (shells kept across reconnects).
    pub terminals: TerminalHub,
    /// The dashboard's login codes and browser sessions (in memory: a restart logs out).
    pub dashboard: Sessions,
}

/// The dashboard's extractors (`dashboard::session`) find the sessions in the state.
impl axum::extract::FromRef<ApiState> for Sessions {
    fn from_ref(state: &ApiState) -> Sessions {
        state.dashboard.clone()
    }
}

impl ApiState {
    /// The API's view of a running daemon: the store and gate hub the orchestrator uses.
    pub fn new(
        orchestrator: Orchestrator,
        local: LocalAdapter,
        registry: Option<ContainerRegistry>,
        admin_token: String,
    ) -> ApiState {
        let grace = std::time::Duration::from_secs(orchestrator.config().terminal_grace_sec);
        ApiState {
            store: orchestrator.store().clone(),
            gate: orchestrator.gate().clone(),
            terminals: TerminalHub::new(orchestrator.clone(), grace),
            orchestrator,
            local,
            registry,
            admin_token: Arc::new(admin_token),
            dashboard: Sessions::default(),
        }
    }

    /// The live per-container tokens.
    pub(super) fn container_tokens(&self) -> &ContainerTokens {
        self.gate.tokens()
    }
}

/// An API error: a status and a reason the client can show.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            other => {
                tracing::error!(error = %other, "store error in the API");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the daemon log)",
                )
            }
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(err: OrchestratorError) -> Self {
        match err {
            OrchestratorError::Store(err) => err.into(),
            OrchestratorError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loop is shutting down")
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// Parses a JSON body with a reason on failure (axum's own rejection text is terse).
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}
