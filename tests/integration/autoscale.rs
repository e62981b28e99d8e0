//! Tests: issue 13 — pools that size themselves from a queue depth
//! (`[service.NAME.autoscale]`).
//!
//! Real processes, real depth sources (a file the test writes, a command,
//! a small python3 HTTP server the test controls), intervals of 200 ms.
//! Every wait is a condition with a deadline; "not before the window" is
//! shown by states (the autoscaler has read the lower depth and decided to
//! wait, and every member still runs with its pid) and by the times the
//! supervisor itself logged, never by the test's own clock.

use std::collections::BTreeMap;

use crate::harness::{alive, python, run_code, session_of, wait_for, Run, Stack};

// ---------------------------------------------------------------------------
// Helpers

#[track_caller]
fn ok(s: &Stack, args: &[&str]) -> Run {
    run_code(s, args, 0)
}

/// Writes `rel` atomically (a reader never sees it half written).
fn put(s: &Stack, rel: &str, text: &str) {
    let tmp = format!("{rel}.tmp");
    s.write(&tmp, text);
    std::fs::rename(s.path().join(&tmp), s.path().join(rel)).unwrap();
}

/// The queue depth the `file` source reads.
fn set_depth(s: &Stack, n: u64) {
    put(s, "depth", &format!("{n}\n"));
}

/// `status --json`'s record of an autoscaled pool (`null` when absent).
fn auto(s: &Stack, pool: &str) -> serde_json::Value {
    s.status_json()["autoscale"][pool].clone()
}

/// Members of `pool` listed by `status`: name → (pid, state).
fn members(s: &Stack, pool: &str) -> BTreeMap<String, (Option<i32>, String)> {
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
                (
                    p["pid"].as_i64().map(|x| x as i32),
                    p["state"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// Whether the pool is exactly `pool.1..=n`, every one running.
fn is_size(s: &Stack, pool: &str, n: u32) -> bool {
    let m = members(s, pool);
    let want: Vec<String> = (1..=n).map(|i| format!("{pool}.{i}")).collect();
    m.keys().cloned().collect::<Vec<_>>() == want
        && m.values()
            .all(|(pid, st)| st == "running" && pid.is_some_and(alive))
}

/// Waits until the pool is exactly `n` running members; their pids.
#[track_caller]
fn wait_size(s: &Stack, pool: &str, n: u32, secs: u64) -> BTreeMap<String, i32> {
    let mut last = BTreeMap::new();
    let what = format!("{pool} at {n} running members");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if is_size(s, pool, n) {
            return members(s, pool)
                .into_iter()
                .map(|(k, (pid, _))| (k, pid.unwrap_or_default()))
                .collect();
        }
        last = members(s, pool);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "timed out after {secs}s waiting for {what}; members {last:?}\nautoscale: {}\n{}",
        auto(s, pool),
        s.dump()
    );
}

/// Waits until the pool's last decision is of `kind`; that decision.
#[track_caller]
fn wait_decision(s: &Stack, pool: &str, kind: &str, secs: u64) -> serde_json::Value {
    let mut seen = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        seen = auto(s, pool);
        if seen["decision"]["kind"] == kind {
            return seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "timed out after {secs}s waiting for a `{kind}` decision of {pool}; last: {seen}\n{}",
        s.dump()
    );
}

/// The `stackctl.log` lines of `pool`'s autoscaler.
fn autoscale_lines(s: &Stack) -> Vec<String> {
    s.read("logs/stackctl.log")
        .lines()
        .filter(|l| l.contains(" autoscale: "))
        .map(str::to_string)
        .collect()
}

/// The RFC 3339 time a `stackctl.log` line starts with, in milliseconds
/// since the epoch.
fn logged_at(line: &str) -> u64 {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let t = humantime_parse(stamp);
    t.unwrap_or_else(|| panic!("no time at the start of {line:?}"))
}

/// `2026-05-20T14:00:00.123Z` → milliseconds since the epoch.
fn humantime_parse(s: &str) -> Option<u64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    Some(secs as u64 * 1000 + ms.parse::<u64>().ok()?)
}

/// A pool member that idles; on SIGTERM it finishes its "job" (a second),
/// says so, and exits.
const DRAINING_WORKER: &str = r#"
trap 'echo "$STACKCTL_PROCESS got SIGTERM"; sleep 1; echo "$STACKCTL_PROCESS finished"; exit 0' TERM
echo "$STACKCTL_PROCESS ready"
while :; do sleep 1 & wait $!; done
"#;

/// A pool `worker` of sh idlers reading `depth` from a file.
fn file_stack(extra_pool: &str, policy: &str) -> String {
    format!(
        r#"
[service.worker]
command = "exec sleep 1000"
stop_timeout = "5s"
{extra_pool}

[service.worker.autoscale]
depth = {{ file = "depth" }}
interval = "200ms"
{policy}
"#
    )
}

// ---------------------------------------------------------------------------
// Growth, the window, clamping

#[test]
fn the_pool_grows_with_the_depth_and_shrinks_only_after_the_window() {
    let s = Stack::new(&file_stack(
        "replicas = 1\nmax_replicas = 4",
        "per_instance = 2\nscale_in_window = \"3s\"",
    ));
    set_depth(&s, 0);
    ok(&s, &["start"]);
    let one = wait_size(&s, "worker", 1, 30);

    // Up: promptly, to what the depth wants (8 / 2), the running member untouched.
    set_depth(&s, 8);
    let four = wait_size(&s, "worker", 4, 30);
    assert_eq!(four["worker.1"], one["worker.1"]);
    let a = wait_decision(&s, "worker", "steady", 30);
    assert_eq!(
        (a["size"].as_u64(), a["desired"].as_u64()),
        (Some(4), Some(4)),
        "{a}"
    );
    assert_eq!(a["depth"], 8, "{a}");
    assert!(
        a["depth_read_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{a}"
    );
    assert_eq!(a["active"], true, "{a}");

    // Down: the lower depth is read and waits out the window, every member
    // still running with its pid...
    set_depth(&s, 1);
    let a = wait_decision(&s, "worker", "window", 30);
    assert_eq!(a["desired"], 1, "{a}");
    assert!(
        a["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("scale-in window"),
        "{a}"
    );
    assert_eq!(
        wait_size(&s, "worker", 4, 5),
        four,
        "shrunk before the window was over"
    );
    // ...then the highest members are stopped.
    let after = wait_size(&s, "worker", 1, 30);
    assert_eq!(after["worker.1"], one["worker.1"]);
    for n in ["worker.2", "worker.3", "worker.4"] {
        wait_for(&format!("{n} gone"), 15, || !alive(four[n]));
    }
    // stackctl.log: one line per decision, with the depth; the shrink came
    // a whole window after the first lower reading.
    let lines = autoscale_lines(&s);
    let grow = lines
        .iter()
        .find(|l| l.contains("1 → 4 (depth 8)"))
        .unwrap_or_else(|| panic!("no growth line: {lines:#?}"));
    assert!(grow.contains("process=worker"), "{grow}");
    let first_lower = lines
        .iter()
        .find(|l| l.contains("holding at 4 (depth 1)") && l.contains("scale-in window"))
        .unwrap_or_else(|| panic!("no waiting line: {lines:#?}"));
    let shrink = lines
        .iter()
        .find(|l| l.contains("4 → 1 (depth 1)"))
        .unwrap_or_else(|| panic!("no shrink line: {lines:#?}"));
    assert!(
        logged_at(shrink) >= logged_at(first_lower) + 3000,
        "shrunk less than the 3s window after the first lower reading:\n{first_lower}\n{shrink}"
    );
    // A steady pool is not one line per reading.
    let steady = lines
        .iter()
        .filter(|l| l.contains("holding at 4 (depth 8)"))
        .count();
    assert!(steady <= 1, "{lines:#?}");
}

#[test]
fn the_size_stays_within_min_and_max() {
    let s = Stack::new(&file_stack(
        "replicas = 2\nmax_replicas = 8",
        "per_instance = 1\nmin = 2\nmax = 3\nscale_in_window = \"0s\"",
    ));
    set_depth(&s, 1000);
    ok(&s, &["start"]);
    wait_size(&s, "worker", 3, 30);
    let a = wait_decision(&s, "worker", "steady", 30);
    assert_eq!(a["desired"], 3, "{a}");
    assert!(
        a["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("capped at max 3"),
        "{a}"
    );
    set_depth(&s, 0);
    wait_size(&s, "worker", 2, 30);
    let a = wait_decision(&s, "worker", "steady", 30);
    assert_eq!(
        (a["desired"].as_u64(), a["min"].as_u64()),
        (Some(2), Some(2)),
        "{a}"
    );
    assert!(
        a["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("kept at min 2"),
        "{a}"
    );
    assert!(
        members(&s, "worker").len() == 2,
        "{:?}",
        members(&s, "worker")
    );
    // The table says so too.
    let r = ok(&s, &["status"]);
    assert!(
        r.stdout
            .contains("autoscale worker: 2 of 2..3, 2 wanted (depth 0"),
        "{}",
        r.stdout
    );
}

// ---------------------------------------------------------------------------
// Sources

#[test]
fn an_http_source_with_a_json_field_drives_the_pool_and_its_failures_hold_it() {
    let port = crate::harness::free_port();
    let s = Stack::new(&format!(
        r#"
[service.queue]
command = ["{py}", "queue.py", "{port}"]
ready = {{ tcp = "127.0.0.1:{port}" }}

[service.worker]
command = "exec sleep 1000"
depends_on = ["queue"]
replicas = 1
max_replicas = 4

[service.worker.autoscale]
depth = {{ http = "http://127.0.0.1:{port}/depth", field = "queue.waiting", timeout = "2s" }}
per_instance = 2
interval = "200ms"
scale_in_window = "1s"
"#,
        py = python()
    ));
    s.write(
        "queue.py",
        r#"
import http.server, sys

class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            body = open("answer").read()
        except FileNotFoundError:
            body = ""
        code = 200
        if body.startswith("status "):
            code, body = int(body.split()[1]), "oops"
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Answer).serve_forever()
"#,
    );
    put(&s, "answer", r#"{"queue": {"waiting": 7, "running": 1}}"#);
    ok(&s, &["start"]);
    let four = wait_size(&s, "worker", 4, 30);
    let a = wait_decision(&s, "worker", "steady", 30);
    assert_eq!(a["depth"], 7, "{a}");

    // A 500, then an answer that is not JSON: counted, said, and the size held.
    put(&s, "answer", "status 500");
    let a = wait_decision(&s, "worker", "source_failing", 30);
    let last = a["source_errors"]["last"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("HTTP 500"), "{a}");
    assert!(
        last.starts_with(&format!("http http://127.0.0.1:{port}/depth")),
        "{a}"
    );
    put(&s, "answer", "<html>busy</html>");
    wait_for("a `not JSON` failure", 30, || {
        auto(&s, "worker")["source_errors"]["last"]
            .as_str()
            .is_some_and(|l| l.contains("not JSON"))
    });
    let a = auto(&s, "worker");
    assert!(a["source_errors"]["in_a_row"].as_u64() >= Some(2), "{a}");
    assert!(a["source_errors"]["total"].as_u64() >= Some(2), "{a}");
    assert_eq!(
        wait_size(&s, "worker", 4, 5),
        four,
        "a failing source changed the pool"
    );
    let r = ok(&s, &["status"]);
    assert!(r.stdout.contains("depth source: "), "{}", r.stdout);

    // Good again: it decides again (down, after the window).
    put(&s, "answer", r#"{"queue": {"waiting": 0}}"#);
    wait_size(&s, "worker", 1, 30);
    assert_eq!(auto(&s, "worker")["source_errors"]["in_a_row"], 0);
}

#[test]
fn a_failing_garbage_or_hanging_command_never_scales() {
    let s = Stack::new(
        r#"
[service.worker]
command = "exec sleep 1000"
replicas = 1
max_replicas = 4

[service.worker.autoscale]
depth = { exec = "sh depth.sh", timeout = "500ms" }
per_instance = 2
min = 0
interval = "200ms"
scale_in_window = "0s"
"#,
    );
    s.write(
        "depth.sh",
        r#"
case "$(cat mode 2>/dev/null)" in
  fail) echo "queue unreachable" >&2; exit 3 ;;
  garbage) echo "lots" ;;
  hang) sleep 1000 & echo $! > hung.pid; wait ;;
  *) echo "not on stdout" >&2; cat depth ;;
esac
"#,
    );
    set_depth(&s, 4);
    ok(&s, &["start"]);
    let two = wait_size(&s, "worker", 2, 30);
    wait_decision(&s, "worker", "steady", 30);

    let cases = [
        ("fail", "exited 3: queue unreachable"),
        ("garbage", "got `lots`, not a number of jobs"),
        (
            "hang",
            "timed out after 500ms; its process group was killed",
        ),
    ];
    for (mode, why) in cases {
        put(&s, "mode", mode);
        wait_for(&format!("the `{mode}` failure in status"), 30, || {
            let a = auto(&s, "worker");
            a["decision"]["kind"] == "source_failing"
                && a["source_errors"]["last"]
                    .as_str()
                    .is_some_and(|l| l.contains(why))
        });
        let a = auto(&s, "worker");
        assert!(
            a["source_errors"]["last"]
                .as_str()
                .unwrap()
                .starts_with("exec `sh depth.sh`: "),
            "{a}"
        );
        assert!(
            a["decision"]["reason"]
                .as_str()
                .unwrap()
                .contains("the size stays 2"),
            "{a}"
        );
        // Never to 0 (min) or to max: left as it is.
        assert_eq!(
            wait_size(&s, "worker", 2, 5),
            two,
            "{mode}: the pool changed"
        );
    }
    // The hanging command's whole group was killed: its child too.
    let hung = s.wait_pid_file("hung.pid", 30);
    wait_for("the hanging command's child killed", 30, || !alive(hung));

    let a = auto(&s, "worker");
    assert!(a["source_errors"]["total"].as_u64() >= Some(3), "{a}");
    // Logged with why, each new failure once.
    let lines = autoscale_lines(&s);
    for (_, why) in cases {
        assert!(lines.iter().any(|l| l.contains(why)), "{why}: {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.contains("2 → ")),
        "a failure resized the pool: {lines:#?}"
    );
    // And back: a good reading decides again (stderr is not the number).
    put(&s, "mode", "ok");
    set_depth(&s, 0);
    wait_for("the pool at zero", 30, || members(&s, "worker").is_empty());
    assert_eq!(auto(&s, "worker")["source_errors"]["in_a_row"], 0);
}

// ---------------------------------------------------------------------------
// Drain, crash loop

#[test]
fn a_shrink_drains_the_highest_members_one_batch_at_a_time() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = """{DRAINING_WORKER}"""
replicas = 1
max_replicas = 3
stop_timeout = "10s"
ready = {{ log = "ready" }}

[service.worker.autoscale]
depth = {{ file = "depth" }}
per_instance = 1
interval = "200ms"
scale_in_window = "0s"
scale_in_step = 1
"#
    ));
    set_depth(&s, 3);
    ok(&s, &["start"]);
    let three = wait_size(&s, "worker", 3, 30);
    set_depth(&s, 1);
    // worker.3 drains (its job takes a second): no capacity, and the next
    // step waits for it.
    let a = wait_decision(&s, "worker", "draining", 30);
    assert_eq!(
        (a["size"].as_u64(), a["draining"].as_u64()),
        (Some(2), Some(1)),
        "{a}"
    );
    assert_eq!(
        members(&s, "worker")["worker.2"],
        (Some(three["worker.2"]), "running".to_string()),
        "worker.2 was stopped while worker.3 drained"
    );
    let one = wait_size(&s, "worker", 1, 30);
    assert_eq!(one["worker.1"], three["worker.1"]);
    for n in ["worker.2", "worker.3"] {
        wait_for(&format!("{n} gone"), 15, || !alive(three[n]));
        let log = s.read(&format!("logs/{n}.log"));
        // It finished its job before it exited, and was stopped once.
        assert!(log.contains(&format!("{n} finished")), "{n}: {log}");
        assert_eq!(log.matches("got SIGTERM").count(), 1, "{n}: {log}");
    }
    assert!(
        !s.read("logs/stackctl.log").contains("killed with SIGKILL"),
        "{}",
        s.read("logs/stackctl.log")
    );
}

#[test]
fn a_crash_looping_pool_is_not_grown() {
    let s = Stack::new(
        r#"
[service.worker]
command = "sleep 0.3; exit 1"
replicas = 2
max_replicas = 6
restart = "on-failure"
max_restarts = 1000

[service.worker.autoscale]
depth = { file = "depth" }
per_instance = 1
min = 2
interval = "200ms"
"#,
    );
    set_depth(&s, 2);
    ok(&s, &["start"]);
    wait_for("both members crashed once", 30, || {
        let doc = s.status_json();
        let restarts = |n: &str| {
            doc["processes"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == n))
                .and_then(|p| p["restarts"].as_u64())
                .unwrap_or(0)
        };
        restarts("worker.1") > 0 && restarts("worker.2") > 0
    });
    set_depth(&s, 6);
    let a = wait_decision(&s, "worker", "crash_loop", 30);
    let reason = a["decision"]["reason"].as_str().unwrap();
    assert!(reason.contains("depth 6 needs 6"), "{a}");
    assert!(reason.contains("a crash-looping pool is not grown"), "{a}");
    assert!(reason.contains("worker."), "names the member: {a}");
    assert_eq!(a["size"], 2, "{a}");
    assert_eq!(a["desired"], 6, "{a}");
    let names: Vec<String> = members(&s, "worker").into_keys().collect();
    assert_eq!(names, ["worker.1", "worker.2"]);
    let lines = autoscale_lines(&s);
    assert!(!lines.iter().any(|l| l.contains("2 → ")), "{lines:#?}");
}

// ---------------------------------------------------------------------------
// With the operator

#[test]
fn a_manual_scale_holds_its_size_until_auto_or_its_expiry() {
    let s = Stack::new(&file_stack(
        "replicas = 1\nmax_replicas = 6",
        "per_instance = 2\nscale_in_window = \"0s\"\nmanual_hold = \"10m\"",
    ));
    set_depth(&s, 2);
    ok(&s, &["start"]);
    let one = wait_size(&s, "worker", 1, 30);

    // A manual size says it holds, and holds: no silent fight.
    let r = ok(&s, &["scale", "worker", "3"]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("autoscale holds 3 for 10m"), "{out}");
    assert!(
        out.contains("`stackctl scale worker auto` resumes it now"),
        "{out}"
    );
    let three = wait_size(&s, "worker", 3, 30);
    let a = wait_decision(&s, "worker", "paused", 30);
    assert_eq!(a["paused"]["size"], 3, "{a}");
    assert!(a["paused"]["remaining_s"].as_f64().unwrap() > 60.0, "{a}");
    assert_eq!(a["desired"], 1, "{a}");
    assert_eq!(wait_size(&s, "worker", 3, 5), three);
    let r = ok(&s, &["status"]);
    assert!(
        r.stdout.contains("held at 3 by `stackctl scale`"),
        "{}",
        r.stdout
    );

    // `auto` resumes now.
    let r = ok(&s, &["scale", "worker", "auto"]);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("autoscale resumed"),
        "{r:?}"
    );
    let back = wait_size(&s, "worker", 1, 30);
    assert_eq!(back["worker.1"], one["worker.1"]);
    assert!(auto(&s, "worker").get("paused").is_none_or(|p| p.is_null()));

    // `auto` is only for an autoscaled pool.
    s.write(
        "stack.toml",
        &(file_stack(
            "replicas = 1\nmax_replicas = 6",
            "per_instance = 2\nscale_in_window = \"0s\"\nmanual_hold = \"10m\"",
        ) + "[service.plain]\ncommand = \"exec sleep 1000\"\nreplicas = 1\n"),
    );
    ok(&s, &["reload"]);
    let r = run_code(&s, &["scale", "plain", "auto"], 2);
    assert!(
        r.stderr.contains("`plain` is not autoscaled"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_manual_size_ends_by_itself_after_manual_hold() {
    let s = Stack::new(&file_stack(
        "replicas = 1\nmax_replicas = 6",
        "per_instance = 2\nscale_in_window = \"0s\"\nmanual_hold = \"2s\"",
    ));
    set_depth(&s, 2);
    ok(&s, &["start"]);
    wait_size(&s, "worker", 1, 30);
    let r = ok(&s, &["scale", "worker", "4"]);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("autoscale holds 4 for 2s"));
    wait_size(&s, "worker", 1, 30);
    let lines = autoscale_lines(&s);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("held at 4 by `stackctl scale` until")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("4 → 1 (depth 2)")),
        "{lines:#?}"
    );
}

#[test]
fn stopping_the_pool_stops_its_autoscaler_and_starting_it_starts_it() {
    let s = Stack::new(&file_stack(
        "replicas = 1\nmax_replicas = 4",
        "per_instance = 1",
    ));
    set_depth(&s, 2);
    ok(&s, &["start"]);
    wait_size(&s, "worker", 2, 30);
    ok(&s, &["stop", "worker"]);
    let a = auto(&s, "worker");
    assert_eq!(a["active"], false, "{a}");
    assert!(members(&s, "worker")
        .values()
        .all(|(pid, st)| pid.is_none() && st == "stopped"));
    ok(&s, &["start", "worker"]);
    set_depth(&s, 3);
    wait_size(&s, "worker", 3, 30);
    assert_eq!(auto(&s, "worker")["active"], true);
}

#[test]
fn reload_retunes_the_policy_without_touching_members_and_restarts_keep_the_size() {
    let policy = |per: u32| {
        file_stack(
            "replicas = 1\nmax_replicas = 6",
            &format!("per_instance = {per}\nscale_in_window = \"1s\""),
        )
    };
    let s = Stack::new(&policy(4));
    set_depth(&s, 8);
    ok(&s, &["start"]);
    let two = wait_size(&s, "worker", 2, 30);

    // An autoscale-only edit: neither a restart nor a resize by reload.
    s.write("stack.toml", &policy(2));
    let r = ok(&s, &["reload"]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains("autoscale policy updated; members keep running"),
        "{out}"
    );
    assert!(
        !out.contains("stopped") && !out.contains("no change"),
        "{out}"
    );
    let four = wait_size(&s, "worker", 4, 30);
    for n in ["worker.1", "worker.2"] {
        assert_eq!(four[n], two[n], "{n} was restarted by the reload");
    }

    // The keeper's restart of a pool rolls it at its current size.
    ok(&s, &["restart", "worker"]);
    let rolled = wait_size(&s, "worker", 4, 30);
    assert!(
        rolled.iter().all(|(n, pid)| four[n] != *pid),
        "not all restarted"
    );
    assert_eq!(auto(&s, "worker")["active"], true);

    // A redefinition restarts the pool at its current size, not `replicas`.
    s.write(
        "stack.toml",
        &policy(2).replace("exec sleep 1000", "exec sleep 1001"),
    );
    ok(&s, &["reload"]);
    let redone = wait_size(&s, "worker", 4, 30);
    assert!(redone.iter().all(|(n, pid)| rolled[n] != *pid));

    // Autoscale removed: the pool keeps its size, and stays there.
    s.write(
        "stack.toml",
        "[service.worker]\ncommand = \"exec sleep 1001\"\nstop_timeout = \"5s\"\nreplicas = 1\nmax_replicas = 6\n",
    );
    let r = ok(&s, &["reload"]);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("autoscale removed; the pool keeps its size"),
        "{r:?}"
    );
    set_depth(&s, 0);
    assert_eq!(wait_size(&s, "worker", 4, 5), redone);
    assert!(s.status_json().get("autoscale").is_none());
}

#[test]
fn growing_back_while_a_member_drains_starts_it_again_after_its_job() {
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = """{DRAINING_WORKER}"""
replicas = 1
max_replicas = 3
stop_timeout = "10s"
ready = {{ log = "ready" }}

[service.worker.autoscale]
depth = {{ file = "depth" }}
per_instance = 1
interval = "200ms"
scale_in_window = "0s"
"#
    ));
    set_depth(&s, 3);
    ok(&s, &["start"]);
    let three = wait_size(&s, "worker", 3, 30);
    set_depth(&s, 2);
    wait_decision(&s, "worker", "shrink", 30);
    // While worker.3 still drains, the depth wants it back.
    set_depth(&s, 3);
    let again = wait_size(&s, "worker", 3, 30);
    assert_eq!(again["worker.1"], three["worker.1"]);
    assert_eq!(again["worker.2"], three["worker.2"]);
    assert_ne!(again["worker.3"], three["worker.3"]);
    // The old one finished its job first; one worker.3 runs, and it is
    // the pool's (a stop of the pool reaches it).
    let log = s.read("logs/worker.3.log");
    assert!(log.contains("worker.3 finished"), "{log}");
    assert!(!alive(three["worker.3"]));
    let copies = s.pids_of_process("worker.3");
    assert!(
        copies
            .iter()
            .all(|p| session_of(*p) == Some(again["worker.3"])),
        "a worker.3 outside the member's session: {copies:?}"
    );
    ok(&s, &["stop", "worker"]);
    wait_for("worker.3 stopped with its pool", 15, || {
        !alive(again["worker.3"])
    });
}
