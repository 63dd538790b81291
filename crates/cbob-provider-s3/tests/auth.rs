//! Credentials against servers that check them: moto in auth mode with STS AssumeRole session
//! credentials (what a Crunchy Bridge backup token is), and s3s-fs with its one key pair.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cbob_core::Secret;
use cbob_core::storage::credentials::{CredentialSource, S3Credentials};
use cbob_core::storage::{
    Body, DynProvider, KeyPrefix, ObjectKey, PutOptions, StorageError, StorageErrorKind,
    StorageResult, read_to_bytes,
};
use cbob_core::testkit::{pattern_sha1, pattern_stream};
use common::{blocking, build, spec};
use futures::TryStreamExt;
use sha1::{Digest, Sha1};

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// A fresh bucket on auth-mode moto and a fresh STS session for it.
async fn auth_bucket(base: &'static str) -> (String, String, cbob_test_support::S3Credentials) {
    blocking(move || {
        let m = cbob_test_support::moto_auth();
        (
            m.endpoint(),
            m.fresh_bucket(base),
            m.assume_role().credentials,
        )
    })
    .await
}

fn core_creds(c: &cbob_test_support::S3Credentials) -> S3Credentials {
    S3Credentials {
        access_key: Secret::new(c.access_key_id.clone()),
        secret_key: Secret::new(c.secret_access_key.clone()),
        session_token: c.session_token.clone().map(Secret::new),
        expires_at: None,
    }
}

/// Asserts that none of the credential values appears in an error's message or Debug.
fn assert_no_secrets(e: &StorageError, creds: &cbob_test_support::S3Credentials) {
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(&creds.secret_access_key),
        "secret key leaked: {text}"
    );
    if let Some(t) = &creds.session_token {
        assert!(!text.contains(t.as_str()), "session token leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_session_credentials_work() {
    let (endpoint, bucket, creds) = auth_bucket("s3-sts").await;
    let p = build(&spec(&endpoint, &bucket, "repo", &creds)).await;
    p.put(
        &k("a/b"),
        Body::from_bytes("session"),
        &PutOptions::default(),
    )
    .await
    .expect("put");
    assert_eq!(read_to_bytes(&*p, &k("a/b")).await.unwrap(), "session");
    let listed: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.expect("list");
    assert_eq!(listed.len(), 1);
    p.check(cbob_core::storage::CheckMode::ReadWrite)
        .await
        .expect("check");
    p.delete(&k("a/b")).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_unauthenticated_and_not_printed() {
    let (endpoint, bucket, creds) = auth_bucket("s3-wrong-secret").await;
    let mut wrong = creds.clone();
    wrong.secret_access_key = "this-is-the-wrong-secret-key-0123456789".into();
    let p = build(&spec(&endpoint, &bucket, "", &wrong)).await;
    let e = p
        .put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert!(!e.is_transient());
    assert!(
        e.message()
            .contains("check the access key id and secret key"),
        "{e}"
    );
    assert!(e.message().contains("SignatureDoesNotMatch"), "{e}");
    assert_no_secrets(&e, &wrong);
    assert_no_secrets(&e, &creds);
    let dbg = format!("{p:?}");
    assert!(
        !dbg.contains(&wrong.secret_access_key)
            && !dbg.contains(creds.session_token.as_deref().unwrap()),
        "{dbg}"
    );
    let e = p
        .check(cbob_core::storage::CheckMode::Read)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_session_token_is_unauthenticated() {
    let (endpoint, bucket, mut creds) = auth_bucket("s3-no-token").await;
    creds.session_token = None;
    let p = build(&spec(&endpoint, &bucket, "", &creds)).await;
    let e = p
        .list(&KeyPrefix::all())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert_no_secrets(&e, &creds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_wrong_secret_is_unauthenticated() {
    let (endpoint, bucket, mut creds) = blocking(|| {
        let s = cbob_test_support::s3s_fs();
        (s.endpoint(), s.fresh_bucket("s3-wrong"), s.credentials())
    })
    .await;
    creds.secret_access_key = "not-the-s3s-fs-secret".into();
    let p = build(&spec(&endpoint, &bucket, "", &creds)).await;
    let e = p.head(&k("x")).await.unwrap_err();
    // HEAD has no error body; a 403 there cannot say why. A listing can.
    assert!(
        matches!(
            e.kind(),
            StorageErrorKind::PermissionDenied | StorageErrorKind::Unauthenticated
        ),
        "{e}"
    );
    let e = p
        .list(&KeyPrefix::all())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert_no_secrets(&e, &creds);
}

/// Hands out a scripted sequence of credentials and counts the fetches.
#[derive(Debug)]
struct Scripted {
    queue: Mutex<VecDeque<S3Credentials>>,
    fetches: AtomicU32,
}

impl Scripted {
    fn new(creds: Vec<S3Credentials>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(creds.into()),
            fetches: AtomicU32::new(0),
        })
    }

    fn fetches(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CredentialSource<S3Credentials> for Scripted {
    async fn fetch(&self) -> StorageResult<S3Credentials> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.queue.lock().unwrap().pop_front().ok_or_else(|| {
            StorageError::new(StorageErrorKind::Other, "test credential source exhausted")
        })
    }
}

/// Real key and secret with a token moto does not know: it answers InvalidToken.
fn with_bad_token(c: &cbob_test_support::S3Credentials) -> S3Credentials {
    let mut bad = core_creds(c);
    bad.session_token = Some(Secret::new(
        "FQoGZXIvYXdzEBogus-token-that-moto-never-issued",
    ));
    bad
}

async fn refreshing_provider(endpoint: &str, bucket: &str, source: Arc<Scripted>) -> DynProvider {
    let mut s = spec(
        endpoint,
        bucket,
        "refresh",
        &cbob_test_support::moto().credentials(),
    );
    s.access_key = None;
    s.secret_key = None;
    s.s3_credentials = Some(source);
    build(&s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_is_refreshed_and_the_request_resent() {
    let (endpoint, bucket, good) = auth_bucket("s3-refresh").await;
    let source = Scripted::new(vec![with_bad_token(&good), core_creds(&good)]);
    let p = refreshing_provider(&endpoint, &bucket, source.clone()).await;
    p.put(
        &k("obj"),
        Body::from_bytes("after refresh"),
        &PutOptions::default(),
    )
    .await
    .expect("put succeeds after one refresh");
    assert_eq!(
        source.fetches(),
        2,
        "first credentials rejected, second accepted"
    );
    assert_eq!(
        read_to_bytes(&*p, &k("obj")).await.unwrap(),
        "after refresh"
    );
    let listed: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(source.fetches(), 2, "good credentials are cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_put_with_rejected_token_asks_for_a_retry_with_new_credentials() {
    let (endpoint, bucket, good) = auth_bucket("s3-refresh-stream").await;
    let source = Scripted::new(vec![with_bad_token(&good), core_creds(&good)]);
    let p = refreshing_provider(&endpoint, &bucket, source.clone()).await;
    // 3 MiB: above the buffering limit, below multipart: a stream that cannot be replayed.
    const SIZE: u64 = 3 * 1024 * 1024;
    let e = p
        .put(
            &k("big"),
            Body::from_stream(SIZE, pattern_stream(1, SIZE)),
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::CredentialsExpired, "{e}");
    assert!(e.is_transient(), "the transfer is worth retrying: {e}");
    assert_no_secrets(&e, &good);
    p.put(
        &k("big"),
        Body::from_stream(SIZE, pattern_stream(1, SIZE)),
        &PutOptions::default(),
    )
    .await
    .expect("the retried transfer uses the refreshed credentials");
    assert_eq!(source.fetches(), 2);
}

/// The first credentials run out (known expiry) after the first part; the next ones are
/// rejected by the server; the third work. The upload carries on with its next part: the body
/// is a one-shot stream, so success proves nothing was restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_continues_after_a_refresh_mid_upload() {
    let (endpoint, bucket, first) = auth_bucket("s3-refresh-mpu").await;
    let third = blocking(|| cbob_test_support::moto_auth().assume_role().credentials).await;
    let mut gen1 = core_creds(&first);
    // The cache refreshes when less than 300 s of validity is left: usable for about 4 s.
    gen1.expires_at = Some(SystemTime::now() + Duration::from_secs(304));
    let source = Scripted::new(vec![gen1, with_bad_token(&first), core_creds(&third)]);
    let p = refreshing_provider(&endpoint, &bucket, source.clone()).await;

    const SIZE: u64 = 20 * 1024 * 1024 + 3;
    const PAUSE_AT: u64 = 9 * 1024 * 1024; // inside part 2
    let mut sent = 0u64;
    let slow = pattern_stream(4, SIZE).and_then(move |chunk: Bytes| {
        let before = sent;
        sent += chunk.len() as u64;
        async move {
            if before < PAUSE_AT && before + chunk.len() as u64 >= PAUSE_AT {
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            Ok(chunk)
        }
    });
    p.put(
        &k("mpu"),
        Body::from_stream(SIZE, Box::pin(slow)),
        &PutOptions::default(),
    )
    .await
    .expect("multipart upload across a credential refresh");
    assert_eq!(source.fetches(), 3, "expiry refresh, rejection, refresh");
    let mut h = Sha1::new();
    let mut stream = p.get(&k("mpu"), None).await.unwrap();
    while let Some(chunk) = stream.try_next().await.unwrap() {
        h.update(&chunk);
    }
    assert_eq!(<[u8; 20]>::from(h.finalize()), pattern_sha1(4, SIZE));
}
