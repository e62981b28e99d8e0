//! Run markers: the lines stackctl itself writes into a process's log when
//! an incarnation starts and when it ends, so that runs glued together in
//! one file can be told apart (supervisord#726, process-compose#333):
//!
//! ```text
//! ── stackctl: api started, pid 4242 (attempt 3) ──
//! ── stackctl: api exited with code 1 after 2.3s (pid 4242, attempt 3) ──
//! ── stackctl: api pre_start 1 started, pid 4240 (attempt 3) ──
//! ```
//!
//! The anchor writes them (it spawns every process and sees every exit);
//! `[stack.logs] markers = false` turns them off. Every spawn of one
//! attempt (its `pre_start` commands and its process) carries the same
//! attempt number, so the current run of a log is everything from the
//! first marker of the last attempt on.
//!
//! Owns: the markers' text, recognising them, and finding the current run
//! reading a log backwards ([`Boundary`], [`run_tail`]). Must not touch:
//! writing logs (the anchor, through a `Sink`), the terminal.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::read::{RevLines, RevLog};
use super::sink::STAMP_LEN;
use crate::spawn::Exit;

/// What every marker starts with.
const HEAD: &str = "── stackctl: ";
/// What every marker ends with.
const TAIL: &str = " ──";

/// The line that opens a spawn of `instance` (`what`: `None` for the
/// process itself, `Some("pre_start 1")` for a pre_start command).
pub fn started(instance: &str, what: Option<&str>, pid: i32, attempt: u32) -> String {
    format!(
        "{HEAD}{instance}{} started, pid {pid} (attempt {attempt}){TAIL}\n",
        what.map(|w| format!(" {w}")).unwrap_or_default()
    )
}

/// The line that closes it: how it ended and how long it ran.
pub fn ended(
    instance: &str,
    what: Option<&str>,
    pid: i32,
    attempt: u32,
    exit: Exit,
    ran: Duration,
) -> String {
    format!(
        "{HEAD}{instance}{} {exit} after {} (pid {pid}, attempt {attempt}){TAIL}\n",
        what.map(|w| format!(" {w}")).unwrap_or_default(),
        how_long(ran)
    )
}

/// `2.3s` under a minute, else `1h 2m 3s`.
fn how_long(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A marker, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub start: bool,
    pub attempt: u32,
}

/// The marker `line` is, if it is one (a timestamp before it is allowed).
pub fn parse(line: &[u8]) -> Option<Marker> {
    let text = std::str::from_utf8(line).ok()?;
    let text = match text.strip_prefix(HEAD) {
        Some(t) => t,
        None => text
            .get(STAMP_LEN..)
            .filter(|_| super::line_time(line).is_some())?
            .strip_prefix(HEAD)?,
    };
    let body = text.strip_suffix(TAIL)?.strip_suffix(')')?;
    let (_, n) = body.rsplit_once("attempt ")?;
    let attempt = n.parse().ok()?;
    Some(Marker {
        start: body.contains(" started, pid "),
        attempt,
    })
}

/// What to do with a line met reading a log backwards, looking for the
/// start of its current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Output of the current run.
    Line,
    /// A marker of the current run.
    Marker,
    /// Before the current run: stop.
    Before,
}

/// Where the current run of a log begins, found reading it backwards: the
/// first marker met names the last attempt; a marker of any other attempt
/// is the end of the one before. Lines after the last marker belong to
/// the last run too (its output, or the pre_start output of a new one).
#[derive(Debug, Default)]
pub struct Boundary {
    attempt: Option<u32>,
}

impl Boundary {
    /// Classifies the next line met (backwards).
    pub fn see(&mut self, line: &[u8]) -> Seen {
        let Some(m) = parse(line) else {
            return Seen::Line;
        };
        match self.attempt {
            None => {
                self.attempt = Some(m.attempt);
                Seen::Marker
            }
            Some(a) if a == m.attempt => Seen::Marker,
            Some(_) => Seen::Before,
        }
    }

    /// The attempt of the current run, once a marker was met.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }
}

/// The last `n` lines of the current run of the log at `path` (markers
/// left out), oldest first, and its attempt number; with no marker in the
/// log (markers off, or a log from before them), its last `n` lines and
/// `None`.
///
/// # Errors
/// When the log cannot be opened or read.
pub fn run_tail(path: &Path, n: usize) -> io::Result<(Vec<String>, Option<u32>)> {
    let mut r = RevLog::new(path, Some(RevLines::open(path)?));
    let mut b = Boundary::default();
    let mut out = Vec::new();
    while out.len() < n {
        let Some(line) = r.next_line()? else { break };
        match b.see(&line) {
            Seen::Line => out.push(String::from_utf8_lossy(&line).into_owned()),
            Seen::Marker => {}
            Seen::Before => break,
        }
    }
    out.reverse();
    Ok((out, b.attempt()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn markers_read_back_as_they_were_written() {
        let s = started("api", None, 4242, 3);
        assert_eq!(s, "── stackctl: api started, pid 4242 (attempt 3) ──\n");
        let e = ended(
            "api",
            None,
            4242,
            3,
            Exit::Code(1),
            Duration::from_millis(2_312),
        );
        assert_eq!(
            e,
            "── stackctl: api exited with code 1 after 2.3s (pid 4242, attempt 3) ──\n"
        );
        let k = ended(
            "worker.2",
            Some("pre_start 1"),
            7,
            12,
            Exit::Signal(15),
            Duration::ZERO,
        );
        assert_eq!(
            k,
            "── stackctl: worker.2 pre_start 1 killed by SIGTERM after 0.0s (pid 7, attempt 12) ──\n"
        );
        let line = |s: &str| s.trim_end().as_bytes().to_vec();
        assert_eq!(
            parse(&line(&s)),
            Some(Marker {
                start: true,
                attempt: 3
            })
        );
        assert_eq!(
            parse(&line(&k)),
            Some(Marker {
                start: false,
                attempt: 12
            })
        );
        let stamped = format!("2026-05-20T14:00:00.123Z {}", s.trim_end());
        assert_eq!(parse(stamped.as_bytes()).map(|m| m.attempt), Some(3));
        for not in [
            "stackctl: api started",
            "── stackctl: api started, pid 1 (attempt x) ──",
            "hello ── stackctl: api started, pid 1 (attempt 1) ──",
            "",
        ] {
            assert_eq!(parse(not.as_bytes()), None, "{not}");
        }
    }

    fn log(lines: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn the_current_run_is_the_last_attempt_whatever_ended_it() {
        let s1 = started("api", None, 10, 1);
        let e1 = ended("api", None, 10, 1, Exit::Code(1), Duration::ZERO);
        let p2 = started("api", Some("pre_start 1"), 11, 2);
        let q2 = ended(
            "api",
            Some("pre_start 1"),
            11,
            2,
            Exit::Code(0),
            Duration::ZERO,
        );
        let s2 = started("api", None, 12, 2);
        let e2 = ended("api", None, 12, 2, Exit::Signal(15), Duration::ZERO);
        let m = |s: &String| s.trim_end().to_string();
        // A run that ended: its pre_start output, its own, not the first run's.
        let (_d, p) = log(&[
            &m(&s1),
            "Traceback (first run)",
            &m(&e1),
            &m(&p2),
            "checking",
            &m(&q2),
            &m(&s2),
            "booting",
            "error: no db",
            &m(&e2),
        ]);
        assert_eq!(
            run_tail(&p, 20).unwrap(),
            (
                vec!["checking".into(), "booting".into(), "error: no db".into()],
                Some(2)
            )
        );
        assert_eq!(run_tail(&p, 1).unwrap().0, ["error: no db"]);
        // A run still going, with output after its start.
        let (_d, p) = log(&[&m(&s1), "one", &m(&e1), &m(&s2), "two"]);
        assert_eq!(run_tail(&p, 20).unwrap(), (vec!["two".into()], Some(2)));
        // No markers: the plain tail.
        let (_d, p) = log(&["a", "b", "c"]);
        assert_eq!(
            run_tail(&p, 2).unwrap(),
            (vec!["b".into(), "c".into()], None)
        );
    }
}
