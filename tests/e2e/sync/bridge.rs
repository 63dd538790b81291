//! Crunchy Bridge discovery and copies: two clusters found across teams and pages (one cluster
//! per page), a replica and an ignored cluster skipped without ever asking for their tokens,
//! copies to a local directory and to S3 that are byte-identical and restore, second runs that
//! move nothing, `--status`, `--dry-run` and `--estimate-only`.

use cbob_test_support::bridge::{FakeBridge, FakeCluster};
use cbob_test_support::{fixture, moto_auth, pg, s3s_fs};
use serde_json::Value;

use crate::common::bridge::{BridgeSource, bridge_env, source};
use crate::common::cbob::{Cbob, Run};
use crate::common::proxy::{Recorded, RecordingProxy};
use crate::common::repo::{
    Tree, assert_same_tree, assert_valid_repo, copy_tree, read_tree, stat_tree,
    without_newest_backup, write_tree,
};
use crate::common::s3::{S3Access, dest_env};
use crate::common::scratch_tempdir;

/// A replica of def456: listed as a cluster with a `parent_id` and nested under its parent.
pub const REPLICA: &str = "rep789";
/// A primary listed in `CBOB_IGNORE_CLUSTERS`.
pub const IGNORED: &str = "ign000";

/// A fake API with three teams (one cluster per page): abc123 in the personal team; def456
/// and its replica in a second team (two pages); an ignored cluster in a third. Only the two
/// primaries have tokens (real STS credentials): asking for any other token fails the test.
pub fn discovery_api(src: &BridgeSource, api_key: &str) -> FakeBridge {
    let api = FakeBridge::start(api_key);
    api.add_team("t1personal", "Personal", true);
    api.add_team("t2acme", "Acme", false);
    api.add_team("t3legacy", "Legacy", false);
    api.add_cluster(FakeCluster::primary("abc123", "t1personal"));
    api.add_cluster(FakeCluster::primary("def456", "t2acme").with_nested_replicas(&[REPLICA]));
    api.add_cluster(FakeCluster::replica(REPLICA, "t2acme", "def456"));
    api.add_cluster(FakeCluster::primary(IGNORED, "t3legacy"));
    api.set_token("abc123", src.abc.sts_token());
    api.set_token("def456", src.def.sts_token());
    api
}

/// The environment of a discovery run: the fake API, the source store, the ignore list.
pub fn discovery_env(cbob: &mut Cbob, api: &FakeBridge, source_endpoint: &str) {
    bridge_env(cbob, api, source_endpoint);
    cbob.env("CBOB_IGNORE_CLUSTERS", IGNORED);
}

/// Every page of every team was read, and neither the replica nor the ignored cluster was
/// touched at all (no token, no backups listing).
fn assert_discovery_requests(api: &FakeBridge, runs: usize) {
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .all(|r| r.auth_ok && r.accept.as_deref() == Some("application/json")),
        "every API request carries the bearer key and Accept: application/json: {reqs:?}"
    );
    for team in ["t1personal", "t2acme", "t3legacy"] {
        assert!(
            reqs.iter().any(|r| r.path == "/clusters"
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains(&format!("team_id={team}")))),
            "discovery must list the clusters of team {team}: {reqs:?}"
        );
    }
    assert!(
        reqs.iter().any(|r| r.path == "/clusters"
            && r.query
                .as_deref()
                .is_some_and(|q| q.contains("team_id=t2acme") && q.contains("cursor="))),
        "the second page of team t2acme (one cluster per page) must be fetched: {reqs:?}"
    );
    for id in ["abc123", "def456"] {
        assert_eq!(
            api.token_requests(id),
            runs,
            "one backup token per cluster per run for {id}"
        );
    }
    for id in [REPLICA, IGNORED] {
        let touched: Vec<_> = reqs.iter().filter(|r| r.cluster() == Some(id)).collect();
        assert!(
            touched.is_empty(),
            "{id} must never be asked for anything (replica / CBOB_IGNORE_CLUSTERS): {touched:?}"
        );
    }
}

/// The JSON summary of a successful run over both clusters, with the skips reported.
fn assert_both_clusters_ok(run: &Run) {
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{}", run.describe());
    assert_eq!(
        run.cluster_names(),
        ["abc123", "def456"],
        "exactly the two primaries are synced\n{}",
        run.describe()
    );
    for id in ["abc123", "def456"] {
        let c = run.cluster(id);
        assert_eq!(c["ok"], true, "{id}: {c}");
        assert_eq!(c["stanza"], id, "{id}: stanza from the backup token");
        assert_eq!(
            c["backups"].as_array().map(Vec::len),
            Some(3),
            "{id}: full, diff and incr: {c}"
        );
    }
    let skipped = |k: &str| -> Vec<String> {
        doc[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        skipped("skipped_replicas").contains(&REPLICA.to_string()),
        "the replica is reported as skipped: {doc}"
    );
    assert_eq!(
        skipped("skipped_ignored"),
        [IGNORED],
        "the ignored cluster is reported: {doc}"
    );
}

/// A second run: nothing copied, overall and per cluster.
fn assert_nothing_copied(run: &Run) {
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{}", run.describe());
    assert_eq!(
        doc["copied_files"],
        0,
        "a second run copies nothing\n{}",
        run.describe()
    );
    for id in ["abc123", "def456"] {
        let c = run.cluster(id);
        assert_eq!(c["copied_files"], 0, "{id}: {c}");
        assert_eq!(c["planned_files"], 0, "{id}: {c}");
    }
}

/// Info files and manifests: what a run may read from the source even when nothing changed.
fn is_metadata(path: &str) -> bool {
    [
        "/backup.info",
        "/backup.info.copy",
        "/archive.info",
        "/archive.info.copy",
        "/backup.manifest",
        "/backup.manifest.copy",
    ]
    .iter()
    .any(|s| path.ends_with(s))
}

/// GETs of objects (not listings, info files or manifests) through a proxy.
fn payload_reads(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.method == "GET")
        .filter(|r| {
            // "/bucket" or "/bucket/" is a listing; "/bucket/key" an object.
            r.path
                .trim_start_matches('/')
                .split_once('/')
                .is_some_and(|(_, key)| !key.is_empty())
        })
        .filter(|r| !is_metadata(&r.path))
        .map(|r| r.path.clone())
        .collect()
}

/// Both stanzas of a copy are valid repositories with all three backups complete, and the
/// copy of `restore` restores to the fixture's values.
fn assert_restorable(repo: &std::path::Path, restore: &str, what: &str) {
    for stanza in ["abc123", "def456"] {
        let labels = assert_valid_repo(repo, stanza, what);
        assert_eq!(labels.len(), 3, "{what}: {stanza} lists {labels:?}");
    }
    let values = pg::restore_and_query(repo, restore);
    assert_eq!(
        values,
        fixture::expected().values,
        "{what}: a restore of {restore} from the copy must find the fixture's data"
    );
}

fn api_key(test: &str) -> String {
    format!("cbkey_e2e_{test}_{}", std::process::id())
}

#[test]
fn two_clusters_to_a_local_directory_then_a_second_run_moves_nothing() {
    let src = source();
    let api = discovery_api(src, &api_key("local"));
    let source_proxy = RecordingProxy::start(&moto_auth().endpoint());
    let mut cbob = Cbob::new();
    discovery_env(&mut cbob, &api, &source_proxy.endpoint());
    let dest = cbob.path("dest");
    let target = dest.to_str().expect("utf-8");

    let first = cbob.run(&["sync", "--format", "json", "--target", target]);
    first.expect_ok("first sync of two clusters");
    assert_both_clusters_ok(&first);
    assert_same_tree(&read_tree(&dest), &src.both_trees(), "local copy");
    assert_discovery_requests(&api, 1);
    assert_restorable(&dest, "abc123", "local copy");

    // Second run: nothing moves. Rewriting a file would change its inode (rename into place)
    // or mtime; reading a backup or WAL file from the source would show at the proxy.
    let before = stat_tree(&dest);
    source_proxy.clear();
    let second = cbob.run(&["sync", "--format", "json", "--target", target]);
    second.expect_ok("second sync");
    assert_nothing_copied(&second);
    assert_eq!(
        stat_tree(&dest),
        before,
        "the second run must not rewrite, add or remove any destination file"
    );
    let reads = payload_reads(&source_proxy.requests());
    assert!(
        reads.is_empty(),
        "the second run must not download backup or WAL files again: {reads:?}"
    );
    assert_discovery_requests(&api, 2);

    // --status, JSON and text, reports both clusters.
    let status = cbob.run(&["sync", "--status", "--format", "json"]);
    status.expect_ok("sync --status --format json");
    let doc = status.json();
    for id in ["abc123", "def456"] {
        let entry = doc["clusters"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["cluster"] == id))
            .unwrap_or_else(|| panic!("--status lists {id}: {doc}"));
        assert_eq!(entry["last_result"], "success", "{id}: {entry}");
        assert_eq!(entry["stanza"], id, "{id}: {entry}");
        assert_eq!(entry["backups"], 3, "{id}: {entry}");
        assert!(
            entry["last_success_at"].as_i64().is_some(),
            "{id}: a success time: {entry}"
        );
        assert!(
            entry["destination"]
                .as_str()
                .is_some_and(|d| d.contains(target)),
            "{id}: the destination is named: {entry}"
        );
    }
    let text = cbob.run(&["sync", "--status"]);
    text.expect_ok("sync --status");
    for id in ["abc123", "def456"] {
        assert!(
            text.stdout
                .lines()
                .any(|l| l.starts_with(id) && l.contains("success")),
            "--status text has a success line for {id}:\n{}",
            text.stdout
        );
    }
    assert!(
        !text.stdout.contains(IGNORED) && !text.stdout.contains(REPLICA),
        "--status lists only synced clusters:\n{}",
        text.stdout
    );
}

#[test]
fn two_clusters_to_s3_then_a_second_run_writes_nothing() {
    let src = source();
    let api = discovery_api(src, &api_key("s3"));
    let s3s = S3Access::s3s();
    let bucket = s3s_fs().fresh_bucket("dest-bridge");
    let dest_proxy = RecordingProxy::start(&s3s.endpoint);
    let mut cbob = Cbob::new();
    discovery_env(&mut cbob, &api, &moto_auth().endpoint());
    let via_proxy = S3Access {
        endpoint: dest_proxy.endpoint(),
        ..s3s.clone()
    };
    dest_env(&mut cbob, &via_proxy, &bucket, "offsite/bridge");
    let stored = s3s_fs().data_dir().join(&bucket).join("offsite/bridge");

    let first = cbob.run(&["sync", "--format", "json"]);
    first.expect_ok("first sync of two clusters to S3");
    assert_both_clusters_ok(&first);
    assert!(
        dest_proxy.writes().len() >= src.both_trees().len(),
        "every file is written to the destination through the proxy"
    );
    let copy: Tree = read_tree(&stored);
    assert_same_tree(&copy, &src.both_trees(), "S3 copy (s3s-fs data dir)");
    assert_discovery_requests(&api, 1);

    // Restore from a local download of the S3 copy.
    let download = scratch_tempdir("s3-copy");
    copy_tree(&stored, download.path());
    assert_restorable(download.path(), "def456", "S3 copy");

    let before = stat_tree(&stored);
    dest_proxy.clear();
    let second = cbob.run(&["sync", "--format", "json"]);
    second.expect_ok("second sync to S3");
    assert_nothing_copied(&second);
    assert!(
        !dest_proxy.requests().is_empty(),
        "the second run did talk to the destination through the proxy"
    );
    let writes = dest_proxy.writes();
    let repo_writes: Vec<_> = writes
        .iter()
        .filter(|r| r.path.contains("/archive/") || r.path.contains("/backup/"))
        .collect();
    assert!(
        repo_writes.is_empty(),
        "the second run must write no repository object: {repo_writes:?}"
    );
    assert_eq!(stat_tree(&stored), before, "no destination object changed");
    // Last, as it is the strictest: not even a probe object may be written and deleted on a
    // run with nothing to do (versioned or object-locked buckets keep every such write).
    assert!(
        writes.is_empty(),
        "the second run must send no PUT/POST/DELETE at all to the destination: {writes:?}"
    );
}

fn planned(run: &Run, id: &str) -> (u64, u64) {
    let c: Value = run.cluster(id);
    (
        c["planned_files"].as_u64().unwrap_or_default(),
        c["planned_bytes"].as_u64().unwrap_or_default(),
    )
}

#[test]
fn dry_run_and_estimate_only_write_nothing() {
    let src = source();
    let api = discovery_api(src, &api_key("plan"));
    let mut cbob = Cbob::new();
    discovery_env(&mut cbob, &api, &moto_auth().endpoint());

    // A destination holding abc123 without its newest backup and WAL, nothing of def456.
    let dest = cbob.path("dest");
    let partial = without_newest_backup(&src.abc.tree);
    let missing_abc = src.abc.tree.len() - partial.len();
    write_tree(&dest, &partial);
    let target = dest.to_str().expect("utf-8");
    let before = stat_tree(&dest);

    let dry = cbob.run(&["sync", "--dry-run", "--format", "json", "--target", target]);
    dry.expect_ok("sync --dry-run");
    let doc = dry.json();
    assert_eq!(doc["dry_run"], true, "{doc}");
    assert_eq!(doc["copied_files"], 0, "{doc}");
    let (abc_files, _) = planned(&dry, "abc123");
    let (def_files, def_bytes) = planned(&dry, "def456");
    assert!(
        abc_files >= missing_abc as u64,
        "abc123 lacks {missing_abc} files; the dry run plans {abc_files}"
    );
    assert!(
        abc_files < src.abc.tree.len() as u64,
        "abc123 is mostly there: the dry run must not plan everything ({abc_files})"
    );
    let def_size: u64 = src.def.tree.values().map(|v| v.len() as u64).sum();
    assert!(
        def_files >= src.def.tree.len() as u64 && def_bytes >= def_size,
        "def456 is missing entirely: {def_files} files, {def_bytes} bytes planned"
    );
    assert_eq!(
        stat_tree(&dest),
        before,
        "--dry-run changed the destination"
    );
    assert!(
        read_tree(&cbob.base()).is_empty(),
        "--dry-run wrote under CBOB_BASE_PATH (state included): {:?}",
        read_tree(&cbob.base()).keys().collect::<Vec<_>>()
    );

    // --estimate-only: the same numbers, JSON and text, and still nothing written.
    let est = cbob.run(&[
        "sync",
        "--estimate-only",
        "--format",
        "json",
        "--target",
        target,
    ]);
    est.expect_ok("sync --estimate-only --format json");
    assert_eq!(est.json()["estimate_only"], true);
    for id in ["abc123", "def456"] {
        assert_eq!(
            planned(&est, id),
            planned(&dry, id),
            "{id}: estimate = dry run"
        );
    }
    let text = cbob.run(&["sync", "--estimate-only", "--target", target]);
    text.expect_ok("sync --estimate-only");
    for (id, files) in [("abc123", abc_files), ("def456", def_files)] {
        assert!(
            text.stdout
                .lines()
                .any(|l| l.contains(id) && l.contains(&format!("would copy {files} files"))),
            "--estimate-only prints {id}'s files:\n{}",
            text.stdout
        );
    }
    assert_eq!(
        stat_tree(&dest),
        before,
        "--estimate-only changed the destination"
    );
    assert!(
        read_tree(&cbob.base()).is_empty(),
        "--estimate-only wrote under CBOB_BASE_PATH"
    );

    // A dry run to S3 sends no write.
    let bucket = s3s_fs().fresh_bucket("dest-dry");
    let proxy = RecordingProxy::start(&S3Access::s3s().endpoint);
    let via_proxy = S3Access {
        endpoint: proxy.endpoint(),
        ..S3Access::s3s()
    };
    dest_env(&mut cbob, &via_proxy, &bucket, "dry");
    let s3_dry = cbob.run(&["sync", "--dry-run", "--format", "json"]);
    s3_dry.expect_ok("sync --dry-run to S3");
    assert!(
        proxy.writes().is_empty(),
        "--dry-run sent writes to S3: {:?}",
        proxy.writes()
    );
    assert!(
        read_tree(&s3s_fs().data_dir().join(&bucket)).is_empty(),
        "--dry-run created objects"
    );
}
