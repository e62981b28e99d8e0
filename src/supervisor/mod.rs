//! The supervisor: the only owner of the stack's processes.
//!
//! Theory of operation. One supervisor runs per stack (an exclusive flock on
//! `state_dir/supervisor.lock`). It is a child subreaper and the only reaper
//! of its children (`spawn::reaper`). Each process instance is a [`unit`]
//! task that spawns, gates, watches, restarts and stops its process; the
//! [`Supervisor`] holds the units and turns requests into orders over them:
//!
//! - start: the dependency closure of what was named; every process waits
//!   for its dependencies (tasks completed, services ready — every member of
//!   a pool) and then all its instances start in parallel. A failure stops
//!   nothing that runs, and everything that depends on it is reported as
//!   not started.
//! - stop: the reverse; a process is stopped once everything in the stop set
//!   that depends on it is down; then a sweep finds processes of the stack
//!   that left their group (`setsid`, double fork) by the
//!   `STACKCTL_STACK_ID` they inherited, and stops them too.
//!
//! Requests arrive on the control socket ([`crate::control`]); `SIGTERM` and
//! `SIGINT` stop the whole stack and end the supervisor (a second one kills
//! everything at once); `SIGHUP` reloads the stack file.
//!
//! Pid files are written by the units and are the truth for `status` when
//! no supervisor runs. A supervisor that starts and finds live processes
//! recorded there (its predecessor was killed) stops them before it starts
//! anything, so there is never a second copy of a process. Their output
//! pipes died with the old supervisor, which is why they are not adopted;
//! an fd-holding helper that keeps the pipes open across a supervisor
//! restart could be added without changing the units or the pid files.

pub mod daemon;
pub mod fsm;
pub mod offline;
pub mod unit;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use self::fsm::State;
use self::unit::{Echo, UnitCtx, UnitHandle};
use crate::config::{Kind, ProcessSpec, Stack};
use crate::control::protocol::{ErrorBody, Progress, Request, Response, Step, VERSION};
use crate::error::Error;
use crate::output::{ProcessStatus, StatusDoc, SupervisorInfo};
use crate::plan::{self, Instance, Selection};
use crate::state::StateDir;

/// One process's outcome in an orchestration: `None` until it is known.
type Cell = (watch::Sender<Option<bool>>, watch::Receiver<Option<bool>>);

/// Where progress of a long operation goes.
pub type ProgressTx = mpsc::UnboundedSender<Progress>;

fn progress(tx: &ProgressTx, process: &str, step: Step, message: impl Into<String>) {
    let _ = tx.send(Progress {
        process: process.to_string(),
        step,
        message: message.into(),
    });
}

/// A name for the stack's processes that is unique on this host: a hash of
/// its state folder.
pub fn stack_id(state_dir: &Path) -> String {
    // FNV-1a: stable across builds and Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The supervisor's state.
pub struct Supervisor {
    stack: RwLock<Arc<Stack>>,
    ctx: Arc<UnitCtx>,
    /// By instance name.
    units: Mutex<BTreeMap<String, UnitHandle>>,
    /// Current size of each pool.
    pools: Mutex<BTreeMap<String, u32>>,
    shutdown: watch::Sender<bool>,
    /// Things the next `start` should tell the operator (what a killed
    /// predecessor left and this supervisor stopped).
    notices: Mutex<Vec<(String, String)>>,
    /// Reloads run one at a time.
    reloading: tokio::sync::Mutex<()>,
    pid: i32,
}

impl Supervisor {
    /// A supervisor for `stack` (spawns nothing yet).
    pub fn new(stack: Stack, echo: Option<Echo>) -> Arc<Supervisor> {
        let state = StateDir::new(&stack.state_dir);
        let pid = std::process::id() as i32;
        let base_env = std::env::vars()
            .filter(|(k, _)| !k.starts_with("STACKCTL_") || k == "STACKCTL_TEST_MARKER")
            .filter(|(k, _)| k != "NOTIFY_SOCKET")
            .collect();
        let ctx = Arc::new(UnitCtx {
            stack_name: stack.name.clone(),
            stack_id: stack_id(&stack.state_dir),
            state,
            supervisor_pid: pid,
            base_env,
            logs: stack.logs.clone(),
            echo,
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        let pools = stack
            .processes
            .iter()
            .filter_map(|p| p.replicas.map(|n| (p.name.clone(), n)))
            .collect();
        let (shutdown, _) = watch::channel(false);
        Arc::new(Supervisor {
            stack: RwLock::new(Arc::new(stack)),
            ctx,
            units: Mutex::new(BTreeMap::new()),
            pools: Mutex::new(pools),
            shutdown,
            reloading: tokio::sync::Mutex::new(()),
            notices: Mutex::new(Vec::new()),
            pid,
        })
    }

    /// The stack as last loaded.
    pub fn stack(&self) -> Arc<Stack> {
        self.stack.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn units(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, UnitHandle>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a line for the next `start` to show.
    pub fn notice(&self, process: &str, message: &str) {
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((process.to_string(), message.to_string()));
    }

    /// Resolves when the supervisor should exit.
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The instances `process` has now (a pool: its current size).
    fn instances(&self, spec: &ProcessSpec) -> Vec<Instance> {
        let n = spec
            .replicas
            .map(|d| self.pools().get(&spec.name).copied().unwrap_or(d));
        plan::instances(&spec.name, n)
    }

    /// The unit of `inst`, created if needed.
    fn unit(&self, spec: &ProcessSpec, inst: &Instance) -> UnitHandle {
        let mut units = self.units();
        units
            .entry(inst.name.clone())
            .or_insert_with(|| {
                UnitHandle::spawn(self.ctx.clone(), Arc::new(spec.clone()), inst.clone())
            })
            .clone()
    }

    fn select(&self, stack: &Stack, names: &[String]) -> Result<Selection, Error> {
        plan::select(stack, names).map_err(|unknown| {
            let list: Vec<String> = unknown.iter().map(|u| format!("`{}`", u.name)).collect();
            let hint = unknown
                .iter()
                .find_map(|u| {
                    u.suggestion
                        .as_ref()
                        .map(|s| format!("did you mean `{s}`?"))
                })
                .or_else(|| {
                    Some(format!(
                        "the stack has: {}",
                        stack
                            .processes
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                });
            Error::Usage {
                message: format!(
                    "no process named {} in stack {}",
                    list.join(", "),
                    stack.name
                ),
                hint,
            }
        })
    }

    /// Brings `names` (default: everything) up with their dependencies.
    ///
    /// `rerun`: restart what is named (tasks run again) instead of leaving
    /// running processes alone.
    ///
    /// # Errors
    /// Unknown names, missing required variables, bad scale (exit 2); a
    /// process that failed, with everything that was therefore not started
    /// (exit 1).
    pub async fn start(
        &self,
        names: &[String],
        scale: &BTreeMap<String, u32>,
        rerun: bool,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let notices: Vec<(String, String)> =
            std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, msg) in notices {
            progress(tx, &name, Step::Info, msg);
        }
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let mut wanted: Vec<String> = sel.processes.clone();
        wanted.extend(sel.members.keys().cloned());
        let closure = plan::closure(&stack, &wanted);
        let missing: Vec<(String, String)> = crate::config::env::missing_required_env(&stack)
            .into_iter()
            .filter(|(p, _)| closure.contains(p))
            .collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing
                .iter()
                .map(|(p, v)| format!("{v} (required by {p})"))
                .collect();
            return Err(Error::Usage {
                message: format!("required environment variables are unset or empty: {}", list.join(", ")),
                hint: Some("the supervisor checks the environment it was started with: put them in an env_file and `stackctl reload`, or `stackctl stop` and start again with them set; nothing was started".into()),
            });
        }
        for (name, n) in scale {
            let Some(spec) = stack.process(name) else {
                return Err(Error::usage(format!(
                    "--scale {name}={n}: no process named `{name}`"
                )));
            };
            check_pool_size(spec, *n)?;
        }
        // `--scale` sets the pool's size: members above it are stopped
        // (gracefully, as `scale` does), not left running outside the pool.
        for (name, n) in scale {
            self.pools().insert(name.clone(), *n);
            self.shrink_to(&stack, name, *n, tx).await?;
        }
        self.bring_up(&stack, &closure, &sel, rerun, tx).await
    }

    async fn bring_up(
        &self,
        stack: &Arc<Stack>,
        closure: &[String],
        sel: &Selection,
        rerun: bool,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let mut cells: HashMap<String, Cell> = closure
            .iter()
            .map(|p| (p.clone(), watch::channel(None)))
            .collect();
        let mut tasks = JoinSet::new();
        for pname in closure {
            let Some(spec) = stack.process(pname) else {
                continue;
            };
            let deps: Vec<(String, watch::Receiver<Option<bool>>)> = spec
                .depends_on
                .iter()
                .filter_map(|d| cells.get(d).map(|(_, rx)| (d.clone(), rx.clone())))
                .collect();
            let Some((my_tx, _)) = cells.get(pname) else {
                continue;
            };
            let my_tx = my_tx.clone();
            // Named members of a pool start alone; a dependency starts whole.
            let explicit_members = sel
                .members
                .get(pname)
                .filter(|_| !sel.processes.contains(pname));
            let handles: Vec<UnitHandle> = self
                .instances(spec)
                .into_iter()
                .filter(|i| match (explicit_members, i.index) {
                    (Some(set), Some(idx)) => set.contains(&idx),
                    _ => true,
                })
                .map(|i| self.unit(spec, &i))
                .collect();
            let targeted = sel.processes.contains(pname) || sel.members.contains_key(pname);
            let rerun_this = rerun && targeted;
            let tx = tx.clone();
            let pname = pname.clone();
            tasks.spawn(async move {
                for (dep, mut rx) in deps {
                    let ok = rx
                        .wait_for(Option::is_some)
                        .await
                        .map(|v| *v == Some(true))
                        .unwrap_or(false);
                    if !ok {
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
                        let _ = my_tx.send(Some(false));
                        return Outcome::NotStarted(pname);
                    }
                }
                let mut starts = JoinSet::new();
                for h in handles {
                    let tx = tx.clone();
                    starts.spawn(async move {
                        let before = h.now().state;
                        let t = Instant::now();
                        let idle =
                            before == State::Running || (before == State::Completed && !rerun_this);
                        if !idle || rerun_this {
                            progress(&tx, &h.inst.name, Step::Starting, "starting");
                        }
                        let r = if rerun_this {
                            h.restart().await
                        } else {
                            h.start().await
                        };
                        let took = t.elapsed().as_secs_f64();
                        match &r {
                            Ok(()) => {
                                let after = h.now().state;
                                let (step, msg) = match (after, before, rerun_this) {
                                    (State::Running, State::Running, false) => {
                                        (Step::Ready, "already running".to_string())
                                    }
                                    (State::Completed, State::Completed, false) => {
                                        (Step::Completed, "already completed".to_string())
                                    }
                                    (State::Completed, _, _) => {
                                        (Step::Completed, format!("completed in {took:.1}s"))
                                    }
                                    _ => (Step::Ready, format!("ready in {took:.1}s")),
                                };
                                progress(&tx, &h.inst.name, step, msg);
                            }
                            Err(f) => progress(
                                &tx,
                                &h.inst.name,
                                Step::Failed,
                                format!("failed: {}", f.reason),
                            ),
                        }
                        (h, r)
                    });
                }
                let mut failed = Vec::new();
                while let Some(res) = starts.join_next().await {
                    if let Ok((h, Err(f))) = res {
                        failed.push((h.inst.name.clone(), h.log_path.clone(), f.reason));
                    }
                }
                let _ = my_tx.send(Some(failed.is_empty()));
                if failed.is_empty() {
                    Outcome::Up
                } else {
                    Outcome::Failed(failed)
                }
            });
        }
        cells.clear();
        let mut failed = Vec::new();
        let mut not_started = Vec::new();
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(Outcome::Up) => {}
                Ok(Outcome::Failed(f)) => failed.extend(f),
                Ok(Outcome::NotStarted(p)) => not_started.push(p),
                Err(e) => failed.push(("(internal)".into(), Default::default(), e.to_string())),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        failed.sort();
        not_started.sort_by_key(|n| closure.iter().position(|c| c == n));
        Err(start_failure(&failed, &not_started))
    }

    /// Stops `names` (default: everything) in reverse dependency order.
    ///
    /// # Errors
    /// Unknown names (2); a process that survived SIGKILL (1).
    pub async fn stop(&self, names: &[String], tx: &ProgressTx) -> Result<(), Error> {
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let handles: Vec<UnitHandle> = self
            .units()
            .values()
            .filter(|h| sel.contains(&h.inst))
            .cloned()
            .collect();
        self.bring_down(&stack, handles, tx).await
    }

    async fn bring_down(
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
            let done = done.clone();
            let tx = tx.clone();
            tasks.spawn(async move {
                for mut w in waits {
                    let _ = w.wait_for(|d| *d).await;
                }
                let mut stops = JoinSet::new();
                for h in hs {
                    let tx = tx.clone();
                    stops.spawn(async move {
                        let had = h.now().state.has_process();
                        if had {
                            progress(&tx, &h.inst.name, Step::Stopping, "stopping");
                        }
                        let t = Instant::now();
                        let r = h.stop().await;
                        if had {
                            progress(
                                &tx,
                                &h.inst.name,
                                Step::Stopped,
                                format!("stopped in {:.1}s", t.elapsed().as_secs_f64()),
                            );
                        }
                        (h.inst.name.clone(), r)
                    });
                }
                let mut survivors = Vec::new();
                while let Some(Ok((name, r))) = stops.join_next().await {
                    if !r.survivors.is_empty() {
                        survivors.push((name, r.survivors));
                    }
                }
                let _ = done.send(true);
                survivors
            });
        }
        let mut survivors: Vec<(String, Vec<i32>)> = Vec::new();
        while let Some(res) = tasks.join_next().await {
            if let Ok(s) = res {
                survivors.extend(s);
            }
        }
        // Processes that left their group but kept the stack's mark.
        let escaped = sweep(
            &self.ctx.stack_id,
            &names,
            stack.stop_timeout.min(Duration::from_secs(10)),
        )
        .await;
        for (name, pid) in escaped.stopped {
            progress(
                tx,
                &name,
                Step::Info,
                format!("stopped pid {pid}, which had left its process group"),
            );
        }
        for (name, pid) in escaped.survivors {
            survivors.push((name, vec![pid]));
        }
        if survivors.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = survivors
            .iter()
            .map(|(n, p)| format!("{n} (pids {p:?})"))
            .collect();
        Err(Error::Failed {
            message: format!("could not stop {}", list.join(", ")),
            hint: Some("they survived SIGKILL (uninterruptible sleep?); check `ps -o pid,stat,wchan -p PID`".into()),
            detail: None,
        })
    }

    /// Stops `names` and starts them again (default: the whole stack, tasks
    /// re-run). A pool restarts one member at a time, each ready before the
    /// next, so it never drops to zero.
    ///
    /// # Errors
    /// As [`Supervisor::start`].
    pub async fn restart(&self, names: &[String], tx: &ProgressTx) -> Result<(), Error> {
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        if names.is_empty() {
            let all: Vec<UnitHandle> = self.units().values().cloned().collect();
            self.bring_down(&stack, all, tx).await?;
            return self.start(&[], &BTreeMap::new(), true, tx).await;
        }
        // Pools named whole: a rolling restart, member by member.
        let mut rest = Vec::new();
        for p in &sel.processes {
            match stack.process(p) {
                Some(spec) if spec.is_pool() => {
                    for inst in self.instances(spec) {
                        let h = self.unit(spec, &inst);
                        progress(tx, &inst.name, Step::Starting, "restarting");
                        let t = Instant::now();
                        match h.restart().await {
                            Ok(()) => progress(
                                tx,
                                &inst.name,
                                Step::Ready,
                                format!("ready in {:.1}s", t.elapsed().as_secs_f64()),
                            ),
                            Err(f) => {
                                progress(
                                    tx,
                                    &inst.name,
                                    Step::Failed,
                                    format!("failed: {}", f.reason),
                                );
                                return Err(start_failure(
                                    &[(inst.name.clone(), h.log_path.clone(), f.reason)],
                                    &[],
                                ));
                            }
                        }
                    }
                }
                _ => rest.push(p.clone()),
            }
        }
        for (p, members) in &sel.members {
            for m in members {
                rest.push(format!("{p}.{m}"));
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.start(&rest, &BTreeMap::new(), true, tx).await
    }

    /// Resizes pool `name` to `count` (`N`, `+K`, `-K`).
    ///
    /// # Errors
    /// Unknown name, a task or not a pool, a size out of bounds (2); a new
    /// member that failed to start, a member that could not be stopped (1).
    pub async fn scale(&self, name: &str, count: &str, tx: &ProgressTx) -> Result<u32, Error> {
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let Some(spec) = stack.process(name) else {
            let sel = self.select(&stack, &[name.to_string()]);
            return Err(sel
                .err()
                .unwrap_or_else(|| Error::usage(format!("no pool named `{name}`"))));
        };
        if spec.kind == Kind::Task {
            return Err(Error::Usage {
                message: format!("`{name}` is a task; only services can be scaled"),
                hint: None,
            });
        }
        if !spec.is_pool() {
            return Err(Error::Usage {
                message: format!("`{name}` is not a pool"),
                hint: Some(format!(
                    "give [service.{name}] a `replicas = N` to make it a pool"
                )),
            });
        }
        let current = self.instances(spec).len() as u32;
        let target = parse_count(count, current)?;
        check_pool_size(spec, target)?;
        if target > current {
            self.pools().insert(name.to_string(), target);
            let members: std::collections::BTreeSet<u32> = (current + 1..=target).collect();
            let sel = Selection {
                processes: Vec::new(),
                members: [(name.to_string(), members)].into_iter().collect(),
            };
            let closure = plan::closure(&stack, &[name.to_string()]);
            self.bring_up(&stack, &closure, &sel, false, tx).await?;
        } else {
            self.pools().insert(name.to_string(), target);
            self.shrink_to(&stack, name, target, tx).await?;
        }
        tracing::info!(process = %name, "scaled from {current} to {target}");
        Ok(target)
    }

    /// Stops every member of pool `name` numbered above `target` and
    /// forgets it. Every member, not just those up to the recorded size:
    /// members above it may still run (a `start --scale` that lowered the
    /// size used to leave them), and `scale 0` must leave none.
    async fn shrink_to(
        &self,
        stack: &Stack,
        name: &str,
        target: u32,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let mut doomed: Vec<UnitHandle> = self
            .units()
            .values()
            .filter(|h| h.inst.process == name && h.inst.index.is_some_and(|i| i > target))
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        doomed.sort_by_key(|h| std::cmp::Reverse(h.inst.index));
        let names: Vec<String> = doomed.iter().map(|h| h.inst.name.clone()).collect();
        let r = self.bring_down(stack, doomed, tx).await;
        let mut units = self.units();
        for n in names {
            units.remove(&n);
        }
        drop(units);
        r
    }

    /// The status document for `names` (default: all).
    ///
    /// # Errors
    /// Unknown names (2).
    pub fn status(&self, names: &[String]) -> Result<StatusDoc, Error> {
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let units = self.units().clone();
        let mut processes = Vec::new();
        for spec in &stack.processes {
            let mut insts = self.instances(spec);
            // Members still being drained after a shrink are shown too.
            for h in units.values() {
                if h.inst.process == spec.name && !insts.contains(&h.inst) {
                    insts.push(h.inst.clone());
                }
            }
            insts.sort_by_key(|i| i.index);
            for inst in insts {
                if !sel.contains(&inst) {
                    continue;
                }
                processes.push(match units.get(&inst.name) {
                    Some(h) => {
                        let mut st = unit_status(spec, &inst, &h.now());
                        if let Some(err) = h.log.get().and_then(|l| l.last_error()) {
                            st.message = Some(format!("log: {err}"));
                        }
                        st
                    }
                    None => ProcessStatus {
                        name: inst.name.clone(),
                        kind: spec.kind,
                        pool: inst.index.map(|_| spec.name.clone()),
                        instance: inst.index,
                        pid: None,
                        state: State::Stopped,
                        ready: false,
                        restarts: 0,
                        uptime_s: None,
                        rss_mb: None,
                        exit_code: None,
                        message: None,
                    },
                });
            }
        }
        Ok(StatusDoc {
            stack: stack.name.clone(),
            supervisor: SupervisorInfo {
                pid: Some(self.pid),
                running: true,
            },
            processes,
        })
    }

    /// Re-reads the stack file and applies only the difference: starts
    /// what is new, stops what was removed, restarts what changed (if it
    /// was running), resizes pools whose `replicas` changed. Untouched
    /// processes keep running. A broken file changes nothing.
    ///
    /// # Errors
    /// The file's diagnostics (2); a process that failed to start (1).
    pub async fn reload(&self, tx: &ProgressTx) -> Result<(), Error> {
        self.refuse_if_stopping()?;
        let _serial = self.reloading.lock().await;
        let old = self.stack();
        let new = crate::config::load(&old.file)?;
        if new.state_dir != old.state_dir {
            return Err(Error::Usage {
                message: format!(
                    "state_dir changed from {} to {}; reload cannot move a running stack",
                    old.state_dir.display(),
                    new.state_dir.display()
                ),
                hint: Some("`stackctl stop`, then `stackctl start`".into()),
            });
        }
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        let mut resized = Vec::new();
        let mut added = Vec::new();
        for p in &old.processes {
            match new.process(&p.name) {
                None => removed.push(p.name.clone()),
                Some(n) if fingerprint(n) != fingerprint(p) => changed.push(p.name.clone()),
                Some(n) if n.replicas != p.replicas => resized.push((p.name.clone(), n.replicas)),
                Some(_) => {}
            }
        }
        for p in &new.processes {
            if old.process(&p.name).is_none() {
                added.push(p.name.clone());
            }
        }
        if removed.is_empty() && changed.is_empty() && resized.is_empty() && added.is_empty() {
            // Nothing to start or stop, but settings outside the
            // fingerprint (`max_replicas`) may have changed: keep the new file.
            *self.stack.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
            progress(tx, "stack", Step::Info, "no change");
            tracing::info!("reload: no change");
            return Ok(());
        }
        // Stop what was removed or changed (remembering what was active).
        let doomed: Vec<UnitHandle> = self
            .units()
            .values()
            .filter(|h| removed.contains(&h.inst.process) || changed.contains(&h.inst.process))
            .cloned()
            .collect();
        let was_active: Vec<String> = changed
            .iter()
            .filter(|c| {
                doomed.iter().any(|h| {
                    &h.inst.process == *c
                        && matches!(
                            h.now().state,
                            State::Starting | State::Running | State::Backoff | State::Completed
                        )
                })
            })
            .cloned()
            .collect();
        let down = self.bring_down(&old, doomed, tx).await;
        {
            let mut units = self.units();
            units.retain(|_, h| {
                !removed.contains(&h.inst.process) && !changed.contains(&h.inst.process)
            });
        }
        {
            let mut pools = self.pools();
            for r in removed.iter().chain(&changed) {
                pools.remove(r);
            }
            for p in new.processes.iter() {
                if let (Some(n), true) = (
                    p.replicas,
                    added.contains(&p.name) || changed.contains(&p.name),
                ) {
                    pools.insert(p.name.clone(), n);
                }
            }
        }
        *self.stack.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        for r in &removed {
            progress(tx, r, Step::Info, "removed from the stack file");
        }
        down?;
        for (name, n) in &resized {
            let count = n.unwrap_or(1).to_string();
            self.scale(name, &count, tx).await?;
        }
        let mut to_start = added.clone();
        to_start.extend(was_active);
        tracing::info!(
            "reload: added {added:?}, removed {removed:?}, changed {changed:?}, resized {:?}",
            resized.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        if to_start.is_empty() {
            return Ok(());
        }
        self.start(&to_start, &BTreeMap::new(), false, tx).await
    }

    /// Stops everything and asks the supervisor to exit.
    ///
    /// # Errors
    /// As [`Supervisor::stop`].
    pub async fn shutdown(&self, tx: &ProgressTx) -> Result<(), Error> {
        // From here on no unit starts anything: the supervisor exits when
        // the stop is done.
        self.ctx
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut r = self.stop(&[], tx).await;
        // A start that was already under way when the stop began may have
        // brought a unit back up; stop again until none is active, so that
        // nothing outlives the supervisor unsupervised.
        for _ in 0..5 {
            let active: Vec<UnitHandle> = self
                .units()
                .values()
                .filter(|h| {
                    !matches!(
                        h.now().state,
                        State::Stopped | State::Completed | State::Failed
                    )
                })
                .cloned()
                .collect();
            if active.is_empty() {
                break;
            }
            let again = self.bring_down(&self.stack(), active, tx).await;
            r = r.and(again);
        }
        let _ = self.shutdown.send(true);
        r
    }

    /// Refuses an operation that would start something once a full stop
    /// has begun.
    fn refuse_if_stopping(&self) -> Result<(), Error> {
        if self.ctx.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Failed {
                message: format!(
                    "stack {} is being stopped; nothing was started",
                    self.stack().name
                ),
                hint: Some("run the command again once `stackctl stop` has returned".into()),
                detail: None,
            });
        }
        Ok(())
    }

    /// SIGKILLs every process group at once (a second Ctrl-C).
    pub fn kill_all_now(&self) {
        for h in self.units().values() {
            if let Some(pid) = h.now().pid {
                let _ = crate::spawn::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// What makes two versions of a process the same, for `reload`: every
/// setting but the pool size (a changed `replicas` is a resize, not a
/// restart). Compared, never printed: it holds env values.
fn fingerprint(p: &ProcessSpec) -> String {
    let mut q = p.clone();
    q.replicas = q.replicas.map(|_| 0);
    q.max_replicas = None;
    format!("{q:?}|{:?}", p.env.0)
}

enum Outcome {
    Up,
    Failed(Vec<(String, std::path::PathBuf, String)>),
    NotStarted(String),
}

fn parse_count(count: &str, current: u32) -> Result<u32, Error> {
    let bad = || Error::Usage {
        message: format!("`{count}` is not a pool size"),
        hint: Some(
            "give N, +K or -K (e.g. `stackctl scale worker 4`, `stackctl scale worker -- -1`)"
                .into(),
        ),
    };
    let t = count.trim();
    if let Some(k) = t.strip_prefix('+') {
        let k: u32 = k.parse().map_err(|_| bad())?;
        Ok(current.saturating_add(k))
    } else if let Some(k) = t.strip_prefix('-') {
        let k: u32 = k.parse().map_err(|_| bad())?;
        current.checked_sub(k).ok_or_else(|| Error::Usage {
            message: format!("cannot shrink by {k}: the pool has {current} members"),
            hint: None,
        })
    } else {
        t.parse().map_err(|_| bad())
    }
}

/// A pool may not exceed `max_replicas` (or a sanity limit of 1000).
fn check_pool_size(spec: &ProcessSpec, n: u32) -> Result<(), Error> {
    if !spec.is_pool() {
        return Err(Error::Usage {
            message: format!("`{}` is not a pool", spec.name),
            hint: Some(format!(
                "give [service.{}] a `replicas = N` to make it a pool",
                spec.name
            )),
        });
    }
    let max = spec.max_replicas.unwrap_or(1000);
    if n > max {
        return Err(Error::Usage {
            message: format!(
                "{} members is more than {}'s max_replicas of {max}",
                n, spec.name
            ),
            hint: Some(format!("raise max_replicas in [service.{}]", spec.name)),
        });
    }
    Ok(())
}

fn unit_status(spec: &ProcessSpec, inst: &Instance, s: &unit::UnitStatus) -> ProcessStatus {
    let live = s.state.has_process();
    let rss = if live {
        s.pid.and_then(crate::spawn::identity::rss_bytes)
    } else {
        None
    };
    ProcessStatus {
        name: inst.name.clone(),
        kind: spec.kind,
        pool: inst.index.map(|_| spec.name.clone()),
        instance: inst.index,
        pid: if live { s.pid } else { None },
        state: s.state,
        ready: s.ready && (s.state == State::Running || s.state == State::Completed),
        restarts: s.restarts,
        uptime_s: if live {
            s.since.map(|t| t.elapsed().as_secs_f64())
        } else {
            None
        },
        rss_mb: rss.map(|b| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0),
        exit_code: s.exit.map(crate::spawn::Exit::code),
        message: s.message.clone(),
    }
}

/// How many log lines a failed start shows.
pub const FAILURE_LOG_LINES: usize = 20;

fn start_failure(failed: &[(String, std::path::PathBuf, String)], not_started: &[String]) -> Error {
    let names: Vec<&str> = failed.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut detail = String::new();
    for (name, log, reason) in failed {
        detail.push_str(&format!("{name}: {reason}\n"));
        let lines = crate::logs::tail(log, FAILURE_LOG_LINES).unwrap_or_default();
        if lines.is_empty() {
            detail.push_str(&format!("  ({} is empty)\n", log.display()));
        } else {
            detail.push_str(&format!(
                "── last {} lines of {} ──\n",
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
    Error::Failed {
        message: format!("failed to start {}", names.join(", ")),
        hint: Some(format!(
            "`stackctl logs {}` for more",
            names[0].split('.').next().unwrap_or(names[0])
        )),
        detail: Some(detail),
    }
}

/// What [`sweep`] found.
#[derive(Debug, Default)]
pub struct Swept {
    pub stopped: Vec<(String, i32)>,
    pub survivors: Vec<(String, i32)>,
}

/// Stops every live process of the stack `stack_id` whose
/// `STACKCTL_PROCESS` is one of `names`: SIGTERM, then SIGKILL after
/// `grace`.
pub async fn sweep(stack_id: &str, names: &[String], grace: Duration) -> Swept {
    let found: Vec<(i32, String)> = crate::spawn::identity::stack_members(stack_id)
        .into_iter()
        .filter(|(_, p)| names.contains(p))
        .collect();
    let mut out = Swept::default();
    if found.is_empty() {
        return out;
    }
    for (pid, _) in &found {
        let _ = crate::spawn::signal_pid(*pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut step = Duration::from_millis(2);
    while found
        .iter()
        .any(|(p, _)| crate::spawn::identity::is_alive(*p))
        && Instant::now() < deadline
    {
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_millis(50));
    }
    for (pid, _) in &found {
        if crate::spawn::identity::is_alive(*pid) {
            let _ = crate::spawn::signal_pid(*pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let hard = Instant::now() + Duration::from_secs(2);
    while found
        .iter()
        .any(|(p, _)| crate::spawn::identity::is_alive(*p))
        && Instant::now() < hard
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (pid, name) in found {
        if crate::spawn::identity::is_alive(pid) {
            out.survivors.push((name, pid));
        } else {
            out.stopped.push((name, pid));
        }
    }
    out
}

/// Serves one control connection.
pub async fn serve_connection(sup: Arc<Supervisor>, stream: UnixStream) {
    if !crate::control::server::peer_is_us(&stream) {
        tracing::warn!("refused a control connection from another user");
        return;
    }
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(tokio::io::AsyncReadExt::take(r, 1 << 20));
    let mut line = String::new();
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let env: crate::control::protocol::Envelope = match serde_json::from_str(&line) {
        Ok(e) => e,
        Err(e) => {
            let _ = write(&mut w, &done_err(Error::usage(format!("bad request: {e}")))).await;
            return;
        }
    };
    if env.v != VERSION {
        let _ = write(
            &mut w,
            &done_err(Error::Usage {
                message: format!(
                    "this supervisor speaks protocol v{VERSION}, the client v{}",
                    env.v
                ),
                hint: Some(
                    "stop the stack with the old binary, then start it with the new one".into(),
                ),
            }),
        )
        .await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let req = env.req;
    let is_shutdown = matches!(&req, Request::Stop { names } if names.is_empty());
    let sup2 = sup.clone();
    let op = tokio::spawn(async move {
        match req {
            Request::Ping => Ok(None),
            Request::Status { names } => sup2.status(&names).map(Some),
            Request::Start { names, scale } => {
                sup2.start(&names, &scale, false, &tx).await.map(|_| None)
            }
            Request::Stop { names } if names.is_empty() => sup2.shutdown(&tx).await.map(|_| None),
            Request::Stop { names } => sup2.stop(&names, &tx).await.map(|_| None),
            Request::Restart { names } => sup2.restart(&names, &tx).await.map(|_| None),
            Request::Scale { name, count } => sup2.scale(&name, &count, &tx).await.map(|_| None),
            Request::Reload => sup2.reload(&tx).await.map(|_| None),
        }
    });
    while let Some(p) = rx.recv().await {
        // The client may be gone (Ctrl-C); the operation goes on regardless.
        let _ = write(&mut w, &Response::Progress(p)).await;
    }
    let result = match op.await {
        Ok(r) => r,
        Err(e) => Err(Error::failed(format!("internal error: {e}"))),
    };
    let resp = match result {
        Ok(Some(doc)) => {
            let _ = write(&mut w, &Response::Status(doc)).await;
            Response::Done {
                ok: true,
                error: None,
            }
        }
        Ok(None) => Response::Done {
            ok: true,
            error: None,
        },
        Err(e) => done_err(e),
    };
    let _ = write(&mut w, &resp).await;
    let _ = w.shutdown().await;
    if is_shutdown {
        tracing::info!("stack stopped on request; supervisor exiting");
    }
}

fn done_err(e: Error) -> Response {
    Response::Done {
        ok: false,
        error: Some(ErrorBody::from(e)),
    }
}

async fn write(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut s = serde_json::to_string(r).map_err(std::io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes()).await
}
