//! Every HTTP notifier against a real local server that records what it receives: the right
//! request for started / succeeded / failed, no secret anywhere in what is sent, retries of
//! transient failures only, and a hanging receiver costing the time budget and no more.

use std::time::{Duration, Instant};

use cbob_core::Secret;
use cbob_core::config::{self, ConfigSources};
use cbob_core::notify::heartbeat::{Heartbeat, Style};
use cbob_core::notify::slack::{SlackBot, SlackWebhook};
use cbob_core::notify::webhook::Webhook;
use cbob_core::notify::{Event, Item, Notifiers};
use cbob_test_support::http_recorder::{HttpRecorder, Reply};
use serde_json::json;

/// Appears in an item's error text: must never leave the process.
const LEAKED: &str = "AKIA-LEAKED-SECRET-9f8e7d";
const TOKEN: &str = "xoxb-bot-token-1234567890";

fn all_phases() -> Vec<String> {
    vec!["started".into(), "succeeded".into(), "failed".into()]
}

fn failed_event() -> Event {
    Event::finished(
        "sync",
        "s3://offsite/crunchy",
        false,
        "1 of 2 clusters ok",
        vec![
            Item {
                name: "abc123".into(),
                stanza: Some("abc123".into()),
                ok: true,
                detail: "12 files (1.0 MiB) copied".into(),
            },
            Item {
                name: "def456".into(),
                stanza: None,
                ok: false,
                detail: format!(
                    "HTTP 403 from https://bucket.s3.example/key?X-Amz-Credential={LEAKED} with key {LEAKED}"
                ),
            },
        ],
        Duration::from_secs(42),
    )
}

fn notifiers(timeout: Duration) -> Notifiers {
    let mut n = Notifiers::new(timeout);
    n.add_secret(LEAKED);
    n.add_secret(TOKEN);
    n
}

/// No secret in any body or header of what was sent (the URL a secret webhook is posted to is
/// the secret itself, and a bot token belongs in its `Authorization` header).
fn assert_clean(rec: &HttpRecorder, secrets: &[&str]) {
    for r in rec.requests() {
        let mut sent = r.text();
        for (k, v) in &r.headers {
            if k != "authorization" {
                sent.push_str(&format!("\n{k}: {v}"));
            }
        }
        for s in secrets {
            assert!(!sent.contains(s), "secret {s:?} sent in:\n{sent}");
        }
        assert!(!r.text().contains("https://"), "link sent in: {}", r.text());
    }
}

#[tokio::test]
async fn slack_webhook_posts_one_json_text_per_wanted_phase() {
    let rec = HttpRecorder::start();
    let url = format!("{}/services/T01/B02/webhooksecret42", rec.url());
    let mut n = notifiers(Duration::from_secs(5));
    n.add_secret(url.clone());
    n.push(SlackWebhook::new(
        Secret::new(url),
        &["succeeded".into(), "failed".into()],
    ));

    let started = n.send(&Event::started("sync", "local:/srv/backups")).await;
    assert!(started.is_empty(), "started is not in the wanted phases");
    let ok = Event::finished(
        "sync",
        "local:/srv/backups",
        true,
        "1 of 1 clusters ok",
        vec![],
        Duration::from_secs(3),
    );
    let d = n.send(&ok).await;
    assert!(d[0].ok, "{d:?}");
    let d = n.send(&failed_event()).await;
    assert!(d[0].ok, "{d:?}");

    let reqs = rec.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/services/T01/B02/webhooksecret42");
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
    }
    let text0 = reqs[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text0.starts_with(":white_check_mark: cbob sync succeeded on "),
        "{text0}"
    );
    assert!(
        text0.contains("destination: local:/srv/backups\n1 of 1 clusters ok (3.0s)"),
        "{text0}"
    );
    let text1 = reqs[1].json()["text"].as_str().unwrap().to_string();
    assert!(text1.starts_with(":x: cbob sync failed on "), "{text1}");
    // Failures first, the secret and the link scrubbed.
    let lines: Vec<&str> = text1.lines().collect();
    assert!(
        lines[3].starts_with("✗ def456: HTTP 403 from [link removed] with key ***"),
        "{text1}"
    );
    assert!(lines[4].starts_with("✓ abc123: 12 files"), "{text1}");
    assert_clean(&rec, &[LEAKED, "webhooksecret42"]);
}

#[tokio::test]
async fn slack_bot_sends_the_token_in_the_header_only_and_reports_slack_errors() {
    let rec = HttpRecorder::start();
    rec.reply(
        "/api/chat.postMessage",
        [
            Reply::json(json!({"ok": true, "ts": "1.2"})),
            Reply::json(json!({"ok": false, "error": "channel_not_found"})),
        ],
    );
    let mut n = notifiers(Duration::from_secs(5));
    n.push(SlackBot::new(
        Secret::new(TOKEN),
        "#backups",
        url::Url::parse(&format!("{}/api", rec.url())).unwrap(),
        &all_phases(),
    ));
    let d = n.send(&Event::started("restore-check", "local:/b")).await;
    assert!(d[0].ok, "{d:?}");
    let d = n.send(&failed_event()).await;
    assert!(!d[0].ok);
    assert_eq!(d[0].attempts, 1, "channel_not_found is permanent: {d:?}");
    assert!(
        d[0].error
            .as_deref()
            .unwrap()
            .contains("channel_not_found (check CBOB_SLACK_CHANNEL)"),
        "{d:?}"
    );

    let reqs = rec.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let body = reqs[0].json();
    assert_eq!(body["channel"], "#backups");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with(":arrows_counterclockwise: cbob restore-check started on ")
    );
    assert!(body.get("token").is_none());
    assert_clean(&rec, &[LEAKED, TOKEN]);

    // The reachability check uses auth.test and posts nothing.
    rec.reply(
        "/api/auth.test",
        [Reply::json(json!({"ok": false, "error": "invalid_auth"}))],
    );
    let checks = n.check().await;
    assert!(
        checks[0]
            .1
            .as_ref()
            .unwrap_err()
            .contains("check CBOB_SLACK_CLI_TOKEN"),
        "{checks:?}"
    );
    assert_eq!(rec.requests().last().unwrap().path, "/api/auth.test");
}

#[tokio::test]
async fn healthchecks_heartbeat_pings_start_success_and_fail_with_or_without_a_query() {
    for (base, query) in [
        ("/ping/5f1c-uuid", None),
        ("/ping/key/cbob-sync", Some("create=1")),
    ] {
        let rec = HttpRecorder::start();
        let url = match query {
            Some(q) => format!("{}{base}?{q}", rec.url()),
            None => format!("{}{base}", rec.url()),
        };
        let mut n = notifiers(Duration::from_secs(5));
        n.push(Heartbeat::new(
            Secret::new(url),
            "sync",
            Style::Healthchecks,
        ));
        n.send(&Event::started("sync", "local:/b")).await;
        n.send(&Event::finished(
            "sync",
            "local:/b",
            true,
            "ok",
            vec![],
            Duration::from_secs(1),
        ))
        .await;
        n.send(&failed_event()).await;
        // Another command's runs are not this heartbeat's business.
        assert!(
            n.send(&Event::started("restore-check", "local:/b"))
                .await
                .is_empty()
        );

        let reqs = rec.requests();
        let paths: Vec<(&str, &str, Option<&str>)> = reqs
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.query.as_deref()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("POST", format!("{base}/start").as_str(), query),
                ("POST", base, query),
                ("POST", format!("{base}/fail").as_str(), query),
            ],
            "{base} {query:?}"
        );
        // Healthchecks keeps the body as the ping's log: the event text, scrubbed.
        assert!(
            reqs[2].text().starts_with("cbob sync failed on "),
            "{}",
            reqs[2].text()
        );
        assert_clean(&rec, &[LEAKED]);
    }
}

#[tokio::test]
async fn cronitor_heartbeat_adds_the_state_to_an_existing_query() {
    let rec = HttpRecorder::start();
    let mut n = notifiers(Duration::from_secs(5));
    n.push(Heartbeat::new(
        Secret::new(format!("{}/p/apikey/cbob-restore?env=prod", rec.url())),
        "restore-check",
        Style::Cronitor,
    ));
    n.send(&Event::started("restore-check", "local:/b")).await;
    n.send(&Event::finished(
        "restore-check",
        "local:/b",
        true,
        "ok",
        vec![],
        Duration::ZERO,
    ))
    .await;
    n.send(&Event::finished(
        "restore-check",
        "local:/b",
        false,
        "bad",
        vec![],
        Duration::ZERO,
    ))
    .await;
    let got: Vec<(String, String)> = rec
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.method,
                format!("{}?{}", r.path, r.query.unwrap_or_default()),
            )
        })
        .collect();
    let expect = |s: &str| {
        (
            "GET".to_string(),
            format!("/p/apikey/cbob-restore?env=prod&state={s}"),
        )
    };
    assert_eq!(got, vec![expect("run"), expect("complete"), expect("fail")]);
}

#[tokio::test]
async fn webhook_posts_the_documented_json() {
    let rec = HttpRecorder::start();
    let mut n = notifiers(Duration::from_secs(5));
    n.push(Webhook::new(
        Secret::new(format!("{}/hooks/cbob?token=hooktoken77", rec.url())),
        &all_phases(),
    ));
    n.add_secret("hooktoken77");
    n.send(&failed_event()).await;
    let r = &rec.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/cbob")
    );
    let v = r.json();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["command"], "sync");
    assert_eq!(v["phase"], "failed");
    assert_eq!(v["destination"], "s3://offsite/crunchy");
    assert_eq!(v["duration_seconds"], 42.0);
    assert_eq!(v["items"][1]["name"], "def456");
    assert_eq!(v["items"][1]["ok"], false);
    assert!(v["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(
        v["title"]
            .as_str()
            .unwrap()
            .starts_with("cbob sync failed on ")
    );
    assert!(v["at"].as_str().unwrap().ends_with('Z'));
    assert_clean(&rec, &[LEAKED]);
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let rec = HttpRecorder::start();
    rec.reply(
        "/flaky",
        [Reply::status(503), Reply::status(500), Reply::ok("ok")],
    );
    rec.reply("/gone", [Reply::status(404)]);
    let mut n = notifiers(Duration::from_secs(10));
    n.push(Webhook::new(
        Secret::new(format!("{}/flaky", rec.url())),
        &all_phases(),
    ));
    n.push(SlackWebhook::new(
        Secret::new(format!("{}/gone", rec.url())),
        &all_phases(),
    ));
    let d = n.send(&Event::started("sync", "x")).await;
    let flaky = d.iter().find(|d| d.notifier == "webhook").unwrap();
    let gone = d.iter().find(|d| d.notifier == "slack-webhook").unwrap();
    assert!(flaky.ok && flaky.attempts == 3, "{flaky:?}");
    assert!(!gone.ok && gone.attempts == 1, "{gone:?}");
    assert!(
        gone.error.as_deref().unwrap().contains("HTTP 404"),
        "{gone:?}"
    );
    assert_eq!(
        rec.requests().iter().filter(|r| r.path == "/flaky").count(),
        3
    );
}

#[tokio::test]
async fn a_hanging_receiver_costs_the_budget_and_does_not_hold_up_the_others() {
    let rec = HttpRecorder::start();
    rec.reply("/hang", [Reply::hang()]);
    let mut n = notifiers(Duration::from_secs(2));
    n.push(SlackWebhook::new(
        Secret::new(format!("{}/hang", rec.url())),
        &all_phases(),
    ));
    n.push(Webhook::new(
        Secret::new(format!("{}/fine", rec.url())),
        &all_phases(),
    ));
    let t = Instant::now();
    let d = n.send(&Event::started("sync", "x")).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    let hang = d.iter().find(|d| d.notifier == "slack-webhook").unwrap();
    assert!(
        !hang.ok && hang.error.as_deref().unwrap().contains("timed out"),
        "{hang:?}"
    );
    assert!(d.iter().find(|d| d.notifier == "webhook").unwrap().ok);
}

#[tokio::test]
async fn the_configuration_decides_the_channels_and_a_dry_run_has_none() {
    let home = tempfile::tempdir().unwrap();
    let sources = ConfigSources::isolated(home.path())
        .with_env(
            "CBOB_SLACK_WEBHOOK_URL",
            "https://hooks.slack.example/services/T/B/x",
        )
        .with_env("CBOB_SLACK_CLI_TOKEN", TOKEN)
        .with_env("CBOB_SYNC_HEARTBEAT_URL", "https://hc-ping.example/uuid")
        .with_env(
            "CBOB_RESTORE_HEARTBEAT_URL",
            "https://hc-ping.example/uuid2",
        )
        .with_env("CBOB_WEBHOOK_URL", "https://example.invalid/hook")
        .with_env("PGBACKREST_AUTO_SMTP_SERVER", "127.0.0.1:2525")
        .with_env("PGBACKREST_AUTO_MAIL_TO", "ops@example.com")
        .with_env("CBOB_SMTP_TLS", "none");
    let cfg = config::load(&sources).unwrap();
    let mut names = Notifiers::from_config(&cfg).names();
    names.sort();
    assert_eq!(
        names,
        [
            "email",
            "heartbeat:restore-check",
            "heartbeat:sync",
            "slack",
            "slack-webhook",
            "webhook"
        ]
    );
    let dry = config::load(&sources.with_env("CBOB_DRY_RUN", "true")).unwrap();
    assert!(Notifiers::from_config(&dry).is_empty());
}

#[test]
fn bad_notification_settings_are_configuration_errors() {
    let home = tempfile::tempdir().unwrap();
    let sources = ConfigSources::isolated(home.path())
        .with_env("CBOB_NOTIFY_EVENTS", "started,finished")
        .with_env("CBOB_HEARTBEAT_STYLE", "pingdom")
        .with_env("CBOB_SMTP_CA_FILE", "/nonexistent/ca.pem")
        .with_env("CBOB_DAEMON_LISTEN", "0.0.0.0:9750")
        .with_env("CBOB_SCHEDULE_SYNC", "every night");
    let err = config::load(&sources).unwrap_err();
    let text = err.to_string();
    for expected in [
        "CBOB_NOTIFY_EVENTS (environment): unknown event \"finished\"",
        "CBOB_HEARTBEAT_STYLE (environment): \"pingdom\" is not one of healthchecks, cronitor",
        "CBOB_SMTP_CA_FILE (environment): /nonexistent/ca.pem is not a readable file",
        "CBOB_DAEMON_LISTEN (environment): 0.0.0.0:9750 is not a loopback address",
        "CBOB_SCHEDULE_SYNC (environment): \"every night\" is not a cron expression",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
