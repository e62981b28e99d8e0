//! The anchor's wire: messages between the anchor and the supervisor (or
//! a CLI), one JSON object per `SOCK_SEQPACKET` message, file descriptors
//! beside it as `SCM_RIGHTS`.
//!
//! Owns: the message types, their versioning, and sending and receiving
//! one message with its fds (non-blocking; the caller waits for
//! readiness). Must not touch: what either side does with a message.
//!
//! Why a packet socket: each `recvmsg` returns exactly one message and the
//! fds that came with it, so no framing and no fd can be attributed to the
//! wrong message.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::spawn::Exit;

/// Bumped on any incompatible change. An anchor and a supervisor of
/// different versions refuse each other, naming both; `stackctl upgrade`
/// re-executes the anchor first, so they never differ after it.
pub const VERSION: u32 = 1;

/// The largest message (a spawn request carries a whole environment).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The kept value (`ToAnchor::Put`) holding the supervisor's base
/// environment as a JSON object, once an operator gave it a new one
/// (`--update-env`): the anchor launches the next supervisor with it (and
/// its own `STACKCTL_*` variables) instead of its own environment.
pub const BASE_ENV_KEY: &str = "env/base";

/// At most this many fds travel with one message.
pub const MAX_FDS: usize = 16;

/// Who connects to the anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The stack's supervisor (one at a time).
    Supervisor { pid: i32 },
    /// A command line asking for something (a launch, a retirement).
    Client,
}

/// What a finished child's exit status is, as far as anyone can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitRec {
    Code(i32),
    Signal(i32),
    /// Not our child (its anchor died and a new one watched it): gone,
    /// status unknown.
    Unknown,
}

impl From<Exit> for ExitRec {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Code(c) => ExitRec::Code(c),
            Exit::Signal(s) => ExitRec::Signal(s),
            Exit::Unknown => ExitRec::Unknown,
        }
    }
}

impl From<ExitRec> for Exit {
    fn from(e: ExitRec) -> Self {
        match e {
            ExitRec::Code(c) => Exit::Code(c),
            ExitRec::Signal(s) => Exit::Signal(s),
            ExitRec::Unknown => Exit::Unknown,
        }
    }
}

/// Where a child's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTarget {
    pub path: PathBuf,
    pub max_size: u64,
    pub keep: u32,
    pub timestamps: bool,
}

/// The run markers a spawn gets in its log (`logs::marker`): which
/// attempt of its instance it is, and what it is when not the process
/// itself (`pre_start 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMark {
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

/// A process to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnReq {
    /// Chosen by the supervisor; the reply carries it back.
    pub id: u64,
    /// The instance (`api`, `worker.2`): whose log, and a name for logs.
    pub instance: String,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: LogTarget,
    /// A regex: the anchor says `Matched` at the first line that matches.
    #[serde(default)]
    pub watch: Option<String>,
    /// Keys of held fds (listening sockets) the process gets at fds 3, 4,
    /// … in this order (`spawn::listen`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// The `pre_start` command (its index) this process runs; `None`: the
    /// instance's own command.
    #[serde(default)]
    pub step: Option<u32>,
    /// Write run markers for it into its log (none: markers are off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<RunMark>,
}

/// A live process of the stack, as the anchor knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    pub instance: String,
    pub pid: i32,
    pub start_ticks: u64,
    /// The `watch` regex matched already.
    pub matched: bool,
    /// It has exited and nobody acknowledged that yet.
    pub exit: Option<ExitRec>,
    /// Where its output goes (the pipe itself travels beside the message).
    pub log: LogTarget,
    pub watch: Option<String>,
    /// As [`SpawnReq::step`].
    #[serde(default)]
    pub step: Option<u32>,
    /// Its run markers (the start one is written; the end one is due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<RunMark>,
}

/// Messages to the anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub enum ToAnchor {
    /// The first message of a connection.
    Hello {
        role: Role,
        version: u32,
    },
    Spawn(SpawnReq),
    /// The exit of `pid` has been acted on: forget it.
    Ack {
        pid: i32,
    },
    /// Keep `value` under `key` for the next supervisor.
    Put {
        key: String,
        value: String,
    },
    Del {
        key: String,
    },
    /// Keep the fd that comes with this message under `key` (replacing and
    /// closing any other).
    Hold {
        key: String,
    },
    /// Close the fd kept under `key`.
    Release {
        key: String,
    },
    /// Take over a live process whose anchor died (its pipe comes with
    /// the message): pump its output, watch it.
    Adopt(ChildInfo),
    /// From a client: launch a supervisor now, unless one runs; the
    /// answer (`Done`) comes once a supervisor serves. From the serving
    /// supervisor it is a barrier: `Done` at once, after everything it
    /// sent before (`client::Link::synced`).
    Launch,
    /// Launch no more supervisors; exit once no child is left.
    Retire,
    /// The supervisor answers on its control socket now.
    Serving,
    /// The supervisor leaves on purpose: `relaunch` (an upgrade: start the
    /// binary at `exe` at once) or not (the stack is stopped).
    Bye {
        relaunch: bool,
        exe: Option<PathBuf>,
    },
    /// Re-execute the anchor itself from `exe`, keeping every child.
    Upgrade {
        exe: PathBuf,
    },
}

/// Messages from the anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub enum FromAnchor {
    /// The answer to `Hello`; for a supervisor, the inventory follows.
    Welcome {
        version: u32,
        anchor_pid: i32,
        stackctl: String,
    },
    /// Inventory: a live (or exited, unacknowledged) process; its pipe
    /// comes with the message when it is still open.
    Child(ChildInfo),
    /// Inventory: an fd kept under `key` comes with the message.
    Held {
        key: String,
    },
    /// Inventory: a kept value.
    Value {
        key: String,
        value: String,
    },
    /// The inventory is complete.
    Inventoried,
    /// A spawn worked; a copy of the output pipe's read end comes with it.
    Spawned {
        id: u64,
        pid: i32,
        start_ticks: u64,
    },
    SpawnFailed {
        id: u64,
        error: String,
    },
    /// A child exited (its output is drained, or 2 s passed).
    Exited {
        pid: i32,
        exit: ExitRec,
    },
    /// The `watch` of `pid` saw its line.
    Matched {
        pid: i32,
    },
    /// What is wrong with an instance's log now (`None`: nothing).
    LogState {
        instance: String,
        error: Option<String>,
    },
    /// A request was refused (another supervisor is connected, a version
    /// differs).
    Refused {
        reason: String,
    },
    /// A client request was carried out.
    Done,
}

/// Encodes `msg` for the wire.
///
/// # Errors
/// When it does not serialize or is larger than [`MAX_MESSAGE`].
pub fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {} bytes is over {MAX_MESSAGE}", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Sends one encoded message with `fds`, without blocking.
///
/// # Errors
/// `WouldBlock` when the peer's queue is full; any other socket error.
pub fn send_raw(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One received message, decoded, and the fds that came with it.
///
/// # Errors
/// `WouldBlock` when nothing is there; `UnexpectedEof` when the peer
/// closed; `InvalidData` for a message that does not decode.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(T, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = loop {
            match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => break m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for f in raw {
                    // SAFETY: the kernel just installed `f` in this process
                    // for us (SCM_RIGHTS); nothing else owns it.
                    #[allow(unsafe_code)]
                    fds.push(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message over the size limit was cut",
            ));
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer is gone",
        ));
    }
    let msg = serde_json::from_slice(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad message: {e}")))?;
    Ok((msg, fds))
}

/// Messages waiting to be sent on a non-blocking socket whose peer's
/// queue may be full: sent in order as the socket takes them.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
}

impl Outbox {
    /// Queues `msg` (with `fds`, sent as copies, closed here once sent).
    ///
    /// # Errors
    /// When it does not encode.
    pub fn push<T: Serialize>(&mut self, msg: &T, fds: Vec<OwnedFd>) -> io::Result<()> {
        self.queue.push_back((encode(msg)?, fds));
        Ok(())
    }

    /// Sends what the socket takes now. `Ok(true)`: all sent.
    ///
    /// # Errors
    /// A socket error other than a full queue (the peer is gone).
    pub fn flush(&mut self, sock: BorrowedFd<'_>) -> io::Result<bool> {
        while let Some((bytes, fds)) = self.queue.front() {
            let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            match send_raw(sock, bytes, &raw) {
                Ok(()) => {
                    self.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_message_and_its_fds_arrive_together() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        let msg = FromAnchor::Spawned {
            id: 7,
            pid: 1234,
            start_ticks: 99,
        };
        let mut out = Outbox::default();
        out.push(&msg, vec![r]).unwrap();
        assert!(out.flush(a.as_fd()).unwrap());
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (got, fds): (FromAnchor, _) = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 1);
        // The fd is the pipe's read end: what is written arrives there.
        nix::unistd::write(&w, b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(fds[0].as_raw_fd(), &mut one).unwrap(), 1);
        // Nothing more: would block; the peer gone: end of file.
        let e = recv::<FromAnchor>(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        let e = recv::<FromAnchor>(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn messages_are_flat_json_with_a_tag() {
        let s = String::from_utf8(encode(&ToAnchor::Ack { pid: 5 }).unwrap()).unwrap();
        assert_eq!(s, r#"{"m":"ack","pid":5}"#);
        let e = ExitRec::from(Exit::Signal(9));
        assert_eq!(Exit::from(e), Exit::Signal(9));
    }

    #[test]
    fn garbage_is_invalid_data_not_a_panic() {
        let (a, b) = pair();
        send_raw(a.as_fd(), b"{not json", &[]).unwrap();
        let mut buf = vec![0u8; 1024];
        let e = recv::<ToAnchor>(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
