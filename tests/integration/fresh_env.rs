//! Tests: a fresh environment when asked (issue 18 item 4) through the
//! real binary: `restart` reads env files again, `--update-env` takes the
//! caller's environment (naming variables, never their values), `status
//! --json` says each process's generation, and a supervisor the anchor
//! relaunches keeps the environment it was given.

use crate::harness::{env_of, wait_for, Stack};

fn generation(s: &Stack, name: &str) -> Option<u64> {
    s.process_status(name)?["env_generation"].as_u64()
}

const STACK: &str = r#"
[service.api]
command = "sleep 300"
env_file = ["api.env"]

[service.web]
command = "sleep 300"
"#;

#[test]
fn restart_reads_the_env_files_again_and_status_says_the_generation() {
    let s = Stack::new(STACK);
    s.write("api.env", "PORT=8001\n");
    s.run(&["start"]).success();
    let pid = s.pid_of("api").unwrap();
    assert_eq!(env_of(pid, "PORT").as_deref(), Some("8001"));
    assert_eq!(generation(&s, "api"), Some(1));
    s.write("api.env", "PORT=8002\n");
    let r = s.run(&["restart", "api"]);
    r.success();
    assert!(
        r.stdout.contains("environment generation 2"),
        "{}",
        r.stdout
    );
    let pid = s.pid_of("api").unwrap();
    assert_eq!(env_of(pid, "PORT").as_deref(), Some("8002"));
    assert_eq!(generation(&s, "api"), Some(2));
    // What was not restarted runs with what it had.
    assert_eq!(generation(&s, "web"), Some(1));
    // A broken env file refuses the restart and changes nothing.
    std::fs::remove_file(s.path().join("api.env")).unwrap();
    let r = s.run(&["restart", "api"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("env file `api.env` does not exist"),
        "{}",
        r.stderr
    );
    assert_eq!(s.pid_of("api"), Some(pid));
}

#[test]
fn update_env_gives_what_it_restarts_the_callers_environment_and_it_outlives_the_supervisor() {
    let s = Stack::new(STACK);
    s.write("api.env", "PORT=8001\n");
    s.run(&["start"]).success();
    let secret = "value-that-must-never-show";
    let r = s.run_env(
        &["restart", "--update-env", "api"],
        &[("API_TOKEN", Some(secret))],
    );
    r.success();
    assert!(
        r.stdout
            .contains("environment generation 2; from the caller's environment: added API_TOKEN"),
        "{}",
        r.stdout
    );
    let pid = s.pid_of("api").unwrap();
    assert_eq!(env_of(pid, "API_TOKEN").as_deref(), Some(secret));
    assert_eq!(generation(&s, "api"), Some(2));
    assert_eq!(generation(&s, "web"), Some(1));
    // The supervisor dies; the one the anchor launches keeps the base.
    let old = s.supervisor_pid().unwrap();
    crate::harness::kill(old, 9);
    wait_for("a new supervisor", 60, || {
        s.supervisor_pid().is_some_and(|p| p != old)
    });
    assert_eq!(generation(&s, "api"), Some(2));
    s.run(&["restart", "web"]).success();
    let web = s.pid_of("web").unwrap();
    assert_eq!(env_of(web, "API_TOKEN").as_deref(), Some(secret));
    // The value is in no output and no log.
    assert!(!r.stderr.contains(secret));
    for log in ["logs/stackctl.log", "logs/api.log", "logs/web.log"] {
        assert!(!s.read(log).contains(secret), "{log}");
    }
}

#[test]
fn start_update_env_satisfies_require_env_for_what_it_starts() {
    let s = Stack::new(
        r#"
[service.api]
command = "sleep 300"

[service.billing]
command = "sleep 300"
require_env = ["BILLING_KEY"]
"#,
    );
    s.run_env(&["start", "api"], &[("BILLING_KEY", None)])
        .success();
    let r = s.run_env(&["start", "billing"], &[("BILLING_KEY", Some("k-1"))]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("BILLING_KEY (required by billing)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--update-env"), "{}", r.stderr);
    let r = s.run_env(
        &["start", "--update-env", "billing"],
        &[("BILLING_KEY", Some("k-1"))],
    );
    r.success();
    let pid = s.pid_of("billing").unwrap();
    assert_eq!(env_of(pid, "BILLING_KEY").as_deref(), Some("k-1"));
    assert_eq!(generation(&s, "billing"), Some(2));
    assert_eq!(generation(&s, "api"), Some(1));
}
