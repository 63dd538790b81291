//! Reading objects through the streaming verifiers of [`crate::repo`]: a whole object, or the
//! file slices of a bundle in one pass. Nothing is buffered: each chunk is hashed and dropped.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;

use crate::repo::{FileCheck, RepoError, StreamVerifier, file_verifier};
use crate::storage::{DynProvider, ObjectKey, StorageError, StorageErrorKind};
use crate::sync::SyncObserver;

/// pgBackRest's result categories for one file or WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Category {
    Missing,
    Checksum,
    Size,
    Other,
}

/// The verdict on one file, slice or segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Valid,
    Invalid { category: Category, message: String },
}

impl Outcome {
    pub(super) fn invalid(category: Category, message: impl Into<String>) -> Self {
        Outcome::Invalid {
            category,
            message: message.into(),
        }
    }

    /// The category a verifier's error belongs to.
    pub(super) fn from_repo(e: &RepoError) -> Self {
        let category = match e {
            RepoError::Checksum { .. } => Category::Checksum,
            RepoError::Size { .. } => Category::Size,
            _ => Category::Other,
        };
        Self::invalid(category, e.to_string())
    }

    pub(super) fn from_read(e: ReadError) -> Self {
        match e {
            ReadError::Missing(key) => {
                Self::invalid(Category::Missing, format!("{key} is missing"))
            }
            ReadError::Storage(key, e) => {
                Self::invalid(Category::Other, format!("cannot read {key}: {e}"))
            }
            ReadError::Verify(e) => Self::from_repo(&e),
        }
    }
}

/// Why reading an object through a verifier stopped.
#[derive(Debug)]
pub(super) enum ReadError {
    Missing(String),
    Storage(String, StorageError),
    Verify(RepoError),
}

/// What every read needs: the provider, progress, and counters for the report.
#[derive(Clone)]
pub(super) struct Reader {
    pub provider: DynProvider,
    pub observer: Arc<dyn SyncObserver>,
    pub stanza: String,
    pub objects: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
}

impl Reader {
    /// Streams `key` (or `range` of it) into `feed`, chunk by chunk, stopping at the first
    /// error. Returns the bytes read.
    pub(super) async fn stream(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        mut feed: impl FnMut(&[u8]) -> Result<(), RepoError> + Send,
    ) -> Result<u64, ReadError> {
        let storage = |e: StorageError| {
            if e.kind() == StorageErrorKind::NotFound {
                ReadError::Missing(key.to_string())
            } else {
                ReadError::Storage(key.to_string(), e)
            }
        };
        let mut stream = self.provider.get(key, range).await.map_err(storage)?;
        self.objects.fetch_add(1, Ordering::Relaxed);
        let mut read = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(storage)? {
            read += chunk.len() as u64;
            self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            self.observer.bytes(&self.stanza, chunk.len() as u64);
            feed(&chunk).map_err(ReadError::Verify)?;
        }
        Ok(read)
    }

    /// Checks a whole object against a manifest file check. Returns the verdict and bytes read.
    pub(super) async fn check_object(
        &self,
        key: &ObjectKey,
        name: &str,
        check: &FileCheck,
    ) -> (Outcome, u64) {
        let mut verifier = file_verifier(name, check);
        let mut read = 0;
        let result = self
            .stream(key, None, |chunk| {
                read += chunk.len() as u64;
                verifier.update(chunk)
            })
            .await;
        let outcome = match result {
            Ok(_) => match verifier.finish_boxed() {
                Ok(()) => Outcome::Valid,
                Err(e) => Outcome::from_repo(&e),
            },
            Err(e) => Outcome::from_read(e),
        };
        self.observer.file_done(&self.stanza, key.as_str(), read);
        (outcome, read)
    }

    /// Checks the file slices of one bundle object, reading only the span they cover, once per
    /// group of non-overlapping slices (pgBackRest never writes overlapping ones). Every slice
    /// gets its own verdict: a bad one does not hide the others.
    pub(super) async fn check_slices(
        &self,
        key: &ObjectKey,
        slices: Vec<Slice>,
    ) -> (Vec<(Slice, Outcome)>, u64) {
        let mut out = Vec::with_capacity(slices.len());
        let mut total = 0;
        for group in non_overlapping_groups(slices) {
            let start = group.first().map_or(0, |s| s.offset);
            let end = group.iter().map(Slice::end).max().unwrap_or(start);
            let mut walker = SliceWalker::new(group, start);
            let mut read = 0;
            let result = if end > start {
                self.stream(key, Some(start..end), |chunk| {
                    read += chunk.len() as u64;
                    walker.update(chunk);
                    Ok(())
                })
                .await
            } else {
                Ok(0)
            };
            total += read;
            match result {
                Ok(_) => out.extend(walker.finish()),
                Err(e) => {
                    // The object could not be read (to the end): what the walker finished
                    // stands, the rest shares the read error.
                    let failure = Outcome::from_read(e);
                    out.extend(
                        walker
                            .finish_partial()
                            .into_iter()
                            .map(|(s, o)| (s, o.unwrap_or_else(|| failure.clone()))),
                    );
                }
            }
        }
        self.observer.file_done(&self.stanza, key.as_str(), total);
        (out, total)
    }
}

/// One file stored in a bundle: where, how long, and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slice {
    /// Manifest file name (`pg_data/base/1/1259`).
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub check: FileCheck,
}

impl Slice {
    pub(super) fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Splits slices into groups that each can be walked in one ascending pass.
fn non_overlapping_groups(mut slices: Vec<Slice>) -> Vec<Vec<Slice>> {
    slices.sort_by_key(|s| (s.offset, s.length));
    let mut groups: Vec<Vec<Slice>> = Vec::new();
    for s in slices {
        match groups
            .iter_mut()
            .find(|g| g.last().is_none_or(|l| l.end() <= s.offset))
        {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    groups
}

/// Feeds a stream of bundle bytes to one verifier per slice, recording each slice's verdict
/// and carrying on after a bad one.
struct SliceWalker {
    slices: Vec<Slice>,
    results: Vec<Option<Outcome>>,
    /// Position in the object of the next byte.
    pos: u64,
    /// The slice the next bytes belong to (or will).
    idx: usize,
    current: Option<Box<dyn StreamVerifier>>,
}

impl SliceWalker {
    /// `slices` sorted and non-overlapping; `start`: object offset of the first byte fed.
    fn new(slices: Vec<Slice>, start: u64) -> Self {
        let results = vec![None; slices.len()];
        let mut w = Self {
            slices,
            results,
            pos: start,
            idx: 0,
            current: None,
        };
        w.settle_empty();
        w
    }

    fn label(&self, i: usize) -> String {
        format!(
            "{} (bundle offset {})",
            self.slices[i].name, self.slices[i].offset
        )
    }

    /// Slices of length 0 at the current position need no bytes: check them now.
    fn settle_empty(&mut self) {
        while self.idx < self.slices.len()
            && self.slices[self.idx].length == 0
            && self.slices[self.idx].offset <= self.pos
        {
            let v = file_verifier(self.label(self.idx), &self.slices[self.idx].check);
            self.results[self.idx] = Some(match v.finish_boxed() {
                Ok(()) => Outcome::Valid,
                Err(e) => Outcome::from_repo(&e),
            });
            self.idx += 1;
        }
    }

    fn update(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.idx < self.slices.len() {
            let (offset, end) = (self.slices[self.idx].offset, self.slices[self.idx].end());
            if self.pos < offset {
                let skip = usize::try_from(offset - self.pos)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                self.pos += skip as u64;
                chunk = &chunk[skip..];
                self.settle_empty();
                continue;
            }
            if self.current.is_none() && self.results[self.idx].is_none() {
                self.current = Some(file_verifier(
                    self.label(self.idx),
                    &self.slices[self.idx].check,
                ));
            }
            let take = usize::try_from(end - self.pos)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            if let Some(v) = self.current.as_mut()
                && let Err(e) = v.update(&chunk[..take])
            {
                // Bad bytes: record the verdict, skip the rest of this slice.
                self.results[self.idx] = Some(Outcome::from_repo(&e));
                self.current = None;
            }
            self.pos += take as u64;
            chunk = &chunk[take..];
            if self.pos == end {
                if let Some(v) = self.current.take() {
                    self.results[self.idx] = Some(match v.finish_boxed() {
                        Ok(()) => Outcome::Valid,
                        Err(e) => Outcome::from_repo(&e),
                    });
                }
                self.idx += 1;
                self.settle_empty();
            }
        }
        self.pos += chunk.len() as u64;
    }

    /// Verdicts so far; `None` for slices not reached.
    fn finish_partial(self) -> Vec<(Slice, Option<Outcome>)> {
        self.slices.into_iter().zip(self.results).collect()
    }

    /// Verdicts for every slice: one the bytes ended inside or before is a size error.
    fn finish(self) -> Vec<(Slice, Outcome)> {
        let pos = self.pos;
        self.finish_partial()
            .into_iter()
            .map(|(s, o)| {
                let o = o.unwrap_or_else(|| {
                    Outcome::invalid(
                        Category::Size,
                        format!(
                            "{} (bundle offset {}): the bundle ends at byte {pos}, before this file's end at {}",
                            s.name,
                            s.offset,
                            s.end()
                        ),
                    )
                });
                (s, o)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    fn slice(name: &str, offset: u64, data: &[u8]) -> Slice {
        Slice {
            name: name.into(),
            offset,
            length: data.len() as u64,
            check: FileCheck::Stored {
                sha1: hex::encode(Sha1::digest(data)),
                size: data.len() as u64,
            },
        }
    }

    fn walk(slices: Vec<Slice>, start: u64, bytes: &[u8], chunk: usize) -> Vec<Outcome> {
        let mut w = SliceWalker::new(slices, start);
        for c in bytes.chunks(chunk) {
            w.update(c);
        }
        w.finish().into_iter().map(|(_, o)| o).collect()
    }

    #[test]
    fn every_slice_gets_its_own_verdict() {
        let (a, b, c) = (b"alpha".to_vec(), vec![7u8; 5000], b"gamma".to_vec());
        // A gap of 3 bytes between b and c, as if another file were there.
        let mut bundle = [a.clone(), b.clone(), b"xyz".to_vec(), c.clone()].concat();
        let slices = || {
            vec![
                slice("a", 0, &a),
                slice("b", 5, &b),
                slice("empty", 5005, b""),
                slice("c", 5008, &c),
            ]
        };
        for chunk in [1, 3, 64, bundle.len()] {
            let r = walk(slices(), 0, &bundle, chunk);
            assert!(
                r.iter().all(|o| *o == Outcome::Valid),
                "chunk {chunk}: {r:?}"
            );
        }
        // A flipped byte in b fails b only, and the walk goes on to c.
        bundle[100] ^= 1;
        let r = walk(slices(), 0, &bundle, 7);
        assert_eq!(r[0], Outcome::Valid);
        assert!(matches!(
            &r[1],
            Outcome::Invalid { category: Category::Checksum, message } if message.contains("b (bundle offset 5)")
        ));
        assert_eq!(
            (r[2].clone(), r[3].clone()),
            (Outcome::Valid, Outcome::Valid)
        );
        // A bundle cut short: the slice it ends in is a size error.
        let r = walk(slices(), 0, &bundle[..5010], 4096);
        assert!(matches!(
            &r[3],
            Outcome::Invalid {
                category: Category::Size,
                ..
            }
        ));
        // Reading from an offset: only the slices in that span.
        let r = walk(vec![slice("c", 5008, &c)], 5008, &bundle[5008..], 2);
        assert_eq!(r, [Outcome::Valid]);
    }

    #[test]
    fn overlapping_slices_are_walked_in_separate_groups() {
        let groups = non_overlapping_groups(vec![
            slice("x", 0, b"0123456789"),
            slice("y", 5, b"56789"),
            slice("z", 10, b"ab"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0]
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["x", "z"]
        );
    }
}
