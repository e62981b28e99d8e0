//! The pipe-to-file path for process output.
//!
//! Owns: draining each child's output pipe (stdout and stderr share it)
//! into `<name>.log` a read at a time for an event loop (the anchor's: one
//! `poll(2)` over every pipe; back-pressure is the pipe's: a child that
//! writes faster than the disk is slowed, never dropped), size rotation
//! with keep-N only between lines, optional timestamps, a full disk or a
//! vanished file (keep draining, count what is lost, reopen, say so), lines
//! for whoever watches them (a `log` gate, `--foreground`), reading logs
//! back ([`tail`], `stackctl logs`, `-f` across rotations and restarts) and
//! stackctl's own log. Must not touch: process lifecycle.
//!
//! | file | what |
//! | --- | --- |
//! | `drain` | [`Drain`]: what is read and not yet written, partial lines, lines for a watcher |
//! | `sink` | [`Sink`]: one log file, rotation decisions, timestamps, failure and recovery |
//! | `rotate` | the rename chain `x.log` → `x.log.1` → … |
//! | `read` | [`RevLines`], [`RevLog`], [`tail`]: lines from the end |
//! | `follow` | `logs -f`: one inotify watch on the folder, files by inode across rotations |
//! | `marker` | run markers: the lines that open and close each run in a log, and finding the current run |
//! | `query` | `logs`: last lines through `--grep`/`--since`, interleaving by time |
//! | `own` | `stackctl.log`: tracing-appender over a rotating [`Sink`] |

mod drain;
pub mod follow;
pub mod marker;
pub mod own;
pub mod query;
mod read;
mod rotate;
mod sink;
#[cfg(test)]
mod testpump;
#[cfg(test)]
mod tests;

pub use drain::{Drain, Read, PARTIAL_WAIT, READ_BUF, TAP_LINE_MAX};
pub use read::{line_time, tail, RevLines, RevLog};
pub use rotate::{rotated_files, rotated_path, shift};
pub use sink::Sink;
