//! Race-free opens: the supervisor opens the file itself, as the agent, and injects the fd
//! into the waiting syscall with `SECCOMP_IOCTL_NOTIF_ADDFD` (`SECCOMP_ADDFD_FLAG_SEND`), so
//! the kernel never reads the path from the agent's memory again.
//!
//! Answering `CONTINUE` after a check lets another thread of the agent rewrite the path between
//! the check and the kernel's own read (for an approval, that window is as long as a person
//! takes to press a button). Here the path that was checked is the path that is opened, and
//! the opened file is checked once more by where it really is: every directory is resolved by
//! the kernel into an fd first, the fd's real path is verified, and the last component is
//! opened beneath that fd without following symlinks (a symlink there is followed by hand,
//! each hop verified). A directory swapped for a symlink after the approval therefore lands on
//! a verified real path or fails with `EACCES`.
//!
//! The open runs on a thread of its own (the supervisor's open workers, or the approval's
//! thread) that takes the agent's credentials for the file system (fsuid, fsgid,
//! supplementary groups; read from `/proc/PID/status` for every open, with the umask, which is
//! applied to the mode), so the agent gets exactly the access its own open would have had,
//! never the supervisor's. A worker keeps them until an open of different credentials.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::policy::normalize;

/// Symlinks followed by hand before giving up with `ELOOP` (the kernel allows 40; a path the
/// agent may open after approval has no reason to chain more than a few).
const MAX_HOPS: usize = 8;

/// An open-family syscall (`open`, `openat`, `openat2`, `creat`) as the supervisor checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCall {
    /// The absolute, normalised path the policy saw.
    pub path: PathBuf,
    /// The open flags.
    pub flags: i32,
    /// The creation mode (before the agent's umask).
    pub mode: u32,
    /// `openat2`'s `resolve` flags (0 for the others).
    pub resolve: u64,
}

impl OpenCall {
    /// Whether the supervisor can perform this open itself. `/proc` (magic links to another
    /// process's files) and `openat2`'s `RESOLVE_BENEATH`/`RESOLVE_IN_ROOT` (relative to a
    /// dirfd the absolute path no longer names) stay with the kernel (`CONTINUE`).
    pub fn injectable(&self) -> bool {
        let scoped = libc::RESOLVE_BENEATH | libc::RESOLVE_IN_ROOT;
        !self.path.starts_with("/proc") && self.resolve & scoped == 0
    }

    /// Whether the injected fd is close-on-exec.
    pub fn cloexec(&self) -> bool {
        self.flags & libc::O_CLOEXEC != 0
    }

    fn follows_last(&self) -> bool {
        self.flags & libc::O_NOFOLLOW == 0 && self.resolve & libc::RESOLVE_NO_SYMLINKS == 0
    }
}

/// The agent's file-system credentials, as its own open would use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// File-system uid.
    pub fsuid: u32,
    /// File-system gid.
    pub fsgid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The process's umask.
    pub umask: u32,
}

impl Creds {
    /// Reads the credentials of `pid` from `/proc/PID/status`.
    pub fn of(pid: u32) -> io::Result<Creds> {
        use std::io::Read;
        // Plain reads into a buffer the size of a status file: `read_to_string` adds a statx
        // and an lseek for a size hint that /proc does not have.
        let mut file = std::fs::File::open(format!("/proc/{pid}/status"))?;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(len * 2, 0);
            }
            match file.read(&mut buf[len..])? {
                0 => break,
                n => len += n,
            }
        }
        let status = String::from_utf8_lossy(&buf[..len]);
        Creds::parse(&status).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected /proc/{pid}/status"),
            )
        })
    }

    /// Parses the `Uid:`, `Gid:`, `Groups:` and `Umask:` lines of a status file.
    pub fn parse(status: &str) -> Option<Creds> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        // `Uid: real effective saved fs`.
        let fourth =
            |name: &str| -> Option<u32> { field(name)?.split_whitespace().nth(3)?.parse().ok() };
        let groups = field("Groups:")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .ok()?;
        Some(Creds {
            fsuid: fourth("Uid:")?,
            fsgid: fourth("Gid:")?,
            groups,
            umask: u32::from_str_radix(field("Umask:")?, 8).ok()?,
        })
    }
}

/// Opens `call` as `creds` would, on a thread of its own, checking every real path the open
/// resolves to with `verify` (false: `EACCES`). Returns the fd or the errno the agent gets.
pub fn open_as(
    creds: &Creds,
    call: &OpenCall,
    verify: &(dyn Fn(&Path) -> bool + Sync),
) -> Result<OwnedFd, i32> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("loop-gate-open".to_owned())
            .spawn_scoped(scope, || {
                assume(creds)?;
                open_verified(call, creds.umask, verify)
            });
        match worker {
            Ok(handle) => handle.join().unwrap_or(Err(libc::EACCES)),
            Err(_) => Err(libc::EAGAIN),
        }
    })
}

/// [`open_as`] on the calling thread, which keeps the agent's file-system credentials
/// afterwards: only for a thread that does nothing else (the supervisor's open workers, or an
/// approval thread that ends after answering). Saves a thread per open.
pub(crate) fn open_as_on_this_thread(
    creds: &Creds,
    call: &OpenCall,
    verify: &(dyn Fn(&Path) -> bool + Sync),
) -> Result<OwnedFd, i32> {
    ASSUMED.with(|assumed| {
        // The fs ids and groups of this thread change only here: a worker that already holds
        // these credentials (the agent's next open) skips five credential syscalls.
        if assumed.borrow().as_ref() != Some(creds) {
            *assumed.borrow_mut() = None;
            assume(creds)?;
            *assumed.borrow_mut() = Some(creds.clone());
        }
        Ok::<(), i32>(())
    })?;
    open_verified(call, creds.umask, verify)
}

thread_local! {
    /// The credentials [`open_as_on_this_thread`] last took on this thread.
    static ASSUMED: std::cell::RefCell<Option<Creds>> = const { std::cell::RefCell::new(None) };
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EACCES)
}

/// Takes `creds` for this thread only: groups and fs ids. The raw syscalls matter: glibc's
/// `setgroups` would change every thread of the supervisor. The umask is process-wide and
/// Docker's seccomp profile refuses `unshare(CLONE_FS)`, so the supervisor's umask is 0 and
/// the agent's is applied to the mode by hand ([`open_verified`]).
fn assume(creds: &Creds) -> Result<(), i32> {
    // SAFETY: umask cannot fail; the supervisor creates no files of its own.
    unsafe { libc::umask(0) };
    // SAFETY: the pointer and length describe a live slice of gid_t (u32).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            creds.groups.len(),
            creds.groups.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    // setfsuid/setfsgid report failure only by not changing the id: set, then read back.
    for (nr, id) in [
        (libc::SYS_setfsgid, creds.fsgid),
        (libc::SYS_setfsuid, creds.fsuid),
    ] {
        // SAFETY: plain integer syscalls on this thread's credentials.
        let now = unsafe {
            libc::syscall(nr, id);
            libc::syscall(nr, u32::MAX)
        };
        if now != libc::c_long::from(id) {
            return Err(libc::EPERM);
        }
    }
    Ok(())
}

fn cstring(bytes: &[u8]) -> Result<CString, i32> {
    CString::new(bytes).map_err(|_| libc::EINVAL)
}

fn openat2(dir: RawFd, name: &[u8], flags: i32, mode: u32, resolve: u64) -> Result<OwnedFd, i32> {
    let name = cstring(name)?;
    // SAFETY: open_how is plain data; zeroed is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::from(flags as u32);
    // The kernel rejects a mode without O_CREAT/O_TMPFILE.
    let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    how.mode = if creates { u64::from(mode & 0o7777) } else { 0 };
    how.resolve = resolve;
    // SAFETY: name is NUL-terminated, how is a live open_how and its size is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    let fd = RawFd::try_from(fd).map_err(|_| libc::EBADF)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The real path of an fd we hold.
fn real_path(fd: &OwnedFd) -> Result<PathBuf, i32> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))
}

fn readlinkat(dir: &OwnedFd, name: &[u8]) -> Result<PathBuf, i32> {
    let name = cstring(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: name is NUL-terminated; buf is writable for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| last_errno())?;
    buf.truncate(n);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

fn open_verified(
    call: &OpenCall,
    umask: u32,
    verify: &(dyn Fn(&Path) -> bool + Sync),
) -> Result<OwnedFd, i32> {
    // As the kernel would apply the agent's umask (a default ACL on the directory is the one
    // case where the kernel would not: the result is then stricter than the agent's own open).
    let mode = call.mode & !(umask & 0o777);
    // Flags the agent chose that our resolution must keep; our own fds never leak into execs.
    let extra_resolve = call.resolve & (libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV);
    let flags = (call.flags | libc::O_CLOEXEC) & !libc::O_NOFOLLOW;
    let mut path = call.path.clone();
    for _ in 0..=MAX_HOPS {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            // "/" itself: nothing can be swapped above it.
            if !verify(&path) {
                return Err(libc::EACCES);
            }
            return openat2(libc::AT_FDCWD, b"/", flags, mode, extra_resolve);
        };
        let name = name.as_bytes();
        let dir = openat2(
            libc::AT_FDCWD,
            parent.as_os_str().as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
            extra_resolve,
        )?;
        let real_parent = real_path(&dir)?;
        let real = real_parent.join(OsStr::from_bytes(name));
        if !verify(&real) {
            tracing::warn!(checked = %call.path.display(), now = %real.display(), "path changed since it was checked, denying");
            return Err(libc::EACCES);
        }
        match openat2(
            dir.as_raw_fd(),
            name,
            flags,
            mode,
            extra_resolve | libc::RESOLVE_NO_SYMLINKS,
        ) {
            // ELOOP from RESOLVE_NO_SYMLINKS: the last component is a symlink.
            Err(libc::ELOOP) if call.follows_last() => {
                let target = readlinkat(&dir, name)?;
                path = normalize(&real_parent.join(target));
            }
            other => return other,
        }
    }
    Err(libc::ELOOP)
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`: installs `fd` in the target
/// and completes its syscall with the new fd number as the return value, atomically.
pub fn send_fd(listener: RawFd, id: u64, fd: &OwnedFd, cloexec: bool) -> io::Result<()> {
    let addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: u32::try_from(fd.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: ADDFD reads one seccomp_notif_addfd from the pointer, which points at a live one.
    let rc = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_the_fs_credentials() {
        let status = "Name:\tbash\nUmask:\t0027\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\nGroups:\t4 27 100 \n";
        assert_eq!(
            Creds::parse(status),
            Some(Creds {
                fsuid: 1001,
                fsgid: 101,
                groups: vec![4, 27, 100],
                umask: 0o027
            })
        );
        assert_eq!(Creds::parse("Uid:\t1\n"), None);
        let own = Creds::of(std::process::id()).expect("own status");
        // SAFETY: getuid cannot fail.
        assert_eq!(own.fsuid, unsafe { libc::geteuid() });
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loop-inject-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    fn call(path: &Path, flags: i32) -> OpenCall {
        OpenCall {
            path: path.to_path_buf(),
            flags,
            mode: 0o666,
            resolve: 0,
        }
    }

    /// A worker thread keeps the last credentials it took, and takes new ones when the next
    /// open is someone else's (the files it creates belong to whoever asked).
    #[test]
    fn a_worker_takes_each_callers_credentials() {
        let dir = scratch("creds");
        // The scratch directory must let `nobody` create files.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let root = Creds::of(std::process::id()).expect("creds");
        let nobody = Creds {
            fsuid: 65534,
            fsgid: 65534,
            groups: vec![],
            umask: 0o022,
        };
        let write = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let owner = |name: &str| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(dir.join(name)).expect("created").uid()
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let allowed = |_: &Path| true;
                for (name, creds) in [("a", &nobody), ("b", &nobody), ("c", &root), ("d", &nobody)]
                {
                    open_as_on_this_thread(creds, &call(&dir.join(name), write), &allowed)
                        .expect("opens");
                }
            });
        });
        assert_eq!(
            ["a", "b", "c", "d"].map(owner),
            [65534, 65534, root.fsuid, 65534]
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn opens_what_was_checked_and_refuses_a_swapped_directory() {
        let dir = scratch("swap");
        let creds = Creds::of(std::process::id()).expect("creds");
        std::fs::create_dir(dir.join("ok")).expect("mkdir");
        std::fs::create_dir(dir.join("secret")).expect("mkdir");
        let checked = dir.join("ok/file");
        let allowed = |p: &Path| p.starts_with(dir.join("ok"));
        let write = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

        let fd = open_as(&creds, &call(&checked, write), &allowed).expect("opens");
        assert_eq!(real_path(&fd).expect("path"), checked);

        // The directory is swapped for a symlink to somewhere else after the check.
        std::fs::rename(dir.join("ok"), dir.join("ok-old")).expect("rename");
        std::os::unix::fs::symlink(dir.join("secret"), dir.join("ok")).expect("symlink");
        assert_eq!(
            open_as(&creds, &call(&checked, write), &allowed).err(),
            Some(libc::EACCES)
        );
        assert!(!dir.join("secret/file").exists(), "nothing created there");

        // A symlink as the last component is followed hop by hop, each hop verified.
        std::fs::remove_file(dir.join("ok")).expect("unlink");
        std::fs::rename(dir.join("ok-old"), dir.join("ok")).expect("rename back");
        std::os::unix::fs::symlink(dir.join("ok/file"), dir.join("ok/link")).expect("symlink");
        let fd = open_as(
            &creds,
            &call(&dir.join("ok/link"), libc::O_RDONLY),
            &allowed,
        )
        .expect("follows");
        assert_eq!(real_path(&fd).expect("path"), checked);
        std::os::unix::fs::symlink(dir.join("secret/x"), dir.join("ok/out")).expect("symlink");
        assert_eq!(
            open_as(&creds, &call(&dir.join("ok/out"), write), &allowed).err(),
            Some(libc::EACCES)
        );
        assert_eq!(
            open_as(
                &creds,
                &call(&dir.join("ok/link"), libc::O_RDONLY | libc::O_NOFOLLOW),
                &allowed
            )
            .err(),
            Some(libc::ELOOP)
        );
        // Errors are the kernel's own.
        assert_eq!(
            open_as(
                &creds,
                &call(&dir.join("ok/none"), libc::O_RDONLY),
                &allowed
            )
            .err(),
            Some(libc::ENOENT)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn creates_with_the_agents_umask() {
        let dir = scratch("umask");
        let mut creds = Creds::of(std::process::id()).expect("creds");
        creds.umask = 0o077;
        let path = dir.join("new");
        let fd = open_as(
            &creds,
            &call(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL),
            &|_: &Path| true,
        )
        .expect("creates");
        drop(fd);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
