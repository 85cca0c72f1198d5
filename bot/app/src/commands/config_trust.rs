//! `loop config trust DIR`: show how a project's `.loop/config.json` differs from the version
//! an owner trusted, and record this version as trusted (see `loop_daemon::config::project`). It
//! writes the database directly, so it works whether or not the daemon runs; the daemon reads
//! the trust record on every turn.

use std::path::{Path, PathBuf};

use loop_daemon::config::project::{self, ProjectFile, TrustedVersion, short_hash};
use loop_daemon::config::{Config, ConfigError};
use loop_store::{ProjectTrust, Store, StoreError};

/// Why a project file cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("there is no {0}")]
    NoFile(PathBuf),
    #[error("this version cannot be trusted: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A project file about to be trusted, and what trusting it changes.
#[derive(Debug)]
pub struct TrustReview {
    pub file: ProjectFile,
    /// The trust record's key (the canonical work directory).
    pub key: String,
    pub previous: Option<ProjectTrust>,
    /// Keys that apply only once this version is trusted.
    pub held_back: Vec<String>,
}

/// What `loop config trust` found.
#[derive(Debug)]
pub enum Prepared {
    /// This exact version is trusted already.
    AlreadyTrusted(ProjectFile),
    Review(TrustReview),
}

/// Reads `dir`'s project file once (what is shown is what gets trusted) and checks it loads.
pub async fn prepare(config: &Config, store: &Store, dir: &Path) -> Result<Prepared, TrustError> {
    let file = project::read_project_file(dir)?
        .ok_or_else(|| TrustError::NoFile(project::project_file_path(dir)))?;
    let key = project::trust_key(dir);
    let previous = store.project_trust(&key).await?;
    if previous.as_ref().is_some_and(|p| p.file_hash == file.hash) {
        return Ok(Prepared::AlreadyTrusted(file));
    }
    config.with_project_file(Some(file.clone()), Some(&TrustedVersion::of(&file)))?;
    let previous_version = previous.as_ref().map(|p| TrustedVersion {
        hash: p.file_hash.clone(),
        text: p.content.clone(),
    });
    let held_back = config
        .with_project_file(Some(file.clone()), previous_version.as_ref())?
        .held_back;
    Ok(Prepared::Review(TrustReview {
        file,
        key,
        previous,
        held_back,
    }))
}

/// The review as the terminal shows it: the file, the versions, what trusting it changes, the
/// whole diff (secrets included: the host's user owns them).
pub fn render(review: &TrustReview) -> String {
    let mut text = format!(
        "{}\n  version {} (sha256 {})\n",
        review.file.path.display(),
        review.file.short_hash(),
        review.file.hash
    );
    match &review.previous {
        Some(previous) => text.push_str(&format!(
            "  trusted version {} (by {})\n",
            short_hash(&previous.file_hash),
            previous.trusted_by
        )),
        None => text.push_str("  never trusted before\n"),
    }
    if review.held_back.is_empty() {
        text.push_str("  nothing in it needs trust: it already applies as it is\n");
    } else {
        text.push_str(&format!(
            "  trusting it lets these apply: {}\n",
            review.held_back.join(", ")
        ));
    }
    text.push('\n');
    text.push_str(&project::diff(
        review.previous.as_ref().map(|p| p.content.as_str()),
        &review.file.text,
    ));
    text
}

/// Records the reviewed version as trusted by `by`.
pub async fn record(store: &Store, review: &TrustReview, by: &str) -> Result<(), StoreError> {
    store
        .trust_project_file(&review.key, &review.file.hash, &review.file.text, by)
        .await
}
