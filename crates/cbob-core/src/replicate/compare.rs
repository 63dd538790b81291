//! Comparing a replica with its primary: which objects of each stanza are missing or differ.
//! Used by `replicate status` (lag in objects) and `replicate verify`.

use serde::Serialize;

use crate::repo::{RepoObject, classify};
use crate::storage::DynProvider;
use crate::sync::{SyncError, list_stanza};

/// How far a replica is behind its primary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    pub primary_objects: u64,
    pub primary_bytes: u64,
    pub replica_objects: u64,
    pub replica_bytes: u64,
    /// Keys at the primary that the replica lacks.
    pub missing: Vec<String>,
    /// Keys whose size differs (info files may legitimately differ mid-run; data files must not).
    pub different: Vec<String>,
    /// Objects at the replica that the primary no longer has (expired there; pruned with --prune).
    pub extra: u64,
}

impl Comparison {
    /// Objects the replica still needs.
    pub fn behind(&self) -> u64 {
        (self.missing.len() + self.different.len()) as u64
    }
}

/// Compares the listed stanzas of `primary` and `replica` (pgBackRest temp files and the `latest`
/// link ignored).
pub async fn compare(
    primary: &DynProvider,
    replica: &DynProvider,
    stanzas: &[String],
) -> Result<Comparison, SyncError> {
    let mut c = Comparison::default();
    for stanza in stanzas {
        let p = list_stanza(primary, stanza).await?;
        let r = list_stanza(replica, stanza).await?;
        for (key, meta) in &p {
            if matches!(classify(key), RepoObject::Temp | RepoObject::Latest { .. }) {
                continue;
            }
            c.primary_objects += 1;
            c.primary_bytes += meta.size;
            match r.get(key) {
                None => c.missing.push(key.clone()),
                Some(m) if m.size != meta.size => c.different.push(key.clone()),
                Some(_) => {}
            }
        }
        for (key, meta) in &r {
            c.replica_objects += 1;
            c.replica_bytes += meta.size;
            if !p.contains_key(key) {
                c.extra += 1;
            }
        }
    }
    Ok(c)
}
