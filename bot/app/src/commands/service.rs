//! `loop daemon install|start|stop|status`: run `loop serve` under systemd.
//!
//! As a normal user the unit is a systemd *user* unit (`~/.config/systemd/user/loop.service`,
//! `systemctl --user`); as root it is a system unit (`/etc/systemd/system/loop.service`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the unit loop installs.
pub const UNIT_NAME: &str = "loop.service";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run systemctl: {0} (is systemd running on this machine?)")]
    Systemctl(#[source] std::io::Error),
    #[error("`systemctl {args}` failed with {status}")]
    Failed { args: String, status: String },
}

/// Where the unit goes and how systemctl is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceScope {
    pub unit_dir: PathBuf,
    /// `--user` for a user unit.
    pub systemctl_flags: Vec<String>,
}

impl ServiceScope {
    pub fn detect(home: &Path) -> ServiceScope {
        if nix::unistd::geteuid().is_root() {
            ServiceScope {
                unit_dir: PathBuf::from("/etc/systemd/system"),
                systemctl_flags: Vec::new(),
            }
        } else {
            ServiceScope {
                unit_dir: home.join(".config/systemd/user"),
                systemctl_flags: vec!["--user".to_owned()],
            }
        }
    }
}

/// The unit file text.
pub fn unit_text(loop_binary: &Path, loop_dir: &Path, grace_sec: u64) -> String {
    format!(
        "# Written by `loop daemon install`.\n\
         [Unit]\n\
         Description=loop: Claude Code as a team member\n\
         After=network-online.target docker.service\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={bin} serve\n\
         Environment=LOOP_HOME={dir}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # SIGTERM drains: running turns get shutdown_grace_sec, the rest stays queued.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={stop}\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        bin = loop_binary.display(),
        dir = loop_dir.display(),
        stop = grace_sec + 15,
    )
}

/// Writes the unit file; returns its path.
pub fn write_unit(scope: &ServiceScope, text: &str) -> Result<PathBuf, ServiceError> {
    let path = scope.unit_dir.join(UNIT_NAME);
    std::fs::create_dir_all(&scope.unit_dir)
        .and_then(|_| std::fs::write(&path, text))
        .map_err(|source| ServiceError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Runs `systemctl [--user] ARGS...`, inheriting the terminal (status output goes straight
/// through). Returns whether it succeeded.
pub fn systemctl(scope: &ServiceScope, args: &[&str]) -> Result<bool, ServiceError> {
    let status = Command::new("systemctl")
        .args(&scope.systemctl_flags)
        .args(args)
        .status()
        .map_err(ServiceError::Systemctl)?;
    Ok(status.success())
}

/// `systemctl` that must succeed.
pub fn systemctl_ok(scope: &ServiceScope, args: &[&str]) -> Result<(), ServiceError> {
    if systemctl(scope, args)? {
        Ok(())
    } else {
        Err(ServiceError::Failed {
            args: args.join(" "),
            status: "a non-zero exit".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_serve_with_the_loop_home_and_a_drain_budget() {
        let text = unit_text(
            Path::new("/usr/local/bin/loop"),
            Path::new("/home/a/.loop"),
            30,
        );
        assert!(text.contains("ExecStart=/usr/local/bin/loop serve\n"));
        assert!(text.contains("Environment=LOOP_HOME=/home/a/.loop\n"));
        assert!(text.contains("TimeoutStopSec=45\n"));
        assert!(text.contains("WantedBy=default.target"));
        let dir = tempfile::tempdir().expect("tempdir");
        let scope = ServiceScope {
            unit_dir: dir.path().join("units"),
            systemctl_flags: vec!["--user".into()],
        };
        let path = write_unit(&scope, &text).expect("write");
        assert_eq!(std::fs::read_to_string(path).expect("read"), text);
    }
}
