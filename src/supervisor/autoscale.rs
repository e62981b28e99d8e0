//! Autoscaled pools: one task per pool that reads its queue depth and
//! resizes it.
//!
//! Theory of operation. A pool with `[service.NAME.autoscale]` gets an
//! autoscaler task when the pool is started (`start`, a manual `scale`, a
//! `reload` that adds the section to a running pool) and loses it when the
//! pool is stopped (`stop NAME`, `stop`, shutdown, a reload that removes the
//! section or the pool). Each tick, every `interval`:
//!
//! 1. read the depth ([`DepthSource`]): an `exec` command through
//!    `spawn::run_oneshot_with` (its own session, the whole group killed at
//!    the `timeout` or when the task is cancelled; stdout parsed, stderr
//!    kept for the reason), an `http` GET through `probe::fetch_text`, or a
//!    file; the answer is parsed by [`decide::parse_depth`];
//! 2. look at the pool in the registry: its size, the members above it
//!    still draining, a member that crash-loops;
//! 3. [`decide::decide`] (pure) on the memory, the pool and the policy;
//!    record it (`status` shows it at once); a decision that changes the
//!    size, or whose kind differs from the last one, or a new kind of
//!    source failure, is one line in `stackctl.log` with the depth;
//! 4. apply it through the scale path (`pool.rs`): a shrink sets the size
//!    at once and drains the highest members in a task of its own, so that
//!    the next ticks see them draining (no capacity, never stopped twice);
//!    growth is awaited (the new members are ready, or failed, before the
//!    next tick), and first waits for the shrinks still under way: members
//!    are numbered, so the member it grows into may be one that drains,
//!    and the new one must neither run next to its predecessor nor be
//!    swept by that shrink.
//!
//! The policy is read from the stack each tick, so `reload` changes it
//! without touching a member. The memory ([`Memory`]: history, errors, the
//! last decision, a manual override) outlives the task (a pool stopped and
//! started again keeps it) and is serializable as a whole
//! ([`Supervisor::autoscale_snapshot`] / [`Supervisor::autoscale_restore`]).
//!
//! A manual `stackctl scale` of an autoscaled pool is a temporary
//! override: the size it sets holds for `manual_hold`, then autoscaling
//! resumes; `stackctl scale NAME auto` resumes at once.
//!
//! Owns: the autoscaler tasks, their memories, reading depth sources, what
//! `status` shows of them. Must not touch: the decision itself
//! ([`decide`]), how members start and stop (the scale path and the units).

pub mod decide;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::decide::{Memory, Millis, Pool, Record, Why};
use super::{progress, ProgressTx, Supervisor};
use crate::config::{AutoscaleSpec, CommandSpec, DepthSource, ProbeKind, ProcessSpec, Stack};
use crate::error::Error;
use crate::plan::Selection;
use crate::spawn::{run_oneshot_with, OneshotOptions, OneshotOutcome};
use crate::status::{self, AutoscaleStatus, State, Step};

/// The decision state of every autoscaled pool, for a supervisor that
/// takes over from this one: serialize it, and hand it to
/// [`Supervisor::autoscale_restore`] before the pools start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Bumped on an incompatible change of [`Memory`].
    pub v: u32,
    pub pools: BTreeMap<String, Memory>,
}

/// [`Snapshot::v`] of this build.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The autoscalers of one supervisor, by pool name.
#[derive(Default)]
pub(super) struct Autoscalers {
    inner: Mutex<BTreeMap<String, Scaler>>,
}

/// One pool's memory, and its task while it runs.
struct Scaler {
    memory: Arc<Mutex<Memory>>,
    task: Option<JoinHandle<()>>,
}

impl Scaler {
    fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Autoscalers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Scaler>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The memory of `pool` (created empty).
    fn memory(&self, pool: &str) -> Arc<Mutex<Memory>> {
        self.lock()
            .entry(pool.to_string())
            .or_insert_with(|| Scaler {
                memory: Arc::default(),
                task: None,
            })
            .memory
            .clone()
    }

    fn running(&self, pool: &str) -> bool {
        self.lock().get(pool).is_some_and(Scaler::running)
    }

    /// Ends the task of `pool` (its memory stays).
    fn stop(&self, pool: &str) {
        if let Some(t) = self.lock().get_mut(pool).and_then(|s| s.task.take()) {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<Memory>) -> MutexGuard<'_, Memory> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now, on the wall clock.
fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, decide::millis)
}

/// How long ago `at` was, in seconds.
fn age_s(now: Millis, at: Millis) -> f64 {
    now.saturating_sub(at) as f64 / 1000.0
}

impl Supervisor {
    /// The decision state of every autoscaled pool, for a successor.
    pub fn autoscale_snapshot(&self) -> Snapshot {
        let pools = self
            .autoscale
            .lock()
            .iter()
            .map(|(name, s)| (name.clone(), lock(&s.memory).clone()))
            .collect();
        Snapshot {
            v: SNAPSHOT_VERSION,
            pools,
        }
    }

    /// Keeps the decision state with the anchor for the next supervisor.
    pub(super) fn autoscale_persist(&self) {
        match serde_json::to_string(&self.autoscale_snapshot()) {
            Ok(text) => self.ctx.anchor.put(super::record::AUTOSCALE_KEY, text),
            Err(e) => tracing::error!("autoscale: cannot keep its state: {e}"),
        }
    }

    /// Takes over a predecessor's decision state (a snapshot of another
    /// version is ignored, and says so in `stackctl.log`). Call it before
    /// the pools start; a running autoscaler carries on from it.
    pub fn autoscale_restore(&self, snap: Snapshot) {
        if snap.v != SNAPSHOT_VERSION {
            tracing::warn!(
                "autoscale: ignoring a snapshot of version {} (this build reads {SNAPSHOT_VERSION})",
                snap.v
            );
            return;
        }
        for (name, memory) in snap.pools {
            *lock(&self.autoscale.memory(&name)) = memory;
        }
    }

    /// Starts the autoscaler of each pool of `names` that is autoscaled
    /// and has none running.
    pub(super) fn autoscale_start(&self, stack: &Stack, names: &[String]) {
        if self.ctx.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for name in names {
            let Some(spec) = stack.process(name).filter(|p| p.autoscale.is_some()) else {
                continue;
            };
            let memory = self.autoscale.memory(&spec.name);
            let mut all = self.autoscale.lock();
            let Some(scaler) = all.get_mut(&spec.name) else {
                continue;
            };
            if scaler.running() {
                continue;
            }
            tracing::info!(process = %spec.name, "autoscale: started");
            scaler.task = Some(tokio::spawn(run(
                self.me.clone(),
                spec.name.clone(),
                memory,
            )));
        }
    }

    /// After a bring-up of `closure`: the autoscaled pools in it are
    /// started when it went well, or when a member is up anyway.
    pub(super) fn autoscale_after_start(&self, stack: &Stack, closure: &[String], ok: bool) {
        let started: Vec<String> = closure
            .iter()
            .filter(|name| {
                ok || self
                    .registry
                    .matching(|h| &h.inst.process == *name)
                    .iter()
                    .any(|h| {
                        matches!(
                            h.now().state,
                            State::Starting | State::Running | State::Backoff
                        )
                    })
            })
            .cloned()
            .collect();
        self.autoscale_start(stack, &started);
    }

    /// Ends the autoscalers of the pools among `names` (stopped whole).
    pub(super) fn autoscale_stop(&self, names: &[String]) {
        for name in names {
            if self.autoscale.running(name) {
                tracing::info!(process = %name, "autoscale: stopped with the pool");
            }
            self.autoscale.stop(name);
        }
    }

    /// Pauses pool `name`'s autoscaler, its memory kept (a reload rolls
    /// the pool: nothing resizes it meanwhile); whether it was running.
    pub(super) fn autoscale_pause(&self, name: &str) -> bool {
        let running = self.autoscale.running(name);
        self.autoscale.stop(name);
        running
    }

    /// Ends every autoscaler (the supervisor is stopping).
    pub(super) fn autoscale_stop_all(&self) {
        let names: Vec<String> = self.autoscale.lock().keys().cloned().collect();
        for n in names {
            self.autoscale.stop(&n);
        }
    }

    /// The size a pool redefined by a reload keeps: an autoscaled pool
    /// keeps its current size (within the new bounds); any other pool
    /// starts again at its `replicas`.
    pub(super) fn autoscale_size_after_reload(&self, new: &Stack, name: &str) -> Option<u32> {
        let spec = new.process(name)?;
        match (&spec.autoscale, spec.replicas) {
            (Some(a), Some(_)) => {
                let now = self.registry.instances(spec).len() as u32;
                Some(now.clamp(a.min, a.max))
            }
            (_, replicas) => replicas,
        }
    }

    /// After a reload switched to `new`: says which policies changed, and
    /// starts or ends autoscalers to match (a section added to a running
    /// pool, a section or a pool removed). Whether it said anything.
    pub(super) fn autoscale_reloaded(
        &self,
        new: &Stack,
        retuned: &[String],
        tx: &ProgressTx,
    ) -> bool {
        for name in retuned {
            let what = match new.process(name).map(|p| p.autoscale.is_some()) {
                Some(true) => "autoscale policy updated; members keep running",
                _ => "autoscale removed; the pool keeps its size",
            };
            progress(tx, name, Step::Info, what);
            tracing::info!(process = %name, "reload: {what}");
        }
        // A pool no longer autoscaled (or gone) loses its task and memory.
        self.autoscale.lock().retain(|name, s| {
            let keep = new.process(name).is_some_and(|p| p.autoscale.is_some());
            if !keep {
                if let Some(t) = s.task.take() {
                    t.abort();
                }
            }
            keep
        });
        let running: Vec<String> = new
            .processes
            .iter()
            .filter(|p| p.autoscale.is_some())
            .filter(|p| {
                self.registry
                    .matching(|h| h.inst.process == p.name)
                    .iter()
                    .any(|h| !h.now().state.is_at_rest())
            })
            .map(|p| p.name.clone())
            .collect();
        self.autoscale_start(new, &running);
        !retuned.is_empty()
    }

    /// A manual size for an autoscaled pool (`scale`, `start --scale`):
    /// held for the policy's `manual_hold`, then autoscaling resumes. Says
    /// so on `tx`. Does nothing for a pool that is not autoscaled.
    pub(super) fn autoscale_hold(&self, spec: &ProcessSpec, size: u32, tx: &ProgressTx) {
        let Some(policy) = &spec.autoscale else {
            return;
        };
        let now = now_millis();
        let until =
            lock(&self.autoscale.memory(&spec.name)).hold_manual(size, now, policy.manual_hold);
        let msg = format!(
            "autoscale holds {size} for {} (until {}); `stackctl scale {} auto` resumes it now",
            humantime::format_duration(policy.manual_hold),
            decide::clock(until),
            spec.name
        );
        tracing::info!(process = %spec.name, "{msg}");
        progress(tx, &spec.name, Step::Info, msg);
    }

    /// `stackctl scale NAME auto`: ends a manual override now.
    ///
    /// # Errors
    /// The pool is not autoscaled (2).
    pub(super) fn autoscale_resume(
        &self,
        spec: &ProcessSpec,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        if spec.autoscale.is_none() {
            return Err(Error::Usage {
                message: format!("`{}` is not autoscaled", spec.name),
                hint: Some(format!(
                    "give it a [service.{}.autoscale] section, or scale it to a size: `stackctl scale {} N`",
                    spec.name, spec.name
                )),
            });
        }
        let had = lock(&self.autoscale.memory(&spec.name)).resume(now_millis());
        let msg = if had {
            "autoscale resumed: the next reading decides the size"
        } else {
            "autoscale was not held: nothing to resume"
        };
        tracing::info!(process = %spec.name, "{msg}");
        progress(tx, &spec.name, Step::Info, msg);
        let stack = self.stack();
        self.autoscale_start(&stack, std::slice::from_ref(&spec.name));
        Ok(())
    }

    /// What `status` shows of the autoscaled pools `sel` touches.
    pub(super) fn autoscale_status(
        &self,
        stack: &Stack,
        sel: &Selection,
    ) -> BTreeMap<String, AutoscaleStatus> {
        let now = now_millis();
        let mut out = BTreeMap::new();
        for spec in &stack.processes {
            let Some(policy) = &spec.autoscale else {
                continue;
            };
            if !sel.processes.contains(&spec.name) && !sel.members.contains_key(&spec.name) {
                continue;
            }
            let active = self.autoscale.running(&spec.name);
            let m = lock(&self.autoscale.memory(&spec.name)).clone();
            let pool = self.pool_now(spec);
            out.insert(spec.name.clone(), shown(&m, &pool, policy, active, now));
        }
        out
    }

    /// The pool as a decision sees it.
    fn pool_now(&self, spec: &ProcessSpec) -> Pool {
        let current = self.registry.instances(spec).len() as u32;
        let mut units = self.registry.matching(|h| h.inst.process == spec.name);
        units.sort_by_key(|h| h.inst.index);
        let mut pool = Pool {
            current,
            ..Pool::default()
        };
        for h in units {
            let s = h.now();
            if h.inst.index.unwrap_or(0) > current {
                if !s.state.is_at_rest() {
                    pool.draining += 1;
                }
                continue;
            }
            // Crashed and not yet up long enough to count as stable (what
            // resets the back-off): caught between two crashes too.
            let unsteady = s.restarts > 0
                && s.since
                    .is_some_and(|t| t.elapsed() < super::fsm::BACKOFF_RESET_AFTER);
            let looping = match s.state {
                State::Backoff => Some("is in backoff".to_string()),
                State::Failed => Some("has failed".to_string()),
                st if unsteady && !st.is_at_rest() => Some(format!(
                    "restarted {} after a crash",
                    if s.restarts == 1 {
                        "once".to_string()
                    } else {
                        format!("{} times", s.restarts)
                    }
                )),
                _ => None,
            };
            if let (None, Some(what)) = (&pool.crash_looping, &looping) {
                pool.crash_looping = Some(format!("{} {what}", h.inst.name));
            }
        }
        pool
    }

    /// One tick: read, decide, record, apply. `None` ends the autoscaler
    /// (the supervisor is stopping, the pool or its section is gone).
    /// `drains`: the shrinks still under way.
    async fn autoscale_tick(
        self: &Arc<Self>,
        name: &str,
        memory: &Mutex<Memory>,
        drains: &mut Vec<JoinHandle<()>>,
    ) -> Option<Duration> {
        if self.ctx.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let stack = self.stack();
        let spec = stack.process(name)?;
        let policy = spec.autoscale.as_ref()?;
        let reading = self.read_depth(spec, policy).await;
        let now = now_millis();
        let pool = self.pool_now(spec);
        let decision = {
            let mut m = lock(memory);
            let failing = (m.errors.in_a_row > 0).then(|| m.errors.last.clone());
            let new_failure = match &reading {
                Err(e) => failing.flatten().as_deref() != Some(e.as_str()),
                Ok(_) => false,
            };
            m.observe(reading, now, policy.scale_in_window);
            let d = decide::decide(&m, &pool, policy, now);
            let news = worth_a_line(m.last.as_ref(), &d, pool.current, new_failure);
            let depth = m.latest().map(|s| s.depth);
            if news {
                log_decision(name, pool.current, &d, depth);
            }
            // Recorded before it is applied: a growth that waits is shown.
            m.last = Some(Record {
                at: now,
                from: pool.current,
                decision: d.clone(),
                depth,
                error: None,
            });
            d
        };
        let applied = self
            .autoscale_apply(&stack, spec, pool.current, decision.target, drains)
            .await;
        if let Err(e) = applied {
            tracing::warn!(process = %name, "autoscale: resizing {} → {} failed: {e}", pool.current, decision.target);
            if let Some(r) = lock(memory).last.as_mut().filter(|r| r.at == now) {
                r.error = Some(e);
            }
        }
        Some(policy.interval)
    }

    /// Resizes the pool from `from` to `to`. Growth goes through the scale
    /// path and is awaited, after the shrinks still under way (a member
    /// grown back into must not be started while its predecessor of the
    /// same name drains, nor swept by that shrink). A shrink sets the size
    /// now and drains in a task of its own, added to `drains`.
    async fn autoscale_apply(
        self: &Arc<Self>,
        stack: &Arc<Stack>,
        spec: &ProcessSpec,
        from: u32,
        to: u32,
        drains: &mut Vec<JoinHandle<()>>,
    ) -> Result<(), String> {
        drains.retain(|h| !h.is_finished());
        // Progress of the resize is for nobody: the units log what they do.
        let (tx, _) = mpsc::unbounded_channel();
        if to > from {
            if !drains.is_empty() {
                tracing::info!(process = %spec.name, "autoscale: growing to {to} once the draining members have stopped");
            }
            for h in drains.drain(..) {
                let _ = h.await;
            }
            return self
                .grow(stack, &spec.name, from, to, &tx)
                .await
                .map_err(|e| e.to_string());
        }
        if to < from {
            self.set_pool_size(&spec.name, to);
            let sup = self.clone();
            let stack = stack.clone();
            let name = spec.name.clone();
            drains.push(tokio::spawn(async move {
                if let Err(e) = sup.shrink_to(&stack, &name, to, &tx).await {
                    tracing::error!(process = %name, "autoscale: shrinking to {to}: {e}");
                }
            }));
        }
        Ok(())
    }

    /// Reads the depth of `spec`'s source: the number, or why there is none
    /// (values of variables never in it).
    async fn read_depth(&self, spec: &ProcessSpec, p: &AutoscaleSpec) -> Result<u64, String> {
        let env = self.depth_env(spec);
        let d = &p.depth;
        let answer = match &d.source {
            DepthSource::Exec(cmd) => self.run_depth_command(spec, cmd, d.timeout, &env).await,
            DepthSource::Http(url) => {
                match crate::probe::expand(&ProbeKind::Http(url.clone()), &env) {
                    Ok(ProbeKind::Http(u)) => crate::probe::fetch_text(&u, d.timeout)
                        .await
                        .map_err(|f| f.reason),
                    Ok(_) => Err("cannot expand the URL".to_string()),
                    Err(f) => Err(f.reason),
                }
            }
            DepthSource::File(path) => {
                match tokio::time::timeout(d.timeout, tokio::fs::read_to_string(path)).await {
                    Ok(Ok(t)) => Ok(t),
                    Ok(Err(e)) => Err(format!("cannot read it: {e}")),
                    Err(_) => Err(format!(
                        "reading it timed out after {}",
                        humantime::format_duration(d.timeout)
                    )),
                }
            }
        };
        let depth = answer.and_then(|text| decide::parse_depth(&text, d.field.as_deref()));
        depth.map_err(|why| {
            let templates: Vec<&str> = match &d.source {
                DepthSource::Exec(CommandSpec::Shell(s)) => vec![s.as_str()],
                DepthSource::Exec(CommandSpec::Argv(v)) => v.iter().map(String::as_str).collect(),
                DepthSource::Http(u) => vec![u.as_str()],
                DepthSource::File(_) => Vec::new(),
            };
            crate::config::env::redact_values(&format!("{}: {why}", d.source), &templates, &env, "")
        })
    }

    /// Runs an `exec` depth source: its stdout, or how it failed (with the
    /// last line of its stderr).
    async fn run_depth_command(
        &self,
        spec: &ProcessSpec,
        cmd: &CommandSpec,
        timeout: Duration,
        env: &[(String, String)],
    ) -> Result<String, String> {
        let cmd = match crate::probe::expand(&ProbeKind::Exec(cmd.clone()), env) {
            Ok(ProbeKind::Exec(c)) => c,
            Ok(_) => return Err("cannot expand the command".into()),
            Err(f) => return Err(f.reason),
        };
        let opts = OneshotOptions {
            split_stdout: true,
            keep: 16 * 1024,
            ..OneshotOptions::deadline(timeout)
        };
        let done = run_oneshot_with(&cmd, &spec.cwd, env, &opts, |_| {})
            .await
            .map_err(|e| format!("cannot run it: {e}"))?;
        let last = done
            .output
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(|l| format!(": {}", l.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        match done.outcome {
            OneshotOutcome::Exited(0) => Ok(done.stdout),
            OneshotOutcome::TimedOut => Err(format!(
                "timed out after {}; its process group was killed",
                humantime::format_duration(timeout)
            )),
            other => Err(format!("{other}{last}")),
        }
    }

    /// The environment of a depth command: the pool's, marked as the
    /// stack's (so a stray it leaves is found), named after the pool.
    fn depth_env(&self, spec: &ProcessSpec) -> Vec<(String, String)> {
        let mut m: BTreeMap<String, String> = self.ctx.envs.of(spec).merged();
        m.insert("STACKCTL_STACK".into(), self.ctx.stack_name.clone());
        m.insert(
            crate::spawn::strays::STACK_ID_VAR.into(),
            self.ctx.stack_id.clone(),
        );
        m.insert(crate::spawn::strays::PROCESS_VAR.into(), spec.name.clone());
        m.into_iter().collect()
    }
}

/// The life of one autoscaler: a tick every interval until it ends. It
/// holds only a weak reference, so it never keeps a supervisor alive.
async fn run(me: Weak<Supervisor>, name: String, memory: Arc<Mutex<Memory>>) {
    let mut drains = Vec::new();
    loop {
        let Some(sup) = me.upgrade() else { return };
        let Some(interval) = sup.autoscale_tick(&name, &memory, &mut drains).await else {
            tracing::info!(process = %name, "autoscale: ended");
            return;
        };
        // The decision state outlives this supervisor, with the anchor.
        sup.autoscale_persist();
        drop(sup);
        tokio::time::sleep(interval).await;
    }
}

/// Whether a decision is news for `stackctl.log`: it changes the size, its
/// kind differs from the last one, or the source fails in a new way (the
/// same failure again is counted in `status`, not logged again).
fn worth_a_line(
    before: Option<&Record>,
    d: &decide::Decision,
    current: u32,
    new_failure: bool,
) -> bool {
    let Some(b) = before else { return true };
    d.target != current || b.decision.why != d.why || (new_failure && d.why != Why::Paused)
}

/// One line per decision: the size, the depth, why.
fn log_decision(name: &str, current: u32, d: &decide::Decision, depth: Option<u64>) {
    let depth = depth.map_or_else(|| "-".to_string(), |d| d.to_string());
    if d.target == current {
        tracing::info!(process = %name, "autoscale: holding at {current} (depth {depth}): {}", d.reason);
    } else {
        tracing::info!(process = %name, "autoscale: {current} → {} (depth {depth}): {}", d.target, d.reason);
    }
}

/// The status record of one autoscaled pool.
fn shown(m: &Memory, pool: &Pool, p: &AutoscaleSpec, active: bool, now: Millis) -> AutoscaleStatus {
    let latest = m.latest();
    let decision = m.last.as_ref().map(|r| status::AutoscaleDecision {
        at: decide::clock(r.at),
        age_s: age_s(now, r.at),
        from: r.from,
        target: r.decision.target,
        kind: serde_json::to_value(r.decision.why)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        reason: r.decision.reason.clone(),
        error: r.error.clone(),
    });
    AutoscaleStatus {
        active,
        size: pool.current,
        desired: latest.map(|s| decide::wanted(s.depth, p)),
        min: p.min,
        max: p.max,
        per_instance: p.per_instance,
        draining: pool.draining,
        depth: latest.map(|s| s.depth),
        depth_read_at: latest.map(|s| decide::clock(s.at)),
        depth_age_s: latest.map(|s| age_s(now, s.at)),
        decision,
        source_errors: status::SourceErrors {
            in_a_row: m.errors.in_a_row,
            total: m.errors.total,
            last: m.errors.last.clone(),
            last_at: m.errors.last_at.map(decide::clock),
        },
        paused: m.paused(now).map(|o| status::AutoscalePause {
            size: o.size,
            until: decide::clock(o.until),
            remaining_s: age_s(o.until, now),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn stack() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        std::fs::write(
            &p,
            "[service.worker]\ncommand = \"true\"\nreplicas = 1\nmax_replicas = 4\n\
             [service.worker.autoscale]\ndepth = { file = \"d\" }\nper_instance = 5\n",
        )
        .unwrap();
        crate::config::load(&p).unwrap()
    }

    #[tokio::test]
    async fn a_snapshot_carries_the_memory_to_another_supervisor() {
        let s = stack();
        let mut m = Memory::default();
        let now = now_millis();
        m.observe(Ok(12), now, Duration::from_secs(300));
        m.observe(
            Err("file d: cannot read it".into()),
            now + 1,
            Duration::from_secs(300),
        );
        m.hold_manual(3, now, Duration::from_secs(600));
        let a = Supervisor::new(s.clone(), crate::anchor::client::Link::gone());
        a.autoscale_restore(Snapshot {
            v: SNAPSHOT_VERSION,
            pools: [("worker".to_string(), m.clone())].into_iter().collect(),
        });
        let snap = a.autoscale_snapshot();
        assert_eq!(snap.pools["worker"], m);

        // Through its serialized form, as a successor would read it.
        let text = serde_json::to_string(&snap).unwrap();
        let b = Supervisor::new(s, crate::anchor::client::Link::gone());
        b.autoscale_restore(serde_json::from_str(&text).unwrap());
        assert_eq!(b.autoscale_snapshot(), snap);
        let doc = b.status(&[]).unwrap();
        let w = &doc.autoscale["worker"];
        assert_eq!((w.depth, w.desired, w.size), (Some(12), Some(3), 1));
        assert_eq!(w.source_errors.in_a_row, 1);
        assert_eq!(w.paused.as_ref().map(|p| p.size), Some(3));
        assert!(!w.active, "nothing started yet");

        // Another version is not guessed at.
        let c = Supervisor::new(stack(), crate::anchor::client::Link::gone());
        c.autoscale_restore(Snapshot {
            v: SNAPSHOT_VERSION + 1,
            ..snap
        });
        assert!(c.autoscale_snapshot().pools.is_empty());
    }
}
