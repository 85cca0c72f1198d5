//! Semantic memory, embedded: no external service. Texts are embedded locally (fastembed, an
//! all-MiniLM-L6-v2 class model, see [`embed`]), stored with their vectors in the `memories`
//! table, and ranked by brute-force cosine similarity over the vectors of the asked scopes
//! ([`search`]), cached per scope until the scope's rows change.
//!
//! What is indexed: finished turns (prompt and the start of the answer, channel scope), what the
//! agent saves through MCP (`memory_save`), and a project's Markdown docs (CLAUDE.md, README*,
//! docs/, `memory.paths`), chunked ([`chunk`]) and re-embedded only where a chunk's content hash
//! changed.

pub mod chunk;
pub mod embed;
mod error;
pub mod ollama;
pub mod search;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{Config, MemoryConfig};
use crate::text::clip;
pub use embed::{Embedder, FastEmbedder};
pub use error::MemoryError;
use loop_store::{MemoryRecord, MemoryScope, NewMemory, Store};
use search::VectorSet;

/// Source of memories the agent saved.
pub const SOURCE_AGENT: &str = "agent";
/// Source of indexed turns.
pub const SOURCE_TURN: &str = "turn";
/// Source of document chunks.
pub const SOURCE_DOC: &str = "doc";

/// Largest document chunk, whatever `memory.max_chunk_chars` says: the model reads 256 tokens
/// (about 1,000 characters of English) and ignores the rest, so a longer chunk would be ranked
/// by its beginning only.
pub const EMBED_CHUNK_CHARS: usize = 1000;

/// How long a scope's cached vectors are used without asking the database whether the scope
/// changed. Writes through this process drop the cache at once; this bounds how long a change
/// made elsewhere (`loop memory forget` in another process) goes unseen.
const CACHE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Characters of an answer kept in a turn's memory.
const TURN_ANSWER_CHARS: usize = 600;
/// Characters of a prompt kept in a turn's memory.
const TURN_PROMPT_CHARS: usize = 1000;

/// Docs larger than this are not indexed (1 MiB of Markdown is a book).
const MAX_DOC_BYTES: u64 = 1 << 20;

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub score: f32,
    #[serde(flatten)]
    pub memory: MemoryRecord,
}

/// What a document re-index did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    pub files: usize,
    pub chunks: usize,
    /// Chunks embedded now (new or changed).
    pub embedded: usize,
    /// Chunks whose stored vector was kept.
    pub unchanged: usize,
    /// Stored chunks removed (changed, or their file is gone).
    pub removed: usize,
    /// Files not read: symlinks, not regular files, too large, not UTF-8 (each logged).
    pub skipped: usize,
}

/// A scope's vectors as loaded, and the fingerprint of the rows they came from.
struct Cached {
    fingerprint: (i64, Option<i64>),
    /// When the fingerprint was last compared with the database.
    checked: Mutex<std::time::Instant>,
    records: Vec<MemoryRecord>,
    vectors: VectorSet,
}

struct Inner {
    store: Store,
    embedder: Arc<dyn Embedder>,
    max_chunk_chars: usize,
    extra_paths: Vec<String>,
    cache: Mutex<HashMap<MemoryScope, Arc<Cached>>>,
    /// When each project's docs were last re-indexed.
    reindexed: Mutex<HashMap<PathBuf, std::time::Instant>>,
}

/// The memory service. Cheap to clone.
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

/// Loads the configured model (blocking: a few hundred milliseconds, plus the download on
/// first use): from `memory.model_dir`, else through fastembed's download into
/// [`Config::model_cache_dir`]. `show_progress` draws download progress on stderr.
pub fn load_embedder(
    config: &Config,
    show_progress: bool,
) -> Result<Arc<dyn Embedder>, MemoryError> {
    let embeddings = &config.memory.embeddings;
    match embeddings.provider.as_deref().map(str::trim) {
        None | Some("" | "local" | "fastembed") => {}
        Some("ollama") => {
            return Ok(Arc::new(ollama::OllamaEmbedder::new(
                embeddings.ollama_url.as_deref(),
                embeddings.model.as_deref(),
            )?));
        }
        Some(other) => {
            return Err(MemoryError::Model(format!(
                "memory.embeddings.provider {other:?} is not known: use \"local\" (the default, embedded) or \"ollama\""
            )));
        }
    }
    match config.memory.model_dir.as_deref() {
        Some(dir) => Ok(Arc::new(FastEmbedder::load(&config.expand(dir), None)?)),
        None => download_embedder(config, show_progress),
    }
}

/// Whether memory is on and its model comes from fastembed's download (neither
/// `memory.model_dir` nor Ollama): loading may then fetch it first.
pub fn downloads_model(config: &Config) -> bool {
    config.memory.enabled && config.memory.model_dir.is_none() && !uses_ollama(config)
}

/// Whether memory uses an Ollama server instead of the local model.
pub fn uses_ollama(config: &Config) -> bool {
    config.memory.embeddings.provider.as_deref().map(str::trim) == Some("ollama")
}

#[cfg(feature = "model-download")]
fn download_embedder(
    config: &Config,
    show_progress: bool,
) -> Result<Arc<dyn Embedder>, MemoryError> {
    Ok(Arc::new(FastEmbedder::download(
        &config.model_cache_dir(),
        show_progress,
        None,
    )?))
}

#[cfg(not(feature = "model-download"))]
fn download_embedder(
    _config: &Config,
    _show_progress: bool,
) -> Result<Arc<dyn Embedder>, MemoryError> {
    Err(MemoryError::NoModelDir)
}

/// Where the model comes from, in words, for logs and the CLI.
pub fn describe_model_source(config: &Config) -> String {
    if uses_ollama(config) {
        let embeddings = &config.memory.embeddings;
        return format!(
            "Ollama at {} (model {})",
            embeddings
                .ollama_url
                .as_deref()
                .unwrap_or(ollama::DEFAULT_URL),
            embeddings.model.as_deref().unwrap_or(ollama::DEFAULT_MODEL)
        );
    }
    match config.memory.model_dir.as_deref() {
        Some(dir) => format!("model_dir {}", config.expand(dir).display()),
        None => format!(
            "download cache {} (from {})",
            embed::effective_cache_dir(&config.model_cache_dir()).display(),
            embed::hub_endpoint()
        ),
    }
}

impl Memory {
    pub fn new(store: Store, embedder: Arc<dyn Embedder>, config: &MemoryConfig) -> Memory {
        Memory {
            inner: Arc::new(Inner {
                store,
                embedder,
                max_chunk_chars: config.max_chunk_chars,
                extra_paths: config.paths.clone(),
                cache: Mutex::new(HashMap::new()),
                reindexed: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Embeds texts on a blocking thread.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, MemoryError> {
        let embedder = self.inner.embedder.clone();
        tokio::task::spawn_blocking(move || embedder.embed(&texts))
            .await
            .map_err(|err| MemoryError::Join(err.to_string()))?
    }

    async fn embed_one(&self, text: &str) -> Result<Vec<f32>, MemoryError> {
        self.embed(vec![text.to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| MemoryError::Model("the model returned no vector".to_owned()))
    }

    /// Drops cached vectors after a write (all scopes when `scope` is None).
    fn invalidate(&self, scope: Option<&MemoryScope>) {
        if let Ok(mut cache) = self.inner.cache.lock() {
            match scope {
                Some(scope) => {
                    cache.remove(scope);
                }
                None => cache.clear(),
            }
        }
    }

    /// Saves one memory.
    pub async fn save(
        &self,
        scope: MemoryScope,
        source: &str,
        source_ref: Option<String>,
        content: &str,
    ) -> Result<MemoryRecord, MemoryError> {
        let embedding = self.embed_one(content).await?;
        let record = self
            .inner
            .store
            .memory_insert(NewMemory {
                scope,
                source: source.to_owned(),
                source_ref,
                content: content.to_owned(),
                content_hash: chunk::content_hash(content),
                embedding,
                embedding_model: self.inner.embedder.model_id(),
            })
            .await?;
        self.invalidate(Some(&record.scope));
        Ok(record)
    }

    /// Indexes a finished turn in its channel's scope: the prompt and the start of the answer.
    pub async fn index_turn(
        &self,
        channel_key: &str,
        run_id: &str,
        prompt: &str,
        answer: &str,
    ) -> Result<MemoryRecord, MemoryError> {
        let content = turn_summary(prompt, answer);
        self.save(
            MemoryScope::Channel(channel_key.to_owned()),
            SOURCE_TURN,
            Some(run_id.to_owned()),
            &content,
        )
        .await
    }

    /// The `k` memories of `scopes` closest to `query`, best first.
    pub async fn search(
        &self,
        scopes: &[MemoryScope],
        query: &str,
        k: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        let query = self.embed_one(query).await?;
        let mut hits = Vec::new();
        for scope in scopes {
            let cached = self.scope_vectors(scope).await?;
            for scored in cached.vectors.top_k(&query, k) {
                if let Some(record) = cached.records.get(scored.index) {
                    hits.push(Hit {
                        score: scored.score,
                        memory: record.clone(),
                    });
                }
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }

    /// A scope's vectors, from the cache while its rows are unchanged.
    async fn scope_vectors(&self, scope: &MemoryScope) -> Result<Arc<Cached>, MemoryError> {
        let scopes = std::slice::from_ref(scope);
        let cached = self
            .inner
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(scope).cloned());
        if let Some(hit) = &cached
            && hit
                .checked
                .lock()
                .is_ok_and(|at| at.elapsed() < CACHE_RECHECK)
        {
            return Ok(hit.clone());
        }
        let fingerprint = self.inner.store.memory_fingerprint(scopes).await?;
        if let Some(hit) = cached
            && hit.fingerprint == fingerprint
        {
            if let Ok(mut at) = hit.checked.lock() {
                *at = std::time::Instant::now();
            }
            return Ok(hit);
        }
        let model = self.inner.embedder.model_id();
        let rows = self
            .inner
            .store
            .memory_vectors(scopes, None, &model)
            .await?;
        let dim = rows.first().map_or(0, |r| r.embedding.len());
        let mut vectors = VectorSet::with_capacity(dim, rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            if vectors.push(&row.embedding) {
                records.push(row.record);
            }
        }
        let cached = Arc::new(Cached {
            fingerprint,
            checked: Mutex::new(std::time::Instant::now()),
            records,
            vectors,
        });
        if let Ok(mut cache) = self.inner.cache.lock() {
            cache.insert(scope.clone(), cached.clone());
        }
        Ok(cached)
    }

    /// Embeds again, from their text, the memories whose vector another model made (after
    /// `memory.model_dir` changed, or the model was downloaded instead): until then search
    /// skips them. Returns how many were embedded.
    pub async fn reembed_stale(&self) -> Result<usize, MemoryError> {
        let model = self.inner.embedder.model_id();
        let mut done = 0;
        loop {
            let stale = self.inner.store.memory_stale(&model, 64).await?;
            if stale.is_empty() {
                break;
            }
            let vectors = self
                .embed(stale.iter().map(|(_, content)| content.clone()).collect())
                .await?;
            for ((id, _), vector) in stale.iter().zip(vectors) {
                self.inner
                    .store
                    .memory_set_embedding(id, &vector, &model)
                    .await?;
                done += 1;
            }
        }
        if done > 0 {
            self.invalidate(None);
        }
        Ok(done)
    }

    /// Forgets one memory (only within `scopes`, when any are given).
    pub async fn forget(&self, id: &str, scopes: &[MemoryScope]) -> Result<bool, MemoryError> {
        let deleted = self.inner.store.memory_delete(id, scopes).await?;
        self.invalidate(None);
        Ok(deleted)
    }

    /// The Markdown files of a project that are indexed: CLAUDE.md, README*, docs/**, and the
    /// configured `memory.paths` (files or directories, relative to the project).
    pub fn doc_files(&self, root: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_lowercase();
                let path = entry.path();
                if path.is_file()
                    && (name == "claude.md" || (name.starts_with("readme") && is_markdown(&path)))
                {
                    files.push(path);
                }
            }
        }
        collect_markdown(&root.join("docs"), &mut files, 0);
        for extra in &self.inner.extra_paths {
            let path = root.join(extra);
            if path.is_file() {
                files.push(path);
            } else {
                collect_markdown(&path, &mut files, 0);
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// Re-indexes a project's docs unless that was done less than `interval` ago.
    pub async fn reindex_docs_if_due(
        &self,
        root: &Path,
        interval: std::time::Duration,
    ) -> Result<Option<ReindexReport>, MemoryError> {
        let now = std::time::Instant::now();
        if let Ok(mut done) = self.inner.reindexed.lock() {
            if done
                .get(root)
                .is_some_and(|at| now.duration_since(*at) < interval)
            {
                return Ok(None);
            }
            done.insert(root.to_path_buf(), now);
        }
        self.reindex_docs(root).await.map(Some)
    }

    /// Re-indexes a project's docs into `Project(root)`: only new or changed chunks are
    /// embedded; chunks no longer present are removed.
    pub async fn reindex_docs(&self, root: &Path) -> Result<ReindexReport, MemoryError> {
        let scope = MemoryScope::Project(root.display().to_string());
        let files = self.doc_files(root);
        let mut report = ReindexReport {
            files: files.len(),
            ..ReindexReport::default()
        };
        // What exists: (file, hash) → ids, from the stored doc chunks of this project.
        let existing = self
            .inner
            .store
            .memory_list(
                std::slice::from_ref(&scope),
                Some(SOURCE_DOC),
                u64::MAX >> 1,
            )
            .await?;
        let mut stored: HashMap<(String, String), Vec<MemoryRecord>> = HashMap::new();
        for record in existing {
            let file = record
                .source_ref
                .as_deref()
                .and_then(|r| r.rsplit_once('#').map(|(f, _)| f.to_owned()))
                .unwrap_or_default();
            stored
                .entry((file, record.content_hash.clone()))
                .or_default()
                .push(record);
        }
        let mut keep: HashSet<String> = HashSet::new();
        let mut to_embed: Vec<(String, String, String)> = Vec::new(); // (source_ref, content, hash)
        for file in &files {
            // The project is written by the agent and by strangers: a doc may be a symlink to
            // loop's own secrets, a FIFO or huge. Such a file is skipped, never followed.
            let text = match crate::project_files::read_in_project(root, file, MAX_DOC_BYTES) {
                Ok(text) => text,
                Err(err) => {
                    tracing::warn!(project = %root.display(), "not indexing a doc: {}", loop_wire::error_chain(&err));
                    report.skipped += 1;
                    continue;
                }
            };
            let rel = file
                .strip_prefix(root)
                .unwrap_or(file)
                .display()
                .to_string();
            for (n, piece) in
                chunk::chunk_markdown(&text, self.inner.max_chunk_chars.min(EMBED_CHUNK_CHARS))
                    .iter()
                    .enumerate()
            {
                report.chunks += 1;
                let content = piece.content(&rel);
                let hash = chunk::content_hash(&content);
                let source_ref = format!("{rel}#{n}");
                let reused = stored
                    .get_mut(&(rel.clone(), hash.clone()))
                    .and_then(|v| v.pop());
                match reused {
                    Some(record) => {
                        report.unchanged += 1;
                        if record.source_ref.as_deref() != Some(source_ref.as_str()) {
                            self.inner
                                .store
                                .memory_set_source_ref(&record.id, &source_ref)
                                .await?;
                        }
                        keep.insert(record.id);
                    }
                    None => to_embed.push((source_ref, content, hash)),
                }
            }
        }
        for leftovers in stored.into_values() {
            for record in leftovers {
                if !keep.contains(&record.id)
                    && self
                        .inner
                        .store
                        .memory_delete(&record.id, std::slice::from_ref(&scope))
                        .await?
                {
                    report.removed += 1;
                }
            }
        }
        for batch in to_embed.chunks(64) {
            let vectors = self
                .embed(batch.iter().map(|(_, c, _)| c.clone()).collect())
                .await?;
            for ((source_ref, content, hash), embedding) in batch.iter().zip(vectors) {
                self.inner
                    .store
                    .memory_insert(NewMemory {
                        scope: scope.clone(),
                        source: SOURCE_DOC.to_owned(),
                        source_ref: Some(source_ref.clone()),
                        content: content.clone(),
                        content_hash: hash.clone(),
                        embedding,
                        embedding_model: self.inner.embedder.model_id(),
                    })
                    .await?;
                report.embedded += 1;
            }
        }
        self.invalidate(Some(&scope));
        Ok(report)
    }
}

/// The scopes a channel sees: itself, its parent channel (for a thread), its project, global.
pub fn visible_scopes(
    channel: &loop_adapter::ChannelKey,
    work_dir: Option<&str>,
) -> Vec<MemoryScope> {
    let mut scopes = vec![MemoryScope::Channel(channel.to_string())];
    let parent = channel.parent().to_string();
    if parent != channel.to_string() {
        scopes.push(MemoryScope::Channel(parent));
    }
    if let Some(dir) = work_dir {
        scopes.push(MemoryScope::Project(dir.to_owned()));
    }
    scopes.push(MemoryScope::Global);
    scopes
}

/// Memories as a block put before the first prompt of a new session.
pub fn context_block(hits: &[Hit]) -> Option<String> {
    if hits.is_empty() {
        return None;
    }
    let mut block = String::from(
        "Possibly relevant memories from loop (earlier turns, saved notes, project docs; search more with memory_search):\n",
    );
    for hit in hits {
        let source = hit
            .memory
            .source_ref
            .as_deref()
            .unwrap_or(&hit.memory.source);
        block.push_str(&format!(
            "- ({source}, score {:.2}) {}\n",
            hit.score,
            clip(&hit.memory.content.replace('\n', " "), 500)
        ));
    }
    Some(block)
}

/// A turn as one memory: the prompt, then the start of the answer.
pub fn turn_summary(prompt: &str, answer: &str) -> String {
    format!(
        "Q: {}\nA: {}",
        clip(prompt.trim(), TURN_PROMPT_CHARS),
        clip(answer.trim(), TURN_ANSWER_CHARS)
    )
}

fn is_markdown(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("md") || e.eq_ignore_ascii_case("markdown"))
}

/// Markdown files under `dir`, skipping hidden directories; at most 8 levels deep.
fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        match entry.file_type() {
            Ok(t) if t.is_dir() && !hidden => collect_markdown(&path, out, depth + 1),
            Ok(t) if t.is_file() && is_markdown(&path) => out.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
