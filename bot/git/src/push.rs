//! Pushing a thread's branch from the host, with a token the agent never sees.
//!
//! The repository's own config is not trusted for a push: `url.*.insteadOf`, `http.*`
//! (proxies, CA files, `curloptResolve`, extra headers, per-URL variants of all of them) could
//! send the token somewhere else, and git has no switch that ignores a repository's config.
//! So the push runs from a *shell* repository that loop owns (under `~/.loop`, which no
//! container sees): a bare repository with a clean config whose object store borrows the
//! project's through `objects/info/alternates`. It pushes one commit id to one explicit URL.
//!
//! The token reaches git through a credential helper in command-scope config that reads it
//! from the environment of that one git process, and answers only for the URL's host; redirects
//! are not followed. The URL itself must carry no credentials, so none lands in any file.

use std::path::{Path, PathBuf};

use crate::command::{self, Call, Target};
use crate::error::GitError;
use crate::repo::{CommitId, Repo, check_branch};

/// HTTP credentials for one push.
#[derive(Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for HttpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Where a branch is pushed: an `https://` (or, when configured so, `http://`) URL without
/// user information, and the credentials for its host.
#[derive(Clone, Debug)]
pub struct PushTarget {
    pub url: String,
    pub credentials: Option<HttpCredentials>,
}

/// The helper git runs for credentials: it answers `get` for the expected host only, from the
/// environment of the push's git process.
const CREDENTIAL_HELPER: &str = r#"!f() { test "$1" = get || exit 0; h=; while IFS= read -r l; do case "$l" in host=*) h="${l#host=}";; esac; done; test -n "$h" && test "$h" = "$LOOP_GIT_HOST" || exit 0; printf 'username=%s\npassword=%s\n' "$LOOP_GIT_USERNAME" "$LOOP_GIT_PASSWORD"; }; f"#;

/// Proxy variables a push keeps from loop's environment (corporate proxies).
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "all_proxy",
];

impl Repo {
    /// Pushes `commit` to `refs/heads/{branch}` of `target`, from the shell repository at
    /// `shell` (created on first use). Fails, changing nothing, when the remote refuses.
    pub async fn push(
        &self,
        shell: &Path,
        target: &PushTarget,
        commit: &CommitId,
        branch: &str,
    ) -> Result<(), GitError> {
        check_branch(branch)?;
        let (scheme, host) = url_host(&target.url)?;
        let shell = prepare_shell(shell, &self.common_dir().join("objects")).await?;
        let refspec = format!("{commit}:refs/heads/{branch}");
        let mut call = Call {
            config: vec![
                ("credential.helper".into(), String::new()),
                ("http.followRedirects".into(), "false".into()),
                ("push.followTags".into(), "false".into()),
            ],
            env: vec![("GIT_ALLOW_PROTOCOL", scheme.to_owned())],
            ..Call::default()
        };
        for name in PROXY_VARS {
            if let Ok(value) = std::env::var(name) {
                call.env.push((name, value));
            }
        }
        if let Some(credentials) = &target.credentials {
            call.config
                .push(("credential.helper".into(), CREDENTIAL_HELPER.into()));
            call.env.push(("LOOP_GIT_HOST", host.clone()));
            call.env
                .push(("LOOP_GIT_USERNAME", credentials.username.clone()));
            call.env
                .push(("LOOP_GIT_PASSWORD", credentials.password.clone()));
        }
        let result = command::run(
            &shell,
            &["push", "--porcelain", "--", &target.url, &refspec],
            call,
        )
        .await;
        // git never prints a password it was given, but a remote's message might echo one.
        result
            .map(|_| ())
            .map_err(|err| match (err, &target.credentials) {
                (
                    GitError::Failed {
                        command,
                        status,
                        stderr,
                    },
                    Some(c),
                ) if !c.password.is_empty() => GitError::Failed {
                    command,
                    status,
                    stderr: stderr.replace(&c.password, "***"),
                },
                (err, _) => err,
            })
    }
}

/// The shell repository at `dir`, borrowing `objects`: created when missing, its alternates
/// rewritten every time (the project may have moved).
async fn prepare_shell(dir: &Path, objects: &Path) -> Result<Target, GitError> {
    let io = |path: &Path, source| GitError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !dir.join("HEAD").is_file() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let init = Target {
            dir: dir.to_path_buf(),
            pinned: None,
            safe_dirs: vec![dir.to_path_buf()],
            config_files: Vec::new(),
            run_as: None,
        };
        command::run(&init, &["init", "--quiet", "--bare", "."], Call::default()).await?;
    }
    let info = dir.join("objects").join("info");
    std::fs::create_dir_all(&info).map_err(|e| io(&info, e))?;
    let alternates = info.join("alternates");
    std::fs::write(&alternates, format!("{}\n", objects.display()))
        .map_err(|e| io(&alternates, e))?;
    Ok(Target {
        dir: dir.to_path_buf(),
        pinned: None,
        safe_dirs: vec![dir.to_path_buf(), objects.to_path_buf()],
        config_files: vec![dir.join("config")],
        run_as: None,
    })
}

/// The scheme and `host[:port]` of a push URL (git's credential `host=`), refusing URLs that
/// carry credentials or are not HTTP(S).
pub fn url_host(url: &str) -> Result<(&'static str, String), GitError> {
    let invalid = || GitError::InvalidArgument {
        what: "push URL (https://host/path, without credentials)",
        value: crate::error::scrub_credentials(url),
    };
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(invalid());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || url.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    Ok((scheme, authority.to_owned()))
}

/// Where loop keeps the shell repository of the repository whose git directory is `common`.
pub fn shell_dir(root: &Path, common: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    // Stable across runs of one build is enough: the directory is a cache.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    common.hash(&mut hasher);
    root.join(format!("{:016x}", hasher.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_urls_are_http_without_credentials() {
        assert_eq!(
            url_host("https://github.com/o/r.git").expect("ok"),
            ("https", "github.com".to_owned())
        );
        assert_eq!(
            url_host("http://127.0.0.1:8080/r.git").expect("ok"),
            ("http", "127.0.0.1:8080".to_owned())
        );
        for bad in [
            "https://x-access-token:ghp_1@github.com/o/r.git",
            "git@github.com:o/r.git",
            "ssh://git@github.com/o/r.git",
            "file:///srv/r.git",
            "ext::sh -c touch% /tmp/pwned",
            "https:///r.git",
            "https://github.com/o/r.git\nhttps://evil",
        ] {
            let err = url_host(bad).expect_err(bad);
            assert!(!err.to_string().contains("ghp_1"), "{err}");
        }
    }
}
