//! Rules for the notification and daemon keys that their types alone cannot express: the words
//! of `CBOB_NOTIFY_EVENTS`, a loopback-only `CBOB_DAEMON_LISTEN`, a readable SMTP CA file.

use std::net::SocketAddr;

use super::Config;
use super::problem::{ConfigProblem, Origin};

/// `CBOB_SCHEDULE_*` keys and the job (`cbob` subcommand) each one schedules.
pub(crate) const SCHEDULE_KEYS: &[(&str, &str)] = &[
    ("CBOB_SCHEDULE_SYNC", "sync"),
    ("CBOB_SCHEDULE_RESTORE_CHECK", "restore-check"),
    ("CBOB_SCHEDULE_VERIFY", "verify"),
    ("CBOB_SCHEDULE_EXPIRE", "expire"),
    ("CBOB_SCHEDULE_REPLICATE", "replicate"),
];

/// The phases `CBOB_NOTIFY_EVENTS` may name.
pub const EVENT_PHASES: &[&str] = &["started", "succeeded", "failed"];

/// `off` (or `none`) is `Ok(None)`; anything else must be an IP address and port on loopback:
/// the daemon's endpoints have no authentication, so they are for the host itself (a scraper or a
/// reverse proxy on it), never for the network.
pub(crate) fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let t = text.trim();
    if matches!(t.to_ascii_lowercase().as_str(), "off" | "none") {
        return Ok(None);
    }
    let addr: SocketAddr = t
        .parse()
        .map_err(|_| format!("{t:?} is not an address and port such as 127.0.0.1:9750"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: /metrics and /healthz have no authentication"
        ));
    }
    Ok(Some(addr))
}

pub(crate) fn check(c: &Config, problems: &mut Vec<ConfigProblem>) {
    let origin = |env: &str| {
        c.resolved
            .get(env)
            .map(|v| v.origin.clone())
            .unwrap_or(Origin::Unset)
    };
    let unknown: Vec<&String> = c
        .notify
        .events
        .iter()
        .filter(|e| !EVENT_PHASES.contains(&e.as_str()))
        .collect();
    if !unknown.is_empty() {
        problems.push(ConfigProblem::error(
            "CBOB_NOTIFY_EVENTS".to_string(),
            origin("CBOB_NOTIFY_EVENTS"),
            format!(
                "unknown event{} {}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("list some of {}", EVENT_PHASES.join(", ")),
        ));
    }
    if let Some(listen) = c.resolved.raw("CBOB_DAEMON_LISTEN")
        && let Err(why) = parse_listen(listen)
    {
        problems.push(ConfigProblem::error(
            "CBOB_DAEMON_LISTEN".to_string(),
            origin("CBOB_DAEMON_LISTEN"),
            why,
            "use 127.0.0.1:PORT or [::1]:PORT (put a reverse proxy in front to expose it), or off",
        ));
    }
    if let Some(ca) = &c.notify.email.smtp_ca_file
        && !ca.is_file()
    {
        problems.push(ConfigProblem::error(
            "CBOB_SMTP_CA_FILE".to_string(),
            origin("CBOB_SMTP_CA_FILE"),
            format!("{} is not a readable file", ca.display()),
            "point it at a PEM file of the CA certificate(s) that signed the SMTP server's certificate",
        ));
    }
    if c.notify.email.smtp_password.is_some() && c.notify.email.smtp_tls == "none" {
        problems.push(ConfigProblem::warning(
            "CBOB_SMTP_TLS".to_string(),
            origin("CBOB_SMTP_TLS"),
            "CBOB_SMTP_PASSWORD would be sent in clear: CBOB_SMTP_TLS is none",
            "set CBOB_SMTP_TLS to starttls or tls",
        ));
    }
}
