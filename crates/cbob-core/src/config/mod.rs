//! Configuration (SPEC §3): sources, precedence, validation and rendering.
//!
//! Sources, lowest to highest precedence: built-in defaults < TOML file < legacy env-file <
//! environment (`CBOB_*`, `PGBACKREST_AUTO_*`) < command-line flags. One table of keys
//! ([`keys::KEYS`]) drives them all. [`load`] reports every problem at once; a [`Config`] only
//! exists when there is no error.
//!
//! ```no_run
//! use cbob_core::config::{self, ConfigSources};
//! let mut sources = ConfigSources::from_process();
//! sources.set_flag("CBOB_TRANSFERS", "8", "--transfers");
//! match config::load(&sources) {
//!     Ok(cfg) => println!("copying to {}", cfg.destination_spec().describe()),
//!     Err(err) => eprintln!("{err}"),
//! }
//! ```

pub mod edit;
pub mod envfile;
pub mod keys;
mod ops_checks;
mod problem;
mod render;
mod sources;
mod validate;
pub mod value;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

pub use problem::{ConfigError, ConfigProblem, Origin, Severity};
pub use render::{RenderFormat, render};
pub use sources::{ConfigSources, FlagValue, Resolved, ResolvedValue};
pub use value::ByteRate;

use crate::logging::{LogFormat, LogLevel};
use crate::secret::Secret;
use crate::storage::{ProviderSpec, SettingNames};

/// The destination kinds `CBOB_DEST_TYPE` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestKind {
    Local,
    S3,
    Minio,
    Azure,
    Gcs,
}

impl DestKind {
    /// The type name, which is also the provider registry kind and the cargo feature.
    pub fn as_str(self) -> &'static str {
        match self {
            DestKind::Local => "local",
            DestKind::S3 => "s3",
            DestKind::Minio => "minio",
            DestKind::Azure => "azure",
            DestKind::Gcs => "gcs",
        }
    }
}

impl FromStr for DestKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "local" => DestKind::Local,
            "s3" => DestKind::S3,
            "minio" => DestKind::Minio,
            "azure" => DestKind::Azure,
            "gcs" => DestKind::Gcs,
            other => return Err(format!("unknown destination type {other:?}")),
        })
    }
}

#[derive(Debug, Clone)]
pub struct CrunchyConfig {
    pub api_key: Option<Secret>,
    pub api_url: Url,
    /// Explicit cluster list; empty means discover every primary.
    pub clusters: Vec<String>,
    pub ignore_clusters: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory for `cbob.log`; `None` logs to stderr only.
    pub path: Option<PathBuf>,
    pub level: LogLevel,
    pub format: LogFormat,
}

/// The `CBOB_DEST_*` keys.
#[derive(Debug, Clone)]
pub struct DestConfig {
    pub kind: DestKind,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    /// Without leading or trailing `/`.
    pub prefix: String,
    pub region: String,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub azure_account: Option<String>,
    pub azure_key: Option<Secret>,
    pub azure_sas: Option<Secret>,
    pub container: Option<String>,
    pub gcs_credentials: Option<PathBuf>,
}

/// Credentials and endpoint for the source object store.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub endpoint: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub region: Option<String>,
    pub azure_key: Option<Secret>,
    pub azure_sas: Option<Secret>,
    pub gcs_credentials: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Object transfers in flight at once, per run.
    pub transfers: usize,
    /// Clusters synced at once.
    pub parallel: usize,
    /// `None`: unlimited.
    pub bandwidth: Option<ByteRate>,
    /// Retries after the first attempt.
    pub retry_count: u32,
    pub retry_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub smtp_server: Option<String>,
    pub mail_from: Option<String>,
    pub mail_to: Vec<String>,
    pub attach_report: bool,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<Secret>,
    /// `CBOB_SMTP_TLS`: `starttls`, `tls` or `none`.
    pub smtp_tls: String,
    /// Extra root certificates (PEM) for the SMTP server.
    pub smtp_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub sync_heartbeat_url: Option<Secret>,
    pub restore_heartbeat_url: Option<Secret>,
    pub slack_token: Option<Secret>,
    pub slack_channel: String,
    pub slack_webhook_url: Option<Secret>,
    pub email: EmailConfig,
    /// `healthchecks` or `cronitor`.
    pub heartbeat_style: String,
    pub slack_api_url: Url,
    pub webhook_url: Option<Secret>,
    /// Phases sent to Slack and the webhook: `started`, `succeeded`, `failed`.
    pub events: Vec<String>,
    /// Time allowed to deliver one event to one notifier, retries included.
    pub timeout: Duration,
}

/// `cbob daemon`: schedules, jitter, the loopback HTTP address, the shutdown grace period.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// (job name, cron expression) for each `CBOB_SCHEDULE_*` that is set, in key-table order.
    pub schedules: Vec<(String, String)>,
    pub jitter: Duration,
    /// `None` when `CBOB_DAEMON_LISTEN=off`.
    pub listen: Option<std::net::SocketAddr>,
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct ProgramsConfig {
    pub pg_bin_dir: Option<PathBuf>,
    pub pgbackrest_bin: Option<PathBuf>,
}

/// A valid configuration. Every secret is a [`Secret`], so `{:?}` of the whole struct is safe to log.
#[derive(Debug, Clone)]
pub struct Config {
    pub crunchy: CrunchyConfig,
    pub base_path: PathBuf,
    pub target_path: PathBuf,
    pub replication_config: PathBuf,
    pub log: LogConfig,
    pub dry_run: bool,
    pub no_lock: bool,
    pub dest: DestConfig,
    pub source: SourceConfig,
    pub transfer: TransferConfig,
    pub retention_full: Option<u32>,
    pub notify: NotifyConfig,
    pub daemon: DaemonConfig,
    pub programs: ProgramsConfig,
    /// Every key's effective text and origin, for `config show` / `config get`.
    pub resolved: Resolved,
    /// Problems that do not make the configuration invalid (legacy keys, ignored settings).
    pub warnings: Vec<ConfigProblem>,
}

/// Reads every source and validates the result. On error, every problem found is returned.
pub fn load(sources: &ConfigSources) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let resolved = sources::resolve(sources, &mut problems);
    let mut config = validate::build(resolved, &mut problems);
    // Errors first, each group in the order found, so the output reads top-down.
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    if problems.iter().any(ConfigProblem::is_error) {
        return Err(ConfigError {
            problems,
            resolved: config.resolved,
        });
    }
    config.warnings = problems;
    Ok(config)
}

impl Config {
    /// The resolved value of a key named by environment name or TOML path.
    pub fn get(&self, name: &str) -> Option<&ResolvedValue> {
        keys::lookup(name).and_then(|k| self.resolved.get(k.env))
    }

    /// The API key, or the problem to report when a command needs Crunchy Bridge without one.
    pub fn require_api_key(&self) -> Result<&Secret, ConfigProblem> {
        self.crunchy.api_key.as_ref().ok_or_else(|| {
            ConfigProblem::error(
                "CBOB_CRUNCHY_API_KEY".to_string(),
                Origin::Unset,
                "required to read backups from Crunchy Bridge",
                "set CBOB_CRUNCHY_API_KEY (TOML crunchy.api_key) to an API key from the Crunchy Bridge dashboard, \
                 or use --source URL",
            )
        })
    }

    /// The destination as a provider spec: `CBOB_TARGET_PATH` for `local`, the `CBOB_DEST_*`
    /// keys otherwise. The Azure shared key travels as `secret_key`, the container as `bucket`.
    pub fn destination_spec(&self) -> ProviderSpec {
        let d = &self.dest;
        if d.kind == DestKind::Local {
            return ProviderSpec::local(&self.target_path);
        }
        let mut spec = ProviderSpec {
            kind: d.kind.as_str().into(),
            endpoint: d.endpoint.clone(),
            prefix: d.prefix.clone(),
            ..ProviderSpec::default()
        };
        match d.kind {
            DestKind::S3 | DestKind::Minio => {
                spec.bucket = d.bucket.clone();
                spec.region = Some(d.region.clone());
                spec.access_key = d.access_key.clone();
                spec.secret_key = d.secret_key.clone();
            }
            DestKind::Azure => {
                spec.account = d.azure_account.clone();
                spec.bucket = d.container.clone().or_else(|| d.bucket.clone());
                spec.secret_key = d.azure_key.clone();
                spec.sas_token = d.azure_sas.clone();
            }
            DestKind::Gcs => {
                spec.bucket = d.bucket.clone();
                spec.credentials_file = d.gcs_credentials.clone();
            }
            DestKind::Local => unreachable!("handled above"),
        }
        spec
    }

    /// A `--source URL` as a provider spec with the `CBOB_SOURCE_*` settings applied.
    pub fn source_spec(&self, url: &str) -> Result<ProviderSpec, ConfigProblem> {
        source_spec_from_url(url, &self.source)
    }
}

/// Parses a repository URL (see [`ProviderSpec::parse_url`]) and adds the source endpoint and
/// the source credentials of its kind (`CBOB_SOURCE_*`).
pub fn source_spec_from_url(
    url: &str,
    source: &SourceConfig,
) -> Result<ProviderSpec, ConfigProblem> {
    let mut spec = ProviderSpec::parse_url(url).map_err(|e| {
        ConfigProblem::error(
            "--source".to_string(),
            Origin::Flag("--source".into()),
            e.message().to_string(),
            "give file:///path, s3://bucket/prefix, minio://bucket/prefix, azure://account/container/prefix \
             or gcs://bucket/prefix",
        )
    })?;
    if spec.kind != "local" {
        spec.endpoint = source.endpoint.clone();
        spec.settings = SettingNames::Source;
    }
    match spec.kind.as_str() {
        "s3" | "minio" => {
            spec.access_key = source.access_key.clone();
            spec.secret_key = source.secret_key.clone();
            spec.region = source.region.clone();
        }
        "azure" => {
            if source.azure_key.is_some() && source.azure_sas.is_some() {
                return Err(ConfigProblem::error(
                    "CBOB_SOURCE_AZURE_SAS".to_string(),
                    Origin::Flag("--source".into()),
                    "both CBOB_SOURCE_AZURE_KEY and CBOB_SOURCE_AZURE_SAS are set; cbob would have to guess which to use",
                    "unset one of them",
                ));
            }
            spec.secret_key = source.azure_key.clone();
            spec.sas_token = source.azure_sas.clone();
        }
        "gcs" => spec.credentials_file = source.gcs_credentials.clone(),
        _ => {}
    }
    Ok(spec)
}

#[cfg(test)]
mod tests;
