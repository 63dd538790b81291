//! The daemon's HTTP endpoints on a loopback address: `GET /metrics` (Prometheus text: the
//! state database's metrics and the daemon's own) and `GET /healthz` (JSON; 503 while stopping).
//! Nothing else; no authentication, hence loopback only (the configuration enforces it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::status::DaemonStatus;
use crate::metrics::{PromWriter, Snapshot, write_prometheus};
use crate::state::StateDb;

/// Binds the address now, so a port in use fails the daemon's start rather than later.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The `/metrics` document: the state database under `base` (when it exists) and the daemon.
pub fn metrics_document(base: &std::path::Path, status: &DaemonStatus) -> String {
    let snapshot = if base.join("state.db").is_file() {
        match StateDb::open_in(base).and_then(|db| Snapshot::collect(&db)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the state database");
                Snapshot::empty()
            }
        }
    } else {
        Snapshot::empty()
    };
    let mut w = PromWriter::new();
    write_prometheus(&mut w, &snapshot);
    status.write_prometheus(&mut w);
    w.finish()
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("Content-Type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

async fn handle(
    req: Request<Incoming>,
    base: Arc<PathBuf>,
    status: Arc<DaemonStatus>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            // SQLite reads block: keep them off the async workers.
            let body = tokio::task::spawn_blocking(move || metrics_document(&base, &status))
                .await
                .unwrap_or_default();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/healthz" => {
            let code = if status.stopping() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let mut body = status.health_json().to_string();
            body.push('\n');
            reply(code, "application/json", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

/// Serves until `shutdown` turns true. Connections in progress finish on their own tasks.
pub async fn serve(
    listener: TcpListener,
    base: PathBuf,
    status: Arc<DaemonStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let base = Arc::new(base);
    loop {
        let stream = tokio::select! {
            _ = super::runner::stop_requested(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "daemon HTTP: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (base, status) = (base.clone(), status.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (base, status) = (base.clone(), status.clone());
                async move { Ok::<_, Infallible>(handle(req, base, status).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
