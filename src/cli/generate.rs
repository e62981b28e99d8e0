//! `stackctl generate`: man pages and shell completions from the CLI definition.
//!
//! Owns: writing `man/` and `completions/`. Must not touch: the help
//! texts themselves (the clap definitions' `///` comments).

use std::path::PathBuf;

use clap::{Args, CommandFactory, ValueEnum};

use crate::error::Result;

/// Writes generated artefacts.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to generate.
    pub what: What,
    /// Where to write it.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum What {
    /// One man page per command into OUT.
    Man,
    /// bash, zsh and fish completions into OUT.
    Completions,
}

/// Runs `generate`.
///
/// # Errors
/// When the files cannot be written.
pub fn run(args: GenerateArgs) -> Result<u8> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("failed to create {}: {e}", args.out.display()))?;
    match args.what {
        What::Man => write_man(&args.out)?,
        What::Completions => write_completions(&args.out)?,
    }
    Ok(crate::error::exit::SUCCESS)
}

/// Writes one man page per (visible) command into `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_man(out: &std::path::Path) -> anyhow::Result<()> {
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd, out)?;
    Ok(())
}

/// Writes bash, zsh and fish completions into `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_completions(out: &std::path::Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = super::Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "stackctl", out)?;
    }
    Ok(())
}
