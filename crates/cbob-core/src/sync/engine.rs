//! Running one stanza's sync in pgBackRest's publish order (SPEC §5 rule 3):
//! archive.info and an empty backup.info on first sight → payload (WAL, history, label files,
//! backup files, bundles; copied while the source is still being listed) → barrier → each new backup's manifest, oldest first (`.copy`, then main) → `backup.history/`
//! → barrier → archive.info, archive.info.copy → backup.info → backup.info.copy.
//! A failure anywhere stops publishing, so the destination keeps its previous valid state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};

use super::error::SyncError;
use super::inventory::{read_optional, read_verified_info};
use super::listing::{DestCursor, StanzaListing};
use super::observer::SyncObserver;
use super::plan::{Copy, DestInfo, Planner, StanzaPlan};
use super::queue::{CopyReceiver, CopySender, copy_queue, queue_of};
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
    let dest_info = read_dest_info(&job.dest, &archive_info_key, &backup_info_key).await?;
    let mut planner = Planner::new(&job.source, stanza, backup_info, archive_info, &dest_info)?;
    report.backups = planner
        .plan()
        .backups
        .iter()
        .map(|b| b.to_string())
        .collect();

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
    let (bootstrap_files, bootstrap_bytes) = planner.plan().bootstrap_totals();
    observer.planned(&job.name, bootstrap_files, bootstrap_bytes);
    if !opts.dry_run {
        bootstrap(&ctx, planner.plan(), report).await?;
    }

    // The payload moves while the source is still being listed: the planner hands each object
    // that must move to the transfers at once.
    ctx.observer.phase(&report.name, "payload");
    let source_listing = StanzaListing::start(&job.source, stanza)?;
    let dest_listing = StanzaListing::start(&job.dest, stanza)?;
    let (copies, queued) = copy_queue(PLANNED_AHEAD);
    let planning = plan_stanza(
        &mut planner,
        source_listing,
        DestCursor::new(dest_listing),
        (!opts.dry_run).then_some(copies),
        &ctx,
    );
    let copying = async {
        if opts.dry_run {
            return Copied::default();
        }
        copy_all(&ctx, opts, queued).await
    };
    let (planned, copied) = tokio::join!(planning, copying);
    report.copied_files += copied.files;
    report.copied_bytes += copied.bytes;
    if let Err(e) = planned.and(copied.error.map_or(Ok(()), Err)) {
        // What was planned before the failure still goes into the report.
        record_plan(report, planner.plan(), observer.as_ref());
        return Err(e);
    }
    let plan = planner.finish()?;
    record_plan(report, &plan, observer.as_ref());
    let (files, bytes) = plan.totals();
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
    publish_tail(&ctx, opts, &plan, report).await?;

    if opts.validate {
        observer.phase(&job.name, "validate");
        validate_destination(&job.dest, stanza).await?;
    }
    Ok(())
}

/// Puts a plan's totals and warnings into the report (and tells the observer the warnings).
fn record_plan(report: &mut StanzaReport, plan: &StanzaPlan, observer: &dyn SyncObserver) {
    (report.planned_files, report.planned_bytes) = plan.totals();
    report.unchanged_files = plan.unchanged_files;
    report.unchanged_bytes = plan.unchanged_bytes;
    report.repaired = plan.repaired;
    for w in &plan.warnings {
        observer.warning(&report.name, w);
    }
    report.warnings = plan.warnings.clone();
}

/// Copies planned ahead of the transfers. Enough that for most repositories the listing, and
/// so the plan's totals (progress bars, ETA), are complete long before the copy is; bounded so
/// that a plan of millions of objects holds at most this many here (≈ 250 bytes each).
const PLANNED_AHEAD: usize = 50_000;
/// How often the growing plan is reported to the observer while the listing goes on.
const PLAN_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Walks the source listing beside the destination's, sending each payload copy to `copies`
/// (`None`: a dry run) and telling the observer how the plan grows.
async fn plan_stanza(
    planner: &mut Planner,
    mut source: StanzaListing,
    mut dest: DestCursor,
    copies: Option<CopySender>,
    ctx: &TransferContext,
) -> Result<(), SyncError> {
    let mut unreported = (0u64, 0u64);
    let mut reported_at = Instant::now();
    let result = async {
        while let Some(meta) = source.next().await? {
            let at_dest = dest.find(meta.key.as_str()).await?;
            let Some(copy) = planner.consider(&meta, at_dest.as_ref()).await? else {
                continue;
            };
            unreported.0 += 1;
            unreported.1 += copy.size;
            if reported_at.elapsed() >= PLAN_REPORT_EVERY {
                ctx.observer
                    .planned(&ctx.stanza, unreported.0, unreported.1);
                unreported = (0, 0);
                reported_at = Instant::now();
            }
            if let Some(tx) = &copies
                && tx.send(copy).await.is_err()
            {
                // The transfers stopped after a failure; theirs is the error reported.
                return Ok(());
            }
        }
        // The listing is complete: what follows the payload is known too.
        let (tail_files, tail_bytes) = planner.tail_totals();
        unreported.0 += tail_files;
        unreported.1 += tail_bytes;
        Ok(())
    }
    .await;
    ctx.observer
        .planned(&ctx.stanza, unreported.0, unreported.1);
    if result.is_err() {
        // Nothing planned after this will be published: stop the transfers' retries too.
        ctx.abandon.store(true, Ordering::Relaxed);
    }
    result
}

/// The destination's info files as they are now (raw bytes; a missing file is `None`).
async fn read_dest_info(
    dest: &DynProvider,
    archive_info_key: &str,
    backup_info_key: &str,
) -> Result<DestInfo, SyncError> {
    let archive_copy = format!("{archive_info_key}.copy");
    let backup_copy = format!("{backup_info_key}.copy");
    // One after the other: a destination that fails is reported at the same file every time.
    Ok(DestInfo {
        archive_info: read_optional(dest, archive_info_key).await?,
        archive_info_copy: read_optional(dest, &archive_copy).await?,
        backup_info: read_optional(dest, backup_info_key).await?,
        backup_info_copy: read_optional(dest, &backup_copy).await?,
    })
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

fn info_keys(stanza: &str) -> Result<[ObjectKey; 4], SyncError> {
    Ok([
        key(&format!("archive/{stanza}/archive.info"))?,
        key(&format!("archive/{stanza}/archive.info.copy"))?,
        key(&format!("backup/{stanza}/backup.info"))?,
        key(&format!("backup/{stanza}/backup.info.copy"))?,
    ])
}

/// A new stanza at the destination: archive.info, then an empty backup.info, so it is valid
/// and empty before the first byte of payload lands.
async fn bootstrap(
    ctx: &TransferContext,
    plan: &StanzaPlan,
    report: &mut StanzaReport,
) -> Result<(), SyncError> {
    let [
        archive_info_key,
        archive_info_copy,
        backup_info_key,
        backup_info_copy,
    ] = info_keys(&report.stanza)?;
    if plan.bootstrap_archive_info {
        ctx.observer.phase(&report.name, "archive.info");
        for k in [&archive_info_key, &archive_info_copy] {
            put_bytes(ctx, k, plan.archive_info.clone()).await?;
            count(report, plan.archive_info.len() as u64);
        }
    }
    if let Some(empty) = &plan.bootstrap_backup_info {
        barrier(ctx).await?;
        for k in [&backup_info_key, &backup_info_copy] {
            put_bytes(ctx, k, empty.clone()).await?;
            count(report, empty.len() as u64);
        }
        barrier(ctx).await?;
    }
    Ok(())
}

/// After the payload: barrier → manifests (oldest backup first) and history → barrier →
/// archive.info → barrier → backup.info → backup.info.copy.
async fn publish_tail(
    ctx: &TransferContext,
    opts: &SyncOptions,
    plan: &StanzaPlan,
    report: &mut StanzaReport,
) -> Result<(), SyncError> {
    let [
        archive_info_key,
        archive_info_copy,
        backup_info_key,
        backup_info_copy,
    ] = info_keys(&report.stanza)?;
    barrier(ctx).await?;

    ctx.observer.phase(&report.name, "manifests");
    for m in &plan.manifests {
        for c in &m.copies {
            copy_one(ctx, c, report).await?;
        }
    }
    let copied = copy_all(ctx, opts, queue_of(&plan.history)).await;
    report.copied_files += copied.files;
    report.copied_bytes += copied.bytes;
    if let Some(e) = copied.error {
        return Err(e);
    }
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

/// What a [`copy_all`] moved, and its first error.
#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
    error: Option<SyncError>,
}

/// Copies objects, as they arrive (big ones first, see `queue.rs`), in parallel under the
/// run-wide transfer budget. Each transfer is its own task, so verification (hashing,
/// decompression) runs on every worker thread, not only on the one driving this stanza. After
/// the first failure (or once the stanza is abandoned) no new transfer starts, but those in
/// flight finish (so none is cut off half-written); every error is logged and the first is
/// returned.
async fn copy_all(ctx: &TransferContext, opts: &SyncOptions, mut copies: CopyReceiver) -> Copied {
    let mut tasks: JoinSet<Transferred> = JoinSet::new();
    let mut copied = Copied::default();
    while let Some(c) = copies.recv().await {
        // Only as many tasks as transfer permits: a plan of 100,000 copies costs no memory here.
        let permit = loop {
            tokio::select! {
                biased;
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    settle(joined, &mut copied);
                }
                p = opts.transfers.clone().acquire_owned() => {
                    break p.expect("transfer semaphore is never closed");
                }
            }
        };
        if copied.error.is_some() || ctx.abandon.load(Ordering::Relaxed) {
            break; // an earlier transfer failed, or planning did: start nothing new
        }
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let r = copy_object(&ctx, &c.key, c.size, &factory(&c)).await;
            (c.key, r)
        });
    }
    // Dropping the queue tells the planner to stop.
    drop(copies);
    while let Some(joined) = tasks.join_next().await {
        settle(joined, &mut copied);
    }
    copied
}

type Transferred = (ObjectKey, Result<u64, SyncError>);

fn settle(joined: Result<Transferred, JoinError>, copied: &mut Copied) {
    let error = match joined {
        Ok((_, Ok(n))) => {
            copied.files += 1;
            copied.bytes += n;
            return;
        }
        Ok((key, Err(e))) => {
            tracing::error!(key = %key, error = %e, "transfer failed");
            e
        }
        Err(e) => SyncError::Internal(format!("a transfer task ended abnormally: {e}")),
    };
    copied.error.get_or_insert(error);
}
