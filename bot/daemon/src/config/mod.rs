//! The one `Config` type: defaults < global file < project file < `LOOP_*` environment.
//!
//! The global file is `~/.loop/config.json` (or `$LOOP_HOME/config.json`), the project file
//! `{workDir}/.loop/config.json`. Both are HJSON-style JSON with the Go Loop's field names.
//! Unknown keys are warned about by name and ignored; a syntax error names the line and column;
//! a type error names the JSON path and the expected type. The merge rules are the Go Loop's,
//! except that the project file lives in a repository the agent itself can edit: what widens
//! a container (mounts, envs, the image, limits upward...) applies only from a version an
//! owner trusted (see [`project`]), and a project may only tighten the gates unless the global
//! file trusts projects too.

mod error;
mod git;
mod layer;
mod merge;
pub mod project;
mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

pub use layer::{
    AuditSettings, ConfigLayer, EmbeddingsLayer, GateDecision, LogFormat, McpServer, MissedRuns,
    ParsedLayer, PermissionSet, Permissions, Platform, RateLimits, SchedulerLayer, TaskTemplate,
    layer_from_value, parse_layer, parse_object,
};
pub use project::{ProjectFile, TrustedVersion};
pub use secret::{REDACTED, Secret};

pub use error::ConfigError;
pub use git::GitConfig;
pub use layer::{Forge, GitLayer, GitRemoteConfig, ProjectImages};
pub use merge::expand_home;
use merge::{set, set_or_clear};

/// Where the configuration comes from: the home directory, the loop directory and the
/// process environment. Tests build one by hand instead of touching the real home.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    /// The host user's home, used for `~` expansion.
    pub home: PathBuf,
    /// `~/.loop`, or `$LOOP_HOME`.
    pub loop_dir: PathBuf,
    /// Environment variables consulted for overrides and secrets.
    pub env: BTreeMap<String, String>,
}

impl ConfigSources {
    /// Reads the real home directory and environment.
    pub fn from_process() -> Self {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let home = env
            .get("HOME")
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .unwrap_or_else(|| PathBuf::from("/"));
        let loop_dir = env
            .get("LOOP_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".loop"));
        ConfigSources {
            home,
            loop_dir,
            env,
        }
    }

    /// The global config file.
    pub fn global_file(&self) -> PathBuf {
        self.loop_dir.join("config.json")
    }
}

/// The effective configuration, every default applied.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub platforms: Vec<Platform>,
    pub slack_bot_token: Secret,
    pub slack_app_token: Secret,
    pub discord_token: Secret,
    pub discord_app_id: String,
    pub discord_guild_id: String,
    pub claude_code_oauth_token: Secret,
    pub anthropic_api_key: Secret,
    pub claude_bin_path: String,
    pub claude_model: Option<String>,
    /// SQLite file, `~` expanded. Ignored when `database_url` is set.
    pub db_path: PathBuf,
    /// `sqlite://…` or `postgres://…`; may hold a password, so it is a secret.
    pub database_url: Secret,
    pub log_file: Option<PathBuf>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub container_image: String,
    pub container_timeout_sec: u64,
    /// 0 means no memory cap.
    pub container_memory_mb: u64,
    pub container_cpus: f64,
    pub container_keep_alive_sec: u64,
    /// Docker runtime: `runc` by default, `runsc` for gVisor.
    pub container_runtime: Option<String>,
    /// Which projects' own environment descriptions are built (see [`ProjectImages`]).
    pub project_images: ProjectImages,
    pub api_addr: String,
    pub poll_interval_sec: u64,
    /// Channels that may run a turn at the same moment.
    pub max_concurrent_runs: usize,
    /// Spend after which a channel's new turns are refused (None = no budget).
    pub channel_budget_usd: Option<f64>,
    /// How long SIGTERM waits for running turns before pausing them for the next start.
    pub shutdown_grace_sec: u64,
    /// How long a dashboard terminal nobody is attached to keeps its shell for a reconnect.
    pub terminal_grace_sec: u64,
    /// The header a TLS reverse proxy names its logged-in user in (`X-Forwarded-User`); the
    /// dashboard believes it only with the proxy's token (`dashboard-proxy.token`). None: off.
    pub dashboard_proxy_header: Option<String>,
    /// With `dashboard_proxy_header`: the header the proxy lists the user's groups in
    /// (comma-separated), taken as the user's roles in `permissions`. None: no roles.
    pub dashboard_proxy_roles_header: Option<String>,
    /// A thread's agent stays warm this long after a turn (0 = every turn starts cold).
    pub warm_idle_sec: u64,
    /// Most warm agents at once (None = sized from the machine's memory).
    pub max_warm_threads: Option<usize>,
    /// Keep a started agent ready for the next new thread of a project used within
    /// `warm_idle_sec` (it counts against `max_warm_threads`).
    pub spare_agents: bool,
    pub mounts: Vec<String>,
    pub copy_files: Vec<String>,
    pub envs: BTreeMap<String, Value>,
    pub extra_dirs: Vec<String>,
    /// Directories a chat may point a channel at; empty means the home directory.
    pub allowed_dirs: Vec<String>,
    /// Extra CA certificates trusted inside the image (corporate TLS inspection).
    pub extra_ca_certs: Vec<String>,
    pub keep_mcp_configs: bool,
    pub mcp: McpConfig,
    pub task_templates: Vec<TaskTemplate>,
    pub memory: MemoryConfig,
    pub browser: BrowserConfig,
    pub permissions: Permissions,
    pub gates: GatesConfig,
    pub scheduler: SchedulerConfig,
    pub git: GitConfig,
    pub slack: SlackConfig,
    pub discord: DiscordConfig,
    /// `~/.loop` or `$LOOP_HOME`: the database, per-container policy files, logs.
    pub loop_dir: PathBuf,
    /// The host user's home directory.
    pub home: PathBuf,
    /// Environment overrides, kept so that they still win after a project file is applied.
    #[serde(skip)]
    env_layer: ConfigLayer,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct McpConfig {
    pub servers: BTreeMap<String, McpServer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryConfig {
    pub enabled: bool,
    pub paths: Vec<String>,
    pub max_chunk_chars: usize,
    pub reindex_interval_sec: u64,
    pub embeddings: EmbeddingsLayer,
    /// A local all-MiniLM-L6-v2 directory; unset: the model is downloaded into `cache_dir`.
    pub model_dir: Option<String>,
    /// The download cache (unset: `~/.loop/models`, see [`Config::model_cache_dir`]).
    pub cache_dir: Option<String>,
    /// Best memories put into the first prompt of a new session (0 = off).
    pub inject_top_k: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: false,
            paths: vec!["./memory".to_owned()],
            max_chunk_chars: 5000,
            reindex_interval_sec: 300,
            embeddings: EmbeddingsLayer::default(),
            model_dir: None,
            cache_dir: None,
            inject_top_k: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BrowserConfig {
    pub enabled: bool,
    pub chrome_image: String,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            enabled: true,
            chrome_image: "loop-chrome:latest".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentGateConfig {
    pub enabled: bool,
    pub default_decision: GateDecision,
    pub path_rules: Vec<Value>,
    pub command_rules: Vec<Value>,
    pub file_rules: Vec<Value>,
    pub connect_rules: Vec<Value>,
    pub approval_timeout_sec: u64,
}

impl Default for AgentGateConfig {
    fn default() -> Self {
        AgentGateConfig {
            enabled: true,
            default_decision: GateDecision::Allow,
            path_rules: Vec::new(),
            command_rules: Vec::new(),
            file_rules: Vec::new(),
            connect_rules: Vec::new(),
            approval_timeout_sec: 300,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DockerProxyConfig {
    pub enabled: bool,
    /// `None` follows the agent gate's default decision.
    pub default_decision: Option<GateDecision>,
    pub http_rules: Vec<Value>,
    pub body_rules: Vec<Value>,
}

/// `gates.egress` (loop's addition, global-only): agent containers on an internal network
/// whose only way out is the daemon's allowlisting proxy (`crate::egress`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EgressConfig {
    pub enabled: bool,
    /// `host`, `*.domain`, an address or a CIDR range, each with an optional `:port`; empty
    /// means `api.anthropic.com`. The host of `envs.ANTHROPIC_BASE_URL` is always added. Only
    /// an address or range entry lets a name reach a restricted address (`crate::egress`).
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GatesConfig {
    pub agentgate: AgentGateConfig,
    pub docker_proxy: DockerProxyConfig,
    pub egress: EgressConfig,
    pub rate_limits: RateLimits,
    pub audit: AuditSettings,
    pub trust_project_config: bool,
}

/// The task scheduler (`scheduler`).
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerConfig {
    /// Runs missed while the daemon was down: run once on start, or skip.
    pub missed_runs: MissedRuns,
    /// Shortest interval between two runs of one task (a runaway agent must not be able to
    /// start a turn every second).
    pub min_interval_sec: u64,
    /// IANA zone for new tasks; `None` means the host's.
    pub timezone: Option<String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            missed_runs: MissedRuns::Once,
            min_interval_sec: 60,
            timezone: None,
        }
    }
}

/// loop's Slack settings (`slack`); the tokens are the Go Loop's top-level fields.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlackConfig {
    pub require_mention_in_threads: bool,
    pub allowed_users: Vec<String>,
    pub allowed_channels: Vec<String>,
    pub api_url: Option<String>,
    pub events_api: Option<SlackEventsApiConfig>,
}

/// loop's Discord settings (`discord`); the token and ids are the Go Loop's top-level fields.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscordConfig {
    pub require_mention_in_threads: bool,
    pub allowed_guilds: Vec<String>,
    pub allowed_channels: Vec<String>,
    pub allowed_users: Vec<String>,
    pub api_url: Option<String>,
}

/// `slack.events_api`: both fields are required when the section is present.
#[derive(Debug, Clone, Serialize)]
pub struct SlackEventsApiConfig {
    pub listen: String,
    pub signing_secret: Secret,
}

/// A loaded configuration and what the user should be told about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Human-readable warnings: unknown keys, ignored project settings.
    pub warnings: Vec<String>,
}

/// A configuration for one work directory, and what its project file could not change.
#[derive(Debug)]
pub struct ProjectConfig {
    pub config: Config,
    /// Human-readable warnings: unknown keys, ignored project settings.
    pub warnings: Vec<String>,
    /// The project file as it was read (`None`: the directory has none).
    pub file: Option<ProjectFile>,
    /// Keys of the file that did not apply because this version is not trusted.
    pub held_back: Vec<String>,
}

/// Environment variables that override config keys. Values are parsed as the key's type.
const ENV_OVERRIDES: &[(&str, &str, EnvKind)] = &[
    ("LOOP_PLATFORMS", "platforms", EnvKind::List),
    ("LOOP_SLACK_BOT_TOKEN", "slack_bot_token", EnvKind::Text),
    ("LOOP_SLACK_APP_TOKEN", "slack_app_token", EnvKind::Text),
    ("LOOP_DISCORD_TOKEN", "discord_token", EnvKind::Text),
    ("LOOP_DISCORD_APP_ID", "discord_app_id", EnvKind::Text),
    ("LOOP_DISCORD_GUILD_ID", "discord_guild_id", EnvKind::Text),
    (
        "LOOP_CLAUDE_CODE_OAUTH_TOKEN",
        "claude_code_oauth_token",
        EnvKind::Text,
    ),
    ("LOOP_ANTHROPIC_API_KEY", "anthropic_api_key", EnvKind::Text),
    ("LOOP_CLAUDE_MODEL", "claude_model", EnvKind::Text),
    ("LOOP_DB_PATH", "db_path", EnvKind::Text),
    ("LOOP_DATABASE_URL", "database_url", EnvKind::Text),
    ("LOOP_LOG_FILE", "log_file", EnvKind::Text),
    ("LOOP_LOG_LEVEL", "log_level", EnvKind::Text),
    ("LOOP_LOG_FORMAT", "log_format", EnvKind::Text),
    ("LOOP_CONTAINER_IMAGE", "container_image", EnvKind::Text),
    ("LOOP_CONTAINER_RUNTIME", "container_runtime", EnvKind::Text),
    ("LOOP_PROJECT_IMAGES", "project_images", EnvKind::Text),
    (
        "LOOP_CONTAINER_TIMEOUT_SEC",
        "container_timeout_sec",
        EnvKind::Number,
    ),
    (
        "LOOP_CONTAINER_MEMORY_MB",
        "container_memory_mb",
        EnvKind::Number,
    ),
    ("LOOP_CONTAINER_CPUS", "container_cpus", EnvKind::Number),
    ("LOOP_API_ADDR", "api_addr", EnvKind::Text),
    (
        "LOOP_MAX_CONCURRENT_RUNS",
        "max_concurrent_runs",
        EnvKind::Number,
    ),
];

/// Standard variable names accepted for the model credentials when no config sets them.
const STANDARD_CREDENTIAL_VARS: &[(&str, &str)] = &[
    ("CLAUDE_CODE_OAUTH_TOKEN", "claude_code_oauth_token"),
    ("ANTHROPIC_API_KEY", "anthropic_api_key"),
];

#[derive(Debug, Clone, Copy)]
enum EnvKind {
    Text,
    Number,
    List,
}

impl Config {
    /// The built-in defaults, before any file.
    pub fn defaults(sources: &ConfigSources) -> Config {
        Config {
            platforms: vec![Platform::Local],
            slack_bot_token: Secret::default(),
            slack_app_token: Secret::default(),
            discord_token: Secret::default(),
            discord_app_id: String::new(),
            discord_guild_id: String::new(),
            claude_code_oauth_token: Secret::default(),
            anthropic_api_key: Secret::default(),
            claude_bin_path: "claude".to_owned(),
            claude_model: None,
            db_path: sources.loop_dir.join("loop.db"),
            database_url: Secret::default(),
            log_file: None,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            container_image: "loop-agent:latest".to_owned(),
            container_timeout_sec: 3600,
            container_memory_mb: 1024,
            container_cpus: 1.0,
            container_keep_alive_sec: 300,
            container_runtime: None,
            project_images: ProjectImages::default(),
            api_addr: ":8222".to_owned(),
            poll_interval_sec: 30,
            max_concurrent_runs: 4,
            channel_budget_usd: None,
            shutdown_grace_sec: 30,
            terminal_grace_sec: 60,
            dashboard_proxy_header: None,
            dashboard_proxy_roles_header: None,
            warm_idle_sec: 600,
            max_warm_threads: None,
            spare_agents: true,
            mounts: Vec::new(),
            copy_files: vec!["~/.claude.json".to_owned()],
            envs: BTreeMap::new(),
            extra_dirs: Vec::new(),
            allowed_dirs: Vec::new(),
            extra_ca_certs: Vec::new(),
            keep_mcp_configs: false,
            mcp: McpConfig::default(),
            task_templates: Vec::new(),
            memory: MemoryConfig::default(),
            browser: BrowserConfig::default(),
            permissions: Permissions::default(),
            gates: GatesConfig::default(),
            scheduler: SchedulerConfig::default(),
            git: GitConfig::defaults(&sources.home),
            slack: SlackConfig::default(),
            discord: DiscordConfig::default(),
            loop_dir: sources.loop_dir.clone(),
            home: sources.home.clone(),
            env_layer: ConfigLayer::default(),
        }
    }

    /// Loads the global file (a missing file means defaults) and the environment.
    pub fn load(sources: &ConfigSources) -> Result<Loaded, ConfigError> {
        let mut config = Config::defaults(sources);
        let mut warnings = Vec::new();
        let file = sources.global_file();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let parsed = parse_layer(&file, &text)?;
                warn_unknown(&file, &parsed.unknown_keys, &mut warnings);
                warn_duplicates(&file, &parsed.duplicate_keys, &mut warnings);
                config.apply_global(parsed.layer, &file)?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { file, source }),
        }
        let env_layer = env_layer(&sources.env)?;
        config.apply_global(env_layer.clone(), Path::new("environment"))?;
        config.env_layer = env_layer;
        config.apply_standard_credentials(&sources.env);
        config.validate(&file)?;
        Ok(Loaded { config, warnings })
    }

    /// The configuration for one work directory: `{work_dir}/.loop/config.json` over this one,
    /// its widening keys from `trusted` unless the file is that version (see [`project`]).
    /// Environment overrides still win.
    pub fn for_project(
        &self,
        work_dir: &Path,
        trusted: Option<&TrustedVersion>,
    ) -> Result<ProjectConfig, ConfigError> {
        self.with_project_file(project::read_project_file(work_dir)?, trusted)
    }

    /// [`Config::for_project`] with a project file already read (`None`: there is none), so
    /// that what is checked or trusted is exactly what was shown.
    pub fn with_project_file(
        &self,
        file: Option<ProjectFile>,
        trusted: Option<&TrustedVersion>,
    ) -> Result<ProjectConfig, ConfigError> {
        let mut config = self.clone();
        let mut warnings = Vec::new();
        let Some(file) = file else {
            return Ok(ProjectConfig {
                config,
                warnings,
                file: None,
                held_back: Vec::new(),
            });
        };
        let current = parse_object(&file.path, &file.text)?;
        // A trusted text was checked when it was trusted; should it fail now, trust nothing.
        let earlier = trusted
            .filter(|t| t.hash != file.hash)
            .and_then(|t| parse_object(&file.path, &t.text).ok());
        let trust = match (trusted, &earlier) {
            (Some(t), _) if t.hash == file.hash => project::Trust::Current,
            (_, Some(earlier)) => project::Trust::Earlier(earlier),
            _ => project::Trust::Never,
        };
        let composition = project::compose(&current, trust, &self.in_force());
        for name in &composition.refused_envs {
            warnings.push(format!(
                "{}: `envs.{name}` is a variable loop sets itself and was ignored",
                file.path.display()
            ));
        }
        let parsed = layer_from_value(&file.path, Value::Object(composition.layer))?;
        warn_unknown(&file.path, &parsed.unknown_keys, &mut warnings);
        warn_duplicates(
            &file.path,
            &layer::duplicate_keys(&file.text),
            &mut warnings,
        );
        config.apply_project(parsed.layer, &file.path, &mut warnings)?;
        let env_layer = config.env_layer.clone();
        config.apply_global(env_layer, Path::new("environment"))?;
        config.validate(&file.path)?;
        Ok(ProjectConfig {
            config,
            warnings,
            held_back: composition.held_back,
            file: Some(file),
        })
    }

    /// What a project file's limits are measured against.
    fn in_force(&self) -> project::InForce {
        let mut limits = serde_json::Map::new();
        limits.insert(
            "container_memory_mb".to_owned(),
            Value::from(self.container_memory_mb),
        );
        limits.insert(
            "container_cpus".to_owned(),
            Value::from(self.container_cpus),
        );
        limits.insert(
            "container_timeout_sec".to_owned(),
            Value::from(self.container_timeout_sec),
        );
        if let Some(budget) = self.channel_budget_usd {
            limits.insert("channel_budget_usd".to_owned(), Value::from(budget));
        }
        project::InForce {
            limits,
            gate_loosening: self.gates.trust_project_config,
        }
    }

    /// Expands a leading `~` against the host user's home.
    pub fn expand(&self, path: &str) -> PathBuf {
        expand_home(path, &self.home)
    }

    /// Where a downloaded embedding model is kept: `memory.cache_dir`, else `~/.loop/models`.
    pub fn model_cache_dir(&self) -> PathBuf {
        match &self.memory.cache_dir {
            Some(dir) => self.expand(dir),
            None => self.loop_dir.join("models"),
        }
    }

    /// The database URL: `database_url` when set, else the SQLite file in WAL mode.
    pub fn database_url(&self) -> String {
        match self.database_url.expose() {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}?mode=rwc", self.db_path.display()),
        }
    }

    /// The effective config as pretty JSON, secrets redacted.
    pub fn to_redacted_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    }

    fn apply_global(&mut self, layer: ConfigLayer, file: &Path) -> Result<(), ConfigError> {
        self.apply_scalars(&layer);
        set(&mut self.mounts, layer.mounts);
        set(&mut self.copy_files, layer.copy_files);
        set(&mut self.envs, layer.envs);
        set(&mut self.extra_dirs, layer.extra_dirs);
        set(&mut self.allowed_dirs, layer.allowed_dirs);
        set(&mut self.extra_ca_certs, layer.extra_ca_certs);
        set(&mut self.permissions, layer.permissions);
        set(&mut self.task_templates, layer.task_templates);
        if let Some(mcp) = layer.mcp {
            set(&mut self.mcp.servers, mcp.servers);
        }
        if let Some(memory) = layer.memory {
            set(&mut self.memory.paths, memory.paths.clone());
            self.apply_memory_scalars(memory);
        }
        if let Some(discord) = layer.discord.clone() {
            set(
                &mut self.discord.require_mention_in_threads,
                discord.require_mention_in_threads,
            );
            set(&mut self.discord.allowed_guilds, discord.allowed_guilds);
            set(&mut self.discord.allowed_channels, discord.allowed_channels);
            set(&mut self.discord.allowed_users, discord.allowed_users);
            if discord.api_url.is_some() {
                self.discord.api_url = discord.api_url.filter(|u| !u.is_empty());
            }
        }
        if let Some(slack) = layer.slack.clone() {
            set(
                &mut self.slack.require_mention_in_threads,
                slack.require_mention_in_threads,
            );
            set(&mut self.slack.allowed_users, slack.allowed_users);
            set(&mut self.slack.allowed_channels, slack.allowed_channels);
            if slack.api_url.is_some() {
                self.slack.api_url = slack.api_url.filter(|u| !u.is_empty());
            }
            if let Some(events) = slack.events_api {
                self.slack.events_api = Some(SlackEventsApiConfig {
                    listen: events.listen.unwrap_or_default(),
                    signing_secret: events.signing_secret.unwrap_or_default(),
                });
            }
        }
        if let Some(git) = layer.git.clone() {
            self.git.apply_global(git, &self.home);
        }
        if let Some(scheduler) = &layer.scheduler {
            set(&mut self.scheduler.missed_runs, scheduler.missed_runs);
            set(
                &mut self.scheduler.min_interval_sec,
                scheduler.min_interval_sec,
            );
            if scheduler.timezone.is_some() {
                self.scheduler.timezone = scheduler.timezone.clone().filter(|t| !t.is_empty());
            }
        }
        if let Some(gates) = layer.gates {
            let agent = gates.agentgate.unwrap_or_default();
            let gate = &mut self.gates.agentgate;
            set(&mut gate.enabled, agent.enabled);
            set(&mut gate.default_decision, agent.default_decision);
            set(&mut gate.approval_timeout_sec, agent.approval_timeout_sec);
            set(&mut gate.path_rules, agent.path_rules);
            set(&mut gate.command_rules, agent.command_rules);
            set(&mut gate.file_rules, agent.file_rules);
            set(&mut gate.connect_rules, agent.connect_rules);
            if let Some(proxy) = gates.docker_proxy {
                let target = &mut self.gates.docker_proxy;
                set(&mut target.enabled, proxy.enabled);
                if proxy.default_decision.is_some() {
                    target.default_decision = proxy.default_decision;
                }
                set(&mut target.http_rules, proxy.http_rules);
                set(&mut target.body_rules, proxy.body_rules);
            }
            if let Some(egress) = gates.egress {
                set(&mut self.gates.egress.enabled, egress.enabled);
                set(&mut self.gates.egress.allowed_hosts, egress.allowed_hosts);
            }
            set(&mut self.gates.rate_limits, gates.rate_limits);
            set(&mut self.gates.audit, gates.audit);
            set(
                &mut self.gates.trust_project_config,
                gates.trust_project_config,
            );
        }
        let _ = file;
        Ok(())
    }

    fn apply_project(
        &mut self,
        layer: ConfigLayer,
        file: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        self.apply_scalars(&layer);
        // A project's channels may keep their own time; the rest of the scheduler is global.
        if let Some(zone) = layer.scheduler.as_ref().and_then(|s| s.timezone.clone()) {
            self.scheduler.timezone = Some(zone).filter(|t| !t.is_empty());
        }
        // Lists replace the global ones.
        set(&mut self.mounts, layer.mounts);
        set(&mut self.copy_files, layer.copy_files);
        set(&mut self.extra_dirs, layer.extra_dirs);
        set(&mut self.permissions, layer.permissions);
        if layer.allowed_dirs.is_some() {
            warnings.push(format!(
                "{}: `allowed_dirs` is global-only and was ignored",
                file.display()
            ));
        }
        if layer.extra_ca_certs.is_some() {
            warnings.push(format!(
                "{}: `extra_ca_certs` is global-only (it changes the image) and was ignored",
                file.display()
            ));
        }
        if layer.slack.is_some() {
            warnings.push(format!(
                "{}: `slack` is global-only and was ignored",
                file.display()
            ));
        }
        if layer.discord.is_some() {
            warnings.push(format!(
                "{}: `discord` is global-only and was ignored",
                file.display()
            ));
        }
        // Maps merge by key, the project winning.
        if let Some(envs) = layer.envs {
            self.envs.extend(envs);
        }
        if let Some(servers) = layer.mcp.and_then(|mcp| mcp.servers) {
            self.mcp.servers.extend(servers);
        }
        // Task templates merge by name.
        for template in layer.task_templates.unwrap_or_default() {
            match self
                .task_templates
                .iter_mut()
                .find(|existing| existing.name == template.name)
            {
                Some(existing) => *existing = template,
                None => self.task_templates.push(template),
            }
        }
        // Memory paths are appended.
        if let Some(memory) = layer.memory {
            self.memory
                .paths
                .extend(memory.paths.clone().unwrap_or_default());
            self.apply_memory_scalars(memory);
        }
        if let Some(git) = layer.git {
            let mut ignored = Vec::new();
            self.git.apply_project(git, &mut ignored);
            if !ignored.is_empty() {
                warnings.push(format!(
                    "{}: {} can only be set in the global config and {} ignored",
                    file.display(),
                    ignored.join(", "),
                    if ignored.len() == 1 { "was" } else { "were" }
                ));
            }
        }
        if let Some(gates) = layer.gates {
            self.apply_project_gates(gates, file, warnings);
        }
        Ok(())
    }

    /// Project gate rules are prepended (checked first). Unless the global file sets
    /// `gates.trust_project_config`, a project may only tighten: switch a gate on, add
    /// `deny`/`approve` rules. `default_decision`, `rate_limits` and `audit` are global-only.
    fn apply_project_gates(
        &mut self,
        gates: layer::GatesLayer,
        file: &Path,
        warnings: &mut Vec<String>,
    ) {
        let trusted = self.gates.trust_project_config;
        let mut loosenings: Vec<String> = Vec::new();
        let mut ignored = |what: &str| loosenings.push(what.to_owned());
        if gates.rate_limits.is_some()
            || gates.audit.is_some()
            || gates.trust_project_config.is_some()
            || gates.egress.is_some()
        {
            warnings.push(format!(
                "{}: gates.rate_limits, gates.audit, gates.egress and gates.trust_project_config are global-only and were ignored",
                file.display()
            ));
        }
        if let Some(agent) = gates.agentgate {
            match agent.enabled {
                Some(true) => self.gates.agentgate.enabled = true,
                Some(false) if trusted => self.gates.agentgate.enabled = false,
                Some(false) => ignored("gates.agentgate.enabled=false"),
                None => {}
            }
            if agent.default_decision.is_some() {
                warnings.push(format!(
                    "{}: gates.agentgate.default_decision is global-only and was ignored",
                    file.display()
                ));
            }
            let gate = &mut self.gates.agentgate;
            for (name, project_rules, global_rules) in [
                ("path_rules", agent.path_rules, &mut gate.path_rules),
                (
                    "command_rules",
                    agent.command_rules,
                    &mut gate.command_rules,
                ),
                ("file_rules", agent.file_rules, &mut gate.file_rules),
                (
                    "connect_rules",
                    agent.connect_rules,
                    &mut gate.connect_rules,
                ),
            ] {
                let mut kept: Vec<Value> = Vec::new();
                for rule in project_rules.unwrap_or_default() {
                    if !trusted && rule_is_allow(&rule) {
                        ignored(&format!("an `allow` rule in gates.agentgate.{name}"));
                    } else {
                        kept.push(rule);
                    }
                }
                kept.append(global_rules);
                *global_rules = kept;
            }
        }
        if let Some(proxy) = gates.docker_proxy {
            // Unlike the gate, the docker proxy grants access (to the host's Docker daemon,
            // within its baseline): switching it on is a loosening, switching it off tightens.
            match proxy.enabled {
                Some(false) => self.gates.docker_proxy.enabled = false,
                Some(true) if trusted => self.gates.docker_proxy.enabled = true,
                Some(true) => {
                    ignored("gates.docker_proxy.enabled=true (it gives the agent Docker)")
                }
                None => {}
            }
            if proxy.default_decision.is_some() {
                warnings.push(format!(
                    "{}: gates.docker_proxy.default_decision is global-only and was ignored",
                    file.display()
                ));
            }
            let target = &mut self.gates.docker_proxy;
            for (project_rules, global_rules) in [
                (proxy.http_rules, &mut target.http_rules),
                (proxy.body_rules, &mut target.body_rules),
            ] {
                let mut kept: Vec<Value> = Vec::new();
                for rule in project_rules.unwrap_or_default() {
                    if !trusted && rule_is_allow(&rule) {
                        ignored("an `allow` rule in gates.docker_proxy");
                    } else {
                        kept.push(rule);
                    }
                }
                kept.append(global_rules);
                *global_rules = kept;
            }
        }
        for what in loosenings {
            warnings.push(format!(
                "{}: {what} ignored: a project may only tighten gates (set gates.trust_project_config in the global config to allow it)",
                file.display()
            ));
        }
    }

    fn apply_scalars(&mut self, layer: &ConfigLayer) {
        set(&mut self.platforms, layer.platforms.clone());
        set(&mut self.slack_bot_token, layer.slack_bot_token.clone());
        set(&mut self.slack_app_token, layer.slack_app_token.clone());
        set(&mut self.discord_token, layer.discord_token.clone());
        set(&mut self.discord_app_id, layer.discord_app_id.clone());
        set(&mut self.discord_guild_id, layer.discord_guild_id.clone());
        // Auth is replaced as a whole: a layer that names either credential decides both.
        if layer.claude_code_oauth_token.is_some() || layer.anthropic_api_key.is_some() {
            self.claude_code_oauth_token =
                layer.claude_code_oauth_token.clone().unwrap_or_default();
            self.anthropic_api_key = layer.anthropic_api_key.clone().unwrap_or_default();
        }
        set(&mut self.claude_bin_path, layer.claude_bin_path.clone());
        if layer.claude_model.is_some() {
            self.claude_model = layer.claude_model.clone().filter(|m| !m.is_empty());
        }
        if let Some(path) = &layer.db_path {
            self.db_path = expand_home(path, &self.home);
        }
        set(&mut self.database_url, layer.database_url.clone());
        if let Some(path) = &layer.log_file {
            self.log_file = (!path.is_empty()).then(|| expand_home(path, &self.home));
        }
        set(&mut self.log_level, layer.log_level.clone());
        set(&mut self.log_format, layer.log_format);
        set(&mut self.container_image, layer.container_image.clone());
        set(&mut self.container_timeout_sec, layer.container_timeout_sec);
        set(&mut self.container_memory_mb, layer.container_memory_mb);
        set(&mut self.container_cpus, layer.container_cpus);
        set(
            &mut self.container_keep_alive_sec,
            layer.container_keep_alive_sec,
        );
        if layer.container_runtime.is_some() {
            self.container_runtime = layer.container_runtime.clone().filter(|r| !r.is_empty());
        }
        set(&mut self.project_images, layer.project_images);
        set(&mut self.api_addr, layer.api_addr.clone());
        set(&mut self.poll_interval_sec, layer.poll_interval_sec);
        set(&mut self.max_concurrent_runs, layer.max_concurrent_runs);
        set(&mut self.shutdown_grace_sec, layer.shutdown_grace_sec);
        set(&mut self.terminal_grace_sec, layer.terminal_grace_sec);
        set_or_clear(
            &mut self.dashboard_proxy_header,
            layer.dashboard_proxy_header.as_ref(),
        );
        set_or_clear(
            &mut self.dashboard_proxy_roles_header,
            layer.dashboard_proxy_roles_header.as_ref(),
        );
        set(&mut self.warm_idle_sec, layer.warm_idle_sec);
        set(&mut self.spare_agents, layer.spare_agents);
        if layer.max_warm_threads.is_some() {
            self.max_warm_threads = layer.max_warm_threads;
        }
        if layer.channel_budget_usd.is_some() {
            self.channel_budget_usd = layer.channel_budget_usd;
        }
        set(&mut self.keep_mcp_configs, layer.keep_mcp_configs);
        set(&mut self.browser.enabled, layer.browser_enabled);
        if let Some(browser) = &layer.browser {
            set(&mut self.browser.enabled, browser.enabled);
            set(&mut self.browser.chrome_image, browser.chrome_image.clone());
        }
    }

    fn apply_memory_scalars(&mut self, memory: layer::MemoryLayer) {
        set(&mut self.memory.enabled, memory.enabled);
        set(&mut self.memory.max_chunk_chars, memory.max_chunk_chars);
        set(
            &mut self.memory.reindex_interval_sec,
            memory.reindex_interval_sec,
        );
        set(&mut self.memory.embeddings, memory.embeddings);
        set(&mut self.memory.inject_top_k, memory.inject_top_k);
        // An empty string unsets a path (so a later layer can go back to the download).
        if memory.model_dir.is_some() {
            self.memory.model_dir = memory.model_dir.filter(|d| !d.is_empty());
        }
        if memory.cache_dir.is_some() {
            self.memory.cache_dir = memory.cache_dir.filter(|d| !d.is_empty());
        }
    }

    fn apply_standard_credentials(&mut self, env: &BTreeMap<String, String>) {
        if self.claude_code_oauth_token.is_set() || self.anthropic_api_key.is_set() {
            return;
        }
        for (var, key) in STANDARD_CREDENTIAL_VARS {
            if let Some(value) = env.get(*var).filter(|v| !v.is_empty()) {
                match *key {
                    "claude_code_oauth_token" => self.claude_code_oauth_token = Secret::new(value),
                    _ => self.anthropic_api_key = Secret::new(value),
                }
                return;
            }
        }
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        if self.platforms.is_empty() {
            return Err(invalid(
                "platforms",
                "at least one of local, slack, discord is required".to_owned(),
            ));
        }
        if !(self.container_cpus > 0.0 && self.container_cpus.is_finite()) {
            return Err(invalid(
                "container_cpus",
                format!("must be a positive number, got {}", self.container_cpus),
            ));
        }
        if self.container_timeout_sec == 0 {
            return Err(invalid(
                "container_timeout_sec",
                "must be at least 1".to_owned(),
            ));
        }
        if self.max_concurrent_runs == 0 {
            return Err(invalid(
                "max_concurrent_runs",
                "must be at least 1".to_owned(),
            ));
        }
        if !matches!(
            self.log_level.to_ascii_lowercase().as_str(),
            "trace" | "debug" | "info" | "warn" | "error"
        ) {
            return Err(invalid(
                "log_level",
                format!(
                    "expected trace, debug, info, warn or error, got {:?}",
                    self.log_level
                ),
            ));
        }
        for mount in &self.mounts {
            let parts = mount.split(':').count();
            if !(2..=3).contains(&parts) || mount.split(':').any(str::is_empty) {
                return Err(invalid(
                    "mounts",
                    format!("{mount:?} is not of the form src:dst[:mode]"),
                ));
            }
        }
        if self.platforms.contains(&Platform::Slack)
            && !(self.slack_bot_token.is_set() && self.slack_app_token.is_set())
        {
            return Err(invalid(
                "platforms",
                "slack is enabled but slack_bot_token (xoxb-) and slack_app_token (xapp-) are not both set"
                    .to_owned(),
            ));
        }
        if let Some(events) = &self.slack.events_api
            && (events.listen.parse::<std::net::SocketAddr>().is_err()
                || !events.signing_secret.is_set())
        {
            return Err(invalid(
                "slack.events_api",
                "needs `listen` (host:port) and `signing_secret`".to_owned(),
            ));
        }
        if self.platforms.contains(&Platform::Discord) && !self.discord_token.is_set() {
            return Err(invalid(
                "platforms",
                "discord is enabled but discord_token is not set".to_owned(),
            ));
        }
        if let Some(zone) = &self.scheduler.timezone
            && zone.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(invalid(
                "scheduler.timezone",
                format!("unknown time zone {zone:?} (use an IANA name such as Europe/Bucharest)"),
            ));
        }
        Ok(())
    }
}

fn rule_is_allow(rule: &Value) -> bool {
    rule.get("decision").and_then(Value::as_str) == Some("allow")
}

fn warn_unknown(file: &Path, keys: &[String], warnings: &mut Vec<String>) {
    for key in keys {
        warnings.push(format!("{}: unknown key `{key}` ignored", file.display()));
    }
}

fn warn_duplicates(file: &Path, keys: &[layer::DuplicateKey], warnings: &mut Vec<String>) {
    for key in keys {
        warnings.push(format!(
            "{}: key `{}` is given twice (lines {} and {}); the later one, line {}, is used",
            file.display(),
            key.path,
            key.first_line,
            key.used_line,
            key.used_line
        ));
    }
}

fn env_layer(env: &BTreeMap<String, String>) -> Result<ConfigLayer, ConfigError> {
    let mut object = serde_json::Map::new();
    for (var, key, kind) in ENV_OVERRIDES {
        let Some(raw) = env.get(*var) else { continue };
        let value = match kind {
            EnvKind::Text => Value::String(raw.clone()),
            EnvKind::List => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            EnvKind::Number => serde_json::from_str::<serde_json::Number>(raw.trim())
                .map(Value::Number)
                .map_err(|_| ConfigError::Env {
                    var: (*var).to_owned(),
                    message: format!("expected a number, got {raw:?}"),
                })?,
        };
        object.insert((*key).to_owned(), value);
    }
    let layer: ConfigLayer =
        serde_path_to_error::deserialize(Value::Object(object)).map_err(|err| {
            let key = err.path().to_string();
            let var = ENV_OVERRIDES
                .iter()
                .find(|(_, k, _)| key.starts_with(k))
                .map_or(key.clone(), |(v, _, _)| (*v).to_owned());
            ConfigError::Env {
                var,
                message: err.into_inner().to_string(),
            }
        })?;
    Ok(layer)
}

#[cfg(test)]
mod tests;
