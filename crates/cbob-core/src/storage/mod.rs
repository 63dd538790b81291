//! The storage abstraction: one small trait that every provider (local disk, S3, Azure, GCS,
//! MinIO) implements, plus the types it speaks in. Cross-cutting behaviour (retry, concurrency,
//! bandwidth) lives in [`crate::layers`] and wraps any provider.

mod body;
pub mod credentials;
mod direct;
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
use futures::TryStreamExt;
use futures::stream::BoxStream;

pub use body::{Body, ByteStream, collect_stream};
pub use error::{StorageError, StorageErrorKind, StorageResult};
pub use key::{KeyPrefix, ObjectKey, listed_dir, listed_key};
pub use registry::{ProviderFactory, ProviderRegistry};
pub use spec::{ProviderSpec, Setting, SettingNames};

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
/// - `list_prefixes` (where implemented) gives the "directories" right below a prefix, the way
///   a delimiter listing does: a request per page of directories, not per page of objects;
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

    /// The "directories" directly below `prefix`: every distinct `prefix + name + "/"` that
    /// starts the key of at least one object (S3 ListObjectsV2 with delimiter `/`, Azure
    /// BlobPrefix, GCS `prefixes`). Sorted by byte order, each once, across every page; keys
    /// right below `prefix` (no further `/`) are not reported, and a missing prefix is an empty
    /// answer. Like `list`, matching is by string: `backup/st` finds `backup/stanza/`. A name
    /// that would break the key rules (`a//`) is skipped, as `list` skips such keys. Object
    /// stores may also report a directory that holds only a console-made "directory marker".
    ///
    /// Callers should use [`list_dirs`], which falls back to `list` when a provider (or a
    /// wrapper that does not forward this method) answers `Unsupported`, the default.
    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        let _ = prefix;
        Err(StorageError::unsupported("listing by delimiter"))
    }

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

/// The "directories" directly below `prefix` (see [`StorageProvider::list_prefixes`]): one
/// delimiter listing where the provider offers it; otherwise, when it answers `Unsupported`
/// (a provider or wrapper that does not implement it), the same answer derived from a full
/// `list` of `prefix`. Any other error is returned as it is.
pub async fn list_dirs(
    provider: &dyn StorageProvider,
    prefix: &KeyPrefix,
) -> StorageResult<Vec<KeyPrefix>> {
    match provider.list_prefixes(prefix).await {
        Err(e) if e.kind() == StorageErrorKind::Unsupported => {
            tracing::debug!(provider = %provider.describe(), %prefix, "no delimiter listing; deriving directories from a full listing");
            dirs_from_listing(provider, prefix).await
        }
        other => other,
    }
}

/// `list_prefixes` computed from `list`: each key's part up to the first `/` after `prefix`.
async fn dirs_from_listing(
    provider: &dyn StorageProvider,
    prefix: &KeyPrefix,
) -> StorageResult<Vec<KeyPrefix>> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut stream = provider.list(prefix);
    while let Some(meta) = stream.try_next().await? {
        let key = meta.key.as_str();
        let Some(rest) = key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if let Some(slash) = rest.find('/') {
            let dir = &key[..prefix.as_str().len() + slash + 1];
            // Keys are sorted, so a directory's keys are adjacent: skip the repeats cheaply.
            if dirs.last().is_some_and(|last: &String| last == dir) {
                continue;
            }
            dirs.insert(dir.to_string());
        }
    }
    // Every listed key is valid, so each of its leading parts ending in '/' is a valid prefix.
    dirs.into_iter().map(KeyPrefix::new).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::testkit::{FailurePlan, FlakyProvider};

    /// A provider that implements only what the trait requires, as an older or third-party
    /// wrapper would: `list_prefixes` is the default `Unsupported`.
    #[derive(Debug)]
    struct Plain {
        inner: local::LocalProvider,
        lists: AtomicU32,
    }

    #[async_trait]
    impl StorageProvider for Plain {
        fn describe(&self) -> String {
            format!("plain({})", self.inner.describe())
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(prefix)
        }
        async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn get(
            &self,
            key: &ObjectKey,
            range: Option<Range<u64>>,
        ) -> StorageResult<ByteStream> {
            self.inner.get(key, range).await
        }
        async fn put(
            &self,
            key: &ObjectKey,
            body: Body,
            options: &PutOptions,
        ) -> StorageResult<ObjectMeta> {
            self.inner.put(key, body, options).await
        }
        async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
            self.inner.delete(key).await
        }
        async fn check(&self, mode: CheckMode) -> StorageResult<()> {
            self.inner.check(mode).await
        }
    }

    fn prefix(s: &str) -> KeyPrefix {
        KeyPrefix::new(s).unwrap()
    }

    async fn strings(dirs: StorageResult<Vec<KeyPrefix>>) -> Vec<String> {
        dirs.unwrap()
            .into_iter()
            .map(|d| d.as_str().to_string())
            .collect()
    }

    #[tokio::test]
    async fn list_dirs_derives_directories_from_a_listing_when_unsupported() {
        let tmp = tempfile::tempdir().unwrap();
        let local = local::LocalProvider::new(tmp.path().join("root")).unwrap();
        for key in ["a/x", "a/b/y", "a/b/z", "a-b/q", "c/w", "d/e/f/g", "top"] {
            let key = ObjectKey::new(key).unwrap();
            local
                .put(&key, Body::from_bytes("x"), &PutOptions::default())
                .await
                .unwrap();
        }
        let plain = Plain {
            inner: local.clone(),
            lists: AtomicU32::new(0),
        };
        let e = plain.list_prefixes(&prefix("")).await.unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Unsupported);
        let cases: [(&str, &[&str]); 8] = [
            ("", &["a-b/", "a/", "c/", "d/"]),
            ("a/", &["a/b/"]),
            ("a/b/", &[]),
            ("a", &["a-b/", "a/"]),
            ("d/", &["d/e/"]),
            ("d/e/", &["d/e/f/"]),
            ("missing/", &[]),
            ("top", &[]),
        ];
        for (i, (p, want)) in cases.into_iter().enumerate() {
            let fallback = strings(list_dirs(&plain, &prefix(p)).await).await;
            assert_eq!(fallback, want, "fallback for {p:?}");
            assert_eq!(
                plain.lists.load(Ordering::SeqCst),
                i as u32 + 1,
                "one full listing per call"
            );
            // The local provider's own delimiter listing gives the same answer.
            assert_eq!(
                strings(local.list_prefixes(&prefix(p)).await).await,
                want,
                "local list_prefixes for {p:?}"
            );
        }
    }

    /// Stanza discovery (`sync --source`, verify, replicate) reads one directory listing of
    /// `backup/` and heads the info files, and finds what a full listing would.
    #[tokio::test]
    async fn stanzas_are_discovered_from_one_directory_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let local = local::LocalProvider::new(tmp.path().join("root")).unwrap();
        for key in [
            "backup/s1/backup.info",
            "backup/s1/20260101-000000F/backup.manifest",
            "backup/s2/backup.info.copy",
            "backup/a/backup.info",
            "backup/a-b/backup.info",
            "backup/no-info/20260101-000000F/backup.manifest",
            "backup/deep/sub/backup.info",
            "backup/backup.info",
            "archive/s3/archive.info",
        ] {
            let key = ObjectKey::new(key).unwrap();
            local
                .put(&key, Body::from_bytes("x"), &PutOptions::default())
                .await
                .unwrap();
        }
        let want = ["a", "a-b", "s1", "s2"];
        let counted = Arc::new(FlakyProvider::new(
            Arc::new(local.clone()),
            FailurePlan::transient(0),
        ));
        let dyn_counted: DynProvider = counted.clone();
        assert_eq!(
            crate::sync::discover_stanzas(&dyn_counted).await.unwrap(),
            want
        );
        assert_eq!(counted.calls("list_prefixes"), 1);
        assert_eq!(counted.calls("list"), 0, "no listing of every backup file");
        // backup.info for each of the six directories, and the copy where it is missing.
        assert_eq!(counted.calls("head"), 6 + 3);
        // A provider without delimiter listings finds the same stanzas.
        let plain: DynProvider = Arc::new(Plain {
            inner: local,
            lists: AtomicU32::new(0),
        });
        assert_eq!(crate::sync::discover_stanzas(&plain).await.unwrap(), want);
    }

    #[tokio::test]
    async fn list_dirs_returns_other_errors_without_a_full_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let local: DynProvider = Arc::new(local::LocalProvider::new(tmp.path()).unwrap());
        let plan = FailurePlan {
            kind: StorageErrorKind::PermissionDenied,
            ..FailurePlan::transient(1)
        };
        let flaky = FlakyProvider::new(local, plan);
        let e = list_dirs(&flaky, &prefix("backup/")).await.unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::PermissionDenied);
        assert_eq!(flaky.calls("list_prefixes"), 1);
        assert_eq!(flaky.calls("list"), 0, "only Unsupported falls back");
        // Once the provider answers, list_dirs uses its answer (an empty store: no directories).
        assert!(
            list_dirs(&flaky, &prefix("backup/"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(flaky.calls("list"), 0);
    }
}
