//! A TCP proxy in front of a real server, for faults the server itself will not produce: slow
//! responses, connections cut in the middle of a download, refused connections, and stalls
//! (nothing moves either way until released). Rate limits and cuts apply to the server → client
//! direction, where downloads flow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The faults currently in force.
#[derive(Debug, Default)]
struct Faults {
    /// Bytes per second allowed towards the client (0: unlimited).
    rate: AtomicU64,
    /// After this many more bytes towards the client, cut the connection (0: never).
    cut_after: AtomicU64,
    /// Refuse new connections.
    refuse: AtomicBool,
    /// Forward nothing, in either direction, while set.
    stall: AtomicBool,
}

impl Faults {
    async fn wait_while_stalled(&self) {
        while self.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A running proxy.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Shared fault settings.
    faults: Arc<Faults>,
    /// Stops the proxy.
    stop: CancellationToken,
}

impl Proxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let stop = CancellationToken::new();
        let (f, s) = (faults.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = s.cancelled() => break,
                    r = listener.accept() => match r { Ok((c, _)) => c, Err(_) => continue },
                };
                if f.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (f, s) = (f.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        tokio::select! {
                            () = s.cancelled() => {}
                            () = pipe(client, server, f) => {}
                        }
                    }
                });
            }
        });
        Self { addr, faults, stop }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Limits the server → client direction to `bytes_per_sec` (0: unlimited).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.faults.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Cuts the connection that carries the `bytes`-th byte from now towards a client.
    pub fn cut_after(&self, bytes: u64) {
        self.faults.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Stops (or resumes) forwarding on every connection: the peers see a silent network.
    pub fn stall(&self, on: bool) {
        self.faults.stall.store(on, Ordering::SeqCst);
    }

    /// Refuses (or accepts again) new connections, and while on, closes open ones at their next
    /// request: the server is down.
    pub fn refuse(&self, on: bool) {
        self.faults.refuse.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            faults.wait_while_stalled().await;
            if faults.refuse.load(Ordering::SeqCst) {
                break;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            faults.wait_while_stalled().await;
            let cut = faults.cut_after.load(Ordering::SeqCst);
            if cut > 0 {
                if n as u64 >= cut {
                    faults.cut_after.store(0, Ordering::SeqCst);
                    let _ = cw.write_all(&buf[..cut as usize]).await;
                    return;
                }
                faults.cut_after.store(cut - n as u64, Ordering::SeqCst);
            }
            let rate = faults.rate.load(Ordering::SeqCst);
            if rate > 0 {
                tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    // When the download side is cut, the whole connection goes with it.
    tokio::select! {
        () = down => {}
        () = async { up.await; std::future::pending::<()>().await } => {}
    }
}
