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

/// A name from a provider's listing, relative to the provider's root prefix (`root`: no
/// trailing `/`; empty for a bucket's root). `None` for names outside the root.
fn relative_to_root<'a>(root: &str, full: &'a str) -> Option<&'a str> {
    if root.is_empty() {
        Some(full)
    } else {
        full.strip_prefix(root)?.strip_prefix('/')
    }
}

/// The provider-relative key of a listed object name, or `None` for names a provider never
/// yields: outside its root, "directory" markers made by consoles and some tools (`a/b/`), and
/// names that break the key rules (logged, naming `provider`).
pub fn listed_key(root: &str, full: &str, provider: &str) -> Option<ObjectKey> {
    let rel = relative_to_root(root, full)?;
    if rel.is_empty() || rel.ends_with('/') {
        return None;
    }
    match ObjectKey::new(rel) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(provider, key = rel, error = %e, "skipping an object whose name breaks the key rules");
            None
        }
    }
}

/// The provider-relative directory of a listed common prefix (`<root>/a/b/` → `a/b/`), or
/// `None` for one outside the root or that breaks the key rules (`a//`, from a name `list`
/// skips as well).
pub fn listed_dir(root: &str, full: &str, provider: &str) -> Option<KeyPrefix> {
    let rel = relative_to_root(root, full)?;
    if rel.is_empty() || !rel.ends_with('/') {
        return None;
    }
    match KeyPrefix::new(rel) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(provider, prefix = rel, error = %e, "skipping a directory whose name breaks the key rules");
            None
        }
    }
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

    #[test]
    fn listed_names_are_made_relative_to_the_root_and_markers_are_skipped() {
        assert_eq!(listed_key("", "a/b", "p").unwrap().as_str(), "a/b");
        assert_eq!(
            listed_key("root/x", "root/x/a/b", "p").unwrap().as_str(),
            "a/b"
        );
        assert!(
            listed_key("root/x", "root/xa/b", "p").is_none(),
            "outside the root"
        );
        assert!(
            listed_key("root", "root/a/", "p").is_none(),
            "a directory marker"
        );
        assert!(
            listed_key("root", "root/a/../b", "p").is_none(),
            "breaks the key rules"
        );
        assert_eq!(
            listed_dir("root", "root/a/b/", "p").unwrap().as_str(),
            "a/b/"
        );
        assert!(
            listed_dir("root", "root/a/b", "p").is_none(),
            "not a directory"
        );
        assert!(
            listed_dir("root", "root/", "p").is_none(),
            "the root itself"
        );
        assert!(listed_dir("", "a//", "p").is_none(), "breaks the key rules");
    }
}
