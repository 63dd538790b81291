//! Writing info files that pgBackRest did not write: the same file with some entries removed and
//! its `backrest-checksum` recomputed. Used to publish an empty `backup.info` when a stanza first
//! appears at a destination (so the copy is a valid, empty stanza before any backup lands), and
//! by retention to drop expired backups from `[backup:current]`.

use super::error::RepoError;
use super::ini::{Ini, KEY_CHECKSUM, SECTION_BACKREST};

/// Returns `bytes` without the `key=value` lines for which `keep(section, key)` is false; a
/// section left with no entries is removed with its header. Everything else is kept verbatim
/// and the checksum is recomputed. Fails on an encrypted or damaged file (checksum checked first).
pub fn filter_entries(
    bytes: &[u8],
    keep: impl Fn(&str, &str) -> bool,
) -> Result<Vec<u8>, RepoError> {
    Ini::parse(bytes)?.verify_checksum()?;
    let text = std::str::from_utf8(bytes)
        .map_err(|e| RepoError::format(0, format!("not UTF-8 text: {e}")))?;

    // Group lines by section, keeping order, so empty sections can be dropped whole.
    let mut blocks: Vec<(Option<String>, Vec<&str>)> = vec![(None, Vec::new())];
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare.len() >= 2 && bare.starts_with('[') && bare.ends_with(']') {
            blocks.push((Some(bare[1..bare.len() - 1].to_string()), vec![line]));
            continue;
        }
        let (section, lines) = blocks.last_mut().expect("at least one block");
        let drop = match (section, bare.split_once('=')) {
            (Some(s), Some((key, _))) => !keep(s, key),
            _ => false,
        };
        if !drop {
            lines.push(line);
        }
    }
    let mut out = String::with_capacity(text.len());
    for (section, lines) in &blocks {
        let has_entries = lines.iter().any(|l| {
            let b = l.trim_end_matches('\n');
            !(b.is_empty() || b.starts_with('[') && b.ends_with(']'))
        });
        if section.is_some() && !has_entries {
            continue;
        }
        for l in lines {
            out.push_str(l);
        }
    }
    let parsed = Ini::parse(out.as_bytes())?;
    let checksum = parsed.computed_checksum().to_string();
    let old = parsed
        .stored_checksum()
        .ok_or_else(|| RepoError::format(0, "no backrest-checksum to replace"))?
        .to_string();
    let needle = format!("{KEY_CHECKSUM}=\"{old}\"");
    if !out.contains(&needle) {
        return Err(RepoError::format(
            0,
            format!("cannot find the [{SECTION_BACKREST}] checksum line"),
        ));
    }
    let out = out.replacen(&needle, &format!("{KEY_CHECKSUM}=\"{checksum}\""), 1);
    Ini::parse(out.as_bytes())?.verify_checksum()?;
    Ok(out.into_bytes())
}

/// `backup.info` as it is right after `stanza-create`: the same database history, no backups.
pub fn empty_backup_info(bytes: &[u8]) -> Result<Vec<u8>, RepoError> {
    filter_entries(bytes, |section, _| section != "backup:current")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::BackupInfo;
    use crate::repo::ini::tests::BACKUP_INFO;

    #[test]
    fn empty_backup_info_keeps_history_and_verifies() {
        let full = BackupInfo::parse(BACKUP_INFO.as_bytes()).unwrap();
        assert!(!full.backups.is_empty());
        let empty = empty_backup_info(BACKUP_INFO.as_bytes()).unwrap();
        let parsed = BackupInfo::parse(&empty).unwrap();
        assert!(parsed.backups.is_empty());
        assert_eq!(parsed.history, full.history);
        assert_eq!(parsed.current, full.current);
        assert!(
            !String::from_utf8(empty)
                .unwrap()
                .contains("[backup:current]")
        );
    }

    #[test]
    fn drops_chosen_entries_only() {
        let full = BackupInfo::parse(BACKUP_INFO.as_bytes()).unwrap();
        let first = full.backups[0].label.to_string();
        let out = filter_entries(BACKUP_INFO.as_bytes(), |s, k| {
            !(s == "backup:current" && k == first)
        })
        .unwrap();
        let parsed = BackupInfo::parse(&out).unwrap();
        assert_eq!(parsed.backups.len(), full.backups.len() - 1);
        assert!(parsed.backups.iter().all(|b| b.label.as_str() != first));
    }

    #[test]
    fn refuses_a_damaged_file() {
        let damaged = BACKUP_INFO.replace("db-id=1", "db-id=2");
        assert!(empty_backup_info(damaged.as_bytes()).is_err());
    }
}
