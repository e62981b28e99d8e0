//! A test driver for the pump path: a thread per pipe running the same
//! non-blocking [`Drain`] the anchor runs, over a [`Sink`] shared by the
//! successive pumps of one log, as the anchor shares an instance's sink.
//! Only the waiting differs: one `poll(2)` on one pipe instead of one over
//! all of them.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, dead_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Drain, Read, Sink, READ_BUF};
use crate::config::LogSettings;

/// Sees every complete line (without its newline), cut at `TAP_LINE_MAX`.
pub type Tap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The log file of one process; lives across restarts of that process.
///
/// Each spawn gets its own pump; they share this writer. The error is kept
/// apart from the file lock so that `status` never waits for a slow disk.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    sink: Mutex<Sink>,
    error: Mutex<(u64, Option<String>)>,
}

impl LogWriter {
    /// Opens (creating, appending) the log at `path`; a path that cannot
    /// be opened yet is reported by [`LogWriter::last_error`] and retried
    /// (see [`Sink::open`]).
    ///
    /// # Errors
    /// None today (see [`Sink::open`]).
    pub fn open(path: PathBuf, settings: LogSettings) -> io::Result<Arc<LogWriter>> {
        let sink = Sink::open(path.clone(), settings)?;
        let error = Mutex::new((sink.generation(), sink.error()));
        Ok(Arc::new(LogWriter {
            path,
            sink: Mutex::new(sink),
            error,
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong with this log, while something is (writes failing —
    /// output is then counted and dropped so the process keeps running —
    /// or rotation failing). Cleared by the first write that succeeds again.
    pub fn last_error(&self) -> Option<String> {
        // A poisoned lock still holds the last value written.
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Writes `data` (see [`Sink::write`]). Blocks while the disk does.
    pub fn write(&self, data: &[u8]) {
        self.with_sink(|s| s.write(data));
    }

    /// Ends a partial last line (see [`Sink::end_line`]).
    pub fn end_line(&self) {
        self.with_sink(Sink::end_line);
    }

    pub fn with_sink(&self, f: impl FnOnce(&mut Sink)) {
        // A panic elsewhere while holding the lock leaves a usable sink:
        // keep logging rather than dropping output.
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let before = sink.generation();
        f(&mut sink);
        let changed = sink.generation() != before;
        if changed || sink.error().is_some() {
            // While failing, the count of lost bytes moves on.
            *self.error.lock().unwrap_or_else(PoisonError::into_inner) =
                (sink.generation(), sink.error());
        }
        if changed {
            let err = sink.error();
            match &err {
                Some(e) => tracing::warn!("log: {e}"),
                None => tracing::info!("log {}: writing again", self.path.display()),
            }
        }
    }
}

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

/// Starts draining `reader` into `writer`, calling each tap for every line.
pub fn spawn_pump(
    name: &str,
    reader: OwnedFd,
    writer: Arc<LogWriter>,
    taps: Vec<Tap>,
) -> io::Result<Pump> {
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let done2 = done.clone();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name(format!("log:{name}"))
        .spawn(move || {
            run(&reader, &writer, &taps);
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

fn run(pipe: &OwnedFd, writer: &LogWriter, taps: &[Tap]) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let _ = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(pipe),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut drain = Drain::new();
    let mut scratch = vec![0u8; READ_BUF];
    let mut on_line = |line: &[u8]| {
        for t in taps {
            t(line);
        }
    };
    loop {
        let timeout = drain.due().map_or(PollTimeout::NONE, |t| {
            let ms = t.saturating_duration_since(Instant::now()).as_millis() + 1;
            PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
        });
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                writer.with_sink(|s| drain.flush_partial(s));
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            _ => {}
        }
        let mut ended = false;
        writer.with_sink(|s| loop {
            match drain.read(pipe.as_fd(), &mut scratch, s, &mut on_line) {
                Ok(Read::Data) => {}
                Ok(Read::Empty) => return,
                Ok(Read::Eof) | Err(_) => {
                    drain.finish(s, &mut on_line);
                    ended = true;
                    return;
                }
            }
        });
        if ended {
            return;
        }
    }
}
