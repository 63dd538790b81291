//! `cbob_core::verify` on the committed real pgBackRest 2.45 fixture (lz4, not bundled; the
//! bundled zst repository is covered in `expire.rs`): a clean copy passes with the same counts
//! `pgbackrest verify` reports, and each kind of damage is found, including the ones
//! `pgbackrest verify` 2.45 misses (shown by running it on the same damaged copy).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cbob_core::repo::rewrite::filter_entries;
use cbob_core::storage::DynProvider;
use cbob_core::storage::local::LocalProvider;
use cbob_core::verify::{
    BackupStatus, ProblemKind, StanzaVerification, VerifyOptions, verify_stanza,
};
use cbob_test_support::fixture::{self, Fixture};
use cbob_test_support::pg;

fn verify(repo: &Path, stanza: &str) -> StanzaVerification {
    let provider: DynProvider = Arc::new(LocalProvider::new(repo).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(verify_stanza(&provider, stanza, &VerifyOptions::new(8)))
        .unwrap()
}

/// `pgbackrest verify --output=text --verbose`: its report (it exits 0 whatever it finds).
fn pgbackrest_verify(fx: &Fixture) -> String {
    let out = pg::pgbackrest(
        &fx.repo,
        &fx.stanza,
        &["verify", "--output=text", "--verbose", "--job-retry=0"],
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn kinds(v: &StanzaVerification) -> Vec<ProblemKind> {
    let mut k: Vec<ProblemKind> = v.problems.iter().map(|p| p.kind).collect();
    k.dedup();
    k
}

fn labels(fx: &Fixture) -> (String, String, String) {
    let b = &fx.expected.backups;
    (b[0].label.clone(), b[1].label.clone(), b[2].label.clone())
}

fn backup_dir(fx: &Fixture, label: &str) -> std::path::PathBuf {
    fx.repo.join("backup").join(&fx.stanza).join(label)
}

fn wal_file(fx: &Fixture, segment: &str) -> std::path::PathBuf {
    let dir = fx
        .repo
        .join("archive")
        .join(&fx.stanza)
        .join(&fx.expected.archive_id)
        .join(&segment[..16]);
    fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with(&format!("{segment}-"))
        })
        .unwrap_or_else(|| panic!("no WAL file for {segment} in {}", dir.display()))
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x55;
    fs::write(path, b).unwrap();
}

#[test]
fn a_clean_copy_passes_with_pgbackrests_counts() {
    let fx = fixture::extract();
    let started = std::time::Instant::now();
    let v = verify(&fx.repo, &fx.stanza);
    let took = started.elapsed();
    assert!(v.ok, "{:#?}", v.problems);
    assert_eq!(v.backups.len(), 3);
    assert!(
        v.backups
            .iter()
            .all(|b| b.status == BackupStatus::Valid && b.restorable)
    );
    assert_eq!(v.archives.len(), 1);
    let a = &v.archives[0];
    assert_eq!(a.archive_id, fx.expected.archive_id);
    assert_eq!(a.segment_size, Some(16 * 1024 * 1024));
    assert_eq!((a.wal.checked, a.wal.valid), (8, 8));
    assert!(a.gaps.is_empty());
    assert_eq!(a.ranges.len(), 1);
    assert_eq!(
        (a.ranges[0].start.as_str(), a.ranges[0].stop.as_str()),
        (fx.expected.wal_min.as_str(), fx.expected.wal_max.as_str())
    );
    assert!(v.unlisted_backups.is_empty());
    assert!(
        v.info_files
            .iter()
            .all(|f| f.state == cbob_core::verify::FileState::Ok)
    );

    // The same files, counted the same way, as pgbackrest verify checks.
    let text = pgbackrest_verify(&fx);
    assert!(text.contains("status: ok"), "{text}");
    for b in &v.backups {
        let line = format!(
            "backup: {}, status: valid, total files checked: {}, total valid files: {}",
            b.label, b.files.checked, b.files.valid
        );
        assert!(
            text.contains(&line),
            "pgbackrest verify does not say `{line}`:\n{text}"
        );
    }
    assert!(
        text.contains("total WAL checked: 8, total valid WAL: 8"),
        "{text}"
    );
    eprintln!(
        "verify of the fixture: {} objects, {} bytes in {:.2}s",
        v.objects_read,
        v.bytes_read,
        took.as_secs_f64()
    );
}

#[test]
fn a_corrupted_backup_file_is_found_in_every_backup_that_uses_it() {
    let fx = fixture::extract();
    let (full, diff, incr) = labels(&fx);
    // PG_VERSION never changes: the diff and the incr reference the full's copy.
    let victim = backup_dir(&fx, &full).join("pg_data/PG_VERSION.lz4");
    flip_byte(&victim, 8);
    let v = verify(&fx.repo, &fx.stanza);
    assert!(!v.ok);
    assert_eq!(kinds(&v), [ProblemKind::FileChecksum], "{:#?}", v.problems);
    for label in [&full, &diff, &incr] {
        let b = v.backups.iter().find(|b| &b.label == label).unwrap();
        assert_eq!(b.status, BackupStatus::Invalid, "{label}");
        assert!(!b.restorable);
        assert_eq!(
            (b.files.checksum_invalid, b.files.valid + 1),
            (1, b.files.checked),
            "{label}"
        );
        let p = v.problems_of(label).next().unwrap();
        assert_eq!(
            p.key.as_deref(),
            Some(format!("backup/{}/{full}/pg_data/PG_VERSION.lz4", fx.stanza).as_str())
        );
        assert!(
            p.message.contains("SHA-1") && p.message.contains("pg_data/PG_VERSION"),
            "{}",
            p.message
        );
    }
    let text = pgbackrest_verify(&fx);
    assert!(
        text.contains("status: error"),
        "pgbackrest finds this one too:\n{text}"
    );
}

#[test]
fn a_missing_backup_file_is_found() {
    let fx = fixture::extract();
    let (_, diff, incr) = labels(&fx);
    // A file the diff copied; the incr references it when it did not change again.
    let dir = backup_dir(&fx, &diff).join("pg_data/global");
    let victim = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.ends_with("pg_control.lz4"))
        .unwrap();
    fs::remove_file(&victim).unwrap();
    let v = verify(&fx.repo, &fx.stanza);
    assert_eq!(kinds(&v), [ProblemKind::FileMissing], "{:#?}", v.problems);
    let d = v.backups.iter().find(|b| b.label == diff).unwrap();
    assert_eq!((d.status, d.files.missing), (BackupStatus::Invalid, 1));
    let full = &v.backups[0];
    assert_eq!(
        full.status,
        BackupStatus::Valid,
        "the full does not use the diff's file"
    );
    let i = v.backups.iter().find(|b| b.label == incr).unwrap();
    // pg_control changes with every backup, so the incr has its own copy.
    assert_eq!(i.status, BackupStatus::Valid);
    let p = v.problems_of(&diff).next().unwrap();
    assert!(
        p.message.contains("pg_control") && p.message.contains("missing"),
        "{}",
        p.message
    );
}

#[test]
fn missing_wal_in_a_backups_range_is_found_where_pgbackrest_verify_says_ok() {
    let fx = fixture::extract();
    let (full, diff, incr) = labels(&fx);
    let needed = &fx.expected.backups[2].wal_start;
    fs::remove_file(wal_file(&fx, needed)).unwrap();
    let v = verify(&fx.repo, &fx.stanza);
    assert!(v.has(ProblemKind::BackupWalMissing), "{:#?}", v.problems);
    assert!(
        v.has(ProblemKind::WalGap),
        "a hole in the archive after the oldest backup"
    );
    let i = v.backups.iter().find(|b| b.label == incr).unwrap();
    assert_eq!(i.status, BackupStatus::Valid, "its files are fine");
    assert!(!i.restorable, "but it cannot be made consistent");
    assert_eq!(i.wal_missing, std::slice::from_ref(needed));
    for l in [&full, &diff] {
        assert!(
            v.backups.iter().find(|b| &b.label == l).unwrap().restorable,
            "{l}"
        );
    }
    let p = v
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::BackupWalMissing)
        .unwrap();
    assert_eq!(p.backup.as_deref(), Some(incr.as_str()));
    assert!(p.message.contains(needed.as_str()), "{}", p.message);

    let text = pgbackrest_verify(&fx);
    assert!(
        text.contains("status: ok"),
        "pgbackrest verify 2.45 misses this (reference/pgbackrest-lab.md §6):\n{text}"
    );
}

#[test]
fn a_missing_backup_directory_is_found_where_pgbackrest_verify_says_ok() {
    let fx = fixture::extract();
    let (_, _, incr) = labels(&fx);
    fs::remove_dir_all(backup_dir(&fx, &incr)).unwrap();
    let v = verify(&fx.repo, &fx.stanza);
    assert_eq!(kinds(&v), [ProblemKind::BackupMissing], "{:#?}", v.problems);
    let i = v.backups.iter().find(|b| b.label == incr).unwrap();
    assert_eq!((i.status, i.restorable), (BackupStatus::Missing, false));
    assert!(
        v.problems[0].message.contains("nothing of it is stored"),
        "{}",
        v.problems[0].message
    );

    let text = pgbackrest_verify(&fx);
    assert!(
        text.contains("status: ok"),
        "pgbackrest verify 2.45 misses this:\n{text}"
    );
}

#[test]
fn info_copies_missing_damaged_or_different_are_found() {
    let fx = fixture::extract();
    let st = &fx.stanza;
    let bi = fx.repo.join(format!("backup/{st}/backup.info"));
    // A valid backup.info.copy (its checksum recomputed) that lists one backup fewer.
    let (_, _, incr) = labels(&fx);
    let other = filter_entries(&fs::read(&bi).unwrap(), |s, k| {
        !(s == "backup:current" && k == incr)
    })
    .unwrap();
    fs::write(fx.repo.join(format!("backup/{st}/backup.info.copy")), other).unwrap();
    let v = verify(&fx.repo, st);
    assert_eq!(
        kinds(&v),
        [ProblemKind::InfoCopyMismatch],
        "{:#?}",
        v.problems
    );
    assert_eq!(
        v.backups.len(),
        3,
        "the main file is used, as pgBackRest does"
    );

    fs::remove_file(fx.repo.join(format!("archive/{st}/archive.info.copy"))).unwrap();
    flip_byte(&bi, 40);
    let v = verify(&fx.repo, st);
    let k = kinds(&v);
    assert!(
        k.contains(&ProblemKind::InfoMissing) && k.contains(&ProblemKind::InfoInvalid),
        "{:#?}",
        v.problems
    );
    let missing = v
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::InfoMissing)
        .unwrap();
    assert_eq!(
        missing.key.as_deref(),
        Some(format!("archive/{st}/archive.info.copy").as_str())
    );
    assert!(
        missing.message.contains("pgBackRest still loads it"),
        "{}",
        missing.message
    );
    let invalid = v
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::InfoInvalid)
        .unwrap();
    assert_eq!(
        invalid.key.as_deref(),
        Some(format!("backup/{st}/backup.info").as_str())
    );
    assert!(
        invalid.message.contains("does not load"),
        "{}",
        invalid.message
    );
    // backup.info is damaged: the copy (listing two backups) is what pgBackRest would use.
    assert_eq!(v.backups.len(), 2);
}

#[test]
fn damaged_or_missing_wal_after_the_last_backup_is_found() {
    let fx = fixture::extract();
    let after = "000000010000000000000009";
    let path = wal_file(&fx, after);
    let len = fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 2);
    let v = verify(&fx.repo, &fx.stanza);
    assert_eq!(kinds(&v), [ProblemKind::WalInvalid], "{:#?}", v.problems);
    assert_eq!(v.archives[0].wal.valid, 7);
    assert!(
        v.backups.iter().all(|b| b.restorable),
        "no backup needs that segment to be consistent"
    );

    fs::remove_file(&path).unwrap();
    let v = verify(&fx.repo, &fx.stanza);
    assert_eq!(kinds(&v), [ProblemKind::WalGap], "{:#?}", v.problems);
    let gap = &v.archives[0].gaps[0];
    assert_eq!((gap.first_missing.as_str(), gap.segments), (after, 1));
    assert_eq!(v.archives[0].ranges.len(), 2);
}

#[test]
fn an_unknown_stanza_is_a_clear_error() {
    let fx = fixture::extract();
    let provider: DynProvider = Arc::new(LocalProvider::new(&fx.repo).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(verify_stanza(&provider, "nope", &VerifyOptions::new(2)))
        .unwrap_err();
    assert!(err.to_string().contains("there is no stanza nope"), "{err}");
    let err = rt
        .block_on(verify_stanza(&provider, "../x", &VerifyOptions::new(2)))
        .unwrap_err();
    assert!(err.to_string().contains("invalid stanza name"), "{err}");
}

#[test]
fn info_reads_the_fixture_natively() {
    use cbob_core::info::read_stanza_info;
    let fx = fixture::extract();
    let provider: DynProvider = Arc::new(LocalProvider::new(&fx.repo).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for detailed in [false, true] {
        let i = rt
            .block_on(read_stanza_info(&provider, &fx.stanza, detailed))
            .unwrap();
        assert_eq!(
            (i.status.as_str(), i.errors.len()),
            ("ok", 0),
            "{:?}",
            i.errors
        );
        assert_eq!(
            i.pg_version.as_deref(),
            Some(fx.expected.pg_version.as_str())
        );
        assert_eq!(i.system_id, Some(fx.expected.system_id));
        assert_eq!(i.archives.len(), 1);
        assert_eq!(
            i.archives[0].min.as_deref(),
            Some(fx.expected.wal_min.as_str())
        );
        assert_eq!(
            i.archives[0].max.as_deref(),
            Some(fx.expected.wal_max.as_str())
        );
        assert_eq!(i.backups.len(), fx.expected.backups.len());
        for (b, e) in i.backups.iter().zip(&fx.expected.backups) {
            assert_eq!(
                (&b.label, &b.backup_type, &b.prior),
                (&e.label, &e.kind, &e.prior)
            );
            assert_eq!(b.wal_start.as_deref(), Some(e.wal_start.as_str()));
            assert_eq!(b.wal_stop.as_deref(), Some(e.wal_stop.as_str()));
            assert!(b.restorable, "{:?}", b.problems);
            assert_eq!(b.detail.is_some(), detailed);
        }
        assert_eq!(i.backups[2].chain.len(), 3);
        if detailed {
            let d = i.backups[0].detail.as_ref().unwrap();
            assert!(d.files > 1000 && d.files_missing == 0 && d.files_wrong_size == 0);
            assert_eq!(i.repo_files, Some(fx.expected.files));
        }
    }
    // Missing WAL of the incr's range: info says so without reading any WAL.
    let needed = &fx.expected.backups[2].wal_start;
    fs::remove_file(wal_file(&fx, needed)).unwrap();
    let i = rt
        .block_on(read_stanza_info(&provider, &fx.stanza, false))
        .unwrap();
    let incr = &i.backups[2];
    assert!(!incr.restorable);
    assert!(
        incr.problems[0].contains(needed.as_str()),
        "{:?}",
        incr.problems
    );
    let err = rt
        .block_on(read_stanza_info(&provider, "nope", false))
        .unwrap_err();
    assert!(err.to_string().contains("there is no stanza nope"), "{err}");
}

#[test]
fn an_encrypted_repository_is_reported_once_not_as_thousands_of_bad_files() {
    let fx = fixture::extract();
    for f in ["backup.info", "backup.info.copy"] {
        let mut bytes = b"Salted__".to_vec();
        bytes.extend_from_slice(&[0x42; 64]);
        fs::write(fx.repo.join(format!("backup/{}/{f}", fx.stanza)), bytes).unwrap();
    }
    let v = verify(&fx.repo, &fx.stanza);
    assert_eq!(kinds(&v), [ProblemKind::Encrypted], "{:#?}", v.problems);
    assert_eq!(v.problems.len(), 1);
    assert!(
        v.problems[0].message.contains("passphrase"),
        "{}",
        v.problems[0].message
    );
}
