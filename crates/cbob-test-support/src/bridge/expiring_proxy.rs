//! A reverse proxy in front of an S3 server (moto) that makes session tokens expire.
//!
//! moto never expires STS credentials, and real Crunchy Bridge tokens last hours; this proxy
//! lets a test make "the token expired mid-sync" happen on cue. A request whose
//! `x-amz-security-token` (header, or `X-Amz-Security-Token` query parameter of a presigned
//! URL) was registered more than `max_age` ago, or was expired explicitly, gets S3's own answer:
//! HTTP 400 `ExpiredToken`. Everything else is forwarded unchanged: method, path and query,
//! every header including `Host` as the client sent it (so SigV4 signatures still verify), and
//! both bodies streamed frame by frame, never buffered whole.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::{Body, ServerThread, full};

/// The S3 error body for an expired session token.
pub const EXPIRED_TOKEN_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>";

#[derive(Debug, Clone, Copy)]
struct Issue {
    at: Instant,
    forced: bool,
}

/// When each session token was issued; shared by the proxy, the fake API (which registers the
/// tokens it hands out) and tests (which may register or expire tokens themselves).
#[derive(Clone, Default)]
pub struct TokenIssues(Arc<Mutex<HashMap<String, Issue>>>);

impl fmt::Debug for TokenIssues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Token values are credentials: show how many, not which.
        f.debug_struct("TokenIssues")
            .field("tokens", &self.map().len())
            .finish()
    }
}

impl TokenIssues {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issue>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `token` as issued now (re-registering resets its age).
    pub fn register(&self, token: &str) {
        self.map().insert(
            token.into(),
            Issue {
                at: Instant::now(),
                forced: false,
            },
        );
    }

    /// Whether `token` was registered.
    pub fn is_registered(&self, token: &str) -> bool {
        self.map().contains_key(token)
    }

    /// Makes `token` expired from now on, whatever its age (registering it if needed).
    pub fn expire(&self, token: &str) {
        self.map().insert(
            token.into(),
            Issue {
                at: Instant::now(),
                forced: true,
            },
        );
    }

    /// Expires every token registered so far; tokens registered later are fresh.
    pub fn expire_all(&self) {
        for issue in self.map().values_mut() {
            issue.forced = true;
        }
    }

    /// How many tokens are registered.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no token is registered.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    fn is_expired(&self, token: &str, max_age: Duration) -> bool {
        self.map()
            .get(token)
            .is_some_and(|i| i.forced || i.at.elapsed() > max_age)
    }
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicUsize,
    rejected: AtomicUsize,
    max_age_ms: AtomicU64,
}

/// The running proxy. Point the S3 client's endpoint (path-style) at [`ExpiringS3Proxy::endpoint`].
pub struct ExpiringS3Proxy {
    server: ServerThread,
    issues: TokenIssues,
    counters: Arc<Counters>,
    upstream: String,
}

impl fmt::Debug for ExpiringS3Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpiringS3Proxy")
            .field("endpoint", &self.endpoint())
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl ExpiringS3Proxy {
    /// Proxies to `upstream` (`http://127.0.0.1:PORT`, e.g. `moto_auth().endpoint()`); tokens
    /// registered more than `max_age` ago are rejected.
    pub fn start(upstream: &str, max_age: Duration) -> Self {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| {
                panic!("ExpiringS3Proxy: upstream must be http://host:port, got {upstream:?}")
            })
            .trim_end_matches('/')
            .to_string();
        let issues = TokenIssues::default();
        let counters = Arc::new(Counters::default());
        counters
            .max_age_ms
            .store(max_age.as_millis() as u64, Ordering::Relaxed);
        let (i, c, a) = (issues.clone(), counters.clone(), Arc::new(authority));
        let server = ServerThread::spawn("expiring-s3-proxy", move |req| {
            handle(req, i.clone(), c.clone(), a.clone())
        });
        Self {
            server,
            issues,
            counters,
            upstream: upstream.to_string(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The issue-time registry (hand it to [`super::FakeBridge::register_tokens_with`]).
    pub fn issues(&self) -> TokenIssues {
        self.issues.clone()
    }

    /// Changes how long a registered token stays valid.
    pub fn set_max_age(&self, max_age: Duration) {
        self.counters
            .max_age_ms
            .store(max_age.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests answered with `ExpiredToken` so far.
    pub fn rejected(&self) -> usize {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    /// Requests forwarded upstream so far.
    pub fn forwarded(&self) -> usize {
        self.counters.forwarded.load(Ordering::Relaxed)
    }
}

/// The session token of a request: the SigV4 header, else the presigned-URL query parameter.
fn session_token(req: &Request<Incoming>) -> Option<String> {
    if let Some(v) = req.headers().get("x-amz-security-token") {
        return v.to_str().ok().map(str::to_string);
    }
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Security-Token"))
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
            && let Ok(byte) = u8::from_str_radix(v, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_response(status: u16, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(full(body))
        .expect("valid response")
}

async fn handle(
    req: Request<Incoming>,
    issues: TokenIssues,
    counters: Arc<Counters>,
    upstream: Arc<String>,
) -> Response<Body> {
    let max_age = Duration::from_millis(counters.max_age_ms.load(Ordering::Relaxed));
    if session_token(&req).is_some_and(|t| issues.is_expired(&t, max_age)) {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        return error_response(400, "application/xml", EXPIRED_TOKEN_XML.to_string());
    }
    counters.forwarded.fetch_add(1, Ordering::Relaxed);
    match forward(req, &upstream).await {
        Ok(resp) => resp,
        Err(e) => error_response(
            502,
            "text/plain",
            format!("expiring proxy: upstream {upstream}: {e}"),
        ),
    }
}

/// Sends the request as is over a new connection to `upstream` and streams the answer back.
async fn forward(
    req: Request<Incoming>,
    upstream: &str,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when the response body has been fully streamed (or dropped).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The request line is already origin-form (`/bucket/key?query`); headers, Host included,
    // and the streaming body go out untouched.
    let resp = sender.send_request(req).await?;
    let (mut parts, body) = resp.into_parts();
    // Connection management is per hop: ours to the client is not moto's to us.
    parts.headers.remove("connection");
    parts.headers.remove("keep-alive");
    Ok(Response::from_parts(parts, body.boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_presigned_tokens() {
        assert_eq!(percent_decode("a%2Fb%3D%3D+c"), "a/b== c");
        assert_eq!(percent_decode("bad%2"), "bad%2");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn issue_registry() {
        let t = TokenIssues::default();
        t.register("a");
        assert!(!t.is_expired("a", Duration::from_secs(60)));
        t.expire_all();
        t.register("b");
        assert!(t.is_expired("a", Duration::from_secs(60)));
        assert!(!t.is_expired("b", Duration::from_secs(60)));
        assert!(
            !t.is_expired("unknown", Duration::ZERO),
            "unregistered tokens pass"
        );
        t.expire("c");
        assert!(t.is_expired("c", Duration::from_secs(60)));
        assert_eq!(t.len(), 3);
        assert_eq!(
            format!("{t:?}"),
            "TokenIssues { tokens: 3 }",
            "token values are never printed"
        );
    }
}
