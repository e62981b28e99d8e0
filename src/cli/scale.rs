//! `stackctl scale`.
//!
//! Owns: its arguments and request. Must not touch: resizing (the
//! supervisor's `pool`).

use clap::Args;

use super::session::{request, Target};
use super::Global;
use crate::control::protocol::Request;
use crate::error::{exit, Error, Result};

/// Grows or shrinks a worker pool live.
///
/// Shrinking stops the highest-numbered instances gracefully, each with its
/// full stop_timeout to drain; growing never touches running members. The
/// size must stay within `max_replicas`. Needs a running supervisor,
/// reached even when stack.toml no longer validates (a warning shows the
/// file's diagnostics); the new size lasts until the supervisor exits (the
/// next `start` uses `replicas` again).
///
/// A pool with an `autoscale` section sizes itself from its queue depth: a
/// manual size holds for its `manual_hold` (10m by default), then
/// autoscaling resumes; `auto` resumes it at once. `status` shows the hold.
///
/// Examples:
///
/// $ stackctl scale worker 4
///
/// $ stackctl scale worker +1
///
/// $ stackctl scale worker -1
///
/// $ stackctl scale worker auto
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The pool (a service with `replicas`).
    pub name: String,
    /// The new size N, +K / -K relative to the current size, or `auto` (an
    /// autoscaled pool: end a manual hold now).
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
    let target = Target::find(g)?;
    crate::lock::guard_mutation(&target.stack, args.force, "scale")?;
    let Some(mut client) = target.running("scaling through the running supervisor")? else {
        let (_, stack) = target.valid()?;
        return Err(Error::Failed {
            message: format!("no supervisor is running for stack {}", stack.name),
            hint: Some(format!(
                "start the pool with `stackctl start {} --scale {}=N`",
                args.name, args.name
            )),
            detail: None,
        });
    };
    request(
        &mut client,
        Request::Scale {
            name: args.name,
            count: args.count,
        },
        g,
    )?;
    Ok(exit::SUCCESS)
}
