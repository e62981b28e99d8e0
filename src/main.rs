//! The `stackctl` binary: parse, run, print the error, exit.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = stackctl::Cli::parse();
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
