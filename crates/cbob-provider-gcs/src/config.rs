//! What a [`crate::GcsProvider`] is built from: a [`ProviderSpec`] turned into typed settings,
//! with the GCS defaults and the rules for where credentials come from.

use std::path::PathBuf;
use std::time::Duration;

use cbob_core::layers::RetryPolicy;
use cbob_core::storage::{
    ProviderSpec, Setting, SettingNames, StorageError, StorageErrorKind, StorageResult,
};

/// The public JSON API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Resumable-upload chunks other than the last must be a multiple of this (GCS rule).
pub const CHUNK_ALIGN: u64 = 256 * 1024;
/// Largest object GCS stores.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Storage classes GCS accepts on writes (the last three are legacy names it still takes).
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "NEARLINE",
    "COLDLINE",
    "ARCHIVE",
    "MULTI_REGIONAL",
    "REGIONAL",
    "DURABLE_REDUCED_AVAILABILITY",
];

/// How requests are authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcsAuth {
    /// No credentials at all: only for an emulator (fake-gcs-server) or public buckets.
    Anonymous,
    /// A service-account (or `gcloud auth application-default login` user) JSON key file,
    /// exchanged for OAuth access tokens, which are refreshed before they expire.
    CredentialsFile {
        path: PathBuf,
        /// The setting the path came from, named in every error about the file.
        setting: String,
    },
}

/// Settings of one GCS provider.
#[derive(Debug, Clone)]
pub struct GcsConfig {
    pub bucket: String,
    /// Object-name prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The JSON API endpoint (`https://storage.googleapis.com`, or an emulator / private endpoint).
    pub endpoint: String,
    pub auth: GcsAuth,
    /// Storage class for writes when `PutOptions` names none (`NEARLINE`, ...); `None` keeps the
    /// bucket's default class.
    pub storage_class: Option<String>,
    /// Bodies up to this size are read into memory and sent as one request whose metadata carries
    /// their MD5 and CRC32C, which GCS checks before it creates the object; larger ones go through
    /// a resumable upload in chunks.
    pub single_upload_limit: u64,
    /// Resumable-upload chunk size (a multiple of 256 KiB). One chunk uploads while the next is
    /// read from the body, so at most two are in memory per upload.
    pub chunk_size: u64,
    /// How one upload request (a chunk, or a whole small object) is retried on a transient
    /// failure before the put fails. Other operations are retried by core's retry layer, which
    /// cannot replay a streamed body.
    pub upload_retry: RetryPolicy,
    /// Objects per listing page (GCS allows up to 1000).
    pub list_page_size: i32,
    /// Which settings configured this store, so errors name the ones the operator wrote.
    pub settings: SettingNames,
}

impl GcsConfig {
    /// Settings for `bucket` with the defaults: public endpoint, 8 MiB single-upload limit and
    /// chunks, three retries per upload request.
    pub fn new(bucket: impl Into<String>, auth: GcsAuth) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            auth,
            storage_class: None,
            single_upload_limit: 8 * 1024 * 1024,
            chunk_size: 8 * 1024 * 1024,
            upload_retry: RetryPolicy {
                max_retries: 3,
                initial_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(8),
            },
            list_page_size: 1000,
            settings: SettingNames::default(),
        }
    }

    /// Reads a spec, taking `GOOGLE_APPLICATION_CREDENTIALS` from the process environment.
    pub fn from_spec(spec: &ProviderSpec) -> StorageResult<Self> {
        Self::from_spec_with_env(spec, |name| std::env::var(name).ok())
    }

    /// Reads a spec: bucket (required), prefix, endpoint, credentials and storage class.
    ///
    /// Credentials, first match wins: the spec's credentials file (`CBOB_DEST_GCS_CREDENTIALS`),
    /// else `GOOGLE_APPLICATION_CREDENTIALS` (looked up through `env`), else anonymous when an
    /// endpoint is given (an emulator), else a configuration error that says what to set.
    pub fn from_spec_with_env(
        spec: &ProviderSpec,
        env: impl Fn(&str) -> Option<String>,
    ) -> StorageResult<Self> {
        let config_err = |msg: String| StorageError::new(StorageErrorKind::Config, msg);
        let names = &spec.settings;
        let bucket = spec
            .bucket
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                config_err(format!(
                    "{}: no bucket given; set {}",
                    spec.describe(),
                    names.name(Setting::Bucket)
                ))
            })?;
        validate_bucket_name(bucket).map_err(|why| {
            config_err(format!(
                "{}: bucket name {bucket:?} is not a valid GCS bucket name ({why}); fix {}",
                spec.describe(),
                names.name(Setting::Bucket)
            ))
        })?;
        let endpoint = spec
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(ep) = &endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(config_err(format!(
                "{}: endpoint {ep:?} must start with http:// or https:// (fix {})",
                spec.describe(),
                names.name(Setting::Endpoint)
            )));
        }
        let auth = match (
            &spec.credentials_file,
            env("GOOGLE_APPLICATION_CREDENTIALS"),
        ) {
            (Some(path), _) => GcsAuth::CredentialsFile {
                path: path.clone(),
                setting: names.name(Setting::GcsCredentials),
            },
            (None, Some(path)) if !path.trim().is_empty() => GcsAuth::CredentialsFile {
                path: PathBuf::from(path.trim()),
                setting: "GOOGLE_APPLICATION_CREDENTIALS".into(),
            },
            _ if endpoint.is_some() => GcsAuth::Anonymous,
            _ => {
                return Err(config_err(format!(
                    "{}: no GCS credentials; set {} (or GOOGLE_APPLICATION_CREDENTIALS) \
                     to a service-account JSON key file, or set {} to use an emulator \
                     without credentials",
                    spec.describe(),
                    names.name(Setting::GcsCredentials),
                    names.name(Setting::Endpoint)
                )));
            }
        };
        let mut c = Self::new(bucket, auth);
        c.settings = names.clone();
        c.prefix = spec.prefix.trim_matches('/').to_string();
        if let Some(ep) = endpoint {
            c.endpoint = ep;
        }
        c.storage_class = spec
            .storage_class
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                normalize_storage_class(s)
                    .map_err(|m| config_err(format!("{}: {m}", spec.describe())))
            })
            .transpose()?;
        for key in spec.options.keys() {
            tracing::warn!(option = %key, provider = %spec.describe(), "ignoring unknown GCS option");
        }
        Ok(c)
    }

    /// `gcs://bucket/prefix`, plus the endpoint when it is not Google's. No secrets.
    pub fn describe(&self) -> String {
        let mut d = format!("gcs://{}", self.bucket);
        if !self.prefix.is_empty() {
            d.push('/');
            d.push_str(&self.prefix);
        }
        if self.endpoint != DEFAULT_ENDPOINT {
            d.push_str(&format!(" at {}", self.endpoint));
        }
        d
    }

    /// The full object name of a provider-relative key.
    pub(crate) fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(crate) fn validate(&self) -> StorageResult<()> {
        let bad = |m: String| {
            Err(StorageError::new(
                StorageErrorKind::Config,
                format!("{}: {m}", self.describe()),
            ))
        };
        if self.chunk_size < CHUNK_ALIGN || !self.chunk_size.is_multiple_of(CHUNK_ALIGN) {
            return bad(format!(
                "chunk size {} is not a positive multiple of 256 KiB, as GCS requires",
                self.chunk_size
            ));
        }
        if self.single_upload_limit > 64 * 1024 * 1024 {
            return bad(
                "the single-upload limit is above 64 MiB; such bodies are held in memory".into(),
            );
        }
        if !(1..=1000).contains(&self.list_page_size) {
            return bad("the listing page size must be between 1 and 1000".into());
        }
        if let Some(class) = &self.storage_class {
            normalize_storage_class(class).map_err(|m| {
                StorageError::new(
                    StorageErrorKind::Config,
                    format!("{}: {m}", self.describe()),
                )
            })?;
        }
        Ok(())
    }
}

/// Upper-cases a storage class (`nearline` → `NEARLINE`) and checks GCS knows it.
pub fn normalize_storage_class(class: &str) -> Result<String, String> {
    let upper = class.trim().to_ascii_uppercase();
    if STORAGE_CLASSES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "storage class {class:?} is not one GCS knows; use one of STANDARD, NEARLINE, COLDLINE, ARCHIVE"
        ))
    }
}

/// GCS bucket naming rules, checked before any request so a typo gets a precise message
/// rather than a 400 from the service.
fn validate_bucket_name(name: &str) -> Result<(), &'static str> {
    let len = name.len();
    if !(3..=222).contains(&len) {
        return Err("3 to 63 characters, or up to 222 with dots");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only lowercase letters, digits, '-', '_' and '.'");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[len - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return Err("it must start and end with a letter or digit");
    }
    if name
        .split('.')
        .any(|part| part.is_empty() || part.len() > 63)
    {
        return Err("each dot-separated part is 1 to 63 characters");
    }
    if !name.contains('.') && len > 63 {
        return Err("3 to 63 characters without dots");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProviderSpec {
        ProviderSpec {
            kind: "gcs".into(),
            bucket: Some("bkt".into()),
            prefix: "/repo/".into(),
            ..ProviderSpec::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn credentials_come_from_the_file_then_the_environment_then_the_endpoint() {
        // Nothing at all: a configuration error naming both settings and the emulator escape.
        let e = GcsConfig::from_spec_with_env(&spec(), no_env).unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Config);
        for needle in [
            "CBOB_DEST_GCS_CREDENTIALS",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CBOB_DEST_ENDPOINT",
        ] {
            assert!(e.message().contains(needle), "{e}");
        }
        // The standard variable.
        let gac =
            |n: &str| (n == "GOOGLE_APPLICATION_CREDENTIALS").then(|| "/keys/sa.json".to_string());
        let c = GcsConfig::from_spec_with_env(&spec(), gac).unwrap();
        assert_eq!(
            c.auth,
            GcsAuth::CredentialsFile {
                path: "/keys/sa.json".into(),
                setting: "GOOGLE_APPLICATION_CREDENTIALS".into()
            }
        );
        assert_eq!(
            (c.prefix.as_str(), c.endpoint.as_str()),
            ("repo", DEFAULT_ENDPOINT)
        );
        // The explicit file beats the variable, even with an endpoint.
        let mut s = spec();
        s.credentials_file = Some("/etc/cbob/gcs.json".into());
        s.endpoint = Some("https://storage.example.internal/".into());
        let c = GcsConfig::from_spec_with_env(&s, gac).unwrap();
        assert!(matches!(
            &c.auth,
            GcsAuth::CredentialsFile { setting, .. } if setting == "CBOB_DEST_GCS_CREDENTIALS"
        ));
        assert_eq!(c.endpoint, "https://storage.example.internal");
        assert_eq!(
            c.describe(),
            "gcs://bkt/repo at https://storage.example.internal"
        );
        // Only an endpoint: anonymous (an emulator).
        let mut s = spec();
        s.endpoint = Some("http://127.0.0.1:4443".into());
        assert_eq!(
            GcsConfig::from_spec_with_env(&s, no_env).unwrap().auth,
            GcsAuth::Anonymous
        );
    }

    #[test]
    fn source_and_replica_errors_name_their_own_settings() {
        let replica = SettingNames::Replica {
            name: "asia".into(),
        };
        for (settings, bucket, creds, endpoint) in [
            (
                SettingNames::Source,
                "the bucket in the --source URL",
                "CBOB_SOURCE_GCS_CREDENTIALS",
                "CBOB_SOURCE_ENDPOINT",
            ),
            (
                replica,
                "`bucket` of replica \"asia\"",
                "`credentials_file` of replica \"asia\"",
                "`endpoint` of replica \"asia\"",
            ),
        ] {
            let mut s = spec();
            s.settings = settings.clone();
            let e = GcsConfig::from_spec_with_env(&s, no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(creds) && e.contains(endpoint), "{e}");
            assert!(!e.contains("CBOB_DEST_"), "{e}");
            s.bucket = None;
            let e = GcsConfig::from_spec_with_env(&s, no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bucket) && !e.contains("CBOB_DEST_"), "{e}");
            // The credentials file remembers which setting named it, for later errors.
            let mut s = spec();
            s.settings = settings.clone();
            s.credentials_file = Some("/keys/sa.json".into());
            let c = GcsConfig::from_spec_with_env(&s, no_env).unwrap();
            assert_eq!(
                c.auth,
                GcsAuth::CredentialsFile {
                    path: "/keys/sa.json".into(),
                    setting: creds.into()
                }
            );
            assert_eq!(c.settings, settings);
        }
    }

    #[test]
    fn bad_settings_are_configuration_errors_that_name_the_fix() {
        let mut s = spec();
        s.endpoint = Some("127.0.0.1:4443".into());
        let e = GcsConfig::from_spec_with_env(&s, no_env).unwrap_err();
        assert!(
            e.kind() == StorageErrorKind::Config && e.message().contains("http://"),
            "{e}"
        );
        let mut s = spec();
        s.bucket = None;
        let e = GcsConfig::from_spec_with_env(&s, no_env).unwrap_err();
        assert!(e.message().contains("CBOB_DEST_BUCKET"), "{e}");
        for bad in ["My_Bucket", "ab", "-abc", "a..b", "bucket/with/slash"] {
            let mut s = spec();
            s.bucket = Some(bad.into());
            s.endpoint = Some("http://127.0.0.1:1".into());
            let e = GcsConfig::from_spec_with_env(&s, no_env).unwrap_err();
            assert!(
                e.message().contains("not a valid GCS bucket name"),
                "{bad}: {e}"
            );
        }
        let mut s = spec();
        s.endpoint = Some("http://127.0.0.1:1".into());
        s.storage_class = Some("nearline".into());
        let c = GcsConfig::from_spec_with_env(&s, no_env).unwrap();
        assert_eq!(c.storage_class.as_deref(), Some("NEARLINE"));
        s.storage_class = Some("GLACIER".into());
        let e = GcsConfig::from_spec_with_env(&s, no_env).unwrap_err();
        assert!(e.message().contains("COLDLINE"), "{e}");
        let mut c = GcsConfig::new("bkt", GcsAuth::Anonymous);
        c.chunk_size = 1_000_000;
        assert!(c.validate().unwrap_err().message().contains("256 KiB"));
        c.chunk_size = 4 * 1024 * 1024;
        assert!(c.validate().is_ok());
    }
}
