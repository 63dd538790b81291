//! `cbob replicate`: the off-site copy copied again across regions and clouds, on the sync
//! engine (SPEC §6 replicate).

mod compare;
pub mod config;
mod copy;
mod engine;

pub use compare::{Comparison, compare};
pub use config::{
    ReplicaConfig, ReplicationConfig, ReplicationConfigError, ReplicationProblem,
    ReplicationSettings, StoreConfig, TEMPLATE, load, parse,
};
pub use copy::CopyStats;
pub use engine::{ReplicaResult, ReplicateRequest, replicate};

/// An opaque fingerprint of a credential identity (an access key id, a service account), for
/// [`crate::storage::CopySource::account`]: equal identities give equal fingerprints, and the
/// identity cannot be read back from it, so a `CopySource` may be logged.
pub fn identity_fingerprint(identity: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(format!("cbob-copy-identity\0{identity}").as_bytes());
    hex::encode(&digest[..8])
}
