//! The dependency graph between processes: cycles and start levels.
//!
//! Owns: finding a cycle as a path, and [`start_order`]. Pure. Must not
//! touch: anything but names and `depends_on`.

use super::model::Stack;

/// Topological levels: each level's members can start in parallel once every
/// earlier level is done. Names keep file order within a level.
pub fn start_order(stack: &Stack) -> Vec<Vec<String>> {
    let edges: Vec<(String, Vec<String>)> = stack
        .processes
        .iter()
        .map(|p| (p.name.clone(), p.depends_on.clone()))
        .collect();
    levels(&edges)
}

/// Levels for `(name, depends_on)` pairs; unknown names are ignored and a
/// cycle's members are left out (validation rejects both before this).
pub(crate) fn levels(edges: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let n = edges.len();
    let index = |name: &str| edges.iter().position(|(m, _)| m == name);
    let mut level: Vec<Option<usize>> = vec![None; n];
    // Relax until stable: at most n rounds for an acyclic graph.
    for _ in 0..=n {
        let mut changed = false;
        for (i, (_, deps)) in edges.iter().enumerate() {
            if level[i].is_some() {
                continue;
            }
            let mut max = Some(0usize);
            for d in deps {
                if let Some(j) = index(d) {
                    match (level[j], max) {
                        (Some(l), Some(m)) => max = Some(m.max(l + 1)),
                        _ => max = None,
                    }
                }
            }
            if max.is_some() {
                level[i] = max;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let depth = level.iter().flatten().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); depth];
    for (i, l) in level.iter().enumerate() {
        if let Some(l) = l {
            out[*l].push(edges[i].0.clone());
        }
    }
    out
}

/// Every cycle, each once, as a path of indices `[a, b, …, a]` plus the
/// index (in `edges[from].1`) of the dependency that closes it.
pub(crate) fn cycles(edges: &[(String, Vec<String>)]) -> Vec<(Vec<usize>, usize)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let index = |name: &str| edges.iter().position(|(m, _)| m == name);
    let mut mark = vec![Mark::New; edges.len()];
    let mut found = Vec::new();
    for start in 0..edges.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency to look at).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Open;
        while let Some(top) = stack.last_mut() {
            let (node, dep_pos) = *top;
            let deps = &edges[node].1;
            if dep_pos >= deps.len() {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            }
            top.1 += 1;
            let Some(j) = index(&deps[dep_pos]) else {
                continue;
            };
            if j == node {
                continue; // self-dependency: reported on its own
            }
            match mark[j] {
                Mark::New => {
                    mark[j] = Mark::Open;
                    stack.push((j, 0));
                }
                Mark::Open => {
                    let from = stack.iter().position(|(m, _)| *m == j).unwrap_or(0);
                    let mut path: Vec<usize> = stack[from..].iter().map(|(m, _)| *m).collect();
                    path.push(j);
                    found.push((path, dep_pos));
                }
                Mark::Done => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn g(spec: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        spec.iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn levels_keep_file_order() {
        let e = g(&[
            ("migrate", &[]),
            ("api", &["migrate"]),
            ("worker-b", &["api"]),
            ("worker-a", &["api"]),
            ("web", &[]),
            ("tunnel", &["web"]),
        ]);
        assert_eq!(
            levels(&e),
            vec![
                vec!["migrate", "web"],
                vec!["api", "tunnel"],
                vec!["worker-b", "worker-a"]
            ]
        );
    }

    #[test]
    fn level_is_longest_path() {
        let e = g(&[("c", &["a", "b"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(levels(&e), vec![vec!["a"], vec!["b"], vec!["c"]]);
    }

    #[test]
    fn finds_cycle_path() {
        let e = g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        let c = cycles(&e);
        assert_eq!(c.len(), 1);
        let names: Vec<&str> = c[0].0.iter().map(|i| e[*i].0.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c", "a"]);
        assert_eq!(c[0].1, 0);
    }

    #[test]
    fn no_cycle_in_a_diamond() {
        let e = g(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
        assert!(cycles(&e).is_empty());
    }

    #[test]
    fn two_separate_cycles() {
        let e = g(&[("a", &["b"]), ("b", &["a"]), ("x", &["y"]), ("y", &["x"])]);
        assert_eq!(cycles(&e).len(), 2);
    }
}
