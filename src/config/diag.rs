//! Located diagnostics: `error: …`, `--> file:line:col`, the source line, a
//! caret under the span, `= hint: …`, and the closing count.
//!
//! Owns: the [`Diagnostic`] type, rendering it against the source text,
//! edit-distance suggestions, and showing paths relative to the cwd. Must
//! not touch: what is valid (that is `validate`), and never prints an
//! environment value (a diagnostic in a value that may be secret sets
//! `hide_source`).

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

/// One problem in the stack file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Lowercase fragment: what is wrong, on what.
    pub message: String,
    /// Byte range in the stack file, when the problem has a place.
    pub span: Option<Range<usize>>,
    /// What to do about it.
    pub hint: Option<String>,
    /// Show the location but not the source line (the line may hold a secret).
    pub hide_source: bool,
}

impl Diagnostic {
    /// A diagnostic at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span: Some(span),
            hint: None,
            hide_source: false,
        }
    }

    /// A diagnostic with no place in the file.
    pub fn nowhere(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span: None,
            hint: None,
            hide_source: false,
        }
    }

    /// Adds a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint when there is one.
    #[must_use]
    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }

    /// Hides the source line (it may show a secret).
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.hide_source = true;
        self
    }
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = src[line_start..offset].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders every diagnostic, sorted by place, then the closing line.
pub fn render(diags: &[Diagnostic], src: &str, shown_path: &str) -> String {
    let mut sorted: Vec<&Diagnostic> = diags.iter().collect();
    sorted.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
    let mut out = String::new();
    for d in &sorted {
        render_one(&mut out, d, src, shown_path);
        out.push('\n');
    }
    let n = diags.len();
    let _ = writeln!(
        out,
        "error: {shown_path} has {n} problem{}{OUTCOME_SEP}{DEFAULT_OUTCOME}",
        if n == 1 { "" } else { "s" }
    );
    out
}

/// What the closing line says was (not) done, until the command that
/// loaded the file says it in its own words ([`with_outcome`]).
pub const DEFAULT_OUTCOME: &str = "nothing was started";

/// Between the count and the outcome on the closing line.
const OUTCOME_SEP: &str = "; ";

/// `rendered` diagnostics with their closing line's outcome replaced by
/// `outcome` (`error: stack.toml has 2 problems; nothing was changed`).
/// Text that does not end in a closing line is returned as it is.
pub fn with_outcome(rendered: &str, outcome: &str) -> String {
    let body = rendered.strip_suffix('\n').unwrap_or(rendered);
    let (before, last) = match body.rfind('\n') {
        Some(i) => body.split_at(i + 1),
        None => ("", body),
    };
    let closing = last.starts_with("error: ") && last.contains(" problem");
    match last.rfind(OUTCOME_SEP).filter(|_| closing) {
        Some(i) => format!("{before}{}{OUTCOME_SEP}{outcome}\n", &last[..i]),
        None => rendered.to_string(),
    }
}

/// Renders each warning (`warning: …`, its place, the line, a caret, the
/// hint) on its own, followed by a blank line.
pub fn render_warnings(warnings: &[Diagnostic], src: &str, shown_path: &str) -> Vec<String> {
    warnings
        .iter()
        .map(|w| {
            let mut out = String::new();
            render_one_as(&mut out, "warning", w, src, shown_path);
            out.push('\n');
            out
        })
        .collect()
}

fn render_one(out: &mut String, d: &Diagnostic, src: &str, shown_path: &str) {
    render_one_as(out, "error", d, src, shown_path);
}

fn render_one_as(out: &mut String, level: &str, d: &Diagnostic, src: &str, shown_path: &str) {
    let _ = writeln!(out, "{level}: {}", d.message);
    let Some(span) = &d.span else {
        let _ = writeln!(out, "  --> {shown_path}");
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "  = hint: {h}");
        }
        return;
    };
    let (line, col) = line_col(src, span.start);
    let gutter = line.to_string().len();
    let pad = " ".repeat(gutter);
    let _ = writeln!(out, "{pad} --> {shown_path}:{line}:{col}");
    if !d.hide_source {
        let text = src.lines().nth(line - 1).unwrap_or("");
        let start = floor_char_boundary(src, span.start.min(src.len()));
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = line_start + text.len();
        let end = span.end.clamp(start, line_end.max(start));
        let width = src[start..floor_char_boundary(src, end)]
            .chars()
            .count()
            .max(1);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line} | {}", text.replace('\t', " "));
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(width));
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "{pad} = hint: {h}");
    }
}

/// `did you mean \`x\`?` for the closest of `candidates`, if close enough.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let best = candidates
        .into_iter()
        .map(|c| {
            (
                edit_distance(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= (c.chars().count().max(word.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)?;
    Some(format!("did you mean `{}`?", best.1))
}

/// Edit distance in characters, counting a swap of two neighbours as one
/// edit (optimal string alignment), so `nmae` is one edit from `name`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// `path` as the user should see it: relative to `cwd` when that is shorter.
pub fn shown_path(path: &Path, cwd: &Path) -> String {
    let abs = path.display().to_string();
    match relative_to(path, cwd) {
        Some(rel) => {
            let rel = rel.display().to_string();
            if rel.len() <= abs.len() {
                rel
            } else {
                abs
            }
        }
        None => abs,
    }
}

fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || !base.is_absolute() {
        return None;
    }
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c.as_os_str());
    }
    Some(out)
}

/// Removes `.` and resolves `..` lexically (no symlinks followed).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("redy", "ready"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("SIGTREM", "SIGTERM"), 1);
    }

    #[test]
    fn suggestions() {
        let keys = ["ready", "health", "restart", "replicas", "depends_on"];
        assert_eq!(suggest("redy", keys), Some("did you mean `ready`?".into()));
        assert_eq!(
            suggest("depends-on", keys),
            Some("did you mean `depends_on`?".into())
        );
        assert_eq!(
            suggest("replica", keys),
            Some("did you mean `replicas`?".into())
        );
        assert_eq!(suggest("zzzzzz", keys), None);
    }

    #[test]
    fn lines_and_columns() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 10), (2, 4));
    }

    #[test]
    fn renders_caret_and_hint() {
        let src = "[service.api]\nredy = 1\n";
        let d = Diagnostic::at(14..18, "unknown key `redy`").hint("did you mean `ready`?");
        let out = render(&[d], src, "stack.toml");
        assert_eq!(
            out,
            "error: unknown key `redy`\n  --> stack.toml:2:1\n  |\n2 | redy = 1\n  | ^^^^\n  = hint: did you mean `ready`?\n\nerror: stack.toml has 1 problem; nothing was started\n"
        );
    }

    #[test]
    fn hidden_source() {
        let src = "[env]\nX = \"s3cret ${Y}\"\n";
        let d = Diagnostic::at(10..22, "unset").secret();
        assert!(!render(&[d], src, "stack.toml").contains("s3cret"));
    }

    #[test]
    fn each_command_words_the_closing_line() {
        let d = Diagnostic::at(0..4, "unknown key `redy`");
        let out = render(&[d], "redy = 1\n", "my; dir/stack.toml");
        let closing = |t: &str| t.lines().last().unwrap_or("").to_string();
        assert_eq!(
            closing(&out),
            "error: my; dir/stack.toml has 1 problem; nothing was started"
        );
        let changed = with_outcome(&out, "nothing was changed");
        assert_eq!(
            closing(&changed),
            "error: my; dir/stack.toml has 1 problem; nothing was changed"
        );
        // Everything before the closing line is kept, and so is a last newline.
        assert_eq!(
            changed.strip_suffix("nothing was changed\n"),
            out.strip_suffix("nothing was started\n")
        );
        // Applied twice, the last words win; text with no closing line stays.
        assert_eq!(
            with_outcome(&changed, "validated only"),
            with_outcome(&out, "validated only")
        );
        assert_eq!(with_outcome("error: other\n", "x"), "error: other\n");
    }

    #[test]
    fn paths() {
        let cwd = Path::new("/a/b");
        assert_eq!(shown_path(Path::new("/a/b/stack.toml"), cwd), "stack.toml");
        assert_eq!(shown_path(Path::new("/a/stack.toml"), cwd), "../stack.toml");
        assert_eq!(shown_path(Path::new("/x.toml"), cwd), "/x.toml");
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
