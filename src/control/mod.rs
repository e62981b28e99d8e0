//! The control protocol between the CLI and the supervisor.
//!
//! Owns: the versioned request/response types (JSON, one per line, over the
//! unix socket `state_dir/stackctl.sock`), the server side (bind with
//! stale-socket handling, mode 0600, `SO_PEERCRED` check) and the client
//! side (connect, send, stream progress; "no supervisor" is a typed
//! outcome). Must not touch: supervisor internals; it only sees protocol
//! types.

pub mod client;
pub mod protocol;
pub mod server;
