//! Running one stanza's sync in pgBackRest's publish order (SPEC §5 rule 3):
//! archive.info and an empty backup.info on first sight → payload (WAL, history, label files, backup files, bundles)
//! → barrier → each new backup's manifest, oldest first (`.copy`, then main) → `backup.history/`
//! → barrier → archive.info, archive.info.copy → backup.info → backup.info.copy.
//! A failure anywhere stops publishing, so the destination keeps its previous valid state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};

use super::error::SyncError;
use super::inventory::{list_stanza, read_optional, read_verified_info};
use super::observer::SyncObserver;
use super::plan::{self, Copy, DestInfo, Reason, StanzaPlan};
use super::transfer::{TransferContext, VerifierFactory, copy_object, put_bytes};
use super::validate::validate_destination;
use crate::layers::{BandwidthLimiter, RetryPolicy};
use crate::storage::{DynProvider, ObjectKey, PutOptions};

/// One stanza to mirror from `source` to `dest` (both rooted at their repository root).
#[derive(Clone, Debug)]
pub struct StanzaJob {
    /// What reports call it: a cluster id, or the stanza for `--source` syncs.
    pub name: String,
    pub stanza: String,
    pub source: DynProvider,
    pub dest: DynProvider,
}

/// Run-wide settings shared by every stanza.
#[derive(Clone)]
pub struct SyncOptions {
    /// Object transfers in flight across the whole run (`--transfers`).
    pub transfers: Arc<Semaphore>,
    pub retry: RetryPolicy,
    /// Shared cap on bytes read from sources (`--bandwidth`).
    pub bandwidth: Option<Arc<BandwidthLimiter>>,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Check the destination after publishing (unless `--skip-validation`).
    pub validate: bool,
    pub put_options: PutOptions,
    /// Copy server-side when source and destination are the same service and account (the
    /// bytes never pass through cbob, so they are checked by size, not streamed through the
    /// verifiers). Replication turns this on; sync from Crunchy Bridge never qualifies.
    pub server_side_copy: bool,
}

impl SyncOptions {
    pub fn new(transfers: usize) -> Self {
        Self {
            transfers: Arc::new(Semaphore::new(transfers.max(1))),
            retry: RetryPolicy::default(),
            bandwidth: None,
            dry_run: false,
            validate: true,
            put_options: PutOptions::default(),
            server_side_copy: false,
        }
    }
}

/// What happened to one stanza.
#[derive(Debug)]
pub struct StanzaReport {
    pub name: String,
    pub stanza: String,
    /// Files and bytes the plan said would move.
    pub planned_files: u64,
    pub planned_bytes: u64,
    /// Files and bytes that did move (0 in a dry run).
    pub copied_files: u64,
    pub copied_bytes: u64,
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
    /// Damaged destination objects that were rewritten.
    pub repaired: u64,
    /// Backups listed in the source's backup.info.
    pub backups: Vec<String>,
    pub warnings: Vec<String>,
    pub duration: Duration,
    pub dry_run: bool,
    pub error: Option<SyncError>,
}

impl StanzaReport {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Syncs one stanza; never panics on remote failures, always returns a report.
pub async fn sync_stanza(
    job: &StanzaJob,
    opts: &SyncOptions,
    observer: Arc<dyn SyncObserver>,
) -> StanzaReport {
    let started = Instant::now();
    let mut report = StanzaReport {
        name: job.name.clone(),
        stanza: job.stanza.clone(),
        planned_files: 0,
        planned_bytes: 0,
        copied_files: 0,
        copied_bytes: 0,
        unchanged_files: 0,
        unchanged_bytes: 0,
        repaired: 0,
        backups: Vec::new(),
        warnings: Vec::new(),
        duration: Duration::ZERO,
        dry_run: opts.dry_run,
        error: None,
    };
    if let Err(e) = run(job, opts, observer, &mut report).await {
        report.error = Some(e);
    }
    report.duration = started.elapsed();
    report
}

/// Checks a stanza name before it is used in any key (SPEC §4).
pub fn validate_stanza_name(stanza: &str) -> Result<(), SyncError> {
    let ok = !stanza.is_empty()
        && stanza.len() <= 255
        && stanza
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && stanza != "."
        && stanza != "..";
    if ok {
        Ok(())
    } else {
        Err(SyncError::Source(format!(
            "invalid stanza name {stanza:?}: stanza names are letters, digits, '.', '_' and '-'"
        )))
    }
}

async fn run(
    job: &StanzaJob,
    opts: &SyncOptions,
    observer: Arc<dyn SyncObserver>,
    report: &mut StanzaReport,
) -> Result<(), SyncError> {
    let stanza = job.stanza.as_str();
    validate_stanza_name(stanza)?;

    // Info files first, listing second: everything they list was complete before we listed.
    let backup_info_key = format!("backup/{stanza}/backup.info");
    let archive_info_key = format!("archive/{stanza}/archive.info");
    let backup_info = read_verified_info(&job.source, &backup_info_key)
        .await?
        .ok_or_else(|| {
            SyncError::Source(format!("no {backup_info_key} in {}", job.source.describe()))
        })?;
    let archive_info = read_verified_info(&job.source, &archive_info_key)
        .await?
        .ok_or_else(|| {
            SyncError::Source(format!(
                "no {archive_info_key} in {}",
                job.source.describe()
            ))
        })?;

    let src = list_stanza(&job.source, stanza).await?;
    let dest = list_stanza(&job.dest, stanza).await?;

    let mut dest_info = DestInfo::default();
    for (slot, key) in [
        (&mut dest_info.archive_info, archive_info_key.clone()),
        (
            &mut dest_info.archive_info_copy,
            format!("{archive_info_key}.copy"),
        ),
        (&mut dest_info.backup_info, backup_info_key.clone()),
        (
            &mut dest_info.backup_info_copy,
            format!("{backup_info_key}.copy"),
        ),
    ] {
        if dest.contains_key(&key) {
            *slot = read_optional(&job.dest, &key).await?;
        }
    }

    let plan = plan::build(
        &job.source,
        stanza,
        backup_info,
        archive_info,
        &src,
        &dest,
        dest_info,
    )
    .await?;
    let (files, bytes) = plan.totals();
    report.planned_files = files;
    report.planned_bytes = bytes;
    report.unchanged_files = plan.unchanged_files;
    report.unchanged_bytes = plan.unchanged_bytes;
    report.backups = plan.backups.iter().map(|b| b.to_string()).collect();
    report.repaired = plan
        .copies()
        .filter(|c| matches!(c.reason, Reason::Repair { .. }))
        .count() as u64;
    for w in &plan.warnings {
        observer.warning(&job.name, w);
    }
    report.warnings = plan.warnings.clone();
    observer.planned(&job.name, files, bytes);
    tracing::info!(
        stanza,
        files,
        bytes,
        unchanged = plan.unchanged_files,
        backups = plan.backups.len(),
        "sync plan"
    );
    if opts.dry_run {
        return Ok(());
    }

    let ctx = TransferContext {
        source: job.source.clone(),
        dest: job.dest.clone(),
        retry: opts.retry,
        bandwidth: opts.bandwidth.clone(),
        observer: observer.clone(),
        stanza: job.name.clone(),
        put_options: opts.put_options.clone(),
        server_side: if opts.server_side_copy {
            job.source
                .copy_source()
                .filter(|s| job.dest.can_copy_from(s))
        } else {
            None
        },
        abandon: Default::default(),
    };
    if let Some(s) = &ctx.server_side {
        tracing::info!(stanza, source = %s.bucket, "copying server-side");
    }
    publish(&ctx, opts, &plan, report).await?;

    if opts.validate {
        observer.phase(&job.name, "validate");
        validate_destination(&job.dest, stanza).await?;
    }
    Ok(())
}

fn key(s: &str) -> Result<ObjectKey, SyncError> {
    ObjectKey::new(s).map_err(|e| SyncError::storage(s.to_string(), e))
}

async fn barrier(ctx: &TransferContext) -> Result<(), SyncError> {
    ctx.dest.barrier().await.map_err(|e| {
        SyncError::storage(
            format!("making writes durable on {}", ctx.dest.describe()),
            e,
        )
    })
}

async fn publish(
    ctx: &TransferContext,
    opts: &SyncOptions,
    plan: &StanzaPlan,
    report: &mut StanzaReport,
) -> Result<(), SyncError> {
    let stanza = report.stanza.clone();
    let archive_info_key = key(&format!("archive/{stanza}/archive.info"))?;
    let archive_info_copy = key(&format!("archive/{stanza}/archive.info.copy"))?;
    let backup_info_key = key(&format!("backup/{stanza}/backup.info"))?;
    let backup_info_copy = key(&format!("backup/{stanza}/backup.info.copy"))?;

    if plan.bootstrap_archive_info {
        ctx.observer.phase(&report.name, "archive.info");
        for k in [&archive_info_key, &archive_info_copy] {
            put_bytes(ctx, k, plan.archive_info.clone()).await?;
            count(report, plan.archive_info.len() as u64);
        }
    }
    if let Some(empty) = &plan.bootstrap_backup_info {
        // A new stanza: valid and empty before the first byte of payload lands.
        barrier(ctx).await?;
        for k in [&backup_info_key, &backup_info_copy] {
            put_bytes(ctx, k, empty.clone()).await?;
            count(report, empty.len() as u64);
        }
        barrier(ctx).await?;
    }

    ctx.observer.phase(&report.name, "payload");
    copy_all(ctx, opts, &plan.payload, report).await?;
    barrier(ctx).await?;

    ctx.observer.phase(&report.name, "manifests");
    for m in &plan.manifests {
        for c in &m.copies {
            copy_one(ctx, c, report).await?;
        }
    }
    copy_all(ctx, opts, &plan.history, report).await?;
    barrier(ctx).await?;

    ctx.observer.phase(&report.name, "info");
    for (write, k) in plan
        .write_archive_info
        .iter()
        .zip([&archive_info_key, &archive_info_copy])
    {
        if *write {
            put_bytes(ctx, k, plan.archive_info.clone()).await?;
            count(report, plan.archive_info.len() as u64);
        }
    }
    barrier(ctx).await?;
    // backup.info, made durable, then its copy last: a crash in between leaves the main file,
    // which pgBackRest loads first.
    for (write, k) in plan
        .write_backup_info
        .iter()
        .zip([&backup_info_key, &backup_info_copy])
    {
        if *write {
            put_bytes(ctx, k, plan.backup_info.clone()).await?;
            count(report, plan.backup_info.len() as u64);
            barrier(ctx).await?;
        }
    }
    Ok(())
}

fn count(report: &mut StanzaReport, bytes: u64) {
    report.copied_files += 1;
    report.copied_bytes += bytes;
}

fn factory(c: &Copy) -> VerifierFactory {
    let check = c.check.clone();
    let name = c.key.to_string();
    Box::new(move || check.verifier(&name))
}

async fn copy_one(
    ctx: &TransferContext,
    c: &Copy,
    report: &mut StanzaReport,
) -> Result<(), SyncError> {
    let n = copy_object(ctx, &c.key, c.size, &factory(c)).await?;
    count(report, n);
    Ok(())
}

/// Copies objects in parallel under the run-wide transfer budget. Each transfer is its own task,
/// so verification (hashing, decompression) runs on every worker thread, not only on the one
/// driving this stanza. After the first failure no new transfer starts, but those in flight
/// finish (so none is cut off half-written); every error is logged and the first is returned.
async fn copy_all(
    ctx: &TransferContext,
    opts: &SyncOptions,
    copies: &[Copy],
    report: &mut StanzaReport,
) -> Result<(), SyncError> {
    let mut tasks: JoinSet<Transferred> = JoinSet::new();
    let mut first_error: Option<SyncError> = None;
    for c in copies {
        // Only as many tasks as transfer permits: a plan of 100,000 copies costs no memory here.
        let permit = loop {
            tokio::select! {
                biased;
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    settle(joined, report, &mut first_error);
                }
                p = opts.transfers.clone().acquire_owned() => {
                    break p.expect("transfer semaphore is never closed");
                }
            }
        };
        if first_error.is_some() {
            break; // an earlier transfer failed: start nothing new
        }
        let ctx = ctx.clone();
        let c = c.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let r = copy_object(&ctx, &c.key, c.size, &factory(&c)).await;
            (c.key, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        settle(joined, report, &mut first_error);
    }
    first_error.map_or(Ok(()), Err)
}

type Transferred = (ObjectKey, Result<u64, SyncError>);

fn settle(
    joined: Result<Transferred, JoinError>,
    report: &mut StanzaReport,
    first_error: &mut Option<SyncError>,
) {
    let error = match joined {
        Ok((_, Ok(n))) => return count(report, n),
        Ok((key, Err(e))) => {
            tracing::error!(key = %key, error = %e, "transfer failed");
            e
        }
        Err(e) => SyncError::Internal(format!("a transfer task ended abnormally: {e}")),
    };
    first_error.get_or_insert(error);
}
