//! A PostgreSQL server cbob started on restored data: readiness, promotion, queries, stop.
//!
//! The postmaster is spawned directly (not through `pg_ctl`) so cbob keeps its `Child`: an
//! early death is seen at once instead of after a timeout. It runs in its own process group,
//! tied to cbob with `PR_SET_PDEATHSIG(SIGQUIT)` (immediate shutdown) in case cbob is killed,
//! and [`Server`]'s `Drop` shuts it down immediately if cbob's own cleanup never ran (a panic).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::command::{self, PgEnv, run_command, signal_group};
use super::error::PgError;
use super::settings::{Setting, command_line};

/// Errors from `psql` that mean "not yet": the socket is not there yet, the server is starting
/// or recovering (with `hot_standby=off` nothing may connect before promotion).
const TRANSIENT: &[&str] = &[
    "No such file or directory",
    "Connection refused",
    "the database system is starting up",
    "not accepting connections",
    "not yet accepting connections",
    "the database system is in recovery mode",
    "the database system is shutting down",
    // A server dying mid-connection: the next poll sees the exit and reports the log.
    "server closed the connection unexpectedly",
];

/// Client sessions of the checks must not be cut short or made read-only by settings the
/// source cluster stored for its roles or in `postgresql.auto.conf`.
const CLIENT_OPTIONS: &str = "-c statement_timeout=0 -c lock_timeout=0 \
    -c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=off";

/// A libpq connection string for `dbname`, quoted so any database name is taken literally.
pub fn conninfo(dbname: &str) -> String {
    format!(
        "dbname='{}'",
        dbname.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// A running (or exited) PostgreSQL server started by cbob.
#[derive(Debug)]
pub struct Server {
    env: PgEnv,
    child: Option<Child>,
    pid: u32,
    pub pgdata: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
}

impl Server {
    /// Starts `postgres -D pgdata -c config_file=<conf> <settings as -c>`, output appended to
    /// `log_file`. Returns once the process exists; see [`Server::wait_listening`].
    pub fn spawn(
        env: &PgEnv,
        pgdata: &Path,
        conf_file: &Path,
        settings: &[Setting],
        port: u16,
        socket_dir: &Path,
        log_file: &Path,
    ) -> Result<Server, PgError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .map_err(|e| PgError::io("cannot open the server log", log_file, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| PgError::io("cannot open the server log", log_file, e))?;
        let mut cmd = env.detached_command(env.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(pgdata)
            .arg("-c")
            .arg(format!("config_file={}", conf_file.display()))
            .args(command_line(settings))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0);
        command::tie_to_parent(&mut cmd, libc::SIGQUIT);
        let child = command::spawn(&mut cmd, "starting PostgreSQL")?;
        let pid = child.id().unwrap_or(0);
        let mut client = env.clone();
        client.env.extend([
            ("PGHOST".to_string(), socket_dir.display().to_string()),
            ("PGPORT".to_string(), port.to_string()),
            ("PGUSER".to_string(), "postgres".to_string()),
            ("PGOPTIONS".to_string(), CLIENT_OPTIONS.to_string()),
            ("PGAPPNAME".to_string(), "cbob".to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), "10".to_string()),
        ]);
        Ok(Server {
            env: client,
            child: Some(child),
            pid,
            pgdata: pgdata.to_path_buf(),
            port,
            socket_dir: socket_dir.to_path_buf(),
            log_file: log_file.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The environment of client programs (psql, pg_dump) talking to this server.
    pub fn client_env(&self) -> &PgEnv {
        &self.env
    }

    /// The postmaster's exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn log_tail(&self) -> String {
        super::file_tail(&self.log_file, 3000)
    }

    fn died(&self, status: std::process::ExitStatus, when: &str) -> PgError {
        PgError::Failed(format!(
            "PostgreSQL exited {when} ({status}); server log:\n{}",
            self.log_tail()
        ))
    }

    /// Waits until the postmaster has created its socket (it does so before it starts
    /// recovery), failing at once if it exits first.
    pub async fn wait_listening(
        &mut self,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), PgError> {
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        let started = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                // It may have opened its socket and then failed in recovery between two polls
                // (the socket is removed at exit). Its log names the socket then, in any
                // language: leave the exit to the next step, which reports a recovery failure.
                let log = std::fs::read(&self.log_file).unwrap_or_default();
                if String::from_utf8_lossy(&log).contains(&*socket.to_string_lossy()) {
                    return Ok(());
                }
                return Err(self.died(st, "during startup"));
            }
            if socket.exists() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(PgError::Failed(format!(
                    "PostgreSQL did not open its socket {} within {timeout:?}; server log:\n{}",
                    socket.display(),
                    self.log_tail()
                )));
            }
            if cancel.is_cancelled() {
                return Err(PgError::Interrupted);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until recovery has ended and the server accepts connections
    /// (`pg_is_in_recovery()` is false), failing at once if the server exits or a connection
    /// fails for a reason other than "not yet". `progress` is called about every 30 s.
    pub async fn wait_promoted(
        &mut self,
        timeout: Duration,
        cancel: &CancellationToken,
        mut progress: impl FnMut(Duration),
    ) -> Result<(), PgError> {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return Err(self.died(st, "before recovery finished"));
            }
            match self
                .query("postgres", "SELECT pg_is_in_recovery()", cancel)
                .await
            {
                Ok(s) if s.trim() == "f" => return Ok(()),
                Ok(_) => {}
                Err(PgError::Failed(e)) if TRANSIENT.iter().any(|t| e.contains(t)) => {}
                Err(PgError::Failed(e)) => {
                    // The server may be dying (or have died) between the check above and the
                    // query: its log then says more than the connection error.
                    for _ in 0..20 {
                        if let Some(st) = self.exited() {
                            return Err(self.died(st, "before recovery finished"));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    return Err(PgError::Failed(format!(
                        "cannot connect to the restored server: {e}{}",
                        locale_hint(&e)
                    )));
                }
                Err(e) => return Err(e),
            }
            let elapsed = started.elapsed();
            if elapsed > timeout {
                return Err(PgError::Failed(format!(
                    "recovery did not finish within {timeout:?}; server log:\n{}",
                    self.log_tail()
                )));
            }
            if last_progress.elapsed() >= Duration::from_secs(30) {
                progress(elapsed);
                last_progress = Instant::now();
            }
            // Poll fast at first (small repositories recover in well under a second).
            let pause = if elapsed < Duration::from_secs(10) {
                100
            } else if elapsed < Duration::from_secs(60) {
                500
            } else {
                2000
            };
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(pause)) => {}
                () = cancel.cancelled() => return Err(PgError::Interrupted),
            }
        }
    }

    /// A `psql` reading SQL from `-c`/stdin in database `db`, unaligned, tuples only, quiet,
    /// stopping at the first error.
    pub fn psql(&self, db: &str) -> tokio::process::Command {
        let mut c = self.env.pg_command("psql");
        c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo(db));
        c
    }

    /// Runs one SQL string in `db`; `Failed(stderr)` when psql fails.
    pub async fn query(
        &self,
        db: &str,
        sql: &str,
        cancel: &CancellationToken,
    ) -> Result<String, PgError> {
        let mut c = self.psql(db);
        c.arg("-c").arg(sql);
        let out = run_command(c, "psql", None, cancel).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(PgError::Failed(out.diagnostics()))
        }
    }

    /// Fast shutdown (SIGINT): what `pg_checksums` needs afterwards. Escalates to immediate
    /// (SIGQUIT) and then SIGKILL if the server does not stop within `timeout`.
    pub async fn stop(&mut self, timeout: Duration) -> Result<(), PgError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(st)) = child.try_wait() {
            return Err(self.died(st, "before it was asked to stop"));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGINT) };
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(st)) if st.success() => Ok(()),
            Ok(Ok(st)) => Err(PgError::Failed(format!(
                "PostgreSQL did not shut down cleanly ({st}); server log:\n{}",
                self.log_tail()
            ))),
            Ok(Err(e)) => Err(PgError::Failed(format!(
                "waiting for PostgreSQL to stop: {e}"
            ))),
            Err(_) => {
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGQUIT) };
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    signal_group(self.pid, libc::SIGKILL);
                    let _ = child.wait().await;
                }
                Err(PgError::Failed(format!(
                    "PostgreSQL did not stop within {timeout:?} of a fast shutdown; it was stopped immediately"
                )))
            }
        }
    }

    /// Immediate shutdown (SIGQUIT), then SIGKILL of the process group after 5 s: cleanup after a
    /// failure, when the data is about to be deleted anyway.
    pub async fn stop_immediate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGQUIT) };
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            signal_group(self.pid, libc::SIGKILL);
            let _ = child.wait().await;
        }
        // A restore_command (pgbackrest archive-get) the startup process was running.
        signal_group(self.pid, libc::SIGKILL);
    }

    /// Immediate shutdown (SIGQUIT) without waiting on the runtime: for cleanup after a failure
    /// and for `Drop`. Escalates to SIGKILL of the process group after 5 s.
    pub fn kill_now(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                signal_group(self.pid, libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.pid, libc::SIGKILL);
        let _ = child.start_kill();
    }

    /// Whether cbob still has a running postmaster.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A fix for the most common connection failure of restored clusters.
pub fn locale_hint(error: &str) -> &'static str {
    if error.contains("locale") && error.contains("incompatible") {
        "; fix: install the cluster's locale on this machine (e.g. `apt-get install locales-all`)"
    } else {
        ""
    }
}

/// How many WAL segments (and history files) the server log says were restored from the
/// archive, and the last one.
pub fn restored_wal(log: &Path) -> (u64, Option<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut count = 0;
    let mut last = None;
    for line in text.lines() {
        if let Some(rest) = line.split("restored log file \"").nth(1) {
            count += 1;
            last = rest.split('"').next().map(str::to_string);
        }
    }
    (count, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_any_name() {
        assert_eq!(conninfo("appdb"), "dbname='appdb'");
        assert_eq!(conninfo("a'b\\c"), "dbname='a\\'b\\\\c'");
        assert_eq!(conninfo("x=y"), "dbname='x=y'");
    }
}
