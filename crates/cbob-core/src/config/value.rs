//! Turning a key's text into a typed value, per [`KeyType`]. Error messages quote the value
//! only for keys that are not secret.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::keys::{KeyDef, KeyType};

/// A bandwidth limit in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRate(pub u64);

impl ByteRate {
    pub fn bytes_per_second(self) -> u64 {
        self.0
    }

    /// Parses `10MB/s`, `500KiB/s`, `1.5G`, `1048576`; `Ok(None)` for `0`, `unlimited`, `none`, `off`.
    /// `K`, `M`, `G`, `T` (with or without `B`) are powers of 1000; `Ki`, `Mi`, `Gi`, `Ti` of 1024.
    pub fn parse(text: &str) -> Result<Option<ByteRate>, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if matches!(lower.as_str(), "unlimited" | "none" | "off") {
            return Ok(None);
        }
        let body = lower.strip_suffix("/s").unwrap_or(&lower).trim_end();
        let split = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, unit) = body.split_at(split);
        let bad =
            || format!("{text:?} is not a byte rate; write e.g. 10MB/s, 500KiB/s or unlimited");
        let number: f64 = number.parse().map_err(|_| bad())?;
        let multiplier: f64 = match unit.trim() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "ki" | "kib" => 1024.0,
            "mi" | "mib" => 1024.0 * 1024.0,
            "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "ti" | "tib" => 1024.0_f64.powi(4),
            _ => return Err(bad()),
        };
        let bytes = (number * multiplier).round();
        if bytes == 0.0 {
            return Ok(None);
        }
        if !(1.0..=u64::MAX as f64).contains(&bytes) {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(Some(ByteRate(bytes as u64)))
    }
}

/// `10.0 MB/s`-style, exact when the rate is a whole number of a unit.
impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: &[(u64, &str)] = &[
            (1 << 40, "TiB"),
            (1_000_000_000_000, "TB"),
            (1 << 30, "GiB"),
            (1_000_000_000, "GB"),
            (1 << 20, "MiB"),
            (1_000_000, "MB"),
            (1 << 10, "KiB"),
            (1_000, "KB"),
        ];
        match UNITS
            .iter()
            .find(|(size, _)| self.0 >= *size && self.0.is_multiple_of(*size))
        {
            Some((size, unit)) => write!(f, "{}{unit}/s", self.0 / size),
            None => write!(f, "{}B/s", self.0),
        }
    }
}

/// A key's value after parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    Text(String),
    Path(PathBuf),
    Bool(bool),
    Integer(i64),
    Duration(Duration),
    /// `None` means unlimited.
    ByteRate(Option<ByteRate>),
    List(Vec<String>),
    Url(Url),
}

/// Parses a (non-empty) raw value as its key's type.
pub fn parse_value(key: &KeyDef, raw: &str) -> Result<TypedValue, String> {
    let shown = if key.secret {
        "the value".to_string()
    } else {
        format!("{raw:?}")
    };
    let raw = raw.trim();
    match key.ty {
        KeyType::String => Ok(TypedValue::Text(raw.to_string())),
        KeyType::Path { absolute } => {
            let path = PathBuf::from(raw);
            if absolute && !path.is_absolute() {
                let tilde = if raw.starts_with('~') {
                    " (~ is not expanded)"
                } else {
                    ""
                };
                return Err(format!("{shown} is not an absolute path{tilde}"));
            }
            Ok(TypedValue::Path(path))
        }
        KeyType::Bool => parse_bool(raw)
            .map(TypedValue::Bool)
            .ok_or_else(|| format!("{shown} is not a boolean; use true or false")),
        KeyType::Integer { min, max } => {
            let n: i64 = raw
                .parse()
                .map_err(|_| format!("{shown} is not a whole number"))?;
            if n < min {
                Err(format!("{n} is too small: must be at least {min}"))
            } else if n > max {
                Err(format!("{n} is too large: must be at most {max}"))
            } else {
                Ok(TypedValue::Integer(n))
            }
        }
        KeyType::Duration => parse_seconds(raw).map(TypedValue::Duration).ok_or_else(|| {
            format!("{shown} is not a duration; use seconds such as 5, 0.5, 500ms or 2m")
        }),
        KeyType::ByteRate => ByteRate::parse(raw).map(TypedValue::ByteRate),
        KeyType::List => Ok(TypedValue::List(split_list(raw))),
        KeyType::ClusterIds => {
            let ids = split_list(raw);
            let bad: Vec<&str> = ids
                .iter()
                .map(String::as_str)
                .filter(|id| !is_cluster_id(id))
                .collect();
            if bad.is_empty() {
                Ok(TypedValue::List(ids))
            } else {
                Err(format!(
                    "invalid cluster id{} {}: Crunchy Bridge ids are lowercase letters and digits",
                    if bad.len() == 1 { "" } else { "s" },
                    bad.iter()
                        .map(|b| format!("{b:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        KeyType::Url => {
            let url = Url::parse(raw).map_err(|e| format!("{shown} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty)
            {
                return Err(format!(
                    "{shown} must be an http:// or https:// URL with a host"
                ));
            }
            Ok(TypedValue::Url(url))
        }
        KeyType::Enum(words) => {
            let lower = raw.to_ascii_lowercase();
            // The bash tool accepted `warning` for the log level.
            let lower = if lower == "warning" && words.contains(&"warn") {
                "warn".to_string()
            } else {
                lower
            };
            if words.contains(&lower.as_str()) {
                Ok(TypedValue::Text(lower))
            } else {
                Err(format!("{shown} is not one of {}", words.join(", ")))
            }
        }
        KeyType::Cron => crate::daemon::Schedule::parse(raw)
            .map(|_| TypedValue::Text(raw.to_string()))
            .map_err(|why| format!("{shown} is not a cron expression: {why}")),
    }
}

/// `true|false|yes|no|on|off|1|0`, any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Seconds, optionally with a unit: `5`, `0.5`, `500ms`, `2s`, `1m`, `1h`.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Comma-separated, trimmed, empty items and repeats dropped, order kept.
pub fn split_list(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o == item) {
            out.push(item.to_string());
        }
    }
    out
}

/// Crunchy Bridge cluster ids are lowercase letters and digits.
pub fn is_cluster_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::by_env;

    #[test]
    fn byte_rates() {
        let r = |t| ByteRate::parse(t).unwrap().map(|r| r.0);
        assert_eq!(r("10MB/s"), Some(10_000_000));
        assert_eq!(r("500KiB/s"), Some(512_000));
        assert_eq!(r("1.5G"), Some(1_500_000_000));
        assert_eq!(r("2 MiB/s"), Some(2 * 1024 * 1024));
        assert_eq!(r("1048576"), Some(1_048_576));
        assert_eq!(r("unlimited"), None);
        assert_eq!(r("0"), None);
        for bad in ["fast", "10XB/s", "-5MB/s", "MB/s", "1..2M"] {
            assert!(ByteRate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteRate(10_000_000).to_string(), "10MB/s");
        assert_eq!(ByteRate(512_000).to_string(), "500KiB/s");
        assert_eq!(ByteRate(1001).to_string(), "1001B/s");
    }

    #[test]
    fn durations_bools_lists() {
        assert_eq!(parse_seconds("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_seconds("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("soon"), None);
        assert_eq!(parse_bool("YES"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(split_list(" a, b,,a ,c "), vec!["a", "b", "c"]);
    }

    #[test]
    fn typed_values() {
        let k = |n| by_env(n).unwrap();
        assert_eq!(
            parse_value(k("CBOB_TRANSFERS"), "8"),
            Ok(TypedValue::Integer(8))
        );
        assert!(
            parse_value(k("CBOB_TRANSFERS"), "0")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(parse_value(k("CBOB_TRANSFERS"), "-3").is_err());
        assert_eq!(
            parse_value(k("CBOB_LOG_LEVEL"), "WARNING"),
            Ok(TypedValue::Text("warn".into()))
        );
        assert!(parse_value(k("CBOB_LOG_LEVEL"), "loud").is_err());
        assert!(parse_value(k("CBOB_TARGET_PATH"), "rel/dir").is_err());
        assert!(
            parse_value(k("CBOB_TARGET_PATH"), "~/x")
                .unwrap_err()
                .contains("not expanded")
        );
        assert!(
            parse_value(k("CBOB_CRUNCHY_CLUSTERS"), "abc123,Bad-Id")
                .unwrap_err()
                .contains("\"Bad-Id\"")
        );
        assert_eq!(
            parse_value(k("CBOB_CRUNCHY_CLUSTERS"), "abc, def"),
            Ok(TypedValue::List(vec!["abc".into(), "def".into()]))
        );
        assert!(parse_value(k("CBOB_CRUNCHY_API_URL"), "ftp://x").is_err());
        // Secret values are never quoted in messages.
        let e = parse_value(k("CBOB_SYNC_HEARTBEAT_URL"), "not a url tok3n").unwrap_err();
        assert!(!e.contains("tok3n"), "{e}");
    }
}
