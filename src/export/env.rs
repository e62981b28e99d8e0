//! A process's environment, as an engine can hold it: env files by
//! reference, and the stack file's own values placed so that the engine's
//! precedence gives what stackctl would give. Never an env file's value.
//!
//! Owns: (1) the symbolic evaluation of the env layers (stack env files <
//! `[env]` < process env files < process `env`) into *forced* values (win
//! over every env file), *fallbacks* (apply when no env file sets the key)
//! and keys left to the files; (2) the refusal when a template needs an
//! expansion the engine cannot do at run time; (3) each engine's env-file
//! dialect, checked line by line against stackctl's (`config::env`).
//! Must not touch: the file system (texts come in from `cli::export`);
//! a value of an env file, in any output or message.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::config::env::{parse_dotenv, template_parts, TemplatePart};
use crate::config::{EnvLayer, ProcessSpec};

use super::{Engine, Note, Refusal};

/// One env file a process reads, by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub(crate) path: PathBuf,
    pub(crate) written: String,
    pub(crate) optional: bool,
    /// Whether it exists now (an optional file may not).
    pub(crate) exists: bool,
}

/// Where a process's environment comes from, for one engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvPlan {
    /// Env files, in stackctl's order (later wins).
    pub(crate) files: Vec<FileRef>,
    /// Values from the stack file that win over every env file.
    pub(crate) forced: BTreeMap<String, String>,
    /// Values from the stack file for when no env file sets the key.
    pub(crate) fallback: BTreeMap<String, String>,
    /// Keys an env file sets now (and the stack file does not override):
    /// names only, never values.
    pub(crate) file_keys: BTreeSet<String>,
    pub(crate) notes: Vec<Note>,
}

/// What is known of one key at one point of the layers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    /// A literal from the stack file that no later env file overrides now.
    Forced(String),
    /// An env file sets it (now); this literal applies if it stops doing so.
    Fallback(String),
    /// Only env files set it.
    Files,
}

/// The text of every env file the stack names, by absolute path (`None`:
/// it does not exist).
pub type EnvTexts = BTreeMap<PathBuf, Option<String>>;

/// Plans `p`'s environment for `engine`.
///
/// # Errors
/// An env file in a dialect the engine reads differently (naming the file
/// and line), or a stack-file value the engine cannot compute.
pub(crate) fn plan(
    p: &ProcessSpec,
    stack_name: &str,
    texts: &EnvTexts,
    engine: Engine,
) -> Result<EnvPlan, Refusal> {
    let mut out = EnvPlan::default();
    let mut vals: BTreeMap<String, Val> = BTreeMap::new();
    // Files (by index into out.files) that set each key now.
    let mut set_by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut os_defaults: Vec<String> = Vec::new();
    for source in &p.env_layers {
        match source {
            EnvLayer::File {
                path,
                written,
                optional,
            } => {
                let text = texts.get(path).cloned().flatten();
                let idx = out.files.len();
                out.files.push(FileRef {
                    path: path.clone(),
                    written: written.clone(),
                    optional: *optional,
                    exists: text.is_some(),
                });
                let Some(text) = text else { continue };
                check_dialect(written, &text, engine)?;
                let entries = parse_dotenv(&text).map_err(|e| Refusal {
                    message: format!("env file `{written}` line {}: {}", e.line, e.message),
                    hint: "fix the file; `stackctl check` shows the same problem".into(),
                })?;
                for e in entries {
                    let v = match vals.get(&e.key) {
                        Some(Val::Forced(s) | Val::Fallback(s)) => Val::Fallback(s.clone()),
                        _ => Val::Files,
                    };
                    set_by.entry(e.key.clone()).or_default().push(idx);
                    vals.insert(e.key, v);
                }
            }
            EnvLayer::Table { at, entries } => {
                for (key, template) in entries {
                    let label = format!("{at}.{key}");
                    let v = eval_entry(key, template, &vals, stack_name, &label, engine)?;
                    if matches!(v.1, Origin::OsDefault) {
                        os_defaults.push(key.clone());
                    }
                    vals.insert(key.clone(), v.0);
                }
            }
        }
    }
    for (key, v) in vals {
        match v {
            Val::Forced(s) => {
                if engine == Engine::Systemd {
                    if let Some(&i) = set_by.get(&key).and_then(|v| v.first()) {
                        return Err(Refusal {
                            message: format!(
                                "`{key}` is set both in env file `{}` and in the stack file, which wins under stackctl; systemd lets EnvironmentFile= win over Environment=",
                                out.files[i].written
                            ),
                            hint: format!("remove `{key}` from one of them"),
                        });
                    }
                }
                out.forced.insert(key, s);
            }
            Val::Fallback(s) => {
                if set_by.contains_key(&key) {
                    out.file_keys.insert(key.clone());
                }
                out.fallback.insert(key, s);
            }
            Val::Files => {
                out.file_keys.insert(key);
            }
        }
    }
    if !os_defaults.is_empty() {
        out.notes.push(Note::new(
            &p.name,
            format!(
                "{}: stackctl takes {} from its own environment when no env file sets {}; {} uses the stack file's default instead",
                os_defaults.join(", "),
                if os_defaults.len() == 1 { "it" } else { "them" },
                if os_defaults.len() == 1 { "it" } else { "them" },
                engine.noun()
            ),
        ));
    }
    Ok(out)
}

/// How an entry's value was found.
enum Origin {
    Static,
    /// `K = "${K:-d}"` where nothing in the layers sets `K`.
    OsDefault,
}

/// One `KEY = "template"` of an env table, over what the layers hold so far.
fn eval_entry(
    key: &str,
    template: &str,
    vals: &BTreeMap<String, Val>,
    stack_name: &str,
    label: &str,
    engine: Engine,
) -> Result<(Val, Origin), Refusal> {
    let parts = template_parts(template).map_err(|e| Refusal {
        message: format!("in `{label}`: {e}"),
        hint: "`stackctl check` shows where".into(),
    })?;
    // `K = "${K:-default}"`: whatever is set below, else the default.
    if let [TemplatePart::Var {
        name,
        default: Some(d),
    }] = parts.as_slice()
    {
        if name == key {
            let dv = static_expand(&d.template, vals, stack_name, label, engine)?;
            let keep = |s: &str| !(s.is_empty() && d.when_empty);
            return Ok(match vals.get(key) {
                Some(Val::Forced(s)) if keep(s) => (Val::Forced(s.clone()), Origin::Static),
                Some(Val::Forced(_)) => (Val::Forced(dv), Origin::Static),
                Some(Val::Fallback(s)) if keep(s) => (Val::Fallback(s.clone()), Origin::Static),
                Some(Val::Fallback(_) | Val::Files) => (Val::Fallback(dv), Origin::Static),
                None => (Val::Fallback(dv), Origin::OsDefault),
            });
        }
    }
    let v = static_expand(template, vals, stack_name, label, engine)?;
    Ok((Val::Forced(v), Origin::Static))
}

/// Expands `template` when every variable it reads has a value known from
/// the stack file alone.
fn static_expand(
    template: &str,
    vals: &BTreeMap<String, Val>,
    stack_name: &str,
    label: &str,
    engine: Engine,
) -> Result<String, Refusal> {
    let mut dynamic: Option<String> = None;
    let lookup = |k: &str| -> Option<String> {
        if k == "STACKCTL_STACK" {
            return Some(stack_name.to_string());
        }
        match vals.get(k) {
            Some(Val::Forced(s)) => Some(s.clone()),
            None => None,
            Some(_) => {
                // Read below, through `dynamic`.
                Some(format!("\u{0}{k}\u{0}"))
            }
        }
    };
    let expanded = crate::config::expand(template, &lookup).map_err(|e| Refusal {
        message: format!(
            "`{label}` reads a variable that only stackctl's own environment sets ({e}); {} does not see that environment",
            engine.noun()
        ),
        hint: "set it in an env file, or give it a default: `${NAME:-value}`".into(),
    })?;
    if let Some(start) = expanded.find('\u{0}') {
        let rest = &expanded[start + 1..];
        dynamic = rest.split('\u{0}').next().map(str::to_string);
    }
    if let Some(var) = dynamic {
        return Err(Refusal {
            message: format!(
                "`{label}` is a template over `{var}`, which an env file sets: {} cannot expand it at run time",
                engine.noun()
            ),
            hint: format!(
                "write the whole value in the env file, or give `{var}` a plain value in the stack file"
            ),
        });
    }
    Ok(expanded)
}

/// Constructs of a dotenv line that the engines read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Construct {
    Export,
    Expansion,
    InlineComment,
    Backslash,
    Escape,
    MultiLine,
    Quotes,
    SpaceAroundEquals,
    DottedKey,
}

impl Construct {
    fn describe(self) -> &'static str {
        match self {
            Construct::Export => "an `export ` prefix",
            Construct::Expansion => "`${…}` or `$$` expansion",
            Construct::InlineComment => "a `#` comment after the value",
            Construct::Backslash => "a backslash in an unquoted value",
            Construct::Escape => "an escape such as `\\n` in double quotes",
            Construct::MultiLine => "a value over several lines",
            Construct::Quotes => "a quoted value",
            Construct::SpaceAroundEquals => "spaces around `=`",
            Construct::DottedKey => "a `.` in the variable name",
        }
    }

    /// Whether `engine` reads it as stackctl does.
    fn same_in(self, engine: Engine) -> bool {
        match engine {
            // python-dotenv (docker-compose 1.x) and compose-go (v2) read
            // `export`, quotes, comments and escapes as stackctl does; they
            // expand `${…}` from their own environment, not stackctl's layers.
            Engine::Compose => !matches!(self, Construct::Expansion),
            Engine::Systemd => matches!(self, Construct::Quotes | Construct::SpaceAroundEquals),
            Engine::Kubernetes if self == Construct::DottedKey => true,
            // kustomize's `envs` takes everything after `=` literally.
            Engine::Kubernetes => false,
        }
    }
}

/// Refuses an env file that uses a construct `engine` reads differently,
/// naming the file and line, never the line's text.
fn check_dialect(written: &str, text: &str, engine: Engine) -> Result<(), Refusal> {
    let Ok(entries) = parse_dotenv(text) else {
        return Ok(()); // reported by `plan` with the parser's own message
    };
    let lines: Vec<&str> = text.lines().collect();
    for e in &entries {
        let raw = lines.get(e.line - 1).copied().unwrap_or("");
        for c in constructs(raw, e.literal) {
            if !c.same_in(engine) {
                return Err(Refusal {
                    message: format!(
                        "env file `{written}` line {} uses {}, which {} reads differently from stackctl",
                        e.line,
                        c.describe(),
                        engine.env_file_reader()
                    ),
                    hint: format!(
                        "{} (the line is not shown: it may hold a secret)",
                        engine.env_file_advice()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The constructs one `KEY=VALUE` line uses (its first line, for a
/// multi-line value).
fn constructs(raw: &str, literal: bool) -> Vec<Construct> {
    let mut out = BTreeSet::new();
    let mut line = raw.trim_start();
    if let Some(r) = line.strip_prefix("export ") {
        out.insert(Construct::Export);
        line = r.trim_start();
    }
    let Some((key, value)) = line.split_once('=') else {
        return Vec::new();
    };
    if key.ends_with(char::is_whitespace) || value.starts_with(char::is_whitespace) {
        out.insert(Construct::SpaceAroundEquals);
    }
    if key.contains('.') {
        out.insert(Construct::DottedKey);
    }
    let value = value.trim_start();
    if literal {
        out.insert(Construct::Quotes);
        if let Some(end) = value[1..].find('\'') {
            if !value[end + 2..].trim().is_empty() {
                out.insert(Construct::InlineComment);
            }
        }
    } else if let Some(body) = value.strip_prefix('"') {
        out.insert(Construct::Quotes);
        let mut chars = body.chars().peekable();
        let mut closed_at = None;
        let mut i = 0;
        while let Some(c) = chars.next() {
            i += c.len_utf8();
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        i += n.len_utf8();
                        if !matches!(n, '"' | '\\' | '$' | '`') {
                            out.insert(Construct::Escape);
                        }
                    }
                }
                '$' if matches!(chars.peek(), Some('{' | '$')) => {
                    out.insert(Construct::Expansion);
                }
                '"' => {
                    closed_at = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match closed_at {
            Some(at) if !body[at..].trim().is_empty() => {
                out.insert(Construct::InlineComment);
            }
            Some(_) => {}
            None => {
                out.insert(Construct::MultiLine);
            }
        }
    } else {
        let end = value
            .char_indices()
            .find(|&(n, c)| c == '#' && n > 0 && value[..n].ends_with(char::is_whitespace))
            .map(|(n, _)| n);
        if end.is_some() {
            out.insert(Construct::InlineComment);
        }
        let v = &value[..end.unwrap_or(value.len())];
        if v.contains('\\') {
            out.insert(Construct::Backslash);
        }
        if v.contains("${") || v.contains("$$") {
            out.insert(Construct::Expansion);
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{CommandSpec, Env, Kind, RestartPolicy};
    use std::time::Duration;

    fn process(sources: Vec<EnvLayer>) -> ProcessSpec {
        ProcessSpec {
            name: "api".into(),
            kind: Kind::Service,
            command: CommandSpec::Shell("true".into()),
            depends_on: vec![],
            env: Env::default(),
            cwd: PathBuf::from("/s"),
            pre_start: vec![],
            require_env: vec![],
            ready: None,
            health: None,
            restart: RestartPolicy::OnFailure,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            replicas: None,
            max_replicas: None,
            timeout: None,
            env_layers: sources,
            env_sources: Default::default(),
            autoscale: None,
            listen: Vec::new(),
            on_failure: None,
            memory_max: None,
            schedule: None,
        }
    }

    fn file(p: &str) -> EnvLayer {
        EnvLayer::File {
            path: PathBuf::from(p),
            written: p.trim_start_matches('/').to_string(),
            optional: true,
        }
    }

    fn table(entries: &[(&str, &str)]) -> EnvLayer {
        EnvLayer::Table {
            at: "env".into(),
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn texts(files: &[(&str, Option<&str>)]) -> EnvTexts {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.map(str::to_string)))
            .collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn literals_defaults_and_files() {
        let p = process(vec![
            file("/.env"),
            table(&[
                ("PYTHONUNBUFFERED", "1"),
                ("API_PORT", "${API_PORT:-18000}"),
                ("TOKEN", "${TOKEN:-dev}"),
                ("URL", "http://127.0.0.1:${PY:-9}/${STACKCTL_STACK}"),
                ("ESC", "cost $$5 $HOME"),
            ]),
        ]);
        let t = texts(&[("/.env", Some("TOKEN=secret\n"))]);
        for engine in [Engine::Systemd, Engine::Compose, Engine::Kubernetes] {
            let plan = plan(&p, "demo", &t, engine).unwrap();
            assert_eq!(
                plan.forced,
                map(&[
                    ("ESC", "cost $5 $HOME"),
                    ("PYTHONUNBUFFERED", "1"),
                    ("URL", "http://127.0.0.1:9/demo"),
                ])
            );
            assert_eq!(
                plan.fallback,
                map(&[("API_PORT", "18000"), ("TOKEN", "dev")])
            );
            assert_eq!(plan.files.len(), 1);
            assert!(plan.files[0].exists);
            assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
            assert!(plan.notes[0]
                .text
                .starts_with("API_PORT: stackctl takes it"));
            assert!(!format!("{plan:?}").contains("secret"));
        }
    }

    #[test]
    fn a_later_file_turns_a_literal_into_a_fallback() {
        let p = process(vec![
            table(&[("A", "1")]),
            file("/p.env"),
            table(&[("B", "${A:-x}")]),
        ]);
        let t = texts(&[("/p.env", Some("A=2\n"))]);
        let err = plan(&p, "s", &t, Engine::Compose).unwrap_err();
        assert!(err.message.contains("template over `A`"), "{}", err.message);
        let p = process(vec![table(&[("A", "1")]), file("/p.env")]);
        let plan = plan(&p, "s", &t, Engine::Systemd).unwrap();
        assert_eq!(plan.fallback, map(&[("A", "1")]));
        assert!(plan.forced.is_empty());
    }

    #[test]
    fn systemd_refuses_a_literal_that_overrides_a_file() {
        let p = process(vec![file("/.env"), table(&[("A", "1")])]);
        let t = texts(&[("/.env", Some("A=0\n"))]);
        let err = plan(&p, "s", &t, Engine::Systemd).unwrap_err();
        assert!(err.message.contains("`A` is set both in env file `.env`"));
        let ok = plan(&p, "s", &t, Engine::Compose).unwrap();
        assert_eq!(ok.forced, map(&[("A", "1")]));
    }

    #[test]
    fn os_only_variables_are_refused() {
        let p = process(vec![table(&[("P", "/opt/bin:${PATH}")])]);
        let err = plan(&p, "s", &texts(&[]), Engine::Systemd).unwrap_err();
        assert!(err.message.contains("only stackctl's own environment"));
    }

    #[test]
    fn dialects_name_file_and_line_never_the_value() {
        let cases: &[(&str, Engine, Option<&str>)] = &[
            ("A=1\nB=two words\n", Engine::Systemd, None),
            (
                "A=1\nexport B=x\n",
                Engine::Systemd,
                Some("line 2 uses an `export ` prefix"),
            ),
            ("A=1\nexport B=x\n", Engine::Compose, None),
            (
                "A=x # c\n",
                Engine::Systemd,
                Some("line 1 uses a `#` comment"),
            ),
            ("A=${B}\n", Engine::Compose, Some("line 1 uses `${…}`")),
            ("A='lit ${B}'\n", Engine::Compose, None),
            (
                "A=\"x\\ny\"\n",
                Engine::Systemd,
                Some("line 1 uses an escape"),
            ),
            ("A=\"x\\\"y\"\n", Engine::Systemd, None),
            (
                "A=\"multi\nline\"\n",
                Engine::Systemd,
                Some("line 1 uses a value over several lines"),
            ),
            ("A=a\\b\n", Engine::Systemd, Some("line 1 uses a backslash")),
            (
                "A=a\\b\n",
                Engine::Kubernetes,
                Some("line 1 uses a backslash"),
            ),
            (
                "A=\"q\"\n",
                Engine::Kubernetes,
                Some("line 1 uses a quoted value"),
            ),
            (
                "A = 1\n",
                Engine::Kubernetes,
                Some("line 1 uses spaces around `=`"),
            ),
            ("# c\n\nA=postgres://u:p@h/db\n", Engine::Kubernetes, None),
        ];
        for (text, engine, want) in cases {
            let got = check_dialect(".env", text, *engine);
            match want {
                None => assert!(got.is_ok(), "{text:?} {engine:?}: {got:?}"),
                Some(w) => {
                    let e = got.unwrap_err();
                    assert!(e.message.contains(w), "{text:?}: {}", e.message);
                    assert!(e.message.starts_with("env file `.env`"));
                }
            }
        }
        let e = check_dialect(".env", "export TOKEN=hunter2\n", Engine::Systemd).unwrap_err();
        assert!(!e.message.contains("hunter2") && !e.hint.contains("hunter2"));
    }
}
