//! A cap on operations in flight against one provider (or shared by several).
//! A `get` or `list` keeps its permit until its stream ends or is dropped, so the cap counts
//! transfers, not just requests.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, DynProvider, KeyPrefix, ObjectKey,
    ObjectMeta, PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
};

/// Limits concurrent operations to the permits of a semaphore.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitProvider {
    inner: DynProvider,
    permits: Arc<Semaphore>,
}

impl ConcurrencyLimitProvider {
    /// At most `limit` operations at once (at least 1).
    pub fn new(inner: DynProvider, limit: usize) -> Self {
        Self::with_semaphore(inner, Arc::new(Semaphore::new(limit.max(1))))
    }

    /// Shares one semaphore between providers (e.g. one transfer budget for a whole run).
    pub fn with_semaphore(inner: DynProvider, permits: Arc<Semaphore>) -> Self {
        Self { inner, permits }
    }

    async fn permit(&self) -> StorageResult<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StorageError::new(StorageErrorKind::Other, "concurrency limiter closed"))
    }
}

/// A stream that holds a permit until it ends or is dropped.
struct Held<T> {
    inner: BoxStream<'static, T>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<T> Stream for Held<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let r = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = r {
            self.permit = None;
        }
        r
    }
}

fn hold<T: Send + 'static>(
    inner: BoxStream<'static, T>,
    permit: OwnedSemaphorePermit,
) -> BoxStream<'static, T> {
    Held {
        inner,
        permit: Some(permit),
    }
    .boxed()
}

#[async_trait]
impl StorageProvider for ConcurrencyLimitProvider {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.clone();
        futures::stream::once(async move {
            match this.permit().await {
                Ok(p) => hold(this.inner.list(&prefix), p),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        let _p = self.permit().await?;
        self.inner.list_prefixes(prefix).await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let _p = self.permit().await?;
        self.inner.head(key).await
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let p = self.permit().await?;
        let stream = self.inner.get(key, range).await?;
        Ok(hold(stream, p))
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let _p = self.permit().await?;
        self.inner.put(key, body, options).await
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let _p = self.permit().await?;
        self.inner.delete(key).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        let _p = self.permit().await?;
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
        let _p = self.permit().await?;
        self.inner.copy_from(source, key, size, options).await
    }

    async fn barrier(&self) -> StorageResult<()> {
        self.inner.barrier().await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        let _p = self.permit().await?;
        self.inner.check(mode).await
    }
}
