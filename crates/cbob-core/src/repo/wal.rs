//! WAL names and segment arithmetic.
//!
//! A segment name is 24 uppercase hex digits: timeline, log id, segment within the log. How many
//! segments a log id holds depends on the WAL segment size: 2^32 / size (256 for 16 MiB) since
//! PostgreSQL 9.3; before that the last one (0xFF) was skipped, so 255.
//!
//! In the archive, pgBackRest stores a segment as `<segment>-<sha1 of the plain segment>` plus
//! the compression extension, a partial segment as `<segment>.partial-<sha1>[.ext]`, a backup
//! label file as `<segment>.<8 hex offset>.backup` and a timeline history file as
//! `<8 hex timeline>.history` (the last two uncompressed and without checksum).

use std::fmt;
use std::str::FromStr;

use super::compress::CompressType;
use super::error::RepoError;

/// The WAL segment size pgBackRest and PostgreSQL default to.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// What segment arithmetic needs: the segment size, and whether the server predates 9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalGeometry {
    segment_size: u64,
    skip_last_segment: bool,
}

impl Default for WalGeometry {
    fn default() -> Self {
        Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            skip_last_segment: false,
        }
    }
}

impl WalGeometry {
    /// Geometry for PostgreSQL 9.3 and later. The size must be a power of two from 1 MiB to 1 GiB.
    pub fn new(segment_size: u64) -> Result<Self, RepoError> {
        if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
            return Err(RepoError::format(
                0,
                format!(
                    "WAL segment size {segment_size} is not a power of two between 1 MiB and 1 GiB"
                ),
            ));
        }
        Ok(Self {
            segment_size,
            skip_last_segment: false,
        })
    }

    /// Geometry for a PostgreSQL version as written in info files (`"9.2"`, `"15"`).
    pub fn for_pg_version(version: &str, segment_size: u64) -> Result<Self, RepoError> {
        let mut g = Self::new(segment_size)?;
        g.skip_last_segment = matches!(
            version.split_once('.'),
            Some(("8", _)) | Some(("9", "0" | "1" | "2"))
        );
        Ok(g)
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Segments in one log id: 256 for 16 MiB segments.
    pub fn segments_per_log(&self) -> u64 {
        if self.skip_last_segment {
            0xFF
        } else {
            (1u64 << 32) / self.segment_size
        }
    }
}

/// A WAL segment: timeline, log id and segment number (`000000010000000000000003`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalSegment {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

fn parse_hex_upper(s: &str) -> Option<u32> {
    if s.len() != 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl WalSegment {
    /// Parses exactly 24 uppercase hex digits.
    pub fn parse(name: &str) -> Result<Self, RepoError> {
        let bad = || RepoError::invalid_name(name, "a WAL segment name is 24 uppercase hex digits");
        if name.len() != 24 {
            return Err(bad());
        }
        Ok(Self {
            timeline: parse_hex_upper(&name[0..8]).ok_or_else(bad)?,
            log: parse_hex_upper(&name[8..16]).ok_or_else(bad)?,
            seg: parse_hex_upper(&name[16..24]).ok_or_else(bad)?,
        })
    }

    /// The segment that holds `lsn` on `timeline`.
    pub fn containing(timeline: u32, lsn: Lsn, geometry: WalGeometry) -> Self {
        Self::from_index(timeline, lsn.0 / geometry.segment_size, geometry)
    }

    /// The 24-hex name.
    pub fn name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }

    /// The archive directory the segment lives in: timeline and log id, 16 hex digits.
    pub fn dir(&self) -> String {
        format!("{:08X}{:08X}", self.timeline, self.log)
    }

    /// Position within the timeline, counting segments from 0/0.
    pub fn index(&self, geometry: WalGeometry) -> u64 {
        u64::from(self.log) * geometry.segments_per_log() + u64::from(self.seg)
    }

    pub fn from_index(timeline: u32, index: u64, geometry: WalGeometry) -> Self {
        let per = geometry.segments_per_log();
        Self {
            timeline,
            log: (index / per) as u32,
            seg: (index % per) as u32,
        }
    }

    /// The next segment on the same timeline.
    pub fn next(&self, geometry: WalGeometry) -> Self {
        Self::from_index(self.timeline, self.index(geometry) + 1, geometry)
    }

    /// Whether the segment number is possible for this geometry (e.g. seg < 256 for 16 MiB).
    pub fn is_valid_for(&self, geometry: WalGeometry) -> bool {
        u64::from(self.seg) < geometry.segments_per_log()
    }

    /// Every segment from `start` to `stop` inclusive, as a backup needs from archive-start to
    /// archive-stop. Both must be on the same timeline, with `start <= stop`.
    pub fn range_inclusive(
        start: WalSegment,
        stop: WalSegment,
        geometry: WalGeometry,
    ) -> Result<impl Iterator<Item = WalSegment>, RepoError> {
        if start.timeline != stop.timeline || start > stop {
            return Err(RepoError::format(
                0,
                format!("WAL range {start}..{stop} is not ascending on one timeline"),
            ));
        }
        let (a, b) = (start.index(geometry), stop.index(geometry));
        Ok((a..=b).map(move |i| WalSegment::from_index(start.timeline, i, geometry)))
    }
}

impl fmt::Display for WalSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

impl FromStr for WalSegment {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, RepoError> {
        Self::parse(s)
    }
}

/// A log sequence number, written `X/Y` in hex (`0/3000028`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, RepoError> {
        let bad = || RepoError::invalid_name(s, "an LSN is written as two hex numbers, X/Y");
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let ok =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(hi) || !ok(lo) {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(u64::from(hi) << 32 | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// An archived WAL segment's file name: `<segment>[.partial]-<sha1>[.ext]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalFileName {
    pub segment: WalSegment,
    /// A `.partial` segment (pushed by a standby promoted mid-segment).
    pub partial: bool,
    /// SHA-1 of the plain (decompressed) segment, lowercase hex, from the name.
    pub sha1: String,
    pub compress: CompressType,
}

impl WalFileName {
    pub fn parse(name: &str) -> Result<Self, RepoError> {
        let bad = || {
            RepoError::invalid_name(
                name,
                "an archived WAL file is <24 hex segment>[.partial]-<40 hex sha1>[.gz|.lz4|.zst|.bz2]",
            )
        };
        let (stem, compress) = CompressType::split_extension(name);
        let (seg, sha1) = stem.split_once('-').ok_or_else(bad)?;
        let (seg, partial) = match seg.strip_suffix(".partial") {
            Some(s) => (s, true),
            None => (seg, false),
        };
        if sha1.len() != 40
            || !sha1
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(Self {
            segment: WalSegment::parse(seg).map_err(|_| bad())?,
            partial,
            sha1: sha1.to_owned(),
            compress,
        })
    }

    /// The file name as pgBackRest writes it.
    pub fn file_name(&self) -> String {
        format!(
            "{}{}-{}{}",
            self.segment,
            if self.partial { ".partial" } else { "" },
            self.sha1,
            self.compress.extension()
        )
    }
}

/// A backup label file in the archive: `<segment>.<8 hex offset>.backup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackupLabelFileName {
    pub segment: WalSegment,
    pub offset: u32,
}

impl BackupLabelFileName {
    pub fn parse(name: &str) -> Result<Self, RepoError> {
        let bad = || {
            RepoError::invalid_name(
                name,
                "a backup label file is <24 hex segment>.<8 hex offset>.backup",
            )
        };
        let stem = name.strip_suffix(".backup").ok_or_else(bad)?;
        let (seg, off) = stem.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            segment: WalSegment::parse(seg).map_err(|_| bad())?,
            offset: parse_hex_upper(off).ok_or_else(bad)?,
        })
    }
}

/// A timeline history file name: `<8 hex timeline>.history`; returns the timeline.
pub fn parse_history_file_name(name: &str) -> Result<u32, RepoError> {
    name.strip_suffix(".history")
        .and_then(parse_hex_upper)
        .ok_or_else(|| {
            RepoError::invalid_name(name, "a timeline history file is <8 hex timeline>.history")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> WalSegment {
        s.parse().unwrap()
    }

    #[test]
    fn segment_names_roundtrip_and_reject_garbage() {
        let s = seg("000000010000000A000000FF");
        assert_eq!((s.timeline, s.log, s.seg), (1, 10, 255));
        assert_eq!(s.name(), "000000010000000A000000FF");
        assert_eq!(s.dir(), "000000010000000A");
        for bad in [
            "00000001000000000000000",
            "000000010000000000000003a",
            "00000001000000000000000g",
            "0000000100000000000000-3",
        ] {
            assert!(WalSegment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_arithmetic_by_segment_size() {
        let g16 = WalGeometry::default();
        assert_eq!(g16.segments_per_log(), 256);
        assert_eq!(
            seg("0000000100000000000000FF").next(g16),
            seg("000000010000000100000000")
        );
        let g1 = WalGeometry::new(1 << 20).unwrap();
        assert_eq!(g1.segments_per_log(), 4096);
        assert_eq!(
            seg("0000000100000000000000FF").next(g1),
            seg("000000010000000000000100")
        );
        assert_eq!(
            seg("000000010000000000000FFF").next(g1),
            seg("000000010000000100000000")
        );
        let g1g = WalGeometry::new(1 << 30).unwrap();
        assert_eq!(
            seg("000000010000000000000003").next(g1g),
            seg("000000010000000100000000")
        );
        assert!(!seg("000000010000000000000004").is_valid_for(g1g));
        let old = WalGeometry::for_pg_version("9.2", DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(
            seg("0000000100000000000000FE").next(old),
            seg("000000010000000100000000")
        );
        assert_eq!(
            WalGeometry::for_pg_version("9.6", DEFAULT_SEGMENT_SIZE)
                .unwrap()
                .segments_per_log(),
            256
        );
        assert!(WalGeometry::new(3 << 20).is_err());
        assert!(WalGeometry::new(1 << 19).is_err());
    }

    #[test]
    fn ranges_cross_log_boundaries() {
        let g = WalGeometry::default();
        let r: Vec<_> = WalSegment::range_inclusive(
            seg("0000000200000000000000FE"),
            seg("000000020000000100000001"),
            g,
        )
        .unwrap()
        .map(|s| s.name())
        .collect();
        assert_eq!(
            r,
            [
                "0000000200000000000000FE",
                "0000000200000000000000FF",
                "000000020000000100000000",
                "000000020000000100000001"
            ]
        );
        assert_eq!(
            WalSegment::range_inclusive(
                seg("000000010000000000000003"),
                seg("000000010000000000000003"),
                g
            )
            .unwrap()
            .count(),
            1
        );
        assert!(
            WalSegment::range_inclusive(
                seg("000000010000000000000004"),
                seg("000000010000000000000003"),
                g
            )
            .is_err()
        );
        assert!(
            WalSegment::range_inclusive(
                seg("000000010000000000000003"),
                seg("000000020000000000000004"),
                g
            )
            .is_err()
        );
    }

    #[test]
    fn lsn_to_segment() {
        let lsn: Lsn = "0/3000028".parse().unwrap();
        assert_eq!(lsn.to_string(), "0/3000028");
        assert_eq!(
            WalSegment::containing(1, lsn, WalGeometry::default()),
            seg("000000010000000000000003")
        );
        let lsn: Lsn = "1A/B000000".parse().unwrap();
        assert_eq!(
            WalSegment::containing(3, lsn, WalGeometry::default()).name(),
            "000000030000001A0000000B"
        );
        assert!("0/".parse::<Lsn>().is_err());
        assert!("3000028".parse::<Lsn>().is_err());
    }

    #[test]
    fn archive_file_names() {
        let n = WalFileName::parse(
            "000000010000000000000003-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610.lz4",
        )
        .unwrap();
        assert_eq!(n.segment, seg("000000010000000000000003"));
        assert_eq!(n.compress, CompressType::Lz4);
        assert!(!n.partial);
        assert_eq!(
            n.file_name(),
            "000000010000000000000003-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610.lz4"
        );
        let p = WalFileName::parse(
            "000000010000000000000005.partial-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610",
        )
        .unwrap();
        assert!(p.partial);
        assert_eq!(p.compress, CompressType::None);
        for bad in [
            "000000010000000000000003-A5BFBF93E0B9A2C62BA8E0B2E0BD3B3949294610.gz",
            "000000010000000000000003-a5bfbf93.gz",
            "000000010000000000000003.gz",
            "000000010000000000000003-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610.xz",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad}");
        }
        let b = BackupLabelFileName::parse("000000010000000000000003.00000028.backup").unwrap();
        assert_eq!((b.segment.seg, b.offset), (3, 0x28));
        assert_eq!(parse_history_file_name("0000000A.history").unwrap(), 10);
        assert!(parse_history_file_name("0000000a.history").is_err());
    }
}
