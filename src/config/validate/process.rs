//! Validating one `[service.*]` or `[task.*]` table into a
//! [`ProcessSpec`], as named steps: its environment, command and folder,
//! gates, restart policy, stop, pool size and autoscale, timeout, held
//! sockets, hooks, memory, schedule and dependencies.
//!
//! Owns: each key's default and its rules for services and tasks. Must not
//! touch: what the keys do at run time.

use super::super::diag::{suggest, Diagnostic};
use super::super::env::expand;
use super::super::model::*;
use super::*;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

/// Which process a step validates, and where its keys are written.
struct At<'n> {
    name: &'n str,
    kind: Kind,
    /// `service.api`.
    table: String,
}

impl At<'_> {
    /// `service.api.key`.
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.table)
    }

    /// The path of `key` in this table, for `key_span`.
    fn path<'k>(&'k self, key: &'k str) -> [&'k str; 3] {
        [kind_key(self.kind), self.name, key]
    }
}

impl Ctx<'_> {
    pub(super) fn process(
        &mut self,
        pname: &Spanned<String>,
        kind: Kind,
        rp: RawProcess,
        base: (&BTreeMap<String, String>, &EnvSources, &[EnvLayer]),
        stack_stop_timeout: Duration,
        stack: &str,
    ) -> ProcessSpec {
        let name = pname.get_ref().clone();
        let at = At {
            name: &name,
            kind,
            table: format!("{kind}.{name}"),
        };
        let (env, env_sources, env_layers) = self.process_env(&at, &rp, base, stack);
        let command = self.process_command(&at, pname, rp.command.as_ref(), &env);
        let cwd = self.process_cwd(&at, rp.cwd.as_ref(), &env, stack);
        let pre_start = rp
            .pre_start
            .as_ref()
            .map(|c| self.commands(c, &at.key("pre_start"), &env))
            .unwrap_or_default();
        let require_env = self.require_env(&at, rp.require_env.as_deref());
        let ready = self.ready_gate(&at, rp.ready.as_ref(), &env);
        let health = self.health_check(&at, rp.health.as_ref(), &env);
        let restart = self.restart_policy(&at, rp.restart.as_ref());
        let max_restarts = rp
            .max_restarts
            .as_ref()
            .and_then(|v| self.count(v, &at.key("max_restarts"), 0))
            .unwrap_or(5);
        let restart_window = self.opt_duration(
            &rp.restart_window,
            &at.key("restart_window"),
            Duration::from_secs(60),
        );
        let stop_signal = match &rp.stop_signal {
            None => Signal::SIGTERM,
            Some(v) => self.signal(v).unwrap_or(Signal::SIGTERM),
        };
        let stop_timeout = self.opt_duration(
            &rp.stop_timeout,
            &at.key("stop_timeout"),
            stack_stop_timeout,
        );
        let (replicas, max_replicas) = self.pool_size(&at, &rp);
        let autoscale = self.process_autoscale(&at, &rp, replicas, max_replicas, &env);
        let timeout = self.task_timeout(&at, rp.timeout.as_ref());
        let listen = self.held_sockets(&at, &rp, (&ready, &health), &env, stack);
        let on_failure = self.failure_hook(&at, &rp);
        let memory_max = rp
            .memory_max
            .as_ref()
            .and_then(|v| self.memory_max(v, &at.key("memory_max")));
        let schedule = self.schedule(kind, &at.table, rp.schedule.as_ref(), rp.every.as_ref());
        let mut depends_on: Vec<String> = Vec::new();
        for d in rp.depends_on.iter().flatten() {
            if !depends_on.contains(d.get_ref()) {
                depends_on.push(d.get_ref().clone());
            }
        }
        ProcessSpec {
            name,
            kind,
            command: command.unwrap_or(CommandSpec::Shell(String::new())),
            depends_on,
            env: Env(env),
            env_sources,
            cwd,
            pre_start,
            require_env,
            ready,
            health,
            restart,
            max_restarts,
            restart_window,
            stop_signal,
            stop_timeout,
            replicas,
            max_replicas,
            timeout,
            env_layers,
            autoscale,
            listen,
            on_failure,
            memory_max,
            schedule,
        }
    }

    /// The process's environment over the stack's (`base`): the merged
    /// variables, where each was set, and the layers as written.
    fn process_env(
        &mut self,
        at: &At<'_>,
        rp: &RawProcess,
        (base, base_sources, base_layers): (&BTreeMap<String, String>, &EnvSources, &[EnvLayer]),
        stack: &str,
    ) -> (BTreeMap<String, String>, EnvSources, Vec<EnvLayer>) {
        let mut env_layers = base_layers.to_vec();
        env_layers.extend(self.env_layers(rp.env_file.as_ref(), rp.env.as_ref(), &at.path("env")));
        let mut env = base.clone();
        let mut env_sources = base_sources.clone();
        if let Some(files) = &rp.env_file {
            self.env_files(files, &mut env, &mut env_sources, stack);
        }
        self.env_table(
            rp.env.clone(),
            &at.path("env"),
            &mut env,
            &mut env_sources,
            stack,
        );
        (env, env_sources, env_layers)
    }

    /// `command`, which every process must have.
    fn process_command(
        &mut self,
        at: &At<'_>,
        pname: &Spanned<String>,
        command: Option<&Spanned<RawCommand>>,
        env: &BTreeMap<String, String>,
    ) -> Option<CommandSpec> {
        match command {
            Some(c) => self.command(c, &at.key("command"), env),
            None if self.was_blanked(&at.path("command")) => None,
            None => {
                self.push(
                    Diagnostic::at(pname.span(), format!("`[{}]` has no `command`", at.table))
                        .hint("add command = \"…\" (run by /bin/sh -c) or command = [\"program\", \"arg\"]"),
                );
                None
            }
        }
    }

    /// `cwd` (templates expanded, resolved against the stack file's
    /// folder), by default that folder.
    fn process_cwd(
        &mut self,
        at: &At<'_>,
        cwd: Option<&Spanned<String>>,
        env: &BTreeMap<String, String>,
        stack: &str,
    ) -> PathBuf {
        let Some(c) = cwd else {
            return self.root.clone();
        };
        let result = {
            let lookup = self.lookup_in(env, stack);
            expand(c.get_ref(), &lookup)
        };
        match result {
            Ok(v) => self.resolve(&v),
            Err(err) => {
                self.push(
                    Diagnostic::at(c.span(), format!("in `{}`: {err}", at.key("cwd")))
                        .maybe_hint(unset_hint(&err)),
                );
                self.root.clone()
            }
        }
    }

    /// `require_env`: variable names, each located for later diagnostics.
    fn require_env(&mut self, at: &At<'_>, vars: Option<&[Spanned<String>]>) -> Vec<String> {
        let mut require_env = Vec::new();
        for v in vars.into_iter().flatten() {
            if valid_var(v.get_ref()) {
                self.require_spans
                    .insert((at.name.to_string(), v.get_ref().clone()), v.span());
                require_env.push(v.get_ref().clone());
            } else {
                self.push(
                    Diagnostic::at(
                        v.span(),
                        format!("bad variable name `{}` in `require_env`", v.get_ref()),
                    )
                    .hint("use letters, digits and `_`, not starting with a digit"),
                );
            }
        }
        require_env
    }

    /// A task has no gate: `true` (with a diagnostic) when it was given
    /// `key` anyway.
    fn gate_on_a_task(&mut self, at: &At<'_>, probe: Option<&RawProbe>, key: &str) -> bool {
        if at.kind != Kind::Task || probe.is_none() {
            return false;
        }
        let span = (self.input.key_span)(&at.path(key)).unwrap_or(0..0);
        self.push(
            Diagnostic::at(span, format!("task `{}` cannot have `{key}`", at.name))
                .hint("a task is done when it exits 0, and whatever depends on it waits for that; make it a [service] to probe it"),
        );
        true
    }

    /// `ready`, with its defaults (60 s, every 250 ms).
    fn ready_gate(
        &mut self,
        at: &At<'_>,
        raw: Option<&RawProbe>,
        env: &BTreeMap<String, String>,
    ) -> Option<ReadySpec> {
        if self.gate_on_a_task(at, raw, "ready") {
            return None;
        }
        raw.and_then(|p| self.probe(p, Role::Ready, &at.path("ready"), env))
            .map(|p| ReadySpec {
                probe: p.kind,
                timeout: p.timeout.unwrap_or(Duration::from_secs(60)),
                interval: p.interval.unwrap_or(Duration::from_millis(250)),
            })
    }

    /// `health`, with its defaults (every 10 s, 3 failures in a row).
    fn health_check(
        &mut self,
        at: &At<'_>,
        raw: Option<&RawProbe>,
        env: &BTreeMap<String, String>,
    ) -> Option<HealthSpec> {
        if self.gate_on_a_task(at, raw, "health") {
            return None;
        }
        raw.and_then(|p| self.probe(p, Role::Health, &at.path("health"), env))
            .map(|p| {
                let interval = p.interval.unwrap_or(Duration::from_secs(10));
                HealthSpec {
                    probe: p.kind,
                    interval,
                    timeout: p.timeout.unwrap_or(interval.min(Duration::from_secs(10))),
                    failures: p.failures.unwrap_or(3),
                }
            })
    }

    /// `restart`: `on-failure` for a service, `never` for a task by default;
    /// a task is never restarted `always`.
    fn restart_policy(&mut self, at: &At<'_>, raw: Option<&Spanned<String>>) -> RestartPolicy {
        let default = match at.kind {
            Kind::Task => RestartPolicy::Never,
            Kind::Service => RestartPolicy::OnFailure,
        };
        let Some(r) = raw else {
            return default;
        };
        match r.get_ref().as_str() {
            "always" if at.kind == Kind::Task => {
                self.push(Diagnostic::at(r.span(), "a task cannot have `restart = \"always\"`").hint("a task runs to completion; use \"on-failure\" to retry it, or make it a [service]"));
                default
            }
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            "never" => RestartPolicy::Never,
            other => {
                let hint = suggest(other, ["always", "on-failure", "never"])
                    .unwrap_or_else(|| "one of \"always\", \"on-failure\", \"never\"".into());
                self.push(
                    Diagnostic::at(r.span(), format!("unknown restart policy `{other}`"))
                        .hint(hint),
                );
                default
            }
        }
    }

    /// `replicas` and `max_replicas`: a service only, and consistent.
    fn pool_size(&mut self, at: &At<'_>, rp: &RawProcess) -> (Option<u32>, Option<u32>) {
        if at.kind == Kind::Task {
            for (k, v) in [
                ("replicas", &rp.replicas),
                ("max_replicas", &rp.max_replicas),
            ] {
                if let Some(v) = v {
                    self.push(
                        Diagnostic::at(v.span(), format!("a task cannot have `{k}`"))
                            .hint("only a [service] can be a pool"),
                    );
                }
            }
            return (None, None);
        }
        let replicas = rp
            .replicas
            .as_ref()
            .and_then(|v| self.count(v, &at.key("replicas"), 0));
        let max_replicas = rp
            .max_replicas
            .as_ref()
            .and_then(|v| self.count(v, &at.key("max_replicas"), 1));
        if let (Some(r), Some(m), Some(span)) = (
            replicas,
            max_replicas,
            rp.replicas.as_ref().map(Spanned::span),
        ) {
            if r > m {
                self.push(
                    Diagnostic::at(
                        span,
                        format!("`replicas = {r}` is more than `max_replicas = {m}`"),
                    )
                    .hint("raise max_replicas or lower replicas"),
                );
            }
        }
        if let (None, Some(m)) = (&rp.replicas, &rp.max_replicas) {
            self.push(
                Diagnostic::at(m.span(), "`max_replicas` without `replicas`")
                    .hint("add `replicas = 1` to make this service a pool"),
            );
        }
        (replicas, max_replicas)
    }

    /// `autoscale`: a service pool only.
    fn process_autoscale(
        &mut self,
        at: &At<'_>,
        rp: &RawProcess,
        replicas: Option<u32>,
        max_replicas: Option<u32>,
        env: &BTreeMap<String, String>,
    ) -> Option<AutoscaleSpec> {
        match (&rp.autoscale, at.kind) {
            (None, _) => None,
            (Some(_), Kind::Task) => {
                let span = (self.input.key_span)(&at.path("autoscale")).unwrap_or(0..0);
                self.push(
                    Diagnostic::at(span, format!("task `{}` cannot have `autoscale`", at.name))
                        .hint("only a [service] pool can size itself"),
                );
                None
            }
            // `replicas` itself is wrong: that diagnostic says enough.
            (Some(_), Kind::Service) if rp.replicas.is_some() && replicas.is_none() => None,
            (Some(a), Kind::Service) => {
                let span = |v: &Option<Spanned<i64>>| v.as_ref().map_or(0..0, Spanned::span);
                let pool = autoscale::Pool {
                    name: at.name,
                    replicas: replicas.map(|r| (r, span(&rp.replicas))),
                    max_replicas: max_replicas.map(|m| (m, span(&rp.max_replicas))),
                };
                self.autoscale(a, &pool, env)
            }
        }
    }

    /// `timeout`: a task's alone (a service's is its gate's).
    fn task_timeout(&mut self, at: &At<'_>, raw: Option<&Spanned<String>>) -> Option<Duration> {
        match (raw, at.kind) {
            (Some(t), Kind::Task) => self.duration(t, &at.key("timeout")),
            (Some(t), Kind::Service) => {
                self.push(Diagnostic::at(t.span(), "a service cannot have `timeout`").hint("for how long a service may take to become ready, use `ready = { …, timeout = \"2m\" }`"));
                None
            }
            (None, _) => None,
        }
    }

    /// `listen`, and the gates that would probe a held socket.
    fn held_sockets(
        &mut self,
        at: &At<'_>,
        rp: &RawProcess,
        (ready, health): (&Option<ReadySpec>, &Option<HealthSpec>),
        env: &BTreeMap<String, String>,
        stack: &str,
    ) -> Vec<ListenSpec> {
        let mut listens = std::mem::take(&mut self.listens);
        let listen = self.listen(
            rp.listen.as_ref(),
            at.kind,
            at.name,
            env,
            stack,
            &mut listens,
        );
        self.listens = listens;
        self.gates_on_held_sockets(
            at.name,
            &listen,
            [
                ("ready", rp.ready.as_ref(), ready.as_ref().map(|r| &r.probe)),
                (
                    "health",
                    rp.health.as_ref(),
                    health.as_ref().map(|h| &h.probe),
                ),
            ],
            env,
        );
        listen
    }

    /// `on_failure` and its settings, each falling back on `[stack]`'s.
    fn failure_hook(&mut self, at: &At<'_>, rp: &RawProcess) -> Option<HookSpec> {
        let own_hook = ops::RawHook {
            command: rp.on_failure.as_ref(),
            timeout: rp.on_failure_timeout.as_ref(),
            exits: rp.on_failure_exits.as_ref(),
        };
        let stack_hook = self.stack_hook.clone();
        self.hook(&own_hook, &at.table, Some(&stack_hook))
            .over(&stack_hook)
    }

    pub(super) fn signal(&mut self, v: &Spanned<toml::Value>) -> Option<Signal> {
        let parsed = match v.get_ref() {
            toml::Value::Integer(n) => i32::try_from(*n)
                .ok()
                .and_then(|n| Signal::try_from(n).ok()),
            toml::Value::String(s) => parse_signal(s),
            _ => None,
        };
        if parsed.is_none() {
            let shown = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let names: Vec<&str> = Signal::iterator().map(Signal::as_str).collect();
            let hint = suggest(&shown.to_ascii_uppercase(), names.iter().copied())
                .or_else(|| {
                    suggest(
                        &format!("SIG{}", shown.to_ascii_uppercase()),
                        names.iter().copied(),
                    )
                })
                .unwrap_or_else(|| {
                    "a signal name or number, e.g. \"SIGTERM\", \"TERM\", \"SIGINT\" or \"15\""
                        .into()
                });
            self.push(Diagnostic::at(v.span(), format!("unknown signal `{shown}`")).hint(hint));
        }
        parsed
    }
}
