//! Removing the worktrees of threads nobody worked in for `git.remove_idle_days`: disk space
//! back, the branch kept. A worktree goes only when nothing in it exists nowhere else: no
//! uncommitted changes, and every commit of its branch is on a remote (a remote-tracking
//! branch has it) or in its base (merged). The next message in the thread creates the
//! worktree again on the same branch (`prepare_thread_worktree`).

use std::path::Path;

use loop_adapter::ChannelKey;
use loop_git::CommitId;
use loop_store::{BranchState, Store, StoreError, ThreadBranch};

use super::BranchError;
use super::diff::open;

/// Milliseconds in a day, for `git.remove_idle_days`.
const DAY_MS: i64 = 86_400_000;

/// What the sweep did with one idle worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleOutcome {
    /// The worktree was removed; the branch stays.
    Removed,
    /// Its directory was already gone: it is recorded as removed.
    AlreadyGone,
    /// Kept: a turn is running in the thread.
    Busy,
    /// Kept: someone worked in the thread since it was found idle.
    Touched,
    /// Kept: the worktree has changes no commit holds.
    Uncommitted,
    /// Kept: this many commits are neither on a remote nor in the base.
    Unpushed(u64),
}

/// The time before which a worktree not worked in is idle, `idle_days` before `now_ms`;
/// `None` when worktrees are kept (`0`).
pub fn idle_cutoff(now_ms: i64, idle_days: u64) -> Option<i64> {
    (idle_days > 0).then(|| {
        let days = i64::try_from(idle_days).unwrap_or(i64::MAX);
        now_ms.saturating_sub(days.saturating_mul(DAY_MS))
    })
}

/// Removes the worktrees not worked in since `idle_before_ms` whose work is safe elsewhere.
/// `is_busy` says whether a turn runs in a thread now. Each worktree's outcome is returned;
/// a git failure on one does not stop the others.
pub async fn remove_idle_worktrees(
    store: &Store,
    idle_before_ms: i64,
    is_busy: impl Fn(&ChannelKey) -> bool,
) -> Result<Vec<(ThreadBranch, Result<IdleOutcome, BranchError>)>, StoreError> {
    let mut outcomes = Vec::new();
    for record in store.idle_thread_branches(idle_before_ms).await? {
        let Ok(thread) = record.channel_key.parse::<ChannelKey>() else {
            tracing::warn!(channel = %record.channel_key, "skipping a thread branch with a malformed channel");
            continue;
        };
        let outcome = if is_busy(&thread) {
            Ok(IdleOutcome::Busy)
        } else {
            remove_if_safe(store, &thread, &record).await
        };
        outcomes.push((record, outcome));
    }
    Ok(outcomes)
}

async fn remove_if_safe(
    store: &Store,
    thread: &ChannelKey,
    record: &ThreadBranch,
) -> Result<IdleOutcome, BranchError> {
    let repo = open(record).await?;
    let path = Path::new(&record.worktree);
    let Some(worktree) = repo.worktree(path).await? else {
        store
            .set_thread_branch_state(thread, BranchState::Removed)
            .await?;
        return Ok(IdleOutcome::AlreadyGone);
    };
    if worktree.status_changed().await? {
        return Ok(IdleOutcome::Uncommitted);
    }
    let base = match repo.resolve(&record.base_ref).await {
        Ok(base) => base,
        Err(_) => repo.resolve(&record.base_commit).await?,
    };
    // What the worktree has checked out and the thread's branch, should the agent have
    // switched branches there.
    let mut heads: Vec<CommitId> = worktree.head_commit().await?.into_iter().collect();
    if let Ok(branch) = repo.resolve(&record.branch).await
        && !heads.contains(&branch)
    {
        heads.push(branch);
    }
    // What loop pushed itself is on the remote even though its push, from a repository of
    // its own, left no remote-tracking branch here.
    let mut known = vec![base.as_str()];
    let pushed = match &record.pushed_commit {
        Some(pushed) => repo.resolve(pushed).await.ok(),
        None => None,
    };
    known.extend(pushed.as_ref().map(CommitId::as_str));
    let mut unpushed = 0;
    for head in &heads {
        unpushed += repo.unpushed_commits(head.as_str(), &known).await?;
    }
    if unpushed > 0 {
        return Ok(IdleOutcome::Unpushed(unpushed));
    }
    // A turn that started since the list was read has touched the record: leave it be.
    match store.thread_branch(thread).await? {
        Some(now) if now.updated_at == record.updated_at && now.state == BranchState::Active => {}
        _ => return Ok(IdleOutcome::Touched),
    }
    // Git itself refuses a worktree that changed in the meantime (or is locked).
    repo.remove_worktree(path).await?;
    store
        .set_thread_branch_state(thread, BranchState::Removed)
        .await?;
    Ok(IdleOutcome::Removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::branches::{BranchSettings, prepare_thread_worktree};
    use loop_adapter::PlatformKind;
    use loop_store::now_ms;
    use loop_store::test_support::TestDb;
    use std::path::PathBuf;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    fn repository(dir: &Path) -> PathBuf {
        let repo = dir.join("app");
        std::fs::create_dir_all(&repo).expect("repo");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "draft\n").expect("readme");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        repo
    }

    #[test]
    fn the_cutoff_is_days_before_now() {
        assert_eq!(idle_cutoff(10 * DAY_MS, 14), Some(-4 * DAY_MS));
        assert_eq!(idle_cutoff(20 * DAY_MS, 14), Some(6 * DAY_MS));
        assert_eq!(idle_cutoff(20 * DAY_MS, 0), None);
        assert_eq!(idle_cutoff(0, u64::MAX), Some(-i64::MAX));
    }

    /// Six threads left idle: the sweep removes only the worktrees whose work is safe
    /// elsewhere (merged, pushed, nothing done), keeps the branch, and the thread's next turn
    /// gets its worktree back. The clock is the cutoff handed in, not a wait.
    #[tokio::test]
    async fn idle_worktrees_go_only_when_their_work_is_safe_elsewhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = repository(dir.path());
        let settings = BranchSettings {
            worktrees_root: dir.path().join("worktrees"),
            prefix: "loop".to_owned(),
        };
        let db = TestDb::sqlite().await;
        let store = db.store();
        let thread = |ts: &str| ChannelKey::thread(PlatformKind::Slack, "C1", ts);
        let mut trees = Vec::new();
        for (ts, hint) in [
            ("1.0", "unpushed"),
            ("2.0", "dirty"),
            ("3.0", "merged"),
            ("4.0", "pushed"),
            ("5.0", "busy"),
            ("6.0", "pushed by loop"),
        ] {
            let prepared = prepare_thread_worktree(store, &thread(ts), &repo, &settings, hint, ts)
                .await
                .expect("prepare")
                .expect("a repository");
            trees.push(prepared);
        }
        let commit = |tree: &PathBuf, file: &str| {
            std::fs::write(tree.join(file), "work\n").expect("write");
            git(tree, &["add", "-A"]);
            git(tree, &["commit", "-q", "-m", file]);
        };
        commit(&trees[0].worktree, "unpushed.txt");
        commit(&trees[1].worktree, "dirty.txt");
        std::fs::write(trees[1].worktree.join("dirty.txt"), "more\n").expect("write");
        commit(&trees[2].worktree, "merged.txt");
        git(
            &repo,
            &["merge", "-q", "--no-edit", &trees[2].record.branch],
        );
        commit(&trees[3].worktree, "pushed.txt");
        let bare = dir.path().join("remote.git");
        git(dir.path(), &["init", "-q", "--bare", "remote.git"]);
        git(
            &repo,
            &["remote", "add", "origin", &bare.display().to_string()],
        );
        git(&repo, &["push", "-q", "origin", &trees[3].record.branch]);
        commit(&trees[4].worktree, "busy.txt");
        git(&repo, &["push", "-q", "origin", &trees[4].record.branch]);
        // Loop's own push leaves no remote-tracking branch; the store remembers it.
        commit(&trees[5].worktree, "pushed-by-loop.txt");
        let pushed = git(&trees[5].worktree, &["rev-parse", "HEAD"]);
        store
            .record_branch_push(&thread("6.0"), &pushed)
            .await
            .expect("record the push");

        // Nothing is idle for a clock that has not moved on.
        let cutoff = idle_cutoff(now_ms(), 14).expect("on");
        let none = remove_idle_worktrees(store, cutoff, |_| false)
            .await
            .expect("sweep");
        assert!(none.is_empty(), "{none:?}");

        // Fifteen days later.
        let later = idle_cutoff(now_ms() + 15 * DAY_MS, 14).expect("on");
        let busy = thread("5.0");
        let swept = remove_idle_worktrees(store, later, |t| *t == busy)
            .await
            .expect("sweep");
        let outcomes: Vec<(String, IdleOutcome)> = swept
            .into_iter()
            .map(|(record, outcome)| (record.channel_key, outcome.expect("no git failure")))
            .collect();
        let expected = [
            ("slack:C1:1.0", IdleOutcome::Unpushed(1)),
            ("slack:C1:2.0", IdleOutcome::Uncommitted),
            ("slack:C1:3.0", IdleOutcome::Removed),
            ("slack:C1:4.0", IdleOutcome::Removed),
            ("slack:C1:5.0", IdleOutcome::Busy),
            ("slack:C1:6.0", IdleOutcome::Removed),
        ];
        for (key, outcome) in expected.clone() {
            assert!(
                outcomes.contains(&(key.to_owned(), outcome.clone())),
                "{key}: {outcome:?} expected in {outcomes:?}"
            );
        }
        assert_eq!(outcomes.len(), expected.len(), "{outcomes:?}");
        for (i, tree) in trees.iter().enumerate() {
            let removed = matches!(i, 2 | 3 | 5);
            assert_eq!(!tree.worktree.exists(), removed, "{}", tree.record.branch);
            let state = store
                .thread_branch(&thread(&format!("{}.0", i + 1)))
                .await
                .expect("read")
                .expect("a branch")
                .state;
            let expected = if removed {
                BranchState::Removed
            } else {
                BranchState::Active
            };
            assert_eq!(state, expected, "{}", tree.record.branch);
        }
        // The branches stay, with their commits.
        assert!(git(&repo, &["branch", "--list", &trees[3].record.branch]).contains("loop/"));
        // Swept again, a removed worktree is no longer idle.
        let again = remove_idle_worktrees(store, later, |t| *t == busy)
            .await
            .expect("sweep");
        assert_eq!(again.len(), 3, "{again:?}");

        // The thread's next turn gets its worktree back, on its branch with its commit.
        let back = prepare_thread_worktree(store, &thread("4.0"), &repo, &settings, "x", "y")
            .await
            .expect("prepare")
            .expect("a repository");
        assert!(back.created);
        assert_eq!(back.worktree, trees[3].worktree);
        assert!(back.worktree.join("pushed.txt").exists());

        // A worktree whose directory is gone is recorded as removed.
        std::fs::remove_dir_all(&trees[0].worktree).expect("rm");
        let gone = remove_idle_worktrees(store, later, |_| false)
            .await
            .expect("sweep");
        assert!(
            gone.iter().any(|(r, o)| r.channel_key == "slack:C1:1.0"
                && matches!(o, Ok(IdleOutcome::AlreadyGone))),
            "{gone:?}"
        );
    }
}
