//! The one place a git process is started. Every git loop runs on the host goes through
//! [`hardened_command`], because the repository it runs on was written by the agent and by
//! strangers: its `.git/config`, hooks and attributes must not make the host run anything.
//!
//! Three layers, each one documented git behaviour:
//! - A clean environment: nothing inherited but `PATH` and `HOME`; no system or global config
//!   (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`), no prompts, `cat` as pager, `true`
//!   as editor, no protocol allowed (`GIT_ALLOW_PROTOCOL` overrides every `protocol.*` key),
//!   replace refs ignored so a diff shows the objects that are really there.
//! - Command-scope config (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`, which
//!   wins over the repository's config exactly like `-c` and is inherited by the git processes
//!   git itself starts): hooks, fsmonitor, pager, ssh command, askpass, credential helpers,
//!   external diff, signing programs, editors and submodule recursion are all turned off.
//!   The environment form is used rather than `-c` because a `-c` key is split at its first
//!   `=` and a filter's name may contain one.
//! - Per repository, the names git could use as drivers: filter drivers (`filter.<name>.*`,
//!   selected by `.gitattributes` or `.git/info/attributes`, which loop cannot control) have
//!   their `clean`, `smudge` and `process` set to the empty string, which git treats as "no
//!   filter", and `required` to false. Git has no switch that turns off every filter name at
//!   once, so the names are read from the repository's config files and from every file they
//!   include, whatever the include's condition (see [`driver_overrides`]). Textconv and
//!   per-attribute diff commands are off through `--no-textconv --no-ext-diff` on every diff.
//!
//! Includes themselves cannot be turned off in git; reading every included file for driver
//! names makes them harmless, and an include loop cannot resolve fails closed.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{GitError, scrub_credentials};

/// How long one git call may take before it is killed. Worktree checkouts of large
/// repositories are the slow case.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Config that wins over the repository's own, for every git process (see the module docs).
const OVERRIDES: &[(&str, &str)] = &[
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.sshCommand", "false"),
    ("core.askPass", ""),
    ("core.editor", "true"),
    ("sequence.editor", "true"),
    ("core.attributesFile", "/dev/null"),
    // An empty value resets the list of helpers, so none from the repository is asked.
    ("credential.helper", ""),
    ("diff.external", ""),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("log.showSignature", "false"),
    ("gpg.program", "false"),
    ("gpg.ssh.program", "false"),
    ("gpg.x509.program", "false"),
    ("submodule.recurse", "false"),
    ("protocol.allow", "never"),
    ("protocol.file.allow", "never"),
    ("protocol.ext.allow", "never"),
    ("protocol.ssh.allow", "never"),
    ("protocol.git.allow", "never"),
    ("protocol.http.allow", "never"),
    ("protocol.https.allow", "never"),
];

/// Git's own limit on nested includes (`MAX_INCLUDE_DEPTH`).
const MAX_INCLUDE_DEPTH: usize = 10;

/// Which repository a git process may touch and where it runs.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The working directory of the process.
    pub dir: PathBuf,
    /// `--git-dir` and `--work-tree`, pinned once the repository is known, so a
    /// `core.worktree` or a `.git` file rewritten later cannot move either.
    pub pinned: Option<Pinned>,
    /// The directories `safe.directory` names: only the repository in hand.
    pub safe_dirs: Vec<PathBuf>,
    /// The config files whose driver names are neutralised (and everything they include).
    pub config_files: Vec<PathBuf>,
    /// The uid and gid git runs as, when not loop's own: see [`crate::owner`].
    pub run_as: Option<Owner>,
}

/// A uid and gid on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A repository's git directory and the work tree that goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pinned {
    pub git_dir: PathBuf,
    pub work_tree: PathBuf,
}

/// Per-call options beyond the arguments.
#[derive(Debug, Default)]
pub(crate) struct Call {
    /// Written to the process's stdin, which is otherwise closed.
    pub stdin: Option<Vec<u8>>,
    /// Extra environment (author and committer identity).
    pub env: Vec<(&'static str, String)>,
    /// Exit codes besides 0 that are answers rather than failures (`diff --quiet` exits 1).
    pub ok_codes: &'static [i32],
    /// Command-scope config after the overrides (a push's credential helper).
    pub config: Vec<(String, String)>,
}

/// What a finished git process printed, and its exit code.
#[derive(Debug)]
pub(crate) struct Output {
    pub stdout: Vec<u8>,
    pub code: i32,
}

impl Output {
    /// Stdout as text, with the final newline removed.
    pub fn text(&self, command: &str) -> Result<String, GitError> {
        let text = String::from_utf8(self.stdout.clone()).map_err(|_| GitError::Output {
            command: command.to_owned(),
            detail: "not UTF-8".into(),
        })?;
        Ok(text.trim_end_matches('\n').to_owned())
    }
}

/// Runs `git ARGS` hardened against the repository of `target`, with its drivers neutralised.
pub(crate) async fn run(target: &Target, args: &[&str], call: Call) -> Result<Output, GitError> {
    let drivers = driver_overrides(&target.config_files).await?;
    spawn(target, &drivers, args, call).await
}

/// The one constructor of git processes: the clean environment and the overrides of the module
/// docs, then `extra` (driver names), the pinned directories and `args`.
fn hardened_command(target: &Target, extra: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    match target.run_as {
        // Another user's HOME (root's, 0700) would only make git warn about files it cannot
        // read there; global config is off anyway.
        Some(owner) => {
            cmd.env("HOME", "/").uid(owner.uid).gid(owner.gid);
        }
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                cmd.env("HOME", home);
            }
        }
    }
    cmd.env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat")
        .env("PAGER", "cat")
        .env("GIT_EDITOR", "true")
        .env("GIT_SEQUENCE_EDITOR", "true")
        .env("GIT_ALLOW_PROTOCOL", "")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        // `status` must not rewrite the index under an agent that is working in the tree.
        .env("GIT_OPTIONAL_LOCKS", "0");

    let mut config: Vec<(String, String)> = OVERRIDES
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for dir in &target.safe_dirs {
        config.push(("safe.directory".into(), dir.display().to_string()));
    }
    config.extend(extra.iter().cloned());
    cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (key, value)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }

    cmd.arg("--no-pager");
    if let Some(pinned) = &target.pinned {
        let mut git_dir = OsString::from("--git-dir=");
        git_dir.push(&pinned.git_dir);
        let mut work_tree = OsString::from("--work-tree=");
        work_tree.push(&pinned.work_tree);
        cmd.arg(git_dir).arg(work_tree);
    }
    cmd.args(args)
        .current_dir(&target.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Starts the hardened process, feeds stdin, waits with [`GIT_TIMEOUT`].
async fn spawn(
    target: &Target,
    extra: &[(String, String)],
    args: &[&str],
    call: Call,
) -> Result<Output, GitError> {
    let command = scrub_credentials(&args.join(" "));
    let mut config = extra.to_vec();
    config.extend(call.config.iter().cloned());
    let mut cmd = hardened_command(target, &config, args);
    for (name, value) in &call.env {
        cmd.env(name, value);
    }
    if call.stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    tracing::debug!(command = %command, dir = %target.dir.display(), "git");
    let mut child = cmd.spawn().map_err(|source| GitError::Spawn {
        command: command.clone(),
        source,
    })?;
    let stdin = child.stdin.take();
    // Stdin is written while stdout is read, both under the one timeout, so neither a git that
    // prints before it reads nor one that never reads can hang the caller.
    let feed = async move {
        if let (Some(input), Some(mut stdin)) = (call.stdin, stdin) {
            stdin.write_all(&input).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let finished = tokio::time::timeout(GIT_TIMEOUT, async {
        tokio::join!(feed, child.wait_with_output())
    })
    .await;
    let output = match finished {
        Ok((Ok(()), Ok(output))) => output,
        Ok((Err(source), _) | (_, Err(source))) => {
            return Err(GitError::Spawn { command, source });
        }
        // The child was moved into the timed-out future; dropping it killed the process.
        Err(_) => {
            return Err(GitError::Timeout {
                command,
                timeout: GIT_TIMEOUT,
            });
        }
    };
    let code = output.status.code();
    match code {
        Some(code) if code == 0 || call.ok_codes.contains(&code) => Ok(Output {
            stdout: output.stdout,
            code,
        }),
        _ => Err(GitError::Failed {
            command,
            status: code.map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}")),
            stderr: scrub_credentials(String::from_utf8_lossy(&output.stderr).trim()),
        }),
    }
}

/// The config entries that neutralise every driver named in `files` or in a file they include.
///
/// Each file is listed raw (`git config --file F --no-includes --null --list`) and its
/// `include.path` and `includeIf.*.path` targets are followed whatever their condition, so a
/// driver behind `includeIf "onbranch:..."` is covered on every branch. An include git would
/// resolve through another user's home (`~name/`) fails closed.
pub(crate) async fn driver_overrides(files: &[PathBuf]) -> Result<Vec<(String, String)>, GitError> {
    let mut seen = HashSet::new();
    let mut pending: Vec<(PathBuf, usize)> = files.iter().map(|f| (f.clone(), 0)).collect();
    let mut overrides = Vec::new();
    let mut named = HashSet::new();
    while let Some((file, depth)) = pending.pop() {
        if depth > MAX_INCLUDE_DEPTH || !seen.insert(file.clone()) || !file.is_file() {
            continue;
        }
        for (key, value) in list_config_file(&file).await? {
            let Some(entry) = ConfigKey::parse(&key) else {
                continue;
            };
            if entry.is_include() {
                let Some(value) = value else { continue };
                let included = resolve_include(&file, &value)?;
                pending.push((included, depth + 1));
                continue;
            }
            for (k, v) in entry.neutralised() {
                if named.insert(k.clone()) {
                    overrides.push((k, v));
                }
            }
        }
    }
    Ok(overrides)
}

/// A config file's identity and last change: inode, size, modification and status-change
/// times. The ctime moves on every write and cannot be set back by the file's owner, so an
/// unchanged stamp means unchanged content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(file: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(file).ok()?;
        Some(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

type ConfigList = Vec<(String, Option<String>)>;

/// Config files already listed, by path: every git call of a turn reads the same few files,
/// and listing one is a process.
static LISTED: std::sync::Mutex<Option<std::collections::HashMap<PathBuf, (Stamp, ConfigList)>>> =
    std::sync::Mutex::new(None);
/// More distinct config files than this and the cache starts over.
const MAX_LISTED: usize = 512;

/// Every `(key, value)` of one config file, includes not followed: from the cache when the
/// file's [`Stamp`] did not change since it was listed.
async fn list_config_file(file: &Path) -> Result<ConfigList, GitError> {
    let lock = || {
        LISTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let stamp = Stamp::of(file);
    if let Some(stamp) = stamp
        && let Some((cached, list)) = lock().as_ref().and_then(|map| map.get(file))
        && *cached == stamp
    {
        return Ok(list.clone());
    }
    let list = list_config_file_uncached(file).await?;
    // Stamped before it was read: a change while reading shows as a new stamp next time.
    if let Some(stamp) = stamp {
        let mut cache = lock();
        let map = cache.get_or_insert_with(Default::default);
        if map.len() >= MAX_LISTED {
            map.clear();
        }
        map.insert(file.to_path_buf(), (stamp, list.clone()));
    }
    Ok(list)
}

/// Every `(key, value)` of one config file, includes not followed. Runs in `/` so no
/// repository is discovered.
async fn list_config_file_uncached(file: &Path) -> Result<ConfigList, GitError> {
    let target = Target {
        dir: PathBuf::from("/"),
        pinned: None,
        safe_dirs: Vec::new(),
        config_files: Vec::new(),
        run_as: None,
    };
    let file_arg = file.display().to_string();
    let args = [
        "config",
        "--file",
        &file_arg,
        "--no-includes",
        "--null",
        "--list",
    ];
    let output = spawn(&target, &[], &args, Call::default()).await?;
    Ok(parse_config_list(&output.stdout))
}

/// `git config --null --list` output: `key\nvalue\0`, or `key\0` for a key with no value.
pub(crate) fn parse_config_list(raw: &[u8]) -> Vec<(String, Option<String>)> {
    raw.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            match entry.split_once('\n') {
                Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                None => (entry.into_owned(), None),
            }
        })
        .collect()
}

/// Where an include's `path` points: `~/` is `$HOME`, a relative path is relative to the
/// including file's directory (both as git documents).
fn resolve_include(from: &Path, value: &str) -> Result<PathBuf, GitError> {
    if let Some(rest) = value.strip_prefix("~/") {
        let home = std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| {
            GitError::InvalidArgument {
                what: "include path (no HOME)",
                value: value.to_owned(),
            }
        })?;
        return Ok(home.join(rest));
    }
    if value.starts_with('~') {
        return Err(GitError::InvalidArgument {
            what: "include path in the repository's config",
            value: value.to_owned(),
        });
    }
    let path = Path::new(value);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(from.parent().unwrap_or(Path::new("/")).join(path))
}

/// A config key split the way git stores it: section and variable are case-insensitive
/// (git prints them lower case), the subsection is kept as written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConfigKey {
    section: String,
    subsection: Option<String>,
    variable: String,
}

impl ConfigKey {
    pub(crate) fn parse(key: &str) -> Option<ConfigKey> {
        let (section, rest) = key.split_once('.')?;
        let (subsection, variable) = match rest.rsplit_once('.') {
            Some((sub, var)) => (Some(sub.to_owned()), var),
            None => (None, rest),
        };
        Some(ConfigKey {
            section: section.to_ascii_lowercase(),
            subsection,
            variable: variable.to_ascii_lowercase(),
        })
    }

    fn is_include(&self) -> bool {
        self.variable == "path"
            && match self.section.as_str() {
                "include" => self.subsection.is_none(),
                "includeif" => self.subsection.is_some(),
                _ => false,
            }
    }

    /// The overrides that make this key's driver inert, if it names one.
    fn neutralised(&self) -> Vec<(String, String)> {
        let Some(name) = &self.subsection else {
            return Vec::new();
        };
        let key = |var: &str| format!("{}.{name}.{var}", self.section);
        match (self.section.as_str(), self.variable.as_str()) {
            ("filter", _) => vec![
                (key("clean"), String::new()),
                (key("smudge"), String::new()),
                (key("process"), String::new()),
                (key("required"), "false".into()),
            ],
            // Run by local transports instead of git's own programs.
            ("remote", "uploadpack") => vec![(key("uploadpack"), "git-upload-pack".into())],
            ("remote", "receivepack") => vec![(key("receivepack"), "git-receive-pack".into())],
            ("protocol", "allow") => vec![(key("allow"), "never".into())],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_lists() {
        let raw = b"core.bare\nfalse\0filter.a=b.clean\nx %f\0core.flag\0";
        assert_eq!(
            parse_config_list(raw),
            vec![
                ("core.bare".into(), Some("false".into())),
                ("filter.a=b.clean".into(), Some("x %f".into())),
                ("core.flag".into(), None),
            ]
        );
    }

    #[test]
    fn neutralises_driver_keys() {
        let check = |key: &str, expected: &[(&str, &str)]| {
            let got = ConfigKey::parse(key)
                .map(|k| k.neutralised())
                .unwrap_or_default();
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(got, expected, "{key}");
        };
        check(
            "filter.Evil.x.smudge",
            &[
                ("filter.Evil.x.clean", ""),
                ("filter.Evil.x.smudge", ""),
                ("filter.Evil.x.process", ""),
                ("filter.Evil.x.required", "false"),
            ],
        );
        check(
            "remote.origin.uploadpack",
            &[("remote.origin.uploadpack", "git-upload-pack")],
        );
        check("protocol.ext.allow", &[("protocol.ext.allow", "never")]);
        check("remote.origin.url", &[]);
        check("core.hookspath", &[]);
        check("filter", &[]);
    }

    #[test]
    fn recognises_includes() {
        let cases = [
            ("include.path", true),
            ("includeif.onbranch:main.path", true),
            ("includeif.gitdir:/a/b.c/.path", true),
            ("include.x.path", false),
            ("includeif.path", false),
            ("core.path", false),
        ];
        for (key, expected) in cases {
            let parsed = ConfigKey::parse(key).map(|k| k.is_include());
            assert_eq!(parsed, Some(expected), "{key}");
        }
    }

    #[test]
    fn resolves_include_paths() {
        let from = Path::new("/r/.git/config");
        assert_eq!(
            resolve_include(from, "evil.cfg").ok(),
            Some(PathBuf::from("/r/.git/evil.cfg"))
        );
        assert_eq!(
            resolve_include(from, "/etc/x").ok(),
            Some(PathBuf::from("/etc/x"))
        );
        assert!(resolve_include(from, "~bob/x").is_err());
    }
}
