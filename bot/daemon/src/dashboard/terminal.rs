//! `/ui/thread/{key}/terminal`: a shell in the thread's container, as its agent (see
//! `crate::terminal` for the shell's life, `loop_runner::shell` for how it runs), drawn by
//! xterm.js. Its WebSocket (`.../terminal/socket`) carries the tty's bytes both ways in binary
//! frames and JSON in text frames (`loop_wire::terminal`): resizes from the page; from the
//! daemon what the socket is attached to, and the shell's end.
//!
//! Both routes take the dashboard session (cookie, and `Origin` on the WebSocket): a reconnect
//! of the same session re-attaches to its shell; a bearer token, the admin's or a container's,
//! opens neither.

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use loop_adapter::ChannelKey;
use loop_wire::terminal::{TerminalControl, TerminalEvent, TerminalSize};
use maud::html;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::access::Access;
use super::assets::{ASSETS, Assets};
use super::page::{self, PageError, parse_key, thread_url};
use super::session::{ChatUser, DashboardSession};
use crate::api::ApiState;
use crate::permissions::Role;
use crate::terminal::{Attachment, TerminalHub};

/// The page's element ids.
pub const SCREEN: &str = "terminal";
pub const STATUS: &str = "terminal-status";

/// `GET /ui/thread/{key}/terminal`.
pub async fn page(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    session: DashboardSession,
) -> Result<Response, PageError> {
    let key = parse_key(&raw)?;
    // A shell does what the agent could, without asking the agent: owners only, like
    // pointing the channel at a directory.
    Access::of(&state, &session)
        .require(&key, Role::Owner)
        .await?;
    let name = key.to_string();
    // xterm.js adds `<style>` elements of its own; the page's script stamps them with this
    // response's nonce, which the policy below allows besides the daemon's own files.
    let nonce = crate::gate::tokens::random_token();
    let head = html! {
        link rel="stylesheet" href=(Assets::url(&ASSETS.xterm_css));
        link rel="stylesheet" href=(Assets::url(&ASSETS.views_css));
        script src=(Assets::url(&ASSETS.xterm_js)) defer {}
        script src=(Assets::url(&ASSETS.xterm_fit)) defer {}
        script src=(Assets::url(&ASSETS.terminal_js)) nonce=(nonce) defer {}
    };
    let title = format!("Terminal · {name}");
    let mut response = page::render_with(
        page::Shell {
            title: &title,
            nav: page::Nav::Thread,
            session: &session,
            live: None,
        },
        head,
        html! {
            h1 {
                span.platform { (key.platform.as_str()) } " "
                a href=(thread_url(&name)) { (name) }
                " › terminal"
            }
            p.muted.small {
                "A shell in this thread's container as its agent: its files, its user, its "
                "gate. It stays open for a while when you leave, and comes back when you do."
            }
            p.terminal-status id=(STATUS) role="status" { "connecting…" }
            div.terminal-screen id=(SCREEN)
                data-socket=(loop_wire::routes::ui_terminal_socket(&name)) {}
        },
    );
    if let Ok(policy) = HeaderValue::from_str(&page::csp_with_style_nonce(&nonce)) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    Ok(response)
}

/// The terminal's size when the socket opens (`?cols=&rows=`).
#[derive(Debug, Deserialize)]
pub struct SizeQuery {
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

/// `GET /ui/thread/{key}/terminal/socket`: the WebSocket.
pub async fn socket(
    State(state): State<ApiState>,
    session: DashboardSession,
    Path(raw): Path<String>,
    Query(size): Query<SizeQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, PageError> {
    let channel = parse_key(&raw)?;
    Access::of(&state, &session)
        .require(&channel, Role::Owner)
        .await?;
    let hub = state.terminals.clone();
    let size = size.size();
    let owner = session.id();
    let lost = access_lost(state, session.acts_as.clone(), channel.clone());
    Ok(upgrade.on_upgrade(move |socket| serve(socket, hub, owner, channel, size, lost)))
}

/// Resolves when the session (acting as `acts_as`) is no longer an owner of `channel`: checked
/// each time a channel's grants change. The operator's own login never loses it.
async fn access_lost(state: ApiState, acts_as: Option<ChatUser>, channel: ChannelKey) {
    if acts_as.is_none() {
        return std::future::pending().await;
    }
    let mut changed = state.orchestrator.grants_changed();
    while changed.changed().await.is_ok() {
        let mut access = Access::acting_as(&state, acts_as.as_ref());
        if access.require(&channel, Role::Owner).await.is_err() {
            return;
        }
    }
    std::future::pending().await
}

async fn serve(
    mut socket: WebSocket,
    hub: TerminalHub,
    owner: String,
    channel: ChannelKey,
    size: TerminalSize,
    lost: impl std::future::Future<Output = ()>,
) {
    let attachment = match hub.attach(&owner, &channel, size).await {
        Ok(attachment) => attachment,
        Err(err) => {
            tracing::warn!(channel = %channel, error = %err, "cannot open a terminal");
            let message = err.to_string();
            let _ = send_event(&mut socket, &TerminalEvent::Error { message }).await;
            let _ = socket.send(close_frame()).await;
            return;
        }
    };
    let shell = attachment.shell.clone();
    tokio::select! {
        () = relay(&mut socket, &hub, attachment) => {}
        () = lost => {
            // Not kept for a reconnect: the user could not attach again anyway.
            shell.end();
            let message = "you are no longer an owner of this channel: the terminal is closed".to_owned();
            let _ = send_event(&mut socket, &TerminalEvent::Error { message }).await;
        }
    }
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
