//! `stackctl export`: the validated [`Stack`] rendered as files for the
//! engine a team moves to — systemd units, a compose file, Kubernetes
//! manifests — so that order, gates, health, pools, restart policies, env
//! files and stop signals are not lost on the way.
//!
//! Owns: the mapping from stackctl's model to each engine (`systemd`,
//! `compose`, `kubernetes`), the environment plan shared by all three
//! (`env`: env files by reference, never a value), commands and templates
//! as an engine runs them (`command`), the quoting of each syntax (`quote`,
//! `yaml`), the header every file carries, and the notes: whatever does not
//! map is said, as a comment in the file and a [`Note`] for the summary.
//! Pure: texts in (the stack, its env files' texts, the stack file's hash),
//! files out. Must not touch: the file system, processes, the network
//! (`cli::export` reads and writes; `cli::probe` runs the gates).

mod command;
mod compose;
pub mod env;
mod kubernetes;
mod quote;
mod systemd;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::config::{ProcessSpec, Stack};

pub use env::EnvTexts;

/// The engine to export to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Engine {
    Systemd,
    Compose,
    Kubernetes,
}

impl Engine {
    /// As written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Systemd => "systemd",
            Engine::Compose => "compose",
            Engine::Kubernetes => "kubernetes",
        }
    }

    /// The engine in a sentence ("systemd", "compose", "Kubernetes").
    fn noun(self) -> &'static str {
        match self {
            Engine::Systemd => "systemd",
            Engine::Compose => "compose",
            Engine::Kubernetes => "Kubernetes",
        }
    }

    fn env_file_reader(self) -> &'static str {
        match self {
            Engine::Systemd => "systemd's EnvironmentFile=",
            Engine::Compose => "compose's env_file",
            Engine::Kubernetes => "kustomize's secretGenerator (envs)",
        }
    }

    fn env_file_advice(self) -> &'static str {
        match self {
            Engine::Systemd => {
                "write plain KEY=value lines: no `export`, no `${…}`, no comment after a value, no escapes, one line per value"
            }
            Engine::Compose => "write the value itself instead of a `${…}` template",
            Engine::Kubernetes => {
                "write plain KEY=value lines: no quotes, no `export`, no `${…}`, no comment after a value, no spaces around `=`"
            }
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that does not map, or maps only approximately: written as a
/// comment in the generated file and as a line of the summary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// The process it is about, or `*` for the whole stack.
    pub subject: String,
    pub text: String,
}

impl Note {
    fn new(subject: &str, text: impl Into<String>) -> Note {
        Note {
            subject: subject.to_string(),
            text: text.into(),
        }
    }

    fn stack(text: impl Into<String>) -> Note {
        Note::new("*", text)
    }

    /// The note as comment lines (without the `#`).
    fn comment(&self) -> String {
        if self.subject == "*" {
            format!("not mapped: {}", self.text)
        } else {
            format!("not mapped ({}): {}", self.subject, self.text)
        }
    }
}

/// Why the stack cannot be exported faithfully: what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub hint: String,
}

/// What the export reads.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub stack: &'a Stack,
    /// The stack file's sha256, in hex.
    pub sha256: String,
    /// The text of every env file the stack names (see [`EnvTexts`]).
    pub env_texts: &'a EnvTexts,
}

/// How to export.
#[derive(Debug, Clone)]
pub struct Options {
    pub engine: Engine,
    /// systemd: user units (`systemctl --user`) rather than system units.
    pub user: bool,
    /// Absolute path of the stackctl binary the units call for gates and health.
    pub stackctl: PathBuf,
    /// Absolute folder the files are written to (compose and Kubernetes
    /// refer to env files relative to it).
    pub out_dir: PathBuf,
    /// `--image IMAGE`: every process without its own.
    pub image: Option<String>,
    /// `--image NAME=IMAGE`.
    pub images: BTreeMap<String, String>,
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the output folder.
    pub name: String,
    pub contents: String,
}

/// Everything an export writes, and what it could not map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub files: Vec<File>,
    pub notes: Vec<Note>,
}

/// Renders the stack for `opts.engine`.
///
/// # Errors
/// Whatever cannot be exported faithfully, with a hint.
pub fn render(input: &Input<'_>, opts: &Options) -> Result<Export, Refusal> {
    let mut export = match opts.engine {
        Engine::Systemd => systemd::render(input, opts)?,
        Engine::Compose => compose::render(input, opts)?,
        Engine::Kubernetes => kubernetes::render(input, opts)?,
    };
    export.notes.sort();
    export.notes.dedup();
    Ok(export)
}

/// The first lines of every generated file (as comment text, without `#`).
fn header(input: &Input<'_>, engine: Engine) -> Vec<String> {
    vec![
        format!(
            "generated by `stackctl export {engine}` from {} (sha256 {})",
            input.stack.file.display(),
            input.sha256
        ),
        format!("do not edit: change the stack file and export again; `stackctl export {engine} --check` says when this is stale"),
    ]
}

/// Whether `text` is a file that `stackctl export ENGINE` wrote from this
/// stack file (any hash).
pub fn is_generated_from(text: &str, stack_file: &Path, engine: Engine) -> bool {
    let want = format!(
        "generated by `stackctl export {engine}` from {} (sha256 ",
        stack_file.display()
    );
    text.lines().take(3).any(|l| l.contains(&want))
}

/// Every env file the stack names (whose texts [`Input::env_texts`] holds).
pub fn env_file_paths(stack: &Stack) -> std::collections::BTreeSet<PathBuf> {
    stack
        .processes
        .iter()
        .flat_map(|p| &p.env_layers)
        .filter_map(|s| match s {
            crate::config::EnvLayer::File { path, .. } => Some(path.clone()),
            crate::config::EnvLayer::Table { .. } => None,
        })
        .collect()
}

/// The image of `p`: `--image NAME=`, `[export] images`, `--image`, `[export] image`.
fn image_of(p: &ProcessSpec, stack: &Stack, opts: &Options) -> Option<String> {
    opts.images
        .get(&p.name)
        .or_else(|| stack.export.images.get(&p.name))
        .or(opts.image.as_ref())
        .or(stack.export.image.as_ref())
        .cloned()
}

/// Refuses when some process has no image (compose and Kubernetes).
fn images(stack: &Stack, opts: &Options) -> Result<BTreeMap<String, String>, Refusal> {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for p in &stack.processes {
        match image_of(p, stack, opts) {
            Some(i) => {
                out.insert(p.name.clone(), i);
            }
            None => missing.push(p.name.clone()),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let first = &missing[0];
    Err(Refusal {
        message: format!(
            "{} runs host processes; {} needs an image for {}",
            "stackctl",
            opts.engine.noun(),
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        hint: format!(
            "give --image {first}=IMAGE for each, --image IMAGE for all, or `image`/`images` in the stack file's [export]"
        ),
    })
}

/// `to` relative to the folder `from` (both absolute), with `..` as needed.
fn relative(from: &Path, to: &Path) -> String {
    let a: Vec<Component<'_>> = from.components().collect();
    let b: Vec<Component<'_>> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..a.len() {
        parts.push("..".into());
    }
    for c in &b[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Seconds, rounded up, at least `min`.
fn secs_ceil(d: std::time::Duration, min: u64) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(min)
}

/// A duration as systemd and compose read it (`250ms`, `20s`, `5min`).
fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

/// The processes that depend on `name`.
fn dependents<'a>(stack: &'a Stack, name: &str) -> Vec<&'a ProcessSpec> {
    stack
        .processes
        .iter()
        .filter(|p| p.depends_on.iter().any(|d| d == name))
        .collect()
}

/// Moves the notes about `name` out of `notes` (into that process's own).
fn take_notes_of(notes: &mut Vec<Note>, name: &str) -> Vec<Note> {
    let (mine, rest): (Vec<Note>, Vec<Note>) = std::mem::take(notes)
        .into_iter()
        .partition(|n| n.subject == name);
    *notes = rest;
    mine
}

/// Notes every engine shares.
fn common_notes(stack: &Stack, engine: Engine) -> Vec<Note> {
    let mut notes = Vec::new();
    if stack.keeper.is_some() {
        notes.push(Note::stack(
            "[keeper] (the deploy keeper) is not exported: run `stackctl keep` beside the engine, or use the engine's own deploy tooling",
        ));
    }
    notes.push(Note::stack(format!(
        "the stack-owner lock (`stackctl lock`) has no {} equivalent: nothing here holds a deploy back while a task holds the lock",
        engine.noun()
    )));
    notes.push(Note::stack(format!(
        "restart back-off: stackctl waits 100ms doubling to 30s; {}",
        match engine {
            Engine::Systemd => "the units restart after RestartSec=100ms each time",
            Engine::Compose => "the engine's own back-off applies",
            Engine::Kubernetes => "Kubernetes' CrashLoopBackOff applies",
        }
    )));
    notes.push(Note::stack(format!(
        "logs: stackctl writes and rotates <state_dir>/<name>.log; under {} output goes to {}",
        engine.noun(),
        match engine {
            Engine::Systemd => "the journal (`journalctl -u UNIT`)",
            Engine::Compose | Engine::Kubernetes => "the container runtime's logs",
        }
    )));
    for p in &stack.processes {
        if let Some(m) = p.max_replicas {
            notes.push(Note::new(
                &p.name,
                format!(
                    "max_replicas = {m} bounds `stackctl scale`; {}",
                    match engine {
                        Engine::Systemd => "start more instances with `systemctl start UNIT@N.service`, unbounded",
                        Engine::Compose => "`docker compose up --scale` is unbounded",
                        Engine::Kubernetes =>
                            "no HorizontalPodAutoscaler is written (stackctl scales by hand, with no metric); its maxReplicas is the place for this bound",
                    }
                ),
            ));
        }
        if let Some(h) = &p.on_failure {
            notes.push(Note::new(
                &p.name,
                format!(
                    "on_failure = `{}` is not exported: {}",
                    h.command,
                    match engine {
                        Engine::Systemd => "give the unit OnFailure= naming a unit that runs it",
                        Engine::Compose => "compose runs no command when a container fails; watch `docker compose events`",
                        Engine::Kubernetes => "Kubernetes runs no command when a pod fails; alert on its restarts instead",
                    }
                ),
            ));
        }
        if let Some(m) = p.memory_max {
            notes.push(Note::new(
                &p.name,
                format!(
                    "memory_max = {m} bytes (a graceful restart when the group stays above it) is not exported: {}",
                    match engine {
                        Engine::Systemd => "MemoryMax= is the nearest (the kernel kills at the limit)",
                        Engine::Compose => "mem_limit is the nearest (the kernel kills at the limit)",
                        Engine::Kubernetes => "resources.limits.memory is the nearest (the kernel kills at the limit)",
                    }
                ),
            ));
        }
        if let Some(a) = &p.autoscale {
            notes.push(Note::new(
                &p.name,
                format!(
                    "autoscale (sized from a queue depth, {}..{} members, every {}) is not exported: {}",
                    a.min,
                    a.max,
                    duration(a.interval),
                    match engine {
                        Engine::Systemd => "the units start the pool's `replicas`; start or stop instances (`systemctl start UNIT@N.service`) from your own check of the queue",
                        Engine::Compose => "the service runs the pool's `replicas`; compose has no autoscaler",
                        Engine::Kubernetes => "the Deployment starts with the pool's `replicas`; a KEDA ScaledObject (or an HPA on an external metric) reading the same depth is the equivalent",
                    }
                ),
            ));
        }
        if !p.listen.is_empty() && engine != Engine::Systemd {
            let addrs: Vec<String> = p.listen.iter().map(|l| l.addr.to_string()).collect();
            notes.push(Note::new(
                &p.name,
                format!(
                    "listen = [{}] (sockets stackctl holds across restarts, passed as fd 3…) is not exported: in a container the process binds its own port, so give it a command that does (not `--fd 3`); {}",
                    addrs.join(", "),
                    match engine {
                        Engine::Kubernetes => "a rolling update of the Deployment takes the place of the overlapping restart",
                        _ => "connections are refused while its container restarts",
                    }
                ),
            ));
        }
        if let Some(sched) = &p.schedule {
            notes.push(Note::new(
                &p.name,
                format!(
                    "runs on a schedule under stackctl ({sched}); here it runs once, when the stack starts: {}",
                    match engine {
                        Engine::Systemd => "give it a .timer unit (OnCalendar=, or OnUnitActiveSec= for `every`) instead",
                        Engine::Compose => "run it from the host's cron (`docker compose run`) instead",
                        Engine::Kubernetes => "make it a CronJob instead",
                    }
                ),
            ));
        }
        if let Some(r) = &p.ready {
            if let crate::config::ProbeKind::Log(re) = &r.probe {
                notes.push(Note::new(
                    &p.name,
                    format!(
                        "ready = {{ log = {:?} }}: {} has no gate on an output line; dependents start once it has started",
                        re.as_str(),
                        engine.noun()
                    ),
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
pub(crate) mod tests_support {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A stack from `toml` in a temp folder holding `files`, and the texts
    /// of its env files (read before the folder goes).
    pub(crate) fn load(toml: &str, files: &[(&str, &str)]) -> (Stack, EnvTexts) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stack.toml"), toml).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let stack = crate::config::load_with(&dir.path().join("stack.toml"), false, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let texts = env_file_paths(&stack)
            .into_iter()
            .map(|p| {
                let t = std::fs::read_to_string(&p).ok();
                (p, t)
            })
            .collect();
        (stack, texts)
    }

    pub(crate) fn options(engine: Engine) -> Options {
        Options {
            engine,
            user: true,
            stackctl: PathBuf::from("/bin/stackctl"),
            out_dir: PathBuf::from("/out"),
            image: Some("app:1".into()),
            images: BTreeMap::new(),
        }
    }

    /// `options`, with the output folder inside the stack's folder.
    pub(crate) fn options_in(stack: &Stack, engine: Engine) -> Options {
        Options {
            out_dir: stack.root.join("export").join(engine.name()),
            ..options(engine)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b/out"), Path::new("/a/b/.env")),
            "../.env"
        );
        assert_eq!(
            relative(Path::new("/a"), Path::new("/a/x/y.env")),
            "x/y.env"
        );
        assert_eq!(relative(Path::new("/a/b"), Path::new("/c/d")), "../../c/d");
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), ".");
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(300)), "300s");
        assert_eq!(secs_ceil(Duration::from_millis(250), 1), 1);
        assert_eq!(secs_ceil(Duration::from_millis(1500), 1), 2);
        assert_eq!(secs_ceil(Duration::ZERO, 1), 1);
    }

    #[test]
    fn hooks_memory_limits_and_schedules_are_noted_for_every_engine() {
        let (stack, _) = tests_support::load(
            r#"
[task.backup]
command = "true"
every = "15m"
on_failure = "page.sh"
memory_max = "1GiB"
"#,
            &[],
        );
        for engine in [Engine::Systemd, Engine::Compose, Engine::Kubernetes] {
            let notes: Vec<String> = common_notes(&stack, engine)
                .into_iter()
                .filter(|n| n.subject == "backup")
                .map(|n| n.text)
                .collect();
            assert_eq!(notes.len(), 3, "{engine}: {notes:?}");
            assert!(
                notes[0].starts_with("on_failure = `page.sh` is not exported"),
                "{notes:?}"
            );
            assert!(
                notes[1].starts_with("memory_max = 1073741824 bytes"),
                "{notes:?}"
            );
            assert!(
                notes[2].starts_with(
                    "runs on a schedule under stackctl (every 15m); here it runs once"
                ),
                "{notes:?}"
            );
        }
    }

    #[test]
    fn generated_files_are_recognized() {
        let t = "# generated by `stackctl export systemd` from /s/stack.toml (sha256 ab)\n[Unit]\n";
        let s = Path::new("/s/stack.toml");
        assert!(is_generated_from(t, s, Engine::Systemd));
        assert!(!is_generated_from(t, s, Engine::Compose));
        assert!(!is_generated_from(
            t,
            Path::new("/t/stack.toml"),
            Engine::Systemd
        ));
        assert!(!is_generated_from("[Unit]\n", s, Engine::Systemd));
    }
}
