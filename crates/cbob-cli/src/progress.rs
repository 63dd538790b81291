//! Progress of long runs: indicatif bars on a terminal, periodic log lines otherwise (cron,
//! systemd, CI), and nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbob_core::sync::SyncObserver;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters shared by the observer and the reporter.
#[derive(Default)]
struct Totals {
    planned_files: AtomicU64,
    planned_bytes: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

/// Reports a sync's progress.
pub struct Progress {
    totals: Arc<Totals>,
    bar: Option<ProgressBar>,
    _multi: Option<MultiProgress>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Bars when stderr is a terminal and not quiet; log lines every `interval` otherwise.
    pub fn start(quiet: bool, interval: Duration) -> Arc<Self> {
        let totals = Arc::new(Totals::default());
        if quiet {
            return Arc::new(Self {
                totals,
                bar: None,
                _multi: None,
                ticker: None,
            });
        }
        if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            return Arc::new(Self {
                totals,
                bar: Some(bar),
                _multi: Some(multi),
                ticker: None,
            });
        }
        let t = totals.clone();
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let bytes = t.bytes.load(Ordering::Relaxed);
                tracing::info!(
                    files = t.files.load(Ordering::Relaxed),
                    planned_files = t.planned_files.load(Ordering::Relaxed),
                    bytes,
                    planned_bytes = t.planned_bytes.load(Ordering::Relaxed),
                    bytes_per_sec = (bytes as f64 / secs) as u64,
                    "progress"
                );
            }
        });
        Arc::new(Self {
            totals,
            bar: None,
            _multi: None,
            ticker: Some(ticker),
        })
    }

    /// Stops the bar or the periodic lines.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }
}

impl SyncObserver for Progress {
    fn planned(&self, stanza: &str, files: u64, bytes: u64) {
        // The plan grows as the listing goes on: these are the files and bytes added to it.
        let planned_files = self
            .totals
            .planned_files
            .fetch_add(files, Ordering::Relaxed)
            + files;
        let total = self
            .totals
            .planned_bytes
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_message(format!("{stanza}: {planned_files} files to copy"));
        } else {
            tracing::debug!(cluster = stanza, files, bytes, "planned");
        }
    }

    fn bytes(&self, _stanza: &str, n: u64) {
        self.totals.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn file_done(&self, _stanza: &str, _key: &str, _bytes: u64) {
        let done = self.totals.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            let planned = self.totals.planned_files.load(Ordering::Relaxed);
            bar.set_message(format!("{done}/{planned} files"));
        }
    }

    fn phase(&self, stanza: &str, phase: &str) {
        tracing::debug!(cluster = stanza, phase, "phase");
    }

    fn warning(&self, stanza: &str, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| tracing::warn!(cluster = stanza, "{message}")),
            None => tracing::warn!(cluster = stanza, "{message}"),
        }
    }
}
