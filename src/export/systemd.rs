//! systemd: a `.service` per process, a template `NAME@.service` per pool
//! (`STACKCTL_INSTANCE=%i`), a `.target` that wants them all, a
//! `-health.timer`/`-health.service` pair per `health` check, and a
//! `.socket` per fd name of a service's `listen` (systemd holds the
//! sockets, as stackctl does, and passes them with `LISTEN_FDS`).
//!
//! Owns: the unit-file mapping (see docs/moving.md for the table). Gates
//! become `ExecStartPost=<stackctl> probe …`, which runs the same probe
//! code as the supervisor, so `After=` waits for exactly stackctl's gate.
//! Must not touch: files on disk; env values (env files are referenced).

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{CommandSpec, Kind, ListenAddr, ProbeKind, ProcessSpec, RestartPolicy, Stack};

use super::command::{translate, Exec};
use super::env::{plan, EnvPlan};
use super::quote::{systemd_env_assignment, systemd_exec_word, systemd_specifiers};
use super::{
    common_notes, duration, header, take_notes_of, Engine, Export, File, Input, Note, Options,
    Refusal,
};

/// One word of an `Exec*=` line.
enum W {
    /// Text to pass as is: escaped here.
    Lit(String),
    /// Already in systemd syntax (`%t`, `$MAINPID`).
    Raw(String),
}

fn line(words: &[W]) -> String {
    words
        .iter()
        .map(|w| match w {
            W::Lit(s) => systemd_exec_word(s),
            W::Raw(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn lits<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<W> {
    items.into_iter().map(|s| W::Lit(s.into())).collect()
}

/// Names of the units of one stack.
struct Names {
    prefix: String,
}

impl Names {
    fn unit(&self, p: &ProcessSpec) -> String {
        if p.is_pool() {
            format!("{}-{}@.service", self.prefix, p.name)
        } else {
            format!("{}-{}.service", self.prefix, p.name)
        }
    }

    /// The unit(s) that stand for `p` to a dependent or the target.
    fn instances(&self, p: &ProcessSpec) -> Vec<String> {
        match p.replicas {
            Some(n) => (1..=n)
                .map(|i| format!("{}-{}@{i}.service", self.prefix, p.name))
                .collect(),
            None => vec![format!("{}-{}.service", self.prefix, p.name)],
        }
    }

    /// The unit itself, from inside its own file (`%i` for a pool).
    fn this(&self, p: &ProcessSpec) -> String {
        if p.is_pool() {
            format!("{}-{}@%i.service", self.prefix, p.name)
        } else {
            format!("{}-{}.service", self.prefix, p.name)
        }
    }

    fn health(&self, p: &ProcessSpec, suffix: &str, instance: bool) -> String {
        match (p.is_pool(), instance) {
            (true, true) => format!("{}-{}-health@%i.{suffix}", self.prefix, p.name),
            (true, false) => format!("{}-{}-health@.{suffix}", self.prefix, p.name),
            (false, _) => format!("{}-{}-health.{suffix}", self.prefix, p.name),
        }
    }

    /// The failure count of `p`'s health check across timer runs: under the
    /// runtime directory (`%t`: /run, or $XDG_RUNTIME_DIR for --user).
    fn count_file(&self, p: &ProcessSpec) -> String {
        let who = if p.is_pool() {
            format!("{}@%i", p.name)
        } else {
            p.name.clone()
        };
        format!("%t/stackctl/{}/{who}.health-failures", self.prefix)
    }

    fn target(&self) -> String {
        format!("{}.target", self.prefix)
    }

    /// The socket unit of `p`'s sockets named `fd_name`: `NAME.socket`
    /// for the default name (the service's own, as systemd names a socket
    /// unit's fds after it), `NAME.FDNAME.socket` for another.
    fn socket(&self, p: &ProcessSpec, fd_name: &str) -> String {
        if fd_name == p.name {
            format!("{}-{}.socket", self.prefix, p.name)
        } else {
            format!("{}-{}.{}.socket", self.prefix, p.name, prefix(fd_name))
        }
    }

    /// Every socket unit of `p`, in the order of its `listen` entries.
    fn sockets(&self, p: &ProcessSpec) -> Vec<String> {
        listen_groups(p)
            .iter()
            .map(|(name, _)| self.socket(p, name))
            .collect()
    }
}

/// `p`'s `listen` entries grouped by fd name, in the order each name first
/// appears (systemd gives every fd of a socket unit one name).
fn listen_groups(p: &ProcessSpec) -> Vec<(&str, Vec<&ListenAddr>)> {
    let mut groups: Vec<(&str, Vec<&ListenAddr>)> = Vec::new();
    for l in &p.listen {
        match groups.iter_mut().find(|(n, _)| *n == l.name) {
            Some((_, addrs)) => addrs.push(&l.addr),
            None => groups.push((&l.name, vec![&l.addr])),
        }
    }
    groups
}

/// A stack name as a unit-name prefix: what systemd allows in a unit name.
fn prefix(name: &str) -> String {
    let p: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.:".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if p.is_empty() {
        "stack".into()
    } else {
        p
    }
}

pub(super) fn render(input: &Input<'_>, opts: &Options) -> Result<Export, Refusal> {
    let stack = input.stack;
    let names = Names {
        prefix: prefix(&stack.name),
    };
    let mut notes = common_notes(stack, Engine::Systemd);
    if names.prefix != stack.name {
        notes.push(Note::stack(format!(
            "the stack name is written `{}` in unit names (systemd allows letters, digits and `_-.:`)",
            names.prefix
        )));
    }
    notes.push(Note::stack(
        "the units do not inherit the environment of the shell that runs `stackctl start`: PATH and every other variable come from the service manager and the env files",
    ));
    if stack.processes.iter().any(|p| !p.depends_on.is_empty()) {
        notes.push(Note::stack(
            "Requires=: an explicit `systemctl stop` or `restart` of a unit also stops or restarts the units that depend on it (`stackctl restart api` restarts only api)",
        ));
    }
    if !opts.user {
        notes.push(Note::stack(
            "system units run as root unless you add User= (or export with --user for `systemctl --user`)",
        ));
    }
    let mut files = Vec::new();
    for p in &stack.processes {
        let env = plan(p, &stack.name, input.env_texts, Engine::Systemd)?;
        let mut own = env.notes.clone();
        own.extend(process_notes(p));
        own.extend(take_notes_of(&mut notes, &p.name));
        let unit = unit_file(input, opts, &names, p, &env, &own)?;
        files.push(File {
            name: names.unit(p),
            contents: unit,
        });
        for (fd_name, addrs) in listen_groups(p) {
            files.push(File {
                name: names.socket(p, fd_name),
                contents: socket_file(input, &names, p, fd_name, &addrs),
            });
        }
        if let Some(h) = &p.health {
            let (service, timer) = health_files(input, opts, &names, p, h, &env)?;
            files.push(File {
                name: names.health(p, "service", false),
                contents: service,
            });
            files.push(File {
                name: names.health(p, "timer", false),
                contents: timer,
            });
        }
        notes.extend(own);
    }
    let stack_notes: Vec<Note> = notes.iter().filter(|n| n.subject == "*").cloned().collect();
    files.push(File {
        name: names.target(),
        contents: target_file(input, opts, &names, &stack_notes),
    });
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Export { files, notes })
}

/// Notes about one process that only systemd has.
fn process_notes(p: &ProcessSpec) -> Vec<Note> {
    let mut out = Vec::new();
    if let Some(r) = &p.ready {
        if let ProbeKind::Alive(d) = &r.probe {
            out.push(Note::new(
                &p.name,
                format!(
                    "ready = {{ alive = \"{}\" }} becomes an ExecStartPost= that waits {} and checks the main process still runs",
                    duration(*d),
                    duration(*d)
                ),
            ));
        }
    }
    let polled_gate = p.ready.as_ref().is_some_and(|r| {
        matches!(
            r.probe,
            ProbeKind::Http(_) | ProbeKind::Tcp(_) | ProbeKind::Exec(_) | ProbeKind::Alive(_)
        )
    });
    if polled_gate && p.restart != RestartPolicy::Never {
        out.push(Note::new(
            &p.name,
            "a gate that fails fails the unit, and Restart= starts it again (up to StartLimitBurst=); stackctl marks it failed and does not retry",
        ));
    }
    if !p.listen.is_empty() {
        out.push(Note::new(
            &p.name,
            "listen: systemd holds the sockets (its .socket units), so connections wait in the backlog across restarts as under stackctl; but a restart stops the old process before it starts the new one (stackctl starts the new one and stops the old once the new is ready): connections wait out the new one's start-up; ListenStream= holds the address as it is now (a `${…}` in it expanded): export again when it changes (`export --check` says so)",
        ));
    }
    if p.restart != RestartPolicy::Never {
        out.push(Note::new(
            &p.name,
            format!(
                "max_restarts = {} in restart_window = {} becomes StartLimitBurst={} in StartLimitIntervalSec= (systemd counts every start, also a manual one)",
                p.max_restarts,
                duration(p.restart_window),
                p.max_restarts + 1
            ),
        ));
    }
    out
}

fn comments(out: &mut String, lines: &[String]) {
    for l in lines {
        if l.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {l}");
        }
    }
}

fn file_head(input: &Input<'_>, notes: &[Note]) -> String {
    let mut out = String::new();
    comments(&mut out, &header(input, Engine::Systemd));
    if !notes.is_empty() {
        out.push_str("#\n");
        let lines: Vec<String> = notes.iter().map(Note::comment).collect();
        comments(&mut out, &lines);
    }
    out
}

/// The program and arguments of `cmd` as an `Exec*=` line: an absolute
/// program (systemd requires one), through `/usr/bin/env` when stackctl
/// would have searched PATH, so the unit's PATH decides as stackctl's did.
fn exec_words(cmd: &CommandSpec, what: &str, cwd: &Path) -> Result<Vec<W>, Refusal> {
    let argv = match translate(cmd, what)? {
        Exec::Argv(v) => v,
        e @ Exec::Shell(_) => e.argv(),
    };
    let (prog, rest) = match argv.split_first() {
        Some(x) => x,
        None => {
            return Err(Refusal {
                message: format!("`{what}` is empty"),
                hint: "`stackctl check` shows where".into(),
            })
        }
    };
    let mut words = Vec::new();
    if prog.starts_with('/') {
        words.push(W::Lit(prog.clone()));
    } else if prog.contains('/') {
        words.push(W::Lit(
            crate::config::diag::normalize(&cwd.join(prog))
                .display()
                .to_string(),
        ));
    } else {
        words.push(W::Lit("/usr/bin/env".into()));
        words.push(W::Lit(prog.clone()));
    }
    words.extend(lits(rest.iter().cloned()));
    Ok(words)
}

fn env_lines(out: &mut String, stack: &Stack, p: &ProcessSpec, env: &EnvPlan) {
    let stack_var = systemd_env_assignment("STACKCTL_STACK", &stack.name);
    if p.is_pool() {
        let _ = writeln!(
            out,
            "Environment={stack_var} STACKCTL_PROCESS={}.%i STACKCTL_INSTANCE=%i",
            p.name
        );
    } else {
        let _ = writeln!(out, "Environment={stack_var} STACKCTL_PROCESS={}", p.name);
    }
    let mut values: Vec<(&String, &String)> =
        env.forced.iter().chain(env.fallback.iter()).collect();
    values.sort();
    for (k, v) in values {
        let _ = writeln!(out, "Environment={}", systemd_env_assignment(k, v));
    }
    for f in &env.files {
        let path = systemd_specifiers(&f.path.display().to_string());
        let dash = if f.optional { "-" } else { "" };
        let _ = writeln!(out, "EnvironmentFile={dash}{path}");
    }
}

fn probe_words(opts: &Options, kind: &ProbeKind) -> Option<Vec<W>> {
    let mut w = vec![
        W::Lit(opts.stackctl.display().to_string()),
        W::Lit("probe".into()),
    ];
    match kind {
        ProbeKind::Http(u) => w.extend(lits(["--http", u.as_str()])),
        ProbeKind::Tcp(a) => w.extend(lits(["--tcp", a.as_str()])),
        ProbeKind::Exec(CommandSpec::Shell(s)) => w.extend(lits(["--shell", s.as_str()])),
        ProbeKind::Exec(CommandSpec::Argv(_)) => {}
        ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => return None,
    }
    Some(w)
}

/// `-- ARGV…` for an argv `exec` probe (it goes last).
fn probe_tail(kind: &ProbeKind) -> Vec<W> {
    match kind {
        ProbeKind::Exec(CommandSpec::Argv(v)) => {
            let mut w = vec![W::Lit("--".into())];
            w.extend(lits(v.iter().cloned()));
            w
        }
        _ => Vec::new(),
    }
}

fn unit_file(
    input: &Input<'_>,
    opts: &Options,
    names: &Names,
    p: &ProcessSpec,
    env: &EnvPlan,
    notes: &[Note],
) -> Result<String, Refusal> {
    let stack = input.stack;
    let mut out = file_head(input, notes);
    let at = |k: &str| format!("{}.{}.{k}", p.kind, p.name);
    out.push_str("\n[Unit]\n");
    let _ = writeln!(
        out,
        "Description={}",
        systemd_specifiers(&format!("{} {} of stack {}", p.kind, p.name, stack.name))
    );
    let _ = writeln!(out, "PartOf={}", names.target());
    let mut deps: Vec<String> = Vec::new();
    for d in &p.depends_on {
        if let Some(dp) = stack.process(d) {
            deps.extend(names.instances(dp));
        }
    }
    let sockets = names.sockets(p);
    deps.extend(sockets.iter().cloned());
    if !deps.is_empty() {
        let _ = writeln!(out, "Requires={}", deps.join(" "));
        let _ = writeln!(out, "After={}", deps.join(" "));
    }
    if p.health.is_some() {
        let _ = writeln!(out, "Wants={}", names.health(p, "timer", true));
    }
    if p.restart != RestartPolicy::Never {
        let _ = writeln!(out, "StartLimitIntervalSec={}", duration(p.restart_window));
        let _ = writeln!(out, "StartLimitBurst={}", p.max_restarts + 1);
    }

    out.push_str("\n[Service]\n");
    let notify = matches!(p.ready.as_ref().map(|r| &r.probe), Some(ProbeKind::Notify));
    match (p.kind, notify) {
        (Kind::Task, _) => out.push_str("Type=oneshot\nRemainAfterExit=yes\n"),
        (Kind::Service, true) => out.push_str("Type=notify\nNotifyAccess=all\n"),
        (Kind::Service, false) => out.push_str("Type=exec\n"),
    }
    let _ = writeln!(
        out,
        "WorkingDirectory={}",
        systemd_specifiers(&p.cwd.display().to_string())
    );
    env_lines(&mut out, stack, p, env);
    if !sockets.is_empty() {
        let _ = writeln!(out, "Sockets={}", sockets.join(" "));
    }
    if p.health.is_some() {
        let words = vec![
            W::Lit(opts.stackctl.display().to_string()),
            W::Lit("probe".into()),
            W::Lit("--reset-count".into()),
            W::Raw(names.count_file(p)),
        ];
        let _ = writeln!(out, "ExecStartPre={}", line(&words));
    }
    if !p.require_env.is_empty() {
        let mut words = vec![
            W::Lit(opts.stackctl.display().to_string()),
            W::Lit("probe".into()),
        ];
        for v in &p.require_env {
            words.push(W::Lit("--require".into()));
            words.push(W::Lit(v.clone()));
        }
        let _ = writeln!(out, "ExecStartPre={}", line(&words));
    }
    for c in &p.pre_start {
        let _ = writeln!(
            out,
            "ExecStartPre={}",
            line(&exec_words(c, &at("pre_start"), &p.cwd)?)
        );
    }
    let _ = writeln!(
        out,
        "ExecStart={}",
        line(&exec_words(&p.command, &at("command"), &p.cwd)?)
    );
    match &p.ready {
        Some(r) => {
            if let Some(mut words) = probe_words(opts, &r.probe) {
                words.extend(lits([
                    "--timeout".to_string(),
                    duration(r.timeout),
                    "--interval".to_string(),
                    duration(r.interval),
                ]));
                words.extend(probe_tail(&r.probe));
                let _ = writeln!(out, "ExecStartPost={}", line(&words));
                // A little more than the gate's own timeout, so the probe says
                // why it gave up before systemd stops waiting.
                let _ = writeln!(
                    out,
                    "TimeoutStartSec={}",
                    duration(r.timeout + std::time::Duration::from_secs(5))
                );
            } else if let ProbeKind::Alive(d) = &r.probe {
                let mut words = vec![
                    W::Lit(opts.stackctl.display().to_string()),
                    W::Lit("probe".into()),
                ];
                words.extend(lits([
                    "--alive".to_string(),
                    duration(*d),
                    "--pid".to_string(),
                ]));
                words.push(W::Raw("$MAINPID".into()));
                let _ = writeln!(out, "ExecStartPost={}", line(&words));
                let _ = writeln!(
                    out,
                    "TimeoutStartSec={}",
                    duration(*d + std::time::Duration::from_secs(5))
                );
            } else if notify {
                let _ = writeln!(out, "TimeoutStartSec={}", duration(r.timeout));
            }
        }
        None if p.kind == Kind::Task => {
            let t = p.timeout.map_or_else(|| "infinity".to_string(), duration);
            let _ = writeln!(out, "TimeoutStartSec={t}");
        }
        None => {}
    }
    let restart = match p.restart {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "no",
    };
    let _ = writeln!(out, "Restart={restart}");
    if p.restart != RestartPolicy::Never {
        out.push_str("RestartSec=100ms\n");
    }
    out.push_str("KillMode=control-group\n");
    let _ = writeln!(out, "KillSignal={}", p.stop_signal.as_str());
    let _ = writeln!(out, "TimeoutStopSec={}", duration(p.stop_timeout));
    Ok(out)
}

fn health_files(
    input: &Input<'_>,
    opts: &Options,
    names: &Names,
    p: &ProcessSpec,
    h: &crate::config::HealthSpec,
    env: &EnvPlan,
) -> Result<(String, String), Refusal> {
    let stack = input.stack;
    let head = file_head(input, &[]);
    let Some(mut words) = probe_words(opts, &h.probe) else {
        return Err(Refusal {
            message: format!(
                "`{}.{}.health` is not an http, tcp or exec probe",
                p.kind, p.name
            ),
            hint: "`stackctl check` shows where".into(),
        });
    };
    words.extend(lits([
        "--timeout".to_string(),
        duration(h.timeout),
        "--failures".to_string(),
        h.failures.to_string(),
        "--count-file".to_string(),
    ]));
    words.push(W::Raw(names.count_file(p)));
    words.push(W::Lit("--restart".into()));
    words.push(W::Raw(names.this(p)));
    if opts.user {
        words.push(W::Lit("--user".into()));
    }
    words.extend(probe_tail(&h.probe));

    let mut service = head.clone();
    let _ = writeln!(
        service,
        "# every {}, the timer runs this check; after {} failures in a row it restarts {}",
        duration(h.interval),
        h.failures,
        names.this(p)
    );
    let _ = writeln!(
        service,
        "# (the count is kept in {} across runs; a pass or a restart resets it)",
        names.count_file(p)
    );
    service.push_str("\n[Unit]\n");
    let _ = writeln!(
        service,
        "Description={}",
        systemd_specifiers(&format!(
            "health check of {} {} of stack {}",
            p.kind, p.name, stack.name
        ))
    );
    service.push_str("\n[Service]\nType=oneshot\n");
    let _ = writeln!(
        service,
        "WorkingDirectory={}",
        systemd_specifiers(&p.cwd.display().to_string())
    );
    env_lines(&mut service, stack, p, env);
    let _ = writeln!(service, "ExecStart={}", line(&words));

    let mut timer = head;
    timer.push_str("\n[Unit]\n");
    let _ = writeln!(
        timer,
        "Description={}",
        systemd_specifiers(&format!(
            "health timer of {} {} of stack {}",
            p.kind, p.name, stack.name
        ))
    );
    // Without this, the timer's default Before=timers.target and the
    // service's After=basic.target make an ordering cycle with After= below.
    timer.push_str("DefaultDependencies=no\n");
    let _ = writeln!(timer, "BindsTo={}", names.this(p));
    let _ = writeln!(timer, "After={}", names.this(p));
    timer.push_str("\n[Timer]\n");
    let _ = writeln!(timer, "OnActiveSec={}", duration(h.interval));
    let _ = writeln!(timer, "OnUnitActiveSec={}", duration(h.interval));
    timer.push_str("AccuracySec=100ms\n");
    let _ = writeln!(timer, "Unit={}", names.health(p, "service", true));
    Ok((service, timer))
}

/// The socket unit of `p`'s sockets named `fd_name`: bound as stackctl
/// binds them (an IPv6 address IPv6 only, a unix socket its owner's only;
/// systemd sets `SO_REUSEADDR` itself), and handed to the service; a pool's to its
/// first member on traffic, and to every member it starts (`Sockets=`).
fn socket_file(
    input: &Input<'_>,
    names: &Names,
    p: &ProcessSpec,
    fd_name: &str,
    addrs: &[&ListenAddr],
) -> String {
    let mut out = file_head(input, &[]);
    out.push_str("\n[Unit]\n");
    let _ = writeln!(
        out,
        "Description={}",
        systemd_specifiers(&format!(
            "sockets {fd_name} of service {} of stack {}",
            p.name, input.stack.name
        ))
    );
    let _ = writeln!(out, "PartOf={}", names.target());
    out.push_str("\n[Socket]\n");
    for a in addrs {
        let at = match a {
            ListenAddr::Tcp(t) => t.to_string(),
            ListenAddr::Unix(path) => path.display().to_string(),
        };
        let _ = writeln!(out, "ListenStream={}", systemd_specifiers(&at));
    }
    if addrs
        .iter()
        .any(|a| matches!(a, ListenAddr::Tcp(t) if t.is_ipv6()))
    {
        out.push_str("BindIPv6Only=ipv6-only\n");
    }
    if addrs.iter().any(|a| matches!(a, ListenAddr::Unix(_))) {
        out.push_str("SocketMode=0600\n");
    }
    let _ = writeln!(out, "FileDescriptorName={fd_name}");
    let service = if p.is_pool() {
        format!("{}-{}@1.service", names.prefix, p.name)
    } else {
        names.unit(p)
    };
    let _ = writeln!(out, "Service={service}");
    out
}

fn target_file(input: &Input<'_>, opts: &Options, names: &Names, notes: &[Note]) -> String {
    let stack = input.stack;
    let mut out = file_head(input, notes);
    out.push_str("\n[Unit]\n");
    let _ = writeln!(
        out,
        "Description={}",
        systemd_specifiers(&format!("stack {} (exported by stackctl)", stack.name))
    );
    let wants: Vec<String> = stack
        .processes
        .iter()
        .flat_map(|p| names.sockets(p).into_iter().chain(names.instances(p)))
        .collect();
    if !wants.is_empty() {
        let _ = writeln!(out, "Wants={}", wants.join(" "));
    }
    out.push_str("\n[Install]\n");
    let _ = writeln!(
        out,
        "WantedBy={}",
        if opts.user {
            "default.target"
        } else {
            "multi-user.target"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::tests_support::{load, options};
    use super::*;

    #[test]
    fn a_small_stack_as_units() {
        let (stack, texts) = load(
            r#"
[stack]
name = "demo"
env_file = [{ path = ".env", optional = true }]

[env]
API_PORT = "${API_PORT:-18000}"

[task.migrate]
command = ["python3", "migrate.py"]
timeout = "30s"

[service.api]
command = ["python3", "api.py"]
depends_on = ["migrate"]
require_env = ["API_PORT"]
ready = { http = "http://127.0.0.1:${API_PORT:-18000}/health", timeout = "20s" }

[service.worker]
command = "python3 worker.py --instance ${STACKCTL_INSTANCE} 100%"
depends_on = ["api"]
replicas = 2
stop_signal = "INT"
stop_timeout = "30s"
health = { tcp = "127.0.0.1:9", interval = "5s", failures = 2 }
"#,
            &[],
        );
        let input = Input {
            stack: &stack,
            sha256: "abc".into(),
            env_texts: &texts,
        };
        let e = render(&input, &options(Engine::Systemd)).unwrap();
        let names: Vec<&str> = e.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-api.service",
                "demo-migrate.service",
                "demo-worker-health@.service",
                "demo-worker-health@.timer",
                "demo-worker@.service",
                "demo.target",
            ]
        );
        let file = |n: &str| {
            let f = e.files.iter().find(|f| f.name == n).unwrap();
            // Skip the header and the notes: the body is what is compared.
            let body = f.contents.split_once("\n\n").unwrap().1.to_string();
            (
                f.contents.clone(),
                body.replace(&stack.root.display().to_string(), "ROOT"),
            )
        };
        let (head, api) = file("demo-api.service");
        assert!(head.starts_with(&format!(
            "# generated by `stackctl export systemd` from {} (sha256 abc)\n",
            stack.file.display()
        )));
        assert_eq!(
            api,
            "[Unit]
Description=service api of stack demo
PartOf=demo.target
Requires=demo-migrate.service
After=demo-migrate.service
StartLimitIntervalSec=60s
StartLimitBurst=6

[Service]
Type=exec
WorkingDirectory=ROOT
Environment=\"STACKCTL_STACK=demo\" STACKCTL_PROCESS=api
Environment=\"API_PORT=18000\"
EnvironmentFile=-ROOT/.env
ExecStartPre=/bin/stackctl probe --require API_PORT
ExecStart=/usr/bin/env python3 api.py
ExecStartPost=/bin/stackctl probe --http \"http://127.0.0.1:$${API_PORT:-18000}/health\" --timeout 20s --interval 250ms
TimeoutStartSec=25s
Restart=on-failure
RestartSec=100ms
KillMode=control-group
KillSignal=SIGTERM
TimeoutStopSec=10s
"
        );
        let (_, migrate) = file("demo-migrate.service");
        assert!(
            migrate.contains("Type=oneshot\nRemainAfterExit=yes\n"),
            "{migrate}"
        );
        assert!(
            migrate.contains("TimeoutStartSec=30s\nRestart=no\nKillMode"),
            "{migrate}"
        );
        assert!(!migrate.contains("StartLimitBurst"), "{migrate}");
        let (_, worker) = file("demo-worker@.service");
        assert!(worker.contains("Requires=demo-api.service\n"), "{worker}");
        assert!(
            worker.contains("Wants=demo-worker-health@%i.timer\n"),
            "{worker}"
        );
        assert!(
            worker.contains("Environment=\"STACKCTL_STACK=demo\" STACKCTL_PROCESS=worker.%i STACKCTL_INSTANCE=%i\n"),
            "{worker}"
        );
        assert!(
            worker.contains("ExecStartPre=/bin/stackctl probe --reset-count %t/stackctl/demo/worker@%i.health-failures\n"),
            "{worker}"
        );
        assert!(
            worker.contains("ExecStart=/bin/sh -c \"python3 worker.py --instance $${STACKCTL_INSTANCE} 100%%\"\n"),
            "{worker}"
        );
        assert!(
            worker.contains("KillSignal=SIGINT\nTimeoutStopSec=30s\n"),
            "{worker}"
        );
        let (_, hs) = file("demo-worker-health@.service");
        assert!(hs.contains(
            "ExecStart=/bin/stackctl probe --tcp 127.0.0.1:9 --timeout 5s --failures 2 --count-file %t/stackctl/demo/worker@%i.health-failures --restart demo-worker@%i.service --user\n"
        ), "{hs}");
        let (_, ht) = file("demo-worker-health@.timer");
        assert_eq!(
            ht,
            "[Unit]
Description=health timer of service worker of stack demo
DefaultDependencies=no
BindsTo=demo-worker@%i.service
After=demo-worker@%i.service

[Timer]
OnActiveSec=5s
OnUnitActiveSec=5s
AccuracySec=100ms
Unit=demo-worker-health@%i.service
"
        );
        let (thead, target) = file("demo.target");
        assert!(target.contains(
            "Wants=demo-migrate.service demo-api.service demo-worker@1.service demo-worker@2.service\n"
        ), "{target}");
        assert!(target.contains("WantedBy=default.target\n"));
        assert!(
            thead.contains("# not mapped: the stack-owner lock"),
            "{thead}"
        );
        assert!(e
            .notes
            .iter()
            .any(|n| n.subject == "api" && n.text.starts_with("API_PORT: stackctl takes it")));
    }

    #[test]
    fn env_files_in_another_dialect_are_refused() {
        let (stack, texts) = load(
            "[stack]\nenv_file = [\".env\"]\n[service.a]\ncommand = \"true\"\n",
            &[(".env", "A=1\nexport B=2\n")],
        );
        let input = Input {
            stack: &stack,
            sha256: "x".into(),
            env_texts: &texts,
        };
        let err = render(&input, &options(Engine::Systemd)).unwrap_err();
        assert_eq!(
            err.message,
            "env file `.env` line 2 uses an `export ` prefix, which systemd's EnvironmentFile= reads differently from stackctl"
        );
        let compose = super::super::render(&input, &options(Engine::Compose));
        assert!(compose.is_ok(), "{compose:?}");
    }
}
