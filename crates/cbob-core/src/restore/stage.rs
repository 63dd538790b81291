//! Staging: copying what one restore needs from the destination, through its storage provider,
//! into the private work directory, so pgBackRest reads a local repository whatever the
//! destination is (S3, Azure, GCS, or a local directory the PostgreSQL user cannot read).
//!
//! Only what the restore needs moves: both info files, the chosen backup and the backups it
//! references, and the WAL of its archive id from its first segment on (older WAL and other
//! backups stay behind). Objects stream to disk; memory does not grow with their size.

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::repo::{ArchiveId, BackupLabel, RepoObject, WalSegment, classify};
use crate::storage::{DynProvider, ObjectKey, ObjectMeta};

/// The objects to stage.
#[derive(Debug, Clone, Default)]
pub struct StagePlan {
    pub objects: Vec<(ObjectKey, u64)>,
    pub bytes: u64,
}

/// Chooses from a listing of the stanza what restoring `chain` (and recovering from `wal_from`
/// on, in `archive_id`) needs.
pub fn select(
    stanza: &str,
    listing: &[ObjectMeta],
    chain: &[BackupLabel],
    archive_id: &ArchiveId,
    wal_from: Option<WalSegment>,
) -> StagePlan {
    let labels: BTreeSet<&BackupLabel> = chain.iter().collect();
    let mut plan = StagePlan::default();
    for meta in listing {
        let wanted = match classify(meta.key.as_str()) {
            RepoObject::ArchiveInfo { stanza: s, .. }
            | RepoObject::BackupInfo { stanza: s, .. } => s == stanza,
            RepoObject::WalSegment {
                stanza: s,
                archive_id: id,
                file,
            } => {
                s == stanza && &id == archive_id && wal_from.is_none_or(|from| file.segment >= from)
            }
            RepoObject::TimelineHistory {
                stanza: s,
                archive_id: id,
                ..
            }
            | RepoObject::BackupLabelFile {
                stanza: s,
                archive_id: id,
                ..
            } => s == stanza && &id == archive_id,
            RepoObject::Manifest {
                stanza: s, label, ..
            }
            | RepoObject::BackupFile {
                stanza: s, label, ..
            }
            | RepoObject::Bundle {
                stanza: s, label, ..
            } => s == stanza && labels.contains(&label),
            _ => false,
        };
        if wanted {
            plan.bytes += meta.size;
            plan.objects.push((meta.key.clone(), meta.size));
        }
    }
    plan
}

/// Copies the plan's objects under `root` (`root/<key>`), `transfers` at a time. Files are
/// 0644 and directories 0755: `root` sits in a directory only the PostgreSQL user can enter.
pub async fn stage(
    dest: &DynProvider,
    plan: &StagePlan,
    root: &Path,
    transfers: usize,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let copy =
        |key: ObjectKey, size: u64| {
            let dest = dest.clone();
            let path = root.join(key.as_str());
            async move {
                if let Some(parent) = path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                let mut stream = dest.get(&key, None).await.map_err(|e| {
                    format!("reading {} from {}: {e}", key.as_str(), dest.describe())
                })?;
                let mut file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&path)
                    .await
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                let mut written = 0u64;
                while let Some(chunk) = stream.try_next().await.map_err(|e| {
                    format!("reading {} from {}: {e}", key.as_str(), dest.describe())
                })? {
                    written += chunk.len() as u64;
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                }
                file.flush()
                    .await
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                if written != size {
                    return Err(format!(
                        "{} changed while staging: listed {size} bytes, read {written}",
                        key.as_str()
                    ));
                }
                Ok::<(), String>(())
            }
        };
    let work = futures::stream::iter(plan.objects.iter().cloned())
        .map(|(key, size)| copy(key, size))
        .buffer_unordered(transfers.max(1))
        .try_for_each(|()| async { Ok(()) });
    tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err("interrupted".into()),
    }
}
