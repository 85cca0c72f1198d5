//! Gate approvals over HTTP.
//!
//! - `POST /api/gate/container-approval` (container token): an agent's syscall needs a
//!   person. The request is stored, asked in the channel, and answered when someone decides,
//!   when the approval times out (deny), or when the container's turn ends (deny).
//! - `POST /api/gate/container-audit` (container token): decisions the container's
//!   supervisor made alone (policy denies, session hits), shipped in batches.
//! - `GET /api/approvals`, `POST /api/approvals/{id}` (admin token): list and answer.
//!
//! Every outcome is recorded in `gate_audit`. The container side treats anything but a 200
//! with a decision as a deny, so every error here fails closed.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use loop_adapter::{ApprovalPrompt, ChannelKey};
use loop_gate::wire::{
    ApprovalDecision, ApprovalRequest, ApprovalResponse, AuditOutcome, AuditRecord, GateAction,
};

use super::{ApiError, ApiState, bearer, parse_body};
use crate::gate::{Answered, Resolution};
use crate::store::{
    ApprovalAnswer, ApprovalRecord, Decided, NewApproval, NewAuditEntry, StoreError, now_ms,
};
use loop_wire::api::DecideApproval;

/// Who `decided_by` names when the admin API was used without a `by`.
const DEFAULT_DECIDER: &str = "admin";

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
    use crate::store::{ApprovalScope, ApprovalStatus};
    match (record.status, record.scope) {
        (ApprovalStatus::Allowed, Some(ApprovalScope::Session)) => ApprovalDecision::AllowSession,
        (ApprovalStatus::Allowed, _) => ApprovalDecision::AllowOnce,
        _ => ApprovalDecision::Deny,
    }
}

/// The chat text asking for a decision. The same three answers on every platform.
fn prompt_text(id: &str, request: &ApprovalRequest) -> String {
    let mut text = format!("🔐 Approval needed: `{}`", request.summary);
    if let Some(message) = &request.message {
        text.push_str(&format!(" ({message})"));
    }
    text.push_str(&format!(
        " — `loop approve {id}` / `loop approve {id} --session` / `loop deny {id}`"
    ));
    text
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

/// The container behind a request's bearer token: 401 before anything else is looked at.
fn container_identity(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<(crate::gate::tokens::ContainerIdentity, ChannelKey), ApiError> {
    let identity = match bearer(headers) {
        Some(token) => state
            .orchestrator
            .gate()
            .identify_gate(token)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "wrong gate token"))?,
        None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (LOOP_GATE_TOKEN)",
            ));
        }
    };
    let channel: ChannelKey = identity.channel_key.parse().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the token's channel is malformed",
        )
    })?;
    Ok((identity, channel))
}

/// The container knows its channel by the slug the runner gave it (`LOOP_CHANNEL_ID`); a token
/// may only speak for that one.
fn check_channel(channel: &ChannelKey, channel_id: &str) -> Result<(), ApiError> {
    if channel_id == channel.slug() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token may not speak for another channel",
        ))
    }
}

/// One line for an action, as the gate's own summaries read.
fn describe(action: &GateAction) -> String {
    match action {
        GateAction::Exec { program, argv, .. } => {
            let mut text = format!("exec {program}");
            for arg in argv.iter().skip(1) {
                text.push(' ');
                text.push_str(arg);
            }
            text
        }
        GateAction::File { path, operation } => format!("{operation} {path}"),
        GateAction::ConnectUnix { path } => format!("connect unix:{path}"),
        GateAction::ConnectInet { address } => format!("connect {address}"),
        GateAction::Docker { method, path } => format!("docker {method} {path}"),
    }
}

/// Verdict and source of a decision the container made alone.
fn audit_verdict(outcome: AuditOutcome) -> (&'static str, &'static str) {
    match outcome {
        AuditOutcome::Allowed => ("allow", "policy"),
        AuditOutcome::Denied => ("deny", "policy"),
        AuditOutcome::AllowedBySession => ("allow", "session"),
        AuditOutcome::ApprovedOnce | AuditOutcome::ApprovedForSession => ("allow", "person"),
        AuditOutcome::DeniedByApprover => ("deny", "approver"),
        AuditOutcome::DeniedOverLimit => ("deny", "over_limit"),
        AuditOutcome::DeniedUnreadable => ("deny", "unreadable"),
    }
}

/// `POST /api/gate/container-audit`: a batch of the supervisor's own decisions.
pub(super) async fn container_audit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let (identity, channel) = container_identity(&state, &headers)?;
    let records: Vec<AuditRecord> = parse_body(&body)?;
    if records.len() > loop_wire::api::MAX_AUDIT_BATCH {
        return Err(ApiError::bad_request(format!(
            "at most {} records per request",
            loop_wire::api::MAX_AUDIT_BATCH
        )));
    }
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        check_channel(&channel, &record.channel_id)?;
        let (verdict, source) = audit_verdict(record.outcome);
        entries.push(NewAuditEntry {
            container_id: identity.container.clone(),
            channel_key: identity.channel_key.clone(),
            syscall: record.syscall,
            detail: record
                .action
                .as_ref()
                .map_or_else(|| "(arguments unreadable)".to_owned(), describe),
            verdict: verdict.to_owned(),
            source: source.to_owned(),
            rule: record.rule,
            decided_by: None,
            approval_id: None,
        });
    }
    state
        .orchestrator
        .store()
        .record_gate_decisions(entries)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/gate/container-approval`.
pub(super) async fn container_approval(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalResponse>, ApiError> {
    // The token is checked before the body is even parsed.
    let (identity, channel) = container_identity(&state, &headers)?;
    let request: ApprovalRequest = parse_body(&body)?;
    check_channel(&channel, &request.channel_id)?;
    let container = identity.container.clone();
    let gate = state.orchestrator.gate().clone();
    let store = state.orchestrator.store().clone();
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
        return Ok(Json(ApprovalResponse {
            decision: ApprovalDecision::AllowSession,
            message: None,
        }));
    }
    let Some(adapter) = state.orchestrator.adapter_for(channel.platform) else {
        store
            .record_gate_decision(audit("deny", "unavailable", None, None))
            .await?;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no {} adapter is running to ask", channel.platform.as_str()),
        ));
    };

    if let Err(over) = gate.admit_prompt(&container, &state.orchestrator.config().gates.rate_limits)
    {
        tracing::warn!(channel = %channel, summary = %request.summary, reason = %over, "approval not asked: over the rate limit");
        store
            .record_gate_decision(audit("deny", "over_limit", None, None))
            .await?;
        if over.tell_channel {
            let text = format!("🔐 Not asking about `{}`: {over}.", request.summary);
            if let Err(err) = adapter.post(&channel, &text).await {
                tracing::debug!(error = %err, "cannot post the rate-limit notice");
            }
        }
        return Ok(Json(ApprovalResponse {
            decision: ApprovalDecision::Deny,
            message: Some(format!("denied by the loop gate: {over}")),
        }));
    }

    let timeout_sec = state
        .orchestrator
        .config()
        .gates
        .agentgate
        .approval_timeout_sec;
    let timeout = Duration::from_secs(timeout_sec);
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
        detail: request.message.clone(),
        text: prompt_text(&id, &request),
    };
    let posted = match adapter.post_approval(&channel, &prompt).await {
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
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot ask in the channel: {err}"),
            ));
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
            &channel,
            &posted.message_id,
            &outcome_text(&request.summary, decision, source, &by),
        )
        .await
    {
        tracing::debug!(error = %err, "cannot update the approval prompt");
    }
    tracing::info!(approval = %id, ?decision, source, "approval decided");
    Ok(Json(ApprovalResponse {
        decision,
        message: (decision == ApprovalDecision::Deny)
            .then(|| format!("denied ({source}) by the loop gate")),
    }))
}

/// Ends a wait that got no answer: the approval expires, unless a person's answer reached the
/// database first (then that answer stands).
async fn settle(
    store: &crate::store::Store,
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
    store: crate::store::Store,
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

/// `GET /api/approvals`: prompts waiting for an answer.
pub(super) async fn pending_approvals(
    State(state): State<ApiState>,
) -> Result<Json<Vec<ApprovalRecord>>, ApiError> {
    Ok(Json(state.orchestrator.store().pending_approvals().await?))
}

/// `POST /api/approvals/{id}`: answer one. An approval is answered once: 409 afterwards.
pub(super) async fn decide(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalRecord>, ApiError> {
    let request: DecideApproval = parse_body(&body)?;
    let by = request
        .by
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DECIDER.to_owned());
    match crate::gate::answer(
        state.orchestrator.store(),
        state.orchestrator.gate(),
        &id,
        None,
        request.decision,
        &by,
    )
    .await?
    {
        Answered::Now(record) => Ok(Json(record)),
        // Only chat answers name a channel.
        Answered::WrongChannel => Err(ApiError::new(StatusCode::NOT_FOUND, "no such approval")),
        Answered::Already(record) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "approval {id} was already answered ({}{})",
                record.status.as_str(),
                record
                    .decided_by
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use loop_adapter::PlatformKind;
    use loop_adapter_local::{LocalAdapter, LocalEvent};
    use loop_runner::{AgentRunner, RunError, TurnOutcome, TurnRequest};
    use tokio_util::sync::CancellationToken;

    use crate::config::{Config, ConfigSources};
    use crate::orchestrator::{HostFacts, Orchestrator};
    use crate::store::ApprovalStatus;
    use crate::store::test_support::TestDb;

    /// The API needs an orchestrator, which needs a runner; no turn runs in these tests.
    struct NoRunner;

    #[async_trait::async_trait]
    impl AgentRunner for NoRunner {
        async fn run_turn(
            &self,
            _request: TurnRequest,
            _events: Option<loop_runner::agent::EventSender>,
            _cancel: CancellationToken,
        ) -> Result<TurnOutcome, RunError> {
            Err(RunError::Cancelled)
        }
    }

    struct Api {
        url: String,
        admin: String,
        orchestrator: Orchestrator,
        local: LocalAdapter,
        http: reqwest::Client,
        _db: TestDb,
        _dir: tempfile::TempDir,
    }

    impl Api {
        async fn start(timeout_sec: u64) -> Api {
            let db = TestDb::sqlite().await;
            let dir = tempfile::tempdir().expect("tempdir");
            let sources = ConfigSources {
                home: dir.path().to_path_buf(),
                loop_dir: dir.path().join(".loop"),
                env: Default::default(),
            };
            let mut config = Config::defaults(&sources);
            config.gates.agentgate.approval_timeout_sec = timeout_sec;
            let facts = HostFacts {
                timezone: "UTC".into(),
                proxy_env: Default::default(),
                git_excludes_file: None,
                daemon_id: "d-test".into(),
                api_url: "http://127.0.0.1:1".into(),
                network: None,
            };
            let local = LocalAdapter::new();
            let orchestrator = Orchestrator::new(
                db.store().clone(),
                config,
                facts,
                Arc::new(NoRunner),
                vec![Arc::new(local.clone())],
                CancellationToken::new(),
            );
            let admin = crate::gate::tokens::random_token();
            let state = ApiState {
                orchestrator: orchestrator.clone(),
                local: local.clone(),
                registry: None,
                admin_token: Arc::new(admin.clone()),
                container_tokens: orchestrator.gate().tokens().clone(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(axum::serve(listener, crate::api::router(state)).into_future());
            Api {
                url,
                admin,
                orchestrator,
                local,
                http: reqwest::Client::new(),
                _db: db,
                _dir: dir,
            }
        }

        /// The request future owns everything, so it can be spawned while the test answers.
        fn send(
            &self,
            token: &str,
            body: &serde_json::Value,
        ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static
        {
            self.http
                .post(format!("{}/api/gate/container-approval", self.url))
                .bearer_auth(token)
                .json(body)
                .send()
        }

        async fn ask(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
            self.send(token, body).await.expect("post")
        }

        async fn decide(&self, id: &str, decision: &str) -> reqwest::Response {
            self.http
                .post(format!("{}/api/approvals/{id}", self.url))
                .bearer_auth(&self.admin)
                .json(&serde_json::json!({"decision": decision}))
                .send()
                .await
                .expect("decide")
        }
    }

    fn body(channel_id: &str, program: &str) -> serde_json::Value {
        serde_json::json!({
            "channel_id": channel_id,
            "action": {"kind": "exec", "program": program, "argv": [program, "push"]},
            "summary": format!("exec {program} push"),
            "session_key": format!("execve:{program}:push"),
            "rule": "command_rules[0]",
            "pid": 42
        })
    }

    /// The id in the next approval prompt posted to the local channel.
    async fn prompted_id(events: &mut tokio::sync::broadcast::Receiver<LocalEvent>) -> String {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("a prompt in time")
                .expect("event");
            if let LocalEvent::Posted { text, .. } = event
                && let Some(rest) = text.split("`loop deny ").nth(1)
            {
                return rest.trim_end_matches('`').to_owned();
            }
        }
    }

    #[tokio::test]
    async fn a_request_that_goes_away_settles_its_approval_at_once() {
        let api = Api::start(300).await;
        let token = api.orchestrator.gate().begin_turn("local:c1", "run-1");
        let mut events = api.local.subscribe();
        // The container's request is cut off while a person has not answered yet.
        let pending = tokio::spawn(api.send(&token, &body("local-c1", "/usr/bin/git")));
        let id = prompted_id(&mut events).await;
        pending.abort();
        let store = api.orchestrator.store();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let record = store.approval(&id).await.expect("approval");
            if record.status == ApprovalStatus::Expired {
                assert_eq!(record.decided_by.as_deref(), Some("disconnected"));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {:?} long after its request went away",
                record.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The prompt in the channel says so, and the audit log has the deny.
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("an edit in time")
                .expect("event");
            if let LocalEvent::Edited { text, .. } = event {
                assert!(text.contains("stopped waiting"), "{text}");
                break;
            }
        }
        let audit = store.gate_audit(5).await.expect("audit");
        assert_eq!(
            (audit[0].verdict.as_str(), audit[0].source.as_str()),
            ("deny", "disconnected")
        );
        assert_eq!(api.decide(&id, "allow_once").await.status(), 409);
    }

    #[tokio::test]
    async fn container_approvals_are_scoped_asked_answered_and_cached() {
        let api = Api::start(30).await;
        let gate = api.orchestrator.gate();
        let token = gate.begin_turn("local:c1", "run-1");

        // A token the agent can see (the MCP server's) is not a gate token.
        let visible = gate.tokens().issue(crate::gate::tokens::ContainerIdentity {
            container: "local:c1".into(),
            channel_key: "local:c1".into(),
        });
        assert_eq!(
            api.ask(&visible, &body("local-c1", "/usr/bin/git"))
                .await
                .status(),
            401
        );

        // Another channel's request with this token: 403. Bad JSON: 400 with the reason.
        let other = api.ask(&token, &body("local-c2", "/usr/bin/git")).await;
        assert_eq!(other.status(), 403);
        let bad = api
            .http
            .post(format!("{}/api/gate/container-approval", api.url))
            .bearer_auth(&token)
            .body(r#"{"channel_id": "local-c1"}"#)
            .send()
            .await
            .expect("post");
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.expect("text").contains("missing field"));

        // Asked in the channel, answered "for the session".
        let mut events = api.local.subscribe();
        let pending = tokio::spawn(api.send(&token, &body("local-c1", "/usr/bin/git")));
        let id = prompted_id(&mut events).await;
        assert_eq!(api.decide(&id, "allow_session").await.status(), 200);
        let answer: ApprovalResponse = pending
            .await
            .expect("join")
            .expect("post")
            .json()
            .await
            .expect("response");
        assert_eq!(answer.decision, ApprovalDecision::AllowSession);
        assert_eq!(api.decide(&id, "deny").await.status(), 409);

        // The same action again: allowed from the session cache, nobody is asked.
        let again: ApprovalResponse = api
            .ask(&token, &body("local-c1", "/usr/bin/git"))
            .await
            .json()
            .await
            .expect("cached");
        assert_eq!(again.decision, ApprovalDecision::AllowSession);
        let store = api.orchestrator.store();
        let audit = store.gate_audit(10).await.expect("audit");
        let sources: Vec<&str> = audit.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, ["session", "person"]);

        // Decisions the supervisor made alone arrive in batches; another channel's are refused.
        let shipped = |channel_id: &str| {
            serde_json::json!([{
                "channel_id": channel_id,
                "pid": 9,
                "syscall": "execve",
                "action": {"kind": "exec", "program": "/usr/bin/curl", "argv": ["curl", "x"]},
                "rule": "command_rules[1]",
                "outcome": "denied"
            }])
        };
        let audit_url = format!("{}/api/gate/container-audit", api.url);
        let response = api
            .http
            .post(&audit_url)
            .bearer_auth(&token)
            .json(&shipped("local-c1"))
            .send()
            .await
            .expect("audit");
        assert_eq!(response.status(), 204);
        let response = api
            .http
            .post(&audit_url)
            .bearer_auth(&token)
            .json(&shipped("local-c9"))
            .send()
            .await
            .expect("audit");
        assert_eq!(response.status(), 403);
        let response = api
            .http
            .post(&audit_url)
            .json(&shipped("local-c1"))
            .send()
            .await
            .expect("audit");
        assert_eq!(response.status(), 401);
        let newest = &store.gate_audit(1).await.expect("audit")[0];
        assert_eq!(
            (
                newest.verdict.as_str(),
                newest.source.as_str(),
                newest.detail.as_str()
            ),
            ("deny", "policy", "exec /usr/bin/curl x")
        );

        // A prompt still waiting when the turn ends resolves as deny.
        let pending = tokio::spawn(api.send(&token, &body("local-c1", "/usr/bin/npm")));
        let id = prompted_id(&mut events).await;
        assert_eq!(
            store.approval(&id).await.expect("row").run_id.as_deref(),
            Some("run-1")
        );
        gate.container_gone("local:c1");
        let answer: ApprovalResponse = pending
            .await
            .expect("join")
            .expect("post")
            .json()
            .await
            .expect("response");
        assert_eq!(answer.decision, ApprovalDecision::Deny);
        assert_eq!(
            store.approval(&id).await.expect("row").status,
            ApprovalStatus::Expired
        );
        assert_eq!(
            store.gate_audit(1).await.expect("audit")[0].source,
            "container_gone"
        );
        // And its token is dead.
        let dead = api.ask(&token, &body("local-c1", "/usr/bin/git")).await;
        assert_eq!(dead.status(), 401);
    }

    #[tokio::test]
    async fn nobody_to_ask_is_503_and_silence_is_a_deny() {
        let api = Api::start(1).await;
        let gate = api.orchestrator.gate();
        // No Slack adapter runs here.
        let slack = gate.begin_turn(
            &ChannelKey::channel(PlatformKind::Slack, "C1").to_string(),
            "run-s",
        );
        let response = api.ask(&slack, &body("slack-C1", "/usr/bin/git")).await;
        assert_eq!(response.status(), 503);

        let token = gate.begin_turn("local:c1", "run-2");
        let started = std::time::Instant::now();
        let answer: ApprovalResponse = api
            .ask(&token, &body("local-c1", "/usr/bin/git"))
            .await
            .json()
            .await
            .expect("response");
        assert_eq!(answer.decision, ApprovalDecision::Deny);
        assert!(started.elapsed() >= Duration::from_secs(1));
        let audit = api.orchestrator.store().gate_audit(1).await.expect("audit");
        assert_eq!(
            (audit[0].verdict.as_str(), audit[0].source.as_str()),
            ("deny", "timeout")
        );
    }

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
    }
}
