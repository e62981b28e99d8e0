//! The fixture every integration test builds on.
//!
//! A [`Stack`] is a temp folder with a `stack.toml` and any stand-in scripts
//! the test writes. It runs the real `stackctl` binary with that folder as
//! cwd, offers [`wait_for`] (a condition and a deadline, never a bare sleep),
//! and on drop runs `stackctl stop` and then SIGKILLs every process still
//! carrying this fixture's marker in its environment, so a failing test
//! leaves nothing behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stackctl"))
}

/// A test stack in a temp folder.
#[must_use]
pub struct Stack {
    pub dir: tempfile::TempDir,
    /// Put into every process's environment (through the supervisor) so the
    /// cleanup can find strays: `SCTL_TEST_MARKER=<marker>`.
    pub marker: String,
}

/// The result of one `stackctl` run, with everything needed to explain a failure.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(args: &[&str], out: Output) -> Run {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole context unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "stackctl {:?} exited {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Run {
        self.expect_code(0)
    }
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Stack {
    /// A temp folder with `stack.toml` = `toml`.
    pub fn new(toml: &str) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("stackctl-test-")
            .tempdir()
            .expect("tempdir");
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let marker = format!("{}-{}-{n}", std::process::id(), dir.path().display());
        let s = Stack { dir, marker };
        s.write("stack.toml", toml);
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (parents created); `.sh`/`.py` files are made executable.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        if rel.ends_with(".sh") || rel.ends_with(".py") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    }

    /// A `stackctl` command in this stack's folder, with the marker set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(&bin(), args)
    }

    /// [`Stack::cmd`] with another stackctl binary (a copy, for upgrades).
    pub fn cmd_of(&self, binary: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(binary);
        c.args(args)
            .current_dir(self.dir.path())
            .env("SCTL_TEST_MARKER", &self.marker)
            .env_remove("STACKCTL_FILE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs `stackctl args…` to completion (bounded: 120 s, then killed).
    pub fn run(&self, args: &[&str]) -> Run {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stackctl");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match child.try_wait().expect("try_wait") {
                Some(_) => break,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let out = child.wait_with_output().expect("wait stackctl");
        Run::from(args, out)
    }

    /// `state_dir` (default `logs/`).
    pub fn state(&self, rel: &str) -> PathBuf {
        self.dir.path().join("logs").join(rel)
    }

    /// The contents of a file under the stack folder ("" if missing).
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_default()
    }

    /// `status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.run(&["status", "--json"]);
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {r:?}"))
    }

    /// The record of `name` in `status --json`, which must list it.
    #[track_caller]
    pub fn status_of(&self, name: &str) -> serde_json::Value {
        self.process_status(name)
            .unwrap_or_else(|| panic!("status --json does not list {name}: {}", self.status_json()))
    }

    /// The status record of one process, if listed.
    pub fn process_status(&self, name: &str) -> Option<serde_json::Value> {
        let s = self.status_json();
        s["processes"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    }

    /// The pid of a running process (from `status --json`).
    pub fn pid_of(&self, name: &str) -> Option<i32> {
        self.process_status(name)?["pid"].as_i64().map(|p| p as i32)
    }

    /// Every live pid whose environment carries this fixture's marker.
    pub fn marked_pids(&self) -> Vec<i32> {
        marked_pids(&self.marker)
    }

    /// A context dump for failure messages: stackctl.log and process logs.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(30)..];
                    out.push_str(&format!("--- {}\n{}\n", p.display(), tail.join("\n")));
                }
            }
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Best effort: a graceful stop (bounded: a supervisor that accepts
        // but never answers must not hang the whole test run), then kill
        // whatever carries our marker.
        if let Ok(mut stop) = self
            .cmd(&["stop", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(stop.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = stop.kill();
            let _ = stop.wait();
        }
        for _ in 0..3 {
            let pids = self.marked_pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                kill(p, libc_sigkill());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn libc_sigkill() -> i32 {
    9
}

/// Sends a signal (ignores errors: the process may be gone).
pub fn kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Every live pid whose environment has `SCTL_TEST_MARKER=<marker>`.
pub fn marked_pids(marker: &str) -> Vec<i32> {
    let needle = format!("SCTL_TEST_MARKER={marker}");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Waits until `cond` holds, checking every 10 ms, or panics after `secs`
/// with `what` in the message.
#[track_caller]
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Additions for the core tests (additive only).

/// The real python3 executable (not a pyenv shim), resolved once, so stand-ins
/// start fast and carry the environment they were given.
pub fn python() -> String {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed for the integration tests");
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if p.is_empty() {
            "python3".to_string()
        } else {
            p
        }
    })
    .clone()
}

/// The value of `key` in a live process's environment.
pub fn env_of(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The session id of a live process.
pub fn session_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

impl Stack {
    /// Runs `stackctl args…` like [`Stack::run`], with extra environment
    /// variables (`None` removes one).
    pub fn run_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
        let mut cmd = self.cmd(args);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stackctl");
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("wait stackctl");
        Run::from(args, out)
    }

    /// Live marked pids whose `STACKCTL_PROCESS` is `process` (e.g. `api`,
    /// `worker.2`): every live copy of that process, whatever its group.
    pub fn pids_of_process(&self, process: &str) -> Vec<i32> {
        self.marked_pids()
            .into_iter()
            .filter(|p| env_of(*p, "STACKCTL_PROCESS").as_deref() == Some(process))
            .collect()
    }

    /// Live marked pids that belong to the stack's processes (they carry a
    /// `STACKCTL_PROCESS`): everything but the supervisor and the CLI.
    pub fn stack_pids(&self) -> Vec<i32> {
        self.marked_pids()
            .into_iter()
            .filter(|p| env_of(*p, "STACKCTL_PROCESS").is_some())
            .collect()
    }

    /// Waits (up to `secs`) for a stand-in to write a pid into `rel`, and
    /// returns it.
    #[track_caller]
    pub fn wait_pid_file(&self, rel: &str, secs: u64) -> i32 {
        let mut pid = None;
        wait_for(&format!("a pid in {rel}"), secs, || {
            pid = self.read(rel).trim().parse::<i32>().ok();
            pid.is_some()
        });
        pid.unwrap_or_default()
    }

    /// The supervisor's pid from `status --json` (when one answers).
    pub fn supervisor_pid(&self) -> Option<i32> {
        let s = self.status_json();
        s["supervisor"]["pid"].as_i64().map(|p| p as i32)
    }

    /// The pid of the stack's anchor (from `status --json`).
    pub fn anchor_pid(&self) -> Option<i32> {
        let s = self.status_json();
        s["supervisor"]["anchor"].as_i64().map(|p| p as i32)
    }

    /// SIGKILLs the anchor and the supervisor together and waits until
    /// both are gone: the stack's processes are then left with nobody (what
    /// a version without the anchor left when its supervisor was killed).
    /// Both are frozen first (SIGSTOP): either would otherwise replace the
    /// other the moment it sees it die.
    pub fn kill_supervision(&self) {
        let anchor = self.anchor_pid().expect("anchor pid");
        let sup = self.supervisor_pid().expect("supervisor pid");
        kill(anchor, 19);
        kill(sup, 19);
        kill(anchor, 9);
        kill(sup, 9);
        wait_for("the anchor to die", 30, || fully_dead(anchor));
        wait_for("the supervisor to die", 30, || fully_dead(sup));
    }
}

/// Whether every thread of `pid` has exited (it may remain a zombie). A
/// SIGKILLed multi-threaded process shows its leader as a zombie while
/// other threads are still tearing down, its sockets still open; this waits
/// for the last one.
pub fn fully_dead(pid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    rd.flatten()
        .all(|t| match std::fs::read_to_string(t.path().join("stat")) {
            Ok(s) => {
                let state = s
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                matches!(state, Some("Z") | Some("X") | None)
            }
            Err(_) => true,
        })
}

/// Runs `args`, asserting exit `code`; on failure the panic shows stdout,
/// stderr and the tail of every log.
#[track_caller]
pub fn run_code(s: &Stack, args: &[&str], code: i32) -> Run {
    let r = s.run(args);
    if r.code != Some(code) {
        panic!(
            "stackctl {args:?} exited {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}\n--- logs\n{}",
            r.code,
            r.stdout,
            r.stderr,
            s.dump()
        );
    }
    r
}

/// The start time of `pid` in clock ticks since boot, as `/proc` gives it
/// (what a pid file's identity records).
pub fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}
