//! The states of one process instance, which moves between them are legal,
//! and the restart back-off. Pure: no I/O, no clocks of its own.
//!
//! Owns: the transition table ([`allowed`]), what an exit means for the
//! restart policy ([`failed`], [`wants_restart`]), the back-off and the
//! crash-loop window ([`Backoff`], kept across supervisors as a
//! [`BackoffRecord`]). Must not touch: processes, timers, status.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::RestartPolicy;
use crate::spawn::Exit;
pub use crate::status::State;

/// Whether moving from `from` to `to` is legal. Everything else is a bug.
pub fn allowed(from: State, to: State) -> bool {
    use State::*;
    if from == to {
        return true;
    }
    match from {
        Pending => matches!(to, Starting | Stopped | Failed),
        Starting => matches!(
            to,
            Running | Stopping | Completed | Failed | Backoff | Stopped
        ),
        Running => matches!(
            to,
            Stopping | Backoff | Stopped | Failed | Completed | Starting
        ),
        Backoff => matches!(to, Starting | Stopped | Failed | Stopping),
        Stopping => matches!(to, Stopped | Failed | Starting | Backoff),
        Stopped | Completed | Failed => matches!(to, Pending | Starting),
    }
}

/// Whether an exit is a failure: a non-zero code or a signal, or any
/// exit of a process stackctl stopped because it failed (`forced`: a
/// failing health check, `memory_max`; a server that exits 0 on SIGTERM
/// did not recover by doing so).
pub fn failed(exit: Exit, forced: bool) -> bool {
    forced || !exit.success()
}

/// Whether an exit calls for a restart under `policy` (`forced`: as in
/// [`failed`]).
pub fn wants_restart(policy: RestartPolicy, exit: Exit, forced: bool) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed(exit, forced),
        RestartPolicy::Never => false,
    }
}

/// Restart delays: the first restart is immediate, later ones double from
/// 100 ms up to 30 s; the delay resets once the process has stayed up 10 s.
/// More than `max` restarts inside `window` is a crash loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    max: u32,
    window: Duration,
    /// Start times of recent restarts, oldest first.
    recent: std::collections::VecDeque<Instant>,
    next_delay: Duration,
}

/// The first delayed restart waits this long.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Delays never exceed this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the delay.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

impl Backoff {
    pub fn new(max: u32, window: Duration) -> Self {
        Backoff {
            max,
            window,
            recent: Default::default(),
            next_delay: Duration::ZERO,
        }
    }

    /// The delay before the next restart, given how long the last run
    /// lasted, or `None` when this restart would exceed `max` in `window`.
    pub fn next(&mut self, now: Instant, ran_for: Duration) -> Option<Duration> {
        if ran_for >= BACKOFF_RESET_AFTER {
            self.next_delay = Duration::ZERO;
        }
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= self.max {
            return None;
        }
        self.recent.push_back(now);
        let delay = self.next_delay;
        self.next_delay = if delay.is_zero() {
            BACKOFF_BASE
        } else {
            (delay * 2).min(BACKOFF_MAX)
        };
        Some(delay)
    }

    /// How many restarts are counted in the current window.
    pub fn in_window(&self) -> usize {
        self.recent.len()
    }

    /// What is worth keeping across a supervisor restart: when each counted
    /// restart happened (wall clock, ms since the epoch: `Instant`s do not
    /// outlive a process) and the next delay. `now` pairs the two clocks.
    pub fn snapshot(&self, now: (Instant, SystemTime)) -> BackoffRecord {
        let at = |t: Instant| {
            let ago = now.0.saturating_duration_since(t);
            now.1
                .checked_sub(ago)
                .and_then(|w| w.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64)
        };
        BackoffRecord {
            recent_ms: self.recent.iter().map(|t| at(*t)).collect(),
            next_delay_ms: self.next_delay.as_millis() as u64,
        }
    }

    /// A back-off as a snapshot left it (see [`Backoff::snapshot`]).
    pub fn restore(
        max: u32,
        window: Duration,
        rec: &BackoffRecord,
        now: (Instant, SystemTime),
    ) -> Self {
        let now_ms = now
            .1
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let recent = rec
            .recent_ms
            .iter()
            .map(|ms| {
                let ago = Duration::from_millis(now_ms.saturating_sub(*ms));
                now.0.checked_sub(ago).unwrap_or(now.0)
            })
            .collect();
        Backoff {
            max,
            window,
            recent,
            next_delay: Duration::from_millis(rec.next_delay_ms).min(BACKOFF_MAX),
        }
    }
}

/// A [`Backoff`] as kept across a supervisor restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffRecord {
    /// When each restart counted in the window happened, ms since the epoch.
    pub recent_ms: Vec<u64>,
    pub next_delay_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 8] = State::ALL;

    #[test]
    fn every_pair_is_decided_and_key_paths_are_legal() {
        // Every pair answers without panicking; the important paths hold.
        let legal: usize = ALL
            .iter()
            .flat_map(|a| ALL.iter().map(move |b| allowed(*a, *b) as usize))
            .sum();
        assert!(legal > 8 && legal < 64);
        assert!(allowed(State::Pending, State::Starting));
        assert!(allowed(State::Starting, State::Running));
        assert!(allowed(State::Running, State::Backoff));
        assert!(allowed(State::Backoff, State::Starting));
        assert!(allowed(State::Running, State::Stopping));
        assert!(allowed(State::Stopping, State::Stopped));
        assert!(allowed(State::Starting, State::Completed));
        assert!(allowed(State::Failed, State::Starting));
        assert!(!allowed(State::Stopped, State::Running));
        assert!(!allowed(State::Completed, State::Running));
        assert!(!allowed(State::Pending, State::Running));
        assert!(!allowed(State::Backoff, State::Running));
    }

    #[test]
    fn restart_policies() {
        let ok = Exit::Code(0);
        let bad = Exit::Code(1);
        let sig = Exit::Signal(9);
        // (policy, exit, stopped by stackctl for failing, restart?)
        let table = [
            (RestartPolicy::Always, ok, false, true),
            (RestartPolicy::OnFailure, ok, false, false),
            (RestartPolicy::OnFailure, bad, false, true),
            (RestartPolicy::OnFailure, sig, false, true),
            (RestartPolicy::Never, bad, false, false),
            // Unhealthy, stopped, and it exited 0 on SIGTERM: still a failure.
            (RestartPolicy::OnFailure, ok, true, true),
            (RestartPolicy::Never, ok, true, false),
        ];
        for (policy, exit, forced, want) in table {
            assert_eq!(
                wants_restart(policy, exit, forced),
                want,
                "{policy:?} {exit} forced={forced}"
            );
        }
        assert!(failed(ok, true) && !failed(ok, false) && failed(bad, false));
    }

    #[test]
    fn backoff_is_immediate_then_doubles_then_caps_then_stops() {
        let mut b = Backoff::new(100, Duration::from_secs(3600));
        let t = Instant::now();
        let short = Duration::from_millis(1);
        let delays: Vec<Duration> = (0..12)
            .map(|i| b.next(t + Duration::from_millis(i), short).unwrap())
            .collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], Duration::from_millis(100));
        assert_eq!(delays[2], Duration::from_millis(200));
        assert_eq!(delays[3], Duration::from_millis(400));
        assert_eq!(delays[11], BACKOFF_MAX);
        // A long run resets the delay.
        assert_eq!(b.next(t, Duration::from_secs(11)).unwrap(), Duration::ZERO);
    }

    #[test]
    fn a_backoff_carries_its_window_and_delay_across_a_restart() {
        let mut b = Backoff::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let wall = SystemTime::now();
        b.next(t, Duration::ZERO);
        b.next(t + Duration::from_secs(1), Duration::ZERO);
        let rec = b.snapshot((t + Duration::from_secs(2), wall + Duration::from_secs(2)));
        assert_eq!(rec.recent_ms.len(), 2);
        assert_eq!(rec.next_delay_ms, 200);
        // Another process, ten seconds later by both clocks.
        let (t2, wall2) = (
            Instant::now() + Duration::from_secs(10),
            wall + Duration::from_secs(12),
        );
        let mut again = Backoff::restore(3, Duration::from_secs(60), &rec, (t2, wall2));
        assert_eq!(again.in_window(), 2);
        // One more restart is allowed, then the crash loop is caught, as if
        // the supervisor had never gone.
        assert_eq!(
            again.next(t2, Duration::ZERO),
            Some(Duration::from_millis(200))
        );
        assert_eq!(again.next(t2, Duration::ZERO), None);
        // Restarts older than the window are forgotten after a long gap.
        let later = (
            t2 + Duration::from_secs(100),
            wall2 + Duration::from_secs(100),
        );
        let mut old = Backoff::restore(3, Duration::from_secs(60), &rec, later);
        assert!(old.next(later.0, Duration::ZERO).is_some());
        assert_eq!(old.in_window(), 1);
    }

    #[test]
    fn crash_loop_limit_counts_within_the_window() {
        let mut b = Backoff::new(5, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..5 {
            assert!(b.next(t + Duration::from_secs(i), Duration::ZERO).is_some());
        }
        assert!(b.next(t + Duration::from_secs(5), Duration::ZERO).is_none());
        // Once the window has moved past the old restarts, restarts are allowed again.
        assert!(b
            .next(t + Duration::from_secs(120), Duration::ZERO)
            .is_some());
    }
}
