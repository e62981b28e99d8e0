//! `stackctl status`.

use clap::Args;

use super::Global;
use crate::error::Result;

/// Shows every process: pid, state, readiness, uptime, restarts, memory.
///
/// Tells the truth with no supervisor running too, from the pid files,
/// checking that each pid is still the same process. Exits 0 when every
/// named process is running and ready, 3 otherwise.
///
/// $ stackctl status
/// $ stackctl status api --json
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Processes or pools (default: all).
    pub names: Vec<String>,
    /// Print SPEC's JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `status`.
///
/// # Errors
/// Invalid stack file (2); "not ready" is exit 3, not an error.
pub fn run(args: StatusArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("status is not built yet"))
}
