//! The scheduler: one loop per job sleeps until the next matching time (plus jitter), runs the
//! job as a child process of the `cbob` binary and waits for it. A job is therefore never run
//! twice at once by the daemon — times that pass while it runs are counted as skipped — and
//! the child takes the same run lock as a manual run, so the daemon and cron/an operator cannot
//! collide either. Children run in their own process group: a Ctrl-C on the daemon's terminal
//! reaches the daemon, which then decides what happens to them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Local;
use rand::Rng;
use tokio::sync::watch;

use super::schedule::Schedule;
use super::status::DaemonStatus;
use crate::audit::AuditLog;
use crate::state::now;

/// A scheduled `cbob` subcommand.
#[derive(Debug, Clone)]
pub struct Job {
    /// `sync`, `restore-check`, `verify`, `expire`, `replicate`.
    pub name: String,
    /// The arguments after the global ones, e.g. `["replicate", "sync"]`.
    pub args: Vec<String>,
    pub schedule: Schedule,
}

impl Job {
    /// The job for a `CBOB_SCHEDULE_*` key's job name. `replicate` runs `replicate sync`;
    /// `expire` runs `expire --force` (without a terminal expire wants the confirmation on the
    /// command line, and configuring its schedule is that confirmation); the others run the
    /// subcommand of the same name with no arguments (their settings come from the
    /// configuration like any run's).
    pub fn new(name: &str, schedule: Schedule) -> Self {
        let args: Vec<String> = match name {
            "replicate" => vec!["replicate".into(), "sync".into()],
            "expire" => vec!["expire".into(), "--force".into()],
            other => vec![other.into()],
        };
        Self {
            name: name.to_string(),
            args,
            schedule,
        }
    }
}

/// How the daemon runs its jobs.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// The `cbob` binary (`std::env::current_exe()`).
    pub program: PathBuf,
    /// Global arguments given to every job before its own (`--config FILE`, `--log-format json`).
    pub global_args: Vec<OsString>,
    pub jitter: Duration,
    /// On shutdown, how long a running job may take to finish before it is stopped.
    pub grace: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub kill_after: Duration,
    pub audit: Option<AuditLog>,
}

/// Runs every job's loop until `shutdown` turns true, then lets running jobs finish (or stops
/// them) and returns.
pub async fn run_jobs(
    jobs: Vec<Job>,
    settings: RunnerSettings,
    status: Arc<DaemonStatus>,
    shutdown: watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let loops: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            tokio::spawn(job_loop(
                job,
                settings.clone(),
                status.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for l in loops {
        if let Err(e) = l.await {
            tracing::error!(error = %e, "a job loop ended abnormally");
        }
    }
}

fn random_jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=max.as_millis() as u64))
}

/// Resolves once shutdown is requested (never, if nobody can request it any more).
pub(crate) async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sleeps until the wall-clock time `at`, in slices of at most a minute so that a clock step
/// (NTP, suspend) is noticed. Returns false when shutdown was requested first.
async fn sleep_until(at: chrono::DateTime<Local>, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        let remaining = (at - Local::now()).to_std().unwrap_or(Duration::ZERO);
        if *shutdown.borrow() {
            return false;
        }
        if remaining.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(remaining.min(Duration::from_secs(60))) => {}
            _ = stop_requested(shutdown) => return false,
        }
    }
}

async fn job_loop(
    job: Job,
    settings: Arc<RunnerSettings>,
    status: Arc<DaemonStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let Some(next) = job.schedule.next_after(&Local::now()) else {
            tracing::error!(job = %job.name, schedule = job.schedule.expr(), "the schedule has no next time; the job will not run again");
            return;
        };
        let fire_at =
            next + chrono::Duration::from_std(random_jitter(settings.jitter)).unwrap_or_default();
        status.update(&job.name, |j| j.next_run_at = Some(fire_at.timestamp()));
        tracing::debug!(job = %job.name, at = %fire_at.to_rfc3339(), "next run");
        if !sleep_until(fire_at, &mut shutdown).await {
            return;
        }
        run_once(&job, &settings, &status, &mut shutdown).await;
        if *shutdown.borrow() {
            return;
        }
        let skipped = job.schedule.count_between(&next, &Local::now());
        if skipped > 0 {
            tracing::warn!(job = %job.name, skipped, "scheduled times passed while the previous run was still running; they were skipped");
            status.update(&job.name, |j| j.skipped += skipped);
        }
    }
}

/// What an exit status means, for the log.
fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => "succeeded".into(),
        (Some(1), _) => "failed (exit 1: the work failed)".into(),
        (Some(2), _) => "failed (exit 2: configuration or usage error)".into(),
        (Some(3), _) => "failed (exit 3: permission error)".into(),
        (Some(4), _) => "did not run (exit 4: another run holds the lock)".into(),
        (Some(5), _) => "failed (exit 5: a required program is missing)".into(),
        (Some(c), _) => format!("failed (exit {c})"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended".into(),
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet (so the pid
    // cannot have been reused).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Runs the job once and waits for it; on shutdown waits up to the grace period, then stops it.
async fn run_once(
    job: &Job,
    settings: &RunnerSettings,
    status: &DaemonStatus,
    shutdown: &mut watch::Receiver<bool>,
) {
    if *shutdown.borrow() {
        return;
    }
    let mut cmd = tokio::process::Command::new(&settings.program);
    cmd.args(&settings.global_args)
        .args(&job.args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    let started = Instant::now();
    let started_at = now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(job = %job.name, program = %settings.program.display(), error = %e, "cannot start the job");
            status.update(&job.name, |j| {
                j.runs += 1;
                j.failures += 1;
                j.last_started_at = Some(started_at);
                j.last_finished_at = Some(now());
                j.last_exit_code = None;
                j.last_duration_seconds = Some(0.0);
            });
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    tracing::info!(job = %job.name, pid, args = ?job.args, "job started");
    status.update(&job.name, |j| {
        j.runs += 1;
        j.running_pid = Some(pid);
        j.running_since = Some(started_at);
        j.last_started_at = Some(started_at);
    });

    let result = tokio::select! {
        r = child.wait() => r,
        _ = stop_requested(shutdown) => {
            tracing::info!(job = %job.name, pid, grace = ?settings.grace, "shutting down: letting the running job finish");
            match tokio::time::timeout(settings.grace, child.wait()).await {
                Ok(r) => r,
                Err(_) => {
                    // Every cbob command keeps its destination valid at every instant, so
                    // stopping one mid-run loses only the work in flight.
                    tracing::warn!(job = %job.name, pid, "grace period over: stopping the job with SIGTERM");
                    signal(pid, libc::SIGTERM);
                    match tokio::time::timeout(settings.kill_after, child.wait()).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(job = %job.name, pid, "the job ignored SIGTERM: killing it");
                            let _ = child.kill().await;
                            child.wait().await
                        }
                    }
                }
            }
        }
    };
    let duration = started.elapsed().as_secs_f64();
    let code = result.as_ref().ok().and_then(ExitStatus::code);
    match &result {
        Ok(st) if st.success() => {
            tracing::info!(job = %job.name, pid, duration_seconds = duration, "job {}", describe_exit(st))
        }
        Ok(st) => {
            tracing::warn!(job = %job.name, pid, duration_seconds = duration, exit_code = code, "job {}", describe_exit(st))
        }
        Err(e) => tracing::error!(job = %job.name, pid, error = %e, "cannot wait for the job"),
    }
    status.update(&job.name, |j| {
        j.running_pid = None;
        j.running_since = None;
        j.last_finished_at = Some(now());
        j.last_exit_code = code;
        j.last_duration_seconds = Some(duration);
        if code != Some(0) {
            j.failures += 1;
        }
    });
    if let Some(audit) = &settings.audit {
        audit.record(
            "daemon",
            "job",
            serde_json::json!({
                "job": job.name,
                "args": job.args,
                "job_pid": pid,
                "exit_code": code,
                "duration_seconds": duration,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_their_subcommand() {
        let s = || Schedule::parse("@daily").unwrap();
        assert_eq!(Job::new("sync", s()).args, ["sync"]);
        assert_eq!(Job::new("restore-check", s()).args, ["restore-check"]);
        assert_eq!(Job::new("replicate", s()).args, ["replicate", "sync"]);
        assert_eq!(Job::new("expire", s()).args, ["expire", "--force"]);
        assert!(random_jitter(Duration::ZERO).is_zero());
        assert!(random_jitter(Duration::from_secs(2)) <= Duration::from_secs(2));
    }
}
