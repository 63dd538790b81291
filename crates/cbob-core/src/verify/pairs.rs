//! Info files and manifests come in pairs (`backup.info` + `backup.info.copy`, ...): pgBackRest
//! loads the main file and falls back to the copy. Verify checks both, since a repository with
//! one good file left is one failure away from being unreadable.

use bytes::Bytes;

use super::objects::Reader;
use super::report::{FileState, InfoFileVerification, Problem, ProblemKind};
use crate::repo::{InfoVerifier, RepoError};
use crate::storage::{ObjectKey, StorageErrorKind, read_to_bytes};

const ENCRYPTED_MAGIC: &[u8] = b"Salted__";

/// A main file and its copy, as found.
#[derive(Debug)]
pub(super) struct Pair {
    pub main_key: String,
    pub main: FileState,
    pub copy: FileState,
    /// The bytes pgBackRest would use: the main file when it loads, else the copy.
    pub bytes: Option<Bytes>,
    /// Both load but differ.
    pub mismatch: bool,
    /// Either file is encrypted.
    pub encrypted: bool,
}

/// Whether the pair is a stanza's info file or a backup's manifest (problem kinds differ).
#[derive(Debug, Clone, Copy)]
pub(super) enum PairKind<'a> {
    Info,
    Manifest { label: &'a str },
}

async fn load_one(reader: &Reader, key: &str) -> (FileState, Option<Bytes>, bool) {
    let k = match ObjectKey::new(key) {
        Ok(k) => k,
        Err(e) => return (FileState::Invalid(e.to_string()), None, false),
    };
    match read_to_bytes(reader.provider.as_ref(), &k).await {
        Ok(bytes) => {
            reader
                .bytes
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            reader
                .objects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if bytes.starts_with(ENCRYPTED_MAGIC) {
                let e = RepoError::Encrypted {
                    file: key.to_string(),
                };
                return (FileState::Invalid(e.to_string()), None, true);
            }
            let mut v = InfoVerifier::new(key);
            match v.update(&bytes).and_then(|()| v.finish()) {
                Ok(()) => (FileState::Ok, Some(bytes), false),
                Err(e) => (FileState::Invalid(e.to_string()), None, false),
            }
        }
        Err(e) if e.kind() == StorageErrorKind::NotFound => (FileState::Missing, None, false),
        Err(e) => (
            FileState::Invalid(format!("cannot read {key}: {e}")),
            None,
            false,
        ),
    }
}

/// Reads and checks `main_key` and `<main_key>.copy`.
pub(super) async fn load_pair(reader: &Reader, main_key: &str) -> Pair {
    let copy_key = format!("{main_key}.copy");
    let (main, main_bytes, enc_main) = load_one(reader, main_key).await;
    let (copy, copy_bytes, enc_copy) = load_one(reader, &copy_key).await;
    let mismatch = matches!((&main_bytes, &copy_bytes), (Some(a), Some(b)) if a != b);
    Pair {
        main_key: main_key.to_string(),
        main,
        copy,
        bytes: main_bytes.or(copy_bytes),
        mismatch,
        encrypted: enc_main || enc_copy,
    }
}

impl Pair {
    /// Both files with their state, for the report.
    pub(super) fn files(&self) -> [InfoFileVerification; 2] {
        [
            InfoFileVerification {
                key: self.main_key.clone(),
                state: self.main.clone(),
            },
            InfoFileVerification {
                key: format!("{}.copy", self.main_key),
                state: self.copy.clone(),
            },
        ]
    }

    /// The problems of this pair, with messages that say what pgBackRest will do about them.
    pub(super) fn problems(&self, kind: PairKind<'_>) -> Vec<Problem> {
        let (missing, invalid, mismatch) = match kind {
            PairKind::Info => (
                ProblemKind::InfoMissing,
                ProblemKind::InfoInvalid,
                ProblemKind::InfoCopyMismatch,
            ),
            PairKind::Manifest { .. } => (
                ProblemKind::ManifestMissing,
                ProblemKind::ManifestInvalid,
                ProblemKind::ManifestCopyMismatch,
            ),
        };
        let tag = |p: Problem| match kind {
            PairKind::Manifest { label } => p.backup(label),
            PairKind::Info => p,
        };
        let copy_key = format!("{}.copy", self.main_key);
        let usable = self.bytes.is_some();
        let mut out = Vec::new();
        if self.encrypted {
            out.push(tag(Problem::new(
                ProblemKind::Encrypted,
                format!(
                    "{} is encrypted (repository cipher): cbob verify cannot check an encrypted repository's contents; \
                     use `pgbackrest verify` with the passphrase",
                    self.main_key
                ),
            )
            .key(&self.main_key)));
            return out;
        }
        for (key, state, other_ok) in [
            (&self.main_key, &self.main, self.copy == FileState::Ok),
            (&copy_key, &self.copy, self.main == FileState::Ok),
        ] {
            let consequence = if other_ok {
                "the other copy is intact, so pgBackRest still loads it, but one more failure makes it unreadable; \
                 re-run `cbob sync` to restore it"
            } else {
                "neither copy loads: pgBackRest cannot use it"
            };
            match state {
                FileState::Ok => {}
                FileState::Missing => out.push(tag(Problem::new(
                    missing,
                    format!("{key} is missing; {consequence}"),
                )
                .key(key.as_str()))),
                FileState::Invalid(e) => out.push(tag(Problem::new(
                    invalid,
                    format!("{key} does not load: {e}; {consequence}"),
                )
                .key(key.as_str()))),
            }
        }
        if self.mismatch && usable {
            out.push(tag(Problem::new(
                mismatch,
                format!(
                    "{copy_key} does not match {}: both load but their contents differ (pgBackRest writes them identical); \
                     pgBackRest uses the main file",
                    self.main_key
                ),
            )
            .key(copy_key)));
        }
        out
    }
}
