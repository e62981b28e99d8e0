//! Who a pid is: start time and boot id from `/proc`, so that a reused pid
//! is never mistaken for ours; and what it costs (RSS).
//!
//! Owns: the pid-file record ([`PidRecord`]: a plain pid file, its
//! identity beside it) and the `/proc` readings behind it. Must not touch: signalling, policy.

use std::io;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once per
/// process (it cannot change while the process runs).
///
/// # Errors
/// When `/proc` cannot be read.
pub fn boot_id() -> io::Result<String> {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id.clone());
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    Ok(BOOT_ID.get_or_init(|| id).clone())
}

/// A small file of `/proc` read whole: into a buffer sized for it, in
/// one `read(2)` and one more that finds its end (`read_to_string` asks
/// its size first, which `/proc` gives as 0, then reads 32 bytes at a
/// time: six calls for a `stat`, on every spawn and in every scan).
fn read_proc(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: i32) -> io::Result<Vec<String>> {
    let s = read_proc(&format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may itself contain ") ".
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc stat"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// A process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state (`R`, `S`, `Z`, …).
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub session: i32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`.
///
/// # Errors
/// When the process does not exist (`NotFound`) or the file is malformed.
pub fn proc_stat(pid: i32) -> io::Result<ProcStat> {
    let f = stat_fields(pid)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc stat");
    let num =
        |i: usize| -> io::Result<i64> { f.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad) };
    // After the name: state(0) ppid(1) pgrp(2) session(3) … starttime(19).
    Ok(ProcStat {
        state: f.first().and_then(|s| s.chars().next()).ok_or_else(bad)?,
        ppid: num(1)? as i32,
        pgid: num(2)? as i32,
        session: num(3)? as i32,
        start_ticks: num(19)? as u64,
    })
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Ok(s) if s.state != 'Z' && s.state != 'X')
}

fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) if p > 0 => p as u64,
        _ => 4096,
    }
}

/// How long a process that started at `start_ticks` has been running.
pub fn uptime_of(start_ticks: u64) -> Option<Duration> {
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let since_boot: f64 = up.split_whitespace().next()?.parse().ok()?;
    let started = start_ticks as f64 / clock_ticks() as f64;
    Some(Duration::from_secs_f64((since_boot - started).max(0.0)))
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Resident memory of every process in group `pgid` together, in bytes:
/// what a process really costs, its children included (an `npm start`
/// whose server is a child, a shell and its program). A sum over `/proc`
/// of the process `pgid` and each whose group is `pgid` (zombies count
/// nothing); `None` when none is left. For many groups at once, one
/// [`GroupRss::scan`].
pub fn group_rss_bytes(pgid: i32) -> Option<u64> {
    GroupRss::scan().of(pgid)
}

/// The resident memory of every process group on the host, from one pass
/// over `/proc` (a status of N processes reads `/proc` once, not N times).
#[derive(Debug, Default)]
pub struct GroupRss {
    /// Bytes by process group, of the live processes in it.
    by_group: std::collections::HashMap<i32, u64>,
    /// Each live process's group and bytes.
    by_pid: std::collections::HashMap<i32, (i32, u64)>,
}

impl GroupRss {
    /// Reads every process's group and resident size (zombies count
    /// nothing).
    pub fn scan() -> GroupRss {
        let mut g = GroupRss::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return g;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // After the name: state(0) … pgrp(2) … rss(21), in pages.
            let Ok(f) = stat_fields(pid) else { continue };
            if matches!(f.first().map(String::as_str), Some("Z" | "X")) {
                continue;
            }
            let Some(pgrp) = f.get(2).and_then(|g| g.parse::<i32>().ok()) else {
                continue;
            };
            let bytes = f.get(21).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) * page_size();
            *g.by_group.entry(pgrp).or_default() += bytes;
            g.by_pid.insert(pid, (pgrp, bytes));
        }
        g
    }

    /// The process `pgid` and each in group `pgid` together, as
    /// [`group_rss_bytes`]; `None` when none is live.
    pub fn of(&self, pgid: i32) -> Option<u64> {
        let group = self.by_group.get(&pgid).copied();
        // The process itself, when it has left its own group.
        let own = self
            .by_pid
            .get(&pgid)
            .filter(|(g, _)| *g != pgid)
            .map(|(_, b)| *b);
        match (group, own) {
            (None, None) => None,
            (g, o) => Some(g.unwrap_or(0) + o.unwrap_or(0)),
        }
    }
}

/// What a pid file holds: enough to prove that a live pid is still ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    pub pid: i32,
    /// The process group (= pid: every process leads its own session).
    pub pgid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    pub boot_id: String,
    /// The instance name (`api`, `worker.2`).
    pub process: String,
    /// The supervisor that spawned it.
    pub supervisor_pid: i32,
}

impl PidRecord {
    /// Reads the identity of a live `pid` now.
    ///
    /// # Errors
    /// When `/proc` has no such process.
    pub fn capture(pid: i32, process: &str, supervisor_pid: i32) -> io::Result<PidRecord> {
        let st = proc_stat(pid)?;
        Ok(PidRecord {
            pid,
            pgid: st.pgid,
            start_ticks: st.start_ticks,
            boot_id: boot_id()?,
            process: process.to_string(),
            supervisor_pid,
        })
    }

    /// The record of a process just spawned in a session of its own
    /// (its group is its pid) whose start time is known already (the
    /// anchor read it): no `/proc` read.
    ///
    /// # Errors
    /// When the boot id cannot be read.
    pub fn spawned(
        pid: i32,
        start_ticks: u64,
        process: &str,
        supervisor_pid: i32,
    ) -> io::Result<PidRecord> {
        Ok(PidRecord {
            pid,
            pgid: pid,
            start_ticks,
            boot_id: boot_id()?,
            process: process.to_string(),
            supervisor_pid,
        })
    }

    /// Whether this exact process (same boot, same start time) is still alive.
    pub fn is_live(&self) -> bool {
        match (boot_id(), proc_stat(self.pid)) {
            (Ok(b), Ok(st)) => {
                b == self.boot_id
                    && st.start_ticks == self.start_ticks
                    && st.state != 'Z'
                    && st.state != 'X'
            }
            _ => false,
        }
    }

    /// Writes the record beside the pid file `path`: first the identity
    /// record (`pids/<name>.id`, JSON, atomically), then the pid file
    /// itself (`pids/<name>.pid`: the pid and a newline, atomically), so
    /// that a reader who sees the new pid finds its identity already there.
    /// Old scripts (`kill $(cat api.pid)`, `pgrep -F`, monit) read the plain
    /// pid; stackctl believes it only with its identity.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut text = serde_json::to_string(self).map_err(io::Error::other)?;
        text.push('\n');
        let id = crate::state::identity_beside(path);
        crate::state::write_atomic_volatile(&id, text.as_bytes(), 0o644)?;
        crate::state::write_atomic_volatile(path, format!("{}\n", self.pid).as_bytes(), 0o644)
    }

    /// Reads the record of the pid file at `path`: the pid from it and the
    /// identity from beside it (a pid file that is itself JSON, as an older
    /// stackctl wrote it, is read as such). `Ok(None)` when there is no pid
    /// file.
    ///
    /// # Errors
    /// When a file exists but cannot be read or parsed, or the identity
    /// beside the pid is missing or names another pid: nothing is believed
    /// (or signalled) without it.
    pub fn read(path: &Path) -> io::Result<Option<PidRecord>> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        // The writer replaces the identity, then the pid: a pid that does
        // not match its identity was read between the two; once more.
        let mut tries = 0;
        loop {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let text = text.trim();
            if text.starts_with('{') {
                return serde_json::from_str(text)
                    .map(Some)
                    .map_err(|e| bad(format!("{}: not a stackctl pid file: {e}", path.display())));
            }
            let pid: i32 = text.parse().map_err(|_| {
                bad(format!(
                    "{}: not a pid file (it should hold a pid and a newline)",
                    path.display()
                ))
            })?;
            let id = crate::state::identity_beside(path);
            let rec: PidRecord = match std::fs::read_to_string(&id) {
                Ok(t) => serde_json::from_str(&t)
                    .map_err(|e| bad(format!("{}: not a stackctl identity: {e}", id.display())))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(bad(format!(
                        "{}: pid {pid} has no identity record beside it ({}); not believed",
                        path.display(),
                        id.display()
                    )))
                }
                Err(e) => return Err(e),
            };
            if rec.pid == pid {
                return Ok(Some(rec));
            }
            tries += 1;
            if tries > 1 {
                return Err(bad(format!(
                    "{}: pid {pid}, but {} is of pid {}; not believed",
                    path.display(),
                    id.display(),
                    rec.pid
                )));
            }
        }
    }

    /// Removes the pid file at `path` and the identity beside it.
    pub fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(crate::state::identity_beside(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn own_identity_is_live_and_a_changed_start_time_is_not() {
        let me = std::process::id() as i32;
        let rec = PidRecord::capture(me, "me", me).unwrap();
        assert!(rec.is_live());
        let other = PidRecord {
            start_ticks: rec.start_ticks + 1,
            ..rec.clone()
        };
        assert!(!other.is_live(), "a reused pid must not pass as ours");
        let other_boot = PidRecord {
            boot_id: "not-this-boot".into(),
            ..rec
        };
        assert!(!other_boot.is_live());
    }

    #[test]
    fn a_pid_file_holds_the_pid_and_its_identity_is_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        let id = dir.path().join("x.id");
        assert_eq!(PidRecord::read(&p).unwrap(), None);
        let me = std::process::id() as i32;
        let rec = PidRecord::capture(me, "x", me).unwrap();
        rec.write(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{me}\n"));
        let beside: PidRecord =
            serde_json::from_str(&std::fs::read_to_string(&id).unwrap()).unwrap();
        assert_eq!(beside, rec);
        assert_eq!(PidRecord::read(&p).unwrap(), Some(rec.clone()));
        // Without its identity a pid is not believed.
        std::fs::remove_file(&id).unwrap();
        let e = PidRecord::read(&p).unwrap_err().to_string();
        assert!(e.contains("no identity record"), "{e}");
        // An identity of another pid is not this pid's.
        let other = PidRecord {
            pid: me + 1,
            ..rec.clone()
        };
        std::fs::write(&id, serde_json::to_string(&other).unwrap()).unwrap();
        assert!(PidRecord::read(&p).is_err());
        // The JSON pid file of an older stackctl is still read.
        std::fs::write(&p, serde_json::to_string(&rec).unwrap() + "\n").unwrap();
        assert_eq!(PidRecord::read(&p).unwrap(), Some(rec));
        std::fs::write(&p, "garbage").unwrap();
        assert!(PidRecord::read(&p).is_err());
        PidRecord::remove(&p);
        assert!(!p.exists() && !id.exists());
    }

    #[test]
    fn a_groups_memory_counts_every_member() {
        // A group of its own: a shell and a child that holds 32 MB.
        let mut child = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "python3 -c 'import sys,time; b=bytearray(b\"x\"*(32<<20)); sys.stdout.write(\"held\\n\"); sys.stdout.flush(); time.sleep(30)'",
            ])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "held\n");
        let pgid = child.id() as i32;
        let group = group_rss_bytes(pgid).unwrap();
        let leader = rss_bytes(pgid).unwrap();
        assert!(group >= 32 << 20, "group {group}");
        assert!(group > leader, "group {group} > leader {leader}");
        // One scan answers for every group: this one, and none for a pid
        // that is not there.
        let scan = GroupRss::scan();
        assert!(scan.of(pgid).is_some_and(|b| b >= 32 << 20));
        assert_eq!(scan.of(i32::MAX), None);
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        // The child dies at once, but is reaped by another process: wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while group_rss_bytes(pgid).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(group_rss_bytes(pgid), None);
    }

    #[test]
    fn rss_and_uptime_of_self() {
        let me = std::process::id() as i32;
        assert!(rss_bytes(me).unwrap() > 0);
        let group = proc_stat(me).unwrap().pgid;
        assert!(group_rss_bytes(group).unwrap() >= rss_bytes(me).unwrap());
        // The table of every group has it too, with at least this process.
        assert!(GroupRss::scan().of(group).unwrap() >= rss_bytes(me).unwrap());
        let st = proc_stat(me).unwrap();
        assert!(uptime_of(st.start_ticks).is_some());
    }
}
