//! The keeper log, `state_dir/keeper.log`, mirrored on stdout.
//!
//! Owns: its three kinds of lines — one summary line per tick (`<time>
//! tick: …`), the keeper's own start and stop (`<time> keeper: …`), and the
//! output of the commands a tick runs, indented and labelled
//! (`  deploy 1/3| …`) — so that `grep ' tick: '` gives the history. Must
//! not touch: deciding what a line says (the tick does), env values (never
//! written by anyone).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;

/// RFC 3339 in UTC with `Z`, to the second: the keeper log's time stamp.
pub(super) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `s` with its line breaks written as `\n`.
fn one_line(s: &str) -> String {
    s.replace('\r', "\\r").replace('\n', "\\n")
}

/// `state_dir/keeper.log`, mirrored on stdout (unless quiet).
pub(super) struct KeeperLog {
    pub(super) path: PathBuf,
    file: File,
    quiet: bool,
}

impl KeeperLog {
    pub(super) fn open(path: &Path, quiet: bool) -> Result<KeeperLog, Error> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::failed(format!("cannot open {}: {e}", path.display())))?;
        Ok(KeeperLog {
            path: path.to_path_buf(),
            file,
            quiet,
        })
    }

    fn write(&self, line: &str) {
        // One write per line, so lines from concurrent writers never mix.
        let _ = (&self.file).write_all(format!("{line}\n").as_bytes());
        if !self.quiet {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// The one summary line of a tick (a line break in it, say of a
    /// multi-line `escalate` command, is written as `\n`).
    pub(super) fn tick(&self, what: &str) {
        self.write(&format!(
            "{} tick: {}",
            timestamp(SystemTime::now()),
            one_line(what)
        ));
    }

    /// The keeper's own start and stop.
    pub(super) fn note(&self, what: &str) {
        self.write(&format!(
            "{} keeper: {}",
            timestamp(SystemTime::now()),
            one_line(what)
        ));
    }

    /// A line of a command's output (or of what the keeper says about it).
    pub(super) fn output(&self, label: &str, line: &str) {
        self.write(&format!("  {label}| {line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a\\nb\\r\\nc");
    }
}
