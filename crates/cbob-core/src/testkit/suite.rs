//! The conformance behaviours. Each takes a fresh, empty provider and panics with a clear
//! message when the provider breaks the [`StorageProvider`] contract.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use sha1::{Digest, Sha1};

use super::{FailurePlan, FlakyProvider, RssSampler, pattern_bytes, pattern_sha1, pattern_stream};
use crate::layers::{BandwidthLimiter, Direction, Layers, RetryPolicy, RetryProvider};
use crate::storage::{
    Body, CheckMode, DynProvider, KeyPrefix, ObjectKey, PutOptions, StorageErrorKind,
    StorageProvider, collect_stream, list_dirs, read_to_bytes,
};

/// Keys in the conformance suite: `k("a/b")`.
fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid test key")
}

async fn put_bytes(p: &dyn StorageProvider, key: &str, data: impl Into<Bytes>) {
    let data = data.into();
    let meta = p
        .put(
            &k(key),
            Body::from_bytes(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: put {key}: {e}", p.describe()));
    assert_eq!(
        meta.size,
        data.len() as u64,
        "put returned the wrong size for {key}"
    );
}

async fn get_all(p: &dyn StorageProvider, key: &str) -> Bytes {
    read_to_bytes(p, &k(key))
        .await
        .unwrap_or_else(|e| panic!("{}: get {key}: {e}", p.describe()))
}

/// `list_prefixes` of `prefix`, as strings.
async fn list_dirs_of(p: &dyn StorageProvider, prefix: &str) -> Vec<String> {
    p.list_prefixes(&KeyPrefix::new(prefix).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{}: list_prefixes {prefix:?}: {e}", p.describe()))
        .into_iter()
        .map(|d| d.as_str().to_string())
        .collect()
}

/// The directories below `prefix` worked out from a full listing: what `list_prefixes` must say.
async fn dirs_by_listing(p: &dyn StorageProvider, prefix: &str) -> Vec<String> {
    let dirs: BTreeSet<String> = list_keys(p, prefix)
        .await
        .into_iter()
        .filter_map(|key| {
            let slash = key[prefix.len()..].find('/')?;
            Some(key[..prefix.len() + slash + 1].to_string())
        })
        .collect();
    dirs.into_iter().collect()
}

async fn list_keys(p: &dyn StorageProvider, prefix: &str) -> Vec<String> {
    p.list(&KeyPrefix::new(prefix).unwrap())
        .map_ok(|m| m.key.as_str().to_string())
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{}: list {prefix:?}: {e}", p.describe()))
}

/// Put, get and head agree on bytes and size; list reports the same size.
pub async fn roundtrip_and_metadata(p: DynProvider) {
    let data = Bytes::from_static(b"hello, pgBackRest\n");
    put_bytes(&*p, "dir/sub/file.txt", data.clone()).await;
    assert_eq!(get_all(&*p, "dir/sub/file.txt").await, data);
    let head = p.head(&k("dir/sub/file.txt")).await.expect("head");
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(head.key.as_str(), "dir/sub/file.txt");
    let listed: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "exactly one object expected, got {listed:?}"
    );
    assert_eq!(listed[0].size, data.len() as u64);
    assert_eq!(listed[0].key, head.key);
}

/// A zero-byte object is an object (pgBackRest writes empty files).
pub async fn empty_object(p: DynProvider) {
    put_bytes(&*p, "empty", Bytes::new()).await;
    assert_eq!(
        p.head(&k("empty"))
            .await
            .expect("head of empty object")
            .size,
        0
    );
    assert!(get_all(&*p, "empty").await.is_empty());
    let stream = pattern_stream(1, 0);
    p.put(
        &k("empty2"),
        Body::from_stream(0, stream),
        &PutOptions::default(),
    )
    .await
    .expect("streamed empty put");
    assert_eq!(list_keys(&*p, "").await, ["empty", "empty2"]);
}

/// head/get of a missing key fail with NotFound, which is not transient.
pub async fn missing_objects_are_not_found(p: DynProvider) {
    let e = p
        .head(&k("nope/missing"))
        .await
        .expect_err("head of a missing key");
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "head: {e}");
    assert!(!e.is_transient());
    let e = match p.get(&k("nope/missing"), None).await {
        Ok(s) => collect_stream(s).await.expect_err("get of a missing key"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "get: {e}");
    assert!(list_keys(&*p, "nope/").await.is_empty());
}

/// 1,536 keys come back exactly once each, sorted, across however many pages the service uses;
/// each is in its own directory, so the 1,536 directories below `many/` take more than one page
/// of a delimiter listing too (S3 and GCS pages hold 1,000 entries, Azure's here 500).
pub async fn list_many_keys_across_pages(p: DynProvider) {
    const N: usize = 1536;
    let expected: BTreeSet<String> = (0..N)
        .map(|i| format!("many/{:02}-{i:05}/obj", i % 7))
        .collect();
    futures::stream::iter(expected.iter().cloned())
        .map(|key| {
            let p = p.clone();
            async move { put_bytes(&*p, &key, key.clone().into_bytes()).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    put_bytes(&*p, "other/x", "x").await;
    let listed = list_keys(&*p, "many/").await;
    assert_eq!(
        listed.len(),
        N,
        "listing returned {} keys, expected {N}",
        listed.len()
    );
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "listing is not in key order");
    let set: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(set, expected, "listing lost or duplicated keys");
    let in_03 = (0..N).filter(|i| i % 7 == 3).count();
    assert_eq!(list_keys(&*p, "many/03-").await.len(), in_03);
    assert_eq!(list_keys(&*p, "").await.len(), N + 1);

    let dirs = list_dirs_of(&*p, "many/").await;
    let want: Vec<String> = expected
        .iter()
        .map(|k| k.strip_suffix("obj").unwrap().to_string())
        .collect();
    assert_eq!(
        dirs.len(),
        N,
        "list_prefixes(\"many/\") returned {} directories, expected {N} (lost or repeated across pages?)",
        dirs.len()
    );
    assert_eq!(
        dirs, want,
        "list_prefixes(\"many/\") is not every directory once, in key order"
    );
    assert_eq!(list_dirs_of(&*p, "many/03-").await.len(), in_03);
    assert_eq!(list_dirs_of(&*p, "").await, ["many/", "other/"]);
}

/// `list_prefixes` gives the "directories" right below a prefix, once each, in key order:
/// never objects, never deeper levels, nothing for a missing prefix; prefixes match by string.
/// The layers forward it to the provider instead of falling back to a full listing.
pub async fn list_directories(p: DynProvider) {
    // `bb` is an object listed between two directories (Azure interleaves them in one list).
    for key in [
        "a/x", "a/b/y", "a/b/z", "a-b/q", "bb", "c/w", "d/e/f/g", "top",
    ] {
        put_bytes(&*p, key, key).await;
    }
    let cases: [(&str, &[&str]); 9] = [
        ("", &["a-b/", "a/", "c/", "d/"]),
        ("a/", &["a/b/"]),
        ("a/b/", &[]),
        ("a", &["a-b/", "a/"]),
        ("a/b", &["a/b/"]),
        ("d/", &["d/e/"]),
        ("d/e/", &["d/e/f/"]),
        ("missing/", &[]),
        ("top", &[]),
    ];
    for (prefix, want) in cases {
        let got = list_dirs_of(&*p, prefix).await;
        assert_eq!(got, want, "{}: list_prefixes({prefix:?})", p.describe());
        assert_eq!(
            got,
            dirs_by_listing(&*p, prefix).await,
            "{}: list_prefixes({prefix:?}) disagrees with list",
            p.describe()
        );
    }
    // Deleting a directory's last object removes the directory.
    p.delete(&k("c/w")).await.expect("delete");
    assert_eq!(list_dirs_of(&*p, "").await, ["a-b/", "a/", "d/"]);

    // Through every layer: one delimiter listing reaches the provider, no full listing.
    let counted = Arc::new(FlakyProvider::new(p.clone(), FailurePlan::transient(0)));
    let layered = Layers {
        retry: Some(quick_retries(2)),
        concurrency: Some(2),
        bandwidth: Some((BandwidthLimiter::new(1 << 30), Direction::Both)),
    }
    .apply(counted.clone());
    let dirs = list_dirs(&*layered, &KeyPrefix::new("a/").unwrap())
        .await
        .expect("list_dirs through the layers");
    assert_eq!(dirs, [KeyPrefix::new("a/b/").unwrap()]);
    assert_eq!(counted.calls("list_prefixes"), 1);
    assert_eq!(
        counted.calls("list"),
        0,
        "a layer did not forward list_prefixes, so list_dirs fell back to a full listing"
    );
}

/// Prefixes match by string, not by directory; order is byte order of the whole key.
pub async fn list_prefixes_and_order(p: DynProvider) {
    for key in ["a-b", "a.c", "a/b", "a/c/d", "ab", "b"] {
        put_bytes(&*p, key, key).await;
    }
    assert_eq!(
        list_keys(&*p, "").await,
        ["a-b", "a.c", "a/b", "a/c/d", "ab", "b"]
    );
    assert_eq!(list_keys(&*p, "a/").await, ["a/b", "a/c/d"]);
    assert_eq!(
        list_keys(&*p, "a").await,
        ["a-b", "a.c", "a/b", "a/c/d", "ab"]
    );
    assert_eq!(list_keys(&*p, "a/c").await, ["a/c/d"]);
    assert!(list_keys(&*p, "zzz").await.is_empty());
}

/// A 64 MiB object streams in and out with its bytes intact and without being held in memory.
pub async fn large_object_streams_with_flat_memory(p: DynProvider) {
    const SIZE: u64 = 64 * 1024 * 1024;
    let sampler = RssSampler::start();
    p.put(
        &k("big/object.bin"),
        Body::from_stream(SIZE, pattern_stream(7, SIZE)),
        &PutOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: 64 MiB put: {e}", p.describe()));
    let mut stream = p.get(&k("big/object.bin"), None).await.expect("get big");
    let mut h = Sha1::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("read big");
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    let grew = sampler.stop();
    assert_eq!(n, SIZE, "read back {n} bytes of {SIZE}");
    assert_eq!(
        <[u8; 20]>::from(h.finalize()),
        pattern_sha1(7, SIZE),
        "64 MiB object corrupted"
    );
    assert_eq!(p.head(&k("big/object.bin")).await.unwrap().size, SIZE);
    // Holding the object whole would add at least 64 MiB.
    assert!(
        grew < 48 * 1024 * 1024,
        "memory grew by {} MiB while streaming a 64 MiB object",
        grew / (1024 * 1024)
    );
    // Servers that keep objects in memory (moto) should not carry this one into other tests.
    p.delete(&k("big/object.bin")).await.expect("delete big");
}

/// Ranged reads return exactly the bytes asked for, clamped to the object.
pub async fn ranged_reads(p: DynProvider) {
    const SIZE: u64 = 1024 * 1024 + 17;
    p.put(
        &k("ranged"),
        Body::from_stream(SIZE, pattern_stream(3, SIZE)),
        &PutOptions::default(),
    )
    .await
    .expect("put");
    for (start, end) in [
        (0, 10),
        (1000, 70_000),
        (SIZE - 5, SIZE),
        (SIZE - 5, SIZE + 100),
        (500_000, 500_001),
    ] {
        let got = collect_stream(
            p.get(&k("ranged"), Some(start..end))
                .await
                .expect("ranged get"),
        )
        .await
        .expect("ranged read");
        let want = pattern_bytes(3, start, (end.min(SIZE) - start) as usize);
        assert_eq!(got.len(), want.len(), "range {start}..{end}: wrong length");
        assert!(got == want, "range {start}..{end}: wrong bytes");
    }
}

/// Overwriting replaces the object, whatever the sizes.
pub async fn overwrite_replaces_atomically(p: DynProvider) {
    put_bytes(
        &*p,
        "info/backup.info",
        "first version, longer than the second",
    )
    .await;
    put_bytes(&*p, "info/backup.info", "second").await;
    assert_eq!(get_all(&*p, "info/backup.info").await, "second");
    assert_eq!(p.head(&k("info/backup.info")).await.unwrap().size, 6);
    assert_eq!(list_keys(&*p, "info/").await, ["info/backup.info"]);
}

/// Delete removes; deleting a missing key succeeds.
pub async fn delete_is_idempotent(p: DynProvider) {
    put_bytes(&*p, "del/a", "a").await;
    put_bytes(&*p, "del/b", "b").await;
    p.delete(&k("del/a")).await.expect("delete");
    assert_eq!(
        p.head(&k("del/a")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound
    );
    p.delete(&k("del/a"))
        .await
        .expect("second delete of the same key");
    p.delete(&k("never/existed"))
        .await
        .expect("delete of a missing key");
    assert_eq!(list_keys(&*p, "").await, ["del/b"]);
    p.delete(&k("del/b")).await.expect("delete");
    assert!(list_keys(&*p, "").await.is_empty());
}

/// A body that yields fewer or more bytes than declared fails and publishes nothing; an
/// existing object under that key is left as it was.
pub async fn short_or_long_body_is_never_published(p: DynProvider) {
    let short = Body::from_stream(10_000, pattern_stream(5, 4_000));
    let e = p
        .put(&k("torn/new"), short, &PutOptions::default())
        .await
        .expect_err("short body");
    assert_eq!(e.kind(), StorageErrorKind::Corrupt, "short body: {e}");
    let long = Body::from_stream(100, pattern_stream(5, 4_000));
    p.put(&k("torn/new"), long, &PutOptions::default())
        .await
        .expect_err("long body");
    assert_eq!(
        p.head(&k("torn/new")).await.unwrap_err().kind(),
        StorageErrorKind::NotFound,
        "a torn write became visible"
    );
    put_bytes(&*p, "torn/old", "the good copy").await;
    let short = Body::from_stream(10_000, pattern_stream(5, 4_000));
    p.put(&k("torn/old"), short, &PutOptions::default())
        .await
        .expect_err("short body");
    assert_eq!(
        get_all(&*p, "torn/old").await,
        "the good copy",
        "a torn write replaced a good object"
    );
    assert_eq!(list_keys(&*p, "torn/").await, ["torn/old"]);
}

/// Keys that could escape a root never validate, so no provider can be handed one.
pub async fn hostile_keys_are_rejected(p: DynProvider) {
    for bad in [
        "../escape",
        "a/../../escape",
        "/abs",
        "a//b",
        "a\\b",
        "a\0b",
        "..",
        "./x",
        "",
    ] {
        let e = ObjectKey::new(bad).expect_err(bad);
        assert_eq!(e.kind(), StorageErrorKind::InvalidKey);
        assert!(!e.is_transient());
    }
    assert!(KeyPrefix::new("../").is_err());
    // Names that merely look odd are legal and round-trip.
    for odd in ["odd/..x", "odd/x..", "odd/sp ace+plus=eq&amp~ü"] {
        put_bytes(&*p, odd, odd).await;
        assert_eq!(get_all(&*p, odd).await, odd);
    }
    assert_eq!(list_keys(&*p, "odd/").await.len(), 3);
}

/// Many writers at once: distinct keys all land; one key ends as exactly one writer's bytes.
pub async fn concurrent_writers(p: DynProvider) {
    let tasks: Vec<_> = (0..48u64)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let size = 100_000 + i * 1000;
                p.put(
                    &k(&format!("conc/distinct/{i:03}")),
                    Body::from_stream(size, pattern_stream(i, size)),
                    &PutOptions::default(),
                )
                .await
                .map(|_| ())
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("concurrent put");
    }
    assert_eq!(list_keys(&*p, "conc/distinct/").await.len(), 48);
    let same: Vec<_> = (0..16u64)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let size = 200_000 + i * 7;
                p.put(
                    &k("conc/same"),
                    Body::from_stream(size, pattern_stream(100 + i, size)),
                    &PutOptions::default(),
                )
                .await
                .map(|_| ())
            })
        })
        .collect();
    for t in same {
        t.await.expect("task").expect("concurrent put of one key");
    }
    let got = get_all(&*p, "conc/same").await;
    let winner = (0..16u64).find(|i| got.len() as u64 == 200_000 + i * 7);
    let i = winner.unwrap_or_else(|| {
        panic!(
            "concurrent writes produced a {}-byte object of no writer",
            got.len()
        )
    });
    assert!(
        got == pattern_bytes(100 + i, 0, got.len()),
        "concurrent writes interleaved bytes"
    );
    assert_eq!(list_keys(&*p, "conc/same").await, ["conc/same"]);
}

fn quick_retries(n: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries: n,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// Transient failures are retried (including a read that breaks mid-stream and a listing that
/// breaks mid-way); permanent ones are not.
pub async fn transient_failures_are_retried(p: DynProvider) {
    const SIZE: u64 = 3 * 1024 * 1024 + 5;
    p.put(
        &k("retry/obj"),
        Body::from_stream(SIZE, pattern_stream(9, SIZE)),
        &PutOptions::default(),
    )
    .await
    .expect("put");
    for i in 0..30 {
        put_bytes(&*p, &format!("retry/list/{i:02}"), "x").await;
    }
    let plan = FailurePlan {
        break_first_get_after: Some(1_000_001),
        break_first_list_after: Some(11),
        ..FailurePlan::transient(2)
    };
    let flaky = Arc::new(FlakyProvider::new(p.clone(), plan));
    let retrying = RetryProvider::new(flaky.clone(), quick_retries(3));

    assert_eq!(
        retrying
            .head(&k("retry/obj"))
            .await
            .expect("head through retries")
            .size,
        SIZE
    );
    assert_eq!(
        flaky.calls("head"),
        3,
        "two injected failures, then success"
    );

    let mut h = Sha1::new();
    let mut stream = retrying
        .get(&k("retry/obj"), None)
        .await
        .expect("get through retries");
    while let Some(chunk) = stream.next().await {
        h.update(chunk.expect("resumed read"));
    }
    assert_eq!(
        <[u8; 20]>::from(h.finalize()),
        pattern_sha1(9, SIZE),
        "a resumed read must be byte-exact"
    );

    let listed: Vec<_> = retrying
        .list(&KeyPrefix::new("retry/list/").unwrap())
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .expect("list through retries");
    let want: Vec<String> = (0..30).map(|i| format!("retry/list/{i:02}")).collect();
    assert_eq!(
        listed, want,
        "a restarted listing must not lose or repeat keys"
    );

    let dirs = retrying
        .list_prefixes(&KeyPrefix::new("retry/").unwrap())
        .await
        .expect("list_prefixes through retries");
    assert_eq!(dirs, [KeyPrefix::new("retry/list/").unwrap()]);
    assert_eq!(
        flaky.calls("list_prefixes"),
        3,
        "two injected failures of list_prefixes, then success"
    );

    retrying
        .put(
            &k("retry/put"),
            Body::from_bytes("in-memory bodies are replayed"),
            &PutOptions::default(),
        )
        .await
        .expect("put through retries");
    assert_eq!(
        get_all(&*p, "retry/put").await,
        "in-memory bodies are replayed"
    );

    // Permanent errors are returned at once.
    let flaky = Arc::new(FlakyProvider::new(p.clone(), FailurePlan::transient(0)));
    let retrying = RetryProvider::new(flaky.clone(), quick_retries(3));
    let e = retrying.head(&k("retry/missing")).await.unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound);
    assert_eq!(flaky.calls("head"), 1, "NotFound must not be retried");

    // And transient ones give up after the budget.
    let flaky = Arc::new(FlakyProvider::new(p.clone(), FailurePlan::transient(100)));
    let retrying = RetryProvider::new(flaky.clone(), quick_retries(2));
    let e = retrying.delete(&k("retry/obj")).await.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(flaky.calls("delete"), 3, "one attempt plus two retries");
}

/// `check(ReadWrite)` succeeds on a usable provider and leaves nothing behind.
pub async fn check_read_write(p: DynProvider) {
    p.check(CheckMode::ReadWrite)
        .await
        .unwrap_or_else(|e| panic!("{}: check: {e}", p.describe()));
    p.check(CheckMode::Read).await.expect("read check");
    assert!(
        list_keys(&*p, "").await.is_empty(),
        "check left objects behind"
    );
}

/// Server-side copy works where the provider claims it, and says Unsupported otherwise.
pub async fn server_side_copy_when_supported(p: DynProvider) {
    put_bytes(&*p, "copy/src", "copied bytes").await;
    let r = p.copy(&k("copy/src"), &k("copy/dst")).await;
    if p.capabilities().server_side_copy {
        r.expect("server-side copy");
        assert_eq!(get_all(&*p, "copy/dst").await, "copied bytes");
    } else {
        assert_eq!(
            r.expect_err("copy without capability").kind(),
            StorageErrorKind::Unsupported
        );
    }
}
