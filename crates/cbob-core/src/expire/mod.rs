//! `cbob expire`: full-backup retention on the destination (SPEC §5 rule 5, §6), with the
//! semantics of pgBackRest's `repo1-retention-full` ([`select_expired`]).
//!
//! Order, so that a crash at any point leaves a repository pgBackRest accepts and a re-run
//! finishes the job:
//! 1. the new `backup.info` without the expired backups ([`crate::repo::rewrite::filter_entries`]
//!    on `[backup:current]`, checksum recomputed), then `backup.info.copy`: from here on nothing
//!    lists the expired backups, so nothing offers them for restore;
//! 2. then [`crate::sync::prune_stanza`] (shared with `sync --prune`): each unlisted backup's
//!    manifests, then the rest of its directory, newest first, then the WAL older than the oldest
//!    backup still listed (within its archive id), which no remaining backup needs.
//!
//! A re-run after a crash sees the new `backup.info`: retention is already met, step 1 only
//! rewrites a copy that still differs, and step 2 removes what is left. The plan (and a dry run)
//! asks `prune_stanza` itself what it would remove, on a read-only [`preview`] of the
//! destination with the new `backup.info` in place.

mod preview;
mod retention;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;

pub use retention::{Expiry, select_expired};

use crate::repo::BackupInfo;
use crate::repo::rewrite::filter_entries;
use crate::storage::{Body, DynProvider, ObjectKey, PutOptions, StorageErrorKind, read_to_bytes};
use crate::sync::{PruneReport, SyncError, prune_stanza, read_verified_info, validate_stanza_name};

/// Why expire could not plan or finish.
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("retention-full must be at least 1 (pgBackRest keeps at least one full backup)")]
    Retention,
    #[error(
        "backup/{stanza}/backup.info is missing (and its copy) at {destination}: this is not a pgBackRest stanza, \
         or it is damaged; nothing was removed (check --stanza; `cbob verify` says more)"
    )]
    NoBackupInfo { stanza: String, destination: String },
    #[error(
        "backup/{stanza}/backup.info changed since the plan was made (did a sync run?); nothing was removed: run expire again"
    )]
    Changed { stanza: String },
}

/// What would be removed besides rewriting `backup.info`: the answer of `prune_stanza` on a
/// preview of the destination.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removal {
    /// Backup directories removed: the expired ones, and any left by an interrupted run.
    pub backups: Vec<String>,
    pub wal_files: u64,
    /// Objects and bytes removed in all.
    pub files: u64,
    pub bytes: u64,
    /// One line per removal (as the audit log records it).
    pub actions: Vec<String>,
}

impl Removal {
    fn from_report(r: PruneReport, actions: Vec<String>) -> Self {
        Self {
            backups: r.backups,
            wal_files: r.wal_files,
            files: r.files,
            bytes: r.bytes,
            actions,
        }
    }
}

/// What expire will do to one stanza.
#[derive(Debug, Clone, Serialize)]
pub struct ExpirePlan {
    pub stanza: String,
    pub retention_full: u32,
    /// Backups listed now.
    pub listed: Vec<String>,
    /// Backups retention removes from `backup.info`, oldest first.
    pub expire: Vec<Expiry>,
    /// `backup.info` / `backup.info.copy` will be written.
    pub write_info: bool,
    pub write_info_copy: bool,
    /// What will be deleted after that.
    pub removal: Removal,
    /// The verified `backup.info` the plan was made from.
    #[serde(skip)]
    basis: Bytes,
    /// What `backup.info` (and its copy) will hold.
    #[serde(skip)]
    target: Bytes,
}

impl ExpirePlan {
    /// Nothing to write or delete.
    pub fn is_empty(&self) -> bool {
        !self.write_info && !self.write_info_copy && self.removal.files == 0
    }
}

/// What an executed plan did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpireReport {
    pub stanza: String,
    pub expired: Vec<String>,
    pub wrote_info: bool,
    pub wrote_info_copy: bool,
    pub removed: Removal,
}

fn key(k: &str) -> Result<ObjectKey, SyncError> {
    ObjectKey::new(k).map_err(|e| SyncError::storage(k.to_string(), e))
}

async fn raw(provider: &DynProvider, k: &str) -> Result<Option<Bytes>, SyncError> {
    match read_to_bytes(provider.as_ref(), &key(k)?).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == StorageErrorKind::NotFound => Ok(None),
        Err(e) => Err(SyncError::storage(format!("reading {k}"), e)),
    }
}

async fn verified_backup_info(dest: &DynProvider, stanza: &str) -> Result<Bytes, ExpireError> {
    read_verified_info(dest, &format!("backup/{stanza}/backup.info"))
        .await?
        .ok_or_else(|| ExpireError::NoBackupInfo {
            stanza: stanza.to_string(),
            destination: dest.describe(),
        })
}

/// Plans retention for one stanza: reads `backup.info`, selects what expires, and asks
/// `prune_stanza` (dry run, on a preview) what would be removed. Writes nothing.
pub async fn plan_expire(
    dest: &DynProvider,
    stanza: &str,
    retention_full: u32,
) -> Result<ExpirePlan, ExpireError> {
    validate_stanza_name(stanza)?;
    if retention_full == 0 {
        return Err(ExpireError::Retention);
    }
    let bi_key = format!("backup/{stanza}/backup.info");
    let basis = verified_backup_info(dest, stanza).await?;
    let info = BackupInfo::parse(&basis).map_err(|e| SyncError::repo(bi_key.clone(), e))?;
    let expire = select_expired(&info, retention_full);
    let target: Bytes = if expire.is_empty() {
        basis.clone()
    } else {
        let gone: Vec<&str> = expire.iter().map(|e| e.label.as_str()).collect();
        filter_entries(&basis, |section, k| {
            !(section == "backup:current" && gone.contains(&k))
        })
        .map_err(|e| SyncError::repo(bi_key.clone(), e))?
        .into()
    };
    let write_info = raw(dest, &bi_key).await?.as_ref() != Some(&target);
    let write_info_copy = raw(dest, &format!("{bi_key}.copy")).await?.as_ref() != Some(&target);

    let preview: DynProvider = Arc::new(preview::Preview::new(
        dest.clone(),
        key(&bi_key)?,
        target.clone(),
    ));
    let actions = Mutex::new(Vec::new());
    let collect = |action: &str, detail: &str| {
        actions
            .lock()
            .expect("actions")
            .push(format!("{action} {detail}"));
    };
    let report = prune_stanza(&preview, stanza, true, &collect).await?;
    let actions = actions.into_inner().expect("actions");
    Ok(ExpirePlan {
        stanza: stanza.to_string(),
        retention_full,
        listed: info.backups.iter().map(|b| b.label.to_string()).collect(),
        expire,
        write_info,
        write_info_copy,
        removal: Removal::from_report(report, actions),
        basis,
        target,
    })
}

/// Carries out a plan in pgBackRest's expire order (module docs). `audit(action, detail)` is
/// called before every destructive step. Fails without touching anything if `backup.info`
/// changed since the plan.
pub async fn execute_expire(
    dest: &DynProvider,
    plan: &ExpirePlan,
    audit: &(dyn Fn(&str, &str) + Send + Sync),
) -> Result<ExpireReport, ExpireError> {
    let stanza = plan.stanza.as_str();
    let bi_key = format!("backup/{stanza}/backup.info");
    if verified_backup_info(dest, stanza).await? != plan.basis {
        return Err(ExpireError::Changed {
            stanza: stanza.to_string(),
        });
    }
    let expired: Vec<String> = plan.expire.iter().map(|e| e.label.clone()).collect();
    let mut report = ExpireReport {
        stanza: stanza.to_string(),
        expired: expired.clone(),
        ..Default::default()
    };
    // Step 1: nothing lists the expired backups any more, main file first, as pgBackRest
    // writes them; each made durable before anything relies on it.
    for (k, needed, wrote) in [
        (bi_key.clone(), plan.write_info, &mut report.wrote_info),
        (
            format!("{bi_key}.copy"),
            plan.write_info_copy,
            &mut report.wrote_info_copy,
        ),
    ] {
        if !needed {
            continue;
        }
        let detail = if expired.is_empty() {
            format!("{k}: repaired (it differed from the verified backup.info)")
        } else {
            format!("{k}: without {}", expired.join(", "))
        };
        audit("write-backup-info", &detail);
        dest.put(
            &key(&k)?,
            Body::from_bytes(plan.target.clone()),
            &PutOptions::default(),
        )
        .await
        .map_err(|e| SyncError::storage(format!("writing {k}"), e))?;
        dest.barrier()
            .await
            .map_err(|e| SyncError::storage("barrier", e))?;
        *wrote = true;
    }
    // Step 2: manifests, directories, then WAL, by the same code `sync --prune` uses.
    let actions = Mutex::new(Vec::new());
    let record = |action: &str, detail: &str| {
        audit(action, detail);
        actions
            .lock()
            .expect("actions")
            .push(format!("{action} {detail}"));
    };
    let pruned = prune_stanza(dest, stanza, false, &record).await?;
    report.removed = Removal::from_report(pruned, actions.into_inner().expect("actions"));
    Ok(report)
}
