//! The one listing of a stanza per run (SPEC §5 rule 1), as a stream: source and destination are
//! listed at the same time, in the background, a bounded number of entries ahead, and walked
//! side by side in key order. Memory stays flat whatever the number of objects, and transfers
//! start while the listing goes on.

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use super::error::SyncError;
use crate::storage::{DynProvider, KeyPrefix, ObjectMeta, StorageResult};

/// Entries listed ahead of the consumer, per prefix (about a page and a half of S3).
const LISTED_AHEAD: usize = 1500;

/// The objects of `archive/<stanza>/` then `backup/<stanza>/`, in ascending key order. Both
/// prefixes are listed at once, each by its own task that stops when this stream is dropped.
pub struct StanzaListing {
    what: String,
    parts: Vec<mpsc::Receiver<StorageResult<ObjectMeta>>>,
    last: Option<String>,
}

impl StanzaListing {
    pub fn start(provider: &DynProvider, stanza: &str) -> Result<Self, SyncError> {
        let mut parts = Vec::new();
        for prefix in [format!("archive/{stanza}/"), format!("backup/{stanza}/")] {
            let p = KeyPrefix::new(prefix.clone())
                .map_err(|e| SyncError::storage(format!("listing {prefix}"), e))?;
            let (tx, rx) = mpsc::channel(LISTED_AHEAD);
            let mut stream: BoxStream<'static, StorageResult<ObjectMeta>> = provider.list(&p);
            tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return; // the consumer is gone, or the listing ended in an error
                    }
                }
            });
            parts.push(rx);
        }
        parts.reverse(); // popped from the end: archive first
        Ok(Self {
            what: provider.describe(),
            parts,
            last: None,
        })
    }

    /// The next object, or `None` at the end. Keys must arrive in ascending order (the storage
    /// contract): walking two listings side by side depends on it, so a provider that breaks
    /// it fails the stanza rather than silently re-copying or skipping objects.
    pub async fn next(&mut self) -> Result<Option<ObjectMeta>, SyncError> {
        loop {
            let Some(part) = self.parts.last_mut() else {
                return Ok(None);
            };
            match part.recv().await {
                None => {
                    self.parts.pop();
                }
                Some(Err(e)) => {
                    return Err(SyncError::storage(format!("listing {}", self.what), e));
                }
                Some(Ok(meta)) => {
                    let key = meta.key.as_str();
                    if let Some(last) = &self.last
                        && key <= last.as_str()
                    {
                        return Err(SyncError::Internal(format!(
                            "the listing of {} is not in ascending key order ({key:?} after {last:?})",
                            self.what
                        )));
                    }
                    self.last = Some(key.to_string());
                    return Ok(Some(meta));
                }
            }
        }
    }
}

/// The destination's listing, advanced in step with the source's: `find` answers whether the
/// destination holds a key, for keys asked in ascending order.
pub struct DestCursor {
    listing: StanzaListing,
    peeked: Option<ObjectMeta>,
    done: bool,
}

impl DestCursor {
    pub fn new(listing: StanzaListing) -> Self {
        Self {
            listing,
            peeked: None,
            done: false,
        }
    }

    /// The destination's object named `key`, if any. Destination objects with smaller keys,
    /// which the source does not have, are passed over.
    pub async fn find(&mut self, key: &str) -> Result<Option<ObjectMeta>, SyncError> {
        loop {
            if self.peeked.is_none() && !self.done {
                self.peeked = self.listing.next().await?;
                self.done = self.peeked.is_none();
            }
            match &self.peeked {
                Some(m) if m.key.as_str() < key => self.peeked = None,
                Some(m) if m.key.as_str() == key => return Ok(self.peeked.take()),
                _ => return Ok(None),
            }
        }
    }
}
