//! `backup.manifest`: what a backup holds, and where each file's bytes live in the repository.
//!
//! Where a file lives (pgBackRest `backupFileRepoPath`, and `verify.c`'s rules):
//! - in the backup named by its `reference`, else in this backup;
//! - with a bundle id (`bni`): inside `backup/<stanza>/<label>/bundle/<bni>` at offset `bno`
//!   (0 when absent) for `repo-size` bytes;
//! - else `backup/<stanza>/<label>/<name>` plus `.pgbi` for block incremental files (`bim`), or
//!   the manifest's compression extension (`option-compress-type`) otherwise;
//! - zero-length files of a bundled backup (`backup-bundle=true`) are not stored at all: restore
//!   creates them empty. Without bundling they are stored like any file (a compressed empty
//!   stream, e.g. 15 bytes of lz4 frame).
//!
//! What to check: `rck` (2.44+) is the SHA-1 of the stored bytes and `repo-size` their length;
//! without `rck`, `checksum`/`size` describe the original content, which is also the stored bytes
//! when nothing filtered them (no compression, no cipher). `repo-size` defaults to `size`;
//! `checksum` of a zero-length file is the SHA-1 of nothing.

use std::collections::BTreeMap;

use super::compress::CompressType;
use super::error::RepoError;
use super::fields::Fields;
use super::ini::Ini;
use super::layout::{BackupLabel, BackupType};
use super::wal::{Lsn, WalSegment};
use crate::storage::ObjectKey;

/// SHA-1 of zero bytes: pgBackRest's checksum for every empty file.
pub const SHA1_EMPTY: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

/// Extension of block incremental files.
pub const BLOCK_INCR_EXT: &str = ".pgbi";

/// The section listing the backup's files.
const SECTION_FILES: &str = "target:file";

/// The cluster a backup was taken from (`[backup:db]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestDb {
    pub id: u32,
    pub version: String,
    pub system_id: u64,
    pub catalog_version: Option<u32>,
    pub control_version: Option<u32>,
}

/// One `[target:file]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path in the backup, e.g. `pg_data/base/1/1259` or `pg_tblspc/16385/PG_15_.../1/16386`.
    pub name: String,
    /// Original size.
    pub size: u64,
    /// Size as stored in the repository (defaults to `size`).
    pub repo_size: u64,
    /// SHA-1 of the original content (absent in a partial manifest; SHA-1 of nothing when empty).
    pub checksum: Option<String>,
    /// SHA-1 of the stored bytes (`rck`, pgBackRest 2.44+, only when a filter changed the bytes).
    pub repo_checksum: Option<String>,
    /// The prior backup holding the bytes, when this backup did not copy the file.
    pub reference: Option<BackupLabel>,
    /// Bundle id (`bni`) and offset (`bno`).
    pub bundle_id: Option<u64>,
    pub bundle_offset: u64,
    /// Block incremental map size (`bim`): the file is stored as `<name>.pgbi`.
    pub block_incr_map_size: Option<u64>,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Where a manifest file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// A whole object.
    Object { key: ObjectKey },
    /// A slice of a bundle object.
    BundleSlice {
        key: ObjectKey,
        offset: u64,
        length: u64,
    },
    /// Nowhere: a zero-length file of a bundled backup.
    NotStored,
}

/// How a manifest file's bytes can be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// SHA-1 and length of the stored bytes.
    Stored { sha1: String, size: u64 },
    /// Decompress, then SHA-1 and length of the content; the stored length is known too.
    Content {
        compress: CompressType,
        sha1: String,
        size: u64,
        stored_size: u64,
    },
    /// Only the stored length (encrypted without `rck`, or no checksum recorded).
    SizeOnly { size: u64 },
    /// Nothing is stored, so nothing to check.
    Nothing,
}

/// A file stored in a bundle, for checking a whole bundle object as it streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSlice {
    pub name: String,
    pub offset: u64,
    pub check: FileCheck,
}

/// A parsed `backup.manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub label: BackupLabel,
    pub backup_type: BackupType,
    pub prior: Option<BackupLabel>,
    /// Every backup this one's files may live in, including itself.
    pub reference: Vec<BackupLabel>,
    pub archive_start: Option<WalSegment>,
    pub archive_stop: Option<WalSegment>,
    pub lsn_start: Option<Lsn>,
    pub lsn_stop: Option<Lsn>,
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
    /// Compression of the backup's files (`option-compress-type`; older manifests: gz if compressed).
    pub compress: CompressType,
    /// `backup-bundle`.
    pub bundle: bool,
    /// `backup-block-incr`.
    pub block_incr: bool,
    /// A `[cipher] cipher-pass` is present: files are encrypted.
    pub cipher: bool,
    pub db: ManifestDb,
    /// `[target:file]` entries in file order.
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// Parses and verifies the checksum. `[target:file]` lines become [`ManifestFile`]s as they
    /// are read, so a manifest of many files is never held as text and JSON as well.
    pub fn parse(bytes: &[u8]) -> Result<Self, RepoError> {
        let mut files = Vec::new();
        let mut bad_file = None;
        let ini = Ini::parse_with(bytes, |section, key, value| {
            if section != SECTION_FILES {
                return Ok(Some(value));
            }
            // Kept for after the checksum: a damaged manifest is reported as damaged.
            match parse_file(key, &value) {
                Ok(f) => files.push(f),
                Err(e) => {
                    bad_file.get_or_insert(e);
                }
            }
            Ok(None)
        })?;
        ini.verify_checksum()?;
        if let Some(e) = bad_file {
            return Err(e);
        }
        Self::build(&ini, files)
    }

    /// Reads the model from an already parsed file (checksum not checked here).
    pub fn from_ini(ini: &Ini) -> Result<Self, RepoError> {
        let mut files = Vec::new();
        if let Some(section) = ini.section(SECTION_FILES) {
            files.reserve(section.entries.len());
            for e in &section.entries {
                files.push(parse_file(&e.key, &e.value)?);
            }
        }
        Self::build(ini, files)
    }

    /// The model from the other sections, with the files already read.
    fn build(ini: &Ini, files: Vec<ManifestFile>) -> Result<Self, RepoError> {
        let b = Fields::section(ini, "backup")?;
        let label = BackupLabel::parse(b.str("backup-label")?)?;
        let type_name = b.str("backup-type")?;
        let backup_type = BackupType::from_name(type_name).ok_or_else(|| {
            RepoError::format(0, format!("[backup] unknown backup-type {type_name:?}"))
        })?;

        let o = Fields::section(ini, "backup:option")?;
        let compress = match o.opt_str("option-compress-type")? {
            Some(name) => CompressType::from_name(name).ok_or_else(|| {
                RepoError::format(
                    0,
                    format!("[backup:option] unknown option-compress-type {name:?}"),
                )
            })?,
            // Before compress-type existed, compression meant gzip.
            None if o.bool_or("option-compress", false)? => CompressType::Gz,
            None => CompressType::None,
        };

        let d = Fields::section(ini, "backup:db")?;
        let db = ManifestDb {
            id: d.u32("db-id")?,
            version: d.str("db-version")?.to_owned(),
            system_id: d.u64("db-system-id")?,
            catalog_version: d.opt_u32("db-catalog-version")?,
            control_version: d.opt_u32("db-control-version")?,
        };

        Ok(Self {
            label,
            backup_type,
            prior: b.opt_label("backup-prior")?,
            reference: b.labels("backup-reference")?,
            archive_start: b.opt_wal("backup-archive-start")?,
            archive_stop: b.opt_wal("backup-archive-stop")?,
            lsn_start: b.opt_lsn("backup-lsn-start")?,
            lsn_stop: b.opt_lsn("backup-lsn-stop")?,
            timestamp_start: b.opt_i64("backup-timestamp-start")?.unwrap_or(0),
            timestamp_stop: b.opt_i64("backup-timestamp-stop")?.unwrap_or(0),
            compress,
            bundle: b.bool_or("backup-bundle", false)?,
            block_incr: b.bool_or("backup-block-incr", false)?,
            cipher: ini.get("cipher", "cipher-pass").is_some(),
            db,
            files,
        })
    }

    /// The label whose directory holds a file's bytes.
    pub fn file_label<'a>(&'a self, file: &'a ManifestFile) -> &'a BackupLabel {
        file.reference.as_ref().unwrap_or(&self.label)
    }

    /// Where a file's bytes are, as a key relative to the repository root.
    pub fn file_location(
        &self,
        stanza: &str,
        file: &ManifestFile,
    ) -> Result<FileLocation, RepoError> {
        if file.size == 0 && self.bundle {
            return Ok(FileLocation::NotStored);
        }
        let base = format!("backup/{stanza}/{}", self.file_label(file));
        let key = |k: String| {
            ObjectKey::new(k).map_err(|e| RepoError::invalid_name(&file.name, e.to_string()))
        };
        Ok(match file.bundle_id {
            Some(id) => FileLocation::BundleSlice {
                key: key(format!("{base}/bundle/{id}"))?,
                offset: file.bundle_offset,
                length: file.repo_size,
            },
            None => {
                let ext = if file.block_incr_map_size.is_some() {
                    BLOCK_INCR_EXT
                } else {
                    self.compress.extension()
                };
                FileLocation::Object {
                    key: key(format!("{base}/{}{ext}", file.name))?,
                }
            }
        })
    }

    /// How a file's stored bytes can be checked.
    pub fn file_check(&self, file: &ManifestFile) -> FileCheck {
        if file.size == 0 && self.bundle {
            return FileCheck::Nothing;
        }
        if let Some(rck) = &file.repo_checksum {
            return FileCheck::Stored {
                sha1: rck.clone(),
                size: file.repo_size,
            };
        }
        let Some(sha1) = file.checksum.clone() else {
            return FileCheck::SizeOnly {
                size: file.repo_size,
            };
        };
        if self.cipher || file.block_incr_map_size.is_some() {
            FileCheck::SizeOnly {
                size: file.repo_size,
            }
        } else if self.compress == CompressType::None {
            FileCheck::Stored {
                sha1,
                size: file.size,
            }
        } else {
            FileCheck::Content {
                compress: self.compress,
                sha1,
                size: file.size,
                stored_size: file.repo_size,
            }
        }
    }

    /// Every stored file with its location and check, skipping files that are not stored.
    pub fn stored_files<'a>(
        &'a self,
        stanza: &'a str,
    ) -> impl Iterator<Item = Result<(&'a ManifestFile, FileLocation, FileCheck), RepoError>> + 'a
    {
        self.files
            .iter()
            .filter_map(move |f| match self.file_location(stanza, f) {
                Err(e) => Some(Err(e)),
                Ok(FileLocation::NotStored) => None,
                Ok(loc) => Some(Ok((f, loc, self.file_check(f)))),
            })
    }

    /// The bundle objects this manifest's files live in (its own and referenced ones), each with
    /// its slices in offset order.
    pub fn bundles(
        &self,
        stanza: &str,
    ) -> Result<BTreeMap<ObjectKey, Vec<BundleSlice>>, RepoError> {
        let mut out: BTreeMap<ObjectKey, Vec<BundleSlice>> = BTreeMap::new();
        for item in self.stored_files(stanza) {
            let (file, loc, check) = item?;
            if let FileLocation::BundleSlice { key, offset, .. } = loc {
                out.entry(key).or_default().push(BundleSlice {
                    name: file.name.clone(),
                    offset,
                    check,
                });
            }
        }
        for slices in out.values_mut() {
            slices.sort_by_key(|s| s.offset);
        }
        Ok(out)
    }
}

fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_file(name: &str, value: &serde_json::Value) -> Result<ManifestFile, RepoError> {
    let f = Fields::object(value, format!("[target:file] {name}"))?;
    let size = f.u64("size")?;
    let sha1 = |key: &str| -> Result<Option<String>, RepoError> {
        match f.opt_str(key)? {
            Some(s) if !is_sha1_hex(s) => Err(RepoError::format(
                0,
                format!("[target:file] {name}: {key} {s:?} is not a SHA-1 in lowercase hex"),
            )),
            other => Ok(other.map(str::to_owned)),
        }
    };
    let checksum = if size == 0 {
        Some(SHA1_EMPTY.to_owned())
    } else {
        sha1("checksum")?
    };
    Ok(ManifestFile {
        name: name.to_owned(),
        size,
        repo_size: f.opt_u64("repo-size")?.unwrap_or(size),
        checksum,
        repo_checksum: sha1("rck")?,
        reference: f.opt_label("reference")?,
        bundle_id: f.opt_u64("bni")?.filter(|id| *id != 0),
        bundle_offset: f.opt_u64("bno")?.unwrap_or(0),
        block_incr_map_size: f.opt_u64("bim")?.filter(|m| *m != 0),
        timestamp: f.opt_i64("timestamp")?.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest made of real 2.45 lines (zst, bundled incr backup), with a checksum recomputed
    /// for the excerpt.
    fn excerpt(bundle: bool, compress: &str) -> Vec<u8> {
        with_checksum(&format!(
            r#"[backrest]
backrest-format=5
backrest-version="2.45"

[backup]
backup-archive-start="00000001000000000000001A"
backup-archive-stop="00000001000000000000001A"
backup-bundle={bundle}
backup-label="20261124-051237F_20261124-051242I"
backup-lsn-start="0/1A00028"
backup-lsn-stop="0/1A00100"
backup-prior="20261124-051237F_20261124-051239D"
backup-reference="20261124-051237F,20261124-051237F_20261124-051239D,20261124-051237F_20261124-051242I"
backup-timestamp-copy-start=1795497164
backup-timestamp-start=1795497162
backup-timestamp-stop=1795497164
backup-type="incr"

[backup:db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7711601562008653966
db-version="15"

[backup:option]
option-compress=true
option-compress-type="{compress}"

[target:file]
pg_data/PG_VERSION={{"bni":1,"bno":2589272,"checksum":"587b596f04f7db9c2cad3d6b87dd2b3a05de4f35","rck":"c763f3304da14f884b9fd5d320f41e8a2a8d0eb4","reference":"20261124-051237F","repo-size":12,"size":3,"timestamp":1795497155}}
pg_data/backup_label={{"checksum":"52339a585bc6e86dc8b5d6188fc38371102956ae","rck":"290118ecf3a7bdd29ec0410a3f5fb46937c5ebf4","repo-size":188,"size":258,"timestamp":1795497164}}
pg_data/base/1/112={{"bni":2,"checksum":"f56975ecb9d89a2211031550df91f4de2efe67b0","checksum-page":true,"rck":"81d416468d6c435deacdcec9cc53887cc6094e29","reference":"20261124-051237F","repo-size":57,"size":8192,"timestamp":1795497155}}
pg_data/base/1/13394={{"checksum-page":true,"size":0,"timestamp":1795497155}}
pg_data/global/pg_control={{"checksum":"1d4b0a5bd06e4b6c36e24b9a3c8e0d56cbf2f3ad","size":8192,"timestamp":1795497155}}

[target:file:default]
group="postgres"
mode="0600"
user="postgres"
"#
        ))
    }

    /// `body` (a manifest without its checksum line) with the checksum pgBackRest would write.
    fn with_checksum(body: &str) -> Vec<u8> {
        let ini = Ini::parse(body.as_bytes()).unwrap();
        format!(
            "{body}\n[backrest]\nbackrest-checksum=\"{}\"\n",
            ini.computed_checksum()
        )
        .into_bytes()
    }

    #[test]
    fn reading_files_while_parsing_gives_the_same_model() {
        for (bundle, compress) in [(true, "zst"), (false, "lz4"), (false, "none")] {
            let bytes = excerpt(bundle, compress);
            let streamed = Manifest::parse(&bytes).unwrap();
            let ini = Ini::parse(&bytes).unwrap();
            assert_eq!(streamed, Manifest::from_ini(&ini).unwrap());
            assert_eq!(streamed.files.len(), 5);
        }
    }

    #[test]
    fn a_damaged_manifest_is_reported_as_damaged_before_its_entries() {
        let body = String::from_utf8(excerpt(true, "zst")).unwrap();
        let body = &body[..body.find("\n[backrest]\nbackrest-checksum").unwrap()];
        let damaged = body.replace("\"rck\":\"c763", "\"rck\":\"C763");
        // The stored checksum no longer matches: that is the error, not the bad field.
        let stale = format!(
            "{damaged}\n[backrest]\nbackrest-checksum=\"{}\"\n",
            Ini::parse(&excerpt(true, "zst"))
                .unwrap()
                .computed_checksum()
        );
        assert!(matches!(
            Manifest::parse(stale.as_bytes()),
            Err(RepoError::InfoChecksum { .. })
        ));
        // A consistent checksum over the bad field: the field is the error.
        match Manifest::parse(&with_checksum(&damaged)) {
            Err(RepoError::Format { message, .. }) => {
                assert!(message.contains("pg_data/PG_VERSION"), "{message}");
            }
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn parses_header_and_files() {
        let m = Manifest::parse(&excerpt(true, "zst")).unwrap();
        assert_eq!(m.label.as_str(), "20261124-051237F_20261124-051242I");
        assert_eq!(m.backup_type, BackupType::Incr);
        assert_eq!(
            m.prior.as_ref().unwrap().as_str(),
            "20261124-051237F_20261124-051239D"
        );
        assert_eq!(m.reference.len(), 3);
        assert_eq!(m.archive_start.unwrap().name(), "00000001000000000000001A");
        assert_eq!(m.compress, CompressType::Zst);
        assert!(m.bundle && !m.cipher && !m.block_incr);
        assert_eq!(m.db.system_id, 7_711_601_562_008_653_966);
        assert_eq!(m.files.len(), 5);
        assert_eq!(m.files[2].bundle_offset, 0, "bno absent means offset 0");
        assert_eq!(m.files[3].checksum.as_deref(), Some(SHA1_EMPTY));
        assert_eq!(m.files[4].repo_size, 8192, "repo-size defaults to size");
    }

    #[test]
    fn locations_follow_pgbackrest_rules() {
        let m = Manifest::parse(&excerpt(true, "zst")).unwrap();
        let loc = |i: usize| m.file_location("st", &m.files[i]).unwrap();
        assert_eq!(
            loc(0),
            FileLocation::BundleSlice {
                key: ObjectKey::new("backup/st/20261124-051237F/bundle/1").unwrap(),
                offset: 2_589_272,
                length: 12
            }
        );
        assert_eq!(
            loc(1),
            FileLocation::Object {
                key: ObjectKey::new(
                    "backup/st/20261124-051237F_20261124-051242I/pg_data/backup_label.zst"
                )
                .unwrap()
            }
        );
        assert_eq!(
            loc(3),
            FileLocation::NotStored,
            "empty files of a bundled backup are not stored"
        );
        assert_eq!(m.file_check(&m.files[3]), FileCheck::Nothing);
        assert_eq!(
            m.file_check(&m.files[0]),
            FileCheck::Stored {
                sha1: "c763f3304da14f884b9fd5d320f41e8a2a8d0eb4".into(),
                size: 12
            }
        );
        // No rck on a compressed file: only the content can be checked, after decompressing.
        assert!(matches!(
            m.file_check(&m.files[4]),
            FileCheck::Content {
                compress: CompressType::Zst,
                size: 8192,
                ..
            }
        ));
        assert_eq!(m.stored_files("st").count(), 4);
        let bundles = m.bundles("st").unwrap();
        assert_eq!(bundles.len(), 2);
        assert_eq!(bundles.values().map(Vec::len).sum::<usize>(), 2);

        // Without bundling an empty file is stored like any other, compression extension included.
        let m = Manifest::parse(&excerpt(false, "lz4")).unwrap();
        assert_eq!(
            m.file_location("st", &m.files[3]).unwrap(),
            FileLocation::Object {
                key: ObjectKey::new(
                    "backup/st/20261124-051237F_20261124-051242I/pg_data/base/1/13394.lz4"
                )
                .unwrap()
            }
        );
        let m = Manifest::parse(&excerpt(false, "none")).unwrap();
        assert_eq!(
            m.file_check(&m.files[4]),
            FileCheck::Stored {
                sha1: "1d4b0a5bd06e4b6c36e24b9a3c8e0d56cbf2f3ad".into(),
                size: 8192
            }
        );
        assert_eq!(
            m.file_check(&m.files[3]),
            FileCheck::Stored {
                sha1: SHA1_EMPTY.into(),
                size: 0
            }
        );
    }

    #[test]
    fn hostile_file_names_cannot_escape() {
        let text = String::from_utf8(excerpt(false, "none"))
            .unwrap()
            .replace("pg_data/global/pg_control", "pg_data/../../../x");
        let ini = Ini::parse(text.as_bytes()).unwrap();
        let m = Manifest::from_ini(&ini).unwrap();
        assert!(matches!(
            m.file_location("st", &m.files[4]),
            Err(RepoError::InvalidName { .. })
        ));
    }

    #[test]
    fn bad_checksum_text_is_a_format_error() {
        let text = String::from_utf8(excerpt(true, "zst"))
            .unwrap()
            .replace("\"rck\":\"c763", "\"rck\":\"C763");
        let ini = Ini::parse(text.as_bytes()).unwrap();
        assert!(matches!(
            Manifest::from_ini(&ini),
            Err(RepoError::Format { .. })
        ));
    }
}
