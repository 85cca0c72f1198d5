//! `memory.embeddings.provider: "ollama"` (the Go Loop's memory backend): embeddings from an
//! Ollama server's `POST /api/embed`, for users who already run one and want its model. loop's
//! default stays the local model, which needs no server.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::embed::Embedder;
use super::error::MemoryError;
use super::search::normalize;

/// Ollama's address when `memory.embeddings.ollama_url` is unset.
pub const DEFAULT_URL: &str = "http://localhost:11434";
/// The model when `memory.embeddings.model` is unset (the Go Loop's default).
pub const DEFAULT_MODEL: &str = "nomic-embed-text";
/// One request's longest wait: a model Ollama must load first takes a while.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Embeds through an Ollama server. Blocking, like every [`Embedder`]: it runs on a
/// `spawn_blocking` thread and waits there on the async client.
pub struct OllamaEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
}

#[derive(Serialize)]
struct EmbedRequest<'a> {
    model: &'a str,
    input: &'a [String],
}

#[derive(Deserialize)]
struct EmbedResponse {
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

impl OllamaEmbedder {
    pub fn new(url: Option<&str>, model: Option<&str>) -> Result<OllamaEmbedder, MemoryError> {
        let url = url
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(DEFAULT_URL)
            .trim_end_matches('/')
            .to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(MemoryError::Model(format!(
                "memory.embeddings.ollama_url must be an http(s) URL, not {url:?}"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|err| MemoryError::Model(format!("cannot build an HTTP client: {err}")))?;
        Ok(OllamaEmbedder {
            client,
            url,
            model: model
                .filter(|m| !m.trim().is_empty())
                .unwrap_or(DEFAULT_MODEL)
                .to_owned(),
        })
    }

    async fn embed_async(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let endpoint = format!("{}/api/embed", self.url);
        let failed = |why: String| {
            MemoryError::Model(format!(
                "Ollama at {} ({} with model {}): {why}",
                self.url, "POST /api/embed", self.model
            ))
        };
        let response = self
            .client
            .post(&endpoint)
            .json(&EmbedRequest {
                model: &self.model,
                input: texts,
            })
            .send()
            .await
            .map_err(|err| failed(loop_wire::error_chain(&err)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| failed(loop_wire::error_chain(&err)))?;
        if !status.is_success() {
            let why = serde_json::from_slice::<ErrorResponse>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(failed(format!("{status}: {why}")));
        }
        let parsed: EmbedResponse = serde_json::from_slice(&body)
            .map_err(|err| failed(format!("unexpected answer: {err}")))?;
        if parsed.embeddings.len() != texts.len() {
            return Err(failed(format!(
                "{} vectors for {} texts",
                parsed.embeddings.len(),
                texts.len()
            )));
        }
        Ok(parsed
            .embeddings
            .into_iter()
            .map(|mut v| {
                normalize(&mut v);
                v
            })
            .collect())
    }
}

impl Embedder for OllamaEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            MemoryError::Model("the Ollama embedder needs a tokio runtime".to_owned())
        })?;
        runtime.block_on(self.embed_async(texts))
    }

    fn model_id(&self) -> String {
        format!("ollama:{}", self.model)
    }
}
