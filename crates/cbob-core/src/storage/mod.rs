//! The storage abstraction: one small trait that every provider (local disk, S3, Azure, GCS,
//! MinIO) implements, plus the types it speaks in. Cross-cutting behaviour (retry, concurrency,
//! bandwidth) lives in [`crate::layers`] and wraps any provider.

mod body;
pub mod credentials;
mod error;
mod key;
pub mod local;
mod registry;
mod spec;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use body::{Body, ByteStream, collect_stream};
pub use error::{StorageError, StorageErrorKind, StorageResult};
pub use key::{KeyPrefix, ObjectKey};
pub use registry::{ProviderFactory, ProviderRegistry};
pub use spec::ProviderSpec;

/// Hashes a provider reports for an object, when it knows them. None of these is required;
/// end-to-end integrity comes from pgBackRest's own checksums, these are a cheap extra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHashes {
    /// MD5 of the whole object (S3 single-part ETag, Azure Content-MD5, GCS md5Hash).
    pub md5: Option<[u8; 16]>,
    /// CRC32C of the whole object (GCS).
    pub crc32c: Option<u32>,
    /// The provider's entity tag, opaque.
    pub etag: Option<String>,
}

/// What a listing or head returns for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub hashes: ObjectHashes,
}

impl ObjectMeta {
    pub fn new(key: ObjectKey, size: u64) -> Self {
        Self {
            key,
            size,
            modified: None,
            hashes: ObjectHashes::default(),
        }
    }
}

/// Options for a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Provider storage class / access tier (S3 `STANDARD_IA`, Azure `Cool`, GCS `NEARLINE`).
    pub storage_class: Option<String>,
}

/// Where a provider's objects live, for a server-side copy into another provider of the same
/// service (replication between two buckets of one account). Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    /// The service, e.g. `s3`, `azure`, `gcs`.
    pub service: &'static str,
    /// Who can read it: endpoint plus a credential identity (an access key id, an account
    /// name), never a secret. Two providers copy server-side only when this is equal.
    pub account: String,
    /// Bucket or container.
    pub bucket: String,
    /// Prefix of the provider's root inside the bucket (empty, or ending in `/`).
    pub prefix: String,
}

/// Whether `check()` should prove the provider can be read, or also written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    Read,
    ReadWrite,
}

/// What a provider can do, so callers pick the best strategy without trying and failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `copy()` works within this provider.
    pub server_side_copy: bool,
    /// Writes are durable only after `barrier()` (local disk with deferred fsync).
    pub needs_barrier: bool,
    /// The largest object a single `put` accepts.
    pub max_object_size: Option<u64>,
    /// `head`/`list` report MD5 for objects written by `put`.
    pub md5: bool,
    /// `head`/`list` report CRC32C.
    pub crc32c: bool,
}

/// A store of objects under a root or prefix.
///
/// Contract, which the conformance suite in [`crate::testkit`] checks for every provider:
/// - keys are [`ObjectKey`]s relative to the provider's root/prefix; validation happens before any I/O;
/// - `list` yields every object under a prefix exactly once, in ascending byte order of key,
///   across as many pages as the service needs; it never yields "directories";
/// - `get` streams the object (or a byte range of it) without buffering it whole;
/// - `put` streams a body of known size; the object becomes visible only once complete and only
///   if exactly `size` bytes arrived, replacing any previous object atomically;
/// - `delete` of a missing object succeeds;
/// - errors say whether they are transient (see [`StorageErrorKind::is_transient`]).
#[async_trait]
pub trait StorageProvider: Send + Sync + fmt::Debug {
    /// A human description without secrets, e.g. `local:/srv/backups` or `s3://bucket/prefix`.
    fn describe(&self) -> String;

    fn capabilities(&self) -> Capabilities;

    /// Lists every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>>;

    /// Metadata of one object; `NotFound` when missing.
    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta>;

    /// Streams an object, or the byte range `range` of it (end exclusive, clamped to the size).
    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream>;

    /// Writes an object from a body of known size, visible only when complete.
    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta>;

    /// Deletes an object; a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()>;

    /// Server-side copy within this provider.
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        let _ = (from, to);
        Err(StorageError::unsupported("server-side copy"))
    }

    /// This provider as the source of a server-side copy into another provider of the same
    /// service and account (see [`StorageProvider::copy_from`]); `None` when it cannot be one.
    fn copy_source(&self) -> Option<CopySource> {
        None
    }

    /// Whether [`StorageProvider::copy_from`] works from `source` (same service and account).
    fn can_copy_from(&self, source: &CopySource) -> bool {
        let _ = source;
        false
    }

    /// Copies `key` of `source` to the same key here without the bytes passing through cbob.
    /// Visible only when complete, like `put`. `size` is the source's size.
    async fn copy_from(
        &self,
        source: &CopySource,
        key: &ObjectKey,
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let _ = (source, key, size, options);
        Err(StorageError::unsupported(
            "server-side copy between providers",
        ))
    }

    /// Makes every completed `put` durable. Callers invoke it before publishing a file that
    /// references earlier writes (a manifest, an info file). A no-op where writes are durable at once.
    async fn barrier(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Proves the provider is reachable and usable: reads (and with `ReadWrite`, writes and
    /// deletes a probe object). Used by `config validate --check` and `replicate test`.
    async fn check(&self, mode: CheckMode) -> StorageResult<()>;
}

/// A shared provider handle.
pub type DynProvider = Arc<dyn StorageProvider>;

/// Reads a whole (small) object into memory: info files and manifests, never data files.
pub async fn read_to_bytes(
    provider: &dyn StorageProvider,
    key: &ObjectKey,
) -> StorageResult<bytes::Bytes> {
    let stream = provider.get(key, None).await?;
    collect_stream(stream).await
}
