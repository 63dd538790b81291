//! The cross-cutting layers measured against the real local provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cbob_core::layers::{
    BandwidthLimiter, BandwidthProvider, ConcurrencyLimitProvider, Direction, RetryPolicy,
};
use cbob_core::storage::local::LocalProvider;
use cbob_core::storage::{Body, DynProvider, ObjectKey, PutOptions, StorageProvider};
use cbob_core::testkit::pattern_stream;
use futures::StreamExt;

fn local() -> (tempfile::TempDir, DynProvider) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = Arc::new(LocalProvider::new(dir.path().join("root")).unwrap());
    (dir, p)
}

async fn drain(p: &dyn StorageProvider, key: &ObjectKey) -> u64 {
    let mut s = p.get(key, None).await.unwrap();
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c.unwrap().len() as u64;
    }
    n
}

fn assert_within_10pct(bytes: u64, elapsed: Duration, cap: u64) {
    let rate = bytes as f64 / elapsed.as_secs_f64();
    let error = (rate - cap as f64).abs() / cap as f64;
    assert!(
        error < 0.10,
        "measured {rate:.0} B/s against a cap of {cap} B/s ({:.1}% off) over {elapsed:?}",
        error * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bandwidth_cap_holds_for_one_stream() {
    let (_d, p) = local();
    let size = 4 * 1024 * 1024;
    let key = ObjectKey::new("obj").unwrap();
    p.put(
        &key,
        Body::from_stream(size, pattern_stream(1, size)),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let cap = 2 * 1024 * 1024;
    let limited = BandwidthProvider::new(p, BandwidthLimiter::new(cap), Direction::Read);
    let t = Instant::now();
    assert_eq!(drain(&limited, &key).await, size);
    assert_within_10pct(size, t.elapsed(), cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bandwidth_cap_is_shared_by_concurrent_writers() {
    let (_d, p) = local();
    let cap = 3 * 1024 * 1024;
    let limited: DynProvider = Arc::new(BandwidthProvider::new(
        p,
        BandwidthLimiter::new(cap),
        Direction::Write,
    ));
    let each = 1536 * 1024;
    let t = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let limited = limited.clone();
            tokio::spawn(async move {
                let key = ObjectKey::new(format!("w{i}")).unwrap();
                limited
                    .put(
                        &key,
                        Body::from_stream(each, pattern_stream(i, each)),
                        &PutOptions::default(),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_within_10pct(4 * each, t.elapsed(), cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_limit_caps_streams_in_flight() {
    let (_d, p) = local();
    for i in 0..6 {
        let key = ObjectKey::new(format!("o{i}")).unwrap();
        p.put(
            &key,
            Body::from_bytes(vec![7u8; 1000]),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let limited = Arc::new(ConcurrencyLimitProvider::new(p, 2));
    let a = limited
        .get(&ObjectKey::new("o0").unwrap(), None)
        .await
        .unwrap();
    let _b = limited
        .get(&ObjectKey::new("o1").unwrap(), None)
        .await
        .unwrap();
    // Both permits are held by open streams: a third operation must wait...
    let third = tokio::time::timeout(
        Duration::from_millis(200),
        limited.head(&ObjectKey::new("o2").unwrap()),
    )
    .await;
    assert!(
        third.is_err(),
        "a third operation ran while two streams were open"
    );
    // ...until one stream is finished.
    let n: usize = a
        .map(|c| c.unwrap().len())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(n, 1000);
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        limited.head(&ObjectKey::new("o2").unwrap()),
    )
    .await;
    assert_eq!(third.expect("permit released").unwrap().size, 1000);
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_cap() {
    let policy = RetryPolicy {
        max_retries: 10,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    };
    for retry in 0..10u32 {
        let base = Duration::from_millis(100)
            .saturating_mul(1 << retry)
            .min(Duration::from_secs(2));
        let samples: Vec<Duration> = (0..50).map(|_| policy.delay(retry)).collect();
        for d in &samples {
            assert!(
                *d >= base / 2 && *d <= base,
                "retry {retry}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        if base >= Duration::from_millis(100) {
            let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
            assert!(distinct.len() > 1, "retry {retry}: no jitter");
        }
    }
    assert_eq!(RetryPolicy::none().delay(3), Duration::ZERO);
}
