//! The replication YAML (the bash tool's schema, SPEC §6): `replication.primary`,
//! `replication.replicas[]` and `replication.settings`, with `${VAR}` placeholders expanded from
//! the environment and every unknown key reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::config::ByteRate;
use crate::secret::Secret;
use crate::storage::{ProviderSpec, SettingNames};

/// A problem in the replication file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationProblem {
    /// YAML path, e.g. `replication.replicas[1].bucket`.
    pub path: String,
    pub message: String,
    /// Errors stop the command; warnings (unknown or unused keys) are reported and ignored.
    pub is_error: bool,
}

impl std::fmt::Display for ReplicationProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = if self.is_error { "error" } else { "warning" };
        write!(f, "{level}: {}: {}", self.path, self.message)
    }
}

/// A replication file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("replication configuration {}:\n  {}", path.display(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct ReplicationConfigError {
    pub path: PathBuf,
    pub problems: Vec<ReplicationProblem>,
}

/// Where a store is: a primary or a replica.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The provider as written (`aws`, `s3`, `azure`, `gcp`, `gcs`, `do`, `digitalocean`, `minio`, `local`).
    pub provider: String,
    pub region: Option<String>,
    /// `bucket`, `container` or `space`.
    pub bucket: Option<String>,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub path: Option<PathBuf>,
    pub storage_account: Option<String>,
    pub project: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub sas_token: Option<Secret>,
    pub credentials_file: Option<PathBuf>,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    /// Whose YAML fields these are, for the settings provider errors name.
    pub settings: SettingNames,
}

/// One replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub name: String,
    pub store: StoreConfig,
}

/// `replication.settings`, all honoured.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    pub bandwidth_limit: Option<ByteRate>,
    /// Object transfers in flight per replica.
    pub parallel_transfers: usize,
    /// Run the post-copy validation of each replica (and compare listings with the primary).
    pub verify_after_sync: bool,
    /// Send failure notifications.
    pub alert_on_failure: bool,
    /// Retries after the first attempt.
    pub retry_attempts: u32,
    pub retry_delay: Duration,
    /// Let the service copy objects between a primary and a replica of the same provider and
    /// account (S3 CopyObject, Azure Copy Blob, GCS rewrite) instead of streaming them through
    /// this host. On by default; a replica whose service refuses falls back to streaming.
    pub server_side_copy: bool,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            bandwidth_limit: None,
            parallel_transfers: 16,
            verify_after_sync: true,
            alert_on_failure: true,
            retry_attempts: 3,
            retry_delay: Duration::from_secs(5),
            server_side_copy: true,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub path: PathBuf,
    /// `None`: the sync destination is the primary.
    pub primary: Option<StoreConfig>,
    pub replicas: Vec<ReplicaConfig>,
    pub settings: ReplicationSettings,
    pub warnings: Vec<ReplicationProblem>,
}

const STORE_KEYS: &[&str] = &[
    "provider",
    "region",
    "bucket",
    "container",
    "space",
    "prefix",
    "endpoint",
    "path",
    "storage_account",
    "project",
    "access_key",
    "secret_key",
    "sas_token",
    "credentials_file",
    "storage_class",
    "sse",
    "kms_key_id",
];
/// Keys the bash tool documented that cbob accepts but does not use, with the reason.
const UNUSED_KEYS: &[(&str, &str)] = &[
    (
        "sync_interval",
        "schedule replication with `cbob daemon` or cron instead",
    ),
    (
        "retention_days",
        "replicas mirror the primary's retention; run `cbob expire` on the primary",
    ),
    (
        "role_arn",
        "role assumption is not supported; use credentials or the provider's standard chain",
    ),
    (
        "options",
        "put storage_class, sse and kms_key_id directly on the replica",
    ),
];
const SETTINGS_KEYS: &[&str] = &[
    "bandwidth_limit",
    "parallel_transfers",
    "verify_after_sync",
    "alert_on_failure",
    "retry_attempts",
    "retry_delay",
    "server_side_copy",
];

/// Reads and validates a replication file; `env` expands `${VAR}` placeholders.
pub fn load(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<ReplicationConfig, ReplicationConfigError> {
    let fail = |message: String| ReplicationConfigError {
        path: path.to_path_buf(),
        problems: vec![ReplicationProblem {
            path: "(file)".into(),
            message,
            is_error: true,
        }],
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot read it: {e}; create one with `cbob replicate init` or set CBOB_REPLICATION_CONFIG"
        ))
    })?;
    parse(path, &text, env)
}

/// Parses replication YAML text.
pub fn parse(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<ReplicationConfig, ReplicationConfigError> {
    // `${VAR}` is not a valid plain scalar inside YAML flow mappings (`{bucket: ${X}}`, the bash
    // tool's own example style), so placeholders become safe tokens before parsing and are
    // expanded in the parsed string values afterwards.
    let (text, vars) = tokenize_placeholders(text);
    let mut p = Parser {
        env,
        vars,
        problems: Vec::new(),
    };
    let root: Value = serde_yaml_ng::from_str(&text).map_err(|e| ReplicationConfigError {
        path: path.to_path_buf(),
        problems: vec![ReplicationProblem {
            path: "(file)".into(),
            message: format!("not valid YAML: {e}"),
            is_error: true,
        }],
    })?;
    let cfg = p.root(path, &root);
    let (errors, warnings): (Vec<_>, Vec<_>) = p.problems.into_iter().partition(|x| x.is_error);
    match cfg {
        Some(mut cfg) if errors.is_empty() => {
            cfg.warnings = warnings;
            Ok(cfg)
        }
        _ => Err(ReplicationConfigError {
            path: path.to_path_buf(),
            problems: errors.into_iter().chain(warnings).collect(),
        }),
    }
}

struct Parser<'a> {
    env: &'a BTreeMap<String, String>,
    /// Placeholder names by token index.
    vars: Vec<String>,
    problems: Vec<ReplicationProblem>,
}

const TOKEN_PREFIX: &str = "__cbob_placeholder_";

/// Replaces each `${NAME}` with `__cbob_placeholder_<i>__`; returns the names by index.
fn tokenize_placeholders(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut vars = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            out.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(&format!("{TOKEN_PREFIX}{}__", vars.len()));
        vars.push(name.to_string());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, vars)
}

impl Parser<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(ReplicationProblem {
            path: path.into(),
            message: message.into(),
            is_error: true,
        });
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(ReplicationProblem {
            path: path.into(),
            message: message.into(),
            is_error: false,
        });
    }

    /// Expands placeholders from the environment; an unset variable is an error naming it.
    fn expand(&mut self, path: &str, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find(TOKEN_PREFIX) {
            out.push_str(&rest[..start]);
            let after = &rest[start + TOKEN_PREFIX.len()..];
            let Some(end) = after.find("__") else { break };
            let index: usize = after[..end].parse().unwrap_or(usize::MAX);
            let Some(name) = self.vars.get(index).cloned() else {
                out.push_str(&rest[start..start + TOKEN_PREFIX.len()]);
                rest = after;
                continue;
            };
            match self.env.get(&name) {
                Some(v) => out.push_str(v),
                None => self.error(
                    path,
                    format!("placeholder ${{{name}}} is not set in the environment"),
                ),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn string(&mut self, map: &Mapping, key: &str, path: &str) -> Option<String> {
        let v = map.get(key)?;
        let p = format!("{path}.{key}");
        let raw = match v {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                self.error(&p, "expected a string");
                return None;
            }
        };
        let expanded = self.expand(&p, &raw);
        (!expanded.trim().is_empty()).then_some(expanded)
    }

    fn unknown_keys(&mut self, map: &Mapping, path: &str, known: &[&str]) {
        for k in map.keys() {
            let Some(k) = k.as_str() else {
                self.error(path, "keys must be strings");
                continue;
            };
            if known.contains(&k) {
                continue;
            }
            if let Some((_, why)) = UNUSED_KEYS.iter().find(|(u, _)| *u == k) {
                self.warn(
                    &format!("{path}.{k}"),
                    format!("accepted but not used: {why}"),
                );
            } else {
                let hint = known
                    .iter()
                    .find(|c| strsim_close(c, k))
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                self.warn(
                    &format!("{path}.{k}"),
                    format!("unknown key, ignored{hint}"),
                );
            }
        }
    }

    fn store(&mut self, v: &Value, path: &str) -> Option<StoreConfig> {
        let Some(map) = v.as_mapping() else {
            self.error(path, "expected a mapping with provider, bucket, ...");
            return None;
        };
        let mut known: Vec<&str> = STORE_KEYS.to_vec();
        known.push("name");
        self.unknown_keys(map, path, &known);
        let Some(provider) = self.string(map, "provider", path) else {
            self.error(
                &format!("{path}.provider"),
                "required: aws, s3, azure, gcp, gcs, digitalocean, minio or local",
            );
            return None;
        };
        let bucket = ["bucket", "container", "space"]
            .iter()
            .find_map(|k| self.string(map, k, path));
        let secret = |p: &mut Self, k: &str| p.string(map, k, path).map(Secret::new);
        Some(StoreConfig {
            provider: provider.to_ascii_lowercase(),
            region: self.string(map, "region", path),
            bucket,
            prefix: self
                .string(map, "prefix", path)
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
            endpoint: self.string(map, "endpoint", path),
            path: self.string(map, "path", path).map(PathBuf::from),
            storage_account: self.string(map, "storage_account", path),
            project: self.string(map, "project", path),
            access_key: secret(self, "access_key"),
            secret_key: secret(self, "secret_key"),
            sas_token: secret(self, "sas_token"),
            credentials_file: self
                .string(map, "credentials_file", path)
                .map(PathBuf::from),
            storage_class: self.string(map, "storage_class", path),
            sse: self.string(map, "sse", path),
            kms_key_id: self.string(map, "kms_key_id", path),
            settings: SettingNames::ReplicationPrimary,
        })
    }

    fn settings(&mut self, v: Option<&Value>) -> ReplicationSettings {
        let mut s = ReplicationSettings::default();
        let Some(v) = v else { return s };
        let path = "replication.settings";
        let Some(map) = v.as_mapping() else {
            self.error(path, "expected a mapping");
            return s;
        };
        self.unknown_keys(map, path, SETTINGS_KEYS);
        if let Some(b) = self.string(map, "bandwidth_limit", path) {
            match ByteRate::parse(&b) {
                Ok(r) => s.bandwidth_limit = r,
                Err(e) => self.error(&format!("{path}.bandwidth_limit"), e),
            }
        }
        let number = |p: &mut Self, key: &str| -> Option<u64> {
            let text = p.string(map, key, path)?;
            match text.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    p.error(
                        &format!("{path}.{key}"),
                        format!("expected a whole number, got {text:?}"),
                    );
                    None
                }
            }
        };
        if let Some(n) = number(self, "parallel_transfers") {
            if n == 0 {
                self.error(&format!("{path}.parallel_transfers"), "must be at least 1");
            } else {
                s.parallel_transfers = n as usize;
            }
        }
        if let Some(n) = number(self, "retry_attempts") {
            s.retry_attempts = n as u32;
        }
        if let Some(n) = number(self, "retry_delay") {
            s.retry_delay = Duration::from_secs(n);
        }
        let flag = |p: &mut Self, key: &str| -> Option<bool> {
            let text = p.string(map, key, path)?;
            match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Some(true),
                "false" | "no" | "0" | "off" => Some(false),
                _ => {
                    p.error(
                        &format!("{path}.{key}"),
                        format!("expected true or false, got {text:?}"),
                    );
                    None
                }
            }
        };
        if let Some(b) = flag(self, "verify_after_sync") {
            s.verify_after_sync = b;
        }
        if let Some(b) = flag(self, "alert_on_failure") {
            s.alert_on_failure = b;
        }
        if let Some(b) = flag(self, "server_side_copy") {
            s.server_side_copy = b;
        }
        s
    }

    fn root(&mut self, path: &Path, root: &Value) -> Option<ReplicationConfig> {
        let Some(top) = root.as_mapping() else {
            self.error("(file)", "expected a mapping with a `replication:` key");
            return None;
        };
        self.unknown_keys(top, "", &["replication"]);
        let Some(repl) = top.get("replication").and_then(Value::as_mapping) else {
            self.error(
                "replication",
                "required: a mapping with `replicas:` (and optionally `primary:`, `settings:`)",
            );
            return None;
        };
        self.unknown_keys(repl, "replication", &["primary", "replicas", "settings"]);
        let primary = match repl.get("primary") {
            None | Some(Value::Null) => None,
            Some(v) => self.store(v, "replication.primary"),
        };
        let mut replicas = Vec::new();
        match repl.get("replicas") {
            Some(Value::Sequence(items)) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("replication.replicas[{i}]");
                    let name = item.as_mapping().and_then(|m| self.string(m, "name", &p));
                    let Some(name) = name else {
                        self.error(
                            &format!("{p}.name"),
                            "required: a unique name for the replica",
                        );
                        continue;
                    };
                    if !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    {
                        self.error(
                            &format!("{p}.name"),
                            format!("{name:?}: use letters, digits, '-', '_' and '.'"),
                        );
                    }
                    if replicas.iter().any(|r: &ReplicaConfig| r.name == name) {
                        self.error(
                            &format!("{p}.name"),
                            format!("duplicate replica name {name:?}"),
                        );
                    }
                    if let Some(mut store) = self.store(item, &p) {
                        store.settings = SettingNames::Replica { name: name.clone() };
                        replicas.push(ReplicaConfig { name, store });
                    }
                }
            }
            _ => self.error(
                "replication.replicas",
                "required: a non-empty list of replicas",
            ),
        }
        let settings = self.settings(repl.get("settings"));
        // Every store must turn into a provider spec.
        if let Some(p) = &primary
            && let Err(e) = p.provider_spec()
        {
            self.error("replication.primary", e);
        }
        for (i, r) in replicas.iter().enumerate() {
            if let Err(e) = r.store.provider_spec() {
                self.error(&format!("replication.replicas[{i}] ({})", r.name), e);
            }
        }
        Some(ReplicationConfig {
            path: path.to_path_buf(),
            primary,
            replicas,
            settings,
            warnings: Vec::new(),
        })
    }
}

/// A cheap "did you mean": same length ±1 and at most two differing characters.
fn strsim_close(a: &str, b: &str) -> bool {
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let diff = a.chars().zip(b.chars()).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len());
    diff <= 2
}

impl StoreConfig {
    /// The provider spec this store describes, or why it cannot be built.
    pub fn provider_spec(&self) -> Result<ProviderSpec, String> {
        let need_bucket = |what: &str| {
            self.bucket
                .clone()
                .ok_or_else(|| format!("{} needs `{what}`", self.provider))
        };
        let mut spec = ProviderSpec {
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            storage_class: self.storage_class.clone(),
            settings: self.settings.clone(),
            ..ProviderSpec::default()
        };
        if let Some(sse) = &self.sse {
            spec.options.insert("sse".into(), sse.clone());
        }
        if let Some(k) = &self.kms_key_id {
            spec.options.insert("kms_key_id".into(), k.clone());
        }
        match self.provider.as_str() {
            "aws" | "s3" => {
                spec.kind = "s3".into();
                spec.bucket = Some(need_bucket("bucket")?);
            }
            "do" | "digitalocean" => {
                spec.kind = "s3".into();
                spec.bucket = Some(need_bucket("space")?);
                let region = self.region.clone().unwrap_or_else(|| "nyc3".into());
                spec.endpoint = Some(
                    self.endpoint
                        .clone()
                        .unwrap_or_else(|| format!("https://{region}.digitaloceanspaces.com")),
                );
                spec.region = Some(region);
            }
            "minio" => {
                spec.kind = "minio".into();
                spec.bucket = Some(need_bucket("bucket")?);
                if self.endpoint.is_none() {
                    return Err("minio needs `endpoint` (e.g. http://minio.internal:9000)".into());
                }
            }
            "azure" => {
                spec.kind = "azure".into();
                spec.bucket = Some(need_bucket("container")?);
                spec.account = Some(
                    self.storage_account
                        .clone()
                        .ok_or("azure needs `storage_account`")?,
                );
                spec.sas_token = self.sas_token.clone();
            }
            "gcp" | "gcs" => {
                spec.kind = "gcs".into();
                spec.bucket = Some(need_bucket("bucket")?);
                spec.project = self.project.clone();
                spec.credentials_file = self.credentials_file.clone();
            }
            "local" => {
                let path = self
                    .path
                    .clone()
                    .ok_or("local needs `path` (an absolute directory)")?;
                if !path.is_absolute() {
                    return Err(format!("local path {} must be absolute", path.display()));
                }
                return Ok(ProviderSpec::local(path));
            }
            other => {
                return Err(format!(
                    "unknown provider {other:?}; use aws, s3, azure, gcp, gcs, digitalocean, minio or local"
                ));
            }
        }
        Ok(spec)
    }
}

/// The commented template `cbob replicate init` writes (the bash tool's example, extended).
pub const TEMPLATE: &str = r#"# cbob replication: copies the primary (by default the sync destination) to every replica,
# with the same engine, publish order and verification as `cbob sync`.
# ${VAR} placeholders are expanded from the environment when the file is read.
replication:
  # primary: omit to use the sync destination (CBOB_DEST_* / CBOB_TARGET_PATH).
  # primary: {provider: aws, region: us-east-1, bucket: ${CBOB_PRIMARY_BUCKET}}
  replicas:
    - name: aws-eu
      provider: aws                 # aws | s3 | azure | gcp | gcs | digitalocean | minio | local
      region: eu-west-1
      bucket: ${CBOB_EU_BUCKET}
      prefix: backups/
      # storage_class: STANDARD_IA  # S3 storage class, Azure access tier, GCS storage class
      # sse: aws:kms                # AES256 | aws:kms (S3)
      # kms_key_id: arn:aws:kms:...
      # access_key / secret_key: inline, or leave out for the provider's standard chain
    - name: azure-west
      provider: azure
      region: westus2
      storage_account: ${AZURE_STORAGE_ACCOUNT}
      container: cbob-backups
      prefix: replicas/
      # secret_key: ${AZURE_STORAGE_KEY}   # or sas_token: ${AZURE_SAS}
    - name: gcp-asia
      provider: gcp
      project: ${GCP_PROJECT_ID}
      region: asia-southeast1
      bucket: ${GCP_BUCKET}
      # credentials_file: /etc/cbob/gcs.json
    - name: do-nyc
      provider: digitalocean
      region: nyc3
      space: ${DO_SPACE_NAME}
      access_key: ${DO_ACCESS_KEY}
      secret_key: ${DO_SECRET_KEY}
  settings:
    bandwidth_limit: ""             # e.g. 50MB/s; empty = unlimited
    parallel_transfers: 4           # object transfers in flight per replica
    verify_after_sync: true         # validate each replica after copying and compare it with the primary
    alert_on_failure: true          # notify when a replica fails
    retry_attempts: 3
    retry_delay: 300                # seconds before the first retry, doubling
    server_side_copy: true          # same provider and account as the primary: the service copies
                                    # (S3 CopyObject, Azure Copy Blob, GCS rewrite), no bytes pass here
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_bash_tools_example_loads_with_placeholders_expanded() {
        let e = env(&[
            ("CBOB_PRIMARY_BUCKET", "prim"),
            ("CBOB_EU_BUCKET", "eu"),
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("GCP_PROJECT_ID", "proj"),
            ("GCP_BUCKET", "gb"),
            ("DO_SPACE_NAME", "space"),
            ("DO_ACCESS_KEY", "AK"),
            ("DO_SECRET_KEY", "SK"),
        ]);
        let text = r#"
replication:
  primary: {provider: aws, region: us-east-1, bucket: ${CBOB_PRIMARY_BUCKET}}
  replicas:
    - {name: aws-eu, provider: aws, region: eu-west-1, bucket: ${CBOB_EU_BUCKET}, prefix: backups/, sync_interval: 1h, retention_days: 30}
    - {name: azure-west, provider: azure, region: westus2, storage_account: ${AZURE_STORAGE_ACCOUNT}, container: cbob-backups, prefix: replicas/}
    - {name: gcp-asia, provider: gcp, project: ${GCP_PROJECT_ID}, region: asia-southeast1, bucket: ${GCP_BUCKET}}
    - {name: do-nyc, provider: digitalocean, region: nyc3, space: ${DO_SPACE_NAME}, access_key: ${DO_ACCESS_KEY}, secret_key: ${DO_SECRET_KEY}}
  settings: {bandwidth_limit: "", parallel_transfers: 4, verify_after_sync: true, alert_on_failure: true, retry_attempts: 3, retry_delay: 300}
"#;
        let cfg = parse(Path::new("r.yaml"), text, &e).unwrap();
        assert_eq!(cfg.replicas.len(), 4);
        assert_eq!(
            cfg.primary.as_ref().unwrap().bucket.as_deref(),
            Some("prim")
        );
        let eu = &cfg.replicas[0];
        assert_eq!(
            (eu.store.bucket.as_deref(), eu.store.prefix.as_str()),
            (Some("eu"), "backups")
        );
        let spec = cfg.replicas[3].store.provider_spec().unwrap();
        assert_eq!(spec.kind, "s3");
        assert_eq!(
            spec.endpoint.as_deref(),
            Some("https://nyc3.digitaloceanspaces.com")
        );
        assert_eq!(spec.access_key.unwrap().expose(), "AK");
        // Provider errors name the replica's YAML fields, and the primary's.
        assert_eq!(
            spec.settings,
            SettingNames::Replica {
                name: "do-nyc".into()
            }
        );
        assert_eq!(
            cfg.primary
                .as_ref()
                .unwrap()
                .provider_spec()
                .unwrap()
                .settings,
            SettingNames::ReplicationPrimary
        );
        let az = cfg.replicas[1].store.provider_spec().unwrap();
        assert_eq!(
            (
                az.kind.as_str(),
                az.account.as_deref(),
                az.bucket.as_deref()
            ),
            ("azure", Some("acct"), Some("cbob-backups"))
        );
        assert_eq!(cfg.settings.parallel_transfers, 4);
        assert_eq!(cfg.settings.retry_delay, Duration::from_secs(300));
        assert!(cfg.settings.bandwidth_limit.is_none());
        // sync_interval and retention_days are reported as unused.
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.path.ends_with("sync_interval")),
            "{:?}",
            cfg.warnings
        );
        assert!(cfg.warnings.iter().all(|w| !w.is_error));
    }

    #[test]
    fn the_template_parses_once_its_placeholders_are_set() {
        let e = env(&[
            ("CBOB_EU_BUCKET", "eu"),
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("GCP_PROJECT_ID", "proj"),
            ("GCP_BUCKET", "gb"),
            ("DO_SPACE_NAME", "space"),
            ("DO_ACCESS_KEY", "AK"),
            ("DO_SECRET_KEY", "SK"),
        ]);
        let cfg = parse(Path::new("t.yaml"), TEMPLATE, &e).unwrap();
        assert_eq!(cfg.replicas.len(), 4);
        assert!(cfg.primary.is_none());
        assert!(cfg.settings.server_side_copy);
    }

    #[test]
    fn server_side_copy_can_be_turned_off() {
        let text = "replication:\n  replicas:\n    - {name: a, provider: s3, bucket: b}\n  settings: {server_side_copy: false}\n";
        let cfg = parse(Path::new("s.yaml"), text, &BTreeMap::new()).unwrap();
        assert!(!cfg.settings.server_side_copy);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let text = "replication:\n  replicas:\n    - {name: a, provider: s3, bucket: b}\n  settings: {server_side_copy: sometimes}\n";
        let err = parse(Path::new("s.yaml"), text, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("server_side_copy"), "{err}");
    }

    #[test]
    fn reports_every_problem() {
        let text = r#"
replication:
  replicas:
    - {name: a, provider: aws}
    - {name: a, provider: ftp, bucket: x}
    - {provider: aws, bucket: y}
    - {name: b, provider: aws, bucket: ${MISSING}, buckt: typo}
  settings: {parallel_transfers: 0, verify_after_sync: maybe}
  extra: 1
"#;
        let err = parse(Path::new("bad.yaml"), text, &BTreeMap::new()).unwrap_err();
        let text = err.to_string();
        for needle in [
            "aws needs `bucket`",
            "duplicate replica name",
            "unknown provider \"ftp\"",
            "replicas[2].name",
            "${MISSING}",
            "did you mean `bucket`",
            "parallel_transfers: must be at least 1",
            "verify_after_sync",
            "replication.extra",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn secrets_stay_masked() {
        let text = "replication:\n  replicas:\n    - {name: a, provider: s3, bucket: b, secret_key: hunter2}\n";
        let cfg = parse(Path::new("s.yaml"), text, &BTreeMap::new()).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
