//! Helpers shared by the end-to-end tests: running `cbob` in isolation ([`cbob`]), the
//! Crunchy Bridge source and destinations ([`bridge`], [`s3`]), a recording S3 proxy
//! ([`proxy`]), and repository trees and pgBackRest checks ([`repo`]); Azure, GCS and MinIO
//! destinations, an Azure Bridge source and killable private emulators ([`clouds`]).

pub mod bridge;
pub mod cbob;
pub mod clouds;
pub mod proxy;
pub mod repo;
pub mod s3;

use std::path::Path;
use std::time::{Duration, Instant};

/// A temp dir (removed on drop) that the `postgres` user can traverse, for repositories that
/// pgBackRest must read when the tests run as root.
pub fn scratch_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("cbob-e2e-{prefix}-"))
        .tempdir()
        .expect("create temp dir");
    set_mode(dir.path(), 0o755);
    dir
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Polls `done` every `interval` until it returns true (→ true) or `timeout` passes (→ false).
pub fn wait_until(timeout: Duration, interval: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// A small reproducible random source (xorshift64*). The seed comes from `CBOB_E2E_SEED`
/// when set, else from the clock; tests print it so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `CBOB_E2E_SEED` or the clock; returns the seed too.
    pub fn from_env() -> (Self, u64) {
        let seed = std::env::var("CBOB_E2E_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9e37_79b9_7f4a_7c15)
            });
        (Self(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}
