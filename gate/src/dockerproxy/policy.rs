//! The proxy's policy file (`/etc/loop/proxy-policy.json`), its loader and validation, and
//! the user rules (`http_rules`, `body_rules`, `default_decision`).
//!
//! Pure: no IO besides [`ProxyPolicyFile::load`], no async. The built-in baseline, which a rule
//! can never widen, is in [`super::baseline`]; it runs first, and the user rules only decide
//! requests the baseline let through.
//!
//! # Evaluation
//!
//! `http_rules` match the method and the version-stripped, decoded path (`/containers/*/exec`
//! globs: `*` stays inside a segment, `**` crosses them). `body_rules` match a field of a JSON
//! body (dotted path, keys compared without case as the daemon does; an array on the way or at
//! the end matches when any element does; an object at the end is matched by its keys). In each
//! list the first matching rule wins; when both lists have a match, the stricter of the two
//! decides (`deny` > `approve` > `allow`), so an `allow` in one list never undoes a `deny` in
//! the other. Nothing matched: `default_decision`. The bot prepends a project's rules to the
//! global ones.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::get_ci;
use crate::policy::Verdict;

/// Errors from loading or validating a proxy policy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyPolicyError {
    /// The file could not be read.
    #[error("cannot read docker proxy policy {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Malformed JSON, an unknown key or a value of the wrong type.
    #[error("invalid docker proxy policy {origin} at `{field}`: {message}")]
    Parse {
        /// The file, or where the rules came from (`gates.docker_proxy`).
        origin: String,
        /// The offending field, e.g. `http_rules[0].methods[1]`.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A glob that does not compile.
    #[error("invalid glob `{pattern}` in `{field}`: {source}")]
    InvalidGlob {
        /// The field, e.g. `body_rules[2].patterns[0]`.
        field: String,
        /// The glob as written.
        pattern: String,
        /// The compiler error.
        #[source]
        source: globset::Error,
    },
    /// A value that parses but cannot be used.
    #[error("invalid docker proxy policy at `{field}`: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One rule on the method and path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// `GET`, `POST`, ...; empty matches every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Globs on the version-stripped path; empty matches every path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// What to do.
    pub decision: Verdict,
    /// Shown to the agent (denies) or the person asked (approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One rule on a field of a JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyRule {
    /// Globs on the version-stripped path (`/containers/create`); empty matches every endpoint
    /// with a JSON body.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Dotted field path, e.g. `HostConfig.NetworkMode`.
    pub field: String,
    /// Globs on the field's value (`*` matches anything, `/` included).
    pub patterns: Vec<String>,
    /// What to do.
    pub decision: Verdict,
    /// Shown to the agent (denies) or the person asked (approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Facts about the container the proxy serves, written by loop (the daemon and the runner),
/// never taken from a config file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyContext {
    /// The agent container's name: containers the proxy creates get
    /// `loop.dockerproxy.owner=<owner>`, and only those may be used.
    #[serde(default)]
    pub owner: String,
    /// The channel (`LOOP_CHANNEL_ID`): named volumes the proxy creates belong to it and
    /// outlive the container.
    #[serde(default)]
    pub channel: String,
    /// The daemon instance, labelled on what the proxy creates so the daemon can clean up
    /// after a crash.
    #[serde(default)]
    pub daemon: String,
    /// Host directories nested containers may bind-mount: the agent's project mount and extra
    /// directories (mounted at the same path in the agent container).
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    /// Images that cannot be tagged, built, pulled, imported, loaded or removed through the
    /// proxy (the agent image, the browser image): their whole repository is protected.
    #[serde(default)]
    pub protected_images: Vec<String>,
    /// With egress control, the internal network every nested container must join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// The policy file, snake_case; unknown keys are errors at every level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPolicyFile {
    /// When no rule matches.
    #[serde(default)]
    pub default_decision: Verdict,
    /// Rules on method and path.
    #[serde(default)]
    pub http_rules: Vec<HttpRule>,
    /// Rules on JSON body fields.
    #[serde(default)]
    pub body_rules: Vec<BodyRule>,
    /// Written by loop.
    #[serde(default)]
    pub context: ProxyContext,
}

impl ProxyPolicyFile {
    /// Parses JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<ProxyPolicyFile, ProxyPolicyError> {
        crate::policy::parse_json(text).map_err(|problem| parse_error(origin, problem))
    }

    /// Parses an already decoded value (the bot keeps config rules as values).
    pub fn from_value(value: Value, origin: &str) -> Result<ProxyPolicyFile, ProxyPolicyError> {
        crate::policy::parse_value(value).map_err(|problem| parse_error(origin, problem))
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<ProxyPolicyFile, ProxyPolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProxyPolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        ProxyPolicyFile::from_json(&text, &path.display().to_string())
    }

    /// Compiles every rule; the context may still be incomplete (the bot checks its config
    /// before the runner adds the container's name and mounts).
    pub fn validate(&self) -> Result<(), ProxyPolicyError> {
        Rules::compile(self).map(|_| ())
    }

    /// Checks the context the container-side proxy needs.
    pub fn validate_context(&self) -> Result<(), ProxyPolicyError> {
        let invalid = |field: &str, message: &str| ProxyPolicyError::Invalid {
            field: format!("context.{field}"),
            message: message.to_owned(),
        };
        if self.context.owner.is_empty() {
            return Err(invalid("owner", "the agent container's name is missing"));
        }
        if self.context.channel.is_empty() {
            return Err(invalid("channel", "the channel is missing"));
        }
        for (i, path) in self.context.allowed_paths.iter().enumerate() {
            if super::names::normalize_host_path(path).as_deref() != Some(path.as_str()) {
                return Err(invalid(
                    &format!("allowed_paths[{i}]"),
                    "must be an absolute, normalised path",
                ));
            }
        }
        for (i, image) in self.context.protected_images.iter().enumerate() {
            if super::names::repository_of(image).is_none() {
                return Err(invalid(
                    &format!("protected_images[{i}]"),
                    "not an image reference",
                ));
            }
        }
        Ok(())
    }
}

fn parse_error(origin: &str, problem: crate::policy::JsonProblem) -> ProxyPolicyError {
    ProxyPolicyError::Parse {
        origin: origin.to_owned(),
        field: problem.field,
        message: problem.message,
    }
}

#[derive(Debug, Clone)]
struct CompiledHttpRule {
    methods: Vec<String>,
    paths: Vec<GlobMatcher>,
    decision: Verdict,
    message: Option<String>,
}

#[derive(Debug, Clone)]
struct CompiledBodyRule {
    endpoints: Vec<GlobMatcher>,
    field: Vec<String>,
    patterns: Vec<GlobMatcher>,
    decision: Verdict,
    message: Option<String>,
}

/// The compiled user rules.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    default_decision: Verdict,
    http: Vec<CompiledHttpRule>,
    body: Vec<CompiledBodyRule>,
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    /// `http_rules[i]`.
    Http(usize),
    /// `body_rules[i]`.
    Body(usize),
    /// `default_decision`.
    Default,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleRef::Http(i) => write!(f, "http_rules[{i}]"),
            RuleRef::Body(i) => write!(f, "body_rules[{i}]"),
            RuleRef::Default => f.write_str("default_decision"),
        }
    }
}

/// What the user rules say about a request the baseline let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDecision {
    /// Allow, approve or deny.
    pub verdict: Verdict,
    /// The deciding rule.
    pub rule: RuleRef,
    /// Its message.
    pub message: Option<String>,
}

fn path_glob(pattern: &str, field: String) -> Result<GlobMatcher, ProxyPolicyError> {
    if !pattern.starts_with('/') {
        return Err(ProxyPolicyError::Invalid {
            field,
            message: format!("`{pattern}` must start with / (a path such as /containers/*/exec)"),
        });
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| ProxyPolicyError::InvalidGlob {
            field,
            pattern: pattern.to_owned(),
            source,
        })
}

impl Rules {
    pub(super) fn compile(file: &ProxyPolicyFile) -> Result<Rules, ProxyPolicyError> {
        let mut http = Vec::new();
        for (i, rule) in file.http_rules.iter().enumerate() {
            let mut methods = Vec::new();
            for (j, method) in rule.methods.iter().enumerate() {
                if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(ProxyPolicyError::Invalid {
                        field: format!("http_rules[{i}].methods[{j}]"),
                        message: format!("`{method}` is not an HTTP method"),
                    });
                }
                methods.push(method.to_ascii_uppercase());
            }
            let paths = rule
                .paths
                .iter()
                .enumerate()
                .map(|(j, p)| path_glob(p, format!("http_rules[{i}].paths[{j}]")))
                .collect::<Result<_, _>>()?;
            http.push(CompiledHttpRule {
                methods,
                paths,
                decision: rule.decision,
                message: rule.message.clone(),
            });
        }
        let mut body = Vec::new();
        for (i, rule) in file.body_rules.iter().enumerate() {
            let endpoints = rule
                .endpoints
                .iter()
                .enumerate()
                .map(|(j, p)| path_glob(p, format!("body_rules[{i}].endpoints[{j}]")))
                .collect::<Result<_, _>>()?;
            let field: Vec<String> = rule.field.split('.').map(str::to_owned).collect();
            if field.iter().any(String::is_empty) {
                return Err(ProxyPolicyError::Invalid {
                    field: format!("body_rules[{i}].field"),
                    message: format!(
                        "`{}` is not a dotted field path such as HostConfig.NetworkMode",
                        rule.field
                    ),
                });
            }
            if rule.patterns.is_empty() {
                return Err(ProxyPolicyError::Invalid {
                    field: format!("body_rules[{i}].patterns"),
                    message: "at least one pattern is needed (`*` matches any value)".to_owned(),
                });
            }
            let mut patterns = Vec::new();
            for (j, pattern) in rule.patterns.iter().enumerate() {
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(false)
                    .build()
                    .map_err(|source| ProxyPolicyError::InvalidGlob {
                        field: format!("body_rules[{i}].patterns[{j}]"),
                        pattern: pattern.clone(),
                        source,
                    })?;
                patterns.push(glob.compile_matcher());
            }
            body.push(CompiledBodyRule {
                endpoints,
                field,
                patterns,
                decision: rule.decision,
                message: rule.message.clone(),
            });
        }
        Ok(Rules {
            default_decision: file.default_decision,
            http,
            body,
        })
    }

    /// The user rules' decision for `method` on `route` with an optional JSON `body`.
    pub(super) fn decide(&self, method: &str, route: &str, body: Option<&Value>) -> RuleDecision {
        let http = self.http.iter().enumerate().find(|(_, rule)| {
            (rule.methods.is_empty() || rule.methods.iter().any(|m| m == method))
                && (rule.paths.is_empty() || rule.paths.iter().any(|g| g.is_match(route)))
        });
        let body_match = body.and_then(|body| {
            self.body.iter().enumerate().find(|(_, rule)| {
                (rule.endpoints.is_empty() || rule.endpoints.iter().any(|g| g.is_match(route)))
                    && field_matches(body, &rule.field, &rule.patterns)
            })
        });
        let http = http.map(|(i, r)| RuleDecision {
            verdict: r.decision,
            rule: RuleRef::Http(i),
            message: r.message.clone(),
        });
        let body_match = body_match.map(|(i, r)| RuleDecision {
            verdict: r.decision,
            rule: RuleRef::Body(i),
            message: r.message.clone(),
        });
        match (http, body_match) {
            (Some(h), Some(b)) => {
                if b.verdict > h.verdict {
                    b
                } else {
                    h
                }
            }
            (Some(h), None) => h,
            (None, Some(b)) => b,
            (None, None) => RuleDecision {
                verdict: self.default_decision,
                rule: RuleRef::Default,
                message: None,
            },
        }
    }
}

/// Whether the field at `path` of `value` matches any pattern.
fn field_matches(value: &Value, path: &[String], patterns: &[GlobMatcher]) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| field_matches(v, path, patterns)),
        _ if path.is_empty() => leaf_matches(value, patterns),
        Value::Object(map) => {
            get_ci(map, &path[0]).is_some_and(|child| field_matches(child, &path[1..], patterns))
        }
        _ => false,
    }
}

fn leaf_matches(value: &Value, patterns: &[GlobMatcher]) -> bool {
    let any = |text: &str| patterns.iter().any(|g| g.is_match(text));
    match value {
        Value::String(s) => any(s),
        Value::Bool(b) => any(&b.to_string()),
        Value::Number(n) => any(&n.to_string()),
        Value::Object(map) => map.keys().any(|k| any(k)),
        Value::Array(_) | Value::Null => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(value: Value) -> Rules {
        Rules::compile(&ProxyPolicyFile::from_value(value, "test").unwrap()).unwrap()
    }

    #[test]
    fn first_match_wins_and_the_stricter_list_decides() {
        let r = rules(json!({
            "default_decision": "approve",
            "http_rules": [
                {"methods": ["post"], "paths": ["/containers/*/exec"], "decision": "deny", "message": "no exec"},
                {"paths": ["/images/**"], "decision": "allow"},
                {"methods": ["POST"], "paths": ["/containers/create"], "decision": "allow"},
                {"paths": ["/containers/**"], "decision": "deny"}
            ],
            "body_rules": [
                {"endpoints": ["/containers/create"], "field": "HostConfig.NetworkMode", "patterns": ["bridge", "none"], "decision": "approve"},
                {"field": "Image", "patterns": ["*/evil*"], "decision": "deny"},
                {"field": "Image", "patterns": ["*"], "decision": "allow"}
            ]
        }));
        let check =
            |method: &str, route: &str, body: Option<Value>, verdict: Verdict, rule: RuleRef| {
                let d = r.decide(method, route, body.as_ref());
                assert_eq!(
                    (d.verdict, d.rule),
                    (verdict, rule),
                    "{method} {route} {body:?}"
                );
            };
        check(
            "POST",
            "/containers/abc/exec",
            None,
            Verdict::Deny,
            RuleRef::Http(0),
        );
        check(
            "GET",
            "/containers/abc/exec",
            None,
            Verdict::Deny,
            RuleRef::Http(3),
        );
        check(
            "GET",
            "/images/library/debian/json",
            None,
            Verdict::Allow,
            RuleRef::Http(1),
        );
        check("GET", "/_ping", None, Verdict::Approve, RuleRef::Default);
        // `*` stays in a segment: /containers/a/b/exec is not /containers/*/exec.
        check(
            "POST",
            "/containers/a/b/exec",
            None,
            Verdict::Deny,
            RuleRef::Http(3),
        );
        // Both lists match: the stricter wins, whichever list it is in.
        check(
            "POST",
            "/containers/create",
            Some(json!({"hostconfig": {"networkmode": "bridge"}})),
            Verdict::Approve,
            RuleRef::Body(0),
        );
        check(
            "POST",
            "/containers/create",
            Some(json!({"Image": "x/evil:1", "HostConfig": {"NetworkMode": "host"}})),
            Verdict::Deny,
            RuleRef::Body(1),
        );
        check(
            "POST",
            "/containers/create",
            Some(json!({"Image": "debian"})),
            Verdict::Allow,
            RuleRef::Http(2),
        );
        // An allow in body_rules does not undo http_rules' deny.
        check(
            "POST",
            "/containers/x/update",
            Some(json!({"Image": "debian"})),
            Verdict::Deny,
            RuleRef::Http(3),
        );
    }

    #[test]
    fn fields_walk_arrays_and_objects() {
        let patterns = [GlobBuilder::new("/etc*").build().unwrap().compile_matcher()];
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        let body = json!({"HostConfig": {
            "Binds": ["/w:/w", "/etc:/x"],
            "Mounts": [{"Source": "/w"}, {"source": "/etc/passwd"}],
            "Sysctls": {"/etc-like-key": "1"},
            "Privileged": true,
            "Memory": 5
        }});
        assert!(field_matches(&body, &path("HostConfig.Binds"), &patterns));
        assert!(field_matches(
            &body,
            &path("hostconfig.mounts.SOURCE"),
            &patterns
        ));
        assert!(field_matches(&body, &path("HostConfig.Sysctls"), &patterns));
        assert!(!field_matches(
            &body,
            &path("HostConfig.Missing"),
            &patterns
        ));
        let t = [GlobBuilder::new("true").build().unwrap().compile_matcher()];
        assert!(field_matches(&body, &path("HostConfig.Privileged"), &t));
        let five = [GlobBuilder::new("5").build().unwrap().compile_matcher()];
        assert!(field_matches(&body, &path("HostConfig.Memory"), &five));
    }

    #[test]
    fn malformed_files_name_the_field() {
        let err = |text: &str| match ProxyPolicyFile::from_json(text, "p.json")
            .and_then(|f| f.validate().map(|()| f))
        {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        let cases = [
            (
                r#"{"http_rules": [{"paths": ["/x"], "decison": "deny"}]}"#,
                "http_rules[0]",
            ),
            (
                r#"{"http_rules": [{"paths": ["/x"], "decision": "maybe"}]}"#,
                "http_rules[0].decision",
            ),
            (
                r#"{"http_rules": [{"paths": ["x"], "decision": "deny"}]}"#,
                "http_rules[0].paths[0]",
            ),
            (
                r#"{"http_rules": [{"paths": ["/[x"], "decision": "deny"}]}"#,
                "http_rules[0].paths[0]",
            ),
            (
                r#"{"http_rules": [{"methods": ["PO ST"], "decision": "deny"}]}"#,
                "http_rules[0].methods[0]",
            ),
            (
                r#"{"body_rules": [{"field": "A..B", "patterns": ["x"], "decision": "deny"}]}"#,
                "body_rules[0].field",
            ),
            (
                r#"{"body_rules": [{"field": "A", "patterns": [], "decision": "deny"}]}"#,
                "body_rules[0].patterns",
            ),
            (
                r#"{"body_rules": [{"field": "A", "patterns": ["[x"], "decision": "deny"}]}"#,
                "body_rules[0].patterns[0]",
            ),
            (
                r#"{"body_rules": [{"patterns": ["x"], "decision": "deny"}]}"#,
                "body_rules[0]",
            ),
            (r#"{"default_decision": "allow", "extra": 1}"#, "extra"),
            (r#"{"context": {"owner": "x", "who": 1}}"#, "context"),
            ("{", "."),
        ];
        for (text, field) in cases {
            let message = err(text);
            assert!(message.contains(field), "{text}: {message}");
        }
        // `ask` is the same as `approve`.
        let file = ProxyPolicyFile::from_json(r#"{"default_decision": "ask"}"#, "p").unwrap();
        assert_eq!(file.default_decision, Verdict::Approve);
        // The container side needs the context.
        let missing = ProxyPolicyFile::default().validate_context().unwrap_err();
        assert!(missing.to_string().contains("context.owner"), "{missing}");
        let mut file = ProxyPolicyFile::default();
        file.context.owner = "loop-x".into();
        file.context.channel = "c".into();
        file.context.allowed_paths = vec!["/w/../etc".into()];
        let bad = file.validate_context().unwrap_err().to_string();
        assert!(bad.contains("context.allowed_paths[0]"), "{bad}");
    }
}
