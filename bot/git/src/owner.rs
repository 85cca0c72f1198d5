//! Who git runs as. loop often runs as root while the repository belongs to a person (or to
//! the agent's uid): git run as root would leave root-owned objects, refs and worktree files
//! that the agent, which runs as the repository's owner, can no longer write. So when loop is
//! root and the repository's git directory is not, every git process runs as that directory's
//! owner, which also means a hostile repository never runs anything as root.
//!
//! When the git directory is root's too (loop cloned it) but the checkout was handed to
//! someone else, a new worktree is handed to the checkout's owner after git created it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::command::Owner;
use crate::error::GitError;

/// Whether this process runs as root (only then can it, and need it, run git as another user).
fn loop_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The user git runs as for the repository whose shared git directory is `common_dir`.
pub(crate) fn repository_owner(common_dir: &Path) -> Option<Owner> {
    non_root_owner(common_dir).filter(|_| loop_is_root())
}

/// The owner a new worktree of a root-owned repository is handed to: the checkout's, when
/// loop is root, the git directory is root's and the checkout is not.
pub(crate) fn checkout_owner(top: &Path, run_as: Option<Owner>) -> Option<Owner> {
    if run_as.is_some() || !loop_is_root() {
        return None;
    }
    non_root_owner(top)
}

fn non_root_owner(path: &Path) -> Option<Owner> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.uid() != 0).then_some(Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Creates the directory a new worktree goes in; with `owner`, hands it over so that git,
/// running as `owner`, can create the worktree inside.
pub(crate) fn prepare_parent(path: &Path, owner: Option<Owner>) -> Result<(), GitError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let Some(owner) = owner else {
        return Ok(());
    };
    chown(parent, owner)?;
    // Git runs as `owner` from here on: every directory above must let them through (a
    // worktree root under root's 0700 home would not).
    if let Some(blocked) = parent.ancestors().find(|dir| !traversable(dir, owner)) {
        return Err(GitError::Unreachable {
            path: parent.to_path_buf(),
            blocked: blocked.to_path_buf(),
            uid: owner.uid,
        });
    }
    Ok(())
}

/// Whether `owner` may pass through `dir`, by its mode bits (supplementary groups aside).
fn traversable(dir: &Path, owner: Owner) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let mode = meta.mode();
    if meta.uid() == owner.uid {
        mode & 0o100 != 0
    } else if meta.gid() == owner.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// `chown -R` without following symbolic links: the tree git has just checked out.
pub(crate) fn hand_over(path: &Path, owner: Owner) -> Result<(), GitError> {
    chown(path, owner)?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| io(path, source))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|source| io(path, source))? {
            let entry = entry.map_err(|source| io(path, source))?;
            hand_over(&entry.path(), owner)?;
        }
    }
    Ok(())
}

fn chown(path: &Path, owner: Owner) -> Result<(), GitError> {
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
        .map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> GitError {
    GitError::Io {
        path: path.to_path_buf(),
        source,
    }
}
