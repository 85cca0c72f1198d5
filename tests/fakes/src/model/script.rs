//! What the fake model answers: a [`Script`] of [`Rule`]s, each a [`Matcher`] on the user's
//! latest prompt and a list of [`Step`]s, one per model request of that turn.
//!
//! Scripts are plain data (serde) so the `fake-model` binary can load them from JSON:
//!
//! ```json
//! {"rules": [
//!   {"when": {"contains": "run"}, "steps": [
//!     {"tool_use": {"name": "Bash", "input": {"command": "echo hi"}}},
//!     {"text": "it printed {{last_tool_result}}"}]},
//!   {"steps": [{"text": "you said {{prompt}}"}]}
//! ]}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::conversation::Conversation;

/// The answer when no rule matches, or when a turn asks for more steps than its rule has.
/// Ending with a plain answer (instead of repeating the last step) guarantees that every
/// session stops, even if a script is one step short.
pub const DEFAULT_ANSWER: &str = "ok";

/// The exact error message the real Messages API returns when a request exceeds the context
/// window. The CLI recognises this wording and reports "Prompt is too long".
pub const PROMPT_TOO_LONG_MESSAGE: &str = "prompt is too long: 250000 tokens > 200000 maximum";

/// A list of rules, tried in order for every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Tried first to last; the first whose matcher accepts the prompt answers.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Token counts reported for every response unless its rule overrides them.
    #[serde(default)]
    pub usage: Usage,
}

/// One scripted conversation: when the prompt matches, answer request N of the turn with
/// `steps[N]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which prompts this rule answers; every prompt when left out.
    #[serde(default)]
    pub when: Matcher,
    /// One step per model request within a turn: step 0 answers the prompt, step 1 answers
    /// the first tool result, and so on.
    pub steps: Vec<Step>,
    /// Answer at most this many requests (of any step), then let later rules answer. This is
    /// the one piece of state in a script, for "fail once, then succeed" tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Token counts for this rule's responses instead of the script's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A test on the user's latest typed prompt (see [`Conversation::prompt`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Matcher {
    /// Every prompt.
    #[default]
    Any,
    /// The prompt contains this text (case-sensitive).
    Contains(String),
    /// The prompt starts with this text.
    StartsWith(String),
    /// The prompt is exactly this text, ignoring surrounding whitespace.
    Equals(String),
    /// Every inner matcher accepts.
    All(Vec<Matcher>),
    /// At least one inner matcher accepts.
    AnyOf(Vec<Matcher>),
    /// The inner matcher rejects.
    Not(Box<Matcher>),
}

/// One model response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A final answer (`stop_reason: end_turn`). Templated, see [`render`].
    Text(String),
    /// A tool call (`stop_reason: tool_use`): the CLI runs the tool and asks again with its
    /// `tool_result`. String values inside `input` are templated.
    ToolUse { name: String, input: Value },
    /// An HTTP error with the API's error body, before any streaming starts.
    Error {
        status: u16,
        error_type: String,
        message: String,
    },
    /// A stream that starts normally and then carries an SSE `error` event, as the real API
    /// does when it overloads mid-response.
    StreamError { error_type: String, message: String },
    /// A final answer streamed in `chunks` pieces with `delay_ms` between them, for progress
    /// and timeout tests.
    Slow {
        text: String,
        chunks: u32,
        delay_ms: u64,
    },
    /// Wait `ms` before answering with `then` (no bytes are sent while waiting).
    Delay { ms: u64, then: Box<Step> },
    /// Wait until `parties` requests (this one included) have reached the barrier `name`,
    /// then answer them all with their `then` at once; the next `parties` requests form the
    /// next round. Holds the turns of many sessions until every one has started, so that they
    /// end together. No bytes are sent while waiting.
    Barrier {
        name: String,
        parties: u32,
        then: Box<Step>,
    },
    /// Start the stream and never finish it; the connection stays open until the client
    /// gives up or the server shuts down. For turn-timeout tests.
    Hang,
}

/// Token counts reported in `message_start` / `message_delta`, which the CLI sums into the
/// `result` event's `usage` and `total_cost_usd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            input_tokens: 10,
            output_tokens: 5,
        }
    }
}

/// The step chosen for one request, already templated.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index of the rule that answered, `None` for the built-in default answer.
    pub rule: Option<usize>,
    /// The step index within the turn (see [`Conversation::step`]).
    pub step_index: usize,
    pub step: Step,
    pub usage: Usage,
}

/// Why a script file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read script {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid script {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Script {
    /// Loads a script from a JSON file (the serde form of [`Script`]; unknown keys are errors,
    /// so a typo cannot silently turn a rule into a catch-all).
    pub fn from_json_file(path: &Path) -> Result<Script, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ScriptError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// An empty script: every request is answered with [`DEFAULT_ANSWER`].
    pub fn new() -> Script {
        Script::default()
    }

    /// Appends a rule (builder style).
    pub fn rule(mut self, rule: Rule) -> Script {
        self.rules.push(rule);
        self
    }

    /// Sets the token counts reported for every response.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Script {
        self.usage = Usage {
            input_tokens,
            output_tokens,
        };
        self
    }

    /// Every turn is answered with this one step.
    pub fn always(step: Step) -> Script {
        Script::new().rule(Rule::any().then(step))
    }

    /// Every prompt is answered with "echo: PROMPT".
    pub fn echo() -> Script {
        Script::always(Step::text("echo: {{prompt}}"))
    }

    /// Every turn is the work session a model does in a project (see [`Session`]).
    pub fn realistic_session() -> Script {
        Script::new().rule(Rule::any().session(&Session::default()))
    }

    /// Every turn runs `command` with Bash, then answers with what it printed.
    pub fn bash_then_report(command: &str) -> Script {
        Script::new().rule(
            Rule::any()
                .then(Step::bash(command))
                .then(Step::text("{{last_tool_result}}")),
        )
    }

    /// Chooses the answer to one request. `try_claim(index, rule)` is asked before a matching
    /// rule is used, so the caller can enforce [`Rule::times`]; it returns false to skip the
    /// rule.
    pub fn select(
        &self,
        conversation: &Conversation,
        mut try_claim: impl FnMut(usize, &Rule) -> bool,
    ) -> Selection {
        let step_index = conversation.step;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.when.matches(&conversation.prompt) || !try_claim(index, rule) {
                continue;
            }
            let step = rule
                .steps
                .get(step_index)
                .cloned()
                .unwrap_or_else(|| Step::text(DEFAULT_ANSWER));
            return Selection {
                rule: Some(index),
                step_index,
                step: step.render(conversation),
                usage: rule.usage.unwrap_or(self.usage),
            };
        }
        Selection {
            rule: None,
            step_index,
            step: Step::text(DEFAULT_ANSWER),
            usage: self.usage,
        }
    }
}

impl Rule {
    /// A rule for prompts that `when` accepts, with no steps yet.
    pub fn when(when: Matcher) -> Rule {
        Rule {
            when,
            steps: Vec::new(),
            times: None,
            usage: None,
        }
    }

    /// A rule for every prompt.
    pub fn any() -> Rule {
        Rule::when(Matcher::Any)
    }

    /// A rule for prompts containing `needle`.
    pub fn contains(needle: &str) -> Rule {
        Rule::when(Matcher::contains(needle))
    }

    /// Appends the next step.
    pub fn then(mut self, step: Step) -> Rule {
        self.steps.push(step);
        self
    }

    /// Appends the steps of `session`: what a model does when asked to work on a project.
    pub fn session(mut self, session: &Session) -> Rule {
        self.steps.extend(session.steps());
        self
    }

    /// Limits the rule to `times` requests.
    pub fn times(mut self, times: u32) -> Rule {
        self.times = Some(times);
        self
    }

    /// Overrides the token counts of this rule's responses.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Rule {
        self.usage = Some(Usage {
            input_tokens,
            output_tokens,
        });
        self
    }
}

impl Matcher {
    pub fn contains(needle: &str) -> Matcher {
        Matcher::Contains(needle.to_owned())
    }

    pub fn starts_with(prefix: &str) -> Matcher {
        Matcher::StartsWith(prefix.to_owned())
    }

    pub fn equals(text: &str) -> Matcher {
        Matcher::Equals(text.to_owned())
    }

    /// Whether this matcher accepts `prompt`.
    pub fn matches(&self, prompt: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Contains(needle) => prompt.contains(needle.as_str()),
            Matcher::StartsWith(prefix) => prompt.trim_start().starts_with(prefix.as_str()),
            Matcher::Equals(text) => prompt.trim() == text.trim(),
            Matcher::All(inner) => inner.iter().all(|m| m.matches(prompt)),
            Matcher::AnyOf(inner) => inner.iter().any(|m| m.matches(prompt)),
            Matcher::Not(inner) => !inner.matches(prompt),
        }
    }
}

impl Step {
    pub fn text(text: &str) -> Step {
        Step::Text(text.to_owned())
    }

    pub fn tool_use(name: &str, input: Value) -> Step {
        Step::ToolUse {
            name: name.to_owned(),
            input,
        }
    }

    /// A call of the CLI's Bash tool.
    pub fn bash(command: &str) -> Step {
        Step::tool_use(
            "Bash",
            serde_json::json!({"command": command, "description": "scripted by the fake model"}),
        )
    }

    /// A call of the CLI's Write tool.
    pub fn write(file_path: &str, content: &str) -> Step {
        Step::tool_use(
            "Write",
            serde_json::json!({"file_path": file_path, "content": content}),
        )
    }

    /// A call of the CLI's Read tool.
    pub fn read(file_path: &str) -> Step {
        Step::tool_use("Read", serde_json::json!({"file_path": file_path}))
    }

    /// A call of the CLI's Edit tool (the CLI refuses it unless the file was read first).
    pub fn edit(file_path: &str, old_string: &str, new_string: &str) -> Step {
        Step::tool_use(
            "Edit",
            serde_json::json!({
                "file_path": file_path,
                "old_string": old_string,
                "new_string": new_string,
            }),
        )
    }

    /// The 400 the real API returns for an over-long context, with its exact wording.
    pub fn prompt_too_long() -> Step {
        Step::error(400, "invalid_request_error", PROMPT_TOO_LONG_MESSAGE)
    }

    /// The 529 the real API returns when it is overloaded.
    pub fn overloaded() -> Step {
        Step::error(529, "overloaded_error", "Overloaded")
    }

    /// A 500 internal error.
    pub fn internal_error() -> Step {
        Step::error(500, "api_error", "Internal server error")
    }

    /// A 429 rate limit.
    pub fn rate_limited() -> Step {
        Step::error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
    }

    pub fn error(status: u16, error_type: &str, message: &str) -> Step {
        Step::Error {
            status,
            error_type: error_type.to_owned(),
            message: message.to_owned(),
        }
    }

    /// `text` streamed in `chunks` pieces, `delay_ms` apart.
    pub fn slow(text: &str, chunks: u32, delay_ms: u64) -> Step {
        Step::Slow {
            text: text.to_owned(),
            chunks,
            delay_ms,
        }
    }

    /// `then`, after `ms` milliseconds of silence.
    pub fn delay(ms: u64, then: Step) -> Step {
        Step::Delay {
            ms,
            then: Box::new(then),
        }
    }

    /// `then`, once `parties` requests reached the barrier `name` (see [`Step::Barrier`]).
    pub fn barrier(name: &str, parties: u32, then: Step) -> Step {
        Step::Barrier {
            name: name.to_owned(),
            parties,
            then: Box::new(then),
        }
    }

    /// This step with its templates filled in from `conversation`.
    pub fn render(self, conversation: &Conversation) -> Step {
        match self {
            Step::Text(text) => Step::Text(render(&text, conversation)),
            Step::ToolUse { name, input } => Step::ToolUse {
                name,
                input: render_value(input, conversation),
            },
            Step::Error {
                status,
                error_type,
                message,
            } => Step::Error {
                status,
                error_type,
                message: render(&message, conversation),
            },
            Step::StreamError {
                error_type,
                message,
            } => Step::StreamError {
                error_type,
                message: render(&message, conversation),
            },
            Step::Slow {
                text,
                chunks,
                delay_ms,
            } => Step::Slow {
                text: render(&text, conversation),
                chunks,
                delay_ms,
            },
            Step::Delay { ms, then } => Step::Delay {
                ms,
                then: Box::new(then.render(conversation)),
            },
            Step::Barrier {
                name,
                parties,
                then,
            } => Step::Barrier {
                name,
                parties,
                then: Box::new(then.render(conversation)),
            },
            Step::Hang => Step::Hang,
        }
    }
}

/// A model's work session in a project, the way a person's Claude Code session goes: the
/// model knows only what the CLI tells it (the working directory in the system prompt), so
/// every path but CLAUDE.md's is relative, and each step is one tool call:
///
/// 0. `pwd`, 1. `ls -a`, 2. `git status --short --branch` (Bash);
/// 3. Read `{cwd}/CLAUDE.md` (the path built from the system prompt's working directory);
/// 4. Read `edit_file`, 5. Edit it (`old` to `new`), 6. Write `new_file`;
/// 7. run `test_command` (Bash), 8. report.
///
/// The report quotes what the steps printed: `pwd`, the test output and the `git status`.
/// Tool errors (a file missing, a refused write) are reported as they came, so a test that
/// checks the files on the host sees what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub edit_file: String,
    pub old: String,
    pub new: String,
    pub new_file: String,
    pub new_content: String,
    pub test_command: String,
}

impl Default for Session {
    /// A project with `README.md` containing `Status: draft` and a `test.sh`.
    fn default() -> Session {
        Session {
            edit_file: "README.md".to_owned(),
            old: "Status: draft".to_owned(),
            new: "Status: reviewed".to_owned(),
            new_file: "NOTES.md".to_owned(),
            new_content: "Notes from the agent's session.\n".to_owned(),
            test_command: "sh test.sh".to_owned(),
        }
    }
}

impl Session {
    /// The index of the report step (the number of model requests of a full session, minus 1).
    pub const REPORT_STEP: usize = 8;

    pub fn steps(&self) -> Vec<Step> {
        vec![
            Step::bash("pwd"),
            Step::bash("ls -a"),
            Step::bash("git status --short --branch"),
            Step::read("{{cwd}}/CLAUDE.md"),
            Step::read(&self.edit_file),
            Step::edit(&self.edit_file, &self.old, &self.new),
            Step::write(&self.new_file, &self.new_content),
            Step::bash(&self.test_command),
            Step::text(
                "Worked in {{tool_result.0}}.\nTests: {{tool_result.7}}\nGit: {{tool_result.2}}",
            ),
        ]
    }
}

/// Fills in a template: `{{prompt}}` (the user's latest prompt), `{{last_tool_result}}` (what
/// the last tool returned, empty if none), `{{tool_result.N}}` (what the Nth tool call after
/// the prompt returned, from 0), `{{cwd}}` (the working directory the system prompt names,
/// empty if none), `{{step}}` (the step index) and `{{model}}` (the requested model name).
/// Anything else is left as written.
pub fn render(template: &str, conversation: &Conversation) -> String {
    if !template.contains("{{") {
        return template.to_owned();
    }
    let mut text = template
        .replace("{{prompt}}", &conversation.prompt)
        .replace(
            "{{last_tool_result}}",
            conversation.last_tool_result.as_deref().unwrap_or_default(),
        )
        .replace("{{cwd}}", conversation.cwd.as_deref().unwrap_or_default())
        .replace("{{step}}", &conversation.step.to_string())
        .replace("{{model}}", &conversation.model);
    for (index, result) in conversation.tool_results.iter().enumerate() {
        text = text.replace(&format!("{{{{tool_result.{index}}}}}"), result.trim_end());
    }
    text
}

fn render_value(value: Value, conversation: &Conversation) -> Value {
    match value {
        Value::String(text) => Value::String(render(&text, conversation)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| render_value(v, conversation))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, render_value(v, conversation)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conversation(prompt: &str, step: usize, tool: Option<&str>) -> Conversation {
        Conversation {
            prompt: prompt.to_owned(),
            step,
            last_tool_result: tool.map(str::to_owned),
            model: "claude-test".to_owned(),
            cwd: Some("/src/app".to_owned()),
            tool_results: tool.map(str::to_owned).into_iter().collect(),
        }
    }

    fn check(script: &Script, prompt: &str, step: usize, expected: (Option<usize>, Step)) {
        let selection = script.select(&conversation(prompt, step, Some("TOOL")), |_, _| true);
        assert_eq!(
            (selection.rule, selection.step),
            expected,
            "prompt {prompt:?} step {step}"
        );
    }

    fn two_rules() -> Script {
        Script::new()
            .rule(
                Rule::contains("write the file")
                    .then(Step::write("/tmp/x", "{{prompt}}"))
                    .then(Step::text("wrote; tool said {{last_tool_result}}")),
            )
            .rule(Rule::any().then(Step::text("echo {{prompt}} at {{step}}")))
    }

    #[test]
    fn first_matching_rule_answers_by_step() {
        let script = two_rules();
        check(
            &script,
            "please write the file",
            0,
            (Some(0), Step::write("/tmp/x", "please write the file")),
        );
        check(
            &script,
            "please write the file",
            1,
            (Some(0), Step::text("wrote; tool said TOOL")),
        );
        check(
            &script,
            "hello",
            0,
            (Some(1), Step::text("echo hello at 0")),
        );
    }

    #[test]
    fn steps_past_the_end_and_no_match_answer_the_default() {
        let script = two_rules();
        check(
            &script,
            "write the file",
            2,
            (Some(0), Step::text(DEFAULT_ANSWER)),
        );
        check(&Script::new(), "x", 0, (None, Step::text(DEFAULT_ANSWER)));
        let only_specific = Script::new().rule(Rule::contains("a").then(Step::text("A")));
        check(&only_specific, "b", 0, (None, Step::text(DEFAULT_ANSWER)));
    }

    #[test]
    fn matchers() {
        let cases = [
            (Matcher::Any, "", true),
            (Matcher::contains("b"), "abc", true),
            (Matcher::contains("B"), "abc", false),
            (Matcher::starts_with("ab"), "  abc", true),
            (Matcher::starts_with("bc"), "abc", false),
            (Matcher::equals("abc"), " abc\n", true),
            (Matcher::equals("ab"), "abc", false),
            (
                Matcher::All(vec![Matcher::contains("a"), Matcher::contains("c")]),
                "abc",
                true,
            ),
            (
                Matcher::All(vec![Matcher::contains("a"), Matcher::contains("z")]),
                "abc",
                false,
            ),
            (
                Matcher::AnyOf(vec![Matcher::contains("z"), Matcher::contains("c")]),
                "abc",
                true,
            ),
            (Matcher::Not(Box::new(Matcher::contains("z"))), "abc", true),
        ];
        for (matcher, prompt, expected) in cases {
            assert_eq!(
                matcher.matches(prompt),
                expected,
                "{matcher:?} on {prompt:?}"
            );
        }
    }

    #[test]
    fn claim_can_skip_an_exhausted_rule() {
        let script = Script::new()
            .rule(Rule::any().then(Step::overloaded()).times(1))
            .rule(Rule::any().then(Step::text("fine")));
        let selection = script.select(&conversation("x", 0, None), |index, _| index != 0);
        assert_eq!(selection.rule, Some(1));
        assert_eq!(selection.step, Step::text("fine"));
    }

    #[test]
    fn templates_fill_tool_input_recursively() {
        let step = Step::tool_use(
            "mcp__loop__schedule_task",
            json!({"a": ["{{prompt}}", 1], "b": {"c": "{{model}}"}}),
        );
        assert_eq!(
            step.render(&conversation("hi", 0, None)),
            Step::tool_use(
                "mcp__loop__schedule_task",
                json!({"a": ["hi", 1], "b": {"c": "claude-test"}})
            )
        );
        assert_eq!(
            render("{{last_tool_result}}|{{other}}", &conversation("", 0, None)),
            "|{{other}}"
        );
        assert_eq!(
            render(
                "{{cwd}}/CLAUDE.md {{tool_result.0}}|{{tool_result.1}}",
                &conversation("", 1, Some("/x\n"))
            ),
            "/src/app/CLAUDE.md /x|{{tool_result.1}}"
        );
    }

    #[test]
    fn usage_comes_from_the_rule_or_the_script() {
        let script = Script::new()
            .with_usage(100, 7)
            .rule(
                Rule::contains("big")
                    .then(Step::text("x"))
                    .with_usage(5000, 9),
            )
            .rule(Rule::any().then(Step::text("y")));
        let big = script.select(&conversation("big", 0, None), |_, _| true);
        let small = script.select(&conversation("small", 0, None), |_, _| true);
        assert_eq!(
            big.usage,
            Usage {
                input_tokens: 5000,
                output_tokens: 9
            }
        );
        assert_eq!(
            small.usage,
            Usage {
                input_tokens: 100,
                output_tokens: 7
            }
        );
    }

    #[test]
    fn scripts_load_from_json() {
        let script: Script = serde_json::from_value(json!({
            "rules": [
                {"when": {"contains": "run"}, "steps": [
                    {"tool_use": {"name": "Bash", "input": {"command": "echo hi"}}},
                    {"text": "it printed {{last_tool_result}}"}
                ]},
                {"when": {"not": {"any_of": [{"equals": "a"}, "any"]}}, "times": 2, "steps": [
                    {"error": {"status": 529, "error_type": "overloaded_error", "message": "Overloaded"}},
                    {"slow": {"text": "abc", "chunks": 3, "delay_ms": 10}},
                    {"delay": {"ms": 5, "then": "hang"}},
                    {"stream_error": {"error_type": "overloaded_error", "message": "Overloaded"}}
                ]},
                {"steps": [{"text": "you said {{prompt}}"}]}
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2}
        }))
        .expect("valid script");
        assert_eq!(script.rules.len(), 3);
        assert_eq!(script.rules[1].times, Some(2));
        assert_eq!(script.rules[2].when, Matcher::Any);
        let round_trip: Script =
            serde_json::from_value(serde_json::to_value(&script).expect("serialize"))
                .expect("parse");
        assert_eq!(round_trip, script);

        let typo = serde_json::from_value::<Script>(json!({"rulez": []}));
        assert!(typo.is_err(), "unknown keys must be rejected");
    }
}
