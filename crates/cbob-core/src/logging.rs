//! Logging setup (SPEC §7): tracing to stderr as text (people) or JSON lines (machines: RFC 3339
//! timestamps, fields at the top level), plus `cbob.log` under `CBOB_LOG_PATH` when set.
//!
//! Secrets stay out of logs because every secret is a [`crate::Secret`], which prints as `***`;
//! nothing here filters text.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::{EnvFilter, Layer};

/// The log file written under `CBOB_LOG_PATH`.
pub const LOG_FILE_NAME: &str = "cbob.log";

/// `CBOB_LOG_LEVEL` / `--log-level`, least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            other => {
                return Err(format!(
                    "unknown log level {other:?}; use error, warn, info, debug or trace"
                ));
            }
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CBOB_LOG_FORMAT` / `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`init`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Directory for [`LOG_FILE_NAME`]; `None` for stderr only.
    pub dir: Option<PathBuf>,
    /// `-q`: stderr shows warnings and errors only; the log file keeps `level`.
    pub quiet: bool,
}

impl LogSettings {
    pub fn from_config(log: &crate::config::LogConfig) -> Self {
        Self {
            level: log.level,
            format: log.format,
            dir: log.path.clone(),
            quiet: false,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
            dir: None,
            quiet: false,
        }
    }
}

/// Setting up logging failed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot create log directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open log file {path}: {source}")]
    OpenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

impl LoggingError {
    /// The I/O error behind it, if any (to tell permission problems apart).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            LoggingError::CreateDir { source, .. } | LoggingError::OpenFile { source, .. } => {
                Some(source)
            }
            LoggingError::AlreadyInstalled => None,
        }
    }
}

/// Opens (creating the directory and file) `dir/cbob.log` for appending.
pub fn open_log_file(dir: &Path) -> Result<File, LoggingError> {
    std::fs::create_dir_all(dir).map_err(|source| LoggingError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(LOG_FILE_NAME);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| LoggingError::OpenFile { path, source })
}

/// Installs the process-wide subscriber: stderr (colour when it is a terminal and the format is
/// text) plus the log file when `settings.dir` is set.
pub fn init(settings: &LogSettings) -> Result<(), LoggingError> {
    let file = settings
        .dir
        .as_deref()
        .map(open_log_file)
        .transpose()?
        .map(Arc::new);
    let ansi = std::io::stderr().is_terminal();
    let subscriber = build_subscriber(settings, std::io::stderr, file, ansi);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadyInstalled)
}

/// The subscriber [`init`] installs, writing to the given writers; tests pass buffers.
pub fn build_subscriber<E, F>(
    settings: &LogSettings,
    stderr: E,
    file: Option<F>,
    ansi: bool,
) -> impl Subscriber + Send + Sync
where
    E: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    F: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let stderr_level = if settings.quiet {
        settings.level.min(LogLevel::Warn)
    } else {
        settings.level
    };
    let mut layers = vec![fmt_layer(settings.format, stderr, ansi, stderr_level)];
    if let Some(file) = file {
        layers.push(fmt_layer(settings.format, file, false, settings.level));
    }
    Registry::default().with(layers)
}

/// cbob's own crates log at `level`; dependencies (HTTP clients, SDKs) at most at `warn`, so
/// `--log-level debug` shows cbob's decisions rather than every TCP read.
fn filter(level: LogLevel) -> EnvFilter {
    let deps = level.min(LogLevel::Warn);
    EnvFilter::new(format!("{deps},cbob={level}"))
}

fn fmt_layer<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
    level: LogLevel,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => base
            .with_ansi(ansi)
            .with_target(level >= LogLevel::Debug)
            .with_filter(filter(level))
            .boxed(),
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter(level))
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::{self, ConfigSources};

    /// Collects log output in memory.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    const SECRETS: &[(&str, &str)] = &[
        ("CBOB_CRUNCHY_API_KEY", "cbkey_SECRET_api_0001"),
        ("CBOB_DEST_ACCESS_KEY", "AKIA_SECRET_access_0002"),
        ("CBOB_DEST_SECRET_KEY", "SECRET_dest_secret_0003"),
        ("CBOB_SOURCE_ACCESS_KEY", "SECRET_source_access_0004"),
        ("CBOB_SOURCE_SECRET_KEY", "SECRET_source_secret_0005"),
        ("CBOB_SLACK_CLI_TOKEN", "xoxb-SECRET-slack-0006"),
        (
            "CBOB_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/SECRET0007",
        ),
        ("CBOB_SYNC_HEARTBEAT_URL", "https://hc-ping.com/SECRET-0008"),
        (
            "CBOB_RESTORE_HEARTBEAT_URL",
            "https://hc-ping.com/SECRET-0009",
        ),
        ("CBOB_SMTP_PASSWORD", "SECRET_smtp_0010"),
    ];

    fn config_with_secrets(dir: &Path) -> config::Config {
        let mut sources = ConfigSources::isolated(dir)
            .with_env("CBOB_DEST_TYPE", "s3")
            .with_env("CBOB_DEST_BUCKET", "bkt")
            .with_env("CBOB_SMTP_USERNAME", "mailer");
        for (k, v) in SECRETS {
            sources = sources.with_env(k, v);
        }
        config::load(&sources).expect("valid configuration")
    }

    fn log_everything(config: &config::Config) {
        tracing::trace!(?config, "configuration loaded");
        tracing::debug!(config = %format!("{config:#?}"), "pretty");
        tracing::info!(dest = ?config.destination_spec(), src = ?config.source_spec("s3://b/p").unwrap(), "specs");
        tracing::warn!(api_key = %config.crunchy.api_key.as_ref().unwrap(), "display of a secret");
        for v in &config.resolved.values {
            tracing::trace!(key = v.key.env, value = ?v, "resolved");
        }
        let text = config::render(&config.resolved, config::RenderFormat::Json, false);
        tracing::debug!(%text, "rendered");
    }

    fn assert_clean(output: &str) {
        assert!(output.contains("***"), "secrets should show as ***");
        for (key, secret) in SECRETS {
            assert!(
                !output.contains(secret),
                "{key} leaked into the log:\n{output}"
            );
        }
    }

    #[test]
    fn no_secret_in_text_or_json_logs_at_trace() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with_secrets(dir.path());
        for format in [LogFormat::Text, LogFormat::Json] {
            let (stderr, file) = (Buffer::default(), Buffer::default());
            let settings = LogSettings {
                level: LogLevel::Trace,
                format,
                ..LogSettings::default()
            };
            let subscriber = build_subscriber(&settings, stderr.clone(), Some(file.clone()), false);
            tracing::subscriber::with_default(subscriber, || log_everything(&config));
            let out = stderr.text();
            assert!(out.contains("configuration loaded"), "{out}");
            assert_clean(&out);
            assert_clean(&file.text());
            if format == LogFormat::Json {
                for line in out.lines() {
                    let v: serde_json::Value =
                        serde_json::from_str(line).expect("each line is JSON");
                    let ts = v["timestamp"].as_str().expect("timestamp");
                    chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
                    assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
                }
            }
        }
    }

    #[test]
    fn levels_quiet_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("logs/nested");
        let file = Arc::new(open_log_file(&log_dir).unwrap());
        let stderr = Buffer::default();
        let settings = LogSettings {
            level: LogLevel::Info,
            format: LogFormat::Text,
            dir: Some(log_dir.clone()),
            quiet: true,
        };
        let subscriber = build_subscriber(&settings, stderr.clone(), Some(file), false);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("hidden everywhere");
            tracing::info!("file only");
            tracing::warn!("both");
        });
        let written = std::fs::read_to_string(log_dir.join(LOG_FILE_NAME)).unwrap();
        assert!(
            written.contains("file only")
                && written.contains("both")
                && !written.contains("hidden")
        );
        let shown = stderr.text();
        assert!(
            shown.contains("both") && !shown.contains("file only"),
            "{shown}"
        );
        // Appends rather than truncates.
        drop(open_log_file(&log_dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(log_dir.join(LOG_FILE_NAME)).unwrap(),
            written
        );
    }

    #[test]
    fn parses_levels_and_formats() {
        assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert!("loud".parse::<LogLevel>().is_err());
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!(LogLevel::Error < LogLevel::Trace);
    }
}
