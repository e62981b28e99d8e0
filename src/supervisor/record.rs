//! What a supervisor leaves with the anchor for the next one: each unit's
//! state and what the operator asked of it, and each pool's size. The
//! anchor keeps these as opaque strings (`anchor::proto::ToAnchor::Put`);
//! their shape is decided here.
//!
//! Owns: the kept records, their keys and their JSON. Must not touch: when
//! they are written (the units and the supervisor), or what is done with
//! them on adoption.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fsm::BackoffRecord;
use crate::anchor::proto::ExitRec;
use crate::status::State;

/// The key of an instance's record.
pub fn unit_key(instance: &str) -> String {
    format!("unit/{instance}")
}

/// The key of a pool's size.
pub fn pool_key(pool: &str) -> String {
    format!("pool/{pool}")
}

/// The key under which an instance's notify socket is held.
pub fn notify_key(instance: &str) -> String {
    format!("notify/{instance}")
}

/// The keys of operations under way (`op/<supervisor pid>-<n>`).
pub const OP_PREFIX: &str = "op/";

/// The key of this supervisor's `n`th operation (in the order they began).
pub fn op_key(n: u64) -> String {
    format!("{OP_PREFIX}{}-{n:010}", std::process::id())
}

/// An operation under way, kept with the anchor until it is done: a
/// supervisor killed meanwhile leaves it for the next one to finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpRecord {
    /// `start` of these (none: everything).
    Start { names: Vec<String> },
    /// `stop` of these (none: everything), `--with-dependents` or not.
    Stop {
        names: Vec<String>,
        with_dependents: bool,
    },
    /// The stop of the whole stack, after which the supervisor and the
    /// anchor exit: it outweighs every other operation.
    Shutdown,
    /// `restart` of the whole stack, while it stops what runs (its start,
    /// tasks run again, is then kept as a `Start`): the next supervisor
    /// does the whole restart again.
    Restart,
    /// What is left of a reload once its new stack file is kept: the
    /// processes to start (added, or changed and stopped to start again),
    /// and the instances to give their new definition in place (pool
    /// members, serving services with `listen`). An instance whose process
    /// started after `began_ms` (ms since the epoch) has it already.
    Reload {
        began_ms: u64,
        start: Vec<String>,
        roll: Vec<String>,
    },
}

impl OpRecord {
    /// The record as kept (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A kept record; `None` for one that does not parse.
    pub fn decode(text: &str) -> Option<OpRecord> {
        serde_json::from_str(text).ok()
    }
}

/// What is left to do of the operations `kept` (in the order they began):
/// the stop of the whole stack alone when it is among them, else each in
/// turn.
pub fn unfinished(kept: impl IntoIterator<Item = OpRecord>) -> Vec<OpRecord> {
    let ops: Vec<OpRecord> = kept.into_iter().collect();
    if ops.contains(&OpRecord::Shutdown) {
        vec![OpRecord::Shutdown]
    } else {
        ops
    }
}

/// The key under which one of a service's listening sockets is held:
/// `listen/api/127.0.0.1:8000` (a service's name has no `/`).
pub fn listen_key(service: &str, addr: &crate::config::ListenAddr) -> String {
    format!("listen/{service}/{addr}")
}

/// What the keys of scheduled tasks begin with.
pub const SCHEDULE_PREFIX: &str = "schedule/";

/// The key of a scheduled task's record (`supervisor::schedule`).
pub fn schedule_key(task: &str) -> String {
    format!("{SCHEDULE_PREFIX}{task}")
}

/// The key of the base environment (`supervisor::env`): the anchor
/// launches the next supervisor with it.
pub use crate::anchor::proto::BASE_ENV_KEY;

/// The key of the environment generation (`supervisor::env`).
pub const ENV_GENERATION_KEY: &str = "env/generation";

/// The key of the autoscalers' decision state.
pub const AUTOSCALE_KEY: &str = "autoscale";

/// The key of the stack file text the supervisor last loaded.
pub const STACK_FILE_KEY: &str = "stack/file";

/// One unit as a supervisor leaves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub state: State,
    pub pid: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    pub exit: Option<ExitRec>,
    pub message: Option<String>,
    /// The operator wants it up (`start`, `restart`), or not (`stop`).
    pub wanted: bool,
    /// It was ready once in this life (a failure is then a crash).
    pub been_ready: bool,
    pub backoff: BackoffRecord,
    /// Where its `NOTIFY_SOCKET` really is (a fallback folder for a long
    /// path), when it has one.
    #[serde(default)]
    pub notify_path: Option<PathBuf>,
    /// The environment generation of its process.
    #[serde(default)]
    pub env_generation: Option<u64>,
    /// While `stopping`: what follows the stop.
    #[serde(default)]
    pub after_stop: AfterStop,
    /// Attempts made so far (run markers go on counting from here).
    #[serde(default)]
    pub attempts: u32,
}

/// What follows a stop under way: kept with a stopping unit's record, so
/// that a supervisor killed meanwhile leaves the next one to finish the
/// stop and do what came after it (a restart stays a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "then", rename_all = "snake_case")]
pub enum AfterStop {
    /// It stays down (`stop`, the supervisor closing).
    #[default]
    Down,
    /// Started again at once (`restart`, a reload that changed it).
    Restart,
    /// Its restart policy decides: stopped for `why` (a failing health
    /// check, `memory_max`).
    Policy { why: String },
    /// The attempt failed for `reason` (its gate, its timeout).
    Failed { reason: String },
}

impl UnitRecord {
    /// The record as kept (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A kept record; `None` for one that does not parse (a record of
    /// another version: the unit then starts from what it sees).
    pub fn decode(text: &str) -> Option<UnitRecord> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_garbage_is_none() {
        let r = UnitRecord {
            state: State::Backoff,
            pid: None,
            ready: false,
            restarts: 3,
            exit: Some(ExitRec::Code(1)),
            message: Some("restarting in 200ms after: exited with code 1".into()),
            wanted: true,
            been_ready: true,
            backoff: BackoffRecord {
                recent_ms: vec![1, 2, 3],
                next_delay_ms: 400,
            },
            notify_path: None,
            env_generation: Some(2),
            after_stop: AfterStop::Policy {
                why: "health check failed 3 times in a row".into(),
            },
            attempts: 4,
        };
        assert_eq!(UnitRecord::decode(&r.encode()), Some(r));
        let op = OpRecord::Stop {
            names: vec!["api".into()],
            with_dependents: true,
        };
        assert_eq!(OpRecord::decode(&op.encode()), Some(op));
        let restart = OpRecord::Restart;
        assert_eq!(OpRecord::decode(&restart.encode()), Some(restart));
        assert!(op_key(3) < op_key(12), "kept in the order they began");
        assert_eq!(UnitRecord::decode("{"), None);
        assert_eq!(unit_key("worker.2"), "unit/worker.2");
        assert_eq!(pool_key("worker"), "pool/worker");
    }

    #[test]
    fn the_stop_of_the_stack_outweighs_every_other_unfinished_operation() {
        let start = OpRecord::Start { names: vec![] };
        let stop = OpRecord::Stop {
            names: vec!["api".into()],
            with_dependents: false,
        };
        let table: [(Vec<OpRecord>, Vec<OpRecord>); 5] = [
            (vec![], vec![]),
            (vec![start.clone()], vec![start.clone()]),
            (
                vec![start.clone(), stop.clone()],
                vec![start.clone(), stop.clone()],
            ),
            (
                vec![start.clone(), OpRecord::Shutdown, stop.clone()],
                vec![OpRecord::Shutdown],
            ),
            (
                vec![OpRecord::Restart, OpRecord::Shutdown],
                vec![OpRecord::Shutdown],
            ),
        ];
        for (kept, want) in table {
            assert_eq!(unfinished(kept.clone()), want, "{kept:?}");
        }
    }
}
