//! A minimal HTTP/1.1 GET, enough to read pgvigil's health endpoints.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET http://127.0.0.1:{port}{path}`: the status code and the body. `None` while nothing listens.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with(port, path, "").await
}

/// As [`get`], with extra header lines (each ending in `\r\n`).
pub async fn get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}
