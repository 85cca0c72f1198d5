//! The shape of one config file (`~/.loop/config.json` or `{workDir}/.loop/config.json`).
//!
//! Every field is optional so that a layer says only what it sets; [`super::Config`] applies
//! layers over the defaults. Field names are the Go Loop's (see `LOOP-COMPAT.md`), so a user's
//! existing file loads unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ConfigError;
use super::secret::Secret;

/// The platforms loop can serve at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// The terminal chat (`loop chat`, `loop run`) against the local daemon.
    Local,
    /// Slack over Socket Mode.
    Slack,
    /// Discord over the gateway.
    Discord,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Which projects' own environment descriptions (`.loop/container/Dockerfile`,
/// `devcontainer.json`) loop builds and runs: they are files the agent and strangers write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectImages {
    /// A version an owner trusted (`/loop trust`, `loop image build --dir`).
    #[default]
    Trusted,
    /// Every version, untrusted too: for a host whose projects are all its owner's.
    Always,
    /// None: every project runs in `container_image`.
    Never,
}

/// What the gate does when no rule matches, or what a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateDecision {
    /// Let the call through.
    #[default]
    Allow,
    /// Fail the call.
    Deny,
    /// Hold the call and ask an approver in chat. `ask` is accepted as a synonym.
    #[serde(alias = "ask")]
    Approve,
}

/// One MCP server given to the agent (`mcp.servers.{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    /// Program to start inside the container.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A reusable scheduled-task recipe (`task_templates[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTemplate {
    /// Key used to merge project templates over global ones.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub schedule: String,
    #[serde(rename = "type", default = "default_task_type")]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_delete_sec: Option<u64>,
}

fn default_task_type() -> String {
    "cron".to_owned()
}

/// Who may do what (`permissions.owners`, `permissions.members`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PermissionSet {
    /// Platform user ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Platform role ids (Discord).
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub owners: PermissionSet,
    #[serde(default)]
    pub members: PermissionSet,
    /// Who may press Approve on a gate prompt. Empty means the owners.
    #[serde(default)]
    pub approvers: PermissionSet,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemoryLayer {
    pub enabled: Option<bool>,
    pub paths: Option<Vec<String>>,
    pub max_chunk_chars: Option<usize>,
    pub reindex_interval_sec: Option<u64>,
    pub embeddings: Option<EmbeddingsLayer>,
    /// Directory holding a local sentence-embedding model (loop's addition).
    pub model_dir: Option<String>,
    /// Where the downloaded model is kept when `model_dir` is unset (loop's addition).
    pub cache_dir: Option<String>,
    /// Best memories put into the first prompt of a new session (loop's addition; 0 = off).
    pub inject_top_k: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsLayer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BrowserLayer {
    pub enabled: Option<bool>,
    pub chrome_image: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct McpLayer {
    pub servers: Option<BTreeMap<String, McpServer>>,
}

/// Rules are kept as JSON here and validated by the gate's own strict loader when a
/// container's policy is written, so the shape is declared once, in `loop-gate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentGateLayer {
    pub enabled: Option<bool>,
    pub default_decision: Option<GateDecision>,
    pub path_rules: Option<Vec<Value>>,
    pub command_rules: Option<Vec<Value>>,
    pub file_rules: Option<Vec<Value>>,
    pub connect_rules: Option<Vec<Value>>,
    /// Seconds an `approve` prompt waits for a human before it counts as a deny.
    pub approval_timeout_sec: Option<u64>,
}

/// `gates.egress`: global-only.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EgressLayer {
    pub enabled: Option<bool>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DockerProxyLayer {
    pub enabled: Option<bool>,
    pub default_decision: Option<GateDecision>,
    pub http_rules: Option<Vec<Value>>,
    pub body_rules: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub pending: u32,
    pub per_minute: u32,
    pub total: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            pending: 30,
            per_minute: 60,
            total: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSettings {
    pub retention_days: u32,
    #[serde(default)]
    pub verbose: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention_days: 30,
            verbose: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GatesLayer {
    pub agentgate: Option<AgentGateLayer>,
    pub docker_proxy: Option<DockerProxyLayer>,
    pub egress: Option<EgressLayer>,
    pub rate_limits: Option<RateLimits>,
    pub audit: Option<AuditSettings>,
    /// Global-only: let project files loosen gates (switch off, add `allow` rules).
    pub trust_project_config: Option<bool>,
}

/// What the scheduler does with runs that were due while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissedRuns {
    /// Run a task once on start, however many runs it missed.
    #[default]
    Once,
    /// Drop the missed runs; the task runs next at its next scheduled time.
    Skip,
}

/// `scheduler`: loop's own section (the Go Loop has only `poll_interval_sec`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchedulerLayer {
    pub missed_runs: Option<MissedRuns>,
    /// Shortest interval between two runs of one task.
    pub min_interval_sec: Option<u64>,
    /// IANA zone for new tasks' wall-clock times; the host's when unset.
    pub timezone: Option<String>,
}

/// How to reach one forge: the remote URLs it covers, the token and the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitRemoteConfig {
    /// Remote URLs starting with this (`https://github.com/`) use this entry.
    pub url_prefix: String,
    /// A token with push rights (and pull-request rights for `forge`).
    #[serde(default)]
    pub token: Secret,
    /// The HTTP user the token goes with (`x-access-token` for GitHub, `oauth2` for GitLab).
    #[serde(default)]
    pub username: Option<String>,
    /// `github` or `gitlab`: whose REST API opens pull (merge) requests.
    #[serde(default)]
    pub forge: Option<Forge>,
    /// The REST API's base URL (`https://api.github.com`, `https://gitlab.com/api/v4`).
    #[serde(default)]
    pub api_url: Option<String>,
}

/// Whose pull-request API a remote speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    Gitlab,
}

/// `git` in one config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GitLayer {
    pub worktrees: Option<bool>,
    pub worktrees_dir: Option<String>,
    pub branch_prefix: Option<String>,
    pub auto_commit: Option<bool>,
    pub push_after_turn: Option<bool>,
    pub remove_idle_days: Option<u64>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub remotes: Option<Vec<GitRemoteConfig>>,
    pub agent_publish: Option<GateDecision>,
}

/// One config file, every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigLayer {
    pub platforms: Option<Vec<Platform>>,
    pub slack_bot_token: Option<Secret>,
    pub slack_app_token: Option<Secret>,
    pub discord_token: Option<Secret>,
    pub discord_app_id: Option<String>,
    pub discord_guild_id: Option<String>,
    pub claude_code_oauth_token: Option<Secret>,
    pub anthropic_api_key: Option<Secret>,
    pub claude_bin_path: Option<String>,
    pub claude_model: Option<String>,
    pub db_path: Option<String>,
    pub database_url: Option<Secret>,
    pub log_file: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub container_image: Option<String>,
    pub container_timeout_sec: Option<u64>,
    pub container_memory_mb: Option<u64>,
    pub container_cpus: Option<f64>,
    pub container_keep_alive_sec: Option<u64>,
    pub container_runtime: Option<String>,
    pub project_images: Option<ProjectImages>,
    pub api_addr: Option<String>,
    pub poll_interval_sec: Option<u64>,
    pub max_concurrent_runs: Option<usize>,
    pub channel_budget_usd: Option<f64>,
    pub shutdown_grace_sec: Option<u64>,
    pub terminal_grace_sec: Option<u64>,
    pub dashboard_proxy_header: Option<String>,
    pub dashboard_proxy_roles_header: Option<String>,
    pub warm_idle_sec: Option<u64>,
    pub max_warm_threads: Option<usize>,
    pub spare_agents: Option<bool>,
    pub mounts: Option<Vec<String>>,
    pub copy_files: Option<Vec<String>>,
    pub envs: Option<BTreeMap<String, Value>>,
    pub extra_dirs: Option<Vec<String>>,
    pub allowed_dirs: Option<Vec<String>>,
    pub extra_ca_certs: Option<Vec<String>>,
    pub keep_mcp_configs: Option<bool>,
    pub mcp: Option<McpLayer>,
    pub task_templates: Option<Vec<TaskTemplate>>,
    pub memory: Option<MemoryLayer>,
    pub browser: Option<BrowserLayer>,
    /// Older flat spelling of `browser.enabled`.
    pub browser_enabled: Option<bool>,
    pub permissions: Option<Permissions>,
    pub gates: Option<GatesLayer>,
    pub scheduler: Option<SchedulerLayer>,
    pub git: Option<GitLayer>,
    pub slack: Option<SlackLayer>,
    pub discord: Option<DiscordLayer>,
}

/// `slack`: loop's own Slack settings (the Go Loop has only the two tokens). Global-only.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlackLayer {
    /// Whether a reply in a thread loop takes part in needs a mention to start a turn.
    pub require_mention_in_threads: Option<bool>,
    /// Slack user ids who may start runs; empty: everyone.
    pub allowed_users: Option<Vec<String>>,
    /// Channel ids where runs may start; empty: every channel the app is in.
    pub allowed_channels: Option<Vec<String>>,
    /// Web API base URL (Enterprise Grid proxies, tests); `https://slack.com/api` by default.
    pub api_url: Option<String>,
    /// Receive events over HTTP (Events API) instead of Socket Mode.
    pub events_api: Option<SlackEventsApiLayer>,
}

/// `discord`: loop's own Discord settings (the token and ids are top-level fields). Global-only.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscordLayer {
    /// Whether a message in a thread loop takes part in needs a mention to start a turn.
    pub require_mention_in_threads: Option<bool>,
    /// Guild (server) ids where runs may start; empty: every guild the bot is in.
    pub allowed_guilds: Option<Vec<String>>,
    /// Channel ids where runs may start (a thread counts as its parent); empty: every channel.
    pub allowed_channels: Option<Vec<String>>,
    /// Discord user ids who may start runs; empty: everyone.
    pub allowed_users: Option<Vec<String>>,
    /// REST base URL (an HTTP proxy, tests); `https://discord.com` by default.
    pub api_url: Option<String>,
}

/// `slack.events_api`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlackEventsApiLayer {
    /// `host:port` to listen on (put a TLS-terminating proxy in front).
    pub listen: Option<String>,
    /// The app's signing secret: every request's `X-Slack-Signature` is checked with it.
    pub signing_secret: Option<Secret>,
}

/// A parsed file: its layer and the keys loop did not recognise.
#[derive(Debug)]
pub struct ParsedLayer {
    pub layer: ConfigLayer,
    /// JSON paths of keys that were ignored, e.g. `desktop.theme`.
    pub unknown_keys: Vec<String>,
    /// Keys given twice in one object (a pasted section over the onboarded file): the JSON
    /// path and the lines of the first and the later occurrence, which is the one used.
    pub duplicate_keys: Vec<DuplicateKey>,
}

/// A key given twice in one object of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: String,
    pub first_line: usize,
    pub used_line: usize,
}

/// Parses HJSON-style JSON (comments, trailing commas) into a layer. Syntax errors carry the
/// line and column; type errors carry the JSON path and what was expected.
pub fn parse_layer(path: &Path, text: &str) -> Result<ParsedLayer, ConfigError> {
    let mut parsed = layer_from_value(path, Value::Object(parse_object(path, text)?))?;
    parsed.duplicate_keys = duplicate_keys(text);
    Ok(parsed)
}

/// Parses HJSON-style JSON into its top-level object (an empty file is an empty object).
pub fn parse_object(path: &Path, text: &str) -> Result<Map<String, Value>, ConfigError> {
    let value: Value =
        jsonc_parser::parse_to_serde_value(text, &jsonc_parser::ParseOptions::default()).map_err(
            |err| ConfigError::Syntax {
                file: path.to_path_buf(),
                line: err.line_display(),
                column: err.column_display(),
                message: err.kind().to_string(),
            },
        )?;
    match value {
        Value::Null => Ok(Map::new()),
        Value::Object(object) => Ok(object),
        other => Err(ConfigError::Type {
            file: path.to_path_buf(),
            json_path: ".".to_owned(),
            message: format!(
                "expected an object at the top level, found {}",
                json_kind(&other)
            ),
        }),
    }
}

/// A layer from a parsed file, with the keys loop did not recognise (duplicates are a property
/// of the text: [`duplicate_keys`]).
pub fn layer_from_value(path: &Path, value: Value) -> Result<ParsedLayer, ConfigError> {
    let mut unknown_keys = Vec::new();
    // serde_ignored writes `?` for the `Some` of an `Option`; users know only key names.
    let mut record = |ignored: serde_ignored::Path<'_>| {
        unknown_keys.push(ignored.to_string().replace("?.", "").replace(".?", ""))
    };
    let deserializer = serde_ignored::Deserializer::new(value, &mut record);
    let layer: ConfigLayer =
        serde_path_to_error::deserialize(deserializer).map_err(|err| ConfigError::Type {
            file: path.to_path_buf(),
            json_path: err.path().to_string(),
            message: err.into_inner().to_string(),
        })?;
    Ok(ParsedLayer {
        layer,
        unknown_keys,
        duplicate_keys: Vec::new(),
    })
}

/// Every key given twice in one object, with 1-based lines. The JSON value keeps the later
/// one silently, so the syntax tree is walked for them.
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    use jsonc_parser::ast::Value as Node;
    fn walk(
        node: &Node<'_>,
        path: &str,
        line_of: &dyn Fn(usize) -> usize,
        out: &mut Vec<DuplicateKey>,
    ) {
        match node {
            Node::Object(object) => {
                let mut seen: std::collections::HashMap<&str, usize> = Default::default();
                for prop in &object.properties {
                    let name = prop.name.as_str();
                    let key = if path.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{path}.{name}")
                    };
                    let line = line_of(prop.range.start);
                    if let Some(first_line) = seen.insert(name, line) {
                        out.push(DuplicateKey {
                            path: key.clone(),
                            first_line,
                            used_line: line,
                        });
                    }
                    walk(&prop.value, &key, line_of, out);
                }
            }
            Node::Array(array) => {
                for (index, element) in array.elements.iter().enumerate() {
                    walk(element, &format!("{path}[{index}]"), line_of, out);
                }
            }
            _ => {}
        }
    }
    let Ok(parsed) = jsonc_parser::parse_to_ast(
        text,
        &jsonc_parser::CollectOptions::default(),
        &jsonc_parser::ParseOptions::default(),
    ) else {
        return Vec::new();
    };
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut out = Vec::new();
    if let Some(value) = &parsed.value {
        walk(value, "", &line_of, &mut out);
    }
    out
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
