//! From a channel and the configuration to a work directory and container settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loop_adapter::ChannelKey;
use loop_runner::spec::{
    AgentUser, Auth, ContainerSettings, McpServerSpec, PROXY_VARS, default_work_dir,
    detect_timezone, git_excludes_file,
};

use crate::config::Config;

/// Why a work directory was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkDirError {
    #[error("{0} does not exist or is not a directory")]
    Missing(String),
    #[error(
        "{dir} is outside the directories loop may use ({allowed}); add it to `allowed_dirs` in the global config"
    )]
    NotAllowed { dir: String, allowed: String },
    #[error(
        "{dir} holds loop's own directory {loop_dir} (its tokens and database): choose a project directory inside it, or move loop's directory (LOOP_HOME)"
    )]
    HoldsLoopDir { dir: String, loop_dir: String },
    #[error(
        "{dir} is inside loop's own directory {loop_dir}, which no agent may see: choose a project directory outside it"
    )]
    InsideLoopDir { dir: String, loop_dir: String },
}

/// Checks a requested work directory: it must exist and lie under `allowed_dirs` (or the
/// home directory when that list is empty). Returns the canonical path.
pub fn validate_work_dir(config: &Config, requested: &str) -> Result<PathBuf, WorkDirError> {
    let expanded = config.expand(requested);
    let canonical = expanded
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| WorkDirError::Missing(expanded.display().to_string()))?;
    let roots: Vec<PathBuf> = if config.allowed_dirs.is_empty() {
        vec![config.home.clone()]
    } else {
        config
            .allowed_dirs
            .iter()
            .map(|d| config.expand(d))
            .collect()
    };
    let allowed = roots.iter().any(|root| {
        root.canonicalize()
            .map(|root| canonical.starts_with(root))
            .unwrap_or(false)
    });
    if allowed {
        check_not_loop_dir(config, &canonical)?;
        Ok(canonical)
    } else {
        Err(WorkDirError::NotAllowed {
            dir: canonical.display().to_string(),
            allowed: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Refuses a work directory that would show loop's own directory (`~/.loop`: the admin
/// token, the platform tokens in its config, the database) to the agent: one that contains it
/// (`--dir ~`), or one inside it (another channel's directory, the session store). Checked when
/// a directory is chosen and again before every turn, for directories stored earlier.
pub fn check_not_loop_dir(config: &Config, dir: &Path) -> Result<(), WorkDirError> {
    let loop_dir = config
        .loop_dir
        .canonicalize()
        .unwrap_or_else(|_| config.loop_dir.clone());
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let describe = |p: &Path| p.display().to_string();
    if loop_dir.starts_with(&dir) {
        return Err(WorkDirError::HoldsLoopDir {
            dir: describe(&dir),
            loop_dir: describe(&loop_dir),
        });
    }
    if dir.starts_with(&loop_dir) {
        return Err(WorkDirError::InsideLoopDir {
            dir: describe(&dir),
            loop_dir: describe(&loop_dir),
        });
    }
    Ok(())
}

/// The default work directory of a channel, created on first use. When loop runs as root the
/// directory is handed to the unprivileged agent uid so the agent can write in it.
pub fn ensure_default_work_dir(config: &Config, channel: &ChannelKey) -> std::io::Result<PathBuf> {
    let dir = default_work_dir(&config.loop_dir, &channel.slug());
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let uid = loop_runner::spec::FALLBACK_AGENT_UID;
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
        }
    }
    Ok(dir)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The host user as the runner needs it.
pub fn host_identity(config: &Config, work_dir: &Path) -> AgentUser {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = std::fs::metadata(&config.home)
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0));
    let uid = if is_root() { 0 } else { uid };
    let name = std::env::var("USER").unwrap_or_else(|_| "agent".to_owned());
    AgentUser::for_host(&name, uid, gid, &config.home, work_dir)
}

/// Facts about the host read once at start: timezone, proxies, git excludes.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub timezone: String,
    pub proxy_env: BTreeMap<String, String>,
    pub git_excludes_file: Option<PathBuf>,
    pub daemon_id: String,
    pub api_url: String,
    /// The Docker network agents join (`gates.egress`); `None`: the default bridge.
    pub network: Option<String>,
}

impl HostFacts {
    pub fn detect(config: &Config, daemon_id: String, api_port: u16) -> HostFacts {
        let mut proxy_env = BTreeMap::new();
        for var in PROXY_VARS.iter().chain(["NO_PROXY", "no_proxy"].iter()) {
            if let Ok(value) = std::env::var(var) {
                proxy_env.insert((*var).to_owned(), value);
            }
        }
        HostFacts {
            timezone: detect_timezone(std::env::var("TZ").ok().as_deref()),
            proxy_env,
            git_excludes_file: git_excludes_file(&config.home),
            daemon_id,
            api_url: format!("http://{}:{api_port}", loop_runner::spec::HOST_ALIAS),
            network: None,
        }
    }
}

/// Container settings for one turn, from the project-merged config.
pub fn container_settings(
    config: &Config,
    facts: &HostFacts,
    work_dir: &Path,
) -> ContainerSettings {
    ContainerSettings {
        image: config.container_image.clone(),
        memory_mb: config.container_memory_mb,
        cpus: config.container_cpus,
        timeout: Duration::from_secs(config.container_timeout_sec),
        runtime: config.container_runtime.clone(),
        mounts: config.mounts.clone(),
        copy_files: config.copy_files.clone(),
        envs: config.envs.clone(),
        extra_dirs: config.extra_dirs.clone(),
        mcp_servers: config
            .mcp
            .servers
            .iter()
            .map(|(name, server)| {
                (
                    name.clone(),
                    McpServerSpec {
                        command: server.command.clone(),
                        args: server.args.clone(),
                        env: server.env.clone(),
                    },
                )
            })
            .collect(),
        keep_mcp_configs: config.keep_mcp_configs,
        memory_enabled: config.memory.enabled,
        api_url: facts.api_url.clone(),
        auth: Auth::pick(
            config.claude_code_oauth_token.expose(),
            config.anthropic_api_key.expose(),
        ),
        claude_bin: config.claude_bin_path.clone(),
        model: config.claude_model.clone(),
        agent: host_identity(config, work_dir),
        timezone: facts.timezone.clone(),
        host_proxy_env: facts.proxy_env.clone(),
        git_excludes_file: facts.git_excludes_file.clone(),
        network: facts.network.clone(),
        daemon_id: facts.daemon_id.clone(),
        sessions_dir: Some(config.loop_dir.join("sessions")),
        gate: None,
        docker_proxy: None,
        protected_dirs: vec![config.loop_dir.clone()],
        run_dir: config.loop_dir.join("run"),
        api_token: None,
        setup: Vec::new(),
        project_env: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSources;

    fn config(dir: &Path, allowed: &[&str]) -> Config {
        let sources = ConfigSources {
            home: dir.join("home"),
            loop_dir: dir.join("home/.loop"),
            env: Default::default(),
        };
        std::fs::create_dir_all(&sources.home).expect("home");
        let mut config = Config::load(&sources).expect("config").config;
        config.allowed_dirs = allowed.iter().map(|s| (*s).to_owned()).collect();
        config
    }

    #[test]
    fn work_dirs_must_exist_and_be_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), &[]);
        std::fs::create_dir_all(dir.path().join("home/src/app")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("elsewhere")).expect("mkdir");
        assert_eq!(
            validate_work_dir(&config, "~/src/app").expect("allowed"),
            dir.path()
                .join("home/src/app")
                .canonicalize()
                .expect("canon")
        );
        assert!(matches!(
            validate_work_dir(&config, &dir.path().join("elsewhere").display().to_string()),
            Err(WorkDirError::NotAllowed { .. })
        ));
        assert!(matches!(
            validate_work_dir(&config, "~/nope"),
            Err(WorkDirError::Missing(_))
        ));
        // `..` cannot escape an allowed root.
        assert!(matches!(
            validate_work_dir(&config, "~/src/../../elsewhere"),
            Err(WorkDirError::NotAllowed { .. })
        ));
        // Loop's own directory is never a project, nor inside one.
        std::fs::create_dir_all(dir.path().join("home/.loop/other/work")).expect("mkdir");
        assert!(matches!(
            validate_work_dir(&config, "~"),
            Err(WorkDirError::HoldsLoopDir { .. })
        ));
        assert!(matches!(
            validate_work_dir(&config, "~/.loop"),
            Err(WorkDirError::HoldsLoopDir { .. })
        ));
        assert!(matches!(
            validate_work_dir(&config, "~/.loop/other/work"),
            Err(WorkDirError::InsideLoopDir { .. })
        ));
        // Not through a symlink either.
        std::os::unix::fs::symlink(dir.path().join("home"), dir.path().join("home/src/link"))
            .expect("symlink");
        assert!(matches!(
            validate_work_dir(&config, "~/src/link"),
            Err(WorkDirError::HoldsLoopDir { .. })
        ));
        let config = super::tests::config(
            dir.path(),
            &[&dir.path().join("elsewhere").display().to_string()],
        );
        assert!(
            validate_work_dir(&config, &dir.path().join("elsewhere").display().to_string()).is_ok()
        );
    }
}
