//! The storage error type every provider returns. It says what failed, where, and whether
//! retrying could help; the retry layer and the CLI's exit codes are driven by [`StorageErrorKind`].

use std::fmt;

/// What kind of failure a storage operation met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageErrorKind {
    /// The object, bucket or container does not exist.
    NotFound,
    /// The credentials are valid but not allowed to do this.
    PermissionDenied,
    /// The credentials were rejected (wrong key, bad signature).
    Unauthenticated,
    /// Temporary credentials expired; refresh them and try again.
    CredentialsExpired,
    /// A key or prefix broke the key rules; nothing was done.
    InvalidKey,
    /// The provider cannot do this (e.g. server-side copy).
    Unsupported,
    /// Provider configuration is wrong (bad endpoint URL, missing bucket name, ...).
    Config,
    /// The server asked us to slow down (HTTP 429, S3 SlowDown).
    RateLimited,
    /// The server or the network failed in a way that may pass (5xx, reset, refused).
    Unavailable,
    /// The operation took too long.
    Timeout,
    /// The bytes read or written do not match what was expected (size, checksum).
    Corrupt,
    /// A precondition failed (object changed, already exists).
    Conflict,
    /// A local I/O error that is not one of the above.
    Io,
    /// Anything else; not retried.
    Other,
}

impl StorageErrorKind {
    /// Whether an error of this kind may succeed when simply retried after a pause.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::RateLimited | Self::Unavailable | Self::Timeout)
    }

    /// A short name used in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::PermissionDenied => "permission denied",
            Self::Unauthenticated => "authentication failed",
            Self::CredentialsExpired => "credentials expired",
            Self::InvalidKey => "invalid key",
            Self::Unsupported => "unsupported",
            Self::Config => "configuration error",
            Self::RateLimited => "rate limited",
            Self::Unavailable => "service unavailable",
            Self::Timeout => "timed out",
            Self::Corrupt => "data mismatch",
            Self::Conflict => "conflict",
            Self::Io => "I/O error",
            Self::Other => "error",
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a storage provider or layer.
///
/// The message must never contain a secret: providers build it from operation, location and the
/// server's error code, not from request headers or URLs with signatures.
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
    transient: bool,
    source: Option<Source>,
}

impl StorageError {
    /// An error of `kind`; transient exactly when the kind is.
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            transient: kind.is_transient(),
            source: None,
        }
    }

    /// Attaches the underlying cause (shown in the error chain).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Overrides whether this error is worth retrying (e.g. an `Io` error that is a reset connection).
    pub fn with_transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    /// Prefixes the message with context, e.g. the provider and key.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying after a pause may help.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(StorageErrorKind::NotFound, format!("{what}: not found"))
    }

    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(
            StorageErrorKind::Unsupported,
            format!("{what} is not supported by this provider"),
        )
    }

    pub fn corrupt(what: impl fmt::Display) -> Self {
        Self::new(StorageErrorKind::Corrupt, what.to_string())
    }

    /// Maps a local I/O error, classifying the kinds that matter.
    pub fn from_io(err: std::io::Error, what: impl fmt::Display) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => StorageErrorKind::NotFound,
            K::PermissionDenied | K::ReadOnlyFilesystem => StorageErrorKind::PermissionDenied,
            K::TimedOut => StorageErrorKind::Timeout,
            K::Interrupted
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => StorageErrorKind::Unavailable,
            K::AlreadyExists => StorageErrorKind::Conflict,
            _ => StorageErrorKind::Io,
        };
        Self::new(kind, format!("{what}: {err}")).with_source(err)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("transient", &self.transient)
            .finish()
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;
