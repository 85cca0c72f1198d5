//! A project's own image (issue #18): its base (the project's Dockerfile built, or a
//! devcontainer's `image`) with loop's layer on top (`image/project.Dockerfile`: the Claude CLI,
//! the loop binary, the entrypoint, the extra CA certificates, all copied from loop's agent
//! image).
//!
//! The project's files are strangers' input, so the build's options are loop's alone: the
//! context is [`crate::build_context::pack`]'s (no symlink followed, `.dockerignore` applied),
//! the network is the Engine's default bridge (never the host's), no secrets, no extra
//! options; the Dockerfile's path and the build arguments come from the project's description,
//! checked by the daemon to stay inside the project.
//!
//! Images are named by what goes into them, so a name that exists is current: `loop-base:<key>`
//! hashes the Dockerfile, its arguments and the context files its `COPY`/`ADD` read;
//! `loop-project:<key>` hashes that (or the devcontainer image's id), the agent image's id and
//! loop's layer. [`plan`] computes the names without building; [`ensure`] builds what is
//! missing and prunes each project to its last [`KEEP_PER_PROJECT`] images of each kind.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::build_context::{ContextError, Referenced, digest, pack};

/// Label on every image loop builds for a project, with the project directory as its value.
pub const PROJECT_LABEL: &str = "dev.loop.project";
/// Label saying which of a project's images this is: `base` or `project`. Images built on an
/// image inherit its labels, so a build's intermediate images carry their base's kind, never
/// `project`: only finished project images do.
pub const KIND_LABEL: &str = "dev.loop.kind";
/// Repository of a project's own build.
pub const BASE_REPO: &str = "loop-base";
/// Repository of a project's image with loop's layer: what its agents run.
pub const PROJECT_REPO: &str = "loop-project";
/// Images of each kind kept per project; older ones are removed after a build.
pub const KEEP_PER_PROJECT: usize = 2;
/// loop's layer, compiled in so that an installed binary builds it with no source tree.
const LAYER_DOCKERFILE: &str = include_str!("../../image/project.Dockerfile");
const LAYER_SCRIPT: &str = include_str!("../../image/project-layer.sh");
/// Lines of the build's output kept for an error.
const TAIL_LINES: usize = 30;

/// Why a project's image was not built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("the Dockerfile {0} is not inside the build context")]
    DockerfileOutside(String),
    #[error("cannot read the Dockerfile {path}: {message}")]
    Dockerfile { path: String, message: String },
    #[error("building the project's image failed: {message}\n{tail}")]
    Failed { message: String, tail: String },
    #[error("loop's layer cannot go on the project's image: {message}\n{tail}")]
    Layer { message: String, tail: String },
    #[error("the image {image} could not be pulled: {message}")]
    Pull { image: String, message: String },
    #[error("loop's agent image {0} is missing: build it with `loop image build`")]
    AgentImage(String),
    #[error("the Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
    #[error("this runner builds no images")]
    NoImages,
}

/// A Dockerfile in a context directory, with its arguments.
#[derive(Debug, Clone)]
pub struct BaseBuild<'a> {
    pub context: &'a Path,
    pub dockerfile: &'a Path,
    pub args: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
}

/// Where a project's base comes from.
#[derive(Debug, Clone)]
pub enum BaseSource<'a> {
    /// The project's Dockerfile, built as `loop-base:<key>`.
    Build(BaseBuild<'a>),
    /// An image used as it is (a devcontainer's `image`), pulled when missing.
    Image(&'a str),
}

/// What to build for a project.
#[derive(Debug, Clone)]
pub struct ProjectImageSpec<'a> {
    /// The project directory: the label that groups its images for pruning.
    pub project: &'a Path,
    pub base: BaseSource<'a>,
    /// loop's agent image, whose CLI, binary and entrypoint go on top.
    pub agent_image: &'a str,
}

/// The names a spec builds, known before building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    /// `loop-base:<key>`, or the devcontainer's image.
    pub base: String,
    /// `loop-project:<key>`: what the agent runs.
    pub tag: String,
    /// Whether `tag` exists already (nothing to build).
    pub ready: bool,
}

/// A project image: its tag, and whether this call built anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectImage {
    pub tag: String,
    pub built: bool,
}

/// The sources a Dockerfile's `COPY`/`ADD` take from the context: not those `--from` another
/// stage or image, nor remote URLs. A variable in a source means loop cannot tell: everything.
pub fn referenced_sources(path: &str, text: &str) -> Result<Referenced, BuildError> {
    let parsed = parse_dockerfile::parse(text).map_err(|err| BuildError::Dockerfile {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let mut sources = Vec::new();
    for instruction in &parsed.instructions {
        let (options, src) = match instruction {
            parse_dockerfile::Instruction::Copy(copy) => (&copy.options, &copy.src),
            parse_dockerfile::Instruction::Add(add) => (&add.options, &add.src),
            _ => continue,
        };
        if options.iter().any(|flag| flag.name.value == "from") {
            continue;
        }
        for source in src {
            let parse_dockerfile::Source::Path(source) = source else {
                continue; // a here-document is the Dockerfile's own text
            };
            let source = source.value.as_ref();
            if source.contains("://") || source.starts_with("git@") {
                continue;
            }
            if source.contains('$') {
                return Ok(Referenced::All);
            }
            sources.push(source.to_owned());
        }
    }
    Ok(Referenced::Sources(sources))
}

/// The images a Dockerfile's stages start `FROM`, as written: not an earlier stage, `scratch`,
/// or a name with a variable in it. loop protects them from the agent's docker proxy, so that
/// what a trusted Dockerfile builds on cannot be swapped from inside an agent.
pub fn from_images(text: &str) -> Vec<String> {
    let Ok(parsed) = parse_dockerfile::parse(text) else {
        return Vec::new();
    };
    let mut stages: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for instruction in &parsed.instructions {
        let parse_dockerfile::Instruction::From(from) = instruction else {
            continue;
        };
        let image = from.image.value.to_string();
        if !image.contains('$')
            && image != "scratch"
            && !stages.iter().any(|s| s.eq_ignore_ascii_case(&image))
        {
            images.push(image);
        }
        if let Some((_, name)) = &from.as_ {
            stages.push(name.value.to_string());
        }
    }
    images
}

/// The Dockerfile's path relative to its context, as the build is told it.
fn dockerfile_in_context(build: &BaseBuild<'_>) -> Result<String, BuildError> {
    Ok(build
        .dockerfile
        .strip_prefix(build.context)
        .map_err(|_| BuildError::DockerfileOutside(build.dockerfile.display().to_string()))?
        .to_string_lossy()
        .into_owned())
}

/// The base's key: the Dockerfile's path and text, its arguments and target, and the context
/// files it reads.
fn base_key(build: &BaseBuild<'_>) -> Result<String, BuildError> {
    let dockerfile = dockerfile_in_context(build)?;
    let text = std::fs::read_to_string(build.dockerfile).map_err(|err| BuildError::Dockerfile {
        path: build.dockerfile.display().to_string(),
        message: err.to_string(),
    })?;
    let referenced = referenced_sources(&dockerfile, &text)?;
    let files = digest(build.context, &dockerfile, &referenced)?;
    let mut hasher = Sha256::new();
    hasher.update(dockerfile.as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hasher.update([0]);
    hasher.update(files.as_bytes());
    for (name, value) in build.args {
        hasher.update(format!("\0{name}={value}"));
    }
    hasher.update(build.target.unwrap_or_default());
    Ok(hex::encode(hasher.finalize()))
}

async fn image_id(docker: &Docker, name: &str) -> Result<Option<String>, BuildError> {
    match docker.inspect_image(name).await {
        Ok(image) => Ok(image.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The images `spec` needs and whether they exist, without building: cheap enough for every
/// turn (the Dockerfile and the files it copies are read, two or three images inspected).
pub async fn plan(docker: &Docker, spec: &ProjectImageSpec<'_>) -> Result<ImagePlan, BuildError> {
    let agent = image_id(docker, spec.agent_image)
        .await?
        .ok_or_else(|| BuildError::AgentImage(spec.agent_image.to_owned()))?;
    let (base, base_key) = match &spec.base {
        BaseSource::Build(build) => {
            let key = base_key(build)?;
            (format!("{BASE_REPO}:{}", &key[..16]), key)
        }
        BaseSource::Image(image) => {
            let id = image_id(docker, image).await?.unwrap_or_default();
            ((*image).to_owned(), format!("{image}\0{id}"))
        }
    };
    let mut hasher = Sha256::new();
    for part in [&base_key, &agent, LAYER_DOCKERFILE, LAYER_SCRIPT] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let tag = format!("{PROJECT_REPO}:{}", &hex::encode(hasher.finalize())[..16]);
    let ready = image_id(docker, &tag).await?.is_some();
    Ok(ImagePlan { base, tag, ready })
}

/// Builds what `spec` is missing (its base, loop's layer), then prunes the project's older
/// images. `on_line` sees the builds' output as it comes (a thread's status shows it).
pub async fn ensure(
    docker: &Docker,
    spec: &ProjectImageSpec<'_>,
    mut on_line: impl FnMut(&str),
) -> Result<ProjectImage, BuildError> {
    let mut planned = plan(docker, spec).await?;
    if planned.ready {
        return Ok(ProjectImage {
            tag: planned.tag,
            built: false,
        });
    }
    let label = spec.project.display().to_string();
    match &spec.base {
        BaseSource::Build(build) => {
            if image_id(docker, &planned.base).await?.is_none() {
                build_base(docker, build, &planned.base, &label, &mut on_line).await?;
            }
        }
        BaseSource::Image(image) => {
            if image_id(docker, image).await?.is_none() {
                pull(docker, image, &mut on_line).await?;
                // Its id is part of the project image's name.
                planned = plan(docker, spec).await?;
                if planned.ready {
                    return Ok(ProjectImage {
                        tag: planned.tag,
                        built: true,
                    });
                }
            }
        }
    }
    build_layer(docker, &planned, spec.agent_image, &label, &mut on_line).await?;
    if let Err(err) = prune(docker, spec.project, &[&planned.base, &planned.tag]).await {
        tracing::warn!(project = %label, error = %err, "cannot prune the project's old images");
    }
    Ok(ProjectImage {
        tag: planned.tag,
        built: true,
    })
}

/// Builds the project's Dockerfile as `tag`.
async fn build_base(
    docker: &Docker,
    build: &BaseBuild<'_>,
    tag: &str,
    label: &str,
    on_line: &mut impl FnMut(&str),
) -> Result<(), BuildError> {
    let dockerfile = dockerfile_in_context(build)?;
    let context = pack(build.context, &dockerfile)?;
    let args: HashMap<String, String> = build.args.clone().into_iter().collect();
    let mut options = BuildImageOptionsBuilder::new().dockerfile(&dockerfile);
    if let Some(target) = build.target {
        options = options.target(target);
    }
    run_build(docker, options, context.tar, tag, &args, label, on_line)
        .await
        .map_err(|(message, tail)| BuildError::Failed { message, tail })
}

/// Builds loop's layer on the planned base.
async fn build_layer(
    docker: &Docker,
    planned: &ImagePlan,
    agent_image: &str,
    label: &str,
    on_line: &mut impl FnMut(&str),
) -> Result<(), BuildError> {
    let tar = {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, text) in [
            ("Dockerfile", LAYER_DOCKERFILE),
            ("project-layer.sh", LAYER_SCRIPT),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, text.as_bytes())
                .map_err(|source| ContextError::Io {
                    path: name.into(),
                    source,
                })?;
        }
        builder.into_inner().map_err(|source| ContextError::Io {
            path: "loop's layer".into(),
            source,
        })?
    };
    let args: HashMap<String, String> = [
        ("BASE".to_owned(), planned.base.clone()),
        ("LOOP_IMAGE".to_owned(), agent_image.to_owned()),
    ]
    .into();
    let options = BuildImageOptionsBuilder::new().dockerfile("Dockerfile");
    run_build(docker, options, tar, &planned.tag, &args, label, on_line)
        .await
        .map_err(|(message, tail)| {
            let message = if message.contains("/bin/sh") && message.contains("no such file") {
                "the project's image has no /bin/sh: loop's layer needs a glibc Linux with a shell"
                    .to_owned()
            } else {
                message
            };
            BuildError::Layer { message, tail }
        })
}

/// One build through the Engine API with loop's fixed options; `Err((message, tail))`.
async fn run_build(
    docker: &Docker,
    options: BuildImageOptionsBuilder,
    tar: Vec<u8>,
    tag: &str,
    args: &HashMap<String, String>,
    label: &str,
    on_line: &mut impl FnMut(&str),
) -> Result<(), (String, String)> {
    let kind = if tag.starts_with(&format!("{PROJECT_REPO}:")) {
        "project"
    } else {
        "base"
    };
    let labels: HashMap<String, String> = [
        (PROJECT_LABEL.to_owned(), label.to_owned()),
        (KIND_LABEL.to_owned(), kind.to_owned()),
    ]
    .into();
    let options = options
        .t(tag)
        .buildargs(args)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .networkmode("default")
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let joined = |tail: &std::collections::VecDeque<String>| {
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    };
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err((error, joined(&tail)));
            }
            Err(err) => return Err((err.to_string(), joined(&tail))),
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
            return Err((detail.message.unwrap_or_default(), joined(&tail)));
        }
    }
    Ok(())
}

/// Pulls `image` (a devcontainer's), reporting each layer's status.
async fn pull(
    docker: &Docker,
    image: &str,
    on_line: &mut impl FnMut(&str),
) -> Result<(), BuildError> {
    on_line(&format!("pulling {image}"));
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|err| BuildError::Pull {
            image: image.to_owned(),
            message: err.to_string(),
        })?;
        if let Some(status) = info.status {
            on_line(&format!("{image}: {status}"));
        }
    }
    Ok(())
}

/// The newest image with loop's layer built for `project`, if any: every one was built from a
/// version of its description that was trusted then.
pub async fn latest(docker: &Docker, project: &Path) -> Result<Option<String>, BuildError> {
    let filters: HashMap<&str, Vec<String>> = [(
        "label",
        vec![format!("{PROJECT_LABEL}={}", project.display())],
    )]
    .into();
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    Ok(images
        .iter()
        .flat_map(|image| {
            image
                .repo_tags
                .iter()
                .filter(|tag| tag.starts_with(&format!("{PROJECT_REPO}:")))
                .map(move |tag| (image.created, tag.clone()))
        })
        .max()
        .map(|(_, tag)| tag))
}

/// Removes the project's images beyond the newest [`KEEP_PER_PROJECT`] of each kind, never one
/// of `keep`. An image a container still runs (a warm agent's) loses its name at once and is
/// deleted by a later prune, once nothing runs it. Returns the tags removed.
pub async fn prune(
    docker: &Docker,
    project: &Path,
    keep: &[&str],
) -> Result<Vec<String>, BuildError> {
    let label = format!("{PROJECT_LABEL}={}", project.display());
    let filters: HashMap<&str, Vec<String>> = [("label", vec![label.clone()])].into();
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    let mut removed = Vec::new();
    for repo in [BASE_REPO, PROJECT_REPO] {
        let mut tagged: Vec<(i64, String)> = images
            .iter()
            .flat_map(|image| {
                image
                    .repo_tags
                    .iter()
                    .filter(|tag| tag.starts_with(&format!("{repo}:")))
                    .map(move |tag| (image.created, tag.clone()))
            })
            .collect();
        tagged.sort_by(|a, b| b.cmp(a));
        let mut kept = 0;
        for (_, tag) in tagged {
            if keep.contains(&tag.as_str()) || kept < KEEP_PER_PROJECT {
                kept += 1;
                continue;
            }
            // Forced: only the name goes while a container runs the image.
            let options = RemoveImageOptionsBuilder::new().force(true).build();
            match docker.remove_image(&tag, Some(options), None).await {
                Ok(_) => removed.push(tag),
                Err(err) => tracing::debug!(tag = %tag, error = %err, "old project image kept"),
            }
        }
    }
    // The project's finished images that lost their name while a container ran them, now that
    // none does. Not every unnamed image: a build in progress (this project's or another's on a
    // shared base, whose labels its steps inherit) has unnamed intermediate images too.
    let dangling: HashMap<&str, Vec<String>> = [
        ("label", vec![label, format!("{KIND_LABEL}=project")]),
        ("dangling", vec!["true".to_owned()]),
    ]
    .into();
    docker
        .prune_images(Some(
            bollard::query_parameters::PruneImagesOptionsBuilder::new()
                .filters(&dangling)
                .build(),
        ))
        .await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerfiles_sources_and_base_images_are_read_as_docker_reads_them() {
        let text = "ARG V=3\n\
            FROM python:3.12-slim AS build\n\
            COPY requirements.txt ./\n\
            COPY --from=build /x /y\n\
            ADD https://example.com/a.tgz /tmp/\n\
            COPY src/ lib/*.py /app/\n\
            COPY <<EOF /etc/motd\nhello\nEOF\n\
            FROM build AS test\n\
            FROM scratch\n\
            COPY --from=test /app /app\n";
        assert_eq!(
            referenced_sources("Dockerfile", text).expect("parses"),
            Referenced::Sources(vec![
                "requirements.txt".into(),
                "src/".into(),
                "lib/*.py".into()
            ])
        );
        assert_eq!(from_images(text), vec!["python:3.12-slim".to_owned()]);
        // A variable in a source: loop cannot tell which files, so all of them count.
        assert_eq!(
            referenced_sources("Dockerfile", "FROM debian\nCOPY ${DIR} /a\n").expect("parses"),
            Referenced::All
        );
        assert!(from_images("ARG BASE\nFROM ${BASE}\n").is_empty());
    }
}
