//! Deciding what moves: compares each source object, as the listing arrives, with the
//! destination's object of the same key, against the source's own `backup.info` and manifests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::error::SyncError;
use super::inventory::read_verified_info;
use crate::repo::{
    BackupInfo, BackupLabel, BundleSlice, BundleVerifier, FileCheck, FileLocation, InfoVerifier,
    Manifest, RepoObject, StreamVerifier, WalVerifier, classify, file_verifier,
};
use crate::storage::{DynProvider, ObjectKey, ObjectMeta};

/// How an object's bytes are checked in transit.
#[derive(Debug, Clone)]
pub enum Check {
    /// Only the size (timeline history and backup label files carry no checksum).
    SizeOnly,
    /// An info file, manifest, or (gzip) history manifest: `backrest-checksum`.
    Info { gzip: bool },
    /// WAL: decompress, SHA-1 against the name.
    Wal(crate::repo::WalFileName),
    /// A backup file against its manifest entry.
    File(FileCheck),
    /// A bundle against the slices of the files stored in it.
    Bundle(Vec<BundleSlice>),
}

impl Check {
    /// A fresh verifier for one attempt.
    pub fn verifier(&self, key: &str) -> Option<Box<dyn StreamVerifier>> {
        match self {
            Check::SizeOnly => None,
            Check::Info { gzip: false } => Some(Box::new(InfoVerifier::new(key))),
            Check::Info { gzip: true } => Some(Box::new(InfoVerifier::gzip(key))),
            Check::Wal(name) => Some(Box::new(WalVerifier::new(key, name, None))),
            Check::File(check) => Some(file_verifier(key, check)),
            Check::Bundle(slices) => match BundleVerifier::new(key, slices.clone()) {
                Ok(v) => Some(Box::new(v)),
                Err(e) => Some(Box::new(Failing(Some(e)))),
            },
        }
    }
}

/// A verifier that reports a planning-time error at the first opportunity.
struct Failing(Option<crate::repo::RepoError>);

impl StreamVerifier for Failing {
    fn update(&mut self, _chunk: &[u8]) -> Result<(), crate::repo::RepoError> {
        self.0.take().map_or(Ok(()), Err)
    }
    fn finish_boxed(mut self: Box<Self>) -> Result<(), crate::repo::RepoError> {
        self.0.take().map_or(Ok(()), Err)
    }
}

/// Why an object moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    /// Same name, different size at the destination: an immutable file that is damaged there.
    Repair {
        dest_size: u64,
    },
}

/// One object to copy.
#[derive(Debug, Clone)]
pub struct Copy {
    pub key: ObjectKey,
    pub size: u64,
    pub check: Check,
    pub reason: Reason,
}

/// A backup to publish: its manifest (`.copy` first, then the main file).
#[derive(Debug, Clone)]
pub struct ManifestPublish {
    pub label: BackupLabel,
    pub copies: Vec<Copy>,
}

/// Everything one stanza's sync did or will do, in publish order. The payload itself is not
/// kept here: it streams to the transfers as the source listing arrives (see [`Planner`]); only
/// its totals are.
#[derive(Debug, Default)]
pub struct StanzaPlan {
    /// The destination has no `archive.info` yet: publish the source's first.
    pub bootstrap_archive_info: bool,
    /// The destination has no `backup.info` yet: publish this one (the source's with no
    /// backups listed) right after `archive.info`, so the stanza is valid and empty from the start.
    pub bootstrap_backup_info: Option<Bytes>,
    /// WAL, history and label files, backup files and bundles that moved (or would move).
    pub payload_files: u64,
    pub payload_bytes: u64,
    /// Damaged destination objects rewritten (payload, manifests and history).
    pub repaired: u64,
    /// New backups, oldest first.
    pub manifests: Vec<ManifestPublish>,
    /// `backup.history/` manifests.
    pub history: Vec<Copy>,
    /// The source's verified info files, written at the end where the destination's differ.
    pub archive_info: Bytes,
    pub backup_info: Bytes,
    pub write_archive_info: [bool; 2],
    pub write_backup_info: [bool; 2],
    /// Objects already present and equal.
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
    /// Source objects left alone (in-progress backups, pgBackRest temp files, unknown names).
    pub ignored: Vec<String>,
    pub warnings: Vec<String>,
    /// Backups listed in the source's backup.info.
    pub backups: Vec<BackupLabel>,
}

impl StanzaPlan {
    /// Copies published after the payload: manifests, then history.
    pub fn tail_copies(&self) -> impl Iterator<Item = &Copy> {
        self.manifests
            .iter()
            .flat_map(|m| m.copies.iter())
            .chain(self.history.iter())
    }

    /// Files and bytes that move after the payload (manifests, history, info files).
    pub fn tail_totals(&self) -> (u64, u64) {
        let mut files = 0;
        let mut bytes = 0;
        for c in self.tail_copies() {
            files += 1;
            bytes += c.size;
        }
        for (flags, data) in [
            (self.write_archive_info, &self.archive_info),
            (self.write_backup_info, &self.backup_info),
        ] {
            for f in flags {
                if f {
                    files += 1;
                    bytes += data.len() as u64;
                }
            }
        }
        (files, bytes)
    }

    /// Files and bytes written before the payload (a new stanza's info files).
    pub fn bootstrap_totals(&self) -> (u64, u64) {
        let mut files = 0;
        let mut bytes = 0;
        if self.bootstrap_archive_info {
            files += 2;
            bytes += 2 * self.archive_info.len() as u64;
        }
        if let Some(b) = &self.bootstrap_backup_info {
            files += 2;
            bytes += 2 * b.len() as u64;
        }
        (files, bytes)
    }

    /// Files and bytes that move in all, info files included.
    pub fn totals(&self) -> (u64, u64) {
        let (tf, tb) = self.tail_totals();
        let (bf, bb) = self.bootstrap_totals();
        (self.payload_files + tf + bf, self.payload_bytes + tb + bb)
    }

    pub fn is_noop(&self) -> bool {
        self.totals().0 == 0
    }
}

fn key_of(s: &str) -> Result<ObjectKey, SyncError> {
    ObjectKey::new(s).map_err(|e| SyncError::storage(format!("source key {s:?}"), e))
}

/// Whether a source object must move, comparing with the destination's listing.
///
/// Size only: provider hashes are not comparable across providers (S3 ETags are not MD5s for
/// multipart or KMS-encrypted objects, and a bucket's default encryption is invisible in a
/// listing), and a false mismatch would re-copy the whole repository on every run. Content is
/// verified against pgBackRest's checksums whenever an object does move.
fn reason(src: &ObjectMeta, dest: Option<&ObjectMeta>) -> Option<Reason> {
    match dest {
        None => Some(Reason::Missing),
        Some(d) if d.size != src.size => Some(Reason::Repair { dest_size: d.size }),
        Some(_) => None,
    }
}

/// Reads a source manifest (main, else copy), verified.
async fn load_manifest(
    source: &DynProvider,
    stanza: &str,
    label: &BackupLabel,
) -> Result<Manifest, SyncError> {
    let key = format!("backup/{stanza}/{label}/backup.manifest");
    let bytes = read_verified_info(source, &key).await?.ok_or_else(|| {
        SyncError::Source(format!(
            "backup {label} is listed in backup.info but has no manifest"
        ))
    })?;
    Manifest::parse(&bytes).map_err(|e| SyncError::repo(format!("parsing {key}"), e))
}

/// How to check the files of one backup, from its manifest.
struct LabelChecks {
    label: BackupLabel,
    files: HashMap<String, FileCheck>,
    bundles: BTreeMap<ObjectKey, Vec<BundleSlice>>,
}

impl LabelChecks {
    async fn load(
        source: &DynProvider,
        stanza: &str,
        label: &BackupLabel,
    ) -> Result<Self, SyncError> {
        let manifest = load_manifest(source, stanza, label).await?;
        let mut files = HashMap::new();
        for item in manifest.stored_files(stanza) {
            let (_, loc, check) =
                item.map_err(|e| SyncError::repo(format!("manifest of {label}"), e))?;
            if let FileLocation::Object { key } = loc {
                files.insert(key.as_str().to_string(), check);
            }
        }
        let bundles = manifest
            .bundles(stanza)
            .map_err(|e| SyncError::repo(format!("manifest of {label}"), e))?;
        Ok(Self {
            label: label.clone(),
            files,
            bundles,
        })
    }
}

/// Decides, one source object at a time in listing order, what moves; payload is handed back
/// at once so it can be copied while the listing goes on. Manifests, history and info files
/// are kept for the end of the publish order.
///
/// The source's `backup.info`/`archive.info` were read **before** the listing started, so every
/// backup they list is complete in the listing.
pub struct Planner {
    source: DynProvider,
    stanza: String,
    listed: BTreeSet<BackupLabel>,
    plan: StanzaPlan,
    /// The manifest checks of the backup whose files are being listed (keys are sorted, so one
    /// backup's files arrive together and only one manifest is held at a time).
    checks: Option<LabelChecks>,
    manifest_work: BTreeMap<BackupLabel, Vec<(ObjectKey, u64, Reason)>>,
    manifests_seen: BTreeSet<BackupLabel>,
}

impl Planner {
    /// Starts a plan from the source's verified info files and the destination's current ones.
    pub fn new(
        source: &DynProvider,
        stanza: &str,
        backup_info_bytes: Bytes,
        archive_info_bytes: Bytes,
        dest_info: &DestInfo,
    ) -> Result<Self, SyncError> {
        let backup_info = BackupInfo::parse(&backup_info_bytes)
            .map_err(|e| SyncError::repo(format!("parsing backup/{stanza}/backup.info"), e))?;
        if backup_info.cipher {
            return Err(SyncError::Source(format!(
                "stanza {stanza} is encrypted (repo cipher); cbob cannot verify encrypted repositories yet, so it refuses to copy them unverified"
            )));
        }
        let listed: BTreeSet<BackupLabel> = backup_info
            .backups
            .iter()
            .map(|b| b.label.clone())
            .collect();
        let mut plan = StanzaPlan {
            bootstrap_archive_info: dest_info.archive_info.is_none(),
            backups: listed.iter().cloned().collect(),
            ..StanzaPlan::default()
        };
        plan.write_archive_info = [
            dest_info.archive_info.as_ref() != Some(&archive_info_bytes),
            dest_info.archive_info_copy.as_ref() != Some(&archive_info_bytes),
        ];
        plan.write_backup_info = [
            dest_info.backup_info.as_ref() != Some(&backup_info_bytes),
            dest_info.backup_info_copy.as_ref() != Some(&backup_info_bytes),
        ];
        if plan.bootstrap_archive_info {
            // Written first; nothing more to do for it at the end.
            plan.write_archive_info = [false, false];
        }
        if dest_info.backup_info.is_none() && dest_info.backup_info_copy.is_none() {
            let empty =
                crate::repo::rewrite::empty_backup_info(&backup_info_bytes).map_err(|e| {
                    SyncError::repo(format!("preparing an empty backup/{stanza}/backup.info"), e)
                })?;
            plan.bootstrap_backup_info = Some(Bytes::from(empty));
        }
        plan.archive_info = archive_info_bytes;
        plan.backup_info = backup_info_bytes;
        Ok(Self {
            source: source.clone(),
            stanza: stanza.to_string(),
            listed,
            plan,
            checks: None,
            manifest_work: BTreeMap::new(),
            manifests_seen: BTreeSet::new(),
        })
    }

    /// The plan so far: bootstrap decisions are final from the start.
    pub fn plan(&self) -> &StanzaPlan {
        &self.plan
    }

    fn unchanged(&mut self, meta: &ObjectMeta) {
        self.plan.unchanged_files += 1;
        self.plan.unchanged_bytes += meta.size;
    }

    fn ignore(&mut self, key: &str) {
        self.plan.ignored.push(key.to_string());
    }

    /// One source object (in listing order) and the destination's object of the same key, if
    /// any. Returns the payload copy to start now, if this object is payload that must move.
    pub async fn consider(
        &mut self,
        meta: &ObjectMeta,
        dest: Option<&ObjectMeta>,
    ) -> Result<Option<Copy>, SyncError> {
        let key = meta.key.as_str();
        let object = classify(key);
        if object.stanza().is_some_and(|s| s != self.stanza) {
            self.ignore(key);
            return Ok(None);
        }
        let why = reason(meta, dest);
        // Info files change size whenever the source gains a backup, and temp files, `latest`,
        // unknown files and backups not (or no longer) listed are not copied: none of them is
        // a damaged copy.
        let mirrored = match &object {
            RepoObject::ArchiveInfo { .. }
            | RepoObject::BackupInfo { .. }
            | RepoObject::Temp
            | RepoObject::Latest { .. }
            | RepoObject::Unknown => false,
            RepoObject::BackupFile { label, .. }
            | RepoObject::Bundle { label, .. }
            | RepoObject::Manifest { label, .. } => self.listed.contains(label),
            _ => true,
        };
        if mirrored && let Some(Reason::Repair { dest_size }) = why {
            self.plan.warnings.push(format!(
                "{key} is {dest_size} bytes at the destination but {} at the source: damaged copy, repairing",
                meta.size
            ));
            self.plan.repaired += 1;
        }
        let check = match object {
            RepoObject::ArchiveInfo { .. } | RepoObject::BackupInfo { .. } => return Ok(None), // read before listing
            RepoObject::Temp | RepoObject::Latest { .. } => {
                self.ignore(key);
                return Ok(None);
            }
            RepoObject::Unknown => {
                self.plan.warnings.push(format!(
                    "{key}: not a pgBackRest repository file; not copied"
                ));
                self.ignore(key);
                return Ok(None);
            }
            RepoObject::BackupFile { ref label, .. } | RepoObject::Bundle { ref label, .. } => {
                if !self.listed.contains(label) {
                    self.ignore(key); // in progress or being expired at the source
                    return Ok(None);
                }
                if why.is_none() {
                    self.unchanged(meta);
                    return Ok(None);
                }
                match self.backup_file_check(label, meta).await? {
                    Some(check) => check,
                    None => return Ok(None),
                }
            }
            RepoObject::Manifest { ref label, .. } => {
                if !self.listed.contains(label) {
                    self.ignore(key);
                    return Ok(None);
                }
                self.manifests_seen.insert(label.clone());
                match why {
                    Some(r) => self.manifest_work.entry(label.clone()).or_default().push((
                        key_of(key)?,
                        meta.size,
                        r,
                    )),
                    None => self.unchanged(meta),
                }
                return Ok(None);
            }
            RepoObject::WalSegment { file, .. } => Check::Wal(file),
            RepoObject::HistoryManifest { .. } => Check::Info { gzip: true },
            _ => Check::SizeOnly, // timeline history, backup label files
        };
        let Some(r) = why else {
            self.unchanged(meta);
            return Ok(None);
        };
        let copy = Copy {
            key: meta.key.clone(),
            size: meta.size,
            check,
            reason: r,
        };
        if let Check::Info { gzip: true } = copy.check {
            self.plan.history.push(copy);
            return Ok(None);
        }
        self.plan.payload_files += 1;
        self.plan.payload_bytes += meta.size;
        Ok(Some(copy))
    }

    /// How to check a backup file or bundle that must move, from its backup's manifest (loaded
    /// on the first file of that backup that moves). `None`: not in the manifest, not copied.
    async fn backup_file_check(
        &mut self,
        label: &BackupLabel,
        meta: &ObjectMeta,
    ) -> Result<Option<Check>, SyncError> {
        if self.checks.as_ref().is_none_or(|c| &c.label != label) {
            self.checks = None; // the previous backup's files are done: free its manifest first
            self.checks = Some(LabelChecks::load(&self.source, &self.stanza, label).await?);
        }
        let checks = self.checks.as_ref().expect("loaded above");
        let key = meta.key.as_str();
        if let Some(slices) = checks.bundles.get(&meta.key) {
            return Ok(Some(Check::Bundle(slices.clone())));
        }
        let Some(c) = checks.files.get(key) else {
            self.plan.warnings.push(format!(
                "{key}: not in the manifest of backup {label}; not copied"
            ));
            self.ignore(key);
            return Ok(None);
        };
        if let Some(expected) = stored_size(c)
            && expected != meta.size
        {
            return Err(SyncError::Source(format!(
                "{key} is {} bytes at the source but its manifest records {expected}: the source copy is damaged",
                meta.size
            )));
        }
        Ok(Some(Check::File(c.clone())))
    }

    /// Files and bytes that will move after the payload (manifests, history, info files), as
    /// far as the listing so far shows.
    pub fn tail_totals(&self) -> (u64, u64) {
        let (mut files, mut bytes) = self.plan.tail_totals();
        for (_, size, _) in self.manifest_work.values().flatten() {
            files += 1;
            bytes += size;
        }
        (files, bytes)
    }

    /// The listing is over: the manifests to publish, oldest backup first.
    pub fn finish(mut self) -> Result<StanzaPlan, SyncError> {
        // A listed backup whose manifest is missing from the source cannot be mirrored.
        if let Some(label) = self.listed.difference(&self.manifests_seen).next() {
            return Err(SyncError::Source(format!(
                "backup {label} is listed in backup.info but its manifest is not in the listing"
            )));
        }
        for label in &self.listed {
            if let Some(mut items) = self.manifest_work.remove(label) {
                // `.copy` before the main file: the main manifest is what marks a backup complete.
                items.sort_by_key(|(k, _, _)| !k.as_str().ends_with(".copy"));
                self.plan.manifests.push(ManifestPublish {
                    label: label.clone(),
                    copies: items
                        .into_iter()
                        .map(|(key, size, reason)| Copy {
                            key,
                            size,
                            check: Check::Info { gzip: false },
                            reason,
                        })
                        .collect(),
                });
            }
        }
        Ok(self.plan)
    }
}

fn stored_size(check: &FileCheck) -> Option<u64> {
    match check {
        FileCheck::Stored { size, .. } | FileCheck::SizeOnly { size } => Some(*size),
        FileCheck::Content { stored_size, .. } => Some(*stored_size),
        FileCheck::Nothing => Some(0),
    }
}

/// The destination's current info files (raw bytes, unverified), to decide what to rewrite.
#[derive(Debug, Default, Clone)]
pub struct DestInfo {
    pub archive_info: Option<Bytes>,
    pub archive_info_copy: Option<Bytes>,
    pub backup_info: Option<Bytes>,
    pub backup_info_copy: Option<Bytes>,
}
