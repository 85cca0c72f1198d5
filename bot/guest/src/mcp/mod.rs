//! `loop mcp`: the built-in `loop` MCP server that runs inside every agent container (started
//! by the CLI from the per-channel MCP config, see `loop_runner::spec::mcp_config`), over stdio.
//!
//! Its tools let an agent manage its own recurring work: `schedule_task`, `list_tasks`,
//! `show_task`, `cancel_task`, `update_task`, and the Go Loop's names `toggle_task`,
//! `edit_task`, `send_message`. Every tool is a call to the host API with the container's
//! token (`LOOP_API_TOKEN`), which scopes it to the container's channel. A failed call comes
//! back as a tool error whose text says what to fix, so the agent can try again.
//!
//! stdout is the protocol: the binary sends logs to `--log` (else stderr), never to stdout.

mod client;
mod memory;

use std::path::PathBuf;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

pub use client::{ApiCallError, ApiClient};

use loop_wire::api::{CreateTask, TaskInfo, UpdateTask};

/// The environment variable holding the container's API token.
pub use loop_wire::container::env::API_TOKEN as API_TOKEN_ENV;

/// What `loop mcp` is started with.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// The channel's slug (for logs; the token decides the channel).
    pub channel_id: String,
    /// The host API as the container reaches it.
    pub api_url: String,
    /// Who asked for this turn, recorded as the creator of tasks.
    pub author_id: Option<String>,
    /// Memory tools (`memory_save`, `memory_search`, `memory_forget`, `search_memory`,
    /// `index_memory`); the daemon passes `--memory` when `memory.enabled`.
    pub memory: bool,
    pub log: Option<PathBuf>,
    /// The container's token, from [`API_TOKEN_ENV`].
    pub token: Option<String>,
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("mcp server failed to start: {0}")]
    Start(String),
    #[error("mcp server stopped: {0}")]
    Stopped(String),
}

/// Serves MCP on stdin/stdout until the client goes away.
pub async fn serve(options: McpOptions) -> Result<(), McpError> {
    tracing::info!(
        channel = %options.channel_id,
        api_url = %options.api_url,
        has_token = options.token.is_some(),
        memory = options.memory,
        "loop mcp starting"
    );
    let server = LoopMcp::new(&options);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|err| McpError::Start(err.to_string()))?;
    let reason = running
        .waiting()
        .await
        .map_err(|err| McpError::Stopped(err.to_string()))?;
    tracing::info!(?reason, "loop mcp stopped");
    Ok(())
}

/// `schedule_task`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ScheduleTaskParams {
    /// When to run: a cron expression (5 fields `min hour day month weekday`, e.g. `0 9 * * 1-5`,
    /// or 6 with seconds first), an interval (`every 2h`, `30m`), or a one-shot time (`in 10m`,
    /// an RFC 3339 time, or `2026-01-02 09:00` in the channel's time zone).
    pub schedule: String,
    /// `cron`, `interval` or `once`. Optional: guessed from the schedule.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// What you will be asked when the task runs. Write it so it makes sense on its own.
    pub prompt: String,
    /// A short name for the task.
    #[serde(default)]
    pub name: Option<String>,
    /// IANA time zone for the schedule's wall-clock times; the channel's default when absent.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `open_pull_request`'s arguments.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct PullRequestParams {
    /// The pull request's title; the first commit's subject when left out.
    #[serde(default)]
    pub title: Option<String>,
}

/// A task id.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskIdParams {
    /// The task id (from `schedule_task` or `list_tasks`).
    #[serde(deserialize_with = "string_or_number")]
    #[schemars(with = "String")]
    pub id: String,
}

/// `update_task`'s (and `edit_task`'s) arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UpdateTaskParams {
    /// The task id.
    #[serde(deserialize_with = "string_or_number")]
    #[schemars(with = "String")]
    pub id: String,
    /// true to enable, false to disable (pause) the task.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new schedule (same forms as `schedule_task`); the next run is computed from now.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `cron`, `interval` or `once`, with a new schedule.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A new prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A new name (empty clears it).
    #[serde(default)]
    pub name: Option<String>,
}

/// `send_message`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SendMessageParams {
    /// The message to post in this channel now (the turn's final answer is posted anyway).
    pub content: String,
}

/// Agents (and the Go Loop's clients) send ids as strings or numbers.
fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => Ok(text),
        serde_json::Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a task id, got {other}"
        ))),
    }
}

/// The server: tools over the host API.
#[derive(Clone)]
pub struct LoopMcp {
    api: ApiClient,
    author_id: Option<String>,
    #[allow(dead_code, reason = "read by the code #[tool_handler] generates")]
    tool_router: ToolRouter<LoopMcp>,
}

/// A tool's text answer.
fn ok(text: String) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

/// A failed call as a tool error the agent reads (not a protocol error, which clients may
/// show as a crash of the server).
fn failed(action: &str, err: &ApiCallError) -> Result<CallToolResult, ErrorData> {
    tracing::warn!(action, error = %err, "tool failed");
    Ok(CallToolResult::error(vec![ContentBlock::text(format!(
        "{action} failed: {err}"
    ))]))
}

fn describe(task: &TaskInfo) -> String {
    let name = task
        .name
        .as_deref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default();
    let state = if task.enabled { "enabled" } else { "disabled" };
    let next = task.next_run.as_deref().unwrap_or("none");
    format!(
        "task {}{name}: {} `{}` ({}), {state}, next run {next}; prompt: {}",
        task.id, task.kind, task.schedule, task.timezone, task.prompt
    )
}

fn with_json(summary: String, value: &impl serde::Serialize) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(json) => format!("{summary}\n{json}"),
        Err(_) => summary,
    }
}

fn require_id(id: &str) -> Option<Result<CallToolResult, ErrorData>> {
    id.trim().is_empty().then(|| {
        Ok(CallToolResult::error(vec![ContentBlock::text(
            "id is required (see list_tasks)".to_owned(),
        )]))
    })
}

#[tool_router]
impl LoopMcp {
    pub fn new(options: &McpOptions) -> LoopMcp {
        LoopMcp {
            api: ApiClient::new(&options.api_url, options.token.clone()),
            author_id: options.author_id.clone(),
            tool_router: {
                let mut router = LoopMcp::tool_router();
                if options.memory {
                    router.merge(LoopMcp::memory_router());
                }
                router
            },
        }
    }

    #[tool(
        description = "Schedule a prompt to run later in this channel: on a cron schedule, at an interval, or once. The run's answer is posted in the channel like any other answer."
    )]
    async fn schedule_task(
        &self,
        Parameters(params): Parameters<ScheduleTaskParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = CreateTask {
            schedule: params.schedule,
            kind: params.kind,
            prompt: params.prompt,
            name: params.name,
            timezone: params.timezone,
            channel: None,
            author: self.author_id.clone(),
        };
        match self.api.create_task(&request).await {
            Ok(task) => {
                tracing::info!(task = %task.id, "task scheduled");
                ok(with_json(format!("Scheduled {}", describe(&task)), &task))
            }
            Err(err) => failed("schedule_task", &err),
        }
    }

    #[tool(
        description = "Push this thread's git branch to the repository's remote. A person decides in the chat first (pushing is theirs to decide), so this waits for their answer; loop pushes with credentials you never see. Commit your work first: loop also commits what is left at the end of the turn."
    )]
    async fn push_branch(&self) -> Result<CallToolResult, ErrorData> {
        self.publish(false, None).await
    }

    #[tool(
        description = "Push this thread's git branch and open a pull request (GitLab: merge request) against its base branch. A person decides in the chat first, so this waits for their answer. The title defaults to the first commit's subject."
    )]
    async fn open_pull_request(
        &self,
        Parameters(params): Parameters<PullRequestParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.publish(true, params.title).await
    }

    #[tool(description = "List this channel's scheduled tasks.")]
    async fn list_tasks(&self) -> Result<CallToolResult, ErrorData> {
        match self.api.list_tasks().await {
            Ok(tasks) if tasks.is_empty() => ok("No scheduled tasks in this channel.".to_owned()),
            Ok(tasks) => {
                let lines: Vec<String> = tasks.iter().map(describe).collect();
                ok(with_json(lines.join("\n"), &tasks))
            }
            Err(err) => failed("list_tasks", &err),
        }
    }

    #[tool(description = "Show one scheduled task.")]
    async fn show_task(
        &self,
        Parameters(params): Parameters<TaskIdParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(missing) = require_id(&params.id) {
            return missing;
        }
        match self.api.show_task(&params.id).await {
            Ok(task) => ok(with_json(describe(&task), &task)),
            Err(err) => failed("show_task", &err),
        }
    }

    #[tool(description = "Cancel (delete) a scheduled task.")]
    async fn cancel_task(
        &self,
        Parameters(params): Parameters<TaskIdParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(missing) = require_id(&params.id) {
            return missing;
        }
        match self.api.cancel_task(&params.id).await {
            Ok(task) => ok(format!("Cancelled {}", describe(&task))),
            Err(err) => failed("cancel_task", &err),
        }
    }

    #[tool(
        description = "Change a scheduled task: enable or disable it, give it a new schedule, prompt or name."
    )]
    async fn update_task(
        &self,
        Parameters(params): Parameters<UpdateTaskParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.update("update_task", params).await
    }

    #[tool(description = "Change a scheduled task (the same as update_task).")]
    async fn edit_task(
        &self,
        Parameters(params): Parameters<UpdateTaskParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.update("edit_task", params).await
    }

    #[tool(description = "Enable a disabled task, or disable an enabled one.")]
    async fn toggle_task(
        &self,
        Parameters(params): Parameters<TaskIdParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(missing) = require_id(&params.id) {
            return missing;
        }
        let task = match self.api.show_task(&params.id).await {
            Ok(task) => task,
            Err(err) => return failed("toggle_task", &err),
        };
        let request = UpdateTask {
            enabled: Some(!task.enabled),
            ..Default::default()
        };
        match self.api.update_task(&task.id, &request).await {
            Ok(task) => ok(format!("Updated {}", describe(&task))),
            Err(err) => failed("toggle_task", &err),
        }
    }

    #[tool(description = "Post a message in this channel now, before the turn's final answer.")]
    async fn send_message(
        &self,
        Parameters(params): Parameters<SendMessageParams>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.api.send_message(&params.content).await {
            Ok(()) => ok("Posted.".to_owned()),
            Err(err) => failed("send_message", &err),
        }
    }
}

impl LoopMcp {
    async fn publish(
        &self,
        pull_request: bool,
        title: Option<String>,
    ) -> Result<CallToolResult, ErrorData> {
        let action = if pull_request {
            "open_pull_request"
        } else {
            "push_branch"
        };
        match self.api.publish_branch(pull_request, title).await {
            Ok(published) if published.done => ok(published.text),
            Ok(published) => Ok(CallToolResult::error(vec![ContentBlock::text(
                published.text,
            )])),
            Err(err) => failed(action, &err),
        }
    }

    async fn update(
        &self,
        action: &str,
        params: UpdateTaskParams,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(missing) = require_id(&params.id) {
            return missing;
        }
        let request = UpdateTask {
            enabled: params.enabled,
            schedule: params.schedule,
            kind: params.kind,
            prompt: params.prompt,
            name: params.name,
        };
        match self.api.update_task(&params.id, &request).await {
            Ok(task) => ok(with_json(format!("Updated {}", describe(&task)), &task)),
            Err(err) => failed(action, &err),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LoopMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("loop", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "loop's own tools: schedule prompts to run later in this channel (cron, interval or once), list, change and cancel them, post messages, and ask a person to push this thread's git branch or open its pull request.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_loop_tool_names_are_all_there() {
        let router = LoopMcp::tool_router();
        let mut names: Vec<String> = router
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cancel_task",
                "edit_task",
                "list_tasks",
                "open_pull_request",
                "push_branch",
                "schedule_task",
                "send_message",
                "show_task",
                "toggle_task",
                "update_task",
            ]
        );
        // `type` is the Go Loop's argument name (not the Rust field's).
        let schedule = router.get("schedule_task").expect("schedule_task");
        let properties = schedule.input_schema.get("properties").expect("properties");
        assert!(properties.get("type").is_some(), "{properties:?}");
        assert!(properties.get("kind").is_none());
    }

    #[test]
    fn ids_may_be_strings_or_numbers() {
        let id: TaskIdParams = serde_json::from_value(serde_json::json!({"id": 42})).expect("n");
        assert_eq!(id.id, "42");
        let id: TaskIdParams =
            serde_json::from_value(serde_json::json!({"id": "ab12cd34"})).expect("s");
        assert_eq!(id.id, "ab12cd34");
        assert!(serde_json::from_value::<TaskIdParams>(serde_json::json!({"id": null})).is_err());
    }

    #[test]
    fn memory_tools_only_with_memory() {
        let mut options = McpOptions {
            channel_id: "general".to_owned(),
            api_url: "http://127.0.0.1:1".to_owned(),
            author_id: None,
            memory: false,
            log: None,
            token: None,
        };
        let names = |server: &LoopMcp| -> Vec<String> {
            server
                .tool_router
                .list_all()
                .into_iter()
                .map(|t| t.name.to_string())
                .collect()
        };
        assert!(
            !names(&LoopMcp::new(&options))
                .iter()
                .any(|n| n.contains("memory"))
        );
        options.memory = true;
        let with = names(&LoopMcp::new(&options));
        for tool in [
            "memory_save",
            "memory_search",
            "memory_forget",
            "search_memory",
            "index_memory",
        ] {
            assert!(with.iter().any(|n| n == tool), "{tool} missing: {with:?}");
        }
    }

    #[tokio::test]
    async fn without_a_token_every_call_says_why() {
        let client = ApiClient::new("http://127.0.0.1:1", None);
        let err = client.list_tasks().await.expect_err("no token");
        assert!(err.to_string().contains("LOOP_API_TOKEN"), "{err}");
    }
}
