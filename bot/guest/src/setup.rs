//! `loop setup -- CMD...`: a project's setup commands (a devcontainer.json's
//! `onCreateCommand`, `updateContentCommand`, `postCreateCommand`), once per container, then
//! the agent.
//!
//! Setup runs here, inside the container and in front of the agent, rather than from the
//! host through `docker exec`: it then runs as the agent (after `gosu`, or inside
//! `loop syscallwrap`, so the gate's policy holds for it as for the agent), in the project
//! directory, with the image, mounts and environment the agent gets, and it needs no second
//! Docker call per turn. A warm agent keeps its container, so it keeps the setup's result.
//!
//! Each output line of a step becomes one stream-json line on stdout
//! ([`loop_wire::setup::SetupReport`]), which the runner reads with the agent's own events,
//! so the thread's status shows the setup as it goes. The first step that fails is reported
//! with the tail of its output and the remaining steps are skipped, as the Dev Container spec
//! does. Then, whatever happened, this process `exec`s CMD: the agent always runs, and can be
//! asked to fix a broken setup.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use loop_wire::container::env;
use loop_wire::setup::{SetupCommand, SetupReport, SetupStep};

/// Longest output line reported, in bytes: the rest of a longer line is dropped, so a command
/// that prints without newlines cannot grow loop's memory.
pub const MAX_LINE_BYTES: usize = 2048;
/// How many of a failed step's last lines its report carries.
pub const TAIL_LINES: usize = 20;
/// The exit status reported for a command that could not be started (the shell's own).
pub const CANNOT_START: i32 = 127;
/// The Dev Container spec runs a string command with `/bin/sh -c`.
const SHELL: &str = "/bin/sh";
/// How long a finished command's output may still be read: a process it left in the
/// background may hold its pipes open for good.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Exit status when CMD cannot be executed.
const EXEC_FAILED: i32 = 126;

/// Where reports go: stdout in the container, a list in tests.
pub type Sink = Arc<dyn Fn(SetupReport) + Send + Sync>;

/// A step that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step's name; `step/entry` for one of a parallel step's commands.
    pub name: String,
    pub exit_code: i32,
    /// The last [`TAIL_LINES`] lines of its output, oldest first.
    pub tail: String,
}

/// Runs the steps in `$LOOP_SETUP`, then execs `command`. Returns only when that exec failed,
/// with the exit status to use.
pub fn run(command: &[OsString]) -> i32 {
    let sink: Sink = Arc::new(write_report);
    if let Ok(json) = std::env::var(env::SETUP) {
        match serde_json::from_str::<Vec<SetupStep>>(&json) {
            Ok(steps) => {
                run_steps(&steps, &sink);
            }
            Err(err) => sink(SetupReport::Failed {
                name: env::SETUP.to_owned(),
                exit_code: 2,
                tail: format!("the setup steps cannot be read: {err}"),
            }),
        }
    }
    exec(command)
}

/// Runs `steps` in order, reporting each output line; stops at the first that fails, reports
/// it and returns it.
pub fn run_steps(steps: &[SetupStep], sink: &Sink) -> Option<Failure> {
    for step in steps {
        if let Err(failure) = run_command(&step.name, &step.command, sink) {
            sink(SetupReport::Failed {
                name: failure.name.clone(),
                exit_code: failure.exit_code,
                tail: failure.tail.clone(),
            });
            return Some(failure);
        }
    }
    None
}

fn run_command(name: &str, command: &SetupCommand, sink: &Sink) -> Result<(), Failure> {
    match command {
        SetupCommand::Shell(line) => {
            let mut cmd = Command::new(SHELL);
            cmd.arg("-c").arg(line);
            run_process(name, cmd, sink)
        }
        SetupCommand::Argv(argv) => match argv.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                run_process(name, cmd, sink)
            }
            None => Err(Failure {
                name: name.to_owned(),
                exit_code: CANNOT_START,
                tail: "an empty command".to_owned(),
            }),
        },
        SetupCommand::Parallel(entries) => {
            // All of them run to their end; the first failure (in the entries' order) is the
            // step's.
            let results: Vec<Result<(), Failure>> = std::thread::scope(|scope| {
                let handles: Vec<_> = entries
                    .iter()
                    .map(|(key, entry)| {
                        let name = format!("{name}/{key}");
                        scope.spawn(move || run_command(&name, entry, sink))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle.join().unwrap_or_else(|_| {
                            Err(Failure {
                                name: name.to_owned(),
                                exit_code: CANNOT_START,
                                tail: "loop setup: a parallel command's thread panicked".into(),
                            })
                        })
                    })
                    .collect()
            });
            results.into_iter().collect()
        }
    }
}

/// The output lines a command printed, both streams, the last [`TAIL_LINES`] of them.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// Runs one process with no stdin, streaming its output line by line. stdout and stderr share
/// one pipe, as `2>&1` would, so its lines (and the tail) keep the order it wrote them in.
fn run_process(name: &str, mut cmd: Command, sink: &Sink) -> Result<(), Failure> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let cannot = |what: &str, err: std::io::Error| Failure {
        name: name.to_owned(),
        exit_code: CANNOT_START,
        tail: format!("cannot {what} {program}: {err}"),
    };
    let (reader, writer) = std::io::pipe().map_err(|err| cannot("start", err))?;
    let writer_copy = writer.try_clone().map_err(|err| cannot("start", err))?;
    cmd.stdin(Stdio::null()).stdout(writer_copy).stderr(writer);
    let spawned = cmd.spawn();
    // The command holds the pipe's write ends: without dropping it, the pipe never ends.
    drop(cmd);
    let mut child = spawned.map_err(|err| cannot("start", err))?;
    let tail: Tail = Arc::default();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (thread_name, thread_sink, thread_tail) = (name.to_owned(), sink.clone(), tail.clone());
    // Not joined: a process the command left in the background may keep the pipe open after
    // the command ended (see DRAIN_GRACE); the thread ends with this process when the agent
    // is exec'd.
    std::thread::spawn(move || {
        stream_lines(reader, &thread_name, &thread_sink, &thread_tail);
        let _ = done_tx.send(());
    });
    let status = child.wait().map_err(|err| cannot("wait for", err))?;
    let _ = done_rx.recv_timeout(DRAIN_GRACE);
    let exit_code = exit_code(status);
    if exit_code == 0 {
        return Ok(());
    }
    let tail = tail
        .lock()
        .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    Err(Failure {
        name: name.to_owned(),
        exit_code,
        tail,
    })
}

/// The status as a shell reports it: the code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// Reports every non-blank line of `pipe` and keeps the last ones in `tail`.
fn stream_lines(pipe: impl Read, name: &str, sink: &Sink, tail: &Tail) {
    let mut reader = BufReader::new(pipe);
    while let Some(line) = read_capped_line(&mut reader, MAX_LINE_BYTES) {
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(mut lines) = tail.lock() {
            if lines.len() == TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        sink(SetupReport::Line {
            name: name.to_owned(),
            line,
        });
    }
}

/// The next line without its `\n` (or `\r\n`), at most `cap` bytes of it followed by `…`
/// when it was longer; the rest of a longer line is read and dropped, never kept. `None` at
/// the end of the stream.
pub fn read_capped_line(reader: &mut impl BufRead, cap: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut truncated = false;
    let mut any = false;
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if buffer.is_empty() {
            break;
        }
        any = true;
        let newline = buffer.iter().position(|b| *b == b'\n');
        let body = &buffer[..newline.unwrap_or(buffer.len())];
        let room = cap.saturating_sub(line.len());
        truncated |= body.len() > room;
        line.extend_from_slice(&body[..body.len().min(room)]);
        let used = body.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !any {
        return None;
    }
    if line.last() == Some(&b'\r') && !truncated {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if truncated {
        text.push('…');
    }
    Some(text)
}

/// One report as one line on stdout, the agent's stream-json channel.
fn write_report(report: SetupReport) {
    let Ok(mut line) = serde_json::to_string(&report.as_line()) else {
        return;
    };
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Replaces this process with `command`, without the setup's variable.
fn exec(command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("loop setup: no command after --");
        return EXEC_FAILED;
    };
    let err = Command::new(program)
        .args(args)
        .env_remove(env::SETUP)
        .exec();
    eprintln!(
        "loop setup: cannot run {}: {err}",
        program.to_string_lossy()
    );
    EXEC_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that keeps the reports.
    fn collect() -> (Sink, Arc<Mutex<Vec<SetupReport>>>) {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let kept = reports.clone();
        let sink: Sink = Arc::new(move |report| kept.lock().expect("reports").push(report));
        (sink, reports)
    }

    fn lines_of(reports: &[SetupReport], name: &str) -> Vec<String> {
        reports
            .iter()
            .filter_map(|r| match r {
                SetupReport::Line { name: n, line } if n == name => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    fn shell(name: &str, line: &str) -> SetupStep {
        SetupStep {
            name: name.to_owned(),
            command: SetupCommand::Shell(line.to_owned()),
        }
    }

    #[test]
    fn lines_are_capped_and_the_rest_of_a_long_line_dropped() {
        let long = "x".repeat(10 * MAX_LINE_BYTES);
        let input = format!("short\r\n{long}\nafter\nlast");
        let mut reader = BufReader::with_capacity(64, input.as_bytes());
        let mut lines = Vec::new();
        while let Some(line) = read_capped_line(&mut reader, MAX_LINE_BYTES) {
            lines.push(line);
        }
        assert_eq!(
            lines.len(),
            4,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "short");
        assert_eq!(lines[1], format!("{}…", "x".repeat(MAX_LINE_BYTES)));
        assert_eq!(lines[2], "after");
        assert_eq!(lines[3], "last");
    }

    #[test]
    fn steps_report_their_lines_and_a_failure_stops_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let steps = vec![
            shell("onCreateCommand", "echo one; echo two >&2"),
            SetupStep {
                name: "updateContentCommand".into(),
                command: SetupCommand::Argv(vec!["sh".into(), "-c".into(), "echo argv $0".into()]),
            },
            shell(
                "postCreateCommand",
                "for i in $(seq 1 30); do echo line$i; done; echo broken >&2; exit 3",
            ),
            shell("postStartCommand", &format!("touch {}", marker.display())),
        ];
        let (sink, reports) = collect();
        let failure = run_steps(&steps, &sink).expect("the third step fails");
        assert_eq!(failure.name, "postCreateCommand");
        assert_eq!(failure.exit_code, 3);
        let tail: Vec<&str> = failure.tail.lines().collect();
        assert_eq!(tail.len(), TAIL_LINES, "{tail:?}");
        assert_eq!(tail[0], "line12");
        assert_eq!(tail[TAIL_LINES - 1], "broken");
        assert!(!marker.exists(), "the steps after a failure are skipped");

        let reports = reports.lock().expect("reports");
        let mut first = lines_of(&reports, "onCreateCommand");
        first.sort();
        assert_eq!(first, ["one", "two"]);
        assert_eq!(lines_of(&reports, "updateContentCommand"), ["argv sh"]);
        assert_eq!(lines_of(&reports, "postCreateCommand").len(), 31);
        assert_eq!(
            reports.last(),
            Some(&SetupReport::Failed {
                name: "postCreateCommand".into(),
                exit_code: 3,
                tail: failure.tail.clone(),
            })
        );
    }

    #[test]
    fn a_command_that_cannot_start_or_is_killed_fails() {
        let (sink, _) = collect();
        let missing = SetupStep {
            name: "postCreateCommand".into(),
            command: SetupCommand::Argv(vec!["/nonexistent/tool".into()]),
        };
        let failure = run_steps(&[missing], &sink).expect("fails");
        assert_eq!(failure.exit_code, CANNOT_START);
        assert!(failure.tail.contains("/nonexistent/tool"), "{failure:?}");

        let killed = run_steps(&[shell("postCreateCommand", "kill -9 $$")], &sink).expect("killed");
        assert_eq!(killed.exit_code, 128 + 9);

        assert_eq!(
            run_steps(&[shell("postCreateCommand", "true")], &sink),
            None
        );
    }

    #[test]
    fn parallel_commands_run_at_once_and_any_failure_fails_the_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        // Each waits for the other's file: they finish only when both run at the same time.
        let wait_for = |mine: &std::path::Path, other: &std::path::Path| {
            SetupCommand::Shell(format!(
                "touch {}; for i in $(seq 1 100); do [ -e {} ] && echo saw-it && exit 0; sleep 0.05; done; exit 1",
                mine.display(),
                other.display()
            ))
        };
        let together = SetupStep {
            name: "postCreateCommand".into(),
            command: SetupCommand::Parallel(
                [
                    ("a".to_owned(), wait_for(&a, &b)),
                    ("b".to_owned(), wait_for(&b, &a)),
                ]
                .into(),
            ),
        };
        let (sink, reports) = collect();
        assert_eq!(run_steps(&[together], &sink), None);
        let reports = reports.lock().expect("reports").clone();
        assert_eq!(lines_of(&reports, "postCreateCommand/a"), ["saw-it"]);
        assert_eq!(lines_of(&reports, "postCreateCommand/b"), ["saw-it"]);

        let one_fails = SetupStep {
            name: "postCreateCommand".into(),
            command: SetupCommand::Parallel(
                [
                    ("fine".to_owned(), SetupCommand::Shell("echo fine".into())),
                    (
                        "npm".to_owned(),
                        SetupCommand::Shell("echo 'npm ERR! missing' >&2; exit 1".into()),
                    ),
                ]
                .into(),
            ),
        };
        let (sink, _) = collect();
        let failure = run_steps(&[one_fails], &sink).expect("fails");
        assert_eq!(failure.name, "postCreateCommand/npm");
        assert_eq!(failure.exit_code, 1);
        assert_eq!(failure.tail, "npm ERR! missing");
    }

    #[test]
    fn a_command_leaving_a_process_behind_does_not_hold_setup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, late) = (dir.path().join("pid"), dir.path().join("late"));
        let (sink, reports) = collect();
        // The background subshell holds the command's output pipe open for 20 s.
        let failure = run_steps(
            &[shell(
                "postCreateCommand",
                &format!(
                    "(sleep 20; touch {}) & echo $! > {}; echo started",
                    late.display(),
                    pid_file.display()
                ),
            )],
            &sink,
        );
        assert_eq!(failure, None);
        assert!(
            !late.exists(),
            "setup went on while the background process still ran"
        );
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        assert_eq!(
            lines_of(&reports.lock().expect("reports"), "postCreateCommand"),
            ["started"]
        );
    }
}
