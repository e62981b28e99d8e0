//! `stackctl start`, `restart`, `reload`, and the hidden `supervise`
//! and `anchor`.
//!
//! Owns: their arguments and how each becomes a request (or runs the
//! daemon, or the anchor). Must not touch: what the supervisor does with
//! a request, the wire format.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::session::{
    connect, ensure_supervisor, load_stack, ping, print_warnings, request_surviving, Launch, Target,
};
use super::Global;
use crate::control::protocol::{CallerEnv, Request};
use crate::error::{exit, Error, Result};

/// Starts the stack (or NAMEs with their dependencies) and returns when ready.
///
/// Starts the supervisor for this stack if none runs, then brings the named
/// processes up in dependency order: tasks run to completion, services pass
/// their readiness gates. Already-running processes are left alone. Exits 0
/// when all are ready, 1 when something failed (naming it and showing the
/// last lines of its log), 2 for an invalid stack file, an unknown name, or
/// while an export holds the stack-owner lock.
///
/// On a terminal, each process under way has a line redrawn in place:
/// what it waits for (`waiting for migrate`, `http://127.0.0.1:8000/health
/// → 503`, `log /listening/ not seen yet`) and for how long, against its
/// timeout; a finished one keeps its `ok`/`FAIL` line. A pipe, CI or `-q`
/// get one line per event. The last line names the total and the critical
/// chain that decided it (`stack demo is up in 2.4s (critical chain:
/// migrate 0.4s → api 1.1s → web 0.6s)`); `stackctl analyze` shows the
/// whole start.
///
/// Under systemd (`Type=notify`), `--foreground` says READY=1 once the
/// start is over, keeps a one-line STATUS=, and says STOPPING=1 when the
/// stack is being stopped (see docs/systemd.md).
///
/// A running supervisor keeps the stack file and the environment it was
/// launched with: after editing stack.toml, run `stackctl reload`; after
/// editing an env file, `stackctl restart` what reads it. Variables given
/// to a later `start` reach it only with `--update-env`. A task with
/// `schedule` or `every` is not run: its schedule is armed, and `status`
/// shows its next run. With a supervisor running, a stack.toml that no
/// longer validates does not stop a start through it (a warning shows
/// the file's diagnostics); a start that needs a new supervisor refuses.
///
/// Examples:
///
/// $ stackctl start
///
/// $ stackctl start api                   # api and what it depends on
///
/// $ stackctl start --scale worker=4       # everything, with 4 workers
///
/// $ stackctl start --foreground           # supervise in this terminal
///
/// $ stackctl start --tmux                 # ... in tmux session stackctl-<stack>
///
/// $ JWT_SECRET=new stackctl start --update-env api   # with this environment
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Processes or pools to start (default: everything).
    pub names: Vec<String>,
    /// Start pool NAME with N instances (repeatable).
    #[arg(long = "scale", value_name = "NAME=N")]
    pub scale: Vec<String>,
    /// Run the supervisor in this terminal, streaming every process's output.
    #[arg(long, conflicts_with = "tmux")]
    pub foreground: bool,
    /// Run the supervisor in a detached tmux session `stackctl-<stack>`.
    #[arg(long)]
    pub tmux: bool,
    /// Start even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
    /// Give what this starts (NAMEs and their dependencies, from their next
    /// spawn) this command's environment instead of the supervisor's; the
    /// names of the variables that changed are shown, never their values.
    #[arg(long)]
    pub update_env: bool,
}

/// Stops then starts NAMEs (default: the whole stack, tasks re-run).
///
/// With no NAME every process is stopped (reverse dependency order) and the
/// whole stack started again, tasks included. A pool named whole restarts
/// one member at a time, each ready before the next, so it never drops to
/// zero. Launches the supervisor if none runs. The env files of what is
/// restarted are read again; the stack file is not: use `stackctl reload`
/// for that. A scheduled task named runs now (and stays scheduled). A
/// running supervisor is reached even when stack.toml no longer validates
/// (a warning shows the file's diagnostics); with none, a valid file is
/// needed.
///
/// Examples:
///
/// $ stackctl restart api
///
/// $ stackctl restart worker   # rolling, member by member
///
/// $ stackctl restart          # everything; tasks run again
///
/// $ stackctl restart --update-env api   # with this shell's environment
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Processes or pools (default: everything).
    pub names: Vec<String>,
    /// Restart even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
    /// Give what this restarts this command's environment instead of the
    /// supervisor's (kept for later restarts, and by a relaunched
    /// supervisor); the names of the variables that changed are shown,
    /// never their values.
    #[arg(long)]
    pub update_env: bool,
}

/// Re-reads the stack file and applies only the difference.
///
/// First says, per process, what changed (the keys of its definition, and
/// the names of the variables whose value changed in `[env]`, its env
/// files or its `env` — never a value) and what it does about it: start
/// what is new, stop what was removed, restart what changed (a service
/// with `listen` that serves is replaced: the new process is ready before
/// the old one stops; a pool rolls member by member, each ready before the
/// next), arm a scheduled task again, resize a pool whose `replicas`
/// changed, take `max_replicas`, `autoscale` and `on_failure` without a
/// restart; what changed but does not run gets its new definition at its
/// next start. Untouched processes keep their pids. A broken file is
/// rejected with the `check` diagnostics (exit 2) and nothing changes.
/// Needs a running supervisor (exit 1 otherwise). `kill -HUP` of the
/// supervisor does the same (the plan goes to stackctl.log).
///
/// Examples:
///
/// $ stackctl reload --dry-run        # what would change, changing nothing
///
/// $ stackctl reload
///
/// $ stackctl reload --dry-run --json # the plan as one JSON document
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Reload even while the stack-owner lock is held by an export.
    #[arg(long)]
    pub force: bool,
    /// Print the plan and change nothing (no lock needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as one JSON document (after the reload, or instead
    /// of it with --dry-run) instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs the supervisor for a stack file.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The stack file (absolute).
    #[arg(long)]
    pub stack: PathBuf,
    /// Stream every process's output to this terminal, prefixed by name.
    #[arg(long)]
    pub foreground: bool,
    /// The stack's state folder (given by the anchor that launches it).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Runs the stack's anchor (see `anchor`).
#[derive(Debug, Args)]
pub struct AnchorArgs {
    /// The stack's state folder (absolute).
    #[arg(long, required_unless_present = "resume")]
    pub state_dir: Option<PathBuf>,
    /// The stack file (absolute), for the supervisors it launches.
    #[arg(long, required_unless_present = "resume")]
    pub stack: Option<PathBuf>,
    /// The stackctl binary to launch supervisors with.
    #[arg(long, required_unless_present = "resume")]
    pub exe: Option<PathBuf>,
    /// Go on as a re-executed anchor, from the state it left in this file.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Launch no supervisor now (the one that launched this connects).
    #[arg(long)]
    pub no_launch: bool,
    /// Print every process's output to stdout (`--foreground`).
    #[arg(long)]
    pub echo: bool,
    /// Colour the echoed output.
    #[arg(long)]
    pub color: bool,
}

/// Parses `--scale NAME=N` flags.
fn parse_scale(flags: &[String]) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for f in flags {
        let Some((name, n)) = f.split_once('=') else {
            return Err(Error::Usage {
                message: format!("--scale {f}: expected NAME=N"),
                hint: Some("e.g. --scale worker=4".into()),
            });
        };
        let n: u32 = n.trim().parse().map_err(|_| Error::Usage {
            message: format!("--scale {f}: `{n}` is not a number of members"),
            hint: None,
        })?;
        out.insert(name.trim().to_string(), n);
    }
    Ok(out)
}

/// Runs `start`.
///
/// # Errors
/// Invalid stack file (2), lock held (2), a process failed (1).
pub fn run_start(args: StartArgs, g: &Global) -> Result<u8> {
    let target = Target::find(g)?;
    if target.invalid.is_some() && !args.foreground && !args.tmux {
        // A running supervisor keeps the file it loaded: it starts what
        // it knows; only a new supervisor needs the file on disk.
        if let Some(client) = target.running("starting through the running supervisor")? {
            crate::lock::guard_mutation(&target.stack, args.force, "start")?;
            let scale = parse_scale(&args.scale)?;
            return start_through(client, &target.stack, args, scale, g);
        }
    }
    let (path, stack) = target.valid()?;
    print_warnings(&stack);
    crate::lock::guard_mutation(&stack, args.force, "start")?;
    let scale = parse_scale(&args.scale)?;
    if args.foreground {
        if connect(&stack)?.is_some() {
            return Err(Error::Usage {
                message: format!("a supervisor is already running for stack {}", stack.name),
                hint: Some("stop it first, or use `stackctl start` without --foreground".into()),
            });
        }
        return crate::daemon::run(
            &path,
            crate::daemon::Options {
                foreground: true,
                initial: Some((args.names, scale)),
                state_dir: None,
                color: g.color,
            },
        );
    }
    let running = connect(&stack)?.is_some();
    if running && args.tmux {
        return Err(Error::Usage {
            message: format!("a supervisor is already running for stack {}", stack.name),
            hint: Some(
                "stop it first (`stackctl stop`), or use `stackctl start` without --tmux".into(),
            ),
        });
    }
    if !running {
        refuse_missing_env(&stack, &args.names)?;
    }
    let how = if args.tmux {
        Launch::Tmux
    } else {
        Launch::Detached
    };
    let client = ensure_supervisor(&path, &stack, how, g)?;
    start_through(client, &stack, args, scale, g)
}

/// Asks the supervisor behind `client` for the start, and ends with the
/// line that says the stack is up.
fn start_through(
    mut client: crate::control::client::Client,
    stack: &crate::config::Stack,
    args: StartArgs,
    scale: BTreeMap<String, u32>,
    g: &Global,
) -> Result<u8> {
    let answer = request_surviving(
        stack,
        &mut client,
        Request::Start {
            names: args.names,
            scale,
            env: args.update_env.then(CallerEnv::current),
        },
        g,
    )?;
    if !g.quiet {
        println!(
            "{}",
            crate::output::up_line(&stack.name, answer.summary.as_ref())
        );
    }
    Ok(exit::SUCCESS)
}

/// With no supervisor running, the one `start` launches inherits this
/// environment: check `require_env` here, before launching anything, so a
/// refused start leaves no supervisor holding the wrong environment.
fn refuse_missing_env(stack: &crate::config::Stack, names: &[String]) -> Result<()> {
    let Ok(sel) = crate::plan::select(stack, names) else {
        // Unknown names: the supervisor's answer says which.
        return Ok(());
    };
    let mut wanted = sel.processes.clone();
    wanted.extend(sel.members.keys().cloned());
    let closure = crate::plan::closure(stack, &wanted);
    let os = |k: &str| std::env::var(k).ok();
    let cwd = std::env::current_dir().unwrap_or_default();
    let show = |f: &std::path::Path| crate::config::diag::shown_path(f, &cwd);
    match crate::config::env::missing_env_problem(stack, &closure, &os, &show) {
        None => Ok(()),
        Some((message, hint)) => Err(Error::Usage {
            message,
            hint: Some(format!("{hint}; nothing was started")),
        }),
    }
}

/// Runs `restart`.
///
/// # Errors
/// As `start`.
pub fn run_restart(args: RestartArgs, g: &Global) -> Result<u8> {
    let target = Target::find(g)?;
    let (mut client, stack) = match target.running("restarting through the running supervisor")? {
        Some(client) => {
            crate::lock::guard_mutation(&target.stack, args.force, "restart")?;
            (client, target.stack)
        }
        None => {
            let (path, stack) = target.valid()?;
            crate::lock::guard_mutation(&stack, args.force, "restart")?;
            (
                ensure_supervisor(&path, &stack, Launch::Detached, g)?,
                stack,
            )
        }
    };
    request_surviving(
        &stack,
        &mut client,
        Request::Restart {
            names: args.names,
            env: args.update_env.then(CallerEnv::current),
        },
        g,
    )?;
    Ok(exit::SUCCESS)
}

/// Runs `reload`.
///
/// # Errors
/// Invalid stack file (2, nothing changes), no supervisor (1), a
/// supervisor too old for `--dry-run` (1, nothing changes).
pub fn run_reload(args: ReloadArgs, g: &Global) -> Result<u8> {
    // The one command that reads the file on disk into a running supervisor.
    let (_, stack) = load_stack(g)?;
    print_warnings(&stack);
    if !args.dry_run {
        crate::lock::guard_mutation(&stack, args.force, "reload")?;
    }
    let no_supervisor = || Error::Failed {
        message: format!("no supervisor is running for stack {}", stack.name),
        hint: Some("`stackctl start` reads the stack file afresh".into()),
        detail: None,
    };
    let mut client = connect(&stack)?.ok_or_else(no_supervisor)?;
    if args.dry_run {
        // An older supervisor would not know the field, and reload.
        let who = ping(&mut client)?;
        if !who.dry_run {
            return Err(Error::Failed {
                message: format!(
                    "the running supervisor (stackctl {}, pid {}) is older than `reload --dry-run`; nothing was changed",
                    who.stackctl, who.pid
                ),
                hint: Some(
                    "`stackctl upgrade` with this binary first (no process is restarted)".into(),
                ),
                detail: None,
            });
        }
        client = connect(&stack)?.ok_or_else(no_supervisor)?;
    }
    // The plan is printed here when it is the answer (a dry run, JSON),
    // else with the progress as it comes.
    let own = args.dry_run || args.json;
    let quiet = Global {
        quiet: true,
        ..g.clone()
    };
    // A reload whose supervisor is killed midway waits for the relaunched
    // one (which finishes it) and asks it again.
    let answer = request_surviving(
        &stack,
        &mut client,
        Request::Reload {
            dry_run: args.dry_run,
        },
        if own { &quiet } else { g },
    )?;
    if own {
        let plan = answer
            .plan
            .ok_or_else(|| Error::failed("the supervisor sent no plan"))?;
        let mut out = std::io::stdout().lock();
        let written = if args.json {
            serde_json::to_writer(&mut out, &plan)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        } else {
            let style = crate::output::Style { color: g.color };
            writeln!(out, "{}", crate::output::reload_plan(&plan, style))
        };
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(Error::failed(format!("cannot write the plan: {e}"))),
        }
    }
    Ok(exit::SUCCESS)
}

/// Runs the anchor.
///
/// # Errors
/// When another anchor runs, or its socket cannot be bound.
pub fn run_anchor(args: AnchorArgs) -> Result<u8> {
    if let Some(path) = args.resume {
        return crate::anchor::resume(&path);
    }
    let (Some(state_dir), Some(stack_file), Some(exe)) = (args.state_dir, args.stack, args.exe)
    else {
        return Err(Error::usage(
            "anchor: --state-dir, --stack and --exe are required",
        ));
    };
    // Its own session: the terminal's Ctrl-C is not for it.
    let _ = nix::unistd::setsid();
    crate::anchor::run(crate::anchor::Options {
        state_dir,
        stack_file,
        exe,
        launch: !args.no_launch,
        echo: args.echo.then_some(args.color),
    })
}

/// Runs the supervisor.
///
/// # Errors
/// When it cannot take its lock or bind its socket.
pub fn run_supervise(args: SuperviseArgs, g: &Global) -> Result<u8> {
    // Detach from the terminal's session: the launching `stackctl start`
    // returns, the supervisor stays (and Ctrl-C in that terminal is not ours).
    if !args.foreground {
        let _ = nix::unistd::setsid();
    }
    crate::daemon::run(
        &args.stack,
        crate::daemon::Options {
            foreground: args.foreground,
            initial: None,
            state_dir: args.state_dir,
            color: g.color,
        },
    )
}
