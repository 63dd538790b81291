//! Every cloud, both ways: the Crunchy Bridge S3 source copied to Azure (Azurite), GCS
//! (fake-gcs-server) and MinIO (s3s-fs) destinations, read back through cbob's providers
//! byte-identical and restorable, a second run writing nothing; Crunchy Bridge tokens of type
//! `azure` (shared key and SAS, a SAS expiring mid-run and re-issued) copied to a local
//! directory; wrong keys and missing containers or buckets refused with a clear error before
//! anything is written; an Azure or GCS server killed mid-run leaving a valid repository that
//! the next run completes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use cbob_test_support::azurite::{ACCOUNT, ACCOUNT_KEY, container_sas};
use cbob_test_support::bridge::{AzureToken, FakeBridge, FakeCluster, TokenReply};
use cbob_test_support::{azurite, fake_gcs, fixture, moto_auth, pg, s3s_fs};

use crate::common::bridge::{bridge_env, source};
use crate::common::cbob::{Cbob, Run};
use crate::common::clouds::{
    AzureSource, Emulator, PrivateServer, RefusingTokenEndpoint, azure_dest_env, azure_source,
    azure_spec, count_objects, download, gcs_dest_env, gcs_spec, minio_dest_env,
    service_account_key, try_download,
};
use crate::common::proxy::{Recorded, RecordingProxy};
use crate::common::repo::{
    Tree, assert_same_tree, assert_valid_repo, make_older, older_fixture, read_tree, stat_tree,
    write_tree,
};
use crate::common::s3::S3Access;
use crate::common::{scratch_tempdir, wait_until};

const STANZA: &str = "abc123";
/// Where the copies go inside the destination bucket or container.
const PREFIX: &str = "offsite/crunchy";

/// A fake API with one cluster, `abc123`, whose backup token is `token`.
fn one_cluster_api(test: &str, token: TokenReply) -> FakeBridge {
    let api = FakeBridge::start(&format!("cbkey_e2e_clouds_{test}_{}", std::process::id()));
    api.add_team("t1personal", "Personal", true);
    api.add_cluster(FakeCluster::primary(STANZA, "t1personal"));
    api.set_token(STANZA, token);
    api
}

/// `sync --format json` plus `extra`.
fn sync(cbob: &Cbob, extra: &[&str]) -> Run {
    let mut args = vec!["sync", "--format", "json"];
    args.extend_from_slice(extra);
    cbob.run(&args)
}

/// A first run that copied every file of `tree` and lists the fixture's three backups.
fn assert_copied_everything(run: &Run, tree: &Tree, what: &str) {
    run.expect_ok(what);
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{what}\n{}", run.describe());
    let c = run.cluster(STANZA);
    assert_eq!(c["ok"], true, "{what}: {c}");
    // Every file, plus the bootstrap archive.info and empty backup.info (and copies) that an
    // empty destination gets before any payload (crates/cbob-core/src/sync/engine.rs).
    let copied = c["copied_files"].as_u64().unwrap_or_default();
    let files = tree.len() as u64;
    assert!(
        (files..=files + 4).contains(&copied),
        "{what}: the first run copies every one of the {files} files once: {c}"
    );
    let bytes: u64 = tree.values().map(|v| v.len() as u64).sum();
    assert!(
        c["copied_bytes"].as_u64().unwrap_or_default() >= bytes,
        "{what}: at least the repository's {bytes} bytes are copied: {c}"
    );
    assert_eq!(
        c["backups"].as_array().map(Vec::len),
        Some(3),
        "{what}: full, diff and incr: {c}"
    );
}

/// A second run: nothing planned or copied, everything found unchanged.
fn assert_nothing_moved(run: &Run, tree: &Tree, what: &str) {
    run.expect_ok(what);
    let doc = run.json();
    assert_eq!(doc["copied_files"], 0, "{what}\n{}", run.describe());
    let c = run.cluster(STANZA);
    assert_eq!(c["ok"], true, "{what}: {c}");
    assert_eq!(c["planned_files"], 0, "{what}: {c}");
    assert_eq!(c["copied_files"], 0, "{what}: {c}");
    // The four info files are compared as documents, not counted as unchanged files.
    let payload = tree.keys().filter(|k| !k.contains(".info")).count() as u64;
    assert_eq!(
        c["unchanged_files"].as_u64(),
        Some(payload),
        "{what}: every backup and WAL file is found unchanged: {c}"
    );
}

/// `repo` (a local copy) is valid with all three backups complete, and restores to the
/// fixture's values.
fn assert_restorable(repo: &Path, what: &str) {
    let labels = assert_valid_repo(repo, STANZA, what);
    assert_eq!(labels.len(), 3, "{what}: backups listed: {labels:?}");
    let values = pg::restore_and_query(repo, STANZA);
    assert_eq!(
        values,
        fixture::expected().values,
        "{what}: a restore from the copy must find the fixture's data"
    );
}

/// Writes a downloaded copy to a scratch directory pgBackRest can read, and checks it restores.
fn assert_download_restorable(copy: &Tree, what: &str) {
    let dir = scratch_tempdir("cloud-copy");
    write_tree(dir.path(), copy);
    cbob_test_support::fixture::make_world_readable(dir.path());
    assert_restorable(dir.path(), what);
}

/// `http://127.0.0.1:PORT` of a server endpoint (which may carry a path, like Azurite's).
fn authority(endpoint: &str) -> String {
    let rest = endpoint.strip_prefix("http://").expect("http endpoint");
    format!("http://{}", rest.split('/').next().expect("host:port"))
}

/// The destinations of the first group of tests.
#[derive(Debug, Clone, Copy)]
enum Cloud {
    Azure,
    Gcs,
    Minio,
}

/// The S3 Bridge source copied to `cloud` through a recording proxy; read back; restored; a
/// second run that moves and writes nothing.
fn s3_bridge_to(cloud: Cloud) {
    let src = source();
    let tree = &src.abc.tree;
    let api = one_cluster_api(&format!("{cloud:?}").to_lowercase(), src.abc.sts_token());
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    let what = format!("S3 Bridge source to {cloud:?}");

    let (proxy, read_back): (RecordingProxy, Box<dyn Fn() -> Tree>) = match cloud {
        Cloud::Azure => {
            let container = azurite().fresh_container("dest-azure");
            let proxy = RecordingProxy::start(&authority(&azurite().endpoint()));
            let via = format!("{}/{ACCOUNT}", proxy.endpoint());
            azure_dest_env(&mut cbob, &via, &container, PREFIX, ACCOUNT_KEY);
            let spec = azure_spec(&azurite().endpoint(), &container, PREFIX);
            (proxy, Box::new(move || download(&spec)))
        }
        Cloud::Gcs => {
            let bucket = fake_gcs().fresh_bucket("dest-gcs");
            let proxy = RecordingProxy::start(&fake_gcs().endpoint());
            gcs_dest_env(&mut cbob, &proxy.endpoint(), &bucket, PREFIX, None);
            let spec = gcs_spec(&fake_gcs().endpoint(), &bucket, PREFIX);
            (proxy, Box::new(move || download(&spec)))
        }
        Cloud::Minio => {
            let bucket = s3s_fs().fresh_bucket("dest-minio");
            let proxy = RecordingProxy::start(&s3s_fs().endpoint());
            let via = S3Access {
                endpoint: proxy.endpoint(),
                ..S3Access::s3s()
            };
            minio_dest_env(&mut cbob, &via, &bucket, PREFIX);
            // s3s-fs keeps objects as plain files: read them without any S3 client.
            let stored = s3s_fs().data_dir().join(&bucket).join(PREFIX);
            (proxy, Box::new(move || read_tree(&stored)))
        }
    };

    let first = sync(&cbob, &[]);
    assert_copied_everything(&first, tree, &what);
    assert!(
        proxy.writes().len() >= tree.len(),
        "{what}: every file went to the destination through the proxy ({} writes)",
        proxy.writes().len()
    );
    let copy = read_back();
    assert_same_tree(&copy, tree, &what);
    assert_download_restorable(&copy, &what);

    proxy.clear();
    let second = sync(&cbob, &[]);
    assert_nothing_moved(&second, tree, &format!("{what}, second run"));
    assert!(
        !proxy.requests().is_empty(),
        "{what}: the second run did look at the destination through the proxy"
    );
    let writes = proxy.writes();
    assert!(
        writes.is_empty(),
        "{what}: the second run must send no write at all to the destination: {writes:?}"
    );
    assert_same_tree(&read_back(), tree, &format!("{what}, after the second run"));
    assert_eq!(api.token_requests(STANZA), 2, "one backup token per run");
}

#[test]
fn s3_bridge_source_to_azure_destination() {
    s3_bridge_to(Cloud::Azure);
}

#[test]
fn s3_bridge_source_to_gcs_destination() {
    s3_bridge_to(Cloud::Gcs);
}

#[test]
fn s3_bridge_source_to_minio_destination() {
    s3_bridge_to(Cloud::Minio);
}

/// A Crunchy Bridge backup token of type `azure` for the Azure source.
fn azure_token(src: &AzureSource, key_type: &str, key: &str) -> TokenReply {
    TokenReply::Azure(AzureToken {
        account: ACCOUNT.into(),
        container: src.container.clone(),
        key: key.into(),
        key_type: key_type.into(),
        repo_path: src.repo_path.clone(),
        stanza: src.stanza.into(),
    })
}

/// GETs of blobs that are neither info files nor manifests (`/account/container/blob...`).
fn payload_reads(reqs: &[Recorded]) -> Vec<String> {
    const METADATA: [&str; 6] = [
        "/backup.info",
        "/backup.info.copy",
        "/archive.info",
        "/archive.info.copy",
        "/backup.manifest",
        "/backup.manifest.copy",
    ];
    reqs.iter()
        .filter(|r| r.method == "GET")
        // The SDK sends the `/` of blob names as %2F.
        .map(|r| r.path.replace("%2F", "/").replace("%2f", "/"))
        .filter(|p| p.trim_matches('/').split('/').count() > 2)
        .filter(|p| !METADATA.iter().any(|m| p.ends_with(m)))
        .collect()
}

/// The Azure source through a recording proxy, into a local directory: (cbob, target dir, proxy).
fn azure_source_env(api: &FakeBridge) -> (Cbob, std::path::PathBuf, RecordingProxy) {
    let proxy = RecordingProxy::start(&authority(&azurite().endpoint()));
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, api, &format!("{}/{ACCOUNT}", proxy.endpoint()));
    let dest = cbob.path("dest");
    (cbob, dest, proxy)
}

/// The second run from the Azure source: nothing moves, no destination file is touched, no
/// backup or WAL blob is read again.
fn assert_second_azure_run_moves_nothing(
    cbob: &Cbob,
    dest: &Path,
    proxy: &RecordingProxy,
    tree: &Tree,
    what: &str,
) {
    let target = dest.to_str().expect("utf-8");
    let before = stat_tree(dest);
    proxy.clear();
    let second = sync(cbob, &["--target", target]);
    assert_nothing_moved(&second, tree, what);
    assert_eq!(
        stat_tree(dest),
        before,
        "{what}: no destination file changed"
    );
    assert!(
        !proxy.requests().is_empty(),
        "{what}: the source was read through the proxy"
    );
    let reads = payload_reads(&proxy.requests());
    assert!(
        reads.is_empty(),
        "{what}: no backup or WAL blob is downloaded again: {reads:?}"
    );
}

#[test]
fn azure_shared_key_token_to_a_local_directory() {
    let src = azure_source();
    let api = one_cluster_api("azshared", azure_token(src, "shared", ACCOUNT_KEY));
    let (cbob, dest, proxy) = azure_source_env(&api);
    let target = dest.to_str().expect("utf-8");
    let what = "Azure shared-key token to local";

    let first = sync(&cbob, &["--target", target]);
    assert_copied_everything(&first, &src.tree, what);
    assert_eq!(
        first.cluster(STANZA)["stanza"],
        STANZA,
        "stanza from the token"
    );
    assert_same_tree(&read_tree(&dest), &src.tree, what);
    assert_restorable(&dest, what);
    let all = format!("{}{}", first.stdout, first.stderr);
    assert!(
        !all.contains(ACCOUNT_KEY),
        "the shared key must never be printed"
    );

    assert_second_azure_run_moves_nothing(&cbob, &dest, &proxy, &src.tree, "second run");
    assert_eq!(api.token_requests(STANZA), 2, "one backup token per run");
}

/// How long the first SAS handed out is valid: shorter than the throttled run.
const SHORT_SAS: Duration = Duration::from_secs(4);

#[test]
fn azure_sas_token_expiring_mid_run_is_reissued() {
    let src = azure_source();
    // Read and list: all a source token needs.
    let short = container_sas(&src.container, "rl", SystemTime::now() + SHORT_SAS);
    let api = one_cluster_api("azsas", azure_token(src, "sas", &short));
    let (cbob, dest, proxy) = azure_source_env(&api);
    let target = dest.to_str().expect("utf-8");
    let what = "Azure SAS token to local";

    // The first token is the short SAS; as soon as cbob has it, the API hands out fresh,
    // long-lived ones (a new SAS per request, as Crunchy Bridge does).
    let first = std::thread::scope(|s| {
        let swapper = s.spawn(|| {
            let asked = wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
                api.token_requests(STANZA) >= 1
            });
            let fresh = azurite().container_sas(&src.container, "rl", Duration::from_secs(3600));
            api.set_token(STANZA, azure_token(src, "sas", &fresh));
            asked
        });
        // ~17 MB at 2 MB/s: the run outlives the first SAS by seconds.
        let run = sync(&cbob, &["--target", target, "--bandwidth", "2MB/s"]);
        assert!(
            swapper.join().expect("token swapper"),
            "cbob never asked for a token"
        );
        run
    });
    assert_copied_everything(&first, &src.tree, what);
    assert!(
        first.elapsed > SHORT_SAS,
        "{what}: the run must outlast the first SAS ({:?})",
        first.elapsed
    );
    let rejected: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert!(
        !rejected.is_empty(),
        "{what}: Azurite must have refused the expired SAS at least once (else nothing expired)"
    );
    assert_eq!(
        api.token_requests(STANZA),
        2,
        "{what}: exactly one new token after the SAS expired\n{}",
        first.describe()
    );
    assert!(
        first
            .stderr
            .contains("fetched a fresh Crunchy Bridge backup token"),
        "{what}: the refresh is logged\n{}",
        first.describe()
    );
    let all = format!("{}{}", first.stdout, first.stderr);
    let sig = short.split("sig=").nth(1).expect("the SAS has a signature");
    let decoded = sig
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    assert!(
        !all.contains(sig) && !all.contains(&decoded),
        "the SAS signature must never be printed"
    );
    assert_same_tree(&read_tree(&dest), &src.tree, what);
    assert_restorable(&dest, what);

    assert_second_azure_run_moves_nothing(&cbob, &dest, &proxy, &src.tree, "second SAS run");
    assert_eq!(
        api.token_requests(STANZA),
        3,
        "one backup token for the second run"
    );
}

/// A shared key of the right shape (64 bytes, base64) that is not the account's.
const WRONG_AZURE_KEY: &str =
    "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWJhc2U2NC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

/// A run refused because of its destination: exit code 1 (SPEC §6: the work failed; a rejected
/// credential is not a local permission problem, as with a wrong API key), stderr naming the
/// destination `describe` and each of `words` (case-insensitive), `secret` never shown.
fn assert_refused(run: &Run, describe: &str, words: &[&str], secret: &str, what: &str) {
    run.expect_code(1, what);
    assert!(
        run.stderr.contains(describe),
        "{what}: the error must name the destination {describe}\n{}",
        run.describe()
    );
    let err = run.stderr.to_lowercase();
    for w in words {
        assert!(
            err.contains(&w.to_lowercase()),
            "{what}: the error must say {w:?}\n{}",
            run.describe()
        );
    }
    assert!(
        secret.is_empty() || !(run.stdout.contains(secret) || run.stderr.contains(secret)),
        "{what}: the secret must never be printed\n{}",
        run.describe()
    );
    assert!(
        run.stdout.trim().is_empty(),
        "{what}: no summary: the run stopped before any cluster\n{}",
        run.describe()
    );
}

#[test]
fn azure_destination_with_a_wrong_key_or_no_container_is_refused_before_any_write() {
    let src = source();
    let api = one_cluster_api("azbad", src.abc.sts_token());
    let endpoint = azurite().endpoint();
    let container = azurite().fresh_container("bad-azure");

    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    azure_dest_env(&mut cbob, &endpoint, &container, PREFIX, WRONG_AZURE_KEY);
    let run = sync(&cbob, &["--retry-count", "1", "--retry-delay", "0.1"]);
    assert_refused(
        &run,
        &format!("azure://{ACCOUNT}/{container}/{PREFIX}"),
        &[
            "not usable",
            "credentials were rejected",
            "CBOB_DEST_AZURE_KEY",
        ],
        WRONG_AZURE_KEY,
        "Azure destination with a wrong key",
    );
    let in_container = download(&azure_spec(&endpoint, &container, ""));
    assert!(
        in_container.is_empty(),
        "a refused key wrote {:?}",
        in_container.keys().take(5).collect::<Vec<_>>()
    );

    let missing = format!("no-such-container-{}", std::process::id());
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    azure_dest_env(&mut cbob, &endpoint, &missing, PREFIX, ACCOUNT_KEY);
    let run = sync(&cbob, &["--retry-count", "1", "--retry-delay", "0.1"]);
    assert_refused(
        &run,
        &format!("azure://{ACCOUNT}/{missing}/{PREFIX}"),
        &[
            "not usable",
            &format!("container '{missing}' does not exist"),
            "CBOB_DEST_CONTAINER",
        ],
        ACCOUNT_KEY,
        "Azure destination without its container",
    );
    let after = try_download(&azure_spec(&endpoint, &missing, ""));
    assert!(
        after.is_err(),
        "the container must still not exist: {after:?}"
    );
}

#[test]
fn gcs_destination_with_a_refused_key_or_no_bucket_is_refused_before_any_write() {
    let src = source();
    let api = one_cluster_api("gcsbad", src.abc.sts_token());
    let endpoint = fake_gcs().endpoint();
    let bucket = fake_gcs().fresh_bucket("bad-gcs");
    let tokens = RefusingTokenEndpoint::start();
    let keys = scratch_tempdir("gcs-key");
    let (key_file, pem) = service_account_key(keys.path(), &tokens.url);

    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    gcs_dest_env(&mut cbob, &endpoint, &bucket, PREFIX, Some(&key_file));
    let run = sync(&cbob, &["--retry-count", "1", "--retry-delay", "0.1"]);
    // A line from the middle of the private key: no part of it may be printed.
    let pem_line = pem.lines().nth(5).expect("a PEM key has lines");
    assert_refused(
        &run,
        &format!("gcs://{bucket}/{PREFIX}"),
        &["access token", "CBOB_DEST_GCS_CREDENTIALS", "invalid_grant"],
        pem_line,
        "GCS destination with a refused service-account key",
    );
    assert!(tokens.requests() >= 1, "cbob must have tried the key");
    // fake-gcs-server accepts anyone: only cbob's refusal keeps the bucket empty.
    let in_bucket = download(&gcs_spec(&endpoint, &bucket, ""));
    assert!(
        in_bucket.is_empty(),
        "a refused key wrote {:?}",
        in_bucket.keys().take(5).collect::<Vec<_>>()
    );

    let missing = format!("no-such-bucket-{}", std::process::id());
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    gcs_dest_env(&mut cbob, &endpoint, &missing, PREFIX, None);
    let run = sync(&cbob, &["--retry-count", "1", "--retry-delay", "0.1"]);
    assert_refused(
        &run,
        &format!("gcs://{missing}/{PREFIX}"),
        &[
            "not usable",
            &format!("bucket '{missing}' does not exist"),
            "CBOB_DEST_BUCKET",
        ],
        "",
        "GCS destination without its bucket",
    );
    let after = try_download(&gcs_spec(&endpoint, &missing, ""));
    assert!(after.is_err(), "the bucket must still not exist: {after:?}");
}

#[test]
fn minio_destination_with_a_wrong_key_or_no_bucket_is_refused_before_any_write() {
    let src = source();
    let api = one_cluster_api("miniobad", src.abc.sts_token());
    let bucket = s3s_fs().fresh_bucket("bad-minio");
    let wrong = S3Access {
        secret_key: "not-the-secret-of-this-user".into(),
        ..S3Access::s3s()
    };

    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    minio_dest_env(&mut cbob, &wrong, &bucket, PREFIX);
    let run = sync(&cbob, &["--retry-count", "1", "--retry-delay", "0.1"]);
    assert_refused(
        &run,
        &format!("minio://{bucket}/{PREFIX}"),
        &[
            "not usable",
            "credentials were rejected",
            "CBOB_DEST_SECRET_KEY",
        ],
        &wrong.secret_key,
        "MinIO destination with a wrong secret key",
    );
    let in_bucket = read_tree(&s3s_fs().data_dir().join(&bucket));
    assert!(
        in_bucket.is_empty(),
        "a refused key wrote {:?}",
        in_bucket.keys().take(5).collect::<Vec<_>>()
    );

    let missing = format!("no-such-bucket-{}", std::process::id());
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    minio_dest_env(&mut cbob, &S3Access::s3s(), &missing, PREFIX);
    let run = sync(&cbob, &["--retry-count", "1", "--retry-delay", "0.1"]);
    assert_refused(
        &run,
        &format!("minio://{missing}/{PREFIX}"),
        &[
            "not usable",
            &format!("bucket '{missing}' does not exist"),
            "CBOB_DEST_BUCKET",
        ],
        S3Access::s3s().secret_key.as_str(),
        "MinIO destination without its bucket",
    );
    assert!(
        !s3s_fs().data_dir().join(&missing).exists(),
        "the bucket must still not exist"
    );
}

/// Azurite keeps its metadata in LokiJS databases saved every 5 s (blobs, and extents: where
/// blob bytes live), so a SIGKILL loses the last seconds of writes, as a crashed server may.
/// Waits until both were saved after `since`, so what had landed by then survives the kill.
fn wait_for_azurite_save(data: &Path, since: SystemTime) {
    let saved = |name: &str| {
        std::fs::metadata(data.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > since)
    };
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            saved("__azurite_db_blob__.json") && saved("__azurite_db_blob_extent__.json")
        }),
        "Azurite did not save its databases in {} within 20 s",
        data.display()
    );
}

/// New objects that must have landed (and, on Azurite, been saved) before the kill.
const LANDED_BEFORE_KILL: usize = 8;

/// A destination holding the fixture as it was with only its full backup (the diff and incr
/// expired with pgBackRest, their WAL removed), copied there by `cbob sync --source file://`.
/// Returns how many objects it holds.
fn seed_with_full_backup_only(cbob: &Cbob, spec: &cbob_core::storage::ProviderSpec) -> usize {
    let fx = fixture::extract();
    let (_dir, older, _) = older_fixture(&fx.repo, STANZA);
    make_older(&older, STANZA);
    let url = format!("file://{}", older.display());
    sync(cbob, &["--source", &url]).expect_ok("seeding the destination with the full backup");
    count_objects(spec).unwrap_or_else(|e| panic!("list the seeded destination: {e}"))
}

/// The S3 Bridge source copied (throttled) to a private `emulator` with its data on disk that
/// holds an older copy (the full backup only), SIGKILLed once new objects have landed: the run
/// fails naming the destination; the server, started again on the same storage, holds a valid
/// repository still listing the full backup, complete, with nothing half-written; the next run
/// completes the copy, keeping what had landed.
fn destination_killed_mid_run(emulator: Emulator) {
    let src = source();
    let tree = &src.abc.tree;
    let mut server = PrivateServer::start(emulator);
    let bucket = server.fresh_bucket("killed");
    let spec = server.spec(&bucket, PREFIX);
    let api = one_cluster_api(&format!("{emulator:?}").to_lowercase(), src.abc.sts_token());
    let mut cbob = Cbob::new();
    bridge_env(&mut cbob, &api, &moto_auth().endpoint());
    match emulator {
        Emulator::Azurite => {
            azure_dest_env(&mut cbob, &server.endpoint(), &bucket, PREFIX, ACCOUNT_KEY)
        }
        Emulator::FakeGcs => gcs_dest_env(&mut cbob, &server.endpoint(), &bucket, PREFIX, None),
    }
    let describe = spec.describe();
    let what = format!("{describe} killed mid-run");
    let seeded = seed_with_full_backup_only(&cbob, &spec);
    let full = fixture::expected().backups[0].label.clone();

    // The diff and incr backups and their WAL (~7 MB) at 512 KiB/s: seconds to kill it in.
    // Few transfers: each one in flight at the kill reads its source at that rate before it
    // finds the destination gone, and retries.
    let mut running = cbob.spawn(&[
        "sync",
        "--format",
        "json",
        "--transfers",
        "4",
        "--bandwidth",
        "512KiB/s",
        "--retry-count",
        "1",
        "--retry-delay",
        "0.1",
    ]);
    let mut landed = 0;
    wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
        landed = count_objects(&spec).unwrap_or(0);
        landed >= seeded + LANDED_BEFORE_KILL || running.try_status().is_some()
    });
    if emulator == Emulator::Azurite {
        wait_for_azurite_save(&server.data, SystemTime::now());
    }
    assert!(
        running.try_status().is_none(),
        "{what}: the run must still be going when the server is killed ({landed} objects)"
    );
    server.kill();
    let killed_at = std::time::Instant::now();
    let failed = running.wait();
    eprintln!(
        "{what}: cbob exited {:.1}s after the server was killed",
        killed_at.elapsed().as_secs_f64()
    );
    failed.expect_code(1, &what);
    let c = failed.cluster(STANZA);
    let error = c["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&describe) && error.to_lowercase().contains("connection refused"),
        "{what}: the error must name the destination and the refused connection: {error}"
    );
    assert_eq!(failed.json()["ok"], false, "{}", failed.describe());

    // Started again on the same storage: a valid repository that still lists the full backup,
    // complete, and every object is exactly its source file (backup.info excepted: it is the
    // older one until the run that completes publishes the new one).
    server.restart();
    let partial = download(&spec);
    let payload = |k: &String| !k.starts_with(&format!("backup/{STANZA}/backup.info"));
    for (key, bytes) in partial.iter().filter(|(k, _)| payload(k)) {
        assert!(
            tree.get(key) == Some(bytes),
            "{what}: {key} at the destination is not its source file ({} bytes): half-written?",
            bytes.len()
        );
    }
    assert!(
        partial.len() >= seeded + LANDED_BEFORE_KILL && partial.len() < tree.len(),
        "{what}: the objects that landed before the kill survive it, and the copy is \
         incomplete ({} objects: {seeded} seeded, {landed} when killed, {} in the source)",
        partial.len(),
        tree.len()
    );
    let dir = scratch_tempdir("killed-copy");
    write_tree(dir.path(), &partial);
    let listed = assert_valid_repo(dir.path(), STANZA, &format!("{what}, after the restart"));
    assert_eq!(
        listed,
        std::slice::from_ref(&full),
        "{what}: the older copy's full backup stays listed (and complete); nothing newer"
    );
    eprintln!(
        "{what}: {seeded} objects seeded, {landed} when killed, {} after the restart",
        partial.len()
    );

    let next = sync(&cbob, &[]);
    next.expect_ok(&format!("{what}: the next run"));
    let c = next.cluster(STANZA);
    let kept = partial
        .keys()
        .filter(|k| payload(k) && !k.contains(".info"))
        .count() as u64;
    assert_eq!(
        c["unchanged_files"].as_u64(),
        Some(kept),
        "{what}: the next run keeps everything that had landed: {c}"
    );
    let copy = download(&spec);
    assert_same_tree(&copy, tree, &format!("{what}, after the next run"));
    let dir = scratch_tempdir("completed-copy");
    write_tree(dir.path(), &copy);
    let labels = assert_valid_repo(dir.path(), STANZA, &format!("{what}, completed"));
    assert_eq!(labels.len(), 3, "{what}: completed copy lists {labels:?}");
}

#[test]
fn azure_destination_killed_mid_run_then_completed() {
    destination_killed_mid_run(Emulator::Azurite);
}

#[test]
fn gcs_destination_killed_mid_run_then_completed() {
    destination_killed_mid_run(Emulator::FakeGcs);
}
