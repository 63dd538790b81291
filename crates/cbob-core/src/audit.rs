//! The audit log: one JSON line per run and per destructive action (expire, prune), appended to
//! `$CBOB_BASE_PATH/audit.log`. Lines are written with a single `write` on an `O_APPEND` file, so
//! concurrent runs never interleave within a line. Nothing secret is ever passed here.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Appends audit lines to one file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The audit log under a base path.
    pub fn in_base(base: &Path) -> Self {
        Self {
            path: base.join("audit.log"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"ts", "pid", "command", "action", ...fields}`. Failures are logged, never fatal:
    /// an unwritable audit log must not stop a backup.
    pub fn record(&self, command: &str, action: &str, fields: Value) {
        let mut line = json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "pid": std::process::id(),
            "command": command,
            "action": action,
        });
        if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        let result = (|| {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&self.path)?;
            f.write_all(text.as_bytes())
        })();
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::in_base(dir.path());
        log.record("sync", "run", json!({"result": "success", "files": 3}));
        log.record(
            "sync",
            "prune-backup",
            json!({"stanza": "abc", "label": "20261124-000000F"}),
        );
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["action"], "run");
        assert_eq!(lines[0]["files"], 3);
        assert_eq!(lines[1]["label"], "20261124-000000F");
        assert!(lines[1]["ts"].as_str().unwrap().ends_with('Z'));
    }
}
