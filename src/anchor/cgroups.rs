//! The anchor's side of the stack's cgroup tree (`spawn::cgroup`): whether
//! it keeps the promise (every process in the tree), each child's join,
//! and removing each incarnation's cgroup once it is empty.
//!
//! Owns: the decision at the anchor's start, the complaint pipe, the
//! inotify watches on `cgroup.events`. Must not touch: the tree's layout
//! and the join itself (`spawn::cgroup`), what a stop does.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::note;
use crate::spawn::cgroup::{self, Join, Tree};
use crate::spawn::strays::{self, Mark};
use crate::state::StateDir;

pub(super) struct Cgroups {
    tree: Tree,
    record: PathBuf,
    /// Children join while true: false once the promise is withdrawn (the
    /// tree is then only cleaned up).
    joining: bool,
    /// Read end (non-blocking) and write end of the complaint pipe.
    complaints: (OwnedFd, OwnedFd),
    inotify: Option<Inotify>,
    watches: HashMap<WatchDescriptor, (String, i32)>,
}

impl Cgroups {
    /// Decides at the anchor's start whether the stack's processes go into
    /// a tree: not with `STACKCTL_CGROUP=off`; with the recorded tree,
    /// when every process in `known` (an upgrade's) is in it; with a new
    /// one only when no process of the stack runs (it would be outside):
    /// the one `/proc` scan, when there is no record yet.
    pub(super) fn start(state: &StateDir, known: &[(String, i32)]) -> Option<Cgroups> {
        let record = state.cgroup_record();
        let recorded = Tree::recorded(&record);
        if cgroup::switched_off() {
            if let Some(t) = recorded {
                t.prune();
                Tree::forget(&record);
            }
            note(
                "INFO",
                &format!(
                    "{}=off: strays are found by their environment",
                    cgroup::SWITCH_VAR
                ),
            );
            return None;
        }
        let tree = match recorded {
            Some(t) => {
                let outside = known.iter().find(|(i, p)| !t.holds(i, *p));
                if let Some((instance, pid)) = outside {
                    Tree::forget(&record);
                    note("INFO", &format!("{instance} (pid {pid}) is not in the stack's cgroup tree {}: strays are found by their environment", t.base().display()));
                    return None;
                }
                // What an anchor that died left empty goes first.
                t.prune();
                if let Err(e) = t.ensure() {
                    Tree::forget(&record);
                    note("INFO", &format!("cannot make the stack's cgroup {}: {e}; strays are found by their environment", t.base().display()));
                    return None;
                }
                t
            }
            None => {
                let stack_id = state.stack_id();
                let mark = Mark {
                    stack_id: &stack_id,
                    instances: None,
                    cgroups: None,
                };
                let outside = known
                    .first()
                    .map(|(i, p)| (*p, i.clone()))
                    .or_else(|| strays::by_environment(mark).into_iter().next());
                if let Some((pid, instance)) = outside {
                    note("INFO", &format!("{instance} (pid {pid}) runs outside a cgroup tree: strays are found by their environment until the stack is stopped"));
                    return None;
                }
                match Tree::make(&stack_id) {
                    Ok(t) => t,
                    Err(e) => {
                        note("INFO", &format!("no writable cgroup2 for the stack ({e}): strays are found by their environment"));
                        return None;
                    }
                }
            }
        };
        let complaints = match complaint_pipe() {
            Ok(p) => p,
            Err(e) => {
                Tree::forget(&record);
                note(
                    "WARN",
                    &format!("cannot make a pipe for the cgroup joins: {e}"),
                );
                return None;
            }
        };
        if let Err(e) = tree.write_record(&record) {
            note(
                "WARN",
                &format!(
                    "cannot write {}: {e}; strays are found by their environment",
                    record.display()
                ),
            );
            return None;
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        note(
            "INFO",
            &format!("every process in a cgroup under {}", tree.base().display()),
        );
        Some(Cgroups {
            tree,
            record,
            joining: true,
            complaints,
            inotify,
            watches: HashMap::new(),
        })
    }

    /// What the next spawn of `instance` needs to join its cgroup (its
    /// instance folder, kept open by the caller for the spawn); `None` once
    /// the promise is withdrawn.
    pub(super) fn folder(&mut self, instance: &str) -> Option<OwnedFd> {
        if !self.joining {
            return None;
        }
        match self.tree.instance_dir(instance) {
            Ok(fd) => Some(fd),
            Err(e) => {
                self.withdraw(&format!("cannot make the cgroup folder of {instance}: {e}"));
                None
            }
        }
    }

    /// The join of a spawn into `folder`.
    pub(super) fn join<'a>(&'a self, folder: &'a OwnedFd) -> Join {
        Join::new(folder.as_fd(), self.complaints.1.as_fd())
    }

    /// After a spawn that joined: a complaint withdraws the promise;
    /// otherwise the cgroup is watched, to be removed once empty.
    pub(super) fn spawned(&mut self, instance: &str, pid: i32) {
        let failed = cgroup::complaints(self.complaints.0.as_fd());
        if !failed.is_empty() {
            self.withdraw(&format!(
                "pid {} of {instance} could not join its cgroup",
                failed[0]
            ));
            return;
        }
        self.watch(instance, pid);
    }

    /// A process handed over by a supervisor (its anchor died): one outside
    /// the tree withdraws the promise.
    pub(super) fn adopted(&mut self, instance: &str, pid: i32) {
        if self.tree.holds(instance, pid) {
            self.watch(instance, pid);
        } else if self.joining {
            self.withdraw(&format!("{instance} (pid {pid}) is not in its cgroup"));
        }
    }

    fn watch(&mut self, instance: &str, pid: i32) {
        let Some(ino) = &self.inotify else {
            return;
        };
        let events = self.tree.incarnation(instance, pid).join("cgroup.events");
        if let Ok(wd) = ino.add_watch(&events, AddWatchFlags::IN_MODIFY) {
            self.watches.insert(wd, (instance.to_string(), pid));
        }
        // Already empty (a command that ended at once): no event may come.
        if self.tree.populated(instance, pid) == Some(false) {
            self.tree.remove_if_empty(instance, pid);
        }
    }

    fn withdraw(&mut self, why: &str) {
        if !self.joining {
            return;
        }
        self.joining = false;
        Tree::forget(&self.record);
        note(
            "WARN",
            &format!("{why}: strays are found by their environment from now on"),
        );
    }

    /// The inotify fd to poll.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(AsFd::as_fd)
    }

    /// A `cgroup.events` changed: remove each cgroup that is now empty.
    pub(super) fn on_events(&mut self) {
        let Some(ino) = &self.inotify else {
            return;
        };
        let Ok(events) = ino.read_events() else {
            return;
        };
        for ev in events {
            let Some((instance, pid)) = self.watches.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                self.watches.remove(&ev.wd);
            } else if self.tree.populated(&instance, pid) != Some(true) {
                self.tree.remove_if_empty(&instance, pid);
            }
        }
    }

    /// The anchor ends: every empty cgroup goes, the base too when all
    /// are empty (the record stays: the next anchor goes on with it).
    pub(super) fn end(&self) {
        self.tree.prune();
    }
}

fn complaint_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    super::nonblocking(&r)?;
    Ok((r, w))
}
