//! A provider wrapper that injects failures, to test retry logic against any real provider.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, DynProvider, KeyPrefix, ObjectKey, ObjectMeta,
    PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
};

/// Which failures to inject.
#[derive(Debug, Clone)]
pub struct FailurePlan {
    /// The first this-many calls of every operation fail with `kind`.
    pub fail_first: u32,
    pub kind: StorageErrorKind,
    /// The first `get` that succeeds breaks with `kind` after this many bytes.
    pub break_first_get_after: Option<u64>,
    /// The first listing that succeeds breaks with `kind` after this many entries.
    pub break_first_list_after: Option<usize>,
}

impl FailurePlan {
    pub fn transient(fail_first: u32) -> Self {
        Self {
            fail_first,
            kind: StorageErrorKind::Unavailable,
            break_first_get_after: None,
            break_first_list_after: None,
        }
    }
}

/// Wraps a provider and fails according to a [`FailurePlan`], counting calls per operation.
#[derive(Debug)]
pub struct FlakyProvider {
    inner: DynProvider,
    plan: FailurePlan,
    calls: Mutex<BTreeMap<&'static str, u32>>,
    get_broken: AtomicBool,
    list_broken: AtomicBool,
}

impl FlakyProvider {
    pub fn new(inner: DynProvider, plan: FailurePlan) -> Self {
        Self {
            inner,
            plan,
            calls: Mutex::new(BTreeMap::new()),
            get_broken: AtomicBool::new(false),
            list_broken: AtomicBool::new(false),
        }
    }

    /// How many times `op` was called (`head`, `get`, `put`, `delete`, `list`, `list_prefixes`,
    /// `copy`, `check`).
    pub fn calls(&self, op: &str) -> u32 {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    fn enter(&self, op: &'static str) -> StorageResult<()> {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(op).or_insert(0);
        *n += 1;
        if *n <= self.plan.fail_first {
            return Err(StorageError::new(
                self.plan.kind,
                format!("injected failure #{n} of {op}"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl StorageProvider for FlakyProvider {
    fn describe(&self) -> String {
        format!("flaky({})", self.inner.describe())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        if let Err(e) = self.enter("list") {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let stream = self.inner.list(prefix);
        match self.plan.break_first_list_after {
            Some(n) if !self.list_broken.swap(true, Ordering::SeqCst) => {
                let kind = self.plan.kind;
                stream
                    .take(n)
                    .chain(futures::stream::once(async move {
                        Err(StorageError::new(kind, "injected listing break"))
                    }))
                    .boxed()
            }
            _ => stream,
        }
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        self.enter("list_prefixes")?;
        self.inner.list_prefixes(prefix).await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        self.enter("head")?;
        self.inner.head(key).await
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        self.enter("get")?;
        let stream = self.inner.get(key, range).await?;
        match self.plan.break_first_get_after {
            Some(limit) if !self.get_broken.swap(true, Ordering::SeqCst) => {
                let kind = self.plan.kind;
                // Yield exactly `limit` bytes, splitting a chunk if needed, then fail.
                let truncated = futures::stream::unfold(
                    (stream, 0u64, false),
                    move |(mut s, sent, done)| async move {
                        if done {
                            return None;
                        }
                        if sent >= limit {
                            let e = StorageError::new(kind, "injected read break");
                            return Some((Err(e), (s, sent, true)));
                        }
                        match s.next().await {
                            Some(Ok(chunk)) => {
                                let room = (limit - sent) as usize;
                                let part: Bytes = if chunk.len() > room {
                                    chunk.slice(..room)
                                } else {
                                    chunk
                                };
                                let n = part.len() as u64;
                                Some((Ok(part), (s, sent + n, false)))
                            }
                            other => other.map(|item| (item, (s, sent, true))),
                        }
                    },
                );
                Ok(truncated.boxed())
            }
            _ => Ok(stream),
        }
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        self.enter("put")?;
        self.inner.put(key, body, options).await
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.enter("delete")?;
        self.inner.delete(key).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        self.enter("copy")?;
        self.inner.copy(from, to).await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        self.enter("check")?;
        self.inner.check(mode).await
    }
}
