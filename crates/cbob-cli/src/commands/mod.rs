//! One module per subcommand; each `run` returns the exit code or a [`CliError`].
//!
//! A command that does work starts with `context::load(global, |sources| args.apply(sources))`,
//! which exits 2 on an invalid configuration and sets up logging.

pub mod completions;
pub mod config;
pub mod config_check;
pub mod config_prompt;
pub mod config_write;
pub mod daemon;
pub mod expire;
pub mod info;
pub mod man;
pub mod metrics;
pub mod postgres;
pub mod replicate;
pub mod restore_check;
pub mod sync;
pub mod verify;

use std::io::{self, Write};

use crate::cli::{Cli, Command};
use crate::exit_code::{CliError, ExitCode};

/// Runs the parsed command line.
pub fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Sync(args) => sync::run(&cli.global, args),
        Command::RestoreCheck(args) => restore_check::run(&cli.global, args),
        Command::Verify(args) => verify::run(&cli.global, args),
        Command::Info(args) => info::run(&cli.global, args),
        Command::Expire(args) => expire::run(&cli.global, args),
        Command::Postgres(args) => postgres::run(&cli.global, args),
        Command::Replicate(args) => replicate::run(&cli.global, args),
        Command::Config(args) => config::run(&cli.global, args),
        Command::Completions(args) => completions::run(args),
        Command::Metrics(args) => metrics::run(&cli.global, args),
        Command::Daemon(args) => daemon::run(&cli.global, args),
        Command::Manpages(args) => man::run(args),
    }
}

/// Writes command output to stdout; a closed pipe (`cbob config show | head`) is not an error.
pub fn print_out(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::failure(format!("cannot write output: {e}")))
        }
        _ => Ok(()),
    }
}
