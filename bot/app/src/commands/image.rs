//! `loop image build`: stage a build context (Dockerfile, entrypoint, this binary, extra CA
//! certificates) and run `docker build` with a progress bar.
//!
//! The Docker CLI is used rather than the API, as the Go Loop does: it brings BuildKit when
//! available and the user's own Docker configuration.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The Dockerfile and entrypoint, compiled into the binary so that `loop image build` works
/// from an installed binary with no source tree.
pub const DOCKERFILE: &str = include_str!("../../../../image/Dockerfile");
pub const ENTRYPOINT: &str = include_str!("../../../../image/entrypoint.sh");

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot stage the build context in {path}: {source}")]
    Stage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read CA certificate {path}: {source}")]
    CaCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not look like a PEM certificate (no BEGIN CERTIFICATE line)")]
    NotPem { path: PathBuf },
    #[error("cannot run `docker build`: {0} (is the docker CLI installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("docker build failed with {status}; last output:\n{tail}")]
    Failed { status: String, tail: String },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub tag: String,
    pub claude_version: String,
    pub loop_binary: PathBuf,
    pub ca_certs: Vec<PathBuf>,
    pub no_cache: bool,
}

/// Writes the build context into `dir`.
pub fn stage_context(dir: &Path, request: &BuildRequest) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let stage = |path: PathBuf, result: std::io::Result<()>| {
        result.map_err(|source| ImageError::Stage { path, source })
    };
    stage(
        dir.join("Dockerfile"),
        std::fs::write(dir.join("Dockerfile"), DOCKERFILE),
    )?;
    let entrypoint = dir.join("entrypoint.sh");
    stage(entrypoint.clone(), std::fs::write(&entrypoint, ENTRYPOINT))?;
    stage(
        entrypoint.clone(),
        std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755)),
    )?;
    let binary = dir.join("loop");
    stage(
        binary.clone(),
        std::fs::copy(&request.loop_binary, &binary).map(|_| ()),
    )?;
    let certs = dir.join("ca-certificates");
    stage(certs.clone(), std::fs::create_dir_all(&certs))?;
    for (index, cert) in request.ca_certs.iter().enumerate() {
        let pem = std::fs::read_to_string(cert).map_err(|source| ImageError::CaCert {
            path: cert.clone(),
            source,
        })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ImageError::NotPem { path: cert.clone() });
        }
        let name = format!("loop-extra-{index:02}.crt");
        stage(certs.join(&name), std::fs::write(certs.join(&name), pem))?;
    }
    Ok(())
}

/// Stages the context in a temp dir and runs `docker build`, showing progress.
pub async fn build(request: &BuildRequest) -> Result<(), ImageError> {
    let dir = tempfile::tempdir().map_err(|source| ImageError::Stage {
        path: std::env::temp_dir(),
        source,
    })?;
    stage_context(dir.path(), request)?;
    let mut command = tokio::process::Command::new("docker");
    command
        .arg("build")
        .arg("--tag")
        .arg(&request.tag)
        .arg("--build-arg")
        .arg(format!("CLAUDE_VERSION={}", request.claude_version))
        .arg("--label")
        .arg("app=loop-agent-image");
    if request.no_cache {
        command.arg("--no-cache");
    }
    command
        .arg(dir.path())
        .env("BUILDKIT_PROGRESS", "plain")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(ImageError::Spawn)?;

    let progress = BuildProgress::start();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    while let Some(line) = rx.recv().await {
        progress.line(&line);
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    let status = child.wait().await.map_err(ImageError::Spawn)?;
    progress.finish();
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Failed {
            status: status.to_string(),
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        })
    }
}

/// A build's progress on the terminal: a bar of the builder's steps with the current line, or
/// the lines as they come when the output is not a terminal.
pub struct BuildProgress {
    bar: ProgressBar,
    interactive: bool,
}

impl BuildProgress {
    pub fn start() -> BuildProgress {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] step {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let interactive = !bar.is_hidden();
        BuildProgress { bar, interactive }
    }

    /// One line of the build's output.
    pub fn line(&self, line: &str) {
        if let Some((step, total)) = parse_step(line) {
            self.bar.set_length(total);
            self.bar.set_position(step);
        }
        if self.interactive {
            self.bar
                .set_message(line.chars().take(100).collect::<String>());
        } else {
            println!("{line}");
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Recognises "Step 3/12 : RUN ..." (classic builder) and "#7 [3/8] RUN ..." (BuildKit).
fn parse_step(line: &str) -> Option<(u64, u64)> {
    let fraction = if let Some(rest) = line.strip_prefix("Step ") {
        rest.split_whitespace().next()?
    } else {
        let open = line.find('[')?;
        let close = line[open..].find(']')? + open;
        line[open + 1..close].trim().rsplit(' ').next()?
    };
    let (step, total) = fraction.split_once('/')?;
    Some((step.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_build_steps() {
        assert_eq!(parse_step("Step 3/12 : RUN apt-get update"), Some((3, 12)));
        assert_eq!(parse_step("#7 [3/8] RUN npm install"), Some((3, 8)));
        assert_eq!(
            parse_step("#7 [stage-1 3/8] COPY loop /usr/local/bin"),
            Some((3, 8))
        );
        assert_eq!(parse_step("Successfully built abc"), None);
        assert_eq!(parse_step("[notes] whatever"), None);
    }

    #[test]
    fn stages_a_complete_context_and_refuses_non_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("fake-loop");
        std::fs::write(&bin, "#!/bin/sh\n").expect("write");
        let cert = dir.path().join("ca.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let context = dir.path().join("ctx");
        std::fs::create_dir(&context).expect("mkdir");
        let mut request = BuildRequest {
            tag: "t".into(),
            claude_version: "latest".into(),
            loop_binary: bin,
            ca_certs: vec![cert],
            no_cache: false,
        };
        stage_context(&context, &request).expect("stage");
        for file in [
            "Dockerfile",
            "entrypoint.sh",
            "loop",
            "ca-certificates/loop-extra-00.crt",
        ] {
            assert!(context.join(file).exists(), "{file} missing");
        }
        let bogus = dir.path().join("bogus.pem");
        std::fs::write(&bogus, "not a cert").expect("write");
        request.ca_certs = vec![bogus];
        assert!(matches!(
            stage_context(&context, &request),
            Err(ImageError::NotPem { .. })
        ));
    }
}
