//! Writing configuration files: `cbob config init` renders a commented TOML file from chosen
//! values, `cbob config set` changes one key of an existing file with `toml_edit` (comments,
//! order and formatting of everything else are kept). Both write atomically (temporary file in
//! the same directory, fsync, rename) and a file holding any secret is written with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, Table, Value};

use super::envfile;
use super::keys::{self, DefaultValue, KEYS, KeyDef, KeyType};
use super::value::{parse_bool, parse_value, split_list};

/// Why a file could not be edited or written. Messages never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Value { key: String, message: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A key and the text to write for it (already checked with [`check_value`]).
pub type Setting = (&'static KeyDef, String);

/// Checks `text` as a value of `key` (type, range, URL, path); the message never quotes a secret.
pub fn check_value(key: &KeyDef, text: &str) -> Result<(), EditError> {
    parse_value(key, text)
        .map(|_| ())
        .map_err(|message| EditError::Value {
            key: key.env.to_string(),
            message: format!("{message}; expected: {}", key.ty.describe()),
        })
}

/// The TOML value written for a key: integers and booleans typed, lists as arrays, the rest as
/// strings (the loader accepts every form; typed values read better).
fn toml_value(key: &KeyDef, text: &str) -> Value {
    let text = text.trim();
    match key.ty {
        KeyType::Integer { .. } => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(text)),
        KeyType::Bool => parse_bool(text)
            .map(Value::from)
            .unwrap_or_else(|| Value::from(text)),
        KeyType::List | KeyType::ClusterIds => {
            let mut a = Array::new();
            for item in split_list(text) {
                a.push(item);
            }
            Value::Array(a)
        }
        _ => Value::from(text),
    }
}

/// `(table, name)` of a key's TOML path: `dest.bucket` → `(Some("dest"), "bucket")`.
fn split_path(key: &KeyDef) -> (Option<&'static str>, &'static str) {
    match key.toml.split_once('.') {
        Some((table, name)) => (Some(table), name),
        None => (None, key.toml),
    }
}

/// Sets (`Some`) or removes (`None`) one key in a TOML document, keeping everything else as
/// written. Returns the new text.
pub fn set_in_toml(text: &str, key: &KeyDef, value: Option<&str>) -> Result<String, String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("not valid TOML: {}", e.message()))?;
    let (table, name) = split_path(key);
    let target: &mut Table = match table {
        None => doc.as_table_mut(),
        Some(t) => {
            if !doc.contains_key(t) {
                if value.is_none() {
                    return Ok(doc.to_string());
                }
                doc.insert(t, Item::Table(Table::new()));
            }
            match doc.get_mut(t) {
                Some(Item::Table(tbl)) => tbl,
                _ => return Err(format!("`{t}` is not a table in this file; fix it by hand")),
            }
        }
    };
    match value {
        Some(v) => {
            let new = toml_value(key, v);
            match target.get_mut(name) {
                // Replace the value but keep its comments and spacing.
                Some(Item::Value(old)) => {
                    let decor = old.decor().clone();
                    *old = new;
                    *old.decor_mut() = decor;
                }
                _ => {
                    target.insert(name, Item::Value(new));
                }
            }
        }
        None => {
            let comments = target
                .key(name)
                .and_then(|k| k.leaf_decor().prefix())
                .and_then(|p| p.as_str())
                .unwrap_or("")
                .to_string();
            let keys: Vec<String> = target.iter().map(|(k, _)| k.to_string()).collect();
            let next = keys
                .iter()
                .position(|k| k == name)
                .and_then(|i| keys.get(i + 1).cloned());
            if target.remove(name).is_some() && comments.contains('#') {
                keep_comments(&mut doc, table, next.as_deref(), &comments);
            }
        }
    }
    Ok(doc.to_string())
}

fn prepend(decor: &mut toml_edit::Decor, text: &str) {
    let old = decor
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();
    decor.set_prefix(format!("{text}{old}"));
}

/// The comments above a removed key are the operator's notes: they go to whatever followed the
/// key (the next key of its table, else the next table's header, else the end of the file).
fn keep_comments(doc: &mut DocumentMut, table: Option<&str>, next: Option<&str>, comments: &str) {
    let target: &mut Table = match table {
        None => doc.as_table_mut(),
        Some(t) => match doc.get_mut(t) {
            Some(Item::Table(tbl)) => tbl,
            _ => return,
        },
    };
    if let Some(next) = next {
        match target.get_mut(next) {
            Some(Item::Table(t)) => prepend(t.decor_mut(), comments),
            Some(_) => {
                if let Some(mut k) = target.key_mut(next) {
                    prepend(k.leaf_decor_mut(), comments);
                }
            }
            None => {}
        }
        return;
    }
    // Tables in document order; the root table has no position of its own.
    let here = table
        .and_then(|t| doc.get(t))
        .and_then(Item::as_table)
        .and_then(Table::position);
    let following = doc
        .iter()
        .filter_map(|(k, item)| Some((item.as_table()?.position()?, k.to_string())))
        .filter(|(pos, _)| here.is_none_or(|h| *pos > h))
        .min();
    match following {
        Some((_, name)) => {
            if let Some(t) = doc.get_mut(&name).and_then(Item::as_table_mut) {
                prepend(t.decor_mut(), comments);
            }
        }
        None => {
            let old = doc.trailing().as_str().unwrap_or("").to_string();
            doc.set_trailing(format!("{old}{comments}"));
        }
    }
}

/// Whether a TOML document sets any secret key (so it must be private).
pub fn toml_holds_secret(text: &str) -> bool {
    let Ok(doc) = text.parse::<DocumentMut>() else {
        return true; // cannot tell: be careful
    };
    KEYS.iter().filter(|k| k.secret).any(|k| {
        let (table, name) = split_path(k);
        match table {
            None => doc.get(name).is_some(),
            Some(t) => doc
                .get(t)
                .and_then(Item::as_table_like)
                .is_some_and(|tbl| tbl.get(name).is_some()),
        }
    })
}

/// Renders the commented TOML file `config init` writes: every key of the table with its help,
/// type and default; the `values` given are set, the others are commented out.
pub fn render_init(values: &[Setting], header: &str) -> String {
    let value_of = |k: &KeyDef| values.iter().find(|(v, _)| v.env == k.env).map(|(_, t)| t);
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    // TOML needs the top-level keys before the first table.
    let mut tables: Vec<&str> = Vec::new();
    for k in KEYS {
        if let (Some(t), _) = split_path(k)
            && !tables.contains(&t)
        {
            tables.push(t);
        }
    }
    let sections = std::iter::once(None).chain(tables.into_iter().map(Some));
    for section in sections {
        let keys: Vec<&KeyDef> = KEYS.iter().filter(|k| split_path(k).0 == section).collect();
        if let Some(t) = section {
            out.push_str(&format!("\n[{t}]\n"));
        }
        for k in keys {
            let (_, name) = split_path(k);
            let default = match k.default {
                DefaultValue::None => "not set".to_string(),
                DefaultValue::Static(d) => format!("default {d}"),
                DefaultValue::Derived(how) => format!("default {how}"),
            };
            out.push_str(&format!(
                "\n# {} ({}; {}; {default}{})\n",
                k.help,
                k.env,
                k.ty.describe(),
                if k.secret { "; secret" } else { "" }
            ));
            match value_of(k) {
                Some(text) => out.push_str(&format!("{name} = {}\n", toml_value(k, text))),
                None => {
                    let example = match k.default {
                        DefaultValue::Static(d) => toml_value(k, d).to_string(),
                        _ => "\"\"".to_string(),
                    };
                    out.push_str(&format!("# {name} = {example}\n"));
                }
            }
        }
    }
    out
}

/// What importing a legacy env-file found: the settings to keep and notes on lines dropped.
#[derive(Debug, Default)]
pub struct Import {
    pub settings: Vec<Setting>,
    /// One line per dropped or doubtful entry (`file:line KEY: why`), never quoting a value.
    pub notes: Vec<String>,
}

/// Reads a bash-era env-file (`KEY=VALUE`) into settings. Keys cbob no longer uses are dropped
/// with the reason; values that do not parse are dropped with the message.
pub fn import_env_file(path: &Path) -> Result<Import, EditError> {
    let text = fs::read_to_string(path).map_err(|e| EditError::File {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    let file = envfile::parse(path, &text).map_err(|e| EditError::File {
        path: path.to_path_buf(),
        message: format!("line {}: {}", e.line, e.message),
    })?;
    let mut import = Import::default();
    for entry in &file.entries {
        let at = format!("{}:{} {}", path.display(), entry.line, entry.key);
        if let Some(key) = keys::by_env(&entry.key) {
            if entry.value.trim().is_empty() {
                continue;
            }
            match check_value(key, &entry.value) {
                Ok(()) => {
                    import.settings.retain(|(k, _)| k.env != key.env);
                    import.settings.push((key, entry.value.clone()));
                }
                Err(e) => import.notes.push(format!("{at}: dropped: {e}")),
            }
        } else if let Some(why) = keys::legacy_reason(&entry.key) {
            import
                .notes
                .push(format!("{at}: dropped, no longer used: {why}"));
        } else {
            import
                .notes
                .push(format!("{at}: dropped: not a cbob setting"));
        }
    }
    Ok(import)
}

/// Writes `text` to `path` atomically. Mode 0600 when `private` (the file holds a secret) or the
/// file is new; otherwise the existing mode. An existing file's owner and group are kept, so
/// root editing a service's file does not take it away from the service.
pub fn write_atomic(path: &Path, text: &str, private: bool) -> Result<(), EditError> {
    let io = |source| EditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let existing = fs::metadata(path).ok();
    let mode = match &existing {
        Some(m) if !private => m.mode() & 0o7777,
        _ => 0o600,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cbob.toml".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(m) = &existing {
            // Only root may give a file away; for anyone else the owner is already right.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.write_all(text.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::by_env;

    const DOC: &str =
        "# my settings\ntransfers = 8 # more is faster\n\n[dest]\n# where\ntype = \"local\"\n";

    #[test]
    fn set_keeps_comments_and_types_values() {
        let k = by_env("CBOB_TRANSFERS").unwrap();
        let out = set_in_toml(DOC, k, Some("32")).unwrap();
        assert!(out.contains("transfers = 32 # more is faster"), "{out}");
        assert!(out.starts_with("# my settings\n"), "{out}");
        let out = set_in_toml(&out, by_env("CBOB_DEST_BUCKET").unwrap(), Some("b1")).unwrap();
        assert!(
            out.contains("# where\ntype = \"local\"\nbucket = \"b1\""),
            "{out}"
        );
        let out = set_in_toml(
            &out,
            by_env("CBOB_CRUNCHY_CLUSTERS").unwrap(),
            Some("a1, b2"),
        )
        .unwrap();
        assert!(
            out.contains("[crunchy]\nclusters = [\"a1\", \"b2\"]"),
            "{out}"
        );
        let out = set_in_toml(&out, by_env("CBOB_DRY_RUN").unwrap(), Some("yes")).unwrap();
        assert!(out.contains("dry_run = true"), "{out}");
        let out = set_in_toml(&out, k, None).unwrap();
        assert!(!out.contains("transfers"), "{out}");
        assert!(
            out.starts_with("# my settings\n"),
            "the notes above a removed key stay: {out}"
        );
        let out = set_in_toml(&out, by_env("CBOB_DEST_BUCKET").unwrap(), None).unwrap();
        assert!(out.contains("# where\ntype = \"local\""), "{out}");
        let last = "[dest]\ntype = \"s3\"\n# the bucket\nbucket = \"b\"\n";
        let out = set_in_toml(last, by_env("CBOB_DEST_BUCKET").unwrap(), None).unwrap();
        assert!(out.ends_with("# the bucket\n"), "{out}");
        assert!(set_in_toml("x = [", k, Some("1")).is_err());
    }

    #[test]
    fn secrets_make_a_file_private() {
        assert!(!toml_holds_secret(DOC));
        assert!(toml_holds_secret("[crunchy]\napi_key = \"x\"\n"));
        assert!(toml_holds_secret("sync_heartbeat_url = \"https://h/x\"\n"));
    }

    #[test]
    fn init_file_parses_and_sets_only_the_given_values() {
        let values = vec![
            (by_env("CBOB_TRANSFERS").unwrap(), "4".to_string()),
            (by_env("CBOB_DEST_TYPE").unwrap(), "s3".to_string()),
            (by_env("CBOB_DEST_BUCKET").unwrap(), "bkt".to_string()),
        ];
        let text = render_init(&values, "generated\n\nby a test");
        let table: toml::Table = toml::from_str(&text).expect(&text);
        assert_eq!(table["transfers"].as_integer(), Some(4));
        assert_eq!(table["dest"]["type"].as_str(), Some("s3"));
        assert_eq!(table["dest"]["bucket"].as_str(), Some("bkt"));
        assert!(table.get("parallel").is_none());
        assert!(text.contains("# parallel = 2\n"), "{text}");
        assert!(text.starts_with("# generated\n#\n# by a test\n"), "{text}");
        // Every key is documented in the file.
        for k in KEYS {
            assert!(text.contains(k.env), "{}", k.env);
        }
    }

    #[test]
    fn writes_atomically_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/cbob.toml");
        write_atomic(&p, "a = 1\n", false).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, "a = 2\n", false).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        write_atomic(&p, "a = 3\n", true).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&p).unwrap(), "a = 3\n");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
