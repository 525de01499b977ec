//! A standalone S3 server over a directory, for the benchmark: the same s3s-fs server the tests
//! use, with the test credentials. `pgvigil-test-s3 ROOT PORT` serves until SIGTERM/SIGINT.

use pgvigil_e2e::s3::{serve_dir, Faults, BUCKET};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse::<u16>().ok())) else {
        eprintln!("usage: pgvigil-test-s3 ROOT PORT");
        std::process::exit(2);
    };
    let root = std::path::PathBuf::from(root);
    if let Err(e) = std::fs::create_dir_all(root.join(BUCKET)) {
        eprintln!("cannot create {}: {e}", root.display());
        std::process::exit(1);
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let stop = serve_dir(&root, listener, Faults::default());
    eprintln!("S3 server on http://127.0.0.1:{port}, bucket {BUCKET}, root {}", root.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.cancel();
}
