//! Learning of a `watch_health` service going down as it happens, instead
//! of at the next tick (an interval of five minutes would leave a dead
//! tunnel dead that long).
//!
//! A thread holds a `watch` request open with the running supervisor (the
//! status document on every change, and once a second), and wakes the
//! keeper's loop when a watched service has been not up for [`GRACE`]: long
//! enough for the supervisor's own restart of an unhealthy process (at
//! once, the first time) to bring it back without the keeper stepping in.
//! With no supervisor, or after it went away, it tries again every
//! [`RETRY`]. The tick then decides what to do, as for any tick.
//!
//! Owns: the watch connection and when it wakes the loop ([`Debounce`],
//! pure). Must not touch: what a tick does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::FsEvent;
use crate::control::client::{Client, Connect};
use crate::control::protocol::{Request, Response};

/// How long a watched service stays not up before the loop is woken.
pub(super) const GRACE: Duration = Duration::from_secs(3);

/// How long between attempts to reach a supervisor.
const RETRY: Duration = Duration::from_secs(2);

/// When a run of "not up" observations wakes the loop: once per episode,
/// after [`GRACE`]; an observation of everything up ends the episode.
#[derive(Debug, Default)]
pub(super) struct Debounce {
    /// Since when something watched has been seen not up.
    since: Option<Instant>,
    /// This episode has woken the loop already.
    woken: bool,
}

impl Debounce {
    /// Takes an observation at `now` (`down`: a watched service is not up);
    /// `true`: wake the loop now.
    pub(super) fn observe(&mut self, down: bool, now: Instant) -> bool {
        if !down {
            *self = Debounce::default();
            return false;
        }
        let since = *self.since.get_or_insert(now);
        if !self.woken && now.duration_since(since) >= GRACE {
            self.woken = true;
            return true;
        }
        false
    }
}

/// Starts the watching thread for `names` through the supervisor socket
/// at `socket`; it sends [`FsEvent::Unhealthy`] into `tx`, and ends when
/// `tx`'s loop is gone.
///
/// # Errors
/// When the thread cannot be started.
pub(super) fn spawn(
    socket: PathBuf,
    names: Vec<String>,
    tx: mpsc::UnboundedSender<FsEvent>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("keeper-health".into())
        .spawn(move || loop {
            watch_once(&socket, &names, &tx);
            if tx.is_closed() {
                return;
            }
            std::thread::sleep(RETRY);
        })
        .map(drop)
}

/// One watch connection, until it ends.
fn watch_once(socket: &std::path::Path, names: &[String], tx: &mpsc::UnboundedSender<FsEvent>) {
    let Ok(Connect::Connected(mut client)) = Client::connect(socket) else {
        return;
    };
    if client.send(Request::Watch { names: Vec::new() }).is_err() {
        return;
    }
    let mut debounce = Debounce::default();
    while let Ok(Some(answer)) = client.recv() {
        let Response::Status(doc) = answer else {
            continue;
        };
        let down = !super::decide::not_up(&doc, Some(names)).is_empty();
        if debounce.observe(down, Instant::now()) && tx.send(FsEvent::Unhealthy).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_service_down_past_the_grace_wakes_the_loop_once_per_episode() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let grace = GRACE.as_millis() as u64;
        // (down?, at ms, wake?)
        let table = [
            (false, 0, false),
            (true, 100, false),
            // Still within the grace: the supervisor may bring it back.
            (true, 100 + grace - 1, false),
            (true, 100 + grace, true),
            // Once per episode.
            (true, 100 + 2 * grace, false),
            // Up again: the episode ends, a new one waits its grace.
            (false, 100 + 3 * grace, false),
            (true, 100 + 4 * grace, false),
            (true, 100 + 5 * grace, true),
        ];
        let mut d = Debounce::default();
        for (down, ms, want) in table {
            assert_eq!(d.observe(down, at(ms)), want, "down={down} at {ms} ms");
        }
    }

    #[test]
    fn back_up_within_the_grace_never_wakes() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert!(!d.observe(true, t0));
        assert!(!d.observe(false, t0 + GRACE / 2));
        assert!(!d.observe(true, t0 + GRACE));
        assert!(!d.observe(true, t0 + GRACE + GRACE / 2));
    }
}
