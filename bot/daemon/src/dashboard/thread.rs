//! `/ui/thread/{key}`: one channel or thread, live. The conversation as people and the agent
//! wrote it (answers rendered from Markdown, escaped), the runs' usage, the running turn's
//! state with a Stop button, and its tool calls and their output as they happen (the same
//! events as the chat status message, from the orchestrator's activity log).

use axum::extract::{Path, State};
use axum::response::Response;
use loop_adapter::{ChannelKey, PlatformKind};
use maud::{Markup, PreEscaped, html};

use super::access::Access;
use super::markdown;
use super::page::{self, PageError, ago, dollars, parse_key, thread_url};
use super::session::DashboardSession;
use crate::api::ApiState;
use crate::orchestrator::activity::{Step, TurnActivity};
use crate::permissions::Role;
use loop_store::{RunRecord, RunStatus, ThreadMessage};

/// The elements the event stream updates.
pub const STATUS: &str = "thread-status";
pub const CHAT: &str = "thread-chat";
pub const ACTIVITY: &str = "thread-activity";
/// The panel holding [`ACTIVITY`], replaced when a new turn starts.
pub const TURN: &str = "thread-turn";
/// Messages and runs shown (the newest).
const HISTORY: usize = 100;
/// Output longer than this many lines (or bytes) starts folded.
const FOLD_LINES: usize = 12;
const FOLD_BYTES: usize = 1500;

/// `GET /ui/thread/{key}`.
pub async fn page(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    session: DashboardSession,
) -> Result<Response, PageError> {
    let key = parse_key(&raw)?;
    // `None`: an approver reading an approval's context, who may not act here.
    let role = Access::of(&state, &session).require_read(&key).await?;
    let name = key.to_string();
    let work_dir = state.store.channel_work_dir(&key).await?;
    let branch = state.store.thread_branch(&key).await?.map(|b| b.branch);
    let chat = chat(&state, &name).await?;
    let status = status(&state, &key, None, &[]).await?;
    let activity = state.orchestrator.activity().latest(&name);
    let targets = [STATUS, CHAT, TURN, ACTIVITY];
    let live = format!(
        "/ui/events?view=thread&key={}",
        loop_wire::routes::path_segment(&name)
    );
    Ok(page::render(
        page::Shell {
            title: &name,
            nav: page::Nav::Thread,
            session: &session,
            live: Some((live, &targets)),
        },
        html! {
            h1 { span.platform { (key.platform.as_str()) } " " (name) }
            p.muted.small {
                "Work dir: " @match &work_dir { Some(d) => code { (d) }, None => "default" }
                @if let Some(branch) = &branch { " · branch " code { (branch) } }
            }
            nav.thread-links.small {
                @if role == Some(Role::Owner) {
                    a href=(loop_wire::routes::ui_terminal(&name)) { "Terminal" }
                    " · "
                }
                a href=(loop_wire::routes::ui_diff(&name)) { "Changes" }
                " · "
                a href=(loop_wire::routes::ui_settings(&name)) { "Settings" }
            }
            section.panel id=(STATUS) { (status) }
            section.panel {
                h2 { "Conversation" }
                div.chat id=(CHAT) { (chat) }
            }
            @if key.platform == PlatformKind::Local && role.is_some() {
                (super::talk::message_form(&key))
            }
            section.panel id=(TURN) {
                (turn(activity.as_ref().map(|(_, entries)| entries.as_slice()).unwrap_or_default()))
            }
        },
    ))
}

/// The latest turn's steps (the [`TURN`] panel's content).
pub fn turn(entries: &[TurnActivity]) -> Markup {
    html! {
        h2 { "Latest turn, step by step" }
        div.activity id=(ACTIVITY) data-live-mode="append" {
            @if entries.is_empty() {
                p.empty { "Tool calls and their output show here while the agent works." }
            }
            @for entry in entries { (activity_entry(entry)) }
        }
    }
}

/// The state of the channel's turn: running (with the status line when known, and Stop),
/// waiting for a person, queued, or idle. `ended`: runs whose end was already announced (a
/// turn leaves the running set a moment after).
pub async fn status(
    state: &ApiState,
    key: &ChannelKey,
    line: Option<&str>,
    ended: &[String],
) -> Result<Markup, PageError> {
    let name = key.to_string();
    let running = state
        .orchestrator
        .running()
        .remove(&name)
        .filter(|turn| !ended.contains(&turn.run_id));
    let waiting = state
        .store
        .pending_approvals()
        .await?
        .into_iter()
        .filter(|a| a.channel_key == name)
        .count();
    let now = chrono::Utc::now().timestamp_millis();
    let stop_url = format!("{}/stop", thread_url(&name));
    Ok(html! {
        @match &running {
            Some(turn) => {
                p {
                    span.state.running {
                        "running for "
                        span data-since=(now - i64::try_from(turn.elapsed_sec).unwrap_or(0) * 1000) { "…" }
                    }
                    " "
                    @if waiting > 0 {
                        a.state.approval href="/ui/approvals" { "waiting for approval" }
                        " "
                    }
                    button.danger hx-post=(stop_url) hx-swap="none" { "Stop" }
                    " " span.muted.small { "run " code { (turn.run_id) } }
                }
                @if let Some(line) = line { div.status-line { (line) } }
            }
            None => {
                p {
                    span.state.idle { "idle" }
                    @if waiting > 0 { " " a.state.approval href="/ui/approvals" { "waiting for approval" } }
                }
            }
        }
    })
}

/// One item of the conversation.
enum Item<'a> {
    Message(&'a ThreadMessage),
    Run(&'a RunRecord),
    /// What loop itself said (command replies, refusals, notices), at that time.
    Notice(i64, &'a str),
}

impl Item<'_> {
    fn at(&self) -> i64 {
        match self {
            Item::Message(m) => m.received_at,
            // An answer comes after the messages its run took.
            Item::Run(r) => r.finished_at.unwrap_or(r.created_at) + 1,
            Item::Notice(at, _) => *at,
        }
    }
}

/// The conversation: people's messages and the agent's answers, oldest first.
pub async fn chat(state: &ApiState, key: &str) -> Result<Markup, PageError> {
    let messages = state.store.thread_messages(key, HISTORY as u64).await?;
    let runs = state.store.channel_runs(key).await?;
    let runs = &runs[runs.len().saturating_sub(HISTORY)..];
    let notices = state.store.thread_notices(key, HISTORY as u64).await?;
    let mut items: Vec<Item<'_>> = messages
        .iter()
        .map(Item::Message)
        .chain(runs.iter().map(Item::Run))
        .chain(notices.iter().map(|(at, text)| Item::Notice(*at, text)))
        .collect();
    items.sort_by_key(Item::at);
    Ok(html! {
        @if items.is_empty() { p.empty { "Nothing said here yet." } }
        @for item in &items {
            @match item {
                Item::Message(m) => div.msg.person {
                    div.meta {
                        strong { (m.author_name) } (ago(m.received_at))
                        @if !m.triggers { span { "context" } }
                        @if m.status == loop_store::InboxStatus::Pending { span.state.queued { "queued" } }
                    }
                    div { (PreEscaped(markdown::render(&m.text))) }
                },
                Item::Run(r) => (answer(r)),
                Item::Notice(at, text) => div.msg.notice {
                    div.meta { strong { "loop" } (ago(*at)) }
                    div.md { (PreEscaped(markdown::render(text))) }
                },
            }
        }
    })
}

fn answer(run: &RunRecord) -> Markup {
    html! {
        div.msg.agent {
            div.meta {
                strong { "agent" }
                @match run.finished_at { Some(at) => (ago(at)), None => (ago(run.created_at)) }
                @match run.status {
                    RunStatus::Running => span.state.running { "running" },
                    RunStatus::Succeeded => span.state.ok { "done" },
                    other => span.state.failed { (other.as_str()) },
                }
                @if run.status != RunStatus::Running {
                    span { (run.input_tokens) " in · " (run.output_tokens) " out tokens · " (dollars(run.cost_usd)) }
                }
            }
            @if let Some(text) = &run.answer {
                div.md { (PreEscaped(markdown::render(text))) }
            } @else if let Some(error) = &run.error {
                pre { (error) }
            }
        }
    }
}

/// The one-line summary of a step (the overview's "doing" column).
pub fn step_line(entry: &TurnActivity) -> String {
    match &entry.step {
        Step::Tool { summary, .. } => summary.clone(),
        Step::Text(_) => "writing".to_owned(),
        Step::Note(line) => crate::text::clip(line, 100),
    }
}

fn is_long(text: &str) -> bool {
    text.len() > FOLD_BYTES || text.lines().count() > FOLD_LINES
}

/// One step of the turn, its element id fixed by its sequence number so an update (a tool's
/// result) replaces it in the page.
pub fn activity_entry(entry: &TurnActivity) -> Markup {
    let id = format!("act-{}", entry.seq);
    match &entry.step {
        Step::Tool {
            summary,
            input,
            output,
            ..
        } => {
            let error = output.as_ref().is_some_and(|o| o.is_error);
            html! {
                div.act.tool.error[error] id=(id) data-run=(entry.run_id) {
                    div.head { "🔧 " (summary) }
                    details { summary { "input" } pre { (input) } }
                    @match output {
                        Some(out) => {
                            @let lines = out.text.lines().count();
                            details open[!is_long(&out.text)] {
                                summary { (if out.is_error { "error" } else { "output" }) " (" (lines) " line" @if lines != 1 { "s" } ")" }
                                pre { (out.text) }
                            }
                        }
                        None => div.small.muted { "running…" },
                    }
                }
            }
        }
        Step::Text(text) => html! {
            div.act.text id=(id) data-run=(entry.run_id) {
                @if is_long(text) {
                    details { summary { "text (" (text.len()) " bytes)" } div.md { (PreEscaped(markdown::render(text))) } }
                } @else {
                    div.md { (PreEscaped(markdown::render(text))) }
                }
            }
        },
        Step::Note(line) => html! {
            div.act.note.small.muted id=(id) data-run=(entry.run_id) { (line) }
        },
    }
}
