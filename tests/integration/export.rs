//! `stackctl export`: the files each engine's own validator accepts
//! (`systemd-analyze verify`, `check-jsonschema` with the compose spec,
//! `docker-compose config -q`, `kubernetes-validate --strict`), for the demo
//! stack and examples/protea.toml; env values never in the output; the
//! refusals; `--check`; the hidden `probe` subcommand the units call; and a
//! live systemd run where a user manager is usable (else it says plainly
//! that it skipped it, and why).
//!
//! A missing validator fails the test (`.ci/run` installs them): a test that
//! passes without running its validator would prove nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{bin, free_port, wait_for, Run, Stack};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a validator; panics (loudly, naming the install) when it is missing.
fn validator(program: &str, args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> (i32, String) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "validator `{program}` cannot run ({e}): it is a test dependency, installed by .ci/run \
             (apt-get install systemd docker-compose; python3 -m pip install check-jsonschema kubernetes-validate)"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("No module named") {
        panic!("validator `{program} {}` is not installed: {text}\n(.ci/run installs it: python3 -m pip install check-jsonschema kubernetes-validate)", args.join(" "));
    }
    (out.status.code().unwrap_or(-1), text)
}

/// `stackctl -f FILE export ARGS…` from `cwd`.
fn export(file: &Path, cwd: &Path, args: &[&str]) -> Run {
    let mut all = vec!["-f", file.to_str().unwrap(), "export"];
    all.extend_from_slice(args);
    let out = Command::new(bin())
        .args(&all)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("STACKCTL_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        args: all.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The two stacks every engine must take: the demo at the root, and protea
/// (copied next to a `.env` made from its example, which it requires).
fn sample_stacks() -> Vec<(&'static str, tempfile::TempDir, PathBuf)> {
    let demo = tempfile::tempdir().unwrap();
    let protea = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/protea.toml"),
        protea.path().join("stack.toml"),
    )
    .unwrap();
    std::fs::copy(
        root().join("examples/protea.env.example"),
        protea.path().join(".env"),
    )
    .unwrap();
    let protea_file = protea.path().join("stack.toml");
    vec![
        ("demo", demo, root().join("stack.toml")),
        ("protea", protea, protea_file),
    ]
}

/// The unit names to verify: templates as their first instance.
fn verifiable_units(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .map(|f| {
            f.replace("@.service", "@1.service")
                .replace("@.timer", "@1.timer")
        })
        .collect()
}

#[test]
fn demo_and_protea_pass_systemd_analyze_verify() {
    for (name, out, file) in sample_stacks() {
        for user in [false, true] {
            let dir = out.path().join(if user { "user" } else { "system" });
            let mut args = vec!["systemd", "--out", dir.to_str().unwrap()];
            if user {
                args.push("--user");
            }
            let run = export(&file, out.path(), &args);
            run.success();
            assert!(run.stderr.contains("not mapped"), "{name}: {}", run.stderr);
            let units = verifiable_units(&dir);
            let mut vargs: Vec<&str> = Vec::new();
            if user {
                vargs.push("--user");
            }
            vargs.extend(["verify", "--man=no"]);
            vargs.extend(units.iter().map(String::as_str));
            // A user manager needs a runtime folder of its own.
            let runtime = tempfile::tempdir().unwrap();
            let (code, text) = validator(
                "systemd-analyze",
                &vargs,
                &dir,
                &[("XDG_RUNTIME_DIR", runtime.path())],
            );
            // verify only warns (rc 0) on unknown keys and bad values: any output fails.
            assert!(
                code == 0 && text.trim().is_empty(),
                "{name} (user: {user}): systemd-analyze verify exited {code}:\n{text}"
            );
        }
    }
}

#[test]
fn demo_and_protea_pass_the_compose_validators() {
    for (name, out, file) in sample_stacks() {
        let dir = out.path().join("compose");
        export(
            &file,
            out.path(),
            &[
                "compose",
                "--image",
                "app:1",
                "--out",
                dir.to_str().unwrap(),
            ],
        )
        .success();
        let (code, text) = validator(
            "python3",
            &[
                "-m",
                "check_jsonschema",
                "--builtin-schema",
                "vendor.compose-spec",
                "compose.yaml",
            ],
            &dir,
            &[],
        );
        assert_eq!(code, 0, "{name}: check-jsonschema:\n{text}");
        let (code, text) = validator(
            "docker-compose",
            &["-f", "compose.yaml", "config", "-q"],
            &dir,
            &[],
        );
        assert!(
            code == 0 && text.trim().is_empty(),
            "{name}: docker-compose config -q exited {code}:\n{text}"
        );
    }
}

#[test]
fn demo_and_protea_pass_kubernetes_validate() {
    for (name, out, file) in sample_stacks() {
        let dir = out.path().join("k8s");
        export(
            &file,
            out.path(),
            &[
                "kubernetes",
                "--image",
                "app:1",
                "--out",
                dir.to_str().unwrap(),
            ],
        )
        .success();
        let manifest = format!("{name}.yaml");
        let mut want = vec![manifest.clone(), "kustomization.yaml".to_string()];
        want.sort();
        assert_eq!(files_in(&dir), want);
        let (code, text) = validator(
            "python3",
            &[
                "-m",
                "kubernetes_validate",
                "--strict",
                "-k",
                "1.30.0",
                &manifest,
            ],
            &dir,
            &[],
        );
        assert_eq!(code, 0, "{name}: kubernetes-validate:\n{text}");
        assert!(
            text.contains("passed for resource deployment/"),
            "{name}: {text}"
        );
    }
}

#[test]
fn the_validators_catch_a_broken_file() {
    // The validators are real: each rejects a file export would never write.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.service"),
        "[Service]\nExecStart=/bin/true\nRestart=sometimes\n",
    )
    .unwrap();
    let (code, text) = validator(
        "systemd-analyze",
        &["verify", "--man=no", "bad.service"],
        dir.path(),
        &[],
    );
    assert!(
        code != 0 || !text.trim().is_empty(),
        "systemd-analyze said nothing about Restart=sometimes"
    );
    std::fs::write(
        dir.path().join("compose.yaml"),
        "name: x\nservices:\n  a:\n    image: a\n    restartt: \"no\"\n",
    )
    .unwrap();
    let (code, _) = validator(
        "python3",
        &[
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            "compose.yaml",
        ],
        dir.path(),
        &[],
    );
    assert_ne!(code, 0);
    let (code, _) = validator(
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
        dir.path(),
        &[],
    );
    assert_ne!(code, 0);
    std::fs::write(
        dir.path().join("k.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\nspec:\n  replicas: \"two\"\n",
    )
    .unwrap();
    let (code, _) = validator(
        "python3",
        &[
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            "1.30.0",
            "k.yaml",
        ],
        dir.path(),
        &[],
    );
    assert_ne!(code, 0);
}

const SECRET_STACK: &str = r#"
[stack]
name = "sec"
env_file = [".env"]

[env]
MODE = "prod"

[task.migrate]
command = "true"

[service.api]
command = ["python3", "-c", "import time; time.sleep(60)"]
depends_on = ["migrate"]
env_file = ["api.env"]
ready = { tcp = "127.0.0.1:${PORT:-8000}" }
"#;

#[test]
fn env_file_values_are_never_in_the_output() {
    let s = Stack::new(SECRET_STACK);
    s.write(".env", "DB_PASSWORD=hunter2-secret\n");
    s.write("api.env", "TOKEN=tok-42-secret\n");
    for (engine, extra) in [
        ("systemd", vec![]),
        ("compose", vec!["--image", "a:1"]),
        ("kubernetes", vec!["--image", "a:1"]),
    ] {
        let mut args = vec!["export", engine];
        args.extend(extra);
        let run = s.run(&args);
        run.success();
        assert!(
            !run.stderr.contains("secret") && !run.stdout.contains("secret"),
            "{}",
            run.stderr
        );
        let dir = s.path().join("export").join(engine);
        for f in files_in(&dir) {
            let text = std::fs::read_to_string(dir.join(&f)).unwrap();
            assert!(
                !text.contains("hunter2") && !text.contains("tok-42"),
                "{engine}/{f} holds a value:\n{text}"
            );
            assert!(
                text.contains("generated by `stackctl export"),
                "{engine}/{f} has no header"
            );
            assert!(
                text.contains(&s.path().join("stack.toml").display().to_string()),
                "{engine}/{f}"
            );
        }
    }
    let unit = s.read("export/systemd/sec-api.service");
    assert!(
        unit.contains(&format!("EnvironmentFile={}/.env\n", s.path().display())),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("EnvironmentFile={}/api.env\n", s.path().display())),
        "{unit}"
    );
    let compose = s.read("export/compose/compose.yaml");
    assert!(compose.contains("      - \"../../api.env\"\n"), "{compose}");
    let kust = s.read("export/kubernetes/kustomization.yaml");
    assert!(kust.contains("      - \"../../api.env\"\n"), "{kust}");
}

#[test]
fn an_env_file_systemd_reads_differently_is_refused_by_file_and_line() {
    let s = Stack::new(SECRET_STACK);
    s.write(".env", "A=1\n# note\nexport DB_PASSWORD=hunter2-secret\n");
    s.write("api.env", "TOKEN=x\n");
    let run = s.run(&["export", "systemd"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(
            "error: cannot export to systemd: env file `.env` line 3 uses an `export ` prefix"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"));
    assert!(
        !s.path().join("export/systemd").exists(),
        "a refused export wrote files"
    );
    // compose reads `export` as stackctl does.
    s.run(&["export", "compose", "--image", "a:1"]).success();
}

#[test]
fn compose_and_kubernetes_need_an_image_per_process() {
    let s = Stack::new(SECRET_STACK);
    s.write(".env", "A=1\n");
    s.write("api.env", "TOKEN=x\n");
    let run = s.run(&["export", "compose"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("needs an image for `migrate`, `api`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--image"), "{}", run.stderr);
    s.run(&[
        "export",
        "kubernetes",
        "--image",
        "api=a:1",
        "--image",
        "m:1",
    ])
    .success();
    let m = s.read("export/kubernetes/sec.yaml");
    assert!(
        m.contains("image: \"a:1\"") && m.contains("image: \"m:1\""),
        "{m}"
    );
    let run = s.run(&["export", "compose", "--image", "apii=a:1"]);
    run.expect_code(2);
    assert!(run.stderr.contains("did you mean `api`"), "{}", run.stderr);
    // [export] in the stack file serves too, and is validated by check.
    let s2 = Stack::new(&format!(
        "{SECRET_STACK}\n[export]\nimage = \"reg/app:2\"\nimages = {{ apii = \"x\" }}\n"
    ));
    s2.write(".env", "A=1\n");
    s2.write("api.env", "TOKEN=x\n");
    let run = s2.run(&["check"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("`export.images` names `apii`"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_names_the_files_that_differ_and_export_removes_what_it_no_longer_writes() {
    let s = Stack::new(SECRET_STACK);
    s.write(".env", "A=1\n");
    s.write("api.env", "TOKEN=x\n");
    let run = s.run(&["export", "systemd", "--check"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("export/systemd/sec-api.service: missing"),
        "{}",
        run.stderr
    );
    s.run(&["export", "systemd"]).success();
    let run = s.run(&["export", "systemd", "--check"]);
    run.success();
    assert!(run.stderr.contains("up to date"), "{}", run.stderr);
    // A hand edit is found.
    let unit = s.path().join("export/systemd/sec-api.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        text.replace("KillMode=control-group", "KillMode=process"),
    )
    .unwrap();
    let run = s.run(&["export", "systemd", "--check"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("sec-api.service: differs"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("sec-migrate.service"),
        "{}",
        run.stderr
    );
    // A process removed from the stack file: its unit is stale, then removed.
    s.write(
        "stack.toml",
        &SECRET_STACK
            .replace("depends_on = [\"migrate\"]\n", "")
            .replace("[task.migrate]\ncommand = \"true\"\n", ""),
    );
    let run = s.run(&["export", "systemd", "--check"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("sec-migrate.service: no longer exported"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("sec-api.service: differs"),
        "{}",
        run.stderr
    );
    let run = s.run(&["export", "systemd"]);
    run.success();
    assert!(
        run.stderr
            .contains("removed export/systemd/sec-migrate.service"),
        "{}",
        run.stderr
    );
    assert!(!s.path().join("export/systemd/sec-migrate.service").exists());
    s.run(&["export", "systemd", "--check"]).success();
    // A file someone else put there is left alone, and so are the files of
    // another engine exported to the same folder.
    s.write("export/systemd/mine.conf", "# not generated\n");
    s.run(&[
        "export",
        "compose",
        "--image",
        "a:1",
        "--out",
        "export/systemd",
    ])
    .success();
    s.run(&["export", "systemd", "--check"]).success();
    s.run(&["export", "systemd"]).success();
    assert!(s.path().join("export/systemd/compose.yaml").exists());
    assert!(s.path().join("export/systemd/mine.conf").exists());
}

/// `stackctl probe …` as a unit runs it.
fn probe(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["probe"];
    all.extend_from_slice(args);
    let mut cmd = Command::new(bin());
    cmd.args(&all).stdin(Stdio::null()).env_remove("PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        args: all.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn probe_gates_expand_templates_from_the_units_environment() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    probe(
        &["--tcp", "127.0.0.1:${PORT:-1}", "--timeout", "5s"],
        &[("PORT", &port)],
    )
    .success();
    let closed = free_port().to_string();
    let run = probe(
        &[
            "--tcp",
            &format!("127.0.0.1:{closed}"),
            "--timeout",
            "300ms",
            "--interval",
            "100ms",
        ],
        &[],
    );
    run.expect_code(1);
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);
    probe(&["--", "sh", "-c", "test \"$X\" = y"], &[("X", "y")]).success();
    probe(&["--shell", "exit 3", "--timeout", "300ms"], &[]).expect_code(1);
    probe(&["--http", "http://x", "--tcp", "a:1"], &[]).expect_code(2);
}

#[test]
fn probe_counts_health_failures_across_runs_in_its_count_file() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("run/stackctl/x.health-failures");
    let c = count.to_str().unwrap();
    let closed = format!("127.0.0.1:{}", free_port());
    let check = |target: &str| {
        probe(
            &[
                "--tcp",
                target,
                "--timeout",
                "1s",
                "--failures",
                "3",
                "--count-file",
                c,
            ],
            &[],
        )
    };
    let run = check(&closed);
    run.expect_code(1);
    assert!(run.stderr.contains("1 of 3 in a row"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "1\n");
    check(&closed).expect_code(1);
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "2\n");
    // A pass resets the count.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    check(&open).success();
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "0\n");
    for _ in 0..2 {
        check(&closed).expect_code(1);
    }
    let run = check(&closed);
    run.expect_code(1);
    assert!(
        run.stderr.contains("failed 3 times in a row"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "0\n",
        "the count starts over after the Nth"
    );
    // The unit's ExecStartPre= resets it; a missing file is fine.
    check(&closed).expect_code(1);
    probe(&["--reset-count", c], &[]).success();
    assert!(!count.exists());
    probe(&["--reset-count", c], &[]).success();
}

#[test]
fn probe_require_and_alive() {
    let run = probe(
        &["--require", "STACKCTL_TEST_UNSET_VAR", "--require", "HOME"],
        &[("STACKCTL_TEST_EMPTY", "")],
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains("`STACKCTL_TEST_UNSET_VAR`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("`HOME`"), "{}", run.stderr);
    probe(
        &["--require", "STACKCTL_TEST_EMPTY"],
        &[("STACKCTL_TEST_EMPTY", "")],
    )
    .expect_code(1);
    probe(&["--require", "HOME"], &[]).success();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id().to_string();
    let run = probe(&["--alive", "200ms", "--pid", &pid], &[]);
    let _ = child.kill();
    let _ = child.wait();
    run.success();
    probe(&["--alive", "100ms", "--pid", &pid], &[]).expect_code(1);
}

/// Why a systemd user manager cannot be used here, if it cannot.
fn no_user_manager() -> Option<String> {
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" {
        return Some(format!("PID 1 is `{}`, not systemd", pid1.trim()));
    }
    match Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "no user manager: `systemctl --user` says {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run systemctl: {e}")),
    }
}

#[test]
fn systemd_units_really_run_where_a_user_manager_is_usable() {
    if let Some(why) = no_user_manager() {
        // Straight to stderr, past the test harness's capture, so every run shows it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED the live systemd run: {why}. The exported units were validated by systemd-analyze verify, not run."
        );
        return;
    }
    let port = free_port();
    let name = format!("stackctl-export-test-{}", std::process::id());
    let s = Stack::new(&format!(
        r#"
[stack]
name = "{name}"

[task.prepare]
command = "echo prepared > prepared.txt"

[service.web]
command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
depends_on = ["prepare"]
ready = {{ http = "http://127.0.0.1:{port}/prepared.txt", timeout = "20s" }}
"#
    ));
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .unwrap_or_else(|_| format!("/run/user/{}", nix::unistd::getuid()));
    let units = PathBuf::from(runtime).join("systemd/user");
    s.run(&[
        "export",
        "systemd",
        "--user",
        "--out",
        units.to_str().unwrap(),
    ])
    .success();
    let written = files_in(&units)
        .into_iter()
        .filter(|f| f.starts_with(&name))
        .collect::<Vec<_>>();
    struct Cleanup(Vec<PathBuf>, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("systemctl")
                .args(["--user", "stop", &format!("{}.target", self.1)])
                .status();
            for f in &self.0 {
                let _ = std::fs::remove_file(f);
            }
            let _ = Command::new("systemctl")
                .args(["--user", "daemon-reload"])
                .status();
        }
    }
    let _cleanup = Cleanup(
        written.iter().map(|f| units.join(f)).collect(),
        name.clone(),
    );
    let ok = |args: &[&str]| {
        Command::new("systemctl")
            .arg("--user")
            .args(args)
            .status()
            .unwrap()
            .success()
    };
    assert!(ok(&["daemon-reload"]));
    assert!(ok(&["start", &format!("{name}.target")]));
    wait_for("the exported web unit to be active", 30, || {
        ok(&["is-active", "--quiet", &format!("{name}-web.service")])
    });
    // The gate (ExecStartPost=) passed, so the task ran before it and the port answers.
    assert!(s.path().join("prepared.txt").exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    println!("ran the exported units under the user manager");
}

/// `listen` becomes socket units systemd accepts: one per fd name, each
/// address bound as stackctl binds it, handed to the service (a pool's to
/// every member); compose and Kubernetes say what they cannot keep.
#[test]
fn listen_becomes_socket_units_that_systemd_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    let admin = dir.path().join("admin.sock");
    std::fs::write(
        &file,
        format!(
            r#"
[stack]
name = "sockets"

[service.api]
command = "exec python3 -m http.server"
listen = ["127.0.0.1:18000", "[::1]:18000", {{ addr = "unix:{}", name = "admin" }}]

[service.w]
command = "exec sleep 100"
replicas = 2
listen = ["127.0.0.1:18001"]
"#,
            admin.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("units");
    let run = export(
        &file,
        dir.path(),
        &["systemd", "--out", out.to_str().unwrap()],
    );
    run.success();
    assert!(
        run.stderr
            .contains("api, w: listen: systemd holds the sockets"),
        "{}",
        run.stderr
    );
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let api = read("sockets-api.socket");
    for line in [
        "ListenStream=127.0.0.1:18000",
        "ListenStream=[::1]:18000",
        "BindIPv6Only=ipv6-only",
        "FileDescriptorName=api",
        "Service=sockets-api.service",
    ] {
        assert!(api.contains(line), "{line} missing:\n{api}");
    }
    let admin_unit = read("sockets-api.admin.socket");
    assert!(
        admin_unit.contains(&format!("ListenStream={}", admin.display()))
            && admin_unit.contains("FileDescriptorName=admin")
            && admin_unit.contains("SocketMode=0600"),
        "{admin_unit}"
    );
    let service = read("sockets-api.service");
    assert!(
        service.contains("Sockets=sockets-api.socket sockets-api.admin.socket"),
        "{service}"
    );
    assert!(read("sockets-w@.service").contains("Sockets=sockets-w.socket"));
    assert!(read("sockets-w.socket").contains("Service=sockets-w@1.service"));
    assert!(read("sockets.target").contains("sockets-api.socket"));
    let units = verifiable_units(&out);
    let mut vargs = vec!["verify", "--man=no"];
    vargs.extend(units.iter().map(String::as_str));
    let (code, text) = validator("systemd-analyze", &vargs, &out, &[]);
    assert!(
        code == 0 && text.trim().is_empty(),
        "systemd-analyze verify exited {code}:\n{text}"
    );
    for engine in ["compose", "kubernetes"] {
        let out = dir.path().join(engine);
        let run = export(
            &file,
            dir.path(),
            &[engine, "--image", "app:1", "--out", out.to_str().unwrap()],
        );
        run.success();
        assert!(
            run.stderr
                .contains("w: listen = [127.0.0.1:18001] (sockets stackctl holds"),
            "{engine}: {}",
            run.stderr
        );
    }
}
