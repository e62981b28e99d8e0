//! Validating what operators add to a process beyond running it: failure
//! hooks (`on_failure`, `[stack]` and per process), memory limits
//! (`memory_max`) and schedules (`schedule`, `every`).
//!
//! Owns: those keys' defaults, how a process's hook settings fall back on
//! the stack's, the cron syntax as a located diagnostic, and the rule that
//! nothing depends on a scheduled task. Must not touch: running a hook, a
//! memory check or a schedule (`supervisor`'s).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::cron::{Cron, CRON_HINT};
use super::super::diag::Diagnostic;
use super::super::duration::{parse_size, SIZE_HINT};
use super::super::model::{HookSpec, Kind, ProcessSpec, Schedule, HOOK_VARS};
use super::super::raw::RawCommand;
use super::Ctx;

/// A hook's command is cut off after this long, unless told otherwise.
pub(crate) const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest `every`.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// The hook keys of one table, as written.
pub(super) struct RawHook<'a> {
    pub(super) command: Option<&'a Spanned<RawCommand>>,
    pub(super) timeout: Option<&'a Spanned<String>>,
    pub(super) exits: Option<&'a Spanned<bool>>,
}

/// The hook keys of one table, checked (each `None` when not written or wrong).
#[derive(Default, Clone)]
pub(super) struct HookParts {
    command: Option<crate::config::CommandSpec>,
    timeout: Option<Duration>,
    exits: Option<bool>,
}

impl HookParts {
    /// The hook these settings make, falling back on `stack`'s.
    pub(super) fn over(&self, stack: &HookParts) -> Option<HookSpec> {
        let command = self.command.clone().or_else(|| stack.command.clone())?;
        Some(HookSpec {
            command,
            timeout: self.timeout.or(stack.timeout).unwrap_or(HOOK_TIMEOUT),
            exits: self.exits.or(stack.exits).unwrap_or(false),
        })
    }

    /// Whether a command is set.
    pub(super) fn has_command(&self) -> bool {
        self.command.is_some()
    }
}

impl Ctx<'_> {
    /// The hook keys of `[stack]` (`table` = "stack") or a process
    /// (`table` = "service.api"). `stack`: the stack's own, when checking a
    /// process (a setting without a command anywhere is an error).
    pub(super) fn hook(
        &mut self,
        raw: &RawHook<'_>,
        table: &str,
        stack: Option<&HookParts>,
    ) -> HookParts {
        // The command may use the hook's variables and stackctl's own environment.
        let env: BTreeMap<String, String> = HOOK_VARS
            .iter()
            .map(|v| ((*v).to_string(), "x".to_string()))
            .collect();
        let command = raw
            .command
            .and_then(|c| self.command(c, &format!("{table}.on_failure"), &env));
        let timeout = raw.timeout.and_then(|t| {
            let what = format!("{table}.on_failure_timeout");
            match self.duration(t, &what) {
                Some(d) if d.is_zero() => {
                    self.push(
                        Diagnostic::at(t.span(), format!("`{what}` must be more than 0"))
                            .hint("a hook needs some time to run; e.g. \"30s\""),
                    );
                    None
                }
                d => d,
            }
        });
        let exits = raw.exits.map(|e| *e.get_ref());
        let has_command = raw.command.is_some() || stack.is_some_and(HookParts::has_command);
        if !has_command {
            for (key, span) in [
                ("on_failure_timeout", raw.timeout.map(Spanned::span)),
                ("on_failure_exits", raw.exits.map(Spanned::span)),
            ] {
                let Some(span) = span else { continue };
                let whom = if table == "stack" {
                    "[stack]"
                } else {
                    "this table or [stack]"
                };
                self.push(
                    Diagnostic::at(
                        span,
                        format!("`{table}.{key}` without an `on_failure` command"),
                    )
                    .hint(format!(
                        "add on_failure = \"…\" (the command to run) to {whom}, or remove `{key}`"
                    )),
                );
            }
        }
        HookParts {
            command,
            timeout,
            exits,
        }
    }

    /// `memory_max`: a size like `"512MB"`, or a number of bytes.
    pub(super) fn memory_max(&mut self, v: &Spanned<toml::Value>, what: &str) -> Option<u64> {
        let bytes = match v.get_ref() {
            toml::Value::String(s) => match parse_size(s) {
                Ok(n) => n,
                Err(e) => {
                    self.push(
                        Diagnostic::at(v.span(), format!("bad size for `{what}`: {e}"))
                            .hint(SIZE_HINT),
                    );
                    return None;
                }
            },
            toml::Value::Integer(n) if *n >= 0 => n.unsigned_abs(),
            toml::Value::Integer(_) => 0,
            _ => {
                self.push(
                    Diagnostic::at(v.span(), format!("`{what}` must be a size like \"512MB\""))
                        .hint(SIZE_HINT),
                );
                return None;
            }
        };
        if bytes == 0 {
            self.push(
                Diagnostic::at(v.span(), format!("`{what}` must be more than 0")).hint(SIZE_HINT),
            );
            return None;
        }
        Some(bytes)
    }

    /// `schedule` (cron) or `every` (a duration), on a task.
    pub(super) fn schedule(
        &mut self,
        kind: Kind,
        table: &str,
        schedule: Option<&Spanned<String>>,
        every: Option<&Spanned<String>>,
    ) -> Option<Schedule> {
        if kind == Kind::Service {
            for (key, v) in [("schedule", schedule), ("every", every)] {
                if let Some(v) = v {
                    self.push(
                        Diagnostic::at(v.span(), format!("a service cannot have `{key}`"))
                            .hint("a command that runs at set times is a [task]: it runs to completion each time"),
                    );
                }
            }
            return None;
        }
        match (schedule, every) {
            (Some(_), Some(e)) => {
                self.push(
                    Diagnostic::at(e.span(), format!("`{table}` has both `schedule` and `every`"))
                        .hint("keep one: `schedule` for times of day (cron), `every` for a fixed interval"),
                );
                None
            }
            (Some(s), None) => self.cron(s, table),
            (None, Some(e)) => {
                let what = format!("{table}.every");
                let d = self.duration(e, &what)?;
                if d < MIN_EVERY {
                    self.push(
                        Diagnostic::at(e.span(), format!("`{what}` must be at least 1s"))
                            .hint("a scheduled task runs at most once a second; e.g. \"15m\""),
                    );
                    return None;
                }
                Some(Schedule::Every(d))
            }
            (None, None) => None,
        }
    }

    fn cron(&mut self, s: &Spanned<String>, table: &str) -> Option<Schedule> {
        match Cron::parse(s.get_ref()) {
            Ok(cron) => Some(Schedule::Cron {
                expr: s.get_ref().trim().to_string(),
                cron,
            }),
            Err(e) => {
                let span = match e.field {
                    Some(_) => self.narrow_field(s.span(), &e.text),
                    None => s.span(),
                };
                self.push(
                    Diagnostic::at(span, format!("bad `{table}.schedule`: {}", e.message))
                        .hint(CRON_HINT),
                );
                None
            }
        }
    }

    /// Narrows a cron string's span to the field written `field`.
    fn narrow_field(&self, span: Range<usize>, field: &str) -> Range<usize> {
        let Some(text) = self.input.src.get(span.clone()) else {
            return span;
        };
        // The first occurrence as a whole whitespace-separated word.
        let mut at = 0;
        for word in text.split(|c: char| c.is_whitespace() || c == '"') {
            if word == field {
                let start = span.start + at;
                return start..start + field.len();
            }
            at += word.len() + 1;
        }
        span
    }

    /// Nothing may depend on a scheduled task: it runs at its times, so
    /// nothing could wait for it. `spans`: each process's name and its
    /// `depends_on` entries, as for `dependencies`.
    pub(super) fn scheduled_dependencies(
        &mut self,
        procs: &[ProcessSpec],
        spans: &[(Range<usize>, Vec<Range<usize>>)],
    ) {
        for (p, (name_span, dep_spans)) in procs.iter().zip(spans) {
            for (j, d) in p.depends_on.iter().enumerate() {
                let Some(dep) = procs.iter().find(|q| &q.name == d) else {
                    continue;
                };
                let Some(sched) = &dep.schedule else { continue };
                let span = dep_spans
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| name_span.clone());
                self.push(
                    Diagnostic::at(
                        span,
                        format!("`{}` depends on `{d}`, which runs on a schedule ({sched})", p.name),
                    )
                    .hint("a scheduled task runs at its times, so nothing can wait for it: remove it from depends_on (it may itself depend on services)"),
                );
            }
        }
    }
}
