//! Never lose, corrupt or leak: a corrupted source object is detected and never published; a
//! hostile key in the source never writes outside the destination; no API key, secret key or
//! session token appears in any output or log, at any level, in any format.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cbob_test_support::bridge::{ExpiringS3Proxy, FakeBridge, FakeCluster, TokenReply};
use cbob_test_support::{S3Credentials, fixture, moto, moto_auth, s3s_fs};

use crate::common::bridge::{bridge_env, source};
use crate::common::cbob::{Cbob, Run};
use crate::common::repo::{
    TEMP_MARKER, assert_same_tree, assert_valid_repo, backup_info_text, copy_tree,
    corrupt_in_place, find_file, older_fixture, read_tree,
};
use crate::common::s3::{S3Access, dest_env};
use crate::common::{scratch_tempdir, wait_until};

/// Syncs `source` into `dest` expecting the stanza to fail on `key` (relative to the repo).
fn expect_rejected(cbob: &Cbob, source: &Path, dest: &Path, key: &str) -> Run {
    let run = cbob.run(&[
        "sync",
        "--format",
        "json",
        "--source",
        &format!("file://{}", source.display()),
        "--target",
        dest.to_str().expect("utf-8"),
        "--retry-count",
        "1",
        "--retry-delay",
        "0.1",
    ]);
    run.expect_code(1, &format!("sync of a source whose {key} is corrupted"));
    let c = run.cluster("abc123");
    let error = c["error"].as_str().unwrap_or_default();
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        error.contains(key),
        "the summary must name the corrupted object {key}: {error}"
    );
    assert!(
        !dest.join(key).exists(),
        "the corrupted {key} was published at the destination"
    );
    let tree = read_tree(dest);
    let temps: Vec<&String> = tree.keys().filter(|k| k.contains(TEMP_MARKER)).collect();
    assert!(
        temps.is_empty(),
        "a failed verified write leaves no temporary file: {temps:?}"
    );
    run
}

#[test]
fn corrupted_source_objects_are_detected_and_never_published() {
    let fx = fixture::extract();
    let stanza = fx.stanza.as_str();
    let (_older_dir, older, newest) = older_fixture(&fx.repo, stanza);
    let cbob = Cbob::new();
    let dest = cbob.path("dest");
    cbob.run(&[
        "sync",
        "--source",
        &format!("file://{}", older.display()),
        "--target",
        dest.to_str().expect("utf-8"),
    ])
    .expect_ok("a first, complete copy");
    let published = backup_info_text(&dest, stanza).expect("backup.info after the first copy");
    // A twin of that copy for the WAL case: a failed run leaves the good objects it copied.
    let dest_wal = cbob.path("dest-wal");
    copy_tree(&dest, &dest_wal);

    // The source gains a backup and WAL, one of its files damaged in place (same size).
    let bad = scratch_tempdir("corrupt-source");
    copy_tree(&fx.repo, bad.path());
    let backup_dir = bad.path().join("backup").join(stanza).join(&newest);
    let victim = find_file(&backup_dir, |rel| {
        rel.starts_with("pg_data/base/") && rel.ends_with(".lz4")
    });
    let original = std::fs::read(&victim).expect("read victim");
    corrupt_in_place(&victim);
    let key = victim
        .strip_prefix(bad.path())
        .expect("below repo")
        .to_str()
        .expect("utf-8")
        .to_string();
    expect_rejected(&cbob, bad.path(), &dest, &key);
    assert_eq!(
        backup_info_text(&dest, stanza).as_deref(),
        Some(published.as_str()),
        "backup.info must not be republished after a failed verification"
    );
    assert_eq!(
        assert_valid_repo(&dest, stanza, "after a corrupt backup file").len(),
        2
    );

    // Same for a WAL segment archived after the last backup, into the twin.
    std::fs::write(&victim, original).expect("repair victim");
    let wal = find_file(&bad.path().join("archive").join(stanza), |rel| {
        rel.contains("/000000010000000000000008-")
    });
    corrupt_in_place(&wal);
    let wal_key = wal
        .strip_prefix(bad.path())
        .expect("below repo")
        .to_str()
        .expect("utf-8")
        .to_string();
    expect_rejected(&cbob, bad.path(), &dest_wal, &wal_key);
    assert_eq!(
        backup_info_text(&dest_wal, stanza).as_deref(),
        Some(published.as_str()),
        "backup.info must not be republished after a failed WAL verification"
    );
    assert_eq!(
        assert_valid_repo(&dest_wal, stanza, "after a corrupt WAL segment").len(),
        2
    );
}

#[test]
fn hostile_source_keys_never_write_outside_the_destination() {
    let fx = fixture::extract();
    let s3 = S3Access::moto();
    let bucket = moto().fresh_bucket("hostile");
    s3.upload_dir(&bucket, "repo/", &fx.repo);
    let pid = std::process::id();
    let tmp_target = std::env::temp_dir().join(format!("cbob-e2e-escape-{pid}"));
    let abs_target = std::env::temp_dir().join(format!("cbob-e2e-escape-abs-{pid}"));
    let deep_up = "../".repeat(40);
    let hostile = [
        "repo/backup/abc123/../../../escape-backup".to_string(),
        "repo/archive/abc123/15-1/../../../../escape-archive".to_string(),
        format!(
            "repo/backup/abc123/{deep_up}{}",
            tmp_target.to_str().expect("utf-8").trim_start_matches('/')
        ),
        format!("repo/{}", abs_target.to_str().expect("utf-8")),
        "repo/backup/abc123/..\\..\\..\\escape-backslash".to_string(),
    ];
    for key in &hostile {
        s3.put(&bucket, key, b"hostile object");
    }
    let listed = s3.list(&bucket, "repo/");
    for key in &hostile {
        assert!(
            listed.contains_key(key),
            "the store keeps the raw hostile key {key}"
        );
    }

    let mut cbob = Cbob::new();
    cbob.env("CBOB_SOURCE_ENDPOINT", &s3.endpoint)
        .env("CBOB_SOURCE_ACCESS_KEY", &s3.access_key)
        .env("CBOB_SOURCE_SECRET_KEY", &s3.secret_key)
        .env("CBOB_SOURCE_REGION", "us-east-1");
    let sandbox = cbob.path("sandbox");
    let dest = sandbox.join("a/b/dest");
    let run = cbob.run(&[
        "sync",
        "--format",
        "json",
        "--source",
        &format!("s3://{bucket}/repo"),
        "--target",
        dest.to_str().expect("utf-8"),
    ]);
    let escaped: Vec<_> = [&tmp_target, &abs_target]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    for p in &escaped {
        let _ = std::fs::remove_file(p);
    }
    assert!(
        escaped.is_empty(),
        "hostile keys wrote outside the destination: {escaped:?}\n{}",
        run.describe()
    );
    let outside: Vec<String> = read_tree(&sandbox)
        .into_keys()
        .filter(|k| !k.starts_with("a/b/dest/"))
        .collect();
    assert!(
        outside.is_empty(),
        "files appeared next to the destination: {outside:?}"
    );
    let inside: Vec<String> = read_tree(&dest)
        .into_keys()
        .filter(|k| k.contains("escape"))
        .collect();
    assert!(inside.is_empty(), "hostile objects were copied: {inside:?}");
    // The hostile keys are not part of the repository: the rest is copied as usual.
    run.expect_ok("a source with hostile keys besides a valid repository");
    assert_same_tree(
        &read_tree(&dest),
        &read_tree(&fx.repo),
        "copy beside hostile keys",
    );
}

/// Expires every session token handed out so far once `proxy` has forwarded `after` more
/// requests, while `work` runs: a token refresh in the middle of the run, on cue.
fn with_expiry_midway<T>(proxy: &ExpiringS3Proxy, after: usize, work: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    let start = proxy.forwarded();
    std::thread::scope(|s| {
        s.spawn(|| {
            let reached = wait_until(Duration::from_secs(120), Duration::from_millis(10), || {
                done.load(Ordering::SeqCst) || proxy.forwarded() >= start + after
            });
            if reached && !done.load(Ordering::SeqCst) {
                proxy.issues().expire_all();
            }
        });
        let out = work();
        done.store(true, Ordering::SeqCst);
        out
    })
}

/// Every place a secret could land in `s`: the whole value, and 16-character windows from its
/// start and middle (a truncated or wrapped secret still leaks).
fn leaks(s: &str, secret: &str) -> bool {
    if s.contains(secret) {
        return true;
    }
    let b = secret.as_bytes();
    if b.len() < 24 || !secret.is_ascii() {
        return false;
    }
    let mid = b.len() / 2 - 8;
    [&secret[..16], &secret[mid..mid + 16]]
        .iter()
        .any(|w| s.contains(w))
}

#[test]
fn no_secret_appears_in_any_output_or_log() {
    let src = source();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let api_key = format!("cbkey_SECRET_{}_{nanos}", std::process::id());
    let leaky_secret = format!("LEAKYsecretValue{nanos}xyzxyzxyz");
    let leaky_token = format!("LEAKYsessionToken{nanos}abcabcabc");

    let proxy = ExpiringS3Proxy::start(&moto_auth().endpoint(), Duration::from_secs(3600));
    let api = FakeBridge::start(&api_key);
    api.add_team("t1personal", "Personal", true);
    for id in ["abc123", "leaky1", "leaky2"] {
        api.add_cluster(FakeCluster::primary(id, "t1personal"));
    }
    let issued: Arc<Mutex<Vec<S3Credentials>>> = Arc::default();
    api.set_token("abc123", src.abc.sts_token_recorded(issued.clone()));
    // A malformed token and one of an unknown type, both carrying secrets an error message
    // could echo.
    api.set_token(
        "leaky1",
        TokenReply::Raw {
            status: 200,
            body: format!(
                r#"{{"type":"s3","repo_path":"/x","aws":{{"s3_key_secret":"{leaky_secret}","s3_token":"{leaky_token}""#
            ),
            retry_after: None,
        },
    );
    let mut unknown = cbob_test_support::bridge::s3_token_json(
        &src.abc.location(),
        &S3Credentials {
            access_key_id: "ASIALEAKYLEAKYLEAKY1".into(),
            secret_access_key: leaky_secret.clone(),
            session_token: Some(leaky_token.clone()),
            region: "us-east-1".into(),
        },
    );
    unknown["type"] = "gcs".into();
    api.set_token("leaky2", TokenReply::Json(unknown));
    api.register_tokens_with(proxy.issues());

    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &proxy.endpoint());
    let s3s = S3Access::s3s();
    let bucket = s3s_fs().fresh_bucket("dest-secrets");
    let logs = cbob.path("logs");
    cbob.env("CBOB_LOG_PATH", logs.to_str().expect("utf-8"));

    dest_env(&mut cbob, &s3s, &bucket, "copy");
    let stored = s3s_fs().data_dir().join(&bucket).join("copy");
    // A text run copying everything, then a JSON run copying the newest backup again (deleted
    // behind the store's back); session tokens expire in the middle of each.
    let newest = fixture::expected()
        .backups
        .last()
        .expect("fixture backups")
        .label
        .clone();
    let trace_run = |format: &str, extra: &[&str]| {
        let mut args = vec!["--log-level", "trace", "--log-format", format, "sync"];
        args.extend(["--format", format]);
        args.extend(extra);
        let run = cbob.run(&args);
        run.expect_code(1, "the leaky clusters fail, abc123 succeeds");
        assert_same_tree(
            &read_tree(&stored),
            &src.abc.tree,
            &format!("{format} run's copy"),
        );
        run
    };
    // Text: a full copy; every session token so far expires after 300 requests.
    let text = with_expiry_midway(&proxy, 300, || trace_run("text", &[]));
    let after_text = (proxy.rejected(), api.token_requests("abc123"));
    // JSON: the newest backup again (deleted behind the store's back), one file at a time at
    // 1 MB/s while tokens live 1 s.
    std::fs::remove_dir_all(stored.join("backup/abc123").join(&newest))
        .expect("delete the newest backup from the copy");
    proxy.set_max_age(Duration::from_secs(1));
    let json = trace_run("json", &["--bandwidth", "1MB/s", "--transfers", "1"]);
    let after_json = (proxy.rejected(), api.token_requests("abc123"));
    assert!(
        after_text.0 >= 1 && after_text.1 >= 2,
        "the text run refreshed its token after ExpiredToken: {after_text:?} (rejections, tokens)"
    );
    assert!(
        after_json.0 > after_text.0 && after_json.1 >= after_text.1 + 2,
        "the JSON run refreshed its token after ExpiredToken: {after_json:?} after {after_text:?}"
    );
    let mut runs = vec![text, json];
    for args in [
        &["config", "show"][..],
        &["config", "show", "--format", "json"][..],
        &["sync", "--status", "--format", "json"][..],
    ] {
        runs.push(cbob.run(args));
    }

    let log_text = String::from_utf8_lossy(
        &std::fs::read(logs.join("cbob.log")).expect("cbob.log under CBOB_LOG_PATH"),
    )
    .into_owned();
    assert!(
        log_text.contains("DEBUG") || log_text.contains("TRACE"),
        "cbob.log has debug/trace lines (the test must see the most verbose logs)"
    );
    assert!(
        log_text.lines().any(|l| l.trim_start().starts_with('{')),
        "cbob.log has JSON lines from the --log-format json run"
    );

    let mut secrets: Vec<(String, String)> = vec![
        ("CBOB_CRUNCHY_API_KEY".into(), api_key.clone()),
        ("CBOB_DEST_SECRET_KEY".into(), s3s.secret_key.clone()),
        ("a malformed token's secret".into(), leaky_secret),
        ("a malformed token's session token".into(), leaky_token),
    ];
    for (i, c) in issued.lock().expect("issued").iter().enumerate() {
        secrets.push((format!("STS secret key #{i}"), c.secret_access_key.clone()));
        if let Some(t) = &c.session_token {
            secrets.push((format!("STS session token #{i}"), t.clone()));
        }
    }
    assert!(secrets.len() >= 8, "tokens were issued: {}", secrets.len());
    let mut places: Vec<(String, String)> = runs
        .iter()
        .flat_map(|r| {
            [
                (format!("stdout of {:?}", r.args), r.stdout.clone()),
                (format!("stderr of {:?}", r.args), r.stderr.clone()),
            ]
        })
        .collect();
    places.push(("cbob.log".into(), log_text));
    for (rel, bytes) in read_tree(&cbob.base()) {
        places.push((
            format!("$CBOB_BASE_PATH/{rel}"),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    let found: Vec<String> = places
        .iter()
        .flat_map(|(place, text)| {
            secrets
                .iter()
                .filter(|(_, secret)| leaks(text, secret))
                .map(move |(name, _)| format!("{name} in {place}"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "secrets leaked:\n  {}",
        found.join("\n  ")
    );
    // The search has teeth: `config show --unmask` prints the secrets it was given.
    let unmasked = cbob.run(&["config", "show", "--unmask"]);
    for (name, secret) in &secrets[..2] {
        assert!(
            leaks(&unmasked.stdout, secret),
            "{name} is found where it is meant to be shown (config show --unmask)"
        );
    }
}
