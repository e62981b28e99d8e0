//! One-shot commands: run to completion in their own session, with a
//! deadline, the whole group killed at the end, and the tail of the output
//! kept. Used by `exec` probes and, through them, the keeper's prereqs.
//!
//! Owns: the one-shot's life from spawn to the group kill. Must not touch:
//! policy (what a failure means is the caller's).

use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{argv, signal_group, spawn, Exit};
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

const ONESHOT_OUTPUT_KEEP: usize = 8 * 1024;

/// Runs `cmd` (templates already expanded) to completion in its own
/// session, with exactly `env`, killing its whole group at `timeout`. Any
/// process it left behind in its group is killed too.
///
/// # Errors
/// When it cannot be spawned.
///
/// # Cancel safety
/// Dropping the future kills the command's group.
pub async fn run_oneshot(
    cmd: &CommandSpec,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> io::Result<Oneshot> {
    let argv = argv(cmd);
    let spawned = spawn(&argv, cwd, env, true)?;
    let pgid = spawned.pid;
    let guard = KillGroupOnDrop(pgid);
    let reader = spawned.output.map(|fd| {
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::from(fd);
            let mut keep: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        keep.extend_from_slice(&buf[..n]);
                        if keep.len() > 2 * ONESHOT_OUTPUT_KEEP {
                            keep.drain(..keep.len() - ONESHOT_OUTPUT_KEEP);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            keep
        })
    });
    let outcome = match tokio::time::timeout(timeout, spawned.exit).await {
        Ok(Ok(Exit::Code(c))) => OneshotOutcome::Exited(c),
        Ok(Ok(Exit::Signal(s))) => OneshotOutcome::Signaled(s),
        Ok(Err(_)) => return Err(io::Error::other("reaper dropped the exit status")),
        Err(_) => OneshotOutcome::TimedOut,
    };
    // Nothing a one-shot started may outlive it.
    drop(guard);
    let mut output = Vec::new();
    if let Some(r) = reader {
        if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_millis(500), r).await {
            output = bytes;
        }
    }
    let start = output.len().saturating_sub(ONESHOT_OUTPUT_KEEP);
    Ok(Oneshot {
        outcome,
        output: String::from_utf8_lossy(&output[start..]).into_owned(),
    })
}

/// SIGKILLs a process group when dropped.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = signal_group(self.0, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::identity;

    fn sh(s: &str) -> CommandSpec {
        CommandSpec::Shell(s.into())
    }

    fn path_env() -> Vec<(String, String)> {
        vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())]
    }

    #[tokio::test]
    async fn oneshot_reports_code_and_output() {
        let r = run_oneshot(
            &sh("echo hello; echo oops >&2; exit 3"),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::Exited(3));
        assert!(
            r.output.contains("hello") && r.output.contains("oops"),
            "{:?}",
            r.output
        );
    }

    #[tokio::test]
    async fn oneshot_times_out_and_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let r = run_oneshot(
            &sh(&script),
            Path::new("/"),
            &path_env(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while identity::is_alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !identity::is_alive(pid),
            "the grandchild outlived the one-shot"
        );
    }

    #[tokio::test]
    async fn child_gets_only_fds_0_to_2_and_its_own_session() {
        let r = run_oneshot(
            &sh("ls /proc/self/fd | tr '\\n' ' '; echo; ps -o sid= -p $$; echo $$"),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let lines: Vec<&str> = r.output.lines().collect();
        let fds: Vec<&str> = lines[0].split_whitespace().collect();
        // 0, 1, 2 and the fd `ls` itself opens for /proc/self/fd.
        assert!(fds.len() <= 4, "unexpected fds: {fds:?}");
        if lines.len() >= 3 {
            assert_eq!(lines[1].trim(), lines[2].trim(), "not a session leader");
        }
    }

    #[tokio::test]
    async fn missing_program_is_an_error_not_a_panic() {
        let r = run_oneshot(
            &CommandSpec::Argv(vec!["/nonexistent/program".into()]),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(5),
        )
        .await;
        assert!(r.is_err());
    }
}
