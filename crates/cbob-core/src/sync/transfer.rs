//! Copying one object from source to destination, verifying every byte in transit.
//!
//! The last chunk of an object is held back until the verifier has seen every byte and accepted
//! them, so a provider can never complete a write of bytes that failed verification, whether or
//! not it polls the body to its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};

use super::error::SyncError;
use super::observer::SyncObserver;
use crate::layers::{BandwidthLimiter, RetryPolicy};
use crate::repo::StreamVerifier;
use crate::storage::{
    Body, ByteStream, CopySource, DynProvider, ObjectKey, PutOptions, StorageError, StorageErrorKind,
    StorageResult,
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
                if retriable && attempt <= ctx.retry.max_retries {
                    let delay = ctx.retry.delay(attempt - 1);
                    tracing::warn!(key = %key, attempt, error = %e, "transfer failed, retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
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
        return copy_server_side(ctx, source, key, size).await;
    }
    let mut check = verifier();
    if size == 0 {
        // Nothing will stream; verify the empty content before writing.
        if let Some(v) = check.take() {
            v.finish_boxed()
                .map_err(|e| StorageError::corrupt(format!("{key}: {e}")))?;
        }
    }
    let stream = ctx.source.get(key, None).await?;
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

/// A server-side copy: the service moves the bytes, so the check is the size the destination
/// reports (the primary's content was verified when it was written there).
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
}
