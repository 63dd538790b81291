//! Object keys: relative, `/`-separated paths that every provider validates the same way
//! before any I/O, so a hostile name from a source repository can never escape a destination root.

use std::fmt;

use super::error::{StorageError, StorageErrorKind};

/// A validated object key, relative to a provider's root or prefix.
///
/// Rules (SPEC §2): not empty; no leading `/`; no `..` or `.` segment; no empty segment (`a//b`);
/// no NUL byte; no backslash; no trailing `/` (that would name a directory, not an object).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key` and wraps it.
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        validate(&key, false)?;
        Ok(Self(key))
    }

    /// The key as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Joins a relative path below this key (`self/rest`), validating the result.
    pub fn join(&self, rest: &str) -> Result<Self, StorageError> {
        Self::new(format!("{}/{}", self.0, rest))
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Everything before the last `/`, or `""` for a top-level key.
    pub fn parent(&self) -> &str {
        self.0.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
    }

    /// Iterates over the segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = StorageError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = StorageError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

/// A validated listing prefix: empty (everything), or a key-like string that may end with `/`.
/// Listing is by string prefix, as on object stores: `backup/st` matches `backup/stanza/...`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// The prefix that matches every key.
    pub fn all() -> Self {
        Self(String::new())
    }

    /// Validates `prefix` with the key rules; a trailing `/` is allowed and empty means "all".
    pub fn new(prefix: impl Into<String>) -> Result<Self, StorageError> {
        let prefix = prefix.into();
        if !prefix.is_empty() {
            validate(&prefix, true)?;
        }
        Ok(Self(prefix))
    }

    /// The prefix string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `key` falls under this prefix.
    pub fn matches(&self, key: &str) -> bool {
        key.starts_with(&self.0)
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(key: &str, why: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::InvalidKey,
        format!("invalid object key {key:?}: {why}"),
    )
}

fn validate(key: &str, allow_trailing_slash: bool) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(invalid(key, "empty"));
    }
    if key.contains('\0') {
        return Err(invalid(key, "contains a NUL byte"));
    }
    if key.contains('\\') {
        return Err(invalid(key, "contains a backslash"));
    }
    if key.starts_with('/') {
        return Err(invalid(
            key,
            "starts with '/' (keys are relative to the root)",
        ));
    }
    let body = if allow_trailing_slash {
        key.strip_suffix('/').unwrap_or(key)
    } else {
        key
    };
    if body.is_empty() {
        return Err(invalid(key, "empty"));
    }
    for segment in body.split('/') {
        match segment {
            "" => {
                return Err(invalid(
                    key,
                    "contains an empty segment ('//' or a trailing '/')",
                ));
            }
            "." => return Err(invalid(key, "contains a '.' segment")),
            ".." => return Err(invalid(key, "contains a '..' segment")),
            _ => {}
        }
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(invalid(key, "contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_repository_keys() {
        for k in [
            "archive/abc123/archive.info",
            "backup/abc123/20261124-022421F/pg_data/base/1/1234.lz4",
            "a",
            "odd name+with=chars~ü",
            "..hidden/x..y/...",
        ] {
            ObjectKey::new(k).unwrap();
        }
    }

    #[test]
    fn rejects_hostile_keys() {
        for k in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "..",
            ".",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "a\nb",
        ] {
            let err = ObjectKey::new(k).unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::InvalidKey, "{k:?}");
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn prefixes() {
        assert!(KeyPrefix::new("").unwrap().matches("x"));
        let p = KeyPrefix::new("backup/").unwrap();
        assert!(p.matches("backup/a"));
        assert!(!p.matches("archive/a"));
        KeyPrefix::new("backup/st").unwrap();
        assert!(KeyPrefix::new("../").is_err());
        assert!(KeyPrefix::new("/abs").is_err());
        assert!(KeyPrefix::new("a//").is_err());
    }

    #[test]
    fn parts() {
        let k = ObjectKey::new("a/b/c.txt").unwrap();
        assert_eq!(k.file_name(), "c.txt");
        assert_eq!(k.parent(), "a/b");
        assert_eq!(ObjectKey::new("top").unwrap().parent(), "");
        assert_eq!(k.join("d").unwrap().as_str(), "a/b/c.txt/d");
        assert!(k.join("../x").is_err());
    }
}
