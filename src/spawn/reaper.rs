//! The one reaping path.
//!
//! Decision (STYLE habit 10, option a): stackctl owns all reaping. The
//! supervisor is a child subreaper, so orphaned descendants of its children
//! become its own children; one dedicated thread reaps every child of this
//! process and routes each exit status by pid to whoever registered it.
//! Nothing else may wait for a child: no `std::process::Child::wait`, no
//! `tokio::process` inside the supervisor.
//!
//! How the thread avoids racing `spawn`: it first *peeks* at an exited child
//! with `waitid(P_ALL, WEXITED | WNOWAIT)` (which does not reap), then takes
//! the registry lock, then reaps that pid. `spawn` holds the same lock from
//! before `fork` until the pid is registered, so a status can never arrive
//! for a pid that is not registered yet; and when std's own spawn reaps a
//! child whose `exec` failed (it does, inside `Command::spawn`), the reaper
//! finds `ECHILD` for that pid and moves on instead of stealing the status
//! std asserts it gets.
//!
//! The reaping thread runs only in the supervisor, which calls
//! [`Reaper::install_subreaper`] before it spawns anything. In any other
//! process that spawns through this module (the CLI, unit tests sharing a
//! process with code that uses `std::process` directly) reaping `P_ALL`
//! would steal other code's children, so there each child gets a small
//! thread that waits for that one pid.
//!
//! When this process has no children, `waitid` returns `ECHILD` at once; the
//! thread then sleeps on a condition variable until the next spawn. Orphans
//! cannot appear without a living child (the kernel reparents a dying
//! child's children before its own exit can be seen), so no wake-up is
//! missed. No polling, no signal handler.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
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

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    /// Spawns since the thread last found no children.
    generation: u64,
}

/// The process-wide reaper. Get it with [`Reaper::global`].
pub struct Reaper {
    registry: Mutex<Registry>,
    wake: Condvar,
    /// Reap every child (`P_ALL`): only in the supervisor.
    all: bool,
}

static GLOBAL: OnceLock<Arc<Reaper>> = OnceLock::new();

impl Reaper {
    /// The reaper of this process, starting its thread on first use.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn global() -> io::Result<Arc<Reaper>> {
        Self::init(false)
    }

    /// Makes this process a child subreaper and starts the thread that
    /// reaps every child of this process. For the supervisor only, before
    /// it spawns anything.
    ///
    /// # Errors
    /// When `prctl` fails, the thread cannot start, or a per-pid reaper was
    /// already installed.
    pub fn install_subreaper() -> io::Result<Arc<Reaper>> {
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        let r = Self::init(true)?;
        if !r.all {
            return Err(io::Error::other(
                "a per-child reaper was installed before the subreaper",
            ));
        }
        Ok(r)
    }

    fn init(all: bool) -> io::Result<Arc<Reaper>> {
        if let Some(r) = GLOBAL.get() {
            return Ok(r.clone());
        }
        let r = Arc::new(Reaper {
            registry: Mutex::new(Registry::default()),
            wake: Condvar::new(),
            all,
        });
        match GLOBAL.set(r.clone()) {
            Ok(()) => {
                if all {
                    let thread_r = r.clone();
                    std::thread::Builder::new()
                        .name("reaper".into())
                        .stack_size(64 * 1024)
                        .spawn(move || thread_r.run())?;
                }
                Ok(r)
            }
            // Another thread won the race; use its reaper.
            Err(_) => GLOBAL
                .get()
                .cloned()
                .ok_or_else(|| io::Error::other("reaper lost")),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts/removes), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `spawn` (which forks) with the registry locked and registers the
    /// pid it returns. The receiver gets the exit status once.
    ///
    /// # Errors
    /// Whatever `spawn` returns.
    pub fn spawn_registered<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(i32, T)>,
    ) -> io::Result<(i32, T, oneshot::Receiver<Exit>)> {
        let (tx, rx) = oneshot::channel();
        if !self.all {
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
            return Ok((pid, extra, rx));
        }
        let mut reg = self.lock();
        let (pid, extra) = spawn()?;
        reg.waiting.insert(pid, tx);
        reg.generation += 1;
        drop(reg);
        self.wake.notify_one();
        Ok((pid, extra, rx))
    }

    fn run(&self) {
        loop {
            let seen_generation = self.lock().generation;
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(st) => {
                    let Some(pid) = st.pid() else { continue };
                    let mut reg = self.lock();
                    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(p, code)) => route(&mut reg, p, Exit::Code(code)),
                        Ok(WaitStatus::Signaled(p, sig, _)) => {
                            route(&mut reg, p, Exit::Signal(sig as i32))
                        }
                        // Reaped meanwhile by std's exec-failure path, or not exited.
                        Ok(_) | Err(Errno::ECHILD) => {}
                        Err(_) => {}
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    let reg = self.lock();
                    if reg.generation == seen_generation {
                        // Sleep until the next spawn.
                        let _unused = self
                            .wake
                            .wait_while(reg, |r| r.generation == seen_generation)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                }
                Err(e) => {
                    tracing::error!("reaper: waitid failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }
}

fn route(reg: &mut Registry, pid: Pid, exit: Exit) {
    match reg.waiting.remove(&pid.as_raw()) {
        Some(tx) => {
            let _ = tx.send(exit);
        }
        None => tracing::debug!("reaped adopted orphan {pid} ({exit})"),
    }
}
