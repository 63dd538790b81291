//! Server-side copy between two containers of one storage account (`copy_from`, Copy Blob),
//! against Azurite: the bytes and Content-MD5 arrive intact, the destination's access tier
//! applies, and only Shared Key providers of the same account and endpoint qualify (a SAS is
//! scoped to its own container).

mod common;

use cbob_core::storage::{
    Body, ObjectKey, PutOptions, StorageErrorKind, StorageProvider, read_to_bytes,
};
use cbob_provider_azure::{AzureConfig, AzureProvider};
use common::*;
use md5::{Digest, Md5};

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

fn provider(spec: &cbob_core::storage::ProviderSpec) -> AzureProvider {
    AzureProvider::new(AzureConfig::from_spec(spec).unwrap()).unwrap()
}

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
async fn copies_between_containers_with_the_destinations_tier() {
    let (endpoint, src_container) = fresh_container("copy-src").await;
    let (_, dst_container) = fresh_container("copy-dst").await;
    let src = provider(&shared_key_spec(&endpoint, &src_container, "main"));
    let mut dst_spec = shared_key_spec(&endpoint, &dst_container, "replica/x");
    dst_spec.storage_class = Some("cool".into());
    let dst = provider(&dst_spec);

    let source = src.copy_source().expect("shared key: a copy source");
    assert_eq!(
        (
            source.service,
            source.bucket.as_str(),
            source.prefix.as_str()
        ),
        ("azure", src_container.as_str(), "main/")
    );
    assert!(
        !source
            .account
            .contains(cbob_test_support::azurite::ACCOUNT_KEY)
    );
    assert!(dst.can_copy_from(&source));

    // Larger than the single-put limit, so the source is a block blob of several blocks.
    let data: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let md5: [u8; 16] = Md5::digest(&data).into();
    src.put(
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
    assert_eq!(read_to_bytes(&dst, &k("backup/s/f")).await.unwrap(), data);
    assert_eq!(
        dst.head(&k("backup/s/f")).await.unwrap().hashes.md5,
        Some(md5),
        "Content-MD5 is copied"
    );
    assert_eq!(tier_of(&dst, "backup/s/f").await.as_deref(), Some("Cool"));
    // A PutOptions class wins over the provider's, as for a put.
    let hot = PutOptions {
        storage_class: Some("hot".into()),
    };
    dst.copy_from(&source, &k("backup/s/f"), data.len() as u64, &hot)
        .await
        .unwrap();
    assert_eq!(tier_of(&dst, "backup/s/f").await.as_deref(), Some("Hot"));

    let e = dst
        .copy_from(&source, &k("backup/s/missing"), 1, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_or_another_endpoint_does_not_qualify() {
    let (endpoint, container) = fresh_container("copy-ident").await;
    let keyed = provider(&shared_key_spec(&endpoint, &container, "a"));
    let source = keyed.copy_source().unwrap();

    let sas = container_sas(&container).await;
    let scoped = provider(&sas_spec(&endpoint, &container, "b", &sas));
    assert!(
        scoped.copy_source().is_none(),
        "a SAS cannot authorize another container's blob"
    );
    assert!(!scoped.can_copy_from(&source));
    let e = scoped
        .copy_from(&source, &k("x"), 1, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Unsupported, "{e}");

    // The same account behind another address (a proxy, another emulator) is not provably the
    // same service.
    let other = provider(&shared_key_spec(
        &endpoint.replace("127.0.0.1", "localhost"),
        &container,
        "c",
    ));
    assert!(!other.can_copy_from(&source));
}
