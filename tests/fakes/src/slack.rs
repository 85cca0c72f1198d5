//! A fake Slack: the Web API over HTTP (`POST /api/{method}`) and Socket Mode over a WebSocket,
//! written from Slack's public documentation (api.slack.com: "Using Socket Mode", the Events
//! API payloads, `block_actions` and slash command payloads, the Web API method pages, "Rate
//! limits"). It keeps channels, messages, reactions and ephemeral messages the way a workspace
//! would, and lets a test act as the people in it.
//!
//! Faithful on purpose:
//! - tokens: `apps.connections.open` wants the app-level token (`xapp-`), every other method
//!   the bot token (`xoxb-`); a wrong one is `{"ok": false, "error": "invalid_auth"}`;
//! - HTTP 429 with `Retry-After` (seconds) when a test asks for rate limiting;
//! - every envelope must be acknowledged with `{"envelope_id": ...}`; unacknowledged envelopes
//!   are sent again, with `retry_attempt` raised, when the app reconnects;
//! - an app may keep several Socket Mode connections open (up to 10; one more is told
//!   `too_many_websockets`), and each envelope goes to one of them;
//! - a person's message in a channel produces a `message` event and, when it mentions the bot,
//!   an `app_mention` event too (two events, two event ids, one message ts); in a DM there is
//!   no `app_mention`;
//! - the bot's own posts come back as `message` events carrying `bot_id`, as they do for an
//!   app subscribed to `message.channels`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The bot token the fake accepts for Web API calls.
pub const BOT_TOKEN: &str = "xoxb-fake-bot-token";
/// The app-level token the fake accepts for `apps.connections.open`.
pub const APP_TOKEN: &str = "xapp-fake-app-token";
/// The bot's user id (what `auth.test` reports and what mentions look like: `<@UBOT0001>`).
pub const BOT_USER: &str = "UBOT0001";
/// The bot's bot id (`bot_id` on its messages).
pub const BOT_ID: &str = "BBOT0001";
pub const TEAM_ID: &str = "T0001";
pub const APP_ID: &str = "A0001";

/// One Web API call as received.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    /// The arguments, from a JSON body, a form body or the query string.
    pub args: Value,
    /// The HTTP status the fake answered with.
    pub status: u16,
    /// When the call arrived (benchmarks measure what a person would see, and when).
    pub at: std::time::Instant,
}

/// A message in the fake workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    /// The author's user id (the bot's is [`BOT_USER`]).
    pub user: String,
    pub text: String,
    /// Block Kit blocks, when the message has any.
    pub blocks: Option<Value>,
    /// How many times `chat.update` changed it.
    pub edits: u32,
    /// Ids of the files shared with it (`files.completeUploadExternal`).
    pub files: Vec<String>,
}

/// A reaction the bot added (and did not remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub channel: String,
    pub ts: String,
    pub name: String,
}

/// An ephemeral message (`chat.postEphemeral`, or a response to an interaction).
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
}

/// A person's message as the fake delivered it.
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    /// Event ids of the events it produced (`message`, and `app_mention` when it mentions).
    pub event_ids: Vec<String>,
}

enum WsCommand {
    Send(String),
    /// Close the TCP connection without a close frame, as a network drop would.
    Drop,
}

/// A file uploaded through `files.getUploadURLExternal` + `files.completeUploadExternal`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackFile {
    pub id: String,
    pub filename: String,
    /// The length announced to `files.getUploadURLExternal`.
    pub length: usize,
    /// What was posted to the upload URL.
    pub content: Option<String>,
    /// Where it was shared by `files.completeUploadExternal`.
    pub channel: Option<String>,
    pub thread_ts: Option<String>,
    pub comment: Option<String>,
}

#[derive(Default)]
struct World {
    calls: Vec<ApiCall>,
    messages: Vec<SlackMessage>,
    reactions: Vec<Reaction>,
    ephemerals: Vec<Ephemeral>,
    /// Rate limits to apply: method → (calls still to refuse, Retry-After seconds).
    rate_limits: HashMap<String, (u32, u64)>,
    /// Envelopes sent and not acknowledged yet: envelope id → envelope.
    unacked: Vec<(String, Value)>,
    /// Envelope ids acknowledged, with any payload the ack carried.
    acks: Vec<(String, Value)>,
    /// Every envelope ever sent (including re-sends), in order.
    sent: Vec<Value>,
    /// Socket Mode connections opened so far.
    connections: u32,
    /// The live connections, oldest first.
    sockets: Vec<(u32, mpsc::UnboundedSender<WsCommand>)>,
    /// Response URL posts (`response_url` of interactions and commands).
    responses: Vec<Value>,
    files: Vec<SlackFile>,
}

struct Shared {
    addr: SocketAddr,
    world: Mutex<World>,
    /// Bumped on every change, so tests can wait for a condition without sleeping.
    version: watch::Sender<u64>,
    clock: AtomicU64,
    ids: AtomicU64,
    shutdown: CancellationToken,
}

impl Shared {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A fresh message timestamp: unique and increasing, in Slack's `seconds.micros` form.
    fn next_ts(&self) -> String {
        let n = self.clock.fetch_add(1, Ordering::SeqCst);
        format!("{}.{:06}", 1_700_000_000 + n / 1000, (n % 1000) * 100 + 1)
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}{:08}", self.ids.fetch_add(1, Ordering::SeqCst))
    }

    /// Sends an envelope on one live connection (in turn), or keeps it for the next one.
    fn deliver(&self, envelope: Value) {
        let id = envelope["envelope_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let text = envelope.to_string();
        let mut world = self.world();
        world.sent.push(envelope.clone());
        world.unacked.push((id, envelope));
        let live = world.sockets.len();
        let first = world.sent.len() % live.max(1);
        // A connection that is closing refuses; the next one takes the envelope.
        for i in 0..live {
            let (_, socket) = &world.sockets[(first + i) % live];
            if socket.send(WsCommand::Send(text.clone())).is_ok() {
                break;
            }
        }
        drop(world);
        self.changed();
    }

    fn events_api_envelope(&self, event: Value, event_id: &str) -> Value {
        json!({
            "envelope_id": self.next_id("env-"),
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "fake-verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": event,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": 1_700_000_000,
                "authorizations": [{
                    "enterprise_id": null,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER,
                    "is_bot": true,
                    "is_enterprise_install": false
                }],
                "is_ext_shared_channel": false,
                "event_context": format!("4-{event_id}")
            }
        })
    }
}

/// The fake Slack server. Dropping it stops the server.
pub struct FakeSlack {
    shared: Arc<Shared>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl FakeSlack {
    /// Starts a server on `127.0.0.1` with an ephemeral port; it accepts connections when this
    /// returns.
    pub async fn start() -> std::io::Result<FakeSlack> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            addr,
            world: Mutex::new(World::default()),
            version,
            clock: AtomicU64::new(1),
            ids: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        });
        let router = Router::new()
            .route("/api/{method}", any(web_api))
            .route("/link/", get(socket_mode))
            .route("/response/{id}", any(response_url))
            .route("/upload/{id}", any(upload))
            .with_state(Arc::clone(&shared));
        let stop = shared.shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
        });
        Ok(FakeSlack { shared })
    }

    /// The Web API base URL, for `SlackClientHyperConnector::with_slack_api_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.shared.addr)
    }

    /// How a mention of the bot is written in message text.
    pub fn mention() -> String {
        format!("<@{BOT_USER}>")
    }

    /// Refuses the next `times` calls of `method` with 429 and `Retry-After: retry_after_sec`.
    pub fn rate_limit(&self, method: &str, times: u32, retry_after_sec: u64) {
        self.shared
            .world()
            .rate_limits
            .insert(method.to_owned(), (times, retry_after_sec));
    }

    /// A person posts `text` in `channel` (a thread reply when `thread_ts` is set). Returns
    /// the message's ts and the events it produced.
    pub fn post_as_user(
        &self,
        user: &str,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> Posted {
        let ts = self.shared.next_ts();
        self.shared.world().messages.push(SlackMessage {
            channel: channel.to_owned(),
            ts: ts.clone(),
            thread_ts: thread_ts.map(str::to_owned),
            user: user.to_owned(),
            text: text.to_owned(),
            blocks: None,
            edits: 0,
            files: Vec::new(),
        });
        let is_dm = channel.starts_with('D');
        let mut event = json!({
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "client_msg_id": format!("cm-{ts}"),
            "team": TEAM_ID,
            "channel_type": if is_dm { "im" } else { "channel" },
        });
        if let Some(thread) = thread_ts {
            event["thread_ts"] = json!(thread);
            event["parent_user_id"] = json!(user);
        }
        let mut event_ids = Vec::new();
        let id = self.shared.next_id("Ev");
        self.shared
            .deliver(self.shared.events_api_envelope(event.clone(), &id));
        event_ids.push(id);
        if !is_dm && text.contains(&FakeSlack::mention()) {
            let mut mention = event;
            mention["type"] = json!("app_mention");
            if let Some(map) = mention.as_object_mut() {
                map.remove("channel_type");
                map.remove("parent_user_id");
            }
            let id = self.shared.next_id("Ev");
            self.shared
                .deliver(self.shared.events_api_envelope(mention, &id));
            event_ids.push(id);
        }
        Posted {
            channel: channel.to_owned(),
            ts,
            event_ids,
        }
    }

    /// A bot (not this app) posts in a channel, mentioning whoever it likes.
    pub fn post_as_other_bot(&self, channel: &str, text: &str) -> Posted {
        let ts = self.shared.next_ts();
        let event = json!({
            "type": "message",
            "subtype": "bot_message",
            "channel": channel,
            "bot_id": "BOTHER01",
            "username": "other-bot",
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "channel",
        });
        let id = self.shared.next_id("Ev");
        self.shared
            .deliver(self.shared.events_api_envelope(event, &id));
        Posted {
            channel: channel.to_owned(),
            ts,
            event_ids: vec![id],
        }
    }

    /// Delivers an event again with the same event id, as Slack does when it retries.
    pub fn redeliver(&self, event_id: &str) -> bool {
        let original = self
            .shared
            .world()
            .sent
            .iter()
            .find(|e| e["payload"]["event_id"] == event_id)
            .cloned();
        let Some(mut envelope) = original else {
            return false;
        };
        envelope["envelope_id"] = json!(self.shared.next_id("env-"));
        envelope["retry_attempt"] = json!(1);
        envelope["retry_reason"] = json!("http_timeout");
        self.shared.deliver(envelope);
        true
    }

    /// A person clicks a button of a message (a `block_actions` interaction).
    pub fn click(&self, user: &str, channel: &str, ts: &str, action_id: &str) -> bool {
        let message = self
            .messages()
            .into_iter()
            .find(|m| m.channel == channel && m.ts == ts);
        let Some(message) = message else {
            return false;
        };
        let button = message
            .blocks
            .as_ref()
            .and_then(|blocks| find_button(blocks, action_id));
        let Some((block_id, button)) = button else {
            return false;
        };
        let response_id = self.shared.next_id("r");
        let action_ts = self.shared.next_ts();
        let mut message_json = json!({
            "type": "message",
            "user": message.user,
            "ts": message.ts,
            "text": message.text,
            "blocks": message.blocks,
            "team": TEAM_ID,
        });
        if message.user == BOT_USER {
            message_json["bot_id"] = json!(BOT_ID);
            message_json["app_id"] = json!(APP_ID);
        }
        if let Some(thread) = &message.thread_ts {
            message_json["thread_ts"] = json!(thread);
        }
        let envelope = json!({
            "envelope_id": self.shared.next_id("env-"),
            "type": "interactive",
            "accepts_response_payload": false,
            "payload": {
                "type": "block_actions",
                "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM_ID},
                "api_app_id": APP_ID,
                "token": "fake-verification-token",
                "container": {
                    "type": "message",
                    "message_ts": message.ts,
                    "channel_id": channel,
                    "is_ephemeral": false,
                    "thread_ts": message.thread_ts,
                },
                "trigger_id": format!("trig-{response_id}"),
                "team": {"id": TEAM_ID, "domain": "fake"},
                "enterprise": null,
                "is_enterprise_install": false,
                "channel": {"id": channel, "name": "general"},
                "message": message_json,
                "state": {"values": {}},
                "response_url": format!("http://{}/response/{response_id}", self.shared.addr),
                "actions": [{
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": button["text"],
                    "value": button["value"],
                    "style": button["style"],
                    "type": "button",
                    "action_ts": action_ts,
                }],
            }
        });
        self.shared.deliver(envelope);
        true
    }

    /// A person runs a slash command in a channel. Returns the envelope id.
    pub fn slash_command(&self, user: &str, channel: &str, command: &str, text: &str) -> String {
        let envelope_id = self.shared.next_id("env-");
        let response_id = self.shared.next_id("r");
        let envelope = json!({
            "envelope_id": envelope_id,
            "type": "slash_commands",
            "accepts_response_payload": true,
            "payload": {
                "token": "fake-verification-token",
                "team_id": TEAM_ID,
                "team_domain": "fake",
                "channel_id": channel,
                "channel_name": "general",
                "user_id": user,
                "user_name": user.to_lowercase(),
                "command": command,
                "text": text,
                "api_app_id": APP_ID,
                "is_enterprise_install": "false",
                "response_url": format!("http://{}/response/{response_id}", self.shared.addr),
                "trigger_id": format!("trig-{response_id}"),
            }
        });
        self.shared.deliver(envelope);
        envelope_id
    }

    /// Drops every live Socket Mode connection without a close frame (a network failure).
    pub fn drop_connection(&self) {
        for (_, socket) in std::mem::take(&mut self.shared.world().sockets) {
            let _ = socket.send(WsCommand::Drop);
        }
    }

    /// Sends a `disconnect` envelope (Slack does so before it refreshes a connection) and
    /// closes the connection shortly after, as Slack does.
    pub fn send_disconnect(&self, reason: &str) {
        let text = disconnect(reason);
        for (_, socket) in &self.shared.world().sockets {
            let _ = socket.send(WsCommand::Send(text.clone()));
        }
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.shared.world().calls.clone()
    }

    /// Calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<ApiCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    pub fn messages(&self) -> Vec<SlackMessage> {
        self.shared.world().messages.clone()
    }

    /// Messages the bot posted in a thread (or at the top level of a channel when `None`).
    pub fn bot_messages_in(&self, channel: &str, thread_ts: Option<&str>) -> Vec<SlackMessage> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m.user == BOT_USER && m.channel == channel && m.thread_ts.as_deref() == thread_ts
            })
            .collect()
    }

    pub fn reactions(&self) -> Vec<Reaction> {
        self.shared.world().reactions.clone()
    }

    /// Reactions on one message.
    pub fn reactions_on(&self, channel: &str, ts: &str) -> Vec<String> {
        self.reactions()
            .into_iter()
            .filter(|r| r.channel == channel && r.ts == ts)
            .map(|r| r.name)
            .collect()
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.shared.world().ephemerals.clone()
    }

    /// Files uploaded and shared.
    pub fn files(&self) -> Vec<SlackFile> {
        self.shared.world().files.clone()
    }

    /// Bodies posted to `response_url`s.
    pub fn responses(&self) -> Vec<Value> {
        self.shared.world().responses.clone()
    }

    /// Acknowledged envelope ids, with the payload of each ack (`Null` when it had none).
    pub fn acks(&self) -> Vec<(String, Value)> {
        self.shared.world().acks.clone()
    }

    /// Envelopes sent and not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.shared.world().unacked.len()
    }

    pub fn is_acked(&self, envelope_id: &str) -> bool {
        self.shared
            .world()
            .acks
            .iter()
            .any(|(id, _)| id == envelope_id)
    }

    /// Socket Mode connections opened so far (a reconnect makes it grow).
    pub fn connections(&self) -> u32 {
        self.shared.world().connections
    }

    /// Whether a Socket Mode connection is open now.
    pub fn is_connected(&self) -> bool {
        !self.shared.world().sockets.is_empty()
    }

    /// Waits until `check` returns something, re-checking on every change; `None` after
    /// `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&FakeSlack) -> Option<T>,
    ) -> Option<T> {
        let mut version = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            version.borrow_and_update();
            if let Some(found) = check(self) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return check(self),
            }
        }
    }
}

fn find_button(blocks: &Value, action_id: &str) -> Option<(Value, Value)> {
    blocks.as_array()?.iter().find_map(|block| {
        block["elements"].as_array()?.iter().find_map(|element| {
            (element["type"] == "button" && element["action_id"] == action_id)
                .then(|| (block["block_id"].clone(), element.clone()))
        })
    })
}

/// Arguments of a Web API call: JSON body, form body, or query string (Slack accepts all).
fn call_args(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Value {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut args = serde_json::Map::new();
    if let Some(query) = query {
        for (k, v) in url_pairs(query) {
            args.insert(k, Value::String(v));
        }
    }
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            args.extend(map);
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        for (k, v) in url_pairs(text) {
            // Form bodies carry blocks as a JSON string.
            let value = if k == "blocks" {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            args.insert(k, value);
        }
    }
    Value::Object(args)
}

fn url_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

fn ok(mut body: Value) -> Value {
    body["ok"] = json!(true);
    body
}

fn fail(error: &str) -> Value {
    json!({"ok": false, "error": error})
}

fn text_arg(args: &Value, key: &str) -> Option<String> {
    match &args[key] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

async fn web_api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = call_args(&headers, uri.query(), &body);
    let token = bearer(&headers).or_else(|| text_arg(&args, "token"));

    // Rate limiting comes first: Slack refuses before it looks at the request.
    let limited = {
        let mut world = shared.world();
        match world.rate_limits.get_mut(&method) {
            Some((left, retry_after)) if *left > 0 => {
                *left -= 1;
                Some(*retry_after)
            }
            _ => None,
        }
    };
    if let Some(retry_after) = limited {
        record(&shared, &method, args, 429);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(fail("ratelimited")),
        )
            .into_response();
    }

    let wants_app_token = method == "apps.connections.open";
    let expected = if wants_app_token {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    let body = if token.as_deref() != Some(expected) {
        if token.is_none() {
            fail("not_authed")
        } else {
            fail("invalid_auth")
        }
    } else {
        answer(&shared, &method, &args)
    };
    record(&shared, &method, args, 200);
    axum::Json(body).into_response()
}

fn record(shared: &Shared, method: &str, args: Value, status: u16) {
    shared.world().calls.push(ApiCall {
        method: method.to_owned(),
        args,
        status,
        at: std::time::Instant::now(),
    });
    shared.changed();
}

fn answer(shared: &Arc<Shared>, method: &str, args: &Value) -> Value {
    match method {
        "auth.test" => ok(json!({
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "loop",
            "team_id": TEAM_ID,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": false,
        })),
        "apps.connections.open" => ok(json!({
            "url": format!("ws://{}/link/?ticket={}&app_id={APP_ID}", shared.addr, shared.next_id("t")),
        })),
        "chat.postMessage" => post_message(shared, args),
        "chat.update" => update_message(shared, args),
        "chat.postEphemeral" => {
            let (Some(channel), Some(user)) = (text_arg(args, "channel"), text_arg(args, "user"))
            else {
                return fail("invalid_arguments");
            };
            shared.world().ephemerals.push(Ephemeral {
                channel,
                user,
                text: text_arg(args, "text").unwrap_or_default(),
            });
            ok(json!({"message_ts": shared.next_ts()}))
        }
        "reactions.add" | "reactions.remove" => react(shared, method, args),
        "files.getUploadURLExternal" => {
            let (Some(filename), Some(length)) =
                (text_arg(args, "filename"), text_arg(args, "length"))
            else {
                return fail("invalid_arguments");
            };
            let file_id = shared.next_id("F");
            shared.world().files.push(SlackFile {
                id: file_id.clone(),
                filename,
                length: length.parse().unwrap_or(0),
                content: None,
                channel: None,
                thread_ts: None,
                comment: None,
            });
            ok(json!({
                "upload_url": format!("http://{}/upload/{file_id}", shared.addr),
                "file_id": file_id,
            }))
        }
        "files.completeUploadExternal" => complete_upload(shared, args),
        _ => fail("unknown_method"),
    }
}

fn post_message(shared: &Arc<Shared>, args: &Value) -> Value {
    let Some(channel) = text_arg(args, "channel") else {
        return fail("channel_not_found");
    };
    let text = text_arg(args, "text").unwrap_or_default();
    let blocks = args.get("blocks").filter(|b| !b.is_null()).cloned();
    if text.is_empty() && blocks.is_none() {
        return fail("no_text");
    }
    let thread_ts = text_arg(args, "thread_ts");
    let ts = shared.next_ts();
    let message = SlackMessage {
        channel: channel.clone(),
        ts: ts.clone(),
        thread_ts: thread_ts.clone(),
        user: BOT_USER.to_owned(),
        text: text.clone(),
        blocks: blocks.clone(),
        edits: 0,
        files: Vec::new(),
    };
    shared.world().messages.push(message);
    let mut json_message = json!({
        "type": "message",
        "user": BOT_USER,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "text": text,
        "ts": ts,
        "team": TEAM_ID,
    });
    if let Some(blocks) = blocks {
        json_message["blocks"] = blocks;
    }
    if let Some(thread) = &thread_ts {
        json_message["thread_ts"] = json!(thread);
    }
    // The app hears its own message, as a `message` event with its bot id.
    let mut event = json_message.clone();
    event["channel"] = json!(channel);
    event["event_ts"] = json!(ts);
    event["channel_type"] = json!(if channel.starts_with('D') {
        "im"
    } else {
        "channel"
    });
    let id = shared.next_id("Ev");
    shared.deliver(shared.events_api_envelope(event, &id));
    ok(json!({"channel": channel, "ts": ts, "message": json_message}))
}

fn update_message(shared: &Arc<Shared>, args: &Value) -> Value {
    let (Some(channel), Some(ts)) = (text_arg(args, "channel"), text_arg(args, "ts")) else {
        return fail("message_not_found");
    };
    let text = text_arg(args, "text");
    let blocks = args.get("blocks").filter(|b| !b.is_null()).cloned();
    let mut world = shared.world();
    let Some(message) = world
        .messages
        .iter_mut()
        .find(|m| m.channel == channel && m.ts == ts)
    else {
        return fail("message_not_found");
    };
    if message.user != BOT_USER {
        return fail("cant_update_message");
    }
    if let Some(text) = &text {
        message.text = text.clone();
    }
    // Slack keeps the blocks when the update has none, and drops them for `"blocks": []`.
    if let Some(blocks) = blocks {
        message.blocks = blocks
            .as_array()
            .filter(|b| !b.is_empty())
            .map(|_| blocks.clone());
    }
    message.edits += 1;
    let text = message.text.clone();
    let mut updated =
        json!({"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": text, "ts": ts});
    if let Some(blocks) = &message.blocks {
        updated["blocks"] = blocks.clone();
    }
    drop(world);
    shared.changed();
    ok(json!({"channel": channel, "ts": ts, "text": text, "message": updated}))
}

fn react(shared: &Arc<Shared>, method: &str, args: &Value) -> Value {
    let (Some(channel), Some(ts), Some(name)) = (
        text_arg(args, "channel"),
        text_arg(args, "timestamp"),
        text_arg(args, "name"),
    ) else {
        return fail("invalid_arguments");
    };
    let reaction = Reaction { channel, ts, name };
    let mut world = shared.world();
    let exists = world.reactions.contains(&reaction);
    let body = match (method, exists) {
        ("reactions.add", true) => fail("already_reacted"),
        ("reactions.add", false) => {
            world.reactions.push(reaction);
            ok(json!({}))
        }
        (_, true) => {
            world.reactions.retain(|r| *r != reaction);
            ok(json!({}))
        }
        (_, false) => fail("no_reaction"),
    };
    drop(world);
    shared.changed();
    body
}

/// The upload URL: Slack answers `OK - {length}` as plain text.
async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut world = shared.world();
    let Some(file) = world.files.iter_mut().find(|f| f.id == id) else {
        return (StatusCode::NOT_FOUND, "no such upload").into_response();
    };
    if body.len() != file.length {
        return (StatusCode::BAD_REQUEST, "length mismatch").into_response();
    }
    file.content = Some(String::from_utf8_lossy(&body).into_owned());
    drop(world);
    shared.changed();
    format!("OK - {}", body.len()).into_response()
}

/// `files.completeUploadExternal`: with `channel_id`, the files are shared there (in the
/// thread `thread_ts` names) as one message of the uploader with `initial_comment` as its
/// text, which the app hears as a `file_share` message event; without, they stay private.
fn complete_upload(shared: &Arc<Shared>, args: &Value) -> Value {
    let Some(files) = args["files"].as_array().cloned().or_else(|| {
        // Form bodies carry `files` as a JSON string.
        text_arg(args, "files").and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
    }) else {
        return fail("invalid_arguments");
    };
    let channel = text_arg(args, "channel_id");
    let thread_ts = text_arg(args, "thread_ts");
    let comment = text_arg(args, "initial_comment");
    let mut world = shared.world();
    let mut done = Vec::new();
    for wanted in &files {
        let Some(file) = world
            .files
            .iter_mut()
            .find(|f| Some(f.id.as_str()) == wanted["id"].as_str())
        else {
            return fail("file_not_found");
        };
        if file.content.is_none() {
            return fail("file_upload_incomplete");
        }
        file.channel = channel.clone();
        file.thread_ts = thread_ts.clone();
        file.comment = comment.clone();
        done.push(json!({"id": file.id, "title": wanted["title"], "name": file.filename}));
    }
    let Some(channel) = channel else {
        drop(world);
        shared.changed();
        return ok(json!({"files": done}));
    };
    let ts = shared.next_ts();
    let ids: Vec<String> = done
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    world.messages.push(SlackMessage {
        channel: channel.clone(),
        ts: ts.clone(),
        thread_ts: thread_ts.clone(),
        user: BOT_USER.to_owned(),
        text: comment.clone().unwrap_or_default(),
        blocks: None,
        edits: 0,
        files: ids,
    });
    drop(world);
    let mut event = json!({
        "type": "message",
        "subtype": "file_share",
        "channel": channel,
        "user": BOT_USER,
        "bot_id": BOT_ID,
        "text": comment.unwrap_or_default(),
        "files": done,
        "ts": ts,
        "event_ts": ts,
        "channel_type": if channel.starts_with('D') { "im" } else { "channel" },
    });
    if let Some(thread) = &thread_ts {
        event["thread_ts"] = json!(thread);
    }
    let id = shared.next_id("Ev");
    shared.deliver(shared.events_api_envelope(event, &id));
    shared.changed();
    ok(json!({"files": done}))
}

async fn response_url(State(shared): State<Arc<Shared>>, body: Bytes) -> impl IntoResponse {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.world().responses.push(value);
    shared.changed();
    "ok"
}

async fn socket_mode(State(shared): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(shared, socket))
}

async fn serve_socket(shared: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let admitted: Option<(u32, Vec<Value>)> = {
        let mut world = shared.world();
        if world.sockets.len() >= MAX_SOCKETS {
            None
        } else {
            world.connections += 1;
            let me = world.connections;
            world.sockets.push((me, tx));
            Some((me, world.unacked.iter().map(|(_, e)| e.clone()).collect()))
        }
    };
    let Some((me, pending)) = admitted else {
        let _ = socket
            .send(WsMessage::Text(disconnect("too_many_websockets").into()))
            .await;
        return;
    };
    shared.changed();
    let hello = json!({
        "type": "hello",
        "num_connections": 1,
        "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID}
    });
    if socket
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    // What was never acknowledged is sent again, as a retry.
    for mut envelope in pending {
        let attempt = envelope["retry_attempt"].as_u64().unwrap_or(0) + 1;
        envelope["retry_attempt"] = json!(attempt);
        envelope["retry_reason"] = json!("timeout");
        if socket
            .send(WsMessage::Text(envelope.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            command = rx.recv() => match command {
                Some(WsCommand::Send(text)) => {
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                // Dropping the socket closes TCP without a close frame.
                Some(WsCommand::Drop) | None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => acknowledge(&shared, text.as_str()),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.world().sockets.retain(|(id, _)| *id != me);
    shared.changed();
}

/// Connections one app may keep open at once.
const MAX_SOCKETS: usize = 10;

/// A `disconnect` envelope: Slack sends it before it closes a connection.
fn disconnect(reason: &str) -> String {
    json!({
        "type": "disconnect",
        "reason": reason,
        "debug_info": {"host": "applink-fake"}
    })
    .to_string()
}

fn acknowledge(shared: &Shared, text: &str) {
    let Ok(ack) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(id) = ack["envelope_id"].as_str() else {
        return;
    };
    let mut world = shared.world();
    world.unacked.retain(|(pending, _)| pending != id);
    world.acks.push((
        id.to_owned(),
        ack.get("payload").cloned().unwrap_or(Value::Null),
    ));
    drop(world);
    shared.changed();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(slack: &FakeSlack, method: &str, token: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/{method}", slack.api_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// The upload flow of Slack's docs: ask for a URL, send the bytes there, complete the
    /// upload into a thread, where it shows as one message with the comment and the file.
    #[tokio::test]
    async fn a_file_is_uploaded_then_shared_in_a_thread() {
        let slack = FakeSlack::start().await.expect("start");
        let asked: Value = call(
            &slack,
            "files.getUploadURLExternal",
            BOT_TOKEN,
            json!({"filename": "loop-x.diff", "length": 6}),
        )
        .await
        .json()
        .await
        .expect("json");
        let (url, id) = (
            asked["upload_url"].as_str().expect("url").to_owned(),
            asked["file_id"].as_str().expect("id").to_owned(),
        );
        let early: Value = call(
            &slack,
            "files.completeUploadExternal",
            BOT_TOKEN,
            json!({"files": [{"id": id}], "channel_id": "C1"}),
        )
        .await
        .json()
        .await
        .expect("json");
        assert_eq!(early["error"], "file_upload_incomplete");
        let wrong = reqwest::Client::new()
            .post(&url)
            .body("+a\n")
            .send()
            .await
            .expect("upload");
        assert_eq!(wrong.status(), 400, "the announced length is checked");
        let sent = reqwest::Client::new()
            .post(&url)
            .body("+a\n-b\n")
            .send()
            .await
            .expect("upload");
        assert_eq!(sent.text().await.expect("text"), "OK - 6");
        let done: Value = call(
            &slack,
            "files.completeUploadExternal",
            BOT_TOKEN,
            json!({
                "files": [{"id": id, "title": "loop-x.diff"}],
                "channel_id": "C1",
                "thread_ts": "1.0",
                "initial_comment": "1 file changed",
            }),
        )
        .await
        .json()
        .await
        .expect("json");
        assert_eq!(done["ok"], true, "{done}");
        assert_eq!(done["files"][0]["id"], id.as_str());
        let files = slack.files();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].content.as_deref(), Some("+a\n-b\n"));
        assert_eq!(files[0].thread_ts.as_deref(), Some("1.0"));
        let shared = slack.bot_messages_in("C1", Some("1.0"));
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].text, "1 file changed");
        assert_eq!(shared[0].files, vec![id]);
        // The app hears the share, as it hears its own messages.
        assert_eq!(slack.unacknowledged(), 1);
    }

    #[tokio::test]
    async fn the_web_api_checks_tokens_and_rate_limits_like_slack() {
        let slack = FakeSlack::start().await.expect("start");
        let body: Value = call(&slack, "auth.test", APP_TOKEN, json!({}))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(body, json!({"ok": false, "error": "invalid_auth"}));
        let body: Value = call(&slack, "apps.connections.open", APP_TOKEN, json!({}))
            .await
            .json()
            .await
            .expect("json");
        assert!(body["url"].as_str().is_some_and(|u| u.starts_with("ws://")));

        slack.rate_limit("chat.postMessage", 1, 7);
        let limited = call(
            &slack,
            "chat.postMessage",
            BOT_TOKEN,
            json!({"channel": "C1", "text": "hi"}),
        )
        .await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "7");
        let posted: Value = call(
            &slack,
            "chat.postMessage",
            BOT_TOKEN,
            json!({"channel": "C1", "text": "hi", "thread_ts": "1.0"}),
        )
        .await
        .json()
        .await
        .expect("json");
        assert_eq!(posted["ok"], true);
        let ts = posted["ts"].as_str().expect("ts").to_owned();
        assert_eq!(slack.bot_messages_in("C1", Some("1.0")).len(), 1);
        // The bot's own message comes back as an event, waiting for a connection.
        assert_eq!(slack.unacknowledged(), 1);

        let updated: Value = call(
            &slack,
            "chat.update",
            BOT_TOKEN,
            json!({"channel": "C1", "ts": ts, "text": "hello"}),
        )
        .await
        .json()
        .await
        .expect("json");
        assert_eq!(updated["message"]["text"], "hello");
        let missing: Value = call(
            &slack,
            "chat.update",
            BOT_TOKEN,
            json!({"channel": "C1", "ts": "9.9", "text": "x"}),
        )
        .await
        .json()
        .await
        .expect("json");
        assert_eq!(missing["error"], "message_not_found");
        for expected in [
            json!({"ok": true}),
            json!({"ok": false, "error": "already_reacted"}),
        ] {
            let body: Value = call(
                &slack,
                "reactions.add",
                BOT_TOKEN,
                json!({"channel": "C1", "timestamp": ts, "name": "eyes"}),
            )
            .await
            .json()
            .await
            .expect("json");
            assert_eq!(body, expected);
        }
    }

    #[test]
    fn form_bodies_are_decoded() {
        assert_eq!(percent_decode("a+b%20c%3D%zz"), "a b c=%zz");
        let headers = HeaderMap::new();
        let args = call_args(&headers, Some("channel=C1"), b"text=hi%21&blocks=%5B%5D");
        assert_eq!(args["channel"], "C1");
        assert_eq!(args["text"], "hi!");
        assert_eq!(args["blocks"], json!([]));
    }
}
