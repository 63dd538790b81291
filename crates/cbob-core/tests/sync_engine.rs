//! The sync engine on the real pgBackRest fixture, local directory to local directory:
//! byte-identical mirror, restorable with pgBackRest and PostgreSQL, idempotent, dry run writes
//! nothing, corruption is never published, damaged destination files are repaired.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cbob_core::layers::RetryPolicy;
use cbob_core::storage::DynProvider;
use cbob_core::storage::local::{Durability, LocalProvider};
use cbob_core::sync::{NoProgress, StanzaJob, StanzaReport, SyncError, SyncOptions, sync_stanza};
use cbob_test_support::{fixture, pg};

fn local(path: &Path) -> DynProvider {
    Arc::new(LocalProvider::with_durability(path, Durability::Deferred).unwrap())
}

fn options() -> SyncOptions {
    let mut o = SyncOptions::new(8);
    o.retry = RetryPolicy::new(1, Duration::from_millis(10));
    o
}

async fn sync(src: &Path, dst: &Path, stanza: &str, opts: &SyncOptions) -> StanzaReport {
    let job = StanzaJob {
        name: stanza.into(),
        stanza: stanza.into(),
        source: local(src),
        dest: local(dst),
    };
    sync_stanza(&job, opts, Arc::new(NoProgress)).await
}

fn dest_dir(fx: &fixture::Fixture) -> PathBuf {
    let d = fx.dir().join("dest");
    fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrors_the_fixture_and_a_restore_from_the_copy_reaches_the_expected_values() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let report = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    assert!(report.ok(), "sync failed: {:?}", report.error);
    assert_eq!(report.backups.len(), 3);
    // Every file once, plus the empty backup.info and its copy published on first sight.
    assert_eq!(
        report.copied_files,
        fx.expected.files + 2,
        "every file copied once"
    );
    assert_eq!(
        fixture::read_tree(&fx.repo),
        fixture::read_tree(&dst),
        "the copy must be byte-identical"
    );

    // A second run moves nothing.
    let again = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    assert!(again.ok(), "{:?}", again.error);
    assert_eq!((again.planned_files, again.copied_files), (0, 0));
    assert_eq!(
        again.unchanged_files,
        fx.expected.files - 4,
        "all but the four info files compared by listing"
    );

    fixture::make_world_readable(&dst);
    let values = pg::restore_and_query(&dst, &fx.stanza);
    assert_eq!(values, fx.expected.values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_writes_nothing() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let mut opts = options();
    opts.dry_run = true;
    let report = sync(&fx.repo, &dst, &fx.stanza, &opts).await;
    assert!(report.ok(), "{:?}", report.error);
    assert_eq!(report.planned_files, fx.expected.files + 2);
    assert_eq!(report.copied_files, 0);
    assert!(
        fixture::read_tree(&dst).is_empty(),
        "a dry run wrote to the destination"
    );
}

/// Flips one byte in the middle of a file, keeping its size.
fn flip(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x5a;
    fs::write(path, b).unwrap();
}

fn find(root: &Path, pred: impl Fn(&str) -> bool) -> PathBuf {
    fixture::read_tree(root)
        .keys()
        .find(|k| pred(k))
        .map(|k| root.join(k))
        .expect("a matching fixture file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_backup_file_is_detected_and_never_published() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let incr = &fx.expected.backups[2].label;
    let victim = find(&fx.repo, |k| {
        k.contains(incr.as_str()) && k.contains("pg_data/") && k.ends_with(".lz4")
    });
    let rel = victim.strip_prefix(&fx.repo).unwrap().to_path_buf();
    flip(&victim);
    let report = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    match &report.error {
        Some(SyncError::Verification { key, .. }) => assert_eq!(Path::new(key), rel),
        other => panic!("expected a verification failure, got {other:?}"),
    }
    assert!(!dst.join(&rel).exists(), "the corrupted file was published");
    // The stanza exists at the destination, valid and empty: no backup was published.
    let info = fs::read(dst.join(format!("backup/{}/backup.info", fx.stanza))).unwrap();
    let info = cbob_core::repo::BackupInfo::parse(&info).unwrap();
    assert!(
        info.backups.is_empty(),
        "backup.info lists {:?} after a failed first sync",
        info.backups
    );
    fixture::make_world_readable(&dst);
    let status = pg::pgbackrest_info_json(&dst, &fx.stanza);
    assert_eq!(status["status"]["message"], "no valid backups", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_wal_segment_is_detected_and_never_published() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let victim = find(&fx.repo, |k| {
        k.starts_with("archive/") && k.ends_with(".lz4")
    });
    let rel = victim.strip_prefix(&fx.repo).unwrap().to_path_buf();
    flip(&victim);
    let report = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    assert!(
        matches!(report.error, Some(SyncError::Verification { .. })),
        "expected a verification failure, got {:?}",
        report.error
    );
    assert!(!dst.join(&rel).exists(), "the corrupted WAL was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_destination_files_are_repaired_and_an_earlier_state_stays_valid() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    assert!(sync(&fx.repo, &dst, &fx.stanza, &options()).await.ok());
    // Truncate a destination file: same name, different size.
    let victim = find(&dst, |k| k.contains("pg_data/") && k.ends_with(".lz4"));
    let good = fs::read(&victim).unwrap();
    fs::write(&victim, &good[..good.len() / 2]).unwrap();
    let report = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    assert!(report.ok(), "{:?}", report.error);
    assert_eq!(report.repaired, 1);
    assert!(
        report.warnings.iter().any(|w| w.contains("repairing")),
        "{:?}",
        report.warnings
    );
    assert_eq!(fs::read(&victim).unwrap(), good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn info_files_that_grew_at_the_source_are_updated_without_a_damage_warning() {
    // The destination as it was before the source gained its backups: an older, smaller
    // backup.info (valid, fewer entries). The next sync rewrites it, and that is not damage.
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    assert!(sync(&fx.repo, &dst, &fx.stanza, &options()).await.ok());
    let info = dst.join(format!("backup/{}/backup.info", fx.stanza));
    let current = fs::read(&info).unwrap();
    let older = cbob_core::repo::rewrite::empty_backup_info(&current).unwrap();
    assert_ne!(older.len(), current.len());
    fs::write(&info, &older).unwrap();
    fs::write(info.with_extension("info.copy"), &older).unwrap();

    let report = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    assert!(report.ok(), "{:?}", report.error);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.repaired, 0);
    assert_eq!(
        fs::read(&info).unwrap(),
        current,
        "backup.info brought up to date"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_and_foreign_source_names_are_not_copied() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    // pgBackRest temp files, unknown files and the `latest` link are skipped.
    let backup_dir = fx.repo.join(format!("backup/{}", fx.stanza));
    fs::write(backup_dir.join("backup.info.pgbackrest.tmp"), "partial").unwrap();
    fs::write(backup_dir.join("notes.txt"), "not pgBackRest").unwrap();
    let report = sync(&fx.repo, &dst, &fx.stanza, &options()).await;
    assert!(report.ok(), "{:?}", report.error);
    assert!(
        !dst.join(format!("backup/{}/backup.info.pgbackrest.tmp", fx.stanza))
            .exists()
    );
    assert!(!dst.join(format!("backup/{}/notes.txt", fx.stanza)).exists());
    assert!(!dst.join(format!("backup/{}/latest", fx.stanza)).exists());
    assert!(report.warnings.iter().any(|w| w.contains("notes.txt")));
    // A stanza name that could escape the repository is refused before any I/O.
    let bad = sync(&fx.repo, &dst, "../etc", &options()).await;
    assert!(
        matches!(bad.error, Some(SyncError::Source(_))),
        "{:?}",
        bad.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_removes_what_the_source_expired_in_pgbackrest_order_and_keeps_a_restorable_copy() {
    use cbob_core::sync::prune_stanza;
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    assert!(sync(&fx.repo, &dst, &fx.stanza, &options()).await.ok());
    let stanza = &fx.stanza;
    // At the destination, an older backup the source has since expired, and WAL from before it.
    let full = &fx.expected.backups[0].label;
    let old_label = "20261101-000000F";
    let backup_dir = dst.join(format!("backup/{stanza}"));
    let mut stack = vec![backup_dir.join(full)];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let target = backup_dir
                .join(old_label)
                .join(e.path().strip_prefix(backup_dir.join(full)).unwrap());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                fs::create_dir_all(&target).unwrap();
            } else {
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    let wal_dir = dst.join(format!("archive/{stanza}/15-1/0000000100000000"));
    let wal_start = &fx.expected.backups[0].wal_start;
    let some_wal = fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(wal_start.as_str()) && n.ends_with(".lz4"))
        .unwrap();
    let old_wal = some_wal.replacen(wal_start.as_str(), "000000010000000000000001", 1);
    fs::copy(wal_dir.join(&some_wal), wal_dir.join(&old_wal)).unwrap();

    let audit = std::sync::Mutex::new(Vec::new());
    let dest = local(&dst);
    let dry = prune_stanza(&dest, stanza, true, &|a, b| {
        audit.lock().unwrap().push(format!("{a} {b}"))
    })
    .await
    .unwrap();
    assert_eq!(dry.backups, [old_label]);
    assert!(
        backup_dir.join(old_label).exists(),
        "a dry run deletes nothing"
    );
    let report = prune_stanza(&dest, stanza, false, &|a, b| {
        audit.lock().unwrap().push(format!("{a} {b}"))
    })
    .await
    .unwrap();
    assert_eq!(report.backups, [old_label]);
    assert_eq!(report.wal_files, 1);
    assert!(
        !backup_dir.join(old_label).exists(),
        "the expired backup directory is gone"
    );
    assert!(
        !wal_dir.join(&old_wal).exists(),
        "WAL before the oldest backup is gone"
    );
    assert!(wal_dir.join(&some_wal).exists(), "WAL a backup needs stays");
    assert!(
        audit
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("expire-backup"))
    );
    // Nothing the listed backups need was touched.
    cbob_core::sync::validate_destination(&dest, stanza)
        .await
        .unwrap();
    assert_eq!(fixture::read_tree(&fx.repo), fixture::read_tree(&dst));
}
