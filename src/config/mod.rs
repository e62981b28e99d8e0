//! The stack file: from text to a validated [`Stack`].
//!
//! Owns: discovery (`-f`, `STACKCTL_FILE`, `./stack.toml`, parent folders),
//! parsing, validation with located diagnostics, env files and `${VAR}`
//! expansion. Must not touch: processes, sockets, tokio.

pub mod env;
pub mod model;

pub use model::*;

use std::path::{Path, PathBuf};

/// Why a stack file could not be turned into a [`Stack`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No stack file was found.
    #[error("no stack.toml found in {searched} or any parent folder")]
    NotFound { searched: PathBuf },
    /// The file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has problems; each is a located diagnostic, rendered.
    #[error("{rendered}")]
    Invalid { rendered: String, count: usize },
}

/// Finds the stack file: `explicit` (from `-f` / `STACKCTL_FILE`), else
/// `./stack.toml`, else the nearest `stack.toml` in a parent folder.
///
/// # Errors
/// [`ConfigError::NotFound`] when there is none.
pub fn discover(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|source| ConfigError::Io {
        path: PathBuf::from("."),
        source,
    })?;
    let mut dir: Option<&Path> = Some(&cwd);
    while let Some(d) = dir {
        let candidate = d.join("stack.toml");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(ConfigError::NotFound { searched: cwd })
}

/// Reads and validates the stack file at `path`.
///
/// # Errors
/// I/O errors, or every problem found in the file at once.
pub fn load(path: &Path) -> Result<Stack, ConfigError> {
    let _ = path;
    Err(ConfigError::Invalid {
        rendered: "stack file loading is not built yet".into(),
        count: 1,
    })
}
