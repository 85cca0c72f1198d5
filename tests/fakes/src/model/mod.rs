//! A scripted fake of the Anthropic Messages API, good enough for the real Claude Code CLI.
//!
//! [`FakeModel`] serves `POST /v1/messages` (streaming SSE or a plain message),
//! `POST /v1/messages/count_tokens`, and answers anything else sensibly while recording it.
//! What it answers comes from a [`Script`]: see [`script`] for the rules and [`conversation`]
//! for how a request is mapped to a prompt and a step without any per-session state.
//!
//! What the CLI (2.1.x) was seen to send, which shaped this server:
//! - a `HEAD /` connectivity probe before the first request (answered 200);
//! - `POST /v1/messages?beta=true` with `stream: true`, `model: claude-opus-4-8` by default,
//!   `x-api-key` and `anthropic-beta` headers, and `system` role messages mixed into
//!   `messages`;
//! - auto-compaction requests (the last user message gains a "CRITICAL: Respond with TEXT
//!   ONLY" text block) when the API answers "prompt is too long" for a multi-turn session.

pub mod conversation;
mod response;
pub mod script;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use conversation::Conversation;
pub use script::{
    DEFAULT_ANSWER, Matcher, PROMPT_TOO_LONG_MESSAGE, Rule, Script, ScriptError, Selection,
    Session, Step, Usage,
};

use response::Ids;

/// A running fake model server. Dropping it stops the server; [`FakeModel::shutdown`] also
/// waits for it to finish.
#[derive(Debug)]
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Receives the number of `/v1/messages` requests seen so far.
    seen: watch::Receiver<usize>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Header names in lower case. Auth headers (`x-api-key`, `authorization`) are kept so
    /// tests can check what the client sent; the server never checks them.
    pub headers: BTreeMap<String, String>,
    /// The JSON body, or `Value::Null` when there was none or it was not JSON.
    pub body: Value,
    /// For `/v1/messages`: how the request was read.
    pub conversation: Option<Conversation>,
    /// For `/v1/messages`: what the script answered.
    pub answer: Option<Selection>,
    /// When the request arrived (benchmarks split a turn's time around the model's part).
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// Whether this is a `POST /v1/messages` (not `count_tokens` or anything else).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path.split('?').next() == Some("/v1/messages")
    }

    /// The requested model name, if any.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether the body mentions `needle` anywhere (in any message, tool result or field).
    pub fn body_contains(&self, needle: &str) -> bool {
        self.body.to_string().contains(needle)
    }
}

/// State shared by all request handlers.
#[derive(Debug)]
struct Shared {
    script: Script,
    /// How many requests each rule has answered, for [`Rule::times`].
    uses: Vec<AtomicU32>,
    /// A std mutex is enough: pushes and clones are short and never held across an await.
    requests: Mutex<Vec<RecordedRequest>>,
    seen: watch::Sender<usize>,
    ids: Ids,
    /// Cancelled on shutdown; ends delays and hanging streams so the server can stop.
    shutdown: CancellationToken,
    /// [`Step::Barrier`]s by name, created by their first request.
    barriers: Mutex<HashMap<String, Arc<tokio::sync::Barrier>>>,
}

impl FakeModel {
    /// Starts a server on `127.0.0.1` with an ephemeral port.
    pub async fn start(script: Script) -> std::io::Result<FakeModel> {
        FakeModel::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), script).await
    }

    /// Starts a server on `addr`, e.g. `0.0.0.0:0` so containers can reach it through the
    /// Docker bridge. The server accepts connections as soon as this returns: the socket is
    /// bound and listening before the serving task starts.
    pub async fn start_on(addr: SocketAddr, script: Script) -> std::io::Result<FakeModel> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (seen_tx, seen) = watch::channel(0);
        let shared = Arc::new(Shared {
            uses: script.rules.iter().map(|_| AtomicU32::new(0)).collect(),
            script,
            requests: Mutex::new(Vec::new()),
            seen: seen_tx,
            ids: Ids::new(),
            shutdown: CancellationToken::new(),
            barriers: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(other)
            .with_state(Arc::clone(&shared));
        let stop = shared.shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        });
        tracing::debug!(%addr, "fake model listening");
        Ok(FakeModel {
            addr,
            shared,
            seen,
            server: Some(server),
        })
    }

    /// The base URL for `ANTHROPIC_BASE_URL`. A wildcard bind address is reported as
    /// `127.0.0.1`; containers need the bridge address and [`FakeModel::port`] instead.
    pub fn url(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every `POST /v1/messages` received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.all_requests()
            .into_iter()
            .filter(RecordedRequest::is_messages)
            .collect()
    }

    /// Every request received so far, including `count_tokens`, probes and unknown routes.
    pub fn all_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `count` `/v1/messages` requests have arrived and returns them all.
    /// Wrap it in `tokio::time::timeout`: it waits as long as it takes.
    pub async fn wait_for_requests(&self, count: usize) -> Vec<RecordedRequest> {
        let mut seen = self.seen.clone();
        // The sender lives in `shared`, which `self` keeps alive, so this cannot fail; if it
        // ever did, returning what was recorded is the honest answer.
        let _ = seen.wait_for(|n| *n >= count).await;
        self.requests()
    }

    /// Stops accepting requests, ends hanging streams and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "fake model server failed"),
                Err(error) => tracing::warn!(%error, "fake model server task failed"),
            }
        }
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        // The serving task stops on its own once cancelled; `shutdown` is the way to also
        // wait for it.
        self.shared.shutdown.cancel();
    }
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        let is_messages = request.is_messages();
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        if is_messages {
            self.seen.send_modify(|n| *n += 1);
        }
    }

    /// Claims one use of rule `index` if it is limited; false once the limit is reached.
    fn try_claim(&self, index: usize, rule: &Rule) -> bool {
        let (Some(limit), Some(uses)) = (rule.times, self.uses.get(index)) else {
            return true;
        };
        uses.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
    }

    /// Sleeps, unless the server shuts down first. Returns false on shutdown.
    async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Waits at barrier `name` until `parties` requests are there, unless the server shuts
    /// down first. Returns false on shutdown.
    async fn meet(&self, name: &str, parties: u32) -> bool {
        let barrier = Arc::clone(
            self.barriers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name.to_owned())
                .or_insert_with(|| {
                    let parties = usize::try_from(parties).unwrap_or(usize::MAX).max(1);
                    Arc::new(tokio::sync::Barrier::new(parties))
                }),
        );
        tokio::select! {
            _ = barrier.wait() => true,
            () = self.shutdown.cancelled() => false,
        }
    }

    fn error_response(&self, status: StatusCode, error_type: &str, message: &str) -> Response {
        let mut response = (
            status,
            axum::Json(response::error_body(error_type, message)),
        )
            .into_response();
        self.add_request_id(response.headers_mut());
        response
    }

    fn add_request_id(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.ids.request()) {
            headers.insert("request-id", value);
        }
    }
}

fn record_of(method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) -> RecordedRequest {
    RecordedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), ToString::to_string),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        conversation: None,
        answer: None,
        at: std::time::Instant::now(),
    }
}

fn parse_body(bytes: &Bytes) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let Some(body) = parse_body(&bytes) else {
        shared.record(record_of(&method, &uri, &headers, Value::Null));
        return shared.error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "request body is not valid JSON",
        );
    };
    let conversation = Conversation::from_request(&body);
    let selection = shared
        .script
        .select(&conversation, |index, rule| shared.try_claim(index, rule));
    let is_stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    tracing::debug!(
        prompt = %conversation.prompt,
        step = selection.step_index,
        rule = ?selection.rule,
        is_stream,
        "fake model request"
    );

    let mut record = record_of(&method, &uri, &headers, body);
    record.conversation = Some(conversation.clone());
    record.answer = Some(selection.clone());
    shared.record(record);

    answer(
        &shared,
        selection.step,
        &conversation.model,
        selection.usage,
        is_stream,
    )
    .await
}

/// Produces the HTTP response for one step, after any scripted delay.
async fn answer(
    shared: &Arc<Shared>,
    mut step: Step,
    model: &str,
    usage: Usage,
    is_stream: bool,
) -> Response {
    // Delays and barriers happen before any byte is sent, like a model that is slow to start.
    let step = loop {
        step = match step {
            Step::Delay { ms, then } => {
                if !shared.sleep(Duration::from_millis(ms)).await {
                    return shutting_down(shared);
                }
                *then
            }
            Step::Barrier {
                name,
                parties,
                then,
            } => {
                if !shared.meet(&name, parties).await {
                    return shutting_down(shared);
                }
                *then
            }
            other => break other,
        };
    };
    if let Step::Error {
        status,
        error_type,
        message,
    } = &step
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return shared.error_response(status, error_type, message);
    }

    if is_stream {
        return stream_response(shared, &step, model, usage);
    }
    match &step {
        Step::Hang => {
            shared.shutdown.cancelled().await;
            shutting_down(shared)
        }
        Step::Slow {
            chunks, delay_ms, ..
        } => {
            let total = Duration::from_millis(delay_ms.saturating_mul(u64::from(*chunks)));
            if !shared.sleep(total).await {
                return shutting_down(shared);
            }
            json_message(shared, &step, model, usage)
        }
        Step::StreamError {
            error_type,
            message,
        } => shared.error_response(StatusCode::INTERNAL_SERVER_ERROR, error_type, message),
        _ => json_message(shared, &step, model, usage),
    }
}

fn shutting_down(shared: &Shared) -> Response {
    shared.error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "fake model is shutting down",
    )
}

fn json_message(shared: &Shared, step: &Step, model: &str, usage: Usage) -> Response {
    match response::message(step, model, usage, &shared.ids) {
        Some(message) => {
            let mut response = axum::Json(message).into_response();
            shared.add_request_id(response.headers_mut());
            response
        }
        None => shared.error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "the fake model has no plain message form for this step",
        ),
    }
}

fn stream_response(shared: &Arc<Shared>, step: &Step, model: &str, usage: Usage) -> Response {
    let plan = response::stream_plan(step, model, usage, &shared.ids);
    let frames = futures::stream::iter(plan.frames).then(|frame| async move {
        if !frame.delay.is_zero() {
            tokio::time::sleep(frame.delay).await;
        }
        Ok::<Bytes, Infallible>(Bytes::from(frame.to_sse()))
    });
    // A hanging stream never ends by itself; the shutdown token (via take_until below) ends
    // it so graceful shutdown does not wait forever.
    let tail = futures::stream::once(std::future::pending::<()>())
        .filter_map(|()| std::future::ready(None::<Result<Bytes, Infallible>>));
    let body = if plan.hang_after {
        frames.chain(tail).boxed()
    } else {
        frames.boxed()
    };
    let body = body.take_until(shared.shutdown.clone().cancelled_owned());

    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    shared.add_request_id(headers);
    response
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body = parse_body(&bytes).unwrap_or(Value::Null);
    // A rough estimate (four bytes a token) is all the CLI uses this for.
    let input_tokens = (bytes.len() / 4).max(1);
    shared.record(record_of(&method, &uri, &headers, body));
    axum::Json(json!({"input_tokens": input_tokens})).into_response()
}

async fn other(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body = parse_body(&bytes).unwrap_or(Value::Null);
    shared.record(record_of(&method, &uri, &headers, body));
    // The CLI probes `HEAD /` before its first request; a plain 200 satisfies it.
    if uri.path() == "/" && (method == Method::HEAD || method == Method::GET) {
        return StatusCode::OK.into_response();
    }
    tracing::warn!(%method, %uri, "fake model: unknown route");
    shared.error_response(
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!("fake model has no route {method} {}", uri.path()),
    )
}
