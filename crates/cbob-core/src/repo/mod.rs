//! The pgBackRest repository model: info files, manifests, WAL names, layout and checksums.
//!
//! - [`ini`]: pgBackRest's INI dialect and the `backrest-checksum` of info files and manifests;
//! - [`info`]: `archive.info` and `backup.info`;
//! - [`manifest`]: `backup.manifest`, and where each file's bytes live in the repository;
//! - [`layout`]: labels, archive ids, and classification of repository keys;
//! - [`wal`]: WAL segment names and arithmetic;
//! - [`compress`]: compression types and push-based decompression;
//! - [`rewrite`]: info files with entries removed and their checksum recomputed;
//! - [`verify`]: streaming verifiers that check bytes in transit against pgBackRest's checksums.

pub mod compress;
mod error;
mod fields;
pub mod info;
pub mod ini;
pub mod layout;
mod lz4;
mod lz4_block;
pub mod manifest;
pub mod rewrite;
pub mod verify;
pub mod wal;

pub use compress::{CompressType, PushDecoder};
pub use error::RepoError;
pub use info::{ArchiveInfo, BackupInfo, BackupInfoEntry, BackupOptions, PgDb};
pub use ini::{Ini, IniEntry, IniSection, verify_info_checksum};
pub use layout::{ArchiveId, BackupLabel, BackupType, RepoObject, TEMP_SUFFIX, classify};
pub use manifest::{BundleSlice, FileCheck, FileLocation, Manifest, ManifestDb, ManifestFile};
pub use verify::{
    BundleVerifier, ContentSummary, ContentVerifier, InfoVerifier, StoredVerifier, StreamVerifier,
    WalSummary, WalVerifier, file_verifier,
};
pub use wal::{BackupLabelFileName, Lsn, WalFileName, WalGeometry, WalSegment};
