//! Failure hooks: the `on_failure` command of a process (or of the stack),
//! run when an instance becomes `failed` and, with `on_failure_exits`, on
//! each unexpected exit its restart policy restarts.
//!
//! Theory of operation. A unit tells [`Hooks::fire`] what happened; the
//! hook runs in a task of its own, so the unit never waits for it, through
//! `spawn::run_oneshot_with` (its own session and group, killed whole at
//! `on_failure_timeout` or when the supervisor goes). Its environment is
//! the [`HOOK_VARS`] and the few variables of stackctl's own environment
//! (the current base, `supervisor::env`) that a program needs to run
//! ([`PASSED`]: `PATH`, `HOME`, the locale, …) — never anything else a
//! process gets (its `[env]`, env files and `env`, or the rest of the
//! base), which may hold secrets. Its command's `${…}` expand from the
//! hook variables over the whole base: naming a variable there is the
//! operator's explicit choice. It carries no `STACKCTL_STACK_ID`,
//! so a stop never takes it for a stray of the stack. Its output and how
//! it ended go to `stackctl.log`; a hook that fails is logged there and
//! nothing else happens (a hook has no hook).
//!
//! Rate: one hook at a time per instance, at most [`RATE_LIMIT`] within
//! [`RATE_WINDOW`]: an event beyond that is dropped (and logged). A
//! `failed` event otherwise waits for a hook still running (an instance
//! fails once per life, so it gets its hook; a scheduled task that fails
//! at every run is held to the limit); an `exit` event is dropped while a
//! hook of the instance runs. The next hook is told how many were dropped
//! (`STACKCTL_SUPPRESSED`).
//!
//! Owns: which hook applies, the rate limit, the hook's environment and
//! its run. Must not touch: the unit's state (it only hears of it).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{CommandSpec, HookSpec, Stack, HOOK_VARS};
use crate::spawn::{OneshotOptions, OneshotOutcome};
use crate::status::State;

/// At most this many hooks of one instance within [`RATE_WINDOW`].
pub const RATE_LIMIT: usize = 5;

/// See [`RATE_LIMIT`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// The instance became `failed`: a crash loop, a failed gate or start,
    /// a task that failed.
    Failed,
    /// It exited (or was stopped by a failing check) unexpectedly, and is
    /// restarted.
    Exit,
}

impl HookEvent {
    /// `STACKCTL_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Failed => "failed",
            HookEvent::Exit => "exit",
        }
    }
}

/// One event of one instance.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub event: HookEvent,
    /// `api`, `worker.2`.
    pub instance: String,
    /// `api`, `worker`: whose hook applies.
    pub process: String,
    /// The state it is in now (`failed`, `backoff`).
    pub state: State,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub log: PathBuf,
    pub restarts: u32,
}

/// One instance's hook history.
#[derive(Default)]
struct Gate {
    /// Held while one of its hooks runs.
    running: Arc<tokio::sync::Mutex<()>>,
    /// When its recent hooks began, and the events dropped since the last.
    window: Mutex<(VecDeque<Instant>, u32)>,
}

#[derive(Default)]
struct Inner {
    stack: String,
    root: PathBuf,
    specs: HashMap<String, HookSpec>,
    gates: HashMap<String, Arc<Gate>>,
}

/// The hooks of a stack.
#[derive(Default)]
pub struct Hooks {
    inner: Mutex<Inner>,
}

impl Hooks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the hooks `stack` defines (at start and on every reload).
    pub fn configure(&self, stack: &Stack) {
        let mut i = self.lock();
        i.stack = stack.name.clone();
        i.root = stack.root.clone();
        i.specs = stack
            .processes
            .iter()
            .filter_map(|p| p.on_failure.clone().map(|h| (p.name.clone(), h)))
            .collect();
    }

    /// Runs the hook that applies to `occ`, if any, in a task of its own;
    /// `base` is stackctl's own environment.
    pub fn fire(&self, occ: Occurrence, base: Arc<super::env::Vars>) {
        let (spec, gate, stack, root) = {
            let mut i = self.lock();
            let Some(spec) = i.specs.get(&occ.process).cloned() else {
                return;
            };
            if occ.event == HookEvent::Exit && !spec.exits {
                return;
            }
            let gate = i.gates.entry(occ.instance.clone()).or_default().clone();
            (spec, gate, i.stack.clone(), i.root.clone())
        };
        let guard = match occ.event {
            HookEvent::Exit => {
                let why = match gate.running.clone().try_lock_owned() {
                    Ok(g) if gate.admit(Instant::now()) => Ok(g),
                    Ok(_) => Err(format!(
                        "{RATE_LIMIT} already ran within {}",
                        humantime::format_duration(RATE_WINDOW)
                    )),
                    Err(_) => Err("its previous hook is still running".to_string()),
                };
                match why {
                    Ok(g) => Some(g),
                    Err(why) => {
                        gate.suppress();
                        tracing::warn!(process = %occ.instance, "on_failure hook not run for this exit ({}): {why}", occ.reason);
                        return;
                    }
                }
            }
            HookEvent::Failed if gate.admit(Instant::now()) => None,
            HookEvent::Failed => {
                gate.suppress();
                tracing::warn!(
                    process = %occ.instance,
                    "on_failure hook not run for this failure ({}): {RATE_LIMIT} already ran within {}",
                    occ.reason,
                    humantime::format_duration(RATE_WINDOW)
                );
                return;
            }
        };
        tokio::spawn(async move {
            let _held = match guard {
                Some(g) => g,
                None => gate.running.clone().lock_owned().await,
            };
            let suppressed = gate.take_suppressed();
            run(&spec, &occ, &stack, &root, &base, suppressed).await;
        });
    }
}

impl Gate {
    /// Counts a hook beginning at `now` when the window has room.
    fn admit(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        while w
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            w.0.pop_front();
        }
        if w.0.len() >= RATE_LIMIT {
            return false;
        }
        w.0.push_back(now);
        true
    }

    fn suppress(&self) {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).1 += 1;
    }

    fn take_suppressed(&self) -> u32 {
        std::mem::take(&mut self.window.lock().unwrap_or_else(|p| p.into_inner()).1)
    }
}

/// The variables of stackctl's environment a hook gets (and every `LC_*`).
pub const PASSED: [&str; 8] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR",
];

/// Whether a hook gets `key` of stackctl's environment.
fn passed(key: &str) -> bool {
    PASSED.contains(&key) || key.starts_with("LC_")
}

/// The hook's environment: the hook's variables (every one set; empty
/// when unknown) over the [`PASSED`] part of `base`, or over all of it
/// (`whole`: what its command's templates expand from).
pub fn hook_env(
    occ: &Occurrence,
    stack: &str,
    base: &super::env::Vars,
    suppressed: u32,
    whole: bool,
) -> Vec<(String, String)> {
    let mut m: super::env::Vars = base
        .iter()
        .filter(|(k, _)| whole || passed(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let values = [
        occ.event.as_str().to_string(),
        stack.to_string(),
        occ.instance.clone(),
        occ.state.as_str().to_string(),
        occ.reason.clone(),
        occ.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        occ.log.display().to_string(),
        occ.restarts.to_string(),
        suppressed.to_string(),
    ];
    for (k, v) in HOOK_VARS.iter().zip(values) {
        m.insert((*k).to_string(), v);
    }
    m.into_iter().collect()
}

/// Runs the hook to its end and says how it went in `stackctl.log`.
async fn run(
    spec: &HookSpec,
    occ: &Occurrence,
    stack: &str,
    root: &std::path::Path,
    base: &super::env::Vars,
    suppressed: u32,
) {
    let env = hook_env(occ, stack, base, suppressed, false);
    let cmd = expanded(&spec.command, &hook_env(occ, stack, base, suppressed, true));
    let who = occ.instance.clone();
    let event = occ.event.as_str();
    let opts = OneshotOptions::deadline(spec.timeout);
    let t = Instant::now();
    tracing::info!(process = %who, "on_failure hook ({event}): running `{}`", spec.command);
    let on_line = |line: &str| tracing::info!(process = %who, "on_failure hook: {line}");
    match crate::spawn::run_oneshot_with(&cmd, root, &env, &opts, on_line).await {
        Ok(o) => {
            let took = t.elapsed().as_secs_f64();
            match o.outcome {
                OneshotOutcome::Exited(0) => {
                    tracing::info!(process = %who, "on_failure hook ({event}) exited 0 in {took:.1}s");
                }
                OneshotOutcome::TimedOut => tracing::error!(
                    process = %who,
                    "on_failure hook ({event}) failed: still running after its timeout of {}; its process group was killed",
                    humantime::format_duration(spec.timeout)
                ),
                other => {
                    tracing::error!(process = %who, "on_failure hook ({event}) failed: it {other} after {took:.1}s")
                }
            }
        }
        Err(e) => {
            tracing::error!(process = %who, "on_failure hook ({event}) failed: cannot run `{}`: {e}", spec.command)
        }
    }
}

/// `cmd` with its `${…}` expanded from `env` (validation proved they do).
fn expanded(cmd: &CommandSpec, env: &[(String, String)]) -> CommandSpec {
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let one = |s: &String| crate::config::env::expand(s, &lookup).unwrap_or_else(|_| s.clone());
    match cmd {
        CommandSpec::Shell(s) => CommandSpec::Shell(one(s)),
        CommandSpec::Argv(v) => CommandSpec::Argv(v.iter().map(one).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_admits_a_few_then_drops_and_counts() {
        let g = Gate::default();
        let t0 = Instant::now();
        for _ in 0..RATE_LIMIT {
            assert!(g.admit(t0));
        }
        assert!(!g.admit(t0 + Duration::from_secs(1)));
        g.suppress();
        g.suppress();
        assert_eq!(g.take_suppressed(), 2);
        assert_eq!(g.take_suppressed(), 0);
        assert!(g.admit(t0 + RATE_WINDOW + Duration::from_secs(1)));
    }

    #[test]
    fn a_hook_gets_its_variables_and_never_the_processs_own() {
        let occ = Occurrence {
            event: HookEvent::Failed,
            instance: "worker.2".into(),
            process: "worker".into(),
            state: State::Failed,
            reason: "crash loop: 6 restarts within 1m".into(),
            exit_code: None,
            log: PathBuf::from("/s/logs/worker.2.log"),
            restarts: 5,
        };
        let base: super::super::env::Vars =
            [("PATH", "/bin"), ("LC_ALL", "C"), ("JWT_SECRET", "s3cr3t")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let env: HashMap<String, String> = hook_env(&occ, "demo", &base, 3, false)
            .into_iter()
            .collect();
        assert_eq!(env["STACKCTL_EVENT"], "failed");
        assert_eq!(env["STACKCTL_PROCESS"], "worker.2");
        assert_eq!(env["STACKCTL_STATE"], "failed");
        assert_eq!(env["STACKCTL_EXIT_CODE"], "");
        assert_eq!(env["STACKCTL_LOG"], "/s/logs/worker.2.log");
        assert_eq!(env["STACKCTL_SUPPRESSED"], "3");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["LC_ALL"], "C");
        assert!(!env.contains_key("JWT_SECRET"));
        assert!(!env.contains_key("STACKCTL_STACK_ID"));
        assert_eq!(env.len(), HOOK_VARS.len() + 2);
        // Its command may still name one explicitly.
        let whole: Vec<(String, String)> = hook_env(&occ, "demo", &base, 3, true);
        let cmd = expanded(
            &CommandSpec::Shell("notify ${JWT_SECRET:-none} ${STACKCTL_PROCESS}".into()),
            &whole,
        );
        assert_eq!(cmd, CommandSpec::Shell("notify s3cr3t worker.2".into()));
    }
}
