//! The daemon's side of the docker proxy (`loop-gate` holds its policy and server,
//! `loop-guest` runs `loop dockerproxy` in the container): [`policy_json`], the per-container
//! policy file from `gates.docker_proxy`, checked with the proxy's own loader before a
//! container starts (the runner adds the container's name, channel, daemon id and the
//! directories nested containers may mount).

use loop_gate::dockerproxy::{ProxyPolicyError, ProxyPolicyFile};
use serde_json::{Value, json};

use crate::config::{DockerProxyConfig, GateDecision};

/// Where a policy error is reported as coming from.
const POLICY_ORIGIN: &str = "gates.docker_proxy";

/// What the daemon knows for the policy besides the rules.
#[derive(Debug, Clone, Default)]
pub struct ProxyFacts {
    /// `gates.agentgate.default_decision`, used when `gates.docker_proxy` sets none.
    pub agentgate_default: GateDecision,
    /// The images no agent may replace: the agent image (global and project) and the browser
    /// image.
    pub protected_images: Vec<String>,
    /// The internal network with `gates.egress` on.
    pub network: Option<String>,
}

/// Builds the policy file's JSON (without the per-container context the runner adds) and
/// validates it as the proxy will: a bad rule stops the turn with a message naming the field.
pub fn policy_json(
    config: &DockerProxyConfig,
    facts: &ProxyFacts,
) -> Result<String, ProxyPolicyError> {
    let mut images: Vec<String> = Vec::new();
    for image in &facts.protected_images {
        if !image.is_empty() && !images.contains(image) {
            images.push(image.clone());
        }
    }
    let value = json!({
        "default_decision": config.default_decision.unwrap_or(facts.agentgate_default),
        "http_rules": config.http_rules,
        "body_rules": config.body_rules,
        "context": {
            "protected_images": images,
            "network": facts.network,
        },
    });
    let file = ProxyPolicyFile::from_value(value, POLICY_ORIGIN)?;
    file.validate()?;
    Ok(serde_json::to_string_pretty(&file).unwrap_or_else(|_| Value::Null.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_gate::dockerproxy;

    #[test]
    fn the_policy_comes_from_the_config_and_is_validated() {
        let mut config = DockerProxyConfig {
            enabled: true,
            ..Default::default()
        };
        config.http_rules = vec![
            json!({"methods": ["POST"], "paths": ["/containers/*/exec"], "decision": "approve"}),
        ];
        config.body_rules = vec![
            json!({"endpoints": ["/containers/create"], "field": "HostConfig.NetworkMode", "patterns": ["host"], "decision": "deny"}),
        ];
        let facts = ProxyFacts {
            agentgate_default: GateDecision::Approve,
            protected_images: vec![
                "loop-agent:latest".into(),
                "loop-agent:latest".into(),
                String::new(),
            ],
            network: Some("loop-egress".into()),
        };
        let text = policy_json(&config, &facts).expect("valid");
        let file = ProxyPolicyFile::from_json(&text, "t").expect("round trip");
        assert_eq!(file.http_rules.len(), 1);
        assert_eq!(file.body_rules.len(), 1);
        assert_eq!(
            file.default_decision,
            loop_gate::policy::Verdict::Approve,
            "follows agentgate"
        );
        assert_eq!(file.context.protected_images, ["loop-agent:latest"]);
        assert_eq!(file.context.network.as_deref(), Some("loop-egress"));

        config.default_decision = Some(GateDecision::Deny);
        let text = policy_json(&config, &facts).expect("valid");
        assert!(text.contains("\"deny\""));

        config.body_rules = vec![json!({"field": "Image", "patterns": ["x"], "decison": "deny"})];
        let err = policy_json(&config, &facts)
            .expect_err("a typo must not pass")
            .to_string();
        assert!(
            err.contains("gates.docker_proxy") && err.contains("body_rules[0]"),
            "{err}"
        );
        config.body_rules = vec![];
        config.http_rules = vec![json!({"paths": ["containers/*"], "decision": "deny"})];
        let err = policy_json(&config, &facts)
            .expect_err("relative path")
            .to_string();
        assert!(err.contains("http_rules[0].paths[0]"), "{err}");
    }

    #[test]
    fn labels_agree_with_the_runner() {
        assert_eq!(
            dockerproxy::OWNER_LABEL,
            loop_runner::naming::LABEL_PROXY_OWNER
        );
        assert_eq!(
            dockerproxy::DAEMON_LABEL,
            loop_runner::naming::LABEL_PROXY_DAEMON
        );
        assert_eq!(
            dockerproxy::DEFAULT_UPSTREAM,
            loop_runner::spec::DOCKER_UPSTREAM_IN_CONTAINER
        );
        assert_eq!(
            dockerproxy::UPSTREAM_DIR,
            loop_runner::spec::DOCKER_UPSTREAM_DIR
        );
        assert_eq!(
            dockerproxy::DEFAULT_LISTEN,
            loop_runner::spec::DOCKER_PROXY_SOCKET
        );
        assert_eq!(
            dockerproxy::DEFAULT_POLICY_PATH,
            loop_runner::spec::PROXY_POLICY_IN_CONTAINER
        );
    }
}
