//! A webhook receiver: a tiny HTTP server that records every request (method, path, body) and can
//! answer 503 to the next few, as a receiver in an outage does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`.
    pub method: String,
    /// The path, e.g. `/hook`.
    pub path: String,
    /// The body (JSON for notifications).
    pub body: String,
}

/// A running receiver.
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    received: Arc<Mutex<Vec<Request>>>,
    refuse: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts listening.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<Request>>> = Arc::default();
        let refuse = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (r, f, s) = (received.clone(), refuse.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = tokio::select! {
                    () = s.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (r, f) = (r.clone(), f.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = sock.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let Ok(n) = sock.read(&mut chunk).await else { return };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let mut first = head.lines().next().unwrap_or("").split_whitespace();
                    let request = Request {
                        method: first.next().unwrap_or("").to_string(),
                        path: first.next().unwrap_or("").to_string(),
                        body: String::from_utf8_lossy(&buf[head_end..]).into_owned(),
                    };
                    let refused = f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                    let status = if refused { "503 Service Unavailable" } else { "200 OK" };
                    if !refused {
                        r.lock().unwrap().push(request);
                    }
                    let _ = sock
                        .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                        .await;
                });
            }
        });
        Self {
            port,
            received,
            refuse,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers 503 to the next `n` requests (they are not recorded).
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` accepted requests satisfy `pred`, failing after `secs` seconds.
    pub async fn wait_for(&self, count: usize, secs: u64, pred: impl Fn(&Request) -> bool) -> Vec<Request> {
        for _ in 0..secs * 20 {
            let hits: Vec<Request> = self.received().into_iter().filter(|r| pred(r)).collect();
            if hits.len() >= count {
                return hits;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "the receiver did not get {count} such requests within {secs} s: {:#?}",
            self.received()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
