//! cbob storage provider for Google Cloud Storage, on the JSON API (`gcloud-storage`).
//!
//! - [`GcsProvider`] implements [`cbob_core::storage::StorageProvider`]: paginated sorted
//!   listings, ranged streaming reads, single-request writes for small objects (MD5 and CRC32C
//!   checked by GCS) and resumable chunked uploads for large ones (bounded memory, interrupted
//!   chunks resent, hashes compared at the end, visible only when complete), server-side copy
//!   through `objects.rewrite`, MD5/CRC32C reported in every [`cbob_core::storage::ObjectMeta`].
//! - [`GcsConfig`] holds the settings; [`GcsConfig::from_spec`] reads a
//!   [`cbob_core::storage::ProviderSpec`].
//! - Credentials: a service-account JSON key file (`CBOB_DEST_GCS_CREDENTIALS`, else
//!   `GOOGLE_APPLICATION_CREDENTIALS`), exchanged for access tokens that are refreshed before they
//!   expire; or none when only an endpoint is given (fake-gcs-server and other emulators).
//! - [`register`] adds the `gcs` kind to a [`ProviderRegistry`].
//!
//! ```no_run
//! # async fn f() -> cbob_core::storage::StorageResult<()> {
//! use cbob_core::storage::ProviderSpec;
//! let spec = ProviderSpec {
//!     kind: "gcs".into(),
//!     bucket: Some("my-backups".into()),
//!     prefix: "cbob".into(),
//!     credentials_file: Some("/etc/cbob/gcs-key.json".into()),
//!     storage_class: Some("NEARLINE".into()),
//!     ..ProviderSpec::default()
//! };
//! let provider = cbob_provider_gcs::GcsProvider::new(cbob_provider_gcs::GcsConfig::from_spec(&spec)?).await?;
//! # let _ = provider; Ok(()) }
//! ```
//!
//! Not covered: credentials from the GCE/GKE metadata server or `gcloud` user logins without a
//! key file, and customer-supplied encryption keys.

mod auth;
mod chunks;
mod config;
mod errors;
mod provider;
mod upload;

use std::sync::Arc;

use async_trait::async_trait;
use cbob_core::storage::{
    DynProvider, ProviderFactory, ProviderRegistry, ProviderSpec, StorageResult,
};

pub use config::{
    CHUNK_ALIGN, DEFAULT_ENDPOINT, GcsAuth, GcsConfig, MAX_OBJECT_SIZE, STORAGE_CLASSES,
    normalize_storage_class,
};
pub use provider::GcsProvider;

/// Builds [`GcsProvider`]s for the `gcs` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcsFactory;

#[async_trait]
impl ProviderFactory for GcsFactory {
    fn kinds(&self) -> &'static [&'static str] {
        &["gcs"]
    }

    async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider> {
        let config = GcsConfig::from_spec(spec)?;
        Ok(Arc::new(GcsProvider::new(config).await?))
    }
}

/// Registers the `gcs` provider kind.
pub fn register(registry: &mut ProviderRegistry) {
    registry.register(Arc::new(GcsFactory));
}
