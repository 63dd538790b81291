//! What a restore-check found, per stanza and step, and how it is shown: text for people,
//! JSON for scripts (stable, documented in docs/restore-check.md), HTML for a report directory.

use std::path::PathBuf;

use serde::Serialize;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One step of one stanza's check.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// `inspect`, `prepare`, `stage`, `restore`, `wal-archive`, `start`, `recover`,
    /// `recovery-end`, `databases`, `amcheck`, `pg_dump`, `sql`, `stop`, `checksums`, `cleanup`.
    pub name: String,
    pub status: StepStatus,
    pub duration_seconds: f64,
    /// What the step did or found (also for failures: what it got to).
    pub detail: String,
    pub error: Option<String>,
}

/// The backup that was restored.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRef {
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Labels whose files it needs, itself last.
    pub chain: Vec<String>,
    /// When the backup finished (RFC 3339, UTC).
    pub stopped_at: Option<String>,
    /// Database size, bytes.
    pub size: u64,
    /// First and last WAL segment it needs to be consistent.
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
}

/// How pgBackRest reached the repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryAccess {
    /// `in-place` (a local destination the PostgreSQL user can read) or `staged` (the needed
    /// files copied through the storage provider into the private work directory).
    pub mode: String,
    pub files: u64,
    pub bytes: u64,
}

/// What recovery did and whether it reached the end of the archive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    /// `end of archive` or `time <timestamp>`.
    pub target: String,
    /// The newest WAL segment in the archive on the recovery path (from the listing).
    pub archive_max: Option<String>,
    /// WAL segments between the backup and `archive_max` missing from the archive.
    pub missing_segments: Vec<String>,
    /// The last segment recovery replayed (from the new timeline's history switch point).
    pub end_segment: Option<String>,
    /// `end_segment` is `archive_max` (end-of-archive recovery), or the target was reached.
    pub reached: Option<bool>,
    /// The timeline the server promoted to.
    pub timeline: Option<u32>,
    /// PostgreSQL's reason for the switch (`no recovery target specified`, `before <time>`).
    pub reason: Option<String>,
    /// WAL files and history files restored from the archive (server log).
    pub wal_restored: u64,
}

/// An index amcheck found corrupt.
#[derive(Debug, Clone, Serialize)]
pub struct AmcheckFailure {
    pub database: String,
    pub index: String,
    pub error: String,
}

/// One `pg_dump` to nowhere.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    pub database: String,
    pub bytes: u64,
    pub error: Option<String>,
}

/// One stanza's restore-check.
#[derive(Debug, Clone, Serialize)]
pub struct StanzaReport {
    pub stanza: String,
    pub ok: bool,
    /// The first step that failed.
    pub failed_step: Option<String>,
    /// Its error.
    pub error: Option<String>,
    /// A required program is missing (exit code 5 when that is the only kind of failure).
    pub missing_program: bool,
    pub interrupted: bool,
    pub pg_version: Option<String>,
    pub backup: Option<BackupRef>,
    pub repository: Option<RepositoryAccess>,
    pub recovery: RecoveryReport,
    /// Databases that accept connections, all reached.
    pub databases: Vec<String>,
    pub indexes_checked: u64,
    pub amcheck_failures: Vec<AmcheckFailure>,
    pub dumps: Vec<DumpReport>,
    /// `true`/`false` when checked; `None` when the cluster has no data checksums or the step
    /// did not run.
    pub checksums_ok: Option<bool>,
    pub steps: Vec<StepReport>,
    pub duration_seconds: f64,
    /// Server and pgBackRest logs kept because the check failed.
    pub logs: Vec<PathBuf>,
}

impl StanzaReport {
    pub fn new(stanza: &str) -> Self {
        Self {
            stanza: stanza.to_string(),
            ok: false,
            failed_step: None,
            error: None,
            missing_program: false,
            interrupted: false,
            pg_version: None,
            backup: None,
            repository: None,
            recovery: RecoveryReport::default(),
            databases: Vec::new(),
            indexes_checked: 0,
            amcheck_failures: Vec::new(),
            dumps: Vec::new(),
            checksums_ok: None,
            steps: Vec::new(),
            duration_seconds: 0.0,
            logs: Vec::new(),
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The names of the steps that failed, in order.
    pub fn failed_steps(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// A whole restore-check run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub ok: bool,
    pub dry_run: bool,
    pub destination: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_seconds: f64,
    pub pgbackrest_version: Option<String>,
    pub stanzas: Vec<StanzaReport>,
    /// A failure before any stanza could be checked (e.g. nothing to check).
    pub fatal: Option<String>,
    /// Where the reports of this run were written.
    pub report_files: Vec<PathBuf>,
}

impl RunReport {
    pub fn failed(&self) -> usize {
        self.stanzas.iter().filter(|s| !s.ok).count()
    }

    /// Failed only because programs are missing (exit code 5 rather than 1).
    pub fn only_missing_programs(&self) -> bool {
        self.fatal.is_none()
            && self.failed() > 0
            && self
                .stanzas
                .iter()
                .filter(|s| !s.ok)
                .all(|s| s.missing_program)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(f) = &self.fatal {
            out.push_str(&format!("✗ restore-check failed: {f}\n"));
        }
        for s in &self.stanzas {
            out.push_str(&stanza_headline(s, self.dry_run));
            out.push('\n');
            for step in &s.steps {
                out.push_str(&format!(
                    "    {:<13} {:<8} {:>7.2}s  {}\n",
                    step.name,
                    step.status.as_str(),
                    step.duration_seconds,
                    one_line(&step.detail, 110)
                ));
                if let Some(e) = &step.error {
                    for line in e.lines().take(12) {
                        out.push_str(&format!("        {line}\n"));
                    }
                }
            }
            for log in &s.logs {
                out.push_str(&format!("    log kept: {}\n", log.display()));
            }
        }
        let n = self.stanzas.len();
        out.push_str(&format!(
            "restore-check{}: {} of {n} stanza{} ok in {:.1}s (destination {}){}\n",
            if self.dry_run { " (dry run)" } else { "" },
            n - self.failed(),
            if n == 1 { "" } else { "s" },
            self.duration_seconds,
            self.destination,
            if self.failed() > 0 {
                format!(", {} FAILED", self.failed())
            } else {
                String::new()
            }
        ));
        for f in &self.report_files {
            out.push_str(&format!("report: {}\n", f.display()));
        }
        out
    }

    pub fn to_html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cbob restore-check</title>\n<style>\
             body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}\
             td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
             .ok{color:#070}.failed{color:#b00;font-weight:bold}.skipped{color:#777}pre{margin:0;white-space:pre-wrap}\
             </style></head><body>\n",
        );
        out.push_str(&format!(
            "<h1>cbob restore-check</h1>\n<p>Destination {} &middot; started {} &middot; {:.1}s &middot; {} of {} stanzas ok</p>\n",
            esc(&self.destination),
            esc(&self.started_at),
            self.duration_seconds,
            self.stanzas.len() - self.failed(),
            self.stanzas.len()
        ));
        if let Some(f) = &self.fatal {
            out.push_str(&format!("<p class=\"failed\">{}</p>\n", esc(f)));
        }
        for s in &self.stanzas {
            out.push_str(&format!(
                "<h2 class=\"{}\">{} {}</h2>\n<p>{}</p>\n<table><tr><th>step</th><th>status</th><th>seconds</th><th>detail</th></tr>\n",
                if s.ok { "ok" } else { "failed" },
                if s.ok { "&#10003;" } else { "&#10007;" },
                esc(&s.stanza),
                esc(&stanza_headline(s, self.dry_run))
            ));
            for step in &s.steps {
                let class = match step.status {
                    StepStatus::Ok => "ok",
                    StepStatus::Failed => "failed",
                    StepStatus::Skipped => "skipped",
                };
                out.push_str(&format!(
                    "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{:.2}</td><td>{}{}</td></tr>\n",
                    esc(&step.name),
                    step.status.as_str(),
                    step.duration_seconds,
                    esc(&step.detail),
                    step.error
                        .as_ref()
                        .map(|e| format!("<pre class=\"failed\">{}</pre>", esc(e)))
                        .unwrap_or_default()
                ));
            }
            out.push_str("</table>\n");
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn stanza_headline(s: &StanzaReport, dry_run: bool) -> String {
    let backup = s
        .backup
        .as_ref()
        .map(|b| {
            format!(
                "backup {} ({}{})",
                b.label,
                b.kind,
                s.pg_version
                    .as_ref()
                    .map(|v| format!(", PostgreSQL {v}"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "no backup chosen".into());
    if dry_run && s.ok {
        return format!("✓ {}: would restore {backup}", s.stanza);
    }
    if s.ok {
        let end = match (&s.recovery.end_segment, &s.recovery.archive_max) {
            (Some(e), Some(m)) if e == m => format!("recovered to the newest archived WAL {e}"),
            (Some(e), _) => format!("recovered to {e} ({})", s.recovery.target),
            _ => "recovered".into(),
        };
        let mut facts = vec![
            format!("{} databases", s.databases.len()),
            format!("{} indexes checked", s.indexes_checked),
            format!("{} dumps", s.dumps.len()),
        ];
        if let Some(c) = s.checksums_ok {
            facts.push(if c {
                "checksums ok".into()
            } else {
                "checksum errors".into()
            });
        }
        format!(
            "✓ {}: {backup} restored and {end}; {} ({:.1}s)",
            s.stanza,
            facts.join(", "),
            s.duration_seconds
        )
    } else {
        format!(
            "✗ {}: FAILED at {}: {} [{backup}] ({:.1}s)",
            s.stanza,
            s.failed_step.as_deref().unwrap_or("?"),
            one_line(s.error.as_deref().unwrap_or("unknown error"), 300),
            s.duration_seconds
        )
    }
}

fn one_line(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() > max {
        format!("{}…", first.chars().take(max).collect::<String>())
    } else if s.lines().nth(1).is_some() {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_and_text_names_the_failed_step() {
        let mut s = StanzaReport::new("abc<1>");
        s.failed_step = Some("recovery-end".into());
        s.error = Some("recovery stopped early".into());
        s.steps.push(StepReport {
            name: "recovery-end".into(),
            status: StepStatus::Failed,
            duration_seconds: 0.01,
            detail: String::new(),
            error: Some("recovery stopped early".into()),
        });
        let r = RunReport {
            ok: false,
            dry_run: false,
            destination: "local:/x".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_seconds: 1.0,
            pgbackrest_version: None,
            stanzas: vec![s],
            fatal: None,
            report_files: vec![],
        };
        assert!(r.to_html().contains("abc&lt;1&gt;"));
        let text = r.to_text();
        assert!(
            text.contains("FAILED at recovery-end: recovery stopped early"),
            "{text}"
        );
        assert!(text.contains("1 FAILED"), "{text}");
        assert!(!r.only_missing_programs());
    }
}
