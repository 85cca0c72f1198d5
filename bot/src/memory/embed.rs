//! Sentence embeddings with fastembed (ONNX Runtime loaded at run time from `ORT_DYLIB_PATH`).
//! The model comes from a local directory (`memory.model_dir`) holding an all-MiniLM-L6-v2 class
//! model: `model.onnx` (or any `*.onnx`, also under `onnx/`), `tokenizer.json`, `config.json`,
//! `special_tokens_map.json` and `tokenizer_config.json`. Vectors are mean-pooled and unit length.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use super::MemoryError;
use super::search::normalize;

/// Turns texts into unit-length vectors. Blocking: call it from `spawn_blocking`.
pub trait Embedder: Send + Sync + 'static {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError>;
}

/// Tokens per text the model sees; longer texts are truncated.
const MAX_TOKENS: usize = 256;
/// Texts per ONNX batch.
const BATCH: usize = 32;

/// A fastembed model behind a lock (a session runs one batch at a time).
pub struct FastEmbedder {
    model: Mutex<TextEmbedding>,
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
fn find_onnx(dir: &Path) -> Option<PathBuf> {
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

impl FastEmbedder {
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
            tokenizer_file: read(dir, "tokenizer.json")?,
            config_file: read(dir, "config.json")?,
            special_tokens_map_file: read(dir, "special_tokens_map.json")?,
            tokenizer_config_file: read(dir, "tokenizer_config.json")?,
        };
        let model =
            UserDefinedEmbeddingModel::new(onnx_file, tokenizer_files).with_pooling(Pooling::Mean);
        let mut options = InitOptionsUserDefined::new().with_max_length(MAX_TOKENS);
        options.intra_threads = intra_threads;
        // ort panics (rather than failing) when the shared library cannot be loaded.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TextEmbedding::try_new_from_user_defined(model, options)
        }))
        .map_err(|_| {
            MemoryError::Model(format!(
                "cannot load ONNX Runtime: set ORT_DYLIB_PATH to libonnxruntime.so (now {:?})",
                std::env::var("ORT_DYLIB_PATH").ok()
            ))
        })?
        .map_err(|err| MemoryError::Model(format!("{}: {err}", dir.display())))?;
        Ok(FastEmbedder {
            model: Mutex::new(loaded),
        })
    }
}

impl Embedder for FastEmbedder {
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
