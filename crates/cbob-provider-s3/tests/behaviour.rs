//! S3-specific behaviour beyond the conformance suite: multipart parts, aborts, the streamed
//! single put, missing buckets, multipart copy, storage class and encryption.

mod common;

use std::time::Duration;

use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use bytes::Bytes;
use cbob_core::storage::{
    Body, CheckMode, KeyPrefix, ObjectKey, PutOptions, StorageError, StorageErrorKind,
    StorageProvider, collect_stream, read_to_bytes,
};
use cbob_core::testkit::{pattern_bytes, pattern_sha1, pattern_stream};
use cbob_provider_s3::S3Provider;
use common::{blocking, build, moto_bucket, spec, with_config};
use futures::{StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};
use sha1::Sha1;

const MIB: u64 = 1024 * 1024;

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

async fn moto_provider(
    base: &'static str,
    edit: impl FnOnce(&mut cbob_provider_s3::S3Config),
) -> (std::sync::Arc<S3Provider>, String) {
    let (endpoint, bucket) = moto_bucket(base).await;
    let s = spec(
        &endpoint,
        &bucket,
        "root",
        &cbob_test_support::moto().credentials(),
    );
    (with_config(&s, edit).await, bucket)
}

async fn sha1_of(p: &dyn StorageProvider, key: &str) -> ([u8; 20], u64) {
    let mut h = Sha1::new();
    let mut n = 0;
    let mut s = p.get(&k(key), None).await.expect("get");
    while let Some(chunk) = s.try_next().await.expect("read") {
        n += chunk.len() as u64;
        sha1::Digest::update(&mut h, &chunk);
    }
    (h.finalize().into(), n)
}

/// Multipart uploads still in progress under the provider's prefix (moto has ListMultipartUploads).
async fn pending_uploads(p: &S3Provider, bucket: &str) -> usize {
    let keys = uploads_in_bucket(p, bucket).await;
    keys.iter().filter(|k| k.starts_with("root/")).count()
}

/// 20 MiB + 3 bytes: parts of 8, 8 and 4 MiB + 3, each verified through the multipart ETag
/// (MD5 of the parts' MD5s), and the object read back byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_object_parts_are_exact() {
    let (p, bucket) = moto_provider("s3-mpu", |_| {}).await;
    const SIZE: u64 = 20 * MIB + 3;
    let meta = p
        .put(
            &k("wal/big"),
            Body::from_stream(SIZE, pattern_stream(11, SIZE)),
            &PutOptions::default(),
        )
        .await
        .expect("multipart put");
    assert_eq!(meta.size, SIZE);
    let mut of_parts = Vec::new();
    for (start, len) in [(0, 8 * MIB), (8 * MIB, 8 * MIB), (16 * MIB, 4 * MIB + 3)] {
        of_parts.extend_from_slice(&Md5::digest(pattern_bytes(11, start, len as usize)));
    }
    let want_etag = format!("\"{}-3\"", hex::encode(Md5::digest(&of_parts)));
    let head = p.head(&k("wal/big")).await.unwrap();
    assert_eq!(head.size, SIZE);
    assert_eq!(
        head.hashes.etag.as_deref(),
        Some(want_etag.as_str()),
        "part boundaries or contents differ"
    );
    assert_eq!(head.hashes.md5, None, "a multipart ETag is not an MD5");
    assert_eq!(meta.hashes.etag.as_deref(), Some(want_etag.as_str()));
    assert_eq!(
        sha1_of(&*p, "wal/big").await,
        (pattern_sha1(11, SIZE), SIZE)
    );
    assert_eq!(pending_uploads(&p, &bucket).await, 0);

    // An in-memory body above the threshold takes the same path, without copying parts.
    let data = pattern_bytes(12, 0, (9 * MIB) as usize);
    p.put(
        &k("mem"),
        Body::from_bytes(data.clone()),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert!(read_to_bytes(&*p, &k("mem")).await.unwrap() == data);
    assert!(
        p.head(&k("mem"))
            .await
            .unwrap()
            .hashes
            .etag
            .unwrap()
            .ends_with("-2\"")
    );
}

/// A single put reports the MD5 the ETag carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_put_reports_md5() {
    let (p, _) = moto_provider("s3-md5", |_| {}).await;
    let data = Bytes::from_static(b"backup.info contents");
    let meta = p
        .put(
            &k("backup.info"),
            Body::from_bytes(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let md5: [u8; 16] = Md5::digest(&data).into();
    assert_eq!(meta.hashes.md5, Some(md5));
    assert_eq!(
        p.head(&k("backup.info")).await.unwrap().hashes.md5,
        Some(md5)
    );
    let listed: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.unwrap();
    assert_eq!(listed[0].hashes.md5, Some(md5));
    assert!(p.capabilities().md5 && p.capabilities().server_side_copy);
}

fn broken_after(seed: u64, size: u64, good: u64) -> cbob_core::storage::ByteStream {
    pattern_stream(seed, size)
        .scan(0u64, move |sent, chunk| {
            let before = *sent;
            *sent += chunk.as_ref().map(|c| c.len() as u64).unwrap_or(0);
            futures::future::ready(Some(if before >= good {
                Err(StorageError::new(
                    StorageErrorKind::Unavailable,
                    "source connection reset",
                ))
            } else {
                chunk
            }))
        })
        .boxed()
}

/// A body that breaks after a part was uploaded, or is short, or long: the upload is aborted,
/// no object appears, no multipart upload is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_multipart_upload_is_aborted() {
    let (p, bucket) = moto_provider("s3-abort", |_| {}).await;
    const SIZE: u64 = 20 * MIB;
    let e = p
        .put(
            &k("torn"),
            Body::from_stream(SIZE, broken_after(1, SIZE, 12 * MIB)),
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        StorageErrorKind::Unavailable,
        "the source's own error comes back: {e}"
    );
    let short = Body::from_stream(SIZE, pattern_stream(2, SIZE - 5));
    let e = p
        .put(&k("torn"), short, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Corrupt, "{e}");
    let long = Body::from_stream(SIZE, pattern_stream(2, SIZE + 1));
    let e = p
        .put(&k("torn"), long, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Corrupt, "{e}");
    assert_eq!(
        p.head(&k("torn")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound
    );
    assert_eq!(
        pending_uploads(&p, &bucket).await,
        0,
        "an aborted upload was left behind"
    );

    // A put that is dropped mid-way (a cancelled run) aborts its upload in the background.
    let stalls = pattern_stream(3, SIZE)
        .take(((10 * MIB) / (64 * 1024)) as usize)
        .chain(futures::stream::pending())
        .boxed();
    let (key, options) = (k("cancelled"), PutOptions::default());
    let put = p.put(&key, Body::from_stream(SIZE, stalls), &options);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), put)
            .await
            .is_err(),
        "the stalled put must not finish"
    );
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = pending_uploads(&p, &bucket).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "a dropped put left its multipart upload behind");
}

/// A streamed single PutObject (between the buffering limit and the multipart threshold) never
/// publishes a short or long body, on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_single_put_is_exact() {
    let (moto, _) = moto_provider("s3-stream", |_| {}).await;
    let (endpoint, bucket, creds) = blocking(|| {
        let s = cbob_test_support::s3s_fs();
        (s.endpoint(), s.fresh_bucket("s3-stream"), s.credentials())
    })
    .await;
    let s3s = build(&spec(&endpoint, &bucket, "", &creds)).await;
    const SIZE: u64 = 3 * MIB + 1;
    for p in [moto as std::sync::Arc<dyn StorageProvider>, s3s] {
        p.put(
            &k("s/ok"),
            Body::from_stream(SIZE, pattern_stream(5, SIZE)),
            &PutOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", p.describe()));
        assert_eq!(sha1_of(&*p, "s/ok").await, (pattern_sha1(5, SIZE), SIZE));
        for (declared, actual) in [(SIZE, SIZE - 1), (SIZE, SIZE + 1), (SIZE, SIZE + 64 * 1024)] {
            let body = Body::from_stream(declared, pattern_stream(6, actual));
            let e = p
                .put(&k("s/torn"), body, &PutOptions::default())
                .await
                .unwrap_err();
            assert_eq!(
                e.kind(),
                StorageErrorKind::Corrupt,
                "{}: {declared} vs {actual}: {e}",
                p.describe()
            );
            assert_eq!(
                p.head(&k("s/torn")).await.unwrap_err().kind(),
                StorageErrorKind::NotFound
            );
        }
        // The final chunk exactly completes the size and then one more byte follows: held back.
        let exact_then_more = futures::stream::iter([
            Ok(pattern_bytes(7, 0, SIZE as usize)),
            Ok(Bytes::from_static(b"!")),
        ])
        .boxed();
        let e = p
            .put(
                &k("s/torn"),
                Body::from_stream(SIZE, exact_then_more),
                &PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Corrupt, "{e}");
        assert_eq!(
            p.head(&k("s/torn")).await.unwrap_err().kind(),
            StorageErrorKind::NotFound
        );
    }
}

/// A bucket that does not exist: NotFound naming the bucket and the setting to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_a_clear_not_found() {
    let (endpoint, _) = moto_bucket("s3-exists").await;
    let p = build(&spec(
        &endpoint,
        "cbob-no-such-bucket",
        "repo",
        &cbob_test_support::moto().credentials(),
    ))
    .await;
    let e = p.check(CheckMode::Read).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
    assert!(
        e.message()
            .contains("bucket 'cbob-no-such-bucket' does not exist")
            && e.message().contains("CBOB_DEST_BUCKET"),
        "{e}"
    );
    let e = p
        .list(&KeyPrefix::all())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(e.message().contains("does not exist"), "{e}");
    let e = p
        .put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
    assert!(e.message().contains("create it"), "{e}");
}

/// Above the copy threshold (lowered here from 5 GiB) the copy runs as UploadPartCopy parts;
/// keys with characters that need escaping in `x-amz-copy-source` copy too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_copy_small_and_multipart() {
    let (p, bucket) = moto_provider("s3-copy", |c| {
        c.copy_multipart_threshold = 6 * MIB;
        c.copy_part_size = 5 * MIB;
    })
    .await;
    const SIZE: u64 = 13 * MIB + 7;
    p.put(
        &k("src/big"),
        Body::from_stream(SIZE, pattern_stream(8, SIZE)),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    p.copy(&k("src/big"), &k("dst/big"))
        .await
        .expect("multipart copy");
    assert_eq!(sha1_of(&*p, "dst/big").await, (pattern_sha1(8, SIZE), SIZE));
    assert!(
        p.head(&k("dst/big"))
            .await
            .unwrap()
            .hashes
            .etag
            .unwrap()
            .ends_with("-3\""),
        "three copied parts"
    );
    let odd = "src/sp ace+plus=eq&amp~ü%20";
    p.put(&k(odd), Body::from_bytes("odd"), &PutOptions::default())
        .await
        .unwrap();
    p.copy(&k(odd), &k("dst/odd copy"))
        .await
        .expect("copy of an odd key");
    assert_eq!(read_to_bytes(&*p, &k("dst/odd copy")).await.unwrap(), "odd");
    assert_eq!(
        p.copy(&k("src/missing"), &k("dst/x"))
            .await
            .unwrap_err()
            .kind(),
        StorageErrorKind::NotFound
    );
    assert_eq!(pending_uploads(&p, &bucket).await, 0);
}

/// Storage class (spec default, per-put override) and SSE reach the store on single and
/// multipart writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_and_encryption_are_sent() {
    let (endpoint, bucket) = moto_bucket("s3-class").await;
    let mut s = spec(
        &endpoint,
        &bucket,
        "root",
        &cbob_test_support::moto().credentials(),
    );
    s.storage_class = Some("STANDARD_IA".into());
    s.options.insert("sse".into(), "AES256".into());
    let p = with_config(&s, |_| {}).await;
    let client = p.sdk_client().await.unwrap();
    let small = Body::from_bytes("small");
    p.put(&k("small"), small, &PutOptions::default())
        .await
        .unwrap();
    const SIZE: u64 = 9 * MIB;
    p.put(
        &k("multi"),
        Body::from_stream(SIZE, pattern_stream(1, SIZE)),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let onezone = PutOptions {
        storage_class: Some("ONEZONE_IA".into()),
    };
    p.put(&k("override"), Body::from_bytes("o"), &onezone)
        .await
        .unwrap();
    for (key, class) in [
        ("small", StorageClass::StandardIa),
        ("multi", StorageClass::StandardIa),
        ("override", StorageClass::OnezoneIa),
    ] {
        let h = client
            .head_object()
            .bucket(&bucket)
            .key(format!("root/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(h.storage_class, Some(class), "{key}");
        assert_eq!(
            h.server_side_encryption,
            Some(ServerSideEncryption::Aes256),
            "{key}"
        );
    }
    let got = collect_stream(p.get(&k("small"), None).await.unwrap())
        .await
        .unwrap();
    assert_eq!(got, "small");
}

/// Configuration errors are caught before any request, and nothing prints a secret.
#[tokio::test]
async fn bad_specs_and_descriptions() {
    let creds = cbob_test_support::S3Credentials {
        access_key_id: "AKIAEXAMPLEKEYID0001".into(),
        secret_access_key: "super-secret-value-1234".into(),
        session_token: Some("session-token-value-5678".into()),
        region: "us-east-1".into(),
    };
    let mut s = spec("http://127.0.0.1:1", "bkt", "p/q/", &creds);
    let p = build(&s).await;
    assert_eq!(p.describe(), "s3://bkt/p/q at http://127.0.0.1:1");
    let dbg = format!("{p:?}");
    assert!(
        !dbg.contains("super-secret") && !dbg.contains("session-token-value"),
        "{dbg}"
    );
    // Nothing listens on port 1: transient, and still no secret in the message.
    let e = p.head(&k("x")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(!format!("{e:?}").contains("super-secret"), "{e:?}");
    s.bucket = None;
    let mut registry = cbob_core::storage::ProviderRegistry::new();
    cbob_provider_s3::register(&mut registry);
    assert_eq!(
        registry.build(&s).await.unwrap_err().kind(),
        StorageErrorKind::Config
    );
}

/// Keys of every multipart upload in progress in the bucket, sorted.
async fn uploads_in_bucket(p: &S3Provider, bucket: &str) -> Vec<String> {
    let out = p
        .sdk_client()
        .await
        .unwrap()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("ListMultipartUploads");
    let mut keys: Vec<String> = out
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// A killed run cannot abort its multipart uploads. Before its first multipart write to a
/// destination, a process aborts those under the destination's repository directories older
/// than `stale_upload_age`, and nothing else: not keys outside `archive/` and `backup/`, not
/// other prefixes of the bucket, and only once per destination, so never its own uploads.
/// moto reports every upload as begun on 2010-11-10, so the age rule itself is unit-tested
/// (`stale_uploads.rs`); here every leftover is old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_left_by_a_killed_run_are_aborted_before_the_first_multipart_write() {
    let (endpoint, bucket) = moto_bucket("s3-stale").await;
    let creds = cbob_test_support::moto().credentials();
    let provider = |age: Option<Duration>| {
        let s = spec(&endpoint, &bucket, "root", &creds);
        async move { with_config(&s, |c| c.stale_upload_age = age).await }
    };
    let switched_off = provider(None).await;
    let client = switched_off.sdk_client().await.unwrap();
    let leave = |key: &'static str| {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .expect("CreateMultipartUpload");
        }
    };
    let leftovers = [
        "other/backup/db/20261124-000000F/pg_data/base/1/1",
        "root/archive/db/15-1/0000000100000000/000000010000000000000007-0123456789abcdef0123456789abcdef01234567.lz4",
        "root/backup/db/20261124-000000F/pg_data/base/1/1",
        "root/notes/upload-of-another-tool",
    ];
    for key in leftovers {
        leave(key).await;
    }
    const SIZE: u64 = 20 * MIB;
    let put = |p: std::sync::Arc<S3Provider>, key: &'static str| async move {
        p.put(
            &k(key),
            Body::from_stream(SIZE, pattern_stream(21, SIZE)),
            &PutOptions::default(),
        )
        .await
        .expect("multipart put");
        assert_eq!(sha1_of(&*p, key).await, (pattern_sha1(21, SIZE), SIZE));
    };

    // Switched off: all kept.
    put(switched_off.clone(), "backup/db/big-1").await;
    assert_eq!(uploads_in_bucket(&switched_off, &bucket).await, leftovers);

    // The two under this prefix's repository directories are aborted; the write goes ahead.
    put(
        provider(Some(Duration::from_secs(3600))).await,
        "backup/db/big-2",
    )
    .await;
    assert_eq!(
        uploads_in_bucket(&switched_off, &bucket).await,
        [leftovers[0], leftovers[3]],
        "only stale uploads under root/archive/ and root/backup/ go"
    );

    // Once per process and destination, whatever the provider instance: an upload begun after
    // the sweep (here a stand-in for one of this process's own) is never a candidate.
    leave(leftovers[2]).await;
    put(provider(Some(Duration::ZERO)).await, "backup/db/big-3").await;
    assert_eq!(
        uploads_in_bucket(&switched_off, &bucket).await,
        [leftovers[0], leftovers[2], leftovers[3]]
    );
}
