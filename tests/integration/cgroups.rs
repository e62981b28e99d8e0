//! The stack's cgroup tree, where this machine lets stackctl make one, and
//! the `/proc` scan it falls back to (always tested, with
//! `STACKCTL_CGROUP=off`). Each test says which path it checked.

use crate::harness::*;

/// Kills `pid` when dropped: a process that cleared its environment
/// carries no test marker, so the fixture's cleanup cannot find it.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            kill(self.0, 9);
        }
    }
}

/// The tree the stack's record names, if it has one.
fn tree_of(s: &Stack) -> Option<std::path::PathBuf> {
    std::fs::read_to_string(s.state("cgroup"))
        .ok()
        .map(|t| std::path::PathBuf::from(t.trim()))
}

/// The cgroup path of `pid` (`0::/…`, the v2 line of `/proc/<pid>/cgroup`).
fn cgroup_of(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

const ESCAPER: &str = r#"
[service.esc]
command = "setsid env -i sleep 1000 & echo $! > escaped.pid; echo $$$$ > leader.pid; exec sleep 1000"
"#;

#[test]
fn a_descendant_that_left_its_session_and_cleared_its_environment_is_stopped_with_the_tree() {
    let s = Stack::new(ESCAPER);
    s.run(&["start"]).success();
    let leader = s.wait_pid_file("leader.pid", 30);
    let escaped = s.wait_pid_file("escaped.pid", 30);
    let _guard = KillOnDrop(escaped);
    wait_for("the escapee to leave the session", 30, || {
        session_of(escaped).is_some_and(|sid| Some(sid) != session_of(leader))
    });
    match tree_of(&s) {
        Some(base) => {
            eprintln!("cgroup path: the tree is {}", base.display());
            let inc = base.join("esc").join(leader.to_string());
            assert!(inc.is_dir(), "no cgroup {}", inc.display());
            let procs = std::fs::read_to_string(inc.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|l| l == escaped.to_string()),
                "the escapee is not in its incarnation's cgroup: {procs}"
            );
            assert!(
                cgroup_of(escaped).is_some_and(|c| c.ends_with(&format!("/esc/{leader}"))),
                "{:?}",
                cgroup_of(escaped)
            );
            s.run(&["stop"]).success();
            assert!(
                !alive(escaped),
                "pid {escaped} cleared its environment and survived stop"
            );
            assert!(!alive(leader));
            // The anchor removes the tree once the stack is down.
            wait_for("the tree to be removed", 30, || !base.exists());
            let log = s.read("logs/stackctl.log");
            assert!(log.contains(&format!("stopped pid {escaped}")), "{log}");
        }
        None => {
            eprintln!(
                "fallback path: no writable cgroup2 here, the escapee is the documented limit"
            );
            s.run(&["stop"]).success();
            assert!(!alive(leader));
            assert!(
                alive(escaped),
                "without a cgroup, nothing can find a process that cleared its environment"
            );
        }
    }
}

#[test]
fn with_cgroups_off_strays_are_found_by_their_environment() {
    let s = Stack::new(
        r#"
[service.leaky]
command = "setsid sleep 1000 & echo $! > escaped.pid; echo $$$$ > leader.pid; exec sleep 1000"
"#,
    );
    s.run_env(&["start"], &[("STACKCTL_CGROUP", Some("off"))])
        .success();
    eprintln!("fallback path: STACKCTL_CGROUP=off");
    let leader = s.wait_pid_file("leader.pid", 30);
    let escaped = s.wait_pid_file("escaped.pid", 30);
    wait_for("the escapee to leave the session", 30, || {
        session_of(escaped).is_some_and(|sid| Some(sid) != session_of(leader))
    });
    assert_eq!(tree_of(&s), None, "cgroups are off, yet a tree is recorded");
    let log = s.read("logs/stackctl.log");
    assert!(log.contains("STACKCTL_CGROUP=off"), "{log}");
    // A restart sweeps the old incarnation's stray by its mark.
    s.run(&["restart", "leaky"]).success();
    wait_for("the first escapee to be stopped by the restart", 30, || {
        !alive(escaped)
    });
    let second = s.wait_pid_file("escaped.pid", 30);
    wait_for("a second escapee", 30, || {
        second != escaped && alive(second)
    });
    s.run(&["stop"]).success();
    assert!(!alive(second), "pid {second} survived stop");
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

#[test]
fn each_incarnation_has_its_own_cgroup_removed_once_it_is_empty() {
    let s = Stack::new(
        r#"
[service.victim]
command = ["sleep", "1000"]
restart = "always"

[task.once]
command = "true"
"#,
    );
    s.run(&["start"]).success();
    let first = s.pid_of("victim").unwrap();
    let Some(base) = tree_of(&s) else {
        eprintln!("fallback path: no writable cgroup2 here; checked a restart without a tree");
        kill(first, 9);
        wait_for("the victim to be restarted", 30, || {
            s.pid_of("victim").is_some_and(|p| p != first)
        });
        assert_eq!(tree_of(&s), None);
        return;
    };
    eprintln!("cgroup path: the tree is {}", base.display());
    let old = base.join("victim").join(first.to_string());
    assert!(old.is_dir(), "{}", old.display());
    // A task that ended: its cgroup and its instance's folder are gone.
    wait_for("the finished task's folder to be removed", 30, || {
        !base.join("once").exists()
    });
    kill(first, 9);
    wait_for("the victim to be restarted", 30, || {
        s.pid_of("victim").is_some_and(|p| p != first)
    });
    let second = s.pid_of("victim").unwrap();
    wait_for("the old incarnation's cgroup to be removed", 30, || {
        !old.exists()
    });
    assert!(base.join("victim").join(second.to_string()).is_dir());
    s.run(&["stop"]).success();
    wait_for("the tree to be removed", 30, || !base.exists());
}
