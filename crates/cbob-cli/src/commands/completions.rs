//! `cbob completions <shell>`: a completion script generated from the clap definition.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::exit_code::{CliError, ExitCode};

pub fn run(args: &CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "cbob", &mut script);
    super::print_out(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::Success)
}
