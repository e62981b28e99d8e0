//! The top-level error, its exit code and how it is shown.
//!
//! Owns: mapping every failure to one of SPEC's exit codes (exhaustively:
//! a new variant without a code does not compile) and rendering it as
//! `error: what` / `(hint: what to do)` / detail. Must not touch: I/O beyond
//! the writer it is given; other modules convert *into* it.

use std::io::Write;

use crate::config::ConfigError;

/// SPEC "Exit codes", as named constants.
pub mod exit {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// The operation failed (a task failed, a gate timed out, a process could not be stopped).
    pub const FAILURE: u8 = 1;
    /// Usage error or invalid stack file.
    pub const USAGE: u8 = 2;
    /// `status`: a named process is not running and ready.
    pub const NOT_READY: u8 = 3;
    /// `lock`: another owner holds it (also `start`/`stop`/… refusing while it is held).
    pub const LOCK_HELD: u8 = 2;
    /// `lock release` by a task that does not hold it.
    pub const LOCK_NOT_HOLDER: u8 = 3;
    /// `lock`: the lock file could not be locked within 5 s.
    pub const LOCK_TIMEOUT: u8 = 4;
}

/// Everything that can end a command unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stack file is missing, unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line is wrong (bad name, bad number, …).
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    /// The operation was attempted and failed.
    #[error("{message}")]
    Failed {
        message: String,
        hint: Option<String>,
        /// Shown after the headline, e.g. the last lines of a log between rulers.
        detail: Option<String>,
    },
    /// The stack-owner lock is held by someone else.
    #[error("{message}")]
    LockHeld {
        message: String,
        hint: Option<String>,
    },
    /// `lock release` by a task that does not hold the lock.
    #[error("{message}")]
    LockNotHolder { message: String },
    /// The lock file could not be locked in time.
    #[error("{message}")]
    LockTimeout { message: String },
    /// An unexpected I/O or system error, with context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// For an invalid stack file: its diagnostics end with what this
    /// command did or did not do (`nothing was changed`, …); see
    /// [`ConfigError::with_outcome`]. Any other error is unchanged.
    #[must_use]
    pub fn with_outcome(self, outcome: &str) -> Self {
        match self {
            Error::Config(c) => Error::Config(c.with_outcome(outcome)),
            other => other,
        }
    }

    /// A usage error without a hint.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: None,
        }
    }

    /// A failure without a hint or detail.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed {
            message: message.into(),
            hint: None,
            detail: None,
        }
    }

    /// The process exit code SPEC assigns to this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::USAGE,
            Error::Usage { .. } => exit::USAGE,
            Error::Failed { .. } => exit::FAILURE,
            Error::LockHeld { .. } => exit::LOCK_HELD,
            Error::LockNotHolder { .. } => exit::LOCK_NOT_HOLDER,
            Error::LockTimeout { .. } => exit::LOCK_TIMEOUT,
            Error::Other(_) => exit::FAILURE,
        }
    }

    /// Writes the error for a person: headline, hint, detail, causes.
    ///
    /// # Errors
    /// Only the writer's.
    pub fn render(&self, w: &mut dyn Write) -> std::io::Result<()> {
        match self {
            // Diagnostics are already fully rendered (file:line:col, caret, hint).
            Error::Config(ConfigError::Invalid { rendered, .. }) => {
                write!(w, "{rendered}")?;
                if !rendered.ends_with('\n') {
                    writeln!(w)?;
                }
                Ok(())
            }
            Error::Usage { message, hint }
            | Error::LockHeld { message, hint }
            | Error::Failed {
                message,
                hint,
                detail: None,
            } => {
                writeln!(w, "error: {message}")?;
                if let Some(h) = hint {
                    writeln!(w, "  (hint: {h})")?;
                }
                Ok(())
            }
            Error::Failed {
                message,
                hint,
                detail: Some(detail),
            } => {
                writeln!(w, "error: {message}")?;
                write!(w, "{detail}")?;
                if !detail.ends_with('\n') {
                    writeln!(w)?;
                }
                if let Some(h) = hint {
                    writeln!(w, "  (hint: {h})")?;
                }
                Ok(())
            }
            Error::Other(e) => {
                writeln!(w, "error: {e}")?;
                for cause in e.chain().skip(1) {
                    writeln!(w, "  caused by: {cause}")?;
                }
                Ok(())
            }
            other => writeln!(w, "error: {other}"),
        }
    }
}

/// Shorthand for results of commands.
pub type Result<T, E = Error> = std::result::Result<T, E>;
