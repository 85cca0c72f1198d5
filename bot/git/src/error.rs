//! `GitError`, and the scrubbing that keeps credentials in URLs out of every message it carries.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong running git. `command` is the git subcommand and its arguments (never the
/// hardening options), scrubbed of credentials like `stderr`.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git {command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        /// The exit code, or how the process ended.
        status: String,
        stderr: String,
    },
    /// A file-system step around git: resolving a path, reading a worktree's pointer.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git {command} timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("unexpected output from git {command}: {detail}")]
    Output { command: String, detail: String },
    /// A work tree git reports somewhere else than where its `.git` is: a repository's
    /// `core.worktree` pointing outside it would let `add -A` commit host files.
    #[error("{path} is not a plain git work tree: {detail}")]
    Layout { path: PathBuf, detail: String },
    /// Git runs as the repository's owner (loop is root), who cannot reach where the worktree
    /// would go.
    #[error(
        "{path} cannot be reached by uid {uid}, the repository's owner, whom git runs as ({blocked} is closed to them): set `git.worktrees_dir` to a directory they can reach"
    )]
    Unreachable {
        path: PathBuf,
        blocked: PathBuf,
        uid: u32,
    },
    /// An argument git could read as an option, or a name git would refuse.
    #[error("invalid {what}: {value:?}")]
    InvalidArgument { what: &'static str, value: String },
}

/// `text` with the user information of every `scheme://user:pass@host` replaced by `***`, so
/// a URL with a token in it (a remote, git's own error messages) never reaches a log or a chat.
pub fn scrub_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_end = rest
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            out.push_str("***");
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_userinfo_from_urls() {
        let cases = [
            (
                "https://user:pass@github.com/o/r.git",
                "https://***@github.com/o/r.git",
            ),
            ("https://x-access-token:ghp_abc@h/r", "https://***@h/r"),
            ("https://token@h/r", "https://***@h/r"),
            ("https://github.com/o/r.git", "https://github.com/o/r.git"),
            ("no url here", "no url here"),
            (
                "fatal: unable to access 'http://a:b@h:8080/x/': 403\nsee http://c:d@e",
                "fatal: unable to access 'http://***@h:8080/x/': 403\nsee http://***@e",
            ),
            (
                "mailto-like a@b https://h/p@q",
                "mailto-like a@b https://h/p@q",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub_credentials(input), expected, "{input}");
        }
    }
}
