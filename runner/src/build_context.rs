//! The build context of a project's image (issue #18): the files of a directory as `docker
//! build` would send them, `.dockerignore` applied, packed into the tar the Engine API takes,
//! with a content hash for the image cache.
//!
//! The directory was written by the agent and by strangers, so nothing in it may pull a host
//! file into the image: symbolic links are packed as links, never followed, and only regular
//! files and directories are packed.
//!
//! `.dockerignore` follows Docker's documented rules (docs.docker.com/build/concepts/context):
//! patterns are relative to the context's root (`/foo` and `foo` are the same), `*` and `?`
//! stay inside one path component, `**` spans any number of them, a pattern that matches a
//! directory excludes everything in it, `!` re-includes, and the last matching line wins.
//! The Dockerfile and `.dockerignore` are sent whatever the patterns say (Docker does the same:
//! the builder needs them).

use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};
use sha2::{Digest, Sha256};

/// Why a context could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: invalid pattern `{pattern}`: {message}")]
    Pattern {
        file: PathBuf,
        line: usize,
        pattern: String,
        message: String,
    },
}

/// One line of a `.dockerignore`.
#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    reinclude: bool,
}

/// A parsed `.dockerignore`.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

impl DockerIgnore {
    /// Parses `text` (the file at `file`, for errors).
    pub fn parse(file: &Path, text: &str) -> Result<DockerIgnore, ContextError> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (reinclude, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob: Glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|err| ContextError::Pattern {
                    file: file.to_path_buf(),
                    line: index + 1,
                    pattern: pattern.clone(),
                    message: err.kind().to_string(),
                })?;
            rules.push(Rule {
                matcher: glob.compile_matcher(),
                reinclude,
            });
        }
        Ok(DockerIgnore { rules })
    }

    /// Whether `relative` (a `/`-separated path inside the context) is left out: the last rule
    /// that matches it or one of its parent directories decides.
    pub fn excludes(&self, relative: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            if matches_self_or_parent(&rule.matcher, relative) {
                excluded = !rule.reinclude;
            }
        }
        excluded
    }
}

fn matches_self_or_parent(matcher: &GlobMatcher, relative: &str) -> bool {
    let mut path = relative;
    loop {
        if matcher.is_match(path) {
            return true;
        }
        match path.rfind('/') {
            Some(at) => path = &path[..at],
            None => return false,
        }
    }
}

/// A pattern as Docker cleans it: relative to the root, `.` and `..` resolved lexically
/// (never above the root), no repeated or trailing `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// The packed context and its content hash.
#[derive(Debug)]
pub struct BuildContext {
    /// The tar the Engine API's build endpoint takes.
    pub tar: Vec<u8>,
    /// SHA-256 over every packed entry's path, kind, mode and content (or link target), in
    /// path order: equal hashes, equal contexts.
    pub hash: String,
    /// How many files were packed.
    pub files: usize,
}

/// Packs `dir` as a build context, `.dockerignore` applied. `dockerfile` (relative to `dir`)
/// is sent whatever `.dockerignore` says, as Docker does: the builder needs it.
pub fn pack(dir: &Path, dockerfile: &str) -> Result<BuildContext, ContextError> {
    let entries = entries(dir, dockerfile)?;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut hasher = Sha256::new();
    let mut files = 0;
    for relative in &entries {
        let path = dir.join(relative);
        if hash_entry(&mut hasher, dir, relative)? {
            files += 1;
        }
        builder
            .append_path_with_name(&path, relative)
            .map_err(io_error(&path))?;
    }
    let tar = builder.into_inner().map_err(io_error(dir))?;
    Ok(BuildContext {
        tar,
        hash: hex::encode(hasher.finalize()),
        files,
    })
}

/// The files of a context that a Dockerfile reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referenced {
    /// Everything: a source is the whole context, or loop cannot tell (a variable in it).
    All,
    /// The sources of its `COPY` and `ADD` instructions, as written (patterns allowed).
    Sources(Vec<String>),
}

/// SHA-256 over the context entries `referenced` names (a source names itself and what is
/// beneath it), hashed as [`pack`] hashes: what decides whether an image built from this
/// context is still current, without reading the files no instruction copies.
pub fn digest(
    dir: &Path,
    dockerfile: &str,
    referenced: &Referenced,
) -> Result<String, ContextError> {
    let matchers = match referenced {
        Referenced::Sources(sources) if !sources.iter().any(|s| clean(s).is_empty()) => Some(
            sources
                .iter()
                .map(|source| {
                    GlobBuilder::new(&clean(source))
                        .literal_separator(true)
                        .build()
                        .map(|glob| glob.compile_matcher())
                        .map_err(|err| ContextError::Pattern {
                            file: PathBuf::from(dockerfile),
                            line: 0,
                            pattern: source.clone(),
                            message: err.kind().to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        // `COPY . .` or no way to tell: the whole context.
        _ => None,
    };
    let mut hasher = Sha256::new();
    for relative in entries(dir, dockerfile)? {
        let wanted = match &matchers {
            None => true,
            Some(matchers) => matchers
                .iter()
                .any(|matcher| matches_self_or_parent(matcher, &relative)),
        };
        if wanted {
            hash_entry(&mut hasher, dir, &relative)?;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError {
    let path = path.to_path_buf();
    move |source| ContextError::Io { path, source }
}

/// The context's entries, relative and sorted, `.dockerignore` applied.
fn entries(dir: &Path, dockerfile: &str) -> Result<Vec<String>, ContextError> {
    let ignore_file = dir.join(".dockerignore");
    let ignore = match std::fs::symlink_metadata(&ignore_file) {
        Ok(meta) if meta.is_file() => {
            let text = std::fs::read_to_string(&ignore_file).map_err(io_error(&ignore_file))?;
            DockerIgnore::parse(&ignore_file, &text)?
        }
        _ => DockerIgnore::default(),
    };
    let mut entries = Vec::new();
    collect(dir, dir, &ignore, &clean(dockerfile), &mut entries)?;
    entries.sort();
    Ok(entries)
}

/// Folds one entry (path, kind, mode, content or link target) into `hasher`; true for a file.
fn hash_entry(hasher: &mut Sha256, dir: &Path, relative: &str) -> Result<bool, ContextError> {
    let path = dir.join(relative);
    let meta = std::fs::symlink_metadata(&path).map_err(io_error(&path))?;
    hasher.update(relative.as_bytes());
    hasher.update([0]);
    let file = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&path).map_err(io_error(&path))?;
        hasher.update(b"link\0");
        hasher.update(target.as_os_str().as_encoded_bytes());
        false
    } else if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let content = std::fs::read(&path).map_err(io_error(&path))?;
        hasher.update(format!("file {:o}\0", meta.permissions().mode() & 0o7777));
        hasher.update(&content);
        true
    } else {
        hasher.update(b"dir\0");
        false
    };
    hasher.update([0]);
    Ok(file)
}

/// Every entry under `current` (relative to `root`) that the context keeps; excluded
/// directories are not walked. Sockets, FIFOs and devices are never packed.
fn collect(
    root: &Path,
    current: &Path,
    ignore: &DockerIgnore,
    dockerfile: &str,
    out: &mut Vec<String>,
) -> Result<(), ContextError> {
    let read = std::fs::read_dir(current).map_err(|source| ContextError::Io {
        path: current.to_path_buf(),
        source,
    })?;
    for entry in read {
        let entry = entry.map_err(|source| ContextError::Io {
            path: current.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let relative = relative.to_string_lossy().replace('\\', "/");
        let kind = entry.file_type().map_err(|source| ContextError::Io {
            path: path.clone(),
            source,
        })?;
        let always = relative == dockerfile || relative == ".dockerignore";
        // A re-included file under an excluded directory still needs its directory walked.
        let excluded = ignore.excludes(&relative) && !always;
        if kind.is_dir() {
            if !excluded {
                out.push(relative.clone());
            }
            let holds_dockerfile = dockerfile.starts_with(&format!("{relative}/"));
            if !excluded || holds_dockerfile || ignore.rules.iter().any(|r| r.reinclude) {
                collect(root, &path, ignore, dockerfile, out)?;
            }
        } else if (kind.is_file() || kind.is_symlink()) && !excluded {
            out.push(relative);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(Path::new(".dockerignore"), text).expect("valid")
    }

    /// The examples of Docker's documentation for `.dockerignore`.
    #[test]
    fn dockerignore_follows_dockers_documented_rules() {
        let rules = ignore("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert!(rules.excludes("somedir/temporary.txt"));
        assert!(rules.excludes("somedir/temp"));
        assert!(rules.excludes("somedir/subdir/temporary.txt"));
        assert!(rules.excludes("tempa"));
        assert!(
            !rules.excludes("temporary.txt"),
            "`*/temp*` needs a directory"
        );
        assert!(!rules.excludes("a/b/c/temp"));

        let rules = ignore("**/*.go\n");
        assert!(rules.excludes("main.go") && rules.excludes("a/b/main.go"));

        // The last matching line wins.
        let rules = ignore("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(rules.excludes("CHANGES.md"));
        assert!(!rules.excludes("README.md"));
        assert!(rules.excludes("README-secret.md"));
        let rules = ignore("*.md\nREADME-secret.md\n!README*.md\n");
        assert!(!rules.excludes("README-secret.md"));

        // A directory's pattern excludes what is in it; `/x` and `x` are the same; `..` and
        // `.` are cleaned away.
        let rules = ignore("/node_modules\n./build/../target\n");
        assert!(rules.excludes("node_modules/left-pad/index.js"));
        assert!(rules.excludes("target/debug/app"));
        assert!(!rules.excludes("src/node_modules.rs"));

        let bad =
            DockerIgnore::parse(Path::new("/p/.dockerignore"), "ok\n[z-a\n").expect_err("bad");
        assert!(bad.to_string().starts_with("/p/.dockerignore:2:"), "{bad}");
    }

    #[test]
    fn a_context_is_packed_without_following_links_and_hashed_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM debian:bookworm-slim\n").expect("write");
        std::fs::write(root.join(".dockerignore"), "secrets\n*.log\nDockerfile\n").expect("write");
        std::fs::write(root.join("requirements.txt"), "pytest\n").expect("write");
        std::fs::write(root.join("debug.log"), "noise\n").expect("write");
        std::fs::create_dir(root.join("secrets")).expect("mkdir");
        std::fs::write(root.join("secrets/key"), "hunter2\n").expect("write");
        std::os::unix::fs::symlink("/etc/shadow", root.join("shadow")).expect("link");

        let packed = pack(root, "Dockerfile").expect("pack");
        let mut archive = tar::Archive::new(packed.tar.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let name = entry.path().expect("path").display().to_string();
            if name == "shadow" {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(
                    entry.link_name().expect("link").as_deref(),
                    Some(Path::new("/etc/shadow"))
                );
            }
            names.push(name);
        }
        names.sort();
        assert_eq!(
            names,
            [".dockerignore", "Dockerfile", "requirements.txt", "shadow"]
        );
        assert_eq!(packed.files, 3);

        // The hash moves with content only.
        assert_eq!(pack(root, "Dockerfile").expect("again").hash, packed.hash);
        std::fs::write(root.join("debug.log"), "other noise\n").expect("write");
        assert_eq!(
            pack(root, "Dockerfile").expect("ignored change").hash,
            packed.hash
        );
        std::fs::write(root.join("requirements.txt"), "pytest==8\n").expect("write");
        assert_ne!(pack(root, "Dockerfile").expect("changed").hash, packed.hash);
    }

    /// The image's name moves with the files a Dockerfile copies, not with the agent's other
    /// edits.
    #[test]
    fn a_digest_covers_only_what_the_dockerfile_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(root.join("requirements.txt"), "pytest\n").expect("write");
        std::fs::write(root.join("src/app.py"), "print(1)\n").expect("write");
        std::fs::write(root.join("notes.md"), "todo\n").expect("write");
        let copied = Referenced::Sources(vec!["requirements.txt".into(), "./src/".into()]);
        let digest_of =
            |referenced: &Referenced| digest(root, "Dockerfile", referenced).expect("digest");
        let (before, all_before) = (digest_of(&copied), digest_of(&Referenced::All));
        std::fs::write(root.join("notes.md"), "done\n").expect("write");
        assert_eq!(
            digest_of(&copied),
            before,
            "an edit the Dockerfile does not copy"
        );
        assert_ne!(digest_of(&Referenced::All), all_before);
        std::fs::write(root.join("src/app.py"), "print(2)\n").expect("write");
        assert_ne!(
            digest_of(&copied),
            before,
            "a file under a copied directory"
        );
        let everything = Referenced::Sources(vec![".".into()]);
        assert_eq!(digest_of(&everything), digest_of(&Referenced::All));
    }
}
