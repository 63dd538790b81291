//! `cbob metrics [--format text|json|prometheus]`: what the state database says about every
//! command, cluster, stanza check and replica. Read-only; `prometheus` is the same document as
//! the textfile every run writes to `$CBOB_BASE_PATH/metrics/cbob.prom`.

use clap::{Args, ValueEnum};
use serde_json::json;

use cbob_core::audit::AuditLog;
use cbob_core::metrics::{self, Snapshot};
use cbob_core::state::StateDb;

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::context;
use crate::exit_code::{CliError, ExitCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsFormat {
    Text,
    Json,
    Prometheus,
}

#[derive(Debug, Args)]
#[command(after_help = "Metric names and the JSON document are described in docs/metrics.md.")]
pub struct MetricsArgs {
    /// Output: text (tables), json (stable, the state as recorded) or prometheus (text format 0.0.4)
    #[arg(long, value_enum, default_value = "text")]
    pub format: MetricsFormat,
}

pub fn run(global: &GlobalArgs, args: &MetricsArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |_| {})?;
    let db_path = config.base_path.join("state.db");
    // No state yet is not an error: there is simply nothing to report (and nothing to create).
    let snapshot = if db_path.is_file() {
        let db = StateDb::open(&db_path).map_err(|e| CliError::failure(e.to_string()))?;
        Snapshot::collect(&db).map_err(|e| CliError::failure(e.to_string()))?
    } else {
        tracing::info!(path = %db_path.display(), "no state database yet: nothing recorded");
        Snapshot::empty()
    };
    let out = match args.format {
        MetricsFormat::Text => metrics::text(&snapshot),
        MetricsFormat::Json => metrics::json(&snapshot),
        MetricsFormat::Prometheus => metrics::prometheus(&snapshot),
    };
    print_out(&out)?;
    if db_path.is_file() {
        AuditLog::in_base(&config.base_path).record(
            "metrics",
            "run",
            json!({"result": "success", "format": format!("{:?}", args.format).to_lowercase()}),
        );
    }
    Ok(ExitCode::Success)
}
