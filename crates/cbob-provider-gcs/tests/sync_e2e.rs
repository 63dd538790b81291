//! End to end with the core engine: the committed pgBackRest fixture synced from a local
//! directory to fake-gcs-server, downloaded back object by object, compared byte for byte and
//! restored with pgBackRest and PostgreSQL; a second sync moves nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cbob_core::layers::RetryPolicy;
use cbob_core::storage::local::{Durability, LocalProvider};
use cbob_core::storage::{DynProvider, KeyPrefix, StorageProvider, read_to_bytes};
use cbob_core::sync::{NoProgress, StanzaJob, StanzaReport, SyncOptions, sync_stanza};
use cbob_test_support::{fixture, pg};
use futures::TryStreamExt;

async fn sync(src: &Path, dest: &DynProvider, stanza: &str) -> StanzaReport {
    let mut opts = SyncOptions::new(8);
    opts.retry = RetryPolicy::new(2, Duration::from_millis(50));
    let job = StanzaJob {
        name: stanza.into(),
        stanza: stanza.into(),
        source: Arc::new(LocalProvider::with_durability(src, Durability::Deferred).unwrap()),
        dest: dest.clone(),
    };
    sync_stanza(&job, &opts, Arc::new(NoProgress)).await
}

/// Every object of the provider into `dir`, by key.
async fn download(p: &dyn StorageProvider, dir: &Path) -> usize {
    let metas: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.expect("list");
    for m in &metas {
        let bytes = read_to_bytes(p, &m.key).await.expect("get");
        assert_eq!(bytes.len() as u64, m.size, "{}", m.key);
        let path = dir.join(m.key.as_str());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    metas.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fixture_syncs_to_gcs_and_restores_from_the_copy() {
    let fx = fixture::extract();
    let (endpoint, bucket) = common::fresh_bucket("gcs-sync").await;
    let dest = common::build(&common::spec(&endpoint, &bucket, "pgbackrest/repo1")).await;

    let started = std::time::Instant::now();
    let report = sync(&fx.repo, &dest, &fx.stanza).await;
    assert!(report.ok(), "sync failed: {:?}", report.error);
    assert_eq!(report.backups.len(), 3);
    assert_eq!(
        report.copied_files,
        fx.expected.files + 2,
        "every file once, plus the first empty backup.info pair"
    );
    eprintln!(
        "sync to GCS: {} files, {} bytes in {:?}",
        report.copied_files,
        report.copied_bytes,
        started.elapsed()
    );

    let again = sync(&fx.repo, &dest, &fx.stanza).await;
    assert!(again.ok(), "{:?}", again.error);
    assert_eq!(
        (again.planned_files, again.copied_files),
        (0, 0),
        "a second sync must move nothing"
    );

    let back: PathBuf = fx.dir().join("from-gcs");
    fs::create_dir_all(&back).unwrap();
    let n = download(&*dest, &back).await;
    assert_eq!(n as u64, fx.expected.files, "objects at the destination");
    assert!(
        fixture::read_tree(&fx.repo) == fixture::read_tree(&back),
        "the copy read back from GCS must be byte-identical"
    );

    let stanza = fx.stanza.clone();
    let values = tokio::task::spawn_blocking(move || {
        fixture::make_world_readable(&back);
        pg::restore_and_query(&back, &stanza)
    })
    .await
    .unwrap();
    assert_eq!(values, fx.expected.values);
}
