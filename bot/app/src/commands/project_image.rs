//! `loop image build --dir PROJECT`: build a project's own environment ahead of time (its
//! Dockerfile or devcontainer.json, with loop's layer on top), as a turn would, with a progress
//! bar. The host user running it is the owner deciding to build this version, so it is
//! recorded as trusted, after the description is shown and confirmed (see
//! `loop_daemon::environment` and the README's "A project's own environment").

use std::path::{Path, PathBuf};

use loop_daemon::config::Config;
use loop_daemon::config::project::diff_for_chat;
use loop_daemon::environment::{Description, EnvironmentSource, discover, environment_trust_key};
use loop_runner::project_image::{BuildError, ensure};
use loop_store::{Store, StoreError};

use super::image::BuildProgress;

/// Why a project's environment was not built.
#[derive(Debug, thiserror::Error)]
pub enum ProjectImageError {
    #[error("{0}")]
    Environment(#[from] loop_daemon::environment::EnvironmentError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Docker(#[from] loop_runner::docker::DockerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `loop image build --dir` found to build.
pub enum Found {
    /// No description: the project's agents run in `container_image`.
    Nothing(String),
    /// A description, whether its version is trusted already, and what changed since the
    /// trusted one.
    Description {
        source: Box<EnvironmentSource>,
        description: Description,
        trusted: bool,
        diff: String,
    },
}

/// Reads the project's description and its trust.
pub async fn find(config: &Config, store: &Store, dir: &Path) -> Result<Found, ProjectImageError> {
    let source = discover(dir, &config.container_image)?;
    let Some(description) = source.description(dir)? else {
        return Ok(Found::Nothing(config.container_image.clone()));
    };
    let previous = store.project_trust(&environment_trust_key(dir)).await?;
    let trusted = previous
        .as_ref()
        .is_some_and(|p| p.file_hash == description.hash);
    let diff = diff_for_chat(
        previous.as_ref().map(|p| p.content.as_str()),
        &description.text,
        usize::MAX,
    );
    Ok(Found::Description {
        source: Box::new(source),
        description,
        trusted,
        diff,
    })
}

/// Records `description` as trusted by `by`.
pub async fn trust(
    store: &Store,
    dir: &Path,
    description: &Description,
    by: &str,
) -> Result<(), StoreError> {
    store
        .trust_project_file(
            &environment_trust_key(dir),
            &description.hash,
            &description.text,
            by,
        )
        .await
}

/// Builds what the project's image is missing, showing the build; returns its tag and
/// whether anything was built.
pub async fn build(
    config: &Config,
    dir: &Path,
    source: &EnvironmentSource,
) -> Result<(String, bool), ProjectImageError> {
    let docker = loop_runner::docker::connect().await?;
    let label: PathBuf = dir.to_path_buf();
    let Some(spec) = source.image_spec(&label, &config.container_image) else {
        return Ok((config.container_image.clone(), false));
    };
    let progress = BuildProgress::start();
    let built = ensure(&docker, &spec, |line| progress.line(line)).await;
    progress.finish();
    let built = built?;
    Ok((built.tag, built.built))
}
