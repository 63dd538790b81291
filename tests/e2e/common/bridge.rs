//! The Crunchy Bridge side: two clusters' repositories in one auth-mode moto bucket (uploaded
//! once per test binary, read-only afterwards), their backup tokens as real STS session
//! credentials, and the environment that points `cbob` at a fake API and the source store.

use std::sync::{Arc, Mutex, OnceLock};

use cbob_test_support::bridge::{FakeBridge, S3Location, TokenReply};
use cbob_test_support::{S3Credentials, fixture, moto_auth, pg};

use super::cbob::Cbob;
use super::repo::{Tree, copy_repo_as_stanza, read_tree};
use super::s3::S3Access;
use super::scratch_tempdir;

/// One cluster's repository in the shared source bucket.
#[derive(Debug)]
pub struct SourceCluster {
    /// Stanza, also the cluster id (Crunchy Bridge names stanzas after clusters).
    pub stanza: &'static str,
    pub bucket: String,
    /// `repo_path` as the API sends it (leading `/`).
    pub repo_path: String,
    /// The repository's files (`archive/<stanza>/...`, `backup/<stanza>/...`): what a copy of
    /// this cluster must hold, byte for byte.
    pub tree: Tree,
}

impl SourceCluster {
    /// Where its backup token points.
    pub fn location(&self) -> S3Location {
        S3Location::new(&self.bucket, &self.repo_path, self.stanza)
    }

    /// A backup token with fresh real STS credentials (moto AssumeRole) on every request.
    pub fn sts_token(&self) -> TokenReply {
        TokenReply::s3_with(self.location(), || moto_auth().assume_role().credentials)
    }

    /// Like [`Self::sts_token`], also keeping every credential handed out in `sink`.
    pub fn sts_token_recorded(&self, sink: Arc<Mutex<Vec<S3Credentials>>>) -> TokenReply {
        TokenReply::s3_with(self.location(), move || {
            let c = moto_auth().assume_role().credentials;
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(c.clone());
            c
        })
    }
}

/// The shared source: cluster `abc123` (the fixture as is) and `def456` (the fixture with its
/// stanza directories renamed), in one bucket of auth-mode moto.
#[derive(Debug)]
pub struct BridgeSource {
    pub abc: SourceCluster,
    pub def: SourceCluster,
}

impl BridgeSource {
    /// What a destination holding both clusters must contain.
    pub fn both_trees(&self) -> Tree {
        let mut t = self.abc.tree.clone();
        t.extend(self.def.tree.clone());
        t
    }
}

/// The shared source, uploaded on first use (read-only: tests that damage a source make their own).
pub fn source() -> &'static BridgeSource {
    static SOURCE: OnceLock<BridgeSource> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let admin = S3Access::moto_admin();
        let bucket = moto_auth().fresh_bucket("bridge-backups");
        let fx = fixture::extract();
        assert_eq!(fx.stanza, "abc123", "the fixture's stanza");
        let renamed = scratch_tempdir("def456");
        copy_repo_as_stanza(&fx.repo, renamed.path(), "abc123", "def456");
        let info = pg::pgbackrest_info_json(renamed.path(), "def456");
        assert_eq!(
            info["status"]["code"], 0,
            "the fixture with its stanza renamed to def456 must be a valid repository: {info}"
        );
        let make = |id: &'static str, repo: &std::path::Path| {
            let repo_path = format!("/pgbackrest/{id}/repo1");
            admin.upload_dir(&bucket, &format!("{}/", &repo_path[1..]), repo);
            SourceCluster {
                stanza: id,
                bucket: bucket.clone(),
                repo_path,
                tree: read_tree(repo),
            }
        };
        BridgeSource {
            abc: make("abc123", &fx.repo),
            def: make("def456", renamed.path()),
        }
    })
}

/// Points `cbob` at the fake API (`CBOB_CRUNCHY_API_URL`, `CBOB_CRUNCHY_API_KEY`) and the source
/// object store (`CBOB_SOURCE_ENDPOINT`, path-style).
pub fn bridge_env(cbob: &mut Cbob, api: &FakeBridge, source_endpoint: &str) {
    cbob.env("CBOB_CRUNCHY_API_URL", &api.url())
        .env("CBOB_CRUNCHY_API_KEY", api.api_key())
        .env("CBOB_SOURCE_ENDPOINT", source_endpoint);
}
