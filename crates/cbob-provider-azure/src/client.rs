//! SDK clients per credential generation, and credential refresh.
//!
//! A Shared Key is baked into a pipeline policy and a SAS token into the container URL, so a
//! client belongs to one set of credentials. With refreshable credentials (Crunchy Bridge backup
//! tokens of type `azure`) the provider builds one client per credential *generation*: every
//! request knows which generation it was sent with, so when the service rejects it
//! (`AuthenticationFailed`, an expired SAS) exactly that generation is invalidated in the
//! [`CredentialCache`], the next client is taken and only that one request is sent again.
//! All generations share one HTTP transport (one connection pool).

use std::future::Future;
use std::sync::{Arc, Mutex};

use azure_core::http::policies::Policy;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, HttpClientOptions, Pipeline, RetryOptions, Transport,
    new_http_client,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use cbob_core::storage::credentials::{AzureCredentials, CredentialCache};
use cbob_core::storage::{StorageError, StorageErrorKind, StorageResult};
use url::Url;

use crate::auth::{SharedKeyPolicy, TransactionalMd5Policy, secret_strings};
use crate::config::{AzureAuth, AzureConfig};
use crate::errors::{Ctx, classify};

/// How many times one request is re-sent with freshly fetched credentials before giving up.
const MAX_REFRESHES: u32 = 2;

/// The clients of one credential generation.
#[derive(Clone)]
pub(crate) struct Handle {
    pub container: Arc<BlobContainerClient>,
    /// The same policies without an SDK operation around them, for requests the SDK does not
    /// offer in the form needed (a plain streamed Get Blob).
    pub raw: Pipeline,
    /// Service version the SDK speaks; raw requests send the same.
    pub version: Arc<str>,
    /// `None` for static credentials (nothing to refresh).
    generation: Option<u64>,
    /// The secrets this client uses, masked in any message.
    pub secrets: Arc<Vec<String>>,
}

impl Handle {
    pub(crate) fn blob(&self, name: &str) -> BlobClient {
        self.container.blob_client(name)
    }
}

enum Mode {
    Fixed(Handle),
    Refreshing {
        cache: CredentialCache<AzureCredentials>,
        current: Mutex<Option<Handle>>,
    },
}

/// Hands out clients; replaces them when credentials are refreshed.
pub(crate) struct Clients {
    cfg: AzureConfig,
    transport: Transport,
    mode: Mode,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Fixed(_) => "fixed",
            Mode::Refreshing { .. } => "refreshing",
        };
        f.debug_struct("Clients")
            .field("credentials", &mode)
            .finish_non_exhaustive()
    }
}

impl Clients {
    // `..Default::default()` keeps this compiling when the SDK adds transport options.
    #[allow(clippy::needless_update)]
    pub(crate) fn new(cfg: &AzureConfig) -> StorageResult<Self> {
        // No automatic decompression: bytes are stored and returned exactly as written.
        let transport = Transport::new(new_http_client(Some(HttpClientOptions {
            automatic_decompression: false,
            ..Default::default()
        })));
        let mode = match &cfg.auth {
            AzureAuth::Static(creds) => Mode::Fixed(build(cfg, &transport, creds, None)?),
            AzureAuth::Refreshable(source) => Mode::Refreshing {
                cache: CredentialCache::new(source.clone()),
                current: Mutex::new(None),
            },
        };
        Ok(Self {
            cfg: cfg.clone(),
            transport,
            mode,
        })
    }

    /// The clients to send the next request with.
    pub(crate) async fn get(&self) -> StorageResult<Handle> {
        match &self.mode {
            Mode::Fixed(h) => Ok(h.clone()),
            Mode::Refreshing { cache, current } => {
                let lease = cache
                    .get()
                    .await
                    .map_err(|e| e.context("fetching Azure credentials"))?;
                if let Some(h) = current
                    .lock()
                    .expect("client cache poisoned")
                    .as_ref()
                    .filter(|h| h.generation == Some(lease.generation))
                {
                    return Ok(h.clone());
                }
                let h = build(
                    &self.cfg,
                    &self.transport,
                    &lease.credentials,
                    Some(lease.generation),
                )?;
                *current.lock().expect("client cache poisoned") = Some(h.clone());
                Ok(h)
            }
        }
    }

    /// Reports that the service rejected `h`'s credentials; returns whether fresh ones can be
    /// fetched (false for static credentials).
    fn rejected(&self, h: &Handle) -> bool {
        match (&self.mode, h.generation) {
            (Mode::Refreshing { cache, .. }, Some(generation)) => {
                tracing::info!(
                    generation,
                    "Azure rejected the credentials; fetching new ones"
                );
                cache.invalidate(generation);
                true
            }
            _ => false,
        }
    }

    /// Sends a request built by `f`, sending it again with fresh credentials when the service
    /// rejects the current ones. `f` must be able to build the same request again.
    pub(crate) async fn call<T, F, Fut>(&self, ctx: &Ctx<'_>, mut f: F) -> StorageResult<T>
    where
        F: FnMut(Handle) -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let mut refreshes = 0;
        loop {
            let h = self.get().await?;
            match f(h.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let failure = classify(&e);
                    if failure.refresh && refreshes < MAX_REFRESHES && self.rejected(&h) {
                        refreshes += 1;
                        continue;
                    }
                    return Err(failure.into_error(ctx, &h.secrets));
                }
            }
        }
    }
}

/// Builds the clients for one set of credentials.
fn build(
    cfg: &AzureConfig,
    transport: &Transport,
    creds: &AzureCredentials,
    generation: Option<u64>,
) -> StorageResult<Handle> {
    let (account, policy): (&str, Option<Arc<dyn Policy>>) = match creds {
        AzureCredentials::SharedKey { account, key } => {
            crate::auth::check_shared_key(key.expose(), &cfg.settings).map_err(|m| {
                StorageError::new(StorageErrorKind::Config, format!("{}: {m}", cfg.describe()))
            })?;
            (account, Some(Arc::new(SharedKeyPolicy::new(account, key))))
        }
        AzureCredentials::Sas { account, .. } => (account, None),
    };
    if account.is_empty() {
        return Err(StorageError::new(
            StorageErrorKind::Config,
            format!(
                "{}: the credentials name no storage account",
                cfg.describe()
            ),
        ));
    }
    let mut url: Url = cfg.service_url(account)?;
    url.path_segments_mut()
        .map_err(|_| {
            StorageError::new(
                StorageErrorKind::Config,
                format!(
                    "{}: the endpoint cannot take a container path",
                    cfg.describe()
                ),
            )
        })?
        .pop_if_empty()
        .push(&cfg.container);
    if let AzureCredentials::Sas { token, .. } = creds {
        let token = crate::auth::normalize_sas(token, &cfg.settings).map_err(|m| {
            StorageError::new(StorageErrorKind::Config, format!("{}: {m}", cfg.describe()))
        })?;
        url.set_query(Some(token.expose()));
    }
    let retry = if cfg.sdk_max_retries == 0 {
        RetryOptions::none()
    } else {
        RetryOptions::exponential(ExponentialRetryOptions {
            max_retries: cfg.sdk_max_retries,
            ..ExponentialRetryOptions::default()
        })
    };
    let mut client_options = ClientOptions {
        transport: Some(transport.clone()),
        retry,
        ..ClientOptions::default()
    };
    client_options.per_call_policies = vec![Arc::new(TransactionalMd5Policy)];
    client_options.per_try_policies = policy.into_iter().collect();
    let options = BlobContainerClientOptions {
        client_options: client_options.clone(),
        ..BlobContainerClientOptions::default()
    };
    let version: Arc<str> = options.version.clone().into();
    let container = BlobContainerClient::new(url, None, Some(options)).map_err(|e| {
        StorageError::new(
            StorageErrorKind::Config,
            format!("{}: cannot build the Azure client: {e}", cfg.describe()),
        )
    })?;
    let raw = Pipeline::new(
        Some(env!("CARGO_PKG_NAME")),
        Some(env!("CARGO_PKG_VERSION")),
        client_options,
        Vec::new(),
        Vec::new(),
        None,
    );
    Ok(Handle {
        container: Arc::new(container),
        raw,
        version,
        generation,
        secrets: Arc::new(secret_strings(creds)),
    })
}
