//! The seccomp filter: which syscalls the gate traps, why, and how the filter is installed.
//!
//! The filter is data (the [`TRAPPED`] table), compiled with seccompiler. seccompiler 0.5 knows
//! neither `SECCOMP_RET_USER_NOTIF` nor `SECCOMP_FILTER_FLAG_NEW_LISTENER`, so the program is
//! built with `SeccompAction::Trace(MAGIC)` and every `BPF_RET|BPF_K` that returns
//! `SECCOMP_RET_TRACE | MAGIC` is patched to `SECCOMP_RET_USER_NOTIF` (see [`patch_notify`]);
//! the install is a raw `seccomp(2)` call.
//!
//! # Trapped syscalls and why
//!
//! | syscall | why |
//! |---|---|
//! | `execve`, `execveat` | every program the agent runs goes through `command_rules` |
//! | `openat`, `open`, `creat` | file reads and writes go through `file_rules` |
//! | `openat2` | the same, and its flags sit in a struct BPF cannot read, so it is always trapped |
//! | `rename`, `renameat`, `renameat2` | a rename deletes one path and creates (or replaces) another |
//! | `unlink`, `unlinkat`, `rmdir` | deletions |
//! | `mkdir`, `mkdirat` | creations |
//! | `link`, `linkat` | a hard link gives a second name to a protected file |
//! | `symlink`, `symlinkat` | a symlink is a second way into a protected path |
//! | `chmod`, `fchmodat`, `fchmodat2` | permission changes (e.g. making a dropped file executable) |
//! | `chown`, `fchownat`, `lchown` | ownership changes |
//! | `truncate` | destroys file content without an open |
//! | `connect` | unix sockets (`path_rules`, the docker socket) and TCP egress (`connect_rules`) |
//!
//! The legacy forms (`open`, `creat`, `rename`, `unlink`, `rmdir`, `mkdir`, `link`, `symlink`,
//! `chmod`, `chown`, `lchown`) exist only on x86_64; aarch64 has the `*at` forms alone.
//!
//! A second, separate filter always fails `io_uring_setup`, `io_uring_enter` and
//! `io_uring_register` with `EPERM`: io_uring performs opens, renames and connects from a kernel
//! thread without passing through the syscall entry that seccomp watches, so it would bypass the
//! gate entirely. On x86_64 that filter also fails every x32-ABI syscall (numbers with bit 30
//! set) with `ENOSYS`, since seccompiler compares syscall numbers exactly and `openat` through
//! the x32 table would otherwise not match. Other architectures (i386 through `int 0x80`) are
//! killed by seccompiler's architecture check.
//!
//! Not trapped, on purpose: `fchmod`/`fchown`/`ftruncate` work on an fd that an open already
//! checked; `stat(2)` and `getdents(2)` are too frequent to trap, so `stat` and `list` rules only
//! apply to opens with `O_PATH` and `O_DIRECTORY`.
//!
//! # Read-only opens
//!
//! `openat` is the most frequent syscall of a build or of node. A round trip to the supervisor
//! costs a context switch or two per open. When [`FilterOptions::trap_read_opens`] is false, the
//! BPF program only traps `open`/`openat` whose flags contain `O_WRONLY`, `O_RDWR`, `O_CREAT` or
//! `O_TRUNC`; read-only opens are allowed in the kernel at no cost. The trade-off: `file_rules`
//! covering `read`, `stat` or `list` (and a `default_decision` other than `allow` for reads)
//! stop applying. [`FilterOptions::for_policy`] therefore traps reads whenever the policy has
//! such a rule, and the baseline has some (`~/.ssh`, `/proc/*/mem`, `/etc/shadow`), so with the
//! baseline reads are trapped. A deployment that relies on file permissions for secrets can
//! choose speed by building the options itself.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::policy::Policy;

/// The `SECCOMP_RET_DATA` marker that [`patch_notify`] turns into `SECCOMP_RET_USER_NOTIF`.
const NOTIFY_MAGIC: u32 = 0x10a7;

/// Errors from building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// seccompiler rejected the rules (a bug in the table).
    #[error("cannot build seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// This architecture is not supported by seccompiler.
    #[error("unsupported architecture {0}")]
    Arch(&'static str),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed for the named filter.
    #[error("cannot install the {filter} seccomp filter")]
    Install {
        /// `deny` or `notify`.
        filter: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The program is longer than `u16::MAX` instructions.
    #[error("seccomp program of {0} instructions is too long")]
    TooLong(usize),
}

/// A trapped syscall and the reason it is trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrappedSyscall {
    /// The syscall's name.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: libc::c_long,
    /// Which argument holds open(2)-style flags, for the read-only fast path.
    pub open_flags_arg: Option<u8>,
}

const fn trap(name: &'static str, nr: libc::c_long) -> TrappedSyscall {
    TrappedSyscall {
        name,
        nr,
        open_flags_arg: None,
    }
}

/// The syscalls the notify filter sends to the supervisor. The reasons are in the module docs.
pub const TRAPPED: &[TrappedSyscall] = &[
    trap("execve", libc::SYS_execve),
    trap("execveat", libc::SYS_execveat),
    TrappedSyscall {
        name: "openat",
        nr: libc::SYS_openat,
        open_flags_arg: Some(2),
    },
    trap("openat2", libc::SYS_openat2),
    trap("renameat", libc::SYS_renameat),
    trap("renameat2", libc::SYS_renameat2),
    trap("unlinkat", libc::SYS_unlinkat),
    trap("mkdirat", libc::SYS_mkdirat),
    trap("linkat", libc::SYS_linkat),
    trap("symlinkat", libc::SYS_symlinkat),
    trap("fchmodat", libc::SYS_fchmodat),
    trap("fchmodat2", libc::SYS_fchmodat2),
    trap("fchownat", libc::SYS_fchownat),
    trap("truncate", libc::SYS_truncate),
    trap("connect", libc::SYS_connect),
    #[cfg(target_arch = "x86_64")]
    TrappedSyscall {
        name: "open",
        nr: libc::SYS_open,
        open_flags_arg: Some(1),
    },
    #[cfg(target_arch = "x86_64")]
    trap("creat", libc::SYS_creat),
    #[cfg(target_arch = "x86_64")]
    trap("rename", libc::SYS_rename),
    #[cfg(target_arch = "x86_64")]
    trap("unlink", libc::SYS_unlink),
    #[cfg(target_arch = "x86_64")]
    trap("rmdir", libc::SYS_rmdir),
    #[cfg(target_arch = "x86_64")]
    trap("mkdir", libc::SYS_mkdir),
    #[cfg(target_arch = "x86_64")]
    trap("link", libc::SYS_link),
    #[cfg(target_arch = "x86_64")]
    trap("symlink", libc::SYS_symlink),
    #[cfg(target_arch = "x86_64")]
    trap("chmod", libc::SYS_chmod),
    #[cfg(target_arch = "x86_64")]
    trap("chown", libc::SYS_chown),
    #[cfg(target_arch = "x86_64")]
    trap("lchown", libc::SYS_lchown),
];

/// Syscalls that always fail with `EPERM` (io_uring bypasses seccomp for the work it queues).
pub const ALWAYS_DENIED: &[(&str, libc::c_long)] = &[
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

/// The name of a trapped syscall number, for logs.
pub fn syscall_name(nr: i32) -> Option<&'static str> {
    TRAPPED
        .iter()
        .find(|t| t.nr == libc::c_long::from(nr))
        .map(|t| t.name)
}

/// How the notify filter is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterOptions {
    /// Trap read-only `open`/`openat` too. See "Read-only opens" in the module docs.
    pub trap_read_opens: bool,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            trap_read_opens: true,
        }
    }
}

impl FilterOptions {
    /// Traps reads exactly when the policy could answer something other than allow for them.
    pub fn for_policy(policy: &Policy) -> FilterOptions {
        FilterOptions {
            trap_read_opens: policy.needs_read_trap(),
        }
    }
}

fn target_arch() -> Result<TargetArch, FilterError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| FilterError::Arch(std::env::consts::ARCH))
}

/// The open(2) flags that make an open more than a read.
const MODIFYING_OPEN_FLAGS: [libc::c_int; 4] =
    [libc::O_WRONLY, libc::O_RDWR, libc::O_CREAT, libc::O_TRUNC];

/// Builds the notify program: every [`TRAPPED`] syscall returns `SECCOMP_RET_USER_NOTIF`,
/// everything else is allowed.
pub fn build_notify_program(options: FilterOptions) -> Result<BpfProgram, FilterError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for syscall in TRAPPED {
        let chain = match syscall.open_flags_arg {
            Some(arg) if !options.trap_read_opens => {
                // Rules in a chain are OR-ed: trap when any modifying flag is set.
                let mut chain = Vec::new();
                for flag in MODIFYING_OPEN_FLAGS {
                    let flag = u64::from(flag.unsigned_abs());
                    chain.push(SeccompRule::new(vec![SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(flag),
                        flag,
                    )?])?);
                }
                chain
            }
            _ => Vec::new(),
        };
        rules.insert(syscall.nr, chain);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Trace(NOTIFY_MAGIC),
        target_arch()?,
    )?;
    let mut program: BpfProgram = filter.try_into()?;
    patch_notify(&mut program);
    Ok(program)
}

/// Rewrites `return SECCOMP_RET_TRACE | NOTIFY_MAGIC` into `return SECCOMP_RET_USER_NOTIF`.
/// Returns how many instructions were patched.
pub fn patch_notify(program: &mut BpfProgram) -> usize {
    let from = libc::SECCOMP_RET_TRACE | NOTIFY_MAGIC;
    let mut patched = 0;
    for insn in program.iter_mut() {
        if insn.code == BPF_RET_K && insn.k == from {
            insn.k = libc::SECCOMP_RET_USER_NOTIF;
            patched += 1;
        }
    }
    patched
}

// Classic BPF opcodes (linux/bpf_common.h); seccompiler keeps its own private.
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const SECCOMP_DATA_ARCH: u32 = 4;
/// x32 syscalls are the x86_64 numbers with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 243 | 0x8000_0000 | 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Builds the deny program: io_uring fails with `EPERM`, x32 syscalls with `ENOSYS`, a foreign
/// architecture kills the process, everything else is allowed. Hand-written because seccompiler
/// has one match action per filter and cannot compare syscall numbers by range.
pub fn build_deny_program() -> BpfProgram {
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e.unsigned_abs() & libc::SECCOMP_RET_DATA);
    let mut program = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        program.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        program.push(stmt(BPF_RET_K, errno(libc::ENOSYS)));
    }
    for (_, nr) in ALWAYS_DENIED {
        // Syscall numbers are small and positive; a failed conversion could only come from a
        // broken libc table and then simply never matches.
        let nr = u32::try_from(*nr).unwrap_or(u32::MAX);
        program.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
        program.push(stmt(BPF_RET_K, errno(libc::EPERM)));
    }
    program.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    program
}

fn seccomp_set_filter(
    program: &BpfProgram,
    flags: libc::c_ulong,
    filter: &'static str,
) -> Result<libc::c_long, FilterError> {
    let len = u16::try_from(program.len()).map_err(|_| FilterError::TooLong(program.len()))?;
    // seccompiler's `sock_filter` is `#[repr(C)] { u16, u8, u8, u32 }`, the same layout as
    // libc's (both copy linux/filter.h), so the pointer can be reinterpreted.
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: JUSTIFICATION: seccomp(2) has no safe wrapper that accepts the listener flag.
    // `prog` points at `program`, which outlives the call; the kernel copies the instructions
    // and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(FilterError::Install {
            filter,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(ret)
}

/// Sets `no_new_privs`, installs the deny filter and then the notify filter on every thread of
/// the calling process, and returns the notify listener.
///
/// Call this in the process that will run the agent (the `syscallwrap` child), never in the
/// supervisor: a supervisor under its own filter deadlocks on its first trapped syscall.
pub fn install(options: FilterOptions) -> Result<OwnedFd, FilterError> {
    let notify = build_notify_program(options)?;
    let deny = build_deny_program();
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if ret != 0 {
        return Err(FilterError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    // The deny filter goes first and without a listener: the kernel allows only one listener
    // in a task's filter chain, and ERRNO outranks USER_NOTIF whatever the order.
    seccomp_set_filter(&deny, libc::SECCOMP_FILTER_FLAG_TSYNC, "deny")?;
    // TSYNC together with NEW_LISTENER needs TSYNC_ESRCH: without it the return value would be
    // ambiguous (a thread id on sync failure, or the fd), and the kernel answers EINVAL.
    let fd = seccomp_set_filter(
        &notify,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
            | libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
        "notify",
    )?;
    let fd = libc::c_int::try_from(fd).map_err(|_| FilterError::Install {
        filter: "notify",
        source: std::io::Error::from_raw_os_error(libc::EBADF),
    })?;
    // SAFETY: the kernel just returned `fd` as a new listener that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_program_is_patched() {
        let mut program = build_notify_program(FilterOptions::default()).unwrap();
        assert!(
            program
                .iter()
                .any(|i| i.code == BPF_RET_K && i.k == libc::SECCOMP_RET_USER_NOTIF)
        );
        assert!(
            !program
                .iter()
                .any(|i| i.k == libc::SECCOMP_RET_TRACE | NOTIFY_MAGIC)
        );
        assert_eq!(patch_notify(&mut program), 0);
    }

    #[test]
    fn read_fast_path_adds_flag_checks() {
        let all = build_notify_program(FilterOptions {
            trap_read_opens: true,
        })
        .unwrap();
        let fast = build_notify_program(FilterOptions {
            trap_read_opens: false,
        })
        .unwrap();
        assert!(fast.len() > all.len());
    }

    #[test]
    fn table_has_no_duplicates_and_names_resolve() {
        let mut nrs: Vec<_> = TRAPPED.iter().map(|t| t.nr).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), TRAPPED.len());
        assert_eq!(
            syscall_name(i32::try_from(libc::SYS_execve).unwrap()),
            Some("execve")
        );
        assert_eq!(syscall_name(-1), None);
    }

    #[test]
    fn deny_program_ends_in_allow() {
        let p = build_deny_program();
        assert_eq!(p.last().unwrap().k, libc::SECCOMP_RET_ALLOW);
        let errnos = p
            .iter()
            .filter(|i| {
                i.code == BPF_RET_K && i.k == libc::SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs()
            })
            .count();
        assert_eq!(errnos, ALWAYS_DENIED.len());
    }
}
