//! Spawning children: mechanism, not policy.
//!
//! Owns: building a child's command line, environment, working directory
//! and file descriptors; the child-side set-up (a new session, so its group
//! is its own and stopping it reaches everything it spawned; an empty signal
//! mask and default dispositions; only fds 0–2 survive `exec`); signalling a
//! whole group; and one-shot commands (`pre_start`, `exec` probes).
//! Must not touch: deciding when to start, stop or restart; timers beyond a
//! one-shot's own deadline; the stack file.
//!
//! Theory of operation: every child is spawned through
//! [`reaper::Reaper::spawn_registered`], so its exit status reaches exactly
//! one receiver through the single reaping path (see `reaper`). A child's
//! stdout and stderr share one pipe whose read end the caller gets back (the
//! log pump drains it); the write end lives only in the child.

pub mod identity;
pub mod reaper;

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

pub use reaper::{Exit, Reaper};

use crate::config::CommandSpec;

/// A spawned child: its pid (= its process group), how to learn its exit,
/// and the read end of its output pipe when output was captured.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
    pub output: Option<OwnedFd>,
}

/// The argv for a command whose templates are already expanded.
pub fn argv(cmd: &CommandSpec) -> Vec<String> {
    match cmd {
        CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        CommandSpec::Argv(v) => v.clone(),
    }
}

/// Spawns `argv` in `cwd` with exactly `env`, in a new session, stdin from
/// /dev/null, stdout and stderr into one captured pipe (or /dev/null).
///
/// # Errors
/// When the pipe cannot be made or the program cannot be executed.
pub fn spawn(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    capture: bool,
) -> io::Result<Spawned> {
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
    let read_end = if capture {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let w2 = w.try_clone()?;
        cmd.stdout(Stdio::from(w)).stderr(Stdio::from(w2));
        Some(r)
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        None
    };
    child_setup(&mut cmd);
    let reaper = Reaper::global()?;
    let (pid, (), exit) = reaper.spawn_registered(|| {
        let child = cmd.spawn()?;
        Ok((child.id() as i32, ()))
    })?;
    // Dropping the command closes this process's copies of the write end,
    // so the pipe ends when the child's side does.
    drop(cmd);
    Ok(Spawned {
        pid,
        exit,
        output: read_end,
    })
}

/// Installs the child-side set-up that runs between `fork` and `exec`.
#[allow(unsafe_code)]
fn child_setup(cmd: &mut std::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (setsid, sigprocmask, sigaction,
    // the close_range syscall, fcntl); it allocates nothing and takes no
    // locks.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
            nix::unistd::setsid()?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for sig in Signal::iterator() {
                if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
                    let _ = sigaction(sig, &dfl);
                }
            }
            // Only fds 0-2 survive exec: mark every other fd close-on-exec.
            // (Not close: std still needs its own close-on-exec error pipe.)
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            let r = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
            if r != 0 {
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
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

/// How a one-shot command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneshotOutcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Still running at the deadline; its whole group was killed.
    TimedOut,
}

/// The result of [`run_oneshot`]: how it ended and the tail of its output.
#[derive(Debug, Clone)]
pub struct Oneshot {
    pub outcome: OneshotOutcome,
    /// The last few KB of its stdout and stderr together.
    pub output: String,
}

const ONESHOT_OUTPUT_KEEP: usize = 8 * 1024;

/// Runs `cmd` (templates already expanded) to completion in its own
/// session, with exactly `env`, killing its whole group at `timeout`. Any
/// process it left behind in its group is killed too.
///
/// # Errors
/// When it cannot be spawned.
///
/// # Cancel safety
/// Dropping the future kills the command's group.
pub async fn run_oneshot(
    cmd: &CommandSpec,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> io::Result<Oneshot> {
    let argv = argv(cmd);
    let spawned = spawn(&argv, cwd, env, true)?;
    let pgid = spawned.pid;
    let guard = KillGroupOnDrop(pgid);
    let reader = spawned.output.map(|fd| {
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::from(fd);
            let mut keep: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        keep.extend_from_slice(&buf[..n]);
                        if keep.len() > 2 * ONESHOT_OUTPUT_KEEP {
                            keep.drain(..keep.len() - ONESHOT_OUTPUT_KEEP);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            keep
        })
    });
    let outcome = match tokio::time::timeout(timeout, spawned.exit).await {
        Ok(Ok(Exit::Code(c))) => OneshotOutcome::Exited(c),
        Ok(Ok(Exit::Signal(s))) => OneshotOutcome::Signaled(s),
        Ok(Err(_)) => return Err(io::Error::other("reaper dropped the exit status")),
        Err(_) => OneshotOutcome::TimedOut,
    };
    // Nothing a one-shot started may outlive it.
    drop(guard);
    let mut output = Vec::new();
    if let Some(r) = reader {
        if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_millis(500), r).await {
            output = bytes;
        }
    }
    let start = output.len().saturating_sub(ONESHOT_OUTPUT_KEEP);
    Ok(Oneshot {
        outcome,
        output: String::from_utf8_lossy(&output[start..]).into_owned(),
    })
}

/// SIGKILLs a process group when dropped.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = signal_group(self.0, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> CommandSpec {
        CommandSpec::Shell(s.into())
    }

    fn path_env() -> Vec<(String, String)> {
        vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())]
    }

    #[tokio::test]
    async fn oneshot_reports_code_and_output() {
        let r = run_oneshot(
            &sh("echo hello; echo oops >&2; exit 3"),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::Exited(3));
        assert!(
            r.output.contains("hello") && r.output.contains("oops"),
            "{:?}",
            r.output
        );
    }

    #[tokio::test]
    async fn oneshot_times_out_and_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let r = run_oneshot(
            &sh(&script),
            Path::new("/"),
            &path_env(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while identity::is_alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !identity::is_alive(pid),
            "the grandchild outlived the one-shot"
        );
    }

    #[tokio::test]
    async fn child_gets_only_fds_0_to_2_and_its_own_session() {
        let r = run_oneshot(
            &sh("ls /proc/self/fd | tr '\\n' ' '; echo; ps -o sid= -p $$; echo $$"),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let lines: Vec<&str> = r.output.lines().collect();
        let fds: Vec<&str> = lines[0].split_whitespace().collect();
        // 0, 1, 2 and the fd `ls` itself opens for /proc/self/fd.
        assert!(fds.len() <= 4, "unexpected fds: {fds:?}");
        if lines.len() >= 3 {
            assert_eq!(lines[1].trim(), lines[2].trim(), "not a session leader");
        }
    }

    #[tokio::test]
    async fn missing_program_is_an_error_not_a_panic() {
        let r = run_oneshot(
            &CommandSpec::Argv(vec!["/nonexistent/program".into()]),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(5),
        )
        .await;
        assert!(r.is_err());
    }
}
