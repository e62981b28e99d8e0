//! `stackctl keep`: the deploy keeper.
//!
//! Owns: the three ways to call it: the foreground loop (handed to
//! `crate::keeper::run`), `--trigger` (touch the trigger file and return) and
//! `--tmux` (a detached session `stackctl-keeper-<stack>` running the loop).
//! Must not touch: the tick itself, the lock file, stack processes.

use std::io::Write;

use clap::Args;

use super::Global;
use crate::error::{exit, Error, Result};

/// Runs the deploy keeper loop in the foreground.
///
/// Keeps the worktree at the head of the configured branch: when it moves,
/// or on a manual trigger, runs the deploy steps and restarts what follows
/// the code (`[keeper] restart`, default every service); restarts a watched
/// service found unhealthy; defers to an export that holds the lock. Needs
/// a `[keeper]` section. One line per tick in `state_dir/keeper.log`.
///
/// Examples:
///
/// $ stackctl keep             # run the loop here (tmux, systemd)
///
/// $ stackctl keep --tmux      # ... in tmux session stackctl-keeper-<stack>
///
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
/// An invalid stack file, or no `[keeper]` section (2); another keeper
/// already runs for this stack, or tmux cannot start it (1).
pub fn run(args: KeepArgs, g: &Global) -> Result<u8> {
    // `--trigger` only touches a file under state_dir: a stack file broken
    // by a bad commit must not stop an operator from asking the running
    // keeper to deploy the fix.
    let (path, stack, invalid) = super::session::load_stack_lenient(g)?;
    if let Some(e) = invalid {
        if !args.trigger {
            return Err(e);
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "warning: the stack file does not validate; triggering the running keeper anyway:"
        );
        let _ = super::session::render_with_outcome(&e, "triggering the running keeper", &mut err);
    } else if stack.keeper.is_none() {
        return Err(Error::Usage {
            message: format!("{} has no [keeper] section", path.display()),
            hint: Some("add `[keeper]` with at least `branch = \"main\"`".into()),
        });
    }
    if args.trigger {
        let file = crate::keeper::trigger(&stack)?;
        if !g.quiet {
            if crate::keeper::is_running(&stack) {
                println!(
                    "triggered the keeper of stack {} ({})",
                    stack.name,
                    file.display()
                );
            } else {
                println!(
                    "no keeper runs for stack {}; the trigger ({}) waits for the next `stackctl keep`",
                    stack.name,
                    file.display()
                );
            }
        }
        return Ok(exit::SUCCESS);
    }
    if args.tmux {
        return run_in_tmux(&path, &stack, g);
    }
    crate::keeper::run(&path, stack, g.quiet)
}

fn run_in_tmux(path: &std::path::Path, stack: &crate::config::Stack, g: &Global) -> Result<u8> {
    let session = format!("stackctl-keeper-{}", stack.name);
    if crate::keeper::is_running(stack) {
        return Err(Error::Failed {
            message: format!("a keeper already runs for stack {}", stack.name),
            hint: Some(format!("`tmux attach -t {session}` if it runs there")),
            detail: None,
        });
    }
    let exe = crate::spawn::stackctl_binary()
        .map_err(|e| Error::failed(format!("cannot find the stackctl binary: {e}")))?;
    let quote = super::session::shell_quote;
    let cmdline = format!(
        "{} -f {} keep",
        quote(&exe.display().to_string()),
        quote(&path.display().to_string())
    );
    super::session::tmux_new_session(
        &session,
        &stack.root,
        &cmdline,
        "run `stackctl keep` under systemd",
    )?;
    if !g.quiet {
        println!("keeper running in tmux session {session} (tmux attach -t {session})");
    }
    Ok(exit::SUCCESS)
}
