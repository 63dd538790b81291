//! The Crunchy Bridge client against the fake API of cbob-test-support (SPEC §4).

use std::time::{Duration, Instant};

use cbob_core::Secret;
use cbob_core::bridge::{
    BridgeClient, BridgeError, BridgeTokenSource, ClusterSelection, TokenKind,
};
use cbob_core::layers::RetryPolicy;
use cbob_core::storage::credentials::{CredentialSource, S3Credentials};
use cbob_test_support::S3Credentials as TestCreds;
use cbob_test_support::bridge::{
    AzureToken, Failure, FakeBackup, FakeBridge, FakeCluster, S3Location, TokenReply,
};

const KEY: &str = "cbkey_TOP-secret-0123456789";

fn fast() -> RetryPolicy {
    RetryPolicy::new(3, Duration::from_millis(10))
}

fn client(api: &FakeBridge) -> BridgeClient {
    BridgeClient::new(&api.url(), Secret::new(KEY), fast()).unwrap()
}

fn creds(n: usize) -> TestCreds {
    TestCreds {
        access_key_id: format!("ASIA{n}"),
        secret_access_key: format!("secret{n}"),
        session_token: Some(format!("session{n}")),
        region: "us-east-1".into(),
    }
}

/// Asserts the key is in neither the message nor the Debug form of an error.
fn no_key(e: &BridgeError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY), "the API key leaked: {text}");
}

/// Two teams, primaries and replicas spread over one-item pages.
fn populated() -> FakeBridge {
    let api = FakeBridge::start(KEY);
    api.add_team("personal1", "Personal", true);
    api.add_team("acme2", "Acme", false);
    api.add_cluster(FakeCluster::primary("p1", "personal1"));
    api.add_cluster(FakeCluster::replica("r1", "personal1", "p1"));
    api.add_cluster(FakeCluster::primary("p2", "acme2").with_nested_replicas(&["r2"]));
    // r2 is listed at top level without a parent_id, but nested under p2: still a replica.
    api.add_cluster(FakeCluster::primary("r2", "acme2"));
    api.add_cluster(FakeCluster::primary("ign3", "acme2"));
    api.add_cluster(FakeCluster::primary("p3", "acme2"));
    for id in ["p1", "r1", "p2", "r2", "ign3", "p3"] {
        api.set_token(
            id,
            TokenReply::s3_static(
                S3Location::new("bkt", &format!("/pgbackrest/{id}/repo1"), id),
                creds(0),
            ),
        );
    }
    api
}

#[tokio::test]
async fn discovery_walks_every_team_and_page_and_skips_replicas_and_ignored() {
    let api = populated();
    let c = client(&api);
    let sel = ClusterSelection::new(&[], &[], &["ign3".into()]).unwrap();
    let selected = sel.resolve(&c).await.unwrap();
    assert_eq!(selected.ids, ["p1", "p2", "p3"]);
    let d = selected.discovery.unwrap();
    assert_eq!(d.replicas, ["r1", "r2"]);
    assert_eq!(d.ignored, ["ign3"]);
    assert_eq!(d.total, 6);

    for id in &selected.ids {
        let t = c.backup_token(id).await.unwrap();
        assert_eq!(t.stanza, *id);
    }
    assert_eq!(
        api.clusters_asked_for_tokens(),
        ["p1", "p2", "p3"],
        "replicas and ignored never asked"
    );
    let reqs = api.requests();
    // teams + personal1 (2 pages) + acme2 (4 pages) + 3 tokens
    assert_eq!(reqs.len(), 1 + 2 + 4 + 3, "{reqs:#?}");
    assert!(
        reqs.iter()
            .all(|r| r.auth_ok && r.accept.as_deref() == Some("application/json"))
    );
    assert!(
        reqs.iter().filter(|r| r.path == "/clusters").all(|r| r
            .query
            .as_deref()
            .unwrap()
            .contains("team_id=")),
        "every listing names its team"
    );
}

#[tokio::test]
async fn explicit_lists_make_no_listing_requests() {
    let api = populated();
    let sel =
        ClusterSelection::new(&["p3".into(), "r1".into()], &["p1".into()], &["p3".into()]).unwrap();
    let selected = sel.resolve(&client(&api)).await.unwrap();
    assert_eq!(
        selected.ids,
        ["p3", "r1"],
        "flags as given, ignore list not applied"
    );
    assert!(selected.discovery.is_none());
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn lists_backups_across_pages() {
    let api = populated();
    api.add_backups(
        "p1",
        [
            "20250101-010203F",
            "20250102-010203F_20250102-020000I",
            "20250103-010203F",
        ]
        .map(FakeBackup::new),
    );
    let b = client(&api).backups("p1").await.unwrap();
    assert_eq!(
        b.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        [
            "20250101-010203F",
            "20250102-010203F_20250102-020000I",
            "20250103-010203F"
        ]
    );
    assert_eq!(b[0].size_bytes, Some(31_457_280));
    assert!(b[0].finished_at.is_some());
    assert_eq!(api.requests().len(), 3, "one backup per page");
    assert!(client(&api).backups("p2").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_key_is_an_auth_error_that_never_shows_the_key() {
    let api = populated();
    let wrong = format!("{KEY}-wrong");
    let c = BridgeClient::new(&api.url(), Secret::new(wrong.clone()), fast()).unwrap();
    let e = c.teams().await.unwrap_err();
    assert!(e.is_auth_error(), "{e:?}");
    assert!(e.to_string().contains("check CBOB_CRUNCHY_API_KEY"), "{e}");
    assert!(!format!("{e} {e:?} {c:?}").contains(&wrong));
    let e = c.backup_token("p1").await.unwrap_err();
    assert!(e.is_auth_error());
    assert_eq!(api.requests().len(), 2, "auth errors are not retried");
    assert!(api.requests().iter().all(|r| !r.auth_ok && r.status == 401));
    assert!(!format!("{:?}", client(&api)).contains(KEY));
}

#[tokio::test]
async fn an_unknown_cluster_is_named() {
    let api = populated();
    let c = client(&api);
    for e in [
        c.backup_token("nosuch9").await.unwrap_err(),
        c.backups("nosuch9").await.unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.cluster(), Some("nosuch9"));
        assert!(e.to_string().contains("nosuch9"), "{e}");
        no_key(&e);
    }
    // A cluster that exists but whose token endpoint says 404 (deleted meanwhile).
    api.set_token("p1", TokenReply::status(404));
    assert!(c.backup_token("p1").await.unwrap_err().is_not_found());
    // Invalid ids never reach the API.
    let e = c.backup_token("../teams").await.unwrap_err();
    assert!(matches!(e, BridgeError::InvalidClusterId { .. }) && e.is_config_error());
    assert_eq!(api.requests().len(), 3);
}

#[tokio::test]
async fn broken_tokens_give_distinct_errors() {
    let api = populated();
    let c = client(&api);
    api.set_token("p1", TokenReply::malformed());
    let e = c.backup_token("p1").await.unwrap_err();
    assert!(matches!(e, BridgeError::MalformedResponse { .. }), "{e:?}");
    api.set_token("p1", TokenReply::unknown_type("gcs"));
    let e = c.backup_token("p1").await.unwrap_err();
    assert!(
        matches!(&e, BridgeError::UnknownTokenType { kind, cluster } if kind == "gcs" && cluster == "p1"),
        "{e:?}"
    );
    api.set_token("p1", TokenReply::s3_missing_field("aws.s3_key_secret"));
    let e = c.backup_token("p1").await.unwrap_err();
    assert!(
        matches!(
            e,
            BridgeError::MissingField {
                field: "aws.s3_key_secret",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("aws.s3_key_secret"));
    api.set_token("p1", TokenReply::s3_missing_field("stanza"));
    assert!(matches!(
        c.backup_token("p1").await,
        Err(BridgeError::MissingField {
            field: "stanza",
            ..
        })
    ));
    assert!(e.is_invalid_response() && !e.is_transient());
    no_key(&e);
    assert_eq!(
        api.token_requests("p1"),
        4,
        "invalid tokens are not retried"
    );
}

#[tokio::test]
async fn azure_tokens_parse() {
    let api = populated();
    api.set_token(
        "p2",
        TokenReply::Azure(AzureToken {
            account: "cbacct".into(),
            container: "backups".into(),
            key: "c2VjcmV0".into(),
            key_type: "sas".into(),
            repo_path: "/pgbackrest/p2/repo1".into(),
            stanza: "p2".into(),
        }),
    );
    let t = client(&api).backup_token("p2").await.unwrap();
    assert!(matches!(&t.kind, TokenKind::Azure { account, .. } if account == "cbacct"));
    let spec = t.provider_spec(&client(&api), None);
    assert_eq!(
        (spec.kind.as_str(), spec.prefix.as_str()),
        ("azure", "pgbackrest/p2/repo1")
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let api = populated();
    api.fail_next("/clusters/p1/backup-tokens", 2, Failure::status(500));
    api.fail_next("/teams", 1, Failure::status(503));
    let c = client(&api);
    assert_eq!(c.backup_token("p1").await.unwrap().stanza, "p1");
    assert_eq!(api.token_requests("p1"), 3);
    assert_eq!(c.teams().await.unwrap().len(), 2);
}

#[tokio::test]
async fn persistent_server_errors_end_in_a_clear_error() {
    let api = populated();
    api.fail_next("/clusters/p1/backup-tokens", 10, Failure::status(502));
    let c = BridgeClient::new(
        &api.url(),
        Secret::new(KEY),
        RetryPolicy::new(2, Duration::from_millis(5)),
    )
    .unwrap();
    let e = c.backup_token("p1").await.unwrap_err();
    assert!(
        matches!(
            e,
            BridgeError::Unavailable {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert!(e.to_string().contains("HTTP 502 after 3 attempts"), "{e}");
    no_key(&e);
    // Other clusters are unaffected.
    assert!(c.backup_token("p2").await.is_ok());
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let api = populated();
    api.fail_next("/clusters/p3/backup-tokens", 1, Failure::rate_limited(1));
    // Backoff alone would wait ~1 ms: the second attempt after >= 1 s proves Retry-After won.
    let c = BridgeClient::new(
        &api.url(),
        Secret::new(KEY),
        RetryPolicy::new(3, Duration::from_millis(1)),
    )
    .unwrap();
    let start = Instant::now();
    c.backup_token("p3").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(api.token_requests("p3"), 2);
    // Pagination retries too: a 429 in the middle of a listing.
    api.fail_next("/clusters", 1, Failure::rate_limited(0));
    assert_eq!(c.clusters("acme2").await.unwrap().len(), 4);
}

#[tokio::test]
async fn network_errors_are_retried_then_reported() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = BridgeClient::new(
        &format!("http://127.0.0.1:{port}"),
        Secret::new(KEY),
        RetryPolicy::new(1, Duration::from_millis(5)),
    )
    .unwrap();
    let e = c.teams().await.unwrap_err();
    assert!(
        matches!(e, BridgeError::Network { attempts: 2, .. }),
        "{e:?}"
    );
    assert!(e.is_transient());
    no_key(&e);
}

#[tokio::test]
async fn token_source_reuses_the_first_token_then_refreshes_and_checks_the_location() {
    let api = populated();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    api.set_token(
        "p1",
        TokenReply::s3_with(
            S3Location::new("bkt", "/pgbackrest/p1/repo1", "p1"),
            move || creds(n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        ),
    );
    let c = client(&api);
    let token = c.backup_token("p1").await.unwrap();
    let spec = token.provider_spec(&c, Some("http://127.0.0.1:1".into()));
    assert_eq!(
        (spec.bucket.as_deref(), spec.prefix.as_str()),
        (Some("bkt"), "pgbackrest/p1/repo1")
    );
    let source = spec.s3_credentials.unwrap();

    let first: S3Credentials = source.fetch().await.unwrap();
    assert_eq!(first.session_token.unwrap().expose(), "session0");
    assert_eq!(
        api.token_requests("p1"),
        1,
        "the run's token is reused, not fetched again"
    );
    let second = source.fetch().await.unwrap();
    assert_eq!(second.session_token.unwrap().expose(), "session1");
    assert_eq!(second.access_key.expose(), "ASIA1");
    assert_eq!(api.token_requests("p1"), 2);

    // The API now points the cluster elsewhere: refuse rather than mix repositories.
    api.set_token(
        "p1",
        TokenReply::s3_static(
            S3Location::new("other", "/pgbackrest/p1/repo1", "p1"),
            creds(9),
        ),
    );
    let e = source.fetch().await.unwrap_err();
    assert!(
        e.message().contains("s3://other/pgbackrest/p1/repo1"),
        "{e}"
    );

    // A refresh failing with a bad key maps to an authentication storage error.
    let wrong = BridgeClient::new(&api.url(), Secret::new("cbkey-wrong-1234"), fast()).unwrap();
    let src = BridgeTokenSource::new(wrong, token);
    CredentialSource::<S3Credentials>::fetch(&src)
        .await
        .unwrap(); // seeded
    let e = CredentialSource::<S3Credentials>::fetch(&src)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        cbob_core::storage::StorageErrorKind::Unauthenticated
    );
}
