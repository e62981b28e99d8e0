//! `stackctl logs`: the last lines of process logs, and following them.
//!
//! Owns: turning names into log files (by looking at the files present in
//! `state_dir`, so it works with no supervisor running and with a broken
//! stack file), the `name | ` prefixes, the exit codes of `logs`, and quiet
//! exit on a closed stdout (`stackctl logs | head`). Must not touch: the
//! supervisor (logs are files; nothing is asked over the socket), writing
//! logs. Reading, filtering and interleaving are `logs::query`; following
//! is `logs::follow`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Args;

use super::session::{load_stack_lenient, warn_invalid_files};
use super::Global;
use crate::config::Stack;
use crate::error::{exit, Error, Result};
use crate::logs::follow::{Followed, Follower, Output};
use crate::logs::query::{self, Filter};
use crate::state::{StateDir, KEEPER_LOG as KEEPER, OWN_LOG as OWN};

/// Shows the last lines of process logs, or follows them.
///
/// Several processes are interleaved (in time order when the stack has
/// `[stack.logs] timestamps = true`) and prefixed by name; a pool name
/// covers all its members (`worker` is `worker.1`, `worker.2`, …, one
/// member is `worker.2`); no name shows every process log. `stackctl` names
/// the supervisor's own log. `-f` keeps following across restarts and
/// rotations, and picks up new pool members.
///
/// Each run of a process is marked in its log (`── stackctl: api started,
/// pid 4242 (attempt 3) ──`, and a line when it ends); `--current` shows
/// only the current run. With `--grep`, `-n` counts the matches over all
/// the logs shown.
///
/// Exits 2 for a name that is neither in the stack file nor has a log, or a
/// bad `--since`/`--grep`; 1 when a log cannot be read. Needs no supervisor,
/// nor a stack.toml that validates (a warning shows its diagnostics).
///
/// Examples:
///
/// $ stackctl logs api -n 50
///
/// $ stackctl logs -f worker        # -f after `logs` is --follow
///
/// $ stackctl logs --since 10m --grep 'ERROR|Traceback'
///
/// $ stackctl logs api --current    # only its current run
/// $ stackctl logs stackctl         # the supervisor's own log
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Processes or pools (default: all).
    pub names: Vec<String>,
    /// Keep following.
    #[arg(short, long)]
    pub follow: bool,
    /// How many lines from the end of each log (with --grep: how many
    /// matches, over all the logs shown).
    #[arg(
        short = 'n',
        long = "lines",
        default_value_t = 100,
        value_name = "LINES"
    )]
    pub lines: usize,
    /// Only lines written within this long (e.g. 10m); needs timestamps or file times.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
    /// Only the current run of each process: from the run marker stackctl
    /// wrote when it (or its pre_start) last started.
    #[arg(long)]
    pub current: bool,
}

/// Runs `logs`.
///
/// # Errors
/// Unknown names, a bad `--since` or `--grep` (exit 2), unreadable logs
/// (exit 1). A closed stdout is a quiet success.
pub fn run(args: LogsArgs, g: &Global) -> Result<u8> {
    let (_, stack, invalid) = load_stack_lenient(g)?;
    if let Some(e) = &invalid {
        warn_invalid_files(e, "showing the logs in its state folder");
    }
    let filter = filter(&args)?;
    if args.current && !stack.logs.markers {
        let mut err = io::stderr().lock();
        let _ = writeln!(
            err,
            "warning: `[stack.logs] markers = false`: without run markers a log has no current run to show; showing its last lines"
        );
    }
    let dir = stack.state_dir.clone();
    let sel = resolve(&stack, &dir, &args.names, args.follow)?;
    let stdout = io::stdout();
    let mut out = Printer {
        out: BufWriter::with_capacity(64 * 1024, stdout.lock()),
        width: sel.targets.iter().map(|t| t.label.len()).max().unwrap_or(0),
        prefix: sel.prefix,
        color: g.color,
        filter: filter.clone(),
    };
    match show(&sel, &dir, &args, &filter, &mut out) {
        Ok(()) => Ok(exit::SUCCESS),
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(Failure::Output(e)) => Err(Error::failed(format!("cannot write the logs: {e}"))),
        Err(Failure::Read(path, e)) => Err(Error::failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn filter(args: &LogsArgs) -> Result<Filter> {
    let grep = match &args.grep {
        Some(re) => Some(regex::bytes::Regex::new(re).map_err(|e| {
            Error::Usage {
                message: format!("--grep {re:?} is not a valid regular expression"),
                hint: Some(
                    e.to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                ),
            }
        })?),
        None => None,
    };
    let since = match &args.since {
        Some(d) => {
            let d = humantime::parse_duration(d).map_err(|e| Error::Usage {
                message: format!("--since {d:?} is not a duration: {e}"),
                hint: Some("write it like 30s, 10m, 2h or 1d".into()),
            })?;
            Some(
                SystemTime::now()
                    .checked_sub(d)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            )
        }
        None => None,
    };
    Ok(Filter {
        grep,
        since,
        current: args.current,
    })
}

/// One log to show.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    label: String,
    path: PathBuf,
}

/// What the names resolved to.
#[derive(Debug, Default)]
struct Selection {
    targets: Vec<Target>,
    /// Pools whose new members are followed as they appear.
    pools: Vec<String>,
    /// Every process log, including ones that appear later.
    all: bool,
    /// Prefix lines with `name | `.
    prefix: bool,
}

/// Whether `name` is `<pool>.<n>`.
fn is_member(name: &str, pool: &str) -> bool {
    name.strip_prefix(pool)
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// The members of `pool` with a log, by instance number.
fn members(pool: &str, present: &BTreeSet<String>) -> Vec<String> {
    let mut m: Vec<(u64, String)> = present
        .iter()
        .filter(|n| is_member(n, pool))
        .filter_map(|n| Some((n.rsplit('.').next()?.parse().ok()?, n.clone())))
        .collect();
    m.sort();
    m.into_iter().map(|(_, n)| n).collect()
}

fn resolve(stack: &Stack, dir: &Path, names: &[String], follow: bool) -> Result<Selection> {
    let present = StateDir::new(dir).log_names();
    let is_process = |n: &str| stack.process(n).is_some();
    let special = |n: &str| (n == OWN || n == KEEPER) && !is_process(n);
    let mut sel = Selection::default();
    let mut labels: Vec<String> = Vec::new();
    let add = |labels: &mut Vec<String>, n: &str| {
        if !labels.iter().any(|l| l == n) {
            labels.push(n.to_string());
        }
    };
    if names.is_empty() {
        sel.all = true;
        // Stack order first, then logs of processes no longer in the stack.
        for p in &stack.processes {
            if p.is_pool() {
                for m in members(&p.name, &present) {
                    add(&mut labels, &m);
                }
            } else if present.contains(&p.name) {
                add(&mut labels, &p.name);
            }
        }
        for n in &present {
            if !special(n) && !labels.contains(n) {
                let pool_member = stack
                    .processes
                    .iter()
                    .any(|p| p.is_pool() && is_member(n, &p.name));
                if !pool_member {
                    add(&mut labels, n);
                }
            }
        }
    } else {
        let mut unknown = Vec::new();
        for n in names {
            let (base, index) = crate::plan::split_instance(n);
            match stack.process(n) {
                Some(p) if p.is_pool() => {
                    for m in members(n, &present) {
                        add(&mut labels, &m);
                    }
                    sel.pools.push(n.clone());
                }
                Some(_) => add(&mut labels, n),
                None if index.is_some_and(|i| i >= 1)
                    && stack.process(base).is_some_and(|p| p.is_pool()) =>
                {
                    add(&mut labels, n)
                }
                None if present.contains(n) || special(n) => add(&mut labels, n),
                None if !members(n, &present).is_empty() => {
                    // A pool that is no longer in the stack file.
                    for m in members(n, &present) {
                        add(&mut labels, &m);
                    }
                    sel.pools.push(n.clone());
                }
                None => unknown.push(n.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(unknown_names(stack, &present, &unknown));
        }
    }
    // A prefix whenever more than one log is shown, or may be (a pool, or
    // every log while following: new ones join).
    sel.prefix =
        labels.len() > 1 || !sel.pools.is_empty() || (sel.all && (labels.len() != 1 || follow));
    sel.targets = labels
        .into_iter()
        .map(|l| Target {
            path: StateDir::new(dir).log_file(&l),
            label: l,
        })
        .collect();
    Ok(sel)
}

fn unknown_names(stack: &Stack, present: &BTreeSet<String>, unknown: &[String]) -> Error {
    let known: Vec<&str> = stack
        .processes
        .iter()
        .map(|p| p.name.as_str())
        .chain(present.iter().map(String::as_str))
        .collect();
    let quoted: Vec<String> = unknown.iter().map(|n| format!("`{n}`")).collect();
    let message = format!(
        "no process or log named {} in stack {}",
        quoted.join(", "),
        stack.name
    );
    let hint = unknown
        .iter()
        .find_map(|n| crate::plan::closest(n, known.iter().copied()))
        .map(|s| format!("did you mean `{s}`?"))
        .or_else(|| {
            let mut all: Vec<&str> = known.clone();
            all.sort_unstable();
            all.dedup();
            (!all.is_empty()).then(|| format!("known: {}", all.join(", ")))
        });
    Error::Usage { message, hint }
}

/// Why showing stopped.
enum Failure {
    /// Writing to stdout failed (a closed pipe is a quiet success).
    Output(io::Error),
    /// A log could not be read.
    Read(PathBuf, io::Error),
}

fn show(
    sel: &Selection,
    dir: &Path,
    args: &LogsArgs,
    filter: &Filter,
    out: &mut Printer<'_>,
) -> std::result::Result<(), Failure> {
    // Open every log first: its tail is read back from here, and `-f`
    // continues from exactly here, so no line is shown twice or missed.
    let mut opened: Vec<(Option<File>, u64)> = Vec::new();
    for t in &sel.targets {
        match File::open(&t.path) {
            Ok(f) => {
                let end = f
                    .metadata()
                    .map_err(|e| Failure::Read(t.path.clone(), e))?
                    .len();
                opened.push((Some(f), end));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => opened.push((None, 0)),
            Err(e) => return Err(Failure::Read(t.path.clone(), e)),
        }
    }
    let mut per_log = Vec::new();
    let mut mtimes = Vec::new();
    for (t, (f, end)) in sel.targets.iter().zip(&opened) {
        let (lines, mtime) =
            query::last_lines(&t.path, f.as_ref().map(|f| (f, *end)), args.lines, filter)
                .map_err(|e| Failure::Read(t.path.clone(), e))?;
        per_log.push(lines);
        mtimes.push(mtime);
    }
    let mut merged = query::merge(per_log, &mtimes);
    // `--grep -n N`: the last N matches overall, not N of each log.
    if filter.grep.is_some() && merged.len() > args.lines {
        merged.drain(..merged.len() - args.lines);
    }
    for (i, line) in merged {
        out.print(&sel.targets[i].label, &line.bytes)
            .map_err(Failure::Output)?;
    }
    out.out.flush().map_err(Failure::Output)?;
    if !args.follow {
        // Say why nothing was shown, on stderr (stdout stays the logs).
        let mut err = io::stderr().lock();
        if sel.targets.is_empty() {
            let _ = writeln!(err, "no process logs yet in {}", dir.display());
        }
        for (t, (f, _)) in sel.targets.iter().zip(&opened) {
            if f.is_none() && crate::logs::rotated_files(&t.path).is_empty() {
                let _ = writeln!(err, "{}: no log yet ({})", t.label, t.path.display());
            }
        }
        return Ok(());
    }
    if !dir.exists() {
        StateDir::new(dir)
            .ensure()
            .map_err(|e| Failure::Read(dir.to_path_buf(), e))?;
    }
    let followed: Vec<Followed> = sel
        .targets
        .iter()
        .zip(opened)
        .map(|(t, (f, end))| Followed::new(t.label.clone(), t.path.clone(), f, end))
        .collect();
    let all = sel.all;
    let pools = sel.pools.clone();
    let accept = Box::new(move |file: &str| -> Option<String> {
        let name = crate::state::log_name(file)?;
        let wanted =
            (all && name != OWN && name != KEEPER) || pools.iter().any(|p| is_member(name, p));
        wanted.then(|| name.to_string())
    });
    let mut follower =
        Follower::new(dir, followed, accept).map_err(|e| Failure::Read(dir.to_path_buf(), e))?;
    follower.run(out).map_err(Failure::Output)
}

/// Prints `name | line`, or the bare line for a single log.
struct Printer<'a> {
    out: BufWriter<io::StdoutLock<'a>>,
    width: usize,
    prefix: bool,
    color: bool,
    filter: Filter,
}

impl Printer<'_> {
    fn print(&mut self, label: &str, line: &[u8]) -> io::Result<()> {
        if self.prefix {
            let style = crate::output::Style { color: self.color };
            write!(self.out, "{}", style.prefix(label, self.width))?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }
}

impl Output for Printer<'_> {
    fn line(&mut self, label: &str, line: &[u8]) -> io::Result<()> {
        if self.filter.new_line_passes(line) {
            self.print(label, line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
