//! Notifications (SPEC §8): tell people and monitors when a run starts, succeeds or fails.
//!
//! - [`Event`]: what happened (command, phase, host, destination, per-cluster/stanza items);
//! - [`Notifier`]: one channel — [`slack::SlackWebhook`], [`slack::SlackBot`],
//!   [`heartbeat::Heartbeat`] (Healthchecks.io or Cronitor), [`email::Email`] (SMTP, the
//!   restore-check report attached), [`webhook::Webhook`] (generic JSON);
//! - [`Notifiers`]: every channel the configuration sets up; [`Notifiers::send`] delivers an
//!   event to all of them at once, each within `CBOB_NOTIFY_TIMEOUT` (retries included).
//!
//! A notifier that fails or hangs is logged and never changes the run's result or exit code:
//! `send` returns what happened for each channel and cannot fail. Secrets and links are scrubbed
//! from every event before it leaves. Dry runs send nothing.
//!
//! ```no_run
//! # async fn demo(cfg: &cbob_core::config::Config) {
//! use std::time::Duration;
//! use cbob_core::notify::{Event, Item, Notifiers};
//! let notifiers = Notifiers::from_config(cfg);
//! notifiers.send(&Event::started("verify", "local:/srv/backups")).await;
//! let items = vec![Item { name: "abc123".into(), stanza: None, ok: true, detail: "3 backups ok".into() }];
//! let done = Event::finished("verify", "local:/srv/backups", true, "1 of 1 stanzas ok", items, Duration::from_secs(4));
//! notifiers.send(&done).await;
//! # }
//! ```

pub mod email;
mod event;
pub mod heartbeat;
mod http;
mod replicate_events;
pub mod slack;
mod sync_events;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use event::{Attachment, Event, Item, Phase, hostname, scrub};
pub use replicate_events::{replica_detail, replicate_finished};
pub use sync_events::sync_finished;

use crate::config::Config;

/// Why one delivery attempt failed. The message never holds a secret or a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NotifyError {
    pub message: String,
    /// Worth another attempt (timeouts, connection errors, 429, 5xx).
    pub transient: bool,
}

impl NotifyError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

/// One notification channel.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Short name for logs: `slack-webhook`, `slack`, `heartbeat:sync`, `email`, `webhook`.
    fn name(&self) -> String;

    /// Whether this channel wants the event at all (a heartbeat only its command's, ...).
    fn accepts(&self, event: &Event) -> bool;

    /// One delivery attempt. [`Notifiers`] adds the time limit and the retries.
    async fn send(&self, event: &Event) -> Result<(), NotifyError>;

    /// Whether the channel is reachable, without sending a notification (for
    /// `cbob config validate --check`).
    async fn check(&self) -> Result<(), NotifyError>;
}

/// What happened to one event on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub notifier: String,
    pub ok: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Attempts per event and channel: one try and two retries, all inside the time budget.
const MAX_ATTEMPTS: u32 = 3;

/// Every configured channel, with the time budget and the secrets to scrub.
#[derive(Clone, Default)]
pub struct Notifiers {
    notifiers: Vec<Arc<dyn Notifier>>,
    timeout: Duration,
    secrets: Vec<String>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifiers")
            .field("notifiers", &self.names())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Notifiers {
    /// Every channel the configuration sets up. A dry run (`CBOB_DRY_RUN` / `--dry-run`) gets
    /// none: a plan is not a run, and a heartbeat for it would lie.
    pub fn from_config(config: &Config) -> Self {
        let mut set = Self::new(config.notify.timeout);
        set.secrets = config
            .resolved
            .values
            .iter()
            .filter(|v| v.key.secret)
            .filter_map(|v| v.raw.clone())
            .collect();
        if config.dry_run {
            return set;
        }
        let n = &config.notify;
        if let Some(url) = &n.slack_webhook_url {
            set.push(slack::SlackWebhook::new(url.clone(), &n.events));
        }
        if let Some(token) = &n.slack_token {
            set.push(slack::SlackBot::new(
                token.clone(),
                &n.slack_channel,
                n.slack_api_url.clone(),
                &n.events,
            ));
        }
        let style = heartbeat::Style::from_name(&n.heartbeat_style);
        if let Some(url) = &n.sync_heartbeat_url {
            set.push(heartbeat::Heartbeat::new(url.clone(), "sync", style));
        }
        if let Some(url) = &n.restore_heartbeat_url {
            set.push(heartbeat::Heartbeat::new(
                url.clone(),
                "restore-check",
                style,
            ));
        }
        if let Some(url) = &n.webhook_url {
            set.push(webhook::Webhook::new(url.clone(), &n.events));
        }
        match email::Email::from_config(&n.email) {
            Ok(Some(e)) => set.push(e),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "email notifications are off"),
        }
        set
    }

    /// An empty set with a time budget per event and channel; add channels with [`Self::push`].
    pub fn new(timeout: Duration) -> Self {
        Self {
            notifiers: Vec::new(),
            timeout,
            secrets: Vec::new(),
        }
    }

    pub fn push(&mut self, notifier: impl Notifier + 'static) {
        self.notifiers.push(Arc::new(notifier));
    }

    /// Values to scrub from every event besides the configured secrets.
    pub fn add_secret(&mut self, secret: impl Into<String>) {
        self.secrets.push(secret.into());
    }

    /// The same set without the email channel (for a command that sends email only on request).
    pub fn without_email(mut self) -> Self {
        self.notifiers.retain(|n| n.name() != "email");
        self
    }

    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.notifiers.iter().map(|n| n.name()).collect()
    }

    /// Sends `event` to every channel that accepts it, all at once, each within the time budget
    /// with up to two retries of transient failures. Never fails and never takes longer than the
    /// budget (plus scheduling noise); failures are logged as warnings and returned.
    pub async fn send(&self, event: &Event) -> Vec<Delivery> {
        let event = event.map_text(|t| scrub(t, &self.secrets));
        let targets: Vec<&Arc<dyn Notifier>> = self
            .notifiers
            .iter()
            .filter(|n| n.accepts(&event))
            .collect();
        let deliveries = futures::future::join_all(
            targets
                .into_iter()
                .map(|n| deliver(n.as_ref(), &event, self.timeout)),
        )
        .await;
        for d in &deliveries {
            match &d.error {
                None => {
                    tracing::info!(notifier = %d.notifier, command = %event.command, phase = event.phase.as_str(), attempts = d.attempts, "notification sent")
                }
                Some(e) => {
                    let e = scrub(e, &self.secrets);
                    tracing::warn!(notifier = %d.notifier, command = %event.command, phase = event.phase.as_str(), attempts = d.attempts, error = %e, "notification failed; the run's result is unchanged")
                }
            }
        }
        deliveries
            .into_iter()
            .map(|mut d| {
                d.error = d.error.map(|e| scrub(&e, &self.secrets));
                d
            })
            .collect()
    }

    /// [`Self::send`] for code without a runtime (or inside one): runs on a thread of its own.
    pub fn send_blocking(&self, event: &Event) -> Vec<Delivery> {
        let this = self.clone();
        let event = event.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(this.send(&event)))
                .unwrap_or_default()
        })
        .join()
        .unwrap_or_default()
    }

    /// Checks every channel's reachability (for `config validate --check`): name and result.
    pub async fn check(&self) -> Vec<(String, Result<(), String>)> {
        let checks = self.notifiers.iter().map(|n| async move {
            let r = match tokio::time::timeout(self.timeout, n.check()).await {
                Ok(r) => r.map_err(|e| scrub(&e.message, &self.secrets)),
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            (n.name(), r)
        });
        futures::future::join_all(checks).await
    }
}

/// Delivers to one channel: attempts within the budget, backing off 0.5 s then 1 s between them.
async fn deliver(n: &dyn Notifier, event: &Event, budget: Duration) -> Delivery {
    let deadline = Instant::now() + budget;
    let mut attempts = 0;
    let mut backoff = Duration::from_millis(500);
    let error = loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break format!("no answer within {budget:?}");
        }
        match tokio::time::timeout(remaining, n.send(event)).await {
            Ok(Ok(())) => {
                return Delivery {
                    notifier: n.name(),
                    ok: true,
                    attempts,
                    error: None,
                };
            }
            Ok(Err(e)) if e.transient && attempts < MAX_ATTEMPTS => {
                tracing::debug!(notifier = %n.name(), error = %e.message, "notification attempt failed, retrying");
                let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
                backoff *= 2;
            }
            Ok(Err(e)) => break e.message,
            Err(_) => break format!("no answer within {budget:?} (timed out)"),
        }
    };
    Delivery {
        notifier: n.name(),
        ok: false,
        attempts,
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Flaky {
        calls: Arc<AtomicU32>,
        fail_first: u32,
        transient: bool,
        hang: bool,
    }

    #[async_trait]
    impl Notifier for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }
        fn accepts(&self, _: &Event) -> bool {
            true
        }
        async fn send(&self, _: &Event) -> Result<(), NotifyError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if n < self.fail_first {
                return Err(NotifyError {
                    message: "boom".into(),
                    transient: self.transient,
                });
            }
            Ok(())
        }
        async fn check(&self) -> Result<(), NotifyError> {
            Ok(())
        }
    }

    fn set(fail_first: u32, transient: bool, hang: bool) -> (Notifiers, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let mut n = Notifiers::new(Duration::from_secs(5));
        n.push(Flaky {
            calls: calls.clone(),
            fail_first,
            transient,
            hang,
        });
        (n, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_within_the_budget() {
        let (n, calls) = set(2, true, false);
        let d = n.send(&Event::started("sync", "x")).await;
        assert_eq!(d[0].attempts, 3);
        assert!(d[0].ok);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let (n, calls) = set(5, true, false);
        let d = n.send(&Event::started("sync", "x")).await;
        assert!(!d[0].ok);
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS);

        let (n, calls) = set(5, false, false);
        let d = n.send(&Event::started("sync", "x")).await;
        assert_eq!((d[0].ok, calls.load(Ordering::SeqCst)), (false, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_channel_costs_the_budget_and_no_more() {
        let (n, _) = set(0, true, true);
        let t = tokio::time::Instant::now();
        let d = n.send(&Event::started("sync", "x")).await;
        assert!(!d[0].ok);
        assert!(d[0].error.as_deref().unwrap().contains("timed out"));
        assert_eq!(t.elapsed(), Duration::from_secs(5));
    }
}
