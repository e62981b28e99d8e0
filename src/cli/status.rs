//! `stackctl status`: the table or `--json`, from the supervisor or from
//! the pid files when none runs, and `--watch`.
//!
//! Owns: choosing the source and its exit code. Must not touch: building
//! a process's status (`status::Observed`), rendering (`output`).

use std::io::Write;

use clap::Args;

use super::session::{request, warn_invalid_offline, Target};
use super::Global;
use crate::control::protocol::{Request, Response};
use crate::error::{exit, Error, Result};
use crate::output::{status_table, Style};

/// Shows every process: pid, state, readiness, uptime, restarts, memory.
///
/// A table of NAME, PID, STATE, READY, UPTIME, RESTARTS and GROUP-RSS(MB)
/// (the resident memory of the instance's whole process group: it and its
/// children), one row per process instance; a pool scaled to 0 is one row
/// saying so. Tells the truth with no supervisor running
/// too, from the pid files, checking that each pid is still the same
/// process (start time and boot id). Exits 0 when every named process is
/// running and ready and a supervisor runs, 3 otherwise. A stack.toml that
/// no longer validates is warned about (with its diagnostics), and the
/// running supervisor, or the pid files, asked anyway.
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
///
/// $ stackctl status --watch          # refreshed in place until Ctrl-C
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Processes or pools (default: all).
    pub names: Vec<String>,
    /// Print one JSON document instead of the table (the shape is in the README).
    #[arg(long)]
    pub json: bool,
    /// Keep showing it: the table redrawn in place on every change (on a
    /// terminal) until Ctrl-C; elsewhere one table (or with --json one
    /// JSON document per line) per change. Needs a running supervisor.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

/// Runs `status`.
///
/// # Errors
/// Invalid stack file (2); "not ready" is exit 3, not an error.
pub fn run(args: StatusArgs, g: &Global) -> Result<u8> {
    let target = Target::find(g)?;
    if args.watch {
        return watch(&args, &target, g);
    }
    let (stack, invalid) = (&target.stack, &target.invalid);
    let doc = match target.running("showing the running supervisor's status")? {
        Some(mut client) => {
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
                    return Err(target
                        .valid()
                        .err()
                        .unwrap_or_else(|| Error::failed("invalid stack file")));
                }
                warn_invalid_offline(e, "showing what the pid files prove");
            }
            crate::supervisor::offline::status(stack, &args.names)?
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

/// `status --watch`: the supervisor sends the document on every change
/// (and once a second for the clocks); each one replaces the last on a
/// terminal. Ends when the supervisor exits (0), or with Ctrl-C.
fn watch(args: &StatusArgs, target: &Target, g: &Global) -> Result<u8> {
    let stack = &target.stack;
    let Some(mut client) = target.running("watching the running supervisor's status")? else {
        return Err(Error::Failed {
            message: format!("no supervisor is running for stack {}", stack.name),
            hint: Some(
                "`status --watch` follows a running supervisor; `stackctl status` shows what the pid files prove"
                    .into(),
            ),
            detail: None,
        });
    };
    client
        .send(Request::Watch {
            names: args.names.clone(),
        })
        .map_err(|e| Error::failed(format!("cannot talk to the supervisor: {e}")))?;
    let terminal = !args.json && super::live::terminal();
    let mut screen = super::live::Screen::new(std::io::stdout());
    let style = Style { color: g.color };
    loop {
        let answer = client
            .recv()
            .map_err(|e| Error::failed(format!("lost the supervisor: {e}")))?;
        let doc = match answer {
            Some(Response::Status(doc)) => doc,
            Some(Response::Done {
                ok: false, error, ..
            }) => {
                return Err(error
                    .map(Error::from)
                    .unwrap_or_else(|| Error::failed("the supervisor refused to watch")))
            }
            Some(Response::Done { .. }) | None => {
                eprintln!("stack {}: the supervisor exited", stack.name);
                return Ok(exit::SUCCESS);
            }
            Some(_) => continue,
        };
        let mut text = Vec::new();
        let written = if args.json {
            serde_json::to_writer(&mut text, &doc)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(text))
        } else {
            status_table(&mut text, &doc, style)
        };
        written.map_err(|e| Error::failed(format!("cannot render the status: {e}")))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let shown = if terminal {
            let footer = style.dim("(watching: redrawn on every change; Ctrl-C ends)");
            screen.draw(&format!("{text}{footer}\n"), super::live::size())
        } else {
            let mut out = std::io::stdout().lock();
            let sep = if args.json { "" } else { "\n" };
            write!(out, "{text}{sep}").and_then(|()| out.flush())
        };
        match shown {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(exit::SUCCESS),
            Err(e) => return Err(Error::failed(format!("cannot write the status: {e}"))),
        }
    }
}
