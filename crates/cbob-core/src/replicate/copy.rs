//! Server-side copy between a primary and a replica of the same service and account, with a
//! fallback to streaming when the service refuses.
//!
//! The sync engine asks the replica to `copy_from` the primary whenever both say they can (same
//! endpoint and credential identity). Stores that speak a provider's API do not all implement its
//! copy calls (an S3-compatible server answering 501 to CopyObject, a bucket policy denying the
//! source read to a copy), so a refusal must not fail the replica. This layer turns every refusal
//! into `Unsupported`, which the engine's transfer (`sync/transfer.rs`) answers by streaming the
//! object through its verified path, like any other sync transfer: the primary's bytes pass the
//! pgBackRest checks (manifest checksums, WAL SHA-1, info checksums) before the replica publishes
//! them. After a refusal that will not change (the operation is unsupported or denied) this layer
//! refuses every later copy of the run itself, without asking the service again. It counts the
//! streamed objects by the `put`s of keys it refused.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, DynProvider, KeyPrefix, ObjectKey,
    ObjectMeta, PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
};

/// What the copies of one replica's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Objects the service copied without their bytes passing through this host.
    pub server_side: u64,
    /// Objects streamed (and verified) through this host because the service refused the copy.
    pub streamed: u64,
    /// The first refusal, as the service worded it.
    pub refusal: Option<String>,
}

/// The replica, with every refused `copy_from` answered `Unsupported` so the engine streams it.
#[derive(Debug)]
pub(crate) struct CopyFallback {
    inner: DynProvider,
    /// Set after a refusal that will not change within the run.
    refused: AtomicBool,
    /// Keys refused and not yet written: their next successful `put` is the streamed copy, and
    /// a retried transfer of one of them is refused again without asking the service.
    pending: Mutex<HashSet<ObjectKey>>,
    server_side: AtomicU64,
    streamed: AtomicU64,
    refusal: Mutex<Option<String>>,
}

impl CopyFallback {
    pub(crate) fn new(inner: DynProvider) -> Arc<Self> {
        Arc::new(Self {
            inner,
            refused: AtomicBool::new(false),
            pending: Mutex::new(HashSet::new()),
            server_side: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
            refusal: Mutex::new(None),
        })
    }

    pub(crate) fn stats(&self) -> CopyStats {
        CopyStats {
            server_side: self.server_side.load(Ordering::Relaxed),
            streamed: self.streamed.load(Ordering::Relaxed),
            refusal: self.refusal.lock().expect("refusal lock").clone(),
        }
    }

    /// Notes `key` as refused (`why`: the service's answer) and returns the error that makes
    /// the engine stream it.
    fn refuse(&self, key: &ObjectKey, why: &str) -> StorageError {
        self.pending
            .lock()
            .expect("pending lock")
            .insert(key.clone());
        StorageError::new(
            StorageErrorKind::Unsupported,
            format!("{key}: server-side copy refused ({why}); streaming it instead"),
        )
    }
}

/// Refusals worth streaming around. Transient failures were already retried below this layer
/// and go back to the engine (which retries the transfer); a missing source is the primary
/// changing under the run, which streaming cannot fix either.
fn refusal(kind: StorageErrorKind) -> Option<bool> {
    match kind {
        // The service or a policy will say the same for every object: stop asking.
        StorageErrorKind::Unsupported | StorageErrorKind::PermissionDenied => Some(true),
        // Something about this object (a 4xx the provider could not classify): stream it alone.
        StorageErrorKind::Other => Some(false),
        _ => None,
    }
}

#[async_trait]
impl StorageProvider for CopyFallback {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        self.inner.list_prefixes(prefix).await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        self.inner.get(key, range).await
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let written = self.inner.put(key, body, options).await?;
        if self.pending.lock().expect("pending lock").remove(key) {
            self.streamed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(written)
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.inner.delete(key).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        self.inner.copy(from, to).await
    }

    fn copy_source(&self) -> Option<CopySource> {
        self.inner.copy_source()
    }

    fn can_copy_from(&self, source: &CopySource) -> bool {
        self.inner.can_copy_from(source)
    }

    async fn copy_from(
        &self,
        source: &CopySource,
        key: &ObjectKey,
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        if self.refused.load(Ordering::Relaxed)
            || self.pending.lock().expect("pending lock").contains(key)
        {
            let why = self.refusal.lock().expect("refusal lock").clone();
            return Err(self.refuse(key, why.as_deref().unwrap_or("earlier in this run")));
        }
        match self.inner.copy_from(source, key, size, options).await {
            Ok(meta) => {
                self.server_side.fetch_add(1, Ordering::Relaxed);
                Ok(meta)
            }
            Err(e) => {
                let Some(for_good) = refusal(e.kind()) else {
                    return Err(e);
                };
                let first = {
                    let mut r = self.refusal.lock().expect("refusal lock");
                    let first = r.is_none();
                    if first {
                        *r = Some(e.to_string());
                    }
                    first
                };
                if for_good {
                    self.refused.store(true, Ordering::Relaxed);
                }
                if first {
                    tracing::warn!(
                        replica = %self.inner.describe(),
                        error = %e,
                        "the service refused a server-side copy; streaming {} through this host, verified",
                        if for_good { "every object from now on" } else { "this object" }
                    );
                }
                Err(self.refuse(key, &e.to_string()))
            }
        }
    }

    async fn barrier(&self) -> StorageResult<()> {
        self.inner.barrier().await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        self.inner.check(mode).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalProvider;
    use crate::storage::read_to_bytes;

    /// A replica directory whose `copy_from` answers `kind`, counting the requests.
    #[derive(Debug)]
    struct Refusing {
        inner: DynProvider,
        kind: StorageErrorKind,
        asked: AtomicU64,
    }

    #[async_trait]
    impl StorageProvider for Refusing {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
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
        async fn copy_from(
            &self,
            _: &CopySource,
            key: &ObjectKey,
            _: u64,
            _: &PutOptions,
        ) -> StorageResult<ObjectMeta> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Err(StorageError::new(
                self.kind,
                format!("{key}: 501 NotImplemented"),
            ))
        }
        async fn check(&self, mode: CheckMode) -> StorageResult<()> {
            self.inner.check(mode).await
        }
    }

    fn source() -> CopySource {
        CopySource {
            service: "local",
            account: "test".into(),
            bucket: "p".into(),
            prefix: String::new(),
        }
    }

    fn refusing(
        dir: &std::path::Path,
        kind: StorageErrorKind,
    ) -> (Arc<Refusing>, Arc<CopyFallback>) {
        let inner: DynProvider = Arc::new(LocalProvider::new(dir.join("r")).unwrap());
        let replica = Arc::new(Refusing {
            inner,
            kind,
            asked: AtomicU64::new(0),
        });
        let layer = CopyFallback::new(replica.clone());
        (replica, layer)
    }

    async fn copy(layer: &CopyFallback, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        layer
            .copy_from(&source(), key, 3, &PutOptions::default())
            .await
    }

    async fn put(layer: &CopyFallback, key: &ObjectKey) {
        layer
            .put(key, Body::from_bytes("abc"), &PutOptions::default())
            .await
            .unwrap();
    }

    /// The layer never streams by itself: a refusal comes back as `Unsupported` (what makes the
    /// engine stream the object through its verifiers), the object counts as streamed once the
    /// engine has written it, and after a refusal for good the service is not asked again.
    #[tokio::test]
    async fn a_refusal_for_good_is_left_to_the_engine_and_not_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, layer) = refusing(dir.path(), StorageErrorKind::Unsupported);
        let (a, b) = (
            ObjectKey::new("archive/s/a").unwrap(),
            ObjectKey::new("archive/s/b").unwrap(),
        );
        let err = copy(&layer, &a).await.unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("501 NotImplemented"), "{err}");
        assert_eq!(
            replica.head(&a).await.unwrap_err().kind(),
            StorageErrorKind::NotFound,
            "the layer wrote nothing itself"
        );
        assert_eq!(layer.stats().streamed, 0, "not streamed until written");
        put(&layer, &a).await;
        assert_eq!(read_to_bytes(layer.as_ref(), &a).await.unwrap(), "abc");

        let err = copy(&layer, &b).await.unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::Unsupported, "{err}");
        assert_eq!(replica.asked.load(Ordering::Relaxed), 1, "asked once");
        put(&layer, &b).await;
        // An info file or manifest written directly is no streamed copy.
        put(&layer, &ObjectKey::new("archive/s/archive.info").unwrap()).await;
        // Writing a streamed object again (a later retry) does not count it twice.
        put(&layer, &b).await;
        let stats = layer.stats();
        assert_eq!((stats.server_side, stats.streamed), (0, 2));
        assert!(
            stats.refusal.unwrap().contains("501 NotImplemented"),
            "the first refusal is kept"
        );
    }

    /// A refusal about one object (an unclassified 4xx) streams that object alone: its retries
    /// are refused without asking, the next object is asked for again.
    #[tokio::test]
    async fn a_refusal_of_one_object_refuses_only_that_object() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, layer) = refusing(dir.path(), StorageErrorKind::Other);
        let (a, b) = (
            ObjectKey::new("archive/s/a").unwrap(),
            ObjectKey::new("archive/s/b").unwrap(),
        );
        for _ in 0..2 {
            let err = copy(&layer, &a).await.unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::Unsupported, "{err}");
        }
        assert_eq!(replica.asked.load(Ordering::Relaxed), 1);
        assert_eq!(
            copy(&layer, &b).await.unwrap_err().kind(),
            StorageErrorKind::Unsupported
        );
        assert_eq!(replica.asked.load(Ordering::Relaxed), 2, "b was asked for");
        put(&layer, &a).await;
        assert_eq!(layer.stats().streamed, 1);
    }

    /// Failures streaming cannot fix are no refusal: they reach the engine as they are.
    #[tokio::test]
    async fn a_missing_source_surfaces_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (_, layer) = refusing(dir.path(), StorageErrorKind::NotFound);
        let key = ObjectKey::new("gone").unwrap();
        let err = copy(&layer, &key).await.unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::NotFound, "{err}");
        put(&layer, &key).await;
        let stats = layer.stats();
        assert_eq!((stats.streamed, stats.refusal), (0, None));
    }

    /// Discovery lists the replica's directories through this layer: it must reach the
    /// replica's delimiter listing, not fall back to listing every object.
    #[tokio::test]
    async fn directory_listing_reaches_the_replica() {
        use crate::testkit::{FailurePlan, FlakyProvider};
        let dir = tempfile::tempdir().unwrap();
        let local: DynProvider = Arc::new(LocalProvider::new(dir.path().join("r")).unwrap());
        let key = ObjectKey::new("backup/s1/backup.info").unwrap();
        local
            .put(&key, Body::from_bytes("x"), &PutOptions::default())
            .await
            .unwrap();
        let counted = Arc::new(FlakyProvider::new(local, FailurePlan::transient(0)));
        let layer = CopyFallback::new(counted.clone());
        let prefix = KeyPrefix::new("backup/").unwrap();
        let dirs = crate::storage::list_dirs(layer.as_ref(), &prefix)
            .await
            .unwrap();
        assert_eq!(dirs, [KeyPrefix::new("backup/s1/").unwrap()]);
        assert_eq!(counted.calls("list_prefixes"), 1);
        assert_eq!(counted.calls("list"), 0);
    }
}
