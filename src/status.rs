//! What the supervisor reports: the states of a process instance, the
//! status document (`status --json`, the contract: these serde structs *are*
//! SPEC's records) and the progress events of a long operation.
//!
//! Owns: those types, and the one builder of a [`ProcessStatus`]
//! ([`Observed::status`]) used by the live supervisor and by the pid-file
//! path alike, so both say the same thing the same way (uptime, memory,
//! readiness). A leaf: it imports only `config`'s process kind and
//! `plan`'s instance names. Must not touch: deciding states (that is
//! `supervisor::fsm`), rendering (`output`), transport (`control`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Kind;
use crate::plan::Instance;

/// SPEC's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started yet (or waiting for its dependencies).
    Pending,
    /// Spawned; its readiness gate has not passed yet.
    Starting,
    /// Ready.
    Running,
    /// Waiting to restart.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped (by request, or exited 0 with no restart).
    Stopped,
    /// A task that exited 0.
    Completed,
    /// Failed to start, failed its gate, crash-looped, or a task exited non-zero.
    Failed,
}

impl State {
    /// Every state, for tables and tests.
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::Completed,
        State::Failed,
    ];

    /// The word used in the table and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }

    /// Whether a process exists in this state.
    pub fn has_process(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }

    /// Whether the instance is done for now: nothing runs and nothing will
    /// start it again without a request.
    pub fn is_at_rest(self) -> bool {
        matches!(self, State::Stopped | State::Completed | State::Failed)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusDoc {
    pub stack: String,
    pub supervisor: SupervisorInfo,
    pub processes: Vec<ProcessStatus>,
    /// Autoscaled pools, by pool name; absent when there are none (and
    /// without a supervisor).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub autoscale: BTreeMap<String, AutoscaleStatus>,
}

/// An autoscaled pool in `status --json`: its size and what its
/// autoscaler last read and decided.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoscaleStatus {
    /// Whether its autoscaler runs (it does while the pool is started).
    pub active: bool,
    /// Members now (`NAME.1` … `NAME.size`).
    pub size: u32,
    /// The size the last depth wants, within `min..=max`.
    pub desired: Option<u32>,
    pub min: u32,
    pub max: u32,
    pub per_instance: u32,
    /// Members above the size still being stopped (draining their job).
    pub draining: u32,
    /// The last depth read, when (RFC 3339) and how long ago.
    pub depth: Option<u64>,
    pub depth_read_at: Option<String>,
    pub depth_age_s: Option<f64>,
    /// The last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<AutoscaleDecision>,
    /// Failed readings of the depth source.
    pub source_errors: SourceErrors,
    /// A manual `stackctl scale` holding the size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<AutoscalePause>,
}

/// One decision of an autoscaler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoscaleDecision {
    /// When (RFC 3339), and how long ago.
    pub at: String,
    pub age_s: f64,
    /// The size before, and the size decided.
    pub from: u32,
    pub target: u32,
    /// `grow`, `shrink`, `steady`, `window`, `draining`, `crash_loop`,
    /// `source_failing`, `fallback`, `paused` or `no_reading`.
    pub kind: String,
    /// Why, naming the depth.
    pub reason: String,
    /// Why applying it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The failures of a depth source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceErrors {
    /// Since the last good reading.
    pub in_a_row: u32,
    /// Since the autoscaler began.
    pub total: u64,
    /// Why the last one failed, and when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
}

/// A manual size in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoscalePause {
    pub size: u32,
    /// When autoscaling resumes (RFC 3339), and in how long.
    pub until: String,
    pub remaining_s: f64,
}

/// The supervisor part of `status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SupervisorInfo {
    pub pid: Option<i32>,
    pub running: bool,
    /// The stack's anchor (the parent and log writer of its processes,
    /// which relaunches the supervisor), when one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<i32>,
}

/// One process instance in `status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessStatus {
    pub name: String,
    pub kind: Kind,
    pub pool: Option<String>,
    pub instance: Option<u32>,
    pub pid: Option<i32>,
    pub state: State,
    pub ready: bool,
    pub restarts: u32,
    pub uptime_s: Option<f64>,
    /// Resident memory of its whole process group (it and its children).
    pub rss_mb: Option<f64>,
    pub exit_code: Option<i32>,
    /// Why it is in this state (a failure's reason, a crash loop, a log
    /// write error) or the `STATUS=` it last sent through `NOTIFY_SOCKET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The environment generation its process was spawned with (see
    /// `supervisor::env`); absent without a supervisor or a spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_generation: Option<u64>,
    /// A scheduled task's schedule, its last run and its next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleStatus>,
}

/// A scheduled task in `status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleStatus {
    /// `schedule "0 3 * * *"` or `every 15m`.
    pub spec: String,
    /// The host's time zone the schedule is read in, e.g.
    /// `Europe/Paris (+02:00)`.
    pub time_zone: String,
    /// Whether it is armed (it is from `start` until `stop`).
    pub armed: bool,
    /// The next run (RFC 3339 in the host's time zone), and in how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_in_s: Option<f64>,
    /// The last run: when it began (RFC 3339, host time zone), how it
    /// ended (`running`, `completed in 1.2s`, `failed: exited with code
    /// 1`), and whether it succeeded (none while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<bool>,
    /// Slots not run (a run still going, the stack-owner lock held), and
    /// why the last one was not.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skip: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ProcessStatus {
    /// Running and ready (or a task that completed).
    pub fn is_up(&self) -> bool {
        (self.state == State::Running && self.ready) || self.state == State::Completed
    }
}

/// What is known of one instance, from the live supervisor or from its pid
/// file: the input of the one status builder.
#[derive(Debug, Clone)]
pub struct Observed {
    pub state: State,
    /// The process, when one exists in `state`.
    pub pid: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    /// How long the current process has run.
    pub uptime: Option<Duration>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

impl Observed {
    /// An instance with no process and no history (never started, or
    /// started by nobody this supervisor knows).
    pub fn nothing() -> Observed {
        Observed {
            state: State::Stopped,
            pid: None,
            ready: false,
            restarts: 0,
            uptime: None,
            exit_code: None,
            message: None,
        }
    }

    /// A pool with no member (scaled to 0), of at most `max` members.
    pub fn empty_pool(max: Option<u32>) -> Observed {
        let of = max.map(|m| format!(" of at most {m}")).unwrap_or_default();
        Observed {
            message: Some(format!("0 members{of}: scaled to 0")),
            ..Observed::nothing()
        }
    }

    /// The row of pool `name` itself (it has no member to show).
    pub fn pool_row(self, name: &str, kind: Kind) -> ProcessStatus {
        let no_memory = std::collections::HashMap::new();
        let inst = Instance {
            name: name.to_string(),
            process: name.to_string(),
            index: None,
        };
        ProcessStatus {
            pool: Some(name.to_string()),
            ..self.status(&inst, kind, &no_memory)
        }
    }

    /// The status record of instance `inst` of a process of kind `kind`;
    /// its memory from `group_rss` (`spawn::identity::group_rss_table`,
    /// read once for a whole status).
    pub fn status(
        self,
        inst: &Instance,
        kind: Kind,
        group_rss: &std::collections::HashMap<i32, u64>,
    ) -> ProcessStatus {
        let live = self.state.has_process();
        let pid = if live { self.pid } else { None };
        ProcessStatus {
            name: inst.name.clone(),
            kind,
            pool: inst.index.map(|_| inst.process.clone()),
            instance: inst.index,
            pid,
            state: self.state,
            ready: self.ready && matches!(self.state, State::Running | State::Completed),
            restarts: self.restarts,
            uptime_s: if live {
                self.uptime.map(|d| d.as_secs_f64())
            } else {
                None
            },
            // The whole group: a process and everything it started (every
            // instance leads its own group).
            rss_mb: pid.and_then(|p| group_rss.get(&p).copied()).map(megabytes),
            exit_code: self.exit_code,
            message: self.message,
            env_generation: None,
            schedule: None,
        }
    }
}

/// Bytes as the table's megabytes, one decimal.
fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

/// One step of a long operation, for the operator watching `start`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub process: String,
    pub step: Step,
    /// A short human line: `ready in 1.2s`, `exited with code 1`; for
    /// `waiting`, what it waits for now (`waiting for migrate`,
    /// `http://127.0.0.1:8000/health → 503`).
    pub message: String,
    /// `waiting`: how long it has been at what it waits for…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// …and how long it may take (a gate's timeout, a stop's grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A reload's plan (an `info` step, sent before it acts; `message`
    /// is its one-line headline, for a client older than the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ReloadPlan>,
}

impl Progress {
    /// A step with its line.
    pub fn new(process: &str, step: Step, message: impl Into<String>) -> Progress {
        Progress {
            process: process.to_string(),
            step,
            message: message.into(),
            elapsed_ms: None,
            timeout_ms: None,
            plan: None,
        }
    }

    /// A reload's plan, as the `info` step it travels in.
    pub fn plan(plan: ReloadPlan) -> Progress {
        Progress {
            plan: Some(plan.clone()),
            ..Progress::new("stack", Step::Info, plan.headline())
        }
    }

    /// `process` is still at `what`, since `elapsed`, of at most `timeout`.
    pub fn waiting(
        process: &str,
        what: &str,
        elapsed: Duration,
        timeout: Option<Duration>,
    ) -> Progress {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Progress {
            elapsed_ms: Some(ms(elapsed)),
            timeout_ms: timeout.map(ms),
            ..Progress::new(process, Step::Waiting, what)
        }
    }
}

/// The kind of progress.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Starting,
    Ready,
    Completed,
    Failed,
    NotStarted,
    Stopping,
    Stopped,
    Info,
    /// Still at it: what it waits for now, and for how long. Sent only to
    /// a client that asked for live updates (`Envelope::live`), which
    /// redraws the process's line in place; never part of the
    /// line-per-event output.
    Waiting,
}

/// What a reload does (or, with `--dry-run`, would do): per process, what
/// changed in its definition (stack-file keys, and the *names* of the
/// variables whose value changed — never a value) and what is done about
/// it. Decided by `supervisor::reload` (pure); printed by
/// `output::reload_plan`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Nothing is done (`reload --dry-run`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Every process that changed, was added or removed, in stack order
    /// (what was removed after what is kept, what was added last).
    pub processes: Vec<PlanEntry>,
    /// Processes whose definition did not change: they keep their pids.
    #[serde(default)]
    pub unchanged: Vec<String>,
}

impl ReloadPlan {
    /// Whether nothing changed at all.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// The one line for a log or an older client: what is done, by
    /// process name (`restart api; roll worker; 3 unchanged`).
    pub fn headline(&self) -> String {
        let lead = if self.dry_run {
            "reload (dry run)"
        } else {
            "reload"
        };
        if self.processes.is_empty() {
            return format!("{lead}: no change");
        }
        let mut parts: Vec<String> = self
            .processes
            .iter()
            .map(|e| format!("{} {}", e.action.as_str(), e.process))
            .collect();
        if !self.unchanged.is_empty() {
            parts.push(format!("{} unchanged", self.unchanged.len()));
        }
        format!("{lead}: {}", parts.join("; "))
    }
}

/// One process in a [`ReloadPlan`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanEntry {
    pub process: String,
    pub action: PlanAction,
    /// The keys of its definition that changed, as the stack file names
    /// them (`command`, `ready`, `replicas`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// The variables of its environment that were added, removed or given
    /// another value (`[env]`, env files, its `env`): names only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// A pool's size now and after the reload, when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<PlanResize>,
}

/// A pool's size before and after a reload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanResize {
    pub from: u32,
    pub to: u32,
}

/// What a reload does to one process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    /// New in the stack file: started.
    Start,
    /// No longer in the stack file: stopped.
    Stop,
    /// Redefined, and running: stopped, then started with the new
    /// definition (a task runs again).
    Restart,
    /// Redefined, a service with `listen` serving: its successor starts on
    /// the same sockets and is ready before the old process stops.
    Replace,
    /// A redefined pool: member by member, each ready before the next (and
    /// each overlapping, with `listen`); never all down at once.
    Roll,
    /// A redefined scheduled task: its schedule armed again (it runs at
    /// its next time).
    Rearm,
    /// Only `replicas` changed: the pool is resized, no member restarted.
    Resize,
    /// Only settings read live changed (`max_replicas`, `autoscale`,
    /// `on_failure`): taken without touching a process.
    Update,
    /// Redefined, but not running: the new definition applies at its next
    /// start.
    Nothing,
}

impl PlanAction {
    /// The word for it (as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            PlanAction::Start => "start",
            PlanAction::Stop => "stop",
            PlanAction::Restart => "restart",
            PlanAction::Replace => "replace",
            PlanAction::Roll => "roll",
            PlanAction::Rearm => "rearm",
            PlanAction::Resize => "resize",
            PlanAction::Update => "update",
            PlanAction::Nothing => "nothing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str) -> Instance {
        let (process, index) = crate::plan::split_instance(name);
        Instance {
            name: name.to_string(),
            process: process.to_string(),
            index,
        }
    }

    #[test]
    fn a_stopped_instance_shows_no_pid_uptime_or_memory() {
        let o = Observed {
            state: State::Stopped,
            pid: Some(std::process::id() as i32),
            ready: true,
            restarts: 2,
            uptime: Some(Duration::from_secs(5)),
            exit_code: Some(0),
            message: None,
        };
        let s = o.status(
            &inst("api"),
            Kind::Service,
            &crate::spawn::identity::group_rss_table(),
        );
        assert_eq!(s.pid, None);
        assert_eq!(s.uptime_s, None);
        assert_eq!(s.rss_mb, None);
        assert!(!s.ready, "ready only while running or completed");
        assert_eq!(s.restarts, 2);
    }

    #[test]
    fn a_live_pool_member_names_its_pool_and_reads_its_memory() {
        let o = Observed {
            state: State::Running,
            pid: Some(std::process::id() as i32),
            ready: true,
            restarts: 0,
            uptime: Some(Duration::from_millis(1500)),
            exit_code: None,
            message: None,
        };
        let s = o.status(
            &inst("worker.2"),
            Kind::Service,
            &crate::spawn::identity::group_rss_table(),
        );
        assert_eq!(s.pool.as_deref(), Some("worker"));
        assert_eq!(s.instance, Some(2));
        assert!(s.rss_mb.is_some_and(|m| m > 0.0));
        assert_eq!(s.uptime_s, Some(1.5));
        assert!(s.is_up());
    }

    #[test]
    fn only_starting_running_and_stopping_have_a_process() {
        let with: Vec<State> = State::ALL.into_iter().filter(|s| s.has_process()).collect();
        assert_eq!(with, [State::Starting, State::Running, State::Stopping]);
        for s in State::ALL {
            assert!(!(s.has_process() && s.is_at_rest()), "{s}");
        }
    }

    #[test]
    fn megabytes_round_to_one_decimal() {
        assert_eq!(megabytes(1_048_576), 1.0);
        assert_eq!(megabytes(1_572_864), 1.5);
        assert_eq!(megabytes(0), 0.0);
    }
}
