//! Validating `[keeper]`: the repository, branch and remote, the
//! interval, deploy steps and their timeouts, prereqs, `restart` and
//! `watch_health` names, retries and `escalate`.
//!
//! Owns: those checks. Must not touch: running the keeper.

use super::super::diag::{suggest, Diagnostic};
use super::*;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

impl Ctx<'_> {
    pub(super) fn keeper(
        &mut self,
        k: RawKeeper,
        procs: &[ProcessSpec],
        base: &BTreeMap<String, String>,
    ) -> KeeperSpec {
        let repo = k
            .repo
            .as_ref()
            .map_or_else(|| self.root.clone(), |r| self.resolve(r.get_ref()));
        let remote = k
            .remote
            .as_ref()
            .map_or_else(|| "origin".to_string(), |r| r.get_ref().clone());
        let branch = match &k.branch {
            Some(b) if !b.get_ref().trim().is_empty() => b.get_ref().clone(),
            Some(b) => {
                self.push(Diagnostic::at(b.span(), "`keeper.branch` cannot be empty"));
                String::new()
            }
            None if self.was_blanked(&["keeper", "branch"]) => String::new(),
            None => {
                let at = (self.input.key_span)(&["keeper"]).unwrap_or(0..0);
                self.push(
                    Diagnostic::at(at, "`[keeper]` has no `branch`")
                        .hint("name the branch to keep deployed, e.g. branch = \"main\""),
                );
                String::new()
            }
        };
        let interval = self.opt_duration(&k.interval, "keeper.interval", Duration::from_secs(300));
        let deploy = k
            .deploy
            .as_ref()
            .map(|c| self.commands(c, "keeper.deploy", base))
            .unwrap_or_default();
        let mut prereqs = Vec::new();
        for (i, p) in k.prereqs.iter().flatten().enumerate() {
            let index = i.to_string();
            if let Some(p) = self.probe(p, Role::Prereq, &["keeper", "prereqs", &index], base) {
                prereqs.push(p.kind);
            }
        }
        let mut watch_health = Vec::new();
        for w in k.watch_health.iter().flatten() {
            let n = w.get_ref();
            match procs.iter().find(|p| &p.name == n) {
                None => {
                    let hint = suggest(n, procs.iter().map(|p| p.name.as_str()))
                        .unwrap_or_else(|| "name a service that has `health`".into());
                    self.push(
                        Diagnostic::at(
                            w.span(),
                            format!("`keeper.watch_health` names `{n}`, which is not a service"),
                        )
                        .hint(hint),
                    );
                }
                Some(p) if p.kind == Kind::Task => {
                    self.push(
                        Diagnostic::at(
                            w.span(),
                            format!("`keeper.watch_health` names the task `{n}`"),
                        )
                        .hint("only services have health checks"),
                    );
                }
                Some(p) if p.health.is_none() => {
                    self.push(
                        Diagnostic::at(
                            w.span(),
                            format!(
                                "`keeper.watch_health` names `{n}`, which has no `health` check"
                            ),
                        )
                        .hint(format!(
                            "add health = {{ … }} to [service.{n}], or remove it from watch_health"
                        )),
                    );
                }
                Some(_) => watch_health.push(n.clone()),
            }
        }
        let retries = k
            .retries
            .as_ref()
            .and_then(|r| self.count(r, "keeper.retries", 0))
            .unwrap_or(3);
        let escalate = k
            .escalate
            .as_ref()
            .and_then(|c| self.command(c, "keeper.escalate", base));
        let restart = k.restart.as_ref().map(|r| self.keeper_restart(r, procs));
        let step_timeout = self.positive_duration(
            &k.step_timeout,
            "keeper.step_timeout",
            Duration::from_secs(30 * 60),
        );
        let deploy_timeout = self.positive_duration(
            &k.deploy_timeout,
            "keeper.deploy_timeout",
            Duration::from_secs(60 * 60),
        );
        KeeperSpec {
            repo,
            remote,
            branch,
            interval,
            deploy,
            prereqs,
            watch_health,
            retries,
            escalate,
            restart,
            step_timeout,
            deploy_timeout,
            env: Env(base.clone()),
        }
    }

    /// `keeper.restart`: names of processes or pools (not pool members).
    pub(super) fn keeper_restart(
        &mut self,
        names: &[Spanned<String>],
        procs: &[ProcessSpec],
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in names {
            let n = w.get_ref();
            if procs.iter().any(|p| &p.name == n) {
                if !out.contains(n) {
                    out.push(n.clone());
                }
                continue;
            }
            // `worker.2`: a pool member.
            let member_of = n
                .rsplit_once('.')
                .filter(|(_, i)| i.parse::<u32>().is_ok())
                .and_then(|(base, _)| procs.iter().find(|p| p.name == base && p.is_pool()));
            let hint = match member_of {
                Some(p) => {
                    let base = &p.name;
                    format!("name the pool `{base}`: a deploy rolls it member by member")
                }
                _ => suggest(n, procs.iter().map(|p| p.name.as_str()))
                    .unwrap_or_else(|| "name a service, a pool or a task of this stack".into()),
            };
            self.push(
                Diagnostic::at(
                    w.span(),
                    format!("`keeper.restart` names `{n}`, which is not a process of this stack"),
                )
                .hint(hint),
            );
        }
        out
    }

    /// A duration that must be more than zero, or `default`.
    pub(super) fn positive_duration(
        &mut self,
        v: &Option<Spanned<String>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        match v
            .as_ref()
            .and_then(|s| self.duration(s, what).map(|d| (s, d)))
        {
            Some((s, d)) if d.is_zero() => {
                self.push(
                    Diagnostic::at(s.span(), format!("`{what}` must be more than 0"))
                        .hint("a deploy step needs some time; e.g. \"30m\""),
                );
                default
            }
            Some((_, d)) => d,
            None => default,
        }
    }
}
