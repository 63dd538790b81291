//! The end-to-end check the GCS and MinIO crates run with the core engine: the committed
//! pgBackRest fixture synced from a local directory to the provider, a second sync that moves
//! nothing, the copy downloaded back object by object and compared byte for byte, then restored
//! with pgBackRest and PostgreSQL.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cbob_test_support::{fixture, pg};
use futures::TryStreamExt;

use crate::layers::RetryPolicy;
use crate::storage::local::{Durability, LocalProvider};
use crate::storage::{DynProvider, KeyPrefix, StorageProvider, read_to_bytes};
use crate::sync::{NoProgress, StanzaJob, StanzaReport, SyncOptions, sync_stanza};

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

/// Every object of the provider into `dir`, by key; returns how many.
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

/// Syncs the fixture to `dest` (a fresh, empty provider) and proves the copy: byte-identical,
/// restorable to the fixture's expected values, and a second sync plans nothing.
/// `service` names the provider in messages ("GCS", "MinIO (s3s-fs)").
pub async fn fixture_syncs_and_restores(dest: DynProvider, service: &str) {
    let fx = fixture::extract();

    let started = Instant::now();
    let report = sync(&fx.repo, &dest, &fx.stanza).await;
    assert!(report.ok(), "sync to {service} failed: {:?}", report.error);
    assert_eq!(report.backups.len(), 3);
    assert_eq!(
        report.copied_files,
        fx.expected.files + 2,
        "every file once, plus the first empty backup.info pair"
    );
    eprintln!(
        "sync to {service}: {} files, {} bytes in {:?}",
        report.copied_files,
        report.copied_bytes,
        started.elapsed()
    );

    let again = sync(&fx.repo, &dest, &fx.stanza).await;
    assert!(again.ok(), "{:?}", again.error);
    assert_eq!(
        (again.planned_files, again.copied_files),
        (0, 0),
        "a second sync to {service} must move nothing"
    );

    let back = fx.dir().join("read-back");
    fs::create_dir_all(&back).unwrap();
    let n = download(&*dest, &back).await;
    assert_eq!(n as u64, fx.expected.files, "objects at the destination");
    assert!(
        fixture::read_tree(&fx.repo) == fixture::read_tree(&back),
        "the copy read back from {service} must be byte-identical"
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
