//! A thread is a branch: when a channel's directory is a git repository, each thread works in
//! its own worktree on its own branch, cut from a base (the thread's or channel's
//! `/loop base`, else the repository's current branch). Two threads of one project never
//! touch each other's files, and the main checkout is left as it is.
//!
//! The branch is recorded before its worktree is created (`Store::claim_thread_branch`), so a
//! follow-up, a redelivery or a restart after a crash finds the same branch; a worktree whose
//! directory is gone is created again on that branch, its commits kept. Every git process is
//! `loop-git`'s hardened one: the repository was written by the agent.

pub mod diff;
pub mod idle;
pub mod spare;

use std::path::{Path, PathBuf};

use loop_adapter::ChannelKey;
use loop_git::{CommitId, CommitInfo, DiffStat, GitError, Repo, Signature, Worktree, branch_name};
use loop_store::{BranchState, NewThreadBranch, Store, StoreError, ThreadBranch};
use sha2::{Digest, Sha256};

/// Where a channel's thread worktrees go and how their branches are named.
#[derive(Debug, Clone)]
pub struct BranchSettings {
    /// `git.worktrees_dir`.
    pub worktrees_root: PathBuf,
    /// `git.branch_prefix`.
    pub prefix: String,
}

/// A thread's worktree, ready for a turn.
#[derive(Debug, Clone)]
pub struct ThreadWorktree {
    pub record: ThreadBranch,
    /// The worktree on the host: the turn's work directory.
    pub worktree: PathBuf,
    /// Git in that worktree, hardened.
    pub git: Worktree,
    /// The branch's head when the turn started (what the turn's changes are measured from).
    pub head: Option<CommitId>,
    /// The repository's shared git directory, which the container needs mounted.
    pub git_common_dir: PathBuf,
    /// True when this call created the worktree (the thread's first turn, or after a restart).
    pub created: bool,
}

/// Why a thread's worktree could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the repository has no branch checked out and no base is set (/loop base BRANCH)")]
    NoBase,
    #[error(
        "this thread works on `{branch}` in {repo}, not in this directory's repository; start a new thread here"
    )]
    OtherRepository { branch: String, repo: String },
    #[error("the repository {repo} is not there any more")]
    NoRepository { repo: String },
    #[error("`{base}` shares no history with `{branch}`")]
    UnrelatedBase { base: String, branch: String },
}

/// The worktree `thread` works in when `work_dir` is in a git repository, created on first
/// use; `None` when it is not (the thread then works in `work_dir`, as before). `hint` (the
/// prompt's first line) and `short_id` name a new branch; worktrees go under
/// `worktrees_root/{repository}-{hash}/`.
pub async fn prepare_thread_worktree(
    store: &Store,
    thread: &ChannelKey,
    work_dir: &Path,
    settings: &BranchSettings,
    hint: &str,
    short_id: &str,
) -> Result<Option<ThreadWorktree>, BranchError> {
    let Some(repo) = Repo::open(work_dir).await? else {
        return Ok(None);
    };
    let record = match store.thread_branch(thread).await? {
        Some(record) => record,
        None => {
            let base_ref = match store.git_base(thread).await? {
                Some(base) => base,
                None => repo.current_branch().await?.ok_or(BranchError::NoBase)?,
            };
            let base_commit = repo.resolve(&base_ref).await?;
            let planned = planned_branch(
                settings,
                repo.path(),
                base_ref,
                base_commit.as_str(),
                hint,
                short_id,
            );
            // Recorded before the worktree exists: a crash in between finds this branch.
            store.claim_thread_branch(thread, planned).await?
        }
    };
    if Path::new(&record.repo_root) != repo.path() {
        return Err(BranchError::OtherRepository {
            branch: record.branch,
            repo: record.repo_root,
        });
    }
    let path = PathBuf::from(&record.worktree);
    let (worktree, created) = match repo.worktree(&path).await? {
        Some(existing) => (existing, false),
        None if repo.resolve(&record.branch).await.is_ok() => {
            (repo.attach_worktree(&path, &record.branch).await?, true)
        }
        None => (
            repo.add_worktree(&path, &record.branch, &record.base_commit)
                .await?,
            true,
        ),
    };
    // Either write also notes the thread worked on its branch now (idle worktree removal).
    if record.state == BranchState::Removed {
        store
            .set_thread_branch_state(thread, BranchState::Active)
            .await?;
    } else {
        store.touch_thread_branch(thread).await?;
    }
    let head = worktree.head_commit().await?;
    Ok(Some(ThreadWorktree {
        record,
        worktree: worktree.path().to_path_buf(),
        git: worktree,
        head,
        git_common_dir: repo.common_dir().to_path_buf(),
        created,
    }))
}

/// A commit new branches start from, and the branch (or base) it was the head of.
#[derive(Debug, Clone)]
pub struct ResolvedBase {
    /// The repository's top level on the host.
    pub repo_root: PathBuf,
    pub base_ref: String,
    /// The commit's full object name.
    pub base_commit: String,
}

/// Where a branch cut now for `channel` starts: the head of the channel's own branch when it
/// is a thread that has one, else the thread's or channel's base (`/loop base`), else the
/// repository's current branch; resolved to a commit once, so that several branches cut from
/// it start at the same commit whatever moves meanwhile. `None` when `work_dir` is not in a
/// git repository.
pub async fn resolve_base(
    store: &Store,
    channel: &ChannelKey,
    work_dir: &Path,
) -> Result<Option<ResolvedBase>, BranchError> {
    let Some(repo) = Repo::open(work_dir).await? else {
        return Ok(None);
    };
    let base_ref = match store.thread_branch(channel).await? {
        Some(own) if Path::new(&own.repo_root) != repo.path() => {
            return Err(BranchError::OtherRepository {
                branch: own.branch,
                repo: own.repo_root,
            });
        }
        Some(own) => own.branch,
        None => match store.git_base(channel).await? {
            Some(base) => base,
            None => repo.current_branch().await?.ok_or(BranchError::NoBase)?,
        },
    };
    let base_commit = repo.resolve(&base_ref).await?;
    Ok(Some(ResolvedBase {
        repo_root: repo.path().to_path_buf(),
        base_ref,
        base_commit: base_commit.as_str().to_owned(),
    }))
}

/// Records `thread`'s branch (named from `hint` and `short_id`) cut from `base`, before its
/// first turn: that turn's [`prepare_thread_worktree`] finds it and creates the worktree at
/// `base.base_commit`. A thread that has a branch keeps it (the claim is idempotent).
pub async fn claim_branch_from(
    store: &Store,
    thread: &ChannelKey,
    base: &ResolvedBase,
    settings: &BranchSettings,
    hint: &str,
    short_id: &str,
) -> Result<ThreadBranch, BranchError> {
    let planned = planned_branch(
        settings,
        &base.repo_root,
        base.base_ref.clone(),
        &base.base_commit,
        hint,
        short_id,
    );
    Ok(store.claim_thread_branch(thread, planned).await?)
}

/// A new thread branch: its name, and its worktree's place under `settings.worktrees_root`.
fn planned_branch(
    settings: &BranchSettings,
    repo_root: &Path,
    base_ref: String,
    base_commit: &str,
    hint: &str,
    short_id: &str,
) -> NewThreadBranch {
    let branch = branch_name(&settings.prefix, hint, short_id);
    NewThreadBranch {
        repo_root: repo_root.display().to_string(),
        worktree: worktree_path(&settings.worktrees_root, repo_root, &branch)
            .display()
            .to_string(),
        branch,
        base_ref,
        base_commit: base_commit.to_owned(),
    }
}

/// What a finished turn left on its thread's branch.
#[derive(Debug, Clone)]
pub struct TurnChanges {
    pub branch: String,
    /// The commit loop made of the turn's uncommitted changes.
    pub commit: Option<CommitInfo>,
    /// The branch's head after the turn.
    pub head: Option<CommitId>,
    /// Commits the turn added (the agent's own and loop's).
    pub commits: u64,
    /// What the turn's commits changed, from the head before the turn.
    pub stat: DiffStat,
    /// Changes left uncommitted (auto-commit off).
    pub uncommitted: bool,
}

/// How a turn's own commit is made: its message and who it is by.
#[derive(Debug, Clone)]
pub struct AutoCommit {
    pub message: String,
    pub author: Signature,
    pub co_author: Option<Signature>,
}

/// Commits what the turn left uncommitted (with `auto_commit`) and measures what the turn
/// changed on the branch.
pub async fn conclude_turn(
    worktree: &ThreadWorktree,
    auto_commit: Option<&AutoCommit>,
) -> Result<TurnChanges, BranchError> {
    let git = &worktree.git;
    let commit = match auto_commit {
        Some(auto) => {
            git.commit_all(&auto.message, &auto.author, auto.co_author.as_ref())
                .await?
        }
        None => None,
    };
    let uncommitted = auto_commit.is_none() && git.status_changed().await?;
    let head = git.head_commit().await?;
    let (stat, commits) = match (&worktree.head, &head) {
        (Some(before), Some(after)) if before != after => (
            git.diff_stat(before.as_str(), after.as_str()).await?,
            git.commits_ahead(before.as_str(), after.as_str()).await?,
        ),
        _ => (DiffStat::default(), 0),
    };
    Ok(TurnChanges {
        branch: worktree.record.branch.clone(),
        commit,
        head,
        commits,
        stat,
        uncommitted,
    })
}

/// Files listed in a turn's summary of changes; the rest are counted.
const MAX_LISTED_FILES: usize = 10;

impl TurnChanges {
    /// The lines that end a turn's answer: the branch, the commit, files and +/- lines.
    /// `None` when the turn changed nothing.
    pub fn summary(&self) -> Option<String> {
        if self.commits == 0 && !self.uncommitted {
            return None;
        }
        let mut text = format!("🌿 `{}`", self.branch);
        match (&self.commit, &self.head) {
            (Some(commit), _) => text.push_str(&format!(" · commit `{}`", commit.id.short())),
            (None, Some(head)) if self.commits > 0 => {
                text.push_str(&format!(" · head `{}`", head.short()))
            }
            _ => {}
        }
        if self.commits > 1 {
            text.push_str(&format!(" ({} commits)", self.commits));
        }
        let files = self.stat.files.len();
        if files > 0 {
            text.push_str(&format!(
                " · {files} file{} changed, +{} −{}",
                if files == 1 { "" } else { "s" },
                self.stat.added(),
                self.stat.removed()
            ));
        }
        text.push_str(&file_lines(&self.stat));
        if self.uncommitted {
            text.push_str("\n(changes left uncommitted: `git.auto_commit` is off)");
        }
        Some(text)
    }
}

/// One line per changed file (`• `path` +3 −1`), the first [`MAX_LISTED_FILES`] of them,
/// each starting with a newline.
pub fn file_lines(stat: &DiffStat) -> String {
    let mut text = String::new();
    for file in stat.files.iter().take(MAX_LISTED_FILES) {
        let counts = match (file.added, file.removed) {
            (Some(added), Some(removed)) => format!("+{added} −{removed}"),
            _ => "binary".to_owned(),
        };
        match &file.renamed_from {
            Some(from) => text.push_str(&format!("\n• `{from}` → `{}` {counts}", file.path)),
            None => text.push_str(&format!("\n• `{}` {counts}", file.path)),
        }
    }
    let files = stat.files.len();
    if files > MAX_LISTED_FILES {
        text.push_str(&format!("\n• … and {} more", files - MAX_LISTED_FILES));
    }
    text
}

impl ThreadWorktree {
    /// The first line of the thread's status: "working on `loop/x` from `main` @ 3f2c1d0".
    pub fn status_line(&self) -> String {
        let base = &self.record.base_commit;
        format!(
            "🌿 working on `{}` from `{}` @ {}",
            self.record.branch,
            self.record.base_ref,
            base.get(..7).unwrap_or(base)
        )
    }
}

/// `root/{name}-{hash}/{branch with / as -}`: one directory per repository (two checkouts with
/// the same name stay apart), one per branch.
fn worktree_path(root: &Path, repo: &Path, branch: &str) -> PathBuf {
    let name = repo
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".to_owned());
    let hash = hex::encode(Sha256::digest(repo.as_os_str().as_encoded_bytes()));
    root.join(format!("{name}-{}", &hash[..8]))
        .join(branch.replace('/', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_adapter::PlatformKind;
    use loop_store::test_support::TestDb;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    fn settings(root: &Path) -> BranchSettings {
        BranchSettings {
            worktrees_root: root.to_path_buf(),
            prefix: "loop".to_owned(),
        }
    }

    fn repository(dir: &Path) -> PathBuf {
        let repo = dir.join("app");
        std::fs::create_dir_all(&repo).expect("repo");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "draft\n").expect("readme");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        git(&repo, &["branch", "develop"]);
        repo
    }

    #[tokio::test]
    async fn each_thread_gets_its_own_branch_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = repository(dir.path());
        let root = dir.path().join("worktrees");
        let db = TestDb::sqlite().await;
        let store = db.store();
        let first = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
        let second = ChannelKey::thread(PlatformKind::Slack, "C1", "2.0");

        let one = prepare_thread_worktree(
            store,
            &first,
            &repo,
            &settings(&root),
            "Fix the login",
            "a1b2",
        )
        .await
        .expect("prepare")
        .expect("a git repository");
        assert!(one.created);
        assert_eq!(one.record.branch, "loop/fix-the-login-a1b2");
        assert_eq!(one.record.base_ref, "main");
        assert!(
            one.worktree.starts_with(&root),
            "{}",
            one.worktree.display()
        );
        assert_eq!(
            one.git_common_dir,
            std::fs::canonicalize(repo.join(".git")).expect("git dir")
        );
        assert_eq!(
            git(&one.worktree, &["branch", "--show-current"]),
            one.record.branch
        );

        // A follow-up in the same thread: the same worktree, nothing new.
        let again = prepare_thread_worktree(
            store,
            &first,
            &repo,
            &settings(&root),
            "Also the logout",
            "c3d4",
        )
        .await
        .expect("prepare")
        .expect("a git repository");
        assert!(!again.created);
        assert_eq!(again.worktree, one.worktree);
        assert_eq!(again.record.branch, one.record.branch);

        // Another thread, from the channel's base: its own branch and files.
        store
            .set_git_base(&first.parent(), Some("develop"), "slack:U1")
            .await
            .expect("base");
        let two = prepare_thread_worktree(
            store,
            &second,
            &repo,
            &settings(&root),
            "Fix the login",
            "e5f6",
        )
        .await
        .expect("prepare")
        .expect("a git repository");
        assert_eq!(two.record.base_ref, "develop");
        assert_ne!(two.worktree, one.worktree);
        std::fs::write(one.worktree.join("README.md"), "one\n").expect("edit one");
        std::fs::write(two.worktree.join("README.md"), "two\n").expect("edit two");
        assert_eq!(
            std::fs::read_to_string(repo.join("README.md")).expect("main"),
            "draft\n"
        );

        // The worktree's directory is gone (a crash, a clean-up): it comes back on the same
        // branch, with the branch's commits.
        git(&one.worktree, &["commit", "-q", "-am", "one"]);
        std::fs::remove_dir_all(&one.worktree).expect("remove");
        let back =
            prepare_thread_worktree(store, &first, &repo, &settings(&root), "ignored", "zzzz")
                .await
                .expect("prepare")
                .expect("a git repository");
        assert!(back.created);
        assert_eq!(back.record.branch, one.record.branch);
        assert_eq!(
            std::fs::read_to_string(back.worktree.join("README.md")).expect("back"),
            "one\n"
        );
    }

    #[tokio::test]
    async fn branches_claimed_from_one_base_start_at_its_commit_after_the_base_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = repository(dir.path());
        let root = dir.path().join("worktrees");
        let db = TestDb::sqlite().await;
        let store = db.store();
        let channel = ChannelKey::channel(PlatformKind::Slack, "C1");
        let base = resolve_base(store, &channel, &repo)
            .await
            .expect("resolve")
            .expect("a git repository");
        assert_eq!(base.base_ref, "main");
        assert_eq!(
            base.base_commit.as_str(),
            git(&repo, &["rev-parse", "main"])
        );

        // Someone commits on main before the variants' first turns.
        std::fs::write(repo.join("README.md"), "moved on\n").expect("edit");
        git(&repo, &["commit", "-q", "-am", "later"]);
        let mut heads = Vec::new();
        for (thread, short) in [("1.0", "v1-ab12"), ("2.0", "v2-ab12")] {
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", thread);
            let claimed =
                claim_branch_from(store, &thread, &base, &settings(&root), "Tighten it", short)
                    .await
                    .expect("claim");
            assert_eq!(claimed.branch, format!("loop/tighten-it-{short}"));
            let worktree = prepare_thread_worktree(
                store,
                &thread,
                &repo,
                &settings(&root),
                "ignored: the branch was claimed",
                "zzzz",
            )
            .await
            .expect("prepare")
            .expect("a git repository");
            assert_eq!(worktree.record, claimed);
            assert_eq!(
                worktree.status_line().split(" @ ").nth(1),
                base.base_commit.get(..7)
            );
            heads.push(git(&worktree.worktree, &["rev-parse", "HEAD"]));
            assert_eq!(
                std::fs::read_to_string(worktree.worktree.join("README.md")).expect("readme"),
                "draft\n"
            );
        }
        assert_eq!(
            heads,
            [base.base_commit.as_str(), base.base_commit.as_str()]
        );

        // Asked inside a thread that has a branch: that branch's head.
        let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
        let own = prepare_thread_worktree(store, &thread, &repo, &settings(&root), "", "")
            .await
            .expect("prepare")
            .expect("repo");
        std::fs::write(own.worktree.join("NOTES.md"), "n\n").expect("notes");
        git(&own.worktree, &["add", "-A"]);
        git(&own.worktree, &["commit", "-q", "-m", "notes"]);
        let inside = resolve_base(store, &thread, &repo)
            .await
            .expect("resolve")
            .expect("repo");
        assert_eq!(inside.base_ref, own.record.branch);
        assert_eq!(
            inside.base_commit,
            git(&own.worktree, &["rev-parse", "HEAD"])
        );
    }

    #[tokio::test]
    async fn a_directory_outside_git_keeps_working_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::sqlite().await;
        let thread = ChannelKey::thread(PlatformKind::Local, "c", "t");
        let none = prepare_thread_worktree(
            db.store(),
            &thread,
            dir.path(),
            &settings(&dir.path().join("worktrees")),
            "x",
            "1",
        )
        .await
        .expect("prepare");
        assert!(none.is_none());
        assert_eq!(db.store().thread_branch(&thread).await.expect("read"), None);
    }
}
