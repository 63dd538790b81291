//! restore-check against real pgBackRest 2.45 and PostgreSQL 15, on the committed fixture and on
//! damaged copies of it (reference/pgbackrest-lab.md §6, §9). Every test also proves the cleanup:
//! no work directory and no process left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cbob_core::restore::{
    CancellationToken, RecoveryTarget, RestoreCheckOptions, RestoreCheckRequest, RestoreError,
    RunReport, StanzaReport, StepStatus, run_restore_check,
};
use cbob_core::storage::{ProviderRegistry, ProviderSpec};
use cbob_test_support::fixture::{self, Fixture};
use cbob_test_support::pg;

/// A fixture copy plus a private work root, both reachable by the PostgreSQL user.
struct Setup {
    fx: Fixture,
    work: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let fx = fixture::extract();
        let work = tempfile::Builder::new()
            .prefix("cbob-rc-")
            .tempdir()
            .unwrap();
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Self { fx, work }
    }

    fn work_root(&self) -> PathBuf {
        self.work.path().join("work")
    }

    fn options(&self) -> RestoreCheckOptions {
        let mut o = RestoreCheckOptions::new(self.work_root());
        o.logs_dir = Some(self.work.path().join("logs"));
        o.recovery_timeout = Duration::from_secs(180);
        o
    }

    /// The fixture's archive directory of timeline 1, log 0.
    fn wal_dir(&self, stanza: &str) -> PathBuf {
        self.fx
            .repo
            .join(format!("archive/{stanza}/15-1/0000000100000000"))
    }

    fn wal_file(&self, segment: &str) -> PathBuf {
        let dir = self.wal_dir(&self.fx.stanza);
        fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{segment}-"))
            })
            .unwrap_or_else(|| panic!("no WAL {segment} in {}", dir.display()))
    }

    /// A second stanza: the fixture's stanza directories copied under a new name (nothing in
    /// the repository files names the stanza).
    fn copy_stanza(&self, name: &str) {
        for top in ["archive", "backup"] {
            let from = self.fx.repo.join(top).join(&self.fx.stanza);
            let to = self.fx.repo.join(top).join(name);
            let st = Command::new("cp")
                .arg("-a")
                .arg(&from)
                .arg(&to)
                .status()
                .unwrap();
            assert!(st.success(), "cp -a {} {}", from.display(), to.display());
        }
    }
}

async fn run_on(
    repo: PathBuf,
    options: RestoreCheckOptions,
    cancel: CancellationToken,
) -> Result<RunReport, RestoreError> {
    let spec = ProviderSpec::local(&repo);
    let dest = ProviderRegistry::new().build(&spec).await.unwrap();
    run_restore_check(
        RestoreCheckRequest {
            dest,
            dest_description: spec.describe(),
            local_root: Some(repo),
            options,
        },
        cancel,
    )
    .await
}

fn run(repo: &Path, options: RestoreCheckOptions) -> RunReport {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_on(
        repo.to_path_buf(),
        options,
        CancellationToken::new(),
    ))
    .expect("restore-check ran")
}

fn step<'a>(s: &'a StanzaReport, name: &str) -> &'a cbob_core::restore::StepReport {
    s.step(name)
        .unwrap_or_else(|| panic!("no step {name} in {:#?}", s.steps))
}

fn timings(s: &StanzaReport) -> String {
    s.steps
        .iter()
        .map(|st| {
            format!(
                "{}={:.2}s({})",
                st.name,
                st.duration_seconds,
                st.status.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Processes whose command line mentions `needle` (other than this test process).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle)
                .then(|| format!("{}: {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Nothing of the run is left: no work directory, no process using one.
fn assert_clean(setup: &Setup) {
    let root = setup.work_root();
    let left: Vec<_> = fs::read_dir(&root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "work directories left behind: {left:?}");
    let procs = processes_mentioning(&root.to_string_lossy());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}

fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xFF;
    fs::write(path, bytes).unwrap();
}

#[test]
fn fixture_passes_reaching_the_newest_wal_and_the_expected_values() {
    let setup = Setup::new();
    let v = setup.fx.expected.values;
    let mut o = setup.options();
    // The user SQL checks prove the data: they fail the run unless the restore holds exactly
    // the fixture's values (marker 5 exists only in the WAL after the last backup).
    o.sql_checks = Some(format!(
        "DO $$ BEGIN
           IF (SELECT count(*) FROM pgbench_accounts) <> {a} THEN RAISE EXCEPTION 'pgbench_accounts'; END IF;
           IF (SELECT count(*) FROM pgbench_history) <> {h} THEN RAISE EXCEPTION 'pgbench_history'; END IF;
         END $$;
         \\connect appdb
         DO $$ BEGIN
           IF (SELECT max(id) FROM marker) <> {m} THEN RAISE EXCEPTION 'marker_max'; END IF;
           IF (SELECT count(*) FROM customers) <> {c} THEN RAISE EXCEPTION 'customers'; END IF;
         END $$;
         SELECT 'marker_max=' || max(id) FROM marker;
         SELECT 'stanza=' || :'stanza';",
        a = v.pgbench_accounts,
        h = v.pgbench_history,
        m = v.marker_max,
        c = v.customers
    ));
    let report = run(&setup.fx.repo, o);
    assert!(report.ok, "{}", report.to_text());
    let s = &report.stanzas[0];
    eprintln!(
        "fixture restore-check steps: {} total={:.2}s",
        timings(s),
        s.duration_seconds
    );
    for name in [
        "inspect",
        "prepare",
        "restore",
        "wal-archive",
        "start",
        "recover",
        "recovery-end",
        "databases",
        "amcheck",
        "pg_dump",
        "sql",
        "stop",
        "checksums",
        "cleanup",
    ] {
        assert_eq!(
            step(s, name).status,
            StepStatus::Ok,
            "{name}: {}",
            report.to_text()
        );
    }
    let latest = setup.fx.expected.backups.last().unwrap();
    assert_eq!(s.backup.as_ref().unwrap().label, latest.label);
    assert_eq!(s.pg_version.as_deref(), Some("15"));
    // Recovery reached the newest archived segment, per the history switch point.
    assert_eq!(
        s.recovery.archive_max.as_deref(),
        Some(setup.fx.expected.wal_max.as_str())
    );
    assert_eq!(
        s.recovery.end_segment.as_deref(),
        Some(setup.fx.expected.wal_max.as_str())
    );
    assert_eq!(s.recovery.reached, Some(true));
    assert_eq!(s.recovery.timeline, Some(2));
    assert_eq!(s.databases.len() as i64, v.databases);
    assert!(s.indexes_checked > 400, "{}", s.indexes_checked);
    assert_eq!(s.dumps.len(), s.databases.len());
    assert!(s.dumps.iter().all(|d| d.error.is_none() && d.bytes > 0));
    assert_eq!(s.checksums_ok, Some(true));
    let sql = &step(s, "sql").detail;
    assert!(
        sql.contains(&format!("marker_max={}", v.marker_max)),
        "{sql}"
    );
    assert!(
        sql.contains(&format!("stanza={}", setup.fx.stanza)),
        "{sql}"
    );
    // The fixture is world-readable: read in place, nothing staged.
    assert_eq!(s.repository.as_ref().unwrap().mode, "in-place");
    assert_eq!(step(s, "stage").status, StepStatus::Skipped);
    assert!(s.logs.is_empty(), "logs are kept only for failed checks");
    assert_clean(&setup);
}

#[test]
fn unreadable_local_destination_is_staged() {
    let setup = Setup::new();
    // What `cbob sync` running as root writes: pgBackRest's modes, root-owned.
    Command::new("chmod")
        .args(["-R", "u=rwX,g=rX,o="])
        .arg(&setup.fx.repo)
        .status()
        .unwrap();
    let report = run(&setup.fx.repo, setup.options());
    assert!(report.ok, "{}", report.to_text());
    let s = &report.stanzas[0];
    let access = s.repository.as_ref().unwrap();
    if pg::pg_user().is_some() {
        // Running as root: PostgreSQL runs as `postgres`, which cannot read the repository.
        assert_eq!(access.mode, "staged", "{}", report.to_text());
        assert_eq!(step(s, "stage").status, StepStatus::Ok);
        // Only the chain and the WAL from the backup's start moved, not all WAL.
        assert!(
            access.files > 1000 && access.bytes > 10_000_000,
            "{access:?}"
        );
        let why = &step(s, "inspect").detail;
        assert!(
            why.contains("`postgres` user cannot"),
            "says why it stages: {why}"
        );
    } else {
        assert_eq!(
            access.mode, "in-place",
            "as its owner the repository stays readable"
        );
    }
    assert_eq!(s.recovery.reached, Some(true));
    assert_clean(&setup);
}

#[test]
fn missing_wal_after_the_last_backup_fails_instead_of_stopping_early() {
    let setup = Setup::new();
    // 09 holds marker 5; without it PostgreSQL would promote at the end of 08 and say nothing.
    fs::remove_file(setup.wal_file("000000010000000000000009")).unwrap();
    let report = run(&setup.fx.repo, setup.options());
    assert!(!report.ok);
    let s = &report.stanzas[0];
    assert_eq!(
        s.failed_step.as_deref(),
        Some("wal-archive"),
        "{}",
        report.to_text()
    );
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("000000010000000000000009"),
        "{:?}",
        s.error
    );
    assert_eq!(
        s.recovery.missing_segments,
        vec!["000000010000000000000009"]
    );
    // The recovery itself was still checked, and caught stopping short.
    let end = step(s, "recovery-end");
    assert_eq!(end.status, StepStatus::Failed);
    assert!(
        end.error
            .as_deref()
            .unwrap()
            .contains("stopped in WAL segment 000000010000000000000008"),
        "{:?}",
        end.error
    );
    assert_eq!(s.recovery.reached, Some(false));
    assert_eq!(step(s, "cleanup").status, StepStatus::Ok);
    assert!(!s.logs.is_empty(), "a failed check keeps its logs");
    assert_clean(&setup);
}

#[test]
fn corrupt_wal_stops_recovery_early_and_the_switch_point_catches_it() {
    let setup = Setup::new();
    // Present (so the listing is complete) but undecodable: archive-get fails, recovery ends.
    flip_byte(&setup.wal_file("000000010000000000000009"));
    let report = run(&setup.fx.repo, setup.options());
    assert!(!report.ok);
    let s = &report.stanzas[0];
    assert_eq!(step(s, "wal-archive").status, StepStatus::Ok);
    assert_eq!(
        s.failed_step.as_deref(),
        Some("recovery-end"),
        "{}",
        report.to_text()
    );
    let e = s.error.as_deref().unwrap();
    assert!(
        e.contains("000000010000000000000009 is missing or unreadable"),
        "{e}"
    );
    assert!(
        e.contains("archive-get reported"),
        "pgBackRest's own error is quoted: {e}"
    );
    assert_clean(&setup);
}

#[test]
fn corrupt_backup_file_fails_the_restore_without_retry_delay() {
    let setup = Setup::new();
    let incr = &setup.fx.expected.backups.last().unwrap().label;
    let dir = setup
        .fx
        .repo
        .join(format!("backup/{}/{incr}/pg_data", setup.fx.stanza));
    let biggest = walk(&dir)
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    flip_byte(&biggest);
    let t = Instant::now();
    let report = run(&setup.fx.repo, setup.options());
    let took = t.elapsed();
    eprintln!("corrupt backup file: failed after {took:?}");
    assert!(!report.ok);
    let s = &report.stanzas[0];
    assert_eq!(
        s.failed_step.as_deref(),
        Some("restore"),
        "{}",
        report.to_text()
    );
    assert!(
        s.error.as_deref().unwrap().contains("pgbackrest restore"),
        "{:?}",
        s.error
    );
    // pgBackRest retries a bad file after 15 s by default; job-retry=0 makes it fail at once.
    assert!(took < Duration::from_secs(14), "took {took:?}");
    assert!(
        s.step("start").is_none(),
        "nothing runs after a failed restore"
    );
    assert_clean(&setup);
}

#[test]
fn postgres_that_cannot_start_fails_the_check_and_is_cleaned_up() {
    let setup = Setup::new();
    // 07 is the WAL the incr backup needs to become consistent: with it undecodable the server
    // finds no checkpoint record and exits during startup.
    flip_byte(&setup.wal_file("000000010000000000000007"));
    let report = run(&setup.fx.repo, setup.options());
    assert!(!report.ok);
    let s = &report.stanzas[0];
    assert_eq!(
        s.failed_step.as_deref(),
        Some("recover"),
        "{}",
        report.to_text()
    );
    let e = s.error.as_deref().unwrap();
    assert!(
        e.contains("PostgreSQL exited before recovery finished"),
        "{e}"
    );
    assert!(
        e.contains("checkpoint record"),
        "the server log says why: {e}"
    );
    assert_eq!(step(s, "cleanup").status, StepStatus::Ok);
    assert_clean(&setup);
}

#[test]
fn missing_postgres_binaries_are_a_missing_program() {
    let setup = Setup::new();
    let mut o = setup.options();
    let empty = setup.work.path().join("empty-bin");
    fs::create_dir_all(&empty).unwrap();
    o.pg_bin_dir = Some(empty);
    let report = run(&setup.fx.repo, o);
    let s = &report.stanzas[0];
    assert!(!s.ok && s.missing_program, "{}", report.to_text());
    assert_eq!(s.failed_step.as_deref(), Some("inspect"));
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("apt-get install postgresql-15"),
        "{:?}",
        s.error
    );
    assert!(report.only_missing_programs());

    let mut o = setup.options();
    o.pgbackrest_bin = Some(PathBuf::from("/nonexistent/pgbackrest"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(run_on(setup.fx.repo.clone(), o, CancellationToken::new()))
        .unwrap_err();
    assert!(
        matches!(err, RestoreError::Pg(ref e) if e.is_missing_program()),
        "{err}"
    );
    assert!(
        err.to_string().contains("apt-get install pgbackrest"),
        "{err}"
    );
    assert_clean(&setup);
}

#[test]
fn two_stanzas_in_parallel_on_their_own_sockets() {
    let setup = Setup::new();
    setup.copy_stanza("def456");
    let mut o = setup.options();
    o.parallel = 2;
    let report = run(&setup.fx.repo, o);
    assert!(report.ok, "{}", report.to_text());
    let names: Vec<_> = report.stanzas.iter().map(|s| s.stanza.as_str()).collect();
    assert_eq!(
        names,
        ["abc123", "def456"],
        "discovered in the destination, reported in order"
    );
    let sockets: Vec<&str> = report
        .stanzas
        .iter()
        .map(|s| step(s, "start").detail.as_str())
        .collect();
    assert_ne!(sockets[0], sockets[1]);
    for s in &report.stanzas {
        eprintln!(
            "parallel {}: {} total={:.2}s",
            s.stanza,
            timings(s),
            s.duration_seconds
        );
        assert_eq!(s.recovery.reached, Some(true));
    }
    // They overlapped: the run took less than the two checks one after the other.
    let sum: f64 = report.stanzas.iter().map(|s| s.duration_seconds).sum();
    assert!(
        report.duration_seconds < sum * 0.9,
        "run {:.1}s, stanzas {sum:.1}s",
        report.duration_seconds
    );
    assert_clean(&setup);
}

#[test]
fn interruption_stops_postgres_and_removes_everything() {
    let setup = Setup::new();
    setup.copy_stanza("intr01");
    let mut o = setup.options();
    o.stanzas = vec!["intr01".into()];
    o.sql_checks = Some("SELECT pg_sleep(120);".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let handle = rt.spawn(run_on(setup.fx.repo.clone(), o, cancel.clone()));
    // Wait until the SQL checks run against the restored server.
    let started = Instant::now();
    let postmaster = loop {
        // psql's `-v stanza=intr01` (pgBackRest's `--stanza=intr01` must not match).
        let sql_running = !processes_mentioning("-v stanza=intr01").is_empty();
        let pid = fs::read_dir(setup.work_root())
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|e| fs::read_to_string(e.ok()?.path().join("pgdata/postmaster.pid")).ok())
            .and_then(|t| t.lines().next().map(str::to_string));
        if let (true, Some(pid)) = (sql_running, pid) {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the SQL check never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // PostgreSQL runs unprivileged.
    let status = fs::read_to_string(format!("/proc/{postmaster}/status")).unwrap();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    match pg::pg_user() {
        Some((pg_uid, _)) => assert_eq!(uid, pg_uid, "as root, PostgreSQL runs as postgres"),
        None => assert_ne!(uid, 0),
    }
    cancel.cancel();
    let t = Instant::now();
    let report = rt.block_on(handle).unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "cleanup took {:?}",
        t.elapsed()
    );
    let s = &report.stanzas[0];
    assert!(!report.ok && s.interrupted, "{}", report.to_text());
    assert_eq!(s.failed_step.as_deref(), Some("sql"));
    assert!(s.error.as_deref().unwrap().contains("interrupted"));
    assert_eq!(step(s, "cleanup").status, StepStatus::Ok);
    assert!(
        !Path::new(&format!("/proc/{postmaster}")).exists(),
        "postmaster {postmaster} still alive"
    );
    assert_clean(&setup);
}

#[test]
fn target_time_recovers_from_the_backup_before_it() {
    let setup = Setup::new();
    let info = pg::pgbackrest_info_json(&setup.fx.repo, &setup.fx.stanza);
    let backups = info["backup"].as_array().unwrap();
    let diff = &backups[1];
    let diff_stop = diff["timestamp"]["stop"].as_i64().unwrap();
    // Half a second after the diff finished: before the incr started, so the diff is chosen,
    // and pgbench commits follow, so recovery stops at the target.
    let target = chrono::DateTime::from_timestamp(diff_stop, 500_000_000).unwrap();
    let mut o = setup.options();
    o.target = RecoveryTarget::Time(target);
    let report = run(&setup.fx.repo, o);
    assert!(report.ok, "{}", report.to_text());
    let s = &report.stanzas[0];
    assert_eq!(
        s.backup.as_ref().unwrap().label,
        diff["label"].as_str().unwrap()
    );
    let reason = s.recovery.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("before ") || reason.starts_with("after "),
        "{reason}"
    );
    assert_clean(&setup);
}

#[test]
fn dry_run_only_inspects() {
    let setup = Setup::new();
    let mut o = setup.options();
    o.dry_run = true;
    let report = run(&setup.fx.repo, o);
    assert!(report.ok && report.dry_run, "{}", report.to_text());
    let s = &report.stanzas[0];
    assert_eq!(s.steps.len(), 1);
    assert_eq!(s.steps[0].name, "inspect");
    assert!(
        report.to_text().contains("would restore backup"),
        "{}",
        report.to_text()
    );
    assert!(!setup.work_root().exists(), "a dry run creates nothing");
}

#[test]
fn unknown_stanza_and_backup_are_clear_failures() {
    let setup = Setup::new();
    let mut o = setup.options();
    o.stanzas = vec!["nosuch".into()];
    let report = run(&setup.fx.repo, o);
    let e = report.stanzas[0].error.as_deref().unwrap();
    assert!(
        e.contains("stanza nosuch not found") && e.contains("cbob sync"),
        "{e}"
    );

    let mut o = setup.options();
    o.set = Some(cbob_core::repo::BackupLabel::parse("20200101-000000F").unwrap());
    let report = run(&setup.fx.repo, o);
    let e = report.stanzas[0].error.as_deref().unwrap();
    assert!(e.contains("20200101-000000F is not in backup.info"), "{e}");
    assert!(
        e.contains(&setup.fx.expected.backups[0].label),
        "lists the backups: {e}"
    );
    assert_clean(&setup);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ----- a broken btree index, backed up for real -------------------------------------------------

/// A throwaway PostgreSQL 15 cluster whose expression index lies: the index was built with
/// `f(x) = x`, then `f` was redefined as `-x` while still declared IMMUTABLE. The index pages
/// are intact (checksums, ordering and `pg_dump` are all fine), but amcheck's heapallindexed
/// check recomputes the keys from the heap and finds them missing: a real, well-known way a
/// btree goes wrong. The cluster is backed up with pgBackRest into a fresh repository.
struct Generator {
    dir: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
    stanza: String,
}

impl Generator {
    fn cmd(&self, program: &str) -> Command {
        let prog = if program == "pgbackrest" {
            pg::pgbackrest_bin()
        } else {
            self.bin.join(program)
        };
        let mut c = pg::as_pg_user(prog, &self.bin, &self.dir);
        c.env("PGHOST", self.dir.join("sock"))
            .env("PGPORT", "5432")
            .env("PGUSER", "postgres");
        c
    }

    fn ok(&self, mut c: Command, what: &str) -> String {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(self.dir.join("pg.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pgbackrest(&self, args: &[&str]) -> String {
        let mut c = self.cmd("pgbackrest");
        c.arg(format!("--config={}", self.conf.display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args);
        self.ok(c, &format!("pgbackrest {args:?}"))
    }

    fn sql(&self, sql: &str) -> String {
        let mut c = self.cmd("psql");
        c.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            sql,
        ]);
        self.ok(c, sql)
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("pg"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = c.output();
    }
}

/// Generates the repository (about 10 s) under `root/repo` and returns it.
fn broken_index_repository(root: &Path) -> PathBuf {
    let dir = root.join("gen");
    let repo = root.join("repo");
    for d in ["run/lock", "run/log", "run/spool", "sock"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::create_dir_all(&repo).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    pg::chown_to_pg_user(&dir);
    pg::chown_to_pg_user(&repo);
    let g = Generator {
        conf: dir.join("pgbackrest.conf"),
        bin: pg::pg_bin_dir("15"),
        stanza: "amchk".into(),
        dir: dir.clone(),
    };
    fs::write(
        &g.conf,
        format!(
            "[global]\nrepo1-path={repo}\nlock-path={d}/run/lock\nlog-path={d}/run/log\nspool-path={d}/run/spool\n\
             compress-type=lz4\nstart-fast=y\nlog-level-console=warn\n\n[amchk]\npg1-path={d}/pg\npg1-port=5432\npg1-socket-path={d}/sock\n",
            repo = repo.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut c = g.cmd("initdb");
    c.arg("-D").arg(dir.join("pg")).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--data-checksums",
        "-N",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
    ]);
    g.ok(c, "initdb");
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("pg/postgresql.conf"))
        .unwrap();
    use std::io::Write;
    writeln!(
        conf,
        "port = 5432\nlisten_addresses = ''\nunix_socket_directories = '{d}/sock'\nwal_level = replica\narchive_mode = on\n\
         archive_command = '{pgb} --config={c} --stanza=amchk archive-push %p'\nfsync = off\nshared_buffers = 32MB\n",
        d = dir.display(),
        pgb = pg::pgbackrest_bin().display(),
        c = g.conf.display()
    )
    .unwrap();
    let mut c = g.cmd("pg_ctl");
    c.arg("-D")
        .arg(dir.join("pg"))
        .arg("-l")
        .arg(dir.join("pg.log"))
        .args(["-w", "-t", "60", "start"]);
    g.ok(c, "pg_ctl start");
    g.pgbackrest(&["stanza-create"]);
    g.sql(
        "CREATE FUNCTION f(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN x; END $$;
         CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 2000) g;
         CREATE INDEX t_f_idx ON t (f(id));
         CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN -x; END $$;",
    );
    g.pgbackrest(&["--type=full", "backup"]);
    let mut c = g.cmd("pg_ctl");
    c.arg("-D")
        .arg(dir.join("pg"))
        .args(["-m", "fast", "-w", "stop"]);
    g.ok(c, "pg_ctl stop");
    drop(g);
    fs::remove_dir_all(&dir).unwrap();
    fixture::make_world_readable(&repo);
    repo
}

#[test]
fn amcheck_finds_a_broken_btree_index() {
    let setup = Setup::new();
    let gen_root = setup.work.path().join("amchk");
    fs::create_dir_all(&gen_root).unwrap();
    let repo = broken_index_repository(&gen_root);
    let report = run(&repo, setup.options());
    assert!(!report.ok, "{}", report.to_text());
    let s = &report.stanzas[0];
    assert_eq!(
        s.failed_step.as_deref(),
        Some("amcheck"),
        "{}",
        report.to_text()
    );
    let f = s
        .amcheck_failures
        .iter()
        .find(|f| f.index == "t_f_idx")
        .unwrap_or_else(|| panic!("{:?}", s.amcheck_failures));
    assert_eq!(f.database, "postgres");
    assert!(
        f.error.contains("lacks matching index tuple"),
        "{}",
        f.error
    );
    assert_eq!(
        s.amcheck_failures.len(),
        1,
        "only the lying index: {:?}",
        s.amcheck_failures
    );
    // Nothing else notices: only amcheck does.
    for name in ["recovery-end", "pg_dump", "checksums"] {
        assert_eq!(
            step(s, name).status,
            StepStatus::Ok,
            "{name}: {}",
            report.to_text()
        );
    }
    assert_clean(&setup);
}
