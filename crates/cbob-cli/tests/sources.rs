//! `cbob sync --source azure://…` and `--source gcs://…`: a pgBackRest repository kept in Azure
//! Blob (Azurite) or Google Cloud Storage (fake-gcs-server) copied to a local directory with the
//! `CBOB_SOURCE_*` credentials. The repository is put there by cbob itself (a sync with that
//! store as the destination), the copy must match the fixture byte for byte, restore, and a
//! second run moves nothing.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cbob_test_support::{azurite, fake_gcs, fixture, pg};

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cbob(base: &Path, args: &[&str], env: &[(&str, String)]) -> Run {
    let home = base.join("home");
    fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
    cmd.env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .env("CBOB_BASE_PATH", base.join("state"))
        .env("CBOB_RETRY_COUNT", "1")
        .env("CBOB_RETRY_DELAY", "100ms")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cbob");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn copied_files(run: &Run) -> u64 {
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    v["copied_files"]
        .as_u64()
        .unwrap_or_else(|| panic!("no copied_files in {v}"))
}

/// Pushes the fixture into a store (`dest_env`), pulls it back through `--source url` with
/// `source_env`, and checks the copy; returns the local copy's directory.
fn round_trip(
    base: &Path,
    dest_env: &[(&str, String)],
    url: &str,
    source_env: &[(&str, String)],
) -> std::path::PathBuf {
    let fx = fixture::extract();
    let push = cbob(
        &base.join("push"),
        &[
            "sync",
            "--source",
            &format!("file://{}", fx.repo.display()),
            "--format",
            "json",
        ],
        dest_env,
    );
    assert_eq!(
        push.code, 0,
        "pushing the fixture: {}\n{}",
        push.stdout, push.stderr
    );

    let copy = base.join("copy");
    let target = copy.display().to_string();
    let args = [
        "sync", "--source", url, "--target", &target, "--format", "json",
    ];
    let first = cbob(&base.join("pull"), &args, source_env);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert_eq!(copied_files(&first), fx.expected.files + 2);
    assert!(
        fixture::read_tree(&fx.repo) == fixture::read_tree(&copy),
        "the copy pulled from {url} must be byte-identical to the fixture"
    );
    let again = cbob(&base.join("pull"), &args, source_env);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(copied_files(&again), 0, "a second run moves nothing");
    copy
}

#[test]
fn an_azure_repository_is_copied_with_the_shared_key_or_a_sas() {
    let az = cbob_test_support::azurite();
    let container = az.fresh_container("srcrepo");
    let base = tempfile::tempdir().unwrap();
    let dest_env = [
        ("CBOB_DEST_TYPE", "azure".to_string()),
        ("CBOB_DEST_ENDPOINT", az.endpoint()),
        ("CBOB_DEST_AZURE_ACCOUNT", azurite::ACCOUNT.to_string()),
        ("CBOB_DEST_AZURE_KEY", azurite::ACCOUNT_KEY.to_string()),
        ("CBOB_DEST_CONTAINER", container.clone()),
        ("CBOB_DEST_PREFIX", "pgbackrest/repo1".to_string()),
    ];
    let url = format!("azure://{}/{container}/pgbackrest/repo1", azurite::ACCOUNT);
    let copy = round_trip(
        &base.path().join("key"),
        &dest_env,
        &url,
        &[
            ("CBOB_SOURCE_ENDPOINT", az.endpoint()),
            ("CBOB_SOURCE_AZURE_KEY", azurite::ACCOUNT_KEY.to_string()),
        ],
    );

    // The copy is a repository pgBackRest restores from.
    let fx = fixture::extract();
    fixture::make_world_readable(&copy);
    assert_eq!(pg::restore_and_query(&copy, &fx.stanza), fx.expected.values);

    // A read-and-list SAS for the container is enough to copy from.
    let sas = az.container_sas(&container, "rl", Duration::from_secs(3600));
    round_trip(
        &base.path().join("sas"),
        &dest_env,
        &url,
        &[
            ("CBOB_SOURCE_ENDPOINT", az.endpoint()),
            ("CBOB_SOURCE_AZURE_SAS", sas.clone()),
        ],
    );

    // A wrong key fails the stanza discovery with a clear error and never shows the key.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let run = cbob(
        &base.path().join("wrong"),
        &[
            "sync",
            "--source",
            &url,
            "--target",
            &base.path().join("wrong/copy").display().to_string(),
        ],
        &[
            ("CBOB_SOURCE_ENDPOINT", az.endpoint()),
            ("CBOB_SOURCE_AZURE_KEY", wrong.to_string()),
        ],
    );
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.to_lowercase().contains("auth") || all.contains("403") || all.contains("denied"),
        "the error must say the credentials were refused: {all}"
    );
    for secret in [wrong, azurite::ACCOUNT_KEY, sas.as_str()] {
        assert!(!all.contains(secret), "secret in output: {all}");
    }
    assert!(
        !base.path().join("wrong/copy/backup").exists(),
        "nothing copied"
    );
}

#[test]
fn a_gcs_repository_is_copied() {
    let gcs = fake_gcs();
    let bucket = gcs.fresh_bucket("srcrepo");
    let base = tempfile::tempdir().unwrap();
    round_trip(
        base.path(),
        &[
            ("CBOB_DEST_TYPE", "gcs".to_string()),
            ("CBOB_DEST_ENDPOINT", gcs.endpoint()),
            ("CBOB_DEST_BUCKET", bucket.clone()),
            ("CBOB_DEST_PREFIX", "repo".to_string()),
        ],
        &format!("gcs://{bucket}/repo"),
        &[("CBOB_SOURCE_ENDPOINT", gcs.endpoint())],
    );
}

/// A wrong `CBOB_SOURCE_SECRET_KEY` is reported as the source's credentials, never as the
/// destination's: the operator must be told which keys to fix.
#[test]
fn a_wrong_source_secret_key_names_the_source_settings() {
    let s3 = cbob_test_support::s3s_fs();
    let bucket = s3.fresh_bucket("srcwrong");
    let base = tempfile::tempdir().unwrap();
    let wrong = "wrong-source-secret-key-1234567890";
    let target = base.path().join("copy");
    let run = cbob(
        base.path(),
        &[
            "sync",
            "--source",
            &format!("s3://{bucket}/pgbackrest/repo1"),
            "--target",
            &target.display().to_string(),
        ],
        &[
            ("CBOB_SOURCE_ENDPOINT", s3.endpoint()),
            (
                "CBOB_SOURCE_ACCESS_KEY",
                cbob_test_support::s3s::ACCESS_KEY.to_string(),
            ),
            ("CBOB_SOURCE_SECRET_KEY", wrong.to_string()),
        ],
    );
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("CBOB_SOURCE_SECRET_KEY"),
        "the error must name the source's secret key setting: {all}"
    );
    assert!(
        !all.contains("CBOB_DEST_"),
        "the error must not send the operator to the destination settings: {all}"
    );
    assert!(!all.contains(wrong), "secret in output: {all}");
    assert!(!target.join("backup").exists(), "nothing copied");
}
