//! Email over SMTP with lettre (`PGBACKREST_AUTO_SMTP_SERVER`, `PGBACKREST_AUTO_MAIL_FROM`,
//! `PGBACKREST_AUTO_MAIL_TO`, `PGBACKREST_AUTO_ATTACH_REPORT`, `CBOB_SMTP_*`).
//!
//! Which events: every finished `restore-check` (its report attached when
//! `PGBACKREST_AUTO_ATTACH_REPORT` is true and the event carries one), and every failed run of
//! any command. Security (`CBOB_SMTP_TLS`): `starttls` (required; default port 587), `tls`
//! (implicit TLS; 465), `none` (a local relay; 25). Certificates are checked against the
//! system's roots plus `CBOB_SMTP_CA_FILE`. The password is only ever handed to lettre.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Attachment as MailAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Event, Notifier, NotifyError, Phase, hostname};
use crate::config::EmailConfig;

/// The command whose finished runs are always mailed (the bash tool's restore-check report).
const REPORT_COMMAND: &str = "restore-check";

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    attach_report: bool,
    server: String,
}

/// `host`, `host:port` or `[v6]:port`; the port from the security mode when absent.
fn host_port(server: &str, tls: &str) -> Result<(String, u16), String> {
    let default = match tls {
        "tls" => 465,
        "none" => 25,
        _ => 587,
    };
    let s = server.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed [ in an IPv6 address"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            None => default,
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((
            host.to_string(),
            port.parse().map_err(|_| format!("{s:?}: bad port"))?,
        )),
        _ => Ok((s.to_string(), default)),
    }
}

impl Email {
    /// The email channel, or `None` when no SMTP server or recipient is configured. An error
    /// says what is wrong with the settings (validation catches most of it earlier).
    pub fn from_config(c: &EmailConfig) -> Result<Option<Self>, String> {
        let Some(server) = &c.smtp_server else {
            return Ok(None);
        };
        if c.mail_to.is_empty() {
            return Ok(None);
        }
        let (host, port) = host_port(server, &c.smtp_tls)?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone()).port(port);
        let tls = if c.smtp_tls == "none" {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(ca) = &c.smtp_ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("CBOB_SMTP_CA_FILE {}: {e}", ca.display()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    format!(
                        "CBOB_SMTP_CA_FILE {}: not PEM certificates: {e}",
                        ca.display()
                    )
                })?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("SMTP TLS set-up: {e}"))?;
            if c.smtp_tls == "tls" {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        };
        builder = builder.tls(tls).timeout(Some(Duration::from_secs(30)));
        if let Some(user) = &c.smtp_username {
            let password = c
                .smtp_password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from_text = c
            .mail_from
            .clone()
            .unwrap_or_else(|| format!("cbob@{}", hostname()));
        let from: Mailbox = from_text
            .parse()
            .map_err(|e| format!("PGBACKREST_AUTO_MAIL_FROM {from_text:?}: {e}"))?;
        let to = c
            .mail_to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| format!("PGBACKREST_AUTO_MAIL_TO {t:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            transport: builder.build(),
            from,
            to,
            attach_report: c.attach_report,
            server: format!("{host}:{port}"),
        }))
    }

    /// The message for an event (public for tests of the wire format).
    pub fn message(&self, event: &Event) -> Result<Message, NotifyError> {
        let mut builder = Message::builder().from(self.from.clone()).subject(format!(
            "{}: {}",
            event.title(),
            event.summary
        ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let body = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(event.text());
        let attachments: Vec<_> = if self.attach_report {
            event.attachments.iter().collect()
        } else {
            Vec::new()
        };
        let built = if attachments.is_empty() {
            builder.singlepart(body)
        } else {
            let mut multi = MultiPart::mixed().singlepart(body);
            for a in attachments {
                let ct = ContentType::parse(&a.content_type).unwrap_or(ContentType::TEXT_PLAIN);
                multi = multi
                    .singlepart(MailAttachment::new(a.filename.clone()).body(a.body.clone(), ct));
            }
            builder.multipart(multi)
        };
        built.map_err(|e| NotifyError::permanent(format!("email: cannot build the message: {e}")))
    }
}

fn smtp_error(server: &str, e: lettre::transport::smtp::Error) -> NotifyError {
    let message = format!("email via {server}: {e}");
    // Permanent SMTP replies (5xx: bad recipient, authentication refused) will not change.
    if e.is_permanent() {
        NotifyError::permanent(message)
    } else {
        NotifyError::transient(message)
    }
}

#[async_trait]
impl Notifier for Email {
    fn name(&self) -> String {
        "email".into()
    }

    fn accepts(&self, event: &Event) -> bool {
        (event.command == REPORT_COMMAND && event.phase.is_finished())
            || event.phase == Phase::Failed
    }

    async fn send(&self, event: &Event) -> Result<(), NotifyError> {
        let message = self.message(event)?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| smtp_error(&self.server, e))
    }

    /// Connects, says EHLO, upgrades with STARTTLS (or TLS) and logs in, then quits.
    async fn check(&self) -> Result<(), NotifyError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(NotifyError::transient(format!(
                "email via {}: the server did not answer NOOP",
                self.server
            ))),
            Err(e) => Err(smtp_error(&self.server, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            host_port("mail.example", "starttls"),
            Ok(("mail.example".into(), 587))
        );
        assert_eq!(
            host_port("mail.example", "tls"),
            Ok(("mail.example".into(), 465))
        );
        assert_eq!(host_port("localhost", "none"), Ok(("localhost".into(), 25)));
        assert_eq!(
            host_port("127.0.0.1:2525", "none"),
            Ok(("127.0.0.1".into(), 2525))
        );
        assert_eq!(host_port("[::1]:26", "tls"), Ok(("::1".into(), 26)));
        assert!(host_port("h:port", "tls").is_err());
    }
}
