//! What a reload changes and what it does about it: the difference
//! between the stack as loaded and the stack file as it is now, and the
//! plan made of it. Pure.
//!
//! Owns: per process, which keys of its definition differ (as the stack
//! file names them) and which variables of its environment differ (names,
//! never values) ([`Diff`]); whether it was added, removed, redefined
//! (a new process is needed), only resized (`replicas`) or only retuned
//! (settings read live: `max_replicas`, `autoscale`, `on_failure`)
//! ([`Changes`]); and, with what runs now ([`Now`]), what the reload does
//! to each process ([`plan`]: start, stop, restart, replace, roll, rearm,
//! resize, update, nothing). Must not touch: applying it (the
//! supervisor's `reload`), rendering it (`output::reload_plan`).

use super::overlaps;
use crate::config::{ProcessSpec, Schedule, Stack};
use crate::status::{PlanAction, PlanEntry, PlanResize, ReloadPlan};

/// What differs between two versions of one process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Diff {
    /// Keys whose new value needs a new process (`command`, `ready`, …).
    pub keys: Vec<&'static str>,
    /// Variables of its environment added, removed or given another
    /// value: names only.
    pub env: Vec<String>,
    /// Keys read without a new process: `replicas` (a resize),
    /// `max_replicas` (a bound for `scale`), `autoscale` (its autoscaler
    /// reads the policy each tick), `on_failure` (the hooks read the stack
    /// as reloaded when they fire).
    pub live: Vec<&'static str>,
}

impl Diff {
    /// Whether it needs a new process.
    pub(super) fn redefines(&self) -> bool {
        !self.keys.is_empty() || !self.env.is_empty()
    }

    fn is_empty(&self) -> bool {
        !self.redefines() && self.live.is_empty()
    }
}

/// The difference between two versions of a stack file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Redefined: stopped and, if it was active, started again.
    pub changed: Vec<String>,
    /// Only `replicas` changed: a resize, not a restart. The new size.
    /// Not for an autoscaled pool, whose size is its autoscaler's
    /// (`replicas` is only the size it starts at).
    pub resized: Vec<(String, Option<u32>)>,
    /// Its `autoscale` section changed (added, removed, edited), and
    /// nothing that needs a restart: the autoscaler reads the new policy.
    pub retuned: Vec<String>,
    /// What differs, for every process in both versions that differs at
    /// all, in stack order.
    pub diffs: Vec<(String, Diff)>,
}

impl Changes {
    /// What changed from `old` to `new`, in stack order.
    pub(super) fn between(old: &Stack, new: &Stack) -> Changes {
        let mut c = Changes::default();
        for p in &old.processes {
            let Some(n) = new.process(&p.name) else {
                c.removed.push(p.name.clone());
                continue;
            };
            let d = diff(p, n);
            if d.is_empty() {
                continue;
            }
            if d.redefines() {
                c.changed.push(p.name.clone());
            } else {
                if n.autoscale != p.autoscale {
                    c.retuned.push(p.name.clone());
                }
                if n.replicas != p.replicas && n.autoscale.is_none() {
                    c.resized.push((p.name.clone(), n.replicas));
                }
            }
            c.diffs.push((p.name.clone(), d));
        }
        c.added = new
            .processes
            .iter()
            .filter(|p| old.process(&p.name).is_none())
            .map(|p| p.name.clone())
            .collect();
        c
    }

    /// Nothing to start, stop or resize (a retuned policy is none of these).
    pub(super) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.resized.is_empty()
    }

    /// Whether process `name` loses its units (removed or redefined).
    pub(super) fn drops(&self, name: &str) -> bool {
        self.removed.iter().chain(&self.changed).any(|n| n == name)
    }

    /// The processes that lose their units, less those redefined in place.
    pub(super) fn dropped(&self, in_place: &[String]) -> Vec<String> {
        self.removed
            .iter()
            .chain(&self.changed)
            .filter(|n| !in_place.contains(n))
            .cloned()
            .collect()
    }

    fn diff_of(&self, name: &str) -> Option<&Diff> {
        self.diffs.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }
}

/// What differs between `old` and `new` (two versions of one process).
/// Where a variable was set (`env_sources`) and how the layers are
/// written (`env_layers`) are not compared: a process gets only the
/// values, and a value that changed is named. Compared, never printed:
/// values stay here.
fn diff(old: &ProcessSpec, new: &ProcessSpec) -> Diff {
    // Every field by name: a new one does not compile until it is placed.
    let ProcessSpec {
        name: _,
        kind,
        command,
        depends_on,
        env,
        env_sources: _,
        cwd,
        pre_start,
        require_env,
        ready,
        health,
        restart,
        max_restarts,
        restart_window,
        stop_signal,
        stop_timeout,
        replicas,
        max_replicas,
        timeout,
        env_layers: _,
        autoscale,
        listen,
        on_failure,
        memory_max,
        schedule,
    } = old;
    // `ready` and `health` hold a regex: compared as written.
    let shown = |x: &dyn std::fmt::Debug| format!("{x:?}");
    let mut d = Diff::default();
    for (differs, key) in [
        (*kind != new.kind, "kind"),
        (*command != new.command, "command"),
        (*depends_on != new.depends_on, "depends_on"),
        (*cwd != new.cwd, "cwd"),
        (*pre_start != new.pre_start, "pre_start"),
        (*require_env != new.require_env, "require_env"),
        (shown(ready) != shown(&new.ready), "ready"),
        (shown(health) != shown(&new.health), "health"),
        (*restart != new.restart, "restart"),
        (*max_restarts != new.max_restarts, "max_restarts"),
        (*restart_window != new.restart_window, "restart_window"),
        (*stop_signal != new.stop_signal, "stop_signal"),
        (*stop_timeout != new.stop_timeout, "stop_timeout"),
        (*timeout != new.timeout, "timeout"),
        (*listen != new.listen, "listen"),
        (*memory_max != new.memory_max, "memory_max"),
    ] {
        if differs {
            d.keys.push(key);
        }
    }
    if *schedule != new.schedule {
        for k in [schedule, &new.schedule]
            .into_iter()
            .filter_map(schedule_key)
        {
            if !d.keys.contains(&k) {
                d.keys.push(k);
            }
        }
    }
    d.env = env
        .0
        .keys()
        .chain(new.env.0.keys().filter(|k| !env.0.contains_key(*k)))
        .filter(|k| env.0.get(*k) != new.env.0.get(*k))
        .cloned()
        .collect();
    d.env.sort();
    for (differs, key) in [
        (*replicas != new.replicas, "replicas"),
        (*max_replicas != new.max_replicas, "max_replicas"),
        (*autoscale != new.autoscale, "autoscale"),
        (*on_failure != new.on_failure, "on_failure"),
    ] {
        if differs {
            d.live.push(key);
        }
    }
    d
}

/// The key a schedule is written with.
fn schedule_key(s: &Option<Schedule>) -> Option<&'static str> {
    match s {
        Some(Schedule::Cron { .. }) => Some("schedule"),
        Some(Schedule::Every(_)) => Some("every"),
        None => None,
    }
}

/// What runs of a process now, as far as the plan needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Now {
    /// An instance is starting, running or backing off, or (a task) has
    /// completed.
    pub active: bool,
    /// It has instances, and every one runs ready.
    pub serving: bool,
    /// A scheduled task whose schedule is armed.
    pub armed: bool,
    /// A pool's size now.
    pub size: Option<u32>,
}

/// What the reload does to each process, given the changes and what runs
/// `now`: entries in `old`'s order (what was removed among them), then
/// what was added in `new`'s; every process of `old` that did not change
/// is listed as unchanged.
pub(super) fn plan(
    changes: &Changes,
    old: &Stack,
    new: &Stack,
    now: &dyn Fn(&str) -> Now,
) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    for p in &old.processes {
        let Some(n) = new.process(&p.name) else {
            plan.processes
                .push(entry(&p.name, PlanAction::Stop, None, None));
            continue;
        };
        let Some(d) = changes.diff_of(&p.name) else {
            plan.unchanged.push(p.name.clone());
            continue;
        };
        let at = now(&p.name);
        let (action, size) = if d.redefines() {
            redefined(p, n, at)
        } else if let Some((_, Some(to))) = changes.resized.iter().find(|(r, _)| *r == p.name) {
            let from = at.size.unwrap_or(p.replicas.unwrap_or(*to));
            (PlanAction::Resize, Some(PlanResize { from, to: *to }))
        } else {
            (PlanAction::Update, None)
        };
        plan.processes.push(entry(&p.name, action, Some(d), size));
    }
    for name in &changes.added {
        let size = new
            .process(name)
            .and_then(|p| p.replicas)
            .map(|to| PlanResize { from: 0, to });
        plan.processes
            .push(entry(name, PlanAction::Start, None, size));
    }
    plan
}

/// What a reload does to a redefined process, and a pool's size after it
/// (when that changes).
fn redefined(old: &ProcessSpec, new: &ProcessSpec, now: Now) -> (PlanAction, Option<PlanResize>) {
    if now.armed && new.schedule.is_some() {
        return (PlanAction::Rearm, None);
    }
    if !now.active && !now.armed {
        return (PlanAction::Nothing, None);
    }
    // A pool rolls, member by member; not when it gains `listen`: its
    // members hold the port themselves until they stop.
    let gains_listen = old.listen.is_empty() && !new.listen.is_empty();
    if old.is_pool() && new.is_pool() && !gains_listen {
        let from = now.size.unwrap_or(old.replicas.unwrap_or(0));
        let to = match (&new.autoscale, new.replicas) {
            (Some(a), _) => from.clamp(a.min, a.max),
            (None, Some(r)) if new.replicas != old.replicas => r,
            _ => from,
        };
        return (
            PlanAction::Roll,
            (to != from).then_some(PlanResize { from, to }),
        );
    }
    if overlaps(old) && overlaps(new) && now.serving {
        return (PlanAction::Replace, None);
    }
    (PlanAction::Restart, None)
}

fn entry(
    process: &str,
    action: PlanAction,
    diff: Option<&Diff>,
    size: Option<PlanResize>,
) -> PlanEntry {
    let (keys, env) = diff.map_or_else(Default::default, |d| {
        let keys = d
            .keys
            .iter()
            .chain(&d.live)
            .map(|k| k.to_string())
            .collect();
        (keys, d.env.clone())
    });
    PlanEntry {
        process: process.to_string(),
        action,
        keys,
        env,
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two versions of one stack file (same folder: paths are part of
    /// a definition).
    fn stacks(old: &str, new: &str) -> (Stack, Stack) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        std::fs::write(&p, old).unwrap();
        let a = crate::config::load(&p).unwrap();
        std::fs::write(&p, new).unwrap();
        let b = crate::config::load(&p).unwrap();
        (a, b)
    }

    fn diff(old: &str, new: &str) -> Changes {
        let (a, b) = stacks(old, new);
        Changes::between(&a, &b)
    }

    const BASE: &str = r#"
[task.migrate]
command = "true"
[service.api]
command = "sleep 100"
depends_on = ["migrate"]
[service.worker]
command = "sleep 100"
replicas = 2
max_replicas = 4
"#;

    #[test]
    fn no_edit_is_no_change() {
        let c = diff(BASE, BASE);
        assert!(c.is_empty(), "{c:?}");
        assert!(c.diffs.is_empty(), "{c:?}");
    }

    #[test]
    fn each_kind_of_edit_is_told_apart() {
        let new = BASE
            .replace(
                "command = \"sleep 100\"\ndepends_on",
                "command = \"sleep 200\"\ndepends_on",
            )
            .replace("replicas = 2", "replicas = 3")
            .replace("[task.migrate]\ncommand = \"true\"\n", "")
            .replace("depends_on = [\"migrate\"]\n", "")
            + "[service.web]\ncommand = \"sleep 1\"\n";
        let c = diff(BASE, &new);
        assert_eq!(c.removed, ["migrate"]);
        assert_eq!(c.changed, ["api"]);
        assert_eq!(c.resized, [("worker".to_string(), Some(3))]);
        assert_eq!(c.added, ["web"]);
        assert!(c.drops("api") && c.drops("migrate") && !c.drops("worker"));
        assert_eq!(c.diff_of("api").unwrap().keys, ["command", "depends_on"]);
        assert_eq!(c.diff_of("worker").unwrap().live, ["replicas"]);
    }

    #[test]
    fn max_replicas_alone_is_no_restart() {
        let c = diff(BASE, &BASE.replace("max_replicas = 4", "max_replicas = 8"));
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(c.diff_of("worker").unwrap().live, ["max_replicas"]);
    }

    #[test]
    fn an_autoscale_change_is_neither_a_restart_nor_a_resize() {
        let auto = |per: u32, replicas: u32| {
            BASE.replace("replicas = 2", &format!("replicas = {replicas}"))
                + &format!("[service.worker.autoscale]\ndepth = {{ file = \"d\" }}\nper_instance = {per}\n")
        };
        // Edited, and `replicas` with it: only retuned.
        let c = diff(&auto(5, 2), &auto(3, 3));
        assert_eq!(c.retuned, ["worker"]);
        assert!(c.is_empty(), "{c:?}");
        // Added and removed.
        assert_eq!(diff(BASE, &auto(5, 2)).retuned, ["worker"]);
        let c = diff(&auto(5, 2), &BASE.replace("replicas = 2", "replicas = 3"));
        assert_eq!(c.retuned, ["worker"]);
        assert_eq!(c.resized, [("worker".to_string(), Some(3))]);
        // Untouched.
        assert!(diff(&auto(5, 2), &auto(5, 2)).retuned.is_empty());
        // With a redefinition, a restart (which reads the new policy).
        let c = diff(
            &auto(5, 2),
            &auto(3, 2).replace("sleep 100\"\nreplicas", "sleep 101\"\nreplicas"),
        );
        assert_eq!(c.changed, ["worker"]);
        assert!(c.retuned.is_empty());
    }

    #[test]
    fn a_changed_variable_is_named_and_its_value_never_kept_in_the_diff() {
        let a = format!("[env]\nX = \"secret-1\"\nGONE = \"g\"\nSAME = \"s\"\n{BASE}");
        let b = format!("[env]\nX = \"secret-2\"\nNEW = \"n\"\nSAME = \"s\"\n{BASE}");
        let c = diff(&a, &b);
        assert_eq!(c.changed, ["migrate", "api", "worker"]);
        let d = c.diff_of("api").unwrap();
        assert_eq!(d.env, ["GONE", "NEW", "X"]);
        assert!(d.keys.is_empty(), "{d:?}");
        assert!(!format!("{c:?}").contains("secret"), "{c:?}");
    }

    #[test]
    fn where_a_variable_is_set_is_not_a_change_its_value_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        let env = dir.path().join(".env");
        std::fs::write(&p, format!("[stack]\nenv_file = [\".env\"]\n{BASE}")).unwrap();
        std::fs::write(&env, "A=1\n").unwrap();
        let a = crate::config::load(&p).unwrap();
        // The same value on another line (a comment above it).
        std::fs::write(&env, "# set at deploy\nA=1\n").unwrap();
        let b = crate::config::load(&p).unwrap();
        assert!(Changes::between(&a, &b).diffs.is_empty());
        // Another value, and one more variable: named, both.
        std::fs::write(&env, "A=2\nB=unused\n").unwrap();
        let c = crate::config::load(&p).unwrap();
        let ch = Changes::between(&a, &c);
        assert_eq!(ch.changed, ["migrate", "api", "worker"]);
        assert_eq!(ch.diff_of("worker").unwrap().env, ["A", "B"]);
    }

    #[test]
    fn every_key_is_named_as_the_stack_file_writes_it() {
        let one = "[service.s]\ncommand = \"sleep 1\"\n";
        let rows: &[(&str, &[&str], &[&str])] = &[
            ("cwd = \"/tmp\"", &["cwd"], &[]),
            ("pre_start = [\"true\"]", &["pre_start"], &[]),
            ("ready = { alive = \"1s\" }", &["ready"], &[]),
            ("health = { tcp = \"127.0.0.1:1\" }", &["health"], &[]),
            ("restart = \"always\"", &["restart"], &[]),
            ("max_restarts = 9", &["max_restarts"], &[]),
            ("restart_window = \"5m\"", &["restart_window"], &[]),
            ("stop_signal = \"SIGINT\"", &["stop_signal"], &[]),
            ("stop_timeout = \"3s\"", &["stop_timeout"], &[]),
            ("memory_max = \"1G\"", &["memory_max"], &[]),
            ("listen = [\"127.0.0.1:18081\"]", &["listen"], &[]),
            ("require_env = [\"HOME\"]", &["require_env"], &[]),
            ("on_failure = \"true\"", &[], &["on_failure"]),
            ("replicas = 2", &[], &["replicas"]),
        ];
        for (line, keys, live) in rows {
            let c = diff(one, &format!("{one}{line}\n"));
            let d = c.diff_of("s").unwrap_or_else(|| panic!("{line}: no diff"));
            assert_eq!((&d.keys[..], &d.live[..]), (*keys, *live), "{line}");
        }
        let task = "[task.t]\ncommand = \"true\"\n";
        let c = diff(task, &format!("{task}timeout = \"1m\"\n"));
        assert_eq!(c.diff_of("t").unwrap().keys, ["timeout"]);
        let c = diff(task, &format!("{task}every = \"1h\"\n"));
        assert_eq!(c.diff_of("t").unwrap().keys, ["every"]);
        let c = diff(
            &format!("{task}every = \"1h\"\n"),
            &format!("{task}schedule = \"0 3 * * *\"\n"),
        );
        assert_eq!(c.diff_of("t").unwrap().keys, ["every", "schedule"]);
        // A task becomes a service: its restart policy's default with it.
        let c = diff(task, "[service.t]\ncommand = \"true\"\n");
        assert_eq!(c.diff_of("t").unwrap().keys, ["kind", "restart"]);
    }

    /// A plan entry as (process, action, keys, env, size) for tables.
    type Row = (
        &'static str,
        PlanAction,
        Vec<&'static str>,
        Vec<&'static str>,
        Option<(u32, u32)>,
    );

    fn rows(p: &ReloadPlan) -> &[PlanEntry] {
        &p.processes
    }

    fn expect(rs: &[Row]) -> Vec<PlanEntry> {
        rs.iter()
            .map(|(p, a, k, e, s)| PlanEntry {
                process: p.to_string(),
                action: *a,
                keys: k.iter().map(|x| x.to_string()).collect(),
                env: e.iter().map(|x| x.to_string()).collect(),
                size: s.map(|(from, to)| PlanResize { from, to }),
            })
            .collect()
    }

    const RUNNING: Now = Now {
        active: true,
        serving: true,
        armed: false,
        size: None,
    };

    fn plan_of(old: &str, new: &str, now: &dyn Fn(&str) -> Now) -> ReloadPlan {
        let (a, b) = stacks(old, new);
        plan(&Changes::between(&a, &b), &a, &b, now)
    }

    const STACK: &str = r#"
[task.migrate]
command = "true"
[task.backup]
command = "true"
every = "1h"
[service.redis]
command = "sleep 100"
[service.api]
command = "sleep 100"
listen = ["127.0.0.1:18081"]
[service.worker]
command = "sleep 100"
replicas = 2
max_replicas = 4
[service.old]
command = "sleep 100"
"#;

    fn running(name: &str) -> Now {
        match name {
            "worker" => Now {
                size: Some(2),
                ..RUNNING
            },
            "backup" => Now {
                active: false,
                serving: false,
                armed: true,
                size: None,
            },
            _ => RUNNING,
        }
    }

    #[test]
    fn the_plan_says_per_process_what_changed_and_what_is_done() {
        use PlanAction::*;
        let table: &[(&str, &str, &str, Row)] = &[
            (
                "a command edit restarts only that process",
                "[service.old]\ncommand = \"sleep 100\"",
                "[service.old]\ncommand = \"sleep 101\"",
                ("old", Restart, vec!["command"], vec![], None),
            ),
            (
                "a redefined service with listen that serves is replaced",
                "listen = [\"127.0.0.1:18081\"]",
                "listen = [\"127.0.0.1:18081\"]\nstop_timeout = \"2s\"",
                ("api", Replace, vec!["stop_timeout"], vec![], None),
            ),
            (
                "a redefined pool rolls",
                "replicas = 2\n",
                "replicas = 2\nenv = { K = \"v\" }\n",
                ("worker", Roll, vec![], vec!["K"], None),
            ),
            (
                "a redefined pool that grows rolls, then grows",
                "command = \"sleep 100\"\nreplicas = 2",
                "command = \"sleep 101\"\nreplicas = 3",
                (
                    "worker",
                    Roll,
                    vec!["command", "replicas"],
                    vec![],
                    Some((2, 3)),
                ),
            ),
            (
                "replicas alone is a resize",
                "replicas = 2",
                "replicas = 4",
                ("worker", Resize, vec!["replicas"], vec![], Some((2, 4))),
            ),
            (
                "max_replicas alone is an update",
                "max_replicas = 4",
                "max_replicas = 8",
                ("worker", Update, vec!["max_replicas"], vec![], None),
            ),
            (
                "a redefined scheduled task is armed again",
                "every = \"1h\"",
                "every = \"2h\"",
                ("backup", Rearm, vec!["every"], vec![], None),
            ),
            (
                "a completed task runs again",
                "[task.migrate]\ncommand = \"true\"",
                "[task.migrate]\ncommand = \"true; true\"",
                ("migrate", Restart, vec!["command"], vec![], None),
            ),
        ];
        for (what, from, to, row) in table {
            let new = STACK.replacen(from, to, 1);
            assert_ne!(new, STACK, "{what}: the edit did not apply");
            let p = plan_of(STACK, &new, &running);
            assert_eq!(rows(&p), expect(std::slice::from_ref(row)), "{what}");
            assert_eq!(p.unchanged.len(), 5, "{what}: {:?}", p.unchanged);
        }
    }

    #[test]
    fn what_does_not_run_is_not_started_and_what_is_added_or_removed_is_said() {
        use PlanAction::*;
        let stopped = |_: &str| Now::default();
        let new = STACK
            .replace("[service.old]\ncommand = \"sleep 100\"\n", "")
            .replace(
                "command = \"sleep 100\"\nreplicas",
                "command = \"sleep 1\"\nreplicas",
            )
            + "[service.web]\ncommand = \"sleep 1\"\nreplicas = 2\n";
        let p = plan_of(STACK, &new, &stopped);
        assert_eq!(
            rows(&p),
            expect(&[
                ("worker", Nothing, vec!["command"], vec![], None),
                ("old", Stop, vec![], vec![], None),
                ("web", Start, vec![], vec![], Some((0, 2))),
            ])
        );
        assert_eq!(p.unchanged, ["migrate", "backup", "redis", "api"]);
        assert!(plan_of(STACK, STACK, &stopped).is_empty());
    }

    #[test]
    fn a_service_with_listen_that_does_not_serve_or_a_pool_that_gains_listen_restarts() {
        use PlanAction::*;
        let failing = |n: &str| Now {
            serving: false,
            ..running(n)
        };
        let new = STACK.replace(
            "listen = [\"127.0.0.1:18081\"]",
            "listen = [\"127.0.0.1:18081\"]\nmax_restarts = 1",
        );
        let p = plan_of(STACK, &new, &failing);
        assert_eq!(
            rows(&p),
            expect(&[("api", Restart, vec!["max_restarts"], vec![], None)])
        );
        let new = STACK.replace(
            "replicas = 2",
            "replicas = 2\nlisten = [\"127.0.0.1:18082\"]",
        );
        let p = plan_of(STACK, &new, &running);
        assert_eq!(
            rows(&p),
            expect(&[("worker", Restart, vec!["listen"], vec![], None)])
        );
    }

    #[test]
    fn the_headline_names_what_is_done() {
        let new = STACK.replace(
            "[service.old]\ncommand = \"sleep 100\"",
            "[service.old]\ncommand = \"sleep 101\"",
        );
        let mut p = plan_of(STACK, &new, &running);
        assert_eq!(p.headline(), "reload: restart old; 5 unchanged");
        p.dry_run = true;
        assert_eq!(p.headline(), "reload (dry run): restart old; 5 unchanged");
        assert_eq!(
            plan_of(STACK, STACK, &running).headline(),
            "reload: no change"
        );
    }
}
