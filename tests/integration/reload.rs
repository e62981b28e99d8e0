//! Tests: issue 17, items 6 and 7 — `reload` says per process what changed
//! and what it does (`--dry-run`: only that), pools roll member by member;
//! a broken stack file on disk blocks nothing that goes through a running
//! supervisor, and only `reload` and a `start` that needs a new
//! supervisor refuse.
//!
//! The real binary, `sh` stand-ins in a temp folder, real signals; waits
//! are conditions with deadlines; the fixture's `Drop` stops the stack and
//! kills anything still carrying the test's marker.

use std::collections::BTreeMap;

use crate::harness::{alive, env_of, run_code, Run, Stack};

#[track_caller]
fn ok(s: &Stack, args: &[&str]) -> Run {
    run_code(s, args, 0)
}

/// `name → pid` of every process instance `status --json` lists running.
fn pids(s: &Stack) -> BTreeMap<String, i32> {
    s.status_json()["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["state"] == "running")
        .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["pid"].as_i64()? as i32)))
        .collect()
}

/// The plan line of `process` in a reload's output (`  roll     worker …`).
#[track_caller]
fn plan_line<'a>(out: &'a str, process: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 2 && w[1] == process && l.starts_with("  ") && !l.starts_with("  ok")
        })
        .unwrap_or_else(|| panic!("no plan line for {process} in:\n{out}"))
}

const STACK: &str = r#"
[service.redis]
command = "exec sleep 1000"

[service.api]
command = "exec sleep 1000"
env_file = ["api.env"]

[service.worker]
command = "exec sleep 1000"
replicas = 2
"#;

fn stack() -> Stack {
    let s = Stack::new(STACK);
    s.write("api.env", "API_TOKEN=tok-one-4711\n");
    s
}

#[test]
fn an_edited_command_restarts_only_that_process_and_says_so() {
    let s = stack();
    ok(&s, &["start"]);
    let before = pids(&s);
    assert_eq!(before.len(), 4, "{before:?}");
    s.write(
        "stack.toml",
        &STACK.replacen(
            "exec sleep 1000\"\nenv_file",
            "exec sleep 1001\"\nenv_file",
            1,
        ),
    );
    let r = ok(&s, &["reload"]);
    let line = plan_line(&r.stdout, "api");
    assert!(
        line.split_whitespace().next() == Some("restart") && line.ends_with(" command"),
        "{line}"
    );
    assert!(
        r.stdout
            .contains("unchanged (they keep their pids): redis, worker"),
        "{}",
        r.stdout
    );
    let after = pids(&s);
    for (name, pid) in &before {
        if name == "api" {
            assert_ne!(after[name], *pid, "api kept its pid");
            assert!(!alive(*pid));
        } else {
            assert_eq!(after.get(name), Some(pid), "{name} was touched");
        }
    }
}

#[test]
fn a_changed_variable_is_named_and_its_value_never_shown() {
    let s = stack();
    ok(&s, &["start"]);
    let before = pids(&s);
    s.write("api.env", "API_TOKEN=tok-two-4712\nEXTRA=xtra-val-99\n");
    let dry = ok(&s, &["reload", "--dry-run", "--json"]);
    let r = ok(&s, &["reload"]);
    let line = plan_line(&r.stdout, "api");
    assert!(line.contains("env API_TOKEN, EXTRA"), "{line}");
    let log = std::fs::read_to_string(s.state("stackctl.log")).unwrap();
    for (what, text) in [
        ("reload's stdout", &r.stdout),
        ("reload's stderr", &r.stderr),
        ("reload --dry-run --json", &dry.stdout),
        ("stackctl.log", &log),
    ] {
        for value in ["tok-one", "tok-two", "xtra-val"] {
            assert!(
                !text.contains(value),
                "{what} shows a value ({value}):\n{text}"
            );
        }
    }
    let plan: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let api = plan["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["process"] == "api")
        .cloned()
        .unwrap_or_else(|| panic!("no api in {plan}"));
    assert_eq!(api["action"], "restart", "{plan}");
    assert_eq!(
        api["env"],
        serde_json::json!(["API_TOKEN", "EXTRA"]),
        "{plan}"
    );
    // Only api reads that file: only api restarted, and it has the new value.
    let after = pids(&s);
    assert_ne!(after["api"], before["api"]);
    assert_eq!(after["redis"], before["redis"]);
    assert_eq!(after["worker.1"], before["worker.1"]);
    assert_eq!(
        env_of(after["api"], "API_TOKEN").as_deref(),
        Some("tok-two-4712")
    );
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing_then_the_reload_does_it() {
    let s = stack();
    ok(&s, &["start"]);
    let before = pids(&s);
    // api's command changed, redis removed, web added, worker 2 → 3.
    let edited = STACK
        .replacen(
            "exec sleep 1000\"\nenv_file",
            "exec sleep 1001\"\nenv_file",
            1,
        )
        .replace("[service.redis]\ncommand = \"exec sleep 1000\"\n", "")
        .replace("replicas = 2", "replicas = 3")
        + "\n[service.web]\ncommand = \"exec sleep 1000\"\n";
    s.write("stack.toml", &edited);
    let dry = ok(&s, &["reload", "--dry-run"]);
    let out = &dry.stdout;
    assert!(
        out.starts_with(
            "reload --dry-run: what changed, and what a reload does (nothing was changed)\n"
        ),
        "{out}"
    );
    for (process, action, why) in [
        ("redis", "stop", "removed from the stack file"),
        ("api", "restart", "command"),
        ("worker", "resize", "replicas 2 → 3"),
        ("web", "start", "new in the stack file"),
    ] {
        let line = plan_line(out, process);
        assert_eq!(line.split_whitespace().next(), Some(action), "{line}");
        assert!(line.ends_with(why), "{line}");
    }
    // Nothing changed: same pids, web not started, redis still runs, the
    // pool still has 2; and the supervisor still has the old file (the
    // same dry run says the same again).
    assert_eq!(pids(&s), before, "the dry run changed something");
    assert!(s.process_status("web").is_none());
    assert_eq!(ok(&s, &["reload", "--dry-run"]).stdout, dry.stdout);
    // A dry run needs no lock: an export holding it does not stop it.
    ok(&s, &["lock", "acquire", "export", "exp-1", "a sweep"]);
    ok(&s, &["reload", "--dry-run"]);
    run_code(&s, &["reload"], 2);
    ok(&s, &["lock", "release", "exp-1"]);

    // The reload does what it said, first saying it.
    let r = ok(&s, &["reload"]);
    assert!(
        r.stdout
            .starts_with("reload: what changed, and what is done\n"),
        "{}",
        r.stdout
    );
    let after = pids(&s);
    assert!(!after.contains_key("redis") && !alive(before["redis"]));
    assert!(s.process_status("redis").is_none());
    assert_ne!(after["api"], before["api"]);
    assert_eq!(after["worker.1"], before["worker.1"]);
    assert_eq!(after["worker.2"], before["worker.2"]);
    assert!(
        after.contains_key("worker.3") && after.contains_key("web"),
        "{after:?}"
    );
    let again = ok(&s, &["reload", "--dry-run"]);
    assert_eq!(
        again.stdout.trim(),
        "reload --dry-run: no change (3 processes unchanged)"
    );
}

#[test]
fn a_redefined_pool_rolls_member_by_member_never_all_down() {
    let pool = |generation: u32| {
        format!(
            r#"
[service.worker]
command = """
trap 'echo "$STACKCTL_INSTANCE stop $(date +%s.%N)" >> events.log; exit 0' TERM
echo "$STACKCTL_INSTANCE start $(date +%s.%N)" >> events.log
sleep 0.6
echo "$STACKCTL_INSTANCE ready $(date +%s.%N)" >> events.log
echo "member ready"
while :; do sleep 1 & wait $!; done
"""
replicas = 3
env = {{ GENERATION = "{generation}" }}
ready = {{ log = "member ready", timeout = "30s" }}
stop_timeout = "10s"
"#
        )
    };
    let s = Stack::new(&pool(1));
    ok(&s, &["start"]);
    let before = pids(&s);
    assert_eq!(before.len(), 3, "{before:?}");
    std::fs::remove_file(s.path().join("events.log")).unwrap();
    s.write("stack.toml", &pool(2));
    let r = ok(&s, &["reload"]);
    let line = plan_line(&r.stdout, "worker");
    assert!(
        line.starts_with("  roll ") && line.contains("env GENERATION"),
        "{line}"
    );
    let after = pids(&s);
    for (n, pid) in &before {
        assert_ne!(after[n], *pid, "{n} kept its pid");
        assert!(!alive(*pid), "{n}'s old pid {pid} lives on");
        assert_eq!(env_of(after[n], "GENERATION").as_deref(), Some("2"));
    }
    // (instance, event, time) as the members wrote them.
    let ev: Vec<(String, String, f64)> = s
        .read("events.log")
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap())
        })
        .collect();
    let at = |i: &str, e: &str| -> f64 {
        ev.iter()
            .find(|(a, b, _)| a == i && b == e)
            .unwrap_or_else(|| panic!("no `{i} {e}` in {ev:?}"))
            .2
    };
    // Each member is down from its stop to its successor's ready; those
    // windows never overlap, so at least 2 of 3 run at every moment.
    let down: Vec<(f64, f64)> = ["1", "2", "3"]
        .iter()
        .map(|i| (at(i, "stop"), at(i, "ready")))
        .collect();
    for k in 0..2 {
        assert!(
            down[k].1 <= down[k + 1].0,
            "member {} stopped before member {} was ready again: {ev:?}",
            k + 2,
            k + 1
        );
    }
    assert_eq!(ev.iter().filter(|e| e.1 == "stop").count(), 3, "{ev:?}");
}

// ---------------------------------------------------------------------------
// A broken stack file on disk

const RUNNING: &str = r#"
[stack]
name = "shop"
state_dir = "run/state"

[service.api]
command = "exec sleep 1000"

[service.worker]
command = "exec sleep 1000"
replicas = 2
max_replicas = 4
"#;

/// Every operation on what runs works through the running supervisor with
/// `broken` on disk, and warns with its diagnostics (`diag`: a piece of
/// them, with the file:line); `reload` refuses and changes nothing; once
/// the supervisor is gone, `start` refuses.
fn operations_go_through_the_running_supervisor(broken: &str, diag: &str) {
    let s = Stack::new(RUNNING);
    ok(&s, &["start"]);
    let before = pids(&s);
    s.write("stack.toml", broken);
    let warned = |r: &Run, doing: &str| {
        assert!(
            r.stderr.starts_with("warning: the stack file on disk does not validate; the running supervisor goes on with the one it loaded"),
            "{r:?}"
        );
        assert!(r.stderr.contains(diag), "no `{diag}` in {r:?}");
        assert!(
            r.stderr.trim_end().ends_with(&format!("; {doing}")),
            "{doing}: {r:?}"
        );
    };
    let r = ok(&s, &["status"]);
    warned(&r, "showing the running supervisor's status");
    assert!(r.stdout.contains("worker.2"), "{r:?}");

    // `reload` refuses, with the diagnostics, and changes nothing.
    let r = run_code(&s, &["reload"], 2);
    assert!(r.stderr.contains(diag), "{r:?}");
    assert!(
        r.stderr.trim_end().ends_with("nothing was changed"),
        "{r:?}"
    );
    run_code(&s, &["reload", "--dry-run"], 2);
    assert_eq!(pids(&s), before);

    let r = ok(&s, &["restart", "api"]);
    warned(&r, "restarting through the running supervisor");
    let api = s.pid_of("api").unwrap();
    assert_ne!(api, before["api"], "api was not restarted");
    assert!(!alive(before["api"]));

    let r = ok(&s, &["scale", "worker", "3"]);
    warned(&r, "scaling through the running supervisor");
    let now = pids(&s);
    assert_eq!(now["worker.1"], before["worker.1"]);
    assert!(now.contains_key("worker.3"), "{now:?}");

    let r = ok(&s, &["start"]);
    warned(&r, "starting through the running supervisor");
    assert_eq!(pids(&s), now, "start touched what runs");

    let r = ok(&s, &["stop", "api"]);
    warned(&r, "stopping through the running supervisor");
    assert!(!alive(api));
    assert_eq!(s.process_status("api").unwrap()["state"], "stopped");

    let r = ok(&s, &["logs", "worker.1", "-n", "1"]);
    assert!(
        r.stderr.contains(diag) && r.stderr.contains("showing the logs in its state folder"),
        "{r:?}"
    );

    // No supervisor: a new one would need the file.
    ok(&s, &["stop"]);
    assert_eq!(s.status_json()["supervisor"]["running"], false);
    let r = run_code(&s, &["start"], 2);
    assert!(r.stderr.contains(diag), "{r:?}");
    assert!(
        r.stderr.trim_end().ends_with("nothing was started"),
        "{r:?}"
    );
    run_code(&s, &["restart", "api"], 2);
    assert_eq!(
        s.status_json()["supervisor"]["running"],
        false,
        "a supervisor was started"
    );
}

#[test]
fn a_syntax_error_on_disk_blocks_nothing_that_runs() {
    // Not TOML at all: the state folder is still found, from `[stack]`.
    let broken = RUNNING.replace("replicas = 2", "replicas = 2\n[service.web");
    operations_go_through_the_running_supervisor(&broken, "stack.toml:12:");
}

#[test]
fn an_unknown_key_or_a_bad_value_on_disk_blocks_nothing_that_runs() {
    let broken = RUNNING
        .replace("replicas = 2", "replicas = 2\nredy = { log = \"x\" }")
        .replace("max_replicas = 4", "max_replicas = \"four\"");
    operations_go_through_the_running_supervisor(&broken, "stack.toml:12:");
}
