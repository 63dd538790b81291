//! Streaming verifiers: push bytes in transit with `update`, then `finish`.
//!
//! None of them buffers an object, except [`InfoVerifier`] for info files and manifests, which
//! are small and must be whole to check (bounded by a limit).

use std::io::{self, Write};

use sha1::{Digest, Sha1};

use super::compress::{CompressType, PushDecoder};
use super::error::RepoError;
use super::ini::Ini;
use super::manifest::{BundleSlice, FileCheck};
use super::wal::WalFileName;

/// What every streaming verifier offers, so a copy pipeline can hold any of them.
pub trait StreamVerifier: Send {
    /// Feeds the next bytes; fails as soon as the bytes are known to be wrong.
    fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError>;
    /// Ends the stream and gives the verdict.
    fn finish_boxed(self: Box<Self>) -> Result<(), RepoError>;
}

const ENCRYPTED_MAGIC: &[u8] = b"Salted__";

/// A verifier for a manifest file's stored bytes (or a bundle slice), from its [`FileCheck`].
/// `file` names it in errors. `Nothing` accepts only an empty stream.
pub fn file_verifier(file: impl Into<String>, check: &FileCheck) -> Box<dyn StreamVerifier> {
    let file = file.into();
    match check {
        FileCheck::Stored { sha1, size } => Box::new(StoredVerifier::new(file, sha1, *size)),
        FileCheck::SizeOnly { size } => Box::new(StoredVerifier::size_only(file, *size)),
        FileCheck::Nothing => Box::new(StoredVerifier::size_only(file, 0)),
        FileCheck::Content {
            compress,
            sha1,
            size,
            stored_size,
        } => Box::new(ContentVerifier::new(
            file,
            *compress,
            sha1,
            Some(*size),
            Some(*stored_size),
            "content",
        )),
    }
}

/// SHA-1 and length of bytes as stored (`rck` and `repo-size`, or `checksum` and `size` of an
/// unfiltered file), for a whole object or one bundle slice fed on its own.
pub struct StoredVerifier {
    file: String,
    expected_sha1: Option<String>,
    expected_size: u64,
    sha: Sha1,
    len: u64,
}

impl StoredVerifier {
    pub fn new(file: impl Into<String>, sha1: &str, size: u64) -> Self {
        Self {
            file: file.into(),
            expected_sha1: Some(sha1.to_owned()),
            expected_size: size,
            sha: Sha1::new(),
            len: 0,
        }
    }

    /// Checks the length only (encrypted files without `rck`).
    pub fn size_only(file: impl Into<String>, size: u64) -> Self {
        Self {
            expected_sha1: None,
            ..Self::new(file, "", size)
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        self.len += chunk.len() as u64;
        if self.len > self.expected_size {
            return Err(self.size_error());
        }
        if self.expected_sha1.is_some() {
            self.sha.update(chunk);
        }
        Ok(())
    }

    fn size_error(&self) -> RepoError {
        RepoError::Size {
            file: self.file.clone(),
            what: "stored bytes",
            expected: self.expected_size,
            found: self.len,
        }
    }

    pub fn finish(self) -> Result<(), RepoError> {
        if self.len != self.expected_size {
            return Err(self.size_error());
        }
        if let Some(expected) = self.expected_sha1 {
            let found = hex::encode(self.sha.finalize());
            if found != expected {
                return Err(RepoError::Checksum {
                    file: self.file,
                    what: "stored bytes",
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

impl StreamVerifier for StoredVerifier {
    fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        StoredVerifier::update(self, chunk)
    }
    fn finish_boxed(self: Box<Self>) -> Result<(), RepoError> {
        (*self).finish()
    }
}

/// Hashes plain bytes as a decoder produces them, keeping the first page header for WAL checks.
struct HashSink {
    sha: Sha1,
    len: u64,
    limit: Option<u64>,
    head: Vec<u8>,
}

const HEAD_LEN: usize = 40;

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.len += buf.len() as u64;
        if let Some(limit) = self.limit
            && self.len > limit
        {
            // Stop a decompression bomb or an oversized segment early; reported as a size error.
            return Err(io::Error::other("plain size exceeds the expected size"));
        }
        if self.head.len() < HEAD_LEN {
            let n = (HEAD_LEN - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..n]);
        }
        self.sha.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses on the fly and checks the SHA-1 and length of the plain content: WAL segments
/// against their name, and backup files without `rck` against `checksum`/`size`.
pub struct ContentVerifier {
    file: String,
    what: &'static str,
    compress: CompressType,
    /// Held until the first 8 bytes show whether the file is encrypted.
    prefix: Vec<u8>,
    prefix_done: bool,
    decoder: Option<PushDecoder<HashSink>>,
    expected_sha1: String,
    expected_size: Option<u64>,
    expected_stored: Option<u64>,
    stored: u64,
}

/// What a finished content check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSummary {
    pub stored_size: u64,
    pub plain_size: u64,
    /// The first bytes of the plain content (up to 40: a WAL long page header).
    pub head: Vec<u8>,
}

impl ContentVerifier {
    /// `size`: expected plain length, when known; `stored_size`: expected stored length, when known.
    pub fn new(
        file: impl Into<String>,
        compress: CompressType,
        sha1: &str,
        size: Option<u64>,
        stored_size: Option<u64>,
        what: &'static str,
    ) -> Self {
        let sink = HashSink {
            sha: Sha1::new(),
            len: 0,
            limit: size,
            head: Vec::with_capacity(HEAD_LEN),
        };
        Self {
            file: file.into(),
            what,
            compress,
            prefix: Vec::with_capacity(ENCRYPTED_MAGIC.len()),
            prefix_done: false,
            // The `None` decoder cannot fail to build; the others only allocate.
            decoder: PushDecoder::new(compress, sink).ok(),
            expected_sha1: sha1.to_owned(),
            expected_size: size,
            expected_stored: stored_size,
            stored: 0,
        }
    }

    fn decode_error(&self, e: io::Error) -> RepoError {
        // A sink over its limit is a size problem, whatever error the decoder wrapped it in.
        if let Some(sink) = self.decoder.as_ref().map(PushDecoder::sink)
            && let Some(limit) = sink.limit
            && sink.len > limit
        {
            return RepoError::Size {
                file: self.file.clone(),
                what: self.what,
                expected: limit,
                found: sink.len,
            };
        }
        RepoError::Decompress {
            file: self.file.clone(),
            compress: self.compress,
            message: e.to_string(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(RepoError::Decompress {
                file: self.file.clone(),
                compress: self.compress,
                message: "cannot start the decoder".into(),
            });
        };
        decoder.write(chunk).map_err(|e| self.decode_error(e))
    }

    /// Sends the held prefix on, unless it shows an encrypted file.
    fn release_prefix(&mut self) -> Result<(), RepoError> {
        self.prefix_done = true;
        if self.prefix.starts_with(ENCRYPTED_MAGIC) {
            return Err(RepoError::Encrypted {
                file: self.file.clone(),
            });
        }
        let prefix = std::mem::take(&mut self.prefix);
        self.feed(&prefix)
    }

    pub fn update(&mut self, mut chunk: &[u8]) -> Result<(), RepoError> {
        self.stored += chunk.len() as u64;
        if let Some(expected) = self.expected_stored
            && self.stored > expected
        {
            return Err(RepoError::Size {
                file: self.file.clone(),
                what: "stored bytes",
                expected,
                found: self.stored,
            });
        }
        if !self.prefix_done {
            let n = (ENCRYPTED_MAGIC.len() - self.prefix.len()).min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.prefix.len() < ENCRYPTED_MAGIC.len() {
                return Ok(());
            }
            self.release_prefix()?;
        }
        self.feed(chunk)
    }

    pub fn finish_summary(mut self) -> Result<ContentSummary, RepoError> {
        if !self.prefix_done {
            self.release_prefix()?;
        }
        if let Some(expected) = self.expected_stored
            && self.stored != expected
        {
            return Err(RepoError::Size {
                file: self.file,
                what: "stored bytes",
                expected,
                found: self.stored,
            });
        }
        let decoder = self.decoder.take().expect("built in new");
        let sink = decoder.finish().map_err(|e| self.decode_error(e))?;
        if let Some(expected) = self.expected_size
            && sink.len != expected
        {
            return Err(RepoError::Size {
                file: self.file,
                what: self.what,
                expected,
                found: sink.len,
            });
        }
        let found = hex::encode(sink.sha.finalize());
        if found != self.expected_sha1 {
            return Err(RepoError::Checksum {
                file: self.file,
                what: self.what,
                expected: self.expected_sha1,
                found,
            });
        }
        Ok(ContentSummary {
            stored_size: self.stored,
            plain_size: sink.len,
            head: sink.head,
        })
    }

    pub fn finish(self) -> Result<(), RepoError> {
        self.finish_summary().map(drop)
    }
}

impl StreamVerifier for ContentVerifier {
    fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        ContentVerifier::update(self, chunk)
    }
    fn finish_boxed(self: Box<Self>) -> Result<(), RepoError> {
        (*self).finish()
    }
}

/// What a verified WAL segment's first page header says (little-endian servers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSummary {
    pub stored_size: u64,
    pub plain_size: u64,
    /// From the long page header, when the first page has one: the cluster's system id, the
    /// segment size, and the LSN of the first page.
    pub system_id: Option<u64>,
    pub segment_size: Option<u32>,
    pub page_address: Option<u64>,
}

/// Checks an archived WAL segment by its name: decompress on the fly, SHA-1 of the plain bytes
/// must equal the name's, plain length must equal the segment size.
pub struct WalVerifier {
    inner: ContentVerifier,
    segment_size: Option<u64>,
}

/// PostgreSQL's `XLP_LONG_HEADER` flag in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Largest WAL segment PostgreSQL allows; bounds a segment of unknown size.
const MAX_SEGMENT_SIZE: u64 = 1 << 30;

impl WalVerifier {
    /// `file` names the object in errors. `segment_size`: the stanza's WAL segment size when
    /// known; otherwise the size recorded in the segment's own first page header must match.
    pub fn new(file: impl Into<String>, name: &WalFileName, segment_size: Option<u64>) -> Self {
        let mut inner = ContentVerifier::new(
            file,
            name.compress,
            &name.sha1,
            segment_size,
            None,
            "WAL segment",
        );
        if segment_size.is_none()
            && let Some(d) = inner.decoder.as_mut()
        {
            // Unknown size still has a ceiling, so a corrupt stream cannot inflate without bound.
            d.sink_mut().limit = Some(MAX_SEGMENT_SIZE);
        }
        Self {
            inner,
            segment_size,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        self.inner.update(chunk)
    }

    pub fn finish_summary(self) -> Result<WalSummary, RepoError> {
        let file = self.inner.file.clone();
        let s = self.inner.finish_summary()?;
        let header = parse_long_header(&s.head);
        let summary = WalSummary {
            stored_size: s.stored_size,
            plain_size: s.plain_size,
            system_id: header.map(|h| h.0),
            segment_size: header.map(|h| h.1),
            page_address: header.map(|h| h.2),
        };
        if self.segment_size.is_none() {
            match summary.segment_size {
                Some(size) if u64::from(size) == summary.plain_size => {}
                Some(size) => {
                    return Err(RepoError::Size {
                        file,
                        what: "WAL segment",
                        expected: u64::from(size),
                        found: summary.plain_size,
                    });
                }
                None => {
                    return Err(RepoError::Format {
                        file,
                        line: 0,
                        message: "no WAL long page header: cannot tell the segment size".into(),
                    });
                }
            }
        }
        Ok(summary)
    }

    pub fn finish(self) -> Result<(), RepoError> {
        self.finish_summary().map(drop)
    }
}

/// (system id, segment size, page address) from an `XLogLongPageHeaderData`.
fn parse_long_header(head: &[u8]) -> Option<(u64, u32, u64)> {
    if head.len() < HEAD_LEN {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().expect("8 bytes"));
    (u16_at(2) & XLP_LONG_HEADER != 0).then(|| (u64_at(24), u32_at(32), u64_at(8)))
}

impl StreamVerifier for WalVerifier {
    fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        WalVerifier::update(self, chunk)
    }
    fn finish_boxed(self: Box<Self>) -> Result<(), RepoError> {
        (*self).finish()
    }
}

/// Checks every file slice of a bundle object as the whole object streams through. Bytes
/// between or after slices (none in practice) are not checked.
pub struct BundleVerifier {
    file: String,
    slices: Vec<BundleSlice>,
    lengths: Vec<u64>,
    next: usize,
    current: Option<(usize, Box<dyn StreamVerifier>)>,
    pos: u64,
}

impl BundleVerifier {
    /// `slices` as [`super::manifest::Manifest::bundles`] gives them; overlapping slices are refused.
    pub fn new(file: impl Into<String>, mut slices: Vec<BundleSlice>) -> Result<Self, RepoError> {
        let file = file.into();
        slices.retain(|s| s.check != FileCheck::Nothing);
        slices.sort_by_key(|s| s.offset);
        let lengths: Vec<u64> = slices.iter().map(|s| stored_len(&s.check)).collect();
        for (i, w) in slices.windows(2).enumerate() {
            if w[0].offset + lengths[i] > w[1].offset {
                return Err(RepoError::Format {
                    file,
                    line: 0,
                    message: format!("bundle slices of {} and {} overlap", w[0].name, w[1].name),
                });
            }
        }
        Ok(Self {
            file,
            slices,
            lengths,
            next: 0,
            current: None,
            pos: 0,
        })
    }

    fn slice_name(&self, i: usize) -> String {
        format!(
            "{} ({} at offset {})",
            self.file, self.slices[i].name, self.slices[i].offset
        )
    }

    fn end_current(&mut self) -> Result<(), RepoError> {
        if let Some((_, v)) = self.current.take() {
            v.finish_boxed()?;
        }
        Ok(())
    }

    /// Starts every slice that begins at `pos`, finishing empty ones at once.
    fn start_slices(&mut self) -> Result<(), RepoError> {
        while self.current.is_none()
            && self.next < self.slices.len()
            && self.slices[self.next].offset == self.pos
        {
            let i = self.next;
            self.next += 1;
            let v = file_verifier(self.slice_name(i), &self.slices[i].check);
            if self.lengths[i] == 0 {
                v.finish_boxed()?;
            } else {
                self.current = Some((i, v));
            }
        }
        Ok(())
    }

    pub fn update(&mut self, mut chunk: &[u8]) -> Result<(), RepoError> {
        loop {
            self.start_slices()?;
            if chunk.is_empty() {
                return Ok(());
            }
            let (take, in_slice) = match &self.current {
                Some((i, _)) => {
                    let end = self.slices[*i].offset + self.lengths[*i];
                    (
                        usize::try_from(end - self.pos)
                            .unwrap_or(usize::MAX)
                            .min(chunk.len()),
                        true,
                    )
                }
                None => {
                    let until = self.slices.get(self.next).map_or(u64::MAX, |s| s.offset);
                    (
                        usize::try_from(until - self.pos)
                            .unwrap_or(usize::MAX)
                            .min(chunk.len()),
                        false,
                    )
                }
            };
            if let (true, Some((_, v))) = (in_slice, self.current.as_mut()) {
                v.update(&chunk[..take])?;
            }
            self.pos += take as u64;
            chunk = &chunk[take..];
            if let Some((i, _)) = &self.current
                && self.pos == self.slices[*i].offset + self.lengths[*i]
            {
                self.end_current()?;
            }
        }
    }

    pub fn finish(mut self) -> Result<(), RepoError> {
        self.start_slices()?;
        if let Some((i, _)) = &self.current {
            let i = *i;
            return Err(RepoError::Size {
                file: self.slice_name(i),
                what: "stored bytes",
                expected: self.lengths[i],
                found: self.pos - self.slices[i].offset,
            });
        }
        if let Some(s) = self.slices.get(self.next) {
            let end = s.offset + self.lengths[self.next];
            return Err(RepoError::Size {
                file: self.file,
                what: "bundle",
                expected: end,
                found: self.pos,
            });
        }
        Ok(())
    }
}

fn stored_len(check: &FileCheck) -> u64 {
    match check {
        FileCheck::Stored { size, .. } | FileCheck::SizeOnly { size } => *size,
        FileCheck::Content { stored_size, .. } => *stored_size,
        FileCheck::Nothing => 0,
    }
}

impl StreamVerifier for BundleVerifier {
    fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        BundleVerifier::update(self, chunk)
    }
    fn finish_boxed(self: Box<Self>) -> Result<(), RepoError> {
        (*self).finish()
    }
}

/// Default ceiling for buffering an info file or manifest (a manifest of a cluster with a
/// million files is a few hundred MiB; anything larger is not a manifest).
pub const INFO_LIMIT: u64 = 512 * 1024 * 1024;

/// Buffers a small file (info file, manifest, or a gzip'd `backup.history` manifest) and
/// verifies its `backrest-checksum` at the end.
pub struct InfoVerifier {
    file: String,
    limit: u64,
    stored: u64,
    gz: Option<flate2::write::GzDecoder<Vec<u8>>>,
    buf: Vec<u8>,
}

impl InfoVerifier {
    /// For `archive.info`, `backup.info`, `backup.manifest` and their copies.
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            limit: INFO_LIMIT,
            stored: 0,
            gz: None,
            buf: Vec::new(),
        }
    }

    /// For `backup.history/<year>/<label>.manifest.gz`.
    pub fn gzip(file: impl Into<String>) -> Self {
        Self {
            gz: Some(flate2::write::GzDecoder::new(Vec::new())),
            ..Self::new(file)
        }
    }

    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn too_large(&self) -> RepoError {
        RepoError::TooLarge {
            file: self.file.clone(),
            limit: self.limit,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        self.stored += chunk.len() as u64;
        match &mut self.gz {
            None => {
                if self.stored > self.limit {
                    return Err(self.too_large());
                }
                self.buf.extend_from_slice(chunk);
            }
            Some(gz) => {
                if self.stored == chunk.len() as u64 && chunk.starts_with(ENCRYPTED_MAGIC) {
                    return Err(RepoError::Encrypted {
                        file: self.file.clone(),
                    });
                }
                let res = gz.write_all(chunk);
                let plain = gz.get_ref().len() as u64;
                res.map_err(|e| RepoError::Decompress {
                    file: self.file.clone(),
                    compress: CompressType::Gz,
                    message: e.to_string(),
                })?;
                if plain > self.limit {
                    return Err(self.too_large());
                }
            }
        }
        Ok(())
    }

    /// Verifies and returns the parsed file.
    pub fn finish_ini(self) -> Result<Ini, RepoError> {
        let file = self.file.clone();
        let bytes = self.plain_bytes()?;
        let ini = Ini::parse(&bytes).map_err(|e| e.in_file(&file))?;
        ini.verify_checksum().map_err(|e| e.in_file(&file))?;
        Ok(ini)
    }

    /// The file's bytes, decompressed.
    fn plain_bytes(self) -> Result<Vec<u8>, RepoError> {
        Ok(match self.gz {
            None => self.buf,
            Some(gz) => gz.finish().map_err(|e| RepoError::Decompress {
                file: self.file.clone(),
                compress: CompressType::Gz,
                message: e.to_string(),
            })?,
        })
    }

    /// Verifies without keeping the parsed entries (a manifest of many files is passed on as
    /// bytes; holding its entries too would add about 1 KiB per file).
    pub fn finish(self) -> Result<(), RepoError> {
        let file = self.file.clone();
        let bytes = self.plain_bytes()?;
        Ini::checksums(&bytes)
            .and_then(|ini| ini.verify_checksum())
            .map_err(|e| e.in_file(&file))
    }
}

impl StreamVerifier for InfoVerifier {
    fn update(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        InfoVerifier::update(self, chunk)
    }
    fn finish_boxed(self: Box<Self>) -> Result<(), RepoError> {
        (*self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ini::tests::BACKUP_INFO;
    use crate::repo::wal::WalSegment;

    const SEG: u64 = 1 << 20;

    /// A fake 1 MiB WAL segment starting with a long page header (system id 42, page at 3 MiB).
    fn fake_segment() -> Vec<u8> {
        let mut seg: Vec<u8> = (0..SEG as usize)
            .map(|i| (i % 251) as u8 ^ ((i / 8192) as u8))
            .collect();
        seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        seg[8..16].copy_from_slice(&(3 * SEG).to_le_bytes());
        seg[24..32].copy_from_slice(&42u64.to_le_bytes());
        seg[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
        seg
    }

    fn compress(ct: CompressType, data: &[u8]) -> Vec<u8> {
        match ct {
            CompressType::None => data.to_vec(),
            CompressType::Gz => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            CompressType::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            CompressType::Zst => zstd::encode_all(data, 3).unwrap(),
            CompressType::Bz2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    fn sha1_hex(data: &[u8]) -> String {
        hex::encode(Sha1::digest(data))
    }

    fn wal_name(ct: CompressType, sha1: &str) -> WalFileName {
        WalFileName {
            segment: WalSegment::parse("000000010000000000000003").unwrap(),
            partial: false,
            sha1: sha1.to_owned(),
            compress: ct,
        }
    }

    fn run(
        v: &mut dyn FnMut(&[u8]) -> Result<(), RepoError>,
        data: &[u8],
        chunk: usize,
    ) -> Result<(), RepoError> {
        data.chunks(chunk).try_for_each(v)
    }

    fn check_wal(
        ct: CompressType,
        stored: &[u8],
        sha1: &str,
        size: Option<u64>,
        chunk: usize,
    ) -> Result<WalSummary, RepoError> {
        let mut v = WalVerifier::new("wal", &wal_name(ct, sha1), size);
        run(&mut |c| v.update(c), stored, chunk)?;
        v.finish_summary()
    }

    #[test]
    fn wal_segments_verify_in_every_compression() {
        let seg = fake_segment();
        let sha1 = sha1_hex(&seg);
        for ct in [
            CompressType::None,
            CompressType::Gz,
            CompressType::Lz4,
            CompressType::Zst,
            CompressType::Bz2,
        ] {
            let stored = compress(ct, &seg);
            for chunk in [3, 65_536, stored.len()] {
                let s = check_wal(ct, &stored, &sha1, Some(SEG), chunk).unwrap();
                assert_eq!((s.plain_size, s.stored_size), (SEG, stored.len() as u64));
            }
            // Size from the segment's own header when the stanza's is not known.
            let s = check_wal(ct, &stored, &sha1, None, 10_000).unwrap();
            assert_eq!(
                (s.system_id, s.segment_size, s.page_address),
                (Some(42), Some(SEG as u32), Some(3 * SEG))
            );
        }
    }

    #[test]
    fn wal_corruption_is_detected_in_every_compression() {
        let seg = fake_segment();
        let sha1 = sha1_hex(&seg);
        for ct in [
            CompressType::None,
            CompressType::Gz,
            CompressType::Lz4,
            CompressType::Zst,
            CompressType::Bz2,
        ] {
            let stored = compress(ct, &seg);
            // bzip2's last byte ends in padding bits no decoder reads, so test the one before.
            let last = stored.len() - if ct == CompressType::Bz2 { 2 } else { 1 };
            for pos in [stored.len() / 3, stored.len() / 2, last] {
                let mut bad = stored.clone();
                bad[pos] ^= 0x10;
                let err = check_wal(ct, &bad, &sha1, Some(SEG), 4096).unwrap_err();
                assert!(err.is_corruption(), "{ct} flip at {pos}: {err}");
                assert_eq!(err.file(), "wal");
            }
            let err =
                check_wal(ct, &stored[..stored.len() - 1], &sha1, Some(SEG), 4096).unwrap_err();
            assert!(err.is_corruption(), "{ct} truncated: {err}");
            let wrong = sha1_hex(b"other");
            let err = check_wal(ct, &stored, &wrong, Some(SEG), 4096).unwrap_err();
            assert!(matches!(err, RepoError::Checksum { .. }), "{ct}: {err}");
            let err = check_wal(ct, &stored, &sha1, Some(2 * SEG), 4096).unwrap_err();
            assert!(
                matches!(err, RepoError::Size { expected, found, .. } if expected == 2 * SEG && found == SEG),
                "{ct}: {err}"
            );
            // Larger than the segment size: stopped while streaming, not at the end.
            let err = check_wal(ct, &stored, &sha1, Some(SEG / 2), 4096).unwrap_err();
            assert!(matches!(err, RepoError::Size { .. }), "{ct}: {err}");
        }
    }

    #[test]
    fn encrypted_wal_is_reported_as_such() {
        let mut data = b"Salted__".to_vec();
        data.extend_from_slice(&[7; 100]);
        for chunk in [1, 5, 200] {
            let err =
                check_wal(CompressType::Lz4, &data, &sha1_hex(b""), Some(SEG), chunk).unwrap_err();
            assert!(matches!(err, RepoError::Encrypted { .. }), "{err}");
        }
        // A file shorter than the marker still reaches the decoder and fails as corrupt.
        let err = check_wal(CompressType::Gz, b"Salt", &sha1_hex(b""), Some(SEG), 1).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }

    #[test]
    fn stored_bytes() {
        let data = b"stored bytes of a backup file";
        let ok = |d: &[u8], sha: &str, size: u64| {
            let mut v = StoredVerifier::new("f", sha, size);
            d.chunks(4).try_for_each(|c| v.update(c))?;
            v.finish()
        };
        ok(data, &sha1_hex(data), data.len() as u64).unwrap();
        assert!(matches!(
            ok(data, &sha1_hex(b"x"), data.len() as u64),
            Err(RepoError::Checksum { .. })
        ));
        assert!(matches!(
            ok(&data[1..], &sha1_hex(data), data.len() as u64),
            Err(RepoError::Size { .. })
        ));
        assert!(matches!(
            ok(data, &sha1_hex(data), 3),
            Err(RepoError::Size { found: 4, .. })
        ));
        let mut v = StoredVerifier::size_only("f", 3);
        v.update(b"abc").unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn content_check_for_backup_files_without_rck() {
        let plain = b"page".repeat(5000);
        let stored = compress(CompressType::Zst, &plain);
        let check = FileCheck::Content {
            compress: CompressType::Zst,
            sha1: sha1_hex(&plain),
            size: plain.len() as u64,
            stored_size: stored.len() as u64,
        };
        let mut v = file_verifier("f", &check);
        v.update(&stored).unwrap();
        v.finish_boxed().unwrap();
        let mut v = file_verifier("f", &check);
        v.update(&stored[..10]).unwrap();
        assert!(matches!(v.finish_boxed(), Err(RepoError::Size { .. })));
    }

    fn slice(name: &str, offset: u64, data: &[u8]) -> BundleSlice {
        BundleSlice {
            name: name.into(),
            offset,
            check: FileCheck::Stored {
                sha1: sha1_hex(data),
                size: data.len() as u64,
            },
        }
    }

    #[test]
    fn bundles_check_every_slice_in_one_pass() {
        let (a, b, c) = (b"first file".to_vec(), vec![9u8; 70_000], b"third".to_vec());
        let bundle = [a.clone(), b.clone(), c.clone()].concat();
        let slices = || {
            vec![
                slice("pg_data/c", (a.len() + b.len()) as u64, &c),
                slice("pg_data/a", 0, &a),
                slice("pg_data/empty", a.len() as u64, b""),
                slice("pg_data/b", a.len() as u64, &b),
            ]
        };
        for chunk in [1, 7, 4096, bundle.len()] {
            let mut v = BundleVerifier::new("bundle/1", slices()).unwrap();
            run(&mut |ch| v.update(ch), &bundle, chunk).unwrap();
            v.finish().unwrap();
        }

        let mut bad = bundle.clone();
        bad[a.len() + 500] ^= 1;
        let mut v = BundleVerifier::new("bundle/1", slices()).unwrap();
        let err = run(&mut |ch| v.update(ch), &bad, 1000).unwrap_err();
        assert!(matches!(err, RepoError::Checksum { .. }));
        assert!(err.file().contains("pg_data/b"), "{err}");

        let mut v = BundleVerifier::new("bundle/1", slices()).unwrap();
        run(&mut |ch| v.update(ch), &bundle[..bundle.len() - 2], 1000).unwrap();
        let err = v.finish().unwrap_err();
        assert!(
            matches!(err, RepoError::Size { .. }) && err.file().contains("pg_data/c"),
            "{err}"
        );

        let overlapping = vec![slice("x", 0, &a), slice("y", 3, &c)];
        assert!(BundleVerifier::new("bundle/1", overlapping).is_err());
    }

    #[test]
    fn info_files_plain_and_gzip() {
        let mut v = InfoVerifier::new("backup.info");
        for c in BACKUP_INFO.as_bytes().chunks(100) {
            v.update(c).unwrap();
        }
        let ini = v.finish_ini().unwrap();
        assert_eq!(ini.section("backup:current").unwrap().entries.len(), 3);

        let bad = BACKUP_INFO.replacen("202209061", "202209062", 1);
        let mut v = InfoVerifier::new("backup.info");
        v.update(bad.as_bytes()).unwrap();
        let err = v.finish().unwrap_err();
        assert!(
            matches!(err, RepoError::InfoChecksum { .. }) && err.file() == "backup.info",
            "{err}"
        );

        let gz = compress(CompressType::Gz, BACKUP_INFO.as_bytes());
        let mut v = InfoVerifier::gzip("x.manifest.gz");
        v.update(&gz).unwrap();
        v.finish().unwrap();
        let mut v = InfoVerifier::gzip("x.manifest.gz");
        v.update(&gz[..gz.len() - 4]).unwrap();
        assert!(matches!(v.finish(), Err(RepoError::Decompress { .. })));

        let mut v = InfoVerifier::new("big").with_limit(10);
        assert!(matches!(
            v.update(BACKUP_INFO.as_bytes()),
            Err(RepoError::TooLarge { .. })
        ));
    }
}
