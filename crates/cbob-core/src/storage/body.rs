//! Object bodies: streams of bytes of a declared size.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};

use super::error::{StorageError, StorageResult};

/// A stream of object bytes. Chunks are whatever size the source produces.
pub type ByteStream = BoxStream<'static, StorageResult<Bytes>>;

/// The body of a write: a byte stream that promises exactly `size` bytes.
///
/// [`Body::into_stream`] enforces the promise, so a provider that consumes the body through it can
/// never publish a short or long object: the stream ends with a `Corrupt` error instead.
pub struct Body {
    size: u64,
    inner: Inner,
}

enum Inner {
    Bytes(Bytes),
    Stream(ByteStream),
}

impl Body {
    /// An in-memory body. It can be replayed ([`Body::try_clone`]), so retry layers retry it.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            size: bytes.len() as u64,
            inner: Inner::Bytes(bytes),
        }
    }

    /// A streamed body that must produce exactly `size` bytes. It cannot be replayed.
    pub fn from_stream(size: u64, stream: ByteStream) -> Self {
        Self {
            size,
            inner: Inner::Stream(stream),
        }
    }

    /// The declared size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A copy of an in-memory body; `None` for a stream, which can be consumed only once.
    pub fn try_clone(&self) -> Option<Body> {
        match &self.inner {
            Inner::Bytes(b) => Some(Body::from_bytes(b.clone())),
            Inner::Stream(_) => None,
        }
    }

    /// The in-memory bytes, when this body is in memory.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Bytes(b) => Some(b),
            Inner::Stream(_) => None,
        }
    }

    /// The bytes as a stream that fails with `Corrupt` if the source yields more or fewer
    /// bytes than declared.
    pub fn into_stream(self) -> ByteStream {
        match self.inner {
            Inner::Bytes(b) => {
                if b.is_empty() {
                    futures::stream::empty().boxed()
                } else {
                    futures::stream::once(async move { Ok(b) }).boxed()
                }
            }
            Inner::Stream(s) => ExactSize {
                inner: s,
                expected: self.size,
                seen: 0,
                done: false,
            }
            .boxed(),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Bytes(_) => "bytes",
            Inner::Stream(_) => "stream",
        };
        f.debug_struct("Body")
            .field("size", &self.size)
            .field("kind", &kind)
            .finish()
    }
}

struct ExactSize {
    inner: ByteStream,
    expected: u64,
    seen: u64,
    done: bool,
}

impl Stream for ExactSize {
    type Item = StorageResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.expected {
                    self.done = true;
                    let msg = format!(
                        "body is longer than its declared size of {} bytes (got at least {})",
                        self.expected, self.seen
                    );
                    return Poll::Ready(Some(Err(StorageError::corrupt(msg))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.seen != self.expected {
                    let msg = format!(
                        "body ended after {} bytes but {} were declared",
                        self.seen, self.expected
                    );
                    return Poll::Ready(Some(Err(StorageError::corrupt(msg))));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// Collects a stream into memory. Only for small objects (info files, manifests, tests).
pub async fn collect_stream(mut stream: ByteStream) -> StorageResult<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageErrorKind;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let v: Vec<StorageResult<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(v).boxed()
    }

    #[tokio::test]
    async fn exact_size_passes() {
        let body = Body::from_stream(6, chunks(&[b"abc", b"def"]));
        assert_eq!(collect_stream(body.into_stream()).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn short_and_long_bodies_fail() {
        let short = Body::from_stream(7, chunks(&[b"abc", b"def"]));
        let e = collect_stream(short.into_stream()).await.unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Corrupt);
        let long = Body::from_stream(5, chunks(&[b"abc", b"def"]));
        let e = collect_stream(long.into_stream()).await.unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Corrupt);
    }

    #[test]
    fn only_bytes_replay() {
        assert!(Body::from_bytes("x").try_clone().is_some());
        assert!(Body::from_stream(0, chunks(&[])).try_clone().is_none());
    }
}
