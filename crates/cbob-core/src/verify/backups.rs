//! Every backup `backup.info` lists: that it is stored at all (pgbackrest verify 2.45 silently
//! skips a deleted directory), its manifest and copy, every file against `rck`/size (bundles
//! slice by slice), the backups it depends on, and its WAL range (which 2.45 does not check).
//!
//! Backups go oldest first, one at a time, so only one manifest is in memory; a file shared by
//! several backups (diff/incr `reference`) is read once and its verdict reused.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::FutureExt;
use futures::stream::{self, StreamExt};

use super::archive::WalIndex;
use super::objects::{Category, Outcome, Reader, Slice};
use super::pairs::{PairKind, load_pair};
use super::report::{BackupStatus, BackupVerification, FileCounts, Problem, ProblemKind};
use crate::repo::{
    BackupInfo, BackupInfoEntry, FileCheck, FileLocation, Manifest, RepoObject, WalSegment,
    classify,
};
use crate::storage::ObjectKey;
use crate::sync::Inventory;

/// Verdicts already reached in this run, so shared files are read once.
#[derive(Default)]
pub(super) struct Verdicts {
    objects: HashMap<String, Outcome>,
    slices: HashMap<(String, u64), Outcome>,
}

/// Work for one backup: whole objects and bundle slices not yet checked.
#[derive(Default)]
struct Work {
    objects: BTreeMap<String, (String, FileCheck)>,
    bundles: BTreeMap<String, Vec<Slice>>,
}

fn stored_len(check: &FileCheck) -> u64 {
    match check {
        FileCheck::Stored { size, .. } | FileCheck::SizeOnly { size } => *size,
        FileCheck::Content { stored_size, .. } => *stored_size,
        FileCheck::Nothing => 0,
    }
}

/// Labels of backup directories present in the listing.
pub(super) fn stored_labels(inv: &Inventory) -> BTreeSet<String> {
    inv.keys()
        .filter_map(|k| match classify(k) {
            RepoObject::Manifest { label, .. }
            | RepoObject::BackupFile { label, .. }
            | RepoObject::Bundle { label, .. } => Some(label.to_string()),
            _ => None,
        })
        .collect()
}

/// Checks one listed backup.
#[allow(clippy::too_many_arguments)]
pub(super) async fn verify_backup(
    reader: &Reader,
    stanza: &str,
    info: &BackupInfo,
    entry: &BackupInfoEntry,
    inv: &Inventory,
    stored: &BTreeSet<String>,
    wal: &WalIndex,
    verdicts: &mut Verdicts,
    concurrency: usize,
    problems: &mut Vec<Problem>,
) -> BackupVerification {
    let label = entry.label.to_string();
    let first_problem = problems.len();
    let mut result = BackupVerification {
        label: label.clone(),
        backup_type: entry.backup_type.to_string(),
        prior: entry.prior.as_ref().map(ToString::to_string),
        status: BackupStatus::Invalid,
        restorable: false,
        files: FileCounts::default(),
        bytes_read: 0,
        wal_start: entry.archive_start.map(|s| s.name()),
        wal_stop: entry.archive_stop.map(|s| s.name()),
        wal_segments: 0,
        wal_missing: Vec::new(),
        wal_invalid: Vec::new(),
        problems: 0,
    };

    let references_ok = check_references(info, entry, problems);
    let wal_ok = check_wal_range(info, entry, wal, &mut result, problems);

    if !stored.contains(&label) {
        problems.push(
            Problem::new(
                ProblemKind::BackupMissing,
                format!(
                    "backup {label} is listed in backup.info but nothing of it is stored under backup/{stanza}/{label}/: \
                     it cannot be restored (pgbackrest verify 2.45 does not notice a missing backup directory)"
                ),
            )
            .backup(&label),
        );
        result.status = BackupStatus::Missing;
        result.problems = problems.len() - first_problem;
        return result;
    }

    let pair = load_pair(reader, &format!("backup/{stanza}/{label}/backup.manifest")).await;
    problems.extend(pair.problems(PairKind::Manifest { label: &label }));
    let manifest = pair
        .bytes
        .as_ref()
        .and_then(|bytes| match Manifest::parse(bytes) {
            Ok(m) if m.label == entry.label => Some(m),
            Ok(m) => {
                problems.push(
                Problem::new(
                    ProblemKind::ManifestInvalid,
                    format!(
                        "the manifest in backup/{stanza}/{label}/ describes backup {}, not {label}",
                        m.label
                    ),
                )
                .backup(&label),
            );
                None
            }
            Err(e) => {
                problems.push(
                    Problem::new(
                        ProblemKind::ManifestInvalid,
                        format!("backup {label}: the manifest does not parse: {e}"),
                    )
                    .backup(&label),
                );
                None
            }
        });

    if let Some(manifest) = manifest {
        let (counts, read) = verify_files(
            reader,
            stanza,
            &label,
            &manifest,
            inv,
            verdicts,
            concurrency,
            problems,
        )
        .await;
        result.files = counts;
        result.bytes_read = read;
        if counts.all_valid() {
            result.status = BackupStatus::Valid;
        }
    }
    result.restorable = result.status == BackupStatus::Valid && wal_ok && references_ok;
    result.problems = problems.len() - first_problem;
    result
}

/// Every backup this one depends on must be listed too.
fn check_references(
    info: &BackupInfo,
    entry: &BackupInfoEntry,
    problems: &mut Vec<Problem>,
) -> bool {
    let label = entry.label.to_string();
    let mut ok = true;
    for r in entry.reference.iter().chain(entry.prior.iter()) {
        if r != &entry.label && info.backup(r).is_none() {
            ok = false;
            problems.push(
                Problem::new(
                    ProblemKind::ReferenceMissing,
                    format!(
                        "backup {label} depends on backup {r}, which backup.info does not list: pgBackRest will not restore \
                         a backup whose chain is incomplete"
                    ),
                )
                .backup(&label),
            );
        }
    }
    ok
}

/// Every segment from archive-start to archive-stop must be archived and valid.
fn check_wal_range(
    info: &BackupInfo,
    entry: &BackupInfoEntry,
    wal: &WalIndex,
    result: &mut BackupVerification,
    problems: &mut Vec<Problem>,
) -> bool {
    let label = entry.label.to_string();
    let (Some(start), Some(stop)) = (entry.archive_start, entry.archive_stop) else {
        // An offline backup is consistent without WAL.
        return true;
    };
    let Some(db) = info.db_of(entry) else {
        problems.push(
            Problem::new(
                ProblemKind::InfoInvalid,
                format!(
                    "backup {label} was taken from database history id {}, which backup.info's [db:history] does not have",
                    entry.db_id
                ),
            )
            .backup(&label),
        );
        return false;
    };
    let archive_id = db.archive_id();
    let id = archive_id.to_string();
    let geometry = wal.geometry(&archive_id);
    let range: Vec<WalSegment> = match WalSegment::range_inclusive(start, stop, geometry) {
        Ok(r) => r.collect(),
        Err(e) => {
            problems.push(
                Problem::new(
                    ProblemKind::InfoInvalid,
                    format!("backup {label}: its WAL range in backup.info is impossible: {e}"),
                )
                .backup(&label),
            );
            return false;
        }
    };
    result.wal_segments = range.len() as u64;
    for seg in range {
        match wal.state(&id, &seg) {
            Some(Ok(())) => {}
            Some(Err(why)) => result.wal_invalid.push(format!("{seg}: {why}")),
            None => result.wal_missing.push(seg.name()),
        }
    }
    if !result.wal_missing.is_empty() {
        problems.push(
            Problem::new(
                ProblemKind::BackupWalMissing,
                format!(
                    "backup {label} needs WAL {start}..{stop} (archive {id}) to be consistent, but {} segment(s) are not archived: {}; \
                     a restore of it fails at startup (pgbackrest verify 2.45 does not check this)",
                    result.wal_missing.len(),
                    result.wal_missing.join(", ")
                ),
            )
            .backup(&label)
            .archive(&id),
        );
    }
    if !result.wal_invalid.is_empty() {
        problems.push(
            Problem::new(
                ProblemKind::BackupWalInvalid,
                format!(
                    "backup {label} needs WAL {start}..{stop} (archive {id}) to be consistent, but {} segment(s) are unusable: {}",
                    result.wal_invalid.len(),
                    result.wal_invalid.join("; ")
                ),
            )
            .backup(&label)
            .archive(&id),
        );
    }
    result.wal_missing.is_empty() && result.wal_invalid.is_empty()
}

/// One file's verdict, decided from the listing alone when possible (missing, wrong size,
/// nothing to hash), else `None`: it must be read.
fn from_listing(inv: &Inventory, key: &str, name: &str, check: &FileCheck) -> Option<Outcome> {
    let expected = stored_len(check);
    match inv.get(key) {
        None => Some(Outcome::invalid(
            Category::Missing,
            format!("{name}: {key} is missing"),
        )),
        Some(m) if m.size != expected => Some(Outcome::invalid(
            Category::Size,
            format!(
                "{name}: {key} is {} bytes, the manifest says {expected}",
                m.size
            ),
        )),
        Some(_) if matches!(check, FileCheck::SizeOnly { .. }) => Some(Outcome::Valid),
        Some(_) => None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn verify_files(
    reader: &Reader,
    stanza: &str,
    label: &str,
    manifest: &Manifest,
    inv: &Inventory,
    verdicts: &mut Verdicts,
    concurrency: usize,
    problems: &mut Vec<Problem>,
) -> (FileCounts, u64) {
    // Decide what needs reading.
    let mut work = Work::default();
    let mut files: Vec<(String, Lookup)> = Vec::new();
    for item in manifest.stored_files(stanza) {
        let (file, loc, check) = match item {
            Ok(x) => x,
            Err(e) => {
                files.push((
                    String::new(),
                    Lookup::Now(Outcome::invalid(Category::Other, e.to_string())),
                ));
                continue;
            }
        };
        let name = file.name.clone();
        match loc {
            FileLocation::Object { key } => {
                let key = key.to_string();
                if !verdicts.objects.contains_key(&key) {
                    if let Some(o) = from_listing(inv, &key, &name, &check) {
                        verdicts.objects.insert(key.clone(), o);
                    } else {
                        work.objects
                            .entry(key.clone())
                            .or_insert((name.clone(), check));
                    }
                }
                files.push((name, Lookup::Object(key)));
            }
            FileLocation::BundleSlice {
                key,
                offset,
                length,
            } => {
                let key = key.to_string();
                let id = (key.clone(), offset);
                if !verdicts.slices.contains_key(&id) {
                    match inv.get(&key) {
                        None => {
                            verdicts.slices.insert(
                                id.clone(),
                                Outcome::invalid(
                                    Category::Missing,
                                    format!("{name}: bundle {key} is missing"),
                                ),
                            );
                        }
                        Some(m) if m.size < offset + length => {
                            verdicts.slices.insert(
                                id.clone(),
                                Outcome::invalid(
                                    Category::Size,
                                    format!(
                                        "{name}: bundle {key} is {} bytes, too short for this file at {offset}+{length}",
                                        m.size
                                    ),
                                ),
                            );
                        }
                        Some(_) => {
                            let slices = work.bundles.entry(key.clone()).or_default();
                            if !slices.iter().any(|s| s.offset == offset) {
                                slices.push(Slice {
                                    name: name.clone(),
                                    offset,
                                    length,
                                    check,
                                });
                            }
                        }
                    }
                }
                files.push((name, Lookup::Slice(id)));
            }
            FileLocation::NotStored => {}
        }
    }

    // Read it, `concurrency` objects at a time.
    let planned: u64 = work.objects.len() as u64 + work.bundles.len() as u64;
    reader.observer.planned(
        &reader.stanza,
        planned,
        work.objects
            .keys()
            .chain(work.bundles.keys())
            .filter_map(|k| inv.get(k).map(|m| m.size))
            .sum(),
    );
    enum Done {
        Object(String, Outcome, u64),
        Bundle(String, Vec<(Slice, Outcome)>, u64),
    }
    let jobs = work
        .objects
        .into_iter()
        .map(|(key, (name, check))| {
            let r = reader.clone();
            async move {
                let k = match ObjectKey::new(key.as_str()) {
                    Ok(k) => k,
                    Err(e) => {
                        return Done::Object(
                            key,
                            Outcome::invalid(Category::Other, e.to_string()),
                            0,
                        );
                    }
                };
                let (o, n) = r.check_object(&k, &format!("{name} ({key})"), &check).await;
                Done::Object(key, o, n)
            }
            .boxed()
        })
        .chain(work.bundles.into_iter().map(|(key, slices)| {
            let r = reader.clone();
            async move {
                let k = match ObjectKey::new(key.as_str()) {
                    Ok(k) => k,
                    Err(e) => {
                        let o = Outcome::invalid(Category::Other, e.to_string());
                        return Done::Bundle(
                            key,
                            slices.into_iter().map(|s| (s, o.clone())).collect(),
                            0,
                        );
                    }
                };
                let (res, n) = r.check_slices(&k, slices).await;
                Done::Bundle(key, res, n)
            }
            .boxed()
        }));
    let done: Vec<Done> = stream::iter(jobs)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut read = 0;
    for d in done {
        match d {
            Done::Object(key, o, n) => {
                read += n;
                verdicts.objects.insert(key, o);
            }
            Done::Bundle(key, res, n) => {
                read += n;
                for (s, o) in res {
                    verdicts.slices.insert((key.clone(), s.offset), o);
                }
            }
        }
    }

    // Count in pgBackRest's categories, one problem per bad file. Zero-length files of a
    // bundled backup are stored nowhere (restore creates them empty): valid, as pgBackRest
    // counts them.
    let not_stored = manifest.files.len().saturating_sub(files.len()) as u64;
    let mut counts = FileCounts {
        checked: not_stored,
        valid: not_stored,
        ..FileCounts::default()
    };
    for (name, lookup) in files {
        counts.checked += 1;
        let outcome = match &lookup {
            Lookup::Now(o) => Some(o),
            Lookup::Object(key) => verdicts.objects.get(key),
            Lookup::Slice(id) => verdicts.slices.get(id),
        };
        let key = match &lookup {
            Lookup::Object(k) | Lookup::Slice((k, _)) => Some(k.clone()),
            Lookup::Now(_) => None,
        };
        let (kind, message) = match outcome {
            Some(Outcome::Valid) => {
                counts.valid += 1;
                continue;
            }
            Some(Outcome::Invalid { category, message }) => {
                let kind = match category {
                    Category::Missing => {
                        counts.missing += 1;
                        ProblemKind::FileMissing
                    }
                    Category::Checksum => {
                        counts.checksum_invalid += 1;
                        ProblemKind::FileChecksum
                    }
                    Category::Size => {
                        counts.size_invalid += 1;
                        ProblemKind::FileSize
                    }
                    Category::Other => {
                        counts.other += 1;
                        ProblemKind::FileOther
                    }
                };
                (kind, message.clone())
            }
            None => {
                counts.other += 1;
                (ProblemKind::FileOther, format!("{name}: not checked"))
            }
        };
        let mut p = Problem::new(
            kind,
            format!("backup {label}: {message}; a restore of this backup fails"),
        )
        .backup(label);
        if let Some(k) = key {
            p = p.key(k);
        }
        problems.push(p);
    }
    (counts, read)
}

/// Where a manifest file's verdict is.
enum Lookup {
    Now(Outcome),
    Object(String),
    Slice((String, u64)),
}
