//! stackctl's own log, `state_dir/stackctl.log`: one line per event, each
//! starting with an RFC 3339 UTC time, rotated by size like the process
//! logs (`[stack.logs] max_size`, `keep`).
//!
//! Owns: the tracing subscriber of the supervisor (the file layer and, with
//! `--foreground`, a stderr layer), the time format, and the `Write` that
//! turns each event into exactly one line. Must not touch: what is logged
//! (the supervisor's `tracing::info!` calls say that).
//!
//! The file is written by tracing-appender's worker thread (`non_blocking`,
//! not lossy: a slow disk delays the logging thread rather than dropping
//! events), through a [`Sink`] (the same rotation and failure handling as
//! process logs). The [`WorkerGuard`] must live for the whole run, or the
//! last events are lost at exit.

use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use super::sink::Sink;
use crate::config::LogSettings;
use crate::state::StateDir;

/// A rotating file that takes one formatted event per `write` and stores
/// it as one line: newlines inside a message become a literal `\n`, so
/// `grep` and `logs --grep` see an event whole.
#[derive(Debug)]
pub struct OwnLog {
    sink: Sink,
    line: Vec<u8>,
}

impl OwnLog {
    /// Opens (creating, appending) `path`, rotated by `settings`' size and
    /// keep. `settings.timestamps` is ignored: the event format has its time.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, settings: &LogSettings) -> io::Result<OwnLog> {
        let settings = LogSettings {
            timestamps: false,
            ..settings.clone()
        };
        Ok(OwnLog {
            sink: Sink::open(path.to_path_buf(), settings)?,
            line: Vec::with_capacity(256),
        })
    }
}

impl Write for OwnLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        self.line.clear();
        for (i, piece) in body.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                self.line.extend_from_slice(b"\\n");
            }
            self.line.extend_from_slice(piece);
        }
        self.line.push(b'\n');
        // Never an error: a failing disk is the sink's to count and retry,
        // and an error here would only make tracing-appender drop events.
        self.sink.write(&self.line);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Event times: `2026-05-20T14:00:00.123Z`, what `timestamps = true` puts
/// on process lines, so `logs` interleaves both by time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339Millis;

impl FormatTime for Rfc3339Millis {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_millis(SystemTime::now()))
    }
}

/// How many events may wait for the log thread before loggers wait.
const OWN_LOG_QUEUE: usize = 1024;

/// Installs the supervisor's subscriber: `stackctl.log` in `state`, and
/// with `foreground` a stderr layer (INFO and up, no time: the terminal is
/// live). Returns the guard that flushes the file at exit; `None` when the
/// file cannot be opened (the supervisor runs on without its own log).
///
/// # Caveats
/// Installs a global subscriber; a second call keeps the first.
pub fn init(
    state: &StateDir,
    settings: &LogSettings,
    foreground: bool,
    color: bool,
) -> Option<WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let file = OwnLog::open(&state.own_log(), settings).ok()?;
    let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The default (128 000 lines) preallocates a 4 MB channel, a
        // quarter of the supervisor's RSS target; 1024 queued events is
        // ample (starting 100 services logs ~300), and a full queue waits.
        .buffered_lines_limit(OWN_LOG_QUEUE)
        .thread_name("stackctl-log")
        .finish(file);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(nb)
        .with_ansi(false)
        .with_target(false)
        .with_timer(Rfc3339Millis);
    let stderr_layer = foreground.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(color)
            .with_target(false)
            .without_time()
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Some(guard)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_line_per_event_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stackctl.log");
        let settings = LogSettings {
            max_size: 200,
            keep: 2,
            timestamps: true,
            markers: true,
        };
        let mut log = OwnLog::open(&p, &settings).unwrap();
        log.write_all(b"2026-05-20T14:00:00.000Z  INFO first\n")
            .unwrap();
        log.write_all(b"2026-05-20T14:00:01.000Z ERROR two\nlines\n")
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "2026-05-20T14:00:00.000Z  INFO first\n2026-05-20T14:00:01.000Z ERROR two\\nlines\n"
        );
        for i in 0..20 {
            log.write_all(format!("2026-05-20T14:00:02.000Z  INFO event {i}\n").as_bytes())
                .unwrap();
        }
        let rotated = super::super::rotate::rotated_files(&p);
        assert_eq!(rotated.len(), 2);
        let last = std::fs::read_to_string(&p).unwrap();
        assert!(last.ends_with("event 19\n"), "{last}");
        assert!(last.len() <= 200);
    }
}
