//! `stackctl stop`.

use clap::Args;

use super::Global;
use crate::error::Result;

/// Stops NAMEs, or everything and then the supervisor.
///
/// Reverse dependency order, parallel within a level: stop_signal to the
/// whole process group, SIGKILL after stop_timeout. Returns when they are
/// gone; exits 1 naming any process that survived.
///
/// $ stackctl stop
/// $ stackctl stop worker
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Processes or pools (default: everything, then the supervisor exits).
    pub names: Vec<String>,
    /// Stop even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
}

/// Runs `stop`.
///
/// # Errors
/// Lock held (2), a process could not be stopped (1).
pub fn run(args: StopArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("stop is not built yet"))
}
