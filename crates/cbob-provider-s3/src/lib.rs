//! cbob storage provider for AWS S3 and S3-compatible stores, on aws-sdk-s3.
//!
//! - [`S3Provider`] implements [`cbob_core::storage::StorageProvider`]: paginated sorted
//!   listings, ranged streaming reads, single or multipart writes with bounded memory (aborted on
//!   any failure, visible only when complete), server-side copy (UploadPartCopy above 5 GiB).
//! - [`S3Config`] holds the settings; [`S3Config::from_spec`] reads a
//!   [`cbob_core::storage::ProviderSpec`]. The MinIO crate reuses it with its own defaults.
//! - Credentials: static keys (with an optional session token), a refreshable
//!   [`cbob_core::storage::credentials::CredentialSource`] (re-sent transparently on
//!   `ExpiredToken`), or the default AWS chain.
//! - [`register`] adds the `s3` kind to a [`ProviderRegistry`].
//!
//! An S3-compatible store with other defaults (the MinIO crate) starts from the same settings:
//!
//! ```no_run
//! # async fn f(spec: &cbob_core::storage::ProviderSpec) -> cbob_core::storage::StorageResult<()> {
//! let mut cfg = cbob_provider_s3::S3Config::from_spec(spec)?; // region defaults to us-east-1
//! cfg.scheme = "minio";
//! cfg.force_path_style = true;
//! cfg.checksums_when_required = true;
//! let provider = cbob_provider_s3::S3Provider::new(cfg).await?;
//! # let _ = provider; Ok(()) }
//! ```
//!
//! Limits: objects up to 5 TiB; server-side copy above 5 GiB uses UploadPartCopy. A streamed
//! body between `replayable_put_limit` (1 MiB) and the multipart threshold (8 MiB) goes out as
//! one non-replayable PutObject: if its credentials expire during it, the put fails with a
//! transient `CredentialsExpired` after fetching new ones, and the caller retries the transfer.

mod client;
mod config;
mod errors;
mod provider;
mod stale_uploads;
mod upload;

use std::sync::Arc;

use async_trait::async_trait;
use cbob_core::storage::{
    DynProvider, ProviderFactory, ProviderRegistry, ProviderSpec, StorageResult,
};

pub use config::{
    DEFAULT_REGION, MAX_OBJECT_SIZE, MAX_PARTS, MAX_SINGLE_OBJECT, MIN_PART_SIZE, S3Auth, S3Config,
    Sse,
};
pub use provider::S3Provider;

/// Builds [`S3Provider`]s for the `s3` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct S3Factory;

#[async_trait]
impl ProviderFactory for S3Factory {
    fn kinds(&self) -> &'static [&'static str] {
        &["s3"]
    }

    async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider> {
        let config = S3Config::from_spec(spec)?;
        Ok(Arc::new(S3Provider::new(config).await?))
    }
}

/// Registers the `s3` provider kind.
pub fn register(registry: &mut ProviderRegistry) {
    registry.register(Arc::new(S3Factory));
}
