//! Deterministic test data that can be produced as a stream without ever being held whole.

use bytes::Bytes;
use futures::stream::StreamExt;
use sha1::{Digest, Sha1};

use crate::storage::ByteStream;

const CHUNK: usize = 64 * 1024;

fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    // xorshift keyed by (seed, 8-byte block index): any offset can be produced independently.
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        let mut x = seed ^ (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> ((pos % 8) * 8)) as u8;
    }
}

/// `len` bytes of the pattern `seed`, starting at `offset`.
pub fn pattern_bytes(seed: u64, offset: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    fill(seed, offset, &mut v);
    Bytes::from(v)
}

/// The pattern as a stream of 64 KiB chunks.
pub fn pattern_stream(seed: u64, size: u64) -> ByteStream {
    futures::stream::unfold(0u64, move |offset| async move {
        if offset >= size {
            return None;
        }
        let len = (size - offset).min(CHUNK as u64) as usize;
        Some((Ok(pattern_bytes(seed, offset, len)), offset + len as u64))
    })
    .boxed()
}

/// SHA-1 of the whole pattern, computed chunk by chunk.
pub fn pattern_sha1(seed: u64, size: u64) -> [u8; 20] {
    let mut h = Sha1::new();
    let mut offset = 0;
    let mut buf = vec![0u8; CHUNK];
    while offset < size {
        let len = (size - offset).min(CHUNK as u64) as usize;
        fill(seed, offset, &mut buf[..len]);
        h.update(&buf[..len]);
        offset += len as u64;
    }
    h.finalize().into()
}
