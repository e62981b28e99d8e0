//! The validated stack: what every later stage works from.
//!
//! Owns: the types a stack file becomes once `validate` has accepted it.
//! Nothing here is "not validated yet": a `Stack` exists only when the file
//! was read, every key was known, every dependency exists, there is no cycle,
//! every duration and probe parsed and every required variable is set.
//! Must not touch: processes, sockets, tokio.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use regex::Regex;

/// A whole validated stack file.
#[derive(Debug, Clone)]
pub struct Stack {
    /// `[stack] name`, default: the name of the stack file's folder.
    pub name: String,
    /// Absolute path of the stack file.
    pub file: PathBuf,
    /// Absolute folder of the stack file; relative paths are resolved here.
    pub root: PathBuf,
    /// Absolute `state_dir` (default `<root>/logs`).
    pub state_dir: PathBuf,
    /// Absolute path of the stack-owner lock (default `<state_dir>/stack-owner.json`).
    pub lock_file: PathBuf,
    /// `[stack] stop_timeout`, default 10s.
    pub stop_timeout: Duration,
    /// `[stack.logs]`.
    pub logs: LogSettings,
    /// Every task and service, in file order (tasks first, then services).
    pub processes: Vec<ProcessSpec>,
    /// `[keeper]`, when present.
    pub keeper: Option<KeeperSpec>,
    /// Warnings about the file, each rendered (`warning: …`, its place, a
    /// hint): valid, but probably not what was meant. `check`, `start` and
    /// `reload` print them.
    pub warnings: Vec<String>,
    /// The text it was loaded from (empty for a [`super::shell`]): kept
    /// with the anchor, so that a relaunched supervisor runs on the file
    /// this one loaded, not on an edit nobody reloaded.
    pub source: String,
    /// `[export]`: what `stackctl export` needs beyond the stack (images).
    pub export: ExportSpec,
    /// `[stack] on_failure`, the default of every process (each process
    /// also carries the hook that applies to it, in `on_failure`).
    pub on_failure: Option<HookSpec>,
}

impl Stack {
    /// The process named `name`, if any.
    pub fn process(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// `[stack.logs]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Rotate a process log once it would grow past this many bytes (default 50 MB).
    pub max_size: u64,
    /// How many rotated files to keep (default 5).
    pub keep: u32,
    /// Prefix each line with an RFC 3339 time (default false).
    pub timestamps: bool,
    /// Write a run marker into a process's log when it starts and when it
    /// ends (default true; see `logs::marker`).
    pub markers: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            max_size: 50 * 1000 * 1000,
            keep: 5,
            timestamps: false,
            markers: true,
        }
    }
}

/// A task runs once to completion; a service runs until stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Task,
    Service,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Task => "task",
            Kind::Service => "service",
        })
    }
}

/// A command line. Strings still hold `${VAR}` templates: they are expanded
/// per instance at spawn time (see `config::env::expand`), once
/// `STACKCTL_PROCESS` and `STACKCTL_INSTANCE` are known. Validation has
/// already proven that every template expands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// Run under `/bin/sh -c`.
    Shell(String),
    /// Executed as is; never empty.
    Argv(Vec<String>),
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandSpec::Shell(s) => f.write_str(s),
            CommandSpec::Argv(v) => f.write_str(&v.join(" ")),
        }
    }
}

/// `restart = "always" | "on-failure" | "never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// One probe: how to tell that a process is ready or alive.
#[derive(Debug, Clone)]
pub enum ProbeKind {
    /// GET the URL; 2xx or 3xx passes. http:// and https://.
    Http(String),
    /// A TCP connect to `host:port` succeeds.
    Tcp(String),
    /// The command exits 0 (run in the process's cwd and env).
    Exec(CommandSpec),
    /// A line of the process's output matches.
    Log(Regex),
    /// The process sends `READY=1` to `$NOTIFY_SOCKET`.
    Notify,
    /// The process is still running after this long.
    Alive(Duration),
}

impl ProbeKind {
    /// The probe's kind as written in the stack file (`http`, `tcp`, …).
    pub fn key(&self) -> &'static str {
        match self {
            ProbeKind::Http(_) => "http",
            ProbeKind::Tcp(_) => "tcp",
            ProbeKind::Exec(_) => "exec",
            ProbeKind::Log(_) => "log",
            ProbeKind::Notify => "notify",
            ProbeKind::Alive(_) => "alive",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeKind::Http(u) => write!(f, "http {u}"),
            ProbeKind::Tcp(a) => write!(f, "tcp {a}"),
            ProbeKind::Exec(c) => write!(f, "exec `{c}`"),
            ProbeKind::Log(r) => write!(f, "log /{}/", r.as_str()),
            ProbeKind::Notify => f.write_str("notify"),
            ProbeKind::Alive(d) => write!(f, "alive {}", humantime::format_duration(*d)),
        }
    }
}

/// `ready = { … }`: a readiness gate.
#[derive(Debug, Clone)]
pub struct ReadySpec {
    pub probe: ProbeKind,
    /// Give up after this long (default 60s).
    pub timeout: Duration,
    /// Time between attempts (default 250ms).
    pub interval: Duration,
}

/// `health = { … }`: a liveness check once ready.
#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub probe: ProbeKind,
    /// Time between checks (default 10s).
    pub interval: Duration,
    /// One check is cut off after this long (default: the interval, at most 10s).
    pub timeout: Duration,
    /// This many failures in a row restart the process (default 3).
    pub failures: u32,
}

/// Environment variables whose values must never be printed: `Debug` redacts them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(pub BTreeMap<String, String>);

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Where a variable was set: an env file's `KEY=` line, or an `[env]` /
/// `env` key in the stack file. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSource {
    /// Absolute path of the file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

/// [`EnvSource`] by variable name.
pub type EnvSources = BTreeMap<String, EnvSource>;

/// One `[task.NAME]` or `[service.NAME]`.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub kind: Kind,
    pub command: CommandSpec,
    /// Names of tasks (must complete with 0) and services (must be ready).
    pub depends_on: Vec<String>,
    /// The environment this process adds to stackctl's own, already merged
    /// and expanded: stack env files, `[env]`, its env files, its `env`.
    /// `STACKCTL_*` are added at spawn time.
    pub env: Env,
    /// Where each variable of `env` was set, by the layer that won (a
    /// `file:line`): what a hint about a variable names.
    pub env_sources: EnvSources,
    /// Absolute working directory (default: the stack file's folder).
    /// Unlike commands, `${VAR}` in `cwd` is expanded at load (it may not use
    /// `STACKCTL_PROCESS`/`STACKCTL_INSTANCE`), so this is final.
    pub cwd: PathBuf,
    /// Run before every start, in order; a failure fails that start.
    pub pre_start: Vec<CommandSpec>,
    /// Checked at start: each must be set and non-empty.
    pub require_env: Vec<String>,
    pub ready: Option<ReadySpec>,
    pub health: Option<HealthSpec>,
    /// Default: `on-failure` for services, `never` for tasks.
    pub restart: RestartPolicy,
    /// Default 5.
    pub max_restarts: u32,
    /// Default 60s.
    pub restart_window: Duration,
    /// Default SIGTERM.
    pub stop_signal: Signal,
    /// Default: `[stack] stop_timeout`.
    pub stop_timeout: Duration,
    /// `Some(n)` makes a pool of instances `NAME.1` … `NAME.n`.
    pub replicas: Option<u32>,
    /// Upper bound for `scale`; `None`: no bound beyond a sanity limit.
    pub max_replicas: Option<u32>,
    /// Tasks only: kill and fail after this long (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Where `env` came from, in the order the layers apply (later wins):
    /// the stack's env files, `[env]`, this process's env files, its `env`.
    /// Templates as written, never values: `stackctl export` writes these
    /// by reference instead of the merged, expanded `env`.
    pub env_layers: Vec<EnvLayer>,
    /// Pools only: size the pool from a queue depth (`replicas` is then
    /// the size it starts at).
    pub autoscale: Option<AutoscaleSpec>,
    /// Services only: sockets stackctl binds and holds, passed to every
    /// spawn as fds 3… (systemd's `LISTEN_FDS` protocol); shared by a
    /// pool's members (one accept queue).
    pub listen: Vec<ListenSpec>,
    /// `on_failure` (its own, else `[stack]`'s): run when the process
    /// fails, and on each unexpected exit when asked.
    pub on_failure: Option<HookSpec>,
    /// `memory_max` in bytes: the whole group's RSS above it for a few
    /// checks in a row restarts the process.
    pub memory_max: Option<u64>,
    /// Tasks only: `schedule` or `every`. Nothing depends on such a task.
    pub schedule: Option<Schedule>,
}

/// One `listen` entry: a socket stackctl binds before the first spawn and
/// keeps open across restarts (and supervisors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: ListenAddr,
    /// Its name in `LISTEN_FDNAMES` (default: the service's name, as
    /// systemd names a socket unit's fds after the unit).
    pub name: String,
}

/// Where a held socket listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListenAddr {
    /// A TCP address (an IPv6 one is bound `IPV6_V6ONLY`: it never takes
    /// the IPv4 port as well).
    Tcp(std::net::SocketAddr),
    /// A unix stream socket at this absolute path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Whether binding both would collide: the same path, or the same port
    /// of one family where the addresses are equal or one is the wildcard.
    pub fn overlaps(&self, other: &ListenAddr) -> bool {
        match (self, other) {
            (ListenAddr::Unix(a), ListenAddr::Unix(b)) => a == b,
            (ListenAddr::Tcp(a), ListenAddr::Tcp(b)) => {
                a.port() == b.port()
                    && a.is_ipv4() == b.is_ipv4()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            }
            _ => false,
        }
    }

    /// Whether a client connecting to `host:port` (a probe's target)
    /// reaches this socket.
    pub fn serves(&self, host: &str, port: u16) -> bool {
        let ListenAddr::Tcp(a) = self else {
            return false;
        };
        if a.port() != port {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip == a.ip() || (a.ip().is_unspecified() && ip.is_ipv4() == a.is_ipv4()),
            Err(_) => host == "localhost" && (a.ip().is_loopback() || a.ip().is_unspecified()),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The variables a hook gets besides stackctl's own environment (all of
/// them always set, empty when unknown): what its command may use as
/// `${…}`, and what `supervisor::hooks` sets.
pub const HOOK_VARS: [&str; 9] = [
    "STACKCTL_EVENT",
    "STACKCTL_STACK",
    "STACKCTL_PROCESS",
    "STACKCTL_STATE",
    "STACKCTL_REASON",
    "STACKCTL_EXIT_CODE",
    "STACKCTL_LOG",
    "STACKCTL_RESTARTS",
    "STACKCTL_SUPPRESSED",
];

/// `on_failure` with its settings: a command run when a process becomes
/// `failed` (and, with `exits`, on each exit its restart policy restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    /// Templates kept; expanded from the hook's own environment.
    pub command: CommandSpec,
    /// The hook's group is killed after this long (default 30s).
    pub timeout: Duration,
    /// Also run on each unexpected exit that is restarted (default false).
    pub exits: bool,
}

/// When a scheduled task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `schedule = "0 3 * * *"`, in the host's time zone.
    Cron {
        /// As written.
        expr: String,
        cron: super::cron::Cron,
    },
    /// `every = "15m"`: that long after it was armed, then after each slot.
    Every(Duration),
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { expr, .. } => write!(f, "schedule \"{expr}\""),
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

/// One layer of a process's environment, as the stack file writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvLayer {
    /// An `env_file` entry. Its values are never kept here.
    File {
        /// Absolute path.
        path: PathBuf,
        /// The path as written in the stack file.
        written: String,
        /// `{ path = …, optional = true }`: a missing file is skipped.
        optional: bool,
    },
    /// `[env]` (`at` = `"env"`) or a process's `env` (`at` =
    /// `"service.web.env"`): each `KEY = "template"` as written, in key order.
    Table {
        at: String,
        entries: Vec<(String, String)>,
    },
}

/// `[export]`: settings for `stackctl export compose|kubernetes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSpec {
    /// `image`: the image of every process without its own.
    pub image: Option<String>,
    /// `images = { NAME = "IMAGE" }`: per process.
    pub images: BTreeMap<String, String>,
    /// `workdir`: where the stack's folder is inside the images (absolute);
    /// a process's `cwd` maps below it.
    pub workdir: Option<String>,
}

impl ProcessSpec {
    /// Whether this process is a pool (has `replicas`).
    pub fn is_pool(&self) -> bool {
        self.replicas.is_some()
    }
}

/// `[service.NAME.autoscale]`: how a pool sizes itself from a queue depth.
/// Validation has proven `min <= replicas <= max <= max_replicas`, and a
/// fallback size within `min..=max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscaleSpec {
    /// Where the depth is read.
    pub depth: DepthSpec,
    /// Jobs one member handles: the pool wants ceil(depth / per_instance).
    pub per_instance: u32,
    /// Never fewer members than this (default 1).
    pub min: u32,
    /// Never more (default `max_replicas`).
    pub max: u32,
    /// Time between readings (default 15s).
    pub interval: Duration,
    /// Scale in only to the highest size wanted over this long (default 5m).
    pub scale_in_window: Duration,
    /// At most this much growth per decision (`None`: straight to the size wanted).
    pub scale_out_step: Option<StepLimit>,
    /// At most this many members stopped per decision (`None`: no limit).
    pub scale_in_step: Option<u32>,
    /// What a failing depth source does (default: hold the size).
    pub on_error: OnError,
    /// How long a manual `scale` holds the size before autoscaling resumes
    /// (default 10m).
    pub manual_hold: Duration,
}

/// `depth = { … }`: one source, its optional JSON field and its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthSpec {
    pub source: DepthSource,
    /// A dotted path into a JSON answer (`queue.waiting`, `items.0.n`).
    pub field: Option<String>,
    /// A reading is cut off after this long (default: the interval, at most 10s).
    pub timeout: Duration,
}

/// Where a queue depth comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepthSource {
    /// A command printing the number on stdout (in the pool's cwd and env).
    Exec(CommandSpec),
    /// A URL answering the number (2xx). Keeps its `${…}` templates.
    Http(String),
    /// A file holding the number (absolute).
    File(PathBuf),
}

impl fmt::Display for DepthSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DepthSource::Exec(c) => write!(f, "exec `{c}`"),
            DepthSource::Http(u) => write!(f, "http {u}"),
            DepthSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// `scale_out_step`: members, or a percentage of the current size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepLimit {
    Members(u32),
    /// At least one member.
    Percent(u32),
}

/// `on_error`: what the pool does while its depth source fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Keep the size it has (the default).
    Hold,
    /// After `after` failed readings in a row, go to `size`.
    Fallback { size: u32, after: u32 },
}

/// `prereqs = [{ tcp = … }, …]` entries of the keeper.
#[derive(Debug, Clone)]
pub struct KeeperSpec {
    /// Absolute path of the git worktree.
    pub repo: PathBuf,
    pub remote: String,
    pub branch: String,
    pub interval: Duration,
    pub deploy: Vec<CommandSpec>,
    pub prereqs: Vec<ProbeKind>,
    pub watch_health: Vec<String>,
    pub retries: u32,
    pub escalate: Option<CommandSpec>,
    /// `restart`: the processes and pools a deploy restarts after `reload`
    /// (tasks among their dependencies re-run); `None`: every service.
    pub restart: Option<Vec<String>>,
    /// One deploy step is killed with its group after this long (default 30m).
    pub step_timeout: Duration,
    /// All deploy steps of one attempt together (default 1h).
    pub deploy_timeout: Duration,
    /// The stack's own environment, for the keeper's commands: `[stack]`
    /// env files, then `[env]`, merged and expanded as for processes (a
    /// process's own env files and `env` are not in it).
    pub env: Env,
}
