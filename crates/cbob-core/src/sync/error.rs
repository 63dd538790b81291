//! Why a stanza's sync failed.

use crate::repo::RepoError;
use crate::storage::StorageError;

/// A failure that stops one stanza's sync (other stanzas and clusters go on).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading or writing an object failed.
    #[error("{context}: {source}")]
    Storage {
        context: String,
        #[source]
        source: StorageError,
    },
    /// A repository file could not be read or failed its own checksum.
    #[error("{context}: {source}")]
    Repo {
        context: String,
        #[source]
        source: RepoError,
    },
    /// Copied bytes did not match pgBackRest's checksum, after every retry. Nothing was published.
    #[error(
        "verification failed for {key} after {attempts} attempt(s): {message}; the object was not published"
    )]
    Verification {
        key: String,
        attempts: u32,
        message: String,
    },
    /// The source repository is not in a state that can be mirrored safely.
    #[error("source repository: {0}")]
    Source(String),
    /// The destination failed the post-sync check.
    #[error("post-sync validation of the destination failed: {0}")]
    Validation(String),
    /// A bug: a transfer task panicked or was cancelled. Nothing it was writing was published.
    #[error("internal error: {0}; please report this as a bug")]
    Internal(String),
}

impl SyncError {
    pub fn storage(context: impl Into<String>, source: StorageError) -> Self {
        Self::Storage {
            context: context.into(),
            source,
        }
    }

    pub fn repo(context: impl Into<String>, source: RepoError) -> Self {
        Self::Repo {
            context: context.into(),
            source,
        }
    }

    /// The underlying storage error, when there is one (e.g. to map to an exit code).
    pub fn storage_error(&self) -> Option<&StorageError> {
        match self {
            Self::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}
