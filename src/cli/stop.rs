//! `stackctl stop`.
//!
//! Owns: its arguments, the request to a running supervisor, and the stop
//! by pid files when none runs (through `supervisor::offline`). Must not
//! touch: the stop sequence (`spawn::terminate`).

use std::time::Duration;

use clap::Args;

use super::session::{request_surviving, wait_supervisor_gone, warn_invalid_offline, Target};
use super::Global;
use crate::control::protocol::Request;
use crate::error::{exit, Error, Result};

/// Stops NAMEs, or everything and then the supervisor.
///
/// Reverse dependency order, parallel within a level: stop_signal to the
/// whole process group, SIGKILL after stop_timeout; then anything of the
/// stack that left its group (setsid, double fork) is stopped too. Returns
/// when they are gone; exits 1 naming any process that survived. With no
/// supervisor running (it was killed), stops what the pid files prove is
/// still ours. A running supervisor is reached even when stack.toml no
/// longer validates (a warning shows the file's diagnostics). Stopping a process that others depend on leaves them
/// running, and says so; `--with-dependents` stops them first.
///
/// Examples:
///
/// $ stackctl stop
///
/// $ stackctl stop worker      # every member of the pool
///
/// $ stackctl stop worker.2    # one member
///
/// $ stackctl stop --with-dependents api   # what depends on api, then api
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Processes or pools (default: everything, then the supervisor exits).
    pub names: Vec<String>,
    /// Stop what depends on NAMEs (directly or not) first, in reverse
    /// dependency order, as systemd's `Requires=` does.
    #[arg(long)]
    pub with_dependents: bool,
    /// Stop even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
}

/// Runs `stop`.
///
/// # Errors
/// Lock held (2), a process could not be stopped (1).
pub fn run(args: StopArgs, g: &Global) -> Result<u8> {
    let target = Target::find(g)?;
    let (stack, invalid) = (&target.stack, &target.invalid);
    crate::lock::guard_mutation(stack, args.force, "stop")?;
    match target.running("stopping through the running supervisor")? {
        Some(mut client) => {
            let all = args.names.is_empty();
            request_surviving(
                stack,
                &mut client,
                Request::Stop {
                    names: args.names,
                    with_dependents: args.with_dependents,
                },
                g,
            )?;
            if all {
                if !wait_supervisor_gone(stack, Duration::from_secs(10)) {
                    return Err(Error::failed(
                        "the stack stopped but its supervisor did not exit within 10s",
                    ));
                }
                if !g.quiet {
                    println!("stack {} stopped", stack.name);
                }
            }
            Ok(exit::SUCCESS)
        }
        None => {
            // A broken stack file must not lock the operator out: the pid
            // files say what runs and how to stop it.
            if let Some(e) = &invalid {
                warn_invalid_offline(e, "stopping what the pid files show");
            }
            // An anchor left without a supervisor must launch no new one
            // while its processes are stopped here.
            let state = crate::state::StateDir::new(&stack.state_dir);
            let retire = crate::anchor::proto::ToAnchor::Retire;
            if let Err(e) = crate::anchor::client::request(&state, &retire, &[]) {
                return Err(Error::failed(format!(
                    "cannot tell the stack's anchor to stand down: {e}"
                )));
            }
            // No supervisor: stop what the pid files prove is still ours.
            let cleared = crate::supervisor::offline::stop_all_now(stack)?;
            if !g.quiet {
                for (name, pid) in &cleared.stopped {
                    println!("  ok  {name:<24} stopped pid {pid} (it had no supervisor)");
                }
                if cleared.stopped.is_empty() && cleared.survivors.is_empty() {
                    println!("stack {}: nothing is running", stack.name);
                }
            }
            if cleared.survivors.is_empty() {
                Ok(exit::SUCCESS)
            } else {
                let list: Vec<String> = cleared
                    .survivors
                    .iter()
                    .map(|(n, p)| format!("{n} (pid {p})"))
                    .collect();
                Err(Error::failed(format!("could not stop {}", list.join(", "))))
            }
        }
    }
}
