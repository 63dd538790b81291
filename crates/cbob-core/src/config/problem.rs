//! What `load()` reports: where a value came from, and every problem found, each with a fix.

use std::fmt;
use std::path::PathBuf;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// Built-in default computed as described (e.g. `$CBOB_BASE_PATH/backups`).
    Derived(&'static str),
    TomlFile(PathBuf),
    /// Legacy env-file, with the 1-based line that set the value when known.
    EnvFile {
        path: PathBuf,
        line: Option<usize>,
    },
    /// A process environment variable.
    Environment,
    /// A command-line flag, e.g. `--log-level`.
    Flag(String),
    /// Not set anywhere and no default.
    Unset,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived(how) => write!(f, "default ({how})"),
            Origin::TomlFile(path) => write!(f, "TOML file {}", path.display()),
            Origin::EnvFile {
                path,
                line: Some(line),
            } => write!(f, "env-file {}:{line}", path.display()),
            Origin::EnvFile { path, line: None } => write!(f, "env-file {}", path.display()),
            Origin::Environment => f.write_str("environment"),
            Origin::Flag(flag) => write!(f, "command line {flag}"),
            Origin::Unset => f.write_str("not set"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration is usable; the operator should still look.
    Warning,
    /// The configuration is invalid: commands exit 2 before doing anything.
    Error,
}

/// One problem with the configuration. Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub severity: Severity,
    /// The key concerned (environment name, or the TOML path / variable as written), if any.
    pub key: Option<String>,
    /// Where the offending value came from.
    pub origin: Origin,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigProblem {
    pub fn error(
        key: impl Into<Option<String>>,
        origin: Origin,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            key: key.into(),
            origin,
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub fn warning(
        key: impl Into<Option<String>>,
        origin: Origin,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(key, origin, message, fix)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `error: CBOB_DEST_BUCKET (environment): required when CBOB_DEST_TYPE=s3; fix: set CBOB_DEST_BUCKET`
impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: ")?;
        match (&self.key, &self.origin) {
            (Some(key), Origin::Unset) => write!(f, "{key}: ")?,
            (Some(key), origin) => write!(f, "{key} ({origin}): ")?,
            (None, Origin::Unset) => {}
            (None, origin) => write!(f, "{origin}: ")?,
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// An invalid configuration: every error (and warning) found, not just the first.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
    /// What could be resolved anyway, so `config show` can still say where values came from.
    pub resolved: super::Resolved,
}

impl ConfigError {
    pub fn errors(&self) -> impl Iterator<Item = &ConfigProblem> {
        self.problems.iter().filter(|p| p.is_error())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        write!(
            f,
            "invalid configuration ({n} error{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
