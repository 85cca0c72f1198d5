//! One turn of one channel: claim its waiting messages, run the agent, record the outcome and
//! its answer atomically, deliver the answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loop_adapter::{Adapter, ChannelKey};
use loop_runner::spec::ChannelTarget;
use loop_runner::{RunError, TurnOutcome, TurnRequest};
use tokio_util::sync::CancellationToken;

use super::environment::TurnEnvironment;
use super::gate_setup::plan_gate;
use super::workspace::{check_not_loop_dir, container_settings, ensure_default_work_dir};
use super::{Orchestrator, OrchestratorError, ProgressState, RunEvent, progress, short_run_id};
use crate::branches::ThreadWorktree;
use crate::config::{Config, ConfigError};
use loop_store::{InboxMessage, OutboxKind, RunFinish, RunOrigin, RunStatus, SessionRecord};

/// Events buffered between the runner and the progress display.
const EVENT_BUFFER: usize = 256;
/// How many times messages are run again after the Docker engine died under their turn (or
/// the daemon did). Past that, an engine that keeps dying is reported as the turn's failure.
const MAX_INTERRUPTIONS: i32 = 3;

/// How long a finished turn waits for its answer to be posted before it lets the channel go
/// on (the answer stays in the outbox either way).
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// A claimed turn that may run: its messages, where, in which session, under which config.
struct PreparedTurn {
    messages: Vec<InboxMessage>,
    /// The messages as one prompt, without memories (what the channel's memory indexes).
    prompt: String,
    /// The newest message addressed to the agent: what a retry sends.
    latest: String,
    /// The channel's directory: the project (its config, its memory).
    project_dir: PathBuf,
    /// Where the agent works: the thread's worktree when the project is a git repository,
    /// else the project directory itself.
    work_dir: PathBuf,
    /// The thread's branch and worktree, when it has one.
    worktree: Option<ThreadWorktree>,
    /// The status message's first line (the thread's branch), kept for the whole turn.
    header: Option<String>,
    session: SessionRecord,
    /// The global config with the project's file layered on (its trusted values only).
    project: Config,
}

/// What a turn's agent starts with: the runner's request, the image it needs (maybe built
/// first) and the status message's first state.
struct Launch {
    request: TurnRequest,
    environment: TurnEnvironment,
    initial: ProgressState,
}

/// What running the agent left: its result, and the status message that showed its progress.
struct Ran {
    result: Result<TurnOutcome, RunError>,
    status_id: Option<String>,
    state: ProgressState,
    elapsed_sec: u64,
}

/// How a finished turn is recorded and shown.
struct Verdict {
    status: RunStatus,
    finish: RunFinish,
    reply: Option<String>,
    /// The status message's last line.
    summary: String,
}

impl Orchestrator {
    /// Prepares the turn, checks its gate, runs the agent and records what came of it. Each
    /// step may end the turn early; the refusals among them are recorded and told to the
    /// channel.
    #[tracing::instrument(skip(self, cancel), fields(channel = %channel, run_id = %run_id))]
    pub(super) async fn run_turn(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        cancel: CancellationToken,
    ) -> Result<(), OrchestratorError> {
        let Some(turn) = self.prepare_turn(channel, run_id).await? else {
            return Ok(());
        };
        let environment = match self
            .turn_environment(channel, &turn.project_dir, &turn.work_dir, &turn.project)
            .await?
        {
            Ok(environment) => environment,
            Err(reply) => return self.refuse(channel, run_id, &reply, reply.clone()).await,
        };
        let gate = match plan_gate(
            &self.inner.config,
            &turn.project,
            &self.inner.facts,
            &environment.protected_images,
        ) {
            Ok(gate) => gate,
            Err(refusal) => {
                return self
                    .refuse(channel, run_id, &refusal.error, refusal.reply)
                    .await;
            }
        };
        let _ = self.inner.events.send(RunEvent::Started {
            run_id: run_id.to_owned(),
            channel: channel.to_string(),
        });
        let mut request = self.turn_request(channel, run_id, &turn).await;
        let adapter = self.adapter(channel.platform)?;
        self.arm_gate(&channel.to_string(), run_id, gate, &mut request.settings);
        let launch = Launch {
            request,
            environment,
            initial: ProgressState::with_header(turn.header.clone()),
        };
        let ran = self
            .run_agent(channel, run_id, &adapter, launch, cancel)
            .await;
        let Some(mut verdict) = self.judge(channel, run_id, &turn, &adapter, &ran).await? else {
            return Ok(());
        };
        // A project setup step failed in the container: the thread hears it after the answer.
        if let (Some(failure), Some(reply)) = (&ran.state.setup_failure, &mut verdict.reply) {
            *reply = format!("{}\n\n{}", reply.trim_end(), failure.notice());
        }
        let succeeded = verdict.status == RunStatus::Succeeded;
        let (project_dir, project) = (turn.project_dir.clone(), turn.project.clone());
        self.record(channel, run_id, turn, &adapter, ran.status_id, verdict)
            .await?;
        if succeeded {
            self.after_turn_spare(channel, &project_dir, &project)
                .await?;
        }
        Ok(())
    }

    /// Claims the channel's waiting messages, finds the work directory and session, starts
    /// the run, and loads the project's config. `None`: nothing to do, or the turn was refused
    /// (recorded and told).
    async fn prepare_turn(
        &self,
        channel: &ChannelKey,
        run_id: &str,
    ) -> Result<Option<PreparedTurn>, OrchestratorError> {
        let store = &self.inner.store;
        let key = channel.to_string();
        let messages = store.claim_pending(&key, run_id).await?;
        if messages.is_empty() {
            return Ok(None);
        }
        let prompt = build_prompt(&messages);
        let latest = messages
            .iter()
            .rev()
            .find(|m| m.triggers)
            .map_or_else(|| prompt.clone(), |m| m.text.clone());
        if let Some(turn) = self.lock_running().get_mut(&key) {
            turn.author = messages
                .iter()
                .rev()
                .find(|m| m.triggers)
                .map(|m| m.author_id.clone());
        }

        let project_dir = match self.turn_work_dir(channel).await? {
            Ok(dir) => dir,
            Err(reason) => {
                return self
                    .fail_early(channel, run_id, &prompt, &reason)
                    .await
                    .map(|()| None);
            }
        };
        // A new thread takes the project's spare agent, when there is one: its worktree first.
        if self.is_new_thread(channel, &project_dir).await? {
            self.adopt_spare(channel, &project_dir, &latest, run_id)
                .await?;
        }
        let worktree = match self
            .thread_worktree(channel, &project_dir, &latest, run_id)
            .await?
        {
            Ok(worktree) => worktree,
            Err(reason) => {
                return self
                    .fail_early(channel, run_id, &prompt, &reason)
                    .await
                    .map(|()| None);
            }
        };
        let work_dir = worktree
            .as_ref()
            .map_or_else(|| project_dir.clone(), |w| w.worktree.clone());
        let session = store
            .active_session(channel, &work_dir.display().to_string())
            .await?;
        let header = self.status_header(&project_dir, worktree.as_ref(), &session);
        store
            .start_run(
                run_id,
                &key,
                &session.id,
                crate::scheduler::run_origin(&messages),
                &prompt,
            )
            .await?;

        let project = match self.load_project(channel, &project_dir).await? {
            Ok(project) => project,
            Err(err) => {
                let reply = format!("⚠️ The project config is broken, so nothing ran: {err}");
                return self
                    .refuse(channel, run_id, &err.to_string(), reply)
                    .await
                    .map(|()| None);
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
                    .await
                    .map(|()| None);
            }
        }
        Ok(Some(PreparedTurn {
            messages,
            prompt,
            latest,
            project_dir,
            work_dir,
            worktree,
            header,
            session,
            project,
        }))
    }

    /// The channel's work directory, created when it is the default one. `Err` says, for the
    /// channel, why the turn cannot start there.
    pub(super) async fn turn_work_dir(
        &self,
        channel: &ChannelKey,
    ) -> Result<Result<PathBuf, String>, OrchestratorError> {
        Ok(match self.inner.store.channel_work_dir(channel).await? {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                // A directory chosen before this check existed may still hold loop's own.
                match check_not_loop_dir(&self.inner.config, &dir) {
                    Ok(()) => Ok(dir),
                    Err(err) => Err(format!("{err}; set another with /loop dir")),
                }
            }
            None => ensure_default_work_dir(&self.inner.config, channel)
                .map_err(|err| format!("cannot create the work directory: {err}")),
        })
    }

    /// The config the turn runs under: the project's file on top of the global config, with
    /// only its trusted values. The channel hears once about values held back.
    async fn load_project(
        &self,
        channel: &ChannelKey,
        work_dir: &Path,
    ) -> Result<Result<Config, ConfigError>, OrchestratorError> {
        let trusted = self.trusted_version(work_dir).await?;
        Ok(
            match self.inner.config.for_project(work_dir, trusted.as_ref()) {
                Ok(loaded) => {
                    for warning in &loaded.warnings {
                        tracing::warn!(channel = %channel, "{warning}");
                    }
                    // The turn still runs, on the trusted values; the channel hears why once.
                    self.announce_untrusted(channel, work_dir, &loaded, trusted.as_ref())
                        .await?;
                    Ok(loaded.config)
                }
                Err(err) => Err(err),
            },
        )
    }

    /// What the runner gets: the prompt (after the best memories when a session starts), the
    /// channel's target and the project's container settings.
    async fn turn_request(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        turn: &PreparedTurn,
    ) -> TurnRequest {
        let PreparedTurn {
            messages,
            latest,
            work_dir,
            session,
            project,
            ..
        } = turn;
        TurnRequest {
            run_id: run_id.to_owned(),
            target: ChannelTarget {
                channel_id: channel.slug(),
                work_dir: work_dir.clone(),
                custom_dir: !work_dir.starts_with(&self.inner.config.loop_dir),
                parent_dir: None,
                git_common_dir: turn.worktree.as_ref().map(|w| w.git_common_dir.clone()),
                author_id: messages
                    .iter()
                    .rev()
                    .find(|m| m.triggers)
                    .map(|m| m.author_id.clone()),
            },
            settings: container_settings(project, &self.inner.facts, work_dir),
            prompt: self.prompt_with_memories(channel, turn).await,
            latest_message: latest.clone(),
            session_id: session.claude_session_id.clone(),
            keep_alive: Duration::from_secs(project.container_keep_alive_sec),
            warm: project.warm_idle_sec > 0,
        }
    }

    /// A new session starts with the best memories, when `memory.inject_top_k` asks for it.
    async fn prompt_with_memories(&self, channel: &ChannelKey, turn: &PreparedTurn) -> String {
        let prompt = turn.prompt.clone();
        let top_k = turn.project.memory.inject_top_k;
        let memory = match self.memory() {
            Some(memory) if top_k > 0 && turn.session.claude_session_id.is_none() => memory,
            _ => return prompt,
        };
        let scopes =
            crate::memory::visible_scopes(channel, Some(&turn.project_dir.display().to_string()));
        match memory.search(&scopes, &turn.latest, top_k).await {
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

    /// Runs the agent while the status message shows its progress. The turn's end also ends
    /// its waiting approval prompts (they resolve as deny) and, unless the container stays as
    /// the thread's warm agent, its token.
    async fn run_agent(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        adapter: &Arc<dyn Adapter>,
        launch: Launch,
        cancel: CancellationToken,
    ) -> Ran {
        let Launch {
            mut request,
            environment,
            initial,
        } = launch;
        let started = Instant::now();
        let key = channel.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let events = self.inner.events.clone();
        let progress_channel = channel.clone();
        let (progress_run, progress_key) = (run_id.to_owned(), key.clone());
        let progress_store = self.inner.store.clone();
        let progress_adapter = adapter.clone();
        let activity = self.inner.activity.begin(&key, run_id);
        let progress = tokio::spawn(async move {
            let status_id =
                progress::post_status(progress_adapter.as_ref(), &progress_channel, &initial).await;
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
                initial,
                rx,
                started,
                move |line| {
                    let _ = events.send(RunEvent::Progress {
                        run_id: progress_run.clone(),
                        channel: progress_key.clone(),
                        status: line.to_owned(),
                    });
                },
                activity,
            )
            .await
        });
        // The project's image is built (when missing) under the status message already posted.
        let result = match self.provision(&environment, &tx, &cancel).await {
            Ok(image) => {
                request.settings.image = image;
                request.settings.setup = environment.setup.clone();
                request.settings.project_env = environment.env.clone();
                self.inner
                    .runner
                    .run_turn(request, Some(tx), cancel.clone())
                    .await
            }
            Err(err) => {
                drop(tx);
                Err(err)
            }
        };
        match &result {
            Ok(outcome) if outcome.warm => self.inner.gate.turn_ended_warm(&key),
            _ => self.inner.gate.container_gone(&key),
        }
        let (status_id, state) = progress.await.unwrap_or_default();
        Ran {
            result,
            status_id,
            state,
            elapsed_sec: started.elapsed().as_secs(),
        }
    }

    /// What the run's end means. `None`: the turn is not over; it was paused for a restart or
    /// re-queued after the Docker engine died, and runs again.
    async fn judge(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        turn: &PreparedTurn,
        adapter: &Arc<dyn Adapter>,
        ran: &Ran,
    ) -> Result<Option<Verdict>, OrchestratorError> {
        let elapsed = ran.elapsed_sec;
        let verdict = match &ran.result {
            Ok(outcome) => {
                if !outcome.result.session_id.is_empty() {
                    self.inner
                        .store
                        .set_claude_session(&turn.session.id, &outcome.result.session_id)
                        .await?;
                }
                let tools_used = ran.state.tools_used;
                let summary = format!(
                    "✅ Done in {elapsed}s · {} tool{} · ${:.4}",
                    tools_used,
                    if tools_used == 1 { "" } else { "s" },
                    outcome.result.total_cost_usd
                );
                let mut answer = if outcome.result.text.trim().is_empty() {
                    "(the agent finished without a written answer)".to_owned()
                } else {
                    outcome.result.text.clone()
                };
                if let Some(changes) = self
                    .conclude_branch(
                        channel,
                        turn.worktree.as_ref(),
                        &turn.project,
                        &turn.messages,
                        &answer,
                    )
                    .await
                {
                    answer = format!("{}\n\n{changes}", answer.trim_end());
                }
                Verdict {
                    status: RunStatus::Succeeded,
                    finish: finish_from(outcome),
                    reply: Some(answer),
                    summary: ran.state.under_header(&summary),
                }
            }
            Err(RunError::Cancelled) if self.inner.draining.is_cancelled() => {
                // The daemon is stopping: leave the messages for the next start.
                self.inner.store.recover_interrupted_runs().await?;
                if let Some(id) = &ran.status_id {
                    let _ = adapter.edit(channel, id, "⏸️ Paused: loop is restarting; this message will be answered after the restart.").await;
                }
                return Ok(None);
            }
            Err(err)
                if err.is_engine_lost()
                    && turn.messages.iter().all(|m| m.attempts < MAX_INTERRUPTIONS) =>
            {
                self.requeue_after_engine_loss(channel, run_id, err, ran.status_id.clone())
                    .await?;
                return Ok(None);
            }
            Err(err) => {
                let mut verdict = failed_verdict(run_id, err, elapsed);
                verdict.summary = ran.state.under_header(&verdict.summary);
                verdict
            }
        };
        Ok(Some(verdict))
    }

    /// Shows the verdict in the status message, records the run with its reply (waiting a
    /// while for the reply to go out), indexes the turn in memory, and marks the messages it
    /// answered.
    async fn record(
        &self,
        channel: &ChannelKey,
        run_id: &str,
        turn: PreparedTurn,
        adapter: &Arc<dyn Adapter>,
        status_id: Option<String>,
        verdict: Verdict,
    ) -> Result<(), OrchestratorError> {
        let Verdict {
            status,
            finish,
            reply,
            summary,
        } = verdict;
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
            let (key, run_id, work_dir) =
                (channel.to_string(), run_id.to_owned(), turn.project_dir);
            let indexed_prompt = turn.prompt;
            let interval = Duration::from_secs(turn.project.memory.reindex_interval_sec);
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
        for message in turn.messages.iter().filter(|m| m.triggers) {
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
        tracing::warn!(error = %loop_wire::error_chain(err), "the Docker engine was lost during the turn: its messages are re-queued and run again once the engine is back");
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

/// A run that ended in an error: how it is recorded and what the channel is told.
fn failed_verdict(run_id: &str, err: &RunError, elapsed: u64) -> Verdict {
    let status = match err {
        RunError::TimedOut(_) => RunStatus::TimedOut,
        RunError::Cancelled => RunStatus::Cancelled,
        _ => RunStatus::Failed,
    };
    let short = short_run_id(run_id);
    let reply = match err {
        RunError::Cancelled => format!("🛑 Stopped (run `{short}`)."),
        other => format!("❌ {other} (run `{short}`)"),
    };
    let mut finish = RunFinish {
        error: Some(err.to_string()),
        ..Default::default()
    };
    if let RunError::Agent { result, .. } = err {
        finish.claude_session_id = Some(result.session_id.clone());
        finish.cost_usd = result.total_cost_usd;
        finish.input_tokens = i64::try_from(result.usage.input_tokens).unwrap_or(i64::MAX);
        finish.output_tokens = i64::try_from(result.usage.output_tokens).unwrap_or(i64::MAX);
    }
    Verdict {
        status,
        finish,
        reply: Some(reply),
        summary: format!("❌ Failed after {elapsed}s"),
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
    use loop_store::InboxStatus;

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
