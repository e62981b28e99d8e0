//! The stack's cgroup tree (cgroup v2), where the host lets stackctl make
//! one: every process of an instance in a cgroup of its own,
//! `<base>/<instance>`, so that what it left behind is listed by the
//! kernel (`cgroup.procs`) and killed from that list — in
//! O(members), whatever else runs on the host, and whatever the process
//! did to its session or its environment.
//!
//! Theory of operation. The anchor makes the tree (`make`) under its own
//! cgroup, `<cgroup2 mount><own cgroup>/stackctl-<stack id>`, and writes
//! its path to the record (`state_dir/cgroup`). The record is a promise:
//! while it exists, every process of the stack is in the tree, so that a
//! search there is complete. An anchor that cannot keep the promise (no
//! writable cgroup2, `STACKCTL_CGROUP=off`, processes of an earlier run
//! outside the tree, a spawn the kernel would not fork into its cgroup)
//! removes the record first, and every search falls back to the `/proc`
//! scan of [`super::strays`]. A child is forked straight into its
//! instance's cgroup (`super::into`: `clone3(CLONE_INTO_CGROUP)`, so that
//! nothing it forks is ever outside, and without a migration's wait). An
//! instance's cgroup is removed once it is empty: the anchor watches its
//! `cgroup.events` (inotify); [`Tree::prune`] removes what an anchor that
//! died left empty.
//!
//! The incarnations of an instance share its cgroup: during an
//! overlapping restart (`listen`) a search spares the serving one by its
//! process group, and then nothing is killed by cgroup. `cgroup.kill` is
//! never used (see [`Tree::kill`]).
//!
//! Owns: finding the cgroup2 mount and this process's cgroup, the tree's
//! layout and record, listing members, killing them, removing empty
//! cgroups. Must not touch: when to stop or what a stop does
//! (`terminate`), the anchor's loop, spawning (`into`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// How many times [`Tree::kill`] lists a cgroup again for what forked
/// while it killed (a stop's last search catches anything later).
const KILL_ROUNDS: usize = 4;

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

    /// The cgroup of `instance`.
    pub fn instance_path(&self, instance: &str) -> PathBuf {
        self.base.join(instance)
    }

    /// The cgroup of `instance`, made if missing and opened, for a child to
    /// be forked into.
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

    /// Every process in the cgroups of `instances` (all, with `None`),
    /// with its instance. (An empty cgroup is left to the anchor, which
    /// may be about to fork into it.)
    pub fn members(&self, instances: Option<&[String]>) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        for (instance, path) in self.cgroups(instances) {
            let pids = procs(&path);
            out.extend(pids.into_iter().map(|p| (p, instance.clone())));
        }
        out
    }

    /// Whether `pid` is in the cgroup of `instance`.
    pub fn holds(&self, instance: &str, pid: i32) -> bool {
        procs(&self.instance_path(instance)).contains(&pid)
    }

    /// Sends `SIGKILL` to every process in the cgroups of `instances` (all,
    /// with `None`), listing them again until a listing finds none not
    /// yet killed (what forked meanwhile), at most a few times.
    ///
    /// Not `cgroup.kill`: after one, this kernel kills every child forked
    /// into that cgroup with `CLONE_INTO_CGROUP` at birth (it compares the
    /// cgroup's kill count with the parent's), so the next incarnation of
    /// the instance would die at once.
    pub fn kill(&self, instances: Option<&[String]>) {
        for (_, path) in self.cgroups(instances) {
            let mut killed: Vec<i32> = Vec::new();
            for _ in 0..KILL_ROUNDS {
                let fresh: Vec<i32> = procs(&path)
                    .into_iter()
                    .filter(|p| !killed.contains(p))
                    .collect();
                if fresh.is_empty() {
                    break;
                }
                for pid in fresh {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    killed.push(pid);
                }
            }
        }
    }

    /// Whether the cgroup of `instance` still holds a live process (`None`:
    /// it has none).
    pub fn populated(&self, instance: &str) -> Option<bool> {
        let events =
            std::fs::read_to_string(self.instance_path(instance).join("cgroup.events")).ok()?;
        Some(populated(&events))
    }

    /// Removes the cgroup of `instance` if it is empty; whether it did.
    pub fn remove_if_empty(&self, instance: &str) -> bool {
        std::fs::remove_dir(self.instance_path(instance)).is_ok()
    }

    /// Removes every empty cgroup of the tree, the base too when all are
    /// gone (what an anchor that died left, or the last one's end).
    pub fn prune(&self) {
        for dir in subdirs(&self.base) {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(&self.base);
    }

    /// `(instance, path)` of the cgroups of `instances` (all that exist,
    /// with `None`).
    fn cgroups(&self, instances: Option<&[String]>) -> Vec<(String, PathBuf)> {
        match instances {
            Some(names) => names
                .iter()
                .map(|n| (n.clone(), self.instance_path(n)))
                .collect(),
            None => subdirs(&self.base)
                .into_iter()
                .filter_map(|d| {
                    let name = d.file_name()?.to_str()?.to_string();
                    Some((name, d))
                })
                .collect(),
        }
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
