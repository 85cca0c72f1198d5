//! Gate policy: the shape of `/etc/loop/gate-policy.json`, its loader and validation, the
//! built-in baseline, and the pure decision function.
//!
//! This module does no IO besides [`PolicyFile::load`] reading the file, and no async: the
//! supervisor thread calls [`Policy::decide`] for every trapped syscall.
//!
//! # Evaluation order
//!
//! 1. The **baseline** (see [`baseline_file`]) is checked first. A baseline rule can never be
//!    widened by a user rule: when a baseline rule matches, the result is the *stricter* of the
//!    baseline verdict and whatever the user rules (or `default_decision`) say. So a user `allow`
//!    for `~/.ssh/**` has no effect, while a user `deny` can still tighten a baseline `approve`.
//! 2. The **user rules** in file order; the first rule that matches wins. The bot prepends project
//!    rules to the global ones when it writes the per-container file (`LOOP-COMPAT.md`), so
//!    project rules are checked first.
//! 3. `default_decision` when nothing matched.
//!
//! Strictness is `deny` > `approve` > `allow`.
//!
//! # Matching
//!
//! - `commands` are globs on the program's basename; `args_patterns` are regexes on the
//!   arguments (argv without argv\[0\]) joined by single spaces. An empty list matches anything;
//!   with several patterns, any one matching is enough. Wrappers (`env`, `sudo`, `nice`,
//!   `timeout`, ...) are looked through: a rule matches when it matches the outer program or any
//!   program the wrappers would run.
//! - `paths` / `pattern` are globs where `*` stays inside one path component and `**` crosses
//!   them. A leading `~` means the agent's home directory. A pattern that starts with neither
//!   `/`, `~` nor a glob character is relative: it is anchored at the workspace when one is known, and
//!   otherwise matches at any depth (`**/pattern`).
//! - Paths are normalised lexically (`.`, `..`, repeated `/`) before matching. The supervisor
//!   also matches the symlink-resolved path and keeps the stricter verdict.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use globset::{Candidate, Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::gitguard;

/// Where the per-container policy file is mounted inside the agent container.
pub use loop_wire::container::paths::GATE_POLICY as DEFAULT_POLICY_PATH;

/// How many wrapper programs are looked through before giving up.
const MAX_WRAPPER_DEPTH: usize = 8;

/// Errors from loading or validating a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read gate policy {path}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid gate policy {origin} at `{field}`: {message}")]
    Parse {
        /// The file name, or `<string>` when parsed from memory.
        origin: String,
        /// The path of the offending field, e.g. `file_rules[0].operations[1]`.
        field: String,
        /// What serde said, including line and column.
        message: String,
    },
    /// A glob in `paths` or `pattern` does not compile.
    #[error("invalid glob `{pattern}` in `{field}`: {source}")]
    InvalidGlob {
        /// The field, e.g. `file_rules[2].paths[0]`.
        field: String,
        /// The glob as written.
        pattern: String,
        /// The compiler error.
        #[source]
        source: globset::Error,
    },
    /// A regex in `args_patterns` does not compile.
    #[error("invalid regex `{pattern}` in `{field}`: {source}")]
    InvalidRegex {
        /// The field, e.g. `command_rules[0].args_patterns[1]`.
        field: String,
        /// The regex as written.
        pattern: String,
        /// The compiler error.
        #[source]
        source: regex::Error,
    },
    /// A `connect_rules` host is not an ip address, a cidr or `*`.
    #[error(
        "invalid host `{value}` in `{field}`: expected an ip address, a cidr such as 10.0.0.0/8, or `*` (host names cannot be matched at connect(2))"
    )]
    InvalidHost {
        /// The field, e.g. `connect_rules[0].hosts[2]`.
        field: String,
        /// The value as written.
        value: String,
    },
    /// A `connect_rules` port is not a port number or a range `a-b`.
    #[error("invalid port `{value}` in `{field}`: expected a number or a range such as 8000-8100")]
    InvalidPort {
        /// The field, e.g. `connect_rules[0].ports[0]`.
        field: String,
        /// The value as written.
        value: String,
    },
}

/// What happens to a trapped syscall.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let the syscall run.
    #[default]
    Allow,
    /// Hold the syscall until a person decides (Loop's `ask` is the same).
    #[serde(alias = "ask")]
    Approve,
    /// Fail the syscall.
    Deny,
}

impl Verdict {
    /// The stricter of two verdicts: `deny` > `approve` > `allow`.
    pub fn stricter(self, other: Verdict) -> Verdict {
        self.max(other)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        })
    }
}

/// A file operation named in `file_rules[].operations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOperation {
    /// Open for reading.
    Read,
    /// Open for writing, truncate.
    Write,
    /// Create a file, directory, link or the destination of a rename.
    Create,
    /// Unlink, rmdir, or the source of a rename.
    Delete,
    /// chmod and friends.
    Chmod,
    /// chown and friends.
    Chown,
    /// The existing side of a hard or symbolic link.
    Link,
    /// Open with `O_PATH` (stat(2) itself is not trapped).
    Stat,
    /// Open a directory (`O_DIRECTORY`) for listing.
    List,
}

impl FileOperation {
    /// The name used in policy files and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            FileOperation::Read => "read",
            FileOperation::Write => "write",
            FileOperation::Create => "create",
            FileOperation::Delete => "delete",
            FileOperation::Chmod => "chmod",
            FileOperation::Chown => "chown",
            FileOperation::Link => "link",
            FileOperation::Stat => "stat",
            FileOperation::List => "list",
        }
    }

    /// The operation as a verb on a path, for a person: `create or replace`, `link to`. A
    /// rename onto a path is a `create`, hence "or replace"; its source is a `delete`.
    pub fn verb(self) -> &'static str {
        match self {
            FileOperation::Read => "read",
            FileOperation::Write => "write",
            FileOperation::Create => "create or replace",
            FileOperation::Delete => "delete or move away",
            FileOperation::Chmod => "change the mode of",
            FileOperation::Chown => "change the owner of",
            FileOperation::Link => "link to",
            FileOperation::Stat => "look up",
            FileOperation::List => "list",
        }
    }

    /// Whether this operation only observes (read, stat, list).
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            FileOperation::Read | FileOperation::Stat | FileOperation::List
        )
    }
}

impl fmt::Display for FileOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `path_rules[]`: unix socket paths for `connect(2)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    /// A glob on the socket path (abstract sockets are written `@name`).
    pub pattern: String,
    /// What to do on a match.
    pub decision: Verdict,
    /// Shown to the agent and the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `command_rules[]`: programs run with `execve(2)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRule {
    /// Globs on the program's basename; empty matches any program.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Regexes on the arguments joined by spaces; empty matches any arguments.
    #[serde(default)]
    pub args_patterns: Vec<String>,
    /// What to do on a match.
    pub decision: Verdict,
    /// Shown to the agent and the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `file_rules[]`: paths and the operations on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Globs on the absolute path.
    pub paths: Vec<String>,
    /// Operations this rule covers; empty covers all of them.
    #[serde(default)]
    pub operations: Vec<FileOperation>,
    /// What to do on a match.
    pub decision: Verdict,
    /// Shown to the agent and the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A port or an inclusive range of ports in `connect_rules[].ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port.
    Number(u16),
    /// `"443"` or `"8000-8100"`.
    Text(String),
}

/// `connect_rules[]` (loop's addition): TCP/UDP egress by address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRule {
    /// Ip addresses, cidrs (`10.0.0.0/8`, `fd00::/8`) or `*`; empty matches any address.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Ports or ranges; empty matches any port.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// What to do on a match.
    pub decision: Verdict,
    /// Shown to the agent and the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The policy file as written on disk (`/etc/loop/gate-policy.json`), snake_case throughout.
///
/// Unknown keys are rejected at every level: a typo must never widen access.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Applied when no rule matches; `allow` when absent.
    #[serde(default)]
    pub default_decision: Verdict,
    /// Unix socket rules for `connect(2)`.
    #[serde(default)]
    pub path_rules: Vec<PathRule>,
    /// Program rules for `execve(2)`.
    #[serde(default)]
    pub command_rules: Vec<CommandRule>,
    /// File rules for opens, renames, unlinks, chmod, ...
    #[serde(default)]
    pub file_rules: Vec<FileRule>,
    /// TCP/UDP egress rules for `connect(2)`.
    #[serde(default)]
    pub connect_rules: Vec<ConnectRule>,
    /// Written by loop, never taken from a config file: `loop dockerproxy` serves
    /// `/var/run/docker.sock` in this container, so the baseline lets the agent connect to it
    /// (the host's socket, at `/run/loop-docker-host/docker.sock`, stays denied either way).
    #[serde(default, skip_serializing_if = "is_false")]
    pub docker_proxy: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl PolicyFile {
    /// Parses a policy from JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<PolicyFile, PolicyError> {
        parse_json(text).map_err(|problem| problem.into_error(origin))
    }

    /// Parses a policy from an already decoded JSON value (the bot keeps config rules as
    /// values); `origin` names it in errors.
    pub fn from_value(value: serde_json::Value, origin: &str) -> Result<PolicyFile, PolicyError> {
        parse_value(value).map_err(|problem| problem.into_error(origin))
    }

    /// Compiles every glob, regex, host and port without a real agent context, so the bot can
    /// reject a bad rule when it loads its config rather than when a container starts.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let context = PolicyContext::new("/home/agent").with_workspace("/workspace");
        RuleSet::compile(self, &context, "").map(|_| ())
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<PolicyFile, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        PolicyFile::from_json(&text, &path.display().to_string())
    }
}

/// Why a policy's JSON did not parse: the offending field (`.` for the whole document) and
/// serde's message. Shared by the gate's and the docker proxy's policy files, which wrap it in
/// their own error types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonProblem {
    pub field: String,
    pub message: String,
}

impl JsonProblem {
    fn from_path_error(err: serde_path_to_error::Error<serde_json::Error>) -> JsonProblem {
        let field = err.path().to_string();
        JsonProblem {
            field: if field.is_empty() {
                ".".to_owned()
            } else {
                field
            },
            message: err.into_inner().to_string(),
        }
    }

    fn into_error(self, origin: &str) -> PolicyError {
        PolicyError::Parse {
            origin: origin.to_owned(),
            field: self.field,
            message: self.message,
        }
    }
}

/// Parses JSON text with the path of the field that failed; trailing data is an error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JsonProblem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(JsonProblem::from_path_error)?;
    de.end().map_err(|err| JsonProblem {
        field: ".".to_owned(),
        message: err.to_string(),
    })?;
    Ok(parsed)
}

/// Parses an already decoded value with the path of the field that failed.
pub(crate) fn parse_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, JsonProblem> {
    serde_path_to_error::deserialize(value).map_err(JsonProblem::from_path_error)
}

/// Facts about the agent that patterns refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyContext {
    /// The agent's `HOME`; `~` in patterns expands to it.
    pub home: PathBuf,
    /// The agent's working directory (the mounted project), when known.
    pub workspace: Option<PathBuf>,
}

impl PolicyContext {
    /// A context with a home and no workspace.
    pub fn new(home: impl Into<PathBuf>) -> PolicyContext {
        PolicyContext {
            home: home.into(),
            workspace: None,
        }
    }

    /// Sets the workspace.
    pub fn with_workspace(mut self, workspace: impl Into<PathBuf>) -> PolicyContext {
        self.workspace = Some(workspace.into());
        self
    }
}

/// Where a unix or inet `connect(2)` goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectTarget {
    /// A filesystem unix socket (absolute), or an abstract one written `@name`.
    Unix(PathBuf),
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
}

/// One thing the agent tries to do, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `execve(2)` / `execveat(2)`.
    Exec {
        /// The program path as resolved by the supervisor.
        program: PathBuf,
        /// The full argv, argv\[0\] included.
        argv: Vec<String>,
        /// The caller's working directory, used to resolve relative arguments (`rm -r ../x`).
        cwd: Option<PathBuf>,
    },
    /// A file operation on an absolute path.
    File {
        /// The absolute path.
        path: PathBuf,
        /// What is done to it.
        operation: FileOperation,
    },
    /// `connect(2)`.
    Connect {
        /// Where to.
        target: ConnectTarget,
    },
}

impl Request {
    /// The key under which an "allow for session" answer is cached:
    /// `execve:<program>:<first two args>`, `connect:<path or ip:port>`, `open:<path>:<op>`.
    pub fn session_key(&self) -> String {
        match self {
            Request::Exec { program, argv, .. } => {
                let args: Vec<&str> = argv.iter().skip(1).take(2).map(String::as_str).collect();
                format!("execve:{}:{}", program.display(), args.join(" "))
            }
            Request::File { path, operation } => format!("open:{}:{}", path.display(), operation),
            Request::Connect { target } => match target {
                ConnectTarget::Unix(path) => format!("connect:{}", path.display()),
                ConnectTarget::Inet(addr) => format!("connect:{addr}"),
            },
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Exec { program, argv, .. } => {
                write!(f, "exec {}", program.display())?;
                for arg in argv.iter().skip(1) {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
            Request::File { path, operation } => write!(f, "{operation} {}", path.display()),
            Request::Connect { target } => match target {
                ConnectTarget::Unix(path) => write!(f, "connect unix:{}", path.display()),
                ConnectTarget::Inet(addr) => write!(f, "connect {addr}"),
            },
        }
    }
}

/// Which list a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// `path_rules`.
    Path,
    /// `command_rules`.
    Command,
    /// `file_rules`.
    File,
    /// `connect_rules`.
    Connect,
}

impl RuleKind {
    fn field(self) -> &'static str {
        match self {
            RuleKind::Path => "path_rules",
            RuleKind::Command => "command_rules",
            RuleKind::File => "file_rules",
            RuleKind::Connect => "connect_rules",
        }
    }
}

/// Which rule produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// A rule of the built-in baseline.
    Baseline(RuleKind, usize),
    /// The baseline's recursive-remove guard (`rm -r` outside the workspace and `/tmp`).
    BaselineRecursiveRemove,
    /// A rule of the policy file, by list and index.
    User(RuleKind, usize),
    /// No rule matched: `default_decision`.
    Default,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Baseline(kind, i) => write!(f, "baseline.{}[{i}]", kind.field()),
            RuleRef::BaselineRecursiveRemove => f.write_str("baseline.recursive_remove"),
            RuleRef::User(kind, i) => write!(f, "{}[{i}]", kind.field()),
            RuleRef::Default => f.write_str("default_decision"),
        }
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// Which rule said so.
    pub rule: RuleRef,
    /// The rule's message, if it has one.
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
struct CompiledPathRule {
    decision: Verdict,
    message: Option<String>,
}

#[derive(Debug, Clone)]
struct CompiledCommandRule {
    commands: Vec<GlobMatcher>,
    args: Vec<Regex>,
    decision: Verdict,
    message: Option<String>,
}

#[derive(Debug, Clone)]
struct CompiledFileRule {
    operations: BTreeSet<FileOperation>,
    decision: Verdict,
    message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostSpec {
    Any,
    Net(IpAddr, u8),
}

#[derive(Debug, Clone)]
struct CompiledConnectRule {
    hosts: Vec<HostSpec>,
    ports: Vec<(u16, u16)>,
    decision: Verdict,
    message: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct RuleSet {
    path: Vec<CompiledPathRule>,
    /// The globs of `path`, by rule.
    path_globs: RuleGlobs,
    command: Vec<CompiledCommandRule>,
    file: Vec<CompiledFileRule>,
    /// The globs of `file`, by rule.
    file_globs: RuleGlobs,
    connect: Vec<CompiledConnectRule>,
}

/// The file rules whose globs match one path.
struct FileMatches {
    user: Vec<usize>,
    baseline: Vec<usize>,
}

/// Every glob of a list of rules in one [`GlobSet`], and the rule each glob belongs to.
///
/// The set is compiled once with the policy and matches a path in one pass: globs that are
/// literals, literal prefixes or suffixes, basenames or extensions are looked up without a
/// regex, the rest share one regex set, and the path's basename and extension are computed
/// once per path rather than once per glob.
#[derive(Debug, Clone, Default)]
struct RuleGlobs {
    set: GlobSet,
    owner: Vec<usize>,
}

impl RuleGlobs {
    fn build(globs: Vec<(usize, Glob)>) -> Result<RuleGlobs, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::with_capacity(globs.len());
        for (rule, glob) in globs {
            builder.add(glob);
            owner.push(rule);
        }
        Ok(RuleGlobs {
            set: builder.build()?,
            owner,
        })
    }

    /// The rules with at least one glob matching `path`, in rule order.
    fn matching(&self, path: &Candidate<'_>) -> Vec<usize> {
        let mut rules: Vec<usize> = self
            .set
            .matches_candidate(path)
            .into_iter()
            .filter_map(|glob| self.owner.get(glob).copied())
            .collect();
        rules.sort_unstable();
        rules.dedup();
        rules
    }
}

/// A compiled policy: user rules, the baseline and the default.
#[derive(Debug, Clone)]
pub struct Policy {
    default_decision: Verdict,
    baseline: RuleSet,
    recursive_remove_guard: bool,
    user: RuleSet,
    context: PolicyContext,
}

impl Policy {
    /// Compiles a policy file on top of the baseline.
    pub fn compile(file: &PolicyFile, context: &PolicyContext) -> Result<Policy, PolicyError> {
        let baseline =
            RuleSet::compile(&baseline_file_for(file.docker_proxy), context, "baseline.")?;
        let user = RuleSet::compile(file, context, "")?;
        Ok(Policy {
            default_decision: file.default_decision,
            baseline,
            recursive_remove_guard: true,
            user,
            context: context.clone(),
        })
    }

    /// Loads and compiles the policy file at `path` on top of the baseline.
    pub fn load(path: &Path, context: &PolicyContext) -> Result<Policy, PolicyError> {
        Policy::compile(&PolicyFile::load(path)?, context)
    }

    /// The baseline alone, with `default_decision: allow`.
    pub fn baseline(context: &PolicyContext) -> Policy {
        // The baseline is a constant written in this file and covered by tests, so a compile
        // error here is a programming mistake; still, fall back to "deny everything" rather
        // than panicking inside the supervisor.
        Policy::compile(&PolicyFile::default(), context).unwrap_or_else(|err| {
            tracing::error!(error = %err, "baseline gate policy does not compile, denying all");
            Policy {
                default_decision: Verdict::Deny,
                baseline: RuleSet::default(),
                recursive_remove_guard: true,
                user: RuleSet::default(),
                context: context.clone(),
            }
        })
    }

    /// The policy's `default_decision`.
    pub fn default_decision(&self) -> Verdict {
        self.default_decision
    }

    /// The context the policy was compiled with.
    pub fn context(&self) -> &PolicyContext {
        &self.context
    }

    /// Whether read-only opens must reach the supervisor: true when the default is not `allow`
    /// or any file rule (baseline included) covers read, stat or list. See [`crate::filter`].
    pub fn needs_read_trap(&self) -> bool {
        self.default_decision != Verdict::Allow
            || self
                .baseline
                .file
                .iter()
                .chain(self.user.file.iter())
                .any(|rule| {
                    rule.decision != Verdict::Allow
                        && (rule.operations.is_empty()
                            || rule.operations.iter().any(|op| op.is_read_only()))
                })
    }

    /// Decides one request. Pure: no IO, no allocation beyond the result and argv parsing.
    pub fn decide(&self, request: &Request) -> Decision {
        self.decide_with(request, None)
    }

    /// The rules whose globs match `path`, in the user rules and in the baseline.
    fn file_matches(&self, path: &Path) -> FileMatches {
        let path = normalize(path);
        let candidate = Candidate::new(&path);
        FileMatches {
            user: self.user.file_globs.matching(&candidate),
            baseline: self.baseline.file_globs.matching(&candidate),
        }
    }

    /// [`Policy::decide`], with the glob matches of a file request's path when known.
    fn decide_with(&self, request: &Request, file: Option<&FileMatches>) -> Decision {
        let user = self
            .user
            .first_match(request, false, file.map(|f| f.user.as_slice()));
        let user = match user {
            Some((i, kind, verdict, message)) => Decision {
                verdict,
                rule: RuleRef::User(kind, i),
                message,
            },
            None => Decision {
                verdict: self.default_decision,
                rule: RuleRef::Default,
                message: None,
            },
        };
        let baseline = self
            .baseline
            .first_match(request, true, file.map(|f| f.baseline.as_slice()))
            .map(|(i, kind, verdict, message)| Decision {
                verdict,
                rule: RuleRef::Baseline(kind, i),
                message,
            })
            .or_else(|| {
                (self.recursive_remove_guard && is_recursive_remove_outside(request, &self.context))
                    .then(|| Decision {
                        verdict: Verdict::Deny,
                        rule: RuleRef::BaselineRecursiveRemove,
                        message: Some(
                            "recursive remove outside the workspace and /tmp is not allowed"
                                .to_owned(),
                        ),
                    })
            });
        match baseline {
            Some(base) if base.verdict >= user.verdict => base,
            _ => user,
        }
    }

    /// Decides several requests that one syscall makes (a rename deletes one path and creates
    /// another) and keeps the strictest decision; the first one wins a tie.
    pub fn decide_all<'a>(
        &self,
        requests: impl IntoIterator<Item = &'a Request>,
    ) -> Option<(Decision, &'a Request)> {
        let mut best: Option<(Decision, &'a Request)> = None;
        // One syscall asks about the same path for several operations: match its globs once.
        let mut matched: Vec<(&Path, FileMatches)> = Vec::new();
        for request in requests {
            let decision = match request {
                Request::File { path, .. } => {
                    let index = match matched.iter().position(|(p, _)| *p == path.as_path()) {
                        Some(index) => index,
                        None => {
                            matched.push((path, self.file_matches(path)));
                            matched.len() - 1
                        }
                    };
                    self.decide_with(request, matched.get(index).map(|(_, m)| m))
                }
                _ => self.decide(request),
            };
            match &best {
                Some((b, _)) if b.verdict >= decision.verdict => {}
                _ => best = Some((decision, request)),
            }
        }
        best
    }
}

impl RuleSet {
    fn compile(
        file: &PolicyFile,
        context: &PolicyContext,
        prefix: &str,
    ) -> Result<RuleSet, PolicyError> {
        let mut set = RuleSet::default();
        let mut path_globs = Vec::new();
        for (i, rule) in file.path_rules.iter().enumerate() {
            let field = format!("{prefix}path_rules[{i}].pattern");
            path_globs.push((i, compile_glob(&rule.pattern, context, &field)?));
            set.path.push(CompiledPathRule {
                decision: rule.decision,
                message: rule.message.clone(),
            });
        }
        for (i, rule) in file.command_rules.iter().enumerate() {
            let mut commands = Vec::new();
            for (j, pattern) in rule.commands.iter().enumerate() {
                let field = format!("{prefix}command_rules[{i}].commands[{j}]");
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| PolicyError::InvalidGlob {
                        field,
                        pattern: pattern.clone(),
                        source,
                    })?;
                commands.push(glob.compile_matcher());
            }
            let mut args = Vec::new();
            for (j, pattern) in rule.args_patterns.iter().enumerate() {
                let regex = Regex::new(pattern).map_err(|source| PolicyError::InvalidRegex {
                    field: format!("{prefix}command_rules[{i}].args_patterns[{j}]"),
                    pattern: pattern.clone(),
                    source,
                })?;
                args.push(regex);
            }
            set.command.push(CompiledCommandRule {
                commands,
                args,
                decision: rule.decision,
                message: rule.message.clone(),
            });
        }
        let mut file_globs = Vec::new();
        for (i, rule) in file.file_rules.iter().enumerate() {
            for (j, pattern) in rule.paths.iter().enumerate() {
                let field = format!("{prefix}file_rules[{i}].paths[{j}]");
                file_globs.push((i, compile_glob(pattern, context, &field)?));
            }
            set.file.push(CompiledFileRule {
                operations: rule.operations.iter().copied().collect(),
                decision: rule.decision,
                message: rule.message.clone(),
            });
        }
        for (i, rule) in file.connect_rules.iter().enumerate() {
            let mut hosts = Vec::new();
            for (j, host) in rule.hosts.iter().enumerate() {
                let field = format!("{prefix}connect_rules[{i}].hosts[{j}]");
                hosts.push(parse_host(host).ok_or_else(|| PolicyError::InvalidHost {
                    field,
                    value: host.clone(),
                })?);
            }
            let mut ports = Vec::new();
            for (j, port) in rule.ports.iter().enumerate() {
                let field = format!("{prefix}connect_rules[{i}].ports[{j}]");
                ports.push(parse_port(port).ok_or_else(|| PolicyError::InvalidPort {
                    field,
                    value: match port {
                        PortSpec::Number(n) => n.to_string(),
                        PortSpec::Text(t) => t.clone(),
                    },
                })?);
            }
            set.connect.push(CompiledConnectRule {
                hosts,
                ports,
                decision: rule.decision,
                message: rule.message.clone(),
            });
        }
        let whole = |kind: &str| {
            let field = format!("{prefix}{kind}");
            move |source| PolicyError::InvalidGlob {
                field,
                pattern: "(every pattern together)".to_owned(),
                source,
            }
        };
        set.path_globs = RuleGlobs::build(path_globs).map_err(whole("path_rules"))?;
        set.file_globs = RuleGlobs::build(file_globs).map_err(whole("file_rules"))?;
        Ok(set)
    }

    /// The first rule matching `request`. With `non_allow_only`, `allow` rules are skipped
    /// (the baseline only restricts).
    fn first_match(
        &self,
        request: &Request,
        non_allow_only: bool,
        file_matching: Option<&[usize]>,
    ) -> Option<(usize, RuleKind, Verdict, Option<String>)> {
        let skip = |d: Verdict| non_allow_only && d == Verdict::Allow;
        match request {
            Request::Exec { program, argv, .. } => {
                let layers = command_layers(program, argv);
                self.command.iter().enumerate().find_map(|(i, rule)| {
                    (!skip(rule.decision) && layers.iter().any(|layer| rule.matches(layer)))
                        .then(|| (i, RuleKind::Command, rule.decision, rule.message.clone()))
                })
            }
            Request::File { path, operation } => {
                let computed;
                let matching = match file_matching {
                    Some(matching) => matching,
                    None => {
                        computed = self.file_globs.matching(&Candidate::new(&normalize(path)));
                        computed.as_slice()
                    }
                };
                matching.iter().copied().find_map(|i| {
                    let rule = self.file.get(i)?;
                    (!skip(rule.decision)
                        && (rule.operations.is_empty() || rule.operations.contains(operation)))
                    .then(|| (i, RuleKind::File, rule.decision, rule.message.clone()))
                })
            }
            Request::Connect {
                target: ConnectTarget::Unix(path),
            } => {
                let path = if path.starts_with("@") {
                    path.clone()
                } else {
                    normalize(path)
                };
                let matching = self.path_globs.matching(&Candidate::new(&path));
                matching.into_iter().find_map(|i| {
                    let rule = self.path.get(i)?;
                    (!skip(rule.decision))
                        .then(|| (i, RuleKind::Path, rule.decision, rule.message.clone()))
                })
            }
            Request::Connect {
                target: ConnectTarget::Inet(addr),
            } => self.connect.iter().enumerate().find_map(|(i, rule)| {
                (!skip(rule.decision) && rule.matches(addr))
                    .then(|| (i, RuleKind::Connect, rule.decision, rule.message.clone()))
            }),
        }
    }
}

impl CompiledCommandRule {
    fn matches(&self, layer: &CommandLayer<'_>) -> bool {
        let name_ok =
            self.commands.is_empty() || self.commands.iter().any(|g| g.is_match(layer.name));
        if !name_ok {
            return false;
        }
        if self.args.is_empty() {
            return true;
        }
        let joined = layer.args.join(" ");
        self.args.iter().any(|r| r.is_match(&joined))
    }
}

impl CompiledConnectRule {
    fn matches(&self, addr: &SocketAddr) -> bool {
        let ip = canonical_ip(addr.ip());
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|h| match *h {
                HostSpec::Any => true,
                HostSpec::Net(net, len) => ip_in_net(ip, net, len),
            });
        let port_ok = self.ports.is_empty()
            || self
                .ports
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&addr.port()));
        host_ok && port_ok
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are matched as IPv4, so a v4 deny cannot be
/// bypassed through a v6 socket.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn ip_in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn parse_host(text: &str) -> Option<HostSpec> {
    if text == "*" {
        return Some(HostSpec::Any);
    }
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let ip = canonical_ip(ip);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(len) => len.parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some(HostSpec::Net(ip, len))
}

fn parse_port(spec: &PortSpec) -> Option<(u16, u16)> {
    match spec {
        PortSpec::Number(n) => Some((*n, *n)),
        PortSpec::Text(text) => match text.split_once('-') {
            Some((lo, hi)) => {
                let lo: u16 = lo.trim().parse().ok()?;
                let hi: u16 = hi.trim().parse().ok()?;
                (lo <= hi).then_some((lo, hi))
            }
            None => {
                let n: u16 = text.trim().parse().ok()?;
                Some((n, n))
            }
        },
    }
}

/// Expands `~` and anchors relative patterns, then compiles with `*` confined to one component.
fn compile_glob(pattern: &str, context: &PolicyContext, field: &str) -> Result<Glob, PolicyError> {
    let expanded = expand_pattern(pattern, context);
    GlobBuilder::new(&expanded)
        .literal_separator(true)
        .build()
        .map_err(|source| PolicyError::InvalidGlob {
            field: field.to_owned(),
            pattern: pattern.to_owned(),
            source,
        })
}

fn expand_pattern(pattern: &str, context: &PolicyContext) -> String {
    let home = globset::escape(&context.home.display().to_string());
    if pattern == "~" {
        return home;
    }
    if let Some(rest) = pattern.strip_prefix("~/") {
        return format!("{}/{rest}", home.trim_end_matches('/'));
    }
    if pattern.starts_with(['/', '*', '?', '[', '{', '@']) {
        return pattern.to_owned();
    }
    let rest = pattern.strip_prefix("./").unwrap_or(pattern);
    match &context.workspace {
        Some(ws) => format!(
            "{}/{rest}",
            globset::escape(&ws.display().to_string()).trim_end_matches('/')
        ),
        None => format!("**/{rest}"),
    }
}

/// Lexical normalisation: removes `.`, resolves `..` without touching the filesystem and
/// collapses repeated separators. A relative path stays relative.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::CurDir => {}
            Component::RootDir => out.push("/"),
            Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
                if out.as_os_str().is_empty() && path.is_absolute() {
                    out.push("/");
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

/// One program in a wrapper chain: its basename and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLayer<'a> {
    /// The program's basename.
    pub name: &'a str,
    /// Its arguments (argv without argv\[0\]).
    pub args: Vec<&'a str>,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The outer program and every program the wrappers in front of it would run, outermost first.
/// `env FOO=1 nice -n 5 git push` gives `env ...`, `nice ...` and `git push`.
pub fn command_layers<'a>(program: &'a Path, argv: &'a [String]) -> Vec<CommandLayer<'a>> {
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let mut layers = vec![CommandLayer { name, args }];
    for _ in 0..MAX_WRAPPER_DEPTH {
        let Some(last) = layers.last() else { break };
        let Some(inner) = unwrap_wrapper(last.name, &last.args) else {
            break;
        };
        if inner.is_empty() {
            break;
        }
        let layer = CommandLayer {
            name: basename(inner[0]),
            args: inner[1..].to_vec(),
        };
        layers.push(layer);
    }
    layers
}

/// How a wrapper's command line is laid out before the wrapped command.
struct WrapperSyntax {
    /// Short options that take a value (`-n 5` or `-n5`).
    short_with_value: &'static [char],
    /// Long options that take a value (`--user root` or `--user=root`).
    long_with_value: &'static [&'static str],
    /// Positional arguments before the command (timeout's DURATION, taskset's mask).
    positional: usize,
    /// Whether `NAME=value` words before the command are skipped (env, sudo).
    assignments: bool,
    /// Whether a lone `-` is an option (env's `-` means `-i`).
    dash_is_option: bool,
}

fn wrapper_syntax(name: &str) -> Option<WrapperSyntax> {
    let syntax = match name {
        "env" => WrapperSyntax {
            short_with_value: &['u', 'C', 'S', 'P'],
            long_with_value: &[
                "unset",
                "chdir",
                "split-string",
                "default-signal",
                "ignore-signal",
                "block-signal",
            ],
            positional: 0,
            assignments: true,
            dash_is_option: true,
        },
        "sudo" | "doas" => WrapperSyntax {
            short_with_value: &['u', 'g', 'C', 'D', 'h', 'p', 'r', 't', 'U', 'T', 'R'],
            long_with_value: &[
                "user",
                "group",
                "close-from",
                "chdir",
                "host",
                "prompt",
                "role",
                "type",
                "other-user",
                "command-timeout",
                "chroot",
            ],
            positional: 0,
            assignments: true,
            dash_is_option: false,
        },
        "nice" => WrapperSyntax {
            short_with_value: &['n'],
            long_with_value: &["adjustment"],
            positional: 0,
            assignments: false,
            dash_is_option: false,
        },
        "ionice" => WrapperSyntax {
            short_with_value: &['c', 'n'],
            long_with_value: &["class", "classdata"],
            positional: 0,
            assignments: false,
            dash_is_option: false,
        },
        "timeout" => WrapperSyntax {
            short_with_value: &['s', 'k'],
            long_with_value: &["signal", "kill-after"],
            positional: 1,
            assignments: false,
            dash_is_option: false,
        },
        "nohup" | "setsid" | "command" | "exec" | "builtin" => WrapperSyntax {
            short_with_value: &[],
            long_with_value: &[],
            positional: 0,
            assignments: false,
            dash_is_option: false,
        },
        "stdbuf" => WrapperSyntax {
            short_with_value: &['i', 'o', 'e'],
            long_with_value: &["input", "output", "error"],
            positional: 0,
            assignments: false,
            dash_is_option: false,
        },
        "time" => WrapperSyntax {
            short_with_value: &['f', 'o'],
            long_with_value: &["format", "output"],
            positional: 0,
            assignments: false,
            dash_is_option: false,
        },
        "taskset" => WrapperSyntax {
            short_with_value: &[],
            long_with_value: &[],
            positional: 1,
            assignments: false,
            dash_is_option: false,
        },
        "chrt" => WrapperSyntax {
            short_with_value: &['T', 'P', 'D'],
            long_with_value: &["sched-runtime", "sched-period", "sched-deadline"],
            positional: 1,
            assignments: false,
            dash_is_option: false,
        },
        "xargs" => WrapperSyntax {
            short_with_value: &['a', 'd', 'E', 'e', 'I', 'i', 'L', 'l', 'n', 'P', 's'],
            long_with_value: &[
                "arg-file",
                "delimiter",
                "eof",
                "replace",
                "max-lines",
                "max-args",
                "max-procs",
                "max-chars",
                "process-slot-var",
            ],
            positional: 0,
            assignments: false,
            dash_is_option: false,
        },
        "flock" => WrapperSyntax {
            short_with_value: &['w', 'E', 'c'],
            long_with_value: &["timeout", "conflict-exit-code", "command"],
            positional: 1,
            assignments: false,
            dash_is_option: false,
        },
        _ => return None,
    };
    Some(syntax)
}

/// The wrapped command line (program first) if `name` is a wrapper that runs one.
fn unwrap_wrapper<'a>(name: &str, args: &[&'a str]) -> Option<Vec<&'a str>> {
    let syntax = wrapper_syntax(name)?;
    let mut i = 0;
    let mut positional = syntax.positional;
    // `env -S "git push"` and `env --split-string=...` carry the command line in one word.
    let mut split_string: Option<&'a str> = None;
    while i < args.len() {
        let arg = args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if arg == "-" && syntax.dash_is_option {
            i += 1;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (key, has_value) = match long.split_once('=') {
                Some((k, v)) => {
                    if name == "env" && k == "split-string" {
                        split_string = Some(v);
                    }
                    (k, true)
                }
                None => (long, false),
            };
            if !has_value && syntax.long_with_value.contains(&key) {
                if name == "env" && key == "split-string" {
                    split_string = args.get(i + 1).copied();
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if arg.len() > 1 && arg.starts_with('-') {
            // `nice -10 cmd`: a numeric option is the adjustment itself.
            let flags: Vec<char> = arg[1..].chars().collect();
            let mut consumed_next = false;
            for (k, c) in flags.iter().enumerate() {
                if syntax.short_with_value.contains(c) {
                    let attached = k + 1 < flags.len();
                    if name == "env" && *c == 'S' {
                        split_string = if attached {
                            Some(&arg[2 + k..])
                        } else {
                            args.get(i + 1).copied()
                        };
                    }
                    if !attached {
                        consumed_next = true;
                    }
                    break;
                }
            }
            i += if consumed_next { 2 } else { 1 };
            continue;
        }
        if syntax.assignments && is_assignment(arg) {
            i += 1;
            continue;
        }
        if positional > 0 {
            positional -= 1;
            i += 1;
            continue;
        }
        break;
    }
    if let Some(line) = split_string {
        let mut words: Vec<&'a str> = line.split_whitespace().collect();
        words.extend(args.iter().skip(i).copied());
        return Some(words);
    }
    Some(args.get(i..).map(<[&str]>::to_vec).unwrap_or_default())
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// The baseline's `rm -r` guard: any `rm` layer with a recursive flag and an operand outside
/// the workspace and `/tmp`. Relative operands are resolved against the caller's cwd when it
/// is known; without a cwd they are assumed to be inside the workspace.
fn is_recursive_remove_outside(request: &Request, context: &PolicyContext) -> bool {
    let Request::Exec { program, argv, cwd } = request else {
        return false;
    };
    command_layers(program, argv)
        .iter()
        .filter(|layer| layer.name == "rm")
        .any(|layer| {
            let mut recursive = false;
            let mut operands = Vec::new();
            let mut options_done = false;
            for arg in &layer.args {
                if !options_done && *arg == "--" {
                    options_done = true;
                } else if !options_done && arg.starts_with("--") {
                    recursive |= *arg == "--recursive";
                } else if !options_done && arg.len() > 1 && arg.starts_with('-') {
                    recursive |= arg.contains(['r', 'R']);
                } else {
                    operands.push(*arg);
                }
            }
            recursive
                && operands.iter().any(|op| {
                    let path = if let Some(rest) = op.strip_prefix("~/") {
                        context.home.join(rest)
                    } else if *op == "~" {
                        context.home.clone()
                    } else if op.starts_with('/') {
                        PathBuf::from(op)
                    } else if let Some(cwd) = cwd {
                        cwd.join(op)
                    } else {
                        return false;
                    };
                    let path = normalize(&path);
                    let inside = |base: &Path| path != *base && path.starts_with(base);
                    let in_workspace = context.workspace.as_deref().is_some_and(inside);
                    !(in_workspace || inside(Path::new("/tmp")))
                })
        })
}

/// Writes, creations, deletions and metadata changes: everything but read, stat and list.
const MODIFY: &[FileOperation] = &[
    FileOperation::Write,
    FileOperation::Create,
    FileOperation::Delete,
    FileOperation::Chmod,
    FileOperation::Chown,
    FileOperation::Link,
];

/// [`MODIFY`] without deletions.
const MODIFY_BUT_DELETE: &[FileOperation] = &[
    FileOperation::Write,
    FileOperation::Create,
    FileOperation::Chmod,
    FileOperation::Chown,
    FileOperation::Link,
];

fn file_rule(
    paths: &[&str],
    operations: &[FileOperation],
    decision: Verdict,
    message: &str,
) -> FileRule {
    FileRule {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        operations: operations.to_vec(),
        decision,
        message: Some(message.to_owned()),
    }
}

/// The built-in baseline (LOOP-COMPAT.md, "Loop's baseline denies"). It cannot be widened by a
/// user rule; see the module docs. The `rm -r` guard is native code, not a rule here.
pub fn baseline_file() -> PolicyFile {
    baseline_file_for(false)
}

/// Unix sockets the agent never connects to: the host daemon's, wherever it is mounted.
const HOST_DOCKER_SOCKETS: &[&str] = &[
    "/run/loop-docker-host",
    "/run/loop-docker-host/**",
    "/var/run/loop-docker-host",
    "/var/run/loop-docker-host/**",
    "/var/run/docker/**",
    "/run/docker/**",
    "/run/containerd/**",
];
/// The conventional socket paths: the host's socket when someone mounted it there, or
/// `loop dockerproxy` when it serves them (see [`PolicyFile::docker_proxy`]).
const CONVENTIONAL_DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// The baseline; with `docker_proxy` the conventional socket paths are the proxy's and are
/// not denied (the runner then keeps user mounts off them).
pub fn baseline_file_for(docker_proxy: bool) -> PolicyFile {
    use Verdict::{Approve, Deny};
    let sockets = HOST_DOCKER_SOCKETS
        .iter()
        .chain(CONVENTIONAL_DOCKER_SOCKETS.iter().filter(|_| !docker_proxy));
    PolicyFile {
        default_decision: Verdict::Allow,
        docker_proxy: false,
        path_rules: sockets
            .map(|pattern| PathRule {
                pattern: (*pattern).to_owned(),
                decision: Deny,
                message: Some("the host docker socket is not reachable from the agent".to_owned()),
            })
            .collect(),
        command_rules: Vec::new(),
        file_rules: vec![
            file_rule(
                &["/etc/loop", "/etc/loop/**"],
                MODIFY,
                Deny,
                "the gate policy cannot be changed from inside the container",
            ),
            file_rule(
                &[
                    "/proc/*/mem",
                    "/proc/*/task/*/mem",
                    "/proc/self/mem",
                    "/proc/thread-self/mem",
                ],
                &[],
                Deny,
                "process memory is off limits",
            ),
            file_rule(
                &[
                    "/etc/shadow",
                    "/etc/gshadow",
                    "/etc/shadow-",
                    "/etc/gshadow-",
                    "/etc/sudoers",
                    "/etc/sudoers.d",
                    "/etc/sudoers.d/**",
                ],
                &[],
                Deny,
                "password and sudo configuration are off limits",
            ),
            file_rule(
                &[
                    "~/.ssh",
                    "~/.ssh/**",
                    "~/.aws",
                    "~/.aws/**",
                    "~/.kube",
                    "~/.kube/**",
                    "~/.gnupg",
                    "~/.gnupg/**",
                ],
                &[],
                Deny,
                "credentials in the home directory are off limits",
            ),
            file_rule(
                &[
                    "~/.docker/config.json",
                    "~/.npmrc",
                    "~/.config/gh/hosts.yml",
                    "~/.netrc",
                    "~/.git-credentials",
                ],
                &[],
                Deny,
                "registry and git credentials are off limits",
            ),
            file_rule(
                &[
                    "~/.claude/settings.json",
                    "~/.claude/settings.local.json",
                    "**/.claude/settings.json",
                    "**/.claude/settings.local.json",
                ],
                MODIFY,
                Deny,
                "claude's settings cannot be changed by the agent",
            ),
            file_rule(
                &[
                    "~/.bashrc",
                    "~/.bash_profile",
                    "~/.bash_login",
                    "~/.bash_logout",
                    "~/.profile",
                    "~/.zshrc",
                    "~/.zshenv",
                    "~/.zprofile",
                    "~/.zlogin",
                    "~/.config/fish/**",
                    "/etc/profile",
                    "/etc/profile.d/**",
                    "/etc/bash.bashrc",
                ],
                MODIFY,
                Deny,
                "shell startup files cannot be changed",
            ),
            file_rule(
                &[
                    "/etc/**",
                    "/usr/**",
                    "/bin/**",
                    "/sbin/**",
                    "/lib/**",
                    "/lib64/**",
                ],
                MODIFY,
                Deny,
                "system directories are read-only for the agent",
            ),
            file_rule(
                &["**/.loop/config.json", "**/.loop/config.jsonc"],
                MODIFY,
                Approve,
                "changing the project's loop configuration needs approval",
            ),
            // loop's own directory (tokens, config, database) is never mounted into a
            // container; should a config mount it anyway, its files stay out of reach. Only
            // the top level: a channel's default work directory lives below it.
            file_rule(
                &["~/.loop/*", "~/.loop/run/**", "~/.loop/sessions/**"],
                &[],
                Deny,
                "loop's own directory is off limits",
            ),
        ]
        .into_iter()
        // Last, so a deny above (`/etc/**`, loop's own directory) still wins where both match:
        // the baseline's first matching rule decides.
        .chain(gitguard::GUARDED.iter().map(|files| {
            let operations = if files.deletions {
                MODIFY
            } else {
                MODIFY_BUT_DELETE
            };
            file_rule(files.patterns, operations, Approve, files.control.why())
        }))
        .collect(),
        connect_rules: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/agent";
    const WS: &str = "/work/project";

    fn ctx() -> PolicyContext {
        PolicyContext::new(HOME).with_workspace(WS)
    }

    fn policy(json: &str) -> Policy {
        let file = PolicyFile::from_json(json, "test").unwrap();
        Policy::compile(&file, &ctx()).unwrap()
    }

    fn exec(line: &str) -> Request {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let program = if argv[0].starts_with('/') {
            PathBuf::from(&argv[0])
        } else {
            PathBuf::from(format!("/usr/bin/{}", argv[0]))
        };
        Request::Exec {
            program,
            argv,
            cwd: Some(PathBuf::from(WS)),
        }
    }

    fn file(path: &str, operation: FileOperation) -> Request {
        Request::File {
            path: PathBuf::from(path),
            operation,
        }
    }

    fn unix(path: &str) -> Request {
        Request::Connect {
            target: ConnectTarget::Unix(PathBuf::from(path)),
        }
    }

    fn inet(addr: &str) -> Request {
        Request::Connect {
            target: ConnectTarget::Inet(addr.parse().unwrap()),
        }
    }

    #[track_caller]
    fn check(policy: &Policy, request: Request, expected: Verdict) {
        let decision = policy.decide(&request);
        assert_eq!(
            decision.verdict, expected,
            "{request} -> {decision:?}, expected {expected}"
        );
    }

    use FileOperation::*;
    use Verdict::{Allow, Approve, Deny};

    #[test]
    fn command_rules_table() {
        let p = policy(
            r#"{
            "default_decision": "allow",
            "command_rules": [
                {"commands": ["git"], "args_patterns": ["^push(\\s|$)"], "decision": "approve", "message": "push"},
                {"commands": ["curl", "wget"], "decision": "deny"},
                {"commands": ["python*"], "args_patterns": ["-c", "^-m pip"], "decision": "approve"},
                {"commands": ["npm"], "args_patterns": ["^publish"], "decision": "deny"}
            ]}"#,
        );
        let cases = [
            ("git status", Allow),
            ("git push", Approve),
            ("git push origin main", Approve),
            ("git pushx", Allow),
            ("/usr/local/bin/git push", Approve),
            ("curl https://x", Deny),
            ("wget x", Deny),
            ("python3 -c print(1)", Approve),
            ("python3 -m pip install x", Approve),
            ("python3 script.py", Allow),
            ("npm publish", Deny),
            ("npm install", Allow),
            // Wrappers are looked through.
            ("env git push", Approve),
            ("env FOO=1 BAR=2 git push", Approve),
            ("env -i PATH=/bin git push", Approve),
            ("env -u HOME git push", Approve),
            ("env -C /tmp git push", Approve),
            ("env -- git push", Approve),
            ("sudo git push", Approve),
            ("sudo -u root -E git push", Approve),
            ("sudo --user=root git push", Approve),
            ("nice -n 10 git push", Approve),
            ("nice -n10 git push", Approve),
            ("nice -10 git push", Approve),
            ("nice --adjustment=5 git push", Approve),
            ("timeout 10 git push", Approve),
            ("timeout -s KILL 5m git push", Approve),
            ("timeout --signal=TERM -k 5 10s git push", Approve),
            ("nohup git push", Approve),
            ("setsid -f git push", Approve),
            ("stdbuf -oL git push", Approve),
            ("stdbuf -o L -e 0 git push", Approve),
            ("ionice -c 3 git push", Approve),
            ("taskset 0x1 git push", Approve),
            ("time -f %e git push", Approve),
            ("xargs -n 1 curl", Deny),
            ("sudo env FOO=1 nice -n 5 timeout 3 nohup curl x", Deny),
            ("env -S git\\ push", Allow),
            ("env", Allow),
            ("nohup", Allow),
            ("timeout 10", Allow),
            // The wrapper's own arguments are not the command's.
            ("env GIT=push true", Allow),
        ];
        for (line, expected) in cases {
            check(&p, exec(line), expected);
        }
        // `env -S` carries a command line in one word.
        let req = Request::Exec {
            program: PathBuf::from("/usr/bin/env"),
            argv: vec!["env".into(), "-S".into(), "git push --force".into()],
            cwd: None,
        };
        check(&p, req, Approve);
        let req = Request::Exec {
            program: PathBuf::from("/usr/bin/env"),
            argv: vec!["env".into(), "--split-string=curl -s x".into()],
            cwd: None,
        };
        check(&p, req, Deny);
    }

    #[test]
    fn program_path_beats_argv0() {
        let p = policy(r#"{"command_rules": [{"commands": ["curl"], "decision": "deny"}]}"#);
        let req = Request::Exec {
            program: PathBuf::from("/usr/bin/curl"),
            argv: vec!["innocent".into(), "x".into()],
            cwd: None,
        };
        check(&p, req, Deny);
    }

    #[test]
    fn first_match_wins() {
        let p = policy(
            r#"{"command_rules": [
                {"commands": ["git"], "args_patterns": ["^push --force"], "decision": "deny"},
                {"commands": ["git"], "args_patterns": ["^push"], "decision": "allow"},
                {"commands": ["git"], "decision": "approve"}
            ],
            "file_rules": [
                {"paths": ["/data/public/**"], "operations": ["write"], "decision": "allow"},
                {"paths": ["/data/**"], "decision": "deny"}
            ]}"#,
        );
        check(&p, exec("git push --force"), Deny);
        check(&p, exec("git push"), Allow);
        check(&p, exec("git log"), Approve);
        check(&p, file("/data/public/a", Write), Allow);
        check(&p, file("/data/public/a", Read), Deny);
        check(&p, file("/data/x", Write), Deny);
    }

    #[test]
    fn empty_lists_match_anything() {
        let p = policy(r#"{"command_rules": [{"decision": "approve"}]}"#);
        check(&p, exec("ls -la"), Approve);
        let p = policy(r#"{"file_rules": [{"paths": ["/srv/**"], "decision": "deny"}]}"#);
        for op in [Read, Write, Create, Delete, Chmod, Chown, Link, Stat, List] {
            check(&p, file("/srv/a/b", op), Deny);
        }
        check(&p, file("/srv", Read), Allow);
    }

    #[test]
    fn default_decision_values() {
        check(&policy(r#"{"default_decision": "deny"}"#), exec("ls"), Deny);
        check(
            &policy(r#"{"default_decision": "approve"}"#),
            exec("ls"),
            Approve,
        );
        check(
            &policy(r#"{"default_decision": "ask"}"#),
            exec("ls"),
            Approve,
        );
        check(&policy(r#"{}"#), exec("ls"), Allow);
        check(
            &policy(r#"{"default_decision": "deny"}"#),
            file("/w/x", Write),
            Deny,
        );
    }

    #[test]
    fn file_rules_table() {
        let p = policy(
            r#"{"file_rules": [
                {"paths": ["**/.env", "**/*.pem"], "operations": ["read"], "decision": "deny"},
                {"paths": ["~/notes/*"], "operations": ["write", "create"], "decision": "approve"},
                {"paths": ["build/**"], "operations": ["delete"], "decision": "deny"},
                {"paths": ["/opt/[ab]?/x"], "decision": "deny"}
            ]}"#,
        );
        let cases = [
            (file("/work/project/.env", Read), Deny),
            (file("/work/project/sub/.env", Read), Deny),
            (file("/work/project/.env", Write), Allow),
            (file("/x/key.pem", Read), Deny),
            (file("/home/agent/notes/a.md", Write), Approve),
            (file("/home/agent/notes/a.md", Create), Approve),
            (file("/home/agent/notes/deep/a.md", Write), Allow),
            (file("/home/agent/notes/a.md", Read), Allow),
            (file("/work/project/build/out/a.o", Delete), Deny),
            (file("/elsewhere/build/a.o", Delete), Allow),
            (file("/opt/a1/x", Read), Deny),
            (file("/opt/c1/x", Read), Allow),
            // Lexical normalisation.
            (file("/work/project/sub/../.env", Read), Deny),
            (file("/home/agent/./notes//a.md", Write), Approve),
            (file("/home/agent/x/../notes/a.md", Write), Approve),
        ];
        for (req, expected) in cases {
            check(&p, req, expected);
        }
    }

    #[test]
    fn relative_patterns_without_workspace_match_anywhere() {
        let file_json = PolicyFile::from_json(
            r#"{"file_rules": [{"paths": ["secrets/*"], "decision": "deny"}]}"#,
            "t",
        )
        .unwrap();
        let p = Policy::compile(&file_json, &PolicyContext::new(HOME)).unwrap();
        check(&p, file("/a/b/secrets/x", Read), Deny);
        check(&p, file("/a/b/secret/x", Read), Allow);
    }

    #[test]
    fn path_and_connect_rules_table() {
        let p = policy(
            r#"{"path_rules": [
                {"pattern": "/run/user/*/bus", "decision": "deny"},
                {"pattern": "@/tmp/.X11-unix/*", "decision": "approve"}
            ],
            "connect_rules": [
                {"hosts": ["169.254.169.254"], "decision": "deny", "message": "metadata"},
                {"hosts": ["10.0.0.0/8", "fd00::/8"], "ports": [22, "8000-8100"], "decision": "approve"},
                {"hosts": ["*"], "ports": [443], "decision": "allow"},
                {"ports": ["25"], "decision": "deny"}
            ],
            "default_decision": "deny"}"#,
        );
        let cases = [
            (unix("/run/user/1000/bus"), Deny),
            (unix("/run/user/1000/other"), Deny), // default
            (unix("@/tmp/.X11-unix/X0"), Approve),
            (inet("169.254.169.254:80"), Deny),
            (inet("[::ffff:169.254.169.254]:80"), Deny),
            (inet("10.1.2.3:22"), Approve),
            (inet("10.1.2.3:8050"), Approve),
            (inet("10.1.2.3:8101"), Deny),
            (inet("[fd00::1]:8000"), Approve),
            (inet("1.1.1.1:443"), Allow),
            (inet("[2606:4700::1111]:443"), Allow),
            (inet("1.1.1.1:25"), Deny),
            (inet("1.1.1.1:80"), Deny),
        ];
        for (req, expected) in cases {
            check(&p, req, expected);
        }
    }

    #[test]
    fn baseline_table() {
        let p = Policy::baseline(&ctx());
        let cases = [
            (file("/etc/loop/gate-policy.json", Write), Deny),
            (file("/etc/loop/gate-policy.json", Read), Allow),
            (file("/etc/loop/new", Create), Deny),
            (file("/etc/loop", Delete), Deny),
            (file("/proc/123/mem", Read), Deny),
            (file("/proc/self/mem", Write), Deny),
            (file("/proc/123/task/124/mem", Read), Deny),
            (file("/proc/123/status", Read), Allow),
            (file("/etc/shadow", Read), Deny),
            (file("/etc/sudoers.d/agent", Read), Deny),
            (file("/etc/passwd", Read), Allow),
            (file("/etc/passwd", Write), Deny),
            (file("/etc/hosts", Chmod), Deny),
            (file("/home/agent/.ssh/id_ed25519", Read), Deny),
            (file("/home/agent/.ssh", List), Deny),
            (file("/home/agent/.ssh/config", Create), Deny),
            (file("/home/agent/.aws/credentials", Read), Deny),
            (file("/home/agent/.kube/config", Read), Deny),
            (file("/home/agent/.docker/config.json", Read), Deny),
            (file("/home/agent/.npmrc", Read), Deny),
            (file("/home/agent/.claude/settings.json", Read), Allow),
            (file("/home/agent/.claude/settings.json", Write), Deny),
            (file("/work/project/.claude/settings.json", Write), Deny),
            (file("/home/agent/.bashrc", Write), Deny),
            (file("/home/agent/.bashrc", Read), Allow),
            (file("/home/agent/.profile", Delete), Deny),
            (file("/usr/bin/git", Write), Deny),
            (file("/usr/bin/git", Read), Allow),
            (file("/bin/sh", Chmod), Deny),
            (file("/work/project/.loop/config.json", Write), Approve),
            (file("/work/project/.loop/config.json", Read), Allow),
            (file("/work/project/src/main.rs", Write), Allow),
            (file("/tmp/x", Write), Allow),
            (file("/home/agent/.loop/admin.token", Read), Deny),
            (file("/home/agent/.loop/config.json", Read), Deny),
            (file("/home/agent/.loop/loop.db", Write), Deny),
            (
                file("/home/agent/.loop/run/c1/gate-policy.json", Read),
                Deny,
            ),
            (file("/home/agent/.loop/C1/work/src/main.rs", Write), Allow),
            (file("/home/agent/.ssh/../.ssh/id_rsa", Read), Deny),
            (file("/home/agent/x/../.ssh/id_rsa", Read), Deny),
            (unix("/var/run/docker.sock"), Deny),
            (unix("/run/docker.sock"), Deny),
            (unix("/run//docker.sock"), Deny),
            (unix("/run/loop-docker-host/docker.sock"), Deny),
            (unix("/tmp/my.sock"), Allow),
            (exec("rm -rf /"), Deny),
            (exec("rm -rf /home/agent"), Deny),
            (exec("rm -r /etc"), Deny),
            (exec("rm -R /usr/lib"), Deny),
            (exec("rm --recursive /srv"), Deny),
            (exec("rm -fr ~/x"), Deny),
            (exec("rm -rf /tmp/build"), Allow),
            (exec("rm -rf /tmp"), Deny),
            (exec("rm -rf /work/project/target"), Allow),
            (exec("rm -rf /work/project"), Deny),
            (exec("rm -rf /work/project/../other"), Deny),
            (exec("rm -rf target"), Allow),
            (exec("rm -rf ../../etc"), Deny),
            (exec("rm /etc/x"), Allow), // not recursive: the unlink itself is checked
            (exec("sudo rm -rf /"), Deny),
            (exec("env X=1 rm -rf /"), Deny),
            (exec("rm -- -r"), Allow),
            (exec("ls -r /"), Allow),
        ];
        for (req, expected) in cases {
            check(&p, req, expected);
        }
    }

    #[test]
    fn baseline_cannot_be_widened() {
        let p = policy(
            r#"{"file_rules": [
                {"paths": ["**"], "decision": "allow"},
                {"paths": ["~/.ssh/**"], "decision": "allow"}
            ],
            "path_rules": [{"pattern": "/var/run/docker.sock", "decision": "allow"}],
            "command_rules": [{"commands": ["rm"], "decision": "allow"}]}"#,
        );
        check(&p, file("/home/agent/.ssh/id_rsa", Read), Deny);
        check(&p, file("/etc/loop/gate-policy.json", Write), Deny);
        check(&p, file("/work/project/.loop/config.json", Write), Approve);
        check(&p, unix("/var/run/docker.sock"), Deny);
        check(&p, unix("/run/loop-docker-host/docker.sock"), Deny);
        check(&p, exec("rm -rf /"), Deny);
        let decision = p.decide(&file("/home/agent/.ssh/id_rsa", Read));
        assert_eq!(decision.rule, RuleRef::Baseline(RuleKind::File, 3));
        assert!(decision.message.is_some());
    }

    /// The git guard: changes to a repository's control files are held for a person, at any
    /// depth and by every route (open, rename onto, link, symlink, chmod); what git writes
    /// during normal work, and every read, passes.
    #[test]
    fn git_guard_table() {
        let p = Policy::baseline(&ctx());
        let repo = "/work/project";
        let mut cases = Vec::new();
        for name in [
            ".git/hooks/pre-commit",
            ".git/hooks",
            ".git/config",
            ".git/config.worktree",
            ".git/commondir",
            ".git/worktrees/t1",
            ".git/worktrees/t1/config.worktree",
            ".git/worktrees/t1/gitdir",
            ".git/worktrees/t1/commondir",
            ".git/modules/lib/config",
            ".git/modules/lib/hooks/post-checkout",
            ".git/modules/vendor/lib/gitdir",
            ".git/objects/info/alternates",
            // A worktree's or a submodule's pointer file, and a `.git` directory.
            ".git",
            "lib/.git",
        ] {
            let pointer = gitguard::control_file(Path::new(&format!("{repo}/{name}")))
                .is_some_and(|f| f.control == gitguard::GitControl::Pointer);
            for op in [Write, Create, Chmod, Chown, Link] {
                cases.push((format!("{repo}/{name}"), op, Approve));
            }
            // git itself removes pointers in everyday work (`git stash` tries `rmdir .git`).
            let delete = if pointer { Allow } else { Approve };
            cases.push((format!("{repo}/{name}"), Delete, delete));
            for op in [Read, Stat, List] {
                cases.push((format!("{repo}/{name}"), op, Allow));
            }
        }
        for name in [
            ".git/objects/ab/cdef0123",
            ".git/objects/pack/pack-1.pack",
            ".git/refs/heads/main",
            ".git/refs/heads/main.lock",
            ".git/refs/heads/config",
            ".git/refs/heads/hooks/x",
            ".git/refs/stash",
            ".git/logs/HEAD",
            ".git/logs/refs/heads/main",
            ".git/index",
            ".git/index.lock",
            ".git/HEAD",
            ".git/HEAD.lock",
            ".git/ORIG_HEAD",
            ".git/COMMIT_EDITMSG",
            ".git/packed-refs",
            ".git/FETCH_HEAD",
            ".git/AUTO_MERGE",
            ".git/rebase-merge/done",
            ".git/info/exclude",
            // git writes config through a lock file; the rename onto `config` is what asks.
            ".git/config.lock",
            ".git/worktrees/t1/index",
            ".git/worktrees/t1/HEAD",
            ".git/worktrees/t1/logs/HEAD",
            ".git/modules/lib/objects/ab/cd",
            ".gitignore",
            ".github/hooks/x",
            "src/config",
        ] {
            for op in [Write, Create, Delete, Read] {
                cases.push((format!("{repo}/{name}"), op, Allow));
            }
        }
        // Any depth, any repository.
        cases.push((
            "/tmp/clone/.git/hooks/post-checkout".into(),
            Create,
            Approve,
        ));
        cases.push(("/home/agent/x/.git/config".into(), Write, Approve));
        cases.push((format!("{repo}/a/../.git/./hooks/x"), Write, Approve));
        // A deny above the git guard still wins.
        cases.push(("/etc/x/.git/config".into(), Write, Deny));
        cases.push(("/home/agent/.loop/run/.git".into(), Create, Deny));
        for (path, op, expected) in cases {
            check(&p, file(&path, op), expected);
        }
        let decision = p.decide(&file("/work/project/.git/hooks/pre-commit", Write));
        assert!(
            matches!(decision.rule, RuleRef::Baseline(RuleKind::File, _)),
            "{decision:?}"
        );
        assert_eq!(
            decision.message.as_deref(),
            Some("a git hook runs on the host when someone runs git there")
        );
        // Reads of these files stay in the kernel when nothing else needs them trapped.
        let mut p = Policy::baseline(&ctx());
        let whys: Vec<&str> = gitguard::GUARDED.iter().map(|g| g.control.why()).collect();
        p.baseline
            .file
            .retain(|r| r.message.as_deref().is_some_and(|m| whys.contains(&m)));
        assert_eq!(p.baseline.file.len(), gitguard::GUARDED.len());
        assert!(!p.needs_read_trap());
    }

    #[test]
    fn the_git_guard_cannot_be_widened_but_can_be_tightened() {
        let p = policy(
            r#"{"file_rules": [
                {"paths": ["**/.git/**", "**/.git"], "decision": "allow"}
            ]}"#,
        );
        check(&p, file("/work/project/.git/config", Write), Approve);
        check(&p, file("/work/project/.git", Create), Approve);
        check(&p, file("/work/project/.git/index", Write), Allow);
        let p = policy(r#"{"file_rules": [{"paths": [".git/hooks/**"], "decision": "deny"}]}"#);
        check(&p, file("/work/project/.git/hooks/pre-push", Create), Deny);
        check(&p, file("/work/project/.git/config", Write), Approve);
        let p = policy(
            r#"{"default_decision": "allow", "file_rules": [{"paths": ["**"], "decision": "allow"}]}"#,
        );
        check(
            &p,
            file("/work/project/.git/hooks/pre-push", Create),
            Approve,
        );
    }

    #[test]
    fn with_the_docker_proxy_only_the_conventional_sockets_open_up() {
        let p = policy(
            r#"{"docker_proxy": true,
                "path_rules": [{"pattern": "/run/loop-docker-host/**", "decision": "allow"}]}"#,
        );
        check(&p, unix("/var/run/docker.sock"), Allow);
        check(&p, unix("/run/docker.sock"), Allow);
        check(&p, unix("/run/loop/docker.sock"), Allow);
        check(&p, unix("/run/loop-docker-host/docker.sock"), Deny);
        check(&p, unix("/var/run/loop-docker-host/docker.sock"), Deny);
        check(&p, unix("/run/loop-docker-host"), Deny);
        check(&p, unix("/run/containerd/containerd.sock"), Deny);
        // A user rule still tightens them.
        let p = policy(
            r#"{"docker_proxy": true,
                "path_rules": [{"pattern": "/run/docker.sock", "decision": "deny"}]}"#,
        );
        check(&p, unix("/run/docker.sock"), Deny);
        // And it is written back only when set.
        let text = serde_json::to_string(&PolicyFile::default()).unwrap();
        assert!(!text.contains("docker_proxy"), "{text}");
    }

    #[test]
    fn user_rules_can_tighten_baseline() {
        let p = policy(
            r#"{"file_rules": [{"paths": ["**/.loop/**"], "decision": "deny", "message": "no"}]}"#,
        );
        let decision = p.decide(&file("/work/project/.loop/config.json", Write));
        assert_eq!(decision.verdict, Deny);
        assert_eq!(decision.rule, RuleRef::User(RuleKind::File, 0));
        assert_eq!(decision.message.as_deref(), Some("no"));
        let p = policy(r#"{"default_decision": "deny"}"#);
        check(&p, file("/work/project/.loop/config.json", Write), Deny);
    }

    #[test]
    fn decision_names_rule() {
        let p = policy(
            r#"{"command_rules": [{"commands": ["a"], "decision": "deny"}, {"commands": ["git"], "decision": "approve", "message": "m"}]}"#,
        );
        let d = p.decide(&exec("git log"));
        assert_eq!(d.rule.to_string(), "command_rules[1]");
        assert_eq!(d.message.as_deref(), Some("m"));
        assert_eq!(p.decide(&exec("ls")).rule.to_string(), "default_decision");
        assert_eq!(
            p.decide(&exec("rm -rf /")).rule.to_string(),
            "baseline.recursive_remove"
        );
    }

    #[test]
    fn decide_all_keeps_strictest() {
        let p = policy(
            r#"{"file_rules": [{"paths": ["/a/**"], "operations": ["create"], "decision": "approve"}]}"#,
        );
        let reqs = [
            file("/tmp/x", Delete),
            file("/a/x", Create),
            file("/home/agent/.ssh/x", Create),
        ];
        let (d, r) = p.decide_all(&reqs).unwrap();
        assert_eq!(d.verdict, Deny);
        assert_eq!(r, &reqs[2]);
        let (d, r) = p.decide_all(&reqs[..2]).unwrap();
        assert_eq!(d.verdict, Approve);
        assert_eq!(r, &reqs[1]);
        assert!(p.decide_all(&[]).is_none());
    }

    #[test]
    fn loader_rejects_unknown_fields_and_names_them() {
        let cases = [
            (r#"{"pth_rules": []}"#, "pth_rules"),
            (
                r#"{"file_rules": [{"paths": ["/x"], "decision": "deny", "operation": ["read"]}]}"#,
                "operation",
            ),
            (
                r#"{"file_rules": [{"paths": ["/x"], "decision": "deny", "operations": ["reed"]}]}"#,
                "file_rules[0].operations[0]",
            ),
            (r#"{"default_decision": "maybe"}"#, "default_decision"),
            (r#"{"command_rules": [{"commands": ["x"]}]}"#, "decision"),
            (
                r#"{"connect_rules": [{"hosts": ["*"], "decision": "deny", "port": [1]}]}"#,
                "port",
            ),
            (r#"{} {}"#, "trailing"),
        ];
        for (json, needle) in cases {
            let err = PolicyFile::from_json(json, "policy.json").unwrap_err();
            let text = err.to_string();
            assert!(text.contains(needle), "{json}: {text}");
            assert!(text.contains("policy.json"), "{json}: {text}");
        }
    }

    #[test]
    fn from_value_and_validate() {
        let value = serde_json::json!({"file_rules": [{"paths": ["/a/[b"], "decision": "deny"}]});
        let file = PolicyFile::from_value(value, "config.json").unwrap();
        let err = file.validate().unwrap_err();
        assert!(err.to_string().contains("file_rules[0].paths[0]"), "{err}");
        let value = serde_json::json!({"file_rules": [{"paths": ["/a"], "decision": "nope"}]});
        let err = PolicyFile::from_value(value, "config.json").unwrap_err();
        assert!(err.to_string().contains("file_rules[0].decision"), "{err}");
        assert!(baseline_file().validate().is_ok());
    }

    #[test]
    fn validation_rejects_bad_patterns() {
        let cases = [
            (
                r#"{"file_rules": [{"paths": ["/ok", "/a/[b"], "decision": "deny"}]}"#,
                "file_rules[0].paths[1]",
            ),
            (
                r#"{"command_rules": [{"commands": ["git"], "args_patterns": ["(push"], "decision": "deny"}]}"#,
                "command_rules[0].args_patterns[0]",
            ),
            (
                r#"{"command_rules": [{"commands": ["{a"], "decision": "deny"}]}"#,
                "command_rules[0].commands[0]",
            ),
            (
                r#"{"path_rules": [{"pattern": "/[x", "decision": "deny"}]}"#,
                "path_rules[0].pattern",
            ),
            (
                r#"{"connect_rules": [{"hosts": ["example.com"], "decision": "deny"}]}"#,
                "connect_rules[0].hosts[0]",
            ),
            (
                r#"{"connect_rules": [{"hosts": ["10.0.0.0/33"], "decision": "deny"}]}"#,
                "connect_rules[0].hosts[0]",
            ),
            (
                r#"{"connect_rules": [{"ports": ["90-80"], "decision": "deny"}]}"#,
                "connect_rules[0].ports[0]",
            ),
            (
                r#"{"connect_rules": [{"ports": ["http"], "decision": "deny"}]}"#,
                "connect_rules[0].ports[0]",
            ),
        ];
        for (json, needle) in cases {
            let file = PolicyFile::from_json(json, "t").unwrap();
            let err = Policy::compile(&file, &ctx()).unwrap_err();
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn loads_loop_compat_example() {
        let p = policy(
            r#"{
              "default_decision": "allow",
              "path_rules":    [{ "pattern": "/abs/path/of/unix.sock", "decision": "deny", "message": "why" }],
              "command_rules": [{ "commands": ["git"], "args_patterns": ["^push(\\s|$)"], "decision": "approve", "message": "…" }],
              "file_rules":    [{ "paths": ["**/.ssh/**"], "operations": ["read","write"], "decision": "deny", "message": "…" }]
            }"#,
        );
        check(&p, unix("/abs/path/of/unix.sock"), Deny);
        check(&p, exec("git push"), Approve);
        check(&p, file("/root/.ssh/x", Read), Deny);
    }

    #[test]
    fn load_reads_file_and_reports_missing() {
        let dir = std::env::temp_dir().join(format!("loop-gate-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gate-policy.json");
        std::fs::write(&path, r#"{"default_decision": "deny"}"#).unwrap();
        let p = Policy::load(&path, &ctx()).unwrap();
        assert_eq!(p.default_decision(), Deny);
        let err = PolicyFile::load(&dir.join("missing.json")).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }));
        assert!(err.to_string().contains("missing.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn session_keys() {
        assert_eq!(
            exec("git push origin main").session_key(),
            "execve:/usr/bin/git:push origin"
        );
        assert_eq!(exec("ls").session_key(), "execve:/usr/bin/ls:");
        assert_eq!(unix("/run/x.sock").session_key(), "connect:/run/x.sock");
        assert_eq!(inet("1.2.3.4:443").session_key(), "connect:1.2.3.4:443");
        assert_eq!(file("/a/b", Write).session_key(), "open:/a/b:write");
    }

    #[test]
    fn needs_read_trap() {
        // The baseline denies reading credentials, so reads are always trapped with it.
        assert!(Policy::baseline(&ctx()).needs_read_trap());
        let mut p = Policy::baseline(&ctx());
        p.baseline
            .file
            .retain(|r| r.operations.iter().all(|o| !o.is_read_only()) && !r.operations.is_empty());
        assert!(!p.needs_read_trap());
        p.default_decision = Approve;
        assert!(p.needs_read_trap());
    }

    #[test]
    fn normalize_table() {
        let cases = [
            ("/a/b/../c", "/a/c"),
            ("/a/./b//c/", "/a/b/c"),
            ("/../..", "/"),
            ("/a/..", "/"),
            ("a/../../b", "../b"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                normalize(Path::new(input)),
                PathBuf::from(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn serialises_back_to_snake_case() {
        let file = baseline_file();
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.contains("\"file_rules\""));
        let back = PolicyFile::from_json(&json, "roundtrip").unwrap();
        assert_eq!(back, file);
    }
}
