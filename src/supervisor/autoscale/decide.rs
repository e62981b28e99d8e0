//! What an autoscaled pool should do now. Pure: no I/O, no clocks of its
//! own (every time is given, as milliseconds since the Unix epoch).
//!
//! Owns: what the autoscaler remembers between readings ([`Memory`]: the
//! depth history over the scale-in window, the source's failures, the last
//! decision, a manual override), reading a depth out of a source's answer
//! ([`parse_depth`]), the size a depth wants ([`wanted`]) and the decision
//! ([`decide`]). Must not touch: reading the source, the pool's members,
//! the clock (`supervisor::autoscale` does those and calls this).
//!
//! The rules, after the Kubernetes HPA (and what its users learned):
//!
//! - a depth wants `ceil(depth / per_instance)` members, within `min..=max`;
//! - scale out promptly: to the size wanted at once, or by at most
//!   `scale_out_step`; never while a member is crash-looping (growing would
//!   only feed the loop);
//! - scale in only to the *highest* size wanted over the whole
//!   `scale_in_window` (so a 0/40/0/40 depth stays up), once the history
//!   covers the whole window, at most `scale_in_step` at a time, and not
//!   while members are still draining from the last scale-in (a member
//!   that drains is no capacity, and is never stopped twice);
//! - a failing source never scales: the size is held (or, when asked for,
//!   goes to a fallback size after N failures in a row) — never to 0 or to
//!   `max` because a command broke;
//! - a manual `stackctl scale` holds its size until its override expires.
//!
//! The memory is serde-serializable so that it can outlive a supervisor.

use std::collections::VecDeque;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{AutoscaleSpec, OnError, StepLimit};

/// Milliseconds since the Unix epoch: wall-clock time, so that a memory
/// restored by another supervisor means the same.
pub type Millis = u64;

/// One depth reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Millis,
    pub depth: u64,
}

/// The depth source's failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceErrors {
    /// Failed readings since the last good one.
    pub in_a_row: u32,
    /// Every failed reading.
    pub total: u64,
    /// Why the last one failed, and when.
    pub last: Option<String>,
    pub last_at: Option<Millis>,
}

/// A manual `stackctl scale`: the size it set, held until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub size: u32,
    pub until: Millis,
}

/// What kind of decision it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The depth wants more members.
    Grow,
    /// The depth has wanted fewer for the whole window.
    Shrink,
    /// The pool has the size the depth wants.
    Steady,
    /// Fewer are wanted, but not for the whole scale-in window yet.
    Window,
    /// Fewer are wanted, but members are still draining.
    Draining,
    /// More are wanted, but a member is crash-looping.
    CrashLoop,
    /// The depth source fails: the size is held.
    SourceFailing,
    /// The depth source failed `after` times in a row: the fallback size.
    Fallback,
    /// A manual `scale` holds the size.
    Paused,
    /// Nothing read yet.
    NoReading,
}

/// A decision: the size the pool should have now, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub target: u32,
    pub why: Why,
    /// A sentence for `status` and `stackctl.log`, naming the depth.
    pub reason: String,
}

/// A decision as it was taken and applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub at: Millis,
    /// The size before.
    pub from: u32,
    pub decision: Decision,
    /// The depth it was taken on (the last good reading).
    pub depth: Option<u64>,
    /// Why applying it failed (a new member that did not start).
    pub error: Option<String>,
}

/// Everything an autoscaler remembers between readings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Good readings, oldest first: those within the scale-in window, plus
    /// the last one before it (what held when the window began).
    pub history: VecDeque<Sample>,
    pub errors: SourceErrors,
    pub last: Option<Record>,
    pub manual: Option<Override>,
}

impl Memory {
    /// Records a reading taken at `now`: a depth, or why there is none.
    pub fn observe(&mut self, reading: Result<u64, String>, now: Millis, window: Duration) {
        match reading {
            Ok(depth) => {
                self.history.push_back(Sample { at: now, depth });
                self.errors.in_a_row = 0;
            }
            Err(why) => {
                self.errors.in_a_row = self.errors.in_a_row.saturating_add(1);
                self.errors.total = self.errors.total.saturating_add(1);
                self.errors.last = Some(why);
                self.errors.last_at = Some(now);
            }
        }
        let start = now.saturating_sub(millis(window));
        while self.history.len() >= 2 && self.history[1].at <= start {
            self.history.pop_front();
        }
    }

    /// The last good reading.
    pub fn latest(&self) -> Option<Sample> {
        self.history.back().copied()
    }

    /// A manual `scale` to `size` at `now`: held for `hold`. Returns when
    /// it ends.
    pub fn hold_manual(&mut self, size: u32, now: Millis, hold: Duration) -> Millis {
        let until = now.saturating_add(millis(hold));
        self.manual = Some(Override { size, until });
        until
    }

    /// Ends a manual override; whether there was one in force at `now`.
    pub fn resume(&mut self, now: Millis) -> bool {
        self.manual.take().is_some_and(|o| now < o.until)
    }

    /// The manual override in force at `now`.
    pub fn paused(&self, now: Millis) -> Option<Override> {
        self.manual.filter(|o| now < o.until)
    }
}

/// What the pool is now, as `decide` needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Its size: members `1..=current` (capacity, running or on the way).
    pub current: u32,
    /// Members above the size still being stopped (no capacity).
    pub draining: u32,
    /// A member that is crash-looping (`worker.2 is in backoff`), if any.
    pub crash_looping: Option<String>,
}

/// Duration as milliseconds.
pub fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A wall-clock time as RFC 3339 (seconds).
pub fn clock(at: Millis) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

/// `ceil(depth / per_instance)`, unclamped.
fn needed(depth: u64, p: &AutoscaleSpec) -> u64 {
    depth.div_ceil(u64::from(p.per_instance.max(1)))
}

/// The size `depth` wants: `ceil(depth / per_instance)` within `min..=max`.
pub fn wanted(depth: u64, p: &AutoscaleSpec) -> u32 {
    let n = u32::try_from(needed(depth, p)).unwrap_or(u32::MAX);
    n.clamp(p.min, p.max.max(p.min))
}

/// "depth 30 needs 6 at 5 per instance", with the bound that applied.
fn need_text(depth: u64, p: &AutoscaleSpec) -> String {
    let raw = needed(depth, p);
    let base = format!(
        "depth {depth} needs {raw} at {} per instance",
        p.per_instance
    );
    if raw > u64::from(p.max) {
        format!("{base}, capped at max {}", p.max)
    } else if raw < u64::from(p.min) {
        format!("{base}, kept at min {}", p.min)
    } else {
        base
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn secs(ms: Millis) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

fn hold(current: u32, why: Why, reason: String) -> Decision {
    Decision {
        target: current,
        why,
        reason,
    }
}

/// The size the pool should have now.
///
/// `memory` holds the readings (the last one decides what is wanted, the
/// window's highest whether to scale in), `pool` the members, `now` the
/// time of the last reading.
pub fn decide(memory: &Memory, pool: &Pool, p: &AutoscaleSpec, now: Millis) -> Decision {
    let cur = pool.current;
    if let Some(o) = memory.paused(now) {
        return hold(
            cur,
            Why::Paused,
            format!(
                "held at {} by `stackctl scale` until {}",
                o.size,
                clock(o.until)
            ),
        );
    }
    let errors = &memory.errors;
    if errors.in_a_row > 0 {
        let last = errors.last.as_deref().unwrap_or("no reason given");
        let n = errors.in_a_row;
        if let OnError::Fallback { size, after } = p.on_error {
            if n >= after {
                let say = format!(
                    "the depth source failed {} in a row (last: {last}): on_error fallback {size}",
                    plural(n, "time", "times")
                );
                return towards(size, pool, p, Why::Fallback, say);
            }
        }
        return hold(
            cur,
            Why::SourceFailing,
            format!("the depth source failed ({n} in a row): {last}; the size stays {cur}"),
        );
    }
    let Some(latest) = memory.latest() else {
        return hold(cur, Why::NoReading, "no depth read yet".into());
    };
    let want = wanted(latest.depth, p);
    let need = need_text(latest.depth, p);
    if want > cur {
        return grow(want, pool, p, Why::Grow, need);
    }
    if cur > p.max {
        // Above the ceiling (a reload lowered it, an override ended): no
        // window to wait for.
        let say = format!("{need}; the pool is above max {}", p.max);
        return shrink(p.max, pool, p, say);
    }
    if want == cur {
        return hold(cur, Why::Steady, format!("{need}: the pool has {cur}"));
    }
    scale_in(memory, want, &need, pool, p, now)
}

/// Fewer are wanted: how far the window lets the pool shrink.
fn scale_in(
    memory: &Memory,
    want: u32,
    need: &str,
    pool: &Pool,
    p: &AutoscaleSpec,
    now: Millis,
) -> Decision {
    let cur = pool.current;
    let window = p.scale_in_window;
    let start = now.saturating_sub(millis(window));
    let shown = humantime::format_duration(window);
    let covered = memory.history.front().is_some_and(|s| s.at <= start);
    if !covered {
        // Lower since the first reading after the last one that wanted
        // at least this size.
        let since = memory
            .history
            .iter()
            .rev()
            .take_while(|s| wanted(s.depth, p) < cur)
            .last()
            .map_or(now, |s| s.at);
        return hold(
            cur,
            Why::Window,
            format!(
                "{need}; lower for {} of the {shown} scale-in window",
                secs(now.saturating_sub(since))
            ),
        );
    }
    let window_max = memory
        .history
        .iter()
        .map(|s| wanted(s.depth, p))
        .max()
        .unwrap_or(want);
    if window_max >= cur {
        return hold(
            cur,
            Why::Window,
            format!("{need}, but {window_max} were wanted within the last {shown}"),
        );
    }
    let say = format!("{need}; at most {window_max} wanted over the last {shown}");
    shrink(window_max, pool, p, say)
}

/// Growth toward `want`, within the step limit, unless crash-looping.
fn grow(want: u32, pool: &Pool, p: &AutoscaleSpec, why: Why, say: String) -> Decision {
    let cur = pool.current;
    if let Some(who) = &pool.crash_looping {
        return hold(
            cur,
            Why::CrashLoop,
            format!("{say}, but {who}: a crash-looping pool is not grown"),
        );
    }
    let target = match p.scale_out_step {
        None => want,
        Some(StepLimit::Members(k)) => want.min(cur.saturating_add(k)),
        Some(StepLimit::Percent(pct)) => {
            let k = (u64::from(cur) * u64::from(pct)).div_ceil(100).max(1);
            want.min(cur.saturating_add(u32::try_from(k).unwrap_or(u32::MAX)))
        }
    };
    let step = if target < want {
        " (scale_out_step: one step at a time)"
    } else {
        ""
    };
    // The members it grows into may be the ones draining: they start again
    // once stopped.
    let after = if pool.draining > 0 {
        " once the draining members have stopped"
    } else {
        ""
    };
    Decision {
        target,
        why,
        reason: format!("{say}: growing{after}{step}"),
    }
}

/// Shrinking toward `to`, at most `scale_in_step` at a time, never below
/// `min`, and not while members drain.
fn shrink(to: u32, pool: &Pool, p: &AutoscaleSpec, say: String) -> Decision {
    let cur = pool.current;
    if pool.draining > 0 {
        return hold(
            cur,
            Why::Draining,
            format!(
                "{say}; waiting for {} to finish draining",
                plural(pool.draining, "member", "members")
            ),
        );
    }
    let floor = p.scale_in_step.map_or(0, |k| cur.saturating_sub(k));
    let target = to.max(floor).max(p.min);
    let step = if target > to {
        " (scale_in_step: one step at a time)"
    } else {
        ""
    };
    Decision {
        target,
        why: Why::Shrink,
        reason: format!("{say}: stopping the highest members{step}"),
    }
}

/// Toward a fixed size (the fallback): growing as growth does, shrinking
/// at once (there is no trustworthy history to wait on).
fn towards(size: u32, pool: &Pool, p: &AutoscaleSpec, why: Why, say: String) -> Decision {
    let cur = pool.current;
    if size > cur {
        return grow(size, pool, p, why, say);
    }
    if size < cur {
        let mut d = shrink(size, pool, p, say);
        if d.why == Why::Shrink {
            d.why = why;
        }
        return d;
    }
    hold(cur, why, say)
}

/// The depth in a source's answer: the whole (trimmed) text, or the JSON
/// `field` (a dotted path; array items by index), as a number of jobs — a
/// whole number, or a fraction counted up. Anything else is an error that
/// says what was there (shortened).
///
/// # Errors
/// Not JSON, no such field, not a number, negative.
pub fn parse_depth(text: &str, field: Option<&str>) -> Result<u64, String> {
    let number = match field {
        None => text.trim().to_string(),
        Some(path) => {
            let doc: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| format!("the answer is not JSON ({e}): got {}", excerpt(text)))?;
            let mut at = &doc;
            for seg in path.split('.') {
                let next = match at {
                    serde_json::Value::Object(m) => m.get(seg),
                    serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                at = next.ok_or_else(|| format!("the answer has no field `{path}`"))?;
            }
            match at {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.trim().to_string(),
                other => {
                    return Err(format!(
                        "field `{path}` is {}, not a number",
                        excerpt(&other.to_string())
                    ))
                }
            }
        }
    };
    let x: f64 = number
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| format!("got {}, not a number of jobs", excerpt(&number)))?;
    // A float this large saturates; a queue is never that deep.
    Ok(x.ceil() as u64)
}

/// Up to 40 characters of `text` on one line, quoted; `nothing` when empty.
fn excerpt(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return "nothing".into();
    }
    let one: String = t
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(40)
        .collect();
    if t.chars().count() > 40 {
        format!("`{one}…`")
    } else {
        format!("`{one}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DepthSource, DepthSpec};

    const S: Millis = 1000;
    /// Some wall-clock time; the tests count seconds from it.
    const T0: Millis = 1_700_000_000_000;

    fn policy() -> AutoscaleSpec {
        AutoscaleSpec {
            depth: DepthSpec {
                source: DepthSource::File("/depth".into()),
                field: None,
                timeout: Duration::from_secs(1),
            },
            per_instance: 5,
            min: 1,
            max: 6,
            interval: Duration::from_secs(1),
            scale_in_window: Duration::from_secs(10),
            scale_out_step: None,
            scale_in_step: None,
            on_error: OnError::Hold,
            manual_hold: Duration::from_secs(60),
        }
    }

    fn pool(current: u32) -> Pool {
        Pool {
            current,
            ..Pool::default()
        }
    }

    /// A memory fed `depths`, one a second from T0; returns it and the time
    /// of the last reading.
    fn fed(depths: &[Option<u64>], p: &AutoscaleSpec) -> (Memory, Millis) {
        let mut m = Memory::default();
        let mut now = T0;
        for (i, d) in depths.iter().enumerate() {
            now = T0 + i as u64 * S;
            let r = d.ok_or_else(|| "exec `q` exited 1".to_string());
            m.observe(r, now, p.scale_in_window);
        }
        (m, now)
    }

    #[test]
    fn wanted_is_the_depth_over_per_instance_rounded_up_within_min_and_max() {
        let p = policy();
        let cases = [(0, 1), (1, 1), (5, 1), (6, 2), (30, 6), (31, 6), (1000, 6)];
        for (depth, want) in cases {
            assert_eq!(wanted(depth, &p), want, "depth {depth}");
        }
        let zero = AutoscaleSpec { min: 0, ..policy() };
        assert_eq!(wanted(0, &zero), 0);
    }

    /// (name, depths one a second, current size, draining, crash loop,
    /// policy change) → (target, why).
    #[test]
    fn decisions() {
        type Case = (
            &'static str,
            Vec<Option<u64>>,
            u32,
            u32,
            bool,
            fn(AutoscaleSpec) -> AutoscaleSpec,
            u32,
            Why,
        );
        let same = |p| p;
        let w = |n: usize, d: u64| vec![Some(d); n];
        let cat = |a: Vec<Option<u64>>, b: Vec<Option<u64>>| a.into_iter().chain(b).collect();
        let cases: Vec<Case> = vec![
            ("nothing read", vec![], 2, 0, false, same, 2, Why::NoReading),
            (
                "a spike grows at once",
                w(1, 30),
                1,
                0,
                false,
                same,
                6,
                Why::Grow,
            ),
            ("steady", w(3, 12), 3, 0, false, same, 3, Why::Steady),
            (
                "below min grows to min",
                w(1, 0),
                0,
                0,
                false,
                same,
                1,
                Why::Grow,
            ),
            ("clamped to max", w(1, 500), 2, 0, false, same, 6, Why::Grow),
            (
                "step limit in members",
                w(1, 30),
                1,
                0,
                false,
                |p| AutoscaleSpec {
                    scale_out_step: Some(StepLimit::Members(2)),
                    ..p
                },
                3,
                Why::Grow,
            ),
            (
                "step limit in percent (at least one)",
                w(1, 30),
                3,
                0,
                false,
                |p| AutoscaleSpec {
                    scale_out_step: Some(StepLimit::Percent(50)),
                    ..p
                },
                5,
                Why::Grow,
            ),
            (
                "percent of zero still moves",
                w(1, 30),
                0,
                0,
                false,
                |p| AutoscaleSpec {
                    min: 0,
                    scale_out_step: Some(StepLimit::Percent(100)),
                    ..p
                },
                1,
                Why::Grow,
            ),
            (
                "a crash loop is not grown",
                w(1, 30),
                2,
                0,
                true,
                same,
                2,
                Why::CrashLoop,
            ),
            (
                "a crash loop may still shrink",
                w(12, 0),
                4,
                0,
                true,
                same,
                1,
                Why::Shrink,
            ),
            (
                "growing while draining is fine",
                w(1, 30),
                2,
                1,
                false,
                same,
                6,
                Why::Grow,
            ),
            (
                "lower, window not yet covered",
                w(5, 0),
                4,
                0,
                false,
                same,
                4,
                Why::Window,
            ),
            (
                "lower for the whole window",
                w(12, 0),
                4,
                0,
                false,
                same,
                1,
                Why::Shrink,
            ),
            (
                "flapping 0/40 stays up",
                (0..15)
                    .map(|i| Some(if i % 2 == 0 { 0 } else { 40 }))
                    .collect(),
                6,
                0,
                false,
                same,
                6,
                Why::Window,
            ),
            (
                "the window's highest, not the last",
                cat(w(3, 20), w(9, 0)),
                6,
                0,
                false,
                same,
                4,
                Why::Shrink,
            ),
            (
                "not while draining",
                w(12, 0),
                4,
                1,
                false,
                same,
                4,
                Why::Draining,
            ),
            (
                "scale-in step",
                w(12, 0),
                5,
                0,
                false,
                |p| AutoscaleSpec {
                    scale_in_step: Some(1),
                    ..p
                },
                4,
                Why::Shrink,
            ),
            (
                "no window: shrinks at once",
                vec![Some(30), Some(0)],
                6,
                0,
                false,
                |p| AutoscaleSpec {
                    scale_in_window: Duration::ZERO,
                    ..p
                },
                1,
                Why::Shrink,
            ),
            (
                "above a lowered max: no window",
                w(2, 30),
                6,
                0,
                false,
                |p| AutoscaleSpec { max: 3, ..p },
                3,
                Why::Shrink,
            ),
            (
                "a failing source holds",
                cat(w(2, 30), vec![None]),
                2,
                0,
                false,
                same,
                2,
                Why::SourceFailing,
            ),
            (
                "a failing source holds, even at zero",
                vec![None, None, None, None],
                0,
                0,
                false,
                |p| AutoscaleSpec { min: 0, ..p },
                0,
                Why::SourceFailing,
            ),
            (
                "fallback after N in a row",
                cat(w(1, 30), vec![None, None, None]),
                6,
                0,
                false,
                |p| AutoscaleSpec {
                    on_error: OnError::Fallback { size: 2, after: 3 },
                    ..p
                },
                2,
                Why::Fallback,
            ),
            (
                "fallback not before N",
                cat(w(1, 30), vec![None, None]),
                6,
                0,
                false,
                |p| AutoscaleSpec {
                    on_error: OnError::Fallback { size: 2, after: 3 },
                    ..p
                },
                6,
                Why::SourceFailing,
            ),
            (
                "fallback growth obeys a crash loop",
                vec![None, None, None],
                1,
                0,
                true,
                |p| AutoscaleSpec {
                    on_error: OnError::Fallback { size: 4, after: 3 },
                    ..p
                },
                1,
                Why::CrashLoop,
            ),
            (
                "a good reading after errors counts again",
                cat(vec![None, None], w(1, 30)),
                2,
                0,
                false,
                same,
                6,
                Why::Grow,
            ),
        ];
        for (name, depths, current, draining, crash, change, target, why) in cases {
            let p = change(policy());
            let (m, now) = fed(&depths, &p);
            let pool = Pool {
                current,
                draining,
                crash_looping: crash.then(|| "worker.2 is in backoff".to_string()),
            };
            let d = decide(&m, &pool, &p, now);
            assert_eq!((d.target, d.why), (target, why), "{name}: {}", d.reason);
        }
    }

    #[test]
    fn a_drain_steps_down_by_one_per_reading_after_the_window() {
        let p = AutoscaleSpec {
            scale_in_step: Some(1),
            ..policy()
        };
        let mut m = Memory::default();
        let mut size = 6;
        let mut sizes = Vec::new();
        for i in 0..16u64 {
            let now = T0 + i * S;
            m.observe(Ok(0), now, p.scale_in_window);
            if i == 0 {
                m.history[0].depth = 30;
            }
            size = decide(&m, &pool(size), &p, now).target;
            sizes.push(size);
        }
        // Held through the window (the reading of 30 is in it), then one a second.
        assert_eq!(sizes, [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn a_manual_override_holds_until_it_ends() {
        let p = policy();
        let (mut m, now) = fed(&w30(3), &p);
        let until = m.hold_manual(2, now, Duration::from_secs(5));
        let d = decide(&m, &pool(2), &p, now + 4 * S);
        assert_eq!((d.target, d.why), (2, Why::Paused), "{}", d.reason);
        assert!(d.reason.contains("until"), "{}", d.reason);
        // Ended: back to what the depth wants.
        let d = decide(&m, &pool(2), &p, until);
        assert_eq!((d.target, d.why), (6, Why::Grow), "{}", d.reason);
        // Resumed early.
        let mut m2 = m.clone();
        assert!(m2.resume(now + S));
        assert!(!m2.resume(now + S), "nothing left to resume");
        assert_eq!(decide(&m2, &pool(2), &p, now + S).why, Why::Grow);
    }

    fn w30(n: usize) -> Vec<Option<u64>> {
        vec![Some(30); n]
    }

    #[test]
    fn the_history_keeps_the_window_and_the_reading_before_it() {
        let p = policy();
        let (m, now) = fed(&vec![Some(1); 30], &p);
        let first = m.history.front().unwrap().at;
        assert_eq!(first, now - 10 * S, "one reading at the window's start");
        assert_eq!(m.history.len(), 11);
        // Errors prune too, and do not add readings.
        let mut m = m;
        m.observe(Err("x".into()), now + 5 * S, p.scale_in_window);
        assert_eq!(m.history.len(), 6);
        assert_eq!(m.errors.in_a_row, 1);
        assert_eq!(m.errors.total, 1);
        assert_eq!(m.latest().unwrap().at, now);
    }

    #[test]
    fn reasons_name_the_depth() {
        let p = policy();
        let (m, now) = fed(&w30(1), &p);
        let d = decide(&m, &pool(1), &p, now);
        assert_eq!(d.reason, "depth 30 needs 6 at 5 per instance: growing");
        let (m, now) = fed(&[Some(500)], &p);
        let d = decide(&m, &pool(6), &p, now);
        assert_eq!(
            d.reason,
            "depth 500 needs 100 at 5 per instance, capped at max 6: the pool has 6"
        );
        let (m, now) = fed(&[Some(30), None], &p);
        let d = decide(&m, &pool(3), &p, now);
        assert_eq!(
            d.reason,
            "the depth source failed (1 in a row): exec `q` exited 1; the size stays 3"
        );
    }

    #[test]
    fn the_memory_survives_serde() {
        let p = policy();
        let (mut m, now) = fed(&[Some(3), None, Some(40)], &p);
        m.hold_manual(3, now, Duration::from_secs(9));
        m.last = Some(Record {
            at: now,
            from: 1,
            decision: decide(&m, &pool(1), &p, now),
            depth: Some(40),
            error: None,
        });
        let text = serde_json::to_string(&m).unwrap();
        let back: Memory = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn depths_are_read_strictly() {
        let ok: &[(&str, Option<&str>, u64)] = &[
            ("7\n", None, 7),
            ("  0 ", None, 0),
            ("2.5", None, 3),
            ("1e3", None, 1000),
            (r#"{"queue": {"waiting": 12}}"#, Some("queue.waiting"), 12),
            (r#"{"q": [{"n": 4}]}"#, Some("q.0.n"), 4),
            (r#"{"n": "9"}"#, Some("n"), 9),
        ];
        for (text, field, want) in ok {
            assert_eq!(parse_depth(text, *field), Ok(*want), "{text:?} {field:?}");
        }
        let bad: &[(&str, Option<&str>, &str)] = &[
            ("", None, "got nothing, not a number of jobs"),
            ("lots", None, "got `lots`, not a number of jobs"),
            ("-3", None, "got `-3`, not a number of jobs"),
            ("NaN", None, "got `NaN`, not a number of jobs"),
            ("inf", None, "got `inf`, not a number of jobs"),
            ("3\n4", None, "got `3 4`, not a number of jobs"),
            ("12", Some("n"), "the answer has no field `n`"),
            (r#"{"m": 1}"#, Some("n"), "the answer has no field `n`"),
            (
                r#"{"n": [1]}"#,
                Some("n"),
                "field `n` is `[1]`, not a number",
            ),
            ("<html>", Some("n"), "the answer is not JSON"),
        ];
        for (text, field, want) in bad {
            let e = parse_depth(text, *field).unwrap_err();
            assert!(e.starts_with(want), "{text:?} {field:?}: {e}");
        }
        let long = "x".repeat(100);
        let e = parse_depth(&long, None).unwrap_err();
        assert!(e.contains('…') && e.len() < 80, "{e}");
    }
}
