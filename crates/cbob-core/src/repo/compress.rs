//! pgBackRest's compression types and push-based decompression.
//!
//! Verifiers sit on a byte stream in transit, so decompression here is push-based: bytes are
//! written in as they arrive and plain bytes come out into a [`Write`] sink, with memory bounded
//! by the codec's window, never by the object size.

use std::fmt;
use std::io::{self, Write};

use super::lz4::Lz4FrameDecoder;

/// A compression type as pgBackRest names it (`compress-type`) and as file extensions show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CompressType {
    None,
    Gz,
    Lz4,
    Zst,
    Bz2,
}

impl CompressType {
    /// Every type that adds an extension, in the order pgBackRest lists them.
    pub const WITH_EXTENSION: [CompressType; 4] = [
        CompressType::Gz,
        CompressType::Lz4,
        CompressType::Zst,
        CompressType::Bz2,
    ];

    /// The name used in manifests (`option-compress-type`) and configuration.
    pub fn name(self) -> &'static str {
        match self {
            CompressType::None => "none",
            CompressType::Gz => "gz",
            CompressType::Lz4 => "lz4",
            CompressType::Zst => "zst",
            CompressType::Bz2 => "bz2",
        }
    }

    /// The extension pgBackRest appends to a compressed file, with its dot ("" for none).
    pub fn extension(self) -> &'static str {
        match self {
            CompressType::None => "",
            CompressType::Gz => ".gz",
            CompressType::Lz4 => ".lz4",
            CompressType::Zst => ".zst",
            CompressType::Bz2 => ".bz2",
        }
    }

    /// Parses a name as written in a manifest (`"gz"`, `"lz4"`, `"zst"`, `"bz2"`, `"none"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(CompressType::None),
            "gz" => Some(CompressType::Gz),
            "lz4" => Some(CompressType::Lz4),
            "zst" => Some(CompressType::Zst),
            "bz2" => Some(CompressType::Bz2),
            _ => None,
        }
    }

    /// Splits a known compression extension off a file name: `("x", Lz4)` for `"x.lz4"`,
    /// `("x", None)` when there is none.
    pub fn split_extension(name: &str) -> (&str, CompressType) {
        for ct in Self::WITH_EXTENSION {
            if let Some(stem) = name.strip_suffix(ct.extension()) {
                return (stem, ct);
            }
        }
        (name, CompressType::None)
    }
}

impl fmt::Display for CompressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A push-based decompressor: [`write`](Self::write) compressed bytes in, plain bytes go to `W`.
pub struct PushDecoder<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    None(W),
    Gz(flate2::write::GzDecoder<W>),
    Lz4(Lz4FrameDecoder<W>),
    Zst(zstd::stream::write::Decoder<'static, W>),
    Bz2(bzip2::write::BzDecoder<W>),
}

impl<W: Write> PushDecoder<W> {
    /// A decoder for `compress` writing plain bytes into `sink`.
    pub fn new(compress: CompressType, sink: W) -> io::Result<Self> {
        let inner = match compress {
            CompressType::None => Inner::None(sink),
            CompressType::Gz => Inner::Gz(flate2::write::GzDecoder::new(sink)),
            CompressType::Lz4 => Inner::Lz4(Lz4FrameDecoder::new(sink)),
            CompressType::Zst => Inner::Zst(zstd::stream::write::Decoder::new(sink)?),
            CompressType::Bz2 => Inner::Bz2(bzip2::write::BzDecoder::new(sink)),
        };
        Ok(Self { inner })
    }

    /// Feeds the next compressed bytes.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.write_all(chunk),
            Inner::Gz(d) => d.write_all(chunk),
            Inner::Lz4(d) => d.write(chunk),
            Inner::Zst(d) => d.write_all(chunk),
            Inner::Bz2(d) => d.write_all(chunk),
        }
    }

    /// Ends the stream: fails if it was truncated, and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::None(w) => Ok(w),
            Inner::Gz(d) => finish_gz(d),
            Inner::Lz4(d) => d.finish(),
            Inner::Zst(d) => d.finish(),
            Inner::Bz2(d) => finish_bz2(d),
        }
    }

    /// The sink, mutably (e.g. to adjust a limit before any byte arrives).
    pub fn sink_mut(&mut self) -> &mut W {
        match &mut self.inner {
            Inner::None(w) => w,
            Inner::Gz(d) => d.get_mut(),
            Inner::Lz4(d) => d.get_mut(),
            Inner::Zst(d) => d.get_mut(),
            Inner::Bz2(d) => d.get_mut(),
        }
    }

    /// The sink, for reading progress (e.g. bytes decoded so far).
    pub fn sink(&self) -> &W {
        match &self.inner {
            Inner::None(w) => w,
            Inner::Gz(d) => d.get_ref(),
            Inner::Lz4(d) => d.get_ref(),
            Inner::Zst(d) => d.get_ref(),
            Inner::Bz2(d) => d.get_ref(),
        }
    }
}

fn finish_gz<W: Write>(d: flate2::write::GzDecoder<W>) -> io::Result<W> {
    // `finish` fails unless the whole member, trailer included, was read and its CRC-32 and
    // length match; trailing bytes after the member already failed in `write` (WriteZero).
    d.finish()
}

fn finish_bz2<W: Write>(mut d: bzip2::write::BzDecoder<W>) -> io::Result<W> {
    // Fails with UnexpectedEof when the stream ends before its end-of-stream marker.
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions() {
        for ct in [
            CompressType::None,
            CompressType::Gz,
            CompressType::Lz4,
            CompressType::Zst,
            CompressType::Bz2,
        ] {
            assert_eq!(CompressType::from_name(ct.name()), Some(ct));
            assert_eq!(
                CompressType::split_extension(&format!("a/b{}", ct.extension())),
                ("a/b", ct)
            );
        }
        assert_eq!(CompressType::from_name("xz"), None);
        assert_eq!(
            CompressType::split_extension("x.lz4.tmp"),
            ("x.lz4.tmp", CompressType::None)
        );
    }

    fn encode(ct: CompressType, data: &[u8]) -> Vec<u8> {
        match ct {
            CompressType::Gz => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            CompressType::Zst => zstd::encode_all(data, 1).unwrap(),
            CompressType::Bz2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            CompressType::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            CompressType::None => data.to_vec(),
        }
    }

    fn decode(ct: CompressType, stored: &[u8]) -> io::Result<Vec<u8>> {
        let mut d = PushDecoder::new(ct, Vec::new())?;
        for c in stored.chunks(5) {
            d.write(c)?;
        }
        d.finish()
    }

    #[test]
    fn roundtrip_truncation_and_trailing_garbage() {
        let data = b"some WAL bytes ".repeat(1000);
        for ct in CompressType::WITH_EXTENSION {
            let stored = encode(ct, &data);
            assert_eq!(decode(ct, &stored).unwrap(), data, "{ct}");
            assert!(
                decode(ct, &stored[..stored.len() - 5]).is_err(),
                "{ct}: truncated"
            );
            assert!(
                decode(ct, &[&stored[..], b"garbage!"].concat()).is_err(),
                "{ct}: trailing garbage"
            );
        }
    }
}
