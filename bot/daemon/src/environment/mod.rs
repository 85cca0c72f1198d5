//! A project's environment: which image its agent runs in (issue #18). A project describes it,
//! by priority, in `.loop/container/Dockerfile` (the Go Loop's convention), in
//! `.devcontainer/devcontainer.json` or `.devcontainer.json` (the Dev Container spec, see
//! [`devcontainer`]), or not at all (the config's `container_image`).
//!
//! Discovery reads the project's files the way every host-side read of a project does
//! ([`crate::project_files`]: beneath the project, never through a symlink, size-capped), and
//! refuses a description loop cannot honour with a message that names the file, the line and
//! the field. Building the image, with loop's own layer on top, is the runner's.

pub mod devcontainer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loop_runner::project_image::{BaseBuild, BaseSource, ProjectImageSpec};
use loop_runner::spec::{SetupCommand, SetupStep};

use crate::config::project::{hash_text, trust_key};
use crate::project_files::{ProjectFileError, read_in_project};
pub use devcontainer::{Devcontainer, DevcontainerBase, DevcontainerError, LifecycleCommand};

/// A `.loop/container/Dockerfile` has no build arguments.
static NO_ARGS: BTreeMap<String, String> = BTreeMap::new();

/// The Go Loop's per-project Dockerfile.
pub const LOOP_DOCKERFILE: &str = ".loop/container/Dockerfile";
/// The Dev Container spec's two places, in the spec's order.
pub const DEVCONTAINER_FILES: &[&str] = &[".devcontainer/devcontainer.json", ".devcontainer.json"];
/// A description larger than this is not a description.
const MAX_DESCRIPTION_BYTES: u64 = 256 * 1024;

/// Where a project's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentSource {
    /// `.loop/container/Dockerfile`, built with the project as its context (so it may `COPY`
    /// the project's requirement files; the project's `.dockerignore` applies).
    LoopDockerfile {
        dockerfile: PathBuf,
        context: PathBuf,
    },
    /// A devcontainer.json.
    Devcontainer {
        file: PathBuf,
        spec: Box<Devcontainer>,
    },
    /// No description: the configured image.
    Configured(String),
}

/// Why a project's environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error(transparent)]
    Devcontainer(#[from] DevcontainerError),
    #[error("{0}")]
    File(#[from] ProjectFileError),
}

/// What an owner trusts before a project's environment is built: the text of the files that
/// say what runs (the Dockerfile; a devcontainer.json and the Dockerfile it builds), and its
/// hash. Files the Dockerfile copies are the project's data, as the agent's own edits are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The main file, relative to the project (`.loop/container/Dockerfile`).
    pub name: String,
    /// Each file under a `# path` line, in a fixed order: what the owner reads.
    pub text: String,
    /// SHA-256 of `text`, lower-case hex.
    pub hash: String,
}

impl Description {
    /// The first hex digits people see and type (`/loop trust 1a2b3c4d5e6f`).
    pub fn short_hash(&self) -> &str {
        crate::config::project::short_hash(&self.hash)
    }
}

/// The trust record's key of a project's environment description (the project file's own
/// record is keyed by the bare directory, which always starts with `/`).
pub fn environment_trust_key(project: &Path) -> String {
    format!("environment:{}", trust_key(project))
}

impl EnvironmentSource {
    /// The description an owner trusts; `None` for the configured image.
    pub fn description(&self, project: &Path) -> Result<Option<Description>, EnvironmentError> {
        let files: Vec<&Path> = match self {
            EnvironmentSource::Configured(_) => return Ok(None),
            EnvironmentSource::LoopDockerfile { dockerfile, .. } => vec![dockerfile],
            EnvironmentSource::Devcontainer { file, spec } => match &spec.base {
                DevcontainerBase::Image(_) => vec![file],
                DevcontainerBase::Build { dockerfile, .. } => vec![file, dockerfile],
            },
        };
        let mut text = String::new();
        for file in &files {
            let content = read_in_project(project, file, MAX_DESCRIPTION_BYTES)?;
            let relative = file.strip_prefix(project).unwrap_or(file);
            text.push_str(&format!("# {}\n{content}", relative.display()));
            if !content.ends_with('\n') {
                text.push('\n');
            }
        }
        let name = files[0]
            .strip_prefix(project)
            .unwrap_or(files[0])
            .display()
            .to_string();
        let hash = hash_text(&text);
        Ok(Some(Description { name, text, hash }))
    }

    /// What the runner builds for `project` (its images are labelled with `label_dir`, the
    /// channel's directory, for pruning); `None` for the configured image.
    pub fn image_spec<'a>(
        &'a self,
        label_dir: &'a Path,
        agent_image: &'a str,
    ) -> Option<ProjectImageSpec<'a>> {
        let base = match self {
            EnvironmentSource::Configured(_) => return None,
            EnvironmentSource::LoopDockerfile {
                dockerfile,
                context,
            } => BaseSource::Build(BaseBuild {
                context,
                dockerfile,
                args: &NO_ARGS,
                target: None,
            }),
            EnvironmentSource::Devcontainer { spec, .. } => match &spec.base {
                DevcontainerBase::Image(image) => BaseSource::Image(image),
                DevcontainerBase::Build {
                    dockerfile,
                    context,
                    args,
                    target,
                } => BaseSource::Build(BaseBuild {
                    context,
                    dockerfile,
                    args,
                    target: target.as_deref(),
                }),
            },
        };
        Some(ProjectImageSpec {
            project: label_dir,
            base,
            agent_image,
        })
    }
}

impl EnvironmentSource {
    /// The devcontainer's lifecycle commands in the spec's order (`onCreateCommand`,
    /// `updateContentCommand`, `postCreateCommand`, then `postStartCommand` and
    /// `postAttachCommand`: a loop container starts once), as `loop setup` runs them in each
    /// container.
    pub fn setup_steps(&self) -> Vec<SetupStep> {
        let EnvironmentSource::Devcontainer { spec, .. } = self else {
            return Vec::new();
        };
        spec.setup
            .iter()
            .chain(&spec.on_start)
            .map(|(name, command)| SetupStep {
                name: (*name).to_owned(),
                command: match command {
                    LifecycleCommand::Shell(line) => SetupCommand::Shell(line.clone()),
                    LifecycleCommand::Argv(argv) => SetupCommand::Argv(argv.clone()),
                    LifecycleCommand::Parallel(named) => SetupCommand::Parallel(
                        named
                            .iter()
                            .map(|(name, command)| {
                                let command = match command {
                                    devcontainer::ShellOrArgv::Shell(line) => {
                                        SetupCommand::Shell(line.clone())
                                    }
                                    devcontainer::ShellOrArgv::Argv(argv) => {
                                        SetupCommand::Argv(argv.clone())
                                    }
                                };
                                (name.clone(), command)
                            })
                            .collect(),
                    ),
                },
            })
            .collect()
    }

    /// The images this description builds on (a devcontainer's `image`, its Dockerfile's
    /// `FROM`s): the agent's docker proxy must not replace them.
    pub fn protected_images(&self, project: &Path) -> Vec<String> {
        let dockerfile = match self {
            EnvironmentSource::Configured(_) => return Vec::new(),
            EnvironmentSource::LoopDockerfile { dockerfile, .. } => Some(dockerfile),
            EnvironmentSource::Devcontainer { spec, .. } => match &spec.base {
                DevcontainerBase::Image(_) => None,
                DevcontainerBase::Build { dockerfile, .. } => Some(dockerfile),
            },
        };
        let mut images = Vec::new();
        if let EnvironmentSource::Devcontainer { spec, .. } = self
            && let DevcontainerBase::Image(image) = &spec.base
        {
            images.push(image.clone());
        }
        if let Some(text) =
            dockerfile.and_then(|path| read_in_project(project, path, MAX_DESCRIPTION_BYTES).ok())
        {
            images.extend(loop_runner::project_image::from_images(&text));
        }
        images
    }

    /// The devcontainer's `containerEnv` and `remoteEnv` (the latter wins, as in the spec).
    pub fn environment_variables(&self) -> BTreeMap<String, String> {
        let EnvironmentSource::Devcontainer { spec, .. } = self else {
            return BTreeMap::new();
        };
        let mut env = spec.container_env.clone();
        env.extend(spec.remote_env.clone());
        env
    }
}

/// One build of a project's environment at a time: the turns that need the same project's
/// image wait on its lock, and the first builds it.
#[derive(Default)]
pub struct BuildFlights {
    flights: std::sync::Mutex<
        std::collections::HashMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
}

impl BuildFlights {
    /// The lock of `project`'s builds.
    pub fn of(&self, project: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        flights.entry(project.to_path_buf()).or_default().clone()
    }
}

/// The project's environment, by the priority of the module docs.
pub fn discover(
    project: &Path,
    configured_image: &str,
) -> Result<EnvironmentSource, EnvironmentError> {
    if let Some(dockerfile) = present(project, LOOP_DOCKERFILE)? {
        return Ok(EnvironmentSource::LoopDockerfile {
            dockerfile,
            context: project.to_path_buf(),
        });
    }
    for name in DEVCONTAINER_FILES {
        if let Some(file) = present(project, name)? {
            let text = read_in_project(project, &file, MAX_DESCRIPTION_BYTES)?;
            let spec = devcontainer::parse(project, &file, &text)?;
            return Ok(EnvironmentSource::Devcontainer {
                file,
                spec: Box::new(spec),
            });
        }
    }
    Ok(EnvironmentSource::Configured(configured_image.to_owned()))
}

/// `project/relative` when something is there, checked to be a regular file reached without
/// a symlink (a link there is an error, not "absent": someone meant it).
fn present(project: &Path, relative: &str) -> Result<Option<PathBuf>, ProjectFileError> {
    let path = project.join(relative);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    read_in_project(project, &path, MAX_DESCRIPTION_BYTES)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/projects");
        std::fs::canonicalize(dir).expect("fixtures").join(name)
    }

    /// The projects of `tests/fixtures/projects`, as a person's checkout would hold them.
    #[test]
    fn the_fixture_projects_describe_their_environments() {
        let python = fixture("python-dockerfile");
        assert_eq!(
            discover(&python, "loop-agent:latest").expect("python"),
            EnvironmentSource::LoopDockerfile {
                dockerfile: python.join(LOOP_DOCKERFILE),
                context: python.clone(),
            }
        );

        let image = fixture("devcontainer-image");
        match discover(&image, "loop-agent:latest").expect("image") {
            EnvironmentSource::Devcontainer { file, spec } => {
                assert_eq!(file, image.join(".devcontainer/devcontainer.json"));
                assert_eq!(
                    spec.base,
                    DevcontainerBase::Image("debian:bookworm-slim".into())
                );
                assert_eq!(spec.setup.len(), 1, "{spec:?}");
            }
            other => panic!("{other:?}"),
        }

        let build = fixture("devcontainer-build");
        match discover(&build, "loop-agent:latest").expect("build") {
            EnvironmentSource::Devcontainer { spec, .. } => match spec.base {
                DevcontainerBase::Build {
                    dockerfile,
                    context,
                    args,
                    ..
                } => {
                    assert_eq!(dockerfile, build.join(".devcontainer/Dockerfile"));
                    assert_eq!(context, build);
                    assert_eq!(
                        args.get("GREETING").map(String::as_str),
                        Some("hello from args")
                    );
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }

        let invalid = fixture("devcontainer-invalid");
        let err = discover(&invalid, "loop-agent:latest").expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains(".devcontainer.json:4: `containerEnv.DEBUG`"),
            "{text}"
        );

        let plain = fixture("plain");
        assert_eq!(
            discover(&plain, "loop-agent:latest").expect("plain"),
            EnvironmentSource::Configured("loop-agent:latest".into())
        );
    }

    /// A description that is a symlink (to a host file, say) is refused, not followed.
    #[test]
    fn a_linked_description_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".devcontainer")).expect("mkdir");
        std::os::unix::fs::symlink(
            "/etc/passwd",
            dir.path().join(".devcontainer/devcontainer.json"),
        )
        .expect("link");
        let err = discover(dir.path(), "x").expect_err("a link");
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
