//! loop-adapter-slack: Slack through slack-morphism. Events arrive over Socket Mode (no public
//! URL needed) or, as an option, over the Events API on HTTP with signed requests
//! ([`events_api`]); replies, status edits, reactions and approval prompts go out through the
//! Web API, every call honouring 429 `Retry-After` ([`web`]).
//!
//! Durability: an event is acknowledged to Slack only after the orchestrator's inbound channel
//! took it (slack-morphism sends the ack when our callback returns `Ok`; an `Err` leaves it
//! unacknowledged and Slack redelivers it). Redeliveries and reconnect replays are dropped by
//! event id, and the orchestrator's inbox is idempotent on the message id (`channel:ts`) as
//! well. The window that remains: an item the channel took is lost if the daemon dies before
//! the orchestrator stored it (the channel is in memory); Slack will not redeliver it.

pub mod approval;
pub mod events_api;
pub mod inbound;
pub mod mrkdwn;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use loop_adapter::{
    Adapter, AdapterError, ApprovalPrompt, Author, ChannelKey, ChatCommand, Inbound, OutgoingPart,
    PlatformKind, PostedMessage, Receipt, TurnMark, parse_command,
};
use secrecy::{ExposeSecret, SecretString};
use slack_morphism::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::inbound::{Decision, IncomingMessage, Recent, Rules};

/// Slack truncates `text` at 40 000 characters but renders messages over ~4 000 badly, so a
/// longer text is split (code-block safe) into messages of at most this many characters,
/// before mrkdwn conversion, which can add a few (escapes): hence the margin.
pub const SLACK_CHUNK: usize = 3_800;
/// A text that would take more messages than this is uploaded as a file instead, with its
/// beginning as the comment: a wall of messages is harder to read than one attachment.
pub const MAX_SPLIT_MESSAGES: usize = 3;
/// Characters of a long answer shown as the comment on its file.
const PREVIEW_CHARS: usize = 600;

/// The slack-morphism client type used here: hyper with rustls, `http://` allowed so tests and
/// proxies can point it at another server.
pub type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;
type Client = SlackClient<Connector>;

/// Settings of the Slack adapter.
#[derive(Clone)]
pub struct SlackSettings {
    /// `xoxb-`: the Web API.
    pub bot_token: SecretString,
    /// `xapp-` with `connections:write`: Socket Mode.
    pub app_token: SecretString,
    /// Web API base URL (`https://slack.com/api`, the default when `None`).
    pub api_url: Option<String>,
    /// Whether a reply in a thread loop takes part in needs a mention to start a turn.
    pub require_mention_in_threads: bool,
    /// Users who may start runs; empty: everyone.
    pub allowed_users: Vec<String>,
    /// Channels where runs may start; empty: every channel the app is in.
    pub allowed_channels: Vec<String>,
    /// Users who may answer approval prompts. Empty: nobody (the admin API still can).
    pub approvers: Vec<String>,
    /// Receive events over HTTP instead of Socket Mode.
    pub events_api: Option<EventsApiSettings>,
    /// Wait between Socket Mode reconnection attempts.
    pub reconnect_delay: Duration,
    /// Socket Mode connections kept open at once (Slack allows up to 10; events are spread
    /// over them, so two give continuity while one reconnects).
    pub connections: u32,
}

/// The Events API over HTTP (for workspaces that do not allow Socket Mode).
#[derive(Clone)]
pub struct EventsApiSettings {
    /// Where to listen; put a TLS-terminating proxy in front of it.
    pub listen: SocketAddr,
    /// The app's signing secret (Basic Information → App Credentials).
    pub signing_secret: SecretString,
}

impl std::fmt::Debug for SlackSettings {
    /// Tokens never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings")
            .field("bot_token", &"[REDACTED]")
            .field("app_token", &"[REDACTED]")
            .field("api_url", &self.api_url)
            .field(
                "require_mention_in_threads",
                &self.require_mention_in_threads,
            )
            .field("allowed_users", &self.allowed_users)
            .field("allowed_channels", &self.allowed_channels)
            .field("approvers", &self.approvers)
            .field("events_api", &self.events_api.as_ref().map(|e| e.listen))
            .finish()
    }
}

impl SlackSettings {
    /// Settings with the defaults: Socket Mode, mentions not required in threads, no
    /// allowlists, no approvers.
    pub fn new(bot_token: SecretString, app_token: SecretString) -> SlackSettings {
        SlackSettings {
            bot_token,
            app_token,
            api_url: None,
            require_mention_in_threads: false,
            allowed_users: Vec::new(),
            allowed_channels: Vec::new(),
            approvers: Vec::new(),
            events_api: None,
            reconnect_delay: Duration::from_secs(5),
            connections: 2,
        }
    }
}

/// Errors building the adapter.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("cannot set up TLS for the Slack client: {0}")]
    Tls(std::io::Error),
}

/// What the adapter remembers while it runs. The threads loop takes part in are seeded from
/// the database at start ([`Adapter::remember_threads`]); the rest starts empty.
#[derive(Default)]
struct Memory {
    /// Threads loop takes part in, as `channel:thread_ts` (bounded: the oldest are forgotten
    /// first, and a reply there then needs a mention again).
    threads: Recent,
    /// The thread of each channel that most recently started a turn (`/loop stop` there).
    latest_thread: HashMap<String, String>,
    /// Event ids and message ids already handed on.
    seen: Recent,
    /// Approval prompts posted, by message ts: their edits replace the buttons.
    prompts: std::collections::HashSet<String>,
}

struct Inner {
    client: Arc<Client>,
    bot_token: SlackApiToken,
    app_token: SlackApiToken,
    settings: SlackSettings,
    bot_user: OnceLock<String>,
    memory: Mutex<Memory>,
    /// Reactions and refusals sent after an ack, so the ack is not delayed by them.
    tasks: TaskTracker,
}

/// The Slack adapter. Cheap to clone.
#[derive(Clone)]
pub struct SlackAdapter {
    inner: Arc<Inner>,
}

impl SlackAdapter {
    pub fn new(settings: SlackSettings) -> Result<SlackAdapter, SlackError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(SlackError::Tls)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let mut connector = SlackClientHyperConnector::with_connector(https);
        if let Some(url) = &settings.api_url {
            // slack-morphism appends `/{method}` itself.
            connector = connector.with_slack_api_url(url.trim_end_matches('/'));
        }
        let token = |secret: &SecretString| {
            SlackApiToken::new(SlackApiTokenValue::new(secret.expose_secret().to_owned()))
        };
        Ok(SlackAdapter {
            inner: Arc::new(Inner {
                client: Arc::new(SlackClient::new(connector)),
                bot_token: token(&settings.bot_token),
                app_token: token(&settings.app_token),
                settings,
                bot_user: OnceLock::new(),
                memory: Mutex::new(Memory::default()),
                tasks: TaskTracker::new(),
            }),
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // The memory holds no invariant a panic could break halfway.
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn rules(&self) -> Rules {
        let settings = &self.inner.settings;
        Rules {
            bot_user: self.inner.bot_user.get().cloned().unwrap_or_default(),
            require_mention_in_threads: settings.require_mention_in_threads,
            allowed_users: settings.allowed_users.clone(),
            allowed_channels: settings.allowed_channels.clone(),
        }
    }

    /// Learns the bot's own user id (mentions and its own messages are recognised by it),
    /// retrying until Slack answers or `shutdown`.
    async fn identify(&self, shutdown: &CancellationToken) -> Result<(), AdapterError> {
        let session = self.inner.client.open_session(&self.inner.bot_token);
        loop {
            match web::with_retry("auth.test", || session.auth_test()).await {
                Ok(auth) => {
                    let _ = self.inner.bot_user.set(auth.user_id.to_string());
                    tracing::info!(bot_user = %auth.user_id, team = %auth.team, "slack: authenticated");
                    return Ok(());
                }
                Err(err @ AdapterError::Rejected(_)) => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err, "slack: auth.test failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.inner.settings.reconnect_delay) => {}
                    }
                }
            }
        }
    }

    /// Handles one message event. `Err` means "do not acknowledge": Slack will redeliver.
    async fn on_message(
        &self,
        event_id: &str,
        message: IncomingMessage,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Result<(), AdapterError> {
        let id = inbound::message_id(&message.channel, &message.ts);
        if self.memory().seen.contains(event_id) || self.memory().seen.contains(&id) {
            tracing::debug!(event_id, "slack: duplicate event dropped");
            return Ok(());
        }
        let decision = {
            let memory = self.memory();
            inbound::decide(&message, &self.rules(), |channel, thread| {
                memory
                    .threads
                    .contains(&inbound::message_id(channel, thread))
            })
        };
        match decision {
            Decision::Ignore(why) => {
                tracing::debug!(channel = %message.channel, why, "slack: message ignored");
            }
            Decision::Refuse {
                channel,
                user,
                thread_ts,
                text,
            } => {
                tracing::info!(channel = %channel, user = %user, "slack: refused a message from outside the allowlists");
                let this = self.clone();
                self.inner.tasks.spawn(async move {
                    if let Err(err) = this
                        .ephemeral(&channel, &user, thread_ts.as_deref(), &text)
                        .await
                    {
                        tracing::warn!(error = %err, "slack: cannot send a refusal");
                    }
                });
            }
            Decision::Forward(item) => {
                let (key, triggers) = match &item {
                    Inbound::Message(m) => (Some(m.channel.clone()), m.triggers),
                    Inbound::Command { channel, .. } => (Some(channel.clone()), false),
                    _ => (None, false),
                };
                hand_over(inbound, item).await?;
                if let Some(key) = &key
                    && let Some(thread) = &key.thread_id
                {
                    let mut memory = self.memory();
                    memory
                        .threads
                        .insert(&inbound::message_id(&key.channel_id, thread));
                    if triggers {
                        memory
                            .latest_thread
                            .insert(key.channel_id.clone(), thread.clone());
                    }
                }
                if triggers {
                    // Eyes: loop has the message and will answer it.
                    let this = self.clone();
                    let (channel, ts) = (message.channel.clone(), message.ts.clone());
                    self.inner.tasks.spawn(async move {
                        if let Err(err) = this.add_reaction(&channel, &ts, "eyes").await {
                            tracing::debug!(error = %err, "slack: cannot add the eyes reaction");
                        }
                    });
                }
            }
        }
        let mut memory = self.memory();
        memory.seen.insert(event_id);
        memory.seen.insert(&id);
        Ok(())
    }

    /// `/loop ...`: a command for the channel (for `stop`: its most recently started thread,
    /// since turns run per thread and a slash command does not say which thread it is in).
    async fn on_command(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Result<String, AdapterError> {
        let rules = self.rules();
        if !(rules.allowed_users.is_empty() || rules.allowed_users.iter().any(|u| u == user)) {
            return Ok(inbound::REFUSAL.to_owned());
        }
        if !(channel.starts_with('D')
            || rules.allowed_channels.is_empty()
            || rules.allowed_channels.iter().any(|c| c == channel))
        {
            return Ok(inbound::CHANNEL_REFUSAL.to_owned());
        }
        let command = parse_command(&format!("/loop {text}")).unwrap_or(ChatCommand::Help);
        let key = match (&command, self.memory().latest_thread.get(channel)) {
            (ChatCommand::Stop, Some(thread)) => {
                ChannelKey::thread(PlatformKind::Slack, channel, thread.clone())
            }
            _ => ChannelKey::channel(PlatformKind::Slack, channel),
        };
        let item = match command {
            ChatCommand::Prompt(prompt) => Inbound::Message(loop_adapter::Message {
                message_id: format!("cmd-{channel}-{}", unique_suffix()),
                channel: key,
                author: author(user, user),
                text: prompt,
                triggers: true,
                work_dir: None,
            }),
            command => Inbound::Command {
                channel: key,
                author: author(user, user),
                command,
            },
        };
        hand_over(inbound, item).await?;
        Ok(format!("`/loop {}`", text.trim()))
    }

    /// A button click on an approval prompt.
    async fn on_action(
        &self,
        event: &SlackInteractionBlockActionsEvent,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Result<(), AdapterError> {
        let Some(action) = event.actions.as_ref().and_then(|a| a.first()) else {
            return Ok(());
        };
        let Some(choice) = approval::choice_of(action.action_id.as_ref()) else {
            return Ok(());
        };
        let Some(approval_id) = action.value.clone() else {
            return Ok(());
        };
        let Some(user) = event.user.as_ref() else {
            return Ok(());
        };
        let message_thread = event
            .message
            .as_ref()
            .and_then(|m| m.origin.thread_ts.as_ref())
            .map(|t| t.to_string());
        let channel: Option<String> = match &event.container {
            SlackInteractionActionContainer::Message(container) => container
                .channel_id
                .as_ref()
                .map(|c| c.to_string())
                .or_else(|| event.channel.as_ref().map(|c| c.id.to_string())),
            _ => event.channel.as_ref().map(|c| c.id.to_string()),
        };
        let thread = message_thread;
        let Some(channel) = channel else {
            return Ok(());
        };
        let user_id = user.id.to_string();
        if !self.inner.settings.approvers.contains(&user_id) {
            tracing::info!(user = %user_id, approval = %approval_id, "slack: approval click from a non-approver refused");
            let this = self.clone();
            let text = if self.inner.settings.approvers.is_empty() {
                "Sorry, nobody may decide approvals from Slack yet: an admin has to list approvers in `permissions.approvers.users`.".to_owned()
            } else {
                "Sorry, only approvers can decide this request.".to_owned()
            };
            self.inner.tasks.spawn(async move {
                if let Err(err) = this
                    .ephemeral(&channel, &user_id, thread.as_deref(), &text)
                    .await
                {
                    tracing::warn!(error = %err, "slack: cannot send a refusal");
                }
            });
            return Ok(());
        }
        let key = match thread {
            Some(thread) => ChannelKey::thread(PlatformKind::Slack, &channel, thread),
            None => ChannelKey::channel(PlatformKind::Slack, &channel),
        };
        hand_over(
            inbound,
            Inbound::Approval {
                channel: key,
                approval_id,
                choice,
                decided_by: author(&user_id, &format!("<@{user_id}>")),
            },
        )
        .await
    }

    async fn add_reaction(&self, channel: &str, ts: &str, name: &str) -> Result<(), AdapterError> {
        let session = self.inner.client.open_session(&self.inner.bot_token);
        let request = SlackApiReactionsAddRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackReactionName::new(name.to_owned()),
            SlackTs::new(ts.to_owned()),
        );
        match web::with_retry("reactions.add", || session.reactions_add(&request)).await {
            Ok(_) => Ok(()),
            Err(err) if web::slack_code(&err) == Some("already_reacted") => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn remove_reaction(
        &self,
        channel: &str,
        ts: &str,
        name: &str,
    ) -> Result<(), AdapterError> {
        let session = self.inner.client.open_session(&self.inner.bot_token);
        let request = SlackApiReactionsRemoveRequest::new(SlackReactionName::new(name.to_owned()))
            .with_channel(SlackChannelId::new(channel.to_owned()))
            .with_timestamp(SlackTs::new(ts.to_owned()));
        match web::with_retry("reactions.remove", || session.reactions_remove(&request)).await {
            Ok(_) => Ok(()),
            Err(err) if web::slack_code(&err) == Some("no_reaction") => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<(), AdapterError> {
        let session = self.inner.client.open_session(&self.inner.bot_token);
        let request = SlackApiChatPostEphemeralRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackUserId::new(user.to_owned()),
            SlackMessageContent::new().with_text(mrkdwn::to_mrkdwn(text)),
        )
        .opt_thread_ts(thread_ts.map(|t| SlackTs::new(t.to_owned())));
        web::with_retry("chat.postEphemeral", || {
            session.chat_post_ephemeral(&request)
        })
        .await
        .map(|_| ())
    }

    async fn post_content(
        &self,
        channel: &ChannelKey,
        content: SlackMessageContent,
    ) -> Result<PostedMessage, AdapterError> {
        check(channel)?;
        let session = self.inner.client.open_session(&self.inner.bot_token);
        let request = SlackApiChatPostMessageRequest::new(
            SlackChannelId::new(channel.channel_id.clone()),
            content,
        )
        .opt_thread_ts(channel.thread_id.clone().map(SlackTs::new));
        let posted =
            web::with_retry("chat.postMessage", || session.chat_post_message(&request)).await?;
        if let Some(thread) = &channel.thread_id {
            self.memory()
                .threads
                .insert(&inbound::message_id(&channel.channel_id, thread));
        }
        Ok(PostedMessage {
            message_id: posted.ts.to_string(),
        })
    }

    /// Uploads a long text as `answer.md` in the thread, its beginning as the comment.
    async fn upload(
        &self,
        channel: &ChannelKey,
        text: &str,
    ) -> Result<PostedMessage, AdapterError> {
        let preview: String = text.chars().take(PREVIEW_CHARS).collect();
        let comment = format!(
            "{}…\n\n_The full answer ({} characters) is attached._",
            mrkdwn::to_mrkdwn(&preview),
            text.chars().count()
        );
        self.upload_file(
            channel,
            "answer.md",
            text.as_bytes().to_vec(),
            "text/markdown",
            comment,
        )
        .await
    }

    /// Shares a file in the channel or thread with `comment` (mrkdwn) as its message, the
    /// current way (`files.getUploadURLExternal`, the upload to the URL it returns,
    /// `files.completeUploadExternal`); `files.upload` is retired.
    async fn upload_file(
        &self,
        channel: &ChannelKey,
        filename: &str,
        bytes: Vec<u8>,
        content_type: &str,
        comment: String,
    ) -> Result<PostedMessage, AdapterError> {
        check(channel)?;
        let session = self.inner.client.open_session(&self.inner.bot_token);
        let request =
            SlackApiFilesGetUploadUrlExternalRequest::new(filename.to_owned(), bytes.len());
        let target = web::with_retry("files.getUploadURLExternal", || {
            session.get_upload_url_external(&request)
        })
        .await?;
        let upload = SlackApiFilesUploadViaUrlRequest::new(
            target.upload_url.clone(),
            bytes,
            content_type.to_owned(),
        );
        web::with_retry("files.upload", || session.files_upload_via_url(&upload)).await?;
        let complete = SlackApiFilesCompleteUploadExternalRequest::new(vec![
            SlackApiFilesComplete::new(target.file_id.clone()).with_title(filename.to_owned()),
        ])
        .with_channel_id(SlackChannelId::new(channel.channel_id.clone()))
        .with_initial_comment(comment)
        .opt_thread_ts(channel.thread_id.clone().map(SlackTs::new));
        web::with_retry("files.completeUploadExternal", || {
            session.files_complete_upload_external(&complete)
        })
        .await?;
        Ok(PostedMessage {
            message_id: target.file_id.to_string(),
        })
    }

    /// Receives events over Socket Mode until `shutdown`.
    async fn run_socket_mode(
        &self,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let handler = Arc::new(Handler {
            adapter: self.clone(),
            inbound,
        });
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(self.inner.client.clone())
                .with_error_handler(on_listener_error)
                .with_user_state(handler),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_push_events(on_push_event)
            .with_interaction_events(on_interaction_event)
            .with_command_events(on_command_event);
        let reconnect = self.inner.settings.reconnect_delay.as_secs().max(1);
        let config = SlackClientSocketModeConfig::new()
            .with_max_connections_count(self.inner.settings.connections.max(1))
            .with_reconnect_timeout_in_seconds(reconnect)
            .with_initial_backoff_in_seconds(reconnect);
        let listener = SlackClientSocketModeListener::new(&config, environment, callbacks);
        listener
            .listen_for(&self.inner.app_token)
            .await
            .map_err(|err| web::map_error("apps.connections.open", err))?;
        listener.start().await;
        tracing::info!("slack: listening over Socket Mode");
        shutdown.cancelled().await;
        listener.shutdown().await;
        Ok(())
    }
}

/// A suffix for the ids of items Slack gives no id of their own (`/loop PROMPT`): a slash
/// command is not redelivered once acknowledged, so the id only has to be unique.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Hands an item to the orchestrator and waits until it was taken (a message stored): only
/// then may the event be acknowledged to Slack.
async fn hand_over(inbound: &mpsc::Sender<Inbound>, item: Inbound) -> Result<(), AdapterError> {
    let (receipt, taken) = Receipt::new();
    inbound
        .send(Inbound::Receipted {
            item: Box::new(item),
            receipt,
        })
        .await
        .map_err(|_| AdapterError::Unreachable("the orchestrator is not taking events".into()))?;
    match taken.await {
        Ok(true) => Ok(()),
        _ => Err(AdapterError::Unreachable(
            "the orchestrator did not take the event".into(),
        )),
    }
}

fn author(id: &str, name: &str) -> Author {
    Author {
        id: id.to_owned(),
        name: name.to_owned(),
        is_bot: false,
        roles: Vec::new(),
    }
}

fn check(channel: &ChannelKey) -> Result<(), AdapterError> {
    if channel.platform == PlatformKind::Slack {
        Ok(())
    } else {
        Err(AdapterError::UnknownChannel(channel.to_string()))
    }
}

/// What the slack-morphism callbacks (plain `fn`s) reach through the listener's user state.
struct Handler {
    adapter: SlackAdapter,
    inbound: mpsc::Sender<Inbound>,
}

async fn handler_of(states: &SlackClientEventsUserState) -> Option<Arc<Handler>> {
    states
        .read()
        .await
        .get_user_state::<Arc<Handler>>()
        .cloned()
}

/// Turns a failure into the "do not acknowledge" answer slack-morphism understands.
fn not_acknowledged(err: AdapterError) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(err)
}

fn incoming_of_message(event: &SlackMessageEvent) -> Option<IncomingMessage> {
    let subtype = event
        .subtype
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    let channel = event.origin.channel.as_ref()?.to_string();
    Some(IncomingMessage {
        is_dm: matches!(event.origin.channel_type, Some(SlackChannelType(ref t)) if t == "im")
            || channel.starts_with('D'),
        channel,
        user: event.sender.user.as_ref().map(|u| u.to_string()),
        bot_id: event.sender.bot_id.as_ref().map(|b| b.to_string()),
        subtype,
        text: event
            .content
            .as_ref()
            .and_then(|c| c.text.clone())
            .unwrap_or_default(),
        ts: event.origin.ts.to_string(),
        thread_ts: event.origin.thread_ts.as_ref().map(|t| t.to_string()),
    })
}

fn incoming_of_mention(event: &SlackAppMentionEvent) -> IncomingMessage {
    IncomingMessage {
        channel: event.channel.to_string(),
        is_dm: event.channel.to_string().starts_with('D'),
        user: Some(event.user.to_string()),
        bot_id: None,
        subtype: None,
        text: event.content.text.clone().unwrap_or_default(),
        ts: event.origin.ts.to_string(),
        thread_ts: event.origin.thread_ts.as_ref().map(|t| t.to_string()),
    }
}

async fn on_push_event(
    event: SlackPushEventCallback,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let Some(handler) = handler_of(&states).await else {
        return Ok(());
    };
    let incoming = match &event.event {
        SlackEventCallbackBody::Message(message) => incoming_of_message(message),
        SlackEventCallbackBody::AppMention(mention) => Some(incoming_of_mention(mention)),
        _ => None,
    };
    if let Some(incoming) = incoming {
        handler
            .adapter
            .on_message(event.event_id.as_ref(), incoming, &handler.inbound)
            .await
            .map_err(not_acknowledged)?;
    }
    Ok(())
}

async fn on_interaction_event(
    event: SlackInteractionEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let Some(handler) = handler_of(&states).await else {
        return Ok(());
    };
    if let SlackInteractionEvent::BlockActions(actions) = &event {
        handler
            .adapter
            .on_action(actions, &handler.inbound)
            .await
            .map_err(not_acknowledged)?;
    }
    Ok(())
}

async fn on_command_event(
    event: SlackCommandEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let Some(handler) = handler_of(&states).await else {
        return Ok(SlackCommandEventResponse::new(SlackMessageContent::new()));
    };
    let reply = handler
        .adapter
        .on_command(
            event.channel_id.as_ref(),
            event.user_id.as_ref(),
            event.text.as_deref().unwrap_or_default(),
            &handler.inbound,
        )
        .await
        .map_err(not_acknowledged)?;
    Ok(
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(reply))
            .with_response_type(SlackMessageResponseType::Ephemeral),
    )
}

/// Socket errors are logged (slack-morphism reconnects by itself); a callback's error leaves
/// the envelope unacknowledged (any status but 2xx means "no ack").
fn on_listener_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<Client>,
    _states: SlackClientEventsUserState,
) -> HttpStatusCode {
    tracing::warn!(error = %err, "slack: event not acknowledged; Slack will deliver it again");
    HttpStatusCode::INTERNAL_SERVER_ERROR
}

#[async_trait]
impl Adapter for SlackAdapter {
    fn platform(&self) -> PlatformKind {
        PlatformKind::Slack
    }

    fn parts(&self, text: &str) -> Vec<OutgoingPart> {
        loop_adapter::outgoing_parts(text, SLACK_CHUNK, MAX_SPLIT_MESSAGES)
    }

    async fn open_thread(
        &self,
        channel: &ChannelKey,
        title: &str,
    ) -> Result<Option<ChannelKey>, AdapterError> {
        // A Slack thread is the replies to a message: the title's ts names it.
        let parent = channel.parent();
        let posted = self.post(&parent, title).await?;
        let thread = ChannelKey::thread(PlatformKind::Slack, parent.channel_id, posted.message_id);
        self.remember_threads(std::slice::from_ref(&thread));
        Ok(Some(thread))
    }

    fn remember_threads(&self, threads: &[ChannelKey]) {
        let mut memory = self.memory();
        for key in threads.iter().filter(|k| k.platform == PlatformKind::Slack) {
            if let Some(thread) = &key.thread_id {
                memory
                    .threads
                    .insert(&inbound::message_id(&key.channel_id, thread));
            }
        }
    }

    async fn run(
        &self,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        self.identify(&shutdown).await?;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let result = match self.inner.settings.events_api.clone() {
            Some(settings) => {
                events_api::serve(self.clone(), settings, inbound, shutdown.clone()).await
            }
            None => self.run_socket_mode(inbound, shutdown).await,
        };
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        result
    }

    /// Slack's Web API has no idempotency key for `chat.postMessage`, so `key` is not used:
    /// a part whose post succeeded but was not recorded (the daemon died in between) is
    /// posted again after the restart.
    async fn post_part(
        &self,
        channel: &ChannelKey,
        part: &OutgoingPart,
        _key: Option<&str>,
    ) -> Result<PostedMessage, AdapterError> {
        match part {
            OutgoingPart::Text(text) => {
                self.post_content(
                    channel,
                    SlackMessageContent::new().with_text(mrkdwn::to_mrkdwn(text)),
                )
                .await
            }
            OutgoingPart::Attachment(text) => self.upload(channel, text).await,
        }
    }

    async fn post_file(
        &self,
        channel: &ChannelKey,
        filename: &str,
        bytes: &[u8],
        comment: &str,
    ) -> Result<PostedMessage, AdapterError> {
        self.upload_file(
            channel,
            filename,
            bytes.to_vec(),
            "text/plain",
            mrkdwn::to_mrkdwn(comment),
        )
        .await
    }

    async fn edit(
        &self,
        channel: &ChannelKey,
        message_id: &str,
        text: &str,
    ) -> Result<(), AdapterError> {
        check(channel)?;
        let ts = inbound::ts_of(message_id);
        let text = mrkdwn::to_mrkdwn(text);
        let mut content = SlackMessageContent::new().with_text(text.clone());
        if self.memory().prompts.remove(ts) {
            // An approval prompt is edited once, when it is decided: the buttons go, who
            // decided stays, and when is added.
            let now = chrono::Utc::now();
            let blocks = approval::decided_blocks(
                &text,
                now.timestamp(),
                &now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            );
            content = content.with_blocks(serde_json::from_value(blocks).unwrap_or_default());
        }
        let session = self.inner.client.open_session(&self.inner.bot_token);
        let request = SlackApiChatUpdateRequest::new(
            SlackChannelId::new(channel.channel_id.clone()),
            content,
            SlackTs::new(ts.to_owned()),
        );
        web::with_retry("chat.update", || session.chat_update(&request))
            .await
            .map(|_| ())
    }

    async fn mark(
        &self,
        channel: &ChannelKey,
        message_id: &str,
        mark: TurnMark,
    ) -> Result<(), AdapterError> {
        check(channel)?;
        let ts = inbound::ts_of(message_id);
        let name = match mark {
            TurnMark::Succeeded => "white_check_mark",
            TurnMark::Failed => "x",
        };
        self.remove_reaction(&channel.channel_id, ts, "eyes")
            .await?;
        self.add_reaction(&channel.channel_id, ts, name).await
    }

    async fn post_approval(
        &self,
        channel: &ChannelKey,
        prompt: &ApprovalPrompt,
    ) -> Result<PostedMessage, AdapterError> {
        let blocks: Vec<SlackBlock> = serde_json::from_value(approval::prompt_blocks(prompt))
            .map_err(|err| AdapterError::Rejected(format!("approval blocks: {err}")))?;
        let posted = self
            .post_content(
                channel,
                SlackMessageContent::new()
                    .with_text(mrkdwn::to_mrkdwn(&prompt.text))
                    .with_blocks(blocks),
            )
            .await?;
        self.memory().prompts.insert(posted.message_id.clone());
        Ok(posted)
    }

    async fn post_private(
        &self,
        channel: &ChannelKey,
        user_id: &str,
        text: &str,
    ) -> Result<(), AdapterError> {
        check(channel)?;
        self.ephemeral(
            &channel.channel_id,
            user_id,
            channel.thread_id.as_deref(),
            text,
        )
        .await
    }
}
