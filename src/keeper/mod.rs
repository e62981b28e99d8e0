//! The deploy keeper: lock → prereqs → fetch → decide → deploy (update,
//! deploy steps, reload, restart what follows the code, verify) → release.
//!
//! Owns: the loop of `stackctl keep` and its wake-ups (the interval, the
//! trigger file, a change of the lock while deferring, SIGTERM/SIGINT/
//! SIGHUP), folding a trigger that arrives during a deploy into one
//! follow-up tick, one keeper per stack (`keeper.lock`). Must not touch:
//! spawning stack processes itself. It always goes through the supervisor,
//! by running this very binary (`stackctl -f <stack file> reload`,
//! `restart NAME…`, `status --json`), exactly as an operator would.
//!
//! | file | what |
//! | --- | --- |
//! | `tick` | a tick's attempts, retries and `escalate`; the steps of an attempt |
//! | `decide` | pure: what a tick does, what the keeper remembers, what a deploy restarts |
//! | `commands` | running commands (one-shots, output into the log), `stackctl`, the environments |
//! | `git` | fetch, compare heads, fast-forward only |
//! | `health` | the status stream that wakes the loop when a watched service goes down |
//! | `log` | `keeper.log` |
//!
//! Theory of operation. The keeper is its own process with a single-threaded
//! tokio runtime; one task runs the loop and the ticks, so ticks never
//! overlap. It wakes on the first of:
//! - the interval (`[keeper] interval`) since the last tick ended;
//! - the trigger file `state_dir/keeper.trigger` appearing or being touched
//!   (inotify through `notify`, so a 1 h interval still reacts at once);
//! - the lock file changing while the last tick deferred to an export, so a
//!   released export is deployed at once rather than an interval later;
//! - a `watch_health` service going down, as the supervisor says it
//!   (`health`: a status stream, a few seconds' grace);
//! - a stop signal.
//!
//! A tick consumes the trigger file as it begins. A trigger touched while a
//! tick deploys is folded into it: the next tick runs at once, as a
//! follow-up that deploys only what is new by then (a newer commit), never
//! the same head a second time. A trigger touched during a tick that did not
//! deploy is a trigger for the next tick, at once.
//!
//! From the worktree update on (update, re-read the stack file as it is at
//! the new head, `deploy` steps, restart, verify) a tick is not interrupted:
//! a stop signal is honoured only between steps before that point (a fetch
//! or a prereq check in progress is cut short), or after the deploy has
//! finished and the lock is released. Every command the keeper runs is a
//! one-shot in its own session ([`crate::spawn::run_oneshot_with`]), so the
//! Ctrl-C of the keeper's terminal does not reach a deploy step, and a step
//! killed at its timeout takes its whole group with it.
//!
//! The keeper log: each tick attempt writes exactly one line `<time> tick:
//! …`; the output of the commands it runs is written between them, each line
//! indented and labelled (`  deploy 1/3| …`), so `grep ' tick: '` gives the
//! history.

mod commands;
mod decide;
mod git;
mod health;
mod log;
mod tick;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::decide::Memory;
use self::log::{timestamp, KeeperLog};
use self::tick::{End, TickEnd};
use crate::config::{KeeperSpec, Stack};
use crate::error::{exit, Error};
use crate::lock::StackLock;
use crate::state::StateDir;

/// The shortest wait between two ticks, whatever `interval` says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

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
    let exe = crate::spawn::stackctl_binary()
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
            memory: Memory::default(),
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
    /// A `watch_health` service has been down for a moment (`health`).
    Unhealthy,
}

/// What the loop knows between ticks.
struct Wakes {
    /// A trigger is pending (kept while deferring to an export).
    trigger: bool,
    /// A trigger came during the last tick's deploy: the next one is its follow-up.
    follow_up: bool,
    /// The last tick deferred: a change of the lock wakes the loop.
    deferred: bool,
    /// When the next tick runs at the latest.
    next: Instant,
    /// From the file watcher (`None` if it went away).
    events: Option<mpsc::UnboundedReceiver<FsEvent>>,
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
    /// What earlier ticks left for later ones.
    memory: Memory,
}

impl Keeper {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// `fut`, unless a stop signal comes first (then `None`, and `fut` is
    /// dropped: a one-shot in it is killed with its group).
    async fn unless_stopped<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        let mut stop = self.stop.clone();
        tokio::select! {
            v = fut => Some(v),
            _ = stop.wait_for(|s| *s) => None,
        }
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
        let trigger_path = StateDir::new(&self.stack.state_dir).keeper_trigger();
        let (tx, events) = mpsc::unbounded_channel();
        if !self.spec.watch_health.is_empty() {
            let socket = StateDir::new(&self.stack.state_dir).socket();
            if let Err(e) = health::spawn(socket, self.spec.watch_health.clone(), tx.clone()) {
                self.log.note(&format!(
                    "cannot watch the supervisor for watch_health ({e}): only the interval wakes the keeper for it"
                ));
            }
        }
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
        let mut wakes = Wakes {
            // A trigger touched while no keeper ran is taken by the first tick.
            trigger: false,
            follow_up: false,
            deferred: false,
            next: Instant::now(),
            events: Some(events),
        };
        while self.wait(&mut wakes, &trigger_path).await {
            // Consumed as the tick begins; a touch during the tick is seen after it.
            let began = SystemTime::now();
            wakes.trigger |= self.take_trigger(&trigger_path);
            let ended = self
                .tick(wakes.trigger, std::mem::take(&mut wakes.follow_up))
                .await;
            if ended.end == End::Stopped {
                break;
            }
            self.schedule(
                &mut wakes,
                ended,
                touched_since(&trigger_path, began),
                &trigger_path,
            );
        }
        self.log_stopped();
        Ok(exit::SUCCESS)
    }

    /// Waits for the next tick: its time, the trigger file, the lock changing
    /// while deferred. `false` on a stop signal.
    async fn wait(&self, w: &mut Wakes, trigger_path: &Path) -> bool {
        let mut stop = self.stop.clone();
        loop {
            if self.stopping() {
                return false;
            }
            let deferred = w.deferred;
            let event = async {
                match w.events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                ev = event => match ev {
                    Some(FsEvent::Trigger) if trigger_path.exists() => break,
                    Some(FsEvent::LockChanged) if deferred => break,
                    Some(FsEvent::Unhealthy) => break,
                    Some(_) => {}
                    // The watcher is gone (it lives as long as the loop, so
                    // this is not expected): fall back to the interval.
                    None => w.events = None,
                },
                () = tokio::time::sleep_until(w.next) => break,
            }
        }
        !self.stopping()
    }

    /// When the next tick runs, after one that ended `ended`; `touched`: the
    /// trigger file was touched during it.
    fn schedule(&mut self, w: &mut Wakes, ended: TickEnd, touched: bool, trigger_path: &Path) {
        match ended.end {
            End::Done | End::Stopped => {
                w.trigger = false;
                w.deferred = false;
                self.memory.prereq_backoff = None;
                w.next = Instant::now() + self.interval();
            }
            // Any trigger stays pending.
            End::Deferred => {
                w.deferred = true;
                self.memory.prereq_backoff = None;
                w.next = Instant::now() + self.interval();
            }
            End::PrereqDown => {
                w.deferred = false;
                let d = self.memory.prereq_backoff.unwrap_or(Duration::from_secs(1));
                w.next = Instant::now() + d;
            }
        }
        if touched {
            // Folded into a deploy the tick made (a follow-up tick, at once,
            // deploys only what is newer), or a trigger for the next tick,
            // at once.
            if ended.acted && ended.end == End::Done {
                let _ = std::fs::remove_file(trigger_path);
                w.follow_up = true;
            }
            w.next = Instant::now();
        }
    }

    /// The last line: every attempt releases the lock; this catches a
    /// release that failed.
    fn log_stopped(&self) {
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
    }

    /// Removes the trigger file; whether there was one.
    fn take_trigger(&self, path: &Path) -> bool {
        match std::fs::remove_file(path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                self.log.note(&format!(
                    "cannot remove the trigger file {}: {e}; it is not taken as a trigger",
                    path.display()
                ));
                false
            }
        }
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
}

/// Whether the trigger file was touched since `t` (with a second of slack:
/// file times come from a coarse clock). A file older than that is one the
/// keeper could not remove, not a new trigger.
fn touched_since(path: &Path, t: SystemTime) -> bool {
    let since = t.checked_sub(Duration::from_secs(1)).unwrap_or(t);
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|m| m >= since)
}
