//! Mirroring the source's expiry at the destination (`sync --prune`, SPEC §5 rule 5), in
//! pgBackRest's expire order so a crash at any point leaves a valid repository:
//! the new `backup.info` is already published (by the sync) → each expired backup's manifests
//! (which invalidates it) → the rest of its directory → WAL older than every listed backup needs.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::StreamExt;

use super::error::SyncError;
use super::inventory::{Inventory, list_stanza, read_verified_info};
use crate::repo::{BackupInfo, BackupLabel, RepoObject, classify};
use crate::storage::{DynProvider, ObjectKey};

/// What pruning removed (or would remove, in a dry run).
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    pub backups: Vec<String>,
    pub wal_files: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Removes, from `dest`, backups that its (already published) `backup.info` no longer lists and
/// WAL older than the oldest listed backup's start. Calls `audit` for each destructive action.
pub async fn prune_stanza(
    dest: &DynProvider,
    stanza: &str,
    dry_run: bool,
    audit: &(dyn Fn(&str, &str) + Send + Sync),
) -> Result<PruneReport, SyncError> {
    let bi_key = format!("backup/{stanza}/backup.info");
    let bytes = read_verified_info(dest, &bi_key).await?.ok_or_else(|| {
        SyncError::Validation(format!("{bi_key} is missing; nothing can be pruned safely"))
    })?;
    let info = BackupInfo::parse(&bytes).map_err(|e| SyncError::repo(bi_key.clone(), e))?;
    let listed: BTreeSet<BackupLabel> = info.backups.iter().map(|b| b.label.clone()).collect();
    let inv = list_stanza(dest, stanza).await?;

    // Backup directories on disk that backup.info does not list.
    let mut expired: BTreeMap<BackupLabel, Vec<String>> = BTreeMap::new();
    for key in inv.keys() {
        let label = match classify(key) {
            RepoObject::Manifest { label, .. }
            | RepoObject::BackupFile { label, .. }
            | RepoObject::Bundle { label, .. } => label,
            _ => continue,
        };
        if !listed.contains(&label) {
            expired.entry(label).or_default().push(key.clone());
        }
    }
    // A directory newer than every listed backup that has no main manifest is a backup in
    // progress (pgBackRest's own expire spares it too): leave it.
    let newest_listed = listed.iter().next_back().cloned();
    expired.retain(|label, keys| {
        let has_main = keys.iter().any(|k| k.ends_with("/backup.manifest"));
        let newer = newest_listed.as_ref().is_none_or(|n| label > n);
        !newer || has_main
    });

    let mut report = PruneReport::default();
    // Newest first, as pgBackRest expires.
    for (label, mut keys) in expired.into_iter().rev() {
        // Manifests go first: a backup without its manifest is invalid, never half-valid.
        keys.sort_by_key(|k| {
            !(k.ends_with("/backup.manifest") || k.ends_with("/backup.manifest.copy"))
        });
        let (manifests, rest): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|k| k.ends_with("/backup.manifest") || k.ends_with("/backup.manifest.copy"));
        // Main manifest before its copy (mirrors pgBackRest).
        let mut manifests = manifests;
        manifests.sort_by_key(|k| k.ends_with(".copy"));
        audit("expire-backup", &format!("{stanza}/{label}"));
        delete_all(dest, &inv, &manifests, dry_run, &mut report, 1).await?;
        dest.barrier()
            .await
            .map_err(|e| SyncError::storage("barrier", e))?;
        delete_all(dest, &inv, &rest, dry_run, &mut report, 16).await?;
        report.backups.push(label.to_string());
    }

    // WAL that no listed backup needs: older than the oldest listed backup's archive start,
    // within the archive id of that backup. Other archive ids are left alone.
    if let Some(oldest) = info
        .backups
        .iter()
        .filter(|b| b.archive_start.is_some())
        .min_by_key(|b| b.label.clone())
        && let (Some(start), Some(db)) = (oldest.archive_start, info.db_of(oldest))
    {
        let archive_id = db.archive_id().to_string();
        let start_name = start.to_string();
        let mut wal = Vec::new();
        for key in inv.keys() {
            match classify(key) {
                RepoObject::WalSegment {
                    archive_id: a,
                    file,
                    ..
                } if a.to_string() == archive_id && file.segment.to_string() < start_name => {
                    wal.push(key.clone());
                }
                RepoObject::BackupLabelFile {
                    archive_id: a,
                    file,
                    ..
                } if a.to_string() == archive_id && file.segment.to_string() < start_name => {
                    wal.push(key.clone());
                }
                _ => {}
            }
        }
        if !wal.is_empty() {
            audit(
                "expire-wal",
                &format!(
                    "{stanza}/{archive_id} {} files before {start_name}",
                    wal.len()
                ),
            );
            report.wal_files = wal.len() as u64;
            delete_all(dest, &inv, &wal, dry_run, &mut report, 16).await?;
        }
    }
    Ok(report)
}

async fn delete_all(
    dest: &DynProvider,
    inv: &Inventory,
    keys: &[String],
    dry_run: bool,
    report: &mut PruneReport,
    concurrency: usize,
) -> Result<(), SyncError> {
    for k in keys {
        report.files += 1;
        report.bytes += inv.get(k).map_or(0, |m| m.size);
    }
    if dry_run {
        return Ok(());
    }
    let results: Vec<Result<(), SyncError>> = futures::stream::iter(keys)
        .map(|k| async move {
            let key = ObjectKey::new(k.as_str()).map_err(|e| SyncError::storage(k.clone(), e))?;
            dest.delete(&key)
                .await
                .map_err(|e| SyncError::storage(format!("deleting {k}"), e))
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
