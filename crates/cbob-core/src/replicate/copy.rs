//! Server-side copy between a primary and a replica of the same service and account, with a
//! fallback to streaming when the service refuses.
//!
//! The sync engine asks the replica to `copy_from` the primary whenever both say they can (same
//! endpoint and credential identity). Stores that speak a provider's API do not all implement its
//! copy calls (an S3-compatible server answering 501 to CopyObject, a bucket policy denying the
//! source read to a copy), so a refusal must not fail the replica: this layer then streams the
//! object from the primary itself, and after a refusal that will not change (the operation is
//! unsupported or denied) streams every later object of the run without asking again.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::layers::BandwidthLimiter;
use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, DynProvider, KeyPrefix, ObjectKey,
    ObjectMeta, PutOptions, StorageErrorKind, StorageProvider, StorageResult,
};

/// What the copies of one replica's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Objects the service copied without their bytes passing through this host.
    pub server_side: u64,
    /// Objects streamed through this host because the service refused the copy.
    pub streamed: u64,
    /// The first refusal, as the service worded it.
    pub refusal: Option<String>,
}

/// The replica, with `copy_from` falling back to streaming from `primary`.
#[derive(Debug)]
pub(crate) struct CopyFallback {
    inner: DynProvider,
    primary: DynProvider,
    bandwidth: Option<Arc<BandwidthLimiter>>,
    /// Set after a refusal that will not change within the run.
    refused: AtomicBool,
    server_side: AtomicU64,
    streamed: AtomicU64,
    refusal: Mutex<Option<String>>,
}

impl CopyFallback {
    pub(crate) fn new(
        inner: DynProvider,
        primary: DynProvider,
        bandwidth: Option<Arc<BandwidthLimiter>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            primary,
            bandwidth,
            refused: AtomicBool::new(false),
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

    /// Copies `key` through this host: the primary's bytes (throttled like any streamed
    /// transfer) into the replica, which enforces the size.
    async fn stream(
        &self,
        key: &ObjectKey,
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let stream = self.primary.get(key, None).await?;
        let stream = match &self.bandwidth {
            Some(limiter) => limiter.throttle(stream),
            None => stream,
        };
        let written = self
            .inner
            .put(key, Body::from_stream(size, stream), options)
            .await?;
        self.streamed.fetch_add(1, Ordering::Relaxed);
        Ok(written)
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
        self.inner.put(key, body, options).await
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
        if self.refused.load(Ordering::Relaxed) {
            return self.stream(key, size, options).await;
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
                        "the service refused a server-side copy; streaming {} through this host",
                        if for_good { "every object from now on" } else { "this object" }
                    );
                }
                self.stream(key, size, options).await
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

    /// A local directory cannot copy server-side (it answers Unsupported), so it stands in for
    /// a store that refuses: the object must arrive anyway, streamed, and later objects must
    /// not ask again.
    #[tokio::test]
    async fn a_refused_copy_is_streamed_and_not_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let primary: DynProvider = Arc::new(LocalProvider::new(dir.path().join("p")).unwrap());
        let replica: DynProvider = Arc::new(LocalProvider::new(dir.path().join("r")).unwrap());
        let source = CopySource {
            service: "local",
            account: "test".into(),
            bucket: "p".into(),
            prefix: String::new(),
        };
        let layer = CopyFallback::new(replica.clone(), primary.clone(), None);
        for (i, body) in [&b"first object"[..], b"second"].into_iter().enumerate() {
            let key = ObjectKey::new(format!("backup/s/{i}")).unwrap();
            primary
                .put(
                    &key,
                    Body::from_bytes(body.to_vec()),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
            let meta = layer
                .copy_from(&source, &key, body.len() as u64, &PutOptions::default())
                .await
                .unwrap();
            assert_eq!(meta.size, body.len() as u64);
            assert_eq!(read_to_bytes(replica.as_ref(), &key).await.unwrap(), body);
        }
        let stats = layer.stats();
        assert_eq!((stats.server_side, stats.streamed), (0, 2));
        assert!(layer.refused.load(Ordering::Relaxed));
        assert!(stats.refusal.is_some());
    }

    /// Discovery lists the replica's directories through this layer: it must reach the
    /// replica's delimiter listing, not fall back to listing every object.
    #[tokio::test]
    async fn directory_listing_reaches_the_replica() {
        use crate::testkit::{FailurePlan, FlakyProvider};
        let dir = tempfile::tempdir().unwrap();
        let primary: DynProvider = Arc::new(LocalProvider::new(dir.path().join("p")).unwrap());
        let local: DynProvider = Arc::new(LocalProvider::new(dir.path().join("r")).unwrap());
        let key = ObjectKey::new("backup/s1/backup.info").unwrap();
        local
            .put(&key, Body::from_bytes("x"), &PutOptions::default())
            .await
            .unwrap();
        let counted = Arc::new(FlakyProvider::new(local, FailurePlan::transient(0)));
        let layer = CopyFallback::new(counted.clone(), primary, None);
        let prefix = KeyPrefix::new("backup/").unwrap();
        let dirs = crate::storage::list_dirs(layer.as_ref(), &prefix)
            .await
            .unwrap();
        assert_eq!(dirs, [KeyPrefix::new("backup/s1/").unwrap()]);
        assert_eq!(counted.calls("list_prefixes"), 1);
        assert_eq!(counted.calls("list"), 0);
    }

    #[tokio::test]
    async fn a_missing_source_surfaces_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let primary: DynProvider = Arc::new(LocalProvider::new(dir.path().join("p")).unwrap());
        let replica: DynProvider = Arc::new(LocalProvider::new(dir.path().join("r")).unwrap());
        let layer = CopyFallback::new(replica, primary, None);
        let key = ObjectKey::new("gone").unwrap();
        let source = CopySource {
            service: "local",
            account: "test".into(),
            bucket: "p".into(),
            prefix: String::new(),
        };
        // Refused (Unsupported), then the stream finds nothing: the NotFound surfaces.
        let err = layer
            .copy_from(&source, &key, 3, &PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::NotFound, "{err}");
        assert_eq!(layer.stats().streamed, 0);
    }
}
