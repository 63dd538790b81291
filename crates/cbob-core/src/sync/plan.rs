//! Deciding what moves: compares the source and destination inventories of one stanza against
//! the source's own `backup.info` and manifests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::error::SyncError;
use super::inventory::{Inventory, read_verified_info};
use crate::repo::{
    BackupInfo, BackupLabel, BundleSlice, BundleVerifier, FileCheck, FileLocation, InfoVerifier,
    Manifest, RepoObject, StreamVerifier, WalVerifier, classify, file_verifier,
};
use crate::storage::{DynProvider, ObjectKey, ObjectMeta};

/// How an object's bytes are checked in transit.
#[derive(Debug, Clone)]
pub enum Check {
    /// Only the size (timeline history and backup label files carry no checksum).
    SizeOnly,
    /// An info file, manifest, or (gzip) history manifest: `backrest-checksum`.
    Info { gzip: bool },
    /// WAL: decompress, SHA-1 against the name.
    Wal(crate::repo::WalFileName),
    /// A backup file against its manifest entry.
    File(FileCheck),
    /// A bundle against the slices of the files stored in it.
    Bundle(Vec<BundleSlice>),
}

impl Check {
    /// A fresh verifier for one attempt.
    pub fn verifier(&self, key: &str) -> Option<Box<dyn StreamVerifier>> {
        match self {
            Check::SizeOnly => None,
            Check::Info { gzip: false } => Some(Box::new(InfoVerifier::new(key))),
            Check::Info { gzip: true } => Some(Box::new(InfoVerifier::gzip(key))),
            Check::Wal(name) => Some(Box::new(WalVerifier::new(key, name, None))),
            Check::File(check) => Some(file_verifier(key, check)),
            Check::Bundle(slices) => match BundleVerifier::new(key, slices.clone()) {
                Ok(v) => Some(Box::new(v)),
                Err(e) => Some(Box::new(Failing(Some(e)))),
            },
        }
    }
}

/// A verifier that reports a planning-time error at the first opportunity.
struct Failing(Option<crate::repo::RepoError>);

impl StreamVerifier for Failing {
    fn update(&mut self, _chunk: &[u8]) -> Result<(), crate::repo::RepoError> {
        self.0.take().map_or(Ok(()), Err)
    }
    fn finish_boxed(mut self: Box<Self>) -> Result<(), crate::repo::RepoError> {
        self.0.take().map_or(Ok(()), Err)
    }
}

/// Why an object moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    /// Same name, different size at the destination: an immutable file that is damaged there.
    Repair {
        dest_size: u64,
    },
}

/// One object to copy.
#[derive(Debug, Clone)]
pub struct Copy {
    pub key: ObjectKey,
    pub size: u64,
    pub check: Check,
    pub reason: Reason,
}

/// A backup to publish: its manifest (`.copy` first, then the main file).
#[derive(Debug, Clone)]
pub struct ManifestPublish {
    pub label: BackupLabel,
    pub copies: Vec<Copy>,
}

/// Everything one stanza's sync will do, in publish order.
#[derive(Debug, Default)]
pub struct StanzaPlan {
    /// The destination has no `archive.info` yet: publish the source's first.
    pub bootstrap_archive_info: bool,
    /// The destination has no `backup.info` yet: publish this one (the source's with no
    /// backups listed) right after `archive.info`, so the stanza is valid and empty from the start.
    pub bootstrap_backup_info: Option<Bytes>,
    /// WAL, history and label files, backup files and bundles: all may move in parallel.
    pub payload: Vec<Copy>,
    /// New backups, oldest first.
    pub manifests: Vec<ManifestPublish>,
    /// `backup.history/` manifests.
    pub history: Vec<Copy>,
    /// The source's verified info files, written at the end where the destination's differ.
    pub archive_info: Bytes,
    pub backup_info: Bytes,
    pub write_archive_info: [bool; 2],
    pub write_backup_info: [bool; 2],
    /// Objects already present and equal.
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
    /// Source objects left alone (in-progress backups, pgBackRest temp files, unknown names).
    pub ignored: Vec<String>,
    pub warnings: Vec<String>,
    /// Backups listed in the source's backup.info.
    pub backups: Vec<BackupLabel>,
}

impl StanzaPlan {
    /// Every copy in the plan.
    pub fn copies(&self) -> impl Iterator<Item = &Copy> {
        self.payload
            .iter()
            .chain(self.manifests.iter().flat_map(|m| m.copies.iter()))
            .chain(self.history.iter())
    }

    /// Files and bytes that will move, info files included.
    pub fn totals(&self) -> (u64, u64) {
        let mut files = 0;
        let mut bytes = 0;
        for c in self.copies() {
            files += 1;
            bytes += c.size;
        }
        for (flags, data) in [
            (self.write_archive_info, &self.archive_info),
            (self.write_backup_info, &self.backup_info),
        ] {
            for f in flags {
                if f {
                    files += 1;
                    bytes += data.len() as u64;
                }
            }
        }
        if self.bootstrap_archive_info {
            files += 2;
            bytes += 2 * self.archive_info.len() as u64;
        }
        if let Some(b) = &self.bootstrap_backup_info {
            files += 2;
            bytes += 2 * b.len() as u64;
        }
        (files, bytes)
    }

    pub fn is_noop(&self) -> bool {
        self.totals().0 == 0
    }
}

fn key_of(s: &str) -> Result<ObjectKey, SyncError> {
    ObjectKey::new(s).map_err(|e| SyncError::storage(format!("source key {s:?}"), e))
}

/// Whether a source object must move, comparing with the destination's listing.
///
/// Size only: provider hashes are not comparable across providers (S3 ETags are not MD5s for
/// multipart or KMS-encrypted objects, and a bucket's default encryption is invisible in a
/// listing), and a false mismatch would re-copy the whole repository on every run. Content is
/// verified against pgBackRest's checksums whenever an object does move.
fn reason(src: &ObjectMeta, dest: Option<&ObjectMeta>) -> Option<Reason> {
    match dest {
        None => Some(Reason::Missing),
        Some(d) if d.size != src.size => Some(Reason::Repair { dest_size: d.size }),
        Some(_) => None,
    }
}

/// Reads a source manifest (main, else copy), verified.
async fn load_manifest(
    source: &DynProvider,
    stanza: &str,
    label: &BackupLabel,
) -> Result<Manifest, SyncError> {
    let key = format!("backup/{stanza}/{label}/backup.manifest");
    let bytes = read_verified_info(source, &key).await?.ok_or_else(|| {
        SyncError::Source(format!(
            "backup {label} is listed in backup.info but has no manifest"
        ))
    })?;
    Manifest::parse(&bytes).map_err(|e| SyncError::repo(format!("parsing {key}"), e))
}

/// Builds the plan for one stanza. `backup_info`/`archive_info` are the source's verified bytes,
/// read **before** the source was listed, so every backup they list is complete in `src`.
pub async fn build(
    source: &DynProvider,
    stanza: &str,
    backup_info_bytes: Bytes,
    archive_info_bytes: Bytes,
    src: &Inventory,
    dest: &Inventory,
    dest_info: DestInfo,
) -> Result<StanzaPlan, SyncError> {
    let backup_info = BackupInfo::parse(&backup_info_bytes)
        .map_err(|e| SyncError::repo(format!("parsing backup/{stanza}/backup.info"), e))?;
    if backup_info.cipher {
        return Err(SyncError::Source(format!(
            "stanza {stanza} is encrypted (repo cipher); cbob cannot verify encrypted repositories yet, so it refuses to copy them unverified"
        )));
    }
    let listed: BTreeSet<BackupLabel> = backup_info
        .backups
        .iter()
        .map(|b| b.label.clone())
        .collect();
    let mut plan = StanzaPlan {
        bootstrap_archive_info: !dest.contains_key(&format!("archive/{stanza}/archive.info")),
        backups: listed.iter().cloned().collect(),
        ..StanzaPlan::default()
    };

    // Backup files waiting for their label's manifest to say how to check them.
    let mut backup_work: BTreeMap<BackupLabel, Vec<(&ObjectMeta, Reason)>> = BTreeMap::new();
    let mut manifest_work: BTreeMap<BackupLabel, Vec<(ObjectKey, u64, Reason)>> = BTreeMap::new();

    for (key, meta) in src {
        let object = classify(key);
        if object.stanza().is_some_and(|s| s != stanza) {
            plan.ignored.push(key.clone());
            continue;
        }
        let why = reason(meta, dest.get(key));
        // Info files change size whenever the source gains a backup, and temp files, `latest`,
        // unknown files and backups not (or no longer) listed are not copied: none of them is
        // a damaged copy.
        let mirrored = match &object {
            RepoObject::ArchiveInfo { .. }
            | RepoObject::BackupInfo { .. }
            | RepoObject::Temp
            | RepoObject::Latest { .. }
            | RepoObject::Unknown => false,
            RepoObject::BackupFile { label, .. }
            | RepoObject::Bundle { label, .. }
            | RepoObject::Manifest { label, .. } => listed.contains(label),
            _ => true,
        };
        if mirrored && let Some(Reason::Repair { dest_size }) = why {
            plan.warnings.push(format!(
                "{key} is {dest_size} bytes at the destination but {} at the source: damaged copy, repairing",
                meta.size
            ));
        }
        match object {
            RepoObject::ArchiveInfo { .. } | RepoObject::BackupInfo { .. } => continue, // handled below
            RepoObject::Temp | RepoObject::Latest { .. } => {
                plan.ignored.push(key.clone());
                continue;
            }
            RepoObject::Unknown => {
                plan.warnings.push(format!(
                    "{key}: not a pgBackRest repository file; not copied"
                ));
                plan.ignored.push(key.clone());
                continue;
            }
            RepoObject::BackupFile { ref label, .. } | RepoObject::Bundle { ref label, .. } => {
                if !listed.contains(label) {
                    plan.ignored.push(key.clone()); // in progress or being expired at the source
                    continue;
                }
                match why {
                    Some(r) => backup_work
                        .entry(label.clone())
                        .or_default()
                        .push((meta, r)),
                    None => {
                        plan.unchanged_files += 1;
                        plan.unchanged_bytes += meta.size;
                    }
                }
                continue;
            }
            RepoObject::Manifest { ref label, .. } => {
                if !listed.contains(label) {
                    plan.ignored.push(key.clone());
                    continue;
                }
                match why {
                    Some(r) => manifest_work.entry(label.clone()).or_default().push((
                        key_of(key)?,
                        meta.size,
                        r,
                    )),
                    None => {
                        plan.unchanged_files += 1;
                        plan.unchanged_bytes += meta.size;
                    }
                }
                continue;
            }
            _ => {}
        }
        let Some(r) = why else {
            plan.unchanged_files += 1;
            plan.unchanged_bytes += meta.size;
            continue;
        };
        let check = match object {
            RepoObject::WalSegment { file, .. } => Check::Wal(file),
            RepoObject::HistoryManifest { .. } => Check::Info { gzip: true },
            _ => Check::SizeOnly, // timeline history, backup label files
        };
        let copy = Copy {
            key: key_of(key)?,
            size: meta.size,
            check,
            reason: r,
        };
        match copy.check {
            Check::Info { gzip: true } => plan.history.push(copy),
            _ => plan.payload.push(copy),
        }
    }

    // A listed backup whose manifest is missing from the source cannot be mirrored.
    for label in &listed {
        let main = format!("backup/{stanza}/{label}/backup.manifest");
        let copy = format!("{main}.copy");
        if !src.contains_key(&main) && !src.contains_key(&copy) {
            return Err(SyncError::Source(format!(
                "backup {label} is listed in backup.info but its manifest is not in the listing"
            )));
        }
    }

    for (label, files) in backup_work {
        let manifest = load_manifest(source, stanza, &label).await?;
        let mut checks: HashMap<String, FileCheck> = HashMap::new();
        for item in manifest.stored_files(stanza) {
            let (_, loc, check) =
                item.map_err(|e| SyncError::repo(format!("manifest of {label}"), e))?;
            if let FileLocation::Object { key } = loc {
                checks.insert(key.as_str().to_string(), check);
            }
        }
        let bundles = manifest
            .bundles(stanza)
            .map_err(|e| SyncError::repo(format!("manifest of {label}"), e))?;
        for (meta, r) in files {
            let key = meta.key.as_str();
            let check = if let Some(slices) = bundles.get(&meta.key) {
                Check::Bundle(slices.clone())
            } else if let Some(c) = checks.get(key) {
                if let Some(expected) = stored_size(c)
                    && expected != meta.size
                {
                    return Err(SyncError::Source(format!(
                        "{key} is {} bytes at the source but its manifest records {expected}: the source copy is damaged",
                        meta.size
                    )));
                }
                Check::File(c.clone())
            } else {
                plan.warnings.push(format!(
                    "{key}: not in the manifest of backup {label}; not copied"
                ));
                plan.ignored.push(key.to_string());
                continue;
            };
            plan.payload.push(Copy {
                key: meta.key.clone(),
                size: meta.size,
                check,
                reason: r,
            });
        }
    }

    for label in &listed {
        if let Some(mut items) = manifest_work.remove(label) {
            // `.copy` before the main file: the main manifest is what marks a backup complete.
            items.sort_by_key(|(k, _, _)| !k.as_str().ends_with(".copy"));
            plan.manifests.push(ManifestPublish {
                label: label.clone(),
                copies: items
                    .into_iter()
                    .map(|(key, size, reason)| Copy {
                        key,
                        size,
                        check: Check::Info { gzip: false },
                        reason,
                    })
                    .collect(),
            });
        }
    }

    plan.write_archive_info = [
        dest_info.archive_info.as_ref() != Some(&archive_info_bytes),
        dest_info.archive_info_copy.as_ref() != Some(&archive_info_bytes),
    ];
    plan.write_backup_info = [
        dest_info.backup_info.as_ref() != Some(&backup_info_bytes),
        dest_info.backup_info_copy.as_ref() != Some(&backup_info_bytes),
    ];
    if plan.bootstrap_archive_info {
        // Written first; nothing more to do for it at the end.
        plan.write_archive_info = [false, false];
    }
    if !dest.contains_key(&format!("backup/{stanza}/backup.info"))
        && !dest.contains_key(&format!("backup/{stanza}/backup.info.copy"))
    {
        let empty = crate::repo::rewrite::empty_backup_info(&backup_info_bytes).map_err(|e| {
            SyncError::repo(format!("preparing an empty backup/{stanza}/backup.info"), e)
        })?;
        plan.bootstrap_backup_info = Some(Bytes::from(empty));
    }
    plan.archive_info = archive_info_bytes;
    plan.backup_info = backup_info_bytes;
    Ok(plan)
}

fn stored_size(check: &FileCheck) -> Option<u64> {
    match check {
        FileCheck::Stored { size, .. } | FileCheck::SizeOnly { size } => Some(*size),
        FileCheck::Content { stored_size, .. } => Some(*stored_size),
        FileCheck::Nothing => Some(0),
    }
}

/// The destination's current info files (raw bytes, unverified), to decide what to rewrite.
#[derive(Debug, Default, Clone)]
pub struct DestInfo {
    pub archive_info: Option<Bytes>,
    pub archive_info_copy: Option<Bytes>,
    pub backup_info: Option<Bytes>,
    pub backup_info_copy: Option<Bytes>,
}
