//! `cbob config validate --check`: after the configuration is valid, prove it works — the
//! Crunchy Bridge API answers with the key, the destination can be written (a probe object is
//! written and deleted), and every notifier is reachable (without sending a notification).

use std::time::Duration;

use cbob_core::bridge::BridgeClient;
use cbob_core::config::Config;
use cbob_core::layers::RetryPolicy;
use cbob_core::notify::Notifiers;
use cbob_core::storage::CheckMode;

use crate::commands::print_out;
use crate::exit_code::{CliError, ExitCode};
use crate::providers;

/// `cbob config validate [--check]`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// When the configuration is valid, also check that it works: the Crunchy Bridge API answers
    /// with the key, the destination is writable (a probe object is written and deleted), and
    /// every notifier is reachable (nothing is posted). Exits 1 when a check fails.
    #[arg(long)]
    pub check: bool,
}

/// One check's outcome: ok (or skipped) with a note, or the failure.
struct Line {
    what: String,
    result: Result<String, String>,
}

async fn bridge(cfg: &Config) -> Line {
    let what = format!("Crunchy Bridge API {}", cfg.crunchy.api_url);
    let Some(key) = &cfg.crunchy.api_key else {
        return Line {
            what,
            result: Ok(
                "skipped: CBOB_CRUNCHY_API_KEY is not set (needed for Crunchy Bridge sources)"
                    .into(),
            ),
        };
    };
    let result = match BridgeClient::new(
        cfg.crunchy.api_url.as_str(),
        key.clone(),
        RetryPolicy::new(1, Duration::from_secs(1)),
    ) {
        Err(e) => Err(e.to_string()),
        Ok(client) => match tokio::time::timeout(Duration::from_secs(60), client.teams()).await {
            Ok(Ok(teams)) => Ok(format!(
                "ok: the key works ({} team{})",
                teams.len(),
                if teams.len() == 1 { "" } else { "s" }
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 60s".into()),
        },
    };
    Line { what, result }
}

async fn destination(cfg: &Config) -> Line {
    let spec = cfg.destination_spec();
    let what = format!("destination {}", spec.describe());
    let result = async {
        let dest = providers::registry()
            .build(&spec)
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(120), dest.check(CheckMode::ReadWrite)).await
        {
            Ok(Ok(())) => Ok("ok: readable and writable".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 120s".to_string()),
        }
    }
    .await;
    Line { what, result }
}

async fn notifiers(cfg: &Config) -> Vec<Line> {
    let set = Notifiers::from_config(cfg);
    if set.is_empty() {
        return vec![Line {
            what: "notifications".into(),
            result: Ok(if cfg.dry_run {
                "skipped: dry run".into()
            } else {
                "none configured".into()
            }),
        }];
    }
    set.check()
        .await
        .into_iter()
        .map(|(name, r)| Line {
            what: format!("notifier {name}"),
            result: r.map(|()| "ok: reachable".to_string()),
        })
        .collect()
}

/// Runs every check, prints one line each; exit 1 when any failed.
pub fn run(cfg: &Config) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let lines = runtime.block_on(async {
        let (b, d, n) = tokio::join!(bridge(cfg), destination(cfg), notifiers(cfg));
        let mut all = vec![b, d];
        all.extend(n);
        all
    });
    let mut out = String::new();
    let mut failed = 0;
    for l in &lines {
        match &l.result {
            Ok(text) => out.push_str(&format!("check: {}: {text}\n", l.what)),
            Err(e) => {
                failed += 1;
                out.push_str(&format!("check: {}: FAILED: {e}\n", l.what));
            }
        }
    }
    out.push_str(&if failed == 0 {
        "every check passed\n".to_string()
    } else {
        format!(
            "{failed} check{} failed\n",
            if failed == 1 { "" } else { "s" }
        )
    });
    print_out(&out)?;
    Ok(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
