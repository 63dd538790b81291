//! Running PostgreSQL and pgBackRest programs for restore-check and `cbob postgres`.
//!
//! PostgreSQL refuses to run as root, so when cbob runs as root every PostgreSQL and pgBackRest
//! program runs as the unprivileged `postgres` user, with a cleared environment, a readable
//! working directory and its own process group (a terminal's Ctrl-C reaches cbob alone, which
//! then stops its children in order). Recipe and pitfalls: reference/pgbackrest-lab.md §2, §5, §7.
//!
//! - [`programs`]: finding pgBackRest and the PostgreSQL binaries of a major version;
//! - [`user`]: the OS user programs run as, ownership and reachability of directories;
//! - [`command`]: commands as that user, run to completion with cancellation;
//! - [`controldata`]: `pg_controldata` output;
//! - [`settings`]: the server settings that make a foreign (managed-service) cluster start here;
//! - [`server`]: a PostgreSQL server cbob started: readiness, promotion, queries, stop;
//! - [`instance`]: the long-lived local servers of `cbob postgres`, one per stanza.

pub mod command;
pub mod controldata;
mod error;
pub mod instance;
pub mod programs;
pub mod server;
pub mod settings;
pub mod user;

pub use command::{CmdOutput, PgEnv, run_command};
pub use controldata::ControlData;
pub use error::PgError;
pub use programs::{PgBinaries, find_pg_binaries, find_pgbackrest};
pub use server::Server;
pub use user::OsUser;

/// The last `max` bytes of a text file (a server log), for error messages.
pub fn file_tail(path: &std::path::Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // Start at a line boundary when we cut.
    let text = if start > 0 {
        text.split_once('\n').map_or(&*text, |(_, rest)| rest)
    } else {
        &text
    };
    text.trim_end().to_string()
}

/// The last `lines` non-empty lines of program output, joined for a one-paragraph message.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
