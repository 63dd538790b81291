//! `cbob sync`: copy every Crunchy Bridge backup (or any pgBackRest repository given with
//! `--source`) to the destination, verified, in pgBackRest's publish order.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use cbob_core::audit::AuditLog;
use cbob_core::bridge::{BridgeClient, ClusterSelection};
use cbob_core::config::{Config, ConfigSources};
use cbob_core::layers::{BandwidthLimiter, Layers, RetryPolicy};
use cbob_core::lock::{LockError, RunLock};
use cbob_core::metrics;
use cbob_core::notify::{self, Event, Notifiers};
use cbob_core::state::{Outcome, StateDb};
use cbob_core::storage::{CheckMode, DynProvider, ProviderSpec, StorageErrorKind};
use cbob_core::sync::{
    PruneReport, RunReport, RunRequest, SourceSelection, SyncOptions, prune_stanza, run_sync,
};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::context;
use crate::exit_code::{CliError, ExitCode};
use crate::progress::Progress;
use crate::providers;

/// Output format of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cbob sync                                  # every primary cluster of every team (CBOB_CRUNCHY_API_KEY)\n  \
    cbob sync --cluster abc123 --cluster def456\n  \
    cbob sync --source file:///srv/pgbackrest --target /backups/copy\n  \
    cbob sync --estimate-only                  # what would move, per cluster\n  \
    cbob sync --status --format json           # last sync per cluster")]
pub struct SyncArgs {
    /// Sync this Crunchy Bridge cluster (repeatable). Replaces CBOB_CRUNCHY_CLUSTERS and discovery.
    /// Not with --source, which syncs every stanza of the repository it names.
    #[arg(long = "cluster", value_name = "ID", conflicts_with = "source")]
    pub clusters: Vec<String>,
    /// Sync any pgBackRest repository instead of Crunchy Bridge, every stanza found in it:
    /// file:///path, s3://bucket/prefix, minio://bucket/prefix, azure://account/container/prefix,
    /// gcs://bucket/prefix. Credentials come from CBOB_SOURCE_* (or the provider's standard chain).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// Local destination directory (CBOB_TARGET_PATH); used when CBOB_DEST_TYPE is local.
    #[arg(long, value_name = "PATH")]
    pub target: Option<PathBuf>,
    /// Clusters synced at once (CBOB_PARALLEL, default 2).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Object transfers in flight at once across the run (CBOB_TRANSFERS, default 16).
    #[arg(long, value_name = "N")]
    pub transfers: Option<usize>,
    /// Total bandwidth cap for the run, e.g. 10MB/s or 500KiB/s (CBOB_BANDWIDTH; default unlimited).
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// Retries per operation after the first attempt (CBOB_RETRY_COUNT, default 5).
    #[arg(long, value_name = "N")]
    pub retry_count: Option<u32>,
    /// First retry delay in seconds, doubling each time (CBOB_RETRY_DELAY, default 1).
    #[arg(long, value_name = "SECONDS")]
    pub retry_delay: Option<String>,
    /// Skip the post-sync check that the destination's info files load and every listed backup is complete.
    #[arg(long)]
    pub skip_validation: bool,
    /// Print the files and bytes that would move per cluster, and copy nothing.
    #[arg(long, conflicts_with_all = ["status", "prune"])]
    pub estimate_only: bool,
    /// Print each cluster's last sync (time, result, bytes, destination size) and exit.
    #[arg(long, conflicts_with_all = ["prune"])]
    pub status: bool,
    /// After a successful sync, delete at the destination what the source has expired, in
    /// pgBackRest's expire order (backups no longer listed, then WAL no backup needs).
    #[arg(long)]
    pub prune: bool,
    /// Summary format; json is stable and documented in docs/cli.md.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

impl SyncArgs {
    fn apply(&self, sources: &mut ConfigSources) {
        if let Some(t) = &self.target {
            sources.set_flag("CBOB_TARGET_PATH", t.display().to_string(), "--target");
        }
        if let Some(n) = self.parallel {
            sources.set_flag("CBOB_PARALLEL", n.to_string(), "--parallel");
        }
        if let Some(n) = self.transfers {
            sources.set_flag("CBOB_TRANSFERS", n.to_string(), "--transfers");
        }
        if let Some(r) = &self.bandwidth {
            sources.set_flag("CBOB_BANDWIDTH", r.clone(), "--bandwidth");
        }
        if let Some(n) = self.retry_count {
            sources.set_flag("CBOB_RETRY_COUNT", n.to_string(), "--retry-count");
        }
        if let Some(d) = &self.retry_delay {
            sources.set_flag("CBOB_RETRY_DELAY", d.clone(), "--retry-delay");
        }
    }
}

pub fn run(global: &GlobalArgs, args: &SyncArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |s| args.apply(s))?;
    if args.status {
        return status(&config, args.format);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(sync(global, args, config))
}

/// Proves the destination usable before a run, without writing to it: a write probe on every
/// run would leave versions and delete markers in versioned buckets and fail on WORM buckets.
/// Object stores are listed (bucket exists, credentials accepted); a local directory (created on
/// the first write) must have a writable nearest existing ancestor.
async fn check_destination(dest: &DynProvider, spec: &ProviderSpec) -> Result<(), CliError> {
    let describe = spec.describe();
    if spec.kind == "local" {
        let root = spec.path.clone().unwrap_or_default();
        let mut probe = root.as_path();
        while !probe.exists() {
            probe = match probe.parent() {
                Some(p) => p,
                None => break,
            };
        }
        let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).map_err(|_| {
            CliError::usage(format!(
                "destination path {} contains a NUL byte",
                root.display()
            ))
        })?;
        // SAFETY: access(2) on a valid C string.
        let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
        if !writable {
            return Err(CliError::new(
                ExitCode::Permission,
                format!(
                    "destination {describe} is not usable: {} is not writable by this user; fix its \
                     permissions or set CBOB_TARGET_PATH / --target to a writable directory",
                    probe.display()
                ),
            ));
        }
        return Ok(());
    }
    dest.check(CheckMode::Read).await.map_err(|e| {
        let code = match e.kind() {
            StorageErrorKind::PermissionDenied => ExitCode::Permission,
            StorageErrorKind::Config => ExitCode::Usage,
            _ => ExitCode::Failure,
        };
        CliError::new(code, format!("destination {describe} is not usable: {e}"))
    })
}

fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy::new(config.transfer.retry_count, config.transfer.retry_delay)
}

async fn sync(global: &GlobalArgs, args: &SyncArgs, config: Config) -> Result<ExitCode, CliError> {
    let plan_only = config.dry_run || args.estimate_only;
    let registry = Arc::new(providers::registry());

    // Everything before the copy starts. A failure here (destination unreachable, state
    // unwritable) is still a failed backup run, so monitors hear of it; a run refused because
    // another holds the lock is not (that run reports for itself).
    let retry = retry_policy(&config);
    let prepared = async {
        // The source first: a configuration problem (no API key, bad URL) must exit 2 before
        // anything is created or written at the destination.
        let source = match &args.source {
            Some(url) => SourceSelection::Repository {
                spec: Box::new(config.source_spec(url)?),
            },
            None => {
                let key = config.require_api_key()?;
                let client = BridgeClient::new(config.crunchy.api_url.as_str(), key.clone(), retry)
                    .map_err(|e| CliError::usage(e.to_string()))?;
                let selection = ClusterSelection::new(
                    &args.clusters,
                    &config.crunchy.clusters,
                    &config.crunchy.ignore_clusters,
                )
                .map_err(|e| CliError::usage(e.to_string()))?;
                SourceSelection::Bridge {
                    client,
                    selection,
                    source_endpoint: config.source.endpoint.clone(),
                }
            }
        };

        let mut dest_spec = config.destination_spec();
        if dest_spec.kind == "local" {
            // One syncfs per publish barrier instead of an fsync per file.
            dest_spec
                .options
                .insert("durability".into(), "deferred".into());
        }
        let dest_description = dest_spec.describe();
        let dest = registry.build(&dest_spec).await?;
        if !plan_only {
            check_destination(&dest, &dest_spec).await?;
        }
        let dest = Layers {
            retry: Some(retry),
            ..Layers::default()
        }
        .apply(dest);

        let lock = if config.no_lock || plan_only {
            None
        } else {
            Some(
                RunLock::acquire(&config.base_path, "sync", &dest_description).map_err(
                    |e| match e {
                        LockError::Held { .. } => CliError::new(ExitCode::Locked, e.to_string()),
                        LockError::Io { .. } => CliError::new(ExitCode::Permission, e.to_string()),
                    },
                )?,
            )
        };
        let state = if plan_only {
            None
        } else {
            Some(Arc::new(Mutex::new(
                StateDb::open_in(&config.base_path)
                    .map_err(|e| CliError::failure(e.to_string()))?,
            )))
        };
        let run_id = match &state {
            Some(s) => Some(
                s.lock()
                    .expect("state")
                    .start_run("sync", Some(&dest_description))
                    .map_err(|e| CliError::failure(e.to_string()))?,
            ),
            None => None,
        };
        Ok::<_, CliError>((source, dest, dest_description, lock, state, run_id))
    }
    .await;
    let (source, dest, dest_description, _lock, state, run_id) = match prepared {
        Ok(p) => p,
        Err(e) => {
            if !plan_only && e.code != ExitCode::Locked && e.code != ExitCode::Usage {
                let event = Event::finished(
                    "sync",
                    &config.destination_spec().describe(),
                    false,
                    format!("sync could not start: {e}"),
                    Vec::new(),
                    Duration::ZERO,
                );
                Notifiers::from_config(&config).send(&event).await;
            }
            return Err(e);
        }
    };

    let mut options = SyncOptions::new(config.transfer.transfers);
    options.retry = retry;
    options.bandwidth = config
        .transfer
        .bandwidth
        .map(|r| BandwidthLimiter::new(r.bytes_per_second()));
    options.dry_run = plan_only;
    options.validate = !args.skip_validation;

    let progress = Progress::start(
        global.quiet || args.format == OutputFormat::Json,
        Duration::from_secs(10),
    );
    tracing::info!(destination = %dest_description, dry_run = plan_only, "sync started");
    let request = RunRequest {
        source,
        dest: dest.clone(),
        dest_description: dest_description.clone(),
        parallel: config.transfer.parallel,
        options,
        source_layers: Layers {
            retry: Some(retry),
            ..Layers::default()
        },
        registry,
        state: state.clone(),
    };
    // Notifications (docs/notifications.md): never for a dry run or an estimate.
    let notifiers = if plan_only {
        Notifiers::default()
    } else {
        Notifiers::from_config(&config)
    };
    notifiers
        .send(&Event::started("sync", &dest_description))
        .await;

    let report = run_sync(request, progress.clone()).await;
    progress.finish();

    let audit = AuditLog::in_base(&config.base_path);
    let mut pruned: Vec<(String, Result<PruneReport, String>)> = Vec::new();
    if args.prune && !plan_only {
        for unit in report.units.iter().filter(|u| u.ok()) {
            let Some(stanza) = &unit.stanza else { continue };
            let record = |action: &str, detail: &str| {
                audit.record("sync", action, json!({"cluster": unit.name, "stanza": stanza, "detail": detail, "destination": dest_description}));
            };
            let r = prune_stanza(&dest, stanza, false, &record)
                .await
                .map_err(|e| e.to_string());
            pruned.push((unit.name.clone(), r));
        }
    }
    let prune_failed = pruned.iter().any(|(_, r)| r.is_err());
    let ok = report.ok() && !prune_failed;
    let (files, bytes) = report.copied();

    if let (Some(state), Some(id)) = (&state, run_id) {
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failed
        };
        if let Err(e) = state.lock().expect("state").finish_run(
            id,
            outcome,
            files,
            bytes,
            report.failed() as u64,
        ) {
            tracing::error!(error = %e, "could not record the run");
        }
    }
    if !plan_only {
        audit.record(
            "sync",
            "run",
            json!({
                "result": if ok { "success" } else { "failed" },
                "destination": dest_description,
                "clusters": report.units.len(),
                "failed": report.failed(),
                "files": files,
                "bytes": bytes,
                "duration_seconds": report.duration.as_secs_f64(),
            }),
        );
    }

    // Tell people and monitors, then refresh the Prometheus textfile; neither can change the
    // run's result or exit code (docs/notifications.md, docs/metrics.md).
    if !plan_only {
        notifiers
            .send(&notify::sync_finished(&report, ok, &dest_description))
            .await;
        if let Err(e) = metrics::write_textfile(&config.base_path) {
            tracing::warn!(error = %e, "metrics textfile not written");
        }
    }

    let output = match args.format {
        OutputFormat::Json => render_json(
            &report,
            &pruned,
            &dest_description,
            plan_only,
            args.estimate_only,
        ),
        OutputFormat::Text => render_text(
            &report,
            &pruned,
            &dest_description,
            plan_only,
            args.estimate_only,
        ),
    };
    print_out(&output)?;
    if let Some(fatal) = &report.fatal {
        tracing::error!("{fatal}");
    }
    Ok(if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
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

fn render_text(
    report: &RunReport,
    pruned: &[(String, Result<PruneReport, String>)],
    dest: &str,
    plan_only: bool,
    estimate: bool,
) -> String {
    let mut out = String::new();
    if let Some(fatal) = &report.fatal {
        out.push_str(&format!("sync failed before any cluster: {fatal}\n"));
    }
    for u in &report.units {
        let stanza = u
            .stanza
            .as_deref()
            .map(|s| format!(" (stanza {s})"))
            .unwrap_or_default();
        match &u.outcome {
            Ok(r) if plan_only => {
                let verb = if estimate { "estimate" } else { "dry run" };
                let status = match &r.error {
                    None => "ok".to_string(),
                    Some(e) => format!("FAILED: {e}"),
                };
                out.push_str(&format!(
                    "{} {}{stanza}: {verb}: would copy {} files ({}), {} unchanged; {status}\n",
                    if r.ok() { "✓" } else { "✗" },
                    u.name,
                    r.planned_files,
                    human_bytes(r.planned_bytes),
                    r.unchanged_files
                ));
            }
            Ok(r) => {
                let status = match &r.error {
                    None => format!(
                        "{} files ({}) copied, {} unchanged, {} backups{}",
                        r.copied_files,
                        human_bytes(r.copied_bytes),
                        r.unchanged_files,
                        r.backups.len(),
                        r.backups
                            .last()
                            .map(|b| format!(", latest {b}"))
                            .unwrap_or_default()
                    ),
                    Some(e) => format!("FAILED: {e}"),
                };
                out.push_str(&format!(
                    "{} {}{stanza}: {status} ({:.1}s)\n",
                    if r.ok() { "✓" } else { "✗" },
                    u.name,
                    r.duration.as_secs_f64()
                ));
                for w in &r.warnings {
                    out.push_str(&format!("    warning: {w}\n"));
                }
            }
            Err(e) => out.push_str(&format!("✗ {}{stanza}: FAILED: {e}\n", u.name)),
        }
    }
    for (name, r) in pruned {
        match r {
            Ok(p) => out.push_str(&format!(
                "  pruned {name}: {} backups, {} WAL files, {} files ({})\n",
                p.backups.len(),
                p.wal_files,
                p.files,
                human_bytes(p.bytes)
            )),
            Err(e) => out.push_str(&format!("✗ prune {name}: FAILED: {e}\n")),
        }
    }
    if !report.skipped_replicas.is_empty() {
        out.push_str(&format!(
            "skipped replicas: {}\n",
            report.skipped_replicas.join(", ")
        ));
    }
    if !report.skipped_ignored.is_empty() {
        out.push_str(&format!(
            "skipped (CBOB_IGNORE_CLUSTERS): {}\n",
            report.skipped_ignored.join(", ")
        ));
    }
    let (files, bytes) = report.copied();
    let failed = report.failed() + usize::from(report.fatal.is_some());
    out.push_str(&format!(
        "{}: {} of {} ok, {} files ({}) copied to {dest} in {:.1}s{}\n",
        if plan_only { "plan" } else { "sync" },
        report.units.len() - report.failed(),
        report.units.len(),
        files,
        human_bytes(bytes),
        report.duration.as_secs_f64(),
        if failed > 0 {
            format!(", {failed} FAILED")
        } else {
            String::new()
        }
    ));
    out
}

fn render_json(
    report: &RunReport,
    pruned: &[(String, Result<PruneReport, String>)],
    dest: &str,
    plan_only: bool,
    estimate: bool,
) -> String {
    let units: Vec<_> = report
        .units
        .iter()
        .map(|u| {
            let mut v = json!({
                "name": u.name,
                "stanza": u.stanza,
                "ok": u.ok(),
                "error": u.error(),
            });
            if let Ok(r) = &u.outcome {
                let obj = v.as_object_mut().expect("object");
                obj.insert("planned_files".into(), json!(r.planned_files));
                obj.insert("planned_bytes".into(), json!(r.planned_bytes));
                obj.insert("copied_files".into(), json!(r.copied_files));
                obj.insert("copied_bytes".into(), json!(r.copied_bytes));
                obj.insert("unchanged_files".into(), json!(r.unchanged_files));
                obj.insert("unchanged_bytes".into(), json!(r.unchanged_bytes));
                obj.insert("repaired".into(), json!(r.repaired));
                obj.insert("backups".into(), json!(r.backups));
                obj.insert("warnings".into(), json!(r.warnings));
                obj.insert("duration_seconds".into(), json!(r.duration.as_secs_f64()));
            }
            if let Some((_, p)) = pruned.iter().find(|(n, _)| n == &u.name) {
                v.as_object_mut().expect("object").insert(
                    "pruned".into(),
                    match p {
                        Ok(p) => json!({"backups": p.backups, "wal_files": p.wal_files, "files": p.files, "bytes": p.bytes}),
                        Err(e) => json!({"error": e}),
                    },
                );
            }
            v
        })
        .collect();
    let (files, bytes) = report.copied();
    let doc = json!({
        "ok": report.ok() && pruned.iter().all(|(_, r)| r.is_ok()),
        "dry_run": plan_only,
        "estimate_only": estimate,
        "destination": dest,
        "duration_seconds": report.duration.as_secs_f64(),
        "copied_files": files,
        "copied_bytes": bytes,
        "failed": report.failed(),
        "fatal": report.fatal,
        "clusters": units,
        "skipped_replicas": report.skipped_replicas,
        "skipped_ignored": report.skipped_ignored,
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("json");
    s.push('\n');
    s
}

fn status(config: &Config, format: OutputFormat) -> Result<ExitCode, CliError> {
    let db_path = config.base_path.join("state.db");
    let statuses = if db_path.exists() {
        StateDb::open(&db_path)
            .and_then(|db| db.cluster_statuses(None))
            .map_err(|e| CliError::failure(e.to_string()))?
    } else {
        Vec::new()
    };
    let text = match format {
        OutputFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(&json!({ "clusters": statuses })).expect("json");
            s.push('\n');
            s
        }
        OutputFormat::Text => {
            if statuses.is_empty() {
                format!("no sync recorded yet in {}\n", db_path.display())
            } else {
                let mut out = String::from(
                    "CLUSTER        RESULT   LAST SUCCESS (UTC)     LAST BYTES  DEST SIZE   BACKUPS  DESTINATION\n",
                );
                for s in &statuses {
                    let when = s
                        .last_success_at
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "never".into());
                    out.push_str(&format!(
                        "{:<14} {:<8} {:<22} {:>10}  {:>10}  {:>7}  {}\n",
                        s.cluster,
                        s.last_result.as_deref().unwrap_or("-"),
                        when,
                        human_bytes(s.last_bytes),
                        human_bytes(s.repo_bytes),
                        s.backups,
                        s.destination
                    ));
                    if let Some(e) = &s.last_error {
                        out.push_str(&format!("    last error: {e}\n"));
                    }
                }
                out
            }
        }
    };
    print_out(&text)?;
    Ok(ExitCode::Success)
}
