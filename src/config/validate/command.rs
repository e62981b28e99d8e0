//! Validating commands and templates: that every `${…}` expands for any
//! instance, the string and argv forms, `pre_start` lists, and the warning
//! about a lone `$$`.
//!
//! Owns: those checks. Must not touch: running anything.

use super::super::diag::Diagnostic;
use super::super::env::{expand, lone_dollar_escapes, ExpandError};
use super::*;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

impl Ctx<'_> {
    /// Proves `template` expands for any instance (the `STACKCTL_*` are set).
    pub(super) fn template(
        &mut self,
        template: &str,
        span: Range<usize>,
        what: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<String> {
        let lookup = |k: &str| {
            if SPAWN_VARS.contains(&k) {
                return Some("1".to_string());
            }
            env.get(k).cloned().or_else(|| (self.input.os_env)(k))
        };
        match expand(template, &lookup) {
            Ok(v) => Some(v),
            Err(err) => {
                let span = match &err {
                    ExpandError::Unset(name) => self.narrow(span, &format!("${{{name}"), true),
                    ExpandError::Unterminated | ExpandError::BadSyntax => {
                        self.narrow(span, "${", false)
                    }
                };
                self.push(
                    Diagnostic::at(span, format!("in `{what}`: {err}"))
                        .maybe_hint(unset_hint(&err)),
                );
                None
            }
        }
    }

    pub(super) fn command(
        &mut self,
        c: &Spanned<RawCommand>,
        what: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<CommandSpec> {
        let span = c.span();
        match c.get_ref() {
            RawCommand::Shell(s) => {
                if s.trim().is_empty() {
                    self.push(
                        Diagnostic::at(span, format!("empty `{what}`"))
                            .hint("write the command line to run, e.g. \"python -m app\""),
                    );
                    return None;
                }
                self.template(s, span.clone(), what, env)?;
                self.lone_escape(s, span, what);
                Some(CommandSpec::Shell(s.clone()))
            }
            RawCommand::Argv(v) => {
                if v.is_empty() || v[0].get_ref().trim().is_empty() {
                    let at = v.first().map_or(span, Spanned::span);
                    self.push(Diagnostic::at(at, format!("empty `{what}`")).hint(
                        "an array command starts with the program, e.g. [\"uvicorn\", \"app:app\"]",
                    ));
                    return None;
                }
                let mut ok = true;
                for a in v {
                    ok &= self.template(a.get_ref(), a.span(), what, env).is_some();
                    self.lone_escape(a.get_ref(), a.span(), what);
                }
                ok.then(|| CommandSpec::Argv(v.iter().map(|a| a.get_ref().clone()).collect()))
            }
        }
    }

    /// Warns about a `$$` in a command that is not before `{`: it becomes
    /// a single `$` (so `kill -HUP $$` runs `kill -HUP $`), which is rarely
    /// what a shell user meant.
    pub(super) fn lone_escape(&mut self, template: &str, span: Range<usize>, what: &str) {
        if lone_dollar_escapes(template).is_empty() {
            return;
        }
        // The same `$$` in the file's text (a TOML string has no escape for `$`).
        let at = self
            .input
            .src
            .get(span.clone())
            .and_then(|t| lone_dollar_escapes(t).first().copied())
            .map_or(span.clone(), |i| span.start + i..span.start + i + 2);
        self.warnings.push(
            Diagnostic::at(at, format!("`$$` in `{what}` becomes a single `$`"))
                .hint("`$$` is stackctl's escape for a literal `$`: for the shell's `$$` (its pid) write `$$$$`; a `$` that is not before `{` is kept as it is, so `$$` is needed only for a literal `${`"),
        );
    }

    pub(super) fn commands(
        &mut self,
        c: &Spanned<Commands>,
        what: &str,
        env: &BTreeMap<String, String>,
    ) -> Vec<CommandSpec> {
        let mut out = Vec::new();
        match c.get_ref() {
            Commands::One(s) => {
                let one = Spanned::new(c.span(), RawCommand::Shell(s.clone()));
                out.extend(self.command(&one, what, env));
            }
            Commands::Many(v) => {
                for rc in v {
                    out.extend(self.command(rc, what, env));
                }
            }
        }
        out
    }
}
