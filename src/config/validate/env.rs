//! Validating a process's environment: the layers (stack env files <
//! `[env]` < process env files < process `env`, over stackctl's own
//! environment), each variable's source, and the lookup templates expand
//! with.
//!
//! Owns: reading env files (their problems located), the layers as
//! written (for `export`), the merged environment. Must not touch: values
//! in messages (only names appear in a diagnostic).

use super::super::diag::{line_col, Diagnostic};
use super::super::env::{expand, parse_dotenv};
use super::super::model::*;
use super::*;
use std::collections::BTreeMap;
use toml::Spanned;

impl Ctx<'_> {
    /// A lookup over `layer` then stackctl's environment; `STACKCTL_STACK` is known.
    pub(super) fn lookup_in<'b>(
        &'b self,
        layer: &'b BTreeMap<String, String>,
        stack: &'b str,
    ) -> impl Fn(&str) -> Option<String> + 'b {
        move |k: &str| {
            if k == "STACKCTL_STACK" {
                return Some(stack.to_string());
            }
            layer.get(k).cloned().or_else(|| (self.input.os_env)(k))
        }
    }

    pub(super) fn env_files(
        &mut self,
        files: &EnvFiles,
        layer: &mut BTreeMap<String, String>,
        sources: &mut EnvSources,
        stack: &str,
    ) {
        for entry in &files.0 {
            let span = entry.span();
            let e = entry.get_ref();
            let path = self.resolve(&e.path);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    if !e.optional {
                        self.push(
                            Diagnostic::at(span, format!("env file `{}` does not exist", e.path))
                                .hint(format!(
                                    "create it, or write {{ path = \"{}\", optional = true }}",
                                    e.path
                                )),
                        );
                    }
                    continue;
                }
                Err(err) => {
                    self.push(Diagnostic::at(
                        span,
                        format!("failed to read env file `{}`: {err}", e.path),
                    ));
                    continue;
                }
            };
            let entries = match parse_dotenv(&text) {
                Ok(v) => v,
                Err(err) => {
                    self.push(
                        Diagnostic::at(
                            span,
                            format!("env file `{}` line {}: {}", e.path, err.line, err.message),
                        )
                        .hint("env files hold KEY=VALUE lines, `#` comments and blank lines (the line is not shown: it may hold a secret)"),
                    );
                    continue;
                }
            };
            for d in entries {
                let value = if d.literal {
                    Ok(d.value)
                } else {
                    let lookup = self.lookup_in(layer, stack);
                    expand(&d.value, &lookup)
                };
                match value {
                    Ok(v) => {
                        sources.insert(
                            d.key.clone(),
                            EnvSource {
                                file: path.clone(),
                                line: d.line,
                            },
                        );
                        layer.insert(d.key, v);
                    }
                    Err(err) => self.push(
                        Diagnostic::at(
                            span.clone(),
                            format!("env file `{}` line {}: {err}", e.path, d.line),
                        )
                        .maybe_hint(unset_hint(&err)),
                    ),
                }
            }
        }
    }

    /// The layers `env_file` and an env table add, as written (for `export`).
    pub(super) fn env_layers(
        &self,
        files: Option<&EnvFiles>,
        table: Option<&BTreeMap<String, Spanned<toml::Value>>>,
        at: &[&str],
    ) -> Vec<EnvLayer> {
        let mut out: Vec<EnvLayer> = files
            .into_iter()
            .flat_map(|f| &f.0)
            .map(|e| EnvLayer::File {
                path: self.resolve(&e.get_ref().path),
                written: e.get_ref().path.clone(),
                optional: e.get_ref().optional,
            })
            .collect();
        let mut entries: Vec<(usize, String, String)> = Vec::new();
        for (k, v) in table.into_iter().flatten() {
            let template = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => continue,
            };
            let mut path = at.to_vec();
            path.push(k);
            let start = (self.input.key_span)(&path).map_or(0, |s| s.start);
            entries.push((start, k.clone(), template));
        }
        if !entries.is_empty() {
            entries.sort();
            out.push(EnvLayer::Table {
                at: at.join("."),
                entries: entries.into_iter().map(|(_, k, t)| (k, t)).collect(),
            });
        }
        out
    }

    pub(super) fn env_table(
        &mut self,
        table: Option<BTreeMap<String, Spanned<toml::Value>>>,
        at: &[&str],
        layer: &mut BTreeMap<String, String>,
        sources: &mut EnvSources,
        stack: &str,
    ) {
        for (k, v) in self.by_place(table, at) {
            let key = k.get_ref().clone();
            let label = format!("{}.{key}", at.join("."));
            if !valid_var(&key) {
                self.push(
                    Diagnostic::at(k.span(), format!("bad variable name `{key}`"))
                        .hint("use letters, digits and `_`, not starting with a digit"),
                );
            }
            let template = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    self.push(
                        Diagnostic::at(v.span(), format!("`{label}` must be a string"))
                            .hint("environment values are strings, e.g. KEY = \"value\"")
                            .secret(),
                    );
                    continue;
                }
            };
            let result = {
                let lookup = self.lookup_in(layer, stack);
                expand(&template, &lookup)
            };
            match result {
                Ok(val) => {
                    let line = line_col(self.input.src, k.span().start).0;
                    let file = self.input.file.to_path_buf();
                    sources.insert(key.clone(), EnvSource { file, line });
                    layer.insert(key, val);
                }
                Err(err) => self.push(
                    Diagnostic::at(v.span(), format!("in `{label}`: {err}"))
                        .maybe_hint(unset_hint(&err))
                        .secret(),
                ),
            }
        }
    }
}
