//! The status message of a running turn: posted once, then edited as the agent works, at most
//! about once a second (platform rate limits), and finally replaced by a one-line summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loop_adapter::{Adapter, ChannelKey};
use loop_runner::AgentEvent;
use loop_runner::events::describe_tool;
use tokio::sync::mpsc;

use super::activity::ActivityTap;
use crate::text::clip;

/// Minimum time between two edits of the status message.
pub const EDIT_INTERVAL: Duration = Duration::from_millis(1000);
/// How much of a setup output line the status message shows, in characters.
const SETUP_LINE_CHARS: usize = 80;
/// How much of a failed setup step's output the answer quotes, in bytes (its end).
const SETUP_TAIL_BYTES: usize = 3000;

/// A project setup step that failed in this turn's container, told in the thread after the
/// answer: the agent ran without it.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupFailure {
    /// The step (`postCreateCommand`), or `step/entry` for one of a parallel step's commands.
    pub name: String,
    pub exit_code: i32,
    /// Its last lines of output.
    pub tail: String,
}

impl SetupFailure {
    /// The block that ends the thread's answer.
    pub fn notice(&self) -> String {
        let mut tail = self.tail.trim_end();
        let mut cut = "";
        if tail.len() > SETUP_TAIL_BYTES {
            let mut start = tail.len() - SETUP_TAIL_BYTES;
            while !tail.is_char_boundary(start) {
                start += 1;
            }
            tail = &tail[start..];
            cut = "…";
        }
        // A fence inside the output would end the code block early.
        let tail = tail.replace("```", "`\u{200b}``");
        format!(
            "⚠️ `{}` failed (exit {}); the agent ran without it. Last lines:\n```\n{cut}{tail}\n```",
            self.name, self.exit_code
        )
    }
}

/// What the status message shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressState {
    /// A line above the progress that stays for the whole turn (the thread's branch).
    pub header: Option<String>,
    pub current: Option<String>,
    pub tools_used: u32,
    /// The project setup step that failed in this turn, if one did.
    pub setup_failure: Option<SetupFailure>,
}

impl ProgressState {
    /// Folds one event in; returns whether the display changed.
    pub fn apply(&mut self, event: &AgentEvent) -> bool {
        match event {
            AgentEvent::ToolUse { name, input, .. } => {
                self.tools_used += 1;
                self.current = Some(describe_tool(name, input));
                true
            }
            AgentEvent::Activity { description, .. } if !description.is_empty() => {
                self.current = Some(description.clone());
                true
            }
            AgentEvent::Preparing(line) => {
                self.current = Some(format!("🏗️ {}", clip(line, 120)));
                true
            }
            AgentEvent::Text(_) => {
                let changed = self.current.as_deref() != Some("writing");
                self.current = Some("writing".to_owned());
                changed
            }
            AgentEvent::Setup { name, line } => {
                self.current = Some(format!("🛠️ {name}: {}", clip(line, SETUP_LINE_CHARS)));
                true
            }
            AgentEvent::SetupFailed {
                name,
                exit_code,
                tail,
            } => {
                self.current = Some(format!("⚠️ {name} failed (exit {exit_code})"));
                self.setup_failure = Some(SetupFailure {
                    name: name.clone(),
                    exit_code: *exit_code,
                    tail: tail.clone(),
                });
                true
            }
            _ => false,
        }
    }

    /// A turn's state before its first event, under `header`.
    pub fn with_header(header: Option<String>) -> ProgressState {
        ProgressState {
            header,
            ..ProgressState::default()
        }
    }

    /// `line` under the header, if any: how every version of the status message reads.
    pub fn under_header(&self, line: &str) -> String {
        match &self.header {
            Some(header) => format!("{header}\n{line}"),
            None => line.to_owned(),
        }
    }

    /// The status line: `⏳ Working (12s) · Bash: cargo test · 3 tools`, under the header.
    pub fn render(&self, elapsed: Duration) -> String {
        let mut line = format!("⏳ Working ({}s)", elapsed.as_secs());
        if let Some(current) = &self.current {
            line.push_str(" · ");
            line.push_str(current);
        }
        if self.tools_used > 0 {
            line.push_str(&format!(
                " · {} tool{}",
                self.tools_used,
                if self.tools_used == 1 { "" } else { "s" }
            ));
        }
        self.under_header(&line)
    }
}

/// Posts the status message of a turn that is starting; returns its platform id, or `None`
/// when it could not be posted (the turn goes on without one).
pub async fn post_status(
    adapter: &dyn Adapter,
    channel: &ChannelKey,
    state: &ProgressState,
) -> Option<String> {
    let first = state.render(Duration::ZERO);
    match adapter.post(channel, &first).await {
        Ok(posted) => Some(posted.message_id),
        Err(err) => {
            tracing::warn!(channel = %channel, error = %err, "cannot post the status message");
            None
        }
    }
}

/// Drives the status message `status_id` (see [`post_status`]) from the event stream until
/// the stream ends, recording every event in the turn's activity log (`activity`) as it
/// comes. Returns the status message's id and the final state.
#[allow(clippy::too_many_arguments)] // One turn's display: each argument is a different part.
pub async fn track(
    adapter: Arc<dyn Adapter>,
    channel: ChannelKey,
    status_id: Option<String>,
    mut state: ProgressState,
    mut events: mpsc::Receiver<AgentEvent>,
    started: Instant,
    on_change: impl Fn(&str) + Send,
    activity: ActivityTap,
) -> (Option<String>, ProgressState) {
    let mut last_edit = Instant::now();
    let mut dirty = false;
    let mut tick = tokio::time::interval(EDIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    activity.record(&event);
                    dirty |= state.apply(&event);
                }
                None => break,
            },
            _ = tick.tick() => {
                // The elapsed time changes every second even when nothing else does.
                dirty = true;
            }
        }
        if dirty && last_edit.elapsed() >= EDIT_INTERVAL {
            let line = state.render(started.elapsed());
            on_change(&line);
            if let Some(id) = &status_id
                && let Err(err) = adapter.edit(&channel, id, &line).await
            {
                tracing::debug!(channel = %channel, error = %err, "status edit failed");
            }
            last_edit = Instant::now();
            dirty = false;
        }
    }
    (status_id, state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_what_the_agent_is_doing() {
        let mut state = ProgressState::default();
        assert_eq!(state.render(Duration::from_secs(0)), "⏳ Working (0s)");
        assert!(state.apply(&AgentEvent::ToolUse {
            id: "t".into(),
            name: "Bash".into(),
            input: json!({"command": "cargo test"}),
        }));
        assert_eq!(
            state.render(Duration::from_secs(12)),
            "⏳ Working (12s) · Bash: cargo test · 1 tool"
        );
        assert!(!state.apply(&AgentEvent::Result(Default::default())));
        assert!(state.apply(&AgentEvent::Text("x".into())));
        assert!(
            !state.apply(&AgentEvent::Text("y".into())),
            "no change, no edit"
        );
        let branch = ProgressState::with_header(Some("🌿 working on `loop/x-a1b2`".into()));
        assert_eq!(
            branch.render(Duration::from_secs(3)),
            "🌿 working on `loop/x-a1b2`\n⏳ Working (3s)"
        );
    }

    #[test]
    fn setup_shows_as_it_goes_and_a_failure_is_kept_for_the_answer() {
        let mut state = ProgressState::default();
        assert!(state.apply(&AgentEvent::Setup {
            name: "postCreateCommand".into(),
            line: format!("  Compiling {}  ", "x".repeat(100)),
        }));
        let shown = state.render(Duration::from_secs(2));
        assert!(
            shown.starts_with("⏳ Working (2s) · 🛠️ postCreateCommand: Compiling xxx"),
            "{shown}"
        );
        assert!(shown.ends_with("x…"), "trimmed to 80 characters: {shown}");
        assert_eq!(state.setup_failure, None);

        assert!(state.apply(&AgentEvent::SetupFailed {
            name: "postCreateCommand".into(),
            exit_code: 1,
            tail: "npm ERR! missing script\n```oops```\n".into(),
        }));
        assert_eq!(
            state.render(Duration::from_secs(3)),
            "⏳ Working (3s) · ⚠️ postCreateCommand failed (exit 1)"
        );
        let failure = state.setup_failure.clone().expect("kept");
        assert_eq!(
            failure.notice(),
            "⚠️ `postCreateCommand` failed (exit 1); the agent ran without it. Last lines:\n```\nnpm ERR! missing script\n`\u{200b}``oops`\u{200b}``\n```"
        );
        // The agent's own work after it still shows; the failure stays.
        assert!(state.apply(&AgentEvent::Text("x".into())));
        assert!(state.setup_failure.is_some());

        let long = SetupFailure {
            name: "onCreateCommand".into(),
            exit_code: 2,
            tail: "é".repeat(SETUP_TAIL_BYTES),
        };
        let notice = long.notice();
        assert!(notice.contains("\n```\n…é"), "{notice}");
        assert!(notice.len() < SETUP_TAIL_BYTES + 200);
    }
}
