//! The commands a tick runs, and the environment each runs in.
//!
//! Owns: running a command through the project's one one-shot path
//! ([`crate::spawn::run_oneshot_with`]: its own session, the whole group
//! killed at the end or at its deadline) with its output streamed into the
//! keeper log as it comes; `stackctl` itself (`status --json` read as the
//! typed [`StatusDoc`], `reload`, `restart`, `start`); `escalate` and what it
//! is told; what a process that is not up shows (its state, reason and the
//! tail of its log). Must not touch: deciding (`decide`), the tick's steps
//! (`tick`), spawning stack processes (the supervisor does, asked through
//! `stackctl`).
//!
//! Environments: `stackctl` and git get the keeper's own environment only
//! (a supervisor that `start` launches reads the stack's env files itself);
//! deploy steps, prereqs and `escalate` get the stack's environment over it
//! (`[stack] env_file`s, then `[env]`, as for processes), plus the
//! `STACKCTL_*` that say what is deployed. Values are never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decide::NotUp;
use super::tick::Failure;
use super::Keeper;
use crate::config::{CommandSpec, KeeperSpec, Stack};
use crate::spawn::{run_oneshot_with, OneshotOptions, OneshotOutcome};
use crate::state::StateDir;
use crate::status::StatusDoc;

/// `escalate` is killed (with its group) after this long.
const ESCALATE_TIMEOUT: Duration = Duration::from_secs(300);
/// `stackctl status --json` must answer within this.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);
/// After a command ended, its output is still read for this long (a
/// process that left its group may hold the pipe open for ever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How many lines of a failed process's log the keeper shows.
const TAIL_LINES: usize = 10;
/// How many failed processes get their log tail shown.
const TAIL_PROCESSES: usize = 5;
/// A log line longer than this is cut (an environment variable holds at
/// most 128 KiB, and `escalate` gets them all in one).
const TAIL_LINE_MAX: usize = 1000;

/// The keeper's own environment (variables that are not UTF-8 are left out).
pub(super) fn own_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The keeper's environment, then the stack's (`spec.env`), then `extra`:
/// later layers win.
pub(super) fn stack_env(spec: &KeeperSpec, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = own_env().into_iter().collect();
    env.extend(spec.env.0.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra.iter().cloned());
    env.into_iter().collect()
}

/// A deploy or escalate command as argv, its `${VAR}`s expanded from `env`
/// (a shell string keeps what it cannot expand: the shell expands it or
/// reports it).
pub(super) fn expand_command(
    cmd: &CommandSpec,
    env: &[(String, String)],
) -> Result<Vec<String>, String> {
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let one = |t: &str| crate::config::expand(t, &lookup).map_err(|e| e.to_string());
    Ok(match cmd {
        CommandSpec::Shell(s) => {
            let s = one(s).unwrap_or_else(|_| s.clone());
            vec!["/bin/sh".into(), "-c".into(), s]
        }
        CommandSpec::Argv(v) => v.iter().map(|a| one(a)).collect::<Result<_, _>>()?,
    })
}

/// Processes that are not up, with the tail of each one's log: what a
/// failed restart or verify, and `escalate`, show.
#[derive(Debug, Clone, Default)]
pub(super) struct Problems {
    pub(super) list: Vec<NotUp>,
    /// (instance, its log, the last lines of it).
    tails: Vec<(String, PathBuf, Vec<String>)>,
}

impl Problems {
    /// `list`, with the tails of the first few logs read from `stack`'s state folder.
    pub(super) fn gather(stack: &Stack, list: Vec<NotUp>) -> Problems {
        let state = StateDir::new(&stack.state_dir);
        let tails = list
            .iter()
            .filter(|p| p.state != "not listed")
            .take(TAIL_PROCESSES)
            .map(|p| {
                let path = state.log_file(&p.name);
                let lines = crate::logs::tail(&path, TAIL_LINES)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| cut(&l, TAIL_LINE_MAX))
                    .collect();
                (p.name.clone(), path, lines)
            })
            .collect();
        Problems { list, tails }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `api failed (exited with code 3), web stopped`.
    pub(super) fn summary(&self) -> String {
        self.list
            .iter()
            .map(|p| match &p.reason {
                Some(r) => format!("{} {} ({r})", p.name, p.state),
                None => format!("{} {}", p.name, p.state),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The instance names, space-separated.
    pub(super) fn names(&self) -> String {
        self.list
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One `name: state (reason)` line per process.
    pub(super) fn lines(&self) -> String {
        self.list
            .iter()
            .map(NotUp::line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines, then each log's tail under a ruler.
    pub(super) fn detail(&self) -> String {
        let mut out = self.lines();
        for (_, path, lines) in &self.tails {
            out.push_str(&format!(
                "\n── last {} lines of {} ──",
                lines.len(),
                path.display()
            ));
            for l in lines {
                out.push('\n');
                out.push_str(l);
            }
        }
        out
    }

    /// Into the keeper log: `  not up| api: …`, then `  api.log| …`.
    pub(super) fn write_to(&self, log: &super::log::KeeperLog) {
        for p in &self.list {
            log.output("not up", &p.line());
        }
        for (name, _, lines) in &self.tails {
            for l in lines {
                log.output(&format!("{name}.log"), l);
            }
        }
    }
}

/// `s`, at most `max` bytes of it (on a character boundary), `…` if cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Keeper {
    /// `stackctl -f <stack file> ARGS…` through this very binary.
    pub(super) fn stackctl(&self, stack: &Stack, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.exe.display().to_string(),
            "-f".to_string(),
            stack.file.display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Runs `argv` in `cwd` with exactly `env`, each line of its output into
    /// the keeper log labelled `label` as it comes; killed with its whole
    /// group at `timeout`.
    pub(super) async fn run_logged(
        &self,
        label: &str,
        argv: &[String],
        cwd: &Path,
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<OneshotOutcome, String> {
        let Some(program) = argv.first() else {
            return Err("empty command".into());
        };
        let opts = OneshotOptions {
            timeout,
            drain: OUTPUT_GRACE,
            ..OneshotOptions::default()
        };
        let cmd = CommandSpec::Argv(argv.to_vec());
        run_oneshot_with(&cmd, cwd, env, &opts, |l| self.log.output(label, l))
            .await
            .map(|r| r.outcome)
            .map_err(|e| format!("cannot run `{program}` in {}: {e}", cwd.display()))
    }

    /// `stackctl ARGS…` for `stack`, its output labelled with its command;
    /// an error unless it exits 0 (`` `stackctl restart api` exited 1 ``).
    pub(super) async fn stackctl_logged(&self, stack: &Stack, args: &[&str]) -> Result<(), String> {
        let argv = self.stackctl(stack, args);
        let label = args.first().copied().unwrap_or("stackctl");
        let shown = format!("`stackctl {}`", args.join(" "));
        let env = own_env();
        match self.run_logged(label, &argv, &stack.root, &env, None).await {
            Ok(OneshotOutcome::Exited(0)) => Ok(()),
            Ok(ended) => Err(format!("{shown} {ended}")),
            Err(e) => Err(e),
        }
    }

    /// `stackctl status --json` for `stack`: its exit code and document.
    pub(super) async fn status(&self, stack: &Stack) -> Result<(Option<i32>, StatusDoc), String> {
        let argv = self.stackctl(stack, &["status", "--json"]);
        let opts = OneshotOptions {
            split_stdout: true,
            keep: 64 << 20,
            ..OneshotOptions::deadline(STATUS_TIMEOUT)
        };
        let out = run_oneshot_with(
            &CommandSpec::Argv(argv),
            &stack.root,
            &own_env(),
            &opts,
            |_| {},
        )
        .await
        .map_err(|e| format!("cannot run `stackctl status --json`: {e}"))?;
        let code = match out.outcome {
            OneshotOutcome::Exited(c) => Some(c),
            OneshotOutcome::TimedOut => {
                return Err(format!(
                    "`stackctl status --json` did not answer within {}s",
                    STATUS_TIMEOUT.as_secs()
                ))
            }
            OneshotOutcome::Signaled(_) => None,
        };
        let doc = serde_json::from_str::<StatusDoc>(&out.stdout).map_err(|e| {
            format!(
                "`stackctl status --json` {} without a status document ({e}): {}",
                out.outcome,
                out.output.trim()
            )
        })?;
        Ok((code, doc))
    }

    /// The `watch_health` processes that are not running and ready.
    pub(super) async fn unhealthy(&self) -> Result<Vec<NotUp>, String> {
        if self.spec.watch_health.is_empty() {
            return Ok(Vec::new());
        }
        let (_, doc) = self.status(&self.stack).await?;
        Ok(super::decide::not_up(&doc, Some(&self.spec.watch_health)))
    }

    /// What is not up in `stack` now (of `only`, or all), with log tails;
    /// empty when even the status cannot be read.
    pub(super) async fn problems(&self, stack: &Stack, only: Option<&[String]>) -> Problems {
        match self.status(stack).await {
            Ok((_, doc)) => Problems::gather(stack, super::decide::not_up(&doc, only)),
            Err(_) => Problems::default(),
        }
    }

    /// Runs `escalate` with the failure in its environment; says how it went.
    pub(super) async fn escalate(
        &self,
        f: &Failure,
        attempts: u32,
        commit: Option<&str>,
    ) -> String {
        let Some(cmd) = self.spec.escalate.clone() else {
            return "no `escalate` configured".into();
        };
        let told = [
            ("STACKCTL_STACK", self.stack.name.clone()),
            ("STACKCTL_KEEPER_ERROR", f.error.clone()),
            ("STACKCTL_KEEPER_STEP", f.step.to_string()),
            ("STACKCTL_KEEPER_SEEN", f.seen.clone()),
            ("STACKCTL_KEEPER_ATTEMPTS", attempts.to_string()),
            (
                "STACKCTL_KEEPER_COMMIT",
                commit.unwrap_or_default().to_string(),
            ),
            ("STACKCTL_KEEPER_BRANCH", self.branch_name()),
            ("STACKCTL_KEEPER_LOG", self.log.path.display().to_string()),
            ("STACKCTL_KEEPER_PROCESSES", f.problems.names()),
            ("STACKCTL_KEEPER_PROBLEMS", f.problems.lines()),
            ("STACKCTL_KEEPER_DETAIL", f.problems.detail()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let env = stack_env(&self.spec, &told);
        let argv = match expand_command(&cmd, &env) {
            Ok(a) => a,
            Err(e) => return format!("could not escalate: {e}"),
        };
        match self
            .run_logged(
                "escalate",
                &argv,
                &self.stack.root,
                &env,
                Some(ESCALATE_TIMEOUT),
            )
            .await
        {
            Ok(OneshotOutcome::TimedOut) => format!(
                "could not escalate: `{cmd}` did not finish within {} and was killed",
                humantime::format_duration(ESCALATE_TIMEOUT)
            ),
            Ok(ended) => format!("escalated (`{cmd}` {ended})"),
            Err(e) => format!("could not escalate: {e}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_expand_from_the_given_environment_the_last_value_winning() {
        let env = vec![
            ("A".to_string(), "keeper".to_string()),
            ("A".to_string(), "stack".to_string()),
        ];
        let argv = expand_command(&CommandSpec::Argv(vec!["echo".into(), "${A}".into()]), &env);
        assert_eq!(argv.unwrap(), ["echo", "stack"]);
        let sh = expand_command(&CommandSpec::Shell("echo ${A} ${NOPE}".into()), &env).unwrap();
        assert_eq!(
            sh[2], "echo ${A} ${NOPE}",
            "a shell string it cannot expand is kept"
        );
        assert!(expand_command(&CommandSpec::Argv(vec!["${NOPE}".into()]), &env).is_err());
    }

    #[test]
    fn long_log_lines_are_cut_on_a_character() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é…");
    }
}
