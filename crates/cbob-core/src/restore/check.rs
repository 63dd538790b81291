//! One stanza's restore-check, step by step. Every step is timed and reported; a step whose
//! failure makes the next ones meaningless ends the check, the others (a WAL gap, recovery
//! ending early, a corrupt index, a failed dump) are reported and the checks go on, so one run
//! says everything that is wrong. Cleanup always runs.

mod databases;
mod prepare;
mod recovery;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::TryStreamExt;

use super::Ctx;
use super::plan::{RecoveryTarget, choose_backup, pg_timestamp};
use super::report::{
    AmcheckFailure, BackupRef, DumpReport, RepositoryAccess, StanzaReport, StepReport, StepStatus,
};
use super::stage::{self, StagePlan};
use super::wal::{self, ArchiveContents, HistoryEntry, WalPlan};
use super::workspace::Workspace;
use crate::pg::programs::CHECK_PROGRAMS;
use crate::pg::server::{conninfo, restored_wal};
use crate::pg::settings::{Listen, render_conf, server_settings, throwaway_settings};
use crate::pg::user::{can_enter, can_read, check_reachable};
use crate::pg::{
    ControlData, PgBinaries, PgEnv, PgError, Server, find_pg_binaries, last_lines, run_command,
};
use crate::repo::{ArchiveId, BackupInfo, BackupInfoEntry, BackupLabel, WalGeometry};
use crate::storage::{KeyPrefix, ObjectKey, ObjectMeta, StorageErrorKind};
use crate::sync::{read_verified_info, validate_stanza_name};

/// How long the postmaster may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(300);

/// What `inspect` learned.
struct Inspection {
    entry: BackupInfoEntry,
    chain: Vec<BackupLabel>,
    archive_id: ArchiveId,
    bins: PgBinaries,
    archive_keys: Vec<String>,
    /// `None`: pgBackRest reads the local destination in place.
    stage: Option<StagePlan>,
}

/// The state of one stanza's check.
struct StanzaRun<'a> {
    ctx: &'a Ctx,
    stanza: &'a str,
    port: u16,
    report: StanzaReport,
    ws: Option<Workspace>,
    server: Option<Server>,
    control: Option<ControlData>,
    geometry: WalGeometry,
    plan: Option<WalPlan>,
    interrupted_recorded: bool,
}

/// Runs the whole check of `stanza`; `slot` picks its port.
pub(super) async fn check_stanza(ctx: &Ctx, stanza: &str, slot: usize) -> StanzaReport {
    let started = Instant::now();
    let mut run = StanzaRun {
        ctx,
        stanza,
        port: ctx.options.port_base.saturating_add((slot % 5000) as u16),
        report: StanzaReport::new(stanza),
        ws: None,
        server: None,
        control: None,
        geometry: WalGeometry::default(),
        plan: None,
        interrupted_recorded: false,
    };
    tracing::info!(stanza, "restore-check started");
    run.pipeline().await;
    run.cleanup().await;
    let mut report = run.report;
    report.ok = report.failed_step.is_none();
    report.duration_seconds = started.elapsed().as_secs_f64();
    if report.ok {
        tracing::info!(
            stanza,
            seconds = report.duration_seconds,
            "restore-check passed"
        );
    } else {
        tracing::error!(
            stanza,
            step = report.failed_step.as_deref().unwrap_or(""),
            error = report.error.as_deref().unwrap_or(""),
            "restore-check failed"
        );
    }
    report
}

fn failed(msg: impl Into<String>) -> PgError {
    PgError::Failed(msg.into())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl StanzaRun<'_> {
    // ----- bookkeeping -------------------------------------------------------------------

    fn push(
        &mut self,
        name: &str,
        status: StepStatus,
        started: Instant,
        detail: String,
        error: Option<String>,
    ) {
        self.report.steps.push(StepReport {
            name: name.to_string(),
            status,
            duration_seconds: started.elapsed().as_secs_f64(),
            detail,
            error,
        });
    }

    /// Records a step's result; `Some(value)` when it succeeded.
    fn record<T>(
        &mut self,
        name: &str,
        started: Instant,
        result: Result<(T, String), PgError>,
    ) -> Option<T> {
        match result {
            Ok((value, detail)) => {
                tracing::info!(
                    stanza = self.stanza,
                    step = name,
                    seconds = started.elapsed().as_secs_f64(),
                    "{detail}"
                );
                self.push(name, StepStatus::Ok, started, detail, None);
                Some(value)
            }
            Err(e) => {
                self.fail(name, started, e);
                None
            }
        }
    }

    fn fail(&mut self, name: &str, started: Instant, e: PgError) {
        match &e {
            PgError::MissingProgram { .. } => self.report.missing_program = true,
            PgError::Interrupted => {
                self.report.interrupted = true;
                self.interrupted_recorded = true;
            }
            _ => {}
        }
        let msg = e.to_string();
        tracing::warn!(stanza = self.stanza, step = name, error = %msg, "step failed");
        if self.report.failed_step.is_none() {
            self.report.failed_step = Some(name.to_string());
            self.report.error = Some(msg.clone());
        }
        self.push(name, StepStatus::Failed, started, String::new(), Some(msg));
    }

    fn skip(&mut self, name: &str, why: impl Into<String>) {
        self.push(name, StepStatus::Skipped, Instant::now(), why.into(), None);
    }

    /// False once the run was interrupted (recorded once, as its own failure).
    fn go_on(&mut self) -> bool {
        if self.ctx.cancel.is_cancelled() {
            if !self.interrupted_recorded {
                self.fail("interrupted", Instant::now(), PgError::Interrupted);
            }
            return false;
        }
        true
    }

    fn ws(&self) -> &Workspace {
        self.ws.as_ref().expect("workspace prepared")
    }

    fn pg_env(&self, bins: &PgBinaries) -> PgEnv {
        PgEnv::new(self.ctx.user.clone(), &bins.dir, self.ws().run_dir())
    }

    // ----- the pipeline ------------------------------------------------------------------

    async fn pipeline(&mut self) {
        let t = Instant::now();
        let r = self.inspect().await;
        let Some(insp) = self.record("inspect", t, r) else {
            return;
        };
        if self.ctx.options.dry_run || !self.go_on() {
            return;
        }

        let t = Instant::now();
        let r = self.prepare(&insp);
        if self.record("prepare", t, r).is_none() || !self.go_on() {
            return;
        }

        match &insp.stage {
            None => self.skip(
                "stage",
                "the destination is a local directory the PostgreSQL user can read: pgBackRest reads it in place",
            ),
            Some(plan) => {
                let t = Instant::now();
                let r = self.stage(plan).await;
                if self.record("stage", t, r).is_none() || !self.go_on() {
                    return;
                }
            }
        }

        let t = Instant::now();
        let r = self.restore(&insp).await;
        if self.record("restore", t, r).is_none() || !self.go_on() {
            return;
        }

        let t = Instant::now();
        let r = self.wal_archive(&insp).await;
        self.record("wal-archive", t, r);
        if !self.go_on() {
            return;
        }

        let t = Instant::now();
        let r = self.start(&insp).await;
        if self.record("start", t, r).is_none() || !self.go_on() {
            return;
        }

        let t = Instant::now();
        let r = self.recover().await;
        if self.record("recover", t, r).is_none() || !self.go_on() {
            return;
        }

        let t = Instant::now();
        let r = self.recovery_end().await;
        self.record("recovery-end", t, r);
        if !self.go_on() {
            return;
        }

        let t = Instant::now();
        let r = self.databases().await;
        self.record("databases", t, r);
        if self.report.databases.is_empty() || !self.go_on() {
            return;
        }

        if self.ctx.options.skip_checkdb {
            self.skip("amcheck", "--skip-checkdb");
            self.skip("pg_dump", "--skip-checkdb");
        } else {
            if insp.bins.major() < 11 {
                self.skip(
                    "amcheck",
                    format!(
                        "amcheck's heapallindexed check needs PostgreSQL 11 or later, this is {}",
                        insp.bins.version
                    ),
                );
            } else {
                let t = Instant::now();
                let r = self.amcheck().await;
                self.record("amcheck", t, r);
                if !self.go_on() {
                    return;
                }
            }
            let t = Instant::now();
            let r = self.dump().await;
            self.record("pg_dump", t, r);
            if !self.go_on() {
                return;
            }
        }

        if self.ctx.options.sql_checks.is_some() {
            let t = Instant::now();
            let r = self.sql().await;
            self.record("sql", t, r);
            if !self.go_on() {
                return;
            }
        } else {
            self.skip("sql", "no SQL checks configured (CBOB_RESTORE_CHECK_SQL)");
        }

        let t = Instant::now();
        let r = self.stop().await;
        if self.record("stop", t, r).is_none() || !self.go_on() {
            return;
        }

        if self.ctx.options.skip_checkdb {
            self.skip("checksums", "--skip-checkdb");
        } else if !self
            .control
            .as_ref()
            .is_some_and(ControlData::checksums_enabled)
        {
            self.skip(
                "checksums",
                "the cluster was created without data checksums (initdb --data-checksums): nothing to check",
            );
        } else {
            let t = Instant::now();
            let r = self.checksums(&insp.bins).await;
            self.record("checksums", t, r);
        }
    }

    /// Stops whatever still runs, keeps the logs of a failed check, removes the work directory.
    async fn cleanup(&mut self) {
        let Some(mut ws) = self.ws.take() else { return };
        let t = Instant::now();
        let mut stopped = String::new();
        if let Some(mut server) = self.server.take()
            && server.is_running()
        {
            server.stop_immediate().await;
            stopped = format!("stopped PostgreSQL (PID {}) immediately; ", server.pid());
        }
        if self.report.failed_step.is_some()
            && let Some(dir) = &self.ctx.options.logs_dir
        {
            self.report.logs = ws.keep_logs(self.stanza, dir);
        }
        let root = ws.root().to_path_buf();
        // Deleting a restored cluster takes seconds; other stanzas' checks go on meanwhile.
        let removed = tokio::task::spawn_blocking(move || ws.remove())
            .await
            .unwrap_or_else(|e| Err(PgError::Failed(format!("removing {}: {e}", root.display()))));
        let r = removed.map(|()| ((), format!("{stopped}removed {}", root.display())));
        self.record("cleanup", t, r);
    }
}

async fn list(
    dest: &crate::storage::DynProvider,
    prefix: &str,
) -> Result<Vec<ObjectMeta>, PgError> {
    let p = KeyPrefix::new(prefix.to_string()).map_err(|e| failed(format!("{prefix}: {e}")))?;
    dest.list(&p)
        .try_collect()
        .await
        .map_err(|e| failed(format!("listing {prefix} in {}: {e}", dest.describe())))
}

/// Bytes available to unprivileged users on the filesystem of `path`.
fn free_space(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct for a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}
