//! The command line, declared with clap derive. Flags that are also configuration keys are fed
//! to the configuration as its highest-precedence source (see `context.rs`), so `config show`
//! can say a value came from the command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cbob_core::config::{ConfigSources, RenderFormat};
use cbob_core::logging::{LogFormat, LogLevel};

use crate::exit_code::ExitCode;

/// The text after the top-level help: configuration sources and exit codes.
fn after_help() -> String {
    let mut text = String::from(
        "Configuration sources, lowest to highest precedence: built-in defaults < TOML file < legacy \
         env-file (~/.cb_offsite_backup, /usr/local/etc/cb_offsite_backup, /etc/cb_offsite_backup) < \
         environment variables (CBOB_*) < command-line flags. `cbob config show` prints every setting \
         and where it came from.\n\nExit codes:",
    );
    for code in ExitCode::ALL {
        text.push_str(&format!("\n  {}  {}", code as u8, code.meaning()));
    }
    text
}

/// cbob keeps an independent, restorable copy of the pgBackRest backup repositories that Crunchy
/// Bridge holds for your clusters.
#[derive(Debug, Parser)]
#[command(name = "cbob", version, after_help = after_help(), propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file to read instead of searching $XDG_CONFIG_HOME/cbob/cbob.toml and
    /// /etc/cbob/cbob.toml [env: CBOB_CONFIG_FILE]. A file in the bash tool's KEY=VALUE format is
    /// read as a legacy env-file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log level [env: CBOB_LOG_LEVEL] [default: info]
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LevelArg>,

    /// Log format: text for people, json for one JSON object per line [env: CBOB_LOG_FORMAT] [default: text]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<FormatArg>,

    /// Plan and print what would be done, write nothing (state included) [env: CBOB_DRY_RUN=true]
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Do not take the run lock; only for debugging, concurrent runs may then collide [env: CBOB_NO_LOCK=true]
    #[arg(long, global = true)]
    pub no_lock: bool,

    /// Show only warnings and errors on stderr (the log file keeps the configured level)
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl GlobalArgs {
    /// Adds the global flags to the configuration sources.
    pub fn apply(&self, sources: &mut ConfigSources) {
        sources.config_file.clone_from(&self.config);
        if let Some(level) = self.log_level {
            sources.set_flag(
                "CBOB_LOG_LEVEL",
                LogLevel::from(level).as_str(),
                "--log-level",
            );
        }
        if let Some(format) = self.log_format {
            sources.set_flag(
                "CBOB_LOG_FORMAT",
                LogFormat::from(format).as_str(),
                "--log-format",
            );
        }
        if self.dry_run {
            sources.set_flag("CBOB_DRY_RUN", "true", "--dry-run");
        }
        if self.no_lock {
            sources.set_flag("CBOB_NO_LOCK", "true", "--no-lock");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    Error,
    #[value(alias = "warning")]
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LevelArg> for LogLevel {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::Error => LogLevel::Error,
            LevelArg::Warn => LogLevel::Warn,
            LevelArg::Info => LogLevel::Info,
            LevelArg::Debug => LogLevel::Debug,
            LevelArg::Trace => LogLevel::Trace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

impl From<FormatArg> for LogFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => LogFormat::Text,
            FormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy every Crunchy Bridge backup (or any pgBackRest repository) to the destination,
    /// verified against pgBackRest's checksums, valid at every instant
    Sync(crate::commands::sync::SyncArgs),
    /// Prove the backups restore: restore each stanza's latest backup into a private temporary
    /// directory, recover to the end of the archive, check every database, clean up, report
    RestoreCheck(crate::commands::restore_check::RestoreCheckArgs),
    /// Check the destination repository without restoring: info files and copies, manifests,
    /// every file against pgBackRest's checksums, WAL continuity and each backup's WAL range
    Verify(crate::commands::verify::VerifyArgs),
    /// Show each stanza's backups (type, times, sizes, WAL range, restorable), read from the
    /// destination, with the last sync, verify and restore-check
    Info(crate::commands::info::InfoArgs),
    /// Apply full-backup retention on the destination (pgBackRest's repo1-retention-full), in
    /// pgBackRest's expire order
    Expire(crate::commands::expire::ExpireArgs),
    /// One local PostgreSQL per stanza for restoring and querying backups:
    /// initdb|start|stop|restart|status|list
    Postgres(crate::commands::postgres::PostgresArgs),
    /// Copy the primary destination to every replica (other regions, other clouds), verified
    Replicate(crate::commands::replicate::ReplicateArgs),
    /// Show, check and query the configuration
    Config(ConfigArgs),
    /// Print a shell completion script, e.g. `cbob completions bash > /etc/bash_completion.d/cbob`
    Completions(CompletionsArgs),
    /// Print what the state database records: last runs, per-cluster syncs, checks, replicas
    Metrics(crate::commands::metrics::MetricsArgs),
    /// Run sync, restore-check, verify, expire and replicate on the CBOB_SCHEDULE_* cron
    /// schedules, and serve /metrics and /healthz on a loopback address
    Daemon(crate::commands::daemon::DaemonArgs),
    /// Write man pages for every command into a directory (for packaging)
    #[command(hide = true)]
    Manpages(crate::commands::man::ManArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its effective value and where it came from (default, TOML file,
    /// env-file, environment, command line). Secrets print as *** unless --unmask. Still prints
    /// when the configuration is invalid, then lists the problems and exits 2.
    Show {
        /// Output format: text (KEY = value  # origin), json (stable, see docs/configuration.md)
        /// or env (export KEY='value' lines for a POSIX shell)
        #[arg(long, value_enum, default_value = "text")]
        format: ShowFormat,

        /// Print secrets (API key, secret keys, tokens, webhook and heartbeat URLs) in clear
        #[arg(long)]
        unmask: bool,
    },

    /// Check the configuration from every source and report every problem at once, each with
    /// the key, where its value came from, and how to fix it. Exits 2 when there is an error.
    Validate(crate::commands::config_check::ValidateArgs),

    /// Write a commented TOML configuration file (mode 0600): interactive on a terminal, else
    /// from flags (one per setting), --set KEY=VALUE, --from-env and --import ENV_FILE.
    /// Validates before writing.
    Init(crate::commands::config_write::InitArgs),

    /// Change one setting in the TOML file, keeping its comments and layout; refuses a value
    /// that would make the configuration invalid.
    Set(crate::commands::config_write::SetArgs),

    /// Print the effective value of one setting, named by environment variable
    /// (CBOB_DEST_BUCKET) or TOML path (dest.bucket). Exits 1 when the setting is not set.
    Get {
        /// The setting, e.g. CBOB_TRANSFERS or transfers
        key: String,

        /// Print the value even when it is a secret
        #[arg(long)]
        unmask: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
    Env,
}

impl From<ShowFormat> for RenderFormat {
    fn from(f: ShowFormat) -> Self {
        match f {
            ShowFormat::Text => RenderFormat::Text,
            ShowFormat::Json => RenderFormat::Json,
            ShowFormat::Env => RenderFormat::Env,
        }
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
