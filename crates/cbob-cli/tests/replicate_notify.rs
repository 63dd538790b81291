//! `cbob replicate sync` with its notifications, metrics and summary: a local HTTP server
//! records what Slack and the webhook receive, the Prometheus textfile and `cbob metrics` are
//! checked per replica, notifiers that fail or hang leave the exit code alone, a dry run sends
//! and writes nothing, and `alert_on_failure: false` keeps failures quiet.

mod prom_text;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cbob_test_support::fixture;
use cbob_test_support::http_recorder::{HttpRecorder, Recorded, Reply};
use serde_json::Value;

use prom_text as prom;

const HOOK_SECRET: &str = "hooktoken-replicate-91";
const REPLICA_SECRET: &str = "replica-secret-never-sent";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// The fixture synced to `<dir>/primary` (no notifications), and where state lives.
struct World {
    fx: fixture::Fixture,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let w = Self {
            fx: fixture::extract(),
            dir: tempfile::tempdir().unwrap(),
        };
        let repo = format!("file://{}", w.fx.repo.display());
        let run = w.cbob(&["sync", "--source", &repo], &[]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        w
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cbob(&self, args: &[&str], env: &[(&str, String)]) -> Run {
        let home = self.path("home");
        fs::create_dir_all(&home).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
        cmd.env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .env("CBOB_BASE_PATH", self.path("state"))
            .env("CBOB_TARGET_PATH", self.path("primary"))
            .env("CBOB_REPLICATION_CONFIG", self.path("replication.yaml"))
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let t = Instant::now();
        let out = cmd.output().expect("run cbob");
        Run {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            elapsed: t.elapsed(),
        }
    }

    /// A good local replica and, with `broken`, one nobody answers for (port 9 refuses).
    fn write_yaml(&self, broken: bool, settings: &str) {
        let mut yaml = format!(
            "replication:\n  replicas:\n    - {{name: good, provider: local, path: {}}}\n",
            self.path("replica-good").display()
        );
        if broken {
            yaml.push_str(&format!(
                "    - {{name: gone, provider: aws, bucket: b, endpoint: http://127.0.0.1:9, \
                 access_key: AKIAREPLICATEGONE, secret_key: {REPLICA_SECRET}}}\n"
            ));
        }
        yaml.push_str(&format!(
            "  settings: {{retry_attempts: 0, retry_delay: 0{settings}}}\n"
        ));
        fs::write(self.path("replication.yaml"), yaml).unwrap();
    }
}

fn notify_env(rec: &HttpRecorder) -> Vec<(&'static str, String)> {
    vec![
        (
            "CBOB_SLACK_WEBHOOK_URL",
            format!("{}/services/T1/B2/slackpath-replicate", rec.url()),
        ),
        (
            "CBOB_WEBHOOK_URL",
            format!("{}/hook?token={HOOK_SECRET}", rec.url()),
        ),
        ("CBOB_NOTIFY_EVENTS", "started,succeeded,failed".into()),
    ]
}

fn by_path<'a>(reqs: &'a [Recorded], prefix: &str) -> Vec<&'a Recorded> {
    reqs.iter().filter(|r| r.path.starts_with(prefix)).collect()
}

#[test]
fn a_failed_replica_is_named_in_the_notification_and_every_replica_has_metrics() {
    let w = World::new();
    w.write_yaml(true, "");
    let rec = HttpRecorder::start();
    let run = w.cbob(&["replicate", "sync"], &notify_env(&rec));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);

    // The summary: one line per replica, the failed one with its error, a last line naming it.
    assert!(run.stdout.contains("✓ good (local:"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("1354 files (16.8 MiB) copied (streamed)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("verified: 0 behind the primary"),
        "{}",
        run.stdout
    );
    // The first thing asked of the replica is its archive.info.
    assert!(
        run.stdout.contains(
            "✗ gone (s3://b/): FAILED\n    stanza abc123: reading archive/abc123/archive.info: s3://b at http://127.0.0.1:9"
        ),
        "{}",
        run.stdout
    );
    let last = run.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("replicate: 1 of 2 replicas ok from local:")
            && last.ends_with("; FAILED: gone"),
        "{last}"
    );

    // Webhook: started, then failed with one item per replica.
    let reqs = rec.requests();
    let hooks = by_path(&reqs, "/hook");
    assert_eq!(hooks.len(), 2, "{reqs:?}");
    let started = hooks[0].json();
    assert_eq!(
        (started["command"].as_str(), started["phase"].as_str()),
        (Some("replicate"), Some("started"))
    );
    let done = hooks[1].json();
    assert_eq!(done["phase"], "failed");
    assert_eq!(
        done["destination"],
        format!("local:{}", w.path("primary").display())
    );
    let summary = done["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("1 of 2 replicas ok, 1354 files") && summary.ends_with("FAILED: gone"),
        "{summary}"
    );
    let items = done["items"].as_array().unwrap();
    let gone = items.iter().find(|i| i["name"] == "gone").unwrap();
    assert_eq!(gone["ok"], false);
    assert!(!gone["detail"].as_str().unwrap().is_empty(), "{gone}");
    let good = items.iter().find(|i| i["name"] == "good").unwrap();
    assert_eq!(good["ok"], true);
    assert!(
        good["detail"]
            .as_str()
            .unwrap()
            .starts_with("1354 files (16.8 MiB) copied"),
        "{good}"
    );
    // Slack: the failure first, naming the replica.
    let slack = by_path(&reqs, "/services/");
    let text = slack[1].json()["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(":x: cbob replicate failed on "), "{text}");
    assert!(
        text.find("✗ gone").unwrap() < text.find("✓ good").unwrap(),
        "{text}"
    );
    for r in &reqs {
        let sent = format!("{} {:?}", r.text(), r.headers);
        for secret in [REPLICA_SECRET, HOOK_SECRET, "slackpath-replicate"] {
            assert!(
                !sent.contains(secret),
                "{secret} sent to {}: {sent}",
                r.path
            );
        }
    }

    // The textfile has a series per replica.
    let series = prom::parse(&fs::read_to_string(w.path("state/metrics/cbob.prom")).unwrap());
    let v = |name: &str, replica: &str| prom::value(&series, name, &[("replica", replica)]);
    assert_eq!(v("cbob_replica_last_success", "good"), 1.0);
    assert_eq!(v("cbob_replica_last_success", "gone"), 0.0);
    assert_eq!(v("cbob_replica_last_transferred_files", "good"), 1354.0);
    assert!(v("cbob_replica_last_transferred_bytes", "good") > 1.6e7);
    // What the replica holds (listed after the run), not what was written.
    assert_eq!(v("cbob_replica_objects", "good"), 1352.0);
    assert!(v("cbob_replica_size_bytes", "good") > 1.6e7);
    assert_eq!(v("cbob_replica_objects_behind", "good"), 0.0);
    assert!(v("cbob_replica_last_duration_seconds", "good") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - v("cbob_replica_last_success_timestamp_seconds", "good")).abs() < 600.0);
    assert!(
        !series
            .keys()
            .any(|k| k.starts_with("cbob_replica_objects_behind{") && k.contains("gone")),
        "never compared: no lag series for gone"
    );
    assert!(
        !series.keys().any(
            |k| k.starts_with("cbob_replica_last_success_timestamp_seconds{") && k.contains("gone")
        ),
        "gone never succeeded"
    );
    assert_eq!(
        prom::value(
            &series,
            "cbob_last_run_success",
            &[("command", "replicate")]
        ),
        0.0
    );
    assert_eq!(
        prom::value(&series, "cbob_last_run_errors", &[("command", "replicate")]),
        1.0
    );

    // `cbob metrics` shows the same in JSON and text.
    let j = w.cbob(&["metrics", "--format", "json"], &[]);
    let doc: Value = serde_json::from_str(&j.stdout).unwrap();
    let good = doc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "good")
        .unwrap()
        .clone();
    assert_eq!(
        (good["objects_behind"].as_u64(), good["last_files"].as_u64()),
        (Some(0), Some(1354)),
        "{good}"
    );
    let t = w.cbob(&["metrics"], &[]);
    assert!(
        t.stdout.contains("\nREPLICA ")
            && t.stdout.contains("\ngone ")
            && t.stdout.contains("\ngood "),
        "{}",
        t.stdout
    );

    // `replicate status` measures the lag again and records it: the damaged replica is behind.
    let info = w.path("replica-good/backup/abc123/backup.info.copy");
    fs::remove_file(&info).unwrap();
    let st = w.cbob(
        &[
            "replicate",
            "status",
            "--replica",
            "good",
            "--format",
            "json",
        ],
        &[],
    );
    let doc: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(doc["replicas"][0]["lag"]["objects_behind"], 1, "{doc}");
    let j = w.cbob(&["metrics", "--format", "json"], &[]);
    let doc: Value = serde_json::from_str(&j.stdout).unwrap();
    let good = doc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "good")
        .unwrap()
        .clone();
    assert_eq!(good["objects_behind"], 1, "{good}");
}

#[test]
fn notifiers_that_fail_or_hang_leave_the_exit_code_alone() {
    let w = World::new();
    let rec = HttpRecorder::start();
    rec.reply("/hook", [Reply::status(500)]);
    rec.reply("/services/", [Reply::hang()]);
    let mut env = notify_env(&rec);
    env.push(("CBOB_NOTIFY_TIMEOUT", "2".into()));
    w.write_yaml(false, "");
    let ok = w.cbob(&["replicate", "sync"], &env);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    assert!(
        ok.stderr
            .contains("notification failed; the run's result is unchanged"),
        "{}",
        ok.stderr
    );
    // Two events, each within its 2 s budget (channels in parallel), plus the run itself.
    assert!(ok.elapsed < Duration::from_secs(40), "{:?}", ok.elapsed);
    w.write_yaml(true, "");
    let failed = w.cbob(&["replicate", "sync"], &env);
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        by_path(&rec.requests(), "/hook").len() >= 4,
        "every event was attempted"
    );
}

#[test]
fn a_dry_run_sends_nothing_and_alert_on_failure_false_keeps_failures_quiet() {
    let w = World::new();
    let rec = HttpRecorder::start();
    let prom = w.path("state/metrics/cbob.prom");
    let before = fs::metadata(&prom).unwrap().ino();
    w.write_yaml(true, "");
    let dry = w.cbob(&["--dry-run", "replicate", "sync"], &notify_env(&rec));
    assert!(
        dry.stdout.contains("✓ good") && dry.stdout.contains("dry run: would copy 1354 files"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("plan: 1 of 2 replicas ok"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        dry.code, 1,
        "the unreachable replica fails the plan too: {}",
        dry.stdout
    );
    assert!(rec.requests().is_empty(), "{:?}", rec.requests());
    assert_eq!(
        fs::metadata(&prom).unwrap().ino(),
        before,
        "the textfile was rewritten"
    );
    assert!(
        !w.path("replica-good").exists(),
        "a dry run wrote to a replica"
    );

    w.write_yaml(true, ", alert_on_failure: false");
    let quiet = w.cbob(&["replicate", "sync"], &notify_env(&rec));
    assert_eq!(quiet.code, 1, "{}\n{}", quiet.stdout, quiet.stderr);
    let phases: Vec<String> = by_path(&rec.requests(), "/hook")
        .iter()
        .map(|r| r.json()["phase"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(phases, ["started"], "no failure notification");
    assert_ne!(
        fs::metadata(&prom).unwrap().ino(),
        before,
        "metrics are written all the same"
    );
}

#[test]
fn without_a_terminal_progress_is_a_log_line_per_replica_every_ten_seconds() {
    let w = World::new();
    // 17.6 MB at 1 MB/s: a run of about 18 s, so at least one progress line.
    w.write_yaml(false, ", bandwidth_limit: 1MB/s");
    let run = w.cbob(&["replicate", "sync"], &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("replication progress"))
        .collect();
    assert!(!lines.is_empty(), "{}", run.stderr);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("replica=good") && l.contains("planned_files=1354")),
        "{lines:?}"
    );
    assert!(run.elapsed > Duration::from_secs(10), "{:?}", run.elapsed);
    // A quiet run (or --format json) prints no progress at all.
    let quiet = w.cbob(&["-q", "replicate", "sync", "--format", "json"], &[]);
    assert!(!quiet.stderr.contains("progress"), "{}", quiet.stderr);
    let doc: Value = serde_json::from_str(&quiet.stdout).unwrap();
    assert_eq!(
        (doc["ok"].as_bool(), doc["copied_files"].as_u64()),
        (Some(true), Some(0))
    );
}
