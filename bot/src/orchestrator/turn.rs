//! One turn of one channel: claim its waiting messages, run the agent, record the outcome and
//! its answer atomically, deliver the answer.

use std::time::{Duration, Instant};

use loop_adapter::ChannelKey;
use loop_runner::spec::{ChannelTarget, DockerProxySpec, GateSpec};
use loop_runner::{RunError, TurnOutcome, TurnRequest};
use tokio_util::sync::CancellationToken;

use super::workspace::{check_not_loop_dir, container_settings, ensure_default_work_dir};
use super::{Orchestrator, OrchestratorError, RunEvent, progress};
use crate::store::{InboxMessage, OutboxKind, RunFinish, RunOrigin, RunStatus};

/// Events buffered between the runner and the progress display.
const EVENT_BUFFER: usize = 256;
/// How many times messages are run again after the Docker engine died under their turn (or
/// the daemon did). Past that, an engine that keeps dying is reported as the turn's failure.
const MAX_INTERRUPTIONS: i32 = 3;

/// The run id as shown in a channel: its first block.
pub(super) fn short_run_id(run_id: &str) -> &str {
    run_id.split('-').next().unwrap_or(run_id)
}
/// How long a finished turn waits for its answer to be posted before it lets the channel go
/// on (the answer stays in the outbox either way).
const ANSWER_WAIT: Duration = Duration::from_secs(30);

impl Orchestrator {
    #[tracing::instrument(skip(self, cancel), fields(channel = %channel, run_id = %run_id))]
    pub(super) async fn run_turn(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        cancel: CancellationToken,
    ) -> Result<(), OrchestratorError> {
        let store = &self.inner.store;
        let key = channel.to_string();
        let messages = store.claim_pending(&key, run_id).await?;
        if messages.is_empty() {
            return Ok(());
        }
        let prompt = build_prompt(&messages);
        let latest = messages
            .iter()
            .rev()
            .find(|m| m.triggers)
            .map_or_else(|| prompt.clone(), |m| m.text.clone());

        let work_dir = match store.channel_work_dir(channel).await? {
            Some(dir) => {
                let dir = std::path::PathBuf::from(dir);
                // A directory chosen before this check existed may still hold loop's own.
                if let Err(err) = check_not_loop_dir(&self.inner.config, &dir) {
                    return self
                        .fail_early(
                            channel,
                            run_id,
                            &prompt,
                            &format!("{err}; set another with /loop dir"),
                        )
                        .await;
                }
                dir
            }
            None => match ensure_default_work_dir(&self.inner.config, channel) {
                Ok(dir) => dir,
                Err(err) => {
                    return self
                        .fail_early(
                            channel,
                            run_id,
                            &prompt,
                            &format!("cannot create the work directory: {err}"),
                        )
                        .await;
                }
            },
        };
        let session = store
            .active_session(channel, &work_dir.display().to_string())
            .await?;
        store
            .start_run(
                run_id,
                &key,
                &session.id,
                crate::scheduler::run_origin(&messages),
                &prompt,
            )
            .await?;

        let trusted = self.trusted_version(&work_dir).await?;
        let project = match self.inner.config.for_project(&work_dir, trusted.as_ref()) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!(channel = %channel, "{warning}");
                }
                // The turn still runs, on the trusted values; the channel hears why once.
                self.announce_untrusted(channel, &work_dir, &loaded, trusted.as_ref())
                    .await?;
                loaded.config
            }
            Err(err) => {
                let reply = format!("⚠️ The project config is broken, so nothing ran: {err}");
                return self.refuse(channel, run_id, &err.to_string(), reply).await;
            }
        };
        if let Some(budget) = project.channel_budget_usd {
            let spent = store.channel_cost(&key).await?;
            if spent >= budget {
                let reply = format!(
                    "💸 This channel has used its budget (${spent:.2} of ${budget:.2}); raise `channel_budget_usd` to continue."
                );
                return self
                    .refuse(channel, run_id, "budget exhausted", reply)
                    .await;
            }
        }

        // gVisor (runsc) does not implement seccomp user notification, which the gate is built
        // on: the agent would not start. Say so instead of silently dropping the gate.
        if project.gates.agentgate.enabled
            && project.container_runtime.as_deref() == Some(crate::gate::GVISOR_RUNTIME)
        {
            let reply = "🛡️ The security gate cannot run under gVisor (`container_runtime: \"runsc\"` has no seccomp user notification). Use runc with the gate, or set `gates.agentgate.enabled: false` to rely on gVisor's own isolation.".to_owned();
            return self
                .refuse(channel, run_id, "gate unsupported under gVisor", reply)
                .await;
        }
        // The gate's policy is checked before anything starts: a broken rule is a clear message
        // here rather than a container that refuses to run the agent.
        let docker_proxy = project.gates.docker_proxy.enabled;
        let gate_policy = if project.gates.agentgate.enabled {
            match crate::gate::policy_json(&project.gates.agentgate, docker_proxy) {
                Ok(policy) => Some(policy),
                Err(err) => {
                    let reply = format!(
                        "🛡️ The gate policy is invalid, so nothing ran: {err}. Fix `gates.agentgate` in the config."
                    );
                    return self.refuse(channel, run_id, &err.to_string(), reply).await;
                }
            }
        } else {
            None
        };
        // The same for the docker proxy's policy, and the host socket it forwards to.
        let proxy = if docker_proxy {
            let global = &self.inner.config;
            let facts = crate::gate::dockerproxy::ProxyFacts {
                agentgate_default: project.gates.agentgate.default_decision,
                protected_images: vec![
                    global.container_image.clone(),
                    project.container_image.clone(),
                    global.browser.chrome_image.clone(),
                    project.browser.chrome_image.clone(),
                ],
                network: self.inner.facts.network.clone(),
            };
            let policy = match crate::gate::dockerproxy::policy_json(
                &project.gates.docker_proxy,
                &facts,
            ) {
                Ok(policy) => policy,
                Err(err) => {
                    let reply = format!(
                        "🐳 The docker proxy policy is invalid, so nothing ran: {err}. Fix `gates.docker_proxy` in the config."
                    );
                    return self.refuse(channel, run_id, &err.to_string(), reply).await;
                }
            };
            let docker_host = std::env::var("DOCKER_HOST").ok();
            let Some(socket) = loop_runner::docker::local_socket_path(docker_host.as_deref())
            else {
                let reply = format!(
                    "🐳 The docker proxy needs a local Docker socket to mount, and DOCKER_HOST is `{}`, so nothing ran. Unset DOCKER_HOST or set `gates.docker_proxy.enabled: false`.",
                    docker_host.unwrap_or_default()
                );
                return self
                    .refuse(
                        channel,
                        run_id,
                        "docker proxy without a local socket",
                        reply,
                    )
                    .await;
            };
            Some((policy, socket))
        } else {
            None
        };

        let _ = self.inner.events.send(RunEvent::Started {
            run_id: run_id.to_owned(),
            channel: key.clone(),
        });
        // A new session starts with the best memories, when `memory.inject_top_k` asks for it.
        let prompt = match self.memory() {
            Some(memory)
                if project.memory.inject_top_k > 0 && session.claude_session_id.is_none() =>
            {
                let scopes =
                    crate::memory::visible_scopes(channel, Some(&work_dir.display().to_string()));
                match memory
                    .search(&scopes, &latest, project.memory.inject_top_k)
                    .await
                {
                    Ok(hits) => match crate::memory::context_block(&hits) {
                        Some(block) => format!("{block}\n{prompt}"),
                        None => prompt,
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "memory search for the first prompt failed");
                        prompt
                    }
                }
            }
            _ => prompt,
        };
        let indexed_prompt = build_prompt(&messages);
        let mut request = TurnRequest {
            run_id: run_id.to_owned(),
            target: ChannelTarget {
                channel_id: channel.slug(),
                work_dir: work_dir.clone(),
                custom_dir: !work_dir.starts_with(&self.inner.config.loop_dir),
                parent_dir: None,
                author_id: messages
                    .iter()
                    .rev()
                    .find(|m| m.triggers)
                    .map(|m| m.author_id.clone()),
            },
            settings: container_settings(&project, &self.inner.facts, &work_dir),
            prompt,
            latest_message: latest,
            session_id: session.claude_session_id.clone(),
            keep_alive: Duration::from_secs(project.container_keep_alive_sec),
            warm: project.warm_idle_sec > 0,
        };

        let started = Instant::now();
        let adapter = self.adapter(channel.platform)?;
        // The built-in MCP server's host API token (task tools). Not the gate's token, which
        // the agent must never see; revoked with it when the container goes (below).
        request.settings.api_token = Some(self.inner.gate.api_token(&key));
        if gate_policy.is_some() || proxy.is_some() {
            // Keyed by the channel (see `crate::gate`): a warm agent keeps the token it was
            // started with; the token is revoked below when no warm agent stays behind. The
            // gate and the docker proxy share it.
            let token = self.inner.gate.begin_turn(&key, run_id);
            let timeout = self.inner.config.gates.agentgate.approval_timeout_sec;
            request.settings.envs.insert(
                loop_wire::container::env::GATE_APPROVAL_TIMEOUT_SEC.to_owned(),
                serde_json::Value::String(timeout.to_string()),
            );
            if self.inner.config.gates.audit.verbose {
                request.settings.envs.insert(
                    loop_wire::container::env::GATE_AUDIT_VERBOSE.to_owned(),
                    serde_json::Value::String("1".to_owned()),
                );
            }
            request.settings.envs.insert(
                loop_wire::container::env::GATE_MAX_PENDING.to_owned(),
                serde_json::Value::String(self.inner.config.gates.rate_limits.pending.to_string()),
            );
            let policy_dir = self.inner.config.loop_dir.join("run");
            if let Some((policy_json, host_socket)) = proxy {
                request.settings.docker_proxy = Some(DockerProxySpec {
                    policy_json,
                    host_socket,
                    policy_dir: policy_dir.clone(),
                    token: token.clone(),
                });
            }
            if let Some(policy_json) = gate_policy {
                request.settings.gate = Some(GateSpec {
                    policy_json,
                    token,
                    policy_dir,
                });
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let events = self.inner.events.clone();
        let progress_channel = channel.clone();
        let (progress_run, progress_key) = (run_id.to_owned(), key.clone());
        let progress_store = store.clone();
        let progress_adapter = adapter.clone();
        let progress = tokio::spawn(async move {
            let status_id =
                progress::post_status(progress_adapter.as_ref(), &progress_channel).await;
            // Stored at once: if this daemon dies mid-turn, the next start edits it.
            if let Some(id) = &status_id
                && let Err(err) = progress_store
                    .set_run_status_message(&progress_run, id)
                    .await
            {
                tracing::warn!(error = %err, "cannot record the status message");
            }
            progress::track(
                progress_adapter,
                progress_channel,
                status_id,
                rx,
                started,
                move |line| {
                    let _ = events.send(RunEvent::Progress {
                        run_id: progress_run.clone(),
                        channel: progress_key.clone(),
                        status: line.to_owned(),
                    });
                },
            )
            .await
        });
        let result = self
            .inner
            .runner
            .run_turn(request, Some(tx), cancel.clone())
            .await;
        // The turn is over: its waiting approval prompts resolve as deny, and unless the
        // container stays as the thread's warm agent, its token stops working.
        match &result {
            Ok(outcome) if outcome.warm => self.inner.gate.turn_ended_warm(&key),
            _ => self.inner.gate.container_gone(&key),
        }
        let (status_id, state) = progress.await.unwrap_or_default();

        let elapsed = started.elapsed().as_secs();
        let (status, finish, reply, summary) = match result {
            Ok(outcome) => {
                if !outcome.result.session_id.is_empty() {
                    store
                        .set_claude_session(&session.id, &outcome.result.session_id)
                        .await?;
                }
                let summary = format!(
                    "✅ Done in {elapsed}s · {} tool{} · ${:.4}",
                    state.tools_used,
                    if state.tools_used == 1 { "" } else { "s" },
                    outcome.result.total_cost_usd
                );
                let answer = if outcome.result.text.trim().is_empty() {
                    "(the agent finished without a written answer)".to_owned()
                } else {
                    outcome.result.text.clone()
                };
                (
                    RunStatus::Succeeded,
                    finish_from(&outcome),
                    Some(answer),
                    summary,
                )
            }
            Err(RunError::Cancelled) if self.inner.draining.is_cancelled() => {
                // The daemon is stopping: leave the messages for the next start.
                store.recover_interrupted_runs().await?;
                if let Some(id) = status_id {
                    let _ = adapter.edit(channel, &id, "⏸️ Paused: loop is restarting; this message will be answered after the restart.").await;
                }
                return Ok(());
            }
            Err(err)
                if err.is_engine_lost()
                    && messages.iter().all(|m| m.attempts < MAX_INTERRUPTIONS) =>
            {
                return self
                    .requeue_after_engine_loss(channel, run_id, &err, status_id)
                    .await;
            }
            Err(err) => {
                let status = match err {
                    RunError::TimedOut(_) => RunStatus::TimedOut,
                    RunError::Cancelled => RunStatus::Cancelled,
                    _ => RunStatus::Failed,
                };
                let short = short_run_id(run_id);
                let reply = match &err {
                    RunError::Cancelled => format!("🛑 Stopped (run `{short}`)."),
                    other => format!("❌ {other} (run `{short}`)"),
                };
                let mut finish = RunFinish {
                    error: Some(err.to_string()),
                    ..Default::default()
                };
                if let RunError::Agent { result, .. } = &err {
                    finish.claude_session_id = Some(result.session_id.clone());
                    finish.cost_usd = result.total_cost_usd;
                    finish.input_tokens =
                        i64::try_from(result.usage.input_tokens).unwrap_or(i64::MAX);
                    finish.output_tokens =
                        i64::try_from(result.usage.output_tokens).unwrap_or(i64::MAX);
                }
                let summary = format!("❌ Failed after {elapsed}s");
                (status, finish, Some(reply), summary)
            }
        };
        if let Some(id) = &status_id
            && let Err(err) = adapter.edit(channel, id, &summary).await
        {
            tracing::debug!(error = %err, "final status edit failed");
        }
        let memory_job = match (self.memory(), status == RunStatus::Succeeded, &reply) {
            (Some(memory), true, Some(answer)) => Some((memory.clone(), answer.clone())),
            _ => None,
        };
        let finished = self.finish(channel, run_id, status, finish, reply).await;
        // The finished turn goes into the channel's memory, and the project's docs are
        // re-indexed when due; neither delays the answer.
        if let Some((memory, answer)) = memory_job {
            let (key, run_id, work_dir) = (key.clone(), run_id.to_owned(), work_dir.clone());
            let interval = Duration::from_secs(project.memory.reindex_interval_sec);
            self.inner.tracker.spawn(async move {
                if let Err(err) = memory
                    .index_turn(&key, &run_id, &indexed_prompt, &answer)
                    .await
                {
                    tracing::warn!(error = %err, run_id = %run_id, "cannot index the turn in memory");
                }
                if let Err(err) = memory.reindex_docs_if_due(&work_dir, interval).await {
                    tracing::warn!(error = %err, "cannot re-index the project's docs");
                }
            });
        }
        // Once the answer is out, the messages it answered show how the turn ended (Slack: ✅
        // or ❌ reactions).
        let mark = if status == RunStatus::Succeeded {
            loop_adapter::TurnMark::Succeeded
        } else {
            loop_adapter::TurnMark::Failed
        };
        for message in messages.iter().filter(|m| m.triggers) {
            if let Err(err) = adapter
                .mark(channel, &message.platform_message_id, mark)
                .await
            {
                tracing::debug!(error = %err, "cannot mark a message with the turn's outcome");
            }
        }
        finished
    }

    /// The Docker engine died under the turn: not the agent's failure. The run ends
    /// `interrupted` and its messages go back in the queue, the status message says so in one
    /// line, and turns wait for the engine; the next run resumes the channel's session.
    async fn requeue_after_engine_loss(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        err: &RunError,
        status_id: Option<String>,
    ) -> Result<(), OrchestratorError> {
        // The whole chain: the cause ("Connection refused") is at its end.
        tracing::warn!(error = %crate::error_chain(err), "the Docker engine was lost during the turn: its messages are re-queued and run again once the engine is back");
        // First, so that no other turn starts against the dead engine meanwhile.
        self.engine_lost();
        self.inner
            .store
            .requeue_run(run_id, &err.to_string())
            .await?;
        let _ = self.inner.events.send(RunEvent::Finished {
            run_id: run_id.to_owned(),
            channel: channel.to_string(),
            status: RunStatus::Interrupted.as_str().to_owned(),
        });
        let line = format!(
            "⚠️ The Docker engine stopped during this turn (run `{}`): it runs again, resuming the session, once Docker is back.",
            short_run_id(run_id)
        );
        let edited = match &status_id {
            Some(id) => self
                .adapter(channel.platform)?
                .edit(channel, id, &line)
                .await
                .map_err(|err| tracing::debug!(error = %err, "cannot edit the status message"))
                .is_ok(),
            None => false,
        };
        if !edited {
            self.notify(channel, &line).await?;
        }
        Ok(())
    }

    /// Records the end of a run with its reply in one transaction, then waits (a bounded
    /// while) for the deliverer to post the reply, so the channel's next turn and the marks on
    /// the messages come after the answer.
    async fn finish(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        status: RunStatus,
        finish: RunFinish,
        reply: Option<String>,
    ) -> Result<(), OrchestratorError> {
        let kind = if status == RunStatus::Succeeded {
            OutboxKind::Answer
        } else {
            OutboxKind::Notice
        };
        let outbox_id = self
            .inner
            .store
            .finish_run(
                run_id,
                &channel.to_string(),
                status,
                finish,
                reply.map(|r| (kind, r)),
            )
            .await?;
        tracing::info!(status = status.as_str(), "run finished");
        let _ = self.inner.events.send(RunEvent::Finished {
            run_id: run_id.to_owned(),
            channel: channel.to_string(),
            status: status.as_str().to_owned(),
        });
        if let Some(id) = outbox_id {
            self.deliver_soon();
            if !self.wait_delivered(id, ANSWER_WAIT).await {
                tracing::warn!(outbox_id = id, "the answer is not out yet; it stays queued");
            }
        }
        Ok(())
    }

    /// A started run that must not go on: recorded as failed, `reply` tells the channel why.
    async fn refuse(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        error: &str,
        reply: String,
    ) -> Result<(), OrchestratorError> {
        let finish = RunFinish {
            error: Some(error.to_owned()),
            ..Default::default()
        };
        self.finish(channel, run_id, RunStatus::Failed, finish, Some(reply))
            .await
    }

    /// A turn that cannot even start: recorded as failed with a reason the user sees.
    async fn fail_early(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        prompt: &str,
        reason: &str,
    ) -> Result<(), OrchestratorError> {
        self.inner
            .store
            .start_run(run_id, &channel.to_string(), "", RunOrigin::Chat, prompt)
            .await?;
        self.refuse(channel, run_id, reason, format!("⚠️ {reason}"))
            .await
    }
}

fn finish_from(outcome: &TurnOutcome) -> RunFinish {
    let usage = outcome.result.usage;
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    RunFinish {
        answer: Some(outcome.result.text.clone()),
        error: None,
        claude_session_id: Some(outcome.result.session_id.clone()),
        container_id: Some(outcome.container_id.clone()),
        input_tokens: to_i64(usage.input_tokens),
        output_tokens: to_i64(usage.output_tokens),
        cache_read_tokens: to_i64(usage.cache_read_input_tokens),
        cache_creation_tokens: to_i64(usage.cache_creation_input_tokens),
        cost_usd: outcome.result.total_cost_usd,
        num_turns: i32::try_from(outcome.result.num_turns).unwrap_or(i32::MAX),
    }
}

/// One message is sent as it is. Several (messages that arrived during the previous turn, and
/// channel chatter kept as context) are sent together, each with its author.
pub fn build_prompt(messages: &[InboxMessage]) -> String {
    if let [only] = messages {
        return only.text.clone();
    }
    let mut prompt = String::from("Several messages arrived since your last turn, oldest first:\n");
    for message in messages {
        let marker = if message.triggers {
            ""
        } else {
            " (context, not addressed to you)"
        };
        prompt.push_str(&format!(
            "\n[{}]{marker}: {}\n",
            message.author_name, message.text
        ));
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InboxStatus;

    fn msg(author: &str, text: &str, triggers: bool) -> InboxMessage {
        InboxMessage {
            id: 1,
            platform_message_id: "m".into(),
            channel_key: "local:c".into(),
            author_id: "u".into(),
            author_name: author.into(),
            text: text.into(),
            triggers,
            status: InboxStatus::Claimed,
            run_id: None,
            attempts: 0,
        }
    }

    #[test]
    fn prompts_batch_messages_with_authors() {
        assert_eq!(build_prompt(&[msg("alice", "fix it", true)]), "fix it");
        let prompt = build_prompt(&[
            msg("bob", "the build is red", false),
            msg("alice", "fix it", true),
        ]);
        assert!(prompt.contains("[bob] (context, not addressed to you): the build is red"));
        assert!(prompt.contains("[alice]: fix it"));
        assert!(prompt.find("bob").expect("bob") < prompt.find("alice").expect("alice"));
    }
}
