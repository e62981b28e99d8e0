//! Tests: stopping a dependency says what it leaves (issue 18 item 5),
//! and `stop --with-dependents` stops the dependents first.

use crate::harness::Stack;

const STACK: &str = r#"
[service.db]
command = "sleep 300"

[service.api]
command = "sleep 300"
depends_on = ["db"]

[service.worker]
command = "sleep 300"
depends_on = ["api"]

[service.web]
command = "sleep 300"
"#;

fn state(s: &Stack, name: &str) -> String {
    s.process_status(name).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn stopping_a_dependency_says_what_keeps_running() {
    let s = Stack::new(STACK);
    s.run(&["start"]).success();
    let r = s.run(&["stop", "db"]);
    r.success();
    for (name, line) in [
        ("api", "still running: it depends on db, which was stopped (`stackctl stop --with-dependents db` stops it too)"),
        ("worker", "still running: it depends on db, which was stopped (`stackctl stop --with-dependents db` stops it too)"),
    ] {
        assert!(
            r.stdout.lines().any(|l| l.contains(name) && l.contains(line)),
            "{name}: {}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains("web"), "{}", r.stdout);
    assert_eq!(state(&s, "db"), "stopped");
    assert_eq!(state(&s, "api"), "running");
    assert_eq!(state(&s, "worker"), "running");
}

#[test]
fn with_dependents_stops_them_first_in_order() {
    let s = Stack::new(STACK);
    s.run(&["start"]).success();
    let r = s.run(&["stop", "--with-dependents", "db"]);
    r.success();
    let at = |name: &str| {
        r.stdout
            .lines()
            .position(|l| l.contains(&format!(" {name} ")) && l.contains("stopped in"))
            .unwrap_or_else(|| panic!("{name} not stopped: {}", r.stdout))
    };
    assert!(at("worker") < at("api"), "{}", r.stdout);
    assert!(at("api") < at("db"), "{}", r.stdout);
    assert!(!r.stdout.contains("still running"), "{}", r.stdout);
    for name in ["db", "api", "worker"] {
        assert_eq!(state(&s, name), "stopped");
    }
    assert_eq!(state(&s, "web"), "running");
}
