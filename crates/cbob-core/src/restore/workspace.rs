//! The private directory one stanza's check works in, and removing it whatever happens.
//!
//! Layout under `<work root>/<stanza>-<pid>-<n>/` (0700, owned by the PostgreSQL user):
//! `pgdata/` (the restored cluster), `sock/` (the server's private socket), `tablespaces/`,
//! `run/` (configs, server log, pgBackRest lock/log/spool), `repo/` (staged repository, when
//! the destination is not read in place) and `cbob.pid` (the owning cbob process, so a later run
//! can remove what a killed run left behind).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::pg::user::{OsUser, chown, chown_tree};
use crate::pg::{PgError, file_tail};

/// Unix socket paths are limited to 107 bytes; ours is `<dir>/sock/.s.PGSQL.<port>`.
const MAX_SOCKET_PATH: usize = 107;

/// One stanza's private work directory; removed on [`Workspace::remove`] or drop.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    removed: bool,
}

impl Workspace {
    /// Creates the directory tree under `work_root`, owned by `user`.
    pub fn create(work_root: &Path, stanza: &str, user: Option<&OsUser>) -> Result<Self, PgError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let short: String = stanza.chars().take(24).collect();
        let name = format!(
            "{short}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let root = work_root.join(name);
        let socket_len = root.join("sock/.s.PGSQL.65535").as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(PgError::Permission(format!(
                "the work directory {} is too deep for a PostgreSQL socket ({socket_len} bytes, at most {MAX_SOCKET_PATH}); \
                 fix: use a shorter CBOB_BASE_PATH",
                root.display()
            )));
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| PgError::io("cannot create the work directory", &root, e))?;
        let ws = Self {
            root,
            removed: false,
        };
        fs::write(
            ws.root.join("cbob.pid"),
            format!("{}\n", std::process::id()),
        )
        .map_err(|e| PgError::io("cannot write", ws.root.join("cbob.pid"), e))?;
        for d in [
            "pgdata",
            "sock",
            "tablespaces",
            "run",
            "run/lock",
            "run/log",
            "run/spool",
        ] {
            let p = ws.root.join(d);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .map_err(|e| PgError::io("cannot create", &p, e))?;
        }
        chown_tree(&ws.root, user)?;
        Ok(ws)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn pgdata(&self) -> PathBuf {
        self.root.join("pgdata")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }
    pub fn tablespaces(&self) -> PathBuf {
        self.root.join("tablespaces")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }
    pub fn pgbackrest_conf(&self) -> PathBuf {
        self.run_dir().join("pgbackrest.conf")
    }
    pub fn server_conf(&self) -> PathBuf {
        self.run_dir().join("postgresql.conf")
    }
    pub fn hba_file(&self) -> PathBuf {
        self.run_dir().join("pg_hba.conf")
    }
    pub fn ident_file(&self) -> PathBuf {
        self.run_dir().join("pg_ident.conf")
    }
    pub fn server_log(&self) -> PathBuf {
        self.run_dir().join("postgres.log")
    }
    pub fn pgbackrest_log_dir(&self) -> PathBuf {
        self.run_dir().join("log")
    }

    /// Writes a small file the PostgreSQL user reads (configs): owned by cbob, mode 0644, in a
    /// directory only that user (and root) can enter.
    pub fn write_file(&self, path: &Path, text: &str) -> Result<(), PgError> {
        fs::write(path, text).map_err(|e| PgError::io("cannot write", path, e))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .map_err(|e| PgError::io("cannot chmod", path, e))
    }

    /// Gives a path cbob created to the PostgreSQL user.
    pub fn give(&self, path: &Path, user: Option<&OsUser>) -> Result<(), PgError> {
        chown(path, user)
    }

    /// Copies the server log and pgBackRest's logs to `dir` as `<stanza>-<name>`.
    pub fn keep_logs(&self, stanza: &str, dir: &Path) -> Vec<PathBuf> {
        let mut kept = Vec::new();
        let mut sources = vec![self.server_log()];
        if let Ok(rd) = fs::read_dir(self.pgbackrest_log_dir()) {
            sources.extend(rd.filter_map(Result::ok).map(|e| e.path()));
        }
        if fs::create_dir_all(dir).is_err() {
            return kept;
        }
        for src in sources.into_iter().filter(|p| p.is_file()) {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dst = dir.join(format!("{stanza}-{name}"));
            if fs::copy(&src, &dst).is_ok() {
                kept.push(dst);
            }
        }
        kept
    }

    /// Removes the tree. Every process using it must have been stopped.
    pub fn remove(&mut self) -> Result<(), PgError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PgError::io(
                "cannot remove the work directory",
                &self.root,
                e,
            )),
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Removes work directories of cbob processes that no longer exist (killed with SIGKILL, power
/// loss), stopping a PostgreSQL server still running in one first. Returns what it did.
pub fn sweep_stale(work_root: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(work_root) else {
        return done;
    };
    for dir in entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
    {
        match read_pid(&dir.join("cbob.pid")) {
            Some(pid) if pid_alive(pid) => continue,
            // Being created right now by a run that has not written its pid yet.
            None if dir
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60)) =>
            {
                continue;
            }
            _ => {}
        }
        let pgdata = dir.join("pgdata");
        if let Some(pm) = read_pid(&pgdata.join("postmaster.pid")).filter(|p| pid_alive(*p)) {
            let cmdline = fs::read(format!("/proc/{pm}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*pgdata.to_string_lossy()) {
                unsafe { libc::kill(pm, libc::SIGQUIT) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while pid_alive(pm) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if pid_alive(pm) {
                    unsafe { libc::kill(pm, libc::SIGKILL) };
                }
                done.push(format!(
                    "stopped PostgreSQL (PID {pm}) left running in {}",
                    dir.display()
                ));
            }
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => done.push(format!("removed {} left by an earlier run", dir.display())),
            Err(e) => done.push(format!("could not remove {}: {e}", dir.display())),
        }
    }
    done
}

/// The tail of the server log, for error messages.
pub fn server_log_tail(ws: &Workspace) -> String {
    file_tail(&ws.server_log(), 3000)
}
