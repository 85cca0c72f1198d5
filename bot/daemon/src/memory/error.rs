//! What can go wrong with semantic memory: the model, its download, the files read, the store.

use loop_store::StoreError;

/// Errors of loading the embedder, embedding and indexing.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read model file {path}: {source}")]
    ModelFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedding model: {0}")]
    Model(String),
    #[error(
        "memory.model_dir is not set and this loop was built without the model-download feature: point memory.model_dir at a local all-MiniLM-L6-v2 directory (model.onnx, tokenizer.json, config.json, special_tokens_map.json, tokenizer_config.json)"
    )]
    NoModelDir,
    #[error(
        "cannot download the embedding model {repo} from {endpoint}: {reason}; check the network (HF_ENDPOINT selects a mirror) or, to work offline, set memory.model_dir to a local copy of the model"
    )]
    Download {
        repo: String,
        endpoint: String,
        reason: String,
    },
    #[error("cannot create the model cache {path}: {source}")]
    CacheDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedding task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
