//! A fake Hugging Face hub: the file download endpoints that hub clients use (the Python
//! `huggingface_hub`, and the Rust `hf-hub` crate that fastembed downloads models with), written
//! from the hub's public documentation ("Download files from the Hub", the cache layout, the
//! `HF_ENDPOINT` mirror convention) and from the headers those clients read. Point a client at
//! it with `HF_ENDPOINT=`[`FakeHub::endpoint`].
//!
//! Faithful on purpose:
//! - `GET`/`HEAD /{repo}/resolve/{revision}/{path}`, `revision` a branch (`main`) or the full
//!   commit sha. A regular (git) file is answered directly, with `ETag: "<git blob sha1>"`,
//!   `X-Repo-Commit: <commit sha>` and `Accept-Ranges: bytes`; a `Range: bytes=a-b` request
//!   gets `206` and `Content-Range: bytes a-b/size` (clients read the size from it after asking
//!   for `bytes=0-0`).
//! - A Git LFS file (large binaries: `*.onnx`, `*.safetensors`, `*.bin`, …) is not served from
//!   the resolve URL: it answers `302 Found` with an absolute `Location` on the storage host
//!   (here `/lfs/{sha256}` on this same server, standing in for the CDN), `X-Linked-Etag:
//!   "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit` and the pointer file's `ETag`. The storage
//!   URL serves the bytes with ranges but knows nothing of repos or commits.
//! - Errors are the hub's: an unknown repository is `401` with `X-Error-Code:
//!   RepositoryNotFound` (the hub does not tell a private repo from a missing one), an unknown
//!   revision `404 RevisionNotFound`, a missing file `404 EntryNotFound`, each with
//!   `X-Error-Message` and a JSON `{"error": ...}` body; a range past the end is `416`.
//! - [`FakeHub::fail_with`] answers every request with one status (an outage, `500`), and
//!   [`FakeHub::stop`] closes the port, for offline tests.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha1::Digest as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// File names the hub keeps in Git LFS (the defaults of a new repo's `.gitattributes`).
const LFS_EXTENSIONS: &[&str] = &[
    "onnx",
    "onnx_data",
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "pb",
    "tflite",
    "ot",
    "gguf",
    "npy",
    "npz",
    "zip",
    "gz",
    "tar",
    "parquet",
    "arrow",
];

/// One file of a repository.
#[derive(Debug, Clone)]
struct HubFile {
    data: Bytes,
    /// Whether the hub stores it in Git LFS (then it is served through a redirect).
    lfs: bool,
    /// The git blob sha1 (of the file, or of its LFS pointer).
    git_sha: String,
    /// The sha256 of the content (the LFS object id).
    sha256: String,
}

impl HubFile {
    fn new(data: Vec<u8>, lfs: bool) -> HubFile {
        let sha256 = format!("{:x}", sha2::Sha256::digest(&data));
        let blob = if lfs {
            // What git stores for an LFS file: the pointer, not the content.
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {}\n",
                data.len()
            )
            .into_bytes()
        } else {
            data.clone()
        };
        let mut hasher = sha1::Sha1::new();
        hasher.update(format!("blob {}\0", blob.len()).as_bytes());
        hasher.update(&blob);
        let git_sha = format!("{:x}", hasher.finalize());
        HubFile {
            data: Bytes::from(data),
            lfs,
            git_sha,
            sha256,
        }
    }
}

/// A model repository as the fake serves it: an id (`org/name`) and its files at one commit on
/// `main`.
#[derive(Debug, Clone)]
pub struct HubRepo {
    id: String,
    files: BTreeMap<String, HubFile>,
}

impl HubRepo {
    /// An empty repository, e.g. `HubRepo::new("Qdrant/all-MiniLM-L6-v2-onnx")`.
    pub fn new(id: &str) -> HubRepo {
        HubRepo {
            id: id.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// Adds a file at `path` (slashes for folders); large binary types go to LFS, as on the
    /// hub.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> HubRepo {
        let lfs = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| LFS_EXTENSIONS.contains(&e));
        self.files
            .insert(path.to_owned(), HubFile::new(data.into(), lfs));
        self
    }

    /// Adds the file `name` of `dir` at `path`.
    pub fn file_from(self, path: &str, dir: &Path, name: &str) -> std::io::Result<HubRepo> {
        let data = std::fs::read(dir.join(name))?;
        Ok(self.file(path, data))
    }

    /// The commit `main` points at: derived from the files, so it changes when they do.
    pub fn commit(&self) -> String {
        let mut hasher = sha1::Sha1::new();
        for (path, file) in &self.files {
            hasher.update(path.as_bytes());
            hasher.update(b"\0");
            hasher.update(file.git_sha.as_bytes());
        }
        format!("{:x}", hasher.finalize())
    }
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRequest {
    pub method: String,
    /// The path, e.g. `/Qdrant/all-MiniLM-L6-v2-onnx/resolve/main/model.onnx` or `/lfs/{oid}`.
    pub path: String,
    /// The `Range` header, when sent.
    pub range: Option<String>,
    pub status: u16,
}

struct Shared {
    addr: SocketAddr,
    repos: Vec<HubRepo>,
    failure: Mutex<Option<StatusCode>>,
    requests: Mutex<Vec<HubRequest>>,
    shutdown: CancellationToken,
}

/// A running fake hub on `127.0.0.1`. Dropping it stops the server; [`FakeHub::stop`] also
/// waits until the port is closed.
pub struct FakeHub {
    shared: Arc<Shared>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for FakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHub")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl FakeHub {
    /// Serves `repos` on an ephemeral port; connections are accepted once this returns.
    pub async fn start(repos: Vec<HubRepo>) -> std::io::Result<FakeHub> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            repos,
            failure: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
        });
        let router = Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&shared));
        let stop = shared.shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        });
        Ok(FakeHub {
            shared,
            server: Some(server),
        })
    }

    /// The value for `HF_ENDPOINT`, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Answers every request with `status` from now on (None: serve normally again).
    pub fn fail_with(&self, status: Option<u16>) {
        *self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            status.and_then(|s| StatusCode::from_u16(s).ok());
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<HubRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the server and waits for it, so that the port refuses connections.
    pub async fn stop(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "fake hub server failed"),
                Err(error) => tracing::warn!(%error, "fake hub server task failed"),
            }
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A hub error: status, `X-Error-Code`, `X-Error-Message` and the JSON body.
fn hub_error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({"error": message}))).into_response();
    let headers = response.headers_mut();
    if let Some(code) = code {
        headers.insert("x-error-code", HeaderValue::from_str(code).expect("ascii"));
    }
    if let Ok(value) = HeaderValue::from_str(message) {
        headers.insert("x-error-message", value);
    }
    response
}

/// A single `bytes=a-b` / `bytes=a-` range: Ok(None) without one, Err for one past the end.
fn parse_range(headers: &HeaderMap, size: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some((start, end)) = range
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
    else {
        // An unparsable range is ignored, as HTTP says.
        return Ok(None);
    };
    let Ok(start) = start.trim().parse::<usize>() else {
        return Ok(None);
    };
    if start >= size {
        return Err(());
    }
    let end = match end.trim() {
        "" => size - 1,
        end => end.parse::<usize>().map_or(size - 1, |e| e.min(size - 1)),
    };
    if end < start {
        return Ok(None);
    }
    Ok(Some((start, end)))
}

/// The bytes of `data`, whole or the asked range, with the length headers. `extra` headers
/// come first.
fn content(method: &Method, headers: &HeaderMap, data: &Bytes, extra: HeaderMap) -> Response {
    let size = data.len();
    let (status, body, range) = match parse_range(headers, size) {
        Err(()) => {
            let mut response = hub_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                None,
                "Requested range not satisfiable",
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
        Ok(Some((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(start..=end),
            Some(format!("bytes {start}-{end}/{size}")),
        ),
        Ok(None) => (StatusCode::OK, data.clone(), None),
    };
    let mut response = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body.clone())
    });
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.extend(extra);
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(range) = range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        out.insert(header::CONTENT_RANGE, range);
    }
    response
}

fn quoted(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{value}\"")).expect("hex is a valid header value")
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let response = answer(&shared, &method, &uri, &headers);
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(HubRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            range: headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            status: response.status().as_u16(),
        });
    response
}

fn answer(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let failure = *shared
        .failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(status) = failure {
        return hub_error(
            status,
            None,
            status.canonical_reason().unwrap_or("Internal Error"),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        return hub_error(StatusCode::METHOD_NOT_ALLOWED, None, "Method not allowed");
    }
    let path = uri.path();
    // The storage host: content by LFS object id, no repo, no commit.
    if let Some(oid) = path.strip_prefix("/lfs/") {
        let found = shared
            .repos
            .iter()
            .flat_map(|repo| repo.files.values())
            .find(|file| file.lfs && file.sha256 == oid);
        return match found {
            Some(file) => {
                let mut extra = HeaderMap::new();
                extra.insert(header::ETAG, quoted(&file.sha256));
                content(method, headers, &file.data, extra)
            }
            None => hub_error(StatusCode::NOT_FOUND, None, "NoSuchKey"),
        };
    }
    let Some((repo_id, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return hub_error(StatusCode::NOT_FOUND, None, "Sorry, we can't find the page");
    };
    let Some(repo) = shared.repos.iter().find(|r| r.id == repo_id) else {
        return hub_error(
            StatusCode::UNAUTHORIZED,
            Some("RepositoryNotFound"),
            "Repository not found",
        );
    };
    let (revision, file_path) = rest.split_once('/').unwrap_or((rest, ""));
    let commit = repo.commit();
    if revision != "main" && revision != commit {
        return hub_error(
            StatusCode::NOT_FOUND,
            Some("RevisionNotFound"),
            &format!("Invalid rev id: {revision}"),
        );
    }
    let Some(file) = repo.files.get(file_path) else {
        return hub_error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            "Entry not found",
        );
    };
    let mut extra = HeaderMap::new();
    // The commit goes unquoted, the etags quoted, as the hub sends them.
    extra.insert(
        "x-repo-commit",
        HeaderValue::from_str(&commit).expect("hex is a valid header value"),
    );
    extra.insert(header::ETAG, quoted(&file.git_sha));
    if file.lfs {
        let location = format!("http://{}/lfs/{}", shared.addr, file.sha256);
        extra.insert("x-linked-etag", quoted(&file.sha256));
        extra.insert("x-linked-size", HeaderValue::from(file.data.len()));
        extra.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).expect("a URL is a valid header value"),
        );
        let mut response = (
            StatusCode::FOUND,
            format!("Found. Redirecting to {location}"),
        )
            .into_response();
        response.headers_mut().extend(extra);
        return response;
    }
    content(method, headers, &file.data, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> HubRepo {
        HubRepo::new("org/model")
            .file("config.json", br#"{"hidden_size": 4}"#.to_vec())
            .file("onnx/model.onnx", vec![7u8; 1000])
    }

    async fn get(url: &str, range: Option<&str>) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut request = client.get(url);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send().await.expect("request")
    }

    fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{name} missing: {:?}", response.headers()))
    }

    #[tokio::test]
    async fn a_regular_file_answers_with_commit_etag_and_ranges() {
        let hub = FakeHub::start(vec![repo()]).await.expect("start");
        let url = format!("{}/org/model/resolve/main/config.json", hub.endpoint());
        let first = get(&url, Some("bytes=0-0")).await;
        assert_eq!(first.status(), 206);
        assert_eq!(header(&first, "x-repo-commit"), repo().commit());
        assert_eq!(header(&first, "content-range"), "bytes 0-0/18");
        // The git blob sha1 of the content, as `git hash-object` prints it.
        assert_eq!(
            header(&first, "etag"),
            format!(
                "\"{}\"",
                HubFile::new(br#"{"hidden_size": 4}"#.to_vec(), false).git_sha
            )
        );
        assert_eq!(first.bytes().await.expect("body").as_ref(), b"{");
        let whole = get(&url, None).await;
        assert_eq!(whole.status(), 200);
        assert_eq!(
            whole.bytes().await.expect("body").as_ref(),
            br#"{"hidden_size": 4}"#
        );
        let by_commit = format!(
            "{}/org/model/resolve/{}/config.json",
            hub.endpoint(),
            repo().commit()
        );
        assert_eq!(get(&by_commit, None).await.status(), 200);
    }

    #[tokio::test]
    async fn an_lfs_file_redirects_to_storage_that_serves_ranges() {
        let hub = FakeHub::start(vec![repo()]).await.expect("start");
        let url = format!("{}/org/model/resolve/main/onnx/model.onnx", hub.endpoint());
        let redirect = get(&url, Some("bytes=0-0")).await;
        assert_eq!(redirect.status(), 302);
        let sha256 = format!("{:x}", sha2::Sha256::digest(vec![7u8; 1000]));
        assert_eq!(header(&redirect, "x-linked-etag"), format!("\"{sha256}\""));
        assert_eq!(header(&redirect, "x-linked-size"), "1000");
        assert_eq!(header(&redirect, "x-repo-commit"), repo().commit());
        let location = header(&redirect, "location").to_owned();
        assert_eq!(location, format!("{}/lfs/{sha256}", hub.endpoint()));
        let stored = get(&location, Some("bytes=990-")).await;
        assert_eq!(stored.status(), 206);
        assert_eq!(header(&stored, "content-range"), "bytes 990-999/1000");
        assert_eq!(stored.bytes().await.expect("body").len(), 10);
        assert_eq!(get(&location, Some("bytes=1000-")).await.status(), 416);
    }

    #[tokio::test]
    async fn errors_carry_the_hub_error_codes() {
        let hub = FakeHub::start(vec![repo()]).await.expect("start");
        let base = hub.endpoint();
        let cases = [
            (
                "/org/other/resolve/main/config.json",
                401,
                "RepositoryNotFound",
            ),
            ("/org/model/resolve/v9/config.json", 404, "RevisionNotFound"),
            ("/org/model/resolve/main/missing.json", 404, "EntryNotFound"),
        ];
        for (path, status, code) in cases {
            let response = get(&format!("{base}{path}"), None).await;
            assert_eq!(response.status(), status, "{path}");
            assert_eq!(header(&response, "x-error-code"), code, "{path}");
        }
        hub.fail_with(Some(500));
        let url = format!("{base}/org/model/resolve/main/config.json");
        assert_eq!(get(&url, None).await.status(), 500);
        hub.fail_with(None);
        assert_eq!(get(&url, None).await.status(), 200);
        let statuses: Vec<u16> = hub.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![401, 404, 404, 500, 200]);
    }

    #[tokio::test]
    async fn a_stopped_hub_refuses_connections() {
        let hub = FakeHub::start(vec![repo()]).await.expect("start");
        let url = format!("{}/org/model/resolve/main/config.json", hub.endpoint());
        hub.stop().await;
        assert!(reqwest::get(&url).await.is_err());
    }
}
