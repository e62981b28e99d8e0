//! `stackctl analyze`: the last start, looked at (`crate::timeline`).
//!
//! Owns: reading `timeline.json` and showing the analysis. Must not touch:
//! the analysis itself (pure, in `timeline`).

use std::io::Write;

use clap::Args;

use super::session::load_stack_lenient;
use super::Global;
use crate::error::{exit, Error, Result};
use crate::output::{analysis, Style};
use crate::state::StateDir;

/// Shows the last start: what each process waited for, how long it took
/// itself, and the critical chain that decided the total.
///
/// For the last start that started something (and each restart since),
/// per process: when its dependencies were met, when it was spawned, when
/// it became ready (a task: completed), or why it failed. The critical
/// chain walks back from the process that was up last through the
/// dependency it waited for last, as `systemd-analyze critical-chain`
/// does: `@` is when it was ready, `+` its own start time (pre_start,
/// spawn, gate), apart from its waiting. Processes run in parallel: their
/// own times do not add up. Failures (and what never came up) come first;
/// a service with no readiness gate says "ready at spawn" (its time is no
/// measurement). Reads `state_dir/timeline.json`, so it works with no
/// supervisor running. Exits 1 when no start was recorded yet, 2 for a
/// name the start does not have.
///
/// Examples:
///
/// $ stackctl analyze
///
/// $ stackctl analyze web            # the chain that decided when web was up
///
/// $ stackctl analyze --json
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The critical chain of this process or pool instead of the whole
    /// start's.
    pub name: Option<String>,
    /// Print one JSON document (`op`, `at`, `total_s`, `chain`,
    /// `processes`, `restarts`) instead of the text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `analyze`.
///
/// # Errors
/// No start recorded (1), an unknown name (2).
pub fn run(args: AnalyzeArgs, g: &Global) -> Result<u8> {
    let (_, stack, _invalid) = load_stack_lenient(g)?;
    let state = StateDir::new(&stack.state_dir);
    let timeline = crate::supervisor::timeline::Recorder::load(&state).now();
    let Some(rec) = timeline.start else {
        return Err(Error::Failed {
            message: format!(
                "no start of stack {} is recorded in {}",
                stack.name,
                state.timeline_file().display()
            ),
            hint: Some("`stackctl start` records one".into()),
            detail: None,
        });
    };
    if let Some(n) = &args.name {
        if !rec
            .processes
            .iter()
            .any(|p| &p.name == n || &p.process == n)
        {
            let names: Vec<&str> = rec.processes.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::Usage {
                message: format!("the last start of stack {} has no `{n}`", stack.name),
                hint: Some(format!("it started: {}", names.join(", "))),
            });
        }
    }
    let a = crate::timeline::analyze(&rec, args.name.as_deref());
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let doc = serde_json::json!({ "stack": stack.name, "start": a });
        serde_json::to_writer(&mut out, &doc)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        analysis(&mut out, &stack.name, &a, Style { color: g.color })
    };
    match written {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::failed(format!("cannot write the analysis: {e}"))),
    }
}
