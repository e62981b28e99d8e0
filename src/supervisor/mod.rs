//! The supervisor: the only owner of the stack's processes.
//!
//! Theory of operation. One supervisor runs per stack (an exclusive flock on
//! `state_dir/supervisor.lock`, taken by `crate::daemon`). It is a child
//! subreaper and the only reaper of its children (`spawn::reaper`). Each
//! process instance is a [`unit`] task that spawns, gates, watches,
//! restarts and stops its process; the [`Supervisor`] holds the units (in
//! its [`registry`], with each pool's size) and turns operations into
//! orders over them ([`order`]):
//!
//! - start: the dependency closure of what was named; every process waits
//!   for its dependencies (tasks completed, services ready — every member of
//!   a pool) and then all its instances start in parallel. A failure stops
//!   nothing that runs, and everything that depends on it is reported as
//!   not started.
//! - stop: the reverse; a process is stopped once everything in the stop set
//!   that depends on it is down; then the marked strays of every stopped
//!   name are swept (`spawn::terminate`, the one stop sequence).
//! - restart, scale ([`pool`]), reload ([`reload`] decides, `reload` here
//!   applies) and shutdown are made of those two.
//! - an autoscaled pool has an [`autoscale`] task while it is started,
//!   which resizes it through the scale path.
//!
//! The supervisor does not know the control socket: `control::server`
//! calls these methods, and progress leaves through a [`ProgressTx`].
//!
//! Pid files are written by the units and are the truth for `status` when
//! no supervisor runs ([`offline`]). A supervisor that starts and finds live
//! processes recorded there (its predecessor was killed) stops them before
//! it starts anything, so there is never a second copy of a process. Their
//! output pipes died with the old supervisor, which is why they are not
//! adopted.
//!
//! Owns: the units, the pool sizes, the autoscalers, and what each
//! operation does. Must not touch: the wire (`control`), the terminal
//! (`output`), the lock file.

pub mod autoscale;
pub mod fsm;
mod live;
pub mod offline;
mod order;
mod pool;
pub mod record;
mod registry;
mod reload;
pub mod timeline;
pub mod unit;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::sync::{mpsc, watch};

use self::registry::Registry;
use self::unit::{Resume, UnitCtx, UnitHandle};
use crate::anchor::client::{Inventory, Link};
use crate::config::Stack;
use crate::error::Error;
use crate::plan::{self, Selection};
use crate::state::StateDir;
use crate::status::{Observed, Progress, State, StatusDoc, Step, SupervisorInfo};

pub use order::FAILURE_LOG_LINES;

/// Where progress of a long operation goes.
pub type ProgressTx = mpsc::UnboundedSender<Progress>;

fn progress(tx: &ProgressTx, process: &str, step: Step, message: impl Into<String>) {
    let _ = tx.send(Progress::new(process, step, message));
}

/// The variables of stackctl's own environment that never reach a process:
/// its own namespace (each process gets fresh values) and a notify socket
/// meant for stackctl itself.
fn inherited(key: &str) -> bool {
    !key.starts_with("STACKCTL_") && key != "NOTIFY_SOCKET"
}

/// The supervisor's state.
pub struct Supervisor {
    stack: RwLock<Arc<Stack>>,
    ctx: Arc<UnitCtx>,
    registry: Registry,
    shutdown: watch::Sender<bool>,
    /// Things the next `start` should tell the operator (what a killed
    /// predecessor left and this supervisor stopped).
    notices: Mutex<Vec<(String, String)>>,
    /// Reloads run one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Leaving for an upgrade.
    upgrading: std::sync::atomic::AtomicBool,
    pid: i32,
    // Autoscaling (`autoscale.rs`): its tasks hold `me`, never an `Arc`.
    me: Weak<Supervisor>,
    autoscale: autoscale::Autoscalers,
}

/// Who answers `ping`.
#[derive(Debug, Clone)]
pub struct Pong {
    pub stackctl: String,
    pub pid: i32,
    pub anchor: i32,
}

impl Supervisor {
    /// A supervisor for `stack` whose processes the anchor behind
    /// `anchor` spawns (nothing is spawned yet).
    pub fn new(stack: Stack, anchor: Arc<Link>) -> Arc<Supervisor> {
        let state = StateDir::new(&stack.state_dir);
        let state_for_timeline = state.clone();
        let pid = std::process::id() as i32;
        let base_env = std::env::vars().filter(|(k, _)| inherited(k)).collect();
        let ctx = Arc::new(UnitCtx {
            stack_name: stack.name.clone(),
            stack_id: state.stack_id(),
            state,
            supervisor_pid: pid,
            base_env,
            logs: stack.logs.clone(),
            anchor,
            closing: std::sync::atomic::AtomicBool::new(false),
            timeline: timeline::Recorder::load(&state_for_timeline),
            changed: watch::channel(0).0,
        });
        let (shutdown, _) = watch::channel(false);
        Arc::new_cyclic(|me| Supervisor {
            me: me.clone(),
            autoscale: autoscale::Autoscalers::default(),
            registry: Registry::new(&stack),
            stack: RwLock::new(Arc::new(stack)),
            ctx,
            shutdown,
            reloading: tokio::sync::Mutex::new(()),
            upgrading: std::sync::atomic::AtomicBool::new(false),
            notices: Mutex::new(Vec::new()),
            pid,
        })
    }

    /// Changes whenever what `status` shows may have changed (a unit's
    /// status, the set of units): the merged stream of every unit's `watch`
    /// channel, for `status --watch` (and the keeper, later).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.ctx.changed.subscribe()
    }

    /// The start timeline.
    pub fn timeline(&self) -> crate::timeline::Timeline {
        self.ctx.timeline.now()
    }

    /// The anchor connection.
    pub fn anchor(&self) -> &Arc<Link> {
        &self.ctx.anchor
    }

    /// Who answers `ping`.
    pub fn pong(&self) -> Pong {
        Pong {
            stackctl: crate::control::protocol::STACKCTL.to_string(),
            pid: self.pid,
            anchor: self.ctx.anchor.anchor_pid(),
        }
    }

    /// Leaves for the binary at `exe`, touching no process: once this
    /// supervisor is gone, the anchor re-executes itself from `exe` (same
    /// pid: every process stays its child) and launches `exe` as the next
    /// supervisor, which adopts everything. The new binary is tried first
    /// (`exe --version` must succeed), so a broken one is refused here.
    ///
    /// # Errors
    /// The binary does not run (1); the stack is being stopped (1).
    pub async fn upgrade(&self, exe: std::path::PathBuf) -> Result<(), Error> {
        self.refuse_if_stopping()?;
        let check = crate::config::CommandSpec::Argv(vec![
            exe.display().to_string(),
            "--version".to_string(),
        ]);
        let ran = crate::spawn::run_oneshot(
            &check,
            std::path::Path::new("/"),
            &self.ctx.base_env,
            std::time::Duration::from_secs(10),
        )
        .await;
        match ran {
            Ok(o) if o.outcome == crate::spawn::OneshotOutcome::Exited(0) => {
                tracing::info!("upgrading to {} ({})", exe.display(), o.output.trim());
            }
            Ok(o) => {
                return Err(Error::failed(format!(
                    "{} --version did not succeed ({:?}); nothing was changed",
                    exe.display(),
                    o.outcome
                )))
            }
            Err(e) => {
                return Err(Error::failed(format!(
                    "cannot run {}: {e}; nothing was changed",
                    exe.display()
                )))
            }
        }
        self.ctx.anchor.upgrade(exe);
        self.ctx.anchor.flushed().await;
        self.upgrading
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        Ok(())
    }

    /// Whether this supervisor is leaving for an upgrade (it then exits
    /// without stopping anything).
    pub fn upgrading(&self) -> bool {
        self.upgrading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes up what the anchor has from a previous supervisor: its
    /// processes (same pids, states, restart counts, crash-loop windows),
    /// pool sizes and notify sockets. Returns what is left to do once the
    /// control socket listens ([`Supervisor::reconcile`]).
    pub fn adopt(&self, inv: Inventory) -> Adoption {
        let stack = self.stack();
        let mut kept = inv.kept;
        for (key, value) in &kept {
            if let (Some(pool), Ok(n)) = (key.strip_prefix("pool/"), value.parse::<u32>()) {
                if stack.process(pool).is_some_and(|p| p.is_pool()) {
                    self.set_pool_size(pool, n);
                }
            }
        }
        if let Some(snap) = kept
            .get(record::AUTOSCALE_KEY)
            .and_then(|t| serde_json::from_str::<autoscale::Snapshot>(t).ok())
        {
            self.autoscale_restore(snap);
        }
        let mut records: BTreeMap<String, record::UnitRecord> = BTreeMap::new();
        for (key, value) in &kept {
            if let (Some(inst), Some(rec)) =
                (key.strip_prefix("unit/"), record::UnitRecord::decode(value))
            {
                records.insert(inst.to_string(), rec);
            }
        }
        kept.clear();
        let mut held = inv.held;
        let (mut children, mut strangers) = newest_by_instance(inv.children);
        let mut plan = Adoption::default();
        for spec in &stack.processes {
            let mut insts = self.registry.instances(spec);
            for name in children.keys().chain(records.keys()) {
                let (base, index) = plan::split_instance(name);
                if base == spec.name
                    && index.is_some()
                    && spec.is_pool()
                    && !insts.iter().any(|i| &i.name == name)
                {
                    insts.push(plan::Instance {
                        name: name.clone(),
                        process: spec.name.clone(),
                        index,
                    });
                }
            }
            for inst in insts {
                let resume = Resume {
                    child: children.remove(&inst.name),
                    record: records.remove(&inst.name),
                    notify: held.remove(&record::notify_key(&inst.name)),
                };
                if resume.child.is_none() && resume.record.is_none() {
                    continue;
                }
                if resume.child.is_some() {
                    plan.adopted += 1;
                }
                if let Some(r) = &resume.record {
                    if r.wanted && r.state == State::Pending && resume.child.is_none() {
                        plan.to_start.push(inst.name.clone());
                    }
                }
                self.registry.adopt(&self.ctx, spec, &inst, resume);
            }
        }
        strangers.extend(children.into_values());
        plan.strangers = strangers;
        for name in records.keys() {
            self.ctx.anchor.del(&record::unit_key(name));
        }
        for key in held.keys() {
            self.ctx.anchor.release(key);
        }
        plan
    }

    /// What adoption left to do, once the control socket listens: stop
    /// the processes the stack file no longer names (and older copies),
    /// finish an interrupted shrink, and start what an interrupted `start`
    /// had not reached yet.
    pub async fn reconcile(&self, plan: Adoption, tx: &ProgressTx) {
        for a in plan.strangers {
            let pid = a.info.pid;
            tracing::warn!(process = %a.info.instance, "stopping pid {pid}: the stack file no longer has it (or it is an older copy)");
            let target = crate::spawn::Target {
                group: Some(pid),
                strays: None,
                spare: &[],
            };
            let how = crate::spawn::How {
                signal: nix::sys::signal::Signal::SIGTERM,
                grace: self.stack().stop_timeout,
            };
            let mut exit = a.exit;
            let _ = crate::spawn::terminate(target, how, async {
                let _ = (&mut exit).await;
            })
            .await;
            self.ctx.anchor.ack(pid);
        }
        let stack = self.stack();
        let mut running_pools = Vec::new();
        for spec in stack.processes.iter().filter(|p| p.is_pool()) {
            let size = self.registry.instances(spec).len() as u32;
            if let Err(e) = self.shrink_to(&stack, &spec.name, size, tx).await {
                tracing::error!(process = %spec.name, "could not finish its shrink: {e}");
            }
            if !self
                .registry
                .matching(|h| h.inst.process == spec.name && h.now().state.has_process())
                .is_empty()
            {
                running_pools.push(spec.name.clone());
            }
        }
        // Autoscaling goes on where it was, for the pools that run.
        self.autoscale_start(&stack, &running_pools);
        if plan.to_start.is_empty() {
            return;
        }
        tracing::info!(
            "resuming an interrupted start of {}",
            plan.to_start.join(", ")
        );
        if let Err(e) = self
            .start(&plan.to_start, &BTreeMap::new(), false, tx)
            .await
        {
            tracing::error!("the interrupted start failed again: {e}");
        }
    }

    /// Sets pool `name`'s size, and keeps it with the anchor.
    fn set_pool_size(&self, name: &str, n: u32) {
        self.registry.resize(name, n);
        self.ctx.touch();
        self.ctx.anchor.put(&record::pool_key(name), n.to_string());
    }

    /// The stack as last loaded.
    pub fn stack(&self) -> Arc<Stack> {
        self.stack.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_stack(&self, stack: Stack) {
        *self.stack.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(stack);
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

    fn select(&self, stack: &Stack, names: &[String]) -> Result<Selection, Error> {
        plan::select(stack, names).map_err(|unknown| unknown_names(stack, &unknown))
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
        self.start_timed(names, scale, rerun, tx).await.map(|_| ())
    }

    /// [`Supervisor::start`], recorded in the start timeline; what it
    /// says of the start at the end (its total and critical chain), when
    /// it started something and everything came up.
    ///
    /// # Errors
    /// As [`Supervisor::start`].
    pub async fn start_timed(
        &self,
        names: &[String],
        scale: &BTreeMap<String, u32>,
        rerun: bool,
        tx: &ProgressTx,
    ) -> Result<Option<crate::timeline::StartSummary>, Error> {
        self.tell_notices(tx);
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let mut wanted: Vec<String> = sel.processes.clone();
        wanted.extend(sel.members.keys().cloned());
        let closure = plan::closure(&stack, &wanted);
        refuse_missing_env(&stack, &closure)?;
        for (name, n) in scale {
            let Some(spec) = stack.process(name) else {
                return Err(Error::usage(format!(
                    "--scale {name}={n}: no process named `{name}`"
                )));
            };
            pool::check_pool_size(spec, *n)?;
        }
        // `--scale` sets the pool's size: members above it are stopped
        // (gracefully, as `scale` does), not left running outside the pool.
        for (name, n) in scale {
            if let Some(spec) = stack.process(name) {
                self.autoscale_hold(spec, *n, tx);
            }
            self.set_pool_size(name, *n);
            self.shrink_to(&stack, name, *n, tx).await?;
        }
        let op = if rerun { "restart" } else { "start" };
        let up = self
            .bring_up(&stack, &closure, &sel, rerun, order::Purpose::Start(op), tx)
            .await;
        self.autoscale_after_start(&stack, &closure, up.is_ok());
        up
    }

    fn tell_notices(&self, tx: &ProgressTx) {
        let notices: Vec<(String, String)> =
            std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, msg) in notices {
            progress(tx, &name, Step::Info, msg);
        }
    }

    /// Stops `names` (default: everything) in reverse dependency order.
    ///
    /// # Errors
    /// Unknown names (2); a process that survived SIGKILL (1).
    pub async fn stop(&self, names: &[String], tx: &ProgressTx) -> Result<(), Error> {
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        self.autoscale_stop(&sel.processes);
        let handles = self.registry.matching(|h| sel.contains(&h.inst));
        self.bring_down(&stack, handles, tx).await
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
            self.autoscale_stop(&sel.processes);
            self.bring_down(&stack, self.registry.all(), tx).await?;
            return self.start(&[], &BTreeMap::new(), true, tx).await;
        }
        let mut rest = Vec::new();
        for p in &sel.processes {
            match stack.process(p) {
                Some(spec) if spec.is_pool() => self.roll(spec, tx).await?,
                _ => rest.push(p.clone()),
            }
        }
        for (p, members) in &sel.members {
            rest.extend(members.iter().map(|m| format!("{p}.{m}")));
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.start(&rest, &BTreeMap::new(), true, tx).await
    }

    /// Restarts a pool member by member, each ready before the next.
    async fn roll(&self, spec: &crate::config::ProcessSpec, tx: &ProgressTx) -> Result<(), Error> {
        for inst in self.registry.instances(spec) {
            let h = self.registry.unit(&self.ctx, spec, &inst);
            progress(tx, &inst.name, Step::Starting, "restarting");
            let t = std::time::Instant::now();
            match live::follow(&h, h.restart(), tx).await {
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
                    return Err(order::start_failure(
                        &[(inst.name.clone(), h.log_path.clone(), f.reason)],
                        &[],
                    ));
                }
            }
        }
        Ok(())
    }

    /// The status document for `names` (default: all).
    ///
    /// # Errors
    /// Unknown names (2).
    pub fn status(&self, names: &[String]) -> Result<StatusDoc, Error> {
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let mut processes = Vec::new();
        for spec in &stack.processes {
            let shown = self.registry.shown(spec);
            if shown.is_empty() && spec.is_pool() && sel.processes.contains(&spec.name) {
                // Scaled to 0: still a row, saying so.
                processes
                    .push(Observed::empty_pool(spec.max_replicas).pool_row(&spec.name, spec.kind));
                continue;
            }
            for (inst, unit) in shown {
                if !sel.contains(&inst) {
                    continue;
                }
                let observed = unit
                    .as_ref()
                    .map_or_else(Observed::nothing, UnitHandle::observed);
                processes.push(observed.status(&inst, spec.kind));
            }
        }
        Ok(StatusDoc {
            stack: stack.name.clone(),
            supervisor: SupervisorInfo {
                pid: Some(self.pid),
                running: true,
                anchor: Some(self.ctx.anchor.anchor_pid()),
            },
            processes,
            autoscale: self.autoscale_status(&stack, &sel),
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
        let changes = reload::Changes::between(&old, &new);
        if changes.is_empty() {
            // Nothing to start or stop, but settings outside the
            // fingerprint (`max_replicas`, `autoscale`) may have changed:
            // keep the new file.
            self.set_stack(new);
            if !self.autoscale_reloaded(&self.stack(), &changes.retuned, tx) {
                progress(tx, "stack", Step::Info, "no change");
                tracing::info!("reload: no change");
            }
            return Ok(());
        }
        // Stop what was removed or changed, remembering what was active.
        let doomed = self.registry.matching(|h| changes.drops(&h.inst.process));
        let was_active: Vec<String> = changes
            .changed
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
        let dropped: Vec<String> = changes
            .removed
            .iter()
            .chain(&changes.changed)
            .cloned()
            .collect();
        self.autoscale_stop(&dropped);
        let down = self.bring_down(&old, doomed, tx).await;
        for name in &dropped {
            self.registry
                .reset(name, self.autoscale_size_after_reload(&new, name));
        }
        self.ctx.touch();
        for name in &changes.added {
            if let Some(n) = new.process(name).and_then(|p| p.replicas) {
                self.set_pool_size(name, n);
            }
        }
        self.set_stack(new);
        self.autoscale_reloaded(&self.stack(), &changes.retuned, tx);
        for r in &changes.removed {
            progress(tx, r, Step::Info, "removed from the stack file");
        }
        down?;
        for (name, n) in &changes.resized {
            self.scale(name, &n.unwrap_or(1).to_string(), tx).await?;
        }
        tracing::info!(
            "reload: added {:?}, removed {:?}, changed {:?}, resized {:?}",
            changes.added,
            changes.removed,
            changes.changed,
            changes.resized.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        let mut to_start = changes.added.clone();
        to_start.extend(was_active);
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
        self.autoscale_stop_all();
        let mut r = self.stop(&[], tx).await;
        // A start that was already under way when the stop began may have
        // brought a unit back up; stop again until none is active, so that
        // nothing outlives the supervisor unsupervised.
        for _ in 0..5 {
            let active = self.registry.matching(|h| !h.now().state.is_at_rest());
            if active.is_empty() {
                break;
            }
            let again = self.bring_down(&self.stack(), active, tx).await;
            r = r.and(again);
        }
        // The anchor ends once its last process is gone, and launches no
        // new supervisor.
        self.ctx.anchor.bye(false, None);
        self.ctx.anchor.flushed().await;
        let _ = self.shutdown.send(true);
        r
    }

    /// Whether a stop of the whole stack has begun (the supervisor exits
    /// when it is done).
    pub fn closing(&self) -> bool {
        self.ctx.closing.load(std::sync::atomic::Ordering::SeqCst)
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
        for h in self.registry.all() {
            if let Some(pid) = h.now().pid {
                let _ = crate::spawn::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// What [`Supervisor::adopt`] found and left to do.
#[derive(Debug, Default)]
pub struct Adoption {
    /// Processes taken up.
    pub adopted: usize,
    /// Processes to stop: not in the stack file, or an older copy.
    strangers: Vec<crate::anchor::client::Adopted>,
    /// Instances an interrupted `start` had not started yet.
    to_start: Vec<String>,
}

/// The newest process of each instance, and the others (older copies: a
/// pre_start left by a killed supervisor, a leader not yet acknowledged).
fn newest_by_instance(
    children: Vec<crate::anchor::client::Adopted>,
) -> (
    BTreeMap<String, crate::anchor::client::Adopted>,
    Vec<crate::anchor::client::Adopted>,
) {
    let mut newest: BTreeMap<String, crate::anchor::client::Adopted> = BTreeMap::new();
    let mut older = Vec::new();
    for c in children {
        match newest.remove(&c.info.instance) {
            Some(prev) if prev.info.start_ticks > c.info.start_ticks => {
                older.push(c);
                newest.insert(prev.info.instance.clone(), prev);
            }
            Some(prev) => {
                older.push(prev);
                newest.insert(c.info.instance.clone(), c);
            }
            None => {
                newest.insert(c.info.instance.clone(), c);
            }
        }
    }
    (newest, older)
}

/// The error for names the stack does not have, with the closest name or
/// the list of names.
fn unknown_names(stack: &Stack, unknown: &[plan::UnknownName]) -> Error {
    let list: Vec<String> = unknown.iter().map(|u| format!("`{}`", u.name)).collect();
    let hint = unknown
        .iter()
        .find_map(|u| {
            u.suggestion
                .as_ref()
                .map(|s| format!("did you mean `{s}`?"))
        })
        .unwrap_or_else(|| {
            let names: Vec<&str> = stack.processes.iter().map(|p| p.name.as_str()).collect();
            format!("the stack has: {}", names.join(", "))
        });
    Error::Usage {
        message: format!(
            "no process named {} in stack {}",
            list.join(", "),
            stack.name
        ),
        hint: Some(hint),
    }
}

/// A start of `closure` is refused while a variable it requires is unset:
/// the supervisor checks the environment it was started with.
fn refuse_missing_env(stack: &Stack, closure: &[String]) -> Result<(), Error> {
    let os = |k: &str| std::env::var(k).ok();
    let show = |f: &std::path::Path| f.display().to_string();
    match crate::config::env::missing_env_problem(stack, closure, &os, &show) {
        None => Ok(()),
        Some((message, hint)) => Err(Error::Usage {
            message,
            hint: Some(format!("{hint}; the running supervisor keeps the environment it was started with: fix the env_file and `stackctl reload`, or `stackctl stop` and start again; nothing was started")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stackctls_own_variables_never_reach_a_process() {
        assert!(!inherited("STACKCTL_FILE"));
        assert!(!inherited("STACKCTL_TEST_MARKER"));
        assert!(!inherited("NOTIFY_SOCKET"));
        assert!(inherited("PATH"));
        assert!(inherited("SCTL_TEST_MARKER"));
    }

    fn stack(toml: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        std::fs::write(&p, toml).unwrap();
        crate::config::load(&p).unwrap()
    }

    #[test]
    fn unknown_names_suggest_the_closest_or_list_the_stack() {
        let s = stack("[service.api]\ncommand = \"true\"\n[service.web]\ncommand = \"true\"\n");
        let sel = plan::select(&s, &["apj".into()]).unwrap_err();
        let e = unknown_names(&s, &sel);
        assert_eq!(
            e.to_string(),
            format!("no process named `apj` in stack {}", s.name)
        );
        let Error::Usage { hint, .. } = e else {
            panic!()
        };
        assert_eq!(hint.as_deref(), Some("did you mean `api`?"));
        let sel = plan::select(&s, &["zzzzzz".into()]).unwrap_err();
        let Error::Usage { hint, .. } = unknown_names(&s, &sel) else {
            panic!()
        };
        assert_eq!(hint.as_deref(), Some("the stack has: api, web"));
    }

    #[tokio::test]
    async fn status_shows_every_instance_before_anything_started() {
        let s = stack("[task.migrate]\ncommand = \"true\"\n[service.worker]\ncommand = \"true\"\nreplicas = 2\n");
        let sup = Supervisor::new(s, crate::anchor::client::Link::gone());
        let doc = sup.status(&[]).unwrap();
        let names: Vec<&str> = doc.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["migrate", "worker.1", "worker.2"]);
        assert!(doc
            .processes
            .iter()
            .all(|p| p.state == State::Stopped && p.pid.is_none()));
        let one = sup.status(&["worker.2".into()]).unwrap();
        assert_eq!(one.processes.len(), 1);
        assert!(sup.status(&["nope".into()]).is_err());
    }
}
