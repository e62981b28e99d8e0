//! The listening sockets of the stack's services (`listen`), as the
//! supervisor holds them: bound once, before a service's first spawn,
//! shared by all its instances, handed to the anchor so that they outlive
//! this supervisor, and passed to every spawn of the service.
//!
//! Owns: which sockets are bound, under which anchor keys, and when they
//! are closed (a stop of the service, a reload that changed its
//! addresses). Must not touch: binding itself (`spawn::listen`), when a
//! service starts or stops (the units and the supervisor).
//!
//! Theory of operation. A socket is bound by the first instance that
//! needs it ([`Listeners::ensure`], under one lock: a pool's members
//! starting in parallel share one socket, one accept queue) and kept here
//! and with the anchor (`listen/<service>/<addr>`, see
//! `record::listen_key`). It stays open while the service crashes and
//! restarts, so connections wait in its backlog instead of being refused,
//! and while supervisors come and go: the next one takes it back from the
//! inventory ([`Listeners::adopt`]). Closing it is explicit
//! ([`Listeners::retain`]): the supervisor's copy and the anchor's go, and
//! the port is free once the processes that had it are gone.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use crate::anchor::client::Link;
use crate::config::{ListenAddr, ProcessSpec, Stack};
use crate::spawn::listen as sockets;

use super::super::record::listen_key;

/// The held sockets, by service and address.
#[derive(Default)]
pub struct Listeners {
    held: Mutex<BTreeMap<(String, ListenAddr), OwnedFd>>,
}

impl Listeners {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, ListenAddr), OwnedFd>> {
        // Single inserts and removes: a panic cannot leave it inconsistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The anchor keys of `spec`'s sockets, in `listen` order, binding
    /// (and handing to the anchor) those not held yet.
    ///
    /// # Errors
    /// An address that cannot be bound (in use: with its holder), as the
    /// reason a start fails; the sockets this call bound are closed again.
    pub fn ensure(&self, spec: &ProcessSpec, anchor: &Link) -> Result<Vec<String>, String> {
        let mut held = self.lock();
        let mut fresh = Vec::new();
        for l in &spec.listen {
            let at = (spec.name.clone(), l.addr.clone());
            if held.contains_key(&at) {
                continue;
            }
            match sockets::bind(&l.addr) {
                Ok(fd) => {
                    anchor.hold(&listen_key(&spec.name, &l.addr), &fd);
                    tracing::info!(process = %spec.name, "listening on {}", l.addr);
                    held.insert(at.clone(), fd);
                    fresh.push(at);
                }
                Err(e) => {
                    for at in fresh {
                        held.remove(&at);
                        anchor.release(&listen_key(&at.0, &at.1));
                        sockets::unlink(&at.1);
                    }
                    let hint = match &e.holder {
                        Some(_) => "stop it, or give `listen` another address",
                        None => "free the address, or give `listen` another one",
                    };
                    return Err(format!("{e}; {hint}"));
                }
            }
        }
        Ok(spec
            .listen
            .iter()
            .map(|l| listen_key(&spec.name, &l.addr))
            .collect())
    }

    /// Closes `service`'s sockets but those on `keep` (here and in the
    /// anchor; a unix socket's file is removed).
    pub fn retain(&self, service: &str, keep: &[ListenAddr], anchor: &Link) {
        let mut held = self.lock();
        let gone: Vec<(String, ListenAddr)> = held
            .keys()
            .filter(|(s, a)| s == service && !keep.contains(a))
            .cloned()
            .collect();
        for at in gone {
            held.remove(&at);
            anchor.release(&listen_key(&at.0, &at.1));
            sockets::unlink(&at.1);
            tracing::info!(process = %service, "closed {}", at.1);
        }
    }

    /// Closes every socket of `service`.
    pub fn release(&self, service: &str, anchor: &Link) {
        self.retain(service, &[], anchor);
    }

    /// Takes back, from what the anchor held for a previous supervisor,
    /// the sockets the stack still names (removed from `held`; what is
    /// left there is released by the caller).
    pub fn adopt(&self, held: &mut BTreeMap<String, OwnedFd>, stack: &Stack) {
        let mut mine = self.lock();
        for p in &stack.processes {
            for l in &p.listen {
                if let Some(fd) = held.remove(&listen_key(&p.name, &l.addr)) {
                    mine.insert((p.name.clone(), l.addr.clone()), fd);
                }
            }
        }
    }
}
