//! `cbob daemon` end to end: the real binary schedules real `cbob sync` runs (every two seconds),
//! each talking to a Crunchy Bridge API stand-in that answers slowly, so runs take longer than
//! the interval. Proves: scheduled runs happen, never two at once (the times that pass are
//! skipped and counted), SIGTERM lets a running job finish — or stops it once the grace period
//! is over — and exits 0, `/metrics` is valid Prometheus text and `/healthz` answers.

mod prom_text;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cbob_test_support::http;
use cbob_test_support::http_recorder::{HttpRecorder, Reply};
use cbob_test_support::process::free_port;
use serde_json::{Value, json};

use prom_text as prom;

/// How long the API stand-in takes to answer `GET /teams`: each sync run lasts at least this.
const SLOW: Duration = Duration::from_secs(5);

/// A running daemon; killed (SIGKILL) if a test fails before it stopped it.
struct Daemon {
    child: Child,
    port: u16,
    stderr: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &Path, api: &HttpRecorder, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let home = dir.join("home");
        fs::create_dir_all(&home).unwrap();
        let stderr = dir.join("daemon.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
        cmd.env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .env("CBOB_BASE_PATH", dir.join("state"))
            .env("CBOB_TARGET_PATH", dir.join("copy"))
            .env("CBOB_CRUNCHY_API_KEY", "cbkey_daemon_test")
            .env("CBOB_CRUNCHY_API_URL", api.url())
            .env("CBOB_RETRY_COUNT", "0")
            .env("CBOB_SCHEDULE_SYNC", "*/2 * * * * *")
            .env("CBOB_DAEMON_LISTEN", format!("127.0.0.1:{port}"))
            .args(["daemon"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start cbob daemon");
        let d = Daemon {
            child,
            port,
            stderr,
        };
        let t = Instant::now();
        while http::request("GET", port, "/healthz", &[], b"").is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "daemon not listening:\n{}",
                d.log()
            );
            assert!(d.child.id() > 0);
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = http::request("GET", self.port, path, &[], b"").expect("daemon answers");
        (r.status, r.text())
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
    }

    /// Waits for the exit; returns the code and how long it took.
    fn wait(&mut self, limit: Duration) -> (i32, Duration) {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().expect("exited, not killed"), t.elapsed());
            }
            assert!(
                t.elapsed() < limit,
                "daemon still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn audit(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("state/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn slow_api() -> HttpRecorder {
    let api = HttpRecorder::start();
    // A faithful empty answer: no teams, so discovery finds nothing and the run succeeds.
    api.reply("/teams", [Reply::json(json!({"teams": []})).after(SLOW)]);
    api
}

#[test]
fn scheduled_runs_never_overlap_and_sigterm_lets_the_running_one_finish() {
    let dir = tempfile::tempdir().unwrap();
    let api = slow_api();
    let mut d = Daemon::start(dir.path(), &api, &[]);

    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["jobs"][0]["name"], "sync");
    assert_eq!(health["jobs"][0]["schedule"], "*/2 * * * * *");

    // Three runs start, each only after the previous one ended.
    api.wait_for(3, Duration::from_secs(45));
    let (code, text) = d.get("/metrics");
    assert_eq!(code, 200);
    let series = prom::parse(&text);
    assert!(prom::value(&series, "cbob_daemon_job_runs_total", &[("job", "sync")]) >= 3.0);
    assert!(
        prom::value(&series, "cbob_daemon_job_skipped_total", &[("job", "sync")]) >= 2.0,
        "{text}"
    );
    assert_eq!(
        prom::value(&series, "cbob_daemon_job_running", &[("job", "sync")]),
        1.0
    );
    assert!(
        prom::value(
            &series,
            "cbob_daemon_job_next_run_timestamp_seconds",
            &[("job", "sync")]
        ) > 1e9
    );
    // The state database's metrics are served too: the finished runs were real `cbob sync`s.
    assert!(
        prom::value(
            &series,
            "cbob_runs_total",
            &[("command", "sync"), ("result", "success")]
        ) >= 2.0
    );
    assert_eq!(
        prom::value(&series, "cbob_last_run_success", &[("command", "sync")]),
        1.0
    );
    let (code, _) = d.get("/nope");
    assert_eq!(code, 404);

    // SIGTERM while the third run waits for the API: the daemon lets it finish, then exits 0.
    d.sigterm();
    // The signal is handled asynchronously: /healthz turns 503 ("stopping") shortly after.
    let mut code = 0;
    for _ in 0..40 {
        code = d.get("/healthz").0;
        if code == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(code, 503, "stopping");
    let (code, took) = d.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", d.log());
    assert!(
        took > Duration::from_millis(500),
        "it waited for the running job: {took:?}"
    );
    let log = d.log();
    assert!(log.contains("letting the running job finish"), "{log}");
    assert!(log.contains("skipped"), "{log}");
    assert!(log.contains("daemon stopped"), "{log}");

    // Never two at once: each run's API call came at least SLOW after the previous one.
    let calls: Vec<SystemTime> = api.requests().iter().map(|r| r.at).collect();
    assert!(calls.len() >= 3);
    for w in calls.windows(2) {
        let gap = w[1].duration_since(w[0]).unwrap();
        assert!(
            gap >= SLOW - Duration::from_millis(200),
            "runs overlapped: {gap:?} between two starts"
        );
    }
    // Every run the daemon started finished and exited 0, and was audited.
    let lines = audit(dir.path());
    let jobs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["command"] == "daemon" && l["action"] == "job")
        .collect();
    assert_eq!(jobs.len(), calls.len(), "{lines:?}");
    assert!(jobs.iter().all(|j| j["exit_code"] == 0), "{jobs:?}");
    let syncs = lines
        .iter()
        .filter(|l| l["command"] == "sync" && l["action"] == "run")
        .count();
    assert_eq!(syncs, calls.len());
    assert!(
        lines
            .iter()
            .any(|l| l["command"] == "daemon" && l["action"] == "stop" && l["result"] == "success")
    );
}

#[test]
fn after_the_grace_period_sigterm_stops_the_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let api = HttpRecorder::start();
    api.reply("/teams", [Reply::hang()]);
    let mut d = Daemon::start(dir.path(), &api, &[("CBOB_DAEMON_GRACE", "1")]);
    api.wait_for(1, Duration::from_secs(30));
    let (_, body) = d.get("/healthz");
    let pid = serde_json::from_str::<Value>(&body).unwrap()["jobs"][0]["running_pid"]
        .as_u64()
        .expect("a job is running");
    d.sigterm();
    let (code, took) = d.wait(Duration::from_secs(20));
    assert_eq!(code, 0, "{}", d.log());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(12),
        "{took:?}"
    );
    assert!(
        d.log()
            .contains("grace period over: stopping the job with SIGTERM"),
        "{}",
        d.log()
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "job {pid} still running"
    );
    let job = audit(dir.path())
        .into_iter()
        .find(|l| l["action"] == "job")
        .expect("the stopped job is audited");
    assert_eq!(job["exit_code"], Value::Null, "killed by a signal: {job}");
}

#[test]
fn a_daemon_without_schedules_or_with_a_public_address_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
        cmd.env_clear()
            .env("HOME", dir.path())
            .env("CBOB_BASE_PATH", dir.path().join("state"))
            .arg("daemon")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no schedule is configured") && err.contains("CBOB_SCHEDULE_SYNC"),
        "{err}"
    );
    let (code, err) = run(&[
        ("CBOB_SCHEDULE_SYNC", "30 3 * * *"),
        ("CBOB_DAEMON_LISTEN", "0.0.0.0:9750"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not a loopback address"), "{err}");
    let (code, err) = run(&[("CBOB_SCHEDULE_SYNC", "30 3 * *")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("CBOB_SCHEDULE_SYNC") && err.contains("is not a cron expression"),
        "{err}"
    );
}
