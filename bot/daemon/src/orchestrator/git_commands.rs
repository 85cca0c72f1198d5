//! `/loop base` and `/loop diff`: a thread's branch seen from chat.
//!
//! `/loop base` in a channel shows or sets the branch its new threads start from; in a thread
//! it sets the thread's own, and when the thread already has a branch, moves the base that
//! branch is compared with (its diff, its pull request). `/loop diff` shows a thread's branch
//! against its base: inline when short, as a file when long (see [`crate::branches::diff`]).

use std::path::PathBuf;
use std::time::Duration;

use loop_adapter::{Author, ChannelKey};
use loop_git::Repo;

use super::{Orchestrator, OrchestratorError};
use crate::branches::BranchError;
use crate::branches::diff::{self, DiffReply};

/// `/loop base -` goes back to the default: the channel's base in a thread, the repository's
/// current branch in a channel. `-` is never a branch name git accepts.
const CLEAR: &str = "-";
/// Bound on uploading a diff file, the adapter's own 429 retries included.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a channel's threads get their branches.
enum Checkout {
    Repo(Repo),
    /// The channel's directory is not a git repository: threads edit it in place.
    NotGit(PathBuf),
    /// Why there are no branches here (worktrees off, a directory that cannot be used).
    Unavailable(String),
}

impl Orchestrator {
    /// `/loop base [BRANCH|-]`.
    pub(super) async fn base_command(
        &self,
        channel: &ChannelKey,
        author: &Author,
        branch: Option<String>,
    ) -> Result<String, OrchestratorError> {
        let branch = branch
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty());
        if channel.thread_id.is_some() {
            return self.thread_base(channel, author, branch).await;
        }
        let repo = match self.checkout(channel).await? {
            Checkout::Repo(repo) => repo,
            Checkout::NotGit(dir) => return Ok(not_git(&dir, "there is no base branch")),
            Checkout::Unavailable(why) => return Ok(format!("⚠️ {why}")),
        };
        let store = &self.inner.store;
        let current = current_branch(&repo).await;
        Ok(match branch.as_deref() {
            None => match store.git_base(channel).await? {
                Some(base) => format!(
                    "🌿 New threads here start from `{base}` (`/loop base -` goes back to {current})."
                ),
                None => format!(
                    "🌿 New threads here start from {current} (`/loop base BRANCH` to choose another)."
                ),
            },
            Some(CLEAR) => {
                store.set_git_base(channel, None, &author.id).await?;
                tracing::info!(channel = %channel, by = %author.id, "channel base cleared");
                format!("🌿 New threads here start from {current} again.")
            }
            Some(name) => match repo.resolve(name).await {
                Ok(commit) => {
                    store.set_git_base(channel, Some(name), &author.id).await?;
                    tracing::info!(channel = %channel, by = %author.id, base = name, "channel base set");
                    format!(
                        "🌿 New threads in this channel start from `{name}` (@ {}) now. Threads that already have a branch keep theirs; `/loop base BRANCH` in a thread moves its own.",
                        commit.short()
                    )
                }
                Err(err) => {
                    tracing::debug!(channel = %channel, base = name, error = %err, "not a base");
                    not_a_revision(name, &repo)
                }
            },
        })
    }

    /// `/loop base` in a thread: its own base, and its branch's if it has one.
    async fn thread_base(
        &self,
        thread: &ChannelKey,
        author: &Author,
        branch: Option<String>,
    ) -> Result<String, OrchestratorError> {
        let store = &self.inner.store;
        let record = store.thread_branch(thread).await?;
        let repo = match &record {
            Some(record) => match diff::open(record).await {
                Ok(repo) => repo,
                Err(err) => return Ok(format!("⚠️ {err}")),
            },
            None => match self.checkout(thread).await? {
                Checkout::Repo(repo) => repo,
                Checkout::NotGit(dir) => return Ok(not_git(&dir, "there is no base branch")),
                Checkout::Unavailable(why) => return Ok(format!("⚠️ {why}")),
            },
        };
        let Some(name) = branch else {
            return Ok(match (&record, store.git_base(thread).await?) {
                (Some(record), _) => format!(
                    "🌿 This thread works on `{}`, compared with `{}` from {} (`/loop base BRANCH` compares it with another).",
                    record.branch,
                    record.base_ref,
                    short(&record.base_commit)
                ),
                (None, Some(base)) => format!("🌿 This thread's branch will start from `{base}`."),
                (None, None) => format!(
                    "🌿 This thread's branch will start from {}.",
                    current_branch(&repo).await
                ),
            });
        };
        // The base it gets: the one named, or without its own the channel's, else the
        // repository's current branch.
        let clear = name == CLEAR;
        let target = if clear {
            match store.git_base(&thread.parent()).await? {
                Some(base) => base,
                None => match repo.current_branch().await {
                    Ok(Some(current)) => current,
                    _ => {
                        return Ok("⚠️ The repository has no branch checked out: name one with `/loop base BRANCH`.".to_owned());
                    }
                },
            }
        } else {
            name.clone()
        };
        if let Err(err) = repo.resolve(&target).await {
            tracing::debug!(channel = %thread, base = %target, error = %err, "not a base");
            return Ok(not_a_revision(&target, &repo));
        }
        let moved = match &record {
            Some(record) => match diff::retarget(store, thread, record, &target).await {
                Ok(moved) => Some(moved),
                Err(BranchError::Store(err)) => return Err(err.into()),
                Err(err) => return Ok(format!("⚠️ {err}")),
            },
            None => None,
        };
        let own = (!clear).then_some(name.as_str());
        store.set_git_base(thread, own, &author.id).await?;
        tracing::info!(channel = %thread, by = %author.id, base = %target, "thread base set");
        Ok(match moved {
            Some(moved) => format!(
                "🌿 This thread's branch `{}` is now compared with `{target}` (from {}): `/loop diff` and its pull request target `{target}`. Its commits stay as they are (no rebase).",
                moved.branch,
                short(&moved.base_commit)
            ),
            None => format!("🌿 This thread's branch will start from `{target}`."),
        })
    }

    /// `/loop diff`: `Some` is the answer; `None` when the diff is being read and will be
    /// posted (git on a large branch, an upload: never on the path that takes in messages).
    pub(super) async fn diff_command(
        &self,
        channel: &ChannelKey,
    ) -> Result<Option<String>, OrchestratorError> {
        if channel.thread_id.is_none() {
            return Ok(Some(
                "`/loop diff` works in a thread: each thread has its own branch. Send it there."
                    .to_owned(),
            ));
        }
        let Some(record) = self.inner.store.thread_branch(channel).await? else {
            return Ok(Some(match self.checkout(channel).await? {
                Checkout::Repo(_) => {
                    "This thread has no branch yet: its first turn creates one.".to_owned()
                }
                Checkout::NotGit(dir) => not_git(&dir, "there is no branch to diff"),
                Checkout::Unavailable(why) => format!("⚠️ {why}"),
            }));
        };
        let (this, channel) = (self.clone(), channel.clone());
        self.inner.tracker.spawn(async move {
            if let Err(err) = this.post_diff(&channel, &record).await {
                tracing::warn!(channel = %channel, error = %err, "cannot answer /loop diff");
            }
        });
        Ok(None)
    }

    /// Reads the branch's diff and posts it: a message, or a file with the summary.
    async fn post_diff(
        &self,
        channel: &ChannelKey,
        record: &loop_store::ThreadBranch,
    ) -> Result<(), OrchestratorError> {
        let diff = match diff::branch_diff(record).await {
            Ok(diff) => diff,
            Err(BranchError::Store(err)) => return Err(err.into()),
            Err(err) => {
                let text = format!("⚠️ Cannot diff `{}`: {err}", record.branch);
                return self.notify(channel, &text).await;
            }
        };
        let (name, comment, bytes) = match diff.reply() {
            DiffReply::Inline(text) => return self.notify(channel, &text).await,
            DiffReply::File {
                name,
                comment,
                bytes,
            } => (name, comment, bytes),
        };
        let adapter = self.adapter(channel.platform)?;
        let posted = tokio::time::timeout(
            UPLOAD_TIMEOUT,
            adapter.post_file(channel, &name, &bytes, &comment),
        )
        .await;
        let why = match posted {
            Ok(Ok(_)) => {
                tracing::info!(channel = %channel, file = %name, bytes = bytes.len(), "diff posted as a file");
                return Ok(());
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {}s", UPLOAD_TIMEOUT.as_secs()),
        };
        tracing::warn!(channel = %channel, file = %name, error = %why, "cannot attach a diff");
        let text = format!(
            "{}\n⚠️ The diff could not be attached ({why}).",
            diff.summary()
        );
        self.notify(channel, &text).await
    }

    /// The repository `channel`'s threads branch from, or why there is none.
    async fn checkout(&self, channel: &ChannelKey) -> Result<Checkout, OrchestratorError> {
        if !self.inner.config.git.worktrees {
            return Ok(Checkout::Unavailable(
                "`git.worktrees` is off: threads work in the channel's directory itself, without branches.".to_owned(),
            ));
        }
        let dir = match self.turn_work_dir(channel).await? {
            Ok(dir) => dir,
            Err(why) => return Ok(Checkout::Unavailable(why)),
        };
        Ok(match Repo::open(&dir).await {
            Ok(Some(repo)) => Checkout::Repo(repo),
            Ok(None) => Checkout::NotGit(dir),
            Err(err) => Checkout::Unavailable(format!(
                "cannot read the git repository in `{}`: {err}",
                dir.display()
            )),
        })
    }
}

/// "the repository's current branch, `main` now", as new threads would find it.
async fn current_branch(repo: &Repo) -> String {
    match repo.current_branch().await {
        Ok(Some(branch)) => format!("the repository's current branch, `{branch}` now"),
        Ok(None) => "the repository's current branch (none is checked out now)".to_owned(),
        Err(err) => format!("the repository's current branch (unreadable now: {err})"),
    }
}

fn not_git(dir: &std::path::Path, so: &str) -> String {
    format!(
        "📁 `{}` is not a git repository: threads here edit it in place, so {so}.",
        dir.display()
    )
}

fn not_a_revision(name: &str, repo: &Repo) -> String {
    format!(
        "⚠️ `{name}` is not a branch, tag or commit of `{}`.",
        repo.path().display()
    )
}

/// A commit as people quote it.
fn short(commit: &str) -> String {
    format!("`{}`", commit.get(..7).unwrap_or(commit))
}
