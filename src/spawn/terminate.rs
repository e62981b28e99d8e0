//! The one stop sequence.
//!
//! Every stop in stackctl goes through [`terminate`]: a unit stopping its
//! process, a unit clearing what a dead leader left, the final sweep of a
//! stop, and the stop of processes a killed supervisor left behind. Its
//! steps:
//!
//! 1. find the target's strays (its instances' processes outside its
//!    group: in the stack's cgroup tree where it has one, else by their
//!    mark in `/proc`, see `strays`);
//! 2. send the stop signal to the group and to the strays, then `SIGCONT`
//!    (a stopped group would otherwise hold the signal for the whole grace,
//!    as systemd knows);
//! 3. wait up to the grace for the leader's exit (an event, when the caller
//!    has one) and for the group and the strays to be gone (a short timer:
//!    no event tells that a group emptied);
//! 4. `SIGKILL` whatever is left (with a tree and nothing spared, also
//!    every member of the instances' cgroups: what forked meanwhile too)
//!    and wait up to [`HARD_WAIT`] more;
//! 5. look once more for strays that appeared during the stop, and kill
//!    them;
//! 6. report: whether the grace ran out, which strays there were, and which
//!    pids survived `SIGKILL` (uninterruptible sleep).
//!
//! Owns: the sequence and its timings. Must not touch: deciding when to
//! stop, pid files, status.

use std::future::Future;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::identity::is_alive;
use super::strays::{self, Mark};
use super::{group_exists, signal_group, signal_pid};

/// How long `SIGKILL` is given before a process counts as a survivor.
pub const HARD_WAIT: Duration = Duration::from_secs(5);

/// What to stop.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// A process group (= the leader's pid: every child leads its session).
    pub group: Option<i32>,
    /// Marked processes to stop with it, wherever their group.
    pub strays: Option<Mark<'a>>,
    /// Groups whose members are never strays (the live incarnations of the
    /// same names: a sweep must not take the new process for a leftover of
    /// the old).
    pub spare: &'a [i32],
}

/// How to stop it.
#[derive(Debug, Clone, Copy)]
pub struct How {
    pub signal: Signal,
    /// How long `signal` is given before `SIGKILL`.
    pub grace: Duration,
}

impl How {
    /// Kill at once: for what is left of an incarnation whose leader is gone.
    pub const KILL: How = How {
        signal: Signal::SIGKILL,
        grace: Duration::ZERO,
    };
}

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// The grace ran out and `SIGKILL` was sent to what was left.
    pub killed: bool,
    /// Processes that had left the group, stopped with it.
    pub strays: Vec<(String, i32)>,
    /// Pids still alive after `SIGKILL`.
    pub survivors: Vec<i32>,
}

impl StopReport {
    /// Adds another stop's findings to this one.
    pub fn merge(&mut self, other: StopReport) {
        self.killed |= other.killed;
        self.strays.extend(other.strays);
        self.survivors.extend(other.survivors);
    }
}

/// Stops `target` as `how` says (see the module docs). `leader_exit`
/// resolves when the group's leader has exited, if the caller can tell
/// (it is the leader's parent); give `std::future::pending()` otherwise:
/// the group is then watched on the timer alone.
///
/// # Cancel safety
/// Not cancel safe: dropping it midway leaves the signals sent and the
/// waiting undone.
pub async fn terminate(
    target: Target<'_>,
    how: How,
    leader_exit: impl Future<Output = ()>,
) -> StopReport {
    let group = target.group.filter(|g| *g > 1);
    let mut report = StopReport::default();
    let mut strays: Vec<(String, i32)> = target
        .strays
        .map_or_else(Vec::new, |m| find(m, group, target.spare));
    let deadline = Instant::now() + how.grace;

    if how.signal == Signal::SIGKILL {
        kill_tree(target);
    }
    send(group, &strays, how.signal);
    if how.signal != Signal::SIGKILL && how.signal != Signal::SIGCONT {
        send(group, &strays, Signal::SIGCONT);
    }
    // The leader's exit is an event; the rest is checked on a timer, which
    // also covers a leader that is not our child.
    let gone = {
        tokio::pin!(leader_exit);
        tokio::select! {
            () = &mut leader_exit => wait_gone(group, &strays, deadline).await,
            gone = wait_gone(group, &strays, deadline) => gone,
        }
    };
    if !gone {
        report.killed = how.signal != Signal::SIGKILL;
        kill_tree(target);
        send(group, &strays, Signal::SIGKILL);
        wait_gone(group, &strays, Instant::now() + HARD_WAIT).await;
    }
    // Forked during the stop: they had their grace with the rest.
    if let Some(m) = target.strays {
        let late: Vec<(String, i32)> = find(m, group, target.spare)
            .into_iter()
            .filter(|s| !strays.contains(s))
            .collect();
        if !late.is_empty() {
            send(None, &late, Signal::SIGKILL);
            wait_gone(None, &late, Instant::now() + HARD_WAIT).await;
            strays.extend(late);
        }
    }
    if let Some(g) = group.filter(|g| group_exists(*g)) {
        report.survivors.extend(strays::group_and_descendants(g));
    }
    report
        .survivors
        .extend(strays.iter().map(|(_, p)| *p).filter(|p| is_alive(*p)));
    report.strays = strays;
    report
}

/// `SIGKILL` to every member of the target's instances' cgroups, where the stack has a tree
/// and nothing of them is spared (a spared incarnation shares their
/// cgroups).
fn kill_tree(target: Target<'_>) {
    let Some(mark) = target.strays.filter(|_| target.spare.is_empty()) else {
        return;
    };
    if let Some(tree) = mark.tree() {
        tree.kill(mark.instances);
    }
}

/// The marked processes outside `group` and outside the `spare` groups.
fn find(mark: Mark<'_>, group: Option<i32>, spare: &[i32]) -> Vec<(String, i32)> {
    strays::marked(mark, spare)
        .into_iter()
        .filter(|(pid, _)| {
            super::identity::proc_stat(*pid).map_or(true, |st| {
                group != Some(st.pgid) && !spare.contains(&st.pgid)
            })
        })
        .map(|(pid, name)| (name, pid))
        .collect()
}

fn send(group: Option<i32>, strays: &[(String, i32)], sig: Signal) {
    if let Some(g) = group {
        let _ = signal_group(g, sig);
    }
    for (_, pid) in strays {
        let _ = signal_pid(*pid, sig);
    }
}

/// Waits until the group is empty and every stray is gone, or `deadline`;
/// true when all are gone.
async fn wait_gone(group: Option<i32>, strays: &[(String, i32)], deadline: Instant) -> bool {
    let gone =
        || group.is_none_or(|g| !group_exists(g)) && strays.iter().all(|(_, p)| !is_alive(*p));
    let mut step = Duration::from_millis(2);
    loop {
        if gone() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(step.min(deadline - now)).await;
        step = (step * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::strays::{PROCESS_VAR, STACK_ID_VAR};
    use std::os::unix::process::CommandExt;

    /// A shell in its own group running `script`, marked as instance `name`
    /// of stack `id`. Reaped by a thread of its own.
    fn group_leader(
        script: &str,
        id: &str,
        name: &str,
    ) -> (i32, tokio::sync::oneshot::Receiver<()>) {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(script)
            .env(STACK_ID_VAR, id)
            .env(PROCESS_VAR, name)
            .process_group(0);
        let mut child = c.spawn().unwrap();
        let pid = child.id() as i32;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        (pid, rx)
    }

    async fn wait_file(p: &std::path::Path) -> i32 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never appeared",
                p.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_graceful_group_stops_with_its_signal_and_is_not_reported_killed() {
        let id = format!("t1-{}", std::process::id());
        let (pid, exit) = group_leader("trap 'exit 0' TERM; sleep 30 & wait", &id, "svc");
        // Give the shell time to install its trap: wait until it has a child.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while strays::group_and_descendants(pid).len() < 2 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let how = How {
            signal: Signal::SIGTERM,
            grace: Duration::from_secs(10),
        };
        let r = terminate(
            Target {
                group: Some(pid),
                strays: None,
                spare: &[],
            },
            how,
            async {
                let _ = exit.await;
            },
        )
        .await;
        assert!(!r.killed, "{r:?}");
        assert!(r.survivors.is_empty(), "{r:?}");
        assert!(!group_exists(pid));
    }

    #[tokio::test]
    async fn a_group_that_ignores_its_signal_is_killed_and_says_so() {
        let id = format!("t2-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let script = format!(
            "trap '' TERM; echo $$ > {}; while :; do sleep 1; done",
            ready.display()
        );
        let (pid, exit) = group_leader(&script, &id, "stubborn");
        wait_file(&ready).await;
        let r = terminate(
            Target {
                group: Some(pid),
                strays: None,
                spare: &[],
            },
            How {
                signal: Signal::SIGTERM,
                grace: Duration::from_millis(200),
            },
            async {
                let _ = exit.await;
            },
        )
        .await;
        assert!(r.killed, "the grace ran out: {r:?}");
        assert!(r.survivors.is_empty(), "{r:?}");
        assert!(!group_exists(pid));
    }

    #[tokio::test]
    async fn strays_that_left_the_group_are_stopped_with_it() {
        let id = format!("t3-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let esc = dir.path().join("esc");
        let script = format!("setsid sleep 30 & echo $! > {}; wait", esc.display());
        let (pid, exit) = group_leader(&script, &id, "leaky");
        let escaped = wait_file(&esc).await;
        // Wait until the escaped child has left the group (setsid ran) and
        // shows the mark.
        let names = ["leaky".to_string()];
        let mark = Mark {
            stack_id: &id,
            instances: Some(&names),
            cgroups: None,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let left_group =
            || crate::spawn::identity::proc_stat(escaped).is_ok_and(|st| st.pgid != pid);
        while !(left_group() && strays::marked(mark, &[]).iter().any(|(p, _)| *p == escaped)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the stray never left its group with its mark"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = terminate(
            Target {
                group: Some(pid),
                strays: Some(mark),
                spare: &[],
            },
            How {
                signal: Signal::SIGTERM,
                grace: Duration::from_secs(5),
            },
            async {
                let _ = exit.await;
            },
        )
        .await;
        // Reaped by init, not us: wait for it to be gone from /proc.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while is_alive(escaped) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!is_alive(escaped), "the stray survived: {r:?}");
        assert!(
            r.strays.iter().any(|(n, p)| n == "leaky" && *p == escaped),
            "{r:?}"
        );
        assert!(r.survivors.is_empty(), "{r:?}");
    }
}
