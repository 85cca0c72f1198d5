//! Turns a chosen [`Step`] into the bytes the Messages API would send: an SSE event sequence
//! for streaming requests, a message object otherwise, or an error body.
//!
//! The shapes follow the public Messages API streaming documentation: `message_start`,
//! `content_block_start` / `content_block_delta` / `content_block_stop` per block,
//! `message_delta` with the stop reason and output usage, `message_stop`, and `ping` and
//! `error` events in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::script::{Step, Usage};

/// Mints response, tool-use and request ids.
///
/// Ids must be unique across server instances, not just within one: a session resumed with
/// `--resume` replays earlier responses, and the CLI merges assistant messages that share an
/// id and breaks on repeated tool-use ids (seen as "[Tool use interrupted]" in the history).
#[derive(Debug)]
pub struct Ids {
    /// Differs between server instances (start time, process id, instance number).
    nonce: String,
    counter: AtomicU64,
}

impl Default for Ids {
    fn default() -> Ids {
        Ids::new()
    }
}

impl Ids {
    pub fn new() -> Ids {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // Two servers started in the same nanosecond of one process still differ by instance.
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        Ids {
            nonce: format!("{:x}{:x}{instance:x}", nanos, std::process::id()),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_fake{}{n:06}", self.nonce)
    }

    pub fn message(&self) -> String {
        self.next("msg")
    }

    pub fn tool_use(&self) -> String {
        self.next("toolu")
    }

    pub fn request(&self) -> String {
        self.next("req")
    }
}

/// One server-sent event, sent after `delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub delay: Duration,
    pub event: &'static str,
    pub data: Value,
}

impl Frame {
    fn now(event: &'static str, data: Value) -> Frame {
        Frame {
            delay: Duration::ZERO,
            event,
            data,
        }
    }

    /// The wire form: `event: NAME\ndata: JSON\n\n`.
    pub fn to_sse(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.event, self.data)
    }
}

/// Everything a streaming answer sends, and whether it then stalls forever.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    pub frames: Vec<Frame>,
    pub hang_after: bool,
}

/// The error body the API sends with a non-2xx status, and inside an SSE `error` event.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// The SSE sequence for a step. `Error` and `Delay` are handled before streaming starts and
/// never reach here; if they do, they are answered as what they wrap or as a stream error.
pub fn stream_plan(step: &Step, model: &str, usage: Usage, ids: &Ids) -> StreamPlan {
    let start = vec![
        Frame::now("message_start", message_start(ids.message(), model, usage)),
        Frame::now("ping", json!({"type": "ping"})),
    ];
    let mut frames = start;
    match step {
        Step::Text(text) => {
            frames.extend(text_block(0, &[text.as_str()], Duration::ZERO));
            frames.extend(finish("end_turn", usage));
        }
        Step::Slow {
            text,
            chunks,
            delay_ms,
        } => {
            let pieces = split_chars(text, *chunks);
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            frames.extend(text_block(0, &pieces, Duration::from_millis(*delay_ms)));
            frames.extend(finish("end_turn", usage));
        }
        Step::ToolUse { name, input } => {
            frames.extend(tool_use_block(0, &ids.tool_use(), name, input));
            frames.extend(finish("tool_use", usage));
        }
        Step::StreamError {
            error_type,
            message,
        } => frames.push(Frame::now("error", error_body(error_type, message))),
        Step::Error {
            error_type,
            message,
            ..
        } => frames.push(Frame::now("error", error_body(error_type, message))),
        Step::Delay { then, .. } | Step::Barrier { then, .. } => {
            return stream_plan(then, model, usage, ids);
        }
        Step::Hang => {
            return StreamPlan {
                frames,
                hang_after: true,
            };
        }
    }
    StreamPlan {
        frames,
        hang_after: false,
    }
}

/// The complete message object for a non-streaming request, or `None` for steps that have no
/// such form (errors and hangs, handled by the caller).
pub fn message(step: &Step, model: &str, usage: Usage, ids: &Ids) -> Option<Value> {
    let (content, stop_reason) = match step {
        Step::Text(text) | Step::Slow { text, .. } => {
            (json!([{"type": "text", "text": text}]), "end_turn")
        }
        Step::ToolUse { name, input } => (
            json!([{"type": "tool_use", "id": ids.tool_use(), "name": name, "input": input}]),
            "tool_use",
        ),
        Step::Delay { then, .. } | Step::Barrier { then, .. } => {
            return message(then, model, usage, ids);
        }
        Step::Error { .. } | Step::StreamError { .. } | Step::Hang => return None,
    };
    Some(json!({
        "id": ids.message(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": full_usage(usage.input_tokens, usage.output_tokens),
    }))
}

fn full_usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

fn message_start(id: String, model: &str, usage: Usage) -> Value {
    // The real API reports the input tokens up front and a provisional output count of 1;
    // the final output count comes in `message_delta`.
    json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": full_usage(usage.input_tokens, 1),
        }
    })
}

fn text_block(index: usize, pieces: &[&str], delay: Duration) -> Vec<Frame> {
    let mut frames = vec![Frame::now(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    )];
    for piece in pieces {
        frames.push(Frame {
            delay,
            event: "content_block_delta",
            data: json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
        });
    }
    frames.push(Frame::now(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    frames
}

fn tool_use_block(index: usize, id: &str, name: &str, input: &Value) -> Vec<Frame> {
    // The input arrives as partial JSON strings that only parse once concatenated; splitting
    // it in two makes a client that parses each piece on its own fail loudly.
    let json = input.to_string();
    let middle = json
        .char_indices()
        .map(|(i, _)| i)
        .nth(json.chars().count() / 2)
        .unwrap_or(json.len());
    let (first, second) = json.split_at(middle);
    let mut frames = vec![Frame::now(
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    )];
    for piece in [first, second] {
        frames.push(Frame::now(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": piece}}),
        ));
    }
    frames.push(Frame::now(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    frames
}

fn finish(stop_reason: &str, usage: Usage) -> Vec<Frame> {
    vec![
        Frame::now(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": usage.output_tokens}}),
        ),
        Frame::now("message_stop", json!({"type": "message_stop"})),
    ]
}

/// Splits `text` into `chunks` pieces of about equal length on character boundaries (fewer
/// if the text is shorter; one empty piece for empty text).
fn split_chars(text: &str, chunks: u32) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let chunks = usize::try_from(chunks.max(1))
        .unwrap_or(1)
        .min(chars.len().max(1));
    let size = chars.len().div_ceil(chunks).max(1);
    let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    if pieces.is_empty() {
        vec![String::new()]
    } else {
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(plan: &StreamPlan) -> Vec<&'static str> {
        plan.frames.iter().map(|f| f.event).collect()
    }

    #[test]
    fn text_stream_has_the_documented_event_order() {
        let plan = stream_plan(&Step::text("hi"), "m", Usage::default(), &Ids::new());
        assert_eq!(
            events(&plan),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(!plan.hang_after);
        assert_eq!(plan.frames[5].data["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn tool_input_is_split_and_reassembles() {
        let input = json!({"command": "echo ünïcode", "n": [1, 2]});
        let plan = stream_plan(
            &Step::tool_use("Bash", input.clone()),
            "m",
            Usage::default(),
            &Ids::new(),
        );
        let partial: String = plan
            .frames
            .iter()
            .filter_map(|f| f.data["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&partial).expect("valid json"),
            input
        );
        assert_eq!(plan.frames[2].data["content_block"]["name"], "Bash");
        assert_eq!(plan.frames.last().map(|f| f.event), Some("message_stop"));
    }

    #[test]
    fn slow_text_is_chunked_with_delays() {
        let plan = stream_plan(
            &Step::slow("abcdefg", 3, 20),
            "m",
            Usage::default(),
            &Ids::new(),
        );
        let deltas: Vec<&Frame> = plan
            .frames
            .iter()
            .filter(|f| f.event == "content_block_delta")
            .collect();
        assert_eq!(deltas.len(), 3);
        assert!(deltas.iter().all(|f| f.delay == Duration::from_millis(20)));
        let text: String = deltas
            .iter()
            .filter_map(|f| f.data["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "abcdefg");
    }

    #[test]
    fn split_chars_edge_cases() {
        assert_eq!(split_chars("", 3), [""]);
        assert_eq!(split_chars("ab", 5), ["a", "b"]);
        assert_eq!(split_chars("abc", 0), ["abc"]);
    }

    #[test]
    fn hang_stops_after_the_start() {
        let plan = stream_plan(&Step::Hang, "m", Usage::default(), &Ids::new());
        assert_eq!(events(&plan), ["message_start", "ping"]);
        assert!(plan.hang_after);
    }

    #[test]
    fn ids_are_unique() {
        let ids = Ids::new();
        assert_ne!(ids.message(), ids.message());
        assert_ne!(Ids::new().tool_use(), Ids::new().tool_use());
    }
}
