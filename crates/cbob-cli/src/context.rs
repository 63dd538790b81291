//! Turning the command line into a loaded configuration and a logger, for every command.
//!
//! A command that does work calls [`load`] first: it reads every configuration source with the
//! command's flags on top, and on any configuration error returns exit code 2 before anything
//! else happens. Then logging is set up from the configuration and its warnings are logged.

use cbob_core::config::{self, Config, ConfigSources};
use cbob_core::logging::{self, LogSettings};

use crate::cli::GlobalArgs;
use crate::exit_code::CliError;

/// The configuration sources of this process with the global flags, then `overrides` (a
/// command's own flags, e.g. `--transfers`), applied on top.
pub fn sources(global: &GlobalArgs, overrides: impl FnOnce(&mut ConfigSources)) -> ConfigSources {
    let mut sources = ConfigSources::from_process();
    global.apply(&mut sources);
    overrides(&mut sources);
    sources
}

/// Loads and validates the configuration, sets up logging, logs the warnings.
/// Any configuration error is returned as a [`CliError`] with exit code 2.
pub fn load(
    global: &GlobalArgs,
    overrides: impl FnOnce(&mut ConfigSources),
) -> Result<Config, CliError> {
    let config = config::load(&sources(global, overrides))?;
    init_logging(&config, global.quiet)?;
    Ok(config)
}

/// Sets up logging from a valid configuration and logs its warnings and (at debug) the
/// configuration itself, secrets masked.
pub fn init_logging(config: &Config, quiet: bool) -> Result<(), CliError> {
    let mut settings = LogSettings::from_config(&config.log);
    settings.quiet = quiet;
    logging::init(&settings)?;
    for warning in &config.warnings {
        tracing::warn!(key = warning.key.as_deref(), origin = %warning.origin, fix = %warning.fix, "{}", warning.message);
    }
    tracing::debug!(?config, "configuration loaded");
    Ok(())
}
