//! Semantic memory over HTTP, for agents (`loop mcp` with the container's token) and local
//! clients (the admin token, naming a channel).
//!
//! - `POST /api/memory/save`, `POST /api/memory/search`, `POST /api/memory/forget`,
//!   `POST /api/memory/index` (re-index the channel's project docs).
//!
//! A container sees the memories of its channel (and the parent channel of its thread), of its
//! channel's project directory, and global ones; it can forget only those. Without
//! `memory.enabled` (or without a loadable model) every route answers 503.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use loop_adapter::ChannelKey;

use super::auth::bearer;
use super::state::{ApiError, ApiState, parse_body};
use crate::gate::tokens::tokens_match;
use crate::memory::{Hit, Memory, MemoryError, SOURCE_AGENT};
use loop_store::{MemoryRecord, MemoryScope};
use loop_wire::api::{
    ForgetMemory, Forgotten, IndexMemory, MemoryInfo, Reindexed, SaveMemory, SearchMemory,
};

/// Most results one search returns.
const MAX_TOP_K: usize = 50;
/// Largest memory the agent may save, in characters.
const MAX_CONTENT_CHARS: usize = 20_000;

impl From<MemoryError> for ApiError {
    fn from(err: MemoryError) -> Self {
        match err {
            MemoryError::Store(err) => err.into(),
            other => {
                tracing::error!(error = %other, "memory error in the API");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

fn memory(state: &ApiState) -> Result<&Memory, ApiError> {
    state.orchestrator.memory().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory is off in this loop (set memory.enabled = true; the daemon log says why a model did not load)",
        )
    })
}

/// The channel a call acts for: a container's own, or the one an admin names.
fn channel(
    state: &ApiState,
    headers: &HeaderMap,
    requested: Option<&str>,
) -> Result<ChannelKey, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (containers get LOOP_API_TOKEN)",
        ));
    };
    let key = if tokens_match(token, &state.admin_token) {
        requested
            .ok_or_else(|| ApiError::bad_request("channel is required with the admin token"))?
            .to_owned()
    } else {
        let identity = state
            .container_tokens()
            .identify(token)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "wrong or expired token"))?;
        if requested.is_some_and(|r| r != identity.channel_key) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token may only use the memory of its own channel",
            ));
        }
        identity.channel_key
    };
    key.parse::<ChannelKey>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid channel key {key:?} (expected platform:channel[:thread])"
        ))
    })
}

/// The scopes a channel sees: itself, its parent (for a thread), its project, global.
async fn visible_scopes(memory: &Memory, key: &ChannelKey) -> Result<Vec<MemoryScope>, ApiError> {
    let work_dir = memory.store().channel_work_dir(key).await?;
    Ok(crate::memory::visible_scopes(key, work_dir.as_deref()))
}

pub fn memory_info(record: &MemoryRecord, score: Option<f32>) -> MemoryInfo {
    MemoryInfo {
        id: record.id.clone(),
        scope: record.scope.kind().to_owned(),
        scope_key: record.scope.key().to_owned(),
        source: record.source.clone(),
        source_ref: record.source_ref.clone(),
        content: record.content.clone(),
        score,
        created_at: record.created_at,
    }
}

pub(super) async fn save(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<MemoryInfo>), ApiError> {
    let request: SaveMemory = parse_body(&body)?;
    let key = channel(&state, &headers, request.channel.as_deref())?;
    let memory = memory(&state)?;
    let content = request.content.trim();
    if content.is_empty() {
        return Err(ApiError::bad_request("content is empty"));
    }
    if content.chars().count() > MAX_CONTENT_CHARS {
        return Err(ApiError::bad_request(format!(
            "content is longer than {MAX_CONTENT_CHARS} characters: save a summary"
        )));
    }
    let scope = match request.scope.as_deref().unwrap_or("channel") {
        "channel" => MemoryScope::Channel(key.to_string()),
        "global" => MemoryScope::Global,
        "project" => match memory.store().channel_work_dir(&key).await? {
            Some(dir) => MemoryScope::Project(dir),
            None => {
                return Err(ApiError::bad_request(
                    "this channel has no project directory: use scope channel or global",
                ));
            }
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown scope {other:?} (channel, project or global)"
            )));
        }
    };
    let record = memory
        .save(scope, SOURCE_AGENT, request.source_ref, content)
        .await?;
    tracing::info!(memory = %record.id, channel = %key, scope = %record.scope, "memory saved");
    Ok((StatusCode::CREATED, Json(memory_info(&record, None))))
}

pub(super) async fn search(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Vec<MemoryInfo>>, ApiError> {
    let request: SearchMemory = parse_body(&body)?;
    let key = channel(&state, &headers, request.channel.as_deref())?;
    let memory = memory(&state)?;
    if request.query.trim().is_empty() {
        return Err(ApiError::bad_request("query is empty"));
    }
    let top_k = request.top_k.unwrap_or(5).clamp(1, MAX_TOP_K);
    let scopes = visible_scopes(memory, &key).await?;
    let hits: Vec<Hit> = memory.search(&scopes, &request.query, top_k).await?;
    Ok(Json(
        hits.iter()
            .map(|h| memory_info(&h.memory, Some(h.score)))
            .collect(),
    ))
}

pub(super) async fn forget(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Forgotten>, ApiError> {
    let request: ForgetMemory = parse_body(&body)?;
    let key = channel(&state, &headers, request.channel.as_deref())?;
    let memory = memory(&state)?;
    let scopes = visible_scopes(memory, &key).await?;
    let forgotten = memory.forget(request.id.trim(), &scopes).await?;
    if !forgotten {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no memory {} visible from this channel", request.id.trim()),
        ));
    }
    Ok(Json(Forgotten { forgotten }))
}

pub(super) async fn index(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Reindexed>, ApiError> {
    let request: IndexMemory = if body.is_empty() {
        IndexMemory::default()
    } else {
        parse_body(&body)?
    };
    let key = channel(&state, &headers, request.channel.as_deref())?;
    let memory = memory(&state)?;
    let Some(dir) = memory.store().channel_work_dir(&key).await? else {
        return Err(ApiError::bad_request(
            "this channel has no project directory to index",
        ));
    };
    let report = memory.reindex_docs(std::path::Path::new(&dir)).await?;
    Ok(Json(Reindexed {
        files: report.files,
        chunks: report.chunks,
        embedded: report.embedded,
        unchanged: report.unchanged,
        removed: report.removed,
        skipped: report.skipped,
    }))
}
