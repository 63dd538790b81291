//! The local filesystem provider.
//!
//! - Writes go to a temporary file in the destination directory and are renamed into place, so a
//!   reader (or pgBackRest) never sees a partial file, even if cbob is killed.
//! - Durability is either per write (fsync of the file and its directory before `put` returns) or
//!   deferred to [`StorageProvider::barrier`], which issues one `syncfs(2)` for the whole
//!   filesystem: far cheaper for thousands of small files, and the sync engine calls it before it
//!   publishes a manifest or info file that references them.
//! - No key can reach outside the root: keys are validated, every directory on the way is checked
//!   not to be a symlink, and the final file is opened with `O_NOFOLLOW`.
//! - Listings skip symlinks (a source repository's `latest` link) and our own temporary files.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use super::direct::DirectWriter;
use super::{
    Body, ByteStream, Capabilities, CheckMode, DynProvider, KeyPrefix, ObjectKey, ObjectMeta,
    ProviderFactory, ProviderSpec, PutOptions, StorageError, StorageErrorKind, StorageProvider,
    StorageResult, collect_stream,
};

/// Marker in the names of in-flight temporary files; listings skip them, keys may not contain it.
const TEMP_MARKER: &str = ".cbob-tmp.";
/// Read chunk size for streaming gets.
const READ_CHUNK: usize = 256 * 1024;
/// Writes up to this size are gathered in memory and written in one blocking call.
const SMALL_WRITE: u64 = 256 * 1024;
/// Larger writes go to disk in pieces of this size.
const LARGE_WRITE_BUFFER: usize = 512 * 1024;
/// Incoming chunks are gathered to at least this size before they go to the writer thread.
const WRITER_PIECE: usize = 128 * 1024;

/// When writes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync each file and its directory before `put` returns.
    PerWrite,
    /// Nothing is fsynced until `barrier()`, which syncs the whole filesystem once.
    Deferred,
}

/// A directory used as an object store.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    durability: Durability,
    file_mode: u32,
    dir_mode: u32,
}

impl LocalProvider {
    /// A provider rooted at `root` (created on first write). Writes are durable per write.
    pub fn new(root: impl Into<PathBuf>) -> StorageResult<Self> {
        Self::with_durability(root, Durability::PerWrite)
    }

    pub fn with_durability(
        root: impl Into<PathBuf>,
        durability: Durability,
    ) -> StorageResult<Self> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(StorageError::new(
                StorageErrorKind::Config,
                format!("local path {} must be absolute", root.display()),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                durability,
                // pgBackRest's own repository modes: owner rw, group r.
                file_mode: 0o640,
                dir_mode: 0o750,
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    async fn blocking<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> StorageResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                StorageError::new(
                    StorageErrorKind::Other,
                    format!("local I/O task failed: {e}"),
                )
            })?
    }
}

impl Inner {
    /// Creates the temporary file a write of `key` goes to: `(final path, temp path, file)`.
    fn create_temp(&self, key: &ObjectKey) -> StorageResult<(PathBuf, PathBuf, fs::File)> {
        // A concurrent delete may prune a directory we just created; retry a few times.
        let mut attempt = 0;
        loop {
            let final_path = self.ensure_parents(key)?;
            let temp_path = temp_name(&final_path);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.file_mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp_path)
            {
                Ok(f) => return Ok((final_path, temp_path, f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                Err(e) => {
                    return Err(StorageError::from_io(
                        e,
                        format!("creating a temporary file for {key}"),
                    ));
                }
            }
        }
    }

    /// Renames a fully written temp file into place (fsyncing file and directory first when
    /// every write must be durable on its own); returns the file's modification time.
    fn publish(
        &self,
        file: fs::File,
        temp_path: &Path,
        final_path: &Path,
        key: &ObjectKey,
    ) -> StorageResult<Option<std::time::SystemTime>> {
        if self.durability == Durability::PerWrite {
            file.sync_all()
                .map_err(|e| StorageError::from_io(e, format!("syncing {key}")))?;
        }
        let modified = file.metadata().ok().and_then(|m| m.modified().ok());
        drop(file);
        fs::rename(temp_path, final_path)
            .map_err(|e| StorageError::from_io(e, format!("renaming {key} into place")))?;
        if self.durability == Durability::PerWrite
            && let Some(dir) = final_path.parent()
        {
            self.sync_dir(dir)?;
        }
        Ok(modified)
    }

    /// The path of `key`, after checking that no existing directory on the way is a symlink.
    fn checked_path(&self, key: &ObjectKey) -> StorageResult<PathBuf> {
        let mut path = self.root.clone();
        let segments: Vec<&str> = key.segments().collect();
        for (i, segment) in segments.iter().enumerate() {
            path.push(segment);
            let last = i + 1 == segments.len();
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StorageError::new(
                        StorageErrorKind::PermissionDenied,
                        format!(
                            "refusing {}: {} is a symbolic link, which could lead outside the root {}",
                            key,
                            path.display(),
                            self.root.display()
                        ),
                    ));
                }
                Ok(m) if !last && !m.is_dir() => {
                    return Err(StorageError::not_found(format!(
                        "{} ({} is not a directory)",
                        key,
                        path.display()
                    )));
                }
                // A missing component is fine: reads fail later with NotFound, writes create it.
                _ => {}
            }
        }
        Ok(path)
    }

    /// Creates the parent directories of `key` (checked to be real directories, not links).
    fn ensure_parents(&self, key: &ObjectKey) -> StorageResult<PathBuf> {
        let mut dir = self.root.clone();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.dir_mode)
                .create(&dir)
                .map_err(|e| {
                    StorageError::from_io(e, format!("creating root {}", dir.display()))
                })?;
        }
        let segments: Vec<&str> = key.segments().collect();
        for segment in &segments[..segments.len() - 1] {
            dir.push(segment);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StorageError::new(
                        StorageErrorKind::PermissionDenied,
                        format!("refusing {}: {} is a symbolic link", key, dir.display()),
                    ));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(StorageError::new(
                        StorageErrorKind::Conflict,
                        format!(
                            "cannot write {}: {} exists and is not a directory",
                            key,
                            dir.display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match fs::DirBuilder::new().mode(self.dir_mode).create(&dir) {
                        Ok(()) => {}
                        // A concurrent writer created it first.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            return Err(StorageError::from_io(
                                e,
                                format!("creating {}", dir.display()),
                            ));
                        }
                    }
                }
                Err(e) => {
                    return Err(StorageError::from_io(
                        e,
                        format!("checking {}", dir.display()),
                    ));
                }
            }
        }
        Ok(dir.join(segments[segments.len() - 1]))
    }

    fn open_for_read(&self, key: &ObjectKey) -> StorageResult<(fs::File, fs::Metadata)> {
        let path = self.checked_path(key)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| map_open_error(e, key))?;
        let meta = file
            .metadata()
            .map_err(|e| StorageError::from_io(e, format!("reading {key}")))?;
        if !meta.is_file() {
            return Err(StorageError::not_found(key));
        }
        Ok((file, meta))
    }

    fn meta(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let (_, meta) = self.open_for_read(key)?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: meta.len(),
            modified: meta.modified().ok(),
            hashes: Default::default(),
        })
    }

    /// `list_prefixes`: one `read_dir` of the directory `prefix` points into, keeping the
    /// subdirectories (never symlinks, like `list`) whose names continue `prefix` and that hold
    /// at least one object, so the answer is what an object store would give for these keys.
    fn subdirectories(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        // `backup/st` reads `backup/` and keeps names starting with `st`.
        let (dir_key, start) = match prefix.as_str().rsplit_once('/') {
            Some((dir, start)) => (dir, start),
            None => ("", prefix.as_str()),
        };
        let mut dir = self.root.clone();
        let mut components = vec![self.root.clone()];
        if !dir_key.is_empty() {
            for segment in dir_key.split('/') {
                dir.push(segment);
                components.push(dir.clone());
            }
        }
        // As `list` does not descend into symlinked directories, a prefix through one (or
        // through a file, or a missing directory) has nothing below it.
        for (i, path) in components.iter().enumerate() {
            match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if i == 0 && m.file_type().is_symlink() => {} // the root may be a link
                Ok(_) => {
                    tracing::debug!(path = %path.display(), "not a real directory; no directories below it");
                    return Ok(Vec::new());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(StorageError::from_io(
                        e,
                        format!("listing directories of {}", path.display()),
                    ));
                }
            }
        }
        let entries = match read_sorted(&dir, dir_key) {
            Ok(entries) => entries,
            // Removed since the check above (a concurrent delete pruned it).
            Err(e) if e.kind() == StorageErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut dirs = Vec::new();
        for (name, is_dir) in entries.into_iter().rev() {
            if !is_dir || !name.starts_with(start.as_bytes()) {
                continue;
            }
            let Ok(name) = String::from_utf8(name) else {
                continue; // not a valid key; `list` skips it too
            };
            let full = if dir_key.is_empty() {
                format!("{name}/")
            } else {
                format!("{dir_key}/{name}/")
            };
            let Ok(sub) = KeyPrefix::new(full) else {
                continue;
            };
            if self.holds_object(&dir.join(&name), sub.as_str())? {
                dirs.push(sub);
            }
        }
        Ok(dirs)
    }

    /// Whether `list` would yield at least one key below `path` (whose keys start `dir_key`):
    /// a regular file that is not one of our temp files and makes a valid key. Stops at the
    /// first one, looking at a directory's own files before its subdirectories.
    fn holds_object(&self, path: &Path, dir_key: &str) -> StorageResult<bool> {
        let mut pending = vec![(path.to_path_buf(), dir_key.to_string())];
        while let Some((dir, key)) = pending.pop() {
            let entries = match read_sorted(&dir, &key) {
                Ok(entries) => entries,
                Err(e) if e.kind() == StorageErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut subdirs = Vec::new();
            for (name, is_dir) in entries {
                let Ok(name) = String::from_utf8(name) else {
                    continue;
                };
                if is_dir {
                    subdirs.push((dir.join(&name), format!("{key}{name}/")));
                } else if !name.contains(TEMP_MARKER)
                    && ObjectKey::new(format!("{key}{name}")).is_ok()
                {
                    return Ok(true);
                }
            }
            pending.extend(subdirs);
        }
        Ok(false)
    }

    fn sync_dir(&self, dir: &Path) -> StorageResult<()> {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::from_io(e, format!("syncing directory {}", dir.display())))
    }

    /// Removes empty directories from `dir` up to (not including) the root, so deletes leave no
    /// empty directory trees behind. Races with a concurrent writer are harmless: rmdir of a
    /// non-empty directory fails and we stop.
    fn prune_empty_dirs(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(dir).is_err() {
                break;
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }
}

fn map_open_error(e: io::Error, key: &ObjectKey) -> StorageError {
    // ELOOP from O_NOFOLLOW: the final component is a symlink.
    if e.raw_os_error() == Some(libc::ELOOP) {
        return StorageError::new(
            StorageErrorKind::PermissionDenied,
            format!("refusing {key}: it is a symbolic link"),
        );
    }
    StorageError::from_io(e, format!("opening {key}"))
}

/// Deletes a temporary file unless the write completed.
struct TempGuard {
    path: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// `.<name>.cbob-tmp.<pid>.<random>`: the writer's PID lets a later listing reap the temp files
/// of a writer that was killed (SIGKILL runs no destructor).
fn temp_name(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(OsStr::to_string_lossy)
        .unwrap_or_default();
    let tag: u64 = rand::random();
    let pid = std::process::id();
    final_path.with_file_name(format!(".{name}{TEMP_MARKER}{pid}.{tag:016x}"))
}

/// Whether a temp file name belongs to a writer process that no longer exists.
fn temp_writer_is_dead(file_name: &str) -> bool {
    let Some((_, tail)) = file_name.rsplit_once(TEMP_MARKER) else {
        return false;
    };
    let Some((pid, _)) = tail.split_once('.') else {
        return false;
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[async_trait]
impl StorageProvider for LocalProvider {
    fn describe(&self) -> String {
        format!("local:{}", self.inner.root.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_copy: true,
            needs_barrier: self.inner.durability == Durability::Deferred,
            ..Capabilities::default()
        }
    }

    fn list(&self, prefix: &KeyPrefix) -> BoxStream<'static, StorageResult<ObjectMeta>> {
        let (tx, rx) = mpsc::channel(1024);
        let inner = self.inner.clone();
        let prefix = prefix.clone();
        tokio::task::spawn_blocking(move || walk(&inner, &prefix, &tx));
        tokio_stream_from(rx)
    }

    async fn list_prefixes(&self, prefix: &KeyPrefix) -> StorageResult<Vec<KeyPrefix>> {
        let prefix = prefix.clone();
        self.blocking(move |inner| inner.subdirectories(&prefix))
            .await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let key = key.clone();
        self.blocking(move |inner| inner.meta(&key)).await
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let key2 = key.clone();
        let (mut file, meta) = self
            .blocking(move |inner| inner.open_for_read(&key2))
            .await?;
        let size = meta.len();
        let (start, end) = match range {
            Some(r) => (r.start.min(size), r.end.min(size).max(r.start.min(size))),
            None => (0, size),
        };
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .map_err(|e| StorageError::from_io(e, format!("seeking {key}")))?;
        }
        let (tx, rx) = mpsc::channel::<StorageResult<Bytes>>(4);
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let mut remaining = end - start;
            while remaining > 0 {
                let want = remaining.min(READ_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                match file.read(&mut buf) {
                    Ok(0) => {
                        let msg =
                            format!("{key} shrank while being read ({remaining} bytes short)");
                        let _ = tx.blocking_send(Err(StorageError::corrupt(msg)));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        remaining -= n as u64;
                        if tx.blocking_send(Ok(buf.freeze())).is_err() {
                            return; // reader went away
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx
                            .blocking_send(Err(StorageError::from_io(e, format!("reading {key}"))));
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Body,
        _options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        if key.file_name().contains(TEMP_MARKER) {
            return Err(StorageError::new(
                StorageErrorKind::InvalidKey,
                format!(
                    "invalid object key {key:?}: names containing {TEMP_MARKER:?} are reserved"
                ),
            ));
        }
        let size = body.size();
        if size <= SMALL_WRITE {
            // Small objects (most of a repository by count): gather the bytes, then create,
            // write and publish in one trip to the blocking pool instead of three.
            let bytes = collect_stream(body.into_stream()).await?;
            let key2 = key.clone();
            let modified = self
                .blocking(move |inner| {
                    let (final_path, temp_path, file) = inner.create_temp(&key2)?;
                    let mut guard = TempGuard {
                        path: Some(temp_path.clone()),
                    };
                    let mut file = file;
                    file.write_all(&bytes)
                        .map_err(|e| StorageError::from_io(e, format!("writing {key2}")))?;
                    let modified = inner.publish(file, &temp_path, &final_path, &key2)?;
                    guard.path = None;
                    Ok(modified)
                })
                .await?;
            return Ok(ObjectMeta {
                key: key.clone(),
                size,
                modified,
                hashes: Default::default(),
            });
        }
        let key2 = key.clone();
        let (final_path, temp_path, file) =
            self.blocking(move |inner| inner.create_temp(&key2)).await?;
        let mut guard = TempGuard {
            path: Some(temp_path.clone()),
        };
        let mut stream = body.into_stream();
        // File writes run on a blocking thread fed through a small channel: the async side
        // keeps pulling the next chunk from the network while the previous one is written.
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let key2 = key.clone();
        let writer = tokio::task::spawn_blocking(move || -> StorageResult<fs::File> {
            // Around the page cache where possible: far less CPU, and the operator's cache is
            // not flushed out by a backup copy nobody reads back soon (see `direct.rs`).
            let mut w = DirectWriter::new(file, LARGE_WRITE_BUFFER);
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk)
                    .map_err(|e| StorageError::from_io(e, format!("writing {key2}")))?;
            }
            w.finish()
                .map_err(|e| StorageError::from_io(e, format!("writing {key2}")))
        });
        let mut stream_error = None;
        // Network bodies arrive in chunks of a few KiB; handing each to the writer thread
        // would wake it tens of thousands of times per GiB. Gather them into larger pieces.
        // Room for a piece plus the (few KiB) chunk that completes it: gathering rarely
        // reallocates.
        let fresh = || BytesMut::with_capacity(WRITER_PIECE + 64 * 1024);
        let mut pending = fresh();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    let piece = if pending.is_empty() && chunk.len() >= WRITER_PIECE {
                        chunk
                    } else {
                        pending.extend_from_slice(&chunk);
                        if pending.len() < WRITER_PIECE {
                            continue;
                        }
                        std::mem::replace(&mut pending, fresh()).freeze()
                    };
                    if tx.send(piece).await.is_err() {
                        break; // the writer failed; its error is returned below
                    }
                }
                Err(e) => {
                    stream_error = Some(e);
                    break;
                }
            }
        }
        // The rest, only when every byte arrived (a failed body is never completed).
        if stream_error.is_none() && !pending.is_empty() {
            let _ = tx.send(pending.freeze()).await;
        }
        drop(tx);
        let written = writer.await.map_err(|e| {
            StorageError::new(
                StorageErrorKind::Other,
                format!("local write task failed: {e}"),
            )
        })?;
        if let Some(e) = stream_error {
            return Err(e);
        }
        let file = written?;
        let key2 = key.clone();
        let modified = self
            .blocking(move |inner| inner.publish(file, &temp_path, &final_path, &key2))
            .await?;
        guard.path = None;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            modified,
            hashes: Default::default(),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let key = key.clone();
        self.blocking(move |inner| {
            let path = inner.checked_path(&key)?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    return Err(StorageError::new(
                        StorageErrorKind::Conflict,
                        format!("cannot delete {key}: it is a directory"),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StorageError::from_io(e, format!("deleting {key}"))),
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StorageError::from_io(e, format!("deleting {key}"))),
            }
            if let Some(dir) = path.parent() {
                if inner.durability == Durability::PerWrite {
                    match inner.sync_dir(dir) {
                        // A concurrent delete removed the last file and pruned the directory:
                        // the removal is durable along with the directory's own removal.
                        Err(e) if e.kind() == StorageErrorKind::NotFound => {}
                        other => other?,
                    }
                }
                inner.prune_empty_dirs(dir);
            }
            Ok(())
        })
        .await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> StorageResult<()> {
        let stream = self.get(from, None).await?;
        let size = self.head(from).await?.size;
        self.put(to, Body::from_stream(size, stream), &PutOptions::default())
            .await?;
        Ok(())
    }

    async fn barrier(&self) -> StorageResult<()> {
        self.blocking(|inner| {
            if !inner.root.exists() {
                return Ok(());
            }
            let dir = fs::File::open(&inner.root).map_err(|e| {
                StorageError::from_io(e, format!("opening {}", inner.root.display()))
            })?;
            // One syncfs flushes every file and rename on this filesystem (SPEC §5 rule 3).
            let rc = unsafe { libc::syncfs(std::os::unix::io::AsRawFd::as_raw_fd(&dir)) };
            if rc != 0 {
                return Err(StorageError::from_io(io::Error::last_os_error(), "syncfs"));
            }
            Ok(())
        })
        .await
    }

    async fn check(&self, mode: CheckMode) -> StorageResult<()> {
        let root = self.inner.root.clone();
        match mode {
            CheckMode::Read => {
                let meta = fs::metadata(&root)
                    .map_err(|e| StorageError::from_io(e, format!("{}", root.display())))?;
                if !meta.is_dir() {
                    return Err(StorageError::new(
                        StorageErrorKind::Config,
                        format!("{} is not a directory", root.display()),
                    ));
                }
                fs::read_dir(&root)
                    .map_err(|e| StorageError::from_io(e, format!("listing {}", root.display())))?;
                Ok(())
            }
            CheckMode::ReadWrite => {
                let probe = ObjectKey::new(format!(".cbob-check-{:016x}", rand::random::<u64>()))?;
                let data = Bytes::from_static(b"cbob write check\n");
                self.put(
                    &probe,
                    Body::from_bytes(data.clone()),
                    &PutOptions::default(),
                )
                .await?;
                let back = super::read_to_bytes(self, &probe).await;
                self.delete(&probe).await?;
                if back? != data {
                    return Err(StorageError::corrupt(format!(
                        "read-back of a probe file in {} differed",
                        root.display()
                    )));
                }
                Ok(())
            }
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Depth-first walk in global key order: entries of a directory are sorted with directories
/// compared as `name/`, which is exactly the byte order object stores list keys in.
fn walk(inner: &Inner, prefix: &KeyPrefix, tx: &mpsc::Sender<StorageResult<ObjectMeta>>) {
    let root = &inner.root;
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return, // an empty store
        Err(e) => {
            let _ = tx.blocking_send(Err(StorageError::from_io(
                e,
                format!("listing {}", root.display()),
            )));
            return;
        }
        Ok(_) => {}
    }
    let prefix = prefix.as_str();
    // Stack of pending (relative dir key with trailing '/', sorted entries reversed).
    let mut stack: Vec<(String, Vec<DirEntry>)> = Vec::new();
    match read_sorted(root, "") {
        Ok(entries) => stack.push((String::new(), entries)),
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    }
    while let Some((dir_key, entries)) = stack.last_mut() {
        let Some((name, is_dir)) = entries.pop() else {
            stack.pop();
            continue;
        };
        let Ok(name) = String::from_utf8(name) else {
            continue; // not a valid key; object stores cannot hold it either
        };
        let key = format!("{dir_key}{name}");
        if is_dir {
            let dir_prefix = format!("{key}/");
            // Descend only where keys under this directory can match the prefix.
            if dir_prefix.starts_with(prefix) || prefix.starts_with(&dir_prefix) {
                match read_sorted(&root.join(&key), &key) {
                    Ok(children) => stack.push((dir_prefix, children)),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            continue;
        }
        if name.contains(TEMP_MARKER) {
            // A killed writer's leftover: invisible, and removed once its process is gone.
            if temp_writer_is_dead(&name) {
                let path = root.join(&key);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::debug!(path = %path.display(), "removed a killed writer's temp file")
                    }
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "cannot remove a stale temp file")
                    }
                }
            }
            continue;
        }
        if !key.starts_with(prefix) {
            continue;
        }
        let Ok(object_key) = ObjectKey::new(key.clone()) else {
            continue;
        };
        let item = fs::symlink_metadata(root.join(&key))
            .map(|m| ObjectMeta {
                key: object_key,
                size: m.len(),
                modified: m.modified().ok(),
                hashes: Default::default(),
            })
            .map_err(|e| StorageError::from_io(e, format!("listing {key}")));
        match item {
            // Deleted between readdir and stat: it is simply gone.
            Err(e) if e.kind() == StorageErrorKind::NotFound => continue,
            item => {
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads a directory: regular files and directories only (symlinks and specials are skipped),
/// sorted descending by their key-order name so `pop()` yields ascending order.
/// A directory entry: raw name and whether it is a directory.
type DirEntry = (Vec<u8>, bool);

fn read_sorted(dir: &Path, dir_key: &str) -> StorageResult<Vec<DirEntry>> {
    let rd = fs::read_dir(dir)
        .map_err(|e| StorageError::from_io(e, format!("listing {}", dir.display())))?;
    let mut entries = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| StorageError::from_io(e, format!("listing {}", dir.display())))?;
        let ft = entry
            .file_type()
            .map_err(|e| StorageError::from_io(e, format!("listing {dir_key}")))?;
        let name = entry.file_name().as_bytes().to_vec();
        if ft.is_dir() {
            entries.push((name, true));
        } else if ft.is_file() {
            entries.push((name, false));
        } else if ft.is_symlink() {
            tracing::debug!(path = %dir.join(entry.file_name()).display(), "skipping symbolic link");
        }
    }
    let sort_key = |(name, is_dir): &DirEntry| {
        let mut k = name.clone();
        if *is_dir {
            k.push(b'/');
        }
        k
    };
    entries.sort_by_key(|e| std::cmp::Reverse(sort_key(e)));
    Ok(entries)
}

/// Builds local providers from specs of kind `local`.
pub struct LocalFactory;

#[async_trait]
impl ProviderFactory for LocalFactory {
    fn kinds(&self) -> &'static [&'static str] {
        &["local"]
    }

    async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider> {
        let path = spec.path.clone().ok_or_else(|| {
            StorageError::new(
                StorageErrorKind::Config,
                "a local provider needs a path (CBOB_TARGET_PATH)",
            )
        })?;
        let durability = match spec.options.get("durability").map(String::as_str) {
            None | Some("per-write") => Durability::PerWrite,
            Some("deferred") => Durability::Deferred,
            Some(other) => {
                return Err(StorageError::new(
                    StorageErrorKind::Config,
                    format!("unknown local durability {other:?}; use per-write or deferred"),
                ));
            }
        };
        Ok(Arc::new(LocalProvider::with_durability(path, durability)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::read_to_bytes;
    use futures::TryStreamExt;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    async fn keys(p: &LocalProvider) -> Vec<String> {
        p.list(&KeyPrefix::all())
            .map_ok(|m| m.key.to_string())
            .try_collect()
            .await
            .unwrap()
    }

    /// Every file below `dir`, as relative paths.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn symlinks_inside_the_root_never_lead_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(root.join("backup")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "outside data").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("backup/evil")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("backup/link-to-file"))
            .unwrap();
        let p = LocalProvider::new(&root).unwrap();

        let write = p
            .put(
                &key("backup/evil/planted"),
                Body::from_bytes("x"),
                &PutOptions::default(),
            )
            .await;
        assert_eq!(
            write.unwrap_err().kind(),
            StorageErrorKind::PermissionDenied
        );
        let read = p.get(&key("backup/evil/secret"), None).await;
        assert_eq!(
            read.err().map(|e| e.kind()),
            Some(StorageErrorKind::PermissionDenied)
        );
        let read = p.get(&key("backup/link-to-file"), None).await;
        assert_eq!(
            read.err().map(|e| e.kind()),
            Some(StorageErrorKind::PermissionDenied)
        );
        assert_eq!(
            p.delete(&key("backup/evil/secret"))
                .await
                .unwrap_err()
                .kind(),
            StorageErrorKind::PermissionDenied
        );
        // Overwriting the symlink itself replaces the link, never its target.
        p.put(
            &key("backup/link-to-file"),
            Body::from_bytes("replaced"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            fs::read_to_string(outside.join("secret")).unwrap(),
            "outside data"
        );
        assert_eq!(
            tree(&outside),
            ["secret"],
            "nothing may be written outside the root"
        );
        // Listings skip symbolic links (pgBackRest's `latest`).
        assert_eq!(keys(&p).await, ["backup/link-to-file"]);
    }

    #[tokio::test]
    async fn hostile_keys_never_reach_the_filesystem() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/root");
        let p = LocalProvider::new(&root).unwrap();
        for bad in ["../x", "../../b/x", "x/../../y", "/etc/x", "x\\..\\y"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad}");
        }
        // A reserved temp-file name is refused too.
        let e = p
            .put(
                &key("dir/.f.cbob-tmp.0123"),
                Body::from_bytes("x"),
                &PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::InvalidKey);
        assert_eq!(
            tree(tmp.path()),
            Vec::<String>::new(),
            "nothing may have been created"
        );
    }

    #[tokio::test]
    async fn temp_files_and_empty_dirs_are_invisible_and_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalProvider::with_durability(tmp.path(), Durability::Deferred).unwrap();
        p.put(&key("a/b/c"), Body::from_bytes("1"), &PutOptions::default())
            .await
            .unwrap();
        // A crashed writer's leftover temp file is not an object.
        fs::write(
            tmp.path().join("a/b/.c.cbob-tmp.00000000deadbeef"),
            "partial",
        )
        .unwrap();
        assert_eq!(keys(&p).await, ["a/b/c"]);
        // A failed streamed write leaves no temp file behind.
        let body = Body::from_stream(10, crate::testkit::pattern_stream(1, 3));
        p.put(&key("a/b/d"), body, &PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            tree(tmp.path()),
            ["a/b/.c.cbob-tmp.00000000deadbeef", "a/b/c"]
        );
        p.barrier().await.unwrap();
        fs::remove_file(tmp.path().join("a/b/.c.cbob-tmp.00000000deadbeef")).unwrap();
        p.delete(&key("a/b/c")).await.unwrap();
        assert!(
            !tmp.path().join("a").exists(),
            "empty directories are pruned after delete"
        );
        assert!(tmp.path().exists(), "the root itself stays");
        assert_eq!(
            read_to_bytes(&p, &key("a/b/c")).await.unwrap_err().kind(),
            StorageErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn a_killed_writers_temp_files_are_reaped_by_the_next_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(tmp.path()).unwrap();
        p.put(
            &key("d/kept"),
            Body::from_bytes("1"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        // A dead writer (a PID that cannot exist) and a live one (this process).
        let dead = tmp.path().join("d/.x.cbob-tmp.2147483646.00000000deadbeef");
        let live = tmp.path().join(format!(
            "d/.y.cbob-tmp.{}.00000000deadbeef",
            std::process::id()
        ));
        fs::write(&dead, "partial").unwrap();
        fs::write(&live, "in flight").unwrap();
        assert_eq!(keys(&p).await, ["d/kept"]);
        assert!(!dead.exists(), "a dead writer's temp file is removed");
        assert!(live.exists(), "a live writer's temp file is left alone");
    }

    #[tokio::test]
    async fn directory_listing_reports_only_directories_that_hold_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("sub/file"), "outside").unwrap();
        let p = LocalProvider::new(&root).unwrap();
        let dirs = |prefix: &'static str| {
            let p = p.clone();
            async move {
                p.list_prefixes(&KeyPrefix::new(prefix).unwrap())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert!(dirs("").await.is_empty(), "a root not yet created is empty");
        for k in ["backup/s1/backup.info", "backup/s2/x/y/deep", "backup/file"] {
            p.put(&key(k), Body::from_bytes("1"), &PutOptions::default())
                .await
                .unwrap();
        }
        // Nothing a listing would yield: an empty directory, one holding only a killed
        // writer's temp file or only a symlink, and a symlink to a directory outside the root.
        fs::create_dir_all(root.join("backup/empty/deeper")).unwrap();
        fs::create_dir_all(root.join("backup/temp-only")).unwrap();
        fs::write(
            root.join("backup/temp-only/.f.cbob-tmp.2147483646.00000000deadbeef"),
            "partial",
        )
        .unwrap();
        fs::create_dir_all(root.join("backup/link-only")).unwrap();
        std::os::unix::fs::symlink(outside.join("sub/file"), root.join("backup/link-only/f"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, root.join("backup/evil")).unwrap();
        assert_eq!(dirs("backup/").await, ["backup/s1/", "backup/s2/"]);
        assert_eq!(dirs("").await, ["backup/"]);
        assert_eq!(dirs("backup/s").await, ["backup/s1/", "backup/s2/"]);
        assert_eq!(dirs("backup/s2/").await, ["backup/s2/x/"]);
        // A prefix through a symlink, a file or a missing directory has nothing below it.
        assert!(dirs("backup/evil/").await.is_empty());
        assert!(dirs("backup/file/").await.is_empty());
        assert!(dirs("nope/deeper/").await.is_empty());
        // The same answer as deriving it from `list`.
        let mut derived: Vec<String> = keys(&p)
            .await
            .into_iter()
            .filter_map(|k| {
                let rest = k.strip_prefix("backup/")?;
                Some(format!("backup/{}/", rest.split_once('/')?.0))
            })
            .collect();
        derived.dedup();
        assert_eq!(dirs("backup/").await, derived);
    }

    #[tokio::test]
    async fn files_get_repository_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(tmp.path().join("r")).unwrap();
        p.put(&key("x/y"), Body::from_bytes("1"), &PutOptions::default())
            .await
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("r/x/y")), 0o640);
        assert_eq!(mode(&tmp.path().join("r/x")) & 0o700, 0o700);
    }

    #[tokio::test]
    async fn relative_roots_are_rejected() {
        assert_eq!(
            LocalProvider::new("relative/dir").unwrap_err().kind(),
            StorageErrorKind::Config
        );
    }
}
