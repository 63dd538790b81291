//! `cbob expire`: full-backup retention on the destination, as pgBackRest's
//! `repo1-retention-full`, in pgBackRest's expire order (see `cbob_core::expire`). Shows the plan
//! first; removes nothing without confirmation (`--force`, or answering on a terminal), and
//! without a terminal and without `--force` refuses with exit 2 instead of waiting for input.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use serde_json::json;

use cbob_core::audit::AuditLog;
use cbob_core::config::{Config, ConfigSources};
use cbob_core::expire::{ExpirePlan, ExpireReport, execute_expire, plan_expire};
use cbob_core::lock::{LockError, RunLock};
use cbob_core::state::{Outcome, StateDb};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::commands::sync::OutputFormat;
use crate::commands::verify::{
    Destination, human_bytes, open_destination, runtime, select_stanzas,
};
use crate::context;
use crate::exit_code::{CliError, ExitCode};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cbob expire --retention-full 2 --dry-run     # what would go\n  \
    cbob expire --retention-full 2 --force       # from cron: no question asked\n\n\
    Keeps the newest N full backups of each stanza (pgBackRest's repo1-retention-full); an older full goes \
    with every diff/incr that depends on it, then the WAL no remaining backup needs. The new backup.info is \
    written first, so a crash at any point leaves a valid repository; run expire again to finish.")]
pub struct ExpireArgs {
    /// Expire only this stanza (repeatable); default: every stanza at the destination.
    #[arg(long = "stanza", value_name = "STANZA")]
    pub stanzas: Vec<String>,
    /// Full backups to keep per stanza (CBOB_RETENTION_FULL).
    #[arg(long, value_name = "N")]
    pub retention_full: Option<u32>,
    /// Do not ask for confirmation (needed when stdin is not a terminal, e.g. from cron).
    #[arg(long)]
    pub force: bool,
    /// Output format; json is stable and documented in docs/verify-info-expire.md.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

impl ExpireArgs {
    fn apply(&self, sources: &mut ConfigSources) {
        if let Some(n) = self.retention_full {
            sources.set_flag("CBOB_RETENTION_FULL", n.to_string(), "--retention-full");
        }
    }
}

pub fn run(global: &GlobalArgs, args: &ExpireArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |s| args.apply(s))?;
    let retention = config.retention_full.ok_or_else(|| {
        CliError::usage(
            "no retention set, so nothing would expire: give --retention-full N or set CBOB_RETENTION_FULL \
             (TOML retention_full), the number of full backups to keep per stanza (pgBackRest's repo1-retention-full)",
        )
    })?;
    runtime()?.block_on(expire(args, config, retention))
}

fn lock(config: &Config, kind: &str, dest: &str) -> Result<RunLock, CliError> {
    RunLock::acquire(&config.base_path, kind, dest).map_err(|e| match e {
        LockError::Held { .. } => CliError::new(ExitCode::Locked, e.to_string()),
        LockError::Io { .. } => CliError::new(ExitCode::Permission, e.to_string()),
    })
}

/// Asks on the terminal; `Ok(false)` when the answer is not yes.
fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "refusing to expire without confirmation: stdin is not a terminal. Re-run with --force to remove what is \
             listed above, or with --dry-run to only list it",
        ));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::failure(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn expire(args: &ExpireArgs, config: Config, retention: u32) -> Result<ExitCode, CliError> {
    let dest: Destination = open_destination(&config, None, true).await?;
    let dry_run = config.dry_run;
    // Expire and sync both rewrite backup.info: never at once on one destination.
    let _locks = if config.no_lock || dry_run {
        Vec::new()
    } else {
        vec![
            lock(&config, "expire", &dest.description)?,
            lock(&config, "sync", &dest.description)?,
        ]
    };
    let stanzas = select_stanzas(&dest, &args.stanzas).await?;
    let mut plans: Vec<(String, Result<ExpirePlan, String>)> = Vec::new();
    for s in &stanzas {
        let p = plan_expire(&dest.provider, s, retention)
            .await
            .map_err(|e| e.to_string());
        plans.push((s.clone(), p));
    }
    let pending: Vec<&ExpirePlan> = plans
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .filter(|p| !p.is_empty())
        .collect();
    let plan_failed = plans.iter().any(|(_, p)| p.is_err());

    let text = args.format == OutputFormat::Text;
    if text {
        print_out(&render_plans(&plans, &dest.description, retention, dry_run))?;
    }
    if dry_run || pending.is_empty() {
        if !text {
            print_out(&render_json(
                &plans,
                &[],
                &dest.description,
                retention,
                dry_run,
            ))?;
        } else if pending.is_empty() && !plan_failed {
            print_out("nothing to expire\n")?;
        }
        return Ok(if plan_failed {
            ExitCode::Failure
        } else {
            ExitCode::Success
        });
    }
    if !args.force {
        let backups: usize = pending.iter().map(|p| p.removal.backups.len()).sum();
        let files: u64 = pending.iter().map(|p| p.removal.files).sum();
        let bytes: u64 = pending.iter().map(|p| p.removal.bytes).sum();
        if !confirm(&format!(
            "Remove {backups} backup(s) and {files} object(s) ({}) from {}?",
            human_bytes(bytes),
            dest.description
        ))? {
            eprintln!("nothing was removed");
            return Ok(ExitCode::Success);
        }
    }

    let state =
        StateDb::open_in(&config.base_path).map_err(|e| CliError::failure(e.to_string()))?;
    let run_id = state
        .start_run("expire", Some(&dest.description))
        .map_err(|e| CliError::failure(e.to_string()))?;
    let audit = AuditLog::in_base(&config.base_path);
    let mut done: Vec<(String, Result<ExpireReport, String>)> = Vec::new();
    for plan in pending {
        let stanza = plan.stanza.clone();
        let record = |action: &str, detail: &str| {
            audit.record(
                "expire",
                action,
                json!({"stanza": stanza, "detail": detail, "destination": dest.description}),
            );
        };
        tracing::info!(stanza = %stanza, destination = %dest.description, "expire started");
        let r = execute_expire(&dest.provider, plan, &record)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &r {
            tracing::error!(stanza = %stanza, "expire failed: {e}");
        }
        done.push((stanza, r));
    }
    let failed = plan_failed || done.iter().any(|(_, r)| r.is_err());
    let files: u64 = done
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.removed.files)
        .sum();
    let bytes: u64 = done
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.removed.bytes)
        .sum();
    let errors = done.iter().filter(|(_, r)| r.is_err()).count() as u64;
    if let Err(e) = state.finish_run(
        run_id,
        if failed {
            Outcome::Failed
        } else {
            Outcome::Success
        },
        files,
        bytes,
        errors,
    ) {
        tracing::error!(error = %e, "could not record the run");
    }
    audit.record(
        "expire",
        "run",
        json!({
            "result": if failed { "failed" } else { "success" },
            "destination": dest.description,
            "retention_full": retention,
            "stanzas": done.len(),
            "failed": errors,
            "files": files,
            "bytes": bytes,
        }),
    );
    print_out(&if text {
        render_results(&done)
    } else {
        render_json(&plans, &done, &dest.description, retention, false)
    })?;
    Ok(if failed {
        ExitCode::Failure
    } else {
        ExitCode::Success
    })
}

fn render_plans(
    plans: &[(String, Result<ExpirePlan, String>)],
    dest: &str,
    retention: u32,
    dry_run: bool,
) -> String {
    let mut out = format!(
        "{}retention: keep the newest {retention} full backup(s) per stanza at {dest}\n",
        if dry_run { "dry run: " } else { "" }
    );
    for (stanza, p) in plans {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                out.push_str(&format!("✗ stanza {stanza}: cannot plan: {e}\n"));
                continue;
            }
        };
        if p.is_empty() {
            out.push_str(&format!(
                "  stanza {stanza}: {} backup(s), nothing to expire\n",
                p.listed.len()
            ));
            continue;
        }
        out.push_str(&format!(
            "  stanza {stanza}: {} backup(s) listed, {} to expire{}\n",
            p.listed.len(),
            p.expire.len(),
            if dry_run { " (would)" } else { "" }
        ));
        for e in &p.expire {
            out.push_str(&format!(
                "    expire {} ({}): {}\n",
                e.label, e.backup_type, e.reason
            ));
        }
        if p.write_info || p.write_info_copy {
            out.push_str(&format!(
                "    write {}\n",
                [
                    (p.write_info, "backup.info"),
                    (p.write_info_copy, "backup.info.copy")
                ]
                .iter()
                .filter(|(w, _)| *w)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(" then ")
            ));
        }
        for a in &p.removal.actions {
            out.push_str(&format!("    remove: {a}\n"));
        }
        out.push_str(&format!(
            "    {} {} object(s), {} ({} WAL file(s))\n",
            if dry_run { "would remove" } else { "removes" },
            p.removal.files,
            human_bytes(p.removal.bytes),
            p.removal.wal_files
        ));
    }
    out
}

fn render_results(done: &[(String, Result<ExpireReport, String>)]) -> String {
    let mut out = String::new();
    for (stanza, r) in done {
        match r {
            Ok(r) => out.push_str(&format!(
                "✓ stanza {stanza}: expired {} backup(s){}, removed {} object(s) ({}), {} WAL file(s)\n",
                r.expired.len(),
                if r.expired.is_empty() { String::new() } else { format!(" ({})", r.expired.join(", ")) },
                r.removed.files,
                human_bytes(r.removed.bytes),
                r.removed.wal_files
            )),
            Err(e) => out.push_str(&format!(
                "✗ stanza {stanza}: FAILED: {e}\n  the repository is still valid; run expire again to finish\n"
            )),
        }
    }
    out
}

fn render_json(
    plans: &[(String, Result<ExpirePlan, String>)],
    done: &[(String, Result<ExpireReport, String>)],
    dest: &str,
    retention: u32,
    dry_run: bool,
) -> String {
    let stanzas: Vec<_> = plans
        .iter()
        .map(|(s, p)| {
            let result = done.iter().find(|(d, _)| d == s).map(|(_, r)| r);
            json!({
                "stanza": s,
                "plan": p.as_ref().ok(),
                "result": result.and_then(|r| r.as_ref().ok()),
                "error": p.as_ref().err().or(result.and_then(|r| r.as_ref().err())),
            })
        })
        .collect();
    let ok = stanzas.iter().all(|s| s["error"].is_null());
    let doc = json!({
        "ok": ok,
        "dry_run": dry_run,
        "destination": dest,
        "retention_full": retention,
        "stanzas": stanzas,
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("json");
    s.push('\n');
    s
}
