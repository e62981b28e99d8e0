//! The anchor's side of the stack's cgroup tree (`spawn::cgroup`): whether
//! it keeps the promise (every process in the tree), the cgroup each spawn
//! is forked into, and removing each instance's cgroup once it is empty.
//!
//! Owns: the decision at the anchor's start, withdrawing the promise, the
//! inotify watches on `cgroup.events`. Must not touch: the tree's layout
//! (`spawn::cgroup`), spawning (`spawn`), what a stop does.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::note;
use crate::spawn::cgroup::{self, Tree};
use crate::spawn::strays::{self, Mark};
use crate::state::StateDir;

pub(super) struct Cgroups {
    tree: Tree,
    record: PathBuf,
    /// Spawns go into the tree while true: false once the promise is
    /// withdrawn (the tree is then only cleaned up).
    joining: bool,
    inotify: Option<Inotify>,
    /// The instance each watch is on, and the watch of each instance.
    watches: HashMap<WatchDescriptor, String>,
    watched: HashMap<String, WatchDescriptor>,
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
        if let Err(e) = forks_into(&tree) {
            Tree::forget(&record);
            tree.prune();
            note("INFO", &format!("cannot fork into the stack's cgroup {} ({e}): strays are found by their environment", tree.base().display()));
            return None;
        }
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
            inotify,
            watches: HashMap::new(),
            watched: HashMap::new(),
        })
    }

    /// The cgroup the next spawn of `instance` is forked into (made if
    /// missing); `None` once the promise is withdrawn.
    pub(super) fn folder(&mut self, instance: &str) -> Option<OwnedFd> {
        if !self.joining {
            return None;
        }
        match self.tree.instance_dir(instance) {
            Ok(fd) => Some(fd),
            Err(e) => {
                self.withdraw(&format!("cannot make the cgroup of {instance}: {e}"));
                None
            }
        }
    }

    /// A spawn could not be forked into its cgroup: nothing ran, and the
    /// promise is withdrawn (the caller spawns it again without).
    pub(super) fn refused(&mut self, instance: &str, e: &std::io::Error) {
        self.withdraw(&format!("{instance}: {e}"));
        self.remove_if_empty(instance);
    }

    /// After a spawn into the cgroup of `instance`: it is watched, to be
    /// removed once empty.
    pub(super) fn spawned(&mut self, instance: &str) {
        self.watch(instance);
    }

    /// A process handed over by a supervisor (its anchor died): one outside
    /// the tree withdraws the promise.
    pub(super) fn adopted(&mut self, instance: &str, pid: i32) {
        if self.tree.holds(instance, pid) {
            self.watch(instance);
        } else {
            self.withdraw(&format!("{instance} (pid {pid}) is not in its cgroup"));
        }
    }

    fn watch(&mut self, instance: &str) {
        if self.watched.contains_key(instance) {
            return;
        }
        let Some(ino) = &self.inotify else {
            return;
        };
        let events = self.tree.instance_path(instance).join("cgroup.events");
        if let Ok(wd) = ino.add_watch(&events, AddWatchFlags::IN_MODIFY) {
            self.watches.insert(wd, instance.to_string());
            self.watched.insert(instance.to_string(), wd);
        }
        // Already empty (a command that ended at once): no event may come.
        if self.tree.populated(instance) == Some(false) {
            self.remove_if_empty(instance);
        }
    }

    /// Removes the cgroup of `instance` if it is empty, and forgets its
    /// watch then (the next spawn makes it anew and watches it anew).
    fn remove_if_empty(&mut self, instance: &str) {
        if self.tree.remove_if_empty(instance) {
            if let Some(wd) = self.watched.remove(instance) {
                self.watches.remove(&wd);
            }
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
            let Some(instance) = self.watches.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                // Its cgroup was removed: a later spawn watches anew.
                self.watches.remove(&ev.wd);
                if self.watched.get(&instance) == Some(&ev.wd) {
                    self.watched.remove(&instance);
                }
            } else if self.tree.populated(&instance) != Some(true) {
                self.remove_if_empty(&instance);
            }
        }
    }

    /// The anchor ends: every empty cgroup goes, the base too when all
    /// are empty (the record stays: the next anchor goes on with it).
    pub(super) fn end(&self) {
        self.tree.prune();
    }
}

/// Whether a child forked into a cgroup of `tree` lives (a cgroup of its
/// own, `.probe`, never an instance's name; removed after).
fn forks_into(tree: &Tree) -> std::io::Result<()> {
    let fd = tree.instance_dir(PROBE)?;
    let r = crate::spawn::forks_into(fd.as_fd());
    drop(fd);
    tree.remove_if_empty(PROBE);
    r
}

/// The probe's cgroup: not a valid instance name.
const PROBE: &str = ".probe";
