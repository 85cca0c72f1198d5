//! Scheduled tasks over HTTP, for agents (`loop mcp` in the container, with the container's
//! token) and for local clients (the admin token).
//!
//! - `POST /api/tasks`, `GET /api/tasks[?channel=KEY]`, `GET|PATCH|DELETE /api/tasks/{id}`.
//! - `POST /api/messages` (container token only): post a message in the container's channel.
//!
//! A container token acts on its own channel only: another channel's task is a 403, whether
//! it exists or not is not revealed beyond that. Invalid input is a 400 whose reason is meant
//! for the agent to read and correct; nothing is stored then.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{TimeZone, Utc};
use loop_adapter::ChannelKey;
use serde::Deserialize;

use super::auth::bearer;
use super::state::{ApiError, ApiState, parse_body};
use crate::gate::tokens::{ContainerIdentity, tokens_match};
use crate::scheduler::input::{
    CreateTaskInput, TaskInputError, UpdateTaskInput, plan_new_task, plan_task_change,
};
use crate::scheduler::{Clock, SchedulerSettings, SystemClock, parse_timezone};
use loop_store::TaskRecord;
use loop_wire::api::{CreateTask, SendMessage, TaskInfo, UpdateTask};

/// Who is calling.
pub(super) enum Caller {
    /// A local client: any channel.
    Admin,
    /// An agent's container: its own channel only.
    Container(ContainerIdentity),
}

pub(super) fn caller(state: &ApiState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (containers get LOOP_API_TOKEN)",
        ));
    };
    if tokens_match(token, &state.admin_token) {
        return Ok(Caller::Admin);
    }
    state
        .container_tokens()
        .identify(token)
        .map(Caller::Container)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "wrong or expired token"))
}

impl Caller {
    /// The channel this caller acts on: a container's own, or the one an admin names.
    fn channel(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        match (self, requested) {
            (Caller::Container(identity), Some(channel)) if channel != identity.channel_key => {
                Err(forbidden())
            }
            (Caller::Container(identity), _) => Ok(Some(identity.channel_key.clone())),
            (Caller::Admin, Some(channel)) => {
                channel.parse::<ChannelKey>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid channel key {channel:?} (expected platform:channel[:thread])"
                    ))
                })?;
                Ok(Some(channel.to_owned()))
            }
            (Caller::Admin, None) => Ok(None),
        }
    }

    fn may_touch(&self, task: &TaskRecord) -> Result<(), ApiError> {
        match self {
            Caller::Container(identity) if identity.channel_key != task.channel_key => {
                Err(forbidden())
            }
            _ => Ok(()),
        }
    }
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "this token may only manage the tasks of its own channel",
    )
}

fn invalid(err: TaskInputError) -> ApiError {
    ApiError::bad_request(err.to_string())
}

/// The scheduler settings the daemon runs with (default zone, shortest interval).
fn settings(state: &ApiState) -> SchedulerSettings {
    let host = loop_runner::spec::detect_timezone(std::env::var("TZ").ok().as_deref());
    SchedulerSettings::from_config(state.orchestrator.config(), &host)
}

/// A task for the wire, with readable times in its zone.
pub fn task_info(task: &TaskRecord) -> TaskInfo {
    let tz = parse_timezone(&task.timezone).unwrap_or(chrono_tz::UTC);
    let readable = |ms: Option<i64>| {
        ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .map(|t| t.with_timezone(&tz).to_rfc3339())
    };
    TaskInfo {
        id: task.id.clone(),
        channel: task.channel_key.clone(),
        name: task.name.clone(),
        kind: task.kind.clone(),
        schedule: task.schedule.clone(),
        prompt: task.prompt.clone(),
        timezone: task.timezone.clone(),
        enabled: task.enabled,
        next_run_at: task.next_run_at,
        next_run: readable(task.next_run_at),
        last_run_at: task.last_run_at,
        last_run: readable(task.last_run_at),
    }
}

pub(super) async fn create_task(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TaskInfo>), ApiError> {
    let caller = caller(&state, &headers)?;
    let request: CreateTask = parse_body(&body)?;
    let channel = caller
        .channel(request.channel.as_deref())?
        .ok_or_else(|| ApiError::bad_request("channel is required with the admin token"))?;
    let settings = settings(&state);
    let zone = crate::scheduler::channel_timezone(
        &state.store,
        state.orchestrator.config(),
        &channel,
        &settings,
    )
    .await;
    let input = CreateTaskInput {
        schedule: request.schedule,
        kind: request.kind,
        prompt: request.prompt,
        name: request.name,
        timezone: request.timezone,
        // A container's tasks are created by whoever asked for the turn it serves: the daemon
        // knows, the container is not trusted to say.
        created_by: match &caller {
            Caller::Container(identity) => state.orchestrator.running_author(&identity.channel_key),
            Caller::Admin => request.author,
        },
    };
    let new = plan_new_task(
        &channel,
        &input,
        SystemClock.now(),
        zone,
        settings.min_interval,
    )
    .map_err(invalid)?;
    let task = state.store.create_task(new).await?;
    tracing::info!(task = %task.id, channel = %task.channel_key, kind = %task.kind, schedule = %task.schedule, "task scheduled");
    Ok((StatusCode::CREATED, Json(task_info(&task))))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    channel: Option<String>,
}

pub(super) async fn list_tasks(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<TaskInfo>>, ApiError> {
    let caller = caller(&state, &headers)?;
    let channel = caller.channel(query.channel.as_deref())?;
    let tasks = state.store.tasks(channel.as_deref()).await?;
    Ok(Json(tasks.iter().map(task_info).collect()))
}

/// The task, if this caller may see it.
async fn visible_task(state: &ApiState, caller: &Caller, id: &str) -> Result<TaskRecord, ApiError> {
    let task = state.store.task(id).await?;
    caller.may_touch(&task)?;
    Ok(task)
}

pub(super) async fn show_task(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, ApiError> {
    let caller = caller(&state, &headers)?;
    let task = visible_task(&state, &caller, &id).await?;
    Ok(Json(task_info(&task)))
}

pub(super) async fn cancel_task(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, ApiError> {
    let caller = caller(&state, &headers)?;
    let task = visible_task(&state, &caller, &id).await?;
    state.store.delete_task(&task.id).await?;
    tracing::info!(task = %task.id, channel = %task.channel_key, "task cancelled");
    Ok(Json(task_info(&task)))
}

pub(super) async fn update_task(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TaskInfo>, ApiError> {
    let caller = caller(&state, &headers)?;
    let request: UpdateTask = parse_body(&body)?;
    let task = visible_task(&state, &caller, &id).await?;
    let input = UpdateTaskInput {
        enabled: request.enabled,
        schedule: request.schedule,
        kind: request.kind,
        prompt: request.prompt,
        name: request.name,
    };
    let change = plan_task_change(
        &task,
        &input,
        SystemClock.now(),
        settings(&state).min_interval,
    )
    .map_err(invalid)?;
    let task = state.store.update_task(&task.id, change).await?;
    tracing::info!(task = %task.id, enabled = task.enabled, schedule = %task.schedule, "task updated");
    Ok(Json(task_info(&task)))
}

pub(super) async fn send_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let Caller::Container(identity) = caller(&state, &headers)? else {
        return Err(ApiError::bad_request(
            "POST /api/messages posts in a container's own channel; local clients use /api/local/messages",
        ));
    };
    let request: SendMessage = parse_body(&body)?;
    if request.content.trim().is_empty() {
        return Err(ApiError::bad_request("content is empty"));
    }
    state
        .store
        .enqueue_notice(&identity.channel_key, &request.content)
        .await?;
    state.orchestrator.deliver_soon();
    Ok(StatusCode::ACCEPTED)
}
