//! A bandwidth cap shared by every transfer of a run: a token bucket that streams draw from.
//!
//! Each chunk reserves its bytes and sleeps off any debt, so the long-run rate equals the cap
//! however many streams share the bucket, and no stream can starve the others for long
//! (chunks are at most a few hundred KiB).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use tokio::time::Instant;

use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, DynProvider, KeyPrefix, ObjectKey,
    ObjectMeta, PutOptions, StorageProvider, StorageResult,
};

/// A token bucket measured in bytes.
#[derive(Debug)]
pub struct BandwidthLimiter {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// May go negative: a debt that later callers wait out in turn.
    tokens: f64,
    last: Instant,
}

impl BandwidthLimiter {
    /// A limiter of `bytes_per_sec` (at least 1) with a burst of 1/20 s of traffic (min 16 KiB),
    /// small enough that any measurement over a second or more sees the cap.
    pub fn new(bytes_per_sec: u64) -> Arc<Self> {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 20.0).max(16.0 * 1024.0);
        Arc::new(Self {
            bytes_per_sec: rate,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
            }),
        })
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec as u64
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: u64) {
        let wait = {
            let mut st = self.state.lock().expect("bandwidth limiter poisoned");
            let now = Instant::now();
            let elapsed = now.duration_since(st.last).as_secs_f64();
            st.last = now;
            st.tokens = (st.tokens + elapsed * self.bytes_per_sec).min(self.burst);
            st.tokens -= bytes as f64;
            if st.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-st.tokens / self.bytes_per_sec)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Throttles a byte stream through this limiter.
    pub fn throttle(self: &Arc<Self>, stream: ByteStream) -> ByteStream {
        let limiter = self.clone();
        stream
            .then(move |chunk| {
                let limiter = limiter.clone();
                async move {
                    if let Ok(c) = &chunk {
                        limiter.acquire(c.len() as u64).await;
                    }
                    chunk
                }
            })
            .boxed()
    }
}

/// Which transfers a [`BandwidthProvider`] throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes read by `get`.
    Read,
    /// Bytes written by `put`.
    Write,
    Both,
}

/// A provider whose reads and/or writes draw from a shared [`BandwidthLimiter`].
/// For a copy between two providers, throttle one side only, or every byte counts twice.
#[derive(Debug, Clone)]
pub struct BandwidthProvider {
    inner: DynProvider,
    limiter: Arc<BandwidthLimiter>,
    direction: Direction,
}

impl BandwidthProvider {
    pub fn new(inner: DynProvider, limiter: Arc<BandwidthLimiter>, direction: Direction) -> Self {
        Self {
            inner,
            limiter,
            direction,
        }
    }
}

#[async_trait]
impl StorageProvider for BandwidthProvider {
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
        let stream = self.inner.get(key, range).await?;
        Ok(match self.direction {
            Direction::Read | Direction::Both => self.limiter.throttle(stream),
            Direction::Write => stream,
        })
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        match self.direction {
            Direction::Write | Direction::Both => {
                let size = body.size();
                let throttled = self.limiter.throttle(body.into_stream());
                self.inner
                    .put(key, Body::from_stream(size, throttled), options)
                    .await
            }
            Direction::Read => self.inner.put(key, body, options).await,
        }
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
        // The bytes never pass through this host: nothing to throttle.
        self.inner.copy_from(source, key, size, options).await
    }

    async fn barrier(&self) -> StorageResult<()> {
        self.inner.barrier().await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        self.inner.check(mode).await
    }
}
