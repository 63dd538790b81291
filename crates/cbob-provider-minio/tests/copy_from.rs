//! The MinIO provider is the S3 provider: it offers and accepts server-side copies between
//! buckets of one server and one user, against s3s-fs (CopyObject across buckets works there),
//! also with an `s3`-kind provider of the same endpoint and keys.

mod common;

use cbob_core::storage::{Body, ObjectKey, PutOptions, StorageProvider, read_to_bytes};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_buckets_of_one_server_and_user() {
    let (endpoint, src_bucket) = fresh_bucket("minio-copy-src").await;
    let (_, dst_bucket) = fresh_bucket("minio-copy-dst").await;
    let src = build(&spec(&endpoint, &src_bucket, "main")).await;
    let dst = build(&spec(&endpoint, &dst_bucket, "replica")).await;
    let source = src
        .copy_source()
        .expect("a MinIO user's keys: a copy source");
    assert_eq!(source.service, "s3");
    assert!(!source.account.contains(cbob_test_support::s3s::ACCESS_KEY));
    assert!(dst.can_copy_from(&source));

    let key = ObjectKey::new("backup/s/f").unwrap();
    let data = b"pgBackRest file".repeat(1000);
    src.put(&key, Body::from_bytes(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    let meta = dst
        .copy_from(&source, &key, data.len() as u64, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(read_to_bytes(dst.as_ref(), &key).await.unwrap(), data);

    // The same server and user configured as plain S3 is the same account.
    let mut as_s3 = spec(&endpoint, &dst_bucket, "other");
    as_s3.kind = "s3".into();
    as_s3.region = Some("us-east-1".into());
    let plain =
        cbob_provider_s3::S3Provider::new(cbob_provider_s3::S3Config::from_spec(&as_s3).unwrap())
            .await
            .unwrap();
    assert!(plain.can_copy_from(&source));
    plain
        .copy_from(&source, &key, data.len() as u64, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(read_to_bytes(&plain, &key).await.unwrap(), data);
}
