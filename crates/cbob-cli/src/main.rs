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

/// glibc gives each thread that allocates its own arena (up to 8 per core), and each keeps
/// freed memory: a sync runs many short blocking-pool threads, which once made the peak RSS of a
/// 21,000-object copy 118 MiB instead of 86 MiB. Too few arenas cost CPU instead: with 2, 40 % of
/// that copy's futex calls were threads queueing on an arena lock. Two per core (at least 4)
/// measured best: 0.5 CPU-second less than 2 arenas, for about 6 MiB more.
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = i32::try_from(cores.saturating_mul(2))
            .unwrap_or(i32::MAX)
            .max(4);
        // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
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
