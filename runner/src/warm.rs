//! Warm agents: after a turn, a thread's container and its `claude` process (streaming input,
//! `--resume` of the thread's session) stay up, so the next message of that thread is written
//! to its stdin instead of paying for a new container and a new CLI start.
//!
//! The pool holds idle agents only: a turn takes its agent out, and puts it back when the turn
//! ends well. Bounds: `idle` retires an agent nobody used for that long; `max_agents` evicts
//! the least recently used. Whoever takes an agent out of the pool owns it, so retiring never
//! races a running turn.
//!
//! A **spare** is an agent started ahead for a project, before any thread asks: container up,
//! setup done, CLI waiting on stdin without a session. It sits in the same pool (and counts
//! against the same bound) under its own id until a new thread of the project adopts it: then
//! it is that thread's warm agent, and its first turn starts the thread's session. Nothing in
//! the container names the thread: the daemon tells the tools which channel a token serves.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::spec::{
    ContainerPlan, ContainerSettings, GATE_POLICY_IN_CONTAINER, MCP_CONFIG_IN_CONTAINER,
    PROXY_POLICY_IN_CONTAINER, sessions_in_container, sessions_on_host,
};
use crate::stdio::AgentIo;
use crate::usage::ContainerUsage;

/// Env vars minted per turn; they do not make two plans different.
const PER_TURN_ENV: [&str; 2] = [
    loop_wire::container::env::GATE_TOKEN,
    loop_wire::container::env::API_TOKEN,
];
/// Env vars that name the thread a container serves: what it serves is the daemon's to say
/// (by token), so a spare started for a project and adopted by a thread has the same
/// fingerprint as a container started for that thread.
const IDENTITY_ENV: [&str; 2] = [loop_wire::container::env::CHANNEL_ID, "CHANNEL_ID"];
/// Memory an idle agent is budgeted at when sizing the default pool (measured ~90 MiB).
const IDLE_AGENT_MIB: u64 = 128;

/// Warm-pool limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmConfig {
    /// An agent idle this long is retired. Zero disables warm agents.
    pub idle: Duration,
    /// At most this many idle agents; the least recently used is evicted first.
    pub max_agents: usize,
}

impl WarmConfig {
    pub fn disabled() -> WarmConfig {
        WarmConfig {
            idle: Duration::ZERO,
            max_agents: 0,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.idle.is_zero() && self.max_agents > 0
    }

    /// A default that fits the machine: a quarter of its memory at ~128 MiB an agent, between
    /// 1 and 32.
    pub fn default_max_agents() -> usize {
        let total_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(4 * 1024 * 1024);
        let agents = total_kib / 1024 / 4 / IDLE_AGENT_MIB;
        usize::try_from(agents).unwrap_or(32).clamp(1, 32)
    }
}

/// A live, idle agent.
pub(crate) struct WarmAgent {
    pub id: String,
    pub name: String,
    pub channel: String,
    pub fingerprint: u64,
    pub session_id: String,
    pub io: AgentIo,
    pub mcp_config_path: PathBuf,
    pub keep_mcp_config: bool,
    pub created: Instant,
    pub last_used: Instant,
    /// Started ahead for a project, not yet adopted by a thread.
    pub spare: bool,
    /// Where the container works (a spare's project or worktree).
    pub work_dir: PathBuf,
    /// The host directory mounted as the CLI's session store (named after `channel`).
    pub sessions_dir: Option<PathBuf>,
}

impl WarmAgent {
    /// The agent of a container started from `plan` for `channel`, just used.
    pub fn started(
        id: String,
        plan: &ContainerPlan,
        settings: &ContainerSettings,
        channel: &str,
        fingerprint: u64,
        session_id: String,
        io: AgentIo,
    ) -> WarmAgent {
        let now = Instant::now();
        WarmAgent {
            id,
            name: plan.name.clone(),
            channel: channel.to_owned(),
            fingerprint,
            session_id,
            io,
            mcp_config_path: plan.mcp_config_path.clone(),
            keep_mcp_config: settings.keep_mcp_configs,
            created: now,
            last_used: now,
            spare: false,
            work_dir: plan.working_dir.clone(),
            sessions_dir: sessions_on_host(settings, channel),
        }
    }
}

/// What `loop status` shows about a warm agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmInfo {
    pub channel: String,
    pub container: String,
    pub session_id: String,
    pub age_sec: u64,
    pub idle_sec: u64,
    /// The container's memory and CPU use (flat in JSON: `memory_bytes`, `cpu_usec`,
    /// `cpu_percent`), when they can be read.
    #[serde(flatten)]
    pub usage: ContainerUsage,
    /// A spare, started ahead for the next new thread of `work_dir`.
    #[serde(default)]
    pub spare: bool,
    #[serde(default)]
    pub work_dir: String,
}

/// The pool of idle warm agents, by thread.
pub(crate) struct WarmPool {
    config: WarmConfig,
    agents: Mutex<HashMap<String, WarmAgent>>,
}

impl WarmPool {
    pub fn new(config: WarmConfig) -> WarmPool {
        WarmPool {
            config,
            agents: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> WarmConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WarmAgent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the thread's agent out of the pool (the caller owns it now).
    pub fn take(&self, channel: &str) -> Option<WarmAgent> {
        self.lock().remove(channel)
    }

    /// Puts an agent back; returns the agents evicted to stay within `max_agents`.
    pub fn put(&self, agent: WarmAgent) -> Vec<WarmAgent> {
        let mut agents = self.lock();
        let mut evicted = Vec::new();
        if let Some(previous) = agents.insert(agent.channel.clone(), agent) {
            evicted.push(previous);
        }
        while agents.len() > self.config.max_agents {
            let Some(oldest) = agents
                .values()
                .min_by_key(|a| a.last_used)
                .map(|a| a.channel.clone())
            else {
                break;
            };
            if let Some(agent) = agents.remove(&oldest) {
                evicted.push(agent);
            }
        }
        evicted
    }

    /// Takes the thread's agent out only if it is still the container `id` (a turn may have
    /// taken it and put another back meanwhile).
    pub fn take_if(&self, channel: &str, id: &str) -> Option<WarmAgent> {
        let mut agents = self.lock();
        if agents.get(channel).is_some_and(|a| a.id == id) {
            agents.remove(channel)
        } else {
            None
        }
    }

    /// Whether `id` names an idle spare.
    pub fn has_spare(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|a| a.spare)
    }

    /// Agents idle longer than the limit, taken out for retirement.
    pub fn take_idle(&self, now: Instant) -> Vec<WarmAgent> {
        let mut agents = self.lock();
        let stale: Vec<String> = agents
            .values()
            .filter(|a| now.saturating_duration_since(a.last_used) >= self.config.idle)
            .map(|a| a.channel.clone())
            .collect();
        stale.iter().filter_map(|c| agents.remove(c)).collect()
    }

    /// Every agent, taken out (shutdown).
    pub fn take_all(&self) -> Vec<WarmAgent> {
        self.lock().drain().map(|(_, a)| a).collect()
    }

    pub fn info(&self) -> Vec<WarmInfo> {
        let now = Instant::now();
        let mut info: Vec<WarmInfo> = self
            .lock()
            .values()
            .map(|a| WarmInfo {
                channel: a.channel.clone(),
                container: a.name.clone(),
                session_id: a.session_id.clone(),
                age_sec: now.saturating_duration_since(a.created).as_secs(),
                idle_sec: now.saturating_duration_since(a.last_used).as_secs(),
                usage: ContainerUsage::default(),
                spare: a.spare,
                work_dir: a.work_dir.display().to_string(),
            })
            .collect();
        info.sort_by(|a, b| a.channel.cmp(&b.channel));
        info
    }

    pub fn ids(&self) -> Vec<(String, String)> {
        self.lock()
            .values()
            .map(|a| (a.channel.clone(), a.id.clone()))
            .collect()
    }
}

/// Identifies everything about a container that a config, image or policy change would alter,
/// so a warm agent started with other settings is retired instead of reused.
pub fn fingerprint(plan: &ContainerPlan, settings: &ContainerSettings) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    settings.image.hash(&mut hasher);
    settings.runtime.hash(&mut hasher);
    settings.memory_mb.hash(&mut hasher);
    settings.cpus.to_bits().hash(&mut hasher);
    settings.model.hash(&mut hasher);
    settings.network.hash(&mut hasher);
    settings
        .gate
        .as_ref()
        .map(|g| g.policy_json.clone())
        .hash(&mut hasher);
    settings
        .docker_proxy
        .as_ref()
        .map(|p| (p.policy_json.clone(), p.host_socket.clone()))
        .hash(&mut hasher);
    for entry in &plan.env {
        let name = entry
            .split_once('=')
            .map_or(entry.as_str(), |(name, _)| name);
        if !PER_TURN_ENV.contains(&name) && !IDENTITY_ENV.contains(&name) {
            entry.hash(&mut hasher);
        }
    }
    plan.working_dir.hash(&mut hasher);
    // The per-container files' host paths contain the container name, which is random per
    // plan; their contents are hashed above (policies) and below (MCP config).
    let per_container = [
        GATE_POLICY_IN_CONTAINER,
        PROXY_POLICY_IN_CONTAINER,
        MCP_CONFIG_IN_CONTAINER,
    ]
    .map(|dest| format!(":{dest}:ro"));
    // The session store is named after the thread: a spare's is renamed when a thread
    // adopts it, and what it holds is the session, checked separately.
    let sessions = format!(":{}", sessions_in_container(settings).display());
    for bind in &plan.binds {
        if !per_container.iter().any(|suffix| bind.ends_with(suffix)) && !bind.ends_with(&sessions)
        {
            bind.hash(&mut hasher);
        }
    }
    plan.mcp_config.to_string().hash(&mut hasher);
    // The command without its --resume argument: the session is checked separately.
    let mut skip = false;
    for arg in &plan.cmd {
        if skip {
            skip = false;
            continue;
        }
        if arg == "--resume" {
            skip = true;
            continue;
        }
        arg.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pool_size_is_bounded() {
        let n = WarmConfig::default_max_agents();
        assert!((1..=32).contains(&n));
        assert!(!WarmConfig::disabled().is_enabled());
    }
}
