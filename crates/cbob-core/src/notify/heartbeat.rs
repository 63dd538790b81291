//! Heartbeat URLs (`CBOB_SYNC_HEARTBEAT_URL`, `CBOB_RESTORE_HEARTBEAT_URL`): a dead man's switch
//! that alerts when a run fails or does not happen at all.
//!
//! - Healthchecks.io style (default): `POST <url>/start` when the run starts, `POST <url>` when
//!   it succeeds, `POST <url>/fail` when it fails; the body is the event text (Healthchecks
//!   keeps it as the ping's log).
//! - Cronitor style (`CBOB_HEARTBEAT_STYLE=cronitor`): `GET <url>?state=run|complete|fail`.
//!
//! A URL that already has a query (`?create=1`, `?rid=...`) keeps it: the suffix goes into the
//! path, the state into the query (the bash tool appended `?state=fail` to any URL). Unlike the
//! bash tool, cbob pings on failure too (it pinged success after failed runs) and never for a
//! dry run or an estimate.

use async_trait::async_trait;
use url::Url;

use super::http::{check_status, client, reachable, transport};
use super::{Event, Notifier, NotifyError, Phase};
use crate::secret::Secret;

/// The heartbeat protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Healthchecks,
    Cronitor,
}

impl Style {
    /// `cronitor`, else Healthchecks (the configuration only allows these two words).
    pub fn from_name(name: &str) -> Self {
        if name.eq_ignore_ascii_case("cronitor") {
            Style::Cronitor
        } else {
            Style::Healthchecks
        }
    }
}

/// The URL to ping for a phase. `Err` only for a URL that cannot take a path (never for the
/// http(s) URLs the configuration accepts).
pub fn ping_url(base: &str, style: Style, phase: Phase) -> Result<Url, NotifyError> {
    let mut url = Url::parse(base)
        .map_err(|_| NotifyError::permanent("heartbeat: the URL does not parse"))?;
    match style {
        Style::Healthchecks => {
            let suffix = match phase {
                Phase::Started => Some("start"),
                Phase::Succeeded => None,
                Phase::Failed => Some("fail"),
            };
            if let Some(suffix) = suffix {
                let mut segments = url
                    .path_segments_mut()
                    .map_err(|_| NotifyError::permanent("heartbeat: the URL cannot take a path"))?;
                segments.pop_if_empty().push(suffix);
            }
        }
        Style::Cronitor => {
            let state = match phase {
                Phase::Started => "run",
                Phase::Succeeded => "complete",
                Phase::Failed => "fail",
            };
            // Replace a state the operator may have left in the URL, keep every other parameter.
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "state")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut q = url.query_pairs_mut();
            q.clear();
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            q.append_pair("state", state);
        }
    }
    Ok(url)
}

/// Pings one heartbeat URL for one command's runs.
pub struct Heartbeat {
    url: Secret,
    command: String,
    style: Style,
    http: reqwest::Client,
}

impl Heartbeat {
    /// A heartbeat for the runs of `command` (`sync`, `restore-check`).
    pub fn new(url: Secret, command: &str, style: Style) -> Self {
        Self {
            url,
            command: command.to_string(),
            style,
            http: client(),
        }
    }
}

#[async_trait]
impl Notifier for Heartbeat {
    fn name(&self) -> String {
        format!("heartbeat:{}", self.command)
    }

    fn accepts(&self, event: &Event) -> bool {
        event.command == self.command
    }

    async fn send(&self, event: &Event) -> Result<(), NotifyError> {
        let url = ping_url(self.url.expose(), self.style, event.phase)?;
        let request = match self.style {
            Style::Healthchecks => self
                .http
                .post(url)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(event.text()),
            Style::Cronitor => self.http.get(url),
        };
        let resp = request
            .send()
            .await
            .map_err(|e| transport("heartbeat", e))?;
        check_status("heartbeat", resp).await.map(drop)
    }

    /// Connects to the host only: any request to a heartbeat URL counts as a ping.
    async fn check(&self) -> Result<(), NotifyError> {
        let url = Url::parse(self.url.expose())
            .map_err(|_| NotifyError::permanent("heartbeat: the URL does not parse"))?;
        reachable("heartbeat", &url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(base: &str, style: Style, phase: Phase) -> String {
        ping_url(base, style, phase).unwrap().to_string()
    }

    #[test]
    fn healthchecks_paths_keep_the_query() {
        let hc = Style::Healthchecks;
        let b = "https://hc-ping.com/5f1c-uuid";
        assert_eq!(
            url(b, hc, Phase::Started),
            "https://hc-ping.com/5f1c-uuid/start"
        );
        assert_eq!(
            url(b, hc, Phase::Succeeded),
            "https://hc-ping.com/5f1c-uuid"
        );
        assert_eq!(
            url(b, hc, Phase::Failed),
            "https://hc-ping.com/5f1c-uuid/fail"
        );
        let q = "https://hc-ping.com/ping-key/cbob-sync?create=1";
        assert_eq!(
            url(q, hc, Phase::Started),
            "https://hc-ping.com/ping-key/cbob-sync/start?create=1"
        );
        assert_eq!(
            url(q, hc, Phase::Failed),
            "https://hc-ping.com/ping-key/cbob-sync/fail?create=1"
        );
        assert_eq!(url(q, hc, Phase::Succeeded), q);
        // A trailing slash does not make an empty segment.
        assert_eq!(
            url("http://h:8000/ping/u/", hc, Phase::Failed),
            "http://h:8000/ping/u/fail"
        );
    }

    #[test]
    fn cronitor_states_join_an_existing_query() {
        let c = Style::Cronitor;
        let b = "https://cronitor.link/p/key/cbob-sync";
        assert_eq!(url(b, c, Phase::Started), format!("{b}?state=run"));
        assert_eq!(url(b, c, Phase::Succeeded), format!("{b}?state=complete"));
        assert_eq!(url(b, c, Phase::Failed), format!("{b}?state=fail"));
        let q = "https://cronitor.link/p/key/x?env=prod&state=old";
        assert_eq!(
            url(q, c, Phase::Failed),
            "https://cronitor.link/p/key/x?env=prod&state=fail"
        );
    }
}
