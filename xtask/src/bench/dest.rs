//! `cargo xtask bench --dest ...`: cbob alone, copying the bench repositories from the bench
//! s3s-fs into each kind of destination it supports, each served by its own local server:
//!
//! - `local`: a directory (the tool comparison's case)
//! - `s3`, `minio`: a second patched s3s-fs (own process, own data directory), so source and
//!   destination are not one process; `CBOB_DEST_TYPE=s3` / `minio`
//! - `azure`: Azurite in memory, the development account's shared key
//! - `gcs`: fake-gcs-server with its memory backend, anonymous
//!
//! Every sample gets a fresh server (empty store, nothing left in memory from the last one).
//! After the cold copy and after the no-op resync the destination is listed through its own
//! server API and must hold exactly the source's keys with the same sizes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use cbob_test_support::locate::Tool as ServerTool;
use cbob_test_support::process::{free_port, log_tail, spawn_thread_owned};
use cbob_test_support::s3s::{ACCESS_KEY, SECRET_KEY};
use cbob_test_support::{azurite, gcs, http};

use super::repos::Repo;
use super::server::Server;
use super::tools::{self, Programs, Slot};

/// Bucket (container) the copies go to, and the prefix inside it.
const DEST_BUCKET: &str = "cbob-dest";
const DEST_PREFIX: &str = "copy";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Dest {
    Local,
    S3,
    Minio,
    Azure,
    Gcs,
}

impl Dest {
    pub fn name(self) -> &'static str {
        match self {
            Dest::Local => "local",
            Dest::S3 => "s3",
            Dest::Minio => "minio",
            Dest::Azure => "azure",
            Dest::Gcs => "gcs",
        }
    }

    /// What serves the destination, for the results' metadata.
    pub fn server(self) -> &'static str {
        match self {
            Dest::Local => "a directory on the filesystem of the source's data",
            Dest::S3 | Dest::Minio => {
                "a second patched s3s-fs 0.14.1 (own process and data directory)"
            }
            Dest::Azure => "Azurite blob service, --inMemoryPersistence --loose",
            Dest::Gcs => "fake-gcs-server, -backend memory",
        }
    }

    /// The destination settings cbob gets (secrets left out).
    pub fn settings(self) -> String {
        let common = format!("CBOB_DEST_ENDPOINT=URL CBOB_DEST_PREFIX={DEST_PREFIX}");
        match self {
            Dest::Local => "--target DIR".into(),
            Dest::S3 => format!(
                "CBOB_DEST_TYPE=s3 {common} CBOB_DEST_BUCKET={DEST_BUCKET} CBOB_DEST_REGION=us-east-1 CBOB_DEST_ACCESS_KEY/SECRET_KEY"
            ),
            Dest::Minio => format!(
                "CBOB_DEST_TYPE=minio {common} CBOB_DEST_BUCKET={DEST_BUCKET} CBOB_DEST_ACCESS_KEY/SECRET_KEY"
            ),
            Dest::Azure => format!(
                "CBOB_DEST_TYPE=azure {common} CBOB_DEST_CONTAINER=<fresh> CBOB_DEST_AZURE_ACCOUNT={} CBOB_DEST_AZURE_KEY",
                azurite::ACCOUNT
            ),
            Dest::Gcs => {
                format!("CBOB_DEST_TYPE=gcs {common} CBOB_DEST_BUCKET=<fresh> (anonymous)")
            }
        }
    }

    /// Fails early, with the install hint, when the destination's server is not installed.
    pub fn check_installed(self) -> Result<()> {
        let tool = match self {
            Dest::Azure => ServerTool::AzuriteMainJs,
            Dest::Gcs => ServerTool::FakeGcsServer,
            // The patched s3s-fs is built by the bench itself; listing uses boto3.
            Dest::S3 | Dest::Minio => ServerTool::Python,
            Dest::Local => return Ok(()),
        };
        tool.locate().map(drop).map_err(anyhow::Error::msg)
    }
}

/// One sample's destination: a fresh server (or directory), stopped on drop.
pub struct Target {
    pub dest: Dest,
    /// The store's bucket or container (empty for `local`).
    bucket: String,
    running: Running,
}

enum Running {
    Local(PathBuf),
    S3s(Server),
    Emulator(Emulator),
}

impl Target {
    /// Starts the destination for one sample; a server's data (if on disk) lives in `slot.dir`.
    pub fn start(dest: Dest, s3s_bin: &Path, slot: &Slot) -> Result<Target> {
        let (running, bucket) = match dest {
            Dest::Local => (Running::Local(slot.target.clone()), String::new()),
            Dest::S3 | Dest::Minio => (
                Running::S3s(Server::start(s3s_bin, &slot.dir, DEST_BUCKET)?),
                DEST_BUCKET.to_string(),
            ),
            Dest::Azure => {
                let e = Emulator::start(dest, slot)?;
                let name = azurite::fresh_container_at(e.port, "bench");
                (Running::Emulator(e), name)
            }
            Dest::Gcs => {
                let e = Emulator::start(dest, slot)?;
                let name = gcs::fresh_bucket_at(e.port, "bench");
                (Running::Emulator(e), name)
            }
        };
        Ok(Target {
            dest,
            bucket,
            running,
        })
    }

    fn endpoint(&self) -> String {
        match &self.running {
            Running::Local(_) => String::new(),
            Running::S3s(s) => s.endpoint(),
            Running::Emulator(e) if self.dest == Dest::Azure => {
                format!("http://127.0.0.1:{}/{}", e.port, azurite::ACCOUNT)
            }
            Running::Emulator(e) => format!("http://127.0.0.1:{}", e.port),
        }
    }

    /// `cbob sync` from `s3://cbob-bench/<repo>` into this destination.
    pub fn command(&self, p: &Programs, source: &str, repo: &Repo, slot: &Slot) -> Command {
        let mut c = tools::cbob_command(p, source, repo.name, slot);
        let endpoint = self.endpoint();
        match self.dest {
            Dest::Local => {
                c.arg("--target").arg(&slot.target);
            }
            Dest::S3 | Dest::Minio => {
                c.env("CBOB_DEST_TYPE", self.dest.name())
                    .env("CBOB_DEST_ENDPOINT", &endpoint)
                    .env("CBOB_DEST_BUCKET", &self.bucket)
                    .env("CBOB_DEST_PREFIX", DEST_PREFIX)
                    .env("CBOB_DEST_ACCESS_KEY", ACCESS_KEY)
                    .env("CBOB_DEST_SECRET_KEY", SECRET_KEY);
                if self.dest == Dest::S3 {
                    c.env("CBOB_DEST_REGION", "us-east-1");
                }
            }
            Dest::Azure => {
                c.env("CBOB_DEST_TYPE", "azure")
                    .env("CBOB_DEST_ENDPOINT", &endpoint)
                    .env("CBOB_DEST_AZURE_ACCOUNT", azurite::ACCOUNT)
                    .env("CBOB_DEST_AZURE_KEY", azurite::ACCOUNT_KEY)
                    .env("CBOB_DEST_CONTAINER", &self.bucket)
                    .env("CBOB_DEST_PREFIX", DEST_PREFIX);
            }
            Dest::Gcs => {
                c.env("CBOB_DEST_TYPE", "gcs")
                    .env("CBOB_DEST_ENDPOINT", &endpoint)
                    .env("CBOB_DEST_BUCKET", &self.bucket)
                    .env("CBOB_DEST_PREFIX", DEST_PREFIX);
            }
        }
        c
    }

    /// Checks, through the destination's own API, that it holds exactly the source's keys
    /// with the same sizes.
    pub fn verify(&self, repo: &Repo) -> Result<()> {
        let got = match &self.running {
            Running::Local(dir) => return tools::verify(repo, dir),
            Running::S3s(s) => list_s3(&s.endpoint(), &self.bucket)?,
            Running::Emulator(e) if self.dest == Dest::Azure => list_azure(e.port, &self.bucket)?,
            Running::Emulator(e) => list_gcs(e.port, &self.bucket)?,
        };
        tools::compare(repo, &got).with_context(|| {
            format!(
                "{} destination {}/{DEST_PREFIX}/",
                self.dest.name(),
                self.bucket
            )
        })
    }

    /// The server's log, when a run failed.
    pub fn log_tail(&self) -> String {
        match &self.running {
            Running::Local(_) => String::new(),
            Running::S3s(s) => s.log_tail(),
            Running::Emulator(e) => log_tail(&e.log, 2000),
        }
    }
}

/// Azurite or fake-gcs-server in memory on a free port, killed on drop.
struct Emulator {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Emulator {
    fn start(dest: Dest, slot: &Slot) -> Result<Emulator> {
        dest.check_installed()?;
        let port = free_port();
        let (mut cmd, ready): (Command, fn(u16) -> bool) = match dest {
            Dest::Azure => (azurite::command(port), azurite::ready),
            Dest::Gcs => (gcs::command(port), gcs::ready),
            _ => unreachable!("only Azurite and fake-gcs-server are emulators"),
        };
        let log = slot.dir.join(format!("{}-server.log", dest.name()));
        let out = fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Tied to this (the main) thread, which lives as long as the benchmark.
        let child = spawn_thread_owned(&mut cmd, libc::SIGKILL)
            .with_context(|| format!("start the {} destination server", dest.name()))?;
        let mut e = Emulator { child, port, log };
        let t = Instant::now();
        while !ready(port) {
            if e.child.try_wait()?.is_some() || t.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the {} destination server did not become ready on port {port}; log {}:\n{}",
                    dest.name(),
                    e.log.display(),
                    log_tail(&e.log, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(e)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys below `copy/` (relative to it) with their sizes, as ListObjectsV2 shows them; boto3,
/// which the test servers' install provides, does the signing and paging.
fn list_s3(endpoint: &str, bucket: &str) -> Result<BTreeMap<String, u64>> {
    const SCRIPT: &str = r#"
import sys, boto3
from botocore.config import Config
endpoint, key, secret, bucket, prefix = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=Config(s3={"addressing_style": "path"}))
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for o in page.get("Contents", []):
        print(f"{o['Key']}\t{o['Size']}")
"#;
    let python = ServerTool::Python.locate().map_err(anyhow::Error::msg)?;
    let home = tempfile::tempdir()?;
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args([endpoint, ACCESS_KEY, SECRET_KEY, bucket])
        .arg(format!("{DEST_PREFIX}/"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .output()
        .context("run python (boto3) to list the destination")?;
    ensure!(
        out.status.success(),
        "listing s3://{bucket}/{DEST_PREFIX}/ at {endpoint} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (key, size) = line.rsplit_once('\t').context("listing line")?;
        add(&mut got, key, size.parse()?)?;
    }
    Ok(got)
}

/// Keys below `copy/` through List Blobs, authorised with a read/list service SAS.
fn list_azure(port: u16, container: &str) -> Result<BTreeMap<String, u64>> {
    let sas = azurite::container_sas(
        container,
        "rl",
        SystemTime::now() + Duration::from_secs(3600),
    );
    let mut got = BTreeMap::new();
    let mut marker = String::new();
    loop {
        let mut path = format!(
            "/{}/{container}?restype=container&comp=list&maxresults=5000&prefix={}",
            azurite::ACCOUNT,
            pct(&format!("{DEST_PREFIX}/"))
        );
        if !marker.is_empty() {
            path.push_str(&format!("&marker={}", pct(&marker)));
        }
        path.push('&');
        path.push_str(&sas);
        let r = http::request("GET", port, &path, &[("x-ms-version", "2022-11-02")], b"")
            .context("Azurite List Blobs")?;
        let body = r.text();
        ensure!(
            r.status == 200,
            "Azurite List Blobs of {container}: HTTP {}: {body}",
            r.status
        );
        for blob in body.split("<Blob>").skip(1) {
            let name = xml_text(blob, "Name").context("blob without <Name>")?;
            let size = xml_text(blob, "Content-Length")
                .context("blob without <Content-Length>")?
                .parse()?;
            add(&mut got, &name, size)?;
        }
        marker = xml_text(&body, "NextMarker").unwrap_or_default();
        if marker.is_empty() {
            return Ok(got);
        }
    }
}

/// Keys below `copy/` through the JSON API's objects.list (fake-gcs-server is anonymous).
fn list_gcs(port: u16, bucket: &str) -> Result<BTreeMap<String, u64>> {
    let mut got = BTreeMap::new();
    let mut token = String::new();
    loop {
        let mut path = format!(
            "/storage/v1/b/{bucket}/o?prefix={}&maxResults=1000",
            pct(&format!("{DEST_PREFIX}/"))
        );
        if !token.is_empty() {
            path.push_str(&format!("&pageToken={}", pct(&token)));
        }
        let r = http::request("GET", port, &path, &[], b"").context("fake-gcs objects.list")?;
        ensure!(
            r.status == 200,
            "fake-gcs objects.list of {bucket}: HTTP {}: {}",
            r.status,
            r.text()
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).context("objects.list JSON")?;
        for item in v["items"].as_array().into_iter().flatten() {
            let name = item["name"].as_str().context("object without a name")?;
            // The JSON API sends sizes as decimal strings.
            let size = match &item["size"] {
                serde_json::Value::String(s) => s.parse()?,
                other => other.as_u64().context("object without a size")?,
            };
            add(&mut got, name, size)?;
        }
        token = v["nextPageToken"].as_str().unwrap_or_default().to_string();
        if token.is_empty() {
            return Ok(got);
        }
    }
}

/// Records `key` relative to the prefix; a key twice (a paging bug) is an error.
fn add(got: &mut BTreeMap<String, u64>, key: &str, size: u64) -> Result<()> {
    let rel = key
        .strip_prefix(&format!("{DEST_PREFIX}/"))
        .with_context(|| format!("listed key {key} is not below {DEST_PREFIX}/"))?;
    ensure!(
        got.insert(rel.to_string(), size).is_none(),
        "key {key} listed twice"
    );
    Ok(())
}

/// The text of the first `<tag>...</tag>` in `s`, with the XML escapes undone.
fn xml_text(s: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = s.find(&open)? + open.len();
    let end = start + s[start..].find(&format!("</{tag}>"))?;
    Some(
        s[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Percent-encodes a query value.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_and_query_helpers() {
        let x = "<Blob><Name>copy/a&amp;b</Name><Properties><Content-Length>12</Content-Length></Properties></Blob><NextMarker /></x>";
        assert_eq!(xml_text(x, "Name").as_deref(), Some("copy/a&b"));
        assert_eq!(xml_text(x, "Content-Length").as_deref(), Some("12"));
        assert_eq!(xml_text(x, "NextMarker"), None);
        assert_eq!(pct("copy/x y"), "copy%2Fx%20y");
        let mut got = BTreeMap::new();
        add(&mut got, "copy/archive/a", 3).unwrap();
        assert!(add(&mut got, "copy/archive/a", 3).is_err());
        assert!(add(&mut got, "other/a", 3).is_err());
        assert_eq!(got["archive/a"], 3);
    }

    /// The check after every run fails on a missing, short or extra object.
    #[test]
    fn a_listing_must_match_the_source_exactly() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("archive")).unwrap();
        fs::write(dir.path().join("archive/a"), b"abc").unwrap();
        fs::write(dir.path().join("b"), b"hello").unwrap();
        let repo = Repo {
            name: "t",
            root: dir.path().to_path_buf(),
            etags: vec![
                ("archive/a".into(), String::new()),
                ("b".into(), String::new()),
            ],
            files: 2,
            bytes: 8,
            largest: 5,
        };
        let listing = |entries: &[(&str, u64)]| -> BTreeMap<String, u64> {
            entries.iter().map(|&(k, n)| (k.to_string(), n)).collect()
        };
        tools::compare(&repo, &listing(&[("archive/a", 3), ("b", 5)])).unwrap();
        for (bad, why) in [
            (listing(&[("archive/a", 3)]), "missing b"),
            (
                listing(&[("archive/a", 3), ("b", 4)]),
                "b: 4 bytes, source 5",
            ),
            (listing(&[("archive/a", 3), ("b", 5), ("c", 1)]), "extra c"),
        ] {
            let e = tools::compare(&repo, &bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
