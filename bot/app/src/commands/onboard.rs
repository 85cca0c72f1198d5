//! `loop onboard`: write a commented default global config.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file `loop onboard` writes: every field with its default, commented.
pub const DEFAULT_CONFIG: &str = include_str!("../../../../docs/config.default.json");

/// What onboarding did.
#[derive(Debug, PartialEq, Eq)]
pub enum OnboardOutcome {
    Written(PathBuf),
    AlreadyThere(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the default config into `loop_dir` unless a file is there (or `force`).
/// The directory is 0700 and the file 0600: it will hold tokens.
pub fn onboard(loop_dir: &Path, force: bool) -> Result<OnboardOutcome, OnboardError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let file = loop_dir.join("config.json");
    if file.exists() && !force {
        return Ok(OnboardOutcome::AlreadyThere(file));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(loop_dir)
        .map_err(|source| OnboardError::CreateDir {
            path: loop_dir.to_path_buf(),
            source,
        })?;
    // Write to a temporary name and rename, so a crash never leaves half a config.
    let tmp = loop_dir.join(".config.json.tmp");
    let write = || -> std::io::Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(DEFAULT_CONFIG.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&tmp, &file)
    };
    write().map_err(|source| OnboardError::Write {
        path: file.clone(),
        source,
    })?;
    Ok(OnboardOutcome::Written(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_daemon::config::{Config, ConfigSources};

    #[test]
    fn writes_once_and_respects_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loop_dir = dir.path().join(".loop");
        assert!(matches!(
            onboard(&loop_dir, false),
            Ok(OnboardOutcome::Written(_))
        ));
        std::fs::write(
            loop_dir.join("config.json"),
            "{\"platforms\": [\"local\"], // mine\n}",
        )
        .expect("edit");
        assert!(matches!(
            onboard(&loop_dir, false),
            Ok(OnboardOutcome::AlreadyThere(_))
        ));
        let kept = std::fs::read_to_string(loop_dir.join("config.json")).expect("read");
        assert!(
            kept.contains("// mine"),
            "an existing file is never overwritten"
        );
        assert!(matches!(
            onboard(&loop_dir, true),
            Ok(OnboardOutcome::Written(_))
        ));
        let mode = std::fs::metadata(loop_dir.join("config.json"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("metadata");
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_default_config_loads_without_warnings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = ConfigSources {
            home: dir.path().to_path_buf(),
            loop_dir: dir.path().join(".loop"),
            env: Default::default(),
        };
        onboard(&sources.loop_dir, false).expect("onboard");
        let loaded = Config::load(&sources).expect("the default config is valid");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config.container_memory_mb, 1024);
    }
}
