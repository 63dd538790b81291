//! The benchmark server: s3s-fs 0.14.1 rebuilt with two small patches, started on a fresh data
//! directory, with the benchmark repositories loaded into one bucket.
//!
//! Why patched (reference/s3-lab.md, Addendum): the stock build leaves Nagle on for accepted
//! sockets, so every GET on a kept-alive connection waits ~40 ms for the client's delayed ACK,
//! and each ListObjectsV2 page walks the whole bucket with one tokio::fs hop per entry. Both
//! would measure the server instead of the clients. The patches are text edits applied at build
//! time to a copy of the published crate (never committed here), built with its own Cargo.lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cbob_test_support::locate::servers_dir;
use cbob_test_support::process::{free_port, log_tail, spawn_thread_owned};
use cbob_test_support::s3s::{ACCESS_KEY, SECRET_KEY, ready};

use super::repos::Repo;

const CRATE: &str = "s3s-fs-0.14.1";
/// Bump when a patch changes: the cached binary is rebuilt.
const PATCH_ID: &str = "nodelay+listing-v1";

/// Patch 1 (src/main.rs): TCP_NODELAY on every accepted connection.
const NODELAY_FIND: &str =
    "        let conn = http_server.serve_connection(TokioIo::new(socket), service.clone());";
const NODELAY_REPLACE: &str =
    "        // cbob bench patch: answer without waiting for the client's delayed ACK (Nagle).
        let _ = socket.set_nodelay(true);
        let conn = http_server.serve_connection(TokioIo::new(socket), service.clone());";

/// Patch 2 (src/s3.rs): everything from here to the end of the file (the two listing walks) is
/// replaced by `LISTING_REPLACE`.
const LISTING_FROM: &str = "    async fn list_objects_recursive(";
const LISTING_REPLACE: &str = r#"    // cbob bench patch: both listing walks use blocking std::fs inside block_in_place (instead of
    // one tokio::fs thread hop per entry), skip directories that cannot hold keys under the
    // prefix, and treat an empty delimiter as none (as S3 does). Same objects otherwise.
    async fn list_objects_recursive(&self, bucket_root: &Path, prefix: &str, objects: &mut Vec<Object>) -> S3Result<()> {
        let mut unused = std::collections::BTreeSet::new();
        tokio::task::block_in_place(|| walk_bucket(bucket_root, prefix, None, objects, &mut unused))
    }

    async fn list_objects_with_delimiter(
        &self,
        bucket_root: &Path,
        prefix: &str,
        delimiter: &str,
        objects: &mut Vec<Object>,
        common_prefixes: &mut std::collections::BTreeSet<String>,
    ) -> S3Result<()> {
        tokio::task::block_in_place(|| walk_bucket(bucket_root, prefix, Some(delimiter), objects, common_prefixes))
    }
}

fn walk_bucket(
    bucket_root: &Path,
    prefix: &str,
    delimiter: Option<&str>,
    objects: &mut Vec<Object>,
    common_prefixes: &mut std::collections::BTreeSet<String>,
) -> S3Result<()> {
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut dir_queue: VecDeque<PathBuf> = VecDeque::from([bucket_root.to_owned()]);
    while let Some(dir) = dir_queue.pop_front() {
        for entry in try_!(std::fs::read_dir(dir)) {
            let entry = try_!(entry);
            let file_type = try_!(entry.file_type());
            let entry_path = entry.path();
            let key = try_!(entry_path.strip_prefix(bucket_root));
            let Some(key_str) = normalize_path(key, "/") else {
                continue;
            };
            if file_type.is_dir() {
                let dir_key = format!("{key_str}/");
                if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                    dir_queue.push_back(entry_path);
                }
                continue;
            }
            if !key_str.starts_with(prefix) {
                continue;
            }
            if let Some(d) = delimiter {
                let remaining = &key_str[prefix.len()..];
                if let Some(pos) = remaining.find(d) {
                    common_prefixes.insert(format!("{prefix}{}", &remaining[..pos + d.len()]));
                    continue;
                }
            }
            let metadata = try_!(entry.metadata());
            objects.push(Object {
                key: Some(key_str),
                last_modified: Some(Timestamp::from(try_!(metadata.modified()))),
                size: Some(try_!(i64::try_from(metadata.len()))),
                ..Default::default()
            });
        }
    }
    Ok(())
}
"#;

/// `<servers cache>/bench`: the patched server, the generated repositories, run directories.
pub fn bench_dir() -> PathBuf {
    servers_dir().join("bench")
}

fn binary_path() -> PathBuf {
    bench_dir().join("bin/s3s-fs-bench")
}

/// Builds the patched s3s-fs once (a few minutes on 2 cores) and returns its path.
pub fn ensure_built() -> Result<PathBuf> {
    let bin = binary_path();
    let marker = bench_dir().join(format!(".built-{CRATE}-{PATCH_ID}"));
    if marker.exists() && bin.is_file() {
        eprintln!("bench: patched s3s-fs present: {}", bin.display());
        return Ok(bin);
    }
    let t = Instant::now();
    let pristine = registry_source()?;
    let build = bench_dir().join(format!("{CRATE}-patched"));
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(bench_dir())?;
    copy_tree(&pristine, &build)?;
    patch(&build.join("src/main.rs"), |s| {
        ensure!(
            s.matches(NODELAY_FIND).count() == 1,
            "accept loop not found once"
        );
        Ok(s.replacen(NODELAY_FIND, NODELAY_REPLACE, 1))
    })?;
    patch(&build.join("src/s3.rs"), |s| {
        let at = s
            .find(LISTING_FROM)
            .context("list_objects_recursive not found")?;
        // The replaced tail is exactly the `impl FileSystem` block holding the two walks.
        ensure!(
            s[at..].contains("async fn list_objects_with_delimiter(") && s.ends_with("}\n"),
            "unexpected tail of src/s3.rs"
        );
        Ok(format!("{}{LISTING_REPLACE}", &s[..at]))
    })?;
    eprintln!(
        "bench: building patched s3s-fs in {} (cargo build --release --locked, a few minutes)",
        build.display()
    );
    crate::run(
        crate::cargo()
            .current_dir(&build)
            .args(["build", "--release", "--locked", "--features", "binary"])
            .env("CARGO_TARGET_DIR", build.join("target")),
        "cargo build (patched s3s-fs)",
    )?;
    fs::create_dir_all(bin.parent().expect("bin dir"))?;
    fs::copy(build.join("target/release/s3s-fs"), &bin).context("copy s3s-fs binary")?;
    // The build tree is 0.5+ GB; the binary is all we keep.
    let _ = fs::remove_dir_all(&build);
    fs::write(&marker, "")?;
    eprintln!(
        "bench: built {} in {:.0} s",
        bin.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(bin)
}

fn patch(path: &Path, edit: impl FnOnce(&str) -> Result<String>) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let new = edit(&text).with_context(|| format!("patching {}", path.display()))?;
    fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

/// The published crate's source as cargo unpacked it (`$CARGO_HOME/registry/src/*/s3s-fs-0.14.1`),
/// fetched with `cargo fetch` if it is not there yet.
fn registry_source() -> Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    let find = || -> Option<PathBuf> {
        fs::read_dir(cargo_home.join("registry/src"))
            .ok()?
            .flatten()
            .map(|e| e.path().join(CRATE))
            .find(|p| p.join("Cargo.lock").is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("bench: fetching {CRATE} from crates.io (cargo fetch)");
    let tmp = tempfile::tempdir()?;
    fs::write(
        tmp.path().join("Cargo.toml"),
        "[package]\nname = \"fetch-s3s-fs\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         [dependencies]\ns3s-fs = { version = \"=0.14.1\", default-features = false }\n[workspace]\n",
    )?;
    fs::create_dir(tmp.path().join("src"))?;
    fs::write(tmp.path().join("src/lib.rs"), "")?;
    crate::run(
        crate::cargo()
            .arg("fetch")
            .arg("--manifest-path")
            .arg(tmp.path().join("Cargo.toml")),
        "cargo fetch s3s-fs",
    )?;
    find().with_context(|| {
        format!(
            "{CRATE} not found under {} after cargo fetch",
            cargo_home.join("registry/src").display()
        )
    })
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    crate::run(
        Command::new("cp").arg("-R").arg(from).arg(to),
        "cp -R (s3s-fs source)",
    )
}

/// A running benchmark server. Killed on drop (and by the kernel if xtask dies).
pub struct Server {
    child: Child,
    pub port: u16,
    pub data: PathBuf,
    log: PathBuf,
}

pub const BUCKET: &str = "cbob-bench";

impl Server {
    /// Starts the patched server on a free port with a fresh data directory under `run_dir`
    /// holding one empty `bucket` (s3s-fs serves each directory of its root as a bucket).
    pub fn start(bin: &Path, run_dir: &Path, bucket: &str) -> Result<Server> {
        let data = run_dir.join("s3s-fs-data");
        let _ = fs::remove_dir_all(&data);
        fs::create_dir_all(data.join(bucket))?;
        let log = run_dir.join("s3s-fs.log");
        let out = fs::File::create(&log)?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Tied to the main thread, which runs the whole benchmark. Not `spawn_owned`: its
        // exit-time kill of every pid it started could hit a reused pid after our own kill.
        let child = spawn_thread_owned(&mut cmd, libc::SIGKILL).context("start s3s-fs")?;
        let mut server = Server {
            child,
            port,
            data,
            log,
        };
        let t = Instant::now();
        while !ready(port) {
            if server.child.try_wait()?.is_some() || t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "s3s-fs did not become ready; log:\n{}",
                    log_tail(&server.log, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 2000)
    }

    /// Puts `repo` under `<bucket>/<prefix>/` behind the server's back: hard links of the
    /// repository's regular files (symlinks like `latest` do not exist in object stores), plus
    /// the sidecar s3s-fs keeps for an uploaded object with the ETag pgBackRest's upload would
    /// have produced. Without the sidecar s3s-fs computes an MD5 of the whole file on every
    /// GET and HEAD (even a ranged one), which is not what an object store does.
    pub fn load(&self, repo: &Repo, prefix: &str) -> Result<()> {
        let t = Instant::now();
        let dest = self.data.join(BUCKET).join(prefix);
        for (rel, etag) in &repo.etags {
            let to = dest.join(rel);
            fs::create_dir_all(to.parent().expect("object has a parent"))?;
            let from = repo.root.join(rel);
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).with_context(|| format!("copy {}", from.display()))?;
            }
            let key = format!("{prefix}/{rel}");
            let sidecar = format!(
                ".bucket-{}.object-{}.internal.json",
                b64url(BUCKET.as_bytes()),
                b64url(key.as_bytes())
            );
            fs::write(
                self.data.join(sidecar),
                serde_json::json!({ "e_tag": etag }).to_string(),
            )?;
        }
        eprintln!(
            "bench: loaded {} ({} objects) under s3://{BUCKET}/{prefix}/ in {:.1} s",
            repo.name,
            repo.etags.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// base64url without padding (the sidecar naming s3s-fs uses).
fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}
