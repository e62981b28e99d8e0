//! One attempt of a unit: prepare, spawn through the anchor, wait for the
//! readiness gate, run (health checks, notify messages), until it ends.
//!
//! Owns: the steps of an attempt and what each waits on. Must not touch:
//! what happens after an attempt ends (the lifecycle in the parent
//! module), the stop sequence (`stop`).

use crate::supervisor::record::AfterStop;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::activity;
use super::gate::{self, redact, Gate};
use super::{closing_failure, Child, Cmd, End, Unit};
use crate::anchor::proto::{LogTarget, RunMark, SpawnReq};
use crate::config::{CommandSpec, Kind, ProbeKind, ReadySpec};
use crate::probe::{self, NotifyMsg, NotifySocket, ProbeCtx};
use crate::spawn::{self, identity::PidRecord, Exit, How, Target};
use crate::status::State;

/// Where a resumed process stands.
pub(super) enum Phase {
    /// Running `pre_start` command `n` (the instance's command not yet
    /// spawned).
    PreStart(usize),
    /// Spawned, its gate not passed.
    Gate,
    /// Ready.
    Run,
    /// A task, running.
    Task,
}

/// The regex the anchor watches for a `log` gate.
pub(super) fn log_watch(ready: Option<&ReadySpec>) -> Option<String> {
    match ready.map(|r| &r.probe) {
        Some(ProbeKind::Log(re)) => Some(re.as_str().to_string()),
        _ => None,
    }
}

impl Unit {
    /// One fresh attempt: spawn, gate, run, until it ends.
    pub(super) async fn attempt(&mut self) -> End {
        self.begin_attempt();
        let notify = match self.notify_socket() {
            Ok(n) => n,
            Err(end) => return end,
        };
        self.attempt_with(notify, None).await
    }

    /// An attempt with its notify socket, from its start or (`left`) from
    /// the `pre_start` step a killed supervisor left running: that step is
    /// waited for, never run twice, and the attempt goes on from the next.
    pub(super) async fn attempt_with(
        &mut self,
        notify: Option<NotifySocket>,
        left: Option<(usize, Child)>,
    ) -> End {
        let (env, generation) = self.env_and_generation(notify.as_ref());
        self.generation = generation;
        let ready = match self.expanded_ready(&env) {
            Ok(r) => r,
            Err(end) => return end,
        };
        if left.is_none() {
            if let Some(reason) = Box::pin(self.gate_already_passes(ready.as_ref(), &env)).await {
                return End::NotReady(reason);
            }
        }
        let listen = match self.ctx.listeners.ensure(&self.spec, &self.ctx.anchor) {
            Ok(keys) => keys,
            Err(reason) => return End::NotReady(reason),
        };
        let first = match left {
            Some((n, child)) => {
                if let Err(end) = Box::pin(self.finish_step(n, child)).await {
                    return end;
                }
                n + 1
            }
            None => 0,
        };
        if first < self.spec.pre_start.len() {
            if let Err(end) = Box::pin(self.pre_start(&env, first)).await {
                return end;
            }
        }
        let watch = log_watch(ready.as_ref());
        let command = self.spec.command.clone();
        let spawned = Box::pin(self.spawn_child(&command, &env, watch, &listen, None)).await;
        let child = match spawned {
            Ok(c) => c,
            Err(reason) => return End::NotReady(reason),
        };
        // Only the new instance's own processes may now pass its notify gate.
        if let Some(n) = &notify {
            n.accept_session(child.pid);
        }
        let pid_path = self.record(&child);
        let phase = if self.spec.kind == Kind::Task {
            Phase::Task
        } else {
            Phase::Gate
        };
        self.carry_on(child, phase, &pid_path, env, ready, notify)
            .await
    }

    /// From a spawned child on, in `phase`: the gate, then running.
    pub(super) async fn carry_on(
        &mut self,
        mut child: Child,
        phase: Phase,
        pid_path: &Path,
        env: Vec<(String, String)>,
        ready: Option<ReadySpec>,
        notify: Option<NotifySocket>,
    ) -> End {
        if let Phase::Task = phase {
            // (The environment is not needed while a task runs.)
            drop((env, ready));
            return self.run_task(child, pid_path).await;
        }
        let mut ctx = ProbeCtx {
            cwd: self.spec.cwd.clone(),
            env,
        };
        if let (Phase::Gate, Some(r)) = (&phase, &ready) {
            let spec = self.spec.clone();
            let g = Gate {
                ready: r,
                template: spec.ready.as_ref().map_or(&r.probe, |t| &t.probe),
                ctx: &ctx,
                notify: notify.as_ref(),
            };
            if let Err(end) = Box::pin(self.await_gate(&mut child, Some(pid_path), g, false)).await
            {
                return end;
            }
        }
        if let Phase::Gate = phase {
            // Ready. (No gate: ready as soon as spawned, SPEC. Not raced
            // against the exit: a process that exits at once would otherwise
            // be "failed before it was ready" at random, skipping its
            // restart policy.)
            self.been_ready = true;
            let took = child.spawned.elapsed();
            tracing::info!(process = %self.name(), "ready in {:.3}s", took.as_secs_f64());
            let note = self.note.take();
            self.set(|s| {
                s.state = State::Running;
                s.ready = true;
                if note.is_some() {
                    s.message = note;
                }
            });
            self.answer_waiters(&Ok(()));
        }
        // While it runs, its environment serves its health checks only:
        // without one it is let go (a few KB a unit, for as long as it runs).
        drop(ready);
        if self.spec.health.is_none() {
            ctx.env = Vec::new();
        }
        match self
            .run_service(child, pid_path, &ctx, notify.as_ref())
            .await
        {
            // The old process of an overlapping restart keeps its socket.
            End::Replace(mut old) => {
                old.notify = notify;
                End::Replace(old)
            }
            end => end,
        }
    }

    /// Runs the `pre_start` commands from the `first`th on, in order, each
    /// in its own session with its output in the log, each within the task
    /// timeout (10 minutes for a service); a stop request meanwhile stops
    /// it and ends the attempt.
    pub(super) async fn pre_start(
        &mut self,
        env: &[(String, String)],
        first: usize,
    ) -> Result<(), End> {
        let cmds = self.spec.pre_start.clone();
        let limit = self.spec.timeout.unwrap_or(Duration::from_secs(600));
        for (n, cmd) in cmds.iter().enumerate().skip(first) {
            let step = u32::try_from(n).ok();
            self.doing(format!("pre_start `{cmd}`"), Some(limit));
            let child = self
                .spawn_child(cmd, env, None, &[], step)
                .await
                .map_err(|e| End::NotReady(format!("pre_start `{cmd}`: {e}")))?;
            self.finish_step(n, child).await?;
        }
        Ok(())
    }

    /// Waits for `pre_start` step `n`'s process to end, within the task
    /// timeout counted from its spawn; clears its group; `Ok` when it
    /// succeeded.
    async fn finish_step(&mut self, n: usize, mut child: Child) -> Result<(), End> {
        let cmd = self
            .spec
            .pre_start
            .get(n)
            .map_or_else(|| format!("#{n}"), ToString::to_string);
        let limit = self.spec.timeout.unwrap_or(Duration::from_secs(600));
        let deadline = tokio::time::sleep(limit.saturating_sub(child.spawned.elapsed()));
        tokio::pin!(deadline);
        let exit = loop {
            tokio::select! {
                exit = child.wait() => break exit,
                () = &mut deadline => {
                    let target = Target { group: Some(child.pid), strays: None, spare: &[] };
                    let _ = spawn::terminate(target, How::KILL, async {
                        child.wait().await;
                    }).await;
                    self.ctx.anchor.ack(child.pid);
                    return Err(End::NotReady(format!(
                        "pre_start `{cmd}` did not finish within {}",
                        humantime::format_duration(limit)
                    )));
                }
                c = self.rx.recv() => {
                    if let Some(end) = self.on_command(c, &mut child, None, false).await {
                        return Err(end);
                    }
                }
            }
        };
        // Nothing a pre_start command left in its group may linger.
        let target = Target {
            group: Some(child.pid),
            strays: None,
            spare: &[],
        };
        let _ = spawn::terminate(target, How::KILL, async {}).await;
        self.ctx.anchor.ack(child.pid);
        if !exit.success() {
            return Err(End::NotReady(format!("pre_start `{cmd}` {exit}")));
        }
        Ok(())
    }

    /// Asks the anchor to spawn `cmd` (templates expanded from `env`), its
    /// output into this instance's log; `watch`: a log gate's regex;
    /// `listen`: the held sockets it gets at fds 3… (with `LISTEN_FDS` and
    /// `LISTEN_FDNAMES`; the anchor's trampoline adds `LISTEN_PID`);
    /// `step`: the `pre_start` command it is, when not the instance's own
    /// (its run markers say so).
    pub(super) async fn spawn_child(
        &mut self,
        cmd: &CommandSpec,
        env: &[(String, String)],
        watch: Option<String>,
        listen: &[String],
        step: Option<u32>,
    ) -> Result<Child, String> {
        let logs = &self.ctx.logs;
        let mut env = env.to_vec();
        if !listen.is_empty() {
            let names: Vec<&str> = self.spec.listen.iter().map(|l| l.name.as_str()).collect();
            env.push(("LISTEN_FDS".into(), listen.len().to_string()));
            env.push(("LISTEN_FDNAMES".into(), names.join(":")));
        }
        let req = SpawnReq {
            id: 0,
            instance: self.inst.name.clone(),
            argv: gate::expand_argv(cmd, &env),
            cwd: self.spec.cwd.clone(),
            env,
            log: LogTarget {
                path: self.ctx.state.log_file(&self.inst.name),
                max_size: logs.max_size,
                keep: logs.keep,
                timestamps: logs.timestamps,
            },
            watch,
            listen: listen.to_vec(),
            step,
            mark: logs.markers.then_some(RunMark {
                attempt: self.attempts,
                what: step.map(|n| format!("pre_start {}", n + 1)),
            }),
        };
        let s =
            self.ctx.anchor.spawn(req).await.map_err(|e| {
                format!("could not run `{cmd}` in {}: {e}", self.spec.cwd.display())
            })?;
        Ok(Child {
            pid: s.pid,
            start_ticks: s.start_ticks,
            exit_rx: s.exit,
            exited: None,
            matched: Some(s.matched),
            spawned: Instant::now(),
        })
    }

    /// A new attempt begins (its number is in its run markers): starting,
    /// nothing known yet.
    fn begin_attempt(&mut self) {
        self.attempts += 1;
        self.doing("starting", None);
        self.set(|s| {
            s.state = State::Starting;
            s.pid = None;
            s.ready = false;
            s.exit = None;
            s.message = None;
        });
    }

    /// The `NOTIFY_SOCKET` of a `notify` gate, bound before the spawn and
    /// left with the anchor too (it outlives this supervisor).
    fn notify_socket(&mut self) -> Result<Option<NotifySocket>, End> {
        let Some(ProbeKind::Notify) = self.spec.ready.as_ref().map(|r| &r.probe) else {
            return Ok(None);
        };
        let path = self.ctx.state.notify_socket(&self.inst.name);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let sock = NotifySocket::bind(&path)
            .map_err(|e| End::NotReady(format!("could not create its NOTIFY_SOCKET: {e}")))?;
        self.ctx
            .anchor
            .hold(&super::record::notify_key(&self.inst.name), &sock);
        self.notify_path = Some(sock.path().to_path_buf());
        Ok(Some(sock))
    }

    /// The readiness gate with this instance's variables expanded.
    pub(super) fn expanded_ready(
        &self,
        env: &[(String, String)],
    ) -> Result<Option<ReadySpec>, End> {
        let Some(r) = self.spec.ready.clone() else {
            return Ok(None);
        };
        probe::expand(&r.probe, env)
            .map(|probe| Some(ReadySpec { probe, ..r }))
            .map_err(|f| End::NotReady(format!("its readiness probe: {f}")))
    }

    /// Writes the pid file of a fresh child and publishes its pid.
    fn record(&self, child: &Child) -> std::path::PathBuf {
        let pid_path = self.write_pid_file(child);
        let pid = child.pid;
        tracing::info!(process = %self.name(), "spawned pid {pid}: {}", self.spec.command);
        let generation = self.generation;
        self.set(|s| {
            s.pid = Some(pid);
            s.since = Some(Instant::now());
            s.env_generation = Some(generation);
        });
        pid_path
    }

    /// Writes `child`'s pid (and its identity) as this instance's pid
    /// file; where it is.
    pub(super) fn write_pid_file(&self, child: &Child) -> std::path::PathBuf {
        let pid_path = self.ctx.state.pid_file(&self.inst.name);
        let pid = child.pid;
        // The anchor read its start time (0: it could not, the process
        // was gone already: its exit is on the way).
        let rec = match child.start_ticks {
            0 => PidRecord::capture(pid, &self.inst.name, self.ctx.supervisor_pid),
            ticks => PidRecord::spawned(pid, ticks, &self.inst.name, self.ctx.supervisor_pid),
        };
        match rec {
            Ok(rec) => {
                if let Err(e) = rec.write(&pid_path) {
                    tracing::error!(process = %self.name(), "could not write {}: {e}", pid_path.display());
                }
            }
            // Gone already: its exit is on the way.
            Err(e) => {
                tracing::debug!(process = %self.name(), "no identity for pid {pid}: {e}")
            }
        }
        pid_path
    }

    /// A `tcp`/`http` gate that passes before the process even exists is
    /// answered by someone else (a server left over from before stackctl
    /// took over, holding the port): the new process would fail to bind
    /// while `start` reported it ready. Pool members are exempt, since they
    /// may share a port (`SO_REUSEPORT`).
    async fn gate_already_passes(
        &self,
        ready: Option<&ReadySpec>,
        env: &[(String, String)],
    ) -> Option<String> {
        let r = ready?;
        if self.inst.index.is_some() || !matches!(r.probe, ProbeKind::Tcp(_) | ProbeKind::Http(_)) {
            return None;
        }
        // Its own held socket answers before it runs (the kernel queues the
        // connection); nobody else can hold those addresses.
        if !self.spec.listen.is_empty() {
            return None;
        }
        let ctx = ProbeCtx {
            cwd: self.spec.cwd.clone(),
            env: env.to_vec(),
        };
        probe::check(&r.probe, &ctx, Duration::from_millis(500))
            .await
            .ok()?;
        // Shown as probed, with a URL's userinfo and query hidden.
        let shown = match &self.spec.ready {
            Some(t) => redact(&r.probe.to_string(), &t.probe, env),
            None => String::new(),
        };
        Some(format!(
            "its readiness gate `{shown}` already passes before it was started: something else answers there (a server left running from before?); find it with `ss -ltnp`, stop it, and start again"
        ))
    }

    /// Waits for the readiness gate while watching the child and commands.
    /// `pid_path`: the pid file to remove when it ends (none for the
    /// successor in an overlapping restart); `serving`: an older process
    /// of the instance serves meanwhile (a start request is answered at
    /// once).
    pub(super) async fn await_gate(
        &mut self,
        child: &mut Child,
        pid_path: Option<&Path>,
        g: Gate<'_>,
        serving: bool,
    ) -> Result<(), End> {
        // `STATUS=` sent while the gate waits for `READY=1` is shown at once
        // (as systemd does), through this channel: the gate cannot touch
        // the status itself while the unit is borrowed by the select below.
        let (said_tx, mut said_rx) = mpsc::unbounded_channel::<String>();
        // What each failed attempt saw, for the operator watching (`activity`).
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
        self.doing(
            activity::gate_waiting(g.template, &g.ready.probe, &g.ctx.env),
            Some(g.ready.timeout),
        );
        let matched = child.matched.take();
        let gate = gate::gate(&g, matched, said_tx, seen_tx);
        tokio::pin!(gate);
        let result = loop {
            tokio::select! {
                Some(seen) = seen_rx.recv() => self.seeing(seen),
                Some(said) = said_rx.recv() => {
                    self.seeing(activity::notify_said(&said));
                    self.set(|s| s.message = Some(said));
                }
                exit = child.wait() => {
                    self.cleanup_after_exit(child, pid_path).await;
                    return Err(End::NotReady(format!("{exit} before it was ready")));
                }
                cmd = self.rx.recv() => {
                    if let Some(end) = self.on_command(cmd, child, pid_path, serving).await {
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
            let reason = match &self.spec.ready {
                Some(r) => redact(&reason, &r.probe, &g.ctx.env),
                None => reason,
            };
            let then = AfterStop::Failed {
                reason: reason.clone(),
            };
            let _ = self.stop_child(child, pid_path, then).await;
            return Err(End::NotReady(reason));
        }
        Ok(())
    }

    async fn run_task(&mut self, mut child: Child, pid_path: &Path) -> End {
        let limit = self.spec.timeout;
        self.doing("running", limit);
        let deadline = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut memory = super::memory::Watch::new(self.spec.memory_max);
        loop {
            tokio::select! {
                why = super::memory::over_limit(&mut memory, child.pid) => {
                    return Box::pin(self.memory_restart(&mut child, pid_path, why)).await;
                }
                exit = child.wait() => {
                    Box::pin(self.cleanup_after_exit(&child, Some(pid_path))).await;
                    let ran_for = child.spawned.elapsed();
                    return if exit.success() {
                        End::Completed
                    } else {
                        End::Exited { exit, ran_for, why: None }
                    };
                }
                () = &mut deadline => {
                    let d = limit.unwrap_or_default();
                    let reason = format!("did not finish within its timeout of {}", humantime::format_duration(d));
                    let then = AfterStop::Failed { reason: reason.clone() };
                    let _ = Box::pin(self.stop_child(&mut child, Some(pid_path), then)).await;
                    return End::NotReady(reason);
                }
                cmd = self.rx.recv() => {
                    if let Some(end) = Box::pin(self.on_command(cmd, &mut child, Some(pid_path), false)).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn run_service(
        &mut self,
        mut child: Child,
        pid_path: &Path,
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
        let mut memory = super::memory::Watch::new(self.spec.memory_max);
        loop {
            tokio::select! {
                why = super::memory::over_limit(&mut memory, child.pid) => {
                    return Box::pin(self.memory_restart(&mut child, pid_path, why)).await;
                }
                exit = child.wait() => {
                    Box::pin(self.cleanup_after_exit(&child, Some(pid_path))).await;
                    return End::Exited { exit, ran_for: child.spawned.elapsed(), why: None };
                }
                cmd = self.rx.recv() => {
                    // A service with `listen` is replaced, not stopped first.
                    let cmd = match self.wants_replace(cmd) {
                        Ok(()) => return End::Replace(super::replace::Serving::new(child)),
                        Err(cmd) => cmd,
                    };
                    if let Some(end) = Box::pin(self.on_command(cmd, &mut child, Some(pid_path), true)).await {
                        return end;
                    }
                }
                _ = tick.tick(), if health.is_some() => {
                    let Some(h) = &health else { continue };
                    match Box::pin(probe::check(&h.probe, ctx, h.timeout)).await {
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
                                let then = AfterStop::Policy { why: why.clone() };
                                let _ = Box::pin(self.stop_child(&mut child, Some(pid_path), then)).await;
                                let exit = child.exited.unwrap_or(Exit::Signal(15));
                                return End::Exited { exit, ran_for: child.spawned.elapsed(), why: Some(why) };
                            }
                        }
                    }
                }
                msgs = gate::recv_notify(notify) => {
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

    /// Stops a process whose group stayed over `memory_max`; its restart
    /// policy decides what follows, and `status` says why once it runs again.
    async fn memory_restart(&mut self, child: &mut Child, pid_path: &Path, why: String) -> End {
        tracing::warn!(process = %self.name(), "{why}: stopping it (its restart policy decides what follows)");
        self.note = Some(format!("restarted after: {why}"));
        let then = AfterStop::Policy { why: why.clone() };
        let _ = self.stop_child(child, Some(pid_path), then).await;
        let exit = child.exited.unwrap_or(Exit::Signal(15));
        End::Exited {
            exit,
            ran_for: child.spawned.elapsed(),
            why: Some(why),
        }
    }

    /// Handles a command that arrives while the child runs; `Some` ends
    /// the attempt. `ready`: a start request is answered at once.
    pub(super) async fn on_command(
        &mut self,
        cmd: Option<Cmd>,
        child: &mut Child,
        pid_path: Option<&Path>,
        ready: bool,
    ) -> Option<End> {
        match self.redefined(cmd) {
            Some(Cmd::Start { reply }) if ready => {
                self.wanted = true;
                self.persist();
                let _ = reply.send(Ok(()));
                None
            }
            Some(Cmd::Start { reply }) => {
                self.wanted = true;
                self.waiters.push(reply);
                None
            }
            // (A redefinition has become a restart by now.)
            Some(Cmd::Restart { reply } | Cmd::Redefine { reply, .. }) if self.ctx.closing() => {
                let _ = reply.send(Err(closing_failure()));
                None
            }
            Some(Cmd::Restart { reply } | Cmd::Redefine { reply, .. }) => {
                self.wanted = true;
                self.waiters.push(reply);
                tracing::info!(process = %self.name(), "restarting on request");
                let _ = self.stop_child(child, pid_path, AfterStop::Restart).await;
                Some(End::Restart)
            }
            Some(Cmd::Stop { reply }) => {
                self.wanted = false;
                let report = self.stop_child(child, pid_path, AfterStop::Down).await;
                Some(End::Stopped(vec![reply], report))
            }
            // It runs: nothing to rearm.
            Some(Cmd::Rearm { reply }) => {
                let _ = reply.send(());
                None
            }
            // The supervisor is going away: leave nothing behind.
            None => {
                let report = self.stop_child(child, pid_path, AfterStop::Down).await;
                Some(End::Stopped(vec![], report))
            }
        }
    }
}
