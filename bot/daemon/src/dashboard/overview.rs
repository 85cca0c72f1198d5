//! `/ui/`: every channel and thread across platforms with its state, work directory, branch,
//! last activity and cost; warm agents and containers; scheduled tasks. One element
//! ([`TARGET`]) holds it all, rendered by [`body`], which the page's event stream replaces when
//! something changes (`events.rs`).

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::access::Access;
use super::page::{self, PageError, ago, dollars, thread_url};
use super::session::DashboardSession;
use crate::api::ApiState;
use loop_runner::ContainerUsage;
use loop_store::{ChannelSummary, RunStatus, TaskRecord};

/// The element the event stream replaces.
pub const TARGET: &str = "overview-body";
/// Channels and threads shown (the most recently active).
pub const MAX_CHANNELS: usize = 200;

/// What a channel is doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelState {
    Idle,
    Queued(i64),
    /// Since when (Unix ms), what it does now, and how many messages wait behind it.
    Running {
        since_ms: i64,
        doing: Option<String>,
        queued: i64,
    },
    /// A prompt waits for a person (the turn is blocked on it).
    Approval(usize),
    Failed(RunStatus),
}

/// One row of the channel table.
pub struct Row {
    pub summary: ChannelSummary,
    pub state: ChannelState,
}

/// Everything the overview shows.
pub struct Overview {
    pub rows: Vec<Row>,
    pub warm: Vec<loop_runner::WarmInfo>,
    pub containers: Vec<loop_runner::registry::ContainerEntry>,
    /// What the running containers use, by id.
    pub usage: HashMap<String, ContainerUsage>,
    pub tasks: Vec<(TaskRecord, Option<RunStatus>)>,
    pub pending_approvals: usize,
}

/// Reads the overview: a few grouped queries and the orchestrator's in-memory state, as far
/// as `access` may see it. `ended` are runs whose end was already announced (a turn leaves
/// the running set a moment after).
pub async fn gather(
    state: &ApiState,
    access: &mut Access,
    ended: &[String],
) -> Result<Overview, PageError> {
    access.refresh();
    let store = &state.store;
    let mut summaries = store.channel_summaries(MAX_CHANNELS).await?;
    let mut pending = store.pending_approvals().await?;
    let mut tasks = store.tasks(None).await?;
    let mut containers = state
        .registry
        .as_ref()
        .map(|r| r.list())
        .unwrap_or_default();
    summaries = access.keep_seen(summaries, |s| &s.key).await?;
    tasks = access.keep_seen(tasks, |t| &t.channel_key).await?;
    containers = access.keep_seen(containers, |c| &c.channel_id).await?;
    pending = access.keep_approvals(pending, |a| &a.channel_key).await?;
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    for approval in &pending {
        *waiting.entry(approval.channel_key.as_str()).or_default() += 1;
    }
    let mut running = state.orchestrator.running();
    running.retain(|_, turn| !ended.contains(&turn.run_id));
    let now = chrono::Utc::now().timestamp_millis();
    let activity = state.orchestrator.activity();
    let rows = summaries
        .into_iter()
        .map(|summary| {
            let key = summary.key.as_str();
            let state = if let Some(n) = waiting.get(key) {
                ChannelState::Approval(*n)
            } else if let Some(turn) = running.get(key) {
                let elapsed_ms = i64::try_from(turn.elapsed_sec)
                    .unwrap_or(0)
                    .saturating_mul(1000);
                let doing = activity.latest(key).and_then(|(run, entries)| {
                    (run == turn.run_id)
                        .then(|| entries.last().map(super::thread::step_line))
                        .flatten()
                });
                ChannelState::Running {
                    since_ms: now - elapsed_ms,
                    doing,
                    queued: summary.queued,
                }
            } else if summary.queued > 0 {
                ChannelState::Queued(summary.queued)
            } else if let Some(status @ (RunStatus::Failed | RunStatus::TimedOut)) =
                summary.last_run
            {
                ChannelState::Failed(status)
            } else {
                ChannelState::Idle
            };
            Row { summary, state }
        })
        .collect();
    let results = store.task_last_results().await?;
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let last = results.get(&task.id).copied();
            (task, last)
        })
        .collect();
    let usage = state
        .orchestrator
        .running_container_usage(&containers)
        .await;
    let warm = access
        .keep_seen(state.orchestrator.warm_agents().await, |w| &w.channel)
        .await?;
    Ok(Overview {
        rows,
        warm,
        containers,
        usage,
        tasks,
        pending_approvals: pending.len(),
    })
}

/// `GET /ui/`.
pub async fn page(
    State(state): State<ApiState>,
    session: DashboardSession,
) -> Result<Response, PageError> {
    let mut access = Access::of(&state, &session);
    let overview = gather(&state, &mut access, &[]).await?;
    let targets = [TARGET];
    Ok(page::render(
        page::Shell {
            title: "Overview",
            nav: page::Nav::Overview,
            session: &session,
            live: Some(("/ui/events?view=overview".to_owned(), &targets)),
        },
        html! {
            div id=(TARGET) { (body(&overview)) }
            @if access.may_start_channels() { (super::talk::new_channel_form()) }
        },
    ))
}

/// A channel key as people read it: `#C7 › 1712.0001` for a Slack thread.
pub fn channel_name(summary: &ChannelSummary) -> String {
    match &summary.thread_id {
        Some(thread) => format!("{} › {thread}", summary.channel_id),
        None => summary.channel_id.clone(),
    }
}

/// The state badge.
pub fn state_badge(state: &ChannelState) -> Markup {
    match state {
        ChannelState::Idle => html! { span.state.idle { "idle" } },
        ChannelState::Queued(n) => html! { span.state.queued { "queued " (n) } },
        ChannelState::Running {
            since_ms, queued, ..
        } => html! {
            span.state.running { "running for " span data-since=(since_ms) { "…" } }
            @if *queued > 0 { " " span.state.queued { "queued " (queued) } }
        },
        ChannelState::Approval(n) => html! {
            span.state.approval { "waiting for approval" @if *n > 1 { " (" (n) ")" } }
        },
        ChannelState::Failed(status) => html! {
            span.state.failed { (if *status == RunStatus::TimedOut { "timed out" } else { "failed" }) }
        },
    }
}

/// The overview's content (the part the event stream replaces).
pub fn body(overview: &Overview) -> Markup {
    html! {
        section.panel {
            h2 {
                "Channels and threads "
                span.muted.small { "(" (overview.rows.len()) ")" }
                @if overview.pending_approvals > 0 {
                    " · " a href="/ui/approvals" { (overview.pending_approvals) " waiting for approval" }
                }
            }
            @if overview.rows.is_empty() {
                p.empty { "No conversations yet. Mention loop in Slack or Discord, or start a local channel below." }
            } @else {
                table.cards {
                    thead { tr {
                        th { "Thread" } th { "State" } th { "Work dir / branch" }
                        th { "Last activity" } th.num { "Cost" }
                    } }
                    tbody {
                        @for row in &overview.rows {
                            (channel_row(row))
                        }
                    }
                }
            }
        }
        div.grid {
            section.panel {
                h2 { "Warm agents and containers" }
                (containers(overview))
            }
            section.panel {
                h2 { "Scheduled tasks" }
                (tasks(&overview.tasks))
            }
        }
    }
}

fn channel_row(row: &Row) -> Markup {
    let s = &row.summary;
    html! {
        tr data-channel=(s.key) {
            td data-label="Thread" {
                span.platform { (s.platform) } " "
                a href=(thread_url(&s.key)) { (channel_name(s)) }
            }
            td data-label="State" {
                (state_badge(&row.state))
                @if let ChannelState::Running { doing: Some(doing), .. } = &row.state {
                    div.small.muted { (doing) }
                }
            }
            td data-label="Work dir" {
                @match &s.work_dir {
                    Some(dir) => code { (dir) },
                    None => span.muted { "default" },
                }
                @if let Some(branch) = &s.branch {
                    br; span.small { "🌿 " code { (branch) } }
                }
            }
            td data-label="Last activity" { (ago(s.last_activity)) }
            td.num data-label="Cost" { (dollars(s.cost_usd)) @if s.runs > 0 { br; span.small.muted { (s.runs) " run" @if s.runs != 1 { "s" } } } }
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// A container's CPU as `docker stats` shows it, "12 %" of a core lately ("—" when unknown),
/// over the CPU time it used so far.
fn cpu(usage: Option<&ContainerUsage>) -> Markup {
    let percent = usage.and_then(|u| u.cpu_percent);
    let total = usage.and_then(|u| u.cpu_usec);
    html! {
        span title="of one core, since the previous look" {
            @match percent {
                Some(p) if p < 10.0 => (format!("{p:.1} %")),
                Some(p) => (format!("{p:.0} %")),
                None => "—",
            }
        }
        @if let Some(usec) = total {
            br; span.small.muted title="CPU time so far" { (cpu_time(usec)) }
        }
    }
}

fn cpu_time(usec: u64) -> String {
    let sec = usec as f64 / 1e6;
    if sec < 60.0 {
        format!("{sec:.1} s")
    } else {
        format!("{} min {} s", usec / 60_000_000, usec / 1_000_000 % 60)
    }
}

fn memory(usage: Option<&ContainerUsage>) -> String {
    usage
        .and_then(|u| u.memory_bytes)
        .map_or_else(|| "—".to_owned(), megabytes)
}

fn containers(overview: &Overview) -> Markup {
    html! {
        @if overview.warm.is_empty() && overview.containers.is_empty() {
            p.empty { "No agent is warm and no container runs." }
        }
        @if !overview.warm.is_empty() {
            table.cards {
                thead { tr { th { "Warm agent" } th { "Idle" } th.num { "Memory" } th.num { "CPU" } } }
                tbody {
                    @for agent in &overview.warm {
                        tr {
                            td data-label="Warm agent" { a href=(thread_url(&agent.channel)) { (agent.channel) } }
                            td data-label="Idle" { (agent.idle_sec) " s" }
                            td.num data-label="Memory" { (memory(Some(&agent.usage))) }
                            td.num data-label="CPU" { (cpu(Some(&agent.usage))) }
                        }
                    }
                }
            }
        }
        @if !overview.containers.is_empty() {
            table.cards {
                thead { tr { th { "Container" } th { "Kind" } th { "Status" } th.num { "Memory" } th.num { "CPU" } } }
                tbody {
                    @for c in &overview.containers {
                        tr {
                            td data-label="Container" { code.small { (c.name) } }
                            td data-label="Kind" { (c.kind.label()) }
                            td data-label="Status" { (format!("{:?}", c.status).to_lowercase()) }
                            td.num data-label="Memory" { (memory(overview.usage.get(&c.id))) }
                            td.num data-label="CPU" { (cpu(overview.usage.get(&c.id))) }
                        }
                    }
                }
            }
        }
    }
}

fn tasks(tasks: &[(TaskRecord, Option<RunStatus>)]) -> Markup {
    html! {
        @if tasks.is_empty() {
            p.empty { "No scheduled tasks." }
        } @else {
            table.cards {
                thead { tr { th { "Task" } th { "Next run" } th { "Last result" } } }
                tbody {
                    @for (task, last) in tasks {
                        tr {
                            td data-label="Task" {
                                (task.name.clone().unwrap_or_else(|| task.id.clone()))
                                br; span.small.muted { code { (task.schedule) } " · " a href=(thread_url(&task.channel_key)) { (task.channel_key) } }
                            }
                            td data-label="Next run" {
                                @match (task.enabled, task.next_run_at) {
                                    (false, _) => span.muted { "paused" },
                                    (true, Some(at)) => (page::time(at)),
                                    (true, None) => span.muted { "done" },
                                }
                            }
                            td data-label="Last result" {
                                @match last {
                                    Some(RunStatus::Succeeded) => span.state.ok { "succeeded" },
                                    Some(RunStatus::Running) => span.state.running { "running" },
                                    Some(status) => span.state.failed { (status.as_str()) },
                                    None => span.muted { "not run yet" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(usage: Option<ContainerUsage>, expected: &str) {
        let html = cpu(usage.as_ref()).into_string();
        let text: String = html
            .split('<')
            .filter_map(|part| part.split_once('>').map(|(_, text)| text))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            text.split_whitespace().collect::<Vec<_>>().join(" "),
            expected
        );
    }

    #[test]
    fn cpu_shows_the_rate_of_a_core_over_the_time_so_far() {
        let usage = |percent, usec| {
            Some(ContainerUsage {
                memory_bytes: None,
                cpu_usec: Some(usec),
                cpu_percent: percent,
            })
        };
        check(usage(Some(98.6), 3_420_000), "99 % 3.4 s");
        check(usage(Some(0.34), 120_000), "0.3 % 0.1 s");
        check(usage(None, 125_000_000), "— 2 min 5 s");
        check(None, "—");
    }
}
