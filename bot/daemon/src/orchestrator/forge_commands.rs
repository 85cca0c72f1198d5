//! `/loop push` and `/loop pr`: a thread's branch leaves the host, with credentials the
//! agent never sees (see [`crate::forge`]). Both run in the background: a push may take a
//! while, and the intake of other messages must not wait for it.

use loop_adapter::ChannelKey;
use loop_git::{CommitId, Repo};
use loop_store::ThreadBranch;

use super::{Orchestrator, OrchestratorError};
use crate::forge::{self, PullRequestSpec, Remote};

/// The remote loop pushes threads' branches to.
const REMOTE: &str = "origin";
/// Commit subjects listed in a pull request's description.
const MAX_LISTED_COMMITS: usize = 20;

/// A branch on its remote.
pub(super) struct Pushed {
    branch: ThreadBranch,
    head: CommitId,
    remote: Remote,
    /// Subjects of the commits the base lacks, oldest first.
    subjects: Vec<String>,
}

impl Pushed {
    pub(super) fn describe(&self) -> String {
        let commits = self.subjects.len();
        format!(
            "⬆️ Pushed `{}` @ `{}` ({commits} commit{} ahead of `{}`): {}",
            self.branch.branch,
            self.head.short(),
            if commits == 1 { "" } else { "s" },
            self.branch.base_ref,
            self.remote.branch_url(&self.branch.branch)
        )
    }
}

impl Orchestrator {
    /// `/loop push`.
    pub(super) async fn push_command(
        &self,
        channel: &ChannelKey,
    ) -> Result<String, OrchestratorError> {
        self.in_background(channel, |this, channel| async move {
            match this.push_branch(&channel).await? {
                Ok(pushed) => Ok(pushed.describe()),
                Err(why) => Ok(format!("⚠️ Nothing was pushed: {why}")),
            }
        });
        Ok("⬆️ Pushing this thread's branch…".to_owned())
    }

    /// `/loop pr [TITLE]`: push, then open the request (or find the one open).
    pub(super) async fn pr_command(
        &self,
        channel: &ChannelKey,
        title: Option<String>,
    ) -> Result<String, OrchestratorError> {
        self.in_background(channel, |this, channel| async move {
            Ok(this.push_and_open(&channel, title).await?.1)
        });
        Ok("🔀 Pushing this thread's branch and opening a pull request…".to_owned())
    }

    /// What the agent asked for through its MCP tools (`push_branch`, `open_pull_request`),
    /// once a person allowed it: done now, told in the thread, and returned to the agent.
    pub async fn publish_for_agent(
        &self,
        channel: &ChannelKey,
        pull_request: bool,
        title: Option<String>,
    ) -> Result<(bool, String), OrchestratorError> {
        let (done, text) = if pull_request {
            self.push_and_open(channel, title).await?
        } else {
            match self.push_branch(channel).await? {
                Ok(pushed) => (true, pushed.describe()),
                Err(why) => (false, format!("⚠️ Nothing was pushed: {why}")),
            }
        };
        self.notify(channel, &text).await?;
        Ok((done, text))
    }

    /// Pushes the thread's branch and opens its pull request; whether that worked, and what
    /// the thread is told.
    async fn push_and_open(
        &self,
        channel: &ChannelKey,
        title: Option<String>,
    ) -> Result<(bool, String), OrchestratorError> {
        let pushed = match self.push_branch(channel).await? {
            Ok(pushed) => pushed,
            Err(why) => {
                return Ok((
                    false,
                    format!("⚠️ No pull request: the branch could not be pushed: {why}"),
                ));
            }
        };
        let title = title
            .filter(|t| !t.trim().is_empty())
            .or_else(|| pushed.subjects.first().cloned())
            .unwrap_or_else(|| pushed.branch.branch.clone());
        let body = pull_request_body(&pushed);
        let spec = PullRequestSpec {
            head: &pushed.branch.branch,
            base: &pushed.branch.base_ref,
            title: &title,
            body: &body,
        };
        match forge::open_pull_request(&pushed.remote, &spec).await {
            Ok(pull) => {
                self.inner
                    .store
                    .record_pull_request(channel, &pull.url)
                    .await?;
                tracing::info!(channel = %channel, url = %pull.url, existed = pull.existed, "pull request");
                Ok((
                    true,
                    if pull.existed {
                        format!(
                            "🔀 Pushed `{}`; its pull request #{} was open already: {}",
                            pushed.head.short(),
                            pull.number,
                            pull.url
                        )
                    } else {
                        format!(
                            "🔀 Pull request #{} `{}` → `{}`: {}",
                            pull.number, pushed.branch.branch, pushed.branch.base_ref, pull.url
                        )
                    },
                ))
            }
            Err(err) => {
                tracing::warn!(channel = %channel, error = %err, "cannot open the pull request");
                Ok((
                    false,
                    format!(
                        "⚠️ The branch is pushed ({}), but no pull request was opened: {err}",
                        pushed.remote.branch_url(&pushed.branch.branch)
                    ),
                ))
            }
        }
    }

    /// Runs `work` on the tracker and posts what it returns in `channel`.
    fn in_background<F, Fut>(&self, channel: &ChannelKey, work: F)
    where
        F: FnOnce(Orchestrator, ChannelKey) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<String, OrchestratorError>> + Send + 'static,
    {
        let (this, channel) = (self.clone(), channel.clone());
        self.inner.tracker.spawn(async move {
            let reply = match work(this.clone(), channel.clone()).await {
                Ok(reply) => reply,
                Err(err) => {
                    tracing::error!(channel = %channel, error = %err, "git command failed");
                    format!("⚠️ {err}")
                }
            };
            if let Err(err) = this.notify(&channel, &reply).await {
                tracing::error!(channel = %channel, error = %err, "cannot post the git command's result");
            }
        });
    }

    /// Pushes the thread's branch to its repository's `origin`. `Err` says, for the channel,
    /// why nothing was pushed.
    pub(super) async fn push_branch(
        &self,
        channel: &ChannelKey,
    ) -> Result<Result<Pushed, String>, OrchestratorError> {
        let store = &self.inner.store;
        let Some(branch) = store.thread_branch(channel).await? else {
            return Ok(Err(
                "this conversation has no branch (a thread gets one on its first turn in a git repository)".to_owned(),
            ));
        };
        let git = &self.inner.config.git;
        let prepared = async {
            let repo = Repo::open(std::path::Path::new(&branch.repo_root))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} is no longer a git repository", branch.repo_root))?;
            let url = repo
                .remote_url(REMOTE)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "the repository has no remote `{REMOTE}` (`git remote add {REMOTE} https://host/owner/repo.git` in {})",
                        branch.repo_root
                    )
                })?;
            let remote = forge::remote_from_url(git, &url).map_err(|e| e.to_string())?;
            let head = repo
                .resolve(&branch.branch)
                .await
                .map_err(|e| e.to_string())?;
            let subjects = repo
                .subjects(&branch.base_commit, head.as_str())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((repo, remote, head, subjects))
        };
        let (repo, remote, head, subjects) = match prepared.await {
            Ok(prepared) => prepared,
            Err(why) => return Ok(Err(why)),
        };
        if subjects.is_empty() {
            return Ok(Err(format!(
                "`{}` has no commits beyond `{}` yet",
                branch.branch, branch.base_ref
            )));
        }
        let shell = loop_git::shell_dir(
            &self.inner.config.loop_dir.join("git-push"),
            repo.common_dir(),
        );
        if let Err(err) = repo
            .push(&shell, &remote.push_target(), &head, &branch.branch)
            .await
        {
            tracing::warn!(channel = %channel, error = %err, "push failed");
            let hint = if remote.entry.is_none() {
                format!(
                    " (no token is configured for {}: add it to `git.remotes` in the global config)",
                    remote.origin
                )
            } else {
                String::new()
            };
            return Ok(Err(format!("{err}{hint}")));
        }
        store.record_branch_push(channel, head.as_str()).await?;
        tracing::info!(channel = %channel, branch = %branch.branch, commit = %head, "branch pushed");
        Ok(Ok(Pushed {
            branch,
            head,
            remote,
            subjects,
        }))
    }
}

/// What a pull request says: where it came from and its commits.
fn pull_request_body(pushed: &Pushed) -> String {
    let mut body = format!(
        "Work of a loop thread on `{}`, from `{}` @ {}.\n\nCommits:\n",
        pushed.branch.branch,
        pushed.branch.base_ref,
        pushed
            .branch
            .base_commit
            .get(..7)
            .unwrap_or(&pushed.branch.base_commit)
    );
    for subject in pushed.subjects.iter().take(MAX_LISTED_COMMITS) {
        body.push_str(&format!("- {subject}\n"));
    }
    if pushed.subjects.len() > MAX_LISTED_COMMITS {
        body.push_str(&format!(
            "- … and {} more\n",
            pushed.subjects.len() - MAX_LISTED_COMMITS
        ));
    }
    body
}
