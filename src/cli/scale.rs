//! `stackctl scale`.

use clap::Args;

use super::session::{connect, load_stack, request};
use super::Global;
use crate::control::protocol::Request;
use crate::error::{exit, Error, Result};

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
    let (_, stack) = load_stack(g)?;
    crate::lock::guard_mutation(&stack, args.force, "scale")?;
    let Some(mut client) = connect(&stack)? else {
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
