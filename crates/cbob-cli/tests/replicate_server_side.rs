//! `cbob replicate` between two buckets (containers) of one store and one account: the service
//! copies the objects, none of their bytes pass through cbob, and the replica is byte-identical
//! and restorable with pgBackRest. A proxy in front of each real server (moto, Azurite,
//! fake-gcs-server) sees every request and counts the bytes; a run with
//! `settings.server_side_copy: false` through the same proxy is the streaming baseline. A store
//! that refuses copies (the proxy answering 501) makes cbob stream instead, and the replica is
//! still complete; the streamed objects pass the same verifiers as a sync's, so a corrupted
//! object of the primary is never published.

mod store_proxy;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use cbob_core::storage::{DynProvider, KeyPrefix, ProviderRegistry, ProviderSpec, read_to_bytes};
use cbob_test_support::{azurite, fake_gcs, fixture, moto, pg};
use futures::TryStreamExt;
use serde_json::Value;
use store_proxy::{Seen, StoreProxy};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// The fixture synced to a local directory, a sandbox base path and a replication file.
struct World {
    fx: fixture::Fixture,
    base: PathBuf,
    yaml: PathBuf,
}

impl World {
    fn new() -> Self {
        let fx = fixture::extract();
        fs::create_dir_all(fx.dir().join("home")).unwrap();
        let w = Self {
            base: fx.dir().join("base"),
            yaml: fx.dir().join("replication.yaml"),
            fx,
        };
        let out = w.cbob(&[
            "sync",
            "--source",
            &format!("file://{}", w.fx.repo.display()),
        ]);
        assert_eq!(out.status.code(), Some(0), "initial sync: {}", text(&out));
        w
    }

    fn cbob(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cbob"))
            .env_clear()
            .env("HOME", self.fx.dir().join("home"))
            .env("PATH", "/usr/bin:/bin")
            .env("CBOB_BASE_PATH", &self.base)
            .env("CBOB_TARGET_PATH", self.fx.dir().join("primary"))
            .env("CBOB_REPLICATION_CONFIG", &self.yaml)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `replicate sync --format json` with `yaml`; returns the summary.
    fn replicate(&self, yaml: &str) -> Value {
        fs::write(&self.yaml, yaml).unwrap();
        let out = self.cbob(&["replicate", "sync", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        json(&out)
    }

    /// Payload bytes of the repository (what a streaming copy must move).
    fn payload(&self) -> u64 {
        self.fx.expected.bytes
    }
}

/// Downloads everything under a spec's prefix through cbob's own providers.
async fn download(spec: ProviderSpec) -> BTreeMap<String, Vec<u8>> {
    let mut registry = ProviderRegistry::new();
    cbob_provider_s3::register(&mut registry);
    cbob_provider_azure::register(&mut registry);
    cbob_provider_gcs::register(&mut registry);
    let p: DynProvider = registry.build(&spec).await.unwrap();
    let metas: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        out.insert(
            m.key.to_string(),
            read_to_bytes(p.as_ref(), &m.key).await.unwrap().to_vec(),
        );
    }
    out
}

/// Restores the latest backup of a downloaded replica with pgBackRest and checks the data.
fn assert_restorable(w: &World, files: &BTreeMap<String, Vec<u8>>, name: &str) {
    let dir = w.fx.dir().join(format!("restore-{name}"));
    for (k, v) in files {
        let p = dir.join(k);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, v).unwrap();
    }
    fixture::make_world_readable(&dir);
    assert_eq!(
        pg::restore_and_query(&dir, &w.fx.stanza),
        w.fx.expected.values,
        "restore of the {name} replica"
    );
}

/// GETs of backup or WAL file contents (listings, info files and manifests excluded).
fn payload_reads(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|r| r.method == "GET")
        .filter(|r| {
            !["list-type=", "comp=list", "prefix="]
                .iter()
                .any(|q| r.target.contains(q))
        })
        .filter(|r| {
            r.target.contains("pg_data")
                || (r.target.contains("archive") && !r.target.contains(".info"))
        })
        .collect()
}

/// What one replication through the proxy did: (summary of the replica, bytes store→cbob,
/// bytes cbob→store, requests).
struct Measured {
    replica: Value,
    down: u64,
    up: u64,
    seen: Vec<Seen>,
}

fn measure(w: &World, proxy: &StoreProxy, yaml: &str) -> Measured {
    proxy.reset();
    let doc = w.replicate(yaml);
    let (down, up) = proxy.bytes();
    Measured {
        replica: doc["replicas"][0].clone(),
        down,
        up,
        seen: proxy.seen(),
    }
}

/// Checks a server-side run against the streaming baseline, and prints the figures.
fn assert_server_side(w: &World, what: &str, fast: &Measured, slow: &Measured) {
    let files = w.fx.expected.files;
    let payload = w.payload();
    eprintln!(
        "{what}: server-side: {} copy requests, {} B down, {} B up; streamed: {} B down, {} B up; payload {payload} B in {files} files; durations {:.2}s vs {:.2}s",
        fast.seen.iter().filter(|r| r.copy).count(),
        fast.down,
        fast.up,
        slow.down,
        slow.up,
        fast.replica["duration_seconds"].as_f64().unwrap(),
        slow.replica["duration_seconds"].as_f64().unwrap(),
    );
    let r = &fast.replica;
    assert_eq!(r["server_side"], true, "{r}");
    assert_eq!(r["streamed_after_refusal"], 0, "{r}");
    assert_eq!(r["objects_behind"], 0, "{r}");
    // Every backup and WAL file was copied by the service; only info files and manifests
    // (already in memory from the plan) were written by cbob.
    let copied = r["copied_files"].as_u64().unwrap();
    let server_side = r["server_side_copies"].as_u64().unwrap();
    assert!(copied >= files, "{r}");
    assert!(
        copied - server_side <= 12,
        "{server_side} of {copied} server-side: {r}"
    );
    // One copy request per such object, and not one read of a backup or WAL file's bytes.
    let copies = fast.seen.iter().filter(|r| r.copy).count() as u64;
    assert_eq!(copies, server_side, "copy requests seen by the proxy");
    let reads = payload_reads(&fast.seen);
    assert!(
        reads.is_empty(),
        "payload read through cbob: {:?}",
        &reads[..reads.len().min(3)]
    );
    // The bytes tell the same story: the streaming run carried the payload both ways; the
    // server-side run only requests, answers (per-object headers and metadata: the fixture's
    // files are small, 13 KiB on average), listings, info files and manifests.
    assert!(
        slow.down >= payload && slow.up >= payload,
        "baseline moved {} / {} of {payload}",
        slow.down,
        slow.up
    );
    assert!(
        fast.down + payload * 3 / 4 <= slow.down,
        "server-side run read {} bytes, baseline {}",
        fast.down,
        slow.down
    );
    assert!(
        fast.up + payload * 3 / 4 <= slow.up,
        "server-side run sent {} bytes, baseline {}",
        fast.up,
        slow.up
    );
    let s = &slow.replica;
    assert_eq!(
        (s["server_side"].as_bool(), s["server_side_copies"].as_u64()),
        (Some(false), Some(0)),
        "{s}"
    );
    assert!(
        payload_reads(&slow.seen).len() as u64 >= files / 2,
        "the baseline streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_to_s3_on_one_account_copies_server_side_identically_and_restorably() {
    let w = World::new();
    let m = moto();
    let mc = m.credentials();
    let (primary, replica, baseline) = (
        m.fresh_bucket("ssc-primary"),
        m.fresh_bucket("ssc-replica"),
        m.fresh_bucket("ssc-baseline"),
    );
    let proxy = StoreProxy::start(&m.endpoint());
    let ep = proxy.endpoint_for(&m.endpoint());
    let keys = format!(
        "access_key: {}, secret_key: {}",
        mc.access_key_id, mc.secret_access_key
    );
    // The primary: the synced fixture replicated (streamed) from the local sync destination.
    w.replicate(&format!(
        "replication:\n  replicas:\n    - {{name: seed, provider: aws, bucket: {primary}, prefix: main, endpoint: {}, {keys}}}\n",
        m.endpoint()
    ));
    let yaml = |bucket: &str, server_side: bool| {
        format!(
            "replication:\n  primary: {{provider: aws, bucket: {primary}, prefix: main, endpoint: {ep}, {keys}}}\n  \
             replicas:\n    - {{name: copy, provider: aws, bucket: {bucket}, prefix: rep/x, endpoint: {ep}, {keys}, \
             storage_class: STANDARD_IA, sse: AES256}}\n  settings: {{parallel_transfers: 8, server_side_copy: {server_side}}}\n"
        )
    };
    let fast = measure(&w, &proxy, &yaml(&replica, true));
    let slow = measure(&w, &proxy, &yaml(&baseline, false));
    assert_server_side(&w, "S3 (moto)", &fast, &slow);

    let spec = |bucket: &str| ProviderSpec {
        kind: "s3".into(),
        bucket: Some(bucket.into()),
        prefix: "rep/x".into(),
        endpoint: Some(m.endpoint()),
        region: Some("us-east-1".into()),
        access_key: Some(mc.access_key_id.as_str().into()),
        secret_key: Some(mc.secret_access_key.as_str().into()),
        ..ProviderSpec::default()
    };
    let source = fixture::read_tree(&w.fx.repo);
    let copied = download(spec(&replica)).await;
    assert_eq!(
        copied, source,
        "the server-side replica differs from the fixture"
    );
    assert_eq!(download(spec(&baseline)).await, source);

    // The replica's storage class and encryption apply to copied objects as to written ones.
    let p = cbob_provider_s3::S3Provider::new(
        cbob_provider_s3::S3Config::from_spec(&spec(&replica)).unwrap(),
    )
    .await
    .unwrap();
    let client = p.sdk_client().await.unwrap();
    let key = copied.keys().find(|k| k.contains("pg_data")).unwrap();
    let head = client
        .head_object()
        .bucket(&replica)
        .key(format!("rep/x/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("AES256")
    );

    assert_restorable(&w, &copied, "s3");

    // Nothing changed: the second run copies nothing, server-side or otherwise.
    let again = measure(&w, &proxy, &yaml(&replica, true));
    assert_eq!(again.replica["copied_files"], 0, "{}", again.replica);
    assert_eq!(again.seen.iter().filter(|r| r.copy).count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_copies_gets_the_objects_streamed() {
    let w = World::new();
    let m = moto();
    let mc = m.credentials();
    let (primary, replica) = (
        m.fresh_bucket("refuse-primary"),
        m.fresh_bucket("refuse-replica"),
    );
    let keys = format!(
        "access_key: {}, secret_key: {}",
        mc.access_key_id, mc.secret_access_key
    );
    w.replicate(&format!(
        "replication:\n  replicas:\n    - {{name: seed, provider: aws, bucket: {primary}, endpoint: {}, {keys}}}\n",
        m.endpoint()
    ));
    let proxy = StoreProxy::start(&m.endpoint());
    proxy.refuse_copies();
    let ep = proxy.endpoint_for(&m.endpoint());
    fs::write(
        &w.yaml,
        format!(
            "replication:\n  primary: {{provider: aws, bucket: {primary}, endpoint: {ep}, {keys}}}\n  \
             replicas:\n    - {{name: picky, provider: aws, bucket: {replica}, endpoint: {ep}, {keys}}}\n  \
             settings: {{parallel_transfers: 4}}\n"
        ),
    )
    .unwrap();
    let out = w.cbob(&["replicate", "sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("✓ picky") && stdout.contains("server-side copy refused"),
        "{}",
        text(&out)
    );

    let files = w.fx.expected.files;
    let seen = proxy.seen();
    let refused = seen.iter().filter(|r| r.refused).count() as u64;
    // After the first refusal cbob stops asking: at most the copies already in flight.
    assert!((1..=4).contains(&refused), "{refused} copies refused");
    assert!(
        payload_reads(&seen).len() as u64 >= files / 2,
        "objects were streamed"
    );
    assert_eq!(
        download(ProviderSpec {
            kind: "s3".into(),
            bucket: Some(replica.clone()),
            endpoint: Some(m.endpoint()),
            region: Some("us-east-1".into()),
            access_key: Some(mc.access_key_id.as_str().into()),
            secret_key: Some(mc.secret_access_key.as_str().into()),
            ..ProviderSpec::default()
        })
        .await,
        fixture::read_tree(&w.fx.repo),
        "the streamed replica differs"
    );
    // The JSON summary says how it went.
    let doc = json(&w.cbob(&["replicate", "status", "--format", "json"]));
    assert_eq!(doc["replicas"][0]["lag"]["objects_behind"], 0, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_container_to_container_in_one_account_copies_server_side() {
    let w = World::new();
    let az = azurite();
    let (primary, replica, baseline) = (
        az.fresh_container("ssc-primary"),
        az.fresh_container("ssc-replica"),
        az.fresh_container("ssc-baseline"),
    );
    let account = format!(
        "storage_account: {}, secret_key: {}",
        azurite::ACCOUNT,
        azurite::ACCOUNT_KEY
    );
    w.replicate(&format!(
        "replication:\n  replicas:\n    - {{name: seed, provider: azure, container: {primary}, prefix: main, endpoint: {}, {account}}}\n",
        az.endpoint()
    ));
    let proxy = StoreProxy::start(&az.endpoint());
    let ep = proxy.endpoint_for(&az.endpoint());
    let yaml = |container: &str, server_side: bool| {
        format!(
            "replication:\n  primary: {{provider: azure, container: {primary}, prefix: main, endpoint: {ep}, {account}}}\n  \
             replicas:\n    - {{name: copy, provider: azure, container: {container}, prefix: rep, endpoint: {ep}, {account}, \
             storage_class: cool}}\n  settings: {{parallel_transfers: 8, server_side_copy: {server_side}}}\n"
        )
    };
    let fast = measure(&w, &proxy, &yaml(&replica, true));
    let slow = measure(&w, &proxy, &yaml(&baseline, false));
    assert_server_side(&w, "Azure (Azurite)", &fast, &slow);
    let spec = |container: &str| ProviderSpec {
        kind: "azure".into(),
        account: Some(azurite::ACCOUNT.into()),
        bucket: Some(container.into()),
        prefix: "rep".into(),
        endpoint: Some(az.endpoint()),
        secret_key: Some(azurite::ACCOUNT_KEY.into()),
        ..ProviderSpec::default()
    };
    let copied = download(spec(&replica)).await;
    assert_eq!(
        copied,
        fixture::read_tree(&w.fx.repo),
        "the server-side replica differs"
    );
    assert_restorable(&w, &copied, "azure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_bucket_to_bucket_with_one_identity_copies_server_side() {
    let w = World::new();
    let g = fake_gcs();
    let (primary, replica, baseline) = (
        g.fresh_bucket("ssc-primary"),
        g.fresh_bucket("ssc-replica"),
        g.fresh_bucket("ssc-baseline"),
    );
    w.replicate(&format!(
        "replication:\n  replicas:\n    - {{name: seed, provider: gcs, bucket: {primary}, prefix: main, endpoint: {}}}\n",
        g.endpoint()
    ));
    let proxy = StoreProxy::start(&g.endpoint());
    let ep = proxy.endpoint_for(&g.endpoint());
    let yaml = |bucket: &str, server_side: bool| {
        format!(
            "replication:\n  primary: {{provider: gcs, bucket: {primary}, prefix: main, endpoint: {ep}}}\n  \
             replicas:\n    - {{name: copy, provider: gcs, bucket: {bucket}, prefix: rep, endpoint: {ep}, \
             storage_class: nearline}}\n  settings: {{parallel_transfers: 8, server_side_copy: {server_side}}}\n"
        )
    };
    let fast = measure(&w, &proxy, &yaml(&replica, true));
    let slow = measure(&w, &proxy, &yaml(&baseline, false));
    assert_server_side(&w, "GCS (fake-gcs-server)", &fast, &slow);
    let spec = |bucket: &str| ProviderSpec {
        kind: "gcs".into(),
        bucket: Some(bucket.into()),
        prefix: "rep".into(),
        endpoint: Some(g.endpoint()),
        ..ProviderSpec::default()
    };
    let copied = download(spec(&replica)).await;
    assert_eq!(
        copied,
        fixture::read_tree(&w.fx.repo),
        "the server-side replica differs"
    );
    assert_restorable(&w, &copied, "gcs");
}

/// Writes `files` under a spec's prefix through cbob's own providers.
async fn upload(spec: ProviderSpec, files: &BTreeMap<String, Vec<u8>>) {
    let mut registry = ProviderRegistry::new();
    cbob_provider_s3::register(&mut registry);
    let p: DynProvider = registry.build(&spec).await.unwrap();
    for (k, v) in files {
        p.put(
            &cbob_core::storage::ObjectKey::new(k.as_str()).unwrap(),
            cbob_core::storage::Body::from_bytes(v.clone()),
            &cbob_core::storage::PutOptions::default(),
        )
        .await
        .unwrap();
    }
}

/// A refused copy is streamed through the same verifiers as any sync transfer: a WAL segment
/// of the primary with one byte changed (same size, so a size check passes) is caught by its
/// SHA-1, retried, reported and never published at the replica, while the primary's other
/// stanza, intact, is copied whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_copy_streams_through_the_verifiers_and_never_publishes_a_corrupt_object() {
    let w = World::new();
    let m = moto();
    let mc = m.credentials();
    let (primary, replica) = (
        m.fresh_bucket("corrupt-primary"),
        m.fresh_bucket("corrupt-replica"),
    );
    let spec = |bucket: &str| ProviderSpec {
        kind: "s3".into(),
        bucket: Some(bucket.into()),
        endpoint: Some(m.endpoint()),
        region: Some("us-east-1".into()),
        access_key: Some(mc.access_key_id.as_str().into()),
        secret_key: Some(mc.secret_access_key.as_str().into()),
        ..ProviderSpec::default()
    };
    // The primary holds the fixture twice: as its own stanza (intact) and as a second stanza
    // with one WAL segment corrupted in place.
    let stanza = w.fx.stanza.clone();
    let bad_stanza = format!("{stanza}-bad");
    let source = fixture::read_tree(&w.fx.repo);
    let rename = |k: &str| {
        k.replacen(
            &format!("backup/{stanza}/"),
            &format!("backup/{bad_stanza}/"),
            1,
        )
        .replacen(
            &format!("archive/{stanza}/"),
            &format!("archive/{bad_stanza}/"),
            1,
        )
    };
    let mut primary_files = source.clone();
    primary_files.extend(source.iter().map(|(k, v)| (rename(k), v.clone())));
    let segment = primary_files
        .keys()
        .find(|k| {
            // <24 hex digits of the segment>-<SHA-1>[.gz|.lz4|...]
            let name = k.rsplit('/').next().unwrap();
            k.starts_with(&format!("archive/{bad_stanza}/"))
                && name.len() > 25
                && name[..24].bytes().all(|b| b.is_ascii_hexdigit())
                && name.as_bytes()[24] == b'-'
        })
        .expect("a WAL segment in the fixture")
        .clone();
    let original = primary_files[&segment].clone();
    let corrupted = primary_files.get_mut(&segment).unwrap();
    let at = corrupted.len() / 2;
    corrupted[at] ^= 0x01;
    assert_eq!(corrupted.len(), original.len(), "same size");
    upload(spec(&primary), &primary_files).await;

    let proxy = StoreProxy::start(&m.endpoint());
    proxy.refuse_copies();
    let ep = proxy.endpoint_for(&m.endpoint());
    let keys = format!(
        "access_key: {}, secret_key: {}",
        mc.access_key_id, mc.secret_access_key
    );
    fs::write(
        &w.yaml,
        format!(
            "replication:\n  primary: {{provider: aws, bucket: {primary}, endpoint: {ep}, {keys}}}\n  \
             replicas:\n    - {{name: picky, provider: aws, bucket: {replica}, endpoint: {ep}, {keys}}}\n  \
             settings: {{parallel_transfers: 4, retry_attempts: 1, retry_delay: 0}}\n"
        ),
    )
    .unwrap();
    let out = w.cbob(&["replicate", "sync", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    let r = &doc["replicas"][0];
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["server_side"], true, "{r}");
    assert!(r["copy_refusal"].is_string(), "{r}");
    assert!(r["streamed_after_refusal"].as_u64().unwrap() > 0, "{r}");
    // The one failure: the corrupted segment, caught by verification after its retry.
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(
        errors[0].starts_with(&format!("stanza {bad_stanza}:"))
            && errors[0].contains(&format!(
                "verification failed for {segment} after 2 attempt(s)"
            ))
            && errors[0].contains("not published"),
        "{}",
        errors[0]
    );
    // The segment's bytes were read through cbob (streamed), never copied by the service.
    let seen = proxy.seen();
    let name = segment.rsplit('/').next().unwrap();
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.target.contains(name)),
        "the segment was not streamed"
    );

    let at_replica = download(spec(&replica)).await;
    assert!(
        !at_replica.contains_key(&segment),
        "the corrupted segment was published"
    );
    // The intact stanza arrived whole and byte-identical.
    let good: BTreeMap<_, _> = at_replica
        .iter()
        .filter(|(k, _)| !k.contains(&format!("/{bad_stanza}/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(good, source, "the intact stanza differs at the replica");
    // Whatever backup or WAL file of the failed stanza was published is the primary's intact
    // bytes (its info files are the engine's own, listing only what the replica holds).
    let published: Vec<_> = at_replica
        .iter()
        .filter(|(k, _)| k.contains(&format!("/{bad_stanza}/")) && !k.contains(".info"))
        .collect();
    assert!(!published.is_empty(), "nothing of {bad_stanza} was copied");
    for (k, v) in published {
        assert!(primary_files[k] == *v, "{k} differs from the primary");
    }
}
