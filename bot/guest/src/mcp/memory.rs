//! The memory tools of `loop mcp` (only with `--memory`): `memory_save`, `memory_search`,
//! `memory_forget`, and the Go Loop's names `search_memory` and `index_memory`. Each is a call
//! to `/api/memory/*` with the container's token, so the agent sees its channel's, its
//! project's and global memories only.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData, schemars, tool, tool_router};
use serde::Deserialize;

use super::{LoopMcp, failed, ok, with_json};
use loop_wire::api::{MemoryInfo, SaveMemory, SearchMemory};

/// `memory_save`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct MemorySaveParams {
    /// What to remember, written so that it makes sense on its own later.
    pub content: String,
    /// `channel` (default: this conversation), `project` (everyone working in this project
    /// directory) or `global` (every channel).
    #[serde(default)]
    pub scope: Option<String>,
    /// Where it came from (a file, a URL, a person); optional.
    #[serde(default)]
    pub source: Option<String>,
}

/// `memory_search`'s (and `search_memory`'s) arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct MemorySearchParams {
    /// What you are looking for, in words: matched by meaning, not by keywords.
    pub query: String,
    /// How many results (default 5, at most 50).
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// `memory_forget`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct MemoryForgetParams {
    /// The memory id (from `memory_search` or `memory_save`).
    pub id: String,
}

fn describe(m: &MemoryInfo) -> String {
    let score = m.score.map(|s| format!("[{s:.3}] ")).unwrap_or_default();
    let source = match &m.source_ref {
        Some(r) => format!("{} {r}", m.source),
        None => m.source.clone(),
    };
    format!("{score}{} ({}, {source}): {}", m.id, m.scope, m.content)
}

#[tool_router(router = memory_router, vis = "pub(super)")]
impl LoopMcp {
    #[tool(
        description = "Remember something for later turns and sessions: a fact, a decision, a preference. Found again by meaning with memory_search."
    )]
    async fn memory_save(
        &self,
        Parameters(params): Parameters<MemorySaveParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = SaveMemory {
            content: params.content,
            scope: params.scope,
            source_ref: params.source,
            channel: None,
        };
        match self.api.memory_save(&request).await {
            Ok(saved) => ok(format!("Saved memory {} ({}).", saved.id, saved.scope)),
            Err(err) => failed("memory_save", &err),
        }
    }

    #[tool(
        description = "Search loop's memory by meaning: saved memories, earlier turns of this channel, and the project's docs (CLAUDE.md, README, docs/). Returns the best matches with scores (cosine similarity) and sources."
    )]
    async fn memory_search(
        &self,
        Parameters(params): Parameters<MemorySearchParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.search("memory_search", params).await
    }

    #[tool(description = "Search loop's memory by meaning (the same as memory_search).")]
    async fn search_memory(
        &self,
        Parameters(params): Parameters<MemorySearchParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.search("search_memory", params).await
    }

    #[tool(description = "Forget (delete) one memory by id.")]
    async fn memory_forget(
        &self,
        Parameters(params): Parameters<MemoryForgetParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if params.id.trim().is_empty() {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "id is required (see memory_search)".to_owned(),
            )]));
        }
        match self.api.memory_forget(&params.id).await {
            Ok(_) => ok(format!("Forgot memory {}.", params.id.trim())),
            Err(err) => failed("memory_forget", &err),
        }
    }

    #[tool(
        description = "Re-index this project's Markdown docs (CLAUDE.md, README, docs/) into memory; only changed parts are embedded again."
    )]
    async fn index_memory(&self) -> Result<CallToolResult, ErrorData> {
        match self.api.memory_index().await {
            Ok(report) => ok(format!(
                "Indexed {} files: {} chunks, {} embedded, {} unchanged, {} removed.",
                report.files, report.chunks, report.embedded, report.unchanged, report.removed
            )),
            Err(err) => failed("index_memory", &err),
        }
    }
}

impl LoopMcp {
    async fn search(
        &self,
        action: &str,
        params: MemorySearchParams,
    ) -> Result<CallToolResult, ErrorData> {
        let request = SearchMemory {
            query: params.query,
            top_k: params.top_k,
            channel: None,
        };
        match self.api.memory_search(&request).await {
            Ok(hits) if hits.is_empty() => ok("No memories found.".to_owned()),
            Ok(hits) => {
                let lines: Vec<String> = hits.iter().map(describe).collect();
                ok(with_json(lines.join("\n"), &hits))
            }
            Err(err) => failed(action, &err),
        }
    }
}
