//! `stackctl keep`: the deploy keeper.

use clap::Args;

use super::Global;
use crate::error::Result;

/// Runs the deploy keeper loop in the foreground.
///
/// Keeps the worktree at the head of the configured branch, redeploying and
/// restarting the stack when it moves, when a watched service is unhealthy,
/// or on a manual trigger; defers to an export that holds the lock.
///
/// $ stackctl keep             # run the loop (tmux, systemd)
/// $ stackctl keep --trigger   # ask the running keeper for a tick now
#[derive(Debug, Args)]
pub struct KeepArgs {
    /// Ask a running keeper to deploy now, and return.
    #[arg(long)]
    pub trigger: bool,
    /// Run the keeper in a detached tmux session.
    #[arg(long)]
    pub tmux: bool,
}

/// Runs `keep`.
///
/// # Errors
/// An invalid stack file, or no `[keeper]` section.
pub fn run(args: KeepArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("keep is not built yet"))
}
