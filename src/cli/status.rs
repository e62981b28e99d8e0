//! `stackctl status`.

use std::io::Write;

use clap::Args;

use super::session::{connect, load_stack_lenient, request, warn_invalid, warn_invalid_offline};
use super::Global;
use crate::control::protocol::Request;
use crate::error::{exit, Error, Result};
use crate::output::{status_table, Style};

/// Shows every process: pid, state, readiness, uptime, restarts, memory.
///
/// A table of NAME, PID, STATE, READY, UPTIME, RESTARTS and RSS(MB), one
/// row per process instance. Tells the truth with no supervisor running
/// too, from the pid files, checking that each pid is still the same
/// process (start time and boot id). Exits 0 when every named process is
/// running and ready and a supervisor runs, 3 otherwise.
///
/// An autoscaled pool gets a few lines under the table: its size and the
/// size its last depth wants, when that depth was read, the last decision
/// and why, failures of its depth source and a manual hold.
///
/// States: pending, starting, running, backoff, stopping, stopped,
/// completed, failed.
///
/// Examples:
///
/// $ stackctl status
///
/// $ stackctl status api --json
///
/// $ stackctl -q status worker && echo "all workers up"
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Processes or pools (default: all).
    pub names: Vec<String>,
    /// Print one JSON document instead of the table (the shape is in the README).
    #[arg(long)]
    pub json: bool,
}

/// Runs `status`.
///
/// # Errors
/// Invalid stack file (2); "not ready" is exit 3, not an error.
pub fn run(args: StatusArgs, g: &Global) -> Result<u8> {
    let (_, stack, invalid) = load_stack_lenient(g)?;
    let doc = match connect(&stack)? {
        Some(mut client) => {
            if let Some(e) = &invalid {
                warn_invalid(e, "showing the running supervisor's status");
            }
            let quiet = Global {
                quiet: true,
                ..g.clone()
            };
            request(
                &mut client,
                Request::Status {
                    names: args.names.clone(),
                },
                &quiet,
            )?
            .ok_or_else(|| Error::failed("the supervisor sent no status"))?
        }
        None => {
            if let Some(e) = &invalid {
                if !args.names.is_empty() {
                    return Err(invalid.unwrap_or_else(|| Error::failed("invalid stack file")));
                }
                warn_invalid_offline(e, "showing what the pid files prove");
            }
            crate::supervisor::offline::status(&stack, &args.names)?
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer(&mut out, &doc)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        status_table(&mut out, &doc, Style { color: g.color })
    };
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::failed(format!("cannot write the status: {e}"))),
    }
    let all_up = doc.supervisor.running && doc.processes.iter().all(|p| p.is_up());
    Ok(if all_up {
        exit::SUCCESS
    } else {
        exit::NOT_READY
    })
}
