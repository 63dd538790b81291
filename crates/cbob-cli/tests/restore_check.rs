//! `cbob restore-check` and `cbob postgres` end to end: the real binary, real pgBackRest 2.45 and
//! PostgreSQL 15 (as `postgres` when the tests run as root), the committed fixture, moto for an
//! object-store destination. Every run gets an empty environment and its own base path.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cbob_core::state::StateDb;
use cbob_test_support::fixture::{self, Fixture};
use cbob_test_support::{moto, pg};

struct Sandbox {
    dir: tempfile::TempDir,
    fx: Fixture,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cbob-rc-cli-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.path().join("home")).unwrap();
        Self {
            dir,
            fx: fixture::extract(),
        }
    }

    fn base(&self) -> PathBuf {
        self.dir.path().join("base")
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
        cmd.env_clear()
            .env("HOME", self.dir.path().join("home"))
            .env("PATH", "/usr/bin:/bin")
            .env("CBOB_BASE_PATH", self.base())
            .env("CBOB_TARGET_PATH", &self.fx.repo)
            .args(args)
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = self.command(args, env).output().expect("run cbob");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn copy_stanza(&self, name: &str) {
        for top in ["archive", "backup"] {
            let st = Command::new("cp")
                .arg("-a")
                .arg(self.fx.repo.join(top).join(&self.fx.stanza))
                .arg(self.fx.repo.join(top).join(name))
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    fn wal_file(&self, segment: &str) -> PathBuf {
        let dir = self
            .fx
            .repo
            .join(format!("archive/{}/15-1/0000000100000000", self.fx.stanza));
        fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{segment}-"))
            })
            .unwrap()
    }

    /// No work directory and no process of this sandbox is left.
    fn assert_clean(&self) {
        let work = self.base().join("restore-check/work");
        let left: Vec<_> = fs::read_dir(&work)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "work directories left: {left:?}");
        let procs = processes_mentioning(&work.to_string_lossy());
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.chars().all(|c| c.is_ascii_digit()) && n != me
        })
        .filter_map(|e| {
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then_some(cmd)
        })
        .collect()
}

#[test]
fn two_stanzas_in_parallel_pass_with_reports_state_and_audit() {
    let sb = Sandbox::new();
    sb.copy_stanza("def456");
    let report_dir = sb.dir.path().join("reports");
    let out = sb.run(
        &[
            "restore-check",
            "--parallel",
            "2",
            "--format",
            "json",
            "--report-dir",
            report_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let j = out.json();
    assert_eq!(j["ok"], true);
    let stanzas = j["stanzas"].as_array().unwrap();
    assert_eq!(stanzas.len(), 2);
    for s in stanzas {
        assert_eq!(s["ok"], true, "{s:#}");
        assert_eq!(s["recovery"]["reached"], true);
        assert_eq!(
            s["recovery"]["end_segment"],
            sb.fx.expected.wal_max.as_str()
        );
        let steps: Vec<&str> = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["name"].as_str().unwrap())
            .collect();
        assert!(
            steps.contains(&"recovery-end")
                && steps.contains(&"amcheck")
                && steps.contains(&"cleanup"),
            "{steps:?}"
        );
        assert!(
            s["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|st| st["duration_seconds"].as_f64().is_some())
        );
        eprintln!(
            "cli {}: {}",
            s["stanza"],
            s["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|st| format!(
                    "{}={:.2}s",
                    st["name"].as_str().unwrap(),
                    st["duration_seconds"].as_f64().unwrap()
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    // Reports: under the base path always, HTML with --report-dir.
    let files: Vec<&str> = j["report_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&*sb.base().to_string_lossy()) && f.ends_with("report.json")),
        "{files:?}"
    );
    let html = fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(
        html.contains("recovery-end") && html.contains("def456"),
        "{html}"
    );
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(report_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved["stanzas"][1]["stanza"], "def456");
    // State: one check per stanza, with the report as detail.
    let db = StateDb::open(&sb.base().join("state.db")).unwrap();
    let checks = db.latest_checks(Some("restore-check")).unwrap();
    assert_eq!(checks.len(), 2, "{checks:?}");
    for c in &checks {
        assert_eq!(c.result, "success");
        let detail: Value = serde_json::from_str(c.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["stanza"], c.stanza.as_str());
    }
    let audit = fs::read_to_string(cbob_core::audit::AuditLog::in_base(&sb.base()).path()).unwrap();
    assert!(audit.contains("\"restore-check\""), "{audit}");
    sb.assert_clean();
}

#[test]
fn a_missing_wal_segment_exits_1_naming_the_steps() {
    let sb = Sandbox::new();
    fs::remove_file(sb.wal_file("000000010000000000000009")).unwrap();
    let out = sb.run(&["restore-check"], &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("FAILED at wal-archive"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("000000010000000000000009"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("recovery stopped in WAL segment 000000010000000000000008"),
        "the recovery-end check fails too: {}",
        out.stdout
    );
    let db = StateDb::open(&sb.base().join("state.db")).unwrap();
    assert_eq!(
        db.latest_checks(Some("restore-check")).unwrap()[0].result,
        "failed"
    );
    sb.assert_clean();
}

#[test]
fn missing_programs_exit_5_with_the_package_to_install() {
    let sb = Sandbox::new();
    let empty = sb.dir.path().join("no-bin");
    fs::create_dir_all(&empty).unwrap();
    let out = sb.run(
        &["restore-check"],
        &[("CBOB_PG_BIN_DIR", empty.to_str().unwrap())],
    );
    assert_eq!(out.code, 5, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("apt-get install postgresql-15"),
        "{}",
        out.stdout
    );

    let out = sb.run(
        &["restore-check"],
        &[("CBOB_PGBACKREST_BIN", "/nonexistent/pgbackrest")],
    );
    assert_eq!(out.code, 5, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("apt-get install pgbackrest"),
        "{}",
        out.stderr
    );
    sb.assert_clean();
}

#[test]
fn bad_flags_are_usage_errors() {
    let sb = Sandbox::new();
    for (args, needle) in [
        (vec!["restore-check", "--set", "latest-please"], "--set"),
        (
            vec!["restore-check", "--target-time", "yesterday"],
            "--target-time",
        ),
        (
            vec!["restore-check", "--sql", "/nonexistent/checks.sql"],
            "CBOB_RESTORE_CHECK_SQL",
        ),
        (vec!["restore-check", "--stanza", "../etc"], "--stanza"),
    ] {
        let out = sb.run(&args, &[]);
        assert_eq!(out.code, 2, "{args:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    assert!(
        !sb.base().join("restore-check").exists(),
        "nothing was done"
    );
}

#[test]
fn sigint_stops_postgres_and_removes_everything() {
    let sb = Sandbox::new();
    sb.copy_stanza("sigint1");
    let sql = sb.dir.path().join("slow.sql");
    fs::write(&sql, "SELECT pg_sleep(120);\n").unwrap();
    let mut child: Child = sb
        .command(
            &[
                "restore-check",
                "--stanza",
                "sigint1",
                "--sql",
                sql.to_str().unwrap(),
            ],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while processes_mentioning("-v stanza=sigint1").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cbob ended before the SQL check ran"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the SQL check never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let work = sb.base().join("restore-check/work");
    assert!(
        !processes_mentioning(&work.to_string_lossy()).is_empty(),
        "PostgreSQL runs in the work directory"
    );
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        t.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("FAILED at sql: interrupted"), "{stdout}");
    assert!(stdout.contains("cleanup       ok"), "{stdout}");
    sb.assert_clean();
}

#[test]
fn object_store_destination_is_staged_and_checked() {
    let sb = Sandbox::new();
    let m = moto();
    let bucket = m.fresh_bucket("restore-check");
    let creds = m.credentials();
    let endpoint = m.endpoint();
    let env = [
        ("CBOB_DEST_TYPE", "s3"),
        ("CBOB_DEST_ENDPOINT", endpoint.as_str()),
        ("CBOB_DEST_BUCKET", bucket.as_str()),
        ("CBOB_DEST_PREFIX", "copy"),
        ("CBOB_DEST_ACCESS_KEY", creds.access_key_id.as_str()),
        ("CBOB_DEST_SECRET_KEY", creds.secret_access_key.as_str()),
    ];
    let source = format!("file://{}", sb.fx.repo.display());
    let out = sb.run(&["sync", "--source", &source], &env);
    assert_eq!(out.code, 0, "sync: {}\n{}", out.stdout, out.stderr);
    let out = sb.run(&["restore-check", "--format", "json"], &env);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let j = out.json();
    let s = &j["stanzas"][0];
    assert_eq!(s["repository"]["mode"], "staged", "{s:#}");
    assert!(s["repository"]["files"].as_u64().unwrap() > 1000);
    assert_eq!(
        s["recovery"]["end_segment"],
        sb.fx.expected.wal_max.as_str()
    );
    assert!(
        j["destination"].as_str().unwrap().starts_with("s3://"),
        "{}",
        j["destination"]
    );
    assert!(
        !out.stdout.contains(&creds.secret_access_key),
        "no secret in the report"
    );
    sb.assert_clean();
}

/// Stops the sandbox's local PostgreSQL even when the test fails.
struct StopOnDrop<'a>(&'a Sandbox);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["postgres", "stop"], &[]);
    }
}

#[test]
fn postgres_instance_restore_and_query() {
    let sb = Sandbox::new();
    let _guard = StopOnDrop(&sb);
    let st = sb.fx.stanza.clone();

    let out = sb.run(&["postgres", "initdb", "--cluster", &st], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("created PostgreSQL 15"),
        "{}",
        out.stdout
    );
    let status = |sb: &Sandbox| {
        sb.run(&["postgres", "status", "--format", "json"], &[])
            .json()["instances"][0]
            .clone()
    };
    let s = status(&sb);
    assert_eq!(
        (s["initialised"].as_bool(), s["running"].as_bool()),
        (Some(true), Some(false)),
        "{s:#}"
    );
    let port = s["port"].as_u64().unwrap();
    assert!((55432..56432).contains(&port));

    // A second initdb refuses to overwrite; the port is stable.
    let out = sb.run(&["postgres", "initdb", "--cluster", &st], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("--force"), "{}", out.stdout);

    let out = sb.run(&["postgres", "start", "--cluster", &st], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("accepting connections"),
        "{}",
        out.stdout
    );
    assert_eq!(status(&sb)["running"], true);
    let out = sb.run(&["postgres", "start", "--cluster", &st], &[]);
    assert!(out.stdout.contains("already running"), "{}", out.stdout);
    assert_eq!(sb.run(&["postgres", "stop", "--cluster", &st], &[]).code, 0);
    assert_eq!(status(&sb)["running"], false);

    // Restore the latest backup into it with the generated pgBackRest config, then query it.
    let s = status(&sb);
    let conf = s["pgbackrest_conf"].as_str().unwrap();
    let work = sb.dir.path();
    let mut c = pg::as_pg_user(pg::pgbackrest_bin(), &pg::pg_bin_dir("15"), work);
    c.arg(format!("--config={conf}"))
        .arg(format!("--stanza={st}"))
        .args([
            "--delta",
            "--archive-mode=off",
            "--log-level-console=warn",
            "restore",
        ]);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = sb.run(
        &["postgres", "start", "--cluster", &st, "--wait", "120"],
        &[],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("accepting connections"),
        "recovered and promoted: {}",
        out.stdout
    );
    let mut q = pg::as_pg_user(
        pg::pg_bin_dir("15").join("psql"),
        &pg::pg_bin_dir("15"),
        work,
    );
    q.env("PGHOST", s["socket_dir"].as_str().unwrap())
        .env("PGPORT", port.to_string())
        .env("PGUSER", "postgres")
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            "appdb",
            "-c",
            "SELECT max(id) FROM marker",
        ]);
    let o = q.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        sb.fx.expected.values.marker_max.to_string(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let list = sb
        .run(&["postgres", "list", "--format", "json"], &[])
        .json();
    assert_eq!(list["stanzas"][0]["stanza"], st.as_str());
    assert_eq!(list["stanzas"][0]["in_destination"], true);
    assert_eq!(list["stanzas"][0]["instance"]["running"], true);
    let out = sb.run(&["postgres", "restart", "--cluster", &st], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = sb.run(&["postgres", "stop"], &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("stopped"), "{}", out.stdout);
    let data = PathBuf::from(s["data_dir"].as_str().unwrap());
    assert!(!data.join("postmaster.pid").exists());
    assert!(processes_mentioning(&data.to_string_lossy()).is_empty());
}
