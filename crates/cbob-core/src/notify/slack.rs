//! Slack: an incoming webhook (`CBOB_SLACK_WEBHOOK_URL`), or a bot token with a channel
//! (`CBOB_SLACK_CLI_TOKEN`, `CBOB_SLACK_CHANNEL`) through `chat.postMessage`. The bash tool pasted
//! the text into JSON by hand (multi-line messages were invalid); here serde builds the payload,
//! and the token travels in the `Authorization` header, never in the body or the URL.

use async_trait::async_trait;
use serde_json::json;
use url::Url;

use super::http::{check_status, client, reachable, transport};
use super::{Event, Notifier, NotifyError, Phase};
use crate::secret::Secret;

/// Slack treats `&`, `<` and `>` as control characters in message text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Whether the configured phases (`CBOB_NOTIFY_EVENTS`) include this event's.
pub(crate) fn wanted(phases: &[String], event: &Event) -> bool {
    phases.iter().any(|p| p == event.phase.as_str())
}

fn emoji(phase: Phase) -> &'static str {
    match phase {
        Phase::Started => ":arrows_counterclockwise:",
        Phase::Succeeded => ":white_check_mark:",
        Phase::Failed => ":x:",
    }
}

fn message(event: &Event) -> String {
    format!("{} {}", emoji(event.phase), slack_escape(&event.text()))
}

/// An incoming webhook: `POST {"text": ...}`; Slack answers `ok`.
pub struct SlackWebhook {
    url: Secret,
    phases: Vec<String>,
    http: reqwest::Client,
}

impl SlackWebhook {
    pub fn new(url: Secret, phases: &[String]) -> Self {
        Self {
            url,
            phases: phases.to_vec(),
            http: client(),
        }
    }
}

#[async_trait]
impl Notifier for SlackWebhook {
    fn name(&self) -> String {
        "slack-webhook".into()
    }

    fn accepts(&self, event: &Event) -> bool {
        wanted(&self.phases, event)
    }

    async fn send(&self, event: &Event) -> Result<(), NotifyError> {
        let resp = self
            .http
            .post(self.url.expose())
            .json(&json!({ "text": message(event) }))
            .send()
            .await
            .map_err(|e| transport("Slack webhook", e))?;
        check_status("Slack webhook", resp).await.map(drop)
    }

    /// Connects to the webhook's host: posting anything would show up in the channel.
    async fn check(&self) -> Result<(), NotifyError> {
        let url = Url::parse(self.url.expose())
            .map_err(|_| NotifyError::permanent("Slack webhook: not a URL"))?;
        reachable("Slack webhook", &url).await
    }
}

/// A bot token: `POST {api}/chat.postMessage` with `Authorization: Bearer`. Slack answers 200
/// with `{"ok": false, "error": "..."}` for most failures, which are permanent except rate limits.
pub struct SlackBot {
    token: Secret,
    channel: String,
    api: Url,
    phases: Vec<String>,
    http: reqwest::Client,
}

impl SlackBot {
    /// `api` is the Web API base (`https://slack.com/api`, `CBOB_SLACK_API_URL`).
    pub fn new(token: Secret, channel: &str, api: Url, phases: &[String]) -> Self {
        Self {
            token,
            channel: channel.to_string(),
            api,
            phases: phases.to_vec(),
            http: client(),
        }
    }

    fn method(&self, name: &str) -> String {
        format!("{}/{name}", self.api.as_str().trim_end_matches('/'))
    }

    async fn call(&self, method: &str, body: serde_json::Value) -> Result<(), NotifyError> {
        let what = format!("Slack {method}");
        let resp = self
            .http
            .post(self.method(method))
            .bearer_auth(self.token.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&what, e))?;
        let text = check_status(&what, resp).await?;
        let reply: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| NotifyError::transient(format!("{what}: the answer is not JSON")))?;
        if reply["ok"].as_bool() == Some(true) {
            return Ok(());
        }
        let error = reply["error"].as_str().unwrap_or("unknown error");
        let hint = match error {
            "channel_not_found" => " (check CBOB_SLACK_CHANNEL)",
            "not_in_channel" => " (invite the bot to the channel)",
            "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" => {
                " (check CBOB_SLACK_CLI_TOKEN)"
            }
            _ => "",
        };
        let message = format!("{what}: Slack said {error}{hint}");
        if error == "ratelimited" || error.starts_with("internal_error") {
            Err(NotifyError::transient(message))
        } else {
            Err(NotifyError::permanent(message))
        }
    }
}

#[async_trait]
impl Notifier for SlackBot {
    fn name(&self) -> String {
        "slack".into()
    }

    fn accepts(&self, event: &Event) -> bool {
        wanted(&self.phases, event)
    }

    async fn send(&self, event: &Event) -> Result<(), NotifyError> {
        self.call(
            "chat.postMessage",
            json!({ "channel": self.channel, "text": message(event) }),
        )
        .await
    }

    /// `auth.test` proves the token works without posting anything.
    async fn check(&self) -> Result<(), NotifyError> {
        self.call("auth.test", json!({})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_slack_control_characters() {
        assert_eq!(slack_escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        let e = Event::started("sync", "local:/x");
        assert!(message(&e).starts_with(":arrows_counterclockwise: cbob sync started on "));
    }
}
