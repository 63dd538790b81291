//! [`S3Provider`]: the [`StorageProvider`] over aws-sdk-s3.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use cbob_core::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, KeyPrefix, ObjectHashes, ObjectKey,
    ObjectMeta, PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
    collect_stream, listed_dir, listed_key,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::client::Clients;
use crate::config::{MAX_OBJECT_SIZE, MAX_PARTS, S3Auth, S3Config, Sse};
use crate::errors::Ctx;
use crate::upload::{self, AbortGuard, write_options};

/// State shared by the provider, its listings and its background part uploads.
pub(crate) struct Shared {
    pub cfg: S3Config,
    pub clients: Clients,
    pub describe: String,
    /// Who this provider talks to as whom (endpoint and a fingerprint of the access key id), for
    /// server-side copies between buckets; `None` when the identity is not known up front.
    copy_identity: Option<String>,
}

impl Shared {
    /// Before a multipart write: aborts the uploads killed runs left, once per process and
    /// destination (`stale_uploads.rs`).
    pub(crate) async fn sweep_stale_uploads(&self) -> usize {
        crate::stale_uploads::sweep_once(self).await
    }

    pub(crate) fn ctx<'a>(&'a self, op: &'static str, key: Option<&'a str>) -> Ctx<'a> {
        Ctx {
            provider: &self.describe,
            bucket: &self.cfg.bucket,
            settings: &self.cfg.settings,
            op,
            key,
        }
    }

    /// The S3 prefix to list for a provider-relative prefix.
    fn list_prefix(&self, prefix: &KeyPrefix) -> String {
        if self.cfg.prefix.is_empty() {
            prefix.as_str().to_string()
        } else {
            format!("{}/{}", self.cfg.prefix, prefix.as_str())
        }
    }

    /// The provider-relative key of a listed object name (see [`listed_key`]).
    fn relative_key(&self, full: &str) -> Option<ObjectKey> {
        listed_key(&self.cfg.prefix, full, &self.describe)
    }

    /// The provider-relative directory of a listed common prefix (see [`listed_dir`]).
    fn relative_dir(&self, full: &str) -> Option<KeyPrefix> {
        listed_dir(&self.cfg.prefix, full, &self.describe)
    }

    /// MD5 from an ETag, when the ETag is one: a plain 32-hex ETag of an object not encrypted
    /// with KMS (multipart ETags end in `-N`; SSE-KMS ETags are not content hashes).
    fn md5_of(&self, etag: Option<&str>, kms: bool) -> Option<[u8; 16]> {
        if kms || matches!(self.cfg.sse, Some(Sse::Kms { .. })) {
            return None;
        }
        let hex_str = etag?.trim_matches('"');
        let mut md5 = [0u8; 16];
        hex::decode_to_slice(hex_str, &mut md5).ok()?;
        Some(md5)
    }

    fn hashes(&self, etag: Option<String>, kms: bool) -> ObjectHashes {
        ObjectHashes {
            md5: self.md5_of(etag.as_deref(), kms),
            crc32c: None,
            etag,
        }
    }
}

fn system_time(t: Option<aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// Characters escaped in `x-amz-copy-source` (everything but unreserved characters and `/`).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// AWS S3 or an S3-compatible store, under a bucket and optional prefix.
#[derive(Clone)]
pub struct S3Provider {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for S3Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the description and the kind of credentials, never their values.
        f.debug_struct("S3Provider")
            .field("location", &self.shared.describe)
            .field("auth", &self.shared.cfg.auth)
            .finish()
    }
}

impl S3Provider {
    /// Builds the provider. No request is sent; use [`StorageProvider::check`] to probe.
    pub async fn new(cfg: S3Config) -> StorageResult<Self> {
        cfg.validate()?;
        let clients = Clients::new(&cfg).await?;
        let describe = cfg.describe();
        let copy_identity = copy_identity(&cfg);
        Ok(Self {
            shared: Arc::new(Shared {
                cfg,
                clients,
                describe,
                copy_identity,
            }),
        })
    }

    /// The settings this provider was built with.
    pub fn config(&self) -> &S3Config {
        &self.shared.cfg
    }

    /// The SDK client currently in use (fresh after a credential refresh), for tests and tools
    /// that need an S3 call the trait does not offer.
    pub async fn sdk_client(&self) -> StorageResult<aws_sdk_s3::Client> {
        Ok(self.shared.clients.get().await?.client)
    }

    /// CopyObject of `source` (an `x-amz-copy-source` value: this bucket or another one the same
    /// credentials read) to `to`, with this provider's encryption and `class`.
    async fn copy_single(
        &self,
        source: &str,
        to: &str,
        class: Option<&String>,
    ) -> StorageResult<()> {
        let s = &self.shared;
        let to_full = s.cfg.full_key(to);
        s.clients
            .call(&s.ctx("copy", Some(to)), |c| {
                write_options!(
                    c.copy_object()
                        .bucket(&s.cfg.bucket)
                        .key(&to_full)
                        .copy_source(source),
                    s,
                    class
                )
                .send()
            })
            .await?;
        Ok(())
    }

    /// UploadPartCopy of `source` (as for [`Self::copy_single`]) in parts, for objects above the
    /// CopyObject limit.
    async fn copy_multipart(
        &self,
        source: &str,
        to: &str,
        size: u64,
        class: Option<&String>,
    ) -> StorageResult<()> {
        let s = &self.shared;
        s.sweep_stale_uploads().await;
        let ctx = s.ctx("copy", Some(to));
        let to_full = s.cfg.full_key(to);
        let created = s
            .clients
            .call(&ctx, |c| {
                write_options!(
                    c.create_multipart_upload()
                        .bucket(&s.cfg.bucket)
                        .key(&to_full),
                    s,
                    class
                )
                .send()
            })
            .await?;
        let upload_id = created.upload_id.unwrap_or_default();
        let mut guard = AbortGuard {
            shared: Some(s.clone()),
            full_key: to_full.clone(),
            upload_id: upload_id.clone(),
        };
        let part_size = s.cfg.copy_part_size.max(size.div_ceil(MAX_PARTS));
        let result: StorageResult<()> = async {
            let mut parts = Vec::new();
            for (i, start) in (0..size).step_by(part_size as usize).enumerate() {
                let end = (start + part_size).min(size) - 1;
                let number = i as i32 + 1;
                let out = s
                    .clients
                    .call(&ctx, |c| {
                        c.upload_part_copy()
                            .bucket(&s.cfg.bucket)
                            .key(&to_full)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .copy_source(source)
                            .copy_source_range(format!("bytes={start}-{end}"))
                            .send()
                    })
                    .await?;
                let r = out.copy_part_result;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(r.as_ref().and_then(|r| r.e_tag.clone()))
                        .set_checksum_crc32(r.as_ref().and_then(|r| r.checksum_crc32.clone()))
                        .set_checksum_crc32_c(r.as_ref().and_then(|r| r.checksum_crc32_c.clone()))
                        .set_checksum_sha1(r.as_ref().and_then(|r| r.checksum_sha1.clone()))
                        .set_checksum_sha256(r.as_ref().and_then(|r| r.checksum_sha256.clone()))
                        .build(),
                );
            }
            s.clients
                .call(&ctx, |c| {
                    c.complete_multipart_upload()
                        .bucket(&s.cfg.bucket)
                        .key(&to_full)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts.clone()))
                                .build(),
                        )
                        .send()
                })
                .await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                guard.shared = None;
                Ok(())
            }
            Err(e) => {
                guard.abort_now().await;
                Err(e)
            }
        }
    }
}

fn copy_source(bucket: &str, full_key: &str) -> String {
    utf8_percent_encode(&format!("{bucket}/{full_key}"), COPY_SOURCE).to_string()
}

/// The identity two providers must share to copy between their buckets: the same endpoint and
/// the same access key id (fingerprinted: a `CopySource` carries no credential). The default
/// chain resolves the same way for every provider of a process. Refreshable credentials (Crunchy
/// Bridge tokens) are scoped to one bucket and have no identity to compare.
fn copy_identity(cfg: &S3Config) -> Option<String> {
    let who = match &cfg.auth {
        S3Auth::Static(c) => cbob_core::replicate::identity_fingerprint(c.access_key.expose()),
        S3Auth::DefaultChain => "default-chain".to_string(),
        S3Auth::Refreshable(_) => return None,
    };
    let endpoint = cfg.endpoint.as_deref().unwrap_or("aws");
    Some(format!("{endpoint}|{who}"))
}

/// Listing state between pages.
struct Page {
    token: Option<String>,
    finished: bool,
    /// The last key yielded, to prove the order holds across pages.
    last: Option<String>,
}

#[async_trait]
impl StorageProvider for S3Provider {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_copy: true,
            needs_barrier: false,
            max_object_size: Some(MAX_OBJECT_SIZE),
            md5: !matches!(self.shared.cfg.sse, Some(Sse::Kms { .. })),
            crc32c: false,
        }
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let shared = self.shared.clone();
        let rel_prefix = prefix.as_str().to_string();
        let s3_prefix = shared.list_prefix(prefix);
        let start = Page {
            token: None,
            finished: false,
            last: None,
        };
        // One ListObjectsV2 page at a time: memory holds one page, whatever the bucket size.
        // No `encoding-type=url`: s3s-fs ignores it and returns raw keys, which would then be
        // decoded wrongly; raw keys work everywhere for the key rules cbob allows.
        futures::stream::try_unfold(start, move |mut page| {
            let shared = shared.clone();
            let s3_prefix = s3_prefix.clone();
            let rel_prefix = rel_prefix.clone();
            async move {
                if page.finished {
                    return Ok(None);
                }
                let ctx = shared.ctx("list", Some(&rel_prefix));
                let out = shared
                    .clients
                    .call(&ctx, |c| {
                        c.list_objects_v2()
                            .bucket(&shared.cfg.bucket)
                            .prefix(&s3_prefix)
                            .set_continuation_token(page.token.clone())
                            .send()
                    })
                    .await?;
                let mut metas: Vec<ObjectMeta> = out
                    .contents
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|o| {
                        let key = shared.relative_key(o.key.as_deref()?)?;
                        Some(ObjectMeta {
                            key,
                            size: o.size.unwrap_or(0).max(0) as u64,
                            modified: system_time(o.last_modified),
                            hashes: shared.hashes(o.e_tag, false),
                        })
                    })
                    .collect();
                // S3 lists in UTF-8 byte order already; sorting a page is cheap insurance, and
                // the check across pages catches a store that does not (the sync's merge of
                // two listings depends on it).
                metas.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
                if let (Some(last), Some(first)) = (&page.last, metas.first())
                    && first.key.as_str() <= last.as_str()
                {
                    return Err(StorageError::new(
                        StorageErrorKind::Other,
                        format!(
                            "{}: list {rel_prefix:?}: the store returned keys out of order ({:?} after {last:?})",
                            shared.describe,
                            first.key.as_str()
                        ),
                    ));
                }
                if let Some(m) = metas.last() {
                    page.last = Some(m.key.as_str().to_string());
                }
                page.token = out.next_continuation_token.filter(|t| !t.is_empty());
                page.finished = !out.is_truncated.unwrap_or(false) || page.token.is_none();
                Ok(Some((futures::stream::iter(metas.into_iter().map(Ok)), page)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        let s = &self.shared;
        let s3_prefix = s.list_prefix(prefix);
        let ctx = s.ctx("list directories", Some(prefix.as_str()));
        // By name: sorted and each once, whatever the pages say (a page holds up to 1,000
        // objects and common prefixes together).
        let mut dirs = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = s
                .clients
                .call(&ctx, |c| {
                    c.list_objects_v2()
                        .bucket(&s.cfg.bucket)
                        .prefix(&s3_prefix)
                        .delimiter("/")
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            dirs.extend(
                out.common_prefixes
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|cp| s.relative_dir(cp.prefix.as_deref()?))
                    .map(|d| (d.as_str().to_string(), d)),
            );
            token = out.next_continuation_token.filter(|t| !t.is_empty());
            if !out.is_truncated.unwrap_or(false) || token.is_none() {
                break;
            }
        }
        Ok(dirs.into_values().collect())
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let s = &self.shared;
        let full_key = s.cfg.full_key(key.as_str());
        let out = s
            .clients
            .call(&s.ctx("head", Some(key.as_str())), |c| {
                c.head_object().bucket(&s.cfg.bucket).key(&full_key).send()
            })
            .await?;
        let kms = out
            .server_side_encryption
            .as_ref()
            .is_some_and(|e| e.as_str().starts_with("aws:kms"));
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length.unwrap_or(0).max(0) as u64,
            modified: system_time(out.last_modified),
            hashes: s.hashes(out.e_tag, kms),
        })
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let s = &self.shared;
        if let Some(r) = &range
            && r.start >= r.end
        {
            self.head(key).await?; // an empty range of a missing object is still NotFound
            return Ok(futures::stream::empty().boxed());
        }
        let full_key = s.cfg.full_key(key.as_str());
        // An end past any possible object (a resumed read asks `start..u64::MAX`) is sent
        // open-ended: some stores reject a last-byte position that does not fit an i64.
        let header = range.as_ref().map(|r| match r.end {
            end if end > MAX_OBJECT_SIZE => format!("bytes={}-", r.start),
            end => format!("bytes={}-{}", r.start, end - 1),
        });
        let out = s
            .clients
            .call(&s.ctx("get", Some(key.as_str())), |c| {
                let req = c
                    .get_object()
                    .bucket(&s.cfg.bucket)
                    .key(&full_key)
                    .set_range(header.clone())
                    .send();
                async move {
                    match req.await {
                        // A range that starts at or past the end: nothing to read.
                        Err(e) if e.code() == Some("InvalidRange") => Ok(None),
                        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                            Ok(None)
                        }
                        other => other.map(Some),
                    }
                }
            })
            .await?;
        let Some(out) = out else {
            return Ok(futures::stream::empty().boxed());
        };
        let expected = out.content_length.map(|l| l.max(0) as u64);
        let what = format!("{}: get {:?}", s.describe, key.as_str());
        // Count the bytes: a connection cut short must be a (transient) error, never a short
        // object handed on as complete.
        let stream = futures::stream::unfold(Some((out.body, 0u64)), move |state| {
            let what = what.clone();
            async move {
                let (mut body, got) = state?;
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let got = got + chunk.len() as u64;
                        Some((Ok(chunk), Some((body, got))))
                    }
                    Some(Err(e)) => {
                        let msg = format!("{what}: reading failed after {got} bytes: {e}");
                        Some((
                            Err(StorageError::new(StorageErrorKind::Unavailable, msg)),
                            None,
                        ))
                    }
                    None => match expected {
                        Some(n) if n != got => {
                            let msg =
                                format!("{what}: the connection ended after {got} of {n} bytes");
                            Some((
                                Err(StorageError::new(StorageErrorKind::Unavailable, msg)),
                                None,
                            ))
                        }
                        _ => None,
                    },
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let s = &self.shared;
        let size = body.size();
        if size > MAX_OBJECT_SIZE {
            return Err(StorageError::new(
                StorageErrorKind::Unsupported,
                format!(
                    "{}: put {:?}: {size} bytes is more than S3's 5 TiB object limit",
                    s.describe,
                    key.as_str()
                ),
            ));
        }
        let written = if size > s.cfg.multipart_threshold {
            upload::put_multipart(s, key.as_str(), body, options).await?
        } else {
            upload::put_single(s, key.as_str(), body, options).await?
        };
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            // The store's timestamp is not in the response; `head` reports it.
            modified: None,
            hashes: s.hashes(written.etag, false),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let s = &self.shared;
        let full_key = s.cfg.full_key(key.as_str());
        s.clients
            .call(&s.ctx("delete", Some(key.as_str())), |c| {
                let req = c
                    .delete_object()
                    .bucket(&s.cfg.bucket)
                    .key(&full_key)
                    .send();
                async move {
                    match req.await {
                        // S3 answers 204 for a missing key; some stores say NoSuchKey.
                        Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        let s = &self.shared;
        // The size decides between CopyObject (up to 5 GiB) and UploadPartCopy; the head also
        // gives a clean NotFound for a missing source.
        let size = self.head(from).await?.size;
        let source = copy_source(&s.cfg.bucket, &s.cfg.full_key(from.as_str()));
        let class = s.cfg.storage_class.as_ref();
        if size > s.cfg.copy_multipart_threshold {
            return self.copy_multipart(&source, to.as_str(), size, class).await;
        }
        self.copy_single(&source, to.as_str(), class).await
    }

    fn copy_source(&self) -> Option<CopySource> {
        let s = &self.shared;
        Some(CopySource {
            service: "s3",
            account: s.copy_identity.clone()?,
            bucket: s.cfg.bucket.clone(),
            prefix: if s.cfg.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", s.cfg.prefix)
            },
        })
    }

    fn can_copy_from(&self, source: &CopySource) -> bool {
        source.service == "s3"
            && self
                .shared
                .copy_identity
                .as_ref()
                .is_some_and(|me| *me == source.account)
    }

    async fn copy_from(
        &self,
        source: &CopySource,
        key: &ObjectKey,
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let s = &self.shared;
        if !self.can_copy_from(source) {
            return Err(StorageError::new(
                StorageErrorKind::Unsupported,
                format!(
                    "{}: cannot copy server-side from {} bucket {:?}: it is reached through \
                     another endpoint or with other credentials",
                    s.describe, source.service, source.bucket
                ),
            ));
        }
        let from = copy_source(
            &source.bucket,
            &format!("{}{}", source.prefix, key.as_str()),
        );
        // The destination's own storage class and encryption apply to the copy, as to a put.
        let class = upload::storage_class(s, options);
        if size > s.cfg.copy_multipart_threshold {
            self.copy_multipart(&from, key.as_str(), size, class)
                .await?;
        } else {
            self.copy_single(&from, key.as_str(), class).await?;
        }
        // What the store holds now, so the caller compares a real size with the source's.
        self.head(key).await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        let s = &self.shared;
        // Listing one key under the prefix needs only the permission a sync needs anyway
        // (HeadBucket is refused to credentials scoped to a prefix, like Bridge tokens).
        let list_prefix = s.list_prefix(&KeyPrefix::all());
        s.clients
            .call(&s.ctx("check (list)", None), |c| {
                c.list_objects_v2()
                    .bucket(&s.cfg.bucket)
                    .prefix(&list_prefix)
                    .max_keys(1)
                    .send()
            })
            .await?;
        if mode == CheckMode::Read {
            return Ok(());
        }
        let probe = ObjectKey::new(format!(".cbob-check-{:016x}", rand::random::<u64>()))?;
        let payload = Bytes::from(format!("cbob write check {}\n", probe.as_str()));
        self.put(
            &probe,
            Body::from_bytes(payload.clone()),
            &PutOptions::default(),
        )
        .await?;
        let read = match self.get(&probe, None).await {
            Ok(stream) => collect_stream(stream).await,
            Err(e) => Err(e),
        };
        let deleted = self.delete(&probe).await;
        let read = read?;
        deleted?;
        if read != payload {
            return Err(StorageError::corrupt(format!(
                "{}: check: the probe object read back differs from what was written",
                s.describe
            )));
        }
        Ok(())
    }
}
