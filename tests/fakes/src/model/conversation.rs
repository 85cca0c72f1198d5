//! A read-only view of one `/v1/messages` request body: which user prompt it answers, how far
//! the answer has got, and what the last tool printed.
//!
//! The fake model is stateless on purpose: many CLI sessions run at once against one server,
//! and `--resume` replays a whole history, so everything a script needs is derived from the
//! request itself.

use serde_json::Value;

/// Text blocks that the CLI injects into user messages (date, file-change notices, ...) start
/// with this tag. They are context, not something the user typed, so matching ignores them.
const SYSTEM_REMINDER_TAG: &str = "<system-reminder>";

/// What the script engine needs to know about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The text of the latest user message that carries typed text (not only tool results),
    /// with the CLI's `<system-reminder>` blocks left out. Empty when there is none.
    pub prompt: String,
    /// How many assistant turns follow that user message: 0 for the first answer to a prompt,
    /// 1 after one tool round trip, and so on.
    pub step: usize,
    /// The text of the last `tool_result` block after the prompt, if any.
    pub last_tool_result: Option<String>,
    /// The `model` field of the request.
    pub model: String,
    /// The working directory the CLI announces in its system prompt ("Primary working
    /// directory: /path"), as a model learns it; `None` when the request does not say.
    pub cwd: Option<String>,
    /// The text of every `tool_result` after the prompt, in order: what each step's tool
    /// printed, for reports that quote an earlier step.
    pub tool_results: Vec<String>,
}

impl Conversation {
    /// Reads a `/v1/messages` request body. Unknown or malformed parts are skipped rather than
    /// rejected: the fake must keep answering whatever a newer CLI sends.
    pub fn from_request(body: &Value) -> Conversation {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let cwd = working_directory(body);
        let messages: &[Value] = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();

        // The CLI sends `system` role messages in the middle of the conversation (task-tool
        // nudges, agent lists); they are neither the user's nor the model's turn.
        let turns: Vec<&Value> = messages
            .iter()
            .filter(|m| matches!(role(m), "user" | "assistant"))
            .collect();

        let prompt_at = turns
            .iter()
            .rposition(|m| role(m) == "user" && typed_text(m).is_some());
        let Some(prompt_at) = prompt_at else {
            return Conversation {
                model,
                cwd,
                last_tool_result: last_tool_result(&turns),
                ..Conversation::default()
            };
        };
        let prompt = typed_text(turns[prompt_at]).unwrap_or_default();
        let after = &turns[prompt_at + 1..];

        // Consecutive assistant messages are one turn: the CLI may split one response into
        // several messages (one per content block) that share the response's id.
        let mut step = 0;
        let mut previous_was_assistant = false;
        for message in after {
            let is_assistant = role(message) == "assistant";
            if is_assistant && !previous_was_assistant {
                step += 1;
            }
            previous_was_assistant = is_assistant;
        }

        Conversation {
            prompt,
            step,
            last_tool_result: last_tool_result(after),
            model,
            cwd,
            tool_results: tool_results(after),
        }
    }
}

/// The working directory the CLI announces to the model. The CLI writes an environment
/// section with a line such as "Primary working directory: /src/app" (older releases:
/// "Working directory: /src/app"), in the system prompt or, in some releases and modes, in a
/// system-role message or a `<system-reminder>`; a model has no other way to learn it, so
/// every text of the request is searched, the system prompt first.
fn working_directory(body: &Value) -> Option<String> {
    let mut texts = Vec::new();
    if let Some(system) = body.get("system") {
        collect_texts(system, &mut texts);
    }
    if let Some(messages) = body.get("messages") {
        collect_texts(messages, &mut texts);
    }
    texts.iter().flat_map(|text| text.lines()).find_map(|line| {
        let line = line.trim().trim_start_matches(['-', '*', ' ']);
        let (label, value) = line.split_once(':')?;
        let label = label.trim().to_ascii_lowercase();
        (label == "primary working directory" || label == "working directory")
            .then(|| value.trim().to_owned())
            .filter(|dir| dir.starts_with('/'))
    })
}

/// Every string inside `value`, depth first.
fn collect_texts<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| collect_texts(item, out)),
        Value::Object(map) => map.values().for_each(|item| collect_texts(item, out)),
        _ => {}
    }
}

fn role(message: &Value) -> &str {
    message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The typed text of a user message, or `None` when it holds only tool results or injected
/// reminders. Content is either a plain string (how resumed histories are replayed) or a list
/// of blocks.
fn typed_text(message: &Value) -> Option<String> {
    match message.get("content") {
        Some(Value::String(text)) if !is_reminder(text) => Some(text.clone()),
        Some(Value::Array(blocks)) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .filter(|t| !is_reminder(t))
                .collect();
            if texts.is_empty() {
                None
            } else {
                Some(texts.join("\n"))
            }
        }
        _ => None,
    }
}

fn is_reminder(text: &str) -> bool {
    text.trim_start().starts_with(SYSTEM_REMINDER_TAG)
}

fn last_tool_result(messages: &[&Value]) -> Option<String> {
    tool_results(messages).pop()
}

fn tool_results(messages: &[&Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| role(m) == "user")
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| tool_result_text(b.get("content")))
        .collect()
}

/// A tool result's content is a string or a list of blocks; only text blocks matter here.
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(messages: Value, prompt: &str, step: usize, tool: Option<&str>) {
        let conversation = Conversation::from_request(&json!({
            "model": "claude-test",
            "messages": messages,
        }));
        assert_eq!(conversation.prompt, prompt, "prompt");
        assert_eq!(conversation.step, step, "step");
        assert_eq!(
            conversation.last_tool_result.as_deref(),
            tool,
            "tool result"
        );
        assert_eq!(conversation.model, "claude-test");
    }

    fn reminder() -> Value {
        json!({"type": "text", "text": "<system-reminder>\nToday is a day.\n</system-reminder>\n"})
    }

    #[test]
    fn first_request_is_step_zero_and_skips_reminders() {
        check(
            json!([{"role": "user", "content": [reminder(), {"type": "text", "text": "hello"}]}]),
            "hello",
            0,
            None,
        );
    }

    #[test]
    fn plain_string_content_is_typed_text() {
        check(json!([{"role": "user", "content": "hi"}]), "hi", 0, None);
    }

    #[test]
    fn tool_round_trip_counts_one_step_and_exposes_the_result() {
        check(
            json!([
                {"role": "user", "content": [{"type": "text", "text": "run it"}]},
                {"role": "system", "content": "agent list"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "out 1"}]},
                {"role": "system", "content": "nudge"},
            ]),
            "run it",
            1,
            Some("out 1"),
        );
    }

    #[test]
    fn split_assistant_messages_count_as_one_turn() {
        check(
            json!([
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "text", "text": "let me look"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "second"}, reminder()]},
            ]),
            "go",
            2,
            Some("second"),
        );
    }

    #[test]
    fn resumed_history_answers_the_latest_prompt() {
        check(
            json!([
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "old"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
                {"role": "user", "content": [reminder(), {"type": "text", "text": "second"}]},
            ]),
            "second",
            0,
            None,
        );
    }

    #[test]
    fn the_working_directory_comes_from_the_system_prompt() {
        let cases = [
            (
                json!("x\nPrimary working directory: /src/app\nIs a git repo: true"),
                Some("/src/app"),
            ),
            (
                json!([{"type": "text", "text": "You are Claude."}, {"type": "text", "text": "<env>\n - Working directory: /w\n</env>"}]),
                Some("/w"),
            ),
            (json!("Primary working directory: relative"), None),
            (json!("no environment here"), None),
        ];
        // Some releases say it in a reminder inside the first user message instead.
        let conversation = Conversation::from_request(&json!({
            "system": "You are Claude.",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\n - Primary working directory: /r\n</system-reminder>"},
                {"type": "text", "text": "hi"}]}],
        }));
        assert_eq!(conversation.cwd.as_deref(), Some("/r"));
        for (system, expected) in cases {
            let conversation = Conversation::from_request(&json!({
                "system": system,
                "messages": [{"role": "user", "content": "hi"}],
            }));
            assert_eq!(conversation.cwd.as_deref(), expected, "{system}");
        }
        assert_eq!(Conversation::from_request(&json!({})).cwd, None);
    }

    #[test]
    fn every_tool_result_after_the_prompt_is_kept_in_order() {
        let conversation = Conversation::from_request(&json!({"messages": [
            {"role": "user", "content": "old"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t0", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t0", "content": "before"}]},
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "one"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "two"}]},
        ]}));
        assert_eq!(conversation.tool_results, ["one", "two"]);
        assert_eq!(conversation.last_tool_result.as_deref(), Some("two"));
    }

    #[test]
    fn no_typed_text_gives_an_empty_prompt() {
        check(
            json!([{"role": "user", "content": [reminder()]}]),
            "",
            0,
            None,
        );
        check(json!([]), "", 0, None);
    }
}
