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
    command_at(name, args, vars, "info")
}

fn command_at(name: &str, args: &[&str], vars: &[(&str, String)], log_level: &str) -> Command {
    let mut c = Command::new(binary(name));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", log_level);
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

/// A long-running binary whose output (stdout and stderr, interleaved by line) is collected
/// while it runs, so a test can wait for a log line and then act.
pub struct Service {
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Starts `name` with exactly `vars` in its environment.
    pub fn start(name: &str, args: &[&str], vars: &[(&str, String)]) -> Self {
        Self::start_with_log_level(name, args, vars, "info")
    }

    /// Like [`Service::start`], with `RUST_LOG` set to `log_level`.
    pub fn start_with_log_level(name: &str, args: &[&str], vars: &[(&str, String)], log_level: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = command_at(name, args, vars, log_level).spawn().unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> =
            vec![Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for stream in streams {
            let out = output.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            }));
        }
        Self { child, output, readers }
    }

    /// Everything written so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.output().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `times` lines contain `needle`, failing the test (with the output so far)
    /// after `secs` seconds or if the process exits first.
    pub async fn wait_for(&mut self, needle: &str, times: usize, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while self.count(needle) < times {
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                panic!("exited ({status}) before logging {needle:?}:\n{}", self.output());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} within {secs} s:\n{}",
                self.output()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id().unwrap() as i32
    }

    /// SIGTERM, then waits (at most 15 s) for the exit; returns the exit status and all output.
    pub async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("did not exit within 15 s of SIGTERM:\n{}", self.output()))
            .unwrap();
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), r).await;
        }
        (status, self.output())
    }

    /// Waits (at most `secs` seconds) for the process to exit by itself.
    pub async fn wait(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(std::time::Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("did not exit within {secs} s:\n{}", self.output()))
            .unwrap();
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), r).await;
        }
        (status, self.output())
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(mut self) -> String {
        let _ = self.child.kill().await;
        self.output()
    }
}
