//! Tests: the operator's view (issue 14) — plain pid files with their
//! identity beside them, a simple command run as its program and memory
//! counted over its group, messages that show what was probed, run markers
//! in the logs and failures that show their own run, the live progress on
//! a terminal (tmux), `status --watch`, the start timeline, stackctl under
//! systemd (`Type=notify`), and the small things.
//!
//! Real binary, real processes, real sockets, real terminals (a private
//! tmux server); waits are conditions with deadlines.

use std::process::{Command, Stdio};

use crate::harness::{self, alive, free_port, python, run_code, start_ticks, wait_for, Stack};

/// The status record of `name` (panics with the document when missing).
#[track_caller]
fn status_of(s: &Stack, name: &str) -> serde_json::Value {
    let doc = s.status_json();
    doc["processes"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("{name} not in status: {doc}"))
}

/// Waits until `name` is running, and returns its pid.
#[track_caller]
fn running(s: &Stack, name: &str) -> i32 {
    let mut pid = 0;
    wait_for(&format!("{name} running"), 60, || {
        let st = status_of(s, name);
        pid = st["pid"].as_i64().unwrap_or(0) as i32;
        st["state"] == "running" && pid > 0
    });
    pid
}

// ---------------------------------------------------------------------------
// Plain pid files (item 4)

#[test]
fn a_pid_file_is_the_pid_and_a_newline_and_old_tools_can_use_it() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"
restart = "never"
"#,
    );
    run_code(&s, &["start"], 0);
    let pid = running(&s, "api");
    assert_eq!(s.read("logs/pids/api.pid"), format!("{pid}\n"));
    let id: serde_json::Value = serde_json::from_str(&s.read("logs/pids/api.id"))
        .unwrap_or_else(|e| panic!("logs/pids/api.id: {e}\n{}", s.read("logs/pids/api.id")));
    assert_eq!(id["pid"], pid, "{id}");
    assert_eq!(id["pgid"], pid, "{id}");
    assert_eq!(id["process"], "api", "{id}");
    assert!(id["start_ticks"].as_u64().is_some_and(|t| t > 0), "{id}");
    assert!(
        id["boot_id"].as_str().is_some_and(|b| !b.is_empty()),
        "{id}"
    );
    assert!(id["supervisor_pid"].as_i64().is_some(), "{id}");
    // The supervisor's and the anchor's own pid files are plain too.
    let sup = s.supervisor_pid().expect("supervisor pid");
    assert_eq!(s.read("logs/pids/stackctl.pid"), format!("{sup}\n"));
    let anchor = s.anchor_pid().expect("anchor pid");
    assert_eq!(s.read("logs/anchor.pid"), format!("{anchor}\n"));
    assert!(s.read("logs/anchor.id").contains("\"start_ticks\""));
    // What manage.sh users, cron jobs, pgrep -F and monit do.
    let pgrep = Command::new("pgrep")
        .args(["-F", "logs/pids/api.pid"])
        .current_dir(s.path())
        .output()
        .expect("pgrep (procps) is a test dependency");
    assert_eq!(
        String::from_utf8_lossy(&pgrep.stdout).trim(),
        pid.to_string(),
        "{pgrep:?}"
    );
    let st = Command::new("sh")
        .args(["-c", "kill $(cat logs/pids/api.pid)"])
        .current_dir(s.path())
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("api to be gone after kill $(cat api.pid)", 30, || {
        !alive(pid)
    });
    wait_for("its pid file to go", 30, || {
        !s.path().join("logs/pids/api.pid").exists() && !s.path().join("logs/pids/api.id").exists()
    });
}

#[test]
fn without_a_supervisor_a_plain_pid_file_is_believed_only_with_its_identity() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"
"#,
    );
    run_code(&s, &["start"], 0);
    let pid = running(&s, "api");
    s.kill_supervision();
    let st = status_of(&s, "api");
    assert_eq!(st["pid"], pid, "{st}");
    assert_eq!(st["state"], "running", "{st}");
    // Its identity gone: not believed, not signalled.
    let id = s.read("logs/pids/api.id");
    std::fs::remove_file(s.path().join("logs/pids/api.id")).unwrap();
    let st = status_of(&s, "api");
    assert!(
        st["pid"].is_null(),
        "a pid without identity was believed: {st}"
    );
    // Back: stopped through it.
    std::fs::write(s.path().join("logs/pids/api.id"), id).unwrap();
    let r = run_code(&s, &["stop"], 0);
    assert!(r.stdout.contains(&format!("stopped pid {pid}")), "{r:?}");
    assert!(!alive(pid));
    assert!(!s.path().join("logs/pids/api.pid").exists());
    assert!(!s.path().join("logs/pids/api.id").exists());
}

#[test]
fn a_json_pid_file_of_an_older_stackctl_is_still_read_and_stopped() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"
"#,
    );
    // A live process of ours as an older stackctl recorded it.
    let mut child = Command::new("setsid")
        .args(["sleep", "1000"])
        .env("SCTL_TEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let ticks = start_ticks(pid);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    std::fs::create_dir_all(s.state("pids")).unwrap();
    let record = serde_json::json!({
        "pid": pid, "pgid": pid, "start_ticks": ticks,
        "boot_id": boot.trim(), "process": "api", "supervisor_pid": 1,
    });
    std::fs::write(s.state("pids/api.pid"), format!("{record}\n")).unwrap();
    let st = status_of(&s, "api");
    assert_eq!(st["pid"], pid, "{st}");
    let r = run_code(&s, &["stop"], 0);
    assert!(r.stdout.contains(&format!("stopped pid {pid}")), "{r:?}");
    let _ = child.wait();
    assert!(!alive(pid));
}

// ---------------------------------------------------------------------------
// The program, not its shell (item 8)

#[test]
fn a_simple_command_is_its_program_and_memory_counts_the_whole_group() {
    let s = Stack::new(&format!(
        r#"
[service.plain]
command = "sleep 1000"

[service.shelled]
command = "{py} -c 'import time; b = b\"x\" * (64 << 20); time.sleep(1000)' & wait"
"#,
        py = python()
    ));
    run_code(&s, &["start"], 0);
    let pid = running(&s, "plain");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(
        comm.trim(),
        "sleep",
        "status shows the shell, not the program"
    );
    running(&s, "shelled");
    wait_for(
        "the group's memory (64 MB in a child) in status",
        60,
        || {
            status_of(&s, "shelled")["rss_mb"]
                .as_f64()
                .is_some_and(|m| m >= 64.0)
        },
    );
    let r = run_code(&s, &["status"], 0);
    assert!(r.stdout.contains("GROUP-RSS(MB)"), "{}", r.stdout);
}

// ---------------------------------------------------------------------------
// Messages show what was probed (item 9)

#[test]
fn a_failed_gate_names_the_address_probed_with_secrets_hidden() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[env]
API_PORT = "{port}"
API_PW = "pw-4f9e2c"
API_TOKEN = "tok-8d1b7a"

[service.api]
command = "sleep 1000"
ready = {{ http = "http://me:${{API_PW}}@127.0.0.1:${{API_PORT}}/health?token=${{API_TOKEN}}", timeout = "1s", interval = "200ms" }}
"#
    ));
    let r = run_code(&s, &["start"], 1);
    let shown = format!("http://***@127.0.0.1:{port}/health?***");
    assert!(r.stderr.contains(&shown), "{shown} not in:\n{}", r.stderr);
    let own = s.read("logs/stackctl.log");
    assert!(own.contains(&shown), "{shown} not in stackctl.log:\n{own}");
    for secret in ["pw-4f9e2c", "tok-8d1b7a"] {
        assert!(!r.stderr.contains(secret), "{secret} in:\n{}", r.stderr);
        assert!(!r.stdout.contains(secret), "{secret} in:\n{}", r.stdout);
        assert!(!own.contains(secret), "{secret} in stackctl.log");
    }
    assert!(!r.stderr.contains("${API_PORT}"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------
// Run markers (item 5) and a failure's own lines (item 10)

#[test]
fn each_run_is_marked_in_its_log_and_logs_current_shows_the_last_one() {
    let s = Stack::new(
        r#"
[service.flaky]
command = "./flaky.sh"
pre_start = ["echo checking before run"]
restart = "on-failure"
"#,
    );
    s.write(
        "flaky.sh",
        "#!/bin/sh\nif [ ! -e ran-once ]; then touch ran-once; echo 'Traceback: first run'; exit 1; fi\necho 'second run up'\nexec sleep 1000\n",
    );
    run_code(&s, &["start"], 0);
    wait_for("the second run", 60, || {
        s.read("logs/flaky.log").contains("second run up")
    });
    let pid = running(&s, "flaky");
    let log = s.read("logs/flaky.log");
    let markers: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("── stackctl: "))
        .collect();
    assert!(markers.len() >= 6, "{log}");
    assert!(
        markers[0].starts_with("── stackctl: flaky pre_start 1 started, pid "),
        "{log}"
    );
    assert!(markers[0].ends_with(" (attempt 1) ──"), "{log}");
    assert!(
        markers.iter().any(
            |m| m.starts_with("── stackctl: flaky exited with code 1 after ")
                && m.ends_with(", attempt 1) ──")
        ),
        "{log}"
    );
    assert_eq!(
        *markers.last().unwrap(),
        format!("── stackctl: flaky started, pid {pid} (attempt 2) ──"),
        "{log}"
    );
    let r = run_code(&s, &["logs", "flaky", "--current"], 0);
    assert!(!r.stdout.contains("Traceback"), "{}", r.stdout);
    assert!(r.stdout.contains("checking before run"), "{}", r.stdout);
    assert!(r.stdout.contains("second run up"), "{}", r.stdout);
    let r = run_code(&s, &["logs", "flaky"], 0);
    assert!(r.stdout.contains("Traceback"), "{}", r.stdout);
}

#[test]
fn a_failed_start_shows_the_lines_of_its_own_run_only() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "./migrate.sh"
"#,
    );
    s.write(
        "migrate.sh",
        "#!/bin/sh\nn=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs\necho \"Traceback of run $n\"\nexit 3\n",
    );
    let r = run_code(&s, &["start"], 1);
    assert!(r.stderr.contains("Traceback of run 1"), "{}", r.stderr);
    let r = run_code(&s, &["start"], 1);
    assert!(r.stderr.contains("Traceback of run 2"), "{}", r.stderr);
    assert!(!r.stderr.contains("Traceback of run 1"), "{}", r.stderr);
    assert!(r.stderr.contains("(attempt 2) ──"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("── stackctl:"),
        "markers in the tail: {}",
        r.stderr
    );
}

#[test]
fn markers_can_be_turned_off() {
    let s = Stack::new(
        r#"
[stack.logs]
markers = false

[task.hello]
command = "echo hello"
"#,
    );
    run_code(&s, &["start"], 0);
    let log = s.read("logs/hello.log");
    assert_eq!(log, "hello\n");
    let r = run_code(&s, &["logs", "hello", "--current"], 0);
    assert_eq!(r.stdout, "hello\n");
    assert!(r.stderr.contains("markers = false"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------
// Live progress in a real terminal (item 1)

/// A private tmux server (its own socket folder) with one session in the
/// stack's folder; killed on drop. `None` when tmux is truly missing.
struct Tmux {
    dir: std::path::PathBuf,
    session: String,
}

impl Tmux {
    fn start(s: &Stack) -> Option<Tmux> {
        let version = Command::new("tmux").arg("-V").output();
        if !version.is_ok_and(|o| o.status.success()) {
            eprintln!("NOTICE: tmux is not installed; skipping the live-terminal test");
            return None;
        }
        let dir = s.path().join("tmux");
        std::fs::create_dir_all(&dir).unwrap();
        let t = Tmux {
            dir,
            session: "live".into(),
        };
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "live",
                "-x",
                "160",
                "-y",
                "50",
                "-c",
            ])
            .arg(s.path())
            .status()
            .unwrap();
        assert!(ok.success(), "tmux new-session failed");
        Some(t)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(args)
            .env("TMUX_TMPDIR", &self.dir)
            .env_remove("TMUX")
            .stdin(Stdio::null());
        c
    }

    /// Types `line` and Enter.
    fn type_line(&self, line: &str) {
        let st = self
            .cmd(&["send-keys", "-t", &self.session, line, "Enter"])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows what `cond` wants.
    #[track_caller]
    fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            last = self.screen();
            if cond(&last) {
                return last;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("timed out waiting for the terminal to show {what}; it shows:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["kill-server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The line of the screen about `process` (`  ..  api   …`).
fn line_of<'a>(screen: &'a str, process: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(process))
}

#[test]
fn start_on_a_terminal_shows_a_live_line_per_process_and_keeps_what_finished() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[task.migrate]
command = "while [ ! -e go-migrate ]; do sleep 0.05; done; echo migrated"

[service.api]
command = "./api.py"
depends_on = ["migrate"]
ready = {{ tcp = "127.0.0.1:{port}", timeout = "90s", interval = "100ms" }}

[service.web]
command = "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done"
depends_on = ["api"]
"#
    ));
    s.write(
        "api.py",
        &format!(
            "#!{py}\nimport os, socket, time\nwhile not os.path.exists('go-api'):\n    time.sleep(0.05)\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(1000)\n",
            py = python()
        ),
    );
    let Some(t) = Tmux::start(&s) else { return };
    t.type_line(&format!(
        // The shell writes DONE42-<code>; the typed line has no DONE42.
        "env NO_COLOR=1 SCTL_TEST_MARKER='{}' {} start; echo DONE$((40+2))-$?",
        s.marker,
        harness::bin().display()
    ));
    let screen = t.wait("migrate running and api waiting for it", |sc| {
        line_of(sc, "migrate").is_some_and(|l| l.contains("running"))
            && line_of(sc, "api").is_some_and(|l| l.contains("waiting for migrate"))
            && line_of(sc, "web").is_some_and(|l| l.contains("waiting for api"))
    });
    assert!(
        line_of(&screen, "migrate").unwrap().starts_with("  .."),
        "{screen}"
    );
    // The clock goes on, with the task's and the gate's limits.
    t.wait("the waiting clock to pass 1s", |sc| {
        line_of(sc, "api").is_some_and(|l| l.contains("(1.") || l.contains("(2."))
    });
    s.write("go-migrate", "");
    let refused = format!("tcp 127.0.0.1:{port}: refused");
    let screen = t.wait("api's gate refused, migrate done", |sc| {
        line_of(sc, "api").is_some_and(|l| l.contains(&refused) && l.contains(" of 1m30s)"))
            && line_of(sc, "migrate")
                .is_some_and(|l| l.starts_with("  ok  migrate") && l.contains("completed in"))
    });
    assert!(
        line_of(&screen, "web").is_some_and(|l| l.contains("waiting for api")),
        "{screen}"
    );
    s.write("go-api", "");
    let screen = t.wait("start to finish", |sc| sc.contains("DONE42-"));
    assert!(screen.contains("DONE42-0"), "{screen}");
    for p in ["migrate", "api", "web"] {
        let l = line_of(&screen, p).unwrap_or_else(|| panic!("no {p} line:\n{screen}"));
        assert!(l.starts_with("  ok  "), "{l}\n{screen}");
    }
    assert!(!screen.contains("refused"), "a live line stayed:\n{screen}");
    assert!(
        !screen.contains("waiting for"),
        "a live line stayed:\n{screen}"
    );
    let up = screen
        .lines()
        .find(|l| l.contains(" is up in "))
        .unwrap_or_else(|| panic!("no final line:\n{screen}"));
    assert!(
        up.contains("(critical chain: migrate ")
            && up.contains(" → api ")
            && up.contains(" → web ready at spawn)"),
        "{up}"
    );
    // Not a terminal: one line per event, as before, and no live line.
    let r = run_code(&s, &["restart", "api"], 0);
    assert!(!r.stdout.contains(".."), "{}", r.stdout);
    assert!(
        r.stdout.contains("  ok  api                      ready in"),
        "{}",
        r.stdout
    );
    // A stop is live too: web takes a second to go after SIGTERM.
    t.type_line("clear");
    t.type_line(&format!(
        "env NO_COLOR=1 SCTL_TEST_MARKER='{}' {} stop web; echo DONE$((40+3))-$?",
        s.marker,
        harness::bin().display()
    ));
    t.wait("web stopping, with its grace", |sc| {
        line_of(sc, "web")
            .is_some_and(|l| l.contains("stopping: SIGTERM sent") && l.contains(" of 10s)"))
    });
    let screen = t.wait("the stop to finish", |sc| sc.contains("DONE43-"));
    assert!(screen.contains("DONE43-0"), "{screen}");
    assert!(
        line_of(&screen, "web")
            .is_some_and(|l| l.starts_with("  ok  web") && l.contains("stopped in")),
        "{screen}"
    );
}

// ---------------------------------------------------------------------------
// status --watch (item 2)

#[test]
fn status_watch_streams_every_change_until_the_supervisor_exits() {
    use std::io::BufRead;
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"

[service.web]
command = "sleep 1000"
"#,
    );
    // No supervisor: nothing to watch.
    let r = run_code(&s, &["status", "--watch"], 1);
    assert!(
        r.stderr.contains("no supervisor is running"),
        "{}",
        r.stderr
    );
    run_code(&s, &["start"], 0);
    let mut child = s
        .cmd(&["status", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let doc: serde_json::Value =
                serde_json::from_str(&line).expect("a JSON document per line");
            if tx.send(doc).is_err() {
                break;
            }
        }
    });
    let state_of = |doc: &serde_json::Value, name: &str| {
        doc["processes"].as_array().and_then(|a| {
            a.iter()
                .find(|p| p["name"] == name)
                .map(|p| p["state"].clone())
        })
    };
    let next_where = |what: &str, cond: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(doc) if cond(&doc) => return doc,
                Ok(_) => {}
                Err(_) => panic!("no document where {what}"),
            }
        }
    };
    next_where("both run", &|d| {
        state_of(d, "api") == Some("running".into()) && state_of(d, "web") == Some("running".into())
    });
    run_code(&s, &["stop", "web"], 0);
    next_where("web is stopped", &|d| {
        state_of(d, "web") == Some("stopped".into())
    });
    run_code(&s, &["stop"], 0);
    let mut ended = None;
    wait_for("watch to end with the supervisor", 30, || {
        ended = child.try_wait().unwrap();
        ended.is_some()
    });
    assert_eq!(ended.and_then(|e| e.code()), Some(0));
    let _ = reader.join();
}

#[test]
fn status_watch_on_a_terminal_redraws_the_table_in_place() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"
"#,
    );
    run_code(&s, &["start"], 0);
    let Some(t) = Tmux::start(&s) else { return };
    t.type_line(&format!(
        "env NO_COLOR=1 SCTL_TEST_MARKER='{}' {} status --watch",
        s.marker,
        harness::bin().display()
    ));
    let headers = |sc: &str| sc.lines().filter(|l| l.starts_with("NAME ")).count();
    t.wait("the table", |sc| {
        line_of(sc, "running").is_some()
            || sc
                .lines()
                .any(|l| l.starts_with("api ") && l.contains("running"))
    });
    // Redrawn, not appended: a second (its uptime) later there is still one table.
    t.wait("the uptime to move", |sc| {
        sc.lines()
            .any(|l| l.starts_with("api ") && (l.contains(" 2s ") || l.contains(" 3s ")))
    });
    assert_eq!(headers(&t.screen()), 1, "{}", t.screen());
    run_code(&s, &["stop", "api"], 0);
    let sc = t.wait("api stopped", |sc| {
        sc.lines()
            .any(|l| l.starts_with("api ") && l.contains("stopped"))
    });
    assert_eq!(headers(&sc), 1, "{sc}");
    t.cmd(&["send-keys", "-t", "live", "C-c", ""])
        .status()
        .unwrap();
}

// ---------------------------------------------------------------------------
// The start timeline (item 3)

#[test]
fn start_names_its_chain_and_analyze_shows_the_timeline() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "sleep 0.3"

[service.api]
command = "./api.sh"
depends_on = ["migrate"]
pre_start = ["sleep 0.2"]
ready = { log = "listening", timeout = "30s" }

[service.worker]
command = "sleep 1000"
depends_on = ["api"]
replicas = 2

[service.web]
command = "./web.sh"
depends_on = ["api"]
ready = { log = "serving", timeout = "30s" }
"#,
    );
    s.write(
        "api.sh",
        "#!/bin/sh\nsleep 0.4\necho listening\nexec sleep 1000\n",
    );
    s.write(
        "web.sh",
        "#!/bin/sh\nsleep 0.6\necho serving\nexec sleep 1000\n",
    );
    let r = run_code(&s, &["start"], 0);
    let last = r.stdout.lines().last().unwrap_or("");
    assert!(last.starts_with("stack "), "{}", r.stdout);
    for part in [
        " is up in ",
        "(critical chain: migrate ",
        " → api ",
        " → web ",
    ] {
        assert!(last.contains(part), "{part:?} not in {last:?}");
    }
    let a = run_code(&s, &["analyze", "--json"], 0);
    let doc: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    let chain: Vec<&str> = doc["start"]["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["web", "api", "migrate"], "{doc}");
    let api = &doc["start"]["chain"][1];
    assert_eq!(api["waited_for"], "migrate", "{doc}");
    assert!(
        api["own_s"].as_f64().unwrap() >= 0.6,
        "own time includes pre_start and gate: {doc}"
    );
    assert!(api["waited_s"].as_f64().unwrap() >= 0.3, "{doc}");
    let rows = doc["start"]["processes"].as_array().unwrap();
    let worker = rows.iter().find(|r| r["name"] == "worker.1").unwrap();
    assert_eq!(worker["no_gate"], true, "{worker}");
    let api_row = rows.iter().find(|r| r["name"] == "api").unwrap();
    assert!(api_row["pre_start_s"].as_f64().unwrap() >= 0.2, "{api_row}");
    let text = run_code(&s, &["analyze"], 0).stdout;
    assert!(text.contains("critical chain"), "{text}");
    assert!(text.contains("ready at spawn"), "{text}");
    assert!(text.contains("do not add up"), "{text}");
    // A name narrows the chain to it.
    let w = run_code(&s, &["analyze", "worker", "--json"], 0);
    let doc: serde_json::Value = serde_json::from_str(&w.stdout).unwrap();
    assert!(
        doc["start"]["chain"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("worker."),
        "{doc}"
    );
    run_code(&s, &["analyze", "nope"], 2);
}

#[test]
fn the_timeline_puts_failures_first_and_keeps_restarts_across_a_supervisor_restart() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"

[service.broken]
command = "echo no config; exit 2"
ready = { log = "never", timeout = "10s" }
"#,
    );
    run_code(&s, &["analyze"], 1);
    run_code(&s, &["start"], 1);
    let text = run_code(&s, &["analyze"], 0).stdout;
    let first_row = text
        .lines()
        .skip_while(|l| !l.starts_with("NAME "))
        .nth(1)
        .unwrap_or("");
    assert!(
        first_row.starts_with("broken ") && first_row.contains("failed"),
        "{text}"
    );
    assert!(text.contains("exited with code 2"), "{text}");
    // The supervisor dies; its successor goes on recording the same start.
    let api = running(&s, "api");
    let sup = s.supervisor_pid().unwrap();
    harness::kill(sup, 9);
    wait_for("a new supervisor", 60, || {
        s.supervisor_pid().is_some_and(|p| p != sup)
    });
    harness::kill(api, 9);
    wait_for("api back", 60, || {
        status_of(&s, "api")["pid"]
            .as_i64()
            .is_some_and(|p| p as i32 != api)
            && status_of(&s, "api")["state"] == "running"
    });
    let doc: serde_json::Value =
        serde_json::from_str(&run_code(&s, &["analyze", "--json"], 0).stdout).unwrap();
    let restarts = doc["start"]["restarts"].as_array().unwrap();
    assert!(
        restarts
            .iter()
            .any(|r| r["name"] == "api" && r["attempt"] == 2 && r["outcome"] == "ready"),
        "{doc}"
    );
}

// ---------------------------------------------------------------------------
// stackctl under systemd (item 6)

/// The unit files of docs/systemd.md: (file name, user unit?, text), the
/// binary's path made this build's (verify checks that it exists).
fn documented_units() -> Vec<(String, bool, String)> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/systemd.md"),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match (&mut block, line.trim_start().strip_prefix("```")) {
            (None, Some("ini")) => block = Some(String::new()),
            (Some(text), Some(_)) => {
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("# ")
                    .to_string();
                let name = first.rsplit('/').next().unwrap_or("").to_string();
                let user = first.contains(".config/systemd/user");
                let body = text.replace(
                    "/usr/local/bin/stackctl",
                    &harness::bin().display().to_string(),
                );
                out.push((name, user, body));
                block = None;
            }
            (Some(text), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn the_documented_units_pass_systemd_analyze_verify() {
    let units = documented_units();
    assert_eq!(
        units.len(),
        2,
        "docs/systemd.md should show a system and a user unit"
    );
    for (name, user, text) in units {
        assert!(name.ends_with(".service"), "{name}");
        for key in [
            "Type=notify",
            "start --foreground",
            "ExecReload=",
            "KillMode=mixed",
        ] {
            assert!(text.contains(key), "{name}: no {key}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&name), &text).unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let mut args = Vec::new();
        if user {
            args.push("--user");
        }
        args.extend(["verify", "--man=no", name.as_str()]);
        let out = Command::new("systemd-analyze")
            .args(&args)
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", runtime.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("systemd-analyze cannot run ({e}): a test dependency, installed by .ci/run")
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "{name} (user: {user}): systemd-analyze verify:\n{text}"
        );
    }
}

#[test]
fn start_foreground_tells_a_real_notify_socket_ready_status_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let s = Stack::new(
        r#"
[task.migrate]
command = "sleep 0.2"

[service.api]
command = "./api.sh"
depends_on = ["migrate"]
ready = { log = "listening", timeout = "30s" }
"#,
    );
    s.write(
        "api.sh",
        "#!/bin/sh\nenv > api-env.txt\necho listening\nexec sleep 1000\n",
    );
    // As systemd would: a datagram socket of its own, named in NOTIFY_SOCKET.
    let path = s.path().join("systemd-notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut child = s
        .cmd(&["start", "--foreground"])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            if alive(self.0) {
                harness::kill(self.0, 9);
            }
        }
    }
    let _guard = Kill(child.id() as i32);
    let mut heard = String::new();
    let hear_until = |what: &str, heard: &mut String| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while !heard.lines().any(|l| l == what) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} on NOTIFY_SOCKET; heard:\n{heard}\n{}",
                s.dump()
            );
            if let Ok(n) = manager.recv(&mut buf) {
                heard.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    hear_until("READY=1", &mut heard);
    assert!(
        heard
            .lines()
            .any(|l| l.starts_with("STATUS=stack ") && l.contains(" is up in ")),
        "{heard}"
    );
    // Ready means up.
    assert_eq!(status_of(&s, "api")["state"], "running");
    assert_eq!(status_of(&s, "migrate")["state"], "completed");
    // The stack's processes never see stackctl's NOTIFY_SOCKET.
    assert!(
        !s.read("api-env.txt").contains("NOTIFY_SOCKET="),
        "{}",
        s.read("api-env.txt")
    );
    let stack_pids = s.stack_pids();
    harness::kill(child.id() as i32, 15);
    hear_until("STOPPING=1", &mut heard);
    let mut exit = None;
    wait_for("stackctl to exit after SIGTERM", 60, || {
        exit = child.try_wait().unwrap();
        exit.is_some()
    });
    assert_eq!(exit.and_then(|e| e.code()), Some(0));
    for p in stack_pids {
        assert!(!alive(p), "pid {p} outlived the service");
    }
}

// ---------------------------------------------------------------------------
// The small things (item 11)

#[test]
fn a_pool_scaled_to_zero_stays_in_status_saying_so() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 1000"

[service.worker]
command = "sleep 1000"
depends_on = ["api"]
replicas = 2
max_replicas = 6
"#,
    );
    run_code(&s, &["start"], 0);
    let r = run_code(&s, &["scale", "worker", "0"], 0);
    assert!(
        !r.stdout.contains("api"),
        "scale lists only what it changed:\n{}",
        r.stdout
    );
    let r = run_code(&s, &["status", "worker"], 3);
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("worker "))
        .unwrap_or_else(|| panic!("no worker row:\n{}", r.stdout));
    assert!(row.contains("0 members of at most 6: scaled to 0"), "{row}");
    let st = status_of(&s, "worker");
    assert_eq!(st["pool"], "worker", "{st}");
    assert_eq!(st["state"], "stopped", "{st}");
    run_code(&s, &["status"], 3);
    // Growing lists the new members only, not what it left alone.
    let r = run_code(&s, &["scale", "worker", "2"], 0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("worker.") && l.contains("ready in")),
        "{}",
        r.stdout
    );
    run_code(&s, &["status", "worker"], 0);
}

#[test]
fn start_tmux_while_a_supervisor_runs_says_so() {
    let s = Stack::new("[service.api]\ncommand = \"sleep 1000\"\n");
    run_code(&s, &["start"], 0);
    let r = run_code(&s, &["start", "--tmux"], 2);
    assert!(
        r.stderr.contains("a supervisor is already running"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn foreground_shows_each_event_once() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    let s = Stack::new(
        r#"
[task.migrate]
command = "true"

[service.api]
command = "sleep 1000"
depends_on = ["migrate"]

[service.broken]
command = "exit 4"
ready = { log = "never", timeout = "5s" }

[service.after]
command = "sleep 1000"
depends_on = ["broken"]
"#,
    );
    let mut child = s
        .cmd(&["start", "--foreground"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let collected = Arc::new(Mutex::new(String::new()));
    let pump = |stream: Box<dyn std::io::Read + Send>| {
        let sink = collected.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                let mut t = sink.lock().unwrap();
                t.push_str(&l);
                t.push('\n');
            }
        })
    };
    let out_t = pump(Box::new(child.stdout.take().unwrap()));
    let err_t = pump(Box::new(child.stderr.take().unwrap()));
    // The start is over once its error (broken failed) is printed.
    wait_for("the start's error", 60, || {
        collected
            .lock()
            .unwrap()
            .contains("error: failed to start broken")
    });
    harness::kill(pid, 2);
    let mut exit = None;
    wait_for("the foreground supervisor to exit", 60, || {
        exit = child.try_wait().unwrap();
        exit.is_some()
    });
    let _ = out_t.join();
    let _ = err_t.join();
    let text = collected.lock().unwrap().clone();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("ready in"), 1, "api's ready, once:\n{text}");
    assert_eq!(count("completed"), 1, "migrate's completion, once:\n{text}");
    // Its failure: the unit's line, and the start's error at the end.
    assert_eq!(count("failed to start: exited with code 4"), 1, "{text}");
    assert_eq!(count("FAIL "), 0, "broken's failure twice:\n{text}");
    assert_eq!(count("skip  after"), 1, "after, once:\n{text}");
    assert_eq!(
        count("stopped in").max(count("stopped process=api")),
        1,
        "{text}"
    );
}

#[test]
fn logs_grep_n_is_the_last_n_matches_overall() {
    let s = Stack::new(
        r#"
[stack.logs]
timestamps = true

[service.a]
command = "echo 'ERROR a1'; sleep 0.2; echo 'ERROR a2'; sleep 0.2; echo 'ERROR a3'; exec sleep 1000"

[service.b]
command = "sleep 0.1; echo 'ERROR b1'; sleep 0.2; echo 'ERROR b2'; exec sleep 1000"
"#,
    );
    run_code(&s, &["start"], 0);
    wait_for("every line", 30, || {
        s.read("logs/a.log").contains("ERROR a3") && s.read("logs/b.log").contains("ERROR b2")
    });
    let r = run_code(&s, &["logs", "--grep", "ERROR", "-n", "2"], 0);
    let got: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.rsplit_once("ERROR ").map_or("", |(_, w)| w))
        .collect();
    assert_eq!(got, ["b2", "a3"], "{}", r.stdout);
}
