//! The dashboard terminal's WebSocket (`/ui/thread/{key}/terminal/socket`): a shell in the
//! thread's container as the agent (see `crate::terminal`). Binary frames carry the tty's
//! bytes both ways; text frames carry JSON (`loop_wire::terminal`): resizes from the page,
//! and from the daemon what the socket is attached to, and the shell's end.

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use loop_adapter::ChannelKey;
use loop_wire::terminal::{TerminalControl, TerminalEvent, TerminalSize};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::auth::bearer;
use super::state::{ApiError, ApiState};
use crate::gate::tokens::tokens_match;
use crate::terminal::{Attachment, TerminalHub};

/// Who is at a terminal: the dashboard session its shell belongs to (a reconnect of the same
/// session re-attaches to it).
///
/// Stands in for the dashboard's session extractor until it is on main: the admin token in
/// the `Authorization` header (never in the URL). A container's token never equals it.
pub(super) struct Viewer {
    session: String,
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match bearer(&parts.headers) {
            Some(token) if tokens_match(token, &state.admin_token) => Ok(Viewer {
                session: "admin".to_owned(),
            }),
            _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "not logged in")),
        }
    }
}

/// The terminal's size when the socket opens (`?cols=&rows=`).
#[derive(Debug, Deserialize)]
pub(super) struct SizeQuery {
    cols: Option<u16>,
    rows: Option<u16>,
}

impl SizeQuery {
    fn size(&self) -> TerminalSize {
        TerminalSize {
            cols: self.cols.unwrap_or(TerminalSize::DEFAULT.cols),
            rows: self.rows.unwrap_or(TerminalSize::DEFAULT.rows),
        }
        .clamped()
    }
}

/// The thread a dashboard URL names.
pub(super) fn channel_of(key: &str) -> Result<ChannelKey, ApiError> {
    key.parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such thread"))
}

/// `GET /ui/thread/{key}/terminal/socket`: the WebSocket.
pub(super) async fn socket(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(key): Path<String>,
    Query(size): Query<SizeQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let channel = channel_of(&key)?;
    let hub = state.terminals.clone();
    let size = size.size();
    Ok(upgrade.on_upgrade(move |socket| serve(socket, hub, viewer.session, channel, size)))
}

async fn serve(
    mut socket: WebSocket,
    hub: TerminalHub,
    session: String,
    channel: ChannelKey,
    size: TerminalSize,
) {
    let attachment = match hub.attach(&session, &channel, size).await {
        Ok(attachment) => attachment,
        Err(err) => {
            tracing::warn!(channel = %channel, error = %err, "cannot open a terminal");
            let _ = send_event(
                &mut socket,
                &TerminalEvent::Error {
                    message: err.to_string(),
                },
            )
            .await;
            let _ = socket.send(close_frame()).await;
            return;
        }
    };
    let shell = attachment.shell.clone();
    relay(&mut socket, &hub, attachment).await;
    hub.detach(&shell);
    let _ = socket.send(close_frame()).await;
}

/// Carries bytes between the socket and the shell until either ends.
async fn relay(socket: &mut WebSocket, hub: &TerminalHub, attachment: Attachment) {
    let Attachment {
        shell,
        replay,
        mut output,
        reattached,
    } = attachment;
    let attached = TerminalEvent::Attached {
        reattached,
        replayed: replay.len(),
        host: shell.host().to_owned(),
        container: shell.container().to_owned(),
    };
    if send_event(socket, &attached).await.is_err() {
        return;
    }
    if !replay.is_empty() && socket.send(WsMessage::Binary(replay.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            out = output.recv() => match out {
                Ok(bytes) => {
                    if socket.send(WsMessage::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // The page cannot keep up; it re-attaches and gets the scrollback.
                    let message = "the terminal fell behind its output; reconnect".to_owned();
                    let _ = send_event(socket, &TerminalEvent::Error { message }).await;
                    return;
                }
                Err(RecvError::Closed) => break,
            },
            () = shell.ended() => {
                // What the shell printed last is already queued for this socket.
                while let Ok(bytes) = output.try_recv() {
                    if socket.send(WsMessage::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                break;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Binary(bytes))) => shell.send_input(bytes).await,
                Some(Ok(WsMessage::Text(text))) => {
                    match serde_json::from_str::<TerminalControl>(text.as_str()) {
                        Ok(TerminalControl::Resize { cols, rows }) => {
                            hub.resize(&shell, TerminalSize { cols, rows }.clamped()).await;
                        }
                        Ok(TerminalControl::Input { data }) => {
                            shell.send_input(Bytes::from(data.into_bytes())).await;
                        }
                        Err(err) => {
                            tracing::debug!(error = %err, "an unknown terminal control frame");
                        }
                    }
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => return,
            },
        }
    }
    let _ = send_event(socket, &TerminalEvent::Exited).await;
}

async fn send_event(socket: &mut WebSocket, event: &TerminalEvent) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(WsMessage::Text(text.into())).await
}

fn close_frame() -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}
