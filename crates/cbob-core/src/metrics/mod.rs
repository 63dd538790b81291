//! Metrics (SPEC §7) from the state database: `cbob metrics` prints them, every run writes them
//! as a Prometheus textfile (`$CBOB_BASE_PATH/metrics/cbob.prom`, for node_exporter's textfile
//! collector), and `cbob daemon` serves them on `/metrics`. Names follow Prometheus
//! conventions (`_seconds`, `_bytes`, `_total`, `_timestamp_seconds`); docs/metrics.md lists them.
//!
//! ```no_run
//! # fn demo(cfg: &cbob_core::config::Config) {
//! // After a run (never fails the run: log the error).
//! if let Err(e) = cbob_core::metrics::write_textfile(&cfg.base_path) {
//!     tracing::warn!(error = %e, "metrics textfile not written");
//! }
//! # }
//! ```

mod prom;
mod render;
mod snapshot;
mod textfile;

pub use prom::{PromWriter, escape_label};
pub use render::{json, prometheus, text, write_prometheus};
pub use snapshot::{CheckStatus, CommandRuns, Snapshot};
pub use textfile::{MetricsError, textfile_path, write_textfile, write_textfile_from};
