//! The gate's cost per syscall, as ratios against an ungated run of the same loop.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/loop-ci/target
//! cargo bench -p loop-e2e --bench gate --profile dev   # as root, like `cargo test -p loop-gate`
//! ```
//!
//! `--profile dev` measures the supervisor as the agent image runs it (the debug `loop`).
//!
//! Measured in process, the way `loop-gate`'s own tests run a gated child: a forked child
//! installs the notify filter (`loop_gate::filter::install`) and hands the listener over the
//! handshake channel; this process serves it with a `Supervisor` and an allow-all policy (the
//! baseline plus `"default_decision": "allow"`; the paths used are under the temp dir, which no
//! baseline rule touches). The child times N calls of each kind and writes its nanoseconds per
//! call to a pipe. An ungated child (forked the same way, no filter) runs the same loops; gated
//! and ungated rounds alternate, and which goes first alternates too.
//!
//! Kinds of call:
//! - `getpid`: a syscall the filter does not trap (one pass through the BPF program);
//! - `open(O_RDONLY)` with `trap_read_opens: false`: a read-only open allowed in the kernel
//!   (the read fast path);
//! - `open(O_RDONLY)` with `trap_read_opens: true` (what the baseline policy needs): intercepted,
//!   decided by the policy in the supervisor, answered CONTINUE;
//! - `open(O_WRONLY|O_CREAT)`: intercepted and auto-allowed, the cost of every write open;
//! - `open(O_WRONLY)` of a file under an `approve` rule that a person allowed for the session:
//!   intercepted, answered from the session cache, and opened by the supervisor as the agent
//!   with the fd injected (`SECCOMP_IOCTL_NOTIF_ADDFD`): the race-free path's cost.
//!
//! Then the same in a real agent container: `docker run` of the test image (`LOOP_TEST_IMAGE`,
//! default `loop-agent:latest`) with and without `LOOP_GATE_ENABLED` (an allow-all policy file
//! bind-mounted), timing a bash loop of write opens (`: > /tmp/f`) and an empty loop. The
//! supervisor there is the image's `loop` binary, so its build profile shows in the figures.
//!
//! Modes, one row each (see [`Mode`]): ungated; gated with reads in the kernel or trapped;
//! gated without synchronous wake-ups (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` off, the
//! before/after of that flag in one run); and two bare supervisors on the same filter, the
//! floor: one answers `CONTINUE` without reading anything (with and without the flag), one
//! opens a file itself and injects it (ADDFD+SEND). The machine's load is printed before and
//! after.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it only prints how to run it.
//! Knobs: `LOOP_BENCH_ROUNDS` (default 7; the container part runs at most 5),
//! `LOOP_BENCH_CALLS` (calls per kind per round, default 20000), `LOOP_BENCH_CONTAINER=0` skips
//! the container part.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use loop_gate::channel::handshake_channel;
use loop_gate::filter::{FilterOptions, install};
use loop_gate::notify::{Supervisor, set_sync_wake_up};
use loop_gate::policy::{Policy, PolicyContext, PolicyFile};
use loop_gate::wire::{ApprovalDecision, ApprovalRequest};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe};

/// The kinds of call, in the order the child reports them.
const KINDS: [&str; 4] = [
    "getpid",
    "open(O_RDONLY)",
    "open(O_WRONLY|O_CREAT)",
    "open, session-approved",
];

/// How a child runs: without the gate, or under it with reads trapped or not, with the
/// supervisor's synchronous wake-ups (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`) on or off; or
/// under the same filter served by a bare loop that answers `CONTINUE` without reading
/// anything (the floor: the kernel's round trip to a supervisor thread and back), or that
/// answers every trapped call by opening one file itself and injecting the fd
/// (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SEND`: the floor of the race-free approved open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ungated,
    Gated {
        trap_read_opens: bool,
        sync_wake_up: bool,
    },
    Bare {
        sync_wake_up: bool,
        inject: bool,
    },
}

impl Mode {
    fn label(self) -> String {
        let sync = |on: bool| if on { "" } else { ", no sync wake-up" };
        match self {
            Mode::Ungated => "ungated".to_owned(),
            Mode::Gated {
                trap_read_opens,
                sync_wake_up,
            } => format!(
                "gated, reads {}{}",
                if trap_read_opens {
                    "trapped"
                } else {
                    "in kernel"
                },
                sync(sync_wake_up)
            ),
            Mode::Bare {
                sync_wake_up,
                inject,
            } => format!(
                "bare {}{}",
                if inject { "inject" } else { "round trip" },
                sync(sync_wake_up)
            ),
        }
    }
}

fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("gate: a benchmark; run it with `cargo bench -p loop-e2e --bench gate` (as root)");
        return Ok(());
    }
    let rounds = env_count("LOOP_BENCH_ROUNDS", 7)?;
    let calls = env_count("LOOP_BENCH_CALLS", 20_000)?;
    let dir = std::env::temp_dir().join(format!("loop-bench-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _cleanup = RemoveDir(dir.clone());
    std::fs::write(dir.join("read-me"), "x")?;
    std::fs::write(dir.join("approved-me"), "x")?;
    let policy_file = PolicyFile::from_json(
        &format!(
            r#"{{"default_decision": "allow", "file_rules": [{{"paths": ["{}"], "operations": ["write"], "decision": "approve"}}]}}"#,
            dir.join("approved-me").display()
        ),
        "bench",
    )?;
    let context = PolicyContext::new(&dir);

    let modes = [
        Mode::Ungated,
        Mode::Gated {
            trap_read_opens: false,
            sync_wake_up: true,
        },
        Mode::Gated {
            trap_read_opens: true,
            sync_wake_up: true,
        },
        Mode::Gated {
            trap_read_opens: false,
            sync_wake_up: false,
        },
        Mode::Bare {
            sync_wake_up: true,
            inject: false,
        },
        Mode::Bare {
            sync_wake_up: false,
            inject: false,
        },
        Mode::Bare {
            sync_wake_up: true,
            inject: true,
        },
    ];
    let load_before = loop_e2e::measure::load_average();
    // samples[mode][kind] = ns per call, one per round.
    let mut samples = vec![vec![Vec::new(); KINDS.len()]; modes.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..modes.len()).collect();
        order.rotate_left(round % modes.len());
        for index in order {
            let policy = Policy::compile(&policy_file, &context)?;
            let figures = run_child(modes[index], policy, &dir, calls)
                .with_context(|| format!("round {round}, {:?}", modes[index]))?;
            for (kind, ns) in figures.into_iter().enumerate() {
                samples[index][kind].push(ns);
            }
        }
    }

    let load_after = loop_e2e::measure::load_average();

    println!(
        "gate: {rounds} rounds x {calls} calls per kind; median ns per call [min-max], ratio to ungated; load {load_before} -> {load_after}"
    );
    let medians: Vec<Vec<f64>> = samples
        .iter()
        .map(|per_kind| per_kind.iter().map(|s| median(s)).collect())
        .collect();
    print!("{:<38}", "mode");
    for name in KINDS {
        print!(" {name:>32}");
    }
    println!();
    for (m, mode) in modes.iter().enumerate() {
        print!("{:<38}", mode.label());
        for kind in 0..KINDS.len() {
            let s = &samples[m][kind];
            let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let v = medians[m][kind];
            let cell = format!("{v:.0} [{lo:.0}-{hi:.0}] {:.2}x", v / medians[0][kind]);
            print!(" {cell:>32}");
        }
        println!();
    }
    let extra = |m: usize, kind: usize| (medians[m][kind] - medians[0][kind]) / 1000.0;
    println!(
        "intercepted + auto-allowed write open: {:.1}x ungated, +{:.1} us per call (without sync wake-up: +{:.1} us)",
        medians[1][2] / medians[0][2],
        extra(1, 2),
        extra(3, 2)
    );
    println!(
        "session-approved open, opened by the supervisor and injected: {:.1}x ungated, +{:.1} us per call (without sync wake-up: +{:.1} us)",
        medians[1][3] / medians[0][3],
        extra(1, 3),
        extra(3, 3)
    );
    println!(
        "intercepted read-only open (reads trapped): +{:.1} us per call",
        extra(2, 1)
    );
    println!(
        "the floor, a bare user-notify round trip (write open, CONTINUE, nothing read): +{:.1} us (without sync wake-up: +{:.1} us); opened and injected: +{:.1} us",
        extra(4, 2),
        extra(5, 2),
        extra(6, 2)
    );
    println!(
        "not intercepted: getpid {:.2}x, read-only open on the fast path {:.2}x",
        medians[1][0] / medians[0][0],
        medians[1][1] / medians[0][1]
    );
    if std::env::var("LOOP_BENCH_CONTAINER").as_deref() == Ok("0") {
        println!("container: skipped (LOOP_BENCH_CONTAINER=0)");
    } else {
        container_section(rounds.min(5), &dir)?;
    }
    Ok(())
}

/// The shell loop run in the container: N write opens (`: > f`, a trapped
/// `openat(O_WRONLY|O_CREAT|O_TRUNC)`), then N empty iterations (nothing trapped).
const CONTAINER_SCRIPT: &str = "n=20000; s=$(date +%s%N); for i in $(seq $n); do : > /tmp/f; done; \
     e=$(date +%s%N); echo $(( (e-s)/n )); s=$(date +%s%N); for i in $(seq $n); do : ; done; \
     e=$(date +%s%N); echo $(( (e-s)/n ))";

/// The same loop in a real agent container (`docker run` of the test image, with the caps the
/// runner gives), under `loop syscallwrap` with an allow-all policy file and without the gate.
/// The supervisor is the `loop` binary inside the image (`loop image build` stages the running
/// build, usually the debug one).
fn container_section(rounds: usize, dir: &Path) -> Result<()> {
    let image = loop_e2e::support::test_image();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, r#"{"default_decision": "allow"}"#)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644))?;
    }
    let run = |gated: bool| -> Result<[f64; 2]> {
        let mut cmd = std::process::Command::new("docker");
        cmd.args(["run", "--rm", "--cap-drop", "ALL"]);
        for cap in [
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "SETUID",
            "SETGID",
            "SYS_PTRACE",
            "KILL",
            "DAC_READ_SEARCH",
            "SETPCAP",
        ] {
            cmd.args(["--cap-add", cap]);
        }
        if gated {
            cmd.args([
                "-e",
                "LOOP_GATE_ENABLED=1",
                "-e",
                "LOOP_GATE_POLICY_FILE=/etc/loop/gate-policy.json",
                "-e",
                "LOOP_CHANNEL_ID=bench",
                "-e",
                "LOOP_GATE_TOKEN=bench",
                "-e",
                "API_URL=http://127.0.0.1:1",
                "-v",
            ]);
            cmd.arg(format!(
                "{}:/etc/loop/gate-policy.json:ro",
                policy.display()
            ));
        }
        cmd.args([image.as_str(), "bash", "-c", CONTAINER_SCRIPT]);
        let output = cmd.output().context("running docker")?;
        if !output.status.success() {
            bail!(
                "docker run failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let figures: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        match figures[..] {
            [write, empty] => Ok([write, empty]),
            _ => bail!("unexpected output: {text}"),
        }
    };
    let mut samples = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for gated in order {
            let [write, empty] =
                run(gated).with_context(|| format!("container round {round}, gated={gated}"))?;
            samples[usize::from(gated)][0].push(write);
            samples[usize::from(gated)][1].push(empty);
        }
    }
    let m = |g: usize, k: usize| median(&samples[g][k]);
    println!("container ({image}, {rounds} rounds, bash loop of 20000): median ns per iteration");
    println!(
        "{:<34} {:>10} {:>18}",
        "iteration", "ungated", "gated (syscallwrap)"
    );
    for (k, name) in ["`: > /tmp/f` (trapped write open)", "`:` (nothing trapped)"]
        .iter()
        .enumerate()
    {
        println!(
            "{name:<34} {:>10.0} {:>12.0} ({:.1}x)",
            m(0, k),
            m(1, k),
            m(1, k) / m(0, k)
        );
    }
    Ok(())
}

/// Forks a child that runs the timed loops in `mode`; serves its gate when there is one.
/// Returns the child's ns per call for each of [`KINDS`].
fn run_child(mode: Mode, policy: Policy, dir: &Path, calls: usize) -> Result<Vec<f64>> {
    let (sup, agent) = handshake_channel()?;
    let (read_end, write_end) = pipe()?;
    let read_path = c_path(&dir.join("read-me"))?;
    let write_path = c_path(&dir.join("write-me"))?;
    let approved_path = c_path(&dir.join("approved-me"))?;
    // SAFETY: this process is single-threaded here (the previous round's supervisor thread
    // was joined); the child only runs the timed loops and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(sup);
            drop(read_end);
            let code = (|| -> Result<i32> {
                let trap_read_opens = match mode {
                    Mode::Ungated => None,
                    Mode::Gated {
                        trap_read_opens, ..
                    } => Some(trap_read_opens),
                    Mode::Bare { .. } => Some(false),
                };
                if let Some(trap_read_opens) = trap_read_opens {
                    let fd = install(FilterOptions { trap_read_opens })?;
                    agent.send_listener(&fd, "C-bench")?;
                    drop(fd);
                    agent.wait_for_ack()?;
                }
                let figures = [
                    time_calls(calls, || {
                        // SAFETY: getpid has no arguments and cannot fail.
                        unsafe { libc::getpid() };
                        Ok(())
                    })?,
                    time_calls(calls, || open_close(&read_path, libc::O_RDONLY))?,
                    time_calls(calls, || {
                        open_close(&write_path, libc::O_WRONLY | libc::O_CREAT)
                    })?,
                    time_calls(calls, || open_close(&approved_path, libc::O_WRONLY))?,
                ];
                let line = figures.map(|f| f.to_string()).join(" ");
                let mut out = std::fs::File::from(write_end);
                writeln!(out, "{line}")?;
                Ok(0)
            })()
            .unwrap_or(100);
            // SAFETY: `_exit` skips this process's atexit handlers in the child.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(agent);
            drop(write_end);
            let serving = match mode {
                Mode::Ungated => None,
                Mode::Gated { sync_wake_up, .. } => {
                    let (listener, channel) = sup.wait_for_listener()?;
                    // A person who allows everything for the session: the first approved open
                    // asks, the rest come from the session cache.
                    let approver = |_: &ApprovalRequest| ApprovalDecision::AllowSession;
                    let supervisor =
                        Supervisor::new(policy, approver, channel).with_sync_wake_up(sync_wake_up);
                    let serving = std::thread::spawn(move || {
                        supervisor.serve(listener).map_err(anyhow::Error::from)
                    });
                    sup.ack_listener()?;
                    Some(serving)
                }
                Mode::Bare {
                    sync_wake_up,
                    inject,
                } => {
                    let (listener, _) = sup.wait_for_listener()?;
                    if sync_wake_up {
                        set_sync_wake_up(&listener)?;
                    }
                    let inject = inject.then(|| approved_path.clone());
                    let serving = std::thread::spawn(move || serve_bare(&listener, inject));
                    sup.ack_listener()?;
                    Some(serving)
                }
            };
            let mut text = String::new();
            std::fs::File::from(read_end).read_to_string(&mut text)?;
            let status = waitpid(child, None)?;
            if let Some(serving) = serving {
                match serving.join() {
                    Ok(result) => result?,
                    Err(_) => bail!("the supervisor thread panicked"),
                }
            }
            if status != WaitStatus::Exited(child, 0) {
                bail!("the child ended with {status:?}");
            }
            text.split_whitespace()
                .map(|f| f.parse::<f64>().context("the child's figures"))
                .collect()
        }
    }
}

/// The least a supervisor can do: wait, receive, answer `CONTINUE` (or open `inject` and
/// inject the fd as the call's result); until the child is gone.
fn serve_bare(listener: &OwnedFd, inject: Option<CString>) -> Result<()> {
    let fd = listener.as_raw_fd();
    // The kernel's structs may be larger than libc's; these are the kernel's sizes.
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one struct seccomp_notif_sizes to a live value.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if ret != 0 {
        bail!(
            "SECCOMP_GET_NOTIF_SIZES: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut notif = vec![0u64; usize::from(sizes.seccomp_notif).div_ceil(8).max(16)];
    let mut resp = vec![0u64; usize::from(sizes.seccomp_notif_resp).div_ceil(8).max(4)];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1, no timeout.
        if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
            continue;
        }
        if pfd.revents & libc::POLLIN == 0 {
            return Ok(()); // POLLHUP: the child is gone.
        }
        notif.fill(0);
        // SAFETY: a zeroed, 8-aligned buffer at least the kernel's struct seccomp_notif long.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, notif.as_mut_ptr()) } < 0 {
            continue;
        }
        // SAFETY: the buffer is 8-aligned, at least size_of::<seccomp_notif>() long and was
        // written by the kernel; every bit pattern is a valid seccomp_notif.
        let id = unsafe { std::ptr::read(notif.as_ptr().cast::<libc::seccomp_notif>()) }.id;
        if let Some(path) = &inject {
            // SAFETY: a valid C string; the fd is closed after the kernel copied it.
            let file = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if file >= 0 {
                // SAFETY: we own `file`; nothing else closes it.
                let file = unsafe { OwnedFd::from_raw_fd(file) };
                // ENOENT (the child is gone) and the like end the loop at the next poll.
                let _ = loop_gate::inject::send_fd(fd, id, &file, true);
                continue;
            }
        }
        let answer = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        resp.fill(0);
        // SAFETY: the buffer is 8-aligned and at least size_of::<seccomp_notif_resp>() long.
        unsafe { std::ptr::write(resp.as_mut_ptr().cast::<libc::seccomp_notif_resp>(), answer) };
        // SAFETY: an 8-aligned buffer at least the kernel's struct seccomp_notif_resp long.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, resp.as_mut_ptr()) };
    }
}

/// Runs `call` `calls` times and returns the mean ns per call.
fn time_calls(calls: usize, mut call: impl FnMut() -> Result<()>) -> Result<f64> {
    // Warm up caches and the supervisor's path lookups.
    for _ in 0..calls / 10 {
        call()?;
    }
    let start = Instant::now();
    for _ in 0..calls {
        call()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / calls as f64)
}

fn open_close(path: &CString, flags: libc::c_int) -> Result<()> {
    // SAFETY: a valid C string; the fd is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o600) };
    if fd < 0 {
        bail!("open failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened here and is closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

fn c_path(path: &Path) -> Result<CString> {
    Ok(CString::new(path.as_os_str().as_bytes())?)
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value} is not a count")),
        Err(_) => Ok(default),
    }
}

/// Removes the scratch directory when the benchmark ends.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
