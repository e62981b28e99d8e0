//! Taking up a unit where a previous supervisor left it: its process (still
//! the anchor's child, or its unacknowledged exit), its notify socket (held
//! by the anchor), and its record (state, restarts, crash-loop window,
//! what the operator wanted).
//!
//! Owns: turning what was left into the unit's state and the step its
//! lifecycle continues with. Must not touch: the registry (the supervisor
//! decides which units are adopted).

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
    /// It was being stopped: finish that.
    stopping: bool,
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
            Some(a) => Some(Next::Resume(self.take_up(a, r.record, r.notify))),
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
        let (phase, stopping) = match (self.spec.kind, recorded) {
            (_, Some(State::Stopping)) => (Phase::Run, true),
            (Kind::Task, _) => (Phase::Task, false),
            (Kind::Service, Some(State::Running)) => (Phase::Run, false),
            // Its gate had not passed (or nothing says it had): wait for it
            // again; the process itself is left alone.
            (Kind::Service, _) => (Phase::Gate, false),
        };
        let notify = self.notify_for(pid, notify);
        let ready = matches!(phase, Phase::Run) && !stopping;
        let state = match (&phase, stopping) {
            (_, true) => State::Stopping,
            (Phase::Run, false) => State::Running,
            _ => State::Starting,
        };
        self.restore(|s| {
            s.state = state;
            s.pid = Some(pid);
            s.ready = ready;
            s.since = Some(spawned);
            s.restarts = rec.as_ref().map_or(0, |r| r.restarts);
            s.message = rec.as_ref().and_then(|r| r.message.clone());
            s.exit = None;
        });
        let gone = a
            .info
            .exit
            .map(|e| format!(", which exited meanwhile ({})", Exit::from(e)));
        tracing::info!(
            process = %self.name(),
            "adopted pid {pid} ({state}){}",
            gone.unwrap_or_default()
        );
        Resumed {
            child: Child {
                pid,
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
        let (state, next) = match rec.state {
            State::Starting | State::Running if rec.wanted => {
                (State::Backoff, Some(Next::Backoff(gone.to_string())))
            }
            // Its restart was due: make it now.
            State::Backoff if rec.wanted => (State::Backoff, Some(Next::Attempt)),
            State::Starting | State::Running | State::Stopping | State::Backoff => {
                (State::Stopped, None)
            }
            other => (other, None),
        };
        self.restore(|s| {
            s.state = state;
            s.pid = None;
            s.ready = rec.ready && state == State::Completed;
            s.restarts = rec.restarts;
            s.exit = rec.exit.map(Exit::from);
            s.message = rec.message.clone();
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
        if r.stopping {
            let report = self.stop_child(&mut child, Some(&pid_path)).await;
            return End::Stopped(Vec::new(), report);
        }
        let env = self.env(r.notify.as_ref());
        let ready = match self.expanded_ready(&env) {
            Ok(x) => x,
            Err(end) => {
                let _ = self.stop_child(&mut child, Some(&pid_path)).await;
                return end;
            }
        };
        self.carry_on(child, r.phase, &pid_path, env, ready, r.notify)
            .await
    }
}
