//! Where things live in a repository: backup labels, archive ids, and classification of a key
//! (relative to the repository root) into what pgBackRest keeps there.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;

use super::error::RepoError;
use super::wal::{self, BackupLabelFileName, WalFileName, WalSegment};

/// Suffix of pgBackRest's temporary files on posix/sftp storage, renamed into place when complete.
pub const TEMP_SUFFIX: &str = ".pgbackrest.tmp";

/// A backup's type, as in `backup-type` and the label's last letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "full" => Some(BackupType::Full),
            "diff" => Some(BackupType::Diff),
            "incr" => Some(BackupType::Incr),
            _ => None,
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backup label: `YYYYMMDD-HHMMSSF` for a full backup, `<full label>_YYYYMMDD-HHMMSSD` or `...I`
/// for a differential or incremental one.
///
/// Labels order as strings, which is how pgBackRest sorts them: every backup sorts after the full
/// backup it depends on, and a chain sorts before the next full backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupLabel(String);

const STAMP_LEN: usize = 15; // YYYYMMDD-HHMMSS

fn parse_stamp(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    let shape_ok = b.len() == STAMP_LEN
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y%m%d-%H%M%S").ok()
}

impl BackupLabel {
    pub fn parse(label: &str) -> Result<Self, RepoError> {
        let bad = || {
            RepoError::invalid_name(
                label,
                "a backup label is YYYYMMDD-HHMMSSF, or <full label>_YYYYMMDD-HHMMSS followed by D or I",
            )
        };
        let full_len = STAMP_LEN + 1;
        if label.len() < full_len
            || parse_stamp(&label[..STAMP_LEN]).is_none()
            || label.as_bytes()[STAMP_LEN] != b'F'
        {
            return Err(bad());
        }
        match label.len() {
            n if n == full_len => {}
            n if n == 2 * full_len + 1 => {
                let rest = &label[full_len..];
                let ok = rest.starts_with('_')
                    && parse_stamp(&rest[1..=STAMP_LEN]).is_some()
                    && matches!(rest.as_bytes()[STAMP_LEN + 1], b'D' | b'I');
                if !ok {
                    return Err(bad());
                }
            }
            _ => return Err(bad()),
        }
        Ok(Self(label.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn backup_type(&self) -> BackupType {
        match self.0.as_bytes()[self.0.len() - 1] {
            b'D' => BackupType::Diff,
            b'I' => BackupType::Incr,
            _ => BackupType::Full,
        }
    }

    /// The label of the full backup this one belongs to (itself for a full backup).
    pub fn full_label(&self) -> BackupLabel {
        BackupLabel(self.0[..STAMP_LEN + 1].to_owned())
    }

    /// When this backup started, in the repository host's local time (no zone is recorded).
    pub fn started(&self) -> NaiveDateTime {
        let own = &self.0[self.0.len() - STAMP_LEN - 1..self.0.len() - 1];
        parse_stamp(own).expect("validated at parse")
    }
}

impl fmt::Display for BackupLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BackupLabel {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, RepoError> {
        Self::parse(s)
    }
}

impl AsRef<str> for BackupLabel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An archive id: `<PostgreSQL version>-<db history id>`, e.g. `15-1`, `9.6-2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchiveId {
    pub pg_version: String,
    pub history_id: u32,
}

impl ArchiveId {
    pub fn parse(s: &str) -> Result<Self, RepoError> {
        let bad =
            || RepoError::invalid_name(s, "an archive id is <pg version>-<history id>, e.g. 15-1");
        let (ver, id) = s.rsplit_once('-').ok_or_else(bad)?;
        let ver_ok = !ver.is_empty()
            && ver
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !ver_ok
            || id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_digit())
            || id.starts_with('0')
        {
            return Err(bad());
        }
        Ok(Self {
            pg_version: ver.to_owned(),
            history_id: id.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pg_version, self.history_id)
    }
}

impl PartialOrd for ArchiveId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ArchiveId {
    /// By history id, as pgBackRest's `archiveIdComparator` does (`9.6-1` < `10-2`).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.history_id
            .cmp(&other.history_id)
            .then_with(|| self.pg_version.cmp(&other.pg_version))
    }
}

/// What a repository key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoObject {
    /// `archive/<stanza>/archive.info` or `.copy`.
    ArchiveInfo { stanza: String, copy: bool },
    /// An archived WAL segment (full or `.partial`).
    WalSegment {
        stanza: String,
        archive_id: ArchiveId,
        file: WalFileName,
    },
    /// `archive/<stanza>/<archive id>/<timeline>.history`.
    TimelineHistory {
        stanza: String,
        archive_id: ArchiveId,
        timeline: u32,
    },
    /// `archive/<stanza>/<archive id>/<dir>/<segment>.<offset>.backup`.
    BackupLabelFile {
        stanza: String,
        archive_id: ArchiveId,
        file: BackupLabelFileName,
    },
    /// `backup/<stanza>/backup.info` or `.copy`.
    BackupInfo { stanza: String, copy: bool },
    /// `backup/<stanza>/<label>/backup.manifest` or `.copy`.
    Manifest {
        stanza: String,
        label: BackupLabel,
        copy: bool,
    },
    /// A file of a backup, `backup/<stanza>/<label>/<path>`; `path` is e.g. `pg_data/base/1/1259.lz4`.
    BackupFile {
        stanza: String,
        label: BackupLabel,
        path: String,
    },
    /// `backup/<stanza>/<label>/bundle/<id>`.
    Bundle {
        stanza: String,
        label: BackupLabel,
        id: u64,
    },
    /// `backup/<stanza>/backup.history/<year>/<label>.manifest.gz`.
    HistoryManifest {
        stanza: String,
        year: u16,
        label: BackupLabel,
    },
    /// A pgBackRest temporary file (`*.pgbackrest.tmp`): never copied.
    Temp,
    /// `backup/<stanza>/latest` (a posix symlink, informational) or anything below it: never copied.
    Latest { stanza: String },
    /// Anything else.
    Unknown,
}

impl RepoObject {
    /// The stanza the key belongs to, when it is a known pgBackRest object.
    pub fn stanza(&self) -> Option<&str> {
        match self {
            RepoObject::ArchiveInfo { stanza, .. }
            | RepoObject::WalSegment { stanza, .. }
            | RepoObject::TimelineHistory { stanza, .. }
            | RepoObject::BackupLabelFile { stanza, .. }
            | RepoObject::BackupInfo { stanza, .. }
            | RepoObject::Manifest { stanza, .. }
            | RepoObject::BackupFile { stanza, .. }
            | RepoObject::Bundle { stanza, .. }
            | RepoObject::HistoryManifest { stanza, .. }
            | RepoObject::Latest { stanza } => Some(stanza),
            RepoObject::Temp | RepoObject::Unknown => None,
        }
    }
}

/// Classifies a key relative to the repository root.
pub fn classify(key: &str) -> RepoObject {
    if key.ends_with(TEMP_SUFFIX) {
        return RepoObject::Temp;
    }
    let parts: Vec<&str> = key.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return RepoObject::Unknown;
    }
    match parts.as_slice() {
        ["archive", stanza, rest @ ..] => classify_archive(stanza, rest),
        ["backup", stanza, rest @ ..] => classify_backup(stanza, rest),
        _ => None,
    }
    .unwrap_or(RepoObject::Unknown)
}

fn classify_archive(stanza: &str, rest: &[&str]) -> Option<RepoObject> {
    let stanza = stanza.to_owned();
    match rest {
        ["archive.info"] => Some(RepoObject::ArchiveInfo {
            stanza,
            copy: false,
        }),
        ["archive.info.copy"] => Some(RepoObject::ArchiveInfo { stanza, copy: true }),
        [id, name] => {
            let archive_id = ArchiveId::parse(id).ok()?;
            let timeline = wal::parse_history_file_name(name).ok()?;
            Some(RepoObject::TimelineHistory {
                stanza,
                archive_id,
                timeline,
            })
        }
        [id, dir, name] => {
            let archive_id = ArchiveId::parse(id).ok()?;
            // A file must sit in the directory named after its timeline and log id.
            let in_dir = |seg: &WalSegment| seg.dir() == *dir;
            if let Ok(file) = WalFileName::parse(name) {
                return in_dir(&file.segment).then_some(RepoObject::WalSegment {
                    stanza,
                    archive_id,
                    file,
                });
            }
            let file = BackupLabelFileName::parse(name).ok()?;
            in_dir(&file.segment).then_some(RepoObject::BackupLabelFile {
                stanza,
                archive_id,
                file,
            })
        }
        _ => None,
    }
}

fn classify_backup(stanza: &str, rest: &[&str]) -> Option<RepoObject> {
    let stanza = stanza.to_owned();
    match rest {
        ["backup.info"] => Some(RepoObject::BackupInfo {
            stanza,
            copy: false,
        }),
        ["backup.info.copy"] => Some(RepoObject::BackupInfo { stanza, copy: true }),
        ["latest", ..] => Some(RepoObject::Latest { stanza }),
        ["backup.history", year, name] => {
            let year_ok = year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit());
            let label = BackupLabel::parse(name.strip_suffix(".manifest.gz")?).ok()?;
            // pgBackRest files it under the label's first four characters: the full backup's year.
            (year_ok && label.as_str()[..4] == **year).then(|| RepoObject::HistoryManifest {
                stanza,
                year: year.parse().expect("four digits"),
                label,
            })
        }
        [label, tail @ ..] if !tail.is_empty() => {
            let label = BackupLabel::parse(label).ok()?;
            match tail {
                ["backup.manifest"] => Some(RepoObject::Manifest {
                    stanza,
                    label,
                    copy: false,
                }),
                ["backup.manifest.copy"] => Some(RepoObject::Manifest {
                    stanza,
                    label,
                    copy: true,
                }),
                ["bundle", id] => {
                    let ok = !id.is_empty()
                        && id.bytes().all(|b| b.is_ascii_digit())
                        && !id.starts_with('0');
                    ok.then(|| id.parse().ok())
                        .flatten()
                        .map(|id| RepoObject::Bundle { stanza, label, id })
                }
                [top, _, ..] if matches!(*top, "pg_data" | "pg_tblspc") => {
                    Some(RepoObject::BackupFile {
                        stanza,
                        label,
                        path: tail.join("/"),
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::compress::CompressType;

    fn label(s: &str) -> BackupLabel {
        s.parse().unwrap()
    }

    #[test]
    fn labels_parse_and_order() {
        let f = label("20261124-022421F");
        let d = label("20261124-022421F_20261124-022425D");
        let i = label("20261124-022421F_20261124-022427I");
        let f2 = label("20261125-000001F");
        assert_eq!(f.backup_type(), BackupType::Full);
        assert_eq!(d.backup_type(), BackupType::Diff);
        assert_eq!(i.backup_type(), BackupType::Incr);
        assert_eq!(i.full_label(), f);
        assert_eq!(i.started().to_string(), "2026-11-24 02:24:27");
        let mut v = vec![f2.clone(), i.clone(), f.clone(), d.clone()];
        v.sort();
        assert_eq!(v, [f, d, i, f2]);
        for bad in [
            "20261124-022421",
            "20261124-022421D",
            "20261124-022421F_",
            "20261124-022421F_20261124-022425F",
            "20261124-022421F_20261124-022425Dx",
            "20261324-022421F",
            "2026112a-022421F",
            "20261124_022421F",
        ] {
            assert!(BackupLabel::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_ids() {
        let a = ArchiveId::parse("15-1").unwrap();
        assert_eq!((a.pg_version.as_str(), a.history_id), ("15", 1));
        assert_eq!(a.to_string(), "15-1");
        assert!(ArchiveId::parse("9.6-2").unwrap() > ArchiveId::parse("10-1").unwrap());
        for bad in ["15", "15-", "-1", "15-a", "15-01", "x-1", "9..6-1"] {
            assert!(ArchiveId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classifies_every_kind() {
        use RepoObject as O;
        let st = "abc123";
        let l = label("20261124-022421F");
        let cases: Vec<(&str, O)> = vec![
            (
                "archive/abc123/archive.info",
                O::ArchiveInfo {
                    stanza: st.into(),
                    copy: false,
                },
            ),
            (
                "archive/abc123/archive.info.copy",
                O::ArchiveInfo {
                    stanza: st.into(),
                    copy: true,
                },
            ),
            (
                "backup/abc123/backup.info",
                O::BackupInfo {
                    stanza: st.into(),
                    copy: false,
                },
            ),
            (
                "backup/abc123/backup.info.copy",
                O::BackupInfo {
                    stanza: st.into(),
                    copy: true,
                },
            ),
            (
                "backup/abc123/20261124-022421F/backup.manifest",
                O::Manifest {
                    stanza: st.into(),
                    label: l.clone(),
                    copy: false,
                },
            ),
            (
                "backup/abc123/20261124-022421F/backup.manifest.copy",
                O::Manifest {
                    stanza: st.into(),
                    label: l.clone(),
                    copy: true,
                },
            ),
            (
                "backup/abc123/20261124-022421F/bundle/12",
                O::Bundle {
                    stanza: st.into(),
                    label: l.clone(),
                    id: 12,
                },
            ),
            (
                "backup/abc123/20261124-022421F/pg_data/base/1/1259.lz4",
                O::BackupFile {
                    stanza: st.into(),
                    label: l.clone(),
                    path: "pg_data/base/1/1259.lz4".into(),
                },
            ),
            (
                "backup/abc123/backup.history/2026/20261124-022421F.manifest.gz",
                O::HistoryManifest {
                    stanza: st.into(),
                    year: 2026,
                    label: l.clone(),
                },
            ),
            ("backup/abc123/latest", O::Latest { stanza: st.into() }),
            (
                "backup/abc123/latest/backup.manifest",
                O::Latest { stanza: st.into() },
            ),
            ("backup/abc123/backup.info.pgbackrest.tmp", O::Temp),
            (
                "archive/abc123/15-1/0000000100000000/000000010000000000000003-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610.lz4.pgbackrest.tmp",
                O::Temp,
            ),
            (
                "archive/abc123/15-1/00000002.history",
                O::TimelineHistory {
                    stanza: st.into(),
                    archive_id: ArchiveId::parse("15-1").unwrap(),
                    timeline: 2,
                },
            ),
        ];
        for (key, want) in cases {
            assert_eq!(classify(key), want, "{key}");
        }

        match classify(
            "archive/abc123/15-1/0000000100000000/000000010000000000000003-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610.zst",
        ) {
            O::WalSegment {
                file, archive_id, ..
            } => {
                assert_eq!(file.compress, CompressType::Zst);
                assert_eq!(archive_id.to_string(), "15-1");
            }
            other => panic!("{other:?}"),
        }
        match classify(
            "archive/abc123/15-1/0000000100000000/000000010000000000000003.00000028.backup",
        ) {
            O::BackupLabelFile { file, .. } => assert_eq!(file.offset, 0x28),
            other => panic!("{other:?}"),
        }
        for unknown in [
            "README",
            "archive/abc123",
            "archive/abc123/15-1/0000000100000001/000000010000000000000003-a5bfbf93e0b9a2c62ba8e0b2e0bd3b3949294610",
            "archive/abc123/15-1/0000000100000000/garbage",
            "backup/abc123/notalabel/backup.manifest",
            "backup/abc123/20261124-022421F/bundle/0",
            "backup/abc123/20261124-022421F/other.txt",
            "backup/abc123/20261124-022421F/pg_data",
            "backup/abc123/backup.history/2025/20261124-022421F.manifest.gz",
            "backup/abc123/backup.history/2027/20261124-022421F_20270101-000000I.manifest.gz",
            "backup/abc123//backup.info",
        ] {
            assert_eq!(classify(unknown), O::Unknown, "{unknown}");
        }
        assert_eq!(
            classify("backup/abc123/backup.info").stanza(),
            Some("abc123")
        );
    }
}
