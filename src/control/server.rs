//! The supervisor side: bind the socket safely and accept only our user.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

/// Binds the control socket at `path` (mode 0600).
///
/// A socket file nobody listens on (a crashed supervisor's) is removed; a
/// socket somebody answers on means another supervisor runs (the caller
/// holds the single-supervisor flock, so that would be a bug: refused); any
/// other file type at the path is not ours to delete and is refused.
///
/// # Errors
/// As above, or when binding fails.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            let (addr, _dir) = super::socket_address(path)?;
            if std::os::unix::net::UnixStream::connect(&addr).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another supervisor answers on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (move it away)",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bind with a umask that never lets the socket be reachable by others,
    // then set the mode explicitly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = super::socket_address(path).and_then(|(addr, _dir)| UnixListener::bind(addr));
    nix::sys::stat::umask(old);
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Whether the peer on `stream` runs as our effective uid (`SO_PEERCRED`).
pub fn peer_is_us(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        Ok(c) => c.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}
