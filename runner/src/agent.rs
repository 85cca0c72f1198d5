//! One agent turn in a fresh container: the [`AgentRunner`] trait and its Docker backend.
//!
//! The trait is the seam for other backends (Kubernetes, a remote runner, warm containers):
//! the orchestrator only ever sees [`TurnRequest`] in, [`AgentEvent`]s along the way, and a
//! [`TurnOutcome`] or [`RunError`] out.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, UploadToContainerOptions,
    WaitContainerOptions,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{AgentEvent, Line, LineSplitter, TurnResult, decode_line, user_turn_line};
use crate::registry::{ContainerEntry, ContainerRegistry, ContainerStatus};
use crate::spec::{
    ChannelTarget, ClaudeInvocation, ContainerKind, ContainerPlan, ContainerSettings,
    plan_container,
};

/// How much of the container's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;
/// The CLI's wording when the conversation no longer fits the model's context.
const PROMPT_TOO_LONG: &str = "prompt is too long";

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
}

/// A finished turn.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub result: TurnResult,
    pub container_id: String,
    pub container_name: String,
    /// How the turn got its answer.
    pub recovery: Recovery,
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
    #[error("docker {call} failed: {source}")]
    Docker {
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

/// Where progress events go. A full channel drops progress, never the result.
pub type EventSender = mpsc::Sender<AgentEvent>;

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
}

/// Runs each turn in a fresh Docker container.
#[derive(Clone)]
pub struct DockerRunner {
    docker: Docker,
    registry: ContainerRegistry,
}

impl DockerRunner {
    pub fn new(registry: ContainerRegistry) -> DockerRunner {
        DockerRunner {
            docker: registry.docker().clone(),
            registry,
        }
    }

    pub fn registry(&self) -> &ContainerRegistry {
        &self.registry
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
        let id = self.create(&plan, settings).await?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|source| RunError::Docker {
                call: "start_container",
                source,
            })?;
        Ok(self.registry.register(ContainerEntry {
            id,
            name: plan.name,
            channel_id: target.channel_id.clone(),
            kind: ContainerKind::Shell,
            status: ContainerStatus::Running,
            remove_at_ms: None,
        }))
    }

    /// One attempt: create, copy, attach, start, write the prompt, read events, wait.
    async fn run_once(
        &self,
        request: &TurnRequest,
        prompt: &str,
        session: Option<String>,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        let invocation = ClaudeInvocation {
            resume_session: session,
        };
        let plan = plan_container(
            &request.settings,
            &request.target,
            ContainerKind::Agent,
            &invocation,
        );
        write_host_files(&plan, &request.settings)?;
        let result = self.run_plan(request, &plan, prompt, events, cancel).await;
        if !request.settings.keep_mcp_configs {
            let _ = std::fs::remove_file(&plan.mcp_config_path);
        }
        result
    }

    async fn run_plan(
        &self,
        request: &TurnRequest,
        plan: &ContainerPlan,
        prompt: &str,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        let id = self.create(plan, &request.settings).await?;
        self.registry.register(ContainerEntry {
            id: id.clone(),
            name: plan.name.clone(),
            channel_id: request.target.channel_id.clone(),
            kind: ContainerKind::Agent,
            status: ContainerStatus::Running,
            remove_at_ms: None,
        });
        tracing::debug!(run_id = %request.run_id, container = %plan.name, "container created");
        let outcome = self.drive(&id, plan, request, prompt, events, cancel).await;
        // Stopped containers linger for `keep_alive` so their logs can be read, then go.
        self.registry.set_status(&id, ContainerStatus::Stopped);
        if request.keep_alive.is_zero() {
            if let Err(err) = self.registry.remove_now(&id).await {
                tracing::warn!(container = %plan.name, error = %err, "cannot remove container");
            }
        } else {
            self.registry.schedule_remove(&id, request.keep_alive);
        }
        outcome
    }

    async fn create(
        &self,
        plan: &ContainerPlan,
        settings: &ContainerSettings,
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
            cap_add.push("KILL".to_owned());
        }
        let host_config = HostConfig {
            binds: Some(plan.binds.clone()),
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
            labels: Some(plan.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            tty: Some(false),
            open_stdin: Some(true),
            stdin_once: Some(true),
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
            .map_err(|source| RunError::Docker {
                call: "create_container",
                source,
            })?;
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
            .map_err(|source| RunError::Docker {
                call: "upload_to_container",
                source,
            })
    }

    async fn drive(
        &self,
        id: &str,
        plan: &ContainerPlan,
        request: &TurnRequest,
        prompt: &str,
        events: Option<&EventSender>,
        cancel: &CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
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
            .map_err(|source| RunError::Docker {
                call: "attach_container",
                source,
            })?;
        self.docker
            .start_container(id, None)
            .await
            .map_err(|source| RunError::Docker {
                call: "start_container",
                source,
            })?;
        let mut input = attached.input;
        let mut output = attached.output;
        // One user turn, then EOF: with StdinOnce the CLI sees its stdin close and exits after
        // answering.
        let written = async {
            input.write_all(user_turn_line(prompt).as_bytes()).await?;
            input.flush().await?;
            input.shutdown().await
        };
        if let Err(err) = written.await {
            tracing::debug!(container = %plan.name, error = %err, "stdin write failed");
        }

        let read = async {
            let mut splitter = LineSplitter::default();
            let mut stderr = Vec::<u8>::new();
            let mut result: Option<TurnResult> = None;
            let handle_line = |line: Line, result: &mut Option<TurnResult>| match line {
                Line::Oversized => {
                    tracing::warn!(container = %plan.name, "skipping an event line over the size limit");
                }
                Line::Complete(text) => match decode_line(&text) {
                    Ok(decoded) => {
                        for event in decoded {
                            if let AgentEvent::Result(r) = &event {
                                *result = Some(r.clone());
                            }
                            if let Some(events) = events {
                                let _ = events.try_send(event);
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(container = %plan.name, error = %err, "skipping a malformed event line");
                    }
                },
            };
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        for line in splitter.push(&message) {
                            handle_line(line, &mut result);
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        stderr.extend_from_slice(&message);
                        if stderr.len() > STDERR_TAIL_BYTES {
                            let cut = stderr.len() - STDERR_TAIL_BYTES;
                            stderr.drain(..cut);
                        }
                    }
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(err) => {
                        tracing::debug!(container = %plan.name, error = %err, "output stream ended");
                        break;
                    }
                }
            }
            if let Some(line) = splitter.finish() {
                handle_line(line, &mut result);
            }
            let code = self.wait_exit(id).await;
            (result, code, String::from_utf8_lossy(&stderr).into_owned())
        };

        let timeout = request.settings.timeout;
        let (result, code, stderr) = tokio::select! {
            finished = tokio::time::timeout(timeout, read) => match finished {
                Ok(done) => done,
                Err(_) => {
                    self.kill(id).await;
                    return Err(RunError::TimedOut(timeout));
                }
            },
            _ = cancel.cancelled() => {
                self.kill(id).await;
                return Err(RunError::Cancelled);
            }
        };

        if self.was_oom_killed(id).await {
            return Err(RunError::OutOfMemory {
                limit_mb: request.settings.memory_mb,
            });
        }
        match result {
            Some(result) if result.is_error => Err(RunError::Agent {
                message: if result.text.is_empty() {
                    result.subtype.clone()
                } else {
                    result.text.clone()
                },
                result: Box::new(result),
            }),
            Some(result) => Ok(TurnOutcome {
                result,
                container_id: id.to_owned(),
                container_name: plan.name.clone(),
                recovery: Recovery::None,
            }),
            None => Err(RunError::Exited { code, stderr }),
        }
    }

    async fn wait_exit(&self, id: &str) -> i64 {
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(response)) => response.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(err)) => {
                tracing::debug!(container = %id, error = %err, "wait failed");
                -1
            }
            None => -1,
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
    Ok(())
}

#[async_trait]
impl AgentRunner for DockerRunner {
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
    }
}
