//! The MCP server's HTTP client for the host API: the container's token, the task routes, and
//! error texts an agent can act on.

use loop_wire::routes;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use loop_wire::api::{
    CreateTask, ErrorBody, ForgetMemory, Forgotten, GitPublish, GitPublished, IndexMemory,
    MemoryInfo, Reindexed, SaveMemory, SearchMemory, SendMessage, TaskInfo, UpdateTask,
};

/// How long one API call may take; the daemon answers task calls from its database at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a push request may wait: a person decides, then the push and the forge's API run.
/// The daemon ends the wait before this (the approval's own timeout, or the turn's end).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why a call failed, worded for the agent (it sees this text as the tool's error).
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error(
        "loop mcp has no API token (LOOP_API_TOKEN is not set in this container), so it cannot reach the loop daemon"
    )]
    NoToken,
    #[error("cannot reach the loop daemon at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("refused: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("the loop daemon rejected this container's token ({0}); the turn may have ended")]
    Unauthorized(String),
    #[error("the loop daemon answered {status}: {message}")]
    Other { status: u16, message: String },
    #[error("unexpected answer from the loop daemon: {0}")]
    Decode(String),
}

/// A client of the host API's container routes.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(api_url: &str, token: Option<String>) -> ApiClient {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The daemon is on the Docker host; a proxy in the container's environment must
            // not carry the token elsewhere.
            .no_proxy()
            .build()
            .unwrap_or_default();
        ApiClient {
            http,
            base: api_url.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.trim().is_empty()),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiCallError> {
        self.call_within(method, path, body, REQUEST_TIMEOUT).await
    }

    async fn call_within<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ApiCallError> {
        let token = self.token.as_deref().ok_or(ApiCallError::NoToken)?;
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| ApiCallError::Unreachable {
                url: url.clone(),
                reason: err.to_string(),
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let text = if text.trim().is_empty() {
                "null"
            } else {
                &text
            };
            return serde_json::from_str(text).map_err(|err| ApiCallError::Decode(err.to_string()));
        }
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|body| body.error)
            .unwrap_or(text);
        Err(match status {
            StatusCode::BAD_REQUEST => ApiCallError::BadRequest(message),
            StatusCode::NOT_FOUND => ApiCallError::NotFound(message),
            StatusCode::FORBIDDEN => ApiCallError::Forbidden(message),
            StatusCode::UNAUTHORIZED => ApiCallError::Unauthorized(message),
            other => ApiCallError::Other {
                status: other.as_u16(),
                message,
            },
        })
    }

    pub async fn create_task(&self, request: &CreateTask) -> Result<TaskInfo, ApiCallError> {
        self.call(Method::POST, routes::TASKS, Some(request)).await
    }

    pub async fn list_tasks(&self) -> Result<Vec<TaskInfo>, ApiCallError> {
        self.call::<(), _>(Method::GET, routes::TASKS, None).await
    }

    pub async fn show_task(&self, id: &str) -> Result<TaskInfo, ApiCallError> {
        self.call::<(), _>(Method::GET, &task_path(id), None).await
    }

    pub async fn cancel_task(&self, id: &str) -> Result<TaskInfo, ApiCallError> {
        self.call::<(), _>(Method::DELETE, &task_path(id), None)
            .await
    }

    pub async fn update_task(
        &self,
        id: &str,
        request: &UpdateTask,
    ) -> Result<TaskInfo, ApiCallError> {
        self.call(Method::PATCH, &task_path(id), Some(request))
            .await
    }

    pub async fn send_message(&self, content: &str) -> Result<(), ApiCallError> {
        let body = SendMessage {
            content: content.to_owned(),
        };
        self.call::<_, serde_json::Value>(Method::POST, routes::MESSAGES, Some(&body))
            .await
            .map(|_| ())
    }

    /// Asks for the thread's branch to be pushed (`pull_request`: and a pull request opened);
    /// waits while a person decides.
    pub async fn publish_branch(
        &self,
        pull_request: bool,
        title: Option<String>,
    ) -> Result<GitPublished, ApiCallError> {
        let route = if pull_request {
            routes::GIT_PULL_REQUEST
        } else {
            routes::GIT_PUSH
        };
        self.call_within(
            Method::POST,
            route,
            Some(&GitPublish { title }),
            PUBLISH_TIMEOUT,
        )
        .await
    }

    pub async fn memory_save(&self, request: &SaveMemory) -> Result<MemoryInfo, ApiCallError> {
        self.call(Method::POST, routes::MEMORY_SAVE, Some(request))
            .await
    }

    pub async fn memory_search(
        &self,
        request: &SearchMemory,
    ) -> Result<Vec<MemoryInfo>, ApiCallError> {
        self.call(Method::POST, routes::MEMORY_SEARCH, Some(request))
            .await
    }

    pub async fn memory_forget(&self, id: &str) -> Result<Forgotten, ApiCallError> {
        let body = ForgetMemory {
            id: id.to_owned(),
            channel: None,
        };
        self.call(Method::POST, routes::MEMORY_FORGET, Some(&body))
            .await
    }

    pub async fn memory_index(&self) -> Result<Reindexed, ApiCallError> {
        self.call(
            Method::POST,
            routes::MEMORY_INDEX,
            Some(&IndexMemory::default()),
        )
        .await
    }
}

/// `/api/tasks/{id}` with the id made safe for a path (ids are hex, but the agent may send
/// anything).
fn task_path(id: &str) -> String {
    let safe: String = id
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    routes::task(&safe)
}
