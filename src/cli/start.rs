//! `stackctl start`, `restart`, `reload`, and the hidden `supervise`.

use std::path::PathBuf;

use clap::Args;

use super::Global;
use crate::error::Result;

/// Starts the stack (or NAMEs with their dependencies) and returns when ready.
///
/// Starts the supervisor for this stack if none runs, then brings the named
/// processes up in dependency order: tasks run to completion, services pass
/// their readiness gates. Already-running processes are left alone. Exits 0
/// when all are ready, 1 when something failed (naming it and showing the
/// last lines of its log).
///
/// $ stackctl start
/// $ stackctl start api --scale worker=4
/// $ stackctl start --foreground     # supervise in this terminal
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Processes or pools to start (default: everything).
    pub names: Vec<String>,
    /// Start pool NAME with N instances (repeatable).
    #[arg(long = "scale", value_name = "NAME=N")]
    pub scale: Vec<String>,
    /// Run the supervisor in this terminal, streaming every process's output.
    #[arg(long, conflicts_with = "tmux")]
    pub foreground: bool,
    /// Run the supervisor in a detached tmux session `stackctl-<stack>`.
    #[arg(long)]
    pub tmux: bool,
    /// Start even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
}

/// Stops then starts NAMEs (default: the whole stack, tasks re-run).
///
/// A pool restarts one member at a time, each ready before the next.
///
/// $ stackctl restart api
/// $ stackctl restart
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Processes or pools (default: everything).
    pub names: Vec<String>,
    /// Restart even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
}

/// Re-reads the stack file and applies only the difference.
///
/// Starts what is new, stops what was removed, restarts what changed and
/// resizes pools; untouched processes keep running. A broken file is
/// rejected with the `check` diagnostics and nothing changes.
///
/// $ stackctl reload
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Reload even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
}

/// Runs the supervisor for a stack file.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The stack file (absolute).
    #[arg(long)]
    pub stack: PathBuf,
    /// Stream every process's output to this terminal, prefixed by name.
    #[arg(long)]
    pub foreground: bool,
}

/// Runs `start`.
///
/// # Errors
/// Invalid stack file (2), lock held (2), a process failed (1).
pub fn run_start(args: StartArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("start is not built yet"))
}

/// Runs `restart`.
///
/// # Errors
/// As `start`.
pub fn run_restart(args: RestartArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("restart is not built yet"))
}

/// Runs `reload`.
///
/// # Errors
/// Invalid stack file (2, nothing changes), no supervisor (1).
pub fn run_reload(args: ReloadArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("reload is not built yet"))
}

/// Runs the supervisor.
///
/// # Errors
/// When it cannot take its lock or bind its socket.
pub fn run_supervise(args: SuperviseArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("supervise is not built yet"))
}
