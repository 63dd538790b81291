//! pgBackRest and PostgreSQL 15 for tests: run `pgbackrest` against a repository directory and
//! restore a repository into a throwaway server to prove what it contains.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root every PostgreSQL and
//! pgBackRest program runs as the `postgres` user (`CommandExt::uid/gid`, which also drops
//! supplementary groups), with a cleared environment and a readable working directory
//! (reference/pgbackrest-lab.md §2, §7). As any other user, programs run as that user.
//! Repositories only need to be readable (and their parents traversable) by that user.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::process::{log_tail, set_mode, spawn_thread_owned};

/// PostgreSQL major version of the fixture.
pub const PG_VERSION: &str = "15";

/// How long recovery of a restored repository may take before the test fails.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(180);

/// What a restore of the fixture must find (see `tests/fixtures/expected.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedValues {
    /// `SELECT count(*) FROM pgbench_accounts` in `postgres`.
    pub pgbench_accounts: i64,
    /// `SELECT count(*) FROM pgbench_history` in `postgres`.
    pub pgbench_history: i64,
    /// `SELECT max(id) FROM marker` in `appdb`: 5 proves the WAL after the last backup replayed.
    pub marker_max: i64,
    /// `SELECT count(*) FROM customers` in `appdb`.
    pub customers: i64,
    /// `SELECT count(*) FROM pg_database WHERE datallowconn`.
    pub databases: i64,
}

/// `/usr/lib/postgresql/<version>/bin`, or a clear failure.
pub fn pg_bin_dir(version: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
    assert!(
        dir.join("postgres").is_file(),
        "PostgreSQL {version} binaries not found at {}: apt-get install -y postgresql-{version}",
        dir.display()
    );
    dir
}

/// The `pgbackrest` program, or a clear failure.
pub fn pgbackrest_bin() -> PathBuf {
    crate::locate::which("pgbackrest").unwrap_or_else(|| {
        panic!("pgbackrest is not on PATH: apt-get install -y pgbackrest (Debian 12 ships 2.45)")
    })
}

/// uid and gid that PostgreSQL programs run as: `postgres` when we are root, else `None`
/// (run as ourselves).
pub fn pg_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    });
    Some(ids.unwrap_or_else(|| {
        panic!("running as root but there is no `postgres` user (PostgreSQL refuses root): apt-get install -y postgresql-15")
    }))
}

/// Makes `path` (recursively) owned by the PostgreSQL user when running as root.
pub fn chown_to_pg_user(path: &Path) {
    let Some((uid, gid)) = pg_user() else {
        return;
    };
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        if p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())) {
                stack.push(e.expect("dir entry").path());
            }
        }
    }
}

/// A command for `program` that runs as the PostgreSQL user with a clean environment
/// (PATH = the PG `bin_dir`, `/usr/bin`, `/bin`; HOME = `cwd`; LANG = C.UTF-8) in `cwd`,
/// which must be readable by that user.
pub fn as_pg_user(program: impl AsRef<Path>, bin_dir: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(program.as_ref());
    c.env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", cwd)
        .env("LANG", "C.UTF-8")
        .current_dir(cwd)
        .stdin(Stdio::null());
    if let Some((uid, gid)) = pg_user() {
        c.uid(uid).gid(gid);
    }
    c
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()))
}

fn require_ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory for one pgBackRest/PostgreSQL session: config, lock/log/spool dirs, a
/// socket dir, a tablespace map dir and a data dir slot, all usable by the PostgreSQL user.
/// Removed on drop.
#[derive(Debug)]
pub struct PgWork {
    dir: tempfile::TempDir,
    /// The repository (`repo1-path`).
    pub repo: PathBuf,
    /// Stanza name.
    pub stanza: String,
    /// PostgreSQL binaries.
    pub bin_dir: PathBuf,
}

impl PgWork {
    /// Prepares a scratch dir and a pgBackRest config for `repo` / `stanza`.
    pub fn new(repo: &Path, stanza: &str) -> PgWork {
        let repo =
            fs::canonicalize(repo).unwrap_or_else(|e| panic!("repository {}: {e}", repo.display()));
        let dir = tempfile::Builder::new()
            .prefix("cbob-pg-")
            .tempdir()
            .expect("create pg scratch dir");
        set_mode(dir.path(), 0o755);
        let w = PgWork {
            dir,
            repo,
            stanza: stanza.to_string(),
            bin_dir: pg_bin_dir(PG_VERSION),
        };
        for d in ["run/lock", "run/log", "run/spool", "sock", "tablespaces"] {
            fs::create_dir_all(w.path().join(d)).expect("create pg scratch subdir");
        }
        set_mode(&w.path().join("sock"), 0o700);
        for d in ["run", "sock", "tablespaces"] {
            chown_to_pg_user(&w.path().join(d));
        }
        // Options live in a config file, not the command line: pgBackRest rejects some options
        // on the command line of commands that don't use them, and `restore` copies only
        // command-line options into `restore_command`, so `archive-get` needs the file anyway.
        let conf = format!(
            "[global]\nrepo1-path={repo}\nlock-path={w}/run/lock\nlog-path={w}/run/log\n\
             spool-path={w}/run/spool\nlog-level-console=warn\nlog-level-file=detail\nprocess-max=2\n\
             \n[{stanza}]\npg1-path={w}/pgdata\npg1-socket-path={w}/sock\npg1-port=5432\n",
            repo = w.repo.display(),
            w = w.path().display(),
        );
        fs::write(w.config(), conf).expect("write pgbackrest.conf");
        w
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `pgbackrest.conf`.
    pub fn config(&self) -> PathBuf {
        self.path().join("pgbackrest.conf")
    }

    /// Where a restore goes.
    pub fn pgdata(&self) -> PathBuf {
        self.path().join("pgdata")
    }

    /// `pgbackrest --config=<generated> --stanza=<stanza> <args>` as the PostgreSQL user.
    /// Exit status is not checked: pgBackRest returns 0 for several failures (see
    /// [`pgbackrest_info_json`]); callers decide.
    pub fn pgbackrest(&self, args: &[&str]) -> Output {
        let mut c = as_pg_user(pgbackrest_bin(), &self.bin_dir, self.path());
        c.arg(format!("--config={}", self.config().display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args);
        run(&mut c, "pgbackrest")
    }

    /// A PostgreSQL program from the bin dir, as the PostgreSQL user, talking to this work
    /// dir's socket.
    pub fn pg_command(&self, program: &str) -> Command {
        let mut c = as_pg_user(self.bin_dir.join(program), &self.bin_dir, self.path());
        c.env("PGHOST", self.path().join("sock"))
            .env("PGPORT", "5432")
            .env("PGUSER", "postgres");
        c
    }
}

/// Runs `pgbackrest <args>` against `repo` / `stanza` with a generated config.
pub fn pgbackrest(repo: &Path, stanza: &str, args: &[&str]) -> Output {
    PgWork::new(repo, stanza).pgbackrest(args)
}

/// `pgbackrest info --output=json` for `stanza`: the stanza's object (`status`, `db`,
/// `archive`, `backup`). pgBackRest exits 0 even for a missing stanza or an unreadable repo;
/// check `["status"]["code"] == 0`.
pub fn pgbackrest_info_json(repo: &Path, stanza: &str) -> serde_json::Value {
    let out = require_ok(
        pgbackrest(repo, stanza, &["info", "--output=json"]),
        "pgbackrest info",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pgbackrest info printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stanza).cloned())
        .unwrap_or_else(|| panic!("pgbackrest info has no stanza {stanza}: {v}"))
}

/// A restored PostgreSQL server. Drop stops it (immediate) and removes the data: also when
/// the test panics. The process is also tied to the creating thread with PDEATHSIG(SIGQUIT),
/// so a killed test never leaves a postmaster behind.
struct Server<'a> {
    work: &'a PgWork,
    child: Option<Child>,
    log: PathBuf,
}

impl Server<'_> {
    fn stop(&mut self, mode: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let mut c = self.work.pg_command("pg_ctl");
            c.arg("-D")
                .arg(self.work.pgdata())
                .args(["-m", mode, "-w", "-t", "60", "stop"]);
            let _ = c.output();
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `psql -XAtq -d db -c sql`; Err(stderr) on failure.
    fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut c = self.work.pg_command("psql");
        c.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        let out = run(&mut c, "psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn query_i64(&self, db: &str, sql: &str) -> i64 {
        let s = self.psql(db, sql).unwrap_or_else(|e| {
            panic!(
                "query `{sql}` in {db}: {e}\nserver log:\n{}",
                log_tail(&self.log, 3000)
            )
        });
        s.parse()
            .unwrap_or_else(|_| panic!("query `{sql}` in {db} returned {s:?}, not an integer"))
    }
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

/// Restores the latest backup of `repo` / `stanza` into a temporary data dir, replays the whole
/// WAL archive, starts PostgreSQL 15 (as the PostgreSQL user, socket only, private socket dir,
/// no SSL, no preload libraries, no archiving, `hot_standby=off`), waits for promotion, reads
/// the fixture's values, stops the server and removes everything.
///
/// Panics with pgBackRest's output or the server log when any step fails.
pub fn restore_and_query(repo: &Path, stanza: &str) -> ExpectedValues {
    let work = PgWork::new(repo, stanza);
    let info = pgbackrest_info_json(repo, stanza);
    assert!(
        info["status"]["code"] == 0,
        "pgbackrest info for {stanza} at {} is not ok (is the repository readable by the postgres user?): {}",
        work.repo.display(),
        info["status"]
    );

    let pgdata = work.pgdata();
    fs::create_dir(&pgdata).expect("create pgdata");
    set_mode(&pgdata, 0o700);
    chown_to_pg_user(&pgdata);
    let tablespaces = format!(
        "--tablespace-map-all={}",
        work.path().join("tablespaces").display()
    );
    // archive-mode=off: otherwise the restored server would run the source's archive_command.
    require_ok(
        work.pgbackrest(&[
            "restore",
            "--type=default",
            "--archive-mode=off",
            &tablespaces,
        ]),
        "pgbackrest restore",
    );

    // Our own minimal config: the restored postgresql.conf names certificates, sockets and
    // preload libraries of the source machine. The command line beats postgresql.auto.conf.
    let run_dir = work.path().join("run");
    let sock = work.path().join("sock");
    fs::write(run_dir.join("pg_hba.conf"), "local all all trust\n").expect("write pg_hba.conf");
    fs::write(run_dir.join("pg_ident.conf"), "").expect("write pg_ident.conf");
    let conf = run_dir.join("restore-check.conf");
    fs::write(
        &conf,
        format!(
            "listen_addresses = ''\nport = 5432\nunix_socket_directories = '{sock}'\nssl = off\n\
             shared_preload_libraries = ''\narchive_mode = off\nhot_standby = off\nfsync = off\n\
             logging_collector = off\nshared_buffers = 32MB\nmax_connections = 20\n\
             hba_file = '{run}/pg_hba.conf'\nident_file = '{run}/pg_ident.conf'\n",
            sock = sock.display(),
            run = run_dir.display()
        ),
    )
    .expect("write restore-check.conf");

    let log = run_dir.join("postgres.log");
    let log_file = fs::File::create(&log).expect("create postgres.log");
    let mut cmd = work.pg_command("postgres");
    cmd.arg("-D").arg(&pgdata);
    for (k, v) in [
        ("config_file", conf.display().to_string()),
        ("listen_addresses", String::new()),
        ("port", "5432".into()),
        ("unix_socket_directories", sock.display().to_string()),
        ("ssl", "off".into()),
        ("shared_preload_libraries", String::new()),
        ("archive_mode", "off".into()),
        ("hot_standby", "off".into()),
    ] {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    cmd.stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file);
    let child = spawn_thread_owned(&mut cmd, libc::SIGQUIT)
        .unwrap_or_else(|e| panic!("start postgres: {e}"));
    let mut server = Server {
        work: &work,
        child: Some(child),
        log,
    };

    // With hot_standby=off nothing connects until promotion; "starting up" / "not accepting
    // connections" / no socket yet are expected, anything else is a real failure.
    let started = Instant::now();
    loop {
        if let Some(st) = server.exited() {
            panic!(
                "restored postgres exited with {st} during recovery; log:\n{}",
                log_tail(&server.log, 4000)
            );
        }
        match server.psql("postgres", "SELECT pg_is_in_recovery()") {
            Ok(s) if s == "f" => break,
            Ok(_) => {}
            Err(e)
                if e.contains("starting up")
                    || e.contains("not accepting connections")
                    || e.contains("No such file")
                    || e.contains("Connection refused")
                    || e.contains("shutting down") => {}
            Err(e) => panic!(
                "connecting to the restored postgres failed: {e}\nlog:\n{}",
                log_tail(&server.log, 4000)
            ),
        }
        if started.elapsed() > RECOVERY_TIMEOUT {
            panic!(
                "restored postgres not promoted after {RECOVERY_TIMEOUT:?}; log:\n{}",
                log_tail(&server.log, 4000)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let values = ExpectedValues {
        pgbench_accounts: server.query_i64("postgres", "SELECT count(*) FROM pgbench_accounts"),
        pgbench_history: server.query_i64("postgres", "SELECT count(*) FROM pgbench_history"),
        marker_max: server.query_i64("appdb", "SELECT max(id) FROM marker"),
        customers: server.query_i64("appdb", "SELECT count(*) FROM customers"),
        databases: server.query_i64(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datallowconn",
        ),
    };
    server.stop("fast");
    values
}
