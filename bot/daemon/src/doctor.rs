//! `loop doctor`'s checks: everything loop needs, and exactly what to fix. The CLI prints them;
//! the dashboard's settings page shows them for a channel's project.

use std::fmt;
use std::path::Path;

use crate::config::{Config, ConfigError, ConfigSources};
use loop_store::Store;

/// The verdict on one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "[{mark}] {:<12} {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check, and with `project` that project's environment. The config check comes
/// first; the others need a config.
pub async fn run(sources: &ConfigSources, project: Option<&Path>) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::load(sources) {
        Ok(loaded) => {
            let file = sources.global_file();
            if file.exists() {
                checks.push(Check::ok("config", format!("{} is valid", file.display())));
            } else {
                checks.push(Check::fail(
                    "config",
                    format!("{} does not exist", file.display()),
                    "run `loop onboard`, then edit the file",
                ));
            }
            for warning in loaded.warnings {
                checks.push(Check::warn("config", warning, "remove or rename the key"));
            }
            loaded.config
        }
        Err(err) => {
            checks.push(config_failure(&err));
            return checks;
        }
    };

    if config.claude_code_oauth_token.is_set() {
        checks.push(Check::ok("credentials", "claude_code_oauth_token is set"));
    } else if config.anthropic_api_key.is_set() {
        checks.push(Check::ok("credentials", "anthropic_api_key is set"));
    } else {
        checks.push(Check::fail(
            "credentials",
            "neither anthropic_api_key nor claude_code_oauth_token is set",
            "set one in ~/.loop/config.json, or export LOOP_ANTHROPIC_API_KEY",
        ));
    }

    checks.extend(docker_checks(&config).await);
    checks.push(database_check(&config).await);
    if config.memory.enabled {
        checks.push(memory_check(&config));
    }
    if let Some(project) = project {
        checks.extend(environment_checks(&config, project));
        checks.extend(environment_state(&config, project).await);
    }
    checks
}

/// The project's environment description, as loop reads it: which one applies, what loop
/// leaves out of it, or why it cannot be used (file, line and field).
fn environment_checks(config: &Config, project: &Path) -> Vec<Check> {
    use crate::environment::{DevcontainerBase, EnvironmentSource, discover};
    let project = std::fs::canonicalize(project).unwrap_or_else(|_| project.to_path_buf());
    match discover(&project, &config.container_image) {
        Ok(EnvironmentSource::LoopDockerfile { dockerfile, .. }) => {
            vec![Check::ok("environment", dockerfile.display().to_string())]
        }
        Ok(EnvironmentSource::Devcontainer { file, spec }) => {
            let base = match &spec.base {
                DevcontainerBase::Image(image) => format!("image {image}"),
                DevcontainerBase::Build { dockerfile, .. } => {
                    format!("build {}", dockerfile.display())
                }
            };
            let setup: Vec<&str> = spec.setup.iter().map(|(name, _)| *name).collect();
            let mut checks = vec![Check::ok(
                "environment",
                format!(
                    "{}: {base}{}",
                    file.display(),
                    if setup.is_empty() {
                        String::new()
                    } else {
                        format!("; setup: {}", setup.join(", "))
                    }
                ),
            )];
            for note in &spec.notes {
                checks.push(Check::warn(
                    "environment",
                    note.clone(),
                    "remove it from the file, or leave it for other tools",
                ));
            }
            checks
        }
        Ok(EnvironmentSource::Configured(image)) => vec![Check::ok(
            "environment",
            format!(
                "{} has no environment description: container_image {image}",
                project.display()
            ),
        )],
        Err(err) => vec![Check::fail(
            "environment",
            err.to_string(),
            "fix the file, or remove it to use container_image",
        )],
    }
}

/// Whether the project's description is trusted, and whether its image is built and current.
async fn environment_state(config: &Config, project: &Path) -> Vec<Check> {
    use crate::environment::{discover, environment_trust_key};
    let project = std::fs::canonicalize(project).unwrap_or_else(|_| project.to_path_buf());
    let Ok(source) = discover(&project, &config.container_image) else {
        return Vec::new();
    };
    let Ok(Some(description)) = source.description(&project) else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    if config.project_images == crate::config::ProjectImages::Never {
        checks.push(Check::warn(
            "environment",
            "project_images is \"never\": turns run in container_image",
            "set project_images to \"trusted\" to use the project's own environment",
        ));
        return checks;
    }
    if config.project_images == crate::config::ProjectImages::Trusted {
        let trusted = match loop_store::Store::open(&config.database_url()).await {
            Ok(store) => store
                .project_trust(&environment_trust_key(&project))
                .await
                .ok()
                .flatten()
                .is_some_and(|t| t.file_hash == description.hash),
            Err(_) => false,
        };
        if trusted {
            checks.push(Check::ok(
                "environment",
                format!(
                    "{} version {} is trusted",
                    description.name,
                    description.short_hash()
                ),
            ));
        } else {
            checks.push(Check::warn(
                "environment",
                format!(
                    "{} version {} is not trusted: turns run without it",
                    description.name,
                    description.short_hash()
                ),
                format!(
                    "`loop image build --dir {}` (or `/loop trust {}` in chat) trusts and builds it",
                    project.display(),
                    description.short_hash()
                ),
            ));
            return checks;
        }
    }
    let Ok(docker) = loop_runner::docker::connect().await else {
        return checks;
    };
    let Some(spec) = source.image_spec(&project, &config.container_image) else {
        return checks;
    };
    match loop_runner::project_image::plan(&docker, &spec).await {
        Ok(plan) if plan.ready => checks.push(Check::ok(
            "environment",
            format!("{} is built and current", plan.tag),
        )),
        Ok(plan) => checks.push(Check::warn(
            "environment",
            format!("{} is not built yet: the next turn builds it", plan.tag),
            format!(
                "`loop image build --dir {}` builds it now",
                project.display()
            ),
        )),
        Err(err) => checks.push(Check::fail(
            "environment",
            err.to_string(),
            "fix the Dockerfile, or build the agent image with `loop image build`",
        )),
    }
    checks
}

/// With `memory.enabled`: ONNX Runtime and the model files (or the Ollama server in use).
/// Nothing is loaded or downloaded here; the daemon would only log a failure and run without
/// memory, which is what a newcomer would miss.
fn memory_check(config: &Config) -> Check {
    use crate::memory::{describe_model_source, embed, uses_ollama};
    if uses_ollama(config) {
        return Check::ok(
            "memory",
            format!("embeddings from {}", describe_model_source(config)),
        );
    }
    let ort = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from);
    if !ort.as_deref().is_some_and(std::path::Path::is_file) {
        return Check::fail(
            "memory",
            format!(
                "ORT_DYLIB_PATH is {}: semantic memory needs ONNX Runtime's shared library",
                ort.map_or_else(
                    || "unset".to_owned(),
                    |p| format!("{} (no such file)", p.display())
                )
            ),
            "set ORT_DYLIB_PATH to libonnxruntime.so (`bash .ci/fetch-model.sh` fetches one from PyPI and prints the path), or set memory.enabled to false",
        );
    }
    if let Some(dir) = &config.memory.model_dir {
        let dir = config.expand(dir);
        let mut missing: Vec<String> = embed::TOKENIZER_FILES
            .into_iter()
            .filter(|file| !dir.join(file).is_file())
            .map(str::to_owned)
            .collect();
        if embed::find_onnx(&dir).is_none() {
            missing.insert(0, "model.onnx (or any *.onnx)".to_owned());
        }
        if !missing.is_empty() {
            return Check::fail(
                "memory",
                format!(
                    "memory.model_dir {} lacks {}",
                    dir.display(),
                    missing.join(", ")
                ),
                "point memory.model_dir at an all-MiniLM-L6-v2 directory, or unset it to download the model",
            );
        }
        return Check::ok("memory", format!("model in {}", dir.display()));
    }
    download_check(config)
}

#[cfg(feature = "model-download")]
fn download_check(config: &Config) -> Check {
    use crate::memory::embed;
    let cache = config.model_cache_dir();
    if embed::is_cached(&cache) {
        Check::ok(
            "memory",
            format!(
                "model cached in {}",
                embed::effective_cache_dir(&cache).display()
            ),
        )
    } else {
        Check::warn(
            "memory",
            format!(
                "the model is not downloaded yet: the first `loop serve` or `loop memory` fetches it from {} (about 90 MB)",
                embed::hub_endpoint()
            ),
            "run `loop memory reindex` once while online, or set memory.model_dir to a local copy",
        )
    }
}

#[cfg(not(feature = "model-download"))]
fn download_check(_config: &Config) -> Check {
    Check::fail(
        "memory",
        "memory.model_dir is unset and this loop was built without the model-download feature",
        "set memory.model_dir to a local all-MiniLM-L6-v2 directory",
    )
}

fn config_failure(err: &ConfigError) -> Check {
    Check::fail(
        "config",
        err.to_string(),
        "correct the file at the position shown (comments and trailing commas are allowed)",
    )
}

async fn docker_checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let docker = match loop_runner::docker::connect().await {
        Ok(docker) => docker,
        Err(err) => {
            checks.push(Check::fail(
                "docker",
                err.to_string(),
                "install Docker (`apt-get install docker.io`), start dockerd, and make sure this user may use /var/run/docker.sock",
            ));
            checks.push(Check::fail(
                "image",
                format!("cannot check {} without Docker", config.container_image),
                "fix Docker first, then run `loop image build`",
            ));
            return checks;
        }
    };
    match loop_runner::docker::engine_info(&docker).await {
        Ok(info) if loop_runner::docker::api_version_ok(&info.api_version) => {
            checks.push(Check::ok(
                "docker",
                format!(
                    "engine {} (API {}, {})",
                    info.version, info.api_version, info.storage_driver
                ),
            ));
            if config.container_runtime.as_deref() == Some(crate::gate::GVISOR_RUNTIME)
                && config.gates.agentgate.enabled
            {
                checks.push(Check::fail(
                    "gate",
                    "the security gate cannot run under gVisor (no seccomp user notification in runsc)",
                    "use runc with the gate, or set gates.agentgate.enabled to false to rely on gVisor's isolation",
                ));
            }
            if let Some(runtime) = &config.container_runtime {
                if info.runtimes.iter().any(|r| r == runtime) {
                    checks.push(Check::ok("runtime", format!("{runtime} is registered")));
                } else {
                    checks.push(Check::fail(
                        "runtime",
                        format!(
                            "container_runtime {runtime:?} is not registered (have: {})",
                            info.runtimes.join(", ")
                        ),
                        "install it (gVisor: `apt-get install runsc`) and add it to /etc/docker/daemon.json \"runtimes\", then reload dockerd",
                    ));
                }
            }
        }
        Ok(info) => checks.push(Check::fail(
            "docker",
            format!(
                "engine API {} is older than {}",
                info.api_version,
                loop_runner::docker::MIN_API_VERSION
            ),
            "upgrade Docker to 20.10 or newer",
        )),
        Err(err) => checks.push(Check::fail(
            "docker",
            err.to_string(),
            "check dockerd's log",
        )),
    }
    if config.gates.docker_proxy.enabled {
        checks.push(docker_proxy_check(config));
    }
    match loop_runner::docker::image_exists(&docker, &config.container_image).await {
        Ok(true) => checks.push(Check::ok(
            "image",
            format!("{} is present", config.container_image),
        )),
        Ok(false) => checks.push(Check::fail(
            "image",
            format!("{} is not built", config.container_image),
            "run `loop image build` (add --ca-cert FILE behind a TLS-inspecting proxy)",
        )),
        Err(err) => checks.push(Check::fail("image", err.to_string(), "check dockerd's log")),
    }
    checks
}

/// With `gates.docker_proxy` on: a local socket the runner can mount, and a valid policy.
fn docker_proxy_check(config: &Config) -> Check {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let Some(socket) = loop_runner::docker::local_socket_path(docker_host.as_deref()) else {
        return Check::fail(
            "docker proxy",
            format!(
                "DOCKER_HOST is {:?}: the proxy needs a local Docker socket to mount",
                docker_host.unwrap_or_default()
            ),
            "unset DOCKER_HOST (or point it at a unix socket), or set gates.docker_proxy.enabled to false",
        );
    };
    let facts = crate::gate::dockerproxy::ProxyFacts {
        agentgate_default: config.gates.agentgate.default_decision,
        protected_images: vec![config.container_image.clone()],
        network: None,
    };
    match crate::gate::dockerproxy::policy_json(&config.gates.docker_proxy, &facts) {
        Ok(_) => Check::ok(
            "docker proxy",
            format!("policy valid; agents reach {} through it", socket.display()),
        ),
        Err(err) => Check::fail(
            "docker proxy",
            err.to_string(),
            "fix gates.docker_proxy in the config (`loop config show` prints it)",
        ),
    }
}

async fn database_check(config: &Config) -> Check {
    let url = config.database_url();
    let shown = loop_store::redact_url(&url);
    if !config.database_url.is_set() && !config.db_path.exists() {
        return Check::ok(
            "database",
            format!(
                "{} will be created by `loop serve`",
                config.db_path.display()
            ),
        );
    }
    match Store::pending_migrations(&url).await {
        Ok(pending) if pending.is_empty() => {
            Check::ok("database", format!("{shown}: schema up to date"))
        }
        Ok(pending) => Check::warn(
            "database",
            format!(
                "{shown}: {} migration(s) pending: {}",
                pending.len(),
                pending.join(", ")
            ),
            "`loop serve` applies them at start",
        ),
        Err(err) => Check::fail(
            "database",
            err.to_string(),
            "check db_path / database_url and that the server is reachable",
        ),
    }
}

/// Whether the report allows loop to run.
pub fn all_passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}
