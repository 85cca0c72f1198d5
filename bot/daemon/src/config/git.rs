//! `git`: a thread is a branch (see [`crate::branches`]). Which switches a project file may
//! set: committing and pushing are the project's habit; where worktrees live and the tokens
//! that push are the host's, global-only.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::layer::{GateDecision, GitLayer, GitRemoteConfig};
use super::merge::{expand_home, set};

/// The effective `git` section.
#[derive(Debug, Clone, Serialize)]
pub struct GitConfig {
    /// Each thread of a channel whose directory is a git repository works in a worktree on
    /// its own branch. Global-only: it decides where a thread's session lives.
    pub worktrees: bool,
    /// Where thread worktrees are created: outside `~/.loop`, which containers never see.
    pub worktrees_dir: PathBuf,
    /// The first component of thread branch names (`loop/fix-login-a1b2`).
    pub branch_prefix: String,
    /// Commit what a turn changed at its end, on the thread's branch.
    pub auto_commit: bool,
    /// Push the thread's branch after every turn that committed.
    pub push_after_turn: bool,
    /// A thread's worktree is removed after this many days without a turn (its branch stays;
    /// never while the branch has commits the remote lacks). 0 keeps worktrees.
    pub remove_idle_days: u64,
    /// Who loop's own commits are by.
    pub author_name: String,
    pub author_email: String,
    /// Hosts loop pushes to and opens pull requests on, with their tokens.
    pub remotes: Vec<GitRemoteConfig>,
    /// What happens when the agent asks, through its MCP tools, to push or open a pull
    /// request: `approve` (a person decides in the thread), `allow`, or `deny`.
    pub agent_publish: GateDecision,
}

impl GitConfig {
    pub fn defaults(home: &Path) -> GitConfig {
        GitConfig {
            worktrees: true,
            worktrees_dir: home.join(".loop-worktrees"),
            branch_prefix: "loop".to_owned(),
            auto_commit: true,
            push_after_turn: false,
            remove_idle_days: 14,
            author_name: "loop".to_owned(),
            author_email: "loop@localhost".to_owned(),
            remotes: Vec::new(),
            agent_publish: GateDecision::Approve,
        }
    }

    /// The remote entry whose prefix is the longest match for `url`.
    pub fn remote_for(&self, url: &str) -> Option<&GitRemoteConfig> {
        self.remotes
            .iter()
            .filter(|r| !r.url_prefix.is_empty() && url.starts_with(&r.url_prefix))
            .max_by_key(|r| r.url_prefix.len())
    }
}

impl GitConfig {
    /// The global file (or the environment) sets any key.
    pub(super) fn apply_global(&mut self, layer: GitLayer, home: &Path) {
        let GitLayer {
            worktrees,
            worktrees_dir,
            branch_prefix,
            auto_commit,
            push_after_turn,
            remove_idle_days,
            author_name,
            author_email,
            remotes,
            agent_publish,
        } = layer;
        set(&mut self.worktrees, worktrees);
        if let Some(dir) = worktrees_dir.filter(|d| !d.is_empty()) {
            self.worktrees_dir = expand_home(&dir, home);
        }
        set(&mut self.branch_prefix, branch_prefix);
        set(&mut self.auto_commit, auto_commit);
        set(&mut self.push_after_turn, push_after_turn);
        set(&mut self.remove_idle_days, remove_idle_days);
        set(&mut self.author_name, author_name);
        set(&mut self.author_email, author_email);
        set(&mut self.remotes, remotes);
        set(&mut self.agent_publish, agent_publish);
    }

    /// A project file sets its habits (committing, the branch prefix) and may switch pushing
    /// off, never on: the file is in a repository the agent writes, and pushing is a person's
    /// decision. Each key it could not set is named in `ignored`.
    pub(super) fn apply_project(&mut self, layer: GitLayer, ignored: &mut Vec<&'static str>) {
        set(&mut self.auto_commit, layer.auto_commit);
        set(&mut self.branch_prefix, layer.branch_prefix);
        match layer.push_after_turn {
            Some(false) => self.push_after_turn = false,
            Some(true) => ignored.push("git.push_after_turn=true"),
            None => {}
        }
        for (present, name) in [
            (layer.worktrees.is_some(), "git.worktrees"),
            (layer.worktrees_dir.is_some(), "git.worktrees_dir"),
            (layer.remove_idle_days.is_some(), "git.remove_idle_days"),
            (layer.author_name.is_some(), "git.author_name"),
            (layer.author_email.is_some(), "git.author_email"),
            (layer.remotes.is_some(), "git.remotes"),
            (layer.agent_publish.is_some(), "git.agent_publish"),
        ] {
            if present {
                ignored.push(name);
            }
        }
    }
}
