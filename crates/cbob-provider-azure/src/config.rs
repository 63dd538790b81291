//! What an [`crate::AzureProvider`] is built from: a [`ProviderSpec`] turned into typed, checked
//! settings with the Azure defaults. Every problem is reported with the setting to fix.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cbob_core::storage::credentials::{AzureCredentials, CredentialSource};
use cbob_core::storage::{
    KeyPrefix, ProviderSpec, Setting, SettingNames, StorageError, StorageErrorKind, StorageResult,
};
use url::Url;

/// Most blocks one block blob may have.
pub const MAX_BLOCKS: u64 = 50_000;
/// Largest block Azure accepts (service version 2019-12-12 and later).
pub const MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;
/// Largest block blob Azure stores (50,000 blocks of 4000 MiB).
pub const MAX_OBJECT_SIZE: u64 = MAX_BLOCKS * MAX_BLOCK_SIZE;
/// Largest single Put Blob (service version 2019-12-12 and later).
pub const MAX_SINGLE_PUT: u64 = 5000 * 1024 * 1024;

/// Blob access tier (`storage_class`): where a written blob is stored and billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTier {
    Hot,
    Cool,
    Cold,
    /// Offline: a blob in Archive cannot be read until it is rehydrated to another tier.
    Archive,
}

impl AccessTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hot => "Hot",
            Self::Cool => "Cool",
            Self::Cold => "Cold",
            Self::Archive => "Archive",
        }
    }

    pub(crate) fn to_sdk(self) -> azure_storage_blob::models::AccessTier {
        use azure_storage_blob::models::AccessTier as T;
        match self {
            Self::Hot => T::Hot,
            Self::Cool => T::Cool,
            Self::Cold => T::Cold,
            Self::Archive => T::Archive,
        }
    }
}

impl FromStr for AccessTier {
    type Err = StorageError;

    /// Case-insensitive `Hot`, `Cool`, `Cold` or `Archive`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hot" => Ok(Self::Hot),
            "cool" => Ok(Self::Cool),
            "cold" => Ok(Self::Cold),
            "archive" => Ok(Self::Archive),
            _ => Err(StorageError::new(
                StorageErrorKind::Config,
                format!(
                    "storage class {s:?} is not an Azure access tier; use Hot, Cool, Cold or Archive"
                ),
            )),
        }
    }
}

impl fmt::Display for AccessTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the credentials come from.
#[derive(Clone)]
pub enum AzureAuth {
    /// A fixed account key or SAS token.
    Static(AzureCredentials),
    /// Credentials fetched again whenever the service rejects them (Crunchy Bridge backup
    /// tokens of type `azure`, whose key or SAS may be rotated or expire).
    Refreshable(Arc<dyn CredentialSource<AzureCredentials>>),
}

impl fmt::Debug for AzureAuth {
    // Never prints a key or token: only which kind of credentials is configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(AzureCredentials::SharedKey { account, .. }) => {
                write!(f, "SharedKey(account: {account:?})")
            }
            Self::Static(AzureCredentials::Sas { account, .. }) => {
                write!(f, "Sas(account: {account:?})")
            }
            Self::Refreshable(s) => f.debug_tuple("Refreshable").field(s).finish(),
        }
    }
}

/// Settings of one Azure Blob provider.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// Storage account; `None` only with refreshable credentials, which name it.
    pub account: Option<String>,
    pub container: String,
    /// Blob name prefix inside the container, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Blob service endpoint including the account for path-style servers
    /// (`http://127.0.0.1:10000/devstoreaccount1`); `None` means
    /// `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<Url>,
    pub auth: AzureAuth,
    /// Access tier for writes when `PutOptions` names none; `None` keeps the account default.
    pub access_tier: Option<AccessTier>,
    /// A body up to this size is sent as one Put Blob, from memory (so the request can be
    /// re-sent on a transient failure or a credential refresh); larger ones go in blocks.
    pub single_put_limit: u64,
    /// Block size of a block upload; grows for huge blobs to stay under [`MAX_BLOCKS`].
    pub block_size: u64,
    /// Blocks uploading at once within one blob. One more block is read from the body
    /// meanwhile, so at most `block_concurrency + 1` blocks are in memory.
    pub block_concurrency: usize,
    /// Retries per HTTP request inside the SDK (0 = none); core's retry layer wraps whole
    /// operations on top, so this stays small.
    pub sdk_max_retries: u32,
    /// How long a server-side copy may stay `pending` before it is reported as timed out.
    pub copy_timeout: Duration,
    /// Listing page size (the service's maximum is 5000).
    pub list_page_size: u32,
    /// Which settings configured this store, so errors name the ones the operator wrote.
    pub settings: SettingNames,
}

impl AzureConfig {
    /// Settings for `container` with the defaults: 4 MiB blocks, one block uploading while the
    /// next is read (8 MiB of body in memory at most), single puts up to 4 MiB.
    pub fn new(container: impl Into<String>, auth: AzureAuth) -> Self {
        let account = match &auth {
            AzureAuth::Static(
                AzureCredentials::SharedKey { account, .. } | AzureCredentials::Sas { account, .. },
            ) => Some(account.clone()),
            AzureAuth::Refreshable(_) => None,
        };
        Self {
            account,
            container: container.into(),
            prefix: String::new(),
            endpoint: None,
            auth,
            access_tier: None,
            single_put_limit: 4 * 1024 * 1024,
            block_size: 4 * 1024 * 1024,
            block_concurrency: 1,
            sdk_max_retries: 2,
            copy_timeout: Duration::from_secs(30 * 60),
            list_page_size: 5000,
            settings: SettingNames::default(),
        }
    }

    /// Reads a spec: container (`bucket`, required), `prefix`, `account`, `endpoint`,
    /// credentials (refreshable `azure_credentials` > `secret_key` as the shared key >
    /// `sas_token`; exactly one of the last two), `storage_class` as the access tier, and the
    /// option `list_page_size` (1-5000).
    pub fn from_spec(spec: &ProviderSpec) -> StorageResult<Self> {
        let where_ = spec.describe();
        let names = &spec.settings;
        let config_err =
            |msg: String| StorageError::new(StorageErrorKind::Config, format!("{where_}: {msg}"));
        let container = spec
            .bucket
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                config_err(format!(
                    "no blob container given; set {}",
                    names.name(Setting::Container)
                ))
            })?;
        check_container_name(container, names).map_err(config_err)?;
        let account = spec
            .account
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string);
        if let Some(a) = &account {
            check_account_name(a, names).map_err(config_err)?;
        }
        let auth = auth_from_spec(spec, account.as_deref()).map_err(config_err)?;
        let mut c = Self::new(container, auth);
        c.settings = names.clone();
        if c.account.is_none() {
            c.account = account;
        }
        c.prefix = spec.prefix.trim_matches('/').to_string();
        if !c.prefix.is_empty() {
            KeyPrefix::new(c.prefix.clone()).map_err(|e| {
                config_err(format!(
                    "prefix {:?} is not usable: {}; fix {}",
                    c.prefix,
                    e.message(),
                    names.name(Setting::Prefix)
                ))
            })?;
        }
        c.endpoint = match spec.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(ep) => Some(parse_endpoint(ep, names).map_err(config_err)?),
        };
        if c.endpoint.is_none() && c.account.is_none() {
            return Err(config_err(format!(
                "no storage account given; set {}",
                names.name(Setting::AzureAccount)
            )));
        }
        c.access_tier = match spec
            .storage_class
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(s) => Some(
                s.parse()
                    .map_err(|e: StorageError| config_err(e.message().into()))?,
            ),
            None => None,
        };
        if c.access_tier == Some(AccessTier::Archive) {
            tracing::warn!(
                provider = %where_,
                "access tier Archive: blobs written here cannot be read (verified, restored or \
                 compared by a later sync) until they are rehydrated"
            );
        }
        for (key, value) in &spec.options {
            match key.as_str() {
                // Smaller pages cost more requests; tests use them to cross page boundaries.
                "list_page_size" => {
                    c.list_page_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=5000).contains(n))
                        .ok_or_else(|| {
                            config_err(format!(
                                "option list_page_size={value:?} must be a number from 1 to 5000"
                            ))
                        })?;
                }
                other => {
                    tracing::warn!(option = other, provider = %where_, "ignoring unknown Azure option")
                }
            }
        }
        Ok(c)
    }

    /// `azure://account/container/prefix`, plus the endpoint when it is not Azure's. No secrets.
    pub fn describe(&self) -> String {
        let mut d = format!(
            "azure://{}/{}",
            self.account.as_deref().unwrap_or("(token account)"),
            self.container
        );
        if !self.prefix.is_empty() {
            d.push('/');
            d.push_str(&self.prefix);
        }
        if let Some(ep) = &self.endpoint {
            d.push_str(&format!(" at {ep}"));
        }
        d
    }

    /// The blob name of a provider-relative key.
    pub(crate) fn blob_name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The blob service URL for `account`: the configured endpoint, else Azure's public one.
    pub(crate) fn service_url(&self, account: &str) -> StorageResult<Url> {
        match &self.endpoint {
            Some(ep) => Ok(ep.clone()),
            None => Url::parse(&format!("https://{account}.blob.core.windows.net")).map_err(|e| {
                StorageError::new(
                    StorageErrorKind::Config,
                    format!("{}: invalid account name {account:?}: {e}", self.describe()),
                )
            }),
        }
    }

    /// Block size for a blob of `size` bytes: the configured size, grown in whole MiB so the
    /// upload needs at most [`MAX_BLOCKS`] blocks.
    pub fn block_size_for(&self, size: u64) -> u64 {
        let base = self.block_size.max(1);
        let needed = size.div_ceil(MAX_BLOCKS);
        if needed <= base {
            base
        } else {
            needed.div_ceil(1024 * 1024) * 1024 * 1024
        }
    }

    pub(crate) fn validate(&self) -> StorageResult<()> {
        let bad = |m: &str| {
            Err(StorageError::new(
                StorageErrorKind::Config,
                format!("{}: {m}", self.describe()),
            ))
        };
        if self.block_size == 0 || self.block_size > MAX_BLOCK_SIZE {
            return bad("block size must be between 1 byte and 4000 MiB");
        }
        if self.single_put_limit > MAX_SINGLE_PUT {
            return bad("single put limit is above Azure's 5000 MiB Put Blob limit");
        }
        if self.block_concurrency == 0 {
            return bad("block concurrency must be at least 1");
        }
        if self.list_page_size == 0 || self.list_page_size > 5000 {
            return bad("list page size must be between 1 and 5000");
        }
        Ok(())
    }
}

/// Azure container names: 3-63 characters, lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit.
fn check_container_name(name: &str, names: &SettingNames) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "container name {name:?} is not valid: use 3-63 lowercase letters, digits and single \
             hyphens, starting and ending with a letter or digit ({})",
            names.name(Setting::Container)
        ))
    }
}

/// Azure storage account names: 3-24 lowercase letters and digits.
fn check_account_name(name: &str, names: &SettingNames) -> Result<(), String> {
    if (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "storage account name {name:?} is not valid: use 3-24 lowercase letters and digits \
             ({})",
            names.name(Setting::AzureAccount)
        ))
    }
}

fn parse_endpoint(ep: &str, names: &SettingNames) -> Result<Url, String> {
    let ep = ep.trim_end_matches('/');
    if !(ep.starts_with("http://") || ep.starts_with("https://")) {
        return Err(format!(
            "endpoint {ep:?} must start with http:// or https:// (e.g. \
             http://127.0.0.1:10000/devstoreaccount1 for Azurite); fix {}",
            names.name(Setting::Endpoint)
        ));
    }
    let url = Url::parse(ep).map_err(|e| format!("endpoint {ep:?} is not a URL ({e})"))?;
    if url.query().is_some() || url.fragment().is_some() || url.cannot_be_a_base() {
        return Err(format!(
            "endpoint {ep:?} must be a plain service URL without query or fragment (put a SAS \
             token in {})",
            names.name(Setting::AzureSas)
        ));
    }
    Ok(url)
}

fn auth_from_spec(spec: &ProviderSpec, account: Option<&str>) -> Result<AzureAuth, String> {
    if let Some(source) = &spec.azure_credentials {
        return Ok(AzureAuth::Refreshable(source.clone()));
    }
    let names = &spec.settings;
    let key = spec.secret_key.as_ref().filter(|k| !k.is_empty());
    let sas = spec.sas_token.as_ref().filter(|t| !t.is_empty());
    let need_account = || {
        account.map(str::to_string).ok_or_else(|| {
            format!(
                "no storage account given; set {}",
                names.name(Setting::AzureAccount)
            )
        })
    };
    match (key, sas) {
        (Some(_), Some(_)) => Err(format!(
            "both a shared key and a SAS token are set; keep one ({} or {})",
            names.name(Setting::AzureKey),
            names.name(Setting::AzureSas)
        )),
        (None, None) => Err(format!(
            "no Azure credentials; set {} (the account's access key) or {} (a SAS token for the \
             container)",
            names.name(Setting::AzureKey),
            names.name(Setting::AzureSas)
        )),
        (Some(key), None) => {
            crate::auth::check_shared_key(key.expose(), names)?;
            Ok(AzureAuth::Static(AzureCredentials::SharedKey {
                account: need_account()?,
                key: key.clone(),
            }))
        }
        (None, Some(token)) => {
            let token = crate::auth::normalize_sas(token, names)?;
            Ok(AzureAuth::Static(AzureCredentials::Sas {
                account: need_account()?,
                token,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbob_core::Secret;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn spec() -> ProviderSpec {
        ProviderSpec {
            kind: "azure".into(),
            account: Some("acct1".into()),
            bucket: Some("backups".into()),
            prefix: "/repo/".into(),
            secret_key: Some(Secret::new(KEY)),
            ..ProviderSpec::default()
        }
    }

    fn err(s: &ProviderSpec) -> String {
        let e = AzureConfig::from_spec(s).unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Config, "{e}");
        e.message().to_string()
    }

    #[test]
    fn defaults_and_endpoint() {
        let c = AzureConfig::from_spec(&spec()).unwrap();
        assert_eq!(
            (c.container.as_str(), c.prefix.as_str()),
            ("backups", "repo")
        );
        assert_eq!(c.account.as_deref(), Some("acct1"));
        assert_eq!(
            c.service_url("acct1").unwrap().as_str(),
            "https://acct1.blob.core.windows.net/"
        );
        assert_eq!(c.blob_name("a/b"), "repo/a/b");
        assert_eq!(c.describe(), "azure://acct1/backups/repo");
        let mut s = spec();
        s.endpoint = Some("http://127.0.0.1:10000/devstoreaccount1/".into());
        let c = AzureConfig::from_spec(&s).unwrap();
        assert_eq!(
            c.service_url("x").unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        s.endpoint = Some("127.0.0.1:10000".into());
        assert!(err(&s).contains("http://"));
        s.endpoint = Some("https://a.blob.core.windows.net/?sv=1&sig=abc".into());
        assert!(err(&s).contains("CBOB_DEST_AZURE_SAS"));
    }

    #[test]
    fn credentials_are_checked_and_never_printed() {
        let mut s = spec();
        s.sas_token = Some(Secret::new("sv=2022-11-02&sig=abc"));
        let m = err(&s);
        assert!(m.contains("both") && !m.contains(KEY), "{m}");
        s.secret_key = None;
        let c = AzureConfig::from_spec(&s).unwrap();
        assert!(matches!(
            &c.auth,
            AzureAuth::Static(AzureCredentials::Sas { .. })
        ));
        assert!(!format!("{c:?}").contains("sig=abc"), "{c:?}");
        s.sas_token = Some(Secret::new("?sv=2022-11-02&se=2030-01-01"));
        assert!(err(&s).contains("sig="));
        s.sas_token = None;
        assert!(err(&s).contains("CBOB_DEST_AZURE_KEY"));
        s.secret_key = Some(Secret::new("not base64 at all!"));
        let m = err(&s);
        assert!(
            m.contains("base64") && !m.contains("not base64 at all"),
            "{m}"
        );
        let c = AzureConfig::from_spec(&spec()).unwrap();
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn source_and_replica_errors_name_their_own_settings() {
        let replica = SettingNames::Replica {
            name: "west".into(),
        };
        for (settings, key, sas, container) in [
            (
                SettingNames::Source,
                "CBOB_SOURCE_AZURE_KEY",
                "CBOB_SOURCE_AZURE_SAS",
                "the container in the --source URL",
            ),
            (
                replica,
                "`secret_key` of replica \"west\"",
                "`sas_token` of replica \"west\"",
                "`container` of replica \"west\"",
            ),
        ] {
            let mut s = spec();
            s.settings = settings.clone();
            s.secret_key = None;
            let m = err(&s);
            assert!(m.contains("no Azure credentials"), "{m}");
            assert!(m.contains(key) && m.contains(sas), "{m}");
            assert!(!m.contains("CBOB_DEST_"), "{m}");
            let mut s = spec();
            s.settings = settings.clone();
            s.sas_token = Some(Secret::new("sv=2022-11-02&sig=abc"));
            let m = err(&s);
            assert!(
                m.contains("both") && m.contains(key) && m.contains(sas),
                "{m}"
            );
            assert!(!m.contains("CBOB_DEST_"), "{m}");
            let mut s = spec();
            s.settings = settings.clone();
            s.bucket = None;
            let m = err(&s);
            assert!(m.contains(container) && !m.contains("CBOB_DEST_"), "{m}");
            let mut s = spec();
            s.settings = settings.clone();
            assert_eq!(AzureConfig::from_spec(&s).unwrap().settings, settings);
        }
    }

    #[test]
    fn names_and_tiers() {
        let mut s = spec();
        s.bucket = None;
        assert!(err(&s).contains("CBOB_DEST_CONTAINER"));
        s.bucket = Some("Bad_Name".into());
        assert!(err(&s).contains("lowercase"));
        s.bucket = Some("ok-name".into());
        s.account = Some("Not-An-Account".into());
        assert!(err(&s).contains("CBOB_DEST_AZURE_ACCOUNT"));
        s.account = None;
        assert!(err(&s).contains("CBOB_DEST_AZURE_ACCOUNT"));
        let mut s = spec();
        s.storage_class = Some("cool".into());
        assert_eq!(
            AzureConfig::from_spec(&s).unwrap().access_tier,
            Some(AccessTier::Cool)
        );
        s.storage_class = Some("STANDARD_IA".into());
        assert!(err(&s).contains("Hot, Cool, Cold or Archive"));
        s.storage_class = Some(String::new());
        assert_eq!(AzureConfig::from_spec(&s).unwrap().access_tier, None);
        s.prefix = "a/../b".into();
        assert!(err(&s).contains("CBOB_DEST_PREFIX"));
        let mut s = spec();
        s.options.insert("list_page_size".into(), "500".into());
        assert_eq!(AzureConfig::from_spec(&s).unwrap().list_page_size, 500);
        s.options.insert("list_page_size".into(), "0".into());
        assert!(err(&s).contains("list_page_size"));
    }

    #[test]
    fn block_size_grows_to_stay_under_the_block_limit() {
        let c = AzureConfig::from_spec(&spec()).unwrap();
        assert_eq!(c.block_size_for(40 * 1024 * 1024), 4 * 1024 * 1024);
        let huge = 1024 * 1024 * 1024 * 1024; // 1 TiB
        let b = c.block_size_for(huge);
        assert!(
            huge.div_ceil(b) <= MAX_BLOCKS && b.is_multiple_of(1024 * 1024),
            "{b}"
        );
        let max = c.block_size_for(MAX_OBJECT_SIZE);
        assert!(MAX_OBJECT_SIZE.div_ceil(max) <= MAX_BLOCKS && max <= MAX_BLOCK_SIZE);
    }
}
