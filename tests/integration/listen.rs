//! Tests: issue 11 — `listen`: stackctl binds and holds a service's
//! sockets, passes them as fds 3… (systemd's `LISTEN_FDS` protocol), and
//! restarts a serving service by overlapping (the new process ready on the
//! same sockets before the old one stops).
//!
//! The servers are real: a stdlib python stand-in that serves on fd 3 and
//! answers its own pid, and uvicorn from PyPI (installed by `.ci/run`).
//! Clients are real TCP connections on 127.0.0.1, counted by outcome.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{alive, free_port, kill, python, run_code, wait_for, Run, Stack};

/// An HTTP server on the socket passed at fd 3: answers `<pid>\n`. It
/// says `serving` once it accepts; `HOLD_FILE`: it waits for that file to
/// go first; `FAIL_FILE`: it exits 3 instead, when that file exists. It
/// logs what the socket-activation variables say.
const SERVER: &str = r#"
import os, signal, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

pid = os.getpid()
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
fds = [f for f in fds if os.path.exists(f"/proc/self/fd/{f}")]
print(f"pid={pid} LISTEN_PID={os.environ.get('LISTEN_PID')} LISTEN_FDS={os.environ.get('LISTEN_FDS')} LISTEN_FDNAMES={os.environ.get('LISTEN_FDNAMES')} fds={','.join(map(str, fds))}", flush=True)
fail = os.environ.get("FAIL_FILE")
if fail and os.path.exists(fail):
    print("failing on purpose", flush=True)
    sys.exit(3)
hold = os.environ.get("HOLD_FILE")
while hold and os.path.exists(hold):
    time.sleep(0.05)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{pid}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
# Non-blocking: when another process takes a connection first, accept
# says so instead of waiting (socketserver handles that).
srv.socket.setblocking(False)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
print("serving", flush=True)
srv.serve_forever(poll_interval=0.05)
srv.server_close()
print("stopped", flush=True)
"#;

/// A stack with one `api` service running [`SERVER`] on `port`.
fn api_stack(port: u16, extra: &str) -> Stack {
    let s = Stack::new(&format!(
        "[service.api]\ncommand = [\"{py}\", \"server.py\"]\nlisten = [\"127.0.0.1:{port}\"]\nready = {{ log = \"^serving\" }}\nstop_timeout = \"5s\"\n{extra}",
        py = python()
    ));
    s.write("server.py", SERVER);
    s
}

#[track_caller]
fn ok(s: &Stack, args: &[&str]) -> Run {
    run_code(s, args, 0)
}

/// The pid that answers on `port`, if one does.
fn served_by(port: u16) -> Result<i32, Outcome> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(classify)?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(classify)?;
    let mut text = String::new();
    c.read_to_string(&mut text).map_err(classify)?;
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or(Outcome::Reset)
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Refused,
    Reset,
    TimedOut,
}

fn classify(e: std::io::Error) -> Outcome {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Outcome::Refused,
        TimedOut | WouldBlock => Outcome::TimedOut,
        _ => Outcome::Reset,
    }
}

/// A client sending requests in a loop until stopped; what each got.
struct Client {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Result<i32, Outcome>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    fn start(port: u16) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let r = served_by(port);
                seen2.lock().unwrap().push(r);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Client {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops it; every outcome in order.
    fn finish(mut self) -> Vec<Result<i32, Outcome>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until the client has made `n` more requests.
fn let_it_run(c: &Client, n: usize) {
    let start = c.count();
    wait_for("the client to make requests", 30, || c.count() >= start + n);
}

fn failures(seen: &[Result<i32, Outcome>]) -> Vec<Outcome> {
    seen.iter().filter_map(|r| r.err()).collect()
}

fn pids_served(seen: &[Result<i32, Outcome>]) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for p in seen.iter().flatten() {
        if out.last() != Some(p) {
            out.push(*p);
        }
    }
    out
}

/// Waits for a supervisor other than `old` to answer (a `status` that
/// reaches the dying one may fail: that is not an answer).
fn wait_new_supervisor(s: &Stack, old: i32) {
    wait_for("a new supervisor", 60, || {
        let r = s.run(&["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .ok()
            .and_then(|v| v["supervisor"]["pid"].as_i64())
            .is_some_and(|p| p as i32 != old)
    });
}

fn api_pid(s: &Stack) -> i32 {
    s.pid_of("api")
        .unwrap_or_else(|| panic!("no api pid: {}\n{}", s.status_json(), s.dump()))
}

#[test]
fn restart_overlaps_and_refuses_no_connection() {
    let port = free_port();
    let s = api_stack(port, "");
    ok(&s, &["start"]);
    let first = api_pid(&s);
    let client = Client::start(port);
    let_it_run(&client, 20);
    for _ in 0..3 {
        let before = api_pid(&s);
        ok(&s, &["restart", "api"]);
        let after = api_pid(&s);
        assert_ne!(before, after, "restart kept the pid");
        assert!(!alive(before), "the old process outlived the restart");
        let_it_run(&client, 10);
    }
    let seen = client.finish();
    let bad = failures(&seen);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed during restarts: {bad:?}\n{}",
        bad.len(),
        seen.len(),
        s.dump()
    );
    let served = pids_served(&seen);
    assert_eq!(served.first(), Some(&first));
    assert!(
        served.len() >= 4,
        "not served by 4 processes in turn: {served:?}"
    );
    // Exactly one api process is left, the one status shows.
    assert_eq!(s.pids_of_process("api"), vec![api_pid(&s)]);
    let log = s.read("logs/stackctl.log");
    assert!(log.contains("before the old one stops"), "{log}");
}

#[test]
fn a_crash_restart_keeps_the_socket_so_connections_wait_instead_of_being_refused() {
    let port = free_port();
    let s = api_stack(port, "restart = \"always\"\n");
    ok(&s, &["start"]);
    let client = Client::start(port);
    let_it_run(&client, 10);
    for _ in 0..2 {
        let pid = api_pid(&s);
        kill(pid, 9);
        wait_for("a new api process", 30, || {
            s.pid_of("api").is_some_and(|p| p != pid) && served_by(port).is_ok_and(|p| p != pid)
        });
        let_it_run(&client, 10);
    }
    let seen = client.finish();
    // A request the killed process was answering is cut (a reset); none
    // is refused: the socket never closed.
    let refused = failures(&seen)
        .into_iter()
        .filter(|o| *o == Outcome::Refused)
        .count();
    assert_eq!(refused, 0, "refused during a crash-restart: {seen:?}");
}

#[test]
fn a_pool_rolls_member_by_member_on_one_socket_and_refuses_nothing() {
    let port = free_port();
    let s = Stack::new(&format!(
        "[service.web]\ncommand = [\"{py}\", \"server.py\"]\nlisten = [\"127.0.0.1:{port}\"]\nreplicas = 2\nready = {{ log = \"^serving\" }}\nstop_timeout = \"5s\"\n",
        py = python()
    ));
    s.write("server.py", SERVER);
    ok(&s, &["start"]);
    let before: Vec<i32> = ["web.1", "web.2"]
        .iter()
        .map(|m| s.pid_of(m).unwrap())
        .collect();
    let client = Client::start(port);
    let_it_run(&client, 20);
    let r = ok(&s, &["restart", "web"]);
    let_it_run(&client, 10);
    let seen = client.finish();
    let bad = failures(&seen);
    assert!(
        bad.is_empty(),
        "failed during the roll: {bad:?}\n{}",
        r.stdout
    );
    let after: Vec<i32> = ["web.1", "web.2"]
        .iter()
        .map(|m| s.pid_of(m).unwrap())
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a);
        assert!(!alive(*b));
    }
    // Both members took turns on the one accept queue.
    let served: std::collections::BTreeSet<i32> = seen.iter().flatten().copied().collect();
    assert!(served.iter().any(|p| before.contains(p)));
    assert!(served.iter().any(|p| after.contains(p)));
    // web.1's successor was ready before web.2's was started: the log
    // says so in this order.
    let log = s.read("logs/stackctl.log");
    let i1 = log.find("stopping pid ").unwrap();
    let later = &log[i1..];
    assert!(later.contains("next to pid"), "{log}");
}

#[test]
fn a_successor_that_fails_its_gate_leaves_the_old_process_serving() {
    let port = free_port();
    let s = api_stack(port, "env = { FAIL_FILE = \"fail\" }\n");
    ok(&s, &["start"]);
    let old = api_pid(&s);
    let client = Client::start(port);
    let_it_run(&client, 10);
    s.write("fail", "");
    let r = run_code(&s, &["restart", "api"], 1);
    let_it_run(&client, 10);
    let seen = client.finish();
    let err = format!("{}{}", r.stdout, r.stderr);
    assert!(
        err.contains("exited with code 3 before it was ready")
            && err.contains(&format!("the old one (pid {old}) goes on serving")),
        "{err}"
    );
    assert!(failures(&seen).is_empty(), "{seen:?}");
    assert_eq!(pids_served(&seen), vec![old]);
    assert_eq!(api_pid(&s), old);
    assert_eq!(s.process_status("api").unwrap()["state"], "running");
    assert_eq!(s.pids_of_process("api"), vec![old]);
    // The pid file still names the old one.
    assert_eq!(s.read("logs/pids/api.pid").trim(), old.to_string());
    // And the next restart works again.
    std::fs::remove_file(s.path().join("fail")).unwrap();
    ok(&s, &["restart", "api"]);
    assert_ne!(api_pid(&s), old);
}

#[test]
fn stop_closes_the_sockets_and_frees_the_port() {
    let port = free_port();
    let s = Stack::new(&format!(
        "[service.api]\ncommand = [\"{py}\", \"server.py\"]\nlisten = [\"127.0.0.1:{port}\", \"unix:run/api.sock\"]\nready = {{ log = \"^serving\" }}\n[service.other]\ncommand = \"sleep 1000\"\n",
        py = python()
    ));
    s.write("server.py", SERVER);
    ok(&s, &["start"]);
    let sock = s.path().join("run/api.sock");
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    ok(&s, &["stop", "api"]);
    std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("port {port} still taken after `stop api`: {e}"));
    assert!(!sock.exists(), "the unix socket's file is left");
    // Started again: bound again.
    ok(&s, &["start", "api"]);
    assert!(served_by(port).is_ok());
    ok(&s, &["stop"]);
    std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("port {port} still taken after a full stop: {e}"));
}

#[test]
fn listen_pid_is_the_reader_and_no_other_fd_leaks_with_argv_shell_and_two_sockets() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
[service.argv]
command = ["{py}", "server.py"]
listen = ["127.0.0.1:{p1}"]
ready = {{ log = "^serving" }}
[service.shell]
command = "{py} server.py"
listen = [{{ addr = "127.0.0.1:{p2}", name = "http" }}, {{ addr = "unix:admin.sock", name = "admin" }}]
ready = {{ log = "^serving" }}
[service.compound]
command = "cd sub && exec {py} ../server.py"
listen = ["[::1]:{p3}"]
ready = {{ log = "^serving" }}
"#,
        py = python(),
        p1 = port,
        p2 = free_port(),
        p3 = free_port(),
    ));
    s.write("server.py", SERVER);
    s.write("sub/.keep", "");
    ok(&s, &["start"]);
    for (name, fds, names) in [
        ("argv", "0,1,2,3", "argv"),
        ("shell", "0,1,2,3,4", "http:admin"),
        ("compound", "0,1,2,3", "compound"),
    ] {
        let pid = s.pid_of(name).unwrap();
        let log = s.read(&format!("logs/{name}.log"));
        let want = format!(
            "pid={pid} LISTEN_PID={pid} LISTEN_FDS={} LISTEN_FDNAMES={names} fds={fds}",
            fds.split(',').count() - 3
        );
        assert!(log.contains(&want), "{name}: want {want:?} in\n{log}");
    }
    assert!(served_by(port).is_ok());
}

#[test]
fn an_address_in_use_fails_the_start_naming_it_and_its_holder() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let s = api_stack(port, "");
    let r = run_code(&s, &["start"], 1);
    let me = std::process::id();
    assert!(
        r.stderr.contains(&format!(
            "api: cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("held by pid {me}")),
        "{}",
        r.stderr
    );
    assert!(s.pids_of_process("api").is_empty());
}

#[test]
fn the_sockets_survive_a_killed_supervisor_and_a_restart_after_adoption_still_overlaps() {
    let port = free_port();
    let s = api_stack(port, "");
    ok(&s, &["start"]);
    let pid = api_pid(&s);
    let sup = s.supervisor_pid().unwrap();
    let client = Client::start(port);
    let_it_run(&client, 10);
    kill(sup, 9);
    wait_new_supervisor(&s, sup);
    let_it_run(&client, 10);
    assert_eq!(api_pid(&s), pid, "the process was not adopted");
    ok(&s, &["restart", "api"]);
    let_it_run(&client, 10);
    let seen = client.finish();
    assert!(failures(&seen).is_empty(), "{seen:?}\n{}", s.dump());
    let (served, new) = (pids_served(&seen), api_pid(&s));
    assert_eq!(served.first(), Some(&pid));
    assert_eq!(served.last(), Some(&new));
    assert!(served.iter().all(|p| *p == pid || *p == new), "{served:?}");
    assert!(!alive(pid));
}

#[test]
fn a_supervisor_killed_during_an_overlap_leaves_exactly_one_process() {
    let port = free_port();
    let s = api_stack(port, "env = { HOLD_FILE = \"hold\" }\n");
    ok(&s, &["start"]);
    let old = api_pid(&s);
    s.write("hold", "");
    let mut restart = s
        .cmd(&["restart", "api"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the successor to be spawned", 30, || {
        s.pids_of_process("api").len() == 2
    });
    let successor = *s
        .pids_of_process("api")
        .iter()
        .find(|p| **p != old)
        .unwrap();
    let sup = s.supervisor_pid().unwrap();
    kill(sup, 9);
    let _ = restart.wait();
    // The successor's gate could pass now: the next supervisor must still
    // keep the old one (the record names it) and stop the successor.
    std::fs::remove_file(s.path().join("hold")).unwrap();
    wait_for("one api process left", 60, || {
        s.pids_of_process("api") == vec![old] && !alive(successor)
    });
    wait_new_supervisor(&s, sup);
    assert_eq!(api_pid(&s), old);
    assert_eq!(served_by(port), Ok(old));
}

#[test]
fn a_reload_that_redefines_it_overlaps_and_one_that_moves_it_rebinds() {
    let port = free_port();
    let s = api_stack(port, "env = { V = \"1\" }\n");
    ok(&s, &["start"]);
    let first = api_pid(&s);
    let client = Client::start(port);
    let_it_run(&client, 10);
    let toml = s.read("stack.toml");
    s.write("stack.toml", &toml.replace("V = \"1\"", "V = \"2\""));
    ok(&s, &["reload"]);
    let second = api_pid(&s);
    assert_ne!(first, second);
    let_it_run(&client, 10);
    let seen = client.finish();
    assert!(failures(&seen).is_empty(), "{seen:?}");
    // A new port: served there, the old one free once the old process is gone.
    let moved = free_port();
    let toml = s.read("stack.toml");
    s.write(
        "stack.toml",
        &toml.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{moved}")),
    );
    ok(&s, &["reload"]);
    assert_eq!(served_by(moved), Ok(api_pid(&s)));
    std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("the old port {port} is still taken: {e}"));
}

/// uvicorn from PyPI (`.ci/run` installs it), serving an ASGI app on the
/// socket stackctl passes (`--fd 3`).
#[test]
fn uvicorn_serves_on_the_passed_socket_and_restarts_without_refusing() {
    let have = std::process::Command::new(python())
        .args(["-c", "import uvicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have,
        "uvicorn is not installed for {}: `python3 -m pip install uvicorn` (.ci/run does)",
        python()
    );
    let port = free_port();
    let s = Stack::new(&format!(
        "[service.api]\ncommand = [\"{py}\", \"-m\", \"uvicorn\", \"app:app\", \"--fd\", \"3\"]\nlisten = [\"127.0.0.1:{port}\"]\nready = {{ log = \"Application startup complete\" }}\nstop_timeout = \"5s\"\n",
        py = python()
    ));
    s.write(
        "app.py",
        r#"
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"#,
    );
    ok(&s, &["start"]);
    let first = api_pid(&s);
    assert_eq!(served_by(port), Ok(first));
    let client = Client::start(port);
    let_it_run(&client, 20);
    ok(&s, &["restart", "api"]);
    let_it_run(&client, 20);
    let seen = client.finish();
    // Nothing refused, nothing left waiting. (uvicorn itself closes, when
    // it shuts down, a connection it accepted but has not read a request
    // from yet — `Server.shutdown`: a reset the client may see once.)
    let bad: Vec<Outcome> = failures(&seen)
        .into_iter()
        .filter(|o| *o != Outcome::Reset)
        .collect();
    assert!(bad.is_empty(), "{seen:?}\n{}", s.dump());
    // Both accept on the one socket while they overlap; then only the new.
    let (served, new) = (pids_served(&seen), api_pid(&s));
    assert_eq!(served.first(), Some(&first));
    assert_eq!(served.last(), Some(&new));
    assert!(
        served.iter().all(|p| *p == first || *p == new),
        "{served:?}"
    );
    assert!(!alive(first));
}

#[test]
fn check_warns_that_an_http_gate_on_a_held_address_may_be_answered_by_the_old_process() {
    let port = free_port();
    let s = Stack::new(&format!(
        "[service.api]\ncommand = \"x\"\nlisten = [\"127.0.0.1:{port}\"]\nready = {{ http = \"http://localhost:{port}/health\" }}\n"
    ));
    let r = ok(&s, &["check"]);
    assert!(
        r.stderr.contains(&format!("warning: `service.api.ready.http` reaches `127.0.0.1:{port}`, which this service gets from `listen`: during a restart the old process may answer it")),
        "{}",
        r.stderr
    );
}
