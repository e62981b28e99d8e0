//! The start timeline: for the last start of the stack (and each restart
//! since), per process instance, when its dependencies were met, when its
//! attempt began and its process was spawned, and when it became ready (a
//! task: completed) or failed, and why; and what decided the total — the
//! critical chain, as `systemd-analyze critical-chain` shows it.
//!
//! Three complaints about `systemd-analyze` (research/beyond.md §5) shape
//! the analysis: waiting is kept apart from a process's own start time
//! (its times are not to be added up: they ran in parallel,
//! systemd#23629); a service without a readiness gate says so ("ready at
//! spawn": its own time is no measurement, systemd#5121); failures come
//! first, with their reason (critical-chain "doesn't tell you anything
//! about failures", systemd#8182).
//!
//! Owns: the record (`Timeline`, kept as `state_dir/timeline.json` by
//! `supervisor::timeline` and read back by `stackctl analyze`, with or
//! without a supervisor), and its analysis ([`analyze`], pure,
//! table-tested), including the one-line summary `start` ends with. A
//! leaf: it imports only `config`'s process kind. Must not touch:
//! recording (the supervisor's), rendering (`output`), files (`state`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Kind;

/// Milliseconds since the epoch: wall-clock times, so that a record means
/// the same to the next supervisor (and to `analyze` without one).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What `state_dir/timeline.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The last start that started something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartRecord>,
}

/// One start of (part of) the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    pub id: u64,
    /// `start` or `restart`.
    pub op: String,
    /// When it began.
    pub at_ms: u64,
    /// When it was over (everything up, or something failed and the rest
    /// was not started); `None` while under way.
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Every instance it was to bring up, in the order they were queued.
    pub processes: Vec<ProcessRecord>,
}

/// One instance in a start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The instance (`api`, `worker.2`).
    pub name: String,
    /// Its process (`worker` for `worker.2`): what others depend on.
    pub process: String,
    pub kind: Kind,
    /// The processes it depends on.
    pub depends_on: Vec<String>,
    /// When the last of its dependencies came up (the start's own time
    /// when it has none); `None` when they never did.
    #[serde(default)]
    pub deps_met_ms: Option<u64>,
    /// Its attempts: the one this start made, then each restart since.
    /// None: it was already up, nothing was started.
    #[serde(default)]
    pub runs: Vec<Run>,
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The start brought it up.
    Start,
    /// It came back by itself later (a crash, a failing health check).
    Restart,
}

/// One attempt of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The attempt number in its run markers.
    pub attempt: u32,
    pub cause: Cause,
    /// When the attempt began (its pre_start commands, then its spawn).
    pub began_ms: u64,
    #[serde(default)]
    pub spawned_ms: Option<u64>,
    /// When it became ready (a task: completed).
    #[serde(default)]
    pub ready_ms: Option<u64>,
    #[serde(default)]
    pub failed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its readiness gate's kind (`http`, `tcp`, `log`, …); none: a
    /// service is ready at spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// It has pre_start commands (its time to spawn is theirs).
    #[serde(default)]
    pub pre_start: bool,
}

impl Run {
    /// Ready, completed or failed: when, if it is over.
    fn done_ms(&self) -> Option<u64> {
        self.ready_ms.or(self.failed_ms)
    }
}

impl ProcessRecord {
    /// The attempt the start made.
    pub fn start_run(&self) -> Option<&Run> {
        self.runs.iter().find(|r| r.cause == Cause::Start)
    }

    /// A service without a readiness gate.
    fn no_gate(&self, run: &Run) -> bool {
        self.kind == Kind::Service && run.gate.is_none()
    }
}

/// What `start` says at the end: how long it took, and what decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartSummary {
    /// From the start to the last process up.
    pub total_s: f64,
    /// The critical chain, first dependency first.
    pub chain: Vec<ChainStep>,
}

/// One link of a summary's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainStep {
    pub name: String,
    /// Its own start time (pre_start, spawn, gate).
    pub own_s: f64,
    /// A service with no gate: ready at spawn.
    #[serde(default)]
    pub no_gate: bool,
}

/// `analyze` (and `analyze --json`): a start, looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// `start` or `restart`.
    pub op: String,
    /// When it began (RFC 3339).
    pub at: String,
    /// Over, and everything came up.
    pub ok: bool,
    /// Still under way.
    pub under_way: bool,
    /// From its beginning to the last process up (or failed).
    pub total_s: Option<f64>,
    /// The critical chain, from the process that decided the total back
    /// to the first it waited for (as `systemd-analyze critical-chain`).
    pub chain: Vec<Link>,
    /// Every instance it started: failures (and what never came up) first,
    /// then by own start time, longest first.
    pub processes: Vec<Row>,
    /// Restarts since the start, in time order.
    pub restarts: Vec<Restart>,
}

/// One link of the critical chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    /// When it was ready, from the start's beginning (systemd's `@`).
    pub ready_s: f64,
    /// Its own start time (systemd's `+`).
    pub own_s: f64,
    /// How long it waited for its dependencies first, and for which one
    /// last (the next link).
    pub waited_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_for: Option<String>,
    #[serde(default)]
    pub no_gate: bool,
}

/// One instance of a start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub kind: Kind,
    /// `ready`, `completed`, `failed`, `starting` (under way) or
    /// `not_started` (a dependency never came up).
    pub outcome: String,
    /// Times from the start's beginning.
    pub deps_met_s: Option<f64>,
    pub spawned_s: Option<f64>,
    pub done_s: Option<f64>,
    /// Waiting for its dependencies (not its own time).
    pub waited_s: Option<f64>,
    /// Its pre_start commands, part of its own time.
    pub pre_start_s: Option<f64>,
    /// Its own start time: from its attempt's beginning to ready.
    pub own_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    #[serde(default)]
    pub no_gate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A restart since the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub name: String,
    pub attempt: u32,
    /// When it began, from the start's beginning.
    pub began_s: f64,
    /// Its own start time, once ready.
    pub own_s: Option<f64>,
    /// `ready`, `completed`, `failed` or `starting`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn secs(ms: u64) -> f64 {
    (ms as f64 / 10.0).round() / 100.0
}

fn since(at: u64, t: u64) -> f64 {
    secs(t.saturating_sub(at))
}

fn outcome(p: &ProcessRecord, r: &Run) -> &'static str {
    match (r.ready_ms, r.failed_ms, p.kind) {
        (Some(_), _, Kind::Task) => "completed",
        (Some(_), _, Kind::Service) => "ready",
        (None, Some(_), _) => "failed",
        _ => "starting",
    }
}

/// Looks at `rec`: the chain that decided its total (the one that decided
/// when `only` was up, when given: an instance, or a process whose last
/// member up decides), every instance with failures first, and the
/// restarts since.
pub fn analyze(rec: &StartRecord, only: Option<&str>) -> Analysis {
    let at = rec.at_ms;
    let started: Vec<(&ProcessRecord, &Run)> = rec
        .processes
        .iter()
        .filter_map(|p| p.start_run().map(|r| (p, r)))
        .collect();
    let failed = started.iter().any(|(_, r)| r.failed_ms.is_some());
    let not_started = rec
        .processes
        .iter()
        .any(|p| p.start_run().is_none() && p.deps_met_ms.is_none());
    let last_done = started.iter().filter_map(|(_, r)| r.done_ms()).max();
    let total_s = rec.ended_ms.or(last_done).map(|t| since(at, t));
    let chain = critical_chain(rec, only);
    let mut processes: Vec<Row> = rec.processes.iter().filter_map(|p| row(rec, p)).collect();
    let rank = |r: &Row| match r.outcome.as_str() {
        "failed" => 0,
        "not_started" => 1,
        "starting" => 2,
        _ => 3,
    };
    processes.sort_by(|a, b| {
        rank(a).cmp(&rank(b)).then(
            b.own_s
                .unwrap_or(0.0)
                .total_cmp(&a.own_s.unwrap_or(0.0))
                .then(a.name.cmp(&b.name)),
        )
    });
    let mut restarts: Vec<Restart> = rec
        .processes
        .iter()
        .flat_map(|p| {
            p.runs
                .iter()
                .filter(|r| r.cause == Cause::Restart)
                .map(move |r| Restart {
                    name: p.name.clone(),
                    attempt: r.attempt,
                    began_s: since(at, r.began_ms),
                    own_s: r.ready_ms.map(|t| secs(t.saturating_sub(r.began_ms))),
                    outcome: outcome(p, r).to_string(),
                    reason: r.reason.clone(),
                })
        })
        .collect();
    restarts.sort_by(|a, b| a.began_s.total_cmp(&b.began_s));
    Analysis {
        op: rec.op.clone(),
        at: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)).to_string(),
        ok: rec.ended_ms.is_some() && !failed && !not_started,
        under_way: rec.ended_ms.is_none(),
        total_s,
        chain,
        processes,
        restarts,
    }
}

/// The row of one instance, if the start did (or meant to do) something
/// with it (an instance already up is left out).
fn row(rec: &StartRecord, p: &ProcessRecord) -> Option<Row> {
    let at = rec.at_ms;
    let Some(r) = p.start_run() else {
        // Never started: its dependencies never came up (else it was
        // already up, and the start did nothing with it).
        if p.deps_met_ms.is_some() || rec.ended_ms.is_none() {
            return None;
        }
        return Some(Row {
            name: p.name.clone(),
            kind: p.kind,
            outcome: "not_started".into(),
            deps_met_s: None,
            spawned_s: None,
            done_s: None,
            waited_s: None,
            pre_start_s: None,
            own_s: None,
            gate: None,
            no_gate: false,
            reason: Some("a dependency did not come up".into()),
        });
    };
    let deps = p.deps_met_ms.unwrap_or(r.began_ms);
    Some(Row {
        name: p.name.clone(),
        kind: p.kind,
        outcome: outcome(p, r).into(),
        deps_met_s: Some(since(at, deps)),
        spawned_s: r.spawned_ms.map(|t| since(at, t)),
        done_s: r.done_ms().map(|t| since(at, t)),
        waited_s: Some(since(at, deps)),
        pre_start_s: r
            .spawned_ms
            .filter(|_| r.pre_start)
            .map(|t| secs(t.saturating_sub(r.began_ms))),
        own_s: r.done_ms().map(|t| secs(t.saturating_sub(r.began_ms))),
        gate: r.gate.clone(),
        no_gate: p.no_gate(r),
        reason: r.reason.clone(),
    })
}

/// From the instance that was up last (or `only`) back through the
/// dependency that was up last before it, until one that waited for
/// nothing this start brought up.
fn critical_chain(rec: &StartRecord, only: Option<&str>) -> Vec<Link> {
    let at = rec.at_ms;
    let ready: Vec<(&ProcessRecord, u64, &Run)> = rec
        .processes
        .iter()
        .filter_map(|p| {
            let r = p.start_run()?;
            r.ready_ms.map(|t| (p, t, r))
        })
        .collect();
    let last = ready
        .iter()
        .filter(|(p, _, _)| only.is_none_or(|o| p.name == o || p.process == o))
        .max_by_key(|(_, t, _)| *t);
    let Some(&(mut cur, mut cur_ready, mut cur_run)) = last else {
        return Vec::new();
    };
    let mut chain = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    loop {
        seen.push(&cur.name);
        let met = cur.deps_met_ms.unwrap_or(cur_run.began_ms);
        // The dependency that was up last, no later than it was waited for.
        let before = ready
            .iter()
            .filter(|(p, t, _)| {
                cur.depends_on.contains(&p.process) && *t <= met && !seen.contains(&p.name.as_str())
            })
            .max_by_key(|(_, t, _)| *t);
        chain.push(Link {
            name: cur.name.clone(),
            ready_s: since(at, cur_ready),
            own_s: secs(cur_ready.saturating_sub(cur_run.began_ms)),
            waited_s: since(at, met),
            waited_for: before.map(|(p, _, _)| p.name.clone()),
            no_gate: cur.no_gate(cur_run),
        });
        match before {
            Some(&(p, t, r)) => {
                cur = p;
                cur_ready = t;
                cur_run = r;
            }
            None => break,
        }
    }
    chain
}

/// What `start` says at the end, once the start is over and up.
pub fn summary(rec: &StartRecord) -> Option<StartSummary> {
    let a = analyze(rec, None);
    if !a.ok {
        return None;
    }
    Some(StartSummary {
        total_s: a.total_s.unwrap_or(0.0),
        chain: a
            .chain
            .iter()
            .rev()
            .map(|l| ChainStep {
                name: l.name.clone(),
                own_s: l.own_s,
                no_gate: l.no_gate,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance: (name, kind, depends_on, deps_met, began, spawned, ready, failed, gate).
    #[allow(clippy::too_many_arguments)]
    fn p(
        name: &str,
        kind: Kind,
        deps: &[&str],
        met: Option<u64>,
        began: u64,
        spawned: u64,
        ready: Option<u64>,
        failed: Option<u64>,
        gate: Option<&str>,
    ) -> ProcessRecord {
        ProcessRecord {
            name: name.into(),
            process: name.split('.').next().unwrap_or(name).into(),
            kind,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            deps_met_ms: met,
            runs: vec![Run {
                attempt: 1,
                cause: Cause::Start,
                began_ms: began,
                spawned_ms: Some(spawned),
                ready_ms: ready,
                failed_ms: failed,
                reason: failed.map(|_| "exited with code 1".into()),
                gate: gate.map(str::to_string),
                pre_start: false,
            }],
        }
    }

    /// migrate 0→400, api waits for it, 400→1500 (http), worker.1/2 wait
    /// for api (no gate), web waits for api, 1500→2100 (tcp).
    fn demo() -> StartRecord {
        StartRecord {
            id: 1,
            op: "start".into(),
            at_ms: 10_000,
            ended_ms: Some(12_100),
            processes: vec![
                p(
                    "migrate",
                    Kind::Task,
                    &[],
                    Some(10_000),
                    10_000,
                    10_010,
                    Some(10_400),
                    None,
                    None,
                ),
                p(
                    "api",
                    Kind::Service,
                    &["migrate"],
                    Some(10_400),
                    10_400,
                    10_410,
                    Some(11_500),
                    None,
                    Some("http"),
                ),
                p(
                    "worker.1",
                    Kind::Service,
                    &["api"],
                    Some(11_500),
                    11_500,
                    11_510,
                    Some(11_510),
                    None,
                    None,
                ),
                p(
                    "worker.2",
                    Kind::Service,
                    &["api"],
                    Some(11_500),
                    11_500,
                    11_520,
                    Some(11_520),
                    None,
                    None,
                ),
                p(
                    "web",
                    Kind::Service,
                    &["api"],
                    Some(11_500),
                    11_500,
                    11_900,
                    Some(12_100),
                    None,
                    Some("tcp"),
                ),
            ],
        }
    }

    #[test]
    fn the_chain_walks_back_from_the_last_up_through_what_it_waited_for() {
        let a = analyze(&demo(), None);
        assert!(a.ok);
        assert_eq!(a.total_s, Some(2.1));
        let names: Vec<&str> = a.chain.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["web", "api", "migrate"]);
        assert_eq!(a.chain[0].ready_s, 2.1);
        assert_eq!(a.chain[0].own_s, 0.6);
        assert_eq!(a.chain[0].waited_s, 1.5);
        assert_eq!(a.chain[0].waited_for.as_deref(), Some("api"));
        assert_eq!(a.chain[2].waited_for, None);
        // Narrowed to a pool: its last member up.
        let w = analyze(&demo(), Some("worker"));
        let names: Vec<&str> = w.chain.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["worker.2", "api", "migrate"]);
        assert!(w.chain[0].no_gate);
        let s = summary(&demo()).unwrap();
        assert_eq!(s.total_s, 2.1);
        let chain: Vec<(&str, f64)> = s.chain.iter().map(|c| (c.name.as_str(), c.own_s)).collect();
        assert_eq!(chain, [("migrate", 0.4), ("api", 1.1), ("web", 0.6)]);
    }

    #[test]
    fn rows_put_failures_first_then_own_time_and_keep_waiting_apart() {
        let mut rec = demo();
        rec.processes[4] = p(
            "web",
            Kind::Service,
            &["api"],
            Some(11_500),
            11_500,
            11_900,
            None,
            Some(12_000),
            Some("tcp"),
        );
        rec.processes.push(ProcessRecord {
            name: "tunnel".into(),
            process: "tunnel".into(),
            kind: Kind::Service,
            depends_on: vec!["web".into()],
            deps_met_ms: None,
            runs: Vec::new(),
        });
        let a = analyze(&rec, None);
        assert!(!a.ok);
        let order: Vec<(&str, &str)> = a
            .processes
            .iter()
            .map(|r| (r.name.as_str(), r.outcome.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("web", "failed"),
                ("tunnel", "not_started"),
                ("api", "ready"),
                ("migrate", "completed"),
                ("worker.2", "ready"),
                ("worker.1", "ready"),
            ]
        );
        let api = &a.processes[2];
        assert_eq!(api.waited_s, Some(0.4));
        assert_eq!(api.own_s, Some(1.1));
        assert!(!api.no_gate);
        assert!(a.processes[4].no_gate);
        assert_eq!(a.processes[0].reason.as_deref(), Some("exited with code 1"));
        // The chain is of what came up; a failed start has no summary.
        assert_eq!(a.chain[0].name, "worker.2");
        assert_eq!(summary(&rec), None);
    }

    #[test]
    fn restarts_since_are_listed_and_an_instance_already_up_is_not() {
        let mut rec = demo();
        rec.processes[1].runs.push(Run {
            attempt: 2,
            cause: Cause::Restart,
            began_ms: 40_000,
            spawned_ms: Some(40_010),
            ready_ms: Some(40_500),
            failed_ms: None,
            reason: None,
            gate: Some("http".into()),
            pre_start: false,
        });
        rec.processes.push(ProcessRecord {
            name: "db".into(),
            process: "db".into(),
            kind: Kind::Service,
            depends_on: vec![],
            deps_met_ms: Some(10_000),
            runs: Vec::new(),
        });
        let a = analyze(&rec, None);
        assert_eq!(a.restarts.len(), 1);
        assert_eq!(a.restarts[0].name, "api");
        assert_eq!(a.restarts[0].began_s, 30.0);
        assert_eq!(a.restarts[0].own_s, Some(0.5));
        assert!(a.processes.iter().all(|r| r.name != "db"));
        // The restart does not move the start's total.
        assert_eq!(a.total_s, Some(2.1));
        let back: StartRecord =
            serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(back, rec);
    }
}
