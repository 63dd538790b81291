//! A read-only view of a destination as it will be once the new `backup.info` is written, so a
//! dry run asks the very code that removes files ([`crate::sync::prune_stanza`]) what it would
//! remove, instead of a second copy of its rules that could drift.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};

use crate::storage::{
    Body, ByteStream, Capabilities, CheckMode, DynProvider, KeyPrefix, ObjectKey, ObjectMeta,
    PutOptions, StorageError, StorageErrorKind, StorageProvider, StorageResult,
};

/// `inner` with one object's content replaced; every write is refused.
#[derive(Debug)]
pub(super) struct Preview {
    inner: DynProvider,
    key: ObjectKey,
    bytes: Bytes,
}

impl Preview {
    pub(super) fn new(inner: DynProvider, key: ObjectKey, bytes: Bytes) -> Self {
        Self { inner, key, bytes }
    }

    fn refuse(&self, what: &str) -> StorageError {
        StorageError::new(
            StorageErrorKind::Unsupported,
            format!(
                "{what} refused: this is a read-only preview of {}",
                self.inner.describe()
            ),
        )
    }
}

#[async_trait]
impl StorageProvider for Preview {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        // As `list`: the replaced content changes no key, so the directories are the inner ones.
        self.inner.list_prefixes(prefix).await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        if key == &self.key {
            return Ok(ObjectMeta::new(key.clone(), self.bytes.len() as u64));
        }
        self.inner.head(key).await
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        if key != &self.key {
            return self.inner.get(key, range).await;
        }
        let len = self.bytes.len() as u64;
        let r = range.unwrap_or(0..len);
        let (start, end) = (r.start.min(len) as usize, r.end.min(len) as usize);
        let slice = self.bytes.slice(start..end.max(start));
        Ok(Box::pin(stream::iter([Ok(slice)])))
    }

    async fn put(
        &self,
        key: &ObjectKey,
        _body: Body,
        _options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        Err(self.refuse(&format!("writing {key}")))
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        Err(self.refuse(&format!("deleting {key}")))
    }

    async fn copy(&self, from: &ObjectKey, _to: &ObjectKey) -> StorageResult<()> {
        Err(self.refuse(&format!("copying {from}")))
    }

    async fn barrier(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn check(&self, _mode: CheckMode) -> StorageResult<()> {
        self.inner.check(CheckMode::Read).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::list_dirs;
    use crate::storage::local::LocalProvider;
    use crate::testkit::{FailurePlan, FlakyProvider};

    /// The preview answers directory listings from the destination's own delimiter listing
    /// (no full listing), and the replaced object adds or hides no directory.
    #[tokio::test]
    async fn directory_listing_reaches_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let local: DynProvider = Arc::new(LocalProvider::new(dir.path()).unwrap());
        let info = ObjectKey::new("backup/s1/backup.info").unwrap();
        local
            .put(&info, Body::from_bytes("old"), &PutOptions::default())
            .await
            .unwrap();
        let counted = Arc::new(FlakyProvider::new(local, FailurePlan::transient(0)));
        let preview = Preview::new(counted.clone(), info, Bytes::from_static(b"new"));
        let dirs = list_dirs(&preview, &KeyPrefix::new("backup/").unwrap())
            .await
            .unwrap();
        assert_eq!(dirs, [KeyPrefix::new("backup/s1/").unwrap()]);
        assert_eq!(counted.calls("list_prefixes"), 1);
        assert_eq!(counted.calls("list"), 0);
    }
}
