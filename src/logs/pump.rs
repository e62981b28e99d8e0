//! The pump: one blocking thread per child output pipe.
//!
//! Owns: draining the read end of a pipe into a [`LogWriter`] and feeding
//! complete lines to taps. Must not touch: the child (its lifecycle belongs
//! to the supervisor's unit), the file layout (`sink`).
//!
//! Why a thread and not a tokio task: a blocking `write` to a slow disk must
//! stall only its own child (the pipe fills, the child blocks in `write`:
//! back-pressure, never loss), not the runtime that runs probes, restarts
//! and the control socket. Each read's complete lines are written at once,
//! in one `write(2)` when no rotation falls inside them; a trailing partial
//! line waits at most 25 ms for its end (so rotation can see the whole
//! line) and is then written anyway, so a prompt without a newline reaches
//! the file promptly. A burst costs one `read`, one `poll` (when the chunk
//! ends mid-line) and one `write` per chunk; the pipe is enlarged to 256 KiB
//! where the kernel allows, so chunks are big when the child is fast.
//!
//! The thread ends at end of file: when every holder of the write end (the
//! child, and anything it spawned that kept stdout) has closed it.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{LogWriter, Tap};

/// What a tap is given of one line at most; the file gets all of it.
pub const TAP_LINE_MAX: usize = 64 * 1024;
const READ_BUF: usize = 128 * 1024;
/// The pipe's capacity: 4x Linux's default, for bigger chunks and fewer
/// wake-ups in a burst. Not the 1 MiB maximum: pipe pages count against the
/// user's `pipe-user-pages-soft` (64 MiB), past which the kernel gives every
/// new pipe of that user a single page; a stack of dozens stays well under.
const PIPE_SIZE: i32 = 256 * 1024;
/// Small: the thread only moves bytes (and runs taps: a regex match, an echo).
const STACK_SIZE: usize = 128 * 1024;

/// A running pump: the thread that drains one pipe into one log.
///
/// Dropping it detaches the thread, which still drains the pipe to its end.
#[derive(Debug)]
pub struct Pump {
    thread: Option<JoinHandle<()>>,
    done: Arc<(Mutex<bool>, Condvar)>,
    done_rx: tokio::sync::watch::Receiver<bool>,
}

impl Pump {
    /// Whether the pipe reached end of file (every writer closed it) and
    /// everything read is in the log.
    pub fn is_finished(&self) -> bool {
        self.done.0.lock().map(|d| *d).unwrap_or(true)
    }

    /// Waits up to `timeout` for the pump to finish; true if it did.
    ///
    /// Useful after the child exits, before reading its log: the last lines
    /// may still be in the pipe. It may never finish while something the
    /// child spawned holds the pipe open, hence the timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.done;
        let Ok(mut done) = lock.lock() else {
            return true;
        };
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match cv.wait_timeout(done, left) {
                Ok((d, _)) => done = d,
                Err(_) => return true,
            }
        }
        true
    }

    /// Resolves when the pump is finished (as [`Pump::is_finished`]): an
    /// event for async callers, instead of checking on a timer. Wrap it in
    /// a timeout (see [`Pump::wait`] for why).
    ///
    /// # Cancel safety
    /// Cancel safe: the future only watches; dropping it changes nothing.
    pub fn finished(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.done_rx.clone();
        async move {
            // An error means the thread is gone: finished too.
            let _ = rx.wait_for(|d| *d).await;
        }
    }

    /// Waits until the pipe reaches end of file.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts draining `reader` (the read end of the child's output pipe) into
/// `writer`, calling each tap for every complete line.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn_pump(
    name: &str,
    reader: OwnedFd,
    writer: Arc<LogWriter>,
    taps: Vec<Tap>,
) -> io::Result<Pump> {
    // Bigger chunks, fewer wake-ups; an unprivileged limit is fine to hit.
    let _ = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&reader.as_fd()),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
    );
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let done2 = done.clone();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let name = name.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("log:{name}"))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            run(&name, File::from(reader), &writer, taps);
            let (lock, cv) = &*done2;
            if let Ok(mut d) = lock.lock() {
                *d = true;
            }
            cv.notify_all();
            let _ = done_tx.send(true);
        })?;
    Ok(Pump {
        thread: Some(thread),
        done,
        done_rx,
    })
}

/// How long a partial line waits for its end before it is written anyway.
const PARTIAL_WAIT_MS: u16 = 25;

fn run(name: &str, mut pipe: File, writer: &LogWriter, taps: Vec<Tap>) {
    let mut buf = vec![0u8; READ_BUF];
    let mut lines = Lines::new(taps);
    // `buf[..held]` is the start of a line not yet written: held back (for
    // at most PARTIAL_WAIT_MS) so that the rotation decision sees the whole
    // line. Without this a line begun just under max_size would be written
    // into the old file and end past it.
    let mut held = 0usize;
    // The file has a partial line from this pump (written after the wait):
    // its continuation is written at once, nothing left to decide.
    let mut open_line = false;
    loop {
        if held > 0 && !readable_within(&pipe, PARTIAL_WAIT_MS) {
            writer.write(&buf[..held]);
            held = 0;
            open_line = true;
        }
        if held == buf.len() {
            // A line longer than the buffer: it is kept whole anyway.
            writer.write(&buf[..held]);
            held = 0;
            open_line = true;
        }
        let n = match pipe.read(&mut buf[held..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A non-blocking pipe from some other spawner: wait for data.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                readable_within(&pipe, u16::MAX);
                continue;
            }
            Err(e) => {
                tracing::warn!(process = %name, "reading its output failed: {e}");
                break;
            }
        };
        lines.feed(&buf[held..held + n]);
        let data = &buf[..held + n];
        let keep_from = match memchr::memrchr(b'\n', &buf[held..held + n]) {
            Some(i) => held + i + 1,
            None if open_line => data.len(),
            None => 0,
        };
        if keep_from > 0 {
            writer.write(&data[..keep_from]);
            open_line = false;
        }
        let total = held + n;
        if keep_from == total {
            held = 0;
        } else if keep_from > 0 {
            buf.copy_within(keep_from..total, 0);
            held = total - keep_from;
        } else {
            held = total;
        }
    }
    if held > 0 {
        writer.write(&buf[..held]);
    }
    writer.end_line();
    lines.finish();
}

/// Whether `pipe` has data (or end of file) within `ms` milliseconds.
fn readable_within(pipe: &File, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            // Let the read find out what is wrong.
            Err(_) => return true,
        }
    }
}

/// Splits a byte stream into lines for the taps, keeping at most
/// [`TAP_LINE_MAX`] bytes of a line that spans reads.
struct Lines {
    taps: Vec<Tap>,
    partial: Vec<u8>,
}

impl Lines {
    fn new(taps: Vec<Tap>) -> Lines {
        Lines {
            taps,
            partial: Vec::new(),
        }
    }

    fn call(&self, line: &[u8]) {
        let line = &line[..line.len().min(TAP_LINE_MAX)];
        for t in &self.taps {
            t(line);
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = TAP_LINE_MAX.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn feed(&mut self, data: &[u8]) {
        if self.taps.is_empty() {
            return;
        }
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.call(&rest[..i]);
            } else {
                self.keep(&rest[..i]);
                let line = std::mem::take(&mut self.partial);
                self.call(&line);
                self.partial = line;
                self.partial.clear();
            }
            rest = &rest[i + 1..];
        }
        self.keep(rest);
    }

    /// The pipe ended: an unterminated last line is still a line.
    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.call(&line);
        }
    }
}
