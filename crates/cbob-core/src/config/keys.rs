//! The one table of configuration keys. Every source (TOML, env-file, environment, flags), the
//! validation, `config show`/`get` and docs/configuration.md are driven by [`KEYS`].
//!
//! TOML paths follow one rule: drop `CBOB_`, lower-case, and when the name starts with one of the
//! group words (`crunchy`, `dest`, `source`, `log`, `slack`, `retry`, `smtp`, `notify`, `schedule`,
//! `daemon`) that word becomes a table: `CBOB_DEST_BUCKET` is `[dest] bucket`. `PGBACKREST_AUTO_X` is `[pgbackrest_auto] x`.

/// How a key's value is parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    String,
    /// A filesystem path; `absolute` paths are required where a relative one would depend on
    /// the directory cron happens to start in.
    Path {
        absolute: bool,
    },
    /// `true|false|yes|no|on|off|1|0`, any case.
    Bool,
    /// A whole number within `min..=max`.
    Integer {
        min: i64,
        max: i64,
    },
    /// Seconds: `5`, `0.5`, or with a unit `500ms`, `2s`, `1m`, `1h`.
    Duration,
    /// Bytes per second: `10MB/s`, `500KiB/s`, `1G`; `0` or `unlimited` for no limit.
    ByteRate,
    /// Comma-separated values (a TOML array also works).
    List,
    /// Comma-separated Crunchy Bridge cluster ids (lowercase letters and digits).
    ClusterIds,
    /// An `http://` or `https://` URL.
    Url,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// A cron expression (5 fields, or 6 with seconds first; `@daily` and friends), for `cbob daemon`.
    Cron,
}

impl KeyType {
    /// How the type is named in messages and docs.
    pub fn describe(&self) -> String {
        match self {
            KeyType::String => "string".into(),
            KeyType::Path { absolute: true } => "absolute path".into(),
            KeyType::Path { absolute: false } => "path".into(),
            KeyType::Bool => "boolean (true/false)".into(),
            KeyType::Integer { min, max } => format!("integer {min}..{max}"),
            KeyType::Duration => "seconds (e.g. 5, 0.5, 500ms, 2m)".into(),
            KeyType::ByteRate => "byte rate (e.g. 10MB/s, 500KiB/s)".into(),
            KeyType::List => "comma-separated list".into(),
            KeyType::ClusterIds => "comma-separated cluster ids".into(),
            KeyType::Url => "http(s) URL".into(),
            KeyType::Enum(words) => format!("one of {}", words.join(", ")),
            KeyType::Cron => "cron expression (e.g. 30 3 * * *)".into(),
        }
    }

    pub fn is_list(&self) -> bool {
        matches!(self, KeyType::List | KeyType::ClusterIds)
    }
}

/// A key's value when no source sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Unset.
    None,
    /// A fixed value, parsed like any other.
    Static(&'static str),
    /// Computed from the environment or other keys; the text says how (for docs and `config show`).
    Derived(&'static str),
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    /// Environment and env-file name, e.g. `CBOB_DEST_BUCKET`.
    pub env: &'static str,
    /// Dotted TOML path, e.g. `dest.bucket`.
    pub toml: &'static str,
    pub ty: KeyType,
    /// Printed as `***` unless the operator asks for `--unmask`.
    pub secret: bool,
    pub default: DefaultValue,
    /// One line for docs and `config show`.
    pub help: &'static str,
}

pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
pub const LOG_FORMATS: &[&str] = &["text", "json"];
pub const DEST_TYPES: &[&str] = &["local", "s3", "minio", "azure", "gcs"];
pub const HEARTBEAT_STYLES: &[&str] = &["healthchecks", "cronitor"];
pub const SMTP_TLS_MODES: &[&str] = &["starttls", "tls", "none"];

/// The variable naming the TOML file; not a setting itself, so not in [`KEYS`].
pub const CONFIG_FILE_ENV: &str = "CBOB_CONFIG_FILE";

const fn key(
    env: &'static str,
    toml: &'static str,
    ty: KeyType,
    secret: bool,
    default: DefaultValue,
    help: &'static str,
) -> KeyDef {
    KeyDef {
        env,
        toml,
        ty,
        secret,
        default,
        help,
    }
}

pub use table::KEYS;

// A module of its own so the glob import of the type names cannot shadow `String` elsewhere.
mod table {
    use super::DefaultValue::{Derived, None as Unset, Static};
    use super::KeyType::*;
    use super::{
        DEST_TYPES, HEARTBEAT_STYLES, KeyDef, KeyType, LOG_FORMATS, LOG_LEVELS, SMTP_TLS_MODES, key,
    };

    const ABS: KeyType = Path { absolute: true };

    /// Every key cbob reads, in the order `config show` prints them.
    #[rustfmt::skip]
    pub static KEYS: &[KeyDef] = &[
        // Crunchy Bridge
        key("CBOB_CRUNCHY_API_KEY", "crunchy.api_key", String, true, Unset, "Crunchy Bridge API key; required for Crunchy Bridge sources"),
        key("CBOB_CRUNCHY_API_URL", "crunchy.api_url", Url, false, Static("https://api.crunchybridge.com"), "base URL of the Crunchy Bridge API"),
        key("CBOB_CRUNCHY_CLUSTERS", "crunchy.clusters", ClusterIds, false, Unset, "cluster ids to sync instead of discovering every primary cluster"),
        key("CBOB_IGNORE_CLUSTERS", "ignore_clusters", ClusterIds, false, Unset, "cluster ids never synced by discovery"),
        // Local paths
        key("CBOB_BASE_PATH", "base_path", ABS, false, Derived("/var/lib/cbob as root, else $XDG_DATA_HOME/cbob (~/.local/share/cbob)"), "cbob's own data: state database, locks, reports, metrics"),
        key("CBOB_TARGET_PATH", "target_path", ABS, false, Derived("$CBOB_BASE_PATH/backups"), "local destination repository root (CBOB_DEST_TYPE=local)"),
        key("CBOB_REPLICATION_CONFIG", "replication_config", ABS, false, Derived("$CBOB_BASE_PATH/config/replication.yaml"), "replication YAML file"),
        // Logging and run behaviour
        key("CBOB_LOG_PATH", "log.path", ABS, false, Unset, "directory for cbob.log (unset: stderr only)"),
        key("CBOB_LOG_LEVEL", "log.level", Enum(LOG_LEVELS), false, Static("info"), "log level"),
        key("CBOB_LOG_FORMAT", "log.format", Enum(LOG_FORMATS), false, Static("text"), "log format: text for people, json lines for machines"),
        key("CBOB_DRY_RUN", "dry_run", Bool, false, Static("false"), "plan and print, write nothing (same as --dry-run)"),
        key("CBOB_NO_LOCK", "no_lock", Bool, false, Static("false"), "do not take the run lock (same as --no-lock)"),
        // Destination
        key("CBOB_DEST_TYPE", "dest.type", Enum(DEST_TYPES), false, Static("local"), "destination kind"),
        key("CBOB_DEST_ENDPOINT", "dest.endpoint", Url, false, Unset, "object-store endpoint (S3-compatible, MinIO, Azurite, GCS emulator)"),
        key("CBOB_DEST_BUCKET", "dest.bucket", String, false, Unset, "destination bucket (s3, minio, gcs)"),
        key("CBOB_DEST_PREFIX", "dest.prefix", String, false, Unset, "key prefix inside the destination bucket or container"),
        key("CBOB_DEST_REGION", "dest.region", String, false, Static("us-east-1"), "destination region (s3, minio)"),
        key("CBOB_DEST_ACCESS_KEY", "dest.access_key", String, true, Unset, "destination access key id (s3, minio); else the standard AWS chain"),
        key("CBOB_DEST_SECRET_KEY", "dest.secret_key", String, true, Unset, "destination secret access key (s3, minio)"),
        key("CBOB_DEST_AZURE_ACCOUNT", "dest.azure_account", String, false, Unset, "Azure storage account (azure)"),
        key("CBOB_DEST_AZURE_KEY", "dest.azure_key", String, true, Unset, "Azure storage account shared key (azure)"),
        key("CBOB_DEST_AZURE_SAS", "dest.azure_sas", String, true, Unset, "Azure SAS token, instead of the shared key (azure)"),
        key("CBOB_DEST_CONTAINER", "dest.container", String, false, Unset, "Azure blob container (azure)"),
        key("CBOB_DEST_GCS_CREDENTIALS", "dest.gcs_credentials", ABS, false, Unset, "service-account JSON file (gcs); else GOOGLE_APPLICATION_CREDENTIALS"),
        // Sources other than Crunchy Bridge, and the store a backup token points at
        key("CBOB_SOURCE_ENDPOINT", "source.endpoint", Url, false, Unset, "endpoint override for the source object store (path-style addressing)"),
        key("CBOB_SOURCE_ACCESS_KEY", "source.access_key", String, true, Unset, "access key id of a --source s3:// or minio:// repository"),
        key("CBOB_SOURCE_SECRET_KEY", "source.secret_key", String, true, Unset, "secret access key of a --source s3:// or minio:// repository"),
        key("CBOB_SOURCE_REGION", "source.region", String, false, Unset, "region of a --source s3:// or minio:// repository"),
        key("CBOB_SOURCE_AZURE_KEY", "source.azure_key", String, true, Unset, "storage account shared key of a --source azure:// repository"),
        key("CBOB_SOURCE_AZURE_SAS", "source.azure_sas", String, true, Unset, "SAS token of a --source azure:// repository, instead of the shared key"),
        key("CBOB_SOURCE_GCS_CREDENTIALS", "source.gcs_credentials", ABS, false, Unset, "service-account JSON file of a --source gcs:// repository; else GOOGLE_APPLICATION_CREDENTIALS"),
        // Transfers
        key("CBOB_TRANSFERS", "transfers", Integer { min: 1, max: 1024 }, false, Static("16"), "object transfers in flight at once, per run"),
        key("CBOB_PARALLEL", "parallel", Integer { min: 1, max: 256 }, false, Static("2"), "clusters synced at once"),
        key("CBOB_BANDWIDTH", "bandwidth", ByteRate, false, Unset, "total bandwidth cap, e.g. 10MB/s or 500KiB/s (unset: unlimited)"),
        key("CBOB_RETRY_COUNT", "retry.count", Integer { min: 0, max: 100 }, false, Static("5"), "retries per operation after the first attempt"),
        key("CBOB_RETRY_DELAY", "retry.delay", Duration, false, Static("1"), "first retry delay in seconds (doubles, with jitter)"),
        // Retention
        key("CBOB_RETENTION_FULL", "retention_full", Integer { min: 1, max: 9_999_999 }, false, Unset, "full backups kept by `cbob expire` (unset: pgBackRest's rule)"),
        // Notifications
        key("CBOB_SYNC_HEARTBEAT_URL", "sync_heartbeat_url", Url, true, Unset, "heartbeat URL pinged by sync (embeds a token)"),
        key("CBOB_RESTORE_HEARTBEAT_URL", "restore_heartbeat_url", Url, true, Unset, "heartbeat URL pinged by restore-check (embeds a token)"),
        key("CBOB_SLACK_CLI_TOKEN", "slack.cli_token", String, true, Unset, "Slack bot token (chat.postMessage)"),
        key("CBOB_SLACK_CHANNEL", "slack.channel", String, false, Static("#general"), "Slack channel for the bot token"),
        key("CBOB_SLACK_WEBHOOK_URL", "slack.webhook_url", Url, true, Unset, "Slack incoming webhook URL"),
        key("PGBACKREST_AUTO_SMTP_SERVER", "pgbackrest_auto.smtp_server", String, false, Unset, "SMTP server (host or host:port) for restore-check reports"),
        key("PGBACKREST_AUTO_MAIL_FROM", "pgbackrest_auto.mail_from", String, false, Unset, "sender address of restore-check reports"),
        key("PGBACKREST_AUTO_MAIL_TO", "pgbackrest_auto.mail_to", List, false, Unset, "recipients of restore-check reports, comma-separated"),
        key("PGBACKREST_AUTO_ATTACH_REPORT", "pgbackrest_auto.attach_report", Bool, false, Static("true"), "attach the report to the email"),
        key("CBOB_SMTP_USERNAME", "smtp.username", String, false, Unset, "SMTP login, when the server needs one"),
        key("CBOB_SMTP_PASSWORD", "smtp.password", String, true, Unset, "SMTP password"),
        key("CBOB_SMTP_TLS", "smtp.tls", Enum(SMTP_TLS_MODES), false, Static("starttls"), "SMTP security: starttls (required), tls (implicit TLS, port 465) or none (a local relay)"),
        key("CBOB_SMTP_CA_FILE", "smtp.ca_file", ABS, false, Unset, "PEM file of extra root certificates trusted for the SMTP server"),
        key("CBOB_HEARTBEAT_STYLE", "heartbeat_style", Enum(HEARTBEAT_STYLES), false, Static("healthchecks"), "heartbeat protocol: healthchecks (/start, /fail) or cronitor (?state=run|complete|fail)"),
        key("CBOB_SLACK_API_URL", "slack.api_url", Url, false, Static("https://slack.com/api"), "Slack Web API base URL used with the bot token"),
        key("CBOB_WEBHOOK_URL", "webhook_url", Url, true, Unset, "generic webhook: every event is POSTed to it as JSON"),
        key("CBOB_NOTIFY_EVENTS", "notify.events", List, false, Static("succeeded,failed"), "events sent to Slack and the webhook: started, succeeded, failed"),
        key("CBOB_NOTIFY_TIMEOUT", "notify.timeout", Duration, false, Static("10"), "time allowed to deliver one event to one notifier, retries included"),
        // Daemon
        key("CBOB_SCHEDULE_SYNC", "schedule.sync", Cron, false, Unset, "when `cbob daemon` runs `cbob sync`"),
        key("CBOB_SCHEDULE_RESTORE_CHECK", "schedule.restore_check", Cron, false, Unset, "when `cbob daemon` runs `cbob restore-check`"),
        key("CBOB_SCHEDULE_VERIFY", "schedule.verify", Cron, false, Unset, "when `cbob daemon` runs `cbob verify`"),
        key("CBOB_SCHEDULE_EXPIRE", "schedule.expire", Cron, false, Unset, "when `cbob daemon` runs `cbob expire --force`"),
        key("CBOB_SCHEDULE_REPLICATE", "schedule.replicate", Cron, false, Unset, "when `cbob daemon` runs `cbob replicate sync`"),
        key("CBOB_SCHEDULE_JITTER", "schedule.jitter", Duration, false, Static("0"), "random delay of up to this long added to every scheduled run"),
        key("CBOB_DAEMON_LISTEN", "daemon.listen", String, false, Static("127.0.0.1:9750"), "loopback address where `cbob daemon` serves /metrics and /healthz (`off`: none)"),
        key("CBOB_DAEMON_GRACE", "daemon.grace", Duration, false, Static("60"), "on SIGTERM, how long `cbob daemon` lets running jobs finish before stopping them"),
        // Programs
        key("CBOB_PG_BIN_DIR", "pg_bin_dir", ABS, false, Unset, "PostgreSQL binaries directory (unset: from the stanza's version, then PATH)"),
        key("CBOB_PGBACKREST_BIN", "pgbackrest_bin", Path { absolute: false }, false, Unset, "pgBackRest program (unset: pgbackrest on PATH)"),
        // restore-check
        key("CBOB_RESTORE_CHECK_SQL", "restore_check_sql", ABS, false, Unset, "SQL file restore-check runs with psql against every restored cluster; an error fails the check"),
    ];
}

/// Keys the bash tool read that mean nothing to cbob: accepted, with a warning saying why.
pub static LEGACY_KEYS: &[(&str, &str)] = &[
    (
        "CBOB_PG_VERSION",
        "cbob reads the PostgreSQL version from each stanza; set CBOB_PG_BIN_DIR to pin the binaries",
    ),
    (
        "CBOB_SYNC_BATCH_SIZE",
        "cbob streams every object; there are no batches",
    ),
    (
        "CBOB_SYNC_LARGE_THRESHOLD",
        "cbob streams every object; there are no batches",
    ),
    ("CBOB_REPO_CACHE", "cbob keeps no repository cache"),
    (
        "CBOB_RESTORES_PATH",
        "restore-check works under CBOB_BASE_PATH",
    ),
    (
        "CBOB_METRICS_FILE",
        "metrics are written to $CBOB_BASE_PATH/metrics/cbob.prom",
    ),
    (
        "CBOB_METRICS_HISTORY",
        "run history lives in $CBOB_BASE_PATH/state.db",
    ),
    ("CBOB_AUDIT_LOG", "audit lines go to the normal log"),
    (
        "CBOB_REPLICATION_STATE",
        "replication state lives in $CBOB_BASE_PATH/state.db",
    ),
    (
        "CBOB_REPLICATION_BANDWIDTH",
        "use settings.bandwidth_limit in the replication YAML",
    ),
    (
        "CBOB_NONINTERACTIVE",
        "it belonged to the bash setup script",
    ),
    ("CBOB_LOCK_FILE", "locks live under $CBOB_BASE_PATH/locks"),
    ("CBOB_SYNC_PARALLEL", "use CBOB_PARALLEL"),
    (
        "CBOB_RESTORE_PARALLEL",
        "use `cbob restore-check --parallel`",
    ),
    ("CBOB_SYNC_BANDWIDTH", "use CBOB_BANDWIDTH"),
];

/// The key with this environment name.
pub fn by_env(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.env == name)
}

/// The key with this dotted TOML path.
pub fn by_toml(path: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.toml == path)
}

/// The key named either way (`CBOB_DEST_BUCKET`, `dest.bucket`); environment names in any case.
pub fn lookup(name: &str) -> Option<&'static KeyDef> {
    by_env(&name.to_ascii_uppercase()).or_else(|| by_toml(name))
}

/// Why a bash-era key is ignored, if it is one.
pub fn legacy_reason(name: &str) -> Option<&'static str> {
    LEGACY_KEYS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, why)| *why)
}

/// Whether an environment variable name is in cbob's namespace.
pub fn is_cbob_name(name: &str) -> bool {
    name.starts_with("CBOB_") || name.starts_with("PGBACKREST_AUTO_")
}

/// The closest known name to a misspelt one, for "did you mean".
pub fn suggest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong_lc = wrong.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&wrong_lc, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &[&str] = &[
        "crunchy", "dest", "source", "log", "slack", "retry", "smtp", "notify", "schedule",
        "daemon",
    ];

    /// The documented naming rule holds for every key, so nobody has to look TOML paths up.
    #[test]
    fn toml_paths_follow_the_rule() {
        for k in KEYS {
            let expected = if let Some(rest) = k.env.strip_prefix("PGBACKREST_AUTO_") {
                format!("pgbackrest_auto.{}", rest.to_ascii_lowercase())
            } else {
                let bare = k.env.strip_prefix("CBOB_").unwrap().to_ascii_lowercase();
                match bare.split_once('_') {
                    Some((group, rest)) if GROUPS.contains(&group) => format!("{group}.{rest}"),
                    _ => bare,
                }
            };
            assert_eq!(k.toml, expected, "{}", k.env);
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert_ne!(a.env, b.env);
                assert_ne!(a.toml, b.toml);
            }
            assert!(
                legacy_reason(a.env).is_none(),
                "{} is both current and legacy",
                a.env
            );
        }
    }

    #[test]
    fn spec_keys_present() {
        for name in [
            "CBOB_CRUNCHY_API_KEY",
            "CBOB_CRUNCHY_API_URL",
            "CBOB_SOURCE_ENDPOINT",
            "CBOB_TRANSFERS",
            "CBOB_PARALLEL",
            "CBOB_BANDWIDTH",
            "CBOB_DEST_GCS_CREDENTIALS",
            "PGBACKREST_AUTO_ATTACH_REPORT",
            "CBOB_PGBACKREST_BIN",
        ] {
            assert!(by_env(name).is_some(), "{name}");
        }
        assert!(by_env("CBOB_DEST_ACCESS_KEY").unwrap().secret);
        assert_eq!(lookup("dest.bucket").unwrap().env, "CBOB_DEST_BUCKET");
        assert_eq!(lookup("cbob_dest_bucket").unwrap().env, "CBOB_DEST_BUCKET");
    }

    /// docs/configuration.md documents every key, by both names.
    #[test]
    fn documented() {
        let doc = include_str!("../../../../docs/configuration.md");
        for k in KEYS {
            assert!(
                doc.contains(&format!("| `{}` | `{}` |", k.env, k.toml)),
                "{} missing from docs",
                k.env
            );
        }
    }

    #[test]
    fn suggests_close_names() {
        let envs = KEYS.iter().map(|k| k.env);
        assert_eq!(suggest("CBOB_DEST_BUKET", envs), Some("CBOB_DEST_BUCKET"));
        assert_eq!(
            suggest("CBOB_WHATEVER_ELSE", KEYS.iter().map(|k| k.env)),
            None
        );
        assert_eq!(
            suggest("dest.bukcet", KEYS.iter().map(|k| k.toml)),
            Some("dest.bucket")
        );
    }
}
