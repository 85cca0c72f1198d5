//! Where a thread's branch goes when it leaves the host: the remote's URL and credentials
//! (`git.remotes` in the global config, never the repository), and the forge's REST API that
//! opens a pull request (GitHub) or merge request (GitLab) for it.
//!
//! The agent never sees a token: pushes run on the host from loop's own shell repository
//! (`loop_git::Repo::push`), API calls run in the daemon, and the remote URL in the
//! repository must carry no credentials (the agent can read `.git/config`).

use std::time::Duration;

use loop_git::{HttpCredentials, PushTarget};
use serde_json::{Value, json};

use crate::config::{Forge, GitConfig, GitRemoteConfig};

/// How long one API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// GitHub's REST API version loop speaks.
const GITHUB_API_VERSION: &str = "2022-11-28";

/// Why a branch cannot be pushed or its pull request opened.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(
        "the remote URL carries credentials, which the agent can read in .git/config: remove them (`git remote set-url origin https://host/owner/repo.git`) and put the token in `git.remotes` of the global config"
    )]
    CredentialsInUrl,
    #[error(
        "`{0}` is an SSH remote: loop pushes over HTTPS with a token from `git.remotes`; add an entry whose `url_prefix` is `https://{1}/`"
    )]
    SshWithoutEntry(String, String),
    #[error("cannot read the remote URL `{0}` (expected https://host/owner/repo)")]
    Unsupported(String),
    #[error(
        "no `forge` (github or gitlab) is configured for {0} in `git.remotes`, so loop cannot open a pull request there"
    )]
    NoForge(String),
    #[error("the {forge} API refused ({status}): {message}")]
    Api {
        forge: &'static str,
        status: u16,
        message: String,
    },
    #[error("the {forge} API rate limit is exhausted; try again {when}")]
    RateLimited { forge: &'static str, when: String },
    #[error("cannot reach the {forge} API: {source}")]
    Http {
        forge: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

/// A repository's remote as loop pushes to it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The HTTP(S) URL pushed to, without credentials.
    pub url: String,
    /// `scheme://host`: the web pages of the repository are under it.
    pub origin: String,
    /// `owner/repo` (GitLab: `group/subgroup/repo`), without `.git`.
    pub path: String,
    /// The `git.remotes` entry that covers the URL, if any.
    pub entry: Option<GitRemoteConfig>,
}

impl Remote {
    /// The repository's web page.
    pub fn web_url(&self) -> String {
        format!("{}/{}", self.origin, self.path)
    }

    /// A branch's web page, where GitHub and GitLab show it.
    pub fn branch_url(&self, branch: &str) -> String {
        match self.entry.as_ref().and_then(|e| e.forge) {
            Some(Forge::Gitlab) => format!("{}/-/tree/{branch}", self.web_url()),
            _ => format!("{}/tree/{branch}", self.web_url()),
        }
    }

    /// The push URL with the entry's token for its host.
    pub fn push_target(&self) -> PushTarget {
        let credentials = self.entry.as_ref().and_then(|entry| {
            let password = entry.token.expose()?.to_owned();
            let username = entry.username.clone().unwrap_or_else(|| {
                match entry.forge {
                    Some(Forge::Gitlab) => "oauth2",
                    _ => "x-access-token",
                }
                .to_owned()
            });
            Some(HttpCredentials { username, password })
        });
        PushTarget {
            url: self.url.clone(),
            credentials,
        }
    }
}

/// The remote `raw` (a repository's `remote.origin.url`) as loop pushes to it. SSH forms
/// (`git@host:owner/repo.git`, `ssh://git@host/owner/repo`) are pushed over HTTPS when
/// `git.remotes` has an entry for that host.
pub fn remote_from_url(git: &GitConfig, raw: &str) -> Result<Remote, ForgeError> {
    let raw = raw.trim();
    let https = match ssh_host_path(raw) {
        Some((host, path)) => {
            let url = format!("https://{host}/{path}");
            if git.remote_for(&url).is_none() {
                return Err(ForgeError::SshWithoutEntry(raw.to_owned(), host));
            }
            url
        }
        None => raw.to_owned(),
    };
    let (scheme, rest) = https
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "https" | "http"))
        .ok_or_else(|| ForgeError::Unsupported(loop_git::scrub_credentials(raw)))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(ForgeError::CredentialsInUrl);
    }
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    if authority.is_empty() || path.is_empty() || path.contains(['?', '#']) {
        return Err(ForgeError::Unsupported(raw.to_owned()));
    }
    Ok(Remote {
        url: https.clone(),
        origin: format!("{scheme}://{authority}"),
        path: path.to_owned(),
        entry: git.remote_for(&https).cloned(),
    })
}

/// `(host, path)` of an SSH remote, `None` for anything else.
fn ssh_host_path(raw: &str) -> Option<(String, String)> {
    if let Some(rest) = raw.strip_prefix("ssh://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?.split(':').next()?;
        return Some((host.to_owned(), path.to_owned()));
    }
    if raw.contains("://") {
        return None;
    }
    // scp-like: `[user@]host:path`.
    let (authority, path) = raw.split_once(':')?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty() && !host.contains('/') && !path.is_empty())
        .then(|| (host.to_owned(), path.trim_start_matches('/').to_owned()))
}

/// A pull (merge) request, new or found open for the same branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub url: String,
    pub number: u64,
    /// It was open already; nothing was created.
    pub existed: bool,
}

/// What a pull request asks for.
#[derive(Debug, Clone)]
pub struct PullRequestSpec<'a> {
    pub head: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
}

/// Opens a pull request for `spec.head` against `spec.base`, or finds the one open already.
pub async fn open_pull_request(
    remote: &Remote,
    spec: &PullRequestSpec<'_>,
) -> Result<PullRequest, ForgeError> {
    let entry = remote
        .entry
        .as_ref()
        .filter(|e| e.forge.is_some())
        .ok_or_else(|| ForgeError::NoForge(remote.web_url()))?;
    let token = entry.token.expose().unwrap_or_default();
    match entry.forge {
        Some(Forge::Gitlab) => gitlab_merge_request(remote, entry, token, spec).await,
        _ => github_pull_request(remote, entry, token, spec).await,
    }
}

fn client(forge: &'static str) -> Result<reqwest::Client, ForgeError> {
    reqwest::Client::builder()
        .user_agent(concat!("loop/", env!("CARGO_PKG_VERSION")))
        .timeout(API_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|source| ForgeError::Http { forge, source })
}

/// `POST /repos/{owner}/{repo}/pulls`; a 422 "already exists" is answered with the open one
/// (`GET /repos/{owner}/{repo}/pulls?head=owner:branch&state=open`).
async fn github_pull_request(
    remote: &Remote,
    entry: &GitRemoteConfig,
    token: &str,
    spec: &PullRequestSpec<'_>,
) -> Result<PullRequest, ForgeError> {
    const FORGE: &str = "GitHub";
    let api = entry.api_url.clone().unwrap_or_else(|| {
        if remote.origin == "https://github.com" {
            "https://api.github.com".to_owned()
        } else {
            format!("{}/api/v3", remote.origin)
        }
    });
    let api = api.trim_end_matches('/');
    let http = client(FORGE)?;
    let call = |request: reqwest::RequestBuilder| {
        request
            .bearer_auth(token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", GITHUB_API_VERSION)
    };
    let pulls = format!("{api}/repos/{}/pulls", remote.path);
    let owner = remote.path.split('/').next().unwrap_or_default();
    create_or_find(
        FORGE,
        call(http.post(&pulls)).json(&json!({
            "title": spec.title,
            "head": spec.head,
            "base": spec.base,
            "body": spec.body,
        })),
        |status, body| status == 422 && mentions(body, "already exists"),
        call(http.get(&pulls)).query(&[
            ("head", format!("{owner}:{}", spec.head)),
            ("state", "open".to_owned()),
        ]),
    )
    .await
}

/// `POST /projects/{id}/merge_requests` (the id being the URL-encoded path); a 409 "already
/// exists" is answered with the open one.
async fn gitlab_merge_request(
    remote: &Remote,
    entry: &GitRemoteConfig,
    token: &str,
    spec: &PullRequestSpec<'_>,
) -> Result<PullRequest, ForgeError> {
    const FORGE: &str = "GitLab";
    let api = entry
        .api_url
        .clone()
        .unwrap_or_else(|| format!("{}/api/v4", remote.origin));
    let project = loop_wire::routes::path_segment(&remote.path);
    let requests = format!(
        "{}/projects/{project}/merge_requests",
        api.trim_end_matches('/')
    );
    let http = client(FORGE)?;
    create_or_find(
        FORGE,
        http.post(&requests)
            .header("PRIVATE-TOKEN", token)
            .json(&json!({
                "source_branch": spec.head,
                "target_branch": spec.base,
                "title": spec.title,
                "description": spec.body,
            })),
        |status, _| status == 409,
        http.get(&requests)
            .header("PRIVATE-TOKEN", token)
            .query(&[("source_branch", spec.head), ("state", "opened")]),
    )
    .await
}

/// Sends `create`; when the forge answers that the request exists already (`exists`), the
/// first one `list` finds is the answer.
async fn create_or_find(
    forge: &'static str,
    create: reqwest::RequestBuilder,
    exists: impl Fn(u16, &Value) -> bool,
    list: reqwest::RequestBuilder,
) -> Result<PullRequest, ForgeError> {
    let http = |source| ForgeError::Http { forge, source };
    let created = create.send().await.map_err(http)?;
    let status = created.status().as_u16();
    let (headers, body) = read(created, forge).await?;
    if status == 201 {
        return pull_from(&body, false, forge);
    }
    if !exists(status, &body) {
        return Err(refusal(forge, status, &headers, &body));
    }
    let listed = list.send().await.map_err(http)?;
    let list_status = listed.status();
    let (list_headers, list) = read(listed, forge).await?;
    match list.as_array().and_then(|a| a.first()) {
        Some(first) if list_status.is_success() => pull_from(first, true, forge),
        _ => Err(refusal(forge, list_status.as_u16(), &list_headers, &list)),
    }
}

async fn read(
    response: reqwest::Response,
    forge: &'static str,
) -> Result<(reqwest::header::HeaderMap, Value), ForgeError> {
    let headers = response.headers().clone();
    let text = response
        .text()
        .await
        .map_err(|source| ForgeError::Http { forge, source })?;
    Ok((
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A created or listed request: GitHub's `html_url`/`number`, GitLab's `web_url`/`iid`.
fn pull_from(body: &Value, existed: bool, forge: &'static str) -> Result<PullRequest, ForgeError> {
    let url = body["html_url"].as_str().or(body["web_url"].as_str());
    let number = body["number"].as_u64().or(body["iid"].as_u64());
    match (url, number) {
        (Some(url), Some(number)) => Ok(PullRequest {
            url: url.to_owned(),
            number,
            existed,
        }),
        _ => Err(ForgeError::Api {
            forge,
            status: 200,
            message: "the answer has no URL or number".to_owned(),
        }),
    }
}

fn mentions(body: &Value, needle: &str) -> bool {
    body.to_string().contains(needle)
}

/// A refusal as a person reads it: the API's `message` and its validation errors, or when
/// the rate limit ran out, when to try again.
fn refusal(
    forge: &'static str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
) -> ForgeError {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if status == 429 || (status == 403 && header("x-ratelimit-remaining").as_deref() == Some("0")) {
        let when = match (header("retry-after"), header("x-ratelimit-reset")) {
            (Some(seconds), _) => format!("in {seconds} s"),
            (None, Some(reset)) => reset
                .parse::<i64>()
                .ok()
                .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
                .map_or_else(
                    || "later".to_owned(),
                    |at| format!("after {}", at.format("%H:%M UTC")),
                ),
            _ => "later".to_owned(),
        };
        return ForgeError::RateLimited { forge, when };
    }
    let mut message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    if let Some(errors) = body["errors"].as_array() {
        let details: Vec<String> = errors
            .iter()
            .map(|e| {
                e["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{} {}", e["field"], e["code"]).replace('"', ""))
            })
            .collect();
        if !details.is_empty() {
            message.push_str(&format!(" ({})", details.join("; ")));
        }
    }
    let message: String = message.chars().take(400).collect();
    ForgeError::Api {
        forge,
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn git(remotes: Vec<GitRemoteConfig>) -> GitConfig {
        let mut git = GitConfig::defaults(std::path::Path::new("/home/u"));
        git.remotes = remotes;
        git
    }

    fn github() -> GitRemoteConfig {
        GitRemoteConfig {
            url_prefix: "https://github.com/".into(),
            token: Secret::new("ghp_secret"),
            username: None,
            forge: Some(Forge::Github),
            api_url: None,
        }
    }

    #[test]
    fn remotes_are_read_as_loop_pushes_them() {
        let config = git(vec![github()]);
        let remote = remote_from_url(&config, "https://github.com/acme/app.git").expect("https");
        assert_eq!(remote.path, "acme/app");
        assert_eq!(
            remote.branch_url("loop/x"),
            "https://github.com/acme/app/tree/loop/x"
        );
        let target = remote.push_target();
        let credentials = target.credentials.expect("token");
        assert_eq!(credentials.username, "x-access-token");
        assert!(!format!("{credentials:?}").contains("ghp_secret"));

        let ssh = remote_from_url(&config, "git@github.com:acme/app.git").expect("ssh");
        assert_eq!(ssh.url, "https://github.com/acme/app.git");
        assert!(ssh.entry.is_some());
        let other = remote_from_url(&config, "git@gitlab.example:acme/app.git");
        assert!(
            matches!(other, Err(ForgeError::SshWithoutEntry(..))),
            "{other:?}"
        );

        let unknown = remote_from_url(&config, "https://git.example/acme/app").expect("plain");
        assert!(unknown.entry.is_none() && unknown.push_target().credentials.is_none());

        for bad in [
            "https://x-access-token:ghp_leak@github.com/acme/app.git",
            "https://ghp_leak@github.com/acme/app.git",
        ] {
            let err = remote_from_url(&config, bad).expect_err(bad);
            assert!(matches!(err, ForgeError::CredentialsInUrl));
            assert!(!err.to_string().contains("ghp_leak"));
        }
        for bad in ["file:///srv/app.git", "ext::sh -c x", "https://github.com/"] {
            assert!(remote_from_url(&config, bad).is_err(), "{bad}");
        }
    }
}
