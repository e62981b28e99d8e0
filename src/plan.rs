//! A validated stack plus a request → what to start and stop, in which order.
//!
//! Owns: resolving names (a process, a pool, or one pool instance
//! `worker.2`), the dependency closure, pool instance names, and levels for
//! start (and, reversed, for stop). Pure. Must not touch: I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Stack;

/// One process instance: `api`, or `worker.2` of pool `worker`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// `api` or `worker.2`.
    pub name: String,
    /// The `[service.X]` / `[task.X]` name.
    pub process: String,
    /// 1-based index in its pool.
    pub index: Option<u32>,
}

/// The instances of `process` with `replicas` members (`None`: not a pool).
pub fn instances(process: &str, replicas: Option<u32>) -> Vec<Instance> {
    match replicas {
        None => vec![Instance {
            name: process.to_string(),
            process: process.to_string(),
            index: None,
        }],
        Some(n) => (1..=n)
            .map(|i| Instance {
                name: format!("{process}.{i}"),
                process: process.to_string(),
                index: Some(i),
            })
            .collect(),
    }
}

/// Splits `worker.2` into (`worker`, Some(2)); `api` into (`api`, None).
pub fn split_instance(name: &str) -> (&str, Option<u32>) {
    if let Some((base, idx)) = name.rsplit_once('.') {
        if let Ok(i) = idx.parse::<u32>() {
            return (base, Some(i));
        }
    }
    (name, None)
}

/// A name the stack does not know, with the closest known one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub name: String,
    pub suggestion: Option<String>,
}

/// What the operator named: whole processes (or pools) and single pool members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Process names, in stack order.
    pub processes: Vec<String>,
    /// Single instances (`worker.2`) named explicitly, by process.
    pub members: BTreeMap<String, BTreeSet<u32>>,
}

impl Selection {
    /// Whether instance `inst` is selected.
    pub fn contains(&self, inst: &Instance) -> bool {
        if self.processes.contains(&inst.process) {
            return true;
        }
        match (self.members.get(&inst.process), inst.index) {
            (Some(set), Some(i)) => set.contains(&i),
            _ => false,
        }
    }
}

/// Resolves operator-given names. An empty list selects everything.
///
/// # Errors
/// Every unknown name.
pub fn select(stack: &Stack, names: &[String]) -> Result<Selection, Vec<UnknownName>> {
    if names.is_empty() {
        return Ok(Selection {
            processes: stack.processes.iter().map(|p| p.name.clone()).collect(),
            members: BTreeMap::new(),
        });
    }
    let mut sel = Selection::default();
    let mut unknown = Vec::new();
    for n in names {
        if stack.process(n).is_some() {
            if !sel.processes.contains(n) {
                sel.processes.push(n.clone());
            }
            continue;
        }
        let (base, idx) = split_instance(n);
        match (stack.process(base), idx) {
            (Some(p), Some(i)) if p.is_pool() && i >= 1 => {
                sel.members.entry(base.to_string()).or_default().insert(i);
            }
            _ => unknown.push(UnknownName {
                name: n.clone(),
                suggestion: closest(n, stack.processes.iter().map(|p| p.name.as_str())),
            }),
        }
    }
    if !unknown.is_empty() {
        return Err(unknown);
    }
    // Stack order for processes.
    let order: Vec<String> = stack.processes.iter().map(|p| p.name.clone()).collect();
    sel.processes
        .sort_by_key(|n| order.iter().position(|o| o == n));
    Ok(sel)
}

/// `names` plus everything they depend on, transitively, in stack order.
pub fn closure(stack: &Stack, names: &[String]) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = names.to_vec();
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            if let Some(p) = stack.process(&n) {
                todo.extend(p.depends_on.iter().cloned());
            }
        }
    }
    stack
        .processes
        .iter()
        .filter(|p| seen.contains(&p.name))
        .map(|p| p.name.clone())
        .collect()
}

/// Processes (of the whole stack) that depend directly on `name`.
pub fn dependents(stack: &Stack, name: &str) -> Vec<String> {
    stack
        .processes
        .iter()
        .filter(|p| p.depends_on.iter().any(|d| d == name))
        .map(|p| p.name.clone())
        .collect()
}

/// Everything that depends on `names`, directly or through others, not
/// `names` themselves, in stack order: what `stop --with-dependents`
/// stops first.
pub fn dependents_closure(stack: &Stack, names: &[String]) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = names.to_vec();
    while let Some(n) = todo.pop() {
        for d in dependents(stack, &n) {
            if !names.contains(&d) && seen.insert(d.clone()) {
                todo.push(d);
            }
        }
    }
    stack
        .processes
        .iter()
        .filter(|p| seen.contains(&p.name))
        .map(|p| p.name.clone())
        .collect()
}

/// The processes among `stopped` that `name` depends on, directly or
/// through others, in stack order.
pub fn depends_on_among(stack: &Stack, name: &str, stopped: &[String]) -> Vec<String> {
    let c = closure(stack, &[name.to_string()]);
    c.into_iter()
        .filter(|n| n != name && stopped.contains(n))
        .collect()
}

/// The closest of `candidates` to `name` by edit distance, if close enough.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        if d <= (name.len().max(c.len()) / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_instances_are_numbered_from_one() {
        let i = instances("worker", Some(3));
        assert_eq!(
            i.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["worker.1", "worker.2", "worker.3"]
        );
        assert_eq!(i[1].index, Some(2));
        assert_eq!(instances("api", None)[0].name, "api");
    }

    #[test]
    fn split_names() {
        assert_eq!(split_instance("worker.2"), ("worker", Some(2)));
        assert_eq!(split_instance("api"), ("api", None));
        assert_eq!(split_instance("a.b"), ("a.b", None));
    }

    #[test]
    fn dependents_of_a_stop_set_transitively() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stack.toml");
        std::fs::write(
            &file,
            "[task.migrate]\ncommand = \"true\"\n[service.db]\ncommand = \"true\"\n[service.api]\ncommand = \"true\"\ndepends_on = [\"db\", \"migrate\"]\n[service.worker]\ncommand = \"true\"\ndepends_on = [\"api\"]\n[service.web]\ncommand = \"true\"\n",
        )
        .unwrap();
        let stack = crate::config::load(&file).unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            dependents_closure(&stack, &names(&["db"])),
            ["api", "worker"]
        );
        assert_eq!(dependents_closure(&stack, &names(&["api"])), ["worker"]);
        assert_eq!(
            dependents_closure(&stack, &names(&["db", "api"])),
            ["worker"]
        );
        assert!(dependents_closure(&stack, &names(&["web"])).is_empty());
        assert_eq!(depends_on_among(&stack, "worker", &names(&["db"])), ["db"]);
        assert_eq!(
            depends_on_among(&stack, "worker", &names(&["db", "web"])),
            ["db"]
        );
        assert!(depends_on_among(&stack, "web", &names(&["db"])).is_empty());
    }

    #[test]
    fn suggestions() {
        let names = ["api", "worker", "web"];
        assert_eq!(
            closest("wroker", names.iter().copied()),
            Some("worker".into())
        );
        assert_eq!(closest("zzzzzz", names.iter().copied()), None);
    }
}
