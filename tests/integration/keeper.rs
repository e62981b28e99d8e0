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
    /// The stack file of a version: `make(version, keeper_extra)`.
    make: fn(&str, &str) -> String,
    keeper: Option<Child>,
}

impl Fixture {
    /// Version v1 committed, pushed and checked out in the stack folder.
    fn new(keeper_extra: &str) -> Fixture {
        Fixture::with(stack_toml, keeper_extra)
    }

    /// Like [`Fixture::new`], with the stack files `make` writes.
    fn with(make: fn(&str, &str) -> String, keeper_extra: &str) -> Fixture {
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
        let stack = Stack::new(&make("v1", keeper_extra));
        let f = Fixture {
            stack,
            _repos: repos,
            dev,
            keeper_extra: keeper_extra.to_string(),
            make,
            keeper: None,
        };
        f.commit("v1", &make("v1", keeper_extra));
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
        self.push("v2")
    }

    /// Pushes `version` of the fixture's stack file.
    fn push(&self, version: &str) -> String {
        self.commit(version, &(self.make)(version, &self.keeper_extra))
    }

    /// How many tick lines contain `what`.
    fn count(&self, what: &str) -> usize {
        self.ticks().iter().filter(|l| l.contains(what)).count()
    }

    /// The lines of a file the stack writes (under the stack folder).
    fn lines(&self, rel: &str) -> Vec<String> {
        self.stack.read(rel).lines().map(str::to_string).collect()
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
    // It says that a new commit waits for the export to end.
    assert!(
        line.contains("a new commit is waiting to be deployed")
            && line.contains(&format!("→{}", &v2[..7])),
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

/// With an hour between ticks, a watched service that goes down is still
/// restarted within seconds: the keeper hears it from the supervisor's
/// status stream, not at its next tick.
#[test]
fn a_watched_service_going_down_wakes_the_keeper_at_once() {
    let mut f = Fixture::new("interval = \"1h\"\nwatch_health = [\"app\"]");
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    f.start_keeper();
    f.wait_tick("nothing to do", 30);
    kill(pid, 9);
    // Well before the hour: woken by the stream.
    let line = f.wait_tick("app not ready", 30);
    assert!(line.contains("restarted app"), "{line}");
    let new = f.stack.pid_of("app");
    assert!(new.is_some() && new != Some(pid), "{new:?}");
    assert_eq!(f.started(), ["v1", "v1"]);
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

/// A stack with an infra service (`redis`: must keep its pid), a task that
/// must re-run (`migrate`), the app and a pool (`worker`: must roll).
/// `[keeper] restart` names what follows the code.
fn app_stack(version: &str, keeper_extra: &str) -> String {
    format!(
        r#"
[stack]
name = "kt"
stop_timeout = "2s"

[task.migrate]
command = "echo \"$(cat VERSION)\" >> logs/migrated.txt"

[service.redis]
command = "exec sleep 300"
ready = {{ alive = "100ms" }}

[service.app]
command = "echo \"$(cat VERSION)\" >> logs/started.txt; echo up; exec sleep 300"
depends_on = ["migrate", "redis"]
ready = {{ log = "^up$", timeout = "20s" }}

[service.worker]
command = "echo \"$STACKCTL_INSTANCE start $(cat VERSION)\" >> logs/workers.txt; trap 'echo \"$STACKCTL_INSTANCE stop\" >> logs/workers.txt; exit 0' TERM; echo up; while :; do sleep 0.05; done"
replicas = 2
depends_on = ["migrate", "redis"]
ready = {{ log = "^up$", timeout = "20s" }}

[keeper]
branch = "develop"
restart = ["app", "worker"]
{keeper_extra}
deploy = ["echo \"built {version}\" >> logs/built.txt"]
"#
    )
}

#[test]
fn a_deploy_restarts_only_what_follows_the_code() {
    let mut f = Fixture::with(app_stack, r#"interval = "1h""#);
    f.stack.run(&["start"]).success();
    let redis = f.stack.pid_of("redis").unwrap();
    let app = f.stack.pid_of("app").unwrap();
    assert_eq!(f.lines("logs/migrated.txt"), ["v1"]);
    std::fs::write(f.stack.path().join("logs/workers.txt"), "").unwrap();
    let v2 = f.push_v2();
    f.start_keeper();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&format!("→{}", &v2[..7])), "{line}");
    assert!(
        line.contains("restarted migrate app") && line.contains("rolled worker"),
        "{line}"
    );
    // The infra service kept its pid; the app restarted on v2; the task re-ran.
    assert_eq!(f.stack.pid_of("redis"), Some(redis));
    assert_ne!(f.stack.pid_of("app"), Some(app));
    assert_eq!(f.started(), ["v1", "v2"]);
    assert_eq!(f.lines("logs/migrated.txt"), ["v1", "v2"]);
    // The pool rolled member by member: worker.2 stopped only once
    // worker.1 was back on v2.
    let events = f.lines("logs/workers.txt");
    let at = |e: &str| events.iter().position(|l| l == e);
    let (Some(stop1), Some(start1), Some(stop2), Some(start2)) = (
        at("1 stop"),
        at("1 start v2"),
        at("2 stop"),
        at("2 start v2"),
    ) else {
        panic!("{events:?}");
    };
    assert!(
        stop1 < start1 && start1 < stop2 && stop2 < start2,
        "{events:?}"
    );
    f.stack.run(&["status"]).success();
    assert_eq!(f.stop_keeper(), Some(0));
}

/// The stack file of `stack_toml` whose v2+ deploy step waits (bounded)
/// for `logs/go`, having said it began.
fn slow_stack(version: &str, keeper_extra: &str) -> String {
    let toml = stack_toml(version, keeper_extra);
    if version == "v1" {
        return toml;
    }
    toml.replace(
        "deploy = [",
        "deploy = [\"touch logs/deploying; for i in $(seq 600); do [ -e logs/go ] && break; sleep 0.05; done\", ",
    )
}

#[test]
fn a_trigger_during_a_deploy_is_folded_into_it() {
    let mut f = Fixture::with(slow_stack, r#"interval = "1h""#);
    f.stack.run(&["start"]).success();
    let v2 = f.push_v2();
    f.start_keeper();
    wait_for("the deploy to begin", 30, || {
        f.stack.state("deploying").exists()
    });
    f.stack.run(&["keep", "--trigger"]).success();
    assert!(f.stack.state("keeper.trigger").exists());
    std::fs::write(f.stack.state("go"), "").unwrap();
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&v2[..7]), "{line}");
    // One follow-up tick, at once, that finds nothing new.
    let line = f.wait_tick("folded into this tick", 30);
    assert!(line.contains("nothing to do"), "{line}");
    assert_eq!(f.count("deployed in"), 1, "{:?}", f.ticks());
    assert_eq!(f.started(), ["v1", "v2"]);
    assert!(!f.stack.state("keeper.trigger").exists());
    // A trigger after the deploy is a trigger again.
    f.stack.run(&["keep", "--trigger"]).success();
    f.wait_tick("manual trigger", 60);
    assert_eq!(f.started(), ["v1", "v2", "v2"]);
    assert_eq!(f.stop_keeper(), Some(0));
}

/// `stack_toml` whose v2 deploy step always fails.
fn failing_v2_stack(version: &str, keeper_extra: &str) -> String {
    let toml = stack_toml(version, keeper_extra);
    if version != "v2" {
        return toml;
    }
    toml.replace("deploy = [", "deploy = [\"echo boom-from-v2; exit 7\", ")
}

#[test]
fn a_failed_commit_is_not_retried_until_a_new_commit() {
    let extra = r#"interval = "200ms"
retries = 1
escalate = "echo \"$STACKCTL_KEEPER_COMMIT\" >> logs/escalations.txt""#;
    let mut f = Fixture::with(failing_v2_stack, extra);
    f.stack.run(&["start"]).success();
    let v2 = f.push_v2();
    f.start_keeper();
    f.wait_tick("giving up", 60);
    // Tick after tick waits: no new ladder for the same commit.
    wait_for("three waiting ticks", 30, || {
        f.count("waiting for a new commit") >= 3
    });
    assert_eq!(f.count("deploy failed: "), 2, "{:?}", f.ticks());
    assert_eq!(f.lines("logs/escalations.txt"), [v2.as_str()]);
    assert_eq!(f.started(), ["v1"]);

    let v3 = f.push("v3");
    let line = f.wait_tick("deployed in", 60);
    assert!(line.contains(&format!("→{}", &v3[..7])), "{line}");
    assert_eq!(f.started(), ["v1", "v3"]);
    assert_eq!(f.lines("logs/escalations.txt"), [v2]);
    assert_eq!(f.stop_keeper(), Some(0));
}

/// `stack_toml` with a watched `tunnel` that dies soon after it is ready
/// unless `logs/tunnel-ok` exists.
fn tunnel_stack(version: &str, keeper_extra: &str) -> String {
    stack_toml(version, keeper_extra).replace(
        "[keeper]",
        r#"[service.tunnel]
command = "echo up; [ -e logs/tunnel-ok ] && exec sleep 300; sleep 0.3; exit 1"
ready = { log = "^up$", timeout = "20s" }
restart = "never"
health = { exec = "true", interval = "1h" }

[keeper]"#,
    )
}

#[test]
fn a_watched_service_that_stays_down_is_escalated_once_not_redeployed() {
    let extra = r#"interval = "300ms"
retries = 0
watch_health = ["tunnel"]
escalate = "echo \"$STACKCTL_KEEPER_STEP|$STACKCTL_KEEPER_PROCESSES\" >> logs/escalations.txt""#;
    let mut f = Fixture::with(tunnel_stack, extra);
    f.stack.run(&["start"]).success();
    let app = f.stack.pid_of("app").unwrap();
    f.start_keeper();
    wait_for("three ticks waiting for the tunnel", 60, || {
        f.count("waiting for it to recover") >= 3
    });
    // One restart of the tunnel (not a deploy), one escalation.
    assert_eq!(f.count("deployed in"), 0, "{:?}", f.ticks());
    let esc = f.lines("logs/escalations.txt");
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert!(esc[0].ends_with("|tunnel"), "{esc:?}");
    assert_eq!(f.stack.pid_of("app"), Some(app));
    assert_eq!(f.started(), ["v1"]);

    // It recovers (by hand): the keeper sees it.
    std::fs::write(f.stack.state("tunnel-ok"), "").unwrap();
    f.stack.run(&["restart", "tunnel"]).success();
    f.wait_tick("watched services ready again", 30);
    assert_eq!(f.lines("logs/escalations.txt").len(), 1);
    assert_eq!(f.stop_keeper(), Some(0));
}

/// `stack_toml` with `[env]` and an env file the deploy steps must see.
fn env_stack(version: &str, keeper_extra: &str) -> String {
    stack_toml(version, keeper_extra)
        .replace(
            "stop_timeout = \"2s\"",
            "stop_timeout = \"2s\"\nenv_file = [{ path = \".env\", optional = true }]",
        )
        .replace(
            "[service.app]",
            "[env]\nNEXT_TELEMETRY_DISABLED = \"1\"\nGREETING = \"hello-${FROM_FILE}\"\n\n[service.app]",
        )
        .replace(
            "deploy = [",
            r#"deploy = ["echo \"$NEXT_TELEMETRY_DISABLED $GREETING\" > logs/env.txt", ["sh", "-c", "echo ${GREETING} > logs/argv.txt"], "#,
        )
}

#[test]
fn deploy_steps_run_with_the_stacks_environment() {
    let mut f = Fixture::with(env_stack, r#"interval = "1h""#);
    // Not versioned: the worktree's own env file (untracked files are fine).
    f.stack.write(".env", "FROM_FILE=from-the-env-file\n");
    f.stack.run(&["start"]).success();
    f.push_v2();
    f.start_keeper();
    f.wait_tick("deployed in", 60);
    assert_eq!(
        f.stack.read("logs/env.txt").trim(),
        "1 hello-from-the-env-file"
    );
    assert_eq!(
        f.stack.read("logs/argv.txt").trim(),
        "hello-from-the-env-file"
    );
    // Values are never logged.
    assert!(!f
        .stack
        .read("logs/keeper.log")
        .contains("from-the-env-file"));
    assert_eq!(f.stop_keeper(), Some(0));
}

/// `stack_toml` whose v2 deploy step hangs with a child of its own.
fn hanging_stack(version: &str, keeper_extra: &str) -> String {
    let toml = stack_toml(version, keeper_extra);
    if version != "v2" {
        return toml;
    }
    toml.replace(
        "deploy = [",
        "deploy = [\"sleep 300 & echo $! > logs/hang.tmp; mv logs/hang.tmp logs/hang.pid; wait\", ",
    )
}

#[test]
fn a_hanging_deploy_step_is_killed_with_its_group_at_its_timeout() {
    let extra = r#"interval = "1h"
retries = 0
step_timeout = "1s"
escalate = "printf '%s' \"$STACKCTL_KEEPER_ERROR\" > logs/escalated.txt""#;
    let mut f = Fixture::with(hanging_stack, extra);
    f.stack.run(&["start"]).success();
    let pid = f.stack.pid_of("app").unwrap();
    f.push_v2();
    f.start_keeper();
    let line = f.wait_tick("giving up", 60);
    assert!(
        line.contains("did not finish within 1s (step_timeout)"),
        "{line}"
    );
    let sleeper = f.stack.wait_pid_file("logs/hang.pid", 5);
    wait_for("the step's child to be gone", 10, || {
        crate::harness::fully_dead(sleeper)
    });
    let log = f.stack.read("logs/keeper.log");
    assert!(
        log.contains("  deploy 1/2| (keeper) deploy step 1/2")
            && log.contains("killed it with its whole process group"),
        "{log}"
    );
    assert!(
        f.stack
            .read("logs/escalated.txt")
            .contains("(step_timeout)"),
        "{}",
        f.stack.read("logs/escalated.txt")
    );
    // Nothing was restarted; the lock is free; the keeper goes on.
    assert_eq!(f.stack.pid_of("app"), Some(pid));
    assert_eq!(f.lock_owner(), "free");
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn the_deploy_steps_together_are_bounded_by_deploy_timeout() {
    let extra = "interval = \"1h\"\nretries = 0\ndeploy_timeout = \"1s\"";
    let mut f = Fixture::new(extra);
    let slow = stack_toml("v2", extra).replace(
        "deploy = [",
        "deploy = [\"sleep 0.6\", \"sleep 0.6\", \"sleep 0.6\", ",
    );
    f.commit("v2", &slow);
    f.start_keeper();
    let line = f.wait_tick("giving up", 60);
    assert!(
        line.contains("the deploy steps did not finish within 1s (deploy_timeout)"),
        "{line}"
    );
    assert!(f.stack.read("logs/built.txt").is_empty());
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn an_escalation_says_which_process_failed_and_why() {
    let extra = r#"interval = "1h"
retries = 0
escalate = "printf '%s\n--\n%s\n--\n%s' \"$STACKCTL_KEEPER_PROCESSES\" \"$STACKCTL_KEEPER_PROBLEMS\" \"$STACKCTL_KEEPER_DETAIL\" > logs/escalated.txt""#;
    let mut f = Fixture::new(extra);
    f.stack.run(&["start"]).success();
    // v2's app cannot start; its [env] holds a secret nobody may print.
    let broken = stack_toml("v2", extra)
        .replace(
            "echo up; exec sleep 300",
            "echo \\\"boom: DATABASE_URL is not reachable\\\"; exit 3",
        )
        .replace(
            "[service.app]",
            "[env]\nSECRET = \"s3cr3t-value\"\n\n[service.app]",
        );
    f.commit("v2", &broken);
    f.start_keeper();
    let line = f.wait_tick("giving up", 60);
    assert!(line.contains("restart failed"), "{line}");
    assert!(line.contains("app failed"), "{line}");
    let esc = f.stack.read("logs/escalated.txt");
    let parts: Vec<&str> = esc.split("\n--\n").collect();
    assert_eq!(parts.len(), 3, "{esc}");
    assert_eq!(parts[0], "app", "{esc}");
    assert!(parts[1].starts_with("app: failed"), "{esc}");
    assert!(
        parts[2].contains("boom: DATABASE_URL is not reachable"),
        "{esc}"
    );
    let log = f.stack.read("logs/keeper.log");
    assert!(log.contains("  not up| app: failed"), "{log}");
    assert!(
        log.contains("  app.log| boom: DATABASE_URL is not reachable"),
        "{log}"
    );
    assert!(!log.contains("s3cr3t-value") && !esc.contains("s3cr3t-value"));
    // Still one line per tick, though `escalate` spans lines.
    for l in log.lines() {
        assert!(
            l.starts_with("  ") || l.contains(" tick: ") || l.contains(" keeper: "),
            "{l:?} in\n{log}"
        );
    }
    assert_eq!(f.stop_keeper(), Some(0));
}

#[test]
fn keeper_keys_are_checked() {
    let s = Stack::new(
        r#"
[service.worker]
command = "sleep 1"
replicas = 2

[keeper]
branch = "main"
restart = ["wroker", "worker.2"]
step_timeout = "0s"
deploy_timeout = "soon"
"#,
    );
    let r = s.run(&["check"]);
    r.expect_code(2);
    for want in [
        "`keeper.restart` names `wroker`, which is not a process of this stack",
        "did you mean `worker`?",
        "`keeper.restart` names `worker.2`",
        "name the pool `worker`",
        "`keeper.step_timeout` must be more than 0",
        "bad duration for `keeper.deploy_timeout`",
    ] {
        assert!(r.stderr.contains(want), "{want:?} not in\n{}", r.stderr);
    }
}

/// A stack whose deploy step rebuilds "stackctl" (the copy in logs/ that
/// the stack and the keeper run): a byte appended is another binary that
/// runs the same.
fn rebuilding_stack(version: &str, keeper_extra: &str) -> String {
    format!(
        r#"
[stack]
name = "kt"
stop_timeout = "2s"

[service.app]
command = "echo \"$(cat VERSION)\" >> logs/started.txt; echo up; exec sleep 300"
ready = {{ log = "^up$", timeout = "20s" }}

[service.infra]
command = "exec sleep 300"

[keeper]
branch = "develop"
restart = ["app"]
{keeper_extra}
deploy = ["cp logs/stackctl logs/stackctl.new && printf {version} >> logs/stackctl.new && mv logs/stackctl.new logs/stackctl"]
"#
    )
}

#[test]
fn a_deploy_that_rebuilds_stackctl_upgrades_the_supervisor_and_restarts_no_infra() {
    let mut f = Fixture::with(rebuilding_stack, r#"interval = "1s""#);
    let copy = f.stack.path().join("logs/stackctl");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(crate::harness::bin(), &copy).unwrap();
    let out = f.stack.cmd_of(&copy, &["start"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let sup = f.stack.supervisor_pid().unwrap();
    let infra = f.stack.pid_of("infra").unwrap();
    let running = |pid: i32| std::fs::read(format!("/proc/{pid}/exe")).unwrap_or_default();
    assert_eq!(running(sup), std::fs::read(&copy).unwrap());
    let keeper = f
        .stack
        .cmd_of(&copy, &["keep"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    f.keeper = Some(keeper);
    f.wait_tick("nothing to do", 30);
    f.push_v2();
    let line = f.wait_tick("deployed in", 90);
    assert!(line.contains("upgraded stackctl"), "{line}");
    let new_sup = f.stack.supervisor_pid().unwrap();
    assert_ne!(new_sup, sup, "the supervisor was not replaced");
    assert_eq!(
        running(new_sup),
        std::fs::read(&copy).unwrap(),
        "the new supervisor does not run the rebuilt binary"
    );
    assert_eq!(f.stack.pid_of("infra"), Some(infra), "infra was restarted");
    assert_eq!(f.started(), ["v1", "v2"]);
}
