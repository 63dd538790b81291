//! The sync engine walks the source listing as it arrives, beside the destination's: transfers
//! start before the listing ends, a listing out of key order or one that breaks midway fails the
//! stanza without publishing anything, and the result is still an exact mirror.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

use cbob_core::layers::RetryPolicy;
use cbob_core::storage::local::{Durability, LocalProvider};
use cbob_core::storage::{
    Body, ByteStream, Capabilities, CheckMode, DynProvider, KeyPrefix, ObjectKey, ObjectMeta,
    PutOptions, StorageProvider, StorageResult,
};
use cbob_core::sync::{
    NoProgress, StanzaJob, StanzaReport, SyncObserver, SyncOptions, sync_stanza,
};
use cbob_core::testkit::{FailurePlan, FlakyProvider};
use cbob_test_support::fixture;

fn local(path: &Path) -> DynProvider {
    Arc::new(LocalProvider::with_durability(path, Durability::Deferred).unwrap())
}

fn options() -> SyncOptions {
    let mut o = SyncOptions::new(8);
    o.retry = RetryPolicy::new(1, Duration::from_millis(10));
    o
}

fn dest_dir(fx: &fixture::Fixture) -> PathBuf {
    let d = fx.dir().join("dest");
    fs::create_dir_all(&d).unwrap();
    d
}

async fn sync_with(
    source: DynProvider,
    dest: DynProvider,
    stanza: &str,
    observer: Arc<dyn SyncObserver>,
) -> StanzaReport {
    let job = StanzaJob {
        name: stanza.into(),
        stanza: stanza.into(),
        source,
        dest,
    };
    sync_stanza(&job, &options(), observer).await
}

/// How a wrapped listing misbehaves.
#[derive(Debug, Clone, Copy)]
enum Listing {
    /// Pauses this long after every `every` entries, and records when the listing ended.
    Slow { every: usize, pause: Duration },
    /// Yields the second and third entries in swapped order.
    Unsorted,
}

/// A real provider whose listings are slowed down or put out of order.
#[derive(Debug)]
struct OddListing {
    inner: DynProvider,
    how: Listing,
    /// When the last listing of `backup/` ended.
    backup_listed_at: Arc<Mutex<Option<Instant>>>,
}

#[async_trait]
impl StorageProvider for OddListing {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        let is_backup = prefix.as_str().starts_with("backup/");
        match self.how {
            Listing::Slow { every, pause } => {
                let ended = self.backup_listed_at.clone();
                let slowed = inner.enumerate().then(move |(i, item)| async move {
                    if i > 0 && i % every == 0 {
                        tokio::time::sleep(pause).await;
                    }
                    item
                });
                let end = futures::stream::once(async move {
                    if is_backup {
                        *ended.lock().unwrap() = Some(Instant::now());
                    }
                    None
                });
                slowed
                    .map(Some)
                    .chain(end)
                    .filter_map(|x| async move { x })
                    .boxed()
            }
            Listing::Unsorted => {
                let items = inner.collect::<Vec<_>>();
                futures::stream::once(items)
                    .flat_map(|mut items| {
                        if items.len() > 2 {
                            items.swap(1, 2);
                        }
                        futures::stream::iter(items)
                    })
                    .boxed()
            }
        }
    }
    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        self.inner.get(key, range).await
    }
    async fn put(&self, key: &ObjectKey, body: Body, o: &PutOptions) -> StorageResult<ObjectMeta> {
        self.inner.put(key, body, o).await
    }
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn barrier(&self) -> StorageResult<()> {
        self.inner.barrier().await
    }
    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        self.inner.check(mode).await
    }
}

/// Records when each backup file (not WAL) finished copying.
#[derive(Default)]
struct Timeline {
    backup_files_done: Mutex<Vec<Instant>>,
}

impl SyncObserver for Timeline {
    fn file_done(&self, _stanza: &str, key: &str, _bytes: u64) {
        if key.contains("/pg_data/") {
            self.backup_files_done.lock().unwrap().push(Instant::now());
        }
    }
}

/// Backup manifests present under a directory.
fn manifests_in(root: &Path) -> Vec<String> {
    fixture::read_tree(root)
        .into_keys()
        .filter(|k| k.ends_with("backup.manifest") || k.ends_with("backup.manifest.copy"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_files_are_copied_while_the_source_is_still_being_listed() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let ended = Arc::new(Mutex::new(None));
    let source: DynProvider = Arc::new(OddListing {
        inner: local(&fx.repo),
        how: Listing::Slow {
            every: 100,
            pause: Duration::from_millis(150),
        },
        backup_listed_at: ended.clone(),
    });
    let timeline = Arc::new(Timeline::default());
    let report = sync_with(source, local(&dst), &fx.stanza, timeline.clone()).await;
    assert!(report.ok(), "{:?}", report.error);
    assert_eq!(
        fixture::read_tree(&fx.repo),
        fixture::read_tree(&dst),
        "the copy must be byte-identical"
    );

    let listed_at = ended.lock().unwrap().expect("the backup/ listing ended");
    let done = timeline.backup_files_done.lock().unwrap();
    assert!(!done.is_empty());
    let before = done.iter().filter(|t| **t < listed_at).count();
    assert!(
        before * 2 > done.len(),
        "only {before} of {} backup files were copied before the listing ended: transfers must not wait for the whole listing",
        done.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_listing_out_of_key_order_fails_the_stanza_and_publishes_no_backup() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let source: DynProvider = Arc::new(OddListing {
        inner: local(&fx.repo),
        how: Listing::Unsorted,
        backup_listed_at: Default::default(),
    });
    let report = sync_with(source, local(&dst), &fx.stanza, Arc::new(NoProgress)).await;
    let error = report
        .error
        .expect("an unsorted listing must fail the stanza")
        .to_string();
    assert!(
        error.contains("not in ascending key order"),
        "the error must say what is wrong: {error}"
    );
    assert!(manifests_in(&dst).is_empty(), "{:?}", manifests_in(&dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_that_breaks_midway_stops_the_copy_and_publishes_no_backup_until_a_rerun() {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let plan = FailurePlan {
        break_first_list_after: Some(40),
        ..FailurePlan::transient(0)
    };
    let source: DynProvider = Arc::new(FlakyProvider::new(local(&fx.repo), plan));
    let report = sync_with(source, local(&dst), &fx.stanza, Arc::new(NoProgress)).await;
    let error = report
        .error
        .expect("a broken listing must fail the stanza")
        .to_string();
    assert!(error.contains("listing"), "{error}");
    assert!(manifests_in(&dst).is_empty(), "{:?}", manifests_in(&dst));
    assert!(
        report.copied_files < fx.expected.files,
        "{} files copied: the copy must stop with the listing",
        report.copied_files
    );
    // The report still says what had been planned when the listing broke.
    assert!(
        report.planned_files > 0 && report.planned_files <= 40 + 4,
        "{} files planned",
        report.planned_files
    );

    // The next run finishes the job.
    let again = sync_with(
        local(&fx.repo),
        local(&dst),
        &fx.stanza,
        Arc::new(NoProgress),
    )
    .await;
    assert!(again.ok(), "{:?}", again.error);
    assert_eq!(fixture::read_tree(&fx.repo), fixture::read_tree(&dst));
}

/// The fixture and a complete, plain copy of it.
async fn fixture_copied() -> (fixture::Fixture, PathBuf) {
    let fx = fixture::extract();
    let dst = dest_dir(&fx);
    let report = sync_with(
        local(&fx.repo),
        local(&dst),
        &fx.stanza,
        Arc::new(NoProgress),
    )
    .await;
    assert!(report.ok(), "{:?}", report.error);
    (fx, dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validation_names_missing_and_truncated_backup_files_and_missing_wal() {
    let (fx, dst) = fixture_copied().await;
    let dest = local(&dst);
    let summary = cbob_core::sync::validate_destination(&dest, &fx.stanza)
        .await
        .expect("a fresh copy validates");
    assert_eq!(summary.backups, 3);
    assert!(summary.files_checked > 0 && summary.wal_segments > 0);

    // Damage the copy three ways: a backup file gone, one cut short, a WAL segment gone.
    let tree = fixture::read_tree(&dst);
    let mut backup_files = tree
        .keys()
        .filter(|k| k.contains("/pg_data/") && tree[*k].len() > 1);
    let gone = backup_files.next().expect("a backup file").clone();
    let cut = backup_files.next().expect("another backup file").clone();
    // Every WAL segment (a backup needs at least the ones of its own range).
    let wal: Vec<&String> = tree
        .keys()
        .filter(|k| k.starts_with("archive/") && k.matches('/').count() == 4)
        .collect();
    assert!(!wal.is_empty());
    fs::remove_file(dst.join(&gone)).unwrap();
    let bytes = fs::read(dst.join(&cut)).unwrap();
    fs::write(dst.join(&cut), &bytes[..bytes.len() - 1]).unwrap();
    for w in &wal {
        fs::remove_file(dst.join(w)).unwrap();
    }

    let error = cbob_core::sync::validate_destination(&dest, &fx.stanza)
        .await
        .expect_err("a damaged copy must not validate")
        .to_string();
    assert!(error.contains(&format!("{gone} is missing")), "{error}");
    assert!(
        error.contains(&format!("{cut} is {} bytes", bytes.len() - 1)),
        "{error}"
    );
    assert!(
        error.contains("WAL segment") && error.contains("is missing"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validation_needs_only_the_wal_of_listed_backups() {
    let (fx, dst) = fixture_copied().await;

    // The 24-hex segments between each backup's archive start and stop (same log id here).
    let info = fs::read(dst.join(format!("backup/{}/backup.info", fx.stanza))).unwrap();
    let info = cbob_core::repo::BackupInfo::parse(&info).unwrap();
    let mut needed = std::collections::BTreeSet::new();
    for b in &info.backups {
        let (start, stop) = (b.archive_start.unwrap(), b.archive_stop.unwrap());
        assert_eq!((start.timeline, start.log), (stop.timeline, stop.log));
        for seg in start.seg..=stop.seg {
            needed.insert(cbob_core::repo::WalSegment { seg, ..start }.to_string());
        }
    }
    let tree = fixture::read_tree(&dst);
    // Segment files (`<24 hex>-<sha1>.<ext>`), not `.backup` labels or history files.
    let wal: Vec<&String> = tree
        .keys()
        .filter(|k| k.starts_with("archive/") && k.matches('/').count() == 4)
        .filter(|k| k.rsplit('/').next().unwrap().as_bytes().get(24) == Some(&b'-'))
        .collect();
    let segment = |k: &str| k.rsplit('/').next().unwrap()[..24].to_owned();
    let (kept, spare): (Vec<&String>, Vec<&String>) =
        wal.iter().partition(|k| needed.contains(&segment(k)));
    assert!(!kept.is_empty() && !spare.is_empty(), "{needed:?} {wal:?}");

    // WAL no backup needs may go (expire does that): still valid.
    for w in &spare {
        fs::remove_file(dst.join(w)).unwrap();
    }
    let dest = local(&dst);
    let summary = cbob_core::sync::validate_destination(&dest, &fx.stanza)
        .await
        .expect("segments outside every backup's range are not needed");
    assert_eq!(summary.wal_segments, kept.len());

    // One needed segment gone: named, with its backup.
    fs::remove_file(dst.join(kept[0])).unwrap();
    let error = cbob_core::sync::validate_destination(&dest, &fx.stanza)
        .await
        .expect_err("a needed segment is missing")
        .to_string();
    assert!(
        error.contains(&format!("WAL segment {} ", segment(kept[0]))),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validation_holds_only_the_listed_backups_not_unpruned_old_ones() {
    let (fx, dst) = fixture_copied().await;
    let info = fs::read(dst.join(format!("backup/{}/backup.info", fx.stanza))).unwrap();
    let info = cbob_core::repo::BackupInfo::parse(&info).unwrap();
    let backup_dir = format!("backup/{}/", fx.stanza);
    let in_listed_backup = |k: &str| {
        info.backups.iter().any(|b| {
            k.strip_prefix(&backup_dir)
                .and_then(|rest| rest.strip_prefix(b.label.as_str()))
                .is_some_and(|rest| rest.starts_with('/') && !rest.contains("backup.manifest"))
        })
    };
    let tree = fixture::read_tree(&dst);
    let listed_objects = tree.keys().filter(|k| in_listed_backup(k)).count();
    assert!(listed_objects > 0);

    // A backup the source expired but this destination kept (sync never deletes without
    // `--prune`): a whole directory under a label that backup.info no longer lists, one of its
    // files cut short. It is neither held nor checked.
    let newest = &info.backups.last().unwrap().label;
    let stale = "20000101-000000F";
    let mut stale_files = 0;
    for (key, bytes) in &tree {
        let Some(rest) = key.strip_prefix(&format!("{backup_dir}{newest}/")) else {
            continue;
        };
        let path = dst.join(format!("{backup_dir}{stale}/{rest}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let keep = if stale_files == 0 {
            bytes.len() / 2
        } else {
            bytes.len()
        };
        fs::write(&path, &bytes[..keep]).unwrap();
        stale_files += 1;
    }
    assert!(stale_files > 1);

    let summary = cbob_core::sync::validate_destination(&local(&dst), &fx.stanza)
        .await
        .expect("an unlisted backup directory is not part of the check");
    assert_eq!(summary.backups, 3);
    assert_eq!(
        summary.backup_objects, listed_objects,
        "only the listed backups' objects are held"
    );
}
