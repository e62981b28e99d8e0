//! `stackctl probe` (hidden): stackctl's own gates and health checks, run
//! by the units `stackctl export systemd` writes, so that systemd waits on
//! exactly the probe code the supervisor uses (`crate::probe`).
//!
//! Owns: the modes a unit calls — a readiness gate (`ExecStartPost=`), one
//! health check counted across timer runs in a count file (restarting the
//! unit through `systemctl` after N failures in a row), resetting that
//! count, `require_env`, and the `alive` gate. Templates (`${VAR:-d}`) in
//! the probe are expanded here from this process's environment, which is
//! the unit's. Must not touch: the stack file (the unit carries all it
//! needs), env values in messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::config::duration::parse_duration;
use crate::config::{CommandSpec, ProbeKind, ReadySpec};
use crate::error::{exit, Error, Result};
use crate::probe::{self, ProbeCtx};

/// Runs one of stackctl's probes (for units written by `stackctl export systemd`).
///
/// A gate waits until the probe passes or `--timeout` ends; with
/// `--failures` it runs one health check and counts failures in a row in
/// `--count-file`, restarting `--restart UNIT` at the Nth.
///
/// Examples:
///
/// $ stackctl probe --http http://127.0.0.1:8000/health --timeout 20s
///
/// $ stackctl probe --tcp 127.0.0.1:5432 --timeout 5s --failures 3 --count-file /run/x --restart db.service
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// GET this URL; 2xx or 3xx passes.
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
    /// Connect to HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Run this command with /bin/sh -c; exit 0 passes.
    #[arg(long, value_name = "COMMAND")]
    pub shell: Option<String>,
    /// Run this program with these arguments (after `--`); exit 0 passes.
    #[arg(last = true, value_name = "ARGV")]
    pub argv: Vec<String>,
    /// Gate: give up after this long (default 60s). Health: one check's limit (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Gate: time between attempts (default 250ms).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Health: this many failures in a row restart `--restart`.
    #[arg(long, requires = "count_file")]
    pub failures: Option<u32>,
    /// Health: where the failures in a row are counted across runs.
    #[arg(long, value_name = "FILE")]
    pub count_file: Option<PathBuf>,
    /// Health: the unit to restart (`systemctl restart --no-block UNIT`).
    #[arg(long, value_name = "UNIT", requires = "failures")]
    pub restart: Option<String>,
    /// Health: restart through `systemctl --user`.
    #[arg(long)]
    pub user: bool,
    /// Reset a health check's count (run when its unit starts).
    #[arg(long, value_name = "FILE")]
    pub reset_count: Option<PathBuf>,
    /// Fail unless this variable is set and not empty (repeatable).
    #[arg(long, value_name = "VAR")]
    pub require: Vec<String>,
    /// The `alive` gate: wait this long, then pass if `--pid` still runs.
    #[arg(long, value_parser = parse_duration, requires = "pid")]
    pub alive: Option<Duration>,
    /// The process the `alive` gate watches (the unit's $MAINPID).
    #[arg(long)]
    pub pid: Option<i32>,
}

/// Runs `probe`.
///
/// # Errors
/// A probe that did not pass (exit 1), or a wrong combination of flags (2).
pub fn run(args: ProbeArgs) -> Result<u8> {
    if let Some(file) = &args.reset_count {
        return reset(file);
    }
    if !args.require.is_empty() {
        return require(&args.require);
    }
    if let Some(d) = args.alive {
        return alive(d, args.pid.unwrap_or(0));
    }
    let kind = kind(&args)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let kind = probe::expand(&kind, &env).map_err(|e| Error::failed(e.reason))?;
    let ctx = ProbeCtx {
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        env,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("cannot start the probe's runtime: {e}")))?;
    match (args.failures, &args.count_file) {
        (Some(n), Some(file)) => {
            let timeout = args.timeout.unwrap_or(Duration::from_secs(10));
            let result = runtime.block_on(probe::check(&kind, &ctx, timeout));
            health(
                &kind,
                result,
                n.max(1),
                file,
                args.restart.as_deref(),
                args.user,
            )
        }
        _ => {
            let spec = ReadySpec {
                probe: kind.clone(),
                timeout: args.timeout.unwrap_or(Duration::from_secs(60)),
                interval: args.interval.unwrap_or(Duration::from_millis(250)),
            };
            match runtime.block_on(probe::wait_ready(&spec, &ctx)) {
                Ok(()) => Ok(exit::SUCCESS),
                Err(e) => Err(Error::failed(format!(
                    "gate `{kind}` did not pass: {}",
                    e.reason
                ))),
            }
        }
    }
}

fn kind(args: &ProbeArgs) -> Result<ProbeKind> {
    let mut kinds = Vec::new();
    if let Some(u) = &args.http {
        kinds.push(ProbeKind::Http(u.clone()));
    }
    if let Some(a) = &args.tcp {
        kinds.push(ProbeKind::Tcp(a.clone()));
    }
    if let Some(s) = &args.shell {
        kinds.push(ProbeKind::Exec(CommandSpec::Shell(s.clone())));
    }
    if !args.argv.is_empty() {
        kinds.push(ProbeKind::Exec(CommandSpec::Argv(args.argv.clone())));
    }
    match kinds.len() {
        1 => Ok(kinds.remove(0)),
        0 => Err(Error::Usage {
            message: "no probe given".into(),
            hint: Some(
                "give one of --http URL, --tcp HOST:PORT, --shell COMMAND or -- PROGRAM ARGS"
                    .into(),
            ),
        }),
        _ => Err(Error::Usage {
            message: "more than one probe given".into(),
            hint: Some(
                "a probe checks one thing: keep exactly one of --http, --tcp, --shell, -- ARGV"
                    .into(),
            ),
        }),
    }
}

fn reset(file: &Path) -> Result<u8> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(exit::SUCCESS),
        Err(e) => Err(Error::failed(format!(
            "cannot reset the health count {}: {e}",
            file.display()
        ))),
    }
}

fn require(vars: &[String]) -> Result<u8> {
    let missing: Vec<&String> = vars
        .iter()
        .filter(|v| std::env::var_os(v).is_none_or(|x| x.is_empty()))
        .collect();
    if missing.is_empty() {
        return Ok(exit::SUCCESS);
    }
    let names: Vec<String> = missing.iter().map(|v| format!("`{v}`")).collect();
    Err(Error::Failed {
        message: format!(
            "required {} unset or empty: {}",
            if names.len() == 1 {
                "variable is"
            } else {
                "variables are"
            },
            names.join(", ")
        ),
        hint: Some(
            "set them in the unit's EnvironmentFile= (require_env in the stack file)".into(),
        ),
        detail: None,
    })
}

fn alive(d: Duration, pid: i32) -> Result<u8> {
    std::thread::sleep(d);
    if pid > 0 && crate::spawn::identity::is_alive(pid) {
        Ok(exit::SUCCESS)
    } else {
        Err(Error::failed(format!(
            "the main process (pid {pid}) did not stay up for {}",
            humantime::format_duration(d)
        )))
    }
}

/// Failures in a row, as the count file holds them (missing or unreadable: 0).
fn read_count(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_count(file: &Path, n: u32) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::failed(format!(
                "cannot create {} for the health count: {e}",
                dir.display()
            ))
        })?;
    }
    crate::state::write_atomic(file, format!("{n}\n").as_bytes(), 0o600).map_err(|e| {
        Error::failed(format!(
            "cannot write the health count {}: {e}",
            file.display()
        ))
    })
}

fn health(
    kind: &ProbeKind,
    result: std::result::Result<(), probe::ProbeFailure>,
    failures: u32,
    file: &Path,
    restart: Option<&str>,
    user: bool,
) -> Result<u8> {
    let reason = match result {
        Ok(()) => {
            write_count(file, 0)?;
            return Ok(exit::SUCCESS);
        }
        Err(e) => e.reason,
    };
    let n = read_count(file).saturating_add(1);
    if n < failures {
        write_count(file, n)?;
        return Err(Error::failed(format!(
            "health check `{kind}` failed ({n} of {failures} in a row): {reason}"
        )));
    }
    write_count(file, 0)?;
    let Some(unit) = restart else {
        return Err(Error::failed(format!(
            "health check `{kind}` failed {n} times in a row: {reason}"
        )));
    };
    let mut cmd = std::process::Command::new("systemctl");
    if user {
        cmd.arg("--user");
    }
    cmd.args(["restart", "--no-block", unit]);
    let restarted = match cmd.status() {
        Ok(s) if s.success() => format!("restarting {unit}"),
        Ok(s) => format!("`systemctl restart {unit}` failed ({s})"),
        Err(e) => format!("cannot run systemctl to restart {unit}: {e}"),
    };
    let _ = writeln!(
        std::io::stderr(),
        "health check failed {n} times in a row; {restarted}"
    );
    Err(Error::failed(format!(
        "health check `{kind}` failed {n} times in a row: {reason}; {restarted}"
    )))
}
