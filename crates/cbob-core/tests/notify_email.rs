//! The email notifier against a real SMTP server: aiosmtpd (PyPI, installed into the test venv
//! by `cargo xtask servers install`) requiring STARTTLS and AUTH, with a certificate made by
//! openssl for this run and trusted through `CBOB_SMTP_CA_FILE`. The server writes every message
//! it accepts to a directory, with the session facts (TLS, login) beside it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use cbob_core::config::{self, ConfigSources};
use cbob_core::notify::{Attachment, Event, Item, Notifiers};
use cbob_test_support::locate::Tool;
use cbob_test_support::process::{ServerProcess, port_open, scratch_dir, start_server};

const USER: &str = "cbob-mailer";
const PASSWORD: &str = "smtp-pass-3e1f9a";

const SERVER: &str = r#"
import json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, outdir, cert, key, user, password = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(outdir) if f.endswith(".eml")])
        base = os.path.join(outdir, "%04d" % n)
        with open(base + ".json", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "tls": session.ssl is not None, "login": str(session.auth_data)}, f)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 Message accepted"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password.encode()
    return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=int(port), tls_context=ctx,
               require_starttls=True, authenticator=authenticator, auth_required=True,
               auth_require_tls=True)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

struct Smtp {
    process: ServerProcess,
    dir: PathBuf,
    ca: PathBuf,
}

/// The SMTP server of this test binary (started once).
fn smtp() -> &'static Smtp {
    static SMTP: OnceLock<Smtp> = OnceLock::new();
    SMTP.get_or_init(|| {
        let dir = scratch_dir("smtp");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ca = make_certificates(&dir, &cert, &key);
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SERVER).unwrap();
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let python = Tool::Python.require();
        let check = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "aiosmtpd is not installed in {}: run `cargo xtask servers install`",
            python.display()
        );
        let (script2, mail2, cert2, key2) =
            (script.clone(), mail.clone(), cert.clone(), key.clone());
        let process = start_server(
            "aiosmtpd",
            move |port| {
                let mut c = Command::new(&python);
                c.arg(&script2)
                    .arg(port.to_string())
                    .arg(&mail2)
                    .arg(&cert2)
                    .arg(&key2)
                    .args([USER, PASSWORD]);
                c
            },
            port_open,
        );
        Smtp {
            process,
            dir: mail,
            ca,
        }
    })
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for the SMTP test (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1; returns the CA file (what
/// an operator puts in CBOB_SMTP_CA_FILE for an internal relay).
fn make_certificates(dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cbob test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            key,
            "-out",
            "server.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            cert,
        ],
        dir,
    );
    dir.join("ca.pem")
}

impl Smtp {
    /// Messages received so far: (session facts, raw message).
    fn messages(&self) -> Vec<(serde_json::Value, String)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let facts = std::fs::read_to_string(p.with_extension("json")).unwrap();
                (
                    serde_json::from_str(&facts).unwrap(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    }

    fn wait_for(&self, n: usize) -> Vec<(serde_json::Value, String)> {
        for _ in 0..200 {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process.assert_alive();
        panic!("expected {n} messages in {}", self.dir.display());
    }
}

fn notifiers(ca: &Path, password: &str, to: &str) -> Notifiers {
    let home = tempfile::tempdir().unwrap();
    let sources = ConfigSources::isolated(home.path())
        .with_env(
            "PGBACKREST_AUTO_SMTP_SERVER",
            &format!("127.0.0.1:{}", smtp().process.port),
        )
        .with_env("PGBACKREST_AUTO_MAIL_FROM", "cbob <cbob@backup.example>")
        .with_env("PGBACKREST_AUTO_MAIL_TO", to)
        .with_env("CBOB_SMTP_USERNAME", USER)
        .with_env("CBOB_SMTP_PASSWORD", password)
        .with_env("CBOB_SMTP_TLS", "starttls")
        .with_env("CBOB_SMTP_CA_FILE", ca.to_str().unwrap())
        .with_env("CBOB_NOTIFY_TIMEOUT", "20");
    let cfg = config::load(&sources).unwrap();
    let n = Notifiers::from_config(&cfg);
    assert_eq!(n.names(), ["email"]);
    n
}

// One test: the server's mailbox is shared, so the steps run in order.
#[tokio::test(flavor = "multi_thread")]
async fn restore_check_report_arrives_over_starttls_with_auth() {
    let s = smtp();
    let n = notifiers(&s.ca, PASSWORD, "ops@example.com, dba@example.com");

    // Reachability: connect, STARTTLS, AUTH.
    let checks = n.check().await;
    assert!(checks[0].1.is_ok(), "{checks:?}");

    // A started event and a successful sync are not mailed.
    assert!(
        n.send(&Event::started("restore-check", "local:/b"))
            .await
            .is_empty()
    );
    let sync_ok = Event::finished(
        "sync",
        "local:/b",
        true,
        "ok",
        vec![],
        Duration::from_secs(1),
    );
    assert!(n.send(&sync_ok).await.is_empty());

    let report = "stanza abc123: restored 20261124-052420F, recovered to 000000010000000000000009, amcheck ok\n";
    let event = Event::finished(
        "restore-check",
        "local:/srv/backups",
        true,
        "1 of 1 stanzas restored and checked",
        vec![Item {
            name: "abc123".into(),
            stanza: None,
            ok: true,
            detail: "restored in 41s".into(),
        }],
        Duration::from_secs(55),
    )
    .with_attachment(Attachment {
        filename: "restore-check-report.txt".into(),
        content_type: "text/plain".into(),
        body: report.as_bytes().to_vec(),
    });
    let d = n.send(&event).await;
    assert!(d[0].ok, "{d:?}");
    let msgs = s.wait_for(1);
    let (facts, raw) = &msgs[0];
    assert_eq!(facts["tls"], true, "the message went over STARTTLS");
    assert_eq!(facts["login"], USER);
    assert_eq!(facts["from"], "cbob@backup.example");
    assert_eq!(
        facts["to"],
        serde_json::json!(["ops@example.com", "dba@example.com"])
    );
    assert!(
        raw.contains("Subject: cbob restore-check succeeded on "),
        "{raw}"
    );
    assert!(raw.contains("1 of 1 stanzas restored and checked"), "{raw}");
    assert!(
        raw.contains("filename=\"restore-check-report.txt\""),
        "{raw}"
    );
    assert!(
        raw.contains("amcheck ok") || raw.contains("YW1jaGVjayBvaw"),
        "report body attached:\n{raw}"
    );
    assert!(!raw.contains(PASSWORD));

    // Any command's failure is mailed, without an attachment.
    let failed = Event::finished(
        "verify",
        "local:/b",
        false,
        "1 of 1 stanzas failed",
        vec![],
        Duration::ZERO,
    );
    assert!(n.send(&failed).await[0].ok);
    let msgs = s.wait_for(2);
    assert!(
        msgs[1].1.contains("Subject: cbob verify failed on "),
        "{}",
        msgs[1].1
    );

    // A refused login is permanent: one attempt, a clear error, no password in it.
    let wrong = notifiers(&s.ca, "not-the-password", "ops@example.com");
    let d = wrong.send(&failed).await;
    assert!(!d[0].ok);
    assert_eq!(d[0].attempts, 1, "{d:?}");
    let err = d[0].error.as_deref().unwrap();
    assert!(
        err.contains("email via 127.0.0.1:") && err.contains("535"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"));
    assert_eq!(s.messages().len(), 2, "nothing delivered without a login");
}
