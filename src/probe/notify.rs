//! The `notify` gate: the sd_notify datagram protocol, as with systemd's
//! `Type=notify`. The process finds `NOTIFY_SOCKET` in its environment and
//! sends datagrams of newline-separated `KEY=VALUE` lines to it; `READY=1`
//! passes the gate. One socket per process instance.
//!
//! The socket file is created mode 0600 (only the owning user may send; a
//! stale file from an earlier run is removed first) and removed again when
//! the [`NotifySocket`] is dropped.
//!
//! Who may speak for the instance: a message is heard only from a process
//! of that instance, as systemd's `NotifyAccess=all` hears only the unit's
//! own processes. The socket has `SO_PASSCRED`, so the kernel (not the
//! sender) attaches each datagram's sender pid (`SCM_CREDENTIALS`). Once the
//! instance is spawned, the unit names its session with
//! [`NotifySocket::accept_session`]: every child is a session leader, so
//! pgid = sid = the spawned pid, and whatever it runs stays in that session
//! and group (a program under `sh -c`, `systemd-notify` run from a script)
//! unless it leaves with `setsid`. When a datagram is read, the sender's
//! `/proc/<pid>/stat` is read at once; its session or its process group
//! must be the instance's. Anything else is ignored and logged (tracing:
//! `stackctl.log`) with the sender's pid and why, once per sender pid: a
//! stray process of the same user, a leftover of an earlier incarnation,
//! another service. (Nothing sent before the spawn can be heard either:
//! until then nothing is accepted, and no earlier process is in a session
//! whose id is the new pid.)
//!
//! A sender that is gone when its datagram is read cannot be attributed
//! (systemd falls back to the sender's cgroup; a supervisor of plain
//! processes has none), and its message is ignored, as systemd ignores a
//! message whose unit it cannot find. Accepting it instead would let any
//! process pass the gate by exiting quickly. This costs nothing with the
//! real clients: `systemd-notify` sends `READY=1` and then waits (its
//! `BARRIER=1` carries a pipe fd, which is closed here when it is read) so
//! it is alive when checked, and as root it sends on behalf of its parent
//! (the script), which is in the session too; a service that sends itself
//! stays alive anyway. A one-off helper of one's own must likewise not exit
//! before its message is read (`systemd-notify --ready` does this). A
//! zombie still has its stat, and a pid reused by then is judged as the
//! new process: it passes only if it is the instance's too. File
//! descriptors passed with a datagram are always closed.
//!
//! Long paths: a unix socket path is limited to 107 bytes (108 with its
//! NUL). When the path asked for is longer (a deep `state_dir`), the socket
//! is created instead as `notify.sock` inside a fresh private folder (mode
//! 0700, `stackctl-XXXXXX`) under `$XDG_RUNTIME_DIR`, or under `/tmp` when
//! that is unset or also too long. The folder is removed on drop.
//! [`NotifySocket::path`] always says where the socket really is: that is
//! what goes into `NOTIFY_SOCKET`.
//!
//! Owns: the socket, who may speak on it, parsing the messages. Must not
//! touch: what `READY=1` or `STATUS=` mean for the unit (its gate's).

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::spawn::identity::{proc_stat, ProcStat};

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The largest datagram read; longer ones are truncated (systemd reads 4 KiB).
const MAX_DATAGRAM: usize = 16 * 1024;

/// Senders whose ignored messages are logged, per socket (one line each).
const MAX_LOGGED_SENDERS: usize = 32;

/// One line of an sd_notify datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMsg {
    /// `READY=1`: startup finished.
    Ready,
    /// `STOPPING=1`: shutting down.
    Stopping,
    /// `STATUS=…`: free-form status text.
    Status(String),
    /// Any other `KEY=VALUE` (`MAINPID`, `WATCHDOG`, `RELOADING`, …); a line
    /// without `=` is `Other(line, "")`.
    Other(String, String),
}

impl NotifyMsg {
    /// Parses one datagram (newline-separated `KEY=VALUE` lines).
    pub fn parse(datagram: &[u8]) -> Vec<NotifyMsg> {
        String::from_utf8_lossy(datagram)
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once('=') {
                Some(("READY", "1")) => NotifyMsg::Ready,
                Some(("STOPPING", "1")) => NotifyMsg::Stopping,
                Some(("STATUS", v)) => NotifyMsg::Status(v.to_string()),
                Some((k, v)) => NotifyMsg::Other(k.to_string(), v.to_string()),
                None => NotifyMsg::Other(l.to_string(), String::new()),
            })
            .collect()
    }
}

/// A bound `NOTIFY_SOCKET` listener.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// The private folder made for a too-long path, removed on drop.
    fallback_dir: Option<PathBuf>,
    /// For log lines: the name the socket was asked for (the instance's).
    label: String,
    /// The instance's session (= its process group, = the spawned pid);
    /// 0 until [`NotifySocket::accept_session`].
    session: AtomicI32,
    /// Senders already logged as ignored.
    logged: Mutex<BTreeSet<i32>>,
}

impl std::os::fd::AsFd for NotifySocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Why a datagram was not heard. Names pids, never message values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Nothing of the instance runs yet.
    NotSpawned,
    /// No sender pid came with it (not visible in this pid namespace).
    NoSender,
    /// The sender had exited (and been reaped) before it could be checked.
    Gone(i32),
    /// The sender is someone else's.
    Stranger {
        pid: i32,
        session: i32,
        pgid: i32,
        expected: i32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotSpawned => f.write_str("the instance was not spawned yet"),
            Refusal::NoSender => f.write_str("it came without its sender's pid"),
            Refusal::Gone(pid) => write!(
                f,
                "pid {pid} had exited before it could be checked (a sender must stay until its message is read, as systemd-notify does)"
            ),
            Refusal::Stranger {
                pid,
                session,
                pgid,
                expected,
            } => write!(
                f,
                "pid {pid} (session {session}, process group {pgid}) is not a process of this instance (session {expected})"
            ),
        }
    }
}

/// Whether a datagram from `sender` is the instance's: its session or its
/// process group is `expected` (0: nothing spawned yet). `stat` is what
/// `/proc/<sender>/stat` said when the datagram was read.
pub(crate) fn admit(
    expected: i32,
    sender: Option<i32>,
    stat: impl FnOnce(i32) -> io::Result<ProcStat>,
) -> Result<(), Refusal> {
    if expected <= 0 {
        return Err(Refusal::NotSpawned);
    }
    let pid = match sender {
        Some(p) if p > 0 => p,
        _ => return Err(Refusal::NoSender),
    };
    match stat(pid) {
        Ok(st) if st.session == expected || st.pgid == expected => Ok(()),
        Ok(st) => Err(Refusal::Stranger {
            pid,
            session: st.session,
            pgid: st.pgid,
            expected,
        }),
        // Not found, or unreadable: either way it cannot be attributed.
        Err(_) => Err(Refusal::Gone(pid)),
    }
}

/// The keys of a datagram, for a log line (values may be anything).
fn keys(msgs: &[NotifyMsg]) -> String {
    let k: Vec<&str> = msgs
        .iter()
        .map(|m| match m {
            NotifyMsg::Ready => "READY=1",
            NotifyMsg::Stopping => "STOPPING=1",
            NotifyMsg::Status(_) => "STATUS",
            NotifyMsg::Other(k, _) => k.as_str(),
        })
        .collect();
    if k.is_empty() {
        "empty".into()
    } else {
        k.join(", ")
    }
}

impl NotifySocket {
    /// Binds a datagram socket at `path` (relative paths are made absolute),
    /// or in a private fallback folder when `path` is too long (see the
    /// module docs). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the stale file cannot be removed, or the socket cannot be bound
    /// or restricted to mode 0600.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        let path = std::path::absolute(path)?;
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (path, fallback_dir) = if path.as_os_str().len() <= MAX_SOCKET_PATH {
            (path, None)
        } else {
            let dir = private_dir()?;
            (dir.join("notify.sock"), Some(dir))
        };
        let bound = bind_at(&path);
        match bound {
            Ok(sock) => Ok(NotifySocket {
                sock,
                path,
                fallback_dir,
                label,
                session: AtomicI32::new(0),
                logged: Mutex::new(BTreeSet::new()),
            }),
            Err(e) => {
                if let Some(d) = &fallback_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                Err(e)
            }
        }
    }

    /// The socket a previous supervisor bound at `path` and left with the
    /// anchor (its fd comes back from there), hearing the instance whose
    /// session is `sid`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the fd is not a datagram socket tokio can watch.
    pub fn adopt(fd: std::os::fd::OwnedFd, path: PathBuf, sid: i32) -> io::Result<NotifySocket> {
        let std_sock = std::os::unix::net::UnixDatagram::from(fd);
        std_sock.set_nonblocking(true)?;
        let sock = UnixDatagram::from_std(std_sock)?;
        let label = path
            .parent()
            .and(path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(NotifySocket {
            sock,
            path,
            fallback_dir: None,
            label,
            session: AtomicI32::new(sid),
            logged: Mutex::new(BTreeSet::new()),
        })
    }

    /// Where the socket is: the value for the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on, hears only processes whose session or process group is
    /// `sid`: the spawned pid, which leads both (see the module docs).
    /// Until then nothing is heard.
    pub fn accept_session(&self, sid: i32) {
        self.session.store(sid, Ordering::Relaxed);
    }

    /// Waits for the next datagram from a process of the instance and
    /// parses it; any other is ignored and logged. Cancel safe.
    ///
    /// # Errors
    /// When reading the socket fails.
    pub async fn recv(&self) -> io::Result<Vec<NotifyMsg>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, sender, passed) = self
                .sock
                .async_io(Interest::READABLE, || {
                    recv_with_sender(self.sock.as_raw_fd(), &mut buf)
                })
                .await?;
            // Checked at once, and before the passed fds are closed: closing
            // a barrier's fd releases its sender (systemd-notify), which may
            // exit and be reaped at once, and would then look like a
            // stranger that has gone.
            let verdict = admit(self.session.load(Ordering::Relaxed), sender, proc_stat);
            drop(passed);
            let msgs = NotifyMsg::parse(&buf[..n]);
            match verdict {
                Ok(()) => return Ok(msgs),
                Err(why) => self.log_ignored(&msgs, sender, &why),
            }
        }
    }

    fn log_ignored(&self, msgs: &[NotifyMsg], sender: Option<i32>, why: &Refusal) {
        let pid = sender.unwrap_or(0);
        let mut logged = match self.logged.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if logged.contains(&pid) || logged.len() > MAX_LOGGED_SENDERS {
            return;
        }
        logged.insert(pid);
        let more = if logged.len() > MAX_LOGGED_SENDERS {
            "; further ignored senders on this socket are not logged"
        } else {
            ""
        };
        tracing::warn!(
            process = %self.label,
            "ignored a notify message ({}) from pid {pid}: {why}{more}",
            keys(msgs)
        );
    }

    /// Waits until a datagram says `READY=1`; returns the last `STATUS=`
    /// seen on the way, if any. Cancel safe (messages before the drop are
    /// consumed).
    ///
    /// # Errors
    /// When reading the socket fails.
    pub async fn ready(&self) -> io::Result<Option<String>> {
        let mut status = None;
        loop {
            let mut ready = false;
            for m in self.recv().await? {
                match m {
                    NotifyMsg::Ready => ready = true,
                    NotifyMsg::Status(s) => status = Some(s),
                    NotifyMsg::Stopping | NotifyMsg::Other(..) => {}
                }
            }
            if ready {
                return Ok(status);
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.fallback_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Reads one datagram into `buf` without blocking: its length, the
/// sender's pid as the kernel gave it, and any fds passed along with it
/// (the caller closes them once it has checked the sender: systemd-notify's
/// barrier waits for exactly that close).
fn recv_with_sender(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<i32>, Vec<std::os::fd::OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::ucred, [RawFd; 16]);
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let n = msg.bytes;
    let mut sender = None;
    let mut passed = Vec::new();
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::ScmCredentials(cred) => sender = Some(cred.pid()),
            ControlMessageOwned::ScmRights(fds) => {
                for f in fds {
                    // SAFETY: the kernel just installed `f` in this process
                    // for this message; nothing else owns it.
                    #[allow(unsafe_code)]
                    passed.push(unsafe {
                        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(f)
                    });
                }
            }
            _ => {}
        }
    }
    Ok((n, sender, passed))
}

fn bind_at(path: &Path) -> io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
    // Every datagram then carries its sender's pid, attached by the kernel.
    if let Err(e) = setsockopt(&sock, sockopt::PassCred, &true) {
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    // The folder it lives in is private (state_dir is 0700, the fallback is
    // 0700), so the moment between bind and chmod exposes nothing.
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(sock)
}

/// A fresh 0700 folder for a socket whose own path is too long.
fn private_dir() -> io::Result<PathBuf> {
    let mut bases = Vec::new();
    if let Some(rt) = std::env::var_os("XDG_RUNTIME_DIR") {
        let rt = PathBuf::from(rt);
        if rt.is_absolute() && rt.is_dir() {
            bases.push(rt);
        }
    }
    bases.push(PathBuf::from("/tmp"));
    // "/stackctl-XXXXXX/notify.sock" adds 28 bytes to the base.
    let base = bases
        .into_iter()
        .find(|b| b.as_os_str().len() + 28 <= MAX_SOCKET_PATH)
        .ok_or_else(|| io::Error::other("no folder short enough for a notify socket"))?;
    Ok(nix::unistd::mkdtemp(&base.join("stackctl-XXXXXX"))?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;
    use std::time::Duration;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    const SEND: &str = "import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
        s.sendto(b\"READY=1\\nSTATUS=warming\", os.environ[\"NOTIFY_SOCKET\"])";

    /// A python3 stand-in in its own session (as the supervisor spawns
    /// one), with `NOTIFY_SOCKET` set; its group is killed on drop.
    struct Sender {
        pid: i32,
        out: std::io::BufReader<std::fs::File>,
    }

    impl Sender {
        /// Runs `code`, then `print("sent")`, then sleeps until killed.
        fn start(sock: &Path, code: &str) -> Sender {
            let mut env: Vec<(String, String)> = std::env::vars().collect();
            env.push(("NOTIFY_SOCKET".into(), sock.display().to_string()));
            let code = format!("{code}\nprint('sent', flush=True)\nimport time; time.sleep(600)");
            let argv = vec!["python3".to_string(), "-c".to_string(), code];
            let sp = crate::spawn::spawn(&argv, Path::new("/"), &env, true).unwrap();
            let out = std::fs::File::from(sp.output.unwrap());
            Sender {
                pid: sp.pid,
                out: std::io::BufReader::new(out),
            }
        }

        /// Blocks until the stand-in said it has sent everything.
        fn wait_sent(&mut self) {
            use std::io::BufRead;
            let mut line = String::new();
            self.out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "sent", "the stand-in failed");
        }
    }

    impl Drop for Sender {
        fn drop(&mut self) {
            let _ = crate::spawn::signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn stat(session: i32, pgid: i32) -> io::Result<ProcStat> {
        Ok(ProcStat {
            state: 'S',
            ppid: 1,
            pgid,
            session,
            start_ticks: 1,
        })
    }

    #[test]
    fn admits_only_the_instances_session_or_group() {
        let gone = |_| Err(io::Error::from(io::ErrorKind::NotFound));
        // (expected session, sender pid, its session and group), verdict.
        assert_eq!(admit(700, Some(700), |_| stat(700, 700)), Ok(()));
        // A child under `sh -c`, systemd-notify from a script: same session.
        assert_eq!(admit(700, Some(705), |_| stat(700, 700)), Ok(()));
        // Its own group inside the session (a job-control shell): still ours.
        assert_eq!(admit(700, Some(705), |_| stat(700, 705)), Ok(()));
        // Left the session with setsid but kept the group? Only the group.
        assert_eq!(admit(700, Some(705), |_| stat(705, 700)), Ok(()));
        assert_eq!(
            admit(700, Some(900), |_| stat(800, 900)),
            Err(Refusal::Stranger {
                pid: 900,
                session: 800,
                pgid: 900,
                expected: 700
            })
        );
        assert_eq!(admit(700, Some(705), gone), Err(Refusal::Gone(705)));
        assert_eq!(admit(700, None, |_| stat(700, 700)), Err(Refusal::NoSender));
        assert_eq!(
            admit(700, Some(0), |_| stat(700, 700)),
            Err(Refusal::NoSender)
        );
        assert_eq!(
            admit(0, Some(700), |_| stat(700, 700)),
            Err(Refusal::NotSpawned)
        );
        let why = Refusal::Stranger {
            pid: 900,
            session: 800,
            pgid: 900,
            expected: 700,
        }
        .to_string();
        assert!(
            why.contains("pid 900") && why.contains("session 700"),
            "{why}"
        );
    }

    #[test]
    fn parses_lines() {
        assert_eq!(
            NotifyMsg::parse(b"READY=1\nSTATUS=warming up\nMAINPID=42\n\nSTOPPING=1\nodd"),
            vec![
                NotifyMsg::Ready,
                NotifyMsg::Status("warming up".into()),
                NotifyMsg::Other("MAINPID".into(), "42".into()),
                NotifyMsg::Stopping,
                NotifyMsg::Other("odd".into(), String::new()),
            ]
        );
        assert_eq!(
            NotifyMsg::parse(b"READY=0"),
            vec![NotifyMsg::Other("READY".into(), "0".into())]
        );
    }

    #[tokio::test]
    async fn receives_from_a_python_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.notify");
        // A stale file is replaced.
        std::fs::write(&path, "stale").unwrap();
        let s = NotifySocket::bind(&path).unwrap();
        assert_eq!(s.path(), path);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let mut sender = Sender::start(s.path(), SEND);
        s.accept_session(sender.pid);
        sender.wait_sent();
        let msgs = tokio::time::timeout(DEADLINE, s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            msgs,
            vec![NotifyMsg::Ready, NotifyMsg::Status("warming".into())]
        );
        drop(s);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[tokio::test]
    async fn ready_waits_past_other_messages() {
        let dir = tempfile::tempdir().unwrap();
        let s = NotifySocket::bind(&dir.path().join("w.notify")).unwrap();
        let code = "import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
            p=os.environ['NOTIFY_SOCKET']; s.sendto(b'STATUS=migrating', p); \
            s.sendto(b'STATUS=loading model', p); s.sendto(b'READY=1', p)";
        let sender = Sender::start(s.path(), code);
        s.accept_session(sender.pid);
        let status = tokio::time::timeout(DEADLINE, s.ready())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.as_deref(), Some("loading model"));
    }

    #[tokio::test]
    async fn a_too_long_path_falls_back_to_a_private_folder() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let asked = deep.join("worker-embeddings-batch.2.notify");
        assert!(asked.as_os_str().len() > MAX_SOCKET_PATH);
        let s = NotifySocket::bind(&asked).unwrap();
        let real = s.path().to_path_buf();
        assert!(
            real.as_os_str().len() <= MAX_SOCKET_PATH,
            "{}",
            real.display()
        );
        let folder = real.parent().unwrap().to_path_buf();
        assert_eq!(
            std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!asked.exists());

        let sender = Sender::start(&real, SEND);
        s.accept_session(sender.pid);
        let msgs = tokio::time::timeout(DEADLINE, s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msgs[0], NotifyMsg::Ready);
        drop(s);
        assert!(!folder.exists(), "the fallback folder is removed on drop");
    }

    #[tokio::test]
    async fn a_stranger_is_not_heard() {
        let dir = tempfile::tempdir().unwrap();
        let s = NotifySocket::bind(&dir.path().join("api.sock")).unwrap();
        // Before the instance is spawned, nobody is heard.
        let mut early = Sender::start(s.path(), SEND);
        early.wait_sent();
        // The instance waits for a go file before it speaks; it is not the
        // test process (whose session may be 0: its leader can live outside
        // a container's pid namespace).
        let go = dir.path().join("go");
        let wait_go = format!(
            "import os,time\nt=time.time()+20\n\
             while not os.path.exists({go:?}) and time.time()<t: time.sleep(0.01)\n\
             socket=__import__('socket')\n\
             socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'STATUS=mine\\nREADY=1', os.environ['NOTIFY_SOCKET'])",
            go = go.display().to_string()
        );
        let mut instance = Sender::start(s.path(), &wait_go);
        s.accept_session(instance.pid);
        // A live process of another session (its own, as any stray has).
        let mut stranger = Sender::start(s.path(), SEND);
        stranger.wait_sent();
        assert_ne!(stranger.pid, instance.pid);
        // Then the instance speaks: its message is the first one heard.
        std::fs::write(&go, "").unwrap();
        instance.wait_sent();
        let msgs = tokio::time::timeout(DEADLINE, s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            msgs,
            vec![NotifyMsg::Status("mine".into()), NotifyMsg::Ready]
        );
        let logged = s.logged.lock().unwrap().clone();
        assert!(logged.contains(&stranger.pid), "{logged:?}");
        assert!(logged.contains(&early.pid), "{logged:?}");
    }

    #[tokio::test]
    async fn a_sender_gone_before_its_message_is_read_is_not_heard() {
        let dir = tempfile::tempdir().unwrap();
        let s = NotifySocket::bind(&dir.path().join("w.sock")).unwrap();
        // The leader's child sends READY=1 and exits; the leader reaps it,
        // then sends a STATUS of its own and says it is done.
        let code = "import socket,os\n\
            p=os.environ['NOTIFY_SOCKET']\n\
            k=os.fork()\n\
            if k==0:\n    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', p); os._exit(0)\n\
            os.waitpid(k, 0)\n\
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'STATUS=leader', p)";
        let mut leader = Sender::start(s.path(), code);
        s.accept_session(leader.pid);
        leader.wait_sent();
        let msgs = tokio::time::timeout(DEADLINE, s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msgs, vec![NotifyMsg::Status("leader".into())]);
    }

    #[tokio::test]
    async fn fds_passed_with_a_message_are_closed() {
        // systemd-notify's barrier: a pipe's write end goes along with
        // `BARRIER=1`, and the sender waits until it is closed.
        let dir = tempfile::tempdir().unwrap();
        let s = NotifySocket::bind(&dir.path().join("b.sock")).unwrap();
        let barrier = "import socket,os,array,select\n\
            r,w=os.pipe()\n\
            c=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
            c.sendmsg([b'BARRIER=1'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i',[w]))], 0, os.environ['NOTIFY_SOCKET'])\n\
            os.close(w)\n\
            print('sent', flush=True)\n\
            ok=select.select([r],[],[],20)[0] and os.read(r,1)==b''\n\
            print('closed' if ok else 'still open', flush=True)";
        let mut sender = Sender::start(s.path(), barrier);
        s.accept_session(sender.pid);
        sender.wait_sent();
        let msgs = tokio::time::timeout(DEADLINE, s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msgs, vec![NotifyMsg::Other("BARRIER".into(), "1".into())]);
        // Every write end is closed now: the sender's read gives
        // end-of-file (it gives up after 20 s and says so).
        use std::io::BufRead;
        let mut line = String::new();
        sender.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "closed");
    }
}
