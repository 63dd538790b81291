//! Credentials against Azurite, which checks Shared Key and SAS signatures: scoping, wrong keys,
//! expired tokens, missing containers, and refresh of rejected credentials (what happens when a
//! Crunchy Bridge backup token of type `azure` is rotated or expires mid-run).

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cbob_core::storage::{
    Body, CheckMode, DynProvider, KeyPrefix, ObjectKey, PutOptions, StorageError, StorageErrorKind,
    read_to_bytes,
};
use cbob_core::testkit::{pattern_sha1, pattern_stream};
use cbob_test_support::azurite::ACCOUNT_KEY;
use common::*;
use futures::{StreamExt, TryStreamExt};
use sha1::{Digest, Sha1};

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

async fn keys(p: &DynProvider) -> Vec<String> {
    p.list(&KeyPrefix::all())
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .expect("list")
}

/// None of `secrets` appears in an error's message or Debug.
fn assert_no_secrets(e: &StorageError, secrets: &[&str]) {
    let text = format!("{e} {e:?}");
    for s in secrets {
        assert!(!text.contains(s), "secret leaked: {text}");
    }
    if let Some(i) = text.find("sig=") {
        assert!(text[i..].starts_with("sig=***"), "signature leaked: {text}");
    }
}

fn sig_of(sas: &str) -> String {
    sas.split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("a sig parameter")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_scoped_to_one_container_cannot_touch_another() {
    let (endpoint, mine) = fresh_container("az-sas-mine").await;
    let (_, other) = fresh_container("az-sas-other").await;
    let token = container_sas(&mine).await;
    let own = build(&sas_spec(&endpoint, &mine, "", &token)).await;
    own.put(&k("ok"), Body::from_bytes("mine"), &PutOptions::default())
        .await
        .expect("the SAS works on its own container");

    let foreign = build(&sas_spec(&endpoint, &other, "", &token)).await;
    let e = foreign
        .put(
            &k("intruder"),
            Body::from_bytes("x"),
            &PutOptions::default(),
        )
        .await
        .expect_err("a put into another container");
    assert!(
        matches!(
            e.kind(),
            StorageErrorKind::Unauthenticated | StorageErrorKind::PermissionDenied
        ) && !e.is_transient(),
        "{e}"
    );
    assert_no_secrets(&e, &[&token, &sig_of(&token)]);
    let e = foreign
        .list(&KeyPrefix::all())
        .try_collect::<Vec<_>>()
        .await
        .expect_err("a listing of another container");
    assert!(
        matches!(
            e.kind(),
            StorageErrorKind::Unauthenticated | StorageErrorKind::PermissionDenied
        ),
        "{e}"
    );
    assert!(foreign.check(CheckMode::Read).await.is_err());
    // Nothing landed there: look with the account key.
    let admin = build(&shared_key_spec(&endpoint, &other, "")).await;
    assert!(keys(&admin).await.is_empty(), "the foreign write landed");
    assert_eq!(keys(&own).await, ["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shared_key_is_unauthenticated_and_never_printed() {
    let (endpoint, container) = fresh_container("az-wrong-key").await;
    let mut spec = shared_key_spec(&endpoint, &container, "repo");
    spec.secret_key = Some(cbob_core::Secret::new(WRONG_KEY));
    let p = build(&spec).await;
    let e = p
        .put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert!(!e.is_transient());
    assert!(
        e.message().contains("CBOB_DEST_AZURE_KEY") && e.message().contains("HTTP 403"),
        "{e}"
    );
    assert_no_secrets(&e, &[WRONG_KEY, ACCOUNT_KEY]);
    let dbg = format!("{p:?}");
    assert!(!dbg.contains(WRONG_KEY), "{dbg}");
    let e = p.check(CheckMode::Read).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    let e = p.head(&k("x")).await.unwrap_err();
    assert_eq!(
        e.kind(),
        StorageErrorKind::Unauthenticated,
        "head: {e} {e:?}"
    );
    // The good key sees nothing written.
    let admin = build(&shared_key_spec(&endpoint, &container, "")).await;
    assert!(keys(&admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_expired_sas_is_rejected_clearly() {
    let (endpoint, container) = fresh_container("az-bad-sas").await;
    let good = container_sas(&container).await;
    let sig = sig_of(&good);
    let tampered = good.replace(&sig, &format!("AAAA{}", &sig[4..]));
    let p = build(&sas_spec(&endpoint, &container, "", &tampered)).await;
    let e = p
        .put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert!(e.message().contains("CBOB_DEST_AZURE_SAS"), "{e}");
    assert_no_secrets(&e, &[&tampered, &sig_of(&tampered), &good, &sig]);

    let c = container.clone();
    let expired = blocking(move || {
        cbob_test_support::azurite::container_sas(
            &c,
            "racwdl",
            SystemTime::now() - Duration::from_secs(600),
        )
    })
    .await;
    let p = build(&sas_spec(&endpoint, &container, "", &expired)).await;
    let e = p.check(CheckMode::Read).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert!(e.message().contains("not expired"), "{e}");
    assert_no_secrets(&e, &[&expired, &sig_of(&expired)]);

    // A read-only SAS may read but not write: PermissionDenied, not a credentials problem.
    let c = container.clone();
    let read_only = blocking(move || {
        cbob_test_support::azurite().container_sas(&c, "rl", Duration::from_secs(600))
    })
    .await;
    let p = build(&sas_spec(&endpoint, &container, "", &read_only)).await;
    p.check(CheckMode::Read).await.expect("read check with rl");
    let e = p.check(CheckMode::ReadWrite).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("racwdl"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_not_found_with_the_fix() {
    let endpoint = blocking(|| cbob_test_support::azurite().endpoint()).await;
    let p = build(&shared_key_spec(
        &endpoint,
        "no-such-container-here",
        "repo",
    ))
    .await;
    let expect_missing = |what: &str, e: StorageError| {
        assert_eq!(e.kind(), StorageErrorKind::NotFound, "{what}: {e}");
        assert!(!e.is_transient(), "{what}");
        assert!(
            e.message()
                .contains("container 'no-such-container-here' does not exist")
                && e.message().contains("CBOB_DEST_CONTAINER"),
            "{what}: {e}"
        );
    };
    expect_missing("check", p.check(CheckMode::Read).await.unwrap_err());
    expect_missing(
        "list",
        p.list(&KeyPrefix::all())
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err(),
    );
    expect_missing(
        "put",
        p.put(&k("a"), Body::from_bytes("a"), &PutOptions::default())
            .await
            .unwrap_err(),
    );
    let big = 9 * 1024 * 1024;
    expect_missing(
        "block put",
        p.put(
            &k("b"),
            Body::from_stream(big, pattern_stream(1, big)),
            &PutOptions::default(),
        )
        .await
        .unwrap_err(),
    );
    // Deleting from a container that does not exist is not a silent success.
    expect_missing("delete", p.delete(&k("a")).await.unwrap_err());
    let e = match p.get(&k("a"), None).await {
        Ok(s) => cbob_core::storage::collect_stream(s).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "get: {e}");
}

/// Writes, reads and lists through `p`: a small blob, a 9 MiB block upload (three blocks), a
/// listing. `blocks_first` makes a Put Block the first request, so a refresh happens in the
/// middle of a block upload.
async fn exercise(p: &DynProvider, blocks_first: bool) {
    let size = 9 * 1024 * 1024 + 3;
    let big = || async {
        p.put(
            &k("big"),
            Body::from_stream(size, pattern_stream(4, size)),
            &PutOptions::default(),
        )
        .await
        .expect("block put")
    };
    if blocks_first {
        big().await;
    }
    p.put(
        &k("small"),
        Body::from_bytes("small"),
        &PutOptions::default(),
    )
    .await
    .expect("small put");
    if !blocks_first {
        big().await;
    }
    let mut h = Sha1::new();
    let mut s = p.get(&k("big"), None).await.expect("get");
    while let Some(c) = s.next().await {
        h.update(c.expect("read"));
    }
    assert_eq!(<[u8; 20]>::from(h.finalize()), pattern_sha1(4, size));
    assert_eq!(
        read_to_bytes(&**p, &k("small")).await.unwrap(),
        Bytes::from("small")
    );
    assert_eq!(keys(p).await, ["big", "small"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_shared_key_credentials_are_fetched_again() {
    let (endpoint, container) = fresh_container("az-refresh-key").await;
    let source = Arc::new(Sequence::new([
        shared_key(WRONG_KEY),
        shared_key(ACCOUNT_KEY),
    ]));
    let mut spec = shared_key_spec(&endpoint, &container, "repo");
    spec.secret_key = None;
    spec.account = None; // the token names the account
    spec.azure_credentials = Some(source.clone());
    let p = build(&spec).await;
    exercise(&p, true).await;
    assert_eq!(source.fetches(), 2, "one rejection, one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sas_is_replaced_by_a_fresh_one() {
    let (endpoint, container) = fresh_container("az-refresh-sas").await;
    let c = container.clone();
    let (expired, fresh) = blocking(move || {
        (
            cbob_test_support::azurite::container_sas(
                &c,
                "racwdl",
                SystemTime::now() - Duration::from_secs(60),
            ),
            cbob_test_support::azurite().container_sas(&c, "racwdl", Duration::from_secs(3600)),
        )
    })
    .await;
    let source = Arc::new(Sequence::new([sas(&expired), sas(&fresh)]));
    let mut spec = sas_spec(&endpoint, &container, "", &fresh);
    spec.sas_token = None;
    spec.azure_credentials = Some(source.clone());
    let p = build(&spec).await;
    exercise(&p, false).await;
    assert_eq!(source.fetches(), 2, "one rejection, one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_gives_up_when_new_credentials_are_rejected_too() {
    let (endpoint, container) = fresh_container("az-refresh-fail").await;
    let source = Arc::new(Sequence::new([shared_key(WRONG_KEY)]));
    let mut spec = shared_key_spec(&endpoint, &container, "");
    spec.secret_key = None;
    spec.azure_credentials = Some(source.clone());
    let p = build(&spec).await;
    let e = p
        .put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert_no_secrets(&e, &[WRONG_KEY]);
    assert_eq!(
        source.fetches(),
        3,
        "the first credentials and two refreshes, then stop"
    );
}
