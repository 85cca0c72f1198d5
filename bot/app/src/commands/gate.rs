//! `loop approve`, `loop deny`, `loop approvals`, `loop audit` and `loop gate check`.

use loop_wire::routes;
use std::path::{Path, PathBuf};

use loop_gate::policy::{Policy, PolicyContext, PolicyError, PolicyFile, Request};
use loop_gate::wire::ApprovalDecision;

use super::client::{Client, ClientError};
use loop_store::{ApprovalRecord, AuditEntry};
use loop_wire::api::DecideApproval;

/// Answers an approval through the daemon.
pub async fn decide(
    client: &Client,
    id: &str,
    decision: ApprovalDecision,
) -> Result<ApprovalRecord, ClientError> {
    let by = std::env::var("USER").ok().filter(|u| !u.is_empty());
    let body = serde_json::to_value(DecideApproval { decision, by }).unwrap_or_default();
    let value = client.post_json(&routes::approval(id), &body).await?;
    serde_json::from_value(value).map_err(|err| ClientError::Refused {
        status: 200,
        message: format!("unexpected answer: {err}"),
    })
}

/// Approvals waiting for an answer.
pub async fn pending(client: &Client) -> Result<Vec<ApprovalRecord>, ClientError> {
    let value = client.get_json(routes::APPROVALS).await?;
    serde_json::from_value(value).map_err(|err| ClientError::Refused {
        status: 200,
        message: format!("unexpected answer: {err}"),
    })
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `loop approvals` output.
pub fn render_pending(approvals: &[ApprovalRecord]) -> String {
    if approvals.is_empty() {
        return "No approvals are waiting.".to_owned();
    }
    let mut out = format!(
        "{:<12} {:<20} {:<24} {}\n",
        "id", "asked", "channel", "action"
    );
    for a in approvals {
        out.push_str(&format!(
            "{:<12} {:<20} {:<24} {}\n",
            a.id,
            time(a.created_at),
            a.channel_key,
            a.summary
        ));
    }
    out.push_str("\nanswer with `loop approve ID [--session]` or `loop deny ID`");
    out
}

/// `loop audit` output.
pub fn render_audit(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "No gate decisions recorded.".to_owned();
    }
    let mut out = format!(
        "{:<20} {:<6} {:<14} {:<10} {:<24} {}\n",
        "when", "verdict", "source", "by", "channel", "action"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<20} {:<6} {:<14} {:<10} {:<24} {}\n",
            time(e.created_at),
            e.verdict,
            e.source,
            e.decided_by.as_deref().unwrap_or("-"),
            e.channel_key,
            e.detail
        ));
    }
    out.trim_end().to_owned()
}

/// Why `loop gate check` could not decide.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("no command given after `--`")]
    NoCommand,
}

/// What a policy file decides for a command, as one line: `deny (command_rules[0]): why`.
/// Pure apart from reading the file; the program is looked up on `PATH` like a shell would,
/// so rules see the same resolved path as in the container when the layouts agree.
pub fn check(policy_file: &Path, command: &[String]) -> Result<String, CheckError> {
    let Some(program) = command.first() else {
        return Err(CheckError::NoCommand);
    };
    let file = PolicyFile::load(policy_file)?;
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let mut context = PolicyContext::new(home);
    context.workspace = std::env::current_dir().ok();
    let policy = Policy::compile(&file, &context)?;
    let request = Request::Exec {
        program: resolve_program(program),
        argv: command.to_vec(),
        cwd: context.workspace.clone(),
    };
    let decision = policy.decide(&request);
    let mut line = format!("{} ({})", decision.verdict, decision.rule);
    if let Some(message) = decision.message {
        line.push_str(&format!(": {message}"));
    }
    Ok(line)
}

fn resolve_program(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_prints_the_decision_and_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.json");
        std::fs::write(
            &file,
            r#"{"command_rules": [
                {"commands": ["curl"], "decision": "deny", "message": "no egress"},
                {"commands": ["git"], "args_patterns": ["^push(\\s|$)"], "decision": "approve"}
            ]}"#,
        )
        .expect("write");
        let cmd = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check(&file, &cmd(&["curl", "https://x"])).expect("check"),
            "deny (command_rules[0]): no egress"
        );
        assert_eq!(
            check(&file, &cmd(&["git", "push", "origin"])).expect("check"),
            "approve (command_rules[1])"
        );
        assert_eq!(
            check(&file, &cmd(&["git", "status"])).expect("check"),
            "allow (default_decision)"
        );
        assert!(matches!(check(&file, &[]), Err(CheckError::NoCommand)));
        std::fs::write(&file, r#"{"command_rule": []}"#).expect("write");
        let err = check(&file, &cmd(&["ls"])).expect_err("typo").to_string();
        assert!(err.contains("command_rule"), "{err}");
    }
}
