//! A TCP proxy in front of fake-gcs-server that breaks connections on purpose: it cuts the
//! connection carrying an upload once a number of request bytes went through, or drops a
//! response after that many. Real sockets and a real server, so the provider meets the same
//! failures a flaky network gives it. fake-gcs-server builds resumable session URLs from the
//! `Host` header, so every chunk of a session opened through the proxy also goes through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct State {
    /// Request bytes forwarded to the server, over all connections.
    client_bytes: AtomicU64,
    /// Cut the connection once request bytes pass this (fires once).
    cut_upload_after: Mutex<Option<u64>>,
    /// Drop the first response that starts after this many request bytes (fires once).
    drop_response_after: Mutex<Option<u64>>,
    cuts: AtomicU32,
    /// The first request bytes, when recording (headers included), up to `RECORD_LIMIT`.
    recorded: Mutex<Option<Vec<u8>>>,
}

const RECORD_LIMIT: usize = 1024 * 1024;

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`http://127.0.0.1:P`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        // An error ends this connection; dropping both sockets closes them.
                        let _ = relay(client, server, st).await;
                    }
                });
            }
        });
        Proxy { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts the connection in use once `n` request bytes (all connections) went through.
    pub fn cut_upload_after(&self, n: u64) {
        *self.state.cut_upload_after.lock().unwrap() = Some(n);
    }

    /// Drops the first response that arrives after `n` request bytes went through.
    pub fn drop_response_after(&self, n: u64) {
        *self.state.drop_response_after.lock().unwrap() = Some(n);
    }

    /// Starts keeping the request bytes that go through (the first MiB).
    pub fn record_requests(&self) {
        *self.state.recorded.lock().unwrap() = Some(Vec::new());
    }

    /// What was recorded, as text (bodies lossily).
    pub fn recorded(&self) -> String {
        let rec = self.state.recorded.lock().unwrap();
        String::from_utf8_lossy(rec.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn client_bytes(&self) -> u64 {
        self.state.client_bytes.load(Ordering::SeqCst)
    }

    /// How many connections were broken on purpose.
    pub fn cuts(&self) -> u32 {
        self.state.cuts.load(Ordering::SeqCst)
    }
}

fn cut() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "cut by the test proxy",
    )
}

async fn relay(client: TcpStream, server: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                sw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            if let Some(rec) = st.recorded.lock().unwrap().as_mut() {
                let room = RECORD_LIMIT.saturating_sub(rec.len());
                rec.extend_from_slice(&buf[..n.min(room)]);
            }
            let before = st.client_bytes.fetch_add(n as u64, Ordering::SeqCst);
            let limit = {
                let mut armed = st.cut_upload_after.lock().unwrap();
                match *armed {
                    Some(t) if before + n as u64 > t => armed.take(),
                    _ => None,
                }
            };
            if let Some(t) = limit {
                // Forward up to the limit, then break the connection mid-request.
                let keep = t.saturating_sub(before) as usize;
                sw.write_all(&buf[..keep.min(n)]).await?;
                st.cuts.fetch_add(1, Ordering::SeqCst);
                return Err(cut());
            }
            sw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                cw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            let fire = {
                let mut armed = st.drop_response_after.lock().unwrap();
                match *armed {
                    Some(t) if st.client_bytes.load(Ordering::SeqCst) >= t => armed.take(),
                    _ => None,
                }
            };
            if fire.is_some() {
                st.cuts.fetch_add(1, Ordering::SeqCst);
                return Err(cut());
            }
            cw.write_all(&buf[..n]).await?;
        }
    };
    tokio::try_join!(up, down).map(|_| ())
}
