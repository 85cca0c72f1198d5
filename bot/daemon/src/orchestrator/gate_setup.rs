//! The security gate and the docker proxy of one turn. Their policies are checked before
//! anything starts, so that a broken rule is a clear message in the channel rather than a
//! container that refuses to run the agent; then they are armed on the container's settings
//! with the turn's token.

use std::path::PathBuf;

use loop_runner::spec::{ContainerSettings, DockerProxySpec, GateSpec};

use super::Orchestrator;
use super::workspace::HostFacts;
use crate::config::Config;

/// What a turn's gate and docker proxy run with: checked, not yet armed.
#[derive(Debug)]
pub(super) struct GatePlan {
    /// The agent gate's policy JSON, when `gates.agentgate.enabled`.
    gate_policy: Option<String>,
    /// The docker proxy's policy JSON and the host socket it forwards to, when
    /// `gates.docker_proxy.enabled`.
    proxy: Option<(String, PathBuf)>,
}

/// Why a turn cannot run with the gate its project asks for.
#[derive(Debug)]
pub(super) struct GateRefusal {
    /// Recorded as the run's error.
    pub error: String,
    /// Told to the channel.
    pub reply: String,
}

impl GateRefusal {
    fn new(error: impl Into<String>, reply: String) -> GateRefusal {
        GateRefusal {
            error: error.into(),
            reply,
        }
    }
}

/// Checks the gate and docker proxy that `project` (the global config with the project's file
/// layered on) enables, under the `global` config and the host's facts.
/// `environment_images` are what the turn's own environment builds on: the docker proxy
/// protects them as it protects the agent image.
pub(super) fn plan_gate(
    global: &Config,
    project: &Config,
    facts: &HostFacts,
    environment_images: &[String],
) -> Result<GatePlan, GateRefusal> {
    // gVisor (runsc) does not implement seccomp user notification, which the gate is built
    // on: the agent would not start. Say so instead of silently dropping the gate.
    if project.gates.agentgate.enabled
        && project.container_runtime.as_deref() == Some(crate::gate::GVISOR_RUNTIME)
    {
        let reply = "🛡️ The security gate cannot run under gVisor (`container_runtime: \"runsc\"` has no seccomp user notification). Use runc with the gate, or set `gates.agentgate.enabled: false` to rely on gVisor's own isolation.".to_owned();
        return Err(GateRefusal::new("gate unsupported under gVisor", reply));
    }
    let docker_proxy = project.gates.docker_proxy.enabled;
    let gate_policy = if project.gates.agentgate.enabled {
        match crate::gate::policy_json(&project.gates.agentgate, docker_proxy) {
            Ok(policy) => Some(policy),
            Err(err) => {
                let reply = format!(
                    "🛡️ The gate policy is invalid, so nothing ran: {err}. Fix `gates.agentgate` in the config."
                );
                return Err(GateRefusal::new(err.to_string(), reply));
            }
        }
    } else {
        None
    };
    let proxy = if docker_proxy {
        Some(plan_docker_proxy(
            global,
            project,
            facts,
            environment_images,
        )?)
    } else {
        None
    };
    Ok(GatePlan { gate_policy, proxy })
}

/// The docker proxy's policy, and the host socket it forwards to.
fn plan_docker_proxy(
    global: &Config,
    project: &Config,
    facts: &HostFacts,
    environment_images: &[String],
) -> Result<(String, PathBuf), GateRefusal> {
    let mut protected_images = vec![
        global.container_image.clone(),
        project.container_image.clone(),
        global.browser.chrome_image.clone(),
        project.browser.chrome_image.clone(),
        // Every project's own images: a turn may run in one.
        format!("{}:latest", loop_runner::project_image::BASE_REPO),
        format!("{}:latest", loop_runner::project_image::PROJECT_REPO),
    ];
    protected_images.extend_from_slice(environment_images);
    let facts = crate::gate::dockerproxy::ProxyFacts {
        agentgate_default: project.gates.agentgate.default_decision,
        protected_images,
        network: facts.network.clone(),
    };
    let policy = match crate::gate::dockerproxy::policy_json(&project.gates.docker_proxy, &facts) {
        Ok(policy) => policy,
        Err(err) => {
            let reply = format!(
                "🐳 The docker proxy policy is invalid, so nothing ran: {err}. Fix `gates.docker_proxy` in the config."
            );
            return Err(GateRefusal::new(err.to_string(), reply));
        }
    };
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let Some(socket) = loop_runner::docker::local_socket_path(docker_host.as_deref()) else {
        let reply = format!(
            "🐳 The docker proxy needs a local Docker socket to mount, and DOCKER_HOST is `{}`, so nothing ran. Unset DOCKER_HOST or set `gates.docker_proxy.enabled: false`.",
            docker_host.unwrap_or_default()
        );
        return Err(GateRefusal::new(
            "docker proxy without a local socket",
            reply,
        ));
    };
    Ok((policy, socket))
}

impl GatePlan {
    /// Whether the plan arms anything (a gate or a docker proxy).
    pub(super) fn is_empty(&self) -> bool {
        self.gate_policy.is_none() && self.proxy.is_none()
    }
}

impl Orchestrator {
    /// Gives the container of `key`'s turn its tokens and, when `plan` has any, the gate and
    /// the docker proxy with their policies and settings.
    pub(super) fn arm_gate(
        &self,
        key: &str,
        run_id: &str,
        plan: GatePlan,
        settings: &mut ContainerSettings,
    ) {
        // The built-in MCP server's host API token (task tools). Not the gate's token, which
        // the agent must never see; revoked with it when the container goes (see `run_turn`).
        settings.api_token = Some(self.inner.gate.api_token(key));
        if plan.is_empty() {
            return;
        }
        // Keyed by the channel (see `crate::gate`): a warm agent keeps the token it was
        // started with; the token is revoked when no warm agent stays behind after the turn.
        // The gate and the docker proxy share it.
        let token = self.inner.gate.begin_turn(key, run_id);
        self.arm_gate_with(token, plan, settings);
    }

    /// Arms the gate and the docker proxy of `plan` on `settings` with `token` (a turn's, or
    /// a terminal's shell container's).
    pub(super) fn arm_gate_with(
        &self,
        token: String,
        plan: GatePlan,
        settings: &mut ContainerSettings,
    ) {
        let GatePlan { gate_policy, proxy } = plan;
        if gate_policy.is_none() && proxy.is_none() {
            return;
        }
        let config = &self.inner.config;
        let timeout = config.gates.agentgate.approval_timeout_sec;
        settings.envs.insert(
            loop_wire::container::env::GATE_APPROVAL_TIMEOUT_SEC.to_owned(),
            serde_json::Value::String(timeout.to_string()),
        );
        if config.gates.audit.verbose {
            settings.envs.insert(
                loop_wire::container::env::GATE_AUDIT_VERBOSE.to_owned(),
                serde_json::Value::String("1".to_owned()),
            );
        }
        settings.envs.insert(
            loop_wire::container::env::GATE_MAX_PENDING.to_owned(),
            serde_json::Value::String(config.gates.rate_limits.pending.to_string()),
        );
        let policy_dir = config.loop_dir.join("run");
        if let Some((policy_json, host_socket)) = proxy {
            settings.docker_proxy = Some(DockerProxySpec {
                policy_json,
                host_socket,
                policy_dir: policy_dir.clone(),
                token: token.clone(),
            });
        }
        if let Some(policy_json) = gate_policy {
            settings.gate = Some(GateSpec {
                policy_json,
                token,
                policy_dir,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSources;

    fn config(dir: &std::path::Path) -> Config {
        let sources = ConfigSources {
            home: dir.join("home"),
            loop_dir: dir.join("home/.loop"),
            env: Default::default(),
        };
        std::fs::create_dir_all(&sources.home).expect("home");
        Config::load(&sources).expect("config").config
    }

    fn facts() -> HostFacts {
        HostFacts {
            timezone: "UTC".into(),
            proxy_env: Default::default(),
            git_excludes_file: None,
            daemon_id: "d".into(),
            api_url: "http://127.0.0.1:1".into(),
            network: None,
        }
    }

    /// The agent gate alone (the docker proxy's socket depends on the host's DOCKER_HOST).
    #[test]
    fn the_gate_is_planned_or_refused_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let global = config(dir.path());
        let check = |enabled: bool, runtime: Option<&str>, expected: Result<bool, &str>| {
            let mut project = global.clone();
            project.gates.agentgate.enabled = enabled;
            project.gates.docker_proxy.enabled = false;
            project.container_runtime = runtime.map(str::to_owned);
            let planned = plan_gate(&global, &project, &facts(), &[])
                .map(|plan| {
                    assert!(plan.proxy.is_none());
                    plan.gate_policy.is_some()
                })
                .map_err(|refusal| refusal.error);
            assert_eq!(
                planned,
                expected.map_err(str::to_owned),
                "{enabled} {runtime:?}"
            );
        };
        check(false, None, Ok(false));
        check(false, Some("runsc"), Ok(false));
        check(true, None, Ok(true));
        check(true, Some("runc"), Ok(true));
        check(true, Some("runsc"), Err("gate unsupported under gVisor"));
    }

    /// What a project's environment builds on, and every project image, cannot be replaced
    /// through the agent's docker proxy (the next build or turn would run what the agent put
    /// there).
    #[test]
    fn the_docker_proxy_protects_what_a_project_environment_builds_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let global = config(dir.path());
        let mut project = global.clone();
        project.gates.docker_proxy.enabled = true;
        let plan = plan_gate(
            &global,
            &project,
            &facts(),
            &["python:3.12-slim".to_owned()],
        )
        .expect("planned");
        let (policy, _) = plan.proxy.expect("the docker proxy");
        let policy: serde_json::Value = serde_json::from_str(&policy).expect("json");
        let protected = policy["context"]["protected_images"].to_string();
        for image in [
            "python:3.12-slim",
            "loop-project:latest",
            "loop-base:latest",
            "loop-agent:latest",
        ] {
            assert!(protected.contains(image), "{image} in {protected}");
        }
    }
}
