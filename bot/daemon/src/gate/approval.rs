//! Asking a person about a syscall: the workflow behind `POST /api/gate/container-approval`.
//! The handler authenticates the container and parses its request; [`ask`] does the rest and
//! says how it ended ([`Asked`]), which the handler maps to HTTP.
//!
//! The approval is stored before the prompt is posted and the waiter registered before that,
//! so a quick answer cannot be missed; every outcome is audited in `gate_audit`; a request
//! that goes away unanswered settles its approval at once ([`OpenPrompt`]). Whatever fails,
//! the container side denies (fail closed).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loop_adapter::{Adapter, ApprovalPrompt, ChannelKey};
use loop_gate::gitguard;
use loop_gate::policy::normalize;
use loop_gate::wire::{ApprovalDecision, ApprovalRequest, GateAction};

use super::tokens::ContainerIdentity;
use super::{GateHub, OverLimit, Resolution};
use crate::config::RateLimits;
use loop_store::{
    ApprovalAnswer, ApprovalRecord, Decided, NewApproval, NewAuditEntry, Store, StoreError, now_ms,
};

/// What [`ask`] needs of the daemon.
pub struct Desk<'a> {
    pub gate: &'a GateHub,
    pub store: &'a Store,
    /// The adapter of the channel's platform; None when it is not running.
    pub adapter: Option<Arc<dyn Adapter>>,
    /// `gates.rate_limits`.
    pub limits: &'a RateLimits,
    /// `gates.agentgate.approval_timeout_sec`.
    pub timeout: Duration,
}

/// How asking ended. Each is audited before it is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// An earlier "allow for session" of this container covers it: nobody was asked.
    ForSession,
    /// Over `gates.rate_limits`: denied without asking (the channel was told once).
    OverLimit(OverLimit),
    /// Answered by a person, or denied when no answer came in time (`source` = `timeout`) or
    /// the turn ended (`container_gone`).
    Decided {
        decision: ApprovalDecision,
        source: &'static str,
        decided_by: String,
    },
}

/// Why nobody could be asked (the request is denied).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no {0} adapter is running to ask")]
    NoAdapter(&'static str),
    #[error("cannot ask in the channel: {0}")]
    CannotAsk(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Asks the channel's people about `request` from the container `identity`, whose channel
/// (`channel`) the caller checked the request against, and waits for the outcome.
pub async fn ask(
    desk: &Desk<'_>,
    identity: &ContainerIdentity,
    channel: &ChannelKey,
    request: &ApprovalRequest,
) -> Result<Asked, AskError> {
    let container = identity.container.clone();
    let gate = desk.gate.clone();
    let store = desk.store.clone();
    let syscall = syscall_of(&request.action);
    let audit =
        |verdict: &str, source: &str, by: Option<&str>, approval_id: Option<&str>| NewAuditEntry {
            container_id: container.clone(),
            channel_key: identity.channel_key.clone(),
            syscall: syscall.to_owned(),
            detail: request.summary.clone(),
            verdict: verdict.to_owned(),
            source: source.to_owned(),
            rule: Some(request.rule.clone()),
            decided_by: by.map(str::to_owned),
            approval_id: approval_id.map(str::to_owned),
        };

    // An earlier "allow for session" of this container covers it: nobody is asked again.
    if gate.session_allowed(&container, &request.session_key) {
        store
            .record_gate_decision(audit("allow", "session", None, None))
            .await?;
        return Ok(Asked::ForSession);
    }
    let Some(adapter) = desk.adapter.clone() else {
        store
            .record_gate_decision(audit("deny", "unavailable", None, None))
            .await?;
        return Err(AskError::NoAdapter(channel.platform.as_str()));
    };

    if let Err(over) = gate.admit_prompt(&container, desk.limits) {
        tracing::warn!(channel = %channel, summary = %request.summary, reason = %over, "approval not asked: over the rate limit");
        store
            .record_gate_decision(audit("deny", "over_limit", None, None))
            .await?;
        if over.tell_channel {
            let text = format!("🔐 Not asking about `{}`: {over}.", request.summary);
            if let Err(err) = adapter.post(channel, &text).await {
                tracing::debug!(error = %err, "cannot post the rate-limit notice");
            }
        }
        return Ok(Asked::OverLimit(over));
    }

    let timeout = desk.timeout;
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let detail = serde_json::to_string(&request).unwrap_or_default();
    store
        .create_approval(NewApproval {
            id: id.clone(),
            container_id: container.clone(),
            channel_key: identity.channel_key.clone(),
            run_id: gate.current_run(&container),
            syscall: syscall.to_owned(),
            summary: request.summary.clone(),
            detail,
            cache_key: request.session_key.clone(),
            expires_at: now_ms()
                .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
        })
        .await?;
    // Registered before the prompt goes out, so a quick answer cannot be missed.
    let waiting = gate.wait_for(&id, &container);
    let mut open = OpenPrompt {
        gate: gate.clone(),
        id: id.clone(),
        store: store.clone(),
        adapter: adapter.clone(),
        channel: channel.clone(),
        message_id: None,
        summary: request.summary.clone(),
        disconnected: Some(audit("deny", "disconnected", None, Some(&id))),
    };
    // Platforms with buttons show the three answers; the others post the text.
    let prompt = ApprovalPrompt {
        approval_id: id.clone(),
        summary: request.summary.clone(),
        detail: prompt_detail(request),
        text: prompt_text(&id, request),
    };
    let posted = match adapter.post_approval(channel, &prompt).await {
        Ok(posted) => posted,
        Err(err) => {
            tracing::warn!(channel = %channel, error = %err, "cannot post an approval prompt");
            open.disconnected = None;
            let _ = store
                .decide_approval(&id, ApprovalAnswer::Expire, "unavailable")
                .await;
            store
                .record_gate_decision(audit("deny", "unavailable", None, Some(&id)))
                .await?;
            return Err(AskError::CannotAsk(err.to_string()));
        }
    };
    open.message_id = Some(posted.message_id.clone());
    if let Err(err) = store.set_approval_message(&id, &posted.message_id).await {
        tracing::debug!(error = %err, "cannot record the prompt's message id");
    }
    tracing::info!(approval = %id, channel = %channel, summary = %request.summary, "approval asked");

    let (decision, source, by) = match tokio::time::timeout(timeout, waiting).await {
        Ok(Ok(Resolution::Decided {
            decision,
            decided_by,
        })) => (decision, "person", decided_by),
        Ok(Ok(Resolution::ContainerGone)) | Ok(Err(_)) => {
            settle(&store, &id, "container_gone").await?
        }
        Err(_) => settle(&store, &id, "timeout").await?,
    };
    // Settled: whatever happens to the container's request from here, the row is decided.
    open.disconnected = None;
    if decision == ApprovalDecision::AllowSession {
        gate.allow_for_session(&container, &request.session_key);
    }
    store
        .record_gate_decision(audit(verdict_of(decision), source, Some(&by), Some(&id)))
        .await?;
    if let Err(err) = adapter
        .edit(
            channel,
            &posted.message_id,
            &outcome_text(&request.summary, decision, source, &by),
        )
        .await
    {
        tracing::debug!(error = %err, "cannot update the approval prompt");
    }
    tracing::info!(approval = %id, ?decision, source, "approval decided");
    Ok(Asked::Decided {
        decision,
        source,
        decided_by: by,
    })
}

/// The syscall family of an action, for the approval and audit rows.
fn syscall_of(action: &GateAction) -> &'static str {
    match action {
        GateAction::Exec { .. } => "execve",
        GateAction::File { .. } => "open",
        GateAction::ConnectUnix { .. } | GateAction::ConnectInet { .. } => "connect",
        GateAction::Docker { .. } => "docker",
    }
}

fn verdict_of(decision: ApprovalDecision) -> &'static str {
    match decision {
        ApprovalDecision::AllowOnce | ApprovalDecision::AllowSession => "allow",
        ApprovalDecision::Deny => "deny",
    }
}

/// The decision a stored (decided) approval stands for.
fn decision_of(record: &ApprovalRecord) -> ApprovalDecision {
    use loop_store::{ApprovalScope, ApprovalStatus};
    match (record.status, record.scope) {
        (ApprovalStatus::Allowed, Some(ApprovalScope::Session)) => ApprovalDecision::AllowSession,
        (ApprovalStatus::Allowed, _) => ApprovalDecision::AllowOnce,
        _ => ApprovalDecision::Deny,
    }
}

/// The chat text asking for a decision. The same three answers on every platform.
fn prompt_text(id: &str, request: &ApprovalRequest) -> String {
    let mut text = match git_change(request) {
        // What would change in the repository and why that matters, instead of the syscall.
        Some(change) => format!("🔐 Approval needed: {change}"),
        None => {
            let mut text = format!("🔐 Approval needed: `{}`", request.summary);
            if let Some(cwd) = working_dir(request) {
                text.push_str(&format!(" in `{cwd}`"));
            }
            if let Some(message) = &request.message {
                text.push_str(&format!(" ({message})"));
            }
            text
        }
    };
    text.push_str(&format!(
        " — `loop approve {id}` / `loop approve {id} --session` / `loop deny {id}`"
    ));
    text
}

/// Where a command would run: the same `git push` means something else in another checkout.
fn working_dir(request: &ApprovalRequest) -> Option<&str> {
    match &request.action {
        GateAction::Exec { cwd: Some(cwd), .. } => Some(cwd),
        _ => None,
    }
}

/// A change to a repository's hooks, config or gitdir pointers that the baseline's git guard
/// holds, said for a person: "create or replace `.git/hooks/pre-commit` in `/srv/app` — a git
/// hook runs on the host when someone runs git there". None for any other request.
fn git_change(request: &ApprovalRequest) -> Option<String> {
    if !request.rule.starts_with("baseline.") {
        return None;
    }
    let GateAction::File { path, operation } = &request.action else {
        return None;
    };
    let file = gitguard::control_file(&normalize(Path::new(path)))?;
    Some(format!(
        "{} `{}` in `{}` — {}",
        operation.verb(),
        file.name.display(),
        file.repository.display(),
        file.control.why()
    ))
}

/// The line under the summary on platforms with buttons: what a git change means, or where a
/// command runs and the rule's message.
fn prompt_detail(request: &ApprovalRequest) -> Option<String> {
    if let Some(change) = git_change(request) {
        return Some(change);
    }
    let parts: Vec<String> = working_dir(request)
        .map(|cwd| format!("in `{cwd}`"))
        .into_iter()
        .chain(request.message.clone())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" — "))
}

fn outcome_text(summary: &str, decision: ApprovalDecision, source: &str, by: &str) -> String {
    let what = match decision {
        ApprovalDecision::AllowOnce => "✅ allowed once",
        ApprovalDecision::AllowSession => "✅ allowed for this session",
        ApprovalDecision::Deny if source == "timeout" => "⌛ denied: no answer in time",
        ApprovalDecision::Deny if source == "container_gone" => "⏹️ denied: the turn ended",
        ApprovalDecision::Deny if source == "disconnected" => {
            "⏹️ denied: the agent stopped waiting (its container went away)"
        }
        ApprovalDecision::Deny => "🚫 denied",
    };
    if source == "person" {
        format!("🔐 `{summary}` — {what} by {by}")
    } else {
        format!("🔐 `{summary}` — {what}")
    }
}

/// Ends a wait that got no answer: the approval expires, unless a person's answer reached the
/// database first (then that answer stands).
async fn settle(
    store: &loop_store::Store,
    id: &str,
    source: &'static str,
) -> Result<(ApprovalDecision, &'static str, String), StoreError> {
    Ok(
        match store
            .decide_approval(id, ApprovalAnswer::Expire, source)
            .await?
        {
            Decided::Now(_) => (ApprovalDecision::Deny, source, source.to_owned()),
            Decided::Already(record) => (
                decision_of(&record),
                "person",
                record.decided_by.unwrap_or_default(),
            ),
        },
    )
}

/// A prompt whose container's request is still waiting. Dropped when the request ends: the
/// hub stops holding its waiter, and if the request went away unanswered (the container was
/// killed, its connection closed) the approval is settled as a deny right away, audited and
/// its chat prompt updated, instead of staying pending until it expires.
struct OpenPrompt {
    gate: crate::gate::GateHub,
    id: String,
    store: loop_store::Store,
    adapter: std::sync::Arc<dyn loop_adapter::Adapter>,
    channel: ChannelKey,
    message_id: Option<String>,
    summary: String,
    /// The audit row to write if the request is dropped unanswered; None once settled.
    disconnected: Option<NewAuditEntry>,
}

impl Drop for OpenPrompt {
    fn drop(&mut self) {
        self.gate.forget(&self.id);
        let Some(entry) = self.disconnected.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, adapter, channel) = (
            self.store.clone(),
            self.adapter.clone(),
            self.channel.clone(),
        );
        let (id, message_id, summary) = (
            self.id.clone(),
            self.message_id.take(),
            self.summary.clone(),
        );
        runtime.spawn(async move {
            match store.decide_approval(&id, ApprovalAnswer::Expire, "disconnected").await {
                Ok(Decided::Now(_)) => {}
                // A person's answer got there first, or the row is gone: nothing to settle.
                Ok(Decided::Already(_)) => return,
                Err(err) => {
                    tracing::warn!(approval = %id, error = %err, "cannot settle an abandoned approval");
                    return;
                }
            }
            tracing::info!(approval = %id, "approval abandoned: the container stopped waiting");
            if let Err(err) = store.record_gate_decision(entry).await {
                tracing::warn!(error = %err, "cannot audit an abandoned approval");
            }
            if let Some(message_id) = message_id {
                let text = outcome_text(&summary, ApprovalDecision::Deny, "disconnected", "");
                if let Err(err) = adapter.edit(&channel, &message_id, &text).await {
                    tracing::debug!(error = %err, "cannot update the approval prompt");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_name_the_three_answers() {
        let request = ApprovalRequest {
            channel_id: "local-c".into(),
            action: GateAction::Exec {
                program: "/usr/bin/git".into(),
                argv: vec!["git".into(), "push".into()],
                cwd: None,
            },
            summary: "exec /usr/bin/git push".into(),
            session_key: "execve:/usr/bin/git:push".into(),
            rule: "command_rules[0]".into(),
            message: Some("pushes need a person".into()),
            pid: 1,
        };
        let text = prompt_text("abc123", &request);
        assert!(text.starts_with("🔐 Approval needed: `exec /usr/bin/git push`"));
        assert_eq!(
            prompt_detail(&request).as_deref(),
            Some("pushes need a person")
        );
        assert!(text.contains("pushes need a person"));
        for answer in [
            "`loop approve abc123`",
            "`loop approve abc123 --session`",
            "`loop deny abc123`",
        ] {
            assert!(text.contains(answer), "{text}");
        }
        assert!(
            outcome_text("x", ApprovalDecision::Deny, "timeout", "timeout").contains("no answer")
        );
        assert!(
            outcome_text("x", ApprovalDecision::AllowOnce, "person", "alice").ends_with("by alice")
        );

        // A command's working directory is part of what is asked.
        let mut in_checkout = request.clone();
        in_checkout.action = GateAction::Exec {
            program: "/usr/bin/git".into(),
            argv: vec!["git".into(), "push".into()],
            cwd: Some("/srv/app".into()),
        };
        assert!(
            prompt_text("abc123", &in_checkout)
                .starts_with("🔐 Approval needed: `exec /usr/bin/git push` in `/srv/app`"),
            "{}",
            prompt_text("abc123", &in_checkout)
        );
        assert_eq!(
            prompt_detail(&in_checkout).as_deref(),
            Some("in `/srv/app` — pushes need a person")
        );
        in_checkout.message = None;
        assert_eq!(
            prompt_detail(&in_checkout).as_deref(),
            Some("in `/srv/app`")
        );
    }

    /// A change the git guard holds says what would change in which repository, and why it
    /// matters, instead of the bare syscall.
    #[test]
    fn git_guard_prompts_say_what_would_change_and_why() {
        use loop_gate::policy::FileOperation;
        let request = |path: &str, operation: FileOperation, rule: &str| ApprovalRequest {
            channel_id: "local-c".into(),
            action: GateAction::File {
                path: path.into(),
                operation,
            },
            summary: format!("{operation} {path}"),
            session_key: format!("open:{path}:{operation}"),
            rule: rule.into(),
            message: Some("the rule's message".into()),
            pid: 1,
        };
        let cases = [
            (
                request(
                    "/srv/app/.git/hooks/pre-commit",
                    FileOperation::Create,
                    "baseline.file_rules[10]",
                ),
                "create or replace `.git/hooks/pre-commit` in `/srv/app` — a git hook runs on \
                 the host when someone runs git there",
            ),
            (
                request(
                    "/srv/app/.git/config",
                    FileOperation::Write,
                    "baseline.file_rules[11]",
                ),
                "write `.git/config` in `/srv/app` — git config can name programs \
                 (core.fsmonitor, core.hooksPath, filters, aliases) that run on the host when \
                 someone runs git there",
            ),
            (
                request(
                    "/srv/app/sub/./.git",
                    FileOperation::Write,
                    "baseline.file_rules[12]",
                ),
                "write `.git` in `/srv/app/sub` — a gitdir pointer chooses the config and hooks \
                 git uses there, also on the host",
            ),
            (
                request(
                    "/srv/app/.git/hooks/pre-commit",
                    FileOperation::Chmod,
                    "baseline.file_rules[10]",
                ),
                "change the mode of `.git/hooks/pre-commit` in `/srv/app` — a git hook runs on \
                 the host when someone runs git there",
            ),
        ];
        for (request, change) in cases {
            let text = prompt_text("abc123", &request);
            assert!(
                text.starts_with(&format!(
                    "🔐 Approval needed: {change} — `loop approve abc123`"
                )),
                "{text}"
            );
            assert_eq!(prompt_detail(&request).as_deref(), Some(change));
        }
        // Other files, and rules that are not the baseline's, read as before.
        for request in [
            request(
                "/srv/app/.git/index",
                FileOperation::Write,
                "baseline.file_rules[10]",
            ),
            request(
                "/srv/app/.git/config",
                FileOperation::Write,
                "file_rules[0]",
            ),
        ] {
            let text = prompt_text("abc123", &request);
            assert!(
                text.starts_with(&format!(
                    "🔐 Approval needed: `{}` (the rule's message)",
                    request.summary
                )),
                "{text}"
            );
            assert_eq!(
                prompt_detail(&request).as_deref(),
                Some("the rule's message")
            );
        }
    }
}
