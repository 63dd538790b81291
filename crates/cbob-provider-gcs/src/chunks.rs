//! Cutting a body into upload chunks while hashing it, and the hash encodings GCS uses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use cbob_core::storage::{ByteStream, ObjectHashes, StorageError, StorageResult};
use futures::StreamExt;
use md5::{Digest, Md5};

/// MD5 and CRC32C of everything fed so far: what GCS reports for a finished object.
#[derive(Clone, Default)]
pub(crate) struct Digests {
    md5: Md5,
    crc32c: u32,
}

impl Digests {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
    }

    #[cfg(test)]
    pub(crate) fn of(bytes: &[u8]) -> ([u8; 16], u32) {
        let mut d = Self::default();
        d.update(bytes);
        d.finish()
    }

    pub(crate) fn finish(self) -> ([u8; 16], u32) {
        (self.md5.finalize().into(), self.crc32c)
    }
}

/// GCS's `md5Hash`: base64 of the 16 digest bytes.
pub(crate) fn encode_md5(md5: &[u8; 16]) -> String {
    B64.encode(md5)
}

/// GCS's `crc32c`: base64 of the four bytes in big-endian order.
pub(crate) fn encode_crc32c(crc: u32) -> String {
    B64.encode(crc.to_be_bytes())
}

pub(crate) fn decode_md5(s: &str) -> Option<[u8; 16]> {
    B64.decode(s).ok()?.try_into().ok()
}

pub(crate) fn decode_crc32c(s: &str) -> Option<u32> {
    let bytes: [u8; 4] = B64.decode(s).ok()?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// The hashes of a GCS object resource.
pub(crate) fn hashes_of(o: &gcloud_storage::http::objects::Object) -> ObjectHashes {
    ObjectHashes {
        md5: o.md5_hash.as_deref().and_then(decode_md5),
        crc32c: o.crc32c.as_deref().and_then(decode_crc32c),
        etag: (!o.etag.is_empty()).then(|| o.etag.clone()),
    }
}

/// Cuts a body stream into chunks of exactly `chunk_size` bytes (the last one shorter),
/// hashing every byte on the way.
pub(crate) struct ChunkReader {
    stream: ByteStream,
    /// The rest of a source chunk that straddled a chunk boundary.
    carry: Option<Bytes>,
    remaining: u64,
    digests: Digests,
}

impl ChunkReader {
    /// `stream` must come from `Body::into_stream`, which fails a body that is shorter or longer
    /// than `size`; the checks here are a second line of defence.
    pub(crate) fn new(stream: ByteStream, size: u64) -> Self {
        Self {
            stream,
            carry: None,
            remaining: size,
            digests: Digests::default(),
        }
    }

    /// The next chunk, `None` once the declared size was read.
    pub(crate) async fn next_chunk(&mut self, chunk_size: u64) -> StorageResult<Option<Bytes>> {
        let want = self.remaining.min(chunk_size) as usize;
        if want == 0 {
            return Ok(None);
        }
        let mut buf = BytesMut::new();
        while buf.len() < want {
            let piece = match self.carry.take() {
                Some(c) => c,
                None => match self.stream.next().await {
                    Some(c) => c?,
                    None => {
                        return Err(StorageError::corrupt(format!(
                            "body ended {} bytes before its declared size",
                            self.remaining - buf.len() as u64
                        )));
                    }
                },
            };
            let room = want - buf.len();
            if buf.is_empty() && piece.len() >= want {
                // A source chunk that holds the whole upload chunk (an in-memory body): no copy.
                let chunk = piece.slice(..want);
                if piece.len() > want {
                    self.carry = Some(piece.slice(want..));
                }
                self.digests.update(&chunk);
                self.remaining -= want as u64;
                return Ok(Some(chunk));
            }
            if buf.capacity() == 0 {
                buf.reserve(want); // one allocation per chunk, never a doubling
            }
            let take = piece.len().min(room);
            buf.extend_from_slice(&piece[..take]);
            if piece.len() > take {
                self.carry = Some(piece.slice(take..));
            }
        }
        self.digests.update(&buf);
        self.remaining -= want as u64;
        Ok(Some(buf.freeze()))
    }

    /// After the declared size was read: the body must end here, or it was too long.
    pub(crate) async fn confirm_end(&mut self) -> StorageResult<()> {
        if self.carry.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(StorageError::corrupt(
                "body is longer than its declared size",
            ));
        }
        while let Some(piece) = self.stream.next().await {
            if !piece?.is_empty() {
                return Err(StorageError::corrupt(
                    "body is longer than its declared size",
                ));
            }
        }
        Ok(())
    }

    /// MD5 and CRC32C of everything read.
    pub(crate) fn digests(&self) -> ([u8; 16], u32) {
        self.digests.clone().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: Vec<&'static [u8]>) -> ByteStream {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed()
    }

    #[tokio::test]
    async fn chunks_are_exact_and_hashed() {
        let mut r = ChunkReader::new(stream(vec![b"abc", b"defgh", b"ij"]), 10);
        assert_eq!(r.next_chunk(4).await.unwrap().unwrap(), "abcd");
        assert_eq!(r.next_chunk(4).await.unwrap().unwrap(), "efgh");
        assert_eq!(r.next_chunk(4).await.unwrap().unwrap(), "ij");
        assert!(r.next_chunk(4).await.unwrap().is_none());
        r.confirm_end().await.unwrap();
        assert_eq!(r.digests(), Digests::of(b"abcdefghij"));
        // Known values: CRC32C of "123456789" is 0xE3069283 (RFC 3720).
        assert_eq!(Digests::of(b"123456789").1, 0xE306_9283);
        assert_eq!(encode_crc32c(0xE306_9283), "4waSgw==");
        assert_eq!(decode_crc32c("4waSgw=="), Some(0xE306_9283));
        let (md5, _) = Digests::of(b"hello");
        assert_eq!(encode_md5(&md5), "XUFAKrxLKna5cZ2REBfFkg==");
        assert_eq!(decode_md5("XUFAKrxLKna5cZ2REBfFkg=="), Some(md5));
        assert_eq!(decode_md5("AAAA"), None);
    }

    #[tokio::test]
    async fn short_and_long_bodies_fail() {
        let mut r = ChunkReader::new(stream(vec![b"abc"]), 5);
        assert!(r.next_chunk(4).await.is_err());
        let mut r = ChunkReader::new(stream(vec![b"abcdef"]), 4);
        assert_eq!(r.next_chunk(4).await.unwrap().unwrap(), "abcd");
        assert!(r.confirm_end().await.is_err());
    }
}
