//! The `log` gate: ready once a line of the process's output matches.
//!
//! [`LogWatch::new`] returns the watcher and a [`Tap`] for the log pump. The
//! pump calls the tap with every complete line from its own (non-async)
//! thread; the first match flips a `tokio::sync::watch` flag, which wakes
//! every [`LogWatch::matched`] waiter, including ones that start waiting
//! later. After the first match the tap stops running the regex. Create a
//! new pair for every start of the process, so a restart waits for a fresh
//! match.

use std::sync::Arc;

use regex::Regex;
use tokio::sync::watch;

pub use crate::logs::Tap;

/// Waits for the first output line that matches a regex.
#[derive(Debug, Clone)]
pub struct LogWatch {
    rx: watch::Receiver<bool>,
    re: Regex,
}

impl LogWatch {
    /// A watcher for `re`, and the tap that feeds it.
    pub fn new(re: Regex) -> (LogWatch, Tap) {
        let (tx, rx) = watch::channel(false);
        let tap_re = re.clone();
        let tap: Tap = Arc::new(move |line: &[u8]| {
            if *tx.borrow() {
                return;
            }
            let text = String::from_utf8_lossy(line);
            let text = text.strip_suffix('\r').unwrap_or(&text);
            if tap_re.is_match(text) {
                tx.send_replace(true);
            }
        });
        (LogWatch { rx, re }, tap)
    }

    /// The regex being waited for.
    pub fn regex(&self) -> &Regex {
        &self.re
    }

    /// Whether a line has matched already.
    pub fn is_matched(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once a line has matched (at once if one matched already).
    /// If the tap is dropped without a match (the process's output ended),
    /// this never resolves: the caller races it against the process's exit
    /// and the gate's timeout.
    pub async fn matched(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|m| *m).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_line_from_another_thread_wakes_the_waiter() {
        let (w, tap) = LogWatch::new(Regex::new(r"worker .* ready").unwrap());
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.matched().await }
        });
        let feeder = std::thread::spawn(move || {
            tap(b"booting");
            tap(b"worker worker.1 ready\r");
        });
        tokio::time::timeout(DEADLINE, waiter)
            .await
            .unwrap()
            .unwrap();
        feeder.join().unwrap();
        assert!(w.is_matched());
    }

    #[tokio::test]
    async fn a_match_before_waiting_counts() {
        let (w, tap) = LogWatch::new(Regex::new("^listening on").unwrap());
        tap(b"listening on 0.0.0.0:3000");
        drop(tap);
        tokio::time::timeout(DEADLINE, w.matched()).await.unwrap();
    }

    #[tokio::test]
    async fn no_match_stays_pending() {
        let (w, tap) = LogWatch::new(Regex::new("ready").unwrap());
        tap(b"starting");
        tap(&[0xff, 0xfe, b'x']);
        assert!(!w.is_matched());
        // Pending with the tap alive, and after it is gone.
        assert!(tokio::time::timeout(Duration::from_millis(50), w.matched())
            .await
            .is_err());
        drop(tap);
        assert!(tokio::time::timeout(Duration::from_millis(50), w.matched())
            .await
            .is_err());
    }
}
