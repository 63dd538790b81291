//! Server-side copy between two buckets seen through one endpoint with one identity
//! (`copy_from`, objects.rewrite), against fake-gcs-server: the bytes and hashes arrive intact,
//! the destination's storage class is asked for (fake-gcs-server ignores it in rewrite metadata,
//! so it is checked on the wire), and providers with another endpoint or another service account
//! do not qualify.

mod common;

use cbob_core::storage::{Body, PutOptions, StorageErrorKind, StorageProvider, read_to_bytes};
use common::proxy::Proxy;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_across_buckets_with_the_destinations_class() {
    let (endpoint, src_bucket) = fresh_bucket("copy-src").await;
    let (_, dst_bucket) = fresh_bucket("copy-dst").await;
    let proxy = Proxy::start(&endpoint).await;
    proxy.record_requests();
    let src = with_config(&spec(&proxy.endpoint(), &src_bucket, "main"), |_| {}).await;
    let mut dst_spec = spec(&proxy.endpoint(), &dst_bucket, "replica");
    dst_spec.storage_class = Some("nearline".into());
    let dst = with_config(&dst_spec, |_| {}).await;

    let source = src.copy_source().unwrap();
    assert_eq!(
        (
            source.service,
            source.bucket.as_str(),
            source.prefix.as_str()
        ),
        ("gcs", src_bucket.as_str(), "main/")
    );
    assert!(dst.can_copy_from(&source));

    // Small: the proxy records the first MiB of requests, and the rewrite must be in it.
    let data: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 253) as u8).collect();
    let written = src
        .put(
            &k("backup/s/f"),
            Body::from_bytes(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let meta = dst
        .copy_from(
            &source,
            &k("backup/s/f"),
            data.len() as u64,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.hashes.md5, written.hashes.md5, "md5 of the copy");
    assert_eq!(
        meta.hashes.crc32c, written.hashes.crc32c,
        "crc32c of the copy"
    );
    assert_eq!(
        read_to_bytes(dst.as_ref(), &k("backup/s/f")).await.unwrap(),
        data
    );

    let sent = proxy.recorded();
    let rewrite = sent
        .find(&format!("/b/{src_bucket}/o/main%2Fbackup%2Fs%2Ff/rewriteTo/b/{dst_bucket}/o/replica%2Fbackup%2Fs%2Ff"))
        .map(|at| sent[at..].chars().take(2048).collect::<String>())
        .unwrap_or_else(|| panic!("no rewrite from the source bucket was sent"));
    assert!(
        rewrite.contains(r#""storageClass":"NEARLINE""#),
        "rewrite metadata: {rewrite}"
    );

    let e = dst
        .copy_from(&source, &k("backup/s/missing"), 1, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_endpoint_or_identity_does_not_qualify() {
    let (endpoint, bucket) = fresh_bucket("copy-ident").await;
    let direct = with_config(&spec(&endpoint, &bucket, "a"), |_| {}).await;
    let proxy = Proxy::start(&endpoint).await;
    let via_proxy = with_config(&spec(&proxy.endpoint(), &bucket, "b"), |_| {}).await;
    assert!(!via_proxy.can_copy_from(&direct.copy_source().unwrap()));
    let e = via_proxy
        .copy_from(
            &direct.copy_source().unwrap(),
            &k("x"),
            1,
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unsupported, "{e}");
    let same = with_config(&spec(&endpoint, &bucket, "c"), |_| {}).await;
    assert!(same.can_copy_from(&direct.copy_source().unwrap()));
}
