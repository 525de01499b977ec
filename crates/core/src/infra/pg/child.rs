//! Owned child processes: explicit argv, a cleared environment plus the libpq variables they
//! need, `kill_on_drop`, stderr drained concurrently into a bounded tail, exit status checked.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Start of a stderr line that pgvigil made the tool print (psql's `\warn`), kept apart from the
/// tail; each child gets its own random tag after it ([`OwnedChild::marker`]), so that nothing the
/// server sends (a notice with a line break, say) can pass for one.
const MARKER: &str = "pgvigil-marker-";
/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 20;
/// Most bytes of one stderr line read at a time (the rest is read as the next "line").
const MAX_STDERR_LINE: u64 = 64 * 1024;
/// Longest stderr line kept (longer ones are cut).
const TAIL_LINE_LEN: usize = 500;

/// Capacity asked for the pipes to and from the tools. The default 64 KiB pipe makes `pg_dump`
/// and pgvigil wake each other for every few dozen kilobytes; a larger pipe lets both run in
/// long stretches. Linux caps it at `/proc/sys/fs/pipe-max-size` (1 MiB by default).
const PIPE_SIZE: i32 = 1024 * 1024;

/// Grows a pipe to [`PIPE_SIZE`]. Best effort: a smaller pipe is only slower.
fn enlarge_pipe(fd: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        tracing::debug!(error = %e, "could not enlarge a pipe; keeping the default size");
    }
}

/// A client tool that exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
#[error("{tool} {status}: {}", if stderr.is_empty() { "(no error output)".to_string() } else { stderr.join(" | ") })]
pub struct ToolFailure {
    /// `pg_dump` or `psql`.
    pub tool: String,
    /// How it ended, e.g. `exited with status 1` or `was killed by signal 9`.
    pub status: String,
    /// Last lines of its stderr, passwords scrubbed.
    pub stderr: Vec<String>,
    /// Exit code if it exited normally.
    pub code: Option<i32>,
}

/// A running client tool.
#[derive(Debug)]
pub struct OwnedChild {
    /// Tool name for messages.
    tool: String,
    /// The process; killed when dropped.
    child: Child,
    /// Task collecting stderr lines.
    stderr_task: Option<JoinHandle<()>>,
    /// Bounded tail of stderr.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Lines that pgvigil itself asked the tool to print (see [`MARKER`]), kept whatever the tail.
    markers: Arc<Mutex<Vec<String>>>,
    /// Secrets to scrub from stderr lines.
    secrets: Vec<String>,
    /// This child's marker prefix ([`MARKER`], a random tag, `: `).
    marker: String,
}

impl OwnedChild {
    /// Spawns `path args…` with only `env` (plus a minimal PATH/locale, and HOME so that libpq finds
    /// `~/.pgpass` and `~/.postgresql/` as it would from a shell) in its environment.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(tool: &str, path: &Path, args: &[String], env: &[(String, String)], stdin: bool) -> std::io::Result<Self> {
        let mut cmd = Command::new(path);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .envs(std::env::var_os("HOME").map(|h| ("HOME", h)))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if stdin { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let Some(out) = &child.stdout {
            enlarge_pipe(out);
        }
        if let Some(inp) = &child.stdin {
            enlarge_pipe(inp);
        }
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let markers = Arc::new(Mutex::new(Vec::new()));
        let marker = format!("{MARKER}{:016x}: ", rand::random::<u64>());
        let stderr_task = child.stderr.take().map(|err| {
            let tail = Arc::clone(&tail);
            let markers = Arc::clone(&markers);
            let marker = marker.clone();
            tokio::spawn(async move {
                // Bytes, not `lines()`: a line that is not UTF-8 must not end the draining (a full
                // pipe would block the tool) nor hide the lines after it.
                let mut reader = BufReader::new(err);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    // A line is read at most this far (a huge server notice never fills memory).
                    match (&mut reader).take(MAX_STDERR_LINE).read_until(b'\n', &mut raw).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw).trim_end_matches(['\n', '\r']).to_string();
                    if let Some(m) = line.strip_prefix(marker.as_str()) {
                        if let Ok(mut ms) = markers.lock() {
                            if ms.len() < 8 {
                                ms.push(m.trim().to_string());
                            }
                        }
                        continue;
                    }
                    let mut line = line;
                    line.truncate(line.floor_char_boundary(TAIL_LINE_LEN));
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            })
        });
        let secrets = env.iter().filter(|(k, _)| k == "PGPASSWORD").map(|(_, v)| v.clone()).collect();
        Ok(Self {
            tool: tool.to_string(),
            child,
            stderr_task,
            tail,
            markers,
            secrets,
            marker,
        })
    }

    /// The prefix of a marker line for this child (what psql's `\warn` must print first).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Marker lines printed so far (without the prefix).
    pub fn markers(&self) -> Vec<String> {
        self.markers.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The child's stdout (for `pg_dump`).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin (for `psql`).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Stderr lines so far, scrubbed.
    pub fn stderr_tail(&self) -> Vec<String> {
        let refs: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        self.tail
            .lock()
            .map(|t| t.iter().map(|l| crate::infra::secret::scrub(l, &refs)).collect())
            .unwrap_or_default()
    }

    /// Kills the process (on cancel or when the other side of the pipe failed).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for exit, then for stderr to be drained; a non-zero exit becomes a [`ToolFailure`].
    ///
    /// # Errors
    /// [`ToolFailure`] with the status and the stderr tail.
    pub async fn wait(mut self) -> Result<Vec<String>, ToolFailure> {
        self.wait_in_place().await
    }

    /// As [`Self::wait`], keeping the handle (to read [`Self::markers`] afterwards).
    ///
    /// # Errors
    /// [`ToolFailure`] with the status and the stderr tail.
    pub async fn wait_in_place(&mut self) -> Result<Vec<String>, ToolFailure> {
        let status = self.child.wait().await;
        if let Some(t) = self.stderr_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        let stderr = self.stderr_tail();
        match status {
            Ok(s) if s.success() => Ok(stderr),
            Ok(s) => Err(ToolFailure {
                tool: self.tool.clone(),
                status: describe(s),
                stderr,
                code: s.code(),
            }),
            Err(e) => Err(ToolFailure {
                tool: self.tool.clone(),
                status: format!("could not be waited for: {e}"),
                stderr,
                code: None,
            }),
        }
    }
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".into(),
    }
}
