//! The docs stay true: the checked-in man pages and completions are what
//! the CLI generates today, every `stackctl …` command shown in README.md
//! and in `--help` parses, every command has help with examples, and the
//! README's test command is the one `.ci/run` runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use crate::harness::bin;

/// The repository root (where `man/`, `completions/`, README.md live).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const REGENERATE: &str =
    "cargo run -- generate man --out man && cargo run -- generate completions --out completions";

/// Regenerates `what` (`man` or `completions`) into a temp folder and
/// compares it file by file with the checked-in folder `dir`.
fn assert_generated_current(what: &str, dir: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["generate", what, "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stackctl generate {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = |p: &Path| -> BTreeSet<String> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let checked_in = root().join(dir);
    let fresh = files(tmp.path());
    let have = files(&checked_in);
    let mut problems = Vec::new();
    for f in fresh.difference(&have) {
        problems.push(format!("{dir}/{f}: missing"));
    }
    for f in have.difference(&fresh) {
        problems.push(format!("{dir}/{f}: no longer generated (delete it)"));
    }
    for f in fresh.intersection(&have) {
        let a = std::fs::read(tmp.path().join(f)).unwrap();
        let b = std::fs::read(checked_in.join(f)).unwrap();
        if a != b {
            problems.push(format!("{dir}/{f}: stale"));
        }
    }
    assert!(
        problems.is_empty(),
        "{dir}/ does not match the CLI:\n  {}\nthe CLI changed; regenerate and commit them:\n  {REGENERATE}",
        problems.join("\n  ")
    );
}

#[test]
fn man_pages_are_current() {
    assert_generated_current("man", "man");
}

#[test]
fn completions_are_current() {
    assert_generated_current("completions", "completions");
}

/// Splits a shell line into words: single and double quotes, backslash
/// escapes; stops at an unquoted `#` comment, `|`, `;`, `&`, `>` or `<`.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '|' | ';' | '&' | '>' | '<' => break,
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The arguments of a stackctl command line (`stackctl start api`,
/// `cargo run -- start`, `cargo run --release -- start`), or `None` for
/// any other line.
fn stackctl_args(line: &str) -> Option<Vec<String>> {
    let words = shell_words(line.trim());
    let first = words.first()?;
    if first == "stackctl" || first.ends_with("/stackctl") {
        return Some(words[1..].to_vec());
    }
    if first == "cargo" && words.get(1).map(String::as_str) == Some("run") {
        let sep = words.iter().position(|w| w == "--")?;
        return Some(words[sep + 1..].to_vec());
    }
    None
}

/// Every command line in the fenced `console`/`sh` blocks of a markdown
/// text: in `console` only the `$ ` lines, in `sh` every line.
fn fenced_commands(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for (i, line) in markdown.lines().enumerate() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(lang.trim().to_string()),
            };
            continue;
        }
        match block.as_deref() {
            Some("console") => {
                if let Some(cmd) = t.strip_prefix("$ ") {
                    out.push((i + 1, cmd.to_string()));
                }
            }
            Some("sh" | "bash" | "shell") => out.push((i + 1, t.to_string())),
            _ => {}
        }
    }
    out
}

/// Runs the binary with `args --help`: exit 0 means clap accepted the
/// command, its flags and the position of each.
fn parses(args: &[String]) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(args)
        .arg("--help")
        .current_dir(tmp.path())
        .env_remove("STACKCTL_FILE")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().next().unwrap_or("").to_string())
    }
}

#[test]
fn shell_words_split_like_sh() {
    assert_eq!(
        shell_words(r#"stackctl lock acquire export t1 "a b" # note"#),
        ["stackctl", "lock", "acquire", "export", "t1", "a b"]
    );
    assert_eq!(
        shell_words("stackctl status --json | jq ."),
        ["stackctl", "status", "--json"]
    );
    assert_eq!(
        stackctl_args("cargo run --release -- start"),
        Some(vec!["start".to_string()])
    );
    assert_eq!(stackctl_args("curl -s http://x"), None);
}

#[test]
fn readme_commands_parse() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (line, cmd) in fenced_commands(&readme) {
        let Some(args) = stackctl_args(&cmd) else {
            continue;
        };
        checked += 1;
        if let Err(e) = parses(&args) {
            failures.push(format!("README.md:{line}: `{cmd}`: {e}"));
        }
    }
    assert!(
        checked >= 10,
        "found only {checked} stackctl commands in README.md"
    );
    assert!(
        failures.is_empty(),
        "commands in README.md that stackctl does not accept:\n  {}",
        failures.join("\n  ")
    );
}

/// Every visible command, with its path (`["lock", "acquire"]`).
fn visible_commands() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(path: Vec<String>, cmd: &clap::Command, out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            out.push((p.clone(), sub.clone()));
            walk(p, sub, out);
        }
    }
    let mut out = Vec::new();
    let mut top = stackctl::Cli::command();
    top.build();
    out.push((Vec::new(), top.clone()));
    walk(Vec::new(), &top, &mut out);
    out
}

#[test]
fn every_command_and_argument_has_help() {
    let mut missing = Vec::new();
    for (path, cmd) in visible_commands() {
        let name = format!("stackctl {}", path.join(" "));
        if cmd.get_about().is_none() {
            missing.push(format!("`{name}`: no about line"));
        }
        // Top-level commands show how they are used.
        if path.len() <= 1 {
            let long = cmd
                .get_long_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !long.contains("$ stackctl") {
                missing.push(format!("`{name}`: no `$ stackctl …` example in --help"));
            }
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() {
                missing.push(format!("`{name}`: argument `{id}` has no help"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn help_examples_parse() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, cmd) in visible_commands() {
        let long = cmd
            .get_long_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        for line in long.lines() {
            let Some(cmd_line) = line.trim().strip_prefix("$ ") else {
                continue;
            };
            let Some(args) = stackctl_args(cmd_line) else {
                continue;
            };
            checked += 1;
            if let Err(e) = parses(&args) {
                failures.push(format!(
                    "`stackctl {} --help` shows `{cmd_line}`: {e}",
                    path.join(" ")
                ));
            }
        }
    }
    assert!(checked >= 10, "found only {checked} examples in --help");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let shown: BTreeSet<String> = fenced_commands(&readme)
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.starts_with("cargo test"))
        .collect();
    let shown: Vec<String> = shown.into_iter().collect();
    assert_eq!(
        shown,
        ["cargo test --locked"],
        "README.md must show one test command, the one .ci/run runs"
    );
    assert!(
        ci.lines().any(|l| l.trim() == shown[0]),
        ".ci/run does not run `{}`, the README's test command",
        shown[0]
    );
}
