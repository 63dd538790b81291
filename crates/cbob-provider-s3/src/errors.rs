//! Turns SDK errors into [`StorageError`]s that say what failed, where, whether a retry can help,
//! and what the operator should fix. Messages are built from the operation, the location and the
//! service's error code and message; never from request headers, so no key or token can leak
//! (and known secrets are masked in server messages all the same).

use std::error::Error as StdError;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use cbob_core::storage::{Setting, SettingNames, StorageError, StorageErrorKind};

/// Where an operation ran, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    /// `s3://bucket/prefix at endpoint`.
    pub provider: &'a str,
    pub bucket: &'a str,
    /// Which settings configured the store, named in what to fix.
    pub settings: &'a SettingNames,
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

/// An SDK failure, classified.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: StorageErrorKind,
    /// The service's error code (`NoSuchKey`, `ExpiredToken`, ...).
    pub code: Option<String>,
    pub status: Option<u16>,
    /// The service's message, or the transport error chain.
    pub detail: String,
    /// Fresh credentials may make the request succeed (expired or invalid session token).
    pub refresh: bool,
}

/// Error codes that mean "get new temporary credentials and try again".
fn is_refresh_code(code: &str) -> bool {
    matches!(
        code,
        "ExpiredToken" | "TokenRefreshRequired" | "InvalidToken" | "ExpiredTokenException"
    )
}

/// Classifies by S3 error code first, then by HTTP status.
pub(crate) fn classify_code(code: Option<&str>, status: Option<u16>) -> StorageErrorKind {
    use StorageErrorKind as K;
    if let Some(code) = code {
        let by_code = match code {
            "NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload" | "NoSuchVersion" => {
                Some(K::NotFound)
            }
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" | "InvalidObjectState"
            | "Forbidden" => Some(K::PermissionDenied),
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidSecurity"
            | "MissingSecurityHeader"
            | "InvalidToken"
            | "NotSignedUp"
            | "CredentialsNotSupported" => Some(K::Unauthenticated),
            "ExpiredToken" | "TokenRefreshRequired" | "ExpiredTokenException" => {
                Some(K::CredentialsExpired)
            }
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "RequestThrottled"
            | "ServiceUnavailable" => Some(K::RateLimited),
            "RequestTimeout" | "RequestTimeTooSkewed" => Some(K::Timeout),
            "InternalError" | "InternalFailure" => Some(K::Unavailable),
            "BadDigest"
            | "InvalidDigest"
            | "XAmzContentSHA256Mismatch"
            | "IncompleteBody"
            | "InvalidChecksum" => Some(K::Corrupt),
            "PreconditionFailed" | "ConditionalRequestConflict" | "OperationAborted" => {
                Some(K::Conflict)
            }
            "InvalidBucketName"
            | "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException"
            | "InvalidStorageClass"
            | "KMS.NotFoundException"
            | "KMS.DisabledException" => Some(K::Config),
            "NotImplemented" | "MethodNotAllowed" => Some(K::Unsupported),
            _ => None,
        };
        if let Some(k) = by_code {
            return k;
        }
    }
    match status {
        Some(404) => K::NotFound,
        Some(401) => K::Unauthenticated,
        Some(403) => K::PermissionDenied,
        Some(301 | 307) => K::Config,
        Some(409 | 412) => K::Conflict,
        Some(429 | 503) => K::RateLimited,
        Some(501) => K::Unsupported,
        Some(s) if s >= 500 => K::Unavailable,
        Some(408) => K::Timeout,
        _ => K::Other,
    }
}

pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(_) => {
            let code = err.code().map(str::to_string);
            let status = err.raw_response().map(|r| r.status().as_u16());
            let kind = classify_code(code.as_deref(), status);
            let detail = err.message().map(str::to_string).unwrap_or_default();
            let refresh = code.as_deref().is_some_and(is_refresh_code);
            Failure {
                kind,
                code,
                status,
                detail,
                refresh,
            }
        }
        SdkError::TimeoutError(_) => transport(StorageErrorKind::Timeout, err),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                StorageErrorKind::Timeout
            } else if d.is_user() {
                StorageErrorKind::Config
            } else {
                let text = DisplayErrorContext(err).to_string();
                // A TLS trust failure will not pass by itself; everything else at connection
                // level (refused, reset, DNS hiccup) may.
                if text.contains("certificate") || text.contains("UnknownIssuer") {
                    StorageErrorKind::Config
                } else {
                    StorageErrorKind::Unavailable
                }
            };
            transport(kind, err)
        }
        // The response could not be read or parsed: a cut connection or a proxy's error page.
        SdkError::ResponseError(_) => {
            let mut f = transport(StorageErrorKind::Unavailable, err);
            f.status = err.raw_response().map(|r| r.status().as_u16());
            f
        }
        SdkError::ConstructionFailure(_) => transport(StorageErrorKind::Config, err),
        _ => transport(StorageErrorKind::Other, err),
    }
}

fn transport<E, R>(kind: StorageErrorKind, err: &SdkError<E, R>) -> Failure
where
    E: StdError + 'static,
    R: std::fmt::Debug,
{
    Failure {
        kind,
        code: None,
        status: None,
        detail: DisplayErrorContext(err).to_string(),
        refresh: false,
    }
}

impl Failure {
    /// The error an operator reads: location, explanation, code and status.
    pub(crate) fn into_error(self, ctx: &Ctx<'_>, secrets: &[String]) -> StorageError {
        use StorageErrorKind as K;
        let code = self.code.as_deref().unwrap_or("");
        let tag = match (self.code.as_deref(), self.status) {
            (Some(c), Some(s)) => format!(" ({c}, HTTP {s})"),
            (Some(c), None) => format!(" ({c})"),
            (None, Some(s)) => format!(" (HTTP {s})"),
            (None, None) => String::new(),
        };
        let detail = redact(&self.detail, secrets);
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        let explanation = match self.kind {
            K::NotFound if code == "NoSuchBucket" => format!(
                "bucket '{}' does not exist; create it, or fix the bucket name in {}",
                ctx.bucket,
                ctx.settings.name(Setting::Bucket)
            ),
            K::NotFound => format!("not found{detail}"),
            K::Unauthenticated if code == "InvalidToken" => format!(
                "the session token was rejected as invalid{detail}; check the session token, or that it \
                 belongs to the access key"
            ),
            K::Unauthenticated => format!(
                "the credentials were rejected{detail}; check the access key id and secret key \
                 ({}, or the AWS credential chain)",
                ctx.settings
                    .pair(Setting::AccessKey, Setting::SecretKey, " / ")
            ),
            K::CredentialsExpired => format!("the temporary credentials expired{detail}"),
            K::PermissionDenied => format!(
                "access denied{detail}; the credentials work but lack permission for this operation on \
                 bucket '{}'",
                ctx.bucket
            ),
            K::Config
                if code == "PermanentRedirect"
                    || code == "AuthorizationHeaderMalformed"
                    || self.status == Some(301) =>
            {
                format!(
                    "the bucket is in another region than the one configured{detail}; set the region"
                )
            }
            K::RateLimited => format!("the service asked to slow down{detail}"),
            K::Unavailable | K::Timeout => format!("the service did not answer properly{detail}"),
            K::Corrupt => format!("the service rejected the data as damaged in transit{detail}"),
            _ => format!("failed{detail}"),
        };
        StorageError::new(self.kind, format!("{}: {explanation}{tag}", ctx.location()))
    }
}

/// Masks any known secret that a server chose to echo in a message.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), cbob_core::secret::MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use StorageErrorKind as K;

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (Some("NoSuchKey"), Some(404), K::NotFound),
            (Some("NoSuchBucket"), Some(404), K::NotFound),
            (None, Some(404), K::NotFound),
            (Some("AccessDenied"), Some(403), K::PermissionDenied),
            (None, Some(403), K::PermissionDenied),
            (Some("InvalidAccessKeyId"), Some(403), K::Unauthenticated),
            (Some("SignatureDoesNotMatch"), Some(403), K::Unauthenticated),
            (Some("ExpiredToken"), Some(400), K::CredentialsExpired),
            (Some("SlowDown"), Some(503), K::RateLimited),
            (None, Some(503), K::RateLimited),
            (None, Some(429), K::RateLimited),
            (Some("InternalError"), Some(500), K::Unavailable),
            (None, Some(502), K::Unavailable),
            (Some("RequestTimeout"), Some(400), K::Timeout),
            (Some("BadDigest"), Some(400), K::Corrupt),
            (Some("EntityTooSmall"), Some(400), K::Other),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify_code(code, status), want, "{code:?} {status:?}");
        }
        assert!(K::RateLimited.is_transient() && K::Unavailable.is_transient());
        assert!(
            is_refresh_code("ExpiredToken")
                && is_refresh_code("InvalidToken")
                && !is_refresh_code("AccessDenied")
        );
    }

    #[test]
    fn messages_name_the_fix_and_mask_secrets() {
        let ctx = Ctx {
            provider: "s3://b/p",
            bucket: "b",
            settings: &SettingNames::Destination,
            op: "list",
            key: Some("x/"),
        };
        let f = Failure {
            kind: K::NotFound,
            code: Some("NoSuchBucket".into()),
            status: Some(404),
            detail: "The specified bucket does not exist".into(),
            refresh: false,
        };
        let e = f.into_error(&ctx, &[]);
        assert!(
            e.message().contains("bucket 'b' does not exist")
                && e.message().contains("CBOB_DEST_BUCKET"),
            "{e}"
        );
        let f = Failure {
            kind: K::Unauthenticated,
            code: Some("SignatureDoesNotMatch".into()),
            status: Some(403),
            detail: "signature for secret wJalrXUtnFEMI was wrong".into(),
            refresh: false,
        };
        let e = f.into_error(&ctx, &["wJalrXUtnFEMI".into()]);
        assert!(
            !e.message().contains("wJalrXUtnFEMI")
                && e.message()
                    .contains("CBOB_DEST_ACCESS_KEY / CBOB_DEST_SECRET_KEY"),
            "{e}"
        );
    }

    #[test]
    fn source_and_replica_failures_name_their_own_settings() {
        let rejected = || Failure {
            kind: K::Unauthenticated,
            code: Some("SignatureDoesNotMatch".into()),
            status: Some(403),
            detail: String::new(),
            refresh: false,
        };
        let no_bucket = || Failure {
            kind: K::NotFound,
            code: Some("NoSuchBucket".into()),
            status: Some(404),
            detail: String::new(),
            refresh: false,
        };
        let replica = SettingNames::Replica { name: "eu".into() };
        for (settings, keys, bucket) in [
            (
                &SettingNames::Source,
                "CBOB_SOURCE_ACCESS_KEY / CBOB_SOURCE_SECRET_KEY",
                "the bucket in the --source URL",
            ),
            (
                &replica,
                "`access_key` / `secret_key` of replica \"eu\"",
                "`bucket` of replica \"eu\"",
            ),
        ] {
            let ctx = Ctx {
                provider: "s3://b/p",
                bucket: "b",
                settings,
                op: "list",
                key: None,
            };
            let e = rejected().into_error(&ctx, &[]);
            assert!(e.message().contains(keys), "{e}");
            assert!(!e.message().contains("CBOB_DEST_"), "{e}");
            let e = no_bucket().into_error(&ctx, &[]);
            assert!(e.message().contains(bucket), "{e}");
            assert!(!e.message().contains("CBOB_DEST_"), "{e}");
        }
    }
}
