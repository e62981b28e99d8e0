//! What `stackctl logs` asks of log files: the last N lines that pass the
//! filters (`--grep`, `--since`), read backwards from the end, and the
//! interleaving of several logs in time order.
//!
//! Owns: line times (the RFC 3339 prefix `timestamps = true` and
//! `stackctl.log` write), the filters, and the merge. Must not touch: the
//! terminal (the CLI prints), following (`follow`), writing logs.
//!
//! # Ordering
//!
//! Each line is placed by its own time when it starts with one. A line
//! without one takes the time of the nearest earlier line of the same log
//! that has one (or, before the first such line, of the first that does);
//! a log with no times at all takes its file's modification time for every
//! line. Logs are then merged, never reordering the lines of one log, by
//! always taking the earliest next line (ties go to the log listed first).
//! So with `timestamps = true` the output is in time order; without, each
//! log's last lines come out as one block, the least recently written log
//! first and the most recently written last, next to the prompt.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use regex::bytes::Regex;

use super::marker::{Boundary, Seen};
use super::read::RevLines;
use super::rotate::rotated_files;

/// The RFC 3339 UTC time a line starts with (followed by a space), as
/// written with `timestamps = true` and in `stackctl.log`.
pub fn line_time(line: &[u8]) -> Option<SystemTime> {
    // "2026-05-20T14:00:00Z" is the shortest form.
    if line.len() < 21 || line[4] != b'-' || line[7] != b'-' || line[10] != b'T' {
        return None;
    }
    let end = line.iter().take(40).position(|b| *b == b' ')?;
    let text = std::str::from_utf8(&line[..end]).ok()?;
    humantime::parse_rfc3339(text).ok()
}

/// `--grep` and `--since`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only lines matching.
    pub grep: Option<Regex>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Only the current run (from the first run marker of the last
    /// attempt on: `logs::marker`).
    pub current: bool,
}

impl Filter {
    /// Whether a new line (one seen while following: written now) passes.
    pub fn new_line_passes(&self, line: &[u8]) -> bool {
        self.grep.as_ref().is_none_or(|re| re.is_match(line))
    }
}

/// One line read back, with the time it is ordered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    /// Its own time, if it starts with one.
    pub time: Option<SystemTime>,
}

/// The last `n` lines of the log at `path` that pass `filter`, oldest
/// first, continuing into `.log.1`, `.log.2`, … when the current file has
/// too few. `current` is the already-open current file and the offset to
/// read back from (where `-f` then continues); else `path` is opened.
///
/// `--since` stops the reading at the first line older than it: a line's
/// own time when it has one, else its file's modification time (a file last
/// written before the cut-off holds nothing newer).
///
/// Also returns the newest modification time among the files read (the
/// order of a log without line times).
///
/// # Errors
/// A failed read. A missing file is no lines.
pub fn last_lines(
    path: &Path,
    current: Option<(&File, u64)>,
    n: usize,
    filter: &Filter,
) -> io::Result<(Vec<Line>, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut newest = None;
    if n == 0 {
        return Ok((out, newest));
    }
    let mut current = match current {
        Some((f, end)) => {
            let mtime = f.metadata().and_then(|m| m.modified()).ok();
            Some((RevLines::new(f.try_clone()?, end), mtime))
        }
        None => match File::open(path) {
            Ok(f) => {
                let meta = f.metadata()?;
                Some((RevLines::new(f, meta.len()), meta.modified().ok()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        },
    };
    let mut older = rotated_files(path).into_iter();
    let mut boundary = Boundary::default();
    loop {
        let (mut r, mtime) = match current.take() {
            Some(c) => c,
            None => {
                let Some(p) = older.next() else { break };
                match File::open(&p) {
                    Ok(f) => {
                        let meta = f.metadata()?;
                        (RevLines::new(f, meta.len()), meta.modified().ok())
                    }
                    // Rotated away while we read: nothing older to see.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                }
            }
        };
        if newest.is_none() {
            newest = mtime;
        }
        if let (Some(cut), Some(m)) = (filter.since, mtime) {
            if m < cut {
                break;
            }
        }
        while let Some(bytes) = r.next_line()? {
            if filter.current && boundary.see(&bytes) == Seen::Before {
                out.reverse();
                return Ok((out, newest));
            }
            let time = line_time(&bytes);
            if let (Some(cut), Some(t)) = (filter.since, time) {
                if t < cut {
                    out.reverse();
                    return Ok((out, newest));
                }
            }
            if filter.grep.as_ref().is_some_and(|re| !re.is_match(&bytes)) {
                continue;
            }
            out.push(Line { bytes, time });
            if out.len() >= n {
                out.reverse();
                return Ok((out, newest));
            }
        }
    }
    out.reverse();
    Ok((out, newest))
}

/// Interleaves several logs' lines (each oldest first) as the module
/// header says. `fallback[i]` is log `i`'s order when none of its lines
/// has a time. Yields (log index, line).
pub fn merge(logs: Vec<Vec<Line>>, fallback: &[Option<SystemTime>]) -> Vec<(usize, Line)> {
    let keyed: Vec<Vec<(SystemTime, Line)>> = logs
        .into_iter()
        .enumerate()
        .map(|(i, lines)| {
            let first = lines.iter().find_map(|l| l.time);
            let mut cur = first
                .or(fallback.get(i).copied().flatten())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            lines
                .into_iter()
                .map(|l| {
                    if let Some(t) = l.time {
                        cur = t;
                    }
                    (cur, l)
                })
                .collect()
        })
        .collect();
    let total = keyed.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut iters: Vec<_> = keyed
        .into_iter()
        .map(|v| v.into_iter().peekable())
        .collect();
    loop {
        let mut best: Option<(usize, SystemTime)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some((t, _)) = it.peek() {
                if best.is_none_or(|(_, bt)| *t < bt) {
                    best = Some((i, *t));
                }
            }
        }
        let Some((i, _)) = best else { break };
        if let Some((_, line)) = iters[i].next() {
            out.push((i, line));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn line(s: &str) -> Line {
        Line {
            bytes: s.as_bytes().to_vec(),
            time: line_time(s.as_bytes()),
        }
    }

    fn text(merged: &[(usize, Line)]) -> Vec<String> {
        merged
            .iter()
            .map(|(i, l)| format!("{i}:{}", String::from_utf8_lossy(&l.bytes)))
            .collect()
    }

    #[test]
    fn parses_line_times() {
        let t = line_time(b"2026-05-20T14:00:00.123Z hello").unwrap();
        assert_eq!(
            humantime::format_rfc3339_millis(t).to_string(),
            "2026-05-20T14:00:00.123Z"
        );
        assert!(line_time(b"2026-05-20T14:00:00Z x").is_some());
        assert!(line_time(b"hello world, this is not a time").is_none());
        assert!(line_time(b"2026-05-20T14:00:00.123Z").is_none());
        assert!(line_time(b"2026-13-20T14:00:00.123Z x").is_none());
    }

    #[test]
    fn merges_by_time_keeping_each_log_in_order() {
        let a = vec![
            line("2026-05-20T14:00:01.000Z a1"),
            line("  continuation of a1"),
            line("2026-05-20T14:00:03.000Z a3"),
        ];
        let b = vec![
            line("2026-05-20T14:00:02.000Z b2"),
            line("2026-05-20T14:00:03.000Z b3"),
        ];
        let got = text(&merge(vec![a, b], &[None, None]));
        assert_eq!(
            got,
            [
                "0:2026-05-20T14:00:01.000Z a1",
                "0:  continuation of a1",
                "1:2026-05-20T14:00:02.000Z b2",
                "0:2026-05-20T14:00:03.000Z a3",
                "1:2026-05-20T14:00:03.000Z b3",
            ]
        );
    }

    #[test]
    fn logs_without_times_come_as_blocks_by_modification_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let a = vec![line("a1"), line("a2")];
        let b = vec![line("b1"), line("b2")];
        let got = text(&merge(
            vec![a, b],
            &[Some(t0 + Duration::from_secs(5)), Some(t0)],
        ));
        assert_eq!(got, ["1:b1", "1:b2", "0:a1", "0:a2"]);
    }

    #[test]
    fn last_lines_filter_and_stop_at_since() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!("2026-05-20T14:00:{i:02}.000Z line {i}\n"));
        }
        std::fs::write(&p, text).unwrap();
        let grep = Filter {
            grep: Some(Regex::new("line [0-9]*7$").unwrap()),
            ..Filter::default()
        };
        let (got, _) = last_lines(&p, None, 3, &grep).unwrap();
        let got: Vec<String> = got
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "2026-05-20T14:00:27.000Z line 27",
                "2026-05-20T14:00:37.000Z line 37",
                "2026-05-20T14:00:47.000Z line 47"
            ]
        );
        let since = Filter {
            since: Some(humantime::parse_rfc3339("2026-05-20T14:00:45Z").unwrap()),
            ..Filter::default()
        };
        let (got, _) = last_lines(&p, None, 100, &since).unwrap();
        assert_eq!(got.len(), 5);
        // Without line times, a file last written before the cut-off is skipped.
        std::fs::write(&p, "old\n").unwrap();
        let since = Filter {
            since: Some(SystemTime::now() + Duration::from_secs(60)),
            ..Filter::default()
        };
        assert!(last_lines(&p, None, 100, &since).unwrap().0.is_empty());
        let since = Filter {
            since: Some(SystemTime::now() - Duration::from_secs(60)),
            ..Filter::default()
        };
        assert_eq!(last_lines(&p, None, 100, &since).unwrap().0.len(), 1);
    }
}
