//! Typed access to the JSON values of info files and manifests, with errors that name the key.

use serde_json::{Map, Value};

use super::error::RepoError;
use super::ini::{Ini, IniSection};
use super::layout::BackupLabel;
use super::wal::{Lsn, WalSegment};

/// Where values come from, for error messages: `[section] key` or `[section] key: field`.
pub(crate) struct Fields<'a> {
    what: String,
    source: Source<'a>,
}

enum Source<'a> {
    Section(&'a IniSection),
    Object(&'a Map<String, Value>),
}

fn type_error(what: &str, key: &str, want: &str, found: &Value) -> RepoError {
    RepoError::format(0, format!("{what}{key}: expected {want}, found {found}"))
}

impl<'a> Fields<'a> {
    /// The keys of one INI section.
    pub(crate) fn section(ini: &'a Ini, name: &str) -> Result<Self, RepoError> {
        let section: &'a IniSection = ini
            .section(name)
            .ok_or_else(|| RepoError::format(0, format!("missing section [{name}]")))?;
        Ok(Self {
            what: format!("[{name}] "),
            source: Source::Section(section),
        })
    }

    /// The fields of a JSON object value (e.g. one `[backup:current]` entry).
    pub(crate) fn object(value: &'a Value, what: String) -> Result<Self, RepoError> {
        let map: &'a Map<String, Value> = value.as_object().ok_or_else(|| {
            RepoError::format(0, format!("{what}: expected a JSON object, found {value}"))
        })?;
        Ok(Self {
            what: format!("{what}: "),
            source: Source::Object(map),
        })
    }

    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        let v = match self.source {
            Source::Section(s) => s.get(key),
            Source::Object(m) => m.get(key),
        };
        v.filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> RepoError {
        RepoError::format(0, format!("{}missing {key}", self.what))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, RepoError> {
        self.value(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| type_error(&self.what, key, "a string", v))
            })
            .transpose()
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str, RepoError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, RepoError> {
        self.value(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| type_error(&self.what, key, "an unsigned integer", v))
            })
            .transpose()
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64, RepoError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn u32(&self, key: &str) -> Result<u32, RepoError> {
        let v = self.u64(key)?;
        u32::try_from(v)
            .map_err(|_| RepoError::format(0, format!("{}{key}: {v} is out of range", self.what)))
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>, RepoError> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                RepoError::format(0, format!("{}{key}: {v} is out of range", self.what))
            }),
        }
    }

    pub(crate) fn opt_i64(&self, key: &str) -> Result<Option<i64>, RepoError> {
        self.value(key)
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| type_error(&self.what, key, "an integer", v))
            })
            .transpose()
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, RepoError> {
        self.value(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| type_error(&self.what, key, "true or false", v))
            })
            .transpose()
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, RepoError> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    fn wrap<T>(&self, key: &str, r: Result<T, RepoError>) -> Result<T, RepoError> {
        r.map_err(|e| RepoError::format(0, format!("{}{key}: {e}", self.what)))
    }

    pub(crate) fn opt_label(&self, key: &str) -> Result<Option<BackupLabel>, RepoError> {
        self.opt_str(key)?
            .map(|s| self.wrap(key, BackupLabel::parse(s)))
            .transpose()
    }

    pub(crate) fn opt_wal(&self, key: &str) -> Result<Option<WalSegment>, RepoError> {
        self.opt_str(key)?
            .map(|s| self.wrap(key, WalSegment::parse(s)))
            .transpose()
    }

    pub(crate) fn opt_lsn(&self, key: &str) -> Result<Option<Lsn>, RepoError> {
        self.opt_str(key)?
            .map(|s| self.wrap(key, s.parse()))
            .transpose()
    }

    /// A list of labels, written either as a JSON array (backup.info) or as one comma-separated
    /// string (manifest `backup-reference`).
    pub(crate) fn labels(&self, key: &str) -> Result<Vec<BackupLabel>, RepoError> {
        let parts: Vec<&str> = match self.value(key) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => s.split(',').filter(|p| !p.is_empty()).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| type_error(&self.what, key, "a list of labels", v))
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(type_error(&self.what, key, "a list of labels", v)),
        };
        parts
            .into_iter()
            .map(|p| self.wrap(key, BackupLabel::parse(p)))
            .collect()
    }
}
