//! Validating `[service.NAME.autoscale]`: a pool that sizes itself from a
//! queue depth.
//!
//! Owns: the autoscale keys' defaults and every check on them — exactly one
//! depth source, numbers and durations, and the bounds fitting together
//! (`min <= replicas <= max <= max_replicas`, a fallback within `min..=max`).
//! Each problem is a located diagnostic, like the rest of `validate`. Must
//! not touch: what the policy does (`supervisor::autoscale`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::diag::{suggest, Diagnostic};
use super::super::model::{AutoscaleSpec, DepthSource, DepthSpec, OnError, ProbeKind, StepLimit};
use super::super::raw::{RawAutoscale, RawDepth, RawOnError};
use super::Ctx;

/// What the autoscale section needs to know about its pool.
pub(super) struct Pool<'a> {
    pub(super) name: &'a str,
    /// `replicas`, when it is a pool, and where it is written.
    pub(super) replicas: Option<(u32, Range<usize>)>,
    /// `max_replicas`, and where it is written.
    pub(super) max_replicas: Option<(u32, Range<usize>)>,
}

/// Readings no closer together than this.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The most readings a scale-in window may hold (window / interval).
const MAX_READINGS: u128 = 10_000;

/// The sources a depth can come from, in key order.
const SOURCES: &str = "exec, http or file";

impl Ctx<'_> {
    /// `[service.NAME.autoscale]` of a service (`None` with a diagnostic
    /// when it is not usable). A task never gets here: `process` refuses it.
    pub(super) fn autoscale(
        &mut self,
        raw: &RawAutoscale,
        pool: &Pool<'_>,
        env: &BTreeMap<String, String>,
    ) -> Option<AutoscaleSpec> {
        let name = pool.name;
        let path = ["service", name, "autoscale"];
        let key = path.join(".");
        let at = (self.input.key_span)(&path).unwrap_or(0..0);
        let before = self.diags.len();
        let Some((replicas, replicas_span)) = pool.replicas.clone() else {
            self.push(
                Diagnostic::at(at, format!("`{key}` needs a pool")).hint(format!(
                    "give [service.{name}] `replicas = 1` (the size it starts at) and `max_replicas`"
                )),
            );
            return None;
        };
        let interval = self.positive(
            raw.interval.as_ref(),
            &format!("{key}.interval"),
            Duration::from_secs(15),
        );
        if let Some(v) = raw
            .interval
            .as_ref()
            .filter(|_| !interval.is_zero() && interval < MIN_INTERVAL)
        {
            self.push(
                Diagnostic::at(v.span(), format!("`{key}.interval` must be at least 100ms"))
                    .hint("each reading may run a command: e.g. \"1s\", \"15s\""),
            );
        }
        let depth = self.depth(raw.depth.as_ref(), &path, interval, env);
        let per_instance = match &raw.per_instance {
            Some(v) => self.count(v, &format!("{key}.per_instance"), 1),
            None => {
                self.push(
                    Diagnostic::at(at.clone(), format!("`{key}` has no `per_instance`"))
                        .hint("how many queued jobs one member takes on, e.g. per_instance = 5"),
                );
                None
            }
        };
        let bounds = self.bounds(raw, pool, &key, at);
        if let Some((min, max)) = bounds {
            self.replicas_within(replicas, replicas_span, (min, max), name);
        }
        let scale_in_window = match &raw.scale_in_window {
            Some(v) => self.duration(v, &format!("{key}.scale_in_window")),
            None => Some(Duration::from_secs(300)),
        };
        if let (Some(w), Some(span)) = (scale_in_window, raw.scale_in_window.as_ref()) {
            if w.as_millis() / interval.as_millis().max(1) > MAX_READINGS {
                self.push(
                    Diagnostic::at(span.span(), format!("`{key}.scale_in_window` holds more than {MAX_READINGS} readings"))
                        .hint("the window's readings are kept in memory: read less often (`interval`) or shorten the window"),
                );
            }
        }
        let scale_out_step = raw
            .scale_out_step
            .as_ref()
            .and_then(|v| self.step_limit(v, &format!("{key}.scale_out_step")));
        let scale_in_step = raw
            .scale_in_step
            .as_ref()
            .and_then(|v| self.count(v, &format!("{key}.scale_in_step"), 1));
        let on_error = self.on_error(raw.on_error.as_ref(), &key, bounds);
        let manual_hold = self.positive(
            raw.manual_hold.as_ref(),
            &format!("{key}.manual_hold"),
            Duration::from_secs(600),
        );
        if self.diags.len() > before {
            return None;
        }
        let (min, max) = bounds?;
        Some(AutoscaleSpec {
            depth: depth?,
            per_instance: per_instance?,
            min,
            max,
            interval,
            scale_in_window: scale_in_window?,
            scale_out_step,
            scale_in_step,
            on_error,
            manual_hold,
        })
    }

    /// `replicas`, the size the pool starts at, within `min..=max`.
    fn replicas_within(
        &mut self,
        replicas: u32,
        span: Range<usize>,
        (min, max): (u32, u32),
        name: &str,
    ) {
        if (min..=max).contains(&replicas) {
            return;
        }
        let (word, bound) = if replicas < min {
            ("below", format!("min = {min}"))
        } else {
            ("above", format!("max = {max}"))
        };
        let hint = if replicas < min {
            format!("`replicas` is the size the pool starts at: raise it, or set `min = {replicas}` in [service.{name}.autoscale]")
        } else {
            "`replicas` is the size the pool starts at: keep it within min and max".to_string()
        };
        self.push(
            Diagnostic::at(
                span,
                format!("`replicas = {replicas}` is {word} autoscale's `{bound}`"),
            )
            .hint(hint),
        );
    }

    /// `min` (default 1) and `max` (default `max_replicas`), fitting
    /// together and within `max_replicas`.
    fn bounds(
        &mut self,
        raw: &RawAutoscale,
        pool: &Pool<'_>,
        key: &str,
        at: Range<usize>,
    ) -> Option<(u32, u32)> {
        let min = match &raw.min {
            Some(v) => self.count(v, &format!("{key}.min"), 0)?,
            None => 1,
        };
        let max = match (&raw.max, &pool.max_replicas) {
            (Some(v), _) => self.count(v, &format!("{key}.max"), 1)?,
            (None, Some((m, _))) => *m,
            (None, None) => {
                self.push(
                    Diagnostic::at(at, format!("`{key}` has no `max`")).hint(format!(
                        "give max = N, or `max_replicas` on [service.{}]: an autoscaled pool needs a ceiling",
                        pool.name
                    )),
                );
                return None;
            }
        };
        if let (Some(v), Some((m, _))) = (&raw.max, &pool.max_replicas) {
            if max > *m {
                self.push(
                    Diagnostic::at(
                        v.span(),
                        format!("`max = {max}` is more than `max_replicas = {m}`"),
                    )
                    .hint("lower max, or raise max_replicas"),
                );
                return None;
            }
        }
        if min > max {
            let span = raw
                .min
                .as_ref()
                .map(Spanned::span)
                .or_else(|| raw.max.as_ref().map(Spanned::span))
                .unwrap_or(0..0);
            self.push(
                Diagnostic::at(span, format!("`min = {min}` is more than `max = {max}`"))
                    .hint("the pool is sized within min..max: lower min or raise max"),
            );
            return None;
        }
        Some((min, max))
    }

    /// `depth = { exec | http | file, field, timeout }`.
    fn depth(
        &mut self,
        raw: Option<&RawDepth>,
        parent: &[&str],
        interval: Duration,
        env: &BTreeMap<String, String>,
    ) -> Option<DepthSpec> {
        let mut path = parent.to_vec();
        path.push("depth");
        let key = path.join(".");
        let Some(raw) = raw else {
            if !self.was_blanked(&path) {
                let at = (self.input.key_span)(parent).unwrap_or(0..0);
                self.push(
                    Diagnostic::at(at, format!("`{}` has no `depth`", parent.join(".")))
                        .hint("say where the queue depth is read: depth = { exec = \"…\" }, { http = \"…\" } or { file = \"…\" }"),
                );
            }
            return None;
        };
        let kinds: Vec<(&str, Range<usize>)> = [
            ("exec", raw.exec.as_ref().map(Spanned::span)),
            ("http", raw.http.as_ref().map(Spanned::span)),
            ("file", raw.file.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
        match kinds.as_slice() {
            [] if self.was_blanked(&path) => return None,
            [] => {
                let at = (self.input.key_span)(&path).unwrap_or(0..0);
                self.push(
                    Diagnostic::at(at, format!("`{key}` has no source")).hint(format!(
                        "give exactly one of {SOURCES}, e.g. {{ exec = \"python3 queue_depth.py\" }}"
                    )),
                );
                return None;
            }
            [_] => {}
            [(a, _), (b, span), ..] => {
                self.push(
                    Diagnostic::at(
                        span.clone(),
                        format!("`{key}` has two sources, `{a}` and `{b}`"),
                    )
                    .hint("a depth is read from one place: keep exactly one"),
                );
                return None;
            }
        }
        let source = if let Some(c) = &raw.exec {
            self.command(c, &format!("{key}.exec"), env)
                .map(DepthSource::Exec)
        } else if let Some(u) = &raw.http {
            match self.http_probe(u, &key, env) {
                Some(ProbeKind::Http(url)) => Some(DepthSource::Http(url)),
                _ => None,
            }
        } else {
            raw.file.as_ref().and_then(|f| {
                if f.get_ref().trim().is_empty() {
                    self.push(
                        Diagnostic::at(f.span(), format!("`{key}.file` cannot be empty"))
                            .hint("a path, relative to the stack file's folder"),
                    );
                    return None;
                }
                Some(DepthSource::File(self.resolve(f.get_ref())))
            })
        };
        let field = match &raw.field {
            Some(f) if f.get_ref().split('.').any(str::is_empty) => {
                self.push(
                    Diagnostic::at(f.span(), format!("`{key}.field` is not a field path"))
                        .hint("a dotted path into the JSON answer, e.g. \"queue.waiting\" or \"items.0.count\""),
                );
                None
            }
            Some(f) => Some(f.get_ref().clone()),
            None => None,
        };
        let timeout = match &raw.timeout {
            Some(t) => self.positive(Some(t), &format!("{key}.timeout"), Duration::from_secs(1)),
            None => interval.min(Duration::from_secs(10)),
        };
        Some(DepthSpec {
            source: source?,
            field,
            timeout,
        })
    }

    /// A duration that must be more than zero, or `default`.
    fn positive(&mut self, v: Option<&Spanned<String>>, what: &str, default: Duration) -> Duration {
        let Some(s) = v else { return default };
        match self.duration(s, what) {
            Some(d) if d.is_zero() => {
                self.push(
                    Diagnostic::at(s.span(), format!("`{what}` must be more than 0"))
                        .hint("e.g. \"500ms\", \"15s\""),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// `scale_out_step = 2` or `"100%"`.
    fn step_limit(&mut self, v: &Spanned<toml::Value>, what: &str) -> Option<StepLimit> {
        let hint =
            "a number of members (e.g. 2) or a percentage of the current size (e.g. \"100%\")";
        let parsed = match v.get_ref() {
            toml::Value::Integer(n) => u32::try_from(*n)
                .ok()
                .filter(|n| *n >= 1)
                .map(StepLimit::Members),
            toml::Value::String(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|p| *p >= 1)
                .map(StepLimit::Percent),
            _ => None,
        };
        if parsed.is_none() {
            self.push(
                Diagnostic::at(v.span(), format!("bad `{what}`: at least 1 member or 1%"))
                    .hint(hint),
            );
        }
        parsed
    }

    /// `on_error = "hold"` (the default) or `{ fallback = N, after = K }`.
    fn on_error(
        &mut self,
        raw: Option<&RawOnError>,
        key: &str,
        bounds: Option<(u32, u32)>,
    ) -> OnError {
        let path: Vec<String> = format!("{key}.on_error")
            .split('.')
            .map(str::to_string)
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let at = (self.input.key_span)(&path).unwrap_or(0..0);
        match raw {
            None => OnError::Hold,
            Some(RawOnError::Word(w)) if w == "hold" => OnError::Hold,
            Some(RawOnError::Word(w)) => {
                let hint = suggest(w, ["hold"]).unwrap_or_else(|| {
                    "\"hold\" keeps the size; { fallback = N, after = 3 } goes to N after 3 failed readings in a row".into()
                });
                self.push(Diagnostic::at(at, format!("unknown `{key}.on_error` `{w}`")).hint(hint));
                OnError::Hold
            }
            Some(RawOnError::Fallback(f)) => {
                let after = match &f.after {
                    Some(a) => self.count(a, &format!("{key}.on_error.after"), 1),
                    None => Some(3),
                };
                let size = match &f.fallback {
                    Some(s) => self
                        .count(s, &format!("{key}.on_error.fallback"), 0)
                        .and_then(|n| {
                            let Some((min, max)) = bounds else {
                                return Some(n);
                            };
                            if (min..=max).contains(&n) {
                                Some(n)
                            } else {
                                self.push(
                                    Diagnostic::at(
                                        s.span(),
                                        format!("`fallback = {n}` is not within min {min} and max {max}"),
                                    )
                                    .hint("the fallback size is a size the pool may have"),
                                );
                                None
                            }
                        }),
                    None => {
                        self.push(
                            Diagnostic::at(at, format!("`{key}.on_error` has no `fallback`"))
                                .hint("give the size to go to, e.g. { fallback = 2, after = 3 }, or write on_error = \"hold\""),
                        );
                        None
                    }
                };
                match (size, after) {
                    (Some(size), Some(after)) => OnError::Fallback { size, after },
                    _ => OnError::Hold,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use crate::config::{load_with, CommandSpec, DepthSource, OnError, StepLimit};

    fn load(toml: &str) -> crate::config::Stack {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stack.toml");
        std::fs::write(&p, toml).unwrap();
        match load_with(&p, false, &|_| None) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_come_from_the_pool() {
        let s = load(
            "[service.w]\ncommand = \"x\"\nreplicas = 1\nmax_replicas = 4\n\
             [service.w.autoscale]\ndepth = { exec = \"q\" }\nper_instance = 5\n",
        );
        let a = s.process("w").unwrap().autoscale.clone().unwrap();
        assert_eq!(
            a.depth.source,
            DepthSource::Exec(CommandSpec::Shell("q".into()))
        );
        assert_eq!((a.min, a.max, a.per_instance), (1, 4, 5));
        assert_eq!(a.interval, Duration::from_secs(15));
        assert_eq!(a.depth.timeout, Duration::from_secs(10));
        assert_eq!(a.scale_in_window, Duration::from_secs(300));
        assert_eq!((a.scale_out_step, a.scale_in_step), (None, None));
        assert_eq!(a.on_error, OnError::Hold);
        assert_eq!(a.manual_hold, Duration::from_secs(600));
    }

    #[test]
    fn every_key_as_written() {
        let s = load(
            r#"
[service.w]
command = "x"
replicas = 0
max_replicas = 8

[service.w.autoscale]
depth = { http = "http://127.0.0.1:9/q", field = "queue.waiting", timeout = "300ms" }
per_instance = 3
min = 0
max = 6
interval = "2s"
scale_in_window = "20s"
scale_out_step = "50%"
scale_in_step = 2
on_error = { fallback = 2 }
manual_hold = "1m"

[service.v]
command = "x"
replicas = 2
autoscale = { depth = { file = "var/depth" }, per_instance = 1, max = 3, scale_out_step = 2, interval = "1s" }
"#,
        );
        let a = s.process("w").unwrap().autoscale.clone().unwrap();
        assert_eq!(
            a.depth.source,
            DepthSource::Http("http://127.0.0.1:9/q".into())
        );
        assert_eq!(a.depth.field.as_deref(), Some("queue.waiting"));
        assert_eq!(a.depth.timeout, Duration::from_millis(300));
        assert_eq!((a.min, a.max, a.per_instance), (0, 6, 3));
        assert_eq!(a.scale_out_step, Some(StepLimit::Percent(50)));
        assert_eq!(a.scale_in_step, Some(2));
        assert_eq!(a.on_error, OnError::Fallback { size: 2, after: 3 });
        assert_eq!(a.manual_hold, Duration::from_secs(60));
        let v = s.process("v").unwrap().autoscale.clone().unwrap();
        assert_eq!(v.depth.source, DepthSource::File(s.root.join("var/depth")));
        assert_eq!(v.scale_out_step, Some(StepLimit::Members(2)));
        assert_eq!(v.depth.timeout, Duration::from_secs(1), "the interval");
    }
}
