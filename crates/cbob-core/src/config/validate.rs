//! From resolved text to a typed [`Config`], collecting every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::keys::{self, DefaultValue, KEYS};
use super::problem::{ConfigProblem, Origin};
use super::sources::Resolved;
use super::value::{TypedValue, parse_value};
use super::{
    Config, CrunchyConfig, DaemonConfig, DestConfig, DestKind, EmailConfig, LogConfig,
    NotifyConfig, ProgramsConfig, SourceConfig, TransferConfig,
};
use crate::logging::{LogFormat, LogLevel};
use crate::secret::Secret;

/// Typed values by environment name; a key whose text did not parse falls back to its default.
struct Typed {
    values: BTreeMap<&'static str, TypedValue>,
}

impl Typed {
    fn parse(resolved: &Resolved, problems: &mut Vec<ConfigProblem>) -> Self {
        let mut values = BTreeMap::new();
        for v in &resolved.values {
            let Some(raw) = &v.raw else { continue };
            match parse_value(v.key, raw) {
                Ok(t) => {
                    values.insert(v.key.env, t);
                }
                Err(why) => {
                    problems.push(ConfigProblem::error(
                        v.key.env.to_string(),
                        v.origin.clone(),
                        why,
                        format!(
                            "set {} (TOML {}); expected: {}",
                            v.key.env,
                            v.key.toml,
                            v.key.ty.describe()
                        ),
                    ));
                    if let DefaultValue::Static(d) = v.key.default
                        && let Ok(t) = parse_value(v.key, d)
                    {
                        values.insert(v.key.env, t);
                    }
                }
            }
        }
        Self { values }
    }

    fn text(&self, env: &str) -> Option<String> {
        match self.values.get(env)? {
            TypedValue::Text(s) => Some(s.clone()),
            TypedValue::Url(u) => Some(u.to_string()),
            _ => None,
        }
    }

    fn secret(&self, env: &str) -> Option<Secret> {
        match self.values.get(env)? {
            TypedValue::Text(s) => Some(Secret::new(s.clone())),
            // Heartbeat and webhook URLs embed tokens: keep them exactly as written.
            TypedValue::Url(u) => Some(Secret::new(u.as_str())),
            _ => None,
        }
    }

    fn path(&self, env: &str) -> Option<PathBuf> {
        match self.values.get(env)? {
            TypedValue::Path(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn bool(&self, env: &str) -> bool {
        matches!(self.values.get(env), Some(TypedValue::Bool(true)))
    }

    fn int(&self, env: &str) -> Option<i64> {
        match self.values.get(env)? {
            TypedValue::Integer(n) => Some(*n),
            _ => None,
        }
    }

    fn list(&self, env: &str) -> Vec<String> {
        match self.values.get(env) {
            Some(TypedValue::List(l)) => l.clone(),
            _ => Vec::new(),
        }
    }

    fn duration(&self, env: &str) -> Option<Duration> {
        match self.values.get(env)? {
            TypedValue::Duration(d) => Some(*d),
            _ => None,
        }
    }

    fn url(&self, env: &str) -> Option<Url> {
        match self.values.get(env)? {
            TypedValue::Url(u) => Some(u.clone()),
            _ => None,
        }
    }
}

pub(crate) fn build(resolved: Resolved, problems: &mut Vec<ConfigProblem>) -> Config {
    let t = Typed::parse(&resolved, problems);
    let int = |env: &str| t.int(env).and_then(|n| u32::try_from(n).ok());
    let config = Config {
        crunchy: CrunchyConfig {
            api_key: t.secret("CBOB_CRUNCHY_API_KEY"),
            api_url: t
                .url("CBOB_CRUNCHY_API_URL")
                .unwrap_or_else(|| Url::parse("https://api.crunchybridge.com").expect("valid URL")),
            clusters: t.list("CBOB_CRUNCHY_CLUSTERS"),
            ignore_clusters: t.list("CBOB_IGNORE_CLUSTERS"),
        },
        base_path: t.path("CBOB_BASE_PATH").unwrap_or_default(),
        target_path: t.path("CBOB_TARGET_PATH").unwrap_or_default(),
        replication_config: t.path("CBOB_REPLICATION_CONFIG").unwrap_or_default(),
        log: LogConfig {
            path: t.path("CBOB_LOG_PATH"),
            level: t
                .text("CBOB_LOG_LEVEL")
                .and_then(|l| l.parse().ok())
                .unwrap_or(LogLevel::Info),
            format: t
                .text("CBOB_LOG_FORMAT")
                .and_then(|f| f.parse().ok())
                .unwrap_or(LogFormat::Text),
        },
        dry_run: t.bool("CBOB_DRY_RUN"),
        no_lock: t.bool("CBOB_NO_LOCK"),
        dest: DestConfig {
            kind: t
                .text("CBOB_DEST_TYPE")
                .and_then(|k| k.parse().ok())
                .unwrap_or(DestKind::Local),
            endpoint: t.text("CBOB_DEST_ENDPOINT"),
            bucket: t.text("CBOB_DEST_BUCKET"),
            prefix: t
                .text("CBOB_DEST_PREFIX")
                .map(|p| p.trim_matches('/').to_string())
                .unwrap_or_default(),
            region: t
                .text("CBOB_DEST_REGION")
                .unwrap_or_else(|| "us-east-1".into()),
            access_key: t.secret("CBOB_DEST_ACCESS_KEY"),
            secret_key: t.secret("CBOB_DEST_SECRET_KEY"),
            azure_account: t.text("CBOB_DEST_AZURE_ACCOUNT"),
            azure_key: t.secret("CBOB_DEST_AZURE_KEY"),
            azure_sas: t.secret("CBOB_DEST_AZURE_SAS"),
            container: t.text("CBOB_DEST_CONTAINER"),
            gcs_credentials: t.path("CBOB_DEST_GCS_CREDENTIALS"),
        },
        source: SourceConfig {
            endpoint: t.text("CBOB_SOURCE_ENDPOINT"),
            access_key: t.secret("CBOB_SOURCE_ACCESS_KEY"),
            secret_key: t.secret("CBOB_SOURCE_SECRET_KEY"),
            region: t.text("CBOB_SOURCE_REGION"),
            azure_key: t.secret("CBOB_SOURCE_AZURE_KEY"),
            azure_sas: t.secret("CBOB_SOURCE_AZURE_SAS"),
            gcs_credentials: t.path("CBOB_SOURCE_GCS_CREDENTIALS"),
        },
        transfer: TransferConfig {
            transfers: int("CBOB_TRANSFERS").unwrap_or(16) as usize,
            parallel: int("CBOB_PARALLEL").unwrap_or(2) as usize,
            bandwidth: match t.values.get("CBOB_BANDWIDTH") {
                Some(TypedValue::ByteRate(r)) => *r,
                _ => None,
            },
            retry_count: int("CBOB_RETRY_COUNT").unwrap_or(5),
            retry_delay: match t.values.get("CBOB_RETRY_DELAY") {
                Some(TypedValue::Duration(d)) => *d,
                _ => Duration::from_secs(1),
            },
        },
        retention_full: int("CBOB_RETENTION_FULL"),
        notify: NotifyConfig {
            sync_heartbeat_url: t.secret("CBOB_SYNC_HEARTBEAT_URL"),
            restore_heartbeat_url: t.secret("CBOB_RESTORE_HEARTBEAT_URL"),
            slack_token: t.secret("CBOB_SLACK_CLI_TOKEN"),
            slack_channel: t
                .text("CBOB_SLACK_CHANNEL")
                .unwrap_or_else(|| "#general".into()),
            slack_webhook_url: t.secret("CBOB_SLACK_WEBHOOK_URL"),
            email: EmailConfig {
                smtp_server: t.text("PGBACKREST_AUTO_SMTP_SERVER"),
                mail_from: t.text("PGBACKREST_AUTO_MAIL_FROM"),
                mail_to: t.list("PGBACKREST_AUTO_MAIL_TO"),
                attach_report: t.bool("PGBACKREST_AUTO_ATTACH_REPORT"),
                smtp_username: t.text("CBOB_SMTP_USERNAME"),
                smtp_password: t.secret("CBOB_SMTP_PASSWORD"),
                smtp_tls: t.text("CBOB_SMTP_TLS").unwrap_or_else(|| "starttls".into()),
                smtp_ca_file: t.path("CBOB_SMTP_CA_FILE"),
            },
            heartbeat_style: t
                .text("CBOB_HEARTBEAT_STYLE")
                .unwrap_or_else(|| "healthchecks".into()),
            slack_api_url: t
                .url("CBOB_SLACK_API_URL")
                .unwrap_or_else(|| Url::parse("https://slack.com/api").expect("valid URL")),
            webhook_url: t.secret("CBOB_WEBHOOK_URL"),
            events: t.list("CBOB_NOTIFY_EVENTS"),
            timeout: t
                .duration("CBOB_NOTIFY_TIMEOUT")
                .unwrap_or(Duration::from_secs(10)),
        },
        daemon: DaemonConfig {
            schedules: super::ops_checks::SCHEDULE_KEYS
                .iter()
                .filter_map(|(env, job)| Some((job.to_string(), t.text(env)?)))
                .collect(),
            jitter: t.duration("CBOB_SCHEDULE_JITTER").unwrap_or_default(),
            listen: t
                .text("CBOB_DAEMON_LISTEN")
                .and_then(|l| super::ops_checks::parse_listen(&l).ok().flatten()),
            grace: t
                .duration("CBOB_DAEMON_GRACE")
                .unwrap_or(Duration::from_secs(60)),
        },
        programs: ProgramsConfig {
            pg_bin_dir: t.path("CBOB_PG_BIN_DIR"),
            pgbackrest_bin: t.path("CBOB_PGBACKREST_BIN"),
        },
        resolved,
        warnings: Vec::new(),
    };
    cross_checks(&config, problems);
    super::ops_checks::check(&config, problems);
    config
}

/// Rules between keys; each problem names the key to change.
fn cross_checks(c: &Config, problems: &mut Vec<ConfigProblem>) {
    let origin = |env: &str| {
        c.resolved
            .get(env)
            .map(|v| v.origin.clone())
            .unwrap_or(Origin::Unset)
    };
    let set = |env: &str| c.resolved.raw(env).is_some();
    let kind = c.dest.kind;
    let type_origin = origin("CBOB_DEST_TYPE");
    let require = |env: &str, what: &str, problems: &mut Vec<ConfigProblem>| {
        if !set(env) {
            let toml = keys::by_env(env).map_or("", |k| k.toml);
            problems.push(ConfigProblem::error(
                env.to_string(),
                Origin::Unset,
                format!("required when CBOB_DEST_TYPE={} ({what})", kind.as_str()),
                format!("set {env} (TOML {toml}), or change CBOB_DEST_TYPE ({type_origin})"),
            ));
        }
    };
    match kind {
        DestKind::Local => {}
        DestKind::S3 => require("CBOB_DEST_BUCKET", "the bucket to copy into", problems),
        DestKind::Minio => {
            require("CBOB_DEST_BUCKET", "the bucket to copy into", problems);
            require("CBOB_DEST_ENDPOINT", "the MinIO server URL", problems);
        }
        DestKind::Gcs => require("CBOB_DEST_BUCKET", "the bucket to copy into", problems),
        DestKind::Azure => {
            require("CBOB_DEST_AZURE_ACCOUNT", "the storage account", problems);
            if !set("CBOB_DEST_CONTAINER") && !set("CBOB_DEST_BUCKET") {
                require("CBOB_DEST_CONTAINER", "the blob container", problems);
            }
            match (set("CBOB_DEST_AZURE_KEY"), set("CBOB_DEST_AZURE_SAS")) {
                (false, false) => problems.push(ConfigProblem::error(
                    "CBOB_DEST_AZURE_KEY".to_string(),
                    Origin::Unset,
                    "an Azure destination needs a shared key or a SAS token",
                    "set CBOB_DEST_AZURE_KEY (account key) or CBOB_DEST_AZURE_SAS (SAS token)",
                )),
                (true, true) => problems.push(ConfigProblem::error(
                    "CBOB_DEST_AZURE_SAS".to_string(),
                    origin("CBOB_DEST_AZURE_SAS"),
                    "both CBOB_DEST_AZURE_KEY and CBOB_DEST_AZURE_SAS are set; cbob would have to guess which to use",
                    "unset one of them",
                )),
                _ => {}
            }
        }
    }
    if matches!(kind, DestKind::S3 | DestKind::Minio)
        && set("CBOB_DEST_ACCESS_KEY") != set("CBOB_DEST_SECRET_KEY")
    {
        let (have, missing) = if set("CBOB_DEST_ACCESS_KEY") {
            ("CBOB_DEST_ACCESS_KEY", "CBOB_DEST_SECRET_KEY")
        } else {
            ("CBOB_DEST_SECRET_KEY", "CBOB_DEST_ACCESS_KEY")
        };
        problems.push(ConfigProblem::error(
            missing.to_string(),
            Origin::Unset,
            format!("{have} is set but {missing} is not"),
            "set both, or neither to use the standard AWS credential chain",
        ));
    }
    if set("CBOB_SOURCE_ACCESS_KEY") != set("CBOB_SOURCE_SECRET_KEY") {
        problems.push(ConfigProblem::error(
            "CBOB_SOURCE_SECRET_KEY".to_string(),
            origin("CBOB_SOURCE_ACCESS_KEY"),
            "CBOB_SOURCE_ACCESS_KEY and CBOB_SOURCE_SECRET_KEY must be set together",
            "set both, or neither to use the standard AWS credential chain",
        ));
    }
    let prefix = c.dest.prefix.as_str();
    if prefix.split('/').any(|seg| seg == ".." || seg == ".")
        || prefix.contains(['\\', '\0'])
        || prefix.contains("//")
    {
        problems.push(ConfigProblem::error(
            "CBOB_DEST_PREFIX".to_string(),
            origin("CBOB_DEST_PREFIX"),
            format!(
                "{prefix:?} is not a clean key prefix ('.', '..', '//' and '\\' are not allowed)"
            ),
            "use a plain path such as backups/crunchy",
        ));
    }
    if let Some(path) = &c.dest.gcs_credentials
        && kind == DestKind::Gcs
        && !path.is_file()
    {
        problems.push(ConfigProblem::error(
            "CBOB_DEST_GCS_CREDENTIALS".to_string(),
            origin("CBOB_DEST_GCS_CREDENTIALS"),
            format!("{} is not a readable file", path.display()),
            "point it at the service-account JSON key file",
        ));
    }
    // Settings of another destination type are ignored; say so, the operator probably meant them.
    for k in KEYS
        .iter()
        .filter(|k| k.env.starts_with("CBOB_DEST_") && k.env != "CBOB_DEST_TYPE")
    {
        let v = c.resolved.get(k.env).expect("every key is resolved");
        if v.raw.is_some() && v.origin != Origin::Default && !dest_key_applies(kind, k.env) {
            problems.push(ConfigProblem::warning(
                k.env.to_string(),
                v.origin.clone(),
                format!(
                    "ignored: it does not apply to CBOB_DEST_TYPE={}",
                    kind.as_str()
                ),
                "remove it, or set CBOB_DEST_TYPE to the destination it belongs to",
            ));
        }
    }
    let both: Vec<&String> = c
        .crunchy
        .clusters
        .iter()
        .filter(|id| c.crunchy.ignore_clusters.contains(id))
        .collect();
    if !both.is_empty() {
        problems.push(ConfigProblem::warning(
            "CBOB_IGNORE_CLUSTERS".to_string(),
            origin("CBOB_IGNORE_CLUSTERS"),
            format!(
                "{} also listed in CBOB_CRUNCHY_CLUSTERS; an explicit list is synced as given",
                both.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "remove the id from one of the two lists",
        ));
    }
    let email = &c.notify.email;
    if email.smtp_server.is_some() == email.mail_to.is_empty() {
        let missing = if email.smtp_server.is_some() {
            "PGBACKREST_AUTO_MAIL_TO"
        } else {
            "PGBACKREST_AUTO_SMTP_SERVER"
        };
        problems.push(ConfigProblem::error(
            missing.to_string(),
            Origin::Unset,
            "restore-check email needs both PGBACKREST_AUTO_SMTP_SERVER and PGBACKREST_AUTO_MAIL_TO",
            format!("set {missing}, or unset the other to send no email"),
        ));
    }
    if email.smtp_password.is_some() && email.smtp_username.is_none() {
        problems.push(ConfigProblem::error(
            "CBOB_SMTP_USERNAME".to_string(),
            Origin::Unset,
            "CBOB_SMTP_PASSWORD is set without CBOB_SMTP_USERNAME",
            "set CBOB_SMTP_USERNAME to the SMTP login",
        ));
    }
}

/// Which `CBOB_DEST_*` keys a destination type reads.
fn dest_key_applies(kind: DestKind, env: &str) -> bool {
    let object_store = ["CBOB_DEST_ENDPOINT", "CBOB_DEST_PREFIX"];
    match kind {
        DestKind::Local => false,
        DestKind::S3 | DestKind::Minio => {
            object_store.contains(&env)
                || matches!(
                    env,
                    "CBOB_DEST_BUCKET"
                        | "CBOB_DEST_REGION"
                        | "CBOB_DEST_ACCESS_KEY"
                        | "CBOB_DEST_SECRET_KEY"
                )
        }
        DestKind::Azure => {
            object_store.contains(&env)
                || matches!(
                    env,
                    "CBOB_DEST_AZURE_ACCOUNT"
                        | "CBOB_DEST_AZURE_KEY"
                        | "CBOB_DEST_AZURE_SAS"
                        | "CBOB_DEST_CONTAINER"
                        | "CBOB_DEST_BUCKET"
                )
        }
        DestKind::Gcs => {
            object_store.contains(&env)
                || matches!(env, "CBOB_DEST_BUCKET" | "CBOB_DEST_GCS_CREDENTIALS")
        }
    }
}
