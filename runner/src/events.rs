//! Decoding `claude --output-format stream-json --verbose`: one JSON object per line.
//!
//! The wire shape belongs to the Claude Code CLI; this module is the one place that knows it.
//! Unknown event types and fields are ignored (the CLI adds them over time); a malformed line
//! is reported and skipped, never fatal.

use loop_wire::setup::{self, SetupReport};
use serde::Deserialize;
use serde_json::Value;

/// Longest line accepted from the CLI: large tool results arrive as one line.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What a turn reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The CLI started: its session id and the tools and MCP servers it sees.
    Init {
        session_id: String,
        tools: Vec<String>,
        mcp_servers: Vec<(String, String)>,
        /// The CLI's working directory: where its tools run and relative paths land.
        cwd: Option<String>,
    },
    /// Text the model wrote.
    Text(String),
    /// The model called a tool.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// A tool finished.
    ToolResult {
        tool_use_id: String,
        is_error: bool,
        content: String,
    },
    /// `system` task progress (subagents).
    Activity {
        subtype: String,
        description: String,
    },
    /// A line of output of the project's setup (`loop setup`, before the CLI starts).
    Setup { name: String, line: String },
    /// A setup step failed; the steps after it were skipped and the agent started anyway.
    SetupFailed {
        name: String,
        exit_code: i32,
        /// The step's last lines of output.
        tail: String,
    },
    /// The final `result` event.
    Result(TurnResult),
    /// loop prepares the agent's environment before the CLI starts (a project image being
    /// built): one line of what it is doing.
    Preparing(String),
}

/// The final `result` event of a turn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnResult {
    pub session_id: String,
    pub is_error: bool,
    pub subtype: String,
    pub text: String,
    pub num_turns: u32,
    pub total_cost_usd: f64,
    pub usage: Usage,
    pub duration_ms: u64,
}

/// Token counts of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
}

/// Why a line was not an event.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("line of {0} bytes exceeds the {MAX_LINE_BYTES}-byte limit")]
    TooLong(usize),
    #[error("not JSON: {0}")]
    NotJson(String),
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    mcp_servers: Vec<Value>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    message: Option<RawMessage>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    num_turns: Option<u32>,
    #[serde(default)]
    total_cost_usd: Option<f64>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    content: Value,
}

/// Decodes one line into zero or more events (an assistant message may carry several blocks).
pub fn decode_line(line: &str) -> Result<Vec<AgentEvent>, DecodeError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(DecodeError::TooLong(line.len()));
    }
    let line = line.trim();
    if line.is_empty() {
        return Ok(Vec::new());
    }
    let raw: RawEvent =
        serde_json::from_str(line).map_err(|err| DecodeError::NotJson(err.to_string()))?;
    let mut events = Vec::new();
    match raw.kind.as_str() {
        "system" => match raw.subtype.as_deref() {
            Some("init") => events.push(AgentEvent::Init {
                session_id: raw.session_id.unwrap_or_default(),
                tools: raw
                    .tools
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                mcp_servers: raw
                    .mcp_servers
                    .iter()
                    .map(|s| {
                        (
                            s["name"].as_str().unwrap_or_default().to_owned(),
                            s["status"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                cwd: raw.cwd,
            }),
            Some(subtype @ ("task_started" | "task_progress" | "task_notification")) => events
                .push(AgentEvent::Activity {
                    subtype: subtype.to_owned(),
                    description: raw.description.unwrap_or_default(),
                }),
            Some(setup::LINE_SUBTYPE | setup::FAILED_SUBTYPE) => {
                let report: SetupReport = serde_json::from_str(line)
                    .map_err(|err| DecodeError::NotJson(err.to_string()))?;
                events.push(match report {
                    SetupReport::Line { name, line } => AgentEvent::Setup { name, line },
                    SetupReport::Failed {
                        name,
                        exit_code,
                        tail,
                    } => AgentEvent::SetupFailed {
                        name,
                        exit_code,
                        tail,
                    },
                });
            }
            _ => {}
        },
        "assistant" => {
            for block in content_blocks(raw.message) {
                match block["type"].as_str() {
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            events.push(AgentEvent::Text(text.to_owned()));
                        }
                    }
                    Some("tool_use") => events.push(AgentEvent::ToolUse {
                        id: block["id"].as_str().unwrap_or_default().to_owned(),
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        input: block["input"].clone(),
                    }),
                    _ => {}
                }
            }
        }
        "user" => {
            for block in content_blocks(raw.message) {
                if block["type"].as_str() == Some("tool_result") {
                    events.push(AgentEvent::ToolResult {
                        tool_use_id: block["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                        is_error: block["is_error"].as_bool().unwrap_or(false),
                        content: tool_result_text(&block["content"]),
                    });
                }
            }
        }
        "result" => events.push(AgentEvent::Result(TurnResult {
            session_id: raw.session_id.unwrap_or_default(),
            is_error: raw.is_error.unwrap_or(false),
            subtype: raw.subtype.unwrap_or_default(),
            text: raw.result.unwrap_or_default(),
            num_turns: raw.num_turns.unwrap_or(0),
            total_cost_usd: raw.total_cost_usd.unwrap_or(0.0),
            usage: raw.usage.unwrap_or_default(),
            duration_ms: raw.duration_ms.unwrap_or(0),
        })),
        _ => {}
    }
    Ok(events)
}

fn content_blocks(message: Option<RawMessage>) -> Vec<Value> {
    match message.map(|m| m.content) {
        Some(Value::Array(blocks)) => blocks,
        Some(Value::String(text)) => vec![serde_json::json!({"type": "text", "text": text})],
        _ => Vec::new(),
    }
}

fn tool_result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A short description of a tool call for progress messages: `Bash: ls -la`,
/// `Write: src/main.rs`.
pub fn describe_tool(name: &str, input: &Value) -> String {
    let arg = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
        "prompt",
    ]
    .iter()
    .find_map(|key| input.get(*key).and_then(Value::as_str))
    .unwrap_or("");
    let arg: String = arg.lines().next().unwrap_or("").chars().take(80).collect();
    if arg.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {arg}")
    }
}

/// The user turn written to the CLI's stdin in `--input-format stream-json` mode.
pub fn user_turn_line(text: &str) -> String {
    let mut line = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    })
    .to_string();
    line.push('\n');
    line
}

/// Splits a byte stream into lines, bounded by [`MAX_LINE_BYTES`]: an over-long line is
/// dropped (and reported) rather than growing the buffer without limit.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buffer: Vec<u8>,
    discarding: bool,
}

/// One item out of the splitter.
#[derive(Debug, PartialEq)]
pub enum Line {
    Complete(String),
    Oversized,
}

impl LineSplitter {
    /// Feeds bytes; returns every completed line.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let ends_line = chunk.last() == Some(&b'\n');
            let body = if ends_line {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            };
            if !self.discarding {
                if self.buffer.len() + body.len() > MAX_LINE_BYTES {
                    self.discarding = true;
                    self.buffer.clear();
                    out.push(Line::Oversized);
                } else {
                    self.buffer.extend_from_slice(body);
                }
            }
            if ends_line {
                if !self.discarding {
                    out.push(Line::Complete(
                        String::from_utf8_lossy(&self.buffer).into_owned(),
                    ));
                }
                self.buffer.clear();
                self.discarding = false;
            }
        }
        out
    }

    /// The last line when the stream ends without a newline.
    pub fn finish(&mut self) -> Option<Line> {
        if self.discarding || self.buffer.is_empty() {
            return None;
        }
        let line = String::from_utf8_lossy(&self.buffer).into_owned();
        self.buffer.clear();
        Some(Line::Complete(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Vec<AgentEvent>) {
        assert_eq!(decode_line(line).expect("decodes"), expected, "{line}");
    }

    #[test]
    fn decodes_the_event_kinds() {
        check(
            r#"{"type":"system","subtype":"init","cwd":"/src/app","session_id":"s1","tools":["Bash","Write"],"mcp_servers":[{"name":"loop","status":"connected"}]}"#,
            vec![AgentEvent::Init {
                session_id: "s1".into(),
                tools: vec!["Bash".into(), "Write".into()],
                mcp_servers: vec![("loop".into(), "connected".into())],
                cwd: Some("/src/app".into()),
            }],
        );
        check(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}"#,
            vec![
                AgentEvent::Text("hi".into()),
                AgentEvent::ToolUse {
                    id: "t1".into(),
                    name: "Bash".into(),
                    input: serde_json::json!({"command": "ls"}),
                },
            ],
        );
        check(
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"out"}],"is_error":true}]}}"#,
            vec![AgentEvent::ToolResult {
                tool_use_id: "t1".into(),
                is_error: true,
                content: "out".into(),
            }],
        );
        check(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s1","num_turns":3,"total_cost_usd":0.25,"duration_ms":1200,"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":2}}"#,
            vec![AgentEvent::Result(TurnResult {
                session_id: "s1".into(),
                is_error: false,
                subtype: "success".into(),
                text: "done".into(),
                num_turns: 3,
                total_cost_usd: 0.25,
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cache_read_input_tokens: 2,
                    cache_creation_input_tokens: 0,
                },
                duration_ms: 1200,
            })],
        );
        check(
            r#"{"type":"system","subtype":"task_started","description":"subagent"}"#,
            vec![AgentEvent::Activity {
                subtype: "task_started".into(),
                description: "subagent".into(),
            }],
        );
        check(r#"{"type":"stream_event","event":{}}"#, vec![]);
        check("", vec![]);
    }

    #[test]
    fn decodes_what_loop_setup_reports() {
        check(
            r#"{"type":"system","subtype":"loop_setup","name":"postCreateCommand","line":"npm ci"}"#,
            vec![AgentEvent::Setup {
                name: "postCreateCommand".into(),
                line: "npm ci".into(),
            }],
        );
        check(
            r#"{"type":"system","subtype":"loop_setup_failed","name":"postCreateCommand/npm","exit_code":1,"tail":"a\nb"}"#,
            vec![AgentEvent::SetupFailed {
                name: "postCreateCommand/npm".into(),
                exit_code: 1,
                tail: "a\nb".into(),
            }],
        );
        // What the guest writes is what the decoder reads.
        let report = SetupReport::Line {
            name: "onCreateCommand".into(),
            line: "ok".into(),
        };
        let written = serde_json::to_string(&report.as_line()).expect("json");
        check(
            &written,
            vec![AgentEvent::Setup {
                name: "onCreateCommand".into(),
                line: "ok".into(),
            }],
        );
        assert!(matches!(
            decode_line(r#"{"type":"system","subtype":"loop_setup","name":1}"#),
            Err(DecodeError::NotJson(_))
        ));
    }

    #[test]
    fn malformed_and_huge_lines_are_errors_not_panics() {
        assert!(matches!(
            decode_line("{not json"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            decode_line(r#"{"no_type":1}"#),
            Err(DecodeError::NotJson(_))
        ));
        let huge = "x".repeat(MAX_LINE_BYTES + 1);
        assert_eq!(
            decode_line(&huge),
            Err(DecodeError::TooLong(MAX_LINE_BYTES + 1))
        );
    }

    #[test]
    fn splitter_handles_chunks_and_bounds_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab"), vec![]);
        assert_eq!(
            s.push(b"c\nde\n\nf"),
            vec![
                Line::Complete("abc".into()),
                Line::Complete("de".into()),
                Line::Complete(String::new()),
            ]
        );
        assert_eq!(s.finish(), Some(Line::Complete("f".into())));
        let big = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut items = s.push(&big);
        items.extend(s.push(b"tail\nnext\n"));
        assert_eq!(items, vec![Line::Oversized, Line::Complete("next".into())]);
    }

    #[test]
    fn describes_tools_briefly() {
        assert_eq!(
            describe_tool("Bash", &serde_json::json!({"command": "ls -la\nrm"})),
            "Bash: ls -la"
        );
        assert_eq!(
            describe_tool("Write", &serde_json::json!({"file_path": "/a/b.rs"})),
            "Write: /a/b.rs"
        );
        assert_eq!(
            describe_tool("TodoWrite", &serde_json::json!({})),
            "TodoWrite"
        );
    }

    #[test]
    fn user_turn_is_one_json_line() {
        let line = user_turn_line("hello\nworld");
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let value: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["message"]["content"][0]["text"], "hello\nworld");
    }
}
