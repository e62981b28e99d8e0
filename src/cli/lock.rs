//! `stackctl lock`: the stack-owner lock from the command line.
//!
//! Owns: turning `lock acquire|release|current|status` into calls on
//! [`crate::lock::StackLock`] and printing the result. Must not touch: the
//! lock file itself (only through `lock`), the supervisor.

use clap::{Args, Subcommand};

use super::Global;
use crate::error::{exit, Result};
use crate::lock::{LockRecord, Owner, StackLock};

/// Reads and changes the stack-owner lock (free / deploy / export).
///
/// The lock is `stack-owner.json` in the state folder (or `[stack]
/// lock_file`), read and written under a flock on `<lock_file>.lock`. While
/// `export` holds it, `start`, `stop`, `restart`, `scale` and `reload`
/// refuse (exit 2) unless given `--force`, and the keeper does not deploy.
///
/// Exit codes: 2 another owner holds it, 3 release by a task that does not
/// hold it, 4 the lock file stayed busy for 5 s, 1 a corrupt lock file.
///
/// Examples:
///
/// $ stackctl lock acquire export farm-exp-13 "24-cell sweep"
///
/// $ stackctl lock current
///
/// $ stackctl lock release farm-exp-13
#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(subcommand)]
    pub action: LockAction,
}

#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Takes the lock for OWNER (idempotent for the same owner and task id).
    ///
    /// Exits 2, naming the holder, while another owner or task holds it.
    Acquire {
        /// `deploy` or `export` (to free it, release it).
        owner: String,
        /// The task that holds it.
        task_id: String,
        /// Why, for whoever finds it held.
        reason: Option<String>,
    },
    /// Gives the lock back (only the task that holds it may).
    ///
    /// Exits 3 when TASK_ID does not hold it (also when it is already free).
    Release {
        /// The task that holds it.
        task_id: String,
    },
    /// Prints the current owner: free, deploy or export.
    Current,
    /// Prints the whole lock record: owner, task, since when, why.
    Status {
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `lock`.
///
/// # Errors
/// Per SPEC: 2 held by another owner, 3 not the holder, 4 timeout; 1 for a
/// corrupt or unreadable lock file (left as it is).
pub fn run(args: LockArgs, g: &Global) -> Result<u8> {
    // The lock needs only `lock_file` from the stack file: a stack file that
    // does not validate (a broken edit mid-deploy) must not lock an export
    // job out of its own lock, so its diagnostics are not an error here.
    let (_, stack, _invalid) = super::session::load_stack_lenient(g)?;
    let lock = StackLock::of(&stack);
    match args.action {
        LockAction::Acquire {
            owner,
            task_id,
            reason,
        } => {
            let owner: Owner = owner.parse()?;
            let record = lock.acquire(owner, &task_id, reason.as_deref())?;
            if !g.quiet {
                println!("{}", record.describe());
            }
        }
        LockAction::Release { task_id } => {
            let was = lock.release(&task_id)?;
            if !g.quiet {
                println!("released {}; the stack is free", was.describe());
            }
        }
        LockAction::Current => {
            println!("{}", lock.read()?.owner);
        }
        LockAction::Status { json } => {
            let record = lock.read()?;
            if json {
                println!("{}", record.to_json());
            } else {
                print_status(&record, lock.path());
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn print_status(r: &LockRecord, path: &std::path::Path) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let since = r
        .acquired_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(&t.replace("+00:00", "Z")).ok())
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| {
            format!(
                " ({} ago)",
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
            )
        })
        .unwrap_or_default();
    println!("owner:        {}", r.owner);
    println!("task:         {}", dash(&r.task_id));
    println!("acquired at:  {}{since}", dash(&r.acquired_at));
    println!("reason:       {}", dash(&r.reason));
    println!("file:         {}", path.display());
}
