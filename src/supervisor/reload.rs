//! What a reload changes: the difference between the stack as loaded and
//! the stack file as it is now. Pure.
//!
//! Owns: deciding, per process, whether it was added, removed, redefined
//! (restart), only resized (scale) or only retuned (its `autoscale`
//! policy: neither a restart nor a resize). Must not touch: applying it
//! (the supervisor's `reload`).

use crate::config::{ProcessSpec, Stack};

/// The difference between two versions of a stack file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Redefined: stopped and, if it was active, started again.
    pub changed: Vec<String>,
    /// Only `replicas` changed: a resize, not a restart. The new size.
    /// Not for an autoscaled pool, whose size is its autoscaler's
    /// (`replicas` is only the size it starts at).
    pub resized: Vec<(String, Option<u32>)>,
    /// Its `autoscale` section changed (added, removed, edited), and
    /// nothing that needs a restart: the autoscaler reads the new policy.
    pub retuned: Vec<String>,
}

impl Changes {
    /// What changed from `old` to `new`, in stack order.
    pub(super) fn between(old: &Stack, new: &Stack) -> Changes {
        let mut c = Changes::default();
        for p in &old.processes {
            let Some(n) = new.process(&p.name) else {
                c.removed.push(p.name.clone());
                continue;
            };
            if fingerprint(n) != fingerprint(p) {
                c.changed.push(p.name.clone());
                continue;
            }
            if n.autoscale != p.autoscale {
                c.retuned.push(p.name.clone());
            }
            if n.replicas != p.replicas && n.autoscale.is_none() {
                c.resized.push((p.name.clone(), n.replicas));
            }
        }
        c.added = new
            .processes
            .iter()
            .filter(|p| old.process(&p.name).is_none())
            .map(|p| p.name.clone())
            .collect();
        c
    }

    /// Nothing to start, stop or resize (a retuned policy is none of these).
    pub(super) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.resized.is_empty()
    }

    /// Whether process `name` loses its units (removed or redefined).
    pub(super) fn drops(&self, name: &str) -> bool {
        self.removed.iter().chain(&self.changed).any(|n| n == name)
    }
}

/// What makes two versions of a process the same, for `reload`: every
/// setting but the pool size (a changed `replicas` is a resize, not a
/// restart), `max_replicas` (a bound for `scale`, read when scaling) and
/// `autoscale` (a policy its autoscaler reads each tick) and `on_failure`
/// (the hooks read the stack as reloaded when they fire). Compared, never
/// printed: it holds env values.
fn fingerprint(p: &ProcessSpec) -> String {
    let mut q = p.clone();
    q.replicas = q.replicas.map(|_| 0);
    q.max_replicas = None;
    q.autoscale = None;
    q.on_failure = None;
    format!("{q:?}|{:?}", p.env.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes between two versions of one stack file (same folder:
    /// paths are part of a definition).
    fn diff(old: &str, new: &str) -> Changes {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        std::fs::write(&p, old).unwrap();
        let a = crate::config::load(&p).unwrap();
        std::fs::write(&p, new).unwrap();
        let b = crate::config::load(&p).unwrap();
        Changes::between(&a, &b)
    }

    const BASE: &str = r#"
[task.migrate]
command = "true"
[service.api]
command = "sleep 100"
depends_on = ["migrate"]
[service.worker]
command = "sleep 100"
replicas = 2
max_replicas = 4
"#;

    #[test]
    fn no_edit_is_no_change() {
        let c = diff(BASE, BASE);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn each_kind_of_edit_is_told_apart() {
        let new = BASE
            .replace(
                "command = \"sleep 100\"\ndepends_on",
                "command = \"sleep 200\"\ndepends_on",
            )
            .replace("replicas = 2", "replicas = 3")
            .replace("[task.migrate]\ncommand = \"true\"\n", "")
            .replace("depends_on = [\"migrate\"]\n", "")
            + "[service.web]\ncommand = \"sleep 1\"\n";
        let c = diff(BASE, &new);
        assert_eq!(c.removed, ["migrate"]);
        assert_eq!(c.changed, ["api"]);
        assert_eq!(c.resized, [("worker".to_string(), Some(3))]);
        assert_eq!(c.added, ["web"]);
        assert!(c.drops("api") && c.drops("migrate") && !c.drops("worker"));
    }

    #[test]
    fn max_replicas_alone_is_no_restart() {
        let c = diff(BASE, &BASE.replace("max_replicas = 4", "max_replicas = 8"));
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn an_autoscale_change_is_neither_a_restart_nor_a_resize() {
        let auto = |per: u32, replicas: u32| {
            BASE.replace("replicas = 2", &format!("replicas = {replicas}"))
                + &format!("[service.worker.autoscale]\ndepth = {{ file = \"d\" }}\nper_instance = {per}\n")
        };
        // Edited, and `replicas` with it: only retuned.
        let c = diff(&auto(5, 2), &auto(3, 3));
        assert_eq!(c.retuned, ["worker"]);
        assert!(c.is_empty(), "{c:?}");
        // Added and removed.
        assert_eq!(diff(BASE, &auto(5, 2)).retuned, ["worker"]);
        let c = diff(&auto(5, 2), &BASE.replace("replicas = 2", "replicas = 3"));
        assert_eq!(c.retuned, ["worker"]);
        assert_eq!(c.resized, [("worker".to_string(), Some(3))]);
        // Untouched.
        assert!(diff(&auto(5, 2), &auto(5, 2)).retuned.is_empty());
        // With a redefinition, a restart (which reads the new policy).
        let c = diff(
            &auto(5, 2),
            &auto(3, 2).replace("sleep 100\"\nreplicas", "sleep 101\"\nreplicas"),
        );
        assert_eq!(c.changed, ["worker"]);
        assert!(c.retuned.is_empty());
    }

    #[test]
    fn an_env_value_change_is_a_redefinition() {
        let a = format!("[env]\nX = \"1\"\n{BASE}");
        let b = format!("[env]\nX = \"2\"\n{BASE}");
        let c = diff(&a, &b);
        assert_eq!(c.changed, ["migrate", "api", "worker"]);
    }
}
