//! The anchor's spawn: forked straight into a cgroup
//! (`clone3(CLONE_INTO_CGROUP)`) or plainly (`fork`), and never waited
//! for: the caller learns from a pipe, in its own event loop, whether the
//! program runs.
//!
//! Why not `std::process::Command` and a write of the pid into
//! `cgroup.procs`: a migration takes the kernel's global cgroup lock for
//! writing, which waits for an RCU grace period unless another migration
//! ran moments before — 10 ms and more per isolated restart, seen here,
//! twice the rest of the restart. A child forked into its cgroup takes
//! that lock for reading only. `Command` cannot fork into a cgroup, and it
//! blocks until the child has `exec`'d (its own close-on-exec pipe): the
//! anchor, one thread serving every process of the stack, would do each
//! spawn's `exec` in turn (about 2 ms each under load). So this is the
//! one spawn stackctl does itself; only the anchor uses it, which has one
//! thread (nothing can hold a lock across the fork). Everything else
//! (the supervisor's one-shots, launching the anchor and the supervisor)
//! spawns with `Command`, and waits for its `exec`.
//!
//! The child does what `Command` would: stdin from `/dev/null`, stdout and
//! stderr onto the given fds, the working directory, the common child-side
//! set-up (`super::child_prepare`), then `execve` of the program — found
//! along the `PATH` of its own environment, as `execvp` does — with
//! exactly the given environment; an error before or at `exec` comes back
//! through a close-on-exec pipe as an errno ([`Forked`]), and the child
//! exits; the caller reaps it.
//!
//! Owns: that spawn. Must not touch: which cgroup (`cgroup`), what runs,
//! reaping.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `clone3`'s flag: the child starts in the cgroup of `cgroup`'s fd.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (up to `cgroup`, `CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// How a start failed.
#[derive(Debug)]
pub(super) enum IntoError {
    /// The kernel would not fork into the cgroup (no `clone3`, a seccomp
    /// filter, no permission): nothing ran; spawn it another way.
    Clone(io::Error),
    /// Nothing could be forked (the command, a pipe, `fork` itself).
    Start(io::Error),
}

/// A child forked by [`start`] that has not yet been seen to `exec`.
///
/// Its report pipe ([`Forked::report`]) becomes readable once the child
/// has `exec`'d (the pipe closed on exec: end of file) or failed before
/// or at `exec` (an errno, then end of file: the child exits at once with
/// 127); [`Forked::outcome`] then says which without blocking. The
/// caller reaps the child in either case, as any other.
#[derive(Debug)]
pub struct Forked {
    pid: i32,
    report: OwnedFd,
}

impl Forked {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Readable (or hung up) once the outcome is known.
    pub fn report(&self) -> BorrowedFd<'_> {
        self.report.as_fd()
    }

    /// The pid once the program runs, or why it could not be executed.
    /// Blocks until the outcome is known (not at all once
    /// [`Forked::report`] polled readable).
    ///
    /// # Errors
    /// The errno the child reported.
    pub fn outcome(self) -> io::Result<i32> {
        match read_errno(&self.report) {
            None => Ok(self.pid),
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Forks `argv` to run in `cwd` with exactly `env` — into the cgroup of
/// `cgroup` (`clone3`) when given, else a plain `fork` —, stdout to `out`
/// and stderr to `err` (they may be the same fd), the fds in `keep` left
/// open across `exec`. Returns as soon as the child is forked; whether
/// the program runs is [`Forked::outcome`]'s. Only for a single-threaded
/// process (nothing may hold a lock across the fork).
///
/// # Errors
/// See [`IntoError`].
pub(super) fn start(
    cgroup: Option<BorrowedFd<'_>>,
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    out: BorrowedFd<'_>,
    err: BorrowedFd<'_>,
    keep: &[RawFd],
) -> Result<Forked, IntoError> {
    let prep = Prepared::new(argv, cwd, env).map_err(IntoError::Start)?;
    let null = Low::lift(dev_null().map_err(IntoError::Start)?)?;
    let out = Low::lift(out)?;
    let err = Low::lift(err)?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| IntoError::Start(e.into()))?;
    // The write end closes here when this returns: only the child's copy
    // stays, which its exec closes.
    let report_w = Low::lift(report_w.as_fd())?;
    let fds = ChildFds {
        null: null.raw(),
        out: out.raw(),
        err: err.raw(),
        report: report_w.raw(),
    };
    let sigrtmax = libc::SIGRTMAX();
    let pid = match cgroup {
        Some(cg) => clone_into(cg.as_raw_fd()).map_err(IntoError::Clone)?,
        None => plain_fork().map_err(IntoError::Start)?,
    };
    if pid == 0 {
        child(&prep, fds, sigrtmax, keep);
    }
    Ok(Forked {
        pid,
        report: report_r,
    })
}

/// An fd the child moves onto 0, 1 or 2, or keeps: a copy at 3 and above
/// when it is itself at 0-2 (the child's `dup2` onto 0, 1 and 2 could
/// overwrite it, whatever this process has there), else itself.
struct Low<'a> {
    fd: BorrowedFd<'a>,
    copy: Option<OwnedFd>,
}

impl<'a> Low<'a> {
    fn lift(fd: BorrowedFd<'a>) -> Result<Low<'a>, IntoError> {
        let copy = if fd.as_raw_fd() <= 2 {
            // F_DUPFD_CLOEXEC from 3.
            Some(fd.try_clone_to_owned().map_err(IntoError::Start)?)
        } else {
            None
        };
        Ok(Low { fd, copy })
    }

    fn raw(&self) -> RawFd {
        self.copy
            .as_ref()
            .map_or(self.fd.as_raw_fd(), AsRawFd::as_raw_fd)
    }
}

/// `/dev/null`, opened once (close-on-exec; each child gets a copy at 0).
fn dev_null() -> io::Result<BorrowedFd<'static>> {
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_fd());
    }
    let fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
    Ok(NULL.get_or_init(|| fd).as_fd())
}

/// Whether a child forked into the cgroup of `cgroup` lives: it exits at
/// once, and must end with 0. A kernel that refuses the fork, or that
/// kills the child at birth (one that compares the cgroup's `cgroup.kill`
/// count with the parent's, once the parent's cgroup was killed), fails.
///
/// # Errors
/// The refusal, or how the child ended.
pub(super) fn probe(cgroup: BorrowedFd<'_>) -> io::Result<()> {
    let pid = clone_into(cgroup.as_raw_fd())?;
    if pid == 0 {
        // SAFETY: the child of a single-threaded process ends at once,
        // running none of the parent's exit-time code.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(0)
        }
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(other) => {
                return Err(io::Error::other(format!(
                    "a child forked into it did not live: {other:?}"
                )))
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Everything the child needs, built before the fork (the child only
/// reads it: no allocation after the fork).
struct Prepared {
    /// The paths to try, in order (one, or one per `PATH` entry).
    candidates: Vec<CString>,
    /// What the pointers point into (kept alive, never read directly).
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    cwd: CString,
    /// NULL-terminated arrays of pointers into `argv` and `envp`.
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

/// NULL-terminated pointers to `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Prepared {
    fn new(argv: &[String], cwd: &Path, env: &[(String, String)]) -> io::Result<Prepared> {
        let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a command");
        let Some(program) = argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let candidates = if program.contains('/') {
            vec![CString::new(program.as_str()).map_err(nul)?]
        } else {
            let path = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            path.split(':')
                .map(|dir| if dir.is_empty() { "." } else { dir })
                .map(|dir| CString::new(format!("{dir}/{program}")).map_err(nul))
                .collect::<io::Result<Vec<_>>>()?
        };
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(nul))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(nul))
            .collect::<io::Result<_>>()?;
        Ok(Prepared {
            candidates,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _argv: argv,
            _envp: envp,
            cwd: CString::new(cwd.as_os_str().as_bytes()).map_err(nul)?,
        })
    }
}

#[derive(Clone, Copy)]
struct ChildFds {
    null: RawFd,
    out: RawFd,
    err: RawFd,
    report: RawFd,
}

/// `clone3` into the cgroup of `fd`: the child's pid, or 0 in the child.
#[allow(unsafe_code)]
fn clone_into(fd: RawFd) -> io::Result<i32> {
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a fork (no CLONE_VM, no new stack): the child gets a copy of
    // this process's memory and returns here with 0, like fork(2); `args`
    // is a valid clone_args of the size passed. The caller is the anchor,
    // which has one thread, so the child inherits no lock held elsewhere.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(r).map_err(|_| io::Error::other("clone3 returned a bad pid"))
}

/// A plain `fork`: the child's pid, or 0 in the child.
#[allow(unsafe_code)]
fn plain_fork() -> io::Result<i32> {
    // SAFETY: the caller is single-threaded (the anchor), so the child
    // inherits no lock held elsewhere; it only makes system calls until
    // `exec` or `_exit`.
    let r = unsafe { libc::fork() };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// The child, between the fork and `exec`: system calls only. Never
/// returns.
#[allow(unsafe_code)]
fn child(prep: &Prepared, fds: ChildFds, sigrtmax: i32, keep: &[RawFd]) -> ! {
    let fail = |errno: i32| -> ! {
        let bytes = errno.to_ne_bytes();
        // SAFETY: writes 4 bytes from a stack buffer to the report pipe,
        // then ends the child without running any of the parent's
        // exit-time code.
        unsafe {
            libc::write(fds.report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        }
    };
    let last = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: dup2 and chdir on fds and a NUL-terminated path owned by
    // `prep` and the parent, all valid in this copy of its memory.
    unsafe {
        if libc::dup2(fds.null, 0) < 0 || libc::dup2(fds.out, 1) < 0 || libc::dup2(fds.err, 2) < 0 {
            fail(last());
        }
        if libc::chdir(prep.cwd.as_ptr()) != 0 {
            fail(last());
        }
    }
    if let Err(e) = super::child_prepare(sigrtmax, keep) {
        fail(e.raw_os_error().unwrap_or(libc::EIO));
    }
    // As execvp: the first that runs; EACCES is kept over ENOENT.
    let mut errno = libc::ENOENT;
    for c in &prep.candidates {
        // SAFETY: NUL-terminated strings and NULL-terminated arrays of
        // them, alive until exec replaces this image.
        unsafe { libc::execve(c.as_ptr(), prep.argv_ptrs.as_ptr(), prep.envp_ptrs.as_ptr()) };
        match last() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => errno = libc::EACCES,
            other => fail(other),
        }
    }
    fail(errno)
}

/// The errno the child reported, or `None` once its `exec` closed the pipe.
fn read_errno(r: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(r.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    (got == buf.len()).then(|| i32::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_program_is_found_along_the_path_of_its_own_environment() {
        let env = vec![("PATH".to_string(), "/nowhere:/usr/bin:/bin".to_string())];
        let p = Prepared::new(&["sleep".into(), "1".into()], Path::new("/"), &env).unwrap();
        let c: Vec<_> = p.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/nowhere/sleep", "/usr/bin/sleep", "/bin/sleep"]);
        let p = Prepared::new(&["./x".into()], Path::new("/"), &env).unwrap();
        assert_eq!(p.candidates.len(), 1);
        assert!(Prepared::new(&[], Path::new("/"), &env).is_err());
        assert!(Prepared::new(&["a\0b".into()], Path::new("/"), &env).is_err());
    }

    #[test]
    fn the_report_pipe_carries_an_errno_or_nothing() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(w);
        assert_eq!(read_errno(&r), None);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        nix::unistd::write(w.as_fd(), &libc::ENOENT.to_ne_bytes()).unwrap();
        drop(w);
        assert_eq!(read_errno(&r), Some(libc::ENOENT));
    }
}
