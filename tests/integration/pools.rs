//! Tests: issue 3 — pools and `scale`, restart policies, back-off and the
//! crash-loop limit, health checks, notify readiness, rolling restarts and
//! `reload` (also by SIGHUP).
//!
//! Every test runs the real binary against small `sh`/`python3` stand-ins
//! in a temp folder, with real signals and sockets on 127.0.0.1. Waits are
//! conditions with deadlines (generous: the machine is shared and loaded);
//! the fixture's `Drop` stops the stack and kills anything still carrying
//! the test's marker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{self, alive, env_of, free_port, python, run_code, wait_for, Run, Stack};

// ---------------------------------------------------------------------------
// Helpers (local to this module)

#[track_caller]
fn ok(s: &Stack, args: &[&str]) -> Run {
    run_code(s, args, 0)
}

/// The pid of `name`, which must be running (and alive).
#[track_caller]
fn running_pid(s: &Stack, name: &str) -> i32 {
    let st = s.status_of(name);
    assert_eq!(
        st["state"],
        "running",
        "{name} is not running: {st}\n{}",
        s.dump()
    );
    let pid = st["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name}: no pid: {st}")) as i32;
    assert!(alive(pid), "{name}: pid {pid} from status is not alive");
    pid
}

/// Names and pids of every listed member of pool `pool`, in instance order.
fn members(s: &Stack, pool: &str) -> Vec<(String, Option<i32>, String)> {
    let doc = s.status_json();
    doc["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        // Members only: a pool with none has a row of its own (`instance` null).
        .filter(|p| p["pool"] == pool && !p["instance"].is_null())
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["pid"].as_i64().map(|x| x as i32),
                p["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `name → pid` of the pool's running members; asserts exactly `n`
/// members `pool.1..n`, all running.
#[track_caller]
fn pool_pids(s: &Stack, pool: &str, n: u32) -> BTreeMap<String, i32> {
    let m = members(s, pool);
    let names: Vec<&str> = m.iter().map(|(n, _, _)| n.as_str()).collect();
    let want: Vec<String> = (1..=n).map(|i| format!("{pool}.{i}")).collect();
    assert_eq!(names, want, "members of {pool}: {m:?}");
    m.into_iter()
        .map(|(name, pid, state)| {
            assert_eq!(state, "running", "{name}: {state}");
            let pid = pid.unwrap_or_else(|| panic!("{name} has no pid"));
            assert!(alive(pid), "{name}: pid {pid} is not alive");
            (name, pid)
        })
        .collect()
}

fn state_of(s: &Stack, name: &str) -> String {
    s.process_status(name)
        .map(|p| p["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn restarts_of(s: &Stack, name: &str) -> i64 {
    s.process_status(name)
        .and_then(|p| p["restarts"].as_i64())
        .unwrap_or(-1)
}

fn line_count(s: &Stack, rel: &str) -> usize {
    s.read(rel).lines().count()
}

fn output(r: &Run) -> String {
    format!("{}\n{}", r.stdout, r.stderr)
}

/// A pool member that idles until SIGTERM, then exits at once.
const IDLE: &str = "exec sleep 1000";

// ---------------------------------------------------------------------------
// 1. Pool start

#[test]
fn pool_members_get_their_own_pid_file_log_and_instance() {
    let s = Stack::new(
        r#"
[service.worker]
command = "echo \"hello from $STACKCTL_PROCESS instance $STACKCTL_INSTANCE\"; exec sleep 1000"
replicas = 3
max_replicas = 8
"#,
    );
    ok(&s, &["start"]);
    let pids = pool_pids(&s, "worker", 3);
    for i in 1..=3u32 {
        let name = format!("worker.{i}");
        let st = s.status_of(&name);
        assert_eq!(st["pool"], "worker", "{st}");
        assert_eq!(st["instance"], i, "{st}");
        assert_eq!(st["kind"], "service", "{st}");
        let pid = pids[&name];
        // Its own pid file, naming its pid, and its identity beside it.
        assert_eq!(
            s.read(&format!("logs/pids/worker.{i}.pid")),
            format!("{pid}\n"),
            "pid file of {name}"
        );
        let rec: serde_json::Value =
            serde_json::from_str(&s.read(&format!("logs/pids/worker.{i}.id")))
                .unwrap_or_else(|e| panic!("identity of {name}: {e}"));
        assert_eq!(rec["pid"], pid, "identity of {name}: {rec}");
        // Its environment.
        assert_eq!(
            env_of(pid, "STACKCTL_INSTANCE").as_deref(),
            Some(&*i.to_string())
        );
        assert_eq!(env_of(pid, "STACKCTL_PROCESS").as_deref(), Some(&*name));
        // Its own log.
        let want = format!("hello from {name} instance {i}");
        wait_for(&format!("`{want}` in logs/{name}.log"), 30, || {
            s.read(&format!("logs/{name}.log")).contains(&want)
        });
        for j in (1..=3u32).filter(|j| *j != i) {
            assert!(
                !s.read(&format!("logs/{name}.log"))
                    .contains(&format!("instance {j}")),
                "{name}'s log has another member's line"
            );
        }
    }
    assert!(!s.path().join("logs/pids/worker.pid").exists());

    // `status worker` covers the pool.
    let r = ok(&s, &["status", "worker"]);
    for i in 1..=3 {
        assert!(r.stdout.contains(&format!("worker.{i}")), "{}", r.stdout);
    }
    let r = ok(&s, &["status", "worker", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["worker.1", "worker.2", "worker.3"]);

    // A member by name.
    let r = ok(&s, &["status", "worker.2", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["processes"].as_array().unwrap().len(), 1, "{doc}");

    // `start --scale` overrides replicas.
    ok(&s, &["stop"]);
    for pid in pids.values() {
        assert!(!alive(*pid), "pid {pid} survived stop");
    }
    ok(&s, &["start", "--scale", "worker=5"]);
    let pids = pool_pids(&s, "worker", 5);
    for (name, pid) in &pids {
        let i = name.rsplit('.').next().unwrap();
        assert_eq!(env_of(*pid, "STACKCTL_INSTANCE").as_deref(), Some(i));
        assert!(s.path().join(format!("logs/pids/{name}.pid")).exists());
    }
}

// ---------------------------------------------------------------------------
// 2. Scale keeps identity

#[test]
fn scale_grows_and_shrinks_keeping_every_untouched_member() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = "{IDLE}"
replicas = 3
max_replicas = 8
"#
    ));
    ok(&s, &["start"]);
    let p3 = pool_pids(&s, "worker", 3);

    // Growing never touches running members.
    ok(&s, &["scale", "worker", "5"]);
    let p5 = pool_pids(&s, "worker", 5);
    for (n, pid) in &p3 {
        assert_eq!(p5[n], *pid, "{n} was touched by growing");
    }

    ok(&s, &["scale", "worker", "+1"]);
    let p6 = pool_pids(&s, "worker", 6);
    for (n, pid) in &p5 {
        assert_eq!(p6[n], *pid, "{n} was touched by +1");
    }

    // Shrinking removes the highest numbers first.
    ok(&s, &["scale", "worker", "--", "-2"]);
    let p4 = pool_pids(&s, "worker", 4);
    for (n, pid) in &p4 {
        assert_eq!(p6[n], *pid, "{n} was touched by shrinking");
    }
    for n in ["worker.5", "worker.6"] {
        assert!(!alive(p6[n]), "{n} (pid {}) survived the shrink", p6[n]);
        assert!(
            !s.path().join(format!("logs/pids/{n}.pid")).exists(),
            "{n}'s pid file is left"
        );
    }

    // `-2` without `--` (clap accepts hyphen values here).
    ok(&s, &["scale", "worker", "-2"]);
    let p2 = pool_pids(&s, "worker", 2);
    for (n, pid) in &p2 {
        assert_eq!(p4[n], *pid, "{n} was touched by -2");
    }
    assert!(!alive(p4["worker.3"]) && !alive(p4["worker.4"]));

    // To zero: nothing of the pool runs.
    ok(&s, &["scale", "worker", "0"]);
    assert!(
        members(&s, "worker").is_empty(),
        "{:?}",
        members(&s, "worker")
    );
    for pid in p2.values() {
        assert!(!alive(*pid), "pid {pid} survived scale 0");
    }
    assert!(s.pids_of_process("worker.1").is_empty());

    // And up again from zero.
    ok(&s, &["scale", "worker", "3"]);
    let again = pool_pids(&s, "worker", 3);
    for (n, pid) in &again {
        let i = n.rsplit('.').next().unwrap();
        assert_eq!(env_of(*pid, "STACKCTL_INSTANCE").as_deref(), Some(i));
    }
    ok(&s, &["scale", "worker", "+2"]);
    let p5b = pool_pids(&s, "worker", 5);
    for (n, pid) in &again {
        assert_eq!(p5b[n], *pid, "{n} was touched by growing");
    }
    // Exactly one live process per member.
    for n in p5b.keys() {
        assert_eq!(
            s.pids_of_process(n).len(),
            1,
            "{n}: {:?}",
            s.pids_of_process(n)
        );
    }
}

#[test]
fn a_crashed_member_comes_back_alone_with_its_instance_number() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = "{IDLE}"
replicas = 3
restart = "on-failure"
"#
    ));
    ok(&s, &["start"]);
    let before = pool_pids(&s, "worker", 3);
    harness::kill(before["worker.2"], 9);
    wait_for("worker.2 restarted", 30, || {
        s.process_status("worker.2").is_some_and(|p| {
            p["state"] == "running" && p["pid"].as_i64() != Some(i64::from(before["worker.2"]))
        })
    });
    let after = pool_pids(&s, "worker", 3);
    assert_eq!(after["worker.1"], before["worker.1"]);
    assert_eq!(after["worker.3"], before["worker.3"]);
    assert_eq!(restarts_of(&s, "worker.2"), 1);
    assert_eq!(restarts_of(&s, "worker.1"), 0);
    assert_eq!(
        env_of(after["worker.2"], "STACKCTL_INSTANCE").as_deref(),
        Some("2")
    );
    assert_eq!(
        s.read("logs/pids/worker.2.pid"),
        format!("{}\n", after["worker.2"])
    );
    let rec: serde_json::Value = serde_json::from_str(&s.read("logs/pids/worker.2.id")).unwrap();
    assert_eq!(rec["pid"], after["worker.2"]);
}

#[test]
fn scale_without_a_supervisor_exits_1_and_says_how_to_start() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = "{IDLE}"
replicas = 2
"#
    ));
    let r = run_code(&s, &["scale", "worker", "3"], 1);
    let out = output(&r);
    assert!(out.contains("no supervisor"), "{out}");
    assert!(out.contains("--scale worker="), "{out}");
    assert!(s.stack_pids().is_empty());
}

#[test]
fn start_scale_resizes_a_running_pool_and_scale_0_leaves_no_member() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = "{IDLE}"
replicas = 3
"#
    ));
    ok(&s, &["start"]);
    let w3 = pool_pids(&s, "worker", 3);
    // Up: running members are left alone.
    ok(&s, &["start", "--scale", "worker=4"]);
    let w4 = pool_pids(&s, "worker", 4);
    for (n, pid) in &w3 {
        assert_eq!(w4[n], *pid, "{n} was touched");
    }
    // Down: the pool is 1, not 1 plus members left running outside it.
    ok(&s, &["start", "--scale", "worker=1"]);
    let w1 = pool_pids(&s, "worker", 1);
    assert_eq!(w1["worker.1"], w3["worker.1"]);
    for n in ["worker.2", "worker.3", "worker.4"] {
        assert!(!alive(w4[n]), "{n} (pid {}) still runs", w4[n]);
    }
    ok(&s, &["scale", "worker", "+1"]);
    pool_pids(&s, "worker", 2);
    ok(&s, &["scale", "worker", "0"]);
    assert!(
        members(&s, "worker").is_empty(),
        "{:?}",
        members(&s, "worker")
    );
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

// ---------------------------------------------------------------------------
// 3. Graceful drain on shrink

#[test]
fn shrinking_lets_a_member_finish_its_job_before_it_exits() {
    let s = Stack::new(
        r#"
[service.worker]
command = """
trap 'echo "$STACKCTL_PROCESS draining"; sleep 1; echo done > job.$STACKCTL_INSTANCE; exit 0' TERM
echo "$STACKCTL_PROCESS ready"
while :; do sleep 1 & wait $!; done
"""
replicas = 2
ready = { log = "worker.* ready", timeout = "30s" }
stop_timeout = "10s"
"#,
    );
    ok(&s, &["start"]);
    let before = pool_pids(&s, "worker", 2);
    let t = Instant::now();
    ok(&s, &["scale", "worker", "1"]);
    let took = t.elapsed();
    // `scale` returned after the job was done, not before.
    assert_eq!(
        s.read("job.2").trim(),
        "done",
        "scale returned before worker.2 finished its job\n{}",
        s.dump()
    );
    assert!(
        took >= Duration::from_millis(900),
        "scale returned in {took:?}, before the 1 s job could finish"
    );
    // Not SIGKILLed: it finished well inside stop_timeout, and its log
    // shows the trap ran to the end.
    assert!(
        took < Duration::from_secs(9),
        "scale took {took:?}: was the member killed after stop_timeout?"
    );
    assert!(!alive(before["worker.2"]));
    assert!(
        s.read("logs/worker.2.log").contains("worker.2 draining"),
        "{}",
        s.dump()
    );
    assert!(
        !s.read("logs/stackctl.log")
            .contains("still alive after SIGKILL"),
        "{}",
        s.read("logs/stackctl.log")
    );
    // The other member was left alone.
    assert_eq!(pool_pids(&s, "worker", 1)["worker.1"], before["worker.1"]);
    assert!(s.read("job.1").is_empty());
}

// ---------------------------------------------------------------------------
// 4. Bad input

#[test]
fn scale_refuses_bad_input_with_exit_2_and_changes_nothing() {
    let s = Stack::new(&format!(
        r#"
[task.migrate]
command = "true"

[service.api]
command = "{IDLE}"

[service.worker]
command = "{IDLE}"
replicas = 2
max_replicas = 4
"#
    ));
    ok(&s, &["start"]);
    let api = running_pid(&s, "api");
    let before = pool_pids(&s, "worker", 2);

    let r = run_code(&s, &["scale", "wroker", "3"], 2);
    let out = output(&r);
    assert!(out.contains("wroker"), "{out}");
    assert!(out.contains("did you mean `worker`"), "{out}");

    let r = run_code(&s, &["scale", "migrate", "2"], 2);
    assert!(output(&r).contains("task"), "{}", output(&r));

    let r = run_code(&s, &["scale", "api", "2"], 2);
    assert!(output(&r).contains("not a pool"), "{}", output(&r));
    assert!(output(&r).contains("replicas"), "{}", output(&r));

    let r = run_code(&s, &["scale", "worker", "--", "-3"], 2);
    assert!(output(&r).contains("cannot shrink"), "{}", output(&r));

    let r = run_code(&s, &["scale", "worker", "5"], 2);
    assert!(output(&r).contains("max_replicas"), "{}", output(&r));
    let r = run_code(&s, &["scale", "worker", "+3"], 2);
    assert!(output(&r).contains("max_replicas"), "{}", output(&r));

    let r = run_code(&s, &["scale", "worker.2", "3"], 2);
    assert!(output(&r).contains("worker.2"), "{}", output(&r));

    let r = run_code(&s, &["scale", "worker", "lots"], 2);
    assert!(output(&r).contains("not a pool size"), "{}", output(&r));

    // Nothing changed.
    assert_eq!(running_pid(&s, "api"), api);
    assert_eq!(pool_pids(&s, "worker", 2), before);
    // `--scale` at start is checked the same way.
    let r = run_code(&s, &["start", "--scale", "worker=9"], 2);
    assert!(output(&r).contains("max_replicas"), "{}", output(&r));
    let r = run_code(&s, &["start", "--scale", "api=2"], 2);
    assert!(output(&r).contains("not a pool"), "{}", output(&r));
    assert_eq!(pool_pids(&s, "worker", 2), before);
    assert_eq!(running_pid(&s, "api"), api);
}

// ---------------------------------------------------------------------------
// 5. Restart policies

/// A stand-in that records each run and exits with `how` after a beat.
fn runner(name: &str, how: &str) -> String {
    format!("echo run >> {name}.runs; sleep 0.3; {how}")
}

#[test]
fn restart_policies_always_on_failure_never() {
    let s = Stack::new(&format!(
        r#"
[service.always-ok]
command = "{}"
restart = "always"

[service.always-bad]
command = "{}"
restart = "always"

[service.onf-ok]
command = "{}"
restart = "on-failure"

[service.onf-bad]
command = "{}"
restart = "on-failure"

[service.onf-sig]
command = "{}"
restart = "on-failure"

[service.never-bad]
command = "{}"
restart = "never"
"#,
        runner("always-ok", "exit 0"),
        runner("always-bad", "exit 3"),
        runner("onf-ok", "exit 0"),
        runner("onf-bad", "exit 4"),
        runner("onf-sig", "kill -KILL $$"),
        runner("never-bad", "exit 7"),
    ));
    ok(&s, &["start"]);
    for name in ["always-ok", "always-bad", "onf-bad", "onf-sig"] {
        wait_for(&format!("{name} restarted"), 30, || {
            line_count(&s, &format!("{name}.runs")) >= 2 && restarts_of(&s, name) >= 1
        });
    }
    wait_for("onf-ok stopped", 30, || state_of(&s, "onf-ok") == "stopped");
    let st = s.status_of("onf-ok");
    assert_eq!(st["restarts"], 0, "{st}");
    assert_eq!(st["exit_code"], 0, "{st}");
    assert_eq!(st["pid"], serde_json::Value::Null, "{st}");

    wait_for("never-bad failed", 30, || {
        state_of(&s, "never-bad") == "failed"
    });
    let st = s.status_of("never-bad");
    assert_eq!(st["exit_code"], 7, "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    assert_eq!(st["ready"], false, "{st}");

    // They stay down: no second run, long after the first exit.
    let t = Instant::now();
    wait_for("a while after the runs", 5, || {
        t.elapsed() > Duration::from_millis(1500)
    });
    assert_eq!(line_count(&s, "onf-ok.runs"), 1);
    assert_eq!(line_count(&s, "never-bad.runs"), 1);
    assert_eq!(state_of(&s, "onf-ok"), "stopped");

    // The first restart is immediate: the supervisor chose no delay.
    let log = s.read("logs/stackctl.log");
    for name in ["always-ok", "always-bad", "onf-bad", "onf-sig"] {
        let first = log
            .lines()
            .find(|l| l.contains(name) && l.contains("restarting in"))
            .unwrap_or_else(|| panic!("no restart of {name} in stackctl.log:\n{log}"));
        assert!(
            first.contains("restarting in 0ns") || first.contains("restarting in 0s"),
            "first restart of {name} was delayed: {first}"
        );
    }
}

#[test]
fn first_restart_follows_the_exit_at_once() {
    // Each run writes its start time; the first run exits after 0.3 s
    // (after writing its exit time), later runs stay up.
    let s = Stack::new(
        r#"
[service.crasher]
command = """
echo "start $(date +%s.%N)" >> times.log
if [ ! -e crashed ]; then touch crashed; sleep 0.3; echo "exit $(date +%s.%N)" >> times.log; exit 1; fi
exec sleep 1000
"""
"#,
    );
    ok(&s, &["start"]);
    wait_for("the second run", 30, || line_count(&s, "times.log") >= 3);
    let t: Vec<f64> = s
        .read("times.log")
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    let gap = t[2] - t[1];
    // Immediate: no 100 ms back-off (the gap is fork + exec of sh + date,
    // generous for a loaded machine but well under a back-off step plus that).
    assert!(
        gap < 0.5,
        "the first restart came {gap:.3}s after the exit\n{}",
        s.dump()
    );
    wait_for("crasher running again", 30, || {
        state_of(&s, "crasher") == "running"
    });
    assert_eq!(restarts_of(&s, "crasher"), 1);
}

// ---------------------------------------------------------------------------
// 6. Back-off and the crash-loop limit

#[test]
fn crash_loop_ends_failed_after_max_restarts_and_spares_the_neighbour() {
    let s = Stack::new(&format!(
        r#"
[service.steady]
command = "{IDLE}"

[service.crasher]
command = "echo spawn >> spawns.log; exit 1"
restart = "on-failure"
max_restarts = 3
restart_window = "60s"
"#
    ));
    ok(&s, &["start", "steady"]);
    let steady = running_pid(&s, "steady");
    // No gate: ready as soon as spawned, even if it exits at once after.
    ok(&s, &["start", "crasher"]);
    wait_for("crasher failed", 30, || state_of(&s, "crasher") == "failed");
    let st = s.status_of("crasher");
    let msg = st["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("crash loop"), "message: {st}");
    assert_eq!(st["restarts"], 3, "{st}");
    // Exactly 1 + max_restarts spawns, and no more afterwards.
    assert_eq!(line_count(&s, "spawns.log"), 4, "{}", s.dump());
    let t = Instant::now();
    wait_for("a while after giving up", 5, || {
        t.elapsed() > Duration::from_millis(1000)
    });
    assert_eq!(line_count(&s, "spawns.log"), 4, "{}", s.dump());
    assert_eq!(state_of(&s, "crasher"), "failed");
    assert!(
        s.read("logs/stackctl.log").contains("crash loop"),
        "stackctl.log does not say why"
    );
    // The neighbour never noticed.
    assert_eq!(running_pid(&s, "steady"), steady);
    // status exits 3: not everything is up.
    run_code(&s, &["status"], 3);
}

#[test]
fn gateless_services_exiting_at_once_all_follow_their_restart_policy() {
    // No `ready`: ready as soon as spawned, so an immediate exit is a crash
    // that the restart policy handles — for every one of them, every time
    // (not "failed before it was ready" when the exit wins a race).
    let n = 20;
    let mut toml = String::new();
    for i in 0..n {
        toml.push_str(&format!(
            "[service.c{i}]\ncommand = \"echo spawn >> c{i}.runs; exit 1\"\nmax_restarts = 1\n\n"
        ));
    }
    let s = Stack::new(&toml);
    ok(&s, &["start"]);
    for i in 0..n {
        let name = format!("c{i}");
        wait_for(&format!("{name} failed"), 30, || {
            state_of(&s, &name) == "failed"
        });
        let st = s.status_of(&name);
        assert!(
            st["message"]
                .as_str()
                .unwrap_or_default()
                .contains("crash loop"),
            "{name}: {st}"
        );
        assert_eq!(line_count(&s, &format!("{name}.runs")), 2, "{name}: {st}");
    }
}

#[test]
fn backoff_delays_grow_between_later_restarts() {
    // Five quick crashes: the gaps between spawns follow 0, 100, 200, 400 ms.
    let s = Stack::new(
        r#"
[service.crasher]
command = "echo \"$(date +%s.%N)\" >> spawns.log; exit 1"
max_restarts = 4
restart_window = "60s"
"#,
    );
    let _ = s.run(&["start"]);
    wait_for("crasher failed", 30, || state_of(&s, "crasher") == "failed");
    let t: Vec<f64> = s
        .read("spawns.log")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(t.len(), 5, "{t:?}");
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Lower bounds are exact (timers never fire early); upper bounds are loose.
    assert!(gaps[1] >= 0.1, "second restart after {:.3}s", gaps[1]);
    assert!(gaps[2] >= 0.2, "third restart after {:.3}s", gaps[2]);
    assert!(gaps[3] >= 0.4, "fourth restart after {:.3}s", gaps[3]);
    assert!(gaps[3] < 3.0, "fourth restart after {:.3}s", gaps[3]);
}

// ---------------------------------------------------------------------------
// 7. Health checks

/// A stand-in tunnel: an HTTP server whose `/health` answers 500 while the
/// file `unhealthy` exists, and hangs while `hang` exists.
const TUNNEL_PY: &str = r#"
import http.server, os, sys, time
port = int(sys.argv[1])
with open("tunnel.starts", "a") as f:
    f.write(f"{os.getpid()}\n")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        while os.path.exists("hang"):
            time.sleep(0.05)
        code = 500 if os.path.exists("unhealthy") else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer.allow_reuse_address = True
s = http.server.HTTPServer(("127.0.0.1", port), H)
print("tunnel up", flush=True)
s.serve_forever()
"#;

fn tunnel_stack(extra_health: &str) -> (Stack, u16) {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[service.tunnel]
command = ["{py}", "tunnel.py", "{port}"]
restart = "always"
ready = {{ http = "http://127.0.0.1:{port}/health", timeout = "30s", interval = "100ms" }}
health = {{ http = "http://127.0.0.1:{port}/health", interval = "200ms", failures = 2{extra_health} }}
"#,
        py = python()
    ));
    s.write("tunnel.py", TUNNEL_PY);
    (s, port)
}

#[test]
fn failing_health_check_restarts_the_tunnel_and_it_comes_back() {
    let (s, port) = tunnel_stack("");
    ok(&s, &["start"]);
    let first = running_pid(&s, "tunnel");
    assert_eq!(restarts_of(&s, "tunnel"), 0);

    // Healthy for a while: left alone.
    let t = Instant::now();
    wait_for("a few health checks", 5, || {
        t.elapsed() > Duration::from_millis(800)
    });
    assert_eq!(running_pid(&s, "tunnel"), first);

    s.write("unhealthy", "");
    wait_for("a second tunnel process", 30, || {
        line_count(&s, "tunnel.starts") >= 2
    });
    assert!(!alive(first), "the unhealthy tunnel {first} is still alive");
    std::fs::remove_file(s.path().join("unhealthy")).unwrap();
    wait_for("tunnel running again", 30, || {
        state_of(&s, "tunnel") == "running"
    });
    let second = running_pid(&s, "tunnel");
    assert_ne!(second, first);
    assert_eq!(restarts_of(&s, "tunnel"), 1);
    let log = s.read("logs/stackctl.log");
    assert!(log.contains("health check failed (1/2)"), "{log}");
    assert!(log.contains("health check failed (2/2)"), "{log}");
    // It answers again.
    let url = format!("127.0.0.1:{port}");
    assert!(std::net::TcpStream::connect(url).is_ok());
}

#[test]
fn hanging_health_probe_is_cut_off_by_its_timeout_and_counts_as_a_failure() {
    let (s, _port) = tunnel_stack(r#", timeout = "300ms""#);
    ok(&s, &["start"]);
    let first = running_pid(&s, "tunnel");
    s.write("hang", "");
    let t = Instant::now();
    // Without a timeout the probe would wait forever and nothing would happen.
    wait_for("a second tunnel process", 30, || {
        line_count(&s, "tunnel.starts") >= 2
    });
    let took = t.elapsed();
    std::fs::remove_file(s.path().join("hang")).unwrap();
    wait_for("tunnel running again", 30, || {
        state_of(&s, "tunnel") == "running"
    });
    assert_ne!(running_pid(&s, "tunnel"), first);
    assert_eq!(restarts_of(&s, "tunnel"), 1);
    // Two cut-off probes (2 × (interval + timeout)) and a stop: seconds, not more.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let log = s.read("logs/stackctl.log");
    assert!(log.contains("health check failed (2/2)"), "{log}");
}

// ---------------------------------------------------------------------------
// 8. Notify readiness

const NOTIFIER_PY: &str = r#"
import os, socket, time
def say(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg.encode(), os.environ["NOTIFY_SOCKET"])
    s.close()
with open("order.log", "a") as f:
    f.write("notifier-start\n")
say("STATUS=warming")
while not os.path.exists("go"):
    time.sleep(0.02)
time.sleep(0.3)
with open("order.log", "a") as f:
    f.write("notifier-ready\n")
say("READY=1")
time.sleep(0.2)
say("STATUS=serving 42 jobs")
while True:
    time.sleep(1)
"#;

#[test]
fn notify_ready_gates_the_dependent_and_status_shows_its_message() {
    let s = Stack::new(&format!(
        r#"
[service.notifier]
command = ["{py}", "notifier.py"]
ready = {{ notify = true, timeout = "60s" }}

[service.dependent]
command = "echo dependent-start >> order.log; exec sleep 1000"
depends_on = ["notifier"]
"#,
        py = python()
    ));
    s.write("notifier.py", NOTIFIER_PY);
    let start = s
        .cmd(&["start"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut start = scopeguard(start);
    wait_for("the notifier to begin", 30, || {
        s.read("order.log").contains("notifier-start")
    });
    // Not ready yet: starting, the dependent waits.
    wait_for("STATUS=warming in status", 30, || {
        s.process_status("notifier")
            .is_some_and(|p| p["message"] == "warming")
    });
    let st = s.status_of("notifier");
    assert_eq!(st["state"], "starting", "{st}");
    assert_eq!(st["ready"], false, "{st}");
    assert!(!s.read("order.log").contains("dependent-start"));
    s.write("go", "");
    let code = start.wait_deadline(60);
    assert_eq!(code, Some(0), "start failed\n{}", s.dump());
    wait_for("dependent to write", 30, || {
        s.read("order.log").contains("dependent-start")
    });
    let order: Vec<String> = s.read("order.log").lines().map(str::to_string).collect();
    assert_eq!(
        order,
        ["notifier-start", "notifier-ready", "dependent-start"],
        "order"
    );
    wait_for("STATUS=serving in status", 30, || {
        s.process_status("notifier")
            .is_some_and(|p| p["message"] == "serving 42 jobs")
    });
    assert_eq!(state_of(&s, "notifier"), "running");
}

/// A child killed (and reaped) on drop unless waited for.
struct Guarded(std::process::Child);

fn scopeguard(c: std::process::Child) -> Guarded {
    Guarded(c)
}

impl Guarded {
    fn wait_deadline(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// 9. Rolling restart

#[test]
fn restart_of_a_pool_rolls_one_member_at_a_time() {
    let s = Stack::new(
        r#"
[service.worker]
command = """
trap 'echo "$STACKCTL_INSTANCE stop $(date +%s.%N)" >> events.log; exit 0' TERM
echo "$STACKCTL_INSTANCE start $(date +%s.%N)" >> events.log
sleep 0.6
echo "$STACKCTL_INSTANCE ready $(date +%s.%N)" >> events.log
echo "member ready"
while :; do sleep 1 & wait $!; done
"""
replicas = 3
ready = { log = "member ready", timeout = "30s" }
stop_timeout = "10s"
"#,
    );
    ok(&s, &["start"]);
    let before = pool_pids(&s, "worker", 3);
    std::fs::remove_file(s.path().join("events.log")).unwrap();
    ok(&s, &["restart", "worker"]);
    let after = pool_pids(&s, "worker", 3);
    for (n, pid) in &before {
        assert_ne!(after[n], *pid, "{n} kept its pid");
        assert!(!alive(*pid), "{n}'s old pid {pid} lives on");
    }
    // Timeline: (instance, event, time).
    let ev: Vec<(String, String, f64)> = s
        .read("events.log")
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap())
        })
        .collect();
    let at = |i: &str, e: &str| -> f64 {
        ev.iter()
            .find(|(a, b, _)| a == i && b == e)
            .unwrap_or_else(|| panic!("no `{i} {e}` in {ev:?}"))
            .2
    };
    // Each member is down from its stop to its ready; those windows never
    // overlap, so at least 2 of 3 run at every moment.
    let down: Vec<(f64, f64)> = ["1", "2", "3"]
        .iter()
        .map(|i| (at(i, "stop"), at(i, "ready")))
        .collect();
    for (k, (stop, ready)) in down.iter().enumerate() {
        assert!(stop < ready, "member {}: {ev:?}", k + 1);
    }
    for k in 0..2 {
        assert!(
            down[k].1 <= down[k + 1].0,
            "member {} stopped before member {} was ready: {ev:?}",
            k + 2,
            k + 1
        );
    }
    assert_eq!(ev.iter().filter(|e| e.1 == "stop").count(), 3, "{ev:?}");
    assert_eq!(ev.iter().filter(|e| e.1 == "start").count(), 3, "{ev:?}");
}

// ---------------------------------------------------------------------------
// 10. reload (and SIGHUP)

fn reload_stack(b_cmd: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"
[service.a]
command = "exec sleep 1000"

[service.b]
command = "{b_cmd}"

[service.worker]
command = "exec sleep 1000"
replicas = {replicas}
{extra}
"#
    )
}

#[test]
fn reload_applies_only_the_difference() {
    let s = Stack::new(&reload_stack(
        "exec sleep 1000",
        2,
        "[service.c]\ncommand = \"exec sleep 1000\"\n",
    ));
    ok(&s, &["start"]);
    let a = running_pid(&s, "a");
    let b = running_pid(&s, "b");
    let c = running_pid(&s, "c");
    let w = pool_pids(&s, "worker", 2);

    // c removed, d added, b's command changed, worker 2 → 3.
    s.write(
        "stack.toml",
        &reload_stack(
            "exec sleep 1001",
            3,
            "[service.d]\ncommand = \"exec sleep 1000\"\n",
        ),
    );
    ok(&s, &["reload"]);
    assert_eq!(running_pid(&s, "a"), a, "a was touched");
    let b2 = running_pid(&s, "b");
    assert_ne!(b2, b, "b's command changed but it was not restarted");
    assert!(!alive(b));
    assert!(!alive(c), "c was removed but still runs");
    assert!(s.process_status("c").is_none(), "c still listed");
    let d = running_pid(&s, "d");
    let w3 = pool_pids(&s, "worker", 3);
    assert_eq!(w3["worker.1"], w["worker.1"]);
    assert_eq!(w3["worker.2"], w["worker.2"]);

    // A broken file: exit 2, check-style diagnostics, nothing changes.
    s.write(
        "stack.toml",
        &reload_stack("exec sleep 1001", 1, "[service.d]\ncomand = \"x\"\n"),
    );
    let r = run_code(&s, &["reload"], 2);
    let out = output(&r);
    assert!(out.contains("stack.toml:"), "no file:line:col: {out}");
    assert!(out.contains("comand"), "{out}");
    assert!(out.contains("command"), "no hint: {out}");
    assert_eq!(running_pid(&s, "a"), a);
    assert_eq!(running_pid(&s, "b"), b2);
    assert_eq!(running_pid(&s, "d"), d);
    assert_eq!(pool_pids(&s, "worker", 3), w3);

    // SIGHUP does the same as `reload`: e added, worker 3 → 1.
    s.write(
        "stack.toml",
        &reload_stack(
            "exec sleep 1001",
            1,
            "[service.d]\ncommand = \"exec sleep 1000\"\n[service.e]\ncommand = \"exec sleep 1000\"\n",
        ),
    );
    let sup = s.supervisor_pid().expect("supervisor pid");
    harness::kill(sup, 1);
    wait_for("e running after SIGHUP", 30, || {
        state_of(&s, "e") == "running"
    });
    wait_for("worker shrunk to 1", 30, || {
        members(&s, "worker").len() == 1
    });
    let w1 = pool_pids(&s, "worker", 1);
    assert_eq!(w1["worker.1"], w["worker.1"]);
    assert!(!alive(w3["worker.2"]) && !alive(w3["worker.3"]));
    assert_eq!(running_pid(&s, "a"), a);
    assert_eq!(running_pid(&s, "b"), b2);
    assert_eq!(running_pid(&s, "d"), d);
    assert_eq!(s.supervisor_pid(), Some(sup), "SIGHUP ended the supervisor");
}

#[test]
fn reload_with_a_changed_pool_command_restarts_every_member_and_only_them() {
    let s = Stack::new(&reload_stack("exec sleep 1000", 2, ""));
    ok(&s, &["start"]);
    let a = running_pid(&s, "a");
    let b = running_pid(&s, "b");
    let w = pool_pids(&s, "worker", 2);
    s.write(
        "stack.toml",
        &reload_stack("exec sleep 1000", 2, "")
            .replace("replicas = 2", "replicas = 2\nenv = { GENERATION = \"2\" }"),
    );
    ok(&s, &["reload"]);
    let w2 = pool_pids(&s, "worker", 2);
    for (n, pid) in &w {
        assert_ne!(w2[n], *pid, "{n} kept its pid after its env changed");
        assert!(!alive(*pid));
        assert_eq!(env_of(w2[n], "GENERATION").as_deref(), Some("2"));
    }
    assert_eq!(running_pid(&s, "a"), a);
    assert_eq!(running_pid(&s, "b"), b);
    // Unchanged file: nothing happens.
    ok(&s, &["reload"]);
    assert_eq!(pool_pids(&s, "worker", 2), w2);
    assert_eq!(running_pid(&s, "a"), a);
}

#[test]
fn reload_of_max_replicas_alone_takes_effect_without_touching_anything() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = "{IDLE}"
replicas = 2
max_replicas = 2
"#
    ));
    ok(&s, &["start"]);
    let w = pool_pids(&s, "worker", 2);
    run_code(&s, &["scale", "worker", "4"], 2);
    s.write(
        "stack.toml",
        &s.read("stack.toml")
            .replace("max_replicas = 2", "max_replicas = 4"),
    );
    ok(&s, &["reload"]);
    assert_eq!(
        pool_pids(&s, "worker", 2),
        w,
        "raising max_replicas touched members"
    );
    ok(&s, &["scale", "worker", "4"]);
    let w4 = pool_pids(&s, "worker", 4);
    assert_eq!(w4["worker.1"], w["worker.1"]);
    run_code(&s, &["scale", "worker", "5"], 2);
}

#[test]
fn sighup_with_a_broken_file_changes_nothing_and_keeps_the_supervisor() {
    let s = Stack::new(&reload_stack("exec sleep 1000", 2, ""));
    ok(&s, &["start"]);
    let a = running_pid(&s, "a");
    let w = pool_pids(&s, "worker", 2);
    let sup = s.supervisor_pid().unwrap();
    s.write("stack.toml", "[service.a]\ncommand = \n");
    harness::kill(sup, 1);
    wait_for("`reload refused` in stackctl.log", 30, || {
        s.read("logs/stackctl.log").contains("reload refused")
    });
    let log = s.read("logs/stackctl.log");
    assert!(log.contains("stack.toml:"), "no file:line:col in {log}");
    assert!(alive(sup));
    // status still answers (leniently) from the supervisor.
    let doc = s.status_json();
    assert_eq!(doc["supervisor"]["pid"], sup);
    assert_eq!(running_pid(&s, "a"), a);
    assert_eq!(pool_pids(&s, "worker", 2), w);
}

/// A server that exits 0 on SIGTERM (uvicorn, gunicorn, most frameworks)
/// and fails its health check is restarted under the default
/// `restart = "on-failure"`: stackctl stopped it for failing, so its exit
/// is a failure whatever its code.
#[test]
fn an_unhealthy_server_that_exits_0_on_sigterm_is_restarted_under_on_failure() {
    let s = Stack::new(
        r#"
[service.api]
command = "exec sh ./api.sh"
health = { exec = "test ! -e sick", interval = "100ms", failures = 1 }
"#,
    );
    s.write(
        "api.sh",
        "echo $$ >> api.starts\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n",
    );
    ok(&s, &["start"]);
    let first = running_pid(&s, "api");
    s.write("sick", "");
    wait_for("a second api process", 30, || {
        line_count(&s, "api.starts") >= 2
    });
    std::fs::remove_file(s.path().join("sick")).unwrap();
    wait_for("api running again", 30, || state_of(&s, "api") == "running");
    assert_ne!(running_pid(&s, "api"), first);
    assert!(!alive(first), "the unhealthy api {first} is still alive");
    assert_eq!(restarts_of(&s, "api"), 1);
}

/// Says `up`, and on SIGTERM `draining`; exits (`drained`) once `release`
/// exists. Every line names the member and its pid.
const DRAINS_ON_RELEASE: &str = r#"#!/bin/sh
me="$STACKCTL_INSTANCE $$"
trap 'echo "draining $me" >> events; while [ ! -e release ]; do sleep 0.02; done; echo "drained $me" >> events; exit 0' TERM
echo "up $me" >> events
while :; do sleep 0.05; done
"#;

/// A `scale` that grows a pool back while an earlier `scale` is still
/// draining the same members waits for them: a member never has two
/// processes, and the new one starts only after its predecessor exited.
#[test]
fn a_grow_racing_a_shrink_waits_for_the_drained_members_and_never_doubles_one() {
    let s = Stack::new(
        r#"
[service.w]
command = "exec sh ./w.sh"
replicas = 1
stop_timeout = "60s"
"#,
    );
    s.write("w.sh", DRAINS_ON_RELEASE);
    // Drainers exit once `release` exists: written on the way out too, so
    // that a failing test does not wait out their stop_timeout.
    struct Release(std::path::PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, "");
        }
    }
    let _release = Release(s.path().join("release"));
    ok(&s, &["start"]);
    ok(&s, &["scale", "w", "4"]);
    wait_for("four members up", 30, || {
        s.read("events")
            .lines()
            .filter(|l| l.starts_with("up "))
            .count()
            == 4
    });
    let spawn = |args: &[&str]| {
        s.cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn stackctl")
    };
    let shrink = spawn(&["scale", "w", "1"]);
    wait_for("members 2 to 4 to drain", 30, || {
        s.read("events")
            .lines()
            .filter(|l| l.starts_with("draining "))
            .count()
            == 3
    });
    let grow = spawn(&["scale", "w", "4"]);
    // The grow must not start anything while they drain. Its request is
    // answered in milliseconds when it does not wait, so two seconds of
    // watching catch a grow that does not.
    let early = Instant::now() + Duration::from_secs(2);
    while Instant::now() < early {
        let ups = s
            .read("events")
            .lines()
            .filter(|l| l.starts_with("up "))
            .count();
        assert_eq!(
            ups,
            4,
            "a member started while its predecessor drained:\n{}",
            s.read("events")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.write("release", "");
    for (what, c) in [("scale w 1", shrink), ("scale w 4", grow)] {
        let out = c.wait_with_output().expect("wait stackctl");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("the members grown back to be up", 30, || {
        s.read("events")
            .lines()
            .filter(|l| l.starts_with("up "))
            .count()
            == 7
    });
    let events = s.read("events");
    for m in 2..=4 {
        let of: Vec<&str> = events
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some(&m.to_string()))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(of, ["up", "draining", "drained", "up"], "w.{m}:\n{events}");
        let last_up = events
            .lines()
            .rfind(|l| l.starts_with(&format!("up {m} ")))
            .and_then(|l| l.split(' ').nth(2))
            .and_then(|p| p.parse::<i32>().ok());
        assert_eq!(Some(running_pid(&s, &format!("w.{m}"))), last_up, "w.{m}");
    }
    assert_eq!(members(&s, "w").len(), 4, "{}", s.status_json());
}
