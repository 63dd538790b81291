//! Multipart uploads that an earlier, killed run left behind.
//!
//! A run that dies mid-upload (SIGKILL, OOM, reboot) cannot abort its multipart upload. S3 keeps
//! the parts, invisible and billed, until someone aborts the upload or a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes it. Azure drops uncommitted blocks after a week
//! and GCS resumable sessions expire after a week, so only S3 needs this.
//!
//! Before a process starts its first multipart upload (or copy) to a destination, it aborts the
//! uploads under the destination's repository directories (`<prefix>/archive/`,
//! `<prefix>/backup/`) that began more than [`S3Config::stale_upload_age`] ago (24 hours). No
//! live upload of a pgBackRest file is that old, and other applications' keys in the bucket are
//! never touched. The sweep runs once per process and destination, whatever the number of
//! provider instances, so it never sees an upload of its own process. A key or server that
//! refuses the listing only costs a log line: the write goes ahead.
//!
//! [`S3Config::stale_upload_age`]: crate::S3Config::stale_upload_age

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::OnceCell;

use cbob_core::storage::StorageErrorKind;

use crate::provider::Shared;
use crate::upload::abort_upload;

/// The repository directories cbob writes objects to, relative to the provider's prefix.
const REPOSITORY_DIRS: [&str; 2] = ["archive/", "backup/"];

/// How many incomplete uploads one sweep looks at, at most: a bound on the time a first write can
/// be delayed by, whatever a bucket holds.
const MAX_EXAMINED: usize = 10_000;

/// One sweep per destination (endpoint, bucket, prefix) in this process.
static SWEEPS: LazyLock<Mutex<HashMap<String, Arc<OnceCell<usize>>>>> =
    LazyLock::new(Default::default);

/// Sweeps the destination unless this process already has (or is doing so now: concurrent
/// first writers wait for the one sweep). Returns how many uploads that sweep aborted.
pub(crate) async fn sweep_once(shared: &Shared) -> usize {
    let Some(age) = shared.cfg.stale_upload_age else {
        return 0;
    };
    let destination = format!(
        "{} {} {}",
        shared.cfg.endpoint.as_deref().unwrap_or("aws"),
        shared.cfg.bucket,
        shared.cfg.prefix
    );
    let cell = {
        let mut sweeps = SWEEPS.lock().unwrap_or_else(|e| e.into_inner());
        sweeps.entry(destination).or_default().clone()
    };
    *cell.get_or_init(|| sweep(shared, age)).await
}

/// Whether an upload begun at `initiated` (Unix seconds, the server's clock) is older than
/// `age` at `now`. A start in the future (clock skew) is never stale.
fn is_stale(initiated: i64, now: SystemTime, age: Duration) -> bool {
    let Ok(initiated) = u64::try_from(initiated) else {
        return false;
    };
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(initiated);
    now.duration_since(started)
        .is_ok_and(|elapsed| elapsed >= age)
}

/// Aborts the uploads older than `age`; returns how many were aborted. Never fails: problems
/// are logged.
async fn sweep(shared: &Shared, age: Duration) -> usize {
    let now = SystemTime::now();
    let mut aborted = 0;
    let mut examined = 0;
    for dir in REPOSITORY_DIRS {
        let prefix = shared.cfg.full_key(dir);
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let ctx = shared.ctx("list incomplete multipart uploads", Some(dir));
            let page = shared
                .clients
                .call(&ctx, |c| {
                    c.list_multipart_uploads()
                        .bucket(&shared.cfg.bucket)
                        .prefix(&prefix)
                        .set_key_marker(markers.0.clone())
                        .set_upload_id_marker(markers.1.clone())
                        .send()
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let hint = if e.kind() == StorageErrorKind::PermissionDenied {
                        " (grant s3:ListBucketMultipartUploads, or add a lifecycle rule \
                         AbortIncompleteMultipartUpload to the bucket)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        error = %e,
                        "cannot look for multipart uploads left by earlier runs{hint}; \
                         their parts stay billed until aborted"
                    );
                    return aborted;
                }
            };
            for upload in page.uploads() {
                examined += 1;
                let (Some(key), Some(id), Some(initiated)) =
                    (upload.key(), upload.upload_id(), upload.initiated())
                else {
                    continue;
                };
                if !is_stale(initiated.secs(), now, age) {
                    continue;
                }
                if abort_upload(shared, key, id).await {
                    aborted += 1;
                    tracing::info!(
                        key,
                        initiated = %initiated,
                        "aborted a multipart upload an earlier run left unfinished"
                    );
                }
            }
            if !page.is_truncated().unwrap_or(false) || examined >= MAX_EXAMINED {
                break;
            }
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_upload_id_marker().map(str::to_owned),
            );
            // A server that repeats its markers would loop forever.
            if next.0.is_none() || next == markers {
                break;
            }
            markers = next;
        }
    }
    aborted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uploads_older_than_the_age_are_stale() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(24 * 3600);
        let ago = |secs: i64| 1_800_000_000 - secs;
        assert!(!is_stale(ago(0), now, day), "just begun");
        assert!(
            !is_stale(ago(24 * 3600 - 1), now, day),
            "a second short of a day"
        );
        assert!(is_stale(ago(24 * 3600), now, day), "a day old");
        assert!(is_stale(ago(400 * 24 * 3600), now, day), "a year old");
        assert!(
            !is_stale(ago(-3600), now, day),
            "begun in the future: clock skew"
        );
        assert!(!is_stale(-5, now, day), "nonsense date");
        assert!(
            is_stale(ago(0), now, Duration::ZERO),
            "age zero: everything"
        );
    }
}
