//! stackctl as a systemd service (`Type=notify`): telling the service
//! manager about stackctl itself through the `NOTIFY_SOCKET` it was
//! started with — `READY=1` once the stack is up, `STATUS=` a one-line
//! summary as it changes, `STOPPING=1` when the stack is being stopped
//! (sd_notify(3)). Without `NOTIFY_SOCKET` every call does nothing.
//!
//! Not the `notify` readiness gate (`probe::notify`, where stackctl is the
//! manager and a stack process the sender); that variable never reaches a
//! stack process (`supervisor`'s environment filter) nor the anchor.
//!
//! Owns: the socket address and sending one datagram. Must not touch: when
//! to say what (the daemon decides).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where to tell the manager, if one listens.
#[derive(Debug, Clone)]
pub struct Manager {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// `@name`: a socket in the abstract namespace.
    Abstract(Vec<u8>),
}

impl Manager {
    /// The manager named by `NOTIFY_SOCKET`, if set.
    pub fn from_env() -> Option<Manager> {
        Manager::at(&std::env::var_os("NOTIFY_SOCKET")?.to_string_lossy())
    }

    /// The manager at `addr` (a path, or `@name`).
    pub fn at(addr: &str) -> Option<Manager> {
        if addr.is_empty() {
            return None;
        }
        let target = match addr.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(PathBuf::from(addr)),
        };
        Some(Manager { target })
    }

    /// Sends `lines` (`KEY=VALUE` each) as one datagram.
    ///
    /// # Errors
    /// When it cannot be sent (the manager is gone).
    pub fn send(&self, lines: &[String]) -> io::Result<()> {
        let mut msg = lines.join("\n");
        msg.push('\n');
        let sock = UnixDatagram::unbound()?;
        match &self.target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr).map(|_| ())
            }
        }
    }
}

/// A `STATUS=` line: one line, however the text is.
pub fn status(text: &str) -> String {
    format!("STATUS={}", text.replace('\n', " "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_the_manager_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let m = Manager::at(&path.display().to_string()).unwrap();
        m.send(&["READY=1".into(), status("stack up\nreally")])
            .unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=stack up really\n");
        assert!(Manager::at("").is_none());
        // The abstract namespace.
        let name = format!("stackctl-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = UnixDatagram::bind_addr(&addr).unwrap();
        Manager::at(&format!("@{name}"))
            .unwrap()
            .send(&["STOPPING=1".into()])
            .unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
