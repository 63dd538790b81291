//! Copying one object from source to destination, verifying every byte in transit.
//!
//! The last chunk of an object is held back until the verifier has seen every byte and accepted
//! them, so a provider can never complete a write of bytes that failed verification, whether or
//! not it polls the body to its end.
//!
//! A destination that can copy from the source server-side does so instead (the bytes never
//! reach this host, so only the size is checked). When it answers `Unsupported` for an object (a
//! replica whose service refused the copy, see `replicate/copy.rs`), that object is streamed
//! through the verified path above, with the same verifier, throttling, progress and retries.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use tokio::sync::Semaphore;

use super::error::SyncError;
use super::observer::SyncObserver;
use crate::layers::{BandwidthLimiter, RetryPolicy};
use crate::repo::StreamVerifier;
use crate::storage::{
    Body, ByteStream, CopySource, DynProvider, ObjectKey, PutOptions, StorageError,
    StorageErrorKind, StorageResult,
};

/// Makes a fresh verifier for each attempt (`None`: size only).
pub type VerifierFactory = Box<dyn Fn() -> Option<Box<dyn StreamVerifier>> + Send + Sync>;

/// Everything a transfer needs besides the object itself.
#[derive(Clone)]
pub struct TransferContext {
    pub source: DynProvider,
    pub dest: DynProvider,
    pub retry: RetryPolicy,
    pub bandwidth: Option<Arc<BandwidthLimiter>>,
    pub observer: Arc<dyn SyncObserver>,
    pub stanza: String,
    pub put_options: PutOptions,
    /// Set when the destination can copy from the source server-side (same service and
    /// account); payload then never passes through this host.
    pub server_side: Option<CopySource>,
    /// Set once a transfer of this stanza has failed for good: the others then stop retrying
    /// (their objects are not published anyway), so a destination that vanished ends the run
    /// after one retry sequence instead of one per transfer in flight.
    pub abandon: Arc<AtomicBool>,
}

struct VerifyingStream {
    inner: ByteStream,
    verifier: Option<Box<dyn StreamVerifier>>,
    expected: u64,
    seen: u64,
    key: String,
    done: bool,
}

impl VerifyingStream {
    fn fail(&mut self, message: String) -> Poll<Option<StorageResult<Bytes>>> {
        self.done = true;
        Poll::Ready(Some(Err(StorageError::corrupt(format!(
            "{}: {message}",
            self.key
        )))))
    }
}

impl Stream for VerifyingStream {
    type Item = StorageResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.expected {
                    let msg = format!("source sent more than the {} bytes listed", self.expected);
                    return self.fail(msg);
                }
                if let Some(v) = self.verifier.as_mut()
                    && let Err(e) = v.update(&chunk)
                {
                    return self.fail(e.to_string());
                }
                if self.seen == self.expected
                    && let Some(v) = self.verifier.take()
                    && let Err(e) = v.finish_boxed()
                {
                    // The final bytes are withheld: the write cannot complete.
                    return self.fail(e.to_string());
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.seen != self.expected {
                    let msg = format!(
                        "source ended after {} of {} bytes",
                        self.seen, self.expected
                    );
                    return Poll::Ready(Some(Err(StorageError::corrupt(format!(
                        "{}: {msg}",
                        self.key
                    )))));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// Copies `key` (of `size` bytes at the source) to the same key at the destination, verified,
/// retrying transient failures and verification mismatches (a re-download may fix corruption in
/// transit). Returns the bytes written.
pub async fn copy_object(
    ctx: &TransferContext,
    key: &ObjectKey,
    size: u64,
    verifier: &VerifierFactory,
) -> Result<u64, SyncError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match copy_once(ctx, key, size, verifier).await {
            Ok(()) => {
                ctx.observer.file_done(&ctx.stanza, key.as_str(), size);
                return Ok(size);
            }
            Err(e) => {
                let retriable = e.is_transient() || e.kind() == StorageErrorKind::Corrupt;
                let abandoned = ctx.abandon.load(Ordering::Relaxed);
                if retriable && attempt <= ctx.retry.max_retries && !abandoned {
                    let delay = ctx.retry.delay(attempt - 1);
                    tracing::warn!(key = %key, attempt, error = %e, "transfer failed, retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                ctx.abandon.store(true, Ordering::Relaxed);
                if e.kind() == StorageErrorKind::Corrupt {
                    return Err(SyncError::Verification {
                        key: key.to_string(),
                        attempts: attempt,
                        message: e.to_string(),
                    });
                }
                return Err(SyncError::storage(format!("copying {key}"), e));
            }
        }
    }
}

async fn copy_once(
    ctx: &TransferContext,
    key: &ObjectKey,
    size: u64,
    verifier: &VerifierFactory,
) -> StorageResult<()> {
    if let Some(source) = &ctx.server_side {
        match copy_server_side(ctx, source, key, size).await {
            // Refused: stream it below, so its bytes are verified like any other transfer's.
            Err(e) if e.kind() == StorageErrorKind::Unsupported => {
                tracing::debug!(key = %key, error = %e, "streaming instead of a server-side copy");
            }
            done => return done,
        }
    }
    let mut check = verifier();
    if size == 0 {
        // Nothing will stream; verify the empty content before writing.
        if let Some(v) = check.take() {
            v.finish_boxed()
                .map_err(|e| StorageError::corrupt(format!("{key}: {e}")))?;
        }
    }
    let stream = read_source(ctx, key, size).await?;
    let stream = match &ctx.bandwidth {
        Some(limiter) => limiter.throttle(stream),
        None => stream,
    };
    let observer = ctx.observer.clone();
    let stanza = ctx.stanza.clone();
    let counted = stream
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                observer.bytes(&stanza, c.len() as u64);
            }
        })
        .boxed();
    let verified = VerifyingStream {
        inner: counted,
        verifier: check,
        expected: size,
        seen: 0,
        key: key.to_string(),
        done: false,
    };
    let written = ctx
        .dest
        .put(
            key,
            Body::from_stream(size, verified.boxed()),
            &ctx.put_options,
        )
        .await?;
    if written.size != size {
        return Err(StorageError::corrupt(format!(
            "{key}: destination reports {} bytes after writing {size}",
            written.size
        )));
    }
    Ok(())
}

/// Objects at least this big are read as several ranges at once: one HTTP stream from an object
/// store rarely fills the link, and a 1 GiB file would otherwise take one stream's time.
pub const PARALLEL_READ_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Size of each range, and how many are fetched ahead of the writer.
const READ_PART: u64 = 4 * 1024 * 1024;
const PARTS_AHEAD: usize = 3;
/// Parts go to the writer in slices of this size, so a writer's queue holds slices, not parts.
const PART_SLICE: usize = 256 * 1024;
/// Objects read in ranges at once in this process. Memory per object: the parts ahead plus
/// the one or two being written (≈ 20 MiB). Other large objects meanwhile stream in one request.
const PARALLEL_READERS: usize = 2;

fn parallel_readers() -> &'static Arc<Semaphore> {
    static READERS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    READERS.get_or_init(|| Arc::new(Semaphore::new(PARALLEL_READERS)))
}

/// The source's bytes of `key`: one stream, or for large objects ranges fetched in parallel and
/// yielded in order.
async fn read_source(
    ctx: &TransferContext,
    key: &ObjectKey,
    size: u64,
) -> StorageResult<ByteStream> {
    if size < PARALLEL_READ_THRESHOLD {
        return ctx.source.get(key, None).await;
    }
    let Ok(permit) = parallel_readers().clone().try_acquire_owned() else {
        return ctx.source.get(key, None).await;
    };
    let source = ctx.source.clone();
    let key = key.clone();
    let ranges =
        (0..size.div_ceil(READ_PART)).map(move |i| i * READ_PART..((i + 1) * READ_PART).min(size));
    let parts = futures::stream::iter(ranges)
        .map(move |range| read_part(source.clone(), key.clone(), range))
        .buffered(PARTS_AHEAD)
        .flat_map(|part| {
            futures::stream::iter(match part {
                Ok(bytes) => (0..bytes.len())
                    .step_by(PART_SLICE)
                    .map(|at| Ok(bytes.slice(at..(at + PART_SLICE).min(bytes.len()))))
                    .collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        // The permit goes when the stream does.
        .map(move |slice| {
            let _reader = &permit;
            slice
        });
    Ok(parts.boxed())
}

/// One range of an object, whole, in a buffer of exactly its size.
async fn read_part(
    source: DynProvider,
    key: ObjectKey,
    range: std::ops::Range<u64>,
) -> StorageResult<Bytes> {
    let want = (range.end - range.start) as usize;
    let mut stream = source.get(&key, Some(range.clone())).await?;
    let mut part = bytes::BytesMut::with_capacity(want);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if part.len() + chunk.len() > want {
            break;
        }
        part.extend_from_slice(&chunk);
    }
    if part.len() != want {
        // The object changed under us: fail this attempt; the transfer retries it.
        return Err(StorageError::corrupt(format!(
            "{key}: bytes {}..{} of the source did not come back as {want} bytes",
            range.start, range.end
        )));
    }
    Ok(part.freeze())
}

/// A server-side copy: the service moves the bytes, so the check is the size the destination
/// reports (the primary's content was verified when it was written there). `Unsupported` means
/// the destination will not copy this object; the caller streams it.
async fn copy_server_side(
    ctx: &TransferContext,
    source: &CopySource,
    key: &ObjectKey,
    size: u64,
) -> StorageResult<()> {
    let written = ctx
        .dest
        .copy_from(source, key, size, &ctx.put_options)
        .await?;
    if written.size != size {
        return Err(StorageError::corrupt(format!(
            "{key}: the server-side copy holds {} bytes, the source {size}",
            written.size
        )));
    }
    ctx.observer.bytes(&ctx.stanza, size);
    Ok(())
}

/// Writes small in-memory bytes (info files, manifests read during planning).
pub async fn put_bytes(
    ctx: &TransferContext,
    key: &ObjectKey,
    bytes: Bytes,
) -> Result<(), SyncError> {
    let n = bytes.len() as u64;
    crate::layers::retry(&ctx.retry, "put", || {
        ctx.dest
            .put(key, Body::from_bytes(bytes.clone()), &ctx.put_options)
    })
    .await
    .map_err(|e| SyncError::storage(format!("writing {key}"), e))?;
    ctx.observer.bytes(&ctx.stanza, n);
    ctx.observer.file_done(&ctx.stanza, key.as_str(), n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::StoredVerifier;
    use crate::storage::local::LocalProvider;
    use crate::storage::read_to_bytes;
    use sha1::{Digest, Sha1};

    fn ctx(src: DynProvider, dst: DynProvider) -> TransferContext {
        TransferContext {
            source: src,
            dest: dst,
            retry: RetryPolicy::new(2, std::time::Duration::from_millis(1)),
            bandwidth: None,
            observer: Arc::new(super::super::observer::NoProgress),
            stanza: "s".into(),
            put_options: PutOptions::default(),
            server_side: None,
            abandon: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn good_bytes_are_published_and_bad_bytes_never_are() {
        let tmp = tempfile::tempdir().unwrap();
        let src: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("src")).unwrap());
        let dst: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("dst")).unwrap());
        let key = ObjectKey::new("backup/s/L/pg_data/f").unwrap();
        let data = Bytes::from(vec![42u8; 300_000]);
        src.put(&key, Body::from_bytes(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        let sha = hex::encode(Sha1::digest(&data));
        let c = ctx(src.clone(), dst.clone());

        let good: VerifierFactory = {
            let sha = sha.clone();
            Box::new(move || {
                Some(Box::new(StoredVerifier::new("f", &sha, 300_000)) as Box<dyn StreamVerifier>)
            })
        };
        assert_eq!(
            copy_object(&c, &key, 300_000, &good).await.unwrap(),
            300_000
        );
        assert_eq!(read_to_bytes(&*dst, &key).await.unwrap(), data);

        let key2 = ObjectKey::new("backup/s/L/pg_data/g").unwrap();
        src.put(
            &key2,
            Body::from_bytes(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        let wrong: VerifierFactory = Box::new(|| {
            Some(Box::new(StoredVerifier::new("g", &"0".repeat(40), 300_000))
                as Box<dyn StreamVerifier>)
        });
        let e = copy_object(&c, &key2, 300_000, &wrong).await.unwrap_err();
        assert!(
            matches!(e, SyncError::Verification { attempts: 3, .. }),
            "{e}"
        );
        assert_eq!(
            dst.head(&key2).await.unwrap_err().kind(),
            StorageErrorKind::NotFound,
            "never published"
        );
    }

    /// Counts the payload bytes the observer is told about.
    #[derive(Default)]
    struct CountedBytes(std::sync::atomic::AtomicU64);

    impl super::super::observer::SyncObserver for CountedBytes {
        fn bytes(&self, _: &str, n: u64) {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A destination that will not copy server-side (a local directory answers `Unsupported`,
    /// as the replicate fallback does for a refusing service) gets the object streamed through
    /// the verifier: good bytes land and are counted once, bad bytes of the same size never do.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_server_side_copy_is_streamed_and_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let src: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("src")).unwrap());
        let dst: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("dst")).unwrap());
        let data = Bytes::from(vec![7u8; 70_000]);
        let sha = hex::encode(Sha1::digest(&data));
        let counted = Arc::new(CountedBytes::default());
        let c = TransferContext {
            server_side: Some(CopySource {
                service: "local",
                account: "test".into(),
                bucket: "src".into(),
                prefix: String::new(),
            }),
            observer: counted.clone(),
            ..ctx(src.clone(), dst.clone())
        };
        let strict = |name: &'static str| -> VerifierFactory {
            let sha = sha.clone();
            Box::new(move || {
                Some(Box::new(StoredVerifier::new(name, &sha, 70_000)) as Box<dyn StreamVerifier>)
            })
        };

        let good = ObjectKey::new("archive/s/good").unwrap();
        src.put(
            &good,
            Body::from_bytes(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            copy_object(&c, &good, 70_000, &strict("good"))
                .await
                .unwrap(),
            70_000
        );
        assert_eq!(read_to_bytes(&*dst, &good).await.unwrap(), data);
        assert_eq!(counted.0.load(Ordering::Relaxed), 70_000, "counted once");

        let mut bad = data.to_vec();
        bad[35_000] ^= 0x20;
        let key = ObjectKey::new("archive/s/bad").unwrap();
        src.put(&key, Body::from_bytes(bad), &PutOptions::default())
            .await
            .unwrap();
        let e = copy_object(&c, &key, 70_000, &strict("bad"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, SyncError::Verification { attempts: 3, .. }),
            "{e}"
        );
        assert_eq!(
            dst.head(&key).await.unwrap_err().kind(),
            StorageErrorKind::NotFound,
            "never published"
        );
    }

    /// Counts ranged reads and how many run at once.
    #[derive(Debug)]
    struct CountingReads {
        inner: DynProvider,
        ranged: std::sync::atomic::AtomicUsize,
        open: Arc<std::sync::atomic::AtomicUsize>,
        most_open: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl crate::storage::StorageProvider for CountingReads {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn capabilities(&self) -> crate::storage::Capabilities {
            self.inner.capabilities()
        }
        fn list(
            &self,
            prefix: &crate::storage::KeyPrefix,
        ) -> futures::stream::BoxStream<'static, StorageResult<crate::storage::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn head(&self, key: &ObjectKey) -> StorageResult<crate::storage::ObjectMeta> {
            self.inner.head(key).await
        }
        async fn get(
            &self,
            key: &ObjectKey,
            range: Option<std::ops::Range<u64>>,
        ) -> StorageResult<ByteStream> {
            use std::sync::atomic::Ordering::SeqCst;
            if range.is_some() {
                self.ranged.fetch_add(1, SeqCst);
            }
            let now = self.open.fetch_add(1, SeqCst) + 1;
            self.most_open.fetch_max(now, SeqCst);
            // Slow enough that parts overlap in time if they are fetched ahead.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let open = self.open.clone();
            let stream = self.inner.get(key, range).await?;
            Ok(stream
                .chain(futures::stream::poll_fn(move |_| {
                    open.fetch_sub(1, SeqCst);
                    Poll::Ready(None)
                }))
                .boxed())
        }
        async fn put(
            &self,
            key: &ObjectKey,
            body: Body,
            options: &PutOptions,
        ) -> StorageResult<crate::storage::ObjectMeta> {
            self.inner.put(key, body, options).await
        }
        async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
            self.inner.delete(key).await
        }
        async fn check(&self, mode: crate::storage::CheckMode) -> StorageResult<()> {
            self.inner.check(mode).await
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn large_objects_are_read_in_parallel_ranges_and_still_verified() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let tmp = tempfile::tempdir().unwrap();
        let local: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("src")).unwrap());
        let dst: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("dst")).unwrap());
        let size = PARALLEL_READ_THRESHOLD + 3 * 1024 * 1024 + 5;
        let data: Bytes = (0..size)
            .map(|i| (i * 31 / 7) as u8)
            .collect::<Vec<u8>>()
            .into();
        let key = ObjectKey::new("backup/s/L/pg_data/big").unwrap();
        local
            .put(&key, Body::from_bytes(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        let counting = Arc::new(CountingReads {
            inner: local.clone(),
            ranged: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
            most_open: Arc::new(AtomicUsize::new(0)),
        });
        let c = ctx(counting.clone(), dst.clone());
        let sha = hex::encode(Sha1::digest(&data));
        let good: VerifierFactory = Box::new(move || {
            Some(Box::new(StoredVerifier::new("big", &sha, size)) as Box<dyn StreamVerifier>)
        });
        assert_eq!(copy_object(&c, &key, size, &good).await.unwrap(), size);
        assert!(
            read_to_bytes(&*dst, &key).await.unwrap() == data,
            "byte-identical"
        );
        assert_eq!(
            counting.ranged.load(SeqCst) as u64,
            size.div_ceil(READ_PART),
            "one ranged read per part"
        );
        assert!(
            counting.most_open.load(SeqCst) > 1,
            "parts are fetched ahead, not one after another"
        );

        // A byte changed in one part: the assembled stream fails verification, nothing lands.
        let mut bad = data.to_vec();
        bad[(size / 2) as usize] ^= 1;
        local
            .put(
                &key,
                Body::from_bytes(Bytes::from(bad)),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let key_dst = ObjectKey::new("backup/s/L/pg_data/big").unwrap();
        dst.delete(&key_dst).await.unwrap();
        let sha = hex::encode(Sha1::digest(&data));
        let strict: VerifierFactory = Box::new(move || {
            Some(Box::new(StoredVerifier::new("big", &sha, size)) as Box<dyn StreamVerifier>)
        });
        let e = copy_object(&c, &key, size, &strict).await.unwrap_err();
        assert!(matches!(e, SyncError::Verification { .. }), "{e}");
        assert_eq!(
            dst.head(&key_dst).await.unwrap_err().kind(),
            StorageErrorKind::NotFound,
            "never published"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn once_a_transfer_failed_for_good_the_others_stop_retrying() {
        use crate::testkit::{FailurePlan, FlakyProvider};
        let tmp = tempfile::tempdir().unwrap();
        let local: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("src")).unwrap());
        let dst: DynProvider = Arc::new(LocalProvider::new(tmp.path().join("dst")).unwrap());
        let key = ObjectKey::new("archive/s/f").unwrap();
        local
            .put(
                &key,
                Body::from_bytes(Bytes::from_static(b"abc")),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let size_only: VerifierFactory = Box::new(|| None);

        // A source that is down: the transfer retries (2 retries), then gives up and marks the
        // stanza abandoned.
        let down = Arc::new(FlakyProvider::new(
            local.clone(),
            FailurePlan::transient(100),
        ));
        let c = ctx(down.clone(), dst.clone());
        assert!(copy_object(&c, &key, 3, &size_only).await.is_err());
        assert_eq!(down.calls("get"), 3, "first attempt and two retries");
        assert!(c.abandon.load(Ordering::Relaxed));

        // Another transfer of the same stanza now fails at its first error, without retrying.
        let down2 = Arc::new(FlakyProvider::new(
            local.clone(),
            FailurePlan::transient(100),
        ));
        let c2 = TransferContext {
            source: down2.clone(),
            ..c.clone()
        };
        assert!(copy_object(&c2, &key, 3, &size_only).await.is_err());
        assert_eq!(
            down2.calls("get"),
            1,
            "no retry after the stanza was abandoned"
        );

        // A fresh stanza context retries a transient failure and succeeds.
        let flaky = Arc::new(FlakyProvider::new(local.clone(), FailurePlan::transient(1)));
        let c3 = ctx(flaky.clone(), dst.clone());
        assert_eq!(copy_object(&c3, &key, 3, &size_only).await.unwrap(), 3);
        assert_eq!(flaky.calls("get"), 2);
        assert!(!c3.abandon.load(Ordering::Relaxed));
    }
}
