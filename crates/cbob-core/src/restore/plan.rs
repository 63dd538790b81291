//! Which backup to restore and how far to recover.
//!
//! By default: the latest backup in `backup.info` (pgBackRest's own "latest"), recovered to the
//! end of the archive. `--set` picks a backup; `--target-time` recovers to a point in time from
//! the newest backup that finished before it (chosen here, so the choice does not depend on the
//! pgBackRest version).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::repo::{BackupInfo, BackupInfoEntry, BackupLabel};

/// How far recovery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived WAL segment, then promote; cbob then proves the newest one was reached.
    EndOfArchive,
    /// Stop at this time and promote.
    Time(DateTime<Utc>),
}

impl RecoveryTarget {
    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::EndOfArchive => "end of archive".into(),
            RecoveryTarget::Time(t) => format!("time {}", pg_timestamp(t)),
        }
    }
}

/// Parses `--target-time`: RFC 3339 (`2026-11-24T05:24:30Z`), or `YYYY-MM-DD HH:MM:SS[.frac]`
/// with an optional `+HH[:MM]` offset; without an offset the time is UTC.
pub fn parse_target_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(Utc.from_utc_datetime(&n));
        }
    }
    Err(format!(
        "invalid --target-time {text:?}: give e.g. 2026-11-24T05:24:30Z or \"2026-11-24 05:24:30+00\" (UTC when no offset)"
    ))
}

/// The time as PostgreSQL reads it unambiguously: `2026-11-24 05:24:30.5+00`.
pub fn pg_timestamp(t: &DateTime<Utc>) -> String {
    let frac = t.format("%.f").to_string();
    format!("{}{frac}+00", t.format("%Y-%m-%d %H:%M:%S"))
}

/// Picks the backup to restore.
pub fn choose_backup<'a>(
    info: &'a BackupInfo,
    set: Option<&BackupLabel>,
    target: &RecoveryTarget,
) -> Result<&'a BackupInfoEntry, String> {
    let labels = || {
        info.backups
            .iter()
            .map(|b| b.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if info.backups.is_empty() {
        return Err("backup.info lists no backups: nothing to restore (run `cbob sync` after the source has a backup)".into());
    }
    if let Some(label) = set {
        let entry = info.backup(label).ok_or_else(|| {
            format!(
                "backup {label} is not in backup.info (backups: {})",
                labels()
            )
        })?;
        if let RecoveryTarget::Time(t) = target
            && entry.stopped().is_some_and(|s| s > *t)
        {
            return Err(format!(
                "backup {label} finished at {}, after --target-time {}: it cannot recover to an earlier time",
                entry.stopped().map(|s| s.to_rfc3339()).unwrap_or_default(),
                t.to_rfc3339()
            ));
        }
        return Ok(entry);
    }
    match target {
        RecoveryTarget::EndOfArchive => Ok(info.backups.last().expect("not empty")),
        RecoveryTarget::Time(t) => info
            .backups
            .iter()
            .filter(|b| b.stopped().is_some_and(|s| s <= *t))
            .max_by_key(|b| b.timestamp_stop)
            .ok_or_else(|| {
                format!(
                    "no backup finished before --target-time {}; the oldest finished at {}",
                    t.to_rfc3339(),
                    info.backups
                        .iter()
                        .filter_map(BackupInfoEntry::stopped)
                        .min()
                        .map(|s| s.to_rfc3339())
                        .unwrap_or_else(|| "an unknown time".into())
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_time_formats() {
        let want = Utc.with_ymd_and_hms(2026, 11, 24, 5, 24, 30).unwrap();
        for s in [
            "2026-11-24T05:24:30Z",
            "2026-11-24T07:24:30+02:00",
            "2026-11-24 05:24:30",
            "2026-11-24 05:24:30+00",
            "2026-11-24 06:24:30+01:00",
        ] {
            assert_eq!(parse_target_time(s).unwrap(), want, "{s}");
        }
        assert!(
            parse_target_time("yesterday")
                .unwrap_err()
                .contains("--target-time")
        );
        assert_eq!(pg_timestamp(&want), "2026-11-24 05:24:30+00");
    }
}
