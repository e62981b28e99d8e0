//! Scheduled tasks: a task with `schedule` (cron, in the host's time zone)
//! or `every` runs at those times under the supervisor.
//!
//! Theory of operation. `start` does not run a scheduled task: it *arms*
//! it (`stop` disarms it), and while it is armed one task here sleeps
//! until its next slot ([`next_after`], pure; `every`: the interval after
//! the previous slot, the first one interval after it was armed). At a
//! slot:
//!
//! 1. a run still going (the unit is starting, running or in back-off) is
//!    not started again: the slot is skipped and `stackctl.log` says so;
//! 2. so is a slot while an export holds the stack-owner lock (read under
//!    its flock, never taken);
//! 3. otherwise the task runs through the supervisor's usual start path
//!    (its dependencies first; same log, environment, timeout and group
//!    kill as any task), in a task of its own so that the next slot is
//!    watched meanwhile; how it ended is recorded.
//!
//! What a schedule knows (armed, its last slot, its last run and result,
//! the slots skipped) is kept with the anchor on every change
//! ([`ScheduleRecord`]), so a supervisor that takes over goes on with it:
//! the slot that was due is not run twice, the last run is not forgotten,
//! and slots missed while no supervisor ran are made up by one run.
//! Slots missed by a late wake-up are made up the same way: one run, never
//! a burst.
//!
//! Time: slots are found in the host's local time ([`zone`]). In an hour
//! that does not exist (clocks go forward), a slot runs an hour later, at
//! the same time after the jump; in an hour that happens twice (clocks go
//! back), a slot runs once.
//!
//! Owns: arming, the slots, the skips and the record. Must not touch: how
//! the task runs (the units), the lock's contents (only read).

pub mod zone;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::{progress, record, ProgressTx, Supervisor};
use crate::config::cron::Cron;
use crate::config::{ProcessSpec, Schedule, Stack};
use crate::status::{ScheduleStatus, State, Step};

/// Epoch milliseconds.
pub type Millis = i64;

/// What a schedule knows, kept with the anchor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub armed: bool,
    /// When it was armed (the base of the first `every` slot).
    pub armed_at: Millis,
    /// The last slot acted on (run or skipped).
    pub last_slot: Option<Millis>,
    /// When the last run began, how it ended, and whether it succeeded.
    pub last_run: Option<Millis>,
    pub last_result: Option<String>,
    pub last_ok: Option<bool>,
    pub skipped: u64,
    pub last_skip: Option<String>,
}

struct Entry {
    record: ScheduleRecord,
    task: Option<JoinHandle<()>>,
}

/// The schedules of one supervisor, by task name.
#[derive(Default)]
pub(super) struct Schedules {
    inner: Mutex<BTreeMap<String, Entry>>,
}

impl Schedules {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, name: &str) -> Option<ScheduleRecord> {
        self.lock().get(name).map(|e| e.record.clone())
    }

    /// Whether `name` is armed.
    pub(super) fn armed(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|e| e.record.armed)
    }
}

fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

// ---- the pure part: civil dates and the next slot ----

/// Days since 1970-01-01 of a proleptic Gregorian date.
#[cfg(test)]
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 0 = Sunday … 6 of a day since 1970-01-01 (a Thursday).
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// How far ahead [`next_after`] looks (a leap day on a given weekday
/// comes within 28 years).
const HORIZON_DAYS: i64 = 366 * 29;

/// The first slot of `cron` strictly after epoch second `t`, as an epoch
/// second; `offset(e)` is the zone's UTC offset at epoch second `e`.
/// `None` when it never comes (within [`HORIZON_DAYS`]).
pub fn next_after(cron: &Cron, t: i64, offset: &dyn Fn(i64) -> i64) -> Option<i64> {
    let local = t + offset(t);
    let start = local.div_euclid(60) * 60 + 60;
    let first_day = start.div_euclid(86_400);
    let first_minute = (start.rem_euclid(86_400) / 60) as u32;
    for day in first_day..first_day + HORIZON_DAYS {
        let (_, m, d) = civil_from_days(day);
        if !cron.day(m, d, weekday(day)) {
            continue;
        }
        let from = if day == first_day { first_minute } else { 0 };
        for h in from / 60..24 {
            if !cron.hour(h) {
                continue;
            }
            let m0 = if h == from / 60 { from % 60 } else { 0 };
            for mi in m0..60 {
                if !cron.minute(mi) {
                    continue;
                }
                let wall = day * 86_400 + i64::from(h * 3600 + mi * 60);
                // The instant showing that wall time (two steps: the offset
                // is read near the answer, not near the wall time). In a
                // skipped hour this is the same time after the jump.
                let e = wall - offset(wall - offset(wall));
                if e > t {
                    return Some(e);
                }
            }
        }
    }
    None
}

/// The slot after `after` (epoch ms) of `schedule`.
fn next_slot(schedule: &Schedule, after: Millis) -> Option<Millis> {
    match schedule {
        Schedule::Every(d) => Some(after + d.as_millis() as Millis),
        Schedule::Cron { cron, .. } => {
            next_after(cron, after.div_euclid(1000), &zone::offset_at).map(|s| s * 1000)
        }
    }
}

/// The latest slot at or before `now`, from the slot `due` (≤ `now`) on:
/// what one late run stands for.
fn latest_slot(schedule: &Schedule, due: Millis, now: Millis) -> Millis {
    match schedule {
        Schedule::Every(d) => {
            let every = (d.as_millis() as Millis).max(1);
            due + (now - due) / every * every
        }
        Schedule::Cron { .. } => {
            let mut latest = due;
            for _ in 0..100_000 {
                match next_slot(schedule, latest) {
                    Some(n) if n <= now => latest = n,
                    _ => break,
                }
            }
            latest
        }
    }
}

/// Epoch ms as RFC 3339 in the host's time zone, to the second.
pub fn local_rfc3339(t: Millis) -> String {
    let s = t.div_euclid(1000);
    let off = zone::offset_at(s);
    let wall = s + off;
    let (y, m, d) = civil_from_days(wall.div_euclid(86_400));
    let sec = wall.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}",
        sec / 3600,
        (sec % 3600) / 60,
        sec % 60,
        zone::offset_text(off)
    )
}

// ---- the supervisor's part ----

impl Supervisor {
    /// Arms the scheduled tasks among `names` (each says when it runs).
    pub(super) fn schedule_arm(&self, stack: &Stack, names: &[String], tx: &ProgressTx) {
        for spec in stack.processes.iter().filter(|p| names.contains(&p.name)) {
            let Some(sched) = &spec.schedule else {
                continue;
            };
            let fresh = {
                let mut all = self.schedules.lock();
                let e = all.entry(spec.name.clone()).or_insert_with(|| Entry {
                    record: ScheduleRecord::default(),
                    task: None,
                });
                let running = e.task.as_ref().is_some_and(|t| !t.is_finished());
                if !running {
                    if !e.record.armed {
                        e.record.armed = true;
                        e.record.armed_at = now_millis();
                        e.record.last_slot = None;
                    }
                    e.task = Some(tokio::spawn(run(self.me.clone(), spec.name.clone())));
                }
                !running
            };
            self.schedule_persist(&spec.name);
            let next = self.next_run(spec).map(local_rfc3339);
            let when = next.map_or_else(|| "never again".to_string(), |n| format!("next run {n}"));
            let msg = format!(
                "{}{sched}, host time zone {}: {when}",
                if fresh {
                    "scheduled: "
                } else {
                    "already scheduled: "
                },
                zone::describe(now_millis() / 1000)
            );
            if fresh {
                tracing::info!(process = %spec.name, "{msg}");
            }
            progress(tx, &spec.name, Step::Info, msg);
        }
    }

    /// Disarms the scheduled tasks among `names` (a run in progress is the
    /// stop's to end).
    pub(super) fn schedule_disarm(&self, names: &[String]) {
        let mut changed = Vec::new();
        {
            let mut all = self.schedules.lock();
            for (name, e) in all.iter_mut().filter(|(n, _)| names.contains(n)) {
                if let Some(t) = e.task.take() {
                    t.abort();
                }
                if e.record.armed {
                    e.record.armed = false;
                    changed.push(name.clone());
                }
            }
        }
        for name in changed {
            tracing::info!(process = %name, "schedule disarmed");
            self.schedule_persist(&name);
        }
    }

    /// Disarms every schedule.
    pub(super) fn schedule_disarm_all(&self) {
        let names: Vec<String> = self.schedules.lock().keys().cloned().collect();
        self.schedule_disarm(&names);
    }

    /// Takes what a previous supervisor kept of the schedules (before the
    /// units are adopted); [`Supervisor::schedule_resume`] arms them again.
    pub(super) fn schedule_restore(&self, stack: &Stack, kept: &BTreeMap<String, String>) {
        let mut all = self.schedules.lock();
        for (key, value) in kept {
            let Some(name) = key.strip_prefix(record::SCHEDULE_PREFIX) else {
                continue;
            };
            let scheduled = stack.process(name).is_some_and(|p| p.schedule.is_some());
            match serde_json::from_str::<ScheduleRecord>(value) {
                Ok(rec) if scheduled => {
                    all.insert(
                        name.to_string(),
                        Entry {
                            record: rec,
                            task: None,
                        },
                    );
                }
                _ => self.ctx.anchor.del(key),
            }
        }
    }

    /// Arms again what was armed when the previous supervisor left; a run
    /// it left going is watched to its end and recorded.
    pub(super) fn schedule_resume(&self, stack: &Stack) {
        let armed: Vec<String> = self
            .schedules
            .lock()
            .iter()
            .filter(|(_, e)| e.record.armed)
            .map(|(n, _)| n.clone())
            .collect();
        if armed.is_empty() {
            return;
        }
        for name in &armed {
            let Some(spec) = stack.process(name) else {
                continue;
            };
            let h = self.schedule_unit(spec);
            if h.as_ref().is_some_and(|h| running(h.now().state)) {
                if let (Some(me), Some(h)) = (self.me.upgrade(), h) {
                    let name = name.clone();
                    tokio::spawn(async move { me.schedule_watch_run(&name, h).await });
                }
            }
        }
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        self.schedule_arm(stack, &armed, &tx);
    }

    /// What `status` shows of `spec`'s schedule.
    pub(super) fn schedule_status(&self, spec: &ProcessSpec) -> Option<ScheduleStatus> {
        let sched = spec.schedule.as_ref()?;
        let rec = self.schedules.record(&spec.name).unwrap_or_default();
        let now = now_millis();
        let next = rec.armed.then(|| self.next_run(spec)).flatten();
        Some(ScheduleStatus {
            spec: sched.to_string(),
            time_zone: zone::describe(now / 1000),
            armed: rec.armed,
            next_run: next.map(local_rfc3339),
            next_run_in_s: next.map(|n| ((n - now).max(0) as f64) / 1000.0),
            last_run: rec.last_run.map(local_rfc3339),
            last_result: rec.last_result,
            last_ok: rec.last_ok,
            skipped: rec.skipped,
            last_skip: rec.last_skip,
        })
    }

    /// When `spec` runs next, as armed now.
    fn next_run(&self, spec: &ProcessSpec) -> Option<Millis> {
        let sched = spec.schedule.as_ref()?;
        let rec = self.schedules.record(&spec.name)?;
        let due = next_slot(sched, rec.last_slot.unwrap_or(rec.armed_at))?;
        Some(due.max(now_millis()))
    }

    fn schedule_update(&self, name: &str, f: impl FnOnce(&mut ScheduleRecord)) {
        if let Some(e) = self.schedules.lock().get_mut(name) {
            f(&mut e.record);
        }
        self.schedule_persist(name);
    }

    fn schedule_persist(&self, name: &str) {
        let Some(rec) = self.schedules.record(name) else {
            return;
        };
        if let Ok(text) = serde_json::to_string(&rec) {
            self.ctx.anchor.put(&record::schedule_key(name), text);
        }
    }

    /// The unit of a scheduled task (never a pool).
    fn schedule_unit(&self, spec: &ProcessSpec) -> Option<super::unit::UnitHandle> {
        let inst = self.registry.instances(spec).into_iter().next()?;
        Some(self.registry.unit(&self.ctx, spec, &inst))
    }

    /// Acts on the slot `slot` of task `name`: skip it, or start a run.
    async fn schedule_fire(&self, name: &str, slot: Millis) {
        let stack = self.stack();
        let Some(spec) = stack.process(name) else {
            return;
        };
        let Some(h) = self.schedule_unit(spec) else {
            return;
        };
        let slot_text = local_rfc3339(slot);
        let skip = |why: String| {
            tracing::info!(process = %name, "slot {slot_text} skipped: {why}");
            self.schedule_update(name, |r| {
                r.skipped += 1;
                r.last_skip = Some(format!("{slot_text}: {why}"));
            });
        };
        if running(h.now().state) {
            let since = self
                .schedules
                .record(name)
                .and_then(|r| r.last_run)
                .map_or_else(|| "earlier".to_string(), local_rfc3339);
            skip(format!("the run started {since} is still going"));
            return;
        }
        let lock = crate::lock::StackLock::of(&stack);
        let held = tokio::task::spawn_blocking(move || lock.read()).await;
        match held {
            Ok(Ok(r)) if r.owner == crate::lock::Owner::Export => {
                skip(format!("the stack-owner lock is held by {}", r.describe()));
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                skip(format!("cannot read the stack-owner lock: {e}"));
                return;
            }
            Err(e) => {
                skip(format!("cannot read the stack-owner lock: {e}"));
                return;
            }
        }
        tracing::info!(process = %name, "scheduled run (slot {slot_text})");
        self.schedule_update(name, |r| {
            r.last_run = Some(now_millis());
            r.last_result = Some("running".into());
            r.last_ok = None;
        });
        let Some(me) = self.me.upgrade() else { return };
        let name = name.to_string();
        let spawned_before = h.now().since;
        tokio::spawn(async move {
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            let names = [name.clone()];
            let r = me
                .start_with(
                    &names,
                    &BTreeMap::new(),
                    true,
                    super::Scheduled::RunNow,
                    &tx,
                )
                .await;
            match r {
                // Not run at all (a dependency did not come up, the stack is
                // being stopped): say why, not the task's previous result.
                Err(e) if h.now().since == spawned_before => {
                    let why = format!("not run: {e}");
                    tracing::warn!(process = %name, "scheduled run {why}");
                    me.schedule_update(&name, |r| {
                        r.last_result = Some(why);
                        r.last_ok = Some(false);
                    });
                }
                _ => me.schedule_watch_run(&name, h).await,
            }
        });
    }

    /// Waits for the run of `h` to end and records how.
    async fn schedule_watch_run(&self, name: &str, h: super::unit::UnitHandle) {
        let mut rx = h.status.clone();
        let began = self.schedules.record(name).and_then(|r| r.last_run);
        let _ = rx.wait_for(|s| !running(s.state)).await;
        let s = h.now();
        let took = began.map(|b| ((now_millis() - b).max(0) as f64) / 1000.0);
        let (ok, result) = match s.state {
            State::Completed => (
                true,
                took.map_or_else(|| "completed".into(), |t| format!("completed in {t:.1}s")),
            ),
            State::Failed => (
                false,
                format!("failed: {}", s.message.unwrap_or_else(|| "unknown".into())),
            ),
            other => (false, format!("{other}")),
        };
        if ok {
            tracing::info!(process = %name, "scheduled run {result}");
        } else {
            tracing::warn!(process = %name, "scheduled run {result}");
        }
        self.schedule_update(name, |r| {
            r.last_result = Some(result);
            r.last_ok = Some(ok);
        });
    }
}

/// Whether a run is under way in this state.
fn running(s: State) -> bool {
    matches!(
        s,
        State::Starting | State::Running | State::Stopping | State::Backoff
    )
}

/// The schedule of task `name`, slot after slot, while it is armed.
async fn run(me: Weak<Supervisor>, name: String) {
    loop {
        let (sched, due) = {
            let Some(sup) = me.upgrade() else { return };
            let stack = sup.stack();
            let Some(sched) = stack.process(&name).and_then(|p| p.schedule.clone()) else {
                return;
            };
            let Some(rec) = sup.schedules.record(&name) else {
                return;
            };
            let Some(due) = next_slot(&sched, rec.last_slot.unwrap_or(rec.armed_at)) else {
                tracing::warn!(process = %name, "its schedule never comes again");
                return;
            };
            (sched, due)
        };
        let wait = due - now_millis();
        if wait > 0 {
            // At most a minute at a time: the wall clock may be set meanwhile.
            let nap = Duration::from_millis(wait.min(60_000) as u64);
            tokio::time::sleep(nap).await;
            if now_millis() < due {
                continue;
            }
        }
        let Some(sup) = me.upgrade() else { return };
        let now = now_millis();
        let slot = latest_slot(&sched, due, now);
        if slot > due {
            tracing::info!(process = %name, "slots from {} to {} were missed (no supervisor, or a late wake-up): one run for them", local_rfc3339(due), local_rfc3339(slot));
        }
        sup.schedule_update(&name, |r| r.last_slot = Some(slot));
        sup.schedule_fire(&name, slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch seconds of a UTC wall time.
    fn at(y: i64, m: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60
    }

    #[test]
    fn civil_dates_round_trip() {
        for z in [-1_000_000i64, -1, 0, 1, 59, 365, 11_016, 20_594, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(weekday(0), 4, "1970-01-01 was a Thursday");
        assert_eq!(weekday(days_from_civil(2026, 5, 20)), 3, "a Wednesday");
    }

    #[test]
    fn the_next_slot_after_a_time() {
        let utc = |_: i64| 0;
        let t = at(2026, 5, 20, 10, 17); // a Wednesday
        let cases: &[(&str, i64, i64)] = &[
            ("* * * * *", t, at(2026, 5, 20, 10, 18)),
            ("*/15 * * * *", t, at(2026, 5, 20, 10, 30)),
            ("0 3 * * *", t, at(2026, 5, 21, 3, 0)),
            ("17 10 * * *", t, at(2026, 5, 21, 10, 17)),
            (
                "0 9 * * mon-fri",
                at(2026, 5, 22, 9, 0),
                at(2026, 5, 25, 9, 0),
            ),
            ("0 0 1 * *", t, at(2026, 6, 1, 0, 0)),
            ("0 0 1 1 *", t, at(2027, 1, 1, 0, 0)),
            ("0 0 29 2 *", t, at(2028, 2, 29, 0, 0)),
            ("30 4 13 * 5", t, at(2026, 5, 22, 4, 30)),
            ("@hourly", at(2026, 12, 31, 23, 30), at(2027, 1, 1, 0, 0)),
            // A time inside a minute: the next whole minute that matches.
            ("* * * * *", t + 59, at(2026, 5, 20, 10, 18)),
        ];
        for (expr, from, want) in cases {
            let c = Cron::parse(expr).unwrap();
            assert_eq!(next_after(&c, *from, &utc), Some(*want), "{expr}");
        }
    }

    #[test]
    fn a_fixed_zone_reads_the_wall_clock_there() {
        let plus2 = |_: i64| 7200;
        let c = Cron::parse("0 3 * * *").unwrap();
        // 10:17 UTC is 12:17 at +02:00; 03:00 there is 01:00 UTC.
        assert_eq!(
            next_after(&c, at(2026, 5, 20, 10, 17), &plus2),
            Some(at(2026, 5, 21, 1, 0))
        );
        let minus5 = |_: i64| -5 * 3600;
        assert_eq!(
            next_after(&c, at(2026, 5, 20, 10, 17), &minus5),
            Some(at(2026, 5, 21, 8, 0))
        );
    }

    #[test]
    fn daylight_saving_neither_loses_nor_doubles_a_slot() {
        // A zone at +01:00 that goes to +02:00 at 01:00 UTC on 2026-03-29
        // (02:00 local jumps to 03:00), and back at 01:00 UTC on 2026-10-25
        // (03:00 local goes back to 02:00).
        let spring = at(2026, 3, 29, 1, 0);
        let autumn = at(2026, 10, 25, 1, 0);
        let zone = move |e: i64| {
            if (spring..autumn).contains(&e) {
                7200
            } else {
                3600
            }
        };
        // 02:30 does not exist on the 29th: it runs at 03:30 (after the jump).
        let c = Cron::parse("30 2 * * *").unwrap();
        let got = next_after(&c, at(2026, 3, 28, 12, 0), &zone).unwrap();
        assert_eq!(got, at(2026, 3, 29, 1, 30));
        // The next day, 02:30 at +02:00 again.
        assert_eq!(next_after(&c, got, &zone), Some(at(2026, 3, 30, 0, 30)));
        // 02:30 happens twice on 25 October: once.
        let first = next_after(&c, at(2026, 10, 24, 12, 0), &zone).unwrap();
        let second = next_after(&c, first, &zone).unwrap();
        assert!(second - first > 12 * 3600, "{first} then {second}");
        // Every minute keeps going forward through both changes.
        let every = Cron::parse("* * * * *").unwrap();
        for start in [spring - 120, autumn - 120] {
            let mut t = start;
            for _ in 0..200 {
                let n = next_after(&every, t, &zone).unwrap();
                // At most the repeated hour (run once) and a minute.
                assert!(n > t && n - t <= 3660, "{t} → {n}");
                t = n;
            }
        }
    }

    #[test]
    fn missed_slots_make_one_run() {
        let every = Schedule::Every(Duration::from_secs(10));
        assert_eq!(latest_slot(&every, 1_000, 1_000), 1_000);
        assert_eq!(latest_slot(&every, 1_000, 35_999), 31_000);
        assert_eq!(next_slot(&every, 31_000), Some(41_000));
        let cron = Schedule::Cron {
            expr: "* * * * *".into(),
            cron: Cron::parse("* * * * *").unwrap(),
        };
        let due = 60_000 * 1000;
        let latest = latest_slot(&cron, due, due + 5 * 60_000 + 30_000);
        assert_eq!(latest, due + 5 * 60_000);
    }
}
