//! The stack's mark, and finding processes by it.
//!
//! Where the stack has a cgroup tree (`cgroup`: its record promises that
//! every process is in it), a descendant that left its process group
//! (`setsid`, a double fork) is found there, by its instance's
//! `cgroup.procs`: the cost is the members', not the host's, and clearing
//! its environment does not hide it. Elsewhere (the fallback) it is found
//! by its environment: every process of a stack carries
//! `STACKCTL_STACK_ID` (a hash of its state folder, unique on this host:
//! `StateDir::stack_id`) and `STACKCTL_PROCESS` (its instance name), and a
//! search reads the environment of every process in `/proc`; one that
//! clears its environment escapes (a documented limit).
//!
//! Owns: the mark's name and value, and the searches. Must not touch:
//! signalling (`terminate`), policy.

use std::path::Path;

use super::cgroup::Tree;
use super::identity::{is_alive, proc_stat, ProcStat};

/// The variable that marks every process of a stack.
pub const STACK_ID_VAR: &str = "STACKCTL_STACK_ID";
/// The variable that names a process's instance.
pub const PROCESS_VAR: &str = "STACKCTL_PROCESS";

/// Which marked processes to look for.
#[derive(Debug, Clone, Copy)]
pub struct Mark<'a> {
    pub stack_id: &'a str,
    /// Only these instances (`None`: every process of the stack).
    pub instances: Option<&'a [String]>,
    /// The stack's cgroup record (`StateDir::cgroup_record`): while it
    /// promises a tree, the search lists the tree.
    pub cgroups: Option<&'a Path>,
}

impl Mark<'_> {
    /// The tree to search, when the record promises one.
    pub fn tree(&self) -> Option<Tree> {
        self.cgroups.and_then(Tree::recorded)
    }
}

/// Every live process (other than this one) of `mark`, with its instance
/// name; with a tree, but those in the process groups `spare`.
pub fn marked(mark: Mark<'_>, spare: &[i32]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    match mark.tree() {
        Some(tree) => tree
            .members(mark.instances)
            .into_iter()
            .filter(|(pid, _)| {
                *pid != me
                    && proc_stat(*pid).is_ok_and(|st| {
                        st.state != 'Z' && st.state != 'X' && !spare.contains(&st.pgid)
                    })
            })
            .collect(),
        None => by_environment(mark),
    }
}

/// Every live process (other than this one) whose environment carries
/// `mark`: the `/proc` scan.
pub fn by_environment(mark: Mark<'_>) -> Vec<(i32, String)> {
    let needle = format!("{STACK_ID_VAR}={}", mark.stack_id);
    let process_prefix = format!("{PROCESS_VAR}=");
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut ours = false;
        let mut process = String::new();
        for kv in env.split(|b| *b == 0) {
            if kv == needle.as_bytes() {
                ours = true;
            } else if let Some(v) = kv.strip_prefix(process_prefix.as_bytes()) {
                process = String::from_utf8_lossy(v).into_owned();
            }
        }
        let wanted = mark.instances.is_none_or(|names| names.contains(&process));
        if ours && wanted && is_alive(pid) {
            out.push((pid, process));
        }
    }
    out
}

/// Every live process in process group `pgid`, plus every live descendant
/// of those (by parent pid), wherever their group.
pub fn group_and_descendants(pgid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all: Vec<(i32, ProcStat)> = Vec::new();
    for e in rd.flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            if let Ok(st) = proc_stat(pid) {
                if st.state != 'Z' && st.state != 'X' {
                    all.push((pid, st));
                }
            }
        }
    }
    let mut found: Vec<i32> = all
        .iter()
        .filter(|(_, st)| st.pgid == pgid)
        .map(|(p, _)| *p)
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (p, st) in &all {
            if st.ppid == parent && !found.contains(p) {
                found.push(*p);
            }
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_child_is_found_by_stack_and_by_instance() {
        let id = format!("test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(STACK_ID_VAR, &id)
            .env(PROCESS_VAR, "worker.3")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // The environment is readable once the child has exec'd.
        let found = loop {
            let f = marked(
                Mark {
                    stack_id: &id,
                    instances: None,
                    cgroups: None,
                },
                &[],
            );
            if !f.is_empty() || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let names = ["worker.3".to_string()];
        let by_name = marked(
            Mark {
                stack_id: &id,
                instances: Some(&names),
                cgroups: None,
            },
            &[],
        );
        let other = ["worker.4".to_string()];
        let not_it = marked(
            Mark {
                stack_id: &id,
                instances: Some(&other),
                cgroups: None,
            },
            &[],
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![(pid, "worker.3".to_string())]);
        assert_eq!(by_name, found);
        assert!(not_it.is_empty());
    }
}
