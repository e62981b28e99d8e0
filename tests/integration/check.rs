//! Tests: `stackctl check` (SPEC "The stack file").
//!
//! Every broken stack file in `tests/fixtures/bad/NN-what.toml` has its
//! exact expected stderr in `NN-what.stderr`; one data-driven test runs them
//! all (a `NN-what.env` next to it is copied in as `.env`). Run with
//! `STACKCTL_BLESS=1` to rewrite the `.stderr` files after a deliberate
//! change, and review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{bin, Stack};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad")
}

#[test]
fn bad_stack_files_give_their_exact_diagnostics() {
    let bless = std::env::var_os("STACKCTL_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected at least 15 fixtures, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_stem().unwrap().to_string_lossy().into_owned();
        let s = Stack::new(&std::fs::read_to_string(case).unwrap());
        let env_file = case.with_extension("env");
        if env_file.exists() {
            s.write(".env", &std::fs::read_to_string(&env_file).unwrap());
        }
        let r = s.run(&["check"]);
        let expected_path = case.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &r.stderr).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if r.code != Some(2) || r.stderr != expected || !r.stdout.is_empty() {
            failures.push(format!(
                "=== {name}: exit {:?} (expected 2)\n--- expected stderr\n{expected}--- actual stderr\n{}--- stdout\n{}",
                r.code, r.stderr, r.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ (STACKCTL_BLESS=1 rewrites the .stderr files):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const VALID: &str = r#"
[stack]
name = "protea"

[env]
PYTHONUNBUFFERED = "1"

[task.migrate]
command = "alembic upgrade head"
timeout = "5m"

[service.api]
command = ["uvicorn", "protea.api.app:app", "--port", "8000"]
depends_on = ["migrate"]
ready = { http = "http://127.0.0.1:8000/health", timeout = "120s" }

[service.worker-a]
command = "python -m worker --instance ${STACKCTL_INSTANCE}"
depends_on = ["api"]
replicas = 2

[service.worker-b]
command = "python -m worker-b"
depends_on = ["api"]

[service.web]
command = "node server.js"
ready = { tcp = "127.0.0.1:3000" }

[service.tunnel]
command = "ngrok http 3000"
depends_on = ["web"]
restart = "always"
health = { http = "https://protea.ngrok.app", interval = "30s", failures = 2 }
"#;

#[test]
fn a_valid_file_prints_the_start_order() {
    let s = Stack::new(VALID);
    let r = s.run(&["check"]);
    r.success();
    assert_eq!(
        r.stdout,
        "stack.toml: ok (stack protea: 1 task, 5 services)\n\
         start order:\n  \
         1. migrate, web\n  \
         2. api, tunnel\n  \
         3. worker-a (pool ×2), worker-b\n"
    );
    assert_eq!(r.stderr, "");
}

#[test]
fn json_output() {
    let s = Stack::new(VALID);
    let r = s.run(&["check", "--json"]);
    r.success();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["stack"], "protea");
    assert_eq!(
        v["order"],
        serde_json::json!([
            ["migrate", "web"],
            ["api", "tunnel"],
            ["worker-a", "worker-b"]
        ])
    );
}

#[test]
fn json_output_when_invalid() {
    let s = Stack::new("[service.api]\ncommand = \"\"\nredy = 1\n");
    let r = s.run(&["check", "--json"]);
    r.expect_code(2);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"], 2);
    assert!(r.stderr.contains("has 2 problems"), "{}", r.stderr);
}

#[test]
fn discovery_finds_the_parent_stack_file() {
    let s = Stack::new("[service.api]\ncommand = \"x\"\n");
    let sub = s.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let out = s.cmd(&["check"]).current_dir(&sub).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("../../stack.toml: ok"), "{stdout}");
}

#[test]
fn diagnostics_name_the_file_relative_to_the_cwd() {
    let s = Stack::new("[service.api]\ncommand = \"x\"\nredy = 1\n");
    let sub = s.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let out = s.cmd(&["check"]).current_dir(&sub).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--> ../stack.toml:3:1"), "{stderr}");
}

#[test]
fn file_flag_and_env_var_pick_the_stack_file() {
    let s = Stack::new("this is not toml");
    s.write(
        "other.toml",
        "[stack]\nname = \"other\"\n[service.api]\ncommand = \"x\"\n",
    );
    let r = s.run(&["-f", "other.toml", "check"]);
    r.success();
    assert!(
        r.stdout
            .starts_with("other.toml: ok (stack other: 0 tasks, 1 service)"),
        "{}",
        r.stdout
    );

    let out = s
        .cmd(&["check"])
        .env("STACKCTL_FILE", "other.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("other.toml: ok"));

    let r = s.run(&["-f", "missing.toml", "check"]);
    r.expect_code(2);
    assert!(r.stderr.contains("missing.toml"), "{}", r.stderr);

    // And without either, the broken ./stack.toml is what gets checked.
    s.run(&["check"]).expect_code(2);
}

#[test]
fn no_stack_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("check")
        .current_dir(dir.path())
        .env_remove("STACKCTL_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stack.toml found"));
}

#[test]
fn secrets_from_env_files_never_appear_in_check_output() {
    const SECRET: &str = "hunter2-very-secret-value";
    let invalid = r#"
[stack]
env_file = [".env"]
[env]
COPY = "${TOKEN}"
BAD = "${TOKEN}${NOPE_UNSET_1}"
[service.api]
command = "run ${TOKEN} ${NOPE_UNSET_2}"
env = { X = "${TOKEN}", Y = [1] }
require_env = ["TOKEN", "NOPE_UNSET_3"]
stop_signal = "${TOKEN}"
redy = 1
"#;
    let s = Stack::new(invalid);
    s.write(
        ".env",
        &format!("TOKEN={SECRET}\nexport OTHER=\"{SECRET}\"\n{SECRET}\n"),
    );
    let r = s.run(&["check"]);
    r.expect_code(2);
    assert!(
        !r.stderr.contains(SECRET) && !r.stdout.contains(SECRET),
        "{r:?}"
    );
    assert!(!r.stderr.contains("hunter2"), "{r:?}");

    // A valid file, both outputs.
    s.write(".env", &format!("TOKEN={SECRET}\n"));
    s.write(
        "stack.toml",
        "[stack]\nenv_file = [\".env\"]\n[service.api]\ncommand = \"run ${TOKEN}\"\nrequire_env = [\"TOKEN\"]\n",
    );
    for args in [
        &["check"][..],
        &["check", "--json"][..],
        &["-v", "check"][..],
    ] {
        let r = s.run(args);
        r.success();
        assert!(
            !r.stderr.contains(SECRET) && !r.stdout.contains(SECRET),
            "{r:?}"
        );
    }
}

#[test]
fn require_env_is_satisfied_from_the_environment() {
    let s = Stack::new("[service.api]\ncommand = \"x\"\nrequire_env = [\"STACKCTL_TEST_REQ\"]\n");
    s.run(&["check"]).expect_code(2);
    let out = s
        .cmd(&["check"])
        .env("STACKCTL_TEST_REQ", "set")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = s
        .cmd(&["check"])
        .env("STACKCTL_TEST_REQ", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an empty value does not count");
}

/// `stack.toml` at the repo root and every `examples/*.toml` pass `check`.
///
/// Each is checked as a copy in a temp folder, so that env files that are
/// (rightly) not in git can be stood in for: an env file that exists is
/// copied, a missing one is replaced by `<stem>.env.example` (or
/// `<file>.example`) when there is one, else by an empty file. Whatever
/// `require_env` still lacks gets a stand-in value.
#[test]
fn repo_stack_files_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = Vec::new();
    if root.join("stack.toml").is_file() {
        files.push(root.join("stack.toml"));
    }
    if let Ok(rd) = std::fs::read_dir(root.join("examples")) {
        let mut ex: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        ex.sort();
        files.extend(ex);
    }
    for f in &files {
        check_repo_file(f);
    }
}

fn check_repo_file(f: &Path) {
    let text = std::fs::read_to_string(f).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(f.file_name().unwrap());
    std::fs::write(&copy, &text).unwrap();
    let folder = f.parent().unwrap();
    let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
    for rel in env_files_of(&text) {
        let target = dir.path().join(&rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let candidates = [
            folder.join(&rel),
            folder.join(format!("{stem}.env.example")),
            folder.join(format!("{rel}.example")),
        ];
        let contents = candidates
            .iter()
            .find_map(|c| std::fs::read_to_string(c).ok())
            .unwrap_or_default();
        std::fs::write(&target, contents).unwrap();
    }
    let mut cmd = Command::new(bin());
    cmd.arg("-f")
        .arg(&copy)
        .arg("check")
        .current_dir(dir.path())
        .env_remove("STACKCTL_FILE")
        .stdin(Stdio::null());
    if let Ok(stack) = stackctl::config::load(&copy) {
        for (_, var) in stackctl::config::missing_required_env(&stack) {
            cmd.env(var, "test-value");
        }
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stackctl check {} failed:\n{}{}",
        f.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every env file path a stack file names (stack-level and per process).
fn env_files_of(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut lists: Vec<&toml::Value> = Vec::new();
    if let Some(v) = doc.get("stack").and_then(|s| s.get("env_file")) {
        lists.push(v);
    }
    for kind in ["task", "service"] {
        if let Some(t) = doc.get(kind).and_then(|t| t.as_table()) {
            lists.extend(t.values().filter_map(|p| p.get("env_file")));
        }
    }
    let mut out = Vec::new();
    for list in lists {
        for e in list.as_array().into_iter().flatten() {
            let path = e
                .as_str()
                .or_else(|| e.get("path").and_then(|p| p.as_str()));
            if let Some(p) = path {
                out.push(p.to_string());
            }
        }
    }
    out
}

/// The repo check works on main's examples too (a copy of them, with the
/// `.env` that git does not hold).
#[test]
fn repo_check_stands_in_for_missing_env_files() {
    let dir = tempfile::tempdir().unwrap();
    let ex = dir.path().join("examples");
    std::fs::create_dir_all(&ex).unwrap();
    std::fs::write(
        ex.join("demo.toml"),
        "[stack]\nenv_file = [\".env\"]\n[service.api]\ncommand = \"run ${DB}\"\nrequire_env = [\"TOKEN\", \"OTHER\"]\n",
    )
    .unwrap();
    std::fs::write(ex.join("demo.env.example"), "DB=postgres://x\nTOKEN=t\n").unwrap();
    check_repo_file(&ex.join("demo.toml"));
}

/// The complete example in `docs/stack-file.md` passes `check`, and prints
/// what the doc says it prints.
#[test]
fn the_documented_example_checks_as_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/stack-file.md"))
            .unwrap();
    let block = |fence: &str| -> String {
        let start = doc.find(fence).unwrap() + fence.len();
        let end = start + doc[start..].find("```").unwrap();
        doc[start..end].to_string()
    };
    let example = block("## A complete example\n\n```toml\n");
    let s = Stack::new(&example);
    s.write(".env", "# nothing\n");
    let out = s.cmd(&["check"]).env("JWT_SECRET", "x").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = block("## Checking a stack file\n\n```console\n$ stackctl check\n");
    let documented = &console[..console.find("\n\n").unwrap() + 1];
    assert_eq!(stdout, documented);
}

/// The closing line of the diagnostics in `stderr`.
fn closing(stderr: &str) -> &str {
    stderr
        .lines()
        .rfind(|l| l.starts_with("error: stack.toml has"))
        .unwrap_or_else(|| panic!("no closing line in:\n{stderr}"))
}

#[test]
fn each_command_ends_a_broken_files_diagnostics_in_its_own_words() {
    let s = Stack::new("[service.api]\ncommand = \"exec sleep 1000\"\nredy = 1\n");
    let words = |args: &[&str], code: i32| {
        let r = s.run(args);
        r.expect_code(code);
        closing(&r.stderr).to_string()
    };
    let one = "error: stack.toml has 1 problem; ";
    assert_eq!(
        words(&["check"], 2),
        format!("{one}validated only, nothing was run")
    );
    assert_eq!(words(&["start"], 2), format!("{one}nothing was started"));
    assert_eq!(
        words(&["restart"], 2),
        format!("{one}nothing was restarted")
    );
    assert_eq!(words(&["reload"], 2), format!("{one}nothing was changed"));
    assert_eq!(
        words(&["scale", "api", "2"], 2),
        format!("{one}nothing was scaled")
    );
    // `status` and `stop` go on by the pid files, and say so (nothing
    // runs: `status` exits 3).
    assert_eq!(
        words(&["status"], 3),
        format!("{one}showing what the pid files prove")
    );
    assert_eq!(
        words(&["status", "api"], 2),
        format!("{one}no status was shown")
    );
    assert_eq!(
        words(&["stop"], 0),
        format!("{one}stopping what the pid files show")
    );

    // With a supervisor running: `status` uses it, `reload` changes nothing.
    s.write(
        "stack.toml",
        "[service.api]\ncommand = \"exec sleep 1000\"\n",
    );
    s.run(&["start"]).success();
    s.write(
        "stack.toml",
        "[service.api]\ncommand = \"exec sleep 1000\"\nredy = 1\n",
    );
    assert_eq!(
        words(&["status"], 0),
        format!("{one}showing the running supervisor's status")
    );
    assert_eq!(words(&["reload"], 2), format!("{one}nothing was changed"));
    assert_eq!(
        words(&["stop"], 0),
        format!("{one}stopping through the running supervisor")
    );
}

#[test]
fn a_require_env_hint_names_the_env_file_line_that_wins_over_the_shell() {
    let s = Stack::new(
        "[stack]\nenv_file = [\".env\"]\n\n[service.api]\ncommand = \"exec sleep 1000\"\nrequire_env = [\"STACKCTL_T_JWT\", \"STACKCTL_T_UNSET\"]\n",
    );
    s.write(".env", "# filled in at deploy\nSTACKCTL_T_JWT=\n");
    let env = [("STACKCTL_T_JWT", Some("x")), ("STACKCTL_T_UNSET", None)];
    // Setting it in the shell cannot help: the hint says where it is set.
    let r = s.run_env(&["start", "api"], &env);
    r.expect_code(2);
    assert!(
        r.stderr
            .contains("`STACKCTL_T_JWT` is set empty at .env:2, which wins over the shell"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("`STACKCTL_T_UNSET` is set nowhere"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("set them in this shell"), "{}", r.stderr);
    let r = s.run_env(&["check"], &env);
    r.expect_code(2);
    assert!(r.stderr.contains("set empty at .env:2"), "{}", r.stderr);
    // Removing the line, as the hint says, is then all it takes.
    s.write(".env", "# filled in at deploy\n");
    let env = [
        ("STACKCTL_T_JWT", Some("x")),
        ("STACKCTL_T_UNSET", Some("y")),
    ];
    s.run_env(&["check"], &env).success();
}

#[test]
fn a_lone_dollar_dollar_in_a_command_is_a_warning_with_the_fix() {
    let s = Stack::new(
        "[service.api]\ncommand = \"echo as-written=$$ fixed=$$$$ > pids; exec sleep 1000\"\n\
         pre_start = [\"echo '$${HOME}' > braces\"]\n",
    );
    let r = s.run(&["check"]);
    r.success();
    assert_eq!(
        r.stderr,
        "warning: `$$` in `service.api.command` becomes a single `$`\n  \
         --> stack.toml:2:28\n  |\n\
         2 | command = \"echo as-written=$$ fixed=$$$$ > pids; exec sleep 1000\"\n  \
         |                            ^^\n  \
         = hint: `$$` is stackctl's escape for a literal `$`: for the shell's `$$` (its pid) \
         write `$$$$`; a `$` that is not before `{` is kept as it is, so `$$` is needed only \
         for a literal `${`\n\n"
    );
    assert!(r.stdout.starts_with("stack.toml: ok"), "{}", r.stdout);
    // `start` warns the same way, and starts: the warning tells the truth.
    let r = s.run(&["start"]);
    r.success();
    assert!(
        r.stderr
            .contains("`$$` in `service.api.command` becomes a single `$`"),
        "{r:?}"
    );
    crate::harness::wait_for("the command to write its pids", 30, || {
        s.read("pids").ends_with('\n')
    });
    let pids = s.read("pids");
    let (as_written, fixed) = pids
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("{pids}"));
    assert_eq!(as_written, "as-written=$");
    assert!(
        fixed
            .strip_prefix("fixed=")
            .is_some_and(|p| p.parse::<u32>().is_ok()),
        "{pids}"
    );
    assert_eq!(s.read("braces"), "${HOME}\n");
    s.run(&["stop"]).success();
}
