//! The host API (axum). Local clients (`loop run`, `loop chat`) use admin routes with the admin
//! token; agent containers use container routes with their own token. Handlers parse and
//! validate, then hand a typed request to the orchestrator; they never touch Docker.
//!
//! loop binds loopback and the Docker bridge only, never every interface, and answers a
//! missing or wrong token with 401 before looking at the body.

mod auth;
mod gate;
mod git;
pub mod memory;
mod state;
pub mod tasks;
mod ui;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use loop_adapter::{Author, ChannelKey, Inbound, Message, PlatformKind, parse_command};
use loop_wire::routes;
use serde::Deserialize;

use crate::gate::tokens::tokens_match;
pub use auth::{
    ADMIN_TOKEN_FILE, DASHBOARD_PROXY_TOKEN_FILE, TokenError, bearer, load_or_create_admin_token,
    load_or_create_token, read_admin_token,
};
use loop_wire::api::{
    MessageAccepted, MessageState, PostCommand, PostMessage, RunEventWire, StreamItem,
    valid_channel_name,
};
use state::parse_body;
pub use state::{ApiError, ApiState};

use loop_store::{Accepted, StoreError};

/// Largest request body accepted (a chat message is far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The router with every route and layer.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route(routes::LOCAL_MESSAGES, post(post_message))
        .route(routes::LOCAL_MESSAGE, get(message_state))
        .route(routes::LOCAL_COMMANDS, post(post_command))
        .route(routes::LOCAL_STREAM, get(local_stream))
        .route(routes::STATUS, get(status))
        .route(routes::USAGE, get(usage))
        .route(routes::APPROVALS, get(gate::pending_approvals))
        .route(routes::APPROVAL, post(gate::decide))
        .route(routes::UI_LOGIN_CODE, post(ui::login_code))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route(routes::HEALTH, get(|| async { "ok" }))
        // Authenticated by the container's own token, inside the handler.
        .route(routes::GATE_APPROVAL, post(gate::container_approval))
        .route(routes::GATE_AUDIT, post(gate::container_audit))
        // Admin or container token, checked inside the handlers (a container sees its own
        // channel's tasks only).
        .route(
            routes::TASKS,
            post(tasks::create_task).get(tasks::list_tasks),
        )
        .route(
            routes::TASK,
            get(tasks::show_task)
                .patch(tasks::update_task)
                .delete(tasks::cancel_task),
        )
        .route(routes::MESSAGES, post(tasks::send_message))
        // Semantic memory: same token rules as tasks (see `memory.rs`).
        .route(routes::MEMORY_SAVE, post(memory::save))
        .route(routes::MEMORY_SEARCH, post(memory::search))
        .route(routes::MEMORY_FORGET, post(memory::forget))
        .route(routes::MEMORY_INDEX, post(memory::index))
        // Container token: the agent asks for its branch to be pushed (see `git.rs`).
        .route(routes::GIT_PUSH, post(git::push))
        .route(routes::GIT_PULL_REQUEST, post(git::pull_request))
        .merge(admin)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn require_admin(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match bearer(request.headers()) {
        Some(token) if tokens_match(token, &state.admin_token) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (local clients read it from ~/.loop/admin.token)",
        )
        .into_response(),
    }
}

fn local_channel(name: &str) -> Result<ChannelKey, ApiError> {
    if valid_channel_name(name) {
        Ok(ChannelKey::channel(PlatformKind::Local, name))
    } else {
        Err(ApiError::bad_request(
            "channel must be 1-64 letters, digits, '.', '_' or '-'",
        ))
    }
}

async fn post_message(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<MessageAccepted>), ApiError> {
    let request: PostMessage = parse_body(&body)?;
    let channel = local_channel(&request.channel)?;
    if request.text.trim().is_empty() {
        return Err(ApiError::bad_request("text is empty"));
    }
    let message_id = request
        .message_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let author = request.author.unwrap_or_else(|| "local".to_owned());
    let message = Message {
        message_id: message_id.clone(),
        channel: channel.clone(),
        author: Author {
            id: author.clone(),
            name: author,
            is_bot: false,
            roles: Vec::new(),
        },
        text: request.text,
        triggers: true,
        work_dir: request.dir,
    };
    let accepted = state.orchestrator.accept(Inbound::Message(message)).await?;
    let inbox_id = match accepted {
        Some(Accepted::New(id)) => Some(id),
        _ => None,
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageAccepted {
            channel_key: channel.to_string(),
            message_id,
            inbox_id,
        }),
    ))
}

async fn message_state(
    State(state): State<ApiState>,
    Path(inbox_id): Path<i64>,
) -> Result<Json<MessageState>, ApiError> {
    let store = &state.store;
    let message = store.inbox_message(inbox_id).await?;
    if !message.channel_key.starts_with("local:") {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not a local message"));
    }
    // A claimed message names its run a moment before the run row exists.
    let run = match &message.run_id {
        Some(run_id) => match store.run(run_id).await {
            Ok(run) => Some(run),
            Err(StoreError::NotFound(_)) => None,
            Err(err) => return Err(err.into()),
        },
        None => None,
    };
    Ok(Json(MessageState {
        inbox_id,
        status: message.status.as_str().to_owned(),
        run_id: message.run_id,
        run_status: run.as_ref().map(|r| r.status.as_str().to_owned()),
        answer: run.as_ref().and_then(|r| r.answer.clone()),
        error: run.and_then(|r| r.error),
    }))
}

async fn post_command(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let request: PostCommand = parse_body(&body)?;
    let channel = local_channel(&request.channel)?;
    let command = parse_command(&request.command)
        .ok_or_else(|| ApiError::bad_request("not a /loop command"))?;
    state
        .orchestrator
        .accept(Inbound::Command {
            channel,
            author: Author {
                id: "local".into(),
                name: "local".into(),
                is_bot: false,
                roles: Vec::new(),
            },
            command,
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
struct StreamQuery {
    channel: String,
}

async fn local_stream(
    State(state): State<ApiState>,
    Query(query): Query<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let channel = local_channel(&query.channel)?.to_string();
    Ok(upgrade.on_upgrade(move |socket| stream_channel(socket, state, channel)))
}

async fn stream_channel(mut socket: WebSocket, state: ApiState, channel: String) {
    let mut chat = state.local.subscribe();
    let mut runs = state.orchestrator.subscribe();
    loop {
        let item = tokio::select! {
            event = chat.recv() => match event {
                Ok(event) if event.channel() == channel => StreamItem::Chat(event),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            },
            event = runs.recv() => match event {
                Ok(event) => {
                    let wire = RunEventWire::from(&event);
                    if wire.channel != channel { continue; }
                    StreamItem::Run(wire)
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(_)) => continue,
                _ => break,
            },
        };
        let Ok(text) = serde_json::to_string(&item) else {
            continue;
        };
        if socket.send(WsMessage::Text(text.into())).await.is_err() {
            break;
        }
    }
}

async fn status(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let containers = state
        .registry
        .as_ref()
        .map(|r| r.list())
        .unwrap_or_default();
    let usage = state
        .orchestrator
        .running_container_usage(&containers)
        .await;
    let containers: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| {
            let mut entry = serde_json::to_value(c).unwrap_or_default();
            if let (Some(fields), Some(used)) = (entry.as_object_mut(), usage.get(&c.id))
                && let Ok(serde_json::Value::Object(used)) = serde_json::to_value(used)
            {
                fields.extend(used);
            }
            entry
        })
        .collect();
    Json(serde_json::json!({
        "running": state.orchestrator.running(),
        "warm": state.orchestrator.warm_agents().await,
        "containers": containers,
    }))
}

async fn usage(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let usage = state.store.usage().await?;
    Ok(Json(serde_json::to_value(usage).unwrap_or_default()))
}
