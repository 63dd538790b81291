//! Repository trees on disk: reading and comparing them byte for byte, building variants of the
//! fixture (another stanza name, an older state, corruption), and checking that a destination
//! is a repository pgBackRest reads as valid with every listed backup complete.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cbob_test_support::fixture::make_world_readable;
use cbob_test_support::pg;
use serde_json::Value;

/// Regular files under a root by `/`-separated relative path, with their bytes. Symlinks
/// (pgBackRest's `latest`) and directories are not files of a repository copy.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// Marker in the names of the local provider's in-flight temporary files.
pub const TEMP_MARKER: &str = ".cbob-tmp.";

fn walk(root: &Path, mut visit: impl FnMut(String, &Path, &fs::Metadata)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => return,
            Err(e) => panic!("read dir {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let md = path
                .symlink_metadata()
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            if md.is_dir() {
                stack.push(path);
            } else if md.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .expect("below root")
                    .to_str()
                    .expect("utf-8 names")
                    .to_string();
                visit(rel, &path, &md);
            }
        }
    }
}

/// Every regular file below `root` (an absent root is an empty tree).
pub fn read_tree(root: &Path) -> Tree {
    let mut t = Tree::new();
    walk(root, |rel, path, _| {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        t.insert(rel, bytes);
    });
    t
}

/// Panics with the first differences unless `actual` has exactly the files of `expected`, with
/// the same bytes.
pub fn assert_same_tree(actual: &Tree, expected: &Tree, what: &str) {
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<&String> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    let differ: Vec<&String> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    let first = |v: &[&String]| {
        v.iter()
            .take(8)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what}: the copy is not byte-identical to the source ({} files expected, {} found)\n  \
         missing ({}):\n    {}\n  unexpected ({}):\n    {}\n  different bytes ({}):\n    {}",
        expected.len(),
        actual.len(),
        missing.len(),
        first(&missing),
        extra.len(),
        first(&extra),
        differ.len(),
        first(&differ)
    );
}

/// The files of `tree` whose path satisfies `keep`.
pub fn filtered(tree: &Tree, keep: impl Fn(&str) -> bool) -> Tree {
    tree.iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A copy of the fixture (`tree`, any stanza name) as it was before its newest backup, except
/// for the info files: without that backup's directory and the WAL archived after the backup
/// before it. A destination seeded with it leaves a few megabytes to copy.
pub fn without_newest_backup(tree: &Tree) -> Tree {
    let expected = cbob_test_support::fixture::expected();
    let [.., before, newest] = expected.backups.as_slice() else {
        panic!("the fixture has several backups");
    };
    let (dir, stop) = (format!("/{}/", newest.label), before.wal_stop.as_str());
    filtered(tree, |k| {
        let name = k.rsplit('/').next().unwrap_or(k);
        let newer_wal = k.starts_with("archive/")
            && name.len() > 24
            && name[..24].bytes().all(|b| b.is_ascii_hexdigit())
            && &name[..24] > stop;
        !k.contains(&dir) && !newer_wal
    })
}

/// Writes `tree` below `root` (a destination that already holds part of a copy).
pub fn write_tree(root: &Path, tree: &Tree) {
    for (rel, bytes) in tree {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("create dirs");
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }
}

/// Identity of every file below `root`: (inode, mtime in ns, size). Rewriting a file, even
/// with the same bytes, changes the inode (rename into place) or the mtime.
pub fn stat_tree(root: &Path) -> BTreeMap<String, (u64, i128, u64)> {
    let mut t = BTreeMap::new();
    walk(root, |rel, _, md| {
        let mtime = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
        t.insert(rel, (md.ino(), mtime, md.len()));
    });
    t
}

/// Copies the regular files and directories of `src` into `dst` (symlinks skipped).
pub fn copy_tree(src: &Path, dst: &Path) {
    walk(src, |rel, path, _| {
        let to = dst.join(&rel);
        fs::create_dir_all(to.parent().expect("parent")).expect("create dirs");
        fs::copy(path, &to).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
    });
    make_world_readable(dst);
}

/// A copy of `src_repo` at `dst_repo` whose stanza `from` is renamed `to` (pgBackRest's info
/// files and manifests do not contain the stanza name; only the directories do).
pub fn copy_repo_as_stanza(src_repo: &Path, dst_repo: &Path, from: &str, to: &str) {
    for top in ["archive", "backup"] {
        copy_tree(&src_repo.join(top).join(from), &dst_repo.join(top).join(to));
    }
    make_world_readable(dst_repo);
}

/// Flips every bit of the byte at the middle of `path` (same size, different content).
pub fn corrupt_in_place(path: &Path) {
    let mut bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `[section]` of an INI text (pgBackRest info files, manifests) as `(key, raw value)` pairs.
pub fn ini_section<'a>(text: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k, v));
        }
    }
    out
}

/// Backups listed in a `backup.info` text: label → its JSON (archive start/stop, type, ...).
pub fn listed_backups(backup_info: &str) -> BTreeMap<String, Value> {
    ini_section(backup_info, "backup:current")
        .into_iter()
        .map(|(label, json)| {
            let v: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("backup.info entry {label}: {e}: {json}"));
            (label.to_string(), v)
        })
        .collect()
}

/// The `backup.info` pgBackRest would load at `repo` (the main file, else its copy), if any.
pub fn backup_info_text(repo: &Path, stanza: &str) -> Option<String> {
    let dir = repo.join("backup").join(stanza);
    ["backup.info", "backup.info.copy"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .map(|p| fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
}

/// The WAL segment names from `start` to `stop` inclusive (16 MiB segments: 256 per log id).
pub fn wal_range(start: &str, stop: &str) -> Vec<String> {
    let parse = |s: &str| {
        let tli = u32::from_str_radix(&s[0..8], 16).expect("timeline");
        let log = u64::from_str_radix(&s[8..16], 16).expect("log");
        let seg = u64::from_str_radix(&s[16..24], 16).expect("segment");
        (tli, log * 256 + seg)
    };
    let (tli, a) = parse(start);
    let (_, b) = parse(stop);
    (a..=b)
        .map(|n| format!("{tli:08X}{:08X}{:08X}", n / 256, n % 256))
        .collect()
}

fn compress_extension(manifest: &str) -> &'static str {
    let kind = ini_section(manifest, "backup:option")
        .into_iter()
        .find(|(k, _)| *k == "option-compress-type")
        .map(|(_, v)| v.trim_matches('"'))
        .unwrap_or("none");
    match kind {
        "lz4" => ".lz4",
        "gz" => ".gz",
        "zst" => ".zst",
        "bz2" => ".bz2",
        _ => "",
    }
}

/// What is missing for `label` (listed with `entry` in backup.info) to be restorable from
/// `repo`: its manifest and copy, every file its manifest names (in this backup or the one it
/// references) at its repository size, and the WAL from archive start to stop.
pub fn backup_problems(repo: &Path, stanza: &str, label: &str, entry: &Value) -> Vec<String> {
    let backup_dir = repo.join("backup").join(stanza);
    let mut problems = Vec::new();
    for name in ["backup.manifest", "backup.manifest.copy"] {
        if !backup_dir.join(label).join(name).is_file() {
            problems.push(format!("{label}/{name} is missing"));
        }
    }
    let manifest_path = backup_dir.join(label).join("backup.manifest");
    if let Ok(manifest) = fs::read_to_string(&manifest_path) {
        let ext = compress_extension(&manifest);
        for (name, json) in ini_section(&manifest, "target:file") {
            let v: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", manifest_path.display()));
            let dir = v["reference"].as_str().unwrap_or(label);
            let want = v["repo-size"].as_u64().or_else(|| v["size"].as_u64());
            let path = backup_dir.join(dir).join(format!("{name}{ext}"));
            match (path.symlink_metadata(), want) {
                (Ok(md), Some(size)) if md.is_file() && md.len() == size => {}
                (Ok(md), _) => problems.push(format!(
                    "{dir}/{name}{ext}: {} bytes, manifest says {want:?}",
                    md.len()
                )),
                (Err(_), _) => problems.push(format!("{dir}/{name}{ext} is missing")),
            }
        }
    }
    let (start, stop) = (
        entry["backup-archive-start"].as_str().unwrap_or_default(),
        entry["backup-archive-stop"].as_str().unwrap_or_default(),
    );
    if start.len() == 24 && stop.len() == 24 {
        for seg in wal_range(start, stop) {
            if !wal_segment_exists(repo, stanza, &seg) {
                problems.push(format!("{label}: WAL segment {seg} is missing"));
            }
        }
    } else {
        problems.push(format!("{label}: no archive start/stop in backup.info"));
    }
    problems
}

fn wal_segment_exists(repo: &Path, stanza: &str, seg: &str) -> bool {
    let archive = repo.join("archive").join(stanza);
    let Ok(ids) = fs::read_dir(&archive) else {
        return false;
    };
    ids.flatten().any(|id| {
        fs::read_dir(id.path().join(&seg[..16])).is_ok_and(|files| {
            files.flatten().any(|f| {
                f.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&format!("{seg}-")))
            })
        })
    })
}

/// Asserts that `repo` is, for `stanza`, a repository pgBackRest reads as valid: when a
/// backup.info exists, `pgbackrest info` reports status ok (or "no valid backups" while it
/// lists none) and every backup it lists is complete. No backup.info means no backup is
/// listed, so nothing can be incomplete. Returns the listed labels.
pub fn assert_valid_repo(repo: &Path, stanza: &str, when: &str) -> Vec<String> {
    let Some(info_text) = backup_info_text(repo, stanza) else {
        return Vec::new();
    };
    let listed = listed_backups(&info_text);
    make_world_readable(repo);
    let info = pg::pgbackrest_info_json(repo, stanza);
    let code = info["status"]["code"].as_i64();
    let acceptable = if listed.is_empty() {
        // 2 = "no valid backups": an empty but well-formed stanza.
        matches!(code, Some(0) | Some(2))
    } else {
        code == Some(0)
    };
    assert!(
        acceptable,
        "{when}: pgbackrest info for {stanza} at {} is not ok: {}\nbackup.info lists {:?}",
        repo.display(),
        info["status"],
        listed.keys().collect::<Vec<_>>()
    );
    let seen: Vec<String> = info["backup"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["label"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let labels: Vec<String> = listed.keys().cloned().collect();
    assert_eq!(
        seen, labels,
        "{when}: pgbackrest info lists other backups than backup.info"
    );
    let problems: Vec<String> = listed
        .iter()
        .flat_map(|(label, entry)| backup_problems(repo, stanza, label, entry))
        .collect();
    assert!(
        problems.is_empty(),
        "{when}: backup.info at {} lists incomplete backups:\n  {}",
        repo.display(),
        problems
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    labels
}

/// Turns the extracted fixture at `repo` into its state before its newest backup: that backup
/// expired with pgBackRest itself (which rewrites backup.info with a valid checksum), its
/// history manifest and the WAL archived after the remaining newest backup removed.
/// Returns the expired label.
pub fn make_older(repo: &Path, stanza: &str) -> String {
    let info = backup_info_text(repo, stanza).expect("fixture backup.info");
    let listed = listed_backups(&info);
    let (newest, _) = listed.last_key_value().expect("fixture has backups");
    let newest = newest.clone();
    pg::chown_to_pg_user(repo);
    let out = pg::pgbackrest(repo, stanza, &["expire", &format!("--set={newest}")]);
    assert!(
        out.status.success(),
        "pgbackrest expire --set={newest} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = listed_backups(&backup_info_text(repo, stanza).expect("backup.info"));
    assert!(!after.contains_key(&newest), "{newest} still listed");
    let keep_stop = after
        .values()
        .filter_map(|v| v["backup-archive-stop"].as_str())
        .max()
        .expect("a backup remains")
        .to_string();
    let mut removed = 0;
    for path in files_below(&repo.join("archive").join(stanza)) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_wal = name.len() > 24 && name[..24].bytes().all(|b| b.is_ascii_hexdigit());
        if is_wal && name[..24] > *keep_stop {
            fs::remove_file(&path).expect("remove newer WAL");
            removed += 1;
        }
    }
    assert!(removed > 0, "no WAL after {keep_stop} to remove");
    for path in files_below(&repo.join("backup").join(stanza).join("backup.history")) {
        if path.to_str().is_some_and(|p| p.contains(&newest)) {
            fs::remove_file(&path).expect("remove history manifest");
        }
    }
    make_world_readable(repo);
    newest
}

/// A copy of the fixture at `<returned dir>/repo` in its state before its newest backup (see
/// [`make_older`]); returns the dir (removed on drop), the repository and the expired label.
pub fn older_fixture(fixture_repo: &Path, stanza: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = super::scratch_tempdir("older-source");
    let repo = dir.path().join("repo");
    copy_tree(fixture_repo, &repo);
    let newest = make_older(&repo, stanza);
    (dir, repo, newest)
}

fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    walk(root, |_, path, _| v.push(path.to_path_buf()));
    v
}

/// The first file below `dir` whose relative path satisfies `pred` (sorted order).
pub fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> PathBuf {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    walk(dir, |rel, path, _| {
        if pred(&rel) {
            found.push((rel, path.to_path_buf()));
        }
    });
    found.sort();
    found
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no matching file below {}", dir.display()))
}
