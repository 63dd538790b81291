//! `cargo xtask fixture`: regenerate the committed pgBackRest fixture.
//!
//! 1. `scripts/gen-fixture.sh` drives pgBackRest 2.45 + PostgreSQL 15 (stanza, full/diff/incr,
//!    WAL after the last backup) into a temp dir.
//! 2. `pgbackrest info` supplies labels, WAL range and system id for `expected.json`.
//! 3. `tar --sort=name --owner=0 ... | zstd -19` makes a reproducible, world-readable tarball.
//! 4. The tarball is extracted again, `pgbackrest verify` and a full restore must find exactly
//!    the recorded values, and only then are the files in tests/fixtures/ replaced.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use cbob_test_support::fixture::{Expected, ExpectedBackup, extract_to};
use cbob_test_support::pg::{ExpectedValues, PgWork, pgbackrest_info_json, restore_and_query};

pub fn generate() -> Result<()> {
    let t = Instant::now();
    for tool in ["pgbackrest", "tar", "zstd", "bash"] {
        if cbob_test_support::locate::which(tool).is_none() {
            bail!("{tool} is not on PATH: apt-get install -y {tool}");
        }
    }
    let root = crate::root();
    let tmp = tempfile::Builder::new()
        .prefix("cbob-fixture-gen-")
        .tempdir()?;
    let out = tmp.path().join("out");

    eprintln!("xtask: generating the repository (scripts/gen-fixture.sh)");
    crate::run(
        Command::new("bash")
            .arg(root.join("scripts/gen-fixture.sh"))
            .arg(&out),
        "scripts/gen-fixture.sh",
    )?;
    let repo = out.join("repo");
    let values = read_values(&out.join("values.env"))?;
    let stanza = std::env::var("STANZA").unwrap_or_else(|_| "abc123".into());
    let expected = describe(&repo, &stanza, values)?;

    let fixtures = root.join("tests/fixtures");
    fs::create_dir_all(&fixtures)?;
    let tar_tmp = fixtures.join("pgbackrest-repo.tar.zst.tmp");
    eprintln!("xtask: packing (tar | zstd -19)");
    pack(&out, &tar_tmp)?;

    if let Err(e) = check(&tar_tmp, &stanza, &expected) {
        let _ = fs::remove_file(&tar_tmp);
        return Err(e);
    }
    fs::rename(&tar_tmp, fixtures.join("pgbackrest-repo.tar.zst"))?;
    let json = serde_json::to_string_pretty(&expected)? + "\n";
    fs::write(fixtures.join("expected.json"), json)?;
    let size = fs::metadata(fixtures.join("pgbackrest-repo.tar.zst"))?.len();
    eprintln!(
        "xtask: wrote tests/fixtures/pgbackrest-repo.tar.zst ({size} bytes, {} files, {} bytes unpacked) \
         and expected.json in {:.1} s; backups: {}",
        expected.files,
        expected.bytes,
        t.elapsed().as_secs_f64(),
        expected
            .backups
            .iter()
            .map(|b| b.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Extracts the packed tarball again and proves it: `pgbackrest verify` is ok and a restore finds
/// exactly the recorded values.
fn check(tarball: &Path, stanza: &str, expected: &Expected) -> Result<()> {
    eprintln!("xtask: checking the packed fixture (extract, verify, restore)");
    let check = tempfile::Builder::new()
        .prefix("cbob-fixture-check-")
        .tempdir()?;
    cbob_test_support::fixture::make_world_readable(check.path());
    let extracted = extract_to(tarball, check.path());
    let verify =
        PgWork::new(&extracted, stanza).pgbackrest(&["verify", "--output=text", "--verbose"]);
    let verify_text = String::from_utf8_lossy(&verify.stdout);
    ensure!(
        verify.status.success() && verify_text.contains("status: ok"),
        "pgbackrest verify of the packed fixture is not ok:\n{verify_text}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    eprintln!("xtask: verify ok; restoring the latest backup with the whole archive");
    let restored = restore_and_query(&extracted, stanza);
    ensure!(
        restored == expected.values,
        "restore found {restored:?}, the generator recorded {:?}",
        expected.values
    );
    eprintln!("xtask: restore found {restored:?}");
    Ok(())
}

fn read_values(path: &Path) -> Result<ExpectedValues> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let get = |k: &str| -> Result<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .with_context(|| format!("{} lacks {k}", path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{k} in {}", path.display()))
    };
    Ok(ExpectedValues {
        pgbench_accounts: get("pgbench_accounts")?,
        pgbench_history: get("pgbench_history")?,
        marker_max: get("marker_max")?,
        customers: get("customers")?,
        databases: get("databases")?,
    })
}

/// Builds expected.json from `pgbackrest info` and a walk of the repository.
fn describe(repo: &Path, stanza: &str, values: ExpectedValues) -> Result<Expected> {
    let info = pgbackrest_info_json(repo, stanza);
    ensure!(
        info["status"]["code"] == 0,
        "pgbackrest info: {}",
        info["status"]
    );
    let db = info["db"]
        .as_array()
        .and_then(|a| a.last())
        .context("info has no db")?;
    let archive = info["archive"]
        .as_array()
        .and_then(|a| a.last())
        .context("info has no archive")?;
    let s = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .context(format!("not a string: {v}"))
    };
    let backups = info["backup"]
        .as_array()
        .context("info has no backups")?
        .iter()
        .map(|b| {
            Ok(ExpectedBackup {
                label: s(&b["label"])?,
                kind: s(&b["type"])?,
                prior: b["prior"].as_str().map(str::to_string),
                wal_start: s(&b["archive"]["start"])?,
                wal_stop: s(&b["archive"]["stop"])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        backups.iter().map(|b| b.kind.as_str()).collect::<Vec<_>>() == ["full", "diff", "incr"],
        "expected full, diff, incr backups, got {backups:?}"
    );
    let version = Command::new("pgbackrest").arg("version").output()?;
    let pgbackrest_version = String::from_utf8_lossy(&version.stdout)
        .trim()
        .trim_start_matches("pgBackRest ")
        .to_string();
    let (files, bytes) = count_files(repo)?;
    Ok(Expected {
        stanza: stanza.to_string(),
        pg_version: s(&db["version"])?,
        pgbackrest_version,
        system_id: db["system-id"].as_u64().context("db system-id")?,
        archive_id: s(&archive["id"])?,
        wal_min: s(&archive["min"])?,
        wal_max: s(&archive["max"])?,
        compress_type: "lz4".into(),
        backups,
        files,
        bytes,
        values,
    })
}

fn count_files(root: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let md = e.path().symlink_metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                files += 1;
                bytes += md.len();
            }
        }
    }
    Ok((files, bytes))
}

/// `tar | zstd -19`, reproducible member order and ownership, modes readable by everyone
/// (pgBackRest writes 0640/0750, unreadable by `postgres` after a root extraction).
fn pack(out: &Path, dest: &Path) -> Result<()> {
    let mut tar = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=u+rwX,go+rX",
            "-C",
        ])
        .arg(out)
        .args(["-cf", "-", "repo"])
        .stdout(Stdio::piped())
        .spawn()
        .context("run tar")?;
    let zstd = Command::new("zstd")
        .args(["-19", "-T0", "-q", "-f", "-o"])
        .arg(dest)
        .stdin(tar.stdout.take().expect("tar stdout"))
        .status()
        .context("run zstd")?;
    let tar = tar.wait()?;
    ensure!(
        tar.success() && zstd.success(),
        "tar ({tar}) | zstd ({zstd}) failed"
    );
    Ok(())
}
