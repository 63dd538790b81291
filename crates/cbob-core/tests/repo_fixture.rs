//! The repository model against real pgBackRest repositories: the committed fixture
//! (`tests/fixtures/pgbackrest-repo.tar.zst`), plus any repositories named in `CBOB_TEST_REPOS`
//! (colon-separated directories, e.g. other compression or bundling variants).
//!
//! Checks: every info file, manifest and history manifest verifies; every manifest file entry's
//! bytes verify against rck/size (bundles in one pass per bundle, and slice by slice); every WAL
//! segment verifies by its name; each backup's WAL range is in the archive; every key classifies;
//! and a flipped byte in each kind of file is detected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use cbob_core::repo::manifest::FileLocation;
use cbob_core::repo::verify::{
    BundleVerifier, InfoVerifier, StreamVerifier, WalVerifier, file_verifier,
};
use cbob_core::repo::{
    ArchiveInfo, BackupInfo, CompressType, Manifest, RepoError, RepoObject, WalFileName,
    WalGeometry, WalSegment, classify,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/pgbackrest-repo.tar.zst"
);
const CHUNK: usize = 64 * 1024;

/// Repository roots to test, and the temp dir keeping the extracted fixture alive.
fn repositories() -> (Vec<PathBuf>, Option<tempfile::TempDir>) {
    let mut roots = Vec::new();
    let mut keep = None;
    if Path::new(FIXTURE).exists() {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(FIXTURE)
            .arg("-C")
            .arg(dir.path())
            .status()
            .expect("run tar (needs tar and zstd installed)");
        assert!(status.success(), "extracting {FIXTURE} failed");
        roots.extend(find_repo_roots(dir.path()));
        assert!(
            !roots.is_empty(),
            "{FIXTURE} holds no pgBackRest repository (no archive/ and backup/)"
        );
        keep = Some(dir);
    }
    if let Ok(extra) = std::env::var("CBOB_TEST_REPOS") {
        roots.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    assert!(
        !roots.is_empty(),
        "no repository to test: {FIXTURE} is missing (generate it with the project's fixture script) \
         and CBOB_TEST_REPOS is not set"
    );
    (roots, keep)
}

fn find_repo_roots(dir: &Path) -> Vec<PathBuf> {
    if dir.join("archive").is_dir() && dir.join("backup").is_dir() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(find_repo_roots(&e.path()));
        }
    }
    out
}

/// Every regular file under `root` as (key, path); symlinks (`latest`) are listed as keys too.
fn walk(root: &Path) -> BTreeMap<String, PathBuf> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                go(root, &path, out);
            } else {
                let key = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(key, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn feed(v: &mut dyn StreamVerifier, bytes: &[u8]) -> Result<(), RepoError> {
    bytes.chunks(CHUNK).try_for_each(|c| v.update(c))
}

fn check(mut v: Box<dyn StreamVerifier>, bytes: &[u8]) -> Result<(), RepoError> {
    feed(v.as_mut(), bytes)?;
    v.finish_boxed()
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

/// What one repository holds, checked.
#[derive(Default, Debug)]
struct Tally {
    info_files: usize,
    manifests: usize,
    history_manifests: usize,
    wal: usize,
    files_checked: usize,
    files_not_stored: usize,
    bundles: usize,
}

fn verify_repository(root: &Path) -> Tally {
    let files = walk(root);
    let read = |key: &str| std::fs::read(&files[key]).unwrap_or_else(|e| panic!("{key}: {e}"));
    let mut t = Tally::default();
    let mut stanzas = BTreeSet::new();
    let mut wal_files: Vec<(String, WalFileName)> = Vec::new();
    let mut stored_keys: BTreeSet<String> = BTreeSet::new();

    // 1. Every key classifies; every small file verifies by its backrest-checksum.
    for key in files.keys() {
        let obj = classify(key);
        if let Some(s) = obj.stanza() {
            stanzas.insert(s.to_owned());
        }
        match &obj {
            RepoObject::Unknown => panic!("{key}: not classified"),
            RepoObject::ArchiveInfo { .. }
            | RepoObject::BackupInfo { .. }
            | RepoObject::Manifest { .. } => {
                let mut v = InfoVerifier::new(key.as_str());
                feed(&mut v, &read(key)).unwrap();
                v.finish().unwrap();
                if matches!(obj, RepoObject::Manifest { .. }) {
                    t.manifests += 1;
                } else {
                    t.info_files += 1;
                }
            }
            RepoObject::HistoryManifest { label, .. } => {
                let mut v = InfoVerifier::gzip(key.as_str());
                feed(&mut v, &read(key)).unwrap();
                let ini = v.finish_ini().unwrap();
                assert_eq!(Manifest::from_ini(&ini).unwrap().label, *label, "{key}");
                t.history_manifests += 1;
            }
            RepoObject::WalSegment { file, .. } => wal_files.push((key.clone(), file.clone())),
            RepoObject::BackupFile { .. } | RepoObject::Bundle { .. } => {
                stored_keys.insert(key.clone());
            }
            RepoObject::TimelineHistory { .. }
            | RepoObject::BackupLabelFile { .. }
            | RepoObject::Temp
            | RepoObject::Latest { .. } => {}
        }
    }
    assert!(!stanzas.is_empty(), "{}: no stanza", root.display());

    for stanza in &stanzas {
        let archive_key = format!("archive/{stanza}/archive.info");
        let archive = ArchiveInfo::parse(&read(&archive_key)).unwrap();
        assert_eq!(
            read(&archive_key),
            read(&format!("{archive_key}.copy")),
            "archive.info and its copy differ"
        );
        let backup_key = format!("backup/{stanza}/backup.info");
        let backup_info = BackupInfo::parse(&read(&backup_key)).unwrap();
        assert_eq!(
            read(&backup_key),
            read(&format!("{backup_key}.copy")),
            "backup.info and its copy differ"
        );
        assert_eq!(archive.current.system_id, backup_info.current.system_id);
        assert!(!backup_info.backups.is_empty(), "{stanza}: no backups");

        // 2. WAL: every segment by its name; the segment size comes from the segments themselves.
        let mut segments = BTreeSet::new();
        let mut geometry = None;
        for (key, name) in wal_files
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("archive/{stanza}/")))
        {
            let mut v = WalVerifier::new(key.as_str(), name, None);
            feed(&mut v, &read(key)).unwrap();
            let s = v.finish_summary().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                s.system_id,
                Some(archive.current.system_id),
                "{key}: WAL of another cluster"
            );
            let g = WalGeometry::for_pg_version(&archive.current.version, s.plain_size).unwrap();
            assert_eq!(*geometry.get_or_insert(g), g, "{key}: segment sizes differ");
            assert_eq!(
                s.page_address,
                Some(name.segment.index(g) * g.segment_size()),
                "{key}"
            );
            segments.insert(name.segment);
            t.wal += 1;
        }
        let geometry = geometry.expect("the archive holds WAL");

        // 3. Backups: manifests, every stored file, WAL ranges.
        for entry in &backup_info.backups {
            let label = &entry.label;
            let manifest =
                Manifest::parse(&read(&format!("backup/{stanza}/{label}/backup.manifest")))
                    .unwrap();
            assert_eq!(&manifest.label, label);
            assert_eq!(manifest.backup_type, entry.backup_type);
            assert_eq!(manifest.archive_start, entry.archive_start);
            assert_eq!(manifest.db.system_id, backup_info.current.system_id);
            assert_eq!(
                read(&format!("backup/{stanza}/{label}/backup.manifest")),
                read(&format!("backup/{stanza}/{label}/backup.manifest.copy"))
            );

            let (start, stop) = (entry.archive_start.unwrap(), entry.archive_stop.unwrap());
            for seg in WalSegment::range_inclusive(start, stop, geometry).unwrap() {
                assert!(
                    segments.contains(&seg),
                    "{label}: WAL {seg} missing from the archive"
                );
            }

            for item in manifest.stored_files(stanza) {
                let (file, loc, fcheck) = item.unwrap();
                match loc {
                    FileLocation::Object { key } => {
                        let bytes = read(key.as_str());
                        check(file_verifier(key.as_str(), &fcheck), &bytes)
                            .unwrap_or_else(|e| panic!("{e}"));
                        stored_keys.remove(key.as_str());
                    }
                    FileLocation::BundleSlice {
                        key,
                        offset,
                        length,
                    } => {
                        // Slice by slice, as a ranged read would deliver it.
                        let bytes = read(key.as_str());
                        let slice = &bytes[offset as usize..(offset + length) as usize];
                        check(
                            file_verifier(format!("{key} ({})", file.name), &fcheck),
                            slice,
                        )
                        .unwrap();
                        stored_keys.remove(key.as_str());
                    }
                    FileLocation::NotStored => unreachable!("stored_files skips these"),
                }
                t.files_checked += 1;
            }
            t.files_not_stored += manifest.files.len() - manifest.stored_files(stanza).count();

            // Whole bundles in one streaming pass.
            for (key, slices) in manifest.bundles(stanza).unwrap() {
                let mut v = BundleVerifier::new(key.as_str(), slices).unwrap();
                feed(&mut v, &read(key.as_str())).unwrap();
                v.finish().unwrap();
                t.bundles += 1;
            }
        }
    }
    assert!(
        stored_keys.is_empty(),
        "backup files no manifest accounts for: {stored_keys:?}"
    );
    assert!(
        t.manifests >= 6 && t.info_files >= 4 && t.wal > 0 && t.files_checked > 0,
        "{t:?}"
    );
    t
}

#[test]
fn every_file_of_real_repositories_verifies() {
    let (roots, _keep) = repositories();
    for root in roots {
        let t = verify_repository(&root);
        eprintln!("{}: {t:?}", root.display());
    }
}

/// One file of each kind, with a byte flipped, must fail its check.
#[test]
fn a_flipped_byte_is_detected_in_every_kind_of_file() {
    let (roots, _keep) = repositories();
    for root in roots {
        let files = walk(&root);
        let read = |key: &str| std::fs::read(&files[key]).unwrap();
        let mut seen = BTreeSet::new();
        for key in files.keys() {
            let obj = classify(key);
            if !matches!(
                obj,
                RepoObject::ArchiveInfo { .. }
                    | RepoObject::BackupInfo { .. }
                    | RepoObject::Manifest { .. }
                    | RepoObject::HistoryManifest { .. }
                    | RepoObject::WalSegment { .. }
            ) {
                continue;
            }
            let bytes = read(key);
            let kind = match &obj {
                RepoObject::ArchiveInfo { .. }
                | RepoObject::BackupInfo { .. }
                | RepoObject::Manifest { .. } => {
                    // A flipped byte may also break the INI syntax: any corruption error will do.
                    let mut v = InfoVerifier::new(key.as_str());
                    feed(&mut v, &flip(&bytes, bytes.len() / 2)).unwrap();
                    let err = v.finish().unwrap_err();
                    assert!(err.is_corruption(), "{key}: {err}");
                    "info"
                }
                RepoObject::HistoryManifest { .. } => {
                    let mut v = InfoVerifier::gzip(key.as_str());
                    let r = feed(&mut v, &flip(&bytes, bytes.len() / 2)).and_then(|()| v.finish());
                    assert!(r.unwrap_err().is_corruption(), "{key}");
                    "history manifest"
                }
                RepoObject::WalSegment { file, .. } => {
                    // bzip2's last byte ends in padding bits no decoder reads: test the one before.
                    let last = bytes.len()
                        - if file.compress == CompressType::Bz2 {
                            2
                        } else {
                            1
                        };
                    for at in [0, bytes.len() / 2, last] {
                        let mut v = WalVerifier::new(key.as_str(), file, None);
                        let r = feed(&mut v, &flip(&bytes, at)).and_then(|()| v.finish());
                        assert!(r.unwrap_err().is_corruption(), "{key} flipped at {at}");
                    }
                    "wal"
                }
                _ => continue,
            };
            seen.insert(kind);
        }

        // Backup files and bundles: through their manifest's checks.
        let info_key = files
            .keys()
            .find(|k| matches!(classify(k), RepoObject::BackupInfo { copy: false, .. }))
            .unwrap();
        let RepoObject::BackupInfo { stanza, .. } = classify(info_key) else {
            unreachable!()
        };
        let backup_info = BackupInfo::parse(&read(info_key)).unwrap();
        for entry in &backup_info.backups {
            let manifest = Manifest::parse(&read(&format!(
                "backup/{stanza}/{}/backup.manifest",
                entry.label
            )))
            .unwrap();
            for item in manifest.stored_files(&stanza).take(50) {
                let (file, loc, fcheck) = item.unwrap();
                let (key, bytes) = match &loc {
                    FileLocation::Object { key } => (key.as_str().to_owned(), read(key.as_str())),
                    FileLocation::BundleSlice {
                        key,
                        offset,
                        length,
                    } => {
                        let b = read(key.as_str());
                        (
                            format!("{key} ({})", file.name),
                            b[*offset as usize..(*offset + *length) as usize].to_vec(),
                        )
                    }
                    FileLocation::NotStored => unreachable!(),
                };
                if bytes.is_empty() {
                    continue;
                }
                let err = check(
                    file_verifier(key.as_str(), &fcheck),
                    &flip(&bytes, bytes.len() / 2),
                )
                .unwrap_err();
                assert!(err.is_corruption(), "{key}: {err}");
                assert!(
                    err.to_string().contains(&key),
                    "error names the file: {err}"
                );
                // Truncated or one byte too many: caught by size.
                assert!(
                    check(
                        file_verifier(key.as_str(), &fcheck),
                        &bytes[..bytes.len() - 1]
                    )
                    .is_err()
                );
                assert!(
                    check(
                        file_verifier(key.as_str(), &fcheck),
                        &[&bytes[..], b"x"].concat()
                    )
                    .is_err()
                );
                seen.insert("backup file");
            }
            for (key, slices) in manifest.bundles(&stanza).unwrap() {
                let bytes = read(key.as_str());
                let mut v = BundleVerifier::new(key.as_str(), slices).unwrap();
                let r = feed(&mut v, &flip(&bytes, bytes.len() / 3)).and_then(|()| v.finish());
                assert!(r.unwrap_err().is_corruption(), "{key}");
                seen.insert("bundle");
            }
        }
        for kind in ["info", "history manifest", "wal", "backup file"] {
            assert!(
                seen.contains(kind),
                "{}: no {kind} was tested",
                root.display()
            );
        }
    }
}
