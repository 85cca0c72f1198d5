//! The supervisor: receives seccomp notifications, reads the target's arguments, asks the
//! policy (and an [`Approver`] for `approve`), and answers the kernel.
//!
//! [`Supervisor::serve`] blocks in `poll(2)` and `ioctl(2)`, so it runs on a thread of its own;
//! each pending approval gets its own thread too, so one prompt waiting for a person does not
//! hold every other syscall of the agent. Anything that goes wrong while reading arguments or
//! asking is a deny (fail closed).
//!
//! # The check-then-continue race
//!
//! Answering `CONTINUE` lets the kernel run the syscall with the arguments *as they are in the
//! target's memory at that moment*. The supervisor reads them first, then decides: another
//! thread of the agent can rewrite the path in between. `NOTIF_ID_VALID` after the read only
//! proves the syscall is still waiting, not that its memory is unchanged. For opens a person
//! approved, the supervisor therefore opens the checked path itself, as the agent, and
//! injects the fd (`SECCOMP_IOCTL_NOTIF_ADDFD`, see [`crate::inject`]); the approval's wait,
//! the longest window there is, is closed. Opens the policy allows outright and every other
//! syscall still `CONTINUE` (see gate/README.md, "Residual risks"): the gate is a guard rail
//! against an agent that follows the rules it is shown; the container (uid, mounts, no docker
//! socket) remains the boundary. Symlinks are handled by also deciding the symlink-resolved
//! path (stricter verdict wins).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use crate::inject::{self, Creds, OpenCall};
use crate::policy::{self, ConnectTarget, Decision, FileOperation, Policy, Request, Verdict};
use crate::wire::{
    ApprovalDecision, ApprovalOutcome, ApprovalRequest, AuditOutcome, AuditRecord, GateAction,
};

/// Longest path read from the target, `PATH_MAX` including the NUL.
pub const MAX_PATH: usize = 4096;
/// Most argv entries read for one exec.
pub const MAX_ARGS: usize = 65_536;
/// Longest single argument (the kernel's `MAX_ARG_STRLEN`).
pub const MAX_ARG_LEN: usize = 128 * 1024;
/// Most argv bytes read for one exec (a typical `ARG_MAX`).
pub const MAX_ARGV_BYTES: usize = 2 * 1024 * 1024;
/// Default bound on approvals waiting at once (LOOP-COMPAT `rate_limits.pending`).
pub const DEFAULT_MAX_PENDING: usize = 30;

/// Asks a person about an `approve` verdict. Implementations block until an answer or a
/// timeout and must return [`ApprovalDecision::Deny`] on any error (fail closed). The bot's
/// implementation posts an [`ApprovalRequest`] to `POST {API_URL}/api/gate/container-approval`.
pub trait Approver: Send + Sync + 'static {
    /// Returns the person's decision.
    fn ask(&self, request: &ApprovalRequest) -> ApprovalOutcome;
}

impl<F> Approver for F
where
    F: Fn(&ApprovalRequest) -> ApprovalOutcome + Send + Sync + 'static,
{
    fn ask(&self, request: &ApprovalRequest) -> ApprovalOutcome {
        self(request)
    }
}

/// Receives one [`AuditRecord`] per decided syscall. Called on the supervisor's threads, so it
/// must not block: push onto a bounded queue and drop (with a counter) when it is full.
pub trait AuditSink: Send + Sync + 'static {
    /// Records one decision.
    fn record(&self, record: AuditRecord);
}

impl AuditSink for Box<dyn AuditSink> {
    fn record(&self, record: AuditRecord) {
        (**self).record(record);
    }
}

/// An approver for when no one can be asked: every `approve` becomes a deny.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Approver for DenyAll {
    fn ask(&self, _request: &ApprovalRequest) -> ApprovalOutcome {
        ApprovalDecision::Deny
    }
}

/// Errors that stop the supervisor (per-notification problems are denies, not errors).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `seccomp(SECCOMP_GET_NOTIF_SIZES)` failed.
    #[error("cannot get seccomp notification sizes")]
    Sizes(#[source] io::Error),
    /// `poll(2)` on the listener failed.
    #[error("cannot poll the seccomp listener")]
    Poll(#[source] io::Error),
    /// `SECCOMP_IOCTL_NOTIF_RECV` failed for a reason other than a vanished target.
    #[error("cannot receive a seccomp notification")]
    Receive(#[source] io::Error),
}

/// Why the arguments of one notification could not be read; the syscall is denied.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// Reading the target's memory failed.
    #[error("cannot read {len} bytes at {addr:#x} in pid {pid}")]
    Memory {
        /// The target.
        pid: u32,
        /// Where.
        addr: u64,
        /// How much.
        len: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A string had no NUL within its bound.
    #[error("string at {addr:#x} in pid {pid} is longer than {max} bytes")]
    TooLong {
        /// The target.
        pid: u32,
        /// Where.
        addr: u64,
        /// The bound.
        max: usize,
    },
    /// argv is longer than [`MAX_ARGS`] or [`MAX_ARGV_BYTES`].
    #[error("argv of pid {pid} exceeds the gate's bounds")]
    ArgvTooLarge {
        /// The target.
        pid: u32,
    },
    /// A `/proc` link could not be read.
    #[error("cannot read {path}")]
    Proc {
        /// The link.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A trapped syscall this supervisor does not know.
    #[error("unexpected syscall {nr}")]
    UnknownSyscall {
        /// Its number.
        nr: i32,
    },
}

/// What the supervisor answers the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Let the syscall run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
    /// Fail it with this errno.
    Errno(i32),
}

/// The in-container supervisor for one listener.
pub struct Supervisor<A: Approver> {
    inner: Inner<A>,
}

struct Inner<A> {
    policy: Policy,
    approver: A,
    channel_id: String,
    /// Keys answered "allow for session"; one short critical section per approval.
    session: Mutex<HashSet<String>>,
    pending: AtomicUsize,
    max_pending: usize,
    audit: Option<Box<dyn AuditSink>>,
    sync_wake_up: bool,
    open_workers: Arc<OpenWorkers>,
}

impl<A: Approver> Supervisor<A> {
    /// A supervisor that decides with `policy` and asks `approver`.
    pub fn new(policy: Policy, approver: A, channel_id: impl Into<String>) -> Self {
        Supervisor {
            inner: Inner {
                policy,
                approver,
                channel_id: channel_id.into(),
                session: Mutex::new(HashSet::new()),
                pending: AtomicUsize::new(0),
                max_pending: DEFAULT_MAX_PENDING,
                audit: None,
                sync_wake_up: true,
                open_workers: Arc::new(OpenWorkers::default()),
            },
        }
    }

    /// Sets the bound on approvals waiting at once; beyond it `approve` is a deny.
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.inner.max_pending = max_pending;
        self
    }

    /// Sends every decision to `sink` (`gates.audit`).
    pub fn with_audit(mut self, sink: impl AuditSink) -> Self {
        self.inner.audit = Some(Box::new(sink));
        self
    }

    /// Whether to ask the kernel for synchronous wake-ups on the listener (on by default; see
    /// [`set_sync_wake_up`]). Off only to measure what it saves.
    pub fn with_sync_wake_up(mut self, on: bool) -> Self {
        self.inner.sync_wake_up = on;
        self
    }

    /// Serves the listener until no task uses the filter any more (`POLLHUP`). Blocking: run
    /// it on a thread of its own.
    pub fn serve(self, listener: OwnedFd) -> Result<(), NotifyError> {
        let inner = Arc::new(self.inner);
        let sizes = notif_sizes()?;
        if inner.sync_wake_up
            && let Err(err) = set_sync_wake_up(&listener)
        {
            tracing::debug!(error = %err, "no synchronous seccomp wake-ups on this kernel (Linux 6.6+)");
        }
        let listener = Arc::new(Listener {
            fd: listener,
            sizes,
        });
        let mut approvals: Vec<JoinHandle<()>> = Vec::new();
        loop {
            approvals.retain(|h| !h.is_finished());
            match wait_readable(&listener)? {
                Readiness::HungUp => break,
                Readiness::Readable => {}
            }
            let notif = match receive(&listener) {
                Ok(Some(notif)) => notif,
                Ok(None) => continue,
                Err(err) => return Err(NotifyError::Receive(err)),
            };
            if let Some(handle) = inner.handle(&listener, &notif) {
                approvals.push(handle);
            }
        }
        if !approvals.is_empty() {
            // Every task is gone, so these answers have no one to go to; the threads end when
            // their approver returns (the HTTP approver has a timeout).
            tracing::debug!(
                pending = approvals.len(),
                "listener closed with approvals pending"
            );
        }
        Ok(())
    }
}

impl<A: Approver> Inner<A> {
    /// Decides one notification; returns the approval thread if it spawned one.
    fn handle(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        notif: &libc::seccomp_notif,
    ) -> Option<JoinHandle<()>> {
        let nr = notif.data.nr;
        let name = crate::filter::syscall_name(nr).unwrap_or("unknown");
        let target = Target { pid: notif.pid };
        let call = read_call(&target, &notif.data);
        // The reads above raced with the target dying and its pid being reused; only a still
        // valid id proves the memory we read belonged to the process that made this call.
        if !id_valid(listener, notif.id) {
            tracing::debug!(
                pid = notif.pid,
                syscall = name,
                "notification no longer valid"
            );
            return None;
        }
        let call = match call {
            Ok(call) => call,
            Err(err) => {
                tracing::warn!(pid = notif.pid, syscall = name, error = %err, "cannot read syscall arguments, denying");
                send(listener, notif.id, Response::Errno(errno_for_syscall(nr)));
                self.audit(notif.pid, name, None, None, AuditOutcome::DeniedUnreadable);
                return None;
            }
        };
        let Some((decision, request)) = self.policy.decide_all(&call.requests) else {
            send(listener, notif.id, Response::Continue);
            return None;
        };
        let errno = errno_for(request);
        match decision.verdict {
            Verdict::Allow => {
                tracing::trace!(pid = notif.pid, request = %request, "allow");
                send(listener, notif.id, Response::Continue);
                self.audit(
                    notif.pid,
                    name,
                    Some(request),
                    Some(&decision),
                    AuditOutcome::Allowed,
                );
                None
            }
            Verdict::Deny => {
                tracing::info!(pid = notif.pid, request = %request, rule = %decision.rule, "deny");
                send(listener, notif.id, Response::Errno(errno));
                self.audit(
                    notif.pid,
                    name,
                    Some(request),
                    Some(&decision),
                    AuditOutcome::Denied,
                );
                None
            }
            Verdict::Approve => {
                self.approve(listener, notif, name, &call, request, &decision, errno)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn approve(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        notif: &libc::seccomp_notif,
        name: &'static str,
        call: &Call,
        request: &Request,
        decision: &Decision,
        errno: i32,
    ) -> Option<JoinHandle<()>> {
        let key = request.session_key();
        if self.is_session_allowed(&key) {
            tracing::debug!(pid = notif.pid, key = %key, "allowed for session");
            self.audit(
                notif.pid,
                name,
                Some(request),
                Some(decision),
                AuditOutcome::AllowedBySession,
            );
            if call.open.as_ref().is_some_and(OpenCall::injectable) {
                // The open may block (a FIFO) and runs as the agent: on an open worker.
                let inner = Arc::clone(self);
                let for_worker = Arc::clone(listener);
                let (id, pid, call) = (notif.id, notif.pid, call.clone());
                let job = Box::new(move || inner.allow(&for_worker, id, pid, &call));
                if let Err(err) = self.open_workers.run(job) {
                    tracing::warn!(error = %err, "cannot start an open worker, denying");
                    send(listener, id, Response::Errno(errno));
                }
                return None;
            }
            send(listener, notif.id, Response::Continue);
            return None;
        }
        let pending = self.pending.fetch_add(1, Ordering::SeqCst);
        if pending >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(pid = notif.pid, request = %request, pending, "too many pending approvals, denying");
            send(listener, notif.id, Response::Errno(errno));
            self.audit(
                notif.pid,
                name,
                Some(request),
                Some(decision),
                AuditOutcome::DeniedOverLimit,
            );
            return None;
        }
        let body = ApprovalRequest::new(&self.channel_id, notif.pid, request, decision);
        let call = call.clone();
        let inner = Arc::clone(self);
        let listener_for_error = Arc::clone(listener);
        let listener = Arc::clone(listener);
        let id = notif.id;
        let spawned = std::thread::Builder::new()
            .name("loop-gate-approval".to_owned())
            .spawn(move || {
                let outcome = inner.approver.ask(&body);
                inner.pending.fetch_sub(1, Ordering::SeqCst);
                tracing::info!(pid = body.pid, request = %body.summary, outcome = ?outcome, "approval answered");
                let (allowed, audited) = match outcome {
                    ApprovalDecision::AllowOnce => (true, AuditOutcome::ApprovedOnce),
                    ApprovalDecision::AllowSession => {
                        inner.allow_for_session(body.session_key.clone());
                        (true, AuditOutcome::ApprovedForSession)
                    }
                    ApprovalDecision::Deny => (false, AuditOutcome::DeniedByApprover),
                };
                // Recorded before answering, so records follow the agent's order of calls.
                inner.audit_record(AuditRecord {
                    channel_id: body.channel_id,
                    pid: body.pid,
                    syscall: name.to_owned(),
                    action: Some(body.action),
                    rule: Some(body.rule),
                    outcome: audited,
                });
                if allowed {
                    inner.allow(&listener, id, body.pid, &call);
                } else {
                    send(&listener, id, Response::Errno(errno));
                }
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(err) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(error = %err, "cannot spawn approval thread, denying");
                send(&listener_for_error, notif.id, Response::Errno(errno));
                None
            }
        }
    }
}

impl<A> Inner<A> {
    /// Lets an allowed syscall happen. An open the supervisor can perform itself is opened
    /// here, as the agent, and its fd injected (see [`crate::inject`]): the kernel never reads
    /// the path again, so a thread that rewrites it after the check changes nothing. Every
    /// real path the open resolves to must be one that was checked, or one the policy allows
    /// outright; anything else fails with `EACCES`. Other syscalls `CONTINUE`.
    fn allow(&self, listener: &Listener, id: u64, pid: u32, call: &Call) {
        let Some(open) = call.open.as_ref().filter(|o| o.injectable()) else {
            send(listener, id, Response::Continue);
            return;
        };
        let creds = Creds::of(pid);
        // The status read raced with the target dying and its pid being reused.
        if !id_valid(listener, id) {
            return;
        }
        let creds = match creds {
            Ok(creds) => creds,
            Err(err) => {
                tracing::warn!(pid, error = %err, "cannot read the agent's credentials, denying");
                send(listener, id, Response::Errno(libc::EACCES));
                return;
            }
        };
        let checked: HashSet<&Path> = call
            .requests
            .iter()
            .filter_map(|r| match r {
                Request::File { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        let operations = open_operations(u64::from(open.flags as u32));
        let policy = &self.policy;
        let verify = |real: &Path| {
            checked.contains(real) || {
                let now: Vec<Request> = operations
                    .iter()
                    .map(|operation| Request::File {
                        path: real.to_path_buf(),
                        operation: *operation,
                    })
                    .collect();
                policy
                    .decide_all(&now)
                    .is_none_or(|(d, _)| d.verdict == Verdict::Allow)
            }
        };
        // Always on a thread of its own (an open worker or an approval thread).
        match inject::open_as_on_this_thread(&creds, open, &verify) {
            Ok(fd) => {
                if let Err(err) = inject::send_fd(listener.fd.as_raw_fd(), id, &fd, open.cloexec())
                {
                    // ENOENT: the target is gone. Anything else: the syscall still waits.
                    tracing::debug!(id, error = %err, "cannot inject the opened fd");
                    if err.raw_os_error() != Some(libc::ENOENT) {
                        send(listener, id, Response::Errno(libc::EACCES));
                    }
                }
            }
            Err(errno) => send(listener, id, Response::Errno(errno)),
        }
    }

    fn audit(
        &self,
        pid: u32,
        syscall: &str,
        request: Option<&Request>,
        decision: Option<&Decision>,
        outcome: AuditOutcome,
    ) {
        if self.audit.is_some() {
            self.audit_record(AuditRecord {
                channel_id: self.channel_id.clone(),
                pid,
                syscall: syscall.to_owned(),
                action: request.map(GateAction::from),
                rule: decision.map(|d| d.rule.to_string()),
                outcome,
            });
        }
    }

    fn audit_record(&self, record: AuditRecord) {
        if let Some(sink) = &self.audit {
            sink.record(record);
        }
    }

    fn is_session_allowed(&self, key: &str) -> bool {
        // A poisoned lock only means an approval thread panicked mid-insert; the set is still
        // a set, and an unreadable cache must not allow anything.
        self.session
            .lock()
            .map(|s| s.contains(key))
            .unwrap_or(false)
    }

    fn allow_for_session(&self, key: String) {
        if let Ok(mut s) = self.session.lock() {
            s.insert(key);
        }
    }
}

/// One open to perform as the agent.
type OpenJob = Box<dyn FnOnce() + Send>;

/// Idle workers kept for opens the session cache allows; more are started while all are busy.
const IDLE_OPEN_WORKERS: usize = 4;

/// Threads that perform allowed opens as the agent and inject the fd ([`Inner::allow`]).
///
/// An open may block (a FIFO), so it never runs on the supervisor's thread; and it takes the
/// agent's file-system credentials, so a worker does nothing else. Starting a thread per open
/// cost more than the rest of the open together, so finished workers wait for the next job
/// (up to [`IDLE_OPEN_WORKERS`]; the others end). Each job takes the credentials afresh. A
/// waiting worker holds no sender of its own, so it ends when the supervisor is gone.
#[derive(Default)]
struct OpenWorkers {
    idle: Mutex<Vec<Worker>>,
}

/// How to hand an idle worker its next job, together with this handle, which it puts back
/// into [`OpenWorkers::idle`] when the job is done.
#[derive(Clone)]
struct Worker(mpsc::Sender<(OpenJob, Worker)>);

impl OpenWorkers {
    /// Runs `job` on an idle worker, or on a new one when none is idle.
    fn run(self: &Arc<Self>, job: OpenJob) -> io::Result<()> {
        let mut job = job;
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(worker) = idle else { break };
            match worker.0.send((job, worker.clone())) {
                Ok(()) => return Ok(()),
                // The worker ended; take the job back and try the next one.
                Err(mpsc::SendError((back, _))) => job = back,
            }
        }
        let (sender, receiver) = mpsc::channel();
        let pool = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("loop-gate-open".to_owned())
            .spawn(move || {
                let mut next = (job, Worker(sender));
                loop {
                    let (job, me) = next;
                    job();
                    let Some(pool) = pool.upgrade() else { return };
                    match pool.idle.lock() {
                        Ok(mut idle) if idle.len() < IDLE_OPEN_WORKERS => idle.push(me),
                        _ => return,
                    }
                    drop(pool);
                    match receiver.recv() {
                        Ok(received) => next = received,
                        Err(_) => return,
                    }
                }
            })?;
        Ok(())
    }
}

/// The errno a denied request returns: `EPERM` for exec, `EACCES` for files and sockets.
pub fn errno_for(request: &Request) -> i32 {
    match request {
        Request::Exec { .. } => libc::EPERM,
        Request::File { .. } | Request::Connect { .. } => libc::EACCES,
    }
}

fn errno_for_syscall(nr: i32) -> i32 {
    let nr = libc::c_long::from(nr);
    if nr == libc::SYS_execve || nr == libc::SYS_execveat {
        libc::EPERM
    } else {
        libc::EACCES
    }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, the one flag of `SECCOMP_IOCTL_NOTIF_SET_FLAGS`
/// (include/uapi/linux/seccomp.h, Linux 6.6; libc has the ioctl but not the flag).
pub const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

/// Asks the kernel to hand the CPU straight from the trapped task to the supervisor and back
/// (`SECCOMP_IOCTL_NOTIF_SET_FLAGS` with [`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`]): a wake-up
/// that switches tasks on the same CPU instead of waking the supervisor wherever the scheduler
/// puts it. Kernels before 6.6 answer `EINVAL` or `ENOTTY`; the gate then works as before.
pub fn set_sync_wake_up(listener: &OwnedFd) -> io::Result<()> {
    // SAFETY: SET_FLAGS takes its flags by value (no pointer); an unknown request or flag is
    // refused with an error, never acted on.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The listener fd and the kernel's struct sizes.
struct Listener {
    fd: OwnedFd,
    sizes: NotifSizes,
}

/// Buffers sized as the kernel says, which may be larger than libc's structs.
struct NotifSizes {
    notif: usize,
    resp: usize,
}

fn notif_sizes() -> Result<NotifSizes, NotifyError> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one `struct seccomp_notif_sizes` to the pointer,
    // which points at a live, writable value of that type.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if ret != 0 {
        return Err(NotifyError::Sizes(io::Error::last_os_error()));
    }
    Ok(NotifSizes {
        notif: usize::from(sizes.seccomp_notif).max(size_of::<libc::seccomp_notif>()),
        resp: usize::from(sizes.seccomp_notif_resp).max(size_of::<libc::seccomp_notif_resp>()),
    })
}

enum Readiness {
    Readable,
    HungUp,
}

fn wait_readable(listener: &Listener) -> Result<Readiness, NotifyError> {
    loop {
        let mut pfd = libc::pollfd {
            fd: listener.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1, infinite timeout.
        let ret = unsafe { libc::poll(&mut pfd, 1, -1) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(NotifyError::Poll(err));
        }
        if pfd.revents & libc::POLLIN != 0 {
            return Ok(Readiness::Readable);
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(Readiness::HungUp);
        }
    }
}

/// `SECCOMP_IOCTL_NOTIF_RECV`; `None` when the target went away before we got it.
fn receive(listener: &Listener) -> io::Result<Option<libc::seccomp_notif>> {
    // u64 words keep the buffer aligned for `seccomp_notif`; the kernel wants it zeroed.
    let mut buf = vec![0u64; listener.sizes.notif.div_ceil(8)];
    // SAFETY: the buffer is at least as large as the kernel's `struct seccomp_notif`, aligned
    // to 8 and zeroed; the ioctl writes at most that many bytes.
    let ret = unsafe {
        libc::ioctl(
            listener.fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            buf.as_mut_ptr(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINTR) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: the buffer holds at least size_of::<seccomp_notif>() initialised bytes (zeroed,
    // then written by the kernel), is 8-aligned, and every bit pattern is a valid
    // `seccomp_notif` (plain integers).
    let notif = unsafe { std::ptr::read(buf.as_ptr().cast::<libc::seccomp_notif>()) };
    Ok(Some(notif))
}

fn id_valid(listener: &Listener, id: u64) -> bool {
    let mut id = id;
    // SAFETY: NOTIF_ID_VALID reads one u64 from the pointer, which points at a live u64.
    let ret = unsafe {
        libc::ioctl(
            listener.fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        )
    };
    ret == 0
}

/// `SECCOMP_IOCTL_NOTIF_SEND`. A vanished target (`ENOENT`) is not an error worth more than a
/// debug line: the syscall it made no longer waits for an answer.
fn send(listener: &Listener, id: u64, response: Response) {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: 0,
    };
    match response {
        Response::Continue => {
            // The flag is 1; the field is 32 bits wide.
            resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        }
        Response::Errno(errno) => resp.error = -errno,
    }
    // The kernel reads its own size of the struct; give it a zeroed buffer at least that large
    // with libc's struct at the start.
    let mut buf = vec![0u64; listener.sizes.resp.div_ceil(8)];
    // SAFETY: the buffer is 8-aligned and at least size_of::<seccomp_notif_resp>() bytes long
    // (`resp` is the max of both sizes).
    unsafe { std::ptr::write(buf.as_mut_ptr().cast::<libc::seccomp_notif_resp>(), resp) };
    // SAFETY: NOTIF_SEND reads the kernel's `struct seccomp_notif_resp` size from the pointer,
    // and the buffer is at least that long.
    let ret = unsafe {
        libc::ioctl(
            listener.fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            buf.as_mut_ptr(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        tracing::debug!(id, error = %err, "cannot answer seccomp notification");
    }
}

/// The target process, for reading its memory and `/proc` links.
pub struct Target {
    /// Its pid, as the supervisor's pid namespace sees it.
    pub pid: u32,
}

impl Target {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<usize, ArgError> {
        let len = buf.len();
        let err = |source| ArgError::Memory {
            pid: self.pid,
            addr,
            len,
            source,
        };
        let pid =
            i32::try_from(self.pid).map_err(|_| err(io::Error::from_raw_os_error(libc::ESRCH)))?;
        let base =
            usize::try_from(addr).map_err(|_| err(io::Error::from_raw_os_error(libc::EFAULT)))?;
        match nix::sys::uio::process_vm_readv(
            nix::unistd::Pid::from_raw(pid),
            &mut [io::IoSliceMut::new(buf)],
            &[nix::sys::uio::RemoteIoVec { base, len }],
        ) {
            Ok(n) => Ok(n),
            // Some container seccomp profiles refuse process_vm_readv; /proc/PID/mem needs the
            // same ptrace access and is allowed.
            Err(nix::Error::ENOSYS) | Err(nix::Error::EPERM) => {
                let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).map_err(err)?;
                mem.read_at(buf, addr).map_err(err)
            }
            Err(e) => Err(err(io::Error::from(e))),
        }
    }

    /// Reads a NUL-terminated string of at most `max` bytes (NUL included), a page at a time
    /// so a string that ends just before an unmapped page is still read.
    fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, ArgError> {
        if addr == 0 {
            return Err(ArgError::Memory {
                pid: self.pid,
                addr,
                len: 0,
                source: io::Error::from_raw_os_error(libc::EFAULT),
            });
        }
        const PAGE: u64 = 4096;
        let mut out = Vec::new();
        let mut cursor = addr;
        while out.len() < max {
            let to_page_end = PAGE - (cursor % PAGE);
            let want = usize::try_from(to_page_end)
                .unwrap_or(4096)
                .min(max - out.len());
            let mut chunk = vec![0u8; want];
            let n = self.read(cursor, &mut chunk)?;
            if n == 0 {
                break;
            }
            if let Some(nul) = chunk[..n].iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            cursor += n as u64;
        }
        Err(ArgError::TooLong {
            pid: self.pid,
            addr,
            max,
        })
    }

    fn read_u64(&self, addr: u64) -> Result<u64, ArgError> {
        let mut word = [0u8; 8];
        let n = self.read(addr, &mut word)?;
        if n != 8 {
            return Err(ArgError::Memory {
                pid: self.pid,
                addr,
                len: 8,
                source: io::Error::from_raw_os_error(libc::EFAULT),
            });
        }
        Ok(u64::from_ne_bytes(word))
    }

    /// Reads a NULL-terminated array of string pointers (argv), bounded by [`MAX_ARGS`],
    /// [`MAX_ARG_LEN`] and [`MAX_ARGV_BYTES`].
    fn read_argv(&self, addr: u64) -> Result<Vec<String>, ArgError> {
        let mut argv = Vec::new();
        if addr == 0 {
            return Ok(argv);
        }
        let mut total = 0usize;
        for i in 0..=MAX_ARGS {
            if i == MAX_ARGS {
                return Err(ArgError::ArgvTooLarge { pid: self.pid });
            }
            let ptr = self.read_u64(addr + 8 * i as u64)?;
            if ptr == 0 {
                break;
            }
            let arg = self.read_cstr(ptr, MAX_ARG_LEN)?;
            total += arg.len() + 1;
            if total > MAX_ARGV_BYTES {
                return Err(ArgError::ArgvTooLarge { pid: self.pid });
            }
            argv.push(String::from_utf8_lossy(&arg).into_owned());
        }
        Ok(argv)
    }

    fn read_link(&self, path: PathBuf) -> Result<PathBuf, ArgError> {
        std::fs::read_link(&path).map_err(|source| ArgError::Proc { path, source })
    }

    /// The target's working directory.
    pub fn cwd(&self) -> Result<PathBuf, ArgError> {
        self.read_link(PathBuf::from(format!("/proc/{}/cwd", self.pid)))
    }

    /// What the target's fd `fd` points at.
    pub fn fd_path(&self, fd: i32) -> Result<PathBuf, ArgError> {
        self.read_link(PathBuf::from(format!("/proc/{}/fd/{fd}", self.pid)))
    }

    /// Makes `path` absolute against `dirfd` (or the cwd for `AT_FDCWD`), then normalises it.
    fn resolve(&self, dirfd: u64, path: &[u8]) -> Result<PathBuf, ArgError> {
        // dirfd is an int: only the low 32 bits are meaningful.
        let dirfd = dirfd as u32 as i32;
        let path = Path::new(OsStr::from_bytes(path));
        if path.is_absolute() {
            return Ok(policy::normalize(path));
        }
        let base = if dirfd == libc::AT_FDCWD {
            self.cwd()?
        } else {
            self.fd_path(dirfd)?
        };
        if path.as_os_str().is_empty() {
            // With AT_EMPTY_PATH the call acts on dirfd itself; without it the kernel fails
            // with ENOENT, and checking dirfd's path is the conservative answer either way.
            return Ok(policy::normalize(&base));
        }
        Ok(policy::normalize(&base.join(path)))
    }

    fn path_arg(&self, dirfd: u64, addr: u64) -> Result<PathBuf, ArgError> {
        let raw = self.read_cstr(addr, MAX_PATH)?;
        Ok(self.own_proc(self.resolve(dirfd, &raw)?))
    }

    /// Rewrites `/proc/self`, `/proc/thread-self` and `/dev/fd` to `/proc/PID`, so that rules
    /// and symlink resolution (which runs in the supervisor) see the target's files rather
    /// than the supervisor's.
    fn own_proc(&self, path: PathBuf) -> PathBuf {
        let own = PathBuf::from(format!("/proc/{}", self.pid));
        for (prefix, replacement) in [
            ("/proc/self", own.clone()),
            ("/proc/thread-self", own.clone()),
            ("/dev/fd", own.join("fd")),
        ] {
            if let Ok(rest) = path.strip_prefix(prefix) {
                return if rest.as_os_str().is_empty() {
                    replacement
                } else {
                    replacement.join(rest)
                };
            }
        }
        path
    }
}

/// The path as written plus the symlink-resolved forms, so a symlink cannot hide a protected
/// path. `follow_last` says whether the syscall follows a symlink in the last component.
fn path_variants(path: &Path, follow_last: bool) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    let mut resolved_parent = None;
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
        && let Ok(parent) = std::fs::canonicalize(parent)
    {
        resolved_parent = Some(parent.join(name));
    }
    if follow_last {
        // The real parent plus a last component that is not a symlink is already the fully
        // resolved path: one lstat instead of resolving every component again.
        let full = match &resolved_parent {
            Some(real) => match std::fs::symlink_metadata(real) {
                Ok(meta) if !meta.file_type().is_symlink() => Some(real.clone()),
                _ => std::fs::canonicalize(path).ok(),
            },
            None => std::fs::canonicalize(path).ok(),
        };
        out.extend(resolved_parent);
        out.extend(full);
    } else {
        out.extend(resolved_parent);
    }
    out.dedup();
    out
}

fn file_requests(out: &mut Vec<Request>, path: &Path, follow_last: bool, ops: &[FileOperation]) {
    for variant in path_variants(path, follow_last) {
        for op in ops {
            let req = Request::File {
                path: variant.clone(),
                operation: *op,
            };
            if !out.contains(&req) {
                out.push(req);
            }
        }
    }
}

/// The operations an open with `flags` performs.
pub fn open_operations(flags: u64) -> Vec<FileOperation> {
    // open flags are an int; openat2 passes them as u64 but only the low bits are defined.
    let flags = flags as u32 as i32;
    if flags & libc::O_PATH != 0 {
        return vec![FileOperation::Stat];
    }
    let mut ops = Vec::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => ops.push(FileOperation::Write),
        libc::O_RDWR => ops.extend([FileOperation::Read, FileOperation::Write]),
        _ if flags & libc::O_DIRECTORY != 0 => ops.push(FileOperation::List),
        _ => ops.push(FileOperation::Read),
    }
    if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        ops.push(FileOperation::Create);
    }
    if flags & libc::O_TRUNC != 0 && !ops.contains(&FileOperation::Write) {
        ops.push(FileOperation::Write);
    }
    ops
}

/// One trapped syscall as the supervisor read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What the policy decides. Empty: nothing to check (e.g. a netlink `connect`).
    pub requests: Vec<Request>,
    /// For the open family: the open as checked, which the supervisor can perform itself
    /// (see [`crate::inject`]).
    pub open: Option<OpenCall>,
}

/// Reads the arguments of one trapped syscall once: the policy requests, and for an open the
/// call as checked (never read again from the target's memory).
pub fn read_call(target: &Target, data: &libc::seccomp_data) -> Result<Call, ArgError> {
    let nr = libc::c_long::from(data.nr);
    let a = data.args;
    let at_fdcwd = libc::AT_FDCWD as u32 as u64;
    let open = |path: PathBuf, flags: u64, mode: u64, resolve: u64| {
        let mut requests = Vec::new();
        let call = OpenCall {
            path,
            flags: flags as u32 as i32,
            mode: mode as u32,
            resolve,
        };
        file_requests(
            &mut requests,
            &call.path,
            call.flags & libc::O_NOFOLLOW == 0,
            &open_operations(flags),
        );
        Call {
            requests,
            open: Some(call),
        }
    };
    if nr == libc::SYS_openat {
        return Ok(open(target.path_arg(a[0], a[1])?, a[2], a[3], 0));
    }
    if nr == libc::SYS_openat2 {
        let path = target.path_arg(a[0], a[1])?;
        // struct open_how { __u64 flags; __u64 mode; __u64 resolve; }
        let flags = target.read_u64(a[2])?;
        let mode = target.read_u64(a[2] + 8)?;
        let resolve = target.read_u64(a[2] + 16)?;
        return Ok(open(path, flags, mode, resolve));
    }
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_open {
            return Ok(open(target.path_arg(at_fdcwd, a[0])?, a[1], a[2], 0));
        }
        if nr == libc::SYS_creat {
            let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
            return Ok(open(target.path_arg(at_fdcwd, a[0])?, flags, a[1], 0));
        }
    }
    Ok(Call {
        requests: read_other(target, data)?,
        open: None,
    })
}

/// Everything but the open family.
fn read_other(target: &Target, data: &libc::seccomp_data) -> Result<Vec<Request>, ArgError> {
    use FileOperation::*;
    let nr = libc::c_long::from(data.nr);
    let a = data.args;
    let mut out = Vec::new();
    let at_fdcwd = libc::AT_FDCWD as u32 as u64;
    let nofollow = |flags: u64| flags as u32 as i32 & libc::AT_SYMLINK_NOFOLLOW != 0;

    if nr == libc::SYS_execve || nr == libc::SYS_execveat {
        let (program, argv) = if nr == libc::SYS_execve {
            (target.path_arg(at_fdcwd, a[0])?, target.read_argv(a[1])?)
        } else {
            (target.path_arg(a[0], a[1])?, target.read_argv(a[2])?)
        };
        let cwd = target.cwd().ok();
        let mut programs = vec![program.clone()];
        if let Ok(real) = std::fs::canonicalize(&program)
            && real != program
        {
            programs.push(real);
        }
        for program in programs {
            out.push(Request::Exec {
                program,
                argv: argv.clone(),
                cwd: cwd.clone(),
            });
        }
        return Ok(out);
    }
    if nr == libc::SYS_renameat || nr == libc::SYS_renameat2 {
        let old = target.path_arg(a[0], a[1])?;
        let new = target.path_arg(a[2], a[3])?;
        rename_requests(
            &mut out,
            &old,
            &new,
            nr == libc::SYS_renameat2 && a[4] as u32 & libc::RENAME_EXCHANGE != 0,
        );
        return Ok(out);
    }
    if nr == libc::SYS_unlinkat {
        let path = target.path_arg(a[0], a[1])?;
        file_requests(&mut out, &path, false, &[Delete]);
        return Ok(out);
    }
    if nr == libc::SYS_mkdirat {
        let path = target.path_arg(a[0], a[1])?;
        file_requests(&mut out, &path, false, &[Create]);
        return Ok(out);
    }
    if nr == libc::SYS_linkat {
        let follow = (a[4] as u32 as i32) & libc::AT_SYMLINK_FOLLOW != 0;
        let old = target.path_arg(a[0], a[1])?;
        let new = target.path_arg(a[2], a[3])?;
        file_requests(&mut out, &old, follow, &[Link]);
        file_requests(&mut out, &new, false, &[Create]);
        return Ok(out);
    }
    if nr == libc::SYS_symlinkat {
        let new = target.path_arg(a[1], a[2])?;
        symlink_requests(target, &mut out, a[0], &new)?;
        return Ok(out);
    }
    if nr == libc::SYS_fchmodat || nr == libc::SYS_fchmodat2 {
        // fchmodat has no flags argument; fchmodat2 has them in the 4th.
        let flags = if nr == libc::SYS_fchmodat2 { a[3] } else { 0 };
        let path = target.path_arg(a[0], a[1])?;
        file_requests(&mut out, &path, !nofollow(flags), &[Chmod]);
        return Ok(out);
    }
    if nr == libc::SYS_fchownat {
        let path = target.path_arg(a[0], a[1])?;
        file_requests(&mut out, &path, !nofollow(a[4]), &[Chown]);
        return Ok(out);
    }
    if nr == libc::SYS_truncate {
        let path = target.path_arg(at_fdcwd, a[0])?;
        file_requests(&mut out, &path, true, &[Write]);
        return Ok(out);
    }
    if nr == libc::SYS_connect {
        if let Some(target) = read_sockaddr(target, a[1], a[2])? {
            out.push(Request::Connect { target });
        }
        return Ok(out);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let path0 = || target.path_arg(at_fdcwd, a[0]);
        if nr == libc::SYS_rename {
            let old = path0()?;
            let new = target.path_arg(at_fdcwd, a[1])?;
            rename_requests(&mut out, &old, &new, false);
            return Ok(out);
        }
        if nr == libc::SYS_unlink || nr == libc::SYS_rmdir {
            file_requests(&mut out, &path0()?, false, &[Delete]);
            return Ok(out);
        }
        if nr == libc::SYS_mkdir {
            file_requests(&mut out, &path0()?, false, &[Create]);
            return Ok(out);
        }
        if nr == libc::SYS_link {
            let old = path0()?;
            let new = target.path_arg(at_fdcwd, a[1])?;
            file_requests(&mut out, &old, false, &[Link]);
            file_requests(&mut out, &new, false, &[Create]);
            return Ok(out);
        }
        if nr == libc::SYS_symlink {
            let new = target.path_arg(at_fdcwd, a[1])?;
            symlink_requests(target, &mut out, a[0], &new)?;
            return Ok(out);
        }
        if nr == libc::SYS_chmod {
            file_requests(&mut out, &path0()?, true, &[Chmod]);
            return Ok(out);
        }
        if nr == libc::SYS_chown || nr == libc::SYS_lchown {
            file_requests(&mut out, &path0()?, nr == libc::SYS_chown, &[Chown]);
            return Ok(out);
        }
    }
    Err(ArgError::UnknownSyscall { nr: data.nr })
}

fn rename_requests(out: &mut Vec<Request>, old: &Path, new: &Path, exchange: bool) {
    use FileOperation::*;
    file_requests(out, old, false, &[Delete]);
    // Replacing the destination changes its content as much as a write does.
    file_requests(out, new, false, &[Create, Write]);
    if exchange {
        file_requests(out, old, false, &[Create, Write]);
        file_requests(out, new, false, &[Delete]);
    }
}

/// A symlink is checked as `link` on what it points at (resolved against the new link's
/// directory, as the kernel would when following it) and `create` on the link itself.
fn symlink_requests(
    target: &Target,
    out: &mut Vec<Request>,
    target_addr: u64,
    new: &Path,
) -> Result<(), ArgError> {
    let raw = target.read_cstr(target_addr, MAX_PATH)?;
    let pointed = Path::new(OsStr::from_bytes(&raw));
    let pointed = if pointed.is_absolute() {
        policy::normalize(pointed)
    } else {
        policy::normalize(&new.parent().unwrap_or(Path::new("/")).join(pointed))
    };
    file_requests(out, &pointed, true, &[FileOperation::Link]);
    file_requests(out, new, false, &[FileOperation::Create]);
    Ok(())
}

/// Reads a `sockaddr` for `connect(2)`: unix paths (and `@abstract` names), IPv4 and IPv6.
/// Other families are not the gate's business and give `None`.
fn read_sockaddr(target: &Target, addr: u64, len: u64) -> Result<Option<ConnectTarget>, ArgError> {
    let len = usize::try_from(len)
        .unwrap_or(0)
        .min(size_of::<libc::sockaddr_storage>());
    if addr == 0 || len < 2 {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    let n = target.read(addr, &mut buf)?;
    buf.truncate(n);
    Ok(parse_sockaddr(&buf))
}

/// Parses the bytes of a `sockaddr`.
pub fn parse_sockaddr(buf: &[u8]) -> Option<ConnectTarget> {
    let family = i32::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
    match family {
        libc::AF_UNIX => {
            let path = &buf[2..];
            if path.is_empty() {
                return None;
            }
            if path[0] == 0 {
                // Abstract: the name is every byte up to addrlen, NULs included.
                let name = String::from_utf8_lossy(&path[1..]);
                return Some(ConnectTarget::Unix(PathBuf::from(format!("@{name}"))));
            }
            let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
            Some(ConnectTarget::Unix(PathBuf::from(OsStr::from_bytes(
                &path[..end],
            ))))
        }
        libc::AF_INET => {
            let port = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
            let ip = Ipv4Addr::new(*buf.get(4)?, *buf.get(5)?, *buf.get(6)?, *buf.get(7)?);
            Some(ConnectTarget::Inet(SocketAddr::V4(SocketAddrV4::new(
                ip, port,
            ))))
        }
        libc::AF_INET6 => {
            let port = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
            let octets: [u8; 16] = buf.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(octets);
            Some(ConnectTarget::Inet(SocketAddr::V6(SocketAddrV6::new(
                ip, port, 0, 0,
            ))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_table() {
        use FileOperation::*;
        let cases: &[(i32, &[FileOperation])] = &[
            (libc::O_RDONLY, &[Read]),
            (libc::O_RDONLY | libc::O_CLOEXEC, &[Read]),
            (libc::O_WRONLY, &[Write]),
            (libc::O_RDWR, &[Read, Write]),
            (
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                &[Write, Create],
            ),
            (libc::O_RDONLY | libc::O_TRUNC, &[Read, Write]),
            (libc::O_RDONLY | libc::O_DIRECTORY, &[List]),
            (libc::O_PATH, &[Stat]),
            (libc::O_WRONLY | libc::O_TMPFILE, &[Write, Create]),
        ];
        for (flags, expected) in cases {
            assert_eq!(
                open_operations(*flags as u32 as u64),
                *expected,
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn sockaddr_table() {
        let mut unix = vec![0u8; 110];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        unix[2..2 + 16].copy_from_slice(b"/run/docker.sock");
        assert_eq!(
            parse_sockaddr(&unix),
            Some(ConnectTarget::Unix(PathBuf::from("/run/docker.sock")))
        );
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0my-sock");
        assert_eq!(
            parse_sockaddr(&abs),
            Some(ConnectTarget::Unix(PathBuf::from("@my-sock")))
        );
        let mut v4 = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v4.extend_from_slice(&443u16.to_be_bytes());
        v4.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some(ConnectTarget::Inet("1.2.3.4:443".parse().unwrap()))
        );
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.extend_from_slice(&80u16.to_be_bytes());
        v6.extend_from_slice(&[0; 4]);
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_sockaddr(&v6),
            Some(ConnectTarget::Inet("[::1]:80".parse().unwrap()))
        );
        let netlink = (libc::AF_NETLINK as u16).to_ne_bytes().to_vec();
        assert_eq!(parse_sockaddr(&netlink), None);
        assert_eq!(parse_sockaddr(&[1]), None);
        assert_eq!(parse_sockaddr(&v4[..6]), None);
    }

    #[test]
    fn reads_own_memory_bounded() {
        let target = Target {
            pid: std::process::id(),
        };
        let s = c"/etc/hosts";
        let got = target.read_cstr(s.as_ptr() as u64, MAX_PATH).unwrap();
        assert_eq!(got, b"/etc/hosts");
        let long = [b'a'; 100];
        let err = target.read_cstr(long.as_ptr() as u64, 50).unwrap_err();
        assert!(matches!(err, ArgError::TooLong { max: 50, .. }));
        assert!(target.read_cstr(0, MAX_PATH).is_err());
        let a = c"git";
        let b = c"push";
        let ptrs: [u64; 3] = [a.as_ptr() as u64, b.as_ptr() as u64, 0];
        let argv = target.read_argv(ptrs.as_ptr() as u64).unwrap();
        assert_eq!(argv, vec!["git", "push"]);
        let cwd = target.cwd().unwrap();
        assert_eq!(cwd, std::env::current_dir().unwrap());
        let resolved = target
            .resolve(libc::AT_FDCWD as u32 as u64, b"x/../y")
            .unwrap();
        assert_eq!(resolved, policy::normalize(&cwd.join("y")));
    }

    #[test]
    fn symlinked_paths_are_checked_resolved() {
        let dir = std::env::temp_dir().join(format!("loop-gate-variants-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("real"), &link).unwrap();
        let variants = path_variants(&link.join("f"), true);
        assert!(variants.contains(&link.join("f")));
        assert!(variants.contains(&std::fs::canonicalize(dir.join("real")).unwrap().join("f")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The shortcut (real parent + a last component that is no symlink) gives what resolving
    /// the whole path gives, for files, directories, symlinks at either end and missing names.
    #[test]
    fn path_variants_match_full_resolution() {
        let dir = std::env::temp_dir().join(format!("loop-gate-variants2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        std::fs::write(dir.join("real/file"), "x").unwrap();
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(dir.join(target), dir.join(name)).unwrap();
        };
        link("real", "dirlink");
        link("real/file", "real/filelink");
        link("real/sub", "real/sublink");
        link("nowhere", "real/dangling");
        let full = |path: &Path, follow_last: bool| {
            let mut out = vec![path.to_path_buf()];
            if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
                && let Ok(parent) = std::fs::canonicalize(parent)
            {
                out.push(parent.join(name));
            }
            if follow_last && let Ok(full) = std::fs::canonicalize(path) {
                out.push(full);
            }
            out.dedup();
            out
        };
        for name in [
            "real/file",
            "real/sub",
            "real/missing",
            "real/filelink",
            "real/sublink",
            "real/dangling",
            "dirlink/file",
            "dirlink/filelink",
            "dirlink/missing",
            "missing/file",
            "real",
        ] {
            for follow_last in [true, false] {
                let path = dir.join(name);
                assert_eq!(
                    path_variants(&path, follow_last),
                    full(&path, follow_last),
                    "{name}, follow_last {follow_last}"
                );
            }
        }
        assert_eq!(
            path_variants(Path::new("/"), true),
            vec![PathBuf::from("/")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs `child` in a forked process under the gate (youki's `test_in_child_process`
    /// shape): the child installs the filter and hands the listener over the handshake
    /// channel; this process serves it with `policy`. Returns the child's exit code.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<AuditRecord>>>);

    impl AuditSink for Recorder {
        fn record(&self, record: AuditRecord) {
            self.0.lock().unwrap().push(record);
        }
    }

    fn run_gated(policy: Policy, approver: impl Approver, child: impl FnOnce() -> i32) -> i32 {
        run_gated_with(policy, approver, None, child)
    }

    fn run_gated_with(
        policy: Policy,
        approver: impl Approver,
        audit: Option<Box<dyn AuditSink>>,
        child: impl FnOnce() -> i32,
    ) -> i32 {
        use crate::channel::handshake_channel;
        use crate::filter::{FilterOptions, install};
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, fork};

        let (sup, agent) = handshake_channel().unwrap();
        // SAFETY: the child only runs the test closure and `_exit`s; glibc's fork keeps malloc
        // usable in the child, and the test runner's other threads are not touched.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(sup);
                let code = (|| -> Result<i32, Box<dyn std::error::Error>> {
                    let fd = install(FilterOptions::default())?;
                    agent.send_listener(&fd, "C-test")?;
                    drop(fd);
                    agent.wait_for_ack()?;
                    Ok(child())
                })()
                .unwrap_or(100);
                // SAFETY: `_exit` skips the test harness's atexit handlers in the child.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(agent);
                let (listener, channel) = sup.wait_for_listener().unwrap();
                assert_eq!(channel, "C-test");
                let mut supervisor = Supervisor::new(policy, approver, channel);
                if let Some(audit) = audit {
                    supervisor = supervisor.with_audit(audit);
                }
                let serving = std::thread::spawn(move || supervisor.serve(listener));
                sup.ack_listener().unwrap();
                let status = waitpid(child, None).unwrap();
                serving.join().unwrap().unwrap();
                match status {
                    WaitStatus::Exited(_, code) => code,
                    other => panic!("child ended with {other:?}"),
                }
            }
        }
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn open_write(path: &Path) -> Result<(), i32> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; the fd is closed right away.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600) };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: fd was just opened by this function.
        unsafe { libc::close(fd) };
        Ok(())
    }

    fn open_read(path: &Path) -> Result<(), i32> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; the fd is closed right away.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: fd was just opened by this function.
        unsafe { libc::close(fd) };
        Ok(())
    }

    fn exec_fails_with(program: &str) -> i32 {
        let prog = std::ffi::CString::new(program).unwrap();
        let argv = [prog.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: NULL-terminated argv and envp of valid C strings; on success the process
        // is replaced, which the caller treats as a failure by exit code.
        unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        errno()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loop-gate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn compile(json: &str, home: &Path) -> Policy {
        let file = crate::policy::PolicyFile::from_json(json, "test").unwrap();
        Policy::compile(&file, &crate::policy::PolicyContext::new(home)).unwrap()
    }

    #[test]
    fn gated_child_exec_and_open() {
        let dir = scratch("exec-open");
        let home = dir.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id"), "secret").unwrap();
        std::fs::create_dir_all(dir.join("denied")).unwrap();
        std::os::unix::fs::symlink(dir.join("denied"), dir.join("innocent")).unwrap();
        let policy = compile(
            &format!(
                r#"{{"command_rules": [{{"commands": ["false"], "decision": "deny"}}],
                    "file_rules": [{{"paths": ["{}/denied/**"], "operations": ["write", "create"], "decision": "deny"}}]}}"#,
                dir.display()
            ),
            &home,
        );
        let d = dir.clone();
        let code = run_gated(policy, DenyAll, move || {
            // A denied exec fails with EPERM and does not replace the process.
            if exec_fails_with("/bin/false") != libc::EPERM {
                return 1;
            }
            // An allowed exec (through the std spawn path) runs.
            match std::process::Command::new("/bin/true").status() {
                Ok(s) if s.success() => {}
                _ => return 2,
            }
            if open_write(&d.join("denied/x")) != Err(libc::EACCES) {
                return 3;
            }
            if open_write(&d.join("allowed")).is_err() {
                return 4;
            }
            // Relative paths are resolved against the cwd.
            if std::env::set_current_dir(&d).is_err() {
                return 5;
            }
            if open_write(Path::new("denied/y")) != Err(libc::EACCES) {
                return 6;
            }
            if open_write(Path::new("./sub/../denied/z")) != Err(libc::EACCES) {
                return 7;
            }
            // A symlink does not hide the protected directory.
            if open_write(Path::new("innocent/w")) != Err(libc::EACCES) {
                return 8;
            }
            // The baseline denies reading ~/.ssh.
            if open_read(Path::new("home/.ssh/id")) != Err(libc::EACCES) {
                return 9;
            }
            if open_read(Path::new("allowed")).is_err() {
                return 10;
            }
            // io_uring is always refused.
            // SAFETY: io_uring_setup with a null params pointer only returns an error.
            let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null::<u8>()) };
            if ret != -1 || errno() != libc::EPERM {
                return 11;
            }
            // Other file syscalls.
            if std::fs::rename(d.join("allowed"), d.join("denied/moved"))
                .map_err(|e| e.raw_os_error())
                != Err(Some(libc::EACCES))
            {
                return 12;
            }
            if std::fs::create_dir(d.join("denied/newdir")).map_err(|e| e.raw_os_error())
                != Err(Some(libc::EACCES))
            {
                return 13;
            }
            if std::fs::remove_file(d.join("allowed")).is_err() {
                return 14;
            }
            0
        });
        assert_eq!(code, 0, "child failed check {code}");
        assert!(!dir.join("denied/x").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gated_child_approvals_and_session_cache() {
        let dir = scratch("approve");
        let asked = Arc::new(AtomicUsize::new(0));
        let policy = compile(
            &format!(
                r#"{{"file_rules": [{{"paths": ["{}/ask-*"], "operations": ["write"], "decision": "approve", "message": "ask"}}],
                    "path_rules": [{{"pattern": "{}/*.sock", "decision": "deny"}}]}}"#,
                dir.display(),
                dir.display()
            ),
            &dir,
        );
        let audit = Recorder::default();
        let counter = Arc::clone(&asked);
        let approver = move |req: &ApprovalRequest| {
            counter.fetch_add(1, Ordering::SeqCst);
            assert_eq!(req.channel_id, "C-test");
            assert_eq!(req.message.as_deref(), Some("ask"));
            if req.summary.contains("ask-once") {
                ApprovalDecision::AllowOnce
            } else if req.summary.contains("ask-session") {
                ApprovalDecision::AllowSession
            } else {
                ApprovalDecision::Deny
            }
        };
        let d = dir.clone();
        let code = run_gated_with(policy, approver, Some(Box::new(audit.clone())), move || {
            if open_write(&d.join("ask-once")).is_err() {
                return 1;
            }
            if open_write(&d.join("ask-no")) != Err(libc::EACCES) {
                return 2;
            }
            for _ in 0..3 {
                if open_write(&d.join("ask-session")).is_err() {
                    return 3;
                }
            }
            let sock = std::os::unix::net::UnixStream::connect(d.join("x.sock"));
            if sock.map_err(|e| e.raw_os_error()).err() != Some(Some(libc::EACCES)) {
                return 4;
            }
            0
        });
        assert_eq!(code, 0, "child failed check {code}");
        // ask-once, ask-no, and ask-session once: the next two come from the session cache.
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        let outcomes: Vec<AuditOutcome> = audit
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| matches!(&r.action, Some(GateAction::File { path, .. }) if path.contains("/ask-")))
            .map(|r| r.outcome)
            .collect();
        assert_eq!(
            outcomes,
            [
                AuditOutcome::ApprovedOnce,
                AuditOutcome::DeniedByApprover,
                AuditOutcome::ApprovedForSession,
                AuditOutcome::AllowedBySession,
                AuditOutcome::AllowedBySession,
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `git` with a clean environment in `repo`, as the agent would run it.
    fn git(repo: &Path, home: &Path, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("git");
        command
            .current_dir(repo)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "-c",
                "user.name=Agent",
                "-c",
                "user.email=agent@example.com",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }

    fn sh(repo: &Path, script: &str) -> bool {
        std::process::Command::new("/bin/sh")
            .current_dir(repo)
            .args(["-c", script])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Real git under the gate with the baseline: the agent's everyday git never asks anyone;
    /// planting a hook, changing the config or pointing a `.git` elsewhere asks, by every
    /// route, and a denied change never lands.
    #[test]
    fn gated_child_git_guard() {
        if std::process::Command::new("git")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("git is not installed: skipped");
            return;
        }
        let dir = scratch("git");
        let home = dir.join("home");
        let repo = dir.join("repo");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("a.txt"), "one\n").unwrap();
        // Set up outside the gate: `git init` writes `.git/config` and the sample hooks.
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &["commit", "-qm", "initial"],
        ] {
            assert!(
                git(&repo, &home, args).status().unwrap().success(),
                "{args:?}"
            );
        }
        // A thread's worktree, as loop makes one on the host.
        let worktree = dir.join("thread");
        let args = ["worktree", "add", "-q", "-b", "thread", "../thread"];
        assert!(git(&repo, &home, &args).status().unwrap().success());
        std::fs::write(dir.join("evil"), "#!/bin/sh\necho pwned\n").unwrap();
        std::fs::create_dir_all(repo.join("lib")).unwrap();
        let config_before = std::fs::read_to_string(repo.join(".git/config")).unwrap();
        let context = crate::policy::PolicyContext::new(&home).with_workspace(&repo);
        let policy = Policy::baseline(&context);

        // What was asked during the everyday part, and after it (the child marks the switch).
        let everyday_asked = Arc::new(Mutex::new(Vec::<String>::new()));
        let asked = Arc::new(Mutex::new(Vec::<String>::new()));
        let marker = dir.join("hostile-from-here");
        let (everyday_seen, seen, m) = (
            Arc::clone(&everyday_asked),
            Arc::clone(&asked),
            marker.clone(),
        );
        let approver = move |req: &ApprovalRequest| {
            let list = if m.exists() { &seen } else { &everyday_seen };
            list.lock().unwrap().push(req.summary.clone());
            ApprovalDecision::Deny
        };
        let (r, h, w) = (repo.clone(), home.clone(), worktree.clone());
        let code = run_gated(policy, approver, move || {
            let ok = |args: &[&str]| git(&r, &h, args).status().is_ok_and(|s| s.success());
            let in_worktree = |args: &[&str]| git(&w, &h, args).status().is_ok_and(|s| s.success());
            // The same in the thread's worktree, whose git directory is the main one's
            // `.git/worktrees/thread`.
            if std::fs::write(w.join("c.txt"), "thread\n").is_err()
                || !in_worktree(&["add", "c.txt"])
                || !in_worktree(&["commit", "-qm", "in the worktree"])
                || std::fs::write(w.join("c.txt"), "more\n").is_err()
                || !in_worktree(&["stash", "-q"])
                || !in_worktree(&["stash", "pop", "-q"])
                || !in_worktree(&["commit", "-qam", "more in the worktree"])
                || !in_worktree(&["checkout", "-q", "-b", "thread-2"])
                || !in_worktree(&["status", "--short"])
            {
                return 9;
            }
            // Everyday git: status, branch, checkout -b, add, commit, stash, rebase, tag, gc.
            let everyday: &[&[&str]] = &[
                &["status", "--short"],
                &["branch", "feature"],
                &["checkout", "-q", "-b", "topic"],
            ];
            for (i, args) in everyday.iter().enumerate() {
                if !ok(args) {
                    return 10 + i as i32;
                }
            }
            if std::fs::write(r.join("b.txt"), "topic\n").is_err()
                || !ok(&["add", "b.txt"])
                || !ok(&["commit", "-qm", "on topic"])
                || !ok(&["checkout", "-q", "main"])
            {
                return 19;
            }
            if std::fs::write(r.join("a.txt"), "two\n").is_err() || !ok(&["add", "a.txt"]) {
                return 20;
            }
            if !ok(&["commit", "-qm", "two"]) {
                return 21;
            }
            if std::fs::write(r.join("a.txt"), "three\n").is_err()
                || !ok(&["stash", "-q"])
                || !ok(&["stash", "pop", "-q"])
                || !ok(&["commit", "-qam", "three"])
            {
                return 22;
            }
            if !ok(&["checkout", "-q", "topic"]) || !ok(&["rebase", "-q", "main"]) {
                return 23;
            }
            if !ok(&["tag", "v1"]) || !ok(&["gc", "-q"]) || !ok(&["log", "--oneline"]) {
                return 24;
            }
            if std::fs::write(&marker, "").is_err() {
                return 25;
            }
            // Planting a hook, by each route: a shell redirect, chmod +x, rename, symlink,
            // hard link; changing the config (a lock file renamed onto it); a gitdir pointer.
            let hostile: &[&str] = &[
                "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit",
                "chmod +x .git/hooks/pre-push.sample",
                "cp ../evil .git/hooks/post-checkout",
                "mv ../evil .git/hooks/post-commit",
                "ln -s ../../../evil .git/hooks/post-merge",
                "ln ../evil .git/hooks/pre-rebase",
                "mv .git/hooks .git/hooks-old",
                "git -c user.name=x config core.hooksPath /tmp",
                "printf 'gitdir: ../../evil-git\\n' > lib/.git",
                "printf '../evil-git\\n' > .git/commondir",
            ];
            for (i, script) in hostile.iter().enumerate() {
                if sh(&r, script) {
                    return 30 + i as i32;
                }
            }
            0
        });
        let everyday_asked = everyday_asked.lock().unwrap().clone();
        let asked = asked.lock().unwrap().clone();
        assert_eq!(
            code, 0,
            "child failed check {code}; asked: {everyday_asked:#?} then {asked:#?}"
        );
        assert!(
            everyday_asked.is_empty(),
            "everyday git asked: {everyday_asked:#?}"
        );
        let git_dir = repo.join(".git");
        for (needle, why) in [
            ("hooks/pre-commit", "redirect"),
            ("hooks/pre-push.sample", "chmod"),
            ("hooks/post-checkout", "copy"),
            ("hooks/post-commit", "rename onto"),
            ("hooks/post-merge", "symlink"),
            ("hooks/pre-rebase", "hard link"),
            (".git/hooks", "rename away"),
            (".git/config", "config through its lock file"),
            ("lib/.git", "gitdir pointer file"),
            (".git/commondir", "commondir"),
        ] {
            assert!(
                asked.iter().any(|summary| summary.contains(needle)),
                "{why}: nobody was asked about {needle}: {asked:#?}"
            );
        }
        for name in [
            "hooks/pre-commit",
            "hooks/post-checkout",
            "hooks/post-commit",
            "hooks/post-merge",
            "hooks/pre-rebase",
            "commondir",
        ] {
            assert!(
                std::fs::symlink_metadata(git_dir.join(name)).is_err(),
                "{name} was planted"
            );
        }
        assert!(git_dir.join("hooks").is_dir());
        assert!(!repo.join("lib/.git").exists());
        assert_eq!(
            std::fs::read_to_string(git_dir.join("config")).unwrap(),
            config_before
        );
        // And the everyday work is on the host.
        let log = git(&repo, &home, &["log", "--format=%s", "topic"])
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&log.stdout);
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            ["on topic", "three", "two", "initial"]
        );
        let log = git(&repo, &home, &["log", "--format=%s", "thread-2"])
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&log.stdout)
                .lines()
                .collect::<Vec<_>>(),
            ["more in the worktree", "in the worktree", "initial"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_approved_open_is_the_path_that_was_approved() {
        let dir = scratch("race");
        let policy = compile(
            &format!(
                r#"{{"file_rules": [{{"paths": ["{0}/ask-*"], "operations": ["write"], "decision": "approve"}},
                                    {{"paths": ["{0}/zzz-*"], "operations": ["write", "create"], "decision": "deny"}}]}}"#,
                dir.display()
            ),
            &dir,
        );
        // The person takes a while to answer; the agent swaps the path meanwhile.
        let approver = |_: &ApprovalRequest| {
            std::thread::sleep(std::time::Duration::from_millis(400));
            ApprovalDecision::AllowOnce
        };
        let d = dir.clone();
        let code = run_gated(policy, approver, move || {
            let asked = format!("{}/ask-race\0", d.display());
            let swapped = format!("{}/zzz-race\0", d.display());
            let buf = Arc::new(Mutex::new(asked.into_bytes()));
            let ptr = buf.lock().map(|mut b| b.as_mut_ptr() as usize).unwrap_or(0);
            let racer = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                // SAFETY: the buffer outlives both threads and has the swapped string's length;
                // the other thread is blocked in the kernel on it, which is the point.
                unsafe {
                    std::ptr::copy_nonoverlapping(swapped.as_ptr(), ptr as *mut u8, swapped.len())
                };
            });
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC;
            // SAFETY: ptr is a NUL-terminated path in a live buffer.
            let fd = unsafe { libc::open(ptr as *const libc::c_char, flags, 0o644) };
            let _ = racer.join();
            if fd < 0 {
                return 1;
            }
            let opened = std::fs::read_link(format!("/proc/self/fd/{fd}"));
            if opened.ok() != Some(d.join("ask-race")) {
                return 2;
            }
            // SAFETY: fd is ours.
            let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            if fd_flags & libc::FD_CLOEXEC == 0 {
                return 3;
            }
            // The buffer now names the denied file; the kernel never looked at it again.
            drop(buf);
            0
        });
        assert_eq!(code, 0, "child failed check {code}");
        assert!(dir.join("ask-race").exists());
        assert!(
            !dir.join("zzz-race").exists(),
            "the swapped path was not opened"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gated_child_connect_rules() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let policy = compile(
            &format!(
                r#"{{"connect_rules": [{{"hosts": ["127.0.0.1"], "ports": [{port}], "decision": "deny"}}]}}"#
            ),
            Path::new("/nonexistent"),
        );
        let code = run_gated(policy, DenyAll, move || {
            let denied = std::net::TcpStream::connect(("127.0.0.1", port));
            if denied.map_err(|e| e.raw_os_error()).err() != Some(Some(libc::EACCES)) {
                return 1;
            }
            0
        });
        assert_eq!(code, 0, "child failed check {code}");
        drop(listener);
    }

    #[test]
    fn proc_self_is_the_target() {
        let t = Target { pid: 42 };
        let cases = [
            ("/proc/self/mem", "/proc/42/mem"),
            ("/proc/self", "/proc/42"),
            ("/proc/thread-self/fd/1", "/proc/42/fd/1"),
            ("/dev/fd/63", "/proc/42/fd/63"),
            ("/proc/selfish", "/proc/selfish"),
            ("/etc/hosts", "/etc/hosts"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                t.own_proc(PathBuf::from(input)),
                PathBuf::from(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn gated_child_threads_and_fast_reads() {
        use crate::channel::handshake_channel;
        use crate::filter::{FilterOptions, install};
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, fork};

        let dir = scratch("threads");
        std::fs::create_dir_all(dir.join("secret")).unwrap();
        std::fs::write(dir.join("secret/f"), "x").unwrap();
        let policy = compile(
            &format!(
                r#"{{"file_rules": [{{"paths": ["{}/secret/**"], "decision": "deny"}}]}}"#,
                dir.display()
            ),
            &dir,
        );
        let (sup, agent) = handshake_channel().unwrap();
        let d = dir.clone();
        // SAFETY: see `run_gated`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(sup);
                // A thread that exists before the filter is installed is covered by TSYNC.
                let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
                let path = d.join("secret/f");
                let early = std::thread::spawn(move || {
                    let _ = go_rx.recv();
                    open_write(&path)
                });
                let code = (|| -> Result<i32, Box<dyn std::error::Error>> {
                    // The read fast path: read-only opens never reach the supervisor.
                    let fd = install(FilterOptions {
                        trap_read_opens: false,
                    })?;
                    agent.send_listener(&fd, "C-test")?;
                    drop(fd);
                    agent.wait_for_ack()?;
                    go_tx.send(())?;
                    if early.join().map_err(|_| "thread panicked")? != Err(libc::EACCES) {
                        return Ok(1);
                    }
                    // Denied by the policy, but allowed in the kernel without a round trip.
                    if open_read(&d.join("secret/f")).is_err() {
                        return Ok(2);
                    }
                    if open_write(&d.join("secret/g")) != Err(libc::EACCES) {
                        return Ok(3);
                    }
                    // x32 syscall numbers never reach the notify filter.
                    // SAFETY: an x32 openat with null arguments only returns an error.
                    let ret = unsafe { libc::syscall(0x4000_0000 | libc::SYS_openat, 0, 0, 0) };
                    if ret != -1 || errno() != libc::ENOSYS {
                        return Ok(4);
                    }
                    Ok(0)
                })()
                .unwrap_or(100);
                // SAFETY: see `run_gated`.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(agent);
                let (listener, channel) = sup.wait_for_listener().unwrap();
                let supervisor = Supervisor::new(policy, DenyAll, channel);
                let serving = std::thread::spawn(move || supervisor.serve(listener));
                sup.ack_listener().unwrap();
                let status = waitpid(child, None).unwrap();
                serving.join().unwrap().unwrap();
                assert_eq!(status, WaitStatus::Exited(child, 0));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fail_closed_when_supervisor_goes_away() {
        use crate::channel::handshake_channel;
        use crate::filter::{FilterOptions, install};
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, fork};

        let dir = scratch("gone");
        let (sup, agent) = handshake_channel().unwrap();
        let d = dir.clone();
        // SAFETY: see `run_gated`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(sup);
                let code = (|| -> Result<i32, Box<dyn std::error::Error>> {
                    let fd = install(FilterOptions::default())?;
                    agent.send_listener(&fd, "C-test")?;
                    drop(fd);
                    agent.wait_for_ack()?;
                    // No one serves the listener any more: trapped calls fail, they never run.
                    if open_write(&d.join("f")) != Err(libc::ENOSYS) {
                        return Ok(1);
                    }
                    if exec_fails_with("/bin/true") != libc::ENOSYS {
                        return Ok(2);
                    }
                    Ok(0)
                })()
                .unwrap_or(100);
                // SAFETY: see `run_gated`.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(agent);
                let (listener, _) = sup.wait_for_listener().unwrap();
                drop(listener);
                sup.ack_listener().unwrap();
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            }
        }
        assert!(!dir.join("f").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Opens the session cache allows run on a worker that stays for the next one (a thread
    /// start per open cost more than the open), several at once when one blocks, and the
    /// workers end with the supervisor.
    #[test]
    fn open_workers_are_reused_and_end_with_the_pool() {
        let pool = Arc::new(OpenWorkers::default());
        let (done, finished) = mpsc::channel();
        let job = |done: mpsc::Sender<std::thread::ThreadId>| -> OpenJob {
            Box::new(move || done.send(std::thread::current().id()).unwrap())
        };
        pool.run(job(done.clone())).unwrap();
        let first = finished.recv().unwrap();
        let idle_workers = |n: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while pool.idle.lock().unwrap().len() < n {
                assert!(std::time::Instant::now() < deadline, "no worker came back");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        // The worker puts itself back after its job; wait for that.
        idle_workers(1);
        pool.run(job(done.clone())).unwrap();
        assert_eq!(finished.recv().unwrap(), first);
        // A blocked worker does not hold the next job.
        let (unblock, blocked) = mpsc::channel::<()>();
        pool.run(Box::new(move || blocked.recv().unwrap())).unwrap();
        pool.run(job(done.clone())).unwrap();
        assert_ne!(finished.recv().unwrap(), first);
        unblock.send(()).unwrap();
        // Dropping the pool ends its workers (after the job in hand, here an empty one).
        idle_workers(2);
        let idle: Vec<Worker> = pool.idle.lock().unwrap().clone();
        drop(pool);
        for worker in idle {
            let (probe, _) = mpsc::channel();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while worker
                .0
                .send((Box::new(|| {}), Worker(probe.clone())))
                .is_ok()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a worker outlived its pool"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    /// The kernel accepts the synchronous wake-up flag on a real listener (Linux 6.6+).
    #[test]
    fn sync_wake_up_is_accepted_by_the_kernel() {
        use crate::channel::handshake_channel;
        use crate::filter::{FilterOptions, install};
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, fork};

        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release
            .split(['.', '-'])
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        let (sup, agent) = handshake_channel().unwrap();
        // SAFETY: see `run_gated`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(sup);
                let code = (|| -> Result<i32, Box<dyn std::error::Error>> {
                    let fd = install(FilterOptions::default())?;
                    agent.send_listener(&fd, "C-test")?;
                    drop(fd);
                    agent.wait_for_ack()?;
                    Ok(0)
                })()
                .unwrap_or(100);
                // SAFETY: see `run_gated`.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(agent);
                let (listener, _) = sup.wait_for_listener().unwrap();
                let set = set_sync_wake_up(&listener);
                if version >= (6, 6) {
                    set.unwrap();
                } else {
                    let errno = set.unwrap_err().raw_os_error();
                    assert!(
                        matches!(errno, Some(libc::EINVAL | libc::ENOTTY)),
                        "{errno:?}"
                    );
                }
                // An unknown flag is refused, so the kernel does read the flags we pass.
                // SAFETY: SET_FLAGS takes its flags by value.
                let ret = unsafe {
                    libc::ioctl(
                        listener.as_raw_fd(),
                        libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                        2u64,
                    )
                };
                assert_eq!(ret, -1);
                let supervisor = Supervisor::new(
                    Policy::baseline(&crate::policy::PolicyContext::new("/nonexistent")),
                    DenyAll,
                    "C-test",
                );
                let serving = std::thread::spawn(move || supervisor.serve(listener));
                sup.ack_listener().unwrap();
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
                serving.join().unwrap().unwrap();
            }
        }
    }
}
