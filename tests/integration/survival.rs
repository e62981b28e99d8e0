//! Tests: the stack outlives its supervisor (issue 10) — adversarial.
//!
//! The supervisor (and, once, the anchor) is killed with SIGKILL at the
//! worst moments: mid-burst, mid-start with a gate pending, mid-task,
//! mid-stop, mid-scale, during a crash-loop back-off, during its own
//! adoption, racing concurrent `start`s. After each, the stack must be what
//! it was: same pids, states, restart counts, crash-loop windows; every
//! line of output in its log exactly once, in order, whole; never two
//! copies of a process, never two supervisors; and a stop after adoption
//! keeps every guarantee of a normal one.
//!
//! Real binary, real processes (`sh`/`python3` stand-ins), real signals.
//! Waits are conditions with deadlines; a [`Sentry`] thread samples `/proc`
//! meanwhile and records any moment with two supervisors, two anchors or
//! two copies of a process.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{self, alive, env_of, fully_dead, python, run_code, wait_for, Run, Stack};

// ---------------------------------------------------------------------------
// Helpers

/// Runs `start args…`, asserting exit 0 with the whole context on failure.
#[track_caller]
fn start_ok(s: &Stack, args: &[&str]) -> Run {
    let mut full = vec!["start"];
    full.extend_from_slice(args);
    run_code(s, &full, 0)
}

/// The pid `status` shows for a running `name`.
#[track_caller]
fn running_pid(s: &Stack, name: &str) -> i32 {
    let st = s.status_of(name);
    assert_eq!(st["state"], "running", "{name}: {st}\n{}", s.dump());
    st["pid"].as_i64().unwrap_or_else(|| panic!("{name}: {st}")) as i32
}

/// The arguments of a live process.
fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Live marked processes that run `stackctl <mode>` (`supervise`, `anchor`).
fn stackctl_in(marker: &str, mode: &str) -> Vec<i32> {
    harness::marked_pids(marker)
        .into_iter()
        .filter(|p| {
            let a = argv(*p);
            a.first().is_some_and(|x| x.ends_with("stackctl"))
                && a.get(1).map(String::as_str) == Some(mode)
        })
        .collect()
}

fn supervisors(s: &Stack) -> Vec<i32> {
    stackctl_in(&s.marker, "supervise")
}

fn anchors(s: &Stack) -> Vec<i32> {
    stackctl_in(&s.marker, "anchor")
}

/// The supervisor that answers now (waits for one).
#[track_caller]
fn serving_supervisor(s: &Stack) -> i32 {
    let mut pid = None;
    wait_for("a supervisor to answer", 30, || {
        pid = s.supervisor_pid();
        pid.is_some()
    });
    pid.unwrap_or_default()
}

/// SIGKILLs the supervisor that answers now and waits until it is gone.
#[track_caller]
fn kill_supervisor(s: &Stack) -> i32 {
    let sup = serving_supervisor(s);
    harness::kill(sup, 9);
    wait_for("the killed supervisor to be gone", 30, || fully_dead(sup));
    sup
}

/// Waits for a supervisor other than `old` to answer, and returns it.
#[track_caller]
fn supervisor_after(s: &Stack, old: i32) -> i32 {
    let mut pid = None;
    wait_for("a new supervisor to answer", 40, || {
        pid = s.supervisor_pid().filter(|p| *p != old);
        pid.is_some()
    });
    pid.unwrap_or_default()
}

/// Whether `cond` holds within `secs` (checked every 10 ms): for a wait
/// whose failure the caller explains itself.
fn within(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// `/proc/<pid>/stat`'s state letter and parent pid.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = s.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Asserts that none of `pids` is alive, and none is a zombie that a live
/// stackctl process (its parent) failed to reap. (A zombie whose parent is
/// pid 1 is the init's to reap; this machine's init does not.)
#[track_caller]
fn assert_gone_and_reaped(pids: &[i32], what: &str) {
    for &p in pids {
        match proc_state(p) {
            None => {}
            Some(('Z', ppid)) if ppid != 1 => {
                let parent = argv(ppid);
                panic!(
                    "{what}: pid {p} is a zombie of pid {ppid} {parent:?}, which did not reap it"
                );
            }
            Some(('Z' | 'X', _)) => {}
            Some((st, ppid)) => panic!(
                "{what}: pid {p} survived (state {st}, parent {ppid} {:?}, argv {:?})",
                argv(ppid),
                argv(p)
            ),
        }
    }
}

/// Zombies whose parent is one of `parents`.
fn zombies_of(parents: &[i32]) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(('Z', ppid)) = proc_state(pid) {
            if parents.contains(&ppid) {
                out.push((pid, ppid));
            }
        }
    }
    out
}

/// Runs `stackctl args…` in the background (its output captured).
fn spawn_cli(s: &Stack, args: &[&str]) -> Child {
    s.cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stackctl")
}

/// Runs `stackctl args…` in the background, its stdout and stderr into
/// the file `rel` of the stack folder (to wait on what it printed so far).
fn spawn_cli_into(s: &Stack, args: &[&str], rel: &str) -> Child {
    let out = std::fs::File::create(s.path().join(rel)).expect("output file");
    let err = out.try_clone().expect("dup");
    s.cmd(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn stackctl")
}

/// Waits (at most 60 s: a CLI that hangs is a failure too) for a
/// background `stackctl` and returns its exit code and output.
#[track_caller]
fn finish(mut c: Child) -> (Option<i32>, String) {
    let ended = within(60, || c.try_wait().expect("try_wait").is_some());
    if !ended {
        let _ = c.kill();
    }
    let out = c.wait_with_output().expect("wait stackctl");
    assert!(
        ended,
        "a stackctl command hung for 60s:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits for a command whose supervisor was killed midway, and checks that
/// it did not fail for it: it waited for the relaunched supervisor, which
/// finished the operation.
#[track_caller]
fn survived(c: Child, what: &str) {
    let (code, out) = finish(c);
    assert_eq!(
        code,
        Some(0),
        "the {what} whose supervisor was killed did not see it through:\n{out}"
    );
}

fn lines(s: &Stack, rel: &str) -> Vec<String> {
    s.read(rel)
        .lines()
        .filter(|l| !is_marker(l))
        .map(str::to_string)
        .collect()
}

/// A run marker stackctl writes into a log when a run starts or ends.
fn is_marker(line: &str) -> bool {
    line.starts_with("── stackctl: ")
}

/// Watches `/proc` in a thread for as long as it lives and records every
/// moment with more than one live supervisor, more than one live anchor, or
/// more than one live process of the same instance (`STACKCTL_PROCESS`).
/// A process whose parent is in the same list (forked, not yet exec'd, or
/// a stand-in's own child) does not count, nor a probe the supervisor runs.
struct Sentry {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sentry {
    fn watch(s: &Stack) -> Sentry {
        let marker = s.marker.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let mut sups = Vec::new();
                let mut anchors = Vec::new();
                let mut copies: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for p in harness::marked_pids(&marker) {
                    let a = argv(p);
                    let is_stackctl = a.first().is_some_and(|x| x.ends_with("stackctl"));
                    match a.get(1).map(String::as_str) {
                        Some("supervise") if is_stackctl => sups.push(p),
                        Some("anchor") if is_stackctl => anchors.push(p),
                        _ => {
                            if let Some(inst) = env_of(p, "STACKCTL_PROCESS") {
                                copies.entry(inst).or_default().push(p);
                            }
                        }
                    }
                }
                // A process forked by one of the others and not yet exec'd
                // (the anchor spawning, a shell's child) carries its
                // parent's argv and environment: it is not a second copy.
                let doubled = |v: &Vec<i32>| {
                    v.iter()
                        .filter(|p| alive(**p))
                        .filter(|p| proc_state(**p).is_some_and(|(_, pp)| !v.contains(&pp)))
                        .count()
                        > 1
                };
                let mut found = Vec::new();
                if doubled(&sups) {
                    found.push(format!("two supervisors: {sups:?}"));
                }
                if doubled(&anchors) {
                    found.push(format!("two anchors: {anchors:?}"));
                }
                for (inst, pids) in &mut copies {
                    // A probe the supervisor runs (`exec` health check)
                    // has the instance's environment, not its role.
                    pids.retain(|p| proc_state(*p).is_some_and(|(_, pp)| !sups.contains(&pp)));
                    if doubled(pids) {
                        found.push(format!("two copies of {inst}: {pids:?}"));
                    }
                }
                if !found.is_empty() {
                    seen2.lock().unwrap().extend(found);
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        });
        Sentry {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops watching and asserts nothing was seen.
    #[track_caller]
    fn assert_clean(mut self, s: &Stack) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap().clone();
        let mut uniq = seen.clone();
        uniq.dedup();
        assert!(
            uniq.is_empty(),
            "seen during the test: {uniq:#?}\n{}",
            s.dump()
        );
    }
}

impl Drop for Sentry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// 1. kill -9 of the supervisor mid-burst: no line lost, duplicated or split

/// Writes numbered lines in bursts of 1000 as fast as Python can
/// (block-buffered: its writes cut lines anywhere; the pipe fills), with a
/// pause of 10 ms between bursts so that 10 of them do not take the whole
/// machine, until `stop` exists; then `END <name> <count>`.
const WRITER: &str = r#"
import os, sys, time
name = os.environ["STACKCTL_PROCESS"]
w = sys.stdout.write
i = 0
while not os.path.exists("stop"):
    for _ in range(1000):
        w(f"{name} {i:09d}\n")
        i += 1
    time.sleep(0.01)
w(f"END {name} {i}\n")
sys.stdout.flush()
"#;

/// Every line of `text` is `<name> <n>` for n = 0, 1, … in order, then
/// `END <name> <count>` and nothing after; describes the first violation.
fn check_numbered(name: &str, text: &str) -> Result<u64, String> {
    check_numbered_with_gaps(name, text, 0)
}

/// As [`check_numbered`], but up to `gaps` runs of lines may be missing:
/// what an anchor killed with `kill -9` had read from a pipe and not yet
/// written (at most one read per pipe and kill; README, "What survives
/// what"). Nothing duplicated, split or out of order, ever.
fn check_numbered_with_gaps(name: &str, text: &str, gaps: usize) -> Result<u64, String> {
    let mut next = 0u64;
    let mut skipped = 0usize;
    let mut lines = text.split_inclusive('\n');
    for line in lines.by_ref() {
        if is_marker(line) {
            continue;
        }
        let Some(body) = line.strip_suffix('\n') else {
            return Err(format!(
                "line {next}: no newline at the end of the log: {line:?}"
            ));
        };
        if let Some(end) = body.strip_prefix("END ") {
            let want = format!("{name} {next}");
            if end != want {
                return Err(format!("the end line is {body:?}, expected `END {want}`"));
            }
            let rest: Vec<&str> = lines.filter(|l| !is_marker(l)).collect();
            if !rest.is_empty() {
                return Err(format!(
                    "{} lines after the end: {:?}",
                    rest.len(),
                    &rest[..rest.len().min(3)]
                ));
            }
            return Ok(next);
        }
        let want = format!("{name} {next:09}");
        if body != want {
            let later = body
                .strip_prefix(&format!("{name} "))
                .filter(|n| n.len() == 9)
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n > next);
            match later {
                Some(n) if skipped < gaps => {
                    skipped += 1;
                    next = n;
                }
                _ => return Err(format!("line {next} is {body:?}, expected {want:?} (lost, duplicated, split or out of order)")),
            }
        }
        next += 1;
    }
    Err(format!("{next} lines and no end line"))
}

#[test]
fn kill_9_of_the_supervisor_mid_burst_loses_duplicates_and_splits_no_line() {
    let s = Stack::new(&format!(
        r#"
[stack.logs]
max_size = "2GB"

[service.w]
command = "exec \"{py}\" writer.py"
replicas = 10
restart = "never"
"#,
        py = python()
    ));
    s.write("writer.py", WRITER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let names: Vec<String> = (1..=10).map(|i| format!("w.{i}")).collect();
    let pids: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    // Every writer has written (and the logs get bigger) before each kill.
    let size = |n: &str| std::fs::metadata(s.state(&format!("{n}.log"))).map_or(0, |m| m.len());
    for round in 0..20 {
        let before: Vec<u64> = names.iter().map(|n| size(n)).collect();
        wait_for(&format!("round {round}: every writer to write"), 30, || {
            names.iter().zip(&before).all(|(n, b)| size(n) > *b)
        });
        let old = kill_supervisor(&s);
        // Alternately the anchor's own relaunch and a `start` that asks for one.
        if round % 2 == 1 {
            start_ok(&s, &[]);
        }
        supervisor_after(&s, old);
    }
    for (n, p) in names.iter().zip(&pids) {
        assert!(
            alive(*p),
            "{n} (pid {p}) died during the kills\n{}",
            s.dump()
        );
        assert_eq!(running_pid(&s, n), *p, "{n} has another pid");
    }
    s.write("stop", "");
    wait_for("every writer to finish", 60, || {
        pids.iter().all(|p| !alive(*p))
    });
    wait_for("every writer's end line in its log", 30, || {
        names
            .iter()
            .all(|n| s.read(&format!("logs/{n}.log")).contains("END "))
    });
    let mut total = 0;
    for n in &names {
        let text = s.read(&format!("logs/{n}.log"));
        match check_numbered(n, &text) {
            Ok(count) => total += count,
            Err(e) => panic!("{n}.log: {e}"),
        }
    }
    assert!(total > 0);
    eprintln!("kill -9 mid-burst: {total} lines across 20 kills, every one exactly once");
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// 2. After kill -9: same pids, states, flags, counts; uptimes, health checks,
//    restart policies and crash-loop windows go on

/// A crash looper whose every run is counted in `runs` and ends (exit 3)
/// only once the test creates `tick.<run>`.
const LOOPER: &str = r#"#!/bin/sh
n=$(( $(cat runs 2>/dev/null | wc -l) + 1 ))
echo "run $n $$" >> runs
while [ ! -e "tick.$n" ]; do sleep 0.02; done
exit 3
"#;

/// What must survive a supervisor: pid, state, readiness, restart count.
fn facts(
    s: &Stack,
    name: &str,
) -> (
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
) {
    let st = s.status_of(name);
    (
        st["pid"].clone(),
        st["state"].clone(),
        st["ready"].clone(),
        st["restarts"].clone(),
    )
}

#[test]
fn after_kill_9_everything_is_adopted_as_it_was_and_every_policy_resumes() {
    let s = Stack::new(
        r#"
[service.plain]
command = "exec sleep 1000"

[service.bumped]
command = "exec sleep 1000"

[service.gated]
command = "echo gated up; exec sleep 1000"
ready = { log = "^gated up$", timeout = "60s" }

[service.healthy]
command = "exec sleep 1000"
health = { exec = "test ! -e sick", interval = "200ms", timeout = "5s", failures = 2 }

[service.looper]
command = "exec sh ./looper.sh"
max_restarts = 3
restart_window = "60s"

[service.dependent]
command = "exec sleep 1000"
depends_on = ["gated", "healthy"]
"#,
    );
    s.write("looper.sh", LOOPER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    // Restart counts worth keeping: bumped restarted once, looper twice.
    let b0 = running_pid(&s, "bumped");
    harness::kill(b0, 9);
    wait_for("bumped to be restarted", 30, || {
        s.process_status("bumped")
            .is_some_and(|p| p["state"] == "running" && p["pid"] != b0)
    });
    for n in 1..=2 {
        s.write(&format!("tick.{n}"), "");
        wait_for(&format!("looper's restart {n}"), 30, || {
            lines(&s, "runs").len() == n + 1 && s.status_of("looper")["state"] == "running"
        });
    }
    let names = ["plain", "bumped", "gated", "healthy", "looper", "dependent"];
    let before: Vec<_> = names.iter().map(|n| facts(&s, n)).collect();
    let uptime_before: Vec<f64> = names
        .iter()
        .map(|n| s.status_of(n)["uptime_s"].as_f64().unwrap())
        .collect();
    assert_eq!(before[1].3, 1, "bumped: {:?}", before[1]);
    assert_eq!(before[4].3, 2, "looper: {:?}", before[4]);

    let old = kill_supervisor(&s);
    // `status` with no supervisor: the processes as they are.
    supervisor_after(&s, old);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(facts(&s, n), before[i], "{n} after adoption\n{}", s.dump());
        let up = s.status_of(n)["uptime_s"].as_f64().unwrap();
        assert!(
            up > uptime_before[i],
            "{n}: uptime went from {} to {up}",
            uptime_before[i]
        );
    }

    // Health checks resume: a probe that starts failing restarts it.
    let h0 = running_pid(&s, "healthy");
    s.write("sick", "");
    wait_for("the failing health check to restart healthy", 30, || {
        s.process_status("healthy")
            .is_some_and(|p| p["pid"].as_i64().is_some_and(|p| p as i32 != h0))
    });
    std::fs::remove_file(s.path().join("sick")).unwrap();
    assert!(!alive(h0), "the unhealthy process {h0} is still alive");
    wait_for("healthy to run again", 30, || {
        s.status_of("healthy")["state"] == "running"
    });
    assert!(s.status_of("healthy")["restarts"].as_u64() >= Some(1));

    // Restart policies resume: a process killed after adoption is restarted.
    let p0 = running_pid(&s, "plain");
    harness::kill(p0, 9);
    wait_for("plain to be restarted", 30, || {
        s.process_status("plain")
            .is_some_and(|p| p["state"] == "running" && p["pid"] != p0)
    });
    assert_eq!(s.status_of("plain")["restarts"], 1);

    // Crash-loop windows resume: 2 restarts before the kill count after it,
    // so with max_restarts = 3 it fails after its 4th run, not later.
    for n in 3..=8 {
        s.write(&format!("tick.{n}"), "");
    }
    wait_for("looper to end failed (crash loop)", 30, || {
        s.status_of("looper")["state"] == "failed"
    });
    let st = s.status_of("looper");
    let runs = lines(&s, "runs");
    assert_eq!(
        runs.len(),
        4,
        "max_restarts = 3 allows 4 runs in all: {runs:?} {st}"
    );
    assert_eq!(st["restarts"], 3, "{st}");
    assert!(
        st["message"]
            .as_str()
            .is_some_and(|m| m.contains("crash loop")),
        "{st}"
    );
    // Nothing that did not die was restarted.
    for n in ["gated", "dependent", "bumped"] {
        let i = names.iter().position(|x| *x == n).unwrap();
        assert_eq!(s.status_of(n)["pid"], before[i].0, "{n} was restarted");
    }
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// 3. A process that exits while no supervisor runs

/// Runs until `die-<name>` exists, then exits with `<code>`.
const DIE_ON_FILE: &str = r#"#!/bin/sh
echo "$1 up $$"
while [ ! -e "die-$1" ]; do sleep 0.02; done
exit "$2"
"#;

#[test]
fn a_process_that_exits_while_no_supervisor_runs_is_reported_and_handled_by_its_policy() {
    let s = Stack::new(
        r#"
[service.never]
command = "exec sh ./die.sh never 7"
restart = "never"

[service.again]
command = "exec sh ./die.sh again 7"

[service.dependent]
command = "exec sleep 1000"
depends_on = ["again"]

[service.shot]
command = "exec sleep 1000"
restart = "never"
"#,
    );
    s.write("die.sh", DIE_ON_FILE);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let pid = |n: &str| running_pid(&s, n);
    let (never, again, dependent, shot) =
        (pid("never"), pid("again"), pid("dependent"), pid("shot"));
    // No supervisor for a while: frozen, so that the anchor cannot relaunch
    // one, then killed once the processes are gone.
    let sup = serving_supervisor(&s);
    harness::kill(sup, 19);
    s.write("die-never", "");
    s.write("die-again", "");
    harness::kill(shot, 9);
    wait_for("the three to exit", 30, || {
        ![never, again, shot].iter().any(|p| alive(*p))
    });
    std::fs::remove_file(s.path().join("die-again")).unwrap();
    harness::kill(sup, 9);
    wait_for("the frozen supervisor to be gone", 30, || fully_dead(sup));
    supervisor_after(&s, sup);

    wait_for("never to be shown failed", 30, || {
        s.status_of("never")["state"] == "failed"
    });
    let st = s.status_of("never");
    assert_eq!(st["exit_code"], 7, "{st}");
    assert!(st["pid"].is_null(), "{st}");
    wait_for("shot to be shown failed", 30, || {
        s.status_of("shot")["state"] == "failed"
    });
    assert_eq!(s.status_of("shot")["exit_code"], 128 + 9);
    wait_for("again to be restarted by its policy", 30, || {
        s.process_status("again")
            .is_some_and(|p| p["state"] == "running" && p["pid"] != again)
    });
    assert_eq!(s.status_of("again")["restarts"], 1);
    wait_for("the restarted again's first line", 30, || {
        lines(&s, "logs/again.log").len() >= 2
    });
    assert_eq!(lines(&s, "logs/again.log").len(), 2, "{}", s.dump());
    // Its dependent is left alone.
    assert_eq!(
        running_pid(&s, "dependent"),
        dependent,
        "dependent was restarted"
    );
    assert_eq!(s.status_of("dependent")["restarts"], 0);
    assert_eq!(s.pids_of_process("never"), Vec::<i32>::new());
    let log = s.read("logs/stackctl.log");
    assert!(
        log.contains("exited meanwhile (exited with code 7)"),
        "stackctl.log does not say how never ended:\n{log}"
    );
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// 4. kill -9 mid-start (a gate pending) and mid-task

/// Says `<name> up` (its log gate) only once `go` exists.
const SLOW_LOG: &str = r#"#!/bin/sh
echo "pid $$" >> "$1.pids"
while [ ! -e go ]; do sleep 0.02; done
echo "$1 up"
exec sleep 1000
"#;

/// Answers HTTP 200 (its http gate) only once `go` exists: until then the
/// port is not even bound.
const SLOW_HTTP: &str = r#"
import http.server, os, sys, time
port = int(sys.argv[1])
with open("web.pids", "a") as f:
    f.write(f"pid {os.getpid()}\n")
while not os.path.exists("go"):
    time.sleep(0.02)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

#[test]
fn kill_9_mid_start_with_gates_pending_adopts_the_gate_and_restarts_nothing() {
    let port = harness::free_port();
    let s = Stack::new(&format!(
        r#"
[service.slow]
command = "exec sh ./slow.sh slow"
ready = {{ log = "^slow up$", timeout = "60s" }}

[service.web]
command = "exec \"{py}\" web.py {port}"
ready = {{ http = "http://127.0.0.1:{port}/", timeout = "60s", interval = "50ms" }}

[service.after]
command = "exec sleep 1000"
depends_on = ["slow", "web"]
"#,
        py = python()
    ));
    s.write("slow.sh", SLOW_LOG);
    s.write("web.py", SLOW_HTTP);
    let sentry = Sentry::watch(&s);
    let first = spawn_cli(&s, &["start"]);
    wait_for("both gated services to be spawned", 30, || {
        lines(&s, "slow.pids").len() == 1 && lines(&s, "web.pids").len() == 1
    });
    let slow = s
        .pid_of("slow")
        .expect("slow's pid while its gate is pending");
    let web = s
        .pid_of("web")
        .expect("web's pid while its gate is pending");
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    for (n, p) in [("slow", slow), ("web", web)] {
        let st = s.status_of(n);
        assert_eq!(st["state"], "starting", "{n} after adoption: {st}");
        assert_eq!(st["pid"], p, "{n} after adoption: {st}");
        assert_eq!(st["ready"], false, "{n}: {st}");
    }
    assert!(
        s.pids_of_process("after").is_empty(),
        "after started before its dependencies were ready"
    );
    // A `start` now waits for the adopted gates (it must not start them again).
    let second = spawn_cli(&s, &["start"]);
    s.write("go", "");
    let (code, out) = finish(second);
    assert_eq!(code, Some(0), "start after adoption:\n{out}\n{}", s.dump());
    survived(first, "start");
    for (n, p) in [("slow", slow), ("web", web)] {
        assert_eq!(running_pid(&s, n), p, "{n} was restarted");
        assert_eq!(s.status_of(n)["ready"], true);
        assert_eq!(s.status_of(n)["restarts"], 0);
        assert_eq!(lines(&s, &format!("{n}.pids")).len(), 1, "{n} ran twice");
    }
    assert_eq!(s.pids_of_process("after"), vec![running_pid(&s, "after")]);
    start_ok(&s, &[]);
    sentry.assert_clean(&s);
}

/// A migration: records its start, waits for `go`, writes `migrated`,
/// records its end.
const MIGRATE: &str = r#"#!/bin/sh
echo "start $$" >> migrate.txt
while [ ! -e go ]; do sleep 0.02; done
echo yes > migrated
echo "end $$" >> migrate.txt
"#;

/// Records whether the migration had completed when it started.
const API: &str = r#"#!/bin/sh
if [ -e migrated ]; then echo "after $$" >> api.txt; else echo "EARLY $$" >> api.txt; fi
exec sleep 1000
"#;

#[test]
fn kill_9_mid_task_never_runs_it_twice_nor_its_dependents_before_it_completed() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "exec sh ./migrate.sh"

[service.api]
command = "exec sh ./api.sh"
depends_on = ["migrate"]
"#,
    );
    s.write("migrate.sh", MIGRATE);
    s.write("api.sh", API);
    let sentry = Sentry::watch(&s);
    let first = spawn_cli(&s, &["start"]);
    wait_for("the migration to start", 30, || {
        lines(&s, "migrate.txt").len() == 1
    });
    let task = s.pid_of("migrate").expect("the running migration's pid");
    let old = kill_supervisor(&s);
    let sup = supervisor_after(&s, old);
    assert_eq!(s.pid_of("migrate"), Some(task), "{}", s.status_json());
    // A start meanwhile, and another kill while it waits for the task.
    let second = spawn_cli_into(&s, &["-v", "start"], "second.out");
    wait_for("the second start to wait for the migration", 30, || {
        s.read("second.out").contains("migrate")
    });
    harness::kill(sup, 9);
    wait_for("the supervisor to be gone", 30, || fully_dead(sup));
    let third = spawn_cli(&s, &["start"]);
    supervisor_after(&s, sup);
    assert!(
        lines(&s, "api.txt").is_empty(),
        "api started before the migration completed"
    );
    s.write("go", "");
    let (code, out) = finish(third);
    assert_eq!(code, Some(0), "start after adoption:\n{out}\n{}", s.dump());
    survived(first, "start");
    survived(second, "second start");
    assert_eq!(
        lines(&s, "migrate.txt"),
        vec![format!("start {task}"), format!("end {task}")],
        "the migration ran more than once"
    );
    // (Ready as soon as spawned: its first line may come just after.)
    wait_for("api to record its start", 30, || {
        !lines(&s, "api.txt").is_empty()
    });
    let api = lines(&s, "api.txt");
    assert_eq!(api.len(), 1, "{api:?}");
    assert!(
        api[0].starts_with("after "),
        "api started before the migration completed: {api:?}"
    );
    assert_eq!(s.status_of("migrate")["state"], "completed");
    assert_eq!(s.status_of("migrate")["exit_code"], 0);
    start_ok(&s, &[]);
    assert_eq!(
        lines(&s, "migrate.txt").len(),
        2,
        "a later start ran the migration again"
    );
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// 5. kill -9 mid-stop, mid-scale, and during a crash-loop back-off

/// On SIGTERM says `draining`, and exits 0 once `drained-<tag>` exists.
const DRAINER: &str = r#"#!/bin/sh
tag="${STACKCTL_INSTANCE:-$1}"
trap 'echo "draining $$"; while [ ! -e "drained-$tag" ]; do sleep 0.02; done; echo "drained $$"; exit 0' TERM
echo "up $$"
while :; do sleep 0.05; done
"#;

#[test]
fn kill_9_mid_stop_the_next_supervisor_finishes_the_stop() {
    let s = Stack::new(
        r#"
[service.base]
command = "exec sleep 1000"

[service.drainer]
command = "exec sh ./drainer.sh d"
depends_on = ["base"]
stop_timeout = "60s"
"#,
    );
    s.write("drainer.sh", DRAINER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let base = running_pid(&s, "base");
    let drainer = running_pid(&s, "drainer");
    let anchor = s.anchor_pid().expect("anchor");
    let stop = spawn_cli(&s, &["stop", "drainer"]);
    wait_for("drainer to drain after SIGTERM", 30, || {
        s.read("logs/drainer.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    let st = s.status_of("drainer");
    assert_eq!(st["state"], "stopping", "{st}");
    assert_eq!(st["pid"], drainer, "{st}");
    s.write("drained-d", "");
    wait_for("the drainer's stop to be finished", 30, || {
        s.status_of("drainer")["state"] == "stopped"
    });
    assert_gone_and_reaped(&[drainer], "the drained process");
    survived(stop, "stop");
    assert!(
        zombies_of(&[anchor]).is_empty(),
        "{:?}",
        zombies_of(&[anchor])
    );
    assert!(s.pids_of_process("drainer").is_empty());
    // Stopped on purpose: it stays down; base was never part of the stop.
    assert_eq!(running_pid(&s, "base"), base);
    let sup = serving_supervisor(&s);
    assert_eq!(supervisors(&s), vec![sup]);
    run_code(&s, &["stop"], 0);
    wait_for("the anchor to exit", 30, || fully_dead(anchor));
    assert!(s.marked_pids().is_empty(), "{:?}", s.marked_pids());
    sentry.assert_clean(&s);
}

/// A `stop` of the whole stack interrupted by kill -9 is finished by the
/// next supervisor (the stop is kept with the anchor while under way,
/// `record::OpRecord`): the process being stopped, what the stop had not
/// reached yet, then the supervisor and the anchor exit.
#[test]
fn kill_9_mid_stop_of_the_whole_stack_finishes_the_whole_stop() {
    let s = Stack::new(
        r#"
[service.base]
command = "exec sleep 1000"

[service.drainer]
command = "exec sh ./drainer.sh d"
depends_on = ["base"]
stop_timeout = "60s"
"#,
    );
    s.write("drainer.sh", DRAINER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let base = running_pid(&s, "base");
    let drainer = running_pid(&s, "drainer");
    let anchor = s.anchor_pid().expect("anchor");
    let stop = spawn_cli(&s, &["stop"]);
    wait_for("drainer to drain after SIGTERM", 30, || {
        s.read("logs/drainer.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    s.write("drained-d", "");
    wait_for("the drainer's stop to be finished", 30, || !alive(drainer));
    assert_gone_and_reaped(&[drainer], "the drained process");
    // The rest of the stop: base, then the supervisor and the anchor.
    let done = within(10, || {
        !alive(base) && fully_dead(anchor) && supervisors(&s).is_empty()
    });
    assert!(
        done,
        "the interrupted `stop` of the whole stack was not finished: base (pid {base}) alive {}, \
         anchor {anchor} alive {}, supervisors {:?}; status: {}",
        alive(base),
        !fully_dead(anchor),
        supervisors(&s),
        s.status_json()
    );
    survived(stop, "stop of the stack");
    sentry.assert_clean(&s);
}

/// A `stop --with-dependents` interrupted by kill -9 is finished by the
/// next supervisor: what it had not reached yet is stopped too, in order,
/// and what it did not name runs on.
#[test]
fn kill_9_mid_stop_of_some_finishes_that_stop_and_only_it() {
    let s = Stack::new(
        r#"
[service.base]
command = "exec sleep 1000"

[service.other]
command = "exec sleep 1000"

[service.drainer]
command = "exec sh ./drainer.sh d"
depends_on = ["base"]
stop_timeout = "60s"
"#,
    );
    s.write("drainer.sh", DRAINER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let base = running_pid(&s, "base");
    let other = running_pid(&s, "other");
    let drainer = running_pid(&s, "drainer");
    let stop = spawn_cli(&s, &["stop", "--with-dependents", "base"]);
    wait_for("drainer to drain after SIGTERM", 30, || {
        s.read("logs/drainer.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    let sup = supervisor_after(&s, old);
    s.write("drained-d", "");
    wait_for("the drainer's stop to be finished", 30, || !alive(drainer));
    wait_for(
        "base, which the stop had not reached, to be stopped",
        30,
        || !alive(base),
    );
    wait_for("base shown stopped", 30, || {
        s.status_of("base")["state"] == "stopped"
    });
    survived(stop, "stop --with-dependents");
    assert_eq!(running_pid(&s, "other"), other, "other was not named");
    assert_eq!(serving_supervisor(&s), sup, "the supervisor serves on");
    sentry.assert_clean(&s);
}

#[test]
fn kill_9_mid_stop_with_sigkill_pending_kills_after_stop_timeout() {
    let s = Stack::new(
        r#"
[service.deaf]
command = "trap '' TERM; echo deaf; while :; do sleep 0.05; done"
stop_timeout = "2s"
"#,
    );
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let deaf = running_pid(&s, "deaf");
    let stop = spawn_cli(&s, &["stop", "deaf"]);
    wait_for("deaf to be stopping", 30, || {
        s.status_of("deaf")["state"] == "stopping"
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    wait_for("deaf to be SIGKILLed after its stop_timeout", 30, || {
        s.status_of("deaf")["state"] == "stopped"
    });
    survived(stop, "stop");
    assert_gone_and_reaped(&[deaf], "deaf");
    let st = s.status_of("deaf");
    assert!(
        st["message"]
            .as_str()
            .is_some_and(|m| m.contains("SIGKILL")),
        "a stop that needed SIGKILL says so: {st}"
    );
    // Stopped on purpose: a later start of something else leaves it down.
    sentry.assert_clean(&s);
}

#[test]
fn kill_9_mid_scale_the_shrink_is_finished_and_the_size_holds() {
    let s = Stack::new(
        r#"
[service.w]
command = "exec sh ./drainer.sh"
replicas = 3
stop_timeout = "60s"
"#,
    );
    s.write("drainer.sh", DRAINER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let pids: Vec<i32> = (1..=3)
        .map(|i| running_pid(&s, &format!("w.{i}")))
        .collect();
    let scale = spawn_cli(&s, &["scale", "w", "1"]);
    wait_for("w.3 to drain", 30, || {
        s.read("logs/w.3.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    let (code, out) = finish(scale);
    assert_ne!(
        code,
        Some(0),
        "the scale whose supervisor was killed succeeded:\n{out}"
    );
    supervisor_after(&s, old);
    assert_eq!(running_pid(&s, "w.1"), pids[0]);
    s.write("drained-2", "");
    s.write("drained-3", "");
    wait_for("w.2 and w.3 to be stopped", 30, || {
        !alive(pids[1]) && !alive(pids[2])
    });
    assert_gone_and_reaped(&pids[1..], "members above the new size");
    // The size holds: a start brings back nothing above it.
    start_ok(&s, &[]);
    assert_eq!(running_pid(&s, "w.1"), pids[0], "w.1 was restarted");
    for m in ["w.2", "w.3"] {
        assert!(
            s.pids_of_process(m).is_empty(),
            "{m} runs again after the pool was scaled to 1"
        );
        if let Some(st) = s.process_status(m) {
            assert_ne!(st["state"], "running", "{m}: {st}");
        }
    }
    assert_eq!(s.status_of("w.1")["restarts"], 0);
    s.write("drained-1", "");
    sentry.assert_clean(&s);
}

#[test]
fn kill_9_during_a_crash_loop_back_off_keeps_the_count() {
    let s = Stack::new(
        r#"
[service.crashy]
command = "echo run >> crashy.runs; exit 1"
max_restarts = 6
restart_window = "60s"
"#,
    );
    let sentry = Sentry::watch(&s);
    let r = s.run(&["start"]);
    // Its first run may already fail the start (it exits before `start`
    // looks), or not: either way it goes on restarting.
    drop(r);
    // Restart 5 waits 800 ms (0, 100, 200, 400, 800): kill in that back-off.
    wait_for("crashy in a back-off after 5 restarts", 60, || {
        s.process_status("crashy")
            .is_some_and(|p| p["state"] == "backoff" && p["restarts"] == 5)
    });
    let runs_at_kill = lines(&s, "crashy.runs").len();
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    wait_for("crashy to end failed (crash loop)", 60, || {
        s.status_of("crashy")["state"] == "failed"
    });
    let st = s.status_of("crashy");
    let runs = lines(&s, "crashy.runs").len();
    assert!(runs_at_kill <= 6, "{runs_at_kill}");
    assert_eq!(runs, 7, "max_restarts = 6 allows 7 runs in all: {st}");
    assert_eq!(st["restarts"], 6, "{st}");
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// 6. No second copy, ever

const SIX: &str = r#"
[service.a]
command = "exec sleep 1000"

[service.b]
command = "exec sleep 1000"
depends_on = ["a"]

[service.p]
command = "exec sleep 1000"
replicas = 2
depends_on = ["a"]
"#;

const SIX_NAMES: [&str; 4] = ["a", "b", "p.1", "p.2"];

/// Every process of [`SIX`] runs once, with the pid it had.
#[track_caller]
fn assert_same_six(s: &Stack, pids: &[i32]) {
    for (n, p) in SIX_NAMES.iter().zip(pids) {
        assert_eq!(s.pids_of_process(n), vec![*p], "{n}: copies\n{}", s.dump());
        let st = s.status_of(n);
        assert_eq!(st["pid"], *p, "{n}: {st}");
        assert_eq!(st["state"], "running", "{n}: {st}");
        assert_eq!(st["restarts"], 0, "{n}: {st}");
    }
}

#[test]
fn concurrent_starts_racing_a_relaunch_make_one_supervisor_and_no_copy() {
    let s = Stack::new(SIX);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let pids: Vec<i32> = SIX_NAMES.iter().map(|n| running_pid(&s, n)).collect();
    for round in 0..3 {
        let sup = serving_supervisor(&s);
        harness::kill(sup, 9);
        // No wait: the starts race the anchor's own relaunch.
        let starts: Vec<Child> = (0..4).map(|_| spawn_cli(&s, &["start"])).collect();
        for c in starts {
            let (code, out) = finish(c);
            assert_eq!(
                code,
                Some(0),
                "round {round}: a concurrent start failed:\n{out}\n{}",
                s.dump()
            );
        }
        wait_for("the killed supervisor to be gone", 30, || fully_dead(sup));
        wait_for("one supervisor left", 30, || supervisors(&s).len() == 1);
        assert_eq!(anchors(&s).len(), 1, "{:?}", anchors(&s));
        assert_same_six(&s, &pids);
    }
    sentry.assert_clean(&s);
}

#[test]
fn a_supervisor_killed_during_its_adoption_leaves_no_copy_and_the_next_one_adopts() {
    let s = Stack::new(SIX);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let pids: Vec<i32> = SIX_NAMES.iter().map(|n| running_pid(&s, n)).collect();
    let mut seen = vec![serving_supervisor(&s)];
    let mut waiting = Vec::new();
    // Each new supervisor is killed at a later point of its start-up: as
    // soon as it exists, once connected to the anchor, once it took up the
    // processes, once it listens.
    let milestones = [
        "exists",
        "connected",
        "took up",
        "listening",
        "exists",
        "took up",
    ];
    for (round, milestone) in milestones.iter().enumerate() {
        let log_from = s.read("logs/stackctl.log").len();
        let current = seen.last().copied().unwrap_or_default();
        harness::kill(current, 9);
        wait_for("the supervisor to be gone", 30, || fully_dead(current));
        // A start asks the anchor for a supervisor at once (its own relaunch
        // backs off after supervisors that die young).
        waiting.push(spawn_cli(&s, &["start"]));
        let mut next = 0;
        wait_for(&format!("round {round}: a new supervisor"), 30, || {
            next = supervisors(&s)
                .into_iter()
                .find(|p| !seen.contains(p) && alive(*p))
                .unwrap_or(0);
            next != 0
        });
        seen.push(next);
        let needle = match *milestone {
            "exists" => None,
            "connected" => Some(format!("supervisor {next} connected")),
            "listening" => Some(format!("supervisor {next} listening")),
            other => Some(other.to_string()),
        };
        if let Some(needle) = needle {
            wait_for(
                &format!("round {round}: {needle:?} in stackctl.log"),
                30,
                || {
                    s.read("logs/stackctl.log")
                        .get(log_from..)
                        .is_some_and(|l| l.contains(&needle))
                },
            );
        }
        assert_eq!(
            supervisors(&s).iter().filter(|p| alive(**p)).count(),
            1,
            "{:?}",
            supervisors(&s)
        );
    }
    let last = seen.last().copied().unwrap_or_default();
    harness::kill(last, 9);
    wait_for("the last killed supervisor to be gone", 30, || {
        fully_dead(last)
    });
    start_ok(&s, &[]);
    for c in waiting {
        // Each either got its answer or lost its supervisor; none hangs.
        let _ = finish(c);
    }
    wait_for("one supervisor left", 30, || supervisors(&s).len() == 1);
    assert_eq!(anchors(&s).len(), 1, "{:?}", anchors(&s));
    assert_same_six(&s, &pids);
    sentry.assert_clean(&s);
}

/// One line per 20 ms, each written whole (`flush` per line).
const TICKER: &str = r#"
import sys, time
i = 0
while True:
    print(f"tick {i}", flush=True)
    i += 1
    time.sleep(0.02)
"#;

#[test]
fn the_anchor_killed_leaves_every_process_running_and_logging_and_status_true() {
    let s = Stack::new(&format!(
        r#"
[service.ticker]
command = "exec \"{py}\" ticker.py"

[service.phoenix]
command = "echo phoenix up $$$$; exec sleep 1000"

[service.mortal]
command = "exec sleep 1000"
restart = "never"
"#,
        py = python()
    ));
    s.write("ticker.py", TICKER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let names = ["ticker", "phoenix", "mortal"];
    let pids: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    let ticks = || lines(&s, "logs/ticker.log").len();
    wait_for("ticker to tick", 30, || ticks() >= 5);
    let anchor = s.anchor_pid().expect("anchor");
    let sup = serving_supervisor(&s);
    harness::kill(anchor, 9);
    wait_for("the anchor to be gone", 30, || fully_dead(anchor));
    let mut new_anchor = 0;
    let replaced = within(30, || {
        new_anchor = s.anchor_pid().unwrap_or(anchor);
        new_anchor != anchor && alive(new_anchor)
    });
    assert!(
        replaced,
        "no new anchor in status: {}\n{}",
        s.status_json(),
        s.dump()
    );
    assert_eq!(serving_supervisor(&s), sup, "the supervisor changed");
    assert_eq!(anchors(&s), vec![new_anchor]);
    for (n, p) in names.iter().zip(&pids) {
        assert_eq!(running_pid(&s, n), *p, "{n} after the anchor's death");
    }
    // Its next lines still reach its log, every one once, in order.
    let at_kill = ticks();
    wait_for("ticker's next lines in its log", 30, || {
        ticks() >= at_kill + 25
    });
    let log = lines(&s, "logs/ticker.log");
    for (i, l) in log.iter().enumerate() {
        assert_eq!(
            l,
            &format!("tick {i}"),
            "ticker.log line {i} (lost, duplicated or split)"
        );
    }
    // A later exit: restarted per policy (its new process is the new
    // anchor's child, and logs), or shown as ended, how unknown.
    harness::kill(pids[1], 9);
    wait_for("phoenix to be restarted", 30, || {
        s.process_status("phoenix")
            .is_some_and(|p| p["state"] == "running" && p["pid"] != pids[1])
    });
    let phoenix = running_pid(&s, "phoenix");
    wait_for("the new phoenix's line in its log", 30, || {
        s.read("logs/phoenix.log")
            .contains(&format!("phoenix up {phoenix}"))
    });
    harness::kill(pids[2], 9);
    wait_for("mortal to be shown ended", 30, || {
        s.status_of("mortal")["state"] != "running"
    });
    let st = s.status_of("mortal");
    assert!(st["pid"].is_null(), "{st}");
    assert!(
        st["exit_code"].is_null(),
        "its exit code cannot be known: {st}"
    );
    assert!(
        st["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown")),
        "status says how it ended is unknown: {st}"
    );
    // And a stop stops the adopted processes too (not the new anchor's
    // children: watched through pidfds).
    run_code(&s, &["stop"], 0);
    assert_gone_and_reaped(&[pids[0], phoenix], "after stop");
    wait_for("the anchor and the supervisor to exit", 30, || {
        fully_dead(new_anchor) && fully_dead(sup)
    });
    assert!(s.marked_pids().is_empty(), "{:?}", s.marked_pids());
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// 7. Stop after adoption keeps every guarantee of a normal stop

/// Records its pid, and on `<signal>` appends `<instance> <signal>` to
/// `stops.txt` (for db: also whether stubborn was still alive) and exits.
const RECORDER: &str = r#"#!/bin/sh
name="${STACKCTL_PROCESS}"
sig="$1"
echo $$ > "$name.pid"
on_stop() {
    extra=""
    if [ "$name" = db ]; then
        if kill -0 "$(cat stubborn.pid)" 2>/dev/null; then extra=" stubborn-alive"; else extra=" stubborn-gone"; fi
    fi
    echo "$name $sig$extra" >> stops.txt
    exit 0
}
trap on_stop "$sig"
while :; do sleep 0.05; done
"#;

#[test]
fn stop_after_adoption_keeps_order_signals_timeouts_and_leaves_nothing() {
    let s = Stack::new(
        r#"
[service.db]
command = "exec sh ./rec.sh TERM"

[service.api]
command = "exec sh ./rec.sh INT"
stop_signal = "SIGINT"
depends_on = ["db"]

[service.web]
command = "exec sh ./rec.sh TERM"
depends_on = ["api"]

[service.pool]
command = "exec sh ./rec.sh TERM"
replicas = 2
depends_on = ["api"]

[service.stubborn]
command = "echo $$$$ > stubborn.pid; trap '' TERM; while :; do sleep 0.05; done"
stop_timeout = "1s"
depends_on = ["db"]
"#,
    );
    s.write("rec.sh", RECORDER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let names = ["db", "api", "web", "pool.1", "pool.2", "stubborn"];
    let pids: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    let anchor = s.anchor_pid().expect("anchor");
    // Twice: adopted by an adopter.
    let old = kill_supervisor(&s);
    let mid = supervisor_after(&s, old);
    let old = kill_supervisor(&s);
    let sup = supervisor_after(&s, old);
    assert_ne!(sup, mid);
    for (n, p) in names.iter().zip(&pids) {
        assert_eq!(running_pid(&s, n), *p, "{n} before the stop");
    }
    let r = run_code(&s, &["stop"], 0);
    let stops = lines(&s, "stops.txt");
    let at = |what: &str| {
        stops
            .iter()
            .position(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("{what} did not record its stop signal: {stops:?}\n{r:?}"))
    };
    // Reverse dependency order, each with its stop_signal.
    assert_eq!(
        stops[at("api ")],
        "api INT",
        "api's stop_signal is SIGINT: {stops:?}"
    );
    for dependent in ["web ", "pool.1 ", "pool.2 "] {
        assert!(
            at(dependent) < at("api "),
            "{dependent} must stop before api: {stops:?}"
        );
    }
    assert!(at("api ") < at("db "), "api must stop before db: {stops:?}");
    assert_eq!(
        stops[at("db ")],
        "db TERM stubborn-gone",
        "db stopped before stubborn was gone: {stops:?}"
    );
    assert_eq!(stops.len(), 5, "{stops:?}");
    // stubborn ignores SIGTERM: SIGKILL after its stop_timeout, and said so.
    let st = s.status_of("stubborn");
    assert_eq!(st["state"], "stopped", "{st}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("SIGKILL"),
        "stop does not say stubborn was killed: {r:?}"
    );
    // No survivor, no zombie; the anchor and the supervisor exit.
    assert_gone_and_reaped(&pids, "after stop");
    wait_for("the anchor and the supervisor to exit", 30, || {
        fully_dead(anchor) && fully_dead(sup)
    });
    assert!(
        s.marked_pids().is_empty(),
        "left running: {:?}",
        s.marked_pids()
    );
    assert!(
        zombies_of(&[anchor, sup]).is_empty(),
        "{:?}",
        zombies_of(&[anchor, sup])
    );
    let doc = s.status_json();
    assert_eq!(doc["supervisor"]["running"], false, "{doc}");
    for p in doc["processes"].as_array().unwrap() {
        assert!(p["pid"].is_null(), "{p}");
    }
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// More moments to die at: a pre_start running, a stop for a health check

/// A `pre_start` step: records its run, waits for `go`, exits 0.
const PRE: &str = r#"#!/bin/sh
echo "pre $$" >> "$1.txt"
while [ ! -e go ]; do sleep 0.02; done
"#;

/// The child the anchor holds for an instance may be a `pre_start` step:
/// the next supervisor waits for that step (never runs it again, never
/// takes it for the instance's command), then goes on with the command;
/// its dependents wait for the command.
#[test]
fn kill_9_during_a_pre_start_neither_skips_the_command_nor_takes_the_step_for_it() {
    let s = Stack::new(
        r#"
[task.migrate]
pre_start = ["sh ./pre.sh migrate"]
command = "echo \"run $$$$\" >> migrate.txt; echo yes > migrated"

[service.api]
pre_start = ["sh ./pre.sh api"]
command = "echo \"run $$$$\" >> api.txt; exec sleep 1000"
depends_on = ["migrate"]
"#,
    );
    s.write("pre.sh", PRE);
    let sentry = Sentry::watch(&s);
    let first = spawn_cli(&s, &["start"]);
    wait_for("migrate's pre_start to run", 30, || {
        lines(&s, "migrate.txt").len() == 1
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    let second = spawn_cli(&s, &["start"]);
    s.write("go", "");
    let (code, out) = finish(second);
    assert_eq!(code, Some(0), "start after adoption:\n{out}\n{}", s.dump());
    survived(first, "start");
    let m = lines(&s, "migrate.txt");
    assert!(
        m.last().is_some_and(|l| l.starts_with("run ")) && s.read("migrated").contains("yes"),
        "the migration's command never ran (its pre_start was taken for it): {m:?}\n{}",
        s.dump()
    );
    assert_eq!(
        m.iter().filter(|l| l.starts_with("run ")).count(),
        1,
        "{m:?}"
    );
    assert_eq!(
        m.iter().filter(|l| l.starts_with("pre ")).count(),
        1,
        "the pre_start step left running was run again: {m:?}"
    );
    let _ = within(10, || {
        lines(&s, "api.txt").iter().any(|l| l.starts_with("run "))
    });
    let a = lines(&s, "api.txt");
    assert!(
        a.last().is_some_and(|l| l.starts_with("run ")),
        "api's command never ran: {a:?}\n{}",
        s.dump()
    );
    // The pid status shows is the command's, not a pre_start step's.
    let pid = running_pid(&s, "api");
    assert_eq!(a.last().unwrap(), &format!("run {pid}"), "{a:?}");
    sentry.assert_clean(&s);
}

/// A unit recorded `stopping` keeps what the stop was for
/// (`record::AfterStop`): the next supervisor finishes the stop a failing
/// health check began, and its restart policy restarts it.
#[test]
fn kill_9_while_a_failing_health_check_stops_it_the_next_supervisor_restarts_it() {
    let s = Stack::new(
        r#"
[service.sick]
command = "exec sh ./drainer.sh s"
health = { exec = "test ! -e sick", interval = "100ms", timeout = "5s", failures = 1 }
stop_timeout = "60s"
"#,
    );
    s.write("drainer.sh", DRAINER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let first = running_pid(&s, "sick");
    s.write("sick", "");
    wait_for("the health check to stop it (it drains)", 30, || {
        s.read("logs/sick.log").contains("draining")
    });
    std::fs::remove_file(s.path().join("sick")).unwrap();
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    s.write("drained-s", "");
    let restarted = within(10, || {
        s.process_status("sick").is_some_and(|p| {
            p["state"] == "running" && p["pid"].as_i64().is_some_and(|p| p as i32 != first)
        })
    });
    assert!(
        restarted,
        "a restart the health check began is not finished by the next supervisor: {}\n{}",
        s.status_of("sick"),
        s.dump()
    );
    sentry.assert_clean(&s);
}

/// An interrupted `restart` is finished by the next supervisor: stopped,
/// then started again.
#[test]
fn kill_9_mid_restart_the_next_supervisor_brings_it_back() {
    let s = Stack::new(
        r#"
[service.svc]
command = "exec sh ./drainer.sh v"
stop_timeout = "60s"
"#,
    );
    s.write("drainer.sh", DRAINER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let first = running_pid(&s, "svc");
    let restart = spawn_cli(&s, &["restart", "svc"]);
    wait_for("svc to drain", 30, || {
        s.read("logs/svc.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    s.write("drained-v", "");
    let back = within(10, || {
        s.process_status("svc").is_some_and(|p| {
            p["state"] == "running" && p["pid"].as_i64().is_some_and(|p| p as i32 != first)
        })
    });
    assert!(
        back,
        "an interrupted `restart` leaves the service stopped although it is wanted up: {}\n{}",
        s.status_of("svc"),
        s.dump()
    );
    survived(restart, "restart");
    sentry.assert_clean(&s);
}

/// A task and a service that say, in `order.txt`, each time they start.
const ORDERED_TASK: &str = r#"#!/bin/sh
echo "migrate $$" >> order.txt
"#;

/// Says `api PID` in `order.txt` when it starts; on SIGTERM, `draining` in
/// its log, and exits once `drained` exists.
const ORDERED_API: &str = r#"#!/bin/sh
echo "api $$" >> order.txt
trap 'echo "draining $$"; while [ ! -e drained ]; do sleep 0.02; done; exit 0' TERM
while :; do sleep 0.05; done
"#;

#[test]
fn kill_9_mid_restart_of_the_whole_stack_still_runs_its_tasks_again_once_and_first() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "exec sh ./migrate.sh"

[service.api]
command = "exec sh ./api.sh"
depends_on = ["migrate"]
stop_timeout = "60s"
"#,
    );
    s.write("migrate.sh", ORDERED_TASK);
    s.write("api.sh", ORDERED_API);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let first = running_pid(&s, "api");
    // `restart` (the whole stack: tasks run again), its supervisor killed
    // while it stops api.
    let restart = spawn_cli(&s, &["restart"]);
    wait_for("api to drain", 30, || {
        s.read("logs/api.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    s.write("drained", "");
    survived(restart, "restart");
    let order = lines(&s, "order.txt");
    let kinds: Vec<&str> = order
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["migrate", "api", "migrate", "api"],
        "a whole-stack restart whose supervisor was killed must run the task again, once, before api: {order:?}\n{}",
        s.dump()
    );
    assert_ne!(running_pid(&s, "api"), first, "api was not restarted");
    assert_eq!(s.status_of("migrate")["state"], "completed");
    sentry.assert_clean(&s);
}

/// A pool member: says `<instance> <GEN> <pid>` in `members.txt` when it
/// starts; on SIGTERM, `draining` in its log, and exits once
/// `drained-<instance>` exists.
const MEMBER: &str = r#"#!/bin/sh
echo "$STACKCTL_PROCESS $GEN $$" >> members.txt
trap 'echo "draining $$"; while [ ! -e "drained-$STACKCTL_PROCESS" ]; do sleep 0.02; done; exit 0' TERM
while :; do sleep 0.05; done
"#;

fn member_pool(generation: &str) -> String {
    format!(
        r#"
[service.worker]
command = "exec sh ./member.sh"
replicas = 3
stop_timeout = "60s"
env = {{ GEN = "{generation}" }}
"#
    )
}

#[test]
fn kill_9_mid_reload_roll_the_next_supervisor_finishes_the_roll_and_the_reload_waits_for_it() {
    let s = Stack::new(&member_pool("a"));
    s.write("member.sh", MEMBER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    // The pool redefined: rolled member by member; the supervisor killed
    // while the first member drains.
    s.write("stack.toml", &member_pool("b"));
    let reload = spawn_cli(&s, &["reload"]);
    wait_for("worker.1 to drain", 30, || {
        s.read("logs/worker.1.log").contains("draining")
    });
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    for m in 1..=3 {
        s.write(&format!("drained-worker.{m}"), "");
    }
    survived(reload, "reload");
    let started = lines(&s, "members.txt");
    for m in 1..=3 {
        let name = format!("worker.{m}");
        let pid = running_pid(&s, &name);
        assert_eq!(
            env_of(pid, "GEN").as_deref(),
            Some("b"),
            "{name} still runs the old definition after the interrupted reload: {started:?}\n{}",
            s.dump()
        );
        let runs: Vec<&String> = started
            .iter()
            .filter(|l| l.starts_with(&format!("{name} ")))
            .collect();
        assert_eq!(
            runs.len(),
            2,
            "{name} started {runs:?}: once, then once more for the reload"
        );
    }
    let again = run_code(&s, &["reload"], 0);
    assert_eq!(
        lines(&s, "members.txt").len(),
        started.len(),
        "a second reload changed something: {again:?}"
    );
    sentry.assert_clean(&s);
}

/// Sends `READY=1` (and then `STATUS=serving <name>`) to its notify socket
/// once `go-<name>` exists, says so in `sent-<name>`, and goes on running.
const NOTIFIER: &str = r#"
import os, socket, sys, time
name = sys.argv[1]
with open(f"{name}.pids", "a") as f:
    f.write(f"{os.getpid()}\n")
while not os.path.exists(f"go-{name}"):
    time.sleep(0.02)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", addr)
s.sendto(f"STATUS=serving {name}".encode(), addr)
open(f"sent-{name}", "w").close()
time.sleep(1000)
"#;

#[test]
fn kill_9_with_notify_gates_pending_keeps_their_sockets_and_messages() {
    let s = Stack::new(&format!(
        r#"
[service.early]
command = ["{py}", "notify.py", "early"]
ready = {{ notify = true, timeout = "60s" }}

[service.late]
command = ["{py}", "notify.py", "late"]
ready = {{ notify = true, timeout = "60s" }}
"#,
        py = python()
    ));
    s.write("notify.py", NOTIFIER);
    let sentry = Sentry::watch(&s);
    let first = spawn_cli(&s, &["start"]);
    wait_for("both to be spawned", 30, || {
        lines(&s, "early.pids").len() == 1 && lines(&s, "late.pids").len() == 1
    });
    let early = s.pid_of("early").expect("early's pid");
    let late = s.pid_of("late").expect("late's pid");
    // early says READY=1 while no supervisor reads its socket.
    let sup = serving_supervisor(&s);
    harness::kill(sup, 19);
    s.write("go-early", "");
    wait_for("early to send READY=1", 30, || {
        s.path().join("sent-early").exists()
    });
    harness::kill(sup, 9);
    wait_for("the frozen supervisor to be gone", 30, || fully_dead(sup));
    supervisor_after(&s, sup);
    // late says it once the next supervisor runs.
    s.write("go-late", "");
    start_ok(&s, &[]);
    survived(first, "start");
    for (n, p) in [("early", early), ("late", late)] {
        assert_eq!(running_pid(&s, n), p, "{n} was restarted");
        assert_eq!(s.status_of(n)["ready"], true);
        assert_eq!(lines(&s, &format!("{n}.pids")).len(), 1, "{n} ran twice");
    }
    wait_for("late's STATUS= in status", 30, || {
        s.status_of("late")["message"] == "serving late"
    });
    sentry.assert_clean(&s);
}

/// The delays (whole seconds) of the anchor's "relaunching it in …" lines
/// in `log`, in order.
fn relaunch_delays(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once("relaunching it in ").map(|(_, d)| d.trim()))
        .map(|d| {
            d.strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX)
        })
        .collect()
}

/// Supervisors that crash young are relaunched ever later (the anchor
/// sees the exit and the end of the connection in one poll, in either
/// order: both orders must count the death as young), and one killed with
/// SIGKILL after that (an operator, the OOM killer: not a crash of its
/// own) is relaunched at once.
#[test]
fn a_supervisor_crashing_young_again_and_again_is_relaunched_ever_later() {
    let s = Stack::new("[service.a]\ncommand = \"exec sleep 1000\"\n");
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let a = running_pid(&s, "a");
    let log_from = s.read("logs/stackctl.log").len();
    let mut seen = Vec::new();
    // Three crashes (SIGABRT: a panic that aborts), then one SIGKILL.
    for (round, signal) in [6, 6, 6, 9].into_iter().enumerate() {
        let mut sup = 0;
        wait_for(
            &format!("round {round}: a supervisor that listens"),
            30,
            || {
                sup = supervisors(&s)
                    .into_iter()
                    .find(|p| !seen.contains(p) && alive(*p))
                    .unwrap_or(0);
                sup != 0
                    && s.read("logs/stackctl.log")
                        .contains(&format!("supervisor {sup} listening"))
            },
        );
        seen.push(sup);
        harness::kill(sup, signal);
        wait_for("the supervisor to be gone", 30, || fully_dead(sup));
        wait_for(
            &format!("round {round}: its relaunch announced"),
            30,
            || {
                relaunch_delays(s.read("logs/stackctl.log").get(log_from..).unwrap_or("")).len()
                    > round
            },
        );
    }
    let log = s.read("logs/stackctl.log");
    let since = log.get(log_from..).unwrap_or("");
    let delays = relaunch_delays(since);
    assert_eq!(
        delays,
        vec![0, 1, 2, 0],
        "three crashes in a row back off, a SIGKILL does not:\n{since}"
    );
    assert!(
        !since.contains("before it connected"),
        "a supervisor that had connected was said not to have:\n{since}"
    );
    assert_eq!(running_pid(&s, "a"), a);
    sentry.assert_clean(&s);
}

/// The anchor is the part meant never to die; killed anyway, it is
/// replaced each time, every process runs on and logs, and what is lost is
/// at most what it had read from a pipe and not yet written.
#[test]
fn the_anchor_killed_again_and_again_is_replaced_each_time_and_loses_at_most_a_read() {
    let s = Stack::new(&format!(
        r#"
[stack.logs]
max_size = "2GB"

[service.ticker]
command = "exec \"{py}\" ticker.py"

[service.w]
command = "exec \"{py}\" writer.py"
replicas = 3
restart = "never"
"#,
        py = python()
    ));
    s.write("ticker.py", TICKER);
    s.write("writer.py", WRITER);
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let names = ["ticker", "w.1", "w.2", "w.3"];
    let pids: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    let sup = serving_supervisor(&s);
    let size = |n: &str| std::fs::metadata(s.state(&format!("{n}.log"))).map_or(0, |m| m.len());
    let mut anchor = s.anchor_pid().expect("anchor");
    for round in 0..6 {
        let before: Vec<u64> = names.iter().map(|n| size(n)).collect();
        wait_for(
            &format!("round {round}: every process to write"),
            30,
            || names.iter().zip(&before).all(|(n, b)| size(n) > *b),
        );
        harness::kill(anchor, 9);
        wait_for("the anchor to be gone", 30, || fully_dead(anchor));
        let mut next = anchor;
        let replaced = within(30, || {
            next = s.anchor_pid().unwrap_or(anchor);
            next != anchor && alive(next)
        });
        assert!(
            replaced,
            "round {round}: the killed anchor {anchor} was not replaced (supervisor alive: {}): {}\n{}",
            alive(sup),
            s.status_json(),
            s.dump()
        );
        anchor = next;
        assert_eq!(
            serving_supervisor(&s),
            sup,
            "round {round}: the supervisor changed"
        );
        for (n, p) in names.iter().zip(&pids) {
            assert!(alive(*p), "round {round}: {n} (pid {p}) died\n{}", s.dump());
        }
    }
    let at_end = lines(&s, "logs/ticker.log").len();
    wait_for("ticker's next lines in its log", 30, || {
        lines(&s, "logs/ticker.log").len() >= at_end + 10
    });
    // A kill may take what the anchor was writing (one read per pipe):
    // never a duplicate, a split line or a line out of order.
    let ticks: Vec<u64> = lines(&s, "logs/ticker.log")
        .iter()
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("ticker.log: a split or foreign line {l:?}"))
        })
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[0] < w[1]),
        "ticker.log: duplicated or out of order: {ticks:?}"
    );
    let gaps = ticks.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(gaps <= 6, "ticker.log: {gaps} gaps in 6 kills: {ticks:?}");
    s.write("stop", "");
    wait_for("every writer to finish", 60, || {
        pids[1..].iter().all(|p| !alive(*p))
    });
    wait_for("every writer's end line in its log", 30, || {
        names[1..]
            .iter()
            .all(|n| s.read(&format!("logs/{n}.log")).contains("END "))
    });
    for n in &names[1..] {
        if let Err(e) = check_numbered_with_gaps(n, &s.read(&format!("logs/{n}.log")), 6) {
            panic!("{n}.log: {e}");
        }
    }
    sentry.assert_clean(&s);
}

/// A supervisor whose binary was replaced on disk (an upgrade: a new file
/// renamed over the old path; `/proc/self/exe` then reads `… (deleted)`)
/// still starts a new anchor when its anchor dies (from the path on disk,
/// retrying until one runs): it never exits and takes every pipe's last
/// reader with it.
#[test]
fn the_anchor_killed_after_the_binary_was_upgraded_on_disk_kills_nothing() {
    let s = Stack::new(&format!(
        "[service.ticker]\ncommand = \"exec \\\"{py}\\\" ticker.py\"\n",
        py = python()
    ));
    s.write("ticker.py", TICKER);
    // The stack runs from its own path to the binary, as an installed one.
    let exe = s.path().join("bin/stackctl");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    if std::fs::hard_link(harness::bin(), &exe).is_err() {
        std::fs::copy(harness::bin(), &exe).unwrap();
    }
    let run = |args: &[&str]| {
        let c = std::process::Command::new(&exe)
            .args(args)
            .current_dir(s.path())
            .env("SCTL_TEST_MARKER", &s.marker)
            .env_remove("STACKCTL_FILE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            c.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&c.stderr)
        );
    };
    run(&["start"]);
    let sentry = Sentry::watch(&s);
    let ticker = running_pid(&s, "ticker");
    let sup = serving_supervisor(&s);
    // The upgrade: a new file renamed over the path it runs from.
    // (A copy: a rename between two links of one file does nothing.)
    let new = s.path().join("bin/stackctl.new");
    std::fs::copy(harness::bin(), &new).unwrap();
    std::fs::rename(&new, &exe).unwrap();
    let anchor = s.anchor_pid().expect("anchor");
    harness::kill(anchor, 9);
    wait_for("the anchor to be gone", 30, || fully_dead(anchor));
    let at_kill = lines(&s, "logs/ticker.log").len();
    let logging = within(10, || lines(&s, "logs/ticker.log").len() >= at_kill + 10);
    assert!(
        logging && alive(ticker) && alive(sup),
        "after an upgrade on disk, the anchor's death took the stack down: ticker alive {}, \
         supervisor alive {}, ticker still logging {logging}\n{}",
        alive(ticker),
        alive(sup),
        s.dump()
    );
    sentry.assert_clean(&s);
}

// ---------------------------------------------------------------------------
// The stack file the next supervisor runs

/// The anchor keeps the text of the stack file its supervisor runs on
/// (`record::STACK_FILE_KEY`), and a relaunched supervisor runs on it: an
/// edit nobody reloaded is not applied half-way by a crash (a process
/// removed from the file stopped as a "stranger"); `reload` applies it.
#[test]
fn kill_9_after_an_unapplied_edit_changes_nothing_until_reload() {
    let s = Stack::new(
        r#"
[service.a]
command = "exec sleep 1000"

[service.b]
command = "exec sleep 1000"
"#,
    );
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let a = running_pid(&s, "a");
    let b = running_pid(&s, "b");
    // Edited, not reloaded: b removed.
    s.write("stack.toml", "[service.a]\ncommand = \"exec sleep 1000\"\n");
    let old = kill_supervisor(&s);
    supervisor_after(&s, old);
    let kept = within(5, || !alive(b));
    assert!(
        !kept && alive(b) && s.process_status("b").is_some_and(|p| p["pid"] == b),
        "a kill -9 of the supervisor applied an edit nobody reloaded: b (pid {b}) alive {}, status: {}",
        alive(b),
        s.status_json()
    );
    assert_eq!(running_pid(&s, "a"), a);
    // `reload` applies it.
    run_code(&s, &["reload"], 0);
    wait_for("b to be stopped by the reload", 30, || !alive(b));
    sentry.assert_clean(&s);
}

/// With the stack file broken on disk (an edit in progress), a killed
/// supervisor still comes back (on the text the anchor keeps): the stack
/// is never left with no restarts and no health checks.
#[test]
fn kill_9_with_the_stack_file_broken_on_disk_still_brings_a_supervisor_back() {
    let s = Stack::new("[service.a]\ncommand = \"exec sleep 1000\"\n");
    let sentry = Sentry::watch(&s);
    start_ok(&s, &[]);
    let a = running_pid(&s, "a");
    s.write(
        "stack.toml",
        "[service.a]\ncommand = \"exec sleep 1000\"\nbogus = [\n",
    );
    let old = kill_supervisor(&s);
    let back = within(10, || s.supervisor_pid().is_some_and(|p| p != old));
    assert!(
        back,
        "no supervisor came back after kill -9 while the stack file is broken on disk: {}\n{}",
        s.status_json(),
        s.dump()
    );
    assert_eq!(running_pid(&s, "a"), a);
    sentry.assert_clean(&s);
}

#[test]
fn kill_9_mid_scale_up_the_new_members_finish_starting_and_the_size_holds() {
    let s = Stack::new(
        r#"
[service.w]
command = "exec sh ./slow.sh w"
replicas = 1
ready = { log = "^w up$", timeout = "60s" }
"#,
    );
    s.write("slow.sh", SLOW_LOG);
    let sentry = Sentry::watch(&s);
    s.write("go", "");
    start_ok(&s, &[]);
    let w1 = running_pid(&s, "w.1");
    std::fs::remove_file(s.path().join("go")).unwrap();
    let scale = spawn_cli(&s, &["scale", "w", "3"]);
    wait_for("w.2 and w.3 to be spawned", 30, || {
        lines(&s, "w.pids").len() == 3
    });
    let w2 = s.pid_of("w.2").expect("w.2's pid");
    let w3 = s.pid_of("w.3").expect("w.3's pid");
    let old = kill_supervisor(&s);
    let _ = finish(scale);
    supervisor_after(&s, old);
    s.write("go", "");
    wait_for("w.2 and w.3 to be ready", 30, || {
        ["w.2", "w.3"]
            .iter()
            .all(|n| s.status_of(n)["state"] == "running")
    });
    start_ok(&s, &[]);
    for (n, p) in [("w.1", w1), ("w.2", w2), ("w.3", w3)] {
        assert_eq!(s.pids_of_process(n), vec![p], "{n}");
        assert_eq!(running_pid(&s, n), p, "{n}");
    }
    assert_eq!(lines(&s, "w.pids").len(), 3, "a member ran twice");
    assert!(s.process_status("w.4").is_none());
    sentry.assert_clean(&s);
}

#[test]
fn stop_while_only_the_anchor_runs_stops_everything_and_the_anchor_exits() {
    use std::os::unix::fs::PermissionsExt;
    let s = Stack::new(
        r#"
[service.a]
command = "exec sleep 1000"

[service.b]
command = "exec sleep 1000"
depends_on = ["a"]
"#,
    );
    // The stack runs from its own path to the binary, as an installed one.
    let exe = s.path().join("bin/stackctl");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(harness::bin(), &exe).unwrap();
    let started = s.cmd_of(&exe, &["start"]).output().expect("start");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let sentry = Sentry::watch(&s);
    let pids = [running_pid(&s, "a"), running_pid(&s, "b")];
    let anchor = s.anchor_pid().expect("anchor");
    // A broken upgrade renamed over that path: every supervisor the anchor
    // relaunches fails at once, so only the anchor runs.
    let broken = s.path().join("bin/stackctl.new");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &exe).unwrap();
    let old = kill_supervisor(&s);
    wait_for("status to say no supervisor runs", 30, || {
        s.status_json()["supervisor"]["running"] == false
    });
    // status says so, and shows the processes as they are.
    let doc = s.status_json();
    assert_eq!(doc["supervisor"]["anchor"], anchor, "{doc}");
    for (n, p) in ["a", "b"].iter().zip(&pids) {
        let st = s.status_of(n);
        assert_eq!(
            (&st["state"], &st["pid"]),
            (&"running".into(), &(*p).into()),
            "{n}: {st}"
        );
    }
    run_code(&s, &["stop"], 0);
    assert_gone_and_reaped(&pids, "after stop");
    let exited = within(10, || fully_dead(anchor));
    assert!(
        exited,
        "the anchor outlived `stop` (it keeps every exit no supervisor acknowledged):\n{}",
        s.dump()
    );
    assert!(supervisors(&s).iter().all(|p| *p == old || !alive(*p)));
    assert!(s.marked_pids().is_empty(), "{:?}", s.marked_pids());
    sentry.assert_clean(&s);
}
