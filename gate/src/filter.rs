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
    let mut program = seccompiler_program(options)?;
    patch_notify(&mut program);
    if options.trap_read_opens {
        return Ok(program);
    }
    Ok(with_read_fast_path(program))
}

/// seccompiler's program for [`TRAPPED`], before [`patch_notify`].
fn seccompiler_program(options: FilterOptions) -> Result<BpfProgram, FilterError> {
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
    Ok(filter.try_into()?)
}

/// Puts the read-only opens' answer in front of `program`: seccompiler compares syscall
/// numbers one after the other in numeric order (`openat` is the 16th on x86_64), and opens are
/// the one untrapped call that runs the program at all (the kernel's seccomp action cache
/// answers a syscall whose verdict does not depend on its arguments, like `getpid`, without
/// running any filter). A read-only `open`/`openat` returns `ALLOW` after 7 instructions;
/// everything else, including an open with a modifying flag, falls through to `program`,
/// which decides exactly as before.
fn with_read_fast_path(program: BpfProgram) -> BpfProgram {
    let modifying = MODIFYING_OPEN_FLAGS
        .iter()
        .fold(0u32, |mask, flag| mask | flag.unsigned_abs());
    let mut prefix = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 0, 0), // jf: to `program`
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    ];
    for syscall in TRAPPED {
        let (Some(arg), Ok(nr)) = (syscall.open_flags_arg, u32::try_from(syscall.nr)) else {
            continue;
        };
        // The low 32 bits of the argument (flags are an int; x86_64 and aarch64 are little
        // endian, as seccompiler assumes too).
        let offset = SECCOMP_DATA_ARGS + 8 * u32::from(arg);
        prefix.push(jump(BPF_JMP_JEQ_K, nr, 0, 3)); // jf: the next syscall's test
        prefix.push(stmt(BPF_LD_W_ABS, offset));
        prefix.push(jump(BPF_JMP_JSET_K, modifying, 0, 0)); // jt: to `program`
        prefix.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        prefix.push(stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)); // the next test needs nr again
    }
    // Point the placeholder jumps (jf of the arch test, jt of each JSET) at `program`. The
    // prefix is a few instructions long; should it ever not fit a jump, go without it.
    let start = prefix.len();
    for (at, insn) in prefix.iter_mut().enumerate() {
        let Ok(to_program) = u8::try_from(start - at - 1) else {
            return program;
        };
        if insn.code == BPF_JMP_JEQ_K && insn.k == AUDIT_ARCH {
            insn.jf = to_program;
        } else if insn.code == BPF_JMP_JSET_K {
            insn.jt = to_program;
        }
    }
    prefix.extend(program);
    prefix
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
/// `BPF_JMP | BPF_JSET | BPF_K`.
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;
/// `offsetof(struct seccomp_data, args)`.
const SECCOMP_DATA_ARGS: u32 = 16;
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

    /// Runs a classic BPF program the way the kernel does, for the instructions the gate's
    /// programs use. Returns the verdict and how many instructions ran.
    fn run(program: &[sock_filter], data: &[u8; 64]) -> (u32, usize) {
        let word = |k: u32| {
            let k = k as usize;
            u32::from_ne_bytes(data[k..k + 4].try_into().unwrap())
        };
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let insn = &program[pc];
            steps += 1;
            pc += 1;
            match insn.code {
                BPF_LD_W_ABS => a = word(insn.k),
                0x54 => a &= insn.k,           // BPF_ALU | BPF_AND | BPF_K
                0x05 => pc += insn.k as usize, // BPF_JMP | BPF_JA
                BPF_JMP_JEQ_K | BPF_JMP_JGE_K | BPF_JMP_JSET_K | 0x25 => {
                    let taken = match insn.code {
                        BPF_JMP_JEQ_K => a == insn.k,
                        BPF_JMP_JGE_K => a >= insn.k,
                        BPF_JMP_JSET_K => a & insn.k != 0,
                        _ => a > insn.k, // BPF_JGT
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                BPF_RET_K => return (insn.k, steps),
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    fn seccomp_data(arch: u32, nr: libc::c_long, args: [u64; 6]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        data
    }

    /// The read fast path answers a read-only open in a handful of instructions, and decides
    /// every call exactly as the program behind it does.
    #[test]
    fn read_fast_path_comes_first_and_decides_as_before() {
        let options = FilterOptions {
            trap_read_opens: false,
        };
        let fast = build_notify_program(options).unwrap();
        let mut plain = seccompiler_program(options).unwrap();
        patch_notify(&mut plain);
        let flags = [
            0,
            libc::O_CLOEXEC,
            libc::O_DIRECTORY | libc::O_CLOEXEC,
            libc::O_PATH,
            libc::O_NOFOLLOW | libc::O_NONBLOCK,
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_ACCMODE,
            libc::O_CREAT,
            libc::O_TRUNC,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            libc::O_TMPFILE | libc::O_RDWR,
            libc::O_APPEND,
        ];
        let mut nrs: Vec<libc::c_long> = TRAPPED.iter().map(|t| t.nr).collect();
        nrs.extend([libc::SYS_getpid, libc::SYS_read, libc::SYS_close, 0, 1000]);
        for arch in [AUDIT_ARCH, 0x4000_0003] {
            for &nr in &nrs {
                for &flag in &flags {
                    for high in [0u64, 0xffff_ffff_0000_0000] {
                        let flag = u64::from(flag.unsigned_abs()) | high;
                        let args = [flag, flag, flag, flag, 0, 0];
                        let data = seccomp_data(arch, nr, args);
                        assert_eq!(
                            run(&fast, &data).0,
                            run(&plain, &data).0,
                            "arch {arch:#x} nr {nr} flags {flag:#x}"
                        );
                    }
                }
            }
        }
        let read = seccomp_data(
            AUDIT_ARCH,
            libc::SYS_openat,
            [0, 0, libc::O_CLOEXEC as u64, 0, 0, 0],
        );
        let (verdict, steps) = run(&fast, &read);
        assert_eq!(verdict, libc::SECCOMP_RET_ALLOW);
        assert!(steps <= 8, "a read-only openat runs {steps} instructions");
        let write = seccomp_data(
            AUDIT_ARCH,
            libc::SYS_openat,
            [0, 0, libc::O_WRONLY as u64, 0, 0, 0],
        );
        assert_eq!(run(&fast, &write).0, libc::SECCOMP_RET_USER_NOTIF);
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
