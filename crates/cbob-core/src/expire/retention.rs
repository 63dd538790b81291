//! Which backups a full-backup retention expires, as pgBackRest's `repo1-retention-full`
//! (`retention-full-type=count`): keep the newest N full backups; every older full goes, and
//! with it every diff/incr that depends on it (a backup is only restorable with its chain).

use serde::Serialize;

use crate::repo::{BackupInfo, BackupInfoEntry, BackupLabel, BackupType};

/// One backup that retention removes, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiry {
    pub label: String,
    #[serde(rename = "type")]
    pub backup_type: String,
    pub reason: String,
}

/// The full backup a backup's chain starts from: follow `backup-prior`; a chain broken by an
/// unlisted prior falls back to the full label embedded in a diff/incr label.
fn root_full(info: &BackupInfo, entry: &BackupInfoEntry) -> BackupLabel {
    let mut current = entry;
    for _ in 0..=info.backups.len() {
        match &current.prior {
            None if current.backup_type == BackupType::Full => return current.label.clone(),
            Some(p) => match info.backup(p) {
                Some(prior) => current = prior,
                None => break,
            },
            None => break,
        }
    }
    entry.label.full_label()
}

/// The backups retention expires, oldest first (each full before its dependents).
pub fn select_expired(info: &BackupInfo, retention_full: u32) -> Vec<Expiry> {
    let fulls: Vec<&BackupLabel> = info
        .backups
        .iter()
        .filter(|b| b.backup_type == BackupType::Full)
        .map(|b| &b.label)
        .collect();
    let keep = retention_full as usize;
    if fulls.len() <= keep {
        return Vec::new();
    }
    let expired_fulls = &fulls[..fulls.len() - keep];
    let kept_from = fulls[fulls.len() - keep];
    info.backups
        .iter()
        .filter_map(|b| {
            let root = root_full(info, b);
            if !expired_fulls.contains(&&root) {
                return None;
            }
            let reason = if b.backup_type == BackupType::Full {
                format!(
                    "full backup older than the newest {retention_full} (retention-full {retention_full}; the oldest kept is {kept_from})"
                )
            } else {
                format!("{} backup that depends on the expired full backup {root}", b.backup_type)
            };
            Some(Expiry {
                label: b.label.to_string(),
                backup_type: b.backup_type.to_string(),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Ini;

    /// A backup.info with these labels, each diff/incr's prior the label before it.
    fn info(labels: &[&str]) -> BackupInfo {
        let mut body = String::from(
            "[backrest]\nbackrest-format=5\nbackrest-version=\"2.45\"\n\n[backup:current]\n",
        );
        let mut prev: Option<&str> = None;
        for l in labels {
            let label = BackupLabel::parse(l).unwrap();
            let t = label.backup_type();
            let prior = match t {
                BackupType::Full => String::new(),
                _ => format!(",\"backup-prior\":\"{}\"", prev.unwrap()),
            };
            body.push_str(&format!(
                "{l}={{\"backup-type\":\"{t}\",\"db-id\":1{prior}}}\n"
            ));
            prev = Some(l);
        }
        body.push_str("\n[db]\ndb-id=1\ndb-system-id=1\ndb-version=\"15\"\n\n[db:history]\n1={\"db-system-id\":1,\"db-version\":\"15\"}\n");
        let ini = Ini::parse(body.as_bytes()).unwrap();
        BackupInfo::from_ini(&ini).unwrap()
    }

    fn labels(e: &[Expiry]) -> Vec<&str> {
        e.iter().map(|x| x.label.as_str()).collect()
    }

    #[test]
    fn keeps_the_newest_fulls_and_expires_dependents_with_their_full() {
        let i = info(&[
            "20260101-000000F",
            "20260101-000000F_20260102-000000D",
            "20260101-000000F_20260103-000000I",
            "20260104-000000F",
            "20260104-000000F_20260105-000000I",
            "20260106-000000F",
        ]);
        assert!(select_expired(&i, 3).is_empty());
        assert!(select_expired(&i, 4).is_empty());
        let e = select_expired(&i, 2);
        assert_eq!(
            labels(&e),
            [
                "20260101-000000F",
                "20260101-000000F_20260102-000000D",
                "20260101-000000F_20260103-000000I"
            ]
        );
        assert!(
            e[2].reason
                .contains("depends on the expired full backup 20260101-000000F"),
            "{}",
            e[2].reason
        );
        let e = select_expired(&i, 1);
        assert_eq!(e.len(), 5);
        assert!(labels(&e).iter().all(|l| !l.starts_with("20260106")));
    }

    #[test]
    fn a_broken_chain_still_belongs_to_its_full() {
        // The diff's prior is not listed; its label names its full.
        let mut i = info(&[
            "20260101-000000F",
            "20260101-000000F_20260102-000000D",
            "20260104-000000F",
        ]);
        i.backups[1].prior = Some(BackupLabel::parse("20260101-000000F_20260101-120000I").unwrap());
        assert_eq!(
            labels(&select_expired(&i, 1)),
            ["20260101-000000F", "20260101-000000F_20260102-000000D"]
        );
    }
}
