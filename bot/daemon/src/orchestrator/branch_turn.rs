//! A turn's life on its thread's branch (see [`crate::branches`]): the worktree it runs in,
//! the status line that names the branch, and, at its end, the commit and the summary of what
//! changed that close its answer.

use std::path::Path;

use loop_adapter::ChannelKey;
use loop_git::{Signature, commit_message};
use loop_store::{InboxMessage, SessionRecord};

use super::{Orchestrator, OrchestratorError, short_run_id};
use crate::branches::{self, AutoCommit, BranchSettings, ThreadWorktree};
use crate::config::Config;

/// Characters of the run id that make a new branch's name unique.
const BRANCH_ID_CHARS: usize = 4;

impl Orchestrator {
    /// The thread's worktree when `project_dir` is a git repository and `git.worktrees` is on,
    /// created on the thread's first turn. `Err` says, for the channel, why the turn cannot run.
    pub(super) async fn thread_worktree(
        &self,
        channel: &ChannelKey,
        project_dir: &Path,
        latest: &str,
        run_id: &str,
    ) -> Result<Result<Option<ThreadWorktree>, String>, OrchestratorError> {
        let git = &self.inner.config.git;
        if !git.worktrees {
            return Ok(Ok(None));
        }
        let settings = BranchSettings {
            worktrees_root: git.worktrees_dir.clone(),
            prefix: git.branch_prefix.clone(),
        };
        let short = short_run_id(run_id);
        let short = short.get(..BRANCH_ID_CHARS).unwrap_or(short);
        let hint = latest.lines().next().unwrap_or_default();
        match branches::prepare_thread_worktree(
            &self.inner.store,
            channel,
            project_dir,
            &settings,
            hint,
            short,
        )
        .await
        {
            Ok(worktree) => {
                if let Some(w) = worktree.as_ref().filter(|w| w.created) {
                    tracing::info!(channel = %channel, branch = %w.record.branch, worktree = %w.worktree.display(), "thread worktree ready");
                }
                Ok(Ok(worktree))
            }
            Err(branches::BranchError::Store(err)) => Err(err.into()),
            Err(err) => Ok(Err(format!(
                "cannot prepare this thread's git worktree in {}: {err}",
                project_dir.display()
            ))),
        }
    }

    /// The status message's first line: the thread's branch and base, or, on a new
    /// session in a directory that is not a repository, that there is no branch.
    pub(super) fn status_header(
        &self,
        project_dir: &Path,
        worktree: Option<&ThreadWorktree>,
        session: &SessionRecord,
    ) -> Option<String> {
        match worktree {
            Some(worktree) => Some(worktree.status_line()),
            None if self.inner.config.git.worktrees && session.claude_session_id.is_none() => {
                Some(format!(
                    "📁 `{}` is not a git repository: this thread edits it in place, without a branch",
                    project_dir.display()
                ))
            }
            None => None,
        }
    }

    /// Commits what the turn left (unless `git.auto_commit` is off) and returns the lines
    /// that end its answer. A git failure does not fail the turn: the answer says it instead.
    pub(super) async fn conclude_branch(
        &self,
        channel: &ChannelKey,
        worktree: Option<&ThreadWorktree>,
        project: &Config,
        messages: &[InboxMessage],
        answer: &str,
    ) -> Option<String> {
        let worktree = worktree?;
        let asked = messages.iter().rev().find(|m| m.triggers);
        let auto = project.git.auto_commit.then(|| AutoCommit {
            message: commit_message(
                asked.map_or("", |m| m.text.as_str()),
                first_paragraph(answer),
            ),
            author: Signature {
                name: project.git.author_name.clone(),
                email: project.git.author_email.clone(),
            },
            co_author: asked.map(|m| Signature {
                name: m.author_name.clone(),
                email: format!("{}@{}.invalid", m.author_id, channel.platform.as_str()),
            }),
        });
        match branches::conclude_turn(worktree, auto.as_ref()).await {
            Ok(changes) => {
                let mut summary = changes.summary();
                // `git.push_after_turn`: every turn that committed goes to the remote.
                if project.git.push_after_turn && changes.commits > 0 {
                    let pushed = match self.push_branch(channel).await {
                        Ok(Ok(pushed)) => pushed.describe(),
                        Ok(Err(why)) => format!("⚠️ Not pushed: {why}"),
                        Err(err) => format!("⚠️ Not pushed: {err}"),
                    };
                    summary = Some(match summary {
                        Some(text) => format!("{text}\n{pushed}"),
                        None => pushed,
                    });
                }
                summary
            }
            Err(err) => {
                tracing::warn!(channel = %channel, error = %err, "cannot commit the turn's changes");
                Some(format!(
                    "⚠️ The changes stay uncommitted in `{}`: {err}",
                    worktree.worktree.display()
                ))
            }
        }
    }
}

/// The answer's first paragraph: the body of the turn's commit message.
fn first_paragraph(answer: &str) -> &str {
    answer.trim().split("\n\n").next().unwrap_or_default()
}
