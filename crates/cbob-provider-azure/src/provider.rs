//! [`AzureProvider`]: the [`StorageProvider`] over the Azure Blob Storage SDK.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use azure_core::error::CheckSuccessOptions;
use azure_core::http::{
    Context, Method, PipelineSendOptions, PipelineStreamOptions, Request, StatusCode, UrlExt,
};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlobClientStartCopyFromUrlOptions,
    BlobClientStartCopyFromUrlResultHeaders, BlobContainerClientListBlobsOptions, CopyStatus,
};
use bytes::Bytes;
use cbob_core::storage::credentials::AzureCredentials;
use cbob_core::storage::{
    Body, ByteStream, Capabilities, CheckMode, CopySource, KeyPrefix, ObjectHashes, ObjectKey,
    ObjectMeta, PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
    collect_stream, listed_dir, listed_key,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::client::{Clients, Handle};
use crate::config::{AccessTier, AzureAuth, AzureConfig, MAX_OBJECT_SIZE};
use crate::errors::{Ctx, redact};
use crate::upload;

/// State shared by the provider, its listings and its background block uploads.
pub(crate) struct Shared {
    pub cfg: AzureConfig,
    pub clients: Clients,
    pub describe: String,
    /// The blob service URL and account, for Copy Blob between containers of the account;
    /// `None` when a copy's source could not be authorized (see [`copy_identity`]).
    copy_identity: Option<String>,
}

impl Shared {
    pub(crate) fn ctx<'a>(&'a self, op: &'static str, key: Option<&'a str>) -> Ctx<'a> {
        Ctx {
            provider: &self.describe,
            container: &self.cfg.container,
            settings: &self.cfg.settings,
            op,
            key,
        }
    }

    /// The blob name prefix to list for a provider-relative prefix.
    fn list_prefix(&self, prefix: &KeyPrefix) -> String {
        if self.cfg.prefix.is_empty() {
            prefix.as_str().to_string()
        } else {
            format!("{}/{}", self.cfg.prefix, prefix.as_str())
        }
    }

    /// The provider-relative directory of a listed `BlobPrefix` (`<root>/a/b/` → `a/b/`), or
    /// `None` for one that breaks the key rules (`a//`, from a name `list` skips as well).
    fn relative_dir(&self, name: &EntryName) -> Option<KeyPrefix> {
        if name.encoded == Some(true) {
            // Only names with characters XML cannot carry are encoded: control characters,
            // which the key rules reject anyway.
            tracing::warn!(provider = %self.describe, prefix = %name.text, "skipping a directory whose name holds control characters");
            return None;
        }
        listed_dir(&self.cfg.prefix, &name.text, &self.describe)
    }

    /// The provider-relative key of a listed blob name (see [`listed_key`]).
    fn relative_key(&self, full: &str) -> Option<ObjectKey> {
        listed_key(&self.cfg.prefix, full, &self.describe)
    }
}

/// One page of List Blobs with delimiter `/` (the SDK's `list_blobs` cannot send a delimiter):
/// only what `list_prefixes` reads, the `BlobPrefix` entries and the marker of the next page.
#[derive(Deserialize)]
struct HierarchyPage {
    #[serde(rename = "Blobs", default)]
    blobs: HierarchyEntries,
    #[serde(rename = "NextMarker", default)]
    next_marker: Option<String>,
}

#[derive(Deserialize, Default)]
struct HierarchyEntries {
    /// `Blob` and `BlobPrefix` elements come interleaved, in name order.
    #[serde(rename = "$value", default)]
    entries: Vec<HierarchyEntry>,
}

#[derive(Deserialize)]
enum HierarchyEntry {
    Blob(serde::de::IgnoredAny),
    BlobPrefix(BlobPrefixEntry),
}

#[derive(Deserialize)]
struct BlobPrefixEntry {
    #[serde(rename = "Name")]
    name: EntryName,
}

#[derive(Deserialize)]
struct EntryName {
    /// Set when the service percent-encoded a name holding characters XML cannot carry.
    #[serde(rename = "@Encoded", default)]
    encoded: Option<bool>,
    #[serde(rename = "$text", default)]
    text: String,
}

fn md5_of(v: Option<Vec<u8>>) -> Option<[u8; 16]> {
    v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
}

fn system_time(t: Option<azure_core::time::OffsetDateTime>) -> Option<SystemTime> {
    t.map(SystemTime::from)
}

/// Azure Blob Storage, under a container and optional prefix.
#[derive(Clone)]
pub struct AzureProvider {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the location and the kind of credentials, never their values.
        f.debug_struct("AzureProvider")
            .field("location", &self.shared.describe)
            .field("auth", &self.shared.cfg.auth)
            .finish()
    }
}

/// Listing state between pages.
struct Page {
    marker: Option<String>,
    finished: bool,
    /// The last key yielded, to prove the order holds across pages.
    last: Option<String>,
}

impl AzureProvider {
    /// Builds the provider. No request is sent; use [`StorageProvider::check`] to probe.
    pub fn new(cfg: AzureConfig) -> StorageResult<Self> {
        cfg.validate()?;
        let clients = Clients::new(&cfg)?;
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
    pub fn config(&self) -> &AzureConfig {
        &self.shared.cfg
    }

    /// The SDK container client currently in use (fresh after a credential refresh), for tests
    /// and tools that need an Azure call the trait does not offer.
    pub async fn container_client(
        &self,
    ) -> StorageResult<Arc<azure_storage_blob::BlobContainerClient>> {
        Ok(self.shared.clients.get().await?.container)
    }

    /// The full blob name of a provider-relative key (prefix included).
    pub fn blob_name(&self, key: &ObjectKey) -> String {
        self.shared.cfg.blob_name(key.as_str())
    }

    /// Copy Blob of the blob at the URL `source` gives for a client (so a SAS in it follows a
    /// credential refresh) to `to`, with `tier`; returns once the service has finished copying.
    async fn copy_blob(
        &self,
        source: &(dyn Fn(&Handle) -> String + Send + Sync),
        to: &ObjectKey,
        tier: Option<AccessTier>,
    ) -> StorageResult<()> {
        let s = &self.shared;
        let to_name = s.cfg.blob_name(to.as_str());
        let started = s
            .clients
            .call(&s.ctx("copy", Some(to.as_str())), |h| {
                let to_name = to_name.clone();
                let source = source(&h);
                async move {
                    let options = BlobClientStartCopyFromUrlOptions {
                        tier: tier.map(AccessTier::to_sdk),
                        ..Default::default()
                    };
                    h.blob(&to_name)
                        .start_copy_from_url(source, Some(options))
                        .await
                }
            })
            .await?;
        match started.copy_status().ok().flatten() {
            Some(CopyStatus::Success) | None => Ok(()),
            Some(CopyStatus::Pending) => {
                self.wait_for_copy(to, started.copy_id().ok().flatten())
                    .await
            }
            Some(status) => Err(StorageError::new(
                StorageErrorKind::Unavailable,
                format!(
                    "{}: copy to {:?} ended as {status:?}",
                    s.describe,
                    to.as_str()
                ),
            )),
        }
    }

    /// The URL of blob `name` in `container` of this provider's account.
    fn blob_url_in(&self, container: &str, name: &str) -> StorageResult<url::Url> {
        let s = &self.shared;
        let account = s.cfg.account.as_deref().unwrap_or_default();
        let mut url = s.cfg.service_url(account)?;
        url.set_query(None);
        url.path_segments_mut()
            .map_err(|_| {
                StorageError::new(
                    StorageErrorKind::Config,
                    format!("{}: the endpoint cannot take a blob path", s.describe),
                )
            })?
            .pop_if_empty()
            .push(container)
            .extend(name.split('/'));
        Ok(url)
    }

    /// Waits until a Copy Blob that the service accepted as `pending` leaves that state.
    async fn wait_for_copy(&self, to: &ObjectKey, copy_id: Option<String>) -> StorageResult<()> {
        let s = &self.shared;
        let name = s.cfg.blob_name(to.as_str());
        let ctx = s.ctx("copy (status)", Some(to.as_str()));
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            let props = s
                .clients
                .call(&ctx, |h| {
                    let name = name.clone();
                    async move { h.blob(&name).get_properties(None).await }
                })
                .await?;
            let id = props.copy_id().ok().flatten();
            if copy_id.is_some() && id != copy_id {
                return Err(StorageError::new(
                    StorageErrorKind::Conflict,
                    format!(
                        "{}: copy to {:?}: another copy or write replaced the blob while it was copied",
                        s.describe,
                        to.as_str()
                    ),
                ));
            }
            match props.copy_status().ok().flatten() {
                Some(CopyStatus::Success) | None => return Ok(()),
                Some(CopyStatus::Pending) => {}
                Some(status) => {
                    let why = props
                        .copy_status_description()
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    return Err(StorageError::new(
                        StorageErrorKind::Unavailable,
                        format!(
                            "{}: copy to {:?} ended as {status:?}: {why}",
                            s.describe,
                            to.as_str()
                        ),
                    ));
                }
            }
            if started.elapsed() > s.cfg.copy_timeout {
                return Err(StorageError::new(
                    StorageErrorKind::Timeout,
                    format!(
                        "{}: copy to {:?} was still pending after {:?}",
                        s.describe,
                        to.as_str(),
                        s.cfg.copy_timeout
                    ),
                ));
            }
        }
    }
}

/// The identity two providers must share to copy between their containers: the same blob
/// service URL and account. Only a Shared Key lets the destination's own signature authorize a
/// source blob (in the same account); a SAS is scoped to its container (the source would need its
/// own SAS in the URL), and refreshable Crunchy Bridge tokens to their one container.
fn copy_identity(cfg: &AzureConfig) -> Option<String> {
    match &cfg.auth {
        AzureAuth::Static(AzureCredentials::SharedKey { account, .. }) => {
            let url = cfg.service_url(account).ok()?;
            Some(format!("{}|{account}", url.as_str().trim_end_matches('/')))
        }
        _ => None,
    }
}

#[async_trait]
impl StorageProvider for AzureProvider {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_copy: true,
            needs_barrier: false,
            max_object_size: Some(MAX_OBJECT_SIZE),
            md5: true,
            crc32c: false,
        }
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let shared = self.shared.clone();
        let rel_prefix = prefix.as_str().to_string();
        let blob_prefix = shared.list_prefix(prefix);
        let start = Page {
            marker: None,
            finished: false,
            last: None,
        };
        // One List Blobs page at a time: memory holds one page, whatever the container size.
        futures::stream::try_unfold(start, move |mut page| {
            let shared = shared.clone();
            let blob_prefix = blob_prefix.clone();
            let rel_prefix = rel_prefix.clone();
            async move {
                if page.finished {
                    return Ok(None);
                }
                let ctx = shared.ctx("list", Some(&rel_prefix));
                let options = BlobContainerClientListBlobsOptions {
                    prefix: (!blob_prefix.is_empty()).then(|| blob_prefix.clone()),
                    marker: page.marker.clone(),
                    maxresults: Some(shared.cfg.list_page_size as i32),
                    ..Default::default()
                };
                let out = shared
                    .clients
                    .call(&ctx, |h| {
                        let options = options.clone();
                        async move {
                            let mut pages = h.container.list_blobs(Some(options))?.into_pages();
                            match pages.try_next().await? {
                                Some(response) => response.into_model().map(Some),
                                None => Ok(None),
                            }
                        }
                    })
                    .await?;
                let Some(out) = out else {
                    return Ok(None);
                };
                let mut metas: Vec<ObjectMeta> = out
                    .blob_items
                    .into_iter()
                    .filter_map(|b| {
                        let key = shared.relative_key(b.name.as_deref()?)?;
                        let props = b.properties.unwrap_or_default();
                        Some(ObjectMeta {
                            key,
                            size: props.content_length.unwrap_or(0),
                            modified: system_time(props.last_modified),
                            hashes: ObjectHashes {
                                md5: md5_of(props.content_md5),
                                crc32c: None,
                                etag: props.etag.map(|e| e.to_string()),
                            },
                        })
                    })
                    .collect();
                // Azure lists in name order; sorting a page is cheap insurance, and the check
                // across pages catches a store that does not (the sync merges two listings).
                metas.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
                if let (Some(last), Some(first)) = (&page.last, metas.first())
                    && first.key.as_str() <= last.as_str()
                {
                    return Err(StorageError::new(
                        StorageErrorKind::Other,
                        format!(
                            "{}: list {rel_prefix:?}: the store returned names out of order ({:?} after {last:?})",
                            shared.describe,
                            first.key.as_str()
                        ),
                    ));
                }
                if let Some(m) = metas.last() {
                    page.last = Some(m.key.as_str().to_string());
                }
                page.marker = out.next_marker.filter(|m| !m.is_empty());
                page.finished = page.marker.is_none();
                Ok(Some((futures::stream::iter(metas.into_iter().map(Ok)), page)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        let s = &self.shared;
        let blob_prefix = s.list_prefix(prefix);
        let ctx = s.ctx("list directories", Some(prefix.as_str()));
        // By name: sorted and each once, whatever the pages say.
        let mut dirs = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = s
                .clients
                .call(&ctx, |h| {
                    let blob_prefix = blob_prefix.clone();
                    let marker = marker.clone();
                    async move {
                        // The request the SDK's `list_blobs` sends, plus the delimiter, through
                        // the same policies (auth, retry); the container URL carries any SAS.
                        let mut url = h.container.url().clone();
                        let mut query = url.query_builder();
                        query
                            .set_pair("restype", "container")
                            .set_pair("comp", "list")
                            .set_pair("delimiter", "/")
                            .set_pair("maxresults", s.cfg.list_page_size.to_string());
                        if !blob_prefix.is_empty() {
                            query.set_pair("prefix", blob_prefix);
                        }
                        if let Some(marker) = marker {
                            query.set_pair("marker", marker);
                        }
                        query.build();
                        let mut request = Request::new(url, Method::Get);
                        request.insert_header("accept", "application/xml");
                        request.insert_header("x-ms-version", h.version.to_string());
                        let options = PipelineSendOptions {
                            check_success: CheckSuccessOptions {
                                success_codes: &[200],
                            },
                            ..Default::default()
                        };
                        let response = h
                            .raw
                            .send(&Context::new(), &mut request, Some(options))
                            .await?;
                        azure_core::xml::from_xml::<_, HierarchyPage>(response.body())
                    }
                })
                .await?;
            for entry in page.blobs.entries {
                if let HierarchyEntry::BlobPrefix(p) = entry
                    && let Some(dir) = s.relative_dir(&p.name)
                {
                    dirs.insert(dir.as_str().to_string(), dir);
                }
            }
            marker = page.next_marker.filter(|m| !m.is_empty());
            if marker.is_none() {
                break;
            }
        }
        Ok(dirs.into_values().collect())
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let s = &self.shared;
        let name = s.cfg.blob_name(key.as_str());
        let props = s
            .clients
            .call(&s.ctx("head", Some(key.as_str())), |h| {
                let name = name.clone();
                async move { h.blob(&name).get_properties(None).await }
            })
            .await?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: props.content_length().ok().flatten().unwrap_or(0),
            modified: system_time(props.last_modified().ok().flatten()),
            hashes: ObjectHashes {
                md5: md5_of(props.content_md5().ok().flatten()),
                crc32c: None,
                etag: props.etag().ok().flatten().map(|e| e.to_string()),
            },
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
        let name = s.cfg.blob_name(key.as_str());
        // An end past any possible blob (a resumed read asks `start..u64::MAX`) is sent
        // open-ended.
        let header = range.as_ref().map(|r| match r.end {
            end if end > MAX_OBJECT_SIZE => format!("bytes={}-", r.start),
            end => format!("bytes={}-{}", r.start, end - 1),
        });
        // A plain Get Blob through the same pipeline (auth, retry): the SDK's `download` is a
        // partitioned parallel download that always sends a range and buffers partitions.
        let response = s
            .clients
            .call(&s.ctx("get", Some(key.as_str())), |h| {
                let name = name.clone();
                let header = header.clone();
                async move {
                    let mut request = Request::new(h.blob(&name).url().clone(), Method::Get);
                    request.insert_header("x-ms-version", h.version.to_string());
                    if let Some(range) = header {
                        request.insert_header("x-ms-range", range);
                    }
                    let options = PipelineStreamOptions {
                        check_success: CheckSuccessOptions {
                            success_codes: &[200, 206],
                        },
                        ..Default::default()
                    };
                    match h
                        .raw
                        .stream(&Context::new(), &mut request, Some(options))
                        .await
                    {
                        Ok(r) => Ok(Some((r, h.secrets.clone()))),
                        // A range that starts at or past the end (or any range of an empty
                        // blob): nothing to read.
                        Err(e)
                            if e.http_status()
                                == Some(StatusCode::RequestedRangeNotSatisfiable) =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        let Some((response, secrets)) = response else {
            return Ok(futures::stream::empty().boxed());
        };
        let expected: Option<u64> = response
            .headers()
            .get_optional_str(&azure_core::http::headers::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok());
        let what = format!("{}: get {:?}", s.describe, key.as_str());
        let body = response.into_body();
        // Count the bytes: a connection cut short must be a (transient) error, never a short
        // object handed on as complete.
        let stream = futures::stream::unfold(Some((body, 0u64)), move |state| {
            let what = what.clone();
            let secrets = secrets.clone();
            async move {
                let (mut body, got) = state?;
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let got = got + chunk.len() as u64;
                        Some((Ok(chunk), Some((body, got))))
                    }
                    Some(Err(e)) => {
                        let msg = redact(
                            &format!("{what}: reading failed after {got} bytes: {e}"),
                            &secrets,
                        );
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
                    "{}: put {:?}: {size} bytes is more than Azure's block blob limit",
                    s.describe,
                    key.as_str()
                ),
            ));
        }
        let tier = upload::access_tier(s, options)?;
        let written = if size <= s.cfg.single_put_limit {
            upload::put_single(s, key.as_str(), body, tier).await?
        } else {
            upload::put_blocks(s, key.as_str(), body, tier).await?
        };
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            // The service's timestamp is not in the response; `head` reports it.
            modified: None,
            hashes: ObjectHashes {
                md5: Some(written.md5),
                crc32c: None,
                etag: written.etag,
            },
        })
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let s = &self.shared;
        let name = s.cfg.blob_name(key.as_str());
        s.clients
            .call(&s.ctx("delete", Some(key.as_str())), |h| {
                let name = name.clone();
                async move {
                    match h.blob(&name).delete(None).await {
                        Ok(_) => Ok(()),
                        // A missing blob is already deleted; a missing container is not.
                        Err(e)
                            if matches!(
                                e.kind(),
                                azure_core::error::ErrorKind::HttpResponse {
                                    error_code: Some(code),
                                    ..
                                } if code == "BlobNotFound"
                            ) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        let s = &self.shared;
        // A clean NotFound for a missing source, before a copy is started.
        self.head(from).await?;
        let from_name = s.cfg.blob_name(from.as_str());
        // Copy Blob: the source URL carries the SAS when there is one; with a Shared Key the
        // destination request's signature authorizes a source in the same account.
        let source = move |h: &Handle| h.blob(&from_name).url().to_string();
        self.copy_blob(&source, to, s.cfg.access_tier).await
    }

    fn copy_source(&self) -> Option<CopySource> {
        let s = &self.shared;
        Some(CopySource {
            service: "azure",
            account: s.copy_identity.clone()?,
            bucket: s.cfg.container.clone(),
            prefix: if s.cfg.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", s.cfg.prefix)
            },
        })
    }

    fn can_copy_from(&self, source: &CopySource) -> bool {
        source.service == "azure"
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
                    "{}: cannot copy server-side from container {:?}: it is in another account or \
                     reached through another endpoint, or the credentials are not a Shared Key",
                    s.describe, source.bucket
                ),
            ));
        }
        let _ = size; // Copy Blob copies any size in one call.
        let from = self.blob_url_in(
            &source.bucket,
            &format!("{}{}", source.prefix, key.as_str()),
        )?;
        // The destination's access tier applies to the copy, as to a put.
        let tier = upload::access_tier(s, options)?;
        let from = from.to_string();
        self.copy_blob(&move |_: &Handle| from.clone(), key, tier)
            .await?;
        // What the service holds now, so the caller compares a real size with the source's.
        self.head(key).await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        let s = &self.shared;
        // Listing one blob under the prefix needs only what a sync needs anyway (a container
        // SAS cannot read container properties).
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(s.list_prefix(&KeyPrefix::all())).filter(|p| !p.is_empty()),
            maxresults: Some(1),
            ..Default::default()
        };
        s.clients
            .call(&s.ctx("check (list)", None), |h| {
                let options = options.clone();
                async move {
                    let mut pages = h.container.list_blobs(Some(options))?.into_pages();
                    pages.try_next().await.map(|_| ())
                }
            })
            .await?;
        if mode == CheckMode::Read {
            return Ok(());
        }
        let probe = ObjectKey::new(format!(".cbob-check-{:016x}", rand::random::<u64>()))?;
        let payload = Bytes::from(format!("cbob write check {}\n", probe.as_str()));
        // Written with the account's default tier: a probe in Archive could not be read back.
        upload::put_single(s, probe.as_str(), Body::from_bytes(payload.clone()), None).await?;
        let read = match self.get(&probe, None).await {
            Ok(stream) => collect_stream(stream).await,
            Err(e) => Err(e),
        };
        let deleted = self.delete(&probe).await;
        let read = read?;
        deleted?;
        if read != payload {
            return Err(StorageError::corrupt(format!(
                "{}: check: the probe blob read back differs from what was written",
                s.describe
            )));
        }
        Ok(())
    }
}
