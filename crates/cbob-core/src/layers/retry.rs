//! Retry with exponential backoff and jitter, for transient errors only.
//!
//! [`RetryProvider`] wraps any provider: head/delete/copy/barrier/check and in-memory puts are
//! retried whole; a streamed put cannot be replayed, so its caller (the sync engine) retries the
//! whole transfer; a `get` whose stream breaks mid-way resumes with a ranged read from the byte
//! it stopped at; a listing that breaks restarts and skips the keys it already yielded; a
//! directory listing (`list_prefixes`) is retried whole.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, DynProvider, KeyPrefix, ObjectKey,
    ObjectMeta, PutOptions, StorageProvider, StorageResult,
};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`CBOB_RETRY_COUNT`); 0 disables retrying.
    pub max_retries: u32,
    /// Delay before the first retry (`CBOB_RETRY_DELAY`); doubles each time.
    pub initial_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    pub fn new(max_retries: u32, initial_delay: Duration) -> Self {
        Self {
            max_retries,
            initial_delay,
            ..Self::default()
        }
    }

    /// A policy that never retries.
    pub fn none() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// The pause before retry number `retry` (0-based): exponential, capped, with "equal jitter"
    /// (half fixed, half random) so many clients that failed together do not retry together.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_delay);
        let half = base / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rand::random_range(
                0..=half.as_nanos().min(u64::MAX as u128) as u64,
            ))
        };
        half + jitter
    }
}

/// Runs `op` until it succeeds, fails with a non-transient error, or retries run out.
/// `what` names the operation in log lines.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> StorageResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StorageResult<T>>,
{
    let mut retry_no = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && retry_no < policy.max_retries => {
                let delay = policy.delay(retry_no);
                tracing::warn!(
                    operation = what,
                    error = %e,
                    retry = retry_no + 1,
                    of = policy.max_retries,
                    delay_ms = delay.as_millis() as u64,
                    "transient error, retrying"
                );
                tokio::time::sleep(delay).await;
                retry_no += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A provider whose operations are retried according to a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct RetryProvider {
    inner: DynProvider,
    policy: RetryPolicy,
}

impl RetryProvider {
    pub fn new(inner: DynProvider, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

#[async_trait]
impl StorageProvider for RetryProvider {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let inner = self.inner.clone();
        let policy = self.policy;
        let prefix = prefix.clone();
        let state = ListState {
            stream: inner.list(&prefix),
            inner,
            prefix,
            last: None,
            retries: 0,
            done: false,
        };
        futures::stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                match st.stream.next().await {
                    None => return None,
                    Some(Ok(meta)) => {
                        // After a restart, skip what was already yielded (listings are sorted).
                        if st.last.as_ref().is_some_and(|last| meta.key <= *last) {
                            continue;
                        }
                        st.last = Some(meta.key.clone());
                        return Some((Ok(meta), st));
                    }
                    Some(Err(e)) if e.is_transient() && st.retries < policy.max_retries => {
                        let delay = policy.delay(st.retries);
                        tracing::warn!(prefix = %st.prefix, error = %e, retry = st.retries + 1, "listing failed, restarting");
                        tokio::time::sleep(delay).await;
                        st.retries += 1;
                        st.stream = st.inner.list(&st.prefix);
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
        .boxed()
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        // One answer, not a stream: a failed attempt is simply asked again.
        retry(&self.policy, "list directories", || {
            self.inner.list_prefixes(prefix)
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        retry(&self.policy, "head", || self.inner.head(key)).await
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let start = range.as_ref().map_or(0, |r| r.start);
        let end = range.as_ref().map_or(u64::MAX, |r| r.end);
        let stream = retry(&self.policy, "get", || self.inner.get(key, range.clone())).await?;
        let state = GetState {
            inner: self.inner.clone(),
            key: key.clone(),
            stream,
            next: start,
            end,
            retries: 0,
            done: false,
        };
        let policy = self.policy;
        Ok(futures::stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                match st.stream.next().await {
                    None => return None,
                    Some(Ok(chunk)) => {
                        st.next += chunk.len() as u64;
                        return Some((Ok(chunk), st));
                    }
                    Some(Err(e)) if e.is_transient() && st.retries < policy.max_retries => {
                        let delay = policy.delay(st.retries);
                        tracing::warn!(key = %st.key, offset = st.next, error = %e, "read interrupted, resuming");
                        tokio::time::sleep(delay).await;
                        st.retries += 1;
                        match st.inner.get(&st.key, Some(st.next..st.end)).await {
                            Ok(s) => st.stream = s,
                            Err(e) if e.is_transient() => {
                                // Count it and go round again with the old (failed) stream
                                // replaced by an empty one so the next loop retries.
                                st.stream = futures::stream::once(async move { Err(e) }).boxed();
                            }
                            Err(e) => {
                                st.done = true;
                                return Some((Err(e), st));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
        .boxed())
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let Some(bytes) = body.as_bytes().cloned() else {
            // A stream can be consumed once; the caller owns retrying the whole transfer.
            return self.inner.put(key, body, options).await;
        };
        retry(&self.policy, "put", || {
            self.inner
                .put(key, Body::from_bytes(bytes.clone()), options)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        retry(&self.policy, "delete", || self.inner.delete(key)).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        retry(&self.policy, "copy", || self.inner.copy(from, to)).await
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
        retry(&self.policy, "copy", || {
            self.inner.copy_from(source, key, size, options)
        })
        .await
    }

    async fn barrier(&self) -> StorageResult<()> {
        retry(&self.policy, "barrier", || self.inner.barrier()).await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        retry(&self.policy, "check", || self.inner.check(mode)).await
    }
}

struct ListState {
    inner: Arc<dyn StorageProvider>,
    prefix: KeyPrefix,
    stream: BoxStream<'static, StorageResult<ObjectMeta>>,
    last: Option<ObjectKey>,
    retries: u32,
    done: bool,
}

struct GetState {
    inner: Arc<dyn StorageProvider>,
    key: ObjectKey,
    stream: ByteStream,
    next: u64,
    end: u64,
    retries: u32,
    done: bool,
}
