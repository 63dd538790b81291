//! cbob storage provider for MinIO and other self-hosted S3-compatible stores.
//!
//! This crate holds only MinIO's conventions; the storage code is the S3 provider's
//! ([`cbob_provider_s3::S3Provider`]), built from an [`cbob_provider_s3::S3Config`] that
//! [`config_from_spec`] fills in:
//!
//! - kind and URL scheme `minio` (`minio://bucket/prefix`), shown in every message;
//! - an endpoint is required (`CBOB_DEST_ENDPOINT`), with a clear error when it is missing;
//! - path-style addressing always (`endpoint/bucket/key`);
//! - region `us-east-1` unless one is given (MinIO's default, and what it signs with);
//! - payload checksums only when an operation requires them (`WhenRequired`): self-hosted stores
//!   mishandle the SDK's default aws-chunked trailing checksums;
//! - credentials are a MinIO user's access key and secret key: from the spec, else
//!   `MINIO_ACCESS_KEY`/`MINIO_SECRET_KEY`, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`;
//!   never the AWS instance-metadata chain.
//!
//! [`register`] adds the `minio` kind to a [`ProviderRegistry`].

mod config;

use std::sync::Arc;

use async_trait::async_trait;
use cbob_core::storage::{
    DynProvider, ProviderFactory, ProviderRegistry, ProviderSpec, StorageResult,
};
use cbob_provider_s3::S3Provider;

pub use config::{ENV_KEY_PAIRS, SCHEME, config_from_spec, config_from_spec_with_env};

/// Builds the S3 provider for a MinIO spec.
pub async fn provider(spec: &ProviderSpec) -> StorageResult<S3Provider> {
    S3Provider::new(config_from_spec(spec)?).await
}

/// Builds providers for the `minio` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct MinioFactory;

#[async_trait]
impl ProviderFactory for MinioFactory {
    fn kinds(&self) -> &'static [&'static str] {
        &[SCHEME]
    }

    async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider> {
        Ok(Arc::new(provider(spec).await?))
    }
}

/// Registers the `minio` provider kind.
pub fn register(registry: &mut ProviderRegistry) {
    registry.register(Arc::new(MinioFactory));
}
