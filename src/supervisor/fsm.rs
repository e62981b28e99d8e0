//! The states of one process instance, which moves between them are legal,
//! and the restart back-off. Pure: no I/O, no clocks of its own.

use std::time::{Duration, Instant};

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

/// Whether an exit calls for a restart under `policy`.
pub fn wants_restart(policy: RestartPolicy, exit: Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.success(),
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
        assert!(wants_restart(RestartPolicy::Always, ok));
        assert!(!wants_restart(RestartPolicy::OnFailure, ok));
        assert!(wants_restart(RestartPolicy::OnFailure, bad));
        assert!(wants_restart(RestartPolicy::OnFailure, sig));
        assert!(!wants_restart(RestartPolicy::Never, bad));
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
