//! Quoting for the three target syntaxes: systemd unit lines, POSIX sh
//! words, and YAML scalars. Pure string functions, table-tested.
//!
//! Owns: which characters each engine reads specially and how they are
//! escaped. Must not touch: what a value means (that is `export::env` and
//! `export::command`).

/// A systemd specifier-safe string: `%` is a specifier in every unit
/// setting, so it is doubled.
pub(crate) fn systemd_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// One word of an `Exec*=` line: `$` is doubled (systemd expands `$VAR` and
/// `${VAR}` in command lines), `%` is doubled (specifiers), and a word with
/// anything outside a safe set is double-quoted with C escapes.
pub(crate) fn systemd_exec_word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,+@-%$".contains(c));
    if safe && s != ";" {
        return escaped;
    }
    let mut out = String::with_capacity(escaped.len() + 2);
    out.push('"');
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `"KEY=value"` assignment of an `Environment=` line: systemd unquotes
/// and C-unescapes it and expands specifiers, but never `$`.
pub(crate) fn systemd_env_assignment(key: &str, value: &str) -> String {
    let mut out = String::from("\"");
    for c in format!("{key}={value}").chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A sh word that reads as exactly `s`: single-quoted unless plainly safe.
pub(crate) fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,+@-%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Text inside sh double quotes that reads as exactly `s`.
pub(crate) fn sh_dq_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Compose interpolates `$VAR` and `${VAR}` in every string of the file;
/// `$$` is its literal `$`.
pub(crate) fn compose_dollars(s: &str) -> String {
    s.replace('$', "$$")
}

/// Kubernetes expands `$(VAR)` in a container's `command`, `args` and `env`
/// values, and reads `$$` as one `$`.
pub(crate) fn kube_dollars(s: &str) -> String {
    s.replace('$', "$$")
}

/// A YAML scalar that is always read as this string: double-quoted with
/// JSON-compatible escapes (YAML's double-quoted style is a superset).
pub(crate) fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A mapping key: plain when it cannot be misread, else quoted.
pub(crate) fn yaml_key(s: &str) -> String {
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
    ];
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        && !reserved.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        yaml_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_words() {
        let cases = [
            ("python3", "python3"),
            ("demo/api.py", "demo/api.py"),
            ("--port=8000", "--port=8000"),
            ("a b", "\"a b\""),
            ("${API_PORT:-1}", "\"$${API_PORT:-1}\""),
            ("$HOME", "$$HOME"),
            ("100%", "100%%"),
            ("say \"hi\"\\n", "\"say \\\"hi\\\"\\\\n\""),
            ("", "\"\""),
            (";", "\";\""),
            ("it's", "\"it's\""),
            ("l1\nl2", "\"l1\\nl2\""),
        ];
        for (input, want) in cases {
            assert_eq!(systemd_exec_word(input), want, "{input:?}");
        }
    }

    #[test]
    fn systemd_env() {
        assert_eq!(systemd_env_assignment("A", "1"), "\"A=1\"");
        assert_eq!(
            systemd_env_assignment("U", "a \"b\" $x 5%\\"),
            "\"U=a \\\"b\\\" $x 5%%\\\\\""
        );
        assert_eq!(systemd_specifiers("50%"), "50%%");
    }

    #[test]
    fn sh_words() {
        assert_eq!(sh_quote("python3"), "python3");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$x"), "'$x'");
        assert_eq!(sh_dq_text("a\"$b`\\"), "a\\\"\\$b\\`\\\\");
    }

    #[test]
    fn yaml_scalars() {
        assert_eq!(yaml_str("plain"), "\"plain\"");
        assert_eq!(yaml_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(yaml_key("api"), "api");
        assert_eq!(yaml_key("app.kubernetes.io/name"), "app.kubernetes.io/name");
        assert_eq!(yaml_key("yes"), "\"yes\"");
        assert_eq!(yaml_key("a b"), "\"a b\"");
        assert_eq!(yaml_key("1x"), "\"1x\"");
        assert_eq!(compose_dollars("${A}$$"), "$${A}$$$$");
        assert_eq!(kube_dollars("$(A)"), "$$(A)");
    }
}
