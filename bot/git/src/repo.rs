//! A repository on the host and its work trees: open, worktrees, commits, diffs. Every call
//! runs git through `command::run`, pinned to the git directory and work tree found on open.

use std::path::{Path, PathBuf};

use crate::command::{self, Call, Owner, Pinned, Target};
use crate::diff::{DiffStat, parse_numstat};
use crate::error::GitError;
use crate::message::{Signature, with_co_author};
use crate::owner;

/// A commit's full object name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommitId(String);

impl CommitId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first seven characters, as people quote commits in chat.
    pub fn short(&self) -> &str {
        self.0.get(..7).unwrap_or(&self.0)
    }

    fn parse(command: &str, text: &str) -> Result<CommitId, GitError> {
        let text = text.trim();
        if text.len() >= 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CommitId(text.to_owned()))
        } else {
            Err(GitError::Output {
                command: command.to_owned(),
                detail: format!("not an object name: {text:?}"),
            })
        }
    }
}

/// A full object name as text (from the store, a test); anything else is refused.
impl std::str::FromStr for CommitId {
    type Err = GitError;

    fn from_str(text: &str) -> Result<CommitId, GitError> {
        CommitId::parse("object name", text).map_err(|_| GitError::InvalidArgument {
            what: "object name",
            value: text.to_owned(),
        })
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tree object's full name: a [`Worktree::snapshot`] of a work tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeId(String);

impl TreeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The commit `commit_all` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: CommitId,
    pub subject: String,
}

/// One entry of `git worktree list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorktreeEntry {
    pub path: PathBuf,
    /// `None` for a bare repository's entry.
    pub head: Option<CommitId>,
    /// The checked-out branch without `refs/heads/`; `None` when detached.
    pub branch: Option<String>,
    pub is_bare: bool,
    pub is_locked: bool,
    pub is_prunable: bool,
}

/// A git repository on the host, opened from a directory in one of its work trees.
#[derive(Clone, Debug)]
pub struct Repo {
    /// The work tree `open` was called in, with its git directory.
    checkout: Worktree,
    /// The directory shared by all work trees (`.git` of the main one).
    common_dir: PathBuf,
    /// Who new worktrees are handed to after git created them (see [`crate::owner`]).
    hand_over_to: Option<Owner>,
}

/// One work tree of a repository: the main checkout or a linked worktree.
#[derive(Clone, Debug)]
pub struct Worktree {
    target: Target,
}

impl Repo {
    /// The repository whose work tree contains `dir`, or `None` when `dir` is in no work tree
    /// (not in a repository, or inside a bare repository or a `.git` directory).
    ///
    /// `safe.directory` names `dir` and its ancestors only: the repository in hand, wherever
    /// its top is, and no other. A repository whose `core.worktree` puts the work tree
    /// anywhere else than beside its `.git` is refused (`GitError::Layout`).
    pub async fn open(dir: &Path) -> Result<Option<Repo>, GitError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| GitError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let discover = Target {
            dir: dir.clone(),
            pinned: None,
            safe_dirs: dir.ancestors().map(Path::to_path_buf).collect(),
            config_files: Vec::new(),
            run_as: None,
        };
        let inside = match command::run(
            &discover,
            &["rev-parse", "--is-inside-work-tree"],
            Call::default(),
        )
        .await
        {
            Ok(output) => output.text("rev-parse")?,
            Err(GitError::Failed { stderr, .. }) if stderr.contains("not a git repository") => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        if inside != "true" {
            return Ok(None);
        }
        let cmd = "rev-parse --show-toplevel";
        let paths = command::run(
            &discover,
            &[
                "rev-parse",
                "--path-format=absolute",
                "--show-toplevel",
                "--absolute-git-dir",
                "--git-common-dir",
            ],
            Call::default(),
        )
        .await?
        .text(cmd)?;
        let mut lines = paths.lines().map(PathBuf::from);
        let (Some(top), Some(git_dir), Some(common_dir)) =
            (lines.next(), lines.next(), lines.next())
        else {
            return Err(GitError::Output {
                command: cmd.into(),
                detail: format!("expected three paths, got {paths:?}"),
            });
        };
        let git_dir = std::fs::canonicalize(&git_dir).unwrap_or(git_dir);
        check_layout(&top, &git_dir)?;
        let run_as = owner::repository_owner(&common_dir);
        Ok(Some(Repo {
            hand_over_to: owner::checkout_owner(&top, run_as),
            checkout: Worktree::pinned(top, git_dir, &common_dir, run_as),
            common_dir,
        }))
    }

    /// The directory every work tree shares (the main checkout's `.git`): what a container
    /// working in a linked worktree needs mounted to find its objects and refs.
    pub fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    /// The work tree this repository was opened in.
    pub fn checkout(&self) -> &Worktree {
        &self.checkout
    }

    /// The top of the work tree this repository was opened in.
    pub fn path(&self) -> &Path {
        self.checkout.path()
    }

    /// The URL configured for remote `name` (`remote.NAME.url`), if any.
    pub async fn remote_url(&self, name: &str) -> Result<Option<String>, GitError> {
        if name.is_empty() || name.starts_with('-') || name.contains(['\0', '\n', '.']) {
            return Err(GitError::InvalidArgument {
                what: "remote name",
                value: name.to_owned(),
            });
        }
        let key = format!("remote.{name}.url");
        let output = command::run(
            &self.checkout.target,
            &["config", "--get", &key],
            Call {
                ok_codes: &[1],
                ..Call::default()
            },
        )
        .await?;
        let url = output.text("config --get")?;
        Ok((output.code == 0 && !url.is_empty()).then_some(url))
    }

    /// The branch checked out where the repository was opened; `None` when detached.
    pub async fn current_branch(&self) -> Result<Option<String>, GitError> {
        self.checkout.current_branch().await
    }

    /// HEAD's commit where the repository was opened; `None` before the first commit.
    pub async fn head_commit(&self) -> Result<Option<CommitId>, GitError> {
        self.checkout.head_commit().await
    }

    /// See [`Worktree::resolve`].
    pub async fn resolve(&self, rev: &str) -> Result<CommitId, GitError> {
        self.checkout.resolve(rev).await
    }

    /// See [`Worktree::diff_stat`].
    pub async fn diff_stat(&self, base: &str, head: &str) -> Result<DiffStat, GitError> {
        self.checkout.diff_stat(base, head).await
    }

    /// See [`Worktree::diff_text`].
    pub async fn diff_text(&self, base: &str, head: &str) -> Result<String, GitError> {
        self.checkout.diff_text(base, head).await
    }

    /// See [`Worktree::commits_ahead`].
    pub async fn commits_ahead(&self, base: &str, head: &str) -> Result<u64, GitError> {
        self.checkout.commits_ahead(base, head).await
    }

    /// See [`Worktree::subjects`].
    pub async fn subjects(&self, base: &str, head: &str) -> Result<Vec<String>, GitError> {
        self.checkout.subjects(base, head).await
    }

    /// See [`Worktree::merge_base`].
    pub async fn merge_base(&self, one: &str, other: &str) -> Result<Option<CommitId>, GitError> {
        self.checkout.merge_base(one, other).await
    }

    /// See [`Worktree::unpushed_commits`].
    pub async fn unpushed_commits(&self, head: &str, known: &[&str]) -> Result<u64, GitError> {
        self.checkout.unpushed_commits(head, known).await
    }

    /// `git worktree add -b NEW_BRANCH PATH BASE`: a new work tree at `path` (which must not
    /// exist yet, or be empty) on a new branch cut from `base_rev`.
    pub async fn add_worktree(
        &self,
        path: &Path,
        new_branch: &str,
        base_rev: &str,
    ) -> Result<Worktree, GitError> {
        check_branch(new_branch)?;
        let base = self.resolve(base_rev).await?;
        let path = absolute(path)?;
        owner::prepare_parent(&path, self.checkout.target.run_as)?;
        let path_arg = path.display().to_string();
        command::run(
            &self.checkout.target,
            &[
                "worktree",
                "add",
                "--quiet",
                "-b",
                new_branch,
                "--",
                &path_arg,
                base.as_str(),
            ],
            Call::default(),
        )
        .await?;
        self.created_worktree(&path).await
    }

    /// `git worktree add PATH BRANCH`: a work tree at `path` on an existing branch, as when a
    /// thread's worktree is created again after a crash or after it was removed while idle.
    /// Registrations of work trees whose directory is gone are pruned first.
    pub async fn attach_worktree(&self, path: &Path, branch: &str) -> Result<Worktree, GitError> {
        check_branch(branch)?;
        let path = absolute(path)?;
        owner::prepare_parent(&path, self.checkout.target.run_as)?;
        let path_arg = path.display().to_string();
        command::run(
            &self.checkout.target,
            &["worktree", "prune"],
            Call::default(),
        )
        .await?;
        command::run(
            &self.checkout.target,
            &["worktree", "add", "--quiet", "--", &path_arg, branch],
            Call::default(),
        )
        .await?;
        self.created_worktree(&path).await
    }

    /// The linked work tree git has just created at `path`, pinned to its git directory.
    async fn created_worktree(&self, path: &Path) -> Result<Worktree, GitError> {
        let top = std::fs::canonicalize(path).map_err(|source| GitError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(owner) = self.hand_over_to {
            owner::hand_over(&top, owner)?;
        }
        let git_dir = self.linked_git_dir(&top).await?;
        Ok(self.pinned(top, git_dir))
    }

    /// The linked work tree at `path`, as `add_worktree` returned it, found again (after a
    /// restart) through `git worktree list`.
    pub async fn worktree(&self, path: &Path) -> Result<Option<Worktree>, GitError> {
        let Ok(top) = std::fs::canonicalize(path) else {
            return Ok(None);
        };
        let listed = self.worktrees().await?;
        if !listed.iter().any(|w| w.path == top) || top == self.checkout.path() {
            return Ok(None);
        }
        let git_dir = self.linked_git_dir(&top).await?;
        Ok(Some(self.pinned(top, git_dir)))
    }

    /// `git worktree remove PATH`: refused by git when the work tree has changes.
    pub async fn remove_worktree(&self, path: &Path) -> Result<(), GitError> {
        let path = absolute(path)?;
        let path_arg = path.display().to_string();
        command::run(
            &self.checkout.target,
            &["worktree", "remove", "--", &path_arg],
            Call::default(),
        )
        .await?;
        Ok(())
    }

    /// `git worktree remove --force PATH`: removes a work tree whatever it holds (a spare
    /// agent's, which no thread claimed; its setup may have left files).
    pub async fn discard_worktree(&self, path: &Path) -> Result<(), GitError> {
        let path = absolute(path)?;
        let path_arg = path.display().to_string();
        command::run(
            &self.checkout.target,
            &["worktree", "remove", "--force", "--", &path_arg],
            Call::default(),
        )
        .await?;
        Ok(())
    }

    /// `git branch -m FROM TO`: renames a branch, also where a work tree has it checked out.
    pub async fn rename_branch(&self, from: &str, to: &str) -> Result<(), GitError> {
        check_branch(from)?;
        check_branch(to)?;
        command::run(
            &self.checkout.target,
            &["branch", "-m", from, to],
            Call::default(),
        )
        .await?;
        Ok(())
    }

    /// `git branch -D NAME`: deletes a branch whatever it holds.
    pub async fn delete_branch(&self, name: &str) -> Result<(), GitError> {
        check_branch(name)?;
        command::run(
            &self.checkout.target,
            &["branch", "-D", name],
            Call::default(),
        )
        .await?;
        Ok(())
    }

    /// Every work tree of the repository, the main one first.
    pub async fn worktrees(&self) -> Result<Vec<WorktreeEntry>, GitError> {
        let output = command::run(
            &self.checkout.target,
            &["worktree", "list", "--porcelain", "-z"],
            Call::default(),
        )
        .await?;
        parse_worktree_list(&output.stdout).map_err(|detail| GitError::Output {
            command: "worktree list".into(),
            detail,
        })
    }

    /// The administrative directory of the linked work tree at `top`: the one under
    /// `<common>/worktrees/` whose `gitdir` file points back at `top/.git`. Found from the
    /// repository's side, never from the work tree's `.git` file, which the agent can rewrite.
    async fn linked_git_dir(&self, top: &Path) -> Result<PathBuf, GitError> {
        let admin = self.common_dir.join("worktrees");
        let expected = top.join(".git");
        let entries = std::fs::read_dir(&admin).map_err(|source| GitError::Io {
            path: admin.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let Ok(pointer) = std::fs::read_to_string(entry.path().join("gitdir")) else {
                continue;
            };
            if Path::new(pointer.trim_end()) == expected {
                return Ok(entry.path());
            }
        }
        Err(GitError::Layout {
            path: top.to_path_buf(),
            detail: format!("no entry under {} points at it", admin.display()),
        })
    }
}

impl Repo {
    /// A linked work tree of this repository, run as the repository's git processes are.
    fn pinned(&self, top: PathBuf, git_dir: PathBuf) -> Worktree {
        Worktree::pinned(top, git_dir, &self.common_dir, self.checkout.target.run_as)
    }
}

impl Worktree {
    fn pinned(
        top: PathBuf,
        git_dir: PathBuf,
        common_dir: &Path,
        run_as: Option<Owner>,
    ) -> Worktree {
        let mut config_files = vec![
            common_dir.join("config"),
            common_dir.join("config.worktree"),
        ];
        if git_dir != common_dir {
            config_files.push(git_dir.join("config.worktree"));
        }
        Worktree {
            target: Target {
                dir: top.clone(),
                safe_dirs: vec![top.clone()],
                pinned: Some(Pinned {
                    git_dir,
                    work_tree: top,
                }),
                config_files,
                run_as,
            },
        }
    }

    /// The top of the work tree.
    pub fn path(&self) -> &Path {
        &self.target.dir
    }

    async fn git(&self, args: &[&str]) -> Result<String, GitError> {
        let command = args.first().copied().unwrap_or("git");
        command::run(&self.target, args, Call::default())
            .await?
            .text(command)
    }

    /// The checked-out branch (without `refs/heads/`), `None` when HEAD is detached.
    pub async fn current_branch(&self) -> Result<Option<String>, GitError> {
        let output = command::run(
            &self.target,
            &["symbolic-ref", "--quiet", "--short", "HEAD"],
            Call {
                ok_codes: &[1],
                ..Call::default()
            },
        )
        .await?;
        let name = output.text("symbolic-ref")?;
        Ok((output.code == 0 && !name.is_empty()).then_some(name))
    }

    /// The commit HEAD points at, `None` in a repository with no commits yet.
    pub async fn head_commit(&self) -> Result<Option<CommitId>, GitError> {
        let output = command::run(
            &self.target,
            &["rev-parse", "--quiet", "--verify", "HEAD^{commit}"],
            Call {
                ok_codes: &[1],
                ..Call::default()
            },
        )
        .await?;
        if output.code != 0 {
            return Ok(None);
        }
        CommitId::parse("rev-parse HEAD", &output.text("rev-parse")?).map(Some)
    }

    /// The commit `rev` names (a branch, a tag, an object name, `HEAD~2`).
    pub async fn resolve(&self, rev: &str) -> Result<CommitId, GitError> {
        check_rev(rev)?;
        // A full object name needs no lookup to be one (whether the commit exists is left to
        // the command that uses it): one process fewer per diff of a turn.
        if rev.len() == 40 && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(CommitId(rev.to_owned()));
        }
        let spec = format!("{rev}^{{commit}}");
        let text = self
            .git(&["rev-parse", "--verify", "--end-of-options", &spec])
            .await?;
        CommitId::parse("rev-parse", &text)
    }

    /// Whether the work tree differs from HEAD: modified, staged, deleted or untracked files
    /// (ignored files do not count).
    pub async fn status_changed(&self) -> Result<bool, GitError> {
        let text = self
            .git(&[
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--ignore-submodules=all",
            ])
            .await?;
        Ok(!text.is_empty())
    }

    /// Stages everything (`add -A`) and commits it when anything is staged, as `author`, with
    /// `co_author` as a `Co-authored-by:` trailer. Commits the agent made itself are left as
    /// they are; `None` when there was nothing to commit.
    pub async fn commit_all(
        &self,
        message: &str,
        author: &Signature,
        co_author: Option<&Signature>,
    ) -> Result<Option<CommitInfo>, GitError> {
        self.git(&["add", "-A"]).await?;
        let staged = command::run(
            &self.target,
            &[
                "diff",
                "--cached",
                "--quiet",
                "--no-ext-diff",
                "--no-textconv",
            ],
            Call {
                ok_codes: &[1],
                ..Call::default()
            },
        )
        .await?;
        if staged.code == 0 {
            return Ok(None);
        }
        let message = with_co_author(message, co_author);
        command::run(
            &self.target,
            &[
                "commit",
                "--quiet",
                "--no-verify",
                "--no-gpg-sign",
                "--cleanup=whitespace",
                "--file=-",
            ],
            Call {
                stdin: Some(message.clone().into_bytes()),
                env: identity(author),
                ..Call::default()
            },
        )
        .await?;
        let id = self.resolve("HEAD").await?;
        let subject = message.lines().next().unwrap_or_default().to_owned();
        Ok(Some(CommitInfo { id, subject }))
    }

    /// Files and line counts changed from `base` to `head` (any revisions, or the tree of a
    /// [`Worktree::snapshot`]).
    pub async fn diff_stat(&self, base: &str, head: &str) -> Result<DiffStat, GitError> {
        let (base, head) = (
            self.resolve_tree(base).await?,
            self.resolve_tree(head).await?,
        );
        let output = command::run(
            &self.target,
            &[
                "diff",
                "--numstat",
                "-z",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--ignore-submodules=none",
                base.as_str(),
                head.as_str(),
                "--",
            ],
            Call::default(),
        )
        .await?;
        parse_numstat(&output.stdout).map_err(|detail| GitError::Output {
            command: "diff --numstat".into(),
            detail,
        })
    }

    /// The plain patch from `base` to `head`, as a reviewer reads it (any revisions, or the
    /// tree of a [`Worktree::snapshot`]).
    pub async fn diff_text(&self, base: &str, head: &str) -> Result<String, GitError> {
        let (base, head) = (
            self.resolve_tree(base).await?,
            self.resolve_tree(head).await?,
        );
        let output = command::run(
            &self.target,
            &[
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                base.as_str(),
                head.as_str(),
                "--",
            ],
            Call::default(),
        )
        .await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The subjects of the commits in `head` that `base` lacks, oldest first.
    pub async fn subjects(&self, base: &str, head: &str) -> Result<Vec<String>, GitError> {
        let (base, head) = (self.resolve(base).await?, self.resolve(head).await?);
        let range = format!("{base}..{head}");
        let text = self
            .git(&[
                "log",
                "--reverse",
                "--no-show-signature",
                "--format=%s",
                &range,
            ])
            .await?;
        Ok(text.lines().map(str::to_owned).collect())
    }

    /// How many commits `head` has that `base` does not (`rev-list --count base..head`).
    pub async fn commits_ahead(&self, base: &str, head: &str) -> Result<u64, GitError> {
        let (base, head) = (self.resolve(base).await?, self.resolve(head).await?);
        let range = format!("{base}..{head}");
        let text = self.git(&["rev-list", "--count", &range]).await?;
        parse_count("rev-list --count", &text)
    }

    /// The best common ancestor of two revisions (`git merge-base`): where a branch left its
    /// base, even after the base moved on. `None` when their histories never met.
    pub async fn merge_base(&self, one: &str, other: &str) -> Result<Option<CommitId>, GitError> {
        let (one, other) = (self.resolve(one).await?, self.resolve(other).await?);
        let output = command::run(
            &self.target,
            &["merge-base", one.as_str(), other.as_str()],
            Call {
                ok_codes: &[1],
                ..Call::default()
            },
        )
        .await?;
        if output.code != 0 {
            return Ok(None);
        }
        CommitId::parse("merge-base", &output.text("merge-base")?).map(Some)
    }

    /// How many commits of `head` are in none of `known` (the base, a commit known to be on
    /// the remote) and on no remote-tracking branch: work that exists only in this
    /// repository. Without remotes, the commits `known` lack.
    pub async fn unpushed_commits(&self, head: &str, known: &[&str]) -> Result<u64, GitError> {
        let head = self.resolve(head).await?;
        let mut known_ids = Vec::with_capacity(known.len());
        for rev in known {
            known_ids.push(self.resolve(rev).await?);
        }
        // `--not` applies to every revision after it: the known ones and all of `refs/remotes/`.
        let mut args = vec!["rev-list", "--count", head.as_str(), "--not"];
        args.extend(known_ids.iter().map(CommitId::as_str));
        args.push("--remotes");
        let text = self.git(&args).await?;
        parse_count("rev-list --count", &text)
    }

    /// The work tree as a commit of everything in it would record it (what `add -A` stages:
    /// changes, deletions, untracked files that are not ignored), as a tree object name for
    /// [`Worktree::diff_stat`] and [`Worktree::diff_text`]. The index, HEAD and refs are left
    /// alone: git stages into a copy of the index that is removed afterwards.
    pub async fn snapshot(&self) -> Result<TreeId, GitError> {
        let Some(pinned) = &self.target.pinned else {
            return Err(GitError::Layout {
                path: self.target.dir.clone(),
                detail: "not pinned to its git directory".into(),
            });
        };
        let index = pinned.git_dir.join(format!(
            "loop-snapshot-{}-{}.index",
            std::process::id(),
            SNAPSHOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let result = self
            .snapshot_into(&pinned.git_dir.join("index"), &index)
            .await;
        for leftover in [index.clone(), index.with_extension("index.lock")] {
            if let Err(err) = std::fs::remove_file(&leftover)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %leftover.display(), error = %err, "cannot remove a snapshot index");
            }
        }
        result
    }

    async fn snapshot_into(&self, index: &Path, copy: &Path) -> Result<TreeId, GitError> {
        // Starting from the real index keeps its stat cache: only changed files are hashed.
        let copied = match std::fs::copy(index, copy) {
            Ok(_) => true,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(GitError::Io {
                    path: index.to_path_buf(),
                    source,
                });
            }
        };
        if let (true, Some(owner)) = (copied, self.target.run_as) {
            // Git runs as the repository's owner and replaces the copy through a lock file.
            owner::hand_over(copy, owner)?;
        }
        let env = || vec![("GIT_INDEX_FILE", copy.display().to_string())];
        command::run(
            &self.target,
            &["add", "-A"],
            Call {
                env: env(),
                ..Call::default()
            },
        )
        .await?;
        let output = command::run(
            &self.target,
            &["write-tree"],
            Call {
                env: env(),
                ..Call::default()
            },
        )
        .await?;
        let tree = output.text("write-tree")?;
        check_object_name("write-tree", &tree)?;
        Ok(TreeId(tree))
    }

    /// The tree `rev` names (a commit's, or a tree's own name) as `git diff` takes it.
    async fn resolve_tree(&self, rev: &str) -> Result<String, GitError> {
        check_rev(rev)?;
        // A full object name (a commit's or a tree's) is what `git diff` takes as it is: no
        // lookup, as in `resolve`.
        if rev.len() == 40 && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(rev.to_owned());
        }
        let spec = format!("{rev}^{{tree}}");
        let text = self
            .git(&["rev-parse", "--verify", "--end-of-options", &spec])
            .await?;
        let text = text.trim().to_owned();
        check_object_name("rev-parse", &text)?;
        Ok(text)
    }
}

/// Snapshot indexes made by this process, for unique names.
static SNAPSHOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn parse_count(command: &str, text: &str) -> Result<u64, GitError> {
    text.trim().parse().map_err(|_| GitError::Output {
        command: command.into(),
        detail: format!("not a count: {text:?}"),
    })
}

/// Git's answer is an object name (so it is safe to pass back as an argument).
fn check_object_name(command: &str, text: &str) -> Result<(), GitError> {
    if text.len() >= 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(GitError::Output {
            command: command.to_owned(),
            detail: format!("not an object name: {text:?}"),
        })
    }
}

/// Author and committer for a commit, through git's environment so the repository's
/// `user.*` config does not decide who wrote it.
fn identity(author: &Signature) -> Vec<(&'static str, String)> {
    vec![
        ("GIT_AUTHOR_NAME", author.name.clone()),
        ("GIT_AUTHOR_EMAIL", author.email.clone()),
        ("GIT_COMMITTER_NAME", author.name.clone()),
        ("GIT_COMMITTER_EMAIL", author.email.clone()),
    ]
}

/// Refuses a work tree that is not the directory holding its git directory: for a main
/// checkout `top/.git` must be the git directory itself; a linked work tree's `.git` is a file.
fn check_layout(top: &Path, git_dir: &Path) -> Result<(), GitError> {
    let dot_git = top.join(".git");
    let layout = |detail: String| GitError::Layout {
        path: top.to_path_buf(),
        detail,
    };
    let meta = std::fs::symlink_metadata(&dot_git)
        .map_err(|e| layout(format!("{}: {e}", dot_git.display())))?;
    if meta.is_file() {
        // A linked work tree: its administrative directory must point back at this `.git`.
        let pointer = std::fs::read_to_string(git_dir.join("gitdir")).unwrap_or_default();
        return if Path::new(pointer.trim_end()) == dot_git {
            Ok(())
        } else {
            Err(layout(format!(
                "{} does not belong to {}",
                git_dir.display(),
                dot_git.display()
            )))
        };
    }
    let real = std::fs::canonicalize(&dot_git)
        .map_err(|e| layout(format!("{}: {e}", dot_git.display())))?;
    if meta.is_dir() && real == git_dir {
        Ok(())
    } else {
        Err(layout(format!(
            "its git directory is {}, not {}",
            git_dir.display(),
            dot_git.display()
        )))
    }
}

/// A revision git cannot take for an option.
fn check_rev(rev: &str) -> Result<(), GitError> {
    if rev.is_empty() || rev.starts_with('-') || rev.contains(['\0', '\n']) {
        return Err(GitError::InvalidArgument {
            what: "revision",
            value: rev.to_owned(),
        });
    }
    Ok(())
}

/// A new branch's name: not an option, and a name `git check-ref-format --branch` would take
/// (the rules that need no git: no `..`, `@{`, control characters, `~^:?*[\`, spaces).
pub(crate) fn check_branch(name: &str) -> Result<(), GitError> {
    let bad = name.is_empty()
        || name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("@{")
        || name.contains("//")
        || name.contains("/.")
        || name == "@"
        || name.contains(|c: char| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        return Err(GitError::InvalidArgument {
            what: "branch name",
            value: name.to_owned(),
        });
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, GitError> {
    std::path::absolute(path).map_err(|source| GitError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `git worktree list --porcelain -z`: attributes separated by NUL, an empty field between
/// work trees.
fn parse_worktree_list(raw: &[u8]) -> Result<Vec<WorktreeEntry>, String> {
    let text = String::from_utf8_lossy(raw);
    let mut entries = Vec::new();
    let mut current: Option<WorktreeEntry> = None;
    for field in text.split('\0') {
        if field.is_empty() {
            entries.extend(current.take());
            continue;
        }
        let (name, value) = field.split_once(' ').unwrap_or((field, ""));
        if name == "worktree" {
            entries.extend(current.take());
            current = Some(WorktreeEntry {
                path: PathBuf::from(value),
                head: None,
                branch: None,
                is_bare: false,
                is_locked: false,
                is_prunable: false,
            });
            continue;
        }
        let Some(entry) = current.as_mut() else {
            return Err(format!("{field:?} before any worktree line"));
        };
        match name {
            "HEAD" => entry.head = CommitId::parse("worktree list", value).ok(),
            "branch" => {
                entry.branch = Some(
                    value
                        .strip_prefix("refs/heads/")
                        .unwrap_or(value)
                        .to_owned(),
                );
            }
            "bare" => entry.is_bare = true,
            "locked" => entry.is_locked = true,
            "prunable" => entry.is_prunable = true,
            _ => {}
        }
    }
    entries.extend(current);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_worktree_lists() {
        let head = "a".repeat(40);
        let raw = format!(
            "worktree /r\0HEAD {head}\0branch refs/heads/main\0\0\
             worktree /w 1\0HEAD {head}\0detached\0locked reason\0prunable\0\0"
        );
        let entries = parse_worktree_list(raw.as_bytes()).expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].branch.as_deref(), Some("main"));
        assert_eq!(entries[1].path, PathBuf::from("/w 1"));
        assert_eq!(entries[1].branch, None);
        assert!(entries[1].is_locked && entries[1].is_prunable);
        assert_eq!(
            entries[1].head.as_ref().map(CommitId::short),
            Some("aaaaaaa")
        );
    }

    #[test]
    fn refuses_option_like_arguments() {
        for rev in ["", "-n", "--output=/tmp/x", "a\nb"] {
            assert!(check_rev(rev).is_err(), "{rev:?}");
        }
        for rev in ["main", "HEAD~2", "v1.0", "a1b2c3"] {
            assert!(check_rev(rev).is_ok(), "{rev:?}");
        }
        for name in [
            "", "-b", "a..b", "a b", "a.lock", "x/", "@", "a@{1}", "/x", "a//b",
        ] {
            assert!(check_branch(name).is_err(), "{name:?}");
        }
        for name in ["loop/fix-login-a1b2", "main", "a/b/c"] {
            assert!(check_branch(name).is_ok(), "{name:?}");
        }
    }
}
