//! Domain types the store hands out: statuses as enums, rows as plain structs.

use serde::Serialize;

/// Milliseconds since the Unix epoch, the store's clock unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

status_enum!(
    /// Where an inbox message is in its life.
    InboxStatus {
        Pending => "pending",
        Context => "context",
        Claimed => "claimed",
        Done => "done",
        Failed => "failed",
    }
);

status_enum!(
    /// How a run ended (or that it has not).
    RunStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running)
    }
}

status_enum!(
    /// Whether an outgoing message reached the platform.
    OutboxStatus {
        Pending => "pending",
        Sent => "sent",
        Failed => "failed",
    }
);

status_enum!(
    /// What an outgoing message is.
    OutboxKind {
        Answer => "answer",
        Notice => "notice",
    }
);

/// A stored inbox message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxMessage {
    pub id: i64,
    pub platform_message_id: String,
    pub channel_key: String,
    pub author_id: String,
    pub author_name: String,
    pub text: String,
    pub triggers: bool,
    pub status: InboxStatus,
    pub run_id: Option<String>,
    pub attempts: i32,
}

/// A channel's active session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub channel_key: String,
    pub claude_session_id: Option<String>,
    pub work_dir: String,
}

/// A run, for status displays and usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub channel_key: String,
    pub status: RunStatus,
    pub answer: Option<String>,
    pub error: Option<String>,
    pub claude_session_id: Option<String>,
    pub container_id: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// The scheduled task the run was for.
    pub task_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A run left running, and where its status message is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnfinishedRun {
    pub id: String,
    pub channel_key: String,
    pub status_message_id: Option<String>,
}

/// How a run ended, to be recorded.
#[derive(Debug, Clone, Default)]
pub struct RunFinish {
    pub answer: Option<String>,
    pub error: Option<String>,
    pub claude_session_id: Option<String>,
    pub container_id: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cost_usd: f64,
    pub num_turns: i32,
}

/// A message loop posts (or posted) on a platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxMessage {
    pub id: i64,
    pub channel_key: String,
    pub run_id: Option<String>,
    pub kind: OutboxKind,
    pub body: String,
    pub status: OutboxStatus,
    /// Failed deliveries so far.
    pub attempts: i32,
    /// Platform messages of `body` already posted (a long body is several).
    pub parts_sent: i32,
    /// Names this message's parts to platforms that deduplicate posts (Discord's `nonce`).
    pub delivery_key: String,
    /// The platform's id of the first part, once posted.
    pub platform_message_id: Option<String>,
}

/// Token and cost totals of one channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelUsage {
    pub channel_key: String,
    pub runs: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}
