//! Request authentication the official SDK does not offer: Shared Key signing (the SDK 1.x only
//! speaks Entra ID tokens) as a per-try pipeline policy, and SAS tokens, which simply ride in the
//! URL query. Plus a per-call policy that adds a transactional `Content-MD5` to a single Put Blob,
//! which the SDK's one-shot upload has no option for.
//!
//! Shared Key: <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use cbob_core::Secret;
use cbob_core::storage::{Setting, SettingNames};

/// Signs every try of a request with the account key (each retry gets a fresh `x-ms-date`).
pub(crate) struct SharedKeyPolicy {
    account: String,
    key: azure_core::credentials::Secret,
}

impl SharedKeyPolicy {
    pub(crate) fn new(account: &str, key: &Secret) -> Self {
        Self {
            account: account.to_string(),
            key: azure_core::credentials::Secret::new(key.expose().to_string()),
        }
    }
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never appears in Debug output.
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let now = azure_core::time::OffsetDateTime::now_utc();
        request.insert_header("x-ms-date", azure_core::time::to_rfc7231(&now));
        let to_sign = string_to_sign(request, &self.account);
        let signature = azure_core::hmac::hmac_sha256(&to_sign, &self.key)?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The Shared Key string to sign of a Blob service request (service version 2009-09-19 and
/// later): verb, the standard headers in their fixed order, the canonicalized `x-ms-*` headers,
/// then the canonicalized resource.
pub(crate) fn string_to_sign(request: &Request, account: &str) -> String {
    let headers = request.headers();
    let header = |name: &'static str| -> String {
        headers
            .get_optional_str(&HeaderName::from_static(name))
            .unwrap_or("")
            .to_string()
    };
    // Content-Length is empty, not "0", for an empty body.
    let content_length = match headers.get_optional_str(&HeaderName::from_static("content-length"))
    {
        Some(len) => len.to_string(),
        None => request.body().len().unwrap_or(0).to_string(),
    };
    let content_length = if content_length == "0" {
        String::new()
    } else {
        content_length
    };
    let mut s = String::with_capacity(512);
    s.push_str(request.method().as_str());
    s.push('\n');
    for value in [
        header("content-encoding"),
        header("content-language"),
        content_length,
        header("content-md5"),
        header("content-type"),
        String::new(), // Date: x-ms-date is sent instead, and signed below
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        s.push_str(&value);
        s.push('\n');
    }
    let ms_headers: BTreeMap<String, String> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                value.as_str().trim().to_string(),
            )
        })
        .collect();
    for (name, value) in &ms_headers {
        s.push_str(name);
        s.push(':');
        s.push_str(value);
        s.push('\n');
    }
    s.push_str(&canonicalized_resource(request.url(), account));
    s
}

/// `/<account><encoded path>` then each query parameter, name lowercased and sorted, values
/// decoded, sorted and comma-joined: `\nname:v1,v2`. Path-style servers (Azurite) repeat the
/// account, because it is also the first path segment.
fn canonicalized_resource(url: &url::Url, account: &str) -> String {
    let mut s = format!("/{account}{}", url.path());
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in params {
        values.sort();
        s.push('\n');
        s.push_str(&name);
        s.push(':');
        s.push_str(&values.join(","));
    }
    s
}

/// An MD5 the service must check a single Put Blob's body against (`Content-MD5`), handed to
/// [`TransactionalMd5Policy`] through the call's context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransactionalMd5(pub [u8; 16]);

/// Adds `Content-MD5` from the context. Per call, so it is in place before the per-try signing.
#[derive(Debug)]
pub(crate) struct TransactionalMd5Policy;

#[async_trait]
impl Policy for TransactionalMd5Policy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Some(TransactionalMd5(md5)) = ctx.value::<TransactionalMd5>() {
            request.insert_header("content-md5", azure_core::base64::encode(md5));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Checks that an account key is what the portal shows (base64) without revealing it.
pub(crate) fn check_shared_key(key: &str, names: &SettingNames) -> Result<(), String> {
    match azure_core::base64::decode(key.trim()) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => Err(format!(
            "the shared key is not valid base64; copy the storage account's access key (key1 or \
             key2) into {} as shown by the portal or `az storage account keys list`",
            names.name(Setting::AzureKey)
        )),
    }
}

/// A SAS token as the query string it becomes: without a leading `?`, and with a signature.
pub(crate) fn normalize_sas(token: &Secret, names: &SettingNames) -> Result<Secret, String> {
    let t = token.expose().trim().trim_start_matches('?');
    let has_sig =
        url::form_urlencoded::parse(t.as_bytes()).any(|(k, v)| k == "sig" && !v.is_empty());
    if !has_sig {
        return Err(format!(
            "the SAS token has no signature (sig=...); paste the whole token, e.g. \
             sv=...&sr=c&sp=racwdl&se=...&sig=..., into {}",
            names.name(Setting::AzureSas)
        ));
    }
    Ok(Secret::new(t))
}

/// Strings that must never appear in a message: the key or token, and a SAS signature both as
/// sent (percent-encoded) and decoded.
pub(crate) fn secret_strings(
    creds: &cbob_core::storage::credentials::AzureCredentials,
) -> Vec<String> {
    use cbob_core::storage::credentials::AzureCredentials as C;
    match creds {
        C::SharedKey { key, .. } => vec![key.expose().to_string()],
        C::Sas { token, .. } => {
            let t = token.expose().trim_start_matches('?').to_string();
            let mut v = vec![t.clone()];
            for part in t.split('&') {
                if let Some(raw) = part.strip_prefix("sig=") {
                    v.push(raw.to_string());
                    if let Some((_, decoded)) =
                        url::form_urlencoded::parse(part.as_bytes()).find(|(k, _)| k == "sig")
                    {
                        v.push(decoded.into_owned());
                    }
                }
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    #[test]
    fn string_to_sign_follows_the_shared_key_layout() {
        let url = url::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/cont/dir/a%20b+c?comp=block&blockid=QUJD%2BLw%3D%3D&timeout=30",
        )
        .unwrap();
        let mut r = Request::new(url, Method::Put);
        r.insert_header("content-length", "5");
        r.insert_header("content-md5", "XUFAKrxLKna5cZ2REBfFkg==");
        r.insert_header("content-type", "application/octet-stream");
        r.insert_header("x-ms-version", "2026-04-06");
        r.insert_header("x-ms-date", "Tue, 24 Nov 2026 05:07:00 GMT");
        r.insert_header("x-ms-client-request-id", "  id-1 ");
        let s = string_to_sign(&r, "devstoreaccount1");
        assert_eq!(
            s,
            "PUT\n\n\n5\nXUFAKrxLKna5cZ2REBfFkg==\napplication/octet-stream\n\n\n\n\n\n\n\
             x-ms-client-request-id:id-1\nx-ms-date:Tue, 24 Nov 2026 05:07:00 GMT\nx-ms-version:2026-04-06\n\
             /devstoreaccount1/devstoreaccount1/cont/dir/a%20b+c\nblockid:QUJD+Lw==\ncomp:block\ntimeout:30"
        );
        // An empty body signs an empty Content-Length, not "0".
        let url =
            url::Url::parse("https://acct.blob.core.windows.net/cont?restype=container").unwrap();
        let mut r = Request::new(url, Method::Get);
        r.insert_header("content-length", "0");
        r.insert_header("range", "bytes=0-9");
        let s = string_to_sign(&r, "acct");
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-9\n/acct/cont\nrestype:container"
        );
    }

    #[test]
    fn keys_and_tokens() {
        let dest = &SettingNames::Destination;
        check_shared_key("Zm9vYmFy", dest).unwrap();
        let e = check_shared_key("***not base64***", dest).unwrap_err();
        assert!(e.contains("CBOB_DEST_AZURE_KEY"), "{e}");
        assert!(check_shared_key("", dest).is_err());
        let t = normalize_sas(&Secret::new("?sv=2022-11-02&sr=c&sig=a%2Bb%3D"), dest).unwrap();
        assert_eq!(t.expose(), "sv=2022-11-02&sr=c&sig=a%2Bb%3D");
        let e = normalize_sas(&Secret::new("sv=2022-11-02&sr=c"), dest).unwrap_err();
        assert!(e.contains("CBOB_DEST_AZURE_SAS"), "{e}");
        // A --source or a replica is told to fix its own setting.
        let e = check_shared_key("***", &SettingNames::Source).unwrap_err();
        assert!(
            e.contains("CBOB_SOURCE_AZURE_KEY") && !e.contains("CBOB_DEST_"),
            "{e}"
        );
        let replica = SettingNames::Replica { name: "w".into() };
        let e = normalize_sas(&Secret::new("sv=1"), &replica).unwrap_err();
        assert!(e.contains("`sas_token` of replica \"w\""), "{e}");
        let secrets = secret_strings(&cbob_core::storage::credentials::AzureCredentials::Sas {
            account: "a".into(),
            token: t,
        });
        assert!(secrets.contains(&"a%2Bb%3D".to_string()) && secrets.contains(&"a+b=".to_string()));
        let p = SharedKeyPolicy::new("acct", &Secret::new("c2VjcmV0LWtleQ=="));
        assert!(!format!("{p:?}").contains("c2VjcmV0"));
    }
}
