//! Ollama's embedding endpoint, `POST /api/embed` (`{"model", "input": [..]}` →
//! `{"model", "embeddings": [[..]]}`; an unknown model is a 404 with `{"error": ..}`), for
//! loop's `memory.embeddings.provider: "ollama"`. The vectors come from a function the test
//! passes in (the tests use the real embedding model), so rankings mean something.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

/// Turns texts into vectors.
pub type EmbedFn = Arc<dyn Fn(&[String]) -> Vec<Vec<f32>> + Send + Sync>;

#[derive(Deserialize)]
struct EmbedRequest {
    model: String,
    /// A string or a list of strings.
    input: serde_json::Value,
}

struct Shared {
    model: String,
    embed: EmbedFn,
    /// (model, number of texts) per request.
    requests: Mutex<Vec<(String, usize)>>,
}

/// A running fake Ollama that serves one model.
pub struct FakeOllama {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeOllama {
    pub async fn start(model: &str, embed: EmbedFn) -> std::io::Result<FakeOllama> {
        let shared = Arc::new(Shared {
            model: model.to_owned(),
            embed,
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/embed", post(embed_route))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeOllama { addr, shared, stop })
    }

    /// `http://127.0.0.1:PORT`, as `memory.embeddings.ollama_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (model, texts) of every request so far.
    pub fn requests(&self) -> Vec<(String, usize)> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

async fn embed_route(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<EmbedRequest>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid request body"})),
        )
            .into_response();
    };
    if request.model != shared.model {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("model \"{}\" not found, try pulling it first", request.model)})),
        )
            .into_response();
    }
    let texts: Vec<String> = match request.input {
        serde_json::Value::String(text) => vec![text],
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push((request.model.clone(), texts.len()));
    }
    let embed = shared.embed.clone();
    let vectors = tokio::task::spawn_blocking(move || embed(&texts))
        .await
        .unwrap_or_default();
    Json(json!({"model": request.model, "embeddings": vectors})).into_response()
}
