//! Tests: the stack-owner lock (SPEC "The stack-owner lock", exit codes 2/3/4).

use std::process::Stdio;
use std::time::{Duration, Instant};

use fs2::FileExt;

use crate::harness::{wait_for, Stack};

const IDLE: &str = r#"
[service.idle]
command = "sleep 300"
"#;

fn record(s: &Stack) -> serde_json::Value {
    let r = s.run(&["lock", "status", "--json"]);
    r.success();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn cli_contract_and_exit_codes() {
    let s = Stack::new(IDLE);
    // A missing file means free.
    assert_eq!(s.run(&["lock", "current"]).success().stdout.trim(), "free");
    assert_eq!(record(&s)["owner"], "free");

    s.run(&["lock", "acquire", "export", "farm-exp-13", "24-cell sweep"])
        .success();
    let rec = record(&s);
    assert_eq!(rec["owner"], "export");
    assert_eq!(rec["task_id"], "farm-exp-13");
    assert_eq!(rec["reason"], "24-cell sweep");
    let at = rec["acquired_at"].as_str().unwrap();
    assert!(at.ends_with("+00:00") && at.len() == 25, "{at}");
    // The file itself is exactly the record.
    let on_disk: serde_json::Value =
        serde_json::from_str(&s.read("logs/stack-owner.json")).unwrap();
    assert_eq!(on_disk, rec);

    // Idempotent for the same owner and task id: same record, same time.
    s.run(&["lock", "acquire", "export", "farm-exp-13"])
        .success();
    assert_eq!(record(&s), rec);

    // Another owner, or another task of the same owner: 2, naming the holder.
    for (owner, task) in [("deploy", "keeper-x"), ("export", "farm-exp-14")] {
        let r = s.run(&["lock", "acquire", owner, task]);
        r.expect_code(2);
        assert!(
            r.stderr.contains("farm-exp-13") && r.stderr.contains("24-cell sweep"),
            "{r:?}"
        );
    }
    assert_eq!(record(&s), rec);

    // Release by a task that does not hold it: 3, and nothing changes.
    let r = s.run(&["lock", "release", "keeper-x"]);
    r.expect_code(3);
    assert!(r.stderr.contains("farm-exp-13"), "{r:?}");
    assert_eq!(record(&s), rec);

    assert_eq!(
        s.run(&["lock", "current"]).success().stdout.trim(),
        "export"
    );
    let st = s.run(&["lock", "status"]);
    st.success();
    for want in ["export", "farm-exp-13", "24-cell sweep", "stack-owner.json"] {
        assert!(st.stdout.contains(want), "{want}: {st:?}");
    }

    s.run(&["lock", "release", "farm-exp-13"]).success();
    assert_eq!(s.run(&["lock", "current"]).success().stdout.trim(), "free");
    // Released: nobody holds it, so a second release is refused too.
    s.run(&["lock", "release", "farm-exp-13"]).expect_code(3);

    // Usage errors.
    s.run(&["lock", "acquire", "free", "x"]).expect_code(2);
    let r = s.run(&["lock", "acquire", "exporter", "x"]);
    r.expect_code(2);
    assert!(r.stderr.contains("exporter"), "{r:?}");
    assert_eq!(s.run(&["lock", "current"]).success().stdout.trim(), "free");

    // The deploy owner works the same way.
    s.run(&["lock", "acquire", "deploy", "keeper-x", "tick"])
        .success();
    s.run(&["lock", "acquire", "export", "farm-exp-13"])
        .expect_code(2);
    s.run(&["lock", "release", "keeper-x"]).success();
}

#[test]
fn twenty_concurrent_acquirers_one_winner() {
    let s = Stack::new(IDLE);
    let mut children: Vec<_> = (0..20)
        .map(|i| {
            s.cmd(&["lock", "acquire", "export", &format!("task-{i}"), "race"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut codes = Vec::new();
    for c in &mut children {
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                codes.push(st.code());
                break;
            }
            if Instant::now() > deadline {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!("acquirers did not finish in 60s: {codes:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let winners: Vec<usize> = (0..20).filter(|i| codes[*i] == Some(0)).collect();
    assert_eq!(winners.len(), 1, "exit codes: {codes:?}");
    assert!(
        codes.iter().all(|c| *c == Some(0) || *c == Some(2)),
        "exit codes: {codes:?}"
    );
    let rec = record(&s);
    assert_eq!(rec["task_id"], format!("task-{}", winners[0]));
}

#[test]
fn flock_timeout_exits_4_after_5s() {
    let s = Stack::new(IDLE);
    std::fs::create_dir_all(s.state("")).unwrap();
    let sidecar = std::fs::File::create(s.state("stack-owner.json.lock")).unwrap();
    sidecar.lock_exclusive().unwrap();

    let t0 = Instant::now();
    let r = s.run(&["lock", "acquire", "export", "t1"]);
    let took = t0.elapsed();
    r.expect_code(4);
    assert!(r.stderr.contains("stack-owner.json.lock"), "{r:?}");
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    // Nothing was written while the flock was held elsewhere.
    assert!(!s.state("stack-owner.json").exists());

    // Released: works at once.
    FileExt::unlock(&sidecar).unwrap();
    s.run(&["lock", "acquire", "export", "t1"]).success();
}

#[test]
fn waiter_gets_the_flock_when_it_is_released_in_time() {
    let s = Stack::new(IDLE);
    std::fs::create_dir_all(s.state("")).unwrap();
    let sidecar = std::fs::File::create(s.state("stack-owner.json.lock")).unwrap();
    sidecar.lock_exclusive().unwrap();
    let mut child = s
        .cmd(&["lock", "acquire", "export", "t1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The waiter is blocked while we hold it…
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none());
    // …and gets it once we let go.
    FileExt::unlock(&sidecar).unwrap();
    let mut status = None;
    wait_for("the waiting acquire to finish", 10, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert_eq!(record(&s)["task_id"], "t1");
}

#[test]
fn corrupt_file_is_reported_and_left_intact() {
    let s = Stack::new(IDLE);
    let garbage = "{\"owner\": \"export\", \"task_id\": \"x\"  <- truncated by a full disk";
    s.write("logs/stack-owner.json", garbage);
    for args in [
        &["lock", "acquire", "deploy", "k"][..],
        &["lock", "release", "x"],
        &["lock", "current"],
        &["lock", "status"],
        &["start"],
    ] {
        let r = s.run(args);
        r.expect_code(1);
        assert!(
            r.stderr.contains("stack-owner.json") && r.stderr.contains("not a valid lock record"),
            "{r:?}"
        );
        assert!(r.stderr.contains("hint"), "{r:?}");
        assert_eq!(s.read("logs/stack-owner.json"), garbage, "after {args:?}");
    }
    // An unknown owner is corrupt too.
    s.write(
        "logs/stack-owner.json",
        r#"{"owner": "backup", "task_id": "b"}"#,
    );
    let r = s.run(&["lock", "current"]);
    r.expect_code(1);
    assert!(r.stderr.contains("backup"), "{r:?}");
}

#[test]
fn start_and_stop_refuse_while_an_export_holds_it() {
    let s = Stack::new(IDLE);
    s.run(&["lock", "acquire", "export", "farm-exp-13", "24-cell sweep"])
        .success();
    let r = s.run(&["start"]);
    r.expect_code(2);
    for want in ["farm-exp-13", "24-cell sweep", "--force"] {
        assert!(r.stderr.contains(want), "{want}: {r:?}");
    }
    assert!(s.pid_of("idle").is_none(), "started anyway: {}", s.dump());

    s.run(&["start", "--force"]).success();
    let pid = s.pid_of("idle").expect("idle runs");
    for args in [
        &["stop"][..],
        &["restart"],
        &["scale", "idle", "2"],
        &["reload"],
    ] {
        let r = s.run(args);
        r.expect_code(2);
        assert!(r.stderr.contains("farm-exp-13"), "{r:?}");
    }
    assert_eq!(s.pid_of("idle"), Some(pid));

    // Deploy does not block the stack (the deploy itself restarts it).
    s.run(&["lock", "release", "farm-exp-13"]).success();
    s.run(&["lock", "acquire", "deploy", "keeper-t"]).success();
    s.run(&["restart"]).success();
    s.run(&["lock", "release", "keeper-t"]).success();
    s.run(&["stop"]).success();
}

#[test]
fn a_broken_stack_file_does_not_block_the_lock() {
    // The lock lives where `[stack] lock_file` says, even when the rest of
    // the stack file does not validate (an unknown key, a bad duration).
    let s = Stack::new(
        r#"
[stack]
lock_file = "run/owner.json"
stop_timeout = "ten seconds"

[service.idle]
command = "sleep 300"
bogus = 1
"#,
    );
    s.run(&["check"]).expect_code(2);
    s.run(&["lock", "acquire", "export", "t1", "sweep"])
        .success();
    assert_eq!(
        s.run(&["lock", "current"]).success().stdout.trim(),
        "export"
    );
    let on_disk: serde_json::Value = serde_json::from_str(&s.read("run/owner.json")).unwrap();
    assert_eq!(on_disk["task_id"], "t1");
    assert!(s.path().join("run/owner.json.lock").exists());
    s.run(&["lock", "release", "t1"]).success();
    assert_eq!(s.run(&["lock", "current"]).success().stdout.trim(), "free");
}
