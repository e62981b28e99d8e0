//! A process's environment computed again from its layers — the env files
//! re-read, the `[env]` and `env` tables expanded again — over a given
//! environment of stackctl's own, exactly as `validate` merged it when the
//! stack file was loaded (stack env files < `[env]` < its env files < its
//! `env`). Used when `restart` takes fresh env files or `--update-env` a
//! new environment, without reading the stack file again.
//!
//! Owns: that computation and its errors (the file and line, never a
//! value). Must not touch: the stack file, processes.

use std::collections::BTreeMap;
use std::path::Path;

use super::env::{expand, parse_dotenv};
use super::model::{EnvLayer, EnvSource, EnvSources};

/// Why an environment could not be computed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshError {
    pub message: String,
    pub hint: String,
}

/// The merged variables of `layers` and where each was set, looked up
/// over `os` (stackctl's environment) as at load; `STACKCTL_STACK` is
/// `stack`. `old` holds the sources of the table entries (their lines in
/// the stack file, which the layers do not keep).
///
/// # Errors
/// A missing (not optional) or unreadable env file, a line that does not
/// parse, a `${VAR}` that no longer expands.
pub fn layered_env(
    layers: &[EnvLayer],
    stack: &str,
    stack_file: &Path,
    os: &dyn Fn(&str) -> Option<String>,
    old: &EnvSources,
) -> Result<(BTreeMap<String, String>, EnvSources), RefreshError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut sources = EnvSources::new();
    for layer in layers {
        match layer {
            EnvLayer::File {
                path,
                written,
                optional,
            } => {
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && *optional => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(RefreshError {
                            message: format!("env file `{written}` does not exist"),
                            hint: format!(
                                "create {} again, or mark it {{ path = \"{written}\", optional = true }} and `stackctl reload`",
                                path.display()
                            ),
                        })
                    }
                    Err(e) => {
                        return Err(RefreshError {
                            message: format!("failed to read env file `{written}`: {e}"),
                            hint: "check its owner and permissions".into(),
                        })
                    }
                };
                let entries = parse_dotenv(&text).map_err(|e| RefreshError {
                    message: format!("env file `{written}` line {}: {}", e.line, e.message),
                    hint: "env files hold KEY=VALUE lines, `#` comments and blank lines (the line is not shown: it may hold a secret)".into(),
                })?;
                for d in entries {
                    let value = if d.literal {
                        d.value
                    } else {
                        let lookup = lookup_in(&vars, stack, os);
                        expand(&d.value, &lookup).map_err(|e| RefreshError {
                            message: format!("env file `{written}` line {}: {e}", d.line),
                            hint: "set it in the file, or give a default: `${NAME:-value}`".into(),
                        })?
                    };
                    sources.insert(
                        d.key.clone(),
                        EnvSource {
                            file: path.clone(),
                            line: d.line,
                        },
                    );
                    vars.insert(d.key, value);
                }
            }
            EnvLayer::Table { at, entries } => {
                for (key, template) in entries {
                    let value = {
                        let lookup = lookup_in(&vars, stack, os);
                        expand(template, &lookup).map_err(|e| RefreshError {
                            message: format!("in `{at}.{key}`: {e}"),
                            hint: "set it in the environment given, or give a default: `${NAME:-value}`"
                                .into(),
                        })?
                    };
                    let source = old
                        .get(key)
                        .filter(|s| s.file == stack_file)
                        .cloned()
                        .unwrap_or_else(|| EnvSource {
                            file: stack_file.to_path_buf(),
                            line: 0,
                        });
                    sources.insert(key.clone(), source);
                    vars.insert(key.clone(), value);
                }
            }
        }
    }
    Ok((vars, sources))
}

/// A lookup over the layers so far, then `os`; `STACKCTL_STACK` is known.
fn lookup_in<'a>(
    layer: &'a BTreeMap<String, String>,
    stack: &'a str,
    os: &'a dyn Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |k: &str| {
        if k == "STACKCTL_STACK" {
            return Some(stack.to_string());
        }
        layer.get(k).cloned().or_else(|| os(k))
    }
}

/// Every env file a stack's processes read, each once, in order.
pub fn env_files(layers: &[&[EnvLayer]]) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = Vec::new();
    for l in layers.iter().flat_map(|l| l.iter()) {
        if let EnvLayer::File { path, .. } = l {
            if !out.contains(path) {
                out.push(path.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn layers_give_what_the_load_gave_and_see_edited_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stack.toml");
        std::fs::write(
            &file,
            "[stack]\nenv_file = [\".env\", { path = \".env.local\", optional = true }]\n[env]\nGREETING = \"hi ${NAME}\"\nLEVEL = \"${LEVEL:-info}\"\n[service.api]\ncommand = \"true\"\nenv_file = [\"api.env\"]\nenv = { URL = \"http://${HOST}:${PORT}\", WHO = \"${STACKCTL_STACK}\" }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".env"), "NAME=ada\nPORT=1\n").unwrap();
        std::fs::write(dir.path().join("api.env"), "PORT=8000\nRAW='${NOT}'\n").unwrap();
        let os = |k: &str| (k == "HOST").then(|| "127.0.0.1".to_string());
        let stack = crate::config::load_with(&file, false, &os).unwrap();
        let api = stack.process("api").unwrap();
        let (vars, sources) = layered_env(
            &api.env_layers,
            &stack.name,
            &stack.file,
            &os,
            &api.env_sources,
        )
        .unwrap();
        assert_eq!(vars, api.env.0);
        assert_eq!(sources, api.env_sources);
        // An edited file and a new environment are seen.
        std::fs::write(dir.path().join("api.env"), "PORT=9000\n").unwrap();
        std::fs::write(dir.path().join(".env.local"), "LEVEL=debug\n").unwrap();
        let os2 = |k: &str| (k == "HOST").then(|| "10.0.0.1".to_string());
        let (vars, _) = layered_env(
            &api.env_layers,
            &stack.name,
            &stack.file,
            &os2,
            &api.env_sources,
        )
        .unwrap();
        assert_eq!(vars["URL"], "http://10.0.0.1:9000");
        assert_eq!(vars["LEVEL"], "debug");
        assert!(!vars.contains_key("RAW"));
        // A file that went missing, and a template that no longer expands.
        std::fs::remove_file(dir.path().join("api.env")).unwrap();
        let e = layered_env(
            &api.env_layers,
            &stack.name,
            &stack.file,
            &os2,
            &api.env_sources,
        )
        .unwrap_err();
        assert_eq!(e.message, "env file `api.env` does not exist");
        std::fs::write(dir.path().join("api.env"), "PORT=1\n").unwrap();
        let e = layered_env(
            &api.env_layers,
            &stack.name,
            &stack.file,
            &|_| None,
            &api.env_sources,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "in `service.api.env.URL`: `${HOST}` is not set and has no default"
        );
    }
}
