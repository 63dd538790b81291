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
    /// Which settings the operator wrote this spec with, so errors name those settings.
    pub settings: SettingNames,
}

/// Where a spec's values came from: the destination keys, the `--source` keys, or a replication
/// YAML store. Providers ask it for the name of a setting to put in an error message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SettingNames {
    /// `CBOB_DEST_*` (and `CBOB_TARGET_PATH`).
    #[default]
    Destination,
    /// A `--source URL` with `CBOB_SOURCE_*` credentials.
    Source,
    /// `replication.primary` in a replication YAML.
    ReplicationPrimary,
    /// Replica `name` in a replication YAML.
    Replica { name: String },
}

/// A setting a provider may need fixed, named by its `CBOB_DEST_*` suffix's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Bucket,
    Container,
    Prefix,
    Endpoint,
    Region,
    AccessKey,
    SecretKey,
    AzureAccount,
    AzureKey,
    AzureSas,
    GcsCredentials,
}

impl Setting {
    /// The key suffix after `CBOB_DEST_` / `CBOB_SOURCE_`.
    fn env_suffix(self) -> &'static str {
        match self {
            Setting::Bucket => "BUCKET",
            Setting::Container => "CONTAINER",
            Setting::Prefix => "PREFIX",
            Setting::Endpoint => "ENDPOINT",
            Setting::Region => "REGION",
            Setting::AccessKey => "ACCESS_KEY",
            Setting::SecretKey => "SECRET_KEY",
            Setting::AzureAccount => "AZURE_ACCOUNT",
            Setting::AzureKey => "AZURE_KEY",
            Setting::AzureSas => "AZURE_SAS",
            Setting::GcsCredentials => "GCS_CREDENTIALS",
        }
    }

    /// The field of a replication YAML store (see `replicate::config`): the Azure shared key
    /// travels as `secret_key` there.
    fn yaml_field(self) -> &'static str {
        match self {
            Setting::Bucket => "bucket",
            Setting::Container => "container",
            Setting::Prefix => "prefix",
            Setting::Endpoint => "endpoint",
            Setting::Region => "region",
            Setting::AccessKey => "access_key",
            Setting::SecretKey | Setting::AzureKey => "secret_key",
            Setting::AzureAccount => "storage_account",
            Setting::AzureSas => "sas_token",
            Setting::GcsCredentials => "credentials_file",
        }
    }
}

impl SettingNames {
    fn yaml_owner(&self) -> String {
        match self {
            SettingNames::Replica { name } => format!("replica {name:?}"),
            _ => "replication.primary".into(),
        }
    }

    /// The text naming `setting` in a message: `CBOB_DEST_ACCESS_KEY`,
    /// `CBOB_SOURCE_ACCESS_KEY`, `` `access_key` of replica "eu" ``. A `--source` takes its
    /// bucket, container, account and prefix from the URL, so those name the URL.
    pub fn name(&self, setting: Setting) -> String {
        match self {
            SettingNames::Destination => format!("CBOB_DEST_{}", setting.env_suffix()),
            SettingNames::Source => match setting {
                Setting::Bucket => "the bucket in the --source URL".into(),
                Setting::Container => "the container in the --source URL".into(),
                Setting::AzureAccount => "the storage account in the --source URL".into(),
                Setting::Prefix => "the prefix in the --source URL".into(),
                other => format!("CBOB_SOURCE_{}", other.env_suffix()),
            },
            SettingNames::ReplicationPrimary | SettingNames::Replica { .. } => {
                format!("`{}` of {}", setting.yaml_field(), self.yaml_owner())
            }
        }
    }

    /// Two settings that go together, e.g. `CBOB_SOURCE_ACCESS_KEY and CBOB_SOURCE_SECRET_KEY`
    /// or `` `access_key` and `secret_key` of replica "eu" ``.
    pub fn pair(&self, a: Setting, b: Setting, joiner: &str) -> String {
        match self {
            SettingNames::ReplicationPrimary | SettingNames::Replica { .. } => format!(
                "`{}`{joiner}`{}` of {}",
                a.yaml_field(),
                b.yaml_field(),
                self.yaml_owner()
            ),
            _ => format!("{}{joiner}{}", self.name(a), self.name(b)),
        }
    }
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

    #[test]
    fn setting_names_follow_the_origin() {
        use Setting::*;
        assert_eq!(SettingNames::default(), SettingNames::Destination);
        let d = SettingNames::Destination;
        assert_eq!(d.name(AccessKey), "CBOB_DEST_ACCESS_KEY");
        assert_eq!(d.name(AzureSas), "CBOB_DEST_AZURE_SAS");
        let s = SettingNames::Source;
        assert_eq!(s.name(SecretKey), "CBOB_SOURCE_SECRET_KEY");
        assert_eq!(s.name(GcsCredentials), "CBOB_SOURCE_GCS_CREDENTIALS");
        assert_eq!(s.name(Bucket), "the bucket in the --source URL");
        let r = SettingNames::Replica { name: "eu".into() };
        assert_eq!(r.name(AzureKey), "`secret_key` of replica \"eu\"");
        assert_eq!(r.name(AzureAccount), "`storage_account` of replica \"eu\"");
        assert_eq!(
            r.pair(AccessKey, SecretKey, " and "),
            "`access_key` and `secret_key` of replica \"eu\""
        );
        assert_eq!(
            s.pair(AccessKey, SecretKey, " / "),
            "CBOB_SOURCE_ACCESS_KEY / CBOB_SOURCE_SECRET_KEY"
        );
        assert_eq!(
            SettingNames::ReplicationPrimary.name(AzureSas),
            "`sas_token` of replication.primary"
        );
    }
}
