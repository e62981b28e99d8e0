//! Kubernetes: `STACK.yaml` (a Deployment per service, a Job per task that
//! nothing depends on, a ConfigMap of stack-file defaults where needed) and
//! a `kustomization.yaml` whose `secretGenerator` reads each env file by
//! reference, so no value is ever in a manifest.
//!
//! Owns: the Kubernetes mapping (see docs/moving.md). A task that services
//! depend on runs as an init container of each of their pods; gates become
//! startup and readiness probes, `health` a liveness probe, pools
//! `replicas`, `stop_timeout` `terminationGracePeriodSeconds`.
//! Must not touch: files on disk.

use std::collections::BTreeMap;

use crate::config::{Kind, ProbeKind, ProcessSpec, RestartPolicy, Stack};

use super::command::{translate, with_pre_start, Exec};
use super::compose::{container_dir, split_host_port};
use super::env::{plan, EnvPlan};
use super::quote::kube_dollars;
use super::yaml::{to_string, MapBuilder, Y};
use super::{
    common_notes, dependents, duration, header, images, relative, secs_ceil, take_notes_of, Engine,
    Export, File, Input, Note, Options, Refusal,
};

/// A DNS-1123 label from a stackctl name.
fn dns_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "x".into()
    } else {
        out
    }
}

struct Ctx<'a> {
    input: &'a Input<'a>,
    opts: &'a Options,
    images: BTreeMap<String, String>,
    envs: BTreeMap<String, EnvPlan>,
    /// Secret name of each env file, by absolute path.
    secrets: BTreeMap<std::path::PathBuf, String>,
}

impl Ctx<'_> {
    fn stack(&self) -> &Stack {
        self.input.stack
    }

    fn object(&self, p: &ProcessSpec) -> String {
        dns_name(&format!("{}-{}", self.stack().name, p.name))
    }

    fn labels(&self, p: &ProcessSpec) -> Y {
        MapBuilder::new()
            .put("app.kubernetes.io/name", Y::str(dns_name(&p.name)))
            .put(
                "app.kubernetes.io/part-of",
                Y::str(dns_name(&self.stack().name)),
            )
            .build()
    }
}

pub(super) fn render(input: &Input<'_>, opts: &Options) -> Result<Export, Refusal> {
    let stack = input.stack;
    let mut ctx = Ctx {
        input,
        opts,
        images: images(stack, opts)?,
        envs: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for p in &stack.processes {
        let n = dns_name(&p.name);
        if let Some(other) = seen.insert(n.clone(), p.name.clone()) {
            return Err(Refusal {
                message: format!(
                    "`{other}` and `{}` are both `{n}` as Kubernetes names (lowercase letters, digits, `-`)",
                    p.name
                ),
                hint: "rename one of them".into(),
            });
        }
        ctx.envs.insert(
            p.name.clone(),
            plan(p, &stack.name, input.env_texts, Engine::Kubernetes)?,
        );
    }
    for f in ctx.envs.values().flat_map(|e| &e.files) {
        let name = dns_name(&format!("{}-{}", stack.name, f.written));
        ctx.secrets.entry(f.path.clone()).or_insert(name);
    }

    let mut notes = common_notes(stack, Engine::Kubernetes);
    notes.push(Note::stack(
        "each process runs in its image, not on this host: the image must hold what the command needs (and the stack's files)",
    ));
    notes.push(Note::stack(
        "probes to 127.0.0.1 or localhost go to the pod's IP: the process must listen on all interfaces",
    ));
    notes.push(Note::stack(
        "probe periods are whole seconds: shorter intervals are rounded up; readiness is checked for the pod's life (stackctl checks the gate until it passes)",
    ));
    notes.push(Note::stack(
        "Kubernetes signals a container's main process, not its process group as stackctl does: a shell command should `exec` its program",
    ));

    let mut docs: Vec<(Vec<Note>, Y)> = Vec::new();
    for p in &stack.processes {
        let mut own = ctx
            .envs
            .get(&p.name)
            .map(|e| e.notes.clone())
            .unwrap_or_default();
        own.extend(take_notes_of(&mut notes, &p.name));
        let doc = match p.kind {
            Kind::Service => Some(deployment(&ctx, p, &mut own)?),
            Kind::Task if dependents(stack, &p.name).is_empty() => Some(job(&ctx, p, &mut own)?),
            Kind::Task => {
                let users: Vec<String> = dependents(stack, &p.name)
                    .iter()
                    .map(|d| d.name.clone())
                    .collect();
                own.push(Note::new(
                    &p.name,
                    format!(
                        "a task: runs as an init container of each pod of {} (once per pod start, not once for the stack){}",
                        users.join(", "),
                        p.timeout.map_or_else(String::new, |t| format!(
                            "; its timeout = \"{}\" has no init-container equivalent",
                            duration(t)
                        ))
                    ),
                ));
                None
            }
        };
        if let Some(env) = ctx.envs.get(&p.name) {
            if !env.fallback.is_empty() {
                docs.push((Vec::new(), defaults_map(&ctx, p, env)));
            }
        }
        if let Some(d) = doc {
            docs.push((own.clone(), d));
        }
        notes.extend(own);
    }

    let stack_name = dns_name(&stack.name);
    let mut manifest = String::new();
    for l in header(input, Engine::Kubernetes) {
        manifest.push_str(&format!("# {l}\n"));
    }
    manifest.push_str("#\n");
    for n in notes.iter().filter(|n| n.subject == "*") {
        manifest.push_str(&format!("# {}\n", n.comment()));
    }
    for (own, doc) in &docs {
        manifest.push_str("---\n");
        for n in own {
            manifest.push_str(&format!("# {}\n", n.comment()));
        }
        manifest.push_str(&to_string(doc));
    }
    let manifest_name = format!("{stack_name}.yaml");
    let kustomization = kustomization(&ctx, &manifest_name, &mut notes);
    let mut files = vec![
        File {
            name: manifest_name,
            contents: manifest,
        },
        File {
            name: "kustomization.yaml".into(),
            contents: kustomization,
        },
    ];
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Export { files, notes })
}

fn kustomization(ctx: &Ctx<'_>, manifest: &str, notes: &mut Vec<Note>) -> String {
    let mut generators = Vec::new();
    let mut own = Vec::new();
    let mut outside = false;
    let mut done: Vec<&std::path::PathBuf> = Vec::new();
    for f in ctx.envs.values().flat_map(|e| &e.files) {
        if done.contains(&&f.path) {
            continue;
        }
        done.push(&f.path);
        let Some(name) = ctx.secrets.get(&f.path) else {
            continue;
        };
        if !f.exists {
            own.push(Note::stack(format!(
                "optional env file `{}` does not exist now: no Secret is generated (the pods name it with optional: true); export again once it exists",
                f.written
            )));
            continue;
        }
        let rel = relative(&ctx.opts.out_dir, &f.path);
        outside |= rel.starts_with("..");
        generators.push(
            MapBuilder::new()
                .put("name", Y::str(name.clone()))
                .put("envs", Y::strs([rel]))
                .build(),
        );
    }
    let mut top = header(ctx.input, Engine::Kubernetes);
    top.push(
        "the env files are read by reference (secretGenerator); no value is in these files".into(),
    );
    top.extend(own.iter().map(Note::comment));
    notes.extend(own);
    if outside {
        top.push(
            "the env files are outside this folder: build with `kustomize build --load-restrictor LoadRestrictionsNone` (or `kubectl kustomize` with the same flag)"
                .into(),
        );
    }
    let mut doc = MapBuilder::new()
        .put_commented(top, "apiVersion", Y::str("kustomize.config.k8s.io/v1beta1"))
        .put("kind", Y::str("Kustomization"))
        .put("resources", Y::strs([manifest.to_string()]));
    if !generators.is_empty() {
        doc.push("secretGenerator", Y::Seq(generators));
    }
    to_string(&doc.build())
}

fn defaults_map(ctx: &Ctx<'_>, p: &ProcessSpec, env: &EnvPlan) -> Y {
    let mut data = MapBuilder::new();
    for (k, v) in &env.fallback {
        data.push(k, Y::str(v.clone()));
    }
    MapBuilder::new()
        .put_commented(
            vec![format!(
                "the stack file's defaults for {}: its env files (Secrets, listed after this in envFrom) override them",
                p.name
            )],
            "apiVersion",
            Y::str("v1"),
        )
        .put("kind", Y::str("ConfigMap"))
        .put(
            "metadata",
            MapBuilder::new()
                .put("name", Y::str(format!("{}-defaults", ctx.object(p))))
                .put("labels", ctx.labels(p))
                .build(),
        )
        .put("data", data.build())
        .build()
}

fn container(ctx: &Ctx<'_>, p: &ProcessSpec, notes: &mut Vec<Note>) -> Result<MapBuilder, Refusal> {
    let stack = ctx.stack();
    let at = |k: &str| format!("{}.{}.{k}", p.kind, p.name);
    let main = translate(&p.command, &at("command"))?;
    let pre: Vec<Exec> = p
        .pre_start
        .iter()
        .map(|c| translate(c, &at("pre_start")))
        .collect::<Result<_, _>>()?;
    let argv = with_pre_start(&pre, &main).argv();
    let mut c = MapBuilder::new()
        .put("name", Y::str(dns_name(&p.name)))
        .put(
            "image",
            Y::str(ctx.images.get(&p.name).cloned().unwrap_or_default()),
        )
        .put("command", Y::strs(argv.iter().map(|a| kube_dollars(a))));
    match container_dir(stack, p) {
        Ok(Some(d)) => c.push("workingDir", Y::str(d)),
        Ok(None) => {}
        Err(n) => notes.push(n),
    }
    let var = |k: &str, v: &str| {
        MapBuilder::new()
            .put("name", Y::str(k))
            .put("value", Y::str(kube_dollars(v)))
            .build()
    };
    let mut env = vec![
        var("STACKCTL_STACK", &stack.name),
        var("STACKCTL_PROCESS", &p.name),
    ];
    let plan = ctx.envs.get(&p.name).cloned().unwrap_or_default();
    for (k, v) in &plan.forced {
        env.push(var(k, v));
    }
    c.push("env", Y::Seq(env));
    let mut from = Vec::new();
    if !plan.fallback.is_empty() {
        from.push(
            MapBuilder::new()
                .put(
                    "configMapRef",
                    MapBuilder::new()
                        .put("name", Y::str(format!("{}-defaults", ctx.object(p))))
                        .build(),
                )
                .build(),
        );
    }
    for f in &plan.files {
        if let Some(name) = ctx.secrets.get(&f.path) {
            let mut r = MapBuilder::new().put("name", Y::str(name.clone()));
            if f.optional {
                r.push("optional", Y::Bool(true));
            }
            from.push(MapBuilder::new().put("secretRef", r.build()).build());
        }
    }
    if !from.is_empty() {
        c.push("envFrom", Y::Seq(from));
    }
    if !p.require_env.is_empty() {
        notes.push(Note::new(
            &p.name,
            format!(
                "require_env ({}): Kubernetes does not refuse to start a container when they are unset",
                p.require_env.join(", ")
            ),
        ));
    }
    Ok(c)
}

/// A probe's target with its templates expanded from the stack file's
/// values (a probe cannot read the container's environment).
fn static_target(
    template: &str,
    p: &ProcessSpec,
    env: &EnvPlan,
    what: &str,
    notes: &mut Vec<Note>,
) -> Result<String, Refusal> {
    let mut from_defaults: Vec<String> = Vec::new();
    let lookup = |k: &str| -> Option<String> {
        match k {
            "STACKCTL_STACK" => None,
            "STACKCTL_PROCESS" => Some(p.name.clone()),
            _ => env
                .forced
                .get(k)
                .cloned()
                .or_else(|| env.fallback.get(k).cloned()),
        }
    };
    let v = crate::config::expand(template, &lookup).map_err(|e| Refusal {
        message: format!(
            "`{what}` needs a value at run time ({e}): a Kubernetes probe is fixed in the manifest"
        ),
        hint: "give the probe a literal target, or a default: `${NAME:-value}`".into(),
    })?;
    for k in env.fallback.keys() {
        if super::command::uses_var(template, k) {
            from_defaults.push(k.clone());
        }
    }
    if !from_defaults.is_empty() {
        notes.push(Note::new(
            &p.name,
            format!(
                "`{what}` is fixed at export from the stack file's default of {}; an env file that sets {} does not move the probe",
                from_defaults.join(", "),
                if from_defaults.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    Ok(v)
}

fn port_value(port: &str, what: &str) -> Result<Y, Refusal> {
    port.parse::<u16>().map(Y::int).map_err(|_| Refusal {
        message: format!("`{what}` has no port Kubernetes can probe"),
        hint: "write host:port with a number".into(),
    })
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") || host.starts_with("127.")
}

/// The handler part of a probe (`httpGet`, `tcpSocket` or `exec`).
fn handler(
    kind: &ProbeKind,
    p: &ProcessSpec,
    env: &EnvPlan,
    what: &str,
    notes: &mut Vec<Note>,
) -> Result<Option<MapBuilder>, Refusal> {
    // A target that reads a variable an env file sets cannot be fixed in the
    // manifest: the check runs in the container instead, as compose's does.
    let reads_file = |t: &str| {
        env.file_keys
            .iter()
            .find(|k| super::command::uses_var(t, k))
            .cloned()
    };
    if let ProbeKind::Http(t) | ProbeKind::Tcp(t) = kind {
        if let Some(k) = reads_file(t) {
            let Some(test) = super::compose::test_of(kind, what)? else {
                return Ok(None);
            };
            notes.push(Note::new(
                &p.name,
                format!(
                    "`{what}` reads {k} from an env file, so it runs as an exec probe in the container ({}, which the image must have)",
                    if matches!(kind, ProbeKind::Http(_)) { "curl" } else { "nc" }
                ),
            ));
            let argv: Vec<String> = match test.split_first() {
                Some((first, rest)) if first == "CMD-SHELL" => {
                    vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
                }
                Some((_, rest)) => rest.to_vec(),
                None => Vec::new(),
            };
            return Ok(Some(MapBuilder::new().put(
                "exec",
                MapBuilder::new().put("command", Y::strs(argv)).build(),
            )));
        }
    }
    Ok(Some(match kind {
        ProbeKind::Http(u) => {
            let url = static_target(u, p, env, what, notes)?;
            let (scheme, rest) = match url.split_once("://") {
                Some(("https", r)) => ("HTTPS", r),
                Some((_, r)) => ("HTTP", r),
                None => ("HTTP", url.as_str()),
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, "/".to_string()),
            };
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, port)) if !h.ends_with(':') && !port.contains(']') => {
                    (h, port_value(port, what)?)
                }
                _ => (authority, Y::int(if scheme == "HTTPS" { 443 } else { 80 })),
            };
            let mut g = MapBuilder::new()
                .put("path", Y::str(path))
                .put("port", port);
            if !is_loopback(host) {
                g.push("host", Y::str(host));
            }
            g.push("scheme", Y::str(scheme));
            MapBuilder::new().put("httpGet", g.build())
        }
        ProbeKind::Tcp(a) => {
            let addr = static_target(a, p, env, what, notes)?;
            let (host, port) = split_host_port(&addr);
            let mut t = MapBuilder::new().put("port", port_value(port, what)?);
            if !is_loopback(host) {
                t.push("host", Y::str(host));
            }
            MapBuilder::new().put("tcpSocket", t.build())
        }
        ProbeKind::Exec(c) => {
            // Probe commands are not expanded by Kubernetes: no `$$` here.
            let argv = translate(c, what)?.argv();
            MapBuilder::new().put(
                "exec",
                MapBuilder::new().put("command", Y::strs(argv)).build(),
            )
        }
        ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => return Ok(None),
    }))
}

fn with_timing(mut h: MapBuilder, period: u64, timeout: u64, failures: u64) -> Y {
    h.push("periodSeconds", Y::int(period));
    h.push("timeoutSeconds", Y::int(timeout));
    h.push("failureThreshold", Y::int(failures));
    h.build()
}

fn deployment(ctx: &Ctx<'_>, p: &ProcessSpec, notes: &mut Vec<Note>) -> Result<Y, Refusal> {
    let stack = ctx.stack();
    let env = ctx.envs.get(&p.name).cloned().unwrap_or_default();
    let at = |k: &str| format!("{}.{}.{k}", p.kind, p.name);
    let mut c = container(ctx, p, notes)?;
    let mut min_ready = None;
    if let Some(r) = &p.ready {
        if let Some(h) = handler(&r.probe, p, &env, &at("ready"), notes)? {
            let period = secs_ceil(r.interval, 1);
            let timeout = secs_ceil(r.timeout.min(crate::probe::MAX_ATTEMPT), 1);
            let failures = secs_ceil(r.timeout, 1).div_ceil(period).max(1);
            c.push(
                "startupProbe",
                with_timing(h.clone(), period, timeout, failures),
            );
            c.push("readinessProbe", with_timing(h, 10, timeout, 3));
        } else {
            match &r.probe {
                ProbeKind::Alive(d) => {
                    min_ready = Some(secs_ceil(*d, 1));
                    notes.push(Note::new(
                        &p.name,
                        format!(
                            "ready = {{ alive = \"{}\" }} becomes minReadySeconds (the pod counts as available after that long up)",
                            duration(*d)
                        ),
                    ));
                }
                ProbeKind::Notify => notes.push(Note::new(
                    &p.name,
                    "ready = { notify = true }: Kubernetes has no notify gate",
                )),
                _ => {}
            }
        }
    }
    if let Some(h) = &p.health {
        if let Some(hd) = handler(&h.probe, p, &env, &at("health"), notes)? {
            c.push(
                "livenessProbe",
                with_timing(
                    hd,
                    secs_ceil(h.interval, 1),
                    secs_ceil(h.timeout, 1),
                    u64::from(h.failures),
                ),
            );
        }
    }
    match p.restart {
        RestartPolicy::Always => {}
        RestartPolicy::OnFailure | RestartPolicy::Never => notes.push(Note::new(
            &p.name,
            format!(
                "restart = \"{}\": a Deployment restarts its container whatever the exit",
                if p.restart == RestartPolicy::Never {
                    "never"
                } else {
                    "on-failure"
                }
            ),
        )),
    }
    if p.restart != RestartPolicy::Never {
        notes.push(Note::new(
            &p.name,
            format!(
                "max_restarts = {} in restart_window: Kubernetes restarts without a limit (CrashLoopBackOff)",
                p.max_restarts
            ),
        ));
    }
    if p.stop_signal != nix::sys::signal::Signal::SIGTERM {
        notes.push(Note::new(
            &p.name,
            format!(
                "stop_signal = \"{}\": Kubernetes 1.30 always sends SIGTERM (lifecycle.stopSignal is alpha from 1.33)",
                p.stop_signal.as_str()
            ),
        ));
    }
    let mut init = Vec::new();
    let mut order: Vec<&ProcessSpec> = Vec::new();
    task_closure(stack, p, &mut order, notes);
    for t in &order {
        init.push(container(ctx, t, notes)?.build());
    }
    for d in &p.depends_on {
        if stack.process(d).is_some_and(|dp| dp.kind == Kind::Service) {
            notes.push(Note::new(
                &p.name,
                format!("depends_on {d}: Kubernetes does not order pods, so it may start before {d} is ready"),
            ));
        }
    }
    if p.replicas.is_some() {
        notes.push(Note::new(
            &p.name,
            "a pool: a Deployment has no per-replica index, so STACKCTL_INSTANCE is not set and STACKCTL_PROCESS is the pool's name",
        ));
    }
    let mut pod = MapBuilder::new().put(
        "terminationGracePeriodSeconds",
        Y::int(secs_ceil(p.stop_timeout, 0)),
    );
    if !init.is_empty() {
        pod.push("initContainers", Y::Seq(init));
    }
    pod.push("containers", Y::Seq(vec![c.build()]));
    let mut spec = MapBuilder::new().put("replicas", Y::int(p.replicas.unwrap_or(1)));
    if let Some(m) = min_ready {
        spec.push("minReadySeconds", Y::int(m));
    }
    spec.push(
        "selector",
        MapBuilder::new().put("matchLabels", ctx.labels(p)).build(),
    );
    spec.push(
        "template",
        MapBuilder::new()
            .put(
                "metadata",
                MapBuilder::new().put("labels", ctx.labels(p)).build(),
            )
            .put("spec", pod.build())
            .build(),
    );
    Ok(MapBuilder::new()
        .put("apiVersion", Y::str("apps/v1"))
        .put("kind", Y::str("Deployment"))
        .put(
            "metadata",
            MapBuilder::new()
                .put("name", Y::str(ctx.object(p)))
                .put("labels", ctx.labels(p))
                .build(),
        )
        .put("spec", spec.build())
        .build())
}

/// The tasks `p` depends on, through tasks, each after its own tasks.
fn task_closure<'a>(
    stack: &'a Stack,
    p: &ProcessSpec,
    out: &mut Vec<&'a ProcessSpec>,
    notes: &mut Vec<Note>,
) {
    for d in &p.depends_on {
        let Some(dp) = stack.process(d) else { continue };
        if dp.kind != Kind::Task || out.iter().any(|t| t.name == dp.name) {
            continue;
        }
        task_closure(stack, dp, out, notes);
        for dd in &dp.depends_on {
            if stack.process(dd).is_some_and(|x| x.kind == Kind::Service) {
                notes.push(Note::new(
                    &dp.name,
                    format!("depends_on {dd}: an init container cannot wait for a service"),
                ));
            }
        }
        out.push(dp);
    }
}

fn job(ctx: &Ctx<'_>, p: &ProcessSpec, notes: &mut Vec<Note>) -> Result<Y, Refusal> {
    let stack = ctx.stack();
    let c = container(ctx, p, notes)?;
    let mut init = Vec::new();
    let mut order: Vec<&ProcessSpec> = Vec::new();
    task_closure(stack, p, &mut order, notes);
    for t in &order {
        init.push(container(ctx, t, notes)?.build());
    }
    let mut pod = MapBuilder::new()
        .put(
            "restartPolicy",
            Y::str(if p.restart == RestartPolicy::OnFailure {
                "OnFailure"
            } else {
                "Never"
            }),
        )
        .put(
            "terminationGracePeriodSeconds",
            Y::int(secs_ceil(p.stop_timeout, 0)),
        );
    if !init.is_empty() {
        pod.push("initContainers", Y::Seq(init));
    }
    pod.push("containers", Y::Seq(vec![c.build()]));
    let backoff = if p.restart == RestartPolicy::OnFailure {
        p.max_restarts
    } else {
        0
    };
    let mut spec = MapBuilder::new().put("backoffLimit", Y::int(backoff));
    if let Some(t) = p.timeout {
        spec.push("activeDeadlineSeconds", Y::int(secs_ceil(t, 1)));
    }
    spec.push(
        "template",
        MapBuilder::new()
            .put(
                "metadata",
                MapBuilder::new().put("labels", ctx.labels(p)).build(),
            )
            .put("spec", pod.build())
            .build(),
    );
    Ok(MapBuilder::new()
        .put("apiVersion", Y::str("batch/v1"))
        .put("kind", Y::str("Job"))
        .put(
            "metadata",
            MapBuilder::new()
                .put("name", Y::str(ctx.object(p)))
                .put("labels", ctx.labels(p))
                .build(),
        )
        .put("spec", spec.build())
        .build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::tests_support::{load, options_in};
    use super::*;

    #[test]
    fn a_probe_that_reads_an_env_file_runs_in_the_container() {
        let (stack, texts) = load(
            r#"
[stack]
env_file = [".env"]

[service.tunnel]
command = "ngrok"
health = { http = "https://${DOMAIN:-x.example}/", interval = "30s" }
"#,
            &[(
                ".env",
                "DOMAIN=secret.example
",
            )],
        );
        let input = Input {
            stack: &stack,
            sha256: "abc".into(),
            env_texts: &texts,
        };
        let e = render(&input, &options_in(&stack, Engine::Kubernetes)).unwrap();
        let m = &e
            .files
            .iter()
            .find(|f| f.name != "kustomization.yaml")
            .unwrap()
            .contents;
        assert!(m.contains(
            "          livenessProbe:\n            exec:\n              command:\n                - \"/bin/sh\"\n                - \"-c\"\n                - \"curl -fsS -o /dev/null \\\"https://${DOMAIN:-x.example}/\\\"\"\n"
        ), "{m}");
        assert!(!m.contains("secret.example"));
        assert!(e
            .notes
            .iter()
            .any(|n| n.text.contains("reads DOMAIN from an env file")));
    }

    #[test]
    fn names() {
        assert_eq!(dns_name("demo-worker_Embeddings"), "demo-worker-embeddings");
        assert_eq!(dns_name("-.env"), "env");
        assert_eq!(dns_name("config/prod.env"), "config-prod-env");
    }

    #[test]
    fn a_small_stack_as_manifests() {
        let (stack, texts) = load(
            r#"
[stack]
name = "demo"
env_file = [".env", { path = ".env.local", optional = true }]

[env]
API_PORT = "${API_PORT:-18000}"

[task.migrate]
command = "alembic upgrade head"
timeout = "5m"

[task.report]
command = "python3 report.py"
restart = "on-failure"

[service.api]
command = ["uvicorn", "app:app"]
depends_on = ["migrate"]
ready = { http = "http://127.0.0.1:${API_PORT:-18000}/health", timeout = "20s" }
health = { tcp = "127.0.0.1:${API_PORT}", interval = "5s", failures = 2 }

[service.worker]
command = "python3 worker.py"
depends_on = ["api"]
replicas = 3
ready = { alive = "5s" }
stop_signal = "INT"
stop_timeout = "2m"
"#,
            &[(".env", "JWT=hunter2\n")],
        );
        let input = Input {
            stack: &stack,
            sha256: "abc".into(),
            env_texts: &texts,
        };
        let e = render(&input, &options_in(&stack, Engine::Kubernetes)).unwrap();
        assert_eq!(e.files[0].name, "demo.yaml");
        assert_eq!(e.files[1].name, "kustomization.yaml");
        let m = &e.files[0].contents;
        assert!(!m.contains("hunter2"));
        assert!(
            m.contains("kind: \"Job\"\nmetadata:\n  name: \"demo-report\""),
            "{m}"
        );
        assert!(!m.contains("name: \"demo-migrate\""), "{m}");
        let api = m
            .split("---\n")
            .find(|d| d.contains("name: \"demo-api\"\n"))
            .unwrap();
        assert!(api.contains(
            "      initContainers:\n        - name: \"migrate\"\n          image: \"app:1\"\n          command:\n            - \"/bin/sh\"\n            - \"-c\"\n            - \"alembic upgrade head\"\n"
        ), "{api}");
        assert!(api.contains(
            "          startupProbe:\n            httpGet:\n              path: \"/health\"\n              port: 18000\n              scheme: \"HTTP\"\n            periodSeconds: 1\n            timeoutSeconds: 10\n            failureThreshold: 20\n"
        ), "{api}");
        assert!(api.contains(
            "          livenessProbe:\n            tcpSocket:\n              port: 18000\n            periodSeconds: 5\n            timeoutSeconds: 5\n            failureThreshold: 2\n"
        ), "{api}");
        assert!(api.contains(
            "          envFrom:\n            - configMapRef:\n                name: \"demo-api-defaults\"\n            - secretRef:\n                name: \"demo-env\"\n            - secretRef:\n                name: \"demo-env-local\"\n                optional: true\n"
        ), "{api}");
        let worker = m
            .split("---\n")
            .find(|d| d.contains("name: \"demo-worker\"\n"))
            .unwrap();
        assert!(
            worker.contains("  replicas: 3\n  minReadySeconds: 5\n"),
            "{worker}"
        );
        assert!(
            worker.contains("      terminationGracePeriodSeconds: 120\n"),
            "{worker}"
        );
        assert!(
            worker.contains("# not mapped (worker): stop_signal = \"SIGINT\""),
            "{worker}"
        );
        let k = &e.files[1].contents;
        assert!(
            k.contains(
                "secretGenerator:\n  - name: \"demo-env\"\n    envs:\n      - \"../../.env\"\n"
            ),
            "{k}"
        );
        assert!(!k.contains("env-local"), "{k}");
        assert!(k.contains("LoadRestrictionsNone"), "{k}");
    }
}
