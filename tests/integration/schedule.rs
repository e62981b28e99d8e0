//! Tests: scheduled tasks (`schedule`, `every`; issue 18 item 3) through
//! the real binary. `every = "1s"` makes runs observable in seconds; the
//! cron side is checked by `status` (its next run) and by the unit tests
//! of `supervisor::schedule`.

use crate::harness::{wait_for, Stack};

fn runs(s: &Stack) -> usize {
    s.read("runs.txt").lines().count()
}

fn schedule_of(s: &Stack, name: &str) -> serde_json::Value {
    s.process_status(name)
        .map(|p| p["schedule"].clone())
        .unwrap_or_default()
}

#[test]
fn a_task_runs_at_its_interval_and_status_shows_its_last_and_next_run() {
    let s = Stack::new(
        r#"
[task.tick]
command = "echo run >> runs.txt; echo ticked"
every = "1s"
"#,
    );
    let r = s.run(&["start"]);
    r.success();
    assert!(
        r.stdout.contains("tick") && r.stdout.contains("scheduled: every 1s, host time zone"),
        "{}",
        r.stdout
    );
    wait_for("two runs", 60, || runs(&s) >= 2);
    wait_for("a run recorded as completed", 30, || {
        schedule_of(&s, "tick")["last_ok"] == true
    });
    let sch = schedule_of(&s, "tick");
    assert_eq!(sch["spec"], "every 1s");
    assert_eq!(sch["armed"], true);
    assert!(sch["next_run"].as_str().is_some(), "{sch}");
    assert!(sch["last_run"].as_str().is_some(), "{sch}");
    assert!(
        sch["last_result"]
            .as_str()
            .unwrap_or_default()
            .starts_with("completed in "),
        "{sch}"
    );
    assert!(!sch["time_zone"].as_str().unwrap_or_default().is_empty());
    // Same log as any task.
    assert!(s.read("logs/tick.log").contains("ticked"));
    let table = s.run(&["status"]);
    assert!(
        table.stdout.contains("tick: every 1s ("),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains(": next run "), "{}", table.stdout);
    // `stop tick` disarms it.
    s.run(&["stop", "tick"]).success();
    let sch = schedule_of(&s, "tick");
    assert_eq!(sch["armed"], false, "{sch}");
    assert!(sch.get("next_run").is_none(), "{sch}");
}

#[test]
fn a_run_still_going_is_not_started_twice() {
    let s = Stack::new(
        r#"
[task.slow]
command = "echo start >> runs.txt; sleep 2.5; echo end >> runs.txt"
every = "1s"
"#,
    );
    s.run(&["start"]).success();
    wait_for("a skipped slot in stackctl.log", 60, || {
        s.read("logs/stackctl.log").contains("is still going")
    });
    wait_for("two runs ended", 60, || {
        s.read("runs.txt").matches("end").count() >= 2
    });
    // Runs never overlap: every start is followed by its end.
    let lines: Vec<String> = s.read("runs.txt").lines().map(str::to_string).collect();
    for pair in lines.chunks(2) {
        if pair.len() == 2 {
            assert_eq!(pair, ["start", "end"], "{lines:?}");
        }
    }
    let sch = schedule_of(&s, "slow");
    assert!(sch["skipped"].as_u64().unwrap_or(0) >= 1, "{sch}");
    assert!(
        sch["last_skip"]
            .as_str()
            .unwrap_or_default()
            .contains("is still going"),
        "{sch}"
    );
}

#[test]
fn slots_are_skipped_while_an_export_holds_the_lock() {
    let s = Stack::new(
        r#"
[task.tick]
command = "echo run >> runs.txt"
every = "1s"
"#,
    );
    s.run(&["start"]).success();
    wait_for("a first run", 60, || runs(&s) >= 1);
    s.run(&["lock", "acquire", "export", "job-7", "a long sweep"])
        .success();
    wait_for("a slot skipped for the lock", 60, || {
        s.read("logs/stackctl.log")
            .contains("skipped: the stack-owner lock is held by export (task job-7")
    });
    let sch = schedule_of(&s, "tick");
    assert!(
        sch["last_skip"]
            .as_str()
            .unwrap_or_default()
            .contains("held by export"),
        "{sch}"
    );
    s.run(&["lock", "release", "job-7"]).success();
    let before = runs(&s);
    wait_for("runs again once the lock is free", 60, || runs(&s) > before);
}

#[test]
fn a_new_supervisor_goes_on_with_the_schedule_and_its_last_run() {
    let s = Stack::new(
        r#"
[task.tick]
command = "echo run >> runs.txt"
every = "1s"
"#,
    );
    s.run(&["start"]).success();
    wait_for("a recorded run", 60, || {
        schedule_of(&s, "tick")["last_ok"] == true
    });
    let old = s.supervisor_pid().unwrap();
    crate::harness::kill(old, 9);
    wait_for("the anchor to launch a new supervisor", 60, || {
        s.supervisor_pid().is_some_and(|p| p != old)
    });
    let sch = schedule_of(&s, "tick");
    assert_eq!(sch["armed"], true, "{sch}");
    assert!(sch["last_run"].as_str().is_some(), "{sch}");
    let before = runs(&s);
    wait_for("runs under the new supervisor", 60, || runs(&s) > before);
}

#[test]
fn a_cron_schedule_says_its_next_run_in_the_hosts_time_zone() {
    let s = Stack::new(
        r#"
[task.nightly]
command = "echo run >> runs.txt"
schedule = "0 3 * * *"
"#,
    );
    s.run(&["start"]).success();
    let sch = schedule_of(&s, "nightly");
    assert_eq!(sch["spec"], r#"schedule "0 3 * * *""#);
    let next = sch["next_run"].as_str().unwrap_or_default().to_string();
    assert!(next.contains("T03:00:00"), "{sch}");
    let secs = sch["next_run_in_s"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=86_400.0).contains(&secs), "{sch}");
    // Not run by `start`; `restart` runs it now and keeps it armed.
    assert_eq!(runs(&s), 0);
    s.run(&["restart", "nightly"]).success();
    assert_eq!(runs(&s), 1);
    assert_eq!(schedule_of(&s, "nightly")["armed"], true);
}
