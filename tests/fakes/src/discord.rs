//! A fake Discord: the REST API (`/api/v10/...`) and the Gateway over a WebSocket, written
//! from Discord's public documentation (discord.com/developers/docs: "Gateway" — Hello,
//! Identify, Ready, Heartbeat, Resume, sequence numbers —, "Receiving and Responding" to
//! interactions, the Channel, Message and Application Commands resources, "Rate Limits"). It
//! keeps channels, threads and messages the way a guild would, and lets a test act as the
//! people in it.
//!
//! Faithful on purpose:
//! - every REST call needs `Authorization: Bot <token>`; a wrong one is 401 `{"code": 0}`;
//! - HTTP 429 with `Retry-After` and a JSON body with `retry_after` and `global` when a test
//!   asks for rate limiting (Discord's body has no `code`);
//! - dispatches carry increasing sequence numbers; a Resume with the last sequence replays the
//!   dispatches after it, then sends RESUMED; a new Identify starts a new session and replays
//!   nothing;
//! - creating a thread from a message twice is refused (`160004`);
//! - interactions must be answered once through their callback; a second answer is refused
//!   (`40060`);
//! - the bot's own messages come back as MESSAGE_CREATE dispatches, author `bot: true`;
//! - Create Message's `nonce` (at most 25 characters) is echoed on the message; with
//!   `enforce_nonce`, a nonce the same author used in the past few minutes returns that
//!   message and creates none.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The bot token the fake accepts.
pub const TOKEN: &str = "fake.discord.token";
/// The bot's user id.
pub const BOT_USER: &str = "900000000000000001";
pub const APP_ID: &str = "900000000000000002";
pub const GUILD_ID: &str = "900000000000000003";
/// A text channel of the guild.
pub const CHANNEL: &str = "900000000000000010";
/// Another text channel of the guild.
pub const OTHER_CHANNEL: &str = "900000000000000011";
/// How long an enforced nonce is remembered. Discord says "the past few minutes"; the fake
/// keeps it short rather than long, so a test cannot lean on more than Discord promises.
pub const NONCE_WINDOW: Duration = Duration::from_secs(120);
/// Discord's limit on a nonce's length.
const MAX_NONCE_CHARS: usize = 25;

/// One REST call as received.
#[derive(Debug, Clone)]
pub struct RestCall {
    pub method: String,
    /// The path after `/api/v10`.
    pub path: String,
    /// The JSON body (`payload_json` of a multipart body), `Null` when there is none.
    pub body: Value,
    pub status: u16,
    /// The call did its work but its response was never sent ([`FakeDiscord::lose_response`]).
    pub held: bool,
    /// When the call arrived (benchmarks measure what a person would see, and when).
    pub at: std::time::Instant,
}

/// A message in the fake guild.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscordMessage {
    pub id: String,
    pub channel_id: String,
    pub author_id: String,
    pub content: String,
    /// Message components (buttons), as sent.
    pub components: Value,
    /// Names and contents of attached files.
    pub files: Vec<(String, String)>,
    pub edits: u32,
    /// The `nonce` it was created with (a string or a number, as sent).
    pub nonce: Option<Value>,
}

/// A thread created from a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub id: String,
    pub parent_id: String,
    pub name: String,
    /// The message it was started from.
    pub message_id: String,
}

/// An interaction sent to the bot and how it was answered.
#[derive(Debug, Clone)]
pub struct InteractionRecord {
    pub id: String,
    pub token: String,
    /// The callback bodies received (`type` 4 message, 6 deferred update, 7 update...).
    pub responses: Vec<Value>,
}

enum WsCommand {
    Send(String),
    /// Close the TCP connection without a close frame, as a network drop would.
    Drop,
}

#[derive(Default)]
struct World {
    calls: Vec<RestCall>,
    messages: Vec<DiscordMessage>,
    threads: Vec<Thread>,
    interactions: Vec<InteractionRecord>,
    /// The bot's reactions: (channel, message, emoji).
    reactions: Vec<(String, String, String)>,
    /// Contents whose next created message gets no response (see `lose_response`).
    held_responses: Vec<String>,
    /// Enforced nonces: (author, nonce as sent, message id, when).
    nonces: Vec<(String, Value, String, Instant)>,
    /// Registered application commands: scope (`global` or the guild id) → commands.
    commands: HashMap<String, Value>,
    /// Rate limits to apply: `METHOD /path-prefix` fragment → (calls still to refuse, seconds).
    rate_limits: Vec<(String, u32, f64)>,
    /// Every dispatch of the current session: (sequence, payload).
    dispatches: Vec<(u64, Value)>,
    sequence: u64,
    session: Option<String>,
    identifies: u32,
    resumes: u32,
    socket: Option<(u64, mpsc::UnboundedSender<WsCommand>)>,
    /// Whether the live connection finished Identify or Resume.
    ready: bool,
}

struct Shared {
    addr: SocketAddr,
    world: Mutex<World>,
    version: watch::Sender<u64>,
    ids: AtomicU64,
    connections: AtomicU64,
    shutdown: CancellationToken,
}

impl Shared {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A snowflake-looking id, unique in this fake.
    fn id(&self) -> String {
        (950_000_000_000_000_000u64 + self.ids.fetch_add(1, Ordering::SeqCst)).to_string()
    }

    /// Records a dispatch in the session and sends it on the live, ready connection.
    fn dispatch(&self, event: &str, data: Value) -> u64 {
        let mut world = self.world();
        world.sequence += 1;
        let s = world.sequence;
        let payload = json!({"op": 0, "t": event, "s": s, "d": data});
        world.dispatches.push((s, payload.clone()));
        if world.ready
            && let Some((_, socket)) = &world.socket
        {
            let _ = socket.send(WsCommand::Send(payload.to_string()));
        }
        drop(world);
        self.changed();
        s
    }
}

/// The fake server. Dropping it stops it.
pub struct FakeDiscord {
    shared: Arc<Shared>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn user(id: &str, name: &str, bot: bool) -> Value {
    json!({"id": id, "username": name, "discriminator": "0", "global_name": name, "avatar": null, "bot": bot})
}

fn now() -> String {
    "2026-01-01T00:00:00.000000+00:00".to_owned()
}

fn message_json(message: &DiscordMessage, guild: bool, roles: &[String]) -> Value {
    let bot = message.author_id == BOT_USER;
    let mut value = json!({
        "id": message.id,
        "channel_id": message.channel_id,
        "author": user(&message.author_id, if bot { "loop" } else { "person" }, bot),
        "content": message.content,
        "timestamp": now(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": if message.content.contains(&format!("<@{BOT_USER}>")) { json!([user(BOT_USER, "loop", true)]) } else { json!([]) },
        "mention_roles": [],
        "attachments": message.files.iter().enumerate().map(|(i, (name, content))| json!({
            "id": (i + 1).to_string(), "filename": name, "size": content.len(),
            "url": "http://invalid/", "proxy_url": "http://invalid/"
        })).collect::<Vec<_>>(),
        "embeds": [],
        "pinned": false,
        "type": 0,
        "components": message.components,
    });
    if let Some(nonce) = &message.nonce {
        value["nonce"] = nonce.clone();
    }
    if guild {
        value["guild_id"] = json!(GUILD_ID);
        value["member"] =
            json!({"roles": roles, "joined_at": now(), "deaf": false, "mute": false, "flags": 0});
    }
    value
}

impl FakeDiscord {
    pub async fn start() -> std::io::Result<FakeDiscord> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            addr,
            world: Mutex::new(World::default()),
            version,
            ids: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        let router = Router::new()
            .route("/gateway", get(gateway))
            .route("/api/v10/{*path}", any(rest))
            .with_state(Arc::clone(&shared));
        let stop = shared.shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
        });
        Ok(FakeDiscord { shared })
    }

    /// The base URL for serenity's `HttpBuilder::proxy` (it appends `/api/v10/...`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// How a mention of the bot looks in a message.
    pub fn mention() -> String {
        format!("<@{BOT_USER}>")
    }

    /// Answers the next `times` REST calls whose `METHOD path` contains `route` with 429.
    pub fn rate_limit(&self, route: &str, times: u32, retry_after_sec: f64) {
        self.shared
            .world()
            .rate_limits
            .push((route.to_owned(), times, retry_after_sec));
    }

    /// The next message the bot creates whose content contains `needle` is created, but the
    /// response never reaches the bot: the connection stays silent, as when the network or the
    /// bot dies right after Discord accepted the message.
    pub fn lose_response(&self, needle: &str) {
        self.shared.world().held_responses.push(needle.to_owned());
    }

    /// A person writes in a guild channel or thread; returns the message id.
    pub fn post_as_user(&self, user_id: &str, channel: &str, text: &str) -> String {
        self.post_with_roles(user_id, &[], channel, text, true, false)
    }

    /// A person writes in a DM channel with the bot.
    pub fn post_dm(&self, user_id: &str, channel: &str, text: &str) -> String {
        self.post_with_roles(user_id, &[], channel, text, false, false)
    }

    /// Another bot writes in a guild channel.
    pub fn post_as_other_bot(&self, channel: &str, text: &str) -> String {
        self.post_with_roles("900000000000000099", &[], channel, text, true, true)
    }

    fn post_with_roles(
        &self,
        user_id: &str,
        roles: &[String],
        channel: &str,
        text: &str,
        guild: bool,
        bot: bool,
    ) -> String {
        let message = DiscordMessage {
            id: self.shared.id(),
            channel_id: channel.to_owned(),
            author_id: user_id.to_owned(),
            content: text.to_owned(),
            components: json!([]),
            files: Vec::new(),
            edits: 0,
            nonce: None,
        };
        let mut payload = message_json(&message, guild, roles);
        if bot {
            payload["author"]["bot"] = json!(true);
        }
        self.shared.world().messages.push(message.clone());
        self.shared.dispatch("MESSAGE_CREATE", payload);
        message.id
    }

    /// Sends the dispatch with sequence `s` again, with a new sequence number (Discord's
    /// occasional duplicate delivery).
    pub fn redispatch(&self, s: u64) -> bool {
        let found = self
            .shared
            .world()
            .dispatches
            .iter()
            .find(|(seq, _)| *seq == s)
            .map(|(_, p)| p.clone());
        match found {
            Some(payload) => {
                let event = payload["t"].as_str().unwrap_or_default().to_owned();
                self.shared.dispatch(&event, payload["d"].clone());
                true
            }
            None => false,
        }
    }

    /// Sends the MESSAGE_CREATE of a message again, with a new sequence number (Discord's
    /// occasional duplicate delivery).
    pub fn redispatch_message(&self, message_id: &str) -> bool {
        let found = self
            .shared
            .world()
            .dispatches
            .iter()
            .find(|(_, p)| p["t"] == "MESSAGE_CREATE" && p["d"]["id"] == message_id)
            .map(|(s, _)| *s);
        found.is_some_and(|s| self.redispatch(s))
    }

    /// The sequence number of the latest dispatch.
    pub fn last_sequence(&self) -> u64 {
        self.shared.world().sequence
    }

    /// A person clicks a button (`custom_id`) on a message; returns the interaction id, or
    /// `None` when the message has no such button (any more).
    pub fn click(
        &self,
        user_id: &str,
        roles: &[&str],
        message_id: &str,
        custom_id: &str,
    ) -> Option<String> {
        let message = self
            .shared
            .world()
            .messages
            .iter()
            .find(|m| m.id == message_id)
            .cloned()?;
        // Only a button that is on the message can be clicked.
        let has_button = message
            .components
            .as_array()
            .into_iter()
            .flatten()
            .any(|row| {
                row["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["custom_id"] == custom_id)
            });
        if !has_button {
            return None;
        }
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let (id, token) = (self.shared.id(), format!("itoken-{}", self.shared.id()));
        let channel = self.channel_json(&message.channel_id);
        let data = json!({
            "id": id, "application_id": APP_ID, "type": 3, "token": token, "version": 1,
            "data": {"custom_id": custom_id, "component_type": 2},
            "guild_id": GUILD_ID, "channel": channel, "channel_id": message.channel_id,
            "member": {"user": user(user_id, "person", false), "roles": roles, "joined_at": now(),
                       "deaf": false, "mute": false, "flags": 0, "permissions": "0"},
            "message": message_json(&message, true, &[]),
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "attachment_size_limit": 8_388_608, "app_permissions": "0",
            "authorizing_integration_owners": {}, "context": 0,
        });
        self.shared.world().interactions.push(InteractionRecord {
            id: id.clone(),
            token,
            responses: Vec::new(),
        });
        self.shared.dispatch("INTERACTION_CREATE", data);
        Some(id)
    }

    /// A person runs `/loop SUBCOMMAND [path]` in a channel; returns the interaction id.
    pub fn slash(
        &self,
        user_id: &str,
        channel: &str,
        subcommand: &str,
        path: Option<&str>,
    ) -> String {
        let options = match path {
            Some(path) => json!([{"name": "path", "type": 3, "value": path}]),
            None => json!([]),
        };
        self.slash_with(user_id, channel, subcommand, options)
    }

    /// `/loop SUBCOMMAND` with its options as Discord sends them (`[{"name", "type", "value"}]`;
    /// type 3 a string, 6 a user id, 8 a role id).
    pub fn slash_with(
        &self,
        user_id: &str,
        channel: &str,
        subcommand: &str,
        options: Value,
    ) -> String {
        let (id, token) = (self.shared.id(), format!("itoken-{}", self.shared.id()));
        let data = json!({
            "id": id, "application_id": APP_ID, "type": 2, "token": token, "version": 1,
            "data": {"id": "1", "name": "loop", "type": 1,
                     "options": [{"name": subcommand, "type": 1, "options": options}]},
            "guild_id": GUILD_ID, "channel": self.channel_json(channel), "channel_id": channel,
            "member": {"user": user(user_id, "person", false), "roles": [], "joined_at": now(),
                       "deaf": false, "mute": false, "flags": 0, "permissions": "0"},
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "attachment_size_limit": 8_388_608, "app_permissions": "0",
            "authorizing_integration_owners": {}, "context": 0,
        });
        self.shared.world().interactions.push(InteractionRecord {
            id: id.clone(),
            token,
            responses: Vec::new(),
        });
        self.shared.dispatch("INTERACTION_CREATE", data);
        id
    }

    fn channel_json(&self, id: &str) -> Value {
        channel_of(&self.shared.world(), id)
    }

    /// Closes the Gateway connection without a close frame (a network drop).
    pub fn drop_connection(&self) {
        let mut world = self.shared.world();
        if let Some((_, socket)) = world.socket.take() {
            let _ = socket.send(WsCommand::Drop);
        }
        world.ready = false;
        drop(world);
        self.shared.changed();
    }

    pub fn calls(&self) -> Vec<RestCall> {
        self.shared.world().calls.clone()
    }

    pub fn messages(&self) -> Vec<DiscordMessage> {
        self.shared.world().messages.clone()
    }

    /// The bot's messages in a channel or thread, oldest first.
    pub fn bot_messages_in(&self, channel: &str) -> Vec<DiscordMessage> {
        self.shared
            .world()
            .messages
            .iter()
            .filter(|m| m.channel_id == channel && m.author_id == BOT_USER)
            .cloned()
            .collect()
    }

    /// The bot's reactions on a message, oldest first.
    pub fn reactions_on(&self, message_id: &str) -> Vec<String> {
        self.shared
            .world()
            .reactions
            .iter()
            .filter(|(_, m, _)| m == message_id)
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    pub fn threads(&self) -> Vec<Thread> {
        self.shared.world().threads.clone()
    }

    /// The thread started from a message, if any.
    pub fn thread_of(&self, message_id: &str) -> Option<Thread> {
        self.threads()
            .into_iter()
            .find(|t| t.message_id == message_id)
    }

    pub fn interaction(&self, id: &str) -> Option<InteractionRecord> {
        self.shared
            .world()
            .interactions
            .iter()
            .find(|i| i.id == id)
            .cloned()
    }

    /// Registered commands: scope (`global` or a guild id) → the PUT body.
    pub fn commands(&self) -> HashMap<String, Value> {
        self.shared.world().commands.clone()
    }

    pub fn identifies(&self) -> u32 {
        self.shared.world().identifies
    }

    pub fn resumes(&self) -> u32 {
        self.shared.world().resumes
    }

    /// Gateway connections opened so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Whether a Gateway connection finished Identify or Resume.
    pub fn is_connected(&self) -> bool {
        let world = self.shared.world();
        world.ready && world.socket.is_some()
    }

    /// Polls `check` whenever the fake's state changes, until it returns `Some` or `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&FakeDiscord) -> Option<T>,
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

fn channel_of(world: &World, id: &str) -> Value {
    if let Some(thread) = world.threads.iter().find(|t| t.id == id) {
        return json!({
            "id": thread.id, "type": 11, "guild_id": GUILD_ID, "name": thread.name,
            "parent_id": thread.parent_id, "owner_id": BOT_USER,
            "thread_metadata": {"archived": false, "auto_archive_duration": 1440,
                                 "archive_timestamp": now(), "locked": false},
            "message_count": 0, "member_count": 1,
        });
    }
    if id == CHANNEL || id == OTHER_CHANNEL {
        return json!({"id": id, "type": 0, "guild_id": GUILD_ID, "name": "general", "position": 0});
    }
    // Anything else is a DM channel.
    json!({"id": id, "type": 1, "name": null, "recipients": [user("1", "person", false)]})
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// `GET /api/v10/gateway` and `/gateway/bot` point here.
async fn gateway(State(shared): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(shared, socket))
}

/// Parses a multipart body: (`payload_json`, files as (filename, content)).
fn multipart(headers: &HeaderMap, body: &[u8]) -> Option<(Value, Vec<(String, String)>)> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let text = String::from_utf8_lossy(body);
    let mut payload = Value::Null;
    let mut files = Vec::new();
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        if head.contains("name=\"payload_json\"") {
            payload = serde_json::from_str(content).unwrap_or(Value::Null);
        } else if let Some(name) = head.split("filename=\"").nth(1) {
            let name = name.split('"').next().unwrap_or_default().to_owned();
            files.push((name, content.to_owned()));
        }
    }
    Some((payload, files))
}

async fn rest(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{}", path.trim_end_matches('/'));
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    let (body, files) = if is_multipart {
        multipart(&headers, &body).unwrap_or((Value::Null, Vec::new()))
    } else {
        (
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            Vec::new(),
        )
    };
    let response = answer(&shared, &method, &path, &headers, &body, files);
    let status = response.status().as_u16();
    let held = {
        let mut world = shared.world();
        let content = body["content"].as_str().unwrap_or_default();
        let held = status == 200
            && method == Method::POST
            && path.ends_with("/messages")
            && world
                .held_responses
                .iter()
                .position(|needle| content.contains(needle.as_str()))
                .map(|at| world.held_responses.remove(at))
                .is_some();
        world.calls.push(RestCall {
            method: method.to_string(),
            path,
            body,
            status,
            held,
            at: std::time::Instant::now(),
        });
        held
    };
    shared.changed();
    if held {
        // The message exists; its response is lost on the way (the client gives up or dies).
        shared.shutdown.cancelled().await;
    }
    response
}

fn answer(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    files: Vec<(String, String)>,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {TOKEN}"));
    // Interaction callbacks are authenticated by their token, not the bot's.
    let is_callback = path.starts_with("/interactions/");
    if !authorized && !is_callback {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    let route = format!("{method} {path}");
    {
        let mut world = shared.world();
        if let Some(limit) = world
            .rate_limits
            .iter_mut()
            .find(|(r, left, _)| *left > 0 && route.contains(r.as_str()))
        {
            limit.1 -= 1;
            let retry = limit.2;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("retry-after", format!("{}", retry.ceil() as u64)),
                    ("x-ratelimit-scope", "user".to_owned()),
                ],
                axum::Json(json!({"message": "You are being rate limited.", "retry_after": retry, "global": false})),
            )
                .into_response();
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ws_url = format!("ws://{}/gateway", shared.addr);
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["gateway"]) => axum::Json(json!({"url": ws_url})).into_response(),
        ("GET", ["gateway", "bot"]) => axum::Json(json!({
            "url": ws_url, "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        }))
        .into_response(),
        ("GET", ["users", "@me"]) => axum::Json(user(BOT_USER, "loop", true)).into_response(),
        ("GET", ["oauth2", "applications", "@me"]) => {
            axum::Json(json!({"id": APP_ID, "name": "loop", "description": "", "bot_public": false,
                "bot_require_code_grant": false, "verify_key": "0", "flags": 0, "icon": null}))
            .into_response()
        }
        ("GET", ["channels", channel]) => {
            axum::Json(channel_of(&shared.world(), channel)).into_response()
        }
        ("POST", ["channels", channel, "messages"]) => {
            let content = body["content"].as_str().unwrap_or_default().to_owned();
            if content.chars().count() > 2000 {
                return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body: content: Must be 2000 or fewer in length.");
            }
            if content.is_empty() && files.is_empty() {
                return error(StatusCode::BAD_REQUEST, 50006, "Cannot send an empty message");
            }
            let nonce = body.get("nonce").filter(|n| !n.is_null()).cloned();
            if let Some(nonce) = &nonce {
                let valid = match nonce {
                    Value::String(text) => text.chars().count() <= MAX_NONCE_CHARS,
                    Value::Number(number) => number.is_u64() || number.is_i64(),
                    _ => false,
                };
                if !valid {
                    return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body: nonce: Must be 25 or fewer in length.");
                }
            }
            let enforce = body.get("enforce_nonce").and_then(Value::as_bool) == Some(true);
            // One lock from the nonce lookup to the new message: two concurrent posts with
            // one enforced nonce create one message.
            let mut world = shared.world();
            let guild = !channel_of(&world, channel)["guild_id"].is_null();
            if enforce && let Some(nonce) = &nonce {
                let seen = world.nonces.iter().find(|(author, n, _, at)| {
                    author == BOT_USER && n == nonce && at.elapsed() < NONCE_WINDOW
                });
                if let Some((_, _, id, _)) = seen
                    && let Some(existing) = world.messages.iter().find(|m| m.id == *id)
                {
                    let existing = message_json(existing, guild, &[]);
                    return axum::Json(existing).into_response();
                }
            }
            let message = DiscordMessage {
                id: shared.id(),
                channel_id: (*channel).to_owned(),
                author_id: BOT_USER.to_owned(),
                content,
                components: body.get("components").cloned().unwrap_or(json!([])),
                files,
                edits: 0,
                nonce: nonce.clone(),
            };
            let payload = message_json(&message, guild, &[]);
            if enforce && let Some(nonce) = nonce {
                world
                    .nonces
                    .push((BOT_USER.to_owned(), nonce, message.id.clone(), Instant::now()));
            }
            world.messages.push(message);
            drop(world);
            // The bot sees its own message come back.
            shared.dispatch("MESSAGE_CREATE", payload.clone());
            axum::Json(payload).into_response()
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            let mut world = shared.world();
            let Some(message) = world
                .messages
                .iter_mut()
                .find(|m| m.id == *id && m.channel_id == *channel)
            else {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            if message.author_id != BOT_USER {
                return error(StatusCode::FORBIDDEN, 50005, "Cannot edit a message authored by another user");
            }
            if let Some(content) = body.get("content").and_then(Value::as_str) {
                if content.chars().count() > 2000 {
                    return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
                }
                message.content = content.to_owned();
            }
            if let Some(components) = body.get("components") {
                message.components = components.clone();
            }
            message.edits += 1;
            let message = message.clone();
            let guild = !channel_of(&world, channel)["guild_id"].is_null();
            drop(world);
            axum::Json(message_json(&message, guild, &[])).into_response()
        }
        ("POST", ["channels", channel, "messages", id, "threads"]) => {
            let mut world = shared.world();
            if !world.messages.iter().any(|m| m.id == *id && m.channel_id == *channel) {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            if world.threads.iter().any(|t| t.message_id == *id) {
                return error(StatusCode::BAD_REQUEST, 160004, "A thread has already been created for this message");
            }
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() || name.chars().count() > 100 {
                return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body: name");
            }
            let thread = Thread {
                // Discord gives a thread started from a message the message's id.
                id: (*id).to_owned(),
                parent_id: (*channel).to_owned(),
                name,
                message_id: (*id).to_owned(),
            };
            world.threads.push(thread.clone());
            let value = channel_of(&world, &thread.id);
            drop(world);
            shared.dispatch("THREAD_CREATE", value.clone());
            (StatusCode::CREATED, axum::Json(value)).into_response()
        }
        ("PUT" | "DELETE", ["channels", channel, "messages", id, "reactions", emoji, "@me"]) => {
            let mut world = shared.world();
            if !world.messages.iter().any(|m| m.id == *id && m.channel_id == *channel) {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            let key = ((*channel).to_owned(), (*id).to_owned(), percent_decode(emoji));
            world.reactions.retain(|r| *r != key);
            if method == Method::PUT {
                world.reactions.push(key);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let mut world = shared.world();
            let Some(interaction) = world
                .interactions
                .iter_mut()
                .find(|i| i.id == *id && i.token == *token)
            else {
                return error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
            };
            if !interaction.responses.is_empty() {
                return error(StatusCode::BAD_REQUEST, 40060, "Interaction has already been acknowledged.");
            }
            interaction.responses.push(body.clone());
            StatusCode::NO_CONTENT.into_response()
        }
        ("PUT", ["applications", _app, "commands"]) => {
            shared.world().commands.insert("global".to_owned(), body.clone());
            axum::Json(registered(body)).into_response()
        }
        ("PUT", ["applications", _app, "guilds", guild, "commands"]) => {
            shared.world().commands.insert((*guild).to_owned(), body.clone());
            axum::Json(registered(body)).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    }
}

/// Decodes `%XX` escapes (emoji in reaction paths).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What Discord answers to a bulk overwrite: the commands with ids.
fn registered(body: &Value) -> Value {
    let commands = body.as_array().cloned().unwrap_or_default();
    Value::Array(
        commands
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c["id"] = json!((i + 1).to_string());
                c["application_id"] = json!(APP_ID);
                c["version"] = json!("1");
                c["type"] = c.get("type").cloned().unwrap_or(json!(1));
                c["default_member_permissions"] = json!(null);
                c
            })
            .collect(),
    )
}

async fn serve_socket(shared: Arc<Shared>, mut socket: WebSocket) {
    let connection = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut world = shared.world();
        // A new connection replaces the old one.
        if let Some((_, old)) = world.socket.replace((connection, tx.clone())) {
            let _ = old.send(WsCommand::Drop);
        }
        world.ready = false;
    }
    shared.changed();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}, "s": null, "t": null});
    if socket
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
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
                Some(WsCommand::Drop) | None => return,
            },
            received = socket.recv() => {
                let Some(Ok(received)) = received else { break };
                let WsMessage::Text(text) = received else { continue };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else { continue };
                for reply in on_gateway_payload(&shared, connection, &payload) {
                    if socket.send(WsMessage::Text(reply.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    let mut world = shared.world();
    if world.socket.as_ref().is_some_and(|(c, _)| *c == connection) {
        world.socket = None;
        world.ready = false;
    }
    drop(world);
    shared.changed();
}

/// Answers one payload from the bot: the replies to send, in order.
fn on_gateway_payload(shared: &Arc<Shared>, connection: u64, payload: &Value) -> Vec<String> {
    let data = &payload["d"];
    match payload["op"].as_u64() {
        // Heartbeat.
        Some(1) => vec![json!({"op": 11, "d": null, "s": null, "t": null}).to_string()],
        // Identify: a new session.
        Some(2) => {
            let token = data["token"].as_str().unwrap_or_default();
            if token.trim_start_matches("Bot ") != TOKEN {
                return vec![];
            }
            let session = format!("session-{}", shared.id());
            let mut world = shared.world();
            world.identifies += 1;
            world.session = Some(session.clone());
            world.dispatches.clear();
            world.sequence += 1;
            let s = world.sequence;
            let ready = json!({"op": 0, "t": "READY", "s": s, "d": {
                "v": 10,
                "user": {"id": BOT_USER, "username": "loop", "discriminator": "0", "avatar": null,
                         "bot": true, "verified": true, "mfa_enabled": false, "flags": 0},
                "guilds": [{"id": GUILD_ID, "unavailable": true}],
                "session_id": session,
                "resume_gateway_url": format!("ws://{}/gateway", shared.addr),
                "application": {"id": APP_ID, "flags": 0},
                "private_channels": [],
                "shard": [0, 1],
            }});
            world.dispatches.push((s, ready.clone()));
            if world.socket.as_ref().is_some_and(|(c, _)| *c == connection) {
                world.ready = true;
            }
            drop(world);
            shared.changed();
            vec![ready.to_string()]
        }
        // Resume: replay what the bot missed, then RESUMED.
        Some(6) => {
            let mut world = shared.world();
            let valid = data["token"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("Bot ")
                == TOKEN
                && world.session.as_deref() == data["session_id"].as_str();
            if !valid {
                // Invalid Session, not resumable.
                return vec![json!({"op": 9, "d": false, "s": null, "t": null}).to_string()];
            }
            world.resumes += 1;
            let after = data["seq"].as_u64().unwrap_or(0);
            let mut replies: Vec<String> = world
                .dispatches
                .iter()
                .filter(|(s, _)| *s > after)
                .map(|(_, p)| p.to_string())
                .collect();
            world.sequence += 1;
            let s = world.sequence;
            let resumed = json!({"op": 0, "t": "RESUMED", "s": s, "d": {}});
            world.dispatches.push((s, resumed.clone()));
            replies.push(resumed.to_string());
            if world.socket.as_ref().is_some_and(|(c, _)| *c == connection) {
                world.ready = true;
            }
            drop(world);
            shared.changed();
            replies
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("%E2%9C%85"), "✅");
        assert_eq!(percent_decode("plain%2"), "plain%2");
    }

    #[tokio::test]
    async fn rest_checks_the_token_and_rate_limits_like_discord() {
        let fake = FakeDiscord::start().await.expect("fake");
        let client = reqwest::Client::new();
        let url = format!("{}/api/v10/gateway/bot", fake.api_url());
        let anonymous = client.get(&url).send().await.expect("request");
        assert_eq!(anonymous.status(), 401);
        let auth = format!("Bot {TOKEN}");
        let gateway: Value = client
            .get(&url)
            .header("authorization", &auth)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(
            gateway["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("ws://"))
        );

        fake.rate_limit("POST /channels", 1, 1.5);
        let send = || {
            client
                .post(format!(
                    "{}/api/v10/channels/{CHANNEL}/messages",
                    fake.api_url()
                ))
                .header("authorization", &auth)
                .json(&json!({"content": "hi"}))
                .send()
        };
        let limited = send().await.expect("request");
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "2");
        let body: Value = limited.json().await.expect("json");
        assert_eq!(body["retry_after"], 1.5);
        assert!(body.get("code").is_none(), "Discord's 429 body has no code");
        assert_eq!(send().await.expect("request").status(), 200);
        assert_eq!(fake.bot_messages_in(CHANNEL).len(), 1);
        let too_long = client
            .post(format!(
                "{}/api/v10/channels/{CHANNEL}/messages",
                fake.api_url()
            ))
            .header("authorization", &auth)
            .json(&json!({"content": "x".repeat(2001)}))
            .send()
            .await
            .expect("request");
        assert_eq!(too_long.status(), 400);
    }

    #[tokio::test]
    async fn an_enforced_nonce_creates_one_message() {
        let fake = FakeDiscord::start().await.expect("fake");
        let client = reqwest::Client::new();
        let send = |body: Value| {
            client
                .post(format!(
                    "{}/api/v10/channels/{CHANNEL}/messages",
                    fake.api_url()
                ))
                .header("authorization", format!("Bot {TOKEN}"))
                .json(&body)
                .send()
        };
        let created: Value = send(json!({"content": "hi", "nonce": "k.0", "enforce_nonce": true}))
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(created["nonce"], "k.0");
        let again: Value = send(json!({"content": "hi", "nonce": "k.0", "enforce_nonce": true}))
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(again["id"], created["id"], "the first message is returned");
        assert_eq!(fake.bot_messages_in(CHANNEL).len(), 1);
        // Without enforce_nonce the nonce is only echoed.
        send(json!({"content": "hi", "nonce": "k.0"}))
            .await
            .expect("request");
        assert_eq!(fake.bot_messages_in(CHANNEL).len(), 2);
        let too_long =
            send(json!({"content": "hi", "nonce": "n".repeat(26), "enforce_nonce": true}))
                .await
                .expect("request");
        assert_eq!(too_long.status(), 400);
    }
}
