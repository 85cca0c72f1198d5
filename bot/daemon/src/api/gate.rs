//! Gate approvals over HTTP.
//!
//! - `POST /api/gate/container-approval` (container token): an agent's syscall needs a
//!   person. The handler authenticates, parses and maps the outcome; the workflow (stored,
//!   asked in the channel, answered when someone decides, when the approval times out, or when
//!   the container's turn ends) is `crate::gate::approval`.
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
use loop_adapter::ChannelKey;
use loop_gate::wire::{
    ApprovalDecision, ApprovalRequest, ApprovalResponse, AuditOutcome, AuditRecord, GateAction,
};

use super::auth::bearer;
use super::state::{ApiError, ApiState, parse_body};
use crate::gate::answer::{Answered, answer};
use crate::gate::approval::{self, AskError, Asked, Desk};
use crate::gate::tokens::ContainerIdentity;
use loop_store::{ApprovalRecord, NewAuditEntry};
use loop_wire::api::DecideApproval;

/// Who `decided_by` names when the admin API was used without a `by`.
const DEFAULT_DECIDER: &str = "admin";

/// The container behind a request's bearer token: 401 before anything else is looked at.
fn container_identity(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<(crate::gate::tokens::ContainerIdentity, ChannelKey), ApiError> {
    let identity = match bearer(headers) {
        Some(token) => state
            .gate
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

/// The container knows its channel by the slug the runner gave it (`LOOP_CHANNEL_ID`, a spare's
/// own id when a thread adopted it); a token may only speak for that one.
fn check_channel(
    state: &ApiState,
    identity: &ContainerIdentity,
    channel: &ChannelKey,
    channel_id: &str,
) -> Result<(), ApiError> {
    if state
        .gate
        .names_itself(&identity.container, &channel.slug(), channel_id)
    {
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
        check_channel(&state, &identity, &channel, &record.channel_id)?;
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
    state.store.record_gate_decisions(entries).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/gate/container-approval`: the token is checked before the body is even parsed;
/// the workflow is [`crate::gate::approval::ask`].
pub(super) async fn container_approval(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalResponse>, ApiError> {
    let (identity, channel) = container_identity(&state, &headers)?;
    let request: ApprovalRequest = parse_body(&body)?;
    check_channel(&state, &identity, &channel, &request.channel_id)?;
    let orchestrator = &state.orchestrator;
    let config = orchestrator.config();
    let desk = Desk {
        gate: &state.gate,
        store: &state.store,
        adapter: orchestrator.adapter_for(channel.platform),
        limits: &config.gates.rate_limits,
        timeout: Duration::from_secs(config.gates.agentgate.approval_timeout_sec),
    };
    let (decision, message) = match approval::ask(&desk, &identity, &channel, &request).await {
        Ok(Asked::ForSession) => (ApprovalDecision::AllowSession, None),
        Ok(Asked::OverLimit(over)) => (
            ApprovalDecision::Deny,
            Some(format!("denied by the loop gate: {over}")),
        ),
        Ok(Asked::Decided {
            decision, source, ..
        }) => (
            decision,
            (decision == ApprovalDecision::Deny)
                .then(|| format!("denied ({source}) by the loop gate")),
        ),
        Err(err @ (AskError::NoAdapter(_) | AskError::CannotAsk(_))) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                err.to_string(),
            ));
        }
        Err(AskError::Store(err)) => return Err(err.into()),
    };
    Ok(Json(ApprovalResponse { decision, message }))
}

/// `GET /api/approvals`: prompts waiting for an answer.
pub(super) async fn pending_approvals(
    State(state): State<ApiState>,
) -> Result<Json<Vec<ApprovalRecord>>, ApiError> {
    Ok(Json(state.store.pending_approvals().await?))
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
    match answer(&state.store, &state.gate, &id, None, request.decision, &by).await? {
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
    use loop_store::ApprovalStatus;
    use loop_store::test_support::TestDb;

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
            let state = ApiState::new(orchestrator.clone(), local.clone(), None, admin.clone());
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
}
