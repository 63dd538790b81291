//! The WAL archive: every segment against the SHA-1 in its name (decompressed on the fly) and
//! the segment size in its own header; duplicates; and continuity per timeline, which
//! `pgbackrest verify` 2.45 computes but never reports as a problem.
//!
//! A gap is a problem when a backup could need the missing WAL: from the oldest listed
//! backup's archive start on. Gaps before it (WAL no listed backup can replay, e.g. while an
//! interrupted expire was removing it) are shown in the report but are not problems.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};

use super::objects::{Category, Outcome, ReadError, Reader};
use super::report::{ArchiveVerification, FileCounts, Problem, ProblemKind, WalGap, WalRange};
use crate::repo::wal::DEFAULT_SEGMENT_SIZE;
use crate::repo::{ArchiveId, RepoObject, WalFileName, WalGeometry, WalSegment, WalVerifier};
use crate::storage::ObjectKey;
use crate::sync::Inventory;

/// What the backups phase needs to know about the archive.
#[derive(Debug, Default)]
pub(super) struct WalIndex {
    /// Per archive id: every archived (non-partial) segment and whether it is usable.
    segments: BTreeMap<String, BTreeMap<WalSegment, Result<(), String>>>,
    geometry: BTreeMap<String, WalGeometry>,
}

impl WalIndex {
    pub(super) fn geometry(&self, archive_id: &ArchiveId) -> WalGeometry {
        self.geometry
            .get(&archive_id.to_string())
            .copied()
            .unwrap_or_else(|| default_geometry(archive_id))
    }

    /// `None`: not archived; `Some(Err)`: archived but unusable.
    pub(super) fn state(&self, archive_id: &str, seg: &WalSegment) -> Option<&Result<(), String>> {
        self.segments.get(archive_id)?.get(seg)
    }
}

fn default_geometry(archive_id: &ArchiveId) -> WalGeometry {
    WalGeometry::for_pg_version(&archive_id.pg_version, DEFAULT_SEGMENT_SIZE).unwrap_or_default()
}

struct SegmentFile {
    archive_id: ArchiveId,
    key: String,
    name: WalFileName,
}

struct Checked {
    file: SegmentFile,
    outcome: Outcome,
    segment_size: Option<u32>,
}

async fn check_segment(reader: &Reader, file: SegmentFile) -> Checked {
    let key = match ObjectKey::new(file.key.as_str()) {
        Ok(k) => k,
        Err(e) => {
            return Checked {
                outcome: Outcome::invalid(Category::Other, format!("{}: {e}", file.key)),
                file,
                segment_size: None,
            };
        }
    };
    // The size comes from the segment's own long page header, which must match its length.
    let mut v = WalVerifier::new(file.key.as_str(), &file.name, None);
    let read = reader.stream(&key, None, |chunk| v.update(chunk)).await;
    let (outcome, segment_size) = match read {
        Ok(n) => {
            reader.observer.file_done(&reader.stanza, &file.key, n);
            match v.finish_summary() {
                Ok(s) => (Outcome::Valid, s.segment_size),
                Err(e) => (Outcome::from_repo(&e), None),
            }
        }
        Err(ReadError::Verify(e)) => (Outcome::from_repo(&e), None),
        Err(e) => (Outcome::from_read(e), None),
    };
    Checked {
        file,
        outcome,
        segment_size,
    }
}

/// Checks every archived WAL segment of the stanza, `concurrency` at a time.
pub(super) async fn verify_archive(
    reader: &Reader,
    inv: &Inventory,
    known_ids: &[ArchiveId],
    oldest_start: &BTreeMap<String, WalSegment>,
    concurrency: usize,
    problems: &mut Vec<Problem>,
) -> (Vec<ArchiveVerification>, WalIndex) {
    let mut files = Vec::new();
    let mut ids: BTreeSet<ArchiveId> = known_ids.iter().cloned().collect();
    for key in inv.keys() {
        if let RepoObject::WalSegment {
            archive_id, file, ..
        } = crate::repo::classify(key)
        {
            ids.insert(archive_id.clone());
            files.push(SegmentFile {
                archive_id,
                key: key.clone(),
                name: file,
            });
        }
    }
    reader.observer.planned(
        &reader.stanza,
        files.len() as u64,
        files.iter().map(|f| inv[&f.key].size).sum(),
    );
    let checked: Vec<Checked> = stream::iter(files)
        .map(|f| check_segment(reader, f))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;

    let mut by_id: BTreeMap<ArchiveId, Vec<Checked>> =
        ids.into_iter().map(|id| (id, Vec::new())).collect();
    for c in checked {
        by_id.entry(c.file.archive_id.clone()).or_default().push(c);
    }
    let mut index = WalIndex::default();
    let mut out = Vec::new();
    for (archive_id, mut segs) in by_id {
        segs.sort_by(|a, b| a.file.key.cmp(&b.file.key));
        let start = oldest_start.get(&archive_id.to_string()).copied();
        out.push(summarise(&archive_id, segs, start, &mut index, problems));
    }
    (out, index)
}

fn summarise(
    archive_id: &ArchiveId,
    segs: Vec<Checked>,
    oldest_start: Option<WalSegment>,
    index: &mut WalIndex,
    problems: &mut Vec<Problem>,
) -> ArchiveVerification {
    let id = archive_id.to_string();
    let mut counts = FileCounts::default();
    let mut sizes: BTreeMap<u32, u64> = BTreeMap::new();
    let mut present: BTreeMap<WalSegment, Vec<(String, Outcome)>> = BTreeMap::new();
    for c in segs {
        counts.checked += 1;
        match &c.outcome {
            Outcome::Valid => counts.valid += 1,
            Outcome::Invalid { category, message } => {
                match category {
                    Category::Missing => counts.missing += 1,
                    Category::Checksum => counts.checksum_invalid += 1,
                    Category::Size => counts.size_invalid += 1,
                    Category::Other => counts.other += 1,
                }
                problems.push(
                    Problem::new(
                        ProblemKind::WalInvalid,
                        format!(
                            "archive {id}: WAL segment {} is unusable: {message}; recovery through it is impossible",
                            c.file.name.segment
                        ),
                    )
                    .archive(&id)
                    .key(&c.file.key),
                );
            }
        }
        if let Some(s) = c.segment_size {
            *sizes.entry(s).or_default() += 1;
        }
        // A `.partial` segment is not found by archive-get under the segment's name, so it does
        // not make the segment available.
        if !c.file.name.partial {
            present
                .entry(c.file.name.segment)
                .or_default()
                .push((c.file.key, c.outcome));
        }
    }

    let segment_size = match sizes.len() {
        0 => None,
        1 => sizes.keys().next().map(|s| u64::from(*s)),
        _ => {
            problems.push(
                Problem::new(
                    ProblemKind::WalInvalid,
                    format!(
                        "archive {id}: segments disagree about the WAL segment size ({}); they cannot all belong to one cluster",
                        sizes
                            .iter()
                            .map(|(s, n)| format!("{n} of {s} bytes"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .archive(&id),
            );
            // The most common size decides the arithmetic below.
            sizes
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(s, _)| u64::from(*s))
        }
    };
    let geometry = segment_size
        .and_then(|s| WalGeometry::for_pg_version(&archive_id.pg_version, s).ok())
        .unwrap_or_else(|| default_geometry(archive_id));
    index.geometry.insert(id.clone(), geometry);

    let mut duplicates = 0;
    let mut states = BTreeMap::new();
    for (seg, files) in &present {
        let state = if files.len() > 1 {
            duplicates += 1;
            let keys: Vec<&str> = files.iter().map(|(k, _)| k.as_str()).collect();
            problems.push(
                Problem::new(
                    ProblemKind::WalDuplicate,
                    format!(
                        "archive {id}: WAL segment {seg} is archived {} times ({}); pgBackRest's archive-get refuses duplicates, \
                         so recovery stops here (were two clusters archiving to this stanza?)",
                        files.len(),
                        keys.join(", ")
                    ),
                )
                .archive(&id),
            );
            Err(format!("archived {} times", files.len()))
        } else {
            match &files[0].1 {
                Outcome::Valid => Ok(()),
                Outcome::Invalid { message, .. } => Err(message.clone()),
            }
        };
        states.insert(*seg, state);
    }

    let (ranges, gaps) = continuity(&present.keys().copied().collect::<Vec<_>>(), geometry);
    for g in gaps
        .iter()
        .filter(|g| gap_matters(g, oldest_start, geometry))
    {
        problems.push(
            Problem::new(
                ProblemKind::WalGap,
                format!(
                    "archive {id}: {} WAL segment(s) missing from {} to {}: recovery cannot cross this gap, so no \
                     point in time after it is reachable from a backup before it (pgbackrest verify 2.45 does not report gaps)",
                    g.segments, g.first_missing, g.last_missing
                ),
            )
            .archive(&id),
        );
    }
    index.segments.insert(id.clone(), states);
    ArchiveVerification {
        archive_id: id,
        segment_size,
        wal: counts,
        duplicates,
        ranges,
        gaps,
    }
}

/// Whether a backup could need WAL of the gap: the archive id has a listed backup, and the gap
/// ends at or after the oldest one's start (later timelines always count).
fn gap_matters(gap: &WalGap, oldest_start: Option<WalSegment>, g: WalGeometry) -> bool {
    let Some(start) = oldest_start else {
        return false;
    };
    let Ok(last) = WalSegment::parse(&gap.last_missing) else {
        return true;
    };
    last.timeline > start.timeline
        || (last.timeline == start.timeline && last.index(g) >= start.index(g))
}

/// Contiguous ranges and the gaps between them, per timeline. `segs` sorted.
fn continuity(segs: &[WalSegment], g: WalGeometry) -> (Vec<WalRange>, Vec<WalGap>) {
    let mut ranges = Vec::new();
    let mut gaps = Vec::new();
    let mut by_tl: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for s in segs {
        by_tl.entry(s.timeline).or_default().push(s.index(g));
    }
    for (tl, mut idx) in by_tl {
        idx.sort_unstable();
        idx.dedup();
        let name = |i: u64| WalSegment::from_index(tl, i, g).name();
        let mut start = idx[0];
        let mut prev = idx[0];
        for &i in &idx[1..] {
            if i != prev + 1 {
                ranges.push(WalRange {
                    start: name(start),
                    stop: name(prev),
                });
                gaps.push(WalGap {
                    first_missing: name(prev + 1),
                    last_missing: name(i - 1),
                    segments: i - prev - 1,
                });
                start = i;
            }
            prev = i;
        }
        ranges.push(WalRange {
            start: name(start),
            stop: name(prev),
        });
    }
    (ranges, gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> WalSegment {
        WalSegment::parse(s).unwrap()
    }

    #[test]
    fn gaps_are_found_per_timeline_and_across_log_ids() {
        let g = WalGeometry::default();
        let segs = [
            seg("000000010000000000000003"),
            seg("000000010000000000000004"),
            seg("000000010000000000000007"),
            seg("0000000100000000000000FF"),
            seg("000000010000000100000000"),
            seg("000000020000000100000000"),
            seg("000000020000000100000001"),
        ];
        let (ranges, gaps) = continuity(&segs, g);
        assert_eq!(
            gaps,
            [
                WalGap {
                    first_missing: "000000010000000000000005".into(),
                    last_missing: "000000010000000000000006".into(),
                    segments: 2
                },
                WalGap {
                    first_missing: "000000010000000000000008".into(),
                    last_missing: "0000000100000000000000FE".into(),
                    segments: 0xFE - 8 + 1
                },
            ]
        );
        assert_eq!(ranges.len(), 4, "{ranges:?}");
        assert_eq!(
            ranges[2].stop, "000000010000000100000000",
            "FF → next log id is contiguous"
        );
        assert_eq!(ranges[3].start, "000000020000000100000000");
    }

    #[test]
    fn only_gaps_a_backup_could_need_are_problems() {
        let g = WalGeometry::default();
        let gap = |a: &str, b: &str| WalGap {
            first_missing: a.into(),
            last_missing: b.into(),
            segments: 1,
        };
        let start = Some(seg("000000010000000000000006"));
        assert!(!gap_matters(
            &gap("000000010000000000000003", "000000010000000000000004"),
            start,
            g
        ));
        assert!(gap_matters(
            &gap("000000010000000000000005", "000000010000000000000006"),
            start,
            g
        ));
        assert!(gap_matters(
            &gap("000000010000000000000009", "000000010000000000000009"),
            start,
            g
        ));
        assert!(gap_matters(
            &gap("000000020000000000000001", "000000020000000000000001"),
            start,
            g
        ));
        assert!(!gap_matters(
            &gap("000000010000000000000009", "000000010000000000000009"),
            None,
            g
        ));
    }
}
