//! Probes: how to tell that a process is ready (gate) or alive (health).
//!
//! Owns: `http`, `tcp`, `exec` checks, the log-line watcher and the
//! `NOTIFY_SOCKET` listener, each failure with a reason a person can read.
//! Must not touch: signalling or restarting processes; status.
//!
//! NOT BUILT YET (issue 2, probes helper).
