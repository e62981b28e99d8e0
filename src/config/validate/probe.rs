//! Validating probes (`ready`, `health`, the keeper's `prereqs`): exactly
//! one kind, its value (a URL, an address, a regex, a command), and the
//! settings that mean something for its role.
//!
//! Owns: those checks and the probe kinds' defaults. Must not touch:
//! probing (`probe`).

use super::super::diag::Diagnostic;
use super::*;
use regex::Regex;
use std::collections::BTreeMap;
use toml::Spanned;

impl Ctx<'_> {
    pub(super) fn probe(
        &mut self,
        r: &RawProbe,
        role: Role,
        path: &[&str],
        env: &BTreeMap<String, String>,
    ) -> Option<Probe> {
        let key = path.join(".");
        let before = self.diags.len();
        let first = self.probe_key(r, role, path)?;
        self.probe_settings_fit(r, role);
        let timeout = r
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, &format!("{key}.timeout")));
        let interval = r
            .interval
            .as_ref()
            .and_then(|t| self.duration(t, &format!("{key}.interval")));
        let failures = r
            .failures
            .as_ref()
            .and_then(|f| self.count(f, &format!("{key}.failures"), 1));
        let kind = self.probe_kind(first, r, &key, env);
        if self.diags.len() > before {
            return None;
        }
        Some(Probe {
            kind: kind?,
            timeout,
            interval,
            failures,
        })
    }

    /// The one probe kind of `r`; every problem with the kinds (none, two,
    /// one a prereq cannot be) is pushed. `None`: nothing to check further.
    pub(super) fn probe_key(
        &mut self,
        r: &RawProbe,
        role: Role,
        path: &[&str],
    ) -> Option<ProbeKey> {
        let key = path.join(".");
        let at = (self.input.key_span)(path).unwrap_or(0..0);
        let kinds = r.kinds();
        let allowed = if role == Role::Prereq {
            "http, tcp or exec"
        } else {
            "http, tcp, exec, log, notify or alive"
        };
        match kinds.as_slice() {
            [] if self.was_blanked(path) => return None,
            [] => {
                self.push(
                    Diagnostic::at(at, format!("`{key}` has no probe kind")).hint(format!(
                        "give exactly one of {allowed}, e.g. {{ tcp = \"127.0.0.1:8000\" }}"
                    )),
                );
                return None;
            }
            [_] => {}
            [(a, _), (b, span), ..] => {
                self.push(
                    Diagnostic::at(
                        span.clone(),
                        format!(
                            "`{key}` has two probe kinds, `{}` and `{}`",
                            a.as_str(),
                            b.as_str()
                        ),
                    )
                    .hint("a probe checks one thing: keep exactly one kind"),
                );
            }
        }
        if role == Role::Prereq {
            for (k, s) in kinds.iter().filter(|(k, _)| k.watches_a_process()) {
                let k = k.as_str();
                self.push(
                    Diagnostic::at(s.clone(), format!("a keeper prereq cannot be `{k}`")).hint(
                        format!("`{k}` watches a process; a prereq can be {allowed}"),
                    ),
                );
            }
        }
        kinds.first().map(|(k, _)| *k)
    }

    /// `timeout`, `interval` and `failures` only where they mean something.
    pub(super) fn probe_settings_fit(&mut self, r: &RawProbe, role: Role) {
        if role == Role::Prereq {
            for (k, s) in [
                ("timeout", r.timeout.as_ref().map(Spanned::span)),
                ("interval", r.interval.as_ref().map(Spanned::span)),
                ("failures", r.failures.as_ref().map(Spanned::span)),
            ] {
                if let Some(s) = s {
                    self.push(
                        Diagnostic::at(s, format!("`{k}` is not used in a keeper prereq"))
                            .hint("a prereq is checked once per tick; remove it"),
                    );
                }
            }
        }
        if role == Role::Ready {
            if let Some(f) = &r.failures {
                self.push(
                    Diagnostic::at(f.span(), "`failures` applies to `health`, not `ready`")
                        .hint("`ready` retries every `interval` until `timeout`"),
                );
            }
        }
    }

    /// The probe of kind `k` (its value checked), `None` with a diagnostic.
    pub(super) fn probe_kind(
        &mut self,
        k: ProbeKey,
        r: &RawProbe,
        key: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<ProbeKind> {
        match k {
            ProbeKey::Http => self.http_probe(r.http.as_ref()?, key, env),
            ProbeKey::Tcp => self.tcp_probe(r.tcp.as_ref()?, key, env),
            ProbeKey::Exec => self
                .command(r.exec.as_ref()?, &format!("{key}.exec"), env)
                .map(ProbeKind::Exec),
            ProbeKey::Log => self.log_probe(r.log.as_ref()?, key),
            ProbeKey::Notify => {
                let n = r.notify.as_ref()?;
                if *n.get_ref() {
                    Some(ProbeKind::Notify)
                } else {
                    self.push(
                        Diagnostic::at(n.span(), format!("`{key}.notify` can only be `true`"))
                            .hint("remove `notify` to use another probe kind"),
                    );
                    None
                }
            }
            ProbeKey::Alive => {
                let a = r.alive.as_ref()?;
                self.duration(a, &format!("{key}.alive"))
                    .map(ProbeKind::Alive)
            }
        }
    }

    pub(super) fn http_probe(
        &mut self,
        u: &Spanned<String>,
        key: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<ProbeKind> {
        let v = self.template(u.get_ref(), u.span(), &format!("{key}.http"), env)?;
        let rest = v
            .strip_prefix("http://")
            .or_else(|| v.strip_prefix("https://"));
        match rest {
            Some(h) if !h.is_empty() && !h.starts_with('/') => {
                Some(ProbeKind::Http(u.get_ref().clone()))
            }
            Some(_) => {
                self.push(
                    Diagnostic::at(u.span(), format!("`{key}.http` has no host"))
                        .hint("e.g. \"http://127.0.0.1:8000/health\""),
                );
                None
            }
            None => {
                self.push(Diagnostic::at(u.span(), format!("`{key}.http` must start with http:// or https://")).hint("e.g. \"http://127.0.0.1:8000/health\"; for a plain port use `tcp = \"host:port\"`"));
                None
            }
        }
    }

    pub(super) fn tcp_probe(
        &mut self,
        a: &Spanned<String>,
        key: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<ProbeKind> {
        let v = self.template(a.get_ref(), a.span(), &format!("{key}.tcp"), env)?;
        let ok = v
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if ok {
            Some(ProbeKind::Tcp(a.get_ref().clone()))
        } else {
            self.push(
                Diagnostic::at(a.span(), format!("`{key}.tcp` must be \"host:port\""))
                    .hint("e.g. \"127.0.0.1:5432\" (port 1-65535)"),
            );
            None
        }
    }

    pub(super) fn log_probe(&mut self, l: &Spanned<String>, key: &str) -> Option<ProbeKind> {
        match Regex::new(l.get_ref()) {
            Ok(re) => Some(ProbeKind::Log(re)),
            Err(e) => {
                let why = e.to_string();
                let last = why
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim_start_matches("error: ")
                    .to_string();
                self.push(Diagnostic::at(l.span(), format!("`{key}.log` is not a valid regex: {last}")).hint("the pattern is a Rust regex (https://docs.rs/regex); escape special characters with `\\\\`"));
                None
            }
        }
    }
}
