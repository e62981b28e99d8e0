//! Environment: dotenv files, `${VAR}` expansion and `require_env`.
//!
//! Owns: the dotenv syntax (`KEY=VALUE`, `export `, `#` comments, quotes),
//! the template syntax (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$$`),
//! finding required variables that are unset, and saying where such a
//! variable's value really comes from (the `file:line` that `validate`
//! recorded in `ProcessSpec::env_sources`). The supervisor calls
//! [`expand`] at spawn time. Must not touch: processes; and never put a
//! variable's *value* into an error or a log line (values are secrets).

use std::fmt;
use std::path::Path;

use super::model::{ProcessSpec, Stack};

/// Why a template did not expand. Names only, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` with no default, and `NAME` is not set.
    Unset(String),
    /// A `${` without its `}`.
    Unterminated,
    /// `${…}` whose inside is not `NAME`, `NAME:-default` or `NAME-default`.
    BadSyntax,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Unset(n) => write!(f, "`${{{n}}}` is not set and has no default"),
            ExpandError::Unterminated => f.write_str("`${` is never closed by `}`"),
            ExpandError::BadSyntax => {
                f.write_str("`${…}` must hold a variable name, optionally followed by `:-default`")
            }
        }
    }
}

impl std::error::Error for ExpandError {}

/// Expands `${VAR}`, `${VAR:-default}` (default when unset or empty),
/// `${VAR-default}` (default when unset) and `$$` (a literal `$`). A bare
/// `$VAR` is left alone, for the shell. Defaults may themselves hold `${…}`.
///
/// # Errors
/// An unset variable without a default, or a malformed `${…}`.
pub fn expand(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner_start) = after.strip_prefix('{') {
            let end = matching_brace(inner_start).ok_or(ExpandError::Unterminated)?;
            let inner = &inner_start[..end];
            out.push_str(&expand_one(inner, lookup)?);
            rest = &inner_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `text` (a message about something expanded from `templates`) with the
/// value of every variable the templates name put back as `${NAME}`, so a
/// token in a URL or a command never reaches a message or a log. `env` is
/// the environment they were expanded from (the last entry of a name
/// wins). Values shorter than 3 bytes are left alone: no secret, and
/// replacing them would garble the text; so is a value that `shown` (a
/// target shown as probed: a host, a port) holds.
pub fn redact_values(
    text: &str,
    templates: &[&str],
    env: &[(String, String)],
    shown: &str,
) -> String {
    let mut names: Vec<&str> = Vec::new();
    for t in templates {
        let mut rest = *t;
        while let Some(i) = rest.find("${") {
            rest = &rest[i + 2..];
            let len = rest
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(rest.len());
            if len > 0 && !names.contains(&&rest[..len]) {
                names.push(&rest[..len]);
            }
        }
    }
    let mut values: Vec<(&str, &str)> = names
        .iter()
        .filter_map(|n| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
        .filter(|(_, v)| v.len() >= 3 && !shown.contains(v))
        .collect();
    // Longest first, so a value that holds another is replaced whole.
    values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for (k, v) in values {
        out = out.replace(v, &format!("${{{k}}}"));
    }
    out
}

/// Where `template` has a `$$` escape that is not needed: a run of exactly
/// two `$` that is not before `{`. It expands to one `$`, just as a single
/// `$` there would, so whoever wrote it most likely meant something else
/// (the shell's `$$`, or compose's habit of doubling every `$`). `$${` (a
/// literal `${`) and `$$$$` (a literal `$$`) are not reported. Byte
/// offsets of each such `$$`.
pub fn lone_dollar_escapes(template: &str) -> Vec<usize> {
    let bytes = template.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] == b'$' {
            i += 1;
        }
        if i - start == 2 && bytes.get(i) != Some(&b'{') {
            out.push(start);
        }
    }
    out
}

/// The byte index of the `}` closing a `${` whose inside starts `s`.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand_one(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let name_len = inner
        .char_indices()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(inner.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(ExpandError::BadSyntax);
    }
    let (name, op) = inner.split_at(name_len);
    if op.is_empty() {
        return lookup(name).ok_or_else(|| ExpandError::Unset(name.to_string()));
    }
    if let Some(default) = op.strip_prefix(":-") {
        return match lookup(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => expand(default, lookup),
        };
    }
    if let Some(default) = op.strip_prefix('-') {
        return match lookup(name) {
            Some(v) => Ok(v),
            None => expand(default, lookup),
        };
    }
    Err(ExpandError::BadSyntax)
}

/// One `KEY=VALUE` of an env file.
#[derive(Clone, PartialEq, Eq)]
pub struct DotenvEntry {
    pub key: String,
    /// The value after quotes are removed; a template unless `literal`.
    pub value: String,
    /// Single-quoted: taken as is, no `${…}` expansion.
    pub literal: bool,
    /// 1-based line of the key.
    pub line: usize,
}

impl fmt::Debug for DotenvEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DotenvEntry")
            .field("key", &self.key)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// A syntax error in an env file. Never quotes the line (it may hold a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Parses dotenv text: `KEY=VALUE` lines, optional `export `, `#` comments,
/// blank lines, `'single'` (literal) and `"double"` (escapes `\n \t \" \\ \$`,
/// may span lines) quotes; an unquoted value ends at ` #`.
///
/// # Errors
/// The first malformed line.
pub fn parse_dotenv(text: &str) -> Result<Vec<DotenvEntry>, DotenvError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let mut line = lines[i].trim_start();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(r) = line.strip_prefix("export ") {
            line = r.trim_start();
        }
        let err = |message: &str| DotenvError {
            line: lineno,
            message: message.to_string(),
        };
        let Some((key, raw)) = line.split_once('=') else {
            return Err(err("expected KEY=VALUE"));
        };
        let key = key.trim_end();
        let valid_key = !key.is_empty()
            && key.chars().enumerate().all(|(n, c)| {
                c == '_' || c.is_ascii_alphabetic() || (n > 0 && (c.is_ascii_digit() || c == '.'))
            });
        if !valid_key {
            return Err(err(
                "expected a variable name (letters, digits, `_`) before `=`",
            ));
        }
        let raw = raw.trim_start();
        let (value, literal) = if let Some(body) = raw.strip_prefix('\'') {
            let Some(end) = body.find('\'') else {
                return Err(err("a single quote is never closed"));
            };
            if !is_trailing_ok(&body[end + 1..]) {
                return Err(err("unexpected text after the closing quote"));
            }
            (body[..end].to_string(), true)
        } else if let Some(body) = raw.strip_prefix('"') {
            let mut value = String::new();
            let mut chunk = body.to_string();
            loop {
                match parse_double(&chunk, &mut value) {
                    Some(after) => {
                        if !is_trailing_ok(&chunk[after..]) {
                            return Err(err("unexpected text after the closing quote"));
                        }
                        break;
                    }
                    None => {
                        if i >= lines.len() {
                            return Err(err("a double quote is never closed"));
                        }
                        value.push('\n');
                        chunk = lines[i].to_string();
                        i += 1;
                    }
                }
            }
            (value, false)
        } else {
            let end = raw
                .char_indices()
                .find(|&(n, c)| c == '#' && n > 0 && raw[..n].ends_with(char::is_whitespace))
                .map_or(raw.len(), |(n, _)| n);
            (raw[..end].trim_end().to_string(), false)
        };
        out.push(DotenvEntry {
            key: key.to_string(),
            value,
            literal,
            line: lineno,
        });
    }
    Ok(out)
}

/// Reads one double-quoted chunk into `value`; `Some(index after the closing
/// quote)`, or `None` when the line ends first.
fn parse_double(chunk: &str, value: &mut String) -> Option<usize> {
    let mut it = chunk.char_indices();
    while let Some((n, c)) = it.next() {
        match c {
            '"' => return Some(n + 1),
            '\\' => match it.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, 'r')) => value.push('\r'),
                // A literal `$` survives expansion as `$$`.
                Some((_, '$')) => value.push_str("$$"),
                Some((_, other)) => value.push(other),
                None => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    None
}

fn is_trailing_ok(s: &str) -> bool {
    let t = s.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// Every `(process, variable)` whose `require_env` variable is unset or
/// empty in the process's merged env and stackctl's own environment.
pub fn missing_required_env(stack: &Stack) -> Vec<(String, String)> {
    missing_with(stack, &|k| std::env::var(k).ok())
}

pub(crate) fn missing_with(
    stack: &Stack,
    os: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in &stack.processes {
        for var in &p.require_env {
            let set = p.env.0.get(var).cloned().or_else(|| os(var));
            if set.is_none_or(|v| v.is_empty()) {
                out.push((p.name.clone(), var.clone()));
            }
        }
    }
    out
}

/// A hint for `p`'s `require_env` variable `var`, which is unset or empty,
/// that names where its value really comes from: the file and line that
/// set it empty (that layer wins over stackctl's environment, so setting
/// it in the shell cannot help), or that it is empty in the shell, or set
/// nowhere. `os` is stackctl's environment; `show` turns a path into what
/// the operator sees (relative to the cwd). Never a value.
pub fn missing_env_hint(
    p: &ProcessSpec,
    var: &str,
    os: &dyn Fn(&str) -> Option<String>,
    show: &dyn Fn(&Path) -> String,
) -> String {
    if p.env.0.contains_key(var) {
        if let Some(src) = p.env_sources.get(var) {
            return format!(
                "`{var}` is set empty at {}:{}, which wins over the shell: give it a value there, or remove that line to take it from the shell",
                show(&src.file),
                src.line
            );
        }
    }
    match os(var) {
        Some(_) => format!(
            "`{var}` is empty in the shell and set nowhere else: export a value, or set it in [env] or an env_file"
        ),
        None => format!(
            "`{var}` is set nowhere (not in the shell, [env] or an env_file): export it in the shell, or set it in an env_file"
        ),
    }
}

/// Why processes of `closure` cannot start: the required variables that
/// are unset or empty, as one message and one hint (each variable's own
/// hint, see [`missing_env_hint`]); `None` when nothing is missing.
pub fn missing_env_problem(
    stack: &Stack,
    closure: &[String],
    os: &dyn Fn(&str) -> Option<String>,
    show: &dyn Fn(&Path) -> String,
) -> Option<(String, String)> {
    let mut found = MissingEnv::default();
    for (p, v) in missing_required_env(stack) {
        let Some(spec) = stack.process(&p).filter(|_| closure.contains(&p)) else {
            continue;
        };
        found.add(&v, &p, missing_env_hint(spec, &v, os, show));
    }
    found.problem()
}

/// Required variables found unset or empty, gathered into one problem.
#[derive(Debug, Default)]
pub struct MissingEnv {
    missing: Vec<String>,
    hints: Vec<String>,
}

impl MissingEnv {
    /// `var`, required by `process`, is missing; `hint` says what to do
    /// (the same hint is said once).
    pub fn add(&mut self, var: &str, process: &str, hint: String) {
        if !self.hints.contains(&hint) {
            self.hints.push(hint);
        }
        self.missing.push(format!("{var} (required by {process})"));
    }

    /// The message and the hint; `None` when nothing is missing.
    pub fn problem(self) -> Option<(String, String)> {
        if self.missing.is_empty() {
            return None;
        }
        Some((
            format!(
                "required environment variables are unset or empty: {}",
                self.missing.join(", ")
            ),
            self.hints.join("; "),
        ))
    }
}

/// One piece of a template, for code that must translate templates rather
/// than expand them (`stackctl export`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text as it reads after expansion (a `$$` is already one `$`).
    Text(String),
    /// `${NAME}`, or with a default: `${NAME:-default}` (`when_empty`: also
    /// when set but empty) or `${NAME-default}`. The default is itself a
    /// template.
    Var {
        name: String,
        default: Option<VarDefault>,
    },
}

/// The default of a `${NAME:-default}` or `${NAME-default}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarDefault {
    /// `:-` (unset or empty) rather than `-` (unset only).
    pub when_empty: bool,
    pub template: String,
}

/// Splits a template into literal text and `${…}` references, by the same
/// syntax as [`expand`] (adjacent text is merged).
///
/// # Errors
/// A malformed `${…}`, as [`expand`] reports it.
pub fn template_parts(template: &str) -> Result<Vec<TemplatePart>, ExpandError> {
    let mut out: Vec<TemplatePart> = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            text.push('$');
            rest = r;
        } else if let Some(inner_start) = after.strip_prefix('{') {
            let end = matching_brace(inner_start).ok_or(ExpandError::Unterminated)?;
            let inner = &inner_start[..end];
            let name_len = inner
                .char_indices()
                .find(|&(i, c)| {
                    !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
                })
                .map_or(inner.len(), |(i, _)| i);
            if name_len == 0 {
                return Err(ExpandError::BadSyntax);
            }
            let (name, op) = inner.split_at(name_len);
            let default = if op.is_empty() {
                None
            } else if let Some(d) = op.strip_prefix(":-") {
                Some(VarDefault {
                    when_empty: true,
                    template: d.to_string(),
                })
            } else if let Some(d) = op.strip_prefix('-') {
                Some(VarDefault {
                    when_empty: false,
                    template: d.to_string(),
                })
            } else {
                return Err(ExpandError::BadSyntax);
            };
            if !text.is_empty() {
                out.push(TemplatePart::Text(std::mem::take(&mut text)));
            }
            out.push(TemplatePart::Var {
                name: name.to_string(),
                default,
            });
            rest = &inner_start[end + 1..];
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(TemplatePart::Text(text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn redacted_messages_name_variables_not_values() {
        let env = vec![
            ("TOKEN".to_string(), "hunter2-secret".to_string()),
            ("PORT".to_string(), "80".to_string()),
            ("UNUSED".to_string(), "hunter2".to_string()),
        ];
        let t = ["http://q:${PORT}/depth?t=${TOKEN}"];
        assert_eq!(
            redact_values(
                "HTTP 500 from http://q:80/depth?t=hunter2-secret",
                &t,
                &env,
                ""
            ),
            "HTTP 500 from http://q:80/depth?t=${TOKEN}"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone())
    }

    #[test]
    fn expands_variables() {
        let l = env(&[("A", "1"), ("E", "")]);
        assert_eq!(expand("x ${A} y", &l), Ok("x 1 y".into()));
        assert_eq!(expand("${B:-def}", &l), Ok("def".into()));
        assert_eq!(expand("${E:-def}", &l), Ok("def".into()));
        assert_eq!(expand("${E-def}", &l), Ok("".into()));
        assert_eq!(expand("${B-${A}}", &l), Ok("1".into()));
        assert_eq!(expand("${B:-}", &l), Ok("".into()));
        assert_eq!(
            expand("cost $$5 and $HOME", &l),
            Ok("cost $5 and $HOME".into())
        );
        assert_eq!(expand("trailing $", &l), Ok("trailing $".into()));
        assert_eq!(expand("${A}${A}", &l), Ok("11".into()));
        assert_eq!(expand("${B:-a b}c", &l), Ok("a bc".into()));
    }

    #[test]
    fn finds_the_lone_dollar_escapes() {
        for (template, want) in [
            ("kill -HUP $$", vec![10]),
            ("echo $$ and $$", vec![5, 12]),
            ("$$VAR", vec![0]),
            ("$$(date)", vec![0]),
            // Needed escapes, and what is not an escape at all.
            ("echo $${HOME}", vec![]),
            ("echo $$$$", vec![]),
            ("price $$${PRICE}", vec![]),
            ("echo $HOME ${A} $", vec![]),
            ("$$$", vec![]),
            ("", vec![]),
        ] {
            assert_eq!(lone_dollar_escapes(template), want, "{template}");
        }
        // Each reported `$$` expands to a lone `$`.
        let l = env(&[]);
        assert_eq!(expand("kill -HUP $$", &l), Ok("kill -HUP $".into()));
        assert_eq!(expand("echo $$$$", &l), Ok("echo $$".into()));
    }

    #[test]
    fn expansion_errors() {
        let l = env(&[]);
        assert_eq!(
            expand("${NOPE}", &l),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(expand("${NOPE", &l), Err(ExpandError::Unterminated));
        assert_eq!(expand("${}", &l), Err(ExpandError::BadSyntax));
        assert_eq!(expand("${1A}", &l), Err(ExpandError::BadSyntax));
        assert_eq!(expand("${A?x}", &l), Err(ExpandError::BadSyntax));
        assert_eq!(
            expand("${X:-${NOPE}}", &l),
            Err(ExpandError::Unset("NOPE".into()))
        );
    }

    #[test]
    fn parses_dotenv() {
        let text = "# comment\n\nA=1\nexport B = two words  # note\nC='lit ${X}'\nD=\"q \\\"x\\\" \\n ${A}\"\nE=\nF=a#b\nG=\"multi\nline\"\n";
        let e = parse_dotenv(text).unwrap();
        let kv: Vec<(&str, &str, bool)> = e
            .iter()
            .map(|d| (d.key.as_str(), d.value.as_str(), d.literal))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("A", "1", false),
                ("B", "two words", false),
                ("C", "lit ${X}", true),
                ("D", "q \"x\" \n ${A}", false),
                ("E", "", false),
                ("F", "a#b", false),
                ("G", "multi\nline", false),
            ]
        );
        assert_eq!(e[6].line, 9);
    }

    #[test]
    fn dotenv_errors_name_the_line_not_the_value() {
        let err = parse_dotenv("A=1\nsecret-value-here\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(!err.message.contains("secret"));
        assert_eq!(parse_dotenv("A=\"open\n").unwrap_err().line, 1);
        assert_eq!(parse_dotenv("1A=x\n").unwrap_err().line, 1);
        assert_eq!(parse_dotenv("A='x' y\n").unwrap_err().line, 1);
    }

    #[test]
    fn template_parts_follow_expand() {
        use TemplatePart::{Text, Var};
        let t = |s: &str| Text(s.to_string());
        assert_eq!(template_parts("a $$b $c").unwrap(), vec![t("a $b $c")]);
        assert_eq!(
            template_parts("x${A}${B:-d ${C}}${D-}").unwrap(),
            vec![
                t("x"),
                Var {
                    name: "A".into(),
                    default: None
                },
                Var {
                    name: "B".into(),
                    default: Some(VarDefault {
                        when_empty: true,
                        template: "d ${C}".into()
                    })
                },
                Var {
                    name: "D".into(),
                    default: Some(VarDefault {
                        when_empty: false,
                        template: String::new()
                    })
                },
            ]
        );
        assert_eq!(template_parts("${A"), Err(ExpandError::Unterminated));
        assert_eq!(template_parts("${A?x}"), Err(ExpandError::BadSyntax));
        assert_eq!(template_parts("").unwrap(), vec![]);
    }

    #[test]
    fn debug_hides_values() {
        let e = parse_dotenv("TOKEN=hunter2\n").unwrap();
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
