//! `cbob info`: the backups of each stanza, read natively from the destination on any provider,
//! with the last sync, verify and restore-check recorded in the state database. `--format json`
//! is one document whatever the number of stanzas (the bash tool printed one per stanza).

use clap::Args;
use serde_json::{Value, json};

use cbob_core::config::Config;
use cbob_core::info::{BackupSummary, StanzaInfo, read_stanza_info};
use cbob_core::state::{ClusterStatus, StanzaCheck, StateDb};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::commands::sync::OutputFormat;
use crate::commands::verify::{
    Destination, human_bytes, open_destination, open_state_if_present, runtime, select_stanzas,
};
use crate::context;
use crate::exit_code::{CliError, ExitCode};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cbob info\n  \
    cbob info --stanza abc123 --detailed\n  \
    cbob info --format json | jq '.stanzas[].backups[-1].label'\n\n\
    \"restorable\" is what names and sizes show: the backup and its chain have manifests and its WAL range \
    is archived (with --detailed also: every file is stored at its recorded size). `cbob verify` checks the \
    bytes; `cbob restore-check` proves PostgreSQL starts.")]
pub struct InfoArgs {
    /// Show only this stanza (repeatable); default: every stanza at the destination.
    #[arg(long = "stanza", value_name = "STANZA")]
    pub stanzas: Vec<String>,
    /// Per backup: times, sizes, LSNs, WAL range, chain, and its files checked against the
    /// listing (reads every manifest and lists every object).
    #[arg(long)]
    pub detailed: bool,
    /// Output format; json is one stable document (docs/verify-info-expire.md).
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

pub fn run(global: &GlobalArgs, args: &InfoArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |_| {})?;
    runtime()?.block_on(info(args, config))
}

/// What the state database says about one stanza at this destination.
struct History {
    last_sync: Option<ClusterStatus>,
    last_verify: Option<StanzaCheck>,
    last_restore_check: Option<StanzaCheck>,
}

fn history(db: Option<&StateDb>, stanza: &str, destination: &str) -> Result<History, CliError> {
    let Some(db) = db else {
        return Ok(History {
            last_sync: None,
            last_verify: None,
            last_restore_check: None,
        });
    };
    let err = |e: cbob_core::state::StateError| CliError::failure(e.to_string());
    let last_sync = db
        .cluster_statuses(Some(destination))
        .map_err(err)?
        .into_iter()
        .filter(|s| s.stanza.as_deref() == Some(stanza))
        .max_by_key(|s| s.last_attempt_at);
    let checks = db.latest_checks(None).map_err(err)?;
    let pick = |kind: &str| {
        checks
            .iter()
            .find(|c| c.stanza == stanza && c.destination == destination && c.kind == kind)
            .cloned()
    };
    Ok(History {
        last_sync,
        last_verify: pick("verify"),
        last_restore_check: pick("restore-check"),
    })
}

async fn info(args: &InfoArgs, config: Config) -> Result<ExitCode, CliError> {
    let dest: Destination = open_destination(&config, None, false).await?;
    let stanzas = select_stanzas(&dest, &args.stanzas).await?;
    let db = open_state_if_present(&config)?;
    let mut shown: Vec<(StanzaInfo, History)> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    for stanza in &stanzas {
        match read_stanza_info(&dest.provider, stanza, args.detailed).await {
            Ok(i) => shown.push((i, history(db.as_ref(), stanza, &dest.description)?)),
            Err(e) => errors.push((stanza.clone(), e.to_string())),
        }
    }
    let output = match args.format {
        OutputFormat::Json => render_json(&shown, &errors, &dest.description),
        OutputFormat::Text => render_text(&shown, &errors, &dest.description, args.detailed),
    };
    print_out(&output)?;
    let ok = errors.is_empty() && shown.iter().all(|(i, _)| i.status == "ok");
    Ok(if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

fn time(ts: Option<i64>) -> String {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

fn check_json(c: &Option<StanzaCheck>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({
            "at": chrono::DateTime::from_timestamp(c.at, 0).map(|t| t.to_rfc3339()),
            "result": c.result,
            "duration_seconds": c.duration_ms as f64 / 1000.0,
            "detail": c.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        }),
    }
}

fn render_json(shown: &[(StanzaInfo, History)], errors: &[(String, String)], dest: &str) -> String {
    let stanzas: Vec<Value> = shown
        .iter()
        .map(|(i, h)| {
            let mut v = serde_json::to_value(i).expect("json");
            let obj = v.as_object_mut().expect("object");
            obj.insert(
                "last_sync".into(),
                match &h.last_sync {
                    None => Value::Null,
                    Some(s) => json!({
                        "cluster": s.cluster,
                        "at": s.last_attempt_at.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()),
                        "result": s.last_result,
                        "last_success_at": s.last_success_at.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()),
                        "error": s.last_error,
                    }),
                },
            );
            obj.insert("last_verify".into(), check_json(&h.last_verify));
            obj.insert("last_restore_check".into(), check_json(&h.last_restore_check));
            v
        })
        .collect();
    let doc = json!({
        "destination": dest,
        "stanzas": stanzas,
        "errors": errors.iter().map(|(s, e)| json!({"stanza": s, "error": e})).collect::<Vec<_>>(),
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("json");
    s.push('\n');
    s
}

fn short_time(at: &Option<String>) -> String {
    at.as_deref()
        .map(|t| t.replace('T', " ").trim_end_matches('Z').to_string())
        .unwrap_or_else(|| "-".into())
}

fn backup_text(b: &BackupSummary, detailed: bool) -> String {
    let restorable = if b.restorable {
        "restorable".to_string()
    } else {
        format!("NOT restorable: {}", b.problems.join("; "))
    };
    if !detailed {
        return format!(
            "    {:<4} {:<34} {} → {}  db {:>9}  repo {:>9}  WAL {}..{}  {restorable}\n",
            b.backup_type,
            b.label,
            short_time(&b.started_at),
            short_time(&b.stopped_at).rsplit(' ').next().unwrap_or("-"),
            human_bytes(b.size),
            human_bytes(b.repo_size_delta),
            b.wal_start.as_deref().unwrap_or("-"),
            b.wal_stop.as_deref().unwrap_or("-"),
        );
    }
    let mut out = format!("    {} backup: {}\n", b.backup_type, b.label);
    out.push_str(&format!(
        "        timestamp start/stop: {} / {} UTC\n",
        short_time(&b.started_at),
        short_time(&b.stopped_at)
    ));
    out.push_str(&format!(
        "        wal start/stop: {} / {}\n        lsn start/stop: {} / {}\n",
        b.wal_start.as_deref().unwrap_or("-"),
        b.wal_stop.as_deref().unwrap_or("-"),
        b.lsn_start.as_deref().unwrap_or("-"),
        b.lsn_stop.as_deref().unwrap_or("-"),
    ));
    out.push_str(&format!(
        "        database size: {}, database backup size: {}\n        repo backup set size: {}, repo backup size: {}\n",
        human_bytes(b.size),
        human_bytes(b.size_delta),
        human_bytes(b.repo_size),
        human_bytes(b.repo_size_delta)
    ));
    if b.chain.len() > 1 {
        out.push_str(&format!("        chain: {}\n", b.chain.join(" → ")));
    }
    if let Some(d) = &b.detail {
        out.push_str(&format!(
            "        files: {} ({}{}), {} missing, {} of the wrong size\n",
            d.files,
            d.compress,
            if d.bundled { ", bundled" } else { "" },
            d.files_missing,
            d.files_wrong_size
        ));
    }
    out.push_str(&format!("        {restorable}\n"));
    out
}

fn render_text(
    shown: &[(StanzaInfo, History)],
    errors: &[(String, String)],
    dest: &str,
    detailed: bool,
) -> String {
    let mut out = format!("destination: {dest}\n");
    for (i, h) in shown {
        out.push_str(&format!(
            "\nstanza: {}\n    status: {}\n",
            i.stanza, i.status
        ));
        for e in &i.errors {
            out.push_str(&format!("    error: {e}\n"));
        }
        if let (Some(v), Some(id)) = (&i.pg_version, i.system_id) {
            out.push_str(&format!(
                "    db: PostgreSQL {v}, system id {id}{}\n",
                if i.cipher { ", encrypted" } else { "" }
            ));
        }
        for a in &i.archives {
            out.push_str(&format!(
                "    wal archive {}: {}..{} ({} segments, {})\n",
                a.archive_id,
                a.min.as_deref().unwrap_or("-"),
                a.max.as_deref().unwrap_or("-"),
                a.segments,
                human_bytes(a.bytes)
            ));
        }
        if let (Some(f), Some(b)) = (i.repo_files, i.repo_bytes) {
            out.push_str(&format!(
                "    repository: {f} objects, {}\n",
                human_bytes(b)
            ));
        }
        out.push_str(&match &h.last_sync {
            None => "    last sync: never\n".to_string(),
            Some(s) => format!(
                "    last sync: {} {} (cluster {}; last success {}){}\n",
                time(s.last_attempt_at),
                s.last_result.as_deref().unwrap_or("-"),
                s.cluster,
                time(s.last_success_at),
                s.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        });
        for (what, c) in [
            ("verify", &h.last_verify),
            ("restore-check", &h.last_restore_check),
        ] {
            out.push_str(&match c {
                None => format!("    last {what}: never\n"),
                Some(c) => format!(
                    "    last {what}: {} {} ({:.1}s)\n",
                    time(Some(c.at)),
                    c.result,
                    c.duration_ms as f64 / 1000.0
                ),
            });
        }
        if i.backups.is_empty() {
            out.push_str("    no backups\n");
        } else {
            out.push_str(&format!(
                "    backups ({}, oldest first):\n",
                i.backups.len()
            ));
            for b in &i.backups {
                out.push_str(&backup_text(b, detailed));
            }
        }
    }
    for (s, e) in errors {
        out.push_str(&format!("\nstanza: {s}\n    error: {e}\n"));
    }
    out
}
