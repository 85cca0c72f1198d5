//! The approval protocol between the in-container supervisor and the bot:
//! `POST {API_URL}/api/gate/container-approval` with `Authorization: Bearer {LOOP_GATE_TOKEN}`.
//!
//! The gate owns this protocol, so the shapes are defined once here and imported by the bot's
//! axum handler and by the HTTP approver. The server answers 200 with an [`ApprovalResponse`],
//! 401 for a bad token and 503 when no one can be asked; every non-200 answer, timeout or
//! decoding error is a deny on the gate side (fail closed).

use serde::{Deserialize, Serialize};

use crate::policy::{ConnectTarget, Decision, FileOperation, Request};

/// The path of the approval endpoint, relative to `API_URL`.
pub use loop_wire::routes::GATE_APPROVAL as APPROVAL_PATH;

/// The person's answer: the three buttons (the admin API carries it too, so it is defined with
/// the host API's bodies).
pub use loop_wire::api::ApprovalDecision;

/// What the agent tried to do, in wire form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GateAction {
    /// `execve(2)`.
    Exec {
        /// The resolved program path.
        program: String,
        /// The full argv (possibly lossy UTF-8).
        argv: Vec<String>,
        /// The caller's working directory, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// A file operation.
    File {
        /// The absolute path.
        path: String,
        /// The operation.
        operation: FileOperation,
    },
    /// `connect(2)` to a unix socket (`/path` or `@abstract`).
    ConnectUnix {
        /// The socket path.
        path: String,
    },
    /// `connect(2)` to an ip address and port.
    ConnectInet {
        /// `1.2.3.4:443` or `[::1]:443`.
        address: String,
    },
    /// A Docker API call through `loop dockerproxy`.
    Docker {
        /// `GET`, `POST`, ...
        method: String,
        /// The version-stripped path and query, e.g. `/containers/create?name=web`.
        path: String,
    },
}

impl From<&Request> for GateAction {
    fn from(request: &Request) -> GateAction {
        match request {
            Request::Exec { program, argv, cwd } => GateAction::Exec {
                program: program.display().to_string(),
                argv: argv.clone(),
                cwd: cwd.as_ref().map(|c| c.display().to_string()),
            },
            Request::File { path, operation } => GateAction::File {
                path: path.display().to_string(),
                operation: *operation,
            },
            Request::Connect {
                target: ConnectTarget::Unix(path),
            } => GateAction::ConnectUnix {
                path: path.display().to_string(),
            },
            Request::Connect {
                target: ConnectTarget::Inet(addr),
            } => GateAction::ConnectInet {
                address: addr.to_string(),
            },
        }
    }
}

/// The body of `POST /api/gate/container-approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// `LOOP_CHANNEL_ID` of the container; the server checks it against the token's scope.
    pub channel_id: String,
    /// What is being asked about.
    pub action: GateAction,
    /// One line for the chat message, e.g. `exec /usr/bin/git push origin main`.
    pub summary: String,
    /// The key an "allow for session" answer is cached under (see
    /// [`Request::session_key`]); the server may cache it too.
    pub session_key: String,
    /// The rule that asked for approval, e.g. `command_rules[0]` or `default_decision`.
    pub rule: String,
    /// The rule's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The pid of the caller inside the container, for the audit log.
    pub pid: u32,
}

impl ApprovalRequest {
    /// Builds the request for a policy decision that said `approve`.
    pub fn new(channel_id: &str, pid: u32, request: &Request, decision: &Decision) -> Self {
        ApprovalRequest {
            channel_id: channel_id.to_owned(),
            action: GateAction::from(request),
            summary: truncate(&request.to_string(), MAX_SUMMARY),
            session_key: request.session_key(),
            rule: decision.rule.to_string(),
            message: decision.message.clone(),
            pid,
        }
    }
}

/// Longest summary sent to the chat; the full argv is in `action`.
const MAX_SUMMARY: usize = 1000;

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What an [`crate::notify::Approver`] returns: the person's answer, or `Deny` after any
/// error.
pub type ApprovalOutcome = ApprovalDecision;

/// The 200 body of `POST /api/gate/container-approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalResponse {
    /// The decision.
    pub decision: ApprovalDecision,
    /// Optional text for the agent (e.g. why it was denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How one trapped syscall ended, for the host-side audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The policy allowed it.
    Allowed,
    /// The policy denied it.
    Denied,
    /// An earlier "allow for session" covered it.
    AllowedBySession,
    /// A person allowed it once.
    ApprovedOnce,
    /// A person allowed it for the session.
    ApprovedForSession,
    /// A person (or the approver, after an error) denied it.
    DeniedByApprover,
    /// Too many approvals were pending.
    DeniedOverLimit,
    /// Its arguments could not be read.
    DeniedUnreadable,
}

/// One decided syscall. The supervisor hands these to a [`crate::notify::AuditSink`]; the bot
/// records them on the host (`gates.audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// `LOOP_CHANNEL_ID` of the container.
    pub channel_id: String,
    /// The caller inside the container.
    pub pid: u32,
    /// The syscall's name.
    pub syscall: String,
    /// What was attempted; absent when the arguments could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<GateAction>,
    /// The deciding rule, e.g. `baseline.file_rules[3]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::{RuleRef, Verdict};

    #[test]
    fn request_shape() {
        let req = Request::Exec {
            program: PathBuf::from("/usr/bin/git"),
            argv: vec!["git".into(), "push".into()],
            cwd: None,
        };
        let decision = Decision {
            verdict: Verdict::Approve,
            rule: RuleRef::Default,
            message: None,
        };
        let body = ApprovalRequest::new("C123", 42, &req, &decision);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "channel_id": "C123",
                "action": {"kind": "exec", "program": "/usr/bin/git", "argv": ["git", "push"]},
                "summary": "exec /usr/bin/git push",
                "session_key": "execve:/usr/bin/git:push",
                "rule": "default_decision",
                "pid": 42
            })
        );
        let back: ApprovalRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn action_shapes() {
        let file = GateAction::from(&Request::File {
            path: PathBuf::from("/a"),
            operation: FileOperation::Write,
        });
        assert_eq!(
            serde_json::to_value(&file).unwrap(),
            serde_json::json!({"kind": "file", "path": "/a", "operation": "write"})
        );
        let inet = GateAction::from(&Request::Connect {
            target: ConnectTarget::Inet("[::1]:443".parse().unwrap()),
        });
        assert_eq!(
            serde_json::to_value(&inet).unwrap(),
            serde_json::json!({"kind": "connect_inet", "address": "[::1]:443"})
        );
        let docker = GateAction::Docker {
            method: "POST".into(),
            path: "/containers/create?name=web".into(),
        };
        let json = serde_json::json!({"kind": "docker", "method": "POST", "path": "/containers/create?name=web"});
        assert_eq!(serde_json::to_value(&docker).unwrap(), json);
        assert_eq!(serde_json::from_value::<GateAction>(json).unwrap(), docker);
    }

    #[test]
    fn response_decisions() {
        for (text, expected) in [
            ("allow_once", ApprovalDecision::AllowOnce),
            ("allow_session", ApprovalDecision::AllowSession),
            ("deny", ApprovalDecision::Deny),
        ] {
            let r: ApprovalResponse =
                serde_json::from_str(&format!(r#"{{"decision": "{text}"}}"#)).unwrap();
            assert_eq!(r.decision, expected);
        }
        assert!(serde_json::from_str::<ApprovalResponse>(r#"{"decision": "allow"}"#).is_err());
        assert!(serde_json::from_str::<ApprovalResponse>(r#"{"decison": "deny"}"#).is_err());
    }

    #[test]
    fn summary_is_truncated_on_char_boundary() {
        let long = "é".repeat(MAX_SUMMARY);
        let t = truncate(&long, MAX_SUMMARY);
        assert!(t.len() <= MAX_SUMMARY + "…".len());
        assert!(t.ends_with('…'));
    }
}
