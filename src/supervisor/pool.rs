//! Resizing pools: `scale` and `start --scale`.
//!
//! Owns: reading a size request (`N`, `+K`, `-K`, and `auto` for an
//! autoscaled pool), its bounds, growing (new members started with their
//! dependencies) and shrinking (the highest members stopped gracefully,
//! then forgotten). The autoscaler resizes through the same two paths. A
//! manual size for an autoscaled pool is a temporary override (see
//! `autoscale`). Must not touch: the size itself (the registry's).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ProgressTx, Supervisor};
use crate::config::{Kind, ProcessSpec, Stack};
use crate::error::Error;
use crate::plan::{self, Selection};

/// The sanity bound of a pool without `max_replicas`.
pub(super) const MAX_POOL: u32 = 1000;

impl Supervisor {
    /// Resizes pool `name` to `count` (`N`, `+K`, `-K`). An autoscaled
    /// pool holds that size for its `manual_hold`, then autoscales again;
    /// `auto` resumes autoscaling at once.
    ///
    /// # Errors
    /// Unknown name, a task or not a pool, a size out of bounds, `auto` for
    /// a pool that is not autoscaled (2); a new member that failed to
    /// start, a member that could not be stopped (1).
    pub async fn scale(&self, name: &str, count: &str, tx: &ProgressTx) -> Result<u32, Error> {
        // One resize at a time: a relative count is read against a size
        // no other resize is changing, and a grow never meets members a
        // shrink is still stopping.
        let _resizing = self.resizing.lock().await;
        self.resize(name, count, tx).await
    }

    /// [`Supervisor::scale`] for a caller that holds the resize lock (a
    /// reload).
    pub(super) async fn resize(
        &self,
        name: &str,
        count: &str,
        tx: &ProgressTx,
    ) -> Result<u32, Error> {
        self.refuse_if_stopping()?;
        let stack = self.stack();
        let spec = self.pool_named(&stack, name)?;
        let current = self.registry.instances(spec).len() as u32;
        if count.trim() == "auto" {
            self.autoscale_resume(spec, tx)?;
            return Ok(current);
        }
        let target = parse_count(count, current)?;
        check_pool_size(spec, target)?;
        // Held before it changes, so the autoscaler never undoes it.
        self.autoscale_hold(spec, target, tx);
        if target > current {
            self.grow(&stack, name, current, target, tx).await?;
        } else {
            self.set_pool_size(name, target);
            self.shrink_to(&stack, name, target, tx).await?;
        }
        tracing::info!(process = %name, "scaled from {current} to {target}");
        if target > 0 {
            self.autoscale_start(&stack, &[name.to_string()]);
        }
        Ok(target)
    }

    /// Grows pool `name` from `current` to `target` members: the new ones
    /// start with their dependencies; running members are not touched.
    pub(super) async fn grow(
        &self,
        stack: &Arc<Stack>,
        name: &str,
        current: u32,
        target: u32,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        self.set_pool_size(name, target);
        let members: BTreeSet<u32> = (current + 1..=target).collect();
        let sel = Selection {
            processes: Vec::new(),
            members: [(name.to_string(), members)].into_iter().collect(),
        };
        let closure = plan::closure(stack, &[name.to_string()]);
        self.bring_up(
            stack,
            &closure,
            &sel,
            false,
            super::order::Purpose::Resize,
            tx,
        )
        .await
        .map(|_| ())
    }

    /// The pool called `name`, or why it is not one.
    fn pool_named<'s>(&self, stack: &'s Stack, name: &str) -> Result<&'s ProcessSpec, Error> {
        let Some(spec) = stack.process(name) else {
            let sel = self.select(stack, &[name.to_string()]);
            return Err(sel
                .err()
                .unwrap_or_else(|| Error::usage(format!("no pool named `{name}`"))));
        };
        if spec.kind == Kind::Task {
            return Err(Error::Usage {
                message: format!("`{name}` is a task; only services can be scaled"),
                hint: None,
            });
        }
        if !spec.is_pool() {
            return Err(not_a_pool(name));
        }
        Ok(spec)
    }

    /// Stops every member of pool `name` numbered above `target` and
    /// forgets it. Every member, not just those up to the recorded size:
    /// `scale 0` must leave none, whatever was started before.
    pub(super) async fn shrink_to(
        &self,
        stack: &Stack,
        name: &str,
        target: u32,
        tx: &ProgressTx,
    ) -> Result<(), Error> {
        let mut doomed = self
            .registry
            .matching(|h| h.inst.process == name && h.inst.index.is_some_and(|i| i > target));
        if doomed.is_empty() {
            return Ok(());
        }
        doomed.sort_by_key(|h| std::cmp::Reverse(h.inst.index));
        let names: Vec<String> = doomed.iter().map(|h| h.inst.name.clone()).collect();
        let r = self.bring_down(stack, doomed, tx).await;
        self.registry.forget_shrunk(name, &names);
        self.ctx.touch();
        r
    }
}

fn not_a_pool(name: &str) -> Error {
    Error::Usage {
        message: format!("`{name}` is not a pool"),
        hint: Some(format!(
            "give [service.{name}] a `replicas = N` to make it a pool"
        )),
    }
}

/// A size request against the current size.
pub(super) fn parse_count(count: &str, current: u32) -> Result<u32, Error> {
    let bad = || Error::Usage {
        message: format!("`{count}` is not a pool size"),
        hint: Some(
            "give N, +K or -K (e.g. `stackctl scale worker 4`, `stackctl scale worker -- -1`)"
                .into(),
        ),
    };
    let t = count.trim();
    if let Some(k) = t.strip_prefix('+') {
        let k: u32 = k.parse().map_err(|_| bad())?;
        Ok(current.saturating_add(k))
    } else if let Some(k) = t.strip_prefix('-') {
        let k: u32 = k.parse().map_err(|_| bad())?;
        current.checked_sub(k).ok_or_else(|| Error::Usage {
            message: format!("cannot shrink by {k}: the pool has {current} members"),
            hint: None,
        })
    } else {
        t.parse().map_err(|_| bad())
    }
}

/// A pool may not exceed `max_replicas` (or [`MAX_POOL`]).
pub(super) fn check_pool_size(spec: &ProcessSpec, n: u32) -> Result<(), Error> {
    if !spec.is_pool() {
        return Err(not_a_pool(&spec.name));
    }
    let max = spec.max_replicas.unwrap_or(MAX_POOL);
    if n > max {
        return Err(Error::Usage {
            message: format!(
                "{} members is more than {}'s max_replicas of {max}",
                n, spec.name
            ),
            hint: Some(format!("raise max_replicas in [service.{}]", spec.name)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_absolute_and_relative() {
        let cases: &[(&str, u32, Result<u32, &str>)] = &[
            ("4", 2, Ok(4)),
            (" 0 ", 2, Ok(0)),
            ("+1", 2, Ok(3)),
            ("-2", 2, Ok(0)),
            ("-3", 2, Err("cannot shrink by 3: the pool has 2 members")),
            ("four", 2, Err("`four` is not a pool size")),
            ("+x", 2, Err("`+x` is not a pool size")),
            ("", 2, Err("`` is not a pool size")),
        ];
        for (text, current, want) in cases {
            let got = parse_count(text, *current).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{text:?} from {current}");
        }
    }

    #[test]
    fn bounds_come_from_max_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        std::fs::write(
            &p,
            "[service.w]\ncommand = \"true\"\nreplicas = 1\nmax_replicas = 3\n[service.one]\ncommand = \"true\"\n[service.free]\ncommand = \"true\"\nreplicas = 1\n",
        )
        .unwrap();
        let stack = crate::config::load(&p).unwrap();
        let w = stack.process("w").unwrap();
        assert!(check_pool_size(w, 3).is_ok());
        let e = check_pool_size(w, 4).unwrap_err().to_string();
        assert!(e.contains("max_replicas of 3"), "{e}");
        let one = stack.process("one").unwrap();
        assert!(check_pool_size(one, 1)
            .unwrap_err()
            .to_string()
            .contains("not a pool"));
        let free = stack.process("free").unwrap();
        assert!(check_pool_size(free, MAX_POOL).is_ok());
        assert!(check_pool_size(free, MAX_POOL + 1).is_err());
    }
}
