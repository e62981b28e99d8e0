//! The CLI side: connect to the supervisor, send one request, read answers.
//!
//! Owns: the client end of the socket and reading answers. Must not touch:
//! launching a supervisor (`cli::session`), what the answers mean.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::protocol::{Envelope, Request, Response};

/// An open connection to a running supervisor.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Whether a supervisor answered.
pub enum Connect {
    Connected(Client),
    /// Nobody listens at the socket (no file, a stale file, refused).
    NoSupervisor,
}

impl Client {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// Failures other than "nobody is listening" (e.g. permission denied).
    pub fn connect(path: &Path) -> io::Result<Connect> {
        let (addr, dir) = match super::socket_address(path) {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Connect::NoSupervisor),
            Err(e) => return Err(e),
        };
        let connected = UnixStream::connect(&addr);
        drop(dir);
        match connected {
            Ok(s) => {
                let w = s.try_clone()?;
                Ok(Connect::Connected(Client {
                    reader: BufReader::new(s),
                    writer: w,
                }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(Connect::NoSupervisor)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `req`.
    ///
    /// # Errors
    /// When the supervisor is gone.
    pub fn send(&mut self, req: Request) -> io::Result<()> {
        self.send_envelope(&Envelope::new(req))
    }

    /// Sends `req`, asking for live progress too (`Envelope::live`).
    ///
    /// # Errors
    /// When the supervisor is gone.
    pub fn send_live(&mut self, req: Request) -> io::Result<()> {
        self.send_envelope(&Envelope::live(req))
    }

    fn send_envelope(&mut self, env: &Envelope) -> io::Result<()> {
        let mut line = serde_json::to_string(env).map_err(io::Error::other)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        self.writer.flush()
    }

    /// The next answer; `None` when the supervisor closed the connection.
    ///
    /// # Errors
    /// Read errors, or an answer that is not protocol JSON.
    pub fn recv(&mut self) -> io::Result<Option<Response>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unexpected answer from the supervisor ({e}): {}",
                    line.trim()
                ),
            )
        })
    }
}
