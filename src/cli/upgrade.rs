//! `stackctl upgrade`: hands the running stack to this binary.
//!
//! Owns: checking the new binary (`--version`, the anchor protocol) and
//! asking the supervisor to leave for it, then waiting for the new one.
//! Must not touch: the re-execution itself (the anchor's).

use std::time::Duration;

use clap::Args;

use super::session::{connect, load_stack, ping, request, wait_supervisor_gone};
use super::Global;
use crate::anchor::proto::ToAnchor;
use crate::control::protocol::Request;
use crate::error::{exit, Error, Result};
use crate::state::StateDir;

/// Replaces the running supervisor with this binary, restarting no process.
///
/// The running supervisor leaves; the stack's anchor (the parent of every
/// process, which holds their output pipes) re-executes itself from this
/// binary — same pid, so every process stays its child — and launches this
/// binary as the new supervisor, which takes up every process where the old
/// one left it: same pids, states, restart counts and uptimes. The new
/// binary is tried first (`--version`); a broken one changes nothing. The
/// deploy keeper runs this after a deploy that changed the binary.
///
/// Examples:
///
/// $ stackctl upgrade                    # run the new binary: it takes over
///
/// $ ./target/release/stackctl upgrade    # after `cargo build --release`
#[derive(Debug, Args)]
pub struct UpgradeArgs {}

/// Runs `upgrade`.
///
/// # Errors
/// No supervisor runs (1), the new binary does not run (1), the new
/// supervisor does not answer (1).
pub fn run(_args: UpgradeArgs, g: &Global) -> Result<u8> {
    let (_, stack) = load_stack(g)?;
    let Some(mut client) = connect(&stack)? else {
        return Err(Error::Failed {
            message: format!("no supervisor is running for stack {}", stack.name),
            hint: Some("`stackctl start` runs this binary anyway".into()),
            detail: None,
        });
    };
    let who = ping(&mut client)?;
    let (old, old_pid) = (who.stackctl, who.pid);
    let exe = crate::spawn::stackctl_binary()
        .and_then(std::fs::canonicalize)
        .map_err(|e| Error::failed(format!("cannot find this stackctl binary: {e}")))?;
    let mut client = connect(&stack)?.ok_or_else(|| Error::failed("the supervisor went away"))?;
    let quiet = Global {
        quiet: true,
        ..g.clone()
    };
    request(&mut client, Request::Upgrade { exe: exe.clone() }, &quiet)?;
    if !wait_supervisor_gone(&stack, Duration::from_secs(30)) {
        return Err(Error::failed(
            "the old supervisor did not leave within 30s (see stackctl.log)",
        ));
    }
    let state = StateDir::new(&stack.state_dir);
    // The anchor answers once the new supervisor serves.
    crate::anchor::client::request(&state, &ToAnchor::Launch, &[]).map_err(|e| Error::Failed {
        message: format!("the new supervisor did not come up: {e}"),
        hint: Some(format!("see {}", state.own_log().display())),
        detail: None,
    })?;
    let mut client = connect(&stack)?.ok_or_else(|| Error::Failed {
        message: "the new supervisor does not answer".into(),
        hint: Some(format!("see {}", state.own_log().display())),
        detail: None,
    })?;
    let who = ping(&mut client)?;
    let (new, new_pid, anchor) = (who.stackctl, who.pid, who.anchor);
    if !g.quiet {
        println!(
            "stack {}: supervisor stackctl {old} (pid {old_pid}) → stackctl {new} (pid {new_pid}), from {}{}; no process was restarted",
            stack.name,
            exe.display(),
            anchor.map(|a| format!("; anchor pid {a} re-executed")).unwrap_or_default()
        );
    }
    Ok(exit::SUCCESS)
}
