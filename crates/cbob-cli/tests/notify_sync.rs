//! `cbob sync` end to end with its notifications and metrics: the real binary copies the
//! committed pgBackRest fixture, a local HTTP server records what the heartbeat, Slack and the
//! webhook receive, and the Prometheus textfile is checked. Notifiers that fail or hang must not
//! change the exit code nor delay the run beyond their time budget.

mod prom_text;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cbob_test_support::fixture;
use cbob_test_support::http_recorder::{HttpRecorder, Recorded, Reply};
use serde_json::Value;

use prom_text as prom;

const SLACK_SECRET: &str = "slackpathsecret-5d4c";
const HOOK_SECRET: &str = "hooktoken-77aa";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn cbob(base: &Path, args: &[&str], env: &[(&str, String)]) -> Run {
    let home = base.join("home");
    fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
    cmd.env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .env("CBOB_BASE_PATH", base.join("state"))
        .env("CBOB_TARGET_PATH", base.join("copy"))
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

fn source(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

fn notify_env(rec: &HttpRecorder) -> Vec<(&'static str, String)> {
    vec![
        (
            "CBOB_SYNC_HEARTBEAT_URL",
            format!("{}/hc/5f1c-uuid?create=1", rec.url()),
        ),
        (
            "CBOB_SLACK_WEBHOOK_URL",
            format!("{}/services/T1/B2/{SLACK_SECRET}", rec.url()),
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

fn assert_no_secret(reqs: &[Recorded]) {
    for r in reqs {
        let mut sent = r.text();
        for (k, v) in &r.headers {
            sent.push_str(&format!("\n{k}: {v}"));
        }
        for s in [SLACK_SECRET, HOOK_SECRET, "5f1c-uuid"] {
            assert!(!sent.contains(s), "{s} sent to {}:\n{sent}", r.path);
        }
    }
}

#[test]
fn a_successful_sync_notifies_every_channel_and_writes_the_textfile() {
    let fx = fixture::extract();
    let dir = tempfile::tempdir().unwrap();
    let rec = HttpRecorder::start();
    let run = cbob(
        dir.path(),
        &["sync", "--source", &source(&fx.repo), "--format", "json"],
        &notify_env(&rec),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let reqs = rec.requests();

    // Heartbeat: /start, then the plain URL (success), the query kept both times.
    let hb: Vec<(String, String, Option<String>)> = by_path(&reqs, "/hc/")
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.query.clone()))
        .collect();
    let q = Some("create=1".to_string());
    assert_eq!(
        hb,
        vec![
            ("POST".into(), "/hc/5f1c-uuid/start".into(), q.clone()),
            ("POST".into(), "/hc/5f1c-uuid".into(), q)
        ]
    );

    // Slack: started then succeeded, with the cluster line.
    let slack = by_path(&reqs, "/services/");
    assert_eq!(slack.len(), 2);
    let texts: Vec<String> = slack
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts[0].starts_with(":arrows_counterclockwise: cbob sync started on "),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].starts_with(":white_check_mark: cbob sync succeeded on "),
        "{}",
        texts[1]
    );
    assert!(
        texts[1].contains("1 of 1 clusters ok, 1354 files"),
        "{}",
        texts[1]
    );
    assert!(texts[1].contains("✓ abc123: 1354 files"), "{}", texts[1]);

    // Webhook: the JSON document with per-stanza items.
    let hooks = by_path(&reqs, "/hook");
    assert_eq!(hooks.len(), 2);
    let done = hooks[1].json();
    assert_eq!(
        (done["phase"].as_str(), done["command"].as_str()),
        (Some("succeeded"), Some("sync"))
    );
    assert_eq!(
        done["destination"],
        format!("local:{}", dir.path().join("copy").display())
    );
    assert_eq!(done["items"][0]["name"], "abc123");
    assert_eq!(done["items"][0]["ok"], true);
    assert_no_secret(&reqs);

    // Every start notification arrived before any finish notification.
    let last_start = reqs
        .iter()
        .filter(|r| r.path.ends_with("/start") || r.text().contains(" started on "))
        .map(|r| r.at)
        .max()
        .unwrap();
    let first_end = reqs
        .iter()
        .filter(|r| r.path == "/hc/5f1c-uuid" || r.text().contains(" succeeded on "))
        .map(|r| r.at)
        .min()
        .unwrap();
    assert!(last_start <= first_end);

    // The textfile: atomic, readable by node_exporter, valid, and it says what happened.
    let prom_path = dir.path().join("state/metrics/cbob.prom");
    assert_eq!(
        fs::metadata(&prom_path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let series = prom::parse(&fs::read_to_string(&prom_path).unwrap());
    assert_eq!(
        prom::value(&series, "cbob_last_run_success", &[("command", "sync")]),
        1.0
    );
    assert_eq!(
        prom::value(
            &series,
            "cbob_runs_total",
            &[("command", "sync"), ("result", "success")]
        ),
        1.0
    );
    assert_eq!(
        prom::value(
            &series,
            "cbob_transferred_files_total",
            &[("command", "sync")]
        ),
        1354.0
    );
    assert_eq!(
        prom::value(&series, "cbob_repository_backups", &[("cluster", "abc123")]),
        3.0
    );
    assert!(
        prom::value(
            &series,
            "cbob_repository_size_bytes",
            &[("cluster", "abc123"), ("stanza", "abc123")]
        ) > 1e6
    );
    let ts = prom::value(
        &series,
        "cbob_sync_last_success_timestamp_seconds",
        &[("cluster", "abc123")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ts).abs() < 600.0, "{ts} vs {now}");
    assert_eq!(
        fs::read_dir(prom_path.parent().unwrap()).unwrap().count(),
        1,
        "no temporary file left"
    );

    // `cbob metrics` reads the same state in every format.
    let p = cbob(dir.path(), &["metrics", "--format", "prometheus"], &[]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let again = prom::parse(&p.stdout);
    assert_eq!(
        again.get(r#"cbob_runs_total{command="sync",result="success"}"#),
        Some(&1.0)
    );
    let j = cbob(dir.path(), &["metrics", "--format", "json"], &[]);
    let doc: Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(doc["commands"][0]["command"], "sync");
    assert_eq!(doc["commands"][0]["succeeded"], 1);
    assert_eq!(doc["clusters"][0]["cluster"], "abc123");
    let t = cbob(dir.path(), &["metrics"], &[]);
    assert!(
        t.stdout.starts_with("COMMAND")
            && t.stdout.contains("\nsync ")
            && t.stdout.contains("abc123"),
        "{}",
        t.stdout
    );
}

#[test]
fn a_failed_sync_pings_fail_and_keeps_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let rec = HttpRecorder::start();
    let missing = dir.path().join("no-such-repo");
    fs::create_dir_all(&missing).unwrap();
    let run = cbob(
        dir.path(),
        &["sync", "--source", &source(&missing)],
        &notify_env(&rec),
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let reqs = rec.requests();
    let hb: Vec<&str> = by_path(&reqs, "/hc/")
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(hb, ["/hc/5f1c-uuid/start", "/hc/5f1c-uuid/fail"]);
    assert!(
        by_path(&reqs, "/hc/")[1]
            .text()
            .starts_with("cbob sync failed on ")
    );
    let slack = by_path(&reqs, "/services/");
    assert!(
        slack[1].json()["text"]
            .as_str()
            .unwrap()
            .starts_with(":x: cbob sync failed on ")
    );
    assert_eq!(by_path(&reqs, "/hook")[1].json()["phase"], "failed");
    let series =
        prom::parse(&fs::read_to_string(dir.path().join("state/metrics/cbob.prom")).unwrap());
    assert_eq!(
        prom::value(&series, "cbob_last_run_success", &[("command", "sync")]),
        0.0
    );
    assert_eq!(
        prom::value(
            &series,
            "cbob_runs_total",
            &[("command", "sync"), ("result", "failed")]
        ),
        1.0
    );
}

#[test]
fn a_destination_that_cannot_be_used_is_a_failed_run_that_monitors_hear_of() {
    // Nothing listens on port 1: the destination check fails before any copy starts.
    let fx = fixture::extract();
    let dir = tempfile::tempdir().unwrap();
    let rec = HttpRecorder::start();
    let mut env = notify_env(&rec);
    for (k, v) in [
        ("CBOB_DEST_TYPE", "s3"),
        ("CBOB_DEST_BUCKET", "offsite"),
        ("CBOB_DEST_ENDPOINT", "http://127.0.0.1:1"),
        ("CBOB_DEST_REGION", "us-east-1"),
        ("CBOB_DEST_ACCESS_KEY", "AKIADESTTEST"),
        ("CBOB_DEST_SECRET_KEY", "dest-secret-never-shown"),
        ("CBOB_RETRY_COUNT", "0"),
    ] {
        env.push((k, v.to_string()));
    }
    let run = cbob(dir.path(), &["sync", "--source", &source(&fx.repo)], &env);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("destination s3://offsite") && run.stderr.contains("not usable"),
        "{}",
        run.stderr
    );
    let reqs = rec.requests();
    let hb: Vec<&str> = by_path(&reqs, "/hc/")
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(hb, ["/hc/5f1c-uuid/fail"], "no start: the run never began");
    let hook = by_path(&reqs, "/hook")[0].json();
    assert_eq!(hook["phase"], "failed");
    let summary = hook["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("sync could not start: destination s3://offsite"),
        "{summary}"
    );
    for r in &reqs {
        assert!(
            !r.text().contains("dest-secret-never-shown"),
            "{}",
            r.text()
        );
    }
    assert_no_secret(&reqs);
}

#[test]
fn a_run_refused_by_the_lock_sends_nothing() {
    // The run holding the lock reports for itself; the refused one only exits 4.
    let fx = fixture::extract();
    let dir = tempfile::tempdir().unwrap();
    let rec = HttpRecorder::start();
    let holder = dir.path().join("holder");
    fs::create_dir_all(&holder).unwrap();
    // Hold the lock with a slow first run (bandwidth-capped), then start a second one.
    let mut slow = Command::new(env!("CARGO_BIN_EXE_cbob"));
    slow.env_clear()
        .env("HOME", &holder)
        .env("PATH", "/usr/bin:/bin")
        .env("CBOB_BASE_PATH", dir.path().join("state"))
        .env("CBOB_TARGET_PATH", dir.path().join("copy"))
        .args(["sync", "--source", &source(&fx.repo), "--bandwidth", "200K"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = slow.spawn().unwrap();
    let lock_seen = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        dir.path().join("copy").exists()
    });
    assert!(lock_seen, "the first run never started copying");
    let run = cbob(
        dir.path(),
        &["sync", "--source", &source(&fx.repo)],
        &notify_env(&rec),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(rec.requests().is_empty(), "{:?}", rec.requests());
}

#[test]
fn dry_runs_and_estimates_send_nothing_and_write_no_metrics() {
    let fx = fixture::extract();
    let dir = tempfile::tempdir().unwrap();
    let rec = HttpRecorder::start();
    for extra in [["--dry-run"], ["--estimate-only"]] {
        let mut args = vec!["sync", "--source"];
        let src = source(&fx.repo);
        args.push(&src);
        args.extend(extra);
        let run = cbob(dir.path(), &args, &notify_env(&rec));
        assert_eq!(run.code, 0, "{extra:?}: {}\n{}", run.stdout, run.stderr);
    }
    assert!(rec.requests().is_empty(), "{:?}", rec.requests());
    assert!(!dir.path().join("state/metrics/cbob.prom").exists());
    // Nothing recorded is nothing to report, not an error.
    let m = cbob(dir.path(), &["metrics"], &[]);
    assert_eq!(
        (m.code, m.stdout.as_str()),
        (0, "no runs recorded yet\n"),
        "{}",
        m.stderr
    );
    let p = cbob(dir.path(), &["metrics", "--format", "prometheus"], &[]);
    let series = prom::parse(&p.stdout);
    assert_eq!(series.len(), 1, "only the generation time: {series:?}");
}

#[test]
fn failing_or_hanging_notifiers_change_nothing_and_cost_at_most_their_budget() {
    let fx = fixture::extract();
    let dir = tempfile::tempdir().unwrap();
    let rec = HttpRecorder::start();
    rec.reply("/services/", [Reply::hang()]);
    rec.reply("/hook", [Reply::status(500)]);
    rec.reply("/hc/", [Reply::status(404)]);
    let mut env = notify_env(&rec);
    env.push(("CBOB_NOTIFY_TIMEOUT", "2".into()));
    let run = cbob(
        dir.path(),
        &["sync", "--source", &source(&fx.repo), "--format", "json"],
        &env,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert!(
        run.stderr
            .contains("notification failed; the run's result is unchanged"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(SLACK_SECRET) && !run.stderr.contains(HOOK_SECRET),
        "{}",
        run.stderr
    );

    // Two events (start, finish), each waiting at most the 2 s budget for the hanging Slack.
    let sync = Duration::from_secs_f64(doc["duration_seconds"].as_f64().unwrap());
    let overhead = run.elapsed.saturating_sub(sync);
    assert!(
        overhead >= Duration::from_millis(3900),
        "it did wait for the hanging channel: {overhead:?}"
    );
    assert!(
        overhead < Duration::from_secs(4 + 4),
        "notifications cost more than their budget: {overhead:?}"
    );

    // The 500 was retried within the budget, the 404 was not.
    let reqs = rec.requests();
    assert!(
        by_path(&reqs, "/hook").len() >= 4,
        "{}",
        by_path(&reqs, "/hook").len()
    );
    assert_eq!(by_path(&reqs, "/hc/").len(), 2);
}
