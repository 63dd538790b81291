//! `cbob manpages DIR` (hidden): writes one man page per command (`cbob.1`, `cbob-sync.1`,
//! `cbob-config-init.1`, ...) from the clap definition, for packaging (`cargo xtask dist`).

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use crate::cli::Cli;
use crate::exit_code::{CliError, ExitCode};

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    pub dir: PathBuf,
}

fn write_pages(cmd: clap::Command, name: String, dir: &std::path::Path) -> std::io::Result<usize> {
    // clap wants 'static names; this one-shot command makes a few dozen.
    let page: &'static str = Box::leak(name.clone().into_boxed_str());
    let bin: &'static str = Box::leak(name.replace('-', " ").into_boxed_str());
    let cmd = cmd.name(page).bin_name(bin);
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.1")), out)?;
    let mut n = 1;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        n += write_pages(sub.clone(), format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}

pub fn run(args: &ManArgs) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(&args.dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let n = write_pages(cmd, "cbob".into(), &args.dir)?;
    println!("{n} man pages in {}", args.dir.display());
    Ok(ExitCode::Success)
}
