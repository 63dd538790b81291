//! Errors of the repository model: each says which file, what was expected and what was found.

use super::compress::CompressType;

/// An error reading, classifying or verifying a pgBackRest repository file.
///
/// `file` is the repository key (or a description such as a manifest entry) the problem is about;
/// parsers that only see bytes leave it empty and callers fill it in with [`RepoError::in_file`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    /// The file does not follow pgBackRest's format (INI syntax, JSON value, missing key, ...).
    #[error("{}invalid format{}: {message}", fp(file), line_suffix(*line))]
    Format {
        file: String,
        /// 1-based line number, or 0 when the problem is not about one line.
        line: usize,
        message: String,
    },

    /// An info file or manifest whose content does not match its `backrest-checksum`.
    #[error(
        "{}backrest-checksum mismatch: the file says {expected}, its content hashes to {found}",
        fp(file)
    )]
    InfoChecksum {
        file: String,
        expected: String,
        found: String,
    },

    /// An info file or manifest without a `[backrest] backrest-checksum` key (truncated or not an info file).
    #[error(
        "{}no backrest-checksum in the file (its content hashes to {found}); truncated or not a pgBackRest info file",
        fp(file)
    )]
    InfoChecksumMissing { file: String, found: String },

    /// A SHA-1 over file bytes that does not match what pgBackRest recorded.
    #[error(
        "{}SHA-1 of {what} mismatch: expected {expected}, found {found}",
        fp(file)
    )]
    Checksum {
        file: String,
        /// Which bytes were hashed: "stored bytes (rck)", "content", "WAL segment", ...
        what: &'static str,
        expected: String,
        found: String,
    },

    /// A byte count that does not match what pgBackRest recorded.
    #[error(
        "{}size of {what} mismatch: expected {expected} bytes, found {found}",
        fp(file)
    )]
    Size {
        file: String,
        what: &'static str,
        expected: u64,
        found: u64,
    },

    /// Compressed bytes that do not decompress (corrupt, truncated, or trailing garbage).
    #[error("{}cannot decompress {compress} data: {message}", fp(file))]
    Decompress {
        file: String,
        compress: CompressType,
        message: String,
    },

    /// The file is encrypted (OpenSSL `Salted__` header): its content cannot be checked without the passphrase.
    #[error(
        "{}encrypted (repository cipher); content checks need the passphrase",
        fp(file)
    )]
    Encrypted { file: String },

    /// A small file (info, manifest) larger than the verifier agrees to buffer.
    #[error("{}larger than {limit} bytes, refusing to buffer it", fp(file))]
    TooLarge { file: String, limit: u64 },

    /// A name (label, WAL file, key) that does not parse.
    #[error("{}invalid name: {message}", fp(file))]
    InvalidName { file: String, message: String },
}

/// "file: " before a message, or nothing while the file is not yet known.
fn fp(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}

fn line_suffix(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" at line {line}")
    }
}

impl RepoError {
    pub(crate) fn format(line: usize, message: impl Into<String>) -> Self {
        RepoError::Format {
            file: String::new(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_name(file: impl Into<String>, message: impl Into<String>) -> Self {
        RepoError::InvalidName {
            file: file.into(),
            message: message.into(),
        }
    }

    /// The file this error is about ("" when not yet known).
    pub fn file(&self) -> &str {
        match self {
            RepoError::Format { file, .. }
            | RepoError::InfoChecksum { file, .. }
            | RepoError::InfoChecksumMissing { file, .. }
            | RepoError::Checksum { file, .. }
            | RepoError::Size { file, .. }
            | RepoError::Decompress { file, .. }
            | RepoError::Encrypted { file }
            | RepoError::TooLarge { file, .. }
            | RepoError::InvalidName { file, .. } => file,
        }
    }

    fn file_mut(&mut self) -> &mut String {
        match self {
            RepoError::Format { file, .. }
            | RepoError::InfoChecksum { file, .. }
            | RepoError::InfoChecksumMissing { file, .. }
            | RepoError::Checksum { file, .. }
            | RepoError::Size { file, .. }
            | RepoError::Decompress { file, .. }
            | RepoError::Encrypted { file }
            | RepoError::TooLarge { file, .. }
            | RepoError::InvalidName { file, .. } => file,
        }
    }

    /// Names the file this error is about, unless it already names one.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        let slot = self.file_mut();
        if slot.is_empty() {
            *slot = file.into();
        }
        self
    }

    /// True when the bytes are wrong (checksum, size, decompression, format): a copy that fails
    /// this way must never be published. False for "cannot check" (encrypted, too large) and names.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            RepoError::Format { .. }
                | RepoError::InfoChecksum { .. }
                | RepoError::InfoChecksumMissing { .. }
                | RepoError::Checksum { .. }
                | RepoError::Size { .. }
                | RepoError::Decompress { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_expected_and_found() {
        let e = RepoError::Size {
            file: String::new(),
            what: "stored bytes",
            expected: 10,
            found: 9,
        }
        .in_file("backup/s/L/pg_data/x.lz4");
        assert_eq!(
            e.to_string(),
            "backup/s/L/pg_data/x.lz4: size of stored bytes mismatch: expected 10 bytes, found 9"
        );
        assert!(e.is_corruption());
        // An already named file is kept.
        assert_eq!(e.in_file("other").file(), "backup/s/L/pg_data/x.lz4");

        let e = RepoError::format(3, "missing '='").in_file("backup.info");
        assert_eq!(
            e.to_string(),
            "backup.info: invalid format at line 3: missing '='"
        );
        assert!(!RepoError::Encrypted { file: "x".into() }.is_corruption());
    }
}
