//! The supervisor's units and the current size of each pool: one owner for
//! both, behind one lock, so that what `status` shows, what `scale` counts
//! and what `start` starts can never disagree.
//!
//! Owns: which units exist (by instance name) and each pool's size. Must
//! not touch: what the units do (the orchestrations in the parent module).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::unit::{Resume, UnitCtx, UnitHandle};
use crate::config::{ProcessSpec, Stack};
use crate::plan::{self, Instance};

/// Units by instance name, and pool sizes by process name.
pub(super) struct Registry {
    inner: Mutex<Inner>,
}

struct Inner {
    units: BTreeMap<String, UnitHandle>,
    /// Current size of each pool (its `replicas` until resized).
    sizes: BTreeMap<String, u32>,
}

impl Registry {
    /// No units yet; every pool at its `replicas`.
    pub(super) fn new(stack: &Stack) -> Registry {
        let sizes = stack
            .processes
            .iter()
            .filter_map(|p| p.replicas.map(|n| (p.name.clone(), n)))
            .collect();
        Registry {
            inner: Mutex::new(Inner {
                units: BTreeMap::new(),
                sizes,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Single inserts and removes: a panic cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instances `spec` has now (a pool: its current size).
    pub(super) fn instances(&self, spec: &ProcessSpec) -> Vec<Instance> {
        let n = spec
            .replicas
            .map(|d| self.lock().sizes.get(&spec.name).copied().unwrap_or(d));
        plan::instances(&spec.name, n)
    }

    /// The unit of `inst`, created (idle, pending) if needed.
    pub(super) fn unit(
        &self,
        ctx: &Arc<UnitCtx>,
        spec: &ProcessSpec,
        inst: &Instance,
    ) -> UnitHandle {
        self.lock()
            .units
            .entry(inst.name.clone())
            .or_insert_with(|| UnitHandle::spawn(ctx.clone(), Arc::new(spec.clone()), inst.clone()))
            .clone()
    }

    /// Takes up `inst` as a previous supervisor left it (replacing any unit).
    pub(super) fn adopt(
        &self,
        ctx: &Arc<UnitCtx>,
        spec: &ProcessSpec,
        inst: &Instance,
        resume: Resume,
    ) {
        let h = UnitHandle::adopt(ctx.clone(), Arc::new(spec.clone()), inst.clone(), resume);
        self.lock().units.insert(inst.name.clone(), h);
    }

    /// Gives the units of process `name` its new definition (their tasks
    /// get it from the caller: `UnitHandle::redefine`).
    pub(super) fn respec(&self, name: &str, spec: &Arc<ProcessSpec>) {
        for h in self.lock().units.values_mut() {
            if h.inst.process == name {
                h.spec = spec.clone();
            }
        }
    }

    /// Sets pool `name`'s size (its members are started or stopped by the
    /// caller).
    pub(super) fn resize(&self, name: &str, n: u32) {
        self.lock().sizes.insert(name.to_string(), n);
    }

    /// Forgets process `name` whole (its units and its size): it was
    /// removed or redefined by a reload. `replicas` is its new size, if
    /// it is still a pool.
    pub(super) fn reset(&self, name: &str, replicas: Option<u32>) {
        let mut inner = self.lock();
        inner.units.retain(|_, h| h.inst.process != name);
        match replicas {
            Some(n) => inner.sizes.insert(name.to_string(), n),
            None => inner.sizes.remove(name),
        };
    }

    /// Forgets the units among `names` (members of pool `pool` stopped by
    /// a shrink) that are still above its size: a member that a resize
    /// since has taken back keeps its unit (forgetting it would let the
    /// next start make a second unit, and a second process, for it).
    pub(super) fn forget_shrunk(&self, pool: &str, names: &[String]) {
        let mut inner = self.lock();
        let size = inner.sizes.get(pool).copied().unwrap_or(0);
        for n in names {
            let above = inner
                .units
                .get(n)
                .is_some_and(|h| h.inst.index.is_some_and(|i| i > size));
            if above {
                inner.units.remove(n);
            }
        }
    }

    /// Every unit that exists.
    pub(super) fn all(&self) -> Vec<UnitHandle> {
        self.lock().units.values().cloned().collect()
    }

    /// The units for which `keep` holds.
    pub(super) fn matching(&self, keep: impl Fn(&UnitHandle) -> bool) -> Vec<UnitHandle> {
        self.lock()
            .units
            .values()
            .filter(|h| keep(h))
            .cloned()
            .collect()
    }

    /// What `status` shows of `spec`: every instance of its current size,
    /// plus members above it that still have a unit (being drained after a
    /// shrink), in member order, each with its unit when it has one.
    pub(super) fn shown(&self, spec: &ProcessSpec) -> Vec<(Instance, Option<UnitHandle>)> {
        let mut insts = self.instances(spec);
        let inner = self.lock();
        for h in inner.units.values() {
            if h.inst.process == spec.name && !insts.contains(&h.inst) {
                insts.push(h.inst.clone());
            }
        }
        insts.sort_by_key(|i| i.index);
        insts
            .into_iter()
            .map(|i| {
                let h = inner.units.get(&i.name).cloned();
                (i, h)
            })
            .collect()
    }
}
