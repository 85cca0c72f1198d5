//! `/ui/approvals`: the gate's prompts waiting for a person, with the same three answers as
//! Slack and Discord (allow once, allow for the session, deny), the action, the requesting
//! thread and a countdown to the deadline; the ones decided lately and who decided; and the
//! audit log with filters (thread, verdict, time).
//!
//! An answer here takes the one path every answer takes (`gate::answer`): the database decides
//! who was first, the agent's waiting request is woken, and it updates the prompt in the
//! channel, so the Slack or Discord message says who decided exactly as after a button press.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use loop_gate::wire::ApprovalDecision;
use maud::{Markup, html};
use serde::Deserialize;

use super::access::Access;
use super::page::{self, PageError, ago, thread_url};
use super::session::{DashboardCsrf, DashboardSession};
use crate::api::ApiState;
use crate::gate::answer::{Answered, answer};
use loop_store::{ApprovalRecord, ApprovalScope, ApprovalStatus, AuditFilter};

/// The element the event stream replaces.
pub const TARGET: &str = "approvals-live";
/// How long a decided approval stays listed with who decided.
const RECENT_MS: i64 = 30 * 60 * 1000;
/// Audit entries shown.
const AUDIT_ROWS: u64 = 200;

/// The audit log's filters, from the query string.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    thread: String,
    #[serde(default)]
    verdict: String,
    /// `1h`, `24h`, `7d`, `30d`, or empty for all.
    #[serde(default)]
    window: String,
}

const WINDOWS: [(&str, &str, i64); 4] = [
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 86_400),
    ("7d", "last 7 days", 7 * 86_400),
    ("30d", "last 30 days", 30 * 86_400),
];

impl AuditQuery {
    fn filter(&self, now_ms: i64) -> AuditFilter {
        let thread = self.thread.trim();
        AuditFilter {
            channel: (!thread.is_empty()).then(|| thread.to_owned()),
            verdict: matches!(self.verdict.as_str(), "allow" | "deny")
                .then(|| self.verdict.clone()),
            since_ms: WINDOWS
                .iter()
                .find(|(key, _, _)| *key == self.window)
                .map(|(_, _, secs)| now_ms - secs * 1000),
            until_ms: None,
            limit: AUDIT_ROWS,
        }
    }
}

/// `GET /ui/approvals`.
pub async fn page(
    State(state): State<ApiState>,
    session: DashboardSession,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let mut access = Access::of(&state, &session);
    let live = live(&state, &mut access).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let audit = state.store.gate_audit_filtered(&query.filter(now)).await?;
    let audit = access.keep_approvals(audit, |e| &e.channel_key).await?;
    let targets = [TARGET];
    Ok(page::render(
        page::Shell {
            title: "Approvals",
            nav: page::Nav::Approvals,
            session: &session,
            live: Some(("/ui/events?view=approvals".to_owned(), &targets)),
        },
        html! {
            h1 { "Approvals" }
            div id=(TARGET) { (live) }
            section.panel {
                h2 { "Audit log" }
                form.row method="get" action="/ui/approvals" {
                    label { "Thread" input name="thread" value=(query.thread) placeholder="slack:C7:1712.0001"; }
                    label { "Verdict" select name="verdict" {
                        option value="" selected[query.verdict.is_empty()] { "any" }
                        option value="allow" selected[query.verdict == "allow"] { "allow" }
                        option value="deny" selected[query.verdict == "deny"] { "deny" }
                    } }
                    label { "Time" select name="window" {
                        option value="" selected[query.window.is_empty()] { "all" }
                        @for (key, label, _) in WINDOWS {
                            option value=(key) selected[query.window == key] { (label) }
                        }
                    } }
                    button type="submit" { "Filter" }
                }
                @if audit.is_empty() {
                    p.empty { "No gate decisions match." }
                } @else {
                    table.cards {
                        thead { tr { th { "When" } th { "Thread" } th { "Action" } th { "Verdict" } th { "By" } } }
                        tbody {
                            @for e in &audit {
                                tr {
                                    td data-label="When" { (ago(e.created_at)) }
                                    td data-label="Thread" { a href=(thread_url(&e.channel_key)) { (e.channel_key) } }
                                    td data-label="Action" { code { (e.detail) } @if let Some(rule) = &e.rule { br; span.small.muted { (rule) } } }
                                    td data-label="Verdict" {
                                        span.state.ok[e.verdict == "allow"].failed[e.verdict != "allow"] { (e.verdict) }
                                        " " span.small.muted { (e.source) }
                                    }
                                    td data-label="By" { (e.decided_by.clone().unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The pending prompts and the recently decided ones (what the event stream replaces), as far
/// as `access` may see them; buttons only for an approver.
pub async fn live(state: &ApiState, access: &mut Access) -> Result<Markup, PageError> {
    access.refresh();
    let now = chrono::Utc::now().timestamp_millis();
    let pending = state.store.pending_approvals().await?;
    let pending = access.keep_approvals(pending, |a| &a.channel_key).await?;
    let recent = state.store.recent_approvals(now - RECENT_MS, 20).await?;
    let recent = access.keep_approvals(recent, |a| &a.channel_key).await?;
    let buttons = access.may_approve();
    Ok(html! {
        section.panel {
            h2 { "Waiting for a person " span.muted.small { "(" (pending.len()) ")" } }
            @if pending.is_empty() {
                p.empty { "No approval is waiting." }
            }
            @if !pending.is_empty() && !buttons {
                p.small.muted { "Only approvers can answer these (" code { "permissions.approvers" } ")." }
            }
            @for approval in &pending { (card(approval, buttons)) }
        }
        @if !recent.is_empty() {
            section.panel {
                h2 { "Decided lately" }
                @for approval in &recent { (card(approval, buttons)) }
            }
        }
    })
}

/// What a decided approval's outcome reads as: `allowed once by alice (dashboard)`.
fn outcome(approval: &ApprovalRecord) -> String {
    let what = match (approval.status, approval.scope) {
        (ApprovalStatus::Allowed, Some(ApprovalScope::Session)) => "allowed for the session",
        (ApprovalStatus::Allowed, _) => "allowed once",
        (ApprovalStatus::Denied, _) => "denied",
        (ApprovalStatus::Expired, _) => "expired (denied)",
        (ApprovalStatus::Pending, _) => "waiting",
    };
    match &approval.decided_by {
        Some(by) if !by.is_empty() => format!("{what} by {by}"),
        _ => what.to_owned(),
    }
}

/// One approval: pending with its countdown (and its buttons when `buttons`), or decided with
/// who decided.
fn card(approval: &ApprovalRecord, buttons: bool) -> Markup {
    let url = format!(
        "/ui/approvals/{}",
        loop_wire::routes::path_segment(&approval.id)
    );
    let pending = approval.status == ApprovalStatus::Pending;
    html! {
        div.approval id=(format!("approval-{}", approval.id)) {
            div.meta.small.muted {
                a href=(thread_url(&approval.channel_key)) { (approval.channel_key) }
                " · asked " (ago(approval.created_at))
                " · " code { (approval.id) }
            }
            div.what { (approval.summary) }
            @if pending {
                div {
                    "Deadline: " span.deadline data-deadline=(approval.expires_at) { (page::time(approval.expires_at)) }
                }
                @if buttons { div.actions {
                    button.primary hx-post=(url) hx-vals=r#"{"decision":"allow_once"}"# hx-target="closest .approval" hx-swap="outerHTML" { "Allow once" }
                    button hx-post=(url) hx-vals=r#"{"decision":"allow_session"}"# hx-target="closest .approval" hx-swap="outerHTML" { "Allow for session" }
                    button.danger hx-post=(url) hx-vals=r#"{"decision":"deny"}"# hx-target="closest .approval" hx-swap="outerHTML" { "Deny" }
                } }
            } @else {
                div {
                    span.state.ok[approval.status == ApprovalStatus::Allowed].failed[approval.status != ApprovalStatus::Allowed] { (outcome(approval)) }
                    @if let Some(at) = approval.decided_at { " " span.small.muted { (ago(at)) } }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct DecideForm {
    decision: ApprovalDecision,
}

/// `POST /ui/approvals/{id}`: answers as the session's user; answers with the decided card.
pub async fn decide(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    DashboardCsrf(session): DashboardCsrf,
    Form(form): Form<DecideForm>,
) -> Result<Response, PageError> {
    if !Access::of(&state, &session).may_approve() {
        tracing::info!(approval = %id, user = %session.user, "approval refused: not an approver");
        return Err(PageError::Forbidden(
            "Only approvers can answer approvals (permissions.approvers).".to_owned(),
        ));
    }
    let by = session.decided_by();
    match answer(&state.store, &state.gate, &id, None, form.decision, &by).await? {
        Answered::Now(record) => {
            tracing::info!(approval = %id, by = %by, decision = ?form.decision, "approval answered in the dashboard");
            Ok(page::fragment(card(&record, true)))
        }
        // Someone (or the deadline) was first: the card says who.
        Answered::Already(record) => Ok(page::fragment(card(&record, true))),
        Answered::WrongChannel => Err(PageError::NotFound("no such approval".to_owned())),
    }
}
