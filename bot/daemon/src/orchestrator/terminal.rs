//! What a dashboard terminal's shell runs with (see `crate::terminal`): the channel's work
//! directory (its thread's worktree), the project's config, image and gate, as the channel's
//! next turn would have them. Opening a terminal changes nothing for the thread: no branch is
//! made for it and nothing is said in the channel.
//!
//! A shell container gets a gate token of its own ([`crate::gate::terminal_container`]), so its
//! approvals are asked in the thread like the agent's, and no host-API token: the terminal is a
//! person's, who has the dashboard for what the built-in MCP tools do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loop_adapter::ChannelKey;
use loop_runner::spec::ChannelTarget;
use loop_runner::{OpenShell, ShellError, ShellHandle, ShellRequest, TerminalSize};

use super::gate_setup::plan_gate;
use super::workspace::container_settings;
use super::{Orchestrator, OrchestratorError};
use crate::branches::{self, BranchSettings};
use crate::config::{Config, ProjectImages};
use crate::environment::{discover, environment_trust_key};

/// Why a terminal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// Said to the person at the terminal, as the channel would hear it for a turn.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Shell(#[from] ShellError),
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
}

impl From<loop_store::StoreError> for TerminalError {
    fn from(err: loop_store::StoreError) -> Self {
        TerminalError::Orchestrator(err.into())
    }
}

/// The image a shell container runs in, and the project's variables that go with it.
struct ShellImage {
    image: String,
    env: BTreeMap<String, String>,
    protected: Vec<String>,
}

impl Orchestrator {
    /// Opens a shell for `channel` (the runner picks its warm agent or a shell container).
    pub async fn open_terminal(
        &self,
        channel: &ChannelKey,
        size: TerminalSize,
    ) -> Result<OpenShell, TerminalError> {
        let request = self.shell_request(channel, size).await?;
        Ok(self.inner.runner.open_shell(request).await?)
    }

    pub async fn resize_terminal(
        &self,
        shell: &ShellHandle,
        size: TerminalSize,
    ) -> Result<(), ShellError> {
        self.inner.runner.resize_shell(shell, size).await
    }

    /// Ends a shell (its shell container goes with the last one).
    pub async fn close_terminal(&self, shell: &ShellHandle) {
        self.inner.runner.close_shell(shell).await;
    }

    /// The channel has no terminal left: its shell container's gate token stops working.
    pub fn terminals_closed(&self, channel: &ChannelKey) {
        self.inner
            .gate
            .container_gone(&crate::gate::terminal_container(&channel.to_string()));
    }

    /// Where and how the channel's shell runs.
    async fn shell_request(
        &self,
        channel: &ChannelKey,
        size: TerminalSize,
    ) -> Result<ShellRequest, TerminalError> {
        let project_dir = self
            .turn_work_dir(channel)
            .await?
            .map_err(TerminalError::Refused)?;
        let (work_dir, git_common_dir) = self.terminal_work_dir(channel, &project_dir).await?;
        let trusted = self.trusted_version(&project_dir).await?;
        let project = self
            .inner
            .config
            .for_project(&project_dir, trusted.as_ref())
            .map_err(|err| TerminalError::Refused(format!("the project config is broken: {err}")))?
            .config;
        let image = self.shell_image(&project_dir, &work_dir, &project).await?;
        let gate = plan_gate(
            &self.inner.config,
            &project,
            &self.inner.facts,
            &image.protected,
        )
        .map_err(|refusal| TerminalError::Refused(refusal.reply))?;
        let mut settings = container_settings(&project, &self.inner.facts, &work_dir);
        settings.image = image.image;
        settings.project_env = image.env;
        if !gate.is_empty() {
            let token = self.inner.gate.terminal_token(&channel.to_string());
            self.arm_gate_with(token, gate, &mut settings);
        }
        Ok(ShellRequest {
            target: ChannelTarget {
                channel_id: channel.slug(),
                custom_dir: !work_dir.starts_with(&self.inner.config.loop_dir),
                work_dir,
                parent_dir: None,
                git_common_dir,
                author_id: None,
            },
            settings,
            size,
        })
    }

    /// The thread's worktree when it has a branch (brought back when it was removed while
    /// idle), and the repository's git directory the container needs with it; else the
    /// project directory itself.
    async fn terminal_work_dir(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
    ) -> Result<(PathBuf, Option<PathBuf>), TerminalError> {
        let git = &self.inner.config.git;
        if !git.worktrees || self.inner.store.thread_branch(channel).await?.is_none() {
            return Ok((project_dir.to_path_buf(), None));
        }
        let settings = BranchSettings {
            worktrees_root: git.worktrees_dir.clone(),
            prefix: git.branch_prefix.clone(),
        };
        // The branch exists, so nothing is named from these: the worktree is found again.
        match branches::prepare_thread_worktree(
            &self.inner.store,
            channel,
            project_dir,
            &settings,
            "",
            "",
        )
        .await
        {
            Ok(Some(worktree)) => Ok((worktree.worktree, Some(worktree.git_common_dir))),
            Ok(None) => Ok((project_dir.to_path_buf(), None)),
            Err(branches::BranchError::Store(err)) => Err(err.into()),
            Err(err) => Err(TerminalError::Refused(format!(
                "cannot find this thread's git worktree in {}: {err}",
                project_dir.display()
            ))),
        }
    }

    /// The image the channel's agent runs in, as far as it is built: the project's own when
    /// its description is trusted and built, else the newest built one, else
    /// `container_image`. Nothing is built for a terminal.
    async fn shell_image(
        &self,
        project_dir: &Path,
        work_dir: &Path,
        project: &Config,
    ) -> Result<ShellImage, TerminalError> {
        let configured = ShellImage {
            image: project.container_image.clone(),
            env: BTreeMap::new(),
            protected: Vec::new(),
        };
        if project.project_images == ProjectImages::Never {
            return Ok(configured);
        }
        let Ok(source) = discover(work_dir, &project.container_image) else {
            return Ok(configured);
        };
        let Ok(Some(description)) = source.description(work_dir) else {
            return Ok(configured);
        };
        let trusted = match project.project_images {
            ProjectImages::Trusted => {
                let key = environment_trust_key(project_dir);
                let trust = self.inner.store.project_trust(&key).await?;
                trust.is_some_and(|t| t.file_hash == description.hash)
            }
            ProjectImages::Always | ProjectImages::Never => true,
        };
        if trusted
            && let Some(spec) = source.image_spec(project_dir, &project.container_image)
            && let Ok(planned) = self.inner.runner.plan_project_image(&spec).await
            && planned.ready
        {
            return Ok(ShellImage {
                image: planned.tag,
                env: source.environment_variables(),
                protected: source.protected_images(work_dir),
            });
        }
        match self.inner.runner.latest_project_image(project_dir).await {
            Ok(Some(image)) => Ok(ShellImage {
                image,
                ..configured
            }),
            _ => Ok(configured),
        }
    }
}
