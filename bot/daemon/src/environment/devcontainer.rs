//! `devcontainer.json`, read as the Dev Container specification describes it
//! (containers.dev/implementors/json_reference), for what loop can honour: an `image`, or a
//! `build` (`dockerfile`, `context`, `args`, `target`), `containerEnv`, `remoteUser`, and the
//! lifecycle commands that run inside the container. Pure: text in, a spec or an error out.
//!
//! The file is in a repository the agent and strangers write, so what would reach the host is
//! never taken from it: `initializeCommand` (runs on the host), `mounts`, `runArgs`,
//! `privileged`, `capAdd`, `securityOpt` and `workspaceMount` are ignored with a note; ports are
//! ignored too (loop forwards none). `features` and Docker Compose are refused by name: a
//! feature is an install script loop does not run, and half an environment is worse than a
//! clear "not supported".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// A lifecycle command: a shell string, an argv, or named commands run in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LifecycleCommand {
    Shell(String),
    Argv(Vec<String>),
    Parallel(BTreeMap<String, ShellOrArgv>),
}

/// One of a [`LifecycleCommand::Parallel`]'s commands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ShellOrArgv {
    Shell(String),
    Argv(Vec<String>),
}

/// `build` of a devcontainer.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// Relative to the devcontainer.json.
    pub dockerfile: Option<String>,
    /// Relative to the devcontainer.json; `.` by default.
    pub context: Option<String>,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Build-cache hints: accepted, not used.
    #[serde(default)]
    pub cache_from: Option<Value>,
    /// Extra `docker build` options: never passed (a project file does not choose them).
    #[serde(default)]
    pub options: Option<Value>,
}

/// The parts of a devcontainer.json loop reads; every field optional, as in the spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDevcontainer {
    name: Option<String>,
    image: Option<String>,
    build: Option<BuildSpec>,
    /// Older spelling of `build.dockerfile`, still in the spec.
    dockerfile: Option<String>,
    /// Older spelling of `build.context`.
    context: Option<String>,
    docker_compose_file: Option<Value>,
    features: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    container_env: BTreeMap<String, String>,
    #[serde(default)]
    remote_env: BTreeMap<String, Option<String>>,
    remote_user: Option<String>,
    container_user: Option<String>,
    on_create_command: Option<LifecycleCommand>,
    update_content_command: Option<LifecycleCommand>,
    post_create_command: Option<LifecycleCommand>,
    post_start_command: Option<LifecycleCommand>,
    post_attach_command: Option<LifecycleCommand>,
    initialize_command: Option<Value>,
    forward_ports: Option<Value>,
    app_port: Option<Value>,
    ports_attributes: Option<Value>,
    mounts: Option<Value>,
    run_args: Option<Value>,
    privileged: Option<Value>,
    cap_add: Option<Value>,
    security_opt: Option<Value>,
    workspace_mount: Option<Value>,
    workspace_folder: Option<Value>,
    customizations: Option<Value>,
}

/// Where a devcontainer's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevcontainerBase {
    /// `image`: used as it is.
    Image(String),
    /// `build`: a Dockerfile and its context, resolved against the devcontainer.json's
    /// directory and checked to stay inside the project.
    Build {
        dockerfile: PathBuf,
        context: PathBuf,
        args: BTreeMap<String, String>,
        target: Option<String>,
    },
}

/// A devcontainer.json as loop runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devcontainer {
    pub name: Option<String>,
    pub base: DevcontainerBase,
    pub container_env: BTreeMap<String, String>,
    pub remote_env: BTreeMap<String, String>,
    /// `remoteUser`, else `containerUser`: who the project's tools expect to run as.
    pub remote_user: Option<String>,
    /// `onCreateCommand`, `updateContentCommand`, `postCreateCommand`: once per container, in
    /// that order (the spec's order), each with its name.
    pub setup: Vec<(&'static str, LifecycleCommand)>,
    /// `postStartCommand`, `postAttachCommand`: each time a container starts.
    pub on_start: Vec<(&'static str, LifecycleCommand)>,
    /// What loop did not take from the file, and why, for the thread.
    pub notes: Vec<String>,
}

/// Why a devcontainer.json cannot be used: always names the file, and the line and field
/// where they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevcontainerError {
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}: `{field}`: {message}")]
    Field {
        file: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
}

/// Parses the devcontainer.json at `file` (its text `text`) of the project at `project`.
pub fn parse(project: &Path, file: &Path, text: &str) -> Result<Devcontainer, DevcontainerError> {
    let value: Value =
        jsonc_parser::parse_to_serde_value(text, &jsonc_parser::ParseOptions::default()).map_err(
            |err| DevcontainerError::Syntax {
                file: file.to_path_buf(),
                line: err.line_display(),
                column: err.column_display(),
                message: err.kind().to_string(),
            },
        )?;
    let field_error = |field: &str, message: String| DevcontainerError::Field {
        file: file.to_path_buf(),
        line: line_of_field(text, field),
        field: field.to_owned(),
        message,
    };
    if !value.is_object() {
        return Err(DevcontainerError::File {
            file: file.to_path_buf(),
            message: "expected a JSON object".to_owned(),
        });
    }
    let mut unknown = Vec::new();
    let raw: RawDevcontainer = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        value,
        &mut |path: serde_ignored::Path<'_>| unknown.push(path.to_string()),
    ))
    .map_err(|err| {
        let field = err.path().to_string();
        field_error(&field, err.into_inner().to_string())
    })?;

    if raw.docker_compose_file.is_some() {
        return Err(field_error(
            "dockerComposeFile",
            "Docker Compose environments are not supported; describe the agent's container with `image` or `build`".to_owned(),
        ));
    }
    if let Some(features) = raw.features.as_ref().filter(|f| !f.is_empty()) {
        let names: Vec<&str> = features.keys().map(String::as_str).collect();
        return Err(field_error(
            "features",
            format!(
                "Dev Container features are not supported ({}); install what they provide in the Dockerfile (`build.dockerfile`)",
                names.join(", ")
            ),
        ));
    }
    let dir = file.parent().unwrap_or(project);
    let build = raw.build.clone().or_else(|| {
        raw.dockerfile.as_ref().map(|dockerfile| BuildSpec {
            dockerfile: Some(dockerfile.clone()),
            context: raw.context.clone(),
            ..BuildSpec::default()
        })
    });
    let base = match (&raw.image, build) {
        (Some(_), Some(_)) => {
            return Err(field_error(
                "build",
                "both `image` and `build` are set; keep one".to_owned(),
            ));
        }
        (Some(image), None) if !image.trim().is_empty() => DevcontainerBase::Image(image.clone()),
        (_, Some(build)) => {
            let Some(dockerfile) = build.dockerfile.as_deref().filter(|d| !d.is_empty()) else {
                return Err(field_error(
                    "build.dockerfile",
                    "`build` needs a `dockerfile` (relative to the devcontainer.json)".to_owned(),
                ));
            };
            let dockerfile = inside(project, dir, dockerfile)
                .map_err(|why| field_error("build.dockerfile", why))?;
            let context = inside(project, dir, build.context.as_deref().unwrap_or("."))
                .map_err(|why| field_error("build.context", why))?;
            DevcontainerBase::Build {
                dockerfile,
                context,
                args: build.args,
                target: build.target,
            }
        }
        _ => {
            return Err(DevcontainerError::File {
                file: file.to_path_buf(),
                message: "neither `image` nor `build` says which image to use".to_owned(),
            });
        }
    };

    let mut notes = Vec::new();
    let mut note = |present: bool, text: &str| {
        if present {
            notes.push(text.to_owned());
        }
    };
    note(
        raw.initialize_command.is_some(),
        "`initializeCommand` runs on the host in the spec; loop never runs a project's command on the host",
    );
    note(
        raw.forward_ports.is_some() || raw.app_port.is_some() || raw.ports_attributes.is_some(),
        "ports (`forwardPorts`, `appPort`) are not forwarded",
    );
    note(
        raw.mounts.is_some() || raw.workspace_mount.is_some() || raw.workspace_folder.is_some(),
        "`mounts`, `workspaceMount` and `workspaceFolder` are ignored: loop mounts the project at its own path and nothing else from a project file",
    );
    note(
        raw.run_args.is_some()
            || raw.privileged.is_some()
            || raw.cap_add.is_some()
            || raw.security_opt.is_some(),
        "`runArgs`, `privileged`, `capAdd` and `securityOpt` are ignored: a project file does not choose the container's privileges",
    );
    note(
        raw.build.as_ref().is_some_and(|b| b.options.is_some()),
        "`build.options` is ignored: a project file does not choose docker build's options",
    );
    if !unknown.is_empty() {
        notes.push(format!("unknown keys ignored: {}", unknown.join(", ")));
    }
    let setup = [
        ("onCreateCommand", raw.on_create_command),
        ("updateContentCommand", raw.update_content_command),
        ("postCreateCommand", raw.post_create_command),
    ]
    .into_iter()
    .filter_map(|(name, command)| command.map(|c| (name, c)))
    .collect();
    let on_start = [
        ("postStartCommand", raw.post_start_command),
        ("postAttachCommand", raw.post_attach_command),
    ]
    .into_iter()
    .filter_map(|(name, command)| command.map(|c| (name, c)))
    .collect();
    let _ = raw.customizations;
    Ok(Devcontainer {
        name: raw.name,
        base,
        container_env: raw.container_env,
        remote_env: raw
            .remote_env
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        remote_user: raw.remote_user.or(raw.container_user),
        setup,
        on_start,
        notes,
    })
}

/// `relative` (from the devcontainer.json's directory `dir`) as a path inside `project`,
/// lexically: a build must not reach the host's other files.
fn inside(project: &Path, dir: &Path, relative: &str) -> Result<PathBuf, String> {
    let resolved = normalize(&dir.join(relative))
        .ok_or_else(|| format!("`{relative}` leaves the filesystem root"))?;
    let project = normalize(project).unwrap_or_else(|| project.to_path_buf());
    if resolved.starts_with(&project) {
        Ok(resolved)
    } else {
        Err(format!(
            "`{relative}` is outside the project ({}): a build only sees the project's files",
            project.display()
        ))
    }
}

/// `path` with `.` and `..` resolved lexically; `None` when `..` climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !normal.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    Some(normal)
}

/// The 1-based line of `field` (a serde path like `build.args.X` or `features`) in `text`:
/// the line of the deepest key of the path that is found, else 1.
fn line_of_field(text: &str, field: &str) -> usize {
    use jsonc_parser::ast::Value as Node;
    let Ok(parsed) = jsonc_parser::parse_to_ast(
        text,
        &jsonc_parser::CollectOptions::default(),
        &jsonc_parser::ParseOptions::default(),
    ) else {
        return 1;
    };
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut node = parsed.value.as_ref();
    let mut line = 1;
    for key in field.split('.').filter(|k| !k.is_empty() && *k != "?") {
        let Some(Node::Object(object)) = node else {
            break;
        };
        let Some(prop) = object.properties.iter().find(|p| p.name.as_str() == key) else {
            break;
        };
        line = line_of(prop.range.start);
        node = Some(&prop.value);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Devcontainer, DevcontainerError> {
        parse(
            Path::new("/srv/app"),
            Path::new("/srv/app/.devcontainer/devcontainer.json"),
            text,
        )
    }

    #[test]
    fn an_image_with_setup_commands_and_comments() {
        let spec = parse_text(
            r#"{
  // The spec allows comments and trailing commas.
  "name": "py",
  "image": "python:3.12-slim",
  "containerEnv": {"PYTHONDONTWRITEBYTECODE": "1"},
  "remoteUser": "vscode",
  "onCreateCommand": ["pip", "install", "-e", "."],
  "postCreateCommand": {"deps": "pip install pytest", "hooks": ["pre-commit", "install"]},
  "forwardPorts": [8000],
  "initializeCommand": "touch /tmp/owned-host",
}"#,
        )
        .expect("valid");
        assert_eq!(
            spec.base,
            DevcontainerBase::Image("python:3.12-slim".into())
        );
        assert_eq!(spec.remote_user.as_deref(), Some("vscode"));
        assert_eq!(spec.container_env["PYTHONDONTWRITEBYTECODE"], "1");
        let names: Vec<&str> = spec.setup.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["onCreateCommand", "postCreateCommand"]);
        assert!(matches!(spec.setup[1].1, LifecycleCommand::Parallel(ref m) if m.len() == 2));
        assert!(
            spec.notes.iter().any(|n| n.contains("initializeCommand")),
            "{:?}",
            spec.notes
        );
        assert!(spec.notes.iter().any(|n| n.contains("forwardPorts")));
    }

    #[test]
    fn a_build_resolves_inside_the_project_only() {
        let spec = parse_text(
            r#"{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"PY": "3.12"}}}"#,
        )
        .expect("valid");
        assert_eq!(
            spec.base,
            DevcontainerBase::Build {
                dockerfile: "/srv/app/.devcontainer/Dockerfile".into(),
                context: "/srv/app".into(),
                args: [("PY".to_owned(), "3.12".to_owned())].into(),
                target: None,
            }
        );
        let escape = parse_text(r#"{"build": {"dockerfile": "Dockerfile", "context": "../.."}}"#)
            .expect_err("outside");
        assert!(escape.to_string().contains("`build.context`"), "{escape}");
        assert!(
            escape.to_string().contains("outside the project"),
            "{escape}"
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let wrong_type = parse_text("{\n  \"image\": \"x\",\n  \"containerEnv\": {\"A\": 1}\n}")
            .expect_err("type");
        assert_eq!(
            wrong_type.to_string().split(": `").next(),
            Some("/srv/app/.devcontainer/devcontainer.json:3"),
            "{wrong_type}"
        );
        assert!(
            wrong_type.to_string().contains("`containerEnv.A`"),
            "{wrong_type}"
        );

        let syntax = parse_text("{\n  \"image\": \"x\"\n  \"name\": 1\n}").expect_err("syntax");
        assert!(
            syntax
                .to_string()
                .starts_with("/srv/app/.devcontainer/devcontainer.json:3:"),
            "{syntax}"
        );

        let features = parse_text(
            "{\n  \"image\": \"x\",\n  \"features\": {\"ghcr.io/devcontainers/features/node:1\": {}}\n}",
        )
        .expect_err("features");
        let text = features.to_string();
        assert!(text.contains(":3: `features`"), "{text}");
        assert!(
            text.contains("ghcr.io/devcontainers/features/node:1"),
            "{text}"
        );

        let compose = parse_text(r#"{"dockerComposeFile": "compose.yml", "service": "app"}"#)
            .expect_err("compose");
        assert!(compose.to_string().contains("Docker Compose"), "{compose}");

        let nothing = parse_text(r#"{"name": "x"}"#).expect_err("no image");
        assert!(
            nothing.to_string().contains("neither `image` nor `build`"),
            "{nothing}"
        );
    }
}
