//! Waiting for the children a process spawns through [`super::spawn`]
//! (one-shots: probes, hooks, the keeper's steps; the anchor a supervisor
//! launches).
//!
//! Each such child gets a small thread that waits for that one pid and
//! sends its exit status, once, to whoever spawned it. Nothing here waits
//! for "any child" (`P_ALL`): that would steal the children of code in the
//! same process that waits for its own (std's `Command::output`, the tests).
//! The stack's own processes are not the supervisor's children at all:
//! they are the anchor's, which reaps them in its event loop (a subreaper,
//! `anchor::house`).
//!
//! Owns: [`Exit`], and the wait for a spawned child. Must not touch:
//! spawning itself (`spawn`), what an exit means.

use std::io;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Gone, and nobody can know how: it was not the child of the process
    /// that saw it go (its anchor had died; a new one only watched it).
    Unknown,
}

impl Exit {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The code SPEC shows (`exit_code`): the code, or 128 + signal; none
    /// when unknown.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(s) => Some(128 + s),
            Exit::Unknown => None,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            Exit::Unknown => f.write_str("exited (how is unknown: it was not our child)"),
        }
    }
}

/// Runs `spawn` (which forks and returns the child's pid) and waits for
/// that child in a thread of its own; the receiver gets its exit status
/// once.
///
/// # Errors
/// Whatever `spawn` returns; the thread cannot be started.
pub fn spawn_waited<T>(
    spawn: impl FnOnce() -> io::Result<(i32, T)>,
) -> io::Result<(i32, T, oneshot::Receiver<Exit>)> {
    let (tx, rx) = oneshot::channel();
    let (pid, extra) = spawn()?;
    std::thread::Builder::new()
        .name(format!("wait:{pid}"))
        .stack_size(32 * 1024)
        .spawn(move || loop {
            match waitpid(Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    let _ = tx.send(Exit::Code(code));
                    return;
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    let _ = tx.send(Exit::Signal(sig as i32));
                    return;
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        })?;
    Ok((pid, extra, rx))
}
