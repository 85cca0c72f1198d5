//! A spare agent's worktree: cut at the head of the base a new thread of the project would
//! start from, on a placeholder branch, before any thread asks. The thread that adopts the
//! spare renames the branch to its own name and records it as its branch; the worktree stays
//! where it is, because the spare's container has it mounted at that path.

use std::path::{Path, PathBuf};

use loop_adapter::ChannelKey;
use loop_git::{Repo, branch_name};
use loop_store::{NewThreadBranch, Store};

use super::{BranchError, BranchSettings, worktree_path};

/// The worktree made for a spare.
#[derive(Debug, Clone)]
pub struct SpareWorktree {
    pub path: PathBuf,
    /// The placeholder branch, renamed when a thread adopts the worktree.
    pub branch: String,
    pub repo_root: PathBuf,
    pub git_common_dir: PathBuf,
    /// The base a new thread of `channel` would start from, and its commit then.
    pub base_ref: String,
    pub base_commit: String,
}

/// Cuts a spare worktree for the next new thread of `channel` (a channel, or any thread of
/// it) in `project_dir`. `None` when the project is not a git repository.
pub async fn make_spare_worktree(
    store: &Store,
    channel: &ChannelKey,
    project_dir: &Path,
    settings: &BranchSettings,
    spare_id: &str,
) -> Result<Option<SpareWorktree>, BranchError> {
    let Some(repo) = Repo::open(project_dir).await? else {
        return Ok(None);
    };
    let base_ref = match store.git_base(&channel.parent()).await? {
        Some(base) => base,
        None => repo.current_branch().await?.ok_or(BranchError::NoBase)?,
    };
    let base_commit = repo.resolve(&base_ref).await?;
    // `loop/spare-1a2b3c4d`: under the thread branches' prefix, plainly not a thread's.
    let branch = branch_name(&settings.prefix, spare_id, "");
    let path = worktree_path(&settings.worktrees_root, repo.path(), &branch);
    let worktree = repo
        .add_worktree(&path, &branch, base_commit.as_str())
        .await?;
    Ok(Some(SpareWorktree {
        path: worktree.path().to_path_buf(),
        branch,
        repo_root: repo.path().to_path_buf(),
        git_common_dir: repo.common_dir().to_path_buf(),
        base_ref,
        base_commit: base_commit.as_str().to_owned(),
    }))
}

/// Makes `spare` the worktree of `thread`, a thread without a branch yet: its branch is
/// renamed to the name the thread's own would have had, and recorded. `Ok(false)` when the
/// spare does not fit: the thread has a branch, or its base is another branch or has moved
/// since the spare was cut (the spare is stale then).
pub async fn adopt_spare_worktree(
    store: &Store,
    thread: &ChannelKey,
    spare: &SpareWorktree,
    settings: &BranchSettings,
    hint: &str,
    short_id: &str,
) -> Result<bool, BranchError> {
    if store.thread_branch(thread).await?.is_some() {
        return Ok(false);
    }
    let Some(repo) = Repo::open(&spare.repo_root).await? else {
        return Ok(false);
    };
    let base_ref = match store.git_base(thread).await? {
        Some(base) => base,
        None => match repo.current_branch().await? {
            Some(branch) => branch,
            None => return Ok(false),
        },
    };
    if base_ref != spare.base_ref || repo.resolve(&base_ref).await?.as_str() != spare.base_commit {
        return Ok(false);
    }
    let branch = branch_name(&settings.prefix, hint, short_id);
    repo.rename_branch(&spare.branch, &branch).await?;
    store
        .claim_thread_branch(
            thread,
            NewThreadBranch {
                repo_root: spare.repo_root.display().to_string(),
                worktree: spare.path.display().to_string(),
                branch,
                base_ref,
                base_commit: spare.base_commit.clone(),
            },
        )
        .await?;
    Ok(true)
}

/// Removes a spare's worktree and its placeholder branch (no thread adopted it).
pub async fn discard_spare_worktree(spare: &SpareWorktree) -> Result<(), BranchError> {
    let Some(repo) = Repo::open(&spare.repo_root).await? else {
        return Ok(());
    };
    repo.discard_worktree(&spare.path).await?;
    repo.delete_branch(&spare.branch).await?;
    Ok(())
}
