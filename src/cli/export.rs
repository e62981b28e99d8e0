//! `stackctl export systemd|compose|kubernetes`: the edge of `export`.
//!
//! Owns: the I/O around the pure renderer — loading the stack file (through
//! `config`), hashing it, reading its env files' texts (handed to `export`,
//! which keeps no value in any output), writing the files (atomically),
//! removing files an earlier export of the same stack wrote and this one no
//! longer does, `--check` (compare, write nothing), and the summary on
//! stderr. Must not touch: how anything maps (that is `crate::export`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::Global;
use crate::config::{self, diag};
use crate::error::{exit, Error, Result};
use crate::export::{self, Engine, EnvTexts, Export, Input, Options};

/// Writes systemd units, a compose file or Kubernetes manifests from the stack file.
///
/// For a team that outgrows one host: the order, gates, health checks,
/// pools, restart policies, env files and stop signals of the stack become
/// the engine's own. Env files are referenced (EnvironmentFile=, env_file,
/// a kustomize secretGenerator), never copied. What does not map is said:
/// a comment in the generated file and a line on stderr. Every file names
/// the stack file and its sha256; `--check` exits 1 when the files on disk
/// differ from what export would write. An env file in a syntax the engine
/// reads differently, or a template the engine cannot expand, is refused
/// (exit 2), naming the file and line.
///
/// Examples:
///
/// $ stackctl export systemd --user --out ~/.config/systemd/user
///
/// $ stackctl export compose --image ghcr.io/acme/app:1.4
///
/// $ stackctl export kubernetes --image app:1.4 --image web=web:1.4
///
/// $ stackctl export systemd --check   # in CI: are the units current?
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The engine to export to.
    pub engine: EngineArg,
    /// systemd: user units (`systemctl --user`) rather than system units.
    #[arg(long)]
    pub user: bool,
    /// Where to write the files (default: export/ENGINE in the stack file's folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write nothing; exit 1 when the files on disk differ from what would be written, naming them.
    #[arg(long)]
    pub check: bool,
    /// compose, kubernetes: NAME=IMAGE for one process, IMAGE for every process without its own (repeatable; overrides [export]).
    #[arg(long, value_name = "[NAME=]IMAGE")]
    pub image: Vec<String>,
}

/// `stackctl export ENGINE`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    /// A unit per process, a template unit per pool, a target for the stack.
    Systemd,
    /// A compose file (docker compose, podman-compose).
    Compose,
    /// A Deployment per service, Jobs, and a kustomization for the env files.
    #[value(alias = "k8s")]
    Kubernetes,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Systemd => Engine::Systemd,
            EngineArg::Compose => Engine::Compose,
            EngineArg::Kubernetes => Engine::Kubernetes,
        }
    }
}

/// Runs `export`.
///
/// # Errors
/// An invalid stack file or arguments, or a stack the engine cannot hold
/// faithfully (2); files that cannot be read or written, or `--check`
/// finding stale files (1).
pub fn run(args: ExportArgs, g: &Global) -> Result<u8> {
    let engine = Engine::from(args.engine);
    if args.user && engine != Engine::Systemd {
        return Err(Error::usage("`--user` is for `export systemd`"));
    }
    if !args.image.is_empty() && engine == Engine::Systemd {
        return Err(Error::Usage {
            message: "`--image` is for `export compose` and `export kubernetes`".into(),
            hint: Some("systemd runs the stack's commands on the host, as stackctl does".into()),
        });
    }
    let path = config::discover(g.file.as_deref())?;
    let stack = config::load(&path)?;
    let bytes = std::fs::read(&stack.file)
        .map_err(|e| Error::failed(format!("failed to read {}: {e}", stack.file.display())))?;
    let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    let env_texts = read_env_files(&stack)?;
    let (image, images) = parse_images(&args.image, &stack)?;
    let stackctl = crate::spawn::stackctl_binary()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Error::failed(format!("cannot find the stackctl binary: {e}")))?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let out_dir = match &args.out {
        Some(o) => diag::normalize(&cwd.join(o)),
        None => stack.root.join("export").join(engine.name()),
    };
    let opts = Options {
        engine,
        user: args.user,
        stackctl,
        out_dir: out_dir.clone(),
        image,
        images,
    };
    let input = Input {
        stack: &stack,
        sha256,
        env_texts: &env_texts,
    };
    let export = export::render(&input, &opts).map_err(|r| Error::Usage {
        message: format!("cannot export to {}: {}", engine.name(), r.message),
        hint: Some(r.hint),
    })?;
    let shown = diag::shown_path(&out_dir, &cwd);
    let stale = stale_generated(&out_dir, &stack.file, engine, &export);
    if args.check {
        return check(&export, &out_dir, &shown, &stale, engine, g);
    }
    write(&export, &out_dir, &stale)?;
    if !g.quiet {
        summary(&export, &shown, &stale, engine, &opts, &stack.name);
    }
    Ok(exit::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of each env file (`None`: missing; validation already refused
/// a missing file that is not optional).
fn read_env_files(stack: &config::Stack) -> Result<EnvTexts> {
    let mut out = BTreeMap::new();
    for p in export::env_file_paths(stack) {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::failed(format!(
                    "failed to read env file {}: {e}",
                    p.display()
                )))
            }
        };
        out.insert(p, text);
    }
    Ok(out)
}

/// `--image IMAGE` and `--image NAME=IMAGE`.
fn parse_images(
    given: &[String],
    stack: &config::Stack,
) -> Result<(Option<String>, BTreeMap<String, String>)> {
    let mut all = None;
    let mut by_name = BTreeMap::new();
    for g in given {
        let (name, image) = match g.split_once('=') {
            Some((n, i)) => (Some(n), i),
            None => (None, g.as_str()),
        };
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(Error::Usage {
                message: format!("`--image {g}` has no image"),
                hint: Some("write --image NAME=IMAGE or --image IMAGE, e.g. --image api=ghcr.io/acme/api:1.4".into()),
            });
        }
        match name {
            Some(n) if stack.process(n).is_none() => {
                let hint = diag::suggest(n, stack.processes.iter().map(|p| p.name.as_str()))
                    .unwrap_or_else(|| "NAME is a task or service of the stack".into());
                return Err(Error::Usage {
                    message: format!("`--image {g}`: the stack has no process `{n}`"),
                    hint: Some(hint),
                });
            }
            Some(n) => {
                by_name.insert(n.to_string(), image.to_string());
            }
            None => all = Some(image.to_string()),
        }
    }
    Ok((all, by_name))
}

/// Files in `dir` that an export of this stack file to this engine wrote
/// and this one does not write any more (a process was removed or renamed).
fn stale_generated(dir: &Path, stack_file: &Path, engine: Engine, export: &Export) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !export.files.iter().any(|f| &f.name == name))
        .filter(|name| {
            std::fs::read_to_string(dir.join(name))
                .is_ok_and(|t| export::is_generated_from(&t, stack_file, engine))
        })
        .collect();
    out.sort();
    out
}

fn check(
    export: &Export,
    dir: &Path,
    shown: &str,
    stale: &[String],
    engine: Engine,
    g: &Global,
) -> Result<u8> {
    let mut problems = Vec::new();
    for f in &export.files {
        match std::fs::read_to_string(dir.join(&f.name)) {
            Ok(t) if t == f.contents => {}
            Ok(_) => problems.push(format!("  {shown}/{}: differs", f.name)),
            Err(_) => problems.push(format!("  {shown}/{}: missing", f.name)),
        }
    }
    for s in stale {
        problems.push(format!(
            "  {shown}/{s}: no longer exported (would be removed)"
        ));
    }
    if problems.is_empty() {
        if !g.quiet {
            let _ = writeln!(
                std::io::stderr(),
                "{shown}: up to date ({} files)",
                export.files.len()
            );
        }
        return Ok(exit::SUCCESS);
    }
    Err(Error::Failed {
        message: format!(
            "{} of the files in {shown} differ from what `stackctl export {engine}` would write",
            problems.len()
        ),
        hint: Some(format!(
            "run `stackctl export {engine}` (with the same options) to rewrite them"
        )),
        detail: Some(problems.join("\n")),
    })
}

fn write(export: &Export, dir: &Path, stale: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::failed(format!("failed to create {}: {e}", dir.display())))?;
    for f in &export.files {
        let path = dir.join(&f.name);
        crate::state::write_atomic(&path, f.contents.as_bytes(), 0o644)
            .map_err(|e| Error::failed(format!("failed to write {}: {e}", path.display())))?;
    }
    for s in stale {
        let path = dir.join(s);
        std::fs::remove_file(&path)
            .map_err(|e| Error::failed(format!("failed to remove {}: {e}", path.display())))?;
    }
    Ok(())
}

fn summary(
    export: &Export,
    shown: &str,
    stale: &[String],
    engine: Engine,
    opts: &Options,
    stack: &str,
) {
    let mut e = std::io::stderr().lock();
    let names: Vec<&str> = export.files.iter().map(|f| f.name.as_str()).collect();
    let _ = writeln!(
        e,
        "wrote {} files to {shown}: {}",
        names.len(),
        names.join(", ")
    );
    for s in stale {
        let _ = writeln!(e, "removed {shown}/{s} (no longer exported)");
    }
    if !export.notes.is_empty() {
        let _ = writeln!(e, "not mapped (each is also a comment in the files):");
        // The same note for several processes is one line naming them all.
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for n in &export.notes {
            let who = if n.subject == "*" {
                "stack"
            } else {
                n.subject.as_str()
            };
            match grouped.iter_mut().find(|(t, _)| *t == n.text) {
                Some((_, subjects)) => subjects.push(who),
                None => grouped.push((&n.text, vec![who])),
            }
        }
        for (text, subjects) in grouped {
            let _ = writeln!(e, "  {}: {text}", subjects.join(", "));
        }
    }
    let target = export
        .files
        .iter()
        .find(|f| f.name.ends_with(".target"))
        .map_or_else(|| format!("{stack}.target"), |f| f.name.clone());
    let next = match engine {
        Engine::Systemd if opts.user => format!(
            "link or copy the units into ~/.config/systemd/user (or export with --out there), then `systemctl --user daemon-reload && systemctl --user start {target}`"
        ),
        Engine::Systemd => format!(
            "copy the units into /etc/systemd/system, then `systemctl daemon-reload && systemctl start {target}`"
        ),
        Engine::Compose => format!("docker compose -f {shown}/compose.yaml up -d"),
        Engine::Kubernetes => format!(
            "kubectl kustomize --load-restrictor LoadRestrictionsNone {shown} | kubectl apply -f -"
        ),
    };
    let _ = writeln!(e, "next: {next}");
}
