//! `cbob verify`: checks the destination repository without restoring it (SPEC §6): info files
//! and copies, manifests, every file against pgBackRest's checksums, WAL continuity and each
//! backup's WAL range, on any provider. Exit 1 on any problem. Also the helpers `info` and
//! `expire` share: opening the destination and choosing stanzas.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use cbob_core::config::{Config, ConfigSources};
use cbob_core::layers::{BandwidthLimiter, Direction, Layers, RetryPolicy};
use cbob_core::state::{Outcome, StateDb};
use cbob_core::storage::{CheckMode, DynProvider, StorageErrorKind};
use cbob_core::sync::{discover_stanzas, validate_stanza_name};
use cbob_core::verify::{
    BackupStatus, FileState, StanzaVerification, VerifyError, VerifyOptions, verify_stanza,
};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::commands::sync::OutputFormat;
use crate::context;
use crate::exit_code::{CliError, ExitCode};
use crate::progress::Progress;
use crate::providers;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cbob verify                           # every stanza at the destination\n  \
    cbob verify --stanza abc123 --format json\n\n\
    Finds what `pgbackrest verify` 2.45 misses: a backup directory that is gone while backup.info \
    still lists it, WAL missing from a backup's range, gaps in the archive. Exit 1 on any problem.")]
pub struct VerifyArgs {
    /// Verify only this stanza (repeatable); default: every stanza at the destination.
    #[arg(long = "stanza", value_name = "STANZA")]
    pub stanzas: Vec<String>,
    /// Objects read at once (CBOB_TRANSFERS, default 16).
    #[arg(long, value_name = "N")]
    pub transfers: Option<usize>,
    /// Total read bandwidth cap, e.g. 10MB/s (CBOB_BANDWIDTH; default unlimited).
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// Report format; json is stable and documented in docs/verify-info-expire.md.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

impl VerifyArgs {
    fn apply(&self, sources: &mut ConfigSources) {
        if let Some(n) = self.transfers {
            sources.set_flag("CBOB_TRANSFERS", n.to_string(), "--transfers");
        }
        if let Some(r) = &self.bandwidth {
            sources.set_flag("CBOB_BANDWIDTH", r.clone(), "--bandwidth");
        }
    }
}

/// The destination of the configuration, checked readable, with retry (and a read bandwidth
/// cap when given) around it.
pub(crate) struct Destination {
    pub provider: DynProvider,
    pub description: String,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))
}

/// Builds the destination provider (`deferred`: local writes made durable by barriers, one
/// `syncfs` each, instead of an fsync per file) and proves it is readable.
pub(crate) async fn open_destination(
    config: &Config,
    bandwidth: Option<Arc<BandwidthLimiter>>,
    deferred: bool,
) -> Result<Destination, CliError> {
    let mut spec = config.destination_spec();
    if deferred && spec.kind == "local" {
        spec.options.insert("durability".into(), "deferred".into());
    }
    let description = spec.describe();
    let provider = providers::registry().build(&spec).await?;
    provider.check(CheckMode::Read).await.map_err(|e| {
        let code = match e.kind() {
            StorageErrorKind::PermissionDenied => ExitCode::Permission,
            StorageErrorKind::Config => ExitCode::Usage,
            _ => ExitCode::Failure,
        };
        let hint = if spec.kind == "local" {
            "check CBOB_TARGET_PATH (TOML target_path)"
        } else {
            "check CBOB_DEST_TYPE and the CBOB_DEST_* settings (`cbob config show`)"
        };
        CliError::new(
            code,
            format!("destination {description} is not readable: {e}; {hint}"),
        )
    })?;
    let provider = Layers {
        retry: Some(RetryPolicy::new(
            config.transfer.retry_count,
            config.transfer.retry_delay,
        )),
        bandwidth: bandwidth.map(|b| (b, Direction::Read)),
        ..Layers::default()
    }
    .apply(provider);
    Ok(Destination {
        provider,
        description,
    })
}

/// The stanzas named on the command line (validated), else every stanza at the destination.
pub(crate) async fn select_stanzas(
    dest: &Destination,
    named: &[String],
) -> Result<Vec<String>, CliError> {
    if !named.is_empty() {
        let mut out = Vec::new();
        for s in named {
            validate_stanza_name(s).map_err(|e| CliError::usage(format!("--stanza: {e}")))?;
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        return Ok(out);
    }
    let found = discover_stanzas(&dest.provider).await.map_err(|e| {
        CliError::failure(format!(
            "cannot list the stanzas at {}: {e}",
            dest.description
        ))
    })?;
    if found.is_empty() {
        return Err(CliError::failure(format!(
            "no stanza at {}: nothing matches backup/<stanza>/backup.info; run `cbob sync` first, or check the \
             destination settings (`cbob config show`)",
            dest.description
        )));
    }
    Ok(found)
}

/// `12.3 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
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

/// Opens the state database when it exists (never creating one just to read it).
pub(crate) fn open_state_if_present(config: &Config) -> Result<Option<StateDb>, CliError> {
    let path = config.base_path.join("state.db");
    if !path.exists() {
        return Ok(None);
    }
    StateDb::open(&path)
        .map(Some)
        .map_err(|e| CliError::failure(e.to_string()))
}

pub fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |s| args.apply(s))?;
    runtime()?.block_on(verify(global, args, config))
}

async fn verify(
    global: &GlobalArgs,
    args: &VerifyArgs,
    config: Config,
) -> Result<ExitCode, CliError> {
    let bandwidth = config
        .transfer
        .bandwidth
        .map(|r| BandwidthLimiter::new(r.bytes_per_second()));
    let dest = open_destination(&config, bandwidth, false).await?;
    let stanzas = select_stanzas(&dest, &args.stanzas).await?;
    // Verify writes nothing to the destination; --dry-run only keeps it out of the state database.
    let state = if config.dry_run {
        None
    } else {
        Some(Mutex::new(
            StateDb::open_in(&config.base_path).map_err(|e| CliError::failure(e.to_string()))?,
        ))
    };
    let run_id = match &state {
        Some(s) => Some(
            s.lock()
                .expect("state")
                .start_run("verify", Some(&dest.description))
                .map_err(|e| CliError::failure(e.to_string()))?,
        ),
        None => None,
    };
    let progress = Progress::start(
        global.quiet || args.format == OutputFormat::Json,
        Duration::from_secs(10),
    );
    let mut options = VerifyOptions::new(config.transfer.transfers);
    options.observer = progress.clone();

    let started = Instant::now();
    let mut results: Vec<(String, Result<StanzaVerification, String>)> = Vec::new();
    for stanza in &stanzas {
        tracing::info!(stanza = %stanza, destination = %dest.description, "verify started");
        let t = Instant::now();
        let r = verify_stanza(&dest.provider, stanza, &options).await;
        // A stanza that is not there (a typo in --stanza) gets no record of its own.
        let exists = !matches!(r, Err(VerifyError::NoSuchStanza { .. }));
        let r = r.map_err(|e| e.to_string());
        if let (Some(s), true) = (&state, exists) {
            let (outcome, detail) = match &r {
                Ok(v) => (
                    if v.ok {
                        Outcome::Success
                    } else {
                        Outcome::Failed
                    },
                    summary_json(v),
                ),
                Err(e) => (Outcome::Failed, json!({ "error": e })),
            };
            if let Err(e) = s.lock().expect("state").record_check(
                stanza,
                &dest.description,
                "verify",
                outcome,
                t.elapsed(),
                Some(&detail.to_string()),
            ) {
                tracing::error!(error = %e, "could not record the verify result");
            }
        }
        results.push((stanza.clone(), r));
    }
    progress.finish();

    let ok = results.iter().all(|(_, r)| r.as_ref().is_ok_and(|v| v.ok));
    let bytes: u64 = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|v| v.bytes_read)
        .sum();
    let objects: u64 = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|v| v.objects_read)
        .sum();
    let failed = results
        .iter()
        .filter(|(_, r)| !r.as_ref().is_ok_and(|v| v.ok))
        .count() as u64;
    if let (Some(s), Some(id)) = (&state, run_id) {
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failed
        };
        if let Err(e) = s
            .lock()
            .expect("state")
            .finish_run(id, outcome, objects, bytes, failed)
        {
            tracing::error!(error = %e, "could not record the run");
        }
    }
    let output = match args.format {
        OutputFormat::Json => {
            let doc = json!({
                "ok": ok,
                "destination": dest.description,
                "duration_seconds": started.elapsed().as_secs_f64(),
                "stanzas": results.iter().filter_map(|(_, r)| r.as_ref().ok()).collect::<Vec<_>>(),
                "errors": results
                    .iter()
                    .filter_map(|(s, r)| r.as_ref().err().map(|e| json!({"stanza": s, "error": e})))
                    .collect::<Vec<_>>(),
            });
            let mut s = serde_json::to_string_pretty(&doc).expect("json");
            s.push('\n');
            s
        }
        OutputFormat::Text => render_text(&results, &dest.description, started.elapsed()),
    };
    print_out(&output)?;
    Ok(if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// What the state database keeps of a verification (for `cbob info` and metrics).
fn summary_json(v: &StanzaVerification) -> Value {
    json!({
        "ok": v.ok,
        "problems": v.problems.len(),
        "kinds": v.problems.iter().map(|p| p.kind).collect::<std::collections::BTreeSet<_>>(),
        "backups": v.backups.len(),
        "restorable": v.backups.iter().filter(|b| b.restorable).count(),
        "bytes_read": v.bytes_read,
    })
}

/// Problems shown per stanza in text; `--format json` lists them all.
const TEXT_PROBLEMS: usize = 50;

fn render_text(
    results: &[(String, Result<StanzaVerification, String>)],
    dest: &str,
    took: Duration,
) -> String {
    let mut out = String::new();
    for (stanza, r) in results {
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                out.push_str(&format!("✗ stanza {stanza}: cannot verify: {e}\n"));
                continue;
            }
        };
        out.push_str(&format!(
            "{} stanza {stanza}: {} ({} backups, {} objects, {} read in {:.1}s)\n",
            if v.ok { "✓" } else { "✗" },
            if v.ok {
                "ok".to_string()
            } else {
                format!("{} problem(s)", v.problems.len())
            },
            v.backups.len(),
            v.objects_read,
            human_bytes(v.bytes_read),
            v.duration_ms as f64 / 1000.0
        ));
        let bad_info: Vec<String> = v
            .info_files
            .iter()
            .filter_map(|f| match &f.state {
                FileState::Ok => None,
                FileState::Missing => Some(format!("{} missing", f.key)),
                FileState::Invalid(_) => Some(format!("{} invalid", f.key)),
            })
            .collect();
        out.push_str(&format!(
            "    info files: {}\n",
            if bad_info.is_empty() {
                "ok (archive.info, backup.info and both copies)".to_string()
            } else {
                bad_info.join(", ")
            }
        ));
        for a in &v.archives {
            let ranges: Vec<String> = a
                .ranges
                .iter()
                .map(|r| format!("{}..{}", r.start, r.stop))
                .collect();
            out.push_str(&format!(
                "    archive {}: {} WAL checked, {} valid (missing {}, checksum invalid {}, size invalid {}, other {}); {}\n",
                a.archive_id,
                a.wal.checked,
                a.wal.valid,
                a.wal.missing,
                a.wal.checksum_invalid,
                a.wal.size_invalid,
                a.wal.other,
                if ranges.is_empty() { "no WAL".to_string() } else { ranges.join(", ") }
            ));
        }
        for b in &v.backups {
            let status = match b.status {
                BackupStatus::Valid => "valid",
                BackupStatus::Invalid => "INVALID",
                BackupStatus::Missing => "MISSING",
            };
            out.push_str(&format!(
                "    backup {} ({}): {status}, {}; {} files checked, {} valid (missing {}, checksum invalid {}, size invalid {}, other {}); WAL {}..{}\n",
                b.label,
                b.backup_type,
                if b.restorable { "restorable" } else { "NOT restorable" },
                b.files.checked,
                b.files.valid,
                b.files.missing,
                b.files.checksum_invalid,
                b.files.size_invalid,
                b.files.other,
                b.wal_start.as_deref().unwrap_or("-"),
                b.wal_stop.as_deref().unwrap_or("-"),
            ));
        }
        if !v.unlisted_backups.is_empty() {
            out.push_str(&format!(
                "    not in backup.info (in progress, or expired and not yet removed; ignored): {}\n",
                v.unlisted_backups.join(", ")
            ));
        }
        for p in v.problems.iter().take(TEXT_PROBLEMS) {
            out.push_str(&format!(
                "    problem [{}]: {}\n",
                serde_json::to_value(p.kind)
                    .expect("kind")
                    .as_str()
                    .unwrap_or("?"),
                p.message
            ));
        }
        if v.problems.len() > TEXT_PROBLEMS {
            out.push_str(&format!(
                "    ... and {} more problems (--format json lists them all)\n",
                v.problems.len() - TEXT_PROBLEMS
            ));
        }
    }
    let bad = results
        .iter()
        .filter(|(_, r)| !r.as_ref().is_ok_and(|v| v.ok))
        .count();
    out.push_str(&format!(
        "verify: {} of {} stanzas ok at {dest} in {:.1}s{}\n",
        results.len() - bad,
        results.len(),
        took.as_secs_f64(),
        if bad > 0 {
            format!(", {bad} FAILED")
        } else {
            String::new()
        }
    ));
    out
}
