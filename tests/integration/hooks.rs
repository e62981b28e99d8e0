//! Tests: failure hooks (`on_failure`, issue 18 item 1) through the real
//! binary: what a hook is told, a hook killed whole at its timeout, a hook
//! that fails, and hooks on each unexpected exit.

use crate::harness::{alive, wait_for, Stack};

/// The `KEY=value` lines of an env dump a hook wrote.
fn env_lines(s: &Stack, rel: &str) -> Vec<String> {
    s.read(rel).lines().map(str::to_string).collect()
}

fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    lines.iter().find_map(|l| l.strip_prefix(&prefix))
}

/// A hook that dumps its environment to `hook-<process>-<event>.env`
/// (written whole, then renamed).
const DUMP: &str = "env > .hook.$STACKCTL_PROCESS.tmp && mv .hook.$STACKCTL_PROCESS.tmp hook-$STACKCTL_PROCESS-$STACKCTL_EVENT.env";

#[test]
fn a_hook_is_told_what_failed_and_never_gets_the_processs_own_variables() {
    let s = Stack::new(&format!(
        r#"
[stack]
on_failure = "{DUMP}"

[env]
SHARED_SECRET = "stack-secret-value"

[task.migrate]
command = "echo migrating; exit 3"
env = {{ OWN_SECRET = "own-secret-value" }}
"#
    ));
    let r = s.run(&["start"]);
    r.expect_code(1);
    wait_for("the hook's dump", 30, || {
        s.path().join("hook-migrate-failed.env").exists()
    });
    let env = env_lines(&s, "hook-migrate-failed.env");
    assert_eq!(value(&env, "STACKCTL_EVENT"), Some("failed"));
    assert_eq!(value(&env, "STACKCTL_PROCESS"), Some("migrate"));
    assert_eq!(value(&env, "STACKCTL_STATE"), Some("failed"));
    assert_eq!(value(&env, "STACKCTL_REASON"), Some("exited with code 3"));
    assert_eq!(value(&env, "STACKCTL_EXIT_CODE"), Some("3"));
    assert_eq!(value(&env, "STACKCTL_RESTARTS"), Some("0"));
    let log = s.state("migrate.log").display().to_string();
    assert_eq!(value(&env, "STACKCTL_LOG"), Some(log.as_str()));
    assert!(value(&env, "STACKCTL_STACK").is_some_and(|v| !v.is_empty()));
    // Only what a program needs of stackctl's environment (PATH, HOME…):
    // not the rest of it (the test's marker), not [env], not the process's
    // own env, and no stack mark (a stop never takes a hook for a stray).
    assert!(value(&env, "PATH").is_some());
    assert_eq!(value(&env, "SCTL_TEST_MARKER"), None);
    for secret in ["stack-secret-value", "own-secret-value"] {
        assert!(
            !env.iter().any(|l| l.contains(secret)),
            "a process variable reached the hook: {env:?}"
        );
    }
    assert_eq!(value(&env, "STACKCTL_STACK_ID"), None);
    wait_for("the hook's end in stackctl.log", 30, || {
        s.read("logs/stackctl.log")
            .contains("on_failure hook (failed) exited 0")
    });
}

#[test]
fn a_hook_runs_on_each_unexpected_exit_when_asked_and_once_on_the_crash_loop() {
    let s = Stack::new(&format!(
        r#"
[service.flaky]
command = "exit 1"
max_restarts = 2
on_failure = "{DUMP}"
on_failure_exits = true
"#
    ));
    s.run(&["start"]).success();
    wait_for("flaky to crash-loop", 60, || {
        s.process_status("flaky")
            .is_some_and(|p| p["state"] == "failed")
    });
    wait_for("the failed hook", 30, || {
        s.path().join("hook-flaky-failed.env").exists()
    });
    let failed = env_lines(&s, "hook-flaky-failed.env");
    assert!(
        value(&failed, "STACKCTL_REASON").is_some_and(|r| r.starts_with("crash loop:")),
        "{failed:?}"
    );
    assert_eq!(value(&failed, "STACKCTL_STATE"), Some("failed"));
    // The first exit always gets its hook (nothing else was running).
    assert!(
        s.path().join("hook-flaky-exit.env").exists(),
        "{}",
        s.dump()
    );
    let exit = env_lines(&s, "hook-flaky-exit.env");
    assert_eq!(value(&exit, "STACKCTL_EVENT"), Some("exit"));
    assert_eq!(value(&exit, "STACKCTL_STATE"), Some("backoff"));
    assert_eq!(value(&exit, "STACKCTL_EXIT_CODE"), Some("1"));
    assert_eq!(value(&exit, "STACKCTL_REASON"), Some("exited with code 1"));
}

#[test]
fn a_hanging_hook_is_killed_with_its_whole_group_at_its_timeout() {
    let s = Stack::new(
        r#"
[stack]
on_failure = "./hook.sh"
on_failure_timeout = "1s"

[task.migrate]
command = "exit 2"
"#,
    );
    s.write(
        "hook.sh",
        "#!/bin/sh\nsleep 300 &\necho $! > hook-child.pid\necho $$ > hook.pid\nwait\n",
    );
    s.run(&["start"]).expect_code(1);
    let hook = s.wait_pid_file("hook.pid", 30);
    let child = s.wait_pid_file("hook-child.pid", 30);
    // A hook is not marked as the test's: kill what is left if this fails.
    let _cleanup = KillOnDrop(vec![hook, child]);
    wait_for("the hook and its child to be killed", 30, || {
        !alive(hook) && !alive(child)
    });
    wait_for("the timeout in stackctl.log", 30, || {
        s.read("logs/stackctl.log").contains(
            "on_failure hook (failed) failed: still running after its timeout of 1s; its process group was killed",
        )
    });
}

/// Kills these pids when dropped (a hook does not carry the fixture's
/// marker, so the fixture's own cleanup cannot find it).
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            if alive(*p) {
                crate::harness::kill(*p, 9);
            }
        }
    }
}

#[test]
fn a_failing_hook_is_logged_and_changes_nothing() {
    let s = Stack::new(
        r#"
[task.migrate]
command = "exit 3"
on_failure = ["sh", "-c", "echo hook for ${STACKCTL_PROCESS} ran; exit 4"]
"#,
    );
    s.run(&["start"]).expect_code(1);
    wait_for("the hook's failure in stackctl.log", 30, || {
        s.read("logs/stackctl.log")
            .contains("on_failure hook (failed) failed: it exited 4")
    });
    let log = s.read("logs/stackctl.log");
    assert!(
        log.contains("on_failure hook: hook for migrate ran"),
        "{log}"
    );
    let p = s.process_status("migrate").unwrap();
    assert_eq!(p["state"], "failed");
    assert_eq!(p["message"], "exited with code 3");
    // The hook has no hook of its own, and ran once.
    assert_eq!(
        log.matches("on_failure hook (failed): running").count(),
        1,
        "{log}"
    );
}
