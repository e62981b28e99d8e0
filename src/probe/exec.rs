//! The `exec` probe: a command exits 0. It runs through
//! [`crate::spawn::run_oneshot`] (the supervisor's single reaping path, its
//! own process group, killed whole at the deadline), never through
//! `std::process` or `tokio::process` here.
//!
//! Owns: what passes (exit 0 in time). Must not touch: the command's
//! environment (the caller's), what a failure means.

use std::time::Duration;

use crate::config::CommandSpec;
use crate::spawn::{run_oneshot, OneshotOutcome};

use super::{timed_out, ProbeCtx, ProbeFailure};

pub(super) async fn check(
    cmd: &CommandSpec,
    ctx: &ProbeCtx,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let done = run_oneshot(cmd, &ctx.cwd, &ctx.env, timeout)
        .await
        .map_err(|e| ProbeFailure::new(format!("cannot run `{cmd}`: {e}")))?;
    let what = match done.outcome {
        OneshotOutcome::Exited(0) => return Ok(()),
        OneshotOutcome::Exited(code) => format!("exited {code}"),
        OneshotOutcome::Signaled(sig) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        OneshotOutcome::TimedOut => return Err(timed_out(timeout)),
    };
    let reason = match last_line(&done.output) {
        Some(line) => format!("{what}: {line}"),
        None => what.clone(),
    };
    Err(ProbeFailure::new(reason).briefly(what))
}

/// The last non-blank line of the output, trimmed and cut to a readable length.
fn last_line(output: &str) -> Option<String> {
    const MAX: usize = 200;
    let line = output.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    if line.chars().count() <= MAX {
        return Some(line.to_string());
    }
    let mut cut: String = line.chars().take(MAX).collect();
    cut.push('…');
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::last_line;

    #[test]
    fn last_line_skips_blank_and_cuts_long() {
        assert_eq!(last_line("a\nb\n\n  \n"), Some("b".into()));
        assert_eq!(last_line(""), None);
        let long = "x".repeat(500);
        let l = last_line(&long).unwrap();
        assert_eq!(l.chars().count(), 201);
    }
}
