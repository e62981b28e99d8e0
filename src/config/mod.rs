//! The stack file: from text to a validated [`Stack`].
//!
//! Owns: discovery (`-f`, `STACKCTL_FILE`, `./stack.toml`, parent folders),
//! parsing, validation with located diagnostics, env files and `${VAR}`
//! expansion. Must not touch: processes, sockets, tokio.
//!
//! Flow: text → `toml` + `serde_ignored` into `raw` (every unknown key
//! collected, located with `toml_edit`) → `validate` (every other problem)
//! → `model::Stack`. `diag` renders the problems.

pub mod cron;
pub mod diag;
pub mod duration;
pub mod env;
mod graph;
pub mod model;
mod raw;
pub mod refresh;
mod validate;

pub use env::{expand, missing_required_env, ExpandError};
pub use graph::start_order;
pub use model::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diag::Diagnostic;

/// Why a stack file could not be turned into a [`Stack`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No stack file was found.
    #[error("no stack.toml found in {searched} or any parent folder")]
    NotFound { searched: PathBuf },
    /// The file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has problems; each is a located diagnostic, rendered.
    #[error("{rendered}")]
    Invalid { rendered: String, count: usize },
}

impl ConfigError {
    /// The same error, its diagnostics closing with `outcome` (what the
    /// command did or did not do, in its own words) instead of
    /// [`diag::DEFAULT_OUTCOME`]. Other errors are unchanged.
    #[must_use]
    pub fn with_outcome(self, outcome: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { rendered, count } => ConfigError::Invalid {
                rendered: diag::with_outcome(&rendered, outcome),
                count,
            },
            other => other,
        }
    }
}

/// Finds the stack file: `explicit` (from `-f` / `STACKCTL_FILE`), else
/// `./stack.toml`, else the nearest `stack.toml` in a parent folder.
///
/// # Errors
/// [`ConfigError::NotFound`] when there is none.
pub fn discover(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|source| ConfigError::Io {
        path: PathBuf::from("."),
        source,
    })?;
    let mut dir: Option<&Path> = Some(&cwd);
    while let Some(d) = dir {
        let candidate = d.join("stack.toml");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(ConfigError::NotFound { searched: cwd })
}

/// Reads and validates the stack file at `path`.
///
/// `require_env` is *not* checked here (`stop` and `status` must work
/// without the secrets); see [`missing_required_env`] and [`load_checked`].
///
/// # Errors
/// I/O errors, or every problem found in the file at once.
pub fn load(path: &Path) -> Result<Stack, ConfigError> {
    load_with(path, false, &|k| std::env::var(k).ok())
}

/// Like [`load`], and also reports every `require_env` variable that is
/// unset or empty, located, among the other problems (`stackctl check`).
///
/// # Errors
/// As [`load`].
pub fn load_checked(path: &Path) -> Result<Stack, ConfigError> {
    load_with(path, true, &|k| std::env::var(k).ok())
}

/// [`load`] with stackctl's own environment given as `os_env`.
///
/// # Errors
/// As [`load`].
pub fn load_with(
    path: &Path,
    require_env: bool,
    os_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Stack, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let abs = diag::normalize(&cwd.join(path));
    let src = std::fs::read_to_string(&abs).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_source(&abs, &src, require_env, os_env)
}

/// The stack `src` says, as if it were the text of the stack file at
/// `path` (its folder resolves relative paths; env files are read from
/// disk): the file a supervisor loaded before, kept by the anchor.
///
/// # Errors
/// As [`load`].
pub fn load_text(path: &Path, src: &str) -> Result<Stack, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let abs = diag::normalize(&cwd.join(path));
    from_source(&abs, src, false, &|k| std::env::var(k).ok())
}

fn from_source(
    abs: &Path,
    src: &str,
    require_env: bool,
    os_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Stack, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let shown = diag::shown_path(abs, &cwd);
    let input = validate::Input {
        file: abs,
        src,
        os_env,
        require_env,
        key_span: &|_| None,
        blanked: &[],
    };
    let (mut stack, warnings) = parse_str(src, &input).map_err(|diags| ConfigError::Invalid {
        rendered: diag::render(&diags, src, &shown),
        count: diags.len(),
    })?;
    stack.warnings = diag::render_warnings(&warnings, src, &shown);
    Ok(stack)
}

/// What can be told of a stack file that does not validate: the shell of
/// a stack — `[stack]`'s name, state folder and lock file, no processes.
/// Enough to reach a running supervisor or read the pid files, so that a
/// broken edit never locks the operator out of a running stack. When the
/// file is not even TOML (a syntax error anywhere), each line of its
/// `[stack]` table is read on its own ([`stack_keys`]); what cannot be
/// read is the default. The paths are decided exactly as for a valid file
/// (the stack id, which finds the stack's processes, depends on them).
pub fn shell(path: &Path) -> Stack {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let file = diag::normalize(&cwd.join(path));
    let root = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let keys = std::fs::read_to_string(&file)
        .map(|t| stack_keys(&t))
        .unwrap_or_default();
    let get = |k: &str| keys.get(k).cloned();
    let name = get("name")
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| {
            root.file_name()
                .map_or_else(|| "stack".to_string(), |n| n.to_string_lossy().into_owned())
        });
    let (state_dir, lock_file) = validate::state_paths(
        &root,
        get("state_dir").as_deref(),
        get("lock_file").as_deref(),
    );
    Stack {
        name,
        file: file.clone(),
        root,
        state_dir,
        lock_file,
        stop_timeout: std::time::Duration::from_secs(10),
        logs: LogSettings::default(),
        processes: Vec::new(),
        keeper: None,
        warnings: Vec::new(),
        source: String::new(),
        export: Default::default(),
        on_failure: None,
    }
}

/// Parses and validates `src`; every problem as a diagnostic.
///
/// serde stops at the first type error, so each one is recorded, its
/// `key = value` is blanked out (bytes replaced by spaces, so every other
/// span stays put) and the text is parsed again, up to a limit. A syntax
/// error ends this: nothing after it can be trusted.
fn parse_str(
    src: &str,
    input: &validate::Input<'_>,
) -> Result<(Stack, Vec<Diagnostic>), Vec<Diagnostic>> {
    let Ok(doc) = toml_edit::ImDocument::parse(src) else {
        // A syntax error: toml's parser locates it.
        let err = match toml::from_str::<toml::Table>(src) {
            Err(e) => toml_error(&e, src, None),
            Ok(_) => Diagnostic::nowhere("invalid TOML"),
        };
        return Err(vec![err]);
    };
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut blanked: Vec<Vec<String>> = Vec::new();
    let mut text = src.to_string();
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let mut parsed = None;
    for _ in 0..50 {
        unknown.clear();
        let de = toml::Deserializer::new(&text);
        let attempt: Result<raw::RawFile, toml::de::Error> =
            serde_ignored::deserialize(de, |path| unknown.push(segments(&path)));
        match attempt {
            Ok(raw) => {
                parsed = Some(raw);
                break;
            }
            Err(e) => {
                let found = e.span().and_then(|sp| innermost_key_value(&doc, sp.start));
                diags.push(toml_error(&e, src, found.as_ref().map(|f| f.0.as_slice())));
                let Some((path, range)) = found else { break };
                if blanked.contains(&path) {
                    break;
                }
                match blank(&text, range) {
                    Some(t) if toml_edit::ImDocument::parse(t.as_str()).is_ok() => text = t,
                    _ => break,
                }
                blanked.push(path);
            }
        }
    }
    for path in &unknown {
        diags.push(unknown_key(path, Some(&doc)));
    }
    let Some(raw) = parsed else {
        return Err(diags);
    };
    let locate = |path: &[&str]| {
        let segs: Vec<Segment> = path
            .iter()
            .map(|k| Segment::Key((*k).to_string()))
            .collect();
        key_span(&doc, &segs)
    };
    let input = validate::Input {
        key_span: &locate,
        blanked: &blanked,
        ..*input
    };
    match validate::validate(raw, &input) {
        Ok(valid) if diags.is_empty() => Ok(valid),
        Ok(_) => Err(diags),
        Err(more) => {
            diags.extend(more);
            Err(diags)
        }
    }
}

/// The innermost `key = value` whose value contains byte `offset`: its key
/// path and the byte range to blank (key through value, plus one comma when
/// it sits in an inline table).
fn innermost_key_value(
    doc: &toml_edit::ImDocument<&str>,
    offset: usize,
) -> Option<(Vec<String>, std::ops::Range<usize>)> {
    fn visit_table(
        t: &dyn toml_edit::TableLike,
        path: &mut Vec<String>,
        offset: usize,
        best: &mut Option<(Vec<String>, std::ops::Range<usize>)>,
    ) {
        for (k, _) in t.iter() {
            let Some((key, item)) = t.get_key_value(k) else {
                continue;
            };
            path.push(k.to_string());
            if let (Some(ks), Some(vs)) = (key.span(), item.span()) {
                if vs.start <= offset && offset < vs.end.max(vs.start + 1) {
                    let range = ks.start..vs.end;
                    let better = best.as_ref().is_none_or(|(_, b)| range.len() < b.len());
                    if better && item.is_value() {
                        *best = Some((path.clone(), range));
                    }
                }
            }
            visit_item(item, path, offset, best);
            path.pop();
        }
    }
    fn visit_value(
        v: &toml_edit::Value,
        path: &mut Vec<String>,
        offset: usize,
        best: &mut Option<(Vec<String>, std::ops::Range<usize>)>,
    ) {
        match v {
            toml_edit::Value::InlineTable(t) => visit_table(t, path, offset, best),
            toml_edit::Value::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    path.push(i.to_string());
                    visit_value(e, path, offset, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    fn visit_item(
        item: &toml_edit::Item,
        path: &mut Vec<String>,
        offset: usize,
        best: &mut Option<(Vec<String>, std::ops::Range<usize>)>,
    ) {
        match item {
            toml_edit::Item::Table(t) => visit_table(t, path, offset, best),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    path.push(i.to_string());
                    visit_table(t, path, offset, best);
                    path.pop();
                }
            }
            toml_edit::Item::Value(v) => visit_value(v, path, offset, best),
            toml_edit::Item::None => {}
        }
    }
    let mut best = None;
    visit_table(doc.as_table(), &mut Vec::new(), offset, &mut best);
    best
}

/// `text` with `range` replaced by spaces (newlines kept, so every other
/// span is unchanged), and a comma next to it too when it was one entry of
/// an inline table.
fn blank(text: &str, range: std::ops::Range<usize>) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let end = range.end.min(bytes.len());
    let space = |b: &mut u8| {
        if *b != b'\n' {
            *b = b' ';
        }
    };
    bytes.get_mut(range.start..end)?.iter_mut().for_each(space);
    let next = bytes[end..]
        .iter()
        .position(|b| !b" \t".contains(b))
        .map(|i| end + i);
    let prev = bytes[..range.start]
        .iter()
        .rposition(|b| !b" \t".contains(b));
    match (next, prev) {
        (Some(n), _) if bytes[n] == b',' => bytes[n] = b' ',
        (_, Some(p)) if bytes[p] == b',' => bytes[p] = b' ',
        _ => {}
    }
    String::from_utf8(bytes).ok()
}

/// One step of a path in the TOML document.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = match path {
        serde_ignored::Path::Root => return Vec::new(),
        serde_ignored::Path::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Segment::Index(*index));
            v
        }
        serde_ignored::Path::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(Segment::Key(key.clone()));
            v
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => segments(parent),
    };
    // `Spanned` wraps values in a private struct whose `value` field shows
    // up in paths; it is not a key the user wrote.
    out.retain(|s| !matches!(s, Segment::Key(k) if k.starts_with("$__")));
    out
}

/// The span of the key at `path`, walking the `toml_edit` document.
fn key_span(doc: &toml_edit::ImDocument<&str>, path: &[Segment]) -> Option<std::ops::Range<usize>> {
    /// A place in the document, borrowed.
    #[derive(Clone, Copy)]
    enum Node<'a> {
        Item(&'a toml_edit::Item),
        Value(&'a toml_edit::Value),
        Table(&'a toml_edit::Table),
    }
    impl<'a> Node<'a> {
        fn table_like(self) -> Option<&'a dyn toml_edit::TableLike> {
            match self {
                Node::Item(i) => i.as_table_like(),
                Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
                Node::Table(t) => Some(t as &dyn toml_edit::TableLike),
            }
        }
        /// Element `i` of an array or array of tables, with its span.
        fn index(self, i: usize) -> Option<(Node<'a>, Option<std::ops::Range<usize>>)> {
            let array = match self {
                Node::Item(item) => item.as_array(),
                Node::Value(v) => v.as_array(),
                Node::Table(_) => None,
            };
            if let Some(a) = array {
                let v = a.get(i)?;
                return Some((Node::Value(v), v.span()));
            }
            let Node::Item(item) = self else { return None };
            let t = item.as_array_of_tables()?.get(i)?;
            Some((Node::Table(t), t.span()))
        }
    }
    let mut node = Node::Table(doc.as_table());
    let mut span = None;
    for seg in path {
        let (next, next_span) = match seg {
            Segment::Key(k) => match node.table_like() {
                Some(t) => {
                    let (key, value) = t.get_key_value(k)?;
                    (Node::Item(value), key.span())
                }
                // `validate` passes indexes into arrays as keys ("0", "1", …).
                None => node.index(k.parse().ok()?)?,
            },
            Segment::Index(i) => node.index(*i)?,
        };
        node = next;
        span = next_span;
    }
    span
}

fn unknown_key(path: &[Segment], doc: Option<&toml_edit::ImDocument<&str>>) -> Diagnostic {
    let key = match path.last() {
        Some(Segment::Key(k)) => k.clone(),
        Some(Segment::Index(i)) => i.to_string(),
        None => String::new(),
    };
    let parent: Vec<String> = path[..path.len().saturating_sub(1)]
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.clone()),
            Segment::Index(_) => None,
        })
        .collect();
    let allowed: &[&str] = match parent
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => raw::TOP_KEYS,
        ["stack"] => raw::STACK_KEYS,
        ["stack", "logs"] => raw::LOGS_KEYS,
        ["stack" | "task" | "service", .., "env_file"] => raw::ENV_FILE_KEYS,
        ["task" | "service", _] => raw::PROCESS_KEYS,
        ["task" | "service", _, "ready" | "health"] => raw::PROBE_KEYS,
        ["task" | "service", _, "autoscale"] => raw::AUTOSCALE_KEYS,
        ["task" | "service", _, "listen"] => raw::LISTEN_KEYS,
        ["task" | "service", _, "autoscale", "depth"] => raw::DEPTH_KEYS,
        ["task" | "service", _, "autoscale", "on_error"] => raw::ON_ERROR_KEYS,
        ["keeper"] => raw::KEEPER_KEYS,
        ["export"] => raw::EXPORT_KEYS,
        ["keeper", "prereqs"] => raw::PROBE_KEYS,
        _ => &[],
    };
    let place = if parent.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in `{}`", parent.join("."))
    };
    let hint = diag::suggest(&key, allowed.iter().copied())
        .or_else(|| (!allowed.is_empty()).then(|| format!("allowed here: {}", allowed.join(", "))));
    let d = Diagnostic::nowhere(format!("unknown key `{key}` {place}")).maybe_hint(hint);
    match doc.and_then(|doc| key_span(doc, path)) {
        Some(span) => Diagnostic {
            span: Some(span),
            ..d
        },
        None => d,
    }
}

/// A TOML syntax or type error, located; `key` is the path of the key
/// whose value has the wrong type, when known.
fn toml_error(e: &toml::de::Error, src: &str, key: Option<&[String]>) -> Diagnostic {
    let msg = e.message().trim();
    let mut lines = msg.lines();
    let head = lines.next().unwrap_or("invalid TOML").trim().to_string();
    let rest: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut d = match (type_error(&head), key) {
        (Some((found, expected)), Some(path)) => {
            let name = path.last().map_or("", String::as_str);
            Diagnostic::nowhere(format!("`{name}` must be {expected}, not {found}"))
        }
        (Some((found, expected)), None) => {
            Diagnostic::nowhere(format!("expected {expected}, found {found}"))
        }
        (None, Some(path)) => Diagnostic::nowhere(format!(
            "bad `{}`: {}",
            path.last().map_or("", String::as_str),
            lowercase_first(&head)
        )),
        (None, None) => Diagnostic::nowhere(lowercase_first(&head)),
    };
    if let Some(dup) = rest.iter().find(|l| l.starts_with("duplicate key")) {
        // toml says "invalid table header" first; the duplicate is the news.
        d.message = (*dup).to_string();
        d = d.hint("each table and key may be defined only once");
    } else if head == "invalid inline table" {
        d = d.hint(format!(
            "{}; an inline table {{ … }} must fit on one line, use a [table] for more",
            rest.join("; ")
        ));
    } else if !rest.is_empty() {
        d = d.hint(rest.join("; "));
    }
    d.span = e.span().map(|s| {
        let start = s.start.min(src.len());
        start..s.end.max(start).min(src.len())
    });
    d
}

/// serde's `invalid type: string "x", expected i64` as `("a string", "an integer")`,
/// without the value.
fn type_error(msg: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.split_once(", expected ")?;
    let found_kind = found.split([' ', '`', '"']).next().unwrap_or(found);
    let found = match found_kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a float",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" => "a table",
        other => other,
    }
    .to_string();
    let expected = match expected.trim() {
        "i64" | "u32" | "u64" | "i32" => "a whole number".to_string(),
        "a boolean" | "bool" => "`true` or `false`".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        e if e.starts_with("struct ") => "a table".to_string(),
        e => e.to_string(),
    };
    Some((found, expected))
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The string keys of `[stack]` in the text of a stack file: from the
/// whole file when it is TOML; else from each line of its `[stack]` table
/// alone (a syntax error elsewhere, or on another line of that table,
/// hides nothing else).
fn stack_keys(text: &str) -> BTreeMap<String, String> {
    let strings = |t: &toml::Table| -> BTreeMap<String, String> {
        t.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    };
    if let Ok(t) = toml::from_str::<toml::Table>(text) {
        return t
            .get("stack")
            .and_then(|s| s.as_table())
            .map(strings)
            .unwrap_or_default();
    }
    let mut keys = BTreeMap::new();
    let mut in_stack = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_stack = l.trim_end_matches(|c: char| c != ']').replace(' ', "") == "[stack]";
            continue;
        }
        if in_stack {
            if let Ok(t) = toml::from_str::<toml::Table>(l) {
                keys.extend(strings(&t));
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::Duration;

    /// Writes `toml` (and `files`) into a temp dir and loads it with a fixed OS env.
    fn load_str(
        toml: &str,
        files: &[(&str, &str)],
        os: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Stack, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stack.toml"), toml).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let os: Vec<(String, String)> = os
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| os.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let r = load_with(&dir.path().join("stack.toml"), false, &lookup);
        (dir, r)
    }

    #[test]
    fn env_sources_name_the_file_and_line_that_won_and_hints_say_so() {
        let toml = "[stack]\nenv_file = [\".env\"]\n\n[env]\nEMPTY = \"\"\nA = \"t\"\n\n\
            [service.api]\ncommand = \"x\"\nenv_file = [\"api.env\"]\nenv = { C = \"c\" }\n\
            require_env = [\"JWT\", \"EMPTY\", \"NOWHERE\", \"SHELL_EMPTY\"]\n";
        let files = [(".env", "A=1\nJWT=\n"), ("api.env", "# c\nB=2\nA=3\n")];
        let (_d, r) = load_str(toml, &files, &[("JWT", "x"), ("SHELL_EMPTY", "")]);
        let stack = r.unwrap();
        let p = stack.process("api").unwrap();
        let name = |f: &Path| f.file_name().unwrap().to_string_lossy().into_owned();
        let at = |k: &str| {
            let s = &p.env_sources[k];
            format!("{}:{}", name(&s.file), s.line)
        };
        // Each from the strongest layer that set it.
        assert_eq!(at("A"), "api.env:3");
        assert_eq!(at("B"), "api.env:2");
        assert_eq!(at("C"), "stack.toml:11");
        assert_eq!(at("JWT"), ".env:2");
        assert_eq!(at("EMPTY"), "stack.toml:5");
        assert_eq!(p.env_sources.len(), p.env.0.len());
        let os = |k: &str| match k {
            "JWT" => Some("x".to_string()),
            "SHELL_EMPTY" => Some(String::new()),
            _ => None,
        };
        let hint = |v: &str| env::missing_env_hint(p, v, &os, &name);
        // Set in the shell, but the env file's empty line wins: say so.
        assert!(
            hint("JWT").starts_with("`JWT` is set empty at .env:2, which wins over the shell"),
            "{}",
            hint("JWT")
        );
        assert!(
            hint("EMPTY").contains("at stack.toml:5"),
            "{}",
            hint("EMPTY")
        );
        assert!(
            hint("NOWHERE").contains("is set nowhere"),
            "{}",
            hint("NOWHERE")
        );
        assert!(
            hint("SHELL_EMPTY").contains("is empty in the shell"),
            "{}",
            hint("SHELL_EMPTY")
        );
        let missing: Vec<String> = env::missing_with(&stack, &os)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(missing, ["JWT", "EMPTY", "NOWHERE", "SHELL_EMPTY"]);
    }

    fn ok(toml: &str) -> Stack {
        let (_d, r) = load_str(toml, &[], &[]);
        match r {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn problems(toml: &str) -> String {
        let (_d, r) = load_str(toml, &[], &[]);
        match r {
            Ok(_) => panic!("expected problems"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_shell_of_a_broken_file_has_the_paths_a_valid_one_would() {
        let valid = "[stack]\nname = \"shop\"\nstate_dir = \"./run/../var/logs\"\nlock_file = \"../lock.json\"\n[service.api]\ncommand = \"true\"\n";
        let (dir, good) = load_str(valid, &[], &[]);
        let good = good.unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, valid.replace("command = \"true\"", "comand = 1")).unwrap();
        assert!(load(&path).is_err());
        let sh = shell(&path);
        assert_eq!(sh.name, "shop");
        assert_eq!(sh.state_dir, good.state_dir);
        assert_eq!(sh.lock_file, good.lock_file);
        assert!(
            sh.state_dir.ends_with("var/logs"),
            "{}",
            sh.state_dir.display()
        );
        // Not TOML: `[stack]` read line by line, whatever is broken
        // elsewhere (or on another line of it).
        for broken in [
            valid.replace("command = \"true\"", "command = \"true"),
            valid.replace("[service.api]", "[service.api"),
            valid.replace("name = \"shop\"", "name = \"shop\"\nstop_timeout = = 3"),
        ] {
            std::fs::write(&path, &broken).unwrap();
            assert!(toml::from_str::<toml::Table>(&broken).is_err());
            let sh = shell(&path);
            assert_eq!(
                (sh.name.as_str(), &sh.state_dir, &sh.lock_file),
                ("shop", &good.state_dir, &good.lock_file),
                "{broken}"
            );
        }
        // Nothing to read: the defaults, named after the folder.
        std::fs::write(&path, "[stack\n").unwrap();
        let bare = shell(&path);
        assert_eq!(bare.state_dir, dir.path().join("logs"));
        assert_eq!(bare.lock_file, dir.path().join("logs/stack-owner.json"));
        assert!(bare.processes.is_empty());
    }

    #[test]
    fn defaults() {
        let s = ok("[service.api]\ncommand = \"run\"\n[task.m]\ncommand = [\"a\", \"b\"]\n");
        assert_eq!(s.stop_timeout, Duration::from_secs(10));
        assert_eq!(s.state_dir, s.root.join("logs"));
        assert_eq!(s.lock_file, s.root.join("logs/stack-owner.json"));
        assert_eq!(s.logs, LogSettings::default());
        assert_eq!(s.name, s.root.file_name().unwrap().to_string_lossy());
        let names: Vec<&str> = s.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["m", "api"]);
        let api = s.process("api").unwrap();
        assert_eq!(api.restart, RestartPolicy::OnFailure);
        assert_eq!(api.stop_signal, nix::sys::signal::Signal::SIGTERM);
        assert_eq!(api.max_restarts, 5);
        assert_eq!(api.restart_window, Duration::from_secs(60));
        assert_eq!(api.cwd, s.root);
        assert!(api.env.0.is_empty());
        let m = s.process("m").unwrap();
        assert_eq!(m.restart, RestartPolicy::Never);
        assert_eq!(m.command, CommandSpec::Argv(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn full_process() {
        let s = ok(r#"
[stack]
name = "p"
stop_timeout = "3s"
[stack.logs]
max_size = "1MiB"
keep = 2
timestamps = true
[service.db]
command = "db"
[service.api]
command = "serve --instance ${STACKCTL_INSTANCE}"
depends_on = ["db"]
cwd = "sub/dir"
pre_start = ["one", ["two", "x"]]
ready = { http = "http://127.0.0.1:1/h", timeout = "2m", interval = "1s" }
health = { tcp = "127.0.0.1:9", interval = "30s", failures = 2 }
restart = "always"
max_restarts = 9
restart_window = "2m"
stop_signal = "INT"
replicas = 2
max_replicas = 4
"#);
        assert_eq!(s.logs.max_size, 1 << 20);
        assert_eq!(s.logs.keep, 2);
        let api = s.process("api").unwrap();
        assert_eq!(api.cwd, s.root.join("sub/dir"));
        assert_eq!(api.pre_start.len(), 2);
        assert_eq!(api.stop_signal, nix::sys::signal::Signal::SIGINT);
        assert_eq!(api.stop_timeout, Duration::from_secs(3));
        assert_eq!((api.replicas, api.max_replicas), (Some(2), Some(4)));
        let ready = api.ready.as_ref().unwrap();
        assert_eq!(ready.timeout, Duration::from_secs(120));
        assert_eq!(ready.probe.key(), "http");
        let health = api.health.as_ref().unwrap();
        assert_eq!(health.failures, 2);
        assert_eq!(health.timeout, Duration::from_secs(10));
        assert_eq!(
            start_order(&s),
            vec![vec!["db".to_string()], vec!["api".to_string()]]
        );
    }

    #[test]
    fn env_layers_and_expansion() {
        let toml = r#"
[stack]
env_file = [".env", { path = "missing.env", optional = true }]
[env]
A = "from-env-table"
B = "${BASE}-b"
N = 1
[service.api]
command = "run ${A} ${C:-dflt}"
env_file = ["api.env"]
env = { D = "${A}+${HOME_X}" }
"#;
        let (_d, r) = load_str(
            toml,
            &[
                (".env", "BASE=base\nA=from-file\n"),
                ("api.env", "A=api-file\n"),
            ],
            &[("HOME_X", "/h")],
        );
        let s = r.unwrap();
        let env = &s.process("api").unwrap().env.0;
        assert_eq!(env["A"], "api-file");
        assert_eq!(env["B"], "base-b");
        assert_eq!(env["N"], "1");
        assert_eq!(env["D"], "api-file+/h");
        assert!(!env.contains_key("HOME_X"));
    }

    #[test]
    fn keeper() {
        let s = ok(r#"
[service.tunnel]
command = "t"
health = { http = "https://x.example" }
[keeper]
branch = "develop"
deploy = ["a", "b"]
prereqs = [{ tcp = "127.0.0.1:5432" }, { exec = "docker info" }]
watch_health = ["tunnel"]
"#);
        let k = s.keeper.unwrap();
        assert_eq!(k.repo, s.root);
        assert_eq!(k.remote, "origin");
        assert_eq!(k.interval, Duration::from_secs(300));
        assert_eq!(k.deploy.len(), 2);
        assert_eq!(k.prereqs.len(), 2);
        assert_eq!(k.retries, 3);
    }

    #[test]
    fn probe_kinds() {
        let s = ok(r#"
[service.a]
command = "x"
ready = { exec = ["test", "-f", "/tmp/x"] }
health = { log = "^ok$" }
[service.b]
command = "x"
ready = { notify = true }
health = { alive = "2s", interval = "1s" }
[stack.logs]
max_size = 1024
"#);
        let a = s.process("a").unwrap();
        assert_eq!(a.ready.as_ref().unwrap().probe.key(), "exec");
        assert_eq!(
            a.ready.as_ref().unwrap().interval,
            Duration::from_millis(250)
        );
        assert_eq!(a.health.as_ref().unwrap().probe.key(), "log");
        assert_eq!(a.health.as_ref().unwrap().interval, Duration::from_secs(10));
        let b = s.process("b").unwrap();
        assert_eq!(b.ready.as_ref().unwrap().probe.key(), "notify");
        assert_eq!(b.health.as_ref().unwrap().timeout, Duration::from_secs(1));
        assert_eq!(s.logs.max_size, 1024);
    }

    #[test]
    fn paths_resolve_against_the_stack_folder() {
        let s = ok("[stack]\nstate_dir = \"../state\"\nlock_file = \"/var/lock/x.json\"\n[service.a]\ncommand = \"x\"\ncwd = \"${STACKCTL_STACK}/app\"\n[keeper]\nbranch = \"main\"\nrepo = \"src\"\n");
        assert_eq!(s.state_dir, s.root.parent().unwrap().join("state"));
        assert_eq!(s.lock_file, std::path::PathBuf::from("/var/lock/x.json"));
        assert_eq!(
            s.process("a").unwrap().cwd,
            s.root.join(&s.name).join("app")
        );
        assert_eq!(s.keeper.unwrap().repo, s.root.join("src"));
    }

    #[test]
    fn templates_keep_their_variables() {
        let s = ok("[env]\nPORT = \"8000\"\n[service.a]\ncommand = \"serve --port ${PORT} --i ${STACKCTL_INSTANCE}\"\n");
        let a = s.process("a").unwrap();
        assert_eq!(
            a.command,
            CommandSpec::Shell("serve --port ${PORT} --i ${STACKCTL_INSTANCE}".into())
        );
        let lookup = |k: &str| match k {
            "STACKCTL_INSTANCE" => Some("2".to_string()),
            _ => a.env.0.get(k).cloned(),
        };
        assert_eq!(
            expand(&a.command.to_string(), &lookup).unwrap(),
            "serve --port 8000 --i 2"
        );
    }

    #[test]
    fn every_unknown_key_at_once() {
        let out = problems("[service.api]\ncommand = \"x\"\nredy = 1\nhelth = 2\n[stak]\n");
        assert!(out.contains("unknown key `redy`"), "{out}");
        assert!(out.contains("did you mean `ready`?"), "{out}");
        assert!(out.contains("unknown key `helth`"), "{out}");
        assert!(out.contains("unknown key `stak`"), "{out}");
        assert!(out.contains("has 3 problems"), "{out}");
    }

    #[test]
    fn repeated_dependencies_keep_their_places() {
        let out = problems("[service.a]\ncommand = \"x\"\ndepends_on = [\"b\", \"b\", \"zz\"]\n[service.b]\ncommand = \"x\"\n");
        assert!(out.contains("stack.toml:3:25"), "{out}");
    }

    #[test]
    fn missing_required_env_is_not_a_load_error() {
        let s = ok("[service.api]\ncommand = \"x\"\nrequire_env = [\"NOPE_NOT_SET_X\"]\n");
        assert_eq!(
            missing_required_env(&s),
            vec![("api".to_string(), "NOPE_NOT_SET_X".to_string())]
        );
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug() {
        let toml = "[stack]\nenv_file = [\".env\"]\n[service.api]\ncommand = \"${UNSET_Q}\"\n";
        let (_d, r) = load_str(toml, &[(".env", "TOKEN=hunter2\nbroken\n")], &[]);
        let e = r.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let (_d, r) = load_str(
            "[stack]\nenv_file = [\".env\"]\n[service.api]\ncommand = \"x\"\n",
            &[(".env", "TOKEN=hunter2\n")],
            &[],
        );
        let s = r.unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
