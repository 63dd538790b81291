//! Server-side copy between two buckets of one S3 account (`copy_from`), against moto: the
//! bytes arrive intact through CopyObject and through UploadPartCopy, the destination's storage
//! class and encryption apply, and providers that do not share an endpoint and access key never
//! claim they can copy from each other.

mod common;

use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use cbob_core::storage::{
    Body, ObjectKey, PutOptions, StorageErrorKind, StorageProvider, read_to_bytes,
};
use cbob_core::testkit::{pattern_bytes, pattern_stream};
use cbob_test_support::S3Credentials;
use common::{blocking, moto_bucket, spec, with_config};

const MIB: u64 = 1024 * 1024;

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_buckets_with_the_destinations_class_and_encryption() {
    let (endpoint, src_bucket) = moto_bucket("copy-src").await;
    let (_, dst_bucket) = moto_bucket("copy-dst").await;
    let creds = cbob_test_support::moto().credentials();
    let src = with_config(&spec(&endpoint, &src_bucket, "main/repo", &creds), |_| {}).await;
    let mut dst_spec = spec(&endpoint, &dst_bucket, "replica", &creds);
    dst_spec.storage_class = Some("STANDARD_IA".into());
    dst_spec.options.insert("sse".into(), "AES256".into());
    // A low threshold sends the large object through UploadPartCopy (3 parts of 5 MiB).
    let dst = with_config(&dst_spec, |c| {
        c.copy_multipart_threshold = 6 * MIB;
        c.copy_part_size = 5 * MIB;
    })
    .await;

    let source = src.copy_source().expect("static keys: a copy source");
    assert_eq!(
        (
            source.service,
            source.bucket.as_str(),
            source.prefix.as_str()
        ),
        ("s3", src_bucket.as_str(), "main/repo/")
    );
    assert!(
        !source.account.contains(&creds.access_key_id)
            && !source.account.contains(&creds.secret_access_key),
        "the copy source carries a credential: {source:?}"
    );
    assert!(dst.can_copy_from(&source));

    let small = pattern_bytes(1, 0, 300 * 1024);
    let big_size = 13 * MIB;
    src.put(
        &k("backup/s/small"),
        Body::from_bytes(small.clone()),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    src.put(
        &k("backup/s/big"),
        Body::from_stream(big_size, pattern_stream(2, big_size)),
        &PutOptions::default(),
    )
    .await
    .unwrap();

    let meta = dst
        .copy_from(
            &source,
            &k("backup/s/small"),
            small.len() as u64,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, small.len() as u64);
    let meta = dst
        .copy_from(
            &source,
            &k("backup/s/big"),
            big_size,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, big_size, "the size reported is the store's");
    assert_eq!(
        read_to_bytes(dst.as_ref(), &k("backup/s/small"))
            .await
            .unwrap(),
        small
    );
    assert_eq!(
        read_to_bytes(dst.as_ref(), &k("backup/s/big"))
            .await
            .unwrap(),
        pattern_bytes(2, 0, big_size as usize)
    );
    // A PutOptions class wins over the provider's, as for a put.
    let onezone = PutOptions {
        storage_class: Some("ONEZONE_IA".into()),
    };
    dst.copy_from(&source, &k("backup/s/small"), small.len() as u64, &onezone)
        .await
        .unwrap();

    let client = dst.sdk_client().await.unwrap();
    for (key, class) in [
        ("small", StorageClass::OnezoneIa),
        ("big", StorageClass::StandardIa),
    ] {
        let head = client
            .head_object()
            .bucket(&dst_bucket)
            .key(format!("replica/backup/s/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.storage_class(), Some(&class), "{key}");
        assert_eq!(
            head.server_side_encryption(),
            Some(&ServerSideEncryption::Aes256),
            "{key}"
        );
    }

    // A missing source is NotFound, not a silent empty object.
    let e = dst
        .copy_from(&source, &k("backup/s/missing"), 1, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_keys_or_endpoints_do_not_qualify() {
    let (endpoint, bucket) = moto_bucket("copy-ident").await;
    let creds = cbob_test_support::moto().credentials();
    let src = with_config(&spec(&endpoint, &bucket, "a", &creds), |_| {}).await;
    let source = src.copy_source().unwrap();

    // moto accepts any key pair: only the identity differs.
    let other_key = S3Credentials {
        access_key_id: "AKIAOTHERKEY0000000".into(),
        ..creds.clone()
    };
    let other = with_config(&spec(&endpoint, &bucket, "b", &other_key), |_| {}).await;
    assert!(!other.can_copy_from(&source));
    let e = other
        .copy_from(&source, &k("x"), 1, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unsupported, "{e}");

    // The same keys against another endpoint (s3s-fs) are another account.
    let (s3s_endpoint, s3s_bucket, s3s_creds) = blocking(|| {
        let s = cbob_test_support::s3s_fs();
        (s.endpoint(), s.fresh_bucket("copy-ident"), s.credentials())
    })
    .await;
    let elsewhere = with_config(&spec(&s3s_endpoint, &s3s_bucket, "", &s3s_creds), |_| {}).await;
    assert!(!elsewhere.can_copy_from(&source));
    assert!(!src.can_copy_from(&elsewhere.copy_source().unwrap()));

    // Same endpoint and key, another bucket and prefix: qualifies.
    let same = with_config(&spec(&endpoint, &bucket, "c/d", &creds), |_| {}).await;
    assert!(same.can_copy_from(&source));
}
