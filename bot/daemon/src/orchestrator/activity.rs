//! What a turn's agent does, step by step: its tool calls with their input and output, the text
//! it writes, loop's own preparation lines. The same events that drive the chat status message
//! (`progress::track` records each one here), kept in memory for each channel's latest turn and
//! broadcast to whoever watches (the dashboard's thread page).
//!
//! Bounded on purpose: the newest [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of text per turn,
//! for the [`MAX_CHANNELS`] channels whose turns started last. The durable record of a turn is
//! its run row (answer, usage); this is only what happened on the way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use loop_runner::AgentEvent;
use loop_runner::events::describe_tool;
use tokio::sync::broadcast;

use crate::text::clip;

/// Entries kept per turn (the oldest go first).
pub const MAX_ENTRIES: usize = 400;
/// Text kept per turn, in bytes, across its entries.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Channels whose latest turn is kept.
pub const MAX_CHANNELS: usize = 256;
/// A tool's input as shown, in characters (pretty JSON).
const INPUT_CHARS: usize = 4000;
/// A tool's output as shown, in characters.
const OUTPUT_CHARS: usize = 32_000;
/// Broadcast buffer: a watcher this far behind skips ahead (and re-reads the log).
const BROADCAST: usize = 1024;

/// One step of a turn. A tool call's entry is sent again, same `seq`, when its result arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnActivity {
    /// Order within the daemon's life; the page's element id.
    pub seq: u64,
    pub run_id: String,
    pub channel: String,
    /// Unix ms when the step began.
    pub at_ms: i64,
    pub step: Step,
}

/// What the step was.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Tool {
        id: String,
        name: String,
        /// One line, as the status message shows it (`Bash: cargo test`).
        summary: String,
        /// The input as pretty JSON.
        input: String,
        output: Option<ToolOutput>,
    },
    /// Text the model wrote.
    Text(String),
    /// loop preparing the container (image builds, project setup).
    Note(String),
}

/// A tool call's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub is_error: bool,
    pub text: String,
}

impl Step {
    fn bytes(&self) -> usize {
        match self {
            Step::Tool {
                summary,
                input,
                output,
                ..
            } => summary.len() + input.len() + output.as_ref().map_or(0, |o| o.text.len()),
            Step::Text(text) | Step::Note(text) => text.len(),
        }
    }
}

/// The latest turn of one channel.
#[derive(Debug, Default)]
struct TurnLog {
    run_id: String,
    entries: VecDeque<TurnActivity>,
    bytes: usize,
    /// When the turn started (for evicting the least recent channel).
    started_seq: u64,
}

#[derive(Default)]
struct Inner {
    turns: Mutex<HashMap<String, TurnLog>>,
    seq: AtomicU64,
    events: Option<broadcast::Sender<TurnActivity>>,
}

/// The activity of the channels' latest turns. Cheap to clone.
#[derive(Clone)]
pub struct ActivityLog {
    inner: Arc<Inner>,
}

impl Default for ActivityLog {
    fn default() -> Self {
        let (events, _) = broadcast::channel(BROADCAST);
        ActivityLog {
            inner: Arc::new(Inner {
                events: Some(events),
                ..Inner::default()
            }),
        }
    }
}

impl ActivityLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TurnLog>> {
        self.inner
            .turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Starts the log of a new turn of `channel` (the previous turn's goes) and returns what
    /// records its events.
    pub fn begin(&self, channel: &str, run_id: &str) -> ActivityTap {
        let started_seq = self.next_seq();
        let mut turns = self.lock();
        if !turns.contains_key(channel)
            && turns.len() >= MAX_CHANNELS
            && let Some(oldest) = turns
                .iter()
                .min_by_key(|(_, t)| t.started_seq)
                .map(|(k, _)| k.clone())
        {
            turns.remove(&oldest);
        }
        turns.insert(
            channel.to_owned(),
            TurnLog {
                run_id: run_id.to_owned(),
                started_seq,
                ..TurnLog::default()
            },
        );
        ActivityTap {
            log: self.clone(),
            channel: channel.to_owned(),
            run_id: run_id.to_owned(),
        }
    }

    /// New and updated entries of every channel, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<TurnActivity> {
        match &self.inner.events {
            Some(events) => events.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// The latest turn of `channel`: its run id and entries, oldest first.
    pub fn latest(&self, channel: &str) -> Option<(String, Vec<TurnActivity>)> {
        let turns = self.lock();
        let log = turns.get(channel)?;
        Some((log.run_id.clone(), log.entries.iter().cloned().collect()))
    }

    fn publish(&self, entry: TurnActivity) {
        if let Some(events) = &self.inner.events {
            // Nobody watching is fine.
            let _ = events.send(entry);
        }
    }

    /// Appends (or, for a tool's result, updates) an entry of the channel's current turn.
    fn record(&self, channel: &str, run_id: &str, event: &AgentEvent) {
        let now = chrono::Utc::now().timestamp_millis();
        let changed = {
            let mut turns = self.lock();
            let Some(log) = turns.get_mut(channel).filter(|l| l.run_id == run_id) else {
                // A newer turn of the channel began (or this one was evicted): not shown.
                return;
            };
            match step_of(event) {
                Some(Update::New(step)) => {
                    let entry = TurnActivity {
                        seq: self.next_seq(),
                        run_id: run_id.to_owned(),
                        channel: channel.to_owned(),
                        at_ms: now,
                        step,
                    };
                    log.bytes += entry.step.bytes();
                    log.entries.push_back(entry.clone());
                    while log.entries.len() > MAX_ENTRIES || log.bytes > MAX_BYTES {
                        match log.entries.pop_front() {
                            Some(old) => log.bytes = log.bytes.saturating_sub(old.step.bytes()),
                            None => break,
                        }
                    }
                    Some(entry)
                }
                Some(Update::Result { tool_use_id, out }) => {
                    let found =
                        log.entries.iter_mut().rev().find(
                            |e| matches!(&e.step, Step::Tool { id, .. } if *id == tool_use_id),
                        );
                    match found {
                        Some(entry) => {
                            if let Step::Tool { output, .. } = &mut entry.step {
                                log.bytes += out.text.len();
                                *output = Some(out);
                            }
                            Some(entry.clone())
                        }
                        None => None,
                    }
                }
                None => None,
            }
        };
        if let Some(entry) = changed {
            self.publish(entry);
        }
    }
}

enum Update {
    New(Step),
    Result {
        tool_use_id: String,
        out: ToolOutput,
    },
}

fn step_of(event: &AgentEvent) -> Option<Update> {
    Some(match event {
        AgentEvent::ToolUse { id, name, input } => Update::New(Step::Tool {
            id: id.clone(),
            name: name.clone(),
            summary: describe_tool(name, input),
            input: clip(
                &serde_json::to_string_pretty(input).unwrap_or_default(),
                INPUT_CHARS,
            ),
            output: None,
        }),
        AgentEvent::ToolResult {
            tool_use_id,
            is_error,
            content,
        } => Update::Result {
            tool_use_id: tool_use_id.clone(),
            out: ToolOutput {
                is_error: *is_error,
                text: clip(content, OUTPUT_CHARS),
            },
        },
        AgentEvent::Text(text) if !text.trim().is_empty() => Update::New(Step::Text(text.clone())),
        AgentEvent::Preparing(line) => Update::New(Step::Note(line.clone())),
        AgentEvent::Setup { name, line } => Update::New(Step::Note(format!("{name}: {line}"))),
        AgentEvent::SetupFailed {
            name, exit_code, ..
        } => Update::New(Step::Note(format!("{name} failed (exit {exit_code})"))),
        _ => return None,
    })
}

/// Records one turn's events (see [`ActivityLog::begin`]).
#[derive(Clone)]
pub struct ActivityTap {
    log: ActivityLog,
    channel: String,
    run_id: String,
}

impl ActivityTap {
    pub fn record(&self, event: &AgentEvent) {
        self.log.record(&self.channel, &self.run_id, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(id: &str, command: &str) -> AgentEvent {
        AgentEvent::ToolUse {
            id: id.into(),
            name: "Bash".into(),
            input: json!({"command": command}),
        }
    }

    #[tokio::test]
    async fn a_tool_call_is_shown_then_completed_with_its_output() {
        let log = ActivityLog::default();
        let mut events = log.subscribe();
        let tap = log.begin("local:c", "run-1");
        tap.record(&tool("t1", "sleep 3; echo built"));
        tap.record(&AgentEvent::Result(Default::default()));
        tap.record(&AgentEvent::ToolResult {
            tool_use_id: "t1".into(),
            is_error: false,
            content: "built\n".into(),
        });
        tap.record(&AgentEvent::Text("All done.".into()));

        let first = events.recv().await.expect("call");
        assert!(
            matches!(&first.step, Step::Tool { summary, output: None, .. } if summary == "Bash: sleep 3; echo built")
        );
        let completed = events.recv().await.expect("result");
        assert_eq!(completed.seq, first.seq, "the same entry, updated");
        assert!(matches!(&completed.step, Step::Tool { output: Some(o), .. } if o.text == "built"));
        let (run, entries) = log.latest("local:c").expect("kept");
        assert_eq!(run, "run-1");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].step, Step::Text("All done.".into()));

        // The next turn starts a new log; the old turn's late events are dropped.
        let next = log.begin("local:c", "run-2");
        tap.record(&tool("t9", "late"));
        next.record(&tool("t2", "ls"));
        let (run, entries) = log.latest("local:c").expect("kept");
        assert_eq!((run.as_str(), entries.len()), ("run-2", 1));
    }

    #[test]
    fn logs_are_bounded() {
        let log = ActivityLog::default();
        let tap = log.begin("local:c", "r");
        for i in 0..MAX_ENTRIES + 10 {
            tap.record(&AgentEvent::Text(format!("line {i}")));
        }
        let (_, entries) = log.latest("local:c").expect("kept");
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries[0].step, Step::Text("line 10".into()));
        let big = "x".repeat(OUTPUT_CHARS * 2);
        for _ in 0..100 {
            tap.record(&AgentEvent::Text(big.clone()));
        }
        let (_, entries) = log.latest("local:c").expect("kept");
        let bytes: usize = entries.iter().map(|e| e.step.bytes()).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        for i in 0..MAX_CHANNELS + 3 {
            log.begin(&format!("local:c{i}"), "r");
        }
        assert_eq!(log.lock().len(), MAX_CHANNELS);
        assert!(log.latest("local:c").is_none(), "the least recent went");
    }
}
