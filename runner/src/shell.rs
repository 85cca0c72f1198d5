//! Terminals: an interactive shell as the agent, with a tty, in the thread's warm agent (a
//! `docker exec` in its container) or else in the channel's shell container (the same image,
//! mounts, environment and work directory as the agent, `sleep infinity` as its process, as the
//! Go Loop's shell containers), which goes when its last shell ends.
//!
//! The shell starts the way the agent does: through the image's entrypoint, which maps the
//! agent's user and then runs `loop syscallwrap -- SHELL` when the gate is on (so a program the
//! gate denies the agent is denied in the terminal too) or `gosu AGENT SHELL` when it is off.
//! The exec only tells the entrypoint what its container start already did (the docker proxy
//! runs, `CHOWN_PATHS` are handed over) and, with the proxy but without the gate, removes the
//! proxy's approval token from the shell's environment as the entrypoint does for the agent.
//!
//! A shell is ended by `SIGHUP`, as a terminal that hangs up ends one: the exec records its pid
//! in a root-only file under `/run`, and a second exec signals the shell as its own uid (a
//! container keeps no `CAP_KILL` without the gate); with the gate, the recorded pid is the
//! shell's supervisor, and its child, the shell, is signalled the same way. (The supervisor
//! would pass a SIGHUP on to the shell too, but signalling the shell itself works alike with
//! and without the gate.)

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::io::AsyncWrite;

use crate::spec::{ChannelTarget, ContainerSettings};

/// The entrypoint of loop's agent image and of every project image built on it.
pub const ENTRYPOINT: &str = "/usr/local/bin/entrypoint.sh";
/// The `TERM` a terminal's shell gets (xterm.js implements it).
pub const TERM: &str = "xterm-256color";

/// Starts the shell: records its pid, picks bash (else sh) as a login shell and hands over to
/// the entrypoint, as `sh -c SCRIPT loop-terminal MARKER`.
const START_SCRIPT: &str = r#"marker=$1
echo "$$" >"/run/loop-terminal-$marker.pid"
if [ "${LOOP_GATE_ENABLED:-}" != 1 ]; then unset LOOP_GATE_TOKEN; fi
export LOOP_DOCKERPROXY_ENABLED=0 CHOWN_PATHS=
if command -v bash >/dev/null 2>&1; then
    exec "$0" bash -l
fi
exec "$0" sh -l
"#;

/// Ends the shell of `MARKER` (see the module docs), as `sh -c SCRIPT loop-terminal MARKER`.
/// With the gate, the recorded pid is the supervisor (root): its child, the shell, is
/// signalled directly, as a shell without the gate is.
const HANGUP_SCRIPT: &str = r#"file="/run/loop-terminal-$1.pid"
[ -f "$file" ] || exit 0
pid=$(cat "$file")
rm -f "$file"
case "$pid" in '' | *[!0-9]*) exit 0 ;; esac
uid_of() { awk '/^Uid:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
hang_up() {
    uid=$(uid_of "$1")
    case "$uid" in
        '') ;;
        0) kill -HUP "$1" ;;
        *) gosu "$uid" kill -HUP "$1" ;;
    esac
}
if [ "$(uid_of "$pid")" != 0 ]; then
    hang_up "$pid"
    exit 0
fi
for stat in /proc/[0-9]*/stat; do
    child=${stat#/proc/}
    child=${child%/stat}
    parent=$(awk '{ sub(/^.*\) /, ""); print $2 }' "$stat" 2>/dev/null)
    if [ "$parent" = "$pid" ]; then hang_up "$child"; fi
done
"#;

pub use loop_wire::terminal::TerminalSize;

/// A shell to open for a channel.
#[derive(Debug, Clone)]
pub struct ShellRequest {
    /// The channel (and its work directory) the shell is for.
    pub target: ChannelTarget,
    /// The container settings a shell container gets (a warm agent keeps its own).
    pub settings: ContainerSettings,
    pub size: TerminalSize,
}

/// Which container a shell runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellHost {
    /// The thread's warm agent.
    WarmAgent,
    /// The channel's shell container.
    ShellContainer,
}

/// A running shell, as the runner knows it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellHandle {
    /// The exec (or the backend's own id).
    pub id: String,
    pub container_id: String,
    pub container_name: String,
    pub channel_id: String,
    pub host: ShellHost,
    /// Names the shell's pid file in the container.
    pub(crate) marker: String,
}

impl ShellHandle {
    /// A handle for backends other than Docker, which know their shells by `id` alone.
    pub fn new(
        id: impl Into<String>,
        container_name: impl Into<String>,
        channel_id: impl Into<String>,
        host: ShellHost,
    ) -> ShellHandle {
        let id = id.into();
        ShellHandle {
            container_id: id.clone(),
            marker: id.clone(),
            id,
            container_name: container_name.into(),
            channel_id: channel_id.into(),
            host,
        }
    }
}

/// The tty's output, as bytes; it ends when the shell exits.
pub type ShellOutput = BoxStream<'static, Result<Bytes, ShellError>>;
/// The tty's input.
pub type ShellInput = Pin<Box<dyn AsyncWrite + Send>>;

/// An opened shell: its handle and its tty.
pub struct OpenShell {
    pub handle: ShellHandle,
    pub output: ShellOutput,
    pub input: ShellInput,
}

/// Why a shell could not be opened or driven.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("this runner has no terminals")]
    Unsupported,
    /// The shell container could not start (the runner's error, as text: this module sits
    /// below the runner).
    #[error("cannot start the shell container: {0}")]
    Container(String),
    #[error("docker {call} failed: {source}")]
    Docker {
        call: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

impl ShellError {
    pub(crate) fn docker(call: &'static str) -> impl FnOnce(bollard::errors::Error) -> ShellError {
        move |source| ShellError::Docker { call, source }
    }
}

/// The shells open in each shell container, so the last one to end removes it.
#[derive(Clone, Default)]
pub(crate) struct ShellBook {
    open: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    /// One opening or closing at a time per channel, so a shell never starts in a shell
    /// container its channel's last closing shell is removing.
    channels: Arc<tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl ShellBook {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn channel_lock(&self, channel: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.channels
            .lock()
            .await
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn has_shells(&self, container: &str) -> bool {
        self.lock().get(container).is_some_and(|s| !s.is_empty())
    }

    pub(crate) fn opened(&self, container: &str, shell: &str) {
        self.lock()
            .entry(container.to_owned())
            .or_default()
            .insert(shell.to_owned());
    }

    /// Forgets a shell; true when it was its container's last.
    pub(crate) fn closed(&self, container: &str, shell: &str) -> bool {
        let mut open = self.lock();
        let Some(shells) = open.get_mut(container) else {
            return true;
        };
        shells.remove(shell);
        if shells.is_empty() {
            open.remove(container);
            true
        } else {
            false
        }
    }
}

/// The exec that runs a terminal's shell through the entrypoint (see [`START_SCRIPT`]).
pub fn shell_exec(marker: &str, work_dir: &std::path::Path) -> CreateExecOptions<String> {
    CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(true),
        // The entrypoint maps the user and drops privileges itself.
        user: Some("0".to_owned()),
        working_dir: Some(work_dir.display().to_string()),
        env: Some(vec![
            format!("TERM={TERM}"),
            "COLORTERM=truecolor".to_owned(),
        ]),
        cmd: Some(
            ["/bin/sh", "-c", START_SCRIPT, ENTRYPOINT, marker]
                .map(str::to_owned)
                .to_vec(),
        ),
        ..Default::default()
    }
}

/// Runs `HANGUP_SCRIPT` for `marker` in `container`, detached.
pub(crate) async fn hang_up(docker: &Docker, container: &str, marker: &str) {
    let exec = CreateExecOptions {
        user: Some("0".to_owned()),
        cmd: Some(
            ["/bin/sh", "-c", HANGUP_SCRIPT, "loop-terminal", marker]
                .map(str::to_owned)
                .to_vec(),
        ),
        ..Default::default()
    };
    let started = match docker.create_exec(container, exec).await {
        Ok(created) => {
            docker
                .start_exec(
                    &created.id,
                    Some(StartExecOptions {
                        detach: true,
                        ..Default::default()
                    }),
                )
                .await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = started {
        tracing::debug!(container = %container, error = %err, "cannot hang up a terminal's shell (its container is gone?)");
    }
}

/// A random name for a shell's pid file.
pub(crate) fn new_marker() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

/// The output of an exec with a tty, as bytes.
pub(crate) fn tty_bytes(
    item: Result<LogOutput, bollard::errors::Error>,
) -> Result<Bytes, ShellError> {
    match item {
        Ok(
            LogOutput::Console { message }
            | LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::StdIn { message },
        ) => Ok(message),
        Err(source) => Err(ShellError::Docker {
            call: "exec output",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_goes_through_the_entrypoint_as_root_with_a_tty() {
        let exec = shell_exec("m1", std::path::Path::new("/src/app"));
        assert_eq!(exec.tty, Some(true));
        assert_eq!(exec.user.as_deref(), Some("0"));
        assert_eq!(exec.working_dir.as_deref(), Some("/src/app"));
        let cmd = exec.cmd.expect("cmd");
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        assert_eq!(cmd[3..], [ENTRYPOINT, "m1"]);
        assert!(
            exec.env
                .expect("env")
                .contains(&"TERM=xterm-256color".to_owned())
        );
    }

    /// The start script, run by a real `sh` with a stand-in entrypoint that prints what it
    /// was given: the pid file, the shell, and the token only with the gate.
    #[test]
    fn the_start_script_hands_the_entrypoint_a_login_shell_and_no_token_without_the_gate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join("entry.sh");
        std::fs::write(
            &entry,
            "#!/bin/sh\necho \"args=$*\"\necho \"token=${LOOP_GATE_TOKEN-unset}\"\necho \"proxy=$LOOP_DOCKERPROXY_ENABLED chown=[$CHOWN_PATHS]\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        // /run is root's in the image; here the script's pid file goes to a scratch copy.
        let script = START_SCRIPT.replace("/run/", &format!("{}/", dir.path().display()));
        let run = |gate: &str| {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .arg(&entry)
                .arg("m2")
                .env("LOOP_GATE_ENABLED", gate)
                .env("LOOP_GATE_TOKEN", "secret")
                .env("LOOP_DOCKERPROXY_ENABLED", "1")
                .env("CHOWN_PATHS", "/a:/b")
                .output()
                .expect("sh");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let gated = run("1");
        assert!(gated.contains("token=secret"), "{gated}");
        assert!(gated.contains("proxy=0 chown=[]"), "{gated}");
        let shell = if std::path::Path::new("/bin/bash").exists() {
            "bash"
        } else {
            "sh"
        };
        assert!(gated.contains(&format!("args={shell} -l")), "{gated}");
        let ungated = run("");
        assert!(ungated.contains("token=unset"), "{ungated}");
        let pid = std::fs::read_to_string(dir.path().join("loop-terminal-m2.pid")).expect("pid");
        assert!(pid.trim().parse::<u32>().is_ok(), "{pid:?}");
    }

    #[test]
    fn the_last_shell_of_a_container_is_known() {
        let book = ShellBook::default();
        book.opened("c1", "a");
        book.opened("c1", "b");
        assert!(!book.closed("c1", "a"));
        assert!(book.closed("c1", "b"));
        assert!(book.closed("c1", "b"), "an unknown container has no shells");
    }
}
