//! `cbob verify`: checks a pgBackRest repository on any provider without restoring it (SPEC §6),
//! including what `pgbackrest verify` 2.45 misses (reference/pgbackrest-lab.md §6): a backup
//! directory that is gone while `backup.info` still lists it, WAL missing from a backup's range,
//! and gaps in the archive.
//!
//! What is checked, per stanza:
//! - `archive.info`, `backup.info` and their copies: present, `backrest-checksum` valid, copy
//!   identical, and the two files agree on the database history;
//! - every WAL segment: SHA-1 of the decompressed bytes against its name, length against the
//!   segment size in its own header; duplicates; continuity per timeline;
//! - every listed backup: stored at all, manifest and copy, every file against `rck`/`repo-size`
//!   (or `checksum`/`size` when unfiltered; bundles slice by slice), the backups it depends on,
//!   and every segment of its WAL range.
//!
//! Every object streams through the verifiers of [`crate::repo`] (nothing is buffered but info
//! files and one manifest at a time), `concurrency` objects at a time. Problems are collected,
//! never fatal: only failing to list the stanza ends a verification early.

mod archive;
mod backups;
mod objects;
mod pairs;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use report::{
    ArchiveVerification, BackupStatus, BackupVerification, FileCounts, FileState,
    InfoFileVerification, Problem, ProblemKind, StanzaVerification, WalGap, WalRange,
};

use crate::repo::{ArchiveId, ArchiveInfo, BackupInfo, WalSegment};
use crate::storage::DynProvider;
use crate::sync::{NoProgress, SyncError, SyncObserver, list_stanza, validate_stanza_name};

use objects::Reader;
use pairs::{PairKind, load_pair};

/// How to verify.
#[derive(Clone)]
pub struct VerifyOptions {
    /// Objects read at once (CBOB_TRANSFERS).
    pub concurrency: usize,
    /// Progress: `planned` per phase, `bytes` as they are read, `file_done` per object.
    pub observer: Arc<dyn SyncObserver>,
}

impl VerifyOptions {
    pub fn new(concurrency: usize) -> Self {
        Self {
            concurrency: concurrency.max(1),
            observer: Arc::new(NoProgress),
        }
    }
}

/// Why a stanza could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(
        "there is no stanza {stanza} at {destination}: nothing under archive/{stanza}/ or backup/{stanza}/; \
         check --stanza and the destination (`cbob info` lists the stanzas there)"
    )]
    NoSuchStanza { stanza: String, destination: String },
}

/// Verifies one stanza of the repository `provider` holds.
pub async fn verify_stanza(
    provider: &DynProvider,
    stanza: &str,
    options: &VerifyOptions,
) -> Result<StanzaVerification, VerifyError> {
    let started = Instant::now();
    validate_stanza_name(stanza)?;
    let reader = Reader {
        provider: provider.clone(),
        observer: options.observer.clone(),
        stanza: stanza.to_string(),
        objects: Arc::new(AtomicU64::new(0)),
        bytes: Arc::new(AtomicU64::new(0)),
    };
    let mut problems = Vec::new();

    // Info files before the listing (as sync reads its source): a backup that a concurrent sync
    // publishes meanwhile is then either absent from both or complete in the listing.
    options.observer.phase(stanza, "info files");
    let archive_pair = load_pair(&reader, &format!("archive/{stanza}/archive.info")).await;
    let backup_pair = load_pair(&reader, &format!("backup/{stanza}/backup.info")).await;
    let inv = list_stanza(provider, stanza).await?;
    if inv.is_empty() {
        return Err(VerifyError::NoSuchStanza {
            stanza: stanza.to_string(),
            destination: provider.describe(),
        });
    }
    problems.extend(archive_pair.problems(PairKind::Info));
    problems.extend(backup_pair.problems(PairKind::Info));
    let mut info_files = Vec::new();
    info_files.extend(archive_pair.files());
    info_files.extend(backup_pair.files());
    let archive_info = parse_info(
        &archive_pair.bytes,
        ArchiveInfo::parse,
        &archive_pair.main_key,
        &mut problems,
    );
    let backup_info = parse_info(
        &backup_pair.bytes,
        BackupInfo::parse,
        &backup_pair.main_key,
        &mut problems,
    );
    if let (Some(a), Some(b)) = (&archive_info, &backup_info) {
        compare_history(a, b, &mut problems);
    }

    // Without the passphrase every WAL segment and manifest would only fail to decode: the
    // one `encrypted` problem says it all.
    if archive_pair.encrypted || backup_pair.encrypted {
        return Ok(StanzaVerification {
            stanza: stanza.to_string(),
            ok: false,
            info_files,
            archives: Vec::new(),
            backups: Vec::new(),
            unlisted_backups: Vec::new(),
            problems,
            objects_read: reader.objects.load(Ordering::Relaxed),
            bytes_read: reader.bytes.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }

    // The archive, before the backups: their WAL ranges are checked against it.
    options.observer.phase(stanza, "WAL");
    let known_ids: Vec<ArchiveId> = archive_info
        .as_ref()
        .map(ArchiveInfo::archive_ids)
        .unwrap_or_default();
    let mut oldest_start: BTreeMap<String, WalSegment> = BTreeMap::new();
    for b in backup_info.iter().flat_map(|i| &i.backups) {
        if let (Some(start), Some(db)) = (
            b.archive_start,
            backup_info.as_ref().and_then(|i| i.db_of(b)),
        ) {
            let e = oldest_start
                .entry(db.archive_id().to_string())
                .or_insert(start);
            *e = (*e).min(start);
        }
    }
    let (archives, wal) = archive::verify_archive(
        &reader,
        &inv,
        &known_ids,
        &oldest_start,
        options.concurrency,
        &mut problems,
    )
    .await;

    // The backups, oldest first.
    options.observer.phase(stanza, "backups");
    let stored = backups::stored_labels(&inv);
    let mut backup_results = Vec::new();
    let mut verdicts = backups::Verdicts::default();
    if let Some(info) = &backup_info {
        for entry in &info.backups {
            backup_results.push(
                backups::verify_backup(
                    &reader,
                    stanza,
                    info,
                    entry,
                    &inv,
                    &stored,
                    &wal,
                    &mut verdicts,
                    options.concurrency,
                    &mut problems,
                )
                .await,
            );
        }
    }
    let unlisted_backups = stored
        .into_iter()
        .filter(|l| {
            backup_info
                .as_ref()
                .is_none_or(|i| i.backups.iter().all(|b| b.label.as_str() != l))
        })
        .collect();

    Ok(StanzaVerification {
        stanza: stanza.to_string(),
        ok: problems.is_empty(),
        info_files,
        archives,
        backups: backup_results,
        unlisted_backups,
        problems,
        objects_read: reader.objects.load(Ordering::Relaxed),
        bytes_read: reader.bytes.load(Ordering::Relaxed),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn parse_info<T>(
    bytes: &Option<bytes::Bytes>,
    parse: impl Fn(&[u8]) -> Result<T, crate::repo::RepoError>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match parse(bytes.as_ref()?) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(
                Problem::new(
                    ProblemKind::InfoInvalid,
                    format!("{key}: its checksum is valid but its content is not a usable pgBackRest info file: {e}"),
                )
                .key(key),
            );
            None
        }
    }
}

/// `archive.info` and `backup.info` must describe the same database history (pgBackRest
/// refuses to work with a stanza whose files disagree).
fn compare_history(a: &ArchiveInfo, b: &BackupInfo, problems: &mut Vec<Problem>) {
    let show = |h: &[crate::repo::PgDb]| {
        h.iter()
            .map(|d| {
                format!(
                    "{}: PostgreSQL {} system id {}",
                    d.id, d.version, d.system_id
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same = a.history.len() == b.history.len()
        && a.history
            .iter()
            .zip(&b.history)
            .all(|(x, y)| x.id == y.id && x.version == y.version && x.system_id == y.system_id)
        && a.current.id == b.current.id
        && a.current.system_id == b.current.system_id;
    if !same {
        problems.push(Problem::new(
            ProblemKind::InfoHistoryMismatch,
            format!(
                "archive.info and backup.info disagree about the database history (archive.info: {}; backup.info: {}): \
                 pgBackRest refuses to back up or restore this stanza until they agree",
                show(&a.history),
                show(&b.history)
            ),
        ));
    }
}
