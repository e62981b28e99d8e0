//! `stackctl scale`.

use clap::Args;

use super::Global;
use crate::error::Result;

/// Grows or shrinks a worker pool live.
///
/// Shrinking stops the highest-numbered instances gracefully, each with its
/// full stop_timeout to drain; growing never touches running members.
///
/// $ stackctl scale worker 4
/// $ stackctl scale worker +1
/// $ stackctl scale worker -- -1
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The pool.
    pub name: String,
    /// N, +K or -K.
    #[arg(allow_hyphen_values = true)]
    pub count: String,
    /// Scale even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
}

/// Runs `scale`.
///
/// # Errors
/// Unknown pool, a task, out of bounds (2); no supervisor (1).
pub fn run(args: ScaleArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("scale is not built yet"))
}
