//! Building a project's own image from its Dockerfile (issue #18, the base under loop's layer).
//!
//! The project's files are strangers' input, so the build's options are loop's alone: the
//! context is [`crate::build_context::pack`]'s (no symlink followed, `.dockerignore` applied),
//! the network is the Engine's default bridge (never the host's), no secrets, no extra
//! options; the Dockerfile's path and the build arguments come from the project's description,
//! checked by the daemon to stay inside the project.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;

use crate::build_context::{ContextError, pack};

/// Label on every image loop builds for a project, with the project directory as its value.
pub const PROJECT_LABEL: &str = "dev.loop.project";
/// Lines of the build's output kept for an error.
const TAIL_LINES: usize = 30;

/// Why a project's image was not built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("the Dockerfile {0} is not inside the build context")]
    DockerfileOutside(String),
    #[error("building the project's image failed: {message}\n{tail}")]
    Failed { message: String, tail: String },
    #[error("the Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
}

/// What to build: a Dockerfile in a context directory, with its arguments.
#[derive(Debug, Clone)]
pub struct BaseBuild<'a> {
    pub project: &'a Path,
    pub context: &'a Path,
    pub dockerfile: &'a Path,
    pub args: &'a std::collections::BTreeMap<String, String>,
    pub target: Option<&'a str>,
}

/// A built image: its tag (named by the context's content hash, so an unchanged project is
/// not built again) and whether this call built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub tag: String,
    pub built: bool,
}

/// Builds `spec` as `loop-base:<hash>` unless that image exists already. `on_line` sees the
/// build's output as it comes (a thread's status message shows it).
pub async fn build_base(
    docker: &Docker,
    spec: &BaseBuild<'_>,
    mut on_line: impl FnMut(&str),
) -> Result<BuiltImage, BuildError> {
    let dockerfile = spec
        .dockerfile
        .strip_prefix(spec.context)
        .map_err(|_| BuildError::DockerfileOutside(spec.dockerfile.display().to_string()))?
        .to_string_lossy()
        .into_owned();
    let context = pack(spec.context)?;
    let key = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(context.hash.as_bytes());
        hasher.update(dockerfile.as_bytes());
        for (name, value) in spec.args {
            hasher.update(format!("\0{name}={value}"));
        }
        hasher.update(spec.target.unwrap_or_default());
        hex::encode(hasher.finalize())
    };
    let tag = format!("loop-base:{}", &key[..16]);
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(BuiltImage { tag, built: false });
    }
    let args: HashMap<String, String> = spec.args.clone().into_iter().collect();
    let labels: HashMap<String, String> =
        [(PROJECT_LABEL.to_owned(), spec.project.display().to_string())].into();
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(&dockerfile)
        .t(&tag)
        .buildargs(&args)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .networkmode("default");
    if let Some(target) = spec.target {
        options = options.target(target);
    }
    let mut stream = docker.build_image(
        options.build(),
        None,
        Some(bollard::body_full(context.tar.into())),
    );
    let mut tail: std::collections::VecDeque<String> = Default::default();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(BuildError::Failed {
                    message: error,
                    tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
                });
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
        {
            on_line(line);
            tail.push_back(line.to_owned());
            if tail.len() > TAIL_LINES {
                tail.pop_front();
            }
        }
        if let Some(detail) = info.error_detail {
            return Err(BuildError::Failed {
                message: detail.message.unwrap_or_default(),
                tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
            });
        }
    }
    Ok(BuiltImage { tag, built: true })
}
