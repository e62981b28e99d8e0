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
//! A pipe that streams rests between reads: its caller leaves it out of
//! its `poll` until [`Drain::resting`] says, then reads it. A writer whose
//! reader sleeps in `poll` pays a cross-CPU wake-up on every `write(2)`,
//! which on a virtual machine costs more than the copy; resting, the pipe
//! fills and is read in large chunks — a few hundred wake-ups for 100 MB
//! instead of one per write. The rest is paced by the writer's own rate,
//! measured over the last fill, so that the pipe (grown to
//! [`STREAM_PIPE`] once it streams) is about a quarter full when read:
//! the writer never blocks for want of a reader, and no line waits more
//! than [`REST_MAX`]. A trickle (less than [`BUSY_READ`] between two
//! empty pipes) never rests.

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

/// At least this much read between two empty pipes means the writer
/// streams: the pipe rests (see the module doc).
const BUSY_READ: usize = 4096;

/// The longest rest: the most a line waits for the reader because of it.
const REST_MAX: Duration = Duration::from_millis(2);

/// A rest shorter than this is not worth a timer: the pipe is polled.
const REST_MIN: Duration = Duration::from_micros(50);

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
    /// The pipe's capacity as last set (0: the kernel's default, unknown).
    capacity: usize,
    /// Bytes read since the pipe was last found empty.
    burst: usize,
    /// When the pipe was last found empty.
    emptied: Option<Instant>,
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
                    self.pace(pipe);
                    return Ok(Read::Empty);
                }
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            self.rest_until = None;
            return Ok(Read::Eof);
        }
        self.burst = self.burst.saturating_add(n);
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

    /// The pipe was found empty: the next rest, from what the writer wrote
    /// since it was last empty and how long that took (see the module doc).
    fn pace(&mut self, pipe: BorrowedFd<'_>) {
        let now = Instant::now();
        let (burst, since) = (self.burst, self.emptied.replace(now));
        self.burst = 0;
        self.rest_until = None;
        let Some(since) = since.filter(|_| burst >= BUSY_READ) else {
            return;
        };
        if !self.grown {
            self.grown = true;
            // Refused without privilege past the limits: it keeps its size.
            let size = i32::try_from(STREAM_PIPE).unwrap_or(i32::MAX);
            let set = nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size))
                .or_else(|_| {
                    nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)
                });
            self.capacity = set.ok().and_then(|c| usize::try_from(c).ok()).unwrap_or(0);
        }
        let rest = rest_for(burst, now.saturating_duration_since(since), self.capacity);
        self.rest_until = (rest >= REST_MIN).then(|| now + rest);
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

/// How long a pipe of `capacity` bytes (0: unknown, the kernel's 64 KiB)
/// may rest when `burst` bytes came in `over`: until about a quarter of it
/// fills at that rate, at most [`REST_MAX`].
fn rest_for(burst: usize, over: Duration, capacity: usize) -> Duration {
    let capacity = if capacity == 0 { 64 * 1024 } else { capacity };
    let fill = over.as_secs_f64() * (capacity / 4) as f64 / burst.max(1) as f64;
    Duration::from_secs_f64(fill.min(REST_MAX.as_secs_f64()))
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

    /// Reads until the pipe is empty; what the last read said.
    fn drain_all(drain: &mut Drain, r: &OwnedFd, sink: &mut Sink) -> Read {
        let mut scratch = vec![0u8; READ_BUF];
        loop {
            match drain
                .read(r.as_fd(), &mut scratch, sink, &mut |_| {})
                .unwrap()
            {
                Read::Data => {}
                other => return other,
            }
        }
    }

    #[test]
    fn a_rest_lasts_until_a_quarter_of_the_pipe_fills_at_the_writers_rate() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let mb = 1024 * 1024;
        // (bytes, over, capacity) -> rest
        let table = [
            // 256 KiB in 1 ms into 1 MiB: a quarter fills in 1 ms.
            ((256 * 1024, ms(1), mb), ms(1)),
            // Four times faster: a quarter of the time.
            ((mb, ms(1), mb), us(250)),
            // Slow: capped, no line waits longer.
            ((4096, ms(100), mb), REST_MAX),
            // The kernel's default capacity when unknown (64 KiB).
            ((16 * 1024, ms(1), 0), ms(1)),
            // Nothing measured over no time: no rest.
            ((4096, Duration::ZERO, mb), Duration::ZERO),
        ];
        for ((burst, over, capacity), want) in table {
            let got = rest_for(burst, over, capacity);
            let off = got.abs_diff(want);
            assert!(
                off < us(1),
                "{burst} B in {over:?} into {capacity}: {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn a_streaming_pipe_rests_grows_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(&dir);
        let (r, w) = pipe();
        let line = [[b'x'; 99].as_slice(), b"\n"].concat();
        let chunk = line.repeat(BUSY_READ / 100 * 4);
        let mut drain = Drain::new();
        // The first fill has no measure of the writer's rate yet.
        nix::unistd::write(&w, &chunk).unwrap();
        assert_eq!(drain_all(&mut drain, &r, &mut sink), Read::Empty);
        assert_eq!(drain.resting(), None);
        // A fill of a few hundred microseconds at most: a rest.
        nix::unistd::write(&w, &chunk).unwrap();
        let before = Instant::now();
        assert_eq!(drain_all(&mut drain, &r, &mut sink), Read::Empty);
        let until = drain.resting().expect("a streaming pipe rests");
        assert!(until > before && until <= Instant::now() + REST_MAX);
        if may_grow() {
            assert_eq!(pipe_size(&r), i32::try_from(STREAM_PIPE).unwrap());
        }
        let file = std::fs::read(dir.path().join("x.log")).unwrap();
        let want = chunk.repeat(2);
        assert!(
            file == want,
            "{} bytes in the file of {}",
            file.len(),
            want.len()
        );
    }

    #[test]
    fn a_trickle_never_rests_and_a_pause_ends_a_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(&dir);
        let (r, w) = pipe();
        let mut drain = Drain::new();
        for _ in 0..3 {
            nix::unistd::write(&w, b"ready\n").unwrap();
            assert_eq!(drain_all(&mut drain, &r, &mut sink), Read::Empty);
            assert_eq!(drain.resting(), None);
        }
        nix::unistd::write(&w, &vec![b'y'; BUSY_READ * 2]).unwrap();
        drain_all(&mut drain, &r, &mut sink);
        assert!(
            drain.resting().is_some(),
            "a burst right after the last read rests"
        );
        // The writer paused: found empty, the pipe is polled again (no rest
        // left over to keep it out of a poll).
        assert_eq!(drain_all(&mut drain, &r, &mut sink), Read::Empty);
        assert_eq!(drain.resting(), None);
        drop(w);
        assert_eq!(drain_all(&mut drain, &r, &mut sink), Read::Eof);
        assert_eq!(drain.resting(), None);
    }
}
