//! The pipe-to-file path for process output.
//!
//! Owns: reading each child's output pipe (stdout and stderr share it),
//! writing it to `<name>.log` with back-pressure (a blocking pump thread per
//! pipe: a child that writes faster than the disk is slowed, never dropped),
//! size rotation with keep-N only between lines, optional timestamps, a full
//! disk or a vanished file (keep draining, count what is lost, reopen, say
//! so), taps that see every line (log readiness, `--foreground`), reading
//! logs back ([`tail`], `stackctl logs`, `-f` across rotations and restarts)
//! and stackctl's own log. Must not touch: process lifecycle.
//!
//! | file | what |
//! | --- | --- |
//! | `sink` | [`Sink`], [`LogWriter`]: one log file, rotation decisions, timestamps, failure and recovery |
//! | `rotate` | the rename chain `x.log` → `x.log.1` → … |
//! | `pump` | [`spawn_pump`], [`Pump`]: the thread per pipe, taps |
//! | `read` | [`RevLines`], [`RevLog`], [`tail`]: lines from the end |
//! | `follow` | `logs -f`: one inotify watch on the folder, files by inode across rotations |
//! | `query` | `logs`: last lines through `--grep`/`--since`, interleaving by time |
//! | `own` | `stackctl.log`: tracing-appender over a rotating [`Sink`] |

pub mod follow;
pub mod own;
mod pump;
pub mod query;
mod read;
mod rotate;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use pump::{spawn_pump, Pump, TAP_LINE_MAX};
pub use read::{line_time, tail, RevLines, RevLog};
pub use rotate::{rotated_files, rotated_path, shift};
pub use sink::{LogWriter, Sink};

/// Sees every complete line (without its newline) a process writes; lines
/// longer than [`TAP_LINE_MAX`] are cut to that for taps (never in the file).
pub type Tap = Arc<dyn Fn(&[u8]) + Send + Sync>;
