//! Reading logs back: lines from the end, across rotated files.
//!
//! Owns: backward line iteration over a log and its rotated files, and
//! [`tail`]. Must not touch: writing (`sink`), following (`follow`).
//!
//! A 50 MB log is read backwards in blocks from its end; only as much as
//! the requested lines need is read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::rotate::rotated_path;
use super::sink::STAMP_LEN;

const BLOCK: usize = 64 * 1024;

/// The lines of a file from the last to the first (without newlines).
#[derive(Debug)]
pub struct RevLines {
    file: File,
    /// Where the bytes in `buf` start in the file.
    pos: u64,
    buf: Vec<u8>,
    started: bool,
    done: bool,
}

impl RevLines {
    /// Lines of `file` that end before `end` (its size, usually). A last
    /// line without a newline counts as a line.
    pub fn new(file: File, end: u64) -> RevLines {
        RevLines {
            file,
            pos: end,
            buf: Vec::new(),
            started: false,
            done: end == 0,
        }
    }

    /// Opens `path` and reads it from its current end.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: &Path) -> io::Result<RevLines> {
        let file = File::open(path)?;
        let end = file.metadata()?.len();
        Ok(RevLines::new(file, end))
    }

    fn read_block(&mut self) -> io::Result<()> {
        // Grow with a long line so a multi-MB line is not quadratic.
        let want = BLOCK.max(self.buf.len()) as u64;
        let start = self.pos.saturating_sub(want);
        let len = (self.pos - start) as usize;
        let mut block = vec![0u8; len];
        self.file.read_exact_at(&mut block, start)?;
        block.extend_from_slice(&self.buf);
        self.buf = block;
        self.pos = start;
        if !self.started {
            self.started = true;
            // The newline ending the last line does not start another.
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            }
        }
        Ok(())
    }

    /// The previous line, or `None` at the start of the file.
    ///
    /// # Errors
    /// A read error.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.started {
                if let Some(i) = memchr::memrchr(b'\n', &self.buf) {
                    let line = self.buf[i + 1..].to_vec();
                    self.buf.truncate(i);
                    return Ok(Some(line));
                }
                if self.pos == 0 {
                    self.done = true;
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
            }
            self.read_block()?;
        }
    }
}

/// The lines of a log from the last to the first, continuing into
/// `<log>.1`, `<log>.2`, … (rotation happens only between lines, so the
/// files join cleanly).
#[derive(Debug)]
pub struct RevLog {
    path: PathBuf,
    index: u32,
    cur: Option<RevLines>,
}

impl RevLog {
    /// Starts at the end of `first` (an open reader of `path` itself, so a
    /// follower can continue exactly where this started), or of `path` when
    /// `None`.
    pub fn new(path: &Path, first: Option<RevLines>) -> RevLog {
        let mut r = RevLog {
            path: path.to_path_buf(),
            index: 0,
            cur: first,
        };
        if r.cur.is_none() {
            r.cur = RevLines::open(path).ok();
        }
        r
    }

    /// The previous line, or `None` when every file is read.
    ///
    /// # Errors
    /// A read error.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let Some(cur) = self.cur.as_mut() else {
                return Ok(None);
            };
            if let Some(line) = cur.next_line()? {
                return Ok(Some(line));
            }
            self.index += 1;
            match RevLines::open(&rotated_path(&self.path, self.index)) {
                Ok(r) => self.cur = Some(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.cur = None,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The time at the start of a line written with `timestamps = true`
/// (`2026-11-28T09:29:40.123Z ` and then the line), if it has one.
pub fn line_time(line: &[u8]) -> Option<std::time::SystemTime> {
    let stamp = line.get(..STAMP_LEN)?;
    let (time, space) = stamp.split_at(STAMP_LEN - 1);
    if space != b" " {
        return None;
    }
    humantime::parse_rfc3339(std::str::from_utf8(time).ok()?).ok()
}

/// The last `n` lines of the log at `path` (fewer if it is shorter),
/// oldest first, continuing into the rotated files when the current one
/// holds fewer than `n`. Reads from the end: cost follows `n`, not the
/// file's size.
///
/// # Errors
/// When the file cannot be opened or read.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut r = RevLog::new(path, Some(RevLines::open(path)?));
    let mut out = Vec::with_capacity(n.min(4096));
    while out.len() < n {
        match r.next_line()? {
            Some(l) => out.push(String::from_utf8_lossy(&l).into_owned()),
            None => break,
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rev(text: &str) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(&p, text).unwrap();
        let mut r = RevLines::open(&p).unwrap();
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(String::from_utf8(l).unwrap());
        }
        out
    }

    #[test]
    fn backwards() {
        assert_eq!(rev(""), Vec::<String>::new());
        assert_eq!(rev("\n"), vec![""]);
        assert_eq!(rev("a\nb\n"), vec!["b", "a"]);
        assert_eq!(rev("a\nb"), vec!["b", "a"]);
        assert_eq!(rev("a\n\nb\n"), vec!["b", "", "a"]);
    }

    #[test]
    fn across_blocks_and_long_lines() {
        let long = "y".repeat(300_000);
        let text: String = (0..20_000)
            .map(|i| format!("{i}\n"))
            .chain([format!("{long}\n"), "end\n".into()])
            .collect();
        let got = rev(&text);
        assert_eq!(got.len(), 20_002);
        assert_eq!(got[0], "end");
        assert_eq!(got[1], long);
        assert_eq!(got[2], "19999");
        assert_eq!(got[20_001], "0");
    }

    #[test]
    fn line_times() {
        let t = line_time(b"2026-11-28T09:29:40.123Z hello").unwrap();
        assert_eq!(
            humantime::format_rfc3339_millis(t).to_string(),
            "2026-11-28T09:29:40.123Z"
        );
        assert!(line_time(b"2026-11-28T09:29:40.123Z").is_none());
        assert!(line_time(b"hello world, this is not a time at all").is_none());
    }

    #[test]
    fn tail_spans_rotated_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(rotated_path(&p, 2), "1\n2\n").unwrap();
        std::fs::write(rotated_path(&p, 1), "3\n4\n").unwrap();
        std::fs::write(&p, "5\n").unwrap();
        assert_eq!(tail(&p, 2).unwrap(), vec!["4", "5"]);
        assert_eq!(tail(&p, 10).unwrap(), vec!["1", "2", "3", "4", "5"]);
        assert_eq!(tail(&p, 0).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn tail_of_a_big_file_reads_little() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let line = "z".repeat(99);
        let text: String = (0..500_000).map(|i| format!("{i:07} {line}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let t0 = std::time::Instant::now();
        let t = tail(&p, 3).unwrap();
        let took = t0.elapsed();
        assert_eq!(t[2], format!("0499999 {line}"));
        assert_eq!(t[0], format!("0499997 {line}"));
        assert!(took < std::time::Duration::from_millis(50), "{took:?}");
    }
}
