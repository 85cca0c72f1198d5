//! `loop memory search|list|forget|reindex`: semantic memory from the terminal. Reads the
//! database directly; `search` and `reindex` load the embedding model (`memory.model_dir`, or
//! the download cache, downloading the model on first use with progress on a terminal).

use std::io::IsTerminal;
use std::path::Path;

use crate::cli::MemoryScopeArgs;
use loop_daemon::config::Config;
use loop_daemon::memory::{Hit, Memory, MemoryError, ReindexReport, load_embedder};
use loop_store::{MemoryRecord, MemoryScope, Store, StoreError};

/// The scopes the arguments name, or every scope that holds memories.
pub async fn scopes(store: &Store, args: &MemoryScopeArgs) -> Result<Vec<MemoryScope>, StoreError> {
    let mut scopes: Vec<MemoryScope> = args
        .channel
        .iter()
        .map(|c| MemoryScope::Channel(c.clone()))
        .collect();
    for dir in &args.project {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        scopes.push(MemoryScope::Project(dir.display().to_string()));
    }
    if args.global {
        scopes.push(MemoryScope::Global);
    }
    if scopes.is_empty() {
        scopes = store.memory_scopes().await?;
    }
    Ok(scopes)
}

async fn open(config: &Config, store: &Store) -> Result<Memory, MemoryError> {
    announce_download(config);
    let loading = config.clone();
    let progress = std::io::stderr().is_terminal();
    let embedder = tokio::task::spawn_blocking(move || load_embedder(&loading, progress))
        .await
        .map_err(|err| MemoryError::Join(err.to_string()))??;
    let memory = Memory::new(store.clone(), embedder, &config.memory);
    // Vectors another model made are useless to this one: embed them again first.
    let reembedded = memory.reembed_stale().await?;
    if reembedded > 0 {
        eprintln!("embedded {reembedded} memories again with the current model");
    }
    Ok(memory)
}

/// Says on stderr that the model is about to be downloaded, when it is.
#[cfg(feature = "model-download")]
fn announce_download(config: &Config) {
    use loop_daemon::memory::embed;
    let cache = config.model_cache_dir();
    // `loop memory` runs with memory off in the config too: only the model source matters.
    let downloads = config.memory.model_dir.is_none() && !loop_daemon::memory::uses_ollama(config);
    if downloads && !embed::is_cached(&cache) {
        eprintln!(
            "Downloading the embedding model {} from {} into {} (once; memory.model_dir uses a local copy instead)",
            embed::hub_repo(),
            embed::hub_endpoint(),
            embed::effective_cache_dir(&cache).display()
        );
    }
}

#[cfg(not(feature = "model-download"))]
fn announce_download(_config: &Config) {}

fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

fn source(record: &MemoryRecord) -> String {
    match &record.source_ref {
        Some(r) => format!("{} {r}", record.source),
        None => record.source.clone(),
    }
}

pub fn render_hits(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return "No memories found.".to_owned();
    }
    hits.iter()
        .map(|h| {
            format!(
                "{:.3}  {}  [{}] ({})\n       {}",
                h.score,
                h.memory.id,
                h.memory.scope,
                source(&h.memory),
                one_line(&h.memory.content, 160)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn render_list(records: &[MemoryRecord]) -> String {
    if records.is_empty() {
        return "No memories.".to_owned();
    }
    records
        .iter()
        .map(|r| {
            format!(
                "{}  [{}] ({})  {}",
                r.id,
                r.scope,
                source(r),
                one_line(&r.content, 100)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn search(
    config: &Config,
    store: &Store,
    query: &str,
    top_k: usize,
    args: &MemoryScopeArgs,
) -> Result<String, MemoryError> {
    let scopes = scopes(store, args).await?;
    let memory = open(config, store).await?;
    let started = std::time::Instant::now();
    let hits = memory.search(&scopes, query, top_k).await?;
    Ok(format!(
        "{}\n({} scope{}, {} ms)",
        render_hits(&hits),
        scopes.len(),
        if scopes.len() == 1 { "" } else { "s" },
        started.elapsed().as_millis()
    ))
}

pub async fn list(
    store: &Store,
    source: Option<&str>,
    limit: u64,
    args: &MemoryScopeArgs,
) -> Result<String, StoreError> {
    let scopes = scopes(store, args).await?;
    if scopes.is_empty() {
        return Ok("No memories.".to_owned());
    }
    Ok(render_list(
        &store.memory_list(&scopes, source, limit).await?,
    ))
}

pub async fn forget(store: &Store, id: &str) -> Result<String, StoreError> {
    if store.memory_delete(id.trim(), &[]).await? {
        Ok(format!("Forgot memory {}.", id.trim()))
    } else {
        Err(StoreError::NotFound(format!("memory {}", id.trim())))
    }
}

pub async fn reindex(config: &Config, store: &Store, dir: &Path) -> Result<String, MemoryError> {
    let dir = std::path::absolute(dir).map_err(|source| MemoryError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let memory = open(config, store).await?;
    let started = std::time::Instant::now();
    let ReindexReport {
        files,
        chunks,
        embedded,
        unchanged,
        removed,
        skipped,
    } = memory.reindex_docs(&dir).await?;
    let skipped = if skipped > 0 {
        format!(
            ", {skipped} files skipped (symlinks, not regular, too large or not UTF-8; see the log)"
        )
    } else {
        String::new()
    };
    Ok(format!(
        "{}: {files} files, {chunks} chunks: {embedded} embedded, {unchanged} unchanged, {removed} removed{skipped} ({} ms)",
        dir.display(),
        started.elapsed().as_millis()
    ))
}
