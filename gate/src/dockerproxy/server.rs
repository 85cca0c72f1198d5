//! The proxy's HTTP side: an HTTP/1.1 server (hyper) on unix sockets that checks every request
//! of a keep-alive connection on its own, asks the daemon about the objects a request names,
//! asks a person when the policy says `approve`, and forwards to the host's socket.
//!
//! Each forwarded request gets its own upstream connection (connecting to a local socket is
//! cheap, and an upgraded or streaming call then never holds up another). Bodies stream both
//! ways (build contexts, archives, `logs -f`, events, pull progress) except the JSON bodies the
//! baseline reads, which are read whole up to [`MAX_JSON_BODY`]. `attach` and `exec start`
//! with `Upgrade: tcp` (and `attach/ws`) are upgraded on both sides and copied both ways.
//!
//! A refused request gets the daemon's error shape, `{"message": "loop docker proxy: ..."}`,
//! so the docker CLI prints the reason.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::baseline::{BodyHandling, Call, Lookup, Plan, ProxyPolicy, Refusal, Resolved};
use super::build::{self, ContextScanner};
use super::endpoint::Endpoint;
use super::request::{parse_json, percent_encode};
use super::runtime::ProxyError;
use crate::notify::{Approver, AuditSink};
use crate::policy::Verdict;
use crate::wire::{ApprovalDecision, ApprovalRequest, AuditOutcome, AuditRecord, GateAction};
use loop_wire::container::labels::{PROXY_CHANNEL as CHANNEL_LABEL, PROXY_OWNER as OWNER_LABEL};

/// The largest JSON body the proxy reads (container create and friends); larger is 413.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// How much of an oversized body is read and dropped before the 413 goes out.
const MAX_DRAINED_BODY: usize = 64 * 1024 * 1024;
/// The largest daemon answer a lookup reads.
const MAX_LOOKUP_BODY: usize = 16 * 1024 * 1024;
/// A body that must be empty may still be sent as a few bytes of whitespace or `{}`.
const MAX_EMPTY_BODY: usize = 64;
/// Connections served at once; more wait for a free slot (the agent only slows itself).
const MAX_CONNECTIONS: usize = 128;
/// How long a client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest summary shown to a person.
const MAX_SUMMARY: usize = 1000;

/// The body type of every response.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;
/// Any error, for request bodies going upstream.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of requests to the daemon.
type UpstreamBody = BoxBody<Bytes, BoxError>;

/// The proxy's state, shared by every connection.
pub struct Proxy {
    policy: ProxyPolicy,
    upstream: PathBuf,
    channel_id: String,
    approver: Arc<dyn Approver>,
    audit: Option<Arc<dyn AuditSink>>,
    /// Approvals waiting for a person; a full semaphore denies.
    pending: Arc<Semaphore>,
    /// Session keys a person allowed for the life of this container.
    session: Mutex<HashSet<String>>,
    /// Upstream connection drivers and upgraded copies.
    tasks: TaskTracker,
    /// Stops those tasks when the server stops.
    stop: CancellationToken,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstream", &self.upstream)
            .field("channel_id", &self.channel_id)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy to the daemon at `upstream`.
    pub fn new(
        policy: ProxyPolicy,
        upstream: PathBuf,
        channel_id: String,
        approver: Arc<dyn Approver>,
        audit: Option<Arc<dyn AuditSink>>,
        max_pending: usize,
    ) -> Proxy {
        Proxy {
            policy,
            upstream,
            channel_id,
            approver,
            audit,
            pending: Arc::new(Semaphore::new(max_pending.max(1))),
            session: Mutex::new(HashSet::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ProxyPolicy {
        &self.policy
    }
}

/// Binds a listening socket at `path` (mode `0666`: the agent is another uid), creating its
/// directory (`0755`) and replacing a stale socket, but never another kind of file.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ProxyError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let listen_error = |source: std::io::Error| ProxyError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(listen_error)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(listen_error)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(listen_error)?
        }
        Ok(_) => {
            return Err(listen_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "something that is not a socket is already there",
            )));
        }
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(listen_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    Ok(listener)
}

/// Serves `listeners` until `shutdown` is cancelled, then waits for the connections' tasks.
pub async fn serve(
    proxy: Arc<Proxy>,
    listeners: Vec<std::os::unix::net::UnixListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let mut accepting = Vec::new();
    for listener in listeners {
        let listener = UnixListener::from_std(listener)?;
        let (proxy, slots, connections, shutdown) = (
            proxy.clone(),
            slots.clone(),
            connections.clone(),
            shutdown.clone(),
        );
        accepting.push(connections.clone().spawn(async move {
            accept_loop(listener, proxy, slots, connections, shutdown).await;
        }));
    }
    shutdown.cancelled().await;
    for task in accepting {
        let _ = task.await;
    }
    connections.close();
    connections.wait().await;
    proxy.stop.cancel();
    proxy.tasks.close();
    proxy.tasks.wait().await;
    Ok(())
}

async fn accept_loop(
    listener: UnixListener,
    proxy: Arc<Proxy>,
    slots: Arc<Semaphore>,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// What goes upstream as the request body.
enum Outgoing {
    Stream(Incoming),
    Bytes(Bytes),
    /// A build context checked as it streams; the verdict is set before the body fails.
    Checked(ChannelBody, Arc<Mutex<Option<Refusal>>>),
}

/// A request body fed by a task through a channel.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// Frames of a build context buffered between the client and the daemon.
const BUILD_CONTEXT_FRAMES: usize = 16;

impl Proxy {
    /// Handles one request; never fails (a refusal is a response).
    pub async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        match self.process(request).await {
            Ok(response) => response,
            Err(refusal) => refusal_response(&refusal),
        }
    }

    async fn process(
        self: &Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let (mut parts, body) = request.into_parts();
        let mut content_types = Vec::new();
        for value in parts.headers.get_all(header::CONTENT_TYPE) {
            content_types.push(
                value
                    .to_str()
                    .map_err(|_| Refusal::bad_request("a Content-Type that is not text"))?,
            );
        }
        let call = Call::parse(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query(),
            &content_types,
        )
        .map_err(|refusal| self.refused(None, refusal))?;
        let mut plan = self
            .policy
            .plan(&call)
            .map_err(|refusal| self.refused(Some(&call), refusal))?;

        let mut json: Option<Value> = None;
        let outgoing = match plan.body {
            BodyHandling::Stream => Outgoing::Stream(body),
            BodyHandling::BuildContext => {
                let names = build::dockerfile_names(call.query.first("dockerfile"))?;
                let (tx, rx) = tokio::sync::mpsc::channel(BUILD_CONTEXT_FRAMES);
                let verdict = Arc::new(Mutex::new(None));
                let task = self.clone().scan_build_context(
                    body,
                    ContextScanner::new(names),
                    tx,
                    verdict.clone(),
                );
                self.tasks.spawn(task);
                Outgoing::Checked(ChannelBody { rx }, verdict)
            }
            BodyHandling::Empty => {
                let bytes = read_body(body, MAX_EMPTY_BODY).await?;
                if !bytes.iter().all(u8::is_ascii_whitespace) && bytes.as_ref() != b"{}" {
                    return Err(self.refused(
                        Some(&call),
                        Refusal::deny(
                            "start_body",
                            "a body on start is not accepted (old APIs read a HostConfig there); set everything at create",
                        ),
                    ));
                }
                Outgoing::Bytes(Bytes::new())
            }
            BodyHandling::Json => {
                let bytes = read_body(body, MAX_JSON_BODY).await?;
                let mut value = if bytes.iter().all(u8::is_ascii_whitespace) {
                    Value::Null
                } else {
                    parse_json(&bytes).map_err(|e| Refusal::bad_request(e.0))?
                };
                self.policy
                    .check_body(&call, &mut plan, &mut value)
                    .map_err(|refusal| self.refused(Some(&call), refusal))?;
                json = Some(value);
                Outgoing::Bytes(Bytes::new())
            }
        };

        let resolved = self
            .resolve(&call, &plan)
            .await
            .map_err(|r| self.refused(Some(&call), r))?;
        self.policy
            .apply(&call, &mut plan, json.as_mut(), &resolved);

        let decision = self
            .policy
            .decide(&call, json.as_ref().filter(|v| !v.is_null()));
        let rule = decision.rule.to_string();
        match decision.verdict {
            Verdict::Allow => self.record(&call, &rule, AuditOutcome::Allowed),
            Verdict::Deny => {
                let message = decision.message.clone().unwrap_or_else(|| {
                    format!("{} {} is denied by {rule}", call.method, call.route())
                });
                return Err(self.refused(
                    Some(&call),
                    Refusal {
                        status: 403,
                        rule,
                        message,
                    },
                ));
            }
            Verdict::Approve => {
                self.approve(&call, json.as_ref(), &rule, decision.message.as_deref())
                    .await?;
            }
        }

        // A named volume that does not exist yet is created now, labelled for the channel;
        // left to the daemon it would be nobody's.
        for name in &resolved.new_volumes {
            self.create_volume(name).await?;
        }
        let outgoing = match (outgoing, json) {
            (Outgoing::Bytes(_), Some(value)) if !value.is_null() => {
                Outgoing::Bytes(Bytes::from(value.to_string()))
            }
            (other, _) => other,
        };
        let path = match (path_span(&call.endpoint), &resolved.path_id) {
            (Some(span), Some(id)) => call.path.render_with(span.start, span.end, id),
            _ => parts.uri.path().to_owned(),
        };
        let query = match &plan.query {
            Some(query) if query.is_empty() => None,
            Some(query) => Some(query.encode()),
            None => parts.uri.query().map(str::to_owned),
        };
        let uri = match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let verdict = match &outgoing {
            Outgoing::Checked(_, verdict) => Some(verdict.clone()),
            _ => None,
        };
        let forwarded = self
            .forward(&parts.method, &uri, &parts.headers, outgoing, on_upgrade)
            .await;
        // A refused build context failed the upstream request on purpose: say why.
        if let Some(refusal) = verdict.and_then(|v| lock(&v).take()) {
            return Err(self.refused(Some(&call), refusal));
        }
        forwarded
    }

    /// Streams a build context to the daemon through `tx`, reading it with `scanner`; the last
    /// frame goes out only once the Dockerfile and its base images passed, otherwise the body
    /// fails (the daemon sees a truncated context and builds nothing) and `verdict` says why.
    async fn scan_build_context(
        self: Arc<Self>,
        mut body: Incoming,
        mut scanner: ContextScanner,
        tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        verdict: Arc<Mutex<Option<Refusal>>>,
    ) {
        let refuse = |refusal: Refusal| {
            *lock(&verdict) = Some(refusal);
            Err::<Frame<Bytes>, BoxError>("the build context was refused".into())
        };
        let mut held: Option<Frame<Bytes>> = None;
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = self.stop.cancelled() => return,
            };
            match frame {
                None => break,
                Some(Err(err)) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref()
                        && let Err(refusal) = scanner.push(data)
                    {
                        let _ = tx.send(refuse(refusal)).await;
                        // Read the rest, so the client finishes sending and reads the 403
                        // instead of a broken pipe.
                        drop(tx);
                        loop {
                            tokio::select! {
                                frame = body.frame() => if !matches!(frame, Some(Ok(_))) { return },
                                _ = self.stop.cancelled() => return,
                            }
                        }
                    }
                    if let Some(previous) = held.replace(frame)
                        && tx.send(Ok(previous)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
        let images = match scanner.finish() {
            Ok(images) => images,
            Err(refusal) => {
                let _ = tx.send(refuse(refusal)).await;
                return;
            }
        };
        for image in images {
            if let Err(refusal) = self.check_base_image(&image).await {
                let _ = tx.send(refuse(refusal)).await;
                return;
            }
        }
        if let Some(frame) = held {
            let _ = tx.send(Ok(frame)).await;
        }
    }

    /// A base image must be here already (the builder would pull it unchecked) and carry no
    /// `ONBUILD` triggers (the builder would run them, `ADD <url>` included).
    async fn check_base_image(&self, image: &str) -> Result<(), Refusal> {
        let path = format!("/images/{}/json", percent_encode(image));
        let info = self.get_json(&path).await?.ok_or_else(|| {
            Refusal::deny(
                "build_context",
                format!("base image `{image}` is not here; docker pull it first (the builder's own pulls are not checked)"),
            )
        })?;
        let triggers = info
            .pointer("/Config/OnBuild")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        if triggers {
            return Err(Refusal::deny(
                "build_context",
                format!(
                    "base image `{image}` has ONBUILD triggers, which the builder would run from the host's network"
                ),
            ));
        }
        Ok(())
    }

    /// Logs and audits a refusal; hands it back.
    fn refused(&self, call: Option<&Call>, refusal: Refusal) -> Refusal {
        match call {
            Some(call) => {
                tracing::info!(method = %call.method, path = %call.route(), rule = %refusal.rule, reason = %refusal.message, status = refusal.status, "docker call refused");
                if refusal.is_deny() {
                    self.record(call, &refusal.rule, AuditOutcome::Denied);
                }
            }
            None => {
                tracing::info!(rule = %refusal.rule, reason = %refusal.message, status = refusal.status, "docker call refused");
            }
        }
        refusal
    }

    fn record(&self, call: &Call, rule: &str, outcome: AuditOutcome) {
        if let Some(audit) = &self.audit {
            audit.record(AuditRecord {
                channel_id: self.channel_id.clone(),
                pid: 0,
                syscall: "docker".to_owned(),
                action: Some(action_of(call)),
                rule: Some(rule.to_owned()),
                outcome,
            });
        }
    }

    /// Asks a person through the approver (on its own thread: the approver blocks).
    async fn approve(
        &self,
        call: &Call,
        body: Option<&Value>,
        rule: &str,
        message: Option<&str>,
    ) -> Result<(), Refusal> {
        let key = session_key(call);
        if lock(&self.session).contains(&key) {
            self.record(call, rule, AuditOutcome::AllowedBySession);
            return Ok(());
        }
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            self.record(call, rule, AuditOutcome::DeniedOverLimit);
            return Err(Refusal {
                status: 403,
                rule: rule.to_owned(),
                message: "too many approvals are waiting; denied".to_owned(),
            });
        };
        let request = ApprovalRequest {
            channel_id: self.channel_id.clone(),
            action: action_of(call),
            summary: summary(call, body),
            session_key: key.clone(),
            rule: rule.to_owned(),
            message: message.map(str::to_owned),
            pid: 0,
        };
        let approver = self.approver.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("loop-dockerproxy-approval".to_owned())
            .spawn(move || {
                let _permit = permit;
                let _ = tx.send(approver.ask(&request));
            });
        let answer = match spawned {
            Ok(_) => rx.await.unwrap_or(ApprovalDecision::Deny),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start an approval thread");
                ApprovalDecision::Deny
            }
        };
        match answer {
            ApprovalDecision::AllowOnce => {
                self.record(call, rule, AuditOutcome::ApprovedOnce);
                Ok(())
            }
            ApprovalDecision::AllowSession => {
                lock(&self.session).insert(key);
                self.record(call, rule, AuditOutcome::ApprovedForSession);
                Ok(())
            }
            ApprovalDecision::Deny => {
                self.record(call, rule, AuditOutcome::DeniedByApprover);
                Err(Refusal {
                    status: 403,
                    rule: rule.to_owned(),
                    message: format!("{} {} was not approved", call.method, call.route()),
                })
            }
        }
    }

    /// Runs the plan's lookups against the daemon.
    async fn resolve(&self, call: &Call, plan: &Plan) -> Result<Resolved, Refusal> {
        let mut resolved = Resolved::default();
        for lookup in &plan.lookups {
            match lookup {
                Lookup::PathContainer(span) => {
                    let name = span.text(&call.path);
                    resolved.path_id = Some(self.owned_container(&name).await?);
                }
                Lookup::PathExec(span) => {
                    let id = span.text(&call.path);
                    let exec = self
                        .get_json(&format!("/exec/{}/json", percent_encode(&id)))
                        .await?
                        .ok_or_else(|| not_found(format!("No such exec instance: {id}")))?;
                    let container = exec
                        .get("ContainerID")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    self.owned_container(&container).await?;
                    let full = exec.get("ID").and_then(Value::as_str).unwrap_or(&id);
                    resolved.path_id = Some(full.to_owned());
                }
                Lookup::PathNetwork(span) => {
                    let name = span.text(&call.path);
                    resolved.path_id = Some(self.owned_network(&name).await?);
                }
                Lookup::PathVolume(span) => {
                    let name = span.text(&call.path);
                    match self.volume(&name).await? {
                        Some(true) => {}
                        Some(false) => return Err(foreign("volume", &name)),
                        None => return Err(not_found(format!("get {name}: no such volume"))),
                    }
                }
                Lookup::QueryContainer(key) => {
                    let name = call.query.first(key).unwrap_or_default().to_owned();
                    let id = self.owned_container(&name).await?;
                    resolved.containers.insert(name, id);
                }
                Lookup::Container(name) => {
                    let id = self.owned_container(name).await?;
                    resolved.containers.insert(name.clone(), id);
                }
                Lookup::Network(name) => {
                    let id = self.owned_network(name).await?;
                    resolved.networks.insert(name.clone(), id);
                }
                Lookup::UseVolume(name) => match self.volume(name).await? {
                    Some(true) => {}
                    Some(false) => return Err(foreign("volume", name)),
                    None => resolved.new_volumes.push(name.clone()),
                },
                Lookup::ImageRemoval(name) => {
                    let path = format!("/images/{}/json", percent_encode(name));
                    if let Some(image) = self.get_json(&path).await? {
                        let tags = image
                            .get("RepoTags")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str);
                        for tag in tags {
                            if self.policy.is_protected(tag) {
                                return Err(Refusal::deny(
                                    "protected_image",
                                    format!(
                                        "removing `{name}` would remove the protected image {tag}"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(resolved)
    }

    /// The full id of `name` when the container is the agent's.
    async fn owned_container(&self, name: &str) -> Result<String, Refusal> {
        if name.is_empty() {
            return Err(Refusal::bad_request("an empty container name"));
        }
        let info = self
            .get_json(&format!("/containers/{}/json", percent_encode(name)))
            .await?
            .ok_or_else(|| not_found(format!("No such container: {name}")))?;
        let owner = info
            .pointer("/Config/Labels")
            .and_then(|labels| labels.get(OWNER_LABEL))
            .and_then(Value::as_str);
        if owner != Some(self.policy.context().owner.as_str()) {
            return Err(foreign("container", name));
        }
        info.get("Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| upstream_error("the daemon's container inspect has no Id"))
    }

    async fn owned_network(&self, name: &str) -> Result<String, Refusal> {
        let info = self
            .get_json(&format!("/networks/{}", percent_encode(name)))
            .await?
            .ok_or_else(|| not_found(format!("network {name} not found")))?;
        let owner = info
            .get("Labels")
            .and_then(|labels| labels.get(OWNER_LABEL))
            .and_then(Value::as_str);
        if owner != Some(self.policy.context().owner.as_str()) {
            return Err(foreign("network", name));
        }
        info.get("Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| upstream_error("the daemon's network inspect has no Id"))
    }

    /// `Some(true)`: the channel's volume; `Some(false)`: someone else's; `None`: none.
    async fn volume(&self, name: &str) -> Result<Option<bool>, Refusal> {
        let Some(info) = self
            .get_json(&format!("/volumes/{}", percent_encode(name)))
            .await?
        else {
            return Ok(None);
        };
        let channel = info
            .get("Labels")
            .and_then(|labels| labels.get(CHANNEL_LABEL))
            .and_then(Value::as_str);
        Ok(Some(
            channel == Some(self.policy.context().channel.as_str()),
        ))
    }

    async fn create_volume(&self, name: &str) -> Result<(), Refusal> {
        let body = self.policy.volume_create_body(name).to_string();
        let request = Request::post("/volumes/create")
            .header(header::HOST, "docker")
            .header(header::CONTENT_TYPE, "application/json")
            .body(upstream_full(Bytes::from(body)))
            .map_err(|err| upstream_error(format!("cannot build a request: {err}")))?;
        let response = self.send(request).await?;
        if !response.status().is_success() {
            let status = response.status();
            let text = read_body(response.into_body(), MAX_LOOKUP_BODY)
                .await
                .unwrap_or_default();
            return Err(upstream_error(format!(
                "creating volume {name} failed ({status}): {}",
                String::from_utf8_lossy(&text)
            )));
        }
        Ok(())
    }

    /// `GET path` on the daemon: `Some(json)` for 200, `None` for 404.
    async fn get_json(&self, path: &str) -> Result<Option<Value>, Refusal> {
        let request = Request::get(path)
            .header(header::HOST, "docker")
            .body(upstream_full(Bytes::new()))
            .map_err(|err| upstream_error(format!("cannot build a request: {err}")))?;
        let response = self.send(request).await?;
        let status = response.status();
        let bytes = read_body(response.into_body(), MAX_LOOKUP_BODY).await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| upstream_error(format!("undecodable answer to {path}: {err}"))),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(upstream_error(format!(
                "{path} answered {other}: {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }

    /// One request on a fresh upstream connection.
    async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<Incoming>, Refusal> {
        let stream = UnixStream::connect(&self.upstream).await.map_err(|err| {
            upstream_error(format!(
                "cannot reach the Docker daemon at {}: {err}",
                self.upstream.display()
            ))
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| upstream_error(format!("cannot talk to the Docker daemon: {err}")))?;
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                result = connection.with_upgrades() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "upstream connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|err| upstream_error(format!("the Docker daemon did not answer: {err}")))
    }

    async fn forward(
        &self,
        method: &hyper::Method,
        uri: &str,
        headers: &HeaderMap,
        body: Outgoing,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let upgrade = headers.get(header::UPGRADE).cloned();
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            if !is_hop_by_hop(name) && name != header::HOST && name != header::CONTENT_LENGTH {
                builder = builder.header(name, value);
            }
        }
        builder = builder.header(header::HOST, "docker");
        if let Some(upgrade) = &upgrade {
            builder = builder
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, upgrade);
        }
        let body = match body {
            Outgoing::Stream(incoming) => incoming.map_err(BoxError::from).boxed(),
            Outgoing::Bytes(bytes) => upstream_full(bytes),
            Outgoing::Checked(channel, _) => channel.boxed(),
        };
        let request = builder
            .body(body)
            .map_err(|err| Refusal::bad_request(format!("cannot forward the request: {err}")))?;
        let mut response = self.send(request).await?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = on_upgrade else {
                return Err(upstream_error(
                    "the daemon upgraded a connection nobody asked to upgrade",
                ));
            };
            let upstream = hyper::upgrade::on(&mut response);
            let mut builder = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let stop = self.stop.clone();
            self.tasks.spawn(async move {
                let copy = async move {
                    match tokio::try_join!(upstream, downstream) {
                        Ok((up, down)) => {
                            let mut up = TokioIo::new(up);
                            let mut down = TokioIo::new(down);
                            if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                                tracing::debug!(error = %err, "upgraded connection ended with an error");
                            }
                        }
                        Err(err) => tracing::debug!(error = %err, "upgrade failed"),
                    }
                };
                tokio::select! {
                    () = copy => {}
                    _ = stop.cancelled() => {}
                }
            });
            return builder
                .body(Empty::new().map_err(|never| match never {}).boxed())
                .map_err(|err| upstream_error(format!("cannot answer the upgrade: {err}")));
        }

        let (mut parts, incoming) = response.into_parts();
        let hop: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|name| is_hop_by_hop(name))
            .cloned()
            .collect();
        for name in hop {
            parts.headers.remove(name);
        }
        Ok(Response::from_parts(parts, incoming.boxed()))
    }
}

/// The span of the object a path names, for the endpoints whose path the proxy rewrites.
fn path_span(endpoint: &Endpoint) -> Option<super::request::Span> {
    match endpoint {
        Endpoint::Container(span, _) | Endpoint::Exec(span, _) | Endpoint::Network(span, _) => {
            Some(*span)
        }
        _ => None,
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
    )
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn upstream_full(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use bytes::Buf;
    let mut body = std::pin::pin!(body);
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|err| Refusal::bad_request(format!("cannot read the body: {}", err.into())))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if read.len() + data.remaining() > limit {
            // Read the rest (bounded) before answering: a client still sending would otherwise
            // get a broken pipe instead of the 413 and its reason.
            let mut drained = read.len() + data.remaining();
            while drained <= MAX_DRAINED_BODY {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        drained += frame.data_ref().map_or(0, bytes::Buf::remaining);
                    }
                    _ => break,
                }
            }
            return Err(Refusal {
                status: 413,
                rule: "baseline.body_size".to_owned(),
                message: format!("the request body is over {limit} bytes"),
            });
        }
        bytes::BufMut::put(&mut read, data);
    }
    Ok(read.freeze())
}

/// `{"message": "loop docker proxy: ..."}`, as the daemon shapes its errors.
pub fn refusal_response(refusal: &Refusal) -> Response<ProxyBody> {
    let body = serde_json::json!({"message": format!("loop docker proxy: {}", refusal.message)});
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(message: String) -> Refusal {
    Refusal {
        status: 404,
        rule: "baseline.not_found".to_owned(),
        message,
    }
}

fn foreign(kind: &str, name: &str) -> Refusal {
    Refusal::deny(
        "ownership",
        format!(
            "{kind} `{name}` was not created through this agent's docker proxy; only its own {kind}s can be used"
        ),
    )
}

fn upstream_error(message: impl Into<String>) -> Refusal {
    Refusal {
        status: 502,
        rule: "baseline.upstream".to_owned(),
        message: message.into(),
    }
}

/// "Allow for session" key: `docker:POST:/containers/*/start`.
fn session_key(call: &Call) -> String {
    format!(
        "docker:{}:{}",
        call.method,
        call.endpoint.template(&call.path)
    )
}

fn action_of(call: &Call) -> GateAction {
    let mut path = call.route();
    if !call.query.is_empty() {
        path.push('?');
        path.push_str(&call.query.encode());
    }
    GateAction::Docker {
        method: call.method.clone(),
        path,
    }
}

/// One line for the person asked: what the call does, with what matters for a create.
fn summary(call: &Call, body: Option<&Value>) -> String {
    let mut text = format!("docker {} {}", call.method, call.route());
    if !call.query.is_empty() {
        text.push('?');
        text.push_str(&call.query.encode());
    }
    if call.endpoint == Endpoint::ContainerCreate
        && let Some(Value::Object(body)) = body
    {
        let get = |object: &serde_json::Map<String, Value>, name: &str| {
            super::request::get_ci(object, name).cloned()
        };
        if let Some(Value::String(image)) = get(body, "Image") {
            text.push_str(&format!(" image={image}"));
        }
        if let Some(cmd) = get(body, "Cmd").filter(|c| !c.is_null()) {
            text.push_str(&format!(" cmd={cmd}"));
        }
        if let Some(Value::Object(host)) = get(body, "HostConfig") {
            for field in ["Binds", "Mounts", "NetworkMode"] {
                if let Some(value) = get(&host, field).filter(|v| !v.is_null()) {
                    text.push_str(&format!(" {field}={value}"));
                }
            }
        }
    }
    if text.len() > MAX_SUMMARY {
        let mut end = MAX_SUMMARY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
