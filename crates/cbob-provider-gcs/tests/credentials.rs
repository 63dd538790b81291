//! Service-account credentials: a real RSA key (made with openssl) in a real key file, the
//! OAuth JWT-bearer exchange against a local token endpoint (the one piece of Google that
//! cannot run here), the token sent to the storage server, and clear configuration errors for
//! key files that cannot work. Secrets never appear in errors or debug output.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cbob_core::storage::{
    Body, CheckMode, ProviderRegistry, ProviderSpec, PutOptions, StorageErrorKind,
};
use common::proxy::Proxy;
use common::{fresh_bucket, k, spec};

const TOKEN: &str = "ya29.cbob-test-access-token";
const EMAIL: &str = "cbob-backup@cbob-test.iam.gserviceaccount.com";

/// An RSA private key in PKCS#8 PEM, as Google's key files hold it.
fn rsa_key(dir: &Path) -> String {
    let path = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openssl is needed to make a test key ({e}); install it: apt-get install -y openssl"
            )
        });
    assert!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path).unwrap()
}

fn key_file(dir: &Path, token_uri: &str, private_key: &str) -> PathBuf {
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "cbob-test",
        "private_key_id": "0123456789abcdef",
        "private_key": private_key,
        "client_email": EMAIL,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    });
    let path = dir.join("sa.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// A minimal OAuth token endpoint: answers every POST with `status` and `body`, and keeps the
/// request bodies it received.
struct TokenServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn token_server(status: u16, body: &'static str) -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut buf = vec![0u8; len];
            let _ = reader.read_exact(&mut buf);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            let reason = if status == 200 { "OK" } else { "Bad Request" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    TokenServer { url, requests }
}

async fn build(
    spec: &ProviderSpec,
) -> Result<cbob_core::storage::DynProvider, cbob_core::storage::StorageError> {
    let mut registry = ProviderRegistry::new();
    cbob_provider_gcs::register(&mut registry);
    registry.build(spec).await
}

/// The key signs a JWT for the token endpoint named in the key file, the access token it gets
/// back goes to the storage server as a Bearer token, and neither the key nor the token shows
/// in debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_key_gets_a_token_that_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let pem = rsa_key(dir.path());
    let tokens = token_server(
        200,
        r#"{"access_token":"ya29.cbob-test-access-token","expires_in":3599,"token_type":"Bearer"}"#,
    );
    let file = key_file(dir.path(), &tokens.url, &pem);
    let (endpoint, bucket) = fresh_bucket("gcs-sa").await;
    let proxy = Proxy::start(&endpoint).await;
    proxy.record_requests();
    let mut s = spec(&proxy.endpoint(), &bucket, "sa");
    s.credentials_file = Some(file.clone());
    let p = build(&s).await.expect("build with a service-account key");
    p.check(CheckMode::ReadWrite)
        .await
        .expect("read-write check with a token");
    p.put(&k("x"), Body::from_bytes("x"), &PutOptions::default())
        .await
        .unwrap();

    let requests = tokens.requests.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the token endpoint was never asked");
    let form = &requests[0];
    assert!(
        form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
        "{form}"
    );
    let assertion = form
        .split("assertion=")
        .nth(1)
        .expect("assertion")
        .split('&')
        .next()
        .unwrap();
    let claims = assertion.split('.').nth(1).expect("JWT claims");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["iss"], EMAIL);
    assert_eq!(claims["aud"], tokens.url.as_str());
    assert!(
        claims["scope"].as_str().unwrap().contains("devstorage"),
        "{claims}"
    );

    let sent = proxy.recorded();
    assert!(
        sent.contains(&format!("Bearer {TOKEN}")),
        "the access token never reached the storage server"
    );
    let debug = format!("{p:?}");
    assert!(
        !debug.contains(TOKEN) && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );
    assert!(debug.contains("sa.json"), "{debug}");
}

/// The token endpoint refuses the key (a deleted service account, a revoked key): the build
/// fails with Unauthenticated naming the setting and the file, not a generic error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let pem = rsa_key(dir.path());
    let tokens = token_server(
        400,
        r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    );
    let file = key_file(dir.path(), &tokens.url, &pem);
    let mut s = spec("http://127.0.0.1:9", "cbob-any", "");
    s.credentials_file = Some(file.clone());
    let e = build(&s)
        .await
        .expect_err("a refused key must fail the build");
    assert_eq!(e.kind(), StorageErrorKind::Unauthenticated, "{e}");
    assert!(!e.is_transient());
    let m = e.message();
    assert!(
        m.contains("CBOB_DEST_GCS_CREDENTIALS")
            && m.contains("sa.json")
            && m.contains("invalid_grant"),
        "{m}"
    );
    assert!(!m.contains("PRIVATE KEY"), "{m}");
}

/// Key files that cannot work are configuration errors that name the setting, the path and
/// the fix, and never quote the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_key_files_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret_marker = "-----BEGIN PRIVATE KEY-----\\nMIIEsecretsecret";
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing.json", String::new(), "does not exist"),
        (
            "garbage.json",
            format!("{{\"private_key\": \"{secret_marker}\" oops"),
            "not valid JSON",
        ),
        (
            "user.json",
            r#"{"type":"external_account","audience":"x"}"#.to_string(),
            "service-account JSON key",
        ),
        (
            "nokey.json",
            format!(r#"{{"type":"service_account","client_email":"{EMAIL}","private_key":""}}"#),
            "private_key",
        ),
        (
            "badkey.json",
            format!(
                r#"{{"type":"service_account","client_email":"{EMAIL}","private_key":"{secret_marker}\n-----END PRIVATE KEY-----\n","token_uri":"http://127.0.0.1:9/token"}}"#
            ),
            "download a new JSON key",
        ),
    ];
    for (name, content, fix) in cases {
        let path = dir.path().join(name);
        if !content.is_empty() {
            std::fs::write(&path, content).unwrap();
        }
        let mut s = spec("http://127.0.0.1:9", "cbob-any", "");
        s.credentials_file = Some(path.clone());
        let e = build(&s).await.expect_err(name);
        assert_eq!(e.kind(), StorageErrorKind::Config, "{name}: {e}");
        let m = e.message();
        assert!(
            m.contains("CBOB_DEST_GCS_CREDENTIALS") && m.contains(name) && m.contains(fix),
            "{name}: {m}"
        );
        assert!(!m.contains("MIIEsecret"), "{name} leaked key material: {m}");
    }
}
