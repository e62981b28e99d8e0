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
            let cg = base.join("esc");
            assert!(cg.is_dir(), "no cgroup {}", cg.display());
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|l| l == escaped.to_string()),
                "the escapee is not in its instance's cgroup: {procs}"
            );
            assert!(
                cgroup_of(escaped).is_some_and(|c| c.ends_with("/esc")),
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
    // (Ready when spawned: the new incarnation may not have written its
    // escapee's pid yet; read the file until it has.)
    let mut second = escaped;
    wait_for("a second escapee", 30, || {
        second = s.read("escaped.pid").trim().parse().unwrap_or(escaped);
        second != escaped && alive(second)
    });
    s.run(&["stop"]).success();
    assert!(!alive(second), "pid {second} survived stop");
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

/// The members of the cgroup `dir`.
fn procs(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[test]
fn each_instance_has_a_cgroup_its_restarts_are_forked_into_removed_once_it_is_empty() {
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
    let cg = base.join("victim");
    assert_eq!(procs(&cg), [first], "{}", cg.display());
    // A task that ended: its cgroup is gone.
    wait_for("the finished task's cgroup to be removed", 30, || {
        !base.join("once").exists()
    });
    kill(first, 9);
    wait_for("the victim to be restarted", 30, || {
        s.pid_of("victim").is_some_and(|p| p != first)
    });
    let second = s.pid_of("victim").unwrap();
    // Forked straight into it: the new process is there from its start.
    wait_for("the new incarnation alone in the cgroup", 30, || {
        procs(&cg) == [second]
    });
    assert_eq!(
        tree_of(&s).as_ref(),
        Some(&base),
        "the promise was withdrawn"
    );
    s.run(&["stop"]).success();
    wait_for("the tree to be removed", 30, || !base.exists());
}

/// Runs the rest of its command line with `clone3` refused (`ENOSYS`, as
/// Docker's default seccomp profile does): a real kernel filter, inherited
/// by everything the command starts.
const NO_CLONE3: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
NR_CLONE3 = 435  # the same on every architecture with the generic table
prog = b"".join([
    struct.pack("HBBI", 0x20, 0, 0, 0),                   # load the syscall nr
    struct.pack("HBBI", 0x15, 0, 1, NR_CLONE3),           # clone3?
    struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | 38),     # errno ENOSYS
    struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000),          # allow
])
buf = ctypes.create_string_buffer(prog, len(prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
    sys.exit("cannot install the seccomp filter: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
"#;

#[test]
fn where_the_kernel_refuses_to_fork_into_a_cgroup_processes_run_and_strays_are_found_by_their_environment(
) {
    let s = Stack::new(
        r#"
[service.leaky]
command = "setsid sleep 1000 & echo $! > escaped.pid; echo $$$$ > leader.pid; exec sleep 1000"
restart = "always"
"#,
    );
    let wrapper = s.write("no-clone3.py", NO_CLONE3);
    let out = s
        .cmd_of(
            std::path::Path::new(&python()),
            &[wrapper.to_str().unwrap(), bin().to_str().unwrap(), "start"],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let leader = s.wait_pid_file("leader.pid", 30);
    let escaped = s.wait_pid_file("escaped.pid", 30);
    wait_for("the escapee to leave the session", 30, || {
        session_of(escaped).is_some_and(|sid| Some(sid) != session_of(leader))
    });
    let log = s.read("logs/stackctl.log");
    if log.contains("no writable cgroup") || log.contains("STACKCTL_CGROUP") {
        eprintln!("fallback path: no tree was promised here at all");
    } else {
        eprintln!("cgroup path refused: clone3 filtered, no tree promised");
        assert!(log.contains("cannot fork into the stack's cgroup"), "{log}");
    }
    assert_eq!(
        tree_of(&s),
        None,
        "a tree is promised, yet a process is outside it"
    );
    // The restart's stop finds the old stray by its mark, and the new
    // process runs (spawned the ordinary way).
    kill(leader, 9);
    wait_for("the first escapee to be stopped by the restart", 30, || {
        !alive(escaped)
    });
    let pid_in = |rel: &str| s.read(rel).trim().parse::<i32>().unwrap_or(0);
    wait_for("a second escapee", 30, || {
        let p = pid_in("escaped.pid");
        p != escaped && alive(p)
    });
    let second = pid_in("escaped.pid");
    s.run(&["stop"]).success();
    assert!(!alive(second), "pid {second} survived stop");
    assert!(s.stack_pids().is_empty(), "{:?}", s.stack_pids());
}

#[test]
fn a_program_that_is_not_there_fails_its_spawn_with_the_reason_and_the_tree_stays() {
    let s = Stack::new(
        r#"
[service.ghost]
command = ["no-such-program-for-stackctl"]

[service.real]
command = ["sleep", "1000"]
"#,
    );
    let out = s.run(&["start"]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stdout.contains("No such file or directory")
            || out.stderr.contains("No such file or directory"),
        "{out:?}"
    );
    let pid = s.pid_of("real").unwrap();
    match tree_of(&s) {
        Some(base) => {
            eprintln!("cgroup path: an exec failure after the fork into the cgroup");
            assert_eq!(procs(&base.join("real")), [pid]);
        }
        None => eprintln!("fallback path: no writable cgroup2 here"),
    }
    s.run(&["stop"]).success();
    assert!(!alive(pid));
}
