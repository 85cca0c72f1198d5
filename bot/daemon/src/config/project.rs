//! A project's `.loop/config.json` and what it may change before an owner trusts it.
//!
//! The file lives in a repository the agent itself can edit, so its keys fall in two kinds.
//! Safe keys (the model, task templates, MCP servers, memory and display settings, gate
//! *tightenings*) apply as written. Keys that widen what a container sees or runs
//! ([`WIDENING_KEYS`], `envs`) apply only from the exact version an owner trusted: its SHA-256
//! is recorded with its text, per work directory (`loop_store`, `loop config trust`,
//! `/loop trust`). When the file changed since, the trusted version's values of those keys
//! apply (none if it was never trusted) and the channel is told which keys were held back. With
//! `gates.trust_project_config`, gate loosenings apply as far as the trusted version has them. Limits ([`LIMIT_KEYS`]) may always go down, and
//! go up only when trusted. Variables loop owns in the container
//! ([`loop_runner::spec::is_reserved_env`]) never come from a project file, trusted or not.
//!
//! [`compose`] is the pure core: JSON in, the layer to apply and the held-back keys out.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::ConfigError;

/// The project file, relative to the work directory.
pub const PROJECT_DIR: &str = ".loop";
pub const PROJECT_FILE_NAME: &str = "config.json";
/// A project file larger than this is refused: it is a settings file, and its text is kept in
/// the database and shown in chat when trusted.
pub const MAX_PROJECT_FILE_BYTES: u64 = 256 * 1024;

/// Keys that change what a container sees or runs: from a project file only when trusted.
pub const WIDENING_KEYS: &[&str] = &[
    "mounts",
    "copy_files",
    "extra_dirs",
    "container_image",
    "container_runtime",
    "project_images",
];
/// Limits: a project file may lower them freely, raise them only when trusted.
pub const LIMIT_KEYS: &[&str] = &[
    "container_memory_mb",
    "container_cpus",
    "container_timeout_sec",
    "channel_budget_usd",
];
/// Rule lists of the gates whose `allow` rules loosen them.
const GATE_RULE_LISTS: &[(&str, &str)] = &[
    ("agentgate", "path_rules"),
    ("agentgate", "command_rules"),
    ("agentgate", "file_rules"),
    ("agentgate", "connect_rules"),
    ("docker_proxy", "http_rules"),
    ("docker_proxy", "body_rules"),
];
/// How many hex digits of a hash people see and type (`/loop trust 1a2b3c4d5e6f`).
pub const SHORT_HASH_LEN: usize = 12;

/// The bytes of a project file as they were read, and their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    pub path: PathBuf,
    pub text: String,
    /// SHA-256 of `text`, lower-case hex.
    pub hash: String,
}

impl ProjectFile {
    pub fn new(path: PathBuf, text: String) -> ProjectFile {
        let hash = hash_text(&text);
        ProjectFile { path, text, hash }
    }

    /// The first [`SHORT_HASH_LEN`] hex digits of the hash.
    pub fn short_hash(&self) -> &str {
        short_hash(&self.hash)
    }
}

/// The version of a project file an owner trusted: its hash and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedVersion {
    pub hash: String,
    pub text: String,
}

/// SHA-256 of a file's text, lower-case hex.
pub fn hash_text(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The short form of a hash.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..SHORT_HASH_LEN).unwrap_or(hash)
}

/// The key of a work directory's trust record: its canonical path (as given when it cannot be
/// resolved), so `~/app` and `/home/ann/app/.` share one.
pub fn trust_key(work_dir: &Path) -> String {
    work_dir
        .canonicalize()
        .unwrap_or_else(|_| work_dir.to_path_buf())
        .display()
        .to_string()
}

impl TrustedVersion {
    /// The version `file` is, as a trust would record it.
    pub fn of(file: &ProjectFile) -> TrustedVersion {
        TrustedVersion {
            hash: file.hash.clone(),
            text: file.text.clone(),
        }
    }
}

/// `{work_dir}/.loop/config.json`.
pub fn project_file_path(work_dir: &Path) -> PathBuf {
    work_dir.join(PROJECT_DIR).join(PROJECT_FILE_NAME)
}

/// Reads a work directory's project file; `None` when there is none. The agent can replace
/// the file or its directory with a symbolic link (to `~/.loop/config.json`, say) or a FIFO, so
/// it is read the way every project file is ([`crate::project_files`]): beneath the project,
/// through no link, a regular file of at most [`MAX_PROJECT_FILE_BYTES`].
pub fn read_project_file(work_dir: &Path) -> Result<Option<ProjectFile>, ConfigError> {
    use crate::project_files::{ProjectFileError, read_in_project};
    let path = project_file_path(work_dir);
    let relative = Path::new(PROJECT_DIR).join(PROJECT_FILE_NAME);
    let refused = |reason: String| ConfigError::Refused {
        file: path.clone(),
        reason,
    };
    match read_in_project(work_dir, &relative, MAX_PROJECT_FILE_BYTES) {
        Ok(text) => Ok(Some(ProjectFile::new(path, text))),
        Err(ProjectFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(ProjectFileError::Escapes { .. }) => Err(refused(format!(
            "it (or {PROJECT_DIR}) is a symbolic link; loop reads a project's config only from a regular file inside the project"
        ))),
        Err(ProjectFileError::NotAFile { .. }) => {
            Err(refused("it is not a regular file".to_owned()))
        }
        Err(ProjectFileError::TooLarge { max, .. }) => Err(refused(format!(
            "it is larger than the {max} bytes a project config may have"
        ))),
        Err(ProjectFileError::NotText { .. }) => Err(refused("it is not UTF-8 text".to_owned())),
        Err(ProjectFileError::Io { source, .. }) => Err(ConfigError::Read { file: path, source }),
    }
}

/// Which version of the file is trusted.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The file as it is now.
    Current,
    /// An earlier version (its parsed top-level object).
    Earlier(&'a Map<String, Value>),
    /// None.
    Never,
}

/// The global config's values of the keys a project needs trust for (as JSON, the way a file
/// spells them), and whether the global config lets projects loosen gates at all.
#[derive(Debug, Clone, Default)]
pub struct InForce {
    /// The global values of [`LIMIT_KEYS`] (absent: no limit, e.g. no budget).
    pub limits: Map<String, Value>,
    /// `gates.trust_project_config`.
    pub gate_loosening: bool,
}

/// What a project file contributes, after trust.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    /// The layer to apply (a config file's top-level object).
    pub layer: Map<String, Value>,
    /// What the file asks for that did not apply because this version is not trusted, e.g.
    /// `mounts`, `envs.FOO`, `container_memory_mb`.
    pub held_back: Vec<String>,
    /// `envs` names refused whatever the trust: loop's own variables.
    pub refused_envs: Vec<String>,
}

/// The layer a project file contributes. Safe keys come from `current`. For the widening
/// keys: `current`'s when this version is trusted, else the trusted version's (none if never
/// trusted), and each key where the two differ is held back. Limits apply when they do not
/// exceed the trusted version's (or the global value). Reserved `envs` names are dropped.
pub fn compose(current: &Map<String, Value>, trust: Trust<'_>, in_force: &InForce) -> Composition {
    let mut layer = current.clone();
    let mut held_back = Vec::new();
    let refused_envs = drop_reserved_envs(&mut layer);
    let trusted = match trust {
        Trust::Current => {
            return Composition {
                layer,
                held_back,
                refused_envs,
            };
        }
        Trust::Earlier(trusted) => {
            let mut trusted = trusted.clone();
            drop_reserved_envs(&mut trusted);
            trusted
        }
        Trust::Never => Map::new(),
    };

    for key in WIDENING_KEYS {
        if layer.get(*key) != trusted.get(*key) {
            held_back.push((*key).to_owned());
            set_or_remove(&mut layer, key, trusted.get(*key).cloned());
        }
    }

    let no_envs = Map::new();
    let envs_of = |map: &Map<String, Value>| -> Map<String, Value> {
        map.get("envs")
            .and_then(Value::as_object)
            .unwrap_or(&no_envs)
            .clone()
    };
    let (current_envs, trusted_envs) = (envs_of(&layer), envs_of(&trusted));
    let mut changed: Vec<String> = current_envs
        .keys()
        .chain(trusted_envs.keys())
        .filter(|name| current_envs.get(*name) != trusted_envs.get(*name))
        .map(|name| format!("envs.{name}"))
        .collect();
    changed.sort();
    changed.dedup();
    if !changed.is_empty() || layer.get("envs").is_some_and(|e| !e.is_object()) {
        if changed.is_empty() {
            changed.push("envs".to_owned());
        }
        held_back.extend(changed);
        set_or_remove(&mut layer, "envs", trusted.get("envs").cloned());
    }

    for key in LIMIT_KEYS {
        let allowed = trusted
            .get(*key)
            .filter(|v| v.is_number())
            .or(in_force.limits.get(*key));
        let Some(asked) = layer.get(*key) else {
            continue;
        };
        if !asked.is_number() || limit_not_above(key, asked, allowed) {
            // Not a number: left for the type check to report.
            continue;
        }
        held_back.push((*key).to_owned());
        set_or_remove(&mut layer, key, trusted.get(*key).cloned());
    }

    if in_force.gate_loosening
        && let Some(gates) = layer.get_mut("gates")
    {
        held_back.extend(keep_trusted_loosenings(gates, trusted.get("gates")));
    }

    Composition {
        layer,
        held_back,
        refused_envs,
    }
}

fn set_or_remove(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(value) => map.insert(key.to_owned(), value),
        None => map.remove(key),
    };
}

fn drop_reserved_envs(layer: &mut Map<String, Value>) -> Vec<String> {
    let Some(Value::Object(envs)) = layer.get_mut("envs") else {
        return Vec::new();
    };
    let refused: Vec<String> = envs
        .keys()
        .filter(|name| loop_runner::spec::is_reserved_env(name))
        .cloned()
        .collect();
    for name in &refused {
        envs.remove(name);
    }
    refused
}

/// Whether a limit asked for stays within `allowed` (absent: no limit). A memory cap of 0
/// means none at all, so it is the highest.
fn limit_not_above(key: &str, asked: &Value, allowed: Option<&Value>) -> bool {
    let Some(allowed) = allowed.and_then(Value::as_f64) else {
        return true;
    };
    let Some(asked) = asked.as_f64() else {
        return true;
    };
    let unlimited = |v: f64| key == "container_memory_mb" && v == 0.0;
    match (unlimited(asked), unlimited(allowed)) {
        (_, true) => true,
        (true, false) => false,
        (false, false) => asked <= allowed,
    }
}

fn is_allow(rule: &Value) -> bool {
    rule.get("decision").and_then(Value::as_str) == Some("allow")
}

/// Drops the loosenings of a `gates` section (switching the agent gate off, the docker proxy
/// on, `allow` rules) that the trusted version does not have; returns what was dropped. Gate
/// rules are prepended to the global ones rather than replacing them, so what stays is what
/// both versions loosen, in the file's order.
fn keep_trusted_loosenings(gates: &mut Value, trusted: Option<&Value>) -> Vec<String> {
    let mut dropped = Vec::new();
    let trusted_at = |section: &str, key: &str| {
        trusted
            .and_then(|gates| gates.get(section))
            .and_then(|section| section.get(key))
    };
    for (section, loosened) in [("agentgate", false), ("docker_proxy", true)] {
        let loosened = Value::Bool(loosened);
        if let Some(Value::Object(object)) = gates.get_mut(section)
            && object.get("enabled") == Some(&loosened)
            && trusted_at(section, "enabled") != Some(&loosened)
        {
            object.remove("enabled");
            dropped.push(format!("gates.{section}.enabled"));
        }
    }
    for (section, list) in GATE_RULE_LISTS {
        let trusted_rules: Vec<&Value> = trusted_at(section, list)
            .and_then(Value::as_array)
            .map(|rules| rules.iter().filter(|r| is_allow(r)).collect())
            .unwrap_or_default();
        if let Some(Value::Array(rules)) = gates
            .get_mut(*section)
            .and_then(|object| object.get_mut(*list))
        {
            let before = rules.len();
            rules.retain(|rule| !is_allow(rule) || trusted_rules.contains(&rule));
            if rules.len() != before {
                dropped.push(format!("gates.{section}.{list} (allow rules)"));
            }
        }
    }
    dropped
}

/// Keys whose values are secrets: their lines are redacted in diffs shown in chat.
const SECRET_KEYS: &[&str] = &[
    "token",
    "slack_bot_token",
    "slack_app_token",
    "discord_token",
    "claude_code_oauth_token",
    "anthropic_api_key",
    "database_url",
    "signing_secret",
];

/// A unified diff from the trusted text (empty if none) to the current one.
pub fn diff(trusted: Option<&str>, current: &str) -> String {
    similar::TextDiff::from_lines(trusted.unwrap_or(""), current)
        .unified_diff()
        .context_radius(3)
        .header("trusted", "current")
        .to_string()
}

/// The diff as shown in chat: secret values redacted, at most `max_lines` lines.
pub fn diff_for_chat(trusted: Option<&str>, current: &str, max_lines: usize) -> String {
    let full = diff(trusted, current);
    let lines: Vec<String> = full.lines().map(redact_secret_line).collect();
    if lines.len() <= max_lines {
        return lines.join("\n");
    }
    let mut shown = lines[..max_lines].join("\n");
    shown.push_str(&format!(
        "\n… {} more lines (`loop config trust` on the host shows them all)",
        lines.len() - max_lines
    ));
    shown
}

fn redact_secret_line(line: &str) -> String {
    for key in SECRET_KEYS {
        let quoted = format!("\"{key}\"");
        if let Some(at) = line.find(&quoted) {
            let after = &line[at + quoted.len()..];
            if let Some(colon) = after.find(':') {
                let keep = at + quoted.len() + colon + 1;
                return format!("{} \"{}\"", &line[..keep], super::secret::REDACTED);
            }
        }
    }
    line.to_owned()
}

#[cfg(test)]
mod tests;
