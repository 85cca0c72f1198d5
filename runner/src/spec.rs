//! From settings and a channel to a concrete container plan: name, labels, environment, mounts,
//! copied files, MCP config and the `claude` command line. Pure functions, no Docker, so every
//! rule of the Go Loop's container lifecycle is unit-tested here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use loop_wire::container::{env, paths};

use crate::naming;

mod setup;
pub use setup::{SetupCommand, SetupReport, SetupStep};

/// The docker proxy's socket; `DOCKER_HOST` names it. The proxy also serves
/// `/var/run/docker.sock` (`/run/docker.sock` through the image's `/var/run -> /run`).
pub use loop_wire::container::paths::DOCKER_PROXY_SOCKET;
/// Where the host's Docker socket is mounted in the container (only the proxy opens it).
pub use loop_wire::container::paths::DOCKER_UPSTREAM as DOCKER_UPSTREAM_IN_CONTAINER;
/// The directory holding the host's Docker socket in the container: a root-only (`0700`)
/// tmpfs, so the agent (another uid, even one in the host's docker group) cannot reach it.
pub use loop_wire::container::paths::DOCKER_UPSTREAM_DIR;
/// Where the per-container gate policy is mounted.
pub use loop_wire::container::paths::GATE_POLICY as GATE_POLICY_IN_CONTAINER;
/// Where the loop binary lives inside the image.
pub use loop_wire::container::paths::LOOP_BIN as LOOP_BIN_IN_IMAGE;
/// Where the per-container docker proxy policy is mounted.
pub use loop_wire::container::paths::PROXY_POLICY as PROXY_POLICY_IN_CONTAINER;
/// Container paths a user mount may not cover (or shadow) while the proxy is on: the proxy's
/// sockets and the host socket's directory.
const PROXY_RESERVED_PATHS: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/loop",
    "/var/run/loop",
    DOCKER_UPSTREAM_DIR,
    "/var/run/loop-docker-host",
    PROXY_POLICY_IN_CONTAINER,
];
/// The agent's workspace for `loop syscallwrap` (the gate's relative rules and `rm -r`
/// guard), passed explicitly rather than read from the supervisor's cwd.
pub use loop_wire::container::env::GATE_WORKSPACE as GATE_WORKSPACE_ENV;
/// Where the per-container MCP config is mounted (read-only). It is written in loop's own run
/// directory, never in the project: a project file could be a symlink to anywhere on the host.
pub use loop_wire::container::paths::MCP_CONFIG as MCP_CONFIG_IN_CONTAINER;
/// Where the built-in MCP server (`loop mcp`) logs, inside the container.
pub use loop_wire::container::paths::MCP_LOG as MCP_LOG_IN_CONTAINER;
/// Memory files the Claude Code CLI reads in the working directory and each of its parents.
pub const CLAUDE_MEMORY_FILES: [&str; 2] = ["CLAUDE.md", "CLAUDE.local.md"];
/// The host as containers see it.
pub const HOST_ALIAS: &str = "host.docker.internal";
/// The proxy variables forwarded from the host.
pub const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];

/// Prefixes of the variables loop sets or reads in the container (the entrypoint, the gate,
/// the docker proxy, the MCP server, the credentials, git's `safe.directory`), and of the
/// dynamic loader's: the entrypoint runs as root with the container's environment.
const RESERVED_ENV_PREFIXES: &[&str] = &[
    "LOOP_",
    "HOST_",
    "AGENT_",
    "LD_",
    "ANTHROPIC_",
    "CLAUDE_",
    "GIT_CONFIG_",
];
/// Whole names of the same kind (see [`container_env`]); `ENV` and `BASH_ENV` name a script
/// every shell runs first, `GCONV_PATH` a library glibc loads.
const RESERVED_ENV_NAMES: &[&str] = &[
    "CHANNEL_ID",
    env::API_URL,
    "HOME",
    "PATH",
    "TZ",
    "CHOWN_PATHS",
    "DISABLE_AUTOUPDATER",
    "DOCKER_HOST",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "ENV",
    "BASH_ENV",
    "GCONV_PATH",
];

/// Whether an environment variable is one loop owns in the container (or one that makes a
/// process load foreign code), so that no project file may set it. Compared without case:
/// `http_proxy` is read as well as `HTTP_PROXY`.
pub fn is_reserved_env(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    RESERVED_ENV_NAMES.contains(&upper.as_str())
        || RESERVED_ENV_PREFIXES
            .iter()
            .any(|prefix| upper.starts_with(prefix))
}

/// The unprivileged identity the agent runs as inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The host user's home: the container's HOME matches it so paths agree.
    pub home: PathBuf,
}

/// uid used for the agent when loop itself runs as root and the work dir is root's too.
pub const FALLBACK_AGENT_UID: u32 = 1000;

impl AgentUser {
    /// The agent identity for a host user. The claude CLI refuses to skip permission prompts as
    /// root, so a root host user maps to the owner of the work directory when that is not root,
    /// else to uid/gid 1000 named `agent`; the README says who then owns the files it writes.
    pub fn for_host(name: &str, uid: u32, gid: u32, home: &Path, work_dir: &Path) -> AgentUser {
        if uid != 0 {
            return AgentUser {
                name: name.to_owned(),
                uid,
                gid,
                home: home.to_path_buf(),
            };
        }
        use std::os::unix::fs::MetadataExt;
        let (uid, gid) = match std::fs::metadata(work_dir) {
            Ok(meta) if meta.uid() != 0 => (meta.uid(), meta.gid()),
            _ => (FALLBACK_AGENT_UID, FALLBACK_AGENT_UID),
        };
        AgentUser {
            name: "agent".to_owned(),
            uid,
            gid,
            home: home.to_path_buf(),
        }
    }
}

/// Model credentials; exactly one reaches the container.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    OAuthToken(String),
    ApiKey(String),
    None,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::OAuthToken(_) => "OAuthToken([REDACTED])",
            Auth::ApiKey(_) => "ApiKey([REDACTED])",
            Auth::None => "None",
        })
    }
}

impl Auth {
    /// OAuth wins when both are configured.
    pub fn pick(oauth: Option<&str>, api_key: Option<&str>) -> Auth {
        match (oauth, api_key) {
            (Some(token), _) if !token.is_empty() => Auth::OAuthToken(token.to_owned()),
            (_, Some(key)) if !key.is_empty() => Auth::ApiKey(key.to_owned()),
            _ => Auth::None,
        }
    }
}

/// One MCP server entry.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The gate's per-container wiring.
#[derive(Clone)]
pub struct GateSpec {
    /// The policy file's JSON, already validated by the gate's loader.
    pub policy_json: String,
    /// 32 random bytes, hex: authenticates this container's approval requests.
    pub token: String,
    /// `~/.loop/run`: per-container policy files go in `{policy_dir}/{name}/`.
    pub policy_dir: PathBuf,
}

impl std::fmt::Debug for GateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateSpec")
            .field("policy_dir", &self.policy_dir)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// The docker proxy's per-container wiring (`gates.docker_proxy`).
#[derive(Clone)]
pub struct DockerProxySpec {
    /// The policy JSON from the daemon (rules, protected images, network), already validated;
    /// the plan adds this container's `context` (name, channel, daemon, allowed paths).
    pub policy_json: String,
    /// The host's Docker socket, bind-mounted at [`DOCKER_UPSTREAM_IN_CONTAINER`].
    pub host_socket: PathBuf,
    /// `~/.loop/run`: the policy goes to `{policy_dir}/{name}/proxy-policy.json`.
    pub policy_dir: PathBuf,
    /// The approval token: set as `LOOP_GATE_TOKEN` when the gate (which sets it otherwise) is
    /// off. The entrypoint unsets it before the agent starts; the proxy keeps it.
    pub token: String,
}

impl std::fmt::Debug for DockerProxySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProxySpec")
            .field("host_socket", &self.host_socket)
            .field("policy_dir", &self.policy_dir)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// Everything about containers that comes from configuration, already merged for the project.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    pub image: String,
    /// 0 = no cap.
    pub memory_mb: u64,
    pub cpus: f64,
    /// Per-turn limit.
    pub timeout: Duration,
    /// `runc` (None) or e.g. `runsc`.
    pub runtime: Option<String>,
    pub mounts: Vec<String>,
    pub copy_files: Vec<String>,
    pub envs: BTreeMap<String, Value>,
    pub extra_dirs: Vec<String>,
    pub mcp_servers: BTreeMap<String, McpServerSpec>,
    pub keep_mcp_configs: bool,
    pub memory_enabled: bool,
    /// The host API as containers reach it, e.g. `http://host.docker.internal:8222`.
    pub api_url: String,
    pub auth: Auth,
    pub claude_bin: String,
    pub model: Option<String>,
    pub agent: AgentUser,
    /// IANA name, e.g. `Europe/Bucharest`.
    pub timezone: String,
    /// The host's proxy variables (see [`PROXY_VARS`]) and NO_PROXY, captured at start.
    pub host_proxy_env: BTreeMap<String, String>,
    /// `git config --global core.excludesFile`, when it exists.
    pub git_excludes_file: Option<PathBuf>,
    /// Docker network to attach to (egress control); None = default bridge.
    pub network: Option<String>,
    /// The daemon instance id, stored as a label.
    pub daemon_id: String,
    /// Host directory keeping Claude's session transcripts between containers: each channel
    /// gets `{sessions_dir}/{channel}` mounted at `$HOME/.claude/projects`, so `--resume`
    /// works in the next fresh container and no channel can read another's transcripts.
    pub sessions_dir: Option<PathBuf>,
    pub gate: Option<GateSpec>,
    /// The docker proxy, when `gates.docker_proxy` is on.
    pub docker_proxy: Option<DockerProxySpec>,
    /// `~/.loop/run`: loop's per-container files (the MCP config, policies) are written in
    /// `{run_dir}/{name}/` and mounted read-only, never written into the project.
    pub run_dir: PathBuf,
    /// Host directories no container may see, whatever a config says: loop's own (`~/.loop`,
    /// with its tokens and database). A mount, extra directory or copied file that is one of
    /// them, inside one or holding one is skipped; loop's own mounts of its subdirectories
    /// (the default work directory, the session store, the run files) are planned apart.
    pub protected_dirs: Vec<PathBuf>,
    /// Bearer token of the container's calls to the host API (the built-in MCP server's task
    /// tools), scoped to the channel; set as `LOOP_API_TOKEN`. None: the tools cannot reach
    /// the daemon and say so.
    pub api_token: Option<String>,
    /// The project's setup commands (a devcontainer.json's `onCreateCommand`,
    /// `updateContentCommand`, `postCreateCommand`), run in order by `loop setup` once per
    /// agent container, before the agent starts. Empty: the agent starts directly.
    pub setup: Vec<SetupStep>,
    /// The project's own variables (a devcontainer.json's `containerEnv`, `remoteEnv`): set
    /// after loop's, without the names loop reserves ([`is_reserved_env`]) and without those
    /// [`Self::envs`] sets, so they never replace a variable of loop or of the config.
    pub project_env: BTreeMap<String, String>,
}

/// The variable carrying [`ContainerSettings::api_token`].
pub use loop_wire::container::env::API_TOKEN as API_TOKEN_ENV;

/// The channel a container serves.
#[derive(Debug, Clone)]
pub struct ChannelTarget {
    pub channel_id: String,
    /// Resolved work directory: `~/.loop/{channel}/work` or the channel's directory.
    pub work_dir: PathBuf,
    /// Whether `work_dir` was set for the channel (it then names the container).
    pub custom_dir: bool,
    /// The main checkout when `work_dir` is a git worktree inside it.
    pub parent_dir: Option<PathBuf>,
    /// The main repository's git directory when `work_dir` is a linked worktree of it
    /// (`git rev-parse --git-common-dir`): mounted read-write at its own path, so git in the
    /// container finds the objects and refs the worktree's `.git` file points at, without the
    /// main checkout's files (or another thread's worktree) being mounted.
    pub git_common_dir: Option<PathBuf>,
    pub author_id: Option<String>,
}

/// Kind of container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Agent,
    Shell,
    Chrome,
}

impl ContainerKind {
    pub fn label(self) -> &'static str {
        match self {
            ContainerKind::Agent => "agent",
            ContainerKind::Shell => "shell",
            ContainerKind::Chrome => "chrome",
        }
    }

    pub fn from_label(label: &str) -> Option<ContainerKind> {
        match label {
            "agent" => Some(ContainerKind::Agent),
            "shell" => Some(ContainerKind::Shell),
            "chrome" => Some(ContainerKind::Chrome),
            _ => None,
        }
    }
}

/// A file copied into the container before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFile {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
}

/// Everything needed to create one container.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub name: String,
    pub kind: ContainerKind,
    pub labels: BTreeMap<String, String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Docker bind strings `src:dst[:mode]` (named volumes included).
    pub binds: Vec<String>,
    pub copy_files: Vec<CopyFile>,
    /// Where the agent starts: the channel's work directory (Docker's `WorkingDir`), so the
    /// CLI, its tools and relative paths work in the project as in a person's session.
    pub working_dir: PathBuf,
    /// The MCP config to write on the host before start (in `run_dir`, mounted read-only at
    /// [`MCP_CONFIG_IN_CONTAINER`]), and its content.
    pub mcp_config_path: PathBuf,
    pub mcp_config: Value,
    /// The gate policy to write on the host before start, and where.
    pub gate_policy_path: Option<PathBuf>,
    /// The docker proxy's policy to write on the host before start: where, and the JSON.
    pub proxy_policy: Option<(PathBuf, String)>,
    /// tmpfs mounts: container path → options.
    pub tmpfs: BTreeMap<String, String>,
    /// Docker `SecurityOpt`s of the container.
    pub security_opt: Vec<String>,
    pub cmd: Vec<String>,
}

/// How the agent is asked to work on this turn.
#[derive(Debug, Clone, Default)]
pub struct ClaudeInvocation {
    /// `--resume` this Claude session.
    pub resume_session: Option<String>,
}

/// Expands a leading `~`.
pub fn expand_tilde(path: &str, home: &Path) -> PathBuf {
    if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// Where the CLI keeps its sessions in the container (the session store is mounted there).
pub fn sessions_in_container(settings: &ContainerSettings) -> PathBuf {
    settings.agent.home.join(".claude").join("projects")
}

/// The host directory of a channel's session store, when the settings keep one.
pub fn sessions_on_host(settings: &ContainerSettings, channel_id: &str) -> Option<PathBuf> {
    settings
        .sessions_dir
        .as_ref()
        .map(|root| root.join(naming::sanitize(channel_id)))
}

/// The default work directory of a channel.
pub fn default_work_dir(loop_dir: &Path, channel_id: &str) -> PathBuf {
    loop_dir.join(channel_id).join("work")
}

/// Builds the full plan for one container. Pure apart from checking which host paths exist.
pub fn plan_container(
    settings: &ContainerSettings,
    target: &ChannelTarget,
    kind: ContainerKind,
    invocation: &ClaudeInvocation,
) -> ContainerPlan {
    let name = naming::container_name(
        &target.channel_id,
        target.custom_dir.then_some(target.work_dir.as_path()),
    );
    let mut labels = BTreeMap::new();
    labels.insert(naming::LABEL_APP.to_owned(), naming::APP_AGENT.to_owned());
    labels.insert(naming::LABEL_TYPE.to_owned(), kind.label().to_owned());
    labels.insert(naming::LABEL_CHANNEL.to_owned(), target.channel_id.clone());
    labels.insert(naming::LABEL_DAEMON.to_owned(), settings.daemon_id.clone());

    let mounts = plan_mounts(settings, target, settings.docker_proxy.is_some());
    let copy_files = plan_copy_files(settings, &mounts.container_paths);
    let mut chown_paths = mounts.chown_paths.clone();
    chown_paths.extend(
        copy_files
            .iter()
            .map(|c| c.container_path.display().to_string()),
    );
    let mcp_config_path = settings.run_dir.join(&name).join("mcp.json");
    let mcp_config = mcp_config(settings);

    let mut binds = mounts.binds;
    binds.push(format!(
        "{}:{MCP_CONFIG_IN_CONTAINER}:ro",
        mcp_config_path.display()
    ));
    let mut env = container_env(settings, target, &chown_paths);
    let gate_policy_path = settings.gate.as_ref().map(|gate| {
        let path = gate.policy_dir.join(&name).join("gate-policy.json");
        binds.push(format!("{}:{GATE_POLICY_IN_CONTAINER}:ro", path.display()));
        env.push(format!("{}=1", env::GATE_ENABLED));
        env.push(format!(
            "{}={GATE_POLICY_IN_CONTAINER}",
            env::GATE_POLICY_FILE
        ));
        env.push(format!("{}={}", env::CHANNEL_ID, target.channel_id));
        env.push(format!("{}={}", env::GATE_TOKEN, gate.token));
        env.push(format!(
            "{GATE_WORKSPACE_ENV}={}",
            target.work_dir.display()
        ));
        path
    });
    let mut tmpfs = BTreeMap::new();
    let mut security_opt = Vec::new();
    let proxy_policy = settings.docker_proxy.as_ref().map(|proxy| {
        let path = proxy.policy_dir.join(&name).join("proxy-policy.json");
        binds.push(format!("{}:{PROXY_POLICY_IN_CONTAINER}:ro", path.display()));
        binds.push(format!(
            "{}:{DOCKER_UPSTREAM_IN_CONTAINER}",
            proxy.host_socket.display()
        ));
        // Docker mounts parents first: the socket lands inside the root-only tmpfs.
        tmpfs.insert(
            DOCKER_UPSTREAM_DIR.to_owned(),
            "mode=0700,uid=0,gid=0,nosuid,nodev,noexec".to_owned(),
        );
        // Nested containers run as root on the host's kernel and can leave setuid files in
        // the directories they mount; with no new privileges, the agent cannot use them.
        security_opt.push("no-new-privileges:true".to_owned());
        env.push(format!("{}=1", env::DOCKERPROXY_ENABLED));
        env.push(format!(
            "{}={PROXY_POLICY_IN_CONTAINER}",
            env::DOCKERPROXY_POLICY_FILE
        ));
        env.push(format!(
            "{}={DOCKER_UPSTREAM_IN_CONTAINER}",
            env::DOCKERPROXY_UPSTREAM
        ));
        env.push(format!(
            "{}={DOCKER_PROXY_SOCKET},{}",
            env::DOCKERPROXY_LISTEN,
            paths::DOCKER_CONVENTIONAL_SOCKET
        ));
        env.push(format!("DOCKER_HOST=unix://{DOCKER_PROXY_SOCKET}"));
        if settings.gate.is_none() {
            env.push(format!("{}={}", env::CHANNEL_ID, target.channel_id));
            env.push(format!("{}={}", env::GATE_TOKEN, proxy.token));
        }
        let json = proxy_policy_json(
            &proxy.policy_json,
            &name,
            &target.channel_id,
            &settings.daemon_id,
            &mounts.project_roots,
        );
        (path, json)
    });

    let cmd = match kind {
        ContainerKind::Agent => {
            let claude = claude_command(settings, Path::new(MCP_CONFIG_IN_CONTAINER), invocation);
            let (cmd, setup_env) = setup::with_setup(&settings.setup, claude);
            env.extend(setup_env);
            cmd
        }
        ContainerKind::Shell | ContainerKind::Chrome => {
            vec!["sleep".to_owned(), "infinity".to_owned()]
        }
    };
    ContainerPlan {
        name,
        kind,
        labels,
        env,
        binds,
        copy_files,
        working_dir: target.work_dir.clone(),
        mcp_config_path,
        mcp_config,
        gate_policy_path,
        proxy_policy,
        tmpfs,
        security_opt,
        cmd,
    }
}

/// The daemon's proxy policy with this container's `context`: its name (the owner label of
/// what it creates), channel, daemon id and the directories nested containers may mount (the
/// project mount and the extra directories, each mounted at the same path here).
fn proxy_policy_json(
    base: &str,
    name: &str,
    channel: &str,
    daemon_id: &str,
    roots: &[PathBuf],
) -> String {
    let mut value: Value = serde_json::from_str(base).unwrap_or_else(|_| json!({}));
    if !value.is_object() {
        value = json!({});
    }
    let context = value
        .as_object_mut()
        .map(|object| object.entry("context").or_insert_with(|| json!({})));
    if let Some(Value::Object(context)) = context {
        context.insert("owner".to_owned(), json!(name));
        context.insert("channel".to_owned(), json!(channel));
        context.insert("daemon".to_owned(), json!(daemon_id));
        let mut paths: Vec<String> = Vec::new();
        for root in roots {
            let text = root.display().to_string();
            if !paths.contains(&text) {
                paths.push(text);
            }
        }
        context.insert("allowed_paths".to_owned(), json!(paths));
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Whether a user mount at `dest` would cover or shadow one of the proxy's paths.
fn is_proxy_reserved(dest: &Path) -> bool {
    PROXY_RESERVED_PATHS.iter().any(|reserved| {
        let reserved = Path::new(reserved);
        dest == reserved || reserved.starts_with(dest) || dest.starts_with(reserved)
    })
}

/// The `claude` command line. The prompt is not on it: turns are written to stdin as
/// stream-json, so a message of any size fits and the same process can take follow-ups.
pub fn claude_command(
    settings: &ContainerSettings,
    mcp_config_path: &Path,
    invocation: &ClaudeInvocation,
) -> Vec<String> {
    let mut cmd = vec![
        settings.claude_bin.clone(),
        "--print".to_owned(),
        "--input-format".to_owned(),
        "stream-json".to_owned(),
        "--output-format".to_owned(),
        "stream-json".to_owned(),
        "--verbose".to_owned(),
        "--dangerously-skip-permissions".to_owned(),
        "--mcp-config".to_owned(),
        mcp_config_path.display().to_string(),
    ];
    if let Some(session) = &invocation.resume_session {
        cmd.push("--resume".to_owned());
        cmd.push(session.clone());
    }
    if let Some(model) = &settings.model {
        cmd.push("--model".to_owned());
        cmd.push(model.clone());
    }
    for dir in &settings.extra_dirs {
        cmd.push("--add-dir".to_owned());
        cmd.push(
            expand_tilde(dir, &settings.agent.home)
                .display()
                .to_string(),
        );
    }
    cmd
}

/// The environment of every container.
pub fn container_env(
    settings: &ContainerSettings,
    target: &ChannelTarget,
    chown_paths: &[String],
) -> Vec<String> {
    let home = settings.agent.home.display().to_string();
    let mut env = vec![
        format!("CHANNEL_ID={}", target.channel_id),
        format!("{}={}", env::API_URL, settings.api_url),
        format!("HOME={home}"),
        format!("{}={}", env::HOST_USER, settings.agent.name),
        format!("HOST_UID={}", settings.agent.uid),
        format!("HOST_GID={}", settings.agent.gid),
        format!("TZ={}", settings.timezone),
        format!(
            "PATH={home}/.local/bin:{home}/bin:{home}/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
        format!("CHOWN_PATHS={}", chown_paths.join(":")),
        // The container is thrown away after the turn; an update would be lost work.
        "DISABLE_AUTOUPDATER=1".to_owned(),
    ];
    env.extend(git_safe_directories(settings, target));
    if let Some(token) = &settings.api_token {
        env.push(format!("{API_TOKEN_ENV}={token}"));
    }
    match &settings.auth {
        Auth::OAuthToken(token) => env.push(format!("CLAUDE_CODE_OAUTH_TOKEN={token}")),
        Auth::ApiKey(key) => env.push(format!("ANTHROPIC_API_KEY={key}")),
        Auth::None => {}
    }
    env.extend(proxy_env(&settings.host_proxy_env, &settings.api_url));
    for (key, value) in &settings.envs {
        env.push(format!("{key}={}", env_value(value, &settings.agent.home)));
    }
    env.extend(project_env(settings));
    env
}

/// [`ContainerSettings::project_env`] as `KEY=value` pairs: a project file's variables, so
/// never a name loop owns ([`is_reserved_env`], the filter a project's `envs` gets too) nor
/// one the config's `envs` already sets.
fn project_env(settings: &ContainerSettings) -> Vec<String> {
    settings
        .project_env
        .iter()
        .filter(|(key, _)| {
            let kept = !key.is_empty()
                && !key.contains('=')
                && !is_reserved_env(key)
                && !settings.envs.contains_key(*key);
            if !kept {
                tracing::debug!(name = %key, "not setting a project variable loop or the config owns");
            }
            kept
        })
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// Git refuses a repository whose files belong to another uid ("dubious ownership"), which
/// is the normal case here: loop (often root) clones and creates worktrees, the agent runs as
/// another uid. The project and the extra directories are declared safe in the command scope
/// (`GIT_CONFIG_COUNT`), which git honours for `safe.directory`, unlike a repository's own
/// config; nothing is written to any gitconfig file.
fn git_safe_directories(settings: &ContainerSettings, target: &ChannelTarget) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    let mut add = |dir: &Path| {
        let text = dir.display().to_string();
        if !dirs.contains(&text) {
            dirs.push(text);
        }
    };
    add(&target.work_dir);
    if let Some(parent) = &target.parent_dir {
        add(parent);
    }
    for dir in &settings.extra_dirs {
        add(&expand_tilde(dir, &settings.agent.home));
    }
    let mut env = vec![format!("GIT_CONFIG_COUNT={}", dirs.len())];
    for (index, dir) in dirs.iter().enumerate() {
        env.push(format!("GIT_CONFIG_KEY_{index}=safe.directory"));
        env.push(format!("GIT_CONFIG_VALUE_{index}={dir}"));
    }
    env
}

/// Forwards proxy variables, rewriting localhost to the host alias, and makes sure NO_PROXY
/// lets the container reach the loop API directly when `api_url` names the host alias. (With
/// egress control the API is on the internal network's gateway, which the daemon's NO_PROXY
/// holds, and the host alias must go through the daemon's proxy: the host is fenced off.)
pub fn proxy_env(host: &BTreeMap<String, String>, api_url: &str) -> Vec<String> {
    let mut env = Vec::new();
    let mut any = false;
    for var in PROXY_VARS {
        if let Some(value) = host.get(var).filter(|v| !v.is_empty()) {
            any = true;
            env.push(format!("{var}={}", rewrite_proxy(value)));
        }
    }
    if any {
        let api_on_host_alias = api_url.contains(&format!("://{HOST_ALIAS}"));
        for var in ["NO_PROXY", "no_proxy"] {
            let current = host.get(var).map(String::as_str).unwrap_or("");
            let value = if !api_on_host_alias || current.split(',').any(|h| h.trim() == HOST_ALIAS)
            {
                current.to_owned()
            } else if current.is_empty() {
                HOST_ALIAS.to_owned()
            } else {
                format!("{current},{HOST_ALIAS}")
            };
            if !value.is_empty() {
                env.push(format!("{var}={value}"));
            }
        }
    }
    env
}

fn rewrite_proxy(value: &str) -> String {
    if value.starts_with(':') && value[1..].chars().all(|c| c.is_ascii_digit()) {
        return format!("http://{HOST_ALIAS}{value}");
    }
    value
        .replace("://localhost:", &format!("://{HOST_ALIAS}:"))
        .replace("://127.0.0.1:", &format!("://{HOST_ALIAS}:"))
}

/// Strings get `~` expansion; other JSON values are stringified (numbers and booleans as
/// written, arrays and objects as JSON).
fn env_value(value: &Value, home: &Path) -> String {
    match value {
        Value::String(s) => {
            if s == "~" || s.starts_with("~/") {
                expand_tilde(s, home).display().to_string()
            } else {
                s.clone()
            }
        }
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

struct MountPlan {
    binds: Vec<String>,
    /// Container paths that are bind-mounted (for the copy-file collision filter).
    container_paths: Vec<PathBuf>,
    chown_paths: Vec<String>,
    /// The project mount and the extra directories: what the docker proxy lets nested
    /// containers mount.
    project_roots: Vec<PathBuf>,
}

fn is_named_volume(source: &str) -> bool {
    !source.contains('/') && !source.starts_with('~') && !source.starts_with('.')
}

fn plan_mounts(
    settings: &ContainerSettings,
    target: &ChannelTarget,
    docker_proxy: bool,
) -> MountPlan {
    let home = &settings.agent.home;
    let mut plan = MountPlan {
        binds: Vec::new(),
        container_paths: Vec::new(),
        chown_paths: Vec::new(),
        project_roots: Vec::new(),
    };
    for mount in &settings.mounts {
        let mut parts = mount.splitn(3, ':');
        let (Some(source), Some(dest)) = (parts.next(), parts.next()) else {
            tracing::warn!(mount, "skipping malformed mount");
            continue;
        };
        let mode = parts.next();
        let dest = expand_tilde(dest, home);
        if docker_proxy && is_proxy_reserved(&dest) {
            // A mount there could put the host's socket where the agent may connect.
            tracing::warn!(mount, "skipping a mount over the docker proxy's sockets");
            continue;
        }
        let bind = if is_named_volume(source) {
            plan.chown_paths.push(dest.display().to_string());
            source.to_owned()
        } else {
            let source = expand_tilde(source, home);
            if !source.exists() {
                tracing::debug!(source = %source.display(), "skipping mount: host path does not exist");
                continue;
            }
            if touches_protected(&source, &settings.protected_dirs) {
                tracing::warn!(
                    mount,
                    "skipping a mount that would show loop's own directory"
                );
                continue;
            }
            source.display().to_string()
        };
        plan.binds.push(match mode {
            Some(mode) => format!("{bind}:{}:{mode}", dest.display()),
            None => format!("{bind}:{}", dest.display()),
        });
        plan.container_paths.push(dest);
    }
    if let Some(excludes) = &settings.git_excludes_file
        && excludes.exists()
    {
        plan.binds.push(format!("{0}:{0}:ro", excludes.display()));
        plan.container_paths.push(excludes.clone());
    }
    if let Some(host) = sessions_on_host(settings, &target.channel_id) {
        if let Err(err) = std::fs::create_dir_all(&host) {
            tracing::warn!(dir = %host.display(), error = %err, "cannot create the session store");
        }
        let dest = sessions_in_container(settings);
        plan.binds
            .push(format!("{}:{}", host.display(), dest.display()));
        plan.chown_paths.push(dest.display().to_string());
        plan.container_paths.push(dest);
    }
    let project_mount = match &target.parent_dir {
        Some(parent) if target.work_dir.starts_with(parent) => parent.clone(),
        _ => target.work_dir.clone(),
    };
    plan.binds.push(format!("{0}:{0}", project_mount.display()));
    plan.container_paths.push(project_mount.clone());
    if let Some(common) = &target.git_common_dir
        && !common.starts_with(&project_mount)
    {
        if touches_protected(common, &settings.protected_dirs) {
            tracing::warn!(dir = %common.display(), "not mounting a git directory that would show loop's own directory");
        } else {
            plan.binds.push(format!("{0}:{0}", common.display()));
            plan.container_paths.push(common.clone());
        }
    }
    for file in parent_memory_files(&project_mount) {
        plan.binds.push(format!("{0}:{0}:ro", file.display()));
        plan.container_paths.push(file);
    }
    plan.project_roots.push(project_mount);
    for dir in &settings.extra_dirs {
        let dir = expand_tilde(dir, home);
        if dir.exists() && touches_protected(&dir, &settings.protected_dirs) {
            tracing::warn!(dir = %dir.display(), "skipping an extra directory that would show loop's own directory");
        } else if dir.exists() {
            plan.binds.push(format!("{0}:{0}", dir.display()));
            plan.container_paths.push(dir.clone());
            plan.project_roots.push(dir);
        }
    }
    plan
}

/// The CLAUDE.md files of the project's parent directories, which a person's CLI reads too
/// (a monorepo's or a team's shared instructions), to mount read-only at the same paths.
/// Only regular files count: Docker would follow a symlink on the host, wherever it points.
fn parent_memory_files(project: &Path) -> Vec<PathBuf> {
    project
        .ancestors()
        .skip(1)
        .filter(|dir| dir.parent().is_some())
        .flat_map(|dir| CLAUDE_MEMORY_FILES.map(|name| dir.join(name)))
        .filter(|file| std::fs::symlink_metadata(file).is_ok_and(|meta| meta.is_file()))
        .collect()
}

/// Whether showing host `path` would show one of `protected` (or part of it). Both sides are
/// compared after resolving symlinks, as Docker resolves a bind's source.
fn touches_protected(path: &Path, protected: &[PathBuf]) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    protected.iter().any(|dir| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        path.starts_with(&dir) || dir.starts_with(&path)
    })
}

/// Copy files that exist and do not collide with a bind-mounted path.
fn plan_copy_files(settings: &ContainerSettings, mounted: &[PathBuf]) -> Vec<CopyFile> {
    settings
        .copy_files
        .iter()
        .map(|file| expand_tilde(file, &settings.agent.home))
        .filter(|path| !mounted.iter().any(|m| m == path))
        .filter(|path| path.is_file())
        .filter(|path| {
            let protected = touches_protected(path, &settings.protected_dirs);
            if protected {
                tracing::warn!(file = %path.display(), "not copying a file from loop's own directory");
            }
            !protected
        })
        .map(|path| CopyFile {
            container_path: path.clone(),
            host_path: path,
        })
        .collect()
}

/// The per-channel MCP config: the built-in `loop` server unless the user defined one, plus
/// the user's servers.
pub fn mcp_config(settings: &ContainerSettings) -> Value {
    let mut servers = serde_json::Map::new();
    if !settings.mcp_servers.contains_key("loop") {
        // In the container, not the project: a log file would show in the user's git status.
        let log = MCP_LOG_IN_CONTAINER;
        // No channel or author here: the token says which channel the container serves now,
        // and the daemon knows who asked for the running turn. So the same server serves
        // every turn of a warm agent, and a spare agent serves the thread that claims it.
        let mut args = vec![
            "mcp".to_owned(),
            "--api-url".to_owned(),
            settings.api_url.clone(),
            "--log".to_owned(),
            log.to_owned(),
        ];
        if settings.memory_enabled {
            args.push("--memory".to_owned());
        }
        let mut entry = json!({ "command": LOOP_BIN_IN_IMAGE, "args": args });
        // Passed explicitly: an MCP client may start servers with a reduced environment.
        if let Some(token) = &settings.api_token {
            entry["env"] = json!({ API_TOKEN_ENV: token });
        }
        servers.insert("loop".to_owned(), entry);
    }
    for (name, server) in &settings.mcp_servers {
        let mut entry = json!({ "command": server.command, "args": server.args });
        if !server.env.is_empty() {
            entry["env"] = json!(server.env);
        }
        servers.insert(name.clone(), entry);
    }
    json!({ "mcpServers": servers })
}

/// Detects the host's timezone: `$TZ`, `/etc/timezone`, the `/etc/localtime` symlink, else UTC.
pub fn detect_timezone(tz_env: Option<&str>) -> String {
    if let Some(tz) = tz_env.map(str::trim).filter(|t| !t.is_empty()) {
        return tz.trim_start_matches(':').to_owned();
    }
    if let Ok(text) = std::fs::read_to_string("/etc/timezone") {
        let tz = text.trim();
        if !tz.is_empty() {
            return tz.to_owned();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let target = target.display().to_string();
        if let Some((_, zone)) = target.split_once("zoneinfo/") {
            return zone.to_owned();
        }
    }
    "UTC".to_owned()
}

/// `git config --global --get core.excludesFile`, expanded, when it names an existing file.
pub fn git_excludes_file(home: &Path) -> Option<PathBuf> {
    let output = std::process::Command::new("git")
        .args(["config", "--global", "--get", "core.excludesFile"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let path = expand_tilde(&text, home);
    (!text.is_empty() && path.is_file()).then_some(path)
}

#[cfg(test)]
mod tests;
