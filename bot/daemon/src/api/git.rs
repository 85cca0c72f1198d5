//! `POST /api/git/push` and `POST /api/git/pull-request` (container token): the agent asks,
//! through its MCP tools, for its thread's branch to leave the host. Pushing is a person's
//! decision: with `git.agent_publish: approve` (the default) the request is held as a gate
//! approval in the thread, through the same workflow, audit and rate limits as a held
//! syscall; the push itself runs in the daemon with credentials the agent never sees.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use loop_adapter::ChannelKey;
use loop_gate::wire::{ApprovalDecision, ApprovalRequest, GateAction};
use loop_wire::api::{GitPublish, GitPublished};

use super::state::{ApiError, ApiState, parse_body};
use super::tasks::{Caller, caller};
use crate::config::GateDecision;
use crate::gate::approval::{self, AskError, Asked, Desk};

/// `POST /api/git/push`.
pub(super) async fn push(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<GitPublished>, ApiError> {
    publish(&state, &headers, &body, false).await.map(Json)
}

/// `POST /api/git/pull-request`.
pub(super) async fn pull_request(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<GitPublished>, ApiError> {
    publish(&state, &headers, &body, true).await.map(Json)
}

fn refused(text: impl Into<String>) -> GitPublished {
    GitPublished {
        done: false,
        text: text.into(),
    }
}

async fn publish(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
    pull_request: bool,
) -> Result<GitPublished, ApiError> {
    // The same token check as every container route (`tasks::caller`); only a container's
    // agent asks this way, a person uses `/loop push` and `/loop pr`.
    let Caller::Container(identity) = caller(state, headers)? else {
        return Err(ApiError::bad_request(
            "POST /api/git/* is the agent's (container token); people use /loop push and /loop pr",
        ));
    };
    let request: GitPublish = parse_body(body)?;
    let channel: ChannelKey = identity.channel_key.parse().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the token's channel is malformed",
        )
    })?;
    let Some(branch) = state.store.thread_branch(&channel).await? else {
        return Ok(refused(
            "this conversation has no git branch (its directory is not a git repository, or git.worktrees is off)",
        ));
    };
    let orchestrator = &state.orchestrator;
    let config = orchestrator.config();
    let operation = if pull_request { "pull-request" } else { "push" };
    match config.git.agent_publish {
        GateDecision::Deny => {
            return Ok(refused(
                "loop's config does not let the agent push (git.agent_publish: deny); ask a person to run `/loop push` or `/loop pr` in the thread",
            ));
        }
        GateDecision::Allow => {}
        GateDecision::Approve => {
            let summary = if pull_request {
                format!(
                    "push `{}` and open a pull request against `{}`",
                    branch.branch, branch.base_ref
                )
            } else {
                format!("push `{}` to its remote", branch.branch)
            };
            let asking = ApprovalRequest {
                channel_id: channel.slug(),
                action: GateAction::Exec {
                    program: "loop".to_owned(),
                    argv: vec![
                        "loop".to_owned(),
                        "git".to_owned(),
                        operation.to_owned(),
                        branch.branch.clone(),
                    ],
                    cwd: Some(branch.worktree.clone()),
                },
                summary,
                session_key: format!("loop-git-{operation}:{}", branch.branch),
                rule: "git.agent_publish".to_owned(),
                message: Some(
                    "the agent asks for its branch to leave this host: pushing is a person's decision"
                        .to_owned(),
                ),
                pid: 0,
            };
            let desk = Desk {
                gate: &state.gate,
                store: &state.store,
                adapter: orchestrator.adapter_for(channel.platform),
                limits: &config.gates.rate_limits,
                timeout: Duration::from_secs(config.gates.agentgate.approval_timeout_sec),
            };
            match approval::ask(&desk, &identity, &channel, &asking).await {
                Ok(Asked::ForSession) => {}
                Ok(Asked::Decided {
                    decision: ApprovalDecision::Deny,
                    source,
                    decided_by,
                }) => {
                    return Ok(refused(format!(
                        "not pushed: the request was denied ({source}{})",
                        if decided_by.is_empty() {
                            String::new()
                        } else {
                            format!(" by {decided_by}")
                        }
                    )));
                }
                Ok(Asked::Decided { .. }) => {}
                Ok(Asked::OverLimit(over)) => {
                    return Ok(refused(format!("not pushed: {over}")));
                }
                Err(err @ (AskError::NoAdapter(_) | AskError::CannotAsk(_))) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        err.to_string(),
                    ));
                }
                Err(AskError::Store(err)) => return Err(err.into()),
            }
        }
    }
    tracing::info!(channel = %channel, branch = %branch.branch, operation, "the agent's push was allowed");
    let (done, text) = orchestrator
        .publish_for_agent(&channel, pull_request, request.title)
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok(GitPublished { done, text })
}
