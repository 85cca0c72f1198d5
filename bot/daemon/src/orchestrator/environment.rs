//! A turn's environment (issue #18): the image its agent runs in. A project that describes
//! its own ([`crate::environment`]) runs in that image with loop's layer on top, built when
//! missing; every other project runs in `container_image`.
//!
//! Building runs the description's commands with network access, so it is an owner's decision
//! (`project_images: trusted`, the default): a version nobody trusted is not built, the turn
//! runs in the newest image built from a trusted one (else `container_image`) and the channel
//! hears once per version how to trust it. One build per project at a time: the turns that
//! need it wait for it, each with the build in its status message, and a build started for a
//! turn finishes even when that turn is stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use loop_adapter::ChannelKey;
use loop_runner::project_image::BuildError;
use loop_runner::spec::SetupStep;
use loop_runner::{AgentEvent, RunError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Orchestrator, OrchestratorError};
use crate::config::project::{self as project_file, short_hash};
use crate::config::{Config, ProjectImages};
use crate::environment::{Description, EnvironmentSource, discover, environment_trust_key};
use loop_store::ProjectTrust;

/// Diff lines of a description shown in chat.
const CHAT_DIFF_LINES: usize = 60;

/// The image a turn runs in, and what must be built first.
#[derive(Debug, Clone)]
pub(super) struct TurnEnvironment {
    /// The image when nothing needs building: `container_image`, or the newest trusted build
    /// while the current description waits for trust.
    pub image: String,
    pub build: Option<PendingBuild>,
    /// The description's setup commands, run by `loop setup` in each container before the
    /// agent (with the description's image only: they are written for it).
    pub setup: Vec<SetupStep>,
    /// The description's environment variables (loop's own names are kept by the runner).
    pub env: BTreeMap<String, String>,
    /// What the environment builds on, which the agent's docker proxy must not replace.
    pub protected_images: Vec<String>,
}

/// A project description to build (or find built) before the agent starts.
#[derive(Debug, Clone)]
pub(super) struct PendingBuild {
    pub source: EnvironmentSource,
    /// The channel's directory: the images' label (pruning) and the build's single flight.
    pub project_dir: PathBuf,
    /// loop's agent image, whose CLI and binary go on top.
    pub agent_image: String,
    /// The description's main file, for messages.
    pub name: String,
}

impl Orchestrator {
    /// Which image the turn runs in. `Err` is the channel's reply when the project's
    /// description cannot be used (named by file, line and field): nothing runs then.
    pub(super) async fn turn_environment(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        work_dir: &Path,
        project: &Config,
    ) -> Result<Result<TurnEnvironment, String>, OrchestratorError> {
        let configured = TurnEnvironment {
            image: project.container_image.clone(),
            build: None,
            setup: Vec::new(),
            env: BTreeMap::new(),
            protected_images: Vec::new(),
        };
        if project.project_images == ProjectImages::Never {
            return Ok(Ok(configured));
        }
        let unusable = |err: &dyn std::fmt::Display| {
            format!(
                "⚠️ The project's environment description cannot be used, so nothing ran: {err}"
            )
        };
        let source = match discover(work_dir, &project.container_image) {
            Ok(source) => source,
            Err(err) => return Ok(Err(unusable(&err))),
        };
        let description = match source.description(work_dir) {
            Ok(Some(description)) => description,
            Ok(None) => return Ok(Ok(configured)),
            Err(err) => return Ok(Err(unusable(&err))),
        };
        if project.project_images == ProjectImages::Trusted {
            let key = environment_trust_key(project_dir);
            let trusted = self.inner.store.project_trust(&key).await?;
            if trusted.as_ref().map(|t| t.file_hash.as_str()) != Some(description.hash.as_str()) {
                let fallback = match self.inner.runner.latest_project_image(project_dir).await {
                    Ok(Some(image)) => image,
                    Ok(None) => project.container_image.clone(),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot list the project's images");
                        project.container_image.clone()
                    }
                };
                self.announce_untrusted_environment(
                    channel,
                    project_dir,
                    &description,
                    trusted.as_ref(),
                    &fallback,
                )
                .await?;
                return Ok(Ok(TurnEnvironment {
                    image: fallback,
                    ..configured
                }));
            }
        }
        self.announce_environment_notes(channel, project_dir, &source, &description)
            .await?;
        Ok(Ok(TurnEnvironment {
            image: project.container_image.clone(),
            setup: source.setup_steps(),
            env: source.environment_variables(),
            protected_images: source.protected_images(work_dir),
            build: Some(PendingBuild {
                source,
                project_dir: project_dir.to_path_buf(),
                agent_image: project.container_image.clone(),
                name: description.name,
            }),
        }))
    }

    /// The image to run: `environment`'s own, built first when missing (its output in the
    /// status message through `events`).
    pub(super) async fn provision(
        &self,
        environment: &TurnEnvironment,
        events: &mpsc::Sender<AgentEvent>,
        cancel: &CancellationToken,
    ) -> Result<String, RunError> {
        let Some(pending) = &environment.build else {
            return Ok(environment.image.clone());
        };
        let failed = |err: BuildError| match err {
            // The engine went away: the turn waits for it and runs again, as any other turn.
            BuildError::Engine(source) if loop_runner::docker::engine_unreachable(&source) => {
                RunError::EngineLost {
                    call: "project image",
                    source,
                }
            }
            err => RunError::Environment(format!(
                "The project's environment (`{}`) could not be built, so nothing ran: {}",
                pending.name,
                fenced_tail(&err)
            )),
        };
        let spec = pending
            .source
            .image_spec(&pending.project_dir, &pending.agent_image)
            .ok_or_else(|| RunError::Environment("no project image to build".into()))?;
        let planned = self
            .inner
            .runner
            .plan_project_image(&spec)
            .await
            .map_err(failed)?;
        if planned.ready {
            return Ok(planned.tag);
        }
        // The build is its own task: a turn stopped while it waits leaves it to finish for
        // the next one.
        let flight = self.inner.builds.of(&pending.project_dir);
        let (this, pending_build, sender) = (self.clone(), pending.clone(), events.clone());
        let build = tokio::spawn(async move {
            let _guard = match flight.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    let _ = sender.try_send(AgentEvent::Preparing(
                        "waiting for the project environment another thread is building".into(),
                    ));
                    flight.lock().await
                }
            };
            this.build_environment(&pending_build, &sender).await
        });
        let built = tokio::select! {
            built = build => built,
            () = cancel.cancelled() => return Err(RunError::Cancelled),
        };
        match built {
            Ok(Ok(tag)) => Ok(tag),
            Ok(Err(err)) => Err(failed(err)),
            Err(join) => Err(RunError::Environment(format!(
                "building the project's environment stopped: {join}"
            ))),
        }
    }

    /// Builds (or, after waiting for another turn's build, finds) the project's image.
    async fn build_environment(
        &self,
        pending: &PendingBuild,
        events: &mpsc::Sender<AgentEvent>,
    ) -> Result<String, BuildError> {
        let spec = pending
            .source
            .image_spec(&pending.project_dir, &pending.agent_image)
            .ok_or(BuildError::NoImages)?;
        let started = Instant::now();
        let what = format!("building the project environment from `{}`", pending.name);
        let _ = events.try_send(AgentEvent::Preparing(what.clone()));
        let mut on_line = |line: &str| {
            let _ = events.try_send(AgentEvent::Preparing(format!("{what}: {line}")));
        };
        let built = self
            .inner
            .runner
            .build_project_image(&spec, &mut on_line)
            .await?;
        if built.built {
            tracing::info!(
                project = %pending.project_dir.display(),
                tag = %built.tag,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "project environment built"
            );
        }
        Ok(built.tag)
    }

    /// Tells the channel, once per version, what of its devcontainer.json loop does not use.
    async fn announce_environment_notes(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        source: &EnvironmentSource,
        description: &Description,
    ) -> Result<(), OrchestratorError> {
        let EnvironmentSource::Devcontainer { spec, .. } = source else {
            return Ok(());
        };
        if spec.notes.is_empty() {
            return Ok(());
        }
        let body = format!(
            "ℹ️ From `{}`, loop does not use:\n{}",
            description.name,
            spec.notes
                .iter()
                .map(|note| format!("• {note}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let queued = self
            .inner
            .store
            .enqueue_untrusted_notice(
                &channel.to_string(),
                &format!("notes:{}", environment_trust_key(project_dir)),
                &description.hash,
                &body,
            )
            .await?;
        if queued {
            self.deliver_soon();
        }
        Ok(())
    }

    /// Tells the channel, once per version, that the project's environment description is not
    /// trusted, what runs instead, and how an owner trusts it.
    async fn announce_untrusted_environment(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        description: &Description,
        trusted: Option<&ProjectTrust>,
        fallback: &str,
    ) -> Result<(), OrchestratorError> {
        let body = format!(
            "🔒 This project describes its environment in `{}` (version `{}`), which is not trusted: building it runs its commands with network access. Until an owner trusts it, the agent runs in `{fallback}`. An owner can trust exactly this version with `/loop trust {}` here, or build it on the host with `loop image build --dir {}`.\n```diff\n{}\n```",
            description.name,
            description.short_hash(),
            description.short_hash(),
            project_dir.display(),
            project_file::diff_for_chat(
                trusted.map(|t| t.content.as_str()),
                &description.text,
                CHAT_DIFF_LINES
            ),
        );
        let queued = self
            .inner
            .store
            .enqueue_untrusted_notice(
                &channel.to_string(),
                &environment_trust_key(project_dir),
                &description.hash,
                &body,
            )
            .await?;
        if queued {
            tracing::info!(channel = %channel, version = %description.short_hash(), "project environment not trusted; not built");
            self.deliver_soon();
        }
        Ok(())
    }

    /// Where `channel`'s environment description is read: its thread's worktree (the branch
    /// the agent edits) when it has one, else the channel's directory.
    async fn described_dir(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
    ) -> Result<PathBuf, OrchestratorError> {
        Ok(match self.inner.store.thread_branch(channel).await? {
            Some(record) if Path::new(&record.worktree).is_dir() => PathBuf::from(record.worktree),
            _ => project_dir.to_path_buf(),
        })
    }

    /// `/loop trust HASH` for the environment description `channel` sees: `None` when `hash`
    /// is not its version (it may be the project file's).
    pub(super) async fn trust_environment(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        hash: &str,
        by: &str,
    ) -> Result<Option<String>, OrchestratorError> {
        let dir = self.described_dir(channel, project_dir).await?;
        let Some(description) = current_description(&self.inner.config, &dir) else {
            return Ok(None);
        };
        if hash.is_empty() || !description.hash.starts_with(hash) {
            return Ok(None);
        }
        self.inner
            .store
            .trust_project_file(
                &environment_trust_key(project_dir),
                &description.hash,
                &description.text,
                by,
            )
            .await?;
        tracing::info!(by = %by, project = %project_dir.display(), version = %description.short_hash(), "project environment trusted from chat");
        Ok(Some(format!(
            "🔓 Trusted `{}` version `{}`: the next turn builds it.",
            description.name,
            description.short_hash()
        )))
    }

    /// What `/loop trust` shows about the environment description `channel` sees, when it
    /// waits for trust.
    pub(super) async fn environment_review(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
    ) -> Result<Option<String>, OrchestratorError> {
        let dir = self.described_dir(channel, project_dir).await?;
        let Some(description) = current_description(&self.inner.config, &dir) else {
            return Ok(None);
        };
        let trusted = self
            .inner
            .store
            .project_trust(&environment_trust_key(project_dir))
            .await?;
        if trusted
            .as_ref()
            .is_some_and(|t| t.file_hash == description.hash)
        {
            return Ok(None);
        }
        Ok(Some(format!(
            "🏗️ `{}` is version `{}`{}. Trusting it lets loop build it (its commands run with network access).\n```diff\n{}\n```\nTo trust exactly this version: `/loop trust {}`",
            description.name,
            description.short_hash(),
            trusted
                .as_ref()
                .map(|t| format!("; the trusted one is `{}`", short_hash(&t.file_hash)))
                .unwrap_or_else(|| " and was never trusted".into()),
            project_file::diff_for_chat(
                trusted.as_ref().map(|t| t.content.as_str()),
                &description.text,
                CHAT_DIFF_LINES
            ),
            description.short_hash()
        )))
    }
}

/// The description of the project's environment as it is now, if it has one that loads.
fn current_description(config: &Config, project_dir: &Path) -> Option<Description> {
    discover(project_dir, &config.container_image)
        .ok()?
        .description(project_dir)
        .ok()
        .flatten()
}

/// A build error for chat: the message, and the build's last lines in a code block.
fn fenced_tail(err: &BuildError) -> String {
    match err {
        BuildError::Failed { message, tail } | BuildError::Layer { message, tail }
            if !tail.is_empty() =>
        {
            let kind = if matches!(err, BuildError::Layer { .. }) {
                "loop's layer cannot go on the project's image"
            } else {
                "its build failed"
            };
            format!("{kind}: {message}\n```\n{tail}\n```")
        }
        other => other.to_string(),
    }
}
