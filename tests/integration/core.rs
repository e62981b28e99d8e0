//! Tests: the core (issue 2) — start order, readiness gates, failures,
//! stopping whole groups, status without a supervisor, pid reuse, the
//! environment, single-process commands, the control socket, and the
//! foreground and tmux modes.
//!
//! Every test runs the real binary against small `sh`/`python3` stand-ins
//! in a temp folder. Waits are conditions with deadlines (generous: the
//! machine is shared and loaded); the fixture's `Drop` stops the stack and
//! kills anything still carrying the test's marker.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    self, alive, free_port, python, run_code, session_of, start_ticks, wait_for, Run, Stack,
};

/// Runs `start`, asserting exit 0 with the whole context on failure.
#[track_caller]
fn start_ok(s: &Stack, args: &[&str]) -> Run {
    let mut full = vec!["start"];
    full.extend_from_slice(args);
    let r = s.run(&full);
    if r.code != Some(0) {
        panic!(
            "stackctl {full:?} exited {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- logs\n{}",
            r.code,
            r.stdout,
            r.stderr,
            s.dump()
        );
    }
    r
}

/// Like [`start_ok`], also returning how long `start` took.
#[track_caller]
fn timed_start(s: &Stack) -> (Run, Duration) {
    let t = Instant::now();
    let r = start_ok(s, &[]);
    (r, t.elapsed())
}

fn output(r: &Run) -> String {
    format!("{}\n{}", r.stdout, r.stderr)
}

fn state_of(s: &Stack, name: &str) -> String {
    s.status_of(name)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The pid of `name`, which must be running.
#[track_caller]
fn running_pid(s: &Stack, name: &str) -> i32 {
    let st = s.status_of(name);
    assert_eq!(st["state"], "running", "{name} is not running: {st}");
    let pid = st["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name}: no pid: {st}")) as i32;
    assert!(alive(pid), "{name}: pid {pid} from status is not alive");
    pid
}

/// Lines of `rel`, trimmed.
fn lines(s: &Stack, rel: &str) -> Vec<String> {
    s.read(rel).lines().map(|l| l.trim().to_string()).collect()
}

#[track_caller]
fn index_of(lines: &[String], what: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no line `{what}` in {lines:?}"))
}

// ---------------------------------------------------------------------------
// 1. Start order

#[test]
fn start_runs_tasks_to_completion_and_waits_for_ready_services_before_dependents() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "echo migrate-begin >> order.log; sleep 0.5; echo migrate-end >> order.log"

[service.db]
command = "echo db-begin >> order.log; sleep 1; echo db-ready >> order.log; echo 'db accepting connections'; exec sleep 1000"
ready = { log = "accepting connections", timeout = "60s" }

[service.api]
command = "echo api-begin >> order.log; echo 'api up'; exec sleep 1000"
depends_on = ["migrate", "db"]
ready = { log = "api up", timeout = "60s" }

[service.web]
command = "echo web-begin >> order.log; exec sleep 1000"
depends_on = ["api"]
"#,
    );
    start_ok(&s, &[]);
    // `web` has no gate: ready once spawned, perhaps before it wrote.
    wait_for("`web` to write its line", 30, || {
        s.read("order.log").contains("web-begin")
    });
    let l = lines(&s, "order.log");
    let api = index_of(&l, "api-begin");
    assert!(
        api > index_of(&l, "migrate-end"),
        "api began before migrate completed: {l:?}"
    );
    assert!(
        api > index_of(&l, "db-ready"),
        "api began before db was ready: {l:?}"
    );
    assert!(
        index_of(&l, "web-begin") > api,
        "web began before api: {l:?}"
    );
    assert_eq!(state_of(&s, "migrate"), "completed");
    for p in ["db", "api", "web"] {
        running_pid(&s, p);
    }
}

#[test]
fn independent_processes_start_in_parallel() {
    let s = Stack::new(
        r#"
[task.one]
command = "./par.sh"

[task.two]
command = "./par.sh"

[service.three]
command = "./par.sh; exec sleep 1000"

[service.after]
command = "echo after begin $(date +%s.%N) >> par.log; exec sleep 1000"
depends_on = ["one", "two", "three"]
"#,
    );
    s.write(
        "par.sh",
        "#!/bin/sh\necho \"$STACKCTL_PROCESS begin $(date +%s.%N)\" >> par.log\nsleep 3\necho \"$STACKCTL_PROCESS end $(date +%s.%N)\" >> par.log\n",
    );
    let (_, took) = timed_start(&s);
    // `after` has no gate: ready once spawned, perhaps before it wrote.
    // Nor has `three`: `after` may begin before `three` wrote its end.
    wait_for("`after` and `three` to write their lines", 30, || {
        let log = s.read("par.log");
        log.contains("after begin") && log.contains("three end")
    });
    let l = lines(&s, "par.log");
    let begins: Vec<usize> = ["one", "two", "three"]
        .iter()
        .map(|p| index_of(&l, &format!("{p} begin")))
        .collect();
    let first_end = ["one", "two", "three"]
        .iter()
        .map(|p| index_of(&l, &format!("{p} end")))
        .min()
        .unwrap();
    assert!(
        begins.iter().all(|b| *b < first_end),
        "the independent processes did not run side by side: {l:?}"
    );
    assert!(index_of(&l, "after begin") > first_end, "{l:?}");
    // Three 3 s stand-ins one after the other would take 9 s.
    assert!(
        took < Duration::from_secs(9),
        "start took {took:?}: not parallel"
    );
}

#[test]
fn dependents_wait_for_every_member_of_a_pool() {
    let s = Stack::new(
        r#"
[service.w]
command = "./member.sh"
replicas = 3
ready = { log = "member ready", timeout = "60s" }

[service.api]
command = "echo api-begin >> order.log; exec sleep 1000"
depends_on = ["w"]
"#,
    );
    // Member 2 is the slow one.
    s.write(
        "member.sh",
        "#!/bin/sh\n[ \"$STACKCTL_INSTANCE\" = 2 ] && sleep 1.5\necho \"$STACKCTL_PROCESS-ready\" >> order.log\necho member ready\nexec sleep 1000\n",
    );
    start_ok(&s, &[]);
    wait_for("`api` to write its line", 30, || {
        s.read("order.log").contains("api-begin")
    });
    let l = lines(&s, "order.log");
    let api = index_of(&l, "api-begin");
    for m in ["w.1", "w.2", "w.3"] {
        assert!(api > index_of(&l, &format!("{m}-ready")), "{l:?}");
        running_pid(&s, m);
    }
}

// ---------------------------------------------------------------------------
// 2. Gates

const HTTP_STANDIN: &str = r#"
import http.server, os, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
redirect = len(sys.argv) > 3 and sys.argv[3] == "redirect"
t0 = time.monotonic()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if time.monotonic() - t0 < delay:
            self.send_response(503); self.end_headers(); return
        if self.path == "/broken":
            self.send_response(503); self.end_headers(); return
        if not os.path.exists("gate-open"):
            open("gate-open", "w").close()
        if redirect:
            self.send_response(302); self.send_header("Location", "/broken"); self.end_headers(); return
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
print("http stand-in on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

const TCP_STANDIN: &str = r#"
import socket, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
time.sleep(delay)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
open("gate-open", "w").close()
s.listen(16)
while True:
    c, _ = s.accept()
    c.close()
"#;

/// Asserts that `start` of a one-service stack took at least the stand-in's
/// delay, that the stand-in had opened its gate when `start` returned, and
/// that the service is running and ready.
#[track_caller]
fn assert_gated_start(s: &Stack, delay: Duration) {
    let (_, took) = timed_start(s);
    assert!(
        s.path().join("gate-open").exists(),
        "start returned before the gate opened\n{}",
        s.dump()
    );
    assert!(
        took >= delay,
        "start returned after {took:?}, before the gate"
    );
    let st = s.status_of("svc");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["ready"], true, "{st}");
    run_code(s, &["status"], 0);
}

#[test]
fn gate_http_waits_for_a_2xx_answer() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = ["{py}", "http_standin.py", "{port}", "1.5"]
ready = {{ http = "http://127.0.0.1:{port}/health", timeout = "60s", interval = "100ms" }}
"#,
        py = python()
    ));
    s.write("http_standin.py", HTTP_STANDIN);
    assert_gated_start(&s, Duration::from_millis(1500));
}

#[test]
fn gate_http_passes_on_a_3xx_without_following_it() {
    // After the delay the server redirects to a page that answers 503: a
    // redirect means the server answers, and is not followed.
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = ["{py}", "http_standin.py", "{port}", "1.5", "redirect"]
ready = {{ http = "http://127.0.0.1:{port}/health", timeout = "60s", interval = "100ms" }}
"#,
        py = python()
    ));
    s.write("http_standin.py", HTTP_STANDIN);
    assert_gated_start(&s, Duration::from_millis(1500));
}

const NOTIFY_STANDIN: &str = r#"
import os, socket, time
time.sleep(1.5)
open("gate-open", "w").close()
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warming up", addr)
s.sendto(b"READY=1", addr)
time.sleep(1000)
"#;

#[test]
fn gate_notify_waits_for_ready_1() {
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = ["{py}", "notify.py"]
ready = {{ notify = true, timeout = "60s" }}
"#,
        py = python()
    ));
    s.write("notify.py", NOTIFY_STANDIN);
    assert_gated_start(&s, Duration::from_millis(1500));
}

#[test]
fn gate_tcp_waits_for_the_port_to_accept() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = ["{py}", "tcp.py", "{port}", "1.5"]
ready = {{ tcp = "127.0.0.1:{port}", timeout = "60s", interval = "100ms" }}
"#,
        py = python()
    ));
    s.write("tcp.py", TCP_STANDIN);
    assert_gated_start(&s, Duration::from_millis(1500));
}

#[test]
fn gate_exec_waits_for_the_command_to_exit_0() {
    let s = Stack::new(
        r#"
[service.svc]
command = "sleep 1.5; touch gate-open; touch ready.flag; exec sleep 1000"
ready = { exec = "test -f ready.flag", timeout = "60s", interval = "100ms" }
"#,
    );
    assert_gated_start(&s, Duration::from_millis(1500));
}

#[test]
fn gate_log_waits_for_a_line_matching_the_regex() {
    let s = Stack::new(
        r#"
[service.svc]
command = "echo booting; echo 'listening soon'; sleep 1.5; touch gate-open; echo 'server listening on port 4242'; exec sleep 1000"
ready = { log = 'listening on port \d+', timeout = "60s" }
"#,
    );
    assert_gated_start(&s, Duration::from_millis(1500));
}

#[test]
fn gate_alive_waits_its_duration() {
    let s = Stack::new(
        r#"
[service.svc]
command = "touch gate-open; exec sleep 1000"
ready = { alive = "1500ms" }
"#,
    );
    assert_gated_start(&s, Duration::from_millis(1500));
}

#[test]
fn gate_alive_fails_when_the_process_dies_first() {
    let s = Stack::new(
        r#"
[service.svc]
command = "echo DYING-EARLY; sleep 0.2; exit 5"
ready = { alive = "3s" }
restart = "never"
"#,
    );
    let r = run_code(&s, &["start"], 1);
    let out = output(&r);
    assert!(out.contains("svc") && out.contains("DYING-EARLY"), "{out}");
}

#[test]
fn no_gate_is_ready_as_soon_as_spawned() {
    let s = Stack::new(
        r#"
[service.svc]
command = "exec sleep 1000"

[service.dependent]
command = "exec sleep 1000"
depends_on = ["svc"]
"#,
    );
    start_ok(&s, &[]);
    for p in ["svc", "dependent"] {
        let st = s.status_of(p);
        assert_eq!(st["state"], "running", "{st}");
        assert_eq!(st["ready"], true, "{st}");
    }
    run_code(&s, &["status"], 0);
}

// ---------------------------------------------------------------------------
// 3. Gate timeout

#[test]
fn gate_timeout_fails_start_names_it_shows_its_log_and_skips_dependents() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[service.slow]
command = "./slow.sh"
ready = {{ tcp = "127.0.0.1:{port}", timeout = "2s", interval = "100ms" }}

[service.web]
command = "touch web-started; exec sleep 1000"
depends_on = ["slow"]

[service.edge]
command = "touch edge-started; exec sleep 1000"
depends_on = ["web"]
"#
    ));
    s.write(
        "slow.sh",
        "#!/bin/sh\necho $$ > slow.pid\nsetsid sleep 1000 & echo $! > slow-escaped.pid\necho SLOW-BOOT-LINE-1\necho SLOW-BOOT-LINE-2\necho SLOW-STILL-WAITING-3\nexec sleep 1000\n",
    );
    let r = run_code(&s, &["start"], 1);
    let out = output(&r);
    assert!(out.contains("slow"), "does not name the process: {out}");
    assert!(
        out.lines()
            .any(|l| l.contains("slow") && l.contains("after 2s") && l.contains("tcp")),
        "does not say that the tcp gate gave up after its 2s timeout: {out}"
    );
    assert!(
        out.contains("SLOW-BOOT-LINE-2") && out.contains("SLOW-STILL-WAITING-3"),
        "does not show the last log lines: {out}"
    );
    let not_started = out
        .lines()
        .find(|l| l.contains("not started") && l.contains("web") && l.contains("edge"));
    assert!(
        not_started.is_some(),
        "does not say which dependents were not started: {out}"
    );
    let pid = s.wait_pid_file("slow.pid", 10);
    assert!(!alive(pid), "the timed-out process {pid} was left running");
    let escaped = s.wait_pid_file("slow-escaped.pid", 10);
    assert!(
        !alive(escaped),
        "the timed-out process's child {escaped} (it left the group) was left running"
    );
    assert!(s.pids_of_process("slow").is_empty());
    assert!(s.pids_of_process("web").is_empty());
    assert!(s.pids_of_process("edge").is_empty());
    assert!(!s.path().join("web-started").exists());
    assert!(!s.path().join("edge-started").exists());
    assert_ne!(state_of(&s, "slow"), "running");
}

// ---------------------------------------------------------------------------
// 4. A failing task

#[test]
fn failed_task_blocks_dependents_and_status_shows_exit_code_3() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "echo MIGRATE-STEP-1; echo 'MIGRATE-BROKE: relation jobs exists' >&2; exit 3"

[service.api]
command = "touch api-started; exec sleep 1000"
depends_on = ["migrate"]

[service.worker]
command = "touch worker-started; exec sleep 1000"
depends_on = ["api"]
"#,
    );
    let r = run_code(&s, &["start"], 1);
    let out = output(&r);
    assert!(out.contains("migrate"), "{out}");
    assert!(
        out.contains("MIGRATE-BROKE: relation jobs exists"),
        "the task's log tail is not shown: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("not started") && l.contains("api") && l.contains("worker")),
        "does not report the dependents as not started: {out}"
    );
    assert!(!s.path().join("api-started").exists());
    assert!(!s.path().join("worker-started").exists());
    assert!(s.pids_of_process("api").is_empty());
    assert!(s.pids_of_process("worker").is_empty());
    let m = s.status_of("migrate");
    assert_eq!(m["state"], "failed", "{m}");
    assert_eq!(m["exit_code"], 3, "{m}");
    for p in ["api", "worker"] {
        let st = s.status_of(p);
        assert_ne!(st["state"], "running", "{st}");
        assert!(st["pid"].is_null(), "{st}");
    }
    run_code(&s, &["status"], 3);
}

#[test]
fn failed_task_log_tail_ends_with_its_last_line_even_after_much_output() {
    // The failure is reported only once everything the task wrote is in
    // its log: the last lines are the ones that explain it.
    let s = Stack::new(
        r#"
[task.migrate]
command = "seq 1 200000; echo 'MIGRATE-LAST-WORDS: disk full'; exit 3"

[service.api]
command = "exec sleep 1000"
depends_on = ["migrate"]
"#,
    );
    let r = run_code(&s, &["start"], 1);
    let out = output(&r);
    assert!(
        out.contains("MIGRATE-LAST-WORDS: disk full"),
        "the log tail misses the task's last line:\n{out}"
    );
    assert!(out.contains("199999"), "{out}");
}

#[test]
fn task_over_its_timeout_is_killed_and_fails_the_start() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "echo $$$$ > migrate.pid; echo MIGRATE-STUCK; sleep 1000 & wait"
timeout = "1s"

[service.api]
command = "touch api-started; exec sleep 1000"
depends_on = ["migrate"]
"#,
    );
    let r = run_code(&s, &["start"], 1);
    let out = output(&r);
    assert!(
        out.contains("migrate") && out.contains("timeout") && out.contains("MIGRATE-STUCK"),
        "{out}"
    );
    let pid = s.wait_pid_file("migrate.pid", 10);
    assert!(!alive(pid), "the timed-out task {pid} was left running");
    assert!(s.pids_of_process("migrate").is_empty());
    assert!(!s.path().join("api-started").exists());
    assert_eq!(state_of(&s, "migrate"), "failed");
}

// ---------------------------------------------------------------------------
// 5. Stopping whole groups

#[test]
fn stop_kills_the_grandchildren_in_the_group() {
    let s = Stack::new(
        r#"
[service.svc]
command = "./svc.sh"
"#,
    );
    s.write(
        "svc.sh",
        "#!/bin/sh\necho $$ > shell.pid\nsleep 1000 & echo $! > gc1.pid\nsleep 1000 & echo $! > gc2.pid\nwait\n",
    );
    start_ok(&s, &[]);
    let pids = [
        s.wait_pid_file("shell.pid", 30),
        s.wait_pid_file("gc1.pid", 30),
        s.wait_pid_file("gc2.pid", 30),
    ];
    for p in pids {
        assert!(alive(p), "pid {p} should be running");
    }
    run_code(&s, &["stop"], 0);
    for p in pids {
        assert!(!alive(p), "pid {p} survived stop");
    }
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

const DOUBLE_FORK: &str = r#"
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open("escaped-py.pid.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("escaped-py.pid.tmp", "escaped-py.pid")
        time.sleep(1000)
    os._exit(0)
os.wait()
"#;

#[test]
fn stop_finds_descendants_that_left_the_group_with_setsid() {
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = "./svc.sh"
env = {{ PY = "{py}" }}
"#,
        py = python()
    ));
    s.write(
        "svc.sh",
        "#!/bin/sh\necho $$ > shell.pid\nsetsid sleep 1000 & echo $! > escaped-setsid.pid\n\"$PY\" double_fork.py\nsleep 1000 & wait\n",
    );
    s.write("double_fork.py", DOUBLE_FORK);
    start_ok(&s, &[]);
    let shell = s.wait_pid_file("shell.pid", 30);
    let esc1 = s.wait_pid_file("escaped-setsid.pid", 30);
    let esc2 = s.wait_pid_file("escaped-py.pid", 30);
    wait_for("the setsid child to leave the session", 30, || {
        session_of(esc1).is_some_and(|sid| Some(sid) != session_of(shell))
    });
    for p in [esc1, esc2] {
        assert!(alive(p), "pid {p} should be running");
        assert_ne!(
            session_of(p),
            session_of(shell),
            "pid {p} did not leave the service's session"
        );
    }
    run_code(&s, &["stop"], 0);
    for p in [shell, esc1, esc2] {
        assert!(!alive(p), "pid {p} survived stop");
    }
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

#[test]
fn stop_during_a_pending_gate_fails_that_start_and_leaves_nothing() {
    let s = Stack::new(
        r#"
[service.slow]
command = "echo $$$$ > slow.pid; echo waiting; exec sleep 1000"
ready = { log = "never printed", timeout = "120s" }

[service.dep]
command = "touch dep-started; exec sleep 1000"
depends_on = ["slow"]
"#,
    );
    let start = s
        .cmd(&["start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn start");
    let slow = s.wait_pid_file("slow.pid", 60);
    wait_for("slow to be starting", 60, || {
        s.process_status("slow")
            .is_some_and(|p| p["state"] == "starting")
    });
    let t = Instant::now();
    run_code(&s, &["stop"], 0);
    assert!(t.elapsed() < Duration::from_secs(30));
    let out = start.wait_with_output().expect("wait start");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("slow") && text.contains("dep"), "{text}");
    assert!(!alive(slow));
    assert!(!s.path().join("dep-started").exists());
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

#[test]
fn a_crashed_service_leaves_no_escaped_child_behind_before_its_restart() {
    // Each attempt starts a child that leaves the group, then crashes. The
    // restart must not run next to the crashed attempt's leftovers.
    let s = Stack::new(
        r#"
[service.crashy]
command = "setsid sleep 1000 & echo $! >> crashy-kids.txt; echo up; sleep 0.3; exit 1"
restart = "on-failure"
max_restarts = 2
ready = { log = "up", timeout = "60s" }
"#,
    );
    start_ok(&s, &[]);
    let kids = || -> Vec<i32> {
        s.read("crashy-kids.txt")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    wait_for("a second attempt", 60, || kids().len() >= 2);
    let first = kids()[0];
    assert!(
        !alive(first),
        "the first attempt's escaped child {first} still runs next to the restart"
    );
}

// ---------------------------------------------------------------------------
// 6. SIGKILL escalation

#[test]
fn stop_escalates_to_sigkill_after_stop_timeout() {
    let s = Stack::new(&format!(
        r#"
[service.stubborn]
command = ["{py}", "stubborn.py"]
stop_timeout = "1s"
ready = {{ log = "ignoring SIGTERM", timeout = "60s" }}
"#,
        py = python()
    ));
    s.write(
        "stubborn.py",
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('stubborn.pid', 'w').write(str(os.getpid()))\nprint('ignoring SIGTERM', flush=True)\ntime.sleep(1000)\n",
    );
    start_ok(&s, &[]);
    let pid = running_pid(&s, "stubborn");
    let t = Instant::now();
    let r = run_code(&s, &["stop"], 0);
    let took = t.elapsed();
    assert!(!alive(pid), "the stubborn process survived");
    // A SIGKILL is never reported as a clean stop.
    let out = output(&r);
    assert!(
        out.lines().any(|l| l.contains("stubborn")
            && l.contains("killed")
            && l.contains("SIGKILL")
            && l.contains("stop_timeout of 1s")),
        "{out}"
    );
    let own = s.read("logs/stackctl.log");
    assert!(
        own.lines()
            .any(|l| l.contains("stubborn") && l.contains("killed with SIGKILL")),
        "{own}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "stop took {took:?}: it did not wait stop_timeout before SIGKILL"
    );
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}: SIGKILL came late"
    );
}

#[test]
fn stop_waits_for_the_whole_group_not_just_its_leader() {
    // The shell leader dies at SIGTERM; its child ignores it and must still
    // be killed once stop_timeout has passed.
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = "\"{py}\" stubborn.py & wait"
stop_timeout = "1s"
ready = {{ log = "ignoring SIGTERM", timeout = "60s" }}
"#,
        py = python()
    ));
    s.write(
        "stubborn.py",
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('stubborn.pid', 'w').write(str(os.getpid()))\nprint('ignoring SIGTERM', flush=True)\ntime.sleep(1000)\n",
    );
    start_ok(&s, &[]);
    let leader = running_pid(&s, "svc");
    let child = s.wait_pid_file("stubborn.pid", 30);
    assert_ne!(leader, child);
    let t = Instant::now();
    run_code(&s, &["stop"], 0);
    let took = t.elapsed();
    assert!(!alive(leader), "the leader survived");
    assert!(
        !alive(child),
        "the leader's child survived: stop only waited for the leader"
    );
    assert!(took >= Duration::from_secs(1), "stop took {took:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
}

#[test]
fn sigterm_to_the_supervisor_stops_the_stack() {
    let s = Stack::new(
        r#"
[service.a]
command = "exec sleep 1000"

[service.b]
command = "exec sleep 1000"
depends_on = ["a"]
"#,
    );
    start_ok(&s, &[]);
    let pids = [running_pid(&s, "a"), running_pid(&s, "b")];
    let sup = s.supervisor_pid().expect("supervisor pid");
    harness::kill(sup, 15);
    wait_for("the supervisor to exit after SIGTERM", 60, || !alive(sup));
    for p in pids {
        assert!(!alive(p), "pid {p} survived SIGTERM to the supervisor");
    }
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
    assert!(
        !s.state("stackctl.sock").exists(),
        "the socket was left behind"
    );
}

// ---------------------------------------------------------------------------
// 7. Status truth

#[test]
fn status_shows_a_child_killed_from_outside_as_not_running() {
    let s = Stack::new(
        r#"
[service.victim]
command = "exec sleep 1000"
restart = "never"
"#,
    );
    start_ok(&s, &[]);
    let pid = running_pid(&s, "victim");
    harness::kill(pid, 9);
    wait_for("status to notice the killed child", 30, || {
        state_of(&s, "victim") != "running"
    });
    let st = s.status_of("victim");
    assert!(st["pid"].is_null(), "{st}");
    assert_eq!(st["ready"], false, "{st}");
    assert_eq!(st["exit_code"], 128 + 9, "killed by SIGKILL: {st}");
    run_code(&s, &["status"], 3);
    run_code(&s, &["status", "--json"], 3);
}

#[test]
fn status_shows_the_new_pid_after_a_killed_child_is_restarted() {
    let s = Stack::new(
        r#"
[service.phoenix]
command = "exec sleep 1000"
restart = "on-failure"
"#,
    );
    start_ok(&s, &[]);
    let pid = running_pid(&s, "phoenix");
    harness::kill(pid, 9);
    wait_for("phoenix to run again with a new pid", 60, || {
        s.process_status("phoenix").is_some_and(|p| {
            p["state"] == "running" && p["pid"].as_i64().is_some_and(|n| n as i32 != pid)
        })
    });
    let st = s.status_of("phoenix");
    assert_eq!(st["restarts"], 1, "{st}");
    assert_eq!(
        s.pids_of_process("phoenix"),
        vec![running_pid(&s, "phoenix")]
    );
    run_code(&s, &["status"], 0);
}

#[test]
fn status_without_supervisor_or_anchor_and_start_after_both_were_killed() {
    let s = Stack::new(
        r#"
[service.a]
command = "echo a up; exec sleep 1000"

[service.w]
command = "echo w up; exec sleep 1000"
replicas = 2
depends_on = ["a"]

[service.g]
command = "exec ./g.sh"
ready = { log = "g up", timeout = "60s" }
"#,
    );
    s.write("g.sh", G_SH);
    start_ok(&s, &[]);
    let old_kids = kids(&s);
    assert_eq!(old_kids.len(), 2);
    let names = ["a", "w.1", "w.2"];
    let old: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    s.kill_supervision();

    let r = run_code(&s, &["status", "--json"], 3);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(doc["supervisor"]["running"], false, "{doc}");
    for (n, pid) in names.iter().zip(&old) {
        let p = doc["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *n)
            .unwrap_or_else(|| panic!("{n} missing: {doc}"));
        assert_eq!(p["pid"], *pid, "{n}: {p}");
        assert_eq!(p["state"], "running", "{n}: {p}");
    }
    run_code(&s, &["status"], 3);

    // One dies while nobody supervises it: status says so.
    harness::kill(old[2], 9);
    wait_for("w.2 to die", 30, || !alive(old[2]));
    let w2 = s.status_of("w.2");
    assert!(w2["pid"].is_null(), "{w2}");
    assert_ne!(w2["state"], "running", "{w2}");
    assert_eq!(s.status_of("w.1")["pid"], old[1]);

    start_ok(&s, &[]);
    for (n, pid) in names.iter().zip(&old) {
        assert!(!alive(*pid), "{n}: the old pid {pid} is still alive");
        let copies = s.pids_of_process(n);
        assert_eq!(copies.len(), 1, "{n}: copies {copies:?}");
        assert_eq!(copies[0], running_pid(&s, n));
    }
    // No orphan of the old run: g's old children, in its group or not.
    for k in &old_kids {
        assert!(!alive(*k), "the old run's child {k} is still alive");
    }
    let new_kids: Vec<i32> = kids(&s).into_iter().skip(2).collect();
    assert_eq!(new_kids.len(), 2);
    let mut g_pids = s.pids_of_process("g");
    g_pids.sort();
    let mut want = vec![running_pid(&s, "g"), new_kids[0], new_kids[1]];
    want.sort();
    let show: Vec<String> = g_pids
        .iter()
        .map(|p| {
            format!(
                "{p}: {:?} sid {:?}",
                std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default(),
                session_of(*p)
            )
        })
        .collect();
    assert_eq!(
        g_pids,
        want,
        "g: one shell and its two children: {show:?} kids file {:?}",
        s.read("g-kids.txt")
    );
    assert_eq!(
        s.stack_pids().len(),
        names.len() + 3,
        "{:?}",
        s.stack_pids()
    );
    run_code(&s, &["stop"], 0);
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

/// A service with a child in its group and one that left it (`setsid`);
/// it appends their pids to `g-kids.txt` before it says it is up.
const G_SH: &str = "#!/bin/sh\nsleep 1000 & echo $! >> g-kids.txt\nsetsid sleep 1000 & echo $! >> g-kids.txt\necho g up\nwait\n";

fn kids(s: &Stack) -> Vec<i32> {
    s.read("g-kids.txt")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn stop_without_supervisor_or_anchor_stops_everything_they_left() {
    let s = Stack::new(
        r#"
[service.g]
command = "exec ./g.sh"
ready = { log = "g up", timeout = "60s" }

[service.h]
command = "exec sleep 1000"
depends_on = ["g"]
"#,
    );
    s.write("g.sh", G_SH);
    start_ok(&s, &[]);
    let mut pids = kids(&s);
    pids.push(running_pid(&s, "g"));
    pids.push(running_pid(&s, "h"));
    s.kill_supervision();
    for p in &pids {
        assert!(alive(*p), "{p} died with the supervisor and the anchor");
    }
    let r = run_code(&s, &["stop"], 0);
    for p in &pids {
        assert!(!alive(*p), "{p} survived stop without a supervisor: {r:?}");
    }
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
    // And the pid files are gone: status shows nothing running.
    let doc = s.status_json();
    for p in doc["processes"].as_array().unwrap() {
        assert!(p["pid"].is_null(), "{p}");
    }
}

#[test]
fn concurrent_starts_share_one_supervisor() {
    // Several `start`s at once with no supervisor running (an operator and
    // the keeper, say): each launches one, one wins; the others must use it.
    let s = Stack::new(
        r#"
[service.a]
command = "exec sleep 1000"

[service.b]
command = "exec sleep 1000"
depends_on = ["a"]
"#,
    );
    let children: Vec<Child> = (0..3)
        .map(|_| {
            s.cmd(&["start"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn start")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait start");
        assert_eq!(
            out.status.code(),
            Some(0),
            "a concurrent start failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A launched supervisor that lost the flock exits on its own, perhaps
    // after its `start` already used the winner.
    let supervisors = || -> Vec<i32> {
        s.marked_pids()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"supervise"))
            })
            .collect()
    };
    wait_for("one supervisor left", 60, || supervisors().len() == 1);
    assert_eq!(s.status_json()["supervisor"]["running"], true);
    for n in ["a", "b"] {
        assert_eq!(s.pids_of_process(n).len(), 1, "{n}");
    }
}

#[test]
fn start_during_a_full_stop_leaves_no_unsupervised_process() {
    // `a` takes its whole 2 s grace to stop. A `start` that arrives during
    // the stop must not report the stack up and then leave processes
    // running without a supervisor.
    let s = Stack::new(
        r#"
[service.a]
command = "trap '' TERM; echo up; while true; do sleep 0.1; done"
stop_timeout = "2s"
ready = { log = "up", timeout = "60s" }

[service.b]
command = "exec sleep 1000"
"#,
    );
    start_ok(&s, &[]);
    let stop = s
        .cmd(&["stop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stop");
    wait_for("a to be stopping", 60, || {
        s.process_status("a")
            .is_some_and(|p| p["state"] == "stopping")
    });
    let during = s.run(&["start"]);
    let stop = stop.wait_with_output().expect("wait stop");
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    if during.code == Some(0) {
        // Accepted: then the stack is up under a supervisor, once each.
        let doc = s.status_json();
        assert_eq!(
            doc["supervisor"]["running"],
            true,
            "start during stop exited 0, but no supervisor runs; left: {:?}\n{during:?}",
            s.stack_pids()
        );
        for n in ["a", "b"] {
            running_pid(&s, n);
            assert_eq!(s.pids_of_process(n).len(), 1, "{n}");
        }
        return;
    }
    // Refused: it says why, and the stop leaves nothing.
    assert!(
        output(&during).contains("stop"),
        "a refused start says why: {during:?}"
    );
    wait_for("the supervisor to exit", 60, || {
        s.status_json()["supervisor"]["running"] == false
    });
    let left = s.stack_pids();
    assert!(
        left.is_empty(),
        "left running without a supervisor: {left:?}"
    );
    // Once the stop is done, start works again.
    start_ok(&s, &[]);
    running_pid(&s, "a");
    running_pid(&s, "b");
}

// ---------------------------------------------------------------------------
// 8. Pid reuse

/// A live process that is not the stack's: its own group, the marker (so
/// the fixture cleans it up), killed on drop.
struct Stranger(Child);

impl Stranger {
    fn spawn(s: &Stack) -> Stranger {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .env("SCTL_TEST_MARKER", &s.marker)
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        Stranger(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pid_file_naming_a_reused_pid_is_stale_and_that_process_is_not_signalled() {
    let s = Stack::new(
        r#"
[service.api]
command = "exec sleep 1000"
"#,
    );
    let stranger = Stranger::spawn(&s);
    let pid = stranger.pid();
    let ticks = start_ticks(pid);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let pids = s.state("pids");
    std::fs::create_dir_all(&pids).unwrap();
    std::fs::set_permissions(s.state(""), std::fs::Permissions::from_mode(0o700)).unwrap();
    let record = serde_json::json!({
        "pid": pid, "pgid": pid, "start_ticks": ticks + 12345,
        "boot_id": boot.trim(), "process": "api", "supervisor_pid": 1,
    });
    std::fs::write(pids.join("api.pid"), format!("{record}\n")).unwrap();

    let r = run_code(&s, &["status", "--json"], 3);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(doc["supervisor"]["running"], false, "{doc}");
    let api = &doc["processes"][0];
    assert_eq!(api["name"], "api", "{doc}");
    assert!(api["pid"].is_null(), "a stranger's pid is reported: {api}");
    assert_eq!(api["state"], "stopped", "{api}");

    let r = run_code(&s, &["stop"], 0);
    assert!(!r.stdout.contains(&pid.to_string()), "{r:?}");
    assert!(alive(pid), "stop without a supervisor signalled a stranger");

    // A new supervisor clears what a predecessor left: not the stranger.
    start_ok(&s, &[]);
    assert!(alive(pid), "start signalled a stranger");
    assert_ne!(running_pid(&s, "api"), pid);
    run_code(&s, &["stop"], 0);
    assert!(alive(pid), "stop signalled a stranger");
}

// ---------------------------------------------------------------------------
// 9. The environment

const SECRET: &str = "s3cr3t-7f3a9c1e-value";

#[test]
fn every_source_of_environment_reaches_the_process() {
    let s = Stack::new(
        r#"
[stack]
name = "envstack"
env_file = [".env", { path = "missing.env", optional = true }]

[env]
GLOBAL_A = "global-a"
DEFAULTED = "${CORE_TEST_UNSET_VAR:-fallback-value}"
FROM_HOST = "${CORE_TEST_HOST_VAR:-not-passed}"

[service.solo]
command = "./dump.sh"
env = { LOCAL_B = "local-b", AUTH = "Bearer ${SECRET_TOKEN}" }
require_env = ["SECRET_TOKEN"]

[service.member]
command = "./dump.sh"
replicas = 2
"#,
    );
    s.write(
        ".env",
        &format!("# the team's secrets\nFROM_DOTENV=dot-value\nSECRET_TOKEN={SECRET}\n"),
    );
    s.write(
        "dump.sh",
        "#!/bin/sh\nenv > \".env-$STACKCTL_PROCESS.tmp\"\nmv \".env-$STACKCTL_PROCESS.tmp\" \"env-$STACKCTL_PROCESS.txt\"\nexec sleep 1000\n",
    );
    let r = s.run_env(
        &["start"],
        &[
            ("CORE_TEST_UNSET_VAR", None),
            ("CORE_TEST_HOST_VAR", Some("from-host")),
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}\n{}", s.dump());
    let env_of = |p: &str| -> Vec<(String, String)> {
        let rel = format!("env-{p}.txt");
        wait_for(&format!("{p} to dump its environment"), 30, || {
            s.path().join(&rel).exists()
        });
        s.read(&rel)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let get = |env: &[(String, String)], k: &str| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    let solo = env_of("solo");
    for (k, v) in [
        ("GLOBAL_A", "global-a"),
        ("DEFAULTED", "fallback-value"),
        ("FROM_HOST", "from-host"),
        ("LOCAL_B", "local-b"),
        ("FROM_DOTENV", "dot-value"),
        ("SECRET_TOKEN", SECRET),
        ("AUTH", &format!("Bearer {SECRET}")),
        ("STACKCTL_STACK", "envstack"),
        ("STACKCTL_PROCESS", "solo"),
    ] {
        assert_eq!(get(&solo, k).as_deref(), Some(v), "solo: {k}");
    }
    assert_eq!(
        get(&solo, "STACKCTL_INSTANCE"),
        None,
        "solo is not a pool member"
    );
    for i in [1, 2] {
        let name = format!("member.{i}");
        let env = env_of(&name);
        assert_eq!(get(&env, "STACKCTL_PROCESS"), Some(name.clone()));
        assert_eq!(get(&env, "STACKCTL_INSTANCE"), Some(i.to_string()));
        assert_eq!(get(&env, "STACKCTL_STACK").as_deref(), Some("envstack"));
        assert_eq!(get(&env, "GLOBAL_A").as_deref(), Some("global-a"));
        assert_eq!(get(&env, "SECRET_TOKEN").as_deref(), Some(SECRET));
        assert_eq!(get(&env, "LOCAL_B"), None, "{name} got solo's env");
    }

    // The secret is in no output of stackctl's.
    let mut outputs = vec![
        ("status", output(&s.run(&["status"]))),
        ("status --json", output(&s.run(&["status", "--json"]))),
        ("check", output(&s.run(&["check"]))),
        ("check --json", output(&s.run(&["check", "--json"]))),
        ("status -v", output(&s.run(&["-v", "status"]))),
    ];
    outputs.push(("stackctl.log", s.read("logs/stackctl.log")));
    for (what, text) in &outputs {
        assert!(
            !text.contains(SECRET),
            "the secret appears in {what}:\n{text}"
        );
    }
    assert!(!s.read("logs/stackctl.log").is_empty());
}

#[test]
fn secret_in_a_failing_probe_never_appears_in_messages() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[stack]
env_file = [".env"]

[service.api]
command = "exec sleep 1000"
ready = {{ exec = "echo checking with ${{SECRET_TOKEN}}; test -f never-${{SECRET_TOKEN}}", timeout = "1s", interval = "200ms" }}

[service.web]
command = "exec sleep 1000"
ready = {{ http = "http://127.0.0.1:{port}/health?token=${{SECRET_TOKEN}}", timeout = "1s", interval = "200ms" }}

[service.watched]
command = "exec sleep 1000"
restart = "never"
health = {{ http = "http://127.0.0.1:{port}/live?token=${{SECRET_TOKEN}}", interval = "200ms", failures = 2 }}
"#
    ));
    s.write(".env", &format!("SECRET_TOKEN={SECRET}\n"));
    let r = run_code(&s, &["start"], 1);
    let start_out = output(&r);
    assert!(
        start_out.contains("api") && start_out.contains("web"),
        "{start_out}"
    );
    wait_for("the failing health check to stop `watched`", 60, || {
        state_of(&s, "watched") == "failed"
    });
    let outputs = [
        ("start", start_out),
        ("status", output(&s.run(&["status"]))),
        ("status --json", output(&s.run(&["status", "--json"]))),
        ("check", output(&s.run(&["check"]))),
        ("stackctl.log", s.read("logs/stackctl.log")),
    ];
    for (what, text) in &outputs {
        assert!(
            !text.contains(SECRET),
            "the secret appears in {what}:\n{text}"
        );
    }
    // The failures are still explained.
    let status = &outputs[1].1;
    assert!(
        status.contains("exec") && status.contains("http"),
        "{status}"
    );
    assert!(status.contains("health"), "{status}");
}

#[test]
fn missing_require_env_exits_2_naming_it_and_starts_nothing() {
    let s = Stack::new(
        r#"
[task.first]
command = "touch first-ran"

[service.api]
command = "touch api-ran; exec sleep 1000"
depends_on = ["first"]
require_env = ["CORE_TEST_REQUIRED_XYZ", "CORE_TEST_EMPTY_XYZ"]

[service.other]
command = "touch other-ran; exec sleep 1000"
"#,
    );
    let r = s.run_env(
        &["start"],
        &[
            ("CORE_TEST_REQUIRED_XYZ", None),
            ("CORE_TEST_EMPTY_XYZ", Some("")),
        ],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("CORE_TEST_REQUIRED_XYZ"), "{r:?}");
    assert!(r.stderr.contains("CORE_TEST_EMPTY_XYZ"), "{r:?}");
    for f in ["first-ran", "api-ran", "other-ran"] {
        assert!(!s.path().join(f).exists(), "{f}: something was started");
    }
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

// ---------------------------------------------------------------------------
// 10. cwd, pre_start, restart, stop NAME, start NAME

#[test]
fn cwd_is_where_the_process_runs() {
    let s = Stack::new(
        r#"
[service.svc]
command = "pwd > here.txt; exec sleep 1000"
cwd = "sub/dir"
"#,
    );
    std::fs::create_dir_all(s.path().join("sub/dir")).unwrap();
    start_ok(&s, &[]);
    wait_for("svc to write here.txt", 30, || {
        !s.read("sub/dir/here.txt").is_empty()
    });
    let here = std::fs::canonicalize(s.read("sub/dir/here.txt").trim()).unwrap();
    assert_eq!(
        here,
        std::fs::canonicalize(s.path().join("sub/dir")).unwrap()
    );
}

#[test]
fn pre_start_runs_before_the_process_and_a_failing_one_fails_that_start() {
    let s = Stack::new(
        r#"
[service.good]
command = "test -f prepared.txt && touch good-saw-prepared; exec sleep 1000"
pre_start = ["echo prepared >> prepared.txt"]

[service.bad]
command = "touch bad-started; exec sleep 1000"
pre_start = ["echo 'PRE-START-BROKE: assets missing' >&2; exit 7"]

[service.after-bad]
command = "touch after-bad-started; exec sleep 1000"
depends_on = ["bad"]
"#,
    );
    let r = run_code(&s, &["start"], 1);
    let out = output(&r);
    assert!(out.contains("bad"), "{out}");
    assert!(out.contains("PRE-START-BROKE: assets missing"), "{out}");
    assert!(out.contains("pre_start"), "{out}");
    assert!(!s.path().join("bad-started").exists());
    assert!(!s.path().join("after-bad-started").exists());
    wait_for("good to see its pre_start's file", 30, || {
        s.path().join("good-saw-prepared").exists()
    });
    let good = running_pid(&s, "good");
    assert_ne!(state_of(&s, "bad"), "running");
    // pre_start runs before every start.
    assert_eq!(lines(&s, "prepared.txt").len(), 1);
    run_code(&s, &["restart", "good"], 0);
    assert_ne!(running_pid(&s, "good"), good);
    assert_eq!(
        lines(&s, "prepared.txt").len(),
        2,
        "pre_start did not run again"
    );
}

#[test]
fn stop_during_a_pre_start_stops_it_and_fails_that_start() {
    let s = Stack::new(
        r#"
[service.slowprep]
command = "touch slowprep-started; exec sleep 1000"
pre_start = ["echo $$$$ > prep.pid; exec sleep 1000"]
"#,
    );
    let mut start = s
        .cmd(&["start"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn start");
    let prep = s.wait_pid_file("prep.pid", 30);
    wait_for("the pre_start command to run", 30, || alive(prep));
    run_code(&s, &["stop", "slowprep"], 0);
    wait_for("the pre_start command to be stopped", 30, || !alive(prep));
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(st) = start.try_wait().expect("try_wait") {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "start did not return after the stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(1), "the interrupted start must fail");
    assert!(
        !s.path().join("slowprep-started").exists(),
        "the process ran after a stopped pre_start"
    );
    assert_eq!(state_of(&s, "slowprep"), "stopped");
}

const THREE_TIER: &str = r#"
[task.migrate]
command = "echo run >> migrate-runs.txt"

[service.api]
command = "exec sleep 1000"
depends_on = ["migrate"]

[service.web]
command = "exec sleep 1000"
depends_on = ["api"]

[service.extra]
command = "exec sleep 1000"
"#;

#[test]
fn restart_one_service_gives_it_a_new_pid_and_leaves_dependents_alone() {
    let s = Stack::new(THREE_TIER);
    start_ok(&s, &[]);
    let api = running_pid(&s, "api");
    let web = running_pid(&s, "web");
    let extra = running_pid(&s, "extra");
    run_code(&s, &["restart", "api"], 0);
    let api2 = running_pid(&s, "api");
    assert_ne!(api, api2, "api kept its pid");
    assert!(!alive(api), "the old api is still alive");
    assert_eq!(running_pid(&s, "web"), web, "web was restarted");
    assert_eq!(running_pid(&s, "extra"), extra, "extra was restarted");
    assert_eq!(lines(&s, "migrate-runs.txt").len(), 1, "migrate re-ran");
    assert_eq!(s.pids_of_process("api"), vec![api2]);
}

#[test]
fn restart_without_names_reruns_tasks_and_restarts_everything() {
    let s = Stack::new(THREE_TIER);
    start_ok(&s, &[]);
    assert_eq!(lines(&s, "migrate-runs.txt").len(), 1);
    let before: Vec<i32> = ["api", "web", "extra"]
        .iter()
        .map(|n| running_pid(&s, n))
        .collect();
    run_code(&s, &["restart"], 0);
    assert_eq!(
        lines(&s, "migrate-runs.txt").len(),
        2,
        "the task did not run again"
    );
    for (n, old) in ["api", "web", "extra"].iter().zip(before) {
        let new = running_pid(&s, n);
        assert_ne!(new, old, "{n} was not restarted");
        assert!(!alive(old));
    }
    assert_eq!(state_of(&s, "migrate"), "completed");
}

/// Seconds since midnight of a `stackctl.log` line's stamp.
fn log_secs(line: &str) -> f64 {
    let stamp = line.split(' ').next().unwrap_or_default();
    let time = stamp
        .split('T')
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('Z');
    time.split(':')
        .map(|p| p.parse::<f64>().unwrap_or(f64::NAN))
        .fold(0.0, |acc, p| acc * 60.0 + p)
}

#[test]
fn restart_of_a_crash_looping_service_restarts_it_now_not_after_its_back_off() {
    let s = Stack::new(
        r#"
[service.svc]
command = "if [ -e ok ]; then exec sleep 1000; else exit 1; fi"
restart = "always"
max_restarts = 1000
"#,
    );
    let _ = s.run(&["start"]);
    let backing_off = "restarting in 6.4s";
    wait_for("svc's back-off to reach 6.4 s", 60, || {
        s.read("logs/stackctl.log").contains(backing_off)
    });
    s.write("ok", "");
    run_code(&s, &["restart", "svc"], 0);
    assert_eq!(state_of(&s, "svc"), "running");
    let log = s.read("logs/stackctl.log");
    let from = log.rfind(backing_off).expect("the back-off line");
    let begun = log[..from].rsplit('\n').next().unwrap_or_default();
    let spawned = log[from..]
        .lines()
        .find(|l| l.contains("spawned pid"))
        .unwrap_or_else(|| panic!("no spawn after the back-off:\n{log}"));
    let waited = log_secs(spawned) - log_secs(begun);
    assert!(
        waited < 6.4,
        "`restart svc` waited out the back-off ({waited:.1}s) instead of restarting it now:\n{log}"
    );
}

#[test]
fn stop_name_stops_only_that_process() {
    let s = Stack::new(THREE_TIER);
    start_ok(&s, &[]);
    let api = running_pid(&s, "api");
    let web = running_pid(&s, "web");
    let extra = running_pid(&s, "extra");
    run_code(&s, &["stop", "extra"], 0);
    assert!(!alive(extra), "extra is still alive");
    assert_eq!(state_of(&s, "extra"), "stopped");
    // status: 3 while a named process is down, 0 for the ones that are up.
    run_code(&s, &["status"], 3);
    run_code(&s, &["status", "extra"], 3);
    run_code(&s, &["status", "api", "web", "migrate"], 0);
    assert_eq!(running_pid(&s, "api"), api);
    assert_eq!(running_pid(&s, "web"), web);
    let r = run_code(&s, &["stop", "wbe"], 2);
    assert!(r.stderr.contains("wbe"), "{r:?}");
    assert_eq!(running_pid(&s, "web"), web);
    run_code(&s, &["stop", "web"], 0);
    assert!(!alive(web));
    assert_eq!(running_pid(&s, "api"), api);
    // The supervisor is still there for the rest.
    assert_eq!(s.status_json()["supervisor"]["running"], true);
}

#[test]
fn start_name_starts_only_it_and_its_dependencies() {
    let s = Stack::new(THREE_TIER);
    let r = run_code(&s, &["start", "apj"], 2);
    assert!(
        r.stderr.contains("apj") && r.stderr.contains("api"),
        "an unknown name is named, with a suggestion: {r:?}"
    );
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
    start_ok(&s, &["api"]);
    assert_eq!(state_of(&s, "migrate"), "completed");
    running_pid(&s, "api");
    for n in ["web", "extra"] {
        assert_ne!(state_of(&s, n), "running", "{n} was started");
        assert!(s.pids_of_process(n).is_empty(), "{n} has a process");
    }
}

#[test]
fn start_when_running_leaves_pids_unchanged() {
    let s = Stack::new(THREE_TIER);
    start_ok(&s, &[]);
    let names = ["api", "web", "extra"];
    let before: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    let r = start_ok(&s, &[]);
    let after: Vec<i32> = names.iter().map(|n| running_pid(&s, n)).collect();
    assert_eq!(before, after, "{r:?}");
    run_code(&s, &["status"], 0);
    assert_eq!(lines(&s, "migrate-runs.txt").len(), 1, "migrate re-ran");
    assert_eq!(s.stack_pids().len(), names.len(), "{:?}", s.stack_pids());
}

#[test]
fn logs_n_shows_the_last_lines_of_each_process() {
    let s = Stack::new(
        r#"
[service.a]
command = "seq 1 50 | sed 's/^/a-line-/'; echo a-done; exec sleep 1000"
ready = { log = "a-done", timeout = "60s" }

[service.b]
command = "seq 1 30 | sed 's/^/b-line-/'; echo b-done; exec sleep 1000"
ready = { log = "b-done", timeout = "60s" }
"#,
    );
    start_ok(&s, &[]);
    let r = run_code(&s, &["logs", "a", "-n", "3"], 0);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["a-line-49", "a-line-50", "a-done"],
        "{r:?}"
    );
    let r = run_code(&s, &["logs", "-n", "2"], 0);
    let mut got: Vec<(String, String)> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(n, t)| (n.trim().to_string(), t.trim().to_string()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("a", "a-done"),
        ("a", "a-line-50"),
        ("b", "b-done"),
        ("b", "b-line-30"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(got, want, "{r:?}");
    run_code(&s, &["logs", "nope", "-n", "2"], 2);
}

// ---------------------------------------------------------------------------
// 11. The control socket

#[test]
fn control_socket_is_0600_and_state_dir_0700() {
    let s = Stack::new(
        r#"
[service.svc]
command = "exec sleep 1000"
"#,
    );
    start_ok(&s, &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.state("stackctl.sock")), 0o600, "socket mode");
    assert_eq!(mode(&s.state("")), 0o700, "state_dir mode");
}

#[test]
fn stale_sockets_of_a_killed_supervisor_and_anchor_do_not_block_start() {
    let s = Stack::new(
        r#"
[service.svc]
command = "exec sleep 1000"
"#,
    );
    start_ok(&s, &[]);
    let old = running_pid(&s, "svc");
    s.kill_supervision();
    {
        use std::os::unix::fs::FileTypeExt;
        for sock in ["stackctl.sock", "anchor.sock"] {
            let md = std::fs::symlink_metadata(s.state(sock)).expect("socket left behind");
            assert!(md.file_type().is_socket());
        }
    }
    start_ok(&s, &[]);
    let new = running_pid(&s, "svc");
    assert_ne!(new, old);
    assert!(!alive(old));
    assert_eq!(s.status_json()["supervisor"]["running"], true);
}

#[test]
fn a_state_dir_deeper_than_a_socket_address_still_works() {
    // sun_path holds 108 bytes; checkouts on CI and in home folders are
    // often deeper than that.
    let deep = format!("{}/state", "a-rather-long-folder-name".repeat(5));
    let s = Stack::new(&format!(
        r#"
[stack]
state_dir = "{deep}"

[service.svc]
command = "exec sleep 1000"

[service.notifier]
command = ["{py}", "notify.py"]
ready = {{ notify = true, timeout = "60s" }}
"#,
        py = python()
    ));
    s.write("notify.py", NOTIFY_STANDIN);
    let sock = s.path().join(&deep).join("stackctl.sock");
    assert!(sock.as_os_str().len() > 108, "{}", sock.display());
    start_ok(&s, &[]);
    assert!(sock.exists());
    let pid = running_pid(&s, "svc");
    running_pid(&s, "notifier");
    run_code(&s, &["status"], 0);
    run_code(&s, &["stop"], 0);
    assert!(!alive(pid));
}

#[test]
fn regular_file_at_the_socket_path_is_refused_and_kept() {
    let s = Stack::new(
        r#"
[service.svc]
command = "touch svc-started; exec sleep 1000"
"#,
    );
    std::fs::create_dir_all(s.state("")).unwrap();
    std::fs::set_permissions(s.state(""), std::fs::Permissions::from_mode(0o700)).unwrap();
    s.write("logs/stackctl.sock", "not a socket: precious\n");
    let r = s.run(&["start"]);
    assert_ne!(r.code, Some(0), "{r:?}");
    let out = output(&r);
    assert!(
        out.contains("stackctl.sock") && out.contains("not a socket"),
        "no clear error: {out}"
    );
    assert_eq!(s.read("logs/stackctl.sock"), "not a socket: precious\n");
    assert!(!s.path().join("svc-started").exists());
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

// ---------------------------------------------------------------------------
// 12. --foreground and --tmux

#[test]
fn foreground_streams_prefixed_output_and_sigint_stops_gracefully() {
    let s = Stack::new(
        r#"
[service.talker]
command = "trap 'echo TERM > graceful.txt; exit 0' TERM; echo HELLO-FROM-TALKER; while true; do sleep 0.1; done"

[service.other]
command = "echo other-line-1; exec sleep 1000"
"#,
    );
    let mut child = s
        .cmd(&["start", "--foreground"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stackctl --foreground");
    let pid = child.id() as i32;
    // Kill the foreground supervisor however the test ends.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if alive(self.0) {
                harness::kill(self.0, 9);
            }
        }
    }
    let _guard = KillOnDrop(pid);
    let collected = Arc::new(Mutex::new(String::new()));
    let pump = |stream: Box<dyn std::io::Read + Send>| {
        let sink = collected.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        })
    };
    let out_t = pump(Box::new(child.stdout.take().unwrap()));
    let err_t = pump(Box::new(child.stderr.take().unwrap()));
    let has_line = |name: &str, text: &str| {
        collected.lock().unwrap().lines().any(|l| {
            l.split_once('|')
                .is_some_and(|(n, t)| n.trim() == name && t.trim() == text)
        })
    };
    wait_for("`talker | HELLO-FROM-TALKER` on stdout", 60, || {
        has_line("talker", "HELLO-FROM-TALKER") && has_line("other", "other-line-1")
    });
    wait_for("both processes running", 60, || {
        s.pids_of_process("talker").len() == 1 && s.pids_of_process("other").len() == 1
    });
    let procs = s.stack_pids();
    harness::kill(pid, 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "stackctl --foreground did not exit after SIGINT:\n{}",
            collected.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = out_t.join();
    let _ = err_t.join();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGINT:\n{}",
        collected.lock().unwrap()
    );
    for p in procs {
        assert!(
            !alive(p),
            "pid {p} survived SIGINT to the foreground supervisor"
        );
    }
    assert_eq!(
        s.read("graceful.txt").trim(),
        "TERM",
        "talker was not stopped with its stop signal"
    );
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

#[test]
fn foreground_second_sigint_kills_at_once() {
    // SIGTERM is ignored and the grace is long: only the second Ctrl-C
    // ends it quickly.
    let s = Stack::new(
        r#"
[service.stubborn]
command = "trap '' TERM; echo $$$$ > stubborn.pid; echo up; while true; do sleep 0.2; done"
stop_timeout = "120s"
ready = { log = "up", timeout = "60s" }
"#,
    );
    let mut child = s
        .cmd(&["start", "--foreground"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stackctl --foreground");
    let pid = child.id() as i32;
    let stubborn = s.wait_pid_file("stubborn.pid", 60);
    wait_for("stubborn to be running", 60, || {
        s.process_status("stubborn")
            .is_some_and(|p| p["state"] == "running")
    });
    harness::kill(pid, 2);
    wait_for("stubborn to be stopping", 60, || {
        s.process_status("stubborn")
            .is_some_and(|p| p["state"] == "stopping")
    });
    assert!(alive(stubborn), "SIGTERM is ignored: it should still run");
    let t = Instant::now();
    harness::kill(pid, 2);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(30) {
            harness::kill(pid, 9);
            panic!("the second SIGINT did not end the foreground supervisor");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        !alive(stubborn),
        "the second SIGINT did not kill the process"
    );
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
    assert_eq!(status.code(), Some(0));
}

fn have_tmux() -> bool {
    std::process::Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn tmux_runs_the_supervisor_in_a_named_session() {
    if !have_tmux() {
        eprintln!("NOTICE: tmux is not installed; skipping the --tmux test");
        return;
    }
    let s = Stack::new(
        r#"
[stack]
name = "coretmux"

[service.svc]
command = "exec sleep 1000"
"#,
    );
    // A private tmux server, so the test neither sees nor disturbs others.
    let tmux_dir = s.path().join("tmux");
    std::fs::create_dir_all(&tmux_dir).unwrap();
    let tmux_dir = tmux_dir.display().to_string();
    struct Server(String);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = std::process::Command::new("tmux")
                .arg("kill-server")
                .env("TMUX_TMPDIR", &self.0)
                .env_remove("TMUX")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _server = Server(tmux_dir.clone());
    let has_session = || {
        std::process::Command::new("tmux")
            .args(["has-session", "-t", "stackctl-coretmux"])
            .env("TMUX_TMPDIR", &tmux_dir)
            .env_remove("TMUX")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
    };
    let env = [("TMUX_TMPDIR", Some(tmux_dir.as_str())), ("TMUX", None)];
    let r = s.run_env(&["start", "--tmux"], &env);
    assert_eq!(r.code, Some(0), "{r:?}\n{}", s.dump());
    assert!(has_session(), "no tmux session stackctl-coretmux");
    running_pid(&s, "svc");
    run_code(&s, &["status"], 0);
    let r = s.run_env(&["stop"], &env);
    assert_eq!(r.code, Some(0), "{r:?}");
    wait_for("the tmux session to end", 30, || !has_session());
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

#[test]
fn a_refused_require_env_start_launches_no_supervisor() {
    let s = Stack::new(
        "[service.needs]\ncommand = \"sleep 1000\"\nrequire_env = [\"STACKCTL_T_SECRET\"]\n",
    );
    let r = s.run_env(&["start"], &[("STACKCTL_T_SECRET", None)]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("STACKCTL_T_SECRET"), "{}", r.stderr);
    assert!(
        !s.state("stackctl.sock").exists(),
        "a supervisor was launched"
    );
    // Setting the variable is then all it takes.
    let r = s.run_env(&["start"], &[("STACKCTL_T_SECRET", Some("x"))]);
    assert_eq!(r.code, Some(0), "{r:?}\n{}", s.dump());
    run_code(&s, &["stop"], 0);
}

#[test]
fn a_port_already_taken_fails_the_start_instead_of_passing_the_gate() {
    let port = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let s = Stack::new(&format!(
        "[service.web]\ncommand = \"sleep 1000\"\nready = {{ tcp = \"127.0.0.1:{port}\", timeout = \"5s\" }}\n"
    ));
    let r = run_code(&s, &["start"], 1);
    assert!(
        r.stderr.contains("already passes before it was started"),
        "{}",
        r.stderr
    );
    assert!(s.stack_pids().is_empty(), "web was spawned");
    drop(squatter);
}

#[test]
fn status_and_stop_work_from_pid_files_when_the_stack_file_is_broken() {
    let s = Stack::new(
        "[service.a]\ncommand = \"sleep 1000\"\n[service.b]\ncommand = \"sleep 1001\"\n",
    );
    run_code(&s, &["start"], 0);
    s.kill_supervision();
    s.write("stack.toml", "[service.a]\ncommand = \n");
    let r = s.run(&["status"]);
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stdout.contains("unsupervised"), "{}", r.stdout);
    assert!(r.stderr.contains("does not validate"), "{}", r.stderr);
    let r = run_code(&s, &["stop"], 0);
    assert!(r.stdout.contains("stopped pid"), "{}", r.stdout);
    wait_for("no process of the stack", 10, || s.stack_pids().is_empty());
}

// ---------------------------------------------------------------------------
// 13. What a child inherits (issue 15)

/// A caller that ignores and blocks signals, real-time ones included, and
/// then becomes `stackctl` with the rest of its arguments.
const SIGNAL_MESSY_CALLER: &str = r#"
import os, signal, sys
ignored = [signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGPIPE]
ignored += list(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
for sig in ignored:
    signal.signal(sig, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGALRM,
    signal.SIGRTMIN, signal.SIGRTMIN + 3, signal.SIGRTMAX])
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// `SigIgn` or `SigBlk` of a process, as a bit mask.
fn signal_mask(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn a_child_gets_default_dispositions_and_an_empty_mask_whatever_the_caller_had() {
    let s = Stack::new("[service.svc]\ncommand = [\"sleep\", \"1000\"]\n");
    let caller = s.write("caller.py", SIGNAL_MESSY_CALLER);
    let out = std::process::Command::new(python())
        .arg(&caller)
        .arg(harness::bin())
        .arg("start")
        .current_dir(s.path())
        .env("SCTL_TEST_MARKER", &s.marker)
        .env_remove("STACKCTL_FILE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.dump());
    // The caller's state reached the process that spawns the children, the
    // stack's anchor (else this proves nothing).
    let pid = running_pid(&s, "svc");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert_ne!(
        signal_mask(ppid, "SigIgn") >> 33,
        0,
        "the caller's ignored signals"
    );
    assert_eq!(
        format!("{:#x}", signal_mask(pid, "SigIgn")),
        "0x0",
        "ignored signals in the child"
    );
    assert_eq!(
        format!("{:#x}", signal_mask(pid, "SigBlk")),
        "0x0",
        "blocked signals in the child"
    );
    run_code(&s, &["stop"], 0);
}

// ---------------------------------------------------------------------------
// 14. Who may say READY (issue 15)

/// A service's python stand-in, run as a child of `sh -c`: records its pid
/// and parent, waits for the file `go`, then sends `READY=1` and stays.
const NOTIFY_ON_GO: &str = r#"
import os, socket, time
open("sender.tmp", "w").write(f"{os.getpid()} {os.getppid()}\n")
os.rename("sender.tmp", "sender")
while not os.path.exists("go"):
    time.sleep(0.02)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(1000)
"#;

/// Kills a background `stackctl` on drop, so a failing test leaves no CLI.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_stranger_cannot_pass_a_notify_gate_and_a_child_under_sh_can() {
    let s = Stack::new(&format!(
        r#"
[service.svc]
command = "{py} notify_on_go.py; exit 3"
ready = {{ notify = true, timeout = "120s" }}
"#,
        py = python()
    ));
    s.write("notify_on_go.py", NOTIFY_ON_GO);
    let mut start = Background(
        s.cmd(&["start"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("the stand-in to run", 60, || !s.read("sender").is_empty());
    let (sender, parent): (i32, i32) = {
        let t = s.read("sender");
        let mut it = t.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    // An unrelated live process (this test) writes READY=1 to the socket.
    let me = std::process::id();
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to(b"READY=1", s.state("notify/svc.sock"))
        .unwrap();
    let ignored = format!("ignored a notify message (READY=1) from pid {me}");
    wait_for(
        "the stranger's message to be ignored, or start to end",
        60,
        || s.read("logs/stackctl.log").contains(&ignored) || start.0.try_wait().unwrap().is_some(),
    );
    // It was not taken for the instance: the gate still waits.
    assert!(start.0.try_wait().unwrap().is_none(), "start returned");
    assert!(
        s.read("logs/stackctl.log").contains(&ignored),
        "{}",
        s.dump()
    );
    assert_eq!(state_of(&s, "svc"), "starting");
    // The real one, a child of the service's shell, passes it.
    let shell = s.status_of("svc")["pid"].as_i64().unwrap() as i32;
    assert_eq!(parent, shell, "the stand-in is not a child of sh -c");
    assert_ne!(sender, shell);
    s.write("go", "");
    let out = std::mem::replace(
        &mut start.0,
        std::process::Command::new("true").spawn().unwrap(),
    )
    .wait_with_output()
    .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.dump());
    assert_eq!(state_of(&s, "svc"), "running");
    let log = s.read("logs/stackctl.log");
    assert!(!log.contains(&format!("from pid {sender}")), "{log}");
    run_code(&s, &["stop"], 0);
}

fn have_systemd_notify() -> bool {
    std::process::Command::new("systemd-notify")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn systemd_notify_run_from_the_services_script_passes_the_gate() {
    if !have_systemd_notify() {
        eprintln!("NOTICE: systemd-notify is not installed (Debian: systemd); skipping");
        return;
    }
    // systemd-notify waits until its message was read (a barrier), and
    // fails if it never is: `notify-failed` says so.
    let s = Stack::new(
        r#"
[service.svc]
command = "sleep 0.3; systemd-notify --status=warming --ready || touch notify-failed; exec sleep 1000"
ready = { notify = true, timeout = "60s" }
"#,
    );
    start_ok(&s, &[]);
    assert_eq!(state_of(&s, "svc"), "running");
    let log = s.read("logs/stackctl.log");
    assert!(!log.contains("ignored a notify message"), "{log}");
    // Once the shell has moved on to `exec sleep`, systemd-notify is done:
    // had its barrier not been released, it would have failed.
    let pid = running_pid(&s, "svc");
    wait_for("the script to reach its exec", 60, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    assert!(
        !s.path().join("notify-failed").exists(),
        "systemd-notify failed"
    );
    run_code(&s, &["stop"], 0);
}

/// A stack bigger than the caller's soft fd limit allows (the anchor holds
/// a pipe and more per process) starts whole: stackctl raises its own soft
/// limit to the hard one, and every process still gets the limit of the
/// shell that ran `stackctl start`.
#[test]
fn a_stack_larger_than_the_soft_fd_limit_starts_and_children_keep_that_limit() {
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    assert!(
        hard == "unlimited" || hard.parse::<u64>().unwrap() >= 4096,
        "this test needs a hard fd limit of 4096 or more, not {hard}"
    );
    let mut toml =
        String::from("[service.probe]\ncommand = \"ulimit -Sn > nofile.txt; exec sleep 1000\"\n");
    for i in 0..60 {
        toml.push_str(&format!(
            "\n[service.s{i}]\ncommand = \"exec sleep 1000\"\n"
        ));
    }
    let s = Stack::new(&toml);
    let script = format!("ulimit -Sn 64 && exec '{}' start", harness::bin().display());
    let out = s
        .cmd_of(std::path::Path::new("/bin/sh"), &["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "start under a soft limit of 64 fds failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = s.status_json();
    let running = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "running")
        .count();
    assert_eq!(running, 61, "{doc}");
    wait_for("the probe to write its limit", 30, || {
        s.read("nofile.txt").trim() == "64"
    });
}
