//! A generic JSON webhook (`CBOB_WEBHOOK_URL`): every event the configured phases include is
//! POSTed as one JSON object (schema in docs/notifications.md; `schema` is bumped on any
//! incompatible change). The URL is a secret: it usually embeds a token.

use async_trait::async_trait;
use url::Url;

use super::http::{check_status, client, reachable, transport};
use super::slack::wanted;
use super::{Event, Notifier, NotifyError};
use crate::secret::Secret;

/// The version of the JSON document.
pub const SCHEMA: u32 = 1;

/// The JSON body for an event: the event's fields plus `schema`, `title` and `text`.
pub fn payload(event: &Event) -> serde_json::Value {
    let mut v = serde_json::to_value(event).expect("events serialize");
    if let Some(obj) = v.as_object_mut() {
        obj.insert("schema".into(), SCHEMA.into());
        obj.insert("title".into(), event.title().into());
        obj.insert("text".into(), event.text().into());
    }
    v
}

pub struct Webhook {
    url: Secret,
    phases: Vec<String>,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(url: Secret, phases: &[String]) -> Self {
        Self {
            url,
            phases: phases.to_vec(),
            http: client(),
        }
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn name(&self) -> String {
        "webhook".into()
    }

    fn accepts(&self, event: &Event) -> bool {
        wanted(&self.phases, event)
    }

    async fn send(&self, event: &Event) -> Result<(), NotifyError> {
        let resp = self
            .http
            .post(self.url.expose())
            .json(&payload(event))
            .send()
            .await
            .map_err(|e| transport("webhook", e))?;
        check_status("webhook", resp).await.map(drop)
    }

    /// Connects to the host only: a test POST would look like a real event to the receiver.
    async fn check(&self) -> Result<(), NotifyError> {
        let url = Url::parse(self.url.expose())
            .map_err(|_| NotifyError::permanent("webhook: not a URL"))?;
        reachable("webhook", &url).await
    }
}
