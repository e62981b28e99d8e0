//! Live progress on a terminal: one line per process under way, redrawn in
//! place as the supervisor's events come (`waiting`, `starting`,
//! `stopping`), below the lines of what finished (today's `ok` / `FAIL`
//! lines, printed once and kept). Nothing here keeps time or asks the
//! supervisor anything: every redraw is an event (the supervisor sends the
//! clock of what is under way once a second). Also the in-place refresh of
//! `status --watch` ([`Screen`]).
//!
//! Owns: the terminal region (cursor movement, clearing, cutting lines to
//! the terminal's width). Must not touch: the text of a line
//! (`output::live_line`, `output::progress_line`, `output::status_table`).

use std::io::{self, Write};

use crate::output::{live_line, progress_line, Style};
use crate::status::{Progress, Step};

/// Whether stdout is a terminal that can redraw lines (not a pipe, not
/// `TERM=dumb`).
pub fn terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// The terminal's size: (columns, rows); 80×24 when it cannot say.
pub fn size() -> (usize, usize) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct it is given,
    // which lives for the call; fd 1 is ours (a bad fd is an error return).
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
        (usize::from(ws.ws_col), usize::from(ws.ws_row))
    } else {
        (80, 24)
    }
}

/// The lines under way at the bottom of the terminal.
pub struct Board<W: Write> {
    out: W,
    style: Style,
    size: Box<dyn Fn() -> (usize, usize)>,
    rows: Vec<Progress>,
    /// How many lines of the board are on the screen now.
    drawn: usize,
}

impl<W: Write> Board<W> {
    /// A board drawing on `out`, of the terminal's `size` (columns, rows:
    /// asked at each draw, the terminal may be resized).
    pub fn new(out: W, style: Style, size: Box<dyn Fn() -> (usize, usize)>) -> Board<W> {
        Board {
            out,
            style,
            size,
            rows: Vec::new(),
            drawn: 0,
        }
    }

    /// Shows one event: a process under way gets (or updates) its line on
    /// the board; anything else is printed above the board, for good, and
    /// a process that finished leaves the board.
    ///
    /// # Errors
    /// The terminal's.
    pub fn show(&mut self, p: Progress) -> io::Result<()> {
        match p.step {
            Step::Waiting | Step::Starting | Step::Stopping => {
                match self.rows.iter_mut().find(|r| r.process == p.process) {
                    Some(r) => *r = p,
                    None => self.rows.push(p),
                }
                self.redraw(None)
            }
            Step::Info => self.redraw(Some(progress_line(&p, self.style))),
            _ => {
                // "worker (3 members)" is every member of the pool.
                let pool = p
                    .process
                    .split_once(" (")
                    .map(|(name, _)| format!("{name}."));
                self.rows.retain(|r| {
                    r.process != p.process
                        && !pool.as_ref().is_some_and(|pre| r.process.starts_with(pre))
                });
                self.redraw(Some(progress_line(&p, self.style)))
            }
        }
    }

    /// Removes the board (the operation is over).
    ///
    /// # Errors
    /// The terminal's.
    pub fn clear(&mut self) -> io::Result<()> {
        self.rows.clear();
        self.redraw(None)
    }

    fn redraw(&mut self, above: Option<String>) -> io::Result<()> {
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\r\x1b[{}A", self.drawn));
        }
        buf.push_str("\r\x1b[J");
        if let Some(line) = above {
            buf.push_str(&line);
            buf.push('\n');
        }
        // One column spare: a line that fills the last column wraps on
        // some terminals, and the board would lose count of its lines. And
        // no more lines than fit: the cursor cannot go back above the top.
        let (cols, lines) = (self.size)();
        let width = cols.saturating_sub(1).max(20);
        let room = lines.saturating_sub(2).max(1);
        let (shown, more) = if self.rows.len() > room {
            (room - 1, self.rows.len() - (room - 1))
        } else {
            (self.rows.len(), 0)
        };
        for r in &self.rows[..shown] {
            buf.push_str(&live_line(r, self.style, width));
            buf.push('\n');
        }
        self.drawn = shown;
        if more > 0 {
            buf.push_str(&format!(
                "  {}  {}\n",
                self.style.mark(Step::Waiting),
                self.style.dim(&format!("and {more} more under way"))
            ));
            self.drawn += 1;
        }
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }
}

/// A block of text redrawn in place (`status --watch`): each draw replaces
/// the one before.
pub struct Screen<W: Write> {
    out: W,
    drawn: usize,
}

impl<W: Write> Screen<W> {
    pub fn new(out: W) -> Screen<W> {
        Screen { out, drawn: 0 }
    }

    /// Replaces what was drawn with `text`, its lines cut to the
    /// terminal's `size` (columns, rows).
    ///
    /// # Errors
    /// The terminal's.
    pub fn draw(&mut self, text: &str, size: (usize, usize)) -> io::Result<()> {
        let (width, rows) = size;
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\r\x1b[{}A", self.drawn));
        }
        buf.push_str("\r\x1b[J");
        let width = width.saturating_sub(1).max(20);
        let room = rows.saturating_sub(1).max(2);
        let all: Vec<&str> = text.lines().collect();
        let mut n = 0;
        let keep = if all.len() > room {
            room - 1
        } else {
            all.len()
        };
        for line in &all[..keep] {
            buf.push_str(&cut_visible(line, width));
            buf.push('\n');
            n += 1;
        }
        if keep < all.len() {
            buf.push_str(&format!(
                "… {} more lines (a taller terminal shows them)\n",
                all.len() - keep
            ));
            n += 1;
        }
        self.drawn = n;
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }
}

/// `line` cut to `width` visible characters, ANSI colour sequences kept
/// whole (and a reset after a cut).
fn cut_visible(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut seen = 0;
    let mut chars = line.chars().peekable();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for d in chars.by_ref() {
                out.push(d);
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if seen == width {
            cut = true;
            break;
        }
        out.push(c);
        seen += 1;
    }
    if cut && line.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn board() -> Board<Vec<u8>> {
        Board::new(Vec::new(), Style { color: false }, Box::new(|| (100, 40)))
    }

    fn text(b: &Board<Vec<u8>>) -> String {
        String::from_utf8(b.out.clone()).unwrap()
    }

    #[test]
    fn lines_under_way_are_redrawn_and_what_finished_stays_above() {
        let mut b = board();
        b.show(Progress::waiting(
            "api",
            "waiting for migrate",
            Duration::from_secs(1),
            None,
        ))
        .unwrap();
        assert_eq!(
            text(&b),
            "\r\x1b[J  ..  api                      waiting for migrate  (1.0s)\n"
        );
        b.out.clear();
        b.show(Progress::new(
            "migrate",
            Step::Completed,
            "completed in 2.0s",
        ))
        .unwrap();
        assert_eq!(
            text(&b),
            "\r\x1b[1A\r\x1b[J  ok  migrate                  completed in 2.0s\n  ..  api                      waiting for migrate  (1.0s)\n"
        );
        b.out.clear();
        b.show(Progress::new("api", Step::Ready, "ready in 0.3s"))
            .unwrap();
        assert_eq!(
            text(&b),
            "\r\x1b[1A\r\x1b[J  ok  api                      ready in 0.3s\n"
        );
        b.out.clear();
        b.clear().unwrap();
        assert_eq!(text(&b), "\r\x1b[J");
    }

    #[test]
    fn a_pool_that_was_not_started_takes_its_members_lines() {
        let mut b = board();
        for m in ["worker.1", "worker.2"] {
            b.show(Progress::waiting(
                m,
                "waiting for api",
                Duration::ZERO,
                None,
            ))
            .unwrap();
        }
        b.show(Progress::new(
            "worker (2 members)",
            Step::NotStarted,
            "not started: api did not come up",
        ))
        .unwrap();
        assert!(b.rows.is_empty());
    }

    #[test]
    fn a_board_taller_than_the_terminal_says_how_many_more() {
        let mut b = Board::new(Vec::new(), Style { color: false }, Box::new(|| (100, 6)));
        for i in 1..=10 {
            b.show(Progress::waiting(
                &format!("worker.{i}"),
                "waiting for api",
                Duration::ZERO,
                None,
            ))
            .unwrap();
        }
        let t = text(&b);
        let last: Vec<&str> = t.rsplit("\x1b[J").next().unwrap().lines().collect();
        assert_eq!(last.len(), 4, "{last:?}");
        assert_eq!(last[3], "  ..  and 7 more under way");
        assert_eq!(b.drawn, 4);
    }

    #[test]
    fn a_screen_replaces_what_it_drew() {
        let mut s = Screen::new(Vec::new());
        s.draw("a\nb\n", (80, 24)).unwrap();
        s.draw("c\n", (80, 24)).unwrap();
        assert_eq!(
            String::from_utf8(s.out).unwrap(),
            "\r\x1b[Ja\nb\n\r\x1b[2A\r\x1b[Jc\n"
        );
        assert_eq!(cut_visible("\x1b[1mabcdef\x1b[0m", 3), "\x1b[1mabc\x1b[0m");
        assert_eq!(cut_visible("abcdef", 10), "abcdef");
    }
}
