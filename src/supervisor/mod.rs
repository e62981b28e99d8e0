//! The supervisor: the only owner of the stack's processes.
//!
//! Theory of operation. One supervisor runs per stack (an exclusive flock on
//! `state_dir/supervisor.lock`, taken by `crate::daemon`). The stack's
//! processes are the children of the stack's anchor (`crate::anchor`),
//! which the supervisor asks to spawn them and which outlives it. Each
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
//! - restart, scale ([`pool`]), reload ([`reload`] decides the plan —
//!   per process what changed and what is done —, `reload` here sends it
//!   and applies it: a pool rolls member by member) and shutdown are made
//!   of those two.
//! - an autoscaled pool has an [`autoscale`] task while it is started,
//!   which resizes it through the scale path.
//! - a scheduled task is armed by start and disarmed by stop; its
//!   [`schedule`] task starts it at its times through the start path.
//! - stop says what depends on what it stopped and keeps running; with
//!   dependents, it stops those too, first.
//! - each process keeps the environment it was last given ([`env`]);
//!   restart reads its env files again, `--update-env` brings a new base.
//! - a unit that fails tells the failure [`hooks`].
//!
//! The supervisor does not know the control socket: `control::server`
//! calls these methods, and progress leaves through a [`ProgressTx`].
//!
//! What a supervisor knows lives in the anchor too ([`record`]: each
//! unit's state and what follows a stop under way, pool sizes, the
//! operations under way, the autoscalers' and schedules' memory, the
//! environment, the stack file's text), so the next supervisor
//! ([`Supervisor::adopt`], then [`Supervisor::reconcile`]) takes every
//! process up where it was and finishes what was under way: nothing is
//! restarted that did not die, nothing runs twice.
//!
//! Pid files are written by the units and are the truth for `status` when
//! no supervisor runs ([`offline`]). A supervisor with no anchor to take
//! over from (both were killed) stops the live processes recorded there
//! before it starts anything, so there is never a second copy of a process:
//! their output pipes died with both.
//!
//! Owns: the units, the pool sizes, the autoscalers, the schedules, the
//! environments, the hooks, and what each operation does. Must not touch:
//! the wire (`control`), the terminal (`output`), the lock file (it only
//! reads it, before a scheduled run).

pub mod autoscale;
pub mod env;
pub mod fsm;
pub mod hooks;
mod live;
pub mod offline;
mod order;
mod pool;
pub mod record;
mod registry;
mod reload;
pub mod schedule;
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
use crate::status::{
    Observed, PlanAction, PlanEntry, Progress, ReloadPlan, State, StatusDoc, Step, SupervisorInfo,
};

pub use order::FAILURE_LOG_LINES;

/// Where progress of a long operation goes.
pub type ProgressTx = mpsc::UnboundedSender<Progress>;

fn progress(tx: &ProgressTx, process: &str, step: Step, message: impl Into<String>) {
    let _ = tx.send(Progress::new(process, step, message));
}

/// The variables of stackctl's own environment that never reach a process:
/// its own namespace (each process gets fresh values), and a notify socket
/// and socket-activation fds meant for stackctl itself.
fn inherited(key: &str) -> bool {
    !key.starts_with("STACKCTL_")
        && !matches!(
            key,
            "NOTIFY_SOCKET" | "LISTEN_FDS" | "LISTEN_PID" | "LISTEN_FDNAMES"
        )
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
    /// Pool resizes (`scale`, a reload's) run one at a time.
    resizing: tokio::sync::Mutex<()>,
    /// Leaving for an upgrade.
    upgrading: std::sync::atomic::AtomicBool,
    /// Starts begun (each keeps a record with the anchor while under way).
    /// Operations begun (numbers their records).
    ops: std::sync::atomic::AtomicU64,
    /// False while a restart of the stack or a reload a killed supervisor
    /// had under way is finished ([`Supervisor::reconcile`]): a `start`,
    /// `restart` or `reload` asked meanwhile waits for it
    /// ([`Supervisor::settled`]).
    settled: watch::Sender<bool>,
    pid: i32,
    // Autoscaling (`autoscale.rs`): its tasks hold `me`, never an `Arc`.
    me: Weak<Supervisor>,
    autoscale: autoscale::Autoscalers,
    // Scheduled tasks (`schedule.rs`).
    schedules: schedule::Schedules,
}

/// What a start does with the scheduled tasks it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheduled {
    /// Arm their schedules; run them at their times.
    Arm,
    /// Arm them, and run them now (`restart backup`, a slot that is due).
    RunNow,
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
        let hooks = hooks::Hooks::default();
        hooks.configure(&stack);
        let ctx = Arc::new(UnitCtx {
            stack_name: stack.name.clone(),
            stack_id: state.stack_id(),
            cgroup_record: state.cgroup_record(),
            state,
            supervisor_pid: pid,
            envs: env::Envs::new(base_env, &stack),
            hooks,
            logs: stack.logs.clone(),
            anchor,
            closing: std::sync::atomic::AtomicBool::new(false),
            listeners: unit::listen::Listeners::default(),
            timeline: timeline::Recorder::load(&state_for_timeline),
            changed: watch::channel(0).0,
        });
        let (shutdown, _) = watch::channel(false);
        keep_stack_file(&ctx.anchor, &stack);
        Arc::new_cyclic(|me| Supervisor {
            me: me.clone(),
            autoscale: autoscale::Autoscalers::default(),
            schedules: schedule::Schedules::default(),
            registry: Registry::new(&stack),
            stack: RwLock::new(Arc::new(stack)),
            ctx,
            shutdown,
            reloading: tokio::sync::Mutex::new(()),
            resizing: tokio::sync::Mutex::new(()),
            upgrading: std::sync::atomic::AtomicBool::new(false),
            ops: std::sync::atomic::AtomicU64::new(0),
            settled: watch::channel(true).0,
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

    /// Writes what the timeline has not written yet (this supervisor ends).
    pub fn flush_timeline(&self) {
        self.ctx.timeline.flush();
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
        let base: Vec<(String, String)> =
            self.ctx.envs.base().as_ref().clone().into_iter().collect();
        let ran = crate::spawn::run_oneshot(
            &check,
            std::path::Path::new("/"),
            &base,
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
        // Operations a killed supervisor had under way: finished by this
        // one (their records are put again as they are).
        let mut interrupted = Vec::new();
        for (key, value) in &kept {
            if key.starts_with(record::OP_PREFIX) {
                interrupted.extend(record::OpRecord::decode(value));
                self.ctx.anchor.del(key);
            }
        }
        if let Some(g) = kept
            .get(record::ENV_GENERATION_KEY)
            .and_then(|t| serde_json::from_str::<env::GenerationRecord>(t).ok())
        {
            self.ctx.envs.resume(&g);
            self.env_persist(false);
        }
        self.schedule_restore(&stack, &kept);
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
        self.ctx.listeners.adopt(&mut held, &stack);
        let (mut children, mut strangers) = current_by_instance(inv.children, &records);
        let mut plan = Adoption::default();
        // Units wanted up that had not begun (a `start` that had not
        // reached them).
        let mut pending = Vec::new();
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
                        pending.push(inst.name.clone());
                    }
                }
                self.registry.adopt(&self.ctx, spec, &inst, resume);
            }
        }
        strangers.extend(children.into_values());
        plan.strangers = strangers;
        if !pending.is_empty() {
            interrupted.insert(0, record::OpRecord::Start { names: pending });
        }
        plan.ops = record::unfinished(interrupted);
        // A start asked while an interrupted restart of the stack is done
        // again would start what it is about to stop; a reload asked while
        // an interrupted one is finished would find nothing to do and
        // answer before it is done.
        if plan.ops.iter().any(|op| {
            matches!(
                op,
                record::OpRecord::Restart | record::OpRecord::Reload { .. }
            )
        }) {
            self.settled.send_replace(false);
        }
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
    /// finish an interrupted stop of the stack (and exit), or an
    /// interrupted shrink, and then the `start`s and `stop`s under way.
    pub async fn reconcile(&self, plan: Adoption, tx: &ProgressTx) {
        self.finish_adoption(plan, tx).await;
        self.settled.send_replace(true);
    }

    /// Returns once no restart of the stack or reload a killed supervisor
    /// had under way is left to finish: a `start` or `reload` asked
    /// meanwhile (the one a CLI sends after it lost that supervisor, too)
    /// then sees what it left, not a half-done one.
    pub async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    async fn finish_adoption(&self, plan: Adoption, tx: &ProgressTx) {
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
        if plan.ops.contains(&record::OpRecord::Shutdown) {
            tracing::info!("finishing an interrupted stop of the stack");
            if let Err(e) = self.shutdown(tx).await {
                tracing::error!("the interrupted stop of the stack: {e}");
            }
            return;
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
        // Autoscaling goes on where it was, for the pools that run, and so
        // do the schedules that were armed.
        self.autoscale_start(&stack, &running_pools);
        self.schedule_resume(&stack);
        for op in plan.ops {
            self.resume_op(op, tx).await;
        }
    }

    /// Finishes an operation a killed supervisor had under way.
    async fn resume_op(&self, op: record::OpRecord, tx: &ProgressTx) {
        let what = |names: &[String]| {
            if names.is_empty() {
                "the stack".to_string()
            } else {
                names.join(", ")
            }
        };
        let r = match &op {
            record::OpRecord::Start { names } => {
                tracing::info!("resuming an interrupted start of {}", what(names));
                self.start(names, &BTreeMap::new(), false, tx).await
            }
            record::OpRecord::Stop {
                names,
                with_dependents,
            } => {
                tracing::info!("resuming an interrupted stop of {}", what(names));
                self.stop_with(names, *with_dependents, tx).await
            }
            record::OpRecord::Shutdown => self.shutdown(tx).await,
            record::OpRecord::Restart => {
                tracing::info!("doing an interrupted restart of the stack again");
                self.restart(&[], tx).await
            }
            record::OpRecord::Reload {
                began_ms,
                start,
                roll,
            } => {
                tracing::info!("finishing an interrupted reload");
                self.finish_reload(*began_ms, start, roll, tx).await
            }
        };
        if let Err(e) = r {
            tracing::error!("the interrupted {op:?} failed again: {e}");
        }
    }

    /// Does what an interrupted reload left (see `OpRecord::Reload`): starts
    /// what it was to start, and restarts each instance it was to give its
    /// new definition whose process predates the reload (this supervisor
    /// runs on the new file: a restart gives it).
    async fn finish_reload(
        &self,
        began_ms: u64,
        start: &[String],
        roll: &[String],
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let stack = self.stack();
        let start: Vec<String> = start
            .iter()
            .filter(|n| stack.process(n).is_some())
            .cloned()
            .collect();
        if !start.is_empty() {
            self.start(&start, &BTreeMap::new(), false, tx).await?;
        }
        let ago = crate::timeline::now_ms().saturating_sub(began_ms);
        let began = std::time::Instant::now()
            .checked_sub(std::time::Duration::from_millis(ago))
            .unwrap_or_else(std::time::Instant::now);
        for name in roll {
            let Some(h) = self
                .registry
                .all()
                .into_iter()
                .find(|h| &h.inst.name == name)
            else {
                continue;
            };
            // A stop under way, and the spawn that may follow it (the
            // unit's own restart), end first.
            let mut status = h.status.clone();
            let _ = status
                .wait_for(|s| match s.state {
                    State::Stopping => false,
                    State::Starting => s.pid.is_some(),
                    _ => true,
                })
                .await;
            let now = h.now();
            let old = matches!(now.state, State::Running | State::Starting | State::Backoff)
                && now.since.is_none_or(|t| t < began);
            if !old {
                continue;
            }
            progress(tx, name, Step::Starting, "restarting (new definition)");
            if let Err(f) = live::follow(&h, h.restart(), tx).await {
                return Err(order::start_failure(
                    &[(name.clone(), h.log_path.clone(), f.reason)],
                    &[],
                ));
            }
        }
        Ok(())
    }

    /// Keeps `op` with the anchor while it is under way; [`Supervisor::done_op`]
    /// with the key it returns when it is done.
    fn begin_op(&self, op: &record::OpRecord) -> String {
        let key = record::op_key(self.ops.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        self.ctx.anchor.put(&key, op.encode());
        key
    }

    fn done_op(&self, key: &str) {
        self.ctx.anchor.del(key);
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
        self.ctx.hooks.configure(&stack);
        keep_stack_file(&self.ctx.anchor, &stack);
        *self.stack.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(stack);
    }

    /// Keeps the environment's generation (and, when it changed, the base
    /// itself) with the anchor, for the next supervisor. Never shown.
    fn env_persist(&self, base_changed: bool) {
        if let Ok(g) = serde_json::to_string(&self.ctx.envs.record()) {
            self.ctx.anchor.put(record::ENV_GENERATION_KEY, g);
        }
        if base_changed {
            if let Ok(b) = serde_json::to_string(self.ctx.envs.base().as_ref()) {
                self.ctx.anchor.put(record::BASE_ENV_KEY, b);
            }
        }
    }

    /// Gives `names` their environment afresh (env files re-read; with
    /// `caller`, the caller's environment as the new base) and says which
    /// generation that is, naming changed variables, never their values.
    fn refresh_env(
        &self,
        stack: &Stack,
        names: &[String],
        caller: Option<env::Vars>,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let with_base = caller.is_some();
        let caller = caller.map(|c| c.into_iter().filter(|(k, _)| inherited(k)).collect());
        let r = self.ctx.envs.refresh(stack, names, caller)?;
        if with_base || r.new_generation {
            let line = r.describe(with_base);
            tracing::info!("{line} (for {})", names.join(", "));
            progress(tx, "stack", Step::Info, line);
        }
        self.env_persist(with_base);
        Ok(())
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
        self.start_with(names, scale, rerun, Scheduled::Arm, tx)
            .await
            .map(|_| ())
    }

    /// [`Supervisor::start`], with `caller` (`start --update-env`) as the
    /// environment of what it starts (the named processes and their
    /// dependencies, from their next spawn: running ones keep theirs);
    /// what it says of the start at the end (its total and critical
    /// chain), when it started something and everything came up.
    ///
    /// # Errors
    /// As [`Supervisor::start`]; an environment that cannot be computed (2).
    pub async fn start_env(
        &self,
        names: &[String],
        scale: &BTreeMap<String, u32>,
        caller: Option<env::Vars>,
        tx: &ProgressTx,
    ) -> Result<Option<crate::timeline::StartSummary>, Error> {
        if caller.is_some() {
            self.refuse_if_stopping()?;
            let stack = self.stack();
            let sel = self.select(&stack, names)?;
            let mut wanted: Vec<String> = sel.processes.clone();
            wanted.extend(sel.members.keys().cloned());
            let closure = plan::closure(&stack, &wanted);
            self.refresh_env(&stack, &closure, caller, tx)?;
        }
        self.start_with(names, scale, false, Scheduled::Arm, tx)
            .await
    }

    /// The one start: recorded in the start timeline, and kept with the
    /// anchor while under way.
    async fn start_with(
        &self,
        names: &[String],
        scale: &BTreeMap<String, u32>,
        rerun: bool,
        scheduled: Scheduled,
        tx: &ProgressTx,
    ) -> Result<Option<crate::timeline::StartSummary>, Error> {
        self.tell_notices(tx);
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let mut wanted: Vec<String> = sel.processes.clone();
        wanted.extend(sel.members.keys().cloned());
        let mut closure = plan::closure(&stack, &wanted);
        if let Some((message, hint)) =
            env::missing_required(&stack, &closure, &|spec| self.ctx.envs.of(spec))
        {
            return Err(Error::Usage {
                message,
                hint: Some(format!("{hint}; the running supervisor keeps the environment it was given: fix the env_file and `stackctl restart` what needs it, or pass the variables with `stackctl start --update-env`; nothing was started")),
            });
        }
        // A scheduled task is armed, and runs at its times (or now, when asked).
        let timed: Vec<String> = closure
            .iter()
            .filter(|n| stack.process(n).is_some_and(|p| p.schedule.is_some()))
            .cloned()
            .collect();
        self.schedule_arm(&stack, &timed, tx);
        if scheduled == Scheduled::Arm {
            closure.retain(|n| !timed.contains(n));
        }
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
        let key = self.begin_op(&record::OpRecord::Start {
            names: names.to_vec(),
        });
        let op = if rerun { "restart" } else { "start" };
        let up = self
            .bring_up(&stack, &closure, &sel, rerun, order::Purpose::Start(op), tx)
            .await;
        self.done_op(&key);
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
        self.stop_with(names, false, tx).await
    }

    /// Stops `names`; `with_dependents`: everything that depends on them
    /// too, first (systemd's `Requires=`). Without it, what depends on them
    /// and keeps running (or stays scheduled) is said.
    ///
    /// # Errors
    /// As [`Supervisor::stop`].
    pub async fn stop_with(
        &self,
        names: &[String],
        with_dependents: bool,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let stack = self.stack();
        let mut sel = self.select(&stack, names)?;
        if with_dependents && !names.is_empty() {
            let mut roots = sel.processes.clone();
            roots.extend(sel.members.keys().cloned());
            for d in plan::dependents_closure(&stack, &roots) {
                if !sel.processes.contains(&d) {
                    sel.processes.push(d);
                }
            }
        }
        self.autoscale_stop(&sel.processes);
        self.schedule_disarm(&sel.processes);
        let key = self.begin_op(&record::OpRecord::Stop {
            names: names.to_vec(),
            with_dependents,
        });
        let handles = self.registry.matching(|h| sel.contains(&h.inst));
        let down = self.bring_down(&stack, handles, tx).await;
        self.done_op(&key);
        if !names.is_empty() {
            self.tell_left_behind(&stack, &sel.processes, tx);
        }
        // A service stopped whole closes its sockets (members alone do not).
        self.close_sockets(&stack, &sel.processes).await;
        down
    }

    /// Closes the listening sockets of `names`, and returns once the
    /// anchor has closed its copies too: the port is free when the stop
    /// that asked for it answers.
    async fn close_sockets(&self, stack: &Stack, names: &[String]) {
        let mut closed = false;
        for name in names {
            if stack.process(name).is_some_and(|p| !p.listen.is_empty()) {
                self.ctx.listeners.release(name, &self.ctx.anchor);
                closed = true;
            }
        }
        if closed {
            self.ctx.anchor.synced().await;
        }
    }

    /// Says which processes outside a stop still run (or stay scheduled)
    /// while something they depend on was stopped.
    fn tell_left_behind(&self, stack: &Stack, stopped: &[String], tx: &ProgressTx) {
        for name in plan::dependents_closure(stack, stopped) {
            let on = plan::depends_on_among(stack, &name, stopped);
            let hint = format!(
                "`stackctl stop --with-dependents {}` stops it too",
                on.join(" ")
            );
            let what = if self.schedules.armed(&name) {
                format!(
                    "stays scheduled: it depends on {}, which was stopped, and its next run starts {} again ({hint})",
                    on.join(", "),
                    if on.len() == 1 { "it" } else { "them" }
                )
            } else if self
                .registry
                .matching(|h| h.inst.process == name)
                .iter()
                .any(|h| {
                    matches!(
                        h.now().state,
                        State::Starting | State::Running | State::Backoff
                    )
                })
            {
                format!(
                    "still running: it depends on {}, which was stopped ({hint})",
                    on.join(", ")
                )
            } else {
                continue;
            };
            tracing::info!(process = %name, "{what}");
            progress(tx, &name, Step::Info, what);
        }
    }

    /// Stops `names` and starts them again (default: the whole stack, tasks
    /// re-run). A pool restarts one member at a time, each ready before the
    /// next, so it never drops to zero.
    ///
    /// # Errors
    /// As [`Supervisor::start`].
    pub async fn restart(&self, names: &[String], tx: &ProgressTx) -> Result<(), Error> {
        self.restart_env(names, None, tx).await
    }

    /// [`Supervisor::restart`]: what it restarts gets its env files read
    /// again and, with `caller` (`restart --update-env`), the caller's
    /// environment as its base. A scheduled task named runs now.
    ///
    /// # Errors
    /// As [`Supervisor::start`]; an environment that cannot be computed
    /// (2, nothing is restarted).
    pub async fn restart_env(
        &self,
        names: &[String],
        caller: Option<env::Vars>,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let sel = self.select(&stack, names)?;
        let mut fresh = sel.processes.clone();
        fresh.extend(sel.members.keys().cloned());
        self.refresh_env(&stack, &fresh, caller, tx)?;
        if names.is_empty() {
            self.autoscale_stop(&sel.processes);
            // Kept while it stops: a supervisor killed meanwhile leaves
            // the next one to do the whole restart (tasks run again).
            let key = self.begin_op(&record::OpRecord::Restart);
            // Serving processes with `listen` are not stopped first: the
            // start below replaces each (its successor on the same
            // sockets, then the old one stopped).
            let down = self
                .registry
                .matching(|h| !(overlaps(&h.spec) && h.now().state == State::Running));
            let stopped = self.bring_down(&stack, down, tx).await;
            if stopped.is_ok() {
                // Its tasks run again, even if the start below is
                // interrupted before it reaches them.
                for h in self.registry.matching(|h| {
                    h.spec.kind == crate::config::Kind::Task && h.spec.schedule.is_none()
                }) {
                    h.rearm().await;
                }
            }
            self.done_op(&key);
            stopped?;
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
        self.start_with(&rest, &BTreeMap::new(), true, Scheduled::RunNow, tx)
            .await
            .map(|_| ())
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
        let memory = crate::spawn::identity::GroupRss::scan();
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
                let mut st = observed.status(&inst, spec.kind, &memory);
                st.env_generation = unit.as_ref().and_then(|u| u.now().env_generation);
                st.schedule = self.schedule_status(spec);
                processes.push(st);
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
    /// was running; a pool member by member), resizes pools whose
    /// `replicas` changed. Untouched processes keep running. A broken file
    /// changes nothing.
    ///
    /// # Errors
    /// The file's diagnostics (2); a process that failed to start (1).
    pub async fn reload(&self, tx: &ProgressTx) -> Result<(), Error> {
        self.reload_with(false, tx).await.map(|_| ())
    }

    /// [`Supervisor::reload`], first saying what it does: the plan (per
    /// process, what changed and what is done about it) goes out as an
    /// `info` progress before anything is touched. `dry_run`: only that;
    /// nothing changes, not even the stack as loaded.
    ///
    /// # Errors
    /// As [`Supervisor::reload`] (a dry run: the file's diagnostics).
    pub async fn reload_with(&self, dry_run: bool, tx: &ProgressTx) -> Result<ReloadPlan, Error> {
        self.refuse_if_stopping()?;
        let _serial = self.reloading.lock().await;
        let old = self.stack();
        // The stack file's `${VAR}` read the environment processes get.
        let base = self.ctx.envs.base();
        let new = crate::config::load_with(&old.file, false, &|k| base.get(k).cloned())?;
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
        let mut plan = reload::plan(&changes, &old, &new, &|name| self.now_of(&old, name));
        plan.dry_run = dry_run;
        let _ = tx.send(Progress::plan(plan.clone()));
        if !dry_run {
            log_plan(&plan);
            // A reload resizes and redefines pools: no `scale` meanwhile
            // (one holding a unit the reload replaces would run it again).
            let _resizing = self.resizing.lock().await;
            self.apply_reload(&old, new, &changes, &plan, tx).await?;
        }
        Ok(plan)
    }

    /// What runs of process `name` now, for a reload's plan.
    fn now_of(&self, stack: &Stack, name: &str) -> reload::Now {
        let states: Vec<State> = self
            .registry
            .matching(|h| h.inst.process == name)
            .iter()
            .map(|h| h.now().state)
            .collect();
        reload::Now {
            active: states.iter().any(|s| {
                matches!(
                    s,
                    State::Starting | State::Running | State::Backoff | State::Completed
                )
            }),
            serving: !states.is_empty() && states.iter().all(|s| *s == State::Running),
            armed: self.schedules.armed(name),
            size: stack
                .process(name)
                .filter(|p| p.is_pool())
                .map(|p| self.registry.instances(p).len() as u32),
        }
    }

    /// Carries out a reload's `plan` (from `old` to `new`).
    async fn apply_reload(
        &self,
        old: &Stack,
        new: Stack,
        changes: &reload::Changes,
        plan: &ReloadPlan,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let doing = |actions: &[PlanAction]| -> Vec<String> {
            plan.processes
                .iter()
                .filter(|e| actions.contains(&e.action))
                .map(|e| e.process.clone())
                .collect()
        };
        // Redefined services with `listen` that serve, and pools, are
        // given their new definition in place (overlapping, or member by
        // member), after the rest is applied.
        let in_place = doing(&[PlanAction::Replace, PlanAction::Roll]);
        if changes.is_empty() {
            // Nothing to start or stop, but settings outside the
            // definition (`max_replicas`, `autoscale`) may have changed:
            // keep the new file.
            self.set_stack(new);
            self.autoscale_reloaded(&self.stack(), &changes.retuned, tx);
            return Ok(());
        }
        // Stop what was removed or changed; what was active starts again.
        let doomed = self
            .registry
            .matching(|h| changes.drops(&h.inst.process) && !in_place.contains(&h.inst.process));
        let was_active = doing(&[PlanAction::Restart, PlanAction::Rearm]);
        let dropped = changes.dropped(&in_place);
        self.autoscale_stop(&dropped);
        self.schedule_disarm(&dropped);
        let down = self.bring_down(old, doomed, tx).await;
        // What was removed or restarted the plain way closes its sockets
        // (a new definition binds its own at its start).
        self.close_sockets(old, &dropped).await;
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
        // From here on the new file is what a relaunched supervisor runs
        // on: what is left to do is kept with it.
        let mut to_start = changes.added.clone();
        to_start.extend(was_active);
        let stack = self.stack();
        let roll: Vec<String> = in_place
            .iter()
            .filter_map(|n| stack.process(n))
            .flat_map(|spec| self.registry.instances(spec))
            .map(|i| i.name)
            .collect();
        let key = self.begin_op(&record::OpRecord::Reload {
            began_ms: crate::timeline::now_ms(),
            start: to_start.clone(),
            roll,
        });
        let r = self
            .apply_reload_rest(old, changes, plan, &in_place, &to_start, down, tx)
            .await;
        self.done_op(&key);
        r
    }

    /// [`Supervisor::apply_reload`] once the new stack file is kept.
    #[allow(clippy::too_many_arguments)]
    async fn apply_reload_rest(
        &self,
        old: &Stack,
        changes: &reload::Changes,
        plan: &ReloadPlan,
        in_place: &[String],
        to_start: &[String],
        down: Result<(), Error>,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let dropped = changes.dropped(in_place);
        // What is new or redefined gets the environment its new definition says.
        let defined: Vec<String> = changes
            .added
            .iter()
            .chain(&changes.changed)
            .cloned()
            .collect();
        for name in dropped.iter().chain(&changes.added) {
            self.ctx.envs.forget(name);
        }
        if let Err(e) = self.refresh_env(&self.stack(), &defined, None, tx) {
            tracing::error!("reload: {e}");
        }
        self.autoscale_reloaded(&self.stack(), &changes.retuned, tx);
        down?;
        for (name, n) in &changes.resized {
            self.resize(name, &n.unwrap_or(1).to_string(), tx).await?;
        }
        if !to_start.is_empty() {
            self.start(to_start, &BTreeMap::new(), false, tx).await?;
        }
        let rolled: Vec<&PlanEntry> = plan
            .processes
            .iter()
            .filter(|e| in_place.contains(&e.process))
            .collect();
        self.replace_in_place(old, &rolled, tx).await
    }

    /// Gives each of `entries` (redefined services with `listen` that
    /// serve, and pools) its new definition, member by member, each ready
    /// before the next is touched (a service with `listen`: each
    /// successor ready before its predecessor stops), in dependency order;
    /// then closes the sockets the new definition no longer names. A pool
    /// whose size changes with it shrinks first and grows last. The first
    /// failure stops the roll: what was not replaced goes on running.
    ///
    /// # Errors
    /// The member whose new process failed (1).
    async fn replace_in_place(
        &self,
        old: &Stack,
        entries: &[&PlanEntry],
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let new = self.stack();
        for name in crate::config::start_order(&new).into_iter().flatten() {
            let Some(entry) = entries.iter().find(|e| e.process == name) else {
                continue;
            };
            let Some(spec) = new.process(&name).cloned().map(Arc::new) else {
                continue;
            };
            // Nothing resizes a pool while it rolls; resized here without
            // a manual hold: the size is the file's (or, autoscaled, its
            // bounds').
            let autoscaled = self.autoscale_pause(&name);
            let rolled = self.roll_in_place(&new, &spec, entry, tx).await;
            if autoscaled {
                self.autoscale_start(&new, std::slice::from_ref(&name));
            }
            rolled?;
            if old.process(&name).is_some_and(overlaps) || overlaps(&spec) {
                let keep: Vec<_> = spec.listen.iter().map(|l| l.addr.clone()).collect();
                self.ctx.listeners.retain(&name, &keep, &self.ctx.anchor);
                self.ctx.anchor.synced().await;
            }
        }
        Ok(())
    }

    /// Gives `spec` to every instance of its process, one at a time (see
    /// [`Supervisor::replace_in_place`]), a pool shrunk first and grown
    /// last to the size `entry` says.
    ///
    /// # Errors
    /// The member whose new process failed (1).
    async fn roll_in_place(
        &self,
        new: &Arc<Stack>,
        spec: &Arc<crate::config::ProcessSpec>,
        entry: &PlanEntry,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let name = &spec.name;
        let size = entry.size.map(|s| s.to);
        let current = || self.registry.instances(spec).len() as u32;
        if let Some(to) = size.filter(|to| *to < current()) {
            self.set_pool_size(name, to);
            self.shrink_to(new, name, to, tx).await?;
        }
        self.registry.respec(name, spec);
        for inst in self.registry.instances(spec) {
            // A member stopped meanwhile (a `scale`) is not brought back.
            if !self.registry.instances(spec).contains(&inst) {
                continue;
            }
            let h = self.registry.unit(&self.ctx, spec, &inst);
            progress(
                tx,
                &inst.name,
                Step::Starting,
                "restarting (new definition)",
            );
            let t = std::time::Instant::now();
            if let Err(f) = live::follow(&h, h.redefine(spec.clone()), tx).await {
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
            let took = t.elapsed().as_secs_f64();
            progress(tx, &inst.name, Step::Ready, format!("ready in {took:.1}s"));
        }
        if let Some(to) = size.filter(|to| *to > current()) {
            self.grow(new, name, current(), to, tx).await?;
        }
        Ok(())
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
        let key = self.begin_op(&record::OpRecord::Shutdown);
        self.autoscale_stop_all();
        self.schedule_disarm_all();
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
        self.done_op(&key);
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

/// Keeps the text of the stack file the supervisor runs on with the
/// anchor: a supervisor relaunched after this one was killed runs on it
/// too (an edit on disk waits for `reload`, a broken one blocks nothing).
fn keep_stack_file(anchor: &Link, stack: &Stack) {
    if !stack.source.is_empty() {
        anchor.put(record::STACK_FILE_KEY, stack.source.clone());
    }
}

/// A reload's plan in `stackctl.log`: a line per process (what changed,
/// by key and variable name; what is done), or that nothing changed.
fn log_plan(plan: &ReloadPlan) {
    if plan.is_empty() {
        tracing::info!("reload: no change");
    }
    for e in &plan.processes {
        let mut what = e.keys.clone();
        what.extend(e.env.iter().map(|v| format!("env {v}")));
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" ({} changed)", what.join(", "))
        };
        tracing::info!(process = %e.process, "reload: {}{what}", e.action.as_str());
    }
}

/// Whether a restart of `spec`'s serving processes overlaps (a service
/// with `listen`: see `unit::replace`).
fn overlaps(spec: &crate::config::ProcessSpec) -> bool {
    spec.kind == crate::config::Kind::Service && !spec.listen.is_empty()
}

/// What [`Supervisor::adopt`] found and left to do.
#[derive(Debug, Default)]
pub struct Adoption {
    /// Processes taken up.
    pub adopted: usize,
    /// Processes to stop: not in the stack file, or an older copy.
    strangers: Vec<crate::anchor::client::Adopted>,
    /// Operations under way when the previous supervisor was killed.
    ops: Vec<record::OpRecord>,
}

/// The current process of each instance, and the others (older copies:
/// a leader not yet acknowledged, the other side of an overlapping
/// restart). The current one is the pid its record names when that
/// process is there (during an overlapping restart: the old one until its
/// successor is ready, then the successor), else the instance's command
/// over a `pre_start` step (a step beside its command is a leftover),
/// else the newest.
fn current_by_instance(
    children: Vec<crate::anchor::client::Adopted>,
    records: &BTreeMap<String, record::UnitRecord>,
) -> (
    BTreeMap<String, crate::anchor::client::Adopted>,
    Vec<crate::anchor::client::Adopted>,
) {
    // The recorded one, else the instance's command over a pre_start
    // step, else the newest.
    let rank = |c: &crate::anchor::client::Adopted| {
        let recorded = records
            .get(&c.info.instance)
            .and_then(|r| r.pid)
            .is_some_and(|p| p == c.info.pid);
        (recorded, c.info.step.is_none(), c.info.start_ticks)
    };
    let mut current: BTreeMap<String, crate::anchor::client::Adopted> = BTreeMap::new();
    let mut older = Vec::new();
    for c in children {
        match current.remove(&c.info.instance) {
            Some(prev) if rank(&prev) > rank(&c) => {
                older.push(c);
                current.insert(prev.info.instance.clone(), prev);
            }
            Some(prev) => {
                older.push(prev);
                current.insert(c.info.instance.clone(), c);
            }
            None => {
                current.insert(c.info.instance.clone(), c);
            }
        }
    }
    (current, older)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stackctls_own_variables_never_reach_a_process() {
        assert!(!inherited("STACKCTL_FILE"));
        assert!(!inherited("STACKCTL_TEST_MARKER"));
        assert!(!inherited("NOTIFY_SOCKET"));
        assert!(!inherited("LISTEN_FDS") && !inherited("LISTEN_PID"));
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

    #[test]
    fn the_current_process_of_an_instance_is_the_recorded_one_else_the_command_else_the_newest() {
        let any = |instance: &str, pid: i32, start_ticks: u64, step: Option<u32>| {
            let (_, exit) = tokio::sync::oneshot::channel();
            let (_, matched) = tokio::sync::oneshot::channel();
            crate::anchor::client::Adopted {
                info: crate::anchor::proto::ChildInfo {
                    instance: instance.into(),
                    pid,
                    start_ticks,
                    matched: false,
                    exit: None,
                    log: crate::anchor::proto::LogTarget {
                        path: "/dev/null".into(),
                        max_size: 1,
                        keep: 1,
                        timestamps: false,
                    },
                    watch: None,
                    step,
                    mark: None,
                },
                exit,
                matched,
            }
        };
        let child =
            |instance: &str, pid: i32, start_ticks: u64| any(instance, pid, start_ticks, None);
        let record = |pid: i32| record::UnitRecord {
            state: State::Running,
            pid: Some(pid),
            ready: true,
            restarts: 0,
            exit: None,
            message: None,
            wanted: true,
            been_ready: true,
            backoff: fsm::BackoffRecord {
                recent_ms: vec![],
                next_delay_ms: 0,
            },
            notify_path: None,
            env_generation: None,
            after_stop: record::AfterStop::Down,
            attempts: 0,
        };
        let pids = |(cur, old): (
            BTreeMap<String, crate::anchor::client::Adopted>,
            Vec<crate::anchor::client::Adopted>,
        )| {
            (
                cur.values().map(|c| c.info.pid).collect::<Vec<_>>(),
                old.iter().map(|c| c.info.pid).collect::<Vec<_>>(),
            )
        };
        // Mid-overlap: the record names the old one, which stays.
        let records = BTreeMap::from([("api".to_string(), record(10))]);
        let got = current_by_instance(vec![child("api", 10, 1), child("api", 11, 2)], &records);
        assert_eq!(pids(got), (vec![10], vec![11]));
        let got = current_by_instance(vec![child("api", 11, 2), child("api", 10, 1)], &records);
        assert_eq!(pids(got), (vec![10], vec![11]));
        // No record naming one of them: the newest.
        let got = current_by_instance(
            vec![child("api", 11, 2), child("api", 10, 1)],
            &BTreeMap::new(),
        );
        assert_eq!(pids(got), (vec![11], vec![10]));
        // A pre_start step beside the command: the command, even older.
        let got = current_by_instance(
            vec![any("api", 12, 3, Some(0)), child("api", 10, 1)],
            &BTreeMap::new(),
        );
        assert_eq!(pids(got), (vec![10], vec![12]));
        // A pre_start step alone (the command not spawned yet): the step.
        let got = current_by_instance(vec![any("api", 12, 3, Some(1))], &BTreeMap::new());
        assert_eq!(pids(got), (vec![12], vec![]));
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
