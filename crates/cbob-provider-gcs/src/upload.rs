//! Writes: one request for small bodies, a resumable upload in chunks for large ones.
//!
//! Small bodies (up to `single_upload_limit`) are read into memory, hashed, and sent as one
//! multipart request whose metadata carries `md5Hash` and `crc32c`: GCS checks both before it
//! creates the object, so bytes damaged in transit never become an object. Being in memory, the
//! request is re-sent on a transient failure.
//!
//! Large bodies use a resumable upload session. The body is cut into chunks (a multiple of
//! 256 KiB); one chunk uploads while the next is read, so at most two chunks are in memory. A
//! chunk is kept until GCS acknowledges its whole range: when a request fails on the way, the
//! chunk is sent again from the last acknowledged byte (GCS ignores bytes at offsets it already
//! persisted, and a 308 reply says how far it got). The object exists only once the final chunk
//! lands, and its CRC32C and MD5, computed here while streaming, are compared with what GCS
//! reports; a mismatch deletes that generation and fails the put. A session that cannot finish is
//! cancelled (on error, or from `Drop` when the put itself is dropped).
//!
//! No status query (`Content-Range: bytes */N`) is sent: fake-gcs-server treats one as the final
//! request and would publish a truncated object; resending the pending chunk is equivalent on GCS.

use std::sync::Arc;

use bytes::Bytes;
use cbob_core::storage::{Body, StorageError, StorageErrorKind, StorageResult};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{
    ChunkSize, ResumableUploadClient, UploadStatus,
};

use crate::chunks::{ChunkReader, decode_crc32c, decode_md5, encode_crc32c, encode_md5};
use crate::errors::{NotFoundMeans, classify};
use crate::provider::Shared;

const CONTENT_TYPE: &str = "application/octet-stream";

/// The metadata of a new object.
fn metadata(name: String, class: Option<&str>) -> Object {
    Object {
        name,
        content_type: Some(CONTENT_TYPE.to_string()),
        storage_class: class.map(str::to_string),
        ..Object::default()
    }
}

/// Runs one idempotent upload request, re-sending it on transient failures.
async fn with_retries<T, F, Fut>(
    shared: &Shared,
    what: &str,
    key: &str,
    mut op: F,
) -> StorageResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, gcloud_storage::http::Error>>,
{
    let policy = shared.cfg.upload_retry;
    let mut retry = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let f = classify(e, NotFoundMeans::Bucket);
                if f.kind.is_transient() && retry < policy.max_retries {
                    tracing::debug!(provider = %shared.describe, key, what, retry, error = %f.detail, "retrying a GCS upload request");
                    tokio::time::sleep(policy.delay(retry)).await;
                    retry += 1;
                    continue;
                }
                return Err(f.into_error(&shared.ctx("put", Some(key))));
            }
        }
    }
}

/// A small body in one request, with its hashes for GCS to check.
pub(crate) async fn put_single(
    shared: &Shared,
    key: &str,
    body: Body,
    class: Option<&str>,
) -> StorageResult<Object> {
    let size = body.size();
    let mut reader = ChunkReader::new(body.into_stream(), size);
    let bytes = reader.next_chunk(size).await?.unwrap_or_default();
    reader.confirm_end().await?;
    let (md5, crc) = reader.digests();
    let mut meta = metadata(shared.cfg.full_key(key), class);
    meta.md5_hash = Some(encode_md5(&md5));
    meta.crc32c = Some(encode_crc32c(crc));
    let request = UploadObjectRequest {
        bucket: shared.cfg.bucket.clone(),
        ..UploadObjectRequest::default()
    };
    let upload_type = UploadType::Multipart(Box::new(meta));
    let object = with_retries(shared, "single upload", key, || {
        shared
            .client
            .upload_object(&request, bytes.clone(), &upload_type)
    })
    .await?;
    verify_written(shared, key, object, size, md5, crc).await
}

/// Checks a new object against what was sent; deletes a damaged one (this generation only, so a
/// concurrent writer's object is never touched). A missing object is re-copied by the next sync,
/// a damaged one of the right size might not be.
async fn verify_written(
    shared: &Shared,
    key: &str,
    object: Object,
    size: u64,
    md5: [u8; 16],
    crc: u32,
) -> StorageResult<Object> {
    let got_crc = object.crc32c.as_deref().and_then(decode_crc32c);
    let got_md5 = object.md5_hash.as_deref().and_then(decode_md5);
    let problem = if object.size.max(0) as u64 != size {
        Some(format!(
            "{} bytes were stored but {size} were sent",
            object.size
        ))
    } else if got_crc.is_some_and(|c| c != crc) {
        Some(format!(
            "the stored CRC32C {:08x} differs from the {crc:08x} of the bytes sent",
            got_crc.unwrap_or_default()
        ))
    } else if got_md5.is_some_and(|m| m != md5) {
        Some("the stored MD5 differs from that of the bytes sent".to_string())
    } else {
        None
    };
    let Some(problem) = problem else {
        return Ok(object);
    };
    let request = DeleteObjectRequest {
        bucket: shared.cfg.bucket.clone(),
        object: object.name.clone(),
        if_generation_match: Some(object.generation),
        ..DeleteObjectRequest::default()
    };
    if let Err(e) = shared.client.delete_object(&request).await {
        let e = classify(e, NotFoundMeans::Object)
            .into_error(&shared.ctx("delete damaged object", Some(key)));
        tracing::warn!(error = %e, "could not delete an object that arrived damaged");
    }
    Err(StorageError::corrupt(format!(
        "{}: put {key:?}: {problem}; the object was deleted, retry the transfer",
        shared.describe
    ))
    .with_transient(true))
}

/// A large body through a resumable upload session.
pub(crate) async fn put_resumable(
    shared: &Arc<Shared>,
    key: &str,
    body: Body,
    class: Option<&str>,
) -> StorageResult<Object> {
    let size = body.size();
    let mut reader = ChunkReader::new(body.into_stream(), size);
    // Read the first chunk before opening a session: a body that fails at once leaves nothing.
    let chunk_size = shared.cfg.chunk_size;
    let first = reader.next_chunk(chunk_size).await?;
    let request = UploadObjectRequest {
        bucket: shared.cfg.bucket.clone(),
        ..UploadObjectRequest::default()
    };
    let upload_type = UploadType::Multipart(Box::new(metadata(shared.cfg.full_key(key), class)));
    let session = with_retries(shared, "open resumable upload", key, || {
        shared
            .client
            .prepare_resumable_upload(&request, &upload_type)
    })
    .await?;
    let mut guard = CancelGuard {
        session: Some(session.clone()),
    };
    let result = async {
        let mut next = first;
        let mut offset = 0u64;
        loop {
            let chunk = next.take().ok_or_else(|| {
                StorageError::corrupt(format!("body ended after {offset} of {size} bytes"))
            })?;
            let end = offset + chunk.len() as u64;
            if end == size {
                // Never send the final chunk (which creates the object) of a body that is too long.
                reader.confirm_end().await?;
                let (md5, crc) = reader.digests();
                let object = send_chunk(shared, &session, key, chunk, offset, size, Some(crc))
                    .await?
                    .ok_or_else(|| incomplete(shared, key, size))?;
                return verify_written(shared, key, object, size, md5, crc).await;
            }
            // Upload this chunk while the next one is read: two chunks in memory at most.
            let (done, following) = tokio::try_join!(
                send_chunk(shared, &session, key, chunk, offset, size, None),
                reader.next_chunk(chunk_size)
            )?;
            if done.is_some() {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    format!(
                        "{}: put {key:?}: the service finished the upload after {end} of {size} bytes",
                        shared.describe
                    ),
                ));
            }
            next = following;
            offset = end;
        }
    }
    .await;
    match result {
        Ok(object) => {
            guard.session = None;
            Ok(object)
        }
        Err(e) => {
            guard.cancel_now().await;
            Err(e)
        }
    }
}

fn incomplete(shared: &Shared, key: &str, size: u64) -> StorageError {
    StorageError::new(
        StorageErrorKind::Unavailable,
        format!(
            "{}: put {key:?}: the service did not finish the upload after all {size} bytes were sent",
            shared.describe
        ),
    )
}

/// Sends one chunk `data` that starts at byte `start` of a `total`-byte object, until GCS has
/// acknowledged all of it. Returns the object when this was the final chunk, whose whole-object
/// CRC32C is `final_crc`.
async fn send_chunk(
    shared: &Shared,
    session: &ResumableUploadClient,
    key: &str,
    data: Bytes,
    start: u64,
    total: u64,
    final_crc: Option<u32>,
) -> StorageResult<Option<Object>> {
    let end = start + data.len() as u64; // exclusive
    let is_final = end == total;
    let policy = shared.cfg.upload_retry;
    let mut offset = start; // first byte not yet acknowledged
    let mut failures = 0u32;
    let ctx = shared.ctx("put (resumable chunk)", Some(key));
    loop {
        let pending = data.slice((offset - start) as usize..);
        let range = ChunkSize::new(offset, end - 1, Some(total));
        let outcome = session.upload_multiple_chunk(pending, &range).await;
        let acknowledged = match outcome {
            // Early completion of a non-final chunk is reported by the caller.
            Ok(UploadStatus::Ok(object)) => return Ok(Some(object)),
            Ok(UploadStatus::ResumeIncomplete(r)) => r.last_byte + 1,
            Ok(UploadStatus::NotStarted) => 0,
            Err(e) => {
                let f = classify(e, NotFoundMeans::Object);
                if f.kind.is_transient() && failures < policy.max_retries {
                    tracing::debug!(provider = %shared.describe, key, offset, failures, error = %f.detail, "resending an interrupted upload chunk");
                    tokio::time::sleep(policy.delay(failures)).await;
                    failures += 1;
                    continue;
                }
                // The final chunk may have landed although its answer was lost: the session is
                // then gone, and the object is the proof.
                if let Some(crc) =
                    final_crc.filter(|_| failures > 0 && f.kind == StorageErrorKind::NotFound)
                {
                    return reconcile_final(shared, key, total, crc).await.map(Some);
                }
                let session_gone = f.kind == StorageErrorKind::NotFound;
                let mut err = f.into_error(&ctx);
                if session_gone {
                    // The session expired or was cancelled: only a new upload can help.
                    err = StorageError::new(
                        StorageErrorKind::Unavailable,
                        format!(
                            "{}; the upload session is gone, retry the transfer",
                            err.message()
                        ),
                    );
                }
                return Err(err);
            }
        };
        if acknowledged == end && !is_final {
            return Ok(None);
        }
        if acknowledged < start || acknowledged > end || (is_final && acknowledged == end) {
            return Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!(
                    "{}: put {key:?}: the service reports {acknowledged} bytes received while bytes \
                     {start}..{end} of {total} were being sent",
                    shared.describe
                ),
            ));
        }
        // GCS kept only part of the chunk: send the rest. Progress resets the failure budget;
        // no progress spends it, so a server that never advances cannot loop forever.
        if acknowledged > offset {
            failures = 0;
        } else {
            failures += 1;
            if failures > policy.max_retries {
                return Err(StorageError::new(
                    StorageErrorKind::Unavailable,
                    format!(
                        "{}: put {key:?}: the service stopped accepting bytes at {acknowledged}",
                        shared.describe
                    ),
                ));
            }
        }
        offset = acknowledged;
    }
}

/// After the final chunk's answer was lost: the upload succeeded if the object now has our size
/// and CRC32C. Anything else (an older object under the key) is left alone and the transfer is
/// retried.
async fn reconcile_final(
    shared: &Shared,
    key: &str,
    total: u64,
    crc: u32,
) -> StorageResult<Object> {
    let request = GetObjectRequest {
        bucket: shared.cfg.bucket.clone(),
        object: shared.cfg.full_key(key),
        ..GetObjectRequest::default()
    };
    match shared.client.get_object(&request).await {
        Ok(object)
            if object.size.max(0) as u64 == total
                && object.crc32c.as_deref().and_then(decode_crc32c) == Some(crc) =>
        {
            Ok(object)
        }
        Ok(_) | Err(_) => Err(StorageError::new(
            StorageErrorKind::Unavailable,
            format!(
                "{}: put {key:?}: the final chunk's answer was lost and the object is not there; retry the transfer",
                shared.describe
            ),
        )),
    }
}

/// Cancels an unfinished upload session: awaited on the error path, or spawned from `Drop` when
/// the put future itself is dropped (a cancelled run).
struct CancelGuard {
    /// `None` once the upload completed: nothing left to do.
    session: Option<ResumableUploadClient>,
}

impl CancelGuard {
    async fn cancel_now(&mut self) {
        if let Some(session) = self.session.take() {
            cancel(session).await;
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(cancel(session));
        }
    }
}

async fn cancel(session: ResumableUploadClient) {
    // GCS answers 499 to a cancelled session (the crate maps it to Ok). The URL is never logged:
    // it authorises writes to the object.
    if let Err(e) = session.cancel().await {
        let f = classify(e, NotFoundMeans::Object);
        if f.kind != StorageErrorKind::NotFound {
            tracing::debug!(error = %f.detail, "could not cancel an unfinished resumable upload; GCS expires it within a week");
        }
    }
}
