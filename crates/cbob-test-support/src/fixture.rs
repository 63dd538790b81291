//! The committed pgBackRest fixture: `tests/fixtures/pgbackrest-repo.tar.zst` (a real 2.45
//! repository, PostgreSQL 15, lz4, full + diff + incr + WAL after the last backup) and
//! `tests/fixtures/expected.json` (what it contains). Regenerate with `cargo xtask fixture`.
//!
//! Failure cases are derived at test time from an extracted copy (flip bytes, delete files);
//! the committed tarball is never modified by tests.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pg::ExpectedValues;
use crate::process::set_mode;

/// One backup set of the fixture, oldest first in [`Expected::backups`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedBackup {
    /// Backup label, e.g. `20261124-022421F_20261124-022427I`.
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Label of the backup this one depends on (`None` for a full).
    pub prior: Option<String>,
    /// First WAL segment the backup needs.
    pub wal_start: String,
    /// Last WAL segment the backup needs.
    pub wal_stop: String,
}

/// Contents of `tests/fixtures/expected.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Stanza name (a Crunchy Bridge-like lowercase id).
    pub stanza: String,
    /// PostgreSQL major version (`"15"`).
    pub pg_version: String,
    /// pgBackRest version that wrote the repository.
    pub pgbackrest_version: String,
    /// `db-system-id` (above 2^53: keep it an integer).
    pub system_id: u64,
    /// Archive id, e.g. `15-1`.
    pub archive_id: String,
    /// Oldest WAL segment in the archive.
    pub wal_min: String,
    /// Newest WAL segment in the archive (a restore to the end must reach it).
    pub wal_max: String,
    /// Repository compression (`lz4`).
    pub compress_type: String,
    /// Backup sets, oldest first.
    pub backups: Vec<ExpectedBackup>,
    /// Regular files in the repository (the `latest` symlink not counted).
    pub files: u64,
    /// Sum of their sizes in bytes.
    pub bytes: u64,
    /// What a restore of the latest backup with the whole archive finds.
    pub values: ExpectedValues,
}

/// `<workspace>/tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    crate::workspace_root().join("tests/fixtures")
}

/// The committed tarball.
pub fn tarball_path() -> PathBuf {
    fixtures_dir().join("pgbackrest-repo.tar.zst")
}

/// Parses `tests/fixtures/expected.json`.
pub fn expected() -> Expected {
    let p = fixtures_dir().join("expected.json");
    let text = fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (regenerate with `cargo xtask fixture`)",
            p.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// An extracted copy of the fixture. The directory is removed on drop.
#[derive(Debug)]
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The repository root (`repo1-path`): contains `archive/` and `backup/`.
    pub repo: PathBuf,
    /// Stanza name.
    pub stanza: String,
    /// What the repository contains.
    pub expected: Expected,
}

impl Fixture {
    /// The temp dir holding `repo/`; put scratch files for the test next to it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Extracts the fixture into a fresh temp dir (world-readable, so the `postgres` user can read
/// it when the tests run as root).
pub fn extract() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("cbob-fixture-")
        .tempdir()
        .expect("create fixture temp dir");
    set_mode(dir.path(), 0o755);
    let repo = extract_to(&tarball_path(), dir.path());
    let expected = expected();
    Fixture {
        dir,
        repo,
        stanza: expected.stanza.clone(),
        expected,
    }
}

/// Unpacks a `.tar.zst` whose top directory is `repo/` into `dest` and returns `dest/repo`.
/// Modes are normalised to 0755 (dirs) / 0644 (files) whatever the archive or umask say.
pub fn extract_to(tarball: &Path, dest: &Path) -> PathBuf {
    let f = fs::File::open(tarball).unwrap_or_else(|e| {
        panic!(
            "open {}: {e} (regenerate with `cargo xtask fixture`)",
            tarball.display()
        )
    });
    let dec = zstd::stream::read::Decoder::new(f).expect("zstd decoder");
    let mut ar = tar::Archive::new(dec);
    ar.set_preserve_permissions(false);
    ar.set_preserve_ownerships(false);
    ar.unpack(dest)
        .unwrap_or_else(|e| panic!("unpack {}: {e}", tarball.display()));
    let repo = dest.join("repo");
    assert!(
        repo.join("backup").is_dir(),
        "{} has no repo/backup directory",
        tarball.display()
    );
    make_world_readable(&repo);
    repo
}

/// chmod 0755 on directories and 0644 on files below `root` (symlinks untouched).
pub fn make_world_readable(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = p.symlink_metadata().expect("stat fixture entry");
        if md.is_dir() {
            set_mode(&p, 0o755);
            for e in fs::read_dir(&p).expect("read fixture dir") {
                stack.push(e.expect("dir entry").path());
            }
        } else if md.is_file() {
            set_mode(&p, 0o644);
        }
    }
}

/// Every regular file below `root` with its bytes, keyed by path relative to `root`: what a
/// copy of a repository must hold, byte for byte. Symlinks (pgBackRest's `latest`) are skipped
/// and a missing `root` is an empty tree.
pub fn read_tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.expect("read a directory entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let bytes = fs::read(e.path())
                    .unwrap_or_else(|err| panic!("read {}: {err}", e.path().display()));
                out.insert(rel, bytes);
            }
        }
    }
    out
}
