//! A 40 MiB object through a resumable upload with the default settings (8 MiB chunks): the
//! process's memory grows by about two chunks, not by the object. Its own test binary, so no
//! other test's allocations run alongside the measurement.

mod common;

use cbob_core::storage::{Body, PutOptions};
use cbob_core::testkit::{RssSampler, pattern_sha1, pattern_stream};
use common::{MIB, build, fresh_bucket, k, spec};
use futures::StreamExt;
use sha1::{Digest, Sha1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_mib_resumable_upload_keeps_memory_flat() {
    const SIZE: u64 = 40 * MIB;
    let (endpoint, bucket) = fresh_bucket("gcs-memory").await;
    let p = build(&spec(&endpoint, &bucket, "mem")).await;
    // Warm up the client (connection pool, TLS-free HTTP, allocator arenas) outside the window.
    p.put(&k("warm"), Body::from_bytes("warm"), &PutOptions::default())
        .await
        .unwrap();

    let sampler = RssSampler::start();
    let started = std::time::Instant::now();
    let meta = p
        .put(
            &k("big.bin"),
            Body::from_stream(SIZE, pattern_stream(40, SIZE)),
            &PutOptions::default(),
        )
        .await
        .expect("40 MiB resumable put");
    let upload = started.elapsed();
    let grew = sampler.stop();
    assert_eq!(meta.size, SIZE);
    assert!(meta.hashes.crc32c.is_some() && meta.hashes.md5.is_some());

    let started = std::time::Instant::now();
    let mut stream = p.get(&k("big.bin"), None).await.unwrap();
    let mut h = Sha1::new();
    while let Some(c) = stream.next().await {
        h.update(c.unwrap());
    }
    let download = started.elapsed();
    assert_eq!(
        <[u8; 20]>::from(h.finalize()),
        pattern_sha1(40, SIZE),
        "40 MiB object corrupted"
    );
    eprintln!(
        "40 MiB resumable upload: {upload:?}, RSS grew {:.1} MiB; download + SHA-1: {download:?}",
        grew as f64 / MIB as f64
    );
    // Two 8 MiB chunks in memory plus buffers; holding the object would add 40 MiB.
    assert!(
        grew < 28 * MIB,
        "memory grew by {} MiB while uploading a 40 MiB object",
        grew / MIB
    );
}
