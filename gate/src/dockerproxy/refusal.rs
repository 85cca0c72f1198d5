//! A request the proxy does not forward, and why.

/// A request that is not forwarded: the HTTP status and what the agent is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 403 for a policy deny, 404 for an object that does not exist, 400/413 for a body the
    /// proxy cannot read.
    pub status: u16,
    /// The deciding rule, e.g. `baseline.privileged` or `http_rules[0]`.
    pub rule: String,
    /// Why, for the agent.
    pub message: String,
}

impl Refusal {
    /// A policy deny (403).
    pub fn deny(rule: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status: 403,
            rule: format!("baseline.{rule}"),
            message: message.into(),
        }
    }

    /// A request the proxy cannot read (400).
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            rule: "baseline.malformed".to_owned(),
            message: message.into(),
        }
    }

    /// Whether this is a policy decision worth auditing (not a 404 or a malformed request).
    pub fn is_deny(&self) -> bool {
        self.status == 403
    }
}
