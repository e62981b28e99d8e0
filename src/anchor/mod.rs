//! The anchor: the one small process per stack that its processes need,
//! so that the supervisor can die, be killed or be replaced without any of
//! them noticing.
//!
//! Theory of operation. `stackctl start` launches the anchor
//! (`stackctl anchor`, hidden; no tokio, no stack file parsing, one thread)
//! and the anchor launches the supervisor. The anchor:
//!
//! - is the parent of every stack process: the supervisor asks it to spawn
//!   (`Spawn`), so every exit status reaches the anchor, whatever happened
//!   to the supervisor; it is also the child subreaper, so a process's
//!   orphans (a task's daemon) are reaped here and never become zombies;
//! - holds the read end of every output pipe and writes the logs itself
//!   (rotation, timestamps, a full disk, as `logs::Sink` does), one
//!   `poll(2)` over all pipes; a process never loses its log's reader;
//! - holds file descriptors the supervisor gives it (`Hold`: notify
//!   sockets, listening sockets) and values it asks it to keep (`Put`:
//!   each unit's state, pool sizes, what was stopped on purpose), and hands
//!   all of it, with every live child and every unacknowledged exit, to the
//!   next supervisor that connects (the inventory);
//! - relaunches the supervisor when its connection ends without a `Bye`
//!   (kill -9, a panic, an OOM kill): one killed by SIGKILL at once, every
//!   time (an operator, the OOM killer: not a crash of its own); one that
//!   crashes at once the first time, then 1 s doubling to 30 s while it
//!   keeps dying young. `Bye { relaunch }` is an upgrade (the new binary at
//!   once), a plain `Bye` the end of the stack. The supervisors it
//!   launches run on the text of the stack file it keeps for them
//!   (`--state-dir` tells them where), not on the file as edited since.
//!
//! Exits are reported only once the child's output is drained (or 2 s
//! passed: a grandchild may hold the pipe), so that a failure's log tail
//! ends with its last line; each exit is kept until the supervisor
//! acknowledges it (`Ack`), so one that no supervisor saw is reported to the
//! next one.
//!
//! The supervisor keeps a copy of every pipe and held fd it got: if the
//! anchor itself dies, no writer sees a closed pipe, and the supervisor
//! starts a new anchor and hands it the pipes and pids (`Adopt`); the new
//! anchor watches those processes with pidfds, so their exit status is
//! unknown (and said so), while everything spawned later is its own.
//!
//! Owns: the stack's processes as a parent, their pipes and logs, the fd
//! store, the value store, and launching the supervisor. Must not touch:
//! deciding anything about a process (start, stop, restart: the
//! supervisor's), the stack file, the control socket.

mod cgroups;
pub mod client;
mod house;
pub mod proto;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::error::Error;
use crate::state::StateDir;

/// How the anchor runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    /// The stack file (absolute): what the supervisors it launches read.
    pub stack_file: PathBuf,
    /// The stackctl binary to launch supervisors with.
    pub exe: PathBuf,
    /// Launch a supervisor at once (else one connects by itself: it
    /// launched this anchor).
    pub launch: bool,
    /// Print every line of every process to stdout, prefixed by its name
    /// (`start --foreground`), coloured or not.
    pub echo: Option<bool>,
}

/// Goes on as the anchor a re-execution left (`stackctl anchor --resume`:
/// an upgrade), from the state it wrote at `path`.
///
/// # Errors
/// When the state cannot be read (the processes then have no anchor: the
/// supervisor launches a new one and hands them over).
pub fn resume(path: &std::path::Path) -> Result<u8, Error> {
    let snap = house::Snapshot::take(path)?;
    let state = StateDir::new(snap.state_dir());
    let mut house = house::House::resume(snap, state)?;
    note(
        "INFO",
        &format!("re-executed as stackctl {}", env!("CARGO_PKG_VERSION")),
    );
    house.serve();
    Ok(crate::error::exit::SUCCESS)
}

/// Runs the anchor until the stack is stopped (or it is retired and no
/// process is left).
///
/// # Errors
/// Another anchor runs for the stack (1); the state folder or the socket
/// cannot be used (1).
pub fn run(opts: Options) -> Result<u8, Error> {
    let state = StateDir::prepared(&opts.state_dir)?;
    let lock_path = state.anchor_lock();
    let lock = crate::state::try_hold(&lock_path)
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", lock_path.display())))?
        .ok_or_else(|| Error::Failed {
            message: format!("an anchor already runs for {}", state.root().display()),
            hint: Some("use `stackctl status`; `stackctl stop` ends it".into()),
            detail: None,
        })?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::failed(format!("cannot become the stack's subreaper: {e}")))?;
    crate::spawn::raise_fd_limit();
    let mut house = house::House::new(opts, state, lock)?;
    house.serve();
    Ok(crate::error::exit::SUCCESS)
}

/// The command line that runs an anchor: `exe anchor --state-dir D
/// --stack F --exe exe`, and `--no-launch` when the caller is the
/// supervisor itself.
pub fn command_line(
    exe: &std::path::Path,
    state_dir: &std::path::Path,
    stack_file: &std::path::Path,
    launch: bool,
) -> Vec<String> {
    let mut argv = vec![
        exe.display().to_string(),
        "anchor".to_string(),
        "--state-dir".to_string(),
        state_dir.display().to_string(),
        "--stack".to_string(),
        stack_file.display().to_string(),
        "--exe".to_string(),
        exe.display().to_string(),
    ];
    if !launch {
        argv.push("--no-launch".to_string());
    }
    argv
}

/// A line in stackctl.log, from the anchor (its stderr is that file).
fn note(level: &str, msg: &str) {
    use std::io::Write;
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    // One write: the supervisor appends to the same file.
    let line = format!("{now} {level:>5} anchor: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `fd` as an owned fd (a duplicate), for handing out a copy.
fn dup(fd: &OwnedFd) -> Option<OwnedFd> {
    fd.try_clone().ok()
}

/// A raw fd just received or created, owned.
///
/// # Safety
/// `raw` must be open and owned by nobody else.
#[allow(unsafe_code)]
unsafe fn owned(raw: i32) -> OwnedFd {
    // SAFETY: the caller's promise.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Sets `O_NONBLOCK` on `fd`.
fn nonblocking(fd: &impl AsFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let raw = fd.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
