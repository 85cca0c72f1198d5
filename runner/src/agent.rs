//! One agent turn in a fresh container: the [`AgentRunner`] trait and its Docker backend.
//!
//! The trait is the seam for other backends (Kubernetes, a remote runner, warm containers):
//! the orchestrator only ever sees [`TurnRequest`] in, [`AgentEvent`]s along the way, and a
//! [`TurnOutcome`] or [`RunError`] out.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, UploadToContainerOptions,
    WaitContainerOptions,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

mod shells;

use crate::events::TurnResult;
use crate::project_image::{BuildError, ImagePlan, ProjectImage, ProjectImageSpec};
use crate::registry::{ContainerEntry, ContainerRegistry, ContainerStatus};
use crate::shell::{OpenShell, ShellBook, ShellError, ShellHandle, ShellRequest, TerminalSize};
use crate::spec::{
    ChannelTarget, ClaudeInvocation, ContainerKind, ContainerPlan, ContainerSettings,
    plan_container,
};
use crate::stdio::AgentIo;
use crate::usage::{ContainerUsage, UsageMeter};
use crate::warm::{WarmAgent, WarmConfig, WarmInfo, WarmPool, fingerprint};

/// The CLI's wording when the conversation no longer fits the model's context.
const PROMPT_TOO_LONG: &str = "prompt is too long";
/// How often idle warm agents are checked for a container that stopped under them.
const LIVENESS_PERIOD: Duration = Duration::from_secs(5);

/// One turn to run.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// For logs and labels.
    pub run_id: String,
    pub target: ChannelTarget,
    pub settings: ContainerSettings,
    /// Everything the agent should read this turn (several batched messages, maybe).
    pub prompt: String,
    /// Only the newest message: what a retry sends.
    pub latest_message: String,
    /// Claude session to resume.
    pub session_id: Option<String>,
    /// How long a finished container is kept before removal (its logs stay readable).
    pub keep_alive: Duration,
    /// Keep the thread's agent warm after this turn (when the runner has warm agents on).
    pub warm: bool,
}

/// A spare agent to start: the project's container settings, and a target whose channel id
/// is the spare's own (the thread that adopts it is not known yet).
#[derive(Debug, Clone)]
pub struct SpareRequest {
    /// For logs and labels.
    pub run_id: String,
    pub target: ChannelTarget,
    pub settings: ContainerSettings,
}

/// A finished turn.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub result: TurnResult,
    pub container_id: String,
    pub container_name: String,
    /// How the turn got its answer.
    pub recovery: Recovery,
    /// Whether the container stayed up as the thread's warm agent.
    pub warm: bool,
}

/// How a turn on a warm agent ended.
enum WarmTurn {
    Done(Result<TurnOutcome, RunError>),
    Lost,
}

/// Awaits one turn's reading within the turn timeout, unless the turn is cancelled first.
/// The caller stops the container on an error.
async fn within_limits<T>(
    work: impl std::future::Future<Output = T>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<T, RunError> {
    tokio::select! {
        done = tokio::time::timeout(timeout, work) => done.map_err(|_| RunError::TimedOut(timeout)),
        _ = cancel.cancelled() => Err(RunError::Cancelled),
    }
}

/// Builds the error for a `result` event with `is_error`.
fn agent_error(result: TurnResult) -> RunError {
    RunError::Agent {
        message: if result.text.is_empty() {
            result.subtype.clone()
        } else {
            result.text.clone()
        },
        result: Box::new(result),
    }
}

/// Which retry path (if any) produced the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    None,
    /// The session was compacted after "Prompt is too long", then the turn retried.
    Compacted,
    /// The turn failed once and was retried with only the latest message, in a fresh session
    /// (the outcome's session id is the new one).
    RetriedLatest,
}

/// Why a turn failed. Each variant is something the orchestrator reports differently.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the turn exceeded its {0:?} limit and was stopped")]
    TimedOut(Duration),
    #[error("the agent ran out of memory ({limit_mb} MB limit)")]
    OutOfMemory { limit_mb: u64 },
    #[error("the turn was stopped")]
    Cancelled,
    #[error("the agent reported an error: {message}")]
    Agent {
        message: String,
        result: Box<TurnResult>,
    },
    #[error("the agent exited with status {code} without a result{}", stderr_suffix(.stderr))]
    Exited { code: i64, stderr: String },
    #[error("cannot prepare the container: {0}")]
    Setup(String),
    /// Spare agents need warm agents (`warm_idle_sec`), which this runner does not keep.
    #[error("this runner keeps no warm agents, so no spares")]
    NoSpares,
    /// The project's own environment (issue #18) could not be built: the message says what,
    /// with the build's last lines.
    #[error("{0}")]
    Environment(String),
    #[error("docker {call} failed: {source}")]
    Docker {
        call: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    /// The Docker engine stopped answering (killed, restarting, its socket gone): an
    /// infrastructure failure, not the agent's. The turn can run again once the engine is back.
    #[error("the Docker engine stopped answering ({call}): {source}")]
    EngineLost {
        call: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

impl RunError {
    /// A failed Docker call: [`RunError::EngineLost`] when the engine never answered.
    fn docker(call: &'static str, source: bollard::errors::Error) -> RunError {
        if crate::docker::engine_unreachable(&source) {
            RunError::EngineLost { call, source }
        } else {
            RunError::Docker { call, source }
        }
    }

    /// Whether the engine, not the agent, failed the turn.
    pub fn is_engine_lost(&self) -> bool {
        matches!(self, RunError::EngineLost { .. })
    }

    fn is_prompt_too_long(&self) -> bool {
        match self {
            RunError::Agent { message, .. } => message.to_lowercase().contains(PROMPT_TOO_LONG),
            RunError::Exited { stderr, .. } => stderr.to_lowercase().contains(PROMPT_TOO_LONG),
            _ => false,
        }
    }

    /// Failures that a retry could plausibly fix.
    fn is_retryable(&self) -> bool {
        matches!(self, RunError::Agent { .. } | RunError::Exited { .. })
    }
}

pub use crate::stdio::EventSender;

/// A backend that runs agent turns.
#[async_trait]
pub trait AgentRunner: Send + Sync {
    /// Runs one turn, with the session retry rules, streaming events to `events` when given.
    async fn run_turn(
        &self,
        request: TurnRequest,
        events: Option<EventSender>,
        cancel: CancellationToken,
    ) -> Result<TurnOutcome, RunError>;

    /// Idle warm agents, for status displays. Backends without warm agents have none.
    async fn warm_agents(&self) -> Vec<WarmInfo> {
        Vec::new()
    }

    /// What each container in `ids` uses, by id, for status displays (see [`crate::usage`]).
    /// Backends without containers know of none.
    async fn container_usage(&self, _ids: &[String]) -> HashMap<String, ContainerUsage> {
        HashMap::new()
    }

    /// The names a project's own image would have and whether it exists (issue #18; see
    /// [`crate::project_image`]). Backends without images have none.
    async fn plan_project_image(
        &self,
        _spec: &ProjectImageSpec<'_>,
    ) -> Result<ImagePlan, BuildError> {
        Err(BuildError::NoImages)
    }

    /// Builds what a project's image is missing; `on_line` sees the builds' output.
    async fn build_project_image(
        &self,
        _spec: &ProjectImageSpec<'_>,
        _on_line: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<ProjectImage, BuildError> {
        Err(BuildError::NoImages)
    }

    /// The newest project image built for `project` (see [`crate::project_image::latest`]).
    async fn latest_project_image(&self, _project: &Path) -> Result<Option<String>, BuildError> {
        Ok(None)
    }

    /// Starts a spare agent for a project (see [`crate::warm`]): a container and a CLI
    /// waiting for a first turn, held under `request.target.channel_id` until a thread
    /// adopts it. Backends without warm agents start none.
    async fn start_spare(&self, _request: SpareRequest) -> Result<(), RunError> {
        Err(RunError::NoSpares)
    }

    /// Gives spare `spare` to the thread `channel_id`: its next turn runs on it. `Err` says
    /// why not (the spare is gone, say); the turn then starts its own container.
    async fn adopt_spare(&self, _spare: &str, _channel_id: &str) -> Result<(), String> {
        Err("this backend has no spare agents".to_owned())
    }

    /// Whether spare `spare` is still up and unclaimed.
    async fn has_spare(&self, _spare: &str) -> bool {
        false
    }

    /// Stops spare `spare` (a config or base change made it stale).
    async fn retire_spare(&self, _spare: &str) {}

    /// Whether turns can run again after a [`RunError::EngineLost`]: the orchestrator asks,
    /// with backoff, before it starts turns again. Backends without an engine are always ready.
    async fn engine_ready(&self) -> Result<(), RunError> {
        Ok(())
    }

    /// Opens a terminal's shell for a channel: as the agent, under its gate, with a tty (see
    /// [`crate::shell`]). Backends without terminals refuse.
    async fn open_shell(&self, _request: ShellRequest) -> Result<OpenShell, ShellError> {
        Err(ShellError::Unsupported)
    }

    /// Tells a shell's tty its new size.
    async fn resize_shell(
        &self,
        _shell: &ShellHandle,
        _size: TerminalSize,
    ) -> Result<(), ShellError> {
        Err(ShellError::Unsupported)
    }

    /// Ends a shell (and the shell container its last shell leaves).
    async fn close_shell(&self, _shell: &ShellHandle) {}
}

/// Runs each turn in a fresh Docker container.
#[derive(Clone)]
pub struct DockerRunner {
    docker: Docker,
    registry: ContainerRegistry,
    warm: std::sync::Arc<WarmPool>,
    /// Terminals' shells in shell containers (see [`crate::shell`]).
    shells: ShellBook,
    /// The containers' last CPU readings, for the rates status displays show.
    usage: std::sync::Arc<UsageMeter>,
}

impl DockerRunner {
    /// A runner whose every turn starts a fresh container.
    pub fn new(registry: ContainerRegistry) -> DockerRunner {
        DockerRunner::with_warm(registry, WarmConfig::disabled())
    }

    /// A runner that keeps threads' agents warm between turns within `warm`'s bounds.
    pub fn with_warm(registry: ContainerRegistry, warm: WarmConfig) -> DockerRunner {
        DockerRunner {
            docker: registry.docker().clone(),
            registry,
            warm: std::sync::Arc::new(WarmPool::new(warm)),
            shells: ShellBook::default(),
            usage: std::sync::Arc::default(),
        }
    }

    pub fn registry(&self) -> &ContainerRegistry {
        &self.registry
    }

    pub(crate) fn shells(&self) -> &ShellBook {
        &self.shells
    }

    /// The id and name of the channel's idle warm agent, if it has one.
    pub(crate) fn warm_container(&self, channel: &str) -> Option<(String, String)> {
        let (_, id) = self.warm.ids().into_iter().find(|(c, _)| c == channel)?;
        let name = self
            .registry
            .get(&id)
            .map_or_else(|| id.clone(), |e| e.name);
        Some((id, name))
    }

    /// The channel's shell container (`sleep infinity`, same pipeline as agents), created on
    /// first use. Concurrent callers for one channel get the same container.
    pub async fn ensure_shell(
        &self,
        settings: &ContainerSettings,
        target: &ChannelTarget,
    ) -> Result<ContainerEntry, RunError> {
        let lock = self.registry.channel_lock(&target.channel_id).await;
        let _guard = lock.lock().await;
        if let Some(existing) = self
            .registry
            .find_running(&target.channel_id, ContainerKind::Shell)
        {
            return Ok(existing);
        }
        let plan = plan_container(
            settings,
            target,
            ContainerKind::Shell,
            &ClaudeInvocation::default(),
        );
        write_host_files(&plan, settings)?;
        let id = self.create(&plan, settings, false).await?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|source| RunError::docker("start_container", source))?;
        Ok(self.registry.register(ContainerEntry {
            id,
            name: plan.name,
            channel_id: target.channel_id.clone(),
            kind: ContainerKind::Shell,
            status: ContainerStatus::Running,
            remove_at_ms: None,
        }))
    }

    /// One attempt. With warm agents on, the thread's idle agent answers when its settings and
    /// session still match; otherwise a new container starts (and stays warm afterwards).
    async fn run_once(
        &self,
        request: &TurnRequest,
        prompt: &str,
        session: Option<String>,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        let invocation = ClaudeInvocation {
            resume_session: session.clone(),
        };
        let plan = plan_container(
            &request.settings,
            &request.target,
            ContainerKind::Agent,
            &invocation,
        );
        let warm = request.warm && self.warm.config().is_enabled();
        let print = warm.then(|| fingerprint(&plan, &request.settings));
        if let Some(print) = print
            && let Some(agent) = self.warm.take(&request.target.channel_id)
        {
            // An adopted spare has no session yet, like the new thread it serves.
            let same_session = session.as_deref().unwrap_or_default() == agent.session_id;
            if agent.fingerprint == print && same_session {
                match self.warm_turn(agent, request, prompt, events, cancel).await {
                    WarmTurn::Done(result) => return result,
                    WarmTurn::Lost => {
                        tracing::info!("the warm agent is gone: answering with a cold --resume");
                    }
                }
            } else {
                tracing::info!(
                    settings_changed = agent.fingerprint != print,
                    session_changed = !same_session,
                    "retiring the warm agent"
                );
                self.retire(agent).await;
            }
        }
        write_host_files(&plan, &request.settings)?;
        let result = self
            .run_plan(request, &plan, prompt, events, cancel, print, session)
            .await;
        let kept_warm = matches!(&result, Ok(outcome) if outcome.warm);
        if !request.settings.keep_mcp_configs && !kept_warm {
            let _ = std::fs::remove_file(&plan.mcp_config_path);
        }
        result
    }

    /// A turn on a warm agent. `Lost` means the agent was gone before doing anything (exited,
    /// OOM-killed or removed between turns): the caller runs the turn cold instead.
    async fn warm_turn(
        &self,
        mut agent: WarmAgent,
        request: &TurnRequest,
        prompt: &str,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
    ) -> WarmTurn {
        if let Err(err) = agent.io.send(prompt, false).await {
            tracing::debug!(container = %agent.name, error = %err, "warm stdin write failed");
            self.retire(agent).await;
            return WarmTurn::Lost;
        }
        tracing::debug!(container = %agent.name, "turn written to the warm agent's CLI");
        let timeout = request.settings.timeout;
        let read = within_limits(agent.io.read_turn(&agent.name, events), timeout, cancel).await;
        let turn = match read {
            Ok(turn) => turn,
            Err(err) => {
                self.retire(agent).await;
                return WarmTurn::Done(Err(err));
            }
        };
        match turn.result {
            Some(result) if !result.is_error => {
                agent.last_used = Instant::now();
                agent.session_id = result.session_id.clone();
                let outcome = TurnOutcome {
                    result,
                    container_id: agent.id.clone(),
                    container_name: agent.name.clone(),
                    recovery: Recovery::None,
                    warm: true,
                };
                self.keep_warm(agent).await;
                WarmTurn::Done(Ok(outcome))
            }
            Some(result) => {
                // Retries (compaction, fresh session) run cold: retire this process.
                self.retire(agent).await;
                WarmTurn::Done(Err(agent_error(result)))
            }
            None if !turn.saw_events => {
                self.retire(agent).await;
                WarmTurn::Lost
            }
            None => {
                let id = agent.id.clone();
                let stderr = agent.io.stderr_text();
                // The output also ends when the engine dies under the agent.
                if let Err(source) = self.docker.ping().await {
                    let err = RunError::docker("ping", source);
                    if err.is_engine_lost() {
                        self.retire(agent).await;
                        return WarmTurn::Done(Err(err));
                    }
                }
                self.retire(agent).await;
                if self.was_oom_killed(&id).await {
                    WarmTurn::Done(Err(RunError::OutOfMemory {
                        limit_mb: request.settings.memory_mb,
                    }))
                } else {
                    WarmTurn::Done(Err(RunError::Exited { code: -1, stderr }))
                }
            }
        }
    }

    /// Puts an agent back in the pool, retiring whatever that evicts.
    async fn keep_warm(&self, agent: WarmAgent) {
        for evicted in self.warm.put(agent) {
            tracing::info!(channel = %evicted.channel, container = %evicted.name, "evicting the least recently used warm agent");
            self.retire(evicted).await;
        }
    }

    /// Stops and removes a warm agent's container.
    async fn retire(&self, agent: WarmAgent) {
        if !agent.keep_mcp_config {
            let _ = std::fs::remove_file(&agent.mcp_config_path);
        }
        if let Err(err) = self.registry.remove_now(&agent.id).await {
            tracing::warn!(container = %agent.name, error = %err, "cannot remove a retired warm agent");
        }
    }

    /// Starts a spare: the container and its CLI come up and wait on stdin; the first turn
    /// written there (by the thread that adopts it) starts a session.
    async fn start_spare_agent(&self, request: SpareRequest) -> Result<(), RunError> {
        if !self.warm.config().is_enabled() {
            return Err(RunError::NoSpares);
        }
        let invocation = ClaudeInvocation {
            resume_session: None,
        };
        let plan = plan_container(
            &request.settings,
            &request.target,
            ContainerKind::Agent,
            &invocation,
        );
        let print = fingerprint(&plan, &request.settings);
        write_host_files(&plan, &request.settings)?;
        let (id, io) = self
            .start_agent_container(
                &plan,
                &request.settings,
                &request.target,
                true,
                Duration::ZERO,
            )
            .await?;
        tracing::info!(run_id = %request.run_id, container = %plan.name, work_dir = %plan.working_dir.display(), "spare agent started");
        let mut agent = WarmAgent::started(
            id,
            &plan,
            &request.settings,
            &request.target.channel_id,
            print,
            String::new(),
            io,
        );
        agent.spare = true;
        self.keep_warm(agent).await;
        Ok(())
    }

    /// Retires agents idle past the limit, every few seconds, until `token` is cancelled; then
    /// retires all of them.
    pub async fn run_warm_reaper(&self, token: CancellationToken) {
        let config = self.warm.config();
        if !config.is_enabled() {
            return;
        }
        let period = (config.idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut tick = tokio::time::interval(period);
        let mut liveness = tokio::time::interval(LIVENESS_PERIOD);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {
                    for agent in self.warm.take_idle(Instant::now()) {
                        tracing::info!(channel = %agent.channel, container = %agent.name, "retiring an idle warm agent");
                        self.retire(agent).await;
                    }
                }
                _ = liveness.tick() => self.retire_dead().await,
            }
        }
        for agent in self.warm.take_all() {
            self.retire(agent).await;
        }
    }

    /// Retires idle warm agents whose containers stopped (killed, out of memory, an engine
    /// restart): they would still be listed as warm, a spare would still be offered to new
    /// threads, and their next turn would find them gone. An engine that does not answer
    /// says nothing either way, so its agents are left for the next look.
    async fn retire_dead(&self) {
        for (channel, id) in self.warm.ids() {
            let looked =
                tokio::time::timeout(LIVENESS_PERIOD, self.docker.inspect_container(&id, None))
                    .await;
            let running = match looked {
                Ok(Ok(info)) => info.state.and_then(|s| s.running).unwrap_or(false),
                Ok(Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => false,
                // No answer (or none in time): the idle timeout still applies meanwhile.
                Ok(Err(_)) | Err(_) => continue,
            };
            if !running && let Some(agent) = self.warm.take_if(&channel, &id) {
                tracing::info!(channel = %channel, container = %agent.name, "a warm agent's container stopped while idle: retiring it");
                self.retire(agent).await;
            }
        }
    }

    /// The idle warm agents, with their memory and CPU use.
    pub async fn warm_info(&self) -> Vec<WarmInfo> {
        let mut info = self.warm.info();
        let ids: HashMap<String, String> = self.warm.ids().into_iter().collect();
        let usage = self.usage(&ids.values().cloned().collect::<Vec<_>>()).await;
        for agent in &mut info {
            if let Some(found) = ids.get(&agent.channel).and_then(|id| usage.get(id)) {
                agent.usage = *found;
            }
        }
        info
    }

    /// What each container in `ids` uses (see [`crate::usage`]).
    pub async fn usage(&self, ids: &[String]) -> HashMap<String, ContainerUsage> {
        self.usage.usage(&self.docker, ids).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_plan(
        &self,
        request: &TurnRequest,
        plan: &ContainerPlan,
        prompt: &str,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
        warm_fingerprint: Option<u64>,
        session: Option<String>,
    ) -> Result<TurnOutcome, RunError> {
        let (id, io) = self
            .start_agent_container(
                plan,
                &request.settings,
                &request.target,
                warm_fingerprint.is_some(),
                request.keep_alive,
            )
            .await?;
        tracing::debug!(run_id = %request.run_id, container = %plan.name, warm = warm_fingerprint.is_some(), "container started");
        if let Some(print) = warm_fingerprint {
            match self
                .drive_warm_start(
                    &id, plan, io, request, prompt, events, cancel, print, session,
                )
                .await
            {
                Ok(outcome) => return Ok(outcome),
                Err(err) => {
                    self.finish_container(&id, plan, request.keep_alive).await;
                    return Err(err);
                }
            }
        }
        let outcome = self
            .drive(&id, plan, io, request, prompt, events, cancel)
            .await;
        self.finish_container(&id, plan, request.keep_alive).await;
        outcome
    }

    /// Creates an agent container, records it (so cleanup and status know it), and starts it
    /// attached. One that cannot start is finished as `keep_alive` says.
    async fn start_agent_container(
        &self,
        plan: &ContainerPlan,
        settings: &ContainerSettings,
        target: &ChannelTarget,
        warm: bool,
        keep_alive: Duration,
    ) -> Result<(String, AgentIo), RunError> {
        let id = self.create(plan, settings, warm).await?;
        self.registry.register(ContainerEntry {
            id: id.clone(),
            name: plan.name.clone(),
            channel_id: target.channel_id.clone(),
            kind: ContainerKind::Agent,
            status: ContainerStatus::Running,
            remove_at_ms: None,
        });
        match self.attach_and_start(&id).await {
            Ok(io) => Ok((id, io)),
            Err(err) => {
                self.finish_container(&id, plan, keep_alive).await;
                Err(err)
            }
        }
    }

    /// Stopped containers linger for `keep_alive` so their logs can be read, then go. What
    /// the agent created through its docker proxy goes now: nothing controls it any more.
    async fn finish_container(&self, id: &str, plan: &ContainerPlan, keep_alive: Duration) {
        let name = plan.name.as_str();
        self.registry.set_status(id, ContainerStatus::Stopped);
        if plan.proxy_policy.is_some() {
            self.registry.remove_proxy_owned(name).await;
        }
        if keep_alive.is_zero() {
            if let Err(err) = self.registry.remove_now(id).await {
                tracing::warn!(container = %name, error = %err, "cannot remove container");
            }
        } else {
            self.kill(id).await;
            self.registry.schedule_remove(id, keep_alive);
        }
    }

    /// The first turn of a container that will stay warm: stdin stays open after the prompt.
    #[allow(clippy::too_many_arguments)]
    async fn drive_warm_start(
        &self,
        id: &str,
        plan: &ContainerPlan,
        mut io: AgentIo,
        request: &TurnRequest,
        prompt: &str,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
        print: u64,
        session: Option<String>,
    ) -> Result<TurnOutcome, RunError> {
        if let Err(err) = io.send(prompt, false).await {
            tracing::debug!(container = %plan.name, error = %err, "stdin write failed");
        }
        let timeout = request.settings.timeout;
        let turn = match within_limits(io.read_turn(&plan.name, events), timeout, cancel).await {
            Ok(turn) => turn,
            Err(err) => {
                self.kill(id).await;
                return Err(err);
            }
        };
        match turn.result {
            Some(result) if !result.is_error => {
                let session_id = if result.session_id.is_empty() {
                    session.unwrap_or_default()
                } else {
                    result.session_id.clone()
                };
                let agent = WarmAgent::started(
                    id.to_owned(),
                    plan,
                    &request.settings,
                    &request.target.channel_id,
                    print,
                    session_id,
                    io,
                );
                let outcome = TurnOutcome {
                    result,
                    container_id: id.to_owned(),
                    container_name: plan.name.clone(),
                    recovery: Recovery::None,
                    warm: true,
                };
                self.keep_warm(agent).await;
                Ok(outcome)
            }
            Some(result) => {
                self.kill(id).await;
                Err(agent_error(result))
            }
            None => {
                let code = self.wait_exit(id).await?;
                if self.was_oom_killed(id).await {
                    return Err(RunError::OutOfMemory {
                        limit_mb: request.settings.memory_mb,
                    });
                }
                Err(RunError::Exited {
                    code,
                    stderr: io.stderr_text(),
                })
            }
        }
    }

    async fn attach_and_start(&self, id: &str) -> Result<AgentIo, RunError> {
        // Attach before start so no output is missed.
        let attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stream: true,
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|source| RunError::docker("attach_container", source))?;
        self.docker
            .start_container(id, None)
            .await
            .map_err(|source| RunError::docker("start_container", source))?;
        Ok(AgentIo::new(attached.input, attached.output))
    }

    /// Creates the container; a warm one keeps stdin open across turns.
    async fn create(
        &self,
        plan: &ContainerPlan,
        settings: &ContainerSettings,
        warm: bool,
    ) -> Result<String, RunError> {
        let memory = (settings.memory_mb > 0).then(|| {
            i64::try_from(settings.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
        });
        let cpu_period = 100_000_i64;
        // Truncation is intended: Docker takes whole microseconds of CPU time per period.
        #[allow(clippy::cast_possible_truncation)]
        let cpu_quota = (settings.cpus * cpu_period as f64) as i64;
        let mut cap_add = vec![
            // The entrypoint creates the agent user, fixes ownership and drops privileges.
            "CHOWN".to_owned(),
            "DAC_OVERRIDE".to_owned(),
            "FOWNER".to_owned(),
            "SETUID".to_owned(),
            "SETGID".to_owned(),
        ];
        if settings.gate.is_some() {
            // The gate's root supervisor reads the agent's syscall arguments from /proc/PID/mem.
            cap_add.push("SYS_PTRACE".to_owned());
            // It passes `docker stop`'s SIGTERM on to the agent, another uid.
            cap_add.push("KILL".to_owned());
            // It resolves paths (symlinks, /proc/PID/cwd) inside the agent's 0700 home.
            cap_add.push("DAC_READ_SEARCH".to_owned());
            // `loop syscallwrap` drops every other capability from its bounding set before
            // it supervises, and PR_CAPBSET_DROP needs CAP_SETPCAP.
            cap_add.push("SETPCAP".to_owned());
        }
        let host_config = HostConfig {
            binds: Some(plan.binds.clone()),
            tmpfs: (!plan.tmpfs.is_empty())
                .then(|| plan.tmpfs.clone().into_iter().collect::<HashMap<_, _>>()),
            security_opt: (!plan.security_opt.is_empty()).then(|| plan.security_opt.clone()),
            memory,
            // Equal swap and memory limits: no swap, so an OOM is an OOM.
            memory_swap: memory,
            cpu_period: Some(cpu_period),
            cpu_quota: Some(cpu_quota),
            extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_owned()]),
            runtime: settings.runtime.clone(),
            network_mode: settings.network.clone(),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(cap_add),
            pids_limit: Some(4096),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(settings.image.clone()),
            env: Some(plan.env.clone()),
            cmd: Some(plan.cmd.clone()),
            working_dir: Some(plan.working_dir.display().to_string()),
            labels: Some(plan.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            tty: Some(false),
            open_stdin: Some(true),
            stdin_once: Some(!warm),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(plan.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|source| RunError::docker("create_container", source))?;
        for file in &plan.copy_files {
            self.copy_in(&created.id, &file.host_path, &file.container_path)
                .await?;
        }
        Ok(created.id)
    }

    /// Copies one host file into the container (a tar with a single entry, extracted in the
    /// file's parent directory), so each container has its own copy.
    async fn copy_in(&self, id: &str, host: &Path, dest: &Path) -> Result<(), RunError> {
        let data = std::fs::read(host)
            .map_err(|err| RunError::Setup(format!("cannot read {}: {err}", host.display())))?;
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(RunError::Setup(format!(
                "bad copy target {}",
                dest.display()
            )));
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        let mut archive = tar::Builder::new(Vec::new());
        archive
            .append_data(&mut header, name, data.as_slice())
            .map_err(|err| RunError::Setup(format!("cannot pack {}: {err}", host.display())))?;
        let tarball = archive
            .into_inner()
            .map_err(|err| RunError::Setup(format!("cannot pack {}: {err}", host.display())))?;
        self.docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: parent.display().to_string(),
                    ..Default::default()
                }),
                bollard::body_full(tarball.into()),
            )
            .await
            .map_err(|source| RunError::docker("upload_to_container", source))
    }

    /// A cold turn: one prompt, then EOF; with StdinOnce the CLI sees its stdin close and exits
    /// after answering.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        id: &str,
        plan: &ContainerPlan,
        mut io: AgentIo,
        request: &TurnRequest,
        prompt: &str,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        if let Err(err) = io.send(prompt, true).await {
            tracing::debug!(container = %plan.name, error = %err, "stdin write failed");
        }
        let read = async {
            let turn = io.read_turn(&plan.name, events).await;
            io.drain(&plan.name).await;
            let exit = self.wait_exit(id).await;
            (turn.result, exit)
        };
        let timeout = request.settings.timeout;
        let (result, exit) = match within_limits(read, timeout, cancel).await {
            Ok(done) => done,
            Err(err) => {
                self.kill(id).await;
                return Err(err);
            }
        };

        if self.was_oom_killed(id).await {
            return Err(RunError::OutOfMemory {
                limit_mb: request.settings.memory_mb,
            });
        }
        match result {
            Some(result) if result.is_error => Err(agent_error(result)),
            Some(result) => Ok(TurnOutcome {
                result,
                container_id: id.to_owned(),
                container_name: plan.name.clone(),
                recovery: Recovery::None,
                warm: false,
            }),
            // No result: either the agent died, or the engine did and took the output with it.
            None => match exit {
                Ok(code) => Err(RunError::Exited {
                    code,
                    stderr: io.stderr_text(),
                }),
                Err(lost) => Err(lost),
            },
        }
    }

    /// The container's exit code, or [`RunError::EngineLost`] when the engine cannot be asked
    /// (it died under the turn, which is also what ended the output stream).
    async fn wait_exit(&self, id: &str) -> Result<i64, RunError> {
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => match RunError::docker("wait_container", err) {
                lost @ RunError::EngineLost { .. } => Err(lost),
                other => {
                    tracing::debug!(container = %id, error = %other, "wait failed");
                    Ok(-1)
                }
            },
            None => Ok(-1),
        }
    }

    async fn was_oom_killed(&self, id: &str) -> bool {
        match self.docker.inspect_container(id, None).await {
            Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        }
    }

    async fn kill(&self, id: &str) {
        if let Err(err) = self
            .docker
            .kill_container(id, None::<KillContainerOptions>)
            .await
        {
            tracing::debug!(container = %id, error = %err, "kill failed (already gone?)");
        }
    }
}

/// Writes the MCP config and, with the gate, the policy file, before the container starts.
/// All of them go to loop's own run directory (`{run_dir}/{name}/`), never into the project,
/// whose files the agent and strangers' repositories control.
fn write_host_files(plan: &ContainerPlan, settings: &ContainerSettings) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    let setup = |what: &str, path: &Path, err: std::io::Error| {
        RunError::Setup(format!("cannot write {what} {}: {err}", path.display()))
    };
    if let Some(dir) = plan.mcp_config_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| setup("directory", dir, e))?;
    }
    let text = serde_json::to_string_pretty(&plan.mcp_config)
        .map_err(|e| RunError::Setup(format!("cannot encode MCP config: {e}")))?;
    std::fs::write(&plan.mcp_config_path, text)
        .map_err(|e| setup("MCP config", &plan.mcp_config_path, e))?;
    // The agent (another uid) must read it through the bind mount.
    let _ = std::fs::set_permissions(
        &plan.mcp_config_path,
        std::fs::Permissions::from_mode(0o644),
    );
    if let (Some(path), Some(gate)) = (&plan.gate_policy_path, &settings.gate) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| setup("directory", dir, e))?;
        }
        std::fs::write(path, &gate.policy_json).map_err(|e| setup("gate policy", path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| setup("gate policy", path, e))?;
    }
    if let Some((path, json)) = &plan.proxy_policy {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| setup("directory", dir, e))?;
        }
        std::fs::write(path, json).map_err(|e| setup("docker proxy policy", path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| setup("docker proxy policy", path, e))?;
    }
    Ok(())
}

#[async_trait]
impl AgentRunner for DockerRunner {
    async fn warm_agents(&self) -> Vec<WarmInfo> {
        self.warm_info().await
    }

    async fn container_usage(&self, ids: &[String]) -> HashMap<String, ContainerUsage> {
        self.usage(ids).await
    }

    async fn open_shell(&self, request: ShellRequest) -> Result<OpenShell, ShellError> {
        self.open_terminal_shell(request).await
    }

    async fn resize_shell(
        &self,
        shell: &ShellHandle,
        size: TerminalSize,
    ) -> Result<(), ShellError> {
        self.resize_terminal_shell(shell, size).await
    }

    async fn close_shell(&self, shell: &ShellHandle) {
        self.close_terminal_shell(shell).await;
    }

    async fn start_spare(&self, request: SpareRequest) -> Result<(), RunError> {
        self.start_spare_agent(request).await
    }

    async fn adopt_spare(&self, spare: &str, channel_id: &str) -> Result<(), String> {
        let Some(mut agent) = self.warm.take(spare) else {
            return Err("the spare is gone".to_owned());
        };
        if !agent.spare {
            self.keep_warm(agent).await;
            return Err(format!("{spare} is a thread's agent, not a spare"));
        }
        // The CLI keeps its session in the store mounted at the start: that directory
        // becomes the thread's, so a later cold turn of the thread resumes from it.
        if let Some(from) = agent.sessions_dir.take() {
            let to = from.with_file_name(crate::naming::sanitize(channel_id));
            // A new thread's store is absent, or empty (made by a turn that never ran).
            let _ = std::fs::remove_dir(&to);
            if let Err(err) = std::fs::rename(&from, &to) {
                tracing::warn!(from = %from.display(), to = %to.display(), error = %err, "cannot hand a spare's session store to its thread");
                self.retire(agent).await;
                return Err(format!("its session store cannot move: {err}"));
            }
            agent.sessions_dir = Some(to);
        }
        tracing::info!(spare = %spare, channel = %channel_id, container = %agent.name, "a new thread adopted a spare agent");
        agent.spare = false;
        agent.channel = channel_id.to_owned();
        agent.last_used = Instant::now();
        self.keep_warm(agent).await;
        Ok(())
    }

    async fn has_spare(&self, spare: &str) -> bool {
        self.warm.has_spare(spare)
    }

    async fn retire_spare(&self, spare: &str) {
        if let Some(agent) = self.warm.take(spare) {
            tracing::info!(spare = %spare, container = %agent.name, "retiring a stale spare agent");
            self.retire(agent).await;
        }
    }

    async fn engine_ready(&self) -> Result<(), RunError> {
        self.docker
            .ping()
            .await
            .map_err(|source| RunError::docker("ping", source))?;
        // What the dead engine could not remove (the lost turn's container) goes now.
        let removed = self.registry.retry_failed_removals().await;
        if removed > 0 {
            tracing::info!(removed, "removed containers the lost engine left behind");
        }
        Ok(())
    }

    async fn plan_project_image(
        &self,
        spec: &ProjectImageSpec<'_>,
    ) -> Result<ImagePlan, BuildError> {
        crate::project_image::plan(&self.docker, spec).await
    }

    async fn latest_project_image(&self, project: &Path) -> Result<Option<String>, BuildError> {
        crate::project_image::latest(&self.docker, project).await
    }

    async fn build_project_image(
        &self,
        spec: &ProjectImageSpec<'_>,
        on_line: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<ProjectImage, BuildError> {
        crate::project_image::ensure(&self.docker, spec, on_line).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %request.run_id, channel = %request.target.channel_id))]
    async fn run_turn(
        &self,
        request: TurnRequest,
        events: Option<EventSender>,
        cancel: CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        let session = request.session_id.clone();
        let first = self
            .run_once(
                &request,
                &request.prompt,
                session.clone(),
                events.as_ref(),
                &cancel,
            )
            .await;
        let error = match first {
            Ok(outcome) => return Ok(outcome),
            Err(error) => error,
        };
        let Some(session_id) = session else {
            return Err(error);
        };
        if error.is_prompt_too_long() {
            tracing::info!("prompt too long: compacting the session and retrying");
            let compacted = self
                .run_once(&request, "/compact", Some(session_id), None, &cancel)
                .await?;
            let new_session = Some(compacted.result.session_id.clone()).filter(|s| !s.is_empty());
            let mut outcome = self
                .run_once(
                    &request,
                    &request.prompt,
                    new_session,
                    events.as_ref(),
                    &cancel,
                )
                .await?;
            outcome.recovery = Recovery::Compacted;
            return Ok(outcome);
        }
        if error.is_retryable() {
            // The session itself may be what fails (a broken transcript, a history the API
            // refuses), and resuming it would carry the failed turn along: retry once in a
            // fresh session with only the newest message.
            tracing::info!(error = %error, session = %session_id, "turn failed: retrying once with the latest message in a fresh session");
            return match self
                .run_once(
                    &request,
                    &request.latest_message,
                    None,
                    events.as_ref(),
                    &cancel,
                )
                .await
            {
                Ok(mut outcome) => {
                    outcome.recovery = Recovery::RetriedLatest;
                    Ok(outcome)
                }
                // The engine is gone now: that, not the first failure, is what to act on.
                Err(retry) if retry.is_engine_lost() => Err(retry),
                Err(_) => Err(error),
            };
        }
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors_for_retry() {
        let agent = |message: &str| RunError::Agent {
            message: message.to_owned(),
            result: Box::default(),
        };
        assert!(agent("Prompt is too long").is_prompt_too_long());
        assert!(!agent("overloaded").is_prompt_too_long());
        assert!(agent("overloaded").is_retryable());
        assert!(!RunError::TimedOut(Duration::from_secs(1)).is_retryable());
        assert!(!RunError::Cancelled.is_retryable());
        assert!(!RunError::OutOfMemory { limit_mb: 1 }.is_retryable());
        let refused = || bollard::errors::Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let lost = RunError::docker("create_container", refused());
        assert!(lost.is_engine_lost());
        assert!(
            !lost.is_retryable(),
            "a lost engine is not retried in a fresh session"
        );
        let refused_by_engine = RunError::docker(
            "create_container",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "name in use".into(),
            },
        );
        assert!(!refused_by_engine.is_engine_lost());
    }
}
