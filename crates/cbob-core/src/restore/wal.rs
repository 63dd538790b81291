//! Proving recovery used the whole archive.
//!
//! PostgreSQL ends recovery quietly at the first WAL segment `restore_command` cannot fetch (a
//! missing or corrupt segment) and promotes with less data; `pgbackrest verify` does not see a
//! missing segment either (reference/pgbackrest-lab.md §6, §7.11). So restore-check checks twice:
//!
//! 1. before starting the server, from the archive listing: every segment from the backup's
//!    start to the newest archived segment on the recovery path is present ([`plan`]);
//! 2. after promotion, from the new timeline's history file: the switch point (where replay
//!    ended) lies in that newest segment ([`check_end`]).
//!
//! Recovery follows the newest timeline (`recovery_target_timeline=latest`): segments of each
//! older timeline up to the segment holding its switch point, then the next timeline's.

use std::collections::BTreeSet;

use crate::repo::{ArchiveId, Lsn, RepoObject, WalGeometry, WalSegment, classify};

/// What the archive of one archive id holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveContents {
    /// Complete segments (`.partial` ones are not used by recovery).
    pub segments: BTreeSet<WalSegment>,
    /// Timelines with a `.history` file.
    pub histories: BTreeSet<u32>,
}

impl ArchiveContents {
    /// From repository keys (relative to the repository root) of `stanza`'s `archive_id`.
    pub fn from_keys<'a>(
        keys: impl IntoIterator<Item = &'a str>,
        stanza: &str,
        archive_id: &ArchiveId,
    ) -> Self {
        let mut c = Self::default();
        for key in keys {
            match classify(key) {
                RepoObject::WalSegment {
                    stanza: s,
                    archive_id: id,
                    file,
                } if s == stanza && &id == archive_id && !file.partial => {
                    c.segments.insert(file.segment);
                }
                RepoObject::TimelineHistory {
                    stanza: s,
                    archive_id: id,
                    timeline,
                } if s == stanza && &id == archive_id => {
                    c.histories.insert(timeline);
                }
                _ => {}
            }
        }
        c
    }

    /// The newest timeline in the archive (what `recovery_target_timeline=latest` follows).
    pub fn newest_timeline(&self) -> Option<u32> {
        let seg = self.segments.iter().map(|s| s.timeline).max();
        let hist = self.histories.iter().copied().max();
        seg.max(hist)
    }
}

/// One line of a timeline history file: the parent timeline and where it was left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent: u32,
    pub switch: Lsn,
    pub reason: String,
}

/// Parses a `0000000N.history` file (`<parent tli>\t<switch lsn>\t<reason>` lines, `#` comments).
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, char::is_whitespace);
        let bad = || format!("unexpected timeline history line {line:?}");
        let parent = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let switch: Lsn = parts
            .next()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(bad)?;
        out.push(HistoryEntry {
            parent,
            switch,
            reason: parts.next().unwrap_or("").trim().to_string(),
        });
    }
    Ok(out)
}

/// The last segment of the parent timeline that holds WAL before the switch point (PostgreSQL's
/// `pg_walfile_name(switch)`: a switch at a segment boundary belongs to the previous segment).
pub fn switch_segment(entry: &HistoryEntry, geometry: WalGeometry) -> WalSegment {
    WalSegment::containing(
        entry.parent,
        Lsn(entry.switch.0.saturating_sub(1)),
        geometry,
    )
}

/// The WAL recovery from a backup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPlan {
    /// The timeline recovery ends on.
    pub target_timeline: u32,
    /// Segments from the backup's start to the newest on the recovery path.
    pub required: u64,
    /// Those not in the archive, oldest first.
    pub missing: Vec<WalSegment>,
    /// The newest segment on the recovery path (where recovery must end).
    pub archive_max: Option<WalSegment>,
}

/// Works out which segments recovery from a backup (`start..=stop`) needs and which are missing.
/// `target_history` is the history file of the archive's newest timeline when that is newer
/// than the backup's.
pub fn plan(
    start: WalSegment,
    stop: WalSegment,
    archive: &ArchiveContents,
    target_history: Option<&[HistoryEntry]>,
    geometry: WalGeometry,
) -> Result<WalPlan, String> {
    let target = archive
        .newest_timeline()
        .unwrap_or(start.timeline)
        .max(start.timeline);
    // (timeline, first segment index, end index exclusive or None = up to the newest present)
    let mut ranges: Vec<(u32, u64, Option<u64>)> = Vec::new();
    if target == start.timeline {
        ranges.push((target, start.index(geometry), None));
    } else {
        let history = target_history.ok_or_else(|| {
            format!("the archive has WAL of timeline {target} but no {target:08X}.history file")
        })?;
        let mut from = start.index(geometry);
        let mut on_path = false;
        for e in history {
            if e.parent == start.timeline {
                on_path = true;
            }
            if !on_path {
                continue;
            }
            let end = WalSegment::containing(e.parent, e.switch, geometry).index(geometry);
            if end < from {
                return Err(format!(
                    "the backup starts at {start}, after timeline {} ended at {}: recovery to the newest timeline {target} cannot use it",
                    e.parent, e.switch
                ));
            }
            ranges.push((e.parent, from, Some(end)));
            from = end;
        }
        if !on_path {
            return Err(format!(
                "the backup is on timeline {}, which is not an ancestor of the archive's newest timeline {target}",
                start.timeline
            ));
        }
        ranges.push((target, from, None));
    }

    let mut required = 0;
    let mut missing = Vec::new();
    let mut archive_max = None;
    let stop_index = stop.index(geometry);
    for (i, (tli, from, end)) in ranges.iter().enumerate() {
        let end = match end {
            Some(e) => *e,
            None => {
                let newest = archive
                    .segments
                    .iter()
                    .filter(|s| s.timeline == *tli)
                    .map(|s| s.index(geometry) + 1)
                    .max()
                    .unwrap_or(*from);
                // The backup's own WAL is needed even if the archive has none of it.
                if i == 0 {
                    newest.max(stop_index + 1)
                } else {
                    newest
                }
            }
        };
        for idx in *from..end.max(*from) {
            let seg = WalSegment::from_index(*tli, idx, geometry);
            required += 1;
            if !archive.segments.contains(&seg) {
                missing.push(seg);
            }
            archive_max = Some(seg);
        }
    }
    Ok(WalPlan {
        target_timeline: target,
        required,
        missing,
        archive_max,
    })
}

/// After an end-of-archive recovery: did replay reach the newest archived segment? `end` is the
/// last line of the new timeline's history file.
pub fn check_end(
    plan: &WalPlan,
    end: &HistoryEntry,
    geometry: WalGeometry,
) -> Result<String, String> {
    let reached = switch_segment(end, geometry);
    let Some(max) = plan.archive_max else {
        return Ok(format!("recovery ended in {reached}"));
    };
    if end.parent != max.timeline {
        return Err(format!(
            "recovery ended on timeline {} (in {reached}) but the archive's newest WAL {max} is on timeline {}",
            end.parent, max.timeline
        ));
    }
    if reached < max {
        return Err(format!(
            "recovery stopped in WAL segment {reached}, but the archive holds segments up to {max}: \
             {} is missing or unreadable, and PostgreSQL ends recovery silently at the first segment it cannot fetch",
            reached.next(geometry)
        ));
    }
    Ok(format!(
        "recovery replayed through {reached}, the newest archived segment"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> WalSegment {
        s.parse().unwrap()
    }

    fn contents(segs: &[&str], histories: &[u32]) -> ArchiveContents {
        ArchiveContents {
            segments: segs.iter().map(|s| seg(s)).collect(),
            histories: histories.iter().copied().collect(),
        }
    }

    fn g() -> WalGeometry {
        WalGeometry::default()
    }

    #[test]
    fn complete_archive_one_timeline() {
        let a = contents(
            &[
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
            ],
            &[],
        );
        let p = plan(
            seg("000000010000000000000003"),
            seg("000000010000000000000003"),
            &a,
            None,
            g(),
        )
        .unwrap();
        assert_eq!(p.required, 3);
        assert!(p.missing.is_empty());
        assert_eq!(p.archive_max, Some(seg("000000010000000000000005")));
    }

    #[test]
    fn gap_is_found_and_crosses_log_boundaries() {
        let a = contents(
            &[
                "0000000100000000000000FE",
                "000000010000000100000000",
                "000000010000000100000001",
            ],
            &[],
        );
        let p = plan(
            seg("0000000100000000000000FE"),
            seg("0000000100000000000000FE"),
            &a,
            None,
            g(),
        )
        .unwrap();
        assert_eq!(p.missing, vec![seg("0000000100000000000000FF")]);
        assert_eq!(p.required, 4);
    }

    #[test]
    fn backup_wal_missing_entirely() {
        let a = contents(&[], &[]);
        let p = plan(
            seg("000000010000000000000007"),
            seg("000000010000000000000008"),
            &a,
            None,
            g(),
        )
        .unwrap();
        assert_eq!(p.missing.len(), 2);
    }

    #[test]
    fn follows_the_newest_timeline() {
        // Timeline 2 branched from 1 at 0/5800000 (inside segment 05): 1's 03, 04 and 2's 05, 06.
        let a = contents(
            &[
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000020000000000000005",
                "000000020000000000000006",
            ],
            &[2],
        );
        let hist = parse_history("1\t0/5800000\tno recovery target specified\n").unwrap();
        let p = plan(
            seg("000000010000000000000003"),
            seg("000000010000000000000003"),
            &a,
            Some(&hist),
            g(),
        )
        .unwrap();
        assert_eq!(p.target_timeline, 2);
        assert!(p.missing.is_empty(), "{:?}", p.missing);
        assert_eq!(p.required, 4);
        assert_eq!(p.archive_max, Some(seg("000000020000000000000006")));
        // Without the history file the plan cannot be made.
        assert!(
            plan(
                seg("000000010000000000000003"),
                seg("000000010000000000000003"),
                &a,
                None,
                g()
            )
            .is_err()
        );
    }

    #[test]
    fn end_check() {
        let a = contents(
            &["000000010000000000000009", "00000001000000000000000A"],
            &[],
        );
        let p = plan(
            seg("000000010000000000000009"),
            seg("000000010000000000000009"),
            &a,
            None,
            g(),
        )
        .unwrap();
        let at = |lsn: &str| HistoryEntry {
            parent: 1,
            switch: lsn.parse().unwrap(),
            reason: "no recovery target specified".into(),
        };
        // Switch at the boundary after 0A: reached.
        check_end(&p, &at("0/B000000"), g()).unwrap();
        // Switch inside 0A: reached too.
        check_end(&p, &at("0/A0001F0"), g()).unwrap();
        // Stopped at the end of 09: 0A missing or unreadable.
        let e = check_end(&p, &at("0/A000000"), g()).unwrap_err();
        assert!(
            e.contains("stopped in WAL segment 000000010000000000000009"),
            "{e}"
        );
        assert!(
            e.contains("00000001000000000000000A is missing or unreadable"),
            "{e}"
        );
    }

    #[test]
    fn history_parsing() {
        let h = parse_history("# comment\n1\t0/3000000\tno recovery target specified\n\n2\t0/9000000\tbefore 2026-11-24 05:24:30+00\n").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent, 2);
        assert_eq!(h[1].reason, "before 2026-11-24 05:24:30+00");
        assert!(parse_history("garbage line").is_err());
    }
}
