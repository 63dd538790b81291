//! Azure-specific behaviour against Azurite: Content-MD5 on small blobs, access tiers from the
//! storage class, and writes through the registry with an explicit tier per call.

mod common;

use cbob_core::storage::{
    Body, KeyPrefix, ObjectKey, PutOptions, StorageErrorKind, StorageProvider,
};
use cbob_provider_azure::{AccessTier, AzureConfig, AzureProvider};
use common::*;
use futures::TryStreamExt;
use md5::{Digest, Md5};

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// The access tier Azurite recorded for a blob.
async fn tier_of(p: &AzureProvider, key: &str) -> Option<String> {
    use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
    let c = p.container_client().await.unwrap();
    c.blob_client(&p.blob_name(&k(key)))
        .get_properties(None)
        .await
        .expect("properties")
        .access_tier()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_carry_a_checked_content_md5() {
    let (endpoint, container) = fresh_container("az-md5").await;
    let p = build(&shared_key_spec(&endpoint, &container, "repo")).await;
    let data = b"archive.info contents\n".to_vec();
    let want: [u8; 16] = Md5::digest(&data).into();
    let meta = p
        .put(
            &k("archive.info"),
            Body::from_bytes(data),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.hashes.md5, Some(want));
    assert_eq!(
        p.head(&k("archive.info")).await.unwrap().hashes.md5,
        Some(want)
    );
    let listed: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.unwrap();
    assert_eq!(
        listed[0].hashes.md5,
        Some(want),
        "listings report the MD5 too"
    );
    assert!(listed[0].modified.is_some() && listed[0].hashes.etag.is_some());
    assert!(p.capabilities().md5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_class_sets_the_access_tier() {
    let (endpoint, container) = fresh_container("az-tier").await;
    let mut spec = shared_key_spec(&endpoint, &container, "");
    spec.storage_class = Some("cool".into());
    let config = AzureConfig::from_spec(&spec).unwrap();
    assert_eq!(config.access_tier, Some(AccessTier::Cool));
    let p = AzureProvider::new(config).unwrap();
    p.put(&k("small"), Body::from_bytes("s"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(tier_of(&p, "small").await.as_deref(), Some("Cool"));
    let size = 5 * 1024 * 1024;
    p.put(
        &k("blocks"),
        Body::from_stream(size, cbob_core::testkit::pattern_stream(2, size)),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        tier_of(&p, "blocks").await.as_deref(),
        Some("Cool"),
        "Put Block List sets it too"
    );
    // A tier named by the call wins over the provider's.
    let hot = PutOptions {
        storage_class: Some("Hot".into()),
    };
    p.put(&k("hot"), Body::from_bytes("h"), &hot).await.unwrap();
    assert_eq!(tier_of(&p, "hot").await.as_deref(), Some("Hot"));
    // A storage class that is no Azure tier is refused before anything is written.
    let bad = PutOptions {
        storage_class: Some("GLACIER".into()),
    };
    let e = p
        .put(&k("bad"), Body::from_bytes("b"), &bad)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Config, "{e}");
    assert!(e.message().contains("Hot, Cool, Cold or Archive"), "{e}");
    assert_eq!(
        p.head(&k("bad")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound
    );
}
