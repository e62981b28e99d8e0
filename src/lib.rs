//! stackctl: a process supervisor for a whole application stack on one host.
//!
//! Data flows one way: stack file → `config` (validated model) → `plan` →
//! `supervisor` (uses `spawn`, `probe`, `logs`, `state`) → status snapshots →
//! `control` → `cli` and `output`. Lower modules never import higher ones.

pub mod anchor;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod export;
pub mod keeper;
pub mod lock;
pub mod logs;
pub mod output;
pub mod plan;
pub mod probe;
pub mod sd_notify;
pub mod spawn;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod timeline;

pub use cli::{Cli, Command};
pub use error::{Error, Result};

/// Runs one parsed command line and returns the exit code.
///
/// # Errors
/// Whatever the command fails with; see [`Error::exit_code`].
pub fn run(cli: Cli) -> Result<u8> {
    cli::run(cli)
}
