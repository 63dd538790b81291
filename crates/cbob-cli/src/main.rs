//! `cbob`: Crunchy Bridge off-site backups.
//!
//! - `cli`: the clap definition (global flags, subcommands);
//! - `context`: configuration loading (flags on top of every source) and logging setup;
//! - `commands`: one module per subcommand;
//! - `exit_code`: SPEC §6 exit codes and the mapping from error types;
//! - `progress`: progress bars on a terminal, periodic log lines otherwise;
//! - `providers`: the storage providers compiled into this binary.

mod cli;
mod commands;
mod context;
mod exit_code;
mod progress;
mod providers;

use clap::Parser;

use crate::exit_code::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and --version print to stdout and succeed; every usage error is exit 2.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            }
            .into();
        }
    };
    match commands::run(&cli) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("cbob: {err}");
            err.code.into()
        }
    }
}
