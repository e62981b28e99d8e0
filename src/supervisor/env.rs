//! The environments the supervisor gives its processes, and their
//! generations.
//!
//! Theory of operation. A process's environment is stackctl's own (the
//! *base*: the environment of the `start` that launched the supervisor,
//! or the last `--update-env`'s) under its layers from the stack file (env
//! files and tables, `config::refresh`). Each process keeps the
//! environment it was last given ([`ProcEnv`]) until an operation gives it
//! a new one: `restart` re-reads its env files, `start`/`restart
//! --update-env` also take the caller's environment as the new base
//! ([`Envs::refresh`]), `reload` takes what the stack file now says. A
//! process that merely crashes and restarts keeps its environment.
//!
//! A *generation* numbers what an environment was computed from: the base
//! and the text of every env file of the stack (a digest, never shown). It
//! starts at 1 and grows by one whenever a refresh finds those inputs
//! changed; every spawn records the generation it got (`status --json`:
//! `env_generation`), so an operator sees which processes still run an
//! older environment. The base and the generation are kept with the
//! anchor, so a supervisor it relaunches goes on with both (the anchor
//! launches it with the kept base as its environment).
//!
//! Owns: the base, the generation and each process's current environment.
//! Must not touch: processes, the wire; never logs or shows a value.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{EnvSources, ProcessSpec, Stack};
use crate::error::Error;

/// An environment as a map (values are secrets: never printed).
pub type Vars = BTreeMap<String, String>;

/// One process's current environment.
#[derive(Clone)]
pub struct ProcEnv {
    /// stackctl's own environment it was computed over.
    pub base: Arc<Vars>,
    /// What its layers add (the `ProcessSpec::env` of a fresh load).
    pub layered: Vars,
    /// Where each layered variable was set.
    pub sources: EnvSources,
    pub generation: u64,
}

impl ProcEnv {
    /// The whole environment: the base under the layers.
    pub fn merged(&self) -> Vars {
        let mut m = (*self.base).clone();
        m.extend(self.layered.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    }
}

/// What a refresh did, in names only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    pub generation: u64,
    /// A new generation began.
    pub new_generation: bool,
    /// With a new base: the variables it added, changed and removed.
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Refreshed {
    /// One line for the operator: the generation and the names that changed.
    pub fn describe(&self, with_base: bool) -> String {
        let mut parts = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        }
        let base = match (with_base, parts.is_empty()) {
            (false, _) => String::new(),
            (true, true) => "; the caller's environment is the one it had".to_string(),
            (true, false) => format!("; from the caller's environment: {}", parts.join("; ")),
        };
        if self.new_generation {
            format!("environment generation {}{base}", self.generation)
        } else {
            format!(
                "environment generation {} (nothing it is made of changed){base}",
                self.generation
            )
        }
    }
}

/// The kept form of the generation (with the anchor).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenerationRecord {
    pub generation: u64,
    pub digest: String,
}

struct Inner {
    base: Arc<Vars>,
    generation: u64,
    digest: String,
    procs: HashMap<String, Arc<ProcEnv>>,
}

/// Every process's environment.
pub struct Envs {
    inner: Mutex<Inner>,
}

impl Envs {
    /// Generation 1 over `base`: every process of `stack` with its layers
    /// as loaded.
    pub fn new(base: Vars, stack: &Stack) -> Envs {
        let digest = digest(&base, stack);
        let base = Arc::new(base);
        let procs = stack
            .processes
            .iter()
            .map(|p| (p.name.clone(), Arc::new(loaded(&base, p, 1))))
            .collect();
        Envs {
            inner: Mutex::new(Inner {
                base,
                generation: 1,
                digest,
                procs,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current base.
    pub fn base(&self) -> Arc<Vars> {
        self.lock().base.clone()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The kept form of the generation.
    pub fn record(&self) -> GenerationRecord {
        let i = self.lock();
        GenerationRecord {
            generation: i.generation,
            digest: i.digest.clone(),
        }
    }

    /// Goes on from a previous supervisor's generation: the same one when
    /// nothing it was made of changed since, else the next.
    pub fn resume(&self, kept: &GenerationRecord) {
        let mut i = self.lock();
        let g = if kept.digest == i.digest {
            kept.generation
        } else {
            kept.generation + 1
        };
        i.generation = g;
        // What was loaded now is of this generation.
        for p in i.procs.values_mut() {
            let mut q = (**p).clone();
            q.generation = g;
            *p = Arc::new(q);
        }
    }

    /// The environment `spec` runs with now: the one it was last given
    /// (every process has one from the start; one a reload added and could
    /// not be given one gets its layers as loaded, at this generation).
    pub fn of(&self, spec: &ProcessSpec) -> Arc<ProcEnv> {
        let mut i = self.lock();
        if let Some(p) = i.procs.get(&spec.name) {
            return p.clone();
        }
        let p = Arc::new(loaded(&i.base, spec, i.generation));
        i.procs.insert(spec.name.clone(), p.clone());
        p
    }

    /// Forgets what `name` was given: its next environment is its new
    /// definition's (a reload).
    pub fn forget(&self, name: &str) {
        self.lock().procs.remove(name);
    }

    /// Gives `names` of `stack` their environment afresh: env files read
    /// again, over `new_base` when given (which becomes the base). Nothing
    /// changes when one of them cannot be computed.
    ///
    /// # Errors
    /// The first process whose environment cannot be computed (2): a
    /// missing env file, a line that does not parse, a `${VAR}` the new
    /// environment does not set.
    pub fn refresh(
        &self,
        stack: &Stack,
        names: &[String],
        new_base: Option<Vars>,
    ) -> Result<Refreshed, Error> {
        let old_base = self.base();
        let base = new_base.clone().map_or_else(|| old_base.clone(), Arc::new);
        let mut fresh = Vec::new();
        for name in names {
            let Some(spec) = stack.process(name) else {
                continue;
            };
            let lookup = |k: &str| base.get(k).cloned();
            let (layered, sources) = crate::config::refresh::layered_env(
                &spec.env_layers,
                &stack.name,
                &stack.file,
                &lookup,
                &spec.env_sources,
            )
            .map_err(|e| Error::Usage {
                message: format!("cannot give `{name}` its environment: {}", e.message),
                hint: Some(format!("{}; nothing was started", e.hint)),
            })?;
            fresh.push((name.clone(), layered, sources));
        }
        let d = digest(&base, stack);
        let mut i = self.lock();
        let new_generation = d != i.digest;
        if new_generation {
            i.generation += 1;
            i.digest = d;
        }
        let mut out = Refreshed {
            generation: i.generation,
            new_generation,
            ..Refreshed::default()
        };
        if new_base.is_some() {
            for (k, v) in base.iter() {
                match old_base.get(k) {
                    None => out.added.push(k.clone()),
                    Some(o) if o != v => out.changed.push(k.clone()),
                    Some(_) => {}
                }
            }
            out.removed = old_base
                .keys()
                .filter(|k| !base.contains_key(*k))
                .cloned()
                .collect();
            i.base = base.clone();
        }
        for (name, layered, sources) in fresh {
            let p = Arc::new(ProcEnv {
                base: base.clone(),
                layered,
                sources,
                generation: i.generation,
            });
            i.procs.insert(name, p);
        }
        Ok(out)
    }
}

/// `spec`'s environment as loaded, over `base`.
fn loaded(base: &Arc<Vars>, spec: &ProcessSpec, generation: u64) -> ProcEnv {
    ProcEnv {
        base: base.clone(),
        layered: spec.env.0.clone(),
        sources: spec.env_sources.clone(),
        generation,
    }
}

/// A digest of what environments are made of: the base and the text of
/// every env file of the stack (a missing one counts as such).
fn digest(base: &Vars, stack: &Stack) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (k, v) in base {
        ctx.update(&(k.len() as u64).to_le_bytes());
        ctx.update(k.as_bytes());
        ctx.update(&(v.len() as u64).to_le_bytes());
        ctx.update(v.as_bytes());
    }
    let layers: Vec<&[crate::config::EnvLayer]> = stack
        .processes
        .iter()
        .map(|p| p.env_layers.as_slice())
        .collect();
    for path in crate::config::refresh::env_files(&layers) {
        ctx.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(&path) {
            Ok(text) => {
                ctx.update(&[1]);
                ctx.update(&(text.len() as u64).to_le_bytes());
                ctx.update(&text);
            }
            Err(_) => ctx.update(&[0]),
        }
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the variables `spec` requires are set and non-empty in `env`;
/// `None` when they are, else the message and hint (names, never values).
pub fn missing_required(
    stack: &Stack,
    closure: &[String],
    env_of: &dyn Fn(&ProcessSpec) -> Arc<ProcEnv>,
) -> Option<(String, String)> {
    let mut found = crate::config::env::MissingEnv::default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let show = |f: &std::path::Path| crate::config::diag::shown_path(f, &cwd);
    for spec in stack.processes.iter().filter(|p| closure.contains(&p.name)) {
        let pe = env_of(spec);
        for var in &spec.require_env {
            // A name the base never carries (`STACKCTL_*`) is looked up in
            // the supervisor's own environment, as it always was.
            let own = || {
                (!super::inherited(var))
                    .then(|| std::env::var(var).ok())
                    .flatten()
            };
            let set = pe
                .layered
                .get(var)
                .cloned()
                .or_else(|| pe.base.get(var).cloned())
                .or_else(own);
            if set.is_some_and(|v| !v.is_empty()) {
                continue;
            }
            // The hint reads the layers of the environment it was given.
            let mut shown = spec.clone();
            shown.env = crate::config::Env(pe.layered.clone());
            shown.env_sources = pe.sources.clone();
            let os = |k: &str| pe.base.get(k).cloned();
            let hint = crate::config::env::missing_env_hint(&shown, var, &os, &show);
            found.add(var, &spec.name, hint);
        }
    }
    found.problem()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_generation_grows_only_when_what_it_is_made_of_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stack.toml");
        std::fs::write(
            &file,
            "[service.api]\ncommand = \"true\"\nenv_file = [\"api.env\"]\n[service.web]\ncommand = \"true\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("api.env"), "PORT=1\n").unwrap();
        let stack = crate::config::load_with(&file, false, &|_| None).unwrap();
        let envs = Envs::new(vars(&[("A", "1"), ("B", "2")]), &stack);
        let api = stack.process("api").unwrap();
        assert_eq!(envs.of(api).generation, 1);
        assert_eq!(envs.of(api).merged()["PORT"], "1");
        // Nothing changed: the same generation.
        let r = envs.refresh(&stack, &["api".into()], None).unwrap();
        assert_eq!((r.generation, r.new_generation), (1, false));
        // An edited env file: the next generation, for what was refreshed.
        std::fs::write(dir.path().join("api.env"), "PORT=2\n").unwrap();
        let r = envs.refresh(&stack, &["api".into()], None).unwrap();
        assert_eq!((r.generation, r.new_generation), (2, true));
        assert_eq!(envs.of(api).merged()["PORT"], "2");
        assert_eq!(envs.of(stack.process("web").unwrap()).generation, 1);
        // A new base, named by what changed.
        let r = envs
            .refresh(
                &stack,
                &["web".into()],
                Some(vars(&[("A", "1"), ("B", "3"), ("C", "4")])),
            )
            .unwrap();
        assert_eq!(r.generation, 3);
        assert_eq!(
            (r.added.clone(), r.changed.clone(), r.removed.clone()),
            (vec!["C".to_string()], vec!["B".to_string()], vec![])
        );
        assert_eq!(
            r.describe(true),
            "environment generation 3; from the caller's environment: added C; changed B"
        );
        assert_eq!(envs.of(stack.process("web").unwrap()).merged()["B"], "3");
        // api keeps what it was given until it is refreshed.
        assert_eq!(envs.of(api).merged()["B"], "2");
        // A refresh that cannot be done changes nothing.
        std::fs::remove_file(dir.path().join("api.env")).unwrap();
        let e = envs
            .refresh(&stack, &["api".into()], Some(vars(&[])))
            .unwrap_err();
        assert!(
            e.to_string().contains("env file `api.env` does not exist"),
            "{e}"
        );
        assert_eq!(envs.generation(), 3);
        assert_eq!(envs.base()["C"], "4");
        // A relaunched supervisor goes on from the kept generation.
        let kept = envs.record();
        std::fs::write(dir.path().join("api.env"), "PORT=2\n").unwrap();
        let next = Envs::new((*envs.base()).clone(), &stack);
        next.resume(&kept);
        assert_eq!(next.generation(), 3);
        std::fs::write(dir.path().join("api.env"), "PORT=5\n").unwrap();
        let other = Envs::new((*envs.base()).clone(), &stack);
        other.resume(&kept);
        assert_eq!(other.generation(), 4);
    }
}
