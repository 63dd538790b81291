//! Exit codes (SPEC §6) and the mapping from error types to them. Every command returns
//! `Result<ExitCode, CliError>`; `main` prints the error and exits with its code.

use std::fmt;
use std::io;

use cbob_core::config::{ConfigError, ConfigProblem};
use cbob_core::logging::LoggingError;
use cbob_core::storage::{StorageError, StorageErrorKind};

/// The process exit status; scripts and monitoring depend on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    /// The work failed (any cluster, stanza or replica).
    Failure = 1,
    /// Configuration or usage error; nothing was done.
    Usage = 2,
    /// Permission denied (files, directories, or the storage refused an operation).
    Permission = 3,
    /// Another run holds the lock.
    Locked = 4,
    /// A required program is missing (pgbackrest, PostgreSQL binaries of the needed version).
    MissingProgram = 5,
}

impl ExitCode {
    pub const ALL: [ExitCode; 6] = [
        ExitCode::Success,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Permission,
        ExitCode::Locked,
        ExitCode::MissingProgram,
    ];

    /// What the code means, for `--help` and docs.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Failure => "the work failed (any cluster, stanza or replica)",
            ExitCode::Usage => "configuration or usage error; nothing was done",
            ExitCode::Permission => "permission error",
            ExitCode::Locked => "another run holds the lock",
            ExitCode::MissingProgram => {
                "a required program is missing (pgbackrest, PostgreSQL binaries)"
            }
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error that ends the command: a message for stderr and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Failure, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Usage, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        Self::usage(err.to_string())
    }
}

impl From<ConfigProblem> for CliError {
    fn from(problem: ConfigProblem) -> Self {
        Self::usage(problem.to_string())
    }
}

/// The exit code for a storage error: configuration (bad spec, provider compiled out) is 2,
/// refused access is 3, anything else means the work failed.
pub fn for_storage(kind: StorageErrorKind) -> ExitCode {
    match kind {
        StorageErrorKind::Config => ExitCode::Usage,
        StorageErrorKind::PermissionDenied => ExitCode::Permission,
        _ => ExitCode::Failure,
    }
}

impl From<StorageError> for CliError {
    fn from(err: StorageError) -> Self {
        Self::new(for_storage(err.kind()), err.to_string())
    }
}

/// Local I/O: permission problems are 3, the rest 1.
pub fn for_io(kind: io::ErrorKind) -> ExitCode {
    match kind {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => ExitCode::Permission,
        _ => ExitCode::Failure,
    }
}

impl From<io::Error> for CliError {
    fn from(err: io::Error) -> Self {
        Self::new(for_io(err.kind()), err.to_string())
    }
}

impl From<LoggingError> for CliError {
    fn from(err: LoggingError) -> Self {
        let code = err
            .io_error()
            .map_or(ExitCode::Failure, |e| for_io(e.kind()));
        Self::new(code, format!("{err} (check CBOB_LOG_PATH)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_spec() {
        assert_eq!(ExitCode::ALL.map(|c| c as u8), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn error_mapping() {
        let storage = |kind| CliError::from(StorageError::new(kind, "x")).code;
        assert_eq!(storage(StorageErrorKind::Config), ExitCode::Usage);
        assert_eq!(
            storage(StorageErrorKind::PermissionDenied),
            ExitCode::Permission
        );
        assert_eq!(storage(StorageErrorKind::Unavailable), ExitCode::Failure);
        let io = |kind| CliError::from(io::Error::from(kind)).code;
        assert_eq!(io(io::ErrorKind::PermissionDenied), ExitCode::Permission);
        assert_eq!(io(io::ErrorKind::NotFound), ExitCode::Failure);
        let log = LoggingError::CreateDir {
            path: "/x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(CliError::from(log).code, ExitCode::Permission);
    }
}
