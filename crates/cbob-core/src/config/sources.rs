//! Where configuration comes from, and merging it with figment: built-in defaults < TOML file <
//! legacy env-file < environment < command-line flags. Every search path is a field of
//! [`ConfigSources`], so tests never read the real home directory or `/etc`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::envfile::{self, EnvFile};
use super::keys::{self, DefaultValue, KEYS, KeyDef};
use super::problem::{ConfigProblem, Origin};

/// A value given on the command line for a key, e.g. `--transfers 8` for `CBOB_TRANSFERS`.
#[derive(Clone)]
pub struct FlagValue {
    pub key: &'static KeyDef,
    pub value: String,
    /// The flag as the operator typed it, for `config show` origins.
    pub flag: String,
}

/// Everything `load()` reads from, injectable for tests.
#[derive(Clone)]
pub struct ConfigSources {
    /// The process environment (`HOME`, `XDG_*`, `CBOB_*`, ...).
    pub env: BTreeMap<String, String>,
    /// Effective user is root (changes the default `CBOB_BASE_PATH`).
    pub is_root: bool,
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// System TOML files searched after the XDG one.
    pub system_toml_files: Vec<PathBuf>,
    /// System env-files searched after `~/.cb_offsite_backup`.
    pub system_env_files: Vec<PathBuf>,
    /// Command-line values, highest precedence.
    pub flags: Vec<FlagValue>,
}

// The environment holds secrets: show names only.
impl fmt::Debug for ConfigSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSources")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("is_root", &self.is_root)
            .field("config_file", &self.config_file)
            .field("system_toml_files", &self.system_toml_files)
            .field("system_env_files", &self.system_env_files)
            .field(
                "flags",
                &self.flags.iter().map(|f| &f.flag).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ConfigSources {
    /// Sources of a real run: this process's environment and the system paths.
    pub fn from_process() -> Self {
        Self {
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            is_root: unsafe { libc::geteuid() } == 0,
            config_file: None,
            system_toml_files: vec![PathBuf::from("/etc/cbob/cbob.toml")],
            system_env_files: vec![
                PathBuf::from("/usr/local/etc/cb_offsite_backup"),
                PathBuf::from("/etc/cb_offsite_backup"),
            ],
            flags: Vec::new(),
        }
    }

    /// Sources that read nothing outside `home`: an environment holding only `HOME`, no system files.
    pub fn isolated(home: impl Into<PathBuf>) -> Self {
        let mut env = BTreeMap::new();
        env.insert("HOME".to_string(), home.into().display().to_string());
        Self {
            env,
            is_root: false,
            config_file: None,
            system_toml_files: Vec::new(),
            system_env_files: Vec::new(),
            flags: Vec::new(),
        }
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), value.to_string());
        self
    }

    /// Sets `key` (an environment name such as `CBOB_TRANSFERS`) from a command-line flag.
    ///
    /// # Panics
    /// If `key` is not in [`KEYS`]: flags are wired by code, so that is a programming error.
    pub fn set_flag(&mut self, key: &str, value: impl Into<String>, flag: &str) {
        let key =
            keys::by_env(key).unwrap_or_else(|| panic!("flag {flag} maps to unknown key {key}"));
        self.flags.retain(|f| f.key.env != key.env);
        self.flags.push(FlagValue {
            key,
            value: value.into(),
            flag: flag.to_string(),
        });
    }

    pub fn home(&self) -> Option<PathBuf> {
        self.env
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
    }

    /// An XDG base directory: the variable when absolute (the spec ignores relative ones), else `~/<fallback>`.
    fn xdg_dir(&self, var: &str, fallback: &str) -> Option<PathBuf> {
        match self.env.get(var).map(PathBuf::from) {
            Some(p) if p.is_absolute() => Some(p),
            _ => self.home().map(|h| h.join(fallback)),
        }
    }

    /// The TOML files searched when neither `--config` nor `CBOB_CONFIG_FILE` names one, in order.
    pub fn toml_candidates(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .xdg_dir("XDG_CONFIG_HOME", ".config")
            .map(|d| d.join("cbob").join("cbob.toml"))
            .into_iter()
            .collect();
        out.extend(self.system_toml_files.iter().cloned());
        out
    }

    /// The legacy env-files searched, in order.
    pub fn env_file_candidates(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .home()
            .map(|h| h.join(".cb_offsite_backup"))
            .into_iter()
            .collect();
        out.extend(self.system_env_files.iter().cloned());
        out
    }

    /// The default `CBOB_BASE_PATH`: `/var/lib/cbob` as root, else `$XDG_DATA_HOME/cbob`.
    pub fn default_base_path(&self) -> Option<PathBuf> {
        if self.is_root {
            return Some(PathBuf::from("/var/lib/cbob"));
        }
        self.xdg_dir("XDG_DATA_HOME", ".local/share")
            .map(|d| d.join("cbob"))
    }
}

/// The effective value of one key before typing.
#[derive(Clone)]
pub struct ResolvedValue {
    pub key: &'static KeyDef,
    /// The value as text (lists comma-joined); `None` when unset.
    pub raw: Option<String>,
    pub origin: Origin,
}

impl ResolvedValue {
    /// The value to print: secrets as `***` unless `unmask`.
    pub fn display_value(&self, unmask: bool) -> Option<String> {
        let raw = self.raw.as_ref()?;
        Some(if self.key.secret && !unmask {
            crate::secret::MASK.to_string()
        } else {
            raw.clone()
        })
    }
}

impl fmt::Debug for ResolvedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} ({})",
            self.key.env,
            self.display_value(false),
            self.origin
        )
    }
}

/// Every key's effective raw value and origin, in [`KEYS`] order, plus the files that were read.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub values: Vec<ResolvedValue>,
    pub toml_file: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
}

impl Resolved {
    /// The resolved value of a key by environment name.
    pub fn get(&self, env: &str) -> Option<&ResolvedValue> {
        self.values.iter().find(|v| v.key.env == env)
    }

    /// The raw value of a key, if set.
    pub fn raw(&self, env: &str) -> Option<&str> {
        self.get(env).and_then(|v| v.raw.as_deref())
    }
}

/// One source handed to figment: a dictionary under one metadata name.
struct Layer {
    name: String,
    file: Option<PathBuf>,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let meta = Metadata::named(self.name.clone());
        match &self.file {
            Some(p) => meta.source(figment::Source::File(p.clone())),
            None => meta,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Builds the figment from every source and resolves each key to its raw value and origin.
/// Problems found on the way (unreadable files, unknown keys, malformed lines) go to `problems`.
pub(crate) fn resolve(sources: &ConfigSources, problems: &mut Vec<ConfigProblem>) -> Resolved {
    let mut figment = Figment::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    let mut add = |figment: Figment, layer: Layer, origin: Origin| {
        origins.insert(layer.name.clone(), origin);
        figment.merge(layer)
    };

    let mut defaults = Dict::new();
    for k in KEYS {
        if let DefaultValue::Static(v) = k.default {
            insert_path(&mut defaults, k.toml, Value::from(v));
        }
    }
    figment = add(figment, layer("default", None, defaults), Origin::Default);

    let (toml_file, explicit_env_file) = pick_config_file(sources, problems);
    if let Some(path) = &toml_file
        && let Some(dict) = read_toml(path, problems)
    {
        figment = add(
            figment,
            layer(&format!("TOML file {}", path.display()), Some(path), dict),
            Origin::TomlFile(path.clone()),
        );
    }

    let env_file = match explicit_env_file {
        Some(f) => Some(f),
        None => find_env_file(sources, problems),
    };
    if let Some(file) = &env_file {
        let dict = env_file_dict(file, problems);
        figment = add(
            figment,
            layer(
                &format!("env-file {}", file.path.display()),
                Some(&file.path),
                dict,
            ),
            Origin::EnvFile {
                path: file.path.clone(),
                line: None,
            },
        );
    }

    figment = add(
        figment,
        layer("environment", None, environment_dict(sources, problems)),
        Origin::Environment,
    );

    for f in &sources.flags {
        let mut dict = Dict::new();
        insert_path(&mut dict, f.key.toml, Value::from(f.value.clone()));
        figment = add(
            figment,
            layer(&format!("flag {}", f.flag), None, dict),
            Origin::Flag(f.flag.clone()),
        );
    }

    let mut values = Vec::with_capacity(KEYS.len());
    for key in KEYS {
        let found = figment.find_value(key.toml).ok();
        let mut origin = figment
            .find_metadata(key.toml)
            .and_then(|m| origins.get(m.name.as_ref()).cloned())
            .unwrap_or(Origin::Unset);
        if let (Origin::EnvFile { line, .. }, Some(file)) = (&mut origin, &env_file) {
            *line = file.get(key.env).map(|e| e.line);
        }
        let raw = match found.map(|v| raw_text(key, &v)) {
            Some(Ok(text)) => text,
            Some(Err(why)) => {
                problems.push(ConfigProblem::error(
                    key.env.to_string(),
                    origin.clone(),
                    why,
                    format!(
                        "give {} as a single value; expected: {}",
                        key.toml,
                        key.ty.describe()
                    ),
                ));
                None
            }
            None => None,
        };
        // An empty value unsets the key, overriding lower layers; its default then applies.
        let (raw, origin) = match raw {
            Some(text) if !text.is_empty() => (Some(text), origin),
            _ => match key.default {
                DefaultValue::Static(v) => (Some(v.to_string()), Origin::Default),
                _ => (None, Origin::Unset),
            },
        };
        values.push(ResolvedValue { key, raw, origin });
    }

    let mut resolved = Resolved {
        values,
        toml_file: toml_file.filter(|p| p.is_file()),
        env_file: env_file.map(|f| f.path),
    };
    derive_defaults(sources, &mut resolved, problems);
    resolved
}

fn layer(name: &str, file: Option<&Path>, dict: Dict) -> Layer {
    Layer {
        name: name.to_string(),
        file: file.map(Path::to_path_buf),
        dict,
    }
}

/// The value as text: scalars as written, arrays comma-joined for list keys.
fn raw_text(key: &KeyDef, value: &Value) -> Result<Option<String>, String> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(_, s) => Some(s.clone()),
            Value::Char(_, c) => Some(c.to_string()),
            Value::Bool(_, b) => Some(b.to_string()),
            Value::Num(_, n) => n
                .to_i128()
                .map(|i| i.to_string())
                .or_else(|| n.to_f64().map(|f| f.to_string())),
            Value::Empty(..) => Some(String::new()),
            Value::Dict(..) | Value::Array(..) => None,
        }
    }
    match value {
        Value::Array(_, items) if key.ty.is_list() => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "a list may only hold strings".to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(v.join(","))),
        Value::Array(..) => Err(format!("expected a {}, found a list", key.ty.describe())),
        Value::Dict(..) => Err(format!("expected a {}, found a table", key.ty.describe())),
        v => Ok(scalar(v)),
    }
}

/// `--config`, else `$CBOB_CONFIG_FILE`, else the search. Returns the TOML file to read, or the
/// env-file to use when the named file is in the bash tool's env format (it used
/// `CBOB_CONFIG_FILE` for its env-file, so existing setups point it at one).
fn pick_config_file(
    sources: &ConfigSources,
    problems: &mut Vec<ConfigProblem>,
) -> (Option<PathBuf>, Option<EnvFile>) {
    let explicit = match (&sources.config_file, sources.env.get(keys::CONFIG_FILE_ENV)) {
        (Some(p), _) => Some((p.clone(), Origin::Flag("--config".into()))),
        (None, Some(p)) if !p.is_empty() => Some((PathBuf::from(p), Origin::Environment)),
        _ => None,
    };
    let Some((path, origin)) = explicit else {
        return (
            sources.toml_candidates().into_iter().find(|p| p.is_file()),
            None,
        );
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(ConfigProblem::error(
                keys::CONFIG_FILE_ENV.to_string(),
                origin,
                format!("cannot read configuration file {}: {e}", path.display()),
                "point --config / CBOB_CONFIG_FILE at a readable file, or unset it to use the search path",
            ));
            return (None, None);
        }
    };
    let is_toml_name = path.extension().is_some_and(|e| e == "toml");
    if !is_toml_name && envfile::looks_like_env_file(&text) {
        return (
            None,
            Some(envfile::parse(&path, &text).expect("checked by looks_like_env_file")),
        );
    }
    (Some(path), None)
}

fn read_toml(path: &Path, problems: &mut Vec<ConfigProblem>) -> Option<Dict> {
    let origin = Origin::TomlFile(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(ConfigProblem::error(
                None,
                origin,
                format!("cannot read: {e}"),
                "make the file readable by this user",
            ));
            return None;
        }
    };
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            // Only the message and position: the toml crate's rendering quotes the line, which may hold a secret.
            let at = e.span().map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                format!(" at line {line}")
            });
            problems.push(ConfigProblem::error(
                None,
                origin,
                format!("not valid TOML{}: {}", at.unwrap_or_default(), e.message()),
                "fix the TOML syntax (see docs/configuration.md for an example)",
            ));
            return None;
        }
    };
    check_toml_keys(&table, "", &origin, problems);
    match Value::serialize(&table) {
        Ok(Value::Dict(_, dict)) => Some(dict),
        _ => None,
    }
}

/// Unknown keys are errors: a typo in a TOML file would otherwise silently fall back to a default.
fn check_toml_keys(
    table: &toml::Table,
    prefix: &str,
    origin: &Origin,
    problems: &mut Vec<ConfigProblem>,
) {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let is_table_name = KEYS.iter().any(|k| k.toml.starts_with(&format!("{path}.")));
        match value {
            toml::Value::Table(inner) if is_table_name => {
                check_toml_keys(inner, &path, origin, problems)
            }
            _ if keys::by_toml(&path).is_some() => {}
            _ if is_table_name => problems.push(ConfigProblem::error(
                path.clone(),
                origin.clone(),
                format!("`{path}` must be a table"),
                format!("write its keys under a [{path}] header"),
            )),
            _ => {
                let fix = match keys::suggest(&path, KEYS.iter().map(|k| k.toml)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "remove it; docs/configuration.md lists every key".into(),
                };
                let what = if value.is_table() {
                    "unknown table"
                } else {
                    "unknown key"
                };
                problems.push(ConfigProblem::error(
                    path.clone(),
                    origin.clone(),
                    what,
                    fix,
                ));
            }
        }
    }
}

fn find_env_file(sources: &ConfigSources, problems: &mut Vec<ConfigProblem>) -> Option<EnvFile> {
    let path = sources
        .env_file_candidates()
        .into_iter()
        .find(|p| p.is_file())?;
    let origin = Origin::EnvFile {
        path: path.clone(),
        line: None,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(ConfigProblem::error(
                None,
                origin,
                format!("cannot read: {e}"),
                "make the file readable by this user, or remove it",
            ));
            return None;
        }
    };
    match envfile::parse(&path, &text) {
        Ok(file) => Some(file),
        Err(e) => {
            problems.push(ConfigProblem::error(
                None,
                Origin::EnvFile {
                    path,
                    line: Some(e.line),
                },
                e.message,
                "write the line as KEY=VALUE (quote values with spaces), or start it with # to comment it out",
            ));
            None
        }
    }
}

fn env_file_dict(file: &EnvFile, problems: &mut Vec<ConfigProblem>) -> Dict {
    let mut dict = Dict::new();
    for entry in &file.entries {
        let origin = Origin::EnvFile {
            path: file.path.clone(),
            line: Some(entry.line),
        };
        if let Some(key) = keys::by_env(&entry.key) {
            insert_path(&mut dict, key.toml, Value::from(entry.value.clone()));
        } else if let Some(why) = keys::legacy_reason(&entry.key) {
            problems.push(legacy_warning(&entry.key, origin, why));
        } else if entry.key.starts_with("CBOB_") {
            // In a file of cbob settings an unknown CBOB_ name is a typo that would silently do nothing.
            problems.push(ConfigProblem::error(
                entry.key.clone(),
                origin,
                "unknown key",
                unknown_fix(&entry.key),
            ));
        } else if keys::is_cbob_name(&entry.key) {
            problems.push(ConfigProblem::warning(
                entry.key.clone(),
                origin,
                "unknown key, ignored",
                unknown_fix(&entry.key),
            ));
        } else {
            problems.push(ConfigProblem::warning(
                entry.key.clone(),
                origin,
                "ignored: cbob reads only CBOB_* and PGBACKREST_AUTO_* keys from the env-file",
                format!(
                    "export {} in the environment of cbob instead, or remove the line",
                    entry.key
                ),
            ));
        }
    }
    dict
}

fn environment_dict(sources: &ConfigSources, problems: &mut Vec<ConfigProblem>) -> Dict {
    let mut dict = Dict::new();
    for (name, value) in &sources.env {
        if let Some(key) = keys::by_env(name) {
            insert_path(&mut dict, key.toml, Value::from(value.clone()));
        } else if let Some(why) = keys::legacy_reason(name) {
            problems.push(legacy_warning(name, Origin::Environment, why));
        } else if name.starts_with("CBOB_") && name != keys::CONFIG_FILE_ENV {
            problems.push(ConfigProblem::warning(
                name.clone(),
                Origin::Environment,
                "unknown key, ignored",
                unknown_fix(name),
            ));
        }
    }
    dict
}

fn legacy_warning(name: &str, origin: Origin, why: &str) -> ConfigProblem {
    ConfigProblem::warning(
        name.to_string(),
        origin,
        format!("no longer used: {why}"),
        "remove it",
    )
}

fn unknown_fix(name: &str) -> String {
    match keys::suggest(name, KEYS.iter().map(|k| k.env)) {
        Some(s) => format!("did you mean {s}?"),
        None => "remove it; docs/configuration.md lists every key".into(),
    }
}

/// Fills the defaults that depend on the environment or on other keys.
fn derive_defaults(
    sources: &ConfigSources,
    resolved: &mut Resolved,
    problems: &mut Vec<ConfigProblem>,
) {
    let base_default = sources.default_base_path();
    let base = resolved
        .raw("CBOB_BASE_PATH")
        .map(PathBuf::from)
        .or(base_default.clone());
    for v in &mut resolved.values {
        if v.raw.is_some() {
            continue;
        }
        let (value, how) = match v.key.env {
            "CBOB_BASE_PATH" => match &base_default {
                Some(p) => (
                    p.clone(),
                    if sources.is_root {
                        "running as root"
                    } else {
                        "$XDG_DATA_HOME/cbob"
                    },
                ),
                None => {
                    problems.push(ConfigProblem::error(
                        v.key.env.to_string(),
                        Origin::Unset,
                        "no default: not running as root and neither HOME nor XDG_DATA_HOME is set",
                        "set CBOB_BASE_PATH (or base_path in the TOML file)",
                    ));
                    continue;
                }
            },
            "CBOB_TARGET_PATH" => match &base {
                Some(b) => (b.join("backups"), "$CBOB_BASE_PATH/backups"),
                None => continue,
            },
            "CBOB_REPLICATION_CONFIG" => match &base {
                Some(b) => (
                    b.join("config").join("replication.yaml"),
                    "$CBOB_BASE_PATH/config/replication.yaml",
                ),
                None => continue,
            },
            _ => continue,
        };
        v.raw = Some(value.display().to_string());
        v.origin = Origin::Derived(how);
    }
}
