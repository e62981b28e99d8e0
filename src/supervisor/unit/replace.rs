//! Overlapping restarts: a ready service with `listen` is restarted by
//! starting its successor on the same sockets, waiting for the
//! successor's own gate, and only then stopping the old process — so no
//! connection is refused and no request is cut short.
//!
//! Owns: the overlap, from the restart request to the one process left.
//! Must not touch: the steps it reuses (`attempt`: pre_start, spawn, gate,
//! run; `stop`: the stop sequence), the sockets (`listen`).
//!
//! States and transitions (the unit's published state stays `running`
//! throughout: the service serves all along):
//!
//! ```text
//!  running(old) ──restart / redefine──► replacing: old serves; successor's
//!                                       pre_start → spawn (same fds) → gate
//!    replacing ──gate passes──► retiring: pid (status, pid file, record)
//!                               = successor; old gets stop_signal and its
//!                               whole stop_timeout ──► running(successor);
//!                               the restart is answered ok
//!    replacing ──successor fails (pre_start, exit, gate)──► running(old);
//!                               the successor is stopped, the restart
//!                               fails naming why
//!    replacing ──restart──► replacing (that successor stopped, another)
//!    replacing ──stop──► both stopped ──► stopped
//! ```
//!
//! While the two overlap, each stop or clean-up of one spares the other's
//! group (`Unit::overlap`): both carry the instance's mark. The record kept
//! with the anchor names the serving pid (the old one until the successor
//! is ready, then the successor), so a supervisor killed midway is
//! followed by one that keeps that process and stops the other
//! (`Supervisor::adopt`): exactly one is left. A `notify` successor gets
//! its own `NOTIFY_SOCKET` (the other of two paths), handed to the anchor
//! once it takes over.

use crate::supervisor::record::AfterStop;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::attempt::{log_watch, Phase};
use super::gate::Gate;
use super::{Child, Cmd, End, StartFailure, Unit};
use crate::config::{Kind, ProbeKind, ProcessSpec, ReadySpec};
use crate::probe::{NotifySocket, ProbeCtx};
use crate::spawn::StopReport;
use crate::status::State;

use super::super::fsm::Backoff;
use super::super::record;

/// The old process of an overlapping restart, still serving.
pub(in crate::supervisor) struct Serving {
    child: Child,
    pub(super) notify: Option<NotifySocket>,
}

impl Serving {
    pub(super) fn new(child: Child) -> Box<Serving> {
        Box::new(Serving {
            child,
            notify: None,
        })
    }
}

/// A successor that passed its gate, with what its run needs.
struct Ready {
    child: Child,
    notify: Option<NotifySocket>,
    env: Vec<(String, String)>,
    ready: Option<ReadySpec>,
}

/// How a successor ended up.
enum Successor {
    /// Ready: it takes over.
    Ready(Box<Ready>),
    /// It could not start or become ready; the old process goes on.
    Failed(String),
    /// A restart was asked for meanwhile: it was stopped; another one.
    Again,
    /// A stop was asked for (these replies wait), or the supervisor goes:
    /// it was stopped; the old one is next.
    Stop(Vec<oneshot::Sender<StopReport>>),
}

impl Unit {
    /// Whether a restart of this unit's ready process overlaps.
    fn overlaps(&self) -> bool {
        self.spec.kind == Kind::Service && !self.spec.listen.is_empty()
    }

    /// A command that arrives while the process runs ready: `Ok` when it
    /// is a restart (or a redefinition) to carry out by replacement (its
    /// reply now waits for the outcome); anything else is handed back.
    pub(super) fn wants_replace(&mut self, cmd: Option<Cmd>) -> Result<(), Option<Cmd>> {
        match self.redefined(cmd) {
            Some(Cmd::Restart { reply }) if self.overlaps() && !self.ctx.closing() => {
                self.wanted = true;
                self.waiters.push(reply);
                tracing::info!(process = %self.name(), "restarting on request: the new process starts on the same sockets before the old one stops");
                Ok(())
            }
            other => Err(other),
        }
    }

    /// A redefinition takes the new definition and becomes a restart.
    pub(super) fn redefined(&mut self, cmd: Option<Cmd>) -> Option<Cmd> {
        match cmd {
            Some(Cmd::Redefine { spec, reply }) => {
                self.spec = spec;
                Some(Cmd::Restart { reply })
            }
            other => other,
        }
    }

    /// Replaces `old` (see the module doc), then carries on with whichever
    /// process is left.
    pub(super) async fn replace(&mut self, old: Box<Serving>) -> End {
        let Serving {
            child: mut old,
            notify: old_notify,
        } = *old;
        let pid_path = self.ctx.state.pid_file(&self.inst.name);
        loop {
            self.overlap = Some(old.pid);
            let outcome = Box::pin(self.successor()).await;
            self.overlap = None;
            match outcome {
                Successor::Again => continue,
                Successor::Ready(r) => {
                    let Ready {
                        child: new,
                        notify,
                        env,
                        ready,
                    } = *r;
                    let took = new.spawned.elapsed();
                    self.take_over(&new, notify.as_ref());
                    // The old one finishes what it serves, as any stop.
                    self.overlap = Some(new.pid);
                    tracing::info!(process = %self.name(), "pid {} ready in {:.3}s; stopping pid {}", new.pid, took.as_secs_f64(), old.pid);
                    let _ = Box::pin(self.stop_child(&mut old, None, AfterStop::Down)).await;
                    self.overlap = None;
                    drop(old_notify);
                    // A restart begins a fresh life.
                    self.backoff = Backoff::new(self.spec.max_restarts, self.spec.restart_window);
                    self.answer_waiters(&Ok(()));
                    // Had it exited while the old one drained, its exit is
                    // kept and seen at once.
                    return self
                        .carry_on(new, Phase::Run, &pid_path, env, ready, notify)
                        .await;
                }
                Successor::Failed(why) => {
                    let reason = format!(
                        "the new process {why}; the old one (pid {}) goes on serving",
                        old.pid
                    );
                    tracing::warn!(process = %self.name(), "restart failed: {reason}");
                    self.set(|s| s.message = Some(format!("restart failed: {why}")));
                    self.answer_waiters(&Err(StartFailure {
                        reason: reason.clone(),
                    }));
                    let env = self.env(old_notify.as_ref());
                    let ready = self.expanded_ready(&env).ok().flatten();
                    return self
                        .carry_on(old, Phase::Run, &pid_path, env, ready, old_notify)
                        .await;
                }
                Successor::Stop(replies) => {
                    let report =
                        Box::pin(self.stop_child(&mut old, Some(&pid_path), AfterStop::Down)).await;
                    drop(old_notify);
                    return End::Stopped(replies, report);
                }
            }
        }
    }

    /// Starts a successor next to the serving process and waits for its
    /// gate (commands meanwhile as during any gate; a start is answered at
    /// once: the old one serves).
    async fn successor(&mut self) -> Successor {
        let notify = match self.successor_notify() {
            Ok(n) => n,
            Err(why) => return Successor::Failed(why),
        };
        let env = self.env(notify.as_ref());
        let ready = match self.expanded_ready(&env) {
            Ok(r) => r,
            Err(end) => return self.cut_short(end),
        };
        let listen = match self.ctx.listeners.ensure(&self.spec, &self.ctx.anchor) {
            Ok(keys) => keys,
            Err(why) => return Successor::Failed(why),
        };
        if let Err(end) = self.pre_start(&env, 0).await {
            return self.cut_short(end);
        }
        let command = self.spec.command.clone();
        let watch = log_watch(ready.as_ref());
        let mut child = match self.spawn_child(&command, &env, watch, &listen, None).await {
            Ok(c) => c,
            Err(why) => return Successor::Failed(why),
        };
        if let Some(n) = &notify {
            n.accept_session(child.pid);
        }
        tracing::info!(process = %self.name(), "spawned pid {} next to pid {}: {}", child.pid, self.overlap.unwrap_or_default(), self.spec.command);
        if let Some(r) = &ready {
            let ctx = ProbeCtx {
                cwd: self.spec.cwd.clone(),
                env: env.clone(),
            };
            let spec = self.spec.clone();
            let g = Gate {
                ready: r,
                template: spec.ready.as_ref().map_or(&r.probe, |t| &t.probe),
                ctx: &ctx,
                notify: notify.as_ref(),
            };
            if let Err(end) = self.await_gate(&mut child, None, g, true).await {
                return self.cut_short(end);
            }
        }
        Successor::Ready(Box::new(Ready {
            child,
            notify,
            env,
            ready,
        }))
    }

    /// What an attempt's early end means for a successor.
    fn cut_short(&mut self, end: End) -> Successor {
        match end {
            End::NotReady(why) => Successor::Failed(why),
            End::Restart | End::Replace(_) => Successor::Again,
            End::Stopped(replies, _) => Successor::Stop(replies),
            End::Completed | End::Exited { .. } => {
                Successor::Failed("ended before it was ready".into())
            }
        }
    }

    /// The successor's `NOTIFY_SOCKET` for a `notify` gate: the other of
    /// the instance's two paths (the old process keeps its own), not yet
    /// handed to the anchor.
    fn successor_notify(&mut self) -> Result<Option<NotifySocket>, String> {
        let Some(ProbeKind::Notify) = self.spec.ready.as_ref().map(|r| &r.probe) else {
            return Ok(None);
        };
        let primary = self.ctx.state.notify_socket(&self.inst.name);
        let current = self.notify_path.as_ref().and_then(|p| p.file_name());
        let path = if current.is_some() && current == primary.file_name() {
            self.ctx
                .state
                .notify_socket(&format!("{}.next", self.inst.name))
        } else {
            primary
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        NotifySocket::bind(&path)
            .map(Some)
            .map_err(|e| format!("could not create its NOTIFY_SOCKET: {e}"))
    }

    /// The successor is ready: it is the instance's process now (pid
    /// file, status, record, notify socket with the anchor).
    fn take_over(&mut self, new: &Child, notify: Option<&NotifySocket>) {
        self.write_pid_file(new);
        if let Some(n) = notify {
            self.ctx
                .anchor
                .hold(&record::notify_key(&self.inst.name), n);
            self.notify_path = Some(n.path().to_path_buf());
        }
        let (pid, since) = (new.pid, new.spawned);
        self.set(|s| {
            s.state = State::Running;
            s.pid = Some(pid);
            s.since = Some(since);
            s.ready = true;
            s.exit = None;
            s.message = None;
        });
    }
}

/// The handle's side: a new definition for a running unit.
pub(super) fn redefine_cmd(spec: Arc<ProcessSpec>) -> (Cmd, oneshot::Receiver<super::StartResult>) {
    let (reply, rx) = oneshot::channel();
    (Cmd::Redefine { spec, reply }, rx)
}
