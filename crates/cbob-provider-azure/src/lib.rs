//! cbob storage provider for Azure Blob Storage, on the official `azure_storage_blob` SDK.
//!
//! - [`AzureProvider`] implements [`cbob_core::storage::StorageProvider`]: sorted paginated
//!   listings, ranged streaming reads, single Put Blob or Put Block + Put Block List writes with
//!   bounded memory and Content-MD5 (visible only when committed), idempotent delete,
//!   server-side copy (Copy Blob), access tiers from the storage class.
//! - [`AzureConfig`] holds the settings; [`AzureConfig::from_spec`] reads a
//!   [`cbob_core::storage::ProviderSpec`]: `bucket` is the container, `prefix` the blob name
//!   prefix, `account` the storage account, `endpoint` a custom service URL (Azurite:
//!   `http://127.0.0.1:PORT/devstoreaccount1`), `secret_key` the shared key or `sas_token` a SAS,
//!   `storage_class` the access tier (Hot, Cool, Cold, Archive).
//! - Credentials: a Shared Key (signed by this crate's own pipeline policy, which the SDK 1.x
//!   lacks), a SAS token (in the URL query), or a refreshable
//!   [`cbob_core::storage::credentials::CredentialSource`] (a Crunchy Bridge backup token of
//!   type `azure`), fetched again when the service rejects the current ones.
//! - [`register`] adds the `azure` kind to a [`ProviderRegistry`].
//!
//! Memory: a body up to 4 MiB is sent from memory as one Put Blob; a larger one in 4 MiB blocks,
//! one uploading while the next is read (8 MiB at most per put). A failed block upload leaves
//! only uncommitted blocks, which Azure discards.

mod auth;
mod client;
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
    AccessTier, AzureAuth, AzureConfig, MAX_BLOCK_SIZE, MAX_BLOCKS, MAX_OBJECT_SIZE, MAX_SINGLE_PUT,
};
pub use provider::AzureProvider;

/// Builds [`AzureProvider`]s for the `azure` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct AzureFactory;

#[async_trait]
impl ProviderFactory for AzureFactory {
    fn kinds(&self) -> &'static [&'static str] {
        &["azure"]
    }

    async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider> {
        let config = AzureConfig::from_spec(spec)?;
        Ok(Arc::new(AzureProvider::new(config)?))
    }
}

/// Registers the `azure` provider kind.
pub fn register(registry: &mut ProviderRegistry) {
    registry.register(Arc::new(AzureFactory));
}
