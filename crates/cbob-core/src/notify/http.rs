//! The HTTP side shared by the Slack, heartbeat and webhook notifiers: one client, and one rule
//! for what a response means. Errors never carry the request URL (it may embed a token).

use std::time::Duration;

use super::NotifyError;

/// The client every HTTP notifier uses: rustls, a connect timeout, cbob's user agent. The overall
/// time limit is applied by [`super::Notifiers`] around each attempt.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("cbob/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a reqwest client with rustls builds")
}

/// A transport error (connect, TLS, reset) without its URL; always worth another attempt.
pub(crate) fn transport(what: &str, e: reqwest::Error) -> NotifyError {
    let e = e.without_url();
    NotifyError::transient(format!("{what}: {e}"))
}

/// 2xx is success; 408, 429 and 5xx are transient; any other status is permanent. The body, at
/// most 200 characters of it, goes into the message (Slack and Healthchecks explain themselves
/// there).
pub(crate) async fn check_status(
    what: &str,
    resp: reqwest::Response,
) -> Result<String, NotifyError> {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let snippet: String = body.trim().chars().take(200).collect();
    let message = if snippet.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {snippet}")
    };
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        Err(NotifyError::transient(message))
    } else {
        Err(NotifyError::permanent(message))
    }
}

/// Whether `host:port` of a URL accepts a TCP connection: the reachability check for endpoints
/// that cannot be probed without sending a real notification (heartbeats, webhooks).
pub(crate) async fn reachable(what: &str, url: &url::Url) -> Result<(), NotifyError> {
    let host = url
        .host_str()
        .ok_or_else(|| NotifyError::permanent(format!("{what}: the URL has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(NotifyError::transient(format!(
            "{what}: cannot connect to {host}:{port}: {e}"
        ))),
        Err(_) => Err(NotifyError::transient(format!(
            "{what}: no answer from {host}:{port} within 5s"
        ))),
    }
}
