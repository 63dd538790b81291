//! `cbob postgres`: one long-lived local PostgreSQL per stanza, for restoring and querying
//! backups by hand.
//!
//! Everything of an instance lives under `$CBOB_BASE_PATH/postgres/<stanza>/` (owned by the
//! PostgreSQL user, 0700): `data/` (initdb's cluster, or whatever `pgbackrest restore` put
//! there), `run/` (the Unix socket), `postgres.log`, `postgresql.conf`/`pg_hba.conf`/
//! `pg_ident.conf` (cbob's, used instead of the data directory's), `pgbackrest.conf` (the
//! destination as `repo1-path`, this data directory as `pg1-path`), `pgbackrest/` (its lock,
//! log and spool directories) and `instance.json` (stanza, port, version).
//!
//! The port is chosen once per stanza and kept: a hash of the stanza name picks the first
//! candidate in 55432..=56431, skipping ports other instances hold or something listens on.
//! The server listens on its private socket and on localhost; the socket is `trust` (only the
//! PostgreSQL user and root can enter its directory), TCP needs a password (`scram-sha-256`).
//! It starts with the same overrides as restore-check (no SSL files, no preload libraries, no
//! archiving), so a restored managed-service cluster starts too.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::command::{PgEnv, run_command};
use super::controldata::ControlData;
use super::error::PgError;
use super::programs::{INSTANCE_PROGRAMS, PgBinaries, find_pg_binaries};
use super::settings::{Listen, command_line, render_conf, server_settings};
use super::user::{OsUser, can_read, check_reachable, chown, chown_tree};

/// First port handed out, and how many candidates there are.
pub const PORT_BASE: u16 = 55432;
pub const PORT_RANGE: u16 = 1000;

/// What `instance.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub stanza: String,
    pub port: u16,
    pub pg_version: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Where one stanza's instance lives.
#[derive(Debug, Clone)]
pub struct Instance {
    pub stanza: String,
    pub root: PathBuf,
}

/// An instance as `status` and `list` show it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub stanza: String,
    pub initialised: bool,
    pub running: bool,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub pg_version: Option<String>,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub pgbackrest_conf: PathBuf,
}

impl Instance {
    /// The instance of `stanza` under `base` (`$CBOB_BASE_PATH/postgres`).
    pub fn new(base: &Path, stanza: &str) -> Self {
        Self {
            stanza: stanza.to_string(),
            root: base.join(stanza),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }
    pub fn conf_file(&self) -> PathBuf {
        self.root.join("postgresql.conf")
    }
    pub fn hba_file(&self) -> PathBuf {
        self.root.join("pg_hba.conf")
    }
    pub fn ident_file(&self) -> PathBuf {
        self.root.join("pg_ident.conf")
    }
    pub fn pgbackrest_conf(&self) -> PathBuf {
        self.root.join("pgbackrest.conf")
    }
    pub fn meta_file(&self) -> PathBuf {
        self.root.join("instance.json")
    }

    pub fn meta(&self) -> Option<InstanceMeta> {
        serde_json::from_slice(&fs::read(self.meta_file()).ok()?).ok()
    }

    /// initdb (or a restore) has produced a cluster.
    pub fn initialised(&self) -> bool {
        self.data_dir().join("PG_VERSION").is_file()
    }

    /// The major version of the cluster in the data directory.
    pub fn data_version(&self) -> Option<String> {
        fs::read_to_string(self.data_dir().join("PG_VERSION"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The postmaster's PID when one runs on this data directory.
    pub fn running_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        (alive && String::from_utf8_lossy(&cmdline).contains("postgres")).then_some(pid as u32)
    }

    pub fn status(&self) -> InstanceStatus {
        let meta = self.meta();
        let pid = self.running_pid();
        InstanceStatus {
            stanza: self.stanza.clone(),
            initialised: self.initialised(),
            running: pid.is_some(),
            pid,
            port: meta.as_ref().map(|m| m.port),
            pg_version: self.data_version().or(meta.map(|m| m.pg_version)),
            data_dir: self.data_dir(),
            socket_dir: self.socket_dir(),
            log_file: self.log_file(),
            pgbackrest_conf: self.pgbackrest_conf(),
        }
    }
}

/// The instances that exist under `base`.
pub fn instances(base: &Path) -> Vec<Instance> {
    let mut out: Vec<Instance> = fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join("instance.json").is_file())
                .map(|e| Instance::new(base, &e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.stanza.cmp(&b.stanza));
    out
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A port for `stanza`: its recorded one, else the first free candidate from a hash of the name.
pub fn choose_port(base: &Path, stanza: &str) -> Result<u16, PgError> {
    if let Some(m) = Instance::new(base, stanza).meta() {
        return Ok(m.port);
    }
    let taken: Vec<u16> = instances(base)
        .iter()
        .filter(|i| i.stanza != stanza)
        .filter_map(|i| i.meta().map(|m| m.port))
        .collect();
    let start = fnv1a(stanza) % u32::from(PORT_RANGE);
    (0..u32::from(PORT_RANGE))
        .map(|i| PORT_BASE + ((start + i) % u32::from(PORT_RANGE)) as u16)
        .find(|p| !taken.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| {
            PgError::Failed(format!(
                "no free port in {PORT_BASE}..{} for a local PostgreSQL",
                PORT_BASE + PORT_RANGE - 1
            ))
        })
}

/// What `cbob postgres` needs to manage instances.
#[derive(Debug, Clone)]
pub struct Instances {
    /// `$CBOB_BASE_PATH/postgres`.
    pub base: PathBuf,
    pub user: Option<OsUser>,
    /// `CBOB_PG_BIN_DIR`.
    pub pg_bin_dir: Option<PathBuf>,
}

impl Instances {
    fn binaries(&self, version: &str) -> Result<PgBinaries, PgError> {
        find_pg_binaries(version, self.pg_bin_dir.as_deref(), INSTANCE_PROGRAMS)
    }

    fn env(&self, inst: &Instance, bins: &PgBinaries) -> PgEnv {
        PgEnv::new(self.user.clone(), &bins.dir, &inst.root)
    }

    fn write(&self, path: &Path, text: &str, mode: u32) -> Result<(), PgError> {
        fs::write(path, text).map_err(|e| PgError::io("cannot write", path, e))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| PgError::io("cannot chmod", path, e))?;
        chown(path, self.user.as_ref())
    }

    /// Creates the instance of `stanza`: an empty cluster of PostgreSQL `version` (initdb), the
    /// server's config files and a pgBackRest config pointing at `repo` (the local destination).
    /// Refuses a data directory that already holds a cluster unless `force` (then it is
    /// re-created; never while it runs).
    pub async fn initdb(
        &self,
        stanza: &str,
        version: &str,
        repo: &Path,
        force: bool,
        cancel: &CancellationToken,
    ) -> Result<InstanceStatus, PgError> {
        let bins = self.binaries(version)?;
        fs::create_dir_all(&self.base).map_err(|e| PgError::io("cannot create", &self.base, e))?;
        fs::set_permissions(&self.base, fs::Permissions::from_mode(0o711))
            .map_err(|e| PgError::io("cannot chmod", &self.base, e))?;
        check_reachable(&self.base, self.user.as_ref())?;
        let inst = Instance::new(&self.base, stanza);
        if let Some(pid) = inst.running_pid() {
            return Err(PgError::Failed(format!(
                "the PostgreSQL of stanza {stanza} is running (PID {pid}); stop it first: cbob postgres stop --cluster {stanza}"
            )));
        }
        if inst.data_dir().exists()
            && fs::read_dir(inst.data_dir())
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            if !force {
                return Err(PgError::Failed(format!(
                    "{} already holds a cluster; use --force to delete it and initdb again",
                    inst.data_dir().display()
                )));
            }
            fs::remove_dir_all(inst.data_dir())
                .map_err(|e| PgError::io("cannot remove", inst.data_dir(), e))?;
        }
        let port = choose_port(&self.base, stanza)?;
        for d in [
            inst.root.clone(),
            inst.data_dir(),
            inst.socket_dir(),
            inst.root.join("pgbackrest"),
            inst.root.join("pgbackrest/lock"),
            inst.root.join("pgbackrest/log"),
            inst.root.join("pgbackrest/spool"),
        ] {
            if !d.exists() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| PgError::io("cannot create", &d, e))?;
            }
        }
        chown_tree(&inst.root, self.user.as_ref())?;

        let env = self.env(&inst, &bins);
        let mut cmd = env.pg_command("initdb");
        cmd.arg("-D").arg(inst.data_dir()).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--data-checksums",
            "--auth=trust",
        ]);
        let out = run_command(cmd, "initdb", None, cancel).await?;
        if !out.success() {
            return Err(PgError::Failed(format!(
                "initdb failed ({}): {}",
                out.status,
                super::last_lines(&out.diagnostics(), 10)
            )));
        }
        self.write(
            &inst.hba_file(),
            "# cbob postgres: the socket directory is private to the PostgreSQL user\n\
             local all all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n",
            0o600,
        )?;
        self.write(&inst.ident_file(), "", 0o600)?;
        let pb = inst.root.join("pgbackrest");
        self.write(
            &inst.pgbackrest_conf(),
            &format!(
                "# Written by `cbob postgres initdb`: restore the destination's backups of {stanza} into this instance.\n\
                 [global]\nrepo1-path={repo}\nlock-path={pb}/lock\nlog-path={pb}/log\nspool-path={pb}/spool\n\
                 log-level-console=info\nlog-level-file=detail\n\n[{stanza}]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
                repo = repo.display(),
                pb = pb.display(),
                data = inst.data_dir().display(),
                sock = inst.socket_dir().display(),
            ),
            0o644,
        )?;
        let meta = InstanceMeta {
            stanza: stanza.to_string(),
            port,
            pg_version: version.to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.write(
            &inst.meta_file(),
            &serde_json::to_string_pretty(&meta).expect("meta serializes"),
            0o644,
        )?;
        Ok(inst.status())
    }

    /// Whether the PostgreSQL user can read `repo`'s `backup.info` of `stanza` (a warning for
    /// `initdb` when not: `pgbackrest restore` runs as that user).
    pub fn repo_readable(&self, repo: &Path, stanza: &str) -> Result<(), String> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let dir = repo.join("backup").join(stanza);
        check_reachable(&dir, Some(user)).map_err(|e| e.to_string())?;
        let file = dir.join("backup.info");
        match file.metadata() {
            Ok(md) if can_read(&md, user) => Ok(()),
            Ok(_) => Err(format!(
                "the `{}` user cannot read {}",
                user.name,
                file.display()
            )),
            Err(e) => Err(format!("{}: {e}", file.display())),
        }
    }

    /// Starts the instance of `stanza` in the background (it outlives cbob) and waits up to
    /// `wait` for it to accept connections (a restored cluster first replays WAL).
    pub async fn start(
        &self,
        stanza: &str,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<String, PgError> {
        let inst = Instance::new(&self.base, stanza);
        let meta = inst.meta().filter(|_| inst.initialised()).ok_or_else(|| {
            PgError::Failed(format!(
                "stanza {stanza} has no local PostgreSQL; create it first: cbob postgres initdb --cluster {stanza}"
            ))
        })?;
        if let Some(pid) = inst.running_pid() {
            return Ok(format!(
                "{stanza}: already running (PID {pid}) on port {}",
                meta.port
            ));
        }
        let version = inst.data_version().unwrap_or(meta.pg_version.clone());
        let bins = self.binaries(&version)?;
        let env = self.env(&inst, &bins);

        let mut cd = env.pg_command("pg_controldata");
        cd.arg("-D").arg(inst.data_dir());
        let control = run_command(cd, "pg_controldata", None, cancel)
            .await
            .ok()
            .filter(|o| o.success())
            .map(|o| ControlData::parse(&o.stdout));
        let (sock, hba, ident) = (inst.socket_dir(), inst.hba_file(), inst.ident_file());
        let settings = server_settings(
            &Listen {
                port: meta.port,
                socket_dir: &sock,
                tcp_localhost: true,
                hba_file: &hba,
                ident_file: &ident,
                max_connections: 100,
            },
            control.as_ref(),
        );
        self.write(&inst.conf_file(), &render_conf(&settings), 0o644)?;

        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(inst.log_file())
            .map_err(|e| PgError::io("cannot open", inst.log_file(), e))?;
        chown(&inst.log_file(), self.user.as_ref())?;
        let log2 = log
            .try_clone()
            .map_err(|e| PgError::io("cannot open", inst.log_file(), e))?;
        let mut cmd = env.detached_command(bins.program("postgres"));
        cmd.arg("-D")
            .arg(inst.data_dir())
            .arg("-c")
            .arg(format!("config_file={}", inst.conf_file().display()))
            .args(command_line(&settings))
            .stdout(std::process::Stdio::from(log))
            .stderr(std::process::Stdio::from(log2));
        // Its own session: it outlives cbob and no terminal signal reaches it.
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        // A std child: dropping it neither kills nor tracks the server.
        let child = cmd.as_std_mut().spawn().map_err(|e| {
            PgError::Failed(format!(
                "cannot start {}: {e}",
                bins.program("postgres").display()
            ))
        })?;
        let pid = child.id();
        drop(child);

        let started = Instant::now();
        let mut psql = env.clone();
        psql.env.extend([
            ("PGHOST".to_string(), sock.display().to_string()),
            ("PGPORT".to_string(), meta.port.to_string()),
            ("PGUSER".to_string(), "postgres".to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), "5".to_string()),
        ]);
        loop {
            // SAFETY: signal 0 only checks for existence; the child is not reaped by us, so a
            // dead one shows as a zombie: look at /proc instead.
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead =
                state.is_empty() || state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'));
            if dead {
                return Err(PgError::Failed(format!(
                    "PostgreSQL of stanza {stanza} exited during startup; log {}:\n{}",
                    inst.log_file().display(),
                    super::file_tail(&inst.log_file(), 3000)
                )));
            }
            let mut q = psql.pg_command("psql");
            q.args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-d",
                "postgres",
                "-c",
                "SELECT pg_is_in_recovery()",
            ]);
            if let Ok(out) = run_command(q, "psql", None, cancel).await
                && out.success()
                && out.stdout.trim() == "f"
            {
                return Ok(format!(
                    "{stanza}: started PostgreSQL {version} (PID {pid}), accepting connections on port {} \
                     (socket {}, and localhost with a password)",
                    meta.port,
                    sock.display()
                ));
            }
            if started.elapsed() > wait {
                return Ok(format!(
                    "{stanza}: started PostgreSQL {version} (PID {pid}) on port {}; not accepting connections yet \
                     (recovering a restored backup?), follow {}",
                    meta.port,
                    inst.log_file().display()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = cancel.cancelled() => return Err(PgError::Interrupted),
            }
        }
    }

    /// Stops the instance of `stanza` (fast shutdown); not running is fine.
    pub async fn stop(&self, stanza: &str, cancel: &CancellationToken) -> Result<String, PgError> {
        let inst = Instance::new(&self.base, stanza);
        let Some(pid) = inst.running_pid() else {
            return Ok(format!("{stanza}: not running"));
        };
        let version = inst
            .data_version()
            .or(inst.meta().map(|m| m.pg_version))
            .unwrap_or_default();
        let bins = self.binaries(&version)?;
        let env = self.env(&inst, &bins);
        let mut cmd = env.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(inst.data_dir())
            .args(["-m", "fast", "-w", "-t", "300", "stop"]);
        let out = run_command(cmd, "pg_ctl stop", None, cancel).await?;
        if !out.success() {
            return Err(PgError::Failed(format!(
                "pg_ctl stop of stanza {stanza} (PID {pid}) failed ({}): {}",
                out.status,
                super::last_lines(&out.diagnostics(), 5)
            )));
        }
        Ok(format!("{stanza}: stopped (was PID {pid})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stable_and_distinct() {
        let base = std::env::temp_dir().join(format!("cbob-inst-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let p1 = choose_port(&base, "abc123").unwrap();
        assert!((PORT_BASE..PORT_BASE + PORT_RANGE).contains(&p1));
        // Record it as an instance; another stanza hashing anywhere never gets the same port.
        let inst = Instance::new(&base, "abc123");
        fs::create_dir_all(&inst.root).unwrap();
        let meta = InstanceMeta {
            stanza: "abc123".into(),
            port: p1,
            pg_version: "15".into(),
            created_at: String::new(),
        };
        fs::write(inst.meta_file(), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(choose_port(&base, "abc123").unwrap(), p1);
        for other in ["def456", "x", "y", "z"] {
            assert_ne!(choose_port(&base, other).unwrap(), p1);
        }
        assert_eq!(instances(&base).len(), 1);
        fs::remove_dir_all(&base).unwrap();
    }
}
