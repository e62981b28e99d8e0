//! What a unit's status changes mean for the start timeline
//! (`supervisor::timeline`): an attempt began (`starting`), its process
//! was spawned (a pid), it became ready (or completed), or it ended before
//! it was (`failed`, a restart's `backoff`, stopped while starting).
//!
//! Owns: reading those moments off a status change. Must not touch: the
//! status itself, the record's shape.

use super::{Unit, UnitStatus};
use crate::status::State;

impl Unit {
    /// Tells the timeline what the change from `before` to `after` means.
    pub(super) fn note_times(&self, before: &UnitStatus, after: &UnitStatus) {
        let t = &self.ctx.timeline;
        let name = self.inst.name.as_str();
        if after.state == State::Starting && before.state != State::Starting {
            let gate = self.spec.ready.as_ref().map(|r| r.probe.key().to_string());
            t.began(name, self.attempts, gate, !self.spec.pre_start.is_empty());
        }
        if after.state == State::Starting && before.pid.is_none() && after.pid.is_some() {
            t.spawned(name);
        }
        let up =
            |s: &UnitStatus| (s.state == State::Running && s.ready) || s.state == State::Completed;
        if up(after) && !up(before) {
            t.ready(name);
        }
        let ended_unready = match after.state {
            State::Failed | State::Backoff => before.state != after.state,
            State::Stopped => {
                matches!(before.state, State::Starting | State::Stopping) && !before.ready
            }
            _ => false,
        };
        if ended_unready && !up(before) {
            let why = after
                .message
                .clone()
                .unwrap_or_else(|| "stopped before it was ready".to_string());
            t.failed(name, &why);
        }
    }
}
