//! A real HTTP server that records every request and answers as told: the receiving end of
//! notification tests (Slack, heartbeats, webhooks) and a stand-in for any small JSON endpoint.
//!
//! Answers are set per path prefix (the longest matching prefix wins); each can be a sequence
//! (the last one repeats), be delayed, or hang until the server is dropped. Unknown paths get
//! `200 ok`.
//!
//! ```no_run
//! use std::time::Duration;
//! use cbob_test_support::http_recorder::{HttpRecorder, Reply};
//! let rec = HttpRecorder::start();
//! rec.reply("/hook", [Reply::status(500), Reply::ok("ok")]);  // first 500, then 200
//! rec.reply("/slow", [Reply::ok("{}").after(Duration::from_secs(3))]);
//! rec.reply("/never", [Reply::hang()]);
//! // point the code under test at rec.url() + "/hook", then:
//! let reqs = rec.wait_for(2, Duration::from_secs(10));
//! assert_eq!(reqs[1].path, "/hook");
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::bridge::{Body, ServerThread, full};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request arrived (its headers were read).
    pub at: SystemTime,
}

impl Recorded {
    /// Body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                self.text()
            )
        })
    }

    /// First header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Everything a secret could hide in: request line, headers and body, as one string.
    pub fn everything(&self) -> String {
        let mut s = format!(
            "{} {}?{}\n",
            self.method,
            self.path,
            self.query.as_deref().unwrap_or("")
        );
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&self.text());
        s
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    pub delay: Duration,
    /// Never answer (the connection stays open until the server is dropped).
    pub hang: bool,
}

impl Reply {
    pub fn ok(body: &str) -> Self {
        Self {
            status: 200,
            body: body.into(),
            content_type: "text/plain".into(),
            delay: Duration::ZERO,
            hang: false,
        }
    }

    pub fn json(body: serde_json::Value) -> Self {
        Self {
            content_type: "application/json".into(),
            ..Self::ok(&body.to_string())
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::ok("")
        }
    }

    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::ok("")
        }
    }

    /// The same answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    replies: HashMap<String, VecDeque<Reply>>,
}

/// The recording server; stops when dropped.
pub struct HttpRecorder {
    server: ServerThread,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl std::fmt::Debug for HttpRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRecorder")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

fn pick(state: &mut State, path: &str) -> Reply {
    let best = state
        .replies
        .keys()
        .filter(|prefix| path.starts_with(prefix.as_str()))
        .max_by_key(|prefix| prefix.len())
        .cloned();
    let Some(prefix) = best else {
        return Reply::ok("ok");
    };
    let queue = state.replies.get_mut(&prefix).expect("key exists");
    if queue.len() > 1 {
        queue.pop_front().expect("non-empty")
    } else {
        queue.front().cloned().unwrap_or_else(|| Reply::ok("ok"))
    }
}

async fn handle(state: Arc<(Mutex<State>, Condvar)>, req: Request<Incoming>) -> Response<Body> {
    let at = SystemTime::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let reply = {
        let (lock, cond) = &*state;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(Recorded {
            method,
            path: path.clone(),
            query,
            headers,
            body,
            at,
        });
        cond.notify_all();
        pick(&mut s, &path)
    };
    if reply.hang {
        // Longer than any test; the runtime is dropped with the server.
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    Response::builder()
        .status(reply.status)
        .header("Content-Type", reply.content_type)
        .body(full(reply.body))
        .expect("valid response")
}

impl HttpRecorder {
    /// Starts a recorder on 127.0.0.1 at a free port.
    pub fn start() -> Self {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let shared = state.clone();
        let server = ServerThread::spawn("http-recorder", move |req| handle(shared.clone(), req));
        Self { server, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// Answers requests whose path starts with `prefix` with `replies` in order; the last one
    /// repeats.
    pub fn reply(&self, prefix: &str, replies: impl IntoIterator<Item = Reply>) {
        let (lock, _) = &*self.state;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .replies
            .insert(prefix.to_string(), replies.into_iter().collect());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        let (lock, _) = &*self.state;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout` with what did arrive).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let (lock, cond) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        while s.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let got: Vec<String> = s
                    .requests
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect();
                panic!(
                    "expected {n} requests within {timeout:?}, got {}: {got:?}",
                    got.len()
                );
            }
            s = cond
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.requests.clone()
    }
}
