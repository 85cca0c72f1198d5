//! Host-side git for loop: a thread's worktree and branch, the turn's commit, the diff people
//! review.
//!
//! The repository is written by the agent and by strangers, so every git process this crate
//! starts is hardened against it in one place (`command.rs`): no hooks, fsmonitor, filter or
//! textconv drivers, pagers, editors, ssh commands, credential helpers, signing programs or
//! protocols come from the repository's config, and work tree and git directory are pinned
//! once the repository is opened.
//!
//! It drives the git CLI rather than a library (gix, git2): the CLI is what people and the
//! agent use on the same repository, so worktrees, the index and every config knob behave
//! exactly as git documents, and the hardening is git's own: its environment variables and
//! command-scope config, which win over anything in `.git/config`.
//!
//! Core types: [`Repo`] (open, worktrees), [`Worktree`] (status, commit, diff),
//! [`GitError`]; pure helpers [`branch_name`], [`commit_message`], [`parse_numstat`],
//! [`split_patch`].

mod command;
mod diff;
mod error;
mod message;
mod naming;
mod owner;
mod patch;
mod push;
mod repo;

pub use command::GIT_TIMEOUT;
pub use diff::{DiffStat, FileStat, parse_numstat};
pub use error::{GitError, scrub_credentials};
pub use message::{BODY_WIDTH, MAX_SUBJECT_CHARS, Signature, commit_message, with_co_author};
pub use naming::branch_name;
pub use patch::{FilePatch, Hunk, LineKind, PatchLine, split_patch};
pub use push::{HttpCredentials, PushTarget, shell_dir, url_host};
pub use repo::{CommitId, CommitInfo, Repo, TreeId, Worktree, WorktreeEntry};

#[cfg(test)]
mod story_tests;
