//! Live progress: while an operation waits — for a process's dependencies,
//! or for a unit to start, restart or stop — what each instance is doing
//! goes out as `waiting` progress (`status::Step::Waiting`): at once when
//! it changes (a unit's `Activity`, a dependency coming up), and once a
//! second for the clock. A terminal redraws the instance's line; nothing
//! else shows them (`control::server` sends them only to a client that
//! asked).
//!
//! Owns: following a unit's activity during an operation, and waiting for
//! dependencies while saying which. Must not touch: what the units do, the
//! orchestration's outcome (`order`).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::unit::UnitHandle;
use super::ProgressTx;
use crate::status::Progress;

/// How often the clock of something under way is sent.
const TICK: Duration = Duration::from_secs(1);

fn ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    tick
}

/// Runs `fut` (a request to unit `h`), telling `tx` what the unit is doing
/// whenever that changes, and its clock once a second, until `fut` is done.
///
/// # Cancel safety
/// Dropping it drops `fut`.
pub(super) async fn follow<T>(h: &UnitHandle, fut: impl Future<Output = T>, tx: &ProgressTx) -> T {
    let mut activity = h.activity.clone();
    let mut open = true;
    let mut tick = ticker();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            r = &mut fut => return r,
            changed = activity.changed(), if open => {
                open = changed.is_ok();
                tell(h, &activity, tx);
            }
            _ = tick.tick() => tell(h, &activity, tx),
        }
    }
}

fn tell(
    h: &UnitHandle,
    activity: &watch::Receiver<Option<super::unit::Activity>>,
    tx: &ProgressTx,
) {
    let now = activity.borrow().clone();
    if let Some(a) = now {
        let _ = tx.send(Progress::waiting(
            &h.inst.name,
            &a.what,
            a.since.elapsed(),
            a.timeout,
        ));
    }
}

/// Waits for the outcome of every dependency in `deps` (its name, and its
/// cell: `Some(true)` up, `Some(false)` failed), telling `tx` for each of
/// `handles` which ones it still waits for. The first dependency seen to
/// fail, if one does.
pub(super) async fn await_dependencies(
    handles: &[UnitHandle],
    mut deps: Vec<(String, watch::Receiver<Option<bool>>)>,
    tx: &ProgressTx,
) -> Option<String> {
    let since = Instant::now();
    let mut tick = ticker();
    let mut told = String::new();
    loop {
        let mut pending = Vec::new();
        for (i, (name, rx)) in deps.iter_mut().enumerate() {
            match *rx.borrow_and_update() {
                Some(true) => {}
                Some(false) => return Some(name.clone()),
                None => pending.push(i),
            }
        }
        // None pending: every dependency is up (no failure to name).
        let &first = pending.first()?;
        let names: Vec<&str> = pending.iter().map(|i| deps[*i].0.as_str()).collect();
        let what = format!("waiting for {}", names.join(", "));
        if what != told {
            say(handles, &what, since, tx);
            told.clone_from(&what);
        }
        // A change of the first pending one, or the clock: then look at
        // them all again (a later one that failed is seen at the tick).
        tokio::select! {
            changed = deps[first].1.changed() => {
                if changed.is_err() && deps[first].1.borrow().is_none() {
                    return Some(deps[first].0.clone());
                }
            }
            _ = tick.tick() => say(handles, &what, since, tx),
        }
    }
}

fn say(handles: &[UnitHandle], what: &str, since: Instant, tx: &ProgressTx) {
    for h in handles {
        let _ = tx.send(Progress::waiting(&h.inst.name, what, since.elapsed(), None));
    }
}
