//! End to end with the core engine: the committed pgBackRest fixture is synced from a local
//! repository to an Azure container (under a prefix), downloaded back, and found byte-identical
//! and restorable with pgBackRest and PostgreSQL; a second sync moves nothing.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cbob_core::layers::RetryPolicy;
use cbob_core::storage::local::{Durability, LocalProvider};
use cbob_core::storage::{DynProvider, KeyPrefix};
use cbob_core::sync::{NoProgress, StanzaJob, StanzaReport, SyncOptions, sync_stanza};
use cbob_test_support::{fixture, pg};
use common::*;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

async fn sync(source: &DynProvider, dest: &DynProvider, stanza: &str) -> StanzaReport {
    let mut opts = SyncOptions::new(8);
    opts.retry = RetryPolicy::new(1, Duration::from_millis(10));
    let job = StanzaJob {
        name: stanza.into(),
        stanza: stanza.into(),
        source: source.clone(),
        dest: dest.clone(),
    };
    sync_stanza(&job, &opts, Arc::new(NoProgress)).await
}

/// Streams every blob of `p` into files below `dir`.
async fn download(p: &DynProvider, dir: &Path) -> u64 {
    let metas: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.expect("list");
    let mut bytes = 0;
    for m in metas {
        let path = dir.join(m.key.as_str());
        tokio::fs::create_dir_all(path.parent().unwrap())
            .await
            .unwrap();
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        let mut s = p.get(&m.key, None).await.expect("get");
        while let Some(chunk) = s.next().await {
            let chunk = chunk.expect("read");
            bytes += chunk.len() as u64;
            file.write_all(&chunk).await.unwrap();
        }
        file.flush().await.unwrap();
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fixture_synced_to_azure_comes_back_identical_and_restorable() {
    let fx = fixture::extract();
    let (endpoint, container) = fresh_container("az-sync").await;
    let dest = build(&shared_key_spec(&endpoint, &container, "offsite/repo1")).await;
    let source: DynProvider =
        Arc::new(LocalProvider::with_durability(&fx.repo, Durability::Deferred).unwrap());

    let started = Instant::now();
    let report = sync(&source, &dest, &fx.stanza).await;
    let first = started.elapsed();
    assert!(report.ok(), "sync failed: {:?}", report.error);
    assert_eq!(report.backups.len(), 3);
    // Every file once, plus the empty backup.info and its copy published on first sight.
    assert_eq!(
        report.copied_files,
        fx.expected.files + 2,
        "every file copied once"
    );

    let back = fx.dir().join("downloaded");
    std::fs::create_dir_all(&back).unwrap();
    let bytes = download(&dest, &back).await;
    assert_eq!(
        fixture::read_tree(&fx.repo),
        fixture::read_tree(&back),
        "the Azure copy must be byte-identical"
    );

    let started = Instant::now();
    let again = sync(&source, &dest, &fx.stanza).await;
    let second = started.elapsed();
    assert!(again.ok(), "{:?}", again.error);
    assert_eq!(
        (again.planned_files, again.copied_files),
        (0, 0),
        "a second sync moves nothing"
    );
    assert_eq!(
        again.unchanged_files,
        fx.expected.files - 4,
        "all but the four info files compared by listing"
    );
    eprintln!(
        "fixture to Azurite: {} files, {bytes} bytes; first sync {:.2} s, second {:.2} s",
        report.copied_files,
        first.as_secs_f64(),
        second.as_secs_f64()
    );

    fixture::make_world_readable(&back);
    let values = pg::restore_and_query(&back, &fx.stanza);
    assert_eq!(values, fx.expected.values);
}
