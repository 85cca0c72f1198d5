//! Trusting a project's `.loop/config.json` from chat (`/loop trust [HASH]`), and the notice a
//! channel gets once per untrusted version whose widening keys were held back.
//!
//! Trusting needs the version's hash, as shown with its diff: a file the agent changes after
//! an owner read the diff has another hash, and is not trusted by accident.

use std::path::{Path, PathBuf};

use loop_adapter::{Author, ChannelKey};

use super::{Orchestrator, OrchestratorError};
use crate::config::project::{self, ProjectFile, TrustedVersion, short_hash};
use crate::config::{Config, ProjectConfig};
use loop_store::ProjectTrust;

/// Diff lines shown in chat; `loop config trust` on the host shows all.
const CHAT_DIFF_LINES: usize = 60;

impl Orchestrator {
    /// The trusted version of a work directory's project file, if any.
    pub(super) async fn trusted_version(
        &self,
        work_dir: &Path,
    ) -> Result<Option<TrustedVersion>, OrchestratorError> {
        let key = project::trust_key(work_dir);
        Ok(self
            .inner
            .store
            .project_trust(&key)
            .await?
            .map(|trust| TrustedVersion {
                hash: trust.file_hash,
                text: trust.content,
            }))
    }

    /// Tells the channel, once per version, that its project file's widening keys were held
    /// back and how an owner trusts it.
    pub(super) async fn announce_untrusted(
        &self,
        channel: &ChannelKey,
        work_dir: &Path,
        project: &ProjectConfig,
        trusted: Option<&TrustedVersion>,
    ) -> Result<(), OrchestratorError> {
        let Some(file) = &project.file else {
            return Ok(());
        };
        if project.held_back.is_empty() {
            return Ok(());
        }
        let body = untrusted_notice(work_dir, file, &project.held_back, trusted);
        let queued = self
            .inner
            .store
            .enqueue_untrusted_notice(
                &channel.to_string(),
                &project::trust_key(work_dir),
                &file.hash,
                &body,
            )
            .await?;
        if queued {
            tracing::info!(channel = %channel, file_hash = %file.short_hash(), held_back = ?project.held_back, "project config not trusted; widening keys held back");
            self.deliver_soon();
        }
        Ok(())
    }

    /// `/loop trust [HASH]` (owners only, checked on intake).
    pub(super) async fn trust_command(
        &self,
        channel: &ChannelKey,
        author: &Author,
        hash: Option<String>,
    ) -> Result<String, OrchestratorError> {
        let work_dir = self.channel_dir(channel).await?;
        let by = format!("{}:{}", channel.platform.as_str(), author.id);
        // The hash may be the environment description's (issue #18) rather than the file's.
        if let Some(asked) = &hash
            && let Some(trusted) = self
                .trust_environment(channel, &work_dir, asked, &by)
                .await?
        {
            return Ok(trusted);
        }
        let environment = self.environment_review(channel, &work_dir).await?;
        let with_environment = |text: String| match &environment {
            Some(review) => format!("{text}\n{review}"),
            None => text,
        };
        let file = match project::read_project_file(&work_dir) {
            Ok(Some(file)) => file,
            Ok(None) => {
                return Ok(match (&environment, &hash) {
                    (Some(review), None) => review.clone(),
                    (Some(review), Some(asked)) => format!(
                        "⚠️ `{asked}` is not the version shown now, so nothing was trusted.\n{review}"
                    ),
                    (None, _) => format!(
                        "There is no `.loop/config.json` in `{}`: nothing to trust.",
                        work_dir.display()
                    ),
                });
            }
            Err(err) => return Ok(with_environment(format!("⚠️ {err}"))),
        };
        let key = project::trust_key(&work_dir);
        let trusted = self.inner.store.project_trust(&key).await?;
        if trusted.as_ref().is_some_and(|t| t.file_hash == file.hash) {
            return Ok(with_environment(format!(
                "✅ `{}` (version `{}`) is already trusted.",
                file.path.display(),
                file.short_hash()
            )));
        }
        let review = match review(&self.inner.config, &file, trusted.as_ref()) {
            Ok(review) => review,
            Err(err) => return Ok(with_environment(err)),
        };
        let Some(asked) = hash else {
            return Ok(with_environment(review));
        };
        if !file.hash.starts_with(&asked) {
            return Ok(with_environment(format!(
                "⚠️ `{}` is now version `{}`, not `{asked}`: it changed after that version was shown, so nothing was trusted.\n{review}",
                file.path.display(),
                file.short_hash()
            )));
        }
        self.inner
            .store
            .trust_project_file(&key, &file.hash, &file.text, &by)
            .await?;
        tracing::info!(channel = %channel, by = %by, work_dir = %key, file_hash = %file.short_hash(), "project config trusted from chat");
        Ok(format!(
            "🔓 Trusted `{}` version `{}`: it applies from the next turn.",
            file.path.display(),
            file.short_hash()
        ))
    }

    /// The channel's work directory, or the default one it would get (not created here).
    async fn channel_dir(&self, channel: &ChannelKey) -> Result<PathBuf, OrchestratorError> {
        Ok(match self.inner.store.channel_work_dir(channel).await? {
            Some(dir) => PathBuf::from(dir),
            None => {
                loop_runner::spec::default_work_dir(&self.inner.config.loop_dir, &channel.slug())
            }
        })
    }
}

/// What trusting `file` would change, with the diff and the command that trusts exactly it;
/// `Err` with the reason when the file cannot be trusted (it does not load).
fn review(
    config: &Config,
    file: &ProjectFile,
    trusted: Option<&ProjectTrust>,
) -> Result<String, String> {
    let trusted_version = trusted.map(|t| TrustedVersion {
        hash: t.file_hash.clone(),
        text: t.content.clone(),
    });
    let held_back = config
        .with_project_file(Some(file.clone()), trusted_version.as_ref())
        .map_err(|err| format!("⚠️ This version cannot be trusted: {err}"))?
        .held_back;
    config
        .with_project_file(Some(file.clone()), Some(&TrustedVersion::of(file)))
        .map_err(|err| format!("⚠️ This version cannot be trusted: {err}"))?;
    let state = match trusted {
        Some(t) => format!(
            "is version `{}`; the trusted one is `{}` (by {})",
            file.short_hash(),
            short_hash(&t.file_hash),
            t.trusted_by
        ),
        None => format!("is version `{}` and was never trusted", file.short_hash()),
    };
    let effect = if held_back.is_empty() {
        "Nothing in it needs trust: it already applies as it is.".to_owned()
    } else {
        format!("Trusting it lets {} apply.", key_list(&held_back))
    };
    Ok(format!(
        "📄 `{}` {state}. {effect}\n```diff\n{}\n```\nTo trust exactly this version: `/loop trust {}`",
        file.path.display(),
        project::diff_for_chat(
            trusted.map(|t| t.content.as_str()),
            &file.text,
            CHAT_DIFF_LINES
        ),
        file.short_hash()
    ))
}

/// The notice for a turn that ran without some of the project file's keys.
fn untrusted_notice(
    work_dir: &Path,
    file: &ProjectFile,
    held_back: &[String],
    trusted: Option<&TrustedVersion>,
) -> String {
    let fallback = if trusted.is_some() {
        "the last trusted version's values apply"
    } else {
        "it was never trusted, so the global config's values apply"
    };
    format!(
        "🔒 `{}` (version `{}`) is not trusted, so this channel runs without its {}: {fallback}. An owner can trust exactly this version with `/loop trust {}` here, or `loop config trust {}` on the host.\n```diff\n{}\n```",
        file.path.display(),
        file.short_hash(),
        key_list(held_back),
        file.short_hash(),
        work_dir.display(),
        project::diff_for_chat(
            trusted.map(|t| t.text.as_str()),
            &file.text,
            CHAT_DIFF_LINES
        ),
    )
}

fn key_list(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
