//! Commands as an engine runs them. stackctl expands `${VAR}` templates in
//! a command before it runs it; an engine does not, so each template is
//! handed to `/bin/sh`, which reads the same `${VAR}`, `${VAR:-d}` and
//! `${VAR-d}` from the process's environment at run time.
//!
//! Owns: shell commands passed through (with `$$` made `$`, and a refusal
//! when a template sits inside single quotes, where stackctl substitutes it
//! and a shell would not); argv commands kept as argv, or, when they hold
//! templates, turned into one `exec` line whose words expand exactly as
//! stackctl's (each argument stays one word); `pre_start` folded in front
//! for engines without a pre-start hook. Must not touch: quoting for a
//! particular engine's file (that is `quote`).

use crate::config::env::{template_parts, TemplatePart};
use crate::config::CommandSpec;

use super::quote::{sh_dq_text, sh_quote};
use super::Refusal;

/// A command ready for an engine: an argv, or a script for `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exec {
    Argv(Vec<String>),
    Shell(String),
}

impl Exec {
    /// As an argv (a script becomes `/bin/sh -c SCRIPT`).
    pub(crate) fn argv(&self) -> Vec<String> {
        match self {
            Exec::Argv(v) => v.clone(),
            Exec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }

    /// As one line of a shell script.
    fn script(&self) -> String {
        match self {
            Exec::Argv(v) => v.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "),
            Exec::Shell(s) => s.clone(),
        }
    }
}

/// `cmd` (written at `what`, e.g. `service.api.command`) for an engine.
///
/// # Errors
/// A template in single quotes, a malformed template, or a default that a
/// shell would read differently.
pub(crate) fn translate(cmd: &CommandSpec, what: &str) -> Result<Exec, Refusal> {
    match cmd {
        CommandSpec::Shell(s) => {
            if let Some(var) = template_in_single_quotes(s) {
                return Err(Refusal {
                    message: format!(
                        "`{what}` has `${{{var}}}` inside single quotes: stackctl substitutes it there, a shell run by the engine would not"
                    ),
                    hint: "put the template in double quotes".into(),
                });
            }
            Ok(Exec::Shell(reemit(&parts(s, what)?)))
        }
        CommandSpec::Argv(v) => {
            let all: Vec<Vec<TemplatePart>> =
                v.iter().map(|a| parts(a, what)).collect::<Result<_, _>>()?;
            if all
                .iter()
                .flatten()
                .all(|p| matches!(p, TemplatePart::Text(_)))
            {
                return Ok(Exec::Argv(all.iter().map(|p| text_of(p)).collect()));
            }
            let mut words = Vec::with_capacity(all.len());
            for p in &all {
                words.push(dq_word(p, what)?);
            }
            Ok(Exec::Shell(format!("exec {}", words.join(" "))))
        }
    }
}

/// The main command with `pre_start` in front, for an engine that has no
/// pre-start hook: each pre-start command runs in its own subshell (as
/// stackctl runs each with its own `sh -c`), the first failure ends the
/// start, and the main command replaces the shell.
pub(crate) fn with_pre_start(pre: &[Exec], main: &Exec) -> Exec {
    if pre.is_empty() {
        return main.clone();
    }
    let mut script = String::new();
    for p in pre {
        script.push_str("(\n");
        script.push_str(&p.script());
        script.push_str("\n) && ");
    }
    match main {
        Exec::Argv(v) => {
            script.push_str("exec ");
            script.push_str(&v.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "));
        }
        Exec::Shell(s) => {
            script.push_str("exec /bin/sh -c ");
            script.push_str(&sh_quote(s));
        }
    }
    Exec::Shell(script)
}

/// A probe target (an `http` URL, a `tcp` address) as one sh word that
/// expands at run time as stackctl would have expanded it.
///
/// # Errors
/// As [`translate`].
pub(crate) fn template_word(template: &str, what: &str) -> Result<String, Refusal> {
    dq_word(&parts(template, what)?, what)
}

/// Whether `template` reads `var`.
pub(crate) fn uses_var(template: &str, var: &str) -> bool {
    fn walk(parts: &[TemplatePart], var: &str) -> bool {
        parts.iter().any(|p| match p {
            TemplatePart::Text(_) => false,
            TemplatePart::Var { name, default } => {
                name == var
                    || default
                        .as_ref()
                        .is_some_and(|d| template_parts(&d.template).is_ok_and(|p| walk(&p, var)))
            }
        })
    }
    template_parts(template).is_ok_and(|p| walk(&p, var))
}

fn parts(s: &str, what: &str) -> Result<Vec<TemplatePart>, Refusal> {
    template_parts(s).map_err(|e| Refusal {
        message: format!("in `{what}`: {e}"),
        hint: "`stackctl check` shows where".into(),
    })
}

fn text_of(parts: &[TemplatePart]) -> String {
    parts
        .iter()
        .map(|p| match p {
            TemplatePart::Text(t) => t.as_str(),
            TemplatePart::Var { .. } => "",
        })
        .collect()
}

/// The template as shell text: stackctl's `$$` becomes the `$` the shell
/// would have seen, and every `${…}` is left for the shell.
fn reemit(parts: &[TemplatePart]) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            TemplatePart::Text(t) => out.push_str(t),
            TemplatePart::Var { name, default } => {
                out.push_str("${");
                out.push_str(name);
                if let Some(d) = default {
                    out.push_str(if d.when_empty { ":-" } else { "-" });
                    match template_parts(&d.template) {
                        Ok(inner) => out.push_str(&reemit(&inner)),
                        Err(_) => out.push_str(&d.template),
                    }
                }
                out.push('}');
            }
        }
    }
    out
}

/// One double-quoted sh word: literal text escaped, templates expanded by
/// the shell, never split into several words.
fn dq_word(parts: &[TemplatePart], what: &str) -> Result<String, Refusal> {
    if parts.iter().all(|p| matches!(p, TemplatePart::Text(_))) {
        return Ok(sh_quote(&text_of(parts)));
    }
    Ok(format!("\"{}\"", dq_inner(parts, what)?))
}

fn dq_inner(parts: &[TemplatePart], what: &str) -> Result<String, Refusal> {
    let mut out = String::new();
    for p in parts {
        match p {
            TemplatePart::Text(t) => out.push_str(&sh_dq_text(t)),
            TemplatePart::Var { name, default } => {
                out.push_str("${");
                out.push_str(name);
                if let Some(d) = default {
                    out.push_str(if d.when_empty { ":-" } else { "-" });
                    let inner = super::command::parts(&d.template, what)?;
                    if text_of(&inner).contains('}') {
                        return Err(Refusal {
                            message: format!(
                                "in `{what}`: the default of `${{{name}}}` holds a `}}`, which a shell would read as the end of the template"
                            ),
                            hint: "use a default without `}`".into(),
                        });
                    }
                    out.push_str(&dq_inner(&inner, what)?);
                }
                out.push('}');
            }
        }
    }
    Ok(out)
}

/// The first variable written `${NAME…}` inside single quotes (as a shell
/// reads the quotes), if any.
fn template_in_single_quotes(s: &str) -> Option<String> {
    let mut single = false;
    let mut double = false;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '\\' if !single => {
                chars.next();
            }
            '$' if single && s[i + 1..].starts_with('{') => {
                let name: String = s[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                return Some(name);
            }
            '$' if s[i + 1..].starts_with('$') => {
                chars.next();
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn shell(s: &str) -> CommandSpec {
        CommandSpec::Shell(s.into())
    }

    fn argv(v: &[&str]) -> CommandSpec {
        CommandSpec::Argv(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn shell_commands_pass_templates_to_the_shell() {
        let cases = [
            ("alembic upgrade head", "alembic upgrade head"),
            (
                "python -m w --instance ${STACKCTL_INSTANCE}",
                "python -m w --instance ${STACKCTL_INSTANCE}",
            ),
            ("ngrok --domain=${D:-a.b}", "ngrok --domain=${D:-a.b}"),
            ("echo $$HOME $PATH", "echo $HOME $PATH"),
            ("echo \"${A-x $$y}\"", "echo \"${A-x $y}\""),
            ("echo '$HOME'", "echo '$HOME'"),
        ];
        for (input, want) in cases {
            assert_eq!(
                translate(&shell(input), "c").unwrap(),
                Exec::Shell(want.into()),
                "{input}"
            );
        }
        let err = translate(&shell("echo '${SECRET}'"), "service.a.command").unwrap_err();
        assert!(err.message.contains("`${SECRET}` inside single quotes"));
        assert!(translate(&shell("echo \"'\" ${A}"), "c").is_ok());
    }

    #[test]
    fn argv_commands_stay_argv_or_become_one_exec_line() {
        assert_eq!(
            translate(&argv(&["python3", "demo/api.py", "cost $$5"]), "c").unwrap(),
            Exec::Argv(vec![
                "python3".into(),
                "demo/api.py".into(),
                "cost $5".into()
            ])
        );
        assert_eq!(
            translate(
                &argv(&["app", "--port", "${PORT:-80 80}", "a'b", "x${A}\"y"]),
                "c"
            )
            .unwrap(),
            Exec::Shell("exec app --port \"${PORT:-80 80}\" 'a'\\''b' \"x${A}\\\"y\"".into())
        );
        let err = translate(&argv(&["a", "${A:-}}"]), "c");
        assert!(err.is_ok(), "a `}}` after the template is text");
    }

    #[test]
    fn pre_start_runs_first_in_subshells() {
        let pre = vec![
            Exec::Shell("mkdir -p x".into()),
            Exec::Argv(vec!["cp".into(), "a b".into(), "x".into()]),
        ];
        assert_eq!(
            with_pre_start(&pre, &Exec::Argv(vec!["python3".into(), "web.py".into()])),
            Exec::Shell("(\nmkdir -p x\n) && (\ncp 'a b' x\n) && exec python3 web.py".into())
        );
        assert_eq!(
            with_pre_start(&pre[..1], &Exec::Shell("node s.js".into())),
            Exec::Shell("(\nmkdir -p x\n) && exec /bin/sh -c 'node s.js'".into())
        );
        let main = Exec::Argv(vec!["a".into()]);
        assert_eq!(with_pre_start(&[], &main), main);
    }

    #[test]
    fn probe_targets_as_words() {
        assert_eq!(
            template_word("http://127.0.0.1:${API_PORT:-18000}/health", "r").unwrap(),
            "\"http://127.0.0.1:${API_PORT:-18000}/health\""
        );
        assert_eq!(
            template_word("127.0.0.1:5432", "r").unwrap(),
            "127.0.0.1:5432"
        );
        assert!(uses_var("--i ${STACKCTL_INSTANCE}", "STACKCTL_INSTANCE"));
        assert!(uses_var("${A:-${STACKCTL_INSTANCE}}", "STACKCTL_INSTANCE"));
        assert!(!uses_var("$STACKCTL_INSTANCE", "STACKCTL_INSTANCE"));
    }
}
