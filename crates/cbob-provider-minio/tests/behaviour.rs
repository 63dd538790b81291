//! MinIO-specific behaviour through the registry against s3s-fs: a missing endpoint fails
//! before any request, descriptions and errors speak `minio://`, wrong keys are rejected
//! without echoing the secret, and a missing bucket names the setting to fix.

mod common;

use cbob_core::Secret;
use cbob_core::storage::{Body, CheckMode, KeyPrefix, ObjectKey, PutOptions, StorageErrorKind};
use common::{build, fresh_bucket, spec, try_build};
use futures::TryStreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_endpoint_is_a_configuration_error() {
    let mut s = spec("http://unused", "backups", "cbob");
    s.endpoint = None;
    let e = try_build(&s).await.expect_err("MinIO without an endpoint");
    assert_eq!(e.kind(), StorageErrorKind::Config, "{e}");
    assert!(!e.is_transient());
    assert!(
        e.message().starts_with("minio://backups/cbob")
            && e.message().contains("CBOB_DEST_ENDPOINT"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_describes_itself_as_minio_and_works_at_the_bucket_root() {
    let (endpoint, bucket) = fresh_bucket("minio-root").await;
    let p = build(&spec(&endpoint, &bucket, "")).await;
    assert_eq!(p.describe(), format!("minio://{bucket} at {endpoint}"));
    p.check(CheckMode::ReadWrite)
        .await
        .expect("read-write check");
    let key = ObjectKey::new("archive/db/archive.info").unwrap();
    let meta = p
        .put(&key, Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap();
    assert!(
        meta.hashes.md5.is_some(),
        "a single-part upload reports its MD5"
    );
    let keys: Vec<String> = p
        .list(&KeyPrefix::all())
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys, ["archive/db/archive.info"]);
    // The bucket root is the S3 bucket itself: the object is there under the plain key.
    let on_disk = cbob_test_support::s3s_fs()
        .data_dir()
        .join(&bucket)
        .join("archive/db/archive.info");
    assert!(on_disk.is_file(), "{} missing", on_disk.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_are_rejected_without_echoing_the_secret() {
    let (endpoint, bucket) = fresh_bucket("minio-auth").await;
    let mut s = spec(&endpoint, &bucket, "");
    s.secret_key = Some(Secret::new("not-the-minio-secret-key"));
    let p = build(&s).await;
    let e = p
        .check(CheckMode::Read)
        .await
        .expect_err("wrong secret key");
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert!(!e.message().contains("not-the-minio-secret-key"), "{e}");
    assert!(e.message().starts_with("minio://"), "{e}");
    assert!(!format!("{p:?}").contains("not-the-minio-secret-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_names_the_setting() {
    let (endpoint, _) = fresh_bucket("minio-exists").await;
    let p = build(&spec(&endpoint, "cbob-no-such-bucket", "repo")).await;
    let e = p.check(CheckMode::Read).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
    assert!(
        e.message()
            .contains("bucket 'cbob-no-such-bucket' does not exist")
            && e.message().contains("CBOB_DEST_BUCKET"),
        "{e}"
    );
}
