//! `cbob replicate`: copy the primary destination to every replica of the replication YAML, with
//! the sync engine (same ordering and verification), and report on the replicas.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use cbob_core::audit::AuditLog;
use cbob_core::config::Config;
use cbob_core::lock::{LockError, RunLock};
use cbob_core::metrics;
use cbob_core::notify::{self, Event, Notifiers};
use cbob_core::replicate::{
    self, ReplicaConfig, ReplicaResult, ReplicateRequest, ReplicationConfig, TEMPLATE,
};
use cbob_core::state::{StateDb, now};
use cbob_core::storage::{CheckMode, DynProvider, ProviderRegistry};
use cbob_core::sync::{SyncObserver, discover_stanzas};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::context;
use crate::exit_code::{CliError, ExitCode};
use crate::providers;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "The replication file is CBOB_REPLICATION_CONFIG \
    (default $CBOB_BASE_PATH/config/replication.yaml); `cbob replicate init` writes a commented template.\n\
    The primary is replication.primary, or the sync destination when it is left out.")]
pub struct ReplicateArgs {
    #[command(subcommand)]
    pub command: ReplicateCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReplicateCommand {
    /// Copy the primary to every replica (or --replica NAME), verified, in pgBackRest's publish order
    Sync {
        /// Only this replica (repeatable)
        #[arg(long = "replica", value_name = "NAME")]
        replicas: Vec<String>,
        /// Replicas copied at once (default 2)
        #[arg(long, value_name = "N", default_value_t = 2)]
        parallel: usize,
        /// Validate each replica and compare it with the primary afterwards, whatever
        /// settings.verify_after_sync says
        #[arg(long)]
        verify: bool,
        /// Also remove from each replica the backups and WAL the primary has expired, in
        /// pgBackRest's expire order, once its copy succeeded (with --dry-run: list them)
        #[arg(long)]
        prune: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Each replica's last run, lag (time and objects behind the primary) and size
    Status {
        #[arg(long = "replica", value_name = "NAME")]
        replicas: Vec<String>,
        /// Skip listing the primary and replicas (no object lag, only the recorded state)
        #[arg(long)]
        no_compare: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Exit 1 when a replica's last success is older than --max-age or its last run failed
    Health {
        #[arg(long = "replica", value_name = "NAME")]
        replicas: Vec<String>,
        /// Oldest acceptable last success, in hours
        #[arg(long, value_name = "HOURS", default_value_t = 26)]
        max_age_hours: u64,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Validate each replica natively and compare its objects and sizes with the primary
    Verify {
        #[arg(long = "replica", value_name = "NAME")]
        replicas: Vec<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Print the effective replication configuration (secrets masked)
    Config,
    /// Write a commented template replication file (refuses to overwrite without --force)
    Init {
        #[arg(long)]
        force: bool,
    },
    /// Write, read back and delete a probe object on each replica; report each
    Test {
        #[arg(long = "replica", value_name = "NAME")]
        replicas: Vec<String>,
    },
}

pub fn run(global: &GlobalArgs, args: &ReplicateArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |_| {})?;
    match &args.command {
        ReplicateCommand::Init { force } => return init(&config, *force),
        ReplicateCommand::Config => return show_config(&config),
        _ => {}
    }
    let repl = load_replication(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        match &args.command {
            ReplicateCommand::Sync {
                replicas,
                parallel,
                verify,
                prune,
                format,
            } => {
                let run = SyncRun {
                    names: replicas,
                    parallel: *parallel,
                    verify: *verify,
                    prune: *prune,
                    format: *format,
                };
                sync(global, &config, &repl, run).await
            }
            ReplicateCommand::Status {
                replicas,
                no_compare,
                format,
            } => status(&config, &repl, replicas, !*no_compare, *format).await,
            ReplicateCommand::Health {
                replicas,
                max_age_hours,
                format,
            } => health(&config, &repl, replicas, *max_age_hours, *format),
            ReplicateCommand::Verify { replicas, format } => {
                verify(&config, &repl, replicas, *format).await
            }
            ReplicateCommand::Test { replicas } => probe(&repl, replicas).await,
            ReplicateCommand::Config | ReplicateCommand::Init { .. } => {
                unreachable!("handled above")
            }
        }
    })
}

fn load_replication(config: &Config) -> Result<ReplicationConfig, CliError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let repl = replicate::load(&config.replication_config, &env)
        .map_err(|e| CliError::usage(e.to_string()))?;
    for w in &repl.warnings {
        tracing::warn!(path = %w.path, "{}", w.message);
    }
    Ok(repl)
}

fn selected<'a>(
    repl: &'a ReplicationConfig,
    names: &[String],
) -> Result<Vec<&'a ReplicaConfig>, CliError> {
    for n in names {
        if !repl.replicas.iter().any(|r| &r.name == n) {
            let known: Vec<&str> = repl.replicas.iter().map(|r| r.name.as_str()).collect();
            return Err(CliError::usage(format!(
                "no replica named {n:?} in {}; replicas: {}",
                repl.path.display(),
                known.join(", ")
            )));
        }
    }
    Ok(repl
        .replicas
        .iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
        .collect())
}

async fn primary(
    config: &Config,
    repl: &ReplicationConfig,
    registry: &ProviderRegistry,
) -> Result<DynProvider, CliError> {
    let spec = match &repl.primary {
        Some(p) => p
            .provider_spec()
            .map_err(|e| CliError::usage(format!("replication.primary: {e}")))?,
        None => config.destination_spec(),
    };
    Ok(registry.build(&spec).await?)
}

fn open_state(config: &Config) -> Result<StateDb, CliError> {
    StateDb::open_in(&config.base_path).map_err(|e| CliError::failure(e.to_string()))
}

/// The flags of `replicate sync`.
struct SyncRun<'a> {
    names: &'a [String],
    parallel: usize,
    verify: bool,
    prune: bool,
    format: OutputFormat,
}

async fn sync(
    global: &GlobalArgs,
    config: &Config,
    repl: &ReplicationConfig,
    run: SyncRun<'_>,
) -> Result<ExitCode, CliError> {
    let SyncRun {
        names,
        parallel,
        verify,
        prune,
        format,
    } = run;
    let registry = Arc::new(providers::registry());
    let primary = primary(config, repl, &registry).await?;
    let primary_description = primary.describe();
    let replicas: Vec<ReplicaConfig> = selected(repl, names)?.into_iter().cloned().collect();
    let _lock = if config.no_lock || config.dry_run {
        None
    } else {
        Some(
            RunLock::acquire(&config.base_path, "replicate", &primary_description).map_err(
                |e| match e {
                    LockError::Held { .. } => CliError::new(ExitCode::Locked, e.to_string()),
                    LockError::Io { .. } => CliError::new(ExitCode::Permission, e.to_string()),
                },
            )?,
        )
    };
    let state = if config.dry_run {
        None
    } else {
        Some(Arc::new(Mutex::new(open_state(config)?)))
    };
    let run_id = match &state {
        Some(s) => s
            .lock()
            .expect("state")
            .start_run("replicate", Some(&primary_description))
            .ok(),
        None => None,
    };
    // Notifications (docs/notifications.md): never for a dry run.
    let mut notifiers = if config.dry_run {
        Notifiers::default()
    } else {
        Notifiers::from_config(config)
    };
    // The replication file's credentials are not configuration keys: scrub them too.
    for store in repl
        .primary
        .iter()
        .chain(repl.replicas.iter().map(|r| &r.store))
    {
        for secret in [&store.access_key, &store.secret_key, &store.sas_token]
            .into_iter()
            .flatten()
        {
            if !secret.is_empty() {
                notifiers.add_secret(secret.expose());
            }
        }
    }
    notifiers
        .send(&Event::started("replicate", &primary_description))
        .await;
    let progress = ReplicaProgress::start(
        global.quiet || format == OutputFormat::Json,
        Duration::from_secs(10),
    );
    tracing::info!(primary = %primary_description, replicas = replicas.len(), dry_run = config.dry_run, "replication started");
    let started = Instant::now();
    let results = replicate::replicate(
        ReplicateRequest {
            primary: primary.clone(),
            replicas,
            settings: repl.settings.clone(),
            registry,
            parallel,
            dry_run: config.dry_run,
            verify: verify || repl.settings.verify_after_sync,
            prune,
            state: state.clone(),
        },
        progress.clone(),
    )
    .await;
    let elapsed = started.elapsed();
    progress.finish();
    let ok = results.iter().all(|r| r.ok());
    let (files, bytes) = results.iter().fold((0, 0), |(f, b), r| {
        let (rf, rb) = r.copied();
        (f + rf, b + rb)
    });
    if let (Some(state), Some(id)) = (&state, run_id) {
        let failed = results.iter().filter(|r| !r.ok()).count() as u64;
        let outcome = if ok {
            cbob_core::state::Outcome::Success
        } else {
            cbob_core::state::Outcome::Failed
        };
        if let Err(e) = state
            .lock()
            .expect("state")
            .finish_run(id, outcome, files, bytes, failed)
        {
            tracing::error!(error = %e, "could not record the run");
        }
    }
    if !config.dry_run {
        AuditLog::in_base(&config.base_path).record(
            "replicate",
            "run",
            json!({
                "result": if ok { "success" } else { "failed" },
                "primary": primary_description,
                "replicas": results.iter().map(|r| json!({"name": r.name, "ok": r.ok()})).collect::<Vec<_>>(),
                "files": files,
                "bytes": bytes,
                "duration_seconds": elapsed.as_secs_f64(),
            }),
        );
        // Tell people, then refresh the Prometheus textfile; neither can change the run's
        // result or exit code (docs/notifications.md, docs/metrics.md).
        if ok || repl.settings.alert_on_failure {
            notifiers
                .send(&notify::replicate_finished(
                    &results,
                    ok,
                    &primary_description,
                    elapsed,
                ))
                .await;
        } else {
            tracing::info!(
                "settings.alert_on_failure is false: no notification of this failed replication"
            );
        }
        if let Err(e) = metrics::write_textfile(&config.base_path) {
            tracing::warn!(error = %e, "metrics textfile not written");
        }
    }
    let out = match format {
        OutputFormat::Json => {
            render_json(&results, ok, config.dry_run, &primary_description, elapsed)
        }
        OutputFormat::Text => render_text(&results, config.dry_run, &primary_description, elapsed),
    };
    print_out(&out)?;
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

/// How the objects got there: `server-side`, `streamed`, or both with the service's refusal.
fn copy_mode(r: &ReplicaResult) -> &'static str {
    match (r.server_side, r.copies.streamed) {
        (false, _) => "streamed",
        (true, 0) => "server-side",
        (true, _) if r.copies.server_side == 0 => "streamed (server-side copy refused)",
        (true, _) => "server-side, partly streamed (refused)",
    }
}

/// One line per stanza `--prune` removed something from (or would, in a dry run).
fn pruned_lines(r: &ReplicaResult, dry_run: bool) -> String {
    let verb = if dry_run { "would prune" } else { "pruned" };
    r.pruned
        .iter()
        .filter(|(_, p)| !p.backups.is_empty() || p.wal_files > 0)
        .map(|(stanza, p)| {
            let backups = if p.backups.is_empty() {
                "no backup".to_string()
            } else {
                format!("backups {}", p.backups.join(", "))
            };
            format!(
                "    {verb} stanza {stanza}: {backups}, {} WAL files, {} files ({})\n",
                p.wal_files,
                p.files,
                human_bytes(p.bytes)
            )
        })
        .collect()
}

/// The per-replica summary for people; the last line names every failed replica.
fn render_text(
    results: &[ReplicaResult],
    dry_run: bool,
    primary: &str,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    for r in results {
        let (f, b) = r.copied();
        let (uf, _) = r.unchanged();
        if !r.ok() {
            out.push_str(&format!("✗ {} ({}): FAILED\n", r.name, r.destination));
            for e in r.errors() {
                out.push_str(&format!("    {e}\n"));
            }
            continue;
        }
        if dry_run {
            let (pf, pb) = r.planned();
            out.push_str(&format!(
                "✓ {} ({}): dry run: would copy {pf} files ({}), {uf} unchanged, {} stanzas\n",
                r.name,
                r.destination,
                human_bytes(pb),
                r.stanzas.len()
            ));
            out.push_str(&pruned_lines(r, dry_run));
            continue;
        }
        let behind = match r.objects_behind() {
            Some(n) => format!(", verified: {n} behind the primary"),
            None => String::new(),
        };
        out.push_str(&format!(
            "✓ {} ({}): {} stanzas, {f} files ({}) copied ({}), {uf} unchanged{behind} ({:.1}s)\n",
            r.name,
            r.destination,
            r.stanzas.len(),
            human_bytes(b),
            copy_mode(r),
            r.duration.as_secs_f64()
        ));
        if let Some(why) = &r.copies.refusal {
            out.push_str(&format!("    server-side copy refused: {why}\n"));
        }
        out.push_str(&pruned_lines(r, dry_run));
        for s in &r.stanzas {
            for w in &s.warnings {
                out.push_str(&format!("    warning: stanza {}: {w}\n", s.stanza));
            }
        }
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.name.as_str())
        .collect();
    let (files, bytes) = results.iter().fold((0, 0), |(f, b), r| {
        let (rf, rb) = r.copied();
        (f + rf, b + rb)
    });
    out.push_str(&format!(
        "{}: {} of {} replicas ok from {primary}, {files} files ({}) copied in {:.1}s{}\n",
        if dry_run { "plan" } else { "replicate" },
        results.len() - failed.len(),
        results.len(),
        human_bytes(bytes),
        elapsed.as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; FAILED: {}", failed.join(", "))
        }
    ));
    out
}

/// The stable JSON summary (docs/replicate.md).
fn render_json(
    results: &[ReplicaResult],
    ok: bool,
    dry_run: bool,
    primary: &str,
    elapsed: Duration,
) -> String {
    let (files, bytes) = results.iter().fold((0, 0), |(f, b), r| {
        let (rf, rb) = r.copied();
        (f + rf, b + rb)
    });
    let doc = json!({
        "ok": ok,
        "dry_run": dry_run,
        "primary": primary,
        "duration_seconds": elapsed.as_secs_f64(),
        "copied_files": files,
        "copied_bytes": bytes,
        "failed": results.iter().filter(|r| !r.ok()).map(|r| r.name.clone()).collect::<Vec<_>>(),
        "replicas": results.iter().map(|r| {
            let (f, b) = r.copied();
            let (uf, ub) = r.unchanged();
            let (pf, pb) = r.planned();
            json!({
                "name": r.name,
                "destination": r.destination,
                "ok": r.ok(),
                "errors": r.errors(),
                "stanzas": r.stanzas.iter().map(|s| s.stanza.clone()).collect::<Vec<_>>(),
                "planned_files": pf,
                "planned_bytes": pb,
                "copied_files": f,
                "copied_bytes": b,
                "unchanged_files": uf,
                "unchanged_bytes": ub,
                "server_side": r.server_side,
                "server_side_copies": r.copies.server_side,
                "streamed_after_refusal": r.copies.streamed,
                "copy_refusal": r.copies.refusal,
                "objects_behind": r.objects_behind(),
                "pruned": r.pruned.iter().map(|(stanza, p)| json!({
                    "stanza": stanza,
                    "backups": p.backups,
                    "wal_files": p.wal_files,
                    "files": p.files,
                    "bytes": p.bytes,
                })).collect::<Vec<_>>(),
                "duration_seconds": r.duration.as_secs_f64(),
                "comparison": r.comparison,
            })
        }).collect::<Vec<_>>(),
    });
    format!("{}\n", serde_json::to_string_pretty(&doc).expect("json"))
}

/// One replica's counters (and bar, on a terminal).
#[derive(Default)]
struct ReplicaCounters {
    planned_files: AtomicU64,
    planned_bytes: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    bar: Option<ProgressBar>,
}

/// Progress of a replication, per replica: a bar each on a terminal, log lines every interval
/// otherwise (cron, systemd, CI), nothing when quiet or printing JSON.
struct ReplicaProgress {
    multi: Option<MultiProgress>,
    quiet: bool,
    started: Instant,
    replicas: Mutex<BTreeMap<String, Arc<ReplicaCounters>>>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ReplicaProgress {
    fn start(quiet: bool, interval: Duration) -> Arc<Self> {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let this = Arc::new(Self {
            multi,
            quiet,
            started: Instant::now(),
            replicas: Mutex::new(BTreeMap::new()),
            ticker: Mutex::new(None),
        });
        if !quiet && this.multi.is_none() {
            let me = Arc::downgrade(&this);
            let ticker = tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(me) = me.upgrade() else { break };
                    me.log_lines();
                }
            });
            *this.ticker.lock().expect("ticker") = Some(ticker);
        }
        this
    }

    /// The counters of the replica a job name (`replica/stanza`) belongs to.
    fn counters(&self, job: &str) -> Arc<ReplicaCounters> {
        let replica = job.split_once('/').map_or(job, |(r, _)| r);
        let mut map = self.replicas.lock().expect("progress");
        map.entry(replica.to_string())
            .or_insert_with(|| {
                let bar = self.multi.as_ref().map(|m| {
                    let bar = m.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {prefix:<16} [{elapsed_precise}] {bar:25} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_prefix(replica.to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bar
                });
                Arc::new(ReplicaCounters {
                    bar,
                    ..ReplicaCounters::default()
                })
            })
            .clone()
    }

    fn log_lines(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        for (name, c) in self.replicas.lock().expect("progress").iter() {
            let bytes = c.bytes.load(Ordering::Relaxed);
            tracing::info!(
                replica = %name,
                files = c.files.load(Ordering::Relaxed),
                planned_files = c.planned_files.load(Ordering::Relaxed),
                bytes,
                planned_bytes = c.planned_bytes.load(Ordering::Relaxed),
                bytes_per_sec = (bytes as f64 / secs) as u64,
                "replication progress"
            );
        }
    }

    fn finish(&self) {
        for c in self.replicas.lock().expect("progress").values() {
            if let Some(bar) = &c.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(t) = self.ticker.lock().expect("ticker").take() {
            t.abort();
        }
    }
}

impl SyncObserver for ReplicaProgress {
    fn planned(&self, stanza: &str, files: u64, bytes: u64) {
        if self.quiet {
            return;
        }
        let c = self.counters(stanza);
        // Called as the listing goes on, with what it added to the plan.
        let planned_files = c.planned_files.fetch_add(files, Ordering::Relaxed) + files;
        let total = c.planned_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        match &c.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_message(format!("{stanza}: {planned_files} files to copy"));
            }
            None => tracing::debug!(job = stanza, files, bytes, "planned"),
        }
    }

    fn bytes(&self, stanza: &str, n: u64) {
        if self.quiet {
            return;
        }
        let c = self.counters(stanza);
        c.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &c.bar {
            bar.inc(n);
        }
    }

    fn file_done(&self, stanza: &str, _key: &str, _bytes: u64) {
        if self.quiet {
            return;
        }
        let c = self.counters(stanza);
        let done = c.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &c.bar {
            let planned = c.planned_files.load(Ordering::Relaxed);
            bar.set_message(format!("{done}/{planned} files"));
        }
    }

    fn phase(&self, stanza: &str, phase: &str) {
        tracing::debug!(job = stanza, phase, "phase");
    }

    fn warning(&self, stanza: &str, message: &str) {
        let bar = self.counters(stanza).bar.clone();
        match bar {
            Some(bar) => bar.suspend(|| tracing::warn!(job = stanza, "{message}")),
            None => tracing::warn!(job = stanza, "{message}"),
        }
    }
}

async fn status(
    config: &Config,
    repl: &ReplicationConfig,
    names: &[String],
    with_compare: bool,
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    let db = open_state(config)?;
    let recorded = db
        .replica_statuses()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let registry = providers::registry();
    let (primary, stanzas) = if with_compare {
        let p = primary(config, repl, &registry).await?;
        let s = discover_stanzas(&p)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        (Some(p), s)
    } else {
        (None, Vec::new())
    };
    let mut rows = Vec::new();
    for r in selected(repl, names)? {
        let rec = recorded.iter().find(|s| s.name == r.name);
        let mut behind: Option<serde_json::Value> = None;
        if let Some(p) = &primary {
            let cmp = async {
                let spec = r.store.provider_spec()?;
                let dest = registry.build(&spec).await.map_err(|e| e.to_string())?;
                replicate::compare(p, &dest, &stanzas)
                    .await
                    .map_err(|e| e.to_string())
            };
            behind = Some(match cmp.await {
                Ok(c) => {
                    // The lag just measured is the freshest there is: metrics show it too.
                    if !config.dry_run
                        && let Err(e) = db.record_replica_lag(&r.name, c.behind())
                    {
                        tracing::warn!(replica = %r.name, error = %e, "could not record the lag");
                    }
                    json!({"objects_behind": c.behind(), "primary_objects": c.primary_objects,
                           "replica_objects": c.replica_objects, "replica_bytes": c.replica_bytes})
                }
                Err(e) => json!({"error": e}),
            });
        }
        rows.push(json!({
            "name": r.name,
            "provider": r.store.provider,
            "region": r.store.region,
            "destination": r.store.provider_spec().map(|s| s.describe()).unwrap_or_default(),
            "last_result": rec.and_then(|s| s.last_result.clone()),
            "last_success_at": rec.and_then(|s| s.last_success_at),
            "lag_seconds": rec.and_then(|s| s.last_success_at).map(|t| now() - t),
            "last_error": rec.and_then(|s| s.last_error.clone()),
            "last_attempt_at": rec.and_then(|s| s.last_attempt_at),
            "last_files": rec.map(|s| s.last_files),
            "last_bytes": rec.map(|s| s.last_bytes),
            "last_duration_seconds": rec.map(|s| s.last_duration_ms as f64 / 1000.0),
            "repo_files": rec.map(|s| s.repo_files),
            "repo_bytes": rec.map(|s| s.repo_bytes),
            "lag": behind,
        }));
    }
    let out = match format {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(
                &json!({"primary": primary.as_ref().map(|p| p.describe()), "replicas": rows})
            )
            .expect("json")
        ),
        OutputFormat::Text => {
            let mut out = format!(
                "primary: {}\nNAME             RESULT   LAST SUCCESS          LAG        BEHIND  DESTINATION\n",
                primary
                    .as_ref()
                    .map(|p| p.describe())
                    .unwrap_or_else(|| "(not listed)".into())
            );
            for r in &rows {
                let lag = r["lag_seconds"]
                    .as_i64()
                    .map(human_age)
                    .unwrap_or_else(|| "never".into());
                let when = r["last_success_at"]
                    .as_i64()
                    .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into());
                let behind = match &r["lag"] {
                    serde_json::Value::Null => "-".to_string(),
                    v => v["objects_behind"]
                        .as_u64()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "error".into()),
                };
                out.push_str(&format!(
                    "{:<16} {:<8} {:<21} {:<10} {:>6}  {}\n",
                    r["name"].as_str().unwrap_or(""),
                    r["last_result"].as_str().unwrap_or("-"),
                    when,
                    lag,
                    behind,
                    r["destination"].as_str().unwrap_or("")
                ));
                if let Some(e) = r["last_error"].as_str() {
                    out.push_str(&format!("    last error: {e}\n"));
                }
                if let Some(e) = r["lag"]["error"].as_str() {
                    out.push_str(&format!("    cannot compare: {e}\n"));
                }
            }
            out
        }
    };
    print_out(&out)?;
    Ok(ExitCode::Success)
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn health(
    config: &Config,
    repl: &ReplicationConfig,
    names: &[String],
    max_age_hours: u64,
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    let recorded = open_state(config)?
        .replica_statuses()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let limit = (max_age_hours * 3600) as i64;
    let mut rows = Vec::new();
    let mut healthy = true;
    for r in selected(repl, names)? {
        let rec = recorded.iter().find(|s| s.name == r.name);
        let (state, reason) = match rec {
            None => ("unknown", "never replicated".to_string()),
            Some(s) if s.last_result.as_deref() == Some("failed") => (
                "failed",
                format!(
                    "last run failed: {}",
                    s.last_error.clone().unwrap_or_default()
                ),
            ),
            Some(s) => match s.last_success_at {
                None => ("unknown", "no successful run".to_string()),
                Some(t) if now() - t > limit => (
                    "stale",
                    format!(
                        "last success {} ago, more than {max_age_hours}h",
                        human_age(now() - t)
                    ),
                ),
                Some(t) => (
                    "healthy",
                    format!("last success {} ago", human_age(now() - t)),
                ),
            },
        };
        healthy &= state == "healthy";
        rows.push((r.name.clone(), state, reason));
    }
    let out = match format {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({
                "healthy": healthy,
                "max_age_hours": max_age_hours,
                "replicas": rows.iter().map(|(n, s, r)| json!({"name": n, "state": s, "reason": r})).collect::<Vec<_>>(),
            }))
            .expect("json")
        ),
        OutputFormat::Text => {
            let mut out = String::new();
            for (n, s, r) in &rows {
                out.push_str(&format!("{} {n}: {s} ({r})\n", if *s == "healthy" { "✓" } else { "✗" }));
            }
            out
        }
    };
    print_out(&out)?;
    Ok(if healthy {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

async fn verify(
    config: &Config,
    repl: &ReplicationConfig,
    names: &[String],
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    let registry = providers::registry();
    let primary = primary(config, repl, &registry).await?;
    let stanzas = discover_stanzas(&primary)
        .await
        .map_err(|e| CliError::failure(e.to_string()))?;
    // Lag is recorded only for replicas the state already knows (never under --dry-run).
    let db = if config.dry_run {
        None
    } else {
        Some(open_state(config)?)
    };
    let mut ok = true;
    let mut rows = Vec::new();
    for r in selected(repl, names)? {
        let outcome: Result<serde_json::Value, String> = async {
            let spec = r.store.provider_spec()?;
            let dest = registry.build(&spec).await.map_err(|e| e.to_string())?;
            let mut problems = Vec::new();
            for stanza in &stanzas {
                if let Err(e) = cbob_core::sync::validate_destination(&dest, stanza).await {
                    problems.push(format!("stanza {stanza}: {e}"));
                }
            }
            let c = replicate::compare(&primary, &dest, &stanzas)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(db) = &db
                && let Err(e) = db.record_replica_lag(&r.name, c.behind())
            {
                tracing::warn!(replica = %r.name, error = %e, "could not record the lag");
            }
            for k in c.missing.iter().take(20) {
                problems.push(format!("missing at the replica: {k}"));
            }
            for k in c.different.iter().take(20) {
                problems.push(format!("size differs from the primary: {k}"));
            }
            Ok(json!({"problems": problems, "comparison": c}))
        }
        .await;
        let (good, detail) = match outcome {
            Ok(v) => (v["problems"].as_array().is_some_and(|a| a.is_empty()), v),
            Err(e) => (false, json!({"problems": [e]})),
        };
        ok &= good;
        rows.push(json!({"name": r.name, "ok": good, "detail": detail}));
    }
    let out = match format {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({"ok": ok, "replicas": rows})).expect("json")
        ),
        OutputFormat::Text => {
            let mut out = String::new();
            for r in &rows {
                let good = r["ok"].as_bool().unwrap_or(false);
                out.push_str(&format!(
                    "{} {}: {}\n",
                    if good { "✓" } else { "✗" },
                    r["name"].as_str().unwrap_or(""),
                    if good {
                        "valid and identical to the primary"
                    } else {
                        "PROBLEMS"
                    }
                ));
                for p in r["detail"]["problems"].as_array().into_iter().flatten() {
                    out.push_str(&format!("    {}\n", p.as_str().unwrap_or("")));
                }
            }
            out
        }
    };
    print_out(&out)?;
    Ok(if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

async fn probe(repl: &ReplicationConfig, names: &[String]) -> Result<ExitCode, CliError> {
    let registry = providers::registry();
    let mut ok = true;
    let mut out = String::new();
    for r in selected(repl, names)? {
        let result: Result<String, String> = async {
            let spec = r.store.provider_spec()?;
            let p = registry.build(&spec).await.map_err(|e| e.to_string())?;
            p.check(CheckMode::ReadWrite)
                .await
                .map_err(|e| e.to_string())?;
            Ok(p.describe())
        }
        .await;
        match result {
            Ok(d) => out.push_str(&format!(
                "✓ {}: wrote, read back and deleted a probe object on {d}\n",
                r.name
            )),
            Err(e) => {
                ok = false;
                out.push_str(&format!("✗ {}: {e}\n", r.name));
            }
        }
    }
    print_out(&out)?;
    Ok(if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

fn show_config(config: &Config) -> Result<ExitCode, CliError> {
    let repl = load_replication(config)?;
    let mut out = format!("# {}\n", repl.path.display());
    out.push_str(&format!(
        "primary: {}\n",
        match &repl.primary {
            Some(p) => p
                .provider_spec()
                .map(|s| s.describe())
                .unwrap_or_else(|e| format!("invalid: {e}")),
            None => format!(
                "{} (the sync destination)",
                config.destination_spec().describe()
            ),
        }
    ));
    out.push_str("replicas:\n");
    for r in &repl.replicas {
        let s = &r.store;
        out.push_str(&format!(
            "  - name: {}\n    provider: {}\n    destination: {}\n    region: {}\n    storage_class: {}\n    \
             access_key: {}\n    secret_key: {}\n    sas_token: {}\n",
            r.name,
            s.provider,
            s.provider_spec().map(|x| x.describe()).unwrap_or_default(),
            s.region.as_deref().unwrap_or("-"),
            s.storage_class.as_deref().unwrap_or("-"),
            mask(&s.access_key),
            mask(&s.secret_key),
            mask(&s.sas_token),
        ));
    }
    let st = &repl.settings;
    out.push_str(&format!(
        "settings:\n  bandwidth_limit: {}\n  parallel_transfers: {}\n  verify_after_sync: {}\n  alert_on_failure: {}\n  \
         retry_attempts: {}\n  retry_delay: {}\n  server_side_copy: {}\n",
        st.bandwidth_limit
            .map(|r| format!("{} B/s", r.bytes_per_second()))
            .unwrap_or_else(|| "unlimited".into()),
        st.parallel_transfers,
        st.verify_after_sync,
        st.alert_on_failure,
        st.retry_attempts,
        st.retry_delay.as_secs(),
        st.server_side_copy
    ));
    for w in &repl.warnings {
        out.push_str(&format!("# {w}\n"));
    }
    print_out(&out)?;
    Ok(ExitCode::Success)
}

fn mask(s: &Option<cbob_core::Secret>) -> String {
    match s {
        Some(s) => s.to_string(),
        None => "-".into(),
    }
}

fn init(config: &Config, force: bool) -> Result<ExitCode, CliError> {
    let path = &config.replication_config;
    if path.exists() && !force {
        return Err(CliError::usage(format!(
            "{} already exists; use --force to overwrite it",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failure(format!("creating {}: {e}", dir.display())))?;
    }
    std::fs::write(path, TEMPLATE)
        .map_err(|e| CliError::failure(format!("writing {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    print_out(&format!(
        "wrote {}; edit it, then `cbob replicate test`\n",
        path.display()
    ))?;
    Ok(ExitCode::Success)
}
