//! The LZ4 block decoder behind [`super::lz4::Lz4FrameDecoder`].
//!
//! Why our own: pgBackRest's WAL segments are mostly zero pages, so their blocks are a few long
//! matches at offset 1..8. lz4_flex copies overlapping matches a byte at a time (≈0.5 GB/s
//! here), and a sync decompresses ≈16 MiB per 70 KiB segment to check its SHA-1. This decoder
//! fills offset-1 runs with `fill` and copies other overlapping matches in doubling chunks, so
//! those blocks decode at memset speed, while ordinary blocks use fixed 16-byte copies.
//!
//! Safe Rust only: corrupt input is an error, never a read or write out of bounds.
//!
//! Layout: the caller decodes every block of a frame into one buffer, after the history that
//! matches may refer back into. `buf[history..pos]` is that history, `pos` where this block's
//! output starts; the block may write up to `limit`, and `buf` must have [`SLACK`] bytes after
//! `limit` for the fixed-size copies.

/// Bytes the caller keeps writable after `limit`: fixed-size copies may write that far past the
/// real end of a literal run or match (the bytes are overwritten or never published).
pub(crate) const SLACK: usize = 32;

/// Why a block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockError {
    Truncated,
    ZeroOffset,
    BeforeHistory,
    TooLong,
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "block ends inside a sequence",
            Self::ZeroOffset => "match offset 0",
            Self::BeforeHistory => "match refers back before the start of the frame",
            Self::TooLong => "block decodes to more than the frame's block size",
        })
    }
}

/// Decodes the compressed block `src` into `buf[pos..]`; returns the end of its output.
pub(crate) fn decode_block(
    src: &[u8],
    buf: &mut [u8],
    pos: usize,
    history: usize,
    limit: usize,
) -> Result<usize, BlockError> {
    debug_assert!(history <= pos && pos <= limit && limit + SLACK <= buf.len());
    let mut pos = pos;
    let mut i = 0usize;
    loop {
        let token = *src.get(i).ok_or(BlockError::Truncated)?;
        i += 1;

        let mut literals = usize::from(token >> 4);
        if literals == 15 {
            literals += extension(src, &mut i)?;
        }
        let literals_end = i.checked_add(literals).ok_or(BlockError::Truncated)?;
        if literals_end > src.len() {
            return Err(BlockError::Truncated);
        }
        if literals > limit - pos {
            return Err(BlockError::TooLong);
        }
        if literals <= 16 && i + 16 <= src.len() {
            // pos + 16 <= limit + SLACK: the extra bytes land in space not yet decoded.
            buf[pos..pos + 16].copy_from_slice(&src[i..i + 16]);
        } else {
            buf[pos..pos + literals].copy_from_slice(&src[i..literals_end]);
        }
        pos += literals;
        i = literals_end;
        if i == src.len() {
            return Ok(pos); // the last sequence has literals only
        }

        let offset_bytes = src.get(i..i + 2).ok_or(BlockError::Truncated)?;
        let offset = usize::from(u16::from_le_bytes([offset_bytes[0], offset_bytes[1]]));
        i += 2;
        if offset == 0 {
            return Err(BlockError::ZeroOffset);
        }
        if offset > pos - history {
            return Err(BlockError::BeforeHistory);
        }
        let mut length = usize::from(token & 15);
        if length == 15 {
            length += extension(src, &mut i)?;
        }
        length += 4;
        if length > limit - pos {
            return Err(BlockError::TooLong);
        }
        copy_match(buf, pos, offset, length);
        pos += length;
    }
}

/// Reads a length extension: bytes added up until one is not 255.
fn extension(src: &[u8], i: &mut usize) -> Result<usize, BlockError> {
    let mut n = 0usize;
    loop {
        let b = *src.get(*i).ok_or(BlockError::Truncated)?;
        *i += 1;
        n += usize::from(b);
        if b != 255 {
            return Ok(n);
        }
    }
}

/// Copies `length` bytes from `offset` back to `pos`, with LZ4's meaning for overlaps: the
/// source may run into the bytes being written, repeating the last `offset` bytes.
fn copy_match(buf: &mut [u8], pos: usize, offset: usize, length: usize) {
    let start = pos - offset;
    if offset >= 16 && length <= 16 {
        // The common short match: one fixed copy, source and destination apart by ≥ 16.
        buf.copy_within(start..start + 16, pos);
    } else if offset >= length {
        buf.copy_within(start..start + length, pos);
    } else if offset == 1 {
        let b = buf[start];
        buf[pos..pos + length].fill(b);
    } else {
        // Overlapping: buf[start..pos + done] repeats with period `offset` whenever `done` is a
        // multiple of it, so each step can copy everything written so far (no overlap).
        let mut done = 0;
        while done < length {
            let n = (offset + done).min(length - done);
            buf.copy_within(start..start + n, pos + done);
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes with our decoder into a fresh buffer, optionally after some history.
    fn decode(src: &[u8], history: &[u8], max: usize) -> Result<Vec<u8>, BlockError> {
        let mut buf = vec![0u8; history.len() + max + SLACK];
        buf[..history.len()].copy_from_slice(history);
        let end = decode_block(src, &mut buf, history.len(), 0, history.len() + max)?;
        Ok(buf[history.len()..end].to_vec())
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut v = vec![
            Vec::new(),
            vec![0u8; 70_000],
            vec![7u8; 5],
            b"abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcx".to_vec(),
        ];
        for period in [2usize, 3, 5, 8, 15, 16, 17, 31, 300] {
            v.push((0..50_000).map(|i| (i % period) as u8 ^ 0x5a).collect());
        }
        // Pseudo-random text with repeats at every distance and length.
        let mut x = 0x1234_5678_u64;
        let mut text = Vec::new();
        while text.len() < 200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize + 1;
            if text.len() > 1000 && x.is_multiple_of(3) {
                let back = (x >> 8) as usize % text.len().min(65_535) + 1;
                let from = text.len() - back;
                for k in 0..len * 3 {
                    let b = text[from + k];
                    text.push(b);
                }
            } else {
                text.extend((0..len).map(|k| b'a' + ((x >> (k % 48)) % 26) as u8));
            }
        }
        v.push(text);
        v
    }

    #[test]
    fn decodes_what_lz4_flex_encodes() {
        for plain in samples() {
            let block = lz4_flex::block::compress(&plain);
            assert_eq!(
                decode(&block, &[], plain.len()).unwrap(),
                plain,
                "{} bytes",
                plain.len()
            );
        }
    }

    #[test]
    fn matches_may_refer_into_the_history_but_not_before_it() {
        let dict: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let plain: Vec<u8> = dict[10_000..30_000].repeat(2);
        let block = lz4_flex::block::compress_with_dict(&plain, &dict);
        assert_eq!(decode(&block, &dict, plain.len()).unwrap(), plain);
        // Without the history the same block is refused, not decoded into garbage.
        assert_eq!(
            decode(&block, &[], plain.len()).unwrap_err(),
            BlockError::BeforeHistory
        );
    }

    #[test]
    fn output_beyond_the_block_limit_is_refused() {
        let plain = vec![1u8; 10_000];
        let block = lz4_flex::block::compress(&plain);
        assert_eq!(decode(&block, &[], 9_999).unwrap_err(), BlockError::TooLong);
    }

    #[test]
    fn every_corruption_is_an_error_or_other_bytes_never_a_panic() {
        for plain in samples() {
            let block = lz4_flex::block::compress(&plain);
            for cut in (0..block.len()).step_by(block.len() / 50 + 1) {
                let _ = decode(&block[..cut], &[], plain.len());
            }
            for at in (0..block.len()).step_by(block.len() / 200 + 1) {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = block.clone();
                    bad[at] ^= flip;
                    let _ = decode(&bad, &[], plain.len() + 64);
                }
            }
        }
        assert_eq!(decode(&[0x10], &[], 100), Err(BlockError::Truncated));
        assert_eq!(decode(&[0x04, 0, 0], &[], 100), Err(BlockError::ZeroOffset));
    }
}
