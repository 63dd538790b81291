//! `cbob restore-check`: restore each stanza's latest (or a given) backup into a private
//! temporary directory, recover it to the end of the archive, prove it, check every database,
//! clean up, report (docs/restore-check.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use cbob_core::audit::AuditLog;
use cbob_core::config::{Config, ConfigSources};
use cbob_core::layers::{Layers, RetryPolicy};
use cbob_core::lock::{LockError, RunLock};
use cbob_core::metrics;
use cbob_core::notify::{Attachment, Event, Item, Notifiers};
use cbob_core::pg::PgError;
use cbob_core::repo::BackupLabel;
use cbob_core::restore::{
    CancellationToken, RecoveryTarget, RestoreCheckOptions, RestoreCheckRequest, RestoreError,
    RunReport, parse_target_time, run_restore_check,
};
use cbob_core::state::{Outcome, StateDb};
use cbob_core::storage::{CheckMode, StorageErrorKind};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::context;
use crate::exit_code::{CliError, ExitCode, for_storage};
use crate::providers;

/// The configuration key of the user SQL checks file.
const SQL_KEY: &str = "CBOB_RESTORE_CHECK_SQL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cbob restore-check                               # every stanza in the destination, latest backup, whole archive\n  \
    cbob restore-check --stanza abc123 --stanza def456 --parallel 2\n  \
    cbob restore-check --stanza abc123 --set 20261124-052420F\n  \
    cbob restore-check --stanza abc123 --target-time '2026-11-24 05:30:00+00'\n  \
    cbob restore-check --format json --report-dir /var/www/reports\n\n\
    Exit codes: 0 every stanza passed; 1 any stanza failed; 5 pgbackrest or the PostgreSQL \
    binaries a stanza needs are missing (the message names the package to install).")]
pub struct RestoreCheckArgs {
    /// Check this stanza (repeatable); default: every stanza found in the destination.
    #[arg(long = "stanza", value_name = "STANZA")]
    pub stanzas: Vec<String>,
    /// Stanzas checked at once, each with its own server and socket.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Restore this backup (label) instead of the latest.
    #[arg(long, value_name = "LABEL")]
    pub set: Option<String>,
    /// Recover to this time instead of the end of the archive, from the newest backup that
    /// finished before it: RFC 3339, or "YYYY-MM-DD HH:MM:SS[+HH]" (UTC without an offset).
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Skip amcheck, pg_dump and pg_checksums: restore, recover and connect only.
    #[arg(long)]
    pub skip_checkdb: bool,
    /// Also write the report (text, JSON and HTML) into this directory. Reports are always kept
    /// under $CBOB_BASE_PATH/restore-check/reports/.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// SQL file run with psql against every restored cluster (CBOB_RESTORE_CHECK_SQL); an
    /// error fails the check.
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,
    /// Email the report (needs PGBACKREST_AUTO_SMTP_SERVER and PGBACKREST_AUTO_MAIL_TO).
    #[arg(long)]
    pub email: bool,
    /// How long recovery (replaying the archive) may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 4 * 3600)]
    pub recovery_timeout: u64,
    /// Output format; json is stable and documented in docs/restore-check.md.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

impl RestoreCheckArgs {
    fn apply(&self, sources: &mut ConfigSources) {
        if let Some(p) = &self.sql {
            sources.set_flag(SQL_KEY, p.display().to_string(), "--sql");
        }
    }
}

pub fn run(global: &GlobalArgs, args: &RestoreCheckArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |s| args.apply(s))?;
    let options = options(&config, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(restore_check(args, config, options))
}

/// Everything that can be wrong with the flags, found before anything runs (exit 2).
fn options(config: &Config, args: &RestoreCheckArgs) -> Result<RestoreCheckOptions, CliError> {
    let mut o = RestoreCheckOptions::new(config.base_path.join("restore-check").join("work"));
    for s in &args.stanzas {
        cbob_core::sync::validate_stanza_name(s)
            .map_err(|e| CliError::usage(format!("--stanza: {e}")))?;
    }
    o.stanzas = args.stanzas.clone();
    o.set = args
        .set
        .as_deref()
        .map(BackupLabel::parse)
        .transpose()
        .map_err(|e| CliError::usage(format!("--set: {e}")))?;
    if let Some(t) = &args.target_time {
        o.target = RecoveryTarget::Time(parse_target_time(t).map_err(CliError::usage)?);
    }
    o.parallel = usize::from(args.parallel);
    o.skip_checkdb = args.skip_checkdb;
    if let Some(path) = config.get(SQL_KEY).and_then(|v| v.raw.clone()) {
        let sql = std::fs::read_to_string(&path).map_err(|e| {
            CliError::usage(format!(
                "{SQL_KEY}={path}: cannot read the SQL checks file: {e}; fix: point {SQL_KEY} (or --sql) at a readable file"
            ))
        })?;
        o.sql_checks = Some(sql);
    }
    o.pg_bin_dir = config.programs.pg_bin_dir.clone();
    o.pgbackrest_bin = config.programs.pgbackrest_bin.clone();
    o.transfers = config.transfer.transfers;
    o.recovery_timeout = Duration::from_secs(args.recovery_timeout.max(1));
    o.dry_run = config.dry_run;
    Ok(o)
}

/// Ctrl-C and SIGTERM (systemd, the daemon) cancel the run; the checks then stop their servers
/// and remove their directories before cbob exits.
fn cancel_on_signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if c.is_cancelled() {
                tracing::warn!("still cleaning up; please wait");
            } else {
                tracing::warn!(
                    "interrupted: stopping PostgreSQL and removing the work directories"
                );
                c.cancel();
            }
        }
    });
    cancel
}

fn error_code(e: &RestoreError) -> ExitCode {
    match e {
        RestoreError::Pg(PgError::MissingProgram { .. }) => ExitCode::MissingProgram,
        RestoreError::Pg(PgError::Permission(_)) => ExitCode::Permission,
        RestoreError::Pg(PgError::Io { source, .. }) => crate::exit_code::for_io(source.kind()),
        RestoreError::Storage { kind, .. } => for_storage(*kind),
        RestoreError::Pg(_) => ExitCode::Failure,
    }
}

async fn restore_check(
    args: &RestoreCheckArgs,
    config: Config,
    mut options: RestoreCheckOptions,
) -> Result<ExitCode, CliError> {
    let registry = providers::registry();
    let spec = config.destination_spec();
    let dest_description = spec.describe();
    let local_root = (spec.kind == "local").then(|| config.target_path.clone());
    let dest = registry.build(&spec).await?;
    dest.check(CheckMode::Read).await.map_err(|e| {
        let code = match e.kind() {
            StorageErrorKind::PermissionDenied => ExitCode::Permission,
            StorageErrorKind::Config => ExitCode::Usage,
            _ => ExitCode::Failure,
        };
        CliError::new(
            code,
            format!("destination {dest_description} is not readable: {e}"),
        )
    })?;
    let dest = Layers {
        retry: Some(RetryPolicy::new(
            config.transfer.retry_count,
            config.transfer.retry_delay,
        )),
        ..Layers::default()
    }
    .apply(dest);

    let dry_run = options.dry_run;
    let _lock = if config.no_lock || dry_run {
        None
    } else {
        Some(
            RunLock::acquire(&config.base_path, "restore-check", &dest_description).map_err(
                |e| match e {
                    LockError::Held { .. } => CliError::new(ExitCode::Locked, e.to_string()),
                    LockError::Io { .. } => CliError::new(ExitCode::Permission, e.to_string()),
                },
            )?,
        )
    };
    let state = if dry_run {
        None
    } else {
        Some(StateDb::open_in(&config.base_path).map_err(|e| CliError::failure(e.to_string()))?)
    };
    let run_id = match &state {
        Some(s) => Some(
            s.start_run("restore-check", Some(&dest_description))
                .map_err(|e| CliError::failure(e.to_string()))?,
        ),
        None => None,
    };
    let report_dir = config
        .base_path
        .join("restore-check")
        .join("reports")
        .join(format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        ));
    if !dry_run {
        private_dirs(&config.base_path)?;
        options.logs_dir = Some(report_dir.clone());
    }

    let notifiers = {
        let n = Notifiers::from_config(&config);
        if args.email { n } else { n.without_email() }
    };
    if !dry_run {
        notifiers
            .send(&Event::started("restore-check", &dest_description))
            .await;
    }

    tracing::info!(destination = %dest_description, dry_run, "restore-check started");
    let cancel = cancel_on_signals();
    let request = RestoreCheckRequest {
        dest,
        dest_description: dest_description.clone(),
        local_root,
        options,
    };
    let result = run_restore_check(request, cancel.clone()).await;
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            if let (Some(s), Some(id)) = (&state, run_id) {
                let _ = s.finish_run(id, Outcome::Failed, 0, 0, 1);
            }
            if !dry_run {
                notifiers
                    .send(&Event::finished(
                        "restore-check",
                        &dest_description,
                        false,
                        format!("restore-check could not run: {e}"),
                        Vec::new(),
                        Duration::ZERO,
                    ))
                    .await;
            }
            return Err(CliError::new(error_code(&e), e.to_string()));
        }
    };
    if cancel.is_cancelled() && report.stanzas.iter().all(|s| s.ok) {
        report.ok = false;
        report.fatal.get_or_insert_with(|| "interrupted".into());
    }

    if !dry_run {
        report.report_files = write_reports(&report, &report_dir, args.report_dir.as_deref());
        record(&config, state.as_ref(), run_id, &report, &dest_description);
        let items: Vec<Item> = report
            .stanzas
            .iter()
            .map(|s| Item {
                name: s.stanza.clone(),
                stanza: Some(s.stanza.clone()),
                ok: s.ok,
                detail: match (&s.failed_step, &s.error) {
                    (Some(step), Some(e)) => {
                        format!("failed at {step}: {}", e.lines().next().unwrap_or(""))
                    }
                    _ => s
                        .backup
                        .as_ref()
                        .map(|b| format!("backup {} restored and checked", b.label))
                        .unwrap_or_default(),
                },
            })
            .collect();
        let summary = format!(
            "{} of {} stanzas passed the restore-check{}",
            report.stanzas.len() - report.failed(),
            report.stanzas.len(),
            report
                .fatal
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        );
        let mut event = Event::finished(
            "restore-check",
            &dest_description,
            report.ok,
            summary,
            items,
            Duration::from_secs_f64(report.duration_seconds),
        );
        let (filename, content_type, body) = if args.report_dir.is_some() {
            ("restore-check.html", "text/html", report.to_html())
        } else {
            ("restore-check.txt", "text/plain", report.to_text())
        };
        event = event.with_attachment(Attachment {
            filename: filename.into(),
            content_type: content_type.into(),
            body: body.into_bytes(),
        });
        notifiers.send(&event).await;
        if let Err(e) = metrics::write_textfile(&config.base_path) {
            tracing::warn!(error = %e, "metrics textfile not written");
        }
    }

    print_out(&match args.format {
        OutputFormat::Json => report.to_json(),
        OutputFormat::Text => report.to_text(),
    })?;
    Ok(if report.ok {
        ExitCode::Success
    } else if report.only_missing_programs() {
        ExitCode::MissingProgram
    } else {
        ExitCode::Failure
    })
}

/// `$CBOB_BASE_PATH/restore-check` (0711: the PostgreSQL user must pass through it to its work
/// directories, nobody may list it) and its `reports` (0700: server logs of failed checks can
/// quote data).
fn private_dirs(base: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let root = base.join("restore-check");
    for (dir, mode) in [(root.clone(), 0o711), (root.join("reports"), 0o700)] {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| {
                CliError::new(
                    crate::exit_code::for_io(e.kind()),
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
    }
    Ok(())
}

/// Writes `report.txt` and `report.json` under the base path's report directory, and with
/// `--report-dir` also `report.txt`, `report.json` and `report.html` there. Returns the files.
fn write_reports(report: &RunReport, base_dir: &Path, extra: Option<&Path>) -> Vec<PathBuf> {
    let mut written = Vec::new();
    let mut write = |dir: &Path, name: &str, text: String| {
        let path = dir.join(name);
        match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)) {
            Ok(()) => written.push(path),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the report")
            }
        }
    };
    // The file list inside the reports names them all, so fill it in first.
    let mut with_files = report.clone();
    with_files.report_files = [base_dir.join("report.json"), base_dir.join("report.txt")]
        .into_iter()
        .chain(
            extra
                .into_iter()
                .flat_map(|d| ["report.json", "report.txt", "report.html"].map(|n| d.join(n))),
        )
        .collect();
    write(base_dir, "report.json", with_files.to_json());
    write(base_dir, "report.txt", with_files.to_text());
    if let Some(dir) = extra {
        write(dir, "report.json", with_files.to_json());
        write(dir, "report.txt", with_files.to_text());
        write(dir, "report.html", with_files.to_html());
    }
    written
}

/// The state database (one check per stanza, and the run) and the audit log.
fn record(
    config: &Config,
    state: Option<&StateDb>,
    run_id: Option<i64>,
    report: &RunReport,
    dest: &str,
) {
    if let Some(db) = state {
        for s in &report.stanzas {
            let outcome = if s.ok {
                Outcome::Success
            } else {
                Outcome::Failed
            };
            let detail = serde_json::to_string(s).unwrap_or_default();
            if let Err(e) = db.record_check(
                &s.stanza,
                dest,
                "restore-check",
                outcome,
                Duration::from_secs_f64(s.duration_seconds),
                Some(&detail),
            ) {
                tracing::error!(error = %e, stanza = %s.stanza, "could not record the check");
            }
        }
        if let Some(id) = run_id {
            let outcome = if report.ok {
                Outcome::Success
            } else {
                Outcome::Failed
            };
            let errors = report.failed() as u64 + u64::from(report.fatal.is_some());
            if let Err(e) = db.finish_run(id, outcome, report.stanzas.len() as u64, 0, errors) {
                tracing::error!(error = %e, "could not record the run");
            }
        }
    }
    AuditLog::in_base(&config.base_path).record(
        "restore-check",
        "run",
        json!({
            "result": if report.ok { "success" } else { "failed" },
            "destination": dest,
            "stanzas": report.stanzas.iter().map(|s| json!({
                "stanza": s.stanza,
                "ok": s.ok,
                "failed_step": s.failed_step,
                "backup": s.backup.as_ref().map(|b| b.label.clone()),
            })).collect::<Vec<_>>(),
            "duration_seconds": report.duration_seconds,
        }),
    );
}
