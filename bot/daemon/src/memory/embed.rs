//! Sentence embeddings with fastembed (ONNX Runtime loaded at run time from `ORT_DYLIB_PATH`).
//!
//! The model is all-MiniLM-L6-v2 (or any model of its class), from one of two places:
//! - a local directory (`memory.model_dir`) holding `model.onnx` (or any `*.onnx`, also under
//!   `onnx/`), `tokenizer.json`, `config.json`, `special_tokens_map.json` and
//!   `tokenizer_config.json` ([`FastEmbedder::load`]);
//! - fastembed's own download from the Hugging Face hub (`HF_ENDPOINT` selects a mirror) into a
//!   cache directory, `~/.loop/models` by default ([`FastEmbedder::download`], cargo feature
//!   `model-download`). Once cached, loading makes no network request at all.
//!
//! Vectors are mean-pooled and unit length.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use super::error::MemoryError;
use super::search::normalize;

/// Turns texts into unit-length vectors. Blocking: call it from `spawn_blocking`.
pub trait Embedder: Send + Sync + 'static {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError>;

    /// Names the model, so that vectors of different models are never compared: stored with
    /// every vector, and a vector of another model is embedded again.
    fn model_id(&self) -> String;
}

/// Tokens per text the model sees; longer texts are truncated.
const MAX_TOKENS: usize = 256;
/// Texts per ONNX batch.
const BATCH: usize = 32;

/// A fastembed model behind a lock (a session runs one batch at a time).
pub struct FastEmbedder {
    model: Mutex<TextEmbedding>,
    id: String,
}

impl std::fmt::Debug for FastEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastEmbedder").finish_non_exhaustive()
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, MemoryError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| MemoryError::ModelFile {
        path: path.display().to_string(),
        source,
    })
}

/// The ONNX file of a model directory: `model.onnx`, else the first `*.onnx` in it or `onnx/`.
pub fn find_onnx(dir: &Path) -> Option<PathBuf> {
    let direct = dir.join("model.onnx");
    if direct.is_file() {
        return Some(direct);
    }
    for sub in [dir.to_path_buf(), dir.join("onnx")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        found.sort();
        if let Some(first) = found.into_iter().next() {
            return Some(first);
        }
    }
    None
}

/// The model fastembed downloads; its model list maps it to a hub repository and files.
#[cfg(feature = "model-download")]
const HUB_MODEL: fastembed::EmbeddingModel = fastembed::EmbeddingModel::AllMiniLML6V2;

/// The hub the download talks to: `HF_ENDPOINT`, else huggingface.co. fastembed reads the same
/// variable the same way; this copy only names the hub in messages.
pub fn hub_endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_owned())
}

/// Where the download cache really is: fastembed puts the model in `HF_HOME` when that is set,
/// whatever cache directory it was given.
pub fn effective_cache_dir(cache_dir: &Path) -> PathBuf {
    std::env::var_os("HF_HOME").map_or_else(|| cache_dir.to_path_buf(), PathBuf::from)
}

/// The hub repository of the downloaded model, e.g. `Qdrant/all-MiniLM-L6-v2-onnx`.
#[cfg(feature = "model-download")]
pub fn hub_repo() -> String {
    TextEmbedding::get_model_info(&HUB_MODEL)
        .map(|info| info.model_code.clone())
        .unwrap_or_else(|_| format!("{HUB_MODEL:?}"))
}

/// Whether the download cache already holds every file of the model, so loading it needs no
/// network. Reads the hub cache layout that fastembed's hub client writes (and the Python
/// `huggingface_hub` documents): `models--{org}--{name}/refs/main` names a commit whose files
/// are under `snapshots/{commit}/`.
#[cfg(feature = "model-download")]
pub fn is_cached(cache_dir: &Path) -> bool {
    let Ok(info) = TextEmbedding::get_model_info(&HUB_MODEL) else {
        return false;
    };
    let repo = effective_cache_dir(cache_dir)
        .join(format!("models--{}", info.model_code.replace('/', "--")));
    let Ok(commit) = std::fs::read_to_string(repo.join("refs/main")) else {
        return false;
    };
    let snapshot = repo.join("snapshots").join(commit.trim());
    [info.model_file.as_str()]
        .into_iter()
        .chain(TOKENIZER_FILES)
        .chain(info.additional_files.iter().map(String::as_str))
        .all(|file| snapshot.join(file).is_file())
}

/// The tokenizer files fastembed reads next to the ONNX file.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// The error for a failed download: what failed, from where, and the way out.
#[cfg(feature = "model-download")]
fn download_error(err: &fastembed::Error) -> MemoryError {
    let mut reason = loop_wire::error_chain(err);
    let lower = reason.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        // hf-hub builds its own ureq agent on rustls with the webpki (Mozilla) roots compiled
        // in; there is no way to hand it the system store or `extra_ca_certs`.
        reason.push_str(
            " (the download trusts only the Mozilla root certificates built into loop, not the system store, SSL_CERT_FILE or extra_ca_certs)",
        );
    }
    MemoryError::Download {
        repo: hub_repo(),
        endpoint: hub_endpoint(),
        reason,
    }
}

/// Maps ort's panic (it panics rather than failing when the shared library cannot be loaded).
fn ort_missing(_: Box<dyn std::any::Any + Send>) -> MemoryError {
    MemoryError::Model(format!(
        "cannot load ONNX Runtime: set ORT_DYLIB_PATH to libonnxruntime.so (now {:?})",
        std::env::var("ORT_DYLIB_PATH").ok()
    ))
}

impl FastEmbedder {
    /// Loads all-MiniLM-L6-v2 through fastembed's hub download into `cache_dir` (or `HF_HOME`),
    /// fetching only what the cache lacks: from `HF_ENDPOINT` (default huggingface.co), with
    /// `HF_TOKEN` when set and the proxy of `HTTPS_PROXY`/`ALL_PROXY` (`NO_PROXY` honoured).
    /// `show_progress` draws a progress bar per file on stderr. Blocking: call it from
    /// `spawn_blocking`.
    #[cfg(feature = "model-download")]
    pub fn download(
        cache_dir: &Path,
        show_progress: bool,
        intra_threads: Option<usize>,
    ) -> Result<FastEmbedder, MemoryError> {
        let cache = effective_cache_dir(cache_dir);
        // Created here so that an unwritable cache is reported as such, not as a failed
        // download.
        std::fs::create_dir_all(&cache).map_err(|source| MemoryError::CacheDir {
            path: cache.display().to_string(),
            source,
        })?;
        let mut options = fastembed::TextInitOptions::new(HUB_MODEL)
            .with_max_length(MAX_TOKENS)
            .with_cache_dir(cache_dir.to_path_buf())
            .with_show_download_progress(show_progress);
        options.intra_threads = intra_threads;
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TextEmbedding::try_new(options)
        }))
        .map_err(ort_missing)?
        .map_err(|err| match &err {
            fastembed::Error::ModelRetrieval { .. } => download_error(&err),
            // Tokenizer files come through the hub client's own error, turned into text.
            fastembed::Error::Other(text) if text.starts_with("HuggingFace API") => {
                download_error(&err)
            }
            _ => MemoryError::Model(format!(
                "{}: {}",
                cache.display(),
                loop_wire::error_chain(&err)
            )),
        })?;
        Ok(FastEmbedder {
            model: Mutex::new(loaded),
            id: format!("hub:{}", hub_repo()),
        })
    }

    /// Loads the model in `dir`. Needs `ORT_DYLIB_PATH` (or `libonnxruntime.so` on the loader
    /// path); `intra_threads` caps ONNX Runtime's threads (None: every core).
    pub fn load(dir: &Path, intra_threads: Option<usize>) -> Result<FastEmbedder, MemoryError> {
        let onnx = find_onnx(dir).ok_or_else(|| MemoryError::ModelFile {
            path: dir.join("model.onnx").display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no .onnx file"),
        })?;
        let onnx_file = std::fs::read(&onnx).map_err(|source| MemoryError::ModelFile {
            path: onnx.display().to_string(),
            source,
        })?;
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read(dir, TOKENIZER_FILES[0])?,
            config_file: read(dir, TOKENIZER_FILES[1])?,
            special_tokens_map_file: read(dir, TOKENIZER_FILES[2])?,
            tokenizer_config_file: read(dir, TOKENIZER_FILES[3])?,
        };
        // The weights name the model: the same files under another path are the same model.
        let id = {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(&onnx_file));
            format!("onnx-sha256:{}", &digest[..16])
        };
        let model =
            UserDefinedEmbeddingModel::new(onnx_file, tokenizer_files).with_pooling(Pooling::Mean);
        let mut options = InitOptionsUserDefined::new().with_max_length(MAX_TOKENS);
        options.intra_threads = intra_threads;
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TextEmbedding::try_new_from_user_defined(model, options)
        }))
        .map_err(ort_missing)?
        .map_err(|err| MemoryError::Model(format!("{}: {err}", dir.display())))?;
        Ok(FastEmbedder {
            model: Mutex::new(loaded),
            id,
        })
    }
}

impl Embedder for FastEmbedder {
    fn model_id(&self) -> String {
        self.id.clone()
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut model = self
            .model
            .lock()
            .map_err(|_| MemoryError::Model("embedding model lock poisoned".to_owned()))?;
        let mut vectors = model
            .embed(texts, Some(BATCH))
            .map_err(|err| MemoryError::Model(format!("embedding failed: {err}")))?;
        for v in &mut vectors {
            normalize(v);
        }
        Ok(vectors)
    }
}
