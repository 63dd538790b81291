//! Turns `gcloud-storage` errors into [`StorageError`]s that say what failed, where, whether a
//! retry can help, and what the operator should fix.
//!
//! Messages are built from the operation, the location, the HTTP status and the service's own
//! message. Transport errors are rendered **without their URL**: a resumable-upload session URL
//! carries an `upload_id` that authorises writes to the object, so it is treated as a secret.
//! Access tokens travel only in headers, which no message ever includes.

use std::error::Error as StdError;

use cbob_core::storage::{Setting, SettingNames, StorageError, StorageErrorKind};
use gcloud_storage::client::google_cloud_auth::error::Error as AuthError;
use gcloud_storage::http::Error as GcsError;

/// Where an operation ran, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    /// `gcs://bucket/prefix at endpoint`.
    pub provider: &'a str,
    pub bucket: &'a str,
    /// Which settings configured the store, named in what to fix.
    pub settings: &'a SettingNames,
    /// The setting that named the credentials, for authentication failures.
    pub credentials_setting: &'a str,
    /// Requests carry no credentials (only an endpoint was configured).
    pub anonymous: bool,
    /// `head`, `get`, `put`, ...
    pub op: &'static str,
    /// The provider-relative key or prefix, when the operation has one.
    pub key: Option<&'a str>,
}

impl Ctx<'_> {
    fn location(&self) -> String {
        match self.key {
            Some(k) => format!("{}: {} {k:?}", self.provider, self.op),
            None => format!("{}: {}", self.provider, self.op),
        }
    }
}

/// What a 404 means for the operation that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotFoundMeans {
    /// Listing or creating: only the bucket can be missing.
    Bucket,
    /// Reading or deleting one object: the object, unless the service says it was the bucket.
    Object,
}

/// A failure, classified.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: StorageErrorKind,
    pub status: Option<u16>,
    /// The service's message, or the transport error chain (without URLs).
    pub detail: String,
    /// A 404 that is about the bucket, not an object.
    pub bucket_missing: bool,
    /// The access token could not be obtained (the credentials file or its account).
    pub token: bool,
}

impl Failure {
    /// The HTTP status said "range not satisfiable" (a read starting past the end).
    pub(crate) fn is_range_not_satisfiable(&self) -> bool {
        self.status == Some(416)
    }
}

/// Kind for an HTTP status.
pub(crate) fn kind_for_status(status: u16) -> StorageErrorKind {
    use StorageErrorKind as K;
    match status {
        404 | 410 => K::NotFound,
        401 => K::Unauthenticated,
        403 => K::PermissionDenied,
        408 => K::Timeout,
        409 | 412 => K::Conflict,
        429 => K::RateLimited,
        501 => K::Unsupported,
        500..=599 => K::Unavailable,
        // 400 covers bad arguments, which a retry will not fix.
        _ => K::Other,
    }
}

/// The error chain of a transport failure, without the request URL.
fn transport_detail(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn classify_reqwest(e: reqwest::Error) -> Failure {
    use StorageErrorKind as K;
    let status = e.status().map(|s| s.as_u16());
    let kind = if let Some(s) = status {
        kind_for_status(s)
    } else if e.is_timeout() {
        K::Timeout
    } else if e.is_builder() {
        K::Config
    } else {
        let text = transport_detail_ref(&e);
        // A TLS trust failure will not pass by itself; a refused or reset connection may.
        if text.contains("certificate") || text.contains("UnknownIssuer") {
            K::Config
        } else {
            K::Unavailable
        }
    };
    Failure {
        kind,
        status,
        detail: transport_detail(e),
        bucket_missing: false,
        token: false,
    }
}

fn transport_detail_ref(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&s.to_string());
        text.push(' ');
        source = s.source();
    }
    text
}

/// Why an access token could not be had: the account or key is refused (not transient), or
/// the token service could not be reached (transient).
fn classify_token(err: &(dyn StdError + Send + Sync + 'static)) -> Failure {
    use StorageErrorKind as K;
    let (kind, status, detail) = match err.downcast_ref::<AuthError>() {
        Some(AuthError::TokenErrorResponse {
            status,
            error,
            error_description,
        }) => {
            let kind = match *status {
                429 => K::RateLimited,
                500..=599 => K::Unavailable,
                _ => K::Unauthenticated,
            };
            (kind, Some(*status), format!("{error}: {error_description}"))
        }
        Some(AuthError::HttpError(e)) => {
            let status = e.status().map(|s| s.as_u16());
            let kind = match status {
                Some(s @ (429 | 500..=599)) => kind_for_status(s),
                Some(_) => K::Unauthenticated,
                None => K::Unavailable,
            };
            let detail = format!("token request failed: {}", transport_detail_ref(e).trim());
            (kind, status, detail)
        }
        Some(AuthError::JwtError(e)) => (K::Config, None, format!("cannot sign with the key: {e}")),
        Some(other) => (K::Unauthenticated, None, other.to_string()),
        None => (K::Unauthenticated, None, err.to_string()),
    };
    Failure {
        kind,
        status,
        detail,
        bucket_missing: false,
        token: true,
    }
}

/// Classifies a client error for an operation whose 404 means `nf`.
pub(crate) fn classify(err: GcsError, nf: NotFoundMeans) -> Failure {
    let mut f = match err {
        GcsError::Response(r) => Failure {
            kind: kind_for_status(r.code),
            status: Some(r.code),
            detail: r.message.clone(),
            bucket_missing: false,
            token: false,
        },
        GcsError::HttpClient(e) => classify_reqwest(e),
        GcsError::RawResponse(e, detail) => {
            let mut f = classify_reqwest(e);
            f.detail = detail;
            f
        }
        GcsError::TokenSource(e) => classify_token(&*e),
        GcsError::HttpMiddleware(e) => Failure {
            kind: StorageErrorKind::Unavailable,
            status: None,
            detail: e.to_string(),
            bucket_missing: false,
            token: false,
        },
        GcsError::InvalidRangeHeader(h) => Failure {
            kind: StorageErrorKind::Other,
            status: None,
            detail: format!("the service sent an unreadable Range header {h:?}"),
            bucket_missing: false,
            token: false,
        },
    };
    if f.kind == StorageErrorKind::NotFound {
        // Real GCS says "The specified bucket does not exist."; an emulator only "Not Found".
        f.bucket_missing =
            nf == NotFoundMeans::Bucket || f.detail.to_ascii_lowercase().contains("bucket");
    }
    f
}

impl Failure {
    /// The error an operator reads: location, explanation and status.
    pub(crate) fn into_error(self, ctx: &Ctx<'_>) -> StorageError {
        use StorageErrorKind as K;
        let tag = match self.status {
            Some(s) => format!(" (HTTP {s})"),
            None => String::new(),
        };
        let detail = if self.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", self.detail)
        };
        let explanation = match self.kind {
            K::NotFound if self.bucket_missing => format!(
                "bucket '{}' does not exist; create it, or fix the bucket name in {}",
                ctx.bucket,
                ctx.settings.name(Setting::Bucket)
            ),
            K::NotFound => format!("not found{detail}"),
            K::Unauthenticated if self.token => format!(
                "could not get an access token with the credentials in {}{detail}; check that the \
                 key file is current and its service account still exists",
                ctx.credentials_setting
            ),
            K::Unauthenticated | K::PermissionDenied if ctx.anonymous => format!(
                "the service refused an anonymous request{detail}; set {} (or \
                 GOOGLE_APPLICATION_CREDENTIALS) to a service-account JSON key that may use bucket '{}'",
                ctx.settings.name(Setting::GcsCredentials),
                ctx.bucket
            ),
            K::Unauthenticated => format!(
                "the credentials were rejected{detail}; check the service-account key in {}",
                ctx.credentials_setting
            ),
            K::PermissionDenied => format!(
                "access denied{detail}; the service account in {} works but lacks permission for \
                 this operation on bucket '{}' (it needs roles/storage.objectAdmin or equivalent)",
                ctx.credentials_setting, ctx.bucket
            ),
            K::Config if self.token => format!(
                "the key in {} cannot be used{detail}; download a new JSON key for the service account",
                ctx.credentials_setting
            ),
            K::RateLimited => format!("the service asked to slow down{detail}"),
            K::Unavailable | K::Timeout if self.token => {
                format!("the token service did not answer properly{detail}")
            }
            K::Unavailable | K::Timeout => format!("the service did not answer properly{detail}"),
            K::Conflict => format!("a precondition failed{detail}"),
            _ => format!("failed{detail}"),
        };
        StorageError::new(self.kind, format!("{}: {explanation}{tag}", ctx.location()))
    }
}

/// Classifies and explains in one step.
pub(crate) fn to_storage_error(err: GcsError, nf: NotFoundMeans, ctx: &Ctx<'_>) -> StorageError {
    classify(err, nf).into_error(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use StorageErrorKind as K;
    use gcloud_storage::http::error::ErrorResponse;

    fn ctx() -> Ctx<'static> {
        Ctx {
            provider: "gcs://b/p",
            bucket: "b",
            settings: &SettingNames::Destination,
            credentials_setting: "CBOB_DEST_GCS_CREDENTIALS",
            anonymous: false,
            op: "list",
            key: Some("x/"),
        }
    }

    fn response(code: u16, message: &str) -> GcsError {
        GcsError::Response(ErrorResponse {
            code,
            errors: Vec::new(),
            message: message.into(),
        })
    }

    #[test]
    fn statuses_map_to_kinds() {
        let cases = [
            (404, K::NotFound),
            (410, K::NotFound),
            (401, K::Unauthenticated),
            (403, K::PermissionDenied),
            (408, K::Timeout),
            (412, K::Conflict),
            (429, K::RateLimited),
            (500, K::Unavailable),
            (503, K::Unavailable),
            (501, K::Unsupported),
            (400, K::Other),
        ];
        for (status, want) in cases {
            assert_eq!(
                classify(response(status, "x"), NotFoundMeans::Object).kind,
                want,
                "{status}"
            );
        }
        assert!(
            K::RateLimited.is_transient()
                && K::Unavailable.is_transient()
                && K::Timeout.is_transient()
        );
        assert!(!K::PermissionDenied.is_transient() && !K::Unauthenticated.is_transient());
    }

    #[test]
    fn a_missing_bucket_names_the_bucket_and_the_setting() {
        // Listing: any 404 is the bucket.
        let e = to_storage_error(response(404, "Not Found"), NotFoundMeans::Bucket, &ctx());
        assert_eq!(e.kind(), K::NotFound);
        assert!(
            e.message().contains("bucket 'b' does not exist")
                && e.message().contains("CBOB_DEST_BUCKET"),
            "{e}"
        );
        // Reading: the object, unless the service says bucket.
        let e = to_storage_error(
            response(404, "No such object: b/p/x"),
            NotFoundMeans::Object,
            &ctx(),
        );
        assert!(!e.message().contains("does not exist;"), "{e}");
        let e = to_storage_error(
            response(404, "The specified bucket does not exist."),
            NotFoundMeans::Object,
            &ctx(),
        );
        assert!(e.message().contains("bucket 'b' does not exist"), "{e}");
    }

    #[test]
    fn auth_failures_name_the_credentials_setting() {
        let e = to_storage_error(
            response(401, "Invalid Credentials"),
            NotFoundMeans::Object,
            &ctx(),
        );
        assert_eq!(e.kind(), K::Unauthenticated);
        assert!(e.message().contains("CBOB_DEST_GCS_CREDENTIALS"), "{e}");
        let e = to_storage_error(
            response(
                403,
                "sa@p.iam.gserviceaccount.com does not have storage.objects.list access",
            ),
            NotFoundMeans::Object,
            &ctx(),
        );
        assert_eq!(e.kind(), K::PermissionDenied);
        assert!(
            e.message().contains("lacks permission") && e.message().contains("HTTP 403"),
            "{e}"
        );
        let token = GcsError::TokenSource(Box::new(AuthError::TokenErrorResponse {
            status: 400,
            error: "invalid_grant".into(),
            error_description: "Invalid JWT Signature.".into(),
        }));
        let e = to_storage_error(token, NotFoundMeans::Object, &ctx());
        assert_eq!(e.kind(), K::Unauthenticated);
        assert!(
            e.message().contains("access token") && e.message().contains("invalid_grant"),
            "{e}"
        );
        let anonymous = Ctx {
            anonymous: true,
            ..ctx()
        };
        let e = to_storage_error(
            response(403, "Forbidden"),
            NotFoundMeans::Object,
            &anonymous,
        );
        assert_eq!(e.kind(), K::PermissionDenied);
        assert!(
            e.message().contains("anonymous request")
                && e.message().contains("CBOB_DEST_GCS_CREDENTIALS"),
            "{e}"
        );
        let token = GcsError::TokenSource(Box::new(AuthError::TokenErrorResponse {
            status: 503,
            error: "unavailable".into(),
            error_description: "try later".into(),
        }));
        assert!(to_storage_error(token, NotFoundMeans::Object, &ctx()).is_transient());
    }

    #[test]
    fn a_replica_failure_names_the_replica_fields() {
        let replica = SettingNames::Replica {
            name: "asia".into(),
        };
        let anonymous = Ctx {
            settings: &replica,
            anonymous: true,
            ..ctx()
        };
        let e = to_storage_error(
            response(401, "Login Required"),
            NotFoundMeans::Object,
            &anonymous,
        );
        assert!(
            e.message()
                .contains("`credentials_file` of replica \"asia\"")
                && !e.message().contains("CBOB_DEST_"),
            "{e}"
        );
        let e = to_storage_error(
            response(404, "Not Found"),
            NotFoundMeans::Bucket,
            &anonymous,
        );
        assert!(
            e.message().contains("`bucket` of replica \"asia\"")
                && !e.message().contains("CBOB_DEST_"),
            "{e}"
        );
    }
}
