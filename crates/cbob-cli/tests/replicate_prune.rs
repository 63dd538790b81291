//! `cbob replicate sync --prune`: what the primary has expired (a backup and the WAL before its
//! oldest backup) is removed from each replica in pgBackRest's expire order, and only with
//! `--prune`; a replica is never pruned when its copy failed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cbob_test_support::{fixture, pg};

fn cbob(dir: &Path, primary: &Path, yaml: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cbob"))
        .env_clear()
        .env("HOME", dir.join("home"))
        .env("PATH", "/usr/bin:/bin")
        .env("CBOB_BASE_PATH", dir.join("base"))
        .env("CBOB_TARGET_PATH", primary)
        .env("CBOB_REPLICATION_CONFIG", yaml)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn prune_removes_from_replicas_what_the_primary_expired_and_only_when_asked() {
    let fx = fixture::extract();
    let dir = fx.dir().to_path_buf();
    fs::create_dir_all(dir.join("home")).unwrap();
    let primary = fx.repo.clone();
    let replica: PathBuf = dir.join("replica");
    let yaml = dir.join("replication.yaml");
    fs::write(
        &yaml,
        format!(
            "replication:\n  replicas:\n    - {{name: disk, provider: local, path: {}}}\n",
            replica.display()
        ),
    )
    .unwrap();
    let first = cbob(&dir, &primary, &yaml, &["replicate", "sync"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));

    // At the replica: a backup the primary has since expired, and WAL from before it.
    let stanza = &fx.stanza;
    let backups = replica.join(format!("backup/{stanza}"));
    let full = &fx.expected.backups[0].label;
    let expired = "20261101-000000F";
    copy_dir(&backups.join(full), &backups.join(expired));
    let wal_dir = replica.join(format!("archive/{stanza}/15-1/0000000100000000"));
    let wal_start = &fx.expected.backups[0].wal_start;
    let needed = fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(wal_start.as_str()) && n.ends_with(".lz4"))
        .unwrap();
    let old_wal = needed.replacen(wal_start.as_str(), "000000010000000000000001", 1);
    fs::copy(wal_dir.join(&needed), wal_dir.join(&old_wal)).unwrap();

    // Without --prune nothing is deleted.
    let keep = cbob(&dir, &primary, &yaml, &["replicate", "sync"]);
    assert_eq!(keep.status.code(), Some(0), "{}", text(&keep));
    assert!(backups.join(expired).exists() && wal_dir.join(&old_wal).exists());

    // A dry run with --prune says what would go and deletes nothing.
    let plan = cbob(
        &dir,
        &primary,
        &yaml,
        &["--dry-run", "replicate", "sync", "--prune"],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains(expired),
        "{}",
        text(&plan)
    );
    assert!(backups.join(expired).exists() && wal_dir.join(&old_wal).exists());

    let pruned = cbob(
        &dir,
        &primary,
        &yaml,
        &["replicate", "sync", "--prune", "--format", "json"],
    );
    assert_eq!(pruned.status.code(), Some(0), "{}", text(&pruned));
    let doc: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    let replica_doc = &doc["replicas"][0];
    assert_eq!(replica_doc["pruned"][0]["backups"][0], expired, "{doc}");
    assert!(
        !backups.join(expired).exists(),
        "the expired backup is gone"
    );
    assert!(
        !wal_dir.join(&old_wal).exists(),
        "WAL before the oldest backup is gone"
    );
    assert!(wal_dir.join(&needed).exists(), "WAL a backup needs stays");
    assert!(
        fixture::read_tree(&replica) == fixture::read_tree(&primary),
        "the pruned replica is the primary again"
    );
    fixture::make_world_readable(&replica);
    assert_eq!(pg::restore_and_query(&replica, stanza), fx.expected.values);
}
