//! The `loop` command line: argument types only (clap). Each command's work lives in
//! `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// loop: Claude Code as a team member, in Docker, from Slack, Discord or your terminal.
#[derive(Debug, Parser)]
#[command(name = "loop", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented default config to ~/.loop/config.json (never overwrites without --force).
    Onboard(OnboardArgs),
    /// Run the daemon: every enabled platform, the scheduler and the host API.
    Serve,
    /// Check Docker, the agent image, credentials, config and database; say what to fix.
    Doctor(DoctorArgs),
    /// Send one prompt to the running daemon and print the answer (exit status: success).
    Run(RunArgs),
    /// Chat with the agent in your terminal through the running daemon.
    Chat(ChatArgs),
    /// Show running turns and containers.
    Status,
    /// Tokens and cost per channel.
    Usage,
    /// Run `loop serve` under systemd.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build the agent image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Allow a gate approval request (once, or for the rest of the container's session).
    Approve(ApproveArgs),
    /// Deny a gate approval request.
    Deny(DenyArgs),
    /// List gate approval requests waiting for an answer.
    Approvals,
    /// Open the web dashboard: prints a one-time login link (and opens it when a browser is
    /// there).
    Ui(UiArgs),
    /// Recent gate decisions (reads the database directly).
    Audit(AuditArgs),
    /// Security gate tools.
    #[command(subcommand)]
    Gate(GateCommand),
    /// The agent container's gate (its entrypoint runs this as root): supervise CMD under the
    /// seccomp policy in $LOOP_GATE_POLICY_FILE.
    #[command(hide = true)]
    Syscallwrap(SyscallwrapArgs),
    /// The agent container's Docker socket (its entrypoint starts this as root): forward to
    /// the host's daemon what the policy in $LOOP_DOCKERPROXY_POLICY_FILE allows.
    #[command(hide = true)]
    Dockerproxy,
    /// The agent container's built-in `loop` MCP server over stdio (the agent's CLI starts it).
    #[command(hide = true)]
    Mcp(McpArgs),
    /// The agent container's setup (the runner puts it in front of the agent): run the
    /// project's setup steps in $LOOP_SETUP, reporting on stdout, then exec CMD.
    #[command(hide = true)]
    Setup(SetupArgs),
    /// List scheduled tasks; `loop tasks cancel ID` cancels one.
    Tasks(TasksArgs),
    /// Semantic memory: search, list, forget, re-index a project's docs (reads the database and
    /// loads the embedding model directly, downloading it on first use).
    #[command(subcommand)]
    Memory(MemoryCommand),
}

/// Which memories a `loop memory` command looks at; none given: every scope.
#[derive(Debug, Args, Default)]
pub struct MemoryScopeArgs {
    /// A channel's memories (a channel key, e.g. `local:default`).
    #[arg(long)]
    pub channel: Vec<String>,
    /// A project's memories (its directory).
    #[arg(long)]
    pub project: Vec<std::path::PathBuf>,
    /// Global memories.
    #[arg(long)]
    pub global: bool,
}

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// The memories closest in meaning to QUERY, with scores and sources.
    Search {
        query: String,
        #[arg(long, short = 'k', default_value_t = 10)]
        top_k: usize,
        #[command(flatten)]
        scope: MemoryScopeArgs,
    },
    /// The newest memories.
    List {
        /// Only this source: `agent`, `turn` or `doc`.
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[command(flatten)]
        scope: MemoryScopeArgs,
    },
    /// Delete one memory.
    Forget {
        /// The memory id (from `loop memory list` or `search`).
        id: String,
    },
    /// Re-index a project's Markdown docs (CLAUDE.md, README, docs/); only changed chunks are
    /// embedded again.
    Reindex {
        /// The project directory (default: the current one).
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The channel the container serves, for its log only (the token decides; loop no
    /// longer passes it).
    #[arg(long, default_value = "")]
    pub channel_id: String,
    /// The host API as the container reaches it.
    #[arg(long)]
    pub api_url: String,
    /// Who asked for the turn. Ignored by the daemon, which records the author of the turn
    /// the container serves; kept so older MCP configs still start.
    #[arg(long)]
    pub author_id: Option<String>,
    /// Offer the memory tools.
    #[arg(long)]
    pub memory: bool,
    /// Log file (stdout is the protocol).
    #[arg(long)]
    pub log: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only this channel's tasks (a channel key, e.g. `local:default`).
    #[arg(long)]
    pub channel: Option<String>,
    #[command(subcommand)]
    pub command: Option<TasksCommand>,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Cancel (delete) a task.
    Cancel {
        /// The task id (from `loop tasks`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The approval id (from the chat message or `loop approvals`).
    pub id: String,
    /// Allow the same action for the rest of the container's session.
    #[arg(long)]
    pub session: bool,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Only print the link; do not start a browser.
    #[arg(long)]
    pub no_open: bool,
    /// A link for someone else, with the rights this chat user id has (`permissions` and the
    /// channels' grants), e.g. a Slack `U…` id. Without it, the link is yours: an owner
    /// everywhere. Implies --no-open.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// The name that person's decisions are shown under (default: the id).
    #[arg(long, requires = "user")]
    pub name: Option<String>,
    /// One of that person's role ids (Discord server roles), for permissions given by role;
    /// repeat for several.
    #[arg(long = "role", value_name = "ROLE_ID", requires = "user")]
    pub roles: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The approval id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many of the newest entries to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
}

#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// Print what a policy file decides for a command: `loop gate check POLICY -- git push`.
    Check(GateCheckArgs),
}

#[derive(Debug, Args)]
pub struct GateCheckArgs {
    /// The policy file (the shape of `/etc/loop/gate-policy.json`).
    pub policy_file: PathBuf,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SyscallwrapArgs {
    /// The command to supervise, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The agent's command, exec'd after the setup, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check this project's environment description (`.loop/container/Dockerfile`,
    /// `devcontainer.json`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The prompt.
    pub prompt: String,
    /// Project directory the agent works in (mounted at the same path).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Channel name; defaults to one per directory, so runs in a directory share a session.
    #[arg(long)]
    pub channel: Option<String>,
    /// Start a fresh session instead of resuming the channel's.
    #[arg(long)]
    pub new: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Channel name (sessions are per channel).
    #[arg(long, default_value = "default")]
    pub channel: String,
    /// Project directory the agent works in.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OnboardArgs {
    /// Replace an existing config file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Write the systemd unit and enable it (user unit; system unit when run as root).
    Install,
    /// Start the service.
    Start,
    /// Stop the service (SIGTERM: running turns drain).
    Stop,
    /// Show the service's status.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged effective config, secrets redacted.
    Show {
        /// Also apply this project's `.loop/config.json` (as far as its trusted version allows).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show how a project's `.loop/config.json` differs from the version last trusted, and
    /// trust this exact version: only then do its mounts, envs, image and higher limits apply.
    Trust {
        /// The project directory (default: the current one).
        dir: Option<PathBuf>,
        /// Trust without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the agent image (Debian, Node.js, Claude Code, this loop binary), or with `--dir` a
    /// project's own environment (its Dockerfile or devcontainer.json, loop's layer on top).
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Image tag; defaults to `container_image` from the config.
    #[arg(long)]
    pub tag: Option<String>,
    /// Claude Code version to install (npm version or `latest`).
    #[arg(long, default_value = "latest")]
    pub claude_version: String,
    /// Extra CA certificate (PEM) to trust inside the image; repeatable. Added to `extra_ca_certs`.
    #[arg(long = "ca-cert")]
    pub ca_certs: Vec<PathBuf>,
    /// The loop binary to put in the image; defaults to the running one.
    #[arg(long)]
    pub loop_binary: Option<PathBuf>,
    /// Do not use Docker's layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Build this project's environment instead (`.loop/container/Dockerfile` or
    /// devcontainer.json), on the agent image `container_image`, and trust its version.
    #[arg(long, conflicts_with_all = ["tag", "claude_version", "ca_certs", "loop_binary", "no_cache"])]
    pub dir: Option<PathBuf>,
    /// With `--dir`: trust and build without asking.
    #[arg(long, requires = "dir")]
    pub yes: bool,
}
