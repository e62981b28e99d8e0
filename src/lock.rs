//! The stack-owner lock (`stack-owner.json`): free / deploy / export.
//!
//! Owns: the flock on the sidecar `<lock_file>.lock` with its 5 s timeout,
//! the [`Owner`] enum, the [`LockRecord`] JSON, atomic replacement, and the
//! exit codes 2/3/4 (through [`Error::LockHeld`], [`Error::LockNotHolder`],
//! [`Error::LockTimeout`]). Used by `cli` (the `lock` command and
//! [`guard_mutation`] for `start`/`stop`/`restart`/`scale`/`reload`) and by
//! `keeper`; the supervisor only reads it (`StackLock::read`), before a
//! scheduled run. Must not touch: the supervisor, processes.
//!
//! Theory of operation: every read and every write of the JSON file happens
//! while this process holds an exclusive `flock` on the sidecar file (never
//! on the JSON file itself, which is replaced by rename and so changes
//! inode). Writers replace the file atomically (temp file, fsync, rename),
//! so a reader that does not take the flock (an old shell script) still sees
//! either the old record or the new one. A file that is not a valid record
//! is reported with its path and never overwritten: someone must look at it.
//!
//! Waiting for the flock does not poll: one `try_lock` and, when contended,
//! a helper thread that blocks in `flock(LOCK_EX)` while the caller waits on
//! a channel with the deadline. If the deadline passes, the caller returns
//! [`Error::LockTimeout`]; should the helper get the flock later, it finds
//! the channel closed and drops (unlocks) the file at once.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::config::Stack;
use crate::error::Error;

/// SPEC: the sidecar flock is given up on after this long (exit 4).
pub const FLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Who holds the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// Nobody: anything may change the stack.
    Free,
    /// The deploy keeper (or a person deploying by hand): the stack may be
    /// restarted, by the deploy itself.
    Deploy,
    /// A long job that must not be interrupted: `start`/`stop`/… refuse.
    Export,
}

impl Owner {
    /// The owner as written in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Free => "free",
            Owner::Deploy => "deploy",
            Owner::Export => "export",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Owner {
    type Err = Error;

    fn from_str(s: &str) -> Result<Owner, Error> {
        match s {
            "free" => Ok(Owner::Free),
            "deploy" => Ok(Owner::Deploy),
            "export" => Ok(Owner::Export),
            other => Err(Error::Usage {
                message: format!("unknown lock owner `{other}`"),
                hint: Some("the owners are `deploy` and `export` (and `free`)".into()),
            }),
        }
    }
}

/// The JSON record, exactly as SPEC shows it. A free lock has `null` task,
/// time and reason (a missing file means free too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub owner: Owner,
    #[serde(default)]
    pub task_id: Option<String>,
    /// RFC 3339 with `+00:00`, e.g. `2026-05-20T14:00:00+00:00`.
    #[serde(default)]
    pub acquired_at: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl LockRecord {
    /// The record of a free lock.
    pub fn free() -> LockRecord {
        LockRecord {
            owner: Owner::Free,
            task_id: None,
            acquired_at: None,
            reason: None,
        }
    }

    /// Whether `task_id` (of any owner) holds this lock.
    pub fn held_by(&self, task_id: &str) -> bool {
        self.owner != Owner::Free && self.task_id.as_deref() == Some(task_id)
    }

    /// "export (task farm-exp-13, since …: FARM-EXP.13 24-cell sweep)".
    pub fn describe(&self) -> String {
        if self.owner == Owner::Free {
            return "free".into();
        }
        let mut s = format!(
            "{} (task {}",
            self.owner,
            self.task_id.as_deref().unwrap_or("?")
        );
        if let Some(at) = &self.acquired_at {
            s.push_str(&format!(", since {at}"));
        }
        match self.reason.as_deref() {
            Some(r) if !r.is_empty() => s.push_str(&format!(": {r})")),
            _ => s.push(')'),
        }
        s
    }

    /// The record as one line of JSON (the file's contents).
    pub fn to_json(&self) -> String {
        // Serializing four plain fields cannot fail; fall back to a literal
        // rather than unwrap.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"owner":"free"}"#.into())
    }
}

/// The lock of one stack: the JSON file and its sidecar.
#[derive(Debug, Clone)]
pub struct StackLock {
    file: PathBuf,
    timeout: Duration,
}

/// An exclusive flock on the sidecar, held until dropped.
#[derive(Debug)]
pub struct Held<'a> {
    lock: &'a StackLock,
    _file: File,
}

impl StackLock {
    /// The lock at `file` (usually `stack.lock_file`), with SPEC's 5 s timeout.
    pub fn new(file: impl Into<PathBuf>) -> StackLock {
        StackLock {
            file: file.into(),
            timeout: FLOCK_TIMEOUT,
        }
    }

    /// The lock of a stack.
    pub fn of(stack: &Stack) -> StackLock {
        StackLock::new(&stack.lock_file)
    }

    /// The JSON file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// `<lock_file>.lock`, the file that is flocked.
    pub fn sidecar(&self) -> PathBuf {
        let mut s = self.file.clone().into_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the exclusive flock on the sidecar, waiting at most 5 s.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] (exit 4) after 5 s; [`Error::Failed`] when the
    /// folder or sidecar cannot be created or opened.
    pub fn hold(&self) -> Result<Held<'_>, Error> {
        let sidecar = self.sidecar();
        if let Some(dir) = sidecar.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| io_failure("create the folder of", dir, &e))?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&sidecar)
            .map_err(|e| io_failure("open the lock sidecar", &sidecar, &e))?;
        match file.try_lock_exclusive() {
            Ok(()) => {
                return Ok(Held {
                    lock: self,
                    _file: file,
                })
            }
            Err(e) if is_contended(&e) => {}
            Err(e) => return Err(io_failure("flock", &sidecar, &e)),
        }
        let (tx, rx) = mpsc::sync_channel::<io::Result<File>>(1);
        std::thread::Builder::new()
            .name("lock-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let r = file.lock_exclusive().map(|()| file);
                // When the waiter has given up, the send fails and the file
                // (and with it the flock) is dropped here.
                let _ = tx.send(r);
            })
            .map_err(|e| io_failure("start a thread to wait for", &sidecar, &e))?;
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(file)) => Ok(Held {
                lock: self,
                _file: file,
            }),
            Ok(Err(e)) => Err(io_failure("flock", &sidecar, &e)),
            Err(_) => Err(Error::LockTimeout {
                message: format!(
                    "could not lock {} within {}s: another stackctl (or script) holds its flock \
                     (`fuser -v {}` shows which process; try again once it is done)",
                    sidecar.display(),
                    self.timeout.as_secs_f32(),
                    sidecar.display()
                ),
            }),
        }
    }

    /// Reads the record under the flock.
    ///
    /// # Errors
    /// Timeout (4), or a corrupt or unreadable file (1).
    pub fn read(&self) -> Result<LockRecord, Error> {
        let held = self.hold()?;
        held.read()
    }

    /// Takes the lock for `owner`/`task_id`. Idempotent for the same owner
    /// and task id (the record, with its first `acquired_at`, is kept).
    /// Returns the record now in the file.
    ///
    /// # Errors
    /// [`Error::LockHeld`] (2) while someone else holds it; `owner` = free
    /// is a usage error (2); timeout (4); a corrupt file (1, left as is).
    pub fn acquire(
        &self,
        owner: Owner,
        task_id: &str,
        reason: Option<&str>,
    ) -> Result<LockRecord, Error> {
        if owner == Owner::Free {
            return Err(Error::Usage {
                message: "`free` cannot be acquired".into(),
                hint: Some("to free the lock, `stackctl lock release TASK_ID`".into()),
            });
        }
        if task_id.trim().is_empty() {
            return Err(Error::usage("the task id cannot be empty"));
        }
        let held = self.hold()?;
        let current = held.read()?;
        if current.owner == owner && current.task_id.as_deref() == Some(task_id) {
            return Ok(current);
        }
        if current.owner != Owner::Free {
            return Err(Error::LockHeld {
                message: format!(
                    "the stack is held by {}; cannot acquire it for {owner} (task {task_id})",
                    current.describe()
                ),
                hint: Some(format!(
                    "wait until task {} runs `stackctl lock release {}`",
                    current.task_id.as_deref().unwrap_or("?"),
                    current.task_id.as_deref().unwrap_or("TASK_ID")
                )),
            });
        }
        let record = LockRecord {
            owner,
            task_id: Some(task_id.to_string()),
            acquired_at: Some(now_rfc3339()),
            reason: reason.map(str::to_string),
        };
        held.write(&record)?;
        Ok(record)
    }

    /// Frees the lock held by `task_id`.
    ///
    /// # Errors
    /// [`Error::LockNotHolder`] (3) when `task_id` does not hold it (also
    /// when it is free); timeout (4); a corrupt file (1, left as is).
    pub fn release(&self, task_id: &str) -> Result<LockRecord, Error> {
        let held = self.hold()?;
        let current = held.read()?;
        if !current.held_by(task_id) {
            let message = if current.owner == Owner::Free {
                format!("task {task_id} does not hold the lock: it is free")
            } else {
                format!(
                    "task {task_id} does not hold the lock: it is held by {}",
                    current.describe()
                )
            };
            return Err(Error::LockNotHolder { message });
        }
        held.write(&LockRecord::free())?;
        Ok(current)
    }
}

impl Held<'_> {
    /// The record (free when the file is missing).
    ///
    /// # Errors
    /// A file that cannot be read or is not a lock record (1), with its
    /// path, what is wrong and what to do.
    pub fn read(&self) -> Result<LockRecord, Error> {
        let path = &self.lock.file;
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockRecord::free()),
            Err(e) => {
                return Err(Error::Failed {
                    message: format!("cannot read the stack-owner lock {}: {e}", path.display()),
                    hint: Some(
                        "check the file's owner and permissions; stackctl will not replace it"
                            .into(),
                    ),
                    detail: None,
                })
            }
        };
        parse_record(&text).map_err(|what| corrupt(path, &what))
    }

    /// Replaces the record atomically.
    ///
    /// # Errors
    /// Any I/O error (1).
    pub fn write(&self, record: &LockRecord) -> Result<(), Error> {
        let mut json = record.to_json();
        json.push('\n');
        crate::state::write_atomic(&self.lock.file, json.as_bytes(), 0o644)
            .map_err(|e| io_failure("write the stack-owner lock", &self.lock.file, &e))
    }
}

/// Refuses a change to the stack (`start`, `stop`, `restart`, `scale`,
/// `reload`) while an owner other than `free` or `deploy` holds the lock,
/// unless `force`. `what` names the command, for the message.
///
/// # Errors
/// [`Error::LockHeld`] (2) naming the holder's task and reason and hinting
/// `--force`; timeout (4); a corrupt lock file (1, hinting `--force`).
pub fn guard_mutation(stack: &Stack, force: bool, what: &str) -> Result<(), Error> {
    if force {
        return Ok(());
    }
    let record = match StackLock::of(stack).read() {
        Ok(r) => r,
        Err(Error::Failed {
            message,
            hint,
            detail,
        }) => {
            return Err(Error::Failed {
                message: format!("refusing to {what}: {message}"),
                hint: Some(format!(
                    "{}; or `stackctl {what} --force` to ignore the lock",
                    hint.unwrap_or_default()
                )),
                detail,
            })
        }
        Err(e) => return Err(e),
    };
    match record.owner {
        Owner::Free | Owner::Deploy => Ok(()),
        Owner::Export => Err(Error::LockHeld {
            message: format!(
                "refusing to {what}: the stack is held by {}",
                record.describe()
            ),
            hint: Some(format!(
                "wait for task {} to release it, or `stackctl {what} --force` to interrupt it",
                record.task_id.as_deref().unwrap_or("?")
            )),
        }),
    }
}

/// Now as RFC 3339 in UTC with `+00:00`, to the second.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 in UTC with `+00:00`, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    let z = humantime::format_rfc3339_seconds(t).to_string();
    match z.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => z,
    }
}

fn parse_record(text: &str) -> Result<LockRecord, String> {
    if text.trim().is_empty() {
        return Err("the file is empty".into());
    }
    let r: LockRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if r.owner != Owner::Free && r.task_id.as_deref().is_none_or(|t| t.is_empty()) {
        return Err(format!("owner `{}` has no task_id", r.owner));
    }
    Ok(r)
}

fn corrupt(path: &Path, what: &str) -> Error {
    Error::Failed {
        message: format!(
            "the stack-owner lock {} is not a valid lock record: {what}",
            path.display()
        ),
        hint: Some(format!(
            "stackctl leaves it as it is. Look at it: if a task still holds the stack, \
             restore its record ({{\"owner\": \"export\", \"task_id\": …}}); if none does, \
             remove it (`rm {}`), since a missing file means free",
            path.display()
        )),
        detail: None,
    }
}

fn io_failure(what: &str, path: &Path, e: &io::Error) -> Error {
    Error::failed(format!("cannot {what} {}: {e}", path.display()))
}

fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tmp() -> (tempfile::TempDir, StackLock) {
        let d = tempfile::tempdir().unwrap();
        let l = StackLock::new(d.path().join("state/stack-owner.json"));
        (d, l)
    }

    #[test]
    fn missing_is_free_and_acquire_is_idempotent() {
        let (_d, l) = tmp();
        assert_eq!(l.read().unwrap(), LockRecord::free());
        let a = l.acquire(Owner::Export, "t1", Some("why")).unwrap();
        let b = l.acquire(Owner::Export, "t1", Some("other")).unwrap();
        assert_eq!(a, b);
        assert!(a.acquired_at.as_deref().unwrap().ends_with("+00:00"));
        assert!(matches!(
            l.acquire(Owner::Deploy, "t2", None),
            Err(Error::LockHeld { .. })
        ));
        assert!(matches!(
            l.acquire(Owner::Export, "t2", None),
            Err(Error::LockHeld { .. })
        ));
        assert!(matches!(l.release("t2"), Err(Error::LockNotHolder { .. })));
        l.release("t1").unwrap();
        assert_eq!(l.read().unwrap().owner, Owner::Free);
        assert!(matches!(l.release("t1"), Err(Error::LockNotHolder { .. })));
    }

    #[test]
    fn corrupt_is_reported_and_kept() {
        let (_d, l) = tmp();
        fs::create_dir_all(l.path().parent().unwrap()).unwrap();
        fs::write(l.path(), "{not json").unwrap();
        let e = l.acquire(Owner::Deploy, "k", None).unwrap_err();
        assert!(e.to_string().contains("not a valid lock record"), "{e}");
        assert_eq!(fs::read_to_string(l.path()).unwrap(), "{not json");
        fs::write(l.path(), r#"{"owner":"export"}"#).unwrap();
        assert!(l.read().unwrap_err().to_string().contains("no task_id"));
    }

    #[test]
    fn flock_timeout() {
        let (_d, mut l) = tmp();
        l.timeout = Duration::from_millis(200);
        let other = StackLock::new(l.path());
        let held = other.hold().unwrap();
        assert!(matches!(l.read(), Err(Error::LockTimeout { .. })));
        drop(held);
        assert_eq!(l.read().unwrap().owner, Owner::Free);
    }

    #[test]
    fn python_style_free_record_reads() {
        let r = parse_record(
            r#"{"owner": "free", "task_id": null, "acquired_at": null, "reason": null}"#,
        )
        .unwrap();
        assert_eq!(r, LockRecord::free());
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    }
}
