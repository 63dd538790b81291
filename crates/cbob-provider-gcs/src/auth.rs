//! Builds the `gcloud-storage` client: cbob's HTTP settings, and credentials from a key file
//! (checked here so a wrong file gets a precise message) or none for an emulator.

use std::time::Duration;

use cbob_core::storage::{StorageError, StorageErrorKind, StorageResult};
use gcloud_storage::client::google_cloud_auth::credentials::CredentialsFile;
use gcloud_storage::client::google_cloud_auth::error::Error as AuthError;
use gcloud_storage::client::{Client, ClientConfig};

use crate::config::{GcsAuth, GcsConfig};
use crate::errors::{Ctx, Failure};

/// Account types the key file may hold (gcloud-auth's other types need features not built in).
const SUPPORTED_TYPES: &[&str] = &["service_account", "authorized_user"];

/// The HTTP client every request goes through.
fn http_client(cfg: &GcsConfig) -> StorageResult<reqwest_middleware::ClientWithMiddleware> {
    let client = reqwest::Client::builder()
        // Only a connect timeout: a chunk may legitimately take minutes under a bandwidth limit.
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Duration::from_secs(30))
        .tcp_nodelay(true)
        // A resumable upload answers 308 for "send more"; it must never be followed as a redirect.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            StorageError::new(
                StorageErrorKind::Config,
                format!("{}: cannot build the HTTP client: {e}", cfg.describe()),
            )
        })?;
    Ok(reqwest_middleware::ClientBuilder::new(client).build())
}

/// Builds the client. With a credentials file this fetches the first access token, so a key
/// that the token service refuses fails here, before any work starts. Also returns who the
/// client acts as (`anonymous`, or a fingerprint of the service account's e-mail or of the file),
/// for server-side copies between buckets.
pub(crate) async fn client(cfg: &GcsConfig) -> StorageResult<(Client, String)> {
    let config = ClientConfig {
        storage_endpoint: cfg.endpoint.clone(),
        http: Some(http_client(cfg)?),
        ..ClientConfig::default()
    };
    match &cfg.auth {
        GcsAuth::Anonymous => Ok((Client::new(config.anonymous()), "anonymous".to_string())),
        GcsAuth::CredentialsFile { path, setting } => {
            let describe = cfg.describe();
            let bad = |why: String| {
                StorageError::new(
                    StorageErrorKind::Config,
                    format!(
                        "{describe}: credentials file {} (from {setting}) {why}",
                        path.display()
                    ),
                )
            };
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                let fix = match e.kind() {
                    std::io::ErrorKind::NotFound => "does not exist; fix the path",
                    std::io::ErrorKind::PermissionDenied => {
                        "is not readable by this user; fix its permissions"
                    }
                    _ => "cannot be read",
                };
                bad(format!("{fix} ({e})"))
            })?;
            // serde_json's messages give a position, never the content (which holds a private key).
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "is not valid JSON ({e}); download the service account's JSON key again"
                ))
            })?;
            let kind = json.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if !SUPPORTED_TYPES.contains(&kind) {
                return Err(bad(format!(
                    "has type {kind:?}; cbob needs a service-account JSON key (\"type\": \"service_account\")"
                )));
            }
            if kind == "service_account" {
                for field in ["client_email", "private_key"] {
                    if json
                        .get(field)
                        .and_then(|v| v.as_str())
                        .is_none_or(str::is_empty)
                    {
                        return Err(bad(format!(
                            "has no {field:?}; download a new JSON key for the service account"
                        )));
                    }
                }
            }
            let who = match json.get("client_email").and_then(|v| v.as_str()) {
                Some(email) => format!("account:{email}"),
                None => format!("file:{}", path.display()),
            };
            let identity = cbob_core::replicate::identity_fingerprint(&who);
            let credentials = CredentialsFile::new_from_str(&text)
                .await
                .map_err(|e| bad(format!("cannot be parsed ({e})")))?;
            let config = config.with_credentials(credentials).await.map_err(|e| {
                let credentials_setting = format!("{setting} ({})", path.display());
                let ctx = Ctx {
                    provider: &describe,
                    bucket: &cfg.bucket,
                    settings: &cfg.settings,
                    credentials_setting: &credentials_setting,
                    anonymous: false,
                    op: "authenticate",
                    key: None,
                };
                auth_failure(e).into_error(&ctx)
            })?;
            Ok((Client::new(config), identity))
        }
    }
}

/// Classifies a failure to obtain the first token.
fn auth_failure(e: AuthError) -> Failure {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    crate::errors::classify(
        gcloud_storage::http::Error::TokenSource(boxed),
        crate::errors::NotFoundMeans::Object,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbob_core::storage::{ProviderSpec, SettingNames};

    /// A bad key file is reported with the setting that named it, for each kind of origin.
    #[tokio::test]
    async fn a_bad_credentials_file_names_the_setting_it_came_from() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let not_json = dir.join("not-json.json");
        std::fs::write(&not_json, "this is not json").unwrap();
        let replica = SettingNames::Replica {
            name: "asia".into(),
        };
        for (settings, want) in [
            (
                SettingNames::Destination,
                "(from CBOB_DEST_GCS_CREDENTIALS)",
            ),
            (SettingNames::Source, "(from CBOB_SOURCE_GCS_CREDENTIALS)"),
            (replica, "(from `credentials_file` of replica \"asia\")"),
        ] {
            for (path, why) in [
                (not_json.clone(), "is not valid JSON"),
                (dir.join("missing.json"), "does not exist"),
            ] {
                let spec = ProviderSpec {
                    kind: "gcs".into(),
                    bucket: Some("bkt".into()),
                    credentials_file: Some(path),
                    settings: settings.clone(),
                    ..ProviderSpec::default()
                };
                let cfg = GcsConfig::from_spec_with_env(&spec, |_| None).unwrap();
                let e = client(&cfg)
                    .await
                    .err()
                    .expect("a bad key file must fail")
                    .to_string();
                assert!(e.contains(want) && e.contains(why), "{e}");
                if settings != SettingNames::Destination {
                    assert!(!e.contains("CBOB_DEST_"), "{e}");
                }
            }
        }
    }
}
