//! GCS-specific behaviour against fake-gcs-server: hashes reported, resumable uploads in
//! chunks, an interrupted chunk resent (through a proxy that really cuts the connection), a lost
//! final answer reconciled, failed and dropped uploads leaving nothing behind, storage class,
//! a missing bucket, and the listing's handling of names outside the key rules.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cbob_core::storage::{
    Body, ByteStream, CheckMode, KeyPrefix, ObjectMeta, PutOptions, StorageError, StorageErrorKind,
    StorageProvider, collect_stream,
};
use cbob_core::testkit::{pattern_bytes, pattern_sha1, pattern_stream};
use common::proxy::Proxy;
use common::{MIB, build, fresh_bucket, k, spec, with_config};
use futures::{StreamExt, TryStreamExt};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use md5::{Digest, Md5};
use sha1::Sha1;

async fn sha1_of(p: &dyn StorageProvider, key: &str) -> ([u8; 20], u64) {
    let mut s = p.get(&k(key), None).await.expect("get");
    let mut h = Sha1::new();
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        let c = c.expect("read");
        n += c.len() as u64;
        h.update(&c);
    }
    (h.finalize().into(), n)
}

fn md5_crc(data: &[u8]) -> ([u8; 16], u32) {
    (Md5::digest(data).into(), crc32c::crc32c(data))
}

fn assert_hashes(meta: &ObjectMeta, data: &[u8], what: &str) {
    let (md5, crc) = md5_crc(data);
    assert_eq!(meta.hashes.crc32c, Some(crc), "{what}: crc32c");
    assert_eq!(meta.hashes.md5, Some(md5), "{what}: md5");
    assert!(meta.hashes.etag.is_some(), "{what}: etag");
    assert_eq!(meta.size, data.len() as u64, "{what}: size");
}

/// put, head and list all report the CRC32C and MD5 of the bytes, for a single-request object
/// and for one written by a resumable upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc32c_and_md5_are_reported() {
    let (endpoint, bucket) = fresh_bucket("gcs-hashes").await;
    let p = with_config(&spec(&endpoint, &bucket, "h"), |c| {
        c.single_upload_limit = 256 * 1024;
        c.chunk_size = 256 * 1024;
    })
    .await;
    let small = Bytes::from_static(b"pgBackRest backup.info\n");
    let large = pattern_bytes(11, 0, (MIB + 4321) as usize);
    for (key, data) in [("small", &small), ("large", &large)] {
        let body = Body::from_stream(
            data.len() as u64,
            futures::stream::iter([Ok(data.clone())]).boxed(),
        );
        let put = p
            .put(&k(key), body, &PutOptions::default())
            .await
            .expect("put");
        assert_hashes(&put, data, &format!("put {key}"));
        assert_hashes(
            &p.head(&k(key)).await.expect("head"),
            data,
            &format!("head {key}"),
        );
    }
    let listed: Vec<ObjectMeta> = p.list(&KeyPrefix::all()).try_collect().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_hashes(&listed[0], &large, "list large");
    assert_hashes(&listed[1], &small, "list small");
    let caps = p.capabilities();
    assert!(caps.crc32c && caps.md5 && caps.server_side_copy);
}

/// A body larger than the single-request limit goes through a resumable upload of many
/// 256 KiB chunks, streamed or in memory, and arrives byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_uploads_in_chunks_are_exact() {
    let (endpoint, bucket) = fresh_bucket("gcs-chunks").await;
    let p = with_config(&spec(&endpoint, &bucket, ""), |c| {
        c.single_upload_limit = 256 * 1024;
        c.chunk_size = 256 * 1024;
    })
    .await;
    let size = 3 * MIB + 17;
    p.put(
        &k("streamed"),
        Body::from_stream(size, pattern_stream(4, size)),
        &PutOptions::default(),
    )
    .await
    .expect("streamed resumable put");
    assert_eq!(
        sha1_of(&*p, "streamed").await,
        (pattern_sha1(4, size), size)
    );
    // Exactly one chunk's worth plus one byte: a final chunk of one byte.
    let size = 256 * 1024 + 1;
    let data = pattern_bytes(5, 0, size as usize);
    p.put(
        &k("in-memory"),
        Body::from_bytes(data.clone()),
        &PutOptions::default(),
    )
    .await
    .expect("in-memory resumable put");
    assert_eq!(
        collect_stream(p.get(&k("in-memory"), None).await.unwrap())
            .await
            .unwrap(),
        data
    );
}

/// The proxy cuts the connection in the middle of the third chunk; the provider resends that
/// chunk on a new connection and the upload finishes byte-exact, without starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_chunk_is_resent_and_the_upload_resumes() {
    let (endpoint, bucket) = fresh_bucket("gcs-resume").await;
    let proxy = Proxy::start(&endpoint).await;
    let chunk = MIB;
    let p = with_config(&spec(&proxy.endpoint(), &bucket, "r"), |c| {
        c.single_upload_limit = chunk;
        c.chunk_size = chunk;
        c.upload_retry.initial_delay = Duration::from_millis(20);
    })
    .await;
    let size = 10 * MIB + 5;
    proxy.cut_upload_after(2 * chunk + chunk / 2);
    let started = std::time::Instant::now();
    p.put(
        &k("wal/000000010000000000000007"),
        Body::from_stream(size, pattern_stream(21, size)),
        &PutOptions::default(),
    )
    .await
    .expect("the upload must survive a cut connection");
    assert_eq!(proxy.cuts(), 1, "the proxy must have cut one connection");
    assert_eq!(
        sha1_of(&*p, "wal/000000010000000000000007").await,
        (pattern_sha1(21, size), size),
        "a resumed upload must be byte-exact"
    );
    // Resumed, not restarted: only the interrupted part of one chunk went twice.
    let sent = proxy.client_bytes();
    assert!(
        sent < size + 2 * chunk,
        "{sent} request bytes for a {size}-byte object: the upload started over"
    );
    eprintln!(
        "interrupted 10 MiB upload: {:?}, {sent} request bytes",
        started.elapsed()
    );
}

/// The answer to the final chunk is lost after the object was created: the provider resends,
/// finds the session finished, and proves the object is its own by size and CRC32C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_final_answer_is_reconciled_with_the_object() {
    let (endpoint, bucket) = fresh_bucket("gcs-final").await;
    let proxy = Proxy::start(&endpoint).await;
    let p = with_config(&spec(&proxy.endpoint(), &bucket, ""), |c| {
        c.single_upload_limit = MIB;
        c.chunk_size = MIB;
        c.upload_retry.initial_delay = Duration::from_millis(20);
    })
    .await;
    // Three full chunks and a 200 KiB final one: only the final answer comes back after
    // 3 MiB + 100 KiB of requests (headers are a few hundred bytes each).
    let size = 3 * MIB + 200 * 1024;
    proxy.drop_response_after(3 * MIB + 100 * 1024);
    let meta = p
        .put(
            &k("lost-answer"),
            Body::from_stream(size, pattern_stream(8, size)),
            &PutOptions::default(),
        )
        .await
        .expect("the put must recognise its own finished object");
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(meta.size, size);
    assert_eq!(
        sha1_of(&*p, "lost-answer").await,
        (pattern_sha1(8, size), size)
    );
}

/// The answer to a middle chunk is lost after the server kept it. GCS ignores the resent bytes
/// at offsets it already has; fake-gcs-server appends them again, storing a damaged object.
/// The size and CRC32C check at the end catches that: the damaged object is deleted and the
/// put fails with a transient error, so the engine retries the transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_result_is_deleted_and_reported() {
    let (endpoint, bucket) = fresh_bucket("gcs-damaged").await;
    let proxy = Proxy::start(&endpoint).await;
    let p = with_config(&spec(&proxy.endpoint(), &bucket, ""), |c| {
        c.single_upload_limit = MIB;
        c.chunk_size = MIB;
        c.upload_retry.initial_delay = Duration::from_millis(20);
    })
    .await;
    let size = 3 * MIB + 200 * 1024;
    proxy.drop_response_after(2 * MIB + 100 * 1024); // the answer to the third chunk
    let e = p
        .put(
            &k("damaged"),
            Body::from_stream(size, pattern_stream(9, size)),
            &PutOptions::default(),
        )
        .await
        .expect_err("fake-gcs-server stored the resent chunk twice; the put must notice");
    assert_eq!(e.kind(), StorageErrorKind::Corrupt, "{e}");
    assert!(e.is_transient() && e.message().contains("deleted"), "{e}");
    assert_eq!(
        p.head(&k("damaged")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound
    );
}

/// A stream that yields `good` bytes of the pattern, then fails (or hangs) like a source
/// connection that broke.
fn broken_after(seed: u64, good: u64, hang: bool) -> ByteStream {
    let head = pattern_stream(seed, good);
    let tail: ByteStream = if hang {
        futures::stream::pending().boxed()
    } else {
        futures::stream::once(async {
            Err(StorageError::new(
                StorageErrorKind::Unavailable,
                "source connection reset",
            ))
        })
        .boxed()
    };
    head.chain(tail).boxed()
}

/// A body that fails mid-way, or a put that is dropped mid-way, cancels the session: nothing
/// becomes visible, the object already under the key is untouched, and the next put of the
/// same key (the engine's retry) succeeds from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_or_dropped_uploads_leave_nothing_and_a_restart_succeeds() {
    let (endpoint, bucket) = fresh_bucket("gcs-restart").await;
    let p = with_config(&spec(&endpoint, &bucket, ""), |c| {
        c.single_upload_limit = 256 * 1024;
        c.chunk_size = 512 * 1024;
    })
    .await;
    let size = 4 * MIB;
    let e = p
        .put(
            &k("new"),
            Body::from_stream(size, broken_after(1, 2 * MIB + 3, false)),
            &PutOptions::default(),
        )
        .await
        .expect_err("a broken body must fail the put");
    assert_eq!(e.kind(), StorageErrorKind::Unavailable, "{e}");
    assert_eq!(
        p.head(&k("new")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound
    );

    p.put(
        &k("old"),
        Body::from_bytes("the good copy"),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_secs(2),
        p.put(
            &k("old"),
            Body::from_stream(size, broken_after(2, MIB + 1, true)),
            &PutOptions::default(),
        ),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the hanging put should have been dropped by the timeout"
    );
    // A short body is never finalised either.
    let e = p
        .put(
            &k("old"),
            Body::from_stream(size, pattern_stream(3, size - 1)),
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Corrupt, "{e}");
    assert_eq!(
        collect_stream(p.get(&k("old"), None).await.unwrap())
            .await
            .unwrap(),
        "the good copy"
    );

    // The retry of the whole transfer.
    p.put(
        &k("new"),
        Body::from_stream(size, pattern_stream(1, size)),
        &PutOptions::default(),
    )
    .await
    .expect("restarted upload");
    assert_eq!(sha1_of(&*p, "new").await, (pattern_sha1(1, size), size));
    let keys: Vec<String> = p
        .list(&KeyPrefix::all())
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys, ["new", "old"]);
}

/// A bucket that does not exist: NotFound naming the bucket and the setting to fix, from
/// check, list, small and resumable puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_a_clear_not_found() {
    let (endpoint, _) = fresh_bucket("gcs-exists").await;
    let p = build(&spec(&endpoint, "cbob-no-such-bucket", "repo")).await;
    let check = |e: StorageError, what: &str| {
        assert_eq!(e.kind(), StorageErrorKind::NotFound, "{what}: {e}");
        assert!(!e.is_transient(), "{what}");
        assert!(
            e.message()
                .contains("bucket 'cbob-no-such-bucket' does not exist")
                && e.message().contains("CBOB_DEST_BUCKET")
                && e.message().contains("gcs://cbob-no-such-bucket/repo"),
            "{what}: {e}"
        );
    };
    check(p.check(CheckMode::Read).await.unwrap_err(), "check");
    check(
        p.list(&KeyPrefix::all())
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err(),
        "list",
    );
    check(
        p.put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
            .await
            .unwrap_err(),
        "small put",
    );
    let size = 9 * MIB;
    check(
        p.put(
            &k("y"),
            Body::from_stream(size, pattern_stream(1, size)),
            &PutOptions::default(),
        )
        .await
        .unwrap_err(),
        "resumable put",
    );
}

async fn storage_class_of(p: &cbob_provider_gcs::GcsProvider, name: &str) -> Option<String> {
    let request = GetObjectRequest {
        bucket: p.config().bucket.clone(),
        object: name.into(),
        ..GetObjectRequest::default()
    };
    p.client()
        .get_object(&request)
        .await
        .expect("get object")
        .storage_class
}

/// The text after the first occurrence of `marker` in the recorded requests.
fn request_after<'a>(recorded: &'a str, marker: &str) -> &'a str {
    let at = recorded
        .find(marker)
        .unwrap_or_else(|| panic!("no request with {marker:?} was sent"));
    &recorded[at..(at + 2048).min(recorded.len())]
}

/// The configured storage class is sent with writes (single requests, resumable sessions) and
/// copies, `PutOptions` overrides it, and a bad one is a configuration error before anything is
/// sent. fake-gcs-server applies the class of single-request uploads only (it ignores it in
/// resumable-session and rewrite metadata), so those two are checked on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_is_sent() {
    let (endpoint, bucket) = fresh_bucket("gcs-class").await;
    let proxy = Proxy::start(&endpoint).await;
    proxy.record_requests();
    let mut s = spec(&proxy.endpoint(), &bucket, "c");
    s.storage_class = Some("nearline".into());
    let p = with_config(&s, |c| {
        c.single_upload_limit = 256 * 1024;
        c.chunk_size = 256 * 1024;
    })
    .await;
    p.put(&k("a"), Body::from_bytes("a"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        storage_class_of(&p, "c/a").await.as_deref(),
        Some("NEARLINE")
    );
    let coldline = PutOptions {
        storage_class: Some("COLDLINE".into()),
    };
    p.put(&k("b"), Body::from_bytes("b"), &coldline)
        .await
        .unwrap();
    assert_eq!(
        storage_class_of(&p, "c/b").await.as_deref(),
        Some("COLDLINE")
    );
    let size = 600 * 1024;
    p.put(
        &k("big"),
        Body::from_stream(size, pattern_stream(6, size)),
        &coldline,
    )
    .await
    .unwrap();
    let bad = PutOptions {
        storage_class: Some("GLACIER".into()),
    };
    let e = p
        .put(&k("c"), Body::from_bytes("c"), &bad)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Config, "{e}");
    assert_eq!(
        p.head(&k("c")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound
    );
    // Server-side copy keeps the object's bytes and asks for the configured class.
    p.copy(&k("b"), &k("b-copy")).await.unwrap();
    assert_eq!(
        collect_stream(p.get(&k("b-copy"), None).await.unwrap())
            .await
            .unwrap(),
        "b"
    );
    let e = p.copy(&k("missing"), &k("x")).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");

    let sent = proxy.recorded();
    let session = request_after(&sent, "uploadType=resumable");
    assert!(
        session.contains(r#""storageClass":"COLDLINE""#),
        "resumable session metadata: {session}"
    );
    let rewrite = request_after(&sent, "/rewriteTo/");
    assert!(
        rewrite.contains(r#""storageClass":"NEARLINE""#),
        "rewrite metadata: {rewrite}"
    );
}

/// Objects the provider did not write: console "folder" placeholders and names under a
/// sibling prefix (`root2/` next to `root/`) are never listed; names that break the key rules
/// are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_yields_only_keys_under_the_prefix() {
    let (endpoint, bucket) = fresh_bucket("gcs-names").await;
    let p = with_config(&spec(&endpoint, &bucket, "root"), |_| {}).await;
    for name in [
        "root/dir/",
        "root2/x",
        "root/a//b",
        "root/ok",
        "root/dir/file",
    ] {
        let meta = Object {
            name: name.into(),
            ..Object::default()
        };
        p.client()
            .upload_object(
                &UploadObjectRequest {
                    bucket: bucket.clone(),
                    ..UploadObjectRequest::default()
                },
                Bytes::from_static(b"x"),
                &UploadType::Multipart(Box::new(meta)),
            )
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
    }
    let keys: Vec<String> = p
        .list(&KeyPrefix::all())
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys, ["dir/file", "ok"]);
}

/// A provider built with an endpoint and no credentials is anonymous, and says so without
/// printing anything secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_and_debug_output() {
    let (endpoint, bucket) = fresh_bucket("gcs-describe").await;
    let p = with_config(&spec(&endpoint, &bucket, "/a/b/"), |_| {}).await;
    assert_eq!(p.describe(), format!("gcs://{bucket}/a/b at {endpoint}"));
    assert!(format!("{p:?}").contains("Anonymous"));
    let arc: Arc<dyn StorageProvider> = p.clone();
    arc.check(CheckMode::ReadWrite).await.expect("check");
}
