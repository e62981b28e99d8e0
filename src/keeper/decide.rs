//! What a tick does, decided from what it saw and what earlier ticks left
//! behind. Pure: no I/O, no clock; table-tested.
//!
//! Owns: the decision of a tick (nothing to do, deploy, restart the watched
//! services, wait), what the keeper remembers between ticks ([`Memory`]),
//! which processes a deploy restarts ([`restart_plan`]), which processes are
//! not up in a status document ([`not_up`]), and the retry backoff. Must not
//! touch: git, the lock, processes, the log (the caller does all of it).
//!
//! The rules, in order (the first that applies wins):
//! 1. a manual trigger deploys the remote head, whatever came before;
//! 2. a commit whose deploy failed and was escalated is not deployed again
//!    until a new commit or a trigger (not for an unhealthy watched service
//!    either: that is how deploy loops of one head start);
//! 3. a new commit is deployed;
//! 4. a watched service that is not up is restarted, once per episode: if it
//!    is still (or again) not up at a later tick before any tick saw it up,
//!    the keeper escalates once and waits for it to recover, a new commit or
//!    a trigger;
//! 5. otherwise there is nothing to do (and a watched service seen up again
//!    ends its episode).

use std::time::Duration;

use crate::config::{Kind, Stack};
use crate::status::StatusDoc;

/// Backoff between retries and prereq checks: 1 s doubling, at most this.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the keeper remembers between ticks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Memory {
    /// The commit whose deploy failed and was escalated: not deployed again
    /// until the remote moves on or a trigger arrives.
    pub(super) failed_at: Option<String>,
    /// The last failure escalated without a commit to pin it to (fetch,
    /// lock, status…) and when: the same failure again is logged, not
    /// escalated again every interval, until a tick succeeds.
    pub(super) escalated: Option<(String, String)>,
    /// The wait before the next prereq check while one is down.
    pub(super) prereq_backoff: Option<Duration>,
    /// The keeper restarted watched services at this head and has not seen
    /// them up at a tick since.
    pub(super) repaired: Option<Repaired>,
    /// While an export holds the stack: the commit waiting to be deployed
    /// and since when it has been seen.
    pub(super) waiting: Option<(String, String)>,
}

/// Watched services the keeper restarted, waiting to see them up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Repaired {
    /// The remote head they were restarted at.
    pub(super) head: String,
    /// Whether their staying down was escalated already.
    pub(super) escalated: bool,
}

/// A process that is not up, from a status document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NotUp {
    /// The instance: `api`, `worker.2`.
    pub(super) name: String,
    /// Its state word (`failed`, `backoff`…), or `not listed`.
    pub(super) state: String,
    /// Why, when the supervisor says: its message, or its exit code.
    pub(super) reason: Option<String>,
}

impl NotUp {
    /// `tunnel not ready (failed)`.
    pub(super) fn not_ready(&self) -> String {
        format!("{} not ready ({})", self.name, self.state)
    }

    /// `tunnel: failed (exited with code 1)`.
    pub(super) fn line(&self) -> String {
        match &self.reason {
            Some(r) => format!("{}: {} ({r})", self.name, self.state),
            None => format!("{}: {}", self.name, self.state),
        }
    }
}

/// What a tick saw, for [`decide`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    /// The worktree's commit.
    pub(super) head: &'a str,
    /// The remote branch's commit.
    pub(super) remote: &'a str,
    /// A manual trigger is pending.
    pub(super) trigger: bool,
    /// The `watch_health` services that are not up.
    pub(super) unhealthy: &'a [NotUp],
    /// Whether there are `watch_health` services at all.
    pub(super) watching: bool,
}

/// What a tick does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing; the tick line says why.
    Idle(String),
    /// Watched services stay down after the keeper restarted them: no new
    /// restart; escalate (once) and wait.
    StillDown {
        /// What the tick line says.
        line: String,
        /// Escalate now (the first tick that finds them still down).
        escalate: bool,
    },
    /// Deploy the remote head: update, deploy steps, reload, restart.
    Deploy {
        /// Why besides a new commit (`manual trigger`, `tunnel not ready (failed)`).
        why: Vec<String>,
    },
    /// Restart only these watched instances (no new commit to deploy).
    Repair {
        names: Vec<String>,
        why: Vec<String>,
    },
}

/// What waiting for a watched service to recover says.
const WAIT_RECOVERY: &str = "waiting for it to recover, a new commit or `stackctl keep --trigger`";

/// Applies the rules of the module header.
pub(super) fn decide(m: &Memory, f: &Facts<'_>) -> Decision {
    let down: Vec<String> = f.unhealthy.iter().map(NotUp::not_ready).collect();
    let down_note = if down.is_empty() {
        String::new()
    } else {
        format!("; {}", down.join(", "))
    };
    if f.trigger {
        let mut why = vec!["manual trigger".to_string()];
        why.extend(down);
        return Decision::Deploy { why };
    }
    if m.failed_at.as_deref() == Some(f.remote) {
        // The worktree may already be at it (the failure came after the
        // update): being at the remote head does not mean deployed.
        return Decision::Idle(format!(
            "its deploy failed and was escalated{down_note}; waiting for a new commit or \
             `stackctl keep --trigger`"
        ));
    }
    if f.head != f.remote {
        return Decision::Deploy { why: down };
    }
    if !f.unhealthy.is_empty() {
        return match &m.repaired {
            Some(r) if r.head == f.remote => Decision::StillDown {
                line: format!(
                    "{}; still not up after the keeper restarted it at this commit; {}",
                    down.join(", "),
                    if r.escalated {
                        format!("escalated already; {WAIT_RECOVERY}")
                    } else {
                        format!("not restarting it again; {WAIT_RECOVERY}")
                    }
                ),
                escalate: !r.escalated,
            },
            _ => Decision::Repair {
                names: f.unhealthy.iter().map(|n| n.name.clone()).collect(),
                why: down,
            },
        };
    }
    let mut line = String::new();
    if f.watching {
        line.push_str("; watched services ready");
        if m.repaired.is_some() {
            line.push_str(" again");
        }
    }
    line.push_str("; nothing to do");
    Decision::Idle(line.trim_start_matches("; ").to_string())
}

/// The processes of `doc` (of `only`, by instance or pool name, or all)
/// that are not up; a name of `only` missing from the document counts too.
pub(super) fn not_up(doc: &StatusDoc, only: Option<&[String]>) -> Vec<NotUp> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for p in &doc.processes {
        // A pool scaled to 0 is a row of its own: sized so on purpose.
        if p.pool.as_deref() == Some(p.name.as_str()) && p.instance.is_none() {
            continue;
        }
        let base = p.pool.as_deref().unwrap_or(&p.name);
        if let Some(only) = only {
            if !only.iter().any(|w| *w == p.name || w == base) {
                continue;
            }
            seen.push(base);
            seen.push(&p.name);
        }
        if !p.is_up() {
            let reason = p
                .message
                .clone()
                .or_else(|| p.exit_code.map(|c| format!("exit code {c}")));
            out.push(NotUp {
                name: p.name.clone(),
                state: p.state.as_str().to_string(),
                reason,
            });
        }
    }
    for w in only.unwrap_or_default() {
        if !seen.contains(&w.as_str()) {
            out.push(NotUp {
                name: w.clone(),
                state: "not listed".into(),
                reason: None,
            });
        }
    }
    out
}

/// What a deploy restarts after `reload`, as two `stackctl restart` calls:
/// first the tasks re-run and the plain services restart (the supervisor
/// orders them by their dependencies), then the pools roll, member by
/// member, on the tasks just re-run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RestartPlan {
    pub(super) first: Vec<String>,
    pub(super) pools: Vec<String>,
}

impl RestartPlan {
    /// `restarted migrate api; rolled worker`, or `restarted nothing`.
    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.first.is_empty() {
            parts.push(format!("restarted {}", self.first.join(" ")));
        }
        if !self.pools.is_empty() {
            parts.push(format!("rolled {}", self.pools.join(" ")));
        }
        if parts.is_empty() {
            "restarted nothing else".into()
        } else {
            parts.join("; ")
        }
    }
}

/// `follow` (`[keeper] restart`; `None`: every service) plus `also` (watched
/// instances found not up), and the tasks they depend on.
pub(super) fn restart_plan(
    stack: &Stack,
    follow: Option<&[String]>,
    also: &[String],
) -> RestartPlan {
    let mut names: Vec<String> = match follow {
        Some(f) => f.to_vec(),
        None => stack
            .processes
            .iter()
            .filter(|p| p.kind == Kind::Service)
            .map(|p| p.name.clone())
            .collect(),
    };
    for a in also {
        let (base, _) = crate::plan::split_instance(a);
        // Gone from the stack file at the new head: nothing to restart.
        if stack.process(base).is_none() {
            continue;
        }
        if !names.iter().any(|n| n == a || n == base) {
            names.push(a.clone());
        }
    }
    let bases: Vec<String> = names
        .iter()
        .map(|n| crate::plan::split_instance(n).0.to_string())
        .collect();
    let closure = crate::plan::closure(stack, &bases);
    let mut plan = RestartPlan::default();
    for p in &stack.processes {
        let named = names.contains(&p.name);
        if p.kind == Kind::Task && (named || closure.contains(&p.name)) {
            plan.first.push(p.name.clone());
        } else if named && p.is_pool() {
            plan.pools.push(p.name.clone());
        } else if named {
            plan.first.push(p.name.clone());
        }
    }
    // Single pool members (a watched `worker.2`), after the whole processes.
    for n in &names {
        if stack.process(n).is_none() && !plan.first.contains(n) {
            plan.first.push(n.clone());
        }
    }
    plan
}

/// 1 s, then doubling, at most `cap` (and at most [`MAX_BACKOFF`]).
pub(super) fn backoff_after(previous: Option<Duration>, cap: Duration) -> Duration {
    let cap = cap.min(MAX_BACKOFF).max(Duration::from_millis(100));
    match previous {
        None => Duration::from_secs(1).min(cap),
        Some(d) => (d * 2).min(cap),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn down(name: &str, state: &str) -> NotUp {
        NotUp {
            name: name.into(),
            state: state.into(),
            reason: None,
        }
    }

    fn facts<'a>(
        head: &'a str,
        remote: &'a str,
        trigger: bool,
        unhealthy: &'a [NotUp],
    ) -> Facts<'a> {
        Facts {
            head,
            remote,
            trigger,
            unhealthy,
            watching: true,
        }
    }

    fn repaired(head: &str, escalated: bool) -> Memory {
        Memory {
            repaired: Some(Repaired {
                head: head.into(),
                escalated,
            }),
            ..Memory::default()
        }
    }

    fn failed(at: &str) -> Memory {
        Memory {
            failed_at: Some(at.into()),
            ..Memory::default()
        }
    }

    /// The kind of decision, for a compact table.
    fn kind(d: &Decision) -> String {
        match d {
            Decision::Idle(s) => format!("idle: {s}"),
            Decision::StillDown { escalate, .. } => format!("still down, escalate {escalate}"),
            Decision::Deploy { why } => format!("deploy {why:?}"),
            Decision::Repair { names, .. } => format!("repair {names:?}"),
        }
    }

    #[test]
    fn the_rules_in_order() {
        let tunnel = [down("tunnel", "failed")];
        let none: [NotUp; 0] = [];
        let cases: Vec<(&str, Memory, Facts<'_>, &str)> = vec![
            (
                "all quiet",
                Memory::default(),
                facts("a", "a", false, &none),
                "idle: watched services ready; nothing to do",
            ),
            (
                "a new commit",
                Memory::default(),
                facts("a", "b", false, &none),
                "deploy []",
            ),
            (
                "a trigger at the same head",
                Memory::default(),
                facts("a", "a", true, &none),
                "deploy [\"manual trigger\"]",
            ),
            (
                "a trigger beats a failed commit",
                failed("b"),
                facts("a", "b", true, &none),
                "deploy [\"manual trigger\"]",
            ),
            (
                "a failed commit waits",
                failed("b"),
                facts("a", "b", false, &none),
                "idle: its deploy failed and was escalated; waiting for a new commit or `stackctl keep --trigger`",
            ),
            (
                "a failed commit waits, even with a watched service down",
                failed("b"),
                facts("b", "b", false, &tunnel),
                "idle: its deploy failed and was escalated; tunnel not ready (failed); waiting for a new commit or `stackctl keep --trigger`",
            ),
            (
                "a newer commit than the failed one",
                failed("b"),
                facts("b", "c", false, &tunnel),
                "deploy [\"tunnel not ready (failed)\"]",
            ),
            (
                "a watched service down: restart it",
                Memory::default(),
                facts("a", "a", false, &tunnel),
                "repair [\"tunnel\"]",
            ),
            (
                "still down after the restart: escalate once",
                repaired("a", false),
                facts("a", "a", false, &tunnel),
                "still down, escalate true",
            ),
            (
                "still down, escalated: wait",
                repaired("a", true),
                facts("a", "a", false, &tunnel),
                "still down, escalate false",
            ),
            (
                "restarted at an older head: a new episode",
                repaired("z", true),
                facts("a", "a", false, &tunnel),
                "repair [\"tunnel\"]",
            ),
            (
                "up again",
                repaired("a", true),
                facts("a", "a", false, &none),
                "idle: watched services ready again; nothing to do",
            ),
        ];
        for (what, m, f, want) in cases {
            assert_eq!(kind(&decide(&m, &f)), want, "{what}");
        }
    }

    #[test]
    fn still_down_says_what_it_waits_for() {
        let tunnel = [down("tunnel", "failed")];
        let d = decide(&repaired("a", true), &facts("a", "a", false, &tunnel));
        let Decision::StillDown { line, .. } = d else {
            panic!("{d:?}")
        };
        assert!(
            line.starts_with("tunnel not ready (failed); still not up"),
            "{line}"
        );
        assert!(
            line.ends_with("waiting for it to recover, a new commit or `stackctl keep --trigger`"),
            "{line}"
        );
    }

    #[test]
    fn nothing_to_do_without_watched_services() {
        let f = Facts {
            watching: false,
            ..facts("a", "a", false, &[])
        };
        assert_eq!(
            decide(&Memory::default(), &f),
            Decision::Idle("nothing to do".into())
        );
    }

    fn doc(json: serde_json::Value) -> StatusDoc {
        serde_json::from_value(json).unwrap()
    }

    fn proc(
        name: &str,
        kind: &str,
        pool: Option<&str>,
        state: &str,
        ready: bool,
    ) -> serde_json::Value {
        serde_json::json!({"name": name, "kind": kind, "pool": pool, "instance": null,
            "pid": null, "state": state, "ready": ready, "restarts": 0, "uptime_s": null,
            "rss_mb": null, "exit_code": if state == "failed" { Some(3) } else { None }})
    }

    #[test]
    fn not_up_lists_watched_and_missing() {
        let d = doc(serde_json::json!({"stack": "s",
        "supervisor": {"pid": 1, "running": true},
        "processes": [
            proc("api", "service", None, "running", true),
            proc("tunnel", "service", None, "failed", false),
            proc("w.1", "service", Some("w"), "running", true),
            proc("migrate", "task", None, "completed", true),
            proc("idle", "service", Some("idle"), "stopped", false),
        ]}));
        let all = not_up(&d, None);
        assert_eq!(
            all,
            [NotUp {
                name: "tunnel".into(),
                state: "failed".into(),
                reason: Some("exit code 3".into())
            }]
        );
        assert_eq!(all[0].line(), "tunnel: failed (exit code 3)");
        let only = vec!["api".to_string(), "w".into(), "ghost".into()];
        assert_eq!(not_up(&d, Some(&only)), [down("ghost", "not listed")]);
    }

    fn stack(toml: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, toml).unwrap();
        crate::config::load(&path).unwrap()
    }

    const STACK: &str = r#"
[task.migrate]
command = "true"
[task.seed]
command = "true"
[service.redis]
command = "sleep 1"
[service.api]
command = "sleep 1"
depends_on = ["migrate", "redis"]
[service.worker]
command = "sleep 1"
replicas = 2
depends_on = ["migrate", "redis"]
[service.tunnel]
command = "sleep 1"
"#;

    #[test]
    fn a_deploy_restarts_what_follows_the_code_and_reruns_their_tasks() {
        let s = stack(STACK);
        let plan = |follow: Option<&[&str]>, also: &[&str]| {
            let follow: Option<Vec<String>> =
                follow.map(|f| f.iter().map(|s| s.to_string()).collect());
            let also: Vec<String> = also.iter().map(|s| s.to_string()).collect();
            let p = restart_plan(&s, follow.as_deref(), &also);
            (p.first, p.pools)
        };
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Default: every service; the tasks they depend on (not `seed`).
        assert_eq!(
            plan(None, &[]),
            (v(&["migrate", "redis", "api", "tunnel"]), v(&["worker"]))
        );
        // Named: redis and tunnel keep their pids.
        assert_eq!(
            plan(Some(&["api", "worker"]), &[]),
            (v(&["migrate", "api"]), v(&["worker"]))
        );
        // A named task re-runs; a pool alone still re-runs its tasks first.
        assert_eq!(plan(Some(&["seed"]), &[]), (v(&["seed"]), v(&[])));
        assert_eq!(
            plan(Some(&["worker"]), &[]),
            (v(&["migrate"]), v(&["worker"]))
        );
        // Nothing named: nothing restarted.
        assert_eq!(plan(Some(&[]), &[]), (v(&[]), v(&[])));
        // A watched instance found down is added; one of a rolled pool is not.
        assert_eq!(
            plan(Some(&["api", "worker"]), &["tunnel", "worker.2"]),
            (v(&["migrate", "api", "tunnel"]), v(&["worker"]))
        );
        assert_eq!(
            plan(Some(&["api"]), &["worker.2"]),
            (v(&["migrate", "api", "worker.2"]), v(&[]))
        );
        // A watched name the new stack file no longer has is left out.
        assert_eq!(
            plan(Some(&["api"]), &["ghost"]),
            (v(&["migrate", "api"]), v(&[]))
        );
        assert_eq!(
            restart_plan(&s, Some(&[]), &[]).describe(),
            "restarted nothing else"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let cap = Duration::from_secs(5);
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let n = backoff_after(d, cap);
            seen.push(n.as_secs());
            d = Some(n);
        }
        assert_eq!(seen, [1, 2, 4, 5, 5]);
        assert_eq!(
            backoff_after(None, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }
}
