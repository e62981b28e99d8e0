//! `stackctl check`: validate the stack file without running anything.
//!
//! Owns: discovering and loading the stack file (through `config`), with
//! `require_env` checked, and printing the verdict and the start order.
//! Must not touch: TOML (that is `config`), processes, env values (never
//! printed).

use std::io::Write;

use clap::Args;

use super::Global;
use crate::config::{self, Kind, Stack};
use crate::error::{exit, Error, Result};

/// Validates the stack file without running anything.
///
/// Reports every problem at once, each with file:line:column and a hint,
/// and exits 2; otherwise prints the start order. `require_env` variables
/// are checked against this shell's environment.
///
/// Examples:
///
/// $ stackctl check
///
/// $ stackctl -f examples/minimal.toml check --json
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result as JSON on stdout (`ok`, `file`, and `order` or `problems`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `check`.
///
/// # Errors
/// An invalid or missing stack file (exit 2).
pub fn run(args: CheckArgs, g: &Global) -> Result<u8> {
    let path = config::discover(g.file.as_deref())?;
    let stack = match config::load_checked(&path) {
        Ok(s) => s,
        Err(e) => {
            if args.json {
                // The diagnostics go to stderr as usual; stdout stays JSON.
                let problems = match &e {
                    config::ConfigError::Invalid { count, .. } => *count,
                    _ => 1,
                };
                let v = serde_json::json!({ "ok": false, "file": path, "problems": problems });
                let _ = writeln!(std::io::stdout().lock(), "{v}");
            }
            return Err(e.into());
        }
    };
    super::session::print_warnings(&stack);
    let order = config::start_order(&stack);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let v = serde_json::json!({
            "ok": true,
            "stack": stack.name,
            "file": stack.file,
            "order": order,
        });
        writeln!(out, "{v}")
    } else if g.quiet {
        Ok(())
    } else {
        write!(out, "{}", render(&stack, &order))
    };
    match written {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::Other(
            anyhow::Error::new(e).context("failed to write to stdout"),
        )),
    }
}

/// `stack.toml: ok (stack NAME: 1 task, 5 services)` and the numbered levels.
fn render(stack: &Stack, order: &[Vec<String>]) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let shown = config::diag::shown_path(&stack.file, &cwd);
    let tasks = stack
        .processes
        .iter()
        .filter(|p| p.kind == Kind::Task)
        .count();
    let services = stack.processes.len() - tasks;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let mut s = format!(
        "{shown}: ok (stack {}: {}, {})\n",
        stack.name,
        plural(tasks, "task"),
        plural(services, "service")
    );
    if !order.is_empty() {
        s.push_str("start order:\n");
    }
    for (i, level) in order.iter().enumerate() {
        let names: Vec<String> = level
            .iter()
            .map(|n| match stack.process(n).and_then(|p| p.replicas) {
                Some(r) => format!("{n} (pool ×{r})"),
                None => n.clone(),
            })
            .collect();
        s.push_str(&format!("  {}. {}\n", i + 1, names.join(", ")));
    }
    s
}
