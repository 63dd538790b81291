//! Writes: a single PutObject up to the multipart threshold, a multipart upload above it.
//!
//! Both keep S3's "visible only when complete" guarantee for bodies that lie about their size:
//! the single put holds back the chunk that completes the declared size until the body confirms
//! it has ended, and the multipart upload checks the same before CompleteMultipartUpload. Any
//! failure aborts the multipart upload, so nothing partial remains (not even invisible parts
//! that would be billed).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use cbob_core::storage::{
    Body, ByteStream, PutOptions, StorageError, StorageErrorKind, StorageResult,
};
use futures::stream::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::provider::Shared;

/// What a finished write reports.
#[derive(Debug)]
pub(crate) struct Written {
    pub etag: Option<String>,
}

/// Sets storage class and server-side encryption on any write request builder
/// (PutObject, CreateMultipartUpload, CopyObject share the setter names, not a trait).
macro_rules! write_options {
    ($builder:expr, $shared:expr, $storage_class:expr) => {{
        let mut b = $builder;
        if let Some(class) = $storage_class {
            b = b.storage_class(aws_sdk_s3::types::StorageClass::from(class.as_str()));
        }
        match &$shared.cfg.sse {
            Some($crate::Sse::Aes256) => {
                b = b.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some($crate::Sse::Kms { key_id }) => {
                b = b
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone())
            }
            None => {}
        }
        b
    }};
}
pub(crate) use write_options;

/// The storage class of a write: the call's, else the provider's.
pub(crate) fn storage_class<'a>(shared: &'a Shared, options: &'a PutOptions) -> Option<&'a String> {
    options
        .storage_class
        .as_ref()
        .or(shared.cfg.storage_class.as_ref())
}

/// One PutObject.
pub(crate) async fn put_single(
    shared: &Shared,
    key: &str,
    body: Body,
    options: &PutOptions,
) -> StorageResult<Written> {
    let full_key = shared.cfg.full_key(key);
    let ctx = shared.ctx("put", Some(key));
    let class = storage_class(shared, options);
    let size = body.size();
    let request = |client: aws_sdk_s3::Client| {
        write_options!(
            client
                .put_object()
                .bucket(&shared.cfg.bucket)
                .key(&full_key)
                .content_length(size as i64),
            shared,
            class
        )
    };
    let mut in_memory = body.as_bytes().cloned();
    let stream = match in_memory {
        Some(_) => None,
        // Small streams (most files of a pgBackRest repository) are buffered, bounded by
        // `replayable_put_limit`: a re-sendable request is worth far more than the memory.
        // `into_stream` still enforces the declared size. This also covers empty bodies.
        None if size <= shared.cfg.replayable_put_limit => {
            in_memory = Some(cbob_core::storage::collect_stream(body.into_stream()).await?);
            None
        }
        None => Some(body.into_stream()),
    };
    let Some(stream) = stream else {
        let bytes = in_memory.unwrap_or_default();
        // `into_stream` (when the body was buffered) guaranteed the declared size.
        debug_assert_eq!(bytes.len() as u64, size);
        // Replayable: the SDK and the credential refresh may both re-send it.
        let out = shared
            .clients
            .call(&ctx, |c| {
                request(c).body(SdkByteStream::from(bytes.clone())).send()
            })
            .await?;
        return Ok(Written { etag: out.e_tag });
    };
    let (sdk_body, body_error) = StreamedBody::new(size, stream);
    let handle = shared.clients.get().await?;
    let sent = request(handle.client.clone())
        .body(SdkByteStream::new(SdkBody::from_body_1_x(sdk_body)))
        .send();
    match shared.clients.call_once(&ctx, &handle, sent).await {
        Ok(out) => Ok(Written { etag: out.e_tag }),
        // The body's own failure (short/long body, source read error) is the real cause, not
        // the connection error the SDK reports after the body gave up.
        Err(e) => Err(body_error
            .take()
            .map(|b| b.context(format!("{}: put {key:?}", shared.describe)))
            .unwrap_or(e)),
    }
}

/// A body failure seen by the SDK, kept so the put can report it with its real kind.
#[derive(Clone, Default)]
struct BodyError(Arc<Mutex<Option<(StorageErrorKind, String, bool)>>>);

impl BodyError {
    fn set(&self, e: &StorageError) {
        let mut slot = self.0.lock().expect("body error poisoned");
        slot.get_or_insert_with(|| (e.kind(), e.message().to_string(), e.is_transient()));
    }

    fn take(&self) -> Option<StorageError> {
        let (kind, message, transient) = self.0.lock().expect("body error poisoned").take()?;
        Some(StorageError::new(kind, message).with_transient(transient))
    }
}

/// An HTTP body over a [`ByteStream`] of declared size.
///
/// The chunk that completes the declared size is held back until the stream confirms its end,
/// so a body that is too long fails the request before the server has received a complete one.
struct StreamedBody {
    /// The mutex only makes the body `Sync` (the SDK requires it); it is reached through
    /// `get_mut` and never locked.
    inner: Mutex<ByteStream>,
    size: u64,
    seen: u64,
    held: Option<Bytes>,
    done: bool,
    error: BodyError,
}

impl StreamedBody {
    fn new(size: u64, stream: ByteStream) -> (Self, BodyError) {
        let error = BodyError::default();
        let body = Self {
            inner: Mutex::new(stream),
            size,
            seen: 0,
            held: None,
            done: false,
            error: error.clone(),
        };
        (body, error)
    }
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = StorageError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StorageError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let stream = this.inner.get_mut().expect("body stream poisoned");
            match stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.seen += chunk.len() as u64;
                    if this.seen < this.size {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    // `Body::into_stream` fails a stream that goes past the size, so this is
                    // the last chunk: hold it until the end is confirmed.
                    this.held = Some(chunk);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.seen != this.size {
                        // into_stream reports this itself; kept as a second line of defence.
                        let e = StorageError::corrupt(format!(
                            "body ended after {} of {} bytes",
                            this.seen, this.size
                        ));
                        this.error.set(&e);
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(this.held.take().map(|c| Ok(Frame::data(c))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.held = None;
                    this.error.set(&e);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size)
    }
}

/// A multipart upload: fixed-size parts read one at a time from the body while up to
/// `part_concurrency` earlier parts upload, then CompleteMultipartUpload.
pub(crate) async fn put_multipart(
    shared: &Arc<Shared>,
    key: &str,
    body: Body,
    options: &PutOptions,
) -> StorageResult<Written> {
    shared.sweep_stale_uploads().await;
    let full_key = shared.cfg.full_key(key);
    let ctx = shared.ctx("put", Some(key));
    let class = storage_class(shared, options);
    let created = shared
        .clients
        .call(&ctx, |c| {
            write_options!(
                c.create_multipart_upload()
                    .bucket(&shared.cfg.bucket)
                    .key(&full_key),
                shared,
                class
            )
            .send()
        })
        .await?;
    let upload_id = created.upload_id.ok_or_else(|| {
        StorageError::new(
            StorageErrorKind::Other,
            format!("{}: put {key:?}: no upload id", shared.describe),
        )
    })?;
    let mut guard = AbortGuard {
        shared: Some(shared.clone()),
        full_key: full_key.clone(),
        upload_id: upload_id.clone(),
    };
    let result = async {
        let parts = upload_parts(shared, key, &full_key, &upload_id, body).await?;
        let out = shared
            .clients
            .call(&ctx, |c| {
                c.complete_multipart_upload()
                    .bucket(&shared.cfg.bucket)
                    .key(&full_key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    )
                    .send()
            })
            .await?;
        Ok(Written { etag: out.e_tag })
    }
    .await;
    match result {
        Ok(w) => {
            guard.shared = None;
            Ok(w)
        }
        Err(e) => {
            guard.abort_now().await;
            Err(e)
        }
    }
}

/// Reads the body part by part and uploads the parts; returns them in order.
async fn upload_parts(
    shared: &Arc<Shared>,
    key: &str,
    full_key: &str,
    upload_id: &str,
    body: Body,
) -> StorageResult<Vec<CompletedPart>> {
    let size = body.size();
    let part_size = shared.cfg.part_size_for(size);
    let mut reader = PartReader {
        stream: body.into_stream(),
        carry: None,
        remaining: size,
    };
    let mut inflight = PartTasks::default();
    let mut parts = Vec::with_capacity(size.div_ceil(part_size) as usize);
    let mut part_number = 0i32;
    while let Some(data) = reader.next_part(part_size).await? {
        // Bounded memory: wait for a slot before this part joins the uploads.
        while inflight.0.len() >= shared.cfg.part_concurrency {
            parts.push(inflight.join_oldest().await?);
        }
        part_number += 1;
        inflight.0.push_back(tokio::spawn(upload_part(
            shared.clone(),
            key.to_string(),
            full_key.to_string(),
            upload_id.to_string(),
            part_number,
            data,
        )));
    }
    reader.confirm_end().await?;
    while !inflight.0.is_empty() {
        parts.push(inflight.join_oldest().await?);
    }
    parts.sort_by_key(|p| p.part_number);
    Ok(parts)
}

/// Part uploads running as tasks (so they progress while the next part is read). Dropping it,
/// on an error or when the put itself is dropped, stops those still running: no part may
/// arrive after the upload was aborted.
#[derive(Default)]
struct PartTasks(VecDeque<JoinHandle<StorageResult<CompletedPart>>>);

impl PartTasks {
    async fn join_oldest(&mut self) -> StorageResult<CompletedPart> {
        // Awaited in place, so the handle is still owned here (and aborted) if this is dropped.
        let oldest = self.0.front_mut().expect("a part upload is running");
        let result = oldest.await;
        self.0.pop_front();
        result.map_err(|e| {
            StorageError::new(
                StorageErrorKind::Other,
                format!("part upload task failed: {e}"),
            )
        })?
    }
}

impl Drop for PartTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn upload_part(
    shared: Arc<Shared>,
    key: String,
    full_key: String,
    upload_id: String,
    part_number: i32,
    data: Bytes,
) -> StorageResult<CompletedPart> {
    let ctx = shared.ctx("put (upload part)", Some(&key));
    let len = data.len() as i64;
    let out = shared
        .clients
        .call(&ctx, |c| {
            c.upload_part()
                .bucket(&shared.cfg.bucket)
                .key(&full_key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .content_length(len)
                .body(SdkByteStream::from(data.clone()))
                .send()
        })
        .await
        .map_err(|e| e.context(format!("part {part_number}")))?;
    // Echo whatever checksum the store computed: AWS requires it back when the SDK sent one.
    Ok(CompletedPart::builder()
        .part_number(part_number)
        .set_e_tag(out.e_tag)
        .set_checksum_crc32(out.checksum_crc32)
        .set_checksum_crc32_c(out.checksum_crc32_c)
        .set_checksum_crc64_nvme(out.checksum_crc64_nvme)
        .set_checksum_sha1(out.checksum_sha1)
        .set_checksum_sha256(out.checksum_sha256)
        .build())
}

/// Cuts a body stream into parts of exactly `part_size` bytes (the last one shorter).
struct PartReader {
    stream: ByteStream,
    /// The rest of a chunk that straddled a part boundary.
    carry: Option<Bytes>,
    remaining: u64,
}

impl PartReader {
    async fn next_part(&mut self, part_size: u64) -> StorageResult<Option<Bytes>> {
        let want = self.remaining.min(part_size) as usize;
        if want == 0 {
            return Ok(None);
        }
        let mut buf = BytesMut::new();
        while buf.len() < want {
            let chunk = match self.carry.take() {
                Some(c) => c,
                None => match self.stream.next().await {
                    Some(c) => c?,
                    // `Body::into_stream` reports a short body itself; this is a second line.
                    None => {
                        return Err(StorageError::corrupt(format!(
                            "body ended {} bytes before its declared size",
                            self.remaining - buf.len() as u64
                        )));
                    }
                },
            };
            let room = want - buf.len();
            if buf.is_empty() && chunk.len() >= want {
                // A chunk that holds the whole part (an in-memory body): no copy.
                if chunk.len() > want {
                    self.carry = Some(chunk.slice(want..));
                }
                self.remaining -= want as u64;
                return Ok(Some(chunk.slice(..want)));
            }
            if buf.capacity() == 0 {
                buf.reserve(want); // one allocation per part, never a doubling
            }
            if chunk.len() > room {
                buf.extend_from_slice(&chunk[..room]);
                self.carry = Some(chunk.slice(room..));
            } else {
                buf.extend_from_slice(&chunk);
            }
        }
        self.remaining -= want as u64;
        Ok(Some(buf.freeze()))
    }

    /// After the declared size was read: the body must end here, or it was too long.
    async fn confirm_end(&mut self) -> StorageResult<()> {
        if self.carry.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(StorageError::corrupt(
                "body is longer than its declared size",
            ));
        }
        while let Some(chunk) = self.stream.next().await {
            if !chunk?.is_empty() {
                return Err(StorageError::corrupt(
                    "body is longer than its declared size",
                ));
            }
        }
        Ok(())
    }
}

/// Aborts a multipart upload that did not complete: awaited on the error path, or spawned
/// from `Drop` when the put future itself is dropped (a cancelled run).
pub(crate) struct AbortGuard {
    /// `None` once completed (or aborted): nothing left to do.
    pub shared: Option<Arc<Shared>>,
    pub full_key: String,
    pub upload_id: String,
}

impl AbortGuard {
    pub(crate) async fn abort_now(&mut self) {
        if let Some(shared) = self.shared.take() {
            abort_upload(&shared, &self.full_key, &self.upload_id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (key, id) = (
                std::mem::take(&mut self.full_key),
                std::mem::take(&mut self.upload_id),
            );
            rt.spawn(async move { abort_upload(&shared, &key, &id).await });
        }
    }
}

/// Aborts one multipart upload; `true` when it was there to abort. Failures are logged, not
/// returned: the caller's own outcome is what matters.
pub(crate) async fn abort_upload(shared: &Shared, full_key: &str, upload_id: &str) -> bool {
    let ctx = shared.ctx("abort multipart upload", Some(full_key));
    let r = shared
        .clients
        .call(&ctx, |c| {
            c.abort_multipart_upload()
                .bucket(&shared.cfg.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .send()
        })
        .await;
    match r {
        Ok(_) => {
            tracing::debug!(key = full_key, "multipart upload aborted");
            true
        }
        // Completed or aborted meanwhile.
        Err(e) if e.kind() == StorageErrorKind::NotFound => false,
        // Invisible but billed until a lifecycle rule removes it; say so, but the put's own
        // error is what the caller needs.
        Err(e) => {
            tracing::warn!(error = %e, key = full_key, "could not abort an incomplete multipart upload");
            false
        }
    }
}
