//! Azure (Azurite), GCS (fake-gcs-server) and MinIO (s3s-fs) as `cbob` destinations, and an
//! Azure container as a Crunchy Bridge source: their `CBOB_DEST_*` environments, reading a copy
//! back through cbob's own providers (built by the registry, as the CLI does), private emulators
//! on disk that a test can kill and start again, and a service-account key that Google's token
//! endpoint refuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cbob_core::Secret;
use cbob_core::storage::{
    Body, DynProvider, KeyPrefix, ObjectKey, ProviderRegistry, ProviderSpec, PutOptions,
    StorageResult, read_to_bytes,
};
use cbob_test_support::azurite::{ACCOUNT, ACCOUNT_KEY};
use cbob_test_support::process::{free_port, log_tail, port_open, scratch_dir, spawn_thread_owned};
use cbob_test_support::{azurite, fixture, gcs};
use futures::{StreamExt, TryStreamExt};

use super::cbob::Cbob;
use super::repo::{Tree, read_tree};
use super::s3::S3Access;
use super::wait_until;

/// Requests in flight when reading or filling a store.
const PARALLEL: usize = 16;

/// A runtime for the provider calls of the (synchronous) tests; shared by all of them.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the cloud helpers")
    })
}

/// An Azure or GCS provider, built through the registry like the CLI builds its destinations.
pub async fn provider(spec: &ProviderSpec) -> StorageResult<DynProvider> {
    let mut registry = ProviderRegistry::new();
    cbob_provider_azure::register(&mut registry);
    cbob_provider_gcs::register(&mut registry);
    registry.build(spec).await
}

/// `container/prefix` of the Azurite at `endpoint`, with the development account's shared key.
pub fn azure_spec(endpoint: &str, container: &str, prefix: &str) -> ProviderSpec {
    ProviderSpec {
        kind: "azure".into(),
        account: Some(ACCOUNT.into()),
        bucket: Some(container.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        secret_key: Some(Secret::new(ACCOUNT_KEY)),
        ..ProviderSpec::default()
    }
}

/// `bucket/prefix` of the fake-gcs-server at `endpoint`, anonymously.
pub fn gcs_spec(endpoint: &str, bucket: &str, prefix: &str) -> ProviderSpec {
    ProviderSpec {
        kind: "gcs".into(),
        bucket: Some(bucket.into()),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        ..ProviderSpec::default()
    }
}

/// Every object below the spec's prefix, by key relative to it, with its bytes.
pub fn download(spec: &ProviderSpec) -> Tree {
    try_download(spec).unwrap_or_else(|e| panic!("download {}: {e}", spec.describe()))
}

/// Like [`download`], with the error instead of a panic.
pub fn try_download(spec: &ProviderSpec) -> StorageResult<Tree> {
    rt().block_on(async {
        let p = provider(spec).await?;
        let metas: Vec<_> = p.list(&KeyPrefix::all()).try_collect().await?;
        futures::stream::iter(metas)
            .map(|m| {
                let p = p.clone();
                async move {
                    let bytes = read_to_bytes(p.as_ref(), &m.key).await?;
                    Ok((m.key.to_string(), bytes.to_vec()))
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await
    })
}

/// How many objects are below the spec's prefix (an error while the store is unreachable).
pub fn count_objects(spec: &ProviderSpec) -> StorageResult<usize> {
    rt().block_on(async {
        let p = provider(spec).await?;
        p.list(&KeyPrefix::all())
            .try_fold(0, |n, _| async move { Ok(n + 1) })
            .await
    })
}

/// Writes every file of `tree` below the spec's prefix.
pub fn upload(spec: &ProviderSpec, tree: &Tree) {
    rt().block_on(async {
        let p = provider(spec)
            .await
            .unwrap_or_else(|e| panic!("build {}: {e}", spec.describe()));
        futures::stream::iter(tree.iter())
            .map(|(key, bytes)| {
                let p = p.clone();
                async move {
                    let k = ObjectKey::new(key.as_str()).expect("repository key");
                    p.put(&k, Body::from_bytes(bytes.clone()), &PutOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
                }
            })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<()>>()
            .await;
    });
}

/// `CBOB_DEST_TYPE=azure` at `endpoint` (`http://host:port/devstoreaccount1`) with `key`.
pub fn azure_dest_env(cbob: &mut Cbob, endpoint: &str, container: &str, prefix: &str, key: &str) {
    cbob.env("CBOB_DEST_TYPE", "azure")
        .env("CBOB_DEST_ENDPOINT", endpoint)
        .env("CBOB_DEST_AZURE_ACCOUNT", ACCOUNT)
        .env("CBOB_DEST_CONTAINER", container)
        .env("CBOB_DEST_PREFIX", prefix)
        .env("CBOB_DEST_AZURE_KEY", key);
}

/// `CBOB_DEST_TYPE=gcs` at `endpoint`, anonymous unless `credentials` names a key file.
pub fn gcs_dest_env(
    cbob: &mut Cbob,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    credentials: Option<&Path>,
) {
    cbob.env("CBOB_DEST_TYPE", "gcs")
        .env("CBOB_DEST_ENDPOINT", endpoint)
        .env("CBOB_DEST_BUCKET", bucket)
        .env("CBOB_DEST_PREFIX", prefix);
    if let Some(file) = credentials {
        cbob.env(
            "CBOB_DEST_GCS_CREDENTIALS",
            file.to_str().expect("utf-8 path"),
        );
    }
}

/// `CBOB_DEST_TYPE=minio` at an S3-compatible server.
pub fn minio_dest_env(cbob: &mut Cbob, s3: &S3Access, bucket: &str, prefix: &str) {
    cbob.env("CBOB_DEST_TYPE", "minio")
        .env("CBOB_DEST_ENDPOINT", &s3.endpoint)
        .env("CBOB_DEST_BUCKET", bucket)
        .env("CBOB_DEST_PREFIX", prefix)
        .env("CBOB_DEST_ACCESS_KEY", &s3.access_key)
        .env("CBOB_DEST_SECRET_KEY", &s3.secret_key);
}

/// The fixture repository (stanza `abc123`) in a container of the shared Azurite, where a
/// Crunchy Bridge backup token of type `azure` points.
#[derive(Debug)]
pub struct AzureSource {
    pub container: String,
    /// `repo_path` as the API sends it (leading `/`).
    pub repo_path: String,
    pub stanza: &'static str,
    /// What a copy must hold, byte for byte.
    pub tree: Tree,
}

/// The Azure source, uploaded on first use (read-only afterwards).
pub fn azure_source() -> &'static AzureSource {
    static SOURCE: OnceLock<AzureSource> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let fx = fixture::extract();
        let tree = read_tree(&fx.repo);
        let container = azurite().fresh_container("bridge-azure");
        let repo_path = "/pgbackrest/abc123/repo1".to_string();
        upload(
            &azure_spec(&azurite().endpoint(), &container, &repo_path[1..]),
            &tree,
        );
        AzureSource {
            container,
            repo_path,
            stanza: "abc123",
            tree,
        }
    })
}

/// Which emulator a [`PrivateServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    Azurite,
    FakeGcs,
}

/// An emulator of this test alone, storing its data on disk, that the test can kill and start
/// again on the same storage and port. Tied to the test's thread (killed if the test dies).
pub struct PrivateServer {
    pub emulator: Emulator,
    pub port: u16,
    pub data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateServer {
    /// Starts it on a free port with a fresh data directory.
    pub fn start(emulator: Emulator) -> Self {
        let name = match emulator {
            Emulator::Azurite => "private-azurite",
            Emulator::FakeGcs => "private-fake-gcs",
        };
        let dir = scratch_dir(name);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("create the emulator's data dir");
        let mut s = Self {
            emulator,
            port: free_port(),
            data,
            log: dir.join("server.log"),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let mut cmd: Command = match self.emulator {
            Emulator::Azurite => azurite::command_on_disk(self.port, &self.data),
            Emulator::FakeGcs => gcs::command_on_disk(self.port, &self.data),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the emulator log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = spawn_thread_owned(&mut cmd, libc::SIGKILL)
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.emulator));
        self.child = Some(child);
        let port = self.port;
        let emulator = self.emulator;
        let ready = wait_until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            || match emulator {
                Emulator::Azurite => azurite::ready(port),
                Emulator::FakeGcs => gcs::ready(port),
            },
        );
        assert!(
            ready,
            "{:?} on port {} not ready after 60s; log {}:\n{}",
            self.emulator,
            self.port,
            self.log.display(),
            log_tail(&self.log, 4000)
        );
    }

    /// SIGKILL, as a crashed or vanished server: nothing is flushed or shut down cleanly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                !port_open(port)
            }),
            "{:?} still accepts connections on {port} after SIGKILL",
            self.emulator
        );
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The endpoint `cbob` and the providers use.
    pub fn endpoint(&self) -> String {
        match self.emulator {
            Emulator::Azurite => format!("http://127.0.0.1:{}/{ACCOUNT}", self.port),
            Emulator::FakeGcs => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// A fresh container (Azurite) or bucket (fake-gcs-server).
    pub fn fresh_bucket(&self, base: &str) -> String {
        match self.emulator {
            Emulator::Azurite => azurite::fresh_container_at(self.port, base),
            Emulator::FakeGcs => gcs::fresh_bucket_at(self.port, base),
        }
    }

    /// The provider spec of `bucket/prefix` on this server.
    pub fn spec(&self, bucket: &str, prefix: &str) -> ProviderSpec {
        match self.emulator {
            Emulator::Azurite => azure_spec(&self.endpoint(), bucket, prefix),
            Emulator::FakeGcs => gcs_spec(&self.endpoint(), bucket, prefix),
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Google OAuth token endpoint that refuses every key (`invalid_grant`, as Google answers a
/// deleted or wrong service-account key); counts the exchanges it was asked for.
pub struct RefusingTokenEndpoint {
    pub url: String,
    requests: std::sync::Arc<AtomicUsize>,
}

impl RefusingTokenEndpoint {
    /// Listens on 127.0.0.1 for the rest of the test process.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token endpoint");
        let url = format!(
            "http://{}/token",
            listener.local_addr().expect("token endpoint address")
        );
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                seen.fetch_add(1, Ordering::SeqCst);
                let reply =
                    r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Self { url, requests }
    }

    /// Token exchanges attempted so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A well-formed service-account key file (a real RSA key made with openssl) whose token
/// endpoint is `token_uri`, written into `dir`. Returns the file and its private key text.
pub fn service_account_key(dir: &Path, token_uri: &str) -> (PathBuf, String) {
    let pem_path = dir.join("sa-key.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl makes the test's RSA key ({e}): apt-get install -y openssl")
        });
    assert!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&pem_path).expect("read the RSA key");
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": gcs::PROJECT,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "cbob-e2e@cbob-test.iam.gserviceaccount.com",
        "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, json.to_string()).expect("write the key file");
    (path, pem)
}
