//! What `cbob verify` found in one stanza: per info file, per archive id, per backup, and one
//! flat list of problems (each naming what is wrong, where, and what it means). Serialised as the
//! stable `cbob verify --format json` document (docs/verify-info-expire.md).

use serde::Serialize;

/// The kind of a problem; stable names for scripts (`snake_case` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// `archive.info`, `backup.info` or one of their `.copy` files is missing.
    InfoMissing,
    /// An info file does not load: damaged, truncated, or its `backrest-checksum` does not match.
    InfoInvalid,
    /// The info file and its copy both load but differ.
    InfoCopyMismatch,
    /// `archive.info` and `backup.info` disagree about the database history.
    InfoHistoryMismatch,
    /// The repository is encrypted: its contents cannot be checked without the passphrase.
    Encrypted,
    /// `backup.info` lists a backup of which nothing is stored.
    BackupMissing,
    /// A listed backup's `backup.manifest` or its copy is missing.
    ManifestMissing,
    /// A manifest does not load, or describes another backup than its directory.
    ManifestInvalid,
    /// A backup's manifest and its copy both load but differ.
    ManifestCopyMismatch,
    /// A backup depends on a backup that `backup.info` does not list.
    ReferenceMissing,
    /// A file the manifest records is not stored.
    FileMissing,
    /// A stored file's bytes do not match the manifest's SHA-1.
    FileChecksum,
    /// A stored file's size does not match the manifest.
    FileSize,
    /// A stored file could not be checked for another reason (does not decompress, unreadable).
    FileOther,
    /// An archived WAL segment fails its SHA-1, size or decompression.
    WalInvalid,
    /// Two archived files for the same WAL segment.
    WalDuplicate,
    /// Segments are missing between two archived segments of one timeline.
    WalGap,
    /// A segment of a backup's WAL range (archive-start..archive-stop) is not archived.
    BackupWalMissing,
    /// A segment of a backup's WAL range is archived but invalid.
    BackupWalInvalid,
    /// The storage failed while reading (other than "not found").
    Storage,
}

/// One problem: what, where, and a message that says what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The backup label it is about, if any.
    pub backup: Option<String>,
    /// The archive id it is about, if any.
    pub archive_id: Option<String>,
    /// The repository key it is about, if any.
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            backup: None,
            archive_id: None,
            key: None,
            message: message.into(),
        }
    }

    pub fn backup(mut self, label: impl Into<String>) -> Self {
        self.backup = Some(label.into());
        self
    }

    pub fn archive(mut self, archive_id: impl Into<String>) -> Self {
        self.archive_id = Some(archive_id.into());
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// The state of one info file or manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum FileState {
    Ok,
    Missing,
    Invalid(String),
}

/// An info file (or copy) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfoFileVerification {
    pub key: String,
    #[serde(flatten)]
    pub state: FileState,
}

/// Counts in pgBackRest's own categories (`pgbackrest verify` prints the same four).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    pub checked: u64,
    pub valid: u64,
    pub missing: u64,
    pub checksum_invalid: u64,
    pub size_invalid: u64,
    pub other: u64,
}

impl FileCounts {
    pub fn all_valid(&self) -> bool {
        self.valid == self.checked
    }
}

/// A contiguous run of archived segments on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRange {
    pub start: String,
    pub stop: String,
}

/// Segments missing between two ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalGap {
    pub first_missing: String,
    pub last_missing: String,
    pub segments: u64,
}

/// One archive id (`15-1`): its WAL segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveVerification {
    pub archive_id: String,
    /// The WAL segment size read from the segments' own headers (16 MiB by default).
    pub segment_size: Option<u64>,
    pub wal: FileCounts,
    pub duplicates: u64,
    /// Contiguous ranges, per timeline, oldest first.
    pub ranges: Vec<WalRange>,
    pub gaps: Vec<WalGap>,
}

/// Whether a listed backup checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    /// Manifest loads and every file matches it.
    Valid,
    /// Something of the backup is wrong (see the problems).
    Invalid,
    /// Listed in `backup.info`, but nothing of it is stored.
    Missing,
}

/// One backup listed in `backup.info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupVerification {
    pub label: String,
    #[serde(rename = "type")]
    pub backup_type: String,
    pub prior: Option<String>,
    pub status: BackupStatus,
    /// Valid, every backup it depends on is listed, and its whole WAL range is archived and valid.
    pub restorable: bool,
    pub files: FileCounts,
    /// Bytes of this backup's files that were read and hashed (shared files count once per run).
    pub bytes_read: u64,
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    /// Segments in the WAL range, and those missing or invalid.
    pub wal_segments: u64,
    pub wal_missing: Vec<String>,
    pub wal_invalid: Vec<String>,
    /// Problems about this backup.
    pub problems: usize,
}

/// Everything `cbob verify` found in one stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StanzaVerification {
    pub stanza: String,
    /// No problem at all.
    pub ok: bool,
    pub info_files: Vec<InfoFileVerification>,
    pub archives: Vec<ArchiveVerification>,
    pub backups: Vec<BackupVerification>,
    /// Backup directories that `backup.info` does not list (in progress, or expired and not yet
    /// removed): pgBackRest ignores them, so they are not problems.
    pub unlisted_backups: Vec<String>,
    pub problems: Vec<Problem>,
    /// Objects read and bytes hashed.
    pub objects_read: u64,
    pub bytes_read: u64,
    pub duration_ms: u64,
}

impl StanzaVerification {
    /// Problems about one backup.
    pub fn problems_of<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a Problem> + 'a {
        self.problems
            .iter()
            .filter(move |p| p.backup.as_deref() == Some(label))
    }

    /// Whether a problem of `kind` was found.
    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems.iter().any(|p| p.kind == kind)
    }
}
