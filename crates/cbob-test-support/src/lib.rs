//! Real servers and fixtures for cbob's tests. No mocks.
//!
//! Every server listens on 127.0.0.1 at a free port, is started the first time a test of the
//! binary asks for it, is shared by all tests of that binary, and is killed by the kernel when
//! the test process exits (see [`process`]). A missing server program fails the test with the
//! command that installs it (`cargo xtask servers install`); nothing is skipped.
//!
//! ```no_run
//! use cbob_test_support::{azurite, fake_gcs, moto, moto_auth, s3s_fs};
//!
//! let m = moto();
//! let bucket = m.fresh_bucket("sync-basic");         // unique name, bucket exists
//! let (endpoint, creds) = (m.endpoint(), m.credentials());
//!
//! let sts = moto_auth().assume_role();                 // ASIA... + secret + session token
//! assert!(sts.credentials.session_token.is_some());
//!
//! let container = azurite().fresh_container("dest");  // Shared Key: azurite::ACCOUNT/ACCOUNT_KEY
//! let gcs_bucket = fake_gcs().fresh_bucket("dest");   // anonymous client, endpoint()
//! let s3s_bucket = s3s_fs().fresh_bucket("bench");    // s3s::ACCESS_KEY/SECRET_KEY enforced
//! ```
//!
//! pgBackRest and PostgreSQL helpers are in [`pg`] and [`fixture`]:
//!
//! ```no_run
//! let fx = cbob_test_support::fixture::extract();      // the committed real repository
//! let values = cbob_test_support::pg::restore_and_query(&fx.repo, &fx.stanza);
//! assert_eq!(values, fx.expected.values);
//! ```

pub mod azurite;
pub mod bridge;
pub mod fixture;
pub mod gcs;
pub mod http;
pub mod http_recorder;
pub mod locate;
pub mod moto;
pub mod pg;
pub mod process;
pub mod s3s;

pub use azurite::{Azurite, azurite};
pub use gcs::{FakeGcs, fake_gcs};
pub use moto::{Moto, MotoAuth, SessionCredentials, moto, moto_auth};
pub use s3s::{S3sFs, s3s_fs};

/// S3 credentials for a test server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token for temporary (STS) credentials.
    pub session_token: Option<String>,
    /// Region to sign for (`us-east-1`).
    pub region: String,
}

/// The workspace root (tests find `tests/fixtures/` from here whatever the test's cwd).
pub fn workspace_root() -> std::path::PathBuf {
    // This crate lives at <root>/crates/cbob-test-support.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root above crates/cbob-test-support")
        .to_path_buf()
}

/// The `cbob` binary of this build (`<target>/debug/cbob`, next to the test executable's
/// `deps/` dir). Tests outside the cbob-cli package cannot use `CARGO_BIN_EXE_cbob`, and cargo
/// does not build other packages' binaries for them, so `cargo xtask test` runs
/// `cargo build -p cbob-cli` first.
pub fn cbob_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join("cbob");
    assert!(
        bin.is_file(),
        "{} does not exist: build it with `cargo build -p cbob-cli` (`cargo xtask test` does)",
        bin.display()
    );
    bin
}
