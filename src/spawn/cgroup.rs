//! The stack's cgroup tree (cgroup v2), where the host lets stackctl make
//! one: every incarnation of an instance in a cgroup of its own,
//! `<base>/<instance>/<leader pid>`, so that what it left behind is listed
//! by the kernel (`cgroup.procs`) and killed in one write (`cgroup.kill`)
//! — in O(members), whatever else runs on the host, and whatever the
//! process did to its session or its environment.
//!
//! Theory of operation. The anchor makes the tree (`make`) under its own
//! cgroup, `<cgroup2 mount><own cgroup>/stackctl-<stack id>`, and writes
//! its path to the record (`state_dir/cgroup`). The record is a promise:
//! while it exists, every process of the stack is in the tree, so that a
//! search there is complete. An anchor that cannot keep the promise (no
//! writable cgroup2, `STACKCTL_CGROUP=off`, processes of an earlier run
//! outside the tree, a spawn whose join failed) removes the record first,
//! and every search falls back to the `/proc` scan of [`super::strays`].
//! The child joins its cgroup itself, between `fork` and `exec`
//! ([`join_in_child`]: `mkdirat` of its own pid under its instance's
//! folder, then `0` into its `cgroup.procs`), so that nothing it forks can
//! be outside; a child that cannot join says so on the complaint pipe the
//! anchor reads right after the spawn. An incarnation's cgroup is removed
//! once it is empty: the anchor watches its `cgroup.events` (inotify) and
//! removes it, and its instance's folder with it when that was the last;
//! [`Tree::prune`] removes what an anchor that died left empty.
//!
//! Owns: finding the cgroup2 mount and this process's cgroup, the tree's
//! layout and record, the child-side join, listing members, `cgroup.kill`,
//! removing empty cgroups. Must not touch: when to stop or what a stop
//! does (`terminate`), the anchor's loop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Set to `off` in the environment of `stackctl start` (the anchor's) to
/// keep the stack out of cgroups: stops then find strays by the `/proc`
/// scan alone.
pub const SWITCH_VAR: &str = "STACKCTL_CGROUP";

/// Whether the environment turned cgroups off.
pub fn switched_off() -> bool {
    std::env::var(SWITCH_VAR).is_ok_and(|v| v == "off")
}

/// A stack's tree: `<base>/<instance>/<pgid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    base: PathBuf,
}

impl Tree {
    /// The tree the record at `record` promises, if there is one. Its base
    /// folder may be missing (an anchor removed it once it was empty): no
    /// process of the stack exists then.
    pub fn recorded(record: &Path) -> Option<Tree> {
        let text = std::fs::read_to_string(record).ok()?;
        let base = PathBuf::from(text.trim_end_matches('\n'));
        base.is_absolute().then_some(Tree { base })
    }

    /// The tree for stack `stack_id` under this process's own cgroup, its
    /// base folder made.
    ///
    /// # Errors
    /// No cgroup2 mount, this process's cgroup not under it, or the folder
    /// cannot be made (read-only, no permission).
    pub fn make(stack_id: &str) -> io::Result<Tree> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let base = base_for(&mountinfo, &own, stack_id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 hierarchy holds this process",
            )
        })?;
        let tree = Tree { base };
        tree.ensure()?;
        Ok(tree)
    }

    /// Makes the base folder if it is missing.
    ///
    /// # Errors
    /// When it cannot be made.
    pub fn ensure(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.base) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Writes the record (the promise) at `record`.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_record(&self, record: &Path) -> io::Result<()> {
        let text = format!("{}\n", self.base.display());
        crate::state::write_atomic_volatile(record, text.as_bytes(), 0o600)
    }

    /// Withdraws the promise: searches go back to the `/proc` scan.
    pub fn forget(record: &Path) {
        let _ = std::fs::remove_file(record);
    }

    fn instance_path(&self, instance: &str) -> PathBuf {
        self.base.join(instance)
    }

    /// The cgroup of the incarnation whose leader is `pgid`.
    pub fn incarnation(&self, instance: &str, pgid: i32) -> PathBuf {
        self.instance_path(instance).join(pgid.to_string())
    }

    /// The folder of `instance`, made if missing and opened, for a child to
    /// join (see [`join_in_child`]).
    ///
    /// # Errors
    /// When it cannot be made or opened.
    pub fn instance_dir(&self, instance: &str) -> io::Result<OwnedFd> {
        let path = self.instance_path(instance);
        match std::fs::create_dir(&path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let dir = std::fs::File::open(&path)?;
        Ok(OwnedFd::from(dir))
    }

    /// Every process in the incarnations of `instances` (all, with
    /// `None`) but those whose leader is in `spare`, with its instance.
    /// Empty incarnations found on the way are removed.
    pub fn members(&self, instances: Option<&[String]>, spare: &[i32]) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        for (instance, pgid, path) in self.incarnations(instances) {
            if spare.contains(&pgid) {
                continue;
            }
            let pids = procs(&path);
            if pids.is_empty() {
                let _ = std::fs::remove_dir(&path);
            }
            out.extend(pids.into_iter().map(|p| (p, instance.clone())));
        }
        out
    }

    /// Whether `pid` is in the cgroup of its own incarnation
    /// (`instance`/`pid`).
    pub fn holds(&self, instance: &str, pid: i32) -> bool {
        procs(&self.incarnation(instance, pid)).contains(&pid)
    }

    /// Kills every process of every incarnation of `instances` (all, with
    /// `None`) but those whose leader is in `spare`, at once
    /// (`cgroup.kill`, Linux 5.14). False when the kernel has no
    /// `cgroup.kill`.
    pub fn kill(&self, instances: Option<&[String]>, spare: &[i32]) -> bool {
        let mut all = true;
        for (_, pgid, path) in self.incarnations(instances) {
            if !spare.contains(&pgid) {
                all &= std::fs::write(path.join("cgroup.kill"), b"1").is_ok();
            }
        }
        all
    }

    /// Whether the incarnation of `pgid` still holds a live process
    /// (`None`: it has no cgroup).
    pub fn populated(&self, instance: &str, pgid: i32) -> Option<bool> {
        let events =
            std::fs::read_to_string(self.incarnation(instance, pgid).join("cgroup.events")).ok()?;
        Some(populated(&events))
    }

    /// Removes the incarnation's cgroup if it is empty, and its instance's
    /// folder if that was the last.
    pub fn remove_if_empty(&self, instance: &str, pgid: i32) {
        if std::fs::remove_dir(self.incarnation(instance, pgid)).is_ok() {
            let _ = std::fs::remove_dir(self.instance_path(instance));
        }
    }

    /// Removes every empty cgroup of the tree, the base too when all are
    /// gone (what an anchor that died left, or the last one's end).
    pub fn prune(&self) {
        for (_, _, path) in self.incarnations(None) {
            let _ = std::fs::remove_dir(path);
        }
        for dir in subdirs(&self.base) {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(&self.base);
    }

    /// `(instance, pgid, path)` of every incarnation of `instances`.
    fn incarnations(&self, instances: Option<&[String]>) -> Vec<(String, i32, PathBuf)> {
        let dirs: Vec<PathBuf> = match instances {
            Some(names) => names.iter().map(|n| self.instance_path(n)).collect(),
            None => subdirs(&self.base),
        };
        let mut out = Vec::new();
        for dir in dirs {
            let Some(instance) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else {
                continue;
            };
            for inc in subdirs(&dir) {
                if let Some(pgid) = inc
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<i32>().ok())
                {
                    out.push((instance.clone(), pgid, inc));
                }
            }
        }
        out
    }
}

/// The base of stack `stack_id`'s tree: `<mount><own cgroup>/stackctl-<id>`,
/// from `/proc/self/mountinfo` and `/proc/self/cgroup`; `None` without a
/// cgroup2 mount that holds this process's cgroup. Pure.
fn base_for(mountinfo: &str, own_cgroup: &str, stack_id: &str) -> Option<PathBuf> {
    let own = own_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim_end();
    // A process whose cgroup was removed reads "… (deleted)".
    if own.ends_with(" (deleted)") {
        return None;
    }
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let mut f = left.split_whitespace();
        let root = f.nth(3)?;
        let mount = f.next()?;
        // The mount shows the hierarchy from `root` down.
        let rel = if root == "/" {
            own
        } else {
            own.strip_prefix(root)?
        };
        let rel = rel.trim_start_matches('/');
        let mut base = PathBuf::from(unescape(mount));
        if !rel.is_empty() {
            base.push(rel);
        }
        base.push(format!("stackctl-{stack_id}"));
        Some(base)
    })
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a `cgroup.events` text says `populated 1`. Pure.
fn populated(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "populated 1")
}

/// The pids in a cgroup's `cgroup.procs` (none when it is gone).
fn procs(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// What a child needs to join its cgroup: its instance's folder, and the
/// pipe to complain on when it cannot.
#[derive(Debug, Clone, Copy)]
pub struct Join {
    pub dir: RawFd,
    pub complaint: RawFd,
}

impl Join {
    pub fn new(dir: BorrowedFd<'_>, complaint: BorrowedFd<'_>) -> Join {
        Join {
            dir: dir.as_raw_fd(),
            complaint: complaint.as_raw_fd(),
        }
    }
}

/// Joins this (just forked) process to `<dir>/<its pid>`: `mkdirat`, then
/// `0` into its `cgroup.procs`. On failure its pid goes to the complaint
/// pipe and the spawn goes on outside the tree (the anchor then withdraws
/// the promise). Async-signal-safe: system calls on a stack buffer, no
/// allocation, no lock.
#[allow(unsafe_code)]
pub fn join_in_child(join: Join) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut path = [0u8; 40];
    let digits = write_digits(&mut path, pid);
    // SAFETY: `path` is NUL-terminated after the digits (the buffer is
    // zeroed and the digits fill at most 10 bytes); `join.dir` is an open
    // directory fd inherited from the parent.
    // EEXIST is fine: an empty cgroup left by an earlier process of the
    // same pid; anything else shows in the open or the write.
    unsafe { libc::mkdirat(join.dir, path.as_ptr().cast(), 0o755) };
    let suffix = b"/cgroup.procs";
    path[digits..digits + suffix.len()].copy_from_slice(suffix);
    // SAFETY: as above; the path still ends in NUL (40 > 10 + 13).
    let fd = unsafe {
        libc::openat(
            join.dir,
            path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    let joined = fd >= 0 && {
        // SAFETY: `fd` was just opened; one byte from a static buffer.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        n == 1
    };
    if !joined {
        let bytes = pid.to_ne_bytes();
        // SAFETY: a 4-byte write from a stack buffer to an inherited pipe.
        unsafe { libc::write(join.complaint, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// Writes `n`'s decimal digits at the start of `buf`; their count.
fn write_digits(buf: &mut [u8], n: i32) -> usize {
    let mut tmp = [0u8; 10];
    let mut v = n.unsigned_abs();
    let mut len = 0;
    loop {
        tmp[len] = b'0' + (v % 10) as u8;
        v /= 10;
        len += 1;
        if v == 0 || len == tmp.len() {
            break;
        }
    }
    for (i, d) in tmp[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    len
}

/// Reads the pids of children that could not join (non-blocking).
pub fn complaints(read_end: BorrowedFd<'_>) -> Vec<i32> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = nix::unistd::read(read_end.as_raw_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        out.extend(
            buf[..n]
                .chunks_exact(4)
                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
        );
        if n < buf.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_under_this_process_s_own_cgroup_in_the_cgroup2_mount() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let pure = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let bound = "29 23 0:26 /user.slice /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                hybrid,
                "4:memory:/x\n0::/\n",
                Some("/sys/fs/cgroup/unified/stackctl-ab"),
            ),
            (
                pure,
                "0::/user.slice/user-1000.slice/session-2.scope\n",
                Some("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/stackctl-ab"),
            ),
            (
                bound,
                "0::/user.slice/app\n",
                Some("/mnt/my cg/app/stackctl-ab"),
            ),
            (bound, "0::/system.slice/x\n", None),
            (pure, "1:name=systemd:/\n", None),
            (
                "35 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
                "0::/\n",
                None,
            ),
            (pure, "0::/gone (deleted)\n", None),
        ];
        for (mi, own, want) in cases {
            assert_eq!(
                base_for(mi, own, "ab"),
                want.map(PathBuf::from),
                "{mi} {own}"
            );
        }
    }

    #[test]
    fn populated_reads_the_events_file() {
        assert!(populated("populated 1\nfrozen 0\n"));
        assert!(!populated("populated 0\nfrozen 0\n"));
        assert!(!populated(""));
    }

    #[test]
    fn digits_are_written_in_order() {
        let mut b = [0u8; 12];
        for (n, s) in [
            (0, "0"),
            (7, "7"),
            (4194304, "4194304"),
            (i32::MAX, "2147483647"),
        ] {
            b.fill(0);
            let len = write_digits(&mut b, n);
            assert_eq!(&b[..len], s.as_bytes());
        }
    }

    #[test]
    fn a_record_is_read_back_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("cgroup");
        assert_eq!(Tree::recorded(&record), None);
        let tree = Tree {
            base: PathBuf::from("/sys/fs/cgroup/x/stackctl-1"),
        };
        tree.write_record(&record).unwrap();
        assert_eq!(Tree::recorded(&record), Some(tree));
        Tree::forget(&record);
        assert_eq!(Tree::recorded(&record), None);
        std::fs::write(&record, "relative/path\n").unwrap();
        assert_eq!(Tree::recorded(&record), None);
    }
}
