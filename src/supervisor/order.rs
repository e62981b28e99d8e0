//! Bringing a set of processes up or down in dependency order.
//!
//! Owns: the two orchestrations every operation is made of. Up: one task
//! per process; each waits on its dependencies' cells (a task completed, a
//! service ready — every member of a pool), then starts all its instances
//! in parallel; a failure marks its dependents "not started" and stops
//! nothing that runs. Down: the reverse; a process is stopped once
//! everything in the stop set that depends on it is down, then the marked
//! strays of every stopped name are swept once more. Must not touch: what a
//! unit does with its process (the unit's), which processes an operation
//! names (the callers in the parent module).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::live;
use super::timeline::Planned;
use super::unit::{self, UnitHandle};
use super::{progress, ProgressTx, Supervisor};
use crate::config::Stack;
use crate::error::Error;
use crate::plan::{self, Selection};
use crate::spawn::{self, strays::Mark, How, StopReport, Target};
use crate::status::{State, Step};
use crate::timeline::StartSummary;

/// How many log lines a failed start shows.
pub const FAILURE_LOG_LINES: usize = 20;

/// One process's outcome in a bring-up: `None` until it is known.
type Cell = (watch::Sender<Option<bool>>, watch::Receiver<Option<bool>>);

/// A failed instance: its name, its log, why.
type Failure = (String, PathBuf, String);

/// What a bring-up is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Purpose<'a> {
    /// A start (`start`, `restart`: the timeline's operation).
    Start(&'a str),
    /// A pool growing (`scale`, the autoscaler).
    Resize,
}

/// How one process's instances are started.
#[derive(Debug, Clone, Copy)]
struct StartHow {
    /// Restart what runs (tasks run again).
    rerun: bool,
    /// Say nothing of an instance that is up already.
    quiet_idle: bool,
    /// Part of the start timeline.
    timed: bool,
}

enum Outcome {
    Up,
    Failed(Vec<Failure>),
    NotStarted(String),
}

impl Supervisor {
    /// Starts every process of `closure` (dependencies included), in
    /// dependency order, as far as `sel` says: named pool members start
    /// alone, a dependency starts whole. `rerun`: what is named is
    /// restarted (tasks run again) instead of being left alone if running.
    /// `purpose`: a start is kept as the start timeline's last start, and
    /// its summary returned (if it started something and all came up); a
    /// resize mentions only the members it starts, not what it leaves
    /// alone (`scale` lists what it changed).
    ///
    /// # Errors
    /// The failed instances, with their log tails, and what was therefore
    /// not started (1).
    pub(super) async fn bring_up(
        &self,
        stack: &Arc<Stack>,
        closure: &[String],
        sel: &Selection,
        rerun: bool,
        purpose: Purpose<'_>,
        tx: &ProgressTx,
    ) -> Result<Option<StartSummary>, Error> {
        let cells: HashMap<String, Cell> = closure
            .iter()
            .map(|p| (p.clone(), watch::channel(None)))
            .collect();
        let mut tasks = JoinSet::new();
        let mut planned = Vec::new();
        let mut queued = Vec::new();
        for pname in closure {
            let Some(spec) = stack.process(pname) else {
                continue;
            };
            let Some((done, _)) = cells.get(pname) else {
                continue;
            };
            let deps: Vec<(String, watch::Receiver<Option<bool>>)> = spec
                .depends_on
                .iter()
                .filter_map(|d| cells.get(d).map(|(_, rx)| (d.clone(), rx.clone())))
                .collect();
            let explicit_members = sel
                .members
                .get(pname)
                .filter(|_| !sel.processes.contains(pname));
            let handles: Vec<UnitHandle> = self
                .registry
                .instances(spec)
                .into_iter()
                .filter(|i| match (explicit_members, i.index) {
                    (Some(set), Some(idx)) => set.contains(&idx),
                    _ => true,
                })
                .map(|i| self.registry.unit(&self.ctx, spec, &i))
                .collect();
            let targeted = sel.processes.contains(pname) || sel.members.contains_key(pname);
            planned.extend(handles.iter().map(|h| Planned {
                name: h.inst.name.clone(),
                process: pname.clone(),
                kind: spec.kind,
                depends_on: spec.depends_on.clone(),
            }));
            queued.push((
                pname.clone(),
                handles,
                deps,
                done.clone(),
                StartHow {
                    rerun: rerun && targeted,
                    quiet_idle: matches!(purpose, Purpose::Resize),
                    timed: matches!(purpose, Purpose::Start(_)),
                },
            ));
        }
        drop(cells);
        let id = match purpose {
            Purpose::Start(op) => Some(self.ctx.timeline.begin(op, planned)),
            Purpose::Resize => None,
        };
        for (pname, handles, deps, done, how) in queued {
            tasks.spawn(start_process(
                pname,
                handles,
                deps,
                done,
                how,
                self.ctx.clone(),
                tx.clone(),
            ));
        }
        let mut failed = Vec::new();
        let mut not_started = Vec::new();
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(Outcome::Up) => {}
                Ok(Outcome::Failed(f)) => failed.extend(f),
                Ok(Outcome::NotStarted(p)) => not_started.push(p),
                Err(e) => failed.push(("(internal)".into(), PathBuf::new(), e.to_string())),
            }
        }
        let summary = id.and_then(|id| self.ctx.timeline.finish(id));
        if failed.is_empty() {
            return Ok(summary);
        }
        failed.sort();
        not_started.sort_by_key(|n| closure.iter().position(|c| c == n));
        Err(start_failure(&failed, &not_started))
    }

    /// Stops `handles` in reverse dependency order (parallel within a
    /// level), then sweeps the marked strays of every name once more.
    ///
    /// # Errors
    /// Processes that survived SIGKILL (1).
    pub(super) async fn bring_down(
        &self,
        stack: &Stack,
        handles: Vec<UnitHandle>,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let mut by_process: BTreeMap<String, Vec<UnitHandle>> = BTreeMap::new();
        for h in handles {
            by_process
                .entry(h.inst.process.clone())
                .or_default()
                .push(h);
        }
        let names: Vec<String> = by_process
            .values()
            .flatten()
            .map(|h| h.inst.name.clone())
            .collect();
        let cells: HashMap<String, (watch::Sender<bool>, watch::Receiver<bool>)> = by_process
            .keys()
            .map(|p| (p.clone(), watch::channel(false)))
            .collect();
        let mut tasks = JoinSet::new();
        for (pname, hs) in by_process {
            // Wait for everything in the stop set that depends on this one.
            let waits: Vec<watch::Receiver<bool>> = plan::dependents(stack, &pname)
                .iter()
                .filter_map(|d| cells.get(d).map(|(_, rx)| rx.clone()))
                .collect();
            let Some((done, _)) = cells.get(&pname) else {
                continue;
            };
            tasks.spawn(stop_process(hs, waits, done.clone(), tx.clone()));
        }
        let mut survivors: Vec<(String, Vec<i32>)> = Vec::new();
        while let Some(res) = tasks.join_next().await {
            if let Ok(s) = res {
                survivors.extend(s);
            }
        }
        let swept = self.sweep(stack, &names).await;
        for (name, pid) in swept
            .strays
            .iter()
            .filter(|(_, p)| !swept.survivors.contains(p))
        {
            progress(
                tx,
                name,
                Step::Info,
                format!("stopped pid {pid}, which had left its process group"),
            );
        }
        for (name, pid) in swept.strays {
            if swept.survivors.contains(&pid) {
                survivors.push((name, vec![pid]));
            }
        }
        if survivors.is_empty() {
            Ok(())
        } else {
            Err(stop_failure(&survivors))
        }
    }

    /// Processes that left their group but kept the mark of one of `names`
    /// (a task's daemon, a stray forked late).
    async fn sweep(&self, stack: &Stack, names: &[String]) -> StopReport {
        // A unit of one of `names` may already run a new incarnation (a
        // concurrent start or scale): its groups are not leftovers.
        let live: Vec<i32> = self
            .registry
            .matching(|h| names.contains(&h.inst.name))
            .iter()
            .filter_map(|h| h.now().pid)
            .collect();
        let target = Target {
            group: None,
            strays: Some(Mark {
                stack_id: &self.ctx.stack_id,
                cgroups: Some(&self.ctx.cgroup_record),
                instances: Some(names),
            }),
            spare: &live,
        };
        let how = How {
            signal: nix::sys::signal::Signal::SIGTERM,
            grace: stack.stop_timeout.min(Duration::from_secs(10)),
        };
        spawn::terminate(target, how, std::future::pending()).await
    }
}

/// The life of one process in a bring-up: wait for its dependencies, then
/// start its instances in parallel; its cell says how it went.
async fn start_process(
    pname: String,
    handles: Vec<UnitHandle>,
    deps: Vec<(String, watch::Receiver<Option<bool>>)>,
    done: watch::Sender<Option<bool>>,
    how: StartHow,
    ctx: Arc<unit::UnitCtx>,
    tx: ProgressTx,
) -> Outcome {
    if let Some(dep) = live::await_dependencies(&handles, deps, &tx).await {
        // One line for a whole pool, not one per member.
        let who = match handles.as_slice() {
            [one] => one.inst.name.clone(),
            many => format!("{pname} ({} members)", many.len()),
        };
        progress(
            &tx,
            &who,
            Step::NotStarted,
            format!("not started: {dep} did not come up"),
        );
        // Not waiting any more: `stopped`, not `pending`.
        for h in &handles {
            if h.now().state == State::Pending {
                let _ = h.stop().await;
            }
        }
        let _ = done.send(Some(false));
        return Outcome::NotStarted(pname);
    }
    let mut starts = JoinSet::new();
    for h in handles {
        if how.timed {
            ctx.timeline.deps_met(&h.inst.name);
        }
        starts.spawn(start_instance(h, how, tx.clone()));
    }
    let mut failed = Vec::new();
    while let Some(res) = starts.join_next().await {
        if let Ok(Some(f)) = res {
            failed.push(f);
        }
    }
    let _ = done.send(Some(failed.is_empty()));
    if failed.is_empty() {
        Outcome::Up
    } else {
        Outcome::Failed(failed)
    }
}

/// Starts (or restarts) one instance and says how it went; `Some` is a
/// failure.
async fn start_instance(h: UnitHandle, how: StartHow, tx: ProgressTx) -> Option<Failure> {
    let rerun = how.rerun;
    let before = h.now().state;
    let t = Instant::now();
    let idle = before == State::Running || (before == State::Completed && !rerun);
    if !idle || rerun {
        progress(&tx, &h.inst.name, Step::Starting, "starting");
    }
    let r = if rerun {
        live::follow(&h, h.restart(), &tx).await
    } else {
        live::follow(&h, h.start(), &tx).await
    };
    let took = t.elapsed().as_secs_f64();
    match r {
        Ok(()) => {
            let (step, msg) = match (h.now().state, before, rerun) {
                (State::Running, State::Running, false)
                | (State::Completed, State::Completed, false)
                    if how.quiet_idle =>
                {
                    return None;
                }
                (State::Running, State::Running, false) => {
                    (Step::Ready, "already running".to_string())
                }
                (State::Completed, State::Completed, false) => {
                    (Step::Completed, "already completed".to_string())
                }
                (State::Completed, _, _) => (Step::Completed, format!("completed in {took:.1}s")),
                _ => (Step::Ready, format!("ready in {took:.1}s")),
            };
            progress(&tx, &h.inst.name, step, msg);
            None
        }
        Err(f) => {
            progress(
                &tx,
                &h.inst.name,
                Step::Failed,
                format!("failed: {}", f.reason),
            );
            Some((h.inst.name.clone(), h.log_path.clone(), f.reason))
        }
    }
}

/// The life of one process in a bring-down: wait for its dependents in
/// the stop set, then stop its instances in parallel. Returns the pids of
/// each instance that survived SIGKILL.
async fn stop_process(
    hs: Vec<UnitHandle>,
    waits: Vec<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
    tx: ProgressTx,
) -> Vec<(String, Vec<i32>)> {
    for mut w in waits {
        let _ = w.wait_for(|d| *d).await;
    }
    let mut stops = JoinSet::new();
    for h in hs {
        stops.spawn(stop_instance(h, tx.clone()));
    }
    let mut survivors = Vec::new();
    while let Some(Ok((name, r))) = stops.join_next().await {
        if !r.survivors.is_empty() {
            survivors.push((name, r.survivors));
        }
    }
    let _ = done.send(true);
    survivors
}

/// Stops one instance, telling the operator when a process was there to
/// stop, and whether it needed SIGKILL.
async fn stop_instance(h: UnitHandle, tx: ProgressTx) -> (String, StopReport) {
    let had = h.now().state.has_process();
    if had {
        progress(&tx, &h.inst.name, Step::Stopping, "stopping");
    }
    let t = Instant::now();
    let r = live::follow(&h, h.stop(), &tx).await;
    if had {
        let took = t.elapsed().as_secs_f64();
        let how = How {
            signal: h.spec.stop_signal,
            grace: h.spec.stop_timeout,
        };
        let msg = if r.killed {
            format!("killed in {took:.1}s: {}", unit::killed_message(&how))
        } else {
            format!("stopped in {took:.1}s")
        };
        progress(&tx, &h.inst.name, Step::Stopped, msg);
    }
    (h.inst.name.clone(), r)
}

/// The error of a start that failed: each failure's reason and log tail,
/// and what was therefore not started.
pub(super) fn start_failure(failed: &[Failure], not_started: &[String]) -> Error {
    let names: Vec<&str> = failed.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut detail = String::new();
    for (name, log, reason) in failed {
        detail.push_str(&format!("{name}: {reason}\n"));
        // Its own run only: not the tracebacks of earlier ones.
        let (lines, attempt) =
            crate::logs::marker::run_tail(log, FAILURE_LOG_LINES).unwrap_or_default();
        let run = attempt
            .map(|a| format!(" (attempt {a})"))
            .unwrap_or_default();
        if lines.is_empty() {
            match attempt {
                Some(a) => detail.push_str(&format!(
                    "  (attempt {a} wrote nothing to {})\n",
                    log.display()
                )),
                None => detail.push_str(&format!("  ({} is empty)\n", log.display())),
            }
        } else {
            detail.push_str(&format!(
                "── last {} lines of {}{run} ──\n",
                lines.len(),
                log.display()
            ));
            for l in lines {
                detail.push_str(&l);
                detail.push('\n');
            }
            detail.push_str("──\n");
        }
    }
    if !not_started.is_empty() {
        detail.push_str(&format!(
            "not started (they depend on it): {}\n",
            not_started.join(", ")
        ));
    }
    let first = names.first().copied().unwrap_or("");
    Error::Failed {
        message: format!("failed to start {}", names.join(", ")),
        hint: Some(format!(
            "`stackctl logs {}` for more",
            first.split('.').next().unwrap_or(first)
        )),
        detail: Some(detail),
    }
}

/// The error of a stop that left processes alive.
fn stop_failure(survivors: &[(String, Vec<i32>)]) -> Error {
    let list: Vec<String> = survivors
        .iter()
        .map(|(n, p)| format!("{n} (pids {p:?})"))
        .collect();
    Error::Failed {
        message: format!("could not stop {}", list.join(", ")),
        hint: Some(
            "they survived SIGKILL (uninterruptible sleep?); check `ps -o pid,stat,wchan -p PID`"
                .into(),
        ),
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_failure_names_each_failed_instance_shows_its_log_and_what_waited() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.2.log");
        std::fs::write(&log, "booting\nerror: no queue\n").unwrap();
        let empty = dir.path().join("migrate.log");
        let e = start_failure(
            &[
                ("migrate".into(), empty.clone(), "exited with code 3".into()),
                ("worker.2".into(), log.clone(), "exited with code 1".into()),
            ],
            &["api".into(), "web".into()],
        );
        let Error::Failed {
            message,
            hint,
            detail,
        } = e
        else {
            panic!("not a failure");
        };
        assert_eq!(message, "failed to start migrate, worker.2");
        assert_eq!(hint.as_deref(), Some("`stackctl logs migrate` for more"));
        let d = detail.unwrap();
        assert!(
            d.contains(&format!("  ({} is empty)", empty.display())),
            "{d}"
        );
        assert!(
            d.contains(&format!(
                "── last 2 lines of {} ──\nbooting\nerror: no queue\n──",
                log.display()
            )),
            "{d}"
        );
        assert!(
            d.ends_with("not started (they depend on it): api, web\n"),
            "{d}"
        );
    }

    #[test]
    fn a_stop_failure_names_every_survivor() {
        let e = stop_failure(&[("api".into(), vec![10, 11]), ("web".into(), vec![12])]);
        assert_eq!(
            e.to_string(),
            "could not stop api (pids [10, 11]), web (pids [12])"
        );
    }
}
