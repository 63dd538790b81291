//! `restore-check` (SPEC §6): prove that the backups at the destination restore.
//!
//! For each stanza: pick the latest (or a given) backup, restore it with pgBackRest into a
//! private work directory, start PostgreSQL of the stanza's major version as an unprivileged
//! user with settings that make a managed-service cluster start here, recover to the end of the
//! archive (or a target time), prove recovery reached the newest archived WAL, then check every
//! database: reachable, amcheck on every btree index, `pg_dump` to nowhere, optional user SQL,
//! data checksums after a clean stop. Everything is removed afterwards, also on failure or
//! interruption.
//!
//! Object-store destinations (and local ones the PostgreSQL user cannot read) are staged: the
//! files the restore needs are copied through the storage provider into the work directory, so
//! pgBackRest always reads a local repository.
//!
//! - [`plan`]: which backup and recovery target;
//! - [`wal`]: WAL continuity and the end-of-recovery proof;
//! - [`stage`]: copying what a restore needs from any provider;
//! - [`workspace`]: the private work directory and its removal;
//! - [`report`]: per-stanza and per-step results, text/JSON/HTML.

mod check;
pub mod plan;
pub mod report;
pub mod stage;
pub mod wal;
pub mod workspace;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;

pub use plan::{RecoveryTarget, parse_target_time};
pub use report::{RunReport, StanzaReport, StepReport, StepStatus};
/// How a caller stops a run (Ctrl-C): re-exported so callers need no tokio-util of their own.
pub use tokio_util::sync::CancellationToken;

use crate::pg::user::{OsUser, check_reachable, pg_os_user};
use crate::pg::{PgError, find_pgbackrest};
use crate::repo::BackupLabel;
use crate::storage::DynProvider;

/// What to check and how.
#[derive(Debug, Clone)]
pub struct RestoreCheckOptions {
    /// Stanzas to check; empty: every stanza found in the destination.
    pub stanzas: Vec<String>,
    /// Restore this backup instead of the latest.
    pub set: Option<BackupLabel>,
    pub target: RecoveryTarget,
    /// Stanzas checked at once.
    pub parallel: usize,
    /// Skip amcheck, pg_dump and pg_checksums.
    pub skip_checkdb: bool,
    /// SQL run with psql against every restored cluster (fails the check on error).
    pub sql_checks: Option<String>,
    /// Where work directories are created (`$CBOB_BASE_PATH/restore-check/work`).
    pub work_root: PathBuf,
    /// Where the logs of failed checks are kept.
    pub logs_dir: Option<PathBuf>,
    /// `CBOB_PG_BIN_DIR`.
    pub pg_bin_dir: Option<PathBuf>,
    /// `CBOB_PGBACKREST_BIN`.
    pub pgbackrest_bin: Option<PathBuf>,
    /// Objects staged at once.
    pub transfers: usize,
    /// How long recovery may take.
    pub recovery_timeout: Duration,
    /// The port of the first stanza's server (the socket is private; the port only names it).
    pub port_base: u16,
    /// Only inspect: say which backup each stanza would restore.
    pub dry_run: bool,
}

impl RestoreCheckOptions {
    /// Defaults for a work root; everything else as the CLI's defaults.
    pub fn new(work_root: impl Into<PathBuf>) -> Self {
        Self {
            stanzas: Vec::new(),
            set: None,
            target: RecoveryTarget::EndOfArchive,
            parallel: 1,
            skip_checkdb: false,
            sql_checks: None,
            work_root: work_root.into(),
            logs_dir: None,
            pg_bin_dir: None,
            pgbackrest_bin: None,
            transfers: 16,
            recovery_timeout: Duration::from_secs(4 * 3600),
            port_base: 55432,
            dry_run: false,
        }
    }
}

/// A restore-check run.
#[derive(Debug, Clone)]
pub struct RestoreCheckRequest {
    pub dest: DynProvider,
    /// How the destination is named in reports (no secrets).
    pub dest_description: String,
    /// The destination's root directory when it is local: read in place when the PostgreSQL
    /// user can read it, staged otherwise.
    pub local_root: Option<PathBuf>,
    pub options: RestoreCheckOptions,
}

/// A failure that prevents checking any stanza.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("{context}: {message}")]
    Storage {
        context: String,
        message: String,
        kind: crate::storage::StorageErrorKind,
    },
}

/// Everything a stanza's check shares with the others.
pub(crate) struct Ctx {
    dest: DynProvider,
    dest_description: String,
    local_root: Option<PathBuf>,
    options: RestoreCheckOptions,
    pgbackrest: PathBuf,
    user: Option<OsUser>,
    cancel: CancellationToken,
    /// pgBackRest `process-max` per restore.
    process_max: usize,
}

/// Checks every requested stanza, `parallel` at a time; `cancel` stops the run (the running
/// checks clean up first). Errors only when nothing could be checked at all; per-stanza
/// failures are in the report.
pub async fn run_restore_check(
    req: RestoreCheckRequest,
    cancel: CancellationToken,
) -> Result<RunReport, RestoreError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let opts = req.options;
    let pgbackrest = find_pgbackrest(opts.pgbackrest_bin.as_deref())?;
    let pgbackrest_version = crate::pg::programs::pgbackrest_version(&pgbackrest);
    let user = pg_os_user(None)?;

    if !opts.dry_run {
        std::fs::create_dir_all(&opts.work_root)
            .map_err(|e| PgError::io("cannot create", &opts.work_root, e))?;
        // Searchable by the PostgreSQL user, not listable: each work directory is private.
        std::fs::set_permissions(&opts.work_root, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| PgError::io("cannot chmod", &opts.work_root, e))?;
        check_reachable(&opts.work_root, user.as_ref())?;
        for line in workspace::sweep_stale(&opts.work_root) {
            tracing::warn!("{line}");
        }
    }

    let stanzas = if opts.stanzas.is_empty() {
        crate::sync::discover_stanzas(&req.dest)
            .await
            .map_err(|e| RestoreError::Storage {
                context: format!("finding the stanzas in {}", req.dest_description),
                message: e.to_string(),
                kind: e
                    .storage_error()
                    .map_or(crate::storage::StorageErrorKind::Other, |s| s.kind()),
            })?
    } else {
        opts.stanzas.clone()
    };
    let mut report = RunReport {
        ok: false,
        dry_run: opts.dry_run,
        destination: req.dest_description.clone(),
        started_at,
        duration_seconds: 0.0,
        pgbackrest_version,
        stanzas: Vec::new(),
        fatal: None,
        report_files: Vec::new(),
    };
    if stanzas.is_empty() {
        report.fatal = Some(format!(
            "no stanza found in {}: sync a cluster first (`cbob sync`), or name one with --stanza",
            req.dest_description
        ));
        report.duration_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let parallel = opts.parallel.max(1);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ctx = Ctx {
        dest: req.dest,
        dest_description: req.dest_description,
        local_root: req.local_root,
        process_max: (cpus / parallel.min(stanzas.len())).clamp(1, 4),
        options: opts,
        pgbackrest,
        user,
        cancel,
    };
    // Owned values per check (not borrows of a local iterator), so the run's future is `Send`
    // and callers may spawn it.
    let ctx = std::sync::Arc::new(ctx);
    let mut results: Vec<(usize, StanzaReport)> =
        futures::stream::iter(stanzas.into_iter().enumerate())
            .map(|(i, s)| {
                let ctx = ctx.clone();
                async move { (i, check::check_stanza(&ctx, &s, i).await) }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    report.stanzas = results.into_iter().map(|(_, r)| r).collect();
    report.ok = report.stanzas.iter().all(|s| s.ok);
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
