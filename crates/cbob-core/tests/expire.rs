//! `cbob_core::expire` on a real pgBackRest 2.45 repository with two full backups (full₁,
//! diff₁, full₂, incr₂; bundled, zst; see `two_fulls/`), on the local provider:
//! - retention-full 1 leaves exactly what `pgbackrest expire --repo1-retention-full=1` leaves,
//!   and the result passes `pgbackrest info`/`verify`, `cbob verify` and a restore;
//! - a crash after any single write or delete leaves a repository pgBackRest accepts, and a
//!   re-run finishes the job (a provider that fails every operation after the N-th);
//! - the plan (dry run) says exactly what the run then does, and writes nothing;
//! - a plan is not applied to a `backup.info` that changed since.
//!
//! Also the verify of bundles, slice by slice, since this repository is bundled. The S3
//! destination is covered end to end by the CLI tests (`crates/cbob-cli/tests`).

mod two_fulls;

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;

use cbob_core::expire::{ExpireError, execute_expire, plan_expire};
use cbob_core::repo::rewrite::filter_entries;
use cbob_core::repo::{BackupInfo, FileLocation, Manifest};
use cbob_core::storage::local::{Durability, LocalProvider};
use cbob_core::storage::{
    Body, ByteStream, Capabilities, CheckMode, DynProvider, KeyPrefix, ObjectKey, ObjectMeta,
    PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
};
use cbob_core::verify::{
    BackupStatus, ProblemKind, StanzaVerification, VerifyOptions, verify_stanza,
};
use cbob_test_support::pg;
use two_fulls::STANZA;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The local destination as `cbob expire` opens it: durability by barriers (one `syncfs` each).
/// (With per-write fsync, concurrent deletes in one directory race: see the report.)
fn local(repo: &Path) -> DynProvider {
    Arc::new(LocalProvider::with_durability(repo, Durability::Deferred).unwrap())
}

/// Every regular file under `repo` with its size.
fn tree(repo: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(repo)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.insert(rel, e.metadata().unwrap().len());
            }
        }
    }
    out
}

fn labels_in(repo: &Path) -> Vec<String> {
    let bytes = fs::read(repo.join(format!("backup/{STANZA}/backup.info"))).unwrap();
    BackupInfo::parse(&bytes)
        .unwrap()
        .backups
        .iter()
        .map(|b| b.label.to_string())
        .collect()
}

/// pgBackRest accepts the repository: `info` status ok and `verify` status ok with every backup
/// `info` lists valid. Returns the labels listed.
fn pgbackrest_accepts(repo: &Path) -> Vec<String> {
    cbob_test_support::fixture::make_world_readable(repo);
    let info = pg::pgbackrest_info_json(repo, STANZA);
    assert_eq!(
        info["status"]["code"], 0,
        "pgbackrest info: {}",
        info["status"]
    );
    let labels: Vec<String> = info["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap().to_string())
        .collect();
    let out = pg::pgbackrest(
        repo,
        STANZA,
        &["verify", "--output=text", "--verbose", "--job-retry=0"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: ok"), "pgbackrest verify:\n{text}");
    for l in &labels {
        assert!(
            text.contains(&format!("backup: {l}, status: valid")),
            "{l} not valid:\n{text}"
        );
    }
    labels
}

/// `pgbackrest expire --repo1-retention-full=N`, as the PostgreSQL user (who must own the copy).
fn pgbackrest_expire(repo: &Path, retention: u32) {
    pg::chown_to_pg_user(repo);
    let out = pg::pgbackrest(
        repo,
        STANZA,
        &["expire", &format!("--repo1-retention-full={retention}")],
    );
    assert!(
        out.status.success(),
        "pgbackrest expire: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cbob_verify(repo: &Path) -> StanzaVerification {
    rt().block_on(verify_stanza(&local(repo), STANZA, &VerifyOptions::new(8)))
        .unwrap()
}

#[test]
fn retention_full_1_leaves_what_pgbackrest_expire_leaves_and_it_restores() {
    let theirs = two_fulls::copy();
    let ours = two_fulls::copy();
    let before = labels_in(&ours.repo);
    assert_eq!(before.len(), 4, "{before:?}");
    let (full1, diff1, full2, incr2) = (&before[0], &before[1], &before[2], &before[3]);
    assert!(
        full1.ends_with('F')
            && diff1.ends_with('D')
            && full2.ends_with('F')
            && incr2.ends_with('I')
    );

    pgbackrest_expire(&theirs.repo, 1);

    let dest = local(&ours.repo);
    let audit = Mutex::new(Vec::new());
    let record =
        |action: &str, detail: &str| audit.lock().unwrap().push(format!("{action} {detail}"));
    let started = std::time::Instant::now();
    let (plan, report) = rt().block_on(async {
        let plan = plan_expire(&dest, STANZA, 1).await.unwrap();
        let report = execute_expire(&dest, &plan, &record).await.unwrap();
        (plan, report)
    });
    eprintln!(
        "expire (plan + run) on local: {:.3}s",
        started.elapsed().as_secs_f64()
    );

    let expired: Vec<&str> = plan.expire.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(expired, [full1.as_str(), diff1.as_str()]);
    assert!(
        plan.expire[1]
            .reason
            .contains(&format!("depends on the expired full backup {full1}"))
    );
    assert_eq!(report.expired, expired);
    assert!(report.wrote_info && report.wrote_info_copy);
    assert_eq!(
        report.removed.backups,
        [diff1.clone(), full1.clone()],
        "newest first, as pgBackRest"
    );
    // The dry run said exactly what happened.
    assert_eq!(plan.removal.files, report.removed.files);
    assert_eq!(plan.removal.bytes, report.removed.bytes);
    assert_eq!(plan.removal.actions, report.removed.actions);

    // Same files left as pgBackRest's own expire (backup.info is rewritten by each: compared by content).
    let (t_ours, t_theirs) = (tree(&ours.repo), tree(&theirs.repo));
    assert_eq!(
        t_ours.keys().collect::<Vec<_>>(),
        t_theirs.keys().collect::<Vec<_>>(),
        "cbob expire and pgbackrest expire leave different files"
    );
    for (k, size) in &t_ours {
        if !k.contains("backup.info") {
            assert_eq!(size, &t_theirs[k], "{k}");
        }
    }
    assert_eq!(labels_in(&ours.repo), labels_in(&theirs.repo));
    assert_eq!(
        fs::read(ours.repo.join(format!("backup/{STANZA}/backup.info"))).unwrap(),
        fs::read(ours.repo.join(format!("backup/{STANZA}/backup.info.copy"))).unwrap()
    );

    // One audit line per removal, the new backup.info first.
    let audit = audit.into_inner().unwrap();
    assert!(
        audit[0].starts_with(&format!(
            "write-backup-info backup/{STANZA}/backup.info: without {full1}, {diff1}"
        )),
        "{audit:?}"
    );
    assert!(
        audit[1].starts_with("write-backup-info") && audit[1].contains("backup.info.copy"),
        "{audit:?}"
    );
    assert_eq!(audit[2], format!("expire-backup {STANZA}/{diff1}"));
    assert_eq!(audit[3], format!("expire-backup {STANZA}/{full1}"));
    assert!(
        audit[4].starts_with(&format!("expire-wal {STANZA}/15-1 "))
            && audit[4].contains("files before"),
        "{audit:?}"
    );
    assert_eq!(audit.len(), 5, "{audit:?}");

    assert_eq!(
        pgbackrest_accepts(&ours.repo),
        [full2.clone(), incr2.clone()]
    );
    let v = cbob_verify(&ours.repo);
    assert!(v.ok, "{:#?}", v.problems);
    assert!(v.backups.iter().all(|b| b.restorable));
    assert_eq!(pg::restore_and_query(&ours.repo, STANZA), two_fulls::VALUES);

    // Retention met: a second run has nothing to do.
    let again = rt().block_on(plan_expire(&dest, STANZA, 1)).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

/// A destination that dies after `budget` more writes or deletes: every later one fails, as if
/// the process had been killed there.
#[derive(Debug)]
struct Crash {
    inner: DynProvider,
    budget: AtomicI64,
}

impl Crash {
    fn after(inner: DynProvider, ops: i64) -> DynProvider {
        Arc::new(Self {
            inner,
            budget: AtomicI64::new(ops),
        })
    }

    fn spend(&self, what: &str) -> StorageResult<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) > 0 {
            Ok(())
        } else {
            Err(StorageError::new(
                StorageErrorKind::Other,
                format!("injected crash before {what}"),
            ))
        }
    }
}

#[async_trait]
impl StorageProvider for Crash {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        self.inner.get(key, range).await
    }
    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        self.spend(&format!("writing {key}"))?;
        self.inner.put(key, body, options).await
    }
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.spend(&format!("deleting {key}"))?;
        self.inner.delete(key).await
    }
    async fn barrier(&self) -> StorageResult<()> {
        self.inner.barrier().await
    }
    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        self.inner.check(mode).await
    }
}

#[test]
fn a_crash_after_any_step_leaves_a_repository_pgbackrest_accepts_and_a_rerun_finishes() {
    let c = two_fulls::copy();
    let all = labels_in(&c.repo);
    let kept = all[2..].to_vec();
    let ops = {
        let plan = rt()
            .block_on(plan_expire(&local(&c.repo), STANZA, 1))
            .unwrap();
        plan.removal.files + 2
    };
    let started = std::time::Instant::now();
    let mut states = 0;
    let mut crashes = Vec::new();
    // Each run may do one more write or delete than the last one left off: every state the
    // expire order goes through is visited.
    loop {
        let dest = Crash::after(local(&c.repo), 1);
        let outcome = rt().block_on(async {
            let plan = plan_expire(&dest, STANZA, 1).await?;
            if plan.is_empty() {
                return Ok(None);
            }
            execute_expire(&dest, &plan, &|_: &str, _: &str| {})
                .await
                .map(Some)
        });
        match outcome {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => {
                assert!(e.to_string().contains("injected crash"), "{e}");
                crashes.push(e.to_string());
            }
        }
        states += 1;
        assert!(states < 100, "expire does not converge");
        // pgBackRest accepts this state and lists either every backup or only the kept ones.
        let listed = pgbackrest_accepts(&c.repo);
        assert!(
            listed == all || listed == kept,
            "state {states}: pgBackRest lists {listed:?}"
        );
        // cbob verify too, except for the moment between backup.info and its copy.
        let v = cbob_verify(&c.repo);
        let unexpected: Vec<_> = v
            .problems
            .iter()
            .filter(|p| p.kind != ProblemKind::InfoCopyMismatch)
            .collect();
        assert!(unexpected.is_empty(), "state {states}: {unexpected:#?}");
        assert!(
            v.backups
                .iter()
                .all(|b| b.status == BackupStatus::Valid && b.restorable)
        );
    }
    eprintln!(
        "crash test: {states} states ({} crashes) checked in {:.1}s",
        crashes.len(),
        started.elapsed().as_secs_f64()
    );
    // backup.info, its copy, then every file the plan said: one run per operation, each but the
    // last ending in a crash.
    assert_eq!(states, ops, "{crashes:#?}");
    assert_eq!(crashes.len() as u64, ops - 1);
    assert!(
        crashes.iter().any(|c| c.contains("backup.info.copy")),
        "{crashes:#?}"
    );
    assert!(
        crashes.iter().any(|c| c.contains("backup.manifest.copy")),
        "{crashes:#?}"
    );
    assert_eq!(labels_in(&c.repo), kept);
    let v = cbob_verify(&c.repo);
    assert!(v.ok, "{:#?}", v.problems);
    assert!(v.unlisted_backups.is_empty());
    assert_eq!(pg::restore_and_query(&c.repo, STANZA), two_fulls::VALUES);
}

#[test]
fn a_plan_changes_nothing_and_is_refused_once_backup_info_changed() {
    let c = two_fulls::copy();
    let dest = local(&c.repo);
    let before = tree(&c.repo);
    let plan = rt().block_on(plan_expire(&dest, STANZA, 1)).unwrap();
    assert_eq!(
        tree(&c.repo),
        before,
        "planning (a dry run) wrote or deleted something"
    );
    assert_eq!(plan.listed.len(), 4);
    assert_eq!(plan.expire.len(), 2);
    assert_eq!(plan.removal.backups.len(), 2);
    assert!(plan.removal.wal_files > 0);
    assert!(
        plan.removal
            .actions
            .iter()
            .any(|a| a.starts_with("expire-wal"))
    );
    assert!(plan.write_info && plan.write_info_copy);
    // Two fulls, retention 2: no backup goes, but the WAL from before the first full does, as
    // pgBackRest's own expire removes it.
    let keep2 = rt().block_on(plan_expire(&dest, STANZA, 2)).unwrap();
    assert!(
        keep2.expire.is_empty() && !keep2.write_info && !keep2.write_info_copy,
        "{keep2:?}"
    );
    assert!(keep2.removal.backups.is_empty());
    let theirs = two_fulls::copy();
    let ours = two_fulls::copy();
    pgbackrest_expire(&theirs.repo, 2);
    let d = local(&ours.repo);
    rt().block_on(async {
        let p = plan_expire(&d, STANZA, 2).await.unwrap();
        assert_eq!(p.removal.wal_files, keep2.removal.wal_files);
        execute_expire(&d, &p, &|_: &str, _: &str| {})
            .await
            .unwrap();
    });
    assert_eq!(
        tree(&ours.repo).keys().collect::<Vec<_>>(),
        tree(&theirs.repo).keys().collect::<Vec<_>>(),
        "retention 2: cbob and pgbackrest expire leave different files"
    );
    assert!(matches!(
        rt().block_on(plan_expire(&dest, STANZA, 0)),
        Err(ExpireError::Retention)
    ));

    // Someone rewrites backup.info (a sync adding or pruning a backup) after the plan.
    let bi = c.repo.join(format!("backup/{STANZA}/backup.info"));
    let last = labels_in(&c.repo).pop().unwrap();
    let changed = filter_entries(&fs::read(&bi).unwrap(), |s, k| {
        !(s == "backup:current" && k == last)
    })
    .unwrap();
    fs::write(&bi, &changed).unwrap();
    fs::write(
        c.repo.join(format!("backup/{STANZA}/backup.info.copy")),
        &changed,
    )
    .unwrap();
    let before = tree(&c.repo);
    let err = rt()
        .block_on(execute_expire(&dest, &plan, &|_: &str, _: &str| {}))
        .unwrap_err();
    assert!(matches!(err, ExpireError::Changed { .. }), "{err}");
    assert!(err.to_string().contains("nothing was removed"), "{err}");
    assert_eq!(tree(&c.repo), before);

    let missing = rt().block_on(plan_expire(&dest, "other", 1)).unwrap_err();
    assert!(
        matches!(missing, ExpireError::NoBackupInfo { .. }),
        "{missing}"
    );
}

#[test]
fn verify_checks_bundles_slice_by_slice() {
    let c = two_fulls::copy();
    let v = cbob_verify(&c.repo);
    assert!(v.ok, "{:#?}", v.problems);
    let out = pg::pgbackrest(&c.repo, STANZA, &["verify", "--output=text", "--verbose"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for b in &v.backups {
        let line = format!(
            "backup: {}, status: valid, total files checked: {}, total valid files: {}",
            b.label, b.files.checked, b.files.valid
        );
        assert!(text.contains(&line), "`{line}` not in:\n{text}");
    }

    // Flip a byte inside one file of the second full's first bundle.
    let labels = labels_in(&c.repo);
    let (full2, incr2) = (&labels[2], &labels[3]);
    let mbytes = fs::read(
        c.repo
            .join(format!("backup/{STANZA}/{full2}/backup.manifest")),
    )
    .unwrap();
    let m = Manifest::parse(&mbytes).unwrap();
    let (file, key, offset, length) = m
        .stored_files(STANZA)
        .filter_map(Result::ok)
        .find_map(|(f, loc, _)| match loc {
            FileLocation::BundleSlice {
                key,
                offset,
                length,
            } if length > 100 && key.as_str().ends_with("/bundle/1") => {
                Some((f.name.clone(), key, offset, length))
            }
            _ => None,
        })
        .expect("a bundled file of over 100 bytes");
    let path = c.repo.join(key.as_str());
    let mut bytes = fs::read(&path).unwrap();
    bytes[(offset + length / 2) as usize] ^= 0x55;
    fs::write(&path, bytes).unwrap();

    let v = cbob_verify(&c.repo);
    assert!(!v.ok);
    assert!(
        v.problems
            .iter()
            .all(|p| p.kind == ProblemKind::FileChecksum),
        "{:#?}",
        v.problems
    );
    let f2 = v.backups.iter().find(|b| &b.label == full2).unwrap();
    assert_eq!(
        (f2.files.checksum_invalid, f2.files.valid + 1),
        (1, f2.files.checked),
        "only that slice is bad"
    );
    let p = v.problems_of(full2).next().unwrap();
    assert_eq!(p.key.as_deref(), Some(key.as_str()));
    assert!(
        p.message.contains(&file) && p.message.contains(&format!("bundle offset {offset}")),
        "{}",
        p.message
    );
    // The incr references the full's file when it did not change, and is then invalid too.
    let i2 = v.backups.iter().find(|b| &b.label == incr2).unwrap();
    let incr_uses_it = {
        let ib = fs::read(
            c.repo
                .join(format!("backup/{STANZA}/{incr2}/backup.manifest")),
        )
        .unwrap();
        Manifest::parse(&ib)
            .unwrap()
            .files
            .iter()
            .any(|f| f.name == file && f.reference.is_some())
    };
    assert_eq!(i2.status == BackupStatus::Invalid, incr_uses_it);
    assert_eq!(
        v.backups[0].status,
        BackupStatus::Valid,
        "the first full has its own bundles"
    );
}
