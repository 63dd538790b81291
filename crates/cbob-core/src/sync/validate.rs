//! The post-sync check (SPEC §6 sync, unless `--skip-validation`): the destination's info files
//! load and every backup listed there is complete — manifest, files, and its WAL range.

use std::collections::{BTreeMap, BTreeSet};

use super::error::SyncError;
use super::inventory::read_verified_info;
use super::listing::StanzaListing;
use crate::repo::{
    ArchiveInfo, BackupInfo, BackupInfoEntry, FileLocation, Manifest, RepoObject, classify,
};
use crate::storage::DynProvider;

/// What the check found, for reports.
#[derive(Debug, Clone, Default)]
pub struct ValidationSummary {
    pub backups: usize,
    pub files_checked: usize,
    /// WAL segment objects in the destination's archive.
    pub wal_segments: usize,
    /// Objects in the directories of the listed backups (and of the backups they reference):
    /// the only backup objects the check holds. Directories of backups the destination keeps but
    /// `backup.info` no longer lists (expired at the source, not pruned) are passed over.
    pub backup_objects: usize,
}

/// Fails with every problem found (not just the first).
pub async fn validate_destination(
    dest: &DynProvider,
    stanza: &str,
) -> Result<ValidationSummary, SyncError> {
    let bi_key = format!("backup/{stanza}/backup.info");
    let ai_key = format!("archive/{stanza}/archive.info");
    let bi = read_verified_info(dest, &bi_key)
        .await?
        .ok_or_else(|| SyncError::Validation(format!("{bi_key} is missing")))?;
    let ai = read_verified_info(dest, &ai_key)
        .await?
        .ok_or_else(|| SyncError::Validation(format!("{ai_key} is missing")))?;
    let backup_info = BackupInfo::parse(&bi).map_err(|e| SyncError::repo(bi_key.clone(), e))?;
    ArchiveInfo::parse(&ai).map_err(|e| SyncError::repo(ai_key.clone(), e))?;

    // The WAL each backup needs, known from backup.info before listing: the listing then keeps
    // only those segments, not every segment of the archive (often most of a repository's
    // objects). Backup files are kept as key → size only, not whole listing entries: this check
    // runs at the end of a sync, when a large repository's listing is the biggest thing in memory.
    let needed_wal: Vec<(String, Vec<String>)> = backup_info
        .backups
        .iter()
        .map(|entry| {
            let archive_id = backup_info
                .db_of(entry)
                .map(|db| db.archive_id().to_string())
                .unwrap_or_default();
            (archive_id, wal_needed_by(entry))
        })
        .collect();
    let mut wanted: BTreeSet<(String, String)> = needed_wal
        .iter()
        .flat_map(|(id, segs)| segs.iter().map(move |s| (id.clone(), s.clone())))
        .collect();
    // Without `--prune` a destination keeps every backup the source ever expired, so holding
    // every backup object would grow with the destination's age. Only the listed backups and
    // the backups their files may come from are held.
    let labels: BTreeSet<&str> = backup_info
        .backups
        .iter()
        .flat_map(|e| std::iter::once(&e.label).chain(&e.reference))
        .map(|l| l.as_str())
        .collect();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut wal_found: BTreeSet<(String, String)> = BTreeSet::new();
    let mut wal_objects = 0usize;
    let mut listing = StanzaListing::start(dest, stanza)?;
    while let Some(meta) = listing.next().await? {
        let key = meta.key.as_str();
        match classify(key) {
            RepoObject::WalSegment {
                archive_id, file, ..
            } => {
                wal_objects += 1;
                if let Some(w) = wanted.take(&(archive_id.to_string(), file.segment.to_string())) {
                    wal_found.insert(w);
                }
            }
            RepoObject::BackupFile { label, .. } | RepoObject::Bundle { label, .. }
                if labels.contains(label.as_str()) =>
            {
                sizes.insert(key.to_string(), meta.size);
            }
            // Info files and manifests are read, not looked up; other backups are not checked.
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut summary = ValidationSummary {
        backups: backup_info.backups.len(),
        wal_segments: wal_objects,
        backup_objects: sizes.len(),
        ..Default::default()
    };
    for (index, entry) in backup_info.backups.iter().enumerate() {
        let label = &entry.label;
        let mkey = format!("backup/{stanza}/{label}/backup.manifest");
        let manifest = match read_verified_info(dest, &mkey).await {
            Ok(Some(bytes)) => match Manifest::parse(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("backup {label}: manifest unreadable: {e}"));
                    continue;
                }
            },
            Ok(None) => {
                problems.push(format!(
                    "backup {label} is listed but its manifest is missing"
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("backup {label}: {e}"));
                continue;
            }
        };
        for item in manifest.stored_files(stanza) {
            let (file, loc, _) = match item {
                Ok(x) => x,
                Err(e) => {
                    problems.push(format!("backup {label}: {e}"));
                    continue;
                }
            };
            summary.files_checked += 1;
            match loc {
                FileLocation::Object { key } => match sizes.get(key.as_str()) {
                    None => problems.push(format!("backup {label}: {key} is missing")),
                    Some(&size) if size != file.repo_size => problems.push(format!(
                        "backup {label}: {key} is {size} bytes, the manifest says {}",
                        file.repo_size
                    )),
                    Some(_) => {}
                },
                FileLocation::BundleSlice { key, offset, length } => match sizes.get(key.as_str()) {
                    None => problems.push(format!("backup {label}: bundle {key} is missing")),
                    Some(&size) if size < offset + length => problems.push(format!(
                        "backup {label}: bundle {key} is {size} bytes, too short for {} at {offset}+{length}",
                        file.name
                    )),
                    Some(_) => {}
                },
                FileLocation::NotStored => {}
            }
        }
        let (archive_id, segments) = &needed_wal[index];
        for seg in segments {
            if !wal_found.contains(&(archive_id.clone(), seg.clone())) {
                problems.push(format!(
                    "backup {label}: WAL segment {seg} (archive {archive_id}) is missing"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(SyncError::Validation(problems.join("; ")))
    }
}

/// The WAL segments (24-hex names) that make a backup consistent. Within one log id the range
/// is contiguous whatever the segment size; across log ids only the ends are checked, since the
/// segment size is not recorded in the info files.
fn wal_needed_by(entry: &BackupInfoEntry) -> Vec<String> {
    let (Some(start), Some(stop)) = (entry.archive_start, entry.archive_stop) else {
        return Vec::new();
    };
    if start.timeline == stop.timeline && start.log == stop.log && start.seg <= stop.seg {
        (start.seg..=stop.seg)
            .map(|seg| crate::repo::WalSegment { seg, ..start }.to_string())
            .collect()
    } else {
        vec![start.to_string(), stop.to_string()]
    }
}
