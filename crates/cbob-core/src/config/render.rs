//! `cbob config show` output: text for people, JSON for scripts (stable, documented in
//! docs/configuration.md), env for shells. Secrets print as `***` unless `unmask`.

use std::fmt::Write as _;

use serde_json::{Map, Value as Json, json};

use super::keys::KeyType;
use super::problem::Origin;
use super::sources::{Resolved, ResolvedValue};
use super::value::{TypedValue, parse_value};

/// Version of the JSON document; bumped only on incompatible changes.
pub const JSON_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderFormat {
    /// `KEY = value  # origin`, aligned.
    Text,
    /// One JSON object (see docs/configuration.md).
    Json,
    /// `export KEY='value'` lines for a POSIX shell; unset keys are left out.
    Env,
}

/// Renders every key of `resolved`.
pub fn render(resolved: &Resolved, format: RenderFormat, unmask: bool) -> String {
    match format {
        RenderFormat::Text => text(resolved, unmask),
        RenderFormat::Json => {
            let mut s = serde_json::to_string_pretty(&json_document(resolved, unmask))
                .expect("JSON values serialize");
            s.push('\n');
            s
        }
        RenderFormat::Env => env(resolved, unmask),
    }
}

fn files_line(resolved: &Resolved) -> String {
    let show = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or("none".to_string(), |p| p.display().to_string())
    };
    format!(
        "# TOML file: {}; env-file: {}",
        show(&resolved.toml_file),
        show(&resolved.env_file)
    )
}

fn text(resolved: &Resolved, unmask: bool) -> String {
    let width = resolved
        .values
        .iter()
        .map(|v| v.key.env.len())
        .max()
        .unwrap_or(0);
    let mut out = files_line(resolved);
    out.push('\n');
    for v in &resolved.values {
        let value = v.display_value(unmask).unwrap_or_default();
        let _ = writeln!(out, "{:width$} = {value}  # {}", v.key.env, v.origin);
    }
    out
}

fn env(resolved: &Resolved, unmask: bool) -> String {
    let mut out = files_line(resolved);
    out.push('\n');
    for v in &resolved.values {
        if let Some(value) = v.display_value(unmask) {
            let _ = writeln!(out, "export {}={}", v.key.env, shell_quote(&value));
        }
    }
    out
}

/// Single-quotes a value for a POSIX shell: nothing inside single quotes is special except `'`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn origin_kind(origin: &Origin) -> &'static str {
    match origin {
        Origin::Default | Origin::Derived(_) => "default",
        Origin::TomlFile(_) => "toml",
        Origin::EnvFile { .. } => "env-file",
        Origin::Environment => "environment",
        Origin::Flag(_) => "flag",
        Origin::Unset => "unset",
    }
}

/// The JSON value of a key: typed (number, boolean, array) where the type says so.
fn json_value(v: &ResolvedValue, unmask: bool) -> Json {
    let Some(raw) = v.raw.as_deref() else {
        return Json::Null;
    };
    if v.key.secret && !unmask {
        return Json::String(crate::secret::MASK.into());
    }
    match (v.key.ty, parse_value(v.key, raw)) {
        (_, Ok(TypedValue::Bool(b))) => Json::Bool(b),
        (_, Ok(TypedValue::Integer(n))) => json!(n),
        // Seconds: an integer when whole, so `1` stays `1` rather than `1.0`.
        (_, Ok(TypedValue::Duration(d))) if d.subsec_nanos() == 0 => json!(d.as_secs()),
        (_, Ok(TypedValue::Duration(d))) => json!(d.as_secs_f64()),
        (_, Ok(TypedValue::List(items))) => json!(items),
        (KeyType::Enum(_), Ok(TypedValue::Text(t))) => Json::String(t),
        // Everything else (and a value that does not parse) as written.
        _ => Json::String(raw.to_string()),
    }
}

fn json_document(resolved: &Resolved, unmask: bool) -> Json {
    let mut settings = Map::new();
    for v in &resolved.values {
        settings.insert(
            v.key.env.to_string(),
            json!({
                "toml": v.key.toml,
                "value": json_value(v, unmask),
                "secret": v.key.secret,
                "origin": v.origin.to_string(),
                "origin_kind": origin_kind(&v.origin),
            }),
        );
    }
    json!({
        "format_version": JSON_FORMAT_VERSION,
        "files": {
            "toml": resolved.toml_file.as_ref().map(|p| p.display().to_string()),
            "env_file": resolved.env_file.as_ref().map(|p| p.display().to_string()),
        },
        "settings": settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(
            shell_quote("it's $HOME `x` \"q\""),
            r#"'it'\''s $HOME `x` "q"'"#
        );
        assert_eq!(shell_quote(""), "''");
    }
}
