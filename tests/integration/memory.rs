//! Tests: memory limits (`memory_max`, issue 18 item 2) through the real
//! binary, with python3 stand-ins that hold memory: one that stays over
//! the limit is restarted and says why; one that only spikes is not.

use crate::harness::{python, wait_for, Stack};

#[test]
fn a_process_that_stays_over_memory_max_is_restarted_and_says_why() {
    let s = Stack::new(&format!(
        r#"
[service.hog]
command = ["{py}", "hog.py"]
memory_max = "40MB"
"#,
        py = python()
    ));
    // Holds 80 MB on its first run only, so the restart settles.
    s.write(
        "hog.py",
        "import os, time\nif not os.path.exists('ran-once'):\n    open('ran-once', 'w').close()\n    held = bytearray(b'x' * (80 << 20))\nopen('pid.%d' % os.getpid(), 'w').close()\ntime.sleep(300)\n",
    );
    s.run(&["start"]).success();
    let first = s.pid_of("hog").unwrap();
    wait_for("hog to be restarted", 60, || {
        s.process_status("hog").is_some_and(|p| {
            p["restarts"] == 1 && p["state"] == "running" && p["pid"].as_i64() != Some(first as i64)
        })
    });
    let p = s.process_status("hog").unwrap();
    let msg = p["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.starts_with("restarted after: memory ") && msg.contains("over memory_max 40.0MB"),
        "{p}"
    );
    let log = s.read("logs/stackctl.log");
    assert!(
        log.contains("over memory_max 40.0MB for 3 checks in a row (3s): stopping it"),
        "{log}"
    );
    let table = s.run(&["status"]);
    assert!(
        table.stdout.contains("restarted after: memory"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_brief_spike_over_memory_max_is_not_a_restart() {
    let s = Stack::new(&format!(
        r#"
[service.spiky]
command = ["{py}", "spiky.py"]
memory_max = "40MB"
"#,
        py = python()
    ));
    // 80 MB for a third of a second, then small for five seconds (more than
    // the three checks a restart needs), then says so.
    s.write(
        "spiky.py",
        "import time\nheld = bytearray(b'x' * (80 << 20))\ntime.sleep(0.3)\ndel held\nopen('spiked', 'w').close()\ntime.sleep(5)\nopen('calm', 'w').close()\ntime.sleep(300)\n",
    );
    s.run(&["start"]).success();
    let pid = s.pid_of("spiky").unwrap();
    wait_for("the spike and five calm seconds", 60, || {
        s.path().join("calm").exists()
    });
    let p = s.process_status("spiky").unwrap();
    assert_eq!(p["restarts"], 0, "{p}\n{}", s.dump());
    assert_eq!(p["pid"].as_i64(), Some(pid as i64));
    assert!(!s.read("logs/stackctl.log").contains("over memory_max"));
}
