//! Every path under `state_dir`, and the files kept there.
//!
//! Owns: the layout (`pids/<name>.pid` with `pids/<name>.id` beside it,
//! `<name>.log`, `notify/<name>.sock`, `timeline.json`,
//! `stackctl.sock`, `anchor.sock`, `anchor.lock`, `stackctl.log`,
//! `supervisor.lock`, `keeper.log`,
//! `keeper.lock`, `keeper.trigger`), the stack id derived from the folder,
//! the modes (0700 for the folder, 0600 for the socket), and atomic writes.
//! Every path under the state folder comes from here. Must not touch:
//! policy (when to start or stop anything).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The log of stackctl itself (`stackctl.log`): not a process's.
pub const OWN_LOG: &str = "stackctl";
/// The deploy keeper's log (`keeper.log`): not a process's.
pub const KEEPER_LOG: &str = "keeper";

/// `<x>` for a file named `<x>.log` (not a rotated `<x>.log.1`).
pub fn log_name(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".log").filter(|b| !b.is_empty())
}

/// The files of one stack's state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The layout under `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Creates the folder (mode 0700 when it does not exist) and `pids/`.
    ///
    /// # Errors
    /// When either folder cannot be created.
    pub fn ensure(&self) -> io::Result<()> {
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)?;
        }
        let pids = self.pids_dir();
        if !pids.exists() {
            // Two `start`s at once may both get here: the loser's EEXIST is
            // success.
            match fs::DirBuilder::new().mode(0o700).create(&pids) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && pids.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The layout under `root`, created if needed ([`StateDir::ensure`]),
    /// with a failure put the way an operator needs to read it.
    ///
    /// # Errors
    /// When the folders cannot be created.
    pub fn prepared(root: impl Into<PathBuf>) -> Result<StateDir, crate::error::Error> {
        let state = StateDir::new(root);
        state.ensure().map_err(|e| crate::error::Error::Failed {
            message: format!(
                "cannot create the state folder {}: {e}",
                state.root().display()
            ),
            hint: Some(
                "check `state_dir` in the stack file and the permissions of its parent".into(),
            ),
            detail: None,
        })?;
        Ok(state)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A name for this stack that is unique on this host: a hash of its
    /// state folder. Every process of the stack carries it
    /// (`STACKCTL_STACK_ID`), so it must never change between versions.
    pub fn stack_id(&self) -> String {
        // FNV-1a: stable across builds and Rust versions (unlike DefaultHasher).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.root.as_os_str().as_encoded_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    pub fn pids_dir(&self) -> PathBuf {
        self.root.join("pids")
    }

    /// `pids/<process>.pid` (`process` is an instance name such as `worker.2`).
    pub fn pid_file(&self, process: &str) -> PathBuf {
        self.pids_dir().join(format!("{process}.pid"))
    }

    /// `pids/<process>.id`: the identity of the pid in `<process>.pid`
    /// (see [`identity_beside`]).
    pub fn identity_file(&self, process: &str) -> PathBuf {
        identity_beside(&self.pid_file(process))
    }

    /// `<process>.log`.
    pub fn log_file(&self, process: &str) -> PathBuf {
        self.root.join(format!("{process}.log"))
    }

    /// `<x>` for every `<x>.log` in the folder: process logs and stackctl's
    /// own ([`OWN_LOG`], [`KEEPER_LOG`]).
    pub fn log_names(&self) -> BTreeSet<String> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return BTreeSet::new();
        };
        rd.flatten()
            .filter_map(|e| log_name(e.file_name().to_str()?).map(str::to_string))
            .collect()
    }

    /// Where the `NOTIFY_SOCKET` of `process` is bound (`notify/<process>.sock`).
    pub fn notify_socket(&self, process: &str) -> PathBuf {
        self.root.join("notify").join(format!("{process}.sock"))
    }

    /// The stack's cgroup record (`spawn::cgroup`): the path of its tree,
    /// while every process of the stack is in it.
    pub fn cgroup_record(&self) -> PathBuf {
        self.root.join("cgroup")
    }

    /// Held (flock) by the stack's one anchor.
    pub fn anchor_lock(&self) -> PathBuf {
        self.root.join("anchor.lock")
    }

    /// The anchor's pid file (same format as a process pid file, with
    /// `anchor.id` beside it).
    pub fn anchor_pid(&self) -> PathBuf {
        self.root.join("anchor.pid")
    }

    /// What an anchor re-executing itself (an upgrade) leaves for its new
    /// image.
    pub fn anchor_resume(&self) -> PathBuf {
        self.root.join("anchor.resume")
    }

    /// The anchor's socket (`SOCK_SEQPACKET`, mode 0600).
    pub fn anchor_socket(&self) -> PathBuf {
        self.root.join("anchor.sock")
    }

    /// The supervisor's control socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("stackctl.sock")
    }

    /// The supervisor's own log.
    pub fn own_log(&self) -> PathBuf {
        self.log_file(OWN_LOG)
    }

    /// Held (flock) by the one running supervisor; holds its pid record.
    pub fn supervisor_lock(&self) -> PathBuf {
        self.root.join("supervisor.lock")
    }

    /// The supervisor's pid record (same format as a process pid file).
    pub fn supervisor_pid(&self) -> PathBuf {
        self.pids_dir().join("stackctl.pid")
    }

    /// The start timeline (`crate::timeline`), kept by the supervisor and
    /// read by `stackctl analyze`.
    pub fn timeline_file(&self) -> PathBuf {
        self.root.join("timeline.json")
    }

    /// Touched to trigger the deploy keeper.
    pub fn keeper_trigger(&self) -> PathBuf {
        self.root.join("keeper.trigger")
    }

    /// The deploy keeper's log.
    pub fn keeper_log(&self) -> PathBuf {
        self.log_file(KEEPER_LOG)
    }

    /// Held (flock) by the one running keeper; holds its pid.
    pub fn keeper_lock(&self) -> PathBuf {
        self.root.join("keeper.lock")
    }
}

/// The identity record beside the pid file `pid_file`: `x.pid` → `x.id`
/// (`pids/worker.2.pid` → `pids/worker.2.id`, `anchor.pid` → `anchor.id`).
pub fn identity_beside(pid_file: &Path) -> PathBuf {
    let name = pid_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = name.strip_suffix(".pid").unwrap_or(&name);
    pid_file.with_file_name(format!("{base}.id"))
}

/// A lock file held for a process's lifetime (`supervisor.lock`,
/// `keeper.lock`): an exclusive flock, released when the process exits,
/// however it exits.
#[derive(Debug)]
pub struct Held(fs::File);

impl std::os::fd::AsRawFd for Held {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Held {
    /// The open lock file (to record the holder in it).
    pub fn file(&mut self) -> &mut fs::File {
        &mut self.0
    }

    /// The lock as an fd, to keep across an `execve` (the flock belongs to
    /// the open file, so the re-executed process still holds it).
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.0.into()
    }

    /// A lock kept across an `execve` (see [`Held::into_fd`]).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Held {
        Held(fs::File::from(fd))
    }
}

/// Takes the exclusive flock on `path` (created if missing) without
/// waiting; `Ok(None)` when another process holds it.
///
/// # Errors
/// When the file cannot be opened.
pub fn try_hold(path: &Path) -> io::Result<Option<Held>> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    // fs2, not std's `File::try_lock` (newer than the MSRV).
    Ok(fs2::FileExt::try_lock_exclusive(&f)
        .is_ok()
        .then_some(Held(f)))
}

/// Whether a process holds the flock on `path` now (a missing file: no).
pub fn is_held(path: &Path) -> bool {
    match fs::File::open(path) {
        Ok(f) => fs2::FileExt::try_lock_shared(&f).is_err(),
        Err(_) => false,
    }
}

/// Waits up to `limit` until nobody holds the flock on `path`; true when
/// it is free (or there is no such file). Blocks on the lock itself in a
/// helper thread (an event, not a poll), so the wait has a deadline.
pub fn wait_released(path: &Path, limit: std::time::Duration) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return true;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if fs2::FileExt::lock_shared(&f).is_ok() {
            let _ = fs2::FileExt::unlock(&f);
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}

/// Writes `contents` to `path` atomically: a temp file in the same folder,
/// fsync, rename. Readers see the old file or the new one, never half.
///
/// # Errors
/// Any I/O error; the temp file is removed on failure.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    replace(path, contents, mode, true)
}

/// Like [`write_atomic`] without the fsyncs: readers still never see half a
/// file, but a power cut may lose it. For pid files, which a reboot makes
/// meaningless anyway (they carry the boot id), and which every spawn writes.
///
/// # Errors
/// Any I/O error; the temp file is removed on failure.
pub fn write_atomic_volatile(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    replace(path, contents, mode, false)
}

fn replace(path: &Path, contents: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        // The rename itself must reach the disk too, or a power cut can
        // bring back the old file.
        if durable {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_held_and_is_released_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        assert!(!is_held(&p));
        let held = try_hold(&p).unwrap().expect("free");
        assert!(is_held(&p));
        assert!(try_hold(&p).unwrap().is_none(), "held twice");
        assert!(!wait_released(&p, std::time::Duration::from_millis(50)));
        drop(held);
        assert!(!is_held(&p));
        assert!(wait_released(&p, std::time::Duration::from_secs(5)));
    }

    #[test]
    fn log_names_are_live_logs_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "api.log",
            "api.log.1",
            "worker.2.log",
            "stackctl.log",
            ".log",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let names: Vec<String> = StateDir::new(dir.path()).log_names().into_iter().collect();
        assert_eq!(names, ["api", "stackctl", "worker.2"]);
        assert_eq!(log_name("x.log"), Some("x"));
        assert_eq!(log_name("x.log.2"), None);
    }

    #[test]
    fn an_identity_sits_beside_its_pid_file() {
        let s = StateDir::new("/srv/shop/logs");
        assert_eq!(
            s.identity_file("worker.2"),
            PathBuf::from("/srv/shop/logs/pids/worker.2.id")
        );
        assert_eq!(
            identity_beside(&s.anchor_pid()),
            PathBuf::from("/srv/shop/logs/anchor.id")
        );
    }

    #[test]
    fn stack_ids_are_stable_and_differ_by_folder() {
        let a = StateDir::new("/srv/shop/logs").stack_id();
        assert_eq!(a, StateDir::new("/srv/shop/logs").stack_id());
        assert_ne!(a, StateDir::new("/srv/shop/logs2").stack_id());
        assert_eq!(a.len(), 16);
        // Running processes carry the value: it must never change.
        assert_eq!(StateDir::new("").stack_id(), "cbf29ce484222325");
    }
}
