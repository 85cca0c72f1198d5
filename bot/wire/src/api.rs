//! Request and response bodies of the host API, shared by the daemon, the `loop` CLI client and
//! `loop mcp` in the container, so each JSON shape exists once.

use serde::{Deserialize, Serialize};

/// What the daemon's event stream carries about runs (for `loop chat`, dashboards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    Started {
        run_id: String,
        channel: String,
    },
    Progress {
        run_id: String,
        channel: String,
        status: String,
    },
    Finished {
        run_id: String,
        channel: String,
        status: String,
    },
}

/// What a local client sees of a local channel's chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LocalEvent {
    /// A new message in the channel.
    Posted {
        channel: String,
        message_id: String,
        text: String,
    },
    /// A message was replaced (status updates).
    Edited {
        channel: String,
        message_id: String,
        text: String,
    },
}

impl LocalEvent {
    pub fn channel(&self) -> &str {
        match self {
            LocalEvent::Posted { channel, .. } | LocalEvent::Edited { channel, .. } => channel,
        }
    }
}

/// Most records in one `POST /api/gate/container-audit` (the daemon refuses more; the
/// container's shipper sends batches of at most this many).
pub const MAX_AUDIT_BATCH: usize = 500;

/// A person's answer to a gate approval: the three buttons. The gate's protocol
/// (`loop_gate::wire`) and the admin API's [`DecideApproval`] carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// **Allow once**.
    AllowOnce,
    /// **Allow for session**: cache on the session key for the life of the container.
    AllowSession,
    /// **Deny**.
    Deny,
}

/// `POST /api/local/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// Local channel name: letters, digits, `.`, `_`, `-`; at most 64.
    pub channel: String,
    pub text: String,
    /// Work directory for the channel (validated against `allowed_dirs`).
    #[serde(default)]
    pub dir: Option<String>,
    /// Client-chosen id; resending the same id is answered once.
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
}

/// Answer to [`PostMessage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageAccepted {
    pub channel_key: String,
    pub message_id: String,
    /// `None` when the message was a duplicate or refused (see the channel for why).
    pub inbox_id: Option<i64>,
}

/// `GET /api/local/messages/{inbox_id}`: where a message is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageState {
    pub inbox_id: i64,
    pub status: String,
    pub run_id: Option<String>,
    pub run_status: Option<String>,
    pub answer: Option<String>,
    pub error: Option<String>,
}

/// `POST /api/local/commands`: a `/loop ...` command for a local channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostCommand {
    pub channel: String,
    pub command: String,
}

/// What the local stream WebSocket sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "event", rename_all = "snake_case")]
pub enum StreamItem {
    Chat(LocalEvent),
    Run(RunEventWire),
}

/// A run event as JSON (the orchestrator's type, re-tagged for the wire).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEventWire {
    #[serde(rename = "type")]
    pub kind: String,
    pub run_id: String,
    pub channel: String,
    #[serde(default)]
    pub status: Option<String>,
}

impl From<&RunEvent> for RunEventWire {
    fn from(event: &RunEvent) -> Self {
        match event {
            RunEvent::Started { run_id, channel } => RunEventWire {
                kind: "started".into(),
                run_id: run_id.clone(),
                channel: channel.clone(),
                status: None,
            },
            RunEvent::Progress {
                run_id,
                channel,
                status,
            } => RunEventWire {
                kind: "progress".into(),
                run_id: run_id.clone(),
                channel: channel.clone(),
                status: Some(status.clone()),
            },
            RunEvent::Finished {
                run_id,
                channel,
                status,
            } => RunEventWire {
                kind: "finished".into(),
                run_id: run_id.clone(),
                channel: channel.clone(),
                status: Some(status.clone()),
            },
        }
    }
}

/// An error body: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Whether a local channel name is acceptable.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `POST /api/approvals/{id}`: a person's answer to a gate approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    pub decision: ApprovalDecision,
    /// Who answered, for the audit log; `admin` when absent.
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/ui/login-code` (admin): a one-time dashboard login.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiLoginRequest {
    /// The name decisions are shown under (`alice (dashboard)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Someone else's login (`loop ui --user ID`): the session may do what this user id may
    /// do in chat (`permissions` and each channel's grants). None: the operator's own login,
    /// an owner everywhere like the local platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acts_as: Option<String>,
    /// That user's role ids (Discord server roles), for `permissions` entries by role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Answer to [`UiLoginRequest`]: the path (with the code) to open on the daemon's address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UiLoginLink {
    /// `/ui/login?code=...`: single use.
    pub path: String,
    /// How long the code stays usable.
    pub expires_in_sec: u64,
}

/// `POST /api/tasks`: schedule a prompt. Field names follow the Go Loop's `schedule_task`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// A cron expression (5 or 6 fields), an interval (`every 2h`, `30m`) or a one-shot time
    /// (`in 10m`, RFC 3339, `2026-01-02 09:00`).
    pub schedule: String,
    /// `cron`, `interval` or `once`; guessed from `schedule` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What the agent is asked when the task runs.
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// IANA zone of the schedule's wall-clock times; the daemon's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The channel key; required with the admin token, implied by a container token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Who asked (admin callers; a container's tasks are its running turn's author's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// `PATCH /api/tasks/{id}`: absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A task as the API returns it; times as Unix ms and as RFC 3339 in the task's zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: String,
    pub channel: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub schedule: String,
    pub prompt: String,
    pub timezone: String,
    pub enabled: bool,
    #[serde(default)]
    pub next_run_at: Option<i64>,
    #[serde(default)]
    pub next_run: Option<String>,
    #[serde(default)]
    pub last_run_at: Option<i64>,
    #[serde(default)]
    pub last_run: Option<String>,
}

/// `POST /api/git/push` and `POST /api/git/pull-request` (container token): the agent asks
/// for its thread's branch to be pushed (and a pull request opened), which a person decides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitPublish {
    /// The pull request's title (pull requests only; default: the first commit's subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// What came of a [`GitPublish`]: what the thread was told, and whether it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitPublished {
    pub done: bool,
    pub text: String,
}

/// `POST /api/messages` (container token): post a message in the container's channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub content: String,
}

/// `POST /api/memory/save`: remember a text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveMemory {
    pub content: String,
    /// `channel` (the default), `project` or `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Where the text came from (a file, a URL, a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// The channel key; required with the admin token, implied by a container token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `POST /api/memory/search`: the memories closest in meaning to `query`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchMemory {
    pub query: String,
    /// How many results (default 5, at most 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `POST /api/memory/forget`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetMemory {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `POST /api/memory/index`: re-index the channel's project docs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexMemory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// One memory on the wire; `score` is set in search results (cosine similarity, -1..1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub id: String,
    /// `global`, `project` or `channel`.
    pub scope: String,
    /// The project directory or channel key ("" for global).
    pub scope_key: String,
    /// `agent`, `turn` or `doc`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    pub created_at: i64,
}

/// Answer of `POST /api/memory/forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forgotten {
    pub forgotten: bool,
}

/// Answer of `POST /api/memory/index`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reindexed {
    pub files: usize,
    pub chunks: usize,
    pub embedded: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Files not read (symlinks, not regular files, too large, not UTF-8).
    #[serde(default)]
    pub skipped: usize,
}
