//! `cbob daemon`: runs the scheduled jobs (`CBOB_SCHEDULE_*`) as child processes of this binary
//! and serves `/metrics` and `/healthz` on a loopback address until SIGTERM or SIGINT, then lets
//! running jobs finish within `CBOB_DAEMON_GRACE` (stopping them after that) and exits 0.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use cbob_core::audit::AuditLog;
use cbob_core::config::{Config, ConfigSources};
use cbob_core::daemon::{DaemonStatus, Job, JobStatus, RunnerSettings, Schedule, http, run_jobs};
use cbob_core::lock::{LockError, RunLock};

use crate::cli::{FormatArg, GlobalArgs, LevelArg};
use crate::context;
use crate::exit_code::{CliError, ExitCode};

#[derive(Debug, Args)]
#[command(
    after_help = "Schedules are cron expressions in the host's time zone, e.g.\n  \
    CBOB_SCHEDULE_SYNC='30 3 * * *'  CBOB_SCHEDULE_RESTORE_CHECK='0 5 * * *'  CBOB_SCHEDULE_EXPIRE='0 6 * * 0'\n\
    Each job runs `cbob <job>` with this daemon's --config, --log-level, --log-format and --dry-run;\n\
    a job still running when its next time comes is not started twice. See docs/daemon.md."
)]
pub struct DaemonArgs {
    /// Loopback address for /metrics and /healthz, or `off` (CBOB_DAEMON_LISTEN, default 127.0.0.1:9750)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

impl DaemonArgs {
    fn apply(&self, sources: &mut ConfigSources) {
        if let Some(l) = &self.listen {
            sources.set_flag("CBOB_DAEMON_LISTEN", l.clone(), "--listen");
        }
    }
}

/// The global flags every job inherits, so a job reads the same configuration and logs the same way.
fn global_args(global: &GlobalArgs) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    if let Some(c) = &global.config {
        // Absolute, in case a job's working directory ever differs.
        let c = std::path::absolute(c).unwrap_or_else(|_| c.clone());
        out.push("--config".into());
        out.push(c.into_os_string());
    }
    if let Some(l) = global.log_level {
        let name = match l {
            LevelArg::Error => "error",
            LevelArg::Warn => "warn",
            LevelArg::Info => "info",
            LevelArg::Debug => "debug",
            LevelArg::Trace => "trace",
        };
        out.extend(["--log-level".into(), name.into()]);
    }
    if let Some(f) = global.log_format {
        let name = match f {
            FormatArg::Text => "text",
            FormatArg::Json => "json",
        };
        out.extend(["--log-format".into(), name.into()]);
    }
    if global.dry_run {
        out.push("--dry-run".into());
    }
    if global.quiet {
        out.push("--quiet".into());
    }
    out
}

fn jobs(config: &Config) -> Result<Vec<Job>, CliError> {
    if config.daemon.schedules.is_empty() {
        return Err(CliError::usage(
            "no schedule is configured, so the daemon would do nothing\n  fix: set at least one of \
             CBOB_SCHEDULE_SYNC, CBOB_SCHEDULE_RESTORE_CHECK, CBOB_SCHEDULE_VERIFY, CBOB_SCHEDULE_EXPIRE, \
             CBOB_SCHEDULE_REPLICATE (TOML [schedule] sync = \"30 3 * * *\", ...) to a cron expression",
        ));
    }
    config
        .daemon
        .schedules
        .iter()
        .map(|(name, expr)| {
            // Validation parsed it already; this cannot fail for a loaded configuration.
            let schedule = Schedule::parse(expr)
                .map_err(|e| CliError::usage(format!("schedule of {name}: {e}")))?;
            let mut job = Job::new(name, schedule);
            // restore-check mails its report only when asked; with SMTP configured, a
            // scheduled run is asked (there is no terminal to ask it on).
            let email = &config.notify.email;
            if name == "restore-check" && email.smtp_server.is_some() && !email.mail_to.is_empty() {
                job.args.push("--email".into());
            }
            Ok(job)
        })
        .collect()
}

pub fn run(global: &GlobalArgs, args: &DaemonArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |s| args.apply(s))?;
    let jobs = jobs(&config)?;
    let _lock = if config.no_lock {
        None
    } else {
        let base = config.base_path.display().to_string();
        Some(
            RunLock::acquire(&config.base_path, "daemon", &base).map_err(|e| match e {
                LockError::Held { .. } => CliError::new(ExitCode::Locked, e.to_string()),
                LockError::Io { .. } => CliError::new(ExitCode::Permission, e.to_string()),
            })?,
        )
    };
    let program = std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find the cbob binary to run jobs: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let settings = RunnerSettings {
        program,
        global_args: global_args(global),
        jitter: config.daemon.jitter,
        grace: config.daemon.grace,
        kill_after: Duration::from_secs(10),
        audit: Some(AuditLog::in_base(&config.base_path)),
    };
    runtime.block_on(serve(config, jobs, settings))
}

async fn serve(
    config: Config,
    jobs: Vec<Job>,
    settings: RunnerSettings,
) -> Result<ExitCode, CliError> {
    let listener = match config.daemon.listen {
        Some(addr) => Some(http::bind(addr).await.map_err(|e| {
            CliError::failure(format!(
                "cannot listen on {addr} for /metrics and /healthz: {e}\n  fix: set CBOB_DAEMON_LISTEN \
                 (or --listen) to a free loopback port, or to off"
            ))
        })?),
        None => None,
    };
    let status = Arc::new(DaemonStatus::new(
        jobs.iter()
            .map(|j| JobStatus {
                name: j.name.clone(),
                schedule: j.schedule.expr().to_string(),
                args: j.args.clone(),
                ..JobStatus::default()
            })
            .collect(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    // The endpoints outlive the stop request: /healthz says "stopping" while jobs finish.
    let (exit_tx, exit_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::failure(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::failure(format!("cannot handle SIGINT: {e}")))?;
    {
        let status = status.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if status.stopping() {
                    tracing::info!(signal = name, "already stopping; waiting for running jobs");
                    continue;
                }
                tracing::info!(
                    signal = name,
                    "stopping: no new runs; running jobs may finish"
                );
                status.set_stopping();
                let _ = stop_tx.send(true);
            }
        });
    }
    let address = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    if let Some(listener) = listener {
        tokio::spawn(http::serve(
            listener,
            config.base_path.clone(),
            status.clone(),
            exit_rx,
        ));
    }
    let names: Vec<String> = jobs
        .iter()
        .map(|j| format!("{} ({})", j.name, j.schedule.expr()))
        .collect();
    tracing::info!(jobs = ?names, listen = address.as_deref().unwrap_or("off"), "daemon started");
    let audit = AuditLog::in_base(&config.base_path);
    audit.record(
        "daemon",
        "start",
        json!({"jobs": names, "listen": address, "dry_run": config.dry_run}),
    );

    run_jobs(jobs, settings, status.clone(), stop_rx).await;
    let _ = exit_tx.send(true);

    let clean = status.stopping();
    audit.record(
        "daemon",
        "stop",
        json!({"result": if clean { "success" } else { "failed" }}),
    );
    if clean {
        tracing::info!("daemon stopped");
        Ok(ExitCode::Success)
    } else {
        Err(CliError::failure(
            "every schedule ended (no future time matches); nothing left to run",
        ))
    }
}
