//! What an [`crate::S3Provider`] is built from: a [`ProviderSpec`] turned into typed settings,
//! with the S3 defaults. The MinIO crate starts from the same struct and changes a few defaults
//! (path-style always on, its own scheme and hints).

use std::fmt;
use std::sync::Arc;

use cbob_core::storage::credentials::{CredentialSource, S3Credentials};
use cbob_core::storage::{
    ProviderSpec, Setting, SettingNames, StorageError, StorageErrorKind, StorageResult,
};

/// Smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;
/// Largest object a single PutObject or CopyObject may write.
pub const MAX_SINGLE_OBJECT: u64 = 5 * 1024 * 1024 * 1024;
/// Largest object S3 stores at all.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Default region when neither the spec nor (without an endpoint) the AWS environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where the credentials come from.
#[derive(Clone, Default)]
pub enum S3Auth {
    /// The standard AWS chain: environment, profile, web identity, ECS/EC2 metadata.
    #[default]
    DefaultChain,
    /// Fixed keys, with an optional session token.
    Static(S3Credentials),
    /// Credentials fetched again whenever the service rejects them as expired (Crunchy Bridge
    /// backup tokens, STS sessions).
    Refreshable(Arc<dyn CredentialSource<S3Credentials>>),
}

impl fmt::Debug for S3Auth {
    // Never prints a key: only which kind of credentials is configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::Static(c) => write!(f, "Static(session_token: {})", c.session_token.is_some()),
            Self::Refreshable(s) => f.debug_tuple("Refreshable").field(s).finish(),
        }
    }
}

/// Server-side encryption requested on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS, with the bucket's default key when `key_id` is `None`. The ETag is then not
    /// an MD5 of the content, so MD5s are not reported.
    Kms { key_id: Option<String> },
}

/// Settings of one S3 provider.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Scheme used in descriptions and messages (`s3`, `minio`).
    pub scheme: &'static str,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint override (`https://host:port`); `None` means AWS.
    pub endpoint: Option<String>,
    /// Region; `None` lets the AWS environment/profile decide, then [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most non-AWS stores.
    pub force_path_style: bool,
    /// Send and check payload checksums only when an operation requires them. Non-AWS stores
    /// mishandle the SDK's default aws-chunked trailing checksums (reference/s3-lab.md).
    pub checksums_when_required: bool,
    pub auth: S3Auth,
    /// Storage class for writes when `PutOptions` names none.
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
    /// Objects larger than this are written with a multipart upload.
    pub multipart_threshold: u64,
    /// A streamed body up to this size is read into memory before a single PutObject, so the
    /// request can be re-sent (SDK retry of a 500 or a reset connection, credential refresh)
    /// instead of failing the transfer; larger ones stream straight through.
    pub replayable_put_limit: u64,
    /// Multipart part size; grows for huge objects to stay under [`MAX_PARTS`].
    pub part_size: u64,
    /// Parts uploading at once within one multipart upload. One more part is being read from the
    /// body meanwhile, so at most `part_concurrency + 1` parts are in memory.
    pub part_concurrency: usize,
    /// Objects larger than this are copied with UploadPartCopy instead of CopyObject.
    pub copy_multipart_threshold: u64,
    /// Part size of a multipart copy.
    pub copy_part_size: u64,
    /// Attempts per HTTP request inside the SDK (1 = no SDK retry); see `client.rs`.
    pub sdk_max_attempts: u32,
    /// Which settings configured this store, so errors name the ones the operator wrote.
    pub settings: SettingNames,
    /// Multipart uploads under the repository directories older than this are aborted before
    /// the provider's first multipart write: a killed run's leftovers (`stale_uploads.rs`).
    /// `None` leaves them alone.
    pub stale_upload_age: Option<std::time::Duration>,
}

impl S3Config {
    /// Settings for `bucket` with the AWS defaults: 8 MiB threshold and parts, default chain.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            scheme: "s3",
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            force_path_style: false,
            checksums_when_required: false,
            auth: S3Auth::DefaultChain,
            storage_class: None,
            sse: None,
            multipart_threshold: 8 * 1024 * 1024,
            replayable_put_limit: 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            part_concurrency: 1,
            copy_multipart_threshold: MAX_SINGLE_OBJECT,
            copy_part_size: 512 * 1024 * 1024,
            sdk_max_attempts: 3,
            settings: SettingNames::default(),
            stale_upload_age: Some(std::time::Duration::from_secs(24 * 3600)),
        }
    }

    /// Reads a spec: bucket (required), prefix, endpoint (turns on path style and
    /// checksums-when-required), region, credentials (refreshable source > static keys >
    /// default chain), storage class and `options`: `sse` (`AES256` | `aws:kms`), `kms_key_id`,
    /// `path_style` (`true` | `false`).
    pub fn from_spec(spec: &ProviderSpec) -> StorageResult<Self> {
        let config_err = |msg: String| StorageError::new(StorageErrorKind::Config, msg);
        let bucket = spec
            .bucket
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                config_err(format!(
                    "{}: no bucket given; set {}",
                    spec.describe(),
                    spec.settings.name(Setting::Bucket)
                ))
            })?;
        let mut c = Self::new(bucket);
        c.settings = spec.settings.clone();
        c.prefix = spec.prefix.trim_matches('/').to_string();
        c.endpoint = spec
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(ep) = &c.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(config_err(format!(
                "{}: endpoint {ep:?} must start with http:// or https://",
                spec.describe()
            )));
        }
        c.region = spec.region.clone().filter(|r| !r.trim().is_empty());
        // Any non-AWS endpoint: path style, and no optional checksums (see the field docs).
        c.force_path_style = c.endpoint.is_some();
        c.checksums_when_required = c.endpoint.is_some();
        c.auth = auth_from_spec(spec)?;
        c.storage_class = spec.storage_class.clone().filter(|s| !s.is_empty());
        for (key, value) in &spec.options {
            match key.as_str() {
                "sse" => {
                    c.sse = match value.as_str() {
                        "AES256" | "aes256" => Some(Sse::Aes256),
                        "aws:kms" | "kms" => Some(Sse::Kms { key_id: None }),
                        "" | "none" => None,
                        other => {
                            return Err(config_err(format!(
                                "{}: option sse={other:?} is not one of AES256, aws:kms",
                                spec.describe()
                            )));
                        }
                    }
                }
                "kms_key_id" => {}
                "path_style" => {
                    c.force_path_style = match value.as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        other => {
                            return Err(config_err(format!(
                                "{}: option path_style={other:?} must be true or false",
                                spec.describe()
                            )));
                        }
                    }
                }
                other => {
                    tracing::warn!(option = other, provider = %spec.describe(), "ignoring unknown S3 option")
                }
            }
        }
        if let Some(key_id) = spec.options.get("kms_key_id").filter(|k| !k.is_empty()) {
            match &mut c.sse {
                Some(Sse::Kms { key_id: k }) => *k = Some(key_id.clone()),
                None => {
                    c.sse = Some(Sse::Kms {
                        key_id: Some(key_id.clone()),
                    })
                }
                Some(Sse::Aes256) => {
                    return Err(config_err(format!(
                        "{}: kms_key_id is set but sse=AES256; use sse=aws:kms or drop kms_key_id",
                        spec.describe()
                    )));
                }
            }
        }
        Ok(c)
    }

    /// `s3://bucket/prefix`, plus the endpoint when it is not AWS. No secrets.
    pub fn describe(&self) -> String {
        let mut d = format!("{}://{}", self.scheme, self.bucket);
        if !self.prefix.is_empty() {
            d.push('/');
            d.push_str(&self.prefix);
        }
        if let Some(ep) = &self.endpoint {
            d.push_str(&format!(" at {ep}"));
        }
        d
    }

    /// The full S3 key of a provider-relative key.
    pub(crate) fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Part size for an object of `size` bytes: the configured size, grown in whole MiB so the
    /// upload needs at most [`MAX_PARTS`] parts.
    pub fn part_size_for(&self, size: u64) -> u64 {
        let base = self.part_size.max(MIN_PART_SIZE);
        let needed = size.div_ceil(MAX_PARTS);
        if needed <= base {
            base
        } else {
            needed.div_ceil(1024 * 1024) * 1024 * 1024
        }
    }

    pub(crate) fn validate(&self) -> StorageResult<()> {
        let bad = |m: String| {
            Err(StorageError::new(
                StorageErrorKind::Config,
                format!("{}: {m}", self.describe()),
            ))
        };
        if self.part_size < MIN_PART_SIZE {
            return bad(format!(
                "part size {} is below the S3 minimum of 5 MiB",
                self.part_size
            ));
        }
        if self.multipart_threshold > MAX_SINGLE_OBJECT {
            return bad("multipart threshold is above the 5 GiB single-request limit".into());
        }
        if self.copy_part_size < MIN_PART_SIZE || self.copy_part_size > MAX_SINGLE_OBJECT {
            return bad("copy part size must be between 5 MiB and 5 GiB".into());
        }
        if self.part_concurrency == 0 || self.sdk_max_attempts == 0 {
            return bad("part concurrency and SDK attempts must be at least 1".into());
        }
        Ok(())
    }
}

fn auth_from_spec(spec: &ProviderSpec) -> StorageResult<S3Auth> {
    if let Some(source) = &spec.s3_credentials {
        return Ok(S3Auth::Refreshable(source.clone()));
    }
    match (&spec.access_key, &spec.secret_key) {
        (Some(ak), Some(sk)) if !ak.is_empty() && !sk.is_empty() => {
            Ok(S3Auth::Static(S3Credentials {
                access_key: ak.clone(),
                secret_key: sk.clone(),
                session_token: spec.session_token.clone().filter(|t| !t.is_empty()),
                expires_at: None,
            }))
        }
        (None, None) => Ok(S3Auth::DefaultChain),
        (Some(ak), Some(sk)) if ak.is_empty() && sk.is_empty() => Ok(S3Auth::DefaultChain),
        _ => Err(StorageError::new(
            StorageErrorKind::Config,
            format!(
                "{}: an access key and a secret key go together; set both ({}) or neither (to use \
                 the AWS credential chain)",
                spec.describe(),
                spec.settings
                    .pair(Setting::AccessKey, Setting::SecretKey, " and ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbob_core::secret::Secret;

    fn spec() -> ProviderSpec {
        ProviderSpec {
            kind: "s3".into(),
            bucket: Some("bkt".into()),
            prefix: "/repo/".into(),
            ..ProviderSpec::default()
        }
    }

    #[test]
    fn defaults_follow_the_endpoint() {
        let c = S3Config::from_spec(&spec()).unwrap();
        assert_eq!(
            (
                c.prefix.as_str(),
                c.force_path_style,
                c.checksums_when_required
            ),
            ("repo", false, false)
        );
        assert!(matches!(c.auth, S3Auth::DefaultChain));
        let mut s = spec();
        s.endpoint = Some("http://127.0.0.1:9000/".into());
        let c = S3Config::from_spec(&s).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.force_path_style && c.checksums_when_required);
        s.options.insert("path_style".into(), "false".into());
        assert!(!S3Config::from_spec(&s).unwrap().force_path_style);
        s.endpoint = Some("127.0.0.1:9000".into());
        assert_eq!(
            S3Config::from_spec(&s).unwrap_err().kind(),
            StorageErrorKind::Config
        );
    }

    #[test]
    fn config_errors_name_the_settings_used() {
        let replica = SettingNames::Replica { name: "eu".into() };
        for (settings, bucket, keys) in [
            (
                SettingNames::Destination,
                "CBOB_DEST_BUCKET",
                "CBOB_DEST_ACCESS_KEY and CBOB_DEST_SECRET_KEY",
            ),
            (
                SettingNames::Source,
                "the bucket in the --source URL",
                "CBOB_SOURCE_ACCESS_KEY and CBOB_SOURCE_SECRET_KEY",
            ),
            (
                replica,
                "`bucket` of replica \"eu\"",
                "`access_key` and `secret_key` of replica \"eu\"",
            ),
        ] {
            let is_dest = settings == SettingNames::Destination;
            let no_bucket = ProviderSpec {
                kind: "s3".into(),
                settings: settings.clone(),
                ..ProviderSpec::default()
            };
            let e = S3Config::from_spec(&no_bucket).unwrap_err().to_string();
            assert!(e.contains(bucket), "{e}");
            assert!(is_dest || !e.contains("CBOB_DEST_"), "{e}");
            let mut half = spec();
            half.settings = settings.clone();
            half.access_key = Some(Secret::new("AKIAXXXXXXXX"));
            let e = S3Config::from_spec(&half).unwrap_err().to_string();
            assert!(e.contains(keys), "{e}");
            assert!(is_dest || !e.contains("CBOB_DEST_"), "{e}");
            // Later errors (missing bucket at the service) read the settings from the config.
            half.secret_key = Some(Secret::new("sk"));
            assert_eq!(S3Config::from_spec(&half).unwrap().settings, settings);
        }
    }

    #[test]
    fn credentials_and_sse() {
        let mut s = spec();
        s.access_key = Some(Secret::new("AKIAXXXXXXXX"));
        assert_eq!(
            S3Config::from_spec(&s).unwrap_err().kind(),
            StorageErrorKind::Config
        );
        s.secret_key = Some(Secret::new("very-secret"));
        s.session_token = Some(Secret::new("tok"));
        s.options.insert("sse".into(), "aws:kms".into());
        s.options.insert("kms_key_id".into(), "alias/backup".into());
        let c = S3Config::from_spec(&s).unwrap();
        assert!(matches!(&c.auth, S3Auth::Static(k) if k.session_token.is_some()));
        assert_eq!(
            c.sse,
            Some(Sse::Kms {
                key_id: Some("alias/backup".into())
            })
        );
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("very-secret") && !dbg.contains("tok\""),
            "{dbg}"
        );
        s.options.insert("sse".into(), "rot13".into());
        assert_eq!(
            S3Config::from_spec(&s).unwrap_err().kind(),
            StorageErrorKind::Config
        );
        assert!(
            S3Config::from_spec(&ProviderSpec {
                kind: "s3".into(),
                ..ProviderSpec::default()
            })
            .is_err()
        );
    }

    #[test]
    fn part_size_grows_to_stay_under_the_part_limit() {
        let c = S3Config::new("b");
        assert_eq!(c.part_size_for(20 * 1024 * 1024), 8 * 1024 * 1024);
        let huge = 200 * 1024 * 1024 * 1024; // 200 GiB
        let p = c.part_size_for(huge);
        assert!(
            huge.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(1024 * 1024),
            "{p}"
        );
        let max = c.part_size_for(MAX_OBJECT_SIZE);
        assert!(MAX_OBJECT_SIZE.div_ceil(max) <= MAX_PARTS && max <= MAX_SINGLE_OBJECT);
    }
}
