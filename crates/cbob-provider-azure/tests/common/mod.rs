//! Builds providers against the shared Azurite of cbob-test-support: a fresh container per
//! test, so the tests of a binary run in parallel.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cbob_core::Secret;
use cbob_core::storage::credentials::{AzureCredentials, CredentialSource};
use cbob_core::storage::{DynProvider, ProviderRegistry, ProviderSpec, StorageResult};
use cbob_test_support::azurite::{ACCOUNT, ACCOUNT_KEY};

/// Runs a blocking test-support call (server start-up, container creation) off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking helper panicked")
}

/// A fresh container on the shared Azurite: (endpoint, container).
pub async fn fresh_container(base: &'static str) -> (String, String) {
    blocking(move || {
        let a = cbob_test_support::azurite();
        (a.endpoint(), a.fresh_container(base))
    })
    .await
}

/// A container SAS (`racwdl`, one hour) for `container`.
pub async fn container_sas(container: &str) -> String {
    let container = container.to_string();
    blocking(move || {
        cbob_test_support::azurite().container_sas(&container, "racwdl", Duration::from_secs(3600))
    })
    .await
}

/// A spec for `container/prefix` at `endpoint` with the development account's shared key.
pub fn shared_key_spec(endpoint: &str, container: &str, prefix: &str) -> ProviderSpec {
    ProviderSpec {
        kind: "azure".into(),
        account: Some(ACCOUNT.into()),
        bucket: Some(container.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        secret_key: Some(Secret::new(ACCOUNT_KEY)),
        ..ProviderSpec::default()
    }
}

/// A spec for `container/prefix` at `endpoint` with a SAS token.
pub fn sas_spec(endpoint: &str, container: &str, prefix: &str, sas: &str) -> ProviderSpec {
    ProviderSpec {
        kind: "azure".into(),
        account: Some(ACCOUNT.into()),
        bucket: Some(container.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        sas_token: Some(Secret::new(sas)),
        ..ProviderSpec::default()
    }
}

/// Builds through the registry, as the CLI does.
pub async fn build(spec: &ProviderSpec) -> DynProvider {
    let mut registry = ProviderRegistry::new();
    cbob_provider_azure::register(&mut registry);
    registry
        .build(spec)
        .await
        .unwrap_or_else(|e| panic!("build {}: {e}", spec.describe()))
}

/// Shared key, under a prefix in a fresh container (so name mapping below a root is exercised);
/// listing pages of 500, so the conformance suite's 1,536 keys then span four pages.
pub async fn fresh_shared_key() -> DynProvider {
    let (endpoint, container) = fresh_container("az-conf-key").await;
    let mut spec = shared_key_spec(&endpoint, &container, "cbob/root");
    spec.options.insert("list_page_size".into(), "500".into());
    build(&spec).await
}

/// A container-scoped SAS, at the root of a fresh container; listing pages of 500.
pub async fn fresh_sas() -> DynProvider {
    let (endpoint, container) = fresh_container("az-conf-sas").await;
    let sas = container_sas(&container).await;
    let mut spec = sas_spec(&endpoint, &container, "", &sas);
    spec.options.insert("list_page_size".into(), "500".into());
    build(&spec).await
}

/// Hands out the given credentials in order (the last one again and again) and counts fetches:
/// what a Crunchy Bridge token source does when a token is rejected and a new one issued.
#[derive(Debug)]
pub struct Sequence {
    queue: Mutex<VecDeque<AzureCredentials>>,
    pub fetches: AtomicU32,
}

impl Sequence {
    pub fn new(creds: impl IntoIterator<Item = AzureCredentials>) -> Self {
        Self {
            queue: Mutex::new(creds.into_iter().collect()),
            fetches: AtomicU32::new(0),
        }
    }

    pub fn fetches(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CredentialSource<AzureCredentials> for Sequence {
    async fn fetch(&self) -> StorageResult<AzureCredentials> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut q = self.queue.lock().unwrap();
        let next = if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        };
        Ok(next.expect("the sequence has credentials"))
    }
}

/// A shared key of the right shape that Azurite rejects.
pub const WRONG_KEY: &str = "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWJhc2U2NC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

pub fn shared_key(key: &str) -> AzureCredentials {
    AzureCredentials::SharedKey {
        account: ACCOUNT.into(),
        key: Secret::new(key),
    }
}

pub fn sas(token: &str) -> AzureCredentials {
    AzureCredentials::Sas {
        account: ACCOUNT.into(),
        token: Secret::new(token),
    }
}
