//! A real pgBackRest 2.45 repository with two full backups, for retention tests: the committed
//! fixture has one full only, and copying a full under a new label would leave its manifest
//! naming the old one.
//!
//! Made by PostgreSQL 15 + pgBackRest (as `scripts/gen-fixture.sh` does, smaller): stanza
//! `two`, `repo1-bundle=y`, zst (so these tests also cover bundles and another compression than
//! the lz4 fixture), backups full₁, diff₁ (of full₁), full₂, incr₂ (of full₂), then WAL after
//! the last backup. About 10 s on the 2-core machine, so it is made once per `target/`
//! (cached in `CARGO_TARGET_TMPDIR` under a lock, shared by every test binary that includes
//! this module) and each test works on its own copy. Bump [`VERSION`] when changing it.
//!
//! Shared by `crates/cbob-core/tests/expire.rs` and `crates/cbob-cli/tests/verify_info_expire.rs`.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cbob_test_support::fixture::make_world_readable;
use cbob_test_support::pg::{self, ExpectedValues, PgWork};
use cbob_test_support::process::spawn_thread_owned;

/// Bump to regenerate caches made by an older version of this module.
pub const VERSION: u32 = 1;
pub const STANZA: &str = "two";

/// What a restore of the latest backup with the whole archive finds.
pub const VALUES: ExpectedValues = ExpectedValues {
    pgbench_accounts: 1000,
    pgbench_history: 10,
    marker_max: 5,
    customers: 150,
    databases: 3,
};

/// A private copy of the repository; removed on drop.
pub struct TwoFulls {
    dir: tempfile::TempDir,
    /// `repo1-path`: holds `archive/two` and `backup/two`.
    pub repo: PathBuf,
}

impl TwoFulls {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A fresh copy of the (cached) repository.
pub fn copy() -> TwoFulls {
    let cached = cached_repo();
    let dir = tempfile::Builder::new()
        .prefix("cbob-two-fulls-")
        .tempdir()
        .expect("temp dir");
    chmod(dir.path(), 0o755);
    let repo = dir.path().join("repo");
    copy_tree(&cached, &repo);
    make_world_readable(&repo);
    TwoFulls { dir, repo }
}

/// The cached repository, generated on first use.
pub fn cached_repo() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(base).expect("create CARGO_TARGET_TMPDIR");
    let cache = base.join(format!("cbob-two-fulls-v{VERSION}"));
    let lock = fs::File::create(base.join(format!("cbob-two-fulls-v{VERSION}.lock")))
        .expect("create lock file");
    // Test binaries run concurrently: one generates, the others wait.
    lock.lock().expect("lock the two-fulls cache");
    if !cache.join("done").exists() {
        let _ = fs::remove_dir_all(&cache);
        let started = Instant::now();
        let scratch = generate();
        copy_tree(&scratch.path().join("repo"), &cache.join("repo"));
        make_world_readable(&cache.join("repo"));
        fs::write(cache.join("done"), format!("{:?}\n", started.elapsed()))
            .expect("write done marker");
        eprintln!(
            "two_fulls: generated a repository with two full backups in {:.1}s (cached in {})",
            started.elapsed().as_secs_f64(),
            cache.display()
        );
    }
    cache.join("repo")
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Copies regular files and directories (symlinks such as `latest` are skipped, as sync does).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for e in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let e = e.expect("dir entry");
        let t = e.file_type().expect("file type");
        let dest = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if t.is_file() {
            fs::copy(e.path(), &dest)
                .unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        }
    }
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn psql(work: &PgWork, db: &str, sql: &str) -> String {
    let mut c = work.pg_command("psql");
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
    run(c, &format!("psql {sql}"))
}

fn backup(work: &PgWork, kind: &str) {
    let out = work.pgbackrest(&[
        &format!("--type={kind}"),
        "--start-fast",
        // The segments are archived by the time the server stops (checked there): not waiting
        // for each backup's last segment saves about a second per backup.
        "--no-archive-check",
        "--compress-type=zst",
        "--repo1-bundle",
        "--repo1-retention-full=9999",
        "backup",
    ]);
    assert!(
        out.status.success(),
        "pgbackrest backup --type={kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs PostgreSQL and pgBackRest in a scratch dir; returns it (with `repo/` inside).
fn generate() -> tempfile::TempDir {
    let scratch = tempfile::Builder::new()
        .prefix("cbob-two-fulls-gen-")
        .tempdir()
        .expect("temp dir");
    chmod(scratch.path(), 0o755);
    let repo = scratch.path().join("repo");
    fs::create_dir(&repo).expect("create repo");
    pg::chown_to_pg_user(&repo);
    let work = PgWork::new(&repo, STANZA);
    let pgdata = work.pgdata();
    fs::create_dir(&pgdata).expect("create pgdata");
    chmod(&pgdata, 0o700);
    pg::chown_to_pg_user(&pgdata);

    let mut c = work.pg_command("initdb");
    c.arg("-D").arg(&pgdata).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-N",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
    ]);
    run(c, "initdb");
    let conf = format!(
        "\nport = 5432\nlisten_addresses = ''\nunix_socket_directories = '{sock}'\nwal_level = replica\n\
         archive_mode = on\narchive_command = '{pgbackrest} --config={config} --stanza={STANZA} --compress-type=zst archive-push %p'\n\
         fsync = off\nsynchronous_commit = off\nshared_buffers = 32MB\nmax_connections = 20\n",
        sock = work.path().join("sock").display(),
        pgbackrest = pg::pgbackrest_bin().display(),
        config = work.config().display(),
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(pgdata.join("postgresql.conf"))
        .expect("open postgresql.conf");
    std::io::Write::write_all(&mut f, conf.as_bytes()).expect("append postgresql.conf");

    let log = fs::File::create(work.path().join("run/postgres.log")).expect("postgres.log");
    let mut server = work.pg_command("postgres");
    server
        .arg("-D")
        .arg(&pgdata)
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let mut child = spawn_thread_owned(&mut server, libc_sigquit()).expect("start postgres");
    let started = Instant::now();
    loop {
        let mut c = work.pg_command("psql");
        c.args(["-X", "-A", "-t", "-q", "-c", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if c.status().map(|s| s.success()).unwrap_or(false) {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the generator's postgres exited with {st}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "postgres did not start in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stop it whatever happens next.
    struct Stop<'a>(&'a PgWork, std::process::Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            if self.1.try_wait().ok().flatten().is_none() {
                let mut c = self.0.pg_command("pg_ctl");
                c.arg("-D")
                    .arg(self.0.pgdata())
                    .args(["-m", "immediate", "-w", "stop"]);
                let _ = c.output();
            }
            let _ = self.1.wait();
        }
    }
    let mut guard = Stop(&work, child);

    let out = work.pgbackrest(&["stanza-create"]);
    assert!(
        out.status.success(),
        "stanza-create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    psql(
        &work,
        "postgres",
        "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, abalance int NOT NULL);
         INSERT INTO pgbench_accounts SELECT g, 0 FROM generate_series(1, 1000) g;
         CREATE TABLE pgbench_history (tid int, delta int);",
    );
    psql(&work, "postgres", "CREATE DATABASE appdb");
    psql(
        &work,
        "appdb",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g;
         CREATE TABLE marker (id int PRIMARY KEY, phase text NOT NULL);
         INSERT INTO marker VALUES (1, 'before-full-1');",
    );
    backup(&work, "full");
    psql(
        &work,
        "postgres",
        "INSERT INTO pgbench_history SELECT g, g FROM generate_series(1, 10) g",
    );
    psql(
        &work,
        "appdb",
        "INSERT INTO marker VALUES (2, 'before-diff-1')",
    );
    backup(&work, "diff");
    psql(
        &work,
        "appdb",
        "INSERT INTO marker VALUES (3, 'before-full-2');
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(101, 150) g;",
    );
    backup(&work, "full");
    psql(
        &work,
        "appdb",
        "INSERT INTO marker VALUES (4, 'before-incr-2')",
    );
    backup(&work, "incr");
    psql(
        &work,
        "appdb",
        "INSERT INTO marker VALUES (5, 'after-incr-2')",
    );
    psql(&work, "postgres", "SELECT pg_switch_wal()");

    // A fast shutdown archives every finished segment first.
    let mut c = work.pg_command("pg_ctl");
    c.arg("-D")
        .arg(&pgdata)
        .args(["-m", "fast", "-w", "-t", "60", "stop"]);
    run(c, "pg_ctl stop");
    let _ = guard.1.wait();
    let ready = fs::read_dir(pgdata.join("pg_wal/archive_status"))
        .expect("archive_status")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        })
        .count();
    assert_eq!(
        ready, 0,
        "{ready} WAL segments were not archived at shutdown"
    );
    drop(guard);
    drop(work);
    scratch
}

fn libc_sigquit() -> i32 {
    // SIGQUIT: PostgreSQL's immediate shutdown, if the test process dies while it runs.
    3
}
