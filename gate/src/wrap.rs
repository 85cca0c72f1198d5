//! `loop syscallwrap -- CMD ARGS`: the container entrypoint's gate.
//!
//! The entrypoint runs `loop syscallwrap -- claude ...` as root. [`run_syscallwrap`] (the
//! parent, staying uid 0 so the agent cannot signal it) then:
//!
//! 1. loads the policy from `LOOP_GATE_POLICY_FILE` (a broken policy refuses to start the
//!    agent rather than running it ungated);
//! 2. creates the handshake socketpair ([`crate::channel`]) and re-execs `/proc/self/exe`
//!    with `LOOP_SYSCALLWRAP_MODE=child` as the agent uid/gid, the socket on fd 3,
//!    `PR_SET_PDEATHSIG=SIGKILL`, and without `LOOP_GATE_TOKEN` in its environment;
//! 3. drops every capability but [`KEPT_CAPS`] (`CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`,
//!    `CAP_SETUID`, `CAP_SETGID`, `CAP_KILL`), from the bounding set first, then the
//!    permitted, effective and inheritable sets;
//! 4. receives the listener, starts the supervisor thread, acks, and reaps children until the
//!    agent exits, passing `docker stop`'s SIGTERM (and SIGINT, SIGHUP, SIGQUIT) on to it;
//!    returns its exit code (128 + signal when killed).
//!
//! [`run_syscallwrap_child`] (the child, as the agent user) sets `PDEATHSIG` again, checks its
//! parent is still the one that started it, installs the filter
//! ([`crate::filter::install`]: `no_new_privs`, `NEW_LISTENER | TSYNC`), sends the listener and
//! `LOOP_CHANNEL_ID` over fd 3, waits for the ack and execs the command. The filter is inherited
//! by every descendant, and the agent cannot remove it.
//!
//! Capabilities are per thread: call [`run_syscallwrap`] before any other thread exists (no
//! tokio runtime yet). Threads created afterwards, such as an approver's runtime, inherit the
//! reduced set.

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::channel::{AgentSender, ChannelError, handshake_channel};
use crate::filter::{FilterError, FilterOptions};
use crate::notify::{Approver, AuditSink, DEFAULT_MAX_PENDING, Supervisor};
use crate::policy::{DEFAULT_POLICY_PATH, Policy, PolicyContext, PolicyError};

/// The agent user's name (checked first), as set by the image's entrypoint.
pub use loop_wire::container::env::AGENT_USER as AGENT_USER_ENV;
/// The chat channel the container works for; sent in the handshake and in approvals.
pub use loop_wire::container::env::CHANNEL_ID as CHANNEL_ID_ENV;
/// The policy file (default [`DEFAULT_POLICY_PATH`]).
pub use loop_wire::container::env::GATE_POLICY_FILE as POLICY_FILE_ENV;
/// The approval bearer token; removed from the agent's environment.
pub use loop_wire::container::env::GATE_TOKEN as GATE_TOKEN_ENV;
/// The project directory: the gate's workspace and the agent's working directory. Set by
/// loop's runner; never taken from the supervisor's cwd, which is whatever the container's
/// was.
pub use loop_wire::container::env::GATE_WORKSPACE as WORKSPACE_ENV;
/// The host user's name, which the entrypoint maps the agent to (Loop's name).
pub use loop_wire::container::env::HOST_USER as HOST_USER_ENV;
/// Set to `child` in the re-exec'd agent side.
pub use loop_wire::container::env::SYSCALLWRAP_MODE as MODE_ENV;
/// Parent to child: `1` to trap read-only opens, `0` for the in-kernel fast path.
const TRAP_READS_ENV: &str = "LOOP_SYSCALLWRAP_TRAP_READS";
/// Parent to child: the parent's pid, to detect a parent that died before `PDEATHSIG` was set.
const PARENT_PID_ENV: &str = "LOOP_SYSCALLWRAP_PARENT";
/// The fd the child finds its end of the handshake on.
pub const CHILD_SOCKET_FD: RawFd = 3;

/// Capabilities the parent keeps while it supervises: SYS_PTRACE reads the agent's arguments,
/// DAC_READ_SEARCH resolves paths in the agent's 0700 home, SETUID and SETGID let an open the
/// supervisor performs for the agent take the agent's fsuid, fsgid and groups
/// ([`crate::inject`]), and KILL passes the container's stop signal on to the agent
/// ([`forward_signals_to`]): kill(2) from uid 0 to another uid needs it, and without it
/// `docker stop` always ended in SIGKILL at its timeout. KILL adds nothing to what the kept
/// set already allows over the agent: SYS_PTRACE can stop it or make it run anything. It
/// does reach the container's other root processes (the docker proxy), which the supervisor,
/// uid 0 like them, could signal without it. The agent (another uid, no_new_privs) can gain
/// none of them.
const KEPT_CAPS: [Capability; 5] = [
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// Errors of `syscallwrap`, parent and child.
#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    /// No command after `--`.
    #[error("syscallwrap needs a command to run")]
    EmptyCommand,
    /// The policy could not be loaded; the agent is not started.
    #[error("cannot load the gate policy")]
    Policy(#[from] PolicyError),
    /// Neither `AGENT_USER` nor `HOST_USER` is set.
    #[error("no agent user: set {AGENT_USER_ENV} or {HOST_USER_ENV}")]
    NoAgentUser,
    /// The user is not in the password database.
    #[error("unknown agent user {name}")]
    UnknownUser {
        /// The name looked up.
        name: String,
    },
    /// The password database lookup failed.
    #[error("cannot look up agent user {name}")]
    UserLookup {
        /// The name looked up.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The handshake failed.
    #[error("gate handshake failed")]
    Channel(#[from] ChannelError),
    /// The child could not be started.
    #[error("cannot start the agent side {program}")]
    Spawn {
        /// What was executed.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A capability operation failed.
    #[error("cannot {step} capabilities")]
    Capabilities {
        /// Which step (`drop bounding`, `set permitted`, ...).
        step: &'static str,
        /// Why.
        #[source]
        source: caps::errors::CapsError,
    },
    /// The supervisor thread could not be started.
    #[error("cannot start the supervisor thread")]
    SupervisorThread(#[source] std::io::Error),
    /// Waiting for the agent failed.
    #[error("cannot wait for the agent (pid {pid})")]
    Wait {
        /// The agent side's pid.
        pid: i32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The filter could not be installed (child).
    #[error("cannot install the gate filter")]
    Filter(#[from] FilterError),
    /// fd 3 is not the handshake socket (child).
    #[error("fd {fd} is not the syscallwrap handshake socket")]
    NotASocket {
        /// The fd checked.
        fd: RawFd,
    },
    /// The parent died before the child could take over (child).
    #[error("syscallwrap parent {expected} is gone (parent is now {actual})")]
    ParentGone {
        /// The pid the parent announced.
        expected: i32,
        /// `getppid()` now.
        actual: i32,
    },
    /// `prctl(PR_SET_PDEATHSIG)` failed (child).
    #[error("cannot set the parent-death signal")]
    DeathSignal(#[source] std::io::Error),
    /// exec of the command failed (child).
    #[error("cannot run {program:?}")]
    Exec {
        /// The program.
        program: OsString,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The user the agent runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUser {
    /// Its login name, when known.
    pub name: Option<String>,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory (`~` in policy patterns).
    pub home: PathBuf,
}

impl AgentUser {
    /// Looks `name` up in the password database (`/etc/passwd` in the image).
    pub fn lookup(name: &str) -> Result<AgentUser, WrapError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|source| WrapError::UserLookup {
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(|| WrapError::UnknownUser {
                name: name.to_owned(),
            })?;
        Ok(AgentUser {
            name: Some(user.name),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        })
    }

    /// Looks up `AGENT_USER`, or else `HOST_USER`.
    pub fn from_env() -> Result<AgentUser, WrapError> {
        let name = std::env::var(AGENT_USER_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var(HOST_USER_ENV).ok().filter(|n| !n.is_empty()))
            .ok_or(WrapError::NoAgentUser)?;
        AgentUser::lookup(&name)
    }
}

/// Everything the parent needs.
#[derive(Debug, Clone)]
pub struct WrapConfig {
    /// The policy file.
    pub policy_file: PathBuf,
    /// Who the agent runs as.
    pub agent: AgentUser,
    /// `LOOP_CHANNEL_ID`.
    pub channel_id: String,
    /// The project directory (`LOOP_GATE_WORKSPACE`), for relative patterns and the `rm -r`
    /// guard; the agent starts there.
    pub workspace: Option<PathBuf>,
    /// `None`: trap read-only opens exactly when the policy needs it
    /// ([`FilterOptions::for_policy`]).
    pub filter: Option<FilterOptions>,
    /// Approvals pending at once before further ones are denied.
    pub max_pending: usize,
    /// What to re-exec for the child (`/proc/self/exe`).
    pub exe: PathBuf,
    /// Arguments of the re-exec; the default is this process's own arguments, so the child
    /// sees `syscallwrap -- CMD ARGS` too.
    pub exe_args: Vec<OsString>,
    /// Drop capabilities after the spawn (always true in production; tests that run in a
    /// process that must keep them set it to false).
    pub drop_capabilities: bool,
}

impl WrapConfig {
    /// Reads `LOOP_GATE_POLICY_FILE`, `AGENT_USER`/`HOST_USER`, `LOOP_CHANNEL_ID` and
    /// `LOOP_GATE_WORKSPACE` (only an absolute path counts).
    pub fn from_env() -> Result<WrapConfig, WrapError> {
        Ok(WrapConfig {
            policy_file: std::env::var_os(POLICY_FILE_ENV)
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_POLICY_PATH), PathBuf::from),
            agent: AgentUser::from_env()?,
            channel_id: std::env::var(CHANNEL_ID_ENV).unwrap_or_default(),
            workspace: workspace_of(std::env::var_os(WORKSPACE_ENV)),
            filter: None,
            max_pending: DEFAULT_MAX_PENDING,
            exe: PathBuf::from("/proc/self/exe"),
            exe_args: std::env::args_os().skip(1).collect(),
            drop_capabilities: true,
        })
    }
}

/// The workspace from `LOOP_GATE_WORKSPACE`: an absolute path, or none. Never the cwd: the
/// container's cwd says nothing about the project (it was `/` for a long time).
fn workspace_of(value: Option<OsString>) -> Option<PathBuf> {
    value.map(PathBuf::from).filter(|dir| dir.is_absolute())
}

/// Whether this process is the re-exec'd agent side.
pub fn is_child_mode() -> bool {
    std::env::var_os(MODE_ENV).is_some_and(|v| v == "child")
}

/// The agent's pid, for the signal forwarder; 0 once it is reaped (its pid may then be
/// another process's).
static AGENT_PID: AtomicI32 = AtomicI32::new(0);
/// Whether a forwarded signal has failed already: the failure is reported once.
static FORWARD_FAILED: AtomicBool = AtomicBool::new(false);

extern "C" fn forward_signal(signal: libc::c_int) {
    // The handler may interrupt code between a failed call and its errno check.
    let saved_errno = Errno::last_raw();
    let pid = AGENT_PID.load(Ordering::SeqCst);
    // SAFETY: kill(2) is async-signal-safe and takes no pointers.
    if pid > 0 && unsafe { libc::kill(pid, signal) } < 0 {
        let errno = Errno::last_raw();
        if !FORWARD_FAILED.swap(true, Ordering::SeqCst) {
            let mut line = SignalSafeLine::new();
            line.push(b"loop syscallwrap: cannot pass signal ");
            line.push_number(signal);
            line.push(b" on to the agent (pid ");
            line.push_number(pid);
            line.push(b"): errno ");
            line.push_number(errno);
            line.push(b"\n");
            line.write_to_stderr();
        }
    }
    Errno::set_raw(saved_errno);
}

/// As the container's pid 1 the parent gets `docker stop`'s SIGTERM; pass it on to the agent
/// instead of ignoring it (pid 1 has no default signal actions). Only the agent gets it, as a
/// terminal's Ctrl-C or `kill` would reach the CLI and not the commands it runs: what the
/// agent's own children do is the agent's business, and when the agent exits this process
/// (pid 1) returns, and the kernel kills whatever is left in the container's pid namespace.
///
/// A failure cannot be logged through `tracing` from a signal handler, and waiting for the
/// agent to exit to log it could mean never (the engine's SIGKILL follows at the stop
/// timeout), so the handler writes one line to stderr, the first time only.
fn forward_signals_to(pid: i32) {
    AGENT_PID.store(pid, Ordering::SeqCst);
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: the handler only calls kill(2) and write(2) and touches atomics and a
        // buffer on its own stack, which is async-signal-safe.
        unsafe { libc::signal(signal, forward_signal as *const () as libc::sighandler_t) };
    }
}

/// One line of text built without allocating, for a signal handler.
struct SignalSafeLine {
    buf: [u8; 128],
    len: usize,
}

impl SignalSafeLine {
    fn new() -> SignalSafeLine {
        SignalSafeLine {
            buf: [0; 128],
            len: 0,
        }
    }

    /// Appends what fits; the rest is cut.
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i32) {
        if n < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut rest = n.unsigned_abs();
        loop {
            i -= 1;
            // Truncation is intended: a single decimal digit.
            #[allow(clippy::cast_possible_truncation)]
            let digit = (rest % 10) as u8;
            digits[i] = b'0' + digit;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn write_to_stderr(&self) {
        let bytes = self.as_bytes();
        // SAFETY: write(2) is async-signal-safe; the pointer and length are those of a live
        // buffer. A short or failed write of a diagnostic is not worth retrying.
        unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// Runs the parent side: see the module docs. Returns the agent's exit code.
pub fn run_syscallwrap<A: Approver>(
    config: &WrapConfig,
    approver: A,
    command: &[OsString],
) -> Result<i32, WrapError> {
    run_syscallwrap_audited(config, approver, None, command)
}

/// [`run_syscallwrap`] that also sends every decision to `audit`.
pub fn run_syscallwrap_audited<A: Approver>(
    config: &WrapConfig,
    approver: A,
    audit: Option<Box<dyn AuditSink>>,
    command: &[OsString],
) -> Result<i32, WrapError> {
    if command.is_empty() {
        return Err(WrapError::EmptyCommand);
    }
    let mut context = PolicyContext::new(config.agent.home.clone());
    context.workspace = config.workspace.clone();
    let policy = Policy::load(&config.policy_file, &context)?;
    let options = config
        .filter
        .unwrap_or_else(|| FilterOptions::for_policy(&policy));
    tracing::info!(
        policy = %config.policy_file.display(),
        uid = config.agent.uid,
        trap_read_opens = options.trap_read_opens,
        "starting gated agent"
    );

    let (supervisor_end, agent_end) = handshake_channel()?;
    let agent_fd = agent_end.as_raw_fd();
    let mut cmd = Command::new(&config.exe);
    cmd.args(&config.exe_args)
        .env(MODE_ENV, "child")
        .env(
            TRAP_READS_ENV,
            if options.trap_read_opens { "1" } else { "0" },
        )
        .env(PARENT_PID_ENV, std::process::id().to_string())
        .env(CHANNEL_ID_ENV, &config.channel_id)
        .env("HOME", &config.agent.home)
        .env_remove(GATE_TOKEN_ENV)
        .uid(config.agent.uid)
        .gid(config.agent.gid);
    if let Some(workspace) = &config.workspace {
        cmd.current_dir(workspace);
    }
    if let Some(name) = &config.agent.name {
        cmd.env("USER", name).env("LOGNAME", name);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (dup2, fcntl, prctl) on plain integers.
    unsafe {
        cmd.pre_exec(move || {
            if agent_fd == CHILD_SOCKET_FD {
                // dup2 onto itself keeps FD_CLOEXEC: clear it by hand.
                if libc::fcntl(agent_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(agent_fd, CHILD_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // std changes uid before running this closure, and a credential change clears the
            // parent-death signal, so it is set here, after the change. The signal follows the
            // death of the spawning *thread*: the calling thread stays in `wait_for_agent`.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| WrapError::Spawn {
        program: config.exe.clone(),
        source,
    })?;
    drop(agent_end);
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    forward_signals_to(pid);

    if config.drop_capabilities {
        drop_capabilities()?;
    }

    let (listener, channel_id) = supervisor_end.wait_for_listener()?;
    let mut supervisor =
        Supervisor::new(policy, approver, channel_id).with_max_pending(config.max_pending);
    if let Some(audit) = audit {
        supervisor = supervisor.with_audit(audit);
    }
    // The thread is left running when the agent exits: grandchildren may still be in the
    // filter, and the process exit that follows closes the listener (their trapped syscalls
    // then fail with ENOSYS).
    std::thread::Builder::new()
        .name("loop-gate-supervisor".to_owned())
        .spawn(move || {
            if let Err(err) = supervisor.serve(listener) {
                tracing::error!(error = %err, "gate supervisor stopped");
            }
        })
        .map_err(WrapError::SupervisorThread)?;
    supervisor_end.ack_listener()?;
    wait_for_agent(pid)
}

/// Reaps every child (the parent is pid 1 in the container) until the agent itself exits.
fn wait_for_agent(pid: i32) -> Result<i32, WrapError> {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                AGENT_PID.store(0, Ordering::SeqCst);
                return Ok(code);
            }
            Ok(WaitStatus::Signaled(p, signal, _)) if p.as_raw() == pid => {
                AGENT_PID.store(0, Ordering::SeqCst);
                return Ok(128 + signal as i32);
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(source) => return Err(WrapError::Wait { pid, source }),
        }
    }
}

/// Keeps only [`KEPT_CAPS`]: bounding set first (needs `CAP_SETPCAP`, so it must come while
/// the full set is still there), then permitted, effective, inheritable, ambient.
fn drop_capabilities() -> Result<(), WrapError> {
    let keep: CapsHashSet = KEPT_CAPS.into_iter().collect();
    let err = |step| move |source| WrapError::Capabilities { step, source };
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("drop bounding"))?;
        }
    }
    if let Err(source) = caps::clear(None, CapSet::Ambient) {
        // gVisor's older releases do not implement ambient capabilities at all (EINVAL): with
        // no ambient set there is nothing to clear. Anywhere else a failure is fatal.
        let ambient_unsupported =
            caps::read(None, CapSet::Ambient).map_or(true, |set| set.is_empty());
        if !ambient_unsupported {
            return Err(err("clear ambient")(source));
        }
        tracing::debug!(error = %source, "no ambient capabilities on this kernel; nothing to clear");
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(err("clear inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(err("set effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("set permitted"))?;
    Ok(())
}

/// Runs the child side: see the module docs. Returns only on error; the caller should print
/// it and exit non-zero (the agent never started).
pub fn run_syscallwrap_child(command: &[OsString]) -> Result<Infallible, WrapError> {
    let Some((program, args)) = command.split_first() else {
        return Err(WrapError::EmptyCommand);
    };
    // SAFETY: prctl(PR_SET_PDEATHSIG, SIGKILL) takes no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(WrapError::DeathSignal(std::io::Error::last_os_error()));
    }
    if let Some(expected) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    {
        let actual = nix::unistd::getppid().as_raw();
        if actual != expected {
            return Err(WrapError::ParentGone { expected, actual });
        }
    }
    let sock = take_handshake_socket()?;
    let options = FilterOptions {
        trap_read_opens: std::env::var(TRAP_READS_ENV).map_or(true, |v| v != "0"),
    };
    let channel_id = std::env::var(CHANNEL_ID_ENV).unwrap_or_default();
    let listener = crate::filter::install(options)?;
    sock.send_listener(&listener, &channel_id)?;
    drop(listener);
    sock.wait_for_ack()?;
    drop(sock);
    let err = Command::new(program)
        .args(args)
        .env_remove(MODE_ENV)
        .env_remove(TRAP_READS_ENV)
        .env_remove(PARENT_PID_ENV)
        .exec();
    Err(WrapError::Exec {
        program: program.clone(),
        source: err,
    })
}

fn take_handshake_socket() -> Result<AgentSender, WrapError> {
    let fd = CHILD_SOCKET_FD;
    // SAFETY: fstat on an fd number only fills `stat`; a closed fd gives EBADF.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(WrapError::NotASocket { fd });
    }
    // SAFETY: fd 3 was placed by the parent for this process and nothing else owns it; make
    // it close-on-exec so the agent never inherits it.
    let owned = unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        OwnedFd::from_raw_fd(fd)
    };
    Ok(AgentSender::from_fd(owned))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workspace_is_only_what_loop_passed() {
        assert_eq!(
            workspace_of(Some("/src/app".into())),
            Some(PathBuf::from("/src/app"))
        );
        assert_eq!(workspace_of(Some("relative".into())), None);
        assert_eq!(workspace_of(Some("".into())), None);
        assert_eq!(workspace_of(None), None);
    }

    use super::*;
    use crate::wire::ApprovalDecision;

    const TEST_CHILD_ENV: &str = "LOOP_GATE_TEST_WRAP_CHILD";
    const TEST_CMD_ENV: &str = "LOOP_GATE_TEST_WRAP_CMD";

    /// Not a test on its own: the end-to-end test re-execs this binary with a filter for this
    /// name, and here the re-exec'd process plays the `syscallwrap` child.
    #[test]
    fn wrap_child_entry() {
        if std::env::var_os(TEST_CHILD_ENV).is_none() || !is_child_mode() {
            return;
        }
        let command: Vec<OsString> = std::env::var(TEST_CMD_ENV)
            .unwrap_or_default()
            .split('\u{1f}')
            .map(OsString::from)
            .collect();
        let err = run_syscallwrap_child(&command).unwrap_err();
        eprintln!("syscallwrap child: {err}");
        // SAFETY: leave at once with a code the parent test recognises.
        unsafe { libc::_exit(101) }
    }

    #[test]
    fn syscallwrap_end_to_end() {
        use nix::unistd::{ForkResult, fork};
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: syscallwrap_end_to_end changes uid and needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("loop-gate-wrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("denied")).unwrap();
        std::fs::create_dir_all(dir.join("allowed")).unwrap();
        for d in [&dir, &dir.join("denied"), &dir.join("allowed")] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
        }
        let policy = dir.join("gate-policy.json");
        std::fs::write(
            &policy,
            format!(
                r#"{{"command_rules": [{{"commands": ["false"], "decision": "deny"}}],
                    "file_rules": [{{"paths": ["{}/denied/**"], "operations": ["write", "create"], "decision": "deny"}}]}}"#,
                dir.display()
            ),
        )
        .unwrap();
        let script = format!(
            "/bin/false; [ $? -eq 126 ] || exit 11; \
             (echo x > {d}/denied/f) 2>/dev/null && exit 12; \
             echo ok > {d}/allowed/f || exit 13; \
             [ \"$(id -u)\" = 65534 ] || exit 14; \
             [ -z \"$LOOP_GATE_TOKEN\" ] || exit 15; \
             exit 42",
            d = dir.display()
        );
        let command = ["/bin/sh", "-c", script.as_str()];
        let exe = std::env::current_exe().unwrap();
        // The parent reaps with waitpid(-1) and drops capabilities: both must stay away from
        // the test runner, so the parent side runs in a forked process.
        // SAFETY: the child only runs the wrap parent and `_exit`s.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: the forked child is single-threaded at this point.
                unsafe {
                    std::env::set_var(TEST_CHILD_ENV, "1");
                    std::env::set_var(TEST_CMD_ENV, command.join("\u{1f}"));
                    std::env::set_var(GATE_TOKEN_ENV, "secret");
                }
                let config = WrapConfig {
                    policy_file: policy.clone(),
                    agent: AgentUser::lookup("nobody").unwrap(),
                    channel_id: "C-wrap".to_owned(),
                    workspace: Some(dir.clone()),
                    filter: None,
                    max_pending: 1,
                    exe,
                    exe_args: [
                        "--exact",
                        "wrap::tests::wrap_child_entry",
                        "--nocapture",
                        "--test-threads=1",
                    ]
                    .map(OsString::from)
                    .to_vec(),
                    drop_capabilities: true,
                };
                let approver = |_: &crate::wire::ApprovalRequest| ApprovalDecision::Deny;
                let argv: Vec<OsString> = command.iter().map(OsString::from).collect();
                let code = match run_syscallwrap(&config, approver, &argv) {
                    Ok(code) => code,
                    Err(err) => {
                        eprintln!("syscallwrap parent: {err}");
                        102
                    }
                };
                // Capabilities must be down to the kept set, which still passes a stop
                // signal on to the agent.
                let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
                let code = if effective.contains(&Capability::CAP_CHOWN) {
                    103
                } else if !effective.contains(&Capability::CAP_KILL) {
                    104
                } else {
                    code
                };
                // SAFETY: leave without running the test harness's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                assert_eq!(status, WaitStatus::Exited(child, 42), "see stderr");
                assert!(dir.join("allowed/f").exists());
                assert!(!dir.join("denied/f").exists());
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }

    #[test]
    fn broken_policy_refuses_to_start() {
        let dir = std::env::temp_dir().join(format!("loop-gate-wrap-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("gate-policy.json");
        std::fs::write(&policy, r#"{"default_decison": "allow"}"#).unwrap();
        let config = WrapConfig {
            policy_file: policy,
            agent: AgentUser::lookup("nobody").unwrap(),
            channel_id: String::new(),
            workspace: None,
            filter: None,
            max_pending: 1,
            exe: PathBuf::from("/bin/true"),
            exe_args: Vec::new(),
            drop_capabilities: false,
        };
        let err = run_syscallwrap(&config, crate::notify::DenyAll, &[OsString::from("true")])
            .unwrap_err();
        assert!(matches!(err, WrapError::Policy(_)), "{err}");
        let err = run_syscallwrap(&config, crate::notify::DenyAll, &[]).unwrap_err();
        assert!(matches!(err, WrapError::EmptyCommand));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_forwarding_failure_reads_as_one_line() {
        let check = |parts: &[(&[u8], Option<i32>)], expected: &str| {
            let mut line = SignalSafeLine::new();
            for (text, number) in parts {
                line.push(text);
                if let Some(n) = number {
                    line.push_number(*n);
                }
            }
            assert_eq!(String::from_utf8_lossy(line.as_bytes()), expected);
        };
        check(
            &[
                (b"signal ", Some(15)),
                (b" pid ", Some(7)),
                (b" errno ", Some(1)),
            ],
            "signal 15 pid 7 errno 1",
        );
        check(&[(b"", Some(0))], "0");
        check(&[(b"", Some(i32::MIN))], "-2147483648");
        check(&[(b"", Some(i32::MAX))], "2147483647");
        // What does not fit is cut, never written past the buffer.
        let long = [b'x'; 200];
        check(&[(&long, Some(42))], &"x".repeat(128));
    }

    #[test]
    fn agent_user_lookup() {
        let nobody = AgentUser::lookup("nobody").unwrap();
        assert_eq!(nobody.uid, 65534);
        assert!(matches!(
            AgentUser::lookup("no-such-user-loop").unwrap_err(),
            WrapError::UnknownUser { .. }
        ));
    }
}
