//! Running the real pgvigil binaries with an explicit environment.

use std::path::PathBuf;
use std::process::Output;
use tokio::process::{Child, Command};

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

/// A command for a binary with exactly `vars` (plus PATH) in its environment, output captured.
fn command(name: &str, args: &[&str], vars: &[(&str, String)]) -> Command {
    let mut c = Command::new(binary(name));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs a binary to completion. Async, so that servers running inside the test process keep
/// answering meanwhile.
pub async fn run(name: &str, args: &[&str], vars: &[(&str, String)]) -> Output {
    tokio::time::timeout(std::time::Duration::from_secs(120), command(name, args, vars).output())
        .await
        .expect("binary did not finish within 120 s")
        .unwrap()
}

/// Starts a long-running binary (a service) in the background.
pub fn spawn(name: &str, args: &[&str], vars: &[(&str, String)]) -> Child {
    command(name, args, vars).spawn().unwrap()
}

/// Sends SIGTERM and waits for the process to exit, failing the test if it takes 10 s or more.
pub async fn terminate(child: Child) -> Output {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exited within 10 s of SIGTERM")
        .unwrap()
}

/// stdout + stderr as one string.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts that a binary answers `--help` with a usage and `--version` with `version`.
pub fn assert_help_and_version(exe: &str, version: &str) {
    let help = std::process::Command::new(exe).arg("--help").output().expect("binary runs");
    assert!(help.status.success(), "{exe} --help failed");
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"), "{exe} --help");
    let v = std::process::Command::new(exe).arg("--version").output().expect("binary runs");
    assert!(String::from_utf8_lossy(&v.stdout).contains(version), "{exe} --version");
}
