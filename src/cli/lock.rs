//! `stackctl lock`: the stack-owner lock from the command line.

use clap::{Args, Subcommand};

use super::Global;
use crate::error::Result;

/// Reads and changes the stack-owner lock (free / deploy / export).
///
/// $ stackctl lock acquire export farm-exp-13 "24-cell sweep"
/// $ stackctl lock current
/// $ stackctl lock release farm-exp-13
#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(subcommand)]
    pub action: LockAction,
}

#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Takes the lock for OWNER (idempotent for the same owner and task id).
    Acquire {
        /// free, deploy or export.
        owner: String,
        /// The task that holds it.
        task_id: String,
        /// Why, for whoever finds it held.
        reason: Option<String>,
    },
    /// Gives the lock back (only the task that holds it may).
    Release {
        /// The task that holds it.
        task_id: String,
    },
    /// Prints the current owner.
    Current,
    /// Prints the whole lock record.
    Status {
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `lock`.
///
/// # Errors
/// Per SPEC: 2 held by another owner, 3 not the holder, 4 timeout.
pub fn run(args: LockArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("lock is not built yet"))
}
