//! Tests: the deploy keeper (SPEC "The deploy keeper").
//!
//! Each test makes a bare repository as `origin`, a developer clone that
//! commits and pushes, and turns the fixture's stack folder into a clone of
//! `origin` on `develop`: that folder is the worktree the keeper keeps, and
//! its `stack.toml` is versioned with it. The service `app` appends the
//! `VERSION` it was started from to `logs/started.txt`, so a test sees which
//! commit the running stack comes from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{kill, wait_for, Stack};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=keeper-test",
            "-c",
            "user.email=kt@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=develop",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The stack file for version `version` of the app.
fn stack_toml(version: &str, keeper_extra: &str) -> String {
    format!(
        r#"
[stack]
name = "kt"
stop_timeout = "2s"

[service.app]
command = "echo \"$(cat VERSION)\" >> logs/started.txt; echo up; exec sleep 300"
ready = {{ log = "^up$", timeout = "20s" }}
restart = "never"
health = {{ exec = "true", interval = "1h" }}

[keeper]
branch = "develop"
{keeper_extra}
deploy = ["echo \"built {version} by the {version} stack file\" >> logs/built.txt"]
"#
    )
}

/// origin (bare), a developer clone, and the stack folder as the worktree.
struct Fixture {
    stack: Stack,
    _repos: tempfile::TempDir,
    dev: PathBuf,
    keeper_extra: String,
    keeper: Option<Child>,
}

impl Fixture {
    /// Version v1 committed, pushed and checked out in the stack folder.
    fn new(keeper_extra: &str) -> Fixture {
        let repos = tempfile::Builder::new()
            .prefix("stackctl-keeper-")
            .tempdir()
            .unwrap();
        let origin = repos.path().join("origin.git");
        let dev = repos.path().join("dev");
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "--quiet", "--bare"]);
        git(
            repos.path(),
            &["clone", "--quiet", origin.to_str().unwrap(), "dev"],
        );
        git(&dev, &["checkout", "--quiet", "-B", "develop"]);
        let stack = Stack::new(&stack_toml("v1", keeper_extra));
        let f = Fixture {
            stack,
            _repos: repos,
            dev,
            keeper_extra: keeper_extra.to_string(),
            keeper: None,
        };
        f.commit("v1", &stack_toml("v1", keeper_extra));
        let wt = f.stack.path();
        git(wt, &["init", "--quiet"]);
        git(wt, &["remote", "add", "origin", origin.to_str().unwrap()]);
        git(wt, &["fetch", "--quiet", "origin"]);
        git(
            wt,
            &[
                "checkout",
                "--quiet",
                "-f",
                "-B",
                "develop",
                "origin/develop",
            ],
        );
        assert_eq!(f.stack.read("VERSION").trim(), "v1");
        f
    }

    /// Commits VERSION = `version` and `stack_file` in the developer clone
    /// and pushes it; returns the commit id.
    fn commit(&self, version: &str, stack_file: &str) -> String {
        std::fs::write(self.dev.join("VERSION"), format!("{version}\n")).unwrap();
        std::fs::write(self.dev.join("stack.toml"), stack_file).unwrap();
        std::fs::write(self.dev.join(".gitignore"), "logs/\n").unwrap();
        git(&self.dev, &["add", "-A"]);
        git(&self.dev, &["commit", "--quiet", "-m", version]);
        git(&self.dev, &["push", "--quiet", "origin", "develop"]);
        git(&self.dev, &["rev-parse", "HEAD"])
    }

    /// Pushes v2 (whose stack file says so in its deploy step).
    fn push_v2(&self) -> String {
        self.commit("v2", &stack_toml("v2", &self.keeper_extra))
    }

    fn head(&self) -> String {
        git(self.stack.path(), &["rev-parse", "HEAD"])
    }

    /// Starts `stackctl keep` in the stack folder.
    fn start_keeper(&mut self) {
        let child = self
            .stack
            .cmd(&["keep"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.keeper = Some(child);
    }

    fn keeper_pid(&self) -> i32 {
        self.keeper.as_ref().unwrap().id() as i32
    }

    /// The summary lines of keeper.log.
    fn ticks(&self) -> Vec<String> {
        self.stack
            .read("logs/keeper.log")
            .lines()
            .filter(|l| l.contains(" tick: "))
            .map(str::to_string)
            .collect()
    }

    /// Waits for a tick line containing `what`, returning it.
    #[track_caller]
    fn wait_tick(&self, what: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.ticks().into_iter().find(|l| l.contains(what)) {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "no tick line with {what:?} within {secs}s\n--- keeper.log\n{}\n{}",
                    self.stack.read("logs/keeper.log"),
                    self.stack.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Versions the app was started from, in order.
    fn started(&self) -> Vec<String> {
        self.stack
            .read("logs/started.txt")
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn lock_owner(&self) -> String {
        self.stack
            .run(&["lock", "current"])
            .success()
            .stdout
            .trim()
            .to_string()
    }

    /// SIGTERMs the keeper and waits (bounded) for its exit code.
    fn stop_keeper(&mut self) -> Option<i32> {
        let mut child = self.keeper.take()?;
        kill(child.id() as i32, 15);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the keeper did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut child) = self.keeper.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Then Stack's own drop stops the stack and kills marked strays.
    }
}

#[test]
fn deploys_a_pushed_commit_and_restarts_the_stack_on_it() {
    let mut f = Fixture::new(r#"interval = "1s""#);
    f.stack.run(&["start"]).success();
    assert_eq!(f.started(), ["v1"]);
    let v1_pid = f.stack.pid_of("app").unwrap();
    f.start_keeper();
    f.wait_tick("nothing to do", 30);

    let v2 = f.push_v2();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&format!("→{}", &v2[..7])), "{line}");
    assert!(line.contains("stack ready"), "{line}");
    assert_eq!(f.head(), v2);
    assert_eq!(f.started(), ["v1", "v2"]);
    // The deploy step came from the stack file as it is at the new head.
    assert_eq!(
        f.stack.read("logs/built.txt").trim(),
        "built v2 by the v2 stack file"
    );
    // Restarted through the supervisor, which still owns it.
    let v2_pid = f.stack.pid_of("app").unwrap();
    assert_ne!(v1_pid, v2_pid);
    f.stack.run(&["status"]).success();
    assert_eq!(f.lock_owner(), "free");
    // Deploy step output is in the keeper log, labelled.
    assert!(
        f.stack.read("logs/keeper.log").contains("  restart| "),
        "{}",
        f.stack.read("logs/keeper.log")
    );
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn stays_idle_without_a_new_commit() {
    let mut f = Fixture::new(r#"interval = "200ms""#);
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    f.start_keeper();
    wait_for("three ticks", 30, || f.ticks().len() >= 3);
    for l in f.ticks() {
        assert!(l.contains("nothing to do"), "{l}");
    }
    assert_eq!(f.started(), ["v1"]);
    assert_eq!(f.stack.pid_of("app"), Some(pid));
    assert_eq!(f.stop_keeper(), Some(0));
    assert_eq!(f.lock_owner(), "free");
}

#[test]
fn defers_to_an_export_and_deploys_once_it_is_released() {
    let mut f = Fixture::new(r#"interval = "1h""#);
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    f.stack
        .run(&["lock", "acquire", "export", "farm-exp-13", "24-cell sweep"])
        .success();
    let v2 = f.push_v2();
    f.start_keeper();
    let line = f.wait_tick("heartbeat", 30);
    assert!(
        line.contains("farm-exp-13") && line.contains("24-cell sweep"),
        "{line}"
    );
    // Nothing was touched: same process, same commit, lock still the export's.
    assert_eq!(f.stack.pid_of("app"), Some(pid));
    assert_ne!(f.head(), v2);
    assert_eq!(f.lock_owner(), "export");

    f.stack.run(&["lock", "release", "farm-exp-13"]).success();
    // With a 1h interval, only the lock change can wake it.
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&v2[..7]), "{line}");
    assert_eq!(f.head(), v2);
    assert_eq!(f.started(), ["v1", "v2"]);
    assert_eq!(f.lock_owner(), "free");
}

#[test]
fn a_manual_trigger_is_acted_on_within_a_second() {
    let mut f = Fixture::new(r#"interval = "1h""#);
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    f.start_keeper();
    f.wait_tick("nothing to do", 30);

    let r = f.stack.run(&["keep", "--trigger"]);
    r.success();
    assert!(r.stdout.contains("triggered"), "{r:?}");
    let t0 = Instant::now();
    // The keeper consumes the trigger file as the tick begins.
    wait_for("the keeper to take the trigger", 5, || {
        !f.stack.state("keeper.trigger").exists()
    });
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );
    let line = f.wait_tick("manual trigger", 60);
    assert!(line.contains("deployed in"), "{line}");
    assert_eq!(f.started(), ["v1", "v1"]);
    assert_ne!(f.stack.pid_of("app"), Some(pid));
    assert_eq!(f.lock_owner(), "free");
}

#[test]
fn a_prereq_down_backs_off_then_deploys_when_it_is_up() {
    let port = crate::harness::free_port();
    let mut f = Fixture::new(&format!(
        "interval = \"1h\"\nprereqs = [{{ tcp = \"127.0.0.1:{port}\" }}]"
    ));
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    let v2 = f.push_v2();
    f.start_keeper();
    let line = f.wait_tick("prereq", 30);
    assert!(
        line.contains(&port.to_string()) && line.contains("down"),
        "{line}"
    );
    assert!(line.contains("nothing restarted"), "{line}");
    assert_eq!(f.stack.pid_of("app"), Some(pid));
    assert_ne!(f.head(), v2);
    assert_eq!(f.lock_owner(), "free");

    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&v2[..7]), "{line}");
    assert_eq!(f.started(), ["v1", "v2"]);
}

#[test]
fn a_failing_deploy_step_is_retried_then_escalated() {
    let extra = r#"interval = "1h"
retries = 1
escalate = "printf '%s|%s|%s' \"$STACKCTL_KEEPER_STEP\" \"$STACKCTL_KEEPER_ATTEMPTS\" \"$STACKCTL_KEEPER_ERROR\" > logs/escalated.txt""#;
    let mut f = Fixture::new(extra);
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    // v2's stack file has a deploy step that fails.
    let broken =
        stack_toml("v2", extra).replace("deploy = [", "deploy = [\"echo boom-from-v2; exit 7\", ");
    let v2 = f.commit("v2", &broken);
    f.start_keeper();
    wait_for("escalate to write its file", 60, || {
        !f.stack.read("logs/escalated.txt").is_empty()
    });
    let esc = f.stack.read("logs/escalated.txt");
    assert!(esc.starts_with("deploy|2|"), "{esc}");
    assert!(esc.contains("exited 7"), "{esc}");
    let ticks = f.wait_tick("giving up", 10);
    assert!(ticks.contains("escalated"), "{ticks}");
    assert_eq!(
        f.ticks()
            .iter()
            .filter(|l| l.contains("deploy failed"))
            .count(),
        2,
        "{:?}",
        f.ticks()
    );
    for l in f.ticks().iter().filter(|l| l.contains("deploy failed")) {
        // The retry still says where it came from, though the worktree moved.
        assert!(l.contains(&format!("→{}", &v2[..7])), "{l}");
    }
    assert!(f.stack.read("logs/keeper.log").contains("boom-from-v2"));
    // Nothing was restarted; the lock is free again.
    assert_eq!(f.stack.pid_of("app"), Some(pid));
    assert_eq!(f.started(), ["v1"]);
    assert_eq!(f.lock_owner(), "free");
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn a_dirty_worktree_is_refused_not_overwritten() {
    let mut f = Fixture::new("interval = \"1h\"\nretries = 0");
    f.stack.run(&["start"]).success();
    f.push_v2();
    std::fs::write(f.stack.path().join("VERSION"), "hand-edited\n").unwrap();
    f.start_keeper();
    let line = f.wait_tick("giving up", 30);
    assert!(
        line.contains("uncommitted changes") && line.contains("VERSION"),
        "{line}"
    );
    assert_eq!(f.stack.read("VERSION"), "hand-edited\n");
    assert_eq!(f.started(), ["v1"]);
    assert_eq!(f.lock_owner(), "free");
}

#[test]
fn sigterm_waits_for_the_deploy_in_progress_then_releases_the_lock() {
    let extra = r#"interval = "1h""#;
    let mut f = Fixture::new(extra);
    f.stack.run(&["start"]).success();
    let slow = stack_toml("v2", extra).replace(
        "deploy = [",
        "deploy = [\"touch logs/deploying; sleep 2\", ",
    );
    let v2 = f.commit("v2", &slow);
    f.start_keeper();
    wait_for("the deploy to begin", 30, || {
        f.stack.state("deploying").exists()
    });
    assert_eq!(f.lock_owner(), "deploy");
    kill(f.keeper_pid(), 15);
    assert_eq!(f.stop_keeper(), Some(0));
    // It finished the deploy before stopping.
    assert!(
        f.ticks().iter().any(|l| l.contains("deployed in")),
        "{:?}",
        f.ticks()
    );
    assert_eq!(f.head(), v2);
    assert_eq!(f.started(), ["v1", "v2"]);
    assert_eq!(f.lock_owner(), "free");
}

#[test]
fn one_keeper_per_stack_and_keep_needs_a_keeper_section() {
    let mut f = Fixture::new(r#"interval = "1h""#);
    f.start_keeper();
    f.wait_tick("tick", 30);
    let r = f.stack.run(&["keep"]);
    r.expect_code(1);
    assert!(r.stderr.contains("already runs"), "{r:?}");

    let s = Stack::new("[service.a]\ncommand = \"sleep 1\"\n");
    let r = s.run(&["keep"]);
    r.expect_code(2);
    assert!(r.stderr.contains("[keeper]"), "{r:?}");
}

#[test]
fn an_unhealthy_watched_service_is_restarted() {
    let mut f = Fixture::new("interval = \"300ms\"\nwatch_health = [\"app\"]");
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    f.start_keeper();
    let line = f.wait_tick("nothing to do", 30);
    assert!(line.contains("watched services ready"), "{line}");

    kill(pid, 9);
    let line = f.wait_tick("app not ready", 30);
    // No new commit: only the watched service is restarted.
    assert!(line.contains("restarted app"), "{line}");
    assert!(!line.contains("deployed in"), "{line}");
    let new = f.stack.pid_of("app");
    assert!(new.is_some() && new != Some(pid), "{new:?}");
    assert_eq!(f.started(), ["v1", "v1"]);
    f.stack.run(&["status"]).success();
}

#[test]
fn keep_tmux_runs_the_keeper_in_a_detached_session() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux is not installed; skipping");
        return;
    }
    let name = format!("kt{}", std::process::id());
    let f = Fixture::new(r#"interval = "1h""#);
    let toml = f
        .stack
        .read("stack.toml")
        .replace("name = \"kt\"", &format!("name = \"{name}\""));
    std::fs::write(f.stack.path().join("stack.toml"), toml).unwrap();
    let session = format!("stackctl-keeper-{name}");
    struct KillSession(String);
    impl Drop for KillSession {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _guard = KillSession(session.clone());
    let r = f.stack.run(&["keep", "--tmux"]);
    r.success();
    assert!(r.stdout.contains(&session), "{r:?}");
    f.wait_tick("nothing to do", 30);
    let has = Command::new("tmux")
        .args(["has-session", "-t", &session])
        .status()
        .unwrap();
    assert!(has.success());
    // A second one is refused while the first runs.
    f.stack.run(&["keep", "--tmux"]).expect_code(1);
    f.stack.run(&["keep", "--trigger"]).success();
    f.wait_tick("manual trigger", 60);
}

#[test]
fn a_retry_redoes_the_deploy_after_the_worktree_moved() {
    let extra = "interval = \"1h\"\nretries = 2";
    let mut f = Fixture::new(extra);
    f.stack.run(&["start"]).success();
    // Fails the first time only.
    let flaky = stack_toml("v2", extra).replace(
        "deploy = [",
        "deploy = [\"test -f logs/once || {{ touch logs/once; exit 1; }}\", ",
    );
    let v2 = f.commit("v2", &flaky.replace("{{", "{").replace("}}", "}"));
    f.start_keeper();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&format!("→{}", &v2[..7])), "{line}");
    let ticks = f.ticks();
    assert!(
        ticks.iter().any(|l| l.contains("attempt 1/3, retrying")),
        "{ticks:?}"
    );
    assert_eq!(f.started(), ["v1", "v2"]);
    assert_eq!(
        f.stack.read("logs/built.txt").trim(),
        "built v2 by the v2 stack file"
    );
    assert_eq!(f.lock_owner(), "free");
}

#[test]
fn a_changed_stack_file_is_what_the_restarted_stack_runs() {
    // The running supervisor read v1's stack file; v2 changes the app's
    // command. After the deploy the app must run v2's command, not v1's.
    let mut f = Fixture::new(r#"interval = "1h""#);
    f.stack.run(&["start"]).success();
    f.start_keeper();
    f.wait_tick("nothing to do", 30);
    let v2 = stack_toml("v2", r#"interval = "1h""#).replace(
        r#"echo \"$(cat VERSION)\" >> logs/started.txt"#,
        r#"echo \"$(cat VERSION) new-command\" >> logs/started.txt"#,
    );
    assert!(v2.contains("new-command"));
    let sha = f.commit("v2", &v2);
    f.stack.run(&["keep", "--trigger"]).success();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&sha[..7]), "{line}");
    assert_eq!(
        f.started().last().map(String::as_str),
        Some("v2 new-command")
    );
    f.stack.run(&["status"]).success();
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn with_no_supervisor_running_the_keeper_starts_the_stack() {
    let mut f = Fixture::new(r#"interval = "1h""#);
    let v2 = f.push_v2();
    f.start_keeper();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&v2[..7]), "{line}");
    assert_eq!(f.started(), ["v2"]);
    assert!(
        f.stack.read("logs/keeper.log").contains("  start| "),
        "{}",
        f.stack.read("logs/keeper.log")
    );
    f.stack.run(&["status"]).success();
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn after_a_failed_restart_the_next_ticks_do_not_claim_nothing_to_do() {
    // v2 updates the worktree, then its app dies at once: the restart fails
    // after the update. The worktree is at the remote head, yet the deploy
    // is not done, and later ticks must say so.
    let extra = "interval = \"300ms\"\nretries = 0";
    let mut f = Fixture::new(extra);
    f.stack.run(&["start"]).success();
    let broken = stack_toml("v2", extra).replace("exec sleep 300", "exit 3");
    let v2 = f.commit("v2", &broken);
    f.start_keeper();
    let line = f.wait_tick("giving up", 60);
    // The app prints `up` then exits: it may pass its gate (then verify
    // fails) or not (then the restart fails); both come after the update.
    assert!(
        line.contains("restart failed") || line.contains("verify failed"),
        "{line}"
    );
    assert_eq!(f.head(), v2);
    let line = f.wait_tick("failed and was escalated", 30);
    assert!(line.contains(&v2[..7]), "{line}");
    let ticks = f.ticks();
    let gave_up = ticks.iter().position(|l| l.contains("giving up")).unwrap();
    assert!(
        ticks[gave_up..]
            .iter()
            .all(|l| !l.contains("nothing to do")),
        "{ticks:#?}"
    );
    assert_eq!(f.lock_owner(), "free");
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn a_lock_left_by_a_killed_keeper_is_taken_back() {
    let mut f = Fixture::new(r#"interval = "1h""#);
    // What a keeper killed with SIGKILL mid-deploy leaves behind.
    f.stack
        .run(&[
            "lock",
            "acquire",
            "deploy",
            "keeper-kt",
            "deploy keeper tick",
        ])
        .success();
    f.start_keeper();
    f.wait_tick("nothing to do", 30);
    assert_eq!(f.lock_owner(), "free");
    // Another deploy task (a person deploying by hand) is waited for.
    f.stack
        .run(&["lock", "acquire", "deploy", "by-hand", "hotfix"])
        .success();
    f.stack.run(&["keep", "--trigger"]).success();
    let line = f.wait_tick("heartbeat", 30);
    assert!(line.contains("by-hand"), "{line}");
    assert_eq!(f.stop_keeper(), Some(0));
    assert!(f
        .stack
        .read("logs/keeper.log")
        .contains("keeper stopped by a signal; it does not hold the lock"));
}

#[test]
fn a_lasting_fetch_failure_is_escalated_once_not_every_tick() {
    let extra = r#"interval = "200ms"
retries = 0
escalate = "echo \"$STACKCTL_KEEPER_STEP\" >> logs/escalations.txt""#;
    let mut f = Fixture::new(extra);
    // The remote goes away: every fetch fails the same way.
    let origin = f._repos.path().join("origin.git");
    std::fs::rename(&origin, f._repos.path().join("moved.git")).unwrap();
    f.start_keeper();
    f.wait_tick("giving up", 30);
    wait_for("four failed ticks", 30, || {
        f.ticks()
            .iter()
            .filter(|l| l.contains("fetch failed"))
            .count()
            >= 4
    });
    assert_eq!(f.stack.read("logs/escalations.txt"), "fetch\n");
    let line = f.wait_tick("not escalating again", 10);
    assert!(line.contains("fetch failed"), "{line}");

    // Back: the next tick succeeds, and a new failure escalates again.
    std::fs::rename(f._repos.path().join("moved.git"), &origin).unwrap();
    f.wait_tick("nothing to do", 30);
    std::fs::rename(&origin, f._repos.path().join("moved.git")).unwrap();
    wait_for("a second escalation", 30, || {
        f.stack.read("logs/escalations.txt") == "fetch\nfetch\n"
    });
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn keep_trigger_works_even_when_the_local_stack_file_is_broken() {
    let f = Fixture::new(r#"interval = "1h""#);
    let good = f.stack.read("stack.toml");
    std::fs::write(
        f.stack.path().join("stack.toml"),
        good.replace("[keeper]", "[keeper]\nbogus_key = 1"),
    )
    .unwrap();
    let r = f.stack.run(&["keep", "--trigger"]);
    r.success();
    assert!(r.stderr.contains("does not validate"), "{r:?}");
    assert!(f.stack.state("keeper.trigger").exists());
    // The loop itself refuses a broken stack file (exit 2).
    f.stack.run(&["keep"]).expect_code(2);
}
