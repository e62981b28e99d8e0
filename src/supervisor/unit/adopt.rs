//! Taking up a unit where a previous supervisor left it: its process (still
//! the anchor's child, or its unacknowledged exit), its notify socket (held
//! by the anchor), and its record (state, restarts, crash-loop window,
//! what the operator wanted).
//!
//! Owns: turning what was left into the unit's state and the step its
//! lifecycle continues with. Must not touch: the registry (the supervisor
//! decides which units are adopted).

use crate::supervisor::record::AfterStop;
use std::os::fd::OwnedFd;
use std::time::{Instant, SystemTime};

use super::attempt::Phase;
use super::{Child, End, Next, Unit};
use crate::anchor::client::Adopted;
use crate::config::{Kind, ProbeKind};
use crate::probe::NotifySocket;
use crate::spawn::{identity, Exit};
use crate::status::State;

use super::super::fsm::Backoff;
use super::super::record::UnitRecord;

/// What a previous supervisor left of one instance.
#[derive(Debug, Default)]
pub struct Resume {
    /// Its process, if the anchor still has it (alive, or exited with
    /// nobody told).
    pub child: Option<Adopted>,
    pub record: Option<UnitRecord>,
    /// Its notify socket, held by the anchor.
    pub notify: Option<OwnedFd>,
}

/// A process taken up, and where it stands.
pub(in crate::supervisor) struct Resumed {
    child: Child,
    phase: Phase,
    notify: Option<NotifySocket>,
    /// It was being stopped: finish that, then this.
    stopping: Option<AfterStop>,
}

impl Unit {
    /// Takes up what was left; the step its lifecycle continues with, if
    /// it has one (else it waits for commands, as a fresh unit does).
    pub(super) async fn resume(&mut self, r: Resume) -> Option<Next> {
        if let Some(rec) = &r.record {
            self.wanted = rec.wanted;
            self.been_ready = rec.been_ready;
            self.backoff = Backoff::restore(
                self.spec.max_restarts,
                self.spec.restart_window,
                &rec.backoff,
                (Instant::now(), SystemTime::now()),
            );
            self.notify_path = rec.notify_path.clone();
            self.attempts = rec.attempts;
        }
        match r.child {
            Some(a) => Some(Next::Resume(Box::new(self.take_up(a, r.record, r.notify)))),
            None => self.without_process(r.record),
        }
    }

    /// A process the anchor still has.
    fn take_up(&mut self, a: Adopted, rec: Option<UnitRecord>, notify: Option<OwnedFd>) -> Resumed {
        let pid = a.info.pid;
        let spawned = identity::uptime_of(a.info.start_ticks)
            .and_then(|up| Instant::now().checked_sub(up))
            .unwrap_or_else(Instant::now);
        let recorded = rec.as_ref().map(|r| r.state);
        let after_stop = rec
            .as_ref()
            .map(|r| r.after_stop.clone())
            .unwrap_or_default();
        let step = a.info.step.and_then(|n| usize::try_from(n).ok());
        let (phase, stopping) = match (self.spec.kind, recorded, step) {
            (_, Some(State::Stopping), _) => (Phase::Run, true),
            // A pre_start step: waited for, then the attempt goes on.
            (_, _, Some(n)) => (Phase::PreStart(n), false),
            (Kind::Task, _, None) => (Phase::Task, false),
            (Kind::Service, Some(State::Running), None) => (Phase::Run, false),
            // Its gate had not passed (or nothing says it had): wait for it
            // again; the process itself is left alone.
            (Kind::Service, _, None) => (Phase::Gate, false),
        };
        let notify = self.notify_for(pid, notify);
        let stopping = stopping.then_some(after_stop);
        let ready = matches!(phase, Phase::Run) && stopping.is_none();
        let state = match (&phase, stopping.is_some()) {
            (_, true) => State::Stopping,
            (Phase::Run, false) => State::Running,
            _ => State::Starting,
        };
        let shown = (!matches!(phase, Phase::PreStart(_))).then_some(pid);
        self.restore(|s| {
            s.state = state;
            s.pid = shown;
            s.ready = ready;
            s.since = Some(spawned);
            s.restarts = rec.as_ref().map_or(0, |r| r.restarts);
            s.message = rec.as_ref().and_then(|r| r.message.clone());
            s.exit = None;
            s.env_generation = rec.as_ref().and_then(|r| r.env_generation);
        });
        let gone = a
            .info
            .exit
            .map(|e| format!(", which exited meanwhile ({})", Exit::from(e)));
        let what = step.map_or_else(String::new, |n| format!(", its pre_start step {}", n + 1));
        tracing::info!(
            process = %self.name(),
            "adopted pid {pid} ({state}{what}){}",
            gone.unwrap_or_default()
        );
        Resumed {
            child: Child {
                pid,
                start_ticks: a.info.start_ticks,
                exit_rx: a.exit,
                exited: None,
                matched: Some(a.matched),
                spawned,
            },
            phase,
            notify,
            stopping,
        }
    }

    /// The notify socket the anchor held for `pid`'s gate, when it has one.
    fn notify_for(&mut self, pid: i32, fd: Option<OwnedFd>) -> Option<NotifySocket> {
        let Some(ProbeKind::Notify) = self.spec.ready.as_ref().map(|r| &r.probe) else {
            return None;
        };
        let fd = fd?;
        let path = self
            .notify_path
            .clone()
            .unwrap_or_else(|| self.ctx.state.notify_socket(&self.inst.name));
        match NotifySocket::adopt(fd, path.clone(), pid) {
            Ok(n) => {
                self.notify_path = Some(path);
                Some(n)
            }
            Err(e) => {
                tracing::warn!(process = %self.name(), "cannot take up its notify socket: {e}");
                None
            }
        }
    }

    /// Nothing of its process is left: what the record says, and whether
    /// its lifecycle goes on.
    fn without_process(&mut self, rec: Option<UnitRecord>) -> Option<Next> {
        let rec = rec?;
        let gone = "its process was gone when this supervisor took over (how it ended is unknown)";
        let (state, next) = match (rec.state, &rec.after_stop) {
            // The stop was done; what came after it is still to do.
            (State::Stopping, AfterStop::Restart) => (State::Backoff, Some(Next::Attempt)),
            (State::Stopping, AfterStop::Policy { why }) => {
                (State::Backoff, Some(Next::Backoff(why.clone())))
            }
            (State::Stopping, AfterStop::Failed { reason }) if self.been_ready => {
                (State::Backoff, Some(Next::Backoff(reason.clone())))
            }
            (State::Stopping, AfterStop::Failed { .. }) => (State::Failed, None),
            (State::Starting | State::Running, _) if rec.wanted => {
                (State::Backoff, Some(Next::Backoff(gone.to_string())))
            }
            // Its restart was due: make it now.
            (State::Backoff, _) if rec.wanted => (State::Backoff, Some(Next::Attempt)),
            (State::Starting | State::Running | State::Stopping | State::Backoff, _) => {
                (State::Stopped, None)
            }
            (other, _) => (other, None),
        };
        self.restore(|s| {
            s.state = state;
            s.pid = None;
            s.ready = rec.ready && state == State::Completed;
            s.restarts = rec.restarts;
            s.exit = rec.exit.map(Exit::from);
            s.message = rec.message.clone();
            s.env_generation = rec.env_generation;
        });
        next
    }

    /// Sets the published status to what was left, without the transition
    /// check (a new unit starts `pending`; this is where it already was).
    fn restore(&self, f: impl FnOnce(&mut super::UnitStatus)) {
        self.status.send_modify(f);
        self.persist();
    }

    /// The attempt of a process taken up, from where it stands.
    pub(super) async fn resumed(&mut self, r: Resumed) -> End {
        let pid_path = self.ctx.state.pid_file(&self.inst.name);
        let mut child = r.child;
        if let Some(then) = r.stopping {
            let report = Box::pin(self.stop_child(&mut child, Some(&pid_path), then.clone())).await;
            return match then {
                AfterStop::Down => End::Stopped(Vec::new(), report),
                AfterStop::Restart => End::Restart,
                AfterStop::Policy { why } => End::Exited {
                    exit: child.exited.unwrap_or(Exit::Signal(15)),
                    ran_for: child.spawned.elapsed(),
                    why: Some(why),
                },
                AfterStop::Failed { reason } => End::NotReady(reason),
            };
        }
        if let Phase::PreStart(n) = r.phase {
            return Box::pin(self.attempt_with(r.notify, Some((n, child)))).await;
        }
        let env = self.env(r.notify.as_ref());
        let ready = match self.expanded_ready(&env) {
            Ok(x) => x,
            Err(end) => {
                let _ =
                    Box::pin(self.stop_child(&mut child, Some(&pid_path), AfterStop::Down)).await;
                return end;
            }
        };
        self.carry_on(child, r.phase, &pid_path, env, ready, r.notify)
            .await
    }
}
