//! One process instance: the task that owns it.
//!
//! Theory of operation. A unit is one tokio task per instance (`api`,
//! `worker.2`). It alone spawns, signals and records its process: it holds
//! the exit receiver (fed by the single reaping path in `spawn::reaper`),
//! the log pipe's pump, the pid file and the notify socket. Commands arrive
//! as messages carrying a oneshot reply ([`Cmd`]); what it is doing is
//! published on a `watch` channel ([`UnitStatus`]) that the supervisor reads
//! for `status` and for dependency ordering. Nothing polls: every wait is a
//! `select!` over the child's exit, the next command, the readiness gate,
//! the health timer or the notify socket. The one exception is the short
//! wait for a process *group* to empty during a stop, which has no event.
//! After an exit, the unit waits (bounded) for the log pump to drain the
//! pipe, so that a failure's log tail ends with the process's last line.
//!
//! Life of an attempt: `starting` (pre_start commands, spawn, pid file, the
//! readiness gate) → `running` (ready; health checks) → on exit the restart
//! policy decides between `backoff` → `starting` again, `stopped`,
//! `completed` (a task that exited 0) and `failed` (including a crash loop:
//! more than `max_restarts` in `restart_window`). A stop request at any
//! point sends `stop_signal` to the whole group, waits up to `stop_timeout`
//! for the group to empty, then SIGKILLs the group. After a stop, and after
//! a service's leader exits on its own, whatever the process started that
//! left its group (`setsid`, a double fork) but kept the stack's mark is
//! swept too, before any next attempt.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::fsm::{self, Backoff, State};
use crate::config::{Kind, LogSettings, ProbeKind, ProcessSpec};
use crate::logs::{self, LogWriter, Pump, Tap};
use crate::plan::Instance;
use crate::probe::{self, LogWatch, NotifyMsg, NotifySocket, ProbeCtx};
use crate::spawn::{self, identity::PidRecord, strays::Mark, Exit, How, StopReport, Target};
use crate::state::StateDir;
use crate::status::Observed;

/// Prints a process's output line in `--foreground` mode.
pub type Echo = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// What every unit of one supervisor shares.
pub struct UnitCtx {
    pub stack_name: String,
    /// Marks every process of this stack (`STACKCTL_STACK_ID`), so that
    /// descendants that left their group can still be found.
    pub stack_id: String,
    pub state: StateDir,
    pub supervisor_pid: i32,
    /// stackctl's own environment, which every process inherits.
    pub base_env: Vec<(String, String)>,
    pub logs: LogSettings,
    pub echo: Option<Echo>,
    /// Set when the whole stack is being stopped and the supervisor will
    /// exit: a unit then refuses to start or restart its process.
    pub closing: std::sync::atomic::AtomicBool,
}

impl UnitCtx {
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
    /// Stop (if running) and start again; a task runs again.
    Restart { reply: oneshot::Sender<StartResult> },
    /// Stop; reply once the whole group is gone.
    Stop { reply: oneshot::Sender<StopReport> },
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
}

/// The supervisor's handle on a unit.
#[derive(Clone)]
pub struct UnitHandle {
    pub inst: Instance,
    pub spec: Arc<ProcessSpec>,
    pub tx: mpsc::UnboundedSender<Cmd>,
    pub status: watch::Receiver<UnitStatus>,
    pub log_path: PathBuf,
    /// The log writer, once the first spawn opened it.
    pub log: SharedLog,
}

/// A unit's log writer, shared with its handle so `status` can report a
/// failing log (a full disk) without asking the unit.
pub type SharedLog = Arc<std::sync::OnceLock<Arc<LogWriter>>>;

impl UnitHandle {
    /// Starts the unit's task.
    pub fn spawn(ctx: Arc<UnitCtx>, spec: Arc<ProcessSpec>, inst: Instance) -> UnitHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(UnitStatus {
            state: State::Pending,
            pid: None,
            ready: false,
            restarts: 0,
            since: None,
            exit: None,
            message: None,
        });
        let log_path = ctx.state.log_file(&inst.name);
        let log: SharedLog = Arc::new(std::sync::OnceLock::new());
        let unit = Unit {
            ctx,
            spec: spec.clone(),
            inst: inst.clone(),
            rx,
            status: status_tx,
            log: log.clone(),
            waiters: Vec::new(),
        };
        tokio::spawn(unit.run());
        UnitHandle {
            inst,
            spec,
            tx,
            status,
            log_path,
            log,
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

    async fn request(&self, cmd: Cmd, rx: oneshot::Receiver<StartResult>) -> StartResult {
        if self.tx.send(cmd).is_err() {
            return Err(StartFailure {
                reason: "its supervisor task is gone".into(),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(StartFailure {
                reason: "its supervisor task is gone".into(),
            })
        })
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
    /// (a full disk) as its message.
    pub fn observed(&self) -> Observed {
        let s = self.now();
        let log_error = self.log.get().and_then(|l| l.last_error());
        Observed {
            state: s.state,
            pid: s.pid,
            ready: s.ready,
            restarts: s.restarts,
            uptime: s.since.map(|t| t.elapsed()),
            exit_code: s.exit.map(Exit::code),
            message: log_error.map(|e| format!("log: {e}")).or(s.message),
        }
    }
}

/// What a readiness gate needs besides the unit.
struct Gate<'a> {
    ready: &'a crate::config::ReadySpec,
    ctx: &'a ProbeCtx,
    watch: Option<&'a LogWatch>,
    notify: Option<&'a NotifySocket>,
}

/// How one attempt (spawn → gate → run) ended.
enum End {
    /// Stopped on request; these replies wait for the stop to be reported.
    Stopped(Vec<oneshot::Sender<StopReport>>, StopReport),
    /// A task exited 0.
    Completed,
    /// Could not start or did not become ready. `ran` says whether it had
    /// been ready before in this lifecycle (then it counts as a crash).
    NotReady(String),
    /// Exited (or was stopped by a failing health check) after being ready.
    Exited {
        exit: Exit,
        ran_for: Duration,
        why: Option<String>,
    },
    /// Restart requested: go again without counting a crash.
    Restart,
}

/// The running child of an attempt.
struct Child {
    pid: i32,
    exit_rx: oneshot::Receiver<Exit>,
    exited: Option<Exit>,
    pump: Option<Pump>,
    spawned: Instant,
}

impl Child {
    /// Waits for the leader's exit (cancel safe: the status is kept).
    async fn wait(&mut self) -> Exit {
        if let Some(e) = self.exited {
            return e;
        }
        let e = (&mut self.exit_rx).await.unwrap_or(Exit::Signal(9));
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
    log: SharedLog,
    /// Start requests waiting for "ready".
    waiters: Vec<oneshot::Sender<StartResult>>,
}

impl Unit {
    async fn run(mut self) {
        while let Some(cmd) = self.rx.recv().await {
            match cmd {
                Cmd::Start { reply } | Cmd::Restart { reply } if self.ctx.closing() => {
                    let _ = reply.send(Err(closing_failure()));
                }
                Cmd::Start { reply } => {
                    let st = self.status.borrow().state;
                    if st == State::Completed {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    self.waiters.push(reply);
                    self.lifecycle().await;
                }
                Cmd::Restart { reply } => {
                    self.waiters.push(reply);
                    self.lifecycle().await;
                }
                Cmd::Stop { reply } => {
                    self.set(|s| {
                        if matches!(s.state, State::Pending | State::Backoff) {
                            s.state = State::Stopped;
                        }
                    });
                    let _ = reply.send(StopReport::default());
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.inst.name
    }

    fn set(&self, f: impl FnOnce(&mut UnitStatus)) {
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
    }

    fn answer_waiters(&mut self, r: &StartResult) {
        for w in self.waiters.drain(..) {
            let _ = w.send(r.clone());
        }
    }

    /// Runs attempts until the process is down for good.
    async fn lifecycle(&mut self) {
        let mut backoff = Backoff::new(self.spec.max_restarts, self.spec.restart_window);
        let mut been_ready = false;
        loop {
            let end = self.attempt(&mut been_ready).await;
            match end {
                End::Stopped(replies, report) => {
                    let how = How {
                        signal: self.spec.stop_signal,
                        grace: self.spec.stop_timeout,
                    };
                    self.set(|s| {
                        s.state = State::Stopped;
                        s.pid = None;
                        s.ready = false;
                        // A SIGKILL is never reported as a clean stop.
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
                    backoff = Backoff::new(self.spec.max_restarts, self.spec.restart_window);
                    continue;
                }
                End::NotReady(reason) if !been_ready => {
                    tracing::warn!(process = %self.name(), "failed to start: {reason}");
                    self.set(|s| {
                        s.state = State::Failed;
                        s.pid = None;
                        s.ready = false;
                        s.message = Some(reason.clone());
                    });
                    self.answer_waiters(&Err(StartFailure { reason }));
                    return;
                }
                End::NotReady(reason) => {
                    // A restart that did not become ready counts as a crash.
                    if !self.backoff(&mut backoff, Duration::ZERO, &reason).await {
                        return;
                    }
                }
                End::Exited { exit, ran_for, why } => {
                    let reason = why.unwrap_or_else(|| exit.to_string());
                    tracing::info!(process = %self.name(), "{reason}");
                    let restart = why_restart(&self.spec, exit);
                    if !restart {
                        let failed = !exit.success();
                        self.set(|s| {
                            s.state = if failed {
                                State::Failed
                            } else {
                                State::Stopped
                            };
                            if self.spec.kind == Kind::Task && !failed {
                                s.state = State::Completed;
                            }
                            s.pid = None;
                            s.ready = s.state == State::Completed;
                            s.exit = Some(exit);
                            s.message = failed.then(|| reason.clone());
                        });
                        let r = if failed {
                            Err(StartFailure { reason })
                        } else {
                            Ok(())
                        };
                        self.answer_waiters(&r);
                        return;
                    }
                    if !self.backoff(&mut backoff, ran_for, &reason).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits out the restart delay. `false`: do not restart (crash loop or
    /// a stop request).
    async fn backoff(&mut self, backoff: &mut Backoff, ran_for: Duration, reason: &str) -> bool {
        let Some(delay) = backoff.next(Instant::now(), ran_for) else {
            let msg = format!(
                "crash loop: {} restarts within {}; last: {reason}",
                backoff.in_window(),
                humantime::format_duration(self.spec.restart_window)
            );
            let tail = logs::tail(&self.ctx.state.log_file(&self.inst.name), 5).unwrap_or_default();
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
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                cmd = self.rx.recv() => match cmd {
                    None => return false,
                    Some(Cmd::Start { reply }) | Some(Cmd::Restart { reply }) => self.waiters.push(reply),
                    Some(Cmd::Stop { reply }) => {
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
        let mut m: BTreeMap<String, String> = self.ctx.base_env.iter().cloned().collect();
        for (k, v) in &self.spec.env.0 {
            m.insert(k.clone(), v.clone());
        }
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
        m.into_iter().collect()
    }

    fn log_writer(&mut self) -> std::io::Result<Arc<LogWriter>> {
        if let Some(l) = self.log.get() {
            return Ok(l.clone());
        }
        let l = LogWriter::open(
            self.ctx.state.log_file(&self.inst.name),
            self.ctx.logs.clone(),
        )?;
        let _ = self.log.set(l.clone());
        Ok(l)
    }

    fn taps(&self, extra: Option<Tap>) -> Vec<Tap> {
        let mut taps = Vec::new();
        if let Some(echo) = &self.ctx.echo {
            let echo = echo.clone();
            let name = self.inst.name.clone();
            taps.push(Arc::new(move |line: &[u8]| echo(&name, line)) as Tap);
        }
        taps.extend(extra);
        taps
    }

    /// A `tcp`/`http` gate that passes before the process even exists is
    /// answered by someone else (a server left over from before stackctl
    /// took over, holding the port): the new process would fail to bind
    /// while `start` reported it ready. Pool members are exempt, since they
    /// may share a port (`SO_REUSEPORT`).
    async fn gate_already_passes(
        &self,
        ready: Option<&crate::config::ReadySpec>,
        env: &[(String, String)],
    ) -> Option<String> {
        let r = ready?;
        if self.inst.index.is_some() || !matches!(r.probe, ProbeKind::Tcp(_) | ProbeKind::Http(_)) {
            return None;
        }
        let ctx = ProbeCtx {
            cwd: self.spec.cwd.clone(),
            env: env.to_vec(),
        };
        probe::check(&r.probe, &ctx, Duration::from_millis(500))
            .await
            .ok()?;
        // Shown as written in the stack file: the expanded form may hold a secret.
        let shown = self
            .spec
            .ready
            .as_ref()
            .map_or_else(String::new, |r| r.probe.to_string());
        Some(format!(
            "its readiness gate `{shown}` already passes before it was started: something else answers there (a server left running from before?); find it with `ss -ltnp`, stop it, and start again"
        ))
    }

    /// Runs the `pre_start` commands in order, each in its own session with
    /// its output in the log, each within the task timeout (10 minutes for
    /// a service); a stop request meanwhile stops it and ends the attempt.
    async fn pre_start(&mut self, env: &[(String, String)]) -> Result<(), End> {
        let cmds = self.spec.pre_start.clone();
        let limit = self.spec.timeout.unwrap_or(Duration::from_secs(600));
        for cmd in &cmds {
            let mut child = self
                .spawn_child(cmd, env, None)
                .map_err(|e| End::NotReady(format!("pre_start `{cmd}` {e}")))?;
            let deadline = tokio::time::sleep(limit);
            tokio::pin!(deadline);
            let exit = loop {
                tokio::select! {
                    exit = child.wait() => break exit,
                    () = &mut deadline => {
                        let _ = spawn::terminate(Target { group: Some(child.pid), strays: None }, How::KILL, async {
                            child.wait().await;
                        }).await;
                        drain(child.pump.as_ref()).await;
                        return Err(End::NotReady(format!(
                            "pre_start `{cmd}` did not finish within {}",
                            humantime::format_duration(limit)
                        )));
                    }
                    cmd = self.rx.recv() => {
                        if let Some(end) = self.on_command(cmd, &mut child, None, false).await {
                            return Err(end);
                        }
                    }
                }
            };
            // Nothing a pre_start command left in its group may linger.
            let _ = spawn::terminate(
                Target {
                    group: Some(child.pid),
                    strays: None,
                },
                How::KILL,
                async {},
            )
            .await;
            drain(child.pump.as_ref()).await;
            if !exit.success() {
                return Err(End::NotReady(format!("pre_start `{cmd}` {exit}")));
            }
        }
        Ok(())
    }

    /// Spawns `cmd` (templates expanded from `env`) with its output going
    /// to this instance's log, and the log's taps (plus `tap`).
    fn spawn_child(
        &mut self,
        cmd: &crate::config::CommandSpec,
        env: &[(String, String)],
        tap: Option<Tap>,
    ) -> Result<Child, String> {
        let log = self
            .log_writer()
            .map_err(|e| log_error(&self.ctx.state, self.name(), e))?;
        let argv = expand_argv(cmd, env);
        let spawned = spawn::spawn(&argv, &self.spec.cwd, env, true)
            .map_err(|e| format!("could not run `{cmd}` in {}: {e}", self.spec.cwd.display()))?;
        let pump = match spawned.output {
            Some(fd) => match logs::spawn_pump(self.name(), fd, log, self.taps(tap)) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(process = %self.name(), "could not start the log pump: {e}");
                    None
                }
            },
            None => None,
        };
        Ok(Child {
            pid: spawned.pid,
            exit_rx: spawned.exit,
            exited: None,
            pump,
            spawned: Instant::now(),
        })
    }

    /// A new attempt begins: starting, nothing known yet.
    fn begin_attempt(&self) {
        self.set(|s| {
            s.state = State::Starting;
            s.pid = None;
            s.ready = false;
            s.exit = None;
            s.message = None;
        });
    }

    /// The `NOTIFY_SOCKET` of a `notify` gate, bound before the spawn.
    fn notify_socket(&self) -> Result<Option<NotifySocket>, End> {
        let Some(ProbeKind::Notify) = self.spec.ready.as_ref().map(|r| &r.probe) else {
            return Ok(None);
        };
        let path = self.ctx.state.notify_socket(&self.inst.name);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        NotifySocket::bind(&path)
            .map(Some)
            .map_err(|e| End::NotReady(format!("could not create its NOTIFY_SOCKET: {e}")))
    }

    /// The readiness gate with this instance's variables expanded.
    fn expanded_ready(
        &self,
        env: &[(String, String)],
    ) -> Result<Option<crate::config::ReadySpec>, End> {
        let Some(r) = self.spec.ready.clone() else {
            return Ok(None);
        };
        probe::expand(&r.probe, env)
            .map(|probe| Some(crate::config::ReadySpec { probe, ..r }))
            .map_err(|f| End::NotReady(format!("its readiness probe: {f}")))
    }

    /// Writes the pid file of a fresh child and publishes its pid.
    fn record(&self, child: &Child) -> std::path::PathBuf {
        let pid_path = self.ctx.state.pid_file(&self.inst.name);
        match PidRecord::capture(child.pid, &self.inst.name, self.ctx.supervisor_pid) {
            Ok(rec) => {
                if let Err(e) = rec.write(&pid_path) {
                    tracing::error!(process = %self.name(), "could not write {}: {e}", pid_path.display());
                }
            }
            // Gone already: its exit is on the way.
            Err(e) => {
                tracing::debug!(process = %self.name(), "no identity for pid {}: {e}", child.pid)
            }
        }
        let pid = child.pid;
        tracing::info!(process = %self.name(), "spawned pid {pid}: {}", self.spec.command);
        self.set(|s| {
            s.pid = Some(pid);
            s.since = Some(Instant::now());
        });
        pid_path
    }

    /// One attempt: spawn, gate, run, until it ends.
    async fn attempt(&mut self, been_ready: &mut bool) -> End {
        self.begin_attempt();
        let notify = match self.notify_socket() {
            Ok(n) => n,
            Err(end) => return end,
        };
        let env = self.env(notify.as_ref());
        let ready = match self.expanded_ready(&env) {
            Ok(r) => r,
            Err(end) => return end,
        };
        if let Some(reason) = self.gate_already_passes(ready.as_ref(), &env).await {
            return End::NotReady(reason);
        }
        if let Err(end) = self.pre_start(&env).await {
            return end;
        }
        let (watch, log_tap) = match ready.as_ref().map(|r| &r.probe) {
            Some(ProbeKind::Log(re)) => {
                let (w, t) = LogWatch::new(re.clone());
                (Some(w), Some(t))
            }
            _ => (None, None),
        };
        let command = self.spec.command.clone();
        let mut child = match self.spawn_child(&command, &env, log_tap) {
            Ok(c) => c,
            Err(reason) => return End::NotReady(reason),
        };
        // Only the new instance's own processes may now pass its notify gate.
        if let Some(n) = &notify {
            n.accept_session(child.pid);
        }
        let pid_path = self.record(&child);
        if self.spec.kind == Kind::Task {
            return self.run_task(child, &pid_path).await;
        }
        let ctx = ProbeCtx {
            cwd: self.spec.cwd.clone(),
            env,
        };
        if let Some(r) = &ready {
            let gate = Gate {
                ready: r,
                ctx: &ctx,
                watch: watch.as_ref(),
                notify: notify.as_ref(),
            };
            if let Err(end) = self.await_gate(&mut child, &pid_path, gate).await {
                return end;
            }
        }
        // Ready. (No gate: ready as soon as spawned, SPEC. Not raced against
        // the exit: a process that exits at once would otherwise be "failed
        // before it was ready" at random, skipping its restart policy.)
        *been_ready = true;
        let took = child.spawned.elapsed();
        tracing::info!(process = %self.name(), "ready in {:.3}s", took.as_secs_f64());
        self.set(|s| {
            s.state = State::Running;
            s.ready = true;
        });
        self.answer_waiters(&Ok(()));
        self.run_service(child, &pid_path, &ctx, notify.as_ref())
            .await
    }

    /// Waits for the readiness gate while watching the child and commands.
    async fn await_gate(
        &mut self,
        child: &mut Child,
        pid_path: &std::path::Path,
        g: Gate<'_>,
    ) -> Result<(), End> {
        // `STATUS=` sent while the gate waits for `READY=1` is shown at once
        // (as systemd does), through this channel: the gate cannot touch
        // the status itself while the unit is borrowed by the select below.
        let (said_tx, mut said_rx) = mpsc::unbounded_channel::<String>();
        let gate = gate(g.ready, g.ctx, g.watch, g.notify, said_tx);
        tokio::pin!(gate);
        let result = loop {
            tokio::select! {
                Some(said) = said_rx.recv() => self.set(|s| s.message = Some(said)),
                exit = child.wait() => {
                    self.cleanup_after_exit(child, pid_path).await;
                    return Err(End::NotReady(format!("{exit} before it was ready")));
                }
                cmd = self.rx.recv() => {
                    if let Some(end) = self.on_command(cmd, child, Some(pid_path), false).await {
                        return Err(end);
                    }
                }
                r = &mut gate => break r,
            }
        };
        while let Ok(said) = said_rx.try_recv() {
            self.set(|s| s.message = Some(said));
        }
        if let Err(reason) = result {
            let _ = self.stop_child(child, Some(pid_path)).await;
            let reason = match &self.spec.ready {
                Some(r) => redact(&reason, &r.probe, &g.ctx.env),
                None => reason,
            };
            return Err(End::NotReady(reason));
        }
        Ok(())
    }

    async fn run_task(&mut self, mut child: Child, pid_path: &std::path::Path) -> End {
        let limit = self.spec.timeout;
        let deadline = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                exit = child.wait() => {
                    self.cleanup_after_exit(&child, pid_path).await;
                    let ran_for = child.spawned.elapsed();
                    return if exit.success() {
                        End::Completed
                    } else {
                        End::Exited { exit, ran_for, why: None }
                    };
                }
                () = &mut deadline => {
                    let _ = self.stop_child(&mut child, Some(pid_path)).await;
                    let d = limit.unwrap_or_default();
                    return End::NotReady(format!("did not finish within its timeout of {}", humantime::format_duration(d)));
                }
                cmd = self.rx.recv() => {
                    if let Some(end) = self.on_command(cmd, &mut child, Some(pid_path), false).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn run_service(
        &mut self,
        mut child: Child,
        pid_path: &std::path::Path,
        ctx: &ProbeCtx,
        notify: Option<&NotifySocket>,
    ) -> End {
        let health = match self.spec.health.clone() {
            Some(h) => match probe::expand(&h.probe, &ctx.env) {
                Ok(probe) => Some(crate::config::HealthSpec { probe, ..h }),
                Err(f) => {
                    tracing::error!(process = %self.name(), "its health probe cannot be used: {f}");
                    None
                }
            },
            None => None,
        };
        let mut failures = 0u32;
        let mut tick = tokio::time::interval(
            health
                .as_ref()
                .map(|h| h.interval)
                .unwrap_or(Duration::from_secs(3600)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            tokio::select! {
                exit = child.wait() => {
                    self.cleanup_after_exit(&child, pid_path).await;
                    return End::Exited { exit, ran_for: child.spawned.elapsed(), why: None };
                }
                cmd = self.rx.recv() => {
                    if let Some(end) = self.on_command(cmd, &mut child, Some(pid_path), true).await {
                        return end;
                    }
                }
                _ = tick.tick(), if health.is_some() => {
                    let Some(h) = &health else { continue };
                    match probe::check(&h.probe, ctx, h.timeout).await {
                        Ok(()) => {
                            if failures > 0 {
                                tracing::info!(process = %self.name(), "health check passes again");
                            }
                            failures = 0;
                        }
                        Err(f) => {
                            failures += 1;
                            let f = match &self.spec.health {
                                Some(t) => redact(&f.to_string(), &t.probe, &ctx.env),
                                None => f.to_string(),
                            };
                            tracing::warn!(process = %self.name(), "health check failed ({failures}/{}): {f}", h.failures);
                            if failures >= h.failures {
                                let why = format!("health check failed {failures} times in a row: {f}");
                                let _ = self.stop_child(&mut child, Some(pid_path)).await;
                                let exit = child.exited.unwrap_or(Exit::Signal(15));
                                return End::Exited { exit, ran_for: child.spawned.elapsed(), why: Some(why) };
                            }
                        }
                    }
                }
                msgs = recv_notify(notify) => {
                    for m in msgs {
                        match m {
                            NotifyMsg::Status(s) => self.set(|st| st.message = Some(s.clone())),
                            NotifyMsg::Stopping => self.set(|st| st.message = Some("stopping (said the process)".into())),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// Handles a command that arrives while the child runs; `Some` ends
    /// the attempt. `ready`: a start request is answered at once.
    async fn on_command(
        &mut self,
        cmd: Option<Cmd>,
        child: &mut Child,
        pid_path: Option<&std::path::Path>,
        ready: bool,
    ) -> Option<End> {
        match cmd {
            Some(Cmd::Start { reply }) if ready => {
                let _ = reply.send(Ok(()));
                None
            }
            Some(Cmd::Start { reply }) => {
                self.waiters.push(reply);
                None
            }
            Some(Cmd::Restart { reply }) if self.ctx.closing() => {
                let _ = reply.send(Err(closing_failure()));
                None
            }
            Some(Cmd::Restart { reply }) => {
                self.waiters.push(reply);
                tracing::info!(process = %self.name(), "restarting on request");
                let _ = self.stop_child(child, pid_path).await;
                Some(End::Restart)
            }
            Some(Cmd::Stop { reply }) => {
                let report = self.stop_child(child, pid_path).await;
                Some(End::Stopped(vec![reply], report))
            }
            // The supervisor is going away: leave nothing behind.
            None => {
                let report = self.stop_child(child, pid_path).await;
                Some(End::Stopped(vec![], report))
            }
        }
    }

    /// This instance's mark: how its processes are found outside its group.
    fn mark(&self) -> Mark<'_> {
        Mark {
            stack_id: &self.ctx.stack_id,
            instances: Some(std::slice::from_ref(&self.inst.name)),
        }
    }

    /// After the leader exited on its own: nothing it left may linger (it
    /// would be a second copy after the restart), so what is left of the
    /// incarnation is killed at once — in its group, and, for a service,
    /// outside it (a task may leave a daemon behind on purpose, `pg_ctl
    /// start`: it is stopped with the stack). The pid file goes; and what
    /// it wrote is drained into its log before the exit is acted on, so a
    /// failure's log tail ends with its last line.
    async fn cleanup_after_exit(&self, child: &Child, pid_path: &std::path::Path) {
        if spawn::group_exists(child.pid) {
            tracing::info!(process = %self.name(), "killing what pid {} left in its group", child.pid);
        }
        let strays = (self.spec.kind == Kind::Service).then(|| self.mark());
        let target = Target {
            group: Some(child.pid),
            strays,
        };
        let report = spawn::terminate(target, How::KILL, async {}).await;
        self.log_stop_findings(&report);
        let _ = std::fs::remove_file(pid_path);
        drain(child.pump.as_ref()).await;
    }

    fn log_stop_findings(&self, report: &StopReport) {
        for (_, pid) in &report.strays {
            tracing::info!(process = %self.name(), "stopped pid {pid}, which had left its process group");
        }
        if !report.survivors.is_empty() {
            tracing::error!(process = %self.name(), "still alive after SIGKILL: {:?}", report.survivors);
        }
    }

    /// Stops the child and what it started, through the one stop sequence
    /// (`spawn::terminate`): stop_signal, up to stop_timeout, SIGKILL.
    async fn stop_child(
        &mut self,
        child: &mut Child,
        pid_path: Option<&std::path::Path>,
    ) -> StopReport {
        self.set(|s| s.state = State::Stopping);
        let how = How {
            signal: self.spec.stop_signal,
            grace: self.spec.stop_timeout,
        };
        tracing::info!(process = %self.name(), "stopping pid {} with {} (grace {})", child.pid, how.signal.as_str(), humantime::format_duration(how.grace));
        let target = Target {
            group: Some(child.pid),
            strays: Some(self.mark()),
        };
        let report = spawn::terminate(target, how, async {
            child.wait().await;
        })
        .await;
        if report.killed {
            tracing::warn!(process = %self.name(), "{}", killed_message(&how));
        }
        self.log_stop_findings(&report);
        if let Some(p) = pid_path {
            let _ = std::fs::remove_file(p);
        }
        report
    }
}

/// What a stop that needed SIGKILL says, in `status` and `stackctl.log`.
pub fn killed_message(how: &How) -> String {
    format!(
        "did not exit within its stop_timeout of {} after {}: killed with SIGKILL",
        humantime::format_duration(how.grace),
        how.signal.as_str()
    )
}

/// Whether an exit restarts the process.
fn why_restart(spec: &ProcessSpec, exit: Exit) -> bool {
    fsm::wants_restart(spec.restart, exit)
}

/// Waits until the log pump has read its pipe to the end (every writer
/// closed it) and written it all, so that everything the process wrote is
/// in its log. Bounded: a descendant that left the group may hold the
/// pipe open.
async fn drain(pump: Option<&Pump>) {
    if let Some(p) = pump {
        let _ = tokio::time::timeout(Duration::from_secs(2), p.finished()).await;
    }
}

/// `text` (a probe's failure) with the value of every variable the probe's
/// `template` names put back as `${NAME}`. The expanded probe is used, never
/// shown: its URL or command may carry a token from an env file, and
/// environment values never appear in a message, a status or the log
/// (SPEC; STYLE habit 5). Values shorter than 3 bytes are left alone: they
/// are no secret, and replacing them would garble the text.
fn redact(text: &str, template: &ProbeKind, env: &[(String, String)]) -> String {
    let texts: Vec<&str> = match template {
        ProbeKind::Http(t) | ProbeKind::Tcp(t) => vec![t.as_str()],
        ProbeKind::Exec(crate::config::CommandSpec::Shell(t)) => vec![t.as_str()],
        ProbeKind::Exec(crate::config::CommandSpec::Argv(v)) => {
            v.iter().map(String::as_str).collect()
        }
        ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => Vec::new(),
    };
    let mut names: Vec<&str> = Vec::new();
    for t in texts {
        let mut rest = t;
        while let Some(i) = rest.find("${") {
            rest = &rest[i + 2..];
            let len = rest
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(rest.len());
            if len > 0 && !names.contains(&&rest[..len]) {
                names.push(&rest[..len]);
            }
        }
    }
    let mut values: Vec<(&str, &str)> = names
        .iter()
        .filter_map(|n| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
        .filter(|(_, v)| v.len() >= 3)
        .collect();
    // Longest first, so a value that holds another is replaced whole.
    values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for (k, v) in values {
        out = out.replace(v, &format!("${{{k}}}"));
    }
    out
}

/// The readiness gate for a service.
async fn gate(
    spec: &crate::config::ReadySpec,
    ctx: &ProbeCtx,
    watch: Option<&LogWatch>,
    notify: Option<&NotifySocket>,
    said: mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    let (kind, timeout) = (spec.probe.clone(), spec.timeout);
    let what = format!("readiness gate `{kind}`");
    match kind {
        ProbeKind::Alive(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        ProbeKind::Log(_) => match watch {
            Some(w) => tokio::time::timeout(timeout, w.matched())
                .await
                .map_err(|_| {
                    format!(
                        "{what} timed out after {}: no matching line",
                        humantime::format_duration(timeout)
                    )
                }),
            None => Err(format!("{what}: no log watch")),
        },
        ProbeKind::Notify => {
            let Some(n) = notify else {
                return Err(format!("{what}: no notify socket"));
            };
            let wait = async {
                loop {
                    match n.recv().await {
                        Ok(msgs) => {
                            for m in &msgs {
                                if let NotifyMsg::Status(text) = m {
                                    let _ = said.send(text.clone());
                                }
                            }
                            if msgs.contains(&NotifyMsg::Ready) {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(format!("{what}: {e}")),
                    }
                }
            };
            tokio::time::timeout(timeout, wait)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "{what} timed out after {}: no READY=1 on NOTIFY_SOCKET",
                        humantime::format_duration(timeout)
                    ))
                })
        }
        ProbeKind::Http(_) | ProbeKind::Tcp(_) | ProbeKind::Exec(_) => probe::wait_ready(spec, ctx)
            .await
            .map_err(|f| format!("{what} failed: {f}")),
    }
}

async fn recv_notify(n: Option<&NotifySocket>) -> Vec<NotifyMsg> {
    match n {
        Some(n) => n.recv().await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

/// A command's argv with `${VAR}` templates expanded from `env`.
pub fn expand_argv(cmd: &crate::config::CommandSpec, env: &[(String, String)]) -> Vec<String> {
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let expanded = match cmd {
        crate::config::CommandSpec::Shell(s) => crate::config::CommandSpec::Shell(
            crate::config::env::expand(s, &lookup).unwrap_or_else(|_| s.clone()),
        ),
        crate::config::CommandSpec::Argv(v) => crate::config::CommandSpec::Argv(
            v.iter()
                .map(|s| crate::config::env::expand(s, &lookup).unwrap_or_else(|_| s.clone()))
                .collect(),
        ),
    };
    spawn::argv(&expanded)
}

fn log_error(state: &StateDir, name: &str, e: std::io::Error) -> String {
    format!(
        "could not open its log {}: {e}",
        state.log_file(name).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_puts_back_the_names_of_the_probes_variables() {
        let env = vec![
            ("PORT".to_string(), "18000".to_string()),
            ("TOKEN".to_string(), "s3cr3t".to_string()),
            ("OTHER".to_string(), "unrelated".to_string()),
            ("SHORT".to_string(), "1".to_string()),
        ];
        let t = ProbeKind::Http("http://127.0.0.1:${PORT}/h?t=${TOKEN}&s=${SHORT:-x}".into());
        assert_eq!(
            redact(
                "HTTP 500 from http://127.0.0.1:18000/h?t=s3cr3t&s=1 (unrelated)",
                &t,
                &env
            ),
            "HTTP 500 from http://127.0.0.1:${PORT}/h?t=${TOKEN}&s=1 (unrelated)"
        );
    }
}
