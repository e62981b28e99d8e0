//! The command lines stackctl writes for itself — `anchor …`, `supervise
//! --stack F [--state-dir D] [--foreground]`, `listen-exec --fds 7,9 -- ARGV…` — read
//! without clap. Building clap's whole command tree (every command, every
//! help text) costs each of a stack's two long-lived processes about 2 MB
//! of resident memory and a millisecond of start-up, and a `listen`
//! service's trampoline the same on every spawn.
//!
//! Only exactly the shapes stackctl writes are taken: anything else (a
//! flag this does not know, `--flag=value`, a missing value) returns
//! `None` and goes through clap, which explains the mistake as usual.
//!
//! Owns: recognizing those shapes. Must not touch: what the commands do.

use std::ffi::OsString;
use std::path::PathBuf;

use super::start::{AnchorArgs, SuperviseArgs};
use super::{Cli, Command, ListenExecArgs};

/// The internal command `args` (without the program name) is, if it is one
/// in the exact shape stackctl writes.
pub fn parse(args: &[OsString]) -> Option<Cli> {
    let (first, rest) = args.split_first()?;
    let command = match first.to_str()? {
        "anchor" => Command::Anchor(anchor(rest)?),
        "supervise" => Command::Supervise(supervise(rest)?),
        "listen-exec" => Command::ListenExec(listen_exec(rest)?),
        _ => return None,
    };
    Some(Cli {
        file: std::env::var_os("STACKCTL_FILE").map(PathBuf::from),
        quiet: false,
        verbose: 0,
        no_color: false,
        command,
    })
}

fn anchor(args: &[OsString]) -> Option<AnchorArgs> {
    let mut a = AnchorArgs {
        state_dir: None,
        stack: None,
        exe: None,
        resume: None,
        no_launch: false,
        echo: false,
        color: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().map(PathBuf::from);
        match flag.to_str()? {
            "--state-dir" => a.state_dir = Some(value()?),
            "--stack" => a.stack = Some(value()?),
            "--exe" => a.exe = Some(value()?),
            "--resume" => a.resume = Some(value()?),
            "--no-launch" => a.no_launch = true,
            "--echo" => a.echo = true,
            "--color" => a.color = true,
            _ => return None,
        }
    }
    let complete =
        a.resume.is_some() || (a.state_dir.is_some() && a.stack.is_some() && a.exe.is_some());
    complete.then_some(a)
}

fn supervise(args: &[OsString]) -> Option<SuperviseArgs> {
    let mut stack = None;
    let mut state_dir = None;
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.to_str()? {
            "--stack" => stack = Some(PathBuf::from(it.next()?)),
            "--state-dir" => state_dir = Some(PathBuf::from(it.next()?)),
            "--foreground" => foreground = true,
            _ => return None,
        }
    }
    Some(SuperviseArgs {
        stack: stack?,
        foreground,
        state_dir,
    })
}

fn listen_exec(args: &[OsString]) -> Option<ListenExecArgs> {
    let [flag, list, dashes, argv @ ..] = args else {
        return None;
    };
    if flag.to_str()? != "--fds" || dashes.to_str()? != "--" || argv.is_empty() {
        return None;
    }
    let fds = list
        .to_str()?
        .split(',')
        .map(|f| f.parse().ok())
        .collect::<Option<Vec<i32>>>()?;
    let argv = argv
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<Vec<String>>>()?;
    Some(ListenExecArgs { fds, argv })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// What clap makes of the same line, for comparison.
    fn clap(args: &[&str]) -> String {
        let mut full = vec!["stackctl"];
        full.extend_from_slice(args);
        format!("{:?}", Cli::try_parse_from(full).unwrap().command)
    }

    #[test]
    fn the_lines_stackctl_writes_read_as_clap_reads_them() {
        let lines: &[&[&str]] = &[
            &[
                "anchor",
                "--state-dir",
                "/s/logs",
                "--stack",
                "/s/stack.toml",
                "--exe",
                "/bin/x",
            ],
            &[
                "anchor",
                "--state-dir",
                "/s",
                "--stack",
                "/s/t",
                "--exe",
                "/x",
                "--no-launch",
                "--echo",
                "--color",
            ],
            &["anchor", "--resume", "/s/anchor.resume"],
            &["supervise", "--stack", "/s/stack.toml"],
            &["supervise", "--foreground", "--stack", "/s/stack.toml"],
            &[
                "supervise",
                "--stack",
                "/s/stack.toml",
                "--state-dir",
                "/s/logs",
            ],
            &[
                "listen-exec",
                "--fds",
                "7,9",
                "--",
                "sh",
                "-c",
                "exec x --fd 3",
            ],
        ];
        for line in lines {
            let ours = parse(&os(line)).unwrap_or_else(|| panic!("not taken: {line:?}"));
            assert_eq!(format!("{:?}", ours.command), clap(line), "{line:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        let lines: &[&[&str]] = &[
            &[],
            &["start"],
            &["anchor"],
            &["anchor", "--state-dir", "/s", "--stack", "/s/t"],
            &["anchor", "--state-dir=/s", "--stack", "/s/t", "--exe", "/x"],
            &["anchor", "--resume"],
            &["anchor", "--resume", "/r", "--help"],
            &["supervise"],
            &["supervise", "--stack"],
            &["supervise", "--stack", "/s", "-v"],
            &["supervise", "--stack", "/s", "--state-dir"],
            &["listen-exec", "--fds", "7,x", "--", "sh"],
            &["listen-exec", "--fds", "7", "--"],
            &["listen-exec", "--fds", "7", "sh"],
        ];
        for line in lines {
            assert!(parse(&os(line)).is_none(), "taken: {line:?}");
        }
    }
}
