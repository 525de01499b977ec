//! Running the real pgvigil binaries with an explicit environment.

use std::path::PathBuf;
use std::process::Output;
use tokio::process::Command;

/// Path of a workspace binary. `cargo nextest run --workspace` builds every binary (each binary
/// crate has an integration test); when one is missing (a filtered `cargo test -p pgvigil-e2e`),
/// it is built here.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/e2e-HASH → target/debug/NAME
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    if !p.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "--package", name, "--bin", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building {name} failed");
    }
    assert!(p.is_file(), "{} not found", p.display());
    p
}

/// Runs a binary with exactly `vars` (plus PATH) in its environment. Async, so that servers
/// running inside the test process keep answering meanwhile.
pub async fn run(name: &str, args: &[&str], vars: &[(&str, String)]) -> Output {
    let mut c = Command::new(binary(name));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(120), c.output())
        .await
        .expect("binary did not finish within 120 s")
        .unwrap()
}

/// stdout + stderr as one string.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
