//! Recording the start timeline (`crate::timeline`) as it happens, into
//! `state_dir/timeline.json`, so that `stackctl analyze` reads it with or
//! without a supervisor, and the next supervisor (a restart, an upgrade)
//! goes on adding the restarts of the same start.
//!
//! The file is the whole timeline, replaced atomically: written on every
//! change, a start of N instances would write it 4N times at O(N) each,
//! on the supervisor's one thread, and a restart would wait for it. So a
//! change marks it dirty and a writer task replaces it [`WRITE_DELAY`]
//! later with whatever it then holds (every change of a burst in one
//! write, off the restart's path); the end of a start writes it at once,
//! so the `start` that returns has its timeline on disk.
//!
//! Who says what: `Supervisor::start` opens a start with the instances it
//! is to bring up ([`Recorder::begin`]); it becomes *the* last start only
//! once one of them really begins an attempt (a `start` that finds
//! everything up replaces nothing). The orchestration says when each
//! one's dependencies were met; each unit says, as its status changes,
//! when an attempt began, spawned, became ready or failed (a later
//! attempt is a restart); the start says when it was over
//! ([`Recorder::finish`]).
//!
//! Owns: the record in memory and on disk. Must not touch: what it means
//! (`crate::timeline`), when things happen (the units, `order`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::Kind;
use crate::state::StateDir;
use crate::timeline::{self, Cause, ProcessRecord, Run, StartRecord, StartSummary, Timeline};

/// An instance a start is to bring up: its name, process, kind and the
/// processes it depends on.
pub struct Planned {
    pub name: String,
    pub process: String,
    pub kind: Kind,
    pub depends_on: Vec<String>,
}

/// How long after a change the file is replaced (with every change made
/// meanwhile).
pub const WRITE_DELAY: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Inner {
    kept: Timeline,
    /// A start begun whose instances have not begun an attempt yet.
    pending: Option<StartRecord>,
    next_id: u64,
    /// A writer task is due to replace the file.
    write_due: bool,
}

struct Shared {
    state: StateDir,
    inner: Mutex<Inner>,
}

/// The timeline of one stack.
pub struct Recorder {
    shared: Arc<Shared>,
}

impl Recorder {
    /// The recorder of `state`, going on from the timeline kept there.
    pub fn load(state: &StateDir) -> Recorder {
        let kept: Timeline = std::fs::read(state.timeline_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let next_id = kept.start.as_ref().map_or(1, |s| s.id + 1);
        Recorder {
            shared: Arc::new(Shared {
                state: state.clone(),
                inner: Mutex::new(Inner {
                    kept,
                    pending: None,
                    next_id,
                    write_due: false,
                }),
            }),
        }
    }

    /// A recorder that keeps nothing on disk (unit tests).
    #[cfg(test)]
    pub fn scratch() -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                state: StateDir::new("/nonexistent/stackctl-timeline"),
                inner: Mutex::new(Inner::default()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// A start (`op`: `start`, `restart`) of `planned` begins now; its id.
    pub fn begin(&self, op: &str, planned: Vec<Planned>) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let at_ms = timeline::now_ms();
        inner.pending = Some(StartRecord {
            id,
            op: op.to_string(),
            at_ms,
            ended_ms: None,
            processes: planned
                .into_iter()
                .map(|p| ProcessRecord {
                    name: p.name,
                    process: p.process,
                    kind: p.kind,
                    // No dependency: met when the start began.
                    deps_met_ms: p.depends_on.is_empty().then_some(at_ms),
                    depends_on: p.depends_on,
                    runs: Vec::new(),
                })
                .collect(),
        });
        id
    }

    /// The dependencies of `instance` came up.
    pub fn deps_met(&self, instance: &str) {
        let now = timeline::now_ms();
        self.update(instance, false, |p| {
            if !p.depends_on.is_empty() {
                p.deps_met_ms = Some(now);
            }
        });
    }

    /// Attempt `attempt` of `instance` began (`gate`: its readiness gate's
    /// kind; `pre_start`: it runs pre_start commands first).
    pub fn began(&self, instance: &str, attempt: u32, gate: Option<String>, pre_start: bool) {
        let now = timeline::now_ms();
        self.update(instance, true, |p| {
            let cause = if p.runs.is_empty() {
                Cause::Start
            } else {
                Cause::Restart
            };
            // An attempt of the start that is still under way (its
            // first, not ready yet) ends here.
            if p.runs.is_empty() {
                // Most instances never restart: room for one run, not four.
                p.runs.reserve_exact(1);
            }
            p.runs.push(Run {
                attempt,
                cause,
                began_ms: now,
                spawned_ms: None,
                ready_ms: None,
                failed_ms: None,
                reason: None,
                gate,
                pre_start,
            });
            const KEEP: usize = 20;
            if p.runs.len() > KEEP {
                // The start's own attempt stays; the oldest restarts go.
                p.runs.remove(1);
            }
        });
    }

    /// Its process was spawned.
    pub fn spawned(&self, instance: &str) {
        let now = timeline::now_ms();
        self.last_run(instance, |r| {
            r.spawned_ms.get_or_insert(now);
        });
    }

    /// It became ready (a task: completed).
    pub fn ready(&self, instance: &str) {
        let now = timeline::now_ms();
        self.last_run(instance, |r| {
            if r.ready_ms.is_none() && r.failed_ms.is_none() {
                r.ready_ms = Some(now);
            }
        });
    }

    /// Its attempt failed (before it was ready) for `reason`.
    pub fn failed(&self, instance: &str, reason: &str) {
        let now = timeline::now_ms();
        self.last_run(instance, |r| {
            if r.ready_ms.is_none() && r.failed_ms.is_none() {
                r.failed_ms = Some(now);
                r.reason = Some(reason.to_string());
            }
        });
    }

    /// The start `id` is over: its summary, when it started something and
    /// everything came up.
    pub fn finish(&self, id: u64) -> Option<StartSummary> {
        let mut inner = self.lock();
        if inner.pending.as_ref().is_some_and(|p| p.id == id) {
            // Nothing of it began an attempt: everything was already up.
            inner.pending = None;
            return None;
        }
        let rec = inner.kept.start.as_mut().filter(|s| s.id == id)?;
        rec.ended_ms.get_or_insert_with(timeline::now_ms);
        let summary = timeline::summary(rec);
        self.shared.write(&mut inner);
        summary
    }

    /// Changes `instance` in the last start (or in the pending one, which
    /// then becomes the last start, when `promote` and it is one of its).
    fn update(&self, instance: &str, promote: bool, f: impl FnOnce(&mut ProcessRecord)) {
        let mut inner = self.lock();
        let in_pending = inner
            .pending
            .as_ref()
            .is_some_and(|p| p.processes.iter().any(|x| x.name == instance));
        if in_pending && promote {
            inner.kept.start = inner.pending.take();
        } else if in_pending {
            if let Some(p) = inner
                .pending
                .as_mut()
                .and_then(|s| s.processes.iter_mut().find(|x| x.name == instance))
            {
                f(p);
            }
            return;
        }
        let Some(p) = inner
            .kept
            .start
            .as_mut()
            .and_then(|s| s.processes.iter_mut().find(|x| x.name == instance))
        else {
            return;
        };
        f(p);
        self.save(&mut inner);
    }

    fn last_run(&self, instance: &str, f: impl FnOnce(&mut Run)) {
        self.update(instance, false, |p| {
            if let Some(r) = p.runs.last_mut() {
                f(r);
            }
        });
    }

    /// The timeline now (the last start).
    pub fn now(&self) -> Timeline {
        self.lock().kept.clone()
    }

    /// The file is to show this change: replaced [`WRITE_DELAY`] from now
    /// by a writer task (at once with no runtime: the tests, a CLI).
    fn save(&self, inner: &mut Inner) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.shared.write(inner);
            return;
        }
        if inner.write_due {
            return;
        }
        inner.write_due = true;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(WRITE_DELAY).await;
            let mut inner = shared.lock();
            if inner.write_due {
                shared.write(&mut inner);
            }
        });
    }

    /// Writes what is unsaved now, if anything (a supervisor that ends).
    pub fn flush(&self) {
        let mut inner = self.lock();
        if inner.write_due {
            self.shared.write(&mut inner);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the file with `inner`'s timeline.
    fn write(&self, inner: &mut Inner) {
        inner.write_due = false;
        let Ok(bytes) = serde_json::to_vec(&inner.kept) else {
            return;
        };
        let path = self.state.timeline_file();
        if let Err(e) = crate::state::write_atomic_volatile(&path, &bytes, 0o600) {
            // A scratch recorder has no folder; a real one says why once.
            if path.parent().is_some_and(std::path::Path::exists) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, deps: &[&str]) -> Planned {
        Planned {
            name: name.into(),
            process: name.into(),
            kind: Kind::Service,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_start_that_starts_nothing_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = Recorder::load(&StateDir::new(dir.path()));
        let first = t.begin("start", vec![planned("api", &[]), planned("web", &["api"])]);
        t.began("api", 1, Some("http".into()), false);
        t.spawned("api");
        t.ready("api");
        t.deps_met("web");
        t.began("web", 1, None, false);
        t.ready("web");
        let s = t.finish(first).expect("a summary");
        assert_eq!(s.chain.len(), 2);
        // Everything up: a second start leaves the first as the last.
        let second = t.begin("start", vec![planned("api", &[])]);
        assert_eq!(t.finish(second), None);
        assert_eq!(t.now().start.map(|s| s.id), Some(first));
        // A crash later is a restart of the same start; kept on disk.
        t.began("api", 2, Some("http".into()), false);
        let back = Recorder::load(&StateDir::new(dir.path())).now();
        let api = &back.start.unwrap().processes[0];
        assert_eq!(api.runs.len(), 2);
        assert_eq!(api.runs[1].cause, Cause::Restart);
    }
}
