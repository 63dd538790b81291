//! What the daemon knows about its jobs, shared by the schedulers, `/healthz` and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::metrics::PromWriter;
use crate::state::now;

/// One scheduled job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    /// The `cbob` arguments it runs, e.g. `["replicate", "sync"]`.
    pub args: Vec<String>,
    pub next_run_at: Option<i64>,
    pub running_pid: Option<u32>,
    pub running_since: Option<i64>,
    pub last_started_at: Option<i64>,
    pub last_finished_at: Option<i64>,
    /// The job's exit code; `None` when it was killed by a signal or could not start.
    pub last_exit_code: Option<i32>,
    pub last_duration_seconds: Option<f64>,
    pub runs: u64,
    /// Runs that did not exit 0.
    pub failures: u64,
    /// Scheduled times that passed while the previous run of the job was still running.
    pub skipped: u64,
}

/// A per-job metric family: name, type, help, and the value of one job (none: no sample).
type JobFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&JobStatus) -> Option<f64>,
);

/// The daemon's shared state.
#[derive(Debug)]
pub struct DaemonStatus {
    pub started_at: i64,
    jobs: Mutex<Vec<JobStatus>>,
    stopping: AtomicBool,
}

impl DaemonStatus {
    pub fn new(jobs: Vec<JobStatus>) -> Self {
        Self {
            started_at: now(),
            jobs: Mutex::new(jobs),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn jobs(&self) -> Vec<JobStatus> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut JobStatus)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = jobs.iter_mut().find(|j| j.name == name) {
            f(j);
        }
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The `/healthz` document.
    pub fn health_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": if self.stopping() { "stopping" } else { "ok" },
            "started_at": self.started_at,
            "jobs": self.jobs(),
        })
    }

    /// The daemon's own metric families (the state database's come from [`crate::metrics`]).
    pub fn write_prometheus(&self, w: &mut PromWriter) {
        let jobs = self.jobs();
        w.family(
            "cbob_daemon_start_timestamp_seconds",
            "gauge",
            "When the daemon started (Unix time).",
        )
        .sample(
            "cbob_daemon_start_timestamp_seconds",
            &[],
            self.started_at as f64,
        );
        let families: [JobFamily; 8] = [
            (
                "cbob_daemon_job_running",
                "gauge",
                "1 while a run of the job is in progress.",
                |j| Some(if j.running_pid.is_some() { 1.0 } else { 0.0 }),
            ),
            (
                "cbob_daemon_job_next_run_timestamp_seconds",
                "gauge",
                "When the job runs next (Unix time, jitter included).",
                |j| j.next_run_at.map(|t| t as f64),
            ),
            (
                "cbob_daemon_job_last_finish_timestamp_seconds",
                "gauge",
                "When the job's last run ended (Unix time).",
                |j| j.last_finished_at.map(|t| t as f64),
            ),
            (
                "cbob_daemon_job_last_exit_code",
                "gauge",
                "Exit code of the job's last run (-1: killed by a signal or could not start).",
                |j| {
                    j.last_finished_at
                        .map(|_| j.last_exit_code.unwrap_or(-1) as f64)
                },
            ),
            (
                "cbob_daemon_job_last_duration_seconds",
                "gauge",
                "Duration of the job's last run.",
                |j| j.last_duration_seconds,
            ),
            (
                "cbob_daemon_job_runs_total",
                "counter",
                "Runs of the job started by this daemon.",
                |j| Some(j.runs as f64),
            ),
            (
                "cbob_daemon_job_failures_total",
                "counter",
                "Runs of the job that did not exit 0.",
                |j| Some(j.failures as f64),
            ),
            (
                "cbob_daemon_job_skipped_total",
                "counter",
                "Scheduled times skipped because the previous run was still running.",
                |j| Some(j.skipped as f64),
            ),
        ];
        for (name, kind, help, value) in families {
            let samples: Vec<(&str, f64)> = jobs
                .iter()
                .filter_map(|j| Some((j.name.as_str(), value(j)?)))
                .collect();
            if samples.is_empty() {
                continue;
            }
            w.family(name, kind, help);
            for (job, v) in samples {
                w.sample(name, &[("job", job)], v);
            }
        }
    }
}
