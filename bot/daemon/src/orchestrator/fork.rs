//! `/loop fork N PROMPT`: N threads try one prompt on N branches from one base, and a
//! comparison is posted where it was asked.
//!
//! The base is resolved to a commit once, and each variant's branch is claimed from that commit
//! before its first turn, so every variant starts from the same code whatever moves meanwhile.
//! Each variant is a thread of its own, opened the way a scheduled task's run opens one (on a
//! platform without threads, a thread key of the channel), whose request is the prompt plus a
//! line saying which variant it is: an agent can take its own approach, and a scripted test
//! model can tell the variants apart. Its turns are ordinary turns (worktree, auto-commit,
//! answer in the thread); when a variant's turn ends and every variant has finished, the
//! comparison is queued in one transaction with the fork marked reported. The fork is in the
//! store before any thread opens (`loop_store::forks`), so a restart resumes opening and still
//! reports it.

use loop_adapter::{Author, ChannelKey, Message, PlatformKind};
use loop_git::{DiffStat, Repo};
use loop_store::{
    ForkRecord, ForkState, NewFork, RunStatus, StoreError, VariantOutcome, fork_message_id,
};

use super::{Orchestrator, OrchestratorError};
use crate::branches::{self, BranchError, BranchSettings, ResolvedBase};
use crate::text::clip;

/// Characters of the fork id in its variants' branch names and thread keys.
const FORK_ID_CHARS: usize = 4;
/// Characters of the prompt in a variant thread's title.
const TITLE_PROMPT_CHARS: usize = 60;
/// Characters of the prompt in the comparison's heading.
const HEADING_PROMPT_CHARS: usize = 80;
/// Characters of a line quoted from an agent's answer (its first line, its tests).
const QUOTED_LINE_CHARS: usize = 160;

impl Orchestrator {
    /// `/loop fork N PROMPT`: records the fork, opens its variants' threads and enqueues their
    /// requests; the answer says where the comparison will come.
    pub(super) async fn fork_command(
        &self,
        channel: &ChannelKey,
        author: &Author,
        count: u32,
        prompt: String,
    ) -> Result<String, OrchestratorError> {
        if !self.inner.config.git.worktrees {
            return Ok("⚠️ `/loop fork` runs each variant on a branch of its own: it needs `git.worktrees` on.".to_owned());
        }
        let project_dir = match self.turn_work_dir(channel).await? {
            Ok(dir) => dir,
            Err(reason) => return Ok(format!("⚠️ {reason}")),
        };
        let base = match branches::resolve_base(&self.inner.store, channel, &project_dir).await {
            Ok(Some(base)) => base,
            Ok(None) => {
                return Ok(format!(
                    "⚠️ `/loop fork` runs each variant on a branch of its own, but `{}` is not a git repository (`/loop dir` points this channel at one).",
                    project_dir.display()
                ));
            }
            Err(BranchError::Store(err)) => return Err(err.into()),
            Err(err) => return Ok(format!("⚠️ Cannot find the commit to fork from: {err}")),
        };
        let fork = self
            .inner
            .store
            .create_fork(NewFork {
                id: uuid::Uuid::new_v4().simple().to_string(),
                channel: channel.clone(),
                prompt,
                count,
                requested_by: author.id.clone(),
                requested_by_name: author.name.clone(),
                repo_root: base.repo_root.display().to_string(),
                base_ref: base.base_ref.clone(),
                base_commit: base.base_commit.clone(),
            })
            .await?;
        tracing::info!(channel = %channel, fork = %fork.id, count, base = %base.base_ref, commit = %base.base_commit, "fork recorded");
        Ok(match self.start_fork(&fork).await? {
            Ok(()) => format!(
                "🔀 Trying this {count} ways, each in a thread of its own on its own branch, all from `{}` @ {}. The comparison comes here when every variant has finished.",
                fork.base_ref,
                short_commit(&fork.base_commit)
            ),
            Err(why) => format!("⚠️ The fork did not start: {why}"),
        })
    }

    /// Opens the fork's threads that are not open yet, claims each variant's branch from the
    /// fork's base commit, enqueues each variant's request and marks the fork running. Every
    /// step is idempotent, so a start that finds the fork still opening runs this again.
    /// `Err` (the fork is abandoned) says why it could not start.
    async fn start_fork(&self, fork: &ForkRecord) -> Result<Result<(), String>, OrchestratorError> {
        let store = &self.inner.store;
        let Ok(asked) = fork.channel_key.parse::<ChannelKey>() else {
            return self
                .abandon_fork(fork, "its channel key is malformed")
                .await;
        };
        let recorded = store.fork_variants(&fork.id).await?;
        let mut threads = Vec::new();
        for variant in 1..=fork.count {
            let thread = match recorded.iter().find(|v| v.variant == variant) {
                Some(known) => known.thread_key.clone(),
                None => {
                    let title = variant_title(variant, fork.count, &fork.prompt);
                    let thread = match self.open_run_thread(&asked, &title).await {
                        Ok(Some(thread)) => thread,
                        // No threads on this platform: a thread key of the channel keeps the
                        // variant's session, worktree and turns apart all the same.
                        Ok(None) => ChannelKey::thread(
                            asked.platform,
                            asked.channel_id.clone(),
                            format!("fork-{}-{variant}", short_fork_id(&fork.id)),
                        ),
                        Err(err) => {
                            tracing::warn!(fork = %fork.id, variant, error = %err, "cannot open a fork variant's thread");
                            let why = format!("cannot open a thread for variant {variant}: {err}");
                            return self.abandon_fork(fork, &why).await;
                        }
                    };
                    // Recorded at once: a restart does not open this variant's thread again.
                    store
                        .add_fork_variant(&fork.id, variant, &thread)
                        .await?
                        .thread_key
                }
            };
            let Ok(thread) = thread.parse::<ChannelKey>() else {
                return self
                    .abandon_fork(fork, &format!("variant {variant} has a malformed thread"))
                    .await;
            };
            threads.push((variant, thread));
        }
        let base = ResolvedBase {
            repo_root: fork.repo_root.clone().into(),
            base_ref: fork.base_ref.clone(),
            base_commit: fork.base_commit.clone(),
        };
        let git = &self.inner.config.git;
        let settings = BranchSettings {
            worktrees_root: git.worktrees_dir.clone(),
            prefix: git.branch_prefix.clone(),
        };
        let hint = fork.prompt.lines().next().unwrap_or_default();
        for (variant, thread) in &threads {
            let short = format!("v{variant}-{}", short_fork_id(&fork.id));
            match branches::claim_branch_from(store, thread, &base, &settings, hint, &short).await {
                Ok(_) => {}
                Err(BranchError::Store(StoreError::Conflict(why))) => {
                    return self.abandon_fork(fork, &why).await;
                }
                Err(BranchError::Store(err)) => return Err(err.into()),
                Err(err) => return self.abandon_fork(fork, &err.to_string()).await,
            }
        }
        for (variant, thread) in threads {
            let message = Message {
                message_id: fork_message_id(&fork.id, variant),
                channel: thread,
                author: Author {
                    id: fork.requested_by.clone(),
                    name: fork.requested_by_name.clone(),
                    is_bot: false,
                    roles: Vec::new(),
                },
                text: variant_request(&fork.prompt, variant, fork.count),
                triggers: true,
                work_dir: None,
            };
            // A duplicate after a restart is a no-op: each variant runs once.
            self.accept_message(message).await?;
        }
        store
            .set_fork_state(&fork.id, ForkState::Opening, ForkState::Running)
            .await?;
        tracing::info!(fork = %fork.id, "fork variants enqueued");
        self.report_fork_if_done(&fork.id).await?;
        Ok(Ok(()))
    }

    async fn abandon_fork(
        &self,
        fork: &ForkRecord,
        why: &str,
    ) -> Result<Result<(), String>, OrchestratorError> {
        self.inner
            .store
            .set_fork_state(&fork.id, ForkState::Opening, ForkState::Abandoned)
            .await?;
        tracing::warn!(fork = %fork.id, reason = why, "fork abandoned");
        Ok(Err(why.to_owned()))
    }

    /// A turn in `channel` ended: when it is a fork's variant and that fork's last one to
    /// finish, the comparison goes out. Failures are logged; the next start tries again.
    pub(super) async fn after_variant_turn(&self, channel: &ChannelKey) {
        let variant = match self.inner.store.fork_variant_of(channel).await {
            Ok(Some(variant)) => variant,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(channel = %channel, error = %err, "cannot look up the thread's fork");
                return;
            }
        };
        if let Err(err) = self.report_fork_if_done(&variant.fork_id).await {
            tracing::warn!(fork = %variant.fork_id, error = %err, "cannot report the fork");
        }
    }

    /// At start: forks the last daemon left opening are opened the rest of the way, and those
    /// whose variants all finished while it was down (or just before) are reported.
    pub(super) async fn resume_forks(&self) -> Result<(), OrchestratorError> {
        for fork in self.inner.store.unfinished_forks().await? {
            match fork.state {
                ForkState::Opening => {
                    tracing::info!(fork = %fork.id, "opening the rest of a fork the last daemon started");
                    if let Err(why) = self.start_fork(&fork).await?
                        && let Ok(channel) = fork.channel_key.parse::<ChannelKey>()
                    {
                        self.notify(&channel, &format!("⚠️ The fork did not start: {why}"))
                            .await?;
                    }
                }
                _ => self.report_fork_if_done(&fork.id).await?,
            }
        }
        Ok(())
    }

    /// Queues the fork's comparison when it is running and every variant has finished.
    async fn report_fork_if_done(&self, fork_id: &str) -> Result<(), OrchestratorError> {
        let store = &self.inner.store;
        let fork = store.fork(fork_id).await?;
        if fork.state != ForkState::Running {
            return Ok(());
        }
        let outcomes = store.fork_outcomes(fork_id).await?;
        let all_in = usize::try_from(fork.count).is_ok_and(|count| outcomes.len() == count);
        if !all_in || !outcomes.iter().all(VariantOutcome::is_finished) {
            return Ok(());
        }
        let repo = match Repo::open(std::path::Path::new(&fork.repo_root)).await {
            Ok(repo) => repo,
            Err(err) => {
                tracing::warn!(fork = %fork.id, error = %err, "cannot open the fork's repository to compare its branches");
                None
            }
        };
        let mut reports = Vec::new();
        for outcome in &outcomes {
            reports.push(self.variant_report(&fork, outcome, repo.as_ref()).await?);
        }
        let text = comparison(&fork, &reports);
        if let Some(outbox_id) = store.report_fork(&fork.id, &text).await? {
            tracing::info!(fork = %fork.id, outbox_id, "fork reported");
            self.deliver_soon();
        }
        Ok(())
    }

    /// What one variant left: its branch and what the branch changed since the fork's base,
    /// how its turn ended, and its answer.
    async fn variant_report(
        &self,
        fork: &ForkRecord,
        outcome: &VariantOutcome,
        repo: Option<&Repo>,
    ) -> Result<VariantReport, OrchestratorError> {
        let thread = outcome.variant.thread_key.parse::<ChannelKey>().ok();
        let branch = match &thread {
            Some(thread) => self
                .inner
                .store
                .thread_branch(thread)
                .await?
                .map(|b| b.branch),
            None => None,
        };
        let changes = match (repo, &branch) {
            (Some(repo), Some(branch)) => {
                match branch_changes(repo, &fork.base_commit, branch).await {
                    Ok(changes) => Some(changes),
                    Err(err) => {
                        tracing::warn!(fork = %fork.id, branch = %branch, error = %err, "cannot measure a variant's branch");
                        None
                    }
                }
            }
            _ => None,
        };
        let run = outcome.run.as_ref();
        Ok(VariantReport {
            variant: outcome.variant.variant,
            pointer: match thread {
                Some(thread) if thread.platform == PlatformKind::Local => format!("`{thread}`"),
                _ => format!("“🔀 Variant {}/{}”", outcome.variant.variant, fork.count),
            },
            branch,
            changes,
            status: run.map_or(RunStatus::Failed, |r| r.status),
            answer: run.and_then(|r| r.answer.clone()).unwrap_or_default(),
            error: run.and_then(|r| r.error.clone()),
        })
    }
}

/// The commits a variant's branch has over the fork's base, and what they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BranchChanges {
    head: String,
    commits: u64,
    stat: DiffStat,
}

async fn branch_changes(
    repo: &Repo,
    base_commit: &str,
    branch: &str,
) -> Result<BranchChanges, loop_git::GitError> {
    let head = repo.resolve(branch).await?;
    let (commits, stat) = if head.as_str() == base_commit {
        (0, DiffStat::default())
    } else {
        (
            repo.commits_ahead(base_commit, head.as_str()).await?,
            repo.diff_stat(base_commit, head.as_str()).await?,
        )
    };
    Ok(BranchChanges {
        head: head.as_str().to_owned(),
        commits,
        stat,
    })
}

/// One variant as the comparison shows it.
#[derive(Debug, Clone)]
struct VariantReport {
    variant: u32,
    /// How a person finds the variant's thread.
    pointer: String,
    branch: Option<String>,
    /// `None` when the branch could not be measured.
    changes: Option<BranchChanges>,
    status: RunStatus,
    answer: String,
    error: Option<String>,
}

/// The title of variant `variant`'s thread: "🔀 Variant 2/3: PROMPT".
fn variant_title(variant: u32, count: u32, prompt: &str) -> String {
    format!(
        "🔀 Variant {variant}/{count}: {}",
        clip(
            prompt.lines().next().unwrap_or_default(),
            TITLE_PROMPT_CHARS
        )
    )
}

/// What variant `variant` is asked: the prompt, and which of the variants this one is (the
/// agent sees it; the fake model's scripts tell variants apart by it).
fn variant_request(prompt: &str, variant: u32, count: u32) -> String {
    format!(
        "{}\n\n(Variant {variant} of {count}: {count} agents get this request at once, each on a branch of its own from the same commit, and people compare the results. Take the approach you think best.)",
        prompt.trim_end()
    )
}

/// The comparison: one line per variant (its branch, commit, files changed and lines, how it
/// ended), the first line of its answer and the tests it reported, then what to do next.
fn comparison(fork: &ForkRecord, reports: &[VariantReport]) -> String {
    let mut text = format!(
        "🔀 **{} variants** of “{}” from `{}` @ {}: all finished.\n",
        fork.count,
        clip(
            fork.prompt.lines().next().unwrap_or_default(),
            HEADING_PROMPT_CHARS
        ),
        fork.base_ref,
        short_commit(&fork.base_commit)
    );
    for report in reports {
        text.push_str(&format!(
            "\n**{}.** {} ",
            report.variant,
            status_mark(report.status)
        ));
        match &report.branch {
            Some(branch) => text.push_str(&format!("`{branch}`")),
            None => text.push_str("no branch"),
        }
        match &report.changes {
            Some(changes) if changes.commits > 0 => {
                text.push_str(&format!(" · commit `{}`", short_commit(&changes.head)));
                if changes.commits > 1 {
                    text.push_str(&format!(" ({} commits)", changes.commits));
                }
                let files = changes.stat.files.len();
                text.push_str(&format!(
                    " · {files} file{} changed, +{} −{}",
                    if files == 1 { "" } else { "s" },
                    changes.stat.added(),
                    changes.stat.removed()
                ));
            }
            Some(_) => text.push_str(" · no changes"),
            None if report.branch.is_some() => text.push_str(" · changes unknown"),
            None => {}
        }
        text.push_str(&format!(" · {}", report.pointer));
        if report.status != RunStatus::Succeeded {
            let why = match report.error.as_deref().and_then(first_line) {
                Some(error) => error,
                None => report.status.as_str().replace('_', " "),
            };
            text.push_str(&format!("\n> {why}"));
            continue;
        }
        if let Some(first) = first_line(&report.answer) {
            text.push_str(&format!("\n> {first}"));
        }
        if let Some(tests) = reported_tests(&report.answer) {
            text.push_str(&format!("\n🧪 {tests}"));
        }
    }
    text.push_str("\n\nKeep the one you like: `/loop pr` in its thread turns it into a pull request (`/loop diff` there shows all of it). Nothing needs dropping: the other branches stay in the repository until someone deletes them.");
    text
}

fn status_mark(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "✅",
        RunStatus::TimedOut => "⏱️",
        RunStatus::Cancelled => "🛑",
        _ => "❌",
    }
}

/// The answer's first line with words, without Markdown heading or list marks.
fn first_line(answer: &str) -> Option<String> {
    answer
        .lines()
        .map(unmarked)
        .find(|line| !line.is_empty())
        .map(|line| clip(line, QUOTED_LINE_CHARS))
}

/// The first line after the answer's first that reports tests ("Tests: 12 passed", "ran
/// `cargo test`"), if the agent wrote one: agents say what they ran, and a comparison without
/// it hides the most telling part.
fn reported_tests(answer: &str) -> Option<String> {
    answer
        .lines()
        .map(unmarked)
        .filter(|line| !line.is_empty())
        .skip(1)
        .find(|line| {
            line.split(|c: char| !c.is_ascii_alphanumeric())
                .map(str::to_ascii_lowercase)
                .any(|word| word.starts_with("test") || word == "pytest")
        })
        .map(|line| clip(line, QUOTED_LINE_CHARS))
}

/// A line without its Markdown heading, quote or list marks.
fn unmarked(line: &str) -> &str {
    line.trim()
        .trim_start_matches(['#', '>', '*', '-', ' '])
        .trim()
}

fn short_commit(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn short_fork_id(id: &str) -> &str {
    id.get(..FORK_ID_CHARS).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_git::FileStat;

    fn fork() -> ForkRecord {
        ForkRecord {
            id: "ab12cd34".into(),
            channel_key: "slack:C1".into(),
            prompt: "Tighten the README\nkeep the tone".into(),
            count: 3,
            requested_by: "UALICE".into(),
            requested_by_name: "alice".into(),
            repo_root: "/srv/app".into(),
            base_ref: "main".into(),
            base_commit: "3f2c1d0e".repeat(5),
            state: ForkState::Running,
            created_at: 0,
            reported_at: None,
        }
    }

    fn file(path: &str, added: u64, removed: u64) -> FileStat {
        FileStat {
            path: path.into(),
            renamed_from: None,
            added: Some(added),
            removed: Some(removed),
        }
    }

    fn report(variant: u32, status: RunStatus, answer: &str) -> VariantReport {
        VariantReport {
            variant,
            pointer: format!("“🔀 Variant {variant}/3”"),
            branch: Some(format!("loop/tighten-the-readme-v{variant}-ab12")),
            changes: Some(BranchChanges {
                head: format!("{variant}a2b3c4d5e6f").repeat(4),
                commits: 1,
                stat: DiffStat {
                    files: vec![file("README.md", 2, 1), file("NOTES.md", 3, 0)],
                },
            }),
            status,
            answer: answer.into(),
            error: None,
        }
    }

    #[test]
    fn the_comparison_shows_each_variant_in_one_message() {
        let mut failed = report(3, RunStatus::TimedOut, "");
        failed.changes = Some(BranchChanges {
            head: fork().base_commit,
            commits: 0,
            stat: DiffStat::default(),
        });
        failed.error = Some("the turn timed out after 600s\nmore detail".into());
        let mut two = report(
            2,
            RunStatus::Succeeded,
            "## Shortened it\n\nAll tests pass (12).",
        );
        two.changes.as_mut().expect("changes").commits = 2;
        let text = comparison(
            &fork(),
            &[
                report(
                    1,
                    RunStatus::Succeeded,
                    "Rewrote the intro.\nTests: tests pass",
                ),
                two,
                failed,
            ],
        );
        let expected = "🔀 **3 variants** of “Tighten the README” from `main` @ 3f2c1d0: all finished.

**1.** ✅ `loop/tighten-the-readme-v1-ab12` · commit `1a2b3c4` · 2 files changed, +5 −1 · “🔀 Variant 1/3”
> Rewrote the intro.
🧪 Tests: tests pass
**2.** ✅ `loop/tighten-the-readme-v2-ab12` · commit `2a2b3c4` (2 commits) · 2 files changed, +5 −1 · “🔀 Variant 2/3”
> Shortened it
🧪 All tests pass (12).
**3.** ⏱️ `loop/tighten-the-readme-v3-ab12` · no changes · “🔀 Variant 3/3”
> the turn timed out after 600s

Keep the one you like: `/loop pr` in its thread turns it into a pull request (`/loop diff` there shows all of it). Nothing needs dropping: the other branches stay in the repository until someone deletes them.";
        assert_eq!(text, expected);
    }

    #[test]
    fn answers_are_quoted_by_their_first_line_and_reported_tests() {
        assert_eq!(first_line("\n\n# Done\nmore").as_deref(), Some("Done"));
        assert_eq!(first_line("  \n").as_deref(), None);
        assert_eq!(
            reported_tests("Done.\n- `cargo test`: 3 passed").as_deref(),
            Some("`cargo test`: 3 passed")
        );
        assert_eq!(reported_tests("Done, nothing ran."), None);
        assert_eq!(reported_tests("All tests pass.\nNothing else."), None);
        assert_eq!(
            reported_tests("Done in /srv/contest.\nRan pytest: 4 passed\n").as_deref(),
            Some("Ran pytest: 4 passed")
        );
        assert_eq!(reported_tests("Done.\nSee /srv/latest/notes."), None);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abcd", 4), "abcd");
    }

    #[test]
    fn each_variant_is_told_which_one_it_is() {
        assert_eq!(
            variant_title(2, 3, "Tighten the README\nkeep the tone"),
            "🔀 Variant 2/3: Tighten the README"
        );
        let request = variant_request("Tighten the README\nkeep the tone\n", 2, 3);
        assert!(
            request.starts_with("Tighten the README\nkeep the tone\n\n(Variant 2 of 3: 3 agents"),
            "{request}"
        );
    }
}
