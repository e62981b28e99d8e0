//! One process instance: the task that owns it.
//!
//! Theory of operation. A unit is one tokio task per instance (`api`,
//! `worker.2`). It alone decides about its process and signals it; the
//! anchor (`crate::anchor`) spawns it on the unit's request, is its parent,
//! drains its output into its log and reports its exit. The unit holds the
//! exit receiver, the pid file and the notify socket. Commands arrive as
//! messages carrying a oneshot reply ([`Cmd`]); what it is doing is
//! published on a `watch` channel ([`UnitStatus`]) that the supervisor reads
//! for `status` and for dependency ordering, and kept with the anchor
//! ([`super::record::UnitRecord`]) on every change, so that the next
//! supervisor resumes it where this one left it ([`adopt`]). Nothing
//! polls: every wait is a `select!` over the child's exit, the next
//! command, the readiness gate, the health timer or the notify socket. The
//! one exception is the short wait for a process *group* to empty during a
//! stop, which has no event (`spawn::terminate`).
//!
//! Life of an attempt (`attempt`): `starting` (pre_start commands, spawn,
//! pid file, the readiness gate) → `running` (ready; health checks) → on
//! exit the restart policy decides between `backoff` → `starting` again,
//! `stopped`, `completed` (a task that exited 0) and `failed` (including a
//! crash loop: more than `max_restarts` in `restart_window`). A stop
//! request at any point goes through the one stop sequence (`stop`).
//!
//! A service with `listen` gets its held sockets at fds 3… in every
//! attempt (`listen`: bound by the first unit that needs them, shared by a
//! pool). A restart request (or a reload's `Redefine`) while it runs ready
//! is not stop-then-start but an overlap (`replace`): `running` → its
//! successor's spawn and gate next to the serving process → the successor
//! takes over (pid, pid file, record) → the old one is stopped; a failing
//! successor is stopped instead and the old process goes on (`End::Replace`
//! carries it from `run_service` to the lifecycle, `Next::Replace` runs the
//! overlap).
//!
//! Memory. A unit's task is one allocation the size of its future's
//! largest state, kept for the unit's whole life, and a future holds every
//! step it awaits inline. So the steps a unit spends its life in (an
//! attempt's run: `run_service`, `run_task`, and `backoff_wait`) are awaited
//! inline, and every other step (a gate, `pre_start`, a spawn, a stop, a
//! health check, taking a process up, an overlapping restart) is awaited
//! through `Box::pin`: its state lives on the heap only while it runs (for
//! the last two, that is the run that follows them, inside the box). A
//! running service without a health check also lets its environment go.
//!
//! Owns: one instance's process decisions and its published state. Must
//! not touch: other instances, the registry, the control socket.

mod activity;
mod adopt;
mod attempt;
mod gate;
pub mod listen;
mod memory;
mod replace;
mod stop;
mod timing;

use crate::supervisor::record::AfterStop;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::fsm::{self, Backoff, State};
use super::record::{self, UnitRecord};
use crate::anchor::client::Link;
use crate::config::{Kind, LogSettings, ProcessSpec};
use crate::plan::Instance;
use crate::probe::NotifySocket;
use crate::spawn::{Exit, How, StopReport};
use crate::state::StateDir;
use crate::status::Observed;

use super::hooks::{HookEvent, Occurrence};
pub use activity::Activity;

pub use adopt::Resume;
pub use gate::expand_argv;
pub use stop::killed_message;

/// What every unit of one supervisor shares.
pub struct UnitCtx {
    pub stack_name: String,
    /// Marks every process of this stack (`STACKCTL_STACK_ID`), so that
    /// descendants that left their group can still be found.
    pub stack_id: String,
    /// The stack's cgroup record (`StateDir::cgroup_record`).
    pub cgroup_record: std::path::PathBuf,
    pub state: StateDir,
    pub supervisor_pid: i32,
    /// Each process's environment over stackctl's own (`super::env`).
    pub envs: super::env::Envs,
    /// The failure hooks (`super::hooks`).
    pub hooks: super::hooks::Hooks,
    pub logs: LogSettings,
    /// The anchor: every process is spawned through it.
    pub anchor: Arc<Link>,
    /// Set when the whole stack is being stopped and the supervisor will
    /// exit: a unit then refuses to start or restart its process.
    pub closing: std::sync::atomic::AtomicBool,
    /// The services' listening sockets (`listen`).
    pub listeners: listen::Listeners,
    /// The start timeline: each unit tells it what its status changes mean.
    pub timeline: super::timeline::Recorder,
    /// Bumped on every change of any unit's status (and of the set of
    /// units): what `status --watch` waits on.
    pub changed: watch::Sender<u64>,
}

impl UnitCtx {
    /// Says that what `status` shows has changed.
    pub fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The answer to a start or restart once the stack is being stopped.
fn closing_failure() -> StartFailure {
    StartFailure {
        reason: "the stack is being stopped".into(),
    }
}

/// A request to a unit.
#[derive(Debug)]
pub enum Cmd {
    /// Start if not running (a completed task is left alone); reply once
    /// ready, completed or failed.
    Start { reply: oneshot::Sender<StartResult> },
    /// Stop (if running) and start again; a task runs again. A ready
    /// service with `listen` is replaced instead (`replace`).
    Restart { reply: oneshot::Sender<StartResult> },
    /// Take this definition (a reload changed it), then restart as
    /// `Restart` does.
    Redefine {
        spec: Arc<ProcessSpec>,
        reply: oneshot::Sender<StartResult>,
    },
    /// Stop; reply once the whole group is gone.
    Stop { reply: oneshot::Sender<StopReport> },
    /// A completed task runs again at its next start (`completed` becomes
    /// `pending`, kept with the anchor); anything else is left as it is.
    Rearm { reply: oneshot::Sender<()> },
}

/// Why a start did not end ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub reason: String,
}

/// The answer to a start.
pub type StartResult = Result<(), StartFailure>;

/// What a unit publishes.
#[derive(Debug, Clone)]
pub struct UnitStatus {
    pub state: State,
    pub pid: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    /// When the current process was spawned (monotonic).
    pub since: Option<Instant>,
    pub exit: Option<Exit>,
    pub message: Option<String>,
    /// The environment generation of its current (or last) process.
    pub env_generation: Option<u64>,
}

impl UnitStatus {
    fn new() -> UnitStatus {
        UnitStatus {
            state: State::Pending,
            pid: None,
            ready: false,
            restarts: 0,
            since: None,
            exit: None,
            message: None,
            env_generation: None,
        }
    }
}

/// The supervisor's handle on a unit.
#[derive(Clone)]
pub struct UnitHandle {
    pub inst: Instance,
    pub spec: Arc<ProcessSpec>,
    pub tx: mpsc::UnboundedSender<Cmd>,
    pub status: watch::Receiver<UnitStatus>,
    /// What it is doing now, while under way (`activity`).
    pub activity: watch::Receiver<Option<Activity>>,
    pub log_path: PathBuf,
    anchor: Arc<Link>,
}

impl UnitHandle {
    /// Starts the unit's task, idle (pending).
    pub fn spawn(ctx: Arc<UnitCtx>, spec: Arc<ProcessSpec>, inst: Instance) -> UnitHandle {
        Self::start_task(ctx, spec, inst, None)
    }

    /// Starts the unit's task resuming what a previous supervisor left
    /// (see [`adopt`]).
    pub fn adopt(
        ctx: Arc<UnitCtx>,
        spec: Arc<ProcessSpec>,
        inst: Instance,
        resume: Resume,
    ) -> UnitHandle {
        Self::start_task(ctx, spec, inst, Some(resume))
    }

    fn start_task(
        ctx: Arc<UnitCtx>,
        spec: Arc<ProcessSpec>,
        inst: Instance,
        resume: Option<Resume>,
    ) -> UnitHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(UnitStatus::new());
        let (activity_tx, activity) = watch::channel(None);
        let log_path = ctx.state.log_file(&inst.name);
        let anchor = ctx.anchor.clone();
        let unit = Unit {
            backoff: Backoff::new(spec.max_restarts, spec.restart_window),
            been_ready: false,
            wanted: false,
            notify_path: None,
            overlap: None,
            generation: 0,
            note: None,
            after_stop: AfterStop::Down,
            attempts: 0,
            ctx,
            spec: spec.clone(),
            inst: inst.clone(),
            rx,
            status: status_tx,
            activity: activity_tx,
            waiters: Vec::new(),
        };
        tokio::spawn(unit.run(resume.map(Box::new)));
        UnitHandle {
            inst,
            spec,
            tx,
            status,
            activity,
            log_path,
            anchor,
        }
    }

    /// Starts it and waits until it is ready, completed or failed.
    pub async fn start(&self) -> StartResult {
        let (reply, rx) = oneshot::channel();
        self.request(Cmd::Start { reply }, rx).await
    }

    /// Restarts it and waits until it is ready, completed or failed.
    pub async fn restart(&self) -> StartResult {
        let (reply, rx) = oneshot::channel();
        self.request(Cmd::Restart { reply }, rx).await
    }

    /// Gives it a new definition and restarts it (by replacement for a
    /// ready service with `listen`).
    pub async fn redefine(&self, spec: Arc<ProcessSpec>) -> StartResult {
        let (cmd, rx) = replace::redefine_cmd(spec);
        self.request(cmd, rx).await
    }

    async fn request(&self, cmd: Cmd, rx: oneshot::Receiver<StartResult>) -> StartResult {
        let gone = || StartFailure {
            reason: "its supervisor task is gone".into(),
        };
        if self.tx.send(cmd).is_err() {
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Makes a completed task run again at its next start.
    pub async fn rearm(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Rearm { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops it and waits until its group is gone.
    pub async fn stop(&self) -> StopReport {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stop { reply }).is_err() {
            return StopReport::default();
        }
        rx.await.unwrap_or_default()
    }

    /// The current status.
    pub fn now(&self) -> UnitStatus {
        self.status.borrow().clone()
    }

    /// What `status` shows of it: its current status, and a failing log
    /// (a full disk, as the anchor reports it) as its message.
    pub fn observed(&self) -> Observed {
        let s = self.now();
        let log_error = self.anchor.log_error(&self.inst.name);
        Observed {
            state: s.state,
            pid: s.pid,
            ready: s.ready,
            restarts: s.restarts,
            uptime: s.since.map(|t| t.elapsed()),
            exit_code: s.exit.and_then(Exit::code),
            message: log_error.map(|e| format!("log: {e}")).or(s.message),
        }
    }
}

/// How one attempt (spawn → gate → run) ended.
enum End {
    /// Stopped on request; these replies wait for the stop to be reported.
    Stopped(Vec<oneshot::Sender<StopReport>>, StopReport),
    /// A task exited 0.
    Completed,
    /// Could not start or did not become ready. Whether it had been ready
    /// before in this lifecycle decides if that counts as a crash.
    NotReady(String),
    /// Exited (or was stopped by a failing health check) after being ready.
    Exited {
        exit: Exit,
        ran_for: Duration,
        why: Option<String>,
    },
    /// Restart requested: go again without counting a crash.
    Restart,
    /// Restart requested of a ready service with `listen`: its successor
    /// starts while this process goes on serving (`replace`).
    Replace(Box<replace::Serving>),
}

/// Where a lifecycle begins.
enum Next {
    /// A fresh attempt.
    Attempt,
    /// A process the anchor already has (a previous supervisor's).
    Resume(Box<adopt::Resumed>),
    /// Waiting to restart after `reason` (the process was gone when this
    /// supervisor came).
    Backoff(String),
    /// An overlapping restart of this serving process.
    Replace(Box<replace::Serving>),
}

/// A process of the attempt, as the anchor spawned it.
struct Child {
    pid: i32,
    /// Its start time (`/proc/<pid>/stat`, as the anchor read it): its
    /// pid file's identity.
    start_ticks: u64,
    exit_rx: oneshot::Receiver<Exit>,
    exited: Option<Exit>,
    /// Resolves when the log gate's line was seen.
    matched: Option<oneshot::Receiver<()>>,
    spawned: Instant,
}

impl Child {
    /// Waits for the leader's exit (cancel safe: the status is kept).
    async fn wait(&mut self) -> Exit {
        if let Some(e) = self.exited {
            return e;
        }
        let e = (&mut self.exit_rx).await.unwrap_or(Exit::Unknown);
        self.exited = Some(e);
        e
    }
}

struct Unit {
    ctx: Arc<UnitCtx>,
    spec: Arc<ProcessSpec>,
    inst: Instance,
    rx: mpsc::UnboundedReceiver<Cmd>,
    status: watch::Sender<UnitStatus>,
    activity: watch::Sender<Option<Activity>>,
    /// Start requests waiting for "ready".
    waiters: Vec<oneshot::Sender<StartResult>>,
    /// Restarts in this life: delays and the crash-loop window.
    backoff: Backoff,
    /// Ready once in this life (a failure is then a crash).
    been_ready: bool,
    /// The operator wants it up.
    wanted: bool,
    /// Where the current notify socket is.
    notify_path: Option<PathBuf>,
    /// During an overlapping restart: the group of the other process of
    /// this instance, which no stop or clean-up may take for a stray.
    overlap: Option<i32>,
    /// The environment generation the current attempt was given.
    generation: u64,
    /// Said in `status` once it runs again: why it was last restarted,
    /// when stackctl did it (a memory limit).
    note: Option<String>,
    /// What follows the stop under way (kept in the record).
    after_stop: AfterStop,
    /// Attempts made so far (the number in the run markers).
    attempts: u32,
}

impl Unit {
    /// (`resume` is boxed, like the step that takes it: what a previous
    /// supervisor left is needed once, at the start.)
    async fn run(mut self, resume: Option<Box<Resume>>) {
        if let Some(r) = resume {
            if let Some(next) = Box::pin(self.resume(*r)).await {
                self.lifecycle(next).await;
            }
        }
        while let Some(cmd) = self.rx.recv().await {
            match cmd {
                Cmd::Start { reply } | Cmd::Restart { reply } if self.ctx.closing() => {
                    let _ = reply.send(Err(closing_failure()));
                }
                Cmd::Start { reply } => {
                    self.wanted = true;
                    let st = self.status.borrow().state;
                    if st == State::Completed {
                        self.persist();
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    self.waiters.push(reply);
                    self.fresh_life();
                    self.lifecycle(Next::Attempt).await;
                }
                Cmd::Restart { reply } => {
                    self.wanted = true;
                    self.waiters.push(reply);
                    self.fresh_life();
                    self.lifecycle(Next::Attempt).await;
                }
                Cmd::Redefine { spec, reply } => {
                    self.spec = spec;
                    self.wanted = true;
                    self.waiters.push(reply);
                    self.fresh_life();
                    self.lifecycle(Next::Attempt).await;
                }
                Cmd::Stop { reply } => {
                    self.wanted = false;
                    self.set(|s| {
                        if matches!(s.state, State::Pending | State::Backoff) {
                            s.state = State::Stopped;
                        }
                    });
                    let _ = reply.send(StopReport::default());
                }
                Cmd::Rearm { reply } => {
                    self.set(|s| {
                        if s.state == State::Completed {
                            s.state = State::Pending;
                            s.ready = false;
                        }
                    });
                    let _ = reply.send(());
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.inst.name
    }

    /// A new life: earlier crashes no longer count.
    fn fresh_life(&mut self) {
        self.backoff = Backoff::new(self.spec.max_restarts, self.spec.restart_window);
        self.been_ready = false;
        self.note = None;
    }

    /// Changes the published status (legal transitions only) and keeps it
    /// with the anchor.
    fn set(&self, f: impl FnOnce(&mut UnitStatus)) {
        let before = self.status.borrow().clone();
        self.status.send_modify(|s| {
            let before = s.state;
            f(s);
            debug_assert!(
                fsm::allowed(before, s.state),
                "illegal transition {before} -> {} for {}",
                s.state,
                self.inst.name
            );
            if !fsm::allowed(before, s.state) {
                tracing::error!(process = %self.inst.name, "bug: illegal transition {before} -> {}", s.state);
            }
        });
        let s = self.status.borrow().clone();
        if s.state.is_at_rest() || (s.state == State::Running && s.ready) {
            self.idle();
        }
        self.note_times(&before, &s);
        self.persist();
    }

    /// Keeps this unit's record with the anchor, for the next supervisor.
    fn persist(&self) {
        self.ctx.touch();
        let s = self.status.borrow().clone();
        let rec = UnitRecord {
            state: s.state,
            pid: s.pid,
            ready: s.ready,
            restarts: s.restarts,
            exit: s.exit.map(Into::into),
            message: s.message,
            wanted: self.wanted,
            been_ready: self.been_ready,
            backoff: self.backoff.snapshot((Instant::now(), SystemTime::now())),
            notify_path: self.notify_path.clone(),
            env_generation: s.env_generation,
            after_stop: self.after_stop.clone(),
            attempts: self.attempts,
        };
        self.ctx
            .anchor
            .put(&record::unit_key(&self.inst.name), rec.encode());
    }

    fn answer_waiters(&mut self, r: &StartResult) {
        for w in self.waiters.drain(..) {
            let _ = w.send(r.clone());
        }
    }

    /// Runs attempts until the process is down for good.
    async fn lifecycle(&mut self, first: Next) {
        let mut next = first;
        loop {
            let end = match std::mem::replace(&mut next, Next::Attempt) {
                Next::Attempt => self.attempt().await,
                // Boxed (see "Memory" in the module doc): taken up after a
                // supervisor's relaunch, or an overlapping restart.
                Next::Resume(r) => Box::pin(self.resumed(*r)).await,
                Next::Replace(old) => Box::pin(self.replace(old)).await,
                Next::Backoff(reason) => {
                    if !self.backoff_wait(Duration::ZERO, &reason, None).await {
                        return;
                    }
                    continue;
                }
            };
            if !matches!(end, End::Replace(_)) {
                self.release_notify();
            }
            match end {
                End::Replace(old) => next = Next::Replace(old),
                End::Stopped(replies, report) => {
                    self.stopped(replies, report);
                    return;
                }
                End::Completed => {
                    self.set(|s| {
                        s.state = State::Completed;
                        s.pid = None;
                        s.ready = true;
                        s.exit = Some(Exit::Code(0));
                        s.message = None;
                    });
                    tracing::info!(process = %self.name(), "completed");
                    self.answer_waiters(&Ok(()));
                    return;
                }
                // A restart the operator asked for begins a fresh life:
                // its crashes before it no longer count.
                End::Restart => {
                    self.backoff = Backoff::new(self.spec.max_restarts, self.spec.restart_window);
                }
                End::NotReady(reason) if !self.been_ready => {
                    tracing::warn!(process = %self.name(), "failed to start: {reason}");
                    self.set(|s| {
                        s.state = State::Failed;
                        s.pid = None;
                        s.ready = false;
                        s.message = Some(reason.clone());
                    });
                    self.tell_hooks(HookEvent::Failed, &reason, None);
                    self.answer_waiters(&Err(StartFailure { reason }));
                    return;
                }
                End::NotReady(reason) => {
                    // A restart that did not become ready counts as a crash.
                    if !self.backoff_wait(Duration::ZERO, &reason, None).await {
                        return;
                    }
                }
                End::Exited { exit, ran_for, why } => {
                    // `why`: stackctl stopped it for failing.
                    let forced = why.is_some();
                    let reason = why.unwrap_or_else(|| exit.to_string());
                    tracing::info!(process = %self.name(), "{reason}");
                    if !fsm::wants_restart(self.spec.restart, exit, forced) {
                        self.ended(exit, reason, forced);
                        return;
                    }
                    if !self.backoff_wait(ran_for, &reason, Some(exit)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Stopped on request: say so (a SIGKILL never as a clean stop) and
    /// answer whoever waits.
    fn stopped(&mut self, replies: Vec<oneshot::Sender<StopReport>>, report: StopReport) {
        let how = How {
            signal: self.spec.stop_signal,
            grace: self.spec.stop_timeout,
        };
        self.set(|s| {
            s.state = State::Stopped;
            s.pid = None;
            s.ready = false;
            s.message = report.killed.then(|| killed_message(&how));
        });
        if report.killed {
            tracing::info!(process = %self.name(), "stopped (killed)");
        } else {
            tracing::info!(process = %self.name(), "stopped");
        }
        let r = Err(StartFailure {
            reason: "it was stopped before it was ready".into(),
        });
        self.answer_waiters(&r);
        for reply in replies {
            let _ = reply.send(report.clone());
        }
    }

    /// Exited with no restart due: failed, stopped, or (a task) completed.
    fn ended(&mut self, exit: Exit, reason: String, forced: bool) {
        let failed = fsm::failed(exit, forced);
        let task = self.spec.kind == Kind::Task;
        self.set(|s| {
            s.state = match (failed, task) {
                (true, _) => State::Failed,
                (false, true) => State::Completed,
                (false, false) => State::Stopped,
            };
            s.pid = None;
            s.ready = s.state == State::Completed;
            s.exit = Some(exit);
            s.message = failed.then(|| reason.clone());
        });
        if failed {
            self.tell_hooks(HookEvent::Failed, &reason, Some(exit));
        }
        let r = if failed {
            Err(StartFailure { reason })
        } else {
            Ok(())
        };
        self.answer_waiters(&r);
    }

    /// Waits out the restart delay. `false`: do not restart (crash loop or
    /// a stop request).
    async fn backoff_wait(&mut self, ran_for: Duration, reason: &str, exit: Option<Exit>) -> bool {
        let Some(delay) = self.backoff.next(Instant::now(), ran_for) else {
            let msg = format!(
                "crash loop: {} restarts within {}; last: {reason}",
                self.backoff.in_window(),
                humantime::format_duration(self.spec.restart_window)
            );
            let tail = crate::logs::marker::run_tail(&self.ctx.state.log_file(&self.inst.name), 5)
                .map(|(lines, _)| lines)
                .unwrap_or_default();
            tracing::error!(
                process = %self.name(),
                "{msg}; giving up. Last lines of its log: {}",
                if tail.is_empty() { "(none)".to_string() } else { tail.join(" | ") }
            );
            self.set(|s| {
                s.state = State::Failed;
                s.pid = None;
                s.ready = false;
                s.message = Some(msg.clone());
            });
            self.tell_hooks(HookEvent::Failed, &msg, exit);
            self.answer_waiters(&Err(StartFailure { reason: msg }));
            return false;
        };
        self.set(|s| {
            s.state = State::Backoff;
            s.pid = None;
            s.ready = false;
            s.restarts += 1;
            s.message = Some(format!(
                "restarting in {} after: {reason}",
                humantime::format_duration(delay)
            ));
        });
        tracing::info!(process = %self.name(), "restarting in {:?} after: {reason}", delay);
        self.tell_hooks(HookEvent::Exit, reason, exit);
        self.doing(format!("restarting after: {reason}"), Some(delay));
        if delay.is_zero() {
            // The timer counts whole milliseconds: even a zero sleep would
            // hold an immediate restart for one. A command sent meanwhile
            // waits in the queue for the attempt.
            return true;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                cmd = self.rx.recv() => match self.redefined(cmd) {
                    None => return false,
                    Some(Cmd::Start { reply }) => self.waiters.push(reply),
                    Some(Cmd::Restart { reply } | Cmd::Redefine { reply, .. }) if self.ctx.closing() => {
                        let _ = reply.send(Err(closing_failure()));
                    }
                    // A restart asked for is made now, in a new life (the
                    // back-off is for the restarts the policy makes).
                    Some(Cmd::Restart { reply } | Cmd::Redefine { reply, .. }) => {
                        self.wanted = true;
                        self.waiters.push(reply);
                        self.fresh_life();
                        tracing::info!(process = %self.name(), "restarting on request, without waiting out its back-off");
                        return true;
                    }
                    // Not completed: nothing to rearm.
                    Some(Cmd::Rearm { reply }) => { let _ = reply.send(()); }
                    Some(Cmd::Stop { reply }) => {
                        self.wanted = false;
                        self.set(|s| { s.state = State::Stopped; s.message = None; });
                        self.answer_waiters(&Err(StartFailure { reason: "it was stopped".into() }));
                        let _ = reply.send(StopReport::default());
                        return false;
                    }
                }
            }
        }
    }

    /// The environment of this instance's processes.
    fn env(&self, notify: Option<&NotifySocket>) -> Vec<(String, String)> {
        self.env_and_generation(notify).0
    }

    /// The environment of this instance's processes, and its generation.
    fn env_and_generation(&self, notify: Option<&NotifySocket>) -> (Vec<(String, String)>, u64) {
        let given = self.ctx.envs.of(&self.spec);
        let mut m: BTreeMap<String, String> = given.merged();
        m.insert("STACKCTL_STACK".into(), self.ctx.stack_name.clone());
        m.insert("STACKCTL_STACK_ID".into(), self.ctx.stack_id.clone());
        m.insert("STACKCTL_PROCESS".into(), self.inst.name.clone());
        match self.inst.index {
            Some(i) => {
                m.insert("STACKCTL_INSTANCE".into(), i.to_string());
            }
            None => {
                m.remove("STACKCTL_INSTANCE");
            }
        }
        match notify {
            Some(n) => {
                m.insert("NOTIFY_SOCKET".into(), n.path().display().to_string());
            }
            None => {
                m.remove("NOTIFY_SOCKET");
            }
        }
        (m.into_iter().collect(), given.generation)
    }

    /// Tells the failure hooks (`super::hooks`) that this instance failed
    /// (`Failed`) or exited unexpectedly and is restarted (`Exit`).
    fn tell_hooks(&self, event: HookEvent, reason: &str, exit: Option<Exit>) {
        let s = self.status.borrow().clone();
        let occ = Occurrence {
            event,
            instance: self.inst.name.clone(),
            process: self.inst.process.clone(),
            state: match event {
                HookEvent::Failed => State::Failed,
                HookEvent::Exit => State::Backoff,
            },
            reason: reason.to_string(),
            exit_code: exit.or(s.exit).and_then(Exit::code),
            log: self.ctx.state.log_file(&self.inst.name),
            restarts: s.restarts,
        };
        self.ctx.hooks.fire(occ, self.ctx.envs.base());
    }

    /// The anchor need not keep the notify socket of an attempt that ended.
    fn release_notify(&mut self) {
        if self.notify_path.take().is_some() {
            self.ctx
                .anchor
                .release(&record::notify_key(&self.inst.name));
        }
    }
}
