//! Turns Azure SDK errors into [`StorageError`]s that say what failed, where, whether a retry can
//! help, and what the operator should fix. Messages are built from the operation, the location
//! and the service's error code and message, never from request headers or URLs (a SAS token is
//! part of every URL); known secrets are masked in whatever text the service or transport sent.

use azure_core::error::ErrorKind as AzKind;
use cbob_core::storage::{Setting, SettingNames, StorageError, StorageErrorKind};

/// Where an operation ran, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    /// `azure://account/container/prefix at endpoint`.
    pub provider: &'a str,
    pub container: &'a str,
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
    /// The service's error code (`BlobNotFound`, `AuthenticationFailed`, ...).
    pub code: Option<String>,
    pub status: Option<u16>,
    /// The service's message (first line), or the transport error chain.
    pub detail: String,
    /// Fresh credentials may make the request succeed (rejected key, expired SAS).
    pub refresh: bool,
    /// Retrying the whole operation may help although the kind alone says otherwise.
    pub transient: bool,
}

/// Classifies by Azure error code first, then by HTTP status.
pub(crate) fn classify_code(code: Option<&str>, status: Option<u16>) -> StorageErrorKind {
    use StorageErrorKind as K;
    if let Some(code) = code {
        let by_code = match code {
            "BlobNotFound" | "ContainerNotFound" | "ResourceNotFound" => Some(K::NotFound),
            "AuthenticationFailed"
            | "NoAuthenticationInformation"
            | "InvalidAuthenticationInfo" => Some(K::Unauthenticated),
            "AuthorizationFailure"
            | "AuthorizationPermissionMismatch"
            | "AuthorizationResourceTypeMismatch"
            | "AuthorizationServiceMismatch"
            | "AuthorizationSourceIPMismatch"
            | "InsufficientAccountPermissions"
            | "AccountIsDisabled"
            | "KeyBasedAuthenticationNotPermitted" => Some(K::PermissionDenied),
            "ServerBusy" | "TooManyRequests" => Some(K::RateLimited),
            "OperationTimedOut" => Some(K::Timeout),
            "InternalError" => Some(K::Unavailable),
            "Md5Mismatch" | "InvalidMd5" | "Crc64Mismatch" | "InvalidContentLength" => {
                Some(K::Corrupt)
            }
            "ConditionNotMet"
            | "BlobAlreadyExists"
            | "InvalidBlockList"
            | "BlobArchived"
            | "BlobBeingRehydrated"
            | "ContainerBeingDeleted"
            | "PendingCopyOperation"
            | "LeaseIdMissing"
            | "LeaseAlreadyPresent"
            | "CopyIdMismatch" => Some(K::Conflict),
            "AuthorizationProtocolMismatch"
            | "InvalidResourceName"
            | "InvalidBlobTier"
            | "InvalidHeaderValue"
            | "UnsupportedHeader"
            | "InvalidUri"
            | "FeatureVersionMismatch" => Some(K::Config),
            "APINotImplemented" | "NotImplemented" => Some(K::Unsupported),
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
        Some(409 | 412) => K::Conflict,
        Some(429 | 503) => K::RateLimited,
        Some(501) => K::Unsupported,
        Some(408) => K::Timeout,
        Some(s) if s >= 500 => K::Unavailable,
        _ => K::Other,
    }
}

/// The first line of the `<Message>` of an Azure XML error body (later lines are request ids
/// and times, and the `AuthenticationErrorDetail` can echo what was signed).
fn service_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Message>")? + "<Message>".len();
    let end = start + text[start..].find("</Message>")?;
    let first = text[start..end].lines().next()?.trim();
    Some(
        first
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Renders an error and its sources on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub(crate) fn classify(err: &azure_core::Error) -> Failure {
    match err.kind() {
        AzKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let code = error_code.clone().filter(|c| !c.is_empty());
            let detail = raw_response
                .as_ref()
                .and_then(|r| service_message(r.body()))
                .unwrap_or_default();
            let mut kind = classify_code(code.as_deref(), Some(status));
            // Azurite answers an expired or foreign SAS, and a wrongly signed HEAD (which has no
            // body to explain it), with AuthorizationFailure; Azure's own AuthorizationFailure
            // (firewall, network or policy rules) says "not authorized" in its message.
            if code.as_deref() == Some("AuthorizationFailure") && !detail.contains("not authorized")
            {
                kind = StorageErrorKind::Unauthenticated;
            }
            // A HEAD response has no body, and Azurite sends no `x-ms-error-code` with it: a bare
            // 403 is most likely a rejected signature, so it is reported (and refreshed) as one.
            if status == 403 && code.is_none() {
                kind = StorageErrorKind::Unauthenticated;
            }
            let refresh = status == 403
                && matches!(
                    code.as_deref(),
                    Some("AuthenticationFailed" | "AuthorizationFailure") | None
                );
            // A commit whose blocks were discarded by a concurrent writer's commit works when the
            // transfer is simply done again.
            let transient = kind.is_transient() || code.as_deref() == Some("InvalidBlockList");
            Failure {
                kind,
                code,
                status: Some(status),
                detail,
                refresh,
                transient,
            }
        }
        other => {
            let detail = chain(err);
            let lower = detail.to_ascii_lowercase();
            let kind = match other {
                _ if lower.contains("timed out") || lower.contains("timeout") => {
                    StorageErrorKind::Timeout
                }
                AzKind::Connection | AzKind::Io => {
                    if lower.contains("certificate") || lower.contains("unknownissuer") {
                        StorageErrorKind::Config // a TLS trust failure does not pass by itself
                    } else {
                        StorageErrorKind::Unavailable
                    }
                }
                AzKind::Credential => StorageErrorKind::Unauthenticated,
                AzKind::DataConversion => StorageErrorKind::Other,
                _ => StorageErrorKind::Other,
            };
            Failure {
                kind,
                code: None,
                status: None,
                detail,
                refresh: false,
                transient: kind.is_transient(),
            }
        }
    }
}

impl Failure {
    /// The error an operator reads: location, explanation with the fix, code and status.
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
            K::NotFound if code == "ContainerNotFound" => format!(
                "container '{}' does not exist; create it (e.g. `az storage container create \
                 --name {}`), or fix the container name in {}",
                ctx.container,
                ctx.container,
                ctx.settings.name(Setting::Container)
            ),
            K::NotFound => format!("not found{detail}"),
            K::Unauthenticated => format!(
                "the credentials were rejected{detail}; check the storage account name and the \
                 account key ({}) or SAS token ({}): a SAS must be for this container, not \
                 expired, and signed by a current account key",
                ctx.settings.name(Setting::AzureKey),
                ctx.settings.name(Setting::AzureSas)
            ),
            K::PermissionDenied => format!(
                "access denied{detail}; the credentials work but may not do this on container \
                 '{}' (a SAS needs the permissions racwdl; check firewall and network rules)",
                ctx.container
            ),
            K::Conflict if code == "BlobArchived" || code == "BlobBeingRehydrated" => format!(
                "the blob is in the Archive access tier{detail}; rehydrate it (set its tier to \
                 Hot or Cool) before reading it"
            ),
            K::Config if code == "AuthorizationProtocolMismatch" => format!(
                "the SAS token only allows HTTPS{detail}; use an https:// endpoint or a SAS \
                 signed with spr=https,http"
            ),
            K::Config if code == "InvalidBlobTier" => format!(
                "the access tier is not available here{detail}; choose another storage class \
                 (Hot, Cool, Cold, Archive) or none"
            ),
            K::RateLimited => format!("the service asked to slow down{detail}"),
            K::Unavailable | K::Timeout => format!("the service did not answer properly{detail}"),
            K::Corrupt => format!("the service rejected the data as damaged in transit{detail}"),
            K::Unsupported => format!("the service does not support this operation{detail}"),
            _ => format!("failed{detail}"),
        };
        StorageError::new(self.kind, format!("{}: {explanation}{tag}", ctx.location()))
            .with_transient(self.transient)
    }
}

/// Masks any known secret that a server or transport error chose to echo, and the value of any
/// `sig=` query parameter (a URL in a transport error carries the SAS, re-encoded as the HTTP
/// stack saw fit, so matching the known strings alone is not enough).
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), cbob_core::secret::MASK);
        }
    }
    mask_sig_params(&out)
}

fn mask_sig_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        // Only a query parameter: at the start of a query or after `&`.
        let is_param = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&');
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        if is_param {
            let end = rest
                .find(|c: char| c == '&' || c == ')' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            if end > 0 {
                out.push_str(cbob_core::secret::MASK);
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use StorageErrorKind as K;

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (Some("BlobNotFound"), Some(404), K::NotFound),
            (Some("ContainerNotFound"), Some(404), K::NotFound),
            (None, Some(404), K::NotFound),
            (Some("AuthenticationFailed"), Some(403), K::Unauthenticated),
            (
                Some("AuthorizationPermissionMismatch"),
                Some(403),
                K::PermissionDenied,
            ),
            (None, Some(403), K::PermissionDenied),
            (Some("ServerBusy"), Some(503), K::RateLimited),
            (None, Some(503), K::RateLimited),
            (Some("InternalError"), Some(500), K::Unavailable),
            (Some("OperationTimedOut"), Some(500), K::Timeout),
            (None, Some(502), K::Unavailable),
            (Some("Md5Mismatch"), Some(400), K::Corrupt),
            (Some("BlobArchived"), Some(409), K::Conflict),
            (Some("InvalidBlobTier"), Some(400), K::Config),
            (Some("APINotImplemented"), Some(501), K::Unsupported),
            (Some("SomethingNew"), Some(400), K::Other),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify_code(code, status), want, "{code:?} {status:?}");
        }
    }

    #[test]
    fn service_messages_are_trimmed_to_their_first_line() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:abc\nTime:2026</Message><AuthenticationErrorDetail>sig=SECRET</AuthenticationErrorDetail></Error>";
        assert_eq!(
            service_message(body).as_deref(),
            Some("Server failed to authenticate the request.")
        );
        assert_eq!(service_message(b"not xml"), None);
    }

    #[test]
    fn messages_name_the_fix_and_mask_secrets() {
        let ctx = Ctx {
            provider: "azure://acct/cont/p",
            container: "cont",
            settings: &SettingNames::Destination,
            op: "list",
            key: Some("x/"),
        };
        let f = Failure {
            kind: K::NotFound,
            code: Some("ContainerNotFound".into()),
            status: Some(404),
            detail: "The specified container does not exist.".into(),
            refresh: false,
            transient: false,
        };
        let e = f.into_error(&ctx, &[]);
        assert!(
            e.message().contains("container 'cont' does not exist")
                && e.message().contains("CBOB_DEST_CONTAINER"),
            "{e}"
        );
        let f = Failure {
            kind: K::Unavailable,
            code: None,
            status: None,
            detail: "error sending request for url (http://h/c/b?sv=1&sig=abcd%2Bef)".into(),
            refresh: false,
            transient: true,
        };
        let e = f.into_error(&ctx, &["abcd%2Bef".into()]);
        assert!(
            !e.message().contains("abcd%2Bef") && e.is_transient(),
            "{e}"
        );
        // A signature the stack re-encoded is still masked.
        let e = redact("url (http://h/c?sv=1&sig=abcd%2bef&se=2) failed", &[]);
        assert_eq!(e, "url (http://h/c?sv=1&sig=***&se=2) failed");
        assert_eq!(redact("design=ok", &[]), "design=ok");
    }

    #[test]
    fn a_source_failure_names_the_source_settings() {
        let ctx = Ctx {
            provider: "azure://acct/cont/p",
            container: "cont",
            settings: &SettingNames::Source,
            op: "list",
            key: None,
        };
        let f = Failure {
            kind: K::Unauthenticated,
            code: Some("AuthenticationFailed".into()),
            status: Some(403),
            detail: String::new(),
            refresh: false,
            transient: false,
        };
        let e = f.into_error(&ctx, &[]);
        assert!(
            e.message().contains("CBOB_SOURCE_AZURE_KEY")
                && e.message().contains("CBOB_SOURCE_AZURE_SAS")
                && !e.message().contains("CBOB_DEST_"),
            "{e}"
        );
    }
}
