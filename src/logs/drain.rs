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
                Err(nix::errno::Errno::EAGAIN) => return Ok(Read::Empty),
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(Read::Eof);
        }
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
        }
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
