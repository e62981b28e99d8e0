//! The anchor's spawns: each forked and answered once its `exec` is done,
//! from the anchor's poll loop, which goes on serving meanwhile (other
//! spawns, every pipe, exits). A spawn is held before its `exec` by
//! freezing the instance's cgroup (`cgroup.freeze`), where the stack has a
//! tree; each test says which path it checked.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::harness::*;

/// The tree the stack's record names, if it has one.
fn tree_of(s: &Stack) -> Option<PathBuf> {
    std::fs::read_to_string(s.state("cgroup"))
        .ok()
        .map(|t| PathBuf::from(t.trim()))
}

fn procs(cg: &Path) -> Vec<i32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A frozen cgroup, thawed when dropped (a test that fails leaves nothing
/// frozen that its cleanup could not stop).
struct Frozen(PathBuf);

impl Frozen {
    /// Makes `cg` (it may exist) and freezes it; `None` where this cgroup
    /// has no freezer.
    fn new(cg: PathBuf) -> Option<Frozen> {
        let _ = std::fs::create_dir(&cg);
        std::fs::write(cg.join("cgroup.freeze"), "1").ok()?;
        Some(Frozen(cg))
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// `stackctl args…` started, not waited for; killed when dropped.
struct Running(Child);

impl Running {
    fn start(s: &Stack, args: &[&str]) -> Running {
        let child = s
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stackctl");
        Running(child)
    }

    /// Waits (bounded) for it to end; its exit code and output.
    fn finish(mut self, secs: u64) -> (Option<i32>, String) {
        let mut code = None;
        wait_for("the command to return", secs, || {
            code = self.0.try_wait().ok().flatten().map(|s| s.code());
            code.is_some()
        });
        let mut out = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        if let Some(mut e) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut out);
        }
        (code.flatten(), out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The children of `pid` and their states (`/proc/*/stat`).
fn children_of(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|pp| pp.parse::<i32>().ok()) == Some(pid) {
            out.push((p, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// The lines of `instance`'s log.
fn log_lines(s: &Stack, instance: &str) -> Vec<String> {
    s.read(&format!("logs/{instance}.log"))
        .lines()
        .map(str::to_string)
        .collect()
}

const GHOSTS: &str = r#"
[service.ghost]
command = ["./not-a-program.txt"]

[service.real]
command = ["sleep", "1000"]
"#;

/// Either path (a cgroup tree or none): an `exec` that fails after the
/// fork is a failed start that says why, and leaves no child of the
/// anchor behind (reaped, not a zombie), its neighbour running.
fn a_program_that_cannot_run(env: &[(&str, Option<&str>)]) {
    let s = Stack::new(GHOSTS);
    s.write("not-a-program.txt", "not executable\n");
    let out = s.run_env(&["start"], env);
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("Permission denied"), "{out:?}");
    assert!(text.contains("ghost"), "{out:?}");
    let real = s.pid_of("real").expect("real runs");
    let anchor = s.anchor_pid().expect("an anchor");
    let sup = s.supervisor_pid().expect("a supervisor");
    wait_for("the failed child to be reaped", 30, || {
        children_of(anchor)
            .iter()
            .all(|(p, st)| (*p == real || *p == sup) && *st != 'Z')
    });
    assert_eq!(s.status_of("ghost")["state"], "failed", "{}", s.dump());
    s.run(&["stop"]).success();
    assert!(!alive(real));
}

#[test]
fn an_exec_that_fails_in_the_cgroup_tree_is_a_failed_start_and_leaves_nothing() {
    a_program_that_cannot_run(&[]);
}

#[test]
fn an_exec_that_fails_without_a_cgroup_tree_is_a_failed_start_and_leaves_nothing() {
    eprintln!("fallback path: STACKCTL_CGROUP=off");
    a_program_that_cannot_run(&[("STACKCTL_CGROUP", Some("off"))]);
}

#[test]
fn many_spawns_at_once_each_get_their_own_pid_pid_file_and_a_log_that_begins_with_its_marker() {
    const N: usize = 40;
    let s = Stack::new(&format!(
        r#"
[service.worker]
command = "echo hello from $$$$; exec sleep 1000"
replicas = {N}
"#
    ));
    s.run(&["start"]).success();
    let mut pids = std::collections::BTreeSet::new();
    for n in 1..=N {
        let name = format!("worker.{n}");
        let pid = s
            .pid_of(&name)
            .unwrap_or_else(|| panic!("{name}: {}", s.dump()));
        assert!(pids.insert(pid), "{name} has pid {pid} twice");
        // Its pid file, with the start time /proc gives.
        let file = s.read(&format!("logs/pids/{name}.pid"));
        assert_eq!(file.trim(), pid.to_string(), "{name}");
        let id: serde_json::Value =
            serde_json::from_str(&s.read(&format!("logs/pids/{name}.id"))).unwrap();
        let ticks = start_ticks(pid);
        assert_eq!(id["start_ticks"], ticks, "{name}: {id}");
        assert_eq!(id["pgid"], pid, "{name}: {id}");
        // The marker first, its own output after it.
        wait_for(&format!("{name}'s line in its log"), 30, || {
            log_lines(&s, &name).len() >= 2
        });
        let lines = log_lines(&s, &name);
        assert!(
            lines[0].contains(&format!("{name} started, pid {pid} (attempt 1)")),
            "{name}: {lines:?}"
        );
        assert_eq!(lines[1], format!("hello from {pid}"), "{name}: {lines:?}");
    }
    s.run(&["stop"]).success();
    assert!(pids.iter().all(|p| !alive(*p)));
}

const CHATTY_AND_SLOW: &str = r#"
[service.chatty]
command = "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.02; done"

[service.slow]
command = "echo slow up; exec sleep 1000"
"#;

/// Starts `chatty`, then `slow` with its cgroup frozen, so that its spawn
/// is forked and held before its `exec`; `None` (said) where the stack
/// has no tree or the cgroup no freezer.
fn slow_spawn(s: &Stack) -> Option<(Frozen, Running, i32)> {
    s.run(&["start", "chatty"]).success();
    let Some(base) = tree_of(s) else {
        eprintln!("no writable cgroup2 here: nothing can hold a spawn before its exec");
        return None;
    };
    let Some(frozen) = Frozen::new(base.join("slow")) else {
        eprintln!("no freezer in {}: nothing can hold a spawn", base.display());
        return None;
    };
    eprintln!("cgroup path: {} frozen", frozen.0.display());
    let start = Running::start(s, &["start", "slow"]);
    let mut held = None;
    wait_for(
        "slow's spawn to be forked into its frozen cgroup",
        30,
        || {
            held = procs(&frozen.0).first().copied();
            held.is_some()
        },
    );
    Some((frozen, start, held.unwrap_or_default()))
}

#[test]
fn the_anchor_drains_every_pipe_and_answers_while_an_exec_waits() {
    let s = Stack::new(CHATTY_AND_SLOW);
    let Some((frozen, start, held)) = slow_spawn(&s) else {
        s.run(&["stop"]).success();
        return;
    };
    // The spawn waits before its exec, and the anchor goes on: chatty's
    // lines keep reaching its log, and status answers.
    let before = log_lines(&s, "chatty").len();
    wait_for("chatty's log to grow while slow's exec waits", 30, || {
        log_lines(&s, "chatty").len() >= before + 10
    });
    assert_eq!(procs(&frozen.0), [held], "the spawn is still held");
    assert_eq!(s.status_of("slow")["state"], "starting", "{}", s.dump());
    assert!(
        log_lines(&s, "slow").is_empty(),
        "{:?}",
        log_lines(&s, "slow")
    );
    frozen.thaw();
    let (code, out) = start.finish(60);
    assert_eq!(code, Some(0), "{out}\n{}", s.dump());
    assert_eq!(s.pid_of("slow"), Some(held));
    wait_for("slow's line in its log", 30, || {
        log_lines(&s, "slow").len() >= 2
    });
    let lines = log_lines(&s, "slow");
    assert!(
        lines[0].contains(&format!("slow started, pid {held} (attempt 1)")),
        "{lines:?}"
    );
    assert_eq!(lines[1], "slow up", "{lines:?}");
    s.run(&["stop"]).success();
    assert!(!alive(held));
}

#[test]
fn a_spawn_whose_supervisor_died_before_its_exec_is_the_next_supervisors() {
    let s = Stack::new(CHATTY_AND_SLOW);
    let Some((frozen, start, held)) = slow_spawn(&s) else {
        s.run(&["stop"]).success();
        return;
    };
    let old = s.supervisor_pid().expect("a supervisor");
    kill(old, 9);
    wait_for("the supervisor to die", 30, || fully_dead(old));
    // The next supervisor's inventory waits for that spawn; the anchor
    // goes on meanwhile.
    let before = log_lines(&s, "chatty").len();
    wait_for("chatty's log to grow while the spawn waits", 30, || {
        log_lines(&s, "chatty").len() >= before + 10
    });
    frozen.thaw();
    drop(start);
    wait_for("a new supervisor to answer", 30, || {
        s.supervisor_pid().is_some_and(|p| p != old)
    });
    // The process the dead supervisor asked for is taken up, not lost.
    wait_for("slow to run with the pid it was forked with", 30, || {
        s.pid_of("slow") == Some(held)
    });
    assert!(alive(held));
    s.run(&["stop"]).success();
    assert!(!alive(held), "{}", s.dump());
}
