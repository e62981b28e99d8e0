//! The file end of a log: line-safe writes, size rotation, timestamps, and
//! surviving a full disk or a vanished file.
//!
//! Owns: the open file of one log, its size, whether it ends mid-line, the
//! decision to rotate (only between lines), the timestamp prefix, and the
//! failure state (bytes lost, reopening, the marker line). Must not touch:
//! pipes and threads (`pump`), reading logs back (`read`, `follow`).
//!
//! A [`Sink`] is single-owner and synchronous; [`LogWriter`] shares one
//! between the successive pumps of a process (one per spawn) and keeps the
//! current error where `status` can read it without waiting behind a slow
//! disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::LogSettings;

use super::rotate;

/// How long a failing log waits before trying its file again.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// How often the path is checked for being still the file we write to
/// (someone removed or renamed it, or put something else there).
const CHECK_IDENTITY_EVERY: Duration = Duration::from_secs(1);
/// `2026-11-28T09:29:40.123Z ` (humantime's millisecond RFC 3339, a space).
pub(crate) const STAMP_LEN: usize = 25;

/// One log file being written. Not shared: see [`LogWriter`].
#[derive(Debug)]
pub struct Sink {
    path: PathBuf,
    settings: LogSettings,
    file: Option<File>,
    /// (dev, ino) of `file`.
    identity: (u64, u64),
    size: u64,
    /// A regular file (a symlink to `/dev/null` or a FIFO is never rotated).
    regular: bool,
    /// The file ends with a newline (or is empty): a rotation may happen and
    /// a timestamp goes before the next byte.
    at_line_start: bool,
    /// Set while writes fail: what went wrong and how much was dropped.
    failure: Option<Failure>,
    /// A rotation failed; do not try again before this.
    rotate_after: Option<Instant>,
    rotate_error: Option<String>,
    next_identity_check: Instant,
    /// Reused buffer for timestamped output.
    stamped: Vec<u8>,
    /// Bumped when [`Sink::error`] changes.
    generation: u64,
    rotations: u64,
}

#[derive(Debug)]
struct Failure {
    message: String,
    lost: u64,
    retry_at: Instant,
}

impl Sink {
    /// Opens (creating, appending) the log at `path`.
    ///
    /// A path that cannot be opened (a directory in the way, a missing
    /// folder, no permission) does not fail here: the sink starts failing
    /// ([`Sink::error`] says why), drops and counts what it is given, and
    /// keeps trying, like after a write error. The process keeps running.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for refusing a path outright.
    pub fn open(path: PathBuf, settings: LogSettings) -> io::Result<Sink> {
        let mut s = Sink {
            path,
            settings,
            file: None,
            identity: (0, 0),
            size: 0,
            regular: true,
            at_line_start: true,
            failure: None,
            rotate_after: None,
            rotate_error: None,
            next_identity_check: Instant::now() + CHECK_IDENTITY_EVERY,
            stamped: Vec::new(),
            generation: 0,
            rotations: 0,
        };
        if let Err(e) = s.reopen() {
            s.fail(e.to_string());
        }
        Ok(s)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong with this log now (writes failing, rotation failing).
    pub fn error(&self) -> Option<String> {
        match (&self.failure, &self.rotate_error) {
            (Some(f), _) => Some(format!(
                "cannot write {}: {} ({} bytes lost so far)",
                self.path.display(),
                f.message,
                f.lost
            )),
            (None, Some(r)) => Some(format!("cannot rotate {}: {r}", self.path.display())),
            (None, None) => None,
        }
    }

    /// Changes whenever [`Sink::error`] may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many times this sink has rotated its file.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Bytes written to the current file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes `data` (any bytes, lines or parts of lines) now: rotating
    /// first when the next whole line would take the file past `max_size`,
    /// prefixing lines with the time when `timestamps` is on. Never fails:
    /// a failure is recorded, the bytes are counted as lost, and a later
    /// call reopens the file and writes a marker line saying how many.
    pub fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= self.next_identity_check {
            self.next_identity_check = now + CHECK_IDENTITY_EVERY;
            self.check_identity();
        }
        if self.failure.is_some() && !self.recover(now) {
            let n = self.stamped_len(data);
            if let Some(f) = self.failure.as_mut() {
                f.lost += n;
            }
            self.at_line_start = data.last() == Some(&b'\n');
            return;
        }
        if self.settings.timestamps {
            let mut out = std::mem::take(&mut self.stamped);
            out.clear();
            stamp(&mut out, data, self.at_line_start, SystemTime::now());
            self.emit(&out, now);
            self.stamped = out;
        } else {
            self.emit(data, now);
        }
    }

    /// Ends a partial last line with a newline (the process that wrote it
    /// is gone), so the next process's first line starts on its own line.
    pub fn end_line(&mut self) {
        if !self.at_line_start && self.failure.is_none() {
            self.emit(b"\n", Instant::now());
        }
    }

    /// The bytes `data` takes in the file (with timestamps).
    fn stamped_len(&self, data: &[u8]) -> u64 {
        if !self.settings.timestamps {
            return data.len() as u64;
        }
        let starts = memchr::memchr_iter(b'\n', data)
            .filter(|&i| i + 1 < data.len())
            .count()
            + usize::from(self.at_line_start);
        (data.len() + starts * STAMP_LEN) as u64
    }

    /// Writes already-stamped bytes, rotating between lines.
    fn emit(&mut self, mut out: &[u8], now: Instant) {
        let max = self.settings.max_size;
        while !out.is_empty() {
            let room = max.saturating_sub(self.size);
            let first_line = memchr::memchr(b'\n', out).map_or(out.len(), |i| i + 1);
            if self.at_line_start
                && self.regular
                && self.size > 0
                && first_line as u64 > room
                && self.rotate_after.is_none_or(|t| now >= t)
            {
                self.rotate(now);
                if self.file.is_none() {
                    self.lose(out.len() as u64);
                    return;
                }
                continue;
            }
            let take = if out.len() as u64 <= room {
                out.len()
            } else {
                // `room < out.len()` here, so it fits in usize.
                match memchr::memrchr(b'\n', &out[..room as usize]) {
                    Some(i) => i + 1,
                    // Not even the (rest of the) first line fits: it is
                    // written whole, past max_size; a line is never split.
                    None => first_line,
                }
            };
            let written = self.write_raw(&out[..take]);
            if written < take {
                self.lose((out.len() - written) as u64);
                return;
            }
            out = &out[take..];
        }
    }

    /// Writes all of `buf` or fails; returns how much was written.
    fn write_raw(&mut self, buf: &[u8]) -> usize {
        let Some(file) = self.file.as_mut() else {
            return 0;
        };
        let mut done = 0;
        let mut err = None;
        while done < buf.len() {
            match file.write(&buf[done..]) {
                Ok(0) => {
                    err = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if done > 0 {
            self.size += done as u64;
            self.at_line_start = buf[done - 1] == b'\n';
        }
        if let Some(e) = err {
            self.fail(e.to_string());
        }
        done
    }

    fn lose(&mut self, n: u64) {
        if self.failure.is_none() {
            self.fail("the file is not open".into());
        }
        if let Some(f) = self.failure.as_mut() {
            f.lost += n;
        }
    }

    fn fail(&mut self, message: String) {
        self.file = None;
        let retry_at = Instant::now() + RETRY_EVERY;
        match self.failure.as_mut() {
            // A retry that failed the same way is not news (no log line
            // every RETRY_EVERY); the lost count moves on regardless.
            Some(f) if f.message == message => f.retry_at = retry_at,
            Some(f) => {
                f.message = message;
                f.retry_at = retry_at;
                self.generation += 1;
            }
            None => {
                self.failure = Some(Failure {
                    message,
                    lost: 0,
                    retry_at,
                });
                self.generation += 1;
            }
        }
    }

    /// While failing: reopens the file (at most every [`RETRY_EVERY`]) and
    /// writes the marker. True when writing works again.
    fn recover(&mut self, now: Instant) -> bool {
        let Some(f) = self.failure.as_mut() else {
            return true;
        };
        if now < f.retry_at {
            return false;
        }
        f.retry_at = now + RETRY_EVERY;
        if let Err(e) = self.reopen() {
            self.fail(e.to_string());
            return false;
        }
        let Some((lost, message)) = self.failure.as_ref().map(|f| (f.lost, f.message.clone()))
        else {
            return true;
        };
        let mut marker = Vec::with_capacity(160);
        if !self.at_line_start {
            marker.push(b'\n');
        }
        let text = format!(
            "[stackctl] {lost} bytes of output were lost while this log could not be written ({message})\n"
        );
        if self.settings.timestamps {
            stamp(&mut marker, text.as_bytes(), true, SystemTime::now());
        } else {
            marker.extend_from_slice(text.as_bytes());
        }
        // Still failing (the failure stays, with its count): try later.
        if self.write_raw(&marker) < marker.len() {
            return false;
        }
        self.failure = None;
        self.generation += 1;
        true
    }

    /// (Re)opens `path` for appending and learns its size and last byte.
    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        // Readable too when it is (or will be) a regular file, to learn its
        // last byte: a write cut short (a full disk) leaves a partial line.
        // A FIFO or a device is opened for writing only.
        let regular = std::fs::metadata(&self.path).map_or(true, |m| m.is_file());
        let append = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        };
        let file = if regular {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)
                .or_else(|_| append())?
        } else {
            append()?
        };
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        let size = meta.len();
        let mut last = [b'\n'];
        if size > 0 && meta.is_file() {
            // Unreadable (write-only): assume a line boundary.
            let _ = file.read_at(&mut last, size - 1);
        }
        self.identity = (meta.dev(), meta.ino());
        self.size = if meta.is_file() { size } else { 0 };
        self.regular = meta.is_file();
        self.at_line_start = last[0] == b'\n';
        self.file = Some(file);
        Ok(())
    }

    /// Reopens when `path` is no longer the file we hold (removed, renamed
    /// away, replaced).
    fn check_identity(&mut self) {
        if self.file.is_none() {
            return;
        }
        let same = std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if !same {
            if let Err(e) = self.reopen() {
                self.fail(e.to_string());
            }
        }
    }

    fn rotate(&mut self, now: Instant) {
        self.file = None;
        let shifted = rotate::shift(&self.path, self.settings.keep);
        let reopened = self.reopen();
        match (shifted, reopened) {
            (Ok(()), Ok(())) => {
                self.rotations += 1;
                if self.rotate_error.take().is_some() {
                    self.generation += 1;
                }
                self.rotate_after = None;
            }
            (Err(e), Ok(())) => {
                // Keep writing to the old file; try again later.
                self.rotate_error = Some(e.to_string());
                self.rotate_after = Some(now + Duration::from_secs(1));
                self.generation += 1;
            }
            (_, Err(e)) => self.fail(e.to_string()),
        }
    }
}

/// Appends `data` to `out` with `<time> ` before every line start
/// (`at_line_start`: whether the byte before `data` ended a line).
pub(crate) fn stamp(out: &mut Vec<u8>, data: &[u8], mut at_line_start: bool, now: SystemTime) {
    let ts = humantime::format_rfc3339_millis(now).to_string();
    out.reserve(data.len() + 2 * STAMP_LEN);
    let mut rest = data;
    while !rest.is_empty() {
        if at_line_start {
            out.extend_from_slice(ts.as_bytes());
            out.push(b' ');
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        out.extend_from_slice(&rest[..end]);
        at_line_start = rest[end - 1] == b'\n';
        rest = &rest[end..];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(max_size: u64, keep: u32, timestamps: bool) -> LogSettings {
        LogSettings {
            max_size,
            keep,
            timestamps,
            markers: true,
        }
    }

    #[test]
    fn rotates_only_between_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut s = Sink::open(p.clone(), settings(25, 9, false)).unwrap();
        // 10-byte lines fed in awkward pieces.
        let text: String = (0..20).map(|i| format!("line {i:04}\n")).collect();
        for piece in text.as_bytes().chunks(7) {
            s.write(piece);
        }
        let mut all = String::new();
        for i in (0..=9).rev() {
            if let Ok(t) = std::fs::read_to_string(rotate::rotated_path(&p, i)) {
                // Fed in pieces, a line begun under the limit may end past
                // it (the pump holds partial lines back to avoid that).
                assert!(t.len() <= 25 + 10, "{t:?}");
                assert!(t.ends_with('\n'));
                all.push_str(&t);
            }
        }
        assert_eq!(all, text);
    }

    #[test]
    fn long_line_is_kept_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut s = Sink::open(p.clone(), settings(10, 3, false)).unwrap();
        s.write(b"ab\n");
        let long = vec![b'x'; 100];
        s.write(&long);
        s.write(b"\nc\n");
        assert_eq!(
            std::fs::read_to_string(rotate::rotated_path(&p, 2)).unwrap(),
            "ab\n"
        );
        assert_eq!(
            std::fs::read(rotate::rotated_path(&p, 1)).unwrap().len(),
            101
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "c\n");
    }

    #[test]
    fn stamps_every_line_start() {
        let mut out = Vec::new();
        let t = SystemTime::UNIX_EPOCH;
        stamp(&mut out, b"a\nb", true, t);
        stamp(&mut out, b"c\n\nd\n", false, t);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000Z a\n1970-01-01T00:00:00.000Z bc\n\
             1970-01-01T00:00:00.000Z \n1970-01-01T00:00:00.000Z d\n"
        );
    }

    #[test]
    fn a_link_to_dev_null_is_never_rotated() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::os::unix::fs::symlink("/dev/null", &p).unwrap();
        let mut s = Sink::open(p.clone(), settings(10, 3, false)).unwrap();
        for _ in 0..10 {
            s.write(b"0123456789\n");
        }
        assert!(s.error().is_none());
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!rotate::rotated_path(&p, 1).exists());
    }

    #[test]
    fn a_lasting_failure_is_news_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::os::unix::fs::symlink("/dev/full", &p).unwrap();
        let mut s = Sink::open(p.clone(), settings(1000, 3, false)).unwrap();
        s.write(b"one\n");
        let g = s.generation();
        assert!(s.error().unwrap().contains("4 bytes lost"));
        for _ in 0..3 {
            if let Some(f) = s.failure.as_mut() {
                f.retry_at = Instant::now();
            }
            s.write(b"two\n");
        }
        assert_eq!(s.generation(), g, "retries failing the same way");
        assert!(
            s.error().unwrap().contains("16 bytes lost"),
            "{:?}",
            s.error()
        );
        std::fs::remove_file(&p).unwrap();
        if let Some(f) = s.failure.as_mut() {
            f.retry_at = Instant::now();
        }
        s.write(b"three\n");
        assert!(s.error().is_none());
        assert_ne!(s.generation(), g);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("[stackctl] 16 bytes of output were lost"),
            "{text}"
        );
        assert!(text.ends_with(")\nthree\n"), "{text}");
    }

    #[test]
    fn the_marker_after_a_write_cut_short_mid_line_is_a_line_of_its_own() {
        // A full disk cuts a write short mid-line: the file ends with a
        // partial line while what was lost meanwhile ended lines.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut s = Sink::open(p.clone(), settings(1000, 3, false)).unwrap();
        s.write(b"whole\npart");
        s.fail("No space left on device (os error 28)".into());
        s.write(b"ial\nlost\n");
        if let Some(f) = s.failure.as_mut() {
            f.retry_at = Instant::now();
        }
        s.write(b"next\n");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "whole\npart\n[stackctl] 9 bytes of output were lost while this log could not be written (No space left on device (os error 28))\nnext\n"
        );
    }

    #[test]
    fn reopens_a_removed_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut s = Sink::open(p.clone(), settings(1000, 3, false)).unwrap();
        s.write(b"one\n");
        std::fs::remove_file(&p).unwrap();
        s.next_identity_check = Instant::now();
        s.write(b"two\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
    }
}
