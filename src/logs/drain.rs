//! Draining one child output pipe into its log, a read at a time, for an
//! event loop that watches many pipes at once (the anchor's).
//!
//! Owns: what is read but not yet written (the start of a line, held so
//! that rotation sees whole lines), when a held partial line is written
//! anyway, and cutting the stream into lines for whoever watches them.
//! Must not touch: the file (the [`Sink`] does), waiting (the caller's
//! loop polls; this never blocks on the pipe).
//!
//! Each read's complete lines are written at once, in one `write(2)` when
//! no rotation falls inside them; a trailing partial line waits at most
//! [`PARTIAL_WAIT`] for its end (so a rotation can see the whole line) and
//! is then written anyway, so a prompt without a newline reaches the file
//! promptly. Nothing read is ever dropped: back-pressure is the pipe's (a
//! child that writes faster than the disk fills its pipe and blocks).
//!
//! A pipe that streams (a read found at least [`BUSY_READ`] bytes) rests
//! for [`REST`]: its caller leaves it out of its `poll` until then, and
//! reads it at the end of the rest. A writer whose reader sleeps in `poll`
//! pays a cross-CPU wake-up on every `write(2)`, which costs more than the
//! copy on a virtual machine; resting, the pipe fills (the caller makes it
//! big: [`STREAM_PIPE`]) and is read in large chunks, a few hundred
//! wake-ups for 100 MB instead of one per write. A prompt line costs no
//! rest: only a read that found a full chunk starts one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::Sink;

/// How long a partial line waits for its end before it is written anyway.
pub const PARTIAL_WAIT: Duration = Duration::from_millis(25);

/// What a watcher of lines is given of one line at most; the file gets all.
pub const TAP_LINE_MAX: usize = 64 * 1024;

/// The read buffer a caller should give [`Drain::read`]: a line longer
/// than this is still kept whole in the file, only written in pieces.
pub const READ_BUF: usize = 128 * 1024;

/// A read of at least this many bytes means the writer streams: the pipe
/// rests (see the module doc).
const BUSY_READ: usize = 4096;

/// How long a streaming pipe is left to fill before it is read again: at
/// 300 MB/s, about a third of [`STREAM_PIPE`], so the writer never finds
/// it full for want of a reader; at most this much later in the file.
const REST: Duration = Duration::from_millis(1);

/// The capacity a caller gives a pipe once it streams, where the kernel
/// allows (an unprivileged process is limited by `pipe-max-size` and
/// `pipe-user-pages-soft`, and keeps the size it had).
const STREAM_PIPE: usize = 1024 * 1024;

/// What one read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Data was read (and written as far as it forms lines).
    Data,
    /// Nothing there now.
    Empty,
    /// Every writer closed the pipe.
    Eof,
}

/// The state of one pipe being drained.
#[derive(Debug, Default)]
pub struct Drain {
    /// The start of a line, read and not yet written.
    partial: Vec<u8>,
    /// When `partial` last grew: it is written at this plus [`PARTIAL_WAIT`].
    since: Option<Instant>,
    /// The file has a partial line of ours (written after the wait): its
    /// continuation is written at once, nothing left to decide.
    open_line: bool,
    /// Streaming: not to be polled until then (see the module doc).
    rest_until: Option<Instant>,
    /// The pipe was given [`STREAM_PIPE`] (asked once).
    grown: bool,
    /// The line being assembled for the watcher, cut at [`TAP_LINE_MAX`].
    line: Vec<u8>,
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Reads what `pipe` has (once, without blocking) through `scratch`,
    /// writes every complete line to `sink`, and gives `on_line` each
    /// complete line (without its newline).
    ///
    /// # Errors
    /// A read error other than "nothing now" (the pipe is then done with).
    pub fn read(
        &mut self,
        pipe: BorrowedFd<'_>,
        scratch: &mut [u8],
        sink: &mut Sink,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Read> {
        if self.partial.len() >= scratch.len() {
            // A line longer than the buffer: it is kept whole anyway.
            sink.write(&self.partial);
            self.partial.clear();
            self.open_line = true;
        }
        let held = self.partial.len();
        scratch[..held].copy_from_slice(&self.partial);
        let n = loop {
            match nix::unistd::read(pipe.as_raw_fd(), &mut scratch[held..]) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => {
                    // Empty once its rest is over: the writer paused.
                    if self.rest_until.is_some_and(|t| t <= Instant::now()) {
                        self.rest_until = None;
                    }
                    return Ok(Read::Empty);
                }
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            self.rest_until = None;
            return Ok(Read::Eof);
        }
        self.pace(pipe, n);
        self.feed_lines(&scratch[held..held + n], on_line);
        let data = &scratch[..held + n];
        let keep_from = match memchr::memrchr(b'\n', &data[held..]) {
            Some(i) => held + i + 1,
            None if self.open_line => data.len(),
            None => 0,
        };
        if keep_from > 0 {
            sink.write(&data[..keep_from]);
            self.open_line = false;
        }
        self.partial.clear();
        self.partial.extend_from_slice(&data[keep_from..]);
        self.since = (!self.partial.is_empty()).then(Instant::now);
        Ok(Read::Data)
    }

    /// What is held and not yet written, and whether the file has an open
    /// line of ours: to carry a drain across an `execve` ([`Drain::resume`]).
    pub fn held(&self) -> (&[u8], bool) {
        (&self.partial, self.open_line)
    }

    /// A drain that goes on from what [`Drain::held`] said.
    pub fn resume(partial: Vec<u8>, open_line: bool) -> Drain {
        let since = (!partial.is_empty()).then(Instant::now);
        Drain {
            partial,
            since,
            open_line,
            line: Vec::new(),
            ..Drain::default()
        }
    }

    /// A read of `n` bytes: a full chunk starts a rest, anything less ends
    /// it (the writer paused: the next write should wake the reader).
    fn pace(&mut self, pipe: BorrowedFd<'_>, n: usize) {
        if n < BUSY_READ {
            self.rest_until = None;
            return;
        }
        self.rest_until = Some(Instant::now() + REST);
        if !self.grown {
            self.grown = true;
            // Refused without privilege past the limits: it keeps its size.
            let size = i32::try_from(STREAM_PIPE).unwrap_or(i32::MAX);
            let _ = nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
        }
    }

    /// Until when the pipe rests: its caller does not poll it before, and
    /// reads it then (see the module doc).
    pub fn resting(&self) -> Option<Instant> {
        self.rest_until
    }

    /// When the held partial line is to be written anyway, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + PARTIAL_WAIT)
    }

    /// Writes the held partial line now (its wait is over).
    pub fn flush_partial(&mut self, sink: &mut Sink) {
        if !self.partial.is_empty() {
            sink.write(&self.partial);
            self.partial.clear();
            self.open_line = true;
        }
        self.since = None;
    }

    /// The pipe ended: what is held is written, a last line without its
    /// newline is ended (the next process's first line starts on its own),
    /// and the watcher gets it too.
    pub fn finish(&mut self, sink: &mut Sink, on_line: &mut dyn FnMut(&[u8])) {
        self.flush_partial(sink);
        sink.end_line();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            on_line(&line);
        }
        self.open_line = false;
    }

    fn feed_lines(&mut self, data: &[u8], on_line: &mut dyn FnMut(&[u8])) {
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.line.is_empty() {
                on_line(&rest[..i.min(TAP_LINE_MAX)]);
            } else {
                self.keep(&rest[..i]);
                on_line(&self.line);
                self.line.clear();
            }
            rest = &rest[i + 1..];
        }
        self.keep(rest);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = TAP_LINE_MAX.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};

    use super::*;
    use crate::config::LogSettings;

    fn sink(dir: &tempfile::TempDir) -> Sink {
        let settings = LogSettings {
            max_size: u64::MAX,
            keep: 1,
            timestamps: false,
            markers: true,
        };
        Sink::open(dir.path().join("x.log"), settings).unwrap()
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        (r, w)
    }

    fn pipe_size(fd: &OwnedFd) -> i32 {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap()
    }

    /// Whether this process may give a pipe [`STREAM_PIPE`].
    fn may_grow() -> bool {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        max >= STREAM_PIPE || nix::unistd::geteuid().is_root()
    }

    #[test]
    fn a_streaming_pipe_rests_grows_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(&dir);
        let (r, w) = pipe();
        // Whole lines, more than a full chunk.
        let line = [[b'x'; 99].as_slice(), b"\n"].concat();
        let chunk = line.repeat(BUSY_READ / 100 * 4);
        nix::unistd::write(&w, &chunk).unwrap();
        let mut drain = Drain::new();
        let mut scratch = vec![0u8; READ_BUF];
        let before = Instant::now();
        let got = drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(got, Read::Data);
        let until = drain.resting().expect("a full chunk starts a rest");
        assert!(until >= before + REST && until <= Instant::now() + REST);
        if may_grow() {
            assert_eq!(pipe_size(&r), i32::try_from(STREAM_PIPE).unwrap());
        }
        // Read within its rest, the pipe is empty: the rest goes on.
        let got = drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(got, Read::Empty);
        assert_eq!(drain.resting(), Some(until));
        let file = std::fs::read(dir.path().join("x.log")).unwrap();
        assert!(
            file == chunk,
            "{} bytes in the file of {}",
            file.len(),
            chunk.len()
        );
    }

    #[test]
    fn a_prompt_line_costs_no_rest_and_an_empty_pipe_ends_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(&dir);
        let (r, w) = pipe();
        let mut drain = Drain::new();
        let mut scratch = vec![0u8; READ_BUF];
        nix::unistd::write(&w, b"ready\n").unwrap();
        drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(drain.resting(), None);

        nix::unistd::write(&w, &vec![b'y'; BUSY_READ]).unwrap();
        drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        let until = drain.resting().expect("resting");
        while Instant::now() < until {
            std::thread::sleep(until - Instant::now());
        }
        // The rest is over and the writer paused: the next write wakes the
        // reader again (no rest left over to keep the pipe out of a poll).
        let got = drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(got, Read::Empty);
        assert_eq!(drain.resting(), None);

        nix::unistd::write(&w, b"one more\n").unwrap();
        drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(drain.resting(), None);
        drop(w);
        let got = drain
            .read(r.as_fd(), &mut scratch, &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(got, Read::Eof);
    }
}
