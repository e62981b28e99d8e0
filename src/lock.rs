//! The stack-owner lock (`stack-owner.json`): free / deploy / export.
//!
//! Owns: the flock on the sidecar `<lock_file>.lock` with its 5 s timeout,
//! the `Owner` enum, the `LockRecord` JSON, atomic replacement, and the exit
//! codes 2/3/4. Used by `cli` and `keeper`. Must not touch: the supervisor.
//!
//! NOT BUILT YET (issue 4).

use crate::config::Stack;
use crate::error::Error;

/// TEMPORARY until the lock lands: refuses nothing.
///
/// # Errors
/// Never, for now.
pub fn guard_mutation(stack: &Stack, force: bool, what: &str) -> Result<(), Error> {
    let _ = (stack, force, what);
    Ok(())
}
