//! A faithful fake of the Crunchy Bridge API ([`FakeBridge`], SPEC §4) and a proxy that makes
//! S3 session tokens expire on demand ([`ExpiringS3Proxy`]).
//!
//! Both are in-process HTTP servers on 127.0.0.1 at a free port, each running on its own
//! thread and Tokio runtime, so they outlive the runtime of any single `#[tokio::test]` and can
//! be shared by every test of a binary (keep them in a `OnceLock`, or create one per test).
//! Dropping one stops it.
//!
//! ```no_run
//! use std::time::Duration;
//! use cbob_test_support::bridge::{ExpiringS3Proxy, FakeBridge, FakeCluster, S3Location, TokenReply};
//! use cbob_test_support::{moto, moto_auth};
//!
//! let api = FakeBridge::start("cbkey_test");
//! api.add_team("team1", "Acme", true);
//! api.add_cluster(FakeCluster::primary("abc123", "team1"));
//! api.add_cluster(FakeCluster::replica("rep456", "team1", "abc123"));
//!
//! // Real STS credentials from moto, fresh on every token request, expiring through a proxy.
//! let proxy = ExpiringS3Proxy::start(&moto_auth().endpoint(), Duration::from_secs(3600));
//! api.register_tokens_with(proxy.issues());
//! let bucket = moto_auth().fresh_bucket("bridge");
//! api.set_token("abc123", TokenReply::s3_with(
//!     S3Location::new(&bucket, "/pgbackrest/abc123/repo1", "abc123"),
//!     || moto_auth().assume_role().credentials,
//! ));
//! // Point cbob at api.url() (CBOB_CRUNCHY_API_URL) and proxy.endpoint() (CBOB_SOURCE_ENDPOINT);
//! // later: proxy.issues().expire_all() and watch the sync fetch a new token.
//! assert_eq!(api.token_requests("rep456"), 0);
//! ```

mod expiring_proxy;
mod fake_api;
#[cfg(test)]
mod proxy_tests;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub use expiring_proxy::{EXPIRED_TOKEN_XML, ExpiringS3Proxy, TokenIssues};
pub use fake_api::{
    AzureToken, Failure, FakeBackup, FakeBridge, FakeCluster, FakeTeam, RecordedRequest,
    S3Location, TokenReply, s3_token_json,
};

/// The response body type of both servers: a small in-memory body or a streamed upstream one.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// A whole body from bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A running in-process server; stops (and joins its thread) when dropped.
#[derive(Debug)]
pub(crate) struct ServerThread {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds 127.0.0.1:0 and serves HTTP/1.1 connections with `handler` on a new thread with
    /// its own runtime. Returns once the port is bound, so the address is usable at once.
    pub(crate) fn spawn<F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        let (stream, _) = tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => match accepted {
                                Ok(s) => s,
                                Err(_) => continue, // e.g. EMFILE under load; keep serving
                            },
                        };
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let handler = handler.clone();
                                async move { Ok::<_, Infallible>(handler(req).await) }
                            });
                            // A client hanging up mid-request is its business, not a test failure.
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
                // Dropping the runtime cancels the connection tasks still running.
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
