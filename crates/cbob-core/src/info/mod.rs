//! `cbob info`: what a repository holds, read natively from any provider (no pgBackRest): per
//! stanza the database, the WAL archive (min/max per archive id) and every backup (type, label,
//! times, sizes, WAL range, chain, and whether it is structurally restorable).
//!
//! "Restorable" here is what can be known from names and sizes: the backup and every backup it
//! depends on are listed and have a manifest, its WAL range is archived, and (with `detailed`)
//! every file its manifest records is stored at the recorded size. `cbob verify` checks the
//! bytes; `cbob restore-check` proves PostgreSQL starts.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;

use crate::repo::{
    ArchiveInfo, BackupInfo, BackupInfoEntry, FileLocation, Manifest, RepoObject, WalSegment,
    classify,
};
use crate::storage::{DynProvider, KeyPrefix, ObjectKey, StorageErrorKind};
use crate::sync::{Inventory, SyncError, read_verified_info, validate_stanza_name};

/// Why a stanza could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(
        "there is no stanza {stanza} at {destination}: neither backup/{stanza}/backup.info nor archive/{stanza}/archive.info \
         exists (or its .copy); check --stanza and the destination"
    )]
    NoSuchStanza { stanza: String, destination: String },
}

/// One archive id's WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    pub archive_id: String,
    pub min: Option<String>,
    pub max: Option<String>,
    pub segments: u64,
    pub bytes: u64,
}

/// What `detailed` adds to a backup: its manifest read and its files found in the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupDetail {
    /// Files the manifest records (bundled files count one each), as pgBackRest counts them.
    pub files: u64,
    pub files_missing: u64,
    pub files_wrong_size: u64,
    /// Compression of its files (`lz4`, `zst`, ...).
    pub compress: String,
    pub bundled: bool,
}

/// One backup listed in `backup.info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub label: String,
    #[serde(rename = "type")]
    pub backup_type: String,
    pub prior: Option<String>,
    /// Every backup needed to restore this one, oldest first, itself last.
    pub chain: Vec<String>,
    /// RFC 3339, UTC.
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
    /// Database size, and the part of it this backup copied.
    pub size: u64,
    pub size_delta: u64,
    /// Repository bytes of the whole backup, and of this backup's own files.
    pub repo_size: u64,
    pub repo_size_delta: u64,
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    pub lsn_start: Option<String>,
    pub lsn_stop: Option<String>,
    pub restorable: bool,
    /// Why not, when not.
    pub problems: Vec<String>,
    pub detail: Option<BackupDetail>,
}

/// One stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StanzaInfo {
    pub stanza: String,
    /// `ok` when both info files load, else `error` (see `errors`).
    pub status: String,
    pub errors: Vec<String>,
    pub pg_version: Option<String>,
    pub system_id: Option<u64>,
    /// The repository is encrypted (cbob reads only what is not).
    pub cipher: bool,
    pub archives: Vec<ArchiveSummary>,
    /// Oldest first.
    pub backups: Vec<BackupSummary>,
    /// Objects and bytes of the stanza (`detailed` only: it needs the whole listing).
    pub repo_files: Option<u64>,
    pub repo_bytes: Option<u64>,
}

async fn list_prefix(
    provider: &DynProvider,
    prefix: &str,
    inv: &mut Inventory,
) -> Result<(), SyncError> {
    let p = KeyPrefix::new(prefix.to_string())
        .map_err(|e| SyncError::storage(format!("listing {prefix}"), e))?;
    let mut stream = provider.list(&p);
    while let Some(meta) = stream
        .try_next()
        .await
        .map_err(|e| SyncError::storage(format!("listing {} {prefix}", provider.describe()), e))?
    {
        inv.insert(meta.key.as_str().to_string(), meta);
    }
    Ok(())
}

async fn exists(provider: &DynProvider, key: &str) -> Result<bool, SyncError> {
    let k = ObjectKey::new(key).map_err(|e| SyncError::storage(key.to_string(), e))?;
    match provider.head(&k).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == StorageErrorKind::NotFound => Ok(false),
        Err(e) => Err(SyncError::storage(format!("reading {key}"), e)),
    }
}

/// An info file as found: the verified main file or copy, neither, or damaged beyond use.
enum Loaded {
    Missing,
    Damaged(String),
    Ok(Bytes),
}

impl Loaded {
    fn parse<T>(
        self,
        key: &str,
        parse: impl Fn(&[u8]) -> Result<T, crate::repo::RepoError>,
        errors: &mut Vec<String>,
    ) -> Option<T> {
        match self {
            Loaded::Missing => {
                errors.push(format!("{key} is missing, and its copy"));
                None
            }
            Loaded::Damaged(e) => {
                errors.push(format!("{key} and its copy do not load: {e}"));
                None
            }
            Loaded::Ok(bytes) => parse(&bytes)
                .map_err(|e| errors.push(format!("{key}: {e}")))
                .ok(),
        }
    }
}

async fn load_info(provider: &DynProvider, key: &str) -> Result<Loaded, SyncError> {
    match read_verified_info(provider, key).await {
        Ok(Some(b)) => Ok(Loaded::Ok(b)),
        Ok(None) => Ok(Loaded::Missing),
        Err(SyncError::Repo { source, .. }) => Ok(Loaded::Damaged(source.to_string())),
        Err(e) => Err(e),
    }
}

fn rfc3339(ts: i64) -> Option<String> {
    (ts > 0)
        .then(|| chrono::DateTime::from_timestamp(ts, 0))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Reads one stanza. `detailed` lists the whole stanza and reads every manifest.
pub async fn read_stanza_info(
    provider: &DynProvider,
    stanza: &str,
    detailed: bool,
) -> Result<StanzaInfo, InfoError> {
    validate_stanza_name(stanza)?;
    let bi_key = format!("backup/{stanza}/backup.info");
    let ai_key = format!("archive/{stanza}/archive.info");
    let mut errors = Vec::new();
    let bi = load_info(provider, &bi_key).await?;
    let ai = load_info(provider, &ai_key).await?;
    if matches!((&bi, &ai), (Loaded::Missing, Loaded::Missing)) {
        return Err(InfoError::NoSuchStanza {
            stanza: stanza.to_string(),
            destination: provider.describe(),
        });
    }
    let backup_info = bi.parse(&bi_key, BackupInfo::parse, &mut errors);
    let archive_info = ai.parse(&ai_key, ArchiveInfo::parse, &mut errors);

    let mut inv = Inventory::new();
    list_prefix(provider, &format!("archive/{stanza}/"), &mut inv).await?;
    if detailed {
        list_prefix(provider, &format!("backup/{stanza}/"), &mut inv).await?;
    }
    let archives = summarise_archives(&inv, archive_info.as_ref());

    let mut backups = Vec::new();
    if let Some(info) = &backup_info {
        for entry in &info.backups {
            backups.push(summarise_backup(provider, stanza, info, entry, &inv, detailed).await?);
        }
    }
    let (repo_files, repo_bytes) = if detailed {
        (
            Some(inv.len() as u64),
            Some(inv.values().map(|m| m.size).sum()),
        )
    } else {
        (None, None)
    };
    let current = backup_info
        .as_ref()
        .map(|b| &b.current)
        .or(archive_info.as_ref().map(|a| &a.current));
    Ok(StanzaInfo {
        stanza: stanza.to_string(),
        status: if errors.is_empty() { "ok" } else { "error" }.to_string(),
        pg_version: current.map(|c| c.version.clone()),
        system_id: current.map(|c| c.system_id),
        cipher: backup_info.as_ref().is_some_and(|b| b.cipher)
            || archive_info.as_ref().is_some_and(|a| a.cipher),
        errors,
        archives,
        backups,
        repo_files,
        repo_bytes,
    })
}

fn summarise_archives(inv: &Inventory, info: Option<&ArchiveInfo>) -> Vec<ArchiveSummary> {
    let mut by_id: BTreeMap<String, ArchiveSummary> = BTreeMap::new();
    for id in info.map(ArchiveInfo::archive_ids).unwrap_or_default() {
        let id = id.to_string();
        by_id.insert(
            id.clone(),
            ArchiveSummary {
                archive_id: id,
                min: None,
                max: None,
                segments: 0,
                bytes: 0,
            },
        );
    }
    for (key, meta) in inv {
        if let RepoObject::WalSegment {
            archive_id, file, ..
        } = classify(key)
        {
            let id = archive_id.to_string();
            let s = by_id.entry(id.clone()).or_insert_with(|| ArchiveSummary {
                archive_id: id,
                min: None,
                max: None,
                segments: 0,
                bytes: 0,
            });
            let name = file.segment.name();
            s.segments += 1;
            s.bytes += meta.size;
            if s.min.as_ref().is_none_or(|m| &name < m) {
                s.min = Some(name.clone());
            }
            if s.max.as_ref().is_none_or(|m| &name > m) {
                s.max = Some(name);
            }
        }
    }
    by_id.into_values().collect()
}

/// Whether a backup's manifest (or its copy) is stored.
async fn has_manifest(
    provider: &DynProvider,
    stanza: &str,
    label: &str,
    inv: &Inventory,
    listed_all: bool,
) -> Result<bool, SyncError> {
    let main = format!("backup/{stanza}/{label}/backup.manifest");
    let copy = format!("{main}.copy");
    if listed_all {
        return Ok(inv.contains_key(&main) || inv.contains_key(&copy));
    }
    Ok(exists(provider, &main).await? || exists(provider, &copy).await?)
}

async fn summarise_backup(
    provider: &DynProvider,
    stanza: &str,
    info: &BackupInfo,
    entry: &BackupInfoEntry,
    inv: &Inventory,
    detailed: bool,
) -> Result<BackupSummary, SyncError> {
    let label = entry.label.to_string();
    let chain = info
        .chain(&entry.label)
        .unwrap_or_else(|| vec![entry.label.clone()]);
    let mut problems = Vec::new();
    for member in &chain {
        if info.backup(member).is_none() {
            problems.push(format!(
                "depends on backup {member}, which backup.info does not list"
            ));
        } else if !has_manifest(provider, stanza, member.as_str(), inv, detailed).await? {
            problems.push(if member == &entry.label {
                format!("backup/{stanza}/{label}/backup.manifest is missing (and its copy)")
            } else {
                format!("depends on backup {member}, whose manifest is missing")
            });
        }
    }
    wal_problems(info, entry, inv, &mut problems);
    let detail = if detailed {
        Some(detail(provider, stanza, entry, inv, &mut problems).await?)
    } else {
        None
    };
    Ok(BackupSummary {
        label,
        backup_type: entry.backup_type.to_string(),
        prior: entry.prior.as_ref().map(ToString::to_string),
        chain: chain.iter().map(ToString::to_string).collect(),
        started_at: rfc3339(entry.timestamp_start),
        stopped_at: rfc3339(entry.timestamp_stop),
        size: entry.size,
        size_delta: entry.size_delta,
        repo_size: entry.repo_size,
        repo_size_delta: entry.repo_size_delta,
        wal_start: entry.archive_start.map(|s| s.name()),
        wal_stop: entry.archive_stop.map(|s| s.name()),
        lsn_start: entry.lsn_start.map(|l| l.to_string()),
        lsn_stop: entry.lsn_stop.map(|l| l.to_string()),
        restorable: problems.is_empty(),
        problems,
        detail,
    })
}

/// The backup's WAL range must be archived. Within one log id the range is checked segment by
/// segment; across log ids only its ends (the segment size is not in the info files; `cbob
/// verify` reads it from the segments and checks every one).
fn wal_problems(
    info: &BackupInfo,
    entry: &BackupInfoEntry,
    inv: &Inventory,
    problems: &mut Vec<String>,
) {
    let (Some(start), Some(stop)) = (entry.archive_start, entry.archive_stop) else {
        return;
    };
    let Some(db) = info.db_of(entry) else {
        problems.push(format!(
            "taken from database history id {}, which backup.info does not have",
            entry.db_id
        ));
        return;
    };
    let archive_id = db.archive_id().to_string();
    let archived: std::collections::BTreeSet<WalSegment> = inv
        .keys()
        .filter_map(|k| match classify(k) {
            RepoObject::WalSegment {
                archive_id: a,
                file,
                ..
            } if a.to_string() == archive_id && !file.partial => Some(file.segment),
            _ => None,
        })
        .collect();
    let needed: Vec<WalSegment> =
        if start.timeline == stop.timeline && start.log == stop.log && start.seg <= stop.seg {
            (start.seg..=stop.seg)
                .map(|seg| WalSegment { seg, ..start })
                .collect()
        } else {
            vec![start, stop]
        };
    let missing: Vec<String> = needed
        .iter()
        .filter(|s| !archived.contains(s))
        .map(WalSegment::name)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "WAL needed for consistency is not archived (archive {archive_id}): {}",
            missing.join(", ")
        ));
    }
}

async fn detail(
    provider: &DynProvider,
    stanza: &str,
    entry: &BackupInfoEntry,
    inv: &Inventory,
    problems: &mut Vec<String>,
) -> Result<BackupDetail, SyncError> {
    let label = entry.label.to_string();
    let mut d = BackupDetail {
        files: 0,
        files_missing: 0,
        files_wrong_size: 0,
        compress: String::new(),
        bundled: false,
    };
    let key = format!("backup/{stanza}/{label}/backup.manifest");
    let bytes = match read_verified_info(provider, &key).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(d),
        Err(SyncError::Repo { source, .. }) => {
            problems.push(format!("its manifest does not load: {source}"));
            return Ok(d);
        }
        Err(e) => return Err(e),
    };
    let manifest = match Manifest::parse(&bytes) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("its manifest does not parse: {e}"));
            return Ok(d);
        }
    };
    d.compress = manifest.compress.to_string();
    d.bundled = manifest.bundle;
    // Every file of the manifest, as pgBackRest counts them; those stored nowhere (zero-length
    // files of a bundled backup) cannot be missing.
    d.files = manifest.files.len() as u64;
    for item in manifest.stored_files(stanza) {
        let Ok((file, loc, _)) = item else {
            d.files_missing += 1;
            continue;
        };
        match loc {
            FileLocation::Object { key } => match inv.get(key.as_str()) {
                None => d.files_missing += 1,
                Some(m) if m.size != file.repo_size => d.files_wrong_size += 1,
                Some(_) => {}
            },
            FileLocation::BundleSlice {
                key,
                offset,
                length,
            } => match inv.get(key.as_str()) {
                None => d.files_missing += 1,
                Some(m) if m.size < offset + length => d.files_wrong_size += 1,
                Some(_) => {}
            },
            FileLocation::NotStored => {}
        }
    }
    if d.files_missing > 0 {
        problems.push(format!(
            "{} of its {} files are missing",
            d.files_missing, d.files
        ));
    }
    if d.files_wrong_size > 0 {
        problems.push(format!(
            "{} of its {} files are not the size the manifest records",
            d.files_wrong_size, d.files
        ));
    }
    Ok(d)
}
