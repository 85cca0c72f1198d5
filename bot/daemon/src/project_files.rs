//! Reading a project's files on the host. A project directory is written by the agent and by
//! strangers' repositories, so a name in it may be a symlink to anywhere (`README.md` →
//! `~/.loop/config.json`), a FIFO that blocks a reader forever, or a file of any size. Every
//! host-side read of a project file goes through [`read_in_project`]: the kernel resolves the
//! path beneath the project and refuses every symlink on the way (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so there is no check-then-open race to win.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// Why a project file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ProjectFileError {
    #[error(
        "{path} leaves the project {root} or goes through a symlink; loop reads project files only beneath the project, never through links"
    )]
    Escapes { root: PathBuf, path: PathBuf },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads `relative` (a path inside `root`, or an absolute path that lies under `root`) as
/// text, refusing symlinks anywhere on the way, anything but a regular file and files over
/// `max_bytes`.
pub fn read_in_project(
    root: &Path,
    path: &Path,
    max_bytes: u64,
) -> Result<String, ProjectFileError> {
    let relative = match path.strip_prefix(root) {
        Ok(rel) => rel,
        Err(_) if path.is_relative() => path,
        Err(_) => {
            return Err(ProjectFileError::Escapes {
                root: root.to_path_buf(),
                path: path.to_path_buf(),
            });
        }
    };
    let shown = root.join(relative);
    let io = |source: std::io::Error| ProjectFileError::Io {
        path: shown.clone(),
        source,
    };
    let root_fd = open_root(root).map_err(|e| ProjectFileError::Io {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match openat2(&root_fd, relative, how) {
        Ok(fd) => fd,
        Err(Errno::EXDEV | Errno::ELOOP) => {
            return Err(ProjectFileError::Escapes {
                root: root.to_path_buf(),
                path: shown,
            });
        }
        Err(errno) => return Err(io(errno.into())),
    };
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ProjectFileError::NotAFile { path: shown });
    }
    if meta.len() > max_bytes {
        return Err(ProjectFileError::TooLarge {
            path: shown,
            max: max_bytes,
        });
    }
    let mut bytes = Vec::new();
    // The file may grow after the check: never read past the limit.
    file.by_ref()
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ProjectFileError::TooLarge {
            path: shown,
            max: max_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|_| ProjectFileError::NotText { path: shown })
}

/// The project directory itself, opened as a directory (the one path loop chose and checked).
fn open_root(root: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn only_regular_files_beneath_the_project_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("docs")).expect("mkdir");
        std::fs::write(root.join("README.md"), "hello").expect("write");
        std::fs::write(root.join("docs/a.md"), "doc").expect("write");
        std::fs::write(dir.path().join("secret"), "token").expect("write");
        symlink(dir.path().join("secret"), root.join("link.md")).expect("symlink");
        symlink("docs", root.join("docs-link")).expect("symlink");
        symlink(dir.path(), root.join("up")).expect("symlink");
        nix::unistd::mkfifo(&root.join("fifo.md"), Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        std::fs::write(root.join("big.md"), "x".repeat(100)).expect("write");
        std::fs::write(root.join("binary.md"), [0xff, 0xfe]).expect("write");

        let read = |p: &str| read_in_project(&root, Path::new(p), 64);
        assert_eq!(read("README.md").expect("readme"), "hello");
        assert_eq!(read("docs/a.md").expect("doc"), "doc");
        assert_eq!(
            read_in_project(&root, &root.join("docs/a.md"), 64).expect("absolute inside"),
            "doc"
        );
        for escaping in ["link.md", "docs-link/a.md", "up/secret", "../secret"] {
            assert!(
                matches!(read(escaping), Err(ProjectFileError::Escapes { .. })),
                "{escaping}: {:?}",
                read(escaping)
            );
        }
        assert!(matches!(
            read_in_project(&root, &dir.path().join("secret"), 64),
            Err(ProjectFileError::Escapes { .. })
        ));
        assert!(matches!(
            read("fifo.md"),
            Err(ProjectFileError::NotAFile { .. })
        ));
        assert!(matches!(
            read("docs"),
            Err(ProjectFileError::NotAFile { .. })
        ));
        assert!(matches!(
            read("big.md"),
            Err(ProjectFileError::TooLarge { .. })
        ));
        assert!(matches!(
            read("binary.md"),
            Err(ProjectFileError::NotText { .. })
        ));
        assert!(matches!(
            read("missing.md"),
            Err(ProjectFileError::Io { .. })
        ));
    }
}
