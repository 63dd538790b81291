//! What can go wrong running PostgreSQL programs.

use std::path::PathBuf;

/// A failure to find, start or run a PostgreSQL or pgBackRest program.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A required program is missing (exit code 5): what, where cbob looked, how to install it.
    #[error("{program} not found ({looked}); fix: {fix}")]
    MissingProgram {
        program: String,
        looked: String,
        fix: String,
    },
    /// The unprivileged user cannot reach or read something it needs (exit code 3).
    #[error("{0}")]
    Permission(String),
    /// Local I/O on cbob's side.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed, or a server misbehaved; the message says which and why.
    #[error("{0}")]
    Failed(String),
    /// The run was interrupted (Ctrl-C, SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

impl PgError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PgError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// Whether the error is a missing program (exit code 5).
    pub fn is_missing_program(&self) -> bool {
        matches!(self, PgError::MissingProgram { .. })
    }
}
