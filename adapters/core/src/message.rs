//! Messages in, replies out, and the [`Adapter`] trait every platform implements.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::ChatCommand;

/// A chat platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    Local,
    Slack,
    Discord,
}

impl PlatformKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformKind::Local => "local",
            PlatformKind::Slack => "slack",
            PlatformKind::Discord => "discord",
        }
    }
}

impl FromStr for PlatformKind {
    type Err = AdapterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(PlatformKind::Local),
            "slack" => Ok(PlatformKind::Slack),
            "discord" => Ok(PlatformKind::Discord),
            other => Err(AdapterError::BadChannelKey(format!(
                "unknown platform {other:?}"
            ))),
        }
    }
}

/// Where a conversation lives: a channel, or a thread inside one. A thread is its own
/// session; its key names the parent channel too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelKey {
    pub platform: PlatformKind,
    pub channel_id: String,
    pub thread_id: Option<String>,
}

impl ChannelKey {
    pub fn channel(platform: PlatformKind, channel_id: impl Into<String>) -> ChannelKey {
        ChannelKey {
            platform,
            channel_id: channel_id.into(),
            thread_id: None,
        }
    }

    pub fn thread(
        platform: PlatformKind,
        channel_id: impl Into<String>,
        thread_id: impl Into<String>,
    ) -> ChannelKey {
        ChannelKey {
            platform,
            channel_id: channel_id.into(),
            thread_id: Some(thread_id.into()),
        }
    }

    /// The parent channel of a thread (itself for a channel).
    pub fn parent(&self) -> ChannelKey {
        ChannelKey::channel(self.platform, self.channel_id.clone())
    }

    /// A name safe for files and container names: `slack-C1-1700.1`.
    pub fn slug(&self) -> String {
        let mut slug = format!("{}-{}", self.platform.as_str(), self.channel_id);
        if let Some(thread) = &self.thread_id {
            slug.push('-');
            slug.push_str(thread);
        }
        slug.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

impl fmt::Display for ChannelKey {
    /// `platform:channel` or `platform:channel:thread`; the database key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform.as_str(), self.channel_id)?;
        if let Some(thread) = &self.thread_id {
            write!(f, ":{thread}")?;
        }
        Ok(())
    }
}

impl FromStr for ChannelKey {
    type Err = AdapterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let platform = parts.next().unwrap_or_default().parse()?;
        let channel = parts
            .next()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AdapterError::BadChannelKey(format!("{s:?} has no channel id")))?;
        Ok(ChannelKey {
            platform,
            channel_id: channel.to_owned(),
            thread_id: parts.next().filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    pub id: String,
    pub name: String,
    pub is_bot: bool,
    /// Platform role ids (Discord), for permission checks.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An incoming chat message, platform-neutral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The platform's own message id: the idempotency key.
    pub message_id: String,
    pub channel: ChannelKey,
    pub author: Author,
    pub text: String,
    /// Whether this message should start a turn (a mention, a reply in a thread loop owns,
    /// `!loop ...`, a DM). Other messages are kept as context for the next turn.
    pub triggers: bool,
    /// A work directory requested with the message (local clients: `loop run --dir`).
    #[serde(default)]
    pub work_dir: Option<String>,
}

/// Everything an adapter hands to the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Message(Message),
    Command {
        channel: ChannelKey,
        author: Author,
        command: ChatCommand,
    },
    /// A person answered a gate approval prompt (a button on the prompt's message). The
    /// adapter has already checked that the person is an approver; the orchestrator records
    /// the first answer and refuses later ones.
    Approval {
        /// Where the prompt was answered (it must be the approval's own channel).
        channel: ChannelKey,
        approval_id: String,
        choice: ApprovalChoice,
        decided_by: Author,
    },
    /// An item whose sender waits until the orchestrator has taken it (a message is stored),
    /// so that it acknowledges its platform only then.
    Receipted {
        item: Box<Inbound>,
        receipt: Receipt,
    },
}

/// Tells the sender of an [`Inbound::Receipted`] item whether it was taken. Dropping it
/// unanswered counts as "not taken".
#[derive(Clone, Default)]
pub struct Receipt(Arc<Mutex<Option<oneshot::Sender<bool>>>>);

impl Receipt {
    /// A receipt and the receiver its sender waits on.
    pub fn new() -> (Receipt, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        (Receipt(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Answers the sender (once; later calls do nothing).
    pub fn done(&self, taken: bool) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(taken);
        }
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receipt")
    }
}

/// Receipts carry no data: any two are equal, so items compare by content.
impl PartialEq for Receipt {
    fn eq(&self, _other: &Receipt) -> bool {
        true
    }
}

/// The three answers to an approval prompt, the same on every platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalChoice {
    AllowOnce,
    AllowSession,
    Deny,
}

/// An approval prompt to show in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalPrompt {
    pub approval_id: String,
    /// What the agent wants to do, e.g. `execve /usr/bin/git push`.
    pub summary: String,
    /// The agent's own explanation, if it gave one.
    pub detail: Option<String>,
    /// The whole prompt as plain text, for platforms without buttons.
    pub text: String,
}

/// A reaction on a person's message that shows where its turn is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnMark {
    /// The turn finished with an answer.
    Succeeded,
    /// The turn failed, timed out or was stopped.
    Failed,
}

/// One platform message of an outgoing text; a long text is several (see
/// [`Adapter::parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutgoingPart {
    /// A message with this text.
    Text(String),
    /// The whole text attached as a file, with its beginning shown.
    Attachment(String),
}

/// A message the platform accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    pub message_id: String,
}

/// Adapter failures the orchestrator acts on.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("invalid channel key: {0}")]
    BadChannelKey(String),
    #[error("rate limited by the platform; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("the platform refused the request: {0}")]
    Rejected(String),
    #[error("cannot reach the platform: {0}")]
    Unreachable(String),
    #[error("this adapter has no channel {0}")]
    UnknownChannel(String),
}

/// One chat platform.
#[async_trait]
pub trait Adapter: Send + Sync {
    fn platform(&self) -> PlatformKind;

    /// The platform messages `text` is posted as, in order. Pure and deterministic: a retry
    /// after a crash splits the same text the same way and resumes at the first part that
    /// was not recorded as posted.
    fn parts(&self, text: &str) -> Vec<OutgoingPart>;

    /// Threads loop took part in before this start (from the database), so that a reply in
    /// one continues the conversation without a new mention, as it did before the restart.
    /// Platforms that do not tell threads apart by mention ignore it.
    fn remember_threads(&self, _threads: &[ChannelKey]) {}

    /// Receives platform events until `shutdown`, sending each to `inbound`. The adapter
    /// acknowledges an event to its platform only after `inbound` accepted it.
    async fn run(
        &self,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError>;

    /// Posts one part of a text in a channel or thread. `key` is unique to this part and the
    /// same on every retry of it: a platform that can deduplicate posts (Discord's `nonce`
    /// with `enforce_nonce`) uses it so a retried part shows up once.
    async fn post_part(
        &self,
        channel: &ChannelKey,
        part: &OutgoingPart,
        key: Option<&str>,
    ) -> Result<PostedMessage, AdapterError>;

    /// Posts a text in a channel or thread (all its parts); returns the first part. For
    /// messages that need no durability (status lines, prompts); answers leave through the
    /// orchestrator's outbox, which posts part by part.
    async fn post(&self, channel: &ChannelKey, text: &str) -> Result<PostedMessage, AdapterError> {
        let mut first = None;
        for part in self.parts(text) {
            let posted = self.post_part(channel, &part, None).await?;
            first.get_or_insert(posted);
        }
        first.ok_or_else(|| AdapterError::Rejected("nothing to post: empty text".to_owned()))
    }

    /// Posts a file in a channel or thread, with `comment` as its message (a long diff as
    /// `loop-<branch>.diff`). Platforms without uploads post the comment and then the file's
    /// text in a code block, in parts.
    async fn post_file(
        &self,
        channel: &ChannelKey,
        filename: &str,
        bytes: &[u8],
        comment: &str,
    ) -> Result<PostedMessage, AdapterError> {
        let text = String::from_utf8_lossy(bytes);
        let fence = if text.contains("```") { "~~~" } else { "```" };
        self.post(
            channel,
            &format!("{comment}\n\n`{filename}`:\n{fence}\n{text}\n{fence}"),
        )
        .await
    }

    /// Posts `title` in `channel` and opens a thread on it (a scheduled task's run goes
    /// there). `None`: the platform has no threads, the run stays in the channel.
    async fn open_thread(
        &self,
        _channel: &ChannelKey,
        _title: &str,
    ) -> Result<Option<ChannelKey>, AdapterError> {
        Ok(None)
    }

    /// Replaces the text of a message loop posted earlier (status updates).
    async fn edit(
        &self,
        channel: &ChannelKey,
        message_id: &str,
        text: &str,
    ) -> Result<(), AdapterError>;

    /// Marks a person's message with how its turn ended (Slack: a reaction). Platforms without
    /// reactions do nothing.
    async fn mark(
        &self,
        _channel: &ChannelKey,
        _message_id: &str,
        _mark: TurnMark,
    ) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Posts an approval prompt; platforms with buttons show Approve, Always allow in this
    /// session, and Deny. By default the plain-text prompt is posted.
    async fn post_approval(
        &self,
        channel: &ChannelKey,
        prompt: &ApprovalPrompt,
    ) -> Result<PostedMessage, AdapterError> {
        self.post(channel, &prompt.text).await
    }

    /// Tells one person something only they should see (Slack: an ephemeral message). By
    /// default it is posted in the channel.
    async fn post_private(
        &self,
        channel: &ChannelKey,
        _user_id: &str,
        text: &str,
    ) -> Result<(), AdapterError> {
        self.post(channel, text).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_keys_round_trip() {
        for key in [
            ChannelKey::channel(PlatformKind::Slack, "C1"),
            ChannelKey::thread(PlatformKind::Slack, "C1", "1700000000.123"),
            ChannelKey::channel(PlatformKind::Local, "default"),
        ] {
            assert_eq!(key.to_string().parse::<ChannelKey>().expect("parses"), key);
        }
        assert_eq!(
            ChannelKey::thread(PlatformKind::Discord, "1", "2").to_string(),
            "discord:1:2"
        );
        assert!("irc:x".parse::<ChannelKey>().is_err());
        assert!("slack:".parse::<ChannelKey>().is_err());
        assert_eq!(
            ChannelKey::thread(PlatformKind::Slack, "C1", "17/00").slug(),
            "slack-C1-17-00"
        );
    }
}
