//! The command line: clap definitions and one function per command.
//!
//! Owns: turning arguments into a request — a local call (`check`, `lock`,
//! `status` without a supervisor) or a `control::client` call — and
//! rendering the answer through `output`. Must not touch: spawning stack
//! processes, reading pid files directly (goes through `state`), TOML.

pub mod analyze;
pub mod check;
pub mod export;
pub mod generate;
pub mod internal;
pub mod keep;
pub mod live;
pub mod lock;
pub mod logs;
pub mod probe;
pub mod scale;
pub mod session;
pub mod start;
pub mod status;
pub mod stop;
pub mod upgrade;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;

/// Runs a whole application stack as plain processes on one host.
///
/// stackctl reads one `stack.toml`, starts tasks and services in dependency
/// order behind readiness gates, tracks every pid and log, scales worker
/// pools, restarts what dies, keeps the stack-owner lock and runs the deploy
/// keeper. The stack file is `./stack.toml` or the nearest one in a parent
/// folder, unless `-f PATH` (given before the command) or `STACKCTL_FILE`
/// names another.
///
/// Exit codes: 0 success; 1 the operation failed; 2 usage error or invalid
/// stack file; `status`: 3 when a named process is not running and ready;
/// `lock`: 2 held by another owner, 3 not the holder, 4 the lock file stayed
/// busy for 5 s.
///
/// Examples:
///
/// $ stackctl start                    # bring everything up, return when ready
///
/// $ stackctl status                   # what runs, since when, how big
///
/// $ stackctl logs -f api              # follow one process's log
///
/// $ stackctl -f other/stack.toml stop # stop everything, leave nothing behind
#[derive(Debug, Parser)]
#[command(
    name = "stackctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The stack file (default: ./stack.toml or the nearest in a parent
    /// folder). Give it before the command (`stackctl -f x.toml status`);
    /// after `logs`, `-f` means `--follow`.
    #[arg(short = 'f', long = "file", env = "STACKCTL_FILE", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more: also the "starting" and "stopping" step of every process.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never colour the output (also: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What the global flags say about output.
#[derive(Debug, Clone)]
pub struct Global {
    pub file: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
    /// Colour stdout (a terminal, no `--no-color`, no `NO_COLOR`).
    pub color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Start(start::StartArgs),
    Stop(stop::StopArgs),
    Restart(start::RestartArgs),
    Status(status::StatusArgs),
    Analyze(analyze::AnalyzeArgs),
    Scale(scale::ScaleArgs),
    Logs(logs::LogsArgs),
    Check(check::CheckArgs),
    Reload(start::ReloadArgs),
    Lock(lock::LockArgs),
    Keep(keep::KeepArgs),
    Upgrade(upgrade::UpgradeArgs),
    Export(export::ExportArgs),
    /// Runs one of stackctl's probes (called by units `export systemd` writes).
    #[command(hide = true)]
    Probe(probe::ProbeArgs),
    /// Runs the supervisor (started by `start`; not for direct use).
    #[command(hide = true)]
    Supervise(start::SuperviseArgs),
    /// Runs the stack's anchor (started by `start`; not for direct use).
    #[command(hide = true)]
    Anchor(start::AnchorArgs),
    /// Writes the man pages and shell completions.
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
    /// Places passed sockets at fds 3… and runs a program with
    /// `LISTEN_PID` (how a service with `listen` is started; not for
    /// direct use).
    #[command(hide = true, name = "listen-exec")]
    ListenExec(ListenExecArgs),
}

/// `stackctl listen-exec --fds 7,9 -- PROGRAM ARGS…`.
#[derive(Debug, clap::Args)]
pub struct ListenExecArgs {
    /// The fds to place at 3, 4, … (in this order).
    #[arg(long, value_delimiter = ',', required = true)]
    pub fds: Vec<i32>,
    /// What to run.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Runs the trampoline; returns only when the program could not be
/// executed (exit 127, as a shell does).
fn listen_exec(a: &ListenExecArgs) -> u8 {
    use std::io::Write;
    let e = crate::spawn::listen::exec_with_fds(&a.fds, &a.argv);
    let program = a.argv.first().map_or("", String::as_str);
    let _ = writeln!(std::io::stderr(), "error: cannot run `{program}`: {e}");
    127
}

impl Cli {
    /// The global flags, with colour decided.
    pub fn global(&self) -> Global {
        use std::io::IsTerminal;
        let color = !self.no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        Global {
            file: self.file.clone(),
            quiet: self.quiet,
            verbose: self.verbose,
            color,
        }
    }
}

impl Command {
    /// What the command did not do when it stops at an invalid stack file:
    /// the last words of the file's diagnostics.
    fn outcome_when_invalid(&self) -> &'static str {
        match self {
            Command::Start(_) | Command::Supervise(_) | Command::Anchor(_) => "nothing was started",
            Command::Restart(_) => "nothing was restarted",
            Command::Reload(_) => "nothing was changed",
            Command::Check(_) => "validated only, nothing was run",
            Command::Status(_) => "no status was shown",
            Command::Analyze(_) => "nothing was analyzed",
            Command::Scale(_) => "nothing was scaled",
            Command::Stop(_) => "nothing was stopped",
            Command::Keep(_) => "the keeper was not started",
            Command::Upgrade(_) => "nothing was upgraded",
            Command::Export(_) => "nothing was exported",
            Command::Probe(_) => "nothing was probed",
            Command::Logs(_) | Command::Lock(_) | Command::Generate(_) => "nothing was done",
            Command::ListenExec(_) => "nothing was run",
        }
    }
}

/// Runs the command.
///
/// # Errors
/// Whatever the command fails with; `Error::exit_code` says the code.
pub fn run(cli: Cli) -> Result<u8> {
    let g = cli.global();
    let outcome = cli.command.outcome_when_invalid();
    let result = match cli.command {
        Command::Start(a) => start::run_start(a, &g),
        Command::Stop(a) => stop::run(a, &g),
        Command::Restart(a) => start::run_restart(a, &g),
        Command::Status(a) => status::run(a, &g),
        Command::Analyze(a) => analyze::run(a, &g),
        Command::Scale(a) => scale::run(a, &g),
        Command::Logs(a) => logs::run(a, &g),
        Command::Check(a) => check::run(a, &g),
        Command::Reload(a) => start::run_reload(a, &g),
        Command::Lock(a) => lock::run(a, &g),
        Command::Keep(a) => keep::run(a, &g),
        Command::Upgrade(a) => upgrade::run(a, &g),
        Command::Export(a) => export::run(a, &g),
        Command::Probe(a) => probe::run(a),
        Command::Supervise(a) => start::run_supervise(a, &g),
        Command::Anchor(a) => start::run_anchor(a),
        Command::Generate(a) => generate::run(a),
        Command::ListenExec(a) => Ok(listen_exec(&a)),
    };
    result.map_err(|e| e.with_outcome(outcome))
}
