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
    /// Attempts made so far (run markers go on counting from here).
    #[serde(default)]
    pub attempts: u32,
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
            attempts: 4,
        };
        assert_eq!(UnitRecord::decode(&r.encode()), Some(r));
        assert_eq!(UnitRecord::decode("{"), None);
        assert_eq!(unit_key("worker.2"), "unit/worker.2");
        assert_eq!(pool_key("worker"), "pool/worker");
    }
}
