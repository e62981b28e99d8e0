//! The `stackctl` binary: parse, run, print the error, exit.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The lines stackctl writes for itself skip clap (see `cli::internal`).
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let cli = stackctl::cli::internal::parse(&args).unwrap_or_else(stackctl::Cli::parse);
    match stackctl::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = e.render(&mut err);
            let _ = err.flush();
            ExitCode::from(e.exit_code())
        }
    }
}
