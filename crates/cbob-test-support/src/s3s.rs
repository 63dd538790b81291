//! s3s-fs 0.14.1: a filesystem-backed S3 server that always checks SigV4 signatures and
//! payload checksums (it catches what moto lets through).
//!
//! Known limits (reference/s3-lab.md): a key cannot also be a prefix (`a` and `a/b`), no
//! ListMultipartUploads, deletes non-empty buckets, keeps an object that failed BadDigest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::S3Credentials;
use crate::http;
use crate::locate::Tool;
use crate::moto::REGION;
use crate::process::{ServerProcess, scratch_dir, start_server, unique_bucket_name};

/// Access key the server is started with.
pub const ACCESS_KEY: &str = "AKIACBOBS3SFSTEST001";
/// Secret key the server is started with.
pub const SECRET_KEY: &str = "cbob-s3s-fs-test-secret";

/// A running s3s-fs with its own fresh data directory.
#[derive(Debug)]
pub struct S3sFs {
    process: ServerProcess,
    data_dir: PathBuf,
}

/// The shared s3s-fs server of this test binary.
pub fn s3s_fs() -> &'static S3sFs {
    static S3S: OnceLock<S3sFs> = OnceLock::new();
    S3S.get_or_init(S3sFs::start)
}

/// The command that starts s3s-fs on 127.0.0.1:`port`, serving `data_dir` with the fixed keys.
pub fn command(port: u16, data_dir: &Path) -> Command {
    let mut c = Command::new(Tool::S3sFs.require());
    c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(data_dir);
    c
}

/// Readiness probe: any HTTP answer.
pub fn ready(port: u16) -> bool {
    http::answers(port, "/")
}

impl S3sFs {
    /// Starts a new, separate s3s-fs (with its own data dir), for tests that need a server to
    /// themselves (benchmarks, destructive tests). Killed when the test process exits.
    pub fn start() -> S3sFs {
        // A fresh directory each start: s3s-fs leaves `.bucket-*.internal.json` sidecars behind.
        let data_dir = scratch_dir("s3s-fs-data");
        let process = start_server("s3s-fs", |port| command(port, &data_dir), ready);
        S3sFs { process, data_dir }
    }

    /// `http://127.0.0.1:PORT` (use path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The server process.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// The only credentials the server accepts.
    pub fn credentials(&self) -> S3Credentials {
        S3Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
            region: REGION.into(),
        }
    }

    /// Directory the server stores buckets in (`<data_dir>/<bucket>/<key>`): tests may corrupt
    /// objects behind the server's back here.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates a bucket with a unique name derived from `base` and returns the name.
    /// s3s-fs serves every directory of its root as a bucket, so this needs no signed request.
    pub fn fresh_bucket(&self, base: &str) -> String {
        let name = unique_bucket_name(base);
        let dir = self.data_dir.join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("s3s-fs: create bucket dir {}: {e}", dir.display()));
        name
    }
}
