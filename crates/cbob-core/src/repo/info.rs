//! `archive.info` and `backup.info`: what a stanza's archive and backups hold.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::RepoError;
use super::fields::Fields;
use super::ini::Ini;
use super::layout::{ArchiveId, BackupLabel, BackupType};
use super::wal::{Lsn, WalSegment};

/// One PostgreSQL cluster the stanza has known (`[db]` or one `[db:history]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDb {
    /// The history id (`db-id`), which numbers the archive id (`15-1`).
    pub id: u32,
    /// PostgreSQL major version as pgBackRest writes it (`"15"`, `"9.6"`).
    pub version: String,
    /// The cluster's system identifier (above 2^53: kept exact).
    pub system_id: u64,
    /// `db-catalog-version` (backup.info only).
    pub catalog_version: Option<u32>,
    /// `db-control-version` (backup.info only).
    pub control_version: Option<u32>,
}

impl PgDb {
    /// The archive id of this cluster's WAL: `<version>-<id>`.
    pub fn archive_id(&self) -> ArchiveId {
        ArchiveId {
            pg_version: self.version.clone(),
            history_id: self.id,
        }
    }
}

fn parse_history(ini: &Ini, system_id_key: &str) -> Result<Vec<PgDb>, RepoError> {
    let section = ini
        .section("db:history")
        .ok_or_else(|| RepoError::format(0, "missing section [db:history]"))?;
    let mut out = Vec::with_capacity(section.entries.len());
    for e in &section.entries {
        let id: u32 = e.key.parse().map_err(|_| {
            RepoError::format(
                0,
                format!("[db:history] key {:?} is not a history id", e.key),
            )
        })?;
        let f = Fields::object(&e.value, format!("[db:history] {id}"))?;
        out.push(PgDb {
            id,
            version: f.str("db-version")?.to_owned(),
            system_id: f.u64(system_id_key)?,
            catalog_version: f.opt_u32("db-catalog-version")?,
            control_version: f.opt_u32("db-control-version")?,
        });
    }
    out.sort_by_key(|d| d.id);
    Ok(out)
}

fn parse_current(ini: &Ini) -> Result<PgDb, RepoError> {
    let f = Fields::section(ini, "db")?;
    Ok(PgDb {
        id: f.u32("db-id")?,
        version: f.str("db-version")?.to_owned(),
        system_id: f.u64("db-system-id")?,
        catalog_version: f.opt_u32("db-catalog-version")?,
        control_version: f.opt_u32("db-control-version")?,
    })
}

fn has_cipher(ini: &Ini) -> bool {
    ini.get("cipher", "cipher-pass").is_some()
}

fn backrest_version(ini: &Ini) -> Option<String> {
    ini.get("backrest", "backrest-version")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `archive/<stanza>/archive.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The current cluster (`[db]`).
    pub current: PgDb,
    /// Every cluster the archive has held, oldest first (`[db:history]`).
    pub history: Vec<PgDb>,
    /// A `[cipher] cipher-pass` is present: WAL files are encrypted.
    pub cipher: bool,
    pub backrest_version: Option<String>,
}

impl ArchiveInfo {
    /// Parses and verifies the checksum.
    pub fn parse(bytes: &[u8]) -> Result<Self, RepoError> {
        let ini = Ini::parse(bytes)?;
        ini.verify_checksum()?;
        Self::from_ini(&ini)
    }

    /// Reads the model from an already parsed file (checksum not checked here).
    pub fn from_ini(ini: &Ini) -> Result<Self, RepoError> {
        Ok(Self {
            current: parse_current(ini)?,
            // archive.info's history calls the system id "db-id" (a quirk kept since the Perl days).
            history: parse_history(ini, "db-id")?,
            cipher: has_cipher(ini),
            backrest_version: backrest_version(ini),
        })
    }

    /// The archive id new WAL goes to, e.g. `15-1`.
    pub fn current_archive_id(&self) -> ArchiveId {
        self.current.archive_id()
    }

    /// Every archive id of the history, oldest first.
    pub fn archive_ids(&self) -> Vec<ArchiveId> {
        self.history.iter().map(PgDb::archive_id).collect()
    }
}

/// Options recorded for a backup in `backup.info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackupOptions {
    pub archive_check: bool,
    pub archive_copy: bool,
    pub backup_standby: bool,
    pub checksum_page: bool,
    pub compress: bool,
    pub hardlink: bool,
    pub online: bool,
}

/// One `[backup:current]` entry of `backup.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfoEntry {
    pub label: BackupLabel,
    pub backup_type: BackupType,
    /// The backup this one is based on (diff/incr).
    pub prior: Option<BackupLabel>,
    /// Every backup whose files this one uses, oldest first (diff/incr).
    pub reference: Vec<BackupLabel>,
    /// First and last WAL segment the backup needs to be consistent (absent for offline backups).
    pub archive_start: Option<WalSegment>,
    pub archive_stop: Option<WalSegment>,
    pub lsn_start: Option<Lsn>,
    pub lsn_stop: Option<Lsn>,
    /// Unix seconds.
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
    /// Database size, and the part of it this backup copied.
    pub size: u64,
    pub size_delta: u64,
    /// Bytes in the repository for the whole backup, and for this backup's own files.
    pub repo_size: u64,
    pub repo_size_delta: u64,
    /// The `[db:history]` id the backup was taken from.
    pub db_id: u32,
    pub backrest_version: Option<String>,
    /// `backup-error`: page checksum errors were found (2.36+).
    pub error: Option<bool>,
    pub options: BackupOptions,
    /// The whole JSON entry, for fields this model does not name.
    pub raw: Value,
}

impl BackupInfoEntry {
    pub fn started(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.timestamp_start, 0)
    }

    pub fn stopped(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.timestamp_stop, 0)
    }

    fn parse(key: &str, value: &Value) -> Result<Self, RepoError> {
        let label = BackupLabel::parse(key)
            .map_err(|e| RepoError::format(0, format!("[backup:current] key {key:?}: {e}")))?;
        let f = Fields::object(value, format!("[backup:current] {key}"))?;
        let type_name = f.str("backup-type")?;
        let backup_type = BackupType::from_name(type_name).ok_or_else(|| {
            RepoError::format(
                0,
                format!("[backup:current] {key}: unknown backup-type {type_name:?}"),
            )
        })?;
        if backup_type != label.backup_type() {
            return Err(RepoError::format(
                0,
                format!("[backup:current] {key}: backup-type {type_name} does not match the label"),
            ));
        }
        let prior = f.opt_label("backup-prior")?;
        if (backup_type == BackupType::Full) != prior.is_none() {
            return Err(RepoError::format(
                0,
                format!(
                    "[backup:current] {key}: a {type_name} backup must {}have backup-prior",
                    if prior.is_none() { "" } else { "not " }
                ),
            ));
        }
        Ok(Self {
            backup_type,
            prior,
            reference: f.labels("backup-reference")?,
            archive_start: f.opt_wal("backup-archive-start")?,
            archive_stop: f.opt_wal("backup-archive-stop")?,
            lsn_start: f.opt_lsn("backup-lsn-start")?,
            lsn_stop: f.opt_lsn("backup-lsn-stop")?,
            timestamp_start: f.opt_i64("backup-timestamp-start")?.unwrap_or(0),
            timestamp_stop: f.opt_i64("backup-timestamp-stop")?.unwrap_or(0),
            size: f.opt_u64("backup-info-size")?.unwrap_or(0),
            size_delta: f.opt_u64("backup-info-size-delta")?.unwrap_or(0),
            repo_size: f.opt_u64("backup-info-repo-size")?.unwrap_or(0),
            repo_size_delta: f.opt_u64("backup-info-repo-size-delta")?.unwrap_or(0),
            db_id: f.u32("db-id")?,
            backrest_version: f.opt_str("backrest-version")?.map(str::to_owned),
            error: f.opt_bool("backup-error")?,
            options: BackupOptions {
                archive_check: f.bool_or("option-archive-check", false)?,
                archive_copy: f.bool_or("option-archive-copy", false)?,
                backup_standby: f.bool_or("option-backup-standby", false)?,
                checksum_page: f.bool_or("option-checksum-page", false)?,
                compress: f.bool_or("option-compress", false)?,
                hardlink: f.bool_or("option-hardlink", false)?,
                online: f.bool_or("option-online", false)?,
            },
            raw: value.clone(),
            label,
        })
    }
}

/// `backup/<stanza>/backup.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The current cluster (`[db]`).
    pub current: PgDb,
    /// Every cluster the stanza has held, oldest first (`[db:history]`).
    pub history: Vec<PgDb>,
    /// Current backups in label order (oldest chain first, each full before its diff/incr).
    pub backups: Vec<BackupInfoEntry>,
    /// A `[cipher] cipher-pass` is present: manifests and backup files are encrypted.
    pub cipher: bool,
    pub backrest_version: Option<String>,
}

impl BackupInfo {
    /// Parses and verifies the checksum.
    pub fn parse(bytes: &[u8]) -> Result<Self, RepoError> {
        let ini = Ini::parse(bytes)?;
        ini.verify_checksum()?;
        Self::from_ini(&ini)
    }

    /// Reads the model from an already parsed file (checksum not checked here).
    pub fn from_ini(ini: &Ini) -> Result<Self, RepoError> {
        let mut backups = Vec::new();
        if let Some(section) = ini.section("backup:current") {
            for e in &section.entries {
                backups.push(BackupInfoEntry::parse(&e.key, &e.value)?);
            }
        }
        backups.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(Self {
            current: parse_current(ini)?,
            history: parse_history(ini, "db-system-id")?,
            backups,
            cipher: has_cipher(ini),
            backrest_version: backrest_version(ini),
        })
    }

    pub fn backup(&self, label: &BackupLabel) -> Option<&BackupInfoEntry> {
        self.backups.iter().find(|b| &b.label == label)
    }

    /// The history entry a backup was taken from.
    pub fn db_of(&self, entry: &BackupInfoEntry) -> Option<&PgDb> {
        self.history.iter().find(|d| d.id == entry.db_id)
    }

    /// The labels a backup needs to restore: its references and itself, oldest first.
    pub fn chain(&self, label: &BackupLabel) -> Option<Vec<BackupLabel>> {
        let entry = self.backup(label)?;
        let mut chain = entry.reference.clone();
        chain.push(entry.label.clone());
        chain.sort();
        chain.dedup();
        Some(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ini::tests::{ARCHIVE_INFO, BACKUP_INFO};

    #[test]
    fn archive_info_model() {
        let a = ArchiveInfo::parse(ARCHIVE_INFO.as_bytes()).unwrap();
        assert_eq!(a.current.id, 1);
        assert_eq!(a.current.version, "15");
        assert_eq!(a.current.system_id, 7_711_601_516_960_194_028);
        assert_eq!(a.history.len(), 1);
        assert_eq!(a.history[0].system_id, 7_711_601_516_960_194_028);
        assert_eq!(a.current_archive_id().to_string(), "15-1");
        assert!(!a.cipher);
        assert_eq!(a.backrest_version.as_deref(), Some("2.45"));
        // A corrupted copy does not load.
        assert!(ArchiveInfo::parse(ARCHIVE_INFO.replace("db-id=1", "db-id=2").as_bytes()).is_err());
    }

    #[test]
    fn backup_info_model() {
        let b = BackupInfo::parse(BACKUP_INFO.as_bytes()).unwrap();
        assert_eq!(b.current.catalog_version, Some(202_209_061));
        assert_eq!(b.history[0].system_id, 7_711_601_516_960_194_028);
        assert_eq!(b.backups.len(), 3);
        let [full, diff, incr] = &b.backups[..] else {
            panic!()
        };
        assert_eq!(full.backup_type, BackupType::Full);
        assert_eq!(full.prior, None);
        assert_eq!(
            full.archive_start.unwrap().name(),
            "000000010000000000000003"
        );
        assert_eq!(full.lsn_stop.unwrap().to_string(), "0/3000100");
        assert_eq!(full.size, 38_893_364);
        assert_eq!(full.repo_size_delta, 6_249_533);
        assert!(full.options.online && full.options.compress && !full.options.hardlink);
        assert_eq!(
            full.started().unwrap().to_rfc3339(),
            "2026-11-24T05:12:27+00:00"
        );
        assert_eq!(diff.prior.as_ref(), Some(&full.label));
        assert_eq!(incr.reference, [full.label.clone(), diff.label.clone()]);
        assert_eq!(
            b.chain(&incr.label).unwrap(),
            [full.label.clone(), diff.label.clone(), incr.label.clone()]
        );
        assert_eq!(b.db_of(incr).unwrap().version, "15");
    }

    #[test]
    fn inconsistent_entries_are_format_errors() {
        let ini = Ini::parse(
            BACKUP_INFO
                .replacen("\"backup-type\":\"full\"", "\"backup-type\":\"incr\"", 1)
                .as_bytes(),
        )
        .unwrap();
        let err = BackupInfo::from_ini(&ini).unwrap_err();
        assert!(
            err.to_string().contains("does not match the label"),
            "{err}"
        );
        let ini = Ini::parse(BACKUP_INFO.replacen("\"db-id\":1,", "", 1).as_bytes()).unwrap();
        let err = BackupInfo::from_ini(&ini).unwrap_err();
        assert!(err.to_string().contains("missing db-id"), "{err}");
    }
}
