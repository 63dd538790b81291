//! The SDK client(s) and credential refresh.
//!
//! Refreshable credentials are handled by building one SDK client per credential *generation*
//! (from a shared base config) rather than by an SDK credentials provider: every request then
//! knows exactly which generation signed it, so when the service answers `ExpiredToken` the
//! provider invalidates precisely that generation in the [`CredentialCache`], takes the next
//! client and re-sends only that one request. Refreshes are rare, so a client (and connection
//! pool) per generation costs nothing worth measuring.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use cbob_core::storage::credentials::{CredentialCache, S3Credentials};
use cbob_core::storage::{StorageError, StorageErrorKind, StorageResult};

use crate::config::{DEFAULT_REGION, S3Auth, S3Config};
use crate::errors::{Ctx, classify};

/// How many times one request is re-sent with freshly fetched credentials before giving up.
const MAX_REFRESHES: u32 = 2;

/// A client and the credential generation it signs with.
#[derive(Clone)]
pub(crate) struct Handle {
    pub client: Client,
    /// `None` for static keys and the default chain (nothing to refresh).
    generation: Option<u64>,
    /// The secrets this client signs with, masked in any server message.
    secrets: Arc<Vec<String>>,
}

enum Mode {
    Fixed(Handle),
    Refreshing {
        cache: CredentialCache<S3Credentials>,
        current: Mutex<Option<Handle>>,
    },
}

/// Hands out clients; replaces them when credentials are refreshed.
pub(crate) struct Clients {
    base: aws_sdk_s3::config::Builder,
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

fn sdk_credentials(c: &S3Credentials) -> Credentials {
    // No expiry is passed on: the CredentialCache owns expiry and refresh.
    Credentials::new(
        c.access_key.expose(),
        c.secret_key.expose(),
        c.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "cbob",
    )
}

fn secrets_of(c: &S3Credentials) -> Arc<Vec<String>> {
    let mut v = vec![c.secret_key.expose().to_string()];
    if let Some(t) = &c.session_token {
        v.push(t.expose().to_string());
    }
    Arc::new(v)
}

impl Clients {
    pub(crate) async fn new(cfg: &S3Config) -> StorageResult<Self> {
        // The SDK retries each HTTP request up to 3 attempts (standard mode, with backoff).
        // We keep that on purpose despite core's retry layer: the SDK can re-send a single
        // request whose body it still holds (one multipart part, an in-memory put) and a request
        // that hit a stale pooled connection, which the outer layer cannot do for a streamed put
        // without restarting the whole transfer. It is kept small because the outer layer
        // retries whole operations with its own longer backoff on top.
        let retry = RetryConfig::standard().with_max_attempts(cfg.sdk_max_attempts);
        // Only a connect timeout: an attempt that streams a large part may legitimately take
        // minutes under a bandwidth limit; the SDK's stalled-stream protection (on by default)
        // catches transfers that stop moving.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .build();
        let region = match (&cfg.region, &cfg.endpoint) {
            (Some(r), _) => RegionProviderChain::first_try(Region::new(r.clone())),
            // A custom endpoint without a region: S3-compatible stores sign with us-east-1.
            (None, Some(_)) => RegionProviderChain::first_try(Region::new(DEFAULT_REGION)),
            (None, None) => {
                RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION))
            }
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep);
        }
        loader = match &cfg.auth {
            S3Auth::DefaultChain => loader,
            S3Auth::Static(c) => loader.credentials_provider(sdk_credentials(c)),
            // Each generation's client gets its credentials below; build no default chain.
            S3Auth::Refreshable(_) => loader.no_credentials(),
        };
        let sdk = loader.load().await;
        let mut base =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(cfg.force_path_style);
        if cfg.checksums_when_required {
            base = base
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let mode = match &cfg.auth {
            S3Auth::DefaultChain => Mode::Fixed(Handle {
                client: Client::from_conf(base.clone().build()),
                generation: None,
                secrets: Arc::new(Vec::new()),
            }),
            S3Auth::Static(c) => Mode::Fixed(Handle {
                client: Client::from_conf(base.clone().build()),
                generation: None,
                secrets: secrets_of(c),
            }),
            S3Auth::Refreshable(source) => Mode::Refreshing {
                cache: CredentialCache::new(source.clone()),
                current: Mutex::new(None),
            },
        };
        Ok(Self { base, mode })
    }

    /// The client to send the next request with.
    pub(crate) async fn get(&self) -> StorageResult<Handle> {
        match &self.mode {
            Mode::Fixed(h) => Ok(h.clone()),
            Mode::Refreshing { cache, current } => {
                let lease = cache
                    .get()
                    .await
                    .map_err(|e| e.context("fetching S3 credentials"))?;
                let mut cur = current.lock().expect("client cache poisoned");
                if let Some(h) = cur
                    .as_ref()
                    .filter(|h| h.generation == Some(lease.generation))
                {
                    return Ok(h.clone());
                }
                let conf = self
                    .base
                    .clone()
                    .credentials_provider(sdk_credentials(&lease.credentials))
                    .build();
                let h = Handle {
                    client: Client::from_conf(conf),
                    generation: Some(lease.generation),
                    secrets: secrets_of(&lease.credentials),
                };
                *cur = Some(h.clone());
                Ok(h)
            }
        }
    }

    /// Reports that the service rejected `h`'s credentials as expired; returns whether fresh
    /// ones can be fetched (false for static keys and the default chain).
    fn rejected(&self, h: &Handle) -> bool {
        match (&self.mode, h.generation) {
            (Mode::Refreshing { cache, .. }, Some(generation)) => {
                tracing::info!(
                    generation,
                    "S3 rejected the temporary credentials; fetching new ones"
                );
                cache.invalidate(generation);
                true
            }
            _ => false,
        }
    }

    /// Sends a request built by `f`, re-sending it with fresh credentials when the service says
    /// they expired. `f` must be able to build the same request again (its body replayable).
    pub(crate) async fn call<T, E, F, Fut>(&self, ctx: &Ctx<'_>, mut f: F) -> StorageResult<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let mut refreshes = 0;
        loop {
            let h = self.get().await?;
            match f(h.client.clone()).await {
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

    /// Sends a request whose body cannot be replayed (a streamed put). When its credentials were
    /// rejected as expired, the cache is invalidated and the error is marked transient: the
    /// caller's retry of the whole transfer then runs with fresh credentials.
    pub(crate) async fn call_once<T, E, Fut>(
        &self,
        ctx: &Ctx<'_>,
        h: &Handle,
        fut: Fut,
    ) -> StorageResult<T>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        match fut.await {
            Ok(v) => Ok(v),
            Err(e) => {
                let failure = classify(&e);
                let refreshed = failure.refresh && self.rejected(h);
                let err = failure.into_error(ctx, &h.secrets);
                Err(if refreshed {
                    StorageError::new(
                        StorageErrorKind::CredentialsExpired,
                        format!(
                            "{}; new credentials were fetched, retry the transfer",
                            err.message()
                        ),
                    )
                    .with_transient(true)
                } else {
                    err
                })
            }
        }
    }
}
