//! Spawning children.

// Interface promised to the probe module; the real implementation (through
// the supervisor's single reaping path) replaces this body.

use std::path::Path;
use std::time::Duration;

use crate::config::CommandSpec;

/// How a one-shot command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneshotOutcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Still running at the deadline; its whole group was killed.
    TimedOut,
}

/// The result of [`run_oneshot`]: how it ended and the tail of its output.
#[derive(Debug, Clone)]
pub struct Oneshot {
    pub outcome: OneshotOutcome,
    /// The last few KB of its stdout and stderr together.
    pub output: String,
}

/// Runs `cmd` (templates already expanded) to completion in its own process
/// group, with `env` added to stackctl's environment, killing the group at
/// `timeout`.
///
/// # Errors
/// When it cannot be spawned.
pub async fn run_oneshot(
    cmd: &CommandSpec,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<Oneshot> {
    let mut c = match cmd {
        CommandSpec::Shell(s) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        CommandSpec::Argv(v) => {
            let mut c = tokio::process::Command::new(&v[0]);
            c.args(&v[1..]);
            c
        }
    };
    c.current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, c.output()).await {
        Ok(out) => {
            let out = out?;
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let outcome = match out.status.code() {
                Some(c) => OneshotOutcome::Exited(c),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    OneshotOutcome::Signaled(out.status.signal().unwrap_or(0))
                }
            };
            Ok(Oneshot {
                outcome,
                output: text,
            })
        }
        Err(_) => Ok(Oneshot {
            outcome: OneshotOutcome::TimedOut,
            output: String::new(),
        }),
    }
}
