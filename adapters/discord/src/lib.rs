//! loop-adapter-discord: Discord through serenity. Events arrive over the Gateway (serenity's
//! shard runner identifies, heartbeats, reconnects and resumes, so events missed during a
//! drop are replayed by Discord); replies, status edits, reactions, threads, approval prompts
//! and application commands go out over REST, every call retried on 429 by loop ([`rest`]);
//! against discord.com serenity's own limiter runs too, behind a proxy (`api_url`) it cannot.
//!
//! Durability: Discord does not redeliver a dispatch that the bot received, so a message is
//! lost only if the daemon dies between receiving it and the orchestrator storing it. A
//! resume can replay a dispatch already seen, and Discord occasionally sends one twice: both
//! are dropped by message id here, and the orchestrator's inbox is idempotent on it as well.

pub mod approval;
pub mod commands;
pub mod inbound;
mod rest;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use loop_adapter::{
    Adapter, AdapterError, ApprovalPrompt, Author, ChannelKey, Inbound, OutgoingPart, PlatformKind,
    PostedMessage, Receipt, TurnMark,
};
use secrecy::{ExposeSecret, SecretString};
use serenity::all::{
    ApplicationId, Builder, Channel, ChannelId, ChannelType, ClientBuilder, Context,
    CreateAttachment, CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage,
    CreateThread, EditMessage, EventHandler, GatewayIntents, Http, HttpBuilder, Interaction,
    Message, MessageId, MessageType, Nonce, ReactionType, Ready, ResumedEvent,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::inbound::{Decision, IncomingMessage, Recent, Route, Rules};

/// Discord's limit for a message's `content`.
pub const DISCORD_CHUNK: usize = 2_000;
/// A text that would take more messages than this is attached as `answer.md` instead.
pub const MAX_SPLIT_MESSAGES: usize = 4;
/// Characters of a long answer shown above its attachment.
const PREVIEW_CHARS: usize = 600;
/// Reactions on a person's message: received, answered, failed.
const EYES: &str = "👀";
const SUCCEEDED: &str = "✅";
const FAILED: &str = "❌";
/// Thread names are at most 100 characters.
const THREAD_NAME_CHARS: usize = 90;

/// The intents loop needs: MESSAGE_CONTENT is privileged (enable it in the Developer Portal).
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
        | GatewayIntents::DIRECT_MESSAGES
}

/// Settings of the Discord adapter.
#[derive(Clone)]
pub struct DiscordSettings {
    pub token: SecretString,
    /// The application id (General Information); needed to register commands before READY.
    pub application_id: Option<u64>,
    /// Register `/loop` in this guild only (instant); `None`: globally.
    pub command_guild: Option<u64>,
    /// An HTTP base URL all REST calls go to instead of `https://discord.com` (tests, proxies).
    pub api_url: Option<String>,
    pub require_mention_in_threads: bool,
    pub allowed_guilds: Vec<String>,
    pub allowed_channels: Vec<String>,
    pub allowed_users: Vec<String>,
    /// User ids who may answer approval prompts.
    pub approver_users: Vec<String>,
    /// Role ids whose members may answer approval prompts.
    pub approver_roles: Vec<String>,
}

impl std::fmt::Debug for DiscordSettings {
    /// The token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordSettings")
            .field("token", &"[REDACTED]")
            .field("application_id", &self.application_id)
            .field("command_guild", &self.command_guild)
            .field("api_url", &self.api_url)
            .field(
                "require_mention_in_threads",
                &self.require_mention_in_threads,
            )
            .field("allowed_guilds", &self.allowed_guilds)
            .field("allowed_channels", &self.allowed_channels)
            .field("allowed_users", &self.allowed_users)
            .field("approver_users", &self.approver_users)
            .field("approver_roles", &self.approver_roles)
            .finish()
    }
}

impl DiscordSettings {
    /// Defaults: global commands, no allowlists, no approvers, replies in threads need no
    /// mention.
    pub fn new(token: SecretString) -> DiscordSettings {
        DiscordSettings {
            token,
            application_id: None,
            command_guild: None,
            api_url: None,
            require_mention_in_threads: false,
            allowed_guilds: Vec::new(),
            allowed_channels: Vec::new(),
            allowed_users: Vec::new(),
            approver_users: Vec::new(),
            approver_roles: Vec::new(),
        }
    }
}

/// What the adapter remembers while it runs. The threads loop takes part in are seeded from
/// the database at start ([`Adapter::remember_threads`]); the rest starts empty.
#[derive(Default)]
struct Memory {
    /// Threads loop takes part in.
    threads: Recent,
    /// Thread → parent channel, for every thread seen.
    parents: HashMap<String, String>,
    /// Channels known not to be threads.
    plain: HashSet<String>,
    /// Message ids handed on (or being handed on).
    seen: Recent,
    /// Approval prompts posted (message ids): their edit removes the buttons.
    prompts: HashSet<String>,
    /// The thread of each channel that most recently started a turn (`/loop stop` there).
    latest_thread: HashMap<String, String>,
}

struct Inner {
    http: Arc<Http>,
    settings: DiscordSettings,
    bot_user: OnceLock<String>,
    memory: Mutex<Memory>,
    tasks: TaskTracker,
}

/// The Discord adapter. Cheap to clone.
#[derive(Clone)]
pub struct DiscordAdapter {
    inner: Arc<Inner>,
}

impl DiscordAdapter {
    pub fn new(settings: DiscordSettings) -> DiscordAdapter {
        DiscordAdapter {
            inner: Arc::new(Inner {
                http: Arc::new(http_of(&settings)),
                settings,
                bot_user: OnceLock::new(),
                memory: Mutex::new(Memory::default()),
                tasks: TaskTracker::new(),
            }),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // The memory holds no invariant a panic could break halfway.
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn http(&self) -> &Http {
        &self.inner.http
    }

    fn rules(&self) -> Rules {
        let settings = &self.inner.settings;
        Rules {
            bot_user: self.inner.bot_user.get().cloned().unwrap_or_default(),
            require_mention_in_threads: settings.require_mention_in_threads,
            allowed_guilds: settings.allowed_guilds.clone(),
            allowed_channels: settings.allowed_channels.clone(),
            allowed_users: settings.allowed_users.clone(),
        }
    }

    /// The parent of `channel` when it is a thread (asked of Discord once per channel).
    async fn thread_parent(&self, channel: ChannelId) -> Result<Option<String>, AdapterError> {
        let id = channel.to_string();
        {
            let memory = self.memory();
            if let Some(parent) = memory.parents.get(&id) {
                return Ok(Some(parent.clone()));
            }
            if memory.plain.contains(&id) {
                return Ok(None);
            }
        }
        let found = rest::with_retry("get channel", || self.http().get_channel(channel)).await?;
        let parent = match found {
            Channel::Guild(guild_channel)
                if matches!(
                    guild_channel.kind,
                    ChannelType::PublicThread | ChannelType::PrivateThread
                ) =>
            {
                guild_channel.parent_id.map(|p| p.to_string())
            }
            _ => None,
        };
        let mut memory = self.memory();
        match &parent {
            Some(parent) => {
                memory.parents.insert(id, parent.clone());
            }
            None => {
                memory.plain.insert(id);
            }
        }
        Ok(parent)
    }

    /// Handles one `MESSAGE_CREATE`.
    async fn on_message(
        &self,
        message: &Message,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Result<(), AdapterError> {
        let id = message.id.to_string();
        // Claimed before anything else, so a duplicated dispatch handled concurrently
        // (serenity runs handlers in parallel) is dropped here.
        if !self.memory().seen.insert(&id) {
            tracing::debug!(message = %id, "discord: duplicate message dropped");
            return Ok(());
        }
        let result = self.handle_message(message, inbound).await;
        if result.is_err() {
            self.memory().seen.remove(&id);
        }
        result
    }

    async fn handle_message(
        &self,
        message: &Message,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Result<(), AdapterError> {
        if message.author.bot || message.webhook_id.is_some() {
            return Ok(());
        }
        let bot_user = self.inner.bot_user.get().cloned().unwrap_or_default();
        let thread_parent = if message.guild_id.is_some() {
            self.thread_parent(message.channel_id).await?
        } else {
            None
        };
        let incoming = IncomingMessage {
            message_id: message.id.to_string(),
            channel_id: message.channel_id.to_string(),
            guild_id: message.guild_id.map(|g| g.to_string()),
            thread_parent,
            author_id: message.author.id.to_string(),
            author_bot: message.author.bot,
            webhook_or_system: !matches!(
                message.kind,
                MessageType::Regular | MessageType::InlineReply
            ),
            text: message.content.clone(),
            mentions_bot: message
                .mentions
                .iter()
                .any(|u| u.id.to_string() == bot_user),
        };
        let decision = {
            let memory = self.memory();
            inbound::decide(&incoming, &self.rules(), |thread| {
                memory.threads.contains(thread)
            })
        };
        let (route, text, triggers) = match decision {
            Decision::Ignore(why) => {
                tracing::debug!(channel = %incoming.channel_id, why, "discord: message ignored");
                return Ok(());
            }
            Decision::Refuse(text) => {
                tracing::info!(channel = %incoming.channel_id, user = %incoming.author_id, "discord: refused a message from outside the allowlists");
                let reply = CreateMessage::new()
                    .content(text)
                    .reference_message(message);
                rest::with_retry("refusal", || {
                    message.channel_id.send_message(self.http(), reply.clone())
                })
                .await?;
                return Ok(());
            }
            Decision::Forward {
                route,
                text,
                triggers,
            } => (route, text, triggers),
        };
        let channel = match route {
            Route::Direct { channel } => ChannelKey::channel(PlatformKind::Discord, channel),
            Route::Thread { parent, thread } => {
                ChannelKey::thread(PlatformKind::Discord, parent, thread)
            }
            Route::NewThread { channel } => {
                let thread = self.start_thread(message, &text).await?;
                ChannelKey::thread(PlatformKind::Discord, channel, thread)
            }
        };
        if let Some(thread) = &channel.thread_id {
            let mut memory = self.memory();
            memory.threads.insert(thread);
            memory
                .parents
                .insert(thread.clone(), channel.channel_id.clone());
            if triggers {
                memory
                    .latest_thread
                    .insert(channel.channel_id.clone(), thread.clone());
            }
        }
        let author = Author {
            id: message.author.id.to_string(),
            name: message
                .author
                .global_name
                .clone()
                .unwrap_or_else(|| message.author.name.clone()),
            is_bot: false,
            roles: message
                .member
                .as_ref()
                .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default(),
        };
        let item = match loop_adapter::parse_command(&text) {
            Some(loop_adapter::ChatCommand::Prompt(prompt)) => {
                Inbound::Message(self.message_of(message, channel, author, prompt, true))
            }
            Some(command) if text.trim_start().starts_with("!loop") => Inbound::Command {
                channel,
                author,
                command,
            },
            _ => Inbound::Message(self.message_of(message, channel, author, text, triggers)),
        };
        let triggers = matches!(&item, Inbound::Message(m) if m.triggers);
        hand_over(inbound, item).await?;
        if triggers {
            // Eyes: loop has the message and will answer it.
            let this = self.clone();
            let (channel, id) = (message.channel_id, message.id);
            self.inner.tasks.spawn(async move {
                if let Err(err) = this.react(channel, id, EYES, true).await {
                    tracing::debug!(error = %err, "discord: cannot add the eyes reaction");
                }
            });
        }
        Ok(())
    }

    /// Adds (or, with `add` false, removes) the bot's own reaction on a message.
    async fn react(
        &self,
        channel: ChannelId,
        message: MessageId,
        emoji: &str,
        add: bool,
    ) -> Result<(), AdapterError> {
        let reaction = ReactionType::Unicode(emoji.to_owned());
        if add {
            rest::with_retry("create reaction", || {
                self.http().create_reaction(channel, message, &reaction)
            })
            .await
        } else {
            rest::with_retry("delete reaction", || {
                self.http().delete_reaction_me(channel, message, &reaction)
            })
            .await
        }
    }

    fn message_of(
        &self,
        message: &Message,
        channel: ChannelKey,
        author: Author,
        text: String,
        triggers: bool,
    ) -> loop_adapter::Message {
        loop_adapter::Message {
            message_id: message.id.to_string(),
            channel,
            author,
            text,
            triggers,
            work_dir: None,
        }
    }

    /// Creates a public thread on `message`, named after its text.
    async fn start_thread(&self, message: &Message, text: &str) -> Result<String, AdapterError> {
        let mut name: String = text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(THREAD_NAME_CHARS)
            .collect();
        if name.trim().is_empty() {
            name = "loop".to_owned();
        }
        let thread = rest::with_retry("create thread", || {
            message.channel_id.create_thread_from_message(
                self.http(),
                message.id,
                CreateThread::new(name.clone()),
            )
        })
        .await?;
        Ok(thread.id.to_string())
    }

    /// Where a key's messages go: the thread, else the channel.
    fn target(channel: &ChannelKey) -> Result<ChannelId, AdapterError> {
        if channel.platform != PlatformKind::Discord {
            return Err(AdapterError::UnknownChannel(channel.to_string()));
        }
        let id = channel.thread_id.as_deref().unwrap_or(&channel.channel_id);
        id.parse::<u64>()
            .ok()
            .filter(|id| *id != 0)
            .map(ChannelId::new)
            .ok_or_else(|| AdapterError::BadChannelKey(channel.to_string()))
    }

    async fn send(
        &self,
        channel: &ChannelKey,
        message: CreateMessage,
    ) -> Result<PostedMessage, AdapterError> {
        let target = Self::target(channel)?;
        let posted = rest::with_retry("create message", || {
            target.send_message(self.http(), message.clone())
        })
        .await?;
        if let Some(thread) = &channel.thread_id {
            self.memory().threads.insert(thread);
        }
        Ok(PostedMessage {
            message_id: posted.id.to_string(),
        })
    }

    /// Whether a person may decide approvals: listed by user id or holding a listed role.
    fn is_approver(&self, user: &str, roles: &[String]) -> bool {
        let settings = &self.inner.settings;
        settings.approver_users.iter().any(|u| u == user)
            || roles
                .iter()
                .any(|r| settings.approver_roles.iter().any(|a| a == r))
    }

    async fn on_interaction(
        &self,
        interaction: Interaction,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Result<(), AdapterError> {
        match interaction {
            Interaction::Component(click) => approval::on_click(self, click, inbound).await,
            Interaction::Command(command) => commands::on_command(self, command, inbound).await,
            _ => Ok(()),
        }
    }

    /// Registers `/loop` (in the configured guild, else globally).
    async fn register_commands(&self) -> Result<(), AdapterError> {
        let definition = vec![commands::definition()];
        match self.inner.settings.command_guild {
            Some(guild) => {
                rest::with_retry("register guild commands", || {
                    serenity::all::GuildId::new(guild).set_commands(self.http(), definition.clone())
                })
                .await?;
            }
            None => {
                rest::with_retry("register global commands", || {
                    serenity::all::Command::set_global_commands(self.http(), definition.clone())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Answers an interaction (within Discord's three seconds).
    async fn respond(
        &self,
        id: serenity::all::InteractionId,
        token: &str,
        response: CreateInteractionResponse,
    ) -> Result<(), AdapterError> {
        rest::with_retry("interaction callback", || {
            response.clone().execute(self.http(), (id, token))
        })
        .await
    }

    fn private_reply(text: &str) -> CreateInteractionResponse {
        CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .content(text)
                .ephemeral(true),
        )
    }
}

fn http_of(settings: &DiscordSettings) -> Http {
    let mut builder = HttpBuilder::new(settings.token.expose_secret());
    if let Some(url) = &settings.api_url {
        // serenity's limiter ignores the proxy setting, so it is off here and loop honours
        // 429s itself (`rest`). Against discord.com serenity's limiter stays on: it reads the
        // rate-limit headers that serenity's error type does not pass on.
        builder = builder
            .proxy(url.trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    if let Some(app) = settings.application_id.filter(|id| *id != 0) {
        builder = builder.application_id(ApplicationId::new(app));
    }
    builder.build()
}

/// Hands an item to the orchestrator and waits until it was taken (a message stored).
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

/// serenity's event handler: forwards to the adapter.
struct Handler {
    adapter: DiscordAdapter,
    inbound: mpsc::Sender<Inbound>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let _ = self.adapter.inner.bot_user.set(ready.user.id.to_string());
        tracing::info!(bot_user = %ready.user.id, guilds = ready.guilds.len(), "discord: connected");
        if self.adapter.inner.http.application_id().is_none() {
            self.adapter
                .inner
                .http
                .set_application_id(ready.application.id);
        }
        let adapter = self.adapter.clone();
        self.adapter.inner.tasks.spawn(async move {
            match adapter.register_commands().await {
                Ok(()) => tracing::info!("discord: /loop registered"),
                Err(err) => tracing::warn!(error = %err, "discord: cannot register /loop"),
            }
        });
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!("discord: session resumed");
    }

    async fn message(&self, _ctx: Context, message: Message) {
        if let Err(err) = self.adapter.on_message(&message, &self.inbound).await {
            tracing::warn!(error = %err, message = %message.id, "discord: message not handled");
        }
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        if let Err(err) = self
            .adapter
            .on_interaction(interaction, &self.inbound)
            .await
        {
            tracing::warn!(error = %err, "discord: interaction not handled");
        }
    }
}

#[async_trait]
impl Adapter for DiscordAdapter {
    fn platform(&self) -> PlatformKind {
        PlatformKind::Discord
    }

    fn parts(&self, text: &str) -> Vec<OutgoingPart> {
        loop_adapter::outgoing_parts(text, DISCORD_CHUNK, MAX_SPLIT_MESSAGES)
    }

    async fn open_thread(
        &self,
        channel: &ChannelKey,
        title: &str,
    ) -> Result<Option<ChannelKey>, AdapterError> {
        let parent = channel.parent();
        let posted = self.post(&parent, title).await?;
        let channel_id = Self::target(&parent)?;
        let message_id = posted
            .message_id
            .parse::<u64>()
            .ok()
            .filter(|id| *id != 0)
            .map(serenity::all::MessageId::new)
            .ok_or_else(|| AdapterError::BadChannelKey(posted.message_id.clone()))?;
        let name: String = title.chars().take(THREAD_NAME_CHARS).collect();
        let thread = rest::with_retry("create thread", || {
            channel_id.create_thread_from_message(
                self.http(),
                message_id,
                CreateThread::new(name.clone()),
            )
        })
        .await?;
        let thread = ChannelKey::thread(
            PlatformKind::Discord,
            parent.channel_id,
            thread.id.to_string(),
        );
        self.remember_threads(std::slice::from_ref(&thread));
        Ok(Some(thread))
    }

    fn remember_threads(&self, threads: &[ChannelKey]) {
        let mut memory = self.memory();
        for key in threads
            .iter()
            .filter(|k| k.platform == PlatformKind::Discord)
        {
            if let Some(thread) = &key.thread_id {
                memory.threads.insert(thread);
                memory
                    .parents
                    .insert(thread.clone(), key.channel_id.clone());
            }
        }
    }

    async fn run(
        &self,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let handler = Handler {
            adapter: self.clone(),
            inbound,
        };
        // The same HTTP settings as the adapter's own calls (proxy, limiter off).
        let mut client = ClientBuilder::new_with_http(http_of(&self.inner.settings), intents())
            .event_handler(handler)
            .await
            .map_err(|err| rest::map_error("gateway setup", &err))?;
        let shards = client.shard_manager.clone();
        let result = tokio::select! {
            result = client.start() => result.map_err(|err| rest::map_error("gateway", &err)),
            _ = shutdown.cancelled() => {
                shards.shutdown_all().await;
                Ok(())
            }
        };
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        result
    }

    /// With a `key`, the message carries it as `nonce` with `enforce_nonce`: Discord returns
    /// the message it already created with that nonce (for a few minutes) instead of posting
    /// the part again, so a retry after a lost response or a crash shows up once.
    async fn post_part(
        &self,
        channel: &ChannelKey,
        part: &OutgoingPart,
        key: Option<&str>,
    ) -> Result<PostedMessage, AdapterError> {
        let mut message = match part {
            OutgoingPart::Text(text) => CreateMessage::new().content(text.as_str()),
            OutgoingPart::Attachment(text) => {
                let length = text.chars().count();
                let preview: String = text.chars().take(PREVIEW_CHARS).collect();
                let comment =
                    format!("{preview}…\n\n*The full answer ({length} characters) is attached.*");
                let preview = loop_adapter::split_message(&comment, DISCORD_CHUNK)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                CreateMessage::new()
                    .content(preview)
                    .add_file(CreateAttachment::bytes(
                        text.as_bytes().to_vec(),
                        "answer.md",
                    ))
            }
        };
        if let Some(key) = key {
            message = message
                .nonce(Nonce::String(key.to_owned()))
                .enforce_nonce(true);
        }
        self.send(channel, message).await
    }

    /// A message with the file attached (`multipart/form-data`, `files[0]`) and the comment
    /// as its content, cut to Discord's 2000 characters.
    async fn post_file(
        &self,
        channel: &ChannelKey,
        filename: &str,
        bytes: &[u8],
        comment: &str,
    ) -> Result<PostedMessage, AdapterError> {
        let content = loop_adapter::split_message(comment, DISCORD_CHUNK)
            .into_iter()
            .next()
            .unwrap_or_default();
        let message = CreateMessage::new()
            .content(content)
            .add_file(CreateAttachment::bytes(bytes.to_vec(), filename));
        self.send(channel, message).await
    }

    async fn edit(
        &self,
        channel: &ChannelKey,
        message_id: &str,
        text: &str,
    ) -> Result<(), AdapterError> {
        let target = Self::target(channel)?;
        let id = message_id
            .parse::<u64>()
            .ok()
            .filter(|id| *id != 0)
            .map(MessageId::new)
            .ok_or_else(|| AdapterError::Rejected(format!("bad message id {message_id:?}")))?;
        let text = loop_adapter::split_message(text, DISCORD_CHUNK)
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut edit = EditMessage::new().content(text);
        if self.memory().prompts.remove(message_id) {
            // A decided approval prompt loses its buttons; who decided is in the text.
            edit = edit.components(Vec::new());
        }
        rest::with_retry("edit message", || {
            target.edit_message(self.http(), id, edit.clone())
        })
        .await
        .map(|_| ())
    }

    async fn mark(
        &self,
        channel: &ChannelKey,
        message_id: &str,
        mark: TurnMark,
    ) -> Result<(), AdapterError> {
        let Some(id) = message_id.parse::<u64>().ok().filter(|id| *id != 0) else {
            // Not a Discord message (a scheduled task's, a slash command's).
            return Ok(());
        };
        // A thread started from a message has that message's id, and the message itself
        // lives in the parent channel; every other message lives where its key points.
        let where_ = if channel.thread_id.as_deref() == Some(message_id) {
            Self::target(&channel.parent())?
        } else {
            Self::target(channel)?
        };
        let id = MessageId::new(id);
        self.react(where_, id, EYES, false).await?;
        let emoji = match mark {
            TurnMark::Succeeded => SUCCEEDED,
            TurnMark::Failed => FAILED,
        };
        self.react(where_, id, emoji, true).await
    }

    async fn post_approval(
        &self,
        channel: &ChannelKey,
        prompt: &ApprovalPrompt,
    ) -> Result<PostedMessage, AdapterError> {
        let posted = self.send(channel, approval::prompt_message(prompt)).await?;
        self.memory().prompts.insert(posted.message_id.clone());
        Ok(posted)
    }
}
