//! Writes: one Put Blob for small bodies, Put Block + Put Block List above that.
//!
//! Both keep "visible only when complete": a single put sends a body that was read whole and
//! checked against its declared size first, and a block upload commits its block list only after
//! the body confirmed its end at exactly the declared size. A failed block upload leaves only
//! uncommitted blocks, which are invisible, never replace the existing blob, and are discarded
//! by Azure (at the next commit of that blob, or after a week).
//!
//! Integrity: a single put carries a transactional `Content-MD5` that the service checks; every
//! block carries its own; the committed blob gets the MD5 of the whole body as its Content-MD5,
//! so `head`/`list` report it.

use std::collections::VecDeque;
use std::num::NonZero;
use std::sync::Arc;

use azure_core::http::{ClientMethodOptions, Context};
use azure_storage_blob::models::{
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions,
    BlockBlobClientUploadOptions, BlockLookupList,
};
use bytes::{Bytes, BytesMut};
use cbob_core::storage::{
    Body, ByteStream, PutOptions, StorageError, StorageErrorKind, StorageResult,
};
use futures::stream::StreamExt;
use md5::{Digest, Md5};
use tokio::task::JoinHandle;

use crate::auth::TransactionalMd5;
use crate::config::AccessTier;
use crate::provider::Shared;

/// What a finished write reports.
#[derive(Debug)]
pub(crate) struct Written {
    pub md5: [u8; 16],
    pub etag: Option<String>,
}

/// The access tier of a write: the call's storage class, else the provider's.
pub(crate) fn access_tier(
    shared: &Shared,
    options: &PutOptions,
) -> StorageResult<Option<AccessTier>> {
    match options
        .storage_class
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        Some(class) => class
            .parse()
            .map(Some)
            .map_err(|e: StorageError| e.context(&shared.describe)),
        None => Ok(shared.cfg.access_tier),
    }
}

/// One Put Blob from memory, with a transactional Content-MD5. Replayable, so the SDK's retry
/// and the credential refresh may both send it again.
pub(crate) async fn put_single(
    shared: &Shared,
    key: &str,
    body: Body,
    tier: Option<AccessTier>,
) -> StorageResult<Written> {
    let ctx = shared.ctx("put", Some(key));
    let name = shared.cfg.blob_name(key);
    let size = body.size();
    let bytes = match body.as_bytes() {
        Some(b) => b.clone(),
        // `into_stream` enforces the declared size: a short or long body fails here, before
        // anything is sent.
        None => cbob_core::storage::collect_stream(body.into_stream()).await?,
    };
    debug_assert_eq!(bytes.len() as u64, size);
    let md5: [u8; 16] = Md5::digest(&bytes).into();
    let response = shared
        .clients
        .call(&ctx, |h| {
            let bytes = bytes.clone();
            let name = name.clone();
            async move {
                let options = BlockBlobClientUploadOptions {
                    // The whole body in one request, whatever its size.
                    partition_size: Some(NonZero::<u64>::MAX),
                    parallel: Some(NonZero::<usize>::MIN),
                    tier: tier.map(AccessTier::to_sdk),
                    method_options: ClientMethodOptions {
                        context: Context::new().with_value(TransactionalMd5(md5)),
                    },
                    ..Default::default()
                };
                h.blob(&name).upload(bytes.into(), Some(options)).await
            }
        })
        .await?;
    Ok(Written {
        md5,
        etag: response.etag.map(|e| e.to_string()),
    })
}

/// Put Block for each block of the body (up to `block_concurrency` uploading while the next is
/// read), then Put Block List.
pub(crate) async fn put_blocks(
    shared: &Arc<Shared>,
    key: &str,
    body: Body,
    tier: Option<AccessTier>,
) -> StorageResult<Written> {
    let ctx = shared.ctx("put", Some(key));
    let name = shared.cfg.blob_name(key);
    let size = body.size();
    let block_size = shared.cfg.block_size_for(size);
    // Block ids must all have the same length within a blob; a random upload id keeps two
    // writers of the same key from committing each other's blocks.
    let upload_id: u64 = rand::random();
    let mut reader = BlockReader {
        stream: body.into_stream(),
        carry: None,
        remaining: size,
    };
    let mut whole = Md5::new();
    let mut inflight = BlockTasks::default();
    let mut ids: Vec<Vec<u8>> = Vec::with_capacity(size.div_ceil(block_size) as usize);
    while let Some(data) = reader.next_block(block_size).await? {
        whole.update(&data);
        // Bounded memory: wait for a slot before this block joins the uploads.
        while inflight.0.len() >= shared.cfg.block_concurrency {
            inflight.join_oldest().await?;
        }
        let id = format!("{upload_id:016x}-{:06}", ids.len()).into_bytes();
        ids.push(id.clone());
        inflight.0.push_back(tokio::spawn(stage_block(
            shared.clone(),
            key.to_string(),
            name.clone(),
            id,
            data,
        )));
    }
    reader.confirm_end().await?;
    while !inflight.0.is_empty() {
        inflight.join_oldest().await?;
    }
    let md5: [u8; 16] = whole.finalize().into();
    let response = shared
        .clients
        .call(&ctx, |h| {
            let name = name.clone();
            let list = BlockLookupList {
                latest: Some(ids.clone()),
                ..Default::default()
            };
            async move {
                let options = BlockBlobClientCommitBlockListOptions {
                    // Not checked by the service (the blocks were): stored as the blob's MD5.
                    blob_content_md5: Some(md5.to_vec()),
                    tier: tier.map(AccessTier::to_sdk),
                    ..Default::default()
                };
                h.blob(&name)
                    .block_blob_client()
                    .commit_block_list(list.try_into()?, Some(options))
                    .await
            }
        })
        .await?;
    use azure_storage_blob::models::BlockBlobClientCommitBlockListResultHeaders;
    Ok(Written {
        md5,
        etag: response.etag().ok().flatten().map(|e| e.to_string()),
    })
}

async fn stage_block(
    shared: Arc<Shared>,
    key: String,
    name: String,
    id: Vec<u8>,
    data: Bytes,
) -> StorageResult<()> {
    let ctx = shared.ctx("put (stage block)", Some(&key));
    let md5: [u8; 16] = Md5::digest(&data).into();
    let len = data.len() as u64;
    shared
        .clients
        .call(&ctx, |h| {
            let (name, id, data) = (name.clone(), id.clone(), data.clone());
            async move {
                let options = BlockBlobClientStageBlockOptions {
                    transactional_content_md5: Some(md5.to_vec()),
                    ..Default::default()
                };
                h.blob(&name)
                    .block_blob_client()
                    .stage_block(&id, len, data.into(), Some(options))
                    .await
            }
        })
        .await?;
    Ok(())
}

/// Block uploads running as tasks (so they progress while the next block is read). Dropping it,
/// on an error or when the put itself is dropped, stops those still running.
#[derive(Default)]
struct BlockTasks(VecDeque<JoinHandle<StorageResult<()>>>);

impl BlockTasks {
    async fn join_oldest(&mut self) -> StorageResult<()> {
        // Awaited in place, so the handle is still owned here (and aborted) if this is dropped.
        let oldest = self.0.front_mut().expect("a block upload is running");
        let result = oldest.await;
        self.0.pop_front();
        result.map_err(|e| {
            StorageError::new(
                StorageErrorKind::Other,
                format!("block upload task failed: {e}"),
            )
        })?
    }
}

impl Drop for BlockTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Cuts a body stream into blocks of exactly `block_size` bytes (the last one shorter).
struct BlockReader {
    stream: ByteStream,
    /// The rest of a chunk that straddled a block boundary.
    carry: Option<Bytes>,
    remaining: u64,
}

impl BlockReader {
    async fn next_block(&mut self, block_size: u64) -> StorageResult<Option<Bytes>> {
        let want = self.remaining.min(block_size) as usize;
        if want == 0 {
            return Ok(None);
        }
        let mut buf = BytesMut::with_capacity(want);
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
            let need = want - buf.len();
            if chunk.len() > need {
                buf.extend_from_slice(&chunk[..need]);
                self.carry = Some(chunk.slice(need..));
            } else {
                buf.extend_from_slice(&chunk);
            }
        }
        self.remaining -= want as u64;
        Ok(Some(buf.freeze()))
    }

    /// After the declared size was read: the body must end here, or it was too long.
    async fn confirm_end(&mut self) -> StorageResult<()> {
        let too_long = || StorageError::corrupt("body is longer than its declared size");
        if self.carry.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(too_long());
        }
        while let Some(chunk) = self.stream.next().await {
            if !chunk?.is_empty() {
                return Err(too_long());
            }
        }
        Ok(())
    }
}
