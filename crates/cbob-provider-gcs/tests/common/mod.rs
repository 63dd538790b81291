//! Builds GCS providers against the shared fake-gcs-server of cbob-test-support: a fresh
//! bucket per test, so the tests of a binary run in parallel.
#![allow(dead_code)] // each test binary uses a different subset

pub mod proxy;

use std::sync::Arc;

use cbob_core::storage::{DynProvider, ObjectKey, ProviderRegistry, ProviderSpec};
use cbob_provider_gcs::{GcsConfig, GcsProvider};

pub const MIB: u64 = 1024 * 1024;

/// Runs a blocking test-support call (server start-up, bucket creation) off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking helper panicked")
}

pub fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid test key")
}

/// A spec for `bucket/prefix` at `endpoint`, anonymous (only an endpoint is given).
pub fn spec(endpoint: &str, bucket: &str, prefix: &str) -> ProviderSpec {
    ProviderSpec {
        kind: "gcs".into(),
        bucket: Some(bucket.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        ..ProviderSpec::default()
    }
}

/// A fresh bucket on the shared fake-gcs-server: (endpoint, bucket).
pub async fn fresh_bucket(base: &'static str) -> (String, String) {
    blocking(move || {
        let g = cbob_test_support::fake_gcs();
        (g.endpoint(), g.fresh_bucket(base))
    })
    .await
}

/// Builds through the registry, as the CLI does.
pub async fn build(spec: &ProviderSpec) -> DynProvider {
    let mut registry = ProviderRegistry::new();
    cbob_provider_gcs::register(&mut registry);
    registry
        .build(spec)
        .await
        .unwrap_or_else(|e| panic!("build {}: {e}", spec.describe()))
}

/// A fresh bucket used under a prefix (so key mapping below a root is exercised).
pub async fn fresh_gcs() -> DynProvider {
    let (endpoint, bucket) = fresh_bucket("gcs-conf").await;
    build(&spec(&endpoint, &bucket, "cbob/root")).await
}

/// A provider with settings the spec cannot express (small chunks and the like).
pub async fn with_config(
    spec: &ProviderSpec,
    edit: impl FnOnce(&mut GcsConfig),
) -> Arc<GcsProvider> {
    let mut cfg = GcsConfig::from_spec(spec).expect("config");
    edit(&mut cfg);
    Arc::new(GcsProvider::new(cfg).await.expect("provider"))
}
