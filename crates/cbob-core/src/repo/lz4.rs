//! A push-based LZ4 frame decoder.
//!
//! lz4_flex's frame decoder pulls from a `Read`, which cannot sit on a stream in transit without
//! buffering the object or a thread. The frame format is small, so this walks it as bytes are
//! pushed and hands each block to our block decoder ([`super::lz4_block`]). Memory: one block in,
//! and one output buffer of a few blocks that keeps the 64 KiB linked blocks may refer back into.
//!
//! Format: <https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md>. The header, block and
//! content checksums (xxHash32) are all checked: a copy whose plain bytes are right but whose
//! checksum bytes are damaged would still fail pgBackRest's own decoder at restore time.

use std::io::{self, Write};

use super::lz4_block;

const FRAME_MAGIC: u32 = 0x184D_2204;
const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
const WINDOW: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the 4-byte magic of a frame (or the end of the stream).
    Magic,
    /// Expecting FLG and BD, then the rest of the frame descriptor.
    Descriptor,
    /// Expecting a 4-byte block size (or the end mark).
    BlockSize,
    /// Collecting a block of `size` bytes (plus its checksum when the frame has block checksums).
    Block { size: usize, compressed: bool },
    /// Skipping the 4-byte content checksum.
    ContentChecksum,
    /// Expecting the 4-byte length of a skippable frame.
    SkipSize,
    /// Discarding the rest of a skippable frame.
    Skip { remaining: u64 },
}

/// Streaming xxHash32 (seed 0), the checksum of the LZ4 frame format.
#[derive(Debug, Clone)]
pub(crate) struct Xxh32 {
    acc: [u32; 4],
    buf: [u8; 16],
    buf_len: usize,
    total: u64,
}

const P1: u32 = 2_654_435_761;
const P2: u32 = 2_246_822_519;
const P3: u32 = 3_266_489_917;
const P4: u32 = 668_265_263;
const P5: u32 = 374_761_393;

fn xxh_round(acc: u32, lane: u32) -> u32 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(13)
        .wrapping_mul(P1)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Xxh32 {
    pub(crate) fn new() -> Self {
        Self {
            acc: [P1.wrapping_add(P2), P2, 0, 0u32.wrapping_sub(P1)],
            buf: [0; 16],
            buf_len: 0,
            total: 0,
        }
    }

    fn stripe(&mut self, s: &[u8]) {
        for (i, acc) in self.acc.iter_mut().enumerate() {
            *acc = xxh_round(*acc, le32(&s[i * 4..]));
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buf_len > 0 {
            let n = (16 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len < 16 {
                return;
            }
            let buf = self.buf;
            self.stripe(&buf);
            self.buf_len = 0;
        }
        let mut stripes = data.chunks_exact(16);
        for s in &mut stripes {
            self.stripe(s);
        }
        let rest = stripes.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    pub(crate) fn digest(&self) -> u32 {
        let mut h = if self.total >= 16 {
            let [a, b, c, d] = self.acc;
            a.rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18))
        } else {
            P5
        };
        h = h.wrapping_add(self.total as u32);
        let tail = &self.buf[..self.buf_len];
        let mut words = tail.chunks_exact(4);
        for w in &mut words {
            h = h
                .wrapping_add(le32(w).wrapping_mul(P3))
                .rotate_left(17)
                .wrapping_mul(P4);
        }
        for &b in words.remainder() {
            h = h
                .wrapping_add(u32::from(b).wrapping_mul(P5))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 15;
        h = h.wrapping_mul(P2);
        h ^= h >> 13;
        h = h.wrapping_mul(P3);
        h ^ (h >> 16)
    }

    pub(crate) fn oneshot(data: &[u8]) -> u32 {
        let mut x = Self::new();
        x.update(data);
        x.digest()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct FrameFlags {
    independent: bool,
    block_checksum: bool,
    content_checksum: bool,
    block_max: usize,
}

/// Push-based LZ4 frame decoder writing plain bytes to `W`.
pub struct Lz4FrameDecoder<W: Write> {
    sink: W,
    state: State,
    flags: FrameFlags,
    /// Bytes of the current header or block collected so far.
    pending: Vec<u8>,
    /// Plain output: `buf[history..pos]` is what this frame's next block may refer back into
    /// (≥ 64 KiB once the frame has produced that much); blocks decode at `pos`.
    buf: Vec<u8>,
    pos: usize,
    history: usize,
    /// Checksum of the frame's plain bytes, when the frame carries one.
    content_hash: Option<Xxh32>,
    frames: u64,
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<W: Write> Lz4FrameDecoder<W> {
    pub fn new(sink: W) -> Self {
        Self {
            sink,
            state: State::Magic,
            flags: FrameFlags::default(),
            pending: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            history: 0,
            content_hash: None,
            frames: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.sink
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.sink
    }

    /// Feeds compressed bytes.
    pub fn write(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            if let State::Skip { remaining } = self.state {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                input = &input[n..];
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::Magic
                } else {
                    State::Skip { remaining }
                };
                continue;
            }
            let need = self.need();
            let take = (need - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == need {
                self.advance()?;
            }
        }
        Ok(())
    }

    /// Ends the stream; fails unless it ended on a frame boundary after at least one frame.
    pub fn finish(mut self) -> io::Result<W> {
        if self.state != State::Magic || !self.pending.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "lz4 stream ends inside a frame",
            ));
        }
        if self.frames == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "lz4 stream holds no frame",
            ));
        }
        self.sink.flush()?;
        Ok(self.sink)
    }

    /// How many bytes the current state needs in `pending` before it can advance.
    fn need(&self) -> usize {
        match self.state {
            State::Magic | State::BlockSize | State::ContentChecksum | State::SkipSize => 4,
            State::Descriptor => {
                if self.pending.len() < 2 {
                    2
                } else {
                    let flg = self.pending[0];
                    // FLG, BD, optional content size, optional dictionary id, header checksum.
                    2 + if flg & 0x08 != 0 { 8 } else { 0 }
                        + if flg & 0x01 != 0 { 4 } else { 0 }
                        + 1
                }
            }
            State::Block { size, .. } => size + if self.flags.block_checksum { 4 } else { 0 },
            State::Skip { .. } => 0,
        }
    }

    fn take_u32(&mut self) -> u32 {
        let v = u32::from_le_bytes([
            self.pending[0],
            self.pending[1],
            self.pending[2],
            self.pending[3],
        ]);
        self.pending.clear();
        v
    }

    fn advance(&mut self) -> io::Result<()> {
        match self.state {
            State::Magic => {
                let magic = self.take_u32();
                if magic == FRAME_MAGIC {
                    self.state = State::Descriptor;
                } else if magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC {
                    self.state = State::SkipSize;
                } else {
                    return Err(corrupt(format!("not an lz4 frame (magic {magic:#010x})")));
                }
            }
            State::SkipSize => {
                let size = self.take_u32();
                self.state = if size == 0 {
                    State::Magic
                } else {
                    State::Skip {
                        remaining: u64::from(size),
                    }
                };
            }
            State::Descriptor => {
                if self.pending.len() == 2 {
                    // Only FLG and BD so far: the descriptor length is now known.
                    if self.need() > 2 {
                        return Ok(());
                    }
                }
                self.start_frame()?;
            }
            State::BlockSize => {
                let word = self.take_u32();
                if word == 0 {
                    self.state = if self.flags.content_checksum {
                        State::ContentChecksum
                    } else {
                        self.end_frame()
                    };
                } else {
                    let size = (word & 0x7FFF_FFFF) as usize;
                    if size > self.flags.block_max {
                        return Err(corrupt(format!(
                            "lz4 block of {size} bytes exceeds the frame's maximum of {}",
                            self.flags.block_max
                        )));
                    }
                    self.state = State::Block {
                        size,
                        compressed: word & 0x8000_0000 == 0,
                    };
                }
            }
            State::Block { size, compressed } => {
                self.decode_block(size, compressed)?;
                self.pending.clear();
                self.state = State::BlockSize;
            }
            State::ContentChecksum => {
                let stored = self.take_u32();
                let computed = self.content_hash.take().map(|h| h.digest());
                if computed != Some(stored) {
                    return Err(corrupt("lz4 content checksum mismatch"));
                }
                self.state = self.end_frame();
            }
            State::Skip { .. } => unreachable!("skip is handled without pending bytes"),
        }
        Ok(())
    }

    fn start_frame(&mut self) -> io::Result<()> {
        let flg = self.pending[0];
        let bd = self.pending[1];
        if flg >> 6 != 0b01 {
            return Err(corrupt(format!(
                "unsupported lz4 frame version {}",
                flg >> 6
            )));
        }
        if flg & 0x02 != 0 || bd & 0x8F != 0 {
            return Err(corrupt("lz4 frame descriptor has reserved bits set"));
        }
        let block_max = match (bd >> 4) & 0x07 {
            4 => 64 * 1024,
            5 => 256 * 1024,
            6 => 1024 * 1024,
            7 => 4 * 1024 * 1024,
            other => {
                return Err(corrupt(format!(
                    "invalid lz4 block maximum size id {other}"
                )));
            }
        };
        if flg & 0x01 != 0 {
            return Err(corrupt(
                "lz4 frame needs a dictionary, which pgBackRest never uses",
            ));
        }
        let (descriptor, hc) = self.pending.split_at(self.pending.len() - 1);
        if (Xxh32::oneshot(descriptor) >> 8) as u8 != hc[0] {
            return Err(corrupt("lz4 frame header checksum mismatch"));
        }
        self.flags = FrameFlags {
            independent: flg & 0x20 != 0,
            block_checksum: flg & 0x10 != 0,
            content_checksum: flg & 0x04 != 0,
            block_max,
        };
        self.content_hash = self.flags.content_checksum.then(Xxh32::new);
        self.pending.clear();
        self.history = self.pos;
        self.state = State::BlockSize;
        Ok(())
    }

    fn end_frame(&mut self) -> State {
        self.frames += 1;
        self.history = self.pos;
        State::Magic
    }

    fn decode_block(&mut self, size: usize, compressed: bool) -> io::Result<()> {
        if self.flags.block_checksum
            && Xxh32::oneshot(&self.pending[..size]) != le32(&self.pending[size..])
        {
            return Err(corrupt("lz4 block checksum mismatch"));
        }
        let block_max = self.flags.block_max;
        if self.flags.independent {
            self.history = self.pos;
        }
        self.make_room(block_max);
        let data = &self.pending[..size];
        let start = self.pos;
        let end = if compressed {
            lz4_block::decode_block(data, &mut self.buf, start, self.history, start + block_max)
                .map_err(|e| corrupt(format!("lz4 block: {e}")))?
        } else {
            self.buf[start..start + size].copy_from_slice(data);
            start + size
        };
        self.pos = end;
        let plain = &self.buf[start..end];
        if let Some(h) = self.content_hash.as_mut() {
            h.update(plain);
        }
        self.sink.write_all(plain)?;
        Ok(())
    }

    /// Makes `buf[pos..]` hold a block of `block_max` plus the slack, keeping the last 64 KiB
    /// of history. The buffer holds several blocks so the history moves only now and then.
    fn make_room(&mut self, block_max: usize) {
        let need = block_max + lz4_block::SLACK;
        if self.buf.len() - self.pos >= need {
            return;
        }
        let keep_from = self.pos.saturating_sub(WINDOW).max(self.history);
        self.buf.copy_within(keep_from..self.pos, 0);
        self.history = self.history.saturating_sub(keep_from);
        self.pos -= keep_from;
        // Sixteen transfers each hold one: 64 KiB blocks (pgBackRest's) make this 320 KiB.
        let wanted = WINDOW + 4 * block_max + lz4_block::SLACK;
        if self.buf.len() < wanted {
            self.buf.resize(wanted, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], independent: bool, checksums: bool) -> Vec<u8> {
        let info = lz4_flex::frame::FrameInfo::new()
            .block_mode(if independent {
                lz4_flex::frame::BlockMode::Independent
            } else {
                lz4_flex::frame::BlockMode::Linked
            })
            .block_checksums(checksums)
            .content_checksum(checksums);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn sample() -> Vec<u8> {
        // Repetitive across block boundaries so linked blocks really refer back into the window.
        (0..300_000u32)
            .flat_map(|i| ((i % 977) as u16).to_le_bytes())
            .collect()
    }

    fn decode_in_chunks(frame: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut d = Lz4FrameDecoder::new(Vec::new());
        for c in frame.chunks(chunk) {
            d.write(c)?;
        }
        d.finish()
    }

    #[test]
    fn decodes_linked_and_independent_frames_in_any_chunking() {
        let data = sample();
        for (independent, checksums) in [(false, false), (false, true), (true, false), (true, true)]
        {
            let frame = compress(&data, independent, checksums);
            for chunk in [1, 7, 4096, 65_536, frame.len()] {
                assert_eq!(
                    decode_in_chunks(&frame, chunk).unwrap(),
                    data,
                    "chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn long_linked_frames_keep_their_history_when_the_buffer_wraps() {
        // Several times the output buffer, with matches reaching back across block boundaries:
        // the history moves to the front of the buffer again and again.
        let base = sample();
        let mut data = Vec::new();
        for i in 0..12u8 {
            data.extend(base[..400_000].iter().map(|b| b ^ (i % 3)));
            data.extend(std::iter::repeat_n(i, 70_000)); // a long offset-1 run
        }
        for independent in [false, true] {
            let frame = compress(&data, independent, true);
            for chunk in [999, frame.len()] {
                assert!(
                    decode_in_chunks(&frame, chunk).unwrap() == data,
                    "independent {independent}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn concatenated_and_skippable_frames() {
        let mut stream = compress(b"hello ", false, true);
        stream.extend_from_slice(&0x184D_2A5Au32.to_le_bytes());
        stream.extend_from_slice(&3u32.to_le_bytes());
        stream.extend_from_slice(b"xyz");
        stream.extend_from_slice(&compress(b"world", true, false));
        assert_eq!(decode_in_chunks(&stream, 2).unwrap(), b"hello world");
    }

    #[test]
    fn rejects_truncation_garbage_and_empty() {
        let frame = compress(&sample(), false, true);
        let err = decode_in_chunks(&frame[..frame.len() - 3], 1000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = decode_in_chunks(b"not lz4 at all", 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(decode_in_chunks(b"", 4).is_err());
        let mut trailing = frame.clone();
        trailing.extend_from_slice(b"junk");
        assert!(decode_in_chunks(&trailing, 4096).is_err());
    }

    #[test]
    fn xxh32_known_values_and_streaming() {
        assert_eq!(Xxh32::oneshot(b""), 0x02CC_5D05);
        assert_eq!(Xxh32::oneshot(b"abc"), 0x32D1_53FF);
        let data = sample();
        let whole = Xxh32::oneshot(&data);
        for chunk in [1, 5, 16, 17, 1000] {
            let mut x = Xxh32::new();
            data.chunks(chunk).for_each(|c| x.update(c));
            assert_eq!(x.digest(), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn damaged_checksum_bytes_are_detected() {
        // Plain output would be right; only the checksums are hit.
        let frame = compress(&sample(), false, true);
        let mut bad = frame.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode_in_chunks(&bad, 4096).is_err(), "content checksum");
        let mut bad = frame.clone();
        bad[6] ^= 1;
        assert!(decode_in_chunks(&bad, 4096).is_err(), "header checksum");
    }

    #[test]
    fn corrupt_block_is_an_error_or_wrong_output_never_a_panic() {
        let data = sample();
        let frame = compress(&data, false, false);
        for pos in (20..frame.len()).step_by(997) {
            let mut bad = frame.clone();
            bad[pos] ^= 0x55;
            if let Ok(out) = decode_in_chunks(&bad, 5000) {
                assert_ne!(
                    out, data,
                    "flip at {pos} went unnoticed by the decoder and the output"
                );
            }
        }
    }
}
