//! Builds providers against the shared test servers of cbob-test-support: a fresh bucket per
//! test, so the tests of a binary run in parallel.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;

use cbob_core::Secret;
use cbob_core::storage::{DynProvider, ProviderRegistry, ProviderSpec};
use cbob_provider_s3::{S3Config, S3Provider};
use cbob_test_support::S3Credentials;

/// Runs a blocking test-support call (server start-up, bucket creation, boto3) off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking helper panicked")
}

/// A spec for `bucket/prefix` at `endpoint` with static credentials.
pub fn spec(endpoint: &str, bucket: &str, prefix: &str, creds: &S3Credentials) -> ProviderSpec {
    ProviderSpec {
        kind: "s3".into(),
        bucket: Some(bucket.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        region: Some(creds.region.clone()),
        access_key: Some(Secret::new(creds.access_key_id.clone())),
        secret_key: Some(Secret::new(creds.secret_access_key.clone())),
        session_token: creds.session_token.clone().map(Secret::new),
        ..ProviderSpec::default()
    }
}

/// Builds through the registry, as the CLI does.
pub async fn build(spec: &ProviderSpec) -> DynProvider {
    let mut registry = ProviderRegistry::new();
    cbob_provider_s3::register(&mut registry);
    registry
        .build(spec)
        .await
        .unwrap_or_else(|e| panic!("build {}: {e}", spec.describe()))
}

/// A fresh bucket on plain moto, used under a prefix (so key mapping below a root is exercised).
pub async fn moto_bucket(base: &'static str) -> (String, String) {
    blocking(move || {
        let m = cbob_test_support::moto();
        (m.endpoint(), m.fresh_bucket(base))
    })
    .await
}

pub async fn fresh_moto() -> DynProvider {
    let (endpoint, bucket) = moto_bucket("s3-conf").await;
    let creds = cbob_test_support::moto().credentials();
    build(&spec(&endpoint, &bucket, "cbob/root", &creds)).await
}

/// A fresh bucket on s3s-fs, used at the bucket root.
pub async fn fresh_s3s() -> DynProvider {
    let (endpoint, bucket, creds) = blocking(|| {
        let s = cbob_test_support::s3s_fs();
        (s.endpoint(), s.fresh_bucket("s3-conf"), s.credentials())
    })
    .await;
    build(&spec(&endpoint, &bucket, "", &creds)).await
}

/// A provider with settings the spec cannot express (small copy thresholds and the like).
pub async fn with_config(spec: &ProviderSpec, edit: impl FnOnce(&mut S3Config)) -> Arc<S3Provider> {
    let mut cfg = S3Config::from_spec(spec).expect("config");
    edit(&mut cfg);
    Arc::new(S3Provider::new(cfg).await.expect("provider"))
}
