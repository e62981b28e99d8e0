//! One attempt of a unit: prepare, spawn through the anchor, wait for the
//! readiness gate, run (health checks, notify messages), until it ends.
//!
//! Owns: the steps of an attempt and what each waits on. Must not touch:
//! what happens after an attempt ends (the lifecycle in the parent
//! module), the stop sequence (`stop`).

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
    /// Spawned, its gate not passed.
    Gate,
    /// Ready.
    Run,
    /// A task, running.
    Task,
}

impl Unit {
    /// One fresh attempt: spawn, gate, run, until it ends.
    pub(super) async fn attempt(&mut self) -> End {
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
        let watch = match ready.as_ref().map(|r| &r.probe) {
            Some(ProbeKind::Log(re)) => Some(re.as_str().to_string()),
            _ => None,
        };
        let command = self.spec.command.clone();
        let child = match self.spawn_child(&command, &env, watch, None).await {
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
            return self.run_task(child, pid_path).await;
        }
        let ctx = ProbeCtx {
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
            if let Err(end) = self.await_gate(&mut child, pid_path, g).await {
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
            self.set(|s| {
                s.state = State::Running;
                s.ready = true;
            });
            self.answer_waiters(&Ok(()));
        }
        self.run_service(child, pid_path, &ctx, notify.as_ref())
            .await
    }

    /// Runs the `pre_start` commands in order, each in its own session with
    /// its output in the log, each within the task timeout (10 minutes for
    /// a service); a stop request meanwhile stops it and ends the attempt.
    async fn pre_start(&mut self, env: &[(String, String)]) -> Result<(), End> {
        let cmds = self.spec.pre_start.clone();
        let limit = self.spec.timeout.unwrap_or(Duration::from_secs(600));
        for (i, cmd) in cmds.iter().enumerate() {
            let what = format!("pre_start {}", i + 1);
            self.doing(format!("pre_start `{cmd}`"), Some(limit));
            let mut child = self
                .spawn_child(cmd, env, None, Some(what))
                .await
                .map_err(|e| End::NotReady(format!("pre_start `{cmd}`: {e}")))?;
            let deadline = tokio::time::sleep(limit);
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
                    cmd = self.rx.recv() => {
                        if let Some(end) = self.on_command(cmd, &mut child, None, false).await {
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
        }
        Ok(())
    }

    /// Asks the anchor to spawn `cmd` (templates expanded from `env`), its
    /// output into this instance's log; `watch`: a log gate's regex;
    /// `what`: what it is, when not the process itself (its run markers).
    async fn spawn_child(
        &mut self,
        cmd: &CommandSpec,
        env: &[(String, String)],
        watch: Option<String>,
        what: Option<String>,
    ) -> Result<Child, String> {
        let logs = &self.ctx.logs;
        let req = SpawnReq {
            id: 0,
            instance: self.inst.name.clone(),
            argv: gate::expand_argv(cmd, env),
            cwd: self.spec.cwd.clone(),
            env: env.to_vec(),
            log: LogTarget {
                path: self.ctx.state.log_file(&self.inst.name),
                max_size: logs.max_size,
                keep: logs.keep,
                timestamps: logs.timestamps,
            },
            watch,
            mark: logs.markers.then_some(RunMark {
                attempt: self.attempts,
                what,
            }),
        };
        let s =
            self.ctx.anchor.spawn(req).await.map_err(|e| {
                format!("could not run `{cmd}` in {}: {e}", self.spec.cwd.display())
            })?;
        Ok(Child {
            pid: s.pid,
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
    async fn await_gate(
        &mut self,
        child: &mut Child,
        pid_path: &Path,
        g: Gate<'_>,
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

    /// Handles a command that arrives while the child runs; `Some` ends
    /// the attempt. `ready`: a start request is answered at once.
    pub(super) async fn on_command(
        &mut self,
        cmd: Option<Cmd>,
        child: &mut Child,
        pid_path: Option<&Path>,
        ready: bool,
    ) -> Option<End> {
        match cmd {
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
            Some(Cmd::Restart { reply }) if self.ctx.closing() => {
                let _ = reply.send(Err(closing_failure()));
                None
            }
            Some(Cmd::Restart { reply }) => {
                self.wanted = true;
                self.waiters.push(reply);
                tracing::info!(process = %self.name(), "restarting on request");
                let _ = self.stop_child(child, pid_path).await;
                Some(End::Restart)
            }
            Some(Cmd::Stop { reply }) => {
                self.wanted = false;
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
}
