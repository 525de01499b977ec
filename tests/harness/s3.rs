//! A real S3-protocol server (s3s-fs over a temp directory) on a TCP port inside the test
//! process. It can be stopped and started again on the same port to simulate outages.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::net::SocketAddr;
use std::sync::Mutex;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Credentials accepted by the test server.
pub const ACCESS_KEY: &str = "pgvigil-test-access";
/// Secret key accepted by the test server.
pub const SECRET_KEY: &str = "pgvigil-test-secret-KEY-0123456789";
/// Bucket created at start.
pub const BUCKET: &str = "pgvigil-test";

/// A running (or stopped) S3 server.
pub struct S3Server {
    /// Root directory; buckets are its sub-directories.
    pub root: TempDir,
    /// Address it listens on (kept across restarts).
    pub addr: SocketAddr,
    /// Cancels the accept loop and every open connection.
    stop: Mutex<Option<CancellationToken>>,
}

impl S3Server {
    /// Starts a server with one empty bucket.
    pub async fn start() -> Self {
        let root = tempfile::Builder::new().prefix("pgvigil-s3-").tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            root,
            addr,
            stop: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let token = serve_dir(self.root.path(), listener);
        *self.stop.lock().unwrap() = Some(token);
    }

    /// Stops accepting and cuts every open connection.
    pub fn stop(&self) {
        if let Some(t) = self.stop.lock().unwrap().take() {
            t.cancel();
        }
    }

    /// Starts again on the same address.
    pub async fn restart(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment variables that point pgvigil at this server, with a prefix.
    pub fn vars(&self, prefix: &str) -> Vec<(&'static str, String)> {
        self.vars_via(prefix, self.endpoint())
    }

    /// Like [`S3Server::vars`], but reaching the server through `endpoint` (e.g. a fault proxy).
    pub fn vars_via(&self, prefix: &str, endpoint: String) -> Vec<(&'static str, String)> {
        vec![
            ("S3_BUCKET", BUCKET.to_string()),
            ("S3_ENDPOINT", endpoint),
            ("S3_REGION", "us-east-1".to_string()),
            ("S3_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("S3_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("BACKUP_PREFIX", prefix.to_string()),
        ]
    }

    /// Multipart uploads that were started and neither completed nor aborted. (s3s-fs does not
    /// implement ListMultipartUploads, so this reads its state files directly.)
    pub fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir(self.root.path().join(name)).unwrap();
    }
}

/// Serves the S3 API over `root` (buckets are its sub-directories) on `listener` until the
/// returned token is cancelled. Used by the tests and by the benchmark's S3 server.
pub fn serve_dir(root: &std::path::Path, listener: TcpListener) -> CancellationToken {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = b.build();
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let socket = tokio::select! {
                () = token.cancelled() => break,
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            };
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            let t = token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = t.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    stop
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
