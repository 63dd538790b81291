//! A 40 MiB blob goes up as Put Block + Put Block List in 4 MiB blocks with flat memory, carries
//! the MD5 of the whole body, reads back intact (whole and across block boundaries) and copies
//! server-side. Alone in its binary so no other test's allocations blur the memory figure.

mod common;

use cbob_core::storage::{Body, ObjectKey, PutOptions, StorageProvider, collect_stream};
use cbob_core::testkit::{RssSampler, pattern_bytes, pattern_sha1, pattern_stream};
use cbob_provider_azure::{AzureConfig, AzureProvider};
use common::*;
use futures::StreamExt;
use md5::{Digest, Md5};
use sha1::Sha1;

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_40_mib_blob_goes_up_in_blocks_with_flat_memory() {
    const SIZE: u64 = 40 * 1024 * 1024 + 12_345;
    let (endpoint, container) = fresh_container("az-large").await;
    let config = AzureConfig::from_spec(&shared_key_spec(&endpoint, &container, "big")).unwrap();
    assert_eq!(config.block_size, 4 * 1024 * 1024);
    let p = AzureProvider::new(config).unwrap();

    let sampler = RssSampler::start();
    let started = std::time::Instant::now();
    let meta = p
        .put(
            &k("pg_data/base/1/16384"),
            Body::from_stream(SIZE, pattern_stream(11, SIZE)),
            &PutOptions::default(),
        )
        .await
        .expect("40 MiB put");
    let put_time = started.elapsed();
    let grew = sampler.stop();
    eprintln!(
        "40 MiB block upload: {:.2} s, RSS grew {:.1} MiB",
        put_time.as_secs_f64(),
        grew as f64 / (1024.0 * 1024.0)
    );
    // Two 4 MiB blocks in flight at most; holding the body whole would add 40 MiB.
    assert!(
        grew < 24 * 1024 * 1024,
        "memory grew by {} MiB while uploading 40 MiB",
        grew / (1024 * 1024)
    );

    // The whole-body MD5, computed while streaming, is the blob's Content-MD5.
    let want_md5: [u8; 16] = Md5::digest(pattern_bytes(11, 0, SIZE as usize)).into();
    assert_eq!(meta.hashes.md5, Some(want_md5));
    let head = p.head(&k("pg_data/base/1/16384")).await.unwrap();
    assert_eq!((head.size, head.hashes.md5), (SIZE, Some(want_md5)));

    // It really is a block blob of eleven committed blocks (ten of 4 MiB and the rest).
    let container_client = p.container_client().await.unwrap();
    let list = container_client
        .blob_client("big/pg_data/base/1/16384")
        .block_blob_client()
        .get_block_list(azure_storage_blob::models::BlockListType::Committed, None)
        .await
        .expect("get block list")
        .into_model()
        .expect("block list");
    let blocks = list.committed_blocks.unwrap_or_default();
    assert_eq!(blocks.len(), 11, "{blocks:?}");
    assert!(
        blocks[..10].iter().all(|b| b.size == Some(4 * 1024 * 1024)),
        "{blocks:?}"
    );

    // Read back whole, and a range across the boundary of blocks 2 and 3.
    let mut h = Sha1::new();
    let mut n = 0u64;
    let mut s = p.get(&k("pg_data/base/1/16384"), None).await.unwrap();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        sha1::Digest::update(&mut h, &c);
    }
    assert_eq!(n, SIZE);
    assert_eq!(
        <[u8; 20]>::from(sha1::Digest::finalize(h)),
        pattern_sha1(11, SIZE)
    );
    let (a, b) = (8 * 1024 * 1024 - 100, 8 * 1024 * 1024 + 100);
    let got = collect_stream(p.get(&k("pg_data/base/1/16384"), Some(a..b)).await.unwrap())
        .await
        .unwrap();
    assert!(got == pattern_bytes(11, a, (b - a) as usize));

    // Server-side copy of a block blob keeps size and MD5.
    p.copy(&k("pg_data/base/1/16384"), &k("copy/16384"))
        .await
        .expect("copy");
    let copied = p.head(&k("copy/16384")).await.unwrap();
    assert_eq!((copied.size, copied.hashes.md5), (SIZE, Some(want_md5)));
}
