//! Tests: logs (issue 5, and the logs parts of issue 2) — `stackctl logs`
//! with `-n`, pool names, `--grep`, `--since`, unknown names, a closed
//! stdout; `-f` across a rotation and across a restart; `stackctl.log`
//! recording every lifecycle event on one line; an unwritable log showing
//! in `status` while the process keeps running.
//!
//! Real binary, real processes (`sh` stand-ins), temp folders; waits are
//! conditions with deadlines.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::{python, run_code, wait_for, Run, Stack};

fn lines(r: &Run) -> Vec<&str> {
    r.stdout.lines().collect()
}

/// A service that prints `<tag> 1` … `<tag> <n>` at once and then sleeps.
fn printer(tag: &str, n: u32) -> String {
    format!("command = \"i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo {tag} $i; done; exec sleep 300\"\n")
}

/// A service that prints `<tag> <i>` every `ms` milliseconds, forever.
fn ticker(tag: &str, ms: u32) -> String {
    let secs = f64::from(ms) / 1000.0;
    format!("command = \"i=0; while :; do i=$((i+1)); echo {tag} $i; sleep {secs}; done\"\n")
}

/// `stackctl logs -f …` with stdout read line by line on a thread.
struct Follow {
    child: Child,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follow {
    fn start(s: &Stack, args: &[&str]) -> Follow {
        let mut full = vec!["logs", "-f"];
        full.extend_from_slice(args);
        let mut child = s
            .cmd(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Collects lines until `cond` holds over everything seen, or panics.
    #[track_caller]
    fn until(&mut self, what: &str, secs: u64, mut cond: impl FnMut(&[String]) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while !cond(&self.seen) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {secs}s waiting for {what}; saw {} lines, last: {:?}",
                    self.seen.len(),
                    self.seen.iter().rev().take(5).collect::<Vec<_>>()
                );
            }
            if let Ok(l) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.push(l);
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers after `<tag> ` in `lines`, in order.
fn numbers(lines: &[String], tag: &str) -> Vec<u64> {
    let prefix = format!("{tag} ");
    lines
        .iter()
        .filter_map(|l| {
            let at = l.find(&prefix)?;
            l[at + prefix.len()..].trim().parse().ok()
        })
        .collect()
}

#[track_caller]
fn assert_consecutive(nums: &[u64]) {
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap or a repeat in {nums:?}");
    }
}

#[test]
fn last_n_lines_of_one_and_of_several_logs() {
    let toml = format!(
        "[stack.logs]\nmarkers = false\n[service.api]\n{}\n[service.web]\n{}",
        printer("api", 200),
        printer("web", 3)
    );
    let s = Stack::new(&toml);
    run_code(&s, &["start"], 0);
    wait_for("api's 200 lines", 20, || {
        s.read("logs/api.log").lines().count() == 200 && s.read("logs/web.log").lines().count() == 3
    });
    let r = run_code(&s, &["logs", "api", "-n", "5"], 0);
    assert_eq!(
        lines(&r),
        ["api 196", "api 197", "api 198", "api 199", "api 200"]
    );
    // The default is 100.
    let r = run_code(&s, &["logs", "api"], 0);
    assert_eq!(r.stdout.lines().count(), 100);
    assert_eq!(r.stdout.lines().next(), Some("api 101"));
    // Several: prefixed by name, aligned.
    let r = run_code(&s, &["logs", "-n", "2"], 0);
    let mut got = lines(&r);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "api | api 199",
            "api | api 200",
            "web | web 2",
            "web | web 3"
        ]
    );
    // stackctl.log is not a process log; `logs stackctl` shows it.
    assert!(!r.stdout.contains("INFO"));
    let r = run_code(&s, &["logs", "stackctl", "-n", "50"], 0);
    assert!(r.stdout.contains("spawned pid"), "{}", r.stdout);
}

#[test]
fn logs_are_readable_with_a_broken_stack_file() {
    let toml = format!(
        "[stack.logs]\nmarkers = false\n[service.api]\n{}",
        printer("api", 3)
    );
    let s = Stack::new(&toml);
    run_code(&s, &["start"], 0);
    wait_for("api's lines", 20, || {
        s.read("logs/api.log").lines().count() == 3
    });
    // An edit in progress: an unknown key. The logs are still files.
    s.write("stack.toml", &format!("{toml}bogus = 1\n"));
    let r = run_code(&s, &["logs", "api", "-n", "1"], 0);
    assert_eq!(r.stdout, "api 3\n");
    let r = run_code(&s, &["logs", "-n", "1"], 0);
    assert_eq!(r.stdout, "api 3\n");
    s.write("stack.toml", &toml);
}

#[test]
fn unknown_names_exit_2_with_a_suggestion() {
    let s = Stack::new(&format!("[service.api]\n{}", printer("api", 1)));
    // Before anything ran: nothing, and a note saying why.
    let r = run_code(&s, &["logs", "api"], 0);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("api: no log yet"), "{}", r.stderr);
    let r = run_code(&s, &["logs", "apu"], 2);
    assert!(r.stderr.contains("`apu`"), "{}", r.stderr);
    assert!(r.stderr.contains("did you mean `api`?"), "{}", r.stderr);
    let r = run_code(&s, &["logs", "api", "--grep", "("], 2);
    assert!(r.stderr.contains("--grep"), "{}", r.stderr);
    let r = run_code(&s, &["logs", "--since", "yesterday-ish"], 2);
    assert!(r.stderr.contains("--since"), "{}", r.stderr);
}

#[test]
fn a_pool_name_covers_its_members_and_one_member_alone() {
    let toml = "[stack.logs]\nmarkers = false\n[service.worker]\nreplicas = 3\n\
        command = \"echo worker $STACKCTL_INSTANCE up; echo worker $STACKCTL_INSTANCE busy; exec sleep 300\"\n";
    let s = Stack::new(toml);
    run_code(&s, &["start"], 0);
    wait_for("three worker logs", 20, || {
        (1..=3).all(|i| s.read(&format!("logs/worker.{i}.log")).lines().count() == 2)
    });
    let r = run_code(&s, &["logs", "worker", "-n", "1"], 0);
    let mut got = lines(&r);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "worker.1 | worker 1 busy",
            "worker.2 | worker 2 busy",
            "worker.3 | worker 3 busy"
        ]
    );
    let r = run_code(&s, &["logs", "worker.2"], 0);
    assert_eq!(lines(&r), ["worker 2 up", "worker 2 busy"]);
    // A scaled-down member's log is still there, and still shown.
    run_code(&s, &["scale", "worker", "1"], 0);
    let r = run_code(&s, &["logs", "worker", "-n", "1"], 0);
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
}

#[test]
fn grep_and_since_filter_and_timestamps_interleave() {
    let toml = "[stack.logs]\ntimestamps = true\nmarkers = false\n\
        [service.a]\ncommand = \"echo 'a INFO one'; sleep 0.3; echo 'a ERROR two'; sleep 0.6; echo 'a INFO three'; exec sleep 300\"\n\
        [service.b]\ncommand = \"sleep 0.15; echo 'b ERROR one'; sleep 0.3; echo 'b INFO two'; exec sleep 300\"\n";
    let s = Stack::new(toml);
    run_code(&s, &["start"], 0);
    wait_for("both logs complete", 20, || {
        s.read("logs/a.log").lines().count() == 3 && s.read("logs/b.log").lines().count() == 2
    });
    let r = run_code(&s, &["logs"], 0);
    // Time order across logs, each line prefixed and stamped.
    let order: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.rsplit_once(' ').map(|(_, w)| w).unwrap_or(""))
        .collect();
    let bodies: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            let (name, rest) = l.split_once(" | ").unwrap();
            let (ts, body) = rest.split_once(' ').unwrap();
            assert!(humantime::parse_rfc3339(ts).is_ok(), "{l}");
            format!("{}:{body}", name.trim())
        })
        .collect();
    assert_eq!(
        bodies,
        [
            "a:a INFO one",
            "b:b ERROR one",
            "a:a ERROR two",
            "b:b INFO two",
            "a:a INFO three"
        ],
        "{order:?}"
    );
    let r = run_code(&s, &["logs", "--grep", "ERROR"], 0);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert!(r.stdout.lines().all(|l| l.contains("ERROR")));
    let r = run_code(&s, &["logs", "a", "--grep", "ERROR|three", "-n", "1"], 0);
    assert!(
        r.stdout.trim_end().ends_with("a INFO three"),
        "{}",
        r.stdout
    );
    // Everything is younger than an hour; nothing is in the future.
    let r = run_code(&s, &["logs", "--since", "1h"], 0);
    assert_eq!(r.stdout.lines().count(), 5);
    let r = run_code(&s, &["logs", "--since", "1ms", "--grep", "never"], 0);
    assert_eq!(r.stdout, "");
}

#[test]
fn a_closed_stdout_is_a_quiet_success() {
    let s = Stack::new(&format!("[service.big]\n{}", printer("line", 50_000)));
    run_code(&s, &["start"], 0);
    wait_for("the big log", 30, || {
        s.read("logs/big.log").ends_with("line 50000\n")
    });
    let mut child = s
        .cmd(&["logs", "big", "-n", "50000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out); // like `| head`
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "");
}

#[test]
fn follow_continues_across_rotations() {
    let toml = format!(
        "[stack.logs]\nmax_size = 2000\nkeep = 3\n[service.tick]\n{}",
        ticker("tick", 2)
    );
    let s = Stack::new(&toml);
    run_code(&s, &["start"], 0);
    wait_for("some ticks", 20, || {
        s.read("logs/tick.log").contains("tick 3\n")
    });
    let mut f = Follow::start(&s, &["tick", "-n", "1"]);
    // 2000-byte files of ~8-byte lines: 1500 lines are several rotations.
    f.until("1500 ticks", 60, |seen| numbers(seen, "tick").len() >= 1500);
    let nums = numbers(&f.seen, "tick");
    assert_consecutive(&nums);
    assert!(s.state("tick.log.3").exists(), "no rotations happened");
    assert!(!s.state("tick.log.4").exists());
}

#[test]
fn follow_continues_across_a_restart() {
    let toml = "[service.api]\n\
        command = \"echo \\\"boot $$\\\"; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.02; done\"\n";
    let s = Stack::new(toml);
    run_code(&s, &["start"], 0);
    wait_for("the first boot", 20, || {
        s.read("logs/api.log").contains("boot ")
    });
    let mut f = Follow::start(&s, &["api", "-n", "1"]);
    f.until("ticks", 20, |seen| {
        seen.iter().any(|l| l.starts_with("tick"))
    });
    run_code(&s, &["restart", "api"], 0);
    f.until("a second boot and its ticks", 30, |seen| {
        let boot = seen.iter().rposition(|l| l.starts_with("boot "));
        boot.is_some_and(|b| seen[b..].iter().filter(|l| *l == "tick 3").count() == 1)
    });
}

#[test]
fn follow_picks_up_new_pool_members() {
    let toml = format!(
        "[service.w]\nreplicas = 1\nmax_replicas = 3\n{}",
        ticker("w$STACKCTL_INSTANCE", 50)
    );
    let s = Stack::new(&toml);
    run_code(&s, &["start"], 0);
    let mut f = Follow::start(&s, &["w", "-n", "0"]);
    f.until("w.1's ticks", 20, |seen| {
        seen.iter().any(|l| l.starts_with("w.1 | w1 "))
    });
    run_code(&s, &["scale", "w", "2"], 0);
    f.until("w.2's ticks", 20, |seen| {
        seen.iter().any(|l| l.starts_with("w.2 | w2 "))
    });
}

/// The line of `log` that mentions `process=<name>` and `what`; asserts it
/// is one line starting with an RFC 3339 time.
#[track_caller]
fn event<'a>(log: &'a str, name: &str, what: &str) -> &'a str {
    let tag = format!("process={name}");
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(what) && l.contains(&tag))
        .collect();
    assert!(
        !hits.is_empty(),
        "no `{what}` for {name} in stackctl.log:\n{log}"
    );
    let l = hits[0];
    let ts = l.split(' ').next().unwrap();
    assert!(humantime::parse_rfc3339(ts).is_ok(), "no time on {l:?}");
    l
}

#[test]
fn stackctl_log_has_one_line_per_lifecycle_event() {
    // `flaky` kills itself with SIGKILL (python: `$$` is stack-file syntax).
    let toml = format!(
        "[service.api]\ncommand = \"exec sleep 300\"\n\
        [service.crash]\ncommand = \"sleep 0.3; exit 3\"\nrestart = \"never\"\n\
        [service.flaky]\ncommand = [\"{}\", \"-c\", \"import os, time; time.sleep(0.3); os.kill(os.getpid(), 9)\"]\n\
        restart = \"on-failure\"\nmax_restarts = 1\n\
        [service.pool]\ncommand = \"exec sleep 300\"\nreplicas = 1\nmax_replicas = 2\n",
        python()
    );
    let s = Stack::new(&toml);
    run_code(&s, &["start"], 0);
    run_code(&s, &["scale", "pool", "2"], 0);
    wait_for("crash and flaky to end", 30, || {
        let log = s.read("logs/stackctl.log");
        log.contains("exited with code 3") && log.matches("killed by SIGKILL").count() >= 2
    });
    // A reload that changes something (one with no change logs nothing).
    s.write(
        "stack.toml",
        &format!("{toml}[service.extra]\ncommand = \"exec sleep 300\"\n"),
    );
    run_code(&s, &["reload"], 0);
    run_code(&s, &["stop", "api"], 0);
    let log = s.read("logs/stackctl.log");
    event(&log, "api", "spawned pid");
    event(&log, "api", "ready in");
    event(&log, "crash", "exited with code 3");
    event(&log, "flaky", "killed by SIGKILL");
    event(&log, "flaky", "restarting in");
    event(&log, "pool", "scaled from 1 to 2");
    event(&log, "pool.2", "spawned pid");
    event(&log, "api", "stopping pid");
    event(&log, "api", "stopped");
    assert!(
        log.lines().any(|l| l.contains("reload:")),
        "no reload line:\n{log}"
    );
    // One line per event: every line starts with its time.
    for l in log.lines() {
        let ts = l.split(' ').next().unwrap();
        assert!(
            humantime::parse_rfc3339(ts).is_ok(),
            "a line without a time: {l:?}"
        );
    }
}

#[test]
fn an_unwritable_log_shows_in_status_and_the_process_runs_on() {
    let toml = format!("[service.noisy]\n{}", ticker("noisy", 20));
    let s = Stack::new(&toml);
    // The log is /dev/full: every write fails with ENOSPC, like a full disk.
    std::fs::create_dir_all(s.state("")).unwrap();
    std::os::unix::fs::symlink("/dev/full", s.state("noisy.log")).unwrap();
    run_code(&s, &["start"], 0);
    let mut message = String::new();
    wait_for("status to report the log error", 20, || {
        let st = s.process_status("noisy").unwrap_or_default();
        message = st["message"].as_str().unwrap_or("").to_string();
        message.contains("No space left on device")
    });
    let st = s.process_status("noisy").unwrap();
    assert_eq!(st["state"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap() as i32;
    // Space again: logging resumes with a marker saying what was lost.
    std::fs::remove_file(s.state("noisy.log")).unwrap();
    wait_for("logging to resume", 20, || {
        let text = s.read("logs/noisy.log");
        text.contains("bytes of output were lost") && text.lines().count() >= 4
    });
    wait_for("status to clear the error", 20, || {
        s.process_status("noisy")
            .is_some_and(|st| st["message"].as_str().is_none_or(|m| !m.contains("space")))
    });
    assert_eq!(s.pid_of("noisy"), Some(pid), "the process was restarted");
    let text = s.read("logs/noisy.log");
    let after: Vec<String> = text
        .lines()
        .skip_while(|l| !l.contains("bytes of output were lost"))
        .skip(1)
        .map(str::to_string)
        .collect();
    assert!(after.iter().all(|l| l.starts_with("noisy ")), "{text}");
    assert_consecutive(&numbers(&after, "noisy"));
}

#[test]
fn a_log_path_that_cannot_be_opened_does_not_stop_the_process() {
    let toml = format!("[service.blocked]\n{}", ticker("blocked", 20));
    let s = Stack::new(&toml);
    // A directory where the log file should be: opening it fails.
    std::fs::create_dir_all(s.state("blocked.log")).unwrap();
    run_code(&s, &["start"], 0);
    wait_for("status to report the log error", 20, || {
        s.process_status("blocked").is_some_and(|st| {
            st["state"] == "running"
                && st["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("blocked.log"))
        })
    });
    let pid = s.pid_of("blocked").unwrap();
    std::fs::remove_dir(s.state("blocked.log")).unwrap();
    wait_for("logging to resume", 20, || {
        let text = s.read("logs/blocked.log");
        text.starts_with("[stackctl] ") && text.lines().count() >= 4
    });
    assert_eq!(s.pid_of("blocked"), Some(pid), "the process was restarted");
    let text = s.read("logs/blocked.log");
    let after: Vec<String> = text.lines().skip(1).map(str::to_string).collect();
    assert!(after.iter().all(|l| l.starts_with("blocked ")), "{text}");
    assert_consecutive(&numbers(&after, "blocked"));
}
