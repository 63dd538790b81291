//! A provider described in data: what the configuration, a `--source URL` or a replication YAML
//! entry turns into before the registry builds a provider from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::credentials::{AzureCredentials, CredentialSource, S3Credentials};
use super::error::{StorageError, StorageErrorKind, StorageResult};
use crate::secret::Secret;

/// Everything any provider may need; each provider reads the fields that apply to it and
/// rejects a spec that lacks what it requires.
#[derive(Debug, Clone, Default)]
pub struct ProviderSpec {
    /// Provider type: `local`, `s3`, `minio`, `azure`, `gcs`.
    pub kind: String,
    /// Root directory (local).
    pub path: Option<PathBuf>,
    /// Bucket (S3, MinIO, GCS) or container (Azure).
    pub bucket: Option<String>,
    /// Key prefix inside the bucket or container, without leading or trailing `/`.
    pub prefix: String,
    /// Service endpoint override (path-style addressing for S3 when set).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Azure storage account.
    pub account: Option<String>,
    /// GCS project.
    pub project: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Azure SAS token.
    pub sas_token: Option<Secret>,
    /// Service-account JSON (GCS).
    pub credentials_file: Option<PathBuf>,
    pub storage_class: Option<String>,
    /// Provider-specific extras (e.g. `sse`, `kms_key_id`).
    pub options: BTreeMap<String, String>,
    /// Refreshable S3 credentials (a Crunchy Bridge backup token); overrides the static keys.
    pub s3_credentials: Option<Arc<dyn CredentialSource<S3Credentials>>>,
    /// Refreshable Azure credentials (a Crunchy Bridge backup token); overrides key and SAS.
    pub azure_credentials: Option<Arc<dyn CredentialSource<AzureCredentials>>>,
}

impl ProviderSpec {
    /// A local directory.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: "local".into(),
            path: Some(path.into()),
            ..Self::default()
        }
    }

    /// Parses a repository URL: `file:///path` (or an absolute path), `s3://bucket/prefix`,
    /// `minio://bucket/prefix`, `gcs://bucket/prefix` (or `gs://`), `azure://account/container/prefix`.
    pub fn parse_url(url: &str) -> StorageResult<Self> {
        let bad = |why: &str| {
            StorageError::new(
                StorageErrorKind::Config,
                format!(
                    "invalid repository URL {url:?}: {why}; expected file:///path, s3://bucket/prefix, \
                     minio://bucket/prefix, azure://account/container/prefix or gcs://bucket/prefix"
                ),
            )
        };
        if url.starts_with('/') {
            return Ok(Self::local(url));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            if !rest.starts_with('/') {
                return Err(bad("a file URL needs an absolute path (file:///path)"));
            }
            return Ok(Self::local(rest));
        }
        let kind = match scheme.as_str() {
            "s3" => "s3",
            "minio" => "minio",
            "gcs" | "gs" => "gcs",
            "azure" | "az" => "azure",
            other => return Err(bad(&format!("unknown scheme {other:?}"))),
        };
        let mut parts = rest.trim_matches('/').splitn(2, '/');
        let first = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no bucket"))?;
        let remainder = parts.next().unwrap_or("");
        let mut spec = Self {
            kind: kind.into(),
            ..Self::default()
        };
        if kind == "azure" {
            let mut p = remainder.splitn(2, '/');
            let container = p
                .next()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("no container (azure://account/container/prefix)"))?;
            spec.account = Some(first.to_string());
            spec.bucket = Some(container.to_string());
            spec.prefix = normalize_prefix(p.next().unwrap_or(""));
        } else {
            spec.bucket = Some(first.to_string());
            spec.prefix = normalize_prefix(remainder);
        }
        Ok(spec)
    }

    /// A short description without secrets.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "local" => format!(
                "local:{}",
                self.path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            "azure" => format!(
                "azure://{}/{}/{}",
                self.account.as_deref().unwrap_or("?"),
                self.bucket.as_deref().unwrap_or("?"),
                self.prefix
            ),
            kind => format!(
                "{kind}://{}/{}",
                self.bucket.as_deref().unwrap_or("?"),
                self.prefix
            ),
        }
    }
}

/// Strips leading and trailing slashes and collapses nothing else; validation happens in providers.
pub fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let s = ProviderSpec::parse_url("s3://bkt/some/prefix/").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.bucket.as_deref(), s.prefix.as_str()),
            ("s3", Some("bkt"), "some/prefix")
        );
        let s = ProviderSpec::parse_url("file:///srv/repo").unwrap();
        assert_eq!(s.kind, "local");
        assert_eq!(s.path.unwrap(), PathBuf::from("/srv/repo"));
        let s = ProviderSpec::parse_url("azure://acct/cont/p").unwrap();
        assert_eq!(
            (s.account.as_deref(), s.bucket.as_deref(), s.prefix.as_str()),
            (Some("acct"), Some("cont"), "p")
        );
        let s = ProviderSpec::parse_url("gs://b").unwrap();
        assert_eq!((s.kind.as_str(), s.prefix.as_str()), ("gcs", ""));
        assert!(ProviderSpec::parse_url("s3://").is_err());
        assert!(ProviderSpec::parse_url("file://relative").is_err());
        assert!(ProviderSpec::parse_url("bucket/x").is_err());
        assert!(ProviderSpec::parse_url("azure://acct").is_err());
        let e = ProviderSpec::parse_url("ftp://host/repo").unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Config);
        assert!(e.message().contains("unknown scheme \"ftp\""), "{e}");
    }
}
