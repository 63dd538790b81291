//! Errors of the Crunchy Bridge client. Each names the cluster it concerns (when there is one)
//! so the caller can report that cluster as failed and carry on with the others, and none ever
//! contains the API key: messages are built from status codes, field names and ids, and any
//! text taken from a response is passed through [`redact`] first.

use crate::storage::{StorageError, StorageErrorKind};

/// What went wrong talking to the Crunchy Bridge API.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// HTTP 401/403: the key is wrong, revoked or lacks access.
    #[error(
        "the Crunchy Bridge API rejected the API key; check CBOB_CRUNCHY_API_KEY (HTTP {status} while {what})"
    )]
    Unauthorized { status: u16, what: String },

    /// HTTP 404 on a cluster's endpoint.
    #[error(
        "Crunchy Bridge cluster {cluster} not found (HTTP 404); check the id given in --cluster or CBOB_CRUNCHY_CLUSTERS"
    )]
    ClusterNotFound { cluster: String },

    /// HTTP 429 or 5xx that did not go away after retrying.
    #[error(
        "the Crunchy Bridge API kept failing while {what}: HTTP {status} after {attempts} attempts"
    )]
    Unavailable {
        what: String,
        status: u16,
        attempts: u32,
    },

    /// Any other unexpected HTTP status.
    #[error("the Crunchy Bridge API answered HTTP {status} while {what}: {detail}")]
    Http {
        what: String,
        status: u16,
        detail: String,
    },

    /// The API could not be reached (DNS, refused, reset, timeout), after retrying.
    #[error("could not reach the Crunchy Bridge API while {what} ({attempts} attempts): {detail}")]
    Network {
        what: String,
        attempts: u32,
        detail: String,
    },

    /// The response is not the JSON document SPEC §4 describes.
    #[error("the Crunchy Bridge API sent an unexpected response while {what}: {detail}")]
    MalformedResponse { what: String, detail: String },

    /// A backup token of a storage type cbob does not know.
    #[error(
        "the backup token for cluster {cluster} has unknown type {kind:?}; cbob supports \"s3\" and \"azure\""
    )]
    UnknownTokenType { cluster: String, kind: String },

    /// A backup token without a field cbob needs.
    #[error(
        "the backup token for cluster {cluster} is incomplete: field {field} is missing or empty"
    )]
    MissingField {
        cluster: String,
        field: &'static str,
    },

    /// A backup token whose values cannot be used safely (bad stanza, path, names).
    #[error("the backup token for cluster {cluster} is invalid: {reason}")]
    InvalidToken { cluster: String, reason: String },

    /// A refreshed token that points somewhere else than the first one.
    #[error(
        "a refreshed backup token for cluster {cluster} points to {now}, not {before}; refusing to switch repositories mid-run"
    )]
    TokenChanged {
        cluster: String,
        before: String,
        now: String,
    },

    /// A cluster id that is not lowercase letters and digits.
    #[error("invalid cluster id {id:?}: Crunchy Bridge ids are lowercase letters and digits")]
    InvalidClusterId { id: String },

    /// No API key was configured.
    #[error("no Crunchy Bridge API key is configured; set CBOB_CRUNCHY_API_KEY")]
    MissingApiKey,

    /// The API base URL cannot be used.
    #[error("invalid Crunchy Bridge API URL {url:?}: {reason}; check CBOB_CRUNCHY_API_URL")]
    InvalidBaseUrl { url: String, reason: String },
}

impl BridgeError {
    /// The API key was rejected: every other cluster will fail the same way.
    pub fn is_auth_error(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }

    /// The cluster does not exist (or is not visible with this key).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::ClusterNotFound { .. })
    }

    /// The API or the network failed in a way that may pass later (already retried).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Network { .. })
    }

    /// The token or response could not be understood (a Bridge change or a bug, not a retry).
    pub fn is_invalid_response(&self) -> bool {
        matches!(
            self,
            Self::MalformedResponse { .. }
                | Self::UnknownTokenType { .. }
                | Self::MissingField { .. }
                | Self::InvalidToken { .. }
                | Self::TokenChanged { .. }
        )
    }

    /// A usage or configuration problem (exit code 2 territory).
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidClusterId { .. } | Self::InvalidBaseUrl { .. }
        )
    }

    /// The cluster this error is about, when it is about one.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Self::ClusterNotFound { cluster }
            | Self::UnknownTokenType { cluster, .. }
            | Self::MissingField { cluster, .. }
            | Self::InvalidToken { cluster, .. }
            | Self::TokenChanged { cluster, .. } => Some(cluster),
            Self::InvalidClusterId { id } => Some(id),
            _ => None,
        }
    }

    /// The storage error kind a credential refresh failure maps to.
    fn storage_kind(&self) -> StorageErrorKind {
        match self {
            Self::Unauthorized { .. } => StorageErrorKind::Unauthenticated,
            Self::ClusterNotFound { .. } => StorageErrorKind::NotFound,
            Self::Unavailable { status: 429, .. } => StorageErrorKind::RateLimited,
            Self::Unavailable { .. } | Self::Network { .. } => StorageErrorKind::Unavailable,
            Self::InvalidClusterId { .. } | Self::InvalidBaseUrl { .. } | Self::MissingApiKey => {
                StorageErrorKind::Config
            }
            _ => StorageErrorKind::Other,
        }
    }
}

impl From<BridgeError> for StorageError {
    fn from(e: BridgeError) -> Self {
        StorageError::new(
            e.storage_kind(),
            format!("refreshing Crunchy Bridge credentials: {e}"),
        )
        .with_source(e)
    }
}

/// Removes `secret` from text that came from elsewhere (a response body, a library error)
/// before it goes into an error; a server or proxy echoing the request must not leak the key.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.len() < 4 {
        // Too short to search for without mangling ordinary text; it cannot be a real key.
        return text.to_string();
    }
    text.replace(secret, crate::secret::MASK)
}

/// At most `max` characters of a response body, on one line, for an error message.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > max {
        format!("{}...", one_line.chars().take(max).collect::<String>())
    } else if one_line.is_empty() {
        "(empty body)".to_string()
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_messages() {
        let e = BridgeError::Unauthorized {
            status: 401,
            what: "listing teams".into(),
        };
        assert!(e.is_auth_error() && !e.is_transient());
        assert!(e.to_string().contains("check CBOB_CRUNCHY_API_KEY"), "{e}");
        let e = BridgeError::ClusterNotFound {
            cluster: "abc".into(),
        };
        assert!(e.is_not_found());
        assert_eq!(e.cluster(), Some("abc"));
        assert!(e.to_string().contains("abc"));
        let s: StorageError = BridgeError::Unavailable {
            what: "x".into(),
            status: 503,
            attempts: 3,
        }
        .into();
        assert_eq!(s.kind(), StorageErrorKind::Unavailable);
        assert!(s.is_transient());
    }

    #[test]
    fn redacts_and_shortens() {
        assert_eq!(
            redact("echo: Bearer key-1234 end", "key-1234"),
            "echo: Bearer *** end"
        );
        assert_eq!(snippet(b"a\n  b", 10), "a b");
        assert_eq!(snippet(b"0123456789abc", 5), "01234...");
        assert_eq!(snippet(b"", 5), "(empty body)");
    }
}
