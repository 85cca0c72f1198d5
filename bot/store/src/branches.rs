//! Git per thread: which branch and worktree a thread works on, and the base branch a channel
//! or thread asked for (`/loop base`).
//!
//! A thread's branch is recorded before its worktree is created ([`Store::claim_thread_branch`]
//! is idempotent: the first claim wins and later ones get it back), so a restart after a crash
//! finds the same branch and recreates the worktree rather than cutting a second branch.

use loop_adapter::ChannelKey;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use super::connection::{Store, StoreError};
use super::entity::{git_bases, thread_branches};
use super::records::now_ms;

/// Whether a thread's worktree is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchState {
    /// The worktree exists (or is about to be created).
    Active,
    /// The worktree was removed; the branch stays in the repository.
    Removed,
}

impl BranchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BranchState::Active => "active",
            BranchState::Removed => "removed",
        }
    }

    fn parse(text: &str) -> BranchState {
        match text {
            "removed" => BranchState::Removed,
            _ => BranchState::Active,
        }
    }
}

/// A thread's branch, as planned before its worktree is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewThreadBranch {
    pub repo_root: String,
    pub worktree: String,
    pub branch: String,
    pub base_ref: String,
    pub base_commit: String,
}

/// A thread's branch and worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadBranch {
    pub channel_key: String,
    pub repo_root: String,
    pub worktree: String,
    pub branch: String,
    pub base_ref: String,
    pub base_commit: String,
    pub state: BranchState,
    pub created_at: i64,
    pub updated_at: i64,
    /// The last commit loop pushed from this branch.
    pub pushed_commit: Option<String>,
    /// The pull (merge) request loop opened for it.
    pub pull_request_url: Option<String>,
}

impl From<thread_branches::Model> for ThreadBranch {
    fn from(row: thread_branches::Model) -> Self {
        ThreadBranch {
            channel_key: row.channel_key,
            repo_root: row.repo_root,
            worktree: row.worktree,
            branch: row.branch,
            base_ref: row.base_ref,
            base_commit: row.base_commit,
            state: BranchState::parse(&row.state),
            created_at: row.created_at,
            updated_at: row.updated_at,
            pushed_commit: row.pushed_commit,
            pull_request_url: row.pull_request_url,
        }
    }
}

impl Store {
    /// The branch `thread` works on, if it has one.
    pub async fn thread_branch(
        &self,
        thread: &ChannelKey,
    ) -> Result<Option<ThreadBranch>, StoreError> {
        Ok(thread_branches::Entity::find_by_id(thread.to_string())
            .one(self.db())
            .await?
            .map(ThreadBranch::from))
    }

    /// Records `planned` as `thread`'s branch unless it already has one, and returns the one
    /// it has: a second claim (a redelivery, a restart) gets the first back unchanged.
    /// `Conflict` when another thread holds the same branch name in the same repository.
    pub async fn claim_thread_branch(
        &self,
        thread: &ChannelKey,
        planned: NewThreadBranch,
    ) -> Result<ThreadBranch, StoreError> {
        let now = now_ms();
        let row = thread_branches::ActiveModel {
            channel_key: Set(thread.to_string()),
            repo_root: Set(planned.repo_root.clone()),
            worktree: Set(planned.worktree),
            branch: Set(planned.branch.clone()),
            base_ref: Set(planned.base_ref),
            base_commit: Set(planned.base_commit),
            state: Set(BranchState::Active.as_str().to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
            pushed_commit: Set(None),
            pull_request_url: Set(None),
        };
        let inserted = thread_branches::Entity::insert(row)
            .on_conflict_do_nothing_on([thread_branches::Column::ChannelKey])
            .exec(self.db())
            .await;
        match inserted {
            Ok(_) => {}
            // The unique (repo, branch) index: someone else's branch.
            Err(err) if is_unique_violation(&err) => {
                if self.thread_branch(thread).await?.is_none() {
                    return Err(StoreError::Conflict(format!(
                        "branch {} of {} belongs to another thread",
                        planned.branch, planned.repo_root
                    )));
                }
            }
            Err(err) => return Err(err.into()),
        }
        self.thread_branch(thread)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("thread branch of {thread}")))
    }

    /// Marks `thread`'s worktree as removed (its branch stays) or active again.
    pub async fn set_thread_branch_state(
        &self,
        thread: &ChannelKey,
        state: BranchState,
    ) -> Result<(), StoreError> {
        thread_branches::Entity::update_many()
            .col_expr(thread_branches::Column::State, state.as_str().into())
            .col_expr(thread_branches::Column::UpdatedAt, now_ms().into())
            .filter(thread_branches::Column::ChannelKey.eq(thread.to_string()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Records that `commit` of `thread`'s branch is on the remote now.
    pub async fn record_branch_push(
        &self,
        thread: &ChannelKey,
        commit: &str,
    ) -> Result<(), StoreError> {
        thread_branches::Entity::update_many()
            .col_expr(thread_branches::Column::PushedCommit, commit.into())
            .filter(thread_branches::Column::ChannelKey.eq(thread.to_string()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Records the pull request opened for `thread`'s branch.
    pub async fn record_pull_request(
        &self,
        thread: &ChannelKey,
        url: &str,
    ) -> Result<(), StoreError> {
        thread_branches::Entity::update_many()
            .col_expr(thread_branches::Column::PullRequestUrl, url.into())
            .filter(thread_branches::Column::ChannelKey.eq(thread.to_string()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Points `thread`'s branch at another base (`/loop base` in a thread that has a branch):
    /// its diff and pull request compare with `base_ref` from `base_commit` (the merge base)
    /// on. The branch's commits are not touched. `NotFound` when the thread has no branch.
    pub async fn set_thread_branch_base(
        &self,
        thread: &ChannelKey,
        base_ref: &str,
        base_commit: &str,
    ) -> Result<ThreadBranch, StoreError> {
        thread_branches::Entity::update_many()
            .col_expr(thread_branches::Column::BaseRef, base_ref.into())
            .col_expr(thread_branches::Column::BaseCommit, base_commit.into())
            .filter(thread_branches::Column::ChannelKey.eq(thread.to_string()))
            .exec(self.db())
            .await?;
        self.thread_branch(thread)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("thread branch of {thread}")))
    }

    /// Notes that `thread` worked on its branch now (for removing worktrees left idle).
    pub async fn touch_thread_branch(&self, thread: &ChannelKey) -> Result<(), StoreError> {
        thread_branches::Entity::update_many()
            .col_expr(thread_branches::Column::UpdatedAt, now_ms().into())
            .filter(thread_branches::Column::ChannelKey.eq(thread.to_string()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Active worktrees not worked on since `before_ms`, oldest first.
    pub async fn idle_thread_branches(
        &self,
        before_ms: i64,
    ) -> Result<Vec<ThreadBranch>, StoreError> {
        use sea_orm::QueryOrder;
        let rows = thread_branches::Entity::find()
            .filter(thread_branches::Column::State.eq(BranchState::Active.as_str()))
            .filter(thread_branches::Column::UpdatedAt.lt(before_ms))
            .order_by_asc(thread_branches::Column::UpdatedAt)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(ThreadBranch::from).collect())
    }

    /// The base branch new threads of `channel` start from: the thread's own `/loop base`,
    /// else its channel's, else `None` (the repository's current branch).
    pub async fn git_base(&self, channel: &ChannelKey) -> Result<Option<String>, StoreError> {
        for key in [channel.to_string(), channel.parent().to_string()] {
            if let Some(row) = git_bases::Entity::find_by_id(key).one(self.db()).await? {
                return Ok(Some(row.base_ref));
            }
        }
        Ok(None)
    }

    /// Sets (`Some`) or clears (`None`) the base branch of `channel` (a thread's key sets the
    /// thread's own).
    pub async fn set_git_base(
        &self,
        channel: &ChannelKey,
        base_ref: Option<&str>,
        set_by: &str,
    ) -> Result<(), StoreError> {
        let Some(base_ref) = base_ref else {
            git_bases::Entity::delete_by_id(channel.to_string())
                .exec(self.db())
                .await?;
            return Ok(());
        };
        let row = git_bases::ActiveModel {
            channel_key: Set(channel.to_string()),
            base_ref: Set(base_ref.to_owned()),
            set_by: Set(set_by.to_owned()),
            set_at: Set(now_ms()),
        };
        git_bases::Entity::insert(row)
            .on_conflict(
                OnConflict::column(git_bases::Column::ChannelKey)
                    .update_columns([
                        git_bases::Column::BaseRef,
                        git_bases::Column::SetBy,
                        git_bases::Column::SetAt,
                    ])
                    .to_owned(),
            )
            .exec(self.db())
            .await?;
        Ok(())
    }
}

/// Whether a driver error is a unique-constraint violation (SQLite or PostgreSQL).
fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;
    use loop_adapter::PlatformKind;

    fn planned(branch: &str) -> NewThreadBranch {
        NewThreadBranch {
            repo_root: "/srv/app".into(),
            worktree: format!("/srv/.loop-worktrees/app/{branch}"),
            branch: branch.into(),
            base_ref: "main".into(),
            base_commit: "3f2c1d0".into(),
        }
    }

    #[tokio::test]
    async fn a_thread_keeps_its_first_branch_and_branches_are_not_shared() {
        for db in TestDb::all().await {
            let store = db.store();
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
            let other = ChannelKey::thread(PlatformKind::Slack, "C1", "2.0");
            assert_eq!(store.thread_branch(&thread).await.expect("read"), None);

            let first = store
                .claim_thread_branch(&thread, planned("loop/fix-a1b2"))
                .await
                .expect("claim");
            assert_eq!(first.branch, "loop/fix-a1b2");
            assert_eq!(first.state, BranchState::Active);
            // A second claim (a restart, a redelivery) gets the first branch back.
            let again = store
                .claim_thread_branch(&thread, planned("loop/other-c3d4"))
                .await
                .expect("claim again");
            assert_eq!(again, first, "{}", db.backend());
            // Another thread cannot take the same branch of the same repository.
            let taken = store
                .claim_thread_branch(&other, planned("loop/fix-a1b2"))
                .await;
            assert!(
                matches!(taken, Err(StoreError::Conflict(_))),
                "{}: {taken:?}",
                db.backend()
            );
            let own = store
                .claim_thread_branch(&other, planned("loop/fix-e5f6"))
                .await
                .expect("own branch");
            assert_eq!(own.branch, "loop/fix-e5f6");

            store
                .set_thread_branch_state(&thread, BranchState::Removed)
                .await
                .expect("remove");
            let removed = store.thread_branch(&thread).await.expect("read");
            assert_eq!(removed.map(|b| b.state), Some(BranchState::Removed));
            let idle = store
                .idle_thread_branches(now_ms() + 1_000)
                .await
                .expect("idle");
            assert_eq!(
                idle.iter().map(|b| b.branch.as_str()).collect::<Vec<_>>(),
                ["loop/fix-e5f6"],
                "{}: removed worktrees are not idle ones",
                db.backend()
            );
        }
    }

    #[tokio::test]
    async fn a_push_and_a_pull_request_are_remembered_with_the_branch() {
        for db in TestDb::all().await {
            let store = db.store();
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
            store
                .claim_thread_branch(&thread, planned("loop/fix-a1b2"))
                .await
                .expect("claim");
            store
                .record_branch_push(&thread, "3f2c1d0aa")
                .await
                .expect("push");
            store
                .record_pull_request(&thread, "https://github.com/o/r/pull/7")
                .await
                .expect("pr");
            let branch = store
                .thread_branch(&thread)
                .await
                .expect("read")
                .expect("branch");
            assert_eq!(
                branch.pushed_commit.as_deref(),
                Some("3f2c1d0aa"),
                "{}",
                db.backend()
            );
            assert_eq!(
                branch.pull_request_url.as_deref(),
                Some("https://github.com/o/r/pull/7")
            );
            // A claim after a restart keeps what was pushed.
            let again = store
                .claim_thread_branch(&thread, planned("loop/other-c3d4"))
                .await
                .expect("claim again");
            assert_eq!(again.pushed_commit.as_deref(), Some("3f2c1d0aa"));
        }
    }

    #[tokio::test]
    async fn a_thread_branch_moves_to_another_base() {
        for db in TestDb::all().await {
            let store = db.store();
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
            let other = ChannelKey::thread(PlatformKind::Slack, "C1", "2.0");
            let missing = store
                .set_thread_branch_base(&thread, "develop", "abc1234")
                .await;
            assert!(
                matches!(missing, Err(StoreError::NotFound(_))),
                "{}: {missing:?}",
                db.backend()
            );
            let first = store
                .claim_thread_branch(&thread, planned("loop/fix-a1b2"))
                .await
                .expect("claim");
            store
                .claim_thread_branch(&other, planned("loop/fix-c3d4"))
                .await
                .expect("claim other");
            let moved = store
                .set_thread_branch_base(&thread, "develop", "9e8d7c6")
                .await
                .expect("move");
            assert_eq!(
                (moved.base_ref.as_str(), moved.base_commit.as_str()),
                ("develop", "9e8d7c6"),
                "{}",
                db.backend()
            );
            // Only the base changed: the branch, its worktree, its state are the same.
            assert_eq!(
                (moved.branch, moved.worktree, moved.state),
                (first.branch, first.worktree, first.state)
            );
            let untouched = store.thread_branch(&other).await.expect("read");
            assert_eq!(
                untouched.map(|b| b.base_ref),
                Some("main".to_owned()),
                "{}",
                db.backend()
            );
        }
    }

    #[tokio::test]
    async fn a_thread_base_overrides_its_channel_base() {
        for db in TestDb::all().await {
            let store = db.store();
            let channel = ChannelKey::channel(PlatformKind::Slack, "C1");
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
            assert_eq!(store.git_base(&thread).await.expect("read"), None);
            store
                .set_git_base(&channel, Some("develop"), "slack:U1")
                .await
                .expect("set");
            assert_eq!(
                store.git_base(&thread).await.expect("read").as_deref(),
                Some("develop"),
                "a thread inherits its channel's base"
            );
            store
                .set_git_base(&thread, Some("release/2.0"), "slack:U2")
                .await
                .expect("set");
            store
                .set_git_base(&channel, Some("main"), "slack:U1")
                .await
                .expect("replace");
            assert_eq!(
                store.git_base(&thread).await.expect("read").as_deref(),
                Some("release/2.0")
            );
            store
                .set_git_base(&thread, None, "slack:U2")
                .await
                .expect("clear");
            assert_eq!(
                store.git_base(&thread).await.expect("read").as_deref(),
                Some("main")
            );
        }
    }
}
