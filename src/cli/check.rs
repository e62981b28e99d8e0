//! `stackctl check`: validate the stack file without running anything.

use clap::Args;

use super::Global;
use crate::error::Result;

/// Validates the stack file without running anything.
///
/// Reports every problem at once, each with file:line:column and a hint,
/// and exits 2; otherwise prints the start order.
///
/// $ stackctl check
/// $ stackctl -f examples/protea.toml check
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `check`.
///
/// # Errors
/// An invalid or missing stack file (exit 2).
pub fn run(args: CheckArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("check is not built yet"))
}
