//! A recording reverse proxy for S3 servers: forwards every request unchanged (method, path,
//! query, headers including `Host`, so SigV4 signatures still verify; bodies streamed) and
//! remembers method, path and query, so tests can assert on what `cbob` asked a store to do
//! ("the second sync wrote nothing") instead of on timing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// Path as sent (`/bucket/key`, percent-encoded).
    pub path: String,
    pub query: Option<String>,
    /// Response status (502 when the upstream could not be reached).
    pub status: u16,
}

impl Recorded {
    /// Whether this request changes the store (anything but GET and HEAD).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// The running proxy; stops when dropped.
pub struct RecordingProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingProxy {
    /// Proxies 127.0.0.1:<free port> to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Self {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("upstream must be http://host:port, got {upstream}"))
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("proxy address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let shared = log.clone();
        let thread = std::thread::Builder::new()
            .name(format!("recording-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let authority = Arc::new(authority);
                    loop {
                        let stream = tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => match accepted {
                                Ok((s, _)) => s,
                                Err(_) => continue,
                            },
                        };
                        let (log, authority) = (shared.clone(), authority.clone());
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let (log, authority) = (log.clone(), authority.clone());
                                async move {
                                    Ok::<_, Infallible>(handle(req, &authority, &log).await)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn proxy thread");
        Self {
            addr,
            log,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order of their answers.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The requests that change the store (PUT, POST, DELETE, ...).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    authority: &str,
    log: &Mutex<Vec<Recorded>>,
) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let resp = match forward(req, authority).await {
        Ok(r) => r,
        Err(e) => Response::builder()
            .status(502)
            .body(
                Full::new(Bytes::from(format!("recording proxy: {e}")))
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
            )
            .expect("response"),
    };
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Recorded {
            method,
            path,
            query,
            status: resp.status().as_u16(),
        });
    resp
}

async fn forward(
    req: Request<Incoming>,
    authority: &str,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await?;
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove("connection");
    parts.headers.remove("keep-alive");
    Ok(Response::from_parts(parts, body.boxed()))
}
