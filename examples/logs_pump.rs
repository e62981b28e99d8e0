//! Benchmark helper: runs a command with its stdout and stderr on one pipe
//! drained by `stackctl::logs::Drain` into a log file, as the anchor does
//! (a non-blocking read per readiness, the same sink), and prints the wall
//! time and this process's own CPU time.
//!
//! ```text
//! cargo run --release --example logs_pump -- OUT.log [--max-size BYTES]
//!     [--keep N] [--timestamps] -- CMD [ARGS…]
//! ```
//!
//! Output (one line, for scripts): `wall_s=… cpu_s=… user_s=… sys_s=…
//! bytes=…`; CPU is this process only (the pump thread and the main thread
//! waiting), not the child.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use nix::sys::resource::{getrusage, UsageWho};
use stackctl::config::LogSettings;
use stackctl::logs::{Drain, Read, Sink, READ_BUF};

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logs_pump: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: OUT.log [opts] -- CMD …")?);
    let mut settings = LogSettings {
        max_size: u64::MAX,
        keep: 5,
        timestamps: false,
        markers: false,
    };
    let mut cmd = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--max-size" => settings.max_size = args.next().ok_or("--max-size N")?.parse()?,
            "--keep" => settings.keep = args.next().ok_or("--keep N")?.parse()?,
            "--timestamps" => settings.timestamps = true,
            "--" => {
                cmd.extend(args.by_ref());
                break;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let (prog, rest) = cmd.split_first().ok_or("no command after --")?;
    let t0 = Instant::now();
    let mut sink = Sink::open(out.clone(), settings)?;
    let (r, w) = nix::unistd::pipe()?;
    let mut child = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w.try_clone()?))
        .stderr(Stdio::from(w))
        .spawn()?;
    drain_to_end(&r, &mut sink)?;
    let status = child.wait()?;
    let wall = t0.elapsed().as_secs_f64();
    let ru = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let (user, sys) = (secs(ru.user_time()), secs(ru.system_time()));
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wall_s={wall:.3} cpu_s={:.3} user_s={user:.3} sys_s={sys:.3} bytes={bytes}",
        user + sys
    );
    if let Some(e) = sink.error() {
        eprintln!("logs_pump: {e}");
        return Ok(ExitCode::from(1));
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Drains `pipe` into `sink` until every writer closed it, waiting with
/// `poll(2)` as the anchor's loop does.
fn drain_to_end(pipe: &std::os::fd::OwnedFd, sink: &mut Sink) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, AsRawFd};
    let flags = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_GETFL,
    )?);
    nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let _ = nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(256 * 1024),
    );
    let mut drain = Drain::new();
    let mut scratch = vec![0u8; READ_BUF];
    let mut no_lines = |_: &[u8]| {};
    loop {
        let timeout = drain.due().map_or(PollTimeout::NONE, |t| {
            let ms = t.saturating_duration_since(Instant::now()).as_millis() + 1;
            PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
        });
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, timeout)? == 0 {
            drain.flush_partial(sink);
            continue;
        }
        loop {
            match drain.read(pipe.as_fd(), &mut scratch, sink, &mut no_lines)? {
                Read::Data => {}
                Read::Empty => break,
                Read::Eof => {
                    drain.finish(sink, &mut no_lines);
                    return Ok(());
                }
            }
        }
    }
}
