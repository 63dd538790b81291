//! Commands that run as the PostgreSQL OS user, and running them to completion.
//!
//! Every command gets a cleared environment (PATH = the PostgreSQL bin dir, `/usr/bin`, `/bin`;
//! HOME = the working directory; `LANG=C.UTF-8`, so messages are English and parseable), a working
//! directory the user can read, no stdin, and its own process group: a terminal's Ctrl-C reaches
//! cbob only, and cbob then stops its children in order. Children are also tied to cbob with
//! `PR_SET_PDEATHSIG`, so a cbob killed outright (SIGKILL) does not leave them running.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::error::PgError;
use super::user::OsUser;

/// How long a child asked to stop (SIGTERM) may take before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Where and as whom PostgreSQL programs run.
#[derive(Debug, Clone)]
pub struct PgEnv {
    /// `None`: as this process's user.
    pub user: Option<OsUser>,
    /// PostgreSQL binaries (first on PATH).
    pub bin_dir: PathBuf,
    /// Working directory and HOME; readable by the user.
    pub home: PathBuf,
    /// Extra environment (PGHOST, PGPORT, ...).
    pub env: Vec<(String, String)>,
}

impl PgEnv {
    pub fn new(
        user: Option<OsUser>,
        bin_dir: impl Into<PathBuf>,
        home: impl Into<PathBuf>,
    ) -> Self {
        Self {
            user,
            bin_dir: bin_dir.into(),
            home: home.into(),
            env: Vec::new(),
        }
    }

    /// A command for `program` as the user, in its own process group, killed by the kernel
    /// (`SIGTERM`) if cbob dies.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.detached_command(program);
        tie_to_parent(&mut c, libc::SIGTERM);
        c.process_group(0);
        c
    }

    /// A command as the user that is not tied to cbob (for servers that must outlive it).
    pub fn detached_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.bin_dir.display()))
            .env("HOME", &self.home)
            .env("LANG", "C.UTF-8")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(u) = &self.user {
            c.uid(u.uid).gid(u.gid);
        }
        c
    }

    /// A PostgreSQL program from the bin dir.
    pub fn pg_command(&self, program: &str) -> Command {
        self.command(self.bin_dir.join(program))
    }
}

/// Makes the kernel send `signal` to the child when the thread that spawned it exits. cbob
/// spawns from its runtime's long-lived threads, so in practice: when cbob dies. The
/// credential change (uid/gid) happens before this hook runs, and it would otherwise reset the
/// setting.
pub fn tie_to_parent(cmd: &mut Command, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // cbob died between fork and prctl: nobody will ever reap or stop this child.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group; harmless if it is gone.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// Stops a child's process group: SIGTERM, a grace period, then SIGKILL; always reaps it.
pub async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait())
            .await
            .is_err()
        {
            signal_group(pid, libc::SIGKILL);
        }
    }
    let _ = child.wait().await;
}

/// What a finished program printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stderr then stdout, trimmed: what to show when the program failed.
    pub fn diagnostics(&self) -> String {
        let mut s = self.stderr.trim().to_string();
        let out = self.stdout.trim();
        if !out.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(out);
        }
        s
    }
}

/// Spawns `cmd`, mapping a missing program to a clear error.
pub fn spawn(cmd: &mut Command, what: &str) -> Result<Child, PgError> {
    cmd.spawn().map_err(|e| {
        let program = Path::new(cmd.as_std().get_program()).display().to_string();
        if e.kind() == io::ErrorKind::NotFound {
            PgError::MissingProgram {
                program,
                looked: format!("needed for {what}"),
                fix: "install it, or point CBOB_PG_BIN_DIR / CBOB_PGBACKREST_BIN at it".into(),
            }
        } else {
            PgError::Failed(format!("{what}: cannot start {program}: {e}"))
        }
    })
}

/// Runs `cmd` to completion and returns what it printed (exit status not judged here). On
/// cancellation the program's process group is stopped and [`PgError::Interrupted`] returned.
pub async fn run_command(
    mut cmd: Command,
    what: &str,
    stdin: Option<Vec<u8>>,
    cancel: &CancellationToken,
) -> Result<CmdOutput, PgError> {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = spawn(&mut cmd, what)?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => Some(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A program that exits early closes the pipe; its exit status tells the story.
            let _ = pipe.write_all(&input).await;
        })),
        _ => None,
    };
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let reader = tokio::spawn(async move {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut o), err.read_to_end(&mut e));
        (o, e)
    });
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| PgError::Failed(format!("{what}: waiting for the program: {e}")))?,
        () = cancel.cancelled() => {
            terminate(&mut child).await;
            return Err(PgError::Interrupted);
        }
    };
    if let Some(f) = feeder {
        let _ = f.await;
    }
    let (o, e) = reader.await.unwrap_or_default();
    Ok(CmdOutput {
        status,
        stdout: String::from_utf8_lossy(&o).into_owned(),
        stderr: String::from_utf8_lossy(&e).into_owned(),
    })
}

/// Runs `cmd`, counting and discarding its stdout (a dump to nowhere); returns the byte count,
/// or the program's stderr when it fails.
pub async fn run_discarding_stdout(
    mut cmd: Command,
    what: &str,
    cancel: &CancellationToken,
) -> Result<Result<u64, String>, PgError> {
    let mut child = spawn(&mut cmd, what)?;
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let counter =
        tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
    let errors = tokio::spawn(async move {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e).await;
        e
    });
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| PgError::Failed(format!("{what}: waiting for the program: {e}")))?,
        () = cancel.cancelled() => {
            terminate(&mut child).await;
            return Err(PgError::Interrupted);
        }
    };
    let bytes = counter.await.ok().and_then(Result::ok).unwrap_or(0);
    let stderr = String::from_utf8_lossy(&errors.await.unwrap_or_default()).into_owned();
    Ok(if status.success() {
        Ok(bytes)
    } else {
        Err(format!("{status}: {}", stderr.trim()))
    })
}
