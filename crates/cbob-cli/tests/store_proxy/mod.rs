//! A TCP proxy in front of a real storage server (moto, Azurite, fake-gcs-server) that sees what
//! cbob asks of the store: it counts the bytes each way, records every request line and whether
//! it was a server-side copy (`x-amz-copy-source`, `x-ms-copy-source`, a GCS `rewriteTo`), and can
//! refuse copies with 501 Not Implemented, like a store without the call.
//!
//! Each connection carries one request: the proxy adds `Connection: close` to it (so the server
//! ends the connection after its answer) and then pipes the bytes unchanged both ways, so
//! signatures (SigV4, Shared Key) still verify and no HTTP body has to be parsed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// A server-side copy request.
    pub copy: bool,
    /// Answered 501 by the proxy itself.
    pub refused: bool,
}

#[derive(Default)]
struct Shared {
    to_client: AtomicU64,
    to_server: AtomicU64,
    open: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    refuse_copies: AtomicBool,
    stop: AtomicBool,
}

/// The running proxy; stops accepting when dropped.
pub struct StoreProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StoreProxy {
    /// Proxies 127.0.0.1:<free port> to `upstream` (`http://127.0.0.1:PORT[/path]`).
    pub fn start(upstream: &str) -> Self {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("upstream must be http://host:port, got {upstream}"))
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let upstream: SocketAddr = authority.parse().expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = stream else { continue };
                let s = s.clone();
                s.open.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &s);
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            upstream,
            shared,
            thread: Some(thread),
        }
    }

    /// The proxy's endpoint: `upstream` with the port replaced (`http://127.0.0.1:P[/path]`).
    pub fn endpoint_for(&self, upstream: &str) -> String {
        upstream.replacen(
            &format!("127.0.0.1:{}", self.upstream.port()),
            &format!("127.0.0.1:{}", self.addr.port()),
            1,
        )
    }

    /// From now on, answer every server-side copy with 501 Not Implemented.
    pub fn refuse_copies(&self) {
        self.shared.refuse_copies.store(true, Ordering::SeqCst);
    }

    /// Forgets what was seen and counted so far.
    pub fn reset(&self) {
        self.settle();
        self.shared.to_client.store(0, Ordering::SeqCst);
        self.shared.to_server.store(0, Ordering::SeqCst);
        self.shared.seen.lock().unwrap().clear();
    }

    /// Waits (up to 10 s) until every connection has ended, so the counts are final.
    fn settle(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Bytes the store sent to cbob, and cbob to the store (headers included).
    pub fn bytes(&self) -> (u64, u64) {
        self.settle();
        (
            self.shared.to_client.load(Ordering::SeqCst),
            self.shared.to_server.load(Ordering::SeqCst),
        )
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.settle();
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for StoreProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads up to the end of the request head; returns the head and any body bytes read with it.
fn read_head(client: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((buf, rest)));
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve(mut client: TcpStream, upstream: SocketAddr, s: &Shared) -> std::io::Result<()> {
    let Some((head, rest)) = read_head(&mut client)? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let copy = headers
        .iter()
        .any(|(k, _)| k == "x-amz-copy-source" || k == "x-ms-copy-source")
        || target.contains("/rewriteTo/");
    let refused = copy && s.refuse_copies.load(Ordering::SeqCst);
    s.seen.lock().unwrap().push(Seen {
        method,
        target,
        copy,
        refused,
    });
    if refused {
        // Each provider maps 501 to "unsupported"; the body names it for S3 and Azure too.
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented</Code>\
                    <Message>copies are switched off by the test proxy</Message></Error>";
        let resp = format!(
            "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\n\
             x-ms-error-code: NotImplemented\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(resp.as_bytes())?;
        s.to_client.fetch_add(resp.len() as u64, Ordering::SeqCst);
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream)?;
    // The same head with `Connection: close`: one request per connection.
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    server.write_all(out.as_bytes())?;
    server.write_all(&rest)?;
    s.to_server
        .fetch_add((out.len() + rest.len()) as u64, Ordering::SeqCst);
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::scope(|scope| {
        let up = scope.spawn(|| {
            let n = pipe(&mut c_read, &mut s_write);
            let _ = s_write.shutdown(Shutdown::Write);
            n
        });
        let down = pipe(&mut server, &mut client);
        s.to_client.fetch_add(down, Ordering::SeqCst);
        // The server has answered and closed: the client side is done too.
        let _ = client.shutdown(Shutdown::Both);
        up.join().unwrap_or(0)
    });
    s.to_server.fetch_add(up, Ordering::SeqCst);
    Ok(())
}

/// Copies until end of stream or an error; returns the bytes copied.
fn pipe(from: &mut TcpStream, to: &mut TcpStream) -> u64 {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return total;
                }
                total += n as u64;
            }
        }
    }
}
