//! The one listing of a stanza per run (SPEC §5 rule 1), and reading its info files.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::error::SyncError;
use crate::repo::{InfoVerifier, RepoError, StreamVerifier};
use crate::storage::{
    DynProvider, KeyPrefix, ObjectKey, ObjectMeta, StorageErrorKind, list_dirs, read_to_bytes,
};

/// Every object of one stanza, by key.
pub type Inventory = BTreeMap<String, ObjectMeta>;

/// Lists `archive/<stanza>/` and `backup/<stanza>/` once.
pub async fn list_stanza(provider: &DynProvider, stanza: &str) -> Result<Inventory, SyncError> {
    let mut inv = Inventory::new();
    for prefix in [format!("archive/{stanza}/"), format!("backup/{stanza}/")] {
        let p = KeyPrefix::new(prefix.clone())
            .map_err(|e| SyncError::storage(format!("listing {prefix}"), e))?;
        let mut stream = provider.list(&p);
        while let Some(meta) = stream.try_next().await.map_err(|e| {
            SyncError::storage(format!("listing {} {prefix}", provider.describe()), e)
        })? {
            inv.insert(meta.key.as_str().to_string(), meta);
        }
    }
    Ok(inv)
}

/// Stanzas present in a repository: directories of `backup/` that hold a `backup.info` (or
/// its `.copy`). One delimiter listing of `backup/` (not a listing of every backup file) and a
/// `head` per directory, a few at a time.
pub async fn discover_stanzas(provider: &DynProvider) -> Result<Vec<String>, SyncError> {
    /// Heads in flight at once: enough to hide latency, few enough for a rate-limited source.
    const CONCURRENT_HEADS: usize = 8;
    let prefix = KeyPrefix::new("backup/").expect("valid prefix");
    let dirs = list_dirs(provider.as_ref(), &prefix)
        .await
        .map_err(|e| SyncError::storage(format!("listing {} backup/", provider.describe()), e))?;
    let found: Vec<Option<String>> = futures::stream::iter(dirs)
        .map(|dir| async move {
            let stanza = dir
                .as_str()
                .strip_prefix("backup/")
                .and_then(|s| s.strip_suffix('/'))
                .unwrap_or_default()
                .to_string();
            for name in ["backup.info", "backup.info.copy"] {
                let key = format!("{}{name}", dir.as_str());
                let k =
                    ObjectKey::new(key.clone()).map_err(|e| SyncError::storage(key.clone(), e))?;
                match provider.head(&k).await {
                    Ok(_) => return Ok(Some(stanza)),
                    Err(e) if e.kind() == StorageErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(SyncError::storage(
                            format!("reading {} {key}", provider.describe()),
                            e,
                        ));
                    }
                }
            }
            Ok(None)
        })
        .buffered(CONCURRENT_HEADS)
        .try_collect()
        .await?;
    // Sorted by name, not by `name/` as the directories are (`a-b` < `a` there).
    let mut stanzas: Vec<String> = found.into_iter().flatten().collect();
    stanzas.sort();
    Ok(stanzas)
}

/// The bytes of an info file (or manifest) that pass their `backrest-checksum`: the main file,
/// or its `.copy` when the main one is missing or damaged (as pgBackRest itself loads them).
/// Returns `None` when neither exists.
pub async fn read_verified_info(
    provider: &DynProvider,
    main: &str,
) -> Result<Option<Bytes>, SyncError> {
    let mut last_error: Option<SyncError> = None;
    let mut found_any = false;
    for name in [main.to_string(), format!("{main}.copy")] {
        let key = ObjectKey::new(name.clone()).map_err(|e| SyncError::storage(name.clone(), e))?;
        match read_to_bytes(provider.as_ref(), &key).await {
            Ok(bytes) => {
                found_any = true;
                let mut v = InfoVerifier::new(name.clone());
                let checked: Result<(), RepoError> = v
                    .update(&bytes)
                    .and_then(|_| StreamVerifier::finish_boxed(Box::new(v)));
                match checked {
                    Ok(()) => return Ok(Some(bytes)),
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "info file failed its checksum; trying the copy");
                        last_error = Some(SyncError::repo(
                            format!("reading {} {name}", provider.describe()),
                            e,
                        ));
                    }
                }
            }
            Err(e) if e.kind() == StorageErrorKind::NotFound => {}
            Err(e) => return Err(SyncError::storage(format!("reading {name}"), e)),
        }
    }
    match (found_any, last_error) {
        (_, Some(e)) => Err(e),
        (false, None) => Ok(None),
        (true, None) => unreachable!("a readable file either verified or produced an error"),
    }
}

/// Raw bytes of an object, or `None` when missing (for comparing info files).
pub async fn read_optional(provider: &DynProvider, key: &str) -> Result<Option<Bytes>, SyncError> {
    let k = ObjectKey::new(key).map_err(|e| SyncError::storage(key.to_string(), e))?;
    match read_to_bytes(provider.as_ref(), &k).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == StorageErrorKind::NotFound => Ok(None),
        Err(e) => Err(SyncError::storage(format!("reading {key}"), e)),
    }
}
