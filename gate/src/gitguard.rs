//! The git guard: which of a repository's control files the baseline holds for a person's
//! approval when the agent changes them, and what such a file is to git.
//!
//! The agent's work directory is a repository on the host. A hook it plants, or a config
//! setting that names a program (`core.fsmonitor`, `core.hooksPath`, a filter, an alias), runs
//! on the host the next time a person runs git there, outside the container and as that person.
//! So changing these files needs a person's approval ([`crate::policy`] turns [`GUARDED`] into
//! baseline `approve` rules for the modifying operations; reads stay free and untrapped).
//! Everything git writes during normal work (objects, refs, logs, the index, `HEAD`,
//! `ORIG_HEAD`, `COMMIT_EDITMSG`, `packed-refs`, `FETCH_HEAD`, `info/exclude`, a worktree's
//! own index, `HEAD` and logs) is left alone, so `git add`, `commit`, `checkout`, `branch`,
//! `stash` and `rebase` never ask.
//!
//! Patterns are written for any depth (`**/.git/...`), so nested repositories, submodules and
//! worktrees whose git directory lives elsewhere are covered alike. This module is pure: no IO.

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// What a guarded file is to git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitControl {
    /// `hooks/` and everything in it: scripts git runs.
    Hook,
    /// `config` and `config.worktree`: settings, some of which name programs git runs.
    Config,
    /// A `.git` file or directory, `commondir`, `gitdir` and a worktree's record: which git
    /// directory (and so which config and hooks) git uses for a work tree.
    Pointer,
}

impl GitControl {
    /// Why a change to such a file needs a person: the baseline rule's message.
    pub fn why(self) -> &'static str {
        match self {
            GitControl::Hook => "a git hook runs on the host when someone runs git there",
            GitControl::Config => {
                "git config can name programs (core.fsmonitor, core.hooksPath, filters, aliases) \
                 that run on the host when someone runs git there"
            }
            GitControl::Pointer => {
                "a gitdir pointer chooses the config and hooks git uses there, also on the host"
            }
        }
    }
}

/// One kind of control file and the globs that find it.
#[derive(Debug, Clone, Copy)]
pub struct GuardedFiles {
    /// What these files are to git.
    pub control: GitControl,
    /// Globs on the absolute path (`*` stays in a component, `**` crosses them).
    pub patterns: &'static [&'static str],
    /// Whether deleting (or moving away) such a file asks too. Removing a person's hook or
    /// config takes away what they set up; removing a pointer gives git nothing new to run
    /// (putting anything in its place is a create, which asks), and git itself removes them
    /// in everyday work: `git stash` calls `rmdir(".git")` (it fails: not empty) and
    /// `git gc` prunes worktrees with `rmdir(".git/worktrees")`.
    pub deletions: bool,
}

/// The guarded files. A directory that holds guarded files is guarded itself (`hooks`,
/// `worktrees/*`), so a prepared directory cannot be renamed into place in one step; a `.git`
/// that is the last component is guarded whether it is a directory or a worktree's pointer
/// file, but files created inside a `.git` directory are not, in general. Every route to a
/// change asks: an open for writing or creating, a rename or link onto the path, a symlink
/// at it, chmod and chown (the baseline gives these rules every modifying operation).
pub const GUARDED: &[GuardedFiles] = &[
    GuardedFiles {
        control: GitControl::Hook,
        deletions: true,
        patterns: &[
            "**/.git/hooks",
            "**/.git/hooks/**",
            "**/.git/modules/**/hooks",
            "**/.git/modules/**/hooks/**",
        ],
    },
    GuardedFiles {
        control: GitControl::Config,
        deletions: true,
        patterns: &[
            "**/.git/config",
            "**/.git/config.worktree",
            "**/.git/worktrees/*/config.worktree",
            "**/.git/modules/**/config",
            "**/.git/modules/**/config.worktree",
        ],
    },
    GuardedFiles {
        control: GitControl::Pointer,
        deletions: false,
        patterns: &[
            "**/.git",
            // In any git directory, `commondir` moves config and hooks to another directory.
            "**/.git/commondir",
            "**/.git/worktrees",
            "**/.git/worktrees/*",
            "**/.git/worktrees/*/gitdir",
            "**/.git/worktrees/*/commondir",
            "**/.git/modules/**/gitdir",
            "**/.git/modules/**/commondir",
            // Other object stores git (loop's push included) reads this repository's from.
            "**/.git/objects/info/alternates",
            "**/.git/modules/**/objects/info/alternates",
        ],
    },
];

/// A guarded file, as a prompt names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    /// What it is to git.
    pub control: GitControl,
    /// The work tree the `.git` belongs to (the directory holding it).
    pub repository: PathBuf,
    /// The path from there, starting at `.git` (`.git/hooks/pre-commit`).
    pub name: PathBuf,
}

/// The patterns of [`GUARDED`], compiled once, in the same order.
static COMPILED: LazyLock<Vec<(GitControl, GlobSet)>> = LazyLock::new(|| {
    GUARDED
        .iter()
        .map(|files| {
            let mut set = GlobSetBuilder::new();
            for pattern in files.patterns {
                if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(true).build() {
                    set.add(glob);
                }
            }
            // The patterns are constants that a test compiles one by one; an empty set only
            // loses the prompt's explanation, never the baseline rule.
            (
                files.control,
                set.build().unwrap_or_else(|_| GlobSet::empty()),
            )
        })
        .collect()
});

/// The guarded file at `path` (absolute and lexically normalised), if it is one.
pub fn control_file(path: &Path) -> Option<ControlFile> {
    let control = COMPILED
        .iter()
        .find(|(_, set)| set.is_match(path))
        .map(|(control, _)| *control)?;
    // The last `.git` component: the pointer itself, or the git directory the file is in.
    let components: Vec<Component<'_>> = path.components().collect();
    let at = components.iter().rposition(|c| c.as_os_str() == ".git")?;
    let repository: PathBuf = components[..at].iter().collect();
    let name: PathBuf = components[at..].iter().collect();
    Some(ControlFile {
        control,
        repository,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for files in GUARDED {
            for pattern in files.patterns {
                GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .unwrap_or_else(|err| panic!("{pattern}: {err}"));
            }
        }
    }

    #[test]
    fn control_files_table() {
        use GitControl::*;
        /// What the file is, its repository and its name from `.git`; None: not guarded.
        type Expected = Option<(GitControl, &'static str, &'static str)>;
        let cases: &[(&str, Expected)] = &[
            (
                "/w/.git/hooks/pre-commit",
                Some((Hook, "/w", ".git/hooks/pre-commit")),
            ),
            ("/w/.git/hooks", Some((Hook, "/w", ".git/hooks"))),
            (
                "/w/.git/hooks/sub/x",
                Some((Hook, "/w", ".git/hooks/sub/x")),
            ),
            ("/w/.git/config", Some((Config, "/w", ".git/config"))),
            (
                "/w/.git/config.worktree",
                Some((Config, "/w", ".git/config.worktree")),
            ),
            (
                "/w/.git/worktrees/t1/config.worktree",
                Some((Config, "/w", ".git/worktrees/t1/config.worktree")),
            ),
            ("/w/sub/.git", Some((Pointer, "/w/sub", ".git"))),
            ("/w/.git", Some((Pointer, "/w", ".git"))),
            ("/w/.git/commondir", Some((Pointer, "/w", ".git/commondir"))),
            (
                "/w/.git/objects/info/alternates",
                Some((Pointer, "/w", ".git/objects/info/alternates")),
            ),
            ("/w/.git/worktrees", Some((Pointer, "/w", ".git/worktrees"))),
            (
                "/w/.git/worktrees/t1",
                Some((Pointer, "/w", ".git/worktrees/t1")),
            ),
            (
                "/w/.git/worktrees/t1/gitdir",
                Some((Pointer, "/w", ".git/worktrees/t1/gitdir")),
            ),
            (
                "/w/.git/worktrees/t1/commondir",
                Some((Pointer, "/w", ".git/worktrees/t1/commondir")),
            ),
            (
                "/w/.git/modules/lib/config",
                Some((Config, "/w", ".git/modules/lib/config")),
            ),
            (
                "/w/.git/modules/vendor/lib/hooks/post-checkout",
                Some((Hook, "/w", ".git/modules/vendor/lib/hooks/post-checkout")),
            ),
            (
                "/w/.git/modules/lib/worktrees/x/gitdir",
                Some((Pointer, "/w", ".git/modules/lib/worktrees/x/gitdir")),
            ),
            // Nested repositories, at any depth.
            (
                "/w/a/b/.git/hooks/post-merge",
                Some((Hook, "/w/a/b", ".git/hooks/post-merge")),
            ),
            // What git writes during normal work.
            ("/w/.git/index", None),
            ("/w/.git/index.lock", None),
            ("/w/.git/config.lock", None),
            ("/w/.git/HEAD", None),
            ("/w/.git/ORIG_HEAD", None),
            ("/w/.git/FETCH_HEAD", None),
            ("/w/.git/COMMIT_EDITMSG", None),
            ("/w/.git/packed-refs", None),
            ("/w/.git/objects/ab/cdef", None),
            ("/w/.git/refs/heads/main", None),
            ("/w/.git/refs/heads/hooks/x", None),
            ("/w/.git/refs/heads/config", None),
            ("/w/.git/logs/HEAD", None),
            ("/w/.git/info/exclude", None),
            ("/w/.git/worktrees/t1/index", None),
            ("/w/.git/worktrees/t1/HEAD", None),
            ("/w/.git/worktrees/t1/logs/HEAD", None),
            ("/w/.git/worktrees/t1/locked", None),
            ("/w/.git/modules/lib/objects/ab/cd", None),
            // Look-alikes.
            ("/w/.gitignore", None),
            ("/w/.github/hooks/x", None),
            ("/w/git/hooks/x", None),
            ("/w/.git-hooks/pre-commit", None),
            ("/w/src/config", None),
        ];
        for (path, expected) in cases {
            let got = control_file(Path::new(path));
            let expected = expected.map(|(control, repository, name)| ControlFile {
                control,
                repository: PathBuf::from(repository),
                name: PathBuf::from(name),
            });
            assert_eq!(got, expected, "{path}");
        }
    }
}
