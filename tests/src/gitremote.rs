//! A real git remote for tests: a bare repository made by `git init --bare`, served over git's
//! smart HTTP protocol by the real `git http-backend` (run as a CGI per request) behind a small
//! axum server that demands HTTP Basic authentication, the way GitHub does for a private
//! repository: any user name (GitHub's convention is `x-access-token`), the token as password.
//! A missing or wrong token is a `401` with `WWW-Authenticate: Basic realm="..."`, so `git push`
//! really authenticates and really fails without the token.
//!
//! The server runs on its own thread and runtime: tests drive git with blocking
//! `std::process::Command`s, which would starve a server sharing the test's runtime.
//!
//! The CGI environment follows git-http-backend(1) and RFC 3875: `GIT_PROJECT_ROOT` +
//! `PATH_INFO` locate the repository, `GIT_HTTP_EXPORT_ALL` exports it, `REMOTE_USER` (set once
//! authenticated) enables `receive-pack`, the request body goes to stdin, and the answer is CGI
//! headers (`Status:` among them), a blank line, then the body.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

/// The CGI program that serves the repository.
pub const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";
/// The repository's name in its URL and under the project root.
pub const REPO_NAME: &str = "repo.git";
/// The user name GitHub expects with a token (any name is accepted here, as there).
pub const TOKEN_USER: &str = "x-access-token";
const REALM: &str = "loop test git remote";

/// One HTTP request the remote answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    pub method: String,
    /// E.g. `/repo.git/info/refs` or `/repo.git/git-receive-pack`.
    pub path: String,
    /// E.g. `service=git-receive-pack`.
    pub query: Option<String>,
    /// The Basic auth user name, when one was sent (right token or not).
    pub user: Option<String>,
    /// Whether the right token came with it.
    pub authorized: bool,
    pub status: u16,
}

struct Shared {
    /// `GIT_PROJECT_ROOT`: the directory holding [`REPO_NAME`].
    root: PathBuf,
    token: String,
    requests: Mutex<Vec<GitRequest>>,
}

/// A running authenticated git remote on `127.0.0.1`. Dropping it stops the server and
/// deletes the repository.
pub struct GitRemote {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: Option<std::thread::JoinHandle<()>>,
    /// Holds the project root, the askpass script and the client's empty home.
    dir: tempfile::TempDir,
    /// The repository's path under the root, e.g. [`REPO_NAME`] or `acme/app.git`.
    name: String,
}

impl std::fmt::Debug for GitRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRemote")
            .field("url", &self.url())
            .field("bare_path", &self.bare_path())
            .finish_non_exhaustive()
    }
}

impl GitRemote {
    /// Creates an empty bare repository (default branch `main`) and serves it to clients
    /// holding `token`; connections are accepted once this returns.
    pub fn start(token: &str) -> anyhow::Result<GitRemote> {
        GitRemote::start_named(token, REPO_NAME)
    }

    /// As [`GitRemote::start`], with the repository at `name` under the root, as a forge
    /// lays them out (`acme/app.git` is served at `http://127.0.0.1:PORT/acme/app.git`).
    pub fn start_named(token: &str, name: &str) -> anyhow::Result<GitRemote> {
        let dir = tempfile::tempdir().context("git remote temp dir")?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).context("git remote project root")?;
        let bare = root.join(name);
        run_git(
            Command::new("git")
                .args(["init", "--quiet", "--bare", "--initial-branch=main"])
                .arg(&bare),
        )?;
        std::fs::create_dir_all(dir.path().join("home")).context("client home")?;
        write_askpass(&dir.path().join("askpass.sh"))?;

        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("bind git remote")?;
        listener
            .set_nonblocking(true)
            .context("git remote listener")?;
        let addr = listener.local_addr().context("git remote address")?;
        let shared = Arc::new(Shared {
            root,
            token: token.to_owned(),
            requests: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .fallback(serve)
            // Pushes can be large; git sends them in one POST.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("git remote runtime")?;
        let server = std::thread::Builder::new()
            .name("git-remote".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            eprintln!("git remote: listener: {error}");
                            return;
                        }
                    };
                    if let Err(error) = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                    {
                        eprintln!("git remote: server: {error}");
                    }
                });
            })
            .context("git remote thread")?;
        Ok(GitRemote {
            addr,
            shared,
            shutdown,
            server: Some(server),
            dir,
            name: name.to_owned(),
        })
    }

    /// `http://127.0.0.1:PORT/repo.git` (or the name it was started with).
    pub fn url(&self) -> String {
        format!("http://{}/{}", self.addr, self.name)
    }

    /// The bare repository on disk, for `git --git-dir`.
    pub fn bare_path(&self) -> PathBuf {
        self.shared.root.join(&self.name)
    }

    /// The branch names in the bare repository, sorted, read with real git.
    pub fn branches(&self) -> Vec<String> {
        self.heads().into_iter().map(|(name, _)| name).collect()
    }

    /// `(branch, commit sha)` for every branch, sorted by name: what
    /// `loop_fakes::github::FakeRepo::branches_from` wants.
    pub fn heads(&self) -> Vec<(String, String)> {
        heads_in(&self.bare_path())
    }

    /// [`GitRemote::heads`] as a source the fake GitHub reads when a pull request is created.
    pub fn branch_source(&self) -> loop_fakes::github::BranchSource {
        let bare = self.bare_path();
        Arc::new(move || heads_in(&bare))
    }

    /// The commit `rev` (a branch name, or any revision) names in the bare repository.
    pub fn rev_parse(&self, rev: &str) -> Option<String> {
        let output = self
            .bare_git()
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{rev}^{{commit}}"))
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Fills the remote from `dir`, directly on disk (the remote's owner needs no token): a git
    /// repository pushes all its branches and the remote's HEAD follows its current branch; a
    /// plain directory becomes one commit on `main`.
    pub fn seed_from(&self, dir: &Path) -> anyhow::Result<()> {
        let bare = self.bare_path();
        if dir.join(".git").exists() {
            run_git(
                self.client_git(dir)
                    .args(["push", "--quiet"])
                    .arg(&bare)
                    .arg("refs/heads/*:refs/heads/*"),
            )?;
            let head = output_git(
                self.client_git(dir)
                    .args(["symbolic-ref", "--short", "HEAD"]),
            )?;
            run_git(
                self.bare_git()
                    .args(["symbolic-ref", "HEAD"])
                    .arg(format!("refs/heads/{}", head.trim())),
            )?;
            return Ok(());
        }
        // A throwaway repository whose work tree is `dir`, so `dir` itself stays as it is.
        let seed = tempfile::tempdir().context("seed repository")?;
        let git_dir = seed.path().join("seed.git");
        let seed_git = || {
            let mut command = self.client_git(dir);
            command
                .arg("--git-dir")
                .arg(&git_dir)
                .arg("--work-tree")
                .arg(dir);
            command
        };
        run_git(
            self.client_git(dir)
                .args(["init", "--quiet", "--bare", "--initial-branch=main"])
                .arg(&git_dir),
        )?;
        run_git(seed_git().args(["add", "-A"]))?;
        run_git(seed_git().args(["commit", "--quiet", "-m", "initial"]))?;
        run_git(
            seed_git()
                .args(["push", "--quiet"])
                .arg(&bare)
                .arg("main:refs/heads/main"),
        )
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A `git` client command working in `dir` that can never prompt: an empty home and no
    /// system or global config (so no credential helper answers), `GIT_TERMINAL_PROMPT=0`, and
    /// with `token`, a `GIT_ASKPASS` script that answers [`TOKEN_USER`] and the token (passed
    /// in the environment, never written to a file or the repository's config).
    pub fn git(&self, dir: &Path, token: Option<&str>) -> Command {
        let mut command = self.client_git(dir);
        command.env_remove("GIT_ASKPASS").env_remove("SSH_ASKPASS");
        if let Some(token) = token {
            command
                .env("GIT_ASKPASS", self.dir.path().join("askpass.sh"))
                .env("LOOP_TEST_GIT_TOKEN", token);
        }
        command
    }

    /// Stops the server and waits until the port is closed.
    pub fn stop(mut self) {
        self.stop_server();
    }

    fn stop_server(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take()
            && server.join().is_err()
        {
            eprintln!("git remote: server thread panicked");
        }
    }

    /// Git with nothing from the environment's configuration: what every command here builds on.
    fn client_git(&self, dir: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .current_dir(dir)
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            // The test (root) seeds from checkouts that belong to the agent's uid.
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*");
        command
    }

    fn bare_git(&self) -> Command {
        let mut command = self.client_git(&self.shared.root);
        command.arg("--git-dir").arg(self.bare_path());
        command
    }
}

impl Drop for GitRemote {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The askpass program git runs with the prompt as its argument ("Username for '...': " or
/// "Password for '...': ").
fn write_askpass(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(
        path,
        "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"${LOOP_TEST_GIT_USER:-x-access-token}\" ;;\n  *) printf '%s\\n' \"$LOOP_TEST_GIT_TOKEN\" ;;\nesac\n",
    )
    .with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", path.display()))
}

fn run_git(command: &mut Command) -> anyhow::Result<()> {
    output_git(command).map(drop)
}

fn output_git(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The user name, when `Authorization: Basic` carries `user:token` with the right token.
/// Returns `(user sent, authorized)`.
fn basic_auth(headers: &HeaderMap, token: &str) -> (Option<String>, bool) {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim().to_owned())
    else {
        return (None, false);
    };
    let Some(decoded) = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    else {
        return (None, false);
    };
    match decoded.split_once(':') {
        Some((user, password)) => (Some(user.to_owned()), password == token),
        None => (Some(decoded), false),
    }
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (user, authorized) = basic_auth(&headers, &shared.token);
    let response = if authorized {
        run_backend(
            &shared,
            &method,
            &uri,
            &headers,
            user.as_deref().unwrap_or(TOKEN_USER),
            body,
        )
        .await
    } else {
        let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!("Basic realm=\"{REALM}\""))
                .expect("the realm is a valid header value"),
        );
        response
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(GitRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            user,
            authorized,
            status: response.status().as_u16(),
        });
    response
}

/// Runs `git http-backend` for one request and turns its CGI answer into a response.
async fn run_backend(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    user: &str,
    body: Bytes,
) -> Response {
    let header_env = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut command = tokio::process::Command::new(HTTP_BACKEND);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header_env(&header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("AUTH_TYPE", "Basic")
        // git gzips large request bodies and says so; http-backend inflates them.
        .env(
            "HTTP_CONTENT_ENCODING",
            header_env(&header::CONTENT_ENCODING),
        )
        // Protocol v2 is asked for with the `Git-Protocol` header (git-http-backend(1)).
        .env(
            "GIT_PROTOCOL",
            header_env(&HeaderName::from_static("git-protocol")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("spawn {HTTP_BACKEND}: {error}\n"),
            )
                .into_response();
        }
    };
    // The body is written while the output is read: a large push would otherwise fill both
    // pipes and stall.
    let writer = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        })
    });
    let output = child.wait_with_output().await;
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{HTTP_BACKEND}: {error}\n"),
            )
                .into_response();
        }
    };
    if !output.stderr.is_empty() {
        eprintln!(
            "git http-backend: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    match parse_cgi(&output.stdout) {
        Some(response) => response,
        None => (
            StatusCode::BAD_GATEWAY,
            format!("{HTTP_BACKEND} answered without CGI headers\n"),
        )
            .into_response(),
    }
}

/// A CGI answer (RFC 3875 section 6): header lines, `Status: 200 OK` among them or 200 by
/// default, an empty line, the body. Lines end with `\r\n` or `\n`.
fn parse_cgi(stdout: &[u8]) -> Option<Response> {
    let (head, body) = match find(stdout, b"\r\n\r\n") {
        Some(end) => (&stdout[..end], &stdout[end + 4..]),
        None => {
            let end = find(stdout, b"\n\n")?;
            (&stdout[..end], &stdout[end + 2..])
        }
    };
    let mut response = Response::new(axum::body::Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            *response.status_mut() = StatusCode::from_u16(code).ok()?;
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Some(response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `(branch, commit sha)` of every branch of the bare repository at `bare`, sorted by name,
/// read with real git and no user or system config.
fn heads_in(bare: &Path) -> Vec<(String, String)> {
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args([
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output();
    let Ok(output) = output else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, sha)| (name.to_owned(), sha.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghs_remote_token_0123456789";

    /// A remote seeded with one commit on `main`, and a scratch directory.
    fn seeded() -> (GitRemote, tempfile::TempDir) {
        let remote = GitRemote::start(TOKEN).expect("start");
        let work = tempfile::tempdir().expect("work dir");
        let files = work.path().join("files");
        std::fs::create_dir_all(&files).expect("files");
        std::fs::write(files.join("README.md"), "# seeded\n").expect("README");
        remote.seed_from(&files).expect("seed");
        (remote, work)
    }

    /// Runs a client git command; Ok(stdout) or Err(stderr).
    fn run(mut command: Command) -> Result<String, String> {
        let output = command.stdin(Stdio::null()).output().expect("run git");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Clones with the right token and commits `file` on a new branch `branch`.
    fn clone_and_commit(remote: &GitRemote, work: &Path, branch: &str) -> PathBuf {
        let mut clone = remote.git(work, Some(TOKEN));
        clone.args(["clone", "--quiet", &remote.url(), "clone"]);
        run(clone).expect("clone with the right token");
        let checkout = work.join("clone");
        let git = |args: &[&str]| {
            let mut command = remote.git(&checkout, None);
            command.args(args);
            run(command).expect("local git")
        };
        git(&["switch", "--quiet", "-c", branch]);
        std::fs::write(checkout.join("change.txt"), "a change\n").expect("change");
        git(&["add", "-A"]);
        git(&["commit", "--quiet", "-m", "a change"]);
        checkout
    }

    fn local_head(remote: &GitRemote, checkout: &Path) -> String {
        let mut command = remote.git(checkout, None);
        command.args(["rev-parse", "HEAD"]);
        run(command).expect("rev-parse").trim().to_owned()
    }

    #[test]
    fn seeding_fills_the_bare_repository() {
        let (remote, _work) = seeded();
        assert_eq!(remote.branches(), vec!["main".to_owned()]);
        let main = remote.rev_parse("main").expect("main exists");
        assert_eq!(main.len(), 40);
        assert_eq!(remote.heads(), vec![("main".to_owned(), main)]);
        assert_eq!(remote.rev_parse("nothing"), None);
        assert!(remote.url().ends_with("/repo.git"));
        assert!(remote.bare_path().join("HEAD").is_file());
        // Seeding is local: no request reached the server.
        assert!(remote.requests().is_empty());
    }

    #[test]
    fn push_with_the_right_token_lands_in_the_bare_repository() {
        let (remote, work) = seeded();
        let checkout = clone_and_commit(&remote, work.path(), "loop/feature");
        let mut push = remote.git(&checkout, Some(TOKEN));
        push.args(["push", "--quiet", "origin", "loop/feature"]);
        run(push).expect("push with the right token");

        assert_eq!(
            remote.branches(),
            vec!["loop/feature".to_owned(), "main".to_owned()]
        );
        assert_eq!(
            remote.rev_parse("loop/feature"),
            Some(local_head(&remote, &checkout))
        );
        // Verified with git against the bare repository itself.
        let log = Command::new("git")
            .arg("--git-dir")
            .arg(remote.bare_path())
            .args(["log", "--format=%s", "loop/feature"])
            .output()
            .expect("git log");
        assert_eq!(String::from_utf8_lossy(&log.stdout), "a change\ninitial\n");

        let requests = remote.requests();
        // git asks without credentials first, is told 401, then asks again with the token.
        assert_eq!(requests[0].status, 401);
        assert!(!requests[0].authorized);
        let receive = requests
            .iter()
            .find(|r| r.method == "POST" && r.path == "/repo.git/git-receive-pack")
            .expect("the push reached receive-pack");
        assert!(receive.authorized);
        assert_eq!(receive.user.as_deref(), Some(TOKEN_USER));
        assert_eq!(receive.status, 200);
        assert!(requests.iter().any(|r| {
            r.path == "/repo.git/info/refs"
                && r.query.as_deref() == Some("service=git-receive-pack")
                && r.authorized
        }));
    }

    #[test]
    fn push_with_a_wrong_token_fails_and_changes_nothing() {
        let (remote, work) = seeded();
        let before = remote.heads();
        let checkout = clone_and_commit(&remote, work.path(), "loop/feature");
        let mut push = remote.git(&checkout, Some("ghs_wrong"));
        push.args(["push", "--quiet", "origin", "loop/feature"]);
        let error = run(push).expect_err("a wrong token must fail");
        assert!(error.contains("Authentication failed"), "{error}");
        assert_eq!(remote.heads(), before);
        assert!(
            remote
                .requests()
                .iter()
                .all(|r| r.path != "/repo.git/git-receive-pack" || r.status == 401)
        );
        // The wrong token came with the default user name and was refused.
        assert!(
            remote
                .requests()
                .iter()
                .any(|r| r.user.as_deref() == Some(TOKEN_USER) && !r.authorized)
        );
    }

    #[test]
    fn push_and_clone_without_a_token_fail_without_prompting() {
        let (remote, work) = seeded();
        let before = remote.heads();
        let checkout = clone_and_commit(&remote, work.path(), "loop/feature");
        let mut push = remote.git(&checkout, None);
        push.args(["push", "--quiet", "origin", "loop/feature"]);
        let error = run(push).expect_err("no token must fail");
        assert!(error.contains("terminal prompts disabled"), "{error}");
        assert_eq!(remote.heads(), before);

        let mut clone = remote.git(work.path(), None);
        clone.args(["clone", "--quiet", &remote.url(), "anonymous"]);
        let error = run(clone).expect_err("an anonymous clone must fail");
        assert!(error.contains("terminal prompts disabled"), "{error}");
    }

    #[test]
    fn an_extra_header_with_any_user_name_authenticates_too() {
        let (remote, work) = seeded();
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("someone:{TOKEN}"));
        let mut ls_remote = remote.git(work.path(), None);
        ls_remote
            .arg("-c")
            .arg(format!(
                "http.extraHeader=Authorization: Basic {credentials}"
            ))
            .args(["ls-remote", &remote.url(), "refs/heads/main"]);
        let refs = run(ls_remote).expect("ls-remote with the header");
        let main = remote.rev_parse("main").expect("main");
        assert_eq!(refs.trim(), format!("{main}\trefs/heads/main"));
        // The header goes with the first request: no 401 round trip (protocol v2 follows
        // the advertisement with a POST).
        let requests = remote.requests();
        assert!(!requests.is_empty());
        assert!(
            requests
                .iter()
                .all(|r| r.authorized && r.user.as_deref() == Some("someone")),
            "{requests:?}"
        );
    }

    #[test]
    fn a_git_repository_seeds_its_branches_and_head() {
        let remote = GitRemote::start(TOKEN).expect("start");
        let work = tempfile::tempdir().expect("work dir");
        let git = |args: &[&str]| {
            let mut command = remote.git(work.path(), None);
            command.args(args);
            run(command).expect("local git")
        };
        git(&["init", "--quiet", "--initial-branch=trunk"]);
        std::fs::write(work.path().join("a.txt"), "a\n").expect("a");
        git(&["add", "-A"]);
        git(&["commit", "--quiet", "-m", "one"]);
        git(&["branch", "side"]);
        remote.seed_from(work.path()).expect("seed");
        assert_eq!(
            remote.branches(),
            vec!["side".to_owned(), "trunk".to_owned()]
        );
        let head = Command::new("git")
            .arg("--git-dir")
            .arg(remote.bare_path())
            .args(["symbolic-ref", "HEAD"])
            .output()
            .expect("symbolic-ref");
        assert_eq!(
            String::from_utf8_lossy(&head.stdout).trim(),
            "refs/heads/trunk"
        );
    }

    /// The pull request path at fixture level: the fake GitHub reads the branches of this real
    /// remote, so a pull request for a branch that was not pushed is refused as GitHub would.
    #[tokio::test]
    async fn the_fake_github_sees_the_branches_pushed_here() {
        use loop_fakes::github::{FakeGitHub, FakeRepo};

        let (remote, work) = seeded();
        let remote = Arc::new(remote);
        let heads = Arc::clone(&remote);
        let github = FakeGitHub::start(
            TOKEN,
            vec![
                FakeRepo::new("acme", "repo")
                    .clone_url(&remote.url())
                    .branches_from(Arc::new(move || heads.heads())),
            ],
        )
        .await
        .expect("fake github");
        let create = || {
            reqwest::Client::new()
                .post(format!("{}/repos/acme/repo/pulls", github.api_url()))
                .header("user-agent", "loop-tests")
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({
                    "title": "A change", "head": "loop/feature", "base": "main"
                }))
                .send()
        };
        assert_eq!(create().await.expect("send").status(), 422);

        let checkout = clone_and_commit(&remote, work.path(), "loop/feature");
        let mut push = remote.git(&checkout, Some(TOKEN));
        push.args(["push", "--quiet", "origin", "loop/feature"]);
        run(push).expect("push");

        let response = create().await.expect("send");
        assert_eq!(response.status(), 201);
        let pull: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            pull["head"]["sha"].as_str(),
            remote.rev_parse("loop/feature").as_deref()
        );
        assert_eq!(pull["base"]["repo"]["clone_url"], remote.url());
        assert_eq!(github.pulls().len(), 1);
    }

    /// A push larger than git's `http.postBuffer` (1 MiB) goes out chunked and, when big,
    /// through both pipes of the CGI at once.
    #[test]
    fn a_large_push_goes_through() {
        let (remote, work) = seeded();
        let checkout = clone_and_commit(&remote, work.path(), "loop/large");
        // Incompressible content, so the pack stays large: 4 MiB from a simple generator.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..4 * 1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(checkout.join("large.bin"), data).expect("large file");
        for args in [
            &["add", "-A"][..],
            &["commit", "--quiet", "-m", "large"][..],
        ] {
            let mut command = remote.git(&checkout, None);
            command.args(args);
            run(command).expect("local git");
        }
        let mut push = remote.git(&checkout, Some(TOKEN));
        push.args(["push", "--quiet", "origin", "loop/large"]);
        run(push).expect("a large push");
        assert_eq!(
            remote.rev_parse("loop/large"),
            Some(local_head(&remote, &checkout))
        );
    }

    #[test]
    fn cgi_answers_are_parsed() {
        let response = parse_cgi(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
            .expect("cgi");
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let response =
            parse_cgi(b"Content-Type: application/x-git-upload-pack-advertisement\n\n0000")
                .expect("cgi");
        assert_eq!(response.status(), 200);
        assert!(parse_cgi(b"no headers at all").is_none());
    }
}
