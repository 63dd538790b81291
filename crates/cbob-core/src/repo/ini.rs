//! pgBackRest's INI dialect (info files and manifests) and its `backrest-checksum`.
//!
//! The dialect, as `iniLoad` in pgBackRest's `src/common/ini.c` reads it: lines split on `\n`,
//! not trimmed; empty lines skipped; `[section]` lines; every other line is `key=<JSON value>`,
//! where the key is the text before the first `=` after which the rest is valid JSON (keys may
//! contain `=`). No comments.
//!
//! The checksum, as `infoNewLoad` in `src/info/info.c` computes it: SHA-1 over a JSON-like
//! rendering built while the lines are read, in file order, skipping `[backrest]
//! backrest-checksum`:
//! `{` then for each key: when the section differs from the previous key's section, `},` (unless
//! first) and `"<section>":{`, else `,`; then the key as a JSON string (escaping only `"`, `\`,
//! `\n`, `\r`, `\t`, `\b`, `\f`), `:`, and the value text exactly as in the file; finally `}}`.
//! The file stores it as lowercase hex in `[backrest] backrest-checksum="<40 hex>"`.

use serde_json::Value;
use sha1::{Digest, Sha1};

use super::error::RepoError;

/// The section and key that hold the checksum; excluded from it.
pub const SECTION_BACKREST: &str = "backrest";
pub const KEY_CHECKSUM: &str = "backrest-checksum";

/// One `key=value` line.
#[derive(Debug, Clone, PartialEq)]
pub struct IniEntry {
    pub key: String,
    /// The value text exactly as in the file (JSON).
    pub raw: String,
    /// The value parsed; integers stay exact (`u64`/`i64`), e.g. `db-system-id` above 2^53.
    pub value: Value,
}

/// A section and its keys in file order. A section that appears twice (pgBackRest writes
/// `[backrest]` first and again at the end for the checksum) is merged into its first place.
#[derive(Debug, Clone, PartialEq)]
pub struct IniSection {
    pub name: String,
    pub entries: Vec<IniEntry>,
}

impl IniSection {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }
}

/// A parsed info file or manifest, with its stored and computed checksums.
#[derive(Debug, Clone, PartialEq)]
pub struct Ini {
    sections: Vec<IniSection>,
    stored_checksum: Option<String>,
    computed_checksum: String,
}

impl Ini {
    /// Parses pgBackRest INI bytes and computes their checksum in the same pass.
    pub fn parse(bytes: &[u8]) -> Result<Ini, RepoError> {
        Self::parse_with(bytes, |_, _, value| Ok(Some(value)))
    }

    /// Computes the checksums only, keeping no entry: for a file that is just passed on.
    pub fn checksums(bytes: &[u8]) -> Result<Ini, RepoError> {
        Self::parse_with(bytes, |_, _, _| Ok(None))
    }

    /// Like [`Ini::parse`], but each entry's value is first offered to `offer(section, key,
    /// value)`: an entry is kept only when `offer` hands the value back. A manifest reader turns
    /// its thousands of `[target:file]` lines into its own records this way, instead of holding
    /// every line as text and JSON too (about 1 KiB per file). The checksum covers every entry.
    pub fn parse_with<F>(bytes: &[u8], mut offer: F) -> Result<Ini, RepoError>
    where
        F: FnMut(&str, &str, Value) -> Result<Option<Value>, RepoError>,
    {
        if bytes.starts_with(b"Salted__") {
            return Err(RepoError::Encrypted {
                file: String::new(),
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| RepoError::format(0, format!("not UTF-8 text: {e}")))?;

        let mut sections: Vec<IniSection> = Vec::new();
        let mut current: Option<usize> = None;
        let mut stored_checksum = None;
        let mut hasher = ChecksumBuilder::new();
        let mut seen: std::collections::HashSet<(usize, &str)> = std::collections::HashSet::new();

        for (idx, line) in text.split('\n').enumerate() {
            let lineno = idx + 1;
            if line.is_empty() {
                continue;
            }
            if line.len() >= 2 && line.starts_with('[') && line.ends_with(']') {
                let name = &line[1..line.len() - 1];
                if name.is_empty() {
                    return Err(RepoError::format(lineno, "empty section name"));
                }
                current = Some(match sections.iter().position(|s| s.name == name) {
                    Some(i) => i,
                    None => {
                        sections.push(IniSection {
                            name: name.to_owned(),
                            entries: Vec::new(),
                        });
                        sections.len() - 1
                    }
                });
                continue;
            }
            let Some(si) = current else {
                return Err(RepoError::format(lineno, "key/value before any [section]"));
            };
            let (key, raw, value) = split_key_value(line, lineno)?;
            let section = &mut sections[si];
            // A set per section: a linear scan made parsing a 20k-file manifest quadratic.
            if !seen.insert((si, key)) {
                return Err(RepoError::format(
                    lineno,
                    format!("duplicate key '{key}' in section [{}]", section.name),
                ));
            }
            if section.name == SECTION_BACKREST && key == KEY_CHECKSUM {
                let Value::String(s) = &value else {
                    return Err(RepoError::format(
                        lineno,
                        "backrest-checksum is not a string",
                    ));
                };
                stored_checksum = Some(s.clone());
            } else {
                hasher.entry(&section.name, key, raw);
            }
            if let Some(value) = offer(&section.name, key, value)? {
                section.entries.push(IniEntry {
                    key: key.to_owned(),
                    raw: raw.to_owned(),
                    value,
                });
            }
        }

        Ok(Ini {
            sections,
            stored_checksum,
            computed_checksum: hasher.finish(),
        })
    }

    pub fn sections(&self) -> &[IniSection] {
        &self.sections
    }

    pub fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The parsed value of `[section] key`.
    pub fn get(&self, section: &str, key: &str) -> Option<&Value> {
        self.section(section)?.get(key)
    }

    /// The checksum the file says it has (`[backrest] backrest-checksum`).
    pub fn stored_checksum(&self) -> Option<&str> {
        self.stored_checksum.as_deref()
    }

    /// The checksum of the content, computed as pgBackRest does (lowercase hex).
    pub fn computed_checksum(&self) -> &str {
        &self.computed_checksum
    }

    /// Fails unless the stored checksum is present and equals the computed one.
    pub fn verify_checksum(&self) -> Result<(), RepoError> {
        match &self.stored_checksum {
            None => Err(RepoError::InfoChecksumMissing {
                file: String::new(),
                found: self.computed_checksum.clone(),
            }),
            Some(stored) if *stored != self.computed_checksum => Err(RepoError::InfoChecksum {
                file: String::new(),
                expected: stored.clone(),
                found: self.computed_checksum.clone(),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// Verifies the `backrest-checksum` of a whole info file or manifest held in memory.
pub fn verify_info_checksum(bytes: &[u8]) -> Result<(), RepoError> {
    Ini::checksums(bytes)?.verify_checksum()
}

/// Splits `key=value` at the first `=` after which the rest parses as JSON, as pgBackRest does.
fn split_key_value(line: &str, lineno: usize) -> Result<(&str, &str, Value), RepoError> {
    let mut search_from = 0;
    let mut last_err = None;
    while let Some(pos) = line[search_from..].find('=').map(|p| p + search_from) {
        let (key, raw) = (&line[..pos], &line[pos + 1..]);
        match serde_json::from_str::<Value>(raw) {
            Ok(value) => {
                if key.is_empty() {
                    return Err(RepoError::format(lineno, "empty key"));
                }
                return Ok((key, raw, value));
            }
            Err(e) => last_err = Some(e),
        }
        search_from = pos + 1;
    }
    Err(RepoError::format(
        lineno,
        match last_err {
            None => format!("missing '=' in {}", clip(line)),
            Some(e) => format!("value is not valid JSON ({e}) in {}", clip(line)),
        },
    ))
}

fn clip(line: &str) -> String {
    let mut s: String = line.chars().take(120).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Builds the checksum incrementally, in file order, exactly like pgBackRest's load callback.
struct ChecksumBuilder {
    sha: Sha1,
    last_section: Option<String>,
}

impl ChecksumBuilder {
    fn new() -> Self {
        let mut sha = Sha1::new();
        sha.update(b"{");
        Self {
            sha,
            last_section: None,
        }
    }

    fn entry(&mut self, section: &str, key: &str, raw: &str) {
        if self.last_section.as_deref() != Some(section) {
            if self.last_section.is_some() {
                self.sha.update(b"},");
            }
            // The section name goes in unescaped; only keys are JSON-escaped.
            self.sha.update(b"\"");
            self.sha.update(section.as_bytes());
            self.sha.update(b"\":{");
            self.last_section = Some(section.to_owned());
        } else {
            self.sha.update(b",");
        }
        self.sha.update(json_string(key).as_bytes());
        self.sha.update(b":");
        self.sha.update(raw.as_bytes());
    }

    fn finish(mut self) -> String {
        self.sha.update(b"}}");
        hex::encode(self.sha.finalize())
    }
}

/// A JSON string as pgBackRest renders it: only `"`, `\`, `\n`, `\r`, `\t`, `\b`, `\f` escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real `archive.info` written by pgBackRest 2.45 (scratch repository generated for cbob).
    pub(crate) const ARCHIVE_INFO: &str = r#"[backrest]
backrest-format=5
backrest-version="2.45"

[db]
db-id=1
db-system-id=7711601516960194028
db-version="15"

[db:history]
1={"db-id":7711601516960194028,"db-version":"15"}

[backrest]
backrest-checksum="3c1cfb16a2482366880065e1df1003be9830e163"
"#;

    /// A real `backup.info` written by pgBackRest 2.45 (full, diff and incr).
    pub(crate) const BACKUP_INFO: &str = r#"[backrest]
backrest-format=5
backrest-version="2.45"

[backup:current]
20261124-051227F={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000003","backup-archive-stop":"000000010000000000000003","backup-error":false,"backup-info-repo-size":6249533,"backup-info-repo-size-delta":6249533,"backup-info-size":38893364,"backup-info-size-delta":38893364,"backup-lsn-start":"0/3000028","backup-lsn-stop":"0/3000100","backup-timestamp-start":1795497147,"backup-timestamp-stop":1795497149,"backup-type":"full","db-id":1,"option-archive-check":true,"option-archive-copy":false,"option-backup-standby":false,"option-checksum-page":true,"option-compress":true,"option-hardlink":false,"option-online":true}
20261124-051227F_20261124-051230D={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000005","backup-archive-stop":"000000010000000000000005","backup-error":false,"backup-info-repo-size":6310907,"backup-info-repo-size-delta":1926179,"backup-info-size":39024436,"backup-info-size-delta":16695562,"backup-lsn-start":"0/5000028","backup-lsn-stop":"0/5000100","backup-prior":"20261124-051227F","backup-reference":["20261124-051227F"],"backup-timestamp-start":1795497150,"backup-timestamp-stop":1795497151,"backup-type":"diff","db-id":1,"option-archive-check":true,"option-archive-copy":false,"option-backup-standby":false,"option-checksum-page":true,"option-compress":true,"option-hardlink":false,"option-online":true}
20261124-051227F_20261124-051232I={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000007","backup-archive-stop":"000000010000000000000007","backup-error":false,"backup-info-repo-size":6343544,"backup-info-repo-size-delta":1800531,"backup-info-size":39106356,"backup-info-size-delta":15974666,"backup-lsn-start":"0/7000028","backup-lsn-stop":"0/7000100","backup-prior":"20261124-051227F_20261124-051230D","backup-reference":["20261124-051227F","20261124-051227F_20261124-051230D"],"backup-timestamp-start":1795497152,"backup-timestamp-stop":1795497154,"backup-type":"incr","db-id":1,"option-archive-check":true,"option-archive-copy":false,"option-backup-standby":false,"option-checksum-page":true,"option-compress":true,"option-hardlink":false,"option-online":true}

[db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7711601516960194028
db-version="15"

[db:history]
1={"db-catalog-version":202209061,"db-control-version":1300,"db-system-id":7711601516960194028,"db-version":"15"}

[backrest]
backrest-checksum="887fbf83fa8538419001116bfb29cb0b4897ac9d"
"#;

    #[test]
    fn entries_taken_while_parsing_still_count_in_the_checksum() {
        let all = Ini::parse(BACKUP_INFO.as_bytes()).unwrap();
        let bare = Ini::checksums(BACKUP_INFO.as_bytes()).unwrap();
        assert!(bare.sections().iter().all(|s| s.entries.is_empty()));
        assert_eq!(bare.computed_checksum(), all.computed_checksum());
        bare.verify_checksum().unwrap();

        let mut taken = Vec::new();
        let some = Ini::parse_with(BACKUP_INFO.as_bytes(), |section, key, value| {
            if section == "backup:current" {
                taken.push(key.to_owned());
                Ok(None)
            } else {
                Ok(Some(value))
            }
        })
        .unwrap();
        assert_eq!(taken.len(), 3);
        assert!(some.section("backup:current").unwrap().entries.is_empty());
        assert_eq!(some.get("db", "db-id"), all.get("db", "db-id"));
        assert_eq!(some.computed_checksum(), all.computed_checksum());
        // Taking entries does not hide damage: the checksum still covers them.
        let damaged =
            BACKUP_INFO.replacen("\"backup-type\":\"full\"", "\"backup-type\":\"diff\"", 1);
        assert!(
            Ini::checksums(damaged.as_bytes())
                .unwrap()
                .verify_checksum()
                .is_err()
        );
    }

    #[test]
    fn real_info_files_verify() {
        verify_info_checksum(ARCHIVE_INFO.as_bytes()).unwrap();
        verify_info_checksum(BACKUP_INFO.as_bytes()).unwrap();
    }

    #[test]
    fn keeps_order_merges_repeated_section_and_exact_integers() {
        let ini = Ini::parse(BACKUP_INFO.as_bytes()).unwrap();
        let names: Vec<_> = ini.sections().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["backrest", "backup:current", "db", "db:history"]);
        let keys: Vec<_> = ini
            .section("backrest")
            .unwrap()
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["backrest-format", "backrest-version", "backrest-checksum"]
        );
        assert_eq!(
            ini.get("db", "db-system-id").unwrap().as_u64(),
            Some(7_711_601_516_960_194_028)
        );
        assert_eq!(ini.get("db", "db-version").unwrap().as_str(), Some("15"));
        let current: Vec<_> = ini
            .section("backup:current")
            .unwrap()
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(current[2], "20261124-051227F_20261124-051232I");
    }

    #[test]
    fn any_change_breaks_the_checksum() {
        // A changed value, a changed key, a dropped line, a reordered line: all detected.
        let edits: [(&str, &str); 4] = [
            (
                "db-catalog-version=202209061",
                "db-catalog-version=202209062",
            ),
            ("db-control-version=1300", "db-contro1-version=1300"),
            ("db-control-version=1300\n", ""),
            (
                "db-catalog-version=202209061\ndb-control-version=1300",
                "db-control-version=1300\ndb-catalog-version=202209061",
            ),
        ];
        for (from, to) in edits {
            let bad = BACKUP_INFO.replacen(from, to, 1);
            let err = verify_info_checksum(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(err, RepoError::InfoChecksum { .. }),
                "{from:?}: {err}"
            );
        }
        // Blank lines are not part of the content.
        verify_info_checksum(BACKUP_INFO.replace("\n\n", "\n\n\n").as_bytes()).unwrap();
    }

    #[test]
    fn missing_checksum_truncation_and_encryption() {
        let cut = &BACKUP_INFO[..BACKUP_INFO.find("[backrest]\nbackrest-checksum").unwrap()];
        let err = verify_info_checksum(cut.as_bytes()).unwrap_err();
        assert!(matches!(err, RepoError::InfoChecksumMissing { .. }));
        let err = verify_info_checksum(&BACKUP_INFO.as_bytes()[..100]).unwrap_err();
        assert!(matches!(err, RepoError::Format { line: 6, .. }), "{err}");
        let err = verify_info_checksum(b"Salted__\x01\x02\x03").unwrap_err();
        assert!(matches!(err, RepoError::Encrypted { .. }));
    }

    #[test]
    fn syntax_errors_say_where() {
        for (text, line) in [
            ("a=1\n", 1),
            ("[s]\nnovalue\n", 2),
            ("[s]\nk=not json\n", 2),
            ("[s]\n=1\n", 2),
            ("[]\n", 1),
            ("[s]\nk=1\nk=2\n", 3),
        ] {
            match Ini::parse(text.as_bytes()).unwrap_err() {
                RepoError::Format { line: l, .. } => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other}"),
            }
        }
    }

    #[test]
    fn keys_with_equals_and_escapes() {
        // A key containing '=' and '"': split where the value becomes valid JSON, escape in the hash.
        let body = "[target:file]\npg_data/a=b\"c={\"size\":0,\"timestamp\":1}\n";
        let ini = Ini::parse(body.as_bytes()).unwrap();
        let e = &ini.section("target:file").unwrap().entries[0];
        assert_eq!(e.key, "pg_data/a=b\"c");
        assert_eq!(e.raw, "{\"size\":0,\"timestamp\":1}");

        let mut sha = Sha1::new();
        sha.update(b"{\"target:file\":{\"pg_data/a=b\\\"c\":{\"size\":0,\"timestamp\":1}}}");
        assert_eq!(ini.computed_checksum(), hex::encode(sha.finalize()));
        assert_eq!(json_string("a/b\t\\"), "\"a/b\\t\\\\\"");
    }
}
