//! The stack file as written: a serde mirror of the TOML, with
//! `toml::Spanned` on every value a later check points at.
//!
//! Owns: the shape of the file (which keys exist, which TOML types they
//! take). Nothing here is validated beyond TOML types; `validate` turns it
//! into the model. Unknown keys are not rejected here: `mod.rs` collects all
//! of them through `serde_ignored`. No `#[serde(untagged)]`: "string or
//! array" and "string or table" are small visitors, so type errors stay
//! precise. Tables (`ready`, `health`, `autoscale`, `[keeper]`, prereqs) are not
//! `Spanned`: a table written with dotted keys or a `[header]` has no span
//! for serde, so `validate` locates their keys through `toml_edit`.
//! Must not touch: the model, the environment, the file system.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A name (a key of `[task]`/`[service]`/`[env]`). `serde_ignored` cannot
/// pass `Spanned` keys through, so `validate` locates names with `toml_edit`.
pub(crate) type Name = String;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFile {
    pub(crate) stack: Option<RawStack>,
    pub(crate) env: Option<BTreeMap<Name, Spanned<toml::Value>>>,
    pub(crate) task: Option<BTreeMap<Name, RawProcess>>,
    pub(crate) service: Option<BTreeMap<Name, RawProcess>>,
    pub(crate) keeper: Option<RawKeeper>,
    pub(crate) export: Option<RawExport>,
}

/// `[export]`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawExport {
    pub(crate) image: Option<Spanned<String>>,
    pub(crate) images: Option<BTreeMap<Name, Spanned<String>>>,
    pub(crate) workdir: Option<Spanned<String>>,
}

/// `[stack]`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawStack {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) state_dir: Option<Spanned<String>>,
    pub(crate) env_file: Option<EnvFiles>,
    pub(crate) stop_timeout: Option<Spanned<String>>,
    pub(crate) lock_file: Option<Spanned<String>>,
    pub(crate) logs: Option<RawLogs>,
    pub(crate) on_failure: Option<Spanned<RawCommand>>,
    pub(crate) on_failure_timeout: Option<Spanned<String>>,
    pub(crate) on_failure_exits: Option<Spanned<bool>>,
}

/// `[stack.logs]`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawLogs {
    /// A string like `"50MB"`, or an integer number of bytes.
    pub(crate) max_size: Option<Spanned<toml::Value>>,
    pub(crate) keep: Option<Spanned<i64>>,
    pub(crate) timestamps: Option<bool>,
    pub(crate) markers: Option<bool>,
}

/// `[task.NAME]` and `[service.NAME]`: one shape, `validate` says which keys
/// make sense for which kind.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProcess {
    pub(crate) command: Option<Spanned<RawCommand>>,
    pub(crate) depends_on: Option<Vec<Spanned<String>>>,
    pub(crate) env: Option<BTreeMap<Name, Spanned<toml::Value>>>,
    pub(crate) env_file: Option<EnvFiles>,
    pub(crate) cwd: Option<Spanned<String>>,
    pub(crate) pre_start: Option<Spanned<Commands>>,
    pub(crate) require_env: Option<Vec<Spanned<String>>>,
    pub(crate) ready: Option<RawProbe>,
    pub(crate) health: Option<RawProbe>,
    pub(crate) restart: Option<Spanned<String>>,
    pub(crate) max_restarts: Option<Spanned<i64>>,
    pub(crate) restart_window: Option<Spanned<String>>,
    /// `"SIGTERM"`, `"TERM"`, `"15"` or `15`.
    pub(crate) stop_signal: Option<Spanned<toml::Value>>,
    pub(crate) stop_timeout: Option<Spanned<String>>,
    pub(crate) replicas: Option<Spanned<i64>>,
    pub(crate) max_replicas: Option<Spanned<i64>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) autoscale: Option<RawAutoscale>,
    pub(crate) listen: Option<Vec<Spanned<RawListen>>>,
    pub(crate) on_failure: Option<Spanned<RawCommand>>,
    pub(crate) on_failure_timeout: Option<Spanned<String>>,
    pub(crate) on_failure_exits: Option<Spanned<bool>>,
    /// A size like `"512MB"`, or an integer number of bytes.
    pub(crate) memory_max: Option<Spanned<toml::Value>>,
    pub(crate) schedule: Option<Spanned<String>>,
    pub(crate) every: Option<Spanned<String>>,
}

/// Every key a process table may hold, for "did you mean".
pub(crate) const PROCESS_KEYS: &[&str] = &[
    "command",
    "depends_on",
    "env",
    "env_file",
    "cwd",
    "pre_start",
    "require_env",
    "ready",
    "health",
    "restart",
    "max_restarts",
    "restart_window",
    "stop_signal",
    "stop_timeout",
    "replicas",
    "max_replicas",
    "timeout",
    "autoscale",
    "listen",
    "on_failure",
    "on_failure_timeout",
    "on_failure_exits",
    "memory_max",
    "schedule",
    "every",
];

/// Keys of a `listen = [{ … }]` entry.
pub(crate) const LISTEN_KEYS: &[&str] = &["addr", "name"];

/// `[service.NAME.autoscale]` keys.
pub(crate) const AUTOSCALE_KEYS: &[&str] = &[
    "depth",
    "per_instance",
    "min",
    "max",
    "interval",
    "scale_in_window",
    "scale_out_step",
    "scale_in_step",
    "on_error",
    "manual_hold",
];

/// `autoscale.depth` keys.
pub(crate) const DEPTH_KEYS: &[&str] = &["exec", "http", "file", "field", "timeout"];

/// `autoscale.on_error = { … }` keys.
pub(crate) const ON_ERROR_KEYS: &[&str] = &["fallback", "after"];

/// Top-level keys.
pub(crate) const TOP_KEYS: &[&str] = &["stack", "env", "task", "service", "keeper", "export"];

/// `[export]` keys.
pub(crate) const EXPORT_KEYS: &[&str] = &["image", "images", "workdir"];

/// `[stack]` keys.
pub(crate) const STACK_KEYS: &[&str] = &[
    "name",
    "state_dir",
    "env_file",
    "stop_timeout",
    "lock_file",
    "logs",
    "on_failure",
    "on_failure_timeout",
    "on_failure_exits",
];

/// `[stack.logs]` keys.
pub(crate) const LOGS_KEYS: &[&str] = &["max_size", "keep", "timestamps", "markers"];

/// Probe keys.
pub(crate) const PROBE_KEYS: &[&str] = &[
    "http", "tcp", "exec", "log", "notify", "alive", "timeout", "interval", "failures",
];

/// `[keeper]` keys.
pub(crate) const KEEPER_KEYS: &[&str] = &[
    "repo",
    "remote",
    "branch",
    "interval",
    "deploy",
    "prereqs",
    "watch_health",
    "retries",
    "escalate",
    "restart",
    "step_timeout",
    "deploy_timeout",
];

/// Keys of an `env_file = { … }` entry.
pub(crate) const ENV_FILE_KEYS: &[&str] = &["path", "optional"];

/// The probe kinds a stack file can name. A new kind is a variant here,
/// its field in [`RawProbe`] and [`RawProbe::span_of`], and its place in
/// `PROBE_KEYS`; the compiler then points at every match that must learn
/// it (validation, the model, the probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKey {
    Http,
    Tcp,
    Exec,
    Log,
    Notify,
    Alive,
}

impl ProbeKey {
    pub(crate) const ALL: [ProbeKey; 6] = [
        ProbeKey::Http,
        ProbeKey::Tcp,
        ProbeKey::Exec,
        ProbeKey::Log,
        ProbeKey::Notify,
        ProbeKey::Alive,
    ];

    /// The key as written.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProbeKey::Http => "http",
            ProbeKey::Tcp => "tcp",
            ProbeKey::Exec => "exec",
            ProbeKey::Log => "log",
            ProbeKey::Notify => "notify",
            ProbeKey::Alive => "alive",
        }
    }

    /// Whether the kind watches a process (its output, its notify socket,
    /// its life), so it cannot check something else (a keeper prereq).
    pub(crate) fn watches_a_process(self) -> bool {
        match self {
            ProbeKey::Log | ProbeKey::Notify | ProbeKey::Alive => true,
            ProbeKey::Http | ProbeKey::Tcp | ProbeKey::Exec => false,
        }
    }
}

impl RawProbe {
    /// Where `key` is written, if it is.
    pub(crate) fn span_of(&self, key: ProbeKey) -> Option<std::ops::Range<usize>> {
        match key {
            ProbeKey::Http => self.http.as_ref().map(Spanned::span),
            ProbeKey::Tcp => self.tcp.as_ref().map(Spanned::span),
            ProbeKey::Exec => self.exec.as_ref().map(Spanned::span),
            ProbeKey::Log => self.log.as_ref().map(Spanned::span),
            ProbeKey::Notify => self.notify.as_ref().map(Spanned::span),
            ProbeKey::Alive => self.alive.as_ref().map(Spanned::span),
        }
    }

    /// The kinds written, in key order, with where.
    pub(crate) fn kinds(&self) -> Vec<(ProbeKey, std::ops::Range<usize>)> {
        ProbeKey::ALL
            .into_iter()
            .filter_map(|k| self.span_of(k).map(|s| (k, s)))
            .collect()
    }
}

/// `ready`, `health` and keeper prereqs: a flat struct; "exactly one kind"
/// is checked by `validate`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProbe {
    pub(crate) http: Option<Spanned<String>>,
    pub(crate) tcp: Option<Spanned<String>>,
    pub(crate) exec: Option<Spanned<RawCommand>>,
    pub(crate) log: Option<Spanned<String>>,
    pub(crate) notify: Option<Spanned<bool>>,
    pub(crate) alive: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) failures: Option<Spanned<i64>>,
}

/// `[keeper]`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeeper {
    pub(crate) repo: Option<Spanned<String>>,
    pub(crate) remote: Option<Spanned<String>>,
    pub(crate) branch: Option<Spanned<String>>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) deploy: Option<Spanned<Commands>>,
    pub(crate) prereqs: Option<Vec<RawProbe>>,
    pub(crate) watch_health: Option<Vec<Spanned<String>>>,
    pub(crate) retries: Option<Spanned<i64>>,
    pub(crate) escalate: Option<Spanned<RawCommand>>,
    pub(crate) restart: Option<Vec<Spanned<String>>>,
    pub(crate) step_timeout: Option<Spanned<String>>,
    pub(crate) deploy_timeout: Option<Spanned<String>>,
}

/// `[service.NAME.autoscale]`: what `validate` turns into an
/// `AutoscaleSpec`. A table, so not `Spanned` (see the module doc).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAutoscale {
    pub(crate) depth: Option<RawDepth>,
    pub(crate) per_instance: Option<Spanned<i64>>,
    pub(crate) min: Option<Spanned<i64>>,
    pub(crate) max: Option<Spanned<i64>>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) scale_in_window: Option<Spanned<String>>,
    /// A number of members (`2`) or a percentage of the size (`"100%"`).
    pub(crate) scale_out_step: Option<Spanned<toml::Value>>,
    pub(crate) scale_in_step: Option<Spanned<i64>>,
    pub(crate) on_error: Option<RawOnError>,
    pub(crate) manual_hold: Option<Spanned<String>>,
}

/// `depth = { exec = … }`: a flat struct; "exactly one source" is checked
/// by `validate`, as for probes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawDepth {
    pub(crate) exec: Option<Spanned<RawCommand>>,
    pub(crate) http: Option<Spanned<String>>,
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) field: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
}

/// `on_error = "hold"` or `on_error = { fallback = 2, after = 3 }`. Not
/// `Spanned` (it may be a table): `validate` points at its key.
#[derive(Debug)]
pub(crate) enum RawOnError {
    Word(String),
    Fallback(RawFallback),
}

/// The table form of `on_error`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFallback {
    pub(crate) fallback: Option<Spanned<i64>>,
    pub(crate) after: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RawOnError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawOnError;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"hold\", or a table { fallback = N, after = K }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawOnError, E> {
                Ok(RawOnError::Word(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawOnError, A::Error> {
                RawFallback::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawOnError::Fallback)
            }
        }
        d.deserialize_any(V)
    }
}

/// One `listen` entry: `"127.0.0.1:8000"`, `"unix:api.sock"`, or
/// `{ addr = "…", name = "http" }`.
#[derive(Debug)]
pub(crate) enum RawListen {
    Addr(String),
    Table(RawListenTable),
}

/// The table form of a `listen` entry.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawListenTable {
    pub(crate) addr: Option<Spanned<String>>,
    pub(crate) name: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address (\"127.0.0.1:8000\", \"unix:PATH\") or { addr = …, name = … }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawListen, E> {
                Ok(RawListen::Addr(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawListen, A::Error> {
                RawListenTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawListen::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `command = "…"` (shell) or `command = ["argv", …]`.
#[derive(Debug)]
pub(crate) enum RawCommand {
    Shell(String),
    Argv(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Shell(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    v.push(s);
                }
                Ok(RawCommand::Argv(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `pre_start` / `deploy`: one command string, or an array whose entries
/// are command strings or argv arrays.
#[derive(Debug)]
pub(crate) enum Commands {
    /// A lone string: one shell command (its span is the whole value's).
    One(String),
    Many(Vec<Spanned<RawCommand>>),
}

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Commands;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a command string, or an array of commands (strings or arrays of strings)",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Commands, E> {
                Ok(Commands::One(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Commands, A::Error> {
                let mut v = Vec::new();
                while let Some(c) = seq.next_element::<Spanned<RawCommand>>()? {
                    v.push(c);
                }
                Ok(Commands::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `env_file = ".env"`, `env_file = [".env", { path = "x", optional = true }]`.
#[derive(Debug, Default)]
pub(crate) struct EnvFiles(pub(crate) Vec<Spanned<EnvFileEntry>>);

impl<'de> Deserialize<'de> for EnvFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvFiles;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an env file path, or an array of paths and { path, optional } tables")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EnvFiles, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = seq.next_element::<Spanned<EnvFileEntry>>()? {
                    v.push(e);
                }
                Ok(EnvFiles(v))
            }
            fn visit_str<E: de::Error>(self, _s: &str) -> Result<EnvFiles, E> {
                Err(E::custom("expected an array, e.g. env_file = [\".env\"]"))
            }
        }
        d.deserialize_any(V)
    }
}

/// One env file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvFileEntry {
    pub(crate) path: String,
    pub(crate) optional: bool,
}

#[derive(Deserialize)]
struct EnvFileTable {
    path: String,
    #[serde(default)]
    optional: bool,
}

impl<'de> Deserialize<'de> for EnvFileEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvFileEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path, or { path = \"…\", optional = true }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EnvFileEntry, E> {
                Ok(EnvFileEntry {
                    path: s.to_string(),
                    optional: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EnvFileEntry, A::Error> {
                let t = EnvFileTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(EnvFileEntry {
                    path: t.path,
                    optional: t.optional,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_kind_is_a_known_probe_key() {
        let kinds: Vec<&str> = ProbeKey::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(&PROBE_KEYS[..kinds.len()], kinds.as_slice());
    }
}
