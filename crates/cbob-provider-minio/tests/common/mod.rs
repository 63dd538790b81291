//! Builds MinIO providers against the shared s3s-fs server of cbob-test-support (an S3 store
//! that checks every signature and payload checksum, as MinIO does): a fresh bucket per test.
#![allow(dead_code)] // each test binary uses a different subset

use cbob_core::Secret;
use cbob_core::storage::{DynProvider, ProviderRegistry, ProviderSpec, StorageResult};

/// Runs a blocking test-support call (server start-up, bucket creation) off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking helper panicked")
}

/// A `minio` spec as an operator writes it: endpoint, bucket, prefix, access and secret key;
/// no region, no path-style or checksum settings (the provider's conventions supply them).
pub fn spec(endpoint: &str, bucket: &str, prefix: &str) -> ProviderSpec {
    ProviderSpec {
        kind: "minio".into(),
        bucket: Some(bucket.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        access_key: Some(Secret::new(cbob_test_support::s3s::ACCESS_KEY)),
        secret_key: Some(Secret::new(cbob_test_support::s3s::SECRET_KEY)),
        ..ProviderSpec::default()
    }
}

/// A fresh bucket on s3s-fs: (endpoint, bucket).
pub async fn fresh_bucket(base: &'static str) -> (String, String) {
    blocking(move || {
        let s = cbob_test_support::s3s_fs();
        (s.endpoint(), s.fresh_bucket(base))
    })
    .await
}

/// Builds through the registry, as the CLI does.
pub async fn try_build(spec: &ProviderSpec) -> StorageResult<DynProvider> {
    let mut registry = ProviderRegistry::new();
    cbob_provider_minio::register(&mut registry);
    registry.build(spec).await
}

pub async fn build(spec: &ProviderSpec) -> DynProvider {
    try_build(spec)
        .await
        .unwrap_or_else(|e| panic!("build {}: {e}", spec.describe()))
}

/// A fresh bucket used under a prefix.
pub async fn fresh_minio() -> DynProvider {
    let (endpoint, bucket) = fresh_bucket("minio-conf").await;
    build(&spec(&endpoint, &bucket, "cbob/root")).await
}
