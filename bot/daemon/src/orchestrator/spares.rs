//! Spare agents (issue #19): a new thread's first answer as fast as a follow-up. After a turn
//! in a project that new threads share (a directory set with `/loop dir` or `--dir`), one
//! agent is started ahead for the project's next new thread: its worktree cut at
//! the base's head, its container up with the project's setup done, its CLI waiting on stdin.
//! The next new thread adopts it: the worktree's branch takes the thread's name, the
//! container's tokens act for the thread, and the runner's warm pool files the agent under
//! the thread. Its first turn is then written to a running CLI.
//!
//! A spare that no longer fits is retired instead of adopted: a changed config or image shows
//! in its fingerprint (the runner checks it as for any warm agent), a moved base is checked
//! here. Spares count against `max_warm_threads` and retire after `warm_idle_sec` like the
//! warm agents they are; their worktrees go with them.

use std::path::Path;

use loop_adapter::ChannelKey;
use loop_runner::SpareRequest;
use loop_runner::spec::ChannelTarget;
use tokio_util::sync::CancellationToken;

use super::gate_setup::plan_gate;
use super::workspace::container_settings;
use super::{Orchestrator, OrchestratorError, short_run_id};
use crate::branches::BranchSettings;
use crate::branches::spare::{adopt_spare_worktree, discard_spare_worktree, make_spare_worktree};
use crate::config::Config;
use crate::spares::{Spare, TooLate};

impl Orchestrator {
    /// After a successful turn: starts a spare for the project in the background when new
    /// threads share it (a directory set with `/loop dir` or `--dir` for the channel or its
    /// parent; a thread without one has a default directory of its own) and it has none.
    pub(super) async fn after_turn_spare(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        project: &Config,
    ) -> Result<(), OrchestratorError> {
        if !project.spare_agents || project.warm_idle_sec == 0 || self.inner.shutdown.is_cancelled()
        {
            return Ok(());
        }
        let shared = self.inner.store.channel_work_dir(channel).await?.is_some();
        if !shared || !self.inner.spares.reserve(project_dir) {
            return Ok(());
        }
        let (this, channel, project_dir, project) = (
            self.clone(),
            channel.clone(),
            project_dir.to_path_buf(),
            project.clone(),
        );
        self.inner.tracker.spawn(async move {
            match this.start_spare(&channel, &project_dir, &project).await {
                Ok(spare) => {
                    // The daemon began stopping meanwhile (its discard has run): nobody will
                    // adopt or discard this one but us.
                    if let Err(TooLate(spare)) = this.inner.spares.ready(&project_dir, spare) {
                        this.discard_spare(*spare).await;
                    }
                }
                Err(why) => {
                    tracing::info!(project = %project_dir.display(), "no spare agent: {why}");
                    this.inner.spares.release(&project_dir);
                }
            }
        });
        Ok(())
    }

    /// Starts a spare: what a new thread of `channel` would get for its first turn, started
    /// under the spare's own id. `Err` says why not, for the log.
    async fn start_spare(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        project: &Config,
    ) -> Result<Spare, String> {
        let id = format!("spare-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let worktree = if self.inner.config.git.worktrees {
            make_spare_worktree(
                &self.inner.store,
                channel,
                project_dir,
                &self.branch_settings(),
                &id,
            )
            .await
            .map_err(|err| format!("cannot cut its worktree: {err}"))?
        } else {
            None
        };
        let spare = Spare { id, worktree };
        match self
            .start_spare_agent(channel, project_dir, project, &spare)
            .await
        {
            Ok(()) => Ok(spare),
            Err(why) => {
                self.discard_spare(spare).await;
                Err(why)
            }
        }
    }

    async fn start_spare_agent(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        project: &Config,
        spare: &Spare,
    ) -> Result<(), String> {
        let work_dir = spare
            .worktree
            .as_ref()
            .map_or_else(|| project_dir.to_path_buf(), |w| w.path.clone());
        let environment = match self
            .turn_environment(channel, project_dir, &work_dir, project)
            .await
        {
            Ok(Ok(environment)) => environment,
            Ok(Err(reply)) => return Err(reply),
            Err(err) => return Err(err.to_string()),
        };
        let gate = plan_gate(
            &self.inner.config,
            project,
            &self.inner.facts,
            &environment.protected_images,
        )
        .map_err(|refusal| refusal.error)?;
        let run_id = format!("{}-start", spare.id);
        let mut settings = container_settings(project, &self.inner.facts, &work_dir);
        self.arm_gate(&spare.id, &run_id, gate, &mut settings);
        // No turn runs on the spare until a thread adopts it.
        self.inner.gate.turn_ended_warm(&spare.id);
        // The image the turn before used, normally there already; a build it still needs runs
        // as a turn's would, its progress shown to nobody.
        let (events, _ignored) = tokio::sync::mpsc::channel(16);
        settings.image = self
            .provision(&environment, &events, &CancellationToken::new())
            .await
            .map_err(|err| err.to_string())?;
        settings.setup = environment.setup.clone();
        settings.project_env = environment.env.clone();
        let request = SpareRequest {
            run_id,
            target: ChannelTarget {
                channel_id: spare.id.clone(),
                custom_dir: !work_dir.starts_with(&self.inner.config.loop_dir),
                parent_dir: None,
                git_common_dir: spare.worktree.as_ref().map(|w| w.git_common_dir.clone()),
                author_id: None,
                work_dir,
            },
            settings,
        };
        self.inner
            .runner
            .start_spare(request)
            .await
            .map_err(|err| err.to_string())
    }

    /// Gives the project's spare to `channel`'s first turn, when it has one that fits. After
    /// this, the thread's worktree (when git is on) is the spare's, and the runner finds the
    /// spare as the thread's warm agent. A spare that does not fit is retired.
    pub(super) async fn adopt_spare(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        hint: &str,
        run_id: &str,
    ) -> Result<(), OrchestratorError> {
        let Some(spare) = self.inner.spares.take(project_dir) else {
            return Ok(());
        };
        if !self.inner.runner.has_spare(&spare.id).await {
            // Retired meanwhile (idle, evicted): only its worktree is left.
            self.discard_spare(spare).await;
            return Ok(());
        }
        let fits = match &spare.worktree {
            Some(worktree) => {
                let short = short_run_id(run_id);
                let short = short.get(..4).unwrap_or(short);
                let hint = hint.lines().next().unwrap_or_default();
                match adopt_spare_worktree(
                    &self.inner.store,
                    channel,
                    worktree,
                    &self.branch_settings(),
                    hint,
                    short,
                )
                .await
                {
                    Ok(fits) => fits,
                    Err(err) => {
                        tracing::warn!(channel = %channel, error = %err, "cannot hand a spare's worktree to the thread");
                        false
                    }
                }
            }
            // Without git the spare works in the project itself, as the thread will.
            None => true,
        };
        if !fits {
            tracing::info!(channel = %channel, spare = %spare.id, "the project's spare does not fit this thread: retiring it");
            self.discard_spare(spare).await;
            return Ok(());
        }
        let key = channel.to_string();
        self.inner.gate.hand_over(&spare.id, &key);
        if let Err(why) = self
            .inner
            .runner
            .adopt_spare(&spare.id, &channel.slug())
            .await
        {
            tracing::info!(channel = %channel, spare = %spare.id, "cannot adopt the spare: {why}");
            self.inner.gate.container_gone(&key);
        }
        Ok(())
    }

    /// Whether `channel` has not worked yet (no session, no branch of its own) and its
    /// project has a spare: only such a thread adopts it. Asked before anything is taken, so
    /// the follow-ups of older threads leave the spare alone.
    pub(super) async fn is_new_thread(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
    ) -> Result<bool, OrchestratorError> {
        let store = &self.inner.store;
        Ok(self.inner.spares.has_ready(project_dir)
            && !store.has_claude_session(channel).await?
            && store.thread_branch(channel).await?.is_none())
    }

    /// Retires a spare and removes its worktree.
    async fn discard_spare(&self, spare: Spare) {
        self.inner.runner.retire_spare(&spare.id).await;
        self.inner.gate.container_gone(&spare.id);
        if let Some(worktree) = &spare.worktree
            && let Err(err) = discard_spare_worktree(worktree).await
        {
            tracing::warn!(worktree = %worktree.path.display(), error = %err, "cannot remove a spare's worktree");
        }
    }

    /// Retires every spare (the daemon stops): their worktrees would be left unused.
    pub async fn discard_spares(&self) {
        for spare in self.inner.spares.take_all() {
            self.discard_spare(spare).await;
        }
    }

    fn branch_settings(&self) -> BranchSettings {
        let git = &self.inner.config.git;
        BranchSettings {
            worktrees_root: git.worktrees_dir.clone(),
            prefix: git.branch_prefix.clone(),
        }
    }
}
