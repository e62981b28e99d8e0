//! Spawning children: mechanism, not policy.
//!
//! Owns: building a child's command line, environment, working directory
//! and file descriptors; the child-side set-up (a new session, so its group
//! is its own and stopping it reaches everything it spawned; an empty signal
//! mask and default dispositions; only fds 0–2 survive `exec`, and the
//! listening sockets a service is given, at 3… ([`listen`]); the fd limit
//! stackctl was started with, which [`raise_fd_limit`] raised for stackctl
//! itself); signalling a
//! whole group; the one stop sequence ([`terminate`]); the stack's mark and
//! finding processes by it ([`strays`]); and one-shot commands (`exec`
//! probes, the keeper's steps).
//! Must not touch: deciding when to start, stop or restart; timers beyond a
//! one-shot's own deadline; the stack file.
//!
//! Theory of operation: a child spawned here ([`spawn`], [`run_oneshot`])
//! is waited for by a thread of its own ([`reaper::spawn_waited`]), whose
//! exit status reaches exactly one receiver. A child's stdout and stderr
//! share one pipe whose read end the caller gets back; the write end lives
//! only in the child. The stack's processes are spawned by the anchor
//! ([`start_unreaped`]: it reaps them itself, and learns whether each
//! `exec` worked, in its event loop; see `into`).

pub mod cgroup;
pub mod identity;
mod into;
pub mod listen;
mod once;
pub mod reaper;
pub mod strays;
mod terminate;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

pub use into::Forked;
pub use once::{run_oneshot, run_oneshot_with, Oneshot, OneshotOptions, OneshotOutcome};
pub use reaper::Exit;
pub use terminate::{terminate, How, StopReport, Target, HARD_WAIT};

use crate::config::CommandSpec;

/// A spawned child: its pid (= its process group), how to learn its exit,
/// and the read end of its output pipe when output was captured.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
    pub output: Option<OwnedFd>,
}

/// The path to run this stackctl binary again from (a supervisor, an
/// anchor, a keeper's step). A binary replaced on disk while it runs (a
/// rebuild, an upgrade) shows in `/proc/self/exe` as `PATH (deleted)`:
/// `PATH` is then what runs next, the new binary, as it would for the
/// operator. With nothing left at `PATH`, `/proc/self/exe` itself still
/// runs this image.
///
/// # Errors
/// When `/proc/self/exe` cannot be read.
pub fn stackctl_binary() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let Some(name) = exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) else {
        return Ok(exe);
    };
    let path = std::path::PathBuf::from(name);
    if path.is_file() {
        Ok(path)
    } else {
        Ok(std::path::PathBuf::from("/proc/self/exe"))
    }
}

/// The argv for a command whose templates are already expanded. A string
/// that is one simple command ([`is_simple_command`]) runs as if prefixed
/// by `exec`: the shell replaces itself with the program, so the pid
/// stackctl records, signals and shows is the program's, not a shell's
/// (dash, `/bin/sh` on Debian, does not do this by itself).
pub fn argv(cmd: &CommandSpec) -> Vec<String> {
    match cmd {
        CommandSpec::Shell(s) if is_simple_command(s) => {
            vec!["/bin/sh".into(), "-c".into(), format!("exec {}", s.trim())]
        }
        CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        CommandSpec::Argv(v) => v.clone(),
    }
}

/// Whether a shell string is one simple command that `exec` may prefix
/// without changing what it does: words of plain characters only (no
/// quotes, `$`, globs, `~`, redirections, pipes, lists, comments or
/// newlines), a first word that is not a variable assignment, and not a
/// shell keyword or a builtin whose effect is on the shell itself (`cd`,
/// `export`, `exit`, `trap`, …: `exec` would look for a program of that
/// name).
pub fn is_simple_command(s: &str) -> bool {
    const SHELL_OWN: &[&str] = &[
        ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done",
        "elif", "else", "esac", "eval", "exec", "exit", "export", "fc", "fg", "fi", "for",
        "function", "getopts", "hash", "if", "in", "jobs", "let", "local", "read", "readonly",
        "return", "select", "set", "shift", "source", "then", "time", "times", "trap", "type",
        "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    ];
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:,@%+=^".contains(c);
    if !s.chars().all(|c| plain(c) || c == ' ' || c == '\t') {
        return false;
    }
    match s.split_whitespace().next() {
        Some(first) => !first.contains('=') && !SHELL_OWN.contains(&first),
        None => false,
    }
}

/// Spawns `argv` in `cwd` with exactly `env`, in a new session, stdin from
/// /dev/null, stdout and stderr into one captured pipe (or /dev/null); its
/// exit status reaches the returned receiver through this process's reaper.
///
/// # Errors
/// When the pipe cannot be made or the program cannot be executed.
pub fn spawn(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    capture: bool,
) -> io::Result<Spawned> {
    let (pid, output, exit) = reaper::spawn_waited(|| spawn_unreaped(argv, cwd, env, capture))?;
    Ok(Spawned { pid, exit, output })
}

/// [`spawn`] without a reaper (the caller reaps it). The read end of the
/// output pipe comes back close-on-exec.
///
/// # Errors
/// As [`spawn`].
fn spawn_unreaped(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    capture: bool,
) -> io::Result<(i32, Option<OwnedFd>)> {
    let (out, read_end) = if capture {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        (Output::Pipe(w), Some(r))
    } else {
        (Output::Null, None)
    };
    let pid = spawn_joined(argv, cwd, env, out)?;
    Ok((pid, read_end))
}

/// Starts a process of the stack, for a process that reaps its own
/// children and waits for their `exec` in its own event loop (the anchor;
/// single-threaded): forked — straight into the cgroup of `cgroup` when
/// given — with the child-side set-up, stdin from /dev/null, stdout and
/// stderr into one new pipe, `pass` at fds 3… (see [`listen`]).
/// Returns at once after the fork, with the read end of the pipe
/// (close-on-exec): whether the program runs is [`Forked::outcome`]'s,
/// once [`Forked::report`] is readable (`into`). A failure to fork into
/// the cgroup is an error for which [`is_not_into_cgroup`] is true, and
/// nothing ran.
///
/// # Errors
/// When the command or a pipe cannot be made, or nothing can be forked.
pub fn start_unreaped(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    pass: &[BorrowedFd<'_>],
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<(Forked, OwnedFd)> {
    let wrapped;
    let argv = if pass.is_empty() {
        argv
    } else {
        wrapped = listen::trampoline_argv(argv, pass);
        &wrapped[..]
    };
    let keep: Vec<RawFd> = pass.iter().map(AsRawFd::as_raw_fd).collect();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // `w` closes when this returns: only the child keeps the write end,
    // so the pipe ends when the child's side does.
    let forked =
        into::start(cgroup, argv, cwd, env, w.as_fd(), w.as_fd(), &keep).map_err(|e| match e {
            into::IntoError::Clone(e) => io::Error::other(NotIntoCgroup(e)),
            into::IntoError::Start(e) => e,
        })?;
    Ok((forked, r))
}

/// Whether a child can be forked into the cgroup of `cgroup` and live
/// (see `into`); for a single-threaded process (the anchor).
///
/// # Errors
/// When the kernel refuses, or kills such a child at birth.
pub fn forks_into(cgroup: BorrowedFd<'_>) -> io::Result<()> {
    into::probe(cgroup)
}

/// The kernel would not fork into the cgroup (`clone3` missing or
/// filtered, no permission): nothing ran.
#[derive(Debug)]
struct NotIntoCgroup(io::Error);

impl std::fmt::Display for NotIntoCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot fork into its cgroup: {}", self.0)
    }
}

impl std::error::Error for NotIntoCgroup {}

/// Whether a spawn failed because it could not fork into its cgroup (it
/// may be spawned again without one).
pub fn is_not_into_cgroup(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotIntoCgroup>())
}

/// Where a child's stdout and stderr go.
#[derive(Debug)]
pub enum Output {
    /// Nowhere (`/dev/null`).
    Null,
    /// Both into this fd (a pipe's write end, a log file).
    Pipe(OwnedFd),
    /// stdout into the first, stderr into the second.
    Split(OwnedFd, OwnedFd),
}

/// Spawns `argv` with the child-side set-up (a new session, reset signals,
/// only fds 0–2) and `output`, stdin from /dev/null, registered with no
/// reaper (the caller reaps it).
///
/// # Errors
/// When the program cannot be executed.
pub fn spawn_with(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    output: Output,
) -> io::Result<i32> {
    spawn_joined(argv, cwd, env, output)
}

/// [`spawn_with`] with `Command` (which waits for the `exec`).
///
/// # Errors
/// As [`spawn_with`].
fn spawn_joined(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    output: Output,
) -> io::Result<i32> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .current_dir(cwd)
        .stdin(Stdio::null());
    match output {
        Output::Null => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        Output::Pipe(w) => {
            let w2 = w.try_clone()?;
            cmd.stdout(Stdio::from(w)).stderr(Stdio::from(w2));
        }
        Output::Split(o, e) => {
            cmd.stdout(Stdio::from(o)).stderr(Stdio::from(e));
        }
    }
    child_setup(&mut cmd);
    let child = cmd.spawn()?;
    // Dropping the command closes this process's copies of the output fds,
    // so a pipe ends when the child's side does.
    drop(cmd);
    Ok(child.id() as i32)
}

/// Installs the child-side set-up that runs between `fork` and `exec`
/// ([`child_prepare`], keeping no fd above 2).
#[allow(unsafe_code)]
fn child_setup(cmd: &mut std::process::Command) {
    // Read before fork: the highest signal number the C library knows.
    let sigrtmax = libc::SIGRTMAX();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (see `child_prepare`).
    unsafe {
        cmd.pre_exec(move || child_prepare(sigrtmax, &[]));
    }
}

/// The child-side set-up, between `fork` and `exec` (of `Command` and of
/// `into`): a new session; every signal the kernel has, 1 to `sigrtmax`
/// (real-time ones included), gets its default disposition, and the mask
/// is emptied (an ignored or blocked signal survives `exec`, so whatever
/// the supervisor inherited from its own caller would otherwise reach
/// every child); every fd above 2 is closed on exec but those in `keep`
/// (for the trampoline to place). System calls only: setsid,
/// sigprocmask, the rt_sigaction and close_range syscalls, fcntl; no
/// allocation, no lock.
///
/// # Errors
/// When a new session cannot be made or a kept fd cannot be kept.
#[allow(unsafe_code)]
fn child_prepare(sigrtmax: i32, keep: &[RawFd]) -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    nix::unistd::setsid()?;
    // The fd limit this process was started with, not the raised one.
    if let Some((soft, hard)) = CHILD_NOFILE.get() {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, *soft, *hard)?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    // The raw syscall, not libc's sigaction: glibc refuses 32 and 33
    // (reserved for its threads), yet an ignored 32 is inherited all the
    // same. An all-zero kernel `struct sigaction` is SIG_DFL, no flags, an
    // empty mask, whatever the architecture's field order; 32 bytes cover
    // the largest 64-bit layout, and the kernel's sigset is 8 bytes.
    // Failures are ignored: SIGKILL and SIGSTOP cannot be changed, and
    // nothing else can fail here.
    let dfl = [0u64; 4];
    for sig in 1..=sigrtmax {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: a valid kernel sigaction (zeroed) of the size given;
            // no old action asked for.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
    }
    // Only fds 0-2 survive exec: mark every other fd close-on-exec. (Not
    // close: a spawn still needs its own close-on-exec error pipe.)
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with the CLOEXEC flag closes nothing; it marks.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        for fd in 3..4096 {
            // SAFETY: F_SETFD on any number: EBADF for those not open.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // The fds passed on stay open across exec.
    for fd in keep {
        // SAFETY: F_SETFD on an fd the parent opened.
        if unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The fd limit (soft, hard) this process had before [`raise_fd_limit`]
/// raised it: what every child gets back.
static CHILD_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// The highest soft fd limit [`raise_fd_limit`] asks for (systemd's
/// default hard limit): enough for thousands of processes, and no table
/// sized after an "unlimited" hard limit.
const MAX_NOFILE: u64 = 524_288;

/// Raises this process's soft fd limit to its hard one (at most
/// [`MAX_NOFILE`]), as systemd does for itself: the anchor holds a pipe
/// and more per process, the supervisor a copy, so a common soft limit of
/// 1024 would cap a stack at about 500 processes. Every child is given the
/// limit this process had (a program that uses `select(2)` expects it).
/// Returns (before, after) when it changed anything.
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let wanted = hard.min(MAX_NOFILE);
    if wanted <= soft {
        return None;
    }
    CHILD_NOFILE.set((soft, hard)).ok()?;
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).ok()?;
    Some((soft, wanted))
}

/// Sends `sig` to the whole process group `pgid`. `Ok(false)` means the
/// group is gone (`ESRCH`), which is not an error when stopping.
///
/// # Errors
/// Any other failure (e.g. `EPERM`).
pub fn signal_group(pgid: i32, sig: Signal) -> io::Result<bool> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pgid <= 1",
        ));
    }
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends `sig` to one process. `Ok(false)`: it is gone.
///
/// # Errors
/// Any failure but `ESRCH`.
pub fn signal_pid(pid: i32, sig: Signal) -> io::Result<bool> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid <= 1",
        ));
    }
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether any process is left in group `pgid`.
pub fn group_exists(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_simple_command_runs_as_its_program() {
        let cases: &[(&str, bool)] = &[
            ("sleep 1000", true),
            ("  python3 demo/api.py --port=8000  ", true),
            ("node_modules/.bin/next start -p 3000", true),
            ("worker --queue a,b --log-level=INFO", true),
            ("", false),
            ("   ", false),
            ("echo hi; sleep 1", false),
            ("sleep 1 && echo", false),
            ("a | b", false),
            ("exec sleep 1", false),
            ("cd sub", false),
            ("exit 3", false),
            ("trap 'x' TERM", false),
            ("FOO=1 app", false),
            ("app > out.log", false),
            ("app $HOME", false),
            ("app 'quoted arg'", false),
            ("app *.txt", false),
            ("app ~/x", false),
            ("app # comment", false),
            ("app\nother", false),
            ("app &", false),
        ];
        for (s, want) in cases {
            assert_eq!(is_simple_command(s), *want, "{s:?}");
        }
        assert_eq!(
            argv(&CommandSpec::Shell(" sleep 5 ".into())),
            ["/bin/sh", "-c", "exec sleep 5"]
        );
        assert_eq!(
            argv(&CommandSpec::Shell("a | b".into())),
            ["/bin/sh", "-c", "a | b"]
        );
    }
}
