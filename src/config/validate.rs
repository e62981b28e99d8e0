//! From the raw file to the model, collecting every problem at once.
//!
//! Owns: defaults, path resolution against the stack file's folder, the
//! environment layers (stack env files < `[env]` < process env files <
//! process `env`, all over stackctl's own environment), proving that every
//! `${…}` template expands, probes ("exactly one kind"), names, numbers,
//! durations, signals, dependencies and cycles. Each problem becomes a
//! located [`Diagnostic`]; a [`Stack`] comes out only when there are none.
//! Must not touch: processes, sockets; never puts an env value into a message.
//!
//! Here: `[stack]`, `[stack.logs]`, `[export]`, dependencies and cycles,
//! and the helpers every part uses (durations, counts, names). Each part of
//! a table has its own module, all of them `impl Ctx`: `process` (one
//! `[service.*]`/`[task.*]`, as named steps), `env` (the layers), `command`
//! (commands and templates), `probe`, `listen`, `autoscale`, `ops` (hooks,
//! memory, schedules) and `keeper`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use toml::Spanned;

use super::diag::{normalize, suggest, Diagnostic};
use super::duration::{parse_duration, parse_size, DURATION_HINT, SIZE_HINT};
use super::env::ExpandError;
use super::graph;
use super::model::*;
use super::raw::*;

mod autoscale;
mod command;
mod env;
mod keeper;
mod listen;
mod ops;
mod probe;
mod process;

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
