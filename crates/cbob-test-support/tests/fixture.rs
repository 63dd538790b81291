//! The committed fixture is a real, restorable pgBackRest repository, and `restore_and_query`
//! tells a complete restore from a short one.

use std::fs;

use cbob_test_support::fixture;
use cbob_test_support::pg::{pgbackrest, pgbackrest_info_json, restore_and_query};

#[test]
fn info_matches_expected_json() {
    let fx = fixture::extract();
    let info = pgbackrest_info_json(&fx.repo, &fx.stanza);
    assert_eq!(info["status"]["code"], 0, "{info}");
    let labels: Vec<&str> = info["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = fx
        .expected
        .backups
        .iter()
        .map(|b| b.label.as_str())
        .collect();
    assert_eq!(labels, expected);
    assert_eq!(info["archive"][0]["min"], fx.expected.wal_min.as_str());
    assert_eq!(info["archive"][0]["max"], fx.expected.wal_max.as_str());
    assert_eq!(info["db"][0]["system-id"], fx.expected.system_id);
    assert_eq!(fx.expected.pg_version, "15");
    assert!(
        fx.repo
            .join("backup")
            .join(&fx.stanza)
            .join("latest")
            .is_symlink()
    );
}

#[test]
fn fixture_restores_to_the_expected_values() {
    let fx = fixture::extract();
    let values = restore_and_query(&fx.repo, &fx.stanza);
    assert_eq!(values, fx.expected.values);
    assert_eq!(
        values.marker_max, 5,
        "WAL after the last backup must have been replayed"
    );
}

/// Deleting the newest WAL segment but one after the last backup makes PostgreSQL promote early
/// and silently: pgBackRest's verify is still ok, only the data shows it (pgbackrest-lab.md §6).
#[test]
fn restore_and_query_sees_a_missing_wal_segment() {
    let fx = fixture::extract();
    let wal_dir = fx
        .repo
        .join("archive")
        .join(&fx.stanza)
        .join(&fx.expected.archive_id)
        .join(&fx.expected.wal_max[..16]);
    // The generator writes marker 4, switches WAL, writes marker 5, switches again, and the
    // shutdown checkpoint lands in wal_max: marker 5 is in the segment before wal_max.
    let max = &fx.expected.wal_max;
    let seg = u32::from_str_radix(&max[16..], 16).unwrap() - 1;
    let prefix = format!("{}{seg:08X}-", &max[..16]);
    let victim = fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("WAL segment {prefix}* in the fixture"));
    fs::remove_file(&victim).unwrap();

    let verify = pgbackrest(
        &fx.repo,
        &fx.stanza,
        &["verify", "--output=text", "--verbose"],
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("status: ok"));

    let values = restore_and_query(&fx.repo, &fx.stanza);
    assert_eq!(values.marker_max, 4, "{values:?}");
    assert_ne!(values, fx.expected.values);
}
