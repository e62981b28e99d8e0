//! The memory limit of one instance (`memory_max`): the resident memory of
//! its whole process group (`spawn::identity::group_rss_bytes`), checked
//! every [`CHECK_EVERY`]; above the limit for [`OVER_IN_A_ROW`] checks in a
//! row (so one spike does not count), the unit restarts the process
//! gracefully, through its restart policy, as a failing health check does.
//!
//! Owns: the checks and the decision (pure: [`Watch::decide`]). Must not
//! touch: stopping or restarting (the attempt's).

use std::time::Duration;

/// How often the group's memory is read.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Readings above the limit in a row that restart the process.
pub(super) const OVER_IN_A_ROW: u32 = 3;

/// The checks of one process.
pub(super) struct Watch {
    limit: u64,
    over: u32,
    tick: tokio::time::Interval,
}

impl Watch {
    /// The watch of a limit, if there is one.
    pub(super) fn new(limit: Option<u64>) -> Option<Watch> {
        let limit = limit?;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        Some(Watch {
            limit,
            over: 0,
            tick,
        })
    }

    /// One reading: why to restart, once it has been over the limit long
    /// enough; a reading under it (or none) starts the count again.
    pub(super) fn decide(&mut self, rss: Option<u64>) -> Option<String> {
        match rss {
            Some(r) if r > self.limit => self.over += 1,
            _ => self.over = 0,
        }
        if self.over < OVER_IN_A_ROW {
            return None;
        }
        let r = rss.unwrap_or_default();
        Some(format!(
            "memory {} over memory_max {} for {} checks in a row ({}s)",
            size(r, self.limit),
            size(self.limit, self.limit),
            self.over,
            self.over as u64 * CHECK_EVERY.as_secs()
        ))
    }
}

/// Resolves with the reason to restart group `pgid`, once its memory has
/// stayed over the limit; never without a limit.
pub(super) async fn over_limit(watch: &mut Option<Watch>, pgid: i32) -> String {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    loop {
        w.tick.tick().await;
        let rss =
            tokio::task::spawn_blocking(move || crate::spawn::identity::group_rss_bytes(pgid))
                .await
                .ok()
                .flatten();
        if let Some(why) = w.decide(rss) {
            return why;
        }
    }
}

/// Bytes in the units `limit` was most likely written in: `61.2MiB`
/// for a limit in MiB or GiB, `64.2MB` for one in MB or GB.
fn size(bytes: u64, limit: u64) -> String {
    let binary = limit % (1 << 20) == 0 || limit % 1_000_000 != 0;
    let (unit, big, small) = if binary {
        (1_048_576.0, "GiB", "MiB")
    } else {
        (1_000_000.0, "GB", "MB")
    };
    let mb = bytes as f64 / unit;
    let kilo = if binary { 1024.0 } else { 1000.0 };
    if mb >= kilo {
        format!("{:.2}{big}", mb / kilo)
    } else {
        format!("{mb:.1}{small}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_run_of_readings_over_the_limit_restarts() {
        let mut w = Watch::new(Some(100 << 20)).unwrap();
        let over = Some(150 << 20);
        let under = Some(10 << 20);
        // A spike, then back under: the count starts again.
        assert_eq!(w.decide(over), None);
        assert_eq!(w.decide(over), None);
        assert_eq!(w.decide(under), None);
        assert_eq!(w.decide(over), None);
        assert_eq!(w.decide(None), None, "no reading: the group is gone");
        assert_eq!(w.decide(over), None);
        assert_eq!(w.decide(over), None);
        assert_eq!(
            w.decide(over).as_deref(),
            Some("memory 150.0MiB over memory_max 100.0MiB for 3 checks in a row (3s)")
        );
        assert!(Watch::new(None).is_none());
        assert_eq!(size(3 << 30, 1 << 30), "3.00GiB");
        // A limit written in MB reads in MB.
        let mut w = Watch::new(Some(40_000_000)).unwrap();
        w.decide(Some(94_600_000));
        w.decide(Some(94_600_000));
        assert_eq!(
            w.decide(Some(94_600_000)).as_deref(),
            Some("memory 94.6MB over memory_max 40.0MB for 3 checks in a row (3s)")
        );
    }
}
