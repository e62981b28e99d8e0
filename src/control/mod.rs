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

use std::io;
use std::path::{Path, PathBuf};

/// The longest path a unix socket address holds (`sun_path` is 108 bytes
/// with its terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// An address for the socket at `path` that fits in `sun_path`: the path
/// itself when it is short enough, else `/proc/self/fd/N/<name>` through an
/// open handle on its folder (returned: keep it until the bind or connect
/// is done). Deep checkouts (CI workspaces, home folders) easily pass 108
/// bytes, and the socket must still work there.
///
/// # Errors
/// When the folder cannot be opened.
pub(crate) fn socket_address(path: &Path) -> io::Result<(PathBuf, Option<std::fs::File>)> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return Ok((path.to_path_buf(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((path.to_path_buf(), None));
    };
    let handle = std::fs::File::open(dir)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&handle);
    Ok((
        PathBuf::from(format!("/proc/self/fd/{fd}")).join(name),
        Some(handle),
    ))
}
