//! `stackctl logs`: the last lines of process logs, and following them.

use clap::Args;

use super::Global;
use crate::error::Result;

/// Shows the last lines of process logs, or follows them.
///
/// Several processes are interleaved and prefixed by name; a pool name
/// covers all its members; `-f` keeps following across restarts and
/// rotations.
///
/// $ stackctl logs api -n 50
/// $ stackctl logs -f worker
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Processes or pools (default: all).
    pub names: Vec<String>,
    /// Keep following.
    #[arg(short, long)]
    pub follow: bool,
    /// How many lines from the end of each log.
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
}

/// Runs `logs`.
///
/// # Errors
/// Unknown names (exit 2), unreadable logs (exit 1).
pub fn run(args: LogsArgs, g: &Global) -> Result<u8> {
    let _ = (args, g);
    Err(crate::error::Error::failed("logs is not built yet"))
}
