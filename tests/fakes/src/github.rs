//! A fake GitHub REST API: the repository and pull request endpoints loop opens pull requests
//! with, written from GitHub's public REST documentation, never from loop's own types:
//! - "REST API endpoints for repositories" (docs.github.com/rest/repos/repos#get-a-repository),
//! - "REST API endpoints for pull requests" (docs.github.com/rest/pulls/pulls#create-a-pull-request
//!   and #list-pull-requests),
//! - "Authenticating to the REST API" (docs.github.com/rest/authentication/authenticating-to-the-rest-api),
//! - "Getting started with the REST API" (docs.github.com/rest/using-the-rest-api/getting-started-with-the-rest-api,
//!   the `User-Agent` and `X-GitHub-Api-Version` headers),
//! - "Rate limits for the REST API" and "Troubleshooting the REST API"
//!   (docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api,
//!   docs.github.com/rest/using-the-rest-api/troubleshooting-the-rest-api).
//!
//! Point a client at [`FakeGitHub::api_url`] where it would use `https://api.github.com`.
//!
//! Faithful on purpose:
//! - `GET /repos/{owner}/{repo}`, `POST /repos/{owner}/{repo}/pulls` (201 with a `Location`
//!   header), `GET /repos/{owner}/{repo}/pulls?state=&head=owner:branch&base=`; an unknown
//!   repository or route is `404 {"message": "Not Found", ...}`.
//! - A request without `User-Agent` is refused with `403` and a plain text body before anything
//!   else ("Requests with no User-Agent header will be rejected"). `X-GitHub-Api-Version` is
//!   optional; an unsupported one is `400`. Any `Accept` is tolerated
//!   (`application/vnd.github+json` is the recommended one).
//! - A token is sent as `Authorization: Bearer TOKEN` or `Authorization: token TOKEN` (the docs:
//!   "In most cases, you can use Authorization: Bearer or Authorization: token"). A wrong token
//!   is `401 {"message": "Bad credentials", "documentation_url": ...}`; no token at all is
//!   `401 {"message": "Requires authentication", ...}`, the answer GitHub gives on endpoints
//!   that need one (the fake's repositories are private).
//! - Validation errors are `422 {"message": "Validation Failed", "errors": [{"resource":
//!   "PullRequest", "field", "code"}], "documentation_url"}` with the codes GitHub uses
//!   (`missing_field`, `invalid`, and `custom` with a `message`): head equal to base ("No
//!   commits between main and main"), an unknown head or base branch (when the fake knows the
//!   repository's branches), and an open pull request for the same head ("A pull request
//!   already exists for owner:branch.").
//! - Every answer carries `x-ratelimit-limit`, `-remaining`, `-used`, `-reset` (UTC epoch
//!   seconds) and `-resource: core`; each authenticated call uses one of 5000.
//!   [`FakeGitHub::rate_limit_next`] makes the next calls fail as the docs describe: the primary
//!   limit is `403` with `x-ratelimit-remaining: 0` and "API rate limit exceeded", a secondary
//!   limit is `429` with `retry-after` (seconds) and "You have exceeded a secondary rate limit".

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The API version the fake reports (`x-github-api-version-selected`) when a client sends none.
pub const API_VERSION: &str = "2022-11-28";
/// The `X-GitHub-Api-Version` values GitHub accepts today; others are a `400`.
const API_VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];
/// The primary rate limit of a personal access token, per hour.
const RATE_LIMIT: u32 = 5000;
/// The login of the user the token belongs to (the author of every pull request).
pub const USER_LOGIN: &str = "loop-bot";
const USER_ID: u64 = 1;
/// What a branch's head is reported as when the fake does not know it.
const UNKNOWN_SHA: &str = "0000000000000000000000000000000000000000";

const DOC_ROOT: &str = "https://docs.github.com/rest";
const DOC_GET_REPO: &str = "https://docs.github.com/rest/repos/repos#get-a-repository";
const DOC_CREATE_PULL: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
const DOC_LIST_PULLS: &str = "https://docs.github.com/rest/pulls/pulls#list-pull-requests";
const DOC_RATE_LIMITS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";
const DOC_SECONDARY: &str = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits";

/// The branches of a repository with their head commits: `(name, sha)`.
pub type BranchList = Vec<(String, String)>;
/// Reads a repository's branches when a pull request is created, e.g. from a real bare
/// repository with `git for-each-ref`. Called on a blocking thread.
pub type BranchSource = Arc<dyn Fn() -> BranchList + Send + Sync>;

/// A repository the fake serves.
#[derive(Clone)]
pub struct FakeRepo {
    owner: String,
    name: String,
    default_branch: String,
    clone_url: Option<String>,
    /// None: every branch exists (no head or base is refused as unknown).
    branches: Option<BranchSource>,
}

impl std::fmt::Debug for FakeRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRepo")
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("default_branch", &self.default_branch)
            .field("clone_url", &self.clone_url)
            .field("knows_branches", &self.branches.is_some())
            .finish()
    }
}

impl FakeRepo {
    /// `owner/name` with default branch `main`, where every branch name is accepted.
    pub fn new(owner: &str, name: &str) -> FakeRepo {
        FakeRepo {
            owner: owner.to_owned(),
            name: name.to_owned(),
            default_branch: "main".to_owned(),
            clone_url: None,
            branches: None,
        }
    }

    pub fn default_branch(mut self, branch: &str) -> FakeRepo {
        self.default_branch = branch.to_owned();
        self
    }

    /// The `clone_url` to report (e.g. a real git remote's URL); by default one on the fake.
    pub fn clone_url(mut self, url: &str) -> FakeRepo {
        self.clone_url = Some(url.to_owned());
        self
    }

    /// Only these branches exist (their heads are reported as unknown).
    pub fn branches(mut self, names: &[&str]) -> FakeRepo {
        let list: BranchList = names
            .iter()
            .map(|name| ((*name).to_owned(), UNKNOWN_SHA.to_owned()))
            .collect();
        self.branches = Some(Arc::new(move || list.clone()));
        self
    }

    /// The branches are whatever `source` says at the time of each request.
    pub fn branches_from(mut self, source: BranchSource) -> FakeRepo {
        self.branches = Some(source);
        self
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// A pull request the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// `owner/name` of the repository.
    pub repo: String,
    pub title: String,
    pub body: Option<String>,
    /// The head branch name (`head.ref`), without an `owner:` prefix.
    pub head: String,
    /// The head commit at creation, when the fake knows the branches.
    pub head_sha: String,
    pub base: String,
    pub draft: bool,
    /// `open` or `closed`.
    pub state: String,
    pub html_url: String,
    /// `created_at` (ISO 8601, UTC).
    pub created_at: String,
}

/// One request as the fake received it. The token itself is never kept.
#[derive(Debug, Clone, PartialEq)]
pub struct GitHubRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Whether it carried the right token.
    pub authorized: bool,
    pub user_agent: Option<String>,
    pub accept: Option<String>,
    pub api_version: Option<String>,
    /// The JSON body, when there was one that parsed.
    pub body: Option<Value>,
    /// The status the fake answered with.
    pub status: u16,
}

/// How the next calls are refused by [`FakeGitHub::rate_limit_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// The hourly budget is spent: `403`, `x-ratelimit-remaining: 0`, retry after
    /// `x-ratelimit-reset`.
    Primary,
    /// Too many requests in a short time: `429` with `retry-after: SECS`.
    Secondary { retry_after_secs: u64 },
}

#[derive(Default)]
struct World {
    requests: Vec<GitHubRequest>,
    pulls: Vec<PullRequest>,
    /// Pull request numbers taken, per repository (GitHub numbers per repository).
    numbers: HashMap<String, u64>,
    used: u32,
    /// Calls still to refuse, and how.
    throttle: Option<(RateLimit, u32)>,
}

struct Shared {
    addr: SocketAddr,
    token: String,
    repos: Vec<FakeRepo>,
    /// When the rate limit window resets, in UTC epoch seconds.
    reset: u64,
    world: Mutex<World>,
    shutdown: CancellationToken,
}

impl Shared {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn repo(&self, owner: &str, name: &str) -> Option<&FakeRepo> {
        // GitHub matches owner and repository names case-insensitively.
        self.repos
            .iter()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }
}

/// A running fake GitHub API on `127.0.0.1`. Dropping it stops the server; [`FakeGitHub::stop`]
/// also waits until the port is closed.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for FakeGitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitHub")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGitHub {
    /// Serves `repos` to clients holding `token`; connections are accepted once this returns.
    pub async fn start(token: &str, repos: Vec<FakeRepo>) -> std::io::Result<FakeGitHub> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            token: token.to_owned(),
            repos,
            reset: now_secs() + 3600,
            world: Mutex::new(World::default()),
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
        Ok(FakeGitHub {
            shared,
            server: Some(server),
        })
    }

    /// The API root, e.g. `http://127.0.0.1:40123`, where GitHub's is `https://api.github.com`.
    pub fn api_url(&self) -> String {
        self.shared.base()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<GitHubRequest> {
        self.shared.world().requests.clone()
    }

    /// Every pull request created so far, in order.
    pub fn pulls(&self) -> Vec<PullRequest> {
        self.shared.world().pulls.clone()
    }

    /// Refuses the next `calls` authenticated calls the way `limit` describes.
    pub fn rate_limit_next(&self, calls: u32, limit: RateLimit) {
        self.shared.world().throttle = (calls > 0).then_some((limit, calls));
    }

    /// Stops the server and waits for it, so that the port refuses connections.
    pub async fn stop(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "fake github server failed"),
                Err(error) => tracing::warn!(%error, "fake github server task failed"),
            }
        }
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-12-07T03:25:59Z` for a UTC epoch second (days to civil date, Howard Hinnant's method).
fn iso8601(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// GitHub's error body: `{"message", "documentation_url", "status"}`.
fn error(status: StatusCode, message: &str, documentation_url: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "message": message,
            "documentation_url": documentation_url,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// `422 Validation Failed` with one error object.
fn validation_failed(error: Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "message": "Validation Failed",
            "errors": [error],
            "documentation_url": DOC_CREATE_PULL,
            "status": "422",
        })),
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The token of `Authorization: Bearer T` or `Authorization: token T` (scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim().to_owned())
}

fn user_json() -> Value {
    json!({"login": USER_LOGIN, "id": USER_ID, "type": "User", "site_admin": false})
}

fn repo_json(base: &str, repo: &FakeRepo) -> Value {
    let full_name = repo.full_name();
    let html_url = format!("{base}/{full_name}");
    let clone_url = repo
        .clone_url
        .clone()
        .unwrap_or_else(|| format!("{html_url}.git"));
    let created = iso8601(1_700_000_000);
    json!({
        "id": 1000,
        "node_id": "R_kgDOfake",
        "name": repo.name,
        "full_name": full_name,
        "private": true,
        "visibility": "private",
        "owner": {"login": repo.owner, "id": 2, "type": "Organization", "site_admin": false},
        "html_url": html_url,
        "description": null,
        "fork": false,
        "url": format!("{base}/repos/{full_name}"),
        "pulls_url": format!("{base}/repos/{full_name}/pulls{{/number}}"),
        "git_url": format!("git://127.0.0.1/{full_name}.git"),
        "ssh_url": format!("git@127.0.0.1:{full_name}.git"),
        "clone_url": clone_url,
        "default_branch": repo.default_branch,
        "archived": false,
        "disabled": false,
        "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
        "created_at": created,
        "updated_at": created,
        "pushed_at": created,
    })
}

fn pull_json(base: &str, repo: &FakeRepo, pull: &PullRequest) -> Value {
    let full_name = repo.full_name();
    let api = format!("{base}/repos/{full_name}/pulls/{}", pull.number);
    let created = &pull.created_at;
    json!({
        "url": api,
        "id": 5000 + pull.number,
        "node_id": format!("PR_kwDOfake{}", pull.number),
        "html_url": pull.html_url,
        "diff_url": format!("{}.diff", pull.html_url),
        "patch_url": format!("{}.patch", pull.html_url),
        "issue_url": format!("{base}/repos/{full_name}/issues/{}", pull.number),
        "number": pull.number,
        "state": pull.state,
        "locked": false,
        "title": pull.title,
        "user": user_json(),
        "body": pull.body,
        "created_at": created,
        "updated_at": created,
        "closed_at": null,
        "merged_at": null,
        "merge_commit_sha": null,
        "draft": pull.draft,
        "head": {
            "label": format!("{}:{}", repo.owner, pull.head),
            "ref": pull.head,
            "sha": pull.head_sha,
            "user": {"login": repo.owner},
            "repo": repo_json(base, repo),
        },
        "base": {
            "label": format!("{}:{}", repo.owner, pull.base),
            "ref": pull.base,
            "sha": UNKNOWN_SHA,
            "user": {"login": repo.owner},
            "repo": repo_json(base, repo),
        },
        "author_association": "MEMBER",
        "merged": false,
        "mergeable": null,
        "maintainer_can_modify": false,
        "commits": 1,
        "changed_files": 1,
    })
}

/// Marks an answer refused by the primary rate limit, so that `serve` reports the budget as
/// spent (`x-ratelimit-remaining: 0`).
#[derive(Clone, Copy)]
struct PrimaryLimitHit;

/// What a request asks for, once the path is understood.
enum Route {
    GetRepo,
    ListPulls,
    CreatePull,
}

fn route(method: &Method, path: &str) -> Option<(Route, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["repos", owner, name] if method == Method::GET => {
            Some((Route::GetRepo, (*owner).to_owned(), (*name).to_owned()))
        }
        ["repos", owner, name, "pulls"] if method == Method::GET => {
            Some((Route::ListPulls, (*owner).to_owned(), (*name).to_owned()))
        }
        ["repos", owner, name, "pulls"] if method == Method::POST => {
            Some((Route::CreatePull, (*owner).to_owned(), (*name).to_owned()))
        }
        _ => None,
    }
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers);
    let authorized = token.as_deref() == Some(shared.token.as_str());
    let parsed_body = serde_json::from_slice::<Value>(&body).ok();
    // The branches are read before the world is locked: the source may run git.
    let branches = match route(&method, uri.path()) {
        Some((Route::CreatePull, owner, name)) => match shared
            .repo(&owner, &name)
            .and_then(|repo| repo.branches.clone())
        {
            Some(source) => tokio::task::spawn_blocking(move || source()).await.ok(),
            None => None,
        },
        _ => None,
    };
    let mut response = answer(
        &shared,
        &method,
        &uri,
        &headers,
        token.as_deref(),
        &body,
        branches,
    );
    let mut world = shared.world();
    let remaining = if response.extensions().get::<PrimaryLimitHit>().is_some() {
        0
    } else {
        RATE_LIMIT.saturating_sub(world.used)
    };
    let out = response.headers_mut();
    out.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    out.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    out.insert(
        "x-ratelimit-used",
        HeaderValue::from(RATE_LIMIT - remaining),
    );
    out.insert("x-ratelimit-reset", HeaderValue::from(shared.reset));
    out.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    out.insert(
        "x-github-media-type",
        HeaderValue::from_static("github.v3; format=json"),
    );
    out.insert(
        "x-github-api-version-selected",
        headers
            .get("x-github-api-version")
            .filter(|v| {
                API_VERSIONS
                    .iter()
                    .any(|known| v.as_bytes() == known.as_bytes())
            })
            .cloned()
            .unwrap_or(HeaderValue::from_static(API_VERSION)),
    );
    world.requests.push(GitHubRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        authorized,
        user_agent: header_str(&headers, header::USER_AGENT),
        accept: header_str(&headers, header::ACCEPT),
        api_version: header_str(&headers, "x-github-api-version"),
        body: parsed_body,
        status: response.status().as_u16(),
    });
    response
}

fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    token: Option<&str>,
    body: &Bytes,
    branches: Option<BranchList>,
) -> Response {
    // GitHub refuses a request without a User-Agent before looking at anything else, with a
    // text body.
    if header_str(headers, header::USER_AGENT).is_none_or(|ua| ua.trim().is_empty()) {
        let mut response = (
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a \
             User-Agent header (https://docs.github.com/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent). \
             Check https://developer.github.com for other possible causes.\n",
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }
    if let Some(version) = header_str(headers, "x-github-api-version")
        && !API_VERSIONS.contains(&version.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("API version {version} is not supported."),
            "https://docs.github.com/rest/about-the-rest-api/api-versions",
        );
    }
    match token {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
                DOC_ROOT,
            );
        }
        Some(token) if token != shared.token => {
            return error(StatusCode::UNAUTHORIZED, "Bad credentials", DOC_ROOT);
        }
        Some(_) => {}
    }
    let mut world = shared.world();
    if let Some((limit, left)) = world.throttle {
        world.throttle = (left > 1).then_some((limit, left - 1));
        return match limit {
            RateLimit::Primary => {
                let mut response = error(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "API rate limit exceeded for user ID {USER_ID}. If you reach out to \
                         GitHub Support for help, please include the request ID."
                    ),
                    DOC_RATE_LIMITS,
                );
                response.extensions_mut().insert(PrimaryLimitHit);
                response
            }
            RateLimit::Secondary { retry_after_secs } => {
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "You have exceeded a secondary rate limit. Please wait a few minutes \
                     before you try again. If you reach out to GitHub Support for help, please \
                     include the request ID.",
                    DOC_SECONDARY,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                response
            }
        };
    }
    world.used = world.used.saturating_add(1);
    let Some((route, owner, name)) = route(method, uri.path()) else {
        return error(StatusCode::NOT_FOUND, "Not Found", DOC_ROOT);
    };
    let base = shared.base();
    let Some(repo) = shared.repo(&owner, &name) else {
        let doc = match route {
            Route::GetRepo => DOC_GET_REPO,
            Route::ListPulls => DOC_LIST_PULLS,
            Route::CreatePull => DOC_CREATE_PULL,
        };
        return error(StatusCode::NOT_FOUND, "Not Found", doc);
    };
    match route {
        Route::GetRepo => axum::Json(repo_json(&base, repo)).into_response(),
        Route::ListPulls => list_pulls(&base, repo, &world, uri.query().unwrap_or("")),
        Route::CreatePull => create_pull(&base, repo, &mut world, body, branches),
    }
}

/// `GET /repos/{owner}/{repo}/pulls`: `state` (open, closed, all; default open), `head`
/// (`user:ref-name`), `base` (a branch name).
fn list_pulls(base: &str, repo: &FakeRepo, world: &World, query: &str) -> Response {
    let mut state = "open".to_owned();
    let mut head = None;
    let mut base_filter = None;
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "state" => state = value,
            "head" => head = Some(value),
            "base" => base_filter = Some(value),
            _ => {}
        }
    }
    let full_name = repo.full_name();
    let pulls: Vec<Value> = world
        .pulls
        .iter()
        .filter(|p| p.repo == full_name)
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| {
            head.as_deref().is_none_or(|h| match h.split_once(':') {
                Some((user, branch)) => user.eq_ignore_ascii_case(&repo.owner) && branch == p.head,
                None => h == p.head,
            })
        })
        .filter(|p| base_filter.as_deref().is_none_or(|b| b == p.base))
        .map(|p| pull_json(base, repo, p))
        .collect();
    axum::Json(Value::Array(pulls)).into_response()
}

/// `POST /repos/{owner}/{repo}/pulls` with `title`, `head`, `base`, `body`, `draft`.
fn create_pull(
    base: &str,
    repo: &FakeRepo,
    world: &mut World,
    body: &Bytes,
    branches: Option<BranchList>,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Problems parsing JSON",
            DOC_CREATE_PULL,
        );
    };
    let field = |name: &str| request.get(name).and_then(Value::as_str).map(str::to_owned);
    for name in ["title", "head", "base"] {
        if field(name).is_none_or(|v| v.is_empty()) {
            return validation_failed(
                json!({"resource": "PullRequest", "field": name, "code": "missing_field"}),
            );
        }
    }
    let title = field("title").unwrap_or_default();
    let head_spec = field("head").unwrap_or_default();
    let base_branch = field("base").unwrap_or_default();
    // `head` is `branch`, or `owner:branch` (a fork's owner for a cross-repository request;
    // this fake has no forks).
    let head = match head_spec.split_once(':') {
        Some((owner, branch)) if owner.eq_ignore_ascii_case(&repo.owner) => branch.to_owned(),
        Some(_) => {
            return validation_failed(
                json!({"resource": "PullRequest", "field": "head", "code": "invalid"}),
            );
        }
        None => head_spec.clone(),
    };
    let known = |name: &str| {
        branches
            .as_ref()
            .is_none_or(|list| list.iter().any(|(branch, _)| branch == name))
    };
    if !known(&base_branch) {
        return validation_failed(
            json!({"resource": "PullRequest", "field": "base", "code": "invalid"}),
        );
    }
    if !known(&head) {
        return validation_failed(
            json!({"resource": "PullRequest", "field": "head", "code": "invalid"}),
        );
    }
    if head == base_branch {
        return validation_failed(json!({
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("No commits between {base_branch} and {head}"),
        }));
    }
    let full_name = repo.full_name();
    if world
        .pulls
        .iter()
        .any(|p| p.repo == full_name && p.state == "open" && p.head == head)
    {
        return validation_failed(json!({
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("A pull request already exists for {}:{head}.", repo.owner),
        }));
    }
    let head_sha = branches
        .as_ref()
        .and_then(|list| list.iter().find(|(branch, _)| *branch == head))
        .map_or_else(|| UNKNOWN_SHA.to_owned(), |(_, sha)| sha.clone());
    let number = {
        let next = world.numbers.entry(full_name.clone()).or_insert(0);
        *next += 1;
        *next
    };
    let pull = PullRequest {
        number,
        repo: full_name.clone(),
        title,
        body: field("body"),
        head,
        head_sha,
        base: base_branch,
        draft: request
            .get("draft")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        state: "open".to_owned(),
        html_url: format!("{base}/{full_name}/pull/{number}"),
        created_at: iso8601(now_secs()),
    };
    let json = pull_json(base, repo, &pull);
    world.pulls.push(pull);
    let mut response = (StatusCode::CREATED, axum::Json(json)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{base}/repos/{full_name}/pulls/{number}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `a=b&c=d` with `%XX` and `+` decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_faketoken0123456789";

    async fn github() -> FakeGitHub {
        let repos = vec![
            FakeRepo::new("acme", "widgets").clone_url("http://127.0.0.1:1/widgets.git"),
            FakeRepo::new("acme", "strict")
                .default_branch("trunk")
                .branches(&["trunk", "loop/feature"]),
        ];
        FakeGitHub::start(TOKEN, repos).await.expect("start")
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent("loop-tests/1.0")
            .build()
            .expect("client")
    }

    /// A request the way GitHub's docs write them: Bearer token, the JSON media type and the
    /// API version.
    fn request(method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, url)
            .bearer_auth(TOKEN)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
    }

    fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{name} missing: {:?}", response.headers()))
    }

    async fn create(github: &FakeGitHub, repo: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let response = request(
            reqwest::Method::POST,
            &format!("{}/repos/{repo}/pulls", github.api_url()),
        )
        .json(&body)
        .send()
        .await
        .expect("send");
        let status = response.status();
        (status, response.json().await.expect("json body"))
    }

    #[tokio::test]
    async fn get_repository_answers_with_default_branch_and_urls() {
        let github = github().await;
        let url = format!("{}/repos/acme/widgets", github.api_url());
        let response = request(reqwest::Method::GET, &url)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), "5000");
        assert_eq!(header(&response, "x-ratelimit-remaining"), "4999");
        assert_eq!(header(&response, "x-ratelimit-resource"), "core");
        assert!(
            header(&response, "x-ratelimit-reset")
                .parse::<u64>()
                .expect("epoch")
                > now_secs()
        );
        let repo: Value = response.json().await.expect("json");
        assert_eq!(repo["default_branch"], "main");
        assert_eq!(repo["full_name"], "acme/widgets");
        assert_eq!(repo["clone_url"], "http://127.0.0.1:1/widgets.git");
        assert_eq!(
            repo["html_url"],
            format!("{}/acme/widgets", github.api_url())
        );

        // `token TOKEN` works as well as `Bearer TOKEN`; each call uses one of the budget.
        let response = client()
            .get(&url)
            .header("authorization", format!("token {TOKEN}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-remaining"), "4998");
        let strict: Value = request(
            reqwest::Method::GET,
            &format!("{}/repos/acme/strict", github.api_url()),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
        assert_eq!(strict["default_branch"], "trunk");

        let missing = request(
            reqwest::Method::GET,
            &format!("{}/repos/acme/nothing", github.api_url()),
        )
        .send()
        .await
        .expect("send");
        assert_eq!(missing.status(), 404);
        let body: Value = missing.json().await.expect("json");
        assert_eq!(body["message"], "Not Found");
        assert!(body["documentation_url"].is_string());
    }

    #[tokio::test]
    async fn authentication_and_headers_are_checked_as_github_does() {
        let github = github().await;
        let url = format!("{}/repos/acme/widgets", github.api_url());

        let wrong = client()
            .get(&url)
            .bearer_auth("ghp_wrong")
            .send()
            .await
            .expect("send");
        assert_eq!(wrong.status(), 401);
        assert!(wrong.headers().contains_key("x-ratelimit-limit"));
        let body: Value = wrong.json().await.expect("json");
        assert_eq!(body["message"], "Bad credentials");
        assert!(
            body["documentation_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://docs.github.com/"))
        );

        let missing = client().get(&url).send().await.expect("send");
        assert_eq!(missing.status(), 401);
        let body: Value = missing.json().await.expect("json");
        assert_eq!(body["message"], "Requires authentication");

        // reqwest sends no User-Agent unless told to: GitHub refuses that with a 403.
        let anonymous = reqwest::Client::new()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(anonymous.status(), 403);
        assert!(anonymous.text().await.expect("text").contains("User-Agent"));

        let old_version = client()
            .get(&url)
            .bearer_auth(TOKEN)
            .header("x-github-api-version", "2011-01-01")
            .send()
            .await
            .expect("send");
        assert_eq!(old_version.status(), 400);

        // No Accept and no version header is fine; the selected version is reported.
        let plain = client()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(plain.status(), 200);
        assert_eq!(header(&plain, "x-github-api-version-selected"), API_VERSION);

        let requests = github.requests();
        assert_eq!(
            requests.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![401, 401, 403, 400, 200]
        );
        assert_eq!(
            requests.iter().map(|r| r.authorized).collect::<Vec<_>>(),
            vec![false, false, true, true, true]
        );
        assert_eq!(requests[0].user_agent.as_deref(), Some("loop-tests/1.0"));
        assert_eq!(requests[2].user_agent, None);
    }

    #[tokio::test]
    async fn a_pull_request_is_created_and_found_by_head() {
        let github = github().await;
        let (status, pull) = create(
            &github,
            "acme/widgets",
            json!({"title": "Fix login", "head": "loop/fix-login", "base": "main",
                   "body": "From the thread", "draft": true}),
        )
        .await;
        assert_eq!(status, 201, "{pull}");
        assert_eq!(pull["number"], 1);
        assert_eq!(pull["state"], "open");
        assert_eq!(pull["draft"], true);
        assert_eq!(pull["head"]["ref"], "loop/fix-login");
        assert_eq!(pull["head"]["label"], "acme:loop/fix-login");
        assert_eq!(pull["base"]["ref"], "main");
        assert_eq!(
            pull["html_url"],
            format!("{}/acme/widgets/pull/1", github.api_url())
        );
        let created_at = pull["created_at"].as_str().expect("created_at").to_owned();
        assert!(created_at.ends_with('Z'), "{created_at}");
        assert_eq!(
            github.pulls(),
            vec![PullRequest {
                number: 1,
                repo: "acme/widgets".to_owned(),
                title: "Fix login".to_owned(),
                body: Some("From the thread".to_owned()),
                head: "loop/fix-login".to_owned(),
                head_sha: UNKNOWN_SHA.to_owned(),
                base: "main".to_owned(),
                draft: true,
                state: "open".to_owned(),
                html_url: format!("{}/acme/widgets/pull/1", github.api_url()),
                created_at,
            }]
        );

        // `owner:branch` names the same head; a second pull request for it is refused.
        let (status, again) = create(
            &github,
            "acme/widgets",
            json!({"title": "Again", "head": "acme:loop/fix-login", "base": "main"}),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(again["message"], "Validation Failed");
        assert_eq!(again["errors"][0]["resource"], "PullRequest");
        assert_eq!(again["errors"][0]["code"], "custom");
        assert_eq!(
            again["errors"][0]["message"],
            "A pull request already exists for acme:loop/fix-login."
        );

        let (status, second) = create(
            &github,
            "acme/widgets",
            json!({"title": "Other", "head": "loop/other", "base": "main"}),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(second["number"], 2);

        let list = |query: &'static str| {
            let url = format!("{}/repos/acme/widgets/pulls?{query}", github.api_url());
            async move {
                let response = request(reqwest::Method::GET, &url)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(response.status(), 200);
                response.json::<Vec<Value>>().await.expect("json")
            }
        };
        let found = list("head=acme%3Aloop%2Ffix-login&state=open").await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["number"], 1);
        assert_eq!(list("head=acme:loop/other").await[0]["number"], 2);
        assert!(list("head=acme:loop/none&state=open").await.is_empty());
        assert!(list("state=closed").await.is_empty());
        assert_eq!(list("").await.len(), 2);
    }

    #[tokio::test]
    async fn invalid_pull_requests_are_refused_with_githubs_errors() {
        let github = github().await;
        let check = |repo: &'static str, body: Value, status: u16, error: Value| {
            let github = &github;
            async move {
                let (got, answer) = create(github, repo, body.clone()).await;
                assert_eq!(got.as_u16(), status, "{body} -> {answer}");
                if status == 422 {
                    assert_eq!(answer["message"], "Validation Failed");
                    assert_eq!(answer["errors"][0], error, "{body}");
                    assert_eq!(answer["documentation_url"], DOC_CREATE_PULL);
                } else {
                    assert_eq!(answer["message"], error, "{body}");
                }
            }
        };
        check(
            "acme/strict",
            json!({"title": "t", "head": "trunk", "base": "trunk"}),
            422,
            json!({"resource": "PullRequest", "code": "custom",
                   "message": "No commits between trunk and trunk"}),
        )
        .await;
        check(
            "acme/strict",
            json!({"title": "t", "head": "loop/missing", "base": "trunk"}),
            422,
            json!({"resource": "PullRequest", "field": "head", "code": "invalid"}),
        )
        .await;
        check(
            "acme/strict",
            json!({"title": "t", "head": "loop/feature", "base": "main"}),
            422,
            json!({"resource": "PullRequest", "field": "base", "code": "invalid"}),
        )
        .await;
        check(
            "acme/strict",
            json!({"head": "loop/feature", "base": "trunk"}),
            422,
            json!({"resource": "PullRequest", "field": "title", "code": "missing_field"}),
        )
        .await;
        check(
            "acme/strict",
            json!({"title": "t", "head": "someone-else:loop/feature", "base": "trunk"}),
            422,
            json!({"resource": "PullRequest", "field": "head", "code": "invalid"}),
        )
        .await;
        check(
            "acme/nothing",
            json!({"title": "t", "head": "a", "base": "b"}),
            404,
            json!("Not Found"),
        )
        .await;
        check(
            "acme/strict",
            json!({"title": "t", "head": "loop/feature", "base": "trunk"}),
            201,
            Value::Null,
        )
        .await;
        assert_eq!(github.pulls().len(), 1);
    }

    #[tokio::test]
    async fn a_live_branch_source_is_read_at_each_request() {
        let branches = Arc::new(Mutex::new(vec![("main".to_owned(), "a".repeat(40))]));
        let source = Arc::clone(&branches);
        let github = FakeGitHub::start(
            TOKEN,
            vec![
                FakeRepo::new("acme", "live").branches_from(Arc::new(move || {
                    source
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                })),
            ],
        )
        .await
        .expect("start");
        let body = json!({"title": "t", "head": "loop/new", "base": "main"});
        let (status, _) = create(&github, "acme/live", body.clone()).await;
        assert_eq!(status, 422);
        branches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(("loop/new".to_owned(), "b".repeat(40)));
        let (status, pull) = create(&github, "acme/live", body).await;
        assert_eq!(status, 201);
        assert_eq!(pull["head"]["sha"], "b".repeat(40));
    }

    #[tokio::test]
    async fn rate_limits_refuse_the_next_calls_then_recover() {
        let github = github().await;
        let url = format!("{}/repos/acme/widgets", github.api_url());
        let get = || request(reqwest::Method::GET, &url).send();

        github.rate_limit_next(2, RateLimit::Primary);
        for _ in 0..2 {
            let response = get().await.expect("send");
            assert_eq!(response.status(), 403);
            assert_eq!(header(&response, "x-ratelimit-remaining"), "0");
            assert_eq!(header(&response, "x-ratelimit-used"), "5000");
            assert!(
                header(&response, "x-ratelimit-reset")
                    .parse::<u64>()
                    .is_ok()
            );
            let body: Value = response.json().await.expect("json");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("API rate limit exceeded"))
            );
        }
        let response = get().await.expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-remaining"), "4999");

        github.rate_limit_next(
            1,
            RateLimit::Secondary {
                retry_after_secs: 7,
            },
        );
        let response = get().await.expect("send");
        assert_eq!(response.status(), 429);
        assert_eq!(header(&response, "retry-after"), "7");
        let body: Value = response.json().await.expect("json");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("secondary rate limit"))
        );
        assert_eq!(get().await.expect("send").status(), 200);
    }

    #[test]
    fn timestamps_are_iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
