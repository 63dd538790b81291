//! Backup tokens and the API key: a token expiring in the middle of a run is replaced and the
//! run carries on; a cluster whose token cannot be had or used fails alone, with a message
//! that says why, while the other cluster is copied; a missing or wrong API key is named.

use std::time::Duration;

use cbob_test_support::bridge::{
    ExpiringS3Proxy, Failure, FakeBridge, FakeCluster, S3Location, TokenReply, s3_token_json,
};
use cbob_test_support::{S3Credentials, moto_auth};

use crate::common::bridge::{bridge_env, source};
use crate::common::cbob::Cbob;
use crate::common::repo::{
    assert_same_tree, assert_valid_repo, read_tree, without_newest_backup, write_tree,
};

/// A fake API whose personal team holds `ids` (each a primary).
fn api_with(key: &str, ids: &[&str]) -> FakeBridge {
    let api = FakeBridge::start(key);
    api.add_team("t1personal", "Personal", true);
    for id in ids {
        api.add_cluster(FakeCluster::primary(id, "t1personal"));
    }
    api
}

#[test]
fn a_token_expiring_mid_run_is_replaced_and_the_run_succeeds() {
    let src = source();
    // Session tokens older than 2 s get S3's ExpiredToken; the copy is capped so it lasts
    // several times that.
    let proxy = ExpiringS3Proxy::start(&moto_auth().endpoint(), Duration::from_secs(2));
    let api = api_with("cbkey_e2e_expiry", &["abc123"]);
    api.set_token("abc123", src.abc.sts_token());
    api.register_tokens_with(proxy.issues());
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &proxy.endpoint());
    // An earlier copy: the newest backup and WAL (about 5 MB) remain to copy.
    let dest = cbob.path("dest");
    write_tree(&dest, &without_newest_backup(&src.abc.tree));

    let run = cbob.run(&[
        "sync",
        "--format",
        "json",
        "--cluster",
        "abc123",
        "--target",
        dest.to_str().expect("utf-8"),
        "--bandwidth",
        "1MB/s",
        "--transfers",
        "2",
    ]);
    run.expect_ok("a sync that outlives its backup token");
    assert_eq!(run.cluster("abc123")["ok"], true, "{}", run.describe());
    let (tokens, rejected) = (api.token_requests("abc123"), proxy.rejected());
    eprintln!(
        "expiry run: {:.1}s, {tokens} token requests, {rejected} ExpiredToken answers",
        run.elapsed.as_secs_f64()
    );
    assert!(
        rejected >= 1,
        "the run (of {:.1}s) must have met an expired token at least once",
        run.elapsed.as_secs_f64()
    );
    assert!(
        tokens >= 2,
        "a new backup token must have been fetched after ExpiredToken ({tokens} requests)"
    );
    assert!(
        tokens <= rejected + 1,
        "tokens are fetched once per run plus once per expiry, never more \
         ({tokens} requests for {rejected} rejections)"
    );
    assert_same_tree(
        &read_tree(&dest),
        &src.abc.tree,
        "copy across token expiries",
    );
    assert_eq!(
        assert_valid_repo(&dest, "abc123", "after expiries").len(),
        3
    );
}

/// A token of the source location with `stanza` and `repo_path` replaced: a hostile token.
fn hostile_token(location: &S3Location, repo_path: &str, stanza: &str) -> TokenReply {
    let loc = S3Location {
        repo_path: repo_path.into(),
        stanza: stanza.into(),
        ..location.clone()
    };
    let creds = S3Credentials {
        access_key_id: "ASIAHOSTILEHOSTILE01".into(),
        secret_access_key: "hostile-secret".into(),
        session_token: Some("hostile-session-token".into()),
        region: "us-east-1".into(),
    };
    TokenReply::Json(s3_token_json(&loc, &creds))
}

#[test]
fn each_failing_cluster_fails_alone_with_a_clear_message() {
    let src = source();
    // (cluster, what its token request does, what its error must say)
    let failing: &[(&str, &str)] = &[
        ("nosuch1", "not found"),
        ("denied1", "rejected the API key"),
        ("badjson1", "unexpected response"),
        ("gcs1", "unknown type"),
        ("notoken1", "s3_token"),
        ("badkeys1", ""),
        ("evilstanza1", "invalid"),
        ("evilpath1", "invalid"),
    ];
    let listed: Vec<&str> = ["abc123"]
        .into_iter()
        .chain(
            failing
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != "nosuch1"),
        )
        .collect();
    let api = api_with("cbkey_e2e_failures", &listed);
    api.set_token("abc123", src.abc.sts_token());
    api.fail_next("/clusters/denied1/backup-tokens", 100, Failure::status(403));
    api.set_token("badjson1", TokenReply::malformed());
    api.set_token("gcs1", TokenReply::unknown_type("gcs"));
    api.set_token("notoken1", TokenReply::s3_missing_field("aws.s3_token"));
    // Real STS key id and session token, wrong secret: S3 rejects every signature.
    api.set_token(
        "badkeys1",
        TokenReply::s3_with(src.def.location(), || S3Credentials {
            secret_access_key: "not-the-secret-of-this-session".into(),
            ..moto_auth().assume_role().credentials
        }),
    );
    let loc = src.def.location();
    api.set_token(
        "evilstanza1",
        hostile_token(&loc, &loc.repo_path, "../../etc"),
    );
    api.set_token(
        "evilpath1",
        hostile_token(&loc, "/pgbackrest/../../../outside", "def456"),
    );

    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    let clusters: Vec<&str> = ["abc123"]
        .into_iter()
        .chain(failing.iter().map(|(id, _)| *id))
        .collect();
    cbob.env("CBOB_CRUNCHY_CLUSTERS", &clusters.join(","));
    // An earlier copy of abc123: its newest backup and WAL remain to copy.
    let dest = cbob.path("dest");
    write_tree(&dest, &without_newest_backup(&src.abc.tree));

    let run = cbob.run(&[
        "sync",
        "--format",
        "json",
        "--target",
        dest.to_str().expect("utf-8"),
        "--retry-count",
        "1",
        "--retry-delay",
        "0.1",
        "--parallel",
        "4",
    ]);
    run.expect_code(1, "some clusters failed");
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["failed"], failing.len(), "{}", run.describe());
    let good = run.cluster("abc123");
    assert_eq!(good["ok"], true, "the good cluster is copied: {good}");
    assert!(
        good["copied_files"].as_u64() > Some(0),
        "abc123's newest backup was copied while the others failed: {good}"
    );
    for (id, says) in failing {
        let c = run.cluster(id);
        let error = c["error"].as_str().unwrap_or_default();
        eprintln!("{id}: {error}");
        assert_eq!(c["ok"], false, "{id} must fail: {c}");
        assert!(!error.trim().is_empty(), "{id} has an error message: {c}");
        assert!(
            error.contains(says),
            "{id}'s error must say {says:?}: {error}"
        );
        assert!(
            !error.contains("hostile-secret") && !error.contains("hostile-session-token"),
            "{id}'s error repeats the token's secrets: {error}"
        );
    }
    let badkeys = run.cluster("badkeys1")["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        ["signature", "denied", "credential", "forbidden", "403"]
            .iter()
            .any(|w| badkeys.contains(w)),
        "badkeys1's error must say that the store refused the credentials: {badkeys}"
    );
    // Only abc123 landed; nothing of the hostile tokens anywhere near the destination.
    assert_same_tree(
        &read_tree(&dest),
        &src.abc.tree,
        "destination after failures",
    );
    let around = dest.parent().expect("parent");
    for name in ["etc", "outside"] {
        assert!(
            !around.join(name).exists() && !dest.join(name).exists(),
            "a hostile token wrote {name} outside the stanza directories"
        );
    }
    // The text summary names every failed cluster too.
    let text = cbob.run(&[
        "sync",
        "--target",
        dest.to_str().expect("utf-8"),
        "--retry-count",
        "1",
        "--retry-delay",
        "0.1",
    ]);
    text.expect_code(1, "text summary of the same failures");
    for (id, _) in failing {
        assert!(
            text.stdout
                .lines()
                .any(|l| l.contains(id) && l.contains("FAILED")),
            "the text summary marks {id} FAILED:\n{}",
            text.stdout
        );
    }
}

#[test]
fn a_missing_api_key_exits_2_and_a_wrong_one_is_named() {
    let api = api_with("cbkey_e2e_right", &["abc123"]);
    let mut cbob = Cbob::new();
    cbob.env("CBOB_CRUNCHY_API_URL", &api.url());
    let dest = cbob.path("dest").join("copy");
    let target = dest.to_str().expect("utf-8");

    let missing = cbob.run(&["sync", "--target", target]);
    missing.expect_code(2, "sync without CBOB_CRUNCHY_API_KEY");
    assert!(
        missing.stderr.contains("CBOB_CRUNCHY_API_KEY"),
        "the error names CBOB_CRUNCHY_API_KEY:\n{}",
        missing.describe()
    );
    assert!(
        api.requests().is_empty(),
        "nothing is asked of the API without a key: {:?}",
        api.requests()
    );
    // Checked last: exit 2 promises that nothing was done.
    let touched = dest
        .exists()
        .then(|| read_tree(&dest).into_keys().collect::<Vec<_>>());
    if touched.is_some() {
        std::fs::remove_dir_all(&dest).expect("clean the target for the next run");
    }

    cbob.env("CBOB_CRUNCHY_API_KEY", "cbkey_e2e_wrong");
    let wrong = cbob.run(&["sync", "--target", target]);
    wrong.expect_code(1, "sync with a wrong API key");
    let all = format!("{}{}", wrong.stdout, wrong.stderr);
    assert!(
        all.contains("CBOB_CRUNCHY_API_KEY") && all.contains("rejected"),
        "the error says the API rejected CBOB_CRUNCHY_API_KEY:\n{}",
        wrong.describe()
    );
    assert!(
        !all.contains("cbkey_e2e_wrong"),
        "the key itself is never printed:\n{}",
        wrong.describe()
    );
    let reqs = api.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| !r.auth_ok),
        "the API saw only the wrong key: {reqs:?}"
    );
    assert_eq!(
        api.token_requests("abc123"),
        0,
        "no token without a valid key"
    );
    assert!(
        !dest.join("archive").exists() && !dest.join("backup").exists(),
        "nothing copied"
    );
    assert_eq!(
        touched,
        None,
        "the run that exited 2 for the missing API key created the target directory {} \
         (Some(files in it)); exit 2 means nothing was done",
        dest.display()
    );
}
