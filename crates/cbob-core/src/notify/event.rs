//! What a notification says: one [`Event`] per run start and end, the same for every notifier.
//! The text is plain, bounded in length, and holds no link and no secret (the [`super::Notifiers`]
//! set scrubs every configured secret and every http(s) URL before anything is sent).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Started,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        self != Phase::Started
    }
}

/// The result of one cluster, stanza or replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Cluster id, stanza or replica name.
    pub name: String,
    pub stanza: Option<String>,
    pub ok: bool,
    /// One line: what was done, or the error.
    pub detail: String,
}

/// A file sent along by email (the restore-check report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// e.g. `text/plain`, `application/json`, `text/html`.
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A run started or ended. Commands build one with [`Event::started`] or [`Event::finished`] and
/// hand it to [`super::Notifiers::send`].
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The `cbob` subcommand: `sync`, `restore-check`, `verify`, `expire`, `replicate`.
    pub command: String,
    pub phase: Phase,
    /// The host cbob runs on.
    pub host: String,
    /// The destination (or repository) the run works on, as `describe()` prints it.
    pub destination: String,
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// Set on finished events.
    pub duration_seconds: Option<f64>,
    /// One line, e.g. `2 of 3 clusters ok, 120 files (1.2 GiB) copied`.
    pub summary: String,
    pub items: Vec<Item>,
    /// Sent by email only; never part of the JSON.
    #[serde(skip)]
    pub attachments: Vec<Attachment>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Items shown in a message; the rest are counted. Keeps chat messages readable and bounded.
const MAX_ITEMS: usize = 40;
/// Characters of one item's detail shown in a message.
const MAX_DETAIL: usize = 300;

impl Event {
    /// A run of `command` on `destination` has started.
    pub fn started(command: &str, destination: &str) -> Self {
        Self {
            command: command.to_string(),
            phase: Phase::Started,
            host: hostname(),
            destination: destination.to_string(),
            at: Utc::now(),
            duration_seconds: None,
            summary: format!("{command} started"),
            items: Vec::new(),
            attachments: Vec::new(),
        }
    }

    /// A run has ended; `ok` is the run's own verdict (the one its exit code reports).
    pub fn finished(
        command: &str,
        destination: &str,
        ok: bool,
        summary: impl Into<String>,
        items: Vec<Item>,
        duration: Duration,
    ) -> Self {
        Self {
            phase: if ok { Phase::Succeeded } else { Phase::Failed },
            duration_seconds: Some(duration.as_secs_f64()),
            summary: summary.into(),
            items,
            ..Self::started(command, destination)
        }
    }

    /// Adds a file for the email notifier (e.g. the restore-check report).
    pub fn with_attachment(mut self, attachment: Attachment) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// `cbob sync failed on backup-host`
    pub fn title(&self) -> String {
        format!(
            "cbob {} {} on {}",
            self.command,
            self.phase.as_str(),
            self.host
        )
    }

    /// The message body: title, destination, summary, one line per item.
    pub fn text(&self) -> String {
        let mut out = self.title();
        out.push('\n');
        out.push_str(&format!("destination: {}\n", self.destination));
        out.push_str(&self.summary);
        if let Some(d) = self.duration_seconds {
            out.push_str(&format!(" ({d:.1}s)"));
        }
        out.push('\n');
        // Failures first: they are what the reader needs.
        let mut items: Vec<&Item> = self.items.iter().filter(|i| !i.ok).collect();
        items.extend(self.items.iter().filter(|i| i.ok));
        for item in items.iter().take(MAX_ITEMS) {
            let stanza = match &item.stanza {
                Some(s) if s != &item.name => format!(" (stanza {s})"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{} {}{stanza}: {}\n",
                if item.ok { "✓" } else { "✗" },
                item.name,
                truncate(&item.detail, MAX_DETAIL)
            ));
        }
        if items.len() > MAX_ITEMS {
            out.push_str(&format!("… and {} more\n", items.len() - MAX_ITEMS));
        }
        out
    }

    /// The same event with every string passed through `f` (used to scrub secrets and links).
    pub(crate) fn map_text(&self, f: impl Fn(&str) -> String) -> Self {
        Self {
            command: self.command.clone(),
            phase: self.phase,
            host: f(&self.host),
            destination: f(&self.destination),
            at: self.at,
            duration_seconds: self.duration_seconds,
            summary: f(&self.summary),
            items: self
                .items
                .iter()
                .map(|i| Item {
                    name: f(&i.name),
                    stanza: i.stanza.as_deref().map(&f),
                    ok: i.ok,
                    detail: f(&i.detail),
                })
                .collect(),
            attachments: self.attachments.clone(),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// The host name (`gethostname(2)`), or `unknown-host`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "unknown-host".into()
    } else {
        name
    }
}

/// Replaces every `secret` occurring in `text` with `***`, and every http(s) URL with
/// `[link removed]`: error messages quote URLs (endpoints, presigned requests) that may embed
/// tokens, and a notification is no place for links.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), crate::secret::MASK);
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    loop {
        let at = ["http://", "https://"]
            .iter()
            .filter_map(|p| rest.to_ascii_lowercase().find(p))
            .min();
        let Some(at) = at else {
            result.push_str(rest);
            break;
        };
        result.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .unwrap_or(tail.len());
        result.push_str("[link removed]");
        rest = &tail[end..];
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_failures_first_and_is_bounded() {
        let mut items: Vec<Item> = (0..50)
            .map(|i| Item {
                name: format!("c{i}"),
                stanza: Some(format!("c{i}")),
                ok: true,
                detail: "12 files copied".into(),
            })
            .collect();
        items.push(Item {
            name: "bad1".into(),
            stanza: Some("st1".into()),
            ok: false,
            detail: format!("HTTP 403\n{}", "x".repeat(1000)),
        });
        let e = Event::finished(
            "sync",
            "local:/d",
            false,
            "1 of 51 failed",
            items,
            Duration::from_secs(3),
        );
        let text = e.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("cbob sync failed on "), "{text}");
        assert_eq!(lines[1], "destination: local:/d");
        assert_eq!(lines[2], "1 of 51 failed (3.0s)");
        assert!(
            lines[3].starts_with("✗ bad1 (stanza st1): HTTP 403 xxx"),
            "{}",
            lines[3]
        );
        assert!(lines[3].chars().count() < 340);
        assert_eq!(lines.last().unwrap(), &"… and 11 more");
    }

    #[test]
    fn scrub_removes_secrets_and_links() {
        let secrets = vec!["s3cr3t-token".to_string(), "ab".to_string()];
        let t = scrub(
            "failed: https://hooks.example/T/B/s3cr3t-token?x=1 said no; key s3cr3t-token (HTTP://X.Y)",
            &secrets,
        );
        assert_eq!(
            t,
            "failed: [link removed] said no; key *** ([link removed])"
        );
        // Too-short "secrets" are not replaced everywhere (they would garble the text).
        assert!(t.contains("said"));
        assert_eq!(scrub("s3://bucket/prefix", &secrets), "s3://bucket/prefix");
    }

    #[test]
    fn json_shape() {
        let e = Event::started("verify", "s3://b/p");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["command"], "verify");
        assert_eq!(v["phase"], "started");
        assert!(v["at"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("attachments").is_none());
        assert!(!hostname().is_empty());
    }
}
