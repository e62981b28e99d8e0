//! From the raw file to the model, collecting every problem at once.
//!
//! Owns: defaults, path resolution against the stack file's folder, the
//! environment layers (stack env files < `[env]` < process env files <
//! process `env`, all over stackctl's own environment), proving that every
//! `${…}` template expands, probes ("exactly one kind"), names, numbers,
//! durations, signals, dependencies and cycles. Each problem becomes a
//! located [`Diagnostic`]; a [`Stack`] comes out only when there are none.
//! Must not touch: processes, sockets; never puts an env value into a message.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use regex::Regex;
use toml::Spanned;

use super::diag::{line_col, normalize, suggest, Diagnostic};
use super::duration::{parse_duration, parse_size, DURATION_HINT, SIZE_HINT};
use super::env::{expand, lone_dollar_escapes, parse_dotenv, ExpandError};
use super::graph;
use super::model::*;
use super::raw::*;

mod autoscale;
mod listen;
mod ops;

/// The three variables only known per instance at spawn time.
pub(crate) const SPAWN_VARS: [&str; 3] =
    ["STACKCTL_STACK", "STACKCTL_PROCESS", "STACKCTL_INSTANCE"];

/// Everything `validate` needs from outside.
pub(crate) struct Input<'a> {
    /// Absolute path of the stack file.
    pub(crate) file: &'a Path,
    /// stackctl's own environment.
    pub(crate) os_env: &'a dyn Fn(&str) -> Option<String>,
    /// Report unset `require_env` variables too (`check`).
    pub(crate) require_env: bool,
    /// The span of the key at a path of keys, e.g. `["service", "api"]`.
    pub(crate) key_span: &'a dyn Fn(&[&str]) -> Option<Range<usize>>,
    /// The stack file's text.
    pub(crate) src: &'a str,
    /// Keys whose values had the wrong TOML type (already reported and
    /// removed): "missing" checks stay quiet about them.
    pub(crate) blanked: &'a [Vec<String>],
}

struct Ctx<'a> {
    input: &'a Input<'a>,
    root: PathBuf,
    diags: Vec<Diagnostic>,
    /// Not problems, but probably not what was meant (rendered as `warning:`).
    warnings: Vec<Diagnostic>,
    /// Where each `(process, variable)` of `require_env` is written.
    require_spans: BTreeMap<(String, String), Range<usize>>,
    /// Every `listen` address, with its process and where it is written.
    listens: listen::Placed,
    /// `[stack]`'s hook settings, which a process's fall back on.
    stack_hook: ops::HookParts,
}

/// Where a probe is used: decides which keys make sense.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Ready,
    Health,
    Prereq,
}

struct Probe {
    kind: ProbeKind,
    timeout: Option<Duration>,
    interval: Option<Duration>,
    failures: Option<u32>,
}

/// Turns `raw` into a [`Stack`] and the warnings about it (valid, but
/// probably not what was meant), or every problem found.
pub(crate) fn validate(
    raw: RawFile,
    input: &Input<'_>,
) -> Result<(Stack, Vec<Diagnostic>), Vec<Diagnostic>> {
    let root = input
        .file
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut cx = Ctx {
        input,
        root,
        diags: Vec::new(),
        warnings: Vec::new(),
        require_spans: BTreeMap::new(),
        listens: Vec::new(),
        stack_hook: ops::HookParts::default(),
    };
    let stack = cx.stack(raw);
    if cx.diags.is_empty() {
        Ok((stack, cx.warnings))
    } else {
        Err(cx.diags)
    }
}

fn kind_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Task => "task",
        Kind::Service => "service",
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_var(s: &str) -> bool {
    let mut it = s.chars();
    matches!(it.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && it.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn unset_hint(e: &ExpandError) -> Option<String> {
    match e {
        ExpandError::Unset(n) if SPAWN_VARS.contains(&n.as_str()) => Some(format!(
            "`{n}` is only known when an instance starts: use it in `command`, not here"
        )),
        ExpandError::Unset(n) => Some(format!(
            "set `{n}` in [env], an env_file or stackctl's environment, or give a default: `${{{n}:-value}}`"
        )),
        ExpandError::Unterminated => Some("close it with `}`, or write `$$` for a literal `$`".into()),
        ExpandError::BadSyntax => Some("write `${NAME}` or `${NAME:-default}`; `$$` is a literal `$`".into()),
    }
}

impl Ctx<'_> {
    /// Narrows `span` to where `needle` is written inside it (through the
    /// closing `}` when `to_brace`), when the source shows it literally.
    fn narrow(&self, span: Range<usize>, needle: &str, to_brace: bool) -> Range<usize> {
        let Some(text) = self.input.src.get(span.clone()) else {
            return span;
        };
        let Some(at) = text.find(needle) else {
            return span;
        };
        let start = span.start + at;
        let end = if to_brace {
            text[at..].find('}').map_or(span.end, |e| start + e + 1)
        } else {
            start + needle.len()
        };
        start..end
    }

    /// Whether a key at or under `prefix` was removed for a type error.
    fn was_blanked(&self, prefix: &[&str]) -> bool {
        self.input
            .blanked
            .iter()
            .any(|p| p.len() >= prefix.len() && p.iter().zip(prefix).all(|(a, b)| a == b))
    }

    /// The entries of a table keyed by names, each with its key's place, in file order.
    fn by_place<V>(
        &self,
        map: Option<BTreeMap<String, V>>,
        parent: &[&str],
    ) -> Vec<(Spanned<String>, V)> {
        let mut v: Vec<(Spanned<String>, V)> = map
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let mut path: Vec<&str> = parent.to_vec();
                path.push(&k);
                let span = (self.input.key_span)(&path).unwrap_or(0..0);
                (Spanned::new(span, k), v)
            })
            .collect();
        v.sort_by_key(|(k, _)| k.span().start);
        v
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn resolve(&self, p: &str) -> PathBuf {
        normalize(&self.root.join(p))
    }

    fn duration(&mut self, v: &Spanned<String>, what: &str) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.push(
                    Diagnostic::at(v.span(), format!("bad duration for `{what}`: {e}"))
                        .hint(DURATION_HINT),
                );
                None
            }
        }
    }

    fn opt_duration(
        &mut self,
        v: &Option<Spanned<String>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        v.as_ref()
            .and_then(|v| self.duration(v, what))
            .unwrap_or(default)
    }

    fn count(&mut self, v: &Spanned<i64>, what: &str, min: i64) -> Option<u32> {
        let n = *v.get_ref();
        if n < 0 {
            self.push(
                Diagnostic::at(v.span(), format!("`{what}` cannot be negative"))
                    .hint(format!("use a whole number of at least {min}")),
            );
            None
        } else if n < min {
            self.push(Diagnostic::at(
                v.span(),
                format!("`{what}` must be at least {min}"),
            ));
            None
        } else if n > i64::from(u32::MAX) {
            self.push(Diagnostic::at(v.span(), format!("`{what}` is too large")));
            None
        } else {
            u32::try_from(n).ok()
        }
    }

    fn stack(&mut self, raw: RawFile) -> Stack {
        let rs = raw.stack.unwrap_or_default();
        let name = match &rs.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.push(Diagnostic::at(n.span(), "`name` cannot be empty"));
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => self
                .root
                .file_name()
                .map_or_else(|| "stack".to_string(), |s| s.to_string_lossy().into_owned()),
        };
        for (key, v) in [("state_dir", &rs.state_dir), ("lock_file", &rs.lock_file)] {
            if let Some(s) = v.as_ref().filter(|s| s.get_ref().is_empty()) {
                self.push(Diagnostic::at(s.span(), format!("`{key}` cannot be empty")));
            }
        }
        let (state_dir, lock_file) = state_paths(
            &self.root,
            rs.state_dir.as_ref().map(|s| s.get_ref().as_str()),
            rs.lock_file.as_ref().map(|s| s.get_ref().as_str()),
        );
        let stop_timeout = self.opt_duration(
            &rs.stop_timeout,
            "stack.stop_timeout",
            Duration::from_secs(10),
        );
        let logs = self.logs(rs.logs);
        let stack_hook = ops::RawHook {
            command: rs.on_failure.as_ref(),
            timeout: rs.on_failure_timeout.as_ref(),
            exits: rs.on_failure_exits.as_ref(),
        };
        self.stack_hook = self.hook(&stack_hook, "stack", None);

        // Environment layers shared by every process: stack env files, then [env].
        let mut base: BTreeMap<String, String> = BTreeMap::new();
        let mut base_sources = EnvSources::new();
        let base_layers = self.env_layers(rs.env_file.as_ref(), raw.env.as_ref(), &["env"]);
        if let Some(files) = &rs.env_file {
            self.env_files(files, &mut base, &mut base_sources, &name);
        }
        self.env_table(raw.env, &["env"], &mut base, &mut base_sources, &name);

        let mut processes = Vec::new();
        let mut spans: Vec<(Range<usize>, Vec<Range<usize>>)> = Vec::new();
        let tasks = self.by_place(raw.task, &["task"]);
        let services = self.by_place(raw.service, &["service"]);
        let mut seen: BTreeMap<String, (Kind, Range<usize>)> = BTreeMap::new();
        for (kind, list) in [(Kind::Task, tasks), (Kind::Service, services)] {
            for (pname, rp) in list {
                let n = pname.get_ref().clone();
                if !valid_name(&n) {
                    self.push(
                        Diagnostic::at(pname.span(), format!("bad {kind} name `{n}`"))
                            .hint("names use letters, digits, `_` and `-` (a `.` is reserved for pool instances like `worker.2`)"),
                    );
                }
                if let Some((other, first)) = seen.get(&n) {
                    // Point at whichever comes later in the file.
                    let span = if first.start > pname.span().start {
                        first.clone()
                    } else {
                        pname.span()
                    };
                    self.push(
                        Diagnostic::at(span, format!("`{n}` is both a {other} and a {kind}"))
                            .hint("task and service names share one namespace; rename one of them"),
                    );
                }
                seen.insert(n.clone(), (kind, pname.span()));
                // One span per distinct name, in order: `process` drops repeats the same way.
                let mut dep_spans: Vec<Range<usize>> = Vec::new();
                let mut dep_seen: Vec<&str> = Vec::new();
                for d in rp.depends_on.iter().flatten() {
                    if !dep_seen.contains(&d.get_ref().as_str()) {
                        dep_seen.push(d.get_ref());
                        dep_spans.push(d.span());
                    }
                }
                spans.push((pname.span(), dep_spans));
                let p = self.process(
                    &pname,
                    kind,
                    rp,
                    (&base, &base_sources, &base_layers),
                    stop_timeout,
                    &name,
                );
                processes.push(p);
            }
        }
        self.dependencies(&processes, &spans);
        let listens = std::mem::take(&mut self.listens);
        self.listen_conflicts(&listens);
        self.scheduled_dependencies(&processes, &spans);

        let keeper = raw.keeper.map(|k| self.keeper(k, &processes, &base));
        let export = self.export(raw.export, &processes);

        let stack = Stack {
            name,
            file: self.input.file.to_path_buf(),
            root: self.root.clone(),
            state_dir,
            lock_file,
            stop_timeout,
            logs,
            processes,
            keeper,
            warnings: Vec::new(),
            source: self.input.src.to_string(),
            export,
            on_failure: self.stack_hook.over(&ops::HookParts::default()),
        };
        if self.input.require_env {
            let missing = super::env::missing_with(&stack, self.input.os_env);
            let cwd = std::env::current_dir().unwrap_or_default();
            let show = |f: &Path| super::diag::shown_path(f, &cwd);
            for (pname, var) in missing {
                let span = spans
                    .iter()
                    .zip(&stack.processes)
                    .find(|(_, p)| p.name == pname)
                    .map(|(s, _)| s.0.clone());
                let span = self
                    .require_spans
                    .get(&(pname.clone(), var.clone()))
                    .cloned()
                    .or(span);
                let hint = match stack.process(&pname) {
                    Some(p) => super::env::missing_env_hint(p, &var, self.input.os_env, &show),
                    None => format!("set `{var}` in the shell, in [env] or in an env_file"),
                };
                let mut d = Diagnostic::nowhere(format!(
                    "`{pname}` requires `{var}`, which is unset or empty"
                ))
                .hint(hint);
                d.span = span;
                self.push(d);
            }
        }
        stack
    }

    fn logs(&mut self, raw: Option<RawLogs>) -> LogSettings {
        let mut out = LogSettings::default();
        let Some(raw) = raw else { return out };
        if let Some(v) = &raw.max_size {
            match v.get_ref() {
                toml::Value::String(s) => match parse_size(s) {
                    Ok(0) => self.push(
                        Diagnostic::at(v.span(), "`max_size` must be more than 0").hint(SIZE_HINT),
                    ),
                    Ok(n) => out.max_size = n,
                    Err(e) => self.push(
                        Diagnostic::at(v.span(), format!("bad size for `max_size`: {e}"))
                            .hint(SIZE_HINT),
                    ),
                },
                toml::Value::Integer(n) if *n > 0 => out.max_size = n.unsigned_abs(),
                toml::Value::Integer(_) => {
                    self.push(
                        Diagnostic::at(v.span(), "`max_size` must be more than 0").hint(SIZE_HINT),
                    );
                }
                _ => self.push(
                    Diagnostic::at(v.span(), "`max_size` must be a size like \"50MB\"")
                        .hint(SIZE_HINT),
                ),
            }
        }
        if let Some(k) = &raw.keep {
            if let Some(k) = self.count(k, "stack.logs.keep", 0) {
                out.keep = k;
            }
        }
        if let Some(m) = raw.markers {
            out.markers = m;
        }
        if let Some(t) = raw.timestamps {
            out.timestamps = t;
        }
        out
    }

    /// A lookup over `layer` then stackctl's environment; `STACKCTL_STACK` is known.
    fn lookup_in<'b>(
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

    fn env_files(
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
    fn env_layers(
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

    /// `[export]`: images name processes; `workdir` is absolute.
    fn export(&mut self, raw: Option<RawExport>, procs: &[ProcessSpec]) -> ExportSpec {
        let mut out = ExportSpec::default();
        let Some(raw) = raw else { return out };
        let image_ok = |cx: &mut Self, v: &Spanned<String>, what: &str| {
            let i = v.get_ref();
            if i.trim().is_empty() || i.chars().any(char::is_whitespace) {
                cx.push(
                    Diagnostic::at(v.span(), format!("`{what}` must be an image reference"))
                        .hint("e.g. \"ghcr.io/acme/app:1.4\" (no spaces)"),
                );
                false
            } else {
                true
            }
        };
        if let Some(i) = &raw.image {
            if image_ok(self, i, "export.image") {
                out.image = Some(i.get_ref().clone());
            }
        }
        let images = raw.images;
        for (name, img) in self.by_place(images, &["export", "images"]) {
            let n = name.get_ref();
            if !procs.iter().any(|p| &p.name == n) {
                let hint = suggest(n, procs.iter().map(|p| p.name.as_str())).unwrap_or_else(|| {
                    "the keys of `export.images` are task and service names".to_string()
                });
                self.push(
                    Diagnostic::at(
                        name.span(),
                        format!("`export.images` names `{n}`, which is not a task or service"),
                    )
                    .hint(hint),
                );
                continue;
            }
            if image_ok(self, &img, &format!("export.images.{n}")) {
                out.images.insert(n.clone(), img.get_ref().clone());
            }
        }
        if let Some(w) = &raw.workdir {
            if w.get_ref().starts_with('/') {
                out.workdir = Some(w.get_ref().trim_end_matches('/').to_string())
                    .filter(|w| !w.is_empty())
                    .or(Some("/".into()));
            } else {
                self.push(
                    Diagnostic::at(w.span(), "`export.workdir` must be an absolute path")
                        .hint("the stack's folder inside the image, e.g. \"/app\""),
                );
            }
        }
        out
    }

    fn env_table(
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

    /// Proves `template` expands for any instance (the `STACKCTL_*` are set).
    fn template(
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

    fn command(
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
    fn lone_escape(&mut self, template: &str, span: Range<usize>, what: &str) {
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

    fn commands(
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

    fn probe(
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
    fn probe_key(&mut self, r: &RawProbe, role: Role, path: &[&str]) -> Option<ProbeKey> {
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
    fn probe_settings_fit(&mut self, r: &RawProbe, role: Role) {
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
    fn probe_kind(
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

    fn http_probe(
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

    fn tcp_probe(
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

    fn log_probe(&mut self, l: &Spanned<String>, key: &str) -> Option<ProbeKind> {
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

    fn process(
        &mut self,
        pname: &Spanned<String>,
        kind: Kind,
        rp: RawProcess,
        (base, base_sources, base_layers): (&BTreeMap<String, String>, &EnvSources, &[EnvLayer]),
        stack_stop_timeout: Duration,
        stack: &str,
    ) -> ProcessSpec {
        let name = pname.get_ref().clone();
        let table = format!("{kind}.{name}");
        let at = |k: &str| format!("{table}.{k}");
        let mut env_layers = base_layers.to_vec();
        env_layers.extend(self.env_layers(
            rp.env_file.as_ref(),
            rp.env.as_ref(),
            &[kind_key(kind), &name, "env"],
        ));
        let mut env = base.clone();
        let mut env_sources = base_sources.clone();
        if let Some(files) = &rp.env_file {
            self.env_files(files, &mut env, &mut env_sources, stack);
        }
        let env_at = [kind_key(kind), &name, "env"];
        self.env_table(rp.env, &env_at, &mut env, &mut env_sources, stack);
        let command = match &rp.command {
            Some(c) => self.command(c, &at("command"), &env),
            None if self.was_blanked(&[kind_key(kind), &name, "command"]) => None,
            None => {
                self.push(
                    Diagnostic::at(pname.span(), format!("`[{table}]` has no `command`"))
                        .hint("add command = \"…\" (run by /bin/sh -c) or command = [\"program\", \"arg\"]"),
                );
                None
            }
        };
        let cwd = match &rp.cwd {
            Some(c) => {
                let result = {
                    let lookup = self.lookup_in(&env, stack);
                    expand(c.get_ref(), &lookup)
                };
                match result {
                    Ok(v) => self.resolve(&v),
                    Err(err) => {
                        self.push(
                            Diagnostic::at(c.span(), format!("in `{}`: {err}", at("cwd")))
                                .maybe_hint(unset_hint(&err)),
                        );
                        self.root.clone()
                    }
                }
            }
            None => self.root.clone(),
        };
        let pre_start = rp
            .pre_start
            .as_ref()
            .map(|c| self.commands(c, &at("pre_start"), &env))
            .unwrap_or_default();
        let mut require_env = Vec::new();
        for v in rp.require_env.iter().flatten() {
            if valid_var(v.get_ref()) {
                self.require_spans
                    .insert((name.clone(), v.get_ref().clone()), v.span());
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
        let task_only_gate = |cx: &mut Self, probe: &Option<RawProbe>, key: &str| {
            if let (Kind::Task, Some(_)) = (kind, probe) {
                let at = (cx.input.key_span)(&["task", &name, key]).unwrap_or(0..0);
                cx.push(
                    Diagnostic::at(at, format!("task `{name}` cannot have `{key}`"))
                        .hint("a task is done when it exits 0, and whatever depends on it waits for that; make it a [service] to probe it"),
                );
                true
            } else {
                false
            }
        };
        let ready = if task_only_gate(self, &rp.ready, "ready") {
            None
        } else {
            rp.ready
                .as_ref()
                .and_then(|p| self.probe(p, Role::Ready, &[kind_key(kind), &name, "ready"], &env))
                .map(|p| ReadySpec {
                    probe: p.kind,
                    timeout: p.timeout.unwrap_or(Duration::from_secs(60)),
                    interval: p.interval.unwrap_or(Duration::from_millis(250)),
                })
        };
        let health = if task_only_gate(self, &rp.health, "health") {
            None
        } else {
            rp.health
                .as_ref()
                .and_then(|p| self.probe(p, Role::Health, &[kind_key(kind), &name, "health"], &env))
                .map(|p| {
                    let interval = p.interval.unwrap_or(Duration::from_secs(10));
                    HealthSpec {
                        probe: p.kind,
                        interval,
                        timeout: p.timeout.unwrap_or(interval.min(Duration::from_secs(10))),
                        failures: p.failures.unwrap_or(3),
                    }
                })
        };
        let default_restart = match kind {
            Kind::Task => RestartPolicy::Never,
            Kind::Service => RestartPolicy::OnFailure,
        };
        let restart = match &rp.restart {
            None => default_restart,
            Some(r) => match r.get_ref().as_str() {
                "always" if kind == Kind::Task => {
                    self.push(Diagnostic::at(r.span(), "a task cannot have `restart = \"always\"`").hint("a task runs to completion; use \"on-failure\" to retry it, or make it a [service]"));
                    default_restart
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
                    default_restart
                }
            },
        };
        let max_restarts = rp
            .max_restarts
            .as_ref()
            .and_then(|v| self.count(v, &at("max_restarts"), 0))
            .unwrap_or(5);
        let restart_window = self.opt_duration(
            &rp.restart_window,
            &at("restart_window"),
            Duration::from_secs(60),
        );
        let stop_signal = match &rp.stop_signal {
            None => Signal::SIGTERM,
            Some(v) => self.signal(v).unwrap_or(Signal::SIGTERM),
        };
        let stop_timeout =
            self.opt_duration(&rp.stop_timeout, &at("stop_timeout"), stack_stop_timeout);
        let mut replicas = None;
        let mut max_replicas = None;
        if kind == Kind::Task {
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
        } else {
            replicas = rp
                .replicas
                .as_ref()
                .and_then(|v| self.count(v, &at("replicas"), 0));
            max_replicas = rp
                .max_replicas
                .as_ref()
                .and_then(|v| self.count(v, &at("max_replicas"), 1));
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
        }
        let autoscale = match (&rp.autoscale, kind) {
            (None, _) => None,
            (Some(_), Kind::Task) => {
                let at = (self.input.key_span)(&["task", &name, "autoscale"]).unwrap_or(0..0);
                self.push(
                    Diagnostic::at(at, format!("task `{name}` cannot have `autoscale`"))
                        .hint("only a [service] pool can size itself"),
                );
                None
            }
            // `replicas` itself is wrong: that diagnostic says enough.
            (Some(_), Kind::Service) if rp.replicas.is_some() && replicas.is_none() => None,
            (Some(a), Kind::Service) => {
                let span = |v: &Option<Spanned<i64>>| v.as_ref().map_or(0..0, Spanned::span);
                let pool = autoscale::Pool {
                    name: &name,
                    replicas: replicas.map(|r| (r, span(&rp.replicas))),
                    max_replicas: max_replicas.map(|m| (m, span(&rp.max_replicas))),
                };
                self.autoscale(a, &pool, &env)
            }
        };
        let timeout = match (&rp.timeout, kind) {
            (Some(t), Kind::Task) => self.duration(t, &at("timeout")),
            (Some(t), Kind::Service) => {
                self.push(Diagnostic::at(t.span(), "a service cannot have `timeout`").hint("for how long a service may take to become ready, use `ready = { …, timeout = \"2m\" }`"));
                None
            }
            (None, _) => None,
        };
        let mut listens = std::mem::take(&mut self.listens);
        let listen = self.listen(rp.listen.as_ref(), kind, &name, &env, stack, &mut listens);
        self.listens = listens;
        self.gates_on_held_sockets(
            &name,
            &listen,
            [
                ("ready", rp.ready.as_ref(), ready.as_ref().map(|r| &r.probe)),
                (
                    "health",
                    rp.health.as_ref(),
                    health.as_ref().map(|h| &h.probe),
                ),
            ],
            &env,
        );
        let own_hook = ops::RawHook {
            command: rp.on_failure.as_ref(),
            timeout: rp.on_failure_timeout.as_ref(),
            exits: rp.on_failure_exits.as_ref(),
        };
        let stack_hook = self.stack_hook.clone();
        let on_failure = self
            .hook(&own_hook, &table, Some(&stack_hook))
            .over(&stack_hook);
        let memory_max = rp
            .memory_max
            .as_ref()
            .and_then(|v| self.memory_max(v, &at("memory_max")));
        let schedule = self.schedule(kind, &table, rp.schedule.as_ref(), rp.every.as_ref());
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

    fn signal(&mut self, v: &Spanned<toml::Value>) -> Option<Signal> {
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

    fn dependencies(&mut self, procs: &[ProcessSpec], spans: &[(Range<usize>, Vec<Range<usize>>)]) {
        let names: Vec<&str> = procs.iter().map(|p| p.name.as_str()).collect();
        // depends_on was deduplicated: map each kept entry back to its first span.
        let mut edges: Vec<(String, Vec<String>)> = Vec::new();
        let mut edge_spans: Vec<Vec<Range<usize>>> = Vec::new();
        for (p, (_, dspans)) in procs.iter().zip(spans) {
            edges.push((p.name.clone(), p.depends_on.clone()));
            edge_spans.push(dspans.clone());
        }
        for (i, p) in procs.iter().enumerate() {
            for (j, d) in p.depends_on.iter().enumerate() {
                let span = edge_spans[i]
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| spans[i].0.clone());
                if d == &p.name {
                    self.push(
                        Diagnostic::at(span, format!("`{d}` depends on itself"))
                            .hint("remove it from its own depends_on"),
                    );
                } else if !names.contains(&d.as_str()) {
                    let hint = suggest(d, names.iter().copied())
                        .unwrap_or_else(|| format!("known processes: {}", names.join(", ")));
                    self.push(
                        Diagnostic::at(
                            span,
                            format!(
                                "`{}` depends on `{d}`, which is not a task or service",
                                p.name
                            ),
                        )
                        .hint(hint),
                    );
                }
            }
        }
        for (path, closing) in graph::cycles(&edges) {
            let last = path[path.len() - 2];
            let span = edge_spans[last]
                .get(closing)
                .cloned()
                .unwrap_or_else(|| spans[last].0.clone());
            let shown: Vec<&str> = path.iter().map(|i| edges[*i].0.as_str()).collect();
            self.push(
                Diagnostic::at(span, format!("dependency cycle: {}", shown.join(" → "))).hint(
                    "nothing in a cycle could ever start; remove one of these depends_on entries",
                ),
            );
        }
    }

    fn keeper(
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
    fn keeper_restart(&mut self, names: &[Spanned<String>], procs: &[ProcessSpec]) -> Vec<String> {
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
    fn positive_duration(
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

/// `"SIGTERM"`, `"TERM"`, `"sigterm"` or `"15"`.
/// The absolute state folder and lock file of a stack whose file is in
/// `root`, from `[stack] state_dir` and `lock_file` as written (an empty
/// value is the default). The one place these paths are decided: the stack
/// id, which finds a stack's processes, is a hash of the state folder.
pub(crate) fn state_paths(
    root: &Path,
    state_dir: Option<&str>,
    lock_file: Option<&str>,
) -> (PathBuf, PathBuf) {
    let resolve = |p: &str| normalize(&root.join(p));
    let state_dir = state_dir
        .filter(|s| !s.is_empty())
        .map_or_else(|| root.join("logs"), resolve);
    let lock_file = lock_file
        .filter(|s| !s.is_empty())
        .map_or_else(|| state_dir.join("stack-owner.json"), resolve);
    (state_dir, lock_file)
}

pub(crate) fn parse_signal(s: &str) -> Option<Signal> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = t.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("term"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGINT"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("2"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("SIGFOO"), None);
        assert_eq!(parse_signal("99"), None);
        assert_eq!(parse_signal(""), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("worker-embeddings_batch2"));
        assert!(!valid_name("worker.2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(valid_var("JWT_SECRET"));
        assert!(valid_var("_x1"));
        assert!(!valid_var("1X"));
        assert!(!valid_var("A-B"));
    }
}
