//! compose: one `compose.yaml` (no top-level `name:`, which docker-compose
//! 1.x rejects), a service per process, and a `NAME.defaults.env` per
//! process whose stack-file defaults must lose to its env files.
//!
//! Owns: the compose mapping (see docs/moving.md). Tasks are services with
//! `restart: "no"` that dependents wait for with
//! `service_completed_successfully`; polled gates become healthchecks that
//! dependents wait for with `service_healthy`; pools become
//! `deploy.replicas`; env files are listed in `env_file`, never inlined.
//! Must not touch: files on disk.

use crate::config::{Kind, ProbeKind, ProcessSpec, RestartPolicy, Stack};

use super::command::{template_word, translate, with_pre_start, Exec};
use super::env::{plan, EnvPlan};
use super::quote::compose_dollars;
use super::yaml::{to_string, MapBuilder, Y};
use super::{
    common_notes, duration, header, images, relative, take_notes_of, Engine, Export, File, Input,
    Note, Options, Refusal,
};

pub(super) fn render(input: &Input<'_>, opts: &Options) -> Result<Export, Refusal> {
    let stack = input.stack;
    let images = images(stack, opts)?;
    let mut notes = common_notes(stack, Engine::Compose);
    notes.push(Note::stack(
        "each process runs in its image, not on this host: the image must hold what the command needs (and the stack's files)",
    ));
    notes.push(Note::stack(
        "the engine signals a container's main process, not its process group as stackctl does: a shell command should `exec` its program",
    ));
    notes.push(Note::stack(
        "healthchecks run `curl` (http) and `nc` (tcp) inside the image, which must have them",
    ));
    if stack.export.workdir.is_none() {
        notes.push(Note::stack(
            "without [export] workdir, a process whose cwd is the stack's folder runs in its image's working directory",
        ));
    }
    let mut files = Vec::new();
    let mut services = MapBuilder::new();
    for p in &stack.processes {
        let env = plan(p, &stack.name, input.env_texts, Engine::Compose)?;
        let mut own = env.notes.clone();
        own.extend(take_notes_of(&mut notes, &p.name));
        let image = images.get(&p.name).cloned().unwrap_or_default();
        let svc = service(stack, opts, p, &image, &env, &mut own)?;
        if !env.fallback.is_empty() {
            files.push(File {
                name: defaults_name(p),
                contents: defaults_file(input, p, &env)?,
            });
        }
        let comments: Vec<String> = own.iter().map(Note::comment).collect();
        services = services.put_commented(comments, &p.name, svc);
        notes.extend(own);
    }
    let mut top: Vec<String> = header(input, Engine::Compose);
    top.push(String::new());
    top.extend(notes.iter().filter(|n| n.subject == "*").map(Note::comment));
    let doc = MapBuilder::new()
        .put_commented(top, "services", services.build())
        .build();
    files.push(File {
        name: "compose.yaml".into(),
        contents: to_string(&doc),
    });
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Export { files, notes })
}

fn defaults_name(p: &ProcessSpec) -> String {
    format!("{}.defaults.env", p.name)
}

/// Stack-file defaults in an env file listed before the process's own env
/// files, so that theirs win (compose gives `environment:` precedence over
/// every `env_file`).
fn defaults_file(input: &Input<'_>, p: &ProcessSpec, env: &EnvPlan) -> Result<String, Refusal> {
    let mut out = String::new();
    for l in header(input, Engine::Compose) {
        out.push_str(&format!("# {l}\n"));
    }
    out.push_str(&format!(
        "# the stack file's defaults for {}: its env files, listed after this one, override them\n",
        p.name
    ));
    for (k, v) in &env.fallback {
        let plain = v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@,+=-".contains(c));
        if plain {
            out.push_str(&format!("{k}={v}\n"));
        } else if !v.contains('\'') && !v.contains('\n') {
            out.push_str(&format!("{k}='{v}'\n"));
        } else {
            return Err(Refusal {
                message: format!(
                    "the default of `{k}` for `{}` holds a quote or a newline, which cannot be written in an env file that compose reads the same way",
                    p.name
                ),
                hint: "set it in an env file of your own instead".into(),
            });
        }
    }
    Ok(out)
}

fn command_argv(p: &ProcessSpec) -> Result<Vec<String>, Refusal> {
    let at = |k: &str| format!("{}.{}.{k}", p.kind, p.name);
    let main = translate(&p.command, &at("command"))?;
    let pre: Vec<Exec> = p
        .pre_start
        .iter()
        .map(|c| translate(c, &at("pre_start")))
        .collect::<Result<_, _>>()?;
    Ok(with_pre_start(&pre, &main).argv())
}

/// Where the process runs inside its image, if that can be said.
pub(super) fn container_dir(stack: &Stack, p: &ProcessSpec) -> Result<Option<String>, Note> {
    let rel = p.cwd.strip_prefix(&stack.root).ok();
    match (&stack.export.workdir, rel) {
        (Some(w), Some(r)) if r.as_os_str().is_empty() => Ok(Some(w.clone())),
        (Some(w), Some(r)) => Ok(Some(format!("{}/{}", w.trim_end_matches('/'), r.display()))),
        (None, Some(r)) if r.as_os_str().is_empty() => Ok(None),
        (_, rel) => Err(Note::new(
            &p.name,
            format!(
                "cwd {} is not mapped: {}",
                rel.map_or_else(|| p.cwd.display().to_string(), |r| r.display().to_string()),
                if stack.export.workdir.is_some() {
                    "it is outside the stack's folder"
                } else {
                    "set [export] workdir to say where the stack's folder is in the image"
                }
            ),
        )),
    }
}

/// The healthcheck `test` for a polled probe.
pub(super) fn test_of(kind: &ProbeKind, what: &str) -> Result<Option<Vec<String>>, Refusal> {
    Ok(Some(match kind {
        ProbeKind::Http(u) => vec![
            "CMD-SHELL".into(),
            format!("curl -fsS -o /dev/null {}", template_word(u, what)?),
        ],
        ProbeKind::Tcp(a) => {
            let (host, port) = split_host_port(a);
            vec![
                "CMD-SHELL".into(),
                format!(
                    "nc -z {} {}",
                    template_word(host, what)?,
                    template_word(port, what)?
                ),
            ]
        }
        ProbeKind::Exec(c) => match translate(c, what)? {
            Exec::Argv(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
            Exec::Shell(s) => vec!["CMD-SHELL".into(), s],
        },
        ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => return Ok(None),
    }))
}

/// `host:port`, split at the last `:` that is not inside a `${…}`.
pub(super) fn split_host_port(a: &str) -> (&str, &str) {
    let mut depth = 0usize;
    let mut last = None;
    let b = a.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'{' if i > 0 && b[i - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b':' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    match last {
        Some(i) => (&a[..i], &a[i + 1..]),
        None => (a, ""),
    }
}

fn same_probe(a: &ProbeKind, b: &ProbeKind) -> bool {
    match (a, b) {
        (ProbeKind::Http(x), ProbeKind::Http(y)) | (ProbeKind::Tcp(x), ProbeKind::Tcp(y)) => x == y,
        (ProbeKind::Exec(x), ProbeKind::Exec(y)) => x == y,
        _ => false,
    }
}

fn healthcheck(p: &ProcessSpec, notes: &mut Vec<Note>) -> Result<Option<Y>, Refusal> {
    let at = |k: &str| format!("{}.{}.{k}", p.kind, p.name);
    let dollars = |v: Vec<String>| Y::strs(v.into_iter().map(|s| compose_dollars(&s)));
    let gate = match &p.ready {
        Some(r) => test_of(&r.probe, &at("ready"))?.map(|t| (r, t)),
        None => None,
    };
    if let Some(r) = &p.ready {
        match &r.probe {
            ProbeKind::Notify => notes.push(Note::new(
                &p.name,
                "ready = { notify = true }: compose has no notify gate; dependents start once it has started",
            )),
            ProbeKind::Alive(d) => notes.push(Note::new(
                &p.name,
                format!(
                    "ready = {{ alive = \"{}\" }}: compose has no such gate; dependents start once it has started",
                    duration(*d)
                ),
            )),
            _ => {}
        }
    }
    let mut hc = MapBuilder::new();
    match (gate, &p.health) {
        (Some((r, test)), Some(h)) if same_probe(&r.probe, &h.probe) => {
            hc = hc
                .put("test", dollars(test))
                .put("interval", Y::str(duration(h.interval)))
                .put("timeout", Y::str(duration(h.timeout)))
                .put("retries", Y::int(h.failures))
                .put("start_period", Y::str(duration(r.timeout)));
            notes.push(Note::new(
                &p.name,
                format!(
                    "health: compose marks the container unhealthy after {} failures in a row but never restarts it (stackctl does); during start_period it checks every {} instead of the gate's {}",
                    h.failures,
                    duration(h.interval),
                    duration(r.interval)
                ),
            ));
        }
        (Some((r, test)), health) => {
            let interval = r.interval.max(std::time::Duration::from_secs(1));
            hc = hc
                .put("test", dollars(test))
                .put("interval", Y::str(duration(interval)))
                .put(
                    "timeout",
                    Y::str(duration(r.timeout.min(crate::probe::MAX_ATTEMPT))),
                )
                .put("retries", Y::int(1))
                .put("start_period", Y::str(duration(r.timeout)));
            notes.push(Note::new(
                &p.name,
                format!(
                    "ready: the healthcheck keeps running every {} after start (stackctl checks the gate until it passes{})",
                    duration(interval),
                    if interval > r.interval {
                        format!(", every {}; start_interval is not written because docker-compose 1.x rejects it", duration(r.interval))
                    } else {
                        String::new()
                    }
                ),
            ));
            if health.is_some() {
                notes.push(Note::new(
                    &p.name,
                    "health: compose has one healthcheck per service, used here for the gate; the health check is not exported and nothing restarts an unhealthy container",
                ));
            }
        }
        (None, Some(h)) => {
            let Some(test) = test_of(&h.probe, &at("health"))? else {
                return Ok(None);
            };
            hc = hc
                .put("test", dollars(test))
                .put("interval", Y::str(duration(h.interval)))
                .put("timeout", Y::str(duration(h.timeout)))
                .put("retries", Y::int(h.failures));
            notes.push(Note::new(
                &p.name,
                format!(
                    "health: compose marks the container unhealthy after {} failures in a row but never restarts it (stackctl does)",
                    h.failures
                ),
            ));
        }
        (None, None) => return Ok(None),
    }
    Ok(Some(hc.build()))
}

/// The `depends_on` condition a dependent waits for on `d`.
fn condition(d: &ProcessSpec) -> &'static str {
    match (d.kind, d.ready.as_ref().map(|r| &r.probe)) {
        (Kind::Task, _) => "service_completed_successfully",
        (Kind::Service, Some(ProbeKind::Http(_) | ProbeKind::Tcp(_) | ProbeKind::Exec(_))) => {
            "service_healthy"
        }
        (Kind::Service, _) => "service_started",
    }
}

fn service(
    stack: &Stack,
    opts: &Options,
    p: &ProcessSpec,
    image: &str,
    env: &EnvPlan,
    notes: &mut Vec<Note>,
) -> Result<Y, Refusal> {
    let mut svc = MapBuilder::new().put("image", Y::str(compose_dollars(image)));
    svc.push(
        "command",
        Y::strs(command_argv(p)?.iter().map(|s| compose_dollars(s))),
    );
    match container_dir(stack, p) {
        Ok(Some(dir)) => svc.push("working_dir", Y::str(compose_dollars(&dir))),
        Ok(None) => {}
        Err(n) => notes.push(n),
    }
    let mut environment = MapBuilder::new()
        .put("STACKCTL_STACK", Y::str(compose_dollars(&stack.name)))
        .put("STACKCTL_PROCESS", Y::str(p.name.clone()));
    for (k, v) in &env.forced {
        environment.push(k, Y::str(compose_dollars(v)));
    }
    svc.push("environment", environment.build());
    let mut env_files = Vec::new();
    if !env.fallback.is_empty() {
        env_files.push(defaults_name(p));
    }
    for f in &env.files {
        if f.exists {
            env_files.push(relative(&opts.out_dir, &f.path));
        } else {
            notes.push(Note::new(
                &p.name,
                format!(
                    "optional env file `{}` does not exist now and is not listed (compose refuses a missing env_file); export again once it exists",
                    f.written
                ),
            ));
        }
    }
    if !env_files.is_empty() {
        svc.push(
            "env_file",
            Y::strs(env_files.iter().map(|s| compose_dollars(s))),
        );
    }
    if !p.require_env.is_empty() {
        notes.push(Note::new(
            &p.name,
            format!(
                "require_env ({}): compose does not refuse to start when they are unset",
                p.require_env.join(", ")
            ),
        ));
    }
    if let Some(hc) = healthcheck(p, notes)? {
        svc.push("healthcheck", hc);
    }
    let mut deps = MapBuilder::new();
    for d in &p.depends_on {
        if let Some(dp) = stack.process(d) {
            deps.push(
                d,
                MapBuilder::new()
                    .put("condition", Y::str(condition(dp)))
                    .build(),
            );
        }
    }
    if !deps.is_empty() {
        svc.push("depends_on", deps.build());
    }
    let restart = match p.restart {
        RestartPolicy::Always => "always".to_string(),
        RestartPolicy::OnFailure => {
            notes.push(Note::new(
                &p.name,
                format!(
                    "max_restarts = {} is counted over the container's life, not per restart_window",
                    p.max_restarts
                ),
            ));
            format!("on-failure:{}", p.max_restarts)
        }
        RestartPolicy::Never => "no".to_string(),
    };
    svc.push("restart", Y::str(restart));
    if let Some(n) = p.replicas {
        svc.push(
            "deploy",
            MapBuilder::new().put("replicas", Y::int(n)).build(),
        );
        notes.push(Note::new(
            &p.name,
            "a pool: compose has no per-replica index, so STACKCTL_INSTANCE is not set and STACKCTL_PROCESS is the pool's name",
        ));
    }
    if p.kind == Kind::Task {
        if let Some(t) = p.timeout {
            notes.push(Note::new(
                &p.name,
                format!(
                    "timeout = \"{}\": compose has no time limit for a task",
                    duration(t)
                ),
            ));
        }
    }
    svc.push("stop_signal", Y::str(p.stop_signal.as_str()));
    svc.push("stop_grace_period", Y::str(duration(p.stop_timeout)));
    Ok(svc.build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::tests_support::{load, options_in};
    use super::*;

    #[test]
    fn host_and_port_split_outside_templates() {
        assert_eq!(split_host_port("127.0.0.1:5432"), ("127.0.0.1", "5432"));
        assert_eq!(
            split_host_port("127.0.0.1:${WEB_PORT:-18001}"),
            ("127.0.0.1", "${WEB_PORT:-18001}")
        );
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", "80"));
    }

    #[test]
    fn a_small_stack_as_a_compose_file() {
        let (stack, texts) = load(
            r#"
[stack]
name = "demo"
env_file = [".env"]

[env]
API_PORT = "${API_PORT:-18000}"
MODE = "prod"

[task.migrate]
command = ["python3", "migrate.py"]

[service.api]
command = "python3 api.py --port ${API_PORT}"
depends_on = ["migrate"]
ready = { http = "http://127.0.0.1:${API_PORT:-18000}/health", timeout = "20s" }

[service.web]
command = ["node", "server.js"]
depends_on = ["api"]
replicas = 2
pre_start = ["cp -r a b"]
stop_signal = "INT"
"#,
            &[(".env", "SECRET=hunter2\n")],
        );
        let input = Input {
            stack: &stack,
            sha256: "abc".into(),
            env_texts: &texts,
        };
        let e = render(&input, &options_in(&stack, Engine::Compose)).unwrap();
        let names: Vec<&str> = e.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "api.defaults.env",
                "compose.yaml",
                "migrate.defaults.env",
                "web.defaults.env"
            ]
        );
        let compose = &e.files[1].contents;
        assert!(!compose.contains("hunter2"));
        assert!(!compose.contains("\nname:"));
        let body = compose.split_once("services:\n").unwrap().1;
        let api = body
            .lines()
            .skip_while(|l| *l != "  api:")
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            api,
            r#"    image: "app:1"
    command:
      - "/bin/sh"
      - "-c"
      - "python3 api.py --port $${API_PORT}"
    environment:
      STACKCTL_STACK: "demo"
      STACKCTL_PROCESS: "api"
      MODE: "prod"
    env_file:
      - "api.defaults.env"
      - "../../.env"
    healthcheck:
      test:
        - "CMD-SHELL"
        - "curl -fsS -o /dev/null \"http://127.0.0.1:$${API_PORT:-18000}/health\""
      interval: "1s"
      timeout: "10s"
      retries: 1
      start_period: "20s"
    depends_on:
      migrate:
        condition: "service_completed_successfully"
    restart: "on-failure:5"
    stop_signal: "SIGTERM"
    stop_grace_period: "10s""#
        );
        assert!(
            body.contains("      api:\n        condition: \"service_healthy\"\n"),
            "{body}"
        );
        assert!(
            body.contains("      - \"(\\ncp -r a b\\n) && exec node server.js\"\n"),
            "{body}"
        );
        assert!(body.contains("    deploy:\n      replicas: 2\n"), "{body}");
        assert!(
            body.contains("    stop_signal: \"SIGINT\"\n    stop_grace_period: \"10s\"\n"),
            "{body}"
        );
        assert!(body.contains("    restart: \"no\"\n"), "{body}");
        assert_eq!(e.files[0].contents.lines().last(), Some("API_PORT=18000"));
        assert!(compose.contains("  # not mapped (web): a pool: compose has no per-replica index"));
    }
}
