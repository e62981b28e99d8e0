//! The `notify` gate: the sd_notify datagram protocol, as with systemd's
//! `Type=notify`. The process finds `NOTIFY_SOCKET` in its environment and
//! sends datagrams of newline-separated `KEY=VALUE` lines to it; `READY=1`
//! passes the gate. One socket per process instance, so a message is
//! attributed by the socket it arrives on (no credential passing needed).
//!
//! The socket file is created mode 0600 (only the owning user may send; a
//! stale file from an earlier run is removed first) and removed again when
//! the [`NotifySocket`] is dropped.
//!
//! Long paths: a unix socket path is limited to 107 bytes (108 with its
//! NUL). When the path asked for is longer (a deep `state_dir`), the socket
//! is created instead as `notify.sock` inside a fresh private folder (mode
//! 0700, `stackctl-XXXXXX`) under `$XDG_RUNTIME_DIR`, or under `/tmp` when
//! that is unset or also too long. The folder is removed on drop.
//! [`NotifySocket::path`] always says where the socket really is: that is
//! what goes into `NOTIFY_SOCKET`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The largest datagram read; longer ones are truncated (systemd reads 4 KiB).
const MAX_DATAGRAM: usize = 16 * 1024;

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
            }),
            Err(e) => {
                if let Some(d) = &fallback_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                Err(e)
            }
        }
    }

    /// Where the socket is: the value for the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next datagram and parses it. Cancel safe.
    ///
    /// # Errors
    /// When reading the socket fails.
    pub async fn recv(&self) -> io::Result<Vec<NotifyMsg>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = self.sock.recv(&mut buf).await?;
        Ok(NotifyMsg::parse(&buf[..n]))
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

fn bind_at(path: &Path) -> io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
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
    use crate::config::CommandSpec;

    const DEADLINE: Duration = Duration::from_secs(20);

    const SEND: &str = "import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
        s.sendto(b\"READY=1\\nSTATUS=warming\", os.environ[\"NOTIFY_SOCKET\"])";

    /// Runs python3 `code` with `NOTIFY_SOCKET` set, through the one-shot path.
    async fn send_with_python(sock: &Path, code: &str) {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.push(("NOTIFY_SOCKET".into(), sock.display().to_string()));
        let cmd = CommandSpec::Argv(vec!["python3".into(), "-c".into(), code.into()]);
        let r = crate::spawn::run_oneshot(&cmd, Path::new("/"), &env, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            crate::spawn::OneshotOutcome::Exited(0),
            "{}",
            r.output
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

        send_with_python(s.path(), SEND).await;
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
        send_with_python(s.path(), code).await;
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

        send_with_python(&real, SEND).await;
        let msgs = tokio::time::timeout(DEADLINE, s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msgs[0], NotifyMsg::Ready);
        drop(s);
        assert!(!folder.exists(), "the fallback folder is removed on drop");
    }
}
