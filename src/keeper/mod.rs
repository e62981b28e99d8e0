//! The deploy keeper: lock → prereqs → fetch → deploy → restart → verify → release.
//!
//! Owns: the tick loop of `stackctl keep`, its wake-ups (the interval, the
//! trigger file, a change of the lock while deferring, SIGTERM/SIGINT/SIGHUP),
//! its one summary line per tick in `state_dir/keeper.log`, retries with
//! backoff and `escalate`. Must not touch: spawning stack processes itself.
//! It always goes through the supervisor, by running this very binary
//! (`stackctl -f <stack file> restart` / `status --json`), exactly as an
//! operator would.
//!
//! Theory of operation. The keeper is its own process with a single-threaded
//! tokio runtime; one task runs the loop and the ticks, so ticks never
//! overlap. It wakes on the first of:
//! - the interval (`[keeper] interval`) since the last tick ended;
//! - the trigger file `state_dir/keeper.trigger` appearing or being touched
//!   (inotify through `notify`, so a 1 h interval still reacts at once);
//! - the lock file changing while the last tick deferred to an export, so a
//!   released export is deployed at once rather than an interval later;
//! - a stop signal.
//!
//! A tick decides to deploy when the remote head differs from the worktree's
//! HEAD, a `watch_health` process is not running and ready, or a trigger is
//! pending. From the worktree update on (update, re-read the stack file as it
//! is at the new head, `deploy` steps, restart, verify) a tick is not
//! interrupted: a stop signal is honoured only between steps before that
//! point, or after the deploy has finished and the lock is released. Every
//! child the keeper runs is in its own process group, so the Ctrl-C of the
//! keeper's terminal does not reach a deploy step.
//!
//! The keeper log: each tick writes exactly one line `<time> tick: …`; the
//! output of the commands a tick runs is written between them, each line
//! indented and labelled (`  deploy 1/3| …`), so `grep ' tick: '` gives the
//! history.

mod git;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::git::{short, Git};
use crate::config::{CommandSpec, KeeperSpec, Stack};
use crate::error::{exit, Error};
use crate::lock::{Owner, StackLock};
use crate::state::StateDir;

/// The shortest wait between two ticks, whatever `interval` says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// One prereq check is cut off after this long.
const PREREQ_TIMEOUT: Duration = Duration::from_secs(10);
/// `escalate` is killed (with its group) after this long.
const ESCALATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Backoff between retries and prereq checks: 1 s doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After a command exits, its output is still read for this long (a daemon
/// it left behind may hold the pipe open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Runs the keeper for `stack` (loaded from `stack_file`) until a stop signal.
///
/// # Errors
/// No `[keeper]` section (2); another keeper already runs for this stack, or
/// the state folder, log or runtime cannot be set up (1).
pub fn run(stack_file: &Path, stack: Stack, quiet: bool) -> Result<u8, Error> {
    let spec = stack.keeper.clone().ok_or_else(|| Error::Usage {
        message: format!("{} has no [keeper] section", stack_file.display()),
        hint: Some(
            "add one, at least `[keeper]` with `branch = \"main\"`; see docs/lock-and-keeper.md"
                .into(),
        ),
    })?;
    let state = StateDir::prepared(&stack.state_dir)?;
    let instance = take_instance_lock(&stack)?;
    let log = KeeperLog::open(&state.keeper_log(), quiet)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("cannot start the keeper's runtime: {e}")))?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the stackctl binary: {e}")))?;
    let result = runtime.block_on(async move {
        let stop = stop_signals()
            .map_err(|e| Error::failed(format!("cannot install signal handlers: {e}")))?;
        let keeper = Keeper {
            stack_file: stack_file.to_path_buf(),
            lock: StackLock::of(&stack),
            task_id: format!("keeper-{}", stack.name),
            stack,
            spec,
            log,
            exe,
            stop,
            failed_at: None,
            escalated: None,
            prereq_backoff: None,
        };
        keeper.run().await
    });
    drop(instance);
    result
}

/// Whether a keeper runs for `stack` (it holds `state_dir/keeper.lock`).
pub fn is_running(stack: &Stack) -> bool {
    crate::state::is_held(&instance_lock_path(stack))
}

/// Touches the trigger file a running keeper watches.
///
/// # Errors
/// When the state folder or the file cannot be written.
pub fn trigger(stack: &Stack) -> Result<PathBuf, Error> {
    let state = StateDir::prepared(&stack.state_dir)?;
    let path = state.keeper_trigger();
    std::fs::write(&path, format!("{}\n", timestamp(SystemTime::now())))
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

fn instance_lock_path(stack: &Stack) -> PathBuf {
    StateDir::new(&stack.state_dir).keeper_lock()
}

/// One keeper per stack: an flock held for the keeper's lifetime.
fn take_instance_lock(stack: &Stack) -> Result<crate::state::Held, Error> {
    let path = instance_lock_path(stack);
    let held = crate::state::try_hold(&path)
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", path.display())))?;
    let Some(mut held) = held else {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::Failed {
            message: format!(
                "a keeper already runs for stack {} (pid {})",
                stack.name,
                pid.trim()
            ),
            hint: Some("`stackctl keep --trigger` asks it for a tick now".into()),
            detail: None,
        });
    };
    let f = held.file();
    let _ = f.set_len(0);
    let _ = writeln!(f, "{}", std::process::id());
    Ok(held)
}

/// SIGTERM, SIGINT or SIGHUP flip the watch to `true`.
fn stop_signals() -> io::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {}
            }
            if tx.send(true).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// What woke the loop, from the file watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsEvent {
    Trigger,
    LockChanged,
}

/// How a tick ended, for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Nothing to do, deployed, or failed and escalated: next tick at the interval.
    Done,
    /// An export holds the stack (or another deploy): wait for it to change.
    Deferred,
    /// A prereq is down: check again after a backoff.
    PrereqDown,
    /// A stop signal arrived.
    Stopped,
}

/// How one attempt went when it did not fail.
enum Outcome {
    Idle(String),
    Deployed(String),
    Deferred(String),
    PrereqDown(String),
    Stopped(String),
}

/// A failed attempt: which step, what the tick saw, what went wrong.
struct Failure {
    step: &'static str,
    seen: String,
    error: String,
}

impl Failure {
    fn new(step: &'static str, seen: &str, error: impl Into<String>) -> Failure {
        Failure {
            step,
            seen: seen.to_string(),
            error: error.into(),
        }
    }
}

/// A deploy decided by an attempt, kept across its retries.
#[derive(Debug, Clone)]
struct Plan {
    /// The worktree's commit when the deploy was decided (a retry may find
    /// the worktree already updated; the log still shows where it came from).
    from: String,
    /// The commit to deploy.
    to: String,
    /// Why besides a new commit ("manual trigger", "tunnel not ready (failed)").
    why: Vec<String>,
}

struct Keeper {
    stack_file: PathBuf,
    stack: Stack,
    spec: KeeperSpec,
    lock: StackLock,
    task_id: String,
    log: KeeperLog,
    exe: PathBuf,
    stop: watch::Receiver<bool>,
    /// The commit whose deploy failed and was escalated: not retried until
    /// the remote moves on, a trigger arrives or a watched service fails.
    failed_at: Option<String>,
    /// The last failure that was escalated without a commit to pin it to
    /// (fetch, lock, status…) and when: the same failure again is logged,
    /// not escalated again every interval, until a tick succeeds.
    escalated: Option<(String, String)>,
    /// The wait before the next prereq check while one is down.
    prereq_backoff: Option<Duration>,
}

impl Keeper {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The wait between ticks. `interval = "0s"` validates, but would run
    /// fetch after fetch back to back; a floor keeps it a loop with rests.
    fn interval(&self) -> Duration {
        self.spec.interval.max(MIN_INTERVAL)
    }

    fn branch_name(&self) -> String {
        format!("{}/{}", self.spec.remote, self.spec.branch)
    }

    async fn run(mut self) -> Result<u8, Error> {
        let state = StateDir::new(&self.stack.state_dir);
        let trigger_path = state.keeper_trigger();
        let (tx, mut events) = mpsc::unbounded_channel();
        let _watcher = self.watch(tx, &trigger_path)?;
        self.log.note(&format!(
            "keeper started (pid {}): keeping {} in {} for stack {}, every {}; trigger: {}",
            std::process::id(),
            self.branch_name(),
            self.spec.repo.display(),
            self.stack.name,
            humantime::format_duration(self.spec.interval),
            trigger_path.display()
        ));
        let mut trigger = trigger_path.exists();
        let mut deferred = false;
        let mut next = Instant::now();
        let mut stop = self.stop.clone();
        let mut watching = true;
        loop {
            if self.stopping() {
                break;
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                ev = events.recv(), if watching => match ev {
                    Some(FsEvent::Trigger) if trigger_path.exists() => trigger = true,
                    Some(FsEvent::LockChanged) if deferred => {}
                    Some(_) => continue,
                    None => {
                        // The watcher is gone (it lives as long as this loop,
                        // so this is not expected): fall back to the interval.
                        watching = false;
                        continue;
                    }
                },
                () = tokio::time::sleep_until(next) => {}
            }
            if self.stopping() {
                break;
            }
            if trigger {
                // Consumed now; a touch during the tick is a new trigger.
                let _ = std::fs::remove_file(&trigger_path);
            }
            match self.tick(trigger).await {
                End::Done => {
                    trigger = false;
                    deferred = false;
                    self.prereq_backoff = None;
                    next = Instant::now() + self.interval();
                }
                End::Deferred => {
                    deferred = true;
                    self.prereq_backoff = None;
                    next = Instant::now() + self.interval();
                }
                End::PrereqDown => {
                    deferred = false;
                    let d = self.prereq_backoff.unwrap_or(Duration::from_secs(1));
                    next = Instant::now() + d;
                }
                End::Stopped => break,
            }
        }
        // Every attempt releases the lock; this catches a release that failed.
        let lock_state = match self.lock.read() {
            Ok(r) if r.held_by(&self.task_id) => match self.lock.release(&self.task_id) {
                Ok(_) => "released the lock it still held".to_string(),
                Err(e) => format!("could not release the lock: {e}"),
            },
            Ok(_) => "it does not hold the lock".to_string(),
            Err(e) => format!("could not check the lock: {e}"),
        };
        self.log
            .note(&format!("keeper stopped by a signal; {lock_state}"));
        Ok(exit::SUCCESS)
    }

    /// Watches the state folder (trigger) and the lock file's folder.
    fn watch(
        &self,
        tx: mpsc::UnboundedSender<FsEvent>,
        trigger_path: &Path,
    ) -> Result<notify::RecommendedWatcher, Error> {
        use notify::{RecursiveMode, Watcher};
        let trigger_name = trigger_path.file_name().map(|n| n.to_os_string());
        let lock_name = self.lock.path().file_name().map(|n| n.to_os_string());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            for p in &ev.paths {
                let name = p.file_name().map(|n| n.to_os_string());
                if name.is_some() && name == trigger_name {
                    let _ = tx.send(FsEvent::Trigger);
                } else if name.is_some() && name == lock_name {
                    let _ = tx.send(FsEvent::LockChanged);
                }
            }
        })
        .map_err(|e| Error::failed(format!("cannot watch for keeper triggers: {e}")))?;
        let mut dirs = vec![self.stack.state_dir.clone()];
        if let Some(d) = self.lock.path().parent() {
            if d != self.stack.state_dir {
                if !d.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    let _ = std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(d);
                }
                if d.is_dir() {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            watcher
                .watch(&d, RecursiveMode::NonRecursive)
                .map_err(|e| Error::failed(format!("cannot watch {}: {e}", d.display())))?;
        }
        Ok(watcher)
    }

    /// One tick: an attempt and its retries. Writes one line per attempt.
    async fn tick(&mut self, trigger: bool) -> End {
        let total = self.spec.retries.saturating_add(1);
        let mut plan: Option<Plan> = None;
        let mut attempt: u32 = 1;
        let mut delay: Option<Duration> = None;
        loop {
            match self.attempt(trigger, &mut plan).await {
                Ok(Outcome::Idle(s)) => {
                    self.escalated = None;
                    self.log.tick(&s);
                    return End::Done;
                }
                Ok(Outcome::Deployed(s)) => {
                    self.failed_at = None;
                    self.escalated = None;
                    self.log.tick(&s);
                    return End::Done;
                }
                Ok(Outcome::Deferred(s)) => {
                    self.log.tick(&s);
                    return End::Deferred;
                }
                Ok(Outcome::PrereqDown(s)) => {
                    self.log.tick(&s);
                    return End::PrereqDown;
                }
                Ok(Outcome::Stopped(s)) => {
                    self.log.tick(&s);
                    return End::Stopped;
                }
                Err(f) => {
                    let seen = if f.seen.is_empty() {
                        String::new()
                    } else {
                        format!("{}; ", f.seen)
                    };
                    if attempt >= total {
                        let key = format!("{}: {}", f.step, f.error);
                        let escalated = match &self.escalated {
                            Some((k, at)) if plan.is_none() && *k == key => {
                                format!("the same failure was escalated at {at}; not escalating again until a tick succeeds")
                            }
                            _ => {
                                let e = self.escalate(&f, attempt, plan.as_ref()).await;
                                if plan.is_none() {
                                    self.escalated = Some((key, timestamp(SystemTime::now())));
                                }
                                e
                            }
                        };
                        self.failed_at = plan.as_ref().map(|p| p.to.clone());
                        self.log.tick(&format!(
                            "{seen}{} failed: {}; attempt {attempt}/{total}, giving up; {escalated}",
                            f.step, f.error
                        ));
                        return End::Done;
                    }
                    let d = backoff_after(delay, MAX_BACKOFF);
                    delay = Some(d);
                    self.log.tick(&format!(
                        "{seen}{} failed: {}; attempt {attempt}/{total}, retrying in {}",
                        f.step,
                        f.error,
                        humantime::format_duration(d)
                    ));
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        _ = stop.wait_for(|s| *s) => {
                            self.log.tick("stopping: a signal arrived while waiting to retry");
                            return End::Stopped;
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Takes the lock, does the work, gives the lock back.
    async fn attempt(
        &mut self,
        trigger: bool,
        plan: &mut Option<Plan>,
    ) -> Result<Outcome, Failure> {
        let record = self
            .lock
            .read()
            .map_err(|e| Failure::new("lock", "", e.to_string()))?;
        if record.owner == Owner::Export {
            return Ok(Outcome::Deferred(format!(
                "heartbeat: export holds the stack, task {}{}; not deploying until it is released",
                record.task_id.as_deref().unwrap_or("?"),
                record
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        match self
            .lock
            .acquire(Owner::Deploy, &self.task_id, Some("deploy keeper tick"))
        {
            Ok(_) => {}
            Err(Error::LockHeld { message, .. }) => {
                return Ok(Outcome::Deferred(format!("heartbeat: {message}; waiting")))
            }
            Err(e) => return Err(Failure::new("lock", "", e.to_string())),
        }
        let result = self.locked(trigger, plan).await;
        let released = self.lock.release(&self.task_id);
        // A deploy may have moved the lock file ([stack] lock_file).
        self.lock = StackLock::of(&self.stack);
        match (result, released) {
            (r, Ok(_)) => r,
            // Not a reason to deploy again: say it; the next attempt (an
            // idempotent acquire) or the keeper's exit frees it.
            (Ok(Outcome::Deployed(s)), Err(e)) => Ok(Outcome::Deployed(format!(
                "{s}; but the lock could not be released: {e}"
            ))),
            (Ok(_), Err(e)) => Err(Failure::new("lock release", "", e.to_string())),
            (Err(f), Err(_)) => Err(f),
        }
    }

    /// The part of an attempt that runs while holding the lock as `deploy`.
    async fn locked(&mut self, trigger: bool, plan: &mut Option<Plan>) -> Result<Outcome, Failure> {
        if self.stopping() {
            return Ok(Outcome::Stopped("stopping before the tick began".into()));
        }
        let ctx = crate::probe::ProbeCtx {
            cwd: self.stack.root.clone(),
            env: std::env::vars().collect(),
        };
        for p in &self.spec.prereqs {
            if let Err(f) = crate::probe::check(p, &ctx, PREREQ_TIMEOUT).await {
                let d = backoff_after(self.prereq_backoff, self.spec.interval);
                self.prereq_backoff = Some(d);
                return Ok(Outcome::PrereqDown(format!(
                    "prereq {p} is down ({f}); nothing restarted; checking again in {}",
                    humantime::format_duration(d)
                )));
            }
            if self.stopping() {
                return Ok(Outcome::Stopped("stopping during the prereq checks".into()));
            }
        }
        let name = self.branch_name();
        let git = Git::new(&self.spec.repo);
        git.fetch(&self.spec.remote, &self.spec.branch)
            .await
            .map_err(|e| Failure::new("fetch", "", e))?;
        let remote = git
            .remote_head(&self.spec.remote, &self.spec.branch)
            .await
            .map_err(|e| Failure::new("fetch", "", e))?;
        let head = git.head().await.map_err(|e| Failure::new("fetch", "", e))?;
        let from = plan.as_ref().map_or(head.as_str(), |p| p.from.as_str());
        let seen = if from == remote {
            format!("{name} at {}", short(&remote))
        } else {
            format!("{name} {}→{}", short(from), short(&remote))
        };
        if self.stopping() {
            return Ok(Outcome::Stopped(format!(
                "{seen}; stopping before deploying"
            )));
        }
        let unhealthy = if self.spec.watch_health.is_empty() {
            Vec::new()
        } else {
            self.unhealthy()
                .await
                .map_err(|e| Failure::new("status", &seen, e))?
        };
        let why = match plan {
            Some(p) => {
                p.to = remote.clone();
                p.why.clone()
            }
            None => {
                let mut why = Vec::new();
                if trigger {
                    why.push("manual trigger".to_string());
                }
                why.extend(unhealthy.iter().cloned());
                // First: a commit whose deploy failed and was escalated. The
                // worktree may already be at it (the failure came after the
                // update), so "at the remote head" does not mean "deployed".
                if why.is_empty() && self.failed_at.as_deref() == Some(remote.as_str()) {
                    return Ok(Outcome::Idle(format!(
                        "{seen}; its deploy failed and was escalated; waiting for a new \
                         commit or `stackctl keep --trigger`"
                    )));
                }
                if why.is_empty() && head == remote {
                    let healthy = if self.spec.watch_health.is_empty() {
                        ""
                    } else {
                        "; watched services ready"
                    };
                    return Ok(Outcome::Idle(format!("{seen}{healthy}; nothing to do")));
                }
                *plan = Some(Plan {
                    from: head.clone(),
                    to: remote.clone(),
                    why: why.clone(),
                });
                why
            }
        };
        if self.stopping() {
            return Ok(Outcome::Stopped(format!(
                "{seen}; stopping before deploying"
            )));
        }

        // From here on the deploy is not interrupted by a stop signal.
        let started = Instant::now();
        if head != remote {
            git.fast_forward(&remote, &self.spec.remote, &self.spec.branch)
                .await
                .map_err(|e| Failure::new("update", &seen, e))?;
        }
        let stack = match crate::config::load(&self.stack_file) {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                for line in text.lines() {
                    self.log.output("stack file", line);
                }
                let first = text.lines().next().unwrap_or("invalid").to_string();
                return Err(Failure::new(
                    "stack file",
                    &seen,
                    format!(
                        "{} at {} is not valid: {first}",
                        self.stack_file.display(),
                        short(&remote)
                    ),
                ));
            }
        };
        let spec = stack.keeper.clone().unwrap_or_else(|| self.spec.clone());
        let mut env = vec![
            ("STACKCTL_STACK".to_string(), stack.name.clone()),
            ("STACKCTL_KEEPER_COMMIT".to_string(), remote.clone()),
        ];
        env.extend(self.step_env());
        let n = spec.deploy.len();
        for (i, step) in spec.deploy.iter().enumerate() {
            let label = format!("deploy {}/{n}", i + 1);
            let argv = expand_command(step).map_err(|e| {
                Failure::new("deploy", &seen, format!("deploy step {}/{n}: {e}", i + 1))
            })?;
            let ended = self
                .run_logged(&label, &argv, &spec.repo, &env, None)
                .await
                .map_err(|e| {
                    Failure::new(
                        "deploy",
                        &seen,
                        format!("deploy step {}/{n} `{step}`: {e}", i + 1),
                    )
                })?;
            if ended != "exited 0" {
                return Err(Failure::new(
                    "deploy",
                    &seen,
                    format!("deploy step {}/{n} `{step}` {ended}", i + 1),
                ));
            }
        }
        // Through the supervisor, never by spawning stack processes here. A
        // running supervisor holds the stack file it read when it started, and
        // `restart` does not re-read it; so `reload` first (it applies the new
        // file: a no-op when nothing changed), then `restart` (tasks re-run).
        // With no supervisor, `start` launches one on the new file.
        let (_, before) = self
            .status()
            .await
            .map_err(|e| Failure::new("restart", &seen, e))?;
        let supervised = before["supervisor"]["running"].as_bool().unwrap_or(false);
        let steps: &[&str] = if supervised {
            &["reload", "restart"]
        } else {
            &["start"]
        };
        for cmd in steps {
            let argv = self.stackctl(&stack, &[cmd]);
            let ended = self
                .run_logged(cmd, &argv, &stack.root, &env, None)
                .await
                .map_err(|e| Failure::new("restart", &seen, e))?;
            if ended != "exited 0" {
                return Err(Failure::new(
                    "restart",
                    &seen,
                    format!("`stackctl {cmd}` {ended} (see its output above in the keeper log)"),
                ));
            }
        }
        self.stack = stack;
        self.spec = spec;
        let (code, doc) = self
            .status()
            .await
            .map_err(|e| Failure::new("verify", &seen, e))?;
        if code != Some(0) {
            let not_ready: Vec<String> = not_ready(&doc, None)
                .into_iter()
                .map(|(name, state)| format!("{name} ({state})"))
                .collect();
            return Err(Failure::new(
                "verify",
                &seen,
                format!(
                    "the stack is not ready after the restart: {}",
                    if not_ready.is_empty() {
                        format!("`stackctl status` exited {code:?}")
                    } else {
                        not_ready.join(", ")
                    }
                ),
            ));
        }
        let mut line = seen;
        for w in &why {
            line.push_str("; ");
            line.push_str(w);
        }
        line.push_str(&format!(
            "; deployed in {:.1}s; stack ready",
            started.elapsed().as_secs_f64()
        ));
        Ok(Outcome::Deployed(line))
    }

    /// What deploy steps get besides the keeper's own environment.
    fn step_env(&self) -> Vec<(String, String)> {
        vec![(
            "STACKCTL_KEEPER_LOG".to_string(),
            self.log.path.display().to_string(),
        )]
    }

    /// `stackctl -f <stack file> ARGS…` through this very binary.
    fn stackctl(&self, stack: &Stack, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.exe.display().to_string(),
            "-f".to_string(),
            stack.file.display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `stackctl status --json`: its exit code and document.
    async fn status(&self) -> Result<(Option<i32>, serde_json::Value), String> {
        let argv = self.stackctl(&self.stack, &["status", "--json"]);
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.stack.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .map_err(|_| "`stackctl status --json` did not answer within 60s".to_string())?
            .map_err(|e| format!("cannot run `stackctl status --json`: {e}"))?;
        let doc = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "`stackctl status --json` exited {:?} without a status document ({e}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        Ok((out.status.code(), doc))
    }

    /// The `watch_health` processes that are not running and ready, as
    /// "tunnel not ready (failed)".
    async fn unhealthy(&self) -> Result<Vec<String>, String> {
        let (_, doc) = self.status().await?;
        Ok(not_ready(&doc, Some(&self.spec.watch_health))
            .into_iter()
            .map(|(name, state)| format!("{name} not ready ({state})"))
            .collect())
    }

    /// Runs `escalate` with the failure in its environment; says how it went.
    async fn escalate(&self, f: &Failure, attempts: u32, plan: Option<&Plan>) -> String {
        let Some(cmd) = self.spec.escalate.clone() else {
            return "no `escalate` configured".into();
        };
        let argv = match expand_command(&cmd) {
            Ok(a) => a,
            Err(e) => return format!("could not escalate: {e}"),
        };
        let env = vec![
            ("STACKCTL_STACK".to_string(), self.stack.name.clone()),
            ("STACKCTL_KEEPER_ERROR".to_string(), f.error.clone()),
            ("STACKCTL_KEEPER_STEP".to_string(), f.step.to_string()),
            ("STACKCTL_KEEPER_SEEN".to_string(), f.seen.clone()),
            ("STACKCTL_KEEPER_ATTEMPTS".to_string(), attempts.to_string()),
            (
                "STACKCTL_KEEPER_COMMIT".to_string(),
                plan.map(|p| p.to.clone()).unwrap_or_default(),
            ),
            ("STACKCTL_KEEPER_BRANCH".to_string(), self.branch_name()),
            (
                "STACKCTL_KEEPER_LOG".to_string(),
                self.log.path.display().to_string(),
            ),
        ];
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
            Ok(ended) => format!("escalated (`{cmd}` {ended})"),
            Err(e) => format!("could not escalate: {e}"),
        }
    }

    /// Runs a command in its own process group with `env` added, its output
    /// into the keeper log, labelled. Returns "exited N" / "killed by SIG…".
    async fn run_logged(
        &self,
        label: &str,
        argv: &[String],
        cwd: &Path,
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<String, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("empty command".into());
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run `{program}` in {}: {e}", cwd.display()))?;
        let pid = child.id();
        let (tx, mut lines) = mpsc::unbounded_channel::<String>();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward_lines(out, tx.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward_lines(err, tx.clone())));
        }
        drop(tx);
        let deadline = timeout.map(|t| Instant::now() + t);
        let status = loop {
            tokio::select! {
                Some(l) = lines.recv() => self.log.output(label, &l),
                st = child.wait() => break st.map_err(|e| format!("cannot wait for `{program}`: {e}"))?,
                () = sleep_until_opt(deadline) => {
                    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                        let _ = crate::spawn::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    let _ = child.wait().await;
                    for r in &readers {
                        r.abort();
                    }
                    return Err(format!(
                        "`{program}` did not finish within {}s and was killed",
                        timeout.map_or(0, |t| t.as_secs())
                    ));
                }
            }
        };
        let grace = tokio::time::sleep(OUTPUT_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                l = lines.recv() => match l {
                    Some(l) => self.log.output(label, &l),
                    None => break,
                },
                () = &mut grace => break,
            }
        }
        for r in &readers {
            r.abort();
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => format!("was killed by {}", sig.as_str()),
                Err(_) => format!("was killed by signal {s}"),
            },
            (None, None) => "ended".into(),
        })
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn forward_lines(r: impl AsyncRead + Unpin, tx: mpsc::UnboundedSender<String>) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if tx.send(line.trim_end().to_string()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Processes (of `only`, or all) that are not running and ready, as
/// (name, state); a watched name missing from the document counts too.
fn not_ready(doc: &serde_json::Value, only: Option<&[String]>) -> Vec<(String, String)> {
    let procs = doc["processes"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for p in &procs {
        let name = p["name"].as_str().unwrap_or("?");
        let base = p["pool"].as_str().unwrap_or(name);
        if let Some(only) = only {
            if !only.iter().any(|w| w == name || w == base) {
                continue;
            }
            seen.push(base.to_string());
        }
        let state = p["state"].as_str().unwrap_or("?");
        let ready = p["ready"].as_bool().unwrap_or(false);
        let kind = p["kind"].as_str().unwrap_or("service");
        let fine = if kind == "task" {
            state == "completed"
        } else {
            state == "running" && ready
        };
        if !fine {
            out.push((name.to_string(), state.to_string()));
        }
    }
    if let Some(only) = only {
        for w in only {
            if !seen.iter().any(|s| s == w) {
                out.push((w.clone(), "not listed".to_string()));
            }
        }
    }
    out
}

/// A deploy or escalate command as argv, its `${VAR}`s expanded from the
/// keeper's environment (a shell string keeps what it cannot expand: the
/// shell expands it or reports it).
fn expand_command(cmd: &CommandSpec) -> Result<Vec<String>, String> {
    let lookup = |k: &str| std::env::var(k).ok();
    let one = |t: &str| crate::config::expand(t, &lookup).map_err(|e| e.to_string());
    Ok(match cmd {
        CommandSpec::Shell(s) => {
            let s = one(s).unwrap_or_else(|_| s.clone());
            vec!["/bin/sh".into(), "-c".into(), s]
        }
        CommandSpec::Argv(v) => v.iter().map(|a| one(a)).collect::<Result<_, _>>()?,
    })
}

/// 1 s, then doubling, at most `cap` (and at most [`MAX_BACKOFF`]).
fn backoff_after(previous: Option<Duration>, cap: Duration) -> Duration {
    let cap = cap.min(MAX_BACKOFF).max(Duration::from_millis(100));
    match previous {
        None => Duration::from_secs(1).min(cap),
        Some(d) => (d * 2).min(cap),
    }
}

/// RFC 3339 in UTC with `Z`, to the second: the keeper log's time stamp.
fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `state_dir/keeper.log`, mirrored on stdout.
struct KeeperLog {
    path: PathBuf,
    file: File,
    quiet: bool,
}

impl KeeperLog {
    fn open(path: &Path, quiet: bool) -> Result<KeeperLog, Error> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::failed(format!("cannot open {}: {e}", path.display())))?;
        Ok(KeeperLog {
            path: path.to_path_buf(),
            file,
            quiet,
        })
    }

    fn write(&self, line: &str, always: bool) {
        // One write per line, so lines from concurrent writers never mix.
        let _ = (&self.file).write_all(format!("{line}\n").as_bytes());
        if always || !self.quiet {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// The one summary line of a tick.
    fn tick(&self, what: &str) {
        self.write(
            &format!("{} tick: {what}", timestamp(SystemTime::now())),
            false,
        );
    }

    /// The keeper's own start and stop.
    fn note(&self, what: &str) {
        self.write(
            &format!("{} keeper: {what}", timestamp(SystemTime::now())),
            false,
        );
    }

    /// A line of a command's output.
    fn output(&self, label: &str, line: &str) {
        self.write(&format!("  {label}| {line}"), false);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let cap = Duration::from_secs(5);
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let n = backoff_after(d, cap);
            seen.push(n.as_secs());
            d = Some(n);
        }
        assert_eq!(seen, [1, 2, 4, 5, 5]);
        assert_eq!(
            backoff_after(None, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn not_ready_lists_watched_and_missing() {
        let doc = serde_json::json!({"processes": [
            {"name": "api", "kind": "service", "pool": null, "state": "running", "ready": true},
            {"name": "tunnel", "kind": "service", "pool": null, "state": "failed", "ready": false},
            {"name": "w.1", "kind": "service", "pool": "w", "state": "running", "ready": true},
            {"name": "migrate", "kind": "task", "pool": null, "state": "completed", "ready": true},
        ]});
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(not_ready(&doc, None), vec![pair("tunnel", "failed")]);
        let only = vec!["api".to_string(), "w".into(), "ghost".into()];
        assert_eq!(
            not_ready(&doc, Some(&only)),
            vec![pair("ghost", "not listed")]
        );
    }
}
