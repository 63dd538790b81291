//! [`GcsProvider`]: the [`StorageProvider`] over the GCS JSON API (`gcloud-storage`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use cbob_core::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, KeyPrefix, ObjectKey, ObjectMeta,
    PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult, collect_stream,
    listed_dir, listed_key,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use gcloud_storage::client::Client;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range as GcsRange;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::rewrite::RewriteObjectRequest;

use crate::chunks::hashes_of;
use crate::config::{GcsAuth, GcsConfig, MAX_OBJECT_SIZE, normalize_storage_class};
use crate::errors::{Ctx, NotFoundMeans, classify, to_storage_error};
use crate::upload;

/// State shared by the provider, its listings and its uploads.
pub(crate) struct Shared {
    pub cfg: GcsConfig,
    pub client: Client,
    pub describe: String,
    credentials_setting: String,
    /// The endpoint and who the client acts as: two providers that share it can rewrite objects
    /// from one bucket into the other.
    copy_identity: String,
}

impl Shared {
    pub(crate) fn ctx<'a>(&'a self, op: &'static str, key: Option<&'a str>) -> Ctx<'a> {
        Ctx {
            provider: &self.describe,
            bucket: &self.cfg.bucket,
            settings: &self.cfg.settings,
            credentials_setting: &self.credentials_setting,
            anonymous: self.cfg.auth == GcsAuth::Anonymous,
            op,
            key,
        }
    }

    /// The object-name prefix to list for a provider-relative prefix.
    fn list_prefix(&self, prefix: &KeyPrefix) -> String {
        self.cfg.full_key(prefix.as_str())
    }

    /// The provider-relative directory of a listed common prefix (see [`listed_dir`]).
    fn relative_dir(&self, full: &str) -> Option<KeyPrefix> {
        listed_dir(&self.cfg.prefix, full, &self.describe)
    }

    /// The provider-relative key of a listed object name (see [`listed_key`]).
    fn relative_key(&self, full: &str) -> Option<ObjectKey> {
        listed_key(&self.cfg.prefix, full, &self.describe)
    }

    fn meta(key: ObjectKey, o: &Object) -> ObjectMeta {
        ObjectMeta {
            key,
            size: o.size.max(0) as u64,
            modified: o.updated.or(o.time_created).map(SystemTime::from),
            hashes: hashes_of(o),
        }
    }

    fn storage_class<'a>(&'a self, options: &'a PutOptions) -> StorageResult<Option<String>> {
        match options.storage_class.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => normalize_storage_class(c).map(Some).map_err(|m| {
                StorageError::new(StorageErrorKind::Config, format!("{}: {m}", self.describe))
            }),
            None => Ok(self.cfg.storage_class.clone()),
        }
    }
}

/// Google Cloud Storage under a bucket and optional prefix.
#[derive(Clone)]
pub struct GcsProvider {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GcsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Where the credentials come from, never what they are.
        f.debug_struct("GcsProvider")
            .field("location", &self.shared.describe)
            .field("auth", &self.shared.cfg.auth)
            .finish()
    }
}

impl GcsProvider {
    /// objects.rewrite of `from` (a full object name in `source_bucket`) to `to` in this bucket,
    /// with `class`. It works for any size and across buckets and storage classes; large objects
    /// take several calls, each continuing with the token of the last. Returns the new object's
    /// metadata when the service sends it.
    async fn rewrite(
        &self,
        source_bucket: &str,
        from: String,
        to: &ObjectKey,
        class: Option<String>,
    ) -> StorageResult<Option<Object>> {
        let s = &self.shared;
        let mut request = RewriteObjectRequest {
            source_bucket: source_bucket.to_string(),
            source_object: from.clone(),
            destination_bucket: s.cfg.bucket.clone(),
            destination_object: s.cfg.full_key(to.as_str()),
            destination_metadata: class.map(|c| Object {
                storage_class: Some(c),
                ..Object::default()
            }),
            ..RewriteObjectRequest::default()
        };
        loop {
            let out = s
                .client
                .rewrite_object(&request)
                .await
                .map_err(|e| self.err(e, NotFoundMeans::Object, "copy", &from))?;
            if out.done {
                return Ok(out.resource);
            }
            request.rewrite_token = Some(out.rewrite_token.filter(|t| !t.is_empty()).ok_or_else(|| {
                StorageError::new(
                    StorageErrorKind::Other,
                    format!(
                        "{}: copy {from:?}: the service neither finished nor gave a token to continue",
                        s.describe,
                    ),
                )
            })?);
        }
    }

    /// Builds the provider. With a credentials file this fetches the first access token (so a
    /// refused key fails here); otherwise no request is sent. Use [`StorageProvider::check`] to
    /// probe the bucket.
    pub async fn new(cfg: GcsConfig) -> StorageResult<Self> {
        cfg.validate()?;
        let (client, who) = crate::auth::client(&cfg).await?;
        let copy_identity = format!("{}|{who}", cfg.endpoint.trim_end_matches('/'));
        let describe = cfg.describe();
        let credentials_setting = match &cfg.auth {
            GcsAuth::Anonymous => format!(
                "{} (not set)",
                cfg.settings
                    .name(cbob_core::storage::Setting::GcsCredentials)
            ),
            GcsAuth::CredentialsFile { path, setting } => {
                format!("{setting} ({})", path.display())
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                cfg,
                client,
                describe,
                credentials_setting,
                copy_identity,
            }),
        })
    }

    /// The settings this provider was built with.
    pub fn config(&self) -> &GcsConfig {
        &self.shared.cfg
    }

    /// The `gcloud-storage` client, for tests and tools that need a call the trait does not offer.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    fn err(
        &self,
        e: gcloud_storage::http::Error,
        nf: NotFoundMeans,
        op: &'static str,
        key: &str,
    ) -> StorageError {
        to_storage_error(e, nf, &self.shared.ctx(op, Some(key)))
    }
}

/// Listing state between pages.
struct Page {
    token: Option<String>,
    finished: bool,
    /// The last key yielded, to prove the order holds across pages.
    last: Option<String>,
}

#[async_trait]
impl StorageProvider for GcsProvider {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_copy: true,
            needs_barrier: false,
            max_object_size: Some(MAX_OBJECT_SIZE),
            // Reported for every object cbob writes (composite objects, which cbob never makes,
            // have no MD5).
            md5: true,
            crc32c: true,
        }
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let shared = self.shared.clone();
        let rel_prefix = prefix.as_str().to_string();
        let gcs_prefix = shared.list_prefix(prefix);
        let start = Page {
            token: None,
            finished: false,
            last: None,
        };
        // One page at a time: memory holds one page, whatever the bucket size.
        futures::stream::try_unfold(start, move |mut page| {
            let shared = shared.clone();
            let gcs_prefix = gcs_prefix.clone();
            let rel_prefix = rel_prefix.clone();
            async move {
                if page.finished {
                    return Ok(None);
                }
                let request = ListObjectsRequest {
                    bucket: shared.cfg.bucket.clone(),
                    prefix: (!gcs_prefix.is_empty()).then_some(gcs_prefix),
                    max_results: Some(shared.cfg.list_page_size),
                    page_token: page.token.take(),
                    ..ListObjectsRequest::default()
                };
                let out = shared.client.list_objects(&request).await.map_err(|e| {
                    to_storage_error(e, NotFoundMeans::Bucket, &shared.ctx("list", Some(&rel_prefix)))
                })?;
                let mut metas: Vec<ObjectMeta> = out
                    .items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|o| Some(Shared::meta(shared.relative_key(&o.name)?, o)))
                    .collect();
                // GCS lists in UTF-8 byte order; sorting a page is cheap insurance, and the check
                // across pages catches a store that does not (the sync's merge depends on it).
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
                page.token = out.next_page_token.filter(|t| !t.is_empty());
                page.finished = page.token.is_none();
                Ok(Some((futures::stream::iter(metas.into_iter().map(Ok)), page)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        let s = &self.shared;
        let gcs_prefix = s.list_prefix(prefix);
        // By name: sorted and each once, whatever the pages say.
        let mut dirs = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let request = ListObjectsRequest {
                bucket: s.cfg.bucket.clone(),
                prefix: (!gcs_prefix.is_empty()).then(|| gcs_prefix.clone()),
                delimiter: Some("/".to_string()),
                max_results: Some(s.cfg.list_page_size),
                page_token: token.take(),
                ..ListObjectsRequest::default()
            };
            let out = s.client.list_objects(&request).await.map_err(|e| {
                to_storage_error(
                    e,
                    NotFoundMeans::Bucket,
                    &s.ctx("list directories", Some(prefix.as_str())),
                )
            })?;
            dirs.extend(
                out.prefixes
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| s.relative_dir(p))
                    .map(|d| (d.as_str().to_string(), d)),
            );
            token = out.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok(dirs.into_values().collect())
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let s = &self.shared;
        let request = GetObjectRequest {
            bucket: s.cfg.bucket.clone(),
            object: s.cfg.full_key(key.as_str()),
            ..GetObjectRequest::default()
        };
        let o = s
            .client
            .get_object(&request)
            .await
            .map_err(|e| self.err(e, NotFoundMeans::Object, "head", key.as_str()))?;
        Ok(Shared::meta(key.clone(), &o))
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let s = &self.shared;
        if let Some(r) = &range
            && r.start >= r.end
        {
            self.head(key).await?; // an empty range of a missing object is still NotFound
            return Ok(futures::stream::empty().boxed());
        }
        // An end past any possible object (a resumed read asks `start..u64::MAX`) is sent open.
        let gcs_range = match &range {
            None => GcsRange::default(),
            Some(r) if r.end > MAX_OBJECT_SIZE => GcsRange(Some(r.start), None),
            Some(r) => GcsRange(Some(r.start), Some(r.end - 1)),
        };
        let request = GetObjectRequest {
            bucket: s.cfg.bucket.clone(),
            object: s.cfg.full_key(key.as_str()),
            ..GetObjectRequest::default()
        };
        let stream = match s
            .client
            .download_streamed_object(&request, &gcs_range)
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                let f = classify(e, NotFoundMeans::Object);
                // A range that starts at or past the end: nothing to read.
                if f.is_range_not_satisfiable() {
                    return Ok(futures::stream::empty().boxed());
                }
                return Err(f.into_error(&s.ctx("get", Some(key.as_str()))));
            }
        };
        // hyper fails a body that ends before its Content-Length (or its last chunk), so a cut
        // connection surfaces here as a transient error, never as a short object.
        let what = format!("{}: get {:?}", s.describe, key.as_str());
        let mut got = 0u64;
        let stream = stream.map(move |chunk| match chunk {
            Ok(bytes) => {
                got += bytes.len() as u64;
                Ok(bytes)
            }
            Err(e) => {
                let f = classify(e, NotFoundMeans::Object);
                Err(StorageError::new(
                    StorageErrorKind::Unavailable,
                    format!("{what}: reading failed after {got} bytes: {}", f.detail),
                ))
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
                    "{}: put {:?}: {size} bytes is more than GCS's 5 TiB object limit",
                    s.describe,
                    key.as_str()
                ),
            ));
        }
        let class = s.storage_class(options)?;
        let object = if size <= s.cfg.single_upload_limit {
            upload::put_single(s, key.as_str(), body, class.as_deref()).await?
        } else {
            upload::put_resumable(s, key.as_str(), body, class.as_deref()).await?
        };
        Ok(Shared::meta(key.clone(), &object))
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let s = &self.shared;
        let request = DeleteObjectRequest {
            bucket: s.cfg.bucket.clone(),
            object: s.cfg.full_key(key.as_str()),
            ..DeleteObjectRequest::default()
        };
        match s.client.delete_object(&request).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let f = classify(e, NotFoundMeans::Object);
                // Deleting what is not there succeeds; a missing bucket does not.
                if f.kind == StorageErrorKind::NotFound && !f.bucket_missing {
                    return Ok(());
                }
                Err(f.into_error(&s.ctx("delete", Some(key.as_str()))))
            }
        }
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        let s = &self.shared;
        self.rewrite(
            &s.cfg.bucket,
            s.cfg.full_key(from.as_str()),
            to,
            s.cfg.storage_class.clone(),
        )
        .await
        .map(|_| ())
    }

    fn copy_source(&self) -> Option<CopySource> {
        let s = &self.shared;
        Some(CopySource {
            service: "gcs",
            account: s.copy_identity.clone(),
            bucket: s.cfg.bucket.clone(),
            prefix: if s.cfg.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", s.cfg.prefix)
            },
        })
    }

    fn can_copy_from(&self, source: &CopySource) -> bool {
        source.service == "gcs" && source.account == self.shared.copy_identity
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
                    "{}: cannot copy server-side from bucket {:?}: it is reached through another \
                     endpoint or with other credentials",
                    s.describe, source.bucket
                ),
            ));
        }
        let _ = size; // rewrite takes as many calls as the service needs, whatever the size
        // The destination's own storage class applies to the copy, as to a put.
        let class = s.storage_class(options)?;
        let from = format!("{}{}", source.prefix, key.as_str());
        match self.rewrite(&source.bucket, from, key, class).await? {
            Some(object) => Ok(Shared::meta(key.clone(), &object)),
            // No resource in the last answer: ask what the service holds now.
            None => self.head(key).await,
        }
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        let s = &self.shared;
        // Listing one object needs only the permission a sync needs anyway (bucket metadata
        // would need storage.buckets.get, which object-scoped roles lack).
        let prefix = s.list_prefix(&KeyPrefix::all());
        let request = ListObjectsRequest {
            bucket: s.cfg.bucket.clone(),
            prefix: (!prefix.is_empty()).then_some(prefix),
            max_results: Some(1),
            ..ListObjectsRequest::default()
        };
        s.client.list_objects(&request).await.map_err(|e| {
            to_storage_error(e, NotFoundMeans::Bucket, &s.ctx("check (list)", None))
        })?;
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
